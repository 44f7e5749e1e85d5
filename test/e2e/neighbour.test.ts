/**
 * End to end: the data path's fast path (bpf/redirect.h) takes the LAN
 * host's MAC from the neighbour table without the kernel's neighbour output,
 * and leaves one packet per flow and second to bpf_redirect_neigh() so that
 * the neighbour state machine still runs. Here a LAN host changes its MAC
 * while the only traffic is inbound (it sends nothing: no ARP of its own
 * tells the gateway). The gateway must find out as kernel forwarding would:
 * its entry goes stale, is probed at the old MAC without answer, fails, and
 * is resolved again by broadcast; delivery resumes. With the fast path
 * alone the stale entry would be used for ever and nothing would arrive.
 * The gateway's neighbour timers on lan0 are shortened so that this takes
 * seconds: reachable 1.5-4.5 s, first probe 1 s after a stale entry is used,
 * probes 200 ms apart. (A reachable time no longer than the first-probe delay
 * would keep the entry probing itself without any traffic, since a probe's
 * answer counts as use: the test would then pass without the upkeep.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GW_WAN, LAN_HOST, Topology, WAN_SERVER, sleep } from './topology.js';

const root = process.getuid?.() === 0;
const NEW_MAC = '02:00:00:77:77:77';
/** Kernel forwarding with these timers needs ~3-5 s; generous for a loaded CI machine. */
const RECOVERY_MS = 30_000;
/** Past the first probe (1 s + 0.6 s) and a reachable time (at most 4.5 s): the entry is STALE. */
const SETTLE_MS = 7_000;

test('a LAN host changes its MAC while only inbound packets flow: the gateway re-resolves it and delivery resumes', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const gw = topo.ns.gw;
  topo.exec(gw, 'sysctl', '-qw', 'net.ipv4.neigh.lan0.base_reachable_time_ms=3000',
    'net.ipv4.neigh.lan0.delay_first_probe_time=1', 'net.ipv4.neigh.lan0.retrans_time_ms=200');
  await topo.startDaemon(topo.writeConfig(`  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
`));
  const host = await topo.listener(topo.ns.lan, 'udp-talk', 28000);
  const remote = await topo.listener(topo.ns.wan, 'udp-talk', 40000);
  host.send(`${WAN_SERVER} 27015 hello`);   // the trigger; the host sends nothing after it
  await topo.sessions().then((s) => assert.equal(s.length, 1, 'session opened'));
  remote.send(`every 50 ${GW_WAN} 27000 ping`);
  const seq = (e: Record<string, unknown>): number => e.event === 'datagram' ? Number(String(e.data).split('-')[1]) : -1;
  await host.waitFor((e) => seq(e) >= 0, 10_000);
  // The flow's first packet (slow path) had the entry probed and confirmed;
  // let it go REACHABLE and then out of its reachable time while the fast
  // path carries the stream, so that only the upkeep can set it probing again.
  await sleep(SETTLE_MS);

  const before = topo.exec(gw, 'ip', 'neigh', 'show', LAN_HOST, 'dev', 'lan0').trim();
  topo.exec(topo.ns.lan, 'ip', 'link', 'set', 'eth0', 'address', NEW_MAC);
  const seen = new Set(host.events.map(seq));
  const atChange = Math.max(...seen);
  // Every datagram reached the host until now (the fast path delivers; a few may still be on their way).
  const missing = [...Array(atChange - 2).keys()].filter((i) => !seen.has(i));
  assert.ok(missing.length <= 3, `before the change, ${missing.length} of ${atChange - 1} datagrams did not arrive: ${missing.join(',')}`);
  // Datagrams sent after the change reach the host only once the gateway uses its new MAC.
  const resumed = seq(await host.waitFor((e) => seq(e) > atChange + 3, RECOVERY_MS).catch(() => {
    throw new Error(`delivery did not resume within ${RECOVERY_MS} ms; the entry was "${before}", is "${topo.exec(gw, 'ip', 'neigh', 'show', LAN_HOST, 'dev', 'lan0').trim()}"`);
  }));
  const now = topo.exec(gw, 'ip', 'neigh', 'show', LAN_HOST, 'dev', 'lan0');
  assert.match(now, new RegExp(NEW_MAC), `the gateway's entry has the new MAC (before: ${before}; now: ${now.trim()})`);
  // And on from there without loss, by the fast path again.
  await host.waitFor((e) => seq(e) >= resumed + 20, 10_000);
  const after = new Set(host.events.map(seq));
  const lost = [...Array(20).keys()].map((i) => resumed + i).filter((n) => !after.has(n));
  assert.deepEqual(lost, [], 'no loss once resolved');
  remote.send('stop');
});
