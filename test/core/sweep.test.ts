import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  planSweep, flowFate, flowFate6, flowKey6Id, flowState, nextWalkAt, partnerKey, partnerKey6, session6Id, session6KeyOfFlow,
} from '../../src/core/sweep.js';
import {
  DIR_IN, DIR_OUT, FLOW6_CONTACTED, IPPROTO_TCP, IPPROTO_UDP, RULE_ENABLED, RULE_KILL_FLOWS, SEEN_ACK, SEEN_FIN, SEEN_SYN,
  type Pt6Flow, type Pt6FlowKey, type Pt6Session, type PtFlow, type PtFlowKey, type PtRule, type PtSession, type PtSessionKey,
} from '../../src/bpf/abi.js';

const S = 1_000_000_000n;
const NOW = 10_000n * S;   // a fake CLOCK_MONOTONIC value
const rules = new Map<number, PtRule>([
  [1, { idle_timeout_ns: 60n * S, flags: RULE_ENABLED }],
  [2, { idle_timeout_ns: 60n * S, flags: RULE_ENABLED | RULE_KILL_FLOWS }],
  [3, { idle_timeout_ns: 60n * S, flags: 0 }],   // disabled
]);

const sess = (rule: number, host: string, idleS: bigint): [PtSessionKey, PtSession] =>
  [{ rule, peer: '0.0.0.0' }, { opened_ns: NOW - 100n * S, last_seen_ns: NOW - idleS * S, host, ifindex: 3 }];

function flow(rule: number, host: string, proto: number, inSeen: number, outSeen: number, idleS: bigint, rport = 40000): [PtFlowKey, PtFlow][] {
  const base = { created_ns: NOW - 500n * S, last_seen_ns: NOW - idleS * S, rule, sess_peer: '0.0.0.0', ifindex: 2 };
  const inKey: PtFlowKey = { saddr: '198.51.100.7', daddr: '203.0.113.1', sport: rport, dport: 113, proto, dir: DIR_IN };
  const inVal: PtFlow = { ...base, nat_addr: host, nat_port: 113, seen: inSeen };
  const outKey: PtFlowKey = { saddr: host, daddr: '198.51.100.7', sport: 113, dport: rport, proto, dir: DIR_OUT };
  const outVal: PtFlow = { ...base, nat_addr: '203.0.113.1', nat_port: 113, seen: outSeen };
  return [[inKey, inVal], [outKey, outVal]];
}

test('sessions: idle past the rule timeout expire; within it they stay; disabled rules close', () => {
  const plan = planSweep([sess(1, '10.0.0.2', 61n), sess(1, '10.0.0.3', 59n).map((x, i) => (i === 0 ? { rule: 1, peer: '192.0.2.9' } : x)) as [PtSessionKey, PtSession], sess(3, '10.0.0.4', 1n)], [], rules, NOW);
  assert.deepEqual(plan.sessions.map((s) => [s.value.host, s.reason]), [['10.0.0.2', 'expired'], ['10.0.0.4', 'rule_gone']]);
  assert.deepEqual([...plan.hostCounts], [['10.0.0.3', 1]]);
});

test('flow timers follow RFC 4787/5382: UDP 300 s, TCP established 7440 s, transitory 240 s', () => {
  const cases: [string, [PtFlowKey, PtFlow][], boolean][] = [
    ['udp idle 299 s stays', flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 299n), false],
    ['udp idle 301 s goes', flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 301n), true],
    ['tcp established idle 7439 s stays', flow(1, '10.0.0.2', IPPROTO_TCP, SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 7439n), false],
    ['tcp established idle 7441 s goes', flow(1, '10.0.0.2', IPPROTO_TCP, SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 7441n), true],
    ['tcp half-open idle 241 s goes', flow(1, '10.0.0.2', IPPROTO_TCP, SEEN_SYN, 0, 241n), true],
    ['tcp half-open idle 239 s stays', flow(1, '10.0.0.2', IPPROTO_TCP, SEEN_SYN, 0, 239n), false],
    ['tcp after FIN idle 241 s goes', flow(1, '10.0.0.2', IPPROTO_TCP, SEEN_SYN | SEEN_ACK | SEEN_FIN, SEEN_SYN, 241n), true],
  ];
  for (const [name, entries, gone] of cases) {
    const plan = planSweep([sess(1, '10.0.0.2', 1n)], entries, rules, NOW);
    assert.equal(plan.flows.length, gone ? 2 : 0, name);
  }
});

test('kill_flows_on_expiry removes flows of an ended session; other rules keep them', () => {
  const killed = planSweep([], flow(2, '10.0.0.2', IPPROTO_UDP, 0, 0, 1n), rules, NOW);
  assert.equal(killed.flows.length, 2);
  const kept = planSweep([], flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 1n), rules, NOW);
  assert.equal(kept.flows.length, 0);
});

