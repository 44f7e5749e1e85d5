/**
 * packaging/deb/detach.sh, the `porttrig detach` that postrm purge runs in
 * POSIX sh once porttrig's files are gone, against a real daemon's state:
 * the same outcome as test/e2e/restart-detach.test.ts asks of
 * `porttrig detach` (programs and created qdiscs gone, a foreign clsact and
 * its filter kept, an interface that vanished meanwhile skipped, every pin
 * removed, forwarding stopped, a second run has nothing to do).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ATTACH_CREATED_QDISC, ATTACH_XDP, MAPS, PT_TC_HANDLE, PT_TC_PRIORITY, TAIL_CALL_MAPS, XDP_LAN_PROGRAM, XDP_PROGRAM, XDP_TX_PROGRAMS } from '../../src/bpf/abi.js';
import { xdpLinkPin } from '../../src/bpf/datapath.js';
import { REPO_ROOT } from '../helpers/bpffs.js';
import { GW_WAN, Topology, WAN_SERVER } from '../e2e/topology.js';
import { exitCode, hasClsact, porttrigProgId, tcFilters } from '../e2e/restart-util.js';

const root = process.getuid?.() === 0;
const DETACH_SH = join(REPO_ROOT, 'packaging/deb/detach.sh');

test('detach.sh names the ABI\'s filter handle, priority, created-qdisc and XDP flags, the XDP program and the pins', () => {
  const sh = readFileSync(DETACH_SH, 'utf8');
  assert.match(sh, new RegExp(`pref ${PT_TC_PRIORITY} handle 0x${PT_TC_HANDLE.toString(16)} bpf`));
  assert.match(sh, new RegExp(`flags & ${ATTACH_CREATED_QDISC}\\)`));
  assert.match(sh, new RegExp(`flags & ${ATTACH_XDP}\\)`));
  assert.match(sh, new RegExp(`name \\(${XDP_PROGRAM}\\|${XDP_LAN_PROGRAM}\\) `));
  for (const p of XDP_TX_PROGRAMS) assert.ok(/^pt_/.test(xdpLinkPin(p)), `${p}: detach.sh removes its link pin (pt_*)`);
  assert.match(sh, new RegExp(`"\\$pin/${MAPS.attach}"`));
  for (const m of [...Object.values(MAPS), ...TAIL_CALL_MAPS]) assert.ok(/^pt6?_/.test(m), `${m}: detach.sh removes pt_* and pt6_* pins`);
  assert.match(sh, /for p in "\$pin"\/pt_\* "\$pin"\/pt6_\*; do/);
});

test('postrm purge\'s detach.sh removes programs, created qdiscs and pins; a foreign clsact filter survives; twice is fine', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  topo.exec(topo.ns.gw, 'tc', 'qdisc', 'add', 'dev', 'wan0', 'clsact');
  topo.exec(topo.ns.gw, 'tc', 'filter', 'add', 'dev', 'wan0', 'ingress', 'prio', '2', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0');
  topo.exec(topo.ns.gw, 'ip', 'link', 'add', 'lan1', 'type', 'veth', 'peer', 'name', 'lan1p');
  topo.exec(topo.ns.gw, 'ip', 'link', 'set', 'lan1', 'up');
  const cfg = topo.writeConfig(`  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
`);
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
  assert.ok(porttrigProgId(topo, 'lan0') > 0 && porttrigProgId(topo, 'wan0') > 0 && porttrigProgId(topo, 'lan1') > 0);
  topo.exec(topo.ns.gw, 'ip', 'link', 'del', 'lan1');

  const detach = (): string => topo.exec(topo.ns.gw, 'sh', '-c', `. '${DETACH_SH}' && pt_detach '${topo.pinPath}'`);
  const out = detach();
  // The maps and the daemon's prog array (TAIL_CALL_MAPS).
  assert.match(out, new RegExp(`detached from 2 interfaces, removed ${Object.keys(MAPS).length + TAIL_CALL_MAPS.length} pins under ${topo.pinPath}`));
  assert.equal(porttrigProgId(topo, 'lan0'), 0);
  assert.equal(porttrigProgId(topo, 'wan0'), 0);
  assert.equal(hasClsact(topo, 'lan0'), false, 'porttrig created the clsact qdisc on lan0: removed');
  assert.equal(hasClsact(topo, 'wan0'), true, 'the clsact qdisc on wan0 was there before: kept');
  assert.match(tcFilters(topo, 'wan0'), /pref 2 u32/, 'its filter survives');
  const left = existsSync(topo.pinPath) ? readdirSync(topo.pinPath).filter((n) => /^pt6?_/.test(n)) : [];
  assert.deepEqual(left, [], 'no pins left');

  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK y', 3000)).ok, true);
  const after = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'again', 1500);
  assert.equal(after.ok, false, JSON.stringify(after));

  assert.match(detach(), /^$|detached from 0 interfaces, removed 0 pins/);
});
