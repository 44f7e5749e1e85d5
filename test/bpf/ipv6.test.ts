/**
 * The IPv6 data path (SPEC 9), packet by packet, through BPF_PROG_TEST_RUN:
 * rows in the style of datapath.test.ts. One data path is loaded for the
 * table (a load verifies five programs: seconds) and every map and counter
 * is emptied before each row. Each row seeds the maps, runs one packet (after
 * optional prelude packets) through pt_lan_ingress or pt_wan_ingress (or
 * their _l3 builds), and checks:
 *
 *  - the TC verdict;
 *  - the output bytes, exactly, against a packet built independently by
 *    test/helpers/packet.ts (ports translated, hop limit - 1, checksums from
 *    scratch), plus a checksum re-verification;
 *  - the maps afterwards, in full: pt6_sessions, pt6_flows (both entries of
 *    each flow), pt6_host_sessions, pt6_frags, and the IPv4 maps empty;
 *  - the packet and rule counters of both families (anything not expected
 *    must be 0).
 *
 * Addresses: documentation prefix 2001:db8::/32, LAN 2001:db8:1::/64 and
 * fd00:1::/64 (unique local); remotes in 2001:db8:99::/64.
 */
import { test, describe as suite, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { monotonicNs } from '../../src/core/state.js';
import type { OpenSpec, PortRange, Proto, Rule } from '../../src/config/types.js';
import {
  CLOCK_TICK_MAX_NS, FLOW6_CONTACTED, NSEC_PER_SEC, PKT_STATS_ENTRIES, RULE_STATS_ENTRIES, SWEEP_FLOWS6, SWEEP_HOST6,
  SWEEP_RECOUNT, SWEEP_SESSIONS6, type Pt6Flow, type Pt6FlowKey, type Pt6Session, type Pt6SessionKey,
} from '../../src/bpf/abi.js';
import { TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, bpfSkipReason, makeTestDatapath, type TestDatapath } from '../helpers/bpffs.js';
import {
  ETH_HLEN, ICMP6, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NH, TCP, buildPacket, buildPacket6, describe6, fragment6,
  icmp6Error, icmp6Message, ipv6Datagram, verifyChecksums6, type Ext6, type Ipv6Opts, type Packet6Spec, type TcpOpts, type UdpOpts,
} from '../helpers/packet.js';

const SKIP = bpfSkipReason();

// --- the C ABI, from bpf/porttrig_abi.h ---------------------------------------------
const RETVAL_NAME: Record<number, string> = { [TC_ACT_UNSPEC]: 'TC_ACT_UNSPEC', [TC_ACT_SHOT]: 'TC_ACT_SHOT', [TC_ACT_REDIRECT]: 'TC_ACT_REDIRECT' };
const DIR_IN = 1;
const DIR_OUT = 2;
const SEEN = { SYN: 1, ACK: 2, FIN: 4, RST: 8 } as const;
const RULE_COUNTERS = [
  'trigger_hits', 'sessions_opened', 'refused_conflict', 'refused_host_limit',
  'refused_map_full', 'flows_opened', 'flows_refused', 'sessions_expired',
] as const;
type Counter = (typeof RULE_COUNTERS)[number];
const FAMS = ['ipv4', 'ipv6'] as const;
const PKT_DIRS = ['lan', 'wan'] as const;
const VERDICTS = ['pass', 'trigger', 'translated', 'dropped', 'malformed'] as const;
/** 'lan/pass' is IPv6's; 'ipv4 lan/pass' IPv4's. */
type StatKey = `${'' | 'ipv4 '}${(typeof PKT_DIRS)[number]}/${(typeof VERDICTS)[number]}`;
const MAX_RULES = 1024;

// --- addresses ------------------------------------------------------------------------
const WAN4 = '203.0.113.1';
const WAN6 = '2001:db8:ffff::1';     // the gateway's WAN address (own)
const GW_LAN = '2001:db8:1::1';      // the gateway's LAN address (own)
const GW_LL = 'fe80::1';
const HOST_A = '2001:db8:1::2';
const HOST_B = '2001:db8:1::3';
const HOST_ULA = 'fd00:1::2';
const HOST_LL = 'fe80::2';
const LAN_OTHER = '2001:db8:1::9';    // another LAN address, as a destination
const OUTSIDE = '2001:db8:2::5';      // neither LAN nor remote-only: not in a LAN prefix
const REMOTE = '2001:db8:99::7';
const REMOTE2 = '2001:db8:99::8';
const SERVER = '2001:db8:99::10';
const ROUTER = '2001:db8:98::fe';
const LAN_NETS6 = ['2001:db8:1::/64', 'fd00:1::/64'];
const LOCAL6 = [GW_LAN, WAN6, GW_LL];
const WAN_IFINDEX = 7;
const LAN_IF = 3;
const MIN = 60_000;

// Layer-3 rows: BPF_PROG_TEST_RUN takes skb->protocol from bytes 12-13 of
// its input (eth_type_trans), which for a bare IPv6 packet are bytes 4-5 of
// the source address: 0x86dd there makes the packet IPv6 (see L3 rows of
// datapath.test.ts for the IPv4 version of this).
const L3_REMOTE = '2001:db8:86dd:1::7';
const L3_HOST = '2001:db8:86dd:2::2';
const L3_LAN_NET = '2001:db8:86dd:2::/64';

// --- rules ------------------------------------------------------------------------------
function ranges(ports: string): PortRange[] {
  return ports.split(',').map((p) => {
    const [a, b] = p.split('-').map(Number);
    return { from: a!, to: b ?? a! };
  });
}
const protos = (p: string): Proto[] => (p === 'both' ? ['tcp', 'udp'] : [p as Proto]);
function openSpec(s: string): OpenSpec {
  const m = /^(tcp|udp|both)\/(\d+)(?:-(\d+))?(?:\s*->\s*(\d+))?$/.exec(s.trim());
  if (!m) throw new Error(`bad open spec ${s}`);
  const from = Number(m[2]);
  return { protos: protos(m[1]!), from, to: m[3] ? Number(m[3]) : from, lanFrom: m[4] ? Number(m[4]) : from };
}
function rule(name: string, trigger: string, open: string | string[], o: Partial<Rule> = {}): Rule {
  const [p, ports] = trigger.split('/');
  return {
    name, enabled: true, trigger: { protos: protos(p!), ranges: ranges(ports!) },
    open: (Array.isArray(open) ? open : [open]).map(openSpec),
    idleTimeoutMs: 10 * MIN, peer: 'any', conflict: 'first', killFlowsOnExpiry: false, ...o,
  };
}
const RULES: Rule[] = [
  rule('irc', 'tcp/6667', 'tcp/113', { idleTimeoutMs: 5 * MIN }),
  rule('game', 'udp/27015-27030', ['udp/27000-27014', 'tcp/27040']),
  rule('translated', 'tcp/5000', 'tcp/6000-6009 -> 7000', { conflict: 'last' }),
  rule('voip', 'udp/5060', 'tcp/5061', { peer: 'contacted', conflict: 'last' }),
  rule('sip', 'udp/5070', 'tcp/5071', { peer: 'contacted', conflict: 'first' }),
  rule('udpxl', 'udp/28100', 'udp/28000-28009 -> 29000'),
  rule('off', 'tcp/7777', 'tcp/7778', { enabled: false }),
  rule('killer', 'tcp/9100', 'tcp/9101-9102 -> 9201', { killFlowsOnExpiry: true }),
];

// --- packets ----------------------------------------------------------------------------
const MSS_1440 = Uint8Array.of(2, 4, 0x05, 0xa0);
function tcp(src: string, sport: number, dst: string, dport: number, flags: number,
  ip6: Partial<Ipv6Opts> = {}, extra: Partial<TcpOpts> = {}): Packet6Spec {
  return {
    ip6: { src, dst, hopLimit: 64, ...ip6 },
    l4: { tcp: { sport, dport, flags, seq: 0x10002000, ack: flags & TCP.ACK ? 0x30004000 : 0, ...(flags & TCP.SYN ? { options: MSS_1440 } : {}), ...extra } },
  };
}
function udp(src: string, sport: number, dst: string, dport: number,
  ip6: Partial<Ipv6Opts> = {}, extra: Partial<UdpOpts> = {}): Packet6Spec {
  return { ip6: { src, dst, hopLimit: 64, ...ip6 }, l4: { udp: { sport, dport, payload: Buffer.from('porttrig ipv6 payload\n'), ...extra } } };
}
/** The packet as the data path should send it: ports rewritten, hop limit - 1, checksums fresh. */
function xlate(spec: Packet6Spec, to: { sport?: number; dport?: number } = {}): Packet6Spec {
  const ip6 = { ...spec.ip6, hopLimit: (spec.ip6.hopLimit ?? 64) - 1 };
  if ('tcp' in spec.l4) return { ...spec, ip6, l4: { tcp: { ...spec.l4.tcp, ...to } } };
  if ('udp' in spec.l4) return { ...spec, ip6, l4: { udp: { ...spec.l4.udp, ...to } } };
  return { ...spec, ip6 };
}
const withExt = (spec: Packet6Spec, ext: Ext6[]): Packet6Spec => ({ ...spec, ip6: { ...spec.ip6, ext } });
/** The frame of `spec` cut to `ipBytes` bytes of IPv6 datagram (payload length as built: it lies). */
const cut = (spec: Packet6Spec, ipBytes: number): Buffer => buildPacket6(spec).subarray(0, ETH_HLEN + ipBytes);
/** `spec` with every byte after the IPv6 payload length's claim kept, and the claim made `len`. */
function withPayloadLen(spec: Packet6Spec, len: number): Buffer {
  const b = buildPacket6(spec);
  b.writeUInt16BE(len, ETH_HLEN + 4);
  return b;
}
/** The frame of `spec` with byte `off` of its IPv6 datagram set to `v`. */
function poke(spec: Packet6Spec, off: number, v: number): Buffer {
  const b = buildPacket6(spec);
  b[ETH_HLEN + off] = v;
  return b;
}

// --- fixture ----------------------------------------------------------------------------
interface FlowPair {
  proto: 'tcp' | 'udp'; remote: string; rport: number; wanPort: number; host: string; hostPort: number; rule: string;
  contacted?: boolean;
}
interface FlowEntry { key: Pt6FlowKey; value: Pt6Flow }

class Ctx {
  ids = new Map<string, number>();
  readonly lo = ffi.ifNameToIndex('lo');
  readonly now = monotonicNs();
  readonly seededSessions = new Map<string, Pt6Session>();
  readonly seededFlows = new Map<string, FlowEntry>();
  readonly seededHosts = new Map<string, number>();
  constructor(readonly f: TestDatapath) {}

  id(r: string): number {
    const id = this.ids.get(r);
    if (id === undefined) throw new Error(`no rule ${r}`);
    return id;
  }

  /** A session owned by `host` (mode any: keyed by host; `peer`: mode contacted, keyed by peer), last seen `ageMs` ago. */
  session(r: string, host: string, o: { peer?: string; ageMs?: number; ifindex?: number; count?: boolean } = {}): void {
    const stamp = this.now - BigInt(Math.round((o.ageMs ?? 1000) * 1e6));
    const key: Pt6SessionKey = o.peer ? { rule: this.id(r), host: '::', peer: o.peer } : { rule: this.id(r), host, peer: '::' };
    const value: Pt6Session = { opened_ns: stamp - 1_000_000n, last_seen_ns: stamp, host, ifindex: o.ifindex ?? LAN_IF };
    this.f.dp.maps.sessions6.set(key, value);
    this.seededSessions.set(sessKey(key), value);
    if (o.count !== false) this.hosts(host, (this.seededHosts.get(host) ?? 0) + 1);
  }

  hosts(host: string, n: number): void {
    this.f.dp.maps.hostSessions6.set(host, { sessions: n, recheck_ns: 0n });
    this.seededHosts.set(host, n);
  }

  flow(p: FlowPair, o: { ageMs?: number; seenIn?: number; seenOut?: number } = {}): void {
    const stamp = this.now - BigInt(Math.round((o.ageMs ?? 1000) * 1e6));
    for (const e of flowEntries(this, p, o.seenIn ?? (p.proto === 'tcp' ? SEEN.SYN : 0), o.seenOut ?? (p.proto === 'tcp' ? SEEN.SYN : 0))) {
      const value = { ...e.value, created_ns: stamp - 1_000_000n, last_seen_ns: stamp };
      this.f.dp.maps.flows6.set(e.key, value);
      this.seededFlows.set(flowKey(e.key), { key: e.key, value });
    }
  }
}

const sessKey = (k: Pt6SessionKey): string => `${k.rule}/${k.host}/${k.peer}`;
const flowKey = (k: Pt6FlowKey): string =>
  `${k.dir === DIR_IN ? 'in' : 'out'} ${k.proto === IPPROTO_TCP ? 'tcp' : 'udp'} [${k.saddr}]:${k.sport} > [${k.daddr}]:${k.dport}`;

/** The two pt6_flows entries of a flow, as pt6_open_flow makes them (stamps 0). */
function flowEntries(c: Ctx, p: FlowPair, seenIn: number, seenOut: number): [FlowEntry, FlowEntry] {
  const proto = p.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const rid = c.id(p.rule);
  const flags = p.contacted ? FLOW6_CONTACTED : 0;
  return [
    {
      key: { saddr: p.remote, daddr: p.host, sport: p.rport, dport: p.wanPort, proto, dir: DIR_IN },
      value: { created_ns: 0n, last_seen_ns: 0n, nat_port: p.hostPort, rule: rid, ifindex: LAN_IF, seen: seenIn, flags },
    },
    {
      key: { saddr: p.host, daddr: p.remote, sport: p.hostPort, dport: p.rport, proto, dir: DIR_OUT },
      value: { created_ns: 0n, last_seen_ns: 0n, nat_port: p.wanPort, rule: rid, ifindex: c.lo, seen: seenOut, flags },
    },
  ];
}

type Touch = 'new' | 'fresh' | 'unchanged';
type Prog = 'lan' | 'wan' | 'lan_l3' | 'wan_l3';
type Thunk<T> = T | ((c: Ctx) => T);
const thunk = <T>(v: Thunk<T>, c: Ctx): T => (typeof v === 'function' ? (v as (c: Ctx) => T)(c) : v);

interface SessionExp { rule: string; host: string; peer?: string; ifindex?: number | 'lo'; touch: Touch }
interface FlowExp { pair: FlowPair; seenIn: number; seenOut: number; touchIn: Touch; touchOut: Touch; ifindexIn?: number | 'lo' }
interface FragExp { dir: 'in' | 'out'; src: string; dst: string; id: number; nh: number; ifindex: number | 'lo' }

interface Row {
  name: string;
  prog: Prog;
  sessionsPerHost?: number;
  seed?: (c: Ctx) => void;
  prelude?: { prog: Prog; packet: Thunk<Packet6Spec | Buffer>; retval?: number }[];
  packet: Thunk<Packet6Spec | Buffer>;
  retval: number;
  out: Thunk<Packet6Spec | Buffer | 'same'>;
  /** The output of an _l3 program starts with a pushed Ethernet header (type 0x86dd), checked and taken off. */
  pushedEth?: boolean;
  stats: Partial<Record<StatKey, number>>;
  /** IPv6 rule counters; `counters4`: IPv4's (default none). */
  counters?: Record<string, Partial<Record<Counter, number>>>;
  counters4?: Record<string, Partial<Record<Counter, number>>>;
  /** Whole pt6_sessions / pt6_flows / pt6_host_sessions / pt6_frags after the run; defaults: as seeded. */
  sessions?: SessionExp[];
  flows?: FlowExp[];
  hosts?: Record<string, number>;
  frags?: FragExp[];
  /** Whole IPv4 pt_sessions after the run (rule/host); default empty. */
  sessions4?: string[];
}

const live = (r: string, host = HOST_A, o: { peer?: string; ageMs?: number } = {}) => (c: Ctx): void => c.session(r, host, o);

// Flows used by several rows.
const IRC_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 113, host: HOST_A, hostPort: 113, rule: 'irc' };
const XL_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 6003, host: HOST_A, hostPort: 7003, rule: 'translated' };
const UDPXL_FLOW: FlowPair = { proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 28003, host: HOST_A, hostPort: 29003, rule: 'udpxl' };
const KILL_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 9102, host: HOST_A, hostPort: 9202, rule: 'killer' };
const GAME_FLOW: FlowPair = { proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 27005, host: HOST_A, hostPort: 27005, rule: 'game' };
const newFlow = (pair: FlowPair, seenIn: number, ifindexIn?: number | 'lo'): FlowExp =>
  ({ pair, seenIn, seenOut: 0, touchIn: 'new', touchOut: 'new', ...(ifindexIn !== undefined ? { ifindexIn } : {}) });

