/**
 * Expiry decisions for sessions and flows (SPEC 4.3, 5). Pure: it sees
 * snapshots of the maps and a clock value, and says what to remove.
 */
import {
  DIR_IN, DIR_OUT, FLOW_TIMEOUT_TCP_EST_NS, FLOW_TIMEOUT_TCP_TRANS_NS, FLOW_TIMEOUT_UDP_NS, IPPROTO_TCP,
  RULE_ENABLED, RULE_KILL_FLOWS, SEEN_ACK, SEEN_FIN, SEEN_RST, SEEN_SYN,
  type PtFlow, type PtFlowKey, type PtRule, type PtSession, type PtSessionKey,
} from '../bpf/abi.js';

/** A flow entry whose partner direction is missing is removed after this long. */
export const ORPHAN_FLOW_NS = 10n * 1_000_000_000n;

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
export function sessionExpired(s: PtSession, rule: PtRule, now: bigint): boolean {
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
  const live = new Map<string, PtSession>();
  for (const [key, value] of sessions) {
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
    if (!partner) {
      if (now - v.last_seen_ns > ORPHAN_FLOW_NS) plan.flows.push(k);
      continue;
    }
    const [inV, outV] = k.dir === DIR_IN ? [v, partner[1]] : [partner[1], v];
    const host = inV.nat_addr;
    const last = inV.last_seen_ns > outV.last_seen_ns ? inV.last_seen_ns : outV.last_seen_ns;
    const expired = now - last > flowTimeoutNs(flowState(k.proto, inV.seen, outV.seen));
    const sid = sessionId({ rule: inV.rule, peer: inV.sess_peer });
    const session = live.get(sid);
    const rule = rules.get(inV.rule);
    const killed = !!rule && (rule.flags & RULE_KILL_FLOWS) !== 0 && (!session || session.host !== host);
    // A rule removed or disabled by a reload takes its flows with it: its ports are closed.
    const ruleGone = !rule || !(rule.flags & RULE_ENABLED);
    if (expired || killed || ruleGone) {
      plan.flows.push(k, pk);
    } else if (session && session.host === host) {
      plan.flowsPerSession.set(sid, (plan.flowsPerSession.get(sid) ?? 0) + 1);
    }
  }
  return plan;
}