test('flows are counted per live session of their own host', () => {
  const plan = planSweep([sess(1, '10.0.0.2', 1n)], [...flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 1n), ...flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 1n, 40001)], rules, NOW);
  assert.equal(plan.flowsPerSession.get('1/0.0.0.0'), 2);
});

test('partnerKey maps each direction onto the other', () => {
  const [[ik, iv], [ok, ov]] = flow(1, '10.0.0.2', IPPROTO_TCP, 0, 0, 1n);
  assert.deepEqual(partnerKey(ik!, iv!), ok);
  assert.deepEqual(partnerKey(ok!, ov!), ik);
  assert.equal(flowState(IPPROTO_TCP, SEEN_ACK, SEEN_SYN), 'tcp_established');
});

test('flows of a rule removed or disabled by a reload end with it', () => {
  const removed = planSweep([], flow(9, '10.0.0.2', IPPROTO_TCP, SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 1n), rules, NOW);
  assert.equal(removed.flows.length, 2, 'rule 9 is not configured');
  const disabled = planSweep([], flow(3, '10.0.0.2', IPPROTO_UDP, 0, 0, 1n), rules, NOW);
  assert.equal(disabled.flows.length, 2, 'rule 3 is disabled');
});

test('flowFate: the newer direction keeps a flow alive; a lone entry is an orphan after 10 s; kill follows the session owner', () => {
  const [[ik, iv], [, ov]] = flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 400n);
  const fresh = { ...ov!, last_seen_ns: NOW - 2n * S };
  assert.equal(flowFate(ik!, iv!, fresh, rules.get(1), undefined, NOW), 'live', 'in idle 400 s, out idle 2 s');
  assert.equal(flowFate(ik!, iv!, ov!, rules.get(1), undefined, NOW), 'expired', 'both idle 400 s');
  const [[lk, lv]] = flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 9n);
  assert.equal(flowFate(lk!, lv!, undefined, rules.get(1), undefined, NOW), 'live', 'lone entry idle 9 s');
  const [[ok2, ov2]] = flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 11n);
  assert.equal(flowFate(ok2!, ov2!, undefined, rules.get(1), undefined, NOW), 'orphan', 'lone entry idle 11 s');
  const [[kk, kv], [, kov]] = flow(2, '10.0.0.2', IPPROTO_TCP, SEEN_SYN | SEEN_ACK, SEEN_SYN, 1n);
  assert.equal(flowFate(kk!, kv!, kov, rules.get(2), sess(2, '10.0.0.2', 1n)[1], NOW), 'live', 'kill rule, session held by the flow host');
  assert.equal(flowFate(kk!, kv!, kov, rules.get(2), sess(2, '10.0.0.3', 1n)[1], NOW), 'killed', 'kill rule, session taken over');
  assert.equal(flowFate(kk!, kv!, kov, rules.get(2), sess(2, '10.0.0.2', 61n)[1], NOW), 'killed', 'kill rule, session expired');
});

test('nextWalkAt: deadlines first, counts at an interval bounded by the walk cost', () => {
  const S = 1_000_000_000n;
  const policy = { minIntervalNs: 1n * S, dutyDivisor: 40n, maxIntervalNs: 300n * S };
  assert.equal(nextWalkAt(null, 600n * S, policy), 0n, 'never walked: due now');
  // A cheap walk: every second, for the counts.
  assert.equal(nextWalkAt({ at: 100n * S, next: 0n, costNs: 1_000_000n }, 600n * S, policy), 101n * S);
  // An expensive walk (2 s): not again for the counts before 80 s ...
  assert.equal(nextWalkAt({ at: 100n * S, next: 0n, costNs: 2n * S }, 600n * S, policy), 180n * S);
  // ... unless something it saw is due earlier, or something made after it can be.
  assert.equal(nextWalkAt({ at: 100n * S, next: 130n * S, costNs: 2n * S }, 600n * S, policy), 130n * S);
  assert.equal(nextWalkAt({ at: 100n * S, next: 0n, costNs: 2n * S }, 5n * S, policy), 105n * S);
  // Never more than maxIntervalNs apart.
  assert.equal(nextWalkAt({ at: 100n * S, next: 0n, costNs: 60n * S }, 7n * 86400n * S, policy), 400n * S);
});

// --- IPv6 (SPEC 9): no address translation; a flow finds its session from itself ---------

const HOST6 = '2001:db8:1::10';
const REMOTE6 = '2001:db8:ff::7';

