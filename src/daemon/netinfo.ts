/**
 * What the daemon reads of the gateway's interfaces: the WAN IPv4 address,
 * the gateway's own addresses and the LAN subnets, of both families.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import * as ffi from '../ffi/libbpf.js';
import type { PROGRAMS } from '../bpf/abi.js';
import { canonicalIpv6 } from '../bpf/struct.js';
import { armingClass, ipv6Class, ipv6NetworkCidr, type Ipv6Class } from '../core/addr.js';

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

export interface Ipv6Addr {
  /** Canonical text (node:net's form). */
  address: string;
  /** The prefix it is on, host bits zero: 2001:db8:1::/64. */
  cidr: string;
  class: Ipv6Class;
}

/** A network interface entry of os.networkInterfaces(), as far as read here. */
type IfaceEntry = { family: string | number; address: string; cidr?: string | null };

/** Node < 18.4 said 6 for IPv6; later versions 'IPv6'. */
const isV6 = (a: IfaceEntry): boolean => a.family === 'IPv6' || a.family === 6;

/** IPv6 addresses of interface `name`, every class (empty when it has none or is missing). */
export function ipv6Of(name: string, table: NodeJS.Dict<IfaceEntry[]> = networkInterfaces()): Ipv6Addr[] {
  return (table[name] ?? []).filter(isV6).flatMap((a) => {
    const address = canonicalIpv6(a.address.split('%')[0]!);
    if (address === null) return [];
    const len = Number((a.cidr ?? '').split('/')[1] ?? 128);
    return [{ address, cidr: ipv6NetworkCidr(`${address}/${Number.isInteger(len) ? len : 128}`), class: ipv6Class(address) }];
  });
}

/**
 * The LAN prefixes of interface `name`: those of its global and unique-local
 * addresses (SPEC 9: never link-local), each once, in the order found.
 */
export function lanPrefixes6(name: string, table: NodeJS.Dict<IfaceEntry[]> = networkInterfaces()): string[] {
  return [...new Set(ipv6Of(name, table).filter((a) => armingClass(a.class)).map((a) => a.cidr))];
}

/**
 * Every IPv6 address of the gateway (this network namespace), for
 * pt6_local_addrs: all interfaces, link-local ones left out (the data path
 * never lets a link-local address arm or be a pinhole target, whoever owns
 * it; they would only fill the 256 slots), as is ::1. Each once.
 */
export function allIpv6(table: NodeJS.Dict<IfaceEntry[]> = networkInterfaces()): string[] {
  const out = new Set<string>();
  for (const name of Object.keys(table)) {
    for (const a of ipv6Of(name, table)) if (a.class !== 'link-local' && a.class !== 'loopback') out.add(a.address);
  }
  return [...out];
}

/** ifindex of `name`, 0 when there is no such interface. */
export const ifindexOf = (name: string): number => ffi.ifNameToIndex(name);

/**
 * How the data path reads an interface's packets at TC ingress:
 *  - `ethernet`: a 14-byte Ethernet header, then IPv4 (pt_*_ingress);
 *  - `l3`: the IPv4 header at offset 0, skb->protocol says what it is
 *    (pt_*_ingress_l3): devices without header_ops, whose mac_len is 0.
 */
export type LinkKind = 'ethernet' | 'l3';

/** ARPHRD_* values (include/uapi/linux/if_arp.h) porttrig knows by name. */
const ARPHRD_NAMES: Readonly<Record<number, string>> = {
  1: 'ether', 512: 'ppp', 519: 'rawip', 768: 'ipip', 772: 'loopback', 776: 'sit', 778: 'gre',
  823: 'ip6gre', 0xfffe: 'none', 0xffff: 'void',
};
/**
 * The link types the data path handles. ether: Ethernet, veth, bridges,
 * VLANs, bonds, Wi-Fi (mac80211 presents Ethernet frames). ppp: pppd's ppp0
 * (PPPoE, PPPoA). none: TUN in IFF_TUN mode, WireGuard. rawip: LTE/5G modems
 * in raw-IP mode (qmi_wwan). Tunnels with an outer header of their own (ipip,
 * sit, gre) and loopback are not handled: what TC ingress shows there is not
 * what the two builds expect.
 */
const LINK_KINDS: Readonly<Record<number, LinkKind>> = { 1: 'ethernet', 512: 'l3', 0xfffe: 'l3', 519: 'l3' };

/** An interface's link type as the kernel reports it, and how porttrig handles it. */
export interface LinkInfo {
  name: string;
  ifindex: number;
  /** ARPHRD_* number (dev->type). */
  type: number;
  /** A readable name of `type`: ether, ppp, none, ... or arphrd-N. */
  typeName: string;
  /** null: the data path cannot handle this link type. */
  kind: LinkKind | null;
}

/** The readable name of an ARPHRD_* number. */
export const linkTypeName = (type: number): string => ARPHRD_NAMES[type] ?? `arphrd-${type}`;

/** How porttrig handles ARPHRD_* `type`, or null when it cannot. */
export const linkKindOf = (type: number): LinkKind | null => LINK_KINDS[type] ?? null;

/** Link type of interface `name` in this network namespace; null when it does not exist. */
export function linkInfo(name: string): LinkInfo | null {
  const ifindex = ifindexOf(name);
  if (ifindex === 0) return null;
  const type = ffi.linkType(name);
  if (type < 0) return null;  // removed between the two calls
  return { name, ifindex, type, typeName: linkTypeName(type), kind: linkKindOf(type) };
}

