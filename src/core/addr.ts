/**
 * Addresses of both families as the control plane judges them: which family
 * a text is, prefixes (CIDR) of either family, and the IPv6 address classes
 * SPEC 9 names (global or unique-local may arm; link-local, multicast,
 * loopback and :: never). IPv6 text is the canonical form of node:net
 * (src/bpf/struct.ts readIpv6), so equal addresses compare equal as strings.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { canonicalIpv6, writeIpv6 } from '../bpf/struct.js';
import type { Family } from '../bpf/abi.js';

export const NO_PEER6 = '::';

/** The family of an address text, or null when it is neither (an IPv6 zone index is refused). */
export function familyOf(addr: string): Family | null {
  if (isIPv4(addr)) return 'ipv4';
  if (isIPv6(addr) && canonicalIpv6(addr) !== null) return 'ipv6';
  return null;
}

/** The 128-bit value of an IPv6 address. */
export function ipv6BigInt(addr: string): bigint {
  const b = Buffer.alloc(16);
  writeIpv6(b, 0, addr);
  return (b.readBigUInt64BE(0) << 64n) | b.readBigUInt64BE(8);
}

/** The canonical text of a 128-bit value. */
export function bigIntIpv6(v: bigint): string {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE((v >> 64n) & 0xffffffffffffffffn, 0);
  b.writeBigUInt64BE(v & 0xffffffffffffffffn, 8);
  return canonicalIpv6(`${b.toString('hex').replace(/(.{4})(?!$)/g, '$1:')}`)!;
}

function ipv4Int(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Is `addr` inside `cidr`? False when their families differ. */
export function inCidr(addr: string, cidr: string): boolean {
  const [net, lenS] = cidr.split('/');
  const len = Number(lenS);
  const fa = familyOf(addr);
  if (fa === null || fa !== familyOf(net!)) return false;
  if (fa === 'ipv4') {
    const size = 2 ** (32 - len);
    return Math.floor(ipv4Int(addr) / size) === Math.floor(ipv4Int(net!) / size);
  }
  const shift = BigInt(128 - len);
  return ipv6BigInt(addr) >> shift === ipv6BigInt(net!) >> shift;
}

/** The network of an IPv6 address in CIDR form: 2001:db8:1::5/64 -> 2001:db8:1::/64. */
export function ipv6NetworkCidr(cidr: string): string {
  const [addr, lenS] = cidr.split('/');
  const len = Number(lenS);
  const mask = len === 0 ? 0n : ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - len)) - 1n);
  return `${bigIntIpv6(ipv6BigInt(addr!) & mask)}/${len}`;
}

/** IPv6 address classes (RFC 4291, RFC 4193). */
export type Ipv6Class = 'unspecified' | 'loopback' | 'multicast' | 'link-local' | 'unique-local' | 'ipv4-mapped' | 'global';

export function ipv6Class(addr: string): Ipv6Class {
  const v = ipv6BigInt(addr);
  if (v === 0n) return 'unspecified';
  if (v === 1n) return 'loopback';
  const top8 = v >> 120n;
  const top10 = v >> 118n;
  const top7 = v >> 121n;
  if (top8 === 0xffn) return 'multicast';
  if (top10 === 0x3fan) return 'link-local';  // fe80::/10
  if (top7 === 0x7en) return 'unique-local';  // fc00::/7
  if (v >> 32n === 0xffffn) return 'ipv4-mapped';
  return 'global';
}

/** May an address of this class be a LAN host that arms a session (SPEC 9)? Global or unique-local only. */
export const armingClass = (c: Ipv6Class): boolean => c === 'global' || c === 'unique-local';
