/**
 * A reference model of the data path (bpf/porttrig.bpf.c) in plain TypeScript,
 * for the differential test (test/bpf/differential.test.ts): the same maps as
 * values (sessions, per-host counts, flows, fragments, reclaim state, counters),
 * and the per-packet semantics of SPEC 4, 5 and 8 as one pure state machine.
 * No BPF, no I/O: a frame goes in with the program (lan/wan) and the clock,
 * a decision (TC verdict, counter, rewrite) comes out, and the state changes.
 *
 * Written from SPEC and the README's decisions; where SPEC is silent it does
 * what the C documents (order of checks, which counter counts what, refresh
 * granularity, reclaim rate limits), because those are observable in the maps.
 * Where the C and SPEC disagree the model follows SPEC (see SPEC_* below and
 * the report of the differential test). Flow fates are not re-implemented:
 * flowFate() of src/core/sweep.ts decides (after the data path's port check).
 * The daemon's sweep is the kernel's pt_sweep program, modelled in sweep().
 *
 * Not modelled: concurrency between CPUs (one packet at a time), the LRU
 * eviction of pt_frags (the generator stays far below its 4096 entries), the
 * redirect target as the kernel applies it (the test run cannot show it; the
 * ifindex stored in the maps is compared), the gateway's own sockets (the
 * generator avoids ports bound on this machine), L4 checksum validity (the
 * data path never checks it).
 */
import {
  DIR_IN, DIR_OUT, FRAG_TIMEOUT_NS, FlowCodec, FlowKeyCodec, FragCodec, FragKeyCodec,
  FLOW_TIMEOUT_TCP_TRANS_NS, IPPROTO_TCP, IPPROTO_UDP, PT_MAX_RULES, RECLAIM, RECLAIM_BATCH, RECLAIM_GAP_NS, RECLAIM_INTERVAL_NS, ReclaimCodec, RULE_CONFLICT_LAST, RULE_COUNTERS, RULE_ENABLED,
  RULE_KILL_FLOWS, RULE_PEER_CONTACTED, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN, SessionCodec, SessionKeyCodec, VERDICTS,
  portIndex, type PtFlow, type PtFlowKey, type PtFrag, type PtFragKey, type PtHost, type PtPort, type PtReclaim,
  type PtRule, type PtSession, type PtSessionKey, type RuleCounter,
} from '../../src/bpf/abi.js';
import { IPV4, type Codec } from '../../src/bpf/struct.js';
import { flowFate, partnerKey } from '../../src/core/sweep.js';
import type { Rewrite } from './frames.js';

// --- SPEC over C -------------------------------------------------------------------

/**
 * SPEC 4.1 with SPEC 8: a packet from a LAN host to a trigger port of a remote
 * host arms the rule, unless it is the reply of an accepted flow (a remote
 * that connected from a trigger port chose that port itself: arming on it
 * would let a remote open a second rule's ports). README "Decisions".
 */
export const SPEC_ARM_ON_FLOW_REPLY = false;
/**
 * SPEC 8: a bad packet is passed or dropped, never translated. The model
 * counts a non-first fragment or an ICMP error with a bad IP header checksum
 * malformed and passes it untouched, as the other paths do.
 */
export const SPEC_BAD_IPCSUM_NEVER_TRANSLATED = true;

// --- constants of the C (written out from bpf/porttrig_abi.h and parsing.h) ----------

/** PT_REFRESH_GRANULARITY_NS: a stamp this fresh is not rewritten. */
export const REFRESH_GRANULARITY_NS = 10_000_000n;
const ETH_HLEN = 14;
const ETH_P_IP = 0x0800;
const IPPROTO_ICMP = 1;
const IP_MF = 0x2000;
const IP_OFFSET = 0x1fff;
const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;
const ICMP_ERRORS = new Set([3, 11, 12]);

export type Act = 'unspec' | 'shot' | 'redirect';
export type Verdict = (typeof VERDICTS)[number];
export type Prog = 'lan' | 'wan';
export type PktType = 'host' | 'otherhost' | 'broadcast' | 'multicast';

/** What the model decides for one packet. */
export interface Outcome {
  act: Act;
  verdict: Verdict;
  rewrite?: Rewrite;
  /** Where the packet went in the model, for the coverage table. */
  path: string;
}

// --- parsing (pt_parse, pt_parse_icmp_error, pt_ip_csum_ok) ---------------------

/** What the data path knows of a packet (struct pt_pkt). */
export interface Pkt {
  saddr: string; daddr: string; sport: number; dport: number;
  proto: number; ttl: number; id: number; tcpFlags: number;
  nonfirstFrag: boolean; firstFrag: boolean;
  /** Offsets from the start of the frame. */
  l4Off: number; ipEnd: number;
}

export type Parsed = { r: 'skip' } | { r: 'bad' } | { r: 'ok' | 'icmp'; p: Pkt };

const ipAt = (b: Buffer, o: number): string => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

/**
 * Parse a frame as the data path must: Ethernet, IPv4 with options, TCP/UDP
 * ports. Not IPv4, or not TCP/UDP/ICMP: skip. IHL < 5, version != 4, a total
 * length below the header or beyond the frame, an L4 header that does not fit
 * the total length, TCP doff < 5 or past the segment, UDP length < 8 or beyond
 * the datagram: bad (a first fragment's doff and UDP length describe the whole
 * datagram, so only their lower bounds apply). ICMP fragments: skip.
 */
