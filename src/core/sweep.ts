/**
 * Expiry decisions for sessions and flows (SPEC 4.3, 5). Pure: it sees
 * snapshots of the maps and a clock value, and says what to remove.
 */
import {
  DIR_IN, DIR_OUT, FLOW_ORPHAN_NS, FLOW_TIMEOUT_TCP_EST_NS, FLOW_TIMEOUT_TCP_TRANS_NS, FLOW_TIMEOUT_UDP_NS, IPPROTO_TCP,
  FLOW6_CONTACTED, RULE_ENABLED, RULE_KILL_FLOWS, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN,
  type Pt6Flow, type Pt6FlowKey, type Pt6Session, type Pt6SessionKey,
  type PtFlow, type PtFlowKey, type PtRule, type PtSession, type PtSessionKey,
} from '../bpf/abi.js';

/** A flow entry whose partner direction is missing is removed after this long (PT_FLOW_ORPHAN_NS). */
export const ORPHAN_FLOW_NS = FLOW_ORPHAN_NS;

export interface SweepPlan {
  /** Sessions to remove, with the value they were judged on. */
  sessions: { key: PtSessionKey; value: PtSession; reason: 'expired' | 'rule_gone' }[];
  /** Flow entries to remove (both directions of each flow). */
  flows: PtFlowKey[];
  /** Live sessions per LAN host after the sweep. */
  hostCounts: Map<string, number>;
  /** Flows per live session, by sessionId(). */
  flowsPerSession: Map<string, number>;
}

/** Stable string id of a session key. */
export function sessionId(k: { rule: number; peer: string }): string {
  return `${k.rule}/${k.peer}`;
}

/** Has `s` been idle longer than its rule allows? (the data path's own test) */
export function sessionExpired(s: Pick<PtSession, 'last_seen_ns'>, rule: Pick<PtRule, 'idle_timeout_ns'>, now: bigint): boolean {
  return now - s.last_seen_ns > rule.idle_timeout_ns;
}

/** The other direction's key of a flow entry. */
export function partnerKey(k: PtFlowKey, v: PtFlow): PtFlowKey {
  return k.dir === DIR_IN
    ? { saddr: v.nat_addr, daddr: k.saddr, sport: v.nat_port, dport: k.sport, proto: k.proto, dir: DIR_OUT }
    : { saddr: k.daddr, daddr: v.nat_addr, sport: k.dport, dport: v.nat_port, proto: k.proto, dir: DIR_IN };
}

export function flowKeyId(k: PtFlowKey): string {
  return `${k.dir}:${k.proto}:${k.saddr}:${k.sport}>${k.daddr}:${k.dport}`;
}

export type FlowState = 'udp' | 'tcp_transitory' | 'tcp_established' | 'tcp_closing';

/** TCP state from the flags seen in each direction (RFC 5382 timers). */
export function flowState(proto: number, inSeen: number, outSeen: number): FlowState {
  if (proto !== IPPROTO_TCP) return 'udp';
  if ((inSeen | outSeen) & (SEEN_FIN | SEEN_RST)) return 'tcp_closing';
  if (outSeen & SEEN_SYN && inSeen & SEEN_ACK) return 'tcp_established';
  return 'tcp_transitory';
}

export function flowTimeoutNs(state: FlowState): bigint {
  switch (state) {
    case 'udp': return FLOW_TIMEOUT_UDP_NS;
    case 'tcp_established': return FLOW_TIMEOUT_TCP_EST_NS;
    default: return FLOW_TIMEOUT_TCP_TRANS_NS;
  }
}

/** What becomes of a flow: it stays, or it is over for one of three reasons. */
export type FlowFate = 'live' | 'expired' | 'orphan' | 'killed';

/**
 * The fate of the flow of entry (`k`, `v`), given its other direction's entry
 * (`partner`, undefined if missing), its rule and the raw session entry of
 * (v.rule, v.sess_peer), at `now`. The data path makes the same decision on
 * every packet (pt_flow_fate() in bpf/porttrig.bpf.c; test/bpf/datapath.test.ts
 * compares the two on a table), so a flow stops forwarding at once whether or
 * not a daemon runs, and the sweeper removes exactly what the data path no
 * longer uses. Symmetric: either entry of a pair gives the same answer.
 *  - killed: the rule is gone or disabled (a reload closed its ports), or it
 *    says kill_flows_on_expiry and the flow's session is not live and held by
 *    the flow's LAN host (expired, gone, taken over);
 *  - orphan: the other direction's entry is missing and this one has been
 *    idle longer than FLOW_ORPHAN_NS;
 *  - expired: idle (both directions) past its RFC 4787/5382 timer.
 */
