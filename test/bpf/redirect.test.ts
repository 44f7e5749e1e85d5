/**
 * BPF_PROG_TEST_RUN rows for how translated packets are sent (bpf/redirect.h):
 * the fast path (bpf_fib_lookup() for the next hop's MAC, the Ethernet header
 * written by the program, bpf_redirect()) against the slow path
 * (bpf_redirect_neigh(), which leaves the Ethernet header as it came: the
 * kernel writes it after the program). BPF_PROG_TEST_RUN returns the packet
 * as the program left it, so the Ethernet header tells the two apart.
 *
 * The rows run in a namespace of their own (test/helpers/netns.ts), where
 * the FIB lookup finds: `lan` (10.0.0.1/24, 2001:db8:1::1/64) with the LAN
 * host's MAC as a permanent neighbour, and `wan` (192.0.2.1/24, default route
 * via 192.0.2.254, the router's MAC permanent), forwarding on. The data
 * path's clock is simulated, so that the neighbour upkeep (one slow packet
 * per flow and epoch of 2^30 ns, pt_neigh_due()) is exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bpfSkipReason, runProg, TC_ACT_REDIRECT } from '../helpers/bpffs.js';
import {
  EPOCH, HOST, HOST6, HOST_MAC, IN_ETH, LAN_MAC, MS, REMOTE, REMOTE6, ROUTER_MAC, T, WAN, WAN_MAC, enterRedirectNetns, seeded,
} from '../helpers/fastpath.js';
import { ETH_HLEN, TCP, buildPacket, buildPacket6, type PacketSpec } from '../helpers/packet.js';

const skip = bpfSkipReason();
const run = runProg;

const mac = (b: Buffer, off: number): string => [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
/** The Ethernet header of a packet the program sent: "dst src". */
const ethOf = (b: Buffer): string => `${mac(b, 0)} ${mac(b, 6)}`;
const AS_ARRIVED = `${IN_ETH.dst} ${IN_ETH.src}`;

const inboundTcp = (): PacketSpec => ({ eth: IN_ETH, ip: { src: REMOTE, dst: WAN, ttl: 64, id: 7 },
  l4: { tcp: { sport: 40000, dport: 113, flags: TCP.ACK, seq: 1, ack: 2, payload: Buffer.from('ident?') } } });
const replyUdp = (): PacketSpec => ({ eth: IN_ETH, ip: { src: HOST, dst: REMOTE, ttl: 64, id: 8 },
  l4: { udp: { sport: 28000, dport: 40000, payload: Buffer.from('pong') } } });
const inboundTcp6 = (): Buffer => buildPacket6({ eth: IN_ETH, ip6: { src: REMOTE6, dst: HOST6, hopLimit: 64 },
  l4: { tcp: { sport: 40000, dport: 113, flags: TCP.ACK, seq: 1, ack: 2, payload: Buffer.from('ident?') } } });

test('inbound packet of an established flow, the LAN host\'s MAC known: the program writes the Ethernet header (LAN device -> host) and redirects', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, dev, T - 1n * MS);
  const r = run(f, 'wan', buildPacket(inboundTcp()));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), `${HOST_MAC} ${LAN_MAC}`);
  assert.equal(r.out.subarray(ETH_HLEN + 16, ETH_HLEN + 20).join('.'), HOST, 'and translated');
});

test('reply of an established flow: the WAN router\'s MAC from the default route (WAN device -> router)', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, dev, T - 1n * MS);
  const r = run(f, 'lan', buildPacket(replyUdp()));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), `${ROUTER_MAC} ${WAN_MAC}`);
  assert.equal(r.out.subarray(ETH_HLEN + 12, ETH_HLEN + 16).join('.'), WAN, 'and translated');
});

test('IPv6 pinhole packet of an established flow: the fast path too (neighbour from the IPv6 table)', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, dev, T - 1n * MS);
  const r = run(f, 'wan', inboundTcp6());
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), `${HOST_MAC} ${LAN_MAC}`);
});

