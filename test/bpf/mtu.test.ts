/**
 * BPF_PROG_TEST_RUN rows for the MTU check of translated packets (bpf/mtu.h).
 *
 * bpf_check_mtu() looks the egress ifindex up in the network namespace of the
 * test run's skb->dev, which is the loopback device of the caller's
 * namespace (no ctx ifindex is passed). So these rows run in a namespace of
 * their own, entered by node's main thread with setns(2), holding two veth
 * devices: `narrow` (MTU 1280) and `wide` (MTU 1500), named as the egress of
 * the seeded flow (inbound) and as the WAN (outbound). The rest of the data
 * path's behaviour is covered by datapath.test.ts; the real PMTUD exchange
 * (the stack's ICMP for outbound packets, GSO packets, checksum offload) by
 * test/e2e/mtu.test.ts, which also covers a layer-3 WAN: BPF_PROG_TEST_RUN
 * cannot present one faithfully here, since its skb always has a 14-byte
 * mac_len (see the L3 rows of datapath.test.ts) where ppp0 and TUN have 0,
 * and bpf_skb_adjust_room(BPF_ADJ_ROOM_MAC) inserts after mac_len.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { monotonicNs } from '../../src/core/state.js';
import { IRC_AND_GAME } from '../helpers/rules.js';
import { DIR_IN, DIR_OUT, IPPROTO_TCP, IPPROTO_UDP, VERDICTS, pktStatsIndex, PT_F_IPV6 } from '../../src/bpf/abi.js';
import { bpfSkipReason, runProg, useDatapath, type TestDatapath, TC_ACT_UNSPEC, TC_ACT_SHOT, TC_ACT_REDIRECT } from '../helpers/bpffs.js';
import { enterTestNetns } from '../helpers/netns.js';
import { ETH_HLEN, ICMP, TCP, buildPacket, buildPacket6, icmpError, inetChecksum, type PacketSpec, type Packet6Spec } from '../helpers/packet.js';

const skip = bpfSkipReason();
const WAN = '192.0.2.1';
const REMOTE = '198.51.100.7';
const HOST = '10.0.0.2';
const NARROW_MTU = 1280;
const SEEN_SYN_ACK = 3;

const RULES = IRC_AND_GAME;

/** A network namespace with `narrow` and `wide` (veth pairs: the dummy driver
 * may be missing; only their MTU matters, not their state or their peers),
 * entered by this thread for the test's duration. */
function enterMtuNetns(t: { after: (fn: () => void) => void }): { narrow: number; wide: number } {
  enterTestNetns(t, 'ptmtu', [
    ['link', 'add', 'narrow', 'mtu', String(NARROW_MTU), 'type', 'veth', 'peer', 'name', 'narrowp'],
    ['link', 'add', 'wide', 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'widep'],
  ]);
  return { narrow: ffi.ifNameToIndex('narrow'), wide: ffi.ifNameToIndex('wide') };
}

/** The data path with both rules, WAN = `wanIfindex`, and an open TCP (irc) and UDP (game) flow whose LAN egress is `lanIfindex`. */
function seeded(t: { after: (fn: () => void) => void }, wanIfindex: number, lanIfindex: number): TestDatapath {
  const f = useDatapath(t);
  const compiled = compileRules(RULES);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, wanIfindex, 8);
  f.state.setLocalAddrs([WAN, '10.0.0.1']);
  f.state.setLanNets(['10.0.0.0/24']);
  const now = monotonicNs();
  for (const [rule, proto, wanPort, hostPort] of [['irc', IPPROTO_TCP, 113, 113], ['game', IPPROTO_UDP, 27000, 28000]] as const) {
    const rid = compiled.ids.get(rule)!;
    f.dp.maps.sessions.set({ rule: rid, peer: '0.0.0.0' }, { opened_ns: now - 2_000_000_000n, last_seen_ns: now - 1_000_000_000n, host: HOST, ifindex: lanIfindex });
    const seen = proto === IPPROTO_TCP ? SEEN_SYN_ACK : 0;
    const common = { created_ns: now - 2_000_000_000n, last_seen_ns: now - 1_000_000_000n, rule: rid, sess_peer: '0.0.0.0', seen };
    f.dp.maps.flows.set({ saddr: REMOTE, daddr: WAN, sport: 40000, dport: wanPort, proto, dir: DIR_IN },
      { ...common, nat_addr: HOST, nat_port: hostPort, ifindex: lanIfindex });
    f.dp.maps.flows.set({ saddr: HOST, daddr: REMOTE, sport: hostPort, dport: 40000, proto, dir: DIR_OUT },
      { ...common, nat_addr: WAN, nat_port: wanPort, ifindex: wanIfindex });
  }
  f.state.setLanNets(['10.0.0.0/24']);
  return f;
}

