/**
 * End to end: real sockets between a LAN host and a WAN server through a
 * gateway running the porttrig daemon, in network namespaces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GW_WAN, LAN_HOST, Topology, WAN_SERVER, sleep } from './topology.js';

const root = process.getuid?.() === 0;
// Long enough that a loaded CI machine's CLI start (a few s) between the LAN
// host's last packet and a listing does not outlast the session.
const IDLE = '6s';
const IDLE_MS = 6000;
const SWEEP_SLACK_MS = 1500;

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
    idle_timeout: ${IDLE}
  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
    idle_timeout: ${IDLE}
  - name: callback
    trigger: udp/5060
    open: tcp/5061
`;

function setup(t: { after: (fn: () => void) => void }, opts = {}): Topology {
  const topo = new Topology(opts);
  t.after(() => topo.destroy());
  return topo.create();
}

test('TCP: closed before the trigger, forwarded after it, closed again after the idle timeout', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  const cfg = topo.writeConfig(RULES);
  await topo.startDaemon(cfg);
  const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
  await ident.waitFor((e) => e.event === 'listening');
  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');

  const before = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hello', 1500);
  assert.equal(before.ok, false, `reached the LAN host before any trigger: ${JSON.stringify(before)}`);

  const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
  assert.equal(trig.ok, true, `trigger connection failed: ${JSON.stringify(trig)}`);

  // A long-lived connection, accepted while the session is open.
  const talk = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 113);
  await talk.waitFor((e) => e.event === 'connected');
  talk.send('first');
  const r1 = await talk.waitFor((e) => e.reply === 'echo:first');
  assert.ok(r1);
  const acc = await ident.waitFor((e) => e.event === 'accept');
  assert.equal(acc.remote, WAN_SERVER, 'the LAN host sees the real remote peer');

  const sessions = JSON.parse((await topo.cli('sessions', '--json')).stdout) as Record<string, unknown>[];
  assert.equal(sessions.length, 1);
  assert.equal(sessions[0]!.rule, 'irc-ident');
  assert.equal(sessions[0]!.host, LAN_HOST);
  assert.equal(sessions[0]!.peer, null);
  assert.equal(sessions[0]!.flows, 1);
  for (const k of ['opened_at', 'last_seen', 'expires_in_s']) assert.ok(k in sessions[0]!, `sessions --json lacks ${k}`);

  // Idle: no trigger, no flow traffic, for longer than the timeout.
  await sleep(IDLE_MS + SWEEP_SLACK_MS);
  const after = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'late', 1500);
  assert.equal(after.ok, false, `new connection forwarded after the idle timeout: ${JSON.stringify(after)}`);
  assert.deepEqual(JSON.parse((await topo.cli('sessions', '--json')).stdout), []);

  // The connection accepted before the timeout still works.
  talk.send('second');
  await talk.waitFor((e) => e.reply === 'echo:second');
});

test('UDP with port translation: replies come from the WAN address and port', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t, { hostTxOffload: false });
  await topo.startDaemon(topo.writeConfig(RULES));
  const game = topo.peer(topo.ns.lan, 'udp-echo', 28000);
  await game.waitFor((e) => e.event === 'listening');
  const master = topo.peer(topo.ns.wan, 'udp-echo', 27015);
  await master.waitFor((e) => e.event === 'listening');

  const before = await topo.once(topo.ns.wan, 'udp-once', GW_WAN, 27000, 'ping', 1000);
  assert.equal(before.ok, false);

  const trig = await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 27015, 'register', 3000);
  assert.equal(trig.ok, true, JSON.stringify(trig));

  const r = await topo.once(topo.ns.wan, 'udp-once', GW_WAN, 27000, 'join', 3000);
  assert.deepEqual({ ok: r.ok, reply: r.reply, from: r.from, from_port: r.from_port },
    { ok: true, reply: 'echo:join', from: GW_WAN, from_port: 27000 });
  const seen = await game.waitFor((e) => e.data === 'join');
  assert.equal(seen.remote, WAN_SERVER);

  const flows = JSON.parse((await topo.cli('flows', '--json')).stdout) as Record<string, unknown>[];
  assert.equal(flows.length, 1);
  assert.deepEqual({ rule: flows[0]!.rule, wan_port: flows[0]!.wan_port, host: flows[0]!.host, host_port: flows[0]!.host_port },
    { rule: 'game', wan_port: 27000, host: LAN_HOST, host_port: 28000 });

  await sleep(IDLE_MS + SWEEP_SLACK_MS);
  const late = await topo.once(topo.ns.wan, 'udp-once', GW_WAN, 27001 - 1, 'again', 1000);
  // The old flow (same source port? no: a fresh socket) is not reused; the session is gone.
  assert.equal(late.ok, false, JSON.stringify(late));
});

test('an inbound connection sent the moment the trigger arrives gets through (opened in the kernel)', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  await topo.startDaemon(topo.writeConfig(RULES));
  const app = topo.peer(topo.ns.lan, 'tcp-echo', 5061);
  await app.waitFor((e) => e.event === 'listening');
  // The server connects back as soon as the trigger datagram reaches it.
  const server = topo.peer(topo.ns.wan, 'udp-callback', 5060, GW_WAN, 5061, 2000);
  await server.waitFor((e) => e.event === 'listening');
  topo.peer(topo.ns.lan, 'udp-once', WAN_SERVER, 5060, 'INVITE', 500);
  const cb = await server.waitFor((e) => e.event === 'callback');
  assert.equal(cb.ok, true, `callback right after the trigger failed: ${JSON.stringify(cb)}`);
  assert.equal(cb.reply, 'echo:callback');
});

test('without a rule for it, the same application cannot be reached', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  await topo.startDaemon(topo.writeConfig(RULES.replace('trigger: udp/5060', 'enabled: false\n    trigger: udp/5060')));
  const app = topo.peer(topo.ns.lan, 'tcp-echo', 5061);
  await app.waitFor((e) => e.event === 'listening');
  const server = topo.peer(topo.ns.wan, 'udp-callback', 5060, GW_WAN, 5061, 1500);
  await server.waitFor((e) => e.event === 'listening');
  topo.peer(topo.ns.lan, 'udp-once', WAN_SERVER, 5060, 'INVITE', 500);
  const cb = await server.waitFor((e) => e.event === 'callback', 5000);
  assert.equal(cb.ok, false, `reached the LAN host with the rule disabled: ${JSON.stringify(cb)}`);
});
