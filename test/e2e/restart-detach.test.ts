/**
 * End to end: `porttrig detach` removes porttrig's programs, the clsact
 * qdiscs porttrig created (not one that was there before, with its own
 * filter), and every pin, also when an interface has vanished meanwhile;
 * forwarding stops; a second run has nothing to do.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { MAPS, TAIL_CALL_MAPS } from '../../src/bpf/abi.js';
import { GW_WAN, Topology, WAN_SERVER } from './topology.js';
import { exitCode, hasClsact, porttrigProgId, tcFilters } from './restart-util.js';

const root = process.getuid?.() === 0;
const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
`;

test('detach removes programs, created qdiscs and pins; a foreign clsact filter survives; twice is fine', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  // wan0 already has a clsact qdisc with someone else's filter (another priority).
  topo.exec(topo.ns.gw, 'tc', 'qdisc', 'add', 'dev', 'wan0', 'clsact');
  topo.exec(topo.ns.gw, 'tc', 'filter', 'add', 'dev', 'wan0', 'ingress', 'prio', '2', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0');
  // lan1 will have vanished by the time detach runs (a USB NIC unplugged).
  topo.exec(topo.ns.gw, 'ip', 'link', 'add', 'lan1', 'type', 'veth', 'peer', 'name', 'lan1p');
  topo.exec(topo.ns.gw, 'ip', 'link', 'set', 'lan1', 'up');
  const cfg = topo.writeConfig(RULES);
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('lan: [lan0]', 'lan: [lan0, lan1]'));
  const d = await topo.startDaemon(cfg);
  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');
  const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
  await ident.waitFor((e) => e.event === 'listening');
  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000)).ok, true);
  assert.equal((await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hi', 3000)).ok, true);
  d.kill('SIGTERM');
  assert.equal(await exitCode(d), 0);
  assert.ok(porttrigProgId(topo, 'lan0') > 0 && porttrigProgId(topo, 'wan0') > 0);

  topo.exec(topo.ns.gw, 'ip', 'link', 'del', 'lan1');
  const r = await topo.cli('detach', '--config', cfg);
  assert.equal(r.status, 0, r.stderr);
  // One pin per state map of the object, and the daemon's pin of its tail-call array (pt6_progs).
  const pins = Object.keys(MAPS).length + TAIL_CALL_MAPS.length;
  assert.match(r.stdout, new RegExp(`detached from 3 interfaces, removed ${pins} pins`), 'one pin per map of the object and pt6_progs');
  assert.equal(porttrigProgId(topo, 'lan0'), 0);
  assert.equal(porttrigProgId(topo, 'wan0'), 0);
  assert.equal(hasClsact(topo, 'lan0'), false, 'porttrig created the clsact qdisc on lan0: removed');
  assert.equal(hasClsact(topo, 'wan0'), true, 'the clsact qdisc on wan0 was there before: kept');
  assert.match(tcFilters(topo, 'wan0'), /pref 2 u32/, 'its filter survives');
  // The pin dir goes too when porttrig's bpffs is left empty.
  const left = existsSync(topo.pinPath) ? readdirSync(topo.pinPath).filter((n) => n.startsWith('pt_')) : [];
  assert.deepEqual(left, [], 'no pins left');

  // Forwarding is gone: a fresh trigger opens nothing.
  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK y', 3000)).ok, true);
  const after = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'again', 1500);
  assert.equal(after.ok, false, JSON.stringify(after));

  const again = await topo.cli('detach', '--config', cfg);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stdout, /nothing to do/);
});