export function parseFrame(b: Buffer): Parsed {
  if (b.length < ETH_HLEN || b.readUInt16BE(12) !== ETH_P_IP) return { r: 'skip' };
  const ip = ETH_HLEN;
  if (b.length < ip + 20) return { r: 'bad' };
  const version = b[ip]! >> 4;
  const ihl = b[ip]! & 0x0f;
  if (version !== 4 || ihl < 5) return { r: 'bad' };
  const hlen = ihl * 4;
  const tot = b.readUInt16BE(ip + 2);
  if (tot < hlen || tot > b.length - ETH_HLEN) return { r: 'bad' };
  const proto = b[ip + 9]!;
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP && proto !== IPPROTO_ICMP) return { r: 'skip' };
  const frag = b.readUInt16BE(ip + 6);
  const nonfirstFrag = (frag & IP_OFFSET) !== 0;
  const firstFrag = !nonfirstFrag && (frag & IP_MF) !== 0;
  const p: Pkt = {
    saddr: ipAt(b, ip + 12), daddr: ipAt(b, ip + 16), sport: 0, dport: 0, proto, ttl: b[ip + 8]!,
    id: b.readUInt16BE(ip + 4), tcpFlags: 0, nonfirstFrag, firstFrag, l4Off: ip + hlen, ipEnd: ip + tot,
  };
  if (proto === IPPROTO_ICMP) return nonfirstFrag || firstFrag ? { r: 'skip' } : { r: 'icmp', p };
  if (nonfirstFrag) return { r: 'ok', p };
  const l4 = p.l4Off;
  const l4min = proto === IPPROTO_TCP ? 20 : 8;
  if (tot < hlen + l4min) return { r: 'bad' };
  if (proto === IPPROTO_TCP) {
    const doff = (b[l4 + 12]! >> 4) * 4;
    if (doff < 20 || (!firstFrag && doff > tot - hlen)) return { r: 'bad' };
    p.tcpFlags = b[l4 + 13]!;
  } else {
    const ulen = b.readUInt16BE(l4 + 4);
    if (ulen < 8 || (!firstFrag && ulen > tot - hlen)) return { r: 'bad' };
  }
  p.sport = b.readUInt16BE(l4);
  p.dport = b.readUInt16BE(l4 + 2);
  return { r: 'ok', p };
}

/** Does the IPv4 header sum to 0xffff (RFC 1071)? ip_rcv() drops it otherwise. */
export function ipChecksumOk(b: Buffer, p: Pkt): boolean {
  let s = 0;
  for (let o = ETH_HLEN; o < p.l4Off; o += 2) s += b.readUInt16BE(o);
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s === 0xffff;
}

/** The datagram an ICMP error quotes (struct pt_icmp_quote). */
interface Quote { saddr: string; daddr: string; sport: number; dport: number; proto: number }

/**
 * An ICMP error (destination unreachable, time exceeded, parameter problem)
 * quoting an IPv4 TCP/UDP datagram that is not a non-first fragment, with at
 * least 8 bytes of its L4 header inside the outer datagram and the frame.
 */
function parseIcmpError(b: Buffer, p: Pkt): Quote | null {
  const icmp = p.l4Off;
  if (icmp + 8 > b.length || !ICMP_ERRORS.has(b[icmp]!)) return null;
  const ip = icmp + 8;
  if (ip + 20 > b.length) return null;
  if (b[ip]! >> 4 !== 4 || (b[ip]! & 0x0f) < 5) return null;
  const proto = b[ip + 9]!;
  if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return null;
  if (b.readUInt16BE(ip + 6) & IP_OFFSET) return null;
  const l4 = ip + (b[ip]! & 0x0f) * 4;
  if (l4 + 8 > p.ipEnd || l4 + 8 > b.length) return null;
  return { saddr: ipAt(b, ip + 12), daddr: ipAt(b, ip + 16), sport: b.readUInt16BE(l4), dport: b.readUInt16BE(l4 + 2), proto };
}

/** skb->pkt_type as eth_type_trans() sets it on the test device (MAC 00:00:00:00:00:00). */
export function pktTypeOf(b: Buffer): PktType {
  if (b[0]! & 1) return b.subarray(0, 6).every((x) => x === 0xff) ? 'broadcast' : 'multicast';
  return b.subarray(0, 6).every((x) => x === 0) ? 'host' : 'otherhost';
}

// --- maps as values --------------------------------------------------------------------

/**
 * A map of the model: entries by the bytes of their key as the kernel holds
 * them, each value kept with its encoding (write-through), so that comparing
 * with the kernel's map is a byte compare per entry. Values are immutable:
 * every change is a set().
 */
export class ModelMap<K, V> {
  readonly entries = new Map<string, { key: K; value: V; bytes: Buffer }>();

  /**
   * `keyId`: the key's bytes as a latin1 string, computed faster than through
   * the codec (maps are read on every packet); the codec's by default.
   */
  constructor(readonly name: string, readonly keyCodec: Codec<K>, readonly valueCodec: Codec<V>, readonly capacity: number,
    private readonly keyId: (k: K) => string = (k) => keyCodec.format(k).toString('latin1')) {}

  /** The key's bytes as the kernel holds them, as a latin1 string. */
  id(k: K): string {
    return this.keyId(k);
  }

  get size(): number { return this.entries.size; }

  get(k: K): V | undefined {
    return this.entries.get(this.id(k))?.value;
  }

  has(k: K): boolean {
    return this.entries.has(this.id(k));
  }

  /** Insert or replace; 'E2BIG' when the key is new and the map is full, 'EEXIST' for noexist on a present key. */
  set(k: K, v: V, mode: 'any' | 'noexist' = 'any'): 'ok' | 'E2BIG' | 'EEXIST' {
    const id = this.id(k);
    const present = this.entries.has(id);
    if (present && mode === 'noexist') return 'EEXIST';
    if (!present && this.entries.size >= this.capacity) return 'E2BIG';
    this.entries.set(id, { key: k, value: v, bytes: this.valueCodec.format(v) });
    return 'ok';
  }

  delete(k: K): boolean {
    return this.entries.delete(this.id(k));
  }

  /** A snapshot of the entries, for iterating while the map changes. */
  list(): [K, V][] {
    return [...this.entries.values()].map((e) => [e.key, e.value]);
  }

}

// --- key bytes, fast -----------------------------------------------------------------------