/** An IPv6 flow: remote port `rport` to open port 6000, translated to LAN port 7000. */
function flow6(rule: number, flags: number, proto: number, inSeen: number, outSeen: number, idleS: bigint, rport = 40000): [Pt6FlowKey, Pt6Flow][] {
  const base = { created_ns: NOW - 500n * S, last_seen_ns: NOW - idleS * S, rule, ifindex: 2, flags };
  return [
    [{ saddr: REMOTE6, daddr: HOST6, sport: rport, dport: 6000, proto, dir: DIR_IN }, { ...base, nat_port: 7000, seen: inSeen }],
    [{ saddr: HOST6, daddr: REMOTE6, sport: 7000, dport: rport, proto, dir: DIR_OUT }, { ...base, nat_port: 6000, seen: outSeen }],
  ];
}

test('partnerKey6 maps each direction of an IPv6 flow onto the other (addresses swapped, ports through nat_port)', () => {
  const [[inK, inV], [outK, outV]] = flow6(1, 0, IPPROTO_TCP, 0, 0, 1n);
  assert.deepEqual(partnerKey6(inK, inV), outK);
  assert.deepEqual(partnerKey6(outK, outV), inK);
  assert.notEqual(flowKey6Id(inK), flowKey6Id(outK));
});

test('session6KeyOfFlow: (rule, host, ::) in mode any, (rule, ::, peer) with PT6_FLOW_CONTACTED, from either direction', () => {
  const [[inK, inV], [outK, outV]] = flow6(4, 0, IPPROTO_UDP, 0, 0, 1n);
  assert.deepEqual(session6KeyOfFlow(inK, inV), { rule: 4, host: HOST6, peer: '::' });
  assert.deepEqual(session6KeyOfFlow(outK, outV), { rule: 4, host: HOST6, peer: '::' });
  const [[cK, cV], [coK, coV]] = flow6(4, FLOW6_CONTACTED, IPPROTO_UDP, 0, 0, 1n);
  assert.deepEqual(session6KeyOfFlow(cK, cV), { rule: 4, host: '::', peer: REMOTE6 });
  assert.deepEqual(session6KeyOfFlow(coK, coV), { rule: 4, host: '::', peer: REMOTE6 });
  assert.notEqual(session6Id({ rule: 4, host: HOST6, peer: '::' }), session6Id({ rule: 4, host: '::', peer: HOST6 }));
});

test('flowFate6: IPv6 flows live on the IPv4 timers; kill_flows_on_expiry follows the session and its owner', () => {
  const sess6 = (host: string, idleS: bigint): Pt6Session => ({ opened_ns: NOW - 100n * S, last_seen_ns: NOW - idleS * S, host, ifindex: 3 });
  const fate = (f: [Pt6FlowKey, Pt6Flow][], s: Pt6Session | undefined, rule = 1): string => {
    const [[k, v], [, p]] = f;
    return flowFate6(k, v, p, rules.get(rule), s, NOW);
  };
  assert.equal(fate(flow6(1, 0, IPPROTO_UDP, 0, 0, 299n), undefined), 'live');
  assert.equal(fate(flow6(1, 0, IPPROTO_UDP, 0, 0, 301n), undefined), 'expired');
  assert.equal(fate(flow6(1, 0, IPPROTO_TCP, SEEN_SYN | SEEN_ACK, SEEN_SYN | SEEN_ACK, 7000n), undefined), 'live');
  assert.equal(fate(flow6(1, 0, IPPROTO_TCP, SEEN_SYN, SEEN_SYN | SEEN_FIN, 241n), undefined), 'expired');
  assert.equal(fate(flow6(3, 0, IPPROTO_UDP, 0, 0, 1n), undefined, 3), 'killed', 'disabled rule');
  assert.equal(fate(flow6(2, 0, IPPROTO_UDP, 0, 0, 1n), sess6(HOST6, 1n), 2), 'live', 'kill rule, session live and the host\'s');
  assert.equal(fate(flow6(2, 0, IPPROTO_UDP, 0, 0, 1n), sess6(HOST6, 61n), 2), 'killed', 'kill rule, session expired');
  assert.equal(fate(flow6(2, FLOW6_CONTACTED, IPPROTO_UDP, 0, 0, 1n), sess6('2001:db8:1::11', 1n), 2), 'killed', 'kill rule, session taken over by another host');
  const [[k, v]] = flow6(1, 0, IPPROTO_UDP, 0, 0, 11n);
  assert.equal(flowFate6(k, v, undefined, rules.get(1), undefined, NOW), 'orphan');
  // The same decision as the IPv4 flowFate for the same timers.
  const [[k4, v4], [, p4]] = flow(1, '10.0.0.2', IPPROTO_UDP, 0, 0, 301n);
  assert.equal(flowFate(k4, v4, p4, rules.get(1), undefined, NOW), fate(flow6(1, 0, IPPROTO_UDP, 0, 0, 301n), undefined));
});
