/**
 * End to end: IPv6 path MTU discovery through pinholes when the LAN and WAN
 * MTUs differ. An IPv6 router never fragments: a packet too big for its
 * egress must come back as ICMPv6 Packet Too Big. bpf_redirect_neigh() skips
 * ip6_forward()'s MTU check, so the data path hands such a packet to the
 * stack, whose ip6_forward() sends Packet Too Big before the forward chain
 * would drop it (README Decisions). Without that the packet is lost and the
 * sender never hears of it: these tests then time out.
 *
 * As in mtu.test.ts, MSS alone must not avoid the problem: the side behind
 * the wider link announces an MSS for the wider MTU (route `advmss`).
 * Helpers: test/e2e/pmtu-probe.py in its IPv6 mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { GW_LAN6, GW_WAN6, LAN6_HOST, ROOT, Topology, WAN6_SERVER, type Proc } from './topology.js';

const root = process.getuid?.() === 0;
const PROBE = join(ROOT, 'test/e2e/pmtu-probe.py');
const MB = 1 << 20;
/** How long 1 MB each way may take once PMTUD has converged (a loaded machine). */
const BULK_TIMEOUT_S = 40;
/** IPv6 and TCP headers: MSS = MTU - 60. */
const MSS_1500 = 1440;

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
`;

function setup(t: { after: (fn: () => void) => void }): Topology {
  const topo = new Topology({ ipv6: true });
  t.after(() => topo.destroy());
  return topo.create();
}

/** Set the MTU of both ends of a link: the gateway's `gwIf` and `ns`'s eth0. */
function linkMtu(topo: Topology, gwIf: string, ns: string, mtu: number): void {
  topo.exec(topo.ns.gw, 'ip', 'link', 'set', gwIf, 'mtu', String(mtu));
  topo.exec(ns, 'ip', 'link', 'set', 'eth0', 'mtu', String(mtu));
}

function probe(topo: Topology, ns: string, ...args: (string | number)[]): Proc {
  return topo.spawn(ns, 'python3', [PROBE, ...args.map(String)]);
}

/** Trigger both rules from the LAN host's IPv6 address. */
async function trigger(topo: Topology): Promise<void> {
  await topo.listener(topo.ns.wan, 'tcp-echo', 6667);
  await topo.listener(topo.ns.wan, 'udp-echo', 27015);
  const tcp = await topo.once(topo.ns.lan, 'tcp-once', WAN6_SERVER, 6667, 'NICK x', 5000);
  assert.equal(tcp.ok, true, `TCP trigger failed: ${JSON.stringify(tcp)}`);
  const udp = await topo.once(topo.ns.lan, 'udp-once', WAN6_SERVER, 27015, 'register', 5000);
  assert.equal(udp.ok, true, `UDP trigger failed: ${JSON.stringify(udp)}`);
}

/** 1 MB each way at once over an inbound IPv6 connection to the pinholed TCP port. */
async function bulk(topo: Topology): Promise<{ client: Record<string, unknown>; server: Record<string, unknown> }> {
  const server = probe(topo, topo.ns.lan, 'bulk-server', 113, MB, 6);
  await server.waitFor((e) => e.event === 'listening', 15_000);
  const client = probe(topo, topo.ns.wan, 'bulk-client', LAN6_HOST, 113, MB, BULK_TIMEOUT_S);
  const c = await client.waitFor(() => true, (BULK_TIMEOUT_S + 20) * 1000);
  const s = await server.waitFor((e) => e.event === 'done', 30_000).catch(() => ({ event: 'none', stderr: server.stderr }));
  return { client: c, server: s };
}

test('IPv6, LAN MTU 1500, WAN MTU 1400: 1 MB each way through a pinhole; the LAN host learns the WAN MTU from ip6_forward()\'s Packet Too Big', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  linkMtu(topo, 'wan0', topo.ns.wan, 1400);
  // The WAN server announces the MSS of a 1500-byte link.
  topo.exec(topo.ns.wan, 'ip', 'route', 'add', `${LAN6_HOST}/128`, 'via', GW_WAN6, 'dev', 'eth0', 'advmss', String(MSS_1500));
  // Whole 1500-byte packets from the LAN host, not TSO super-packets.
  topo.exec(topo.ns.lan, 'ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off');
  await topo.startDaemon(topo.writeConfig(RULES));
  await trigger(topo);

  const { client, server } = await bulk(topo);
  assert.equal(client.ok, true, `1 MB each way failed: client ${JSON.stringify(client)} server ${JSON.stringify(server)}`);
  assert.equal(server.received_ok, true, `LAN host: ${JSON.stringify(server)}`);
  assert.equal(server.pmtu, 1400, `the LAN host's path MTU to the remote: ${JSON.stringify(server)}`);
  t.diagnostic(`1 MB each way in ${client.secs as number} s`);
});

test('IPv6, LAN MTU 1400, WAN MTU 1500: the remote gets Packet Too Big from the gateway for TCP (1 MB each way, TSO) and for a too-big datagram', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  linkMtu(topo, 'lan0', topo.ns.lan, 1400);
  topo.exec(topo.ns.lan, 'ip', 'route', 'add', `${WAN6_SERVER}/128`, 'via', GW_LAN6, 'dev', 'eth0', 'advmss', String(MSS_1500));
  await topo.startDaemon(topo.writeConfig(RULES));
  await trigger(topo);

  const { client, server } = await bulk(topo);
  assert.equal(client.ok, true, `1 MB each way failed: client ${JSON.stringify(client)} server ${JSON.stringify(server)}`);
  assert.equal(server.received_ok, true, `LAN host: ${JSON.stringify(server)}`);
  assert.equal(client.pmtu, 1400, `the WAN server's path MTU to the LAN host: ${JSON.stringify(client)}`);

  const echo = await topo.listener(topo.ns.lan, 'udp-echo', 28000);
  const df = probe(topo, topo.ns.wan, 'udp-df', LAN6_HOST, 27000, 1450, 10);
  const err = await df.waitFor(() => true, 30_000);
  assert.deepEqual(
    { ok: err.ok, echo: err.echo, origin: err.origin, type: err.type, code: err.code, mtu: err.mtu, offender: err.offender },
    { ok: true, echo: 'echo:open', origin: 'icmp6', type: 2, code: 0, mtu: 1400, offender: GW_WAN6 },
    `the remote's ICMPv6 error: ${JSON.stringify(err)} ${df.stderr}`);
  assert.equal(err.ip_mtu, 1400, 'the remote learned the path MTU');
  assert.equal(echo.events.filter((e) => typeof e.data === 'string' && e.data.startsWith('xxx')).length, 0, 'the too-big datagram never reached the LAN host');
  t.diagnostic(`1 MB each way in ${client.secs as number} s`);
});