// A UDP datagram of UDPXL_FLOW fragmented: 8 + 64 bytes after the fragment header, in fragments at 0, 32 (and 64).
const FRAG_ID = 0x0badcafe;
const BIG = Buffer.alloc(64, 0x5a);
const bigIn = (ext: Ext6[] = [{ type: 'frag', id: FRAG_ID }]): Packet6Spec => withExt(udp(REMOTE, 40001, HOST_A, 28003, {}, { payload: BIG }), ext);

const SYN_XL = tcp(REMOTE, 55555, HOST_A, 6003, TCP.SYN);

const ROWS: Row[] = [
  // ---- triggers (pt_lan_ingress) ----
  {
    name: 'TCP trigger from a global LAN address opens the session (rule, host, ::) and passes byte for byte',
    prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_A]: 1 },
  },
  {
    name: 'UDP trigger from a unique-local address (fd00::/7) opens the session',
    prog: 'lan', packet: udp(HOST_ULA, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_ULA, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_ULA]: 1 },
  },
  {
    name: 'a link-local source (fe80::/10) never arms',
    prog: 'lan', packet: tcp(HOST_LL, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'the gateway\'s own LAN address as source never arms',
    prog: 'lan', packet: tcp(GW_LAN, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a global source outside the LAN prefixes never arms',
    prog: 'lan', packet: tcp(OUTSIDE, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a multicast destination (ff0e::1) never arms',
    prog: 'lan', packet: udp(HOST_A, 50000, 'ff0e::1', 27020),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a link-local destination never arms',
    prog: 'lan', packet: udp(HOST_A, 50000, 'fe80::99', 27020),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a destination inside the LAN never arms',
    prog: 'lan', packet: tcp(HOST_A, 40000, LAN_OTHER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'the gateway\'s own WAN address as destination never arms',
    prog: 'lan', packet: tcp(HOST_A, 40000, WAN6, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a frame not addressed to the gateway\'s link-layer address (PACKET_OTHERHOST) never arms',
    prog: 'lan', packet: { ...tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), eth: { dst: '02:00:00:00:00:99' } },
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'a trigger of a live session of the same host refreshes it',
    prog: 'lan', seed: live('irc'), packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'fresh' }],
  },
  {
    name: 'mode any: two LAN hosts hold the same rule at once (IPv6 hosts do not conflict)',
    prog: 'lan', seed: live('irc'), packet: tcp(HOST_B, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: LAN_IF, touch: 'unchanged' }, { rule: 'irc', host: HOST_B, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1, [HOST_B]: 1 },
  },
  {
    name: 'mode contacted, conflict first: another host\'s trigger to the same peer is refused',
    prog: 'lan', seed: live('sip', HOST_A, { peer: SERVER }), packet: udp(HOST_B, 50000, SERVER, 5070),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { sip: { trigger_hits: 1, refused_conflict: 1 } },
  },
  {
    name: 'mode contacted, conflict last: another host\'s trigger to the same peer takes the session over',
    prog: 'lan', seed: live('voip', HOST_A, { peer: SERVER }), packet: udp(HOST_B, 50000, SERVER, 5060),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { voip: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'voip', host: HOST_B, peer: SERVER, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_B]: 1 },
  },
  {
    name: 'mode contacted: another peer is another session, held by another host at once',
    prog: 'lan', seed: live('sip', HOST_A, { peer: SERVER }), packet: udp(HOST_B, 50000, REMOTE2, 5070),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { sip: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'sip', host: HOST_A, peer: SERVER, ifindex: LAN_IF, touch: 'unchanged' }, { rule: 'sip', host: HOST_B, peer: REMOTE2, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1, [HOST_B]: 1 },
  },
  {
    name: 'sessions_per_host (per family): a host at its limit is refused',
    prog: 'lan', sessionsPerHost: 1, seed: live('game'), packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, refused_host_limit: 1 } },
  },
  {
    name: 'sessions_per_host counts per family: an IPv4 session of the same rule does not count against IPv6',
    prog: 'lan', sessionsPerHost: 1,
    seed: (c) => {
      c.f.dp.maps.sessions.set({ rule: c.id('game'), peer: '0.0.0.0' }, { opened_ns: c.now, last_seen_ns: c.now, host: '10.0.0.2', ifindex: LAN_IF });
      c.f.dp.maps.hostSessions.set('10.0.0.2', { sessions: 1, recheck_ns: 0n });
    },
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_A]: 1 },
    sessions4: ['game/10.0.0.2'],
  },
  {
    name: 'an expired session of the same host is opened afresh on its own slot',
    prog: 'lan', seed: live('irc', HOST_A, { ageMs: 6 * MIN }), packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_A]: 1 },
  },
  {
    name: 'a disabled rule\'s trigger port arms nothing',
    prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 7777, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },

  // ---- inbound connections (pt_wan_ingress) ----
  {
    name: 'inbound SYN to an open port with no session: passed untouched (closed)',
    prog: 'wan', packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN to the host\'s own address on an open port of its live session: flow opened, redirected, hop limit - 1',
    prog: 'wan', seed: live('irc'), packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)),
    stats: { 'wan/translated': 1 }, counters: { irc: { flows_opened: 1 } },
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'inbound SYN with port translation (6003 -> 7003): destination port and TCP checksum rewritten',
    prog: 'wan', seed: live('translated'), packet: SYN_XL,
    retval: TC_ACT_REDIRECT, out: xlate(SYN_XL, { dport: 7003 }),
    stats: { 'wan/translated': 1 }, counters: { translated: { flows_opened: 1 } },
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  },
  {
    name: 'inbound UDP with port translation (28003 -> 29003): UDP checksum rewritten',
    prog: 'wan', seed: live('udpxl'), packet: udp(REMOTE, 40001, HOST_A, 28003),
    retval: TC_ACT_REDIRECT, out: xlate(udp(REMOTE, 40001, HOST_A, 28003), { dport: 29003 }),
    stats: { 'wan/translated': 1 }, counters: { udpxl: { flows_opened: 1 } },
    flows: [newFlow(UDPXL_FLOW, 0)],
  },
  {
    name: 'inbound UDP to a unique-local host of a live session is let through',
    prog: 'wan', seed: live('game', HOST_ULA), packet: udp(REMOTE, 40001, HOST_ULA, 27005),
    retval: TC_ACT_REDIRECT, out: xlate(udp(REMOTE, 40001, HOST_ULA, 27005)),
    stats: { 'wan/translated': 1 }, counters: { game: { flows_opened: 1 } },
    flows: [newFlow({ ...GAME_FLOW, host: HOST_ULA }, 0)],
  },
  {
    name: 'mode any: with two hosts holding the rule, each one\'s address gets its own inbound connection',
    prog: 'wan', seed: (c) => { c.session('irc', HOST_A); c.session('irc', HOST_B); },
    packet: tcp(REMOTE, 55555, HOST_B, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(REMOTE, 55555, HOST_B, 113, TCP.SYN)),
    stats: { 'wan/translated': 1 }, counters: { irc: { flows_opened: 1 } },
    flows: [newFlow({ ...IRC_FLOW, host: HOST_B }, SEEN.SYN)],
  },
  {
    name: 'inbound SYN to another LAN host than the session\'s: passed (its own trigger did not ask)',
    prog: 'wan', seed: live('irc'), packet: tcp(REMOTE, 55555, HOST_B, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN after the session expired: passed',
    prog: 'wan', seed: live('irc', HOST_A, { ageMs: 6 * MIN }), packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN from a source inside the LAN prefixes: passed',
    prog: 'wan', seed: live('irc'), packet: tcp(LAN_OTHER, 55555, HOST_A, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN from a link-local source: passed',
    prog: 'wan', seed: live('irc'), packet: tcp('fe80::7', 55555, HOST_A, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN to the gateway\'s own address: passed, even with a session held by it',
    prog: 'wan', seed: live('irc', GW_LAN), packet: tcp(REMOTE, 55555, GW_LAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN to an address outside the LAN prefixes, even with a session held by it: passed',
    prog: 'wan', seed: live('irc', OUTSIDE), packet: tcp(REMOTE, 55555, OUTSIDE, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound SYN with hop limit 1: to the stack (it sends Time Exceeded), no flow',
    prog: 'wan', seed: live('irc'), packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN, { hopLimit: 1 }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'inbound ACK without a flow opens nothing (TCP: only a bare SYN does)',
    prog: 'wan', seed: live('irc'), packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'mode contacted: the contacted peer gets in',
    prog: 'wan', seed: live('voip', HOST_A, { peer: SERVER }), packet: tcp(SERVER, 55555, HOST_A, 5061, TCP.SYN),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(SERVER, 55555, HOST_A, 5061, TCP.SYN)),
    stats: { 'wan/translated': 1 }, counters: { voip: { flows_opened: 1 } },
    flows: [newFlow({ proto: 'tcp', remote: SERVER, rport: 55555, wanPort: 5061, host: HOST_A, hostPort: 5061, rule: 'voip', contacted: true }, SEEN.SYN)],
  },
  {
    name: 'mode contacted: another remote does not get in',
    prog: 'wan', seed: live('voip', HOST_A, { peer: SERVER }), packet: tcp(REMOTE, 55555, HOST_A, 5061, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },

  // ---- packets of flows ----
  {
    name: 'the LAN host\'s reply is translated back (7003 -> 6003) and refreshes flow and session',
    prog: 'lan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK), { sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, ifindex: LAN_IF, touch: 'fresh' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'an inbound packet of a flow refreshes the flow but never the session',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, HOST_A, 6003, TCP.ACK),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(REMOTE, 55555, HOST_A, 6003, TCP.ACK), { dport: 7003 }),
    stats: { 'wan/translated': 1 },
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'an accepted flow keeps working after its session expired (kill_flows_on_expiry off)',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A, { ageMs: 11 * MIN }); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, HOST_A, 6003, TCP.ACK),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(REMOTE, 55555, HOST_A, 6003, TCP.ACK), { dport: 7003 }),
    stats: { 'wan/translated': 1 },
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'a reply on an accepted flow to a trigger port does not arm (inbound-accepted flows never arm)',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow({ ...XL_FLOW, rport: 6667 }); },
    packet: tcp(HOST_A, 7003, REMOTE, 6667, TCP.ACK),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(HOST_A, 7003, REMOTE, 6667, TCP.ACK), { sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, ifindex: LAN_IF, touch: 'fresh' }],
    flows: [{ pair: { ...XL_FLOW, rport: 6667 }, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'a flow past its timer (UDP, 301 s idle) is over: its packet is no flow packet; the live session opens a new one',
    prog: 'wan', seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW, { ageMs: 301_000 }); },
    packet: udp(REMOTE, 40001, HOST_A, 28003),
    retval: TC_ACT_REDIRECT, out: xlate(udp(REMOTE, 40001, HOST_A, 28003), { dport: 29003 }),
    stats: { 'wan/translated': 1 }, counters: { udpxl: { flows_opened: 1 } },
    flows: [newFlow(UDPXL_FLOW, 0)],
  },
  {
    name: 'a TCP flow past its timer with no session: its ACK passes and both entries are gone',
    prog: 'wan', seed: (c) => { c.flow(XL_FLOW, { ageMs: 241_000 }); },
    packet: tcp(REMOTE, 55555, HOST_A, 6003, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 }, flows: [],
  },
  {
    name: 'kill_flows_on_expiry: a flow whose session expired is over, its packet passes and both entries go',
    prog: 'wan', seed: (c) => { c.session('killer', HOST_A, { ageMs: 11 * MIN }); c.flow(KILL_FLOW); },
    packet: tcp(REMOTE, 55555, HOST_A, 9102, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 }, flows: [],
  },
  {
    name: 'kill_flows_on_expiry: with its session live the flow goes on',
    prog: 'wan', seed: (c) => { c.session('killer', HOST_A); c.flow(KILL_FLOW); },
    packet: tcp(REMOTE, 55555, HOST_A, 9102, TCP.ACK),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(REMOTE, 55555, HOST_A, 9102, TCP.ACK), { dport: 9202 }),
    stats: { 'wan/translated': 1 },
    flows: [{ pair: KILL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'a SYN on the 5-tuple of a flow that saw FIN is a new connection: the old flow ends, a new one opens',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW, { seenIn: SEEN.SYN | SEEN.ACK | SEEN.FIN }); },
    packet: SYN_XL,
    retval: TC_ACT_REDIRECT, out: xlate(SYN_XL, { dport: 7003 }),
    stats: { 'wan/translated': 1 }, counters: { translated: { flows_opened: 1 } },
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  },
  {
    name: 'a SYN retransmitted on a live flow goes on as that flow',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: SYN_XL,
    retval: TC_ACT_REDIRECT, out: xlate(SYN_XL, { dport: 7003 }),
    stats: { 'wan/translated': 1 },
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'a reply with hop limit 1 goes to the stack untouched (Time Exceeded is the stack\'s)',
    prog: 'lan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { hopLimit: 1 }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },

  // ---- extension headers ----
  ...([
    ['hop-by-hop', [{ type: 'hop' }]],
    ['routing', [{ type: 'routing', len: 2 }]],
    ['destination options', [{ type: 'dstopts', len: 1 }]],
    ['hop-by-hop, routing and destination options', [{ type: 'hop', len: 1 }, { type: 'dstopts' }, { type: 'routing' }, { type: 'dstopts', len: 3 }]],
    ['an atomic fragment header (offset 0, M clear)', [{ type: 'frag', id: 7 }]],
    ['eight extension headers (the most walked)', [{ type: 'hop' }, ...new Array<Ext6>(7).fill({ type: 'dstopts' })]],
  ] as [string, Ext6[]][]).map(([what, ext]): Row => ({
    name: `inbound SYN with ${what}: walked to the ports, translated, headers kept`,
    prog: 'wan', seed: live('translated'), packet: withExt(SYN_XL, ext),
    retval: TC_ACT_REDIRECT, out: xlate(withExt(SYN_XL, ext), { dport: 7003 }),
    stats: { 'wan/translated': 1 }, counters: { translated: { flows_opened: 1 } },
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  })),
  {
    name: 'a trigger behind a destination options header arms',
    prog: 'lan', packet: withExt(udp(HOST_A, 50000, SERVER, 27020), [{ type: 'dstopts' }]),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' }], hosts: { [HOST_A]: 1 },
  },
  {
    name: 'nine extension headers: passed untouched, counted malformed',
    prog: 'wan', seed: live('translated'), packet: withExt(SYN_XL, [{ type: 'hop' }, ...new Array<Ext6>(8).fill({ type: 'dstopts' })]),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'ESP (not walked): passed untouched',
    prog: 'wan', seed: live('translated'), packet: { ip6: { src: REMOTE, dst: HOST_A }, l4: { raw: Buffer.alloc(32, 1), proto: NH.ESP } },
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },

  // ---- fragments ----
  {
    name: 'first fragment of a translated UDP datagram: translated (the ports are in it), remembered in pt6_frags',
    prog: 'wan', seed: live('udpxl'), packet: fragment6(buildPacket6(bigIn()), 0, 32),
    retval: TC_ACT_REDIRECT, out: fragment6(buildPacket6(xlate(bigIn(), { dport: 29003 })), 0, 32),
    stats: { 'wan/translated': 1 }, counters: { udpxl: { flows_opened: 1 } },
    flows: [newFlow(UDPXL_FLOW, 0)],
    frags: [{ dir: 'in', src: REMOTE, dst: HOST_A, id: FRAG_ID, nh: IPPROTO_UDP, ifindex: LAN_IF }],
  },
  {
    name: 'a later fragment follows its first fragment (hop limit - 1, bytes otherwise as sent)',
    prog: 'wan', seed: live('udpxl'),
    prelude: [{ prog: 'wan', packet: fragment6(buildPacket6(bigIn()), 0, 32), retval: TC_ACT_REDIRECT }],
    packet: fragment6(buildPacket6(bigIn()), 32, 40),
    retval: TC_ACT_REDIRECT, out: fragment6(buildPacket6(xlate(bigIn())), 32, 40),
    stats: { 'wan/translated': 2 }, counters: { udpxl: { flows_opened: 1 } },
    flows: [newFlow(UDPXL_FLOW, 0)],
    frags: [{ dir: 'in', src: REMOTE, dst: HOST_A, id: FRAG_ID, nh: IPPROTO_UDP, ifindex: LAN_IF }],
  },
  {
    name: 'fragments with a destination options header after the fragment header: the first is walked to its ports, the later one follows',
    prog: 'wan', seed: live('udpxl'),
    prelude: [{ prog: 'wan', packet: fragment6(buildPacket6(bigIn([{ type: 'frag', id: FRAG_ID }, { type: 'dstopts' }])), 0, 40), retval: TC_ACT_REDIRECT }],
    packet: fragment6(buildPacket6(bigIn([{ type: 'frag', id: FRAG_ID }, { type: 'dstopts' }])), 40, 40),
    retval: TC_ACT_REDIRECT, out: fragment6(buildPacket6(xlate(bigIn([{ type: 'frag', id: FRAG_ID }, { type: 'dstopts' }]))), 40, 40),
    stats: { 'wan/translated': 2 }, counters: { udpxl: { flows_opened: 1 } },
    flows: [newFlow(UDPXL_FLOW, 0)],
    frags: [{ dir: 'in', src: REMOTE, dst: HOST_A, id: FRAG_ID, nh: NH.DSTOPTS, ifindex: LAN_IF }],
  },
  {
    name: 'a later fragment without its first fragment passes untouched',
    prog: 'wan', seed: live('udpxl'), packet: fragment6(buildPacket6(bigIn()), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'a first fragment cut inside its UDP header (RFC 7112): malformed, passed untouched',
    prog: 'wan', seed: live('udpxl'), packet: ((): Buffer => {
      // 4 bytes of UDP header in the first fragment: not even the length and checksum.
      const f = fragment6(buildPacket6(bigIn()), 0, 8);
      const b = Buffer.from(f.subarray(0, f.length - 4));
      b.writeUInt16BE(b.length - ETH_HLEN - 40, ETH_HLEN + 4);
      return b;
    })(),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'the LAN host\'s fragmented reply: the first fragment translated back (29003 -> 28003) and remembered, outbound',
    prog: 'lan', seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: fragment6(buildPacket6(withExt(udp(HOST_A, 29003, REMOTE, 40001, {}, { payload: BIG }), [{ type: 'frag', id: FRAG_ID }])), 0, 32),
    retval: TC_ACT_REDIRECT,
    out: fragment6(buildPacket6(xlate(withExt(udp(HOST_A, 29003, REMOTE, 40001, {}, { payload: BIG }), [{ type: 'frag', id: FRAG_ID }]), { sport: 28003 })), 0, 32),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'udpxl', host: HOST_A, ifindex: LAN_IF, touch: 'fresh' }],
    flows: [{ pair: UDPXL_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
    frags: [{ dir: 'out', src: HOST_A, dst: REMOTE, id: FRAG_ID, nh: IPPROTO_UDP, ifindex: 'lo' }],
  },

  // ---- ICMPv6 errors ----
  {
    name: 'WAN: Packet Too Big about the host\'s translated reply goes to the host, quoted source port put back (6003 -> 7003), both checksums fixed',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmp6Error({ type: ICMP6.PKT_TOO_BIG, code: 0, rest: 1280, ip6: { src: ROUTER, dst: HOST_A, hopLimit: 60 }, quoted: tcp(HOST_A, 6003, REMOTE, 55555, TCP.ACK, { hopLimit: 63 }, { payload: Buffer.from('data') }) }),
    retval: TC_ACT_REDIRECT,
    out: icmp6Error({ type: ICMP6.PKT_TOO_BIG, code: 0, rest: 1280, ip6: { src: ROUTER, dst: HOST_A, hopLimit: 59 }, quoted: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { hopLimit: 63 }, { payload: Buffer.from('data') }) }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'LAN: the host\'s Port Unreachable about an inbound datagram goes to the remote, quoted destination port put back (29003 -> 28003), UDP and ICMPv6 checksums fixed',
    prog: 'lan', seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_A, dst: REMOTE }, quoted: udp(REMOTE, 40001, HOST_A, 29003, { hopLimit: 63 }) }),
    retval: TC_ACT_REDIRECT,
    out: icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_A, dst: REMOTE, hopLimit: 63 }, quoted: udp(REMOTE, 40001, HOST_A, 28003, { hopLimit: 63 }) }),
    stats: { 'lan/translated': 1 },
  },
  {
    name: 'WAN: Time Exceeded about a flow without port translation: sent on unchanged but the hop limit',
    prog: 'wan', seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: icmp6Error({ type: ICMP6.TIME_EXCEEDED, code: 0, ip6: { src: ROUTER, dst: HOST_A }, quoted: tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK, { hopLimit: 1 }) }),
    retval: TC_ACT_REDIRECT,
    out: icmp6Error({ type: ICMP6.TIME_EXCEEDED, code: 0, ip6: { src: ROUTER, dst: HOST_A, hopLimit: 63 }, quoted: tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK, { hopLimit: 1 }) }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'WAN: Parameter Problem quoting a packet with extension headers is walked to its ports',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmp6Error({ type: ICMP6.PARAM_PROBLEM, code: 1, rest: 40, ip6: { src: REMOTE, dst: HOST_A }, quoted: withExt(tcp(HOST_A, 6003, REMOTE, 55555, TCP.ACK), [{ type: 'dstopts' }]) }),
    retval: TC_ACT_REDIRECT,
    out: icmp6Error({ type: ICMP6.PARAM_PROBLEM, code: 1, rest: 40, ip6: { src: REMOTE, dst: HOST_A, hopLimit: 63 }, quoted: withExt(tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK), [{ type: 'dstopts' }]) }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'WAN: an ICMPv6 error about no flow passes untouched',
    prog: 'wan', packet: icmp6Error({ type: ICMP6.DEST_UNREACH, code: 0, ip6: { src: ROUTER, dst: HOST_A }, quoted: tcp(HOST_A, 6003, REMOTE, 55555, TCP.ACK) }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'WAN: an echo request to a LAN host passes untouched',
    prog: 'wan', seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: { ip6: { src: REMOTE, dst: HOST_A }, l4: { raw: icmp6Message(REMOTE, HOST_A, ICMP6.ECHO_REQUEST, 0, 0x12340001, Buffer.from('ping')), proto: IPPROTO_ICMPV6 } },
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/pass': 1 },
  },
  {
    name: 'LAN: neighbour solicitation passes untouched',
    prog: 'lan', packet: { eth: { dst: '33:33:ff:00:00:01' }, ip6: { src: HOST_A, dst: 'ff02::1:ff00:1', hopLimit: 255 }, l4: { raw: icmp6Message(HOST_A, 'ff02::1:ff00:1', ICMP6.NEIGHBOR_SOLICIT, 0, 0, Buffer.concat([Buffer.from([0x20, 0x01, 0x0d, 0xb8, 0, 1]), Buffer.alloc(9), Buffer.from([1])])), proto: IPPROTO_ICMPV6 } },
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },
  {
    name: 'LAN: an error from another host than the one the quoted packet went to passes untouched',
    prog: 'lan', seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_B, dst: REMOTE }, quoted: udp(REMOTE, 40001, HOST_A, 29003) }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/pass': 1 },
  },

  // ---- malformed and truncated: never let through ----
  {
    name: 'payload length longer than what arrived: malformed, passed untouched',
    prog: 'wan', seed: live('irc'), packet: withPayloadLen(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), 200),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'payload length shorter than the TCP header: malformed',
    prog: 'wan', seed: live('irc'), packet: withPayloadLen(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), 12),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'payload length 0 (a jumbogram, not handled): malformed',
    prog: 'wan', seed: live('irc'), packet: withPayloadLen(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), 0),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    // (A fixed header cut short cannot be run: BPF_PROG_TEST_RUN itself
    // refuses an 0x86dd frame shorter than 40 bytes of IPv6 header.)
    name: 'a datagram that ends with its fixed header, payload length 20: malformed',
    prog: 'wan', seed: live('irc'), packet: cut(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), 40),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'version 4 in an IPv6 frame: malformed',
    prog: 'wan', seed: live('irc'), packet: tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN, { version: 4 }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  ...([
    ['hop-by-hop', { type: 'hop', len: 2 }],
    ['routing', { type: 'routing', len: 2 }],
    ['destination options', { type: 'dstopts', len: 2 }],
  ] as [string, Ext6][]).map(([what, e]): Row => ({
    name: `a ${what} header longer than the payload: malformed, never let through`,
    prog: 'wan', seed: live('translated'),
    packet: ((): Buffer => { const b = buildPacket6(withExt(SYN_XL, [e])); const n = 16; b.writeUInt16BE(n, ETH_HLEN + 4); return b.subarray(0, ETH_HLEN + 40 + n); })(),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  })),
  {
    name: 'a fragment header cut short: malformed',
    prog: 'wan', seed: live('udpxl'),
    packet: ((): Buffer => { const b = buildPacket6(bigIn()); b.writeUInt16BE(4, ETH_HLEN + 4); return b.subarray(0, ETH_HLEN + 44); })(),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'two fragment headers: malformed',
    prog: 'wan', seed: live('translated'), packet: withExt(SYN_XL, [{ type: 'frag' }, { type: 'frag' }]),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a hop-by-hop header after another header: malformed',
    prog: 'wan', seed: live('translated'), packet: withExt(SYN_XL, [{ type: 'dstopts' }, { type: 'hop' }]),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a TCP header cut short by the payload length: malformed',
    prog: 'wan', seed: live('translated'), packet: ((): Buffer => { const b = buildPacket6(SYN_XL); b.writeUInt16BE(16, ETH_HLEN + 4); return b.subarray(0, ETH_HLEN + 56); })(),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a TCP data offset below 5 words: malformed',
    prog: 'wan', seed: live('translated'), packet: poke(SYN_XL, 40 + 12, 0x40),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a UDP checksum of 0 (mandatory over IPv6): malformed, not let through',
    prog: 'wan', seed: live('udpxl'), packet: udp(REMOTE, 40001, HOST_A, 28003, {}, { zeroChecksum: true }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a UDP length beyond the datagram: malformed',
    prog: 'wan', seed: live('udpxl'), packet: udp(REMOTE, 40001, HOST_A, 28003, {}, { length: 200 }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'wan/malformed': 1 },
  },
  {
    name: 'a truncated trigger arms nothing (LAN, UDP header cut short)',
    prog: 'lan', packet: ((): Buffer => { const b = buildPacket6(udp(HOST_A, 50000, SERVER, 27020)); b.writeUInt16BE(4, ETH_HLEN + 4); return b.subarray(0, ETH_HLEN + 44); })(),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/malformed': 1 },
  },

  // ---- layer-3 devices ----
  {
    name: 'wan_l3: inbound SYN on a layer-3 WAN (skb->protocol IPv6) is let through with an Ethernet header pushed (type 0x86dd)',
    prog: 'wan_l3', seed: live('translated'), packet: tcp(L3_REMOTE, 55555, HOST_A, 6003, TCP.SYN),
    retval: TC_ACT_REDIRECT, out: xlate(tcp(L3_REMOTE, 55555, HOST_A, 6003, TCP.SYN), { dport: 7003 }), pushedEth: true,
    stats: { 'wan/translated': 1 }, counters: { translated: { flows_opened: 1 } },
    flows: [newFlow({ ...XL_FLOW, remote: L3_REMOTE }, SEEN.SYN)],
  },
  {
    name: 'lan_l3: a trigger on a layer-3 LAN arms',
    prog: 'lan_l3', packet: tcp(L3_HOST, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: L3_HOST, ifindex: 'lo', touch: 'new' }], hosts: { [L3_HOST]: 1 },
  },

  // ---- IPv4 unaffected ----
  {
    name: 'IPv4 still arms its own session; the IPv6 maps and counters stay empty',
    prog: 'lan', packet: buildPacket({ ip: { src: '10.0.0.2', dst: '198.51.100.10' }, l4: { tcp: { sport: 40000, dport: 6667, flags: TCP.SYN } } }),
    retval: TC_ACT_UNSPEC, out: 'same', stats: { 'ipv4 lan/trigger': 1 },
    counters4: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions4: ['irc/10.0.0.2'],
  },
];

