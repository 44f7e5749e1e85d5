/**
 * SweepScheduler (src/daemon/sweeper.ts) with a recorded kernel sweep: each
 * walk covers both address families (SPEC 9), keeps the counts of both, and
 * is due again at the earlier deadline of the two.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SWEEP_FLOWS, SWEEP_FLOWS6, SWEEP_HOST6, SWEEP_RECOUNT, SWEEP_SESSIONS, SWEEP_SESSIONS6, type PtSweep,
} from '../../src/bpf/abi.js';
import type { SweepRequest, SweepRun } from '../../src/bpf/datapath.js';
import { SweepScheduler } from '../../src/daemon/sweeper.js';
import { sweepResult } from '../../src/core/state.js';

const S = 1_000_000_000n;
const T0 = 1000n * S;

function run(over: Partial<PtSweep>, live4: [number, number][] | null, live6: [number, number][] | null): SweepRun {
  const zero: PtSweep = {
    now: 0n, what: 0, host: '0.0.0.0', sessions_next_ns: 0n, flows_next_ns: 0n, sessions: 0, sessions_live: 0, sessions_expired: 0,
    sessions_closed: 0, flow_entries: 0, flows_live: 0, flow_entries_removed: 0, hosts_fixed: 0, hosts: 0,
    host6: '::', sessions6_next_ns: 0n, flows6_next_ns: 0n, sessions6: 0, sessions6_live: 0, sessions6_expired: 0, sessions6_closed: 0,
    flow6_entries: 0, flows6_live: 0, flow6_entries_removed: 0, hosts6_fixed: 0, hosts6: 0,
  };
  return { ...zero, ...over, liveByRule: live4 && new Map(live4), liveByRule6: live6 && new Map(live6) };
}

test('one walk per table covers both families; the counts of both are kept; the earlier deadline of the two is next', async () => {
  const reqs: SweepRequest[] = [];
  let now = T0;
  let sessions6Removed = 1;
  const sched = new SweepScheduler({
    clock: () => now,
    minIdleNs: () => 600n * S,
    policy: { minIntervalNs: 100n * S, dutyDivisor: 40n, maxIntervalNs: 300n * S },
    run: (req) => {
      reqs.push(req);
      return Promise.resolve(req.what & SWEEP_SESSIONS
        ? run({ sessions: 10, sessions_expired: now === T0 ? 2 : 0, hosts: 3, sessions_next_ns: now + 50n * S,
          sessions6: 7, sessions6_expired: sessions6Removed, sessions6_closed: sessions6Removed, hosts6: 4, sessions6_next_ns: now + 20n * S }, [[1, 8]], [[1, 3], [2, 2]])
        : run({ flow_entries: 6, flows_live: 3, flows_next_ns: 0n, flow6_entries: 4, flows6_live: 2, flows6_next_ns: now + 30n * S }, null, null));
    },
  });
  await sched.sweepNow();
  assert.deepEqual(reqs.map((r) => r.what), [SWEEP_SESSIONS | SWEEP_SESSIONS6 | SWEEP_RECOUNT, SWEEP_FLOWS | SWEEP_FLOWS6]);
  assert.ok(reqs.every((r) => !(r.what & SWEEP_HOST6)), 'the periodic walk is of every host');
  assert.deepEqual(sched.entryCounts(), {
    sessionsByRule: new Map([[1, 8]]), sessionEntries: 8, hostEntries: 3, flowsLive: 3, flowEntries: 6,
    sessionsByRule6: new Map([[1, 3], [2, 2]]), sessionEntries6: 5, hostEntries6: 4, flowsLive6: 2, flowEntries6: 4,
  });
  // Sessions: IPv6's deadline (T0+20 s) is earlier than IPv4's; flows: IPv4 had none, IPv6's is at T0+30 s.
  assert.equal(sched.dueAt('sessions'), T0 + 20n * S);
  assert.equal(sched.dueAt('flows'), T0 + 30n * S);
  // IPv6 sessions removed (none of IPv4) make the flow table due at once (kill_flows_on_expiry).
  now = T0 + 21n * S;
  reqs.length = 0;
  sched.poll();
  await sched.idle();
  assert.deepEqual(reqs.map((r) => r.what & (SWEEP_SESSIONS | SWEEP_FLOWS)), [SWEEP_SESSIONS, SWEEP_FLOWS], 'flows walked right after');
  // Nothing removed: the flow table waits for its own deadline.
  sessions6Removed = 0;
  now = T0 + 45n * S;
  reqs.length = 0;
  sched.poll();
  await sched.idle();
  assert.deepEqual(reqs.map((r) => r.what & (SWEEP_SESSIONS | SWEEP_FLOWS)), [SWEEP_SESSIONS]);
});

test('sweepResult: both families summed, and each on its own', () => {
  const r = sweepResult(run({ sessions_expired: 2, sessions_closed: 1, flow_entries_removed: 4, hosts_fixed: 1,
    sessions6_expired: 5, sessions6_closed: 0, flow6_entries_removed: 6, hosts6_fixed: 2 }, null, null));
  assert.deepEqual(r, {
    sessionsExpired: 7, sessionsClosed: 1, flowsRemoved: 10, hostCountsFixed: 3,
    ipv4: { sessionsExpired: 2, sessionsClosed: 1, flowsRemoved: 4, hostCountsFixed: 1 },
    ipv6: { sessionsExpired: 5, sessionsClosed: 0, flowsRemoved: 6, hostCountsFixed: 2 },
  });
});

test('a deadline between two polls is met by a one-shot timer, not at the next poll; close() stops it', async () => {
  const clock = (): bigint => process.hrtime.bigint();
  const walks: bigint[] = [];
  const MS = 1_000_000n;
  const sched = new SweepScheduler({
    clock,
    minIdleNs: () => 600n * S,
    policy: { minIntervalNs: 100n * S, dutyDivisor: 40n, maxIntervalNs: 300n * S },
    wakeWithinMs: 200,
    run: (req) => {
      const now = clock();
      if (req.what & SWEEP_SESSIONS) walks.push(now);
      // Sessions: one expires 40 ms after each walk; flows: nothing due for long.
      return Promise.resolve(req.what & SWEEP_SESSIONS ? run({ sessions_next_ns: now + 40n * MS }, [], []) : run({}, null, null));
    },
  });
  await sched.sweepNow();
  assert.equal(walks.length, 1);
  const deadline = walks[0]! + 40n * MS;
  sched.poll();   // nothing due yet: arms the timer instead of waiting for the caller's next poll
  await new Promise((r) => setTimeout(r, 150));
  await sched.idle();
  assert.ok(walks.length >= 2, `the session table was walked again at its deadline without a poll (walks: ${walks.length})`);
  assert.ok(walks[1]! >= deadline, 'not before the deadline');
  sched.close();
  const n = walks.length;
  await new Promise((r) => setTimeout(r, 150));
  sched.poll();
  await sched.idle();
  assert.equal(walks.length, n, 'no walk after close()');
});
