/**
 * End to end over the WAN links that gateways really have: a layer-3 WAN
 * (TUN devices joined by test/e2e/tun-relay.py: no link-layer header,
 * ARPHRD_NONE, as pppd's ppp0), and a WAN interface that goes away and comes
 * back with a new ifindex (as ppp0 on every redial).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GW_WAN, LAN_HOST, Topology, WAN_SERVER, sleep } from './topology.js';

const root = process.getuid?.() === 0;

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
`;

function setup(t: { after: (fn: () => void) => void }): Topology {
  const topo = new Topology({ wanLink: 'tun' });
  t.after(() => topo.destroy());
  return topo.create();
}

interface StatusJson { wan: { interface: string; ifindex: number; present: boolean; link_type: string | null; program: string | null; address: string | null } }

test('layer-3 WAN (TUN): the daemon attaches the L3 program; trigger, inbound TCP and UDP, replies and ICMP errors work over it', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  await topo.startDaemon(topo.writeConfig(RULES));
  const st = await topo.json<StatusJson>('status');
  assert.deepEqual({ present: st.wan.present, link_type: st.wan.link_type, program: st.wan.program },
    { present: true, link_type: 'none', program: 'pt_wan_ingress_l3' });

  const ident = await topo.listener(topo.ns.lan, 'tcp-echo', 113);
  await topo.listener(topo.ns.wan, 'tcp-echo', 6667);
  const before = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hello', 1500);
  assert.equal(before.ok, false, `reached the LAN host before any trigger: ${JSON.stringify(before)}`);

  // The trigger goes out over the TUN WAN (masqueraded by the kernel).
  const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
  assert.equal(trig.ok, true, `trigger connection over the layer-3 WAN failed: ${JSON.stringify(trig)}`);

  // Inbound from the L3 WAN to the Ethernet LAN (an Ethernet header pushed
  // for bpf_redirect_neigh), replies from the LAN to the L3 WAN (bpf_redirect).
  const talk = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 113);
  await talk.waitFor((e) => e.event === 'connected', 5000);
  talk.send('first');
  await talk.waitFor((e) => e.reply === 'echo:first');
  const acc = await ident.waitFor((e) => e.event === 'accept');
  assert.equal(acc.remote, WAN_SERVER, 'the LAN host sees the real remote peer');
  // A bulk transfer both ways (several full-sized segments per direction).
  const big = 'x'.repeat(60_000);
  talk.send(big);
  await talk.waitFor((e) => e.reply === `echo:${big}`, 10_000);

  // UDP with port translation.
  const game = await topo.listener(topo.ns.lan, 'udp-echo', 28000);
  await topo.listener(topo.ns.wan, 'udp-echo', 27015);
  const utrig = await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 27015, 'register', 3000);
  assert.equal(utrig.ok, true, JSON.stringify(utrig));
  const r = await topo.once(topo.ns.wan, 'udp-once', GW_WAN, 27000, 'join', 3000);
  assert.deepEqual({ ok: r.ok, reply: r.reply, from: r.from, from_port: r.from_port },
    { ok: true, reply: 'echo:join', from: GW_WAN, from_port: 27000 });
  const seen = await game.waitFor((e) => e.data === 'join');
  assert.equal(seen.remote, WAN_SERVER);

  // ICMP: the LAN host's port unreachable about a flow reaches the remote,
  // translated (its connected socket reports ECONNREFUSED).
  game.kill('SIGKILL');
  await game.exited();
  const refused = await topo.once(topo.ns.wan, 'udp-connected', GW_WAN, 27000, 'anyone', 3000);
  assert.deepEqual({ ok: refused.ok, error: refused.error }, { ok: false, error: 'ECONNREFUSED' },
    `the remote must get the LAN host's port unreachable, translated: ${JSON.stringify(refused)}`);
});

test('WAN interface deleted and re-created (new ifindex): the daemon waits, re-attaches within a second; the open session and its flow work again', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  const d = await topo.startDaemon(topo.writeConfig(RULES));
  const ident = await topo.listener(topo.ns.lan, 'tcp-echo', 113);
  const game = await topo.listener(topo.ns.lan, 'udp-echo', 28000);
  await topo.listener(topo.ns.wan, 'tcp-echo', 6667);
  await topo.listener(topo.ns.wan, 'udp-echo', 27015);
  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000)).ok, true);
  assert.equal((await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 27015, 'register', 3000)).ok, true);

  // An open session with an accepted flow, before the gap.
  const talk = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 113);
  await talk.waitFor((e) => e.event === 'connected', 5000);
  talk.send('before');
  await talk.waitFor((e) => e.reply === 'echo:before');
  await ident.waitFor((e) => e.event === 'accept');

  // Take the WAN away for 4 s (the daemon keeps running and says so), then back.
  const gone = topo.replaceWan(4000);
  for (const t0 = Date.now(); !d.stderr.includes('interface gone'); await sleep(20)) {
    assert.ok(Date.now() - t0 < 3000, `the daemon did not notice wan0 going away: ${d.stderr}`);
  }
  const during = await topo.json<StatusJson>('status');
  assert.equal(during.wan.present, false, `status while wan0 is gone: ${JSON.stringify(during.wan)}`);
  assert.equal(during.wan.program, null);
  const { before, after } = await gone;
  assert.notEqual(after, before, 'the new wan0 has a new ifindex');
  const back = Date.now();

  // A new inbound connection is forwarded within 2 s of the interface coming back.
  let fresh: Record<string, unknown> = { ok: false };
  while (Date.now() - back < 2000) {
    fresh = await topo.once(topo.ns.wan, 'udp-once', GW_WAN, 27000, 'after', 300);
    if (fresh.ok) break;
  }
  const took = Date.now() - back;
  assert.equal(fresh.ok, true, `no new inbound datagram forwarded within 2 s of wan0 coming back: ${JSON.stringify(fresh)}\n${d.stderr}`);
  assert.equal(fresh.from_port, 27000);
  await game.waitFor((e) => e.data === 'after');
  t.diagnostic(`new inbound connection forwarded ${took} ms after wan0 came back`);

  const st = await topo.json<StatusJson>('status');
  assert.deepEqual({ present: st.wan.present, ifindex: st.wan.ifindex, program: st.wan.program },
    { present: true, ifindex: after, program: 'pt_wan_ingress_l3' });
  assert.match(d.stderr, /interface came back; attached/);

  // The connection accepted before the gap works again (TCP retransmits).
  talk.send('after');
  await talk.waitFor((e) => e.reply === 'echo:after', 10_000);
  const sessions = await topo.sessions();
  assert.deepEqual(sessions.map((s) => [s.rule, s.host]).sort(), [['game', LAN_HOST], ['irc-ident', LAN_HOST]]);
});
