/**
 * State that no longer exists does not count (SPEC 4.3, 4.6), with no daemon
 * running: an hour of simulated time (the data path's test clock) under a SYN
 * and UDP scan of the open ports, with LAN hosts that come and go. The data
 * path alone must keep the promise: a scanner keeps nothing open, expired
 * sessions and dead flows never block new ones, and live hosts can always
 * open sessions and accept connections at the end. No sweep runs here.
 *
 * Packets go through BPF_PROG_TEST_RUN only: nothing leaves the kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileRules } from '../../src/rules/compile.js';
import { CLOCK_BIAS_NS, NSEC_PER_SEC, RULE_COUNTERS } from '../../src/bpf/abi.js';
import type { Rule } from '../../src/config/types.js';
import { TC_ACT_REDIRECT, bpfSkipReason, runProg, useDatapath, type TestDatapath } from '../helpers/bpffs.js';
import { TCP, buildPacket, type PacketSpec } from '../helpers/packet.js';

const SKIP = bpfSkipReason();

const WAN = '203.0.113.1';
const GW_LAN = '10.0.0.1';
const HOSTS = ['10.0.0.2', '10.0.0.3', '10.0.0.4'] as const;
const SERVER = '198.51.100.10';
const MIN_S = 60;

function rule(name: string, trigger: { proto: 'tcp' | 'udp'; port: number }, open: { proto: 'tcp' | 'udp'; from: number; to: number },
  idleS: number): Rule {
  return {
    name, enabled: true, trigger: { protos: [trigger.proto], ranges: [{ from: trigger.port, to: trigger.port }] },
    open: [{ protos: [open.proto], from: open.from, to: open.to, lanFrom: open.from }],
    idleTimeoutMs: idleS * 1000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false,
  };
}

const RULES: Rule[] = [
  rule('irc', { proto: 'tcp', port: 6667 }, { proto: 'tcp', from: 113, to: 113 }, 5 * MIN_S),
  rule('game', { proto: 'udp', port: 27015 }, { proto: 'udp', from: 27000, to: 27009 }, 10 * MIN_S),
  rule('voice', { proto: 'udp', port: 5060 }, { proto: 'tcp', from: 5061, to: 5061 }, 2 * MIN_S),
];

const tcp = (src: string, sport: number, dst: string, dport: number, flags: number): PacketSpec =>
  ({ ip: { src, dst, ttl: 64, id: 0x1111, df: true }, l4: { tcp: { sport, dport, flags, seq: 1 } } });
const udp = (src: string, sport: number, dst: string, dport: number): PacketSpec =>
  ({ ip: { src, dst, ttl: 64, id: 0x2222 }, l4: { udp: { sport, dport, payload: Buffer.from('x') } } });

const run = (f: TestDatapath, prog: 'lan' | 'wan', p: PacketSpec): number => runProg(f, prog, buildPacket(p)).retval;

function counters(f: TestDatapath, ids: Map<string, number>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [name, id] of ids) {
    for (const [ci, cn] of RULE_COUNTERS.entries()) {
      const n = Number(f.dp.maps.ruleStats.sum(id * RULE_COUNTERS.length + ci));
      if (n) (out[name] ??= {})[cn] = n;
    }
  }
  return out;
}

/** The data path on the test clock at t0 (an hour into the map clock), with RULES and a /24 LAN. */
function setup(t: { after: (fn: () => void) => void }, limits: { sessions: number; flows: number }, sessionsPerHost: number) {
  const f = useDatapath(t, { testClock: true, limits });
  const compiled = compileRules(RULES);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, 7, sessionsPerHost);
  f.state.setLocalAddrs([GW_LAN, WAN]);
  f.state.setLanNets(['10.0.0.0/24']);
  const t0 = CLOCK_BIAS_NS + 3600n * NSEC_PER_SEC;
  f.dp.setTestClock(t0);
  return { f, ids: compiled.ids, t0 };
}