// --- running and checking -------------------------------------------------------------------
const frame = (p: Packet6Spec | Buffer): Buffer => (Buffer.isBuffer(p) ? p : buildPacket6(p));

function runProg(f: TestDatapath, prog: Prog, input: Buffer): { retval: number; out: Buffer } {
  const out = Buffer.alloc(input.length + 512);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: out });
  assert.equal(r.ret, 0, `BPF_PROG_TEST_RUN of ${prog} failed: ${r.ret}`);
  return { retval: r.retval >>> 0, out: out.subarray(0, r.data_size_out) };
}

function hexDiff(got: Buffer, want: Buffer): string {
  const lines = [`got  ${describe6(got)}`, `want ${describe6(want)}`];
  if (got.length !== want.length) lines.push(`length ${got.length} != ${want.length}`);
  const diffs: string[] = [];
  for (let i = 0; i < Math.max(got.length, want.length) && diffs.length < 12; i++) {
    if (got[i] !== want[i]) diffs.push(`@${i}: ${got[i]?.toString(16).padStart(2, '0') ?? '--'} != ${want[i]?.toString(16).padStart(2, '0') ?? '--'}`);
  }
  if (diffs.length) lines.push(`bytes differ ${diffs.join(', ')}`);
  return lines.join('\n');
}