const run = runProg;

function stats(f: TestDatapath): Record<string, number> {
  const got: Record<string, number> = {};
  for (const [di, d] of ['lan', 'wan'].entries()) {
    for (const [vi, v] of VERDICTS.entries()) {
      const n = f.dp.maps.pktStats.sum(di * VERDICTS.length + vi);
      if (n !== 0n) got[`${d}/${v}`] = Number(n);
    }
  }
  return got;
}

/** A TCP segment of the irc flow, `totLen` bytes of IP datagram (20 + 20 + payload). */
function tcpOf(src: string, sport: number, dst: string, dport: number, totLen: number, df = true): PacketSpec {
  return {
    ip: { src, dst, ttl: 64, id: 0x1c46, df },
    l4: { tcp: { sport, dport, flags: TCP.ACK, seq: 0x10002000, ack: 0x30004000, payload: Buffer.alloc(totLen - 40, 0x5a) } },
  };
}
function udpOf(src: string, sport: number, dst: string, dport: number, totLen: number, df: boolean): PacketSpec {
  return { ip: { src, dst, ttl: 64, id: 0x2d57, df }, l4: { udp: { sport, dport, payload: Buffer.alloc(totLen - 28, 0x3c) } } };
}

/** What pt_frag_needed() must send for `spec`: from the WAN address, quoting its IP header and 64 bytes. */
function fragNeeded(spec: PacketSpec, mtu: number): Buffer {
  return buildPacket(icmpError({
    type: ICMP.DEST_UNREACH, code: 4, rest: mtu,
    ip: { src: WAN, dst: spec.ip.src, ttl: 64, id: 0, tos: 0xc0, df: true },
    quoted: spec, quoteL4: 64,
  }));
}

test('inbound TCP segment too big for the LAN egress, DF: becomes ICMP fragmentation needed (MTU 1280) from the WAN address to the remote, quoting it as sent', { skip: skip ?? false }, (t) => {
  const dev = enterMtuNetns(t);
  const f = seeded(t, dev.wide, dev.narrow);
  const spec = tcpOf(REMOTE, 40000, WAN, 113, 1400);
  const r = run(f, 'wan', buildPacket(spec));
  assert.equal(r.retval, TC_ACT_REDIRECT, 'sent back out with bpf_redirect_neigh()');
  const want = fragNeeded(spec, NARROW_MTU);
  assert.equal(r.out.toString('hex'), want.toString('hex'));
  assert.equal(inetChecksum(r.out.subarray(ETH_HLEN + 20)), 0, 'ICMP checksum');
  assert.deepEqual(stats(f), { 'wan/dropped': 1 });
});

test('inbound TCP segment that fits the LAN egress (1280 bytes): translated as usual', { skip: skip ?? false }, (t) => {
  const dev = enterMtuNetns(t);
  const f = seeded(t, dev.wide, dev.narrow);
  const r = run(f, 'wan', buildPacket(tcpOf(REMOTE, 40000, WAN, 113, NARROW_MTU)));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.out.subarray(ETH_HLEN + 16, ETH_HLEN + 20).join('.'), HOST, 'destination rewritten to the LAN host');
  assert.deepEqual(stats(f), { 'wan/translated': 1 });
});

test('inbound UDP datagram too big for the LAN egress, DF: ICMP fragmentation needed; without DF: dropped (the data path cannot fragment)', { skip: skip ?? false }, (t) => {
  const dev = enterMtuNetns(t);
  const f = seeded(t, dev.wide, dev.narrow);
  const df = udpOf(REMOTE, 40000, WAN, 27000, 1450, true);
  const r = run(f, 'wan', buildPacket(df));
  assert.equal(r.retval, TC_ACT_REDIRECT);
  assert.equal(r.out.toString('hex'), fragNeeded(df, NARROW_MTU).toString('hex'));
  const noDf = run(f, 'wan', buildPacket(udpOf(REMOTE, 40000, WAN, 27000, 1450, false)));
  assert.equal(noDf.retval, TC_ACT_SHOT);
  assert.deepEqual(stats(f), { 'wan/dropped': 2 });
});

