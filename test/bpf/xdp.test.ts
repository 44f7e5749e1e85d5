/**
 * BPF_PROG_TEST_RUN rows of the XDP fast path (bpf/xdp.h, datapath.xdp):
 * pt_wan_xdp translates an established flow's packet to exactly the bytes
 * that pt_wan_ingress's fast path makes of it (and that the packet builder
 * makes from scratch, every checksum computed anew), and passes everything
 * else untouched, with no state changed, for pt_wan_ingress to judge.
 *
 * The bed is the fast-path rows' (test/helpers/fastpath.ts). The frames
 * arrive addressed to the WAN device's MAC (pt_xdp_config); the TC program
 * is fed the same packet to the test run device's MAC (PACKET_HOST there).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DIR_IN, IPPROTO_TCP, IPPROTO_UDP, XDP_COUNTERS, type PtFlow, type PtXdpConfig } from '../../src/bpf/abi.js';
import { XDP_PASS, XDP_REDIRECT, TC_ACT_REDIRECT, bpfSkipReason, runProg, runXdp, type TestDatapath } from '../helpers/bpffs.js';
import {
  EPOCH, HOST, HOST_MAC, IN_ETH, LAN_MAC, MS, REMOTE, T, WAN, WAN_MAC, enterRedirectNetns, seeded,
} from '../helpers/fastpath.js';
import { ETH_HLEN, TCP, buildPacket, fold, fragment, pseudoHeader, sum16, type PacketSpec } from '../helpers/packet.js';

const skip = bpfSkipReason();
const TO_WAN = { dst: WAN_MAC, src: IN_ETH.src };

type Proto = 'tcp' | 'udp';
/** An inbound packet of the seeded flow of `proto` (irc: TCP 113 -> 113; game: UDP 27000 -> 28000). */
function inbound(proto: Proto, o: { eth?: PacketSpec['eth']; ttl?: number; flags?: number; payload?: Buffer; udpCsum0?: boolean } = {}): PacketSpec {
  const payload = o.payload ?? Buffer.from('are you there?');
  return {
    eth: o.eth ?? TO_WAN,
    ip: { src: REMOTE, dst: WAN, ttl: o.ttl ?? 64, id: 7 },
    l4: proto === 'tcp'
      ? { tcp: { sport: 40000, dport: 113, flags: o.flags ?? TCP.ACK, seq: 1, ack: 2, payload } }
      : { udp: { sport: 40000, dport: 27000, payload, ...(o.udpCsum0 ? { zeroChecksum: true } : {}) } },
  };
}

/** The same packet as the LAN host gets it: to its MAC from the LAN device's, TTL one less, to HOST and its port. */
function translated(proto: Proto, spec: PacketSpec): Buffer {
  const l4 = 'tcp' in spec.l4 ? { tcp: { ...spec.l4.tcp, dport: 113 } } : 'udp' in spec.l4 ? { udp: { ...spec.l4.udp, dport: 28000 } } : assert.fail(`not ${proto}`);
  return buildPacket({ eth: { dst: HOST_MAC, src: LAN_MAC }, ip: { ...spec.ip, dst: HOST, ttl: (spec.ip.ttl ?? 64) - 1 }, l4 });
}

function inFlow(f: TestDatapath, proto: Proto): PtFlow {
  const key = { saddr: REMOTE, daddr: WAN, sport: 40000, dport: proto === 'tcp' ? 113 : 27000, proto: proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP, dir: DIR_IN };
  const v = f.dp.maps.flows.get(key);
  assert.ok(v, `the ${proto} flow's inbound entry`);
  return v;
}

function xdpCounts(f: TestDatapath): Record<(typeof XDP_COUNTERS)[number], bigint> {
  const s = f.dp.xdpMaps().stats.sumAll();
  return Object.fromEntries(XDP_COUNTERS.map((c, i) => [c, s[i] ?? 0n])) as Record<(typeof XDP_COUNTERS)[number], bigint>;
}

function bed(t: { after: (fn: () => void) => void }, o: { hostNeigh?: boolean; extra?: string[][]; stamp?: bigint; created?: bigint } = {}): TestDatapath {
  const dev = enterRedirectNetns(t, { hostNeigh: o.hostNeigh ?? true, ...(o.extra ? { extra: o.extra } : {}) });
  const f = seeded(t, dev, o.stamp ?? T - 1n * MS, o.created ?? T - 10n * EPOCH, { xdp: true });
  f.dp.xdpMaps().config.set(0, { wan_mac: WAN_MAC, all_off: 0, wan_ifindex: dev.wan, netns_ino: 0 });
  return f;
}

