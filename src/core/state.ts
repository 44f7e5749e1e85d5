/**
 * porttrig's state in the kernel, as the domain sees it: rules programmed into
 * the tables, sessions and flows listed and swept. Works on the typed maps of
 * a loaded Datapath (or of pinned maps); never prints.
 */
import {
  CLOCK_BIAS_NS, DIR_IN, IPPROTO_TCP, PT_MAX_RULES, PT_PORT_SLOTS, RULE_COUNTERS, RULE_PEER_CONTACTED,
  type PtPort, type PtRule, type PtSession, type PtSessionKey, type RuleCounter,
} from '../bpf/abi.js';
import type { DatapathMaps } from '../bpf/datapath.js';
import { BPF_NOEXIST } from '../ffi/libbpf.js';
import type { CompiledRules } from '../rules/compile.js';
import { flowKeyId, flowState, partnerKey, planSweep, sessionId, type FlowState } from './sweep.js';

/** The data path's clock (pt_now()): CLOCK_MONOTONIC in ns plus CLOCK_BIAS_NS. */
export const monotonicNs = (): bigint => process.hrtime.bigint() + CLOCK_BIAS_NS;

/** A session as the CLI and API show it (SPEC 6). */
export interface SessionView {
  rule: string;
  host: string;
  peer: string | null;
  opened_at: string;
  last_seen: string;
  expires_in_s: number;
  flows: number;
}

export interface FlowView {
  rule: string;
  proto: 'tcp' | 'udp';
  remote: string;
  remote_port: number;
  wan_port: number;
  host: string;
  host_port: number;
  state: FlowState;
  idle_s: number;
}

export interface SweepResult { sessionsExpired: number; sessionsClosed: number; flowsRemoved: number; hostCountsFixed: number }

export class PorttrigState {
  constructor(readonly maps: DatapathMaps, private readonly clock: () => bigint = monotonicNs) {}

  /** Rule ids recorded in the pinned state, by name. */
  ruleIds(): Map<string, number> {
    const ids = new Map<string, number>();
    for (const [id, v] of this.maps.ruleNames.entries()) if (v.name) ids.set(v.name, id);
    return ids;
  }

  /** Rule names by id (the inverse of ruleIds). */
  ruleNames(): Map<number, string> {
    return new Map([...this.ruleIds()].map(([n, i]) => [i, n]));
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
    const rules: [number, PtRule][] = [];
    const ruleNames: [number, { name: string }][] = [];
    for (let id = 0; id < PT_MAX_RULES; id++) {
      rules.push([id, c.rules.get(id) ?? { idle_timeout_ns: 0n, flags: 0 }]);
      ruleNames.push([id, { name: names.get(id) ?? '' }]);
    }
    // Order: names first, so that a sweep that runs concurrently already sees
    // a new rule's name; settings; then the table that makes packets match.
    this.maps.ruleNames.setMany(ruleNames);
    this.maps.rules.setMany(rules);
    const empty: PtPort = { trigger: [0, 0, 0, 0], open_rule: 0, open_lan_port: 0, lan_port_refs: 0 };
    const ports: [number, PtPort][] = [];
    for (let i = 0; i < PT_PORT_SLOTS; i++) ports.push([i, c.ports.get(i) ?? empty]);
    this.maps.ports.setMany(ports);
  }

