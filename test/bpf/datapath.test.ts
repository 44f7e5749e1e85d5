/**
 * The data path, packet by packet, through BPF_PROG_TEST_RUN: a table of rows
 * in the style of kernel selftests / katran's test fixtures. Each row loads a
 * fresh copy of the object (own bpffs under /tmp), seeds the maps (rules through
 * compileRules + applyRules, runtime settings, sessions and flows), runs one
 * packet (after optional prelude packets) through pt_lan_ingress or
 * pt_wan_ingress, and checks:
 *
 *  - the TC verdict (retval);
 *  - the output bytes, exactly, against a packet built independently by
 *    test/helpers/packet.ts with the translated fields, TTL - 1 and checksums
 *    computed from scratch; plus a checksum re-verification;
 *  - the maps afterwards: sessions, flows (both directions), per-host session
 *    counts, per-rule counters and packet counters, each compared in full
 *    (anything not expected must not be there).
 *
 * The packets never leave the kernel test run: nothing is sent anywhere.
 * Addresses: WAN and remotes in TEST-NET ranges, LAN in 10.0.0.0/24.
 */
import { test, describe as suite } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { monotonicNs } from '../../src/core/state.js';
import { flowFate, partnerKey, type FlowFate } from '../../src/core/sweep.js';
import type { OpenSpec, PortRange, Proto, Rule } from '../../src/config/types.js';
import { CLOCK_TICK_MAX_NS, CONFIG_LOCAL_ADDRS, type PtFlow, type PtFlowKey, type PtFrag, type PtFragKey, type PtSession, type PtSessionKey } from '../../src/bpf/abi.js';
import { TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, bpfSkipReason, useDatapath, type TestDatapath } from '../helpers/bpffs.js';
import {
  ETH_HLEN, ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP, buildPacket, describe, fragment, icmpError, inetChecksum, parsePacket,
  verifyChecksums, type IcmpErrorOpts, type Ipv4Opts, type PacketSpec, type TcpOpts, type UdpOpts,
} from '../helpers/packet.js';

const SKIP = bpfSkipReason();

// --- the C ABI, written out here from bpf/porttrig_abi.h (not from abi.ts) ----
const RETVAL_NAME: Record<number, string> = { [TC_ACT_UNSPEC]: 'TC_ACT_UNSPEC', [TC_ACT_SHOT]: 'TC_ACT_SHOT', [TC_ACT_REDIRECT]: 'TC_ACT_REDIRECT' };
const DIR_IN = 1;
const DIR_OUT = 2;
const SEEN = { SYN: 1, ACK: 2, FIN: 4, RST: 8 } as const;
const RULE_COUNTERS = [
  'trigger_hits', 'sessions_opened', 'refused_conflict', 'refused_host_limit',
  'refused_map_full', 'flows_opened', 'flows_refused', 'sessions_expired',
] as const;
type Counter = (typeof RULE_COUNTERS)[number];
const PKT_DIRS = ['lan', 'wan'] as const;
const VERDICTS = ['pass', 'trigger', 'translated', 'dropped', 'malformed'] as const;
type StatKey = `${(typeof PKT_DIRS)[number]}/${(typeof VERDICTS)[number]}`;

// --- addresses (TEST-NET and 10.x only) -----------------------------------------
const WAN = '203.0.113.1';
const OTHER_WAN = '203.0.113.99';    // an address that is not the WAN address
const REMOTE = '198.51.100.7';       // a remote peer connecting in
const SERVER = '198.51.100.10';      // what LAN hosts send triggers to
const SERVER2 = '198.51.100.11';
const GW_LAN = '10.0.0.1';
const HOST_A = '10.0.0.2';
const HOST_B = '10.0.0.3';
const HOST_C = '10.0.0.4';
const LAN_SRC = '10.0.0.50';         // a LAN address showing up on the WAN side
const ROUTER = '198.51.100.254';     // a router on the path, sending ICMP errors
const LAN_NETS = ['10.0.0.0/24'];
const LOCAL_ADDRS = [GW_LAN, WAN];
/** More local addresses than pt_config carries inline (CONFIG_LOCAL_ADDRS). */
const MANY_LOCAL_ADDRS = [...LOCAL_ADDRS, ...Array.from({ length: CONFIG_LOCAL_ADDRS }, (_, i) => `10.0.0.${240 + i}`)];
const WAN_IFINDEX = 7;               // stored in pt_config only
const LAN_IF = 3;                    // ifindex of seeded sessions (the redirect target)
const MIN = 60_000;

// --- rules ------------------------------------------------------------------------
function ranges(ports: string): PortRange[] {
  return ports.split(',').map((p) => {
    const [a, b] = p.split('-').map(Number);
    return { from: a!, to: b ?? a! };
  });
}
function protos(p: string): Proto[] {
  return p === 'both' ? ['tcp', 'udp'] : [p as Proto];
}
/** "tcp/6000-6009 -> 7000" */
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
  rule('irc', 'tcp/6667,6697', 'tcp/113', { idleTimeoutMs: 5 * MIN }),
  rule('game', 'udp/27015-27030', ['udp/27000-27014', 'tcp/27040']),
  rule('translated', 'tcp/5000', 'tcp/6000-6009 -> 7000', { conflict: 'last' }),
  rule('voip', 'udp/5060', 'tcp/5061', { peer: 'contacted' }),
  rule('off', 'tcp/7777', 'tcp/7778', { enabled: false }),
  rule('dual', 'both/4000', 'both/4001'),
  rule('ranges', 'udp/3000-3002,3100-3105', 'udp/3200'),
  rule('multi', 'tcp/8000', ['tcp/8001', 'udp/8002-8003 -> 9002', 'both/8010']),
  rule('udpxl', 'udp/28100', 'udp/28000-28009 -> 29000'),
  rule('killer', 'tcp/9100', 'tcp/9101-9102 -> 9201', { killFlowsOnExpiry: true, conflict: 'last' }),
];

/** RULES after a reload that gave irc's open port 113 to a new rule (irc now opens 114). */
const RELOAD_MOVED_113: Rule[] = [
  ...RULES.map((r) => (r.name === 'irc' ? { ...r, open: [openSpec('tcp/114')] } : r)),
  rule('ident', 'tcp/6668', 'tcp/113'),
];
/** RULES after a reload that changed the translation of rule `translated` (-> 7000 became -> 8000). */
const RELOAD_RETRANSLATED: Rule[] = RULES.map((r) => (r.name === 'translated' ? { ...r, open: [openSpec('tcp/6000-6009 -> 8000')] } : r));

// --- packets ------------------------------------------------------------------------
const MSS_1460 = Uint8Array.of(2, 4, 0x05, 0xb4);
const ROUTER_ALERT = Uint8Array.of(0x94, 0x04, 0x00, 0x00);                 // IHL 6
const NOPS_8 = Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 0);                       // IHL 7
const RECORD_ROUTE_40 = Uint8Array.from([7, 39, 4, ...new Array<number>(36).fill(0), 0]); // IHL 15

function tcp(src: string, sport: number, dst: string, dport: number, flags: number,
  ip: Partial<Ipv4Opts> = {}, extra: Partial<TcpOpts> = {}): PacketSpec {
  const options = flags & TCP.SYN ? MSS_1460 : undefined;
  return {
    ip: { src, dst, ttl: 64, id: 0x1c46, df: true, ...ip },
    l4: { tcp: { sport, dport, flags, seq: 0x10002000, ack: flags & TCP.ACK ? 0x30004000 : 0, ...(options ? { options } : {}), ...extra } },
  };
}
function udp(src: string, sport: number, dst: string, dport: number,
  ip: Partial<Ipv4Opts> = {}, extra: Partial<UdpOpts> = {}): PacketSpec {
  return {
    ip: { src, dst, ttl: 64, id: 0x2d57, ...ip },
    l4: { udp: { sport, dport, payload: Buffer.from('porttrig test payload\n'), ...extra } },
  };
}
/** The packet as the data path should emit it: fields rewritten, TTL - 1, all checksums fresh. */
function xlate(spec: PacketSpec, to: { src?: string; sport?: number; dst?: string; dport?: number }): PacketSpec {
  const ip = { ...spec.ip, ttl: (spec.ip.ttl ?? 64) - 1, ...(to.src ? { src: to.src } : {}), ...(to.dst ? { dst: to.dst } : {}) };
  const ports = { ...(to.sport !== undefined ? { sport: to.sport } : {}), ...(to.dport !== undefined ? { dport: to.dport } : {}) };
  if ('tcp' in spec.l4) return { ...spec, ip, l4: { tcp: { ...spec.l4.tcp, ...ports } } };
  if ('udp' in spec.l4) return { ...spec, ip, l4: { udp: { ...spec.l4.udp, ...ports } } };
  return { ...spec, ip };
}
/** The first `ipBytes` bytes of the IP datagram of `spec` (header included): a truncated frame. */
function truncated(spec: PacketSpec, ipBytes: number): Buffer {
  return buildPacket(spec).subarray(0, ETH_HLEN + ipBytes);
}
/** An ICMP error (default: port unreachable) from `src` to `dst` (outer header), quoting `quoted`. */
function icmpErr(src: string, dst: string, quoted: PacketSpec, o: Partial<IcmpErrorOpts> & { outer?: Partial<Ipv4Opts> } = {}): PacketSpec {
  const { outer, ...rest } = o;
  return icmpError({
    type: ICMP.DEST_UNREACH, code: ICMP.PORT_UNREACH, ...rest,
    ip: { src, dst, ttl: 64, id: 0x0707, ...outer }, quoted,
  });
}
/** The same ICMP error as the data path should emit it: outer TTL - 1, everything else as given. */
function icmpOut(src: string, dst: string, quoted: PacketSpec, o: Partial<IcmpErrorOpts> & { outer?: Partial<Ipv4Opts> } = {}): PacketSpec {
  return icmpErr(src, dst, quoted, { ...o, outer: { ...o.outer, ttl: (o.outer?.ttl ?? 64) - 1 } });
}

// --- fixture context --------------------------------------------------------------------
interface FlowEntry { key: PtFlowKey; value: PtFlow }
interface FlowPair {
  proto: 'tcp' | 'udp'; remote: string; rport: number; wanPort: number; host: string; hostPort: number;
  rule: string; peer?: string;
}

class Ctx {
  ids = new Map<string, number>();
  /** A port picked at run time (the listener rows). */
  port = 0;
  readonly lo = ffi.ifNameToIndex('lo');
  readonly now = monotonicNs();
  readonly seededSessions = new Map<string, PtSession>();
  readonly seededFlows = new Map<string, FlowEntry>();
  readonly seededHosts = new Map<string, number>();
  readonly seededFrags = new Map<string, { key: PtFragKey; value: PtFrag }>();

  constructor(readonly f: TestDatapath, private readonly t: { after: (fn: () => void | Promise<void>) => void }) {}

  after(fn: () => void | Promise<void>): void { this.t.after(fn); }

  id(rule: string): number {
    const id = this.ids.get(rule);
    if (id === undefined) throw new Error(`no rule ${rule}`);
    return id;
  }

  /** A session, owned by `host`, last seen `ageMs` ago (1 s by default, so a refresh shows). */
  session(rule: string, host: string, o: { peer?: string; ageMs?: number; ifindex?: number; count?: boolean } = {}): void {
    const stamp = this.now - BigInt(Math.round((o.ageMs ?? 1000) * 1e6));
    const key: PtSessionKey = { rule: this.id(rule), peer: o.peer ?? '0.0.0.0' };
    const value: PtSession = { opened_ns: stamp - 1_000_000n, last_seen_ns: stamp, host, ifindex: o.ifindex ?? LAN_IF };
    this.f.dp.maps.sessions.set(key, value);
    this.seededSessions.set(sessKey(key), value);
    if (o.count !== false) this.hosts(host, (this.seededHosts.get(host) ?? 0) + 1);
  }

  hosts(host: string, n: number): void {
    this.f.dp.maps.hostSessions.set(host, { sessions: n, recheck_ns: 0n });
    this.seededHosts.set(host, n);
  }

  /**
   * Both entries of a flow, as pt_open_flow would have made them, last seen
   * `ageMs` ago (each direction can have its own age); `only` seeds just one
   * entry (an orphan).
   */
  flow(p: FlowPair, o: { ageMs?: number; ageInMs?: number; ageOutMs?: number; seenIn?: number; seenOut?: number; only?: 'in' | 'out' } = {}): void {
    const stampOf = (ms: number | undefined): bigint => this.now - BigInt(Math.round((ms ?? o.ageMs ?? 1000) * 1e6));
    const [inE, outE] = flowEntries(this, p, o.seenIn ?? (p.proto === 'tcp' ? SEEN.SYN : 0), o.seenOut ?? (p.proto === 'tcp' ? SEEN.SYN : 0));
    // Both entries of a flow carry the same creation stamp, as pt_open_flow
    // writes them (pt_flow_end tells a flow from its successor by it).
    const inStamp = stampOf(o.ageInMs);
    const outStamp = stampOf(o.ageOutMs);
    const created = (inStamp < outStamp ? inStamp : outStamp) - 1_000_000n;
    for (const [e, stamp, dir] of [[inE, inStamp, 'in'], [outE, outStamp, 'out']] as const) {
      if (o.only && o.only !== dir) continue;
      const value = { ...e.value, created_ns: created, last_seen_ns: stamp };
      this.f.dp.maps.flows.set(e.key, value);
      this.seededFlows.set(flowKey(e.key), { key: e.key, value });
    }
  }

  /** A pt_frags entry: the first fragment of datagram `key` was translated `ageMs` ago. */
  frag(key: PtFragKey, value: { nat_addr: string; ifindex: number }, ageMs = 100): void {
    const v: PtFrag = { first_ns: this.now - BigInt(Math.round(ageMs * 1e6)), ...value };
    this.f.dp.maps.frags.set(key, v);
    this.seededFrags.set(fragKey(key), { key, value: v });
  }
}

const sessKey = (k: PtSessionKey): string => `${k.rule}/${k.peer}`;
const fragKey = (k: PtFragKey): string =>
  `${k.dir === DIR_IN ? 'in' : k.dir === DIR_OUT ? 'out' : `dir${k.dir}`} proto ${k.proto} ${k.saddr} > ${k.daddr} id 0x${k.id.toString(16)}`;
const flowKey = (k: PtFlowKey): string =>
  `${k.dir === DIR_IN ? 'in' : k.dir === DIR_OUT ? 'out' : `dir${k.dir}`} ${k.proto === IPPROTO_TCP ? 'tcp' : 'udp'} ${k.saddr}:${k.sport} > ${k.daddr}:${k.dport}`;

