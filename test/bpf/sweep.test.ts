/**
 * The kernel sweep (pt_sweep, BPF_PROG_TEST_RUN of a SEC("syscall")
 * program) at table sizes that fit CI: it removes exactly what the
 * TypeScript decisions (planSweep()) remove, counts what they count, and
 * recounts hosts; and the control socket keeps answering while a walk of
 * large tables runs on a worker thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CLOCK_BIAS_NS, DIR_IN, IPPROTO_UDP, NSEC_PER_SEC, RULE_COUNTERS, SWEEP_FLOWS, SWEEP_RECOUNT, SWEEP_SESSIONS,
} from '../../src/bpf/abi.js';
import { compileRules } from '../../src/rules/compile.js';
import { flowKeyId, planSweep, sessionId } from '../../src/core/sweep.js';
import type { Rule } from '../../src/config/types.js';
import { ControlServer } from '../../src/daemon/control.js';
import { nullLogger } from '../../src/daemon/log.js';
import { SweepScheduler } from '../../src/daemon/sweeper.js';
import { bpfSkipReason, useDatapath } from '../helpers/bpffs.js';
import { fillTables, nthAddr, HOST_NET } from '../helpers/tables.js';

const SKIP = bpfSkipReason();
const WAN = '203.0.113.1';
const IDLE_S = 60;

function rule(name: string, port: number, enabled: boolean): Rule {
  return {
    name, enabled, trigger: { protos: ['udp'], ranges: [{ from: port, to: port }] },
    open: [{ protos: ['udp'], from: port + 1000, to: port + 1000, lanFrom: port + 1000 }],
    idleTimeoutMs: IDLE_S * 1000, peer: 'contacted', conflict: 'first', killFlowsOnExpiry: false,
  };
}

test('pt_sweep removes and counts exactly what planSweep decides, 40 000 sessions and 50 000 flow entries', SKIP ? { skip: SKIP } : {}, (t) => {
  const f = useDatapath(t, { testClock: true, limits: { sessions: 65536, flows: 32768 } });
  const compiled = compileRules([rule('game', 5000, true), rule('old', 5001, false)]);
  f.state.applyRules(compiled);
  const game = compiled.ids.get('game')!;
  const old = compiled.ids.get('old')!;
  const now = CLOCK_BIAS_NS + 3600n * NSEC_PER_SEC;
  const s = (x: number): bigint => BigInt(x) * NSEC_PER_SEC;
  // A third of the sessions idle past the timeout; flows of every age: live,
  // past the UDP timer (300 s), and 1 s either side of it.
  fillTables(f.dp.maps, {
    rule: game, sessions: 30000, hostsEvery: 7, flows: 25000, wanAddr: WAN, wanPort: 6000, proto: IPPROTO_UDP,
    sessionSeen: (i) => now - (i % 3 === 0 ? s(IDLE_S + 1) : s(i % IDLE_S)),
    flowSeen: (i) => now - s([5, 299, 301, 20, 400][i % 5]!),
  });
  // Sessions of a disabled rule (closed by the sweep), on other peers.
  fillTables(f.dp.maps, {
    rule: old, sessions: 10000, hostsEvery: 3, flows: 0, wanAddr: WAN, wanPort: 6001, proto: IPPROTO_UDP,
    sessionSeen: () => now, flowSeen: () => now,
  });
  // Orphans: the OUT entry of every 11th flow is gone; an old orphan goes, a fresh one stays.
  const outs = [...f.dp.maps.flows.entries()].filter(([k]) => k.dir !== DIR_IN).map(([k]) => k);
  f.dp.maps.flows.deleteMany(outs.filter((_, i) => i % 11 === 0));
  // A host count that drifted.
  f.dp.maps.hostSessions.set(nthAddr(HOST_NET, 5), { sessions: 60, recheck_ns: 0n });

  const sessions = [...f.dp.maps.sessions.entries()];
  const flows = [...f.dp.maps.flows.entries()];
  const plan = planSweep(sessions, flows, f.state.ruleSettings(), now);
  const expiredBefore = f.dp.maps.ruleStats.sum(game * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('sessions_expired'));

  const r = f.dp.sweep({ now, what: SWEEP_SESSIONS | SWEEP_FLOWS | SWEEP_RECOUNT });

  const goneS = new Set(plan.sessions.map((x) => sessionId(x.key)));
  const wantS = sessions.filter(([k]) => !goneS.has(sessionId(k))).map(([k]) => sessionId(k)).sort();
  assert.deepEqual([...f.dp.maps.sessions.entries()].map(([k]) => sessionId(k)).sort(), wantS, 'the sessions left');
  assert.ok(plan.sessions.length > 10000 && wantS.length > 10000, 'both kinds of outcome are represented');
  assert.equal(r.sessions, sessions.length);
  assert.equal(r.sessions_expired, plan.sessions.filter((x) => x.reason === 'expired').length);
  assert.equal(r.sessions_closed, plan.sessions.filter((x) => x.reason === 'rule_gone').length);
  assert.equal(r.sessions_live, wantS.length);
  assert.deepEqual(r.liveByRule, new Map([[game, wantS.length]]), 'live sessions per rule (the disabled one has none)');
  assert.equal(f.dp.maps.ruleStats.sum(game * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('sessions_expired')) - expiredBefore,
    BigInt(r.sessions_expired), 'sessions_expired counted in the kernel');
  const deadline = sessions.filter(([k]) => !goneS.has(sessionId(k))).map(([, v]) => v.last_seen_ns + s(IDLE_S))
    .reduce((a, b) => (b < a ? b : a));
  assert.equal(r.sessions_next_ns, deadline, 'the earliest deadline of a live session');

  const goneF = new Set(plan.flows.map(flowKeyId));
  const wantF = flows.filter(([k]) => !goneF.has(flowKeyId(k))).map(([k]) => flowKeyId(k)).sort();
  assert.deepEqual([...f.dp.maps.flows.entries()].map(([k]) => flowKeyId(k)).sort(), wantF, 'the flow entries left');
  assert.ok(plan.flows.length > 10000 && wantF.length > 10000, 'both kinds of outcome are represented');
  assert.equal(r.flow_entries, wantF.length, 'flow entries left');
  assert.equal(r.flow_entries_removed, plan.flows.length);
  assert.equal(r.flows_live, [...f.dp.maps.flows.entries()].filter(([k]) => k.dir === DIR_IN).length, 'live flows by their inbound entries');

  const hosts = new Map([...f.dp.maps.hostSessions.entries()].map(([h, v]) => [h, v.sessions]));
  assert.deepEqual(hosts, plan.hostCounts, 'every host count is its live sessions; hosts with none are gone');
  assert.equal(r.hosts, hosts.size);
  assert.ok(r.hosts_fixed > 0);

  // A second run finds nothing more to do.
  const again = f.dp.sweep({ now, what: SWEEP_SESSIONS | SWEEP_FLOWS | SWEEP_RECOUNT });
  assert.deepEqual([again.sessions_expired, again.sessions_closed, again.flow_entries_removed, again.hosts_fixed], [0, 0, 0, 0]);
});

/** GET `path` on a Unix socket; resolves with the time it took (ms). */
function timedGet(socket: string, path: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method: 'GET', path }, (res) => {
      res.resume();
      res.on('end', () => resolve(Number(process.hrtime.bigint() - t0) / 1e6));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the control socket answers while the kernel sweep walks 131 072 sessions and 262 144 flow entries', SKIP ? { skip: SKIP } : {}, async (t) => {
  const f = useDatapath(t, { limits: { sessions: 131072, flows: 131072 } });
  const compiled = compileRules([rule('game', 5000, true)]);
  f.state.applyRules(compiled);
  const now = process.hrtime.bigint() + CLOCK_BIAS_NS;
  fillTables(f.dp.maps, {
    rule: compiled.ids.get('game')!, sessions: 131072, hostsEvery: 1, flows: 131072, wanAddr: WAN, wanPort: 6000, proto: IPPROTO_UDP,
    sessionSeen: () => now, flowSeen: () => now,
  });
  let walks = 0;
  const sched = new SweepScheduler({
    run: (req) => f.dp.sweepAsync(req),
    clock: () => process.hrtime.bigint() + CLOCK_BIAS_NS,
    minIdleNs: () => BigInt(IDLE_S) * NSEC_PER_SEC,
    onWalk: () => { walks++; },
  });
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-sweep-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'ctl.sock');
  const server = await ControlServer.listen(socket, {
    status: () => ({ counts: sched.entryCounts() }), sessions: () => [], flows: () => [], rules: () => [],
    reload: () => ({}), openSession: () => ({}), closeSession: () => ({}),
  }, nullLogger);
  t.after(() => server.close());

  // One walk alone: how long the event loop would stall if it ran there.
  const t0 = process.hrtime.bigint();
  await sched.sweepNow();
  const walkMs = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.deepEqual(sched.entryCounts(), {
    sessionsByRule: new Map([[compiled.ids.get('game')!, 131072]]), sessionEntries: 131072, hostEntries: 131072,
    flowsLive: 131072, flowEntries: 262144,
    // The same walks go over the (empty) IPv6 maps.
    sessionsByRule6: new Map(), sessionEntries6: 0, hostEntries6: 0, flowsLive6: 0, flowEntries6: 0,
  });
  // Requests while walks run back to back.
  const latencies: number[] = [];
  let during = 0;
  const walking = sched.sweepNow();
  let walkDone = false;
  void walking.then(() => { walkDone = true; });
  while (!walkDone) {
    latencies.push(await timedGet(socket, '/v1/status'));
    if (!walkDone) during++;
  }
  await walking;
  assert.ok(walks >= 4, 'four walks ran');
  assert.ok(during >= 3, `requests answered during a walk of ${walkMs.toFixed(0)} ms: ${during}`);
  latencies.sort((a, b) => a - b);
  const worst = latencies[latencies.length - 1]!;
  t.diagnostic(`walk ${walkMs.toFixed(0)} ms; answers during walks: ${latencies.map((x) => x.toFixed(1)).join(' ')}`);
  const median = latencies[Math.floor(latencies.length / 2)]!;
  // A walk on the event loop would answer nothing during it and every answer would wait for it.
  assert.ok(median < walkMs / 4, `median answer ${median.toFixed(1)} ms (slowest ${worst.toFixed(1)} ms) while a walk takes ${walkMs.toFixed(0)} ms`);
});
