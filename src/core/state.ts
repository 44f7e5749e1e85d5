/**
 * porttrig's state in the kernel, as the domain sees it: rules programmed into
 * the tables, sessions and flows listed and swept. Works on the typed maps of
 * a loaded Datapath (or of pinned maps); never prints.
 */
import {
  CONFIG_LOCAL_ADDRS, WAN_L3, FAMILIES, PT_F_IPV4, PT_F_IPV6, PT6_LAN_NETS_MAX, PT6_LOCAL_ADDRS_MAX,
  CLOCK_BIAS_NS, DIR_IN, IPPROTO_TCP, PT_MAX_RULES, PT_PORT_SLOTS, RULE_CONFLICT_LAST, RULE_COUNTERS, RULE_ENABLED,
  RULE_KILL_FLOWS, RULE_PEER_CONTACTED, RuleNameCodec, SWEEP_FLOWS, SWEEP_FLOWS6, SWEEP_HOST6, SWEEP_RECOUNT, SWEEP_SESSIONS,
  SWEEP_SESSIONS6, familyIndex, portIndex, ruleStatsIndex,
  type Family, type Pt6Flow, type Pt6FlowKey, type Pt6SessionKey, type PtHost,
  type PtFlow, type PtFlowKey, type PtSweep, type PtPort, type PtRule, type PtSession, type PtSessionKey, type RuleCounter,
} from '../bpf/abi.js';
import type { Datapath, DatapathMaps } from '../bpf/datapath.js';
import type { TypedMap } from '../bpf/map.js';
import { canonicalIpv6 } from '../bpf/struct.js';
import { BpfError, PorttrigError } from '../errors.js';
import { BPF_EXIST, BPF_NOEXIST } from '../ffi/libbpf.js';
import type { CompiledRules } from '../rules/compile.js';
import { NO_PEER6, familyOf, inCidr, ipv6BigInt, ipv6Class, armingClass } from './addr.js';
import {
  flow6Host, flowFate6, flowKey6Id, flowKeyId, flowState, partnerKey, partnerKey6, planSweep, session6Id, session6KeyOfFlow,
  sessionExpired, sessionId, type FlowState,
} from './sweep.js';

const EEXIST = 17;
const ENOENT = 2;
/** A hash map that is full answers E2BIG to an insert. */
const E2BIG = 7;
/**
 * How often a manual open re-reads a session that the data path changed under
 * it before giving up; each round is a few syscalls, and a change needs a
 * packet to land in that window, so two in a row are already rare.
 */
const MANUAL_OPEN_ATTEMPTS = 5;
const NO_PEER = '0.0.0.0';

/** The data path's clock (pt_now()): CLOCK_MONOTONIC in ns plus CLOCK_BIAS_NS. */
export const monotonicNs = (): bigint => process.hrtime.bigint() + CLOCK_BIAS_NS;

/** A session as the CLI and API show it (SPEC 6; `family`: SPEC 9). */
export interface SessionView {
  rule: string;
  family: Family;
  host: string;
  peer: string | null;
  opened_at: string;
  last_seen: string;
  expires_in_s: number;
  flows: number;
}

export interface FlowView {
  rule: string;
  family: Family;
  proto: 'tcp' | 'udp';
  remote: string;
  remote_port: number;
  wan_port: number;
  host: string;
  host_port: number;
  state: FlowState;
  idle_s: number;
}

/** A LAN subnet as manual opens need it: where a host in it is reached. */
export interface LanSubnet {
  /** LAN interface the subnet is on (the session's redirect target). */
  interface: string;
  ifindex: number;
  /** Network in CIDR form, e.g. 10.77.0.0/24 or 2001:db8:1::/64. */
  cidr: string;
  /** The gateway's own address in it ('' for a prefix of lan_networks). */
  address: string;
}

/** `porttrig open RULE HOST [--peer ADDR] [--force]`. */
export interface OpenRequest { rule: string; host: string; peer?: string | null; force?: boolean }
export interface OpenResult {
  rule: string;
  family: Family;
  host: string;
  peer: string | null;
  /** opened: there was none (or an expired one); refreshed: the host held it; taken_over: another host did. */
  action: 'opened' | 'refreshed' | 'taken_over';
  previous_host: string | null;
  expires_in_s: number;
}
/** `porttrig close RULE HOST [--peer ADDR]`. */
export interface CloseRequest { rule: string; host: string; peer?: string | null }
export interface CloseResult {
  rule: string;
  family: Family;
  host: string;
  /** Peers of the sessions closed (null in peer mode any). */
  closed: (string | null)[];
  /** Flows removed with the session (kill_flows_on_expiry: true). */
  flows_removed: number;
  /** Flows left working (kill_flows_on_expiry: false). */
  flows_kept: number;
}