function checkTouch(what: string, got: bigint, seeded: bigint | undefined, touch: Touch, lo: bigint, hi: bigint): void {
  if (touch === 'unchanged') assert.equal(got, seeded, `${what}: changed (${got} != seeded ${seeded})`);
  else {
    if (touch === 'fresh') assert.ok(seeded !== undefined, `${what}: 'fresh' but not seeded`);
    assert.ok(got >= lo && got <= hi, `${what}: ${got} is not the time of the run (${lo}..${hi}; seeded ${seeded})`);
  }
}

/** Empty every map a row touches and zero the counters. */
function reset(f: TestDatapath): void {
  const m = f.dp.maps;
  for (const map of [m.sessions6, m.hostSessions6, m.flows6, m.frags6, m.sessions, m.hostSessions, m.flows, m.frags] as const) {
    for (const [k] of [...(map as { entries(): Iterable<[unknown, unknown]> }).entries()]) (map as { delete(k: unknown): boolean }).delete(k);
  }
  m.pktStats.zero(Array.from({ length: PKT_STATS_ENTRIES }, (_, i) => i));
  m.ruleStats.zero(Array.from({ length: RULE_STATS_ENTRIES }, (_, i) => i));
}

function setup(f: TestDatapath, sessionsPerHost: number): Map<string, number> {
  const compiled = compileRules(RULES);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN4, WAN_IFINDEX, sessionsPerHost);
  f.state.setLocalAddrs([WAN4, '10.0.0.1']);
  f.state.setLanNets(['10.0.0.0/24']);
  f.state.setLocalAddrs6(LOCAL6);
  f.state.setLanNets6([...LAN_NETS6, L3_LAN_NET]);
  return compiled.ids;
}

