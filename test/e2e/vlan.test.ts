/**
 * End to end: a frame with a VLAN tag on the LAN's parent device is another
 * link's traffic (its VLAN sub-interface takes it after TC ingress), so the
 * data path never arms a session on it, even when its source is an address
 * of the LAN's prefix. Here a guest on VLAN 20 of the LAN host's link sends
 * a trigger from 10.77.0.9 (inside lan0's 10.77.0.0/24) straight to the
 * gateway; a TC program on the host's eth0 (test/e2e/vlan-tag.bpf.c) puts
 * the tag in skb->vlan_tci, which veth carries across as a NIC with VLAN
 * offload hands it up (this kernel has no 802.1Q devices to do it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LAN_HOST, ROOT, Topology, WAN_SERVER, sleep } from './topology.js';

const root = process.getuid?.() === 0;
const GUEST = '10.77.0.9';

test('a VLAN-tagged trigger on the LAN\'s parent device arms nothing; the same trigger untagged does', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  await topo.startDaemon(topo.writeConfig(`  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
`));
  const lan = topo.ns.lan;
  topo.exec(lan, 'ip', 'addr', 'add', `${GUEST}/32`, 'dev', 'eth0');
  topo.exec(lan, 'ip', 'route', 'add', `${WAN_SERVER}/32`, 'via', '10.77.0.1', 'src', GUEST);
  topo.exec(lan, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'clsact');
  topo.exec(lan, 'tc', 'filter', 'add', 'dev', 'eth0', 'egress', 'bpf', 'da', 'obj', join(ROOT, 'build/test-vlan-tag.bpf.o'), 'sec', 'tc');

  await topo.once(lan, 'udp-once', WAN_SERVER, 27015, 'tagged', 1000);
  await sleep(300);
  assert.deepEqual(await topo.sessions(), [], 'no session from the tagged trigger');
  assert.equal((await topo.ruleCounters('game')).trigger_hits, 0, 'not counted as a trigger');

  // Untagged, from the LAN host's own address: the rule works in this topology.
  topo.exec(lan, 'ip', 'route', 'del', `${WAN_SERVER}/32`);
  await topo.once(lan, 'udp-once', WAN_SERVER, 27015, 'untagged', 1000);
  const s = await topo.sessions();
  assert.equal(s.length, 1);
  assert.equal(s[0]!.host, LAN_HOST);
});