/** 10.1.2.3 -> its 32-bit value. */
function ipv4Int(a: string): number {
  return a.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

export interface SweepTally { sessionsExpired: number; sessionsClosed: number; flowsRemoved: number; hostCountsFixed: number }
/** Both families summed, and each on its own. */
export interface SweepResult extends SweepTally { ipv4: SweepTally; ipv6: SweepTally }

/** The tallies of one kernel sweep run, as the daemon logs them. */
export function sweepResult(r: PtSweep): SweepResult {
  const ipv4: SweepTally = { sessionsExpired: r.sessions_expired, sessionsClosed: r.sessions_closed, flowsRemoved: r.flow_entries_removed, hostCountsFixed: r.hosts_fixed };
  const ipv6: SweepTally = {
    sessionsExpired: r.sessions6_expired ?? 0, sessionsClosed: r.sessions6_closed ?? 0,
    flowsRemoved: r.flow6_entries_removed ?? 0, hostCountsFixed: r.hosts6_fixed ?? 0,
  };
  return {
    sessionsExpired: ipv4.sessionsExpired + ipv6.sessionsExpired, sessionsClosed: ipv4.sessionsClosed + ipv6.sessionsClosed,
    flowsRemoved: ipv4.flowsRemoved + ipv6.flowsRemoved, hostCountsFixed: ipv4.hostCountsFixed + ipv6.hostCountsFixed, ipv4, ipv6,
  };
}

/** Every table of both families: what the kernel sweep does by default. */
export const SWEEP_ALL = SWEEP_SESSIONS | SWEEP_FLOWS | SWEEP_RECOUNT | SWEEP_SESSIONS6 | SWEEP_FLOWS6;

/**
 * The session and host-count maps of one family, for the manual open and
 * close, which decide the same way for both (an IPv6 session value has the
 * fields of an IPv4 one, with an IPv6 host).
 */
interface FamilyState<K> {
  family: Family;
  sessions: TypedMap<K, PtSession>;
  hostSessions: TypedMap<string, PtHost>;
  /** Remove `host`'s expired sessions of this family (the kernel sweep) and set its count. */
  sweepHost(host: string): void;
}

/**
 * Rule names by id, for ids in use, from pt_rule_names in batches. Free ids
 * (an empty name) are skipped on their first byte instead of being copied and
 * decoded: this runs on every sweep and every scrape.
 */
export function readRuleNames(maps: Pick<DatapathMaps, 'ruleNames'>): Map<number, string> {
  const raw = maps.ruleNames.raw;
  const out = new Map<number, string>();
  for (const { keys, values, count } of raw.batches()) {
    for (let i = 0; i < count; i++) {
      const off = i * raw.valueBytes;
      if (values[off] === 0) continue;
      out.set(keys.readUInt32LE(i * raw.info.keySize), RuleNameCodec.parse(values, off).name);
    }
  }
  return out;
}

export class PorttrigState {
  /**
   * `kernel`: the data path whose sweep program removes expired state
   * (Datapath.sweep); without it, sweep() and a manual open at a host's
   * limit fail with E_STATE.
   */
  constructor(readonly maps: DatapathMaps, private readonly clock: () => bigint = monotonicNs,
    private readonly kernel: Pick<Datapath, 'sweep'> | null = null) {}

  /** Rule ids recorded in the pinned state, by name. */
  ruleIds(): Map<string, number> {
    return new Map([...readRuleNames(this.maps)].map(([i, n]) => [n, i]));
  }

  /** Rule names by id (the inverse of ruleIds). */
  ruleNames(): Map<number, string> {
    return readRuleNames(this.maps);
  }

  /** Rule settings by id, for ids in use. */
  ruleSettings(): Map<number, PtRule> {
    const names = this.ruleNames();
    const out = new Map<number, PtRule>();
    for (const [id, v] of this.maps.rules.entries()) if (names.has(id)) out.set(id, v);
    return out;
  }

  /**
   * Program compiled rules: rule settings and names for every id, then the
   * whole port table, each in one batch write. Ids no longer used are zeroed
   * (disabled), so their sessions stop matching at once.
   */
  applyRules(c: CompiledRules): void {
    const names = new Map([...c.ids].map(([n, i]) => [i, n]));
    // An id that passes to another rule (or is freed) starts its counters at 0:
    // a new rule must not inherit a removed rule's trigger hits or sessions.
    const before = this.ruleNames();
    const renamed: number[] = [];
    for (let id = 1; id < PT_MAX_RULES; id++) {
      if ((before.get(id) ?? '') !== (names.get(id) ?? '')) {
        for (let f = 0; f < FAMILIES.length; f++) {
          for (let k = 0; k < RULE_COUNTERS.length; k++) renamed.push(ruleStatsIndex(f, id, k));
        }
      }
    }
    const rules: [number, PtRule][] = [];
    const ruleNames: [number, { name: string }][] = [];
    for (let id = 0; id < PT_MAX_RULES; id++) {
      rules.push([id, c.rules.get(id) ?? { idle_timeout_ns: 0n, flags: 0 }]);
      ruleNames.push([id, { name: names.get(id) ?? '' }]);
    }
    // Order: names first, so that a sweep that runs concurrently already sees
    // a new rule's name; settings; then the table that makes packets match.
    this.maps.ruleStats.zero(renamed);
    this.maps.ruleNames.setMany(ruleNames);
    this.maps.rules.setMany(rules);
    const empty: PtPort = { trigger: [0, 0, 0, 0], open_rule: 0, open_lan_port: 0, lan_port_refs: 0 };
    const ports: [number, PtPort][] = [];
    for (let i = 0; i < PT_PORT_SLOTS; i++) ports.push([i, c.ports.get(i) ?? empty]);
    this.maps.ports.setMany(ports);
    // Flows live on open ports only: a flow whose WAN port went to another
    // rule, or whose translation changed, ends now (the data path already
    // stops forwarding it, pt_flow_judge()).
    const doomed: PtFlowKey[] = [];
    for (const [k, v] of this.maps.flows.entries()) {
      const inbound = k.dir === DIR_IN;
      const wanPort = inbound ? k.dport : v.nat_port;
      const lanPort = inbound ? v.nat_port : k.sport;
      const slot = c.ports.get(portIndex(k.proto === IPPROTO_TCP ? 'tcp' : 'udp', wanPort));
      if (!slot || slot.open_rule !== v.rule || slot.open_lan_port !== lanPort) doomed.push(k);
    }
    if (doomed.length > 0) this.maps.flows.deleteMany(doomed);
    const doomed6: Pt6FlowKey[] = [];
    for (const [k, v] of this.maps.flows6.entries()) {
      const inbound = k.dir === DIR_IN;
      const wanPort = inbound ? k.dport : v.nat_port;
      const lanPort = inbound ? v.nat_port : k.sport;
      const slot = c.ports.get(portIndex(k.proto === IPPROTO_TCP ? 'tcp' : 'udp', wanPort));
      if (!slot || slot.open_rule !== v.rule || slot.open_lan_port !== lanPort) doomed6.push(k);
    }
    if (doomed6.length > 0) this.maps.flows6.deleteMany(doomed6);
  }

  /** Point the data path at the WAN address (0.0.0.0: none) and set limits. */
  setRuntime(wanAddr: string, wanIfindex: number, sessionsPerHost: number): void {
    const cur = this.maps.config.get(0);
    if (!cur) throw new Error('pt_config has no entry 0');
    this.maps.config.set(0, { ...cur, wan_addr: wanAddr, wan_ifindex: wanIfindex, sessions_per_host: sessionsPerHost });
  }

  /**
   * Where outbound translated packets leave: the WAN interface's ifindex (0
   * while it does not exist: they are dropped) and whether it is a layer-3
   * device (bpf_redirect() rather than bpf_redirect_neigh()). One map write:
   * the data path sees the old or the new pair, never a mix.
   */
  setWanLink(wanIfindex: number, l3: boolean): void {
    const cur = this.maps.config.get(0);
    if (!cur) throw new Error('pt_config has no entry 0');
    this.maps.config.set(0, { ...cur, wan_ifindex: wanIfindex, wan_flags: l3 ? WAN_L3 : 0 });
  }

  /**
   * A LAN interface came back with a new ifindex: point the sessions and the
   * inbound flow entries (their redirect target) that named `from` at `to`;
   * the number of entries changed. Each entry is rewritten whole, so a
   * refresh the data path makes between the read and the write is lost (the
   * stamp goes back by at most the time between them, microseconds).
   */
  moveLanIfindex(from: number, to: number): number {
    let n = 0;
    // BPF_EXIST: an entry the data path removed meanwhile stays removed.
    const move = <K, V extends { ifindex: number }>(m: { set(k: K, v: V, f: number): void }, k: K, v: V): void => {
      try {
        m.set(k, { ...v, ifindex: to }, BPF_EXIST);
        n++;
      } catch (e) {
        if (!(e instanceof BpfError && e.errno === ENOENT)) throw e;
      }
    };
    for (const [k, v] of [...this.maps.sessions.entries()]) if (v.ifindex === from) move(this.maps.sessions, k, v);
    for (const [k, v] of [...this.maps.flows.entries()]) if (k.dir === DIR_IN && v.ifindex === from) move(this.maps.flows, k, v);
    for (const [k, v] of [...this.maps.sessions6.entries()]) if (v.ifindex === from) move(this.maps.sessions6, k, v);
    for (const [k, v] of [...this.maps.flows6.entries()]) if (k.dir === DIR_IN && v.ifindex === from) move(this.maps.flows6, k, v);
    return n;
  }

  /**
   * Remove every flow accepted on WAN address `addr`, both directions, in one
   * batch; the number of entries removed. For a WAN address that has been
   * replaced: peers can no longer reach it, and replies would leave with a
   * source address the gateway no longer owns (Linux MASQUERADE drops its
   * conntrack entries likewise).
   */
  dropFlowsOfWanAddr(addr: string): number {
    const keys = [...this.maps.flows.entries()]
      .filter(([k, v]) => (k.dir === DIR_IN ? k.daddr : v.nat_addr) === addr)
      .map(([k]) => k);
    return keys.length > 0 ? this.maps.flows.deleteMany(keys) : 0;
  }

  /**
   * Replace the set of the gateway's own addresses: pt_local_addrs, and the
   * copy in pt_config (up to CONFIG_LOCAL_ADDRS of them) that spares trigger
   * packets the hash lookup. While the hash map changes, pt_config says to
   * look there (local_addrs_all = 0), so a packet never misses an address.
   */
  setLocalAddrs(addrs: readonly string[]): void {
    const want = new Set(addrs);
    const cur = this.maps.config.get(0);
    if (!cur) throw new Error('pt_config has no entry 0');
    this.maps.config.set(0, { ...cur, local_addrs_all: 0 });
    for (const [a] of [...this.maps.localAddrs.entries()]) if (!want.has(a)) this.maps.localAddrs.delete(a);
    for (const a of want) this.maps.localAddrs.set(a, 1);
    const inline = [...want].filter((a) => a !== '0.0.0.0');
    this.maps.config.set(0, {
      ...cur,
      local_addrs: inline.slice(0, CONFIG_LOCAL_ADDRS),
      local_addrs_all: inline.length === want.size && inline.length <= CONFIG_LOCAL_ADDRS ? 1 : 0,
    });
  }

  /** Replace the set of LAN subnets (CIDR strings such as 192.168.1.0/24). */
  setLanNets(nets: readonly string[]): void {
    const want = new Map(nets.map((n) => {
      const [addr, len] = n.split('/');
      return [`${addr}/${len}`, { prefixlen: Number(len), addr: addr! }] as const;
    }));
    for (const [k] of [...this.maps.lanNets.entries()]) {
      if (!want.has(`${k.addr}/${k.prefixlen}`)) this.maps.lanNets.delete(k);
    }
    // The value is the prefix length: the data path tells a subnet's
    // broadcast address from its hosts with it.
    for (const k of want.values()) this.maps.lanNets.set(k, k.prefixlen);
  }

  /**
   * Replace the gateway's own IPv6 addresses (pt6_local_addrs): never
   * triggers, never pinhole targets. Added before the old ones go, so an
   * address that stays is never missing. Past the map's capacity the rest
   * are left out; returned so that the caller can say so.
   */
  setLocalAddrs6(addrs: readonly string[]): { written: number; dropped: string[] } {
    const want = [...new Set(addrs)];
    const kept = want.slice(0, PT6_LOCAL_ADDRS_MAX);
    const set = new Set(kept);
    for (const a of kept) this.maps.localAddrs6.set(a, 1);
    for (const [a] of [...this.maps.localAddrs6.entries()]) if (!set.has(a)) this.maps.localAddrs6.delete(a);
    return { written: kept.length, dropped: want.slice(PT6_LOCAL_ADDRS_MAX) };
  }

  /**
   * Replace the LAN's IPv6 prefixes (pt6_lan_nets, CIDR strings such as
   * 2001:db8:1::/64, host bits zero). New ones are added before old ones go.
   */
  setLanNets6(nets: readonly string[]): { written: number; dropped: string[] } {
    const all = new Map(nets.map((n) => {
      const [addr, len] = n.split('/');
      const k = { prefixlen: Number(len), addr: addr! };
      return [`${k.addr}/${k.prefixlen}`, k] as const;
    }));
    const keys = [...all.keys()];
    const want = new Map(keys.slice(0, PT6_LAN_NETS_MAX).map((id) => [id, all.get(id)!]));
    for (const k of want.values()) this.maps.lanNets6.set(k, k.prefixlen);
    for (const [k] of [...this.maps.lanNets6.entries()]) {
      if (!want.has(`${k.addr}/${k.prefixlen}`)) this.maps.lanNets6.delete(k);
    }
    return { written: want.size, dropped: keys.slice(PT6_LAN_NETS_MAX) };
  }

  /** Open sessions, live ones only, with their flow counts. */
  sessions(): SessionView[] {
    const now = this.clock();
    const wallNow = Date.now();
    const names = this.ruleNames();
    const rules = this.ruleSettings();
    const plan = planSweep(this.maps.sessions.entries(), this.maps.flows.entries(), rules, now);
    const gone = new Set(plan.sessions.map((s) => sessionId(s.key)));
    const out: SessionView[] = [];
    for (const [k, v] of this.maps.sessions.entries()) {
      const rule = rules.get(k.rule);
      if (!rule || gone.has(sessionId(k))) continue;
      const wall = (ns: bigint): string => new Date(wallNow - Number((now - ns) / 1_000_000n)).toISOString();
      const left = rule.idle_timeout_ns - (now - v.last_seen_ns);
      out.push({
        rule: names.get(k.rule) ?? `#${k.rule}`,
        family: 'ipv4',
        host: v.host,
        peer: rule.flags & RULE_PEER_CONTACTED ? k.peer : null,
        opened_at: wall(v.opened_ns),
        last_seen: wall(v.last_seen_ns),
        expires_in_s: Math.max(0, Math.round(Number(left / 1_000_000n)) / 1000),
        flows: plan.flowsPerSession.get(sessionId(k)) ?? 0,
      });
    }
    // IPv6: live sessions, flows counted as planSweep() counts them (a live
    // flow with both directions whose session is live and held by its host).
    const sessions6 = new Map([...this.maps.sessions6.entries()].map(([k, v]) => [session6Id(k), [k, v] as const]));
    const flows6 = new Map<string, number>();
    const entries6 = [...this.maps.flows6.entries()];
    const byId6 = new Map(entries6.map(([k, v]) => [flowKey6Id(k), v]));
    for (const [k, v] of entries6) {
      if (k.dir !== DIR_IN) continue;
      const sid = session6Id(session6KeyOfFlow(k, v));
      const partner = byId6.get(flowKey6Id(partnerKey6(k, v)));
      const sv = sessions6.get(sid)?.[1];
      if (partner && sv && sv.host === flow6Host(k) && flowFate6(k, v, partner, rules.get(v.rule), sv, now) === 'live') {
        flows6.set(sid, (flows6.get(sid) ?? 0) + 1);
      }
    }
    for (const [sid, [k, v]] of sessions6) {
      const rule = rules.get(k.rule);
      if (!rule || !(rule.flags & RULE_ENABLED) || sessionExpired(v, rule, now)) continue;
      const wall = (ns: bigint): string => new Date(wallNow - Number((now - ns) / 1_000_000n)).toISOString();
      const left = rule.idle_timeout_ns - (now - v.last_seen_ns);
      out.push({
        rule: names.get(k.rule) ?? `#${k.rule}`,
        family: 'ipv6',
        host: v.host,
        peer: rule.flags & RULE_PEER_CONTACTED ? k.peer : null,
        opened_at: wall(v.opened_ns),
        last_seen: wall(v.last_seen_ns),
        expires_in_s: Math.max(0, Math.round(Number(left / 1_000_000n)) / 1000),
        flows: flows6.get(sid) ?? 0,
      });
    }
    return out.sort((a, b) => a.rule.localeCompare(b.rule) || a.family.localeCompare(b.family) || compareAddr(a.host, b.host) ||
      compareAddr(a.peer ?? '', b.peer ?? ''));
  }

  /** Accepted flows, one row per flow (from its inbound entry). */
  flows(): FlowView[] {
    const now = this.clock();
    const names = this.ruleNames();
    const entries = [...this.maps.flows.entries()];
    const outEntries = new Map(entries.filter(([k]) => k.dir !== DIR_IN).map(([k, v]) => [flowKeyId(k), v]));
    const out: FlowView[] = [];
    for (const [k, v] of entries) {
      if (k.dir !== DIR_IN) continue;
      const partner = outEntries.get(flowKeyId(partnerKey(k, v)));
      out.push(flowView(k, v, partner, names, now));
    }
    const entries6 = [...this.maps.flows6.entries()];
    const out6 = new Map(entries6.filter(([k]) => k.dir !== DIR_IN).map(([k, v]) => [flowKey6Id(k), v]));
    for (const [k, v] of entries6) {
      if (k.dir !== DIR_IN) continue;
      out.push(flowView6(k, v, out6.get(flowKey6Id(partnerKey6(k, v))), names, now));
    }
    return out;
  }

  /**
   * Remove what has expired, in the kernel (Datapath.sweep(): the program
   * pt_sweep walks the maps with the data path's own decisions; nothing is
   * copied here). By default sessions, flows and the per-host recount, which
   * repairs any drift from races at expiry; `host` limits it to that host's
   * sessions (and sets its count). Blocks for the walk: the daemon's
   * periodic sweep runs it on a worker thread instead (SweepScheduler).
   */
  sweep(what = SWEEP_ALL, host?: string): SweepResult {
    if (!this.kernel) throw new PorttrigError('E_STATE', 'no kernel sweep: this state was made without its data path');
    if (host !== undefined && familyOf(host) === 'ipv6') {
      // One IPv6 host's sessions: PT_SWEEP_HOST6 (IPv4 and flow bits dropped: the walk is of that host only).
      const r = this.kernel.sweep({ now: this.clock(), what: SWEEP_SESSIONS6 | SWEEP_HOST6, host6: host });
      return sweepResult(r);
    }
    const r = this.kernel.sweep({ now: this.clock(), what, ...(host ? { host } : {}) });
    return sweepResult(r);
  }

  /** The manual open and close's view of one family's maps. */
  private fam4(): FamilyState<PtSessionKey> {
    return { family: 'ipv4', sessions: this.maps.sessions, hostSessions: this.maps.hostSessions, sweepHost: (h) => { this.sweep(SWEEP_SESSIONS, h); } };
  }

  private fam6(): FamilyState<Pt6SessionKey> {
    return { family: 'ipv6', sessions: this.maps.sessions6, hostSessions: this.maps.hostSessions6, sweepHost: (h) => { this.sweep(SWEEP_SESSIONS6 | SWEEP_HOST6, h); } };
  }

  /**
   * Open a session by hand for a LAN host (SPEC 4.7), as a trigger packet from
   * that host would, with the same limits:
   *  - a live session of another host is refused with E_CONFLICT under
   *    `conflict: first` unless `force`; under `conflict: last` it is taken
   *    over, like the data path does; flows already accepted stay with their host;
   *  - the host's sessions_per_host limit and a full map refuse with E_LIMIT;
   *  - a session the host already holds is refreshed (its idle timer restarts).
   * The host must be an IPv4 or IPv6 address inside a LAN subnet or prefix
   * (`lan`), not the gateway's own, nor an IPv4 subnet's network or broadcast
   * address, nor an IPv6 prefix's subnet-router anycast address, nor a
   * link-local, multicast or other IPv6 address that never arms (E_USAGE).
   * In peer mode `contacted` the remote peer (of the host's family) is
   * required; in mode `any` it is refused.
   *
   * IPv6 (SPEC 9): the session key is (rule, host, ::) in mode `any`, so
   * hosts never conflict there; (rule, ::, peer) with the owner in the value
   * in mode `contacted`, where `conflict` decides as in IPv4. The host's
   * count is in pt6_host_sessions (sessions_per_host holds per family).
   *
   * Atomicity: the session entry is replaced with lookup-and-delete, a check
   * that it is still the entry judged, then an insert with BPF_NOEXIST; if the
   * data path changed it in between, the old entry is put back (or the data
   * path's wins) and the decision is made again. For those microseconds a new
   * inbound connection of the rule is not forwarded. The per-host count is
   * read-modify-written (user space has no atomic add); a race with the data
   * path can make it drift by one until the next sweep recounts.
   */
  openSession(given: OpenRequest, lan: readonly LanSubnet[]): OpenResult {
    const req = { ...given, host: canonicalHost(given.host) };
    const { id, rule } = this.ruleByName(req.rule);
    if (!(rule.flags & RULE_ENABLED)) {
      throw new PorttrigError('E_USAGE', `rule "${req.rule}" is disabled in the configuration`, { rule: req.rule });
    }
    const family = hostFamily(req.host);
    const subnet = family === 'ipv4' ? checkLanHost(req.host, lan) : this.checkLanHost6(req.host, lan);
    const peer = checkPeer(req.rule, rule, req.peer, lan, true, family);
    if (family === 'ipv4') {
      return this.openIn(this.fam4(), { rule: id, peer: peer ?? NO_PEER }, id, rule, req, peer, subnet);
    }
    const key: Pt6SessionKey = peer !== null ? { rule: id, host: NO_PEER6, peer } : { rule: id, host: req.host, peer: NO_PEER6 };
    return this.openIn(this.fam6(), key, id, rule, req, peer, subnet);
  }

  private openIn<K>(fam: FamilyState<K>, key: K, id: number, rule: PtRule, req: OpenRequest, peer: string | null, subnet: LanSubnet): OpenResult {
    const limit = this.maps.config.get(0)?.sessions_per_host ?? 0;
    const result = (action: OpenResult['action'], previous: string | null): OpenResult => ({
      rule: req.rule, family: fam.family, host: req.host, peer, action, previous_host: previous,
      expires_in_s: Number(rule.idle_timeout_ns / 1_000_000n) / 1000,
    });

    for (let attempt = 0; attempt < MANUAL_OPEN_ATTEMPTS; attempt++) {
      const now = this.clock();
      const cur = fam.sessions.get(key);
      const live = cur !== undefined && !sessionExpired(cur, rule, now);
      if (cur && live && cur.host === req.host) {
        if (this.replaceSession(fam, key, cur, (taken) => ({ ...taken, last_seen_ns: now, ifindex: subnet.ifindex }))) {
          return result('refreshed', null);
        }
        continue;
      }
      if (cur && live && !(rule.flags & RULE_CONFLICT_LAST) && !req.force) {
        const left = Number((rule.idle_timeout_ns - (now - cur.last_seen_ns)) / 1_000_000_000n);
        throw new PorttrigError('E_CONFLICT',
          `session of rule "${req.rule}"${peer ? ` for peer ${peer}` : ''} is held by ${cur.host} for another ${left} s (conflict: first); use --force to take it over`,
          { rule: req.rule, holder: cur.host, peer });
      }
      // An expired entry the sweep has not removed yet is as good as absent
      // (SPEC 4.3); if it was this host's, the host still holds its slot.
      const keepSlot = cur !== undefined && !live && cur.host === req.host;
      if (!keepSlot) this.takeHostSlot(fam, req.host, limit);
      const fresh: PtSession = { opened_ns: now, last_seen_ns: now, host: req.host, ifindex: subnet.ifindex };
      const ok = cur ? this.replaceSession(fam, key, cur, () => fresh) : this.insertSession(fam, key, fresh);
      if (!ok) {
        if (!keepSlot) this.releaseHostSlot(fam, req.host);
        continue;
      }
      if (cur && cur.host !== req.host) this.releaseHostSlot(fam, cur.host);
      this.addCounter(id, 'sessions_opened', 1n, fam.family);
      return result(live ? 'taken_over' : 'opened', live ? cur!.host : null);
    }
    throw new PorttrigError('E_STATE', `session of rule "${req.rule}" kept changing under the manual open; try again`, { rule: req.rule });
  }

  /**
   * Close a host's session by hand (SPEC 4.7): the entry goes with an atomic
   * lookup-and-delete (put back if another host took it over meanwhile), the
   * host's session count is released, and its flows follow the rule's
   * kill_flows_on_expiry: removed at once, or left working on their own timers.
   * In peer mode `contacted` without `peer`, every session of the rule the host
   * holds is closed. A session that is absent, expired or held by another host
   * is E_NOT_FOUND; nothing changes then. An IPv6 host's sessions are the
   * IPv6 ones (pt6_sessions).
   */
  closeSession(given: CloseRequest): CloseResult {
    const req = { ...given, host: canonicalHost(given.host) };
    const { id, rule } = this.ruleByName(req.rule);
    const family = hostFamily(req.host);
    const peer = checkPeer(req.rule, rule, req.peer, [], false, family);
    const contacted = (rule.flags & RULE_PEER_CONTACTED) !== 0;
    if (family === 'ipv4') {
      const key = (): PtSessionKey => ({ rule: id, peer: peer ?? NO_PEER });
      const { closed, holder } = this.closeIn(this.fam4(), id, rule, req.host, contacted && peer === null, (k) => k.rule, key);
      this.notClosed(req, peer, closed.length, holder);
      const ended = new Set(closed.map(sessionId));
      const doomed: PtFlowKey[] = [];
      let kept = 0;
      for (const [k, v] of [...this.maps.flows.entries()]) {
        if (k.dir !== DIR_IN || v.nat_addr !== req.host || !ended.has(sessionId({ rule: v.rule, peer: v.sess_peer }))) continue;
        if (rule.flags & RULE_KILL_FLOWS) doomed.push(k, partnerKey(k, v));
        else kept++;
      }
      const removed = doomed.length > 0 ? this.maps.flows.deleteMany(doomed) : 0;
      return {
        rule: req.rule, family, host: req.host, closed: closed.map((k) => (contacted ? k.peer : null)),
        flows_removed: Math.ceil(removed / 2), flows_kept: kept,
      };
    }
    const key = (): Pt6SessionKey => (peer !== null ? { rule: id, host: NO_PEER6, peer } : { rule: id, host: req.host, peer: NO_PEER6 });
    const { closed, holder } = this.closeIn(this.fam6(), id, rule, req.host, contacted && peer === null, (k) => k.rule, key);
    this.notClosed(req, peer, closed.length, holder);
    const ended = new Set(closed.map(session6Id));
    const doomed: Pt6FlowKey[] = [];
    let kept = 0;
    for (const [k, v] of [...this.maps.flows6.entries()]) {
      if (k.dir !== DIR_IN || k.daddr !== req.host || !ended.has(session6Id(session6KeyOfFlow(k, v)))) continue;
      if (rule.flags & RULE_KILL_FLOWS) doomed.push(k, partnerKey6(k, v));
      else kept++;
    }
    const removed = doomed.length > 0 ? this.maps.flows6.deleteMany(doomed) : 0;
    return {
      rule: req.rule, family, host: req.host, closed: closed.map((k) => (contacted ? k.peer : null)),
      flows_removed: Math.ceil(removed / 2), flows_kept: kept,
    };
  }

  /**
   * The sessions of `host` to close, taken out of one family's map: all of
   * the rule's that the host holds (`allOfHost`: mode contacted without a
   * peer), else the one at `key()`. Expired ones and other hosts' stay.
   */
  private closeIn<K>(fam: FamilyState<K>, id: number, rule: PtRule, host: string, allOfHost: boolean,
    ruleOf: (k: K) => number, key: () => K): { closed: K[]; holder: string | null } {
    const now = this.clock();
    const candidates: [K, PtSession][] = [];
    if (allOfHost) {
      for (const [k, v] of fam.sessions.entries()) if (ruleOf(k) === id && v.host === host) candidates.push([k, v]);
    } else {
      const k = key();
      const v = fam.sessions.get(k);
      if (v) candidates.push([k, v]);
    }
    const closed: K[] = [];
    let holder: string | null = null;
    for (const [k, v] of candidates) {
      if (sessionExpired(v, rule, now)) continue;
      if (v.host !== host) { holder = v.host; continue; }
      const taken = fam.sessions.take(k);
      if (!taken) continue;
      if (taken.host !== host) { this.putBack(fam, k, taken); holder = taken.host; continue; }
      this.releaseHostSlot(fam, host);
      closed.push(k);
    }
    return { closed, holder };
  }

  /** E_NOT_FOUND when a close found nothing of the host's to close. */
  private notClosed(req: CloseRequest, peer: string | null, closed: number, holder: string | null): void {
    if (closed > 0) return;
    const what = `rule "${req.rule}"${peer ? ` and peer ${peer}` : ''}`;
    throw new PorttrigError('E_NOT_FOUND', holder
      ? `the session of ${what} is held by ${holder}, not ${req.host}`
      : `${req.host} holds no open session of ${what}`, { rule: req.rule, host: req.host, peer, holder });
  }

  /** Rule id and settings by name; E_NOT_FOUND naming the known rules. */
  private ruleByName(name: string): { id: number; rule: PtRule } {
    const id = this.ruleIds().get(name);
    const rule = id === undefined ? undefined : this.maps.rules.get(id);
    if (id === undefined || !rule) {
      const known = [...this.ruleIds().keys()].sort();
      throw new PorttrigError('E_NOT_FOUND', `no rule named "${name}" (rules: ${known.join(', ') || 'none'})`, { rule: name, known });
    }
    return { id, rule };
  }

  /**
   * The LAN prefix an IPv6 `host` is a usable host address of (SPEC 9), or
   * E_USAGE saying why not: global or unique-local, inside a LAN prefix, not
   * one of the gateway's own addresses (pt6_local_addrs, and the subnet's),
   * not the prefix's subnet-router anycast address (host bits zero).
   */
  private checkLanHost6(host: string, lan: readonly LanSubnet[]): LanSubnet {
    const cls = ipv6Class(host);
    if (!armingClass(cls)) {
      throw new PorttrigError('E_USAGE', `host ${host} is a ${cls} IPv6 address; only global and unique-local LAN addresses hold sessions`, { host });
    }
    const v6 = lan.filter((s) => familyOf(s.cidr.split('/')[0]!) === 'ipv6');
    const subnet = v6.find((s) => inCidr(host, s.cidr));
    if (!subnet) {
      const nets = v6.map((s) => `${s.cidr} on ${s.interface}`).join(', ') || 'none: the LAN interfaces have no global or unique-local IPv6 address';
      throw new PorttrigError('E_USAGE', `host ${host} is not inside a LAN prefix (LAN IPv6 prefixes: ${nets})`, { host, lan: v6.map((s) => s.cidr) });
    }
    if (host === subnet.address || v6.some((s) => s.address === host) || this.maps.localAddrs6.get(host) !== undefined) {
      throw new PorttrigError('E_USAGE', `host ${host} is one of the gateway's own addresses`, { host });
    }
    const [net, lenS] = subnet.cidr.split('/');
    const SUBNET_ROUTER_MAX_PREFIX = 126;  // RFC 6164: /127 has no subnet-router anycast address
    if (Number(lenS) <= SUBNET_ROUTER_MAX_PREFIX && ipv6BigInt(host) === ipv6BigInt(net!)) {
      throw new PorttrigError('E_USAGE', `host ${host} is the subnet-router anycast address of ${subnet.cidr}`, { host });
    }
    return subnet;
  }

  /** Insert a session that must not exist; false if the data path made one first. */
  private insertSession<K>(fam: FamilyState<K>, key: K, value: PtSession): boolean {
    try {
      fam.sessions.set(key, value, BPF_NOEXIST);
      return true;
    } catch (e) {
      if (e instanceof BpfError && e.errno === EEXIST) return false;
      if (e instanceof BpfError && e.errno === E2BIG) {
        const map = fam.family === 'ipv6' ? 'sessions6' : 'sessions';
        throw new PorttrigError('E_LIMIT', `the ${fam.family === 'ipv6' ? 'IPv6 ' : ''}session map is full (limits.sessions = ${fam.sessions.raw.info.maxEntries})`, { map });
      }
      throw e;
    }
  }

  /**
   * Replace the entry judged as `expected` (same owner, same opening) with
   * `next(taken)`. False when the entry changed or vanished meanwhile; then
   * the data path's version stays.
   */
  private replaceSession<K>(fam: FamilyState<K>, key: K, expected: PtSession, next: (taken: PtSession) => PtSession): boolean {
    const taken = fam.sessions.take(key);
    if (!taken) return false;
    if (taken.host !== expected.host || taken.opened_ns !== expected.opened_ns) {
      this.putBack(fam, key, taken);
      return false;
    }
    return this.insertSession(fam, key, next(taken));
  }

  /**
   * Count one more session for `host`, refusing past `limit` (the data path's
   * pt_host_take). Expired sessions do not count (SPEC 4.6): a host at its
   * limit gets a sweep (which removes them and recounts) before it is refused.
   */
  private takeHostSlot<K>(fam: FamilyState<K>, host: string, limit: number): void {
    let swept = false;
    for (let attempt = 0; attempt < MANUAL_OPEN_ATTEMPTS; attempt++) {
      const n = fam.hostSessions.get(host)?.sessions ?? 0;
      if (n >= limit && !swept) {
        fam.sweepHost(host);
        swept = true;
        continue;
      }
      if (n >= limit) {
        throw new PorttrigError('E_LIMIT', `${host} holds ${n} ${fam.family === 'ipv6' ? 'IPv6 ' : ''}sessions; limits.sessions_per_host is ${limit}`, { host, sessions: n, limit });
      }
      try {
        fam.hostSessions.set(host, { sessions: n + 1, recheck_ns: 0n }, n === 0 ? BPF_NOEXIST : BPF_EXIST);
        return;
      } catch (e) {
        if (!(e instanceof BpfError)) throw e;
        if (e.errno === E2BIG) {
          throw new PorttrigError('E_LIMIT', 'the per-host session count map is full', { map: fam.family === 'ipv6' ? 'host_sessions6' : 'host_sessions' });
        }
        if (e.errno !== EEXIST && e.errno !== ENOENT) throw e;
        // The data path inserted or removed the entry meanwhile: read again.
      }
    }
    throw new PorttrigError('E_STATE', `session count of ${host} kept changing; try again`, { host });
  }

  /** Count one session less for `host`; the entry goes at zero (pt_host_release). */
  private releaseHostSlot<K>(fam: FamilyState<K>, host: string): void {
    const h = fam.hostSessions.get(host);
    if (h === undefined) return;
    if (h.sessions <= 1) fam.hostSessions.delete(host);
    else fam.hostSessions.set(host, { ...h, sessions: h.sessions - 1 }, BPF_EXIST);
  }

  private putBack<K>(fam: FamilyState<K>, key: K, value: PtSession): void {
    try {
      fam.sessions.set(key, value, BPF_NOEXIST);  // the data path may have re-created it
    } catch {
      // The data path opened the session again meanwhile; its value wins.
    }
  }

  /** Per-rule counter summed over CPUs: of one family, or of both when `family` is not given. */
  counter(rule: number, c: RuleCounter, family?: Family): bigint {
    const k = RULE_COUNTERS.indexOf(c);
    if (family) return this.maps.ruleStats.sum(ruleStatsIndex(familyIndex(family), rule, k));
    return this.maps.ruleStats.sum(ruleStatsIndex(PT_F_IPV4, rule, k)) + this.maps.ruleStats.sum(ruleStatsIndex(PT_F_IPV6, rule, k));
  }

  private addCounter(rule: number, c: RuleCounter, delta: bigint, family: Family): void {
    this.maps.ruleStats.add(ruleStatsIndex(familyIndex(family), rule, RULE_COUNTERS.indexOf(c)), delta);
  }
}

/** An IPv6 address in canonical text (node:net's form); the text as it is otherwise. */
function canonical6(a: string): string {
  return canonicalIpv6(a) ?? a;
}

/** A host argument in canonical text, or E_USAGE when it is no address. */
function canonicalHost(host: string): string {
  return hostFamily(host) === 'ipv6' ? canonical6(host) : host;
}

/** The family of a host argument, or E_USAGE. */
function hostFamily(host: string): Family {
  const f = familyOf(host);
  if (f === null) throw new PorttrigError('E_USAGE', `host "${host}" is not an IPv4 or IPv6 address`, { host });
  return f;
}

/** Order of addresses: IPv4 before IPv6, then numerically. */
export function compareAddr(a: string, b: string): number {
  const fa = familyOf(a);
  const fb = familyOf(b);
  if (fa !== fb) return fa === 'ipv4' ? -1 : 1;
  if (fa === 'ipv4') return ipv4Int(a) - ipv4Int(b);
  if (fa === 'ipv6') {
    const x = ipv6BigInt(a);
    const y = ipv6BigInt(b);
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return a.localeCompare(b);
}

/** The LAN subnet `host` is a usable host address of, or E_USAGE saying why not. */
function checkLanHost(host: string, lan: readonly LanSubnet[]): LanSubnet {
  const subnet = lan.find((s) => inCidr(host, s.cidr));
  if (!subnet) {
    const v4 = lan.filter((s) => familyOf(s.cidr.split('/')[0]!) === 'ipv4');
    const nets = v4.map((s) => `${s.cidr} on ${s.interface}`).join(', ') || 'none: the LAN interfaces have no IPv4 address';
    throw new PorttrigError('E_USAGE', `host ${host} is not inside a LAN subnet (LAN subnets: ${nets})`, { host, lan: v4.map((s) => s.cidr) });
  }
  if (host === subnet.address) throw new PorttrigError('E_USAGE', `host ${host} is the gateway's own address on ${subnet.interface}`, { host });
  const [net, lenS] = subnet.cidr.split('/');
  const len = Number(lenS);
  const POINT_TO_POINT_PREFIX = 31;  // RFC 3021: /31 and /32 have no network or broadcast address
  if (len < POINT_TO_POINT_PREFIX) {
    const first = ipv4Int(net!);
    const last = first + 2 ** (32 - len) - 1;
    const h = ipv4Int(host);
    if (h === first || h === last) {
      throw new PorttrigError('E_USAGE', `host ${host} is the ${h === first ? 'network' : 'broadcast'} address of ${subnet.cidr}`, { host });
    }
  }
  return subnet;
}

/**
 * The peer argument against the rule's peer mode: required to open in mode
 * `contacted` (`required`), refused in mode `any`; an address of the host's
 * family outside the LAN (an IPv6 peer: not ::, loopback, link-local or
 * multicast). Returned in canonical form.
 */
function checkPeer(name: string, rule: PtRule, peer: string | null | undefined, lan: readonly LanSubnet[], required: boolean, family: Family): string | null {
  const contacted = (rule.flags & RULE_PEER_CONTACTED) !== 0;
  if (peer === undefined || peer === null) {
    if (contacted && required) {
      throw new PorttrigError('E_USAGE', `rule "${name}" has peer: contacted; say which remote peer may connect with --peer ADDR`, { rule: name });
    }
    return null;
  }
  if (!contacted) throw new PorttrigError('E_USAGE', `rule "${name}" has peer: any; --peer applies to peer: contacted rules only`, { rule: name });
  const pf = familyOf(peer);
  if (family === 'ipv4') {
    if (pf !== 'ipv4' || peer === NO_PEER) throw new PorttrigError('E_USAGE', `peer "${peer}" is not an IPv4 address (the host is IPv4)`, { peer });
  } else {
    if (pf !== 'ipv6') throw new PorttrigError('E_USAGE', `peer "${peer}" is not an IPv6 address (the host is IPv6)`, { peer });
    const cls = ipv6Class(peer);
    if (cls !== 'global' && cls !== 'unique-local') {
      throw new PorttrigError('E_USAGE', `peer ${peer} is a ${cls} IPv6 address; a remote peer is global or unique-local`, { peer });
    }
    peer = canonical6(peer);
  }
  const inLan = lan.find((s) => inCidr(peer!, s.cidr));
  if (inLan) throw new PorttrigError('E_USAGE', `peer ${peer} is inside the LAN subnet ${inLan.cidr}; the peer is the remote host`, { peer });
  return peer;
}

/** A flow as `porttrig flows` shows it, from its inbound entry and the other one (if any). */
export function flowView(k: PtFlowKey, v: PtFlow, partner: PtFlow | undefined, names: ReadonlyMap<number, string>, now: bigint): FlowView {
  const last = partner && partner.last_seen_ns > v.last_seen_ns ? partner.last_seen_ns : v.last_seen_ns;
  return {
    rule: names.get(v.rule) ?? `#${v.rule}`,
    family: 'ipv4',
    proto: k.proto === IPPROTO_TCP ? 'tcp' : 'udp',
    remote: k.saddr, remote_port: k.sport, wan_port: k.dport,
    host: v.nat_addr, host_port: v.nat_port,
    state: flowState(k.proto, v.seen, partner?.seen ?? 0),
    idle_s: Math.round(Number((now - last) / 1_000_000n)) / 1000,
  };
}

/**
 * An IPv6 flow as `porttrig flows` shows it, from its inbound entry: the
 * host is the inbound destination itself (no address translation); wan_port
 * the open port it arrived on, host_port the LAN port it went to.
 */
export function flowView6(k: Pt6FlowKey, v: Pt6Flow, partner: Pt6Flow | undefined, names: ReadonlyMap<number, string>, now: bigint): FlowView {
  const last = partner && partner.last_seen_ns > v.last_seen_ns ? partner.last_seen_ns : v.last_seen_ns;
  return {
    rule: names.get(v.rule) ?? `#${v.rule}`,
    family: 'ipv6',
    proto: k.proto === IPPROTO_TCP ? 'tcp' : 'udp',
    remote: k.saddr, remote_port: k.sport, wan_port: k.dport,
    host: k.daddr, host_port: v.nat_port,
    state: flowState(k.proto, v.seen, partner?.seen ?? 0),
    idle_s: Math.round(Number((now - last) / 1_000_000n)) / 1000,
  };
}