/** How long one wait for address events blocks its worker thread before it checks for close(). */
const WATCH_POLL_MS = 500;

/** A running subscription to the kernel's IPv4 and IPv6 address and link events. */
export interface AddressWatch { close(): void }

/**
 * Call `onChange` soon after any IPv4 or IPv6 address of this network
 * namespace is added or removed (rtnetlink RTM_NEWADDR / RTM_DELADDR, groups
 * RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR: SLAAC and privacy addresses
 * come and go), and after any interface is created, changed or
 * removed (RTM_NEWLINK / RTM_DELLINK, group RTMGRP_LINK: pppd's ppp0 coming
 * and going). The messages are not parsed: any event means "read the
 * interfaces and addresses again", which is cheap and cannot miss a change. Waiting happens on
 * one libuv worker thread (koffi async poll), so the event loop stays free.
 * Returns `{ error: errno }` when the socket cannot be opened; the caller
 * then relies on polling.
 */
export function watchAddresses(onChange: () => void): AddressWatch | { error: number } {
  const fd = ffi.netlinkOpen(ffi.RTMGRP_IPV4_IFADDR | ffi.RTMGRP_IPV6_IFADDR | ffi.RTMGRP_LINK);
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

/** The program (PROGRAMS key) for side `side` of an interface of link kind `kind`. */
export function programRole(side: 'lan' | 'wan', kind: LinkKind): keyof typeof PROGRAMS {
  return kind === 'l3' ? `${side}_l3` : side;
}

/** /sys/class/net of this network namespace (sysfs mounted in it). */
const SYS_NET = '/sys/class/net';

/**
 * Why the XDP fast path (datapath.xdp) cannot run on WAN interface `info`, or
 * null when it can. XDP needs an Ethernet header to rewrite, and sees a frame
 * before the kernel knows which device it belongs to: a VLAN tag that the NIC
 * stripped is invisible to it before kernel 6.8, so a frame of a VLAN
 * sub-interface (another link, with other addresses) would look like the
 * WAN's own. So the WAN may have no upper device (VLAN, macvlan, a bridge or
 * bond it is a port of).
 */
export function xdpWanProblem(info: LinkInfo): string | null {
  if (info.kind !== 'ethernet') return `the WAN ${info.name} is a ${info.typeName} link; the XDP fast path needs an Ethernet WAN`;
  const uppers = upperDevices(info.name);
  if (uppers.length > 0) {
    return `the WAN ${info.name} has upper devices (${uppers.join(', ')}); XDP cannot tell their frames from the WAN's own (a VLAN tag stripped by the NIC)`;
  }
  return null;
}

/** The devices stacked on `name` (VLANs, macvlans, the bridge or bond it belongs to). */
export function upperDevices(name: string): string[] {
  try {
    return readdirSync(`${SYS_NET}/${name}`).filter((f) => f.startsWith('upper_')).map((f) => f.slice('upper_'.length)).sort();
  } catch {
    return [];
  }
}

/** The link-layer address of `name` ("aa:bb:cc:dd:ee:ff"), or null when it has none or is gone. */
export function linkMac(name: string): string | null {
  try {
    const mac = readFileSync(`${SYS_NET}/${name}/address`, 'utf8').trim();
    return /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(mac) ? mac : null;
  } catch {
    return null;
  }
}

/** Is `name` backed by a device (a NIC: virtio, PCI, USB), not a virtual link (veth, bridge, tun)? */
export const hasDevice = (name: string): boolean => existsSync(`${SYS_NET}/${name}/device`);

/** Is `name` a Linux bridge (which cannot transmit XDP frames)? */
export const isBridge = (name: string): boolean => existsSync(`${SYS_NET}/${name}/bridge`);

/**
 * Queueing disciplines that only order or drop at the device's own rate:
 * frames that bypass them (XDP's ndo_xdp_xmit does) lose nothing an
 * operator set up. Anything else (cake, htb, tbf, hfsc, netem, ...) shapes
 * or delays on purpose.
 */
const PLAIN_QDISCS = new Set(['noqueue', 'pfifo_fast', 'fq_codel', 'fq', 'mq', 'pfifo', 'bfifo', 'sfq', 'codel', 'pie', 'fq_pie', 'clsact', 'ingress']);

/**
 * Why XDP frames must not be sent to LAN interface `name`, as far as its
 * queueing goes, or null: XDP frames bypass the device's qdisc and its TC
 * egress filters, so download shaping (SQM with cake or htb on the LAN side)
 * or egress filters would not see them. Asks tc (iproute2); when tc cannot
 * tell, says so (the caller keeps the interface on TC).
 */
export function lanQueueingProblem(name: string): string | null {
  const tc = (...args: string[]): unknown[] => JSON.parse(execFileSync('tc', ['-j', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) || '[]') as unknown[];
  try {
    const kinds = tc('qdisc', 'show', 'dev', name).map((q) => String((q as { kind?: unknown }).kind));
    const shaping = [...new Set(kinds.filter((k) => !PLAIN_QDISCS.has(k)))];
    if (shaping.length > 0) return `qdisc ${shaping.join(', ')}, which XDP frames would bypass`;
    if (kinds.includes('clsact') && tc('filter', 'show', 'dev', name, 'egress').length > 0) return 'TC egress filters, which XDP frames would bypass';
    return null;
  } catch (e) {
    return `tc cannot show its qdiscs (${e instanceof Error ? e.message.split('\n')[0] : String(e)})`;
  }
}