const ipIds = new Map<string, string>();
/** An IPv4 address in network order, as 4 latin1 characters. */
function ipId(a: string): string {
  let id = ipIds.get(a);
  if (id === undefined) {
    id = String.fromCharCode(...a.split('.').map(Number));
    if (ipIds.size < 4096) ipIds.set(a, id);
  }
  return id;
}
const be16Id = (n: number): string => String.fromCharCode(n >> 8, n & 0xff);
const le32Id = (n: number): string => String.fromCharCode(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
/** struct pt_flow_key. */
const flowKeyId = (k: PtFlowKey): string => `${ipId(k.saddr)}${ipId(k.daddr)}${be16Id(k.sport)}${be16Id(k.dport)}${String.fromCharCode(k.proto, k.dir)}\0\0`;
/** struct pt_session_key. */
const sessionKeyId = (k: PtSessionKey): string => `${le32Id(k.rule)}${ipId(k.peer)}`;
/** struct pt_frag_key. */
const fragKeyId = (k: PtFragKey): string => `${ipId(k.saddr)}${ipId(k.daddr)}${be16Id(k.id)}${String.fromCharCode(k.proto, k.dir)}`;

// --- configuration ----------------------------------------------------------------------

export interface ModelConfig {
  wanAddr: string;
  /** The gateway's own addresses (pt_local_addrs). */
  localAddrs: string[];
  /** LAN subnets, CIDR. */
  lanNets: string[];
  sessionsPerHost: number;
  limits: { sessions: number; flows: number };
  /** skb->ifindex of every test run (the loopback device). */
  ifindex: number;
  /** Rule settings by id (compileRules().rules): ids without an entry are zero (disabled). */
  rules: ReadonlyMap<number, PtRule>;
  /** The port table (compileRules().ports): absent slots are empty. */
  ports: ReadonlyMap<number, PtPort>;
}

const ipInts = new Map<string, number>();
/** 10.1.2.3 -> its 32-bit value (memoised: a run sees a few dozen addresses). */
function ipInt(a: string): number {
  let x = ipInts.get(a);
  if (x === undefined) {
    x = a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    if (ipInts.size < 4096) ipInts.set(a, x);
  }
  return x;
}

// --- the model ----------------------------------------------------------------------------

const s64 = (x: bigint): bigint => BigInt.asIntN(64, x);
const stale = (stamp: bigint, now: bigint): boolean => s64(now - stamp) > REFRESH_GRANULARITY_NS;
const liveUntil = (last: bigint, idle: bigint, now: bigint): boolean => s64(now - last) <= s64(idle);

const ReclaimValueCodec: Codec<PtReclaim> = ReclaimCodec;
/** struct pt_host with its `recount` (the kernel sweep's tally; 0 again at the end of each recount). */
export interface ModelHost extends PtHost { recount: number }
const ModelHostCodec: Codec<ModelHost> = {
  size: 16,
  parse: (b, o = 0) => ({ sessions: b.readUInt32LE(o), recount: b.readUInt32LE(o + 4), recheck_ns: b.readBigUInt64LE(o + 8) }),
  format: (v, b = Buffer.alloc(16), o = 0) => {
    b.writeUInt32LE(v.sessions, o); b.writeUInt32LE(v.recount, o + 4); b.writeBigUInt64LE(v.recheck_ns, o + 8); return b;
  },
};
const U32Key: Codec<number> = {
  size: 4,
  parse: (b, o = 0) => b.readUInt32LE(o),
  format: (v, b = Buffer.alloc(4), o = 0) => { b.writeUInt32LE(v, o); return b; },
};

/** A flow entry found for a packet (struct pt_flow_ref). */
interface FlowRef {
  key: PtFlowKey;
  fv: PtFlow;
  /** The flow's session when it was looked up and is live and held by the flow's host. */
  sKey: PtSessionKey | null;
}

type Take = 'ok' | 'limit' | 'full';

/** Reclaim scan context (struct pt_reclaim_ctx). */
interface ReclaimCtx {
  now: bigint; next: bigint; hostNext: bigint; host: string | null; live: number; freed: boolean;
  /** The scan's budget (pt_reclaim.freed/more), null: none. */
  st: PtReclaim | null;
  /** The daemon's sweep with PT_SWEEP_RECOUNT. */
  recount: boolean;
}

export class DatapathModel {
  now: bigint;
  cfg: ModelConfig;
  readonly sessions: ModelMap<PtSessionKey, PtSession>;
  readonly hosts: ModelMap<string, ModelHost>;
  readonly flows: ModelMap<PtFlowKey, PtFlow>;
  readonly frags: ModelMap<PtFragKey, PtFrag>;
  readonly reclaimState: ModelMap<number, PtReclaim>;
  /** pt_rule_stats summed over CPUs, by rule id * RULE_COUNTERS.length + counter. */
  readonly ruleStats: number[];
  /** pt_pkt_stats summed over CPUs, by direction * VERDICTS.length + verdict. */
  readonly pktStats: number[];
  /** Paths taken, for the coverage table (not state of the data path). */
  readonly coverage = new Map<string, number>();
  /**
   * Counters changed since the harness last cleared these (indices into
   * ruleStats and pktStats), so that it can look at exactly those after a
   * packet and at all of them now and then: counters only grow, so one the
   * kernel changed and the model did not still shows at the next full look.
   */
  readonly touchedRuleStats = new Set<number>();
  readonly touchedPktStats = new Set<number>();

  private readonly lanNets: { net: number; size: number; len: number }[];

  constructor(cfg: ModelConfig, now: bigint) {
    this.cfg = cfg;
    this.now = now;
    this.sessions = new ModelMap('pt_sessions', SessionKeyCodec, SessionCodec, cfg.limits.sessions, sessionKeyId);
    this.hosts = new ModelMap('pt_host_sessions', IPV4, ModelHostCodec, cfg.limits.sessions, ipId);
    this.flows = new ModelMap('pt_flows', FlowKeyCodec, FlowCodec, 2 * cfg.limits.flows, flowKeyId);
    this.frags = new ModelMap('pt_frags', FragKeyCodec, FragCodec, Infinity, fragKeyId);
    this.reclaimState = new ModelMap('pt_reclaim_state', U32Key, ReclaimValueCodec, 2, le32Id);
    this.reclaimState.set(RECLAIM.sessions, { last_ns: 0n, next_ns: 0n, freed: 0, more: 0 });
    this.reclaimState.set(RECLAIM.flows, { last_ns: 0n, next_ns: 0n, freed: 0, more: 0 });
    this.ruleStats = new Array<number>(PT_MAX_RULES * RULE_COUNTERS.length).fill(0);
    // Both families (enum pt_family): the IPv4 path is modelled, the IPv6
    // path only as far as the generator reaches it (ipv6Frame()).
    this.pktStats = new Array<number>(2 * 2 * VERDICTS.length).fill(0);
    this.lanNets = cfg.lanNets.map((c) => {
      const [a, l] = c.split('/');
      const size = 2 ** (32 - Number(l));
      return { net: Math.floor(ipInt(a!) / size), size, len: Number(l) };
    });
  }

  /** New rule tables (a reload): settings and the port table. */
  setRules(rules: ReadonlyMap<number, PtRule>, ports: ReadonlyMap<number, PtPort>): void {
    this.cfg = { ...this.cfg, rules, ports };
  }

  private cover(path: string): void {
    this.coverage.set(path, (this.coverage.get(path) ?? 0) + 1);
  }

  private done(prog: Prog, verdict: Verdict, act: Act, path: string, rewrite?: Rewrite, family = 0): Outcome {
    const idx = (family * 2 + (prog === 'lan' ? 0 : 1)) * VERDICTS.length + VERDICTS.indexOf(verdict);
    this.pktStats[idx]! += 1;
    this.touchedPktStats.add(idx);
    this.cover(`${prog}:${path}`);
    return rewrite ? { act, verdict, rewrite, path } : { act, verdict, path };
  }

  private count(rule: number, c: RuleCounter): void {
    const idx = rule * RULE_COUNTERS.length + RULE_COUNTERS.indexOf(c);
    this.ruleStats[idx]! += 1;
    this.touchedRuleStats.add(idx);
  }

  private rule(id: number): PtRule {
    return this.cfg.rules.get(id) ?? { idle_timeout_ns: 0n, flags: 0 };
  }

  private port(proto: number, port: number): PtPort | undefined {
    return this.cfg.ports.get(portIndex(proto === IPPROTO_UDP ? 'udp' : 'tcp', port));
  }

  // --- addresses (SPEC 4.1, 8) ---

  /** 0/8, 127/8, 224/4 and 240/4 (with 255.255.255.255): never a peer, host or trigger destination. */
  martian(a: string): boolean {
    const first = Number(a.slice(0, a.indexOf('.')));
    return first === 0 || first === 127 || first >= 224;
  }

  local(a: string): boolean {
    return this.cfg.localAddrs.includes(a);
  }

  lan(a: string): boolean {
    const x = ipInt(a);
    return this.lanNets.some((n) => Math.floor(x / n.size) === n.net);
  }

  /**
   * pt_lan_host: inside a LAN subnet (the longest prefix that holds it) and
   * not that subnet's directed broadcast address (/2../30).
   */
  lanHost(a: string): boolean {
    const x = ipInt(a);
    let best: { net: number; size: number; len: number } | null = null;
    for (const n of this.lanNets) if (Math.floor(x / n.size) === n.net && (!best || n.len > best.len)) best = n;
    if (!best) return false;
    if (best.len < 2 || best.len > 30) return true;
    return x % best.size !== best.size - 1;
  }

  private wanSourceOk(a: string): boolean {
    return !this.martian(a) && !this.local(a) && !this.lan(a);
  }

  private triggerAddrsOk(p: Pkt): boolean {
    if (this.martian(p.saddr) || this.martian(p.daddr)) return false;
    if (this.local(p.daddr) || this.local(p.saddr)) return false;
    return this.lanHost(p.saddr) && !this.lan(p.daddr);
  }

  // --- per-host session counts (SPEC 4.6) ---

  private hostTakeOnce(host: string, limit: number, until: bigint): Take {
    const h = this.hosts.get(host);
    if (!h) {
      if (limit < 1) return 'limit';
      if (this.hosts.set(host, { sessions: 1, recount: 0, recheck_ns: until }, 'noexist') === 'ok') return 'ok';
      return 'full';
    }
    if (h.sessions >= limit) return 'limit';
    const recheck = h.recheck_ns === 0n || s64(until - h.recheck_ns) < 0n ? until : h.recheck_ns;
    this.hosts.set(host, { ...h, sessions: h.sessions + 1, recheck_ns: recheck });
    return 'ok';
  }

  /**
   * One session slot for `host`. Expired sessions do not count: a host at its
   * limit whose earliest deadline (recheck_ns) has passed gets its dead
   * sessions removed first; a full count map gets every host's removed.
   */
  private hostTake(host: string, limit: number, until: bigint): Take {
    const t = this.hostTakeOnce(host, limit, until);
    if (t === 'limit') {
      const h = this.hosts.get(host);
      if (!h || (h.recheck_ns !== 0n && s64(this.now - h.recheck_ns) <= 0n)) return t;
      this.reclaimHost(host);
    } else if (t === 'full') {
      if (!this.reclaim(RECLAIM.sessions)) return t;
    } else {
      return t;
    }
    return this.hostTakeOnce(host, limit, until);
  }

  private hostRelease(host: string): void {
    const h = this.hosts.get(host);
    if (!h || h.sessions === 0) return;
    if (h.sessions === 1) this.hosts.delete(host);
    else this.hosts.set(host, { ...h, sessions: h.sessions - 1 });
  }

  // --- reclaiming (no daemon needed) ---

  /** One removal against the scan's budget (pt_reclaim_spent): true to stop. */
  private spent(c: ReclaimCtx): boolean {
    c.freed = true;
    if (!c.st) return false;
    c.st.freed++;
    if (c.st.freed < RECLAIM_BATCH) return false;
    c.st.more = 1;
    return true;
  }

  /** pt_reclaim_session_cb: true to stop the walk. */
  private reclaimSession(c: ReclaimCtx, key: PtSessionKey): boolean {
    const s = this.sessions.get(key);
    if (!s) return false;  // removed earlier in this scan
    const r = this.rule(key.rule);
    if ((r.flags & RULE_ENABLED) && liveUntil(s.last_seen_ns, r.idle_timeout_ns, c.now)) {
      const until = s.last_seen_ns + r.idle_timeout_ns;
      if (c.next === 0n || s64(until - c.next) < 0n) c.next = until;
      if (c.host === null) {
        c.live++;
        if (c.recount) {
          const h = this.hosts.get(s.host);
          if (h) this.hosts.set(s.host, { ...h, recount: h.recount + 1 });
          else this.hosts.set(s.host, { sessions: 0, recount: 1, recheck_ns: 0n }, 'noexist');
        }
      } else if (s.host === c.host) {
        if (c.hostNext === 0n || s64(until - c.hostNext) < 0n) c.hostNext = until;
        c.live++;
      }
      return false;
    }
    this.sessions.delete(key);
    if (c.recount) {
      const h = this.hosts.get(s.host);
      if (h && h.sessions > 0) this.hosts.set(s.host, { ...h, sessions: h.sessions - 1 });
    } else {
      this.hostRelease(s.host);
    }
    if (r.flags & RULE_ENABLED) {
      this.count(key.rule, 'sessions_expired');
      this.cover(c.recount ? 'sweep:session-expired' : 'reclaim:session-removed');
    } else {
      this.cover(c.recount ? 'sweep:session-rule_gone' : 'reclaim:session-removed');
    }
    return this.spent(c);
  }

  private ctx(host: string | null, st: PtReclaim | null, recount = false): ReclaimCtx {
    return { now: this.now, next: 0n, hostNext: 0n, host, live: 0, freed: false, st, recount };
  }

  /**
   * A full pt_sessions or pt_flows: remove what is over (pt_reclaim_due,
   * pt_reclaim_sessions, pt_reclaim_flows). True if anything went.
   */
  private reclaim(which: number): boolean {
    const old = this.reclaimState.get(which)!;
    const last = old.last_ns;
    const due = last === 0n || old.more !== 0 || s64(this.now - last) >= RECLAIM_INTERVAL_NS ||
      (old.next_ns !== 0n && s64(this.now - old.next_ns) > 0n);
    const name = which === RECLAIM.sessions ? 'sessions' : 'flows';
    if (!due || (which === RECLAIM.sessions && last !== 0n && s64(this.now - last) < RECLAIM_GAP_NS)) {
      this.cover(`reclaim:${name}-not-due`);
      return false;
    }
    const st: PtReclaim = { ...old, last_ns: this.now, freed: 0, more: 0 };
    const c = this.ctx(null, st);
    if (which === RECLAIM.sessions) {
      for (const [k] of this.sessions.list()) if (this.reclaimSession(c, k)) break;
      st.next_ns = c.next;
    } else {
      for (const [k] of this.flows.list()) {
        const fv = this.flows.get(k);
        if (!fv) continue;
        if (s64(this.now - fv.last_seen_ns) <= FLOW_TIMEOUT_TCP_TRANS_NS) continue;
        const fate = this.judge(k, fv, false).fate;
        if (fate === 'live') continue;
        const before = this.flows.size;
        this.flowEnd(k, fv);
        if (process.env.PT_DIFF_DEBUG) console.log('reclaim', JSON.stringify(k), JSON.stringify(fv, (_, x) => (typeof x === 'bigint' ? x.toString() : x)), fate, before - this.flows.size);
        this.cover('reclaim:flow-removed');
        if (this.spent(c)) break;
      }
    }
    this.reclaimState.set(which, { ...st });
    this.cover(`reclaim:${name}-scan${c.freed ? '' : '-nothing'}`);
    return c.freed;
  }

  /** pt_reclaim_host: a host at its limit whose earliest deadline passed. */
  private reclaimHost(host: string): void {
    const old = this.reclaimState.get(RECLAIM.sessions)!;
    if (old.last_ns !== 0n && s64(this.now - old.last_ns) < RECLAIM_GAP_NS) {
      this.cover('reclaim:host-gap');
      return;
    }
    const c = this.ctx(host, null);
    for (const [k] of this.sessions.list()) this.reclaimSession(c, k);
    this.reclaimState.set(RECLAIM.sessions, { last_ns: this.now, next_ns: c.next, freed: 0, more: 0 });
    this.cover(`reclaim:host${c.freed ? '' : '-nothing'}`);
    const h = this.hosts.get(host);
    if (!h) return;
    this.hosts.set(host, { ...h, sessions: c.live, recheck_ns: c.hostNext });
  }

  // --- sessions (SPEC 4) ---

  /** Open or refresh the session (rule, host[, peer]) for a trigger packet. */
  private arm(id: number, p: Pkt): void {
    const rule = this.rule(id);
    const flags = rule.flags;
    const idle = rule.idle_timeout_ns;
    if (!(flags & RULE_ENABLED)) {
      this.cover('arm:rule-disabled');
      return;
    }
    const key: PtSessionKey = { rule: id, peer: flags & RULE_PEER_CONTACTED ? p.daddr : '0.0.0.0' };
    const s = this.sessions.get(key);
    let oldHost: string | null = null;
    let keepSlot = false;
    if (s) {
      if (liveUntil(s.last_seen_ns, idle, this.now)) {
        if (s.host === p.saddr) {
          const last = stale(s.last_seen_ns, this.now) ? this.now : s.last_seen_ns;
          this.sessions.set(key, { ...s, last_seen_ns: last, ifindex: this.cfg.ifindex });
          this.count(id, 'trigger_hits');
          this.cover(last === this.now ? 'arm:refresh' : 'arm:refresh-within-granularity');
          return;
        }
        if (!(flags & RULE_CONFLICT_LAST)) {
          this.count(id, 'trigger_hits');
          this.count(id, 'refused_conflict');
          this.cover('arm:refused-conflict');
          return;
        }
        oldHost = s.host;
        this.cover('arm:take-over-live');
      } else if (s.host === p.saddr) {
        keepSlot = true;
        this.cover('arm:reopen-own-expired');
      } else {
        oldHost = s.host;
        this.cover('arm:replace-expired-of-other-host');
      }
    }
    this.count(id, 'trigger_hits');
    const fresh: PtSession = { opened_ns: this.now, last_seen_ns: this.now, host: p.saddr, ifindex: this.cfg.ifindex };
    if (!keepSlot) {
      const t = this.hostTake(p.saddr, this.cfg.sessionsPerHost, this.now + idle);
      if (t !== 'ok') {
        this.count(id, t === 'limit' ? 'refused_host_limit' : 'refused_map_full');
        this.cover(t === 'limit' ? 'arm:refused-host-limit' : 'arm:refused-host-map-full');
        return;
      }
    }
    if (oldHost !== null) {
      const cur = this.sessions.get(key);
      if (!cur || cur.host !== oldHost) oldHost = null;
    }
    let err = this.sessions.set(key, fresh);
    if (err === 'E2BIG' && this.reclaim(RECLAIM.sessions)) err = this.sessions.set(key, fresh);
    if (err !== 'ok') {
      if (!keepSlot) this.hostRelease(p.saddr);
      this.count(id, 'refused_map_full');
      this.cover('arm:refused-map-full');
      return;
    }
    if (oldHost !== null) this.hostRelease(oldHost);
    this.count(id, 'sessions_opened');
    this.cover('arm:opened');
  }

  // --- flows (SPEC 5) ---

  /** The fate of a flow entry now (flowFate() of src/core/sweep.ts), and its owned session if looked up. */
  private judge(k: PtFlowKey, fv: PtFlow, wantSession: boolean): { fate: ReturnType<typeof flowFate>; sKey: PtSessionKey | null } {
    // Flows live on open ports only: the WAN port must still be the flow's rule's, to the flow's LAN port.
    const inb = k.dir === DIR_IN;
    const pp = this.port(k.proto, inb ? k.dport : fv.nat_port);
    const portOk = !!pp && pp.open_rule === fv.rule && pp.open_lan_port === (inb ? fv.nat_port : k.sport);
    const rule = portOk ? this.rule(fv.rule) : { idle_timeout_ns: 0n, flags: 0 };
    const skey: PtSessionKey = { rule: fv.rule, peer: fv.sess_peer };
    const session = this.sessions.get(skey);
    const partner = this.flows.get(partnerKey(k, fv));
    const fate = flowFate(k, fv, partner, portOk ? this.cfg.rules.get(fv.rule) : undefined, session, this.now);
    if (!portOk && fate === 'killed') this.cover('flow:port-changed');
    let sKey: PtSessionKey | null = null;
    if ((rule.flags & RULE_ENABLED) && ((rule.flags & RULE_KILL_FLOWS) || wantSession) && session) {
      const host = k.dir === DIR_IN ? fv.nat_addr : k.saddr;
      if (session.host === host && liveUntil(session.last_seen_ns, rule.idle_timeout_ns, this.now)) sKey = skey;
    }
    return { fate, sKey };
  }

  /** Delete both entries of the flow of (k, fv), each only if it is still that flow's. */
  private flowEnd(k: PtFlowKey, fv: PtFlow): void {
    const pk = partnerKey(k, fv);
    const pf = this.flows.get(pk);
    if (pf && pf.created_ns === fv.created_ns) this.flows.delete(pk);
    const f = this.flows.get(k);
    if (f && f.created_ns === fv.created_ns && f.nat_addr === fv.nat_addr && f.nat_port === fv.nat_port) this.flows.delete(k);
  }

  /** The live flow entry `k`; one that is over is removed (both directions) and absent. */
  private flowGet(k: PtFlowKey, wantSession: boolean): FlowRef | null {
    const fv = this.flows.get(k);
    if (!fv) return null;
    const want = wantSession || (k.dir === DIR_OUT && (stale(fv.last_seen_ns, this.now) || fv.last_seen_ns === fv.created_ns));
    const { fate, sKey } = this.judge(k, fv, want);
    if (fate !== 'live') {
      this.flowEnd(k, fv);
      this.cover(`flow:${fate}`);
      return null;
    }
    return { key: k, fv, sKey };
  }

  /** A bare SYN on a live flow: a new connection when the flow saw FIN/RST, or its session is no longer live and owned. */
  private synReopens(ref: FlowRef): boolean {
    if (!ref.sKey) return true;
    if (ref.fv.seen & (SEEN_FIN | SEEN_RST)) return true;
    const pf = this.flows.get(partnerKey(ref.key, ref.fv));
    return !!pf && (pf.seen & (SEEN_FIN | SEEN_RST)) !== 0;
  }

  private seenFlags(p: Pkt): number {
    if (p.proto !== IPPROTO_TCP) return 0;
    const f = p.tcpFlags;
    let seen = 0;
    if (f & TCP_SYN) seen |= SEEN_SYN;
    else if (f & TCP_ACK) seen |= SEEN_ACK;
    if (f & TCP_FIN) seen |= SEEN_FIN;
    if (f & TCP_RST) seen |= SEEN_RST;
    return seen;
  }

  private fragKey(p: Pkt, dir: number): PtFragKey {
    return { saddr: p.saddr, daddr: p.daddr, id: p.id, proto: p.proto, dir };
  }

  /** A packet of a live flow: refresh the flow (and, outbound, its owned session), rewrite, redirect. */
  private forward(prog: Prog, p: Pkt, ref: FlowRef, path: string): Outcome {
    const inbound = prog === 'wan';
    if (p.ttl <= 1) return this.done(prog, 'dropped', 'shot', `${path}:ttl-drop`);
    const cur = this.flows.get(ref.key)!;
    const seen = cur.seen | this.seenFlags(p);
    const last = stale(cur.last_seen_ns, this.now) ? this.now : cur.last_seen_ns;
    if (seen !== cur.seen || last !== cur.last_seen_ns) this.flows.set(ref.key, { ...cur, last_seen_ns: last, seen });
    if (!inbound && ref.sKey) {
      const s = this.sessions.get(ref.sKey)!;
      if (stale(s.last_seen_ns, this.now)) {
        this.sessions.set(ref.sKey, { ...s, last_seen_ns: this.now });
        this.cover('flow:session-refreshed');
      }
    }
    if (p.firstFrag) {
      this.frags.set(this.fragKey(p, inbound ? DIR_IN : DIR_OUT), { first_ns: this.now, nat_addr: ref.fv.nat_addr, ifindex: ref.fv.ifindex });
      this.cover('frag:remembered');
    }
    return this.done(prog, 'translated', 'redirect', path, { kind: 'l4', dst: inbound, addr: ref.fv.nat_addr, port: ref.fv.nat_port });
  }

  /** A non-first fragment: translated like its first fragment within FRAG_TIMEOUT_NS, else passed. */
  private fragment(prog: Prog, b: Buffer, p: Pkt): Outcome {
    const inbound = prog === 'wan';
    const fr = this.frags.get(this.fragKey(p, inbound ? DIR_IN : DIR_OUT));
    if (!fr) return this.done(prog, 'pass', 'unspec', 'frag:unknown');
    if (s64(this.now - fr.first_ns) > FRAG_TIMEOUT_NS) return this.done(prog, 'pass', 'unspec', 'frag:too-old');
    if (SPEC_BAD_IPCSUM_NEVER_TRANSLATED && !ipChecksumOk(b, p)) return this.done(prog, 'malformed', 'unspec', 'frag:bad-ipcsum');
    if (p.ttl <= 1) return this.done(prog, 'dropped', 'shot', 'frag:ttl-drop');
    return this.done(prog, 'translated', 'redirect', 'frag:translated', { kind: 'l3', dst: inbound, addr: fr.nat_addr });
  }

  /** An ICMP error about a live flow, in the direction its entry `fdir` translates. Refreshes nothing. */
  private icmp(prog: Prog, b: Buffer, p: Pkt): Outcome {
    const fdir = prog === 'wan' ? DIR_IN : DIR_OUT;
    const q = parseIcmpError(b, p);
    if (!q) return this.done(prog, 'pass', 'unspec', 'icmp:not-an-error-quoting-tcp-udp');
    if (fdir === DIR_OUT) {
      if (p.saddr !== q.daddr || p.daddr !== q.saddr) return this.done(prog, 'pass', 'unspec', 'icmp:not-from-the-host');
      if (!this.port(q.proto, q.dport)?.lan_port_refs) return this.done(prog, 'pass', 'unspec', 'icmp:not-a-lan-port');
    }
    const k: PtFlowKey = { saddr: q.daddr, daddr: q.saddr, sport: q.dport, dport: q.sport, proto: q.proto, dir: fdir };
    if (SPEC_BAD_IPCSUM_NEVER_TRANSLATED && !ipChecksumOk(b, p)) return this.done(prog, 'malformed', 'unspec', 'icmp:bad-ipcsum');
    const ref = this.flowGet(k, false);
    if (!ref) return this.done(prog, 'pass', 'unspec', 'icmp:no-flow');
    if (p.ttl <= 1) return this.done(prog, 'dropped', 'shot', 'icmp:ttl-drop');
    return this.done(prog, 'translated', 'redirect', 'icmp:translated',
      { kind: 'icmp', inbound: fdir === DIR_IN, addr: ref.fv.nat_addr, port: ref.fv.nat_port });
  }

  private bareSyn(p: Pkt): boolean {
    return p.proto === IPPROTO_TCP && (p.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) === TCP_SYN;
  }

  /** First packet of an inbound connection to an open port: open the flow if its session is live. */
  private openFlow(p: Pkt, inKey: PtFlowKey, mayReclaim: boolean): Outcome | 'reclaim' | { clear: PtFlowKey } {
    const port = this.port(p.proto, p.dport)!;
    const rid = port.open_rule;
    const rule = this.rule(rid);
    if (!(rule.flags & RULE_ENABLED)) return this.done('wan', 'pass', 'unspec', 'open:rule-disabled');
    const skey: PtSessionKey = { rule: rid, peer: rule.flags & RULE_PEER_CONTACTED ? p.saddr : '0.0.0.0' };
    const s = this.sessions.get(skey);
    if (!s) return this.done('wan', 'pass', 'unspec', 'open:no-session');
    if (!liveUntil(s.last_seen_ns, rule.idle_timeout_ns, this.now)) return this.done('wan', 'pass', 'unspec', 'open:session-expired');
    if (!this.wanSourceOk(p.saddr)) return this.done('wan', 'pass', 'unspec', 'open:bad-source');
    if (p.ttl <= 1) return this.done('wan', 'dropped', 'shot', 'open:ttl-drop');
    const outKey: PtFlowKey = { saddr: s.host, daddr: p.saddr, sport: port.open_lan_port, dport: p.sport, proto: p.proto, dir: DIR_OUT };
    const out: PtFlow = {
      created_ns: this.now, last_seen_ns: this.now, nat_addr: this.cfg.wanAddr, nat_port: p.dport, rule: rid,
      sess_peer: skey.peer, ifindex: this.cfg.ifindex, seen: 0,
    };
    const inV: PtFlow = {
      created_ns: this.now, last_seen_ns: this.now, nat_addr: s.host, nat_port: port.open_lan_port, rule: rid,
      sess_peer: skey.peer, ifindex: s.ifindex, seen: 0,
    };
    const err = this.flows.set(outKey, out, 'noexist');
    if (err === 'EEXIST' && mayReclaim) return { clear: outKey };
    if (err === 'E2BIG' && mayReclaim) return 'reclaim';
    if (err !== 'ok') {
      this.count(rid, 'flows_refused');
      return this.done('wan', 'pass', 'unspec', `open:refused-${err === 'E2BIG' ? 'full' : 'reply-entry-exists'}`);
    }
    const inErr = this.flows.set(inKey, inV, 'noexist');
    if (inErr !== 'ok') {
      this.flowEnd(outKey, out);
      if (inErr === 'E2BIG' && mayReclaim) return 'reclaim';
      this.count(rid, 'flows_refused');
      return this.done('wan', 'pass', 'unspec', 'open:refused-inbound-entry');
    }
    this.count(rid, 'flows_opened');
    return this.forward('wan', p, { key: inKey, fv: inV, sKey: null }, 'open:new-flow');
  }

  /**
   * A frame of ethertype 0x86dd goes to the IPv6 programs (a tail call,
   * bpf/ipv6/ingress6.h). The generator's such frames carry IPv4 bytes: a
   * version other than 6 is malformed there, counted in family IPv6, and
   * passed untouched. Real IPv6 is not modelled (test/bpf/ipv6.test.ts).
   */
  private ipv6Frame(prog: Prog, b: Buffer): Outcome | null {
    if (b.length < ETH_HLEN || b.readUInt16BE(12) !== 0x86dd) return null;
    if (b.length >= ETH_HLEN + 40 && b[ETH_HLEN]! >> 4 === 6) throw new Error('the model does not model IPv6 frames');
    return this.done(prog, 'malformed', 'unspec', 'ipv6-malformed', undefined, 1);
  }

  /** pt_wan_ingress. */
  private wan(b: Buffer): Outcome {
    const v6 = this.ipv6Frame('wan', b);
    if (v6) return v6;
    const parsed = parseFrame(b);
    if (parsed.r === 'skip') return this.done('wan', 'pass', 'unspec', 'skip');
    if (parsed.r === 'bad') return this.done('wan', 'malformed', 'unspec', 'malformed');
    const p = parsed.p;
    if (p.daddr !== this.cfg.wanAddr) return this.done('wan', 'pass', 'unspec', 'not-to-wan-addr');
    if (pktTypeOf(b) !== 'host') return this.done('wan', 'pass', 'unspec', `pkt-type-${pktTypeOf(b)}`);
    if (parsed.r === 'icmp') {
      if (!this.wanSourceOk(p.saddr)) return this.done('wan', 'pass', 'unspec', 'icmp:bad-source');
      return this.icmp('wan', b, p);
    }
    if (p.nonfirstFrag) return this.fragment('wan', b, p);
    if (p.firstFrag) this.frags.delete(this.fragKey(p, DIR_IN));
    const port = this.port(p.proto, p.dport);
    if (!port?.open_rule) return this.done('wan', 'pass', 'unspec', 'closed-port');
    if (!ipChecksumOk(b, p)) return this.done('wan', 'malformed', 'unspec', 'bad-ipcsum');
    const syn = this.bareSyn(p);
    const inKey: PtFlowKey = { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, proto: p.proto, dir: DIR_IN };
    const ref = this.flowGet(inKey, syn);
    if (ref) {
      if (!syn) return this.forward('wan', p, ref, 'flow');
      if (!this.synReopens(ref)) return this.forward('wan', p, ref, 'flow:syn-retransmit');
      this.flowEnd(inKey, ref.fv);
      this.cover('wan:syn-reopens');
    }
    if (p.proto === IPPROTO_TCP && !syn) return this.done('wan', 'pass', 'unspec', 'no-flow-not-syn');
    const act = this.openFlow(p, inKey, true);
    if (act === 'reclaim') {
      this.reclaim(RECLAIM.flows);
    } else if ('clear' in act) {
      // pt_flow_clear: end the entry under the reply key if it is over.
      if (!this.flowGet(act.clear, false)) this.cover('open:reply-key-cleared');
    } else {
      return act;
    }
    const again = this.openFlow(p, inKey, false);
    if (again === 'reclaim' || 'clear' in again) throw new Error('openFlow asked to retry twice');
    return again;
  }

  /** pt_lan_ingress. */
  private lanProg(b: Buffer): Outcome {
    const v6 = this.ipv6Frame('lan', b);
    if (v6) return v6;
    const parsed = parseFrame(b);
    if (parsed.r === 'skip') return this.done('lan', 'pass', 'unspec', 'skip');
    if (parsed.r === 'bad') return this.done('lan', 'malformed', 'unspec', 'malformed');
    const p = parsed.p;
    if (pktTypeOf(b) !== 'host') return this.done('lan', 'pass', 'unspec', `pkt-type-${pktTypeOf(b)}`);
    if (parsed.r === 'icmp') return this.icmp('lan', b, p);
    if (p.nonfirstFrag) return this.fragment('lan', b, p);
    if (p.firstFrag) this.frags.delete(this.fragKey(p, DIR_OUT));

    let csumChecked = false;
    let replied: Outcome | null = null;
    if (this.port(p.proto, p.sport)?.lan_port_refs) {
      if (!ipChecksumOk(b, p)) return this.done('lan', 'malformed', 'unspec', 'bad-ipcsum');
      csumChecked = true;
      const syn = this.bareSyn(p);
      const outKey: PtFlowKey = { saddr: p.saddr, daddr: p.daddr, sport: p.sport, dport: p.dport, proto: p.proto, dir: DIR_OUT };
      const ref = this.flowGet(outKey, syn);
      if (ref) {
        if (!syn || !this.synReopens(ref)) {
          replied = this.forward('lan', p, ref, syn ? 'reply:syn' : 'reply');
          if (!SPEC_ARM_ON_FLOW_REPLY) {
            if (p.dport && this.port(p.proto, p.dport)?.trigger[0]) this.cover('lan:reply-to-a-trigger-port-does-not-arm');
            return replied;
          }
        } else {
          this.flowEnd(outKey, ref.fv);
          this.cover('lan:syn-reopens');
        }
      }
    }

    const dport = this.port(p.proto, p.dport);
    if (!dport || !dport.trigger[0]) return replied ?? this.done('lan', 'pass', 'unspec', 'no-trigger-port');
    if (!this.triggerAddrsOk(p)) return replied ?? this.done('lan', 'pass', 'unspec', 'trigger-addrs-not-ok');
    if (!csumChecked && !ipChecksumOk(b, p)) return this.done('lan', 'malformed', 'unspec', 'bad-ipcsum');
    for (const id of dport.trigger) {
      if (!id) break;
      this.arm(id, p);
    }
    return this.done('lan', 'trigger', 'unspec', 'trigger');
  }

  /** Run one frame through pt_lan_ingress or pt_wan_ingress at `now`: the decision, and the state after it. */
  step(prog: Prog, frame: Buffer): Outcome {
    return prog === 'lan' ? this.lanProg(frame) : this.wan(frame);
  }

  /** Move the clock (it never goes back). */
  advance(ns: bigint): void {
    if (ns < 0n) throw new RangeError('the clock does not go back');
    this.now += ns;
  }

  /**
   * The daemon's sweep (PorttrigState.sweep(): the pt_sweep program with
   * PT_SWEEP_SESSIONS | PT_SWEEP_FLOWS | PT_SWEEP_RECOUNT): expired
   * sessions and sessions of disabled rules go (the count of their host
   * drops, its entry stays); live ones add to their host's recount (an
   * absent host gets an entry at 0); then every host's recount goes back to
   * 0, and a host whose count differed from it takes it (recheck 0) or goes
   * (none). Last, every flow that is over ends.
   */
  sweep(): void {
    const c = this.ctx(null, null, true);
    for (const [k] of this.sessions.list()) this.reclaimSession(c, k);
    for (const [host, h] of this.hosts.list()) {
      const n = h.recount;
      if (h.sessions === n) {
        if (n !== 0) this.hosts.set(host, { ...h, recount: 0 });
        continue;
      }
      this.cover('sweep:host-count-fixed');
      if (n === 0) this.hosts.delete(host);
      else this.hosts.set(host, { ...h, sessions: n, recount: 0, recheck_ns: 0n });
    }
    for (const [k] of this.flows.list()) {
      const fv = this.flows.get(k);
      if (!fv) continue;
      if (this.judge(k, fv, false).fate === 'live') continue;
      this.flowEnd(k, fv);
      this.cover('sweep:flow-entry-removed');
    }
  }

  /** Lose one flow entry (as a daemon killed halfway through removing a flow would): makes an orphan. */
  dropFlowEntry(k: PtFlowKey): void {
    this.flows.delete(k);
  }

  /** Live sessions now, for the generator. */
  liveSessions(): [PtSessionKey, PtSession][] {
    return this.sessions.list().filter(([k, s]) => {
      const r = this.rule(k.rule);
      return (r.flags & RULE_ENABLED) !== 0 && liveUntil(s.last_seen_ns, r.idle_timeout_ns, this.now);
    });
  }
}