/** The two pt_flows entries of a flow (timestamps 0): what pt_open_flow must create. */
function flowEntries(c: Ctx, p: FlowPair, seenIn: number, seenOut: number): [FlowEntry, FlowEntry] {
  const proto = p.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
  const rid = c.id(p.rule);
  const peer = p.peer ?? '0.0.0.0';
  return [
    {
      key: { saddr: p.remote, daddr: WAN, sport: p.rport, dport: p.wanPort, proto, dir: DIR_IN },
      value: { created_ns: 0n, last_seen_ns: 0n, nat_addr: p.host, nat_port: p.hostPort, rule: rid, sess_peer: peer, ifindex: LAN_IF, seen: seenIn },
    },
    {
      key: { saddr: p.host, daddr: p.remote, sport: p.hostPort, dport: p.rport, proto, dir: DIR_OUT },
      value: { created_ns: 0n, last_seen_ns: 0n, nat_addr: WAN, nat_port: p.wanPort, rule: rid, sess_peer: peer, ifindex: c.lo, seen: seenOut },
    },
  ];
}

// --- rows ----------------------------------------------------------------------------------
type Thunk<T> = T | ((c: Ctx) => T);
const thunk = <T>(v: Thunk<T>, c: Ctx): T => (typeof v === 'function' ? (v as (c: Ctx) => T)(c) : v);

/** new: created by the run; fresh: seeded, last_seen refreshed by the run; unchanged: as seeded. */
type Touch = 'new' | 'fresh' | 'unchanged';

interface SessionExp { rule: string; host: string; peer?: string; ifindex?: number | 'lo'; touch: Touch }
interface FlowExp { pair: FlowPair; seenIn: number; seenOut: number; touchIn: Touch; touchOut: Touch; only?: 'in' | 'out' }
/** A pt_frags entry: the datagram as it arrives, and where its fragments go. */
interface FragExp { dir: 'in' | 'out'; proto: 'tcp' | 'udp'; src: string; dst: string; id: number; natAddr: string; ifindex: number | 'lo'; touch: Touch }

/** pt_lan_ingress / pt_wan_ingress, or their builds for layer-3 devices (see L3 rows). */
type Prog = 'lan' | 'wan' | 'lan_l3' | 'wan_l3';

interface Row {
  name: string;
  prog: Prog;
  /** Known gap against SPEC: runs, reported, does not fail the suite. */
  todo?: string;
  rules?: Thunk<Rule[]>;
  sessionsPerHost?: number;
  /** Map capacities (limits.sessions / limits.flows); small defaults otherwise. */
  limits?: { sessions: number; flows: number };
  /** Async set-up before the rules are compiled (sockets, run-time ports). */
  setup?: (c: Ctx) => Promise<void>;
  seed?: (c: Ctx) => void;
  prelude?: { prog: Prog; packet: Thunk<PacketSpec | Buffer>; retval?: number }[];
  packet: Thunk<PacketSpec | Buffer>;
  retval: number;
  /** 'same': passed untouched, byte for byte. */
  out: Thunk<PacketSpec | Buffer | 'same'>;
  /**
   * A layer-3 program's output starts with the Ethernet header that
   * pt_redirect() pushes for bpf_redirect_neigh() (all zero but h_proto
   * 0x0800); it is checked and taken off before `out` is compared.
   */
  pushedEth?: boolean;
  /** Packet counters after the run (prelude included); every other one must be 0. */
  stats: Partial<Record<StatKey, number>>;
  /** Rule counters after the run; every other (rule, counter) must be 0. */
  counters?: Record<string, Partial<Record<Counter, number>>>;
  /** The whole pt_sessions map after the run; default: the seeded sessions, unchanged. */
  sessions?: SessionExp[];
  /** The whole pt_flows map after the run (as flows, two entries each); default: the seeded ones, unchanged. */
  flows?: Thunk<FlowExp[]>;
  /** The whole pt_host_sessions map after the run; default: as seeded. */
  hosts?: Record<string, number>;
  /** The whole pt_frags map after the run; default: the seeded entries, unchanged. */
  frags?: FragExp[];
}

const live = (rule: string, host = HOST_A, o: { peer?: string; ageMs?: number } = {}) => (c: Ctx): void => c.session(rule, host, o);
const untouchedWan = { 'wan/pass': 1 } as const;

// Flows used by several rows.
const IRC_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 113, host: HOST_A, hostPort: 113, rule: 'irc' };
const XL_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 6003, host: HOST_A, hostPort: 7003, rule: 'translated' };
const GAME_FLOW: FlowPair = { proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 27005, host: HOST_A, hostPort: 27005, rule: 'game' };
const XL_END_FLOW: FlowPair = { ...XL_FLOW, wanPort: 6009, hostPort: 7009 };
const UDPXL_FLOW: FlowPair = { proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 28003, host: HOST_A, hostPort: 29003, rule: 'udpxl' };
const KILL_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 9102, host: HOST_A, hostPort: 9202, rule: 'killer' };
/** A flow of the disabled rule `off` (as left behind by a reload that disabled it). */
const OFF_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 7778, host: HOST_A, hostPort: 7778, rule: 'off' };

// A fragmented UDP datagram of GAME_FLOW (8 + 64 bytes: fragments at 0, 32, 64) and its reply.
const BIG_PAYLOAD = Buffer.alloc(64, 0x3c);
const BIG_IN = udp(REMOTE, 40001, WAN, 27005, {}, { payload: BIG_PAYLOAD });
const BIG_OUT = udp(HOST_A, 27005, REMOTE, 40001, {}, { payload: BIG_PAYLOAD });
const UDP_ID = 0x2d57;   // the IP id udp() gives
const BIG_IN_FRAG: FragExp = { dir: 'in', proto: 'udp', src: REMOTE, dst: WAN, id: UDP_ID, natAddr: HOST_A, ifindex: LAN_IF, touch: 'new' };
const BIG_OUT_FRAG: FragExp = { dir: 'out', proto: 'udp', src: HOST_A, dst: REMOTE, id: UDP_ID, natAddr: WAN, ifindex: 'lo', touch: 'new' };
/** Seed the pt_frags entry of BIG_IN's first fragment, translated `ageMs` ago. */
const bigInFrag = (c: Ctx, ageMs = 100): void =>
  c.frag({ saddr: REMOTE, daddr: WAN, id: UDP_ID, proto: IPPROTO_UDP, dir: DIR_IN }, { nat_addr: HOST_A, ifindex: LAN_IF }, ageMs);

const newFlow = (pair: FlowPair, seenIn: number): FlowExp => ({ pair, seenIn, seenOut: 0, touchIn: 'new', touchOut: 'new' });


// Layer-3 rows. BPF_PROG_TEST_RUN of a TC program always treats its input as
// an Ethernet frame (net/bpf/test_run.c, bpf_prog_test_run_skb():
// eth_type_trans() on the first 14 bytes, whatever the ctx's ifindex names,
// then __skb_push(ETH_HLEN) so the program sees the data from byte 0). An L3
// program given the bare IP packet therefore sees the IPv4 header at offset
// 0, as on ppp0 or a TUN device, but with skb->protocol taken from bytes 12-13
// (the first two octets of the source address) and pkt_type from bytes 0-5
// (0x45 has the multicast bit: PACKET_MULTICAST). So the rows' sources on a
// layer-3 side start with 8.0, which makes skb->protocol ETH_P_IP (0x0800);
// one row uses another source to show that the protocol is checked, and all
// of them show that the L3 build does not look at pkt_type.
const L3_REMOTE = '8.0.0.7';         // a remote on a layer-3 WAN
const L3_HOST = '8.0.1.2';           // a LAN host on a layer-3 LAN
const L3_LAN_NET = '8.0.1.0/24';
const l3Lan = (c: Ctx): void => c.f.state.setLanNets([...LAN_NETS, L3_LAN_NET]);
const L3_FLOW: FlowPair = { proto: 'tcp', remote: L3_REMOTE, rport: 55555, wanPort: 6003, host: HOST_A, hostPort: 7003, rule: 'translated' };
const L3_HOST_FLOW: FlowPair = { proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 6003, host: L3_HOST, hostPort: 7003, rule: 'translated' };