  /** Point the data path at the WAN address (0.0.0.0: none) and set limits. */
  setRuntime(wanAddr: string, wanIfindex: number, sessionsPerHost: number): void {
    const cur = this.maps.config.get(0);
    if (!cur) throw new Error('pt_config has no entry 0');
    this.maps.config.set(0, { ...cur, wan_addr: wanAddr, wan_ifindex: wanIfindex, sessions_per_host: sessionsPerHost });
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

  /** Replace the set of the gateway's own addresses. */
  setLocalAddrs(addrs: readonly string[]): void {
    const want = new Set(addrs);
    for (const [a] of [...this.maps.localAddrs.entries()]) if (!want.has(a)) this.maps.localAddrs.delete(a);
    for (const a of want) this.maps.localAddrs.set(a, 1);
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
    for (const k of want.values()) this.maps.lanNets.set(k, 1);
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
        host: v.host,
        peer: rule.flags & RULE_PEER_CONTACTED ? k.peer : null,
        opened_at: wall(v.opened_ns),
        last_seen: wall(v.last_seen_ns),
        expires_in_s: Math.max(0, Math.round(Number(left / 1_000_000n)) / 1000),
        flows: plan.flowsPerSession.get(sessionId(k)) ?? 0,
      });
    }
    return out.sort((a, b) => a.rule.localeCompare(b.rule) || a.host.localeCompare(b.host));
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
      const last = partner && partner.last_seen_ns > v.last_seen_ns ? partner.last_seen_ns : v.last_seen_ns;
      out.push({
        rule: names.get(v.rule) ?? `#${v.rule}`,
        proto: k.proto === IPPROTO_TCP ? 'tcp' : 'udp',
        remote: k.saddr, remote_port: k.sport, wan_port: k.dport,
        host: v.nat_addr, host_port: v.nat_port,
        state: flowState(k.proto, v.seen, partner?.seen ?? 0),
        idle_s: Math.round(Number((now - last) / 1_000_000n)) / 1000,
      });
    }
    return out;
  }

  /**
   * Remove what has expired. Sessions go one by one with an atomic
   * lookup-and-delete: one that the data path refreshed since it was judged
   * is put back. Flows go in one batch. Per-host counts are then set to the
   * recount, repairing any drift from races at expiry.
   */
  sweep(): SweepResult {
    const now = this.clock();
    const rules = this.ruleSettings();
    const plan = planSweep(this.maps.sessions.entries(), this.maps.flows.entries(), rules, now);
    const res: SweepResult = { sessionsExpired: 0, sessionsClosed: 0, flowsRemoved: 0, hostCountsFixed: 0 };
    for (const { key, value, reason } of plan.sessions) {
      const taken = this.maps.sessions.take(key);
      if (!taken) continue;
      if (taken.last_seen_ns !== value.last_seen_ns || taken.host !== value.host) {
        this.putBack(key, taken);
        continue;
      }
      if (reason === 'expired') {
        res.sessionsExpired++;
        this.addCounter(key.rule, 'sessions_expired', 1n);
      } else {
        res.sessionsClosed++;
      }
    }
    if (plan.flows.length > 0) res.flowsRemoved = this.maps.flows.deleteMany(plan.flows);

    const counts = new Map(plan.hostCounts);
    for (const [host, n] of [...this.maps.hostSessions.entries()]) {
      const want = counts.get(host) ?? 0;
      counts.delete(host);
      if (want === 0) { this.maps.hostSessions.delete(host); res.hostCountsFixed += n !== 0 ? 1 : 0; }
      else if (want !== n) { this.maps.hostSessions.set(host, want); res.hostCountsFixed++; }
    }
    for (const [host, n] of counts) { this.maps.hostSessions.set(host, n); res.hostCountsFixed++; }
    return res;
  }

  private putBack(key: PtSessionKey, value: PtSession): void {
    try {
      this.maps.sessions.set(key, value, BPF_NOEXIST);  // the data path may have re-created it
    } catch {
      // The data path opened the session again meanwhile; its value wins.
    }
  }

  /** Per-rule counter summed over CPUs. */
  counter(rule: number, c: RuleCounter): bigint {
    return this.maps.ruleStats.sum(rule * RULE_COUNTERS.length + RULE_COUNTERS.indexOf(c));
  }

  private addCounter(rule: number, c: RuleCounter, delta: bigint): void {
    this.maps.ruleStats.add(rule * RULE_COUNTERS.length + RULE_COUNTERS.indexOf(c), delta);
  }
}
