// Addresses as the kernel sees them: 16 bytes, IPv6 as is, IPv4 as IPv4-mapped IPv6
// (::ffff:a.b.c.d), see bpf/knock.h. Text parsing and RFC 5952 formatting are done by ipaddr.js;
// this module adds the strictness a firewall wants (no "127.1", no octal, no zone indexes)
// and the 16-byte representation.
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

/** A network in the kernel's 16-byte form. */
export interface Cidr {
  family: Family;
  /** 16 bytes, host bits zero; IPv4 networks are IPv4-mapped. */
  addr: Buffer;
  /** Prefix length in its own family: 0..32 for IPv4, 0..128 for IPv6. */
  prefix: number;
  /** Prefix length over the 16-byte address: 96 + prefix for IPv4, prefix for IPv6. */
  mappedPrefix: number;
  /** Canonical text, always with a prefix: "198.18.0.0/15", "2001:db8::/32". */
  text: string;
}

const MAPPED_PREFIX = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
const DOTTED_QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function badAddress(text: string, why?: string): Error {
  const shown = JSON.stringify(text);
  return new Error(why === undefined ? `${shown} is not an IPv4 or IPv6 address` : `${shown} is not an IP address: ${why}`);
}

function checkDottedQuad(text: string, whole: string): void {
  const m = DOTTED_QUAD.exec(text);
  if (m === null) throw badAddress(whole, 'write IPv4 addresses as four decimal numbers, e.g. 198.18.0.1');
  for (const octet of m.slice(1)) {
    if (octet.length > 1 && octet.startsWith('0')) {
      throw badAddress(whole, `leading zeros are ambiguous (octal or decimal?): write ${m.slice(1).map((o) => String(Number(o))).join('.')}`);
    }
    if (Number(octet) > 255) throw badAddress(whole, `${octet} is not an octet (0..255)`);
  }
}

/** True when the 16-byte address is IPv4-mapped (::ffff:a.b.c.d). */
export function isMapped(buf16: Uint8Array): boolean {
  checkLength(buf16);
  for (let i = 0; i < 12; i++) if (buf16[i] !== MAPPED_PREFIX[i]) return false;
  return true;
}

function checkLength(buf16: Uint8Array): void {
  if (buf16.length !== 16) throw new Error(`an address buffer has 16 bytes, this one has ${buf16.length}`);
}

/**
 * Parses "198.18.0.2" or an IPv6 address into the kernel's 16-byte form.
 * Strict: IPv4 must be four decimal octets without leading zeros; no zone index.
 */
export function parseAddress(text: string): Buffer {
  if (typeof text !== 'string' || text.length === 0) throw badAddress(String(text));
  if (text.includes('%')) throw badAddress(text, `zone indexes (${text.slice(text.indexOf('%'))}) are not supported`);
  if (text.startsWith('[') || text.endsWith(']')) throw badAddress(text, 'write IPv6 addresses without brackets');
  if (!text.includes(':')) {
    if (!/^[\d.]+$/.test(text)) throw badAddress(text);
    checkDottedQuad(text, text);
    const v4 = ipaddr.IPv4.parse(text);
    return Buffer.concat([MAPPED_PREFIX, Buffer.from(v4.octets)]);
  }
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    checkDottedQuad(tail, text);
    // ipaddr.js reads the deprecated IPv4-compatible "::a.b.c.d" as IPv4-mapped; RFC 4291 does not.
    if (/^::\d/.test(text)) {
      throw badAddress(text, `"::a.b.c.d" is the deprecated IPv4-compatible form: write ${tail} for the IPv4 address`);
    }
  }
  if (!ipaddr.IPv6.isValid(text)) throw badAddress(text);
  return Buffer.from(ipaddr.IPv6.parse(text).toByteArray());
}

/** '198.18.0.2' for an IPv4-mapped address, RFC 5952 text ('2001:db8::1') for IPv6. */
export function formatAddress(buf16: Uint8Array): string {
  checkLength(buf16);
  if (isMapped(buf16)) return `${buf16[12]}.${buf16[13]}.${buf16[14]}.${buf16[15]}`;
  const parts: number[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(((buf16[i] ?? 0) << 8) | (buf16[i + 1] ?? 0));
  return new ipaddr.IPv6(parts).toRFC5952String();
}

export function familyOf(buf16: Uint8Array): Family {
  return isMapped(buf16) ? 4 : 6;
}

/** A copy of the 16-byte address with every bit after the first `bits` cleared. */
export function maskAddress(buf16: Uint8Array, bits: number): Buffer {
  checkLength(buf16);
  const out = Buffer.from(buf16);
  for (let i = 0; i < 16; i++) {
    const keep = Math.min(8, Math.max(0, bits - i * 8));
    out[i] = (out[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

/**
 * Parses "198.18.0.0/15", "2001:db8::/32" or a bare address (a /32 or /128).
 * An IPv6 network inside ::ffff:0:0/96 is an IPv4 network and is returned as one.
 */
export function parseCidr(text: string): Cidr {
  if (typeof text !== 'string') throw new Error(`${JSON.stringify(text)} is not a network: write ADDRESS/PREFIX, e.g. 198.18.0.0/15`);
  const parts = text.split('/');
  if (parts.length > 2) throw new Error(`${JSON.stringify(text)} is not a network: write ADDRESS/PREFIX, e.g. 198.18.0.0/15`);
  const [addrText = '', prefixText] = parts;
  let addr: Buffer;
  try {
    addr = parseAddress(addrText);
  } catch (err) {
    const why = (err as Error).message;
    throw new Error(addrText === text ? why : `${JSON.stringify(text)}: ${why}`);
  }
  const textIsV4 = !addrText.includes(':');
  const max = textIsV4 ? 32 : 128;
  let prefix = max;
  if (prefixText !== undefined) {
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      throw new Error(`${JSON.stringify(text)} has a bad prefix length ${JSON.stringify(prefixText)}: an ${textIsV4 ? 'IPv4' : 'IPv6'} prefix is 0..${max}`);
    }
    prefix = Number(prefixText);
  }
  const mappedPrefix = textIsV4 ? 96 + prefix : prefix;
  const network = maskAddress(addr, mappedPrefix);
  let family: Family = 6;
  let familyPrefix = mappedPrefix;
  if (mappedPrefix >= 96 && isMapped(network)) {
    family = 4;
    familyPrefix = mappedPrefix - 96;
  }
  const canonical = `${formatAddress(network)}/${familyPrefix}`;
  if (!network.equals(addr)) {
    throw new Error(`${text} has host bits set: did you mean ${canonical}?`);
  }
  return { family, addr: network, prefix: familyPrefix, mappedPrefix, text: canonical };
}

/** True when the 16-byte address lies inside the network. */
export function cidrContains(cidr: Pick<Cidr, 'addr' | 'mappedPrefix'>, buf16: Uint8Array): boolean {
  return maskAddress(buf16, cidr.mappedPrefix).equals(cidr.addr);
}
