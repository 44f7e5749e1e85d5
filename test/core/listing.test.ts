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
import { CLOCK_BIAS_NS, IPPROTO_UDP, NSEC_PER_SEC } from '../../src/bpf/abi.js';
import { compileRules } from '../../src/rules/compile.js';
import { planSweep, sessionId } from '../../src/core/sweep.js';
import { listFlows, listSessions } from '../../src/core/listing.js';
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