for (const [proto, variant] of [['tcp', {}], ['udp', {}], ['udp', { udpCsum0: true }], ['tcp', { flags: TCP.ACK | TCP.FIN }]] as const) {
  const what = `${proto}${'udpCsum0' in variant ? ' without checksum' : ''}${'flags' in variant ? ' FIN' : ''}`;
  test(`XDP translates an established ${what} flow's packet to the bytes the TC fast path makes, checksums as computed from scratch`, { skip: skip ?? false }, (t) => {
    const f = bed(t);
    const spec = inbound(proto, variant);
    const want = translated(proto, spec);
    const tc = runProg(f, 'wan', buildPacket({ ...spec, eth: IN_ETH }));
    assert.equal(tc.retval, TC_ACT_REDIRECT);
    assert.deepEqual(tc.out, want, 'TC fast path');
    const before = xdpCounts(f);
    const x = runXdp(f, buildPacket(spec));
    assert.equal(x.retval, XDP_REDIRECT);
    assert.deepEqual(x.out, want, 'XDP: the same bytes');
    assert.equal(xdpCounts(f).redirected, before.redirected + 1n);
  });
}

test('XDP refreshes the flow as the TC path does: its stamp once due, the FIN it saw', { skip: skip ?? false }, (t) => {
  const f = bed(t, { stamp: T - 20n * MS });
  const before = inFlow(f, 'tcp');
  assert.equal(runXdp(f, buildPacket(inbound('tcp', { flags: TCP.ACK | TCP.FIN }))).retval, XDP_REDIRECT);
  const after = inFlow(f, 'tcp');
  assert.equal(after.last_seen_ns, T, 'stamped now (it was 20 ms old)');
  assert.notEqual(after.seen & ~before.seen, 0, 'the FIN is recorded');
});

/** Rows the XDP program must leave to TC: XDP_PASS, frame untouched, flow entry unchanged. */
const PASS_ROWS: { name: string; bed?: Parameters<typeof bed>[1]; frame: () => Buffer; prep?: (f: TestDatapath) => void; counter?: 'passed' | 'fallback' }[] = [
  { name: 'a TCP SYN (it may reopen the flow)', frame: () => buildPacket(inbound('tcp', { flags: TCP.SYN })) },
  { name: 'a SYN-ACK', frame: () => buildPacket(inbound('tcp', { flags: TCP.SYN | TCP.ACK })) },
  { name: 'a frame to another MAC (not PACKET_HOST)', frame: () => buildPacket(inbound('udp', { eth: { dst: '02:00:00:00:c0:02', src: IN_ETH.src } })) },
  { name: 'a broadcast frame', frame: () => buildPacket(inbound('udp', { eth: { dst: 'ff:ff:ff:ff:ff:ff', src: IN_ETH.src } })) },
  { name: 'TTL 1 (TC drops it)', frame: () => buildPacket(inbound('udp', { ttl: 1 })) },
  { name: 'a bad IP header checksum', frame: () => buildPacket({ ...inbound('udp'), ip: { ...inbound('udp').ip, checksum: 0x1234 } }) },
  { name: 'IP options', frame: () => buildPacket({ ...inbound('udp'), ip: { ...inbound('udp').ip, options: Buffer.from([1, 1, 1, 0]) } }) },
  { name: 'a first fragment', frame: () => fragment(buildPacket(inbound('udp', { payload: Buffer.alloc(64, 1) })), 0, 48) },
  { name: 'a non-first fragment', frame: () => fragment(buildPacket(inbound('udp', { payload: Buffer.alloc(64, 1) })), 48, 24) },
  { name: 'a total length beyond the frame', frame: () => buildPacket(inbound('udp')).subarray(0, 50) },
  { name: 'another destination address', frame: () => buildPacket({ ...inbound('udp'), ip: { ...inbound('udp').ip, dst: '192.0.2.9' } }) },
  { name: 'no flow (another source port)', frame: () => buildPacket({ ...inbound('udp'), l4: { udp: { sport: 40001, dport: 27000, payload: Buffer.from('x') } } }) },
  { name: 'the neighbour upkeep\'s packet (flow not refreshed since it was made)', bed: { stamp: T - 1n * MS, created: T - 1n * MS }, frame: () => buildPacket(inbound('udp')) },
  { name: 'the LAN host\'s MAC unknown (bpf_redirect_neigh() resolves it)', bed: { hostNeigh: false }, frame: () => buildPacket(inbound('udp')) },
  { name: 'too big for the LAN egress (TC answers with ICMP)', bed: { extra: [['link', 'set', 'lan', 'mtu', '1280']] }, frame: () => buildPacket(inbound('udp', { payload: Buffer.alloc(1300, 7) })) },
  { name: 'no WAN MAC written yet', frame: () => buildPacket(inbound('udp')), prep: (f) => xdpConfig(f, { wan_mac: '00:00:00:00:00:00' }) },
  { name: 'a CHECKSUM_PARTIAL TCP segment (a veth peer\'s local sender: the field holds the pseudo-header sum)', frame: () => partial('tcp') },
  { name: 'a CHECKSUM_PARTIAL UDP datagram', frame: () => partial('udp') },
  ...([['a LAN interface the device cannot send XDP frames to (-ENXIO, for good)', -6, T - 100n * EPOCH],
    ['a LAN interface without ndo_xdp_xmit (-EOPNOTSUPP, for good)', -95, T - 100n * EPOCH],
    ['a LAN interface that failed (-ENETDOWN) less than a second ago', -100, T - 900n * MS],
    ['a bridge (the daemon\'s mark)', 1, T - 100n * EPOCH],
    ['a shaped LAN (the daemon\'s mark)', 2, T - 100n * EPOCH]] as const).map(([name, err, last]) => ({
    name, counter: 'fallback' as const, frame: () => buildPacket(inbound('udp')),
    prep: (f: TestDatapath) => f.dp.xdpMaps().tx.set(lanOf(f), { since_ns: last, last_ns: last, err, failures: 1 }),
  })),
  { name: 'more failing LAN interfaces than pt_xdp_tx holds (all_off)', counter: 'fallback', frame: () => buildPacket(inbound('udp')), prep: (f) => xdpConfig(f, { all_off: 1 }) },
];