function runRow(f: TestDatapath, ids: Map<string, number>, row: Row): void {
  reset(f);
  f.state.setRuntime(WAN4, WAN_IFINDEX, row.sessionsPerHost ?? 8);
  const c = new Ctx(f);
  c.ids = ids;
  row.seed?.(c);

  const l3 = row.prog.endsWith('_l3');
  const fullInput = frame(thunk(row.packet, c));
  const input = Buffer.from(l3 ? fullInput.subarray(ETH_HLEN) : fullInput);
  const tStart = monotonicNs() - CLOCK_TICK_MAX_NS;
  for (const [i, p] of (row.prelude ?? []).entries()) {
    const pre = frame(thunk(p.packet, c));
    const r = runProg(f, p.prog, p.prog.endsWith('_l3') ? pre.subarray(ETH_HLEN) : pre);
    if (p.retval !== undefined) assert.equal(r.retval, p.retval >>> 0, `prelude packet ${i}: retval ${RETVAL_NAME[r.retval] ?? r.retval}`);
  }
  const run = runProg(f, row.prog, input);
  let raw = run.out;
  if (row.pushedEth) {
    const pushed = Buffer.from([...new Array<number>(12).fill(0), 0x86, 0xdd]);
    assert.ok(raw.subarray(0, ETH_HLEN).equals(pushed), `the output must start with the pushed Ethernet header ${pushed.toString('hex')}, got ${raw.subarray(0, ETH_HLEN).toString('hex')}`);
    raw = raw.subarray(ETH_HLEN);
  }
  const out = l3 ? Buffer.concat([fullInput.subarray(0, ETH_HLEN), raw]) : raw;
  const tEnd = monotonicNs();

  // 1. Verdict.
  assert.equal(run.retval, row.retval >>> 0, `retval ${RETVAL_NAME[run.retval] ?? run.retval}, want ${RETVAL_NAME[row.retval >>> 0]}\n${hexDiff(out, fullInput)}`);
  // 2. Bytes.
  const wantOut = thunk(row.out, c);
  const want = wantOut === 'same' ? fullInput : frame(wantOut);
  assert.ok(out.equals(want), `output bytes differ from the ${wantOut === 'same' ? 'input (must pass untouched)' : 'independently built packet'}\n${hexDiff(out, want)}`);
  if (wantOut !== 'same') {
    const ck = verifyChecksums6(out);
    assert.notEqual(ck.l4, false, `L4 checksum of the output is wrong: ${ck.detail}`);
    assert.notEqual(ck.quotedL4, false, `quoted L4 checksum of the output is wrong: ${ck.detail}`);
  }
  // 3. Packet counters of both families.
  const gotStats: Record<string, number> = {};
  for (const [fi, fam] of FAMS.entries()) {
    for (const [di, d] of PKT_DIRS.entries()) {
      for (const [vi, v] of VERDICTS.entries()) {
        const n = f.dp.maps.pktStats.sum((fi * PKT_DIRS.length + di) * VERDICTS.length + vi);
        if (n !== 0n) gotStats[`${fam === 'ipv4' ? 'ipv4 ' : ''}${d}/${v}`] = Number(n);
      }
    }
  }
  assert.deepEqual(gotStats, { ...row.stats }, 'pt_pkt_stats (non-zero counters, both families)');
  // 4. Rule counters of both families.
  for (const [fi, want4or6] of [[0, row.counters4 ?? {}], [1, row.counters ?? {}]] as const) {
    const got: Record<string, Record<string, number>> = {};
    for (const [name, id] of ids) {
      for (const [ci, cn] of RULE_COUNTERS.entries()) {
        const n = f.dp.maps.ruleStats.sum((fi * MAX_RULES + id) * RULE_COUNTERS.length + ci);
        if (n !== 0n) (got[name] ??= {})[cn] = Number(n);
      }
    }
    assert.deepEqual(got, want4or6, `pt_rule_stats of ${FAMS[fi]} (non-zero counters)`);
  }
  // 5. pt6_sessions, whole.
  const names = new Map([...ids].map(([n, i]) => [i, n]));
  const gotS = new Map([...f.dp.maps.sessions6.entries()].map(([k, v]) => [sessKey(k), { k, v }]));
  const show = (): string => [...gotS.values()].map(({ k, v }) => `${names.get(k.rule)}/${k.host}/${k.peer} host ${v.host}`).join(', ') || 'none';
  const wantS: SessionExp[] = row.sessions ?? [...c.seededSessions].map(([k, v]) => {
    const [rid, , peer] = k.split('/');
    return { rule: names.get(Number(rid))!, host: v.host, ...(peer !== '::' ? { peer } : {}), ifindex: v.ifindex, touch: 'unchanged' as const };
  });
  assert.equal(gotS.size, wantS.length, `pt6_sessions holds ${gotS.size} (${show()}), want ${wantS.length}`);
  for (const s of wantS) {
    const key = sessKey(s.peer ? { rule: c.id(s.rule), host: '::', peer: s.peer } : { rule: c.id(s.rule), host: s.host, peer: '::' });
    const got = gotS.get(key);
    const what = `session ${s.rule}/${s.peer ? `peer ${s.peer}` : s.host}`;
    assert.ok(got, `${what} missing; pt6_sessions has: ${show()}`);
    assert.equal(got.v.host, s.host, `${what}: host`);
    if (s.ifindex !== undefined) assert.equal(got.v.ifindex, s.ifindex === 'lo' ? c.lo : s.ifindex, `${what}: ifindex`);
    const seeded = c.seededSessions.get(key);
    if (s.touch === 'new') {
      checkTouch(`${what} opened_ns`, got.v.opened_ns, undefined, 'new', tStart, tEnd);
      assert.equal(got.v.last_seen_ns, got.v.opened_ns, `${what}: a new session has last_seen == opened`);
    } else {
      assert.equal(got.v.opened_ns, seeded?.opened_ns, `${what}: opened_ns must not change`);
      checkTouch(`${what} last_seen_ns`, got.v.last_seen_ns, seeded?.last_seen_ns, s.touch, tStart, tEnd);
    }
  }
  // 6. pt6_flows, whole.
  const gotF = new Map([...f.dp.maps.flows6.entries()].map(([k, v]) => [flowKey(k), { k, v }]));
  const showF = (): string => [...gotF.keys()].join('; ') || 'none';
  const wantF: { key: Pt6FlowKey; value: Pt6Flow; touch: Touch }[] = [];
  if (row.flows === undefined) for (const e of c.seededFlows.values()) wantF.push({ ...e, touch: 'unchanged' });
  else {
    for (const fe of row.flows) {
      const [inE, outE] = flowEntries(c, fe.pair, fe.seenIn, fe.seenOut);
      if (fe.ifindexIn !== undefined) inE.value.ifindex = fe.ifindexIn === 'lo' ? c.lo : fe.ifindexIn;
      wantF.push({ ...inE, touch: fe.touchIn }, { ...outE, touch: fe.touchOut });
    }
  }
  assert.equal(gotF.size, wantF.length, `pt6_flows holds ${gotF.size} entries (${showF()}), want ${wantF.length}`);
  for (const w of wantF) {
    const key = flowKey(w.key);
    const got = gotF.get(key);
    assert.ok(got, `flow entry ${key} missing; pt6_flows has: ${showF()}`);
    const seeded = c.seededFlows.get(key)?.value;
    for (const field of ['nat_port', 'rule', 'ifindex', 'seen', 'flags'] as const) assert.equal(got.v[field], w.value[field], `flow ${key}: ${field}`);
    if (w.touch === 'new') {
      checkTouch(`flow ${key} created_ns`, got.v.created_ns, undefined, 'new', tStart, tEnd);
      assert.equal(got.v.last_seen_ns, got.v.created_ns, `flow ${key}: new`);
    } else {
      assert.equal(got.v.created_ns, seeded?.created_ns, `flow ${key}: created_ns must not change`);
      checkTouch(`flow ${key} last_seen_ns`, got.v.last_seen_ns, seeded?.last_seen_ns, w.touch, tStart, tEnd);
    }
  }
  // 7. pt6_host_sessions (non-zero counts).
  const nz = (o: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(o).filter(([, n]) => n !== 0));
  assert.deepEqual(nz(Object.fromEntries([...f.dp.maps.hostSessions6.entries()].map(([h, v]) => [h, v.sessions]))),
    nz(row.hosts ?? Object.fromEntries(c.seededHosts)), 'pt6_host_sessions (hosts with a non-zero count)');
  // 8. pt6_frags, whole.
  const gotFr = [...f.dp.maps.frags6.entries()].map(([k, v]) => ({ k, v }));
  const wantFr = row.frags ?? [];
  assert.equal(gotFr.length, wantFr.length, `pt6_frags holds ${gotFr.length} entries, want ${wantFr.length}: ${JSON.stringify(gotFr.map((e) => e.k))}`);
  for (const w of wantFr) {
    const got = gotFr.find(({ k }) => k.saddr === w.src && k.daddr === w.dst && k.id === w.id && k.proto === w.nh && k.dir === (w.dir === 'in' ? DIR_IN : DIR_OUT));
    assert.ok(got, `pt6_frags entry ${JSON.stringify(w)} missing; has ${JSON.stringify(gotFr.map((e) => e.k))}`);
    assert.equal(got.v.ifindex, w.ifindex === 'lo' ? c.lo : w.ifindex, 'pt6_frags ifindex');
    checkTouch('pt6_frags first_ns', got.v.first_ns, undefined, 'new', tStart, tEnd);
  }
  // 9. IPv4 state: untouched by IPv6 packets.
  const got4 = [...f.dp.maps.sessions.entries()].map(([k, v]) => `${names.get(k.rule)}/${v.host}`).sort();
  assert.deepEqual(got4, [...(row.sessions4 ?? [])].sort(), 'pt_sessions (IPv4)');
  assert.equal([...f.dp.maps.flows.entries()].length, 0, 'pt_flows (IPv4) stays empty');
}