test('an hour under a SYN and UDP scan with no daemon: a scanner keeps nothing open, dead state never blocks live hosts', SKIP ? { skip: SKIP } : {}, (t) => {
  // Small tables, so that the scan fills them over and over.
  const { f, ids, t0 } = setup(t, { sessions: 4, flows: 24 }, 2);
  const compiled = { ids };
  let now = t0;
  const at = (s: number): void => { now = t0 + BigInt(Math.round(s * 1000)) * 1_000_000n; f.dp.setTestClock(now); };
  at(0);

  const [A, B, C] = HOSTS;
  const STEP_S = 5;
  const HOUR_S = 3600;
  let scannerPort = 20000;
  let scanned = 0;
  let scanForwarded = 0;
  let lastForwardedAt = -1;
  for (let s = 0; s < HOUR_S; s += STEP_S) {
    at(s);
    // A plays IRC for the first 30 minutes, B joins a game once at the start,
    // C calls someone at minute 20.
    if (s < 30 * MIN_S) run(f, 'lan', tcp(A, 40000, SERVER, 6667, TCP.ACK));
    if (s === 0) run(f, 'lan', udp(B, 50000, SERVER, 27015));
    if (s === 20 * MIN_S) run(f, 'lan', udp(C, 50001, SERVER, 5060));
    // The scanner: from a few addresses and ever new ports, SYNs to every
    // open TCP port and datagrams to the open UDP ports, every 5 s for an hour.
    for (const src of ['192.0.2.50', '192.0.2.51', '198.51.100.99']) {
      for (const p of [tcp(src, scannerPort, WAN, 113, TCP.SYN), tcp(src, scannerPort, WAN, 5061, TCP.SYN), udp(src, scannerPort, WAN, 27000 + (scannerPort % 10))]) {
        scanned++;
        if (run(f, 'wan', p) === TC_ACT_REDIRECT) { scanForwarded++; lastForwardedAt = s; }
      }
      scannerPort = scannerPort >= 60000 ? 20000 : scannerPort + 1;
    }
  }
  assert.ok(scanForwarded > 0, 'the scan reached the open ports while their sessions were live (else this test shows nothing)');
  // The last session of the hour (A's irc: last trigger at 29:55, 5 min idle) ended at 34:55;
  // the scanner's packets after that were never forwarded, however often it knocked.
  assert.ok(lastForwardedAt < 35 * MIN_S, `a scanner packet was forwarded at ${lastForwardedAt} s: something kept a session open without its host`);
  const sessions = [...f.dp.maps.sessions.entries()];
  assert.ok(sessions.every(([, v]) => v.last_seen_ns < t0 + 30n * 60n * NSEC_PER_SEC),
    `no session was refreshed after its host went quiet: ${JSON.stringify(sessions.map(([k, v]) => [k.rule, v.host, String((v.last_seen_ns - t0) / NSEC_PER_SEC)]))}`);

  // One hour later, with every table full of what the scan left: every host
  // opens a session at once, and a real connection comes through on each.
  at(HOUR_S);
  const before = counters(f, compiled.ids);
  run(f, 'lan', tcp(A, 40001, SERVER, 6667, TCP.SYN));
  run(f, 'lan', udp(B, 50002, SERVER, 27015));
  run(f, 'lan', udp(C, 50003, SERVER, 5060));
  const after = counters(f, compiled.ids);
  for (const name of ['irc', 'game', 'voice']) {
    const opened = (after[name]?.sessions_opened ?? 0) - (before[name]?.sessions_opened ?? 0);
    assert.equal(opened, 1, `${name}: a live host's trigger after an hour must open its session; counters before ${JSON.stringify(before[name])} after ${JSON.stringify(after[name])}`);
  }
  const live = new Map([...f.dp.maps.sessions.entries()].map(([k, v]) => [k.rule, v.host]));
  assert.equal(live.get(compiled.ids.get('irc')!), A);
  assert.equal(live.get(compiled.ids.get('game')!), B);
  assert.equal(live.get(compiled.ids.get('voice')!), C);
  assert.equal(run(f, 'wan', tcp('192.0.2.77', 33333, WAN, 113, TCP.SYN)), TC_ACT_REDIRECT, 'a new connection to A after the scan');
  assert.equal(run(f, 'wan', udp('192.0.2.77', 33334, WAN, 27004)), TC_ACT_REDIRECT, 'a new datagram to B after the scan');
  assert.equal(run(f, 'wan', tcp('192.0.2.77', 33335, WAN, 5061, TCP.SYN)), TC_ACT_REDIRECT, 'a new connection to C after the scan');
  // Host counts are exact: one session each, nothing left of the expired ones.
  const hosts = Object.fromEntries([...f.dp.maps.hostSessions.entries()].filter(([, v]) => v.sessions > 0).map(([h, v]) => [h, v.sessions]));
  assert.deepEqual(hosts, { [A]: 1, [B]: 1, [C]: 1 });
  t.diagnostic(`${scanned} scan packets, ${scanForwarded} forwarded while a session was live; counters ${JSON.stringify(after)}`);
  // The scan hit the full flow table, and the data path reclaimed it.
  assert.ok((after.irc?.flows_opened ?? 0) > 24, `irc flows opened ${after.irc?.flows_opened}: more than the table holds, so dead flows were reclaimed`);
});

