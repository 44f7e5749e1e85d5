/**
 * What the daemon reads of the gateway's interfaces: the WAN IPv4 address,
 * the gateway's own addresses and the LAN subnets.
 */
import { networkInterfaces } from 'node:os';
import * as ffi from '../ffi/libbpf.js';

export interface Ipv4Addr { address: string; cidr: string }

/** IPv4 addresses of interface `name` (empty when it has none or is missing). */
export function ipv4Of(name: string, table = networkInterfaces()): Ipv4Addr[] {
  return (table[name] ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => ({ address: a.address, cidr: networkCidr(a.cidr ?? `${a.address}/32`) }));
}

/** Every IPv4 address of the gateway (this network namespace). */
export function allIpv4(table = networkInterfaces()): string[] {
  return Object.values(table).flatMap((l) => (l ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address));
}

/** The network of an address in CIDR form: 10.1.2.3/24 -> 10.1.2.0/24. */
export function networkCidr(cidr: string): string {
  const [addr, lenS] = cidr.split('/');
  const len = Number(lenS);
  const n = addr!.split('.').reduce((acc, o) => (acc << 8) | Number(o), 0) >>> 0;
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return `${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`;
}

/** ifindex of `name`, 0 when there is no such interface. */
export const ifindexOf = (name: string): number => ffi.ifNameToIndex(name);

/** How long one wait for address events blocks its worker thread before it checks for close(). */
const WATCH_POLL_MS = 500;

/** A running subscription to the kernel's IPv4 address events. */
export interface AddressWatch { close(): void }

/**
 * Call `onChange` soon after any IPv4 address of this network namespace is
 * added or removed (rtnetlink RTM_NEWADDR / RTM_DELADDR, group
 * RTMGRP_IPV4_IFADDR). The messages are not parsed: any event means "read the
 * addresses again", which is cheap and cannot miss a change. Waiting happens on
 * one libuv worker thread (koffi async poll), so the event loop stays free.
 * Returns `{ error: errno }` when the socket cannot be opened; the caller
 * then relies on polling.
 */
export function watchAddresses(onChange: () => void): AddressWatch | { error: number } {
  const fd = ffi.netlinkOpen(ffi.RTMGRP_IPV4_IFADDR);
  if (fd < 0) return { error: -fd };
  let closed = false;
  const buf = Buffer.alloc(8192);
  const wait = (): void => {
    ffi.pollReadableAsync(fd, WATCH_POLL_MS, (err, readable) => {
      // poll(2) itself failing is not expected; stop and leave it to the polling fallback.
      if (closed || err) { ffi.closeFd(fd); return; }
      // A full socket buffer (ENOBUFS) also reads as readable: re-reading covers it.
      if (readable) { ffi.drainSocket(fd, buf); onChange(); }
      wait();
    });
  };
  wait();
  return { close: (): void => { closed = true; } };
}