suite('IPv6 data path (BPF_PROG_TEST_RUN)', SKIP ? { skip: SKIP } : {}, () => {
  let f: TestDatapath;
  let ids: Map<string, number>;
  before(() => {
    f = makeTestDatapath();
    ids = setup(f, 8);
  });
  after(() => f?.cleanup());

  for (const row of ROWS) {
    test(`${row.prog}: ${row.name}`, () => runRow(f, ids, row));
  }

  test('every row has a distinct name', () => {
    const seen = new Set<string>();
    for (const r of ROWS) {
      assert.ok(!seen.has(r.name), `duplicate row name: ${r.name}`);
      seen.add(r.name);
    }
  });

  test('SYN closed before the trigger, open right after it, and the reply goes back out (one sequence)', () => {
    reset(f);
    const syn = tcp(REMOTE, 55555, HOST_A, 6003, TCP.SYN);
    assert.equal(runProg(f, 'wan', buildPacket6(syn)).retval, TC_ACT_UNSPEC, 'closed before any trigger');
    assert.equal(runProg(f, 'lan', buildPacket6(tcp(HOST_A, 40000, SERVER, 5000, TCP.SYN))).retval, TC_ACT_UNSPEC);
    const r = runProg(f, 'wan', buildPacket6(syn));
    assert.equal(r.retval, TC_ACT_REDIRECT, 'open right after the trigger');
    const want = buildPacket6(xlate(syn, { dport: 7003 }));
    assert.ok(r.out.equals(want), hexDiff(r.out, want));
    const reply = tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK);
    const rr = runProg(f, 'lan', buildPacket6(reply));
    assert.equal(rr.retval, TC_ACT_REDIRECT);
    const wantReply = buildPacket6(xlate(reply, { sport: 6003 }));
    assert.ok(rr.out.equals(wantReply), hexDiff(rr.out, wantReply));
    // UDP of another rule: closed before, open after.
    const dg = udp(REMOTE2, 41000, HOST_B, 27001);
    assert.equal(runProg(f, 'wan', buildPacket6(dg)).retval, TC_ACT_UNSPEC, 'UDP closed before');
    runProg(f, 'lan', buildPacket6(udp(HOST_B, 50000, SERVER, 27015)));
    assert.equal(runProg(f, 'wan', buildPacket6(dg)).retval, TC_ACT_REDIRECT, 'UDP open after');
  });

  test('kernel sweep of IPv6 sessions and flows: removes what is over, counts the live, recounts the hosts', () => {
    reset(f);
    const c = new Ctx(f);
    c.ids = ids;
    c.session('irc', HOST_A);                                   // live
    c.session('game', HOST_A, { ageMs: 11 * MIN });             // expired (10 min)
    c.session('irc', HOST_B, { ageMs: 6 * MIN });               // expired (5 min)
    c.session('voip', HOST_B, { peer: SERVER });                // live, contacted
    c.session('off', HOST_ULA);                                 // disabled rule: closed
    c.hosts(HOST_A, 5);                                         // drifted
    c.flow(IRC_FLOW);                                           // live
    c.flow(UDPXL_FLOW, { ageMs: 301_000 });                     // past the UDP timer
    const before4 = f.dp.maps.ruleStats.sum((1 * MAX_RULES + ids.get('game')!) * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('sessions_expired'));
    const r = f.dp.sweep({ now: monotonicNs(), what: SWEEP_SESSIONS6 | SWEEP_FLOWS6 | SWEEP_RECOUNT });
    assert.equal(r.sessions6, 5, 'sessions seen');
    assert.equal(r.sessions6_live, 2);
    assert.equal(r.sessions6_expired, 2);
    assert.equal(r.sessions6_closed, 1);
    assert.deepEqual(r.liveByRule6, new Map([[ids.get('irc')!, 1], [ids.get('voip')!, 1]]), 'live sessions per rule');
    assert.equal(r.liveByRule, null, 'no IPv4 walk asked');
    assert.equal(r.flow6_entries, 2, 'the live flow\'s two entries are left');
    assert.equal(r.flows6_live, 1);
    assert.equal(r.flow6_entries_removed, 2);
    assert.ok(r.sessions6_next_ns > 0n && r.flows6_next_ns > 0n);
    const left = [...f.dp.maps.sessions6.entries()].map(([k, v]) => `${ids.get('irc') === k.rule ? 'irc' : 'voip'}/${v.host}`).sort();
    assert.deepEqual(left, [`irc/${HOST_A}`, `voip/${HOST_B}`]);
    // A count of 0 and no entry mean the same (pt_recount_apply(), shared with IPv4).
    const hosts = Object.fromEntries([...f.dp.maps.hostSessions6.entries()].filter(([, v]) => v.sessions).map(([h, v]) => [h, v.sessions]));
    assert.deepEqual(hosts, { [HOST_A]: 1, [HOST_B]: 1 }, 'the recount set every host to its live sessions (the ULA host has none)');
    assert.equal(r.hosts6, [...f.dp.maps.hostSessions6.entries()].length, 'hosts after the recount');
    assert.ok(r.hosts6_fixed >= 1, `hosts fixed: ${r.hosts6_fixed}`);
    assert.equal(f.dp.maps.ruleStats.sum((1 * MAX_RULES + ids.get('game')!) * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('sessions_expired')) - before4, 1n,
      'an expired session counts in sessions_expired of family IPv6');
    assert.deepEqual([...f.dp.maps.flows6.entries()].map(([k]) => k.dport).sort(), [113, 55555]);

    // One host's sessions only (PT_SWEEP_HOST6): its count becomes its live sessions.
    c.session('game', HOST_A, { ageMs: 11 * MIN, count: false });
    f.dp.maps.hostSessions6.set(HOST_A, { sessions: 9, recheck_ns: 0n });
    const h = f.dp.sweep({ now: monotonicNs(), what: SWEEP_SESSIONS6 | SWEEP_HOST6, host6: HOST_A });
    assert.equal(h.sessions6_live, 1, 'the host\'s live sessions');
    assert.equal(h.liveByRule6, null);
    assert.equal(f.dp.maps.hostSessions6.get(HOST_A)?.sessions, 1);
    assert.equal([...f.dp.maps.sessions6.entries()].length, 2, 'the expired one went');
  });

  test('sweep of IPv4 only leaves the IPv6 maps alone', () => {
    reset(f);
    const c = new Ctx(f);
    c.ids = ids;
    c.session('game', HOST_A, { ageMs: 11 * MIN });
    const r = f.dp.sweep({ now: monotonicNs(), what: 1 | 2 });
    assert.equal(r.sessions6, 0);
    assert.equal([...f.dp.maps.sessions6.entries()].length, 1);
  });

  test('full pt6_sessions and pt6_flows: the data path removes what is over and takes the new one; with nothing over, refuses (counted)', () => {
    const g = makeTestDatapath({ limits: { sessions: 2, flows: 2 } });
    try {
      const gids = setup(g, 8);
      const c = new Ctx(g);
      c.ids = gids;
      // Sessions: the table (2) and the host table (2) full of expired sessions of other hosts.
      c.session('irc', HOST_B, { ageMs: 6 * MIN });
      c.session('irc', HOST_ULA, { ageMs: 6 * MIN });
      assert.equal(runProg(g, 'lan', buildPacket6(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN))).retval, TC_ACT_UNSPEC);
      assert.deepEqual([...g.dp.maps.sessions6.entries()].map(([, v]) => v.host), [HOST_A], 'the expired sessions made room');
      assert.deepEqual(Object.fromEntries([...g.dp.maps.hostSessions6.entries()].filter(([, v]) => v.sessions).map(([h, v]) => [h, v.sessions])), { [HOST_A]: 1 });
      // Full of live sessions: refused, counted as map full.
      runProg(g, 'lan', buildPacket6(udp(HOST_B, 50000, SERVER, 27020)));
      assert.equal([...g.dp.maps.sessions6.entries()].length, 2);
      assert.equal(runProg(g, 'lan', buildPacket6(tcp(HOST_ULA, 40000, SERVER, 5000, TCP.SYN))).retval, TC_ACT_UNSPEC);
      const full = (rule: string, counter: Counter): bigint => g.dp.maps.ruleStats.sum((1 * MAX_RULES + gids.get(rule)!) * RULE_COUNTERS.length + RULE_COUNTERS.indexOf(counter));
      assert.equal(full('translated', 'refused_map_full'), 1n, 'refused: no session is over');
      assert.equal([...g.dp.maps.sessions6.entries()].length, 2);

      // Flows: 2 flows (4 entries) past their timers fill pt6_flows (2 * limits.flows).
      c.flow({ ...IRC_FLOW, rport: 1001 }, { ageMs: 300_000 });
      c.flow({ ...IRC_FLOW, rport: 1002 }, { ageMs: 300_000 });
      const r = runProg(g, 'wan', buildPacket6(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)));
      assert.equal(r.retval, TC_ACT_REDIRECT, 'the SYN got its flow after the reclaim');
      assert.deepEqual([...g.dp.maps.flows6.entries()].map(([k]) => (k.dir === DIR_IN ? k.sport : k.dport)).sort(), [55555, 55555]);
      // Full of live flows: refused, counted.
      const r2 = runProg(g, 'wan', buildPacket6(tcp(REMOTE2, 55556, HOST_A, 113, TCP.SYN)));
      const r3 = runProg(g, 'wan', buildPacket6(tcp(REMOTE2, 55557, HOST_A, 113, TCP.SYN)));
      assert.equal(r2.retval, TC_ACT_REDIRECT, 'a second flow fits');
      assert.equal(r3.retval, TC_ACT_UNSPEC, 'a third does not');
      assert.equal(full('irc', 'flows_refused'), 1n);
    } finally {
      g.cleanup();
    }
  });

  test('the quoted datagram of the ICMPv6 rows is whole, so their quoted checksums are checked', () => {
    const e = icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_A, dst: REMOTE }, quoted: udp(REMOTE, 40001, HOST_A, 29003) });
    assert.equal(verifyChecksums6(buildPacket6(e)).quotedL4, true);
    const bad = buildPacket6(e);
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    const ck = verifyChecksums6(bad);
    assert.equal(ck.l4, false, 'a flipped byte breaks the ICMPv6 checksum');
    assert.equal(ck.quotedL4, false, 'and the quoted UDP checksum');
    assert.equal(ipv6Datagram(e).length, 40 + 8 + 40 + 8 + 22);
  });
});

void NSEC_PER_SEC;