test('sessions_per_host 1 with no daemon: the host\'s expired session frees its slot at once, a live one does not', SKIP ? { skip: SKIP } : {}, (t) => {
  const { f, ids, t0 } = setup(t, { sessions: 8, flows: 8 }, 1);
  const compiled = { ids };
  const at = (s: number): void => f.dp.setTestClock(t0 + BigInt(s) * NSEC_PER_SEC);
  const [A] = HOSTS;
  at(0);
  run(f, 'lan', udp(A, 50000, SERVER, 5060));          // voice: 2 min
  at(119);
  run(f, 'lan', tcp(A, 40000, SERVER, 6667, TCP.SYN)); // irc refused: voice is live
  let c = counters(f, compiled.ids);
  assert.equal(c.irc?.refused_host_limit, 1, JSON.stringify(c));
  at(121);
  run(f, 'lan', tcp(A, 40000, SERVER, 6667, TCP.SYN)); // voice expired a second ago
  c = counters(f, compiled.ids);
  assert.equal(c.irc?.sessions_opened, 1, `the expired session still counted: ${JSON.stringify(c)}`);
  assert.equal(c.voice?.sessions_expired, 1, 'the data path removed the expired session and counted it');
  assert.deepEqual([...f.dp.maps.sessions.entries()].map(([k, v]) => [k.rule, v.host]), [[compiled.ids.get('irc'), A]]);
  const h = f.dp.maps.hostSessions.get(A);
  assert.deepEqual(h, { sessions: 1, recheck_ns: t0 + 121n * NSEC_PER_SEC + 300n * NSEC_PER_SEC },
    'one session, and no scan before the irc session can end (121 s + 5 min)');
});

test('walks of pt_sessions are at least 100 ms apart (PT_RECLAIM_GAP_NS): a host at its limit waits for the next one', SKIP ? { skip: SKIP } : {}, (t) => {
  const { f, ids, t0 } = setup(t, { sessions: 8, flows: 8 }, 1);
  const at = (ms: number): void => f.dp.setTestClock(t0 + BigInt(ms) * 1_000_000n);
  const [A, B] = HOSTS;
  const c = (rule: string, counter: string): number => (counters(f, ids)[rule] as Record<string, number> | undefined)?.[counter] ?? 0;
  at(0);
  run(f, 'lan', udp(A, 50000, SERVER, 5060));          // A: voice (2 min idle), ends at 120.000 s
  // B holds a game session (10 min idle) that ends at 120.050 s, counted, its deadline known.
  const gameEnds = t0 + 120_050_000_000n;
  f.dp.maps.sessions.set({ rule: ids.get('game')!, peer: '0.0.0.0' },
    { opened_ns: gameEnds - 600n * NSEC_PER_SEC, last_seen_ns: gameEnds - 600n * NSEC_PER_SEC, host: B, ifindex: 1 });
  f.dp.maps.hostSessions.set(B, { sessions: 1, recheck_ns: gameEnds });
  at(120_020);
  run(f, 'lan', tcp(A, 40000, SERVER, 6667, TCP.SYN)); // A at its limit: a walk; A's voice session goes, irc opens
  assert.deepEqual([c('irc', 'sessions_opened'), c('voice', 'sessions_expired')], [1, 1]);
  at(120_060);
  // B's game session ended 10 ms ago, but the last walk was 40 ms ago: refused for now.
  run(f, 'lan', udp(B, 50001, SERVER, 5060));
  assert.deepEqual([c('voice', 'sessions_opened'), c('voice', 'refused_host_limit')], [1, 1], 'within PT_RECLAIM_GAP_NS of the last walk, no new walk');
  at(120_130);
  run(f, 'lan', udp(B, 50001, SERVER, 5060));          // 110 ms after the walk: a new one; B's game session goes
  assert.deepEqual([c('voice', 'sessions_opened'), c('game', 'sessions_expired')], [2, 1], JSON.stringify(counters(f, ids)));
});