const ROWS: Row[] = [
  // ---- triggers (pt_lan_ingress) ----
  {
    name: 'TCP trigger opens the session (rule, source host) and passes the packet byte for byte',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'TCP trigger on the second port of a trigger list opens the session',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6697, TCP.ACK | TCP.PSH, {}, { payload: Buffer.from('NICK x\r\n') }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'UDP trigger (inside a port range) opens the session and passes the packet byte for byte',
    prog: 'lan',
    packet: udp(HOST_B, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_B, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_B]: 1 },
  },
  {
    name: 'UDP to a trigger port in a link-layer broadcast (ff:ff:ff:ff:ff:ff, 10.0.0.255, a game\'s discovery) does not open: not traffic to a remote host',
    prog: 'lan',
    packet: { ...udp(HOST_B, 50000, '10.0.0.255', 27020), eth: { dst: 'ff:ff:ff:ff:ff:ff' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'UDP to a trigger port in a link-layer multicast (01:00:5e:..) to a unicast-looking address does not open',
    prog: 'lan',
    packet: { ...udp(HOST_B, 50000, SERVER, 27020), eth: { dst: '01:00:5e:00:00:fb' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'trigger to a local address (pt_local_addrs: the gateway LAN address) does not open',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, GW_LAN, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    // pt_config carries PT_CONFIG_LOCAL_ADDRS (8) local addresses inline; with
    // more, the data path must look in pt_local_addrs too.
    name: 'trigger to a local address beyond those that pt_config carries (found in pt_local_addrs) does not open',
    prog: 'lan',
    seed: (c) => c.f.state.setLocalAddrs(MANY_LOCAL_ADDRS),
    packet: tcp(HOST_A, 40000, MANY_LOCAL_ADDRS.at(-1)!, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'with more local addresses than pt_config carries, a trigger to a non-local destination still opens',
    prog: 'lan',
    seed: (c) => c.f.state.setLocalAddrs(MANY_LOCAL_ADDRS),
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'trigger to the gateway WAN address (local) does not open',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, WAN, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger port sent to a multicast group does not open',
    prog: 'lan',
    packet: udp(HOST_A, 50000, '239.1.2.3', 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'traffic to a port that no rule triggers on does nothing',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6668, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger port of the other protocol (UDP to a TCP trigger port) does nothing',
    prog: 'lan',
    packet: udp(HOST_A, 40000, SERVER, 6667),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger of a disabled rule does nothing',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 7777, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger of the owner refreshes its live session (last_seen, ifindex), opened_ns kept',
    prog: 'lan',
    seed: live('irc'),
    packet: tcp(HOST_A, 40001, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'fresh' }],
  },
  {
    name: 'trigger of the owner of an expired (unswept) session opens it anew, keeping one host slot',
    prog: 'lan',
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    packet: tcp(HOST_A, 40001, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'trigger with IPv4 options (IHL 6, router alert) opens the session, packet untouched',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN, { options: ROUTER_ALERT }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'trigger with IPv4 options (IHL 15, 40 option bytes) opens the session, packet untouched',
    prog: 'lan',
    packet: udp(HOST_A, 50000, SERVER, 27015, { options: RECORD_ROUTE_40 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },

  // ---- conflicts and limits ----
  {
    name: 'conflict first: a second host triggering a live session is refused (refused_conflict)',
    prog: 'lan',
    seed: live('irc', HOST_A),
    packet: tcp(HOST_B, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, refused_conflict: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'conflict first: a second host takes over a session that has expired',
    prog: 'lan',
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    packet: tcp(HOST_B, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_B, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_B]: 1 },
  },
  {
    name: 'conflict last: a second host takes the live session over; the old owner gives back its slot',
    prog: 'lan',
    seed: live('translated', HOST_A),
    packet: tcp(HOST_B, 40000, SERVER, 5000, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { translated: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_B, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_B]: 1 },
  },
  {
    name: 'conflict last: a flow accepted before the takeover stays with its host (and does not refresh the new owner)',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_B); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.ACK), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_B, touch: 'unchanged' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'sessions_per_host: a host at its limit is refused a new session (refused_host_limit)',
    prog: 'lan',
    sessionsPerHost: 1,
    prelude: [{ prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 }, game: { trigger_hits: 1, refused_host_limit: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'sessions_per_host: another host is not affected by the first one\'s limit',
    prog: 'lan',
    sessionsPerHost: 1,
    prelude: [{ prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_B, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [
      { rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' },
      { rule: 'game', host: HOST_B, ifindex: 'lo', touch: 'new' },
    ],
    hosts: { [HOST_A]: 1, [HOST_B]: 1 },
  },
  {
    name: 'sessions_per_host: a host at its limit still refreshes the session it holds',
    prog: 'lan',
    sessionsPerHost: 1,
    seed: live('irc', HOST_A),
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'fresh' }],
  },
  {
    name: 'pt_sessions full: a new session of a host that holds one is refused (refused_map_full), none evicted',
    prog: 'lan',
    limits: { sessions: 1, flows: 8 },
    prelude: [{ prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 }, game: { trigger_hits: 1, refused_map_full: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'pt_sessions full: a new session of another host is refused as map full (refused_map_full), none evicted',
    prog: 'lan',
    limits: { sessions: 1, flows: 8 },
    prelude: [{ prog: 'lan', packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_B, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 }, game: { trigger_hits: 1, refused_map_full: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'a host below its limit gets a session while pt_sessions has room, even after another host gave back its slot',
    prog: 'lan',
    // pt_host_sessions is sized like pt_sessions (2). HOST_A's expired session
    // is taken over by HOST_B, which leaves HOST_A's entry in pt_host_sessions
    // at 0; HOST_C, holding nothing, must still get a session: pt_sessions has
    // a free slot.
    limits: { sessions: 2, flows: 8 },
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    prelude: [{ prog: 'lan', packet: tcp(HOST_B, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_C, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [
      { rule: 'irc', host: HOST_B, ifindex: 'lo', touch: 'new' },
      { rule: 'game', host: HOST_C, ifindex: 'lo', touch: 'new' },
    ],
    hosts: { [HOST_B]: 1, [HOST_C]: 1 },
  },
  {
    name: 'trigger from source 0.0.0.0 does not open',
    prog: 'lan',
    packet: udp('0.0.0.0', 68, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'peer contacted: the trigger opens a session keyed by the contacted peer',
    prog: 'lan',
    packet: udp(HOST_A, 5060, SERVER, 5060),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { voip: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'voip', host: HOST_A, peer: SERVER, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'peer contacted: two hosts hold the same rule for two peers without conflict',
    prog: 'lan',
    prelude: [{ prog: 'lan', packet: udp(HOST_A, 5060, SERVER, 5060), retval: TC_ACT_UNSPEC }],
    packet: udp(HOST_B, 5060, SERVER2, 5060),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 2 },
    counters: { voip: { trigger_hits: 2, sessions_opened: 2 } },
    sessions: [
      { rule: 'voip', host: HOST_A, peer: SERVER, ifindex: 'lo', touch: 'new' },
      { rule: 'voip', host: HOST_B, peer: SERVER2, ifindex: 'lo', touch: 'new' },
    ],
    hosts: { [HOST_A]: 1, [HOST_B]: 1 },
  },

  // ---- inbound connections (pt_wan_ingress) ----
  {
    name: 'inbound SYN to the WAN address on an open port without a session: untouched',
    prog: 'wan',
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN with a live session: rewritten to the LAN host, both flow entries created, redirected',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'inbound SYN on a translated rule (tcp/6000-6009 -> 7000): dst address and port rewritten',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.SYN), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  },
  {
    name: 'inbound SYN with ECN flags (SYN|ECE|CWR) still opens a flow',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.SYN | TCP.ECE | TCP.CWR),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.SYN | TCP.ECE | TCP.CWR), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  },
  {
    name: 'inbound SYN on the second open spec (tcp/27040) of a UDP-triggered rule',
    prog: 'wan',
    seed: live('game'),
    packet: tcp(REMOTE, 41000, WAN, 27040, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 41000, WAN, 27040, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: REMOTE, rport: 41000, wanPort: 27040, host: HOST_A, hostPort: 27040, rule: 'game' }, SEEN.SYN)],
  },
  {
    name: 'inbound non-SYN TCP (ACK) without a flow: untouched even with a live session',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN|ACK without a flow: untouched even with a live session',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN | TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN on a port that is not open, with a live session: untouched',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 114, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN on the open port of a disabled rule with a stale session: untouched',
    prog: 'wan',
    seed: live('off'),
    packet: tcp(REMOTE, 55555, WAN, 7778, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound UDP with checksum 0: translated, checksum stays 0',
    prog: 'wan',
    seed: live('game'),
    packet: udp(REMOTE, 40001, WAN, 27005, {}, { zeroChecksum: true }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005, {}, { zeroChecksum: true }), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'inbound UDP with a checksum: translated, checksum valid after',
    prog: 'wan',
    seed: live('game'),
    packet: udp(REMOTE, 40001, WAN, 27005),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'inbound UDP whose translated checksum lands on 0 is sent as 0xffff',
    prog: 'wan',
    seed: live('game'),
    // Payload chosen so that the checksum after translation is 0 (see zeroAfter()).
    packet: () => zeroAfter(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }),
    retval: TC_ACT_REDIRECT,
    out: () => xlate(zeroAfter(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'expired session (last_seen beyond idle_timeout) is treated as absent: untouched',
    prog: 'wan',
    seed: live('irc', HOST_A, { ageMs: 5 * MIN + 5000 }),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN to another address (not the WAN address): untouched',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, OTHER_WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'inbound SYN from a source inside a LAN net (pt_lan_nets): not translated',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(LAN_SRC, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'peer contacted: inbound SYN from the contacted peer is translated',
    prog: 'wan',
    seed: live('voip', HOST_A, { peer: SERVER }),
    packet: tcp(SERVER, 42000, WAN, 5061, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(SERVER, 42000, WAN, 5061, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { voip: { flows_opened: 1 } },
    sessions: [{ rule: 'voip', host: HOST_A, peer: SERVER, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: SERVER, rport: 42000, wanPort: 5061, host: HOST_A, hostPort: 5061, rule: 'voip', peer: SERVER }, SEEN.SYN)],
  },
  {
    name: 'peer contacted: inbound SYN from a peer that was not contacted is untouched',
    prog: 'wan',
    seed: live('voip', HOST_A, { peer: SERVER }),
    packet: tcp(REMOTE, 42000, WAN, 5061, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'IPv4 options (IHL 7): inbound SYN translated, options kept, checksums right',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.SYN, { options: NOPS_8 }),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.SYN, { options: NOPS_8 }), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(XL_FLOW, SEEN.SYN)],
  },
  {
    name: 'IPv4 options (IHL 15): inbound UDP translated, options kept, checksums right',
    prog: 'wan',
    seed: live('game'),
    packet: udp(REMOTE, 40001, WAN, 27005, { options: RECORD_ROUTE_40 }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005, { options: RECORD_ROUTE_40 }), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'Ethernet padding after a short datagram: translated, padding kept as it was',
    prog: 'wan',
    seed: live('game'),
    packet: Buffer.concat([buildPacket(udp(REMOTE, 40001, WAN, 27005, {}, { payload: Buffer.from('hi') })), Buffer.alloc(16, 0xa5)]),
    retval: TC_ACT_REDIRECT,
    out: Buffer.concat([buildPacket(xlate(udp(REMOTE, 40001, WAN, 27005, {}, { payload: Buffer.from('hi') }), { dst: HOST_A })), Buffer.alloc(16, 0xa5)]),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'first fragment (MF, offset 0) of a UDP datagram: translated, L4 checksum of the whole datagram fixed, translation remembered',
    prog: 'wan',
    seed: live('game'),
    packet: fragment(buildPacket(BIG_IN), 0, 32),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(BIG_IN, { dst: HOST_A })), 0, 32),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
    frags: [BIG_IN_FRAG],
  },
  {
    name: 'non-first fragment of a translated datagram is translated like the first (SPEC 5)',
    prog: 'wan',
    seed: live('game'),
    prelude: [{ prog: 'wan', retval: TC_ACT_REDIRECT, packet: fragment(buildPacket(BIG_IN), 0, 32) }],
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(BIG_IN, { dst: HOST_A })), 32, 40),
    stats: { 'wan/translated': 2 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
    frags: [BIG_IN_FRAG],
  },
  {
    name: 'ICMP port unreachable about a translated flow is translated to the LAN host (SPEC 5); nothing refreshed',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.SYN | TCP.ACK, { ttl: 63 })),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK, { ttl: 63 })),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'inbound packet of an accepted flow: translated, flow refreshed, ACK seen; the session is not (only its LAN host refreshes it)',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.ACK | TCP.PSH, {}, { payload: Buffer.from('data') }),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.ACK | TCP.PSH, {}, { payload: Buffer.from('data') }), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    // A flow refreshes its session only when its own stamp is refreshed
    // (PT_REFRESH_GRANULARITY_NS): the session's hash lookup is not paid per
    // packet. The flow is stamped 1 s ahead, so that it is not due a refresh
    // however long the machine takes between seeding and the run.
    name: 'inbound packet of a flow whose stamp is not due a refresh: translated, neither the flow\'s nor the session\'s stamp rewritten',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW, { ageInMs: -1000 }); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.ACK), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'unchanged' }],
  },
  {
    name: 'inbound packet of an accepted flow whose session expired: still translated, session not revived',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 6 * MIN }); c.flow(IRC_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.ACK), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'inbound FIN of an accepted flow: translated, FIN seen',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.FIN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.FIN | TCP.ACK), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK | SEEN.FIN, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'pt_flows full: inbound SYN with a live session is refused (flows_refused), untouched, no half flow left',
    prog: 'wan',
    limits: { sessions: 8, flows: 1 },
    seed: (c) => { c.session('irc', HOST_A); c.flow({ ...IRC_FLOW, rport: 55556 }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
    counters: { irc: { flows_refused: 1 } },
  },
  {
    name: 'UDP flow idle beyond its 300 s timeout, session expired, not swept yet: no longer forwarded, both entries removed',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A, { ageMs: 20 * MIN }); c.flow(GAME_FLOW, { ageMs: 10 * MIN }); },
    packet: udp(REMOTE, 40001, WAN, 27005),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'TTL 1 on an inbound flow packet: dropped (TC_ACT_SHOT), flow not refreshed',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK, { ttl: 1 }),
    retval: TC_ACT_SHOT, out: 'same',
    stats: { 'wan/dropped': 1 },
  },

  // ---- replies (pt_lan_ingress) ----
  {
    name: 'reply from the LAN host on a flow: source rewritten to the WAN address/port, redirected, refreshed',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'reply on a flow whose remote port is a trigger port (6667): translated, and it arms nothing (SPEC 8: the remote chose that port)',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow({ ...XL_FLOW, rport: 6667 }); },
    packet: tcp(HOST_A, 7003, REMOTE, 6667, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 6667, TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    counters: {},
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: { ...XL_FLOW, rport: 6667 }, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'UDP reply with checksum 0 on a flow: source rewritten, checksum stays 0',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: udp(HOST_A, 27005, REMOTE, 40001, {}, { zeroChecksum: true }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(HOST_A, 27005, REMOTE, 40001, {}, { zeroChecksum: true }), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'UDP reply with a checksum on a flow: source rewritten, checksum valid',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: udp(HOST_A, 27005, REMOTE, 40001),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(HOST_A, 27005, REMOTE, 40001), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'reply with IPv4 options (IHL 6) on a flow: translated with correct checksums',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { options: ROUTER_ALERT }),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { options: ROUTER_ALERT }), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'reply RST on a flow: translated, RST seen',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.RST | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 113, REMOTE, 55555, TCP.RST | TCP.ACK), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK | SEEN.RST, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'packet from an open LAN port to a peer without a flow: untouched',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, SERVER, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'packet from another LAN host with a flow\'s ports: untouched',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_B, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'TTL 1 on a reply of a flow: dropped (TC_ACT_SHOT)',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { ttl: 1 }),
    retval: TC_ACT_SHOT, out: 'same',
    stats: { 'lan/dropped': 1 },
  },

  // ---- the gateway's own sockets (SPEC 5) ----
  {
    name: 'a wildcard TCP listener of the gateway on an open port: inbound SYN not translated',
    prog: 'wan',
    setup: async (c) => { c.port = await listenTcp(c); },
    rules: (c) => [...RULES, rule('own', 'tcp/5001', `tcp/${c.port}`)],
    seed: live('own'),
    packet: (c) => tcp(REMOTE, 55555, WAN, c.port, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: '(control for the row above) the same open port without a listener: translated',
    prog: 'wan',
    setup: async (c) => { c.port = await freeTcpPort(); },
    rules: (c) => [...RULES, rule('own', 'tcp/5001', `tcp/${c.port}`)],
    seed: live('own'),
    packet: (c) => tcp(REMOTE, 55555, WAN, c.port, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: (c) => xlate(tcp(REMOTE, 55555, WAN, c.port, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { own: { flows_opened: 1 } },
    sessions: [{ rule: 'own', host: HOST_A, touch: 'unchanged' }],
    flows: (c) => [newFlow({ proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: c.port, host: HOST_A, hostPort: c.port, rule: 'own' }, SEEN.SYN)],
  },
  {
    name: 'a wildcard UDP socket of the gateway on an open port: inbound datagram not translated',
    prog: 'wan',
    setup: async (c) => { c.port = await bindUdp(c); },
    rules: (c) => [...RULES, rule('own', 'udp/5001', `udp/${c.port}`)],
    seed: live('own'),
    packet: (c) => udp(REMOTE, 40001, WAN, c.port),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },

  // ---- bad packets (SPEC 8): passed untouched, counted malformed ----
  // Frames whose IPv4 header is shorter than 20 bytes cannot be tested here:
  // BPF_PROG_TEST_RUN itself refuses an ETH_P_IP frame under 34 bytes (EINVAL).
  {
    name: 'truncated packet (IP header cut inside its options: IHL 7, 24 of 28 bytes), live session: untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: truncated(tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { options: NOPS_8 }), 24),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'truncated TCP header (tot_len claims more than arrived): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: truncated(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), 30),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'bogus tot_len (100 bytes past the end of the frame): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { totLen: 20 + 24 + 100 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'bogus tot_len (shorter than the IP header): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { totLen: 16 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'tot_len leaves no room for the TCP header (20 + 12): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: truncated(tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { totLen: 32 }), 32),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'tot_len leaves no room for the UDP header (20 + 4): untouched, malformed',
    prog: 'wan',
    seed: live('game'),
    packet: truncated(udp(REMOTE, 40001, WAN, 27005, { totLen: 24 }), 24),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'IHL 4 (< 5): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { ihl: 4 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'IHL 15 but tot_len only 44 (header longer than the datagram): untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { ihl: 15 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'IP version 6 in an IPv4 ethertype frame: untouched, malformed',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { version: 6 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 }, flows: [],
  },
  {
    name: 'not IPv4 (ARP ethertype): untouched, pass',
    prog: 'wan',
    seed: live('irc'),
    packet: buildPacket({ eth: { type: 0x0806 }, ...tcp(REMOTE, 55555, WAN, 113, TCP.SYN) }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/pass': 1 }, flows: [],
  },
  {
    name: 'ICMP echo to the WAN address: untouched, pass',
    prog: 'wan',
    seed: live('irc'),
    packet: { ip: { src: REMOTE, dst: WAN }, l4: { proto: 1, raw: echoRequest() } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/pass': 1 }, flows: [],
  },
  {
    name: 'truncated trigger (IP header cut inside its options: IHL 6, 22 of 24 bytes): no session, malformed',
    prog: 'lan',
    packet: truncated(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN, { options: ROUTER_ALERT }), 22),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'truncated trigger (TCP header cut at 8 bytes): no session, malformed',
    prog: 'lan',
    packet: truncated(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), 28),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger with bogus tot_len: no session, malformed',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN, { totLen: 1400 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'reply of a flow with IHL 4: not translated, malformed',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { ihl: 4 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
  },
  // ---- fragments (SPEC 5): non-first fragments follow their first one ----
  {
    name: 'middle fragment (MF set, offset 32) of a remembered datagram: translated (address, TTL, IP checksum only), nothing refreshed',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: fragment(buildPacket(BIG_IN), 32, 32),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(BIG_IN, { dst: HOST_A })), 32, 32),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'non-first fragment with IPv4 options (IHL 15) of a remembered datagram: translated, options kept',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: fragment(buildPacket(udp(REMOTE, 40001, WAN, 27005, { options: RECORD_ROUTE_40 }, { payload: BIG_PAYLOAD })), 64, 8),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(udp(REMOTE, 40001, WAN, 27005, { options: RECORD_ROUTE_40 }, { payload: BIG_PAYLOAD }), { dst: HOST_A })), 64, 8),
    stats: { 'wan/translated': 1 },
  },
  {
    // XXX (documented gap): the data path has no queue to hold it until the first fragment comes.
    name: 'non-first fragment that arrives before its first fragment: passed untouched (known gap)',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'non-first fragment of another datagram (other IP id) than the remembered one: untouched',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: fragment(buildPacket(udp(REMOTE, 40001, WAN, 27005, { id: UDP_ID + 1 }, { payload: BIG_PAYLOAD })), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'non-first fragment whose first fragment was translated more than 5 s ago: untouched',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c, 6000); },
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'non-first fragment of a datagram whose first fragment was not translated (no session): untouched, nothing remembered',
    prog: 'wan',
    prelude: [{ prog: 'wan', retval: TC_ACT_UNSPEC, packet: fragment(buildPacket(BIG_IN), 0, 32) }],
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/pass': 2 },
  },
  {
    name: 'a first fragment that is not translated makes pt_frags forget an older datagram with the same id (RFC 4963): its later fragments pass untouched',
    prog: 'wan',
    seed: (c) => { bigInFrag(c); },
    prelude: [{ prog: 'wan', retval: TC_ACT_UNSPEC, packet: fragment(buildPacket(BIG_IN), 0, 32) }],
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/pass': 2 },
    frags: [],
  },
  {
    name: 'non-first fragment with TTL 1 of a remembered datagram: dropped (TC_ACT_SHOT)',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: fragment(buildPacket(udp(REMOTE, 40001, WAN, 27005, { ttl: 1 }, { payload: BIG_PAYLOAD })), 32, 40),
    retval: TC_ACT_SHOT, out: 'same',
    stats: { 'wan/dropped': 1 },
  },
  {
    name: 'first fragment of a reply: source rewritten, L4 checksum of the whole datagram fixed, translation remembered',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: fragment(buildPacket(BIG_OUT), 0, 32),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(BIG_OUT, { src: WAN })), 0, 32),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
    frags: [BIG_OUT_FRAG],
  },
  {
    name: 'last fragment of a reply after its first: source rewritten to the WAN address (SPEC 5)',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    prelude: [{ prog: 'lan', retval: TC_ACT_REDIRECT, packet: fragment(buildPacket(BIG_OUT), 0, 32) }],
    packet: fragment(buildPacket(BIG_OUT), 32, 40),
    retval: TC_ACT_REDIRECT,
    out: fragment(buildPacket(xlate(BIG_OUT, { src: WAN })), 32, 40),
    stats: { 'lan/translated': 2 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
    frags: [BIG_OUT_FRAG],
  },
  {
    name: 'non-first fragment of a reply whose first fragment was not seen: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: fragment(buildPacket(BIG_OUT), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'a remembered inbound translation does not apply on the LAN side, even to the same addresses and IP id: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: fragment(buildPacket(BIG_IN), 32, 40),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },

  // ---- ICMP errors about flows (SPEC 5) ----
  {
    name: 'ICMP fragmentation needed (MTU 1400) about a UDP flow with a translated port: inner address, port and UDP checksum translated',
    prog: 'wan',
    seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 28003, REMOTE, 40001, { ttl: 60 }), { code: ICMP.FRAG_NEEDED, rest: 1400 }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, udp(HOST_A, 29003, REMOTE, 40001, { ttl: 60 }), { code: ICMP.FRAG_NEEDED, rest: 1400 }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP time exceeded from a router on the path about a TCP flow: outer source kept, destination and quote translated',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: icmpErr(ROUTER, WAN, tcp(WAN, 113, REMOTE, 55555, TCP.ACK, { ttl: 1 }), { type: ICMP.TIME_EXCEEDED, code: ICMP.TTL_EXCEEDED }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(ROUTER, HOST_A, tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK, { ttl: 1 }), { type: ICMP.TIME_EXCEEDED, code: ICMP.TTL_EXCEEDED }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP parameter problem about a UDP flow: translated',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 }), { type: ICMP.PARAMETER_PROBLEM, code: 0, rest: 0x14000000 }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, udp(HOST_A, 27005, REMOTE, 40001, { ttl: 63 }), { type: ICMP.PARAMETER_PROBLEM, code: 0, rest: 0x14000000 }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP error quoting a whole TCP header (28 bytes of L4): the quoted TCP checksum is translated too',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK | TCP.PSH, { ttl: 63 }, { payload: Buffer.from('PRIVMSG #x :hello\r\n') }), { quoteL4: 28 }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK | TCP.PSH, { ttl: 63 }, { payload: Buffer.from('PRIVMSG #x :hello\r\n') }), { quoteL4: 28 }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP error with IPv4 options on the outer (IHL 7) and the quoted header (IHL 6): translated, options kept',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63, options: ROUTER_ALERT }), { outer: { options: NOPS_8 } }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { ttl: 63, options: ROUTER_ALERT }), { outer: { options: NOPS_8 } }),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP error quoting a UDP datagram without checksum: the quoted checksum stays 0',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 }, { zeroChecksum: true })),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(REMOTE, HOST_A, udp(HOST_A, 27005, REMOTE, 40001, { ttl: 63 }, { zeroChecksum: true })),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'ICMP error about the gateway\'s own traffic (no flow matches the quote): untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(SERVER, WAN, udp(WAN, 33434, SERVER, 53, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error quoting a flow\'s ports from another remote (no flow): untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(SERVER, WAN, tcp(WAN, 6003, SERVER, 55555, TCP.ACK, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error about a flow from a LAN source on the WAN side: untouched (SPEC 8)',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(LAN_SRC, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error to another address than the WAN address: untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, OTHER_WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error whose quote holds only 4 bytes of the L4 header: untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63 }), { quoteL4: 4 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error whose quoted IP header has IHL 4: untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63, ihl: 4 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error quoting a non-first fragment (no ports in the quote): untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63, fragOffset: 4 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP redirect (not an error this data path translates) quoting a flow packet: untouched',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(ROUTER, WAN, tcp(WAN, 6003, REMOTE, 55555, TCP.ACK, { ttl: 63 }), { type: 5, code: 1, rest: 0xc6336401 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP error about a flow whose timer ran out: untouched, the flow removed',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A, { ageMs: 20 * MIN }); c.flow(GAME_FLOW, { ageMs: 10 * MIN }); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'ICMP error about a flow with TTL 1: dropped (TC_ACT_SHOT)',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 }), { outer: { ttl: 1 } }),
    retval: TC_ACT_SHOT, out: 'same',
    stats: { 'wan/dropped': 1 },
  },
  {
    name: 'ICMP error with a bogus outer tot_len (past the frame): untouched, malformed',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 }), { outer: { totLen: 200 } }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'ICMP error whose outer tot_len ends inside the quoted ports (Ethernet padding after it): untouched',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: Buffer.concat([buildPacket(icmpErr(REMOTE, WAN, udp(WAN, 27005, REMOTE, 40001, { ttl: 63 }), { quoteL4: 4 })), Buffer.alloc(8, 0x9c)]),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'ICMP port unreachable from the LAN host about an inbound UDP packet: from the WAN address, quote translated back',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(HOST_A, REMOTE, udp(REMOTE, 40001, HOST_A, 27005, { ttl: 63 })),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(WAN, REMOTE, udp(REMOTE, 40001, WAN, 27005, { ttl: 63 })),
    stats: { 'lan/translated': 1 },
  },
  {
    name: 'ICMP port unreachable from the LAN host about a flow with a translated port: quoted destination port back to the WAN port',
    prog: 'lan',
    seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: icmpErr(HOST_A, REMOTE, udp(REMOTE, 40001, HOST_A, 29003, { ttl: 63 })),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(WAN, REMOTE, udp(REMOTE, 40001, WAN, 28003, { ttl: 63 })),
    stats: { 'lan/translated': 1 },
  },
  {
    name: 'ICMP admin-prohibited from the LAN host about an inbound TCP segment (IHL 15 outer): translated',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: icmpErr(HOST_A, REMOTE, tcp(REMOTE, 55555, HOST_A, 7003, TCP.ACK, { ttl: 63 }), { code: 13, outer: { options: RECORD_ROUTE_40 } }),
    retval: TC_ACT_REDIRECT,
    out: icmpOut(WAN, REMOTE, tcp(REMOTE, 55555, WAN, 6003, TCP.ACK, { ttl: 63 }), { code: 13, outer: { options: RECORD_ROUTE_40 } }),
    stats: { 'lan/translated': 1 },
  },
  {
    name: 'ICMP error from another LAN host quoting a packet to the flow\'s host: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(HOST_B, REMOTE, udp(REMOTE, 40001, HOST_A, 27005, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'ICMP error from the LAN host to another destination than the quoted source: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(HOST_A, SERVER, udp(REMOTE, 40001, HOST_A, 27005, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'ICMP error from the LAN host about a packet of no flow: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(HOST_A, REMOTE, udp(REMOTE, 40002, HOST_A, 27005, { ttl: 63 })),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'ICMP echo request from a LAN host: untouched',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: { ip: { src: HOST_A, dst: REMOTE }, l4: { proto: 1, raw: echoRequest() } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },

  // ---- flow timers in the data path (SPEC 5, RFC 4787/5382) ----
  {
    name: 'UDP flow idle 290 s, session expired: still forwarded (its own 300 s timer), flow refreshed',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A, { ageMs: 20 * MIN }); c.flow(GAME_FLOW, { ageMs: 290_000 }); },
    packet: udp(REMOTE, 40001, WAN, 27005),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'UDP flow idle 310 s with its session live: the old flow is gone and the datagram opens a new one',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW, { ageMs: 310_000 }); },
    packet: udp(REMOTE, 40001, WAN, 27005),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(GAME_FLOW, 0)],
  },
  {
    name: 'UDP flow idle 400 s inbound but 10 s outbound: live (either direction keeps it), forwarded',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW, { ageInMs: 400_000, ageOutMs: 10_000 }); },
    packet: udp(REMOTE, 40001, WAN, 27005),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 27005), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'reply on a UDP flow idle 310 s: not translated, both entries removed',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A, { ageMs: 20 * MIN }); c.flow(GAME_FLOW, { ageMs: 310_000 }); },
    packet: udp(HOST_A, 27005, REMOTE, 40001),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 }, flows: [],
  },
  {
    name: 'TCP established flow idle 7300 s: still forwarded (7440 s timer)',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 200 * MIN }); c.flow(IRC_FLOW, { ageMs: 7_300_000, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.ACK), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'TCP established flow idle 7450 s: no longer forwarded, both entries removed',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 200 * MIN }); c.flow(IRC_FLOW, { ageMs: 7_450_000, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'TCP flow before the handshake completed (transitory) idle 250 s: no longer forwarded, removed',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 200 * MIN }); c.flow(IRC_FLOW, { ageMs: 250_000 }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'TCP flow before the handshake completed idle 230 s: still forwarded (240 s timer)',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 200 * MIN }); c.flow(IRC_FLOW, { ageMs: 230_000 }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.ACK), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'TCP flow after a FIN idle 250 s: no longer forwarded (transitory 240 s timer), removed',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { ageMs: 250_000, seenIn: SEEN.SYN | SEEN.ACK | SEEN.FIN, seenOut: SEEN.SYN | SEEN.ACK }); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.FIN | TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 }, flows: [],
  },
  {
    name: 'orphan reply entry (its inbound entry gone) idle 2 s: still translated',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW, { only: 'out', ageMs: 2000 }); },
    packet: udp(HOST_A, 27005, REMOTE, 40001),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(HOST_A, 27005, REMOTE, 40001), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh', only: 'out' }],
  },
  {
    name: 'orphan reply entry idle 11 s (past PT_FLOW_ORPHAN_NS): not translated, removed',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW, { only: 'out', ageMs: 11_000 }); },
    packet: udp(HOST_A, 27005, REMOTE, 40001),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 }, flows: [],
  },
  {
    name: 'kill_flows_on_expiry: a flow of an expired session is no longer forwarded, removed at once',
    prog: 'wan',
    seed: (c) => { c.session('killer', HOST_A, { ageMs: 11 * MIN }); c.flow(KILL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 9102, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'kill_flows_on_expiry: a flow of a live session owned by its host is forwarded (control)',
    prog: 'wan',
    seed: (c) => { c.session('killer', HOST_A); c.flow(KILL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 9102, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 9102, TCP.ACK), { dst: HOST_A, dport: 9202 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'killer', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: KILL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'kill_flows_on_expiry: after another host took the session over, the old host\'s reply is not translated, flow removed',
    prog: 'lan',
    seed: (c) => { c.session('killer', HOST_B); c.flow(KILL_FLOW); },
    packet: tcp(HOST_A, 9202, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 }, flows: [],
  },
  {
    name: 'kill_flows_on_expiry: a flow whose session was swept away is no longer forwarded',
    prog: 'wan',
    seed: (c) => { c.flow(KILL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 9102, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'without kill_flows_on_expiry a flow whose session was swept away keeps working (SPEC 4.3)',
    prog: 'lan',
    seed: (c) => { c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
  },

  // ---- rules: `both`, several ranges, several open specs, translation ends ----
  {
    name: 'trigger `both`: a TCP packet to the trigger port opens the session',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 4000, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { dual: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'dual', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'trigger `both`: a UDP packet to the same port refreshes the same session',
    prog: 'lan',
    seed: live('dual'),
    packet: udp(HOST_A, 40000, SERVER, 4000),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { dual: { trigger_hits: 1 } },
    sessions: [{ rule: 'dual', host: HOST_A, ifindex: 'lo', touch: 'fresh' }],
  },
  {
    name: 'open `both`: an inbound UDP datagram on the open port is forwarded',
    prog: 'wan',
    seed: live('dual'),
    packet: udp(REMOTE, 40001, WAN, 4001),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 4001), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { dual: { flows_opened: 1 } },
    sessions: [{ rule: 'dual', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 4001, host: HOST_A, hostPort: 4001, rule: 'dual' }, 0)],
  },
  {
    name: 'open `both`: an inbound TCP SYN on the open port is forwarded',
    prog: 'wan',
    seed: live('dual'),
    packet: tcp(REMOTE, 55555, WAN, 4001, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 4001, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { dual: { flows_opened: 1 } },
    sessions: [{ rule: 'dual', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 4001, host: HOST_A, hostPort: 4001, rule: 'dual' }, SEEN.SYN)],
  },
  {
    name: 'several trigger ranges: the first port of the first range opens',
    prog: 'lan',
    packet: udp(HOST_A, 40000, SERVER, 3000),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { ranges: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'ranges', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'several trigger ranges: the last port of the second range opens',
    prog: 'lan',
    packet: udp(HOST_A, 40000, SERVER, 3105),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { ranges: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'ranges', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'several trigger ranges: a port between the ranges does not trigger',
    prog: 'lan',
    packet: udp(HOST_A, 40000, SERVER, 3003),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'several open specs: inbound UDP on the translated spec (udp/8002-8003 -> 9002) reaches port 9003',
    prog: 'wan',
    seed: live('multi'),
    packet: udp(REMOTE, 40001, WAN, 8003),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 8003), { dst: HOST_A, dport: 9003 }),
    stats: { 'wan/translated': 1 },
    counters: { multi: { flows_opened: 1 } },
    sessions: [{ rule: 'multi', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 8003, host: HOST_A, hostPort: 9003, rule: 'multi' }, 0)],
  },
  {
    name: 'several open specs: inbound TCP SYN on the first spec (tcp/8001) is forwarded',
    prog: 'wan',
    seed: live('multi'),
    packet: tcp(REMOTE, 55555, WAN, 8001, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 8001, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { multi: { flows_opened: 1 } },
    sessions: [{ rule: 'multi', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: REMOTE, rport: 55555, wanPort: 8001, host: HOST_A, hostPort: 8001, rule: 'multi' }, SEEN.SYN)],
  },
  {
    name: 'several open specs: inbound UDP on the `both` spec (8010) is forwarded',
    prog: 'wan',
    seed: live('multi'),
    packet: udp(REMOTE, 40001, WAN, 8010),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 8010), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { multi: { flows_opened: 1 } },
    sessions: [{ rule: 'multi', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'udp', remote: REMOTE, rport: 40001, wanPort: 8010, host: HOST_A, hostPort: 8010, rule: 'multi' }, 0)],
  },
  {
    name: 'several open specs: TCP to a port only the UDP spec opens (8002) is untouched',
    prog: 'wan',
    seed: live('multi'),
    packet: tcp(REMOTE, 55555, WAN, 8002, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'translation tcp/6000-6009 -> 7000: the first WAN port 6000 reaches 7000',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6000, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6000, TCP.SYN), { dst: HOST_A, dport: 7000 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ ...XL_FLOW, wanPort: 6000, hostPort: 7000 }, SEEN.SYN)],
  },
  {
    name: 'translation tcp/6000-6009 -> 7000: the last WAN port 6009 reaches 7009',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6009, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6009, TCP.SYN), { dst: HOST_A, dport: 7009 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(XL_END_FLOW, SEEN.SYN)],
  },
  {
    name: 'translation tcp/6000-6009 -> 7000: WAN port 6010, just past the range, is untouched',
    prog: 'wan',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6010, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'translation tcp/6000-6009 -> 7000: a reply from 7009 leaves from WAN port 6009',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_END_FLOW); },
    packet: tcp(HOST_A, 7009, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7009, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN, sport: 6009 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: XL_END_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'UDP without checksum on a translated port (28003 -> 29003): port rewritten, checksum stays 0',
    prog: 'wan',
    seed: live('udpxl'),
    packet: udp(REMOTE, 40001, WAN, 28003, {}, { zeroChecksum: true }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(REMOTE, 40001, WAN, 28003, {}, { zeroChecksum: true }), { dst: HOST_A, dport: 29003 }),
    stats: { 'wan/translated': 1 },
    counters: { udpxl: { flows_opened: 1 } },
    sessions: [{ rule: 'udpxl', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(UDPXL_FLOW, 0)],
  },
  {
    name: 'UDP reply without checksum from a translated port (29003 -> 28003): checksum stays 0',
    prog: 'lan',
    seed: (c) => { c.session('udpxl', HOST_A); c.flow(UDPXL_FLOW); },
    packet: udp(HOST_A, 29003, REMOTE, 40001, {}, { zeroChecksum: true }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(HOST_A, 29003, REMOTE, 40001, {}, { zeroChecksum: true }), { src: WAN, sport: 28003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'udpxl', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: UDPXL_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
  },

  // ---- conflicts and peers: flows stay with their host ----
  {
    name: 'conflict first: after another host\'s trigger was refused, an inbound SYN still reaches the owner',
    prog: 'wan',
    seed: live('irc', HOST_A),
    prelude: [{ prog: 'lan', packet: tcp(HOST_B, 40000, SERVER, 6667, TCP.SYN), retval: TC_ACT_UNSPEC }],
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'lan/trigger': 1, 'wan/translated': 1 },
    counters: { irc: { trigger_hits: 1, refused_conflict: 1, flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'conflict last: the old owner\'s reply on its flow is still translated and does not refresh the new owner',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_B); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_B, touch: 'unchanged' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'conflict last: a new connection after the takeover goes to the new owner, the old flow stays',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_B); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55556, WAN, 6003, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55556, WAN, 6003, TCP.SYN), { dst: HOST_B, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_B, touch: 'unchanged' }],
    flows: [
      { pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'unchanged' },
      newFlow({ ...XL_FLOW, rport: 55556, host: HOST_B }, SEEN.SYN),
    ],
  },
  {
    name: 'peer contacted, two hosts: a SYN from the second peer reaches the host that contacted it',
    prog: 'wan',
    seed: (c) => { c.session('voip', HOST_A, { peer: SERVER }); c.session('voip', HOST_B, { peer: SERVER2 }); },
    packet: tcp(SERVER2, 42000, WAN, 5061, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(SERVER2, 42000, WAN, 5061, TCP.SYN), { dst: HOST_B }),
    stats: { 'wan/translated': 1 },
    counters: { voip: { flows_opened: 1 } },
    sessions: [{ rule: 'voip', host: HOST_A, peer: SERVER, touch: 'unchanged' }, { rule: 'voip', host: HOST_B, peer: SERVER2, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: SERVER2, rport: 42000, wanPort: 5061, host: HOST_B, hostPort: 5061, rule: 'voip', peer: SERVER2 }, SEEN.SYN)],
  },
  {
    name: 'peer contacted, two hosts: a SYN from the first peer reaches the first host',
    prog: 'wan',
    seed: (c) => { c.session('voip', HOST_A, { peer: SERVER }); c.session('voip', HOST_B, { peer: SERVER2 }); },
    packet: tcp(SERVER, 42000, WAN, 5061, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(SERVER, 42000, WAN, 5061, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { voip: { flows_opened: 1 } },
    sessions: [{ rule: 'voip', host: HOST_A, peer: SERVER, touch: 'unchanged' }, { rule: 'voip', host: HOST_B, peer: SERVER2, touch: 'unchanged' }],
    flows: [newFlow({ proto: 'tcp', remote: SERVER, rport: 42000, wanPort: 5061, host: HOST_A, hostPort: 5061, rule: 'voip', peer: SERVER }, SEEN.SYN)],
  },
  {
    name: 'peer contacted, two hosts: a remote neither host contacted is refused',
    prog: 'wan',
    seed: (c) => { c.session('voip', HOST_A, { peer: SERVER }); c.session('voip', HOST_B, { peer: SERVER2 }); },
    packet: tcp(REMOTE, 42000, WAN, 5061, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'sessions_per_host with peer contacted: a host holding 2 of 2 sessions is refused a third peer, none evicted',
    prog: 'lan',
    sessionsPerHost: 2,
    seed: (c) => { c.session('voip', HOST_A, { peer: SERVER }); c.session('voip', HOST_A, { peer: SERVER2 }); },
    packet: udp(HOST_A, 5060, REMOTE, 5060),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { voip: { trigger_hits: 1, refused_host_limit: 1 } },
  },

  // ---- IPv4 options and bad packets on translated flows ----
  {
    name: 'inbound flow packet with IPv4 options (IHL 15) on a translated port: translated, options kept',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.ACK, { options: RECORD_ROUTE_40 }),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.ACK, { options: RECORD_ROUTE_40 }), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'UDP reply with IPv4 options (IHL 15): translated, options kept',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: udp(HOST_A, 27005, REMOTE, 40001, { options: RECORD_ROUTE_40 }),
    retval: TC_ACT_REDIRECT,
    out: xlate(udp(HOST_A, 27005, REMOTE, 40001, { options: RECORD_ROUTE_40 }), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: GAME_FLOW, seenIn: 0, seenOut: 0, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'reply of a flow with a bogus tot_len (past the frame): not translated, malformed',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK, { totLen: 400 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
  },
  {
    name: 'reply of a flow cut inside its TCP header: not translated, malformed',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: truncated(tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK), 30),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
  },
  {
    name: 'inbound flow packet from a LAN source address on the WAN side (spoofed 5-tuple): untouched, no flow',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(LAN_SRC, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  // ---- issue 10: only what the LAN host asked for, only while it uses it ----
  // Frames not addressed to the gateway (SPEC 4.1, 8).
  {
    name: 'trigger in a frame addressed to another host\'s MAC (PACKET_OTHERHOST: a promiscuous br-lan passing bridged LAN traffic up) does not open',
    prog: 'lan',
    packet: { ...tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), eth: { dst: '02:00:00:00:00:09' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'reply of an accepted flow in a frame addressed to another host\'s MAC: untouched, flow not refreshed',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: { ...tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK), eth: { dst: '02:00:00:00:00:09' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
  },
  {
    name: 'inbound SYN with a live session in a frame addressed to another MAC (PACKET_OTHERHOST): not translated, no flow',
    prog: 'wan',
    seed: live('irc'),
    packet: { ...tcp(REMOTE, 55555, WAN, 113, TCP.SYN), eth: { dst: '02:00:00:00:00:09' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    name: 'inbound UDP to an open port in a link-layer broadcast frame: not translated (the kernel never forwards one)',
    prog: 'wan',
    seed: live('game'),
    packet: { ...udp(REMOTE, 40001, WAN, 27005), eth: { dst: 'ff:ff:ff:ff:ff:ff' } },
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  // Only LAN hosts arm, only for remote destinations (SPEC 4.1).
  {
    name: 'trigger from a source outside every LAN subnet (spoofed or routed in) does not open',
    prog: 'lan',
    packet: tcp('192.0.2.77', 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger from the gateway\'s own LAN address does not open',
    prog: 'lan',
    packet: tcp(GW_LAN, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger to a destination inside the LAN (a LAN game server) does not open WAN ports',
    prog: 'lan',
    packet: udp(HOST_A, 50000, HOST_B, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger to a loopback destination (127.0.0.1) does not open',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, '127.0.0.1', 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger from a host of an extra LAN prefix (interfaces.lan_networks, routed behind a LAN router) opens',
    prog: 'lan',
    seed: (c) => c.f.state.setLanNets([...LAN_NETS, '10.9.0.0/16']),
    packet: tcp('10.9.4.5', 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: '10.9.4.5', ifindex: 'lo', touch: 'new' }],
    hosts: { '10.9.4.5': 1 },
  },
  // Martian and own sources on the WAN (SPEC 8).
  ...(['0.1.2.3', '127.0.0.1', '224.0.0.5', '240.0.0.1', '255.255.255.255', WAN, GW_LAN] as const).map((src): Row => ({
    name: `inbound SYN from the martian or own source ${src} with a live session: not translated, no flow`,
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(src, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  })),
  {
    name: 'ICMP error from a martian source (127.0.0.1) quoting an accepted flow: not translated',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: icmpErr('127.0.0.1', WAN, tcp(WAN, 113, REMOTE, 55555, TCP.ACK)),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  // What the kernel would drop creates and refreshes nothing.
  {
    name: 'trigger with a bad IPv4 header checksum: no session (malformed)',
    prog: 'lan',
    packet: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN, { checksum: 0x1234 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'trigger with IPv4 options and a bad header checksum: no session (malformed)',
    prog: 'lan',
    packet: udp(HOST_A, 50000, SERVER, 27015, { options: RECORD_ROUTE_40, checksum: 0x1234 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'inbound SYN with a bad IPv4 header checksum and a live session: no flow (malformed)',
    prog: 'wan',
    seed: live('irc'),
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN, { checksum: 0x1234 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'reply of an accepted flow with a bad IPv4 header checksum: not translated, neither flow nor session refreshed',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK, { checksum: 0x1234 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
  },
  {
    name: 'trigger with a TCP data offset of 4 words (below the 20-byte header): no session (malformed)',
    prog: 'lan',
    packet: withDoff(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN), 4),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  {
    name: 'inbound SYN whose TCP data offset runs past the segment: no flow (malformed)',
    prog: 'wan',
    seed: live('irc'),
    packet: withDoff(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), 15),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'inbound UDP whose length field runs past the datagram: no flow (malformed)',
    prog: 'wan',
    seed: live('game'),
    packet: udp(REMOTE, 40001, WAN, 27005, {}, { length: 200 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'UDP trigger whose length field is below the 8-byte header: no session (malformed)',
    prog: 'lan',
    packet: udp(HOST_A, 50000, SERVER, 27020, {}, { length: 4 }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
    sessions: [], hosts: {},
  },
  // Only the LAN host keeps its ports open (SPEC 4.2).
  {
    name: 'inbound packet on a flow the LAN host has reset: translated (transitory timer), the session is not refreshed',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.RST }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.ACK), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.RST, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'outbound packet of an accepted flow refreshes the flow and its session (the LAN host uses it)',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN }); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK), { src: WAN }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  // A closed connection does not come back (SPEC 5).
  {
    name: 'bare SYN on the 5-tuple of a flow that saw FIN: the old flow ends and the SYN opens a new one',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK | SEEN.FIN, seenOut: SEEN.SYN | SEEN.ACK | SEEN.FIN }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'bare SYN on the 5-tuple of a flow the LAN host reset (RST outbound): a new flow',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN, seenOut: SEEN.RST }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'bare SYN on an established flow whose session has expired: the flow ends, nothing is forwarded',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 6 * MIN }); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
    flows: [],
  },
  {
    name: 'conflict last: a bare SYN reusing the 5-tuple of the old owner\'s flow goes to the new owner',
    prog: 'wan',
    seed: (c) => { c.session('translated', HOST_B); c.flow(XL_FLOW, { seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN | SEEN.ACK }); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 6003, TCP.SYN), { dst: HOST_B, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_B, touch: 'unchanged' }],
    flows: [newFlow({ ...XL_FLOW, host: HOST_B }, SEEN.SYN)],
  },
  {
    name: 'a SYN retransmitted on an open flow (no FIN or RST, session live and held) goes on as that flow',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN, seenOut: 0 }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN, seenOut: 0, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'a bare SYN from the LAN host on the 5-tuple of its closed flow: the flow ends, the SYN leaves untranslated (masquerade\'s)',
    prog: 'lan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN | SEEN.ACK | SEEN.FIN, seenOut: SEEN.SYN | SEEN.ACK | SEEN.FIN }); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    flows: [],
  },
  // State that no longer exists does not count (SPEC 4.6).
  {
    name: 'sessions_per_host 1: a host whose only session has expired (not yet swept) gets a new one; the expired one is removed',
    prog: 'lan',
    sessionsPerHost: 1,
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { sessions_expired: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'sessions_per_host 2: a host with one live and one expired session gets a new one; the live one stays',
    prog: 'lan',
    sessionsPerHost: 2,
    seed: (c) => { c.session('irc', HOST_A, { ageMs: 6 * MIN }); c.session('translated', HOST_A); },
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { sessions_expired: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [
      { rule: 'translated', host: HOST_A, touch: 'unchanged' },
      { rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' },
    ],
    hosts: { [HOST_A]: 2 },
  },
  {
    name: 'pt_sessions full of expired sessions: a trigger reclaims them and opens (not refused as map_full)',
    prog: 'lan',
    limits: { sessions: 1, flows: 8 },
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    packet: udp(HOST_A, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { sessions_expired: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_A]: 1 },
  },
  {
    name: 'pt_host_sessions full of a host whose sessions expired: another host\'s trigger reclaims and opens',
    prog: 'lan',
    limits: { sessions: 1, flows: 8 },
    seed: live('irc', HOST_A, { ageMs: 6 * MIN }),
    packet: udp(HOST_B, 50000, SERVER, 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { sessions_expired: 1 }, game: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_B, ifindex: 'lo', touch: 'new' }],
    hosts: { [HOST_B]: 1 },
  },
  {
    name: 'pt_flows full of dead flows (a SYN scan\'s, past the transitory timer): a new connection reclaims them and opens',
    prog: 'wan',
    limits: { sessions: 8, flows: 1 },
    seed: (c) => { c.session('irc', HOST_A); c.flow({ ...IRC_FLOW, rport: 55556 }, { seenIn: SEEN.SYN, seenOut: 0, ageMs: 5 * MIN }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },

  // ---- review: the ICMP and fragment paths act on packets ip_rcv() drops ----
  {
    name: 'ICMP error about a flow with a bad outer IPv4 header checksum: untouched (malformed), like any packet the kernel drops',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW); },
    packet: icmpErr(REMOTE, WAN, tcp(WAN, 113, REMOTE, 55555, TCP.ACK), { outer: { checksum: 0x1234 } }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'ICMP error from the LAN host about a flow with a bad outer IPv4 header checksum: untouched (malformed)',
    prog: 'lan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); },
    packet: icmpErr(HOST_A, REMOTE, udp(REMOTE, 40001, HOST_A, 27005, { ttl: 63 }), { outer: { checksum: 0x1234 } }),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/malformed': 1 },
  },
  {
    name: 'non-first fragment of a remembered datagram with a bad IPv4 header checksum: untouched (malformed)',
    prog: 'wan',
    seed: (c) => { c.session('game', HOST_A); c.flow(GAME_FLOW); bigInFrag(c); },
    packet: withIpChecksum(fragment(buildPacket(BIG_IN), 32, 32), 0x1234),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },

  // ---- review: a LAN subnet's broadcast address is not a LAN host ----
  {
    // ip_rcv drops it (fib_validate_source: the source is a broadcast route
    // of the local table, a martian), and `porttrig open` refuses the same
    // address (checkLanHost); the data path armed a session for it, which a
    // hostile LAN host can use to hold any rule under conflict: first.
    name: 'trigger from the LAN subnet\'s broadcast address (10.0.0.255, spoofed) does not open',
    prog: 'lan',
    packet: tcp('10.0.0.255', 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },

  // ---- review: a reload that moves an open port or changes its translation ----
  // README: "a reload that ... takes a port out of its open specs therefore
  // ends that port's accepted flows in both directions at once (rules that
  // keep their ports keep their flows)". The port table is only checked for
  // "some rule opens this port" (WAN) / "some spec maps to this LAN port"
  // (LAN), not for the flow's own rule and translation.
  {
    name: 'reload moved WAN port 113 from rule irc to a new rule: irc\'s old flow on it is no longer translated to its host',
    prog: 'wan',
    rules: RELOAD_MOVED_113,
    seed: (c) => { c.session('ident', HOST_B); c.flow(IRC_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  {
    name: 'reload moved WAN port 113 from rule irc to a new rule: the old flow\'s reply is not translated either',
    prog: 'lan',
    rules: RELOAD_MOVED_113,
    seed: (c) => { c.session('ident', HOST_B); c.flow(IRC_FLOW); },
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 }, flows: [],
  },
  {
    // 6003 -> 7003 became 6003 -> 8003: 7003 is in no open spec any more, so
    // the replies from 7003 leave untranslated (masquerade's), while the
    // inbound half kept going to 7003: a half-translated connection.
    name: 'reload changed the translation of tcp/6000-6009 (-> 7000 became -> 8000): the old flow is not translated to the old LAN port',
    prog: 'wan',
    rules: RELOAD_RETRANSLATED,
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); },
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.ACK),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan, flows: [],
  },
  // Found by the differential test.
  {
    name: 'the LAN host\'s first answer on a flow, within 10 ms of its opening, refreshes the session (the flow\'s own stamp does not move yet)',
    prog: 'lan',
    seed: live('irc', HOST_A, { ageMs: 4 * MIN }),
    prelude: [{ prog: 'wan', packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN), retval: TC_ACT_REDIRECT }],
    packet: tcp(HOST_A, 113, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 113, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN }),
    stats: { 'wan/translated': 1, 'lan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: IRC_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'new', touchOut: 'new' }],
  },
  {
    name: 'pt_flows with room for one entry only, taken by a dead one: the inbound entry\'s insert reclaims it too',
    prog: 'wan',
    limits: { sessions: 8, flows: 1 },
    seed: (c) => { c.session('irc', HOST_A); c.flow({ ...IRC_FLOW, rport: 55556 }, { seenIn: SEEN.SYN, seenOut: 0, ageMs: 5 * MIN, only: 'in' }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'a dead entry under a new flow\'s reply key (an orphan) is ended, not taken as a reason to refuse the flow',
    prog: 'wan',
    seed: (c) => { c.session('irc', HOST_A); c.flow(IRC_FLOW, { seenIn: SEEN.SYN, seenOut: 0, ageMs: 5 * MIN, only: 'out' }); },
    packet: tcp(REMOTE, 55555, WAN, 113, TCP.SYN),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(REMOTE, 55555, WAN, 113, TCP.SYN), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { irc: { flows_opened: 1 } },
    sessions: [{ rule: 'irc', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(IRC_FLOW, SEEN.SYN)],
  },
  {
    name: 'a live flow under a new flow\'s reply key (the same LAN port and remote through another WAN port) refuses it',
    prog: 'wan',
    rules: [rule('a', 'tcp/6667', 'tcp/113'), rule('b', 'tcp/6668', 'tcp/2113 -> 113')],
    seed: (c) => { c.session('a', HOST_A); c.session('b', HOST_A); c.flow({ ...IRC_FLOW, rule: 'a' }); },
    packet: tcp(REMOTE, 55555, WAN, 2113, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
    counters: { b: { flows_refused: 1 } },
  },
  // ---- layer-3 devices (pt_wan_ingress_l3 / pt_lan_ingress_l3): see L3_REMOTE ----
  {
    name: 'L3 WAN (ppp/tun, IPv4 at offset 0): inbound SYN with a live session is rewritten to the LAN host, both flow entries created, redirected',
    prog: 'wan_l3',
    seed: live('translated'),
    packet: tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: xlate(tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(L3_FLOW, SEEN.SYN)],
  },
  {
    name: 'L3 WAN: inbound SYN with IPv4 options (IHL 7) is translated, header length honoured',
    prog: 'wan_l3',
    seed: live('translated'),
    packet: tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN, { options: NOPS_8 }),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: xlate(tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN, { options: NOPS_8 }), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    counters: { translated: { flows_opened: 1 } },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow(L3_FLOW, SEEN.SYN)],
  },
  {
    name: 'L3 WAN: inbound UDP with checksum 0 is translated and its checksum stays 0',
    prog: 'wan_l3',
    seed: live('game'),
    packet: udp(L3_REMOTE, 40001, WAN, 27005, {}, { zeroChecksum: true }),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: xlate(udp(L3_REMOTE, 40001, WAN, 27005, {}, { zeroChecksum: true }), { dst: HOST_A }),
    stats: { 'wan/translated': 1 },
    counters: { game: { flows_opened: 1 } },
    sessions: [{ rule: 'game', host: HOST_A, touch: 'unchanged' }],
    flows: [newFlow({ ...GAME_FLOW, remote: L3_REMOTE }, 0)],
  },
  {
    name: 'L3 WAN: a packet of an accepted flow is translated and refreshes the flow',
    prog: 'wan_l3',
    seed: (c) => { c.session('translated', HOST_A); c.flow(L3_FLOW); },
    packet: tcp(L3_REMOTE, 55555, WAN, 6003, TCP.ACK | TCP.PSH, {}, { payload: Buffer.from('data') }),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: xlate(tcp(L3_REMOTE, 55555, WAN, 6003, TCP.ACK | TCP.PSH, {}, { payload: Buffer.from('data') }), { dst: HOST_A, dport: 7003 }),
    stats: { 'wan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'unchanged' }],
    flows: [{ pair: L3_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN, touchIn: 'fresh', touchOut: 'unchanged' }],
  },
  {
    name: 'L3 WAN: an ICMP error about a flow is translated to the LAN host (outer and quoted headers, every checksum)',
    prog: 'wan_l3',
    seed: (c) => { c.session('translated', HOST_A); c.flow(L3_FLOW); },
    packet: icmpErr(L3_REMOTE, WAN, tcp(WAN, 6003, L3_REMOTE, 55555, TCP.SYN | TCP.ACK, { ttl: 63 })),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: icmpOut(L3_REMOTE, HOST_A, tcp(HOST_A, 7003, L3_REMOTE, 55555, TCP.SYN | TCP.ACK, { ttl: 63 })),
    stats: { 'wan/translated': 1 },
  },
  {
    name: 'L3 WAN: inbound SYN without a session passes untouched',
    prog: 'wan_l3',
    packet: tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    // The IPv4 bytes are fine, but skb->protocol is not ETH_P_IP (the test run
    // derives it from bytes 12-13, REMOTE's first two octets: 0xc633), as for
    // an MPLS or IPv6 packet on a PPP link: the L3 program must not parse it.
    name: 'L3 WAN: a packet whose skb->protocol is not IPv4 passes untouched, even on an open port of a live session',
    prog: 'wan_l3',
    seed: live('translated'),
    packet: tcp(REMOTE, 55555, WAN, 6003, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: untouchedWan,
  },
  {
    // The Ethernet build reads the same bytes as an Ethernet header: it must
    // not translate what it cannot parse (the daemon never attaches it there).
    name: 'the Ethernet WAN program given a layer-3 packet does not translate it',
    prog: 'wan',
    seed: live('translated'),
    packet: () => buildPacket(tcp(L3_REMOTE, 55555, WAN, 6003, TCP.SYN)).subarray(ETH_HLEN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'wan/malformed': 1 },
  },
  {
    name: 'L3 LAN: a trigger from a LAN host opens its session and passes byte for byte',
    prog: 'lan_l3',
    seed: l3Lan,
    packet: tcp(L3_HOST, 40000, SERVER, 6667, TCP.SYN),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/trigger': 1 },
    counters: { irc: { trigger_hits: 1, sessions_opened: 1 } },
    sessions: [{ rule: 'irc', host: L3_HOST, ifindex: 'lo', touch: 'new' }],
    hosts: { [L3_HOST]: 1 },
  },
  {
    name: 'L3 LAN: a reply on a flow is rewritten to the WAN address and port, and gets an Ethernet header for bpf_redirect_neigh() to an Ethernet WAN',
    prog: 'lan_l3',
    seed: (c) => { l3Lan(c); c.session('translated', L3_HOST); c.flow(L3_HOST_FLOW); },
    packet: tcp(L3_HOST, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT, pushedEth: true,
    out: xlate(tcp(L3_HOST, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: L3_HOST, touch: 'fresh' }],
    flows: [{ pair: L3_HOST_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'L3 LAN: trigger to a multicast group does not open (no link-layer check on a layer-3 link: the address check remains)',
    prog: 'lan_l3',
    seed: l3Lan,
    packet: udp(L3_HOST, 50000, '239.1.2.3', 27020),
    retval: TC_ACT_UNSPEC, out: 'same',
    stats: { 'lan/pass': 1 },
    sessions: [], hosts: {},
  },
  {
    // bpf_redirect() to a layer-3 WAN: no Ethernet header is pushed (the
    // kernel strips one a packet came with, __bpf_redirect_no_mac()).
    name: 'L3 LAN to an L3 WAN: a reply on a flow is translated and sent with bpf_redirect(), no Ethernet header pushed',
    prog: 'lan_l3',
    seed: (c) => { l3Lan(c); c.session('translated', L3_HOST); c.flow(L3_HOST_FLOW); c.f.state.setWanLink(WAN_IFINDEX, true); },
    packet: tcp(L3_HOST, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(L3_HOST, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: L3_HOST, touch: 'fresh' }],
    flows: [{ pair: L3_HOST_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  {
    name: 'Ethernet LAN to an L3 WAN: a reply on a flow is translated and redirected (the Ethernet header stays for the kernel to strip)',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); c.f.state.setWanLink(WAN_IFINDEX, true); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK),
    retval: TC_ACT_REDIRECT,
    out: xlate(tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK), { src: WAN, sport: 6003 }),
    stats: { 'lan/translated': 1 },
    sessions: [{ rule: 'translated', host: HOST_A, touch: 'fresh' }],
    flows: [{ pair: XL_FLOW, seenIn: SEEN.SYN, seenOut: SEEN.SYN, touchIn: 'unchanged', touchOut: 'fresh' }],
  },
  // ---- the WAN interface is gone (pppd redialling): pt_config.wan_ifindex 0 ----
  {
    name: 'reply on a flow while the WAN interface is gone: dropped (nowhere to send it), flow and session not refreshed',
    prog: 'lan',
    seed: (c) => { c.session('translated', HOST_A); c.flow(XL_FLOW); c.f.state.setWanLink(0, false); },
    packet: tcp(HOST_A, 7003, REMOTE, 55555, TCP.ACK),
    retval: TC_ACT_SHOT, out: 'same',
    stats: { 'lan/dropped': 1 },
  },
];

// --- sockets of the gateway's own ----------------------------------------------------------
function listenTcp(c: Ctx): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host: '0.0.0.0', port: 0 }, () => {
      c.after(() => new Promise<void>((r) => srv.close(() => r())));
      resolve((srv.address() as { port: number }).port);
    });
  });
}
/** A TCP port nobody listens on right now (bound, then released). */
function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host: '0.0.0.0', port: 0 }, () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
function bindUdp(c: Ctx): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind({ address: '0.0.0.0', port: 0 }, () => {
      c.after(() => new Promise<void>((r) => s.close(() => r())));
      resolve(s.address().port);
    });
  });
}

/** Is some socket of this machine bound to `port` (TCP: listening; UDP: any), IPv4 or IPv6? */
function localPortBound(proto: 'tcp' | 'udp', port: number): boolean {
  for (const file of proto === 'tcp' ? ['/proc/net/tcp', '/proc/net/tcp6'] : ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const local = cols[1]!;
      const lport = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
      if (lport === port && (proto === 'udp' || cols[3] === '0A')) return true;
    }
  }
  return false;
}

function echoRequest(): Buffer {
  const b = Buffer.from([8, 0, 0, 0, 0x12, 0x34, 0, 1, ...Buffer.from('ping')]);
  b.writeUInt16BE(inetChecksum(b), 2);
  return b;
}

/**
 * The same UDP packet with two payload bytes chosen so that the checksum after
 * rewriting the destination is computed as 0 (and so must be sent as 0xffff).
 */
function zeroAfter(spec: PacketSpec, to: { dst?: string; dport?: number }): PacketSpec {
  if (!('udp' in spec.l4)) throw new Error('zeroAfter wants UDP');
  const u = spec.l4.udp;
  const base = Buffer.from(u.payload ?? []);
  const payload = Buffer.concat([base.length % 2 ? Buffer.concat([base, Buffer.alloc(1)]) : base, Buffer.alloc(2)]);
  const withPayload = (p: Buffer): PacketSpec => ({ ...spec, l4: { udp: { ...u, payload: p } } });
  // Find the filler word w for which the translated datagram sums to 0xffff (checksum 0).
  const probe = parsePacket(buildPacket(xlate(withPayload(payload), to)));
  const cur = probe.udp!.checksum;             // checksum with filler 0 (never 0 itself)
  // Adding w to the sum turns checksum ~S into ~(S + w); we want S + w == 0xffff.
  const s = ~cur & 0xffff;
  const w = (0xffff - s) & 0xffff;
  payload.writeUInt16BE(w, payload.length - 2);
  const out = withPayload(payload);
  const after = parsePacket(buildPacket(xlate(out, to))).udp!.checksum;
  if (after !== 0xffff) throw new Error(`zeroAfter: translated checksum is 0x${after.toString(16)}, wanted 0xffff`);
  return out;
}

/** `frame` with its IPv4 header checksum forced to `check` (bogus on purpose). */
function withIpChecksum(frame: Buffer, check: number): Buffer {
  const b = Buffer.from(frame);
  b.writeUInt16BE(check, ETH_HLEN + 10);
  return b;
}

/** The frame of `spec` with its TCP data offset field forced to `words` (bogus on purpose). */
function withDoff(spec: PacketSpec, words: number): Buffer {
  const b = buildPacket(spec);
  const ihl = (b[ETH_HLEN]! & 0x0f) * 4;
  const off = ETH_HLEN + ihl + 12;
  b[off] = (words << 4) | (b[off]! & 0x0f);
  return b;
}

// --- running and checking --------------------------------------------------------------------
const frame = (p: PacketSpec | Buffer): Buffer => (Buffer.isBuffer(p) ? p : buildPacket(p));

function runProg(f: TestDatapath, prog: Prog, input: Buffer): { retval: number; out: Buffer } {
  const out = Buffer.alloc(input.length + 512);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: out });
  assert.equal(r.ret, 0, `BPF_PROG_TEST_RUN of ${prog} failed: ${r.ret}`);
  return { retval: r.retval >>> 0, out: out.subarray(0, r.data_size_out) };
}

function hexDiff(got: Buffer, want: Buffer): string {
  const lines = [`got  ${describe(got)}`, `want ${describe(want)}`];
  if (got.length !== want.length) lines.push(`length ${got.length} != ${want.length}`);
  const diffs: string[] = [];
  for (let i = 0; i < Math.max(got.length, want.length) && diffs.length < 12; i++) {
    if (got[i] !== want[i]) diffs.push(`@${i}: ${got[i]?.toString(16).padStart(2, '0') ?? '--'} != ${want[i]?.toString(16).padStart(2, '0') ?? '--'}`);
  }
  if (diffs.length) lines.push(`bytes differ ${diffs.join(', ')}`);
  return lines.join('\n');
}

function inWindow(v: bigint, lo: bigint, hi: bigint): boolean {
  return v >= lo && v <= hi;
}

function checkTouch(what: string, field: string, got: bigint, seeded: bigint | undefined, touch: Touch, lo: bigint, hi: bigint): void {
  if (touch === 'unchanged') {
    assert.ok(seeded !== undefined, `${what}: expected 'unchanged' but it was not seeded`);
    assert.equal(got, seeded, `${what}: ${field} changed (${got} != seeded ${seeded})`);
  } else if (touch === 'fresh') {
    assert.ok(seeded !== undefined, `${what}: expected 'fresh' but it was not seeded`);
    assert.ok(inWindow(got, lo, hi), `${what}: ${field} ${got} not refreshed (seeded ${seeded}, run between ${lo} and ${hi})`);
  } else {
    assert.ok(inWindow(got, lo, hi), `${what}: ${field} ${got} is not the time of the run (${lo}..${hi})`);
  }
}

async function runRow(t: { after: (fn: () => void | Promise<void>) => void }, row: Row): Promise<void> {
  const f = useDatapath(t, row.limits ? { limits: row.limits } : {});
  const c = new Ctx(f, t);
  await row.setup?.(c);
  const rules = thunk(row.rules ?? RULES, c);
  const compiled = compileRules(rules);
  c.ids = compiled.ids;
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, WAN_IFINDEX, row.sessionsPerHost ?? 8);
  f.state.setLocalAddrs(LOCAL_ADDRS);
  f.state.setLanNets(LAN_NETS);
  row.seed?.(c);

  // A layer-3 program gets the IP packet alone (see L3_ROWS); its output is
  // compared and checked with the input's Ethernet header put back in front.
  const isL3 = (p: Prog): boolean => p.endsWith('_l3');
  const l3 = isL3(row.prog);
  const fullInput = frame(thunk(row.packet, c));
  const input = Buffer.from(l3 ? fullInput.subarray(ETH_HLEN) : fullInput);
  const withEth = (b: Buffer): Buffer => (l3 ? Buffer.concat([fullInput.subarray(0, ETH_HLEN), b]) : b);
  const inputCopy = Buffer.from(fullInput);
  if (row.prog === 'wan' && row.retval === TC_ACT_REDIRECT && c.seededFlows.size === 0) {
    // A new flow is refused when the gateway itself has a socket there (SPEC 5),
    // so a translating row needs its port free on this machine.
    const p = parsePacket(fullInput);
    const l4 = p.tcp ?? p.udp;
    if (l4) {
      const proto = p.tcp ? 'tcp' : 'udp';
      assert.ok(!localPortBound(proto, l4.dport), `precondition: ${proto}/${l4.dport} is bound by a socket on this machine, so the data path rightly treats it as the gateway's own port; free it to run this row`);
    }
  }

  // The data path stamps with CLOCK_MONOTONIC_COARSE, which lags the clock
  // read here (CLOCK_MONOTONIC) by up to a tick: a stamp of the run may lie
  // that much before it started. Seeded stamps are >= 1 s old, so a refresh
  // still shows.
  const tStart = monotonicNs() - CLOCK_TICK_MAX_NS;
  for (const [i, p] of (row.prelude ?? []).entries()) {
    const pre = frame(thunk(p.packet, c));
    const r = runProg(f, p.prog, isL3(p.prog) ? pre.subarray(ETH_HLEN) : pre);
    if (p.retval !== undefined) assert.equal(r.retval, p.retval >>> 0, `prelude packet ${i}: retval ${RETVAL_NAME[r.retval] ?? r.retval}`);
  }
  const run = runProg(f, row.prog, input);
  const { retval } = run;
  let raw = run.out;
  if (row.pushedEth) {
    const pushed = Buffer.from([...new Array<number>(12).fill(0), 0x08, 0x00]);
    assert.ok(raw.subarray(0, ETH_HLEN).equals(pushed), `the output must start with the pushed Ethernet header ${pushed.toString('hex')}, got ${raw.subarray(0, ETH_HLEN).toString('hex')}`);
    raw = raw.subarray(ETH_HLEN);
  }
  const out = withEth(raw);
  const tEnd = monotonicNs();

  // 1. Verdict.
  assert.equal(retval, row.retval >>> 0,
    `retval ${RETVAL_NAME[retval] ?? retval} (${retval | 0}), want ${RETVAL_NAME[row.retval >>> 0] ?? row.retval}\n${hexDiff(out, inputCopy)}`);

  // 2. Bytes.
  const wantOut = thunk(row.out, c);
  const want = wantOut === 'same' ? inputCopy : frame(wantOut);
  assert.ok(out.equals(want), `output bytes differ from the ${wantOut === 'same' ? 'input (must pass untouched)' : 'independently built translation'}\n${hexDiff(out, want)}`);
  if (wantOut !== 'same') {
    const ck = verifyChecksums(out);
    assert.ok(ck.ip, `IP header checksum of the output is wrong: ${ck.detail}`);
    assert.notEqual(ck.l4, false, `L4 checksum of the output is wrong: ${ck.detail}`);
    const inUdp = parsePacket(inputCopy).udp;
    if (inUdp) assert.equal(ck.udpZero, inUdp.checksum === 0, `UDP zero checksum must stay zero and only zero stays zero: ${ck.detail}`);
    assert.notEqual(ck.quotedIp, false, `IP header checksum of the datagram quoted by the ICMP error is wrong: ${ck.detail}`);
  }

  // 3. Packet counters: every (direction, verdict), as one table so a mismatch shows them all.
  const gotStats: Record<string, number> = {};
  for (const [di, d] of PKT_DIRS.entries()) {
    for (const [vi, v] of VERDICTS.entries()) {
      const n = f.dp.maps.pktStats.sum(di * VERDICTS.length + vi);
      if (n !== 0n) gotStats[`${d}/${v}`] = Number(n);
    }
  }
  assert.deepEqual(gotStats, { ...row.stats }, 'pt_pkt_stats (non-zero counters)');

  // 4. Rule counters: every (rule, counter).
  const gotCounters: Record<string, Record<string, number>> = {};
  for (const [name, id] of c.ids) {
    for (const [ci, cn] of RULE_COUNTERS.entries()) {
      const n = f.dp.maps.ruleStats.sum(id * RULE_COUNTERS.length + ci);
      if (n !== 0n) (gotCounters[name] ??= {})[cn] = Number(n);
    }
  }
  assert.deepEqual(gotCounters, row.counters ?? {}, 'pt_rule_stats (non-zero counters)');

  // 5. Sessions: the whole map.
  const gotSessions = new Map([...f.dp.maps.sessions.entries()].map(([k, v]) => [sessKey(k), { k, v }]));
  const wantSessions: SessionExp[] = row.sessions ??
    [...c.seededSessions].map(([k, v]) => {
      const [rid, peer] = k.split('/');
      const name = [...c.ids].find(([, i]) => i === Number(rid))![0];
      return { rule: name, host: v.host, peer: peer!, ifindex: v.ifindex, touch: 'unchanged' as const };
    });
  const names = new Map([...c.ids].map(([n, i]) => [i, n]));
  const showSessions = (): string => [...gotSessions.values()].map(({ k, v }) => `${names.get(k.rule) ?? k.rule}/${k.peer} host ${v.host}`).join(', ') || 'none';
  assert.equal(gotSessions.size, wantSessions.length, `pt_sessions holds ${gotSessions.size} sessions (${showSessions()}), want ${wantSessions.length}`);
  for (const s of wantSessions) {
    const key = sessKey({ rule: c.id(s.rule), peer: s.peer ?? '0.0.0.0' });
    const got = gotSessions.get(key);
    const what = `session ${s.rule}/${s.peer ?? '0.0.0.0'}`;
    assert.ok(got, `${what} missing; pt_sessions has: ${showSessions()}`);
    assert.equal(got.v.host, s.host, `${what}: host`);
    if (s.ifindex !== undefined) assert.equal(got.v.ifindex, s.ifindex === 'lo' ? c.lo : s.ifindex, `${what}: ifindex`);
    const seeded = c.seededSessions.get(key);
    if (s.touch === 'new') {
      checkTouch(what, 'opened_ns', got.v.opened_ns, undefined, 'new', tStart, tEnd);
      assert.equal(got.v.last_seen_ns, got.v.opened_ns, `${what}: a new session has last_seen == opened`);
    } else {
      assert.equal(got.v.opened_ns, seeded?.opened_ns, `${what}: opened_ns must not change`);
      checkTouch(what, 'last_seen_ns', got.v.last_seen_ns, seeded?.last_seen_ns, s.touch, tStart, tEnd);
    }
  }

  // 6. Flows: the whole map, two entries per flow.
  const gotFlows = new Map([...f.dp.maps.flows.entries()].map(([k, v]) => [flowKey(k), { k, v }]));
  const showFlows = (): string => [...gotFlows.keys()].join('; ') || 'none';
  const wantFlows: { key: PtFlowKey; value: PtFlow; touch: Touch }[] = [];
  if (row.flows === undefined) {
    for (const { key, value } of c.seededFlows.values()) wantFlows.push({ key, value, touch: 'unchanged' });
  } else {
    for (const fe of thunk(row.flows, c)) {
      const [inE, outE] = flowEntries(c, fe.pair, fe.seenIn, fe.seenOut);
      if (fe.only !== 'out') wantFlows.push({ ...inE, touch: fe.touchIn });
      if (fe.only !== 'in') wantFlows.push({ ...outE, touch: fe.touchOut });
    }
  }
  assert.equal(gotFlows.size, wantFlows.length, `pt_flows holds ${gotFlows.size} entries (${showFlows()}), want ${wantFlows.length}`);
  for (const w of wantFlows) {
    const key = flowKey(w.key);
    const got = gotFlows.get(key);
    assert.ok(got, `flow entry ${key} missing; pt_flows has: ${showFlows()}`);
    const what = `flow ${key}`;
    const seeded = c.seededFlows.get(key)?.value;
    for (const field of ['nat_addr', 'nat_port', 'rule', 'sess_peer', 'ifindex', 'seen'] as const) {
      assert.equal(got.v[field], w.value[field], `${what}: ${field}`);
    }
    if (w.touch === 'new') {
      checkTouch(what, 'created_ns', got.v.created_ns, undefined, 'new', tStart, tEnd);
      checkTouch(what, 'last_seen_ns', got.v.last_seen_ns, undefined, 'new', tStart, tEnd);
    } else {
      assert.equal(got.v.created_ns, seeded?.created_ns, `${what}: created_ns must not change`);
      checkTouch(what, 'last_seen_ns', got.v.last_seen_ns, seeded?.last_seen_ns, w.touch, tStart, tEnd);
    }
  }

  // 7. Per-host session counts: the whole map. A count of 0 and no entry mean
  // the same (whether the data path deletes an entry at 0 is its own choice).
  const nonZero = (o: Record<string, number>): Record<string, number> =>
    Object.fromEntries(Object.entries(o).filter(([, n]) => n !== 0));
  const gotHosts = nonZero(Object.fromEntries([...f.dp.maps.hostSessions.entries()].map(([h, v]) => [h, v.sessions])));
  const wantHosts = nonZero(row.hosts ?? Object.fromEntries(c.seededHosts));
  assert.deepEqual(gotHosts, wantHosts, 'pt_host_sessions (hosts with a non-zero count)');

  // 8. Fragment translations: the whole map.
  const gotFrags = new Map([...f.dp.maps.frags.entries()].map(([k, v]) => [fragKey(k), v]));
  const wantFrags: { key: PtFragKey; value: PtFrag; touch: Touch }[] = row.frags === undefined
    ? [...c.seededFrags.values()].map((e) => ({ ...e, touch: 'unchanged' as const }))
    : row.frags.map((e) => ({
      key: { saddr: e.src, daddr: e.dst, id: e.id, proto: e.proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP, dir: e.dir === 'in' ? DIR_IN : DIR_OUT },
      value: { first_ns: 0n, nat_addr: e.natAddr, ifindex: e.ifindex === 'lo' ? c.lo : e.ifindex },
      touch: e.touch,
    }));
  const showFrags = (): string => [...gotFrags.keys()].join('; ') || 'none';
  assert.equal(gotFrags.size, wantFrags.length, `pt_frags holds ${gotFrags.size} entries (${showFrags()}), want ${wantFrags.length}`);
  for (const w of wantFrags) {
    const key = fragKey(w.key);
    const got = gotFrags.get(key);
    assert.ok(got, `pt_frags entry ${key} missing; pt_frags has: ${showFrags()}`);
    assert.equal(got.nat_addr, w.value.nat_addr, `pt_frags ${key}: nat_addr`);
    assert.equal(got.ifindex, w.value.ifindex, `pt_frags ${key}: ifindex`);
    checkTouch(`pt_frags ${key}`, 'first_ns', got.first_ns, c.seededFrags.get(key)?.value.first_ns, w.touch, tStart, tEnd);
  }
}

suite('data path (BPF_PROG_TEST_RUN)', () => {
  for (const row of ROWS) {
    const opts = SKIP ? { skip: SKIP } : row.todo ? { todo: row.todo } : {};
    test(`${row.prog}: ${row.name}`, opts, async (t) => {
      await runRow(t, row);
    });
  }

  test('every row of the table has a distinct name', () => {
    const seen = new Set<string>();
    for (const r of ROWS) {
      assert.ok(!seen.has(r.name), `duplicate row name: ${r.name}`);
      seen.add(r.name);
    }
  });

  test('the data path and the sweeper decide the same fate for every flow (pt_flow_fate against flowFate)', SKIP ? { skip: SKIP } : {}, (t) => {
    const f = useDatapath(t);
    const compiled = compileRules(RULES);
    f.state.applyRules(compiled);
    f.state.setRuntime(WAN, WAN_IFINDEX, 8);
    f.state.setLocalAddrs(LOCAL_ADDRS);
    f.state.setLanNets(LAN_NETS);
    const rules = f.state.ruleSettings();
    const S = 1000;
    const TCP_FLAGS: [string, number, number][] = [
      ['syn each way, no ack yet', SEEN.SYN, SEEN.SYN],
      ['handshake done', SEEN.SYN | SEEN.ACK, SEEN.SYN],
      ['remote acks, LAN host never answered', SEEN.SYN | SEEN.ACK, 0],
      ['established, acks both ways', SEEN.SYN | SEEN.ACK, SEEN.SYN | SEEN.ACK],
      ['fin', SEEN.SYN | SEEN.ACK | SEEN.FIN, SEEN.SYN | SEEN.ACK],
      ['rst', SEEN.SYN | SEEN.ACK, SEEN.SYN | SEEN.ACK | SEEN.RST],
    ];
    const AGES_S = [5, 9, 12, 230, 250, 290, 310, 7000, 7450];
    interface Case { name: string; pair: FlowPair; seenIn: number; seenOut: number; ageInMs: number; ageOutMs: number; only?: 'in' | 'out'; session?: { host: string; ageMs: number }; dir: 'in' | 'out' }
    const cases: Case[] = [];
    const liveA = { host: HOST_A, ageMs: S };
    for (const dir of ['in', 'out'] as const) {
      for (const age of AGES_S) {
        // The packet's own direction is idle `age`; the other one a little longer.
        const [ageInMs, ageOutMs] = dir === 'in' ? [age * S, (age + 3) * S] : [(age + 3) * S, age * S];
        cases.push({ name: `udp ${dir} idle ${age} s`, pair: GAME_FLOW, seenIn: 0, seenOut: 0, ageInMs, ageOutMs, session: liveA, dir });
        for (const [fname, seenIn, seenOut] of TCP_FLAGS) {
          cases.push({ name: `tcp ${fname} ${dir} idle ${age} s`, pair: XL_FLOW, seenIn, seenOut, ageInMs, ageOutMs, session: liveA, dir });
        }
        // The other direction is the fresh one: it keeps the flow alive.
        cases.push({ name: `udp ${dir} idle ${age} s, other direction 2 s`, pair: GAME_FLOW, seenIn: 0, seenOut: 0,
          ageInMs: dir === 'in' ? age * S : 2 * S, ageOutMs: dir === 'in' ? 2 * S : age * S, session: liveA, dir });
      }
      for (const age of [2, 9, 11, 60]) {
        cases.push({ name: `orphan ${dir} idle ${age} s`, pair: GAME_FLOW, seenIn: 0, seenOut: 0, ageInMs: age * S, ageOutMs: age * S, only: dir, session: liveA, dir });
      }
      // A reload disabled the rule: its flows end with it, session or not
      // (its ports leave the port table, and pt_flow_fate says killed).
      for (const age of [1, 300]) {
        cases.push({ name: `disabled rule, ${dir} idle ${age} s`, pair: OFF_FLOW, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN,
          ageInMs: age * S, ageOutMs: age * S, session: liveA, dir });
      }
      for (const [rname, pair] of [['kill', KILL_FLOW], ['no kill', XL_FLOW]] as const) {
        const sessions: [string, Case['session']][] = [
          ['live, own host', liveA], ['live, other host', { host: HOST_B, ageMs: S }],
          ['expired', { host: HOST_A, ageMs: 11 * MIN }], ['absent', undefined],
        ];
        for (const [sname, session] of sessions) {
          for (const age of [1, 300]) {
            cases.push({ name: `${rname}, session ${sname}, ${dir} idle ${age} s`, pair, seenIn: SEEN.SYN | SEEN.ACK, seenOut: SEEN.SYN,
              ageInMs: age * S, ageOutMs: age * S, ...(session ? { session } : {}), dir });
          }
        }
      }
    }

    const mismatches: string[] = [];
    const fates = new Map<FlowFate, number>();
    for (const k of cases) {
      for (const [key] of [...f.dp.maps.flows.entries()]) f.dp.maps.flows.delete(key);
      for (const [key] of [...f.dp.maps.sessions.entries()]) f.dp.maps.sessions.delete(key);
      const c = new Ctx(f, t);
      c.ids = compiled.ids;
      if (k.session) c.session(k.pair.rule, k.session.host, { ageMs: k.session.ageMs });
      c.flow(k.pair, { ageInMs: k.ageInMs, ageOutMs: k.ageOutMs, seenIn: k.seenIn, seenOut: k.seenOut, ...(k.only ? { only: k.only } : {}) });
      const [inE, outE] = flowEntries(c, k.pair, k.seenIn, k.seenOut);
      const self = k.dir === 'in' ? inE : outE;
      const seeded = c.seededFlows.get(flowKey(self.key))!;

      // The sweeper's view, from the maps as the data path will see them.
      const sessions = new Map([...f.dp.maps.sessions.entries()].map(([sk, sv]) => [`${sk.rule}/${sk.peer}`, sv]));
      const partner = f.dp.maps.flows.get(partnerKey(seeded.key, seeded.value));
      const want = flowFate(seeded.key, seeded.value, partner, rules.get(seeded.value.rule),
        sessions.get(`${seeded.value.rule}/${seeded.value.sess_peer}`), monotonicNs());
      fates.set(want, (fates.get(want) ?? 0) + 1);

      const p = k.pair;
      const pkt = k.dir === 'in'
        ? (p.proto === 'tcp' ? tcp(p.remote, p.rport, WAN, p.wanPort, TCP.ACK) : udp(p.remote, p.rport, WAN, p.wanPort))
        : (p.proto === 'tcp' ? tcp(p.host, p.hostPort, p.remote, p.rport, TCP.ACK) : udp(p.host, p.hostPort, p.remote, p.rport));
      const { retval } = runProg(f, k.dir === 'in' ? 'wan' : 'lan', buildPacket(pkt));
      // Live: the packet is forwarded on the seeded entry (still there). Over:
      // not forwarded, or forwarded on a new flow that replaced the entry (a
      // UDP datagram opens one on a live session).
      const after = f.dp.maps.flows.get(seeded.key);
      const kept = retval === TC_ACT_REDIRECT && after !== undefined && after.created_ns === seeded.value.created_ns;
      if (kept !== (want === 'live')) mismatches.push(`${k.name}: flowFate says ${want}, the data path ${kept ? 'kept' : 'dropped'} the flow`);
    }
    assert.deepEqual(mismatches, [], `pt_flow_fate and flowFate disagree on ${mismatches.length} of ${cases.length} flows`);
    // The table reaches every fate, so agreement means something.
    for (const fate of ['live', 'expired', 'orphan', 'killed'] as const) assert.ok((fates.get(fate) ?? 0) > 0, `no case where flowFate says ${fate}`);
  });

  test('setLocalAddrs copies up to CONFIG_LOCAL_ADDRS addresses into pt_config, and says whether that is all of them', SKIP ? { skip: SKIP } : {}, (t) => {
    const f = useDatapath(t);
    const config = (): { local_addrs: string[]; local_addrs_all: number } => f.dp.maps.config.get(0)!;
    const free = (n: number): string[] => Array.from({ length: n }, () => '0.0.0.0');
    f.state.setLocalAddrs(LOCAL_ADDRS);
    assert.deepEqual(config().local_addrs, [...LOCAL_ADDRS, ...free(CONFIG_LOCAL_ADDRS - LOCAL_ADDRS.length)]);
    assert.equal(config().local_addrs_all, 1, 'two addresses fit: no hash lookup needed');
    f.state.setLocalAddrs(MANY_LOCAL_ADDRS);
    assert.deepEqual(config().local_addrs, MANY_LOCAL_ADDRS.slice(0, CONFIG_LOCAL_ADDRS));
    assert.equal(config().local_addrs_all, 0, 'more than fit: the data path must look in pt_local_addrs');
    assert.deepEqual(new Set([...f.dp.maps.localAddrs.entries()].map(([a]) => a)), new Set(MANY_LOCAL_ADDRS));
    f.state.setLocalAddrs([WAN]);
    assert.deepEqual(config().local_addrs, [WAN, ...free(CONFIG_LOCAL_ADDRS - 1)]);
    assert.equal(config().local_addrs_all, 1);
    assert.deepEqual([...f.dp.maps.localAddrs.entries()].map(([a]) => a), [WAN]);
  });

  test('a reload that moves an open port or changes its translation removes the flows on it; others stay', SKIP ? { skip: SKIP } : {}, (t) => {
    const f = useDatapath(t);
    const c = new Ctx(f, t);
    const compiled = compileRules(RULES);
    c.ids = compiled.ids;
    f.state.applyRules(compiled);
    c.flow(IRC_FLOW);
    c.flow(XL_FLOW);
    c.flow(GAME_FLOW);
    const flowsOf = (): string[] => [...f.dp.maps.flows.entries()].map(([k]) => flowKey(k)).sort();
    const keysOf = (...pairs: FlowPair[]): string[] => pairs.flatMap((p) => flowEntries(c, p, 0, 0).map((e) => flowKey(e.key))).sort();
    f.state.applyRules(compileRules(RELOAD_MOVED_113, compiled.ids));
    assert.deepEqual(flowsOf(), keysOf(XL_FLOW, GAME_FLOW), 'irc gave port 113 away: its flow there ends');
    f.state.applyRules(compileRules(RELOAD_RETRANSLATED, compiled.ids));
    assert.deepEqual(flowsOf(), keysOf(GAME_FLOW), 'the translation of 6003 changed: its flow ends');
  });

  test('an inbound connection arriving right after the trigger is forwarded (SPEC 4.1)', SKIP ? { skip: SKIP } : {}, (t) => {
    const f = useDatapath(t);
    const c = new Ctx(f, t);
    const compiled = compileRules(RULES);
    c.ids = compiled.ids;
    f.state.applyRules(compiled);
    f.state.setRuntime(WAN, WAN_IFINDEX, 8);
    f.state.setLocalAddrs(LOCAL_ADDRS);
    f.state.setLanNets(LAN_NETS);
    const synIn = tcp(REMOTE, 55555, WAN, 6003, TCP.SYN);
    assert.equal(runProg(f, 'wan', buildPacket(synIn)).retval, TC_ACT_UNSPEC, 'before any trigger the open port is closed');
    assert.equal(runProg(f, 'lan', buildPacket(tcp(HOST_A, 40000, SERVER, 5000, TCP.SYN))).retval, TC_ACT_UNSPEC);
    const r = runProg(f, 'wan', buildPacket(synIn));
    assert.equal(r.retval, TC_ACT_REDIRECT, 'the SYN right after the trigger is forwarded');
    const want = buildPacket(xlate(synIn, { dst: HOST_A, dport: 7003 }));
    assert.ok(r.out.equals(want), hexDiff(r.out, want));
    // The flow's own reply goes back out through the WAN address.
    const reply = tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK);
    const rr = runProg(f, 'lan', buildPacket(reply));
    assert.equal(rr.retval, TC_ACT_REDIRECT);
    const wantReply = buildPacket(xlate(reply, { src: WAN, sport: 6003 }));
    assert.ok(rr.out.equals(wantReply), hexDiff(rr.out, wantReply));
    const flows = [...f.dp.maps.flows.entries()];
    assert.equal(flows.length, 2);
    const inFlow = flows.find(([k]) => k.dir === DIR_IN)?.[1];
    assert.equal(inFlow?.ifindex, c.lo, 'the inbound entry redirects to the interface the trigger came in on');
  });
});