test('neighbour upkeep: the packet that refreshes a flow\'s stamp into a new epoch takes bpf_redirect_neigh(); the next ones the fast path', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, dev, T - EPOCH - 1n * MS);
  const first = run(f, 'wan', buildPacket(inboundTcp()));
  assert.equal(first.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(first.out), AS_ARRIVED, 'slow path: the kernel writes the header after the program');
  assert.equal(first.out.subarray(ETH_HLEN + 16, ETH_HLEN + 20).join('.'), HOST, 'translated all the same');
  const next = run(f, 'wan', buildPacket(inboundTcp()));
  assert.equal(ethOf(next.out), `${HOST_MAC} ${LAN_MAC}`, 'the stamp is fresh now');
  // 20 ms later, same epoch: the stamp is refreshed, by the fast path.
  f.dp.setTestClock(T + 20n * MS);
  assert.equal(ethOf(run(f, 'wan', buildPacket(inboundTcp())).out), `${HOST_MAC} ${LAN_MAC}`);
  // Into the next epoch: one slow packet again, then fast.
  f.dp.setTestClock(T + EPOCH);
  assert.equal(ethOf(run(f, 'wan', buildPacket(inboundTcp())).out), AS_ARRIVED);
  assert.equal(ethOf(run(f, 'wan', buildPacket(inboundTcp())).out), `${HOST_MAC} ${LAN_MAC}`);
  // The reply direction's entry keeps its own stamp (the seeded one): slow once, then fast.
  assert.equal(ethOf(run(f, 'lan', buildPacket({ ...replyUdp(), l4: { tcp: { sport: 113, dport: 40000, flags: TCP.ACK, seq: 2, ack: 3 } } })).out), AS_ARRIVED);
  assert.equal(ethOf(run(f, 'lan', buildPacket({ ...replyUdp(), l4: { tcp: { sport: 113, dport: 40000, flags: TCP.ACK, seq: 2, ack: 3 } } })).out), `${ROUTER_MAC} ${WAN_MAC}`);
});

test('the LAN host\'s MAC unknown: bpf_redirect_neigh() (it resolves the neighbour), header untouched', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: false });
  const f = seeded(t, dev, T - 1n * MS);
  for (const input of [buildPacket(inboundTcp()), inboundTcp6()]) {
    const r = run(f, 'wan', input);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(ethOf(r.out), AS_ARRIVED);
  }
});

test('an output route through the flow\'s egress, as bpf_redirect_neigh() takes it: a flow whose LAN egress is `wan` (as if the host had moved) goes to the router', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, { lan: dev.wan, wan: dev.wan }, T - 1n * MS);
  const r = run(f, 'wan', buildPacket(inboundTcp()));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), `${ROUTER_MAC} ${WAN_MAC}`);
});

test('no route to the remote: bpf_redirect_neigh() decides (it drops), header untouched', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true, defaultRoute: false });
  const f = seeded(t, dev, T - 1n * MS);
  const r = run(f, 'lan', buildPacket(replyUdp()));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), AS_ARRIVED);
});

test('a flow entry not refreshed since it was made (its first packets) takes bpf_redirect_neigh(), so that short flows keep the neighbour in use too', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true });
  const f = seeded(t, dev, T - 1n * MS, T - 1n * MS);   // made 1 ms ago, not refreshed since
  assert.equal(ethOf(run(f, 'wan', buildPacket(inboundTcp())).out), AS_ARRIVED);
  assert.equal(ethOf(run(f, 'wan', inboundTcp6()).out), AS_ARRIVED, 'IPv6 too');
});

test('IPv6: a policy rule by source prefix sends the remote\'s packets elsewhere: the fast path follows it as ip6_forward() would (here out of `wan`, not the flow\'s egress: slow path)', { skip: skip ?? false }, (t) => {
  const dev = enterRedirectNetns(t, { hostNeigh: true, extra: [
    ['-6', 'route', 'add', '2001:db8:1::/64', 'dev', 'wan', 'table', '100'],
    ['-6', 'rule', 'add', 'from', `${REMOTE6}/128`, 'lookup', '100', 'priority', '100'],
  ] });
  const f = seeded(t, dev, T - 1n * MS);
  const r = run(f, 'wan', inboundTcp6());
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(ethOf(r.out), AS_ARRIVED, 'not the main table\'s next hop on `lan`');
});
