// Knock steps ("7000/tcp") and protected port entries ("22/tcp", "60000-61000/udp").
// Pure functions, shared with the CLI's argument parsers: they throw an Error whose message
// names the text and shows how to write it.
import type { PortRange, Proto, Step } from './model.js';

export const PROTOS: readonly Proto[] = ['tcp', 'udp'];

const PORT_RANGE_TEXT = 'ports are 1..65535';

function parseProto(text: string): Proto | null {
  const p = text.toLowerCase();
  return p === 'tcp' || p === 'udp' ? p : null;
}

/** Parses a decimal port 1..65535; `what` names the text in messages. */
export function parsePort(text: string, what = JSON.stringify(text)): number {
  if (!/^\d+$/.test(text)) throw new Error(`${what} is not a port: ${PORT_RANGE_TEXT}`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new Error(`${what}: port ${port} is out of range: ${PORT_RANGE_TEXT}`);
  return port;
}

function examplePort(portText: string): string {
  return /^\d+$/.test(portText) && Number(portText) >= 1 && Number(portText) <= 65535 ? String(Number(portText)) : '7000';
}

/** Parses a knock step: "7000/tcp" or "8000/udp" (protocol case-insensitive). */
export function parseStep(text: string | number): Step {
  if (typeof text === 'number') {
    const eg = examplePort(String(text));
    throw new Error(`${text} has no protocol: write ${eg}/tcp or ${eg}/udp`);
  }
  const shown = JSON.stringify(text);
  const slash = text.lastIndexOf('/');
  if (slash < 0) {
    const eg = examplePort(text.trim());
    if (/^\d+$/.test(text.trim())) throw new Error(`${shown} has no protocol: write ${eg}/tcp or ${eg}/udp`);
    throw new Error(`${shown} is not a knock step: write PORT/tcp or PORT/udp, e.g. ${eg}/udp`);
  }
  const portText = text.slice(0, slash).trim();
  const proto = parseProto(text.slice(slash + 1).trim());
  if (proto === null) {
    throw new Error(`${shown} is not a knock step: write PORT/tcp or PORT/udp, e.g. ${examplePort(portText)}/udp`);
  }
  if (/^\d+\s*-\s*\d+$/.test(portText)) {
    throw new Error(`${shown} is a range: a knock step is a single port, e.g. ${examplePort(portText.split('-')[0]?.trim() ?? '')}/${proto}`);
  }
  return { port: parsePort(portText, shown), proto };
}

/** Parses a protected entry: "22/tcp" or an inclusive range "60000-61000/udp". */
export function parsePortRange(text: string | number): PortRange {
  if (typeof text === 'number') {
    const eg = examplePort(String(text));
    throw new Error(`${text} has no protocol: write ${eg}/tcp or ${eg}/udp`);
  }
  const shown = JSON.stringify(text);
  const slash = text.lastIndexOf('/');
  const usage = 'write PORT/PROTO or FIRST-LAST/PROTO with PROTO tcp or udp, e.g. 22/tcp or 60000-61000/udp';
  if (slash < 0) {
    if (/^\d+(\s*-\s*\d+)?$/.test(text.trim())) {
      const t = text.trim().replace(/\s+/g, '');
      throw new Error(`${shown} has no protocol: write ${t}/tcp or ${t}/udp`);
    }
    throw new Error(`${shown} is not a port or port range: ${usage}`);
  }
  const portsText = text.slice(0, slash).trim();
  const proto = parseProto(text.slice(slash + 1).trim());
  if (proto === null) throw new Error(`${shown} is not a port or port range: ${usage}`);
  const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(portsText);
  if (m === null) throw new Error(`${shown} is not a port or port range: ${usage}`);
  const first = parsePort(m[1] ?? '', shown);
  const last = m[2] === undefined ? first : parsePort(m[2], shown);
  if (first > last) throw new Error(`${shown} is backwards: write ${last}-${first}/${proto}`);
  return { first, last, proto };
}

/** "7000/tcp" */
export function formatStep(step: Step): string {
  return `${step.port}/${step.proto}`;
}

/** "22/tcp" or "60000-61000/udp" */
export function formatRange(range: PortRange): string {
  return range.first === range.last ? `${range.first}/${range.proto}` : `${range.first}-${range.last}/${range.proto}`;
}

/** True when the range holds the step's port and protocol. */
export function rangeHolds(range: PortRange, step: Step): boolean {
  return range.proto === step.proto && step.port >= range.first && step.port <= range.last;
}
