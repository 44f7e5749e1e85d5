/**
 * End to end: path MTU discovery through triggered ports when the LAN and WAN
 * MTUs differ (issue 12). bpf_redirect_neigh() skips ip_forward()'s MTU check,
 * so without the data path's own check a translated packet too big for its
 * egress is dropped by the veth (is_skb_forwardable()) and the sender never
 * hears of it: these tests then time out.
 *
 * MSS alone must not avoid the problem (that would test nothing): the side
 * behind the wider link announces an MSS for the wider MTU (route `advmss`),
 * as a host does whose own link is wider than a link further along the path.
 * The helpers are test/e2e/pmtu-probe.py (TCP bulk both ways at once; a UDP
 * socket with DF and IP_RECVERR that reports the ICMP error it gets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { GW_LAN, GW_WAN, ROOT, Topology, WAN_SERVER, type Proc } from './topology.js';

const root = process.getuid?.() === 0;
const PROBE = join(ROOT, 'test/e2e/pmtu-probe.py');
const MB = 1 << 20;
/** How long 1 MB each way may take once PMTUD has converged (a loaded machine). */
const BULK_TIMEOUT_S = 40;

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
  - name: game
    trigger: udp/27015
    open: udp/27000 -> 28000
`;

function setup(t: { after: (fn: () => void) => void }, wanLink: 'veth' | 'tun' = 'veth'): Topology {
  const topo = new Topology({ wanLink });
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

/** Trigger both rules from the LAN host (masqueraded out over the WAN). */
async function trigger(topo: Topology): Promise<void> {
  await topo.listener(topo.ns.wan, 'tcp-echo', 6667);
  await topo.listener(topo.ns.wan, 'udp-echo', 27015);
  const tcp = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 5000);
  assert.equal(tcp.ok, true, `TCP trigger failed: ${JSON.stringify(tcp)}`);
  const udp = await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 27015, 'register', 5000);
  assert.equal(udp.ok, true, `UDP trigger failed: ${JSON.stringify(udp)}`);
}

/** 1 MB each way at once over an inbound connection to the triggered TCP port. */
async function bulk(topo: Topology): Promise<{ client: Record<string, unknown>; server: Record<string, unknown> }> {
  const server = probe(topo, topo.ns.lan, 'bulk-server', 113, MB);
  await server.waitFor((e) => e.event === 'listening', 15_000);
  const client = probe(topo, topo.ns.wan, 'bulk-client', GW_WAN, 113, MB, BULK_TIMEOUT_S);
  const c = await client.waitFor(() => true, (BULK_TIMEOUT_S + 20) * 1000);
  const s = await server.waitFor((e) => e.event === 'done', 30_000).catch(() => ({ event: 'none', stderr: server.stderr }));
  return { client: c, server: s };
}

test('LAN MTU 1500, WAN MTU 1400: 1 MB each way over a triggered TCP port; the LAN host learns the WAN MTU from ip_forward()\'s ICMP', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  linkMtu(topo, 'wan0', topo.ns.wan, 1400);
  // The WAN server announces MSS 1460, as if its own link were 1500 wide.
  topo.exec(topo.ns.wan, 'ip', 'route', 'add', `${GW_WAN}/32`, 'dev', 'eth0', 'advmss', '1460');
  // Whole 1500-byte packets from the LAN host, not TSO super-packets (a veth
  // passes GSO packets of any size, which would hide a missing MTU check).
  topo.exec(topo.ns.lan, 'ethtool', '-K', 'eth0', 'tso', 'off', 'gso', 'off');
  await topo.startDaemon(topo.writeConfig(RULES));
  await trigger(topo);

  const { client, server } = await bulk(topo);
  assert.equal(client.ok, true, `1 MB each way failed: client ${JSON.stringify(client)} server ${JSON.stringify(server)}`);
  assert.equal(server.received_ok, true, `LAN host: ${JSON.stringify(server)}`);
  // The LAN host's path MTU to the remote is the WAN's: it got ICMP
  // fragmentation needed (from ip_forward(), quoting its own segment).
  assert.equal(server.pmtu, 1400, `the LAN host's path MTU: ${JSON.stringify(server)}`);
  t.diagnostic(`1 MB each way in ${client.secs as number} s`);
});

test('LAN MTU 1400, WAN MTU 1500: PMTUD inbound (the error comes from the WAN address, quoting the packet as sent): 1 MB each way with TSO, and a DF datagram gets its ICMP error', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  linkMtu(topo, 'lan0', topo.ns.lan, 1400);
  // The LAN host announces MSS 1460; the WAN server sends TSO super-packets
  // (GSO) whose segments must be judged, not their total length.
  topo.exec(topo.ns.lan, 'ip', 'route', 'add', `${WAN_SERVER}/32`, 'via', GW_LAN, 'advmss', '1460');
  await topo.startDaemon(topo.writeConfig(RULES));
  await trigger(topo);

  // TCP first: the server learns nothing about the path before it.
  const { client, server } = await bulk(topo);
  assert.equal(client.ok, true, `1 MB each way failed: client ${JSON.stringify(client)} server ${JSON.stringify(server)}`);
  assert.equal(server.received_ok, true, `LAN host: ${JSON.stringify(server)}`);
  assert.equal(client.pmtu, 1400, `the WAN server's path MTU to the WAN address: ${JSON.stringify(client)}`);
  assert.equal(server.pmtu, 1400);
  // Then a UDP datagram of 1450 bytes with DF, to the triggered UDP port
  // (IP_PMTUDISC_PROBE: sent with DF although the server knows the path MTU).
  const echo = await topo.listener(topo.ns.lan, 'udp-echo', 28000);
  const df = probe(topo, topo.ns.wan, 'udp-df', GW_WAN, 27000, 1450, 10);
  const err = await df.waitFor(() => true, 30_000);
  assert.deepEqual(
    { ok: err.ok, echo: err.echo, origin: err.origin, type: err.type, code: err.code, mtu: err.mtu, offender: err.offender },
    { ok: true, echo: 'echo:open', origin: 'icmp', type: 3, code: 4, mtu: 1400, offender: GW_WAN },
    `the remote's ICMP error: ${JSON.stringify(err)} ${df.stderr}`);
  assert.equal(err.ip_mtu, 1400, 'the remote learned the path MTU');
  // The too-big datagram never reached the LAN host.
  assert.equal(echo.events.filter((e) => typeof e.data === 'string' && e.data.startsWith('xxx')).length, 0);

  t.diagnostic(`1 MB each way in ${client.secs as number} s`);
});

test('layer-3 WAN (TUN), LAN MTU 1280: a DF datagram too big for the LAN gets its ICMP error back over the TUN link (bpf_redirect())', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t, 'tun');
  linkMtu(topo, 'lan0', topo.ns.lan, 1280);
  await topo.startDaemon(topo.writeConfig(RULES));
  await trigger(topo);
  await topo.listener(topo.ns.lan, 'udp-echo', 28000);
  const df = probe(topo, topo.ns.wan, 'udp-df', GW_WAN, 27000, 1400, 10);
  const err = await df.waitFor(() => true, 30_000);
  assert.deepEqual(
    { ok: err.ok, echo: err.echo, origin: err.origin, type: err.type, code: err.code, mtu: err.mtu, offender: err.offender },
    { ok: true, echo: 'echo:open', origin: 'icmp', type: 3, code: 4, mtu: 1280, offender: GW_WAN },
    `the remote's ICMP error over the layer-3 WAN: ${JSON.stringify(err)} ${df.stderr}`);
});
