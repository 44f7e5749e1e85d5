/**
 * End to end: the daemon dies (SIGKILL) or stops (SIGTERM) and a new one
 * adopts the pinned state (SPEC 6). A TCP counter stream through an opened
 * port must lose no byte and stay up throughout; a new inbound connection
 * must work while no daemon runs; the new daemon must list the same sessions
 * and flows and continue the counters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GW_WAN, LAN_HOST, Topology, WAN_SERVER, sleep } from './topology.js';
import { assertStreamIntact, cliJson, exitCode, porttrigProgId, streamAdvances, streamPeer } from './restart-util.js';

const root = process.getuid?.() === 0;
/** Stream lines each end must receive to count as "flowing" (at 20 ms a line). */
const FLOWING = 25;
/** How long the data path runs with no daemon. */
const DOWN_MS = 3000;
/** opened_at is converted from the monotonic clock at each listing (a preemption between the two clock reads shifts it); a re-opened session would be seconds off. */
const CLOCK_SLACK_MS = 50;

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113-114
`;

interface Session { rule: string; host: string; peer: string | null; opened_at: string; flows: number }
interface Flow { rule: string; proto: string; remote: string; remote_port: number; wan_port: number; host: string; host_port: number }
interface Rule { name: string; trigger_hits: number; sessions_opened: number; flows_opened: number }
interface Status { adopted: boolean; attached: { interface: string; program_id: number }[] }

const flowId = (f: Flow): string => `${f.proto} ${f.remote}:${f.remote_port} -> ${f.wan_port} -> ${f.host}:${f.host_port}`;

function sameSessions(before: Session[], after: Session[]): void {
  assert.equal(after.length, before.length, `sessions after restart: ${JSON.stringify(after)}`);
  before.forEach((b, i) => {
    const a = after[i]!;
    assert.deepEqual({ rule: a.rule, host: a.host, peer: a.peer }, { rule: b.rule, host: b.host, peer: b.peer });
    const drift = Math.abs(Date.parse(a.opened_at) - Date.parse(b.opened_at));
    assert.ok(drift <= CLOCK_SLACK_MS, `opened_at changed across the restart: ${b.opened_at} -> ${a.opened_at}`);
  });
}

test('SIGKILL, no daemon, new daemon, SIGTERM: the stream loses nothing; state and counters are adopted', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  const d1 = await topo.startDaemon(cfg);
  const progs1 = (await cliJson<Status>(topo, 'status')).attached.map((a) => a.program_id);

  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');
  const server = streamPeer(topo, topo.ns.lan, 'serve', 113);
  await server.waitFor((e) => e.event === 'listening');
  const echo = topo.peer(topo.ns.lan, 'tcp-echo', 114);
  await echo.waitFor((e) => e.event === 'listening');
  const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
  assert.equal(trig.ok, true, JSON.stringify(trig));

  const client = streamPeer(topo, topo.ns.wan, 'connect', GW_WAN, 113);
  await client.waitFor((e) => e.event === 'connected');
  const ends: [typeof client, string][] = [[client, 'WAN client'], [server, 'LAN server']];
  await streamAdvances(ends, FLOWING);

  const sessions0 = await cliJson<Session[]>(topo, 'sessions');
  const flows0 = await cliJson<Flow[]>(topo, 'flows');
  const rules0 = await cliJson<Rule[]>(topo, 'rules');
  assert.equal(sessions0.length, 1);
  assert.equal(sessions0[0]!.host, LAN_HOST);
  assert.equal(flows0.length, 1);

  // 1. SIGKILL: nothing is cleaned up; the data path forwards on its own.
  d1.kill('SIGKILL');
  await exitCode(d1);
  await sleep(DOWN_MS);
  await streamAdvances(ends, FLOWING);
  // A new inbound connection while no daemon runs (the session is still open).
  const late = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 114, 'while-down', 3000);
  assert.deepEqual({ ok: late.ok, reply: late.reply }, { ok: true, reply: 'echo:while-down' }, JSON.stringify(late));

  // 2. A new daemon on the same config and pins adopts everything.
  const d2 = await topo.startDaemon(cfg);
  const st2 = await cliJson<Status>(topo, 'status');
  assert.equal(st2.adopted, true);
  const progs2 = st2.attached.map((a) => a.program_id);
  progs2.forEach((id, i) => {
    assert.ok(id > 0, `not attached after restart: ${JSON.stringify(st2.attached)}`);
    assert.notEqual(id, progs1[i], 'the new daemon attached its own programs');
  });
  sameSessions(sessions0, await cliJson<Session[]>(topo, 'sessions'));
  const flows2 = await cliJson<Flow[]>(topo, 'flows');
  assert.ok(flows2.some((f) => flowId(f) === flowId(flows0[0]!)), `the stream's flow is listed again: ${JSON.stringify(flows2)}`);
  assert.equal(flows2.length, 2, 'plus the flow accepted while no daemon ran');
  const rules2 = await cliJson<Rule[]>(topo, 'rules');
  assert.equal(rules2[0]!.flows_opened, rules0[0]!.flows_opened + 1, 'per-CPU counters continue across the restart');
  assert.equal(rules2[0]!.sessions_opened, rules0[0]!.sessions_opened);
  assert.ok(rules2[0]!.trigger_hits >= rules0[0]!.trigger_hits);
  await streamAdvances(ends, FLOWING);

  // 3. SIGTERM stops the daemon but not forwarding.
  d2.kill('SIGTERM');
  assert.equal(await exitCode(d2), 0);
  assert.ok(porttrigProgId(topo, 'wan0') > 0, 'programs stay attached after SIGTERM');
  await sleep(DOWN_MS);
  await streamAdvances(ends, FLOWING);
  const d3 = await topo.startDaemon(cfg);
  assert.ok(d3);
  sameSessions(sessions0, await cliJson<Session[]>(topo, 'sessions'));
  await streamAdvances(ends, FLOWING);
  for (const [p, who] of ends) assertStreamIntact(p, who);
});