test('outbound reply too big for the WAN (DF or not): passed to the stack untranslated, byte for byte (ip_forward() answers or fragments)', { skip: skip ?? false }, (t) => {
  const dev = enterMtuNetns(t);
  const f = seeded(t, dev.narrow, dev.wide);
  for (const df of [true, false]) {
    const input = buildPacket(tcpOf(HOST, 113, REMOTE, 40000, 1400, df));
    const r = run(f, 'lan', input);
    assert.equal(r.retval, TC_ACT_UNSPEC, `DF ${df}`);
    assert.equal(r.out.toString('hex'), input.toString('hex'), `DF ${df}: untouched`);
  }
  const fits = run(f, 'lan', buildPacket(tcpOf(HOST, 113, REMOTE, 40000, NARROW_MTU)));
  assert.equal(fits.retval, TC_ACT_REDIRECT, 'a reply that fits is translated');
  assert.deepEqual(stats(f), { 'lan/pass': 2, 'lan/translated': 1 });
});

// --- IPv6 (SPEC 9): no fragmentation by routers, so a packet too big for its
// egress goes to the stack untouched either way, whose ip6_forward() sends
// ICMPv6 Packet Too Big before the forward hook. ---------------------------------------
const HOST6 = '2001:db8:1::2';
const REMOTE6 = '2001:db8:99::7';

function seeded6(t: { after: (fn: () => void) => void }, wanIfindex: number, lanIfindex: number): TestDatapath {
  const f = useDatapath(t);
  const compiled = compileRules(RULES);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, wanIfindex, 8);
  f.state.setLanNets6(['2001:db8:1::/64']);
  const now = monotonicNs();
  const rid = compiled.ids.get('irc')!;
  f.dp.maps.sessions6.set({ rule: rid, host: HOST6, peer: '::' }, { opened_ns: now - 2_000_000_000n, last_seen_ns: now - 1_000_000_000n, host: HOST6, ifindex: lanIfindex });
  const common = { created_ns: now - 2_000_000_000n, last_seen_ns: now - 1_000_000_000n, rule: rid, seen: SEEN_SYN_ACK, flags: 0, nat_port: 113 };
  f.dp.maps.flows6.set({ saddr: REMOTE6, daddr: HOST6, sport: 40000, dport: 113, proto: IPPROTO_TCP, dir: DIR_IN }, { ...common, ifindex: lanIfindex });
  f.dp.maps.flows6.set({ saddr: HOST6, daddr: REMOTE6, sport: 113, dport: 40000, proto: IPPROTO_TCP, dir: DIR_OUT }, { ...common, ifindex: wanIfindex });
  return f;
}

/** A TCP segment of the IPv6 irc flow, `ipLen` bytes of IPv6 datagram (40 + 20 + payload). */
function tcp6Of(src: string, sport: number, dst: string, dport: number, ipLen: number): Packet6Spec {
  return { ip6: { src, dst, hopLimit: 64 }, l4: { tcp: { sport, dport, flags: TCP.ACK, seq: 0x10002000, ack: 0x30004000, payload: Buffer.alloc(ipLen - 60, 0x5a) } } };
}

function stats6(f: TestDatapath): Record<string, number> {
  const got: Record<string, number> = {};
  for (const [di, d] of ['lan', 'wan'].entries()) {
    for (const [vi, v] of VERDICTS.entries()) {
      const n = f.dp.maps.pktStats.sum(pktStatsIndex(PT_F_IPV6, di, vi));
      if (n !== 0n) got[`${d}/${v}`] = Number(n);
    }
  }
  return got;
}

test('IPv6: a packet of a flow too big for its egress goes to the stack untouched, both ways; one that fits is sent on', { skip: skip ?? false }, (t) => {
  const dev = enterMtuNetns(t);
  const f = seeded6(t, dev.narrow, dev.narrow);
  for (const [prog, spec] of [['wan', tcp6Of(REMOTE6, 40000, HOST6, 113, 1400)], ['lan', tcp6Of(HOST6, 113, REMOTE6, 40000, 1400)]] as const) {
    const input = buildPacket6(spec);
    const r = run(f, prog, input);
    assert.equal(r.retval, TC_ACT_UNSPEC, `${prog}: to the stack (ip6_forward() sends Packet Too Big)`);
    assert.equal(r.out.toString('hex'), input.toString('hex'), `${prog}: untouched`);
  }
  for (const [prog, spec] of [['wan', tcp6Of(REMOTE6, 40000, HOST6, 113, NARROW_MTU)], ['lan', tcp6Of(HOST6, 113, REMOTE6, 40000, NARROW_MTU)]] as const) {
    const r = run(f, prog, buildPacket6(spec));
    assert.equal(r.retval, TC_ACT_REDIRECT, `${prog}: ${NARROW_MTU} bytes fit`);
    assert.equal(r.out[ETH_HLEN + 7], 63, `${prog}: hop limit - 1`);
  }
  assert.deepEqual(stats6(f), { 'lan/pass': 1, 'wan/pass': 1, 'lan/translated': 1, 'wan/translated': 1 });
  assert.deepEqual(stats(f), {}, 'no IPv4 counter moved');
});
