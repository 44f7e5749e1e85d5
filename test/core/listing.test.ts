/**
 * Listings of large tables: filtered by rule, host, peer and limit, with the
 * same session flow counts as planSweep(), streamed by the control socket as
 * a JSON array one element per line, and refused with a stable code when a
 * filter is bad.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLOCK_BIAS_NS, DIR_IN, DIR_OUT, FLOW6_CONTACTED, IPPROTO_UDP, NSEC_PER_SEC } from '../../src/bpf/abi.js';
import { compileRules } from '../../src/rules/compile.js';
import { planSweep, sessionId } from '../../src/core/sweep.js';
import { listFlows, listSessions } from '../../src/core/listing.js';
import { PorttrigState } from '../../src/core/state.js';
import { ControlServer, listFilter } from '../../src/daemon/control.js';
import { nullLogger } from '../../src/daemon/log.js';
import { PorttrigError } from '../../src/errors.js';
import type { Rule } from '../../src/config/types.js';
import { bpfSkipReason, useDatapath, type TestDatapath } from '../helpers/bpffs.js';
import { fillTables, nthAddr, HOST_NET, REMOTE_NET, SESSION_PEER_NET } from '../helpers/tables.js';

const SKIP = bpfSkipReason();
const WAN = '203.0.113.1';
const S = NSEC_PER_SEC;

function rule(name: string, port: number): Rule {
  return {
    name, enabled: true, trigger: { protos: ['udp'], ranges: [{ from: port, to: port }] },
    open: [{ protos: ['udp'], from: port + 1000, to: port + 1000, lanFrom: port + 1000 }],
    idleTimeoutMs: 60_000, peer: 'contacted', conflict: 'first', killFlowsOnExpiry: false,
  };
}

async function all<T>(g: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of g) out.push(x);
  return out;
}

function seed(t: Parameters<typeof useDatapath>[0]): { f: TestDatapath; now: bigint; game: number; chat: number } {
  const f = useDatapath(t, { limits: { sessions: 16384, flows: 16384 } });
  const c = compileRules([rule('game', 5000), rule('chat', 5001)]);
  f.state.applyRules(c);
  const now = CLOCK_BIAS_NS + 3600n * S;
  const game = c.ids.get('game')!;
  const chat = c.ids.get('chat')!;
  // game: 9000 sessions, every 4th expired; flows on the first 6000, every 3rd past its timer.
  fillTables(f.dp.maps, {
    rule: game, sessions: 9000, hostsEvery: 10, flows: 6000, wanAddr: WAN, wanPort: 6000, proto: IPPROTO_UDP,
    sessionSeen: (i) => now - (i % 4 === 0 ? 61n * S : 5n * S), flowSeen: (i) => now - (i % 3 === 0 ? 400n * S : 1n * S),
  });
  fillTables(f.dp.maps, {
    rule: chat, sessions: 3000, hostsEvery: 10, flows: 0, wanAddr: WAN, wanPort: 6001, proto: IPPROTO_UDP,
    sessionSeen: () => now, flowSeen: () => now,
  });
  return { f, now, game, chat };
}

test('listSessions: every live session with planSweep\'s flow counts; rule, host, peer and limit filters', SKIP ? { skip: SKIP } : {}, async (t) => {
  const { f, now } = seed(t);
  const plan = planSweep(f.dp.maps.sessions.entries(), f.dp.maps.flows.entries(), f.state.ruleSettings(), now);
  const rows = await all(listSessions(f.state, {}, now));
  assert.equal(rows.length, 9000 - 2250 + 3000, 'live sessions of both rules');
  const names = f.state.ruleIds();
  const byKey = new Map(rows.map((r) => [sessionId({ rule: names.get(r.rule)!, peer: r.peer! }), r.flows]));
  const want = new Map([...byKey.keys()].map((k) => [k, plan.flowsPerSession.get(k) ?? 0]));
  assert.deepEqual(byKey, want, 'flow counts per session as planSweep counts them');
  assert.ok([...byKey.values()].some((n) => n > 0) && [...byKey.values()].some((n) => n === 0));
  assert.ok(rows.every((r, i) => i === 0 || rows[i - 1]!.rule.localeCompare(r.rule) <= 0), 'sorted by rule');

  assert.equal((await all(listSessions(f.state, { rule: 'chat' }, now))).length, 3000);
  const host = nthAddr(HOST_NET, 1);  // sessions 10..19 of each rule
  const hostRows = await all(listSessions(f.state, { host }, now));
  assert.equal(hostRows.filter((r) => r.rule === 'chat').length, 10);
  assert.equal(hostRows.filter((r) => r.rule === 'game').length, 8, 'two of its ten game sessions expired (12, 16)');
  const peer = nthAddr(SESSION_PEER_NET, 13);
  assert.deepEqual((await all(listSessions(f.state, { peer, rule: 'game' }, now))).map((r) => [r.host, r.peer]), [[host, peer]]);
  assert.equal((await all(listSessions(f.state, { limit: 7 }, now))).length, 7);
});

test('listFlows: inbound entries only, filtered, limited', SKIP ? { skip: SKIP } : {}, async (t) => {
  const { f, now } = seed(t);
  assert.equal((await all(listFlows(f.state, {}, now))).length, 6000);
  assert.equal((await all(listFlows(f.state, { rule: 'chat' }, now))).length, 0);
  const remote = nthAddr(REMOTE_NET, 42);
  assert.deepEqual((await all(listFlows(f.state, { peer: remote }, now))).map((r) => [r.remote, r.host, r.wan_port]),
    [[remote, nthAddr(HOST_NET, 4), 6000]]);
  assert.equal((await all(listFlows(f.state, { host: nthAddr(HOST_NET, 4) }, now))).length, 10);
  assert.equal((await all(listFlows(f.state, { limit: 100 }, now))).length, 100);
});

test('bad filters: unknown rule E_NOT_FOUND, bad address or limit E_USAGE, unknown parameter E_USAGE', SKIP ? { skip: SKIP } : {}, async (t) => {
  const { f, now } = seed(t);
  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'none', (e: unknown) => (e as PorttrigError).code);
  assert.equal(await code(all(listSessions(f.state, { rule: 'nope' }, now))), 'E_NOT_FOUND');
  assert.equal(await code(all(listSessions(f.state, { host: 'x' }, now))), 'E_USAGE');
  assert.equal(await code(all(listFlows(f.state, { limit: 0 }, now))), 'E_USAGE');
  assert.throws(() => listFilter(new URLSearchParams('limit=-1')), { code: 'E_USAGE' });
  assert.throws(() => listFilter(new URLSearchParams('color=red')), { code: 'E_USAGE' });
  assert.deepEqual(listFilter(new URLSearchParams('rule=a&host=10.0.0.1&peer=1.2.3.4&limit=5')), { rule: 'a', host: '10.0.0.1', peer: '1.2.3.4', limit: 5 });
});

function get(socket: string, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method: 'GET', path }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode!, text }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('the control socket streams listings as a JSON array, one element per line', SKIP ? { skip: SKIP } : {}, async (t) => {
  const { f, now } = seed(t);
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-list-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'ctl.sock');
  const server = await ControlServer.listen(socket, {
    status: () => ({}), rules: () => [], reload: () => ({}), openSession: () => ({}), closeSession: () => ({}),
    sessions: (q) => listSessions(f.state, q, now), flows: (q) => listFlows(f.state, q, now),
  }, nullLogger);
  t.after(() => server.close());
  const r = await get(socket, '/v1/sessions');
  assert.equal(r.status, 200);
  const rows = JSON.parse(r.text) as unknown[];
  assert.equal(rows.length, 9750);
  assert.equal(r.text.split('\n').length, rows.length + 3, 'one element per line between "[" and "]"');
  assert.equal((JSON.parse((await get(socket, '/v1/flows?rule=game&limit=3')).text) as unknown[]).length, 3);
  assert.equal((await get(socket, '/v1/flows?rule=chat')).text, '[]\n');
  const bad = await get(socket, '/v1/sessions?rule=nope');
  assert.equal(bad.status, 404);
  assert.equal((JSON.parse(bad.text) as { error: { code: string } }).error.code, 'E_NOT_FOUND');
  assert.equal((await get(socket, '/v1/sessions?limit=abc')).status, 400);
});

test('IPv6 (SPEC 9): both families listed with `family`, IPv6 flow counts as flowFate6 decides, filters by IPv6 host and peer, --family, limit across families', SKIP ? { skip: SKIP } : {}, async (t) => {
  const f = useDatapath(t, { limits: { sessions: 1024, flows: 1024 } });
  const c = compileRules([rule('game', 5000), { ...rule('any', 5001), peer: 'any' }]);
  f.state.applyRules(c);
  const now = CLOCK_BIAS_NS + 3600n * S;
  const game = c.ids.get('game')!;
  const anyRule = c.ids.get('any')!;
  const host = (i: number): string => `2001:db8:1::${(i + 16).toString(16)}`;
  const remote = (i: number): string => `2001:db8:ff::${(i + 16).toString(16)}`;
  const live = { opened_ns: now - 10n * S, last_seen_ns: now - 5n * S, ifindex: 3 };
  // game (contacted): 20 sessions keyed by peer, every 5th expired; `any`: 6 hosts keyed by host.
  for (let i = 0; i < 20; i++) {
    f.dp.maps.sessions6.set({ rule: game, host: '::', peer: remote(i) }, { ...live, host: host(i % 4), last_seen_ns: i % 5 === 0 ? now - 61n * S : live.last_seen_ns });
  }
  for (let i = 0; i < 6; i++) f.dp.maps.sessions6.set({ rule: anyRule, host: host(i), peer: '::' }, { ...live, host: host(i) });
  // One IPv4 session of `any` (dual stack).
  f.dp.maps.sessions.set({ rule: anyRule, peer: '0.0.0.0' }, { ...live, host: '10.0.0.5' });
  // Flows: game flow of peer 1 (live), of peer 2 (past its UDP timer), of peer 5 (session expired: still counted nowhere);
  // `any` flows of host 0: two live, one whose reply entry is missing.
  const flow = (rule: number, flags: number, h: string, r: string, rport: number, seenAgo: bigint, partner = true): void => {
    const base = { created_ns: now - 500n * S, last_seen_ns: now - seenAgo * S, rule, ifindex: 3, seen: 0, flags };
    f.dp.maps.flows6.set({ saddr: r, daddr: h, sport: rport, dport: 6000, proto: IPPROTO_UDP, dir: DIR_IN }, { ...base, nat_port: 6000 });
    if (partner) f.dp.maps.flows6.set({ saddr: h, daddr: r, sport: 6000, dport: rport, proto: IPPROTO_UDP, dir: DIR_OUT }, { ...base, nat_port: 6000 });
  };
  flow(game, FLOW6_CONTACTED, host(1), remote(1), 40001, 1n);
  flow(game, FLOW6_CONTACTED, host(2), remote(2), 40002, 400n);
  flow(game, FLOW6_CONTACTED, host(1), remote(5), 40005, 1n);
  flow(anyRule, 0, host(0), remote(7), 40007, 1n);
  flow(anyRule, 0, host(0), remote(8), 40008, 1n);
  flow(anyRule, 0, host(0), remote(9), 40009, 1n, false);

  const rows = await all(listSessions(f.state, {}, now));
  assert.equal(rows.length, 16 + 6 + 1);
  assert.deepEqual(rows.slice(0, 3).map((r) => [r.rule, r.family, r.host]), [['any', 'ipv4', '10.0.0.5'], ['any', 'ipv6', host(0)], ['any', 'ipv6', host(1)]],
    'sorted by rule, IPv4 before IPv6, then host');
  const flowsOf = (rule: string, h: string, p: string | null): number | undefined => rows.find((r) => r.rule === rule && r.host === h && r.peer === p)?.flows;
  assert.equal(flowsOf('any', host(0), null), 2, 'the flow without its reply entry does not count');
  assert.equal(flowsOf('game', host(1), remote(1)), 1);
  assert.equal(flowsOf('game', host(2), remote(2)), 0, 'a flow past its timer does not count');
  assert.equal(flowsOf('game', host(1), remote(5)), undefined, 'an expired session is not listed');
  // The same counts as PorttrigState.sessions() at the same clock.
  const atNow = new PorttrigState(f.dp.maps, () => now, f.dp);
  assert.deepEqual(rows.map((r) => [r.rule, r.family, r.host, r.peer, r.flows]).sort(),
    atNow.sessions().map((r) => [r.rule, r.family, r.host, r.peer, r.flows]).sort());

  assert.deepEqual((await all(listSessions(f.state, { host: '2001:DB8:1:0::10' }, now))).map((r) => [r.rule, r.host]).sort(),
    [['any', host(0)], ...Array(4).fill(['game', host(0)])].sort(), 'an IPv6 host filter in any text form; game: remote(0,4,8,12,16) minus the expired 0');
  assert.deepEqual((await all(listSessions(f.state, { peer: remote(3) }, now))).map((r) => [r.host, r.peer]), [[host(3), remote(3)]]);
  assert.equal((await all(listSessions(f.state, { family: 'ipv4' }, now))).length, 1);
  assert.equal((await all(listSessions(f.state, { family: 'ipv6' }, now))).length, 22);
  assert.equal((await all(listSessions(f.state, { host: '10.0.0.5' }, now))).length, 1, 'an IPv4 host lists IPv4 only');
  assert.equal((await all(listSessions(f.state, { limit: 3 }, now))).length, 3, 'limit counts both families');

  const flows = await all(listFlows(f.state, {}, now));
  assert.equal(flows.length, 6);
  assert.ok(flows.every((x) => x.family === 'ipv6'));
  assert.deepEqual((await all(listFlows(f.state, { host: host(0) }, now))).map((x) => x.remote).sort(), [remote(7), remote(8), remote(9)].sort());
  assert.deepEqual((await all(listFlows(f.state, { peer: remote(1), rule: 'game' }, now))).map((x) => [x.host, x.wan_port, x.host_port]), [[host(1), 6000, 6000]]);
  assert.equal((await all(listFlows(f.state, { family: 'ipv4' }, now))).length, 0);

  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'none', (e: unknown) => (e as PorttrigError).code);
  assert.equal(await code(all(listSessions(f.state, { host: host(0), peer: '198.51.100.1' }, now))), 'E_USAGE');
  assert.equal(await code(all(listSessions(f.state, { host: host(0), family: 'ipv4' }, now))), 'E_USAGE');
  assert.equal(await code(all(listSessions(f.state, { host: 'fe80::1%lan0' }, now))), 'E_USAGE');
  assert.deepEqual(listFilter(new URLSearchParams('host=2001:db8::1&family=ipv6')), { host: '2001:db8::1', family: 'ipv6' });
  assert.throws(() => listFilter(new URLSearchParams('family=ipx')), { code: 'E_USAGE' });
});