export function flowFate(
  k: PtFlowKey, v: PtFlow, partner: PtFlow | undefined,
  rule: PtRule | undefined, session: PtSession | undefined, now: bigint,
): FlowFate {
  return fateOf(k.dir === DIR_IN ? v.nat_addr : k.saddr, k, v, partner, rule, session, now);
}

/** flowFate() of either family: `host` is the flow's LAN host. */
function fateOf(
  host: string, k: { dir: number; proto: number }, v: { last_seen_ns: bigint; seen: number },
  partner: { last_seen_ns: bigint; seen: number } | undefined,
  rule: PtRule | undefined, session: { host: string; last_seen_ns: bigint } | undefined, now: bigint,
): FlowFate {
  if (!rule || !(rule.flags & RULE_ENABLED)) return 'killed';
  const owned = !!session && session.host === host && !sessionExpired(session, rule, now);
  if ((rule.flags & RULE_KILL_FLOWS) !== 0 && !owned) return 'killed';
  if (!partner) return now - v.last_seen_ns > FLOW_ORPHAN_NS ? 'orphan' : 'live';
  const [inV, outV] = k.dir === DIR_IN ? [v, partner] : [partner, v];
  const last = v.last_seen_ns > partner.last_seen_ns ? v.last_seen_ns : partner.last_seen_ns;
  return now - last > flowTimeoutNs(flowState(k.proto, inV.seen, outV.seen)) ? 'expired' : 'live';
}

/**
 * Decide what a sweep removes: sessions idle past their rule's timeout or
 * whose rule is gone or disabled; flows past their timer, orphaned flow
 * entries, flows of rules gone or disabled, and flows of ended sessions whose
 * rule says kill_flows_on_expiry.
 */
export function planSweep(
  sessions: Iterable<[PtSessionKey, PtSession]>,
  flows: Iterable<[PtFlowKey, PtFlow]>,
  rules: ReadonlyMap<number, PtRule>,
  now: bigint,
): SweepPlan {
  const plan: SweepPlan = { sessions: [], flows: [], hostCounts: new Map(), flowsPerSession: new Map() };
  const all = new Map<string, PtSession>();
  const live = new Map<string, PtSession>();
  for (const [key, value] of sessions) {
    all.set(sessionId(key), value);
    const rule = rules.get(key.rule);
    if (!rule || !(rule.flags & RULE_ENABLED)) plan.sessions.push({ key, value, reason: 'rule_gone' });
    else if (sessionExpired(value, rule, now)) plan.sessions.push({ key, value, reason: 'expired' });
    else {
      live.set(sessionId(key), value);
      plan.hostCounts.set(value.host, (plan.hostCounts.get(value.host) ?? 0) + 1);
    }
  }

  const byId = new Map<string, [PtFlowKey, PtFlow]>();
  for (const [k, v] of flows) byId.set(flowKeyId(k), [k, v]);
  const done = new Set<string>();
  for (const [id, [k, v]] of byId) {
    if (done.has(id)) continue;
    done.add(id);
    const pk = partnerKey(k, v);
    const pid = flowKeyId(pk);
    const partner = byId.get(pid);
    done.add(pid);
    const sid = sessionId({ rule: v.rule, peer: v.sess_peer });
    if (flowFate(k, v, partner?.[1], rules.get(v.rule), all.get(sid), now) !== 'live') {
      plan.flows.push(k);
      if (partner) plan.flows.push(pk);
      continue;
    }
    const session = live.get(sid);
    const host = k.dir === DIR_IN ? v.nat_addr : k.saddr;
    if (partner && session && session.host === host) {
      plan.flowsPerSession.set(sid, (plan.flowsPerSession.get(sid) ?? 0) + 1);
    }
  }
  return plan;
}

/**
 * The shortest time a flow opened after a sweep of the flow table can take to
 * run out of its timer (RFC 5382's transitory timer; UDP's is longer): the
 * flow table need not be walked for expiry sooner than this after a walk,
 * unless a flow seen by the walk is due earlier.
 */
export const MIN_FLOW_TIMER_NS = FLOW_TIMEOUT_TCP_TRANS_NS;

/** What the sweep scheduler knows of one table's last walk. */
export interface WalkRecord {
  /** Map clock when the walk started. */
  at: bigint;
  /** Earliest time something the walk saw live can be over (0n: nothing live). */
  next: bigint;
  /** How long the walk took, in ns of wall time. */
  costNs: bigint;
}