function xdpConfig(f: TestDatapath, change: Partial<PtXdpConfig>): void {
  const c = f.dp.xdpMaps().config;
  c.set(0, { ...c.get(0)!, ...change });
}
const lanOf = (f: TestDatapath): number => inFlow(f, 'udp').ifindex;

/** The packet as a local sender's CHECKSUM_PARTIAL skb carries it: the L4 checksum field holds the folded pseudo-header sum. */
function partial(proto: Proto): Buffer {
  const frame = buildPacket(inbound(proto));
  const l4 = frame.subarray(ETH_HLEN + 20);
  const pseudo = pseudoHeader(REMOTE, WAN, proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP, l4.length);
  l4.writeUInt16BE(fold(sum16(pseudo)), proto === 'tcp' ? 16 : 6);
  return frame;
}

for (const row of PASS_ROWS) {
  test(`XDP leaves to TC, untouched and changing nothing: ${row.name}`, { skip: skip ?? false }, (t) => {
    const f = bed(t, row.bed ?? {});
    row.prep?.(f);
    const flows = () => [...f.dp.maps.flows.entries()].map((e) => JSON.stringify(e, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v))).sort();
    const before = flows();
    const counts = xdpCounts(f);
    const frame = row.frame();
    const x = runXdp(f, frame);
    assert.equal(x.retval, XDP_PASS);
    assert.deepEqual(x.out, frame, 'untouched');
    assert.deepEqual(flows(), before, 'no flow entry changed');
    const c = row.counter ?? 'passed';
    assert.equal(xdpCounts(f)[c], counts[c] + 1n, `counted ${c}`);
    assert.equal(xdpCounts(f).redirected, counts.redirected);
  });
}

test('a LAN interface that failed (-ENETDOWN) more than a second ago is tried again', { skip: skip ?? false }, (t) => {
  const f = bed(t);
  f.dp.xdpMaps().tx.set(lanOf(f), { since_ns: T - 5000n * MS, last_ns: T - 1100n * MS, err: -100, failures: 3 });
  assert.equal(runXdp(f, buildPacket(inbound('udp'))).retval, XDP_REDIRECT);
});

test('bytes past the IP datagram (padding, or a sender\'s trailer) are trimmed, as ip_rcv() does', { skip: skip ?? false }, (t) => {
  const f = bed(t);
  const spec = inbound('udp');
  const x = runXdp(f, Buffer.concat([buildPacket(spec), Buffer.alloc(9, 0xee)]));
  assert.equal(x.retval, XDP_REDIRECT);
  assert.deepEqual(x.out, translated('udp', spec));
});

test('a flow that is over is ended by XDP as by TC (both entries gone), and the packet left to TC', { skip: skip ?? false }, (t) => {
  // Idle for longer than the UDP flow timeout.
  const f = bed(t, { stamp: T - 400n * EPOCH, created: T - 500n * EPOCH });
  const x = runXdp(f, buildPacket(inbound('udp')));
  assert.equal(x.retval, XDP_PASS);
  assert.equal(f.dp.maps.flows.get({ saddr: REMOTE, daddr: WAN, sport: 40000, dport: 27000, proto: IPPROTO_UDP, dir: DIR_IN }), undefined);
});
