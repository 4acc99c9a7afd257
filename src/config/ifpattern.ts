/**
 * Interface patterns: an `interfaces` entry may be a shell-style glob (`eth*`, `vlan1??`,
 * `kg-[ab]*`) that stands for every interface whose name it matches, now and later.
 * `*` any run of characters, `?` one character, `[abc]` `[a-z]` one of, `[!abc]` none of.
 */
import type { InterfaceConfig } from './model.js';

/** Longest pattern text accepted (a name is at most 15 characters; a class spells longer). */
export const MAX_PATTERN_LENGTH = 64;

/** True when the entry is a pattern rather than one interface's name. */
export function isPattern(text: string): boolean {
  return /[*?[\]]/.test(text);
}

interface Compiled {
  re: RegExp | null;
  problem: string | null;
}

function compile(text: string): Compiled {
  const bad = (problem: string): Compiled => ({ re: null, problem });
  if (text.length > MAX_PATTERN_LENGTH) return bad(`it is ${text.length} characters long; at most ${MAX_PATTERN_LENGTH}`);
  const ws = /[/:\s]/.exec(text);
  if (ws !== null) return bad(`it contains ${ws[0] === '/' || ws[0] === ':' ? `'${ws[0]}'` : 'whitespace'}, which no interface name holds`);
  if (/^[*]+$/.test(text)) {
    return bad('it matches every interface, lo and container veths included: name the interfaces, or use a prefix such as eth* or enp*');
  }
  let re = '^';
  let literal = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '*') re += '.*';
    else if (ch === '?') re += '.';
    else if (ch === ']') return bad(`']' at position ${i + 1} closes no '['`);
    else if (ch === '[') {
      let j = i + 1;
      let negate = false;
      if (text[j] === '!' || text[j] === '^') {
        negate = true;
        j++;
      }
      const end = text.indexOf(']', j + 1); // a ']' first in the class is a member
      if (end < 0) return bad(`'[' at position ${i + 1} has no closing ']'`);
      const members = text.slice(j, end);
      let cls = '';
      for (let k = 0; k < members.length; k++) {
        const a = members[k]!;
        if (members[k + 1] === '-' && k + 2 < members.length) {
          const b = members[k + 2]!;
          if (a > b) return bad(`the range ${a}-${b} in [${text.slice(i + 1, end)}] is backwards: write ${b}-${a}`);
          cls += `${escapeClass(a)}-${escapeClass(b)}`;
          k += 2;
        } else {
          cls += escapeClass(a);
        }
      }
      re += `[${negate ? '^' : ''}${cls}]`;
      i = end;
      literal++;
    } else {
      re += ch.replace(/[.+^${}()|\\-]/g, '\\$&');
      literal++;
    }
  }
  if (literal > 15) return bad(`it needs more than 15 characters to match, and an interface name has at most 15`);
  return { re: new RegExp(re + '$', 's'), problem: null };
}

function escapeClass(ch: string): string {
  return /[\\\]^-]/.test(ch) ? `\\${ch}` : ch;
}

/** What is wrong with a pattern, or null. */
export function patternProblem(text: string): string | null {
  return compile(text).problem;
}

const cache = new Map<string, RegExp>();

/** Does the interface `ifname` belong to this entry (its name, or a match of its pattern)? */
export function entryMatches(entry: Pick<InterfaceConfig, 'name'>, ifname: string): boolean {
  if (!isPattern(entry.name)) return entry.name === ifname;
  let re = cache.get(entry.name);
  if (re === undefined) {
    const c = compile(entry.name);
    if (c.re === null) return false;
    re = c.re;
    cache.set(entry.name, re);
  }
  return re.test(ifname);
}

/** The first entry (in config order) that covers `ifname`, or undefined. */
export function entryFor<T extends Pick<InterfaceConfig, 'name'>>(entries: readonly T[], ifname: string): T | undefined {
  return entries.find((e) => !isPattern(e.name) && e.name === ifname) ?? entries.find((e) => entryMatches(e, ifname));
}