/** Knobs of the sweep schedule. */
export interface SweepPolicy {
  /** Walks at most this often for the counts (ns). */
  minIntervalNs: bigint;
  /** Walks for the counts take at most 1/dutyDivisor of the time: interval >= cost x dutyDivisor. */
  dutyDivisor: bigint;
  /** Walks at least this often (orphans, kill_flows_on_expiry, takeovers; ns). */
  maxIntervalNs: bigint;
}

/**
 * 1 s at small tables; at most 1/80 of a core per table (1.25 %) at large
 * ones, so that the two big tables' count walks stay well under issue 11's 5 %
 * (1/40 measured 5.0 % of a core on an idle machine at 1M sessions and 2M flow
 * entries); at least every 5 min.
 */
export const DEFAULT_SWEEP_POLICY: SweepPolicy = { minIntervalNs: 1_000_000_000n, dutyDivisor: 80n, maxIntervalNs: 300_000_000_000n };

/**
 * When is a table due a walk? Expiry is driven by deadlines: the earliest
 * deadline the last walk saw (`last.next`), and the earliest an entry made
 * after that walk can expire (`newEntryLifeNs` after it: the shortest idle
 * timeout for sessions, MIN_FLOW_TIMER_NS for flows). Counts (the metrics,
 * `porttrig status`) are refreshed by walks at an interval that grows with
 * the walk's cost so that they take at most 1/dutyDivisor of a core, between
 * minIntervalNs and maxIntervalNs. Returns the map-clock time of the next walk
 * (now or earlier: due).
 */
export function nextWalkAt(last: WalkRecord | null, newEntryLifeNs: bigint, policy: SweepPolicy = DEFAULT_SWEEP_POLICY): bigint {
  if (!last) return 0n;
  let interval = last.costNs * policy.dutyDivisor;
  if (interval < policy.minIntervalNs) interval = policy.minIntervalNs;
  if (interval > policy.maxIntervalNs) interval = policy.maxIntervalNs;
  let at = last.at + interval;
  const fresh = last.at + newEntryLifeNs;
  if (fresh < at) at = fresh;
  if (last.next !== 0n && last.next < at) at = last.next;
  return at;
}

// --- IPv6 (SPEC 9): no address translation; the session of a flow is found
// from the flow itself (pt6_flow.flags says which key form) ---------------------

/** Stable string id of an IPv6 session key. */
export function session6Id(k: Pt6SessionKey): string {
  return `${k.rule}/${k.host}/${k.peer}`;
}

/** The LAN host of an IPv6 flow entry: the destination inbound, the source of replies. */
export const flow6Host = (k: Pt6FlowKey): string => (k.dir === DIR_IN ? k.daddr : k.saddr);
/** The remote peer of an IPv6 flow entry. */
export const flow6Remote = (k: Pt6FlowKey): string => (k.dir === DIR_IN ? k.saddr : k.daddr);

/**
 * The pt6_sessions key the flow of entry (`k`, `v`) belongs to: (rule, ::,
 * remote) when its session is keyed by peer (PT6_FLOW_CONTACTED), else
 * (rule, host, ::).
 */
export function session6KeyOfFlow(k: Pt6FlowKey, v: Pick<Pt6Flow, 'rule' | 'flags'>): Pt6SessionKey {
  return v.flags & FLOW6_CONTACTED
    ? { rule: v.rule, host: '::', peer: flow6Remote(k) }
    : { rule: v.rule, host: flow6Host(k), peer: '::' };
}

/**
 * The other direction's key of an IPv6 flow entry: addresses swapped (no
 * address translation); the inbound entry's nat_port is the LAN port (the
 * reply's source port), the reply's nat_port the WAN port (the inbound
 * destination port).
 */
export function partnerKey6(k: Pt6FlowKey, v: Pick<Pt6Flow, 'nat_port'>): Pt6FlowKey {
  return k.dir === DIR_IN
    ? { saddr: k.daddr, daddr: k.saddr, sport: v.nat_port, dport: k.sport, proto: k.proto, dir: DIR_OUT }
    : { saddr: k.daddr, daddr: k.saddr, sport: k.dport, dport: v.nat_port, proto: k.proto, dir: DIR_IN };
}

export function flowKey6Id(k: Pt6FlowKey): string {
  return `${k.dir}:${k.proto}:[${k.saddr}]:${k.sport}>[${k.daddr}]:${k.dport}`;
}

/**
 * flowFate() for an IPv6 flow: `session` is the raw entry of
 * session6KeyOfFlow(k, v). The same decisions as IPv4.
 */
export function flowFate6(
  k: Pt6FlowKey, v: Pt6Flow, partner: Pt6Flow | undefined,
  rule: PtRule | undefined, session: Pt6Session | undefined, now: bigint,
): FlowFate {
  return fateOf(flow6Host(k), k, v, partner, rule, session, now);
}
