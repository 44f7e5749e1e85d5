/**
 * The IPv6 data path against an attacker on the WAN and a misbehaving LAN
 * host (two LAN hosts), through BPF_PROG_TEST_RUN. Each case runs packets
 * through pt_lan_ingress / pt_wan_ingress on a freshly emptied table and
 * checks the verdict, that a packet refused passes byte for byte, and what
 * the maps hold afterwards (nothing opened that the LAN host did not ask for).
 *
 * Addresses as test/bpf/ipv6.test.ts: LAN 2001:db8:1::/64 and fd00:1::/64,
 * the gateway 2001:db8:1::1 (LAN) and 2001:db8:ffff::1 (WAN), remotes in
 * 2001:db8:99::/64.
 */
import { test, describe as suite, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { monotonicNs } from '../../src/core/state.js';
import type { OpenSpec, Proto, Rule } from '../../src/config/types.js';
import { PKT_STATS_ENTRIES, RULE_COUNTERS, RULE_STATS_ENTRIES, VERDICTS, pktStatsIndex, ruleStatsIndex, type Pt6SessionKey } from '../../src/bpf/abi.js';
import { bpfSkipReason, makeTestDatapath, type TestDatapath, TC_ACT_UNSPEC, TC_ACT_REDIRECT } from '../helpers/bpffs.js';
import {
  ETH_HLEN, ICMP6, NH, TCP, buildPacket, buildPacket6, describe6, fragment6, icmp6Error,
  inetChecksum, pseudoHeader6, verifyChecksums6, type Ext6, type Ipv6Opts, type Packet6Spec,
} from '../helpers/packet.js';

const SKIP = bpfSkipReason();

const MIN = 60_000;

const WAN4 = '203.0.113.1';
const WAN6 = '2001:db8:ffff::1';
const GW_LAN = '2001:db8:1::1';
const HOST_A = '2001:db8:1::2';
const HOST_B = '2001:db8:1::3';
const SUBNET_ANYCAST = '2001:db8:1::';      // RFC 4291 2.6.1: the router's, on every forwarding Linux
const REMOTE = '2001:db8:99::7';
const REMOTE2 = '2001:db8:99::8';
const SERVER = '2001:db8:99::10';
const LAN_IF = 3;
const WAN_IFINDEX = 7;

const openSpec = (proto: Proto, from: number, to: number, lanFrom = from): OpenSpec => ({ protos: [proto], from, to, lanFrom });
function rule(name: string, proto: Proto, trig: number, open: OpenSpec[], o: Partial<Rule> = {}): Rule {
  return {
    name, enabled: true, trigger: { protos: [proto], ranges: [{ from: trig, to: trig }] }, open,
    idleTimeoutMs: 10 * MIN, peer: 'any', conflict: 'first', killFlowsOnExpiry: false, ...o,
  };
}
const RULES: Rule[] = [
  rule('irc', 'tcp', 6667, [openSpec('tcp', 113, 113)]),
  rule('udpxl', 'udp', 28100, [openSpec('udp', 28000, 28009, 29000)]),
  rule('sip', 'udp', 5070, [openSpec('tcp', 5071, 5071)], { peer: 'contacted', conflict: 'first' }),
  rule('xl', 'tcp', 5000, [openSpec('tcp', 6000, 6009, 7000)]),
];

function tcp(src: string, sport: number, dst: string, dport: number, flags: number, ip6: Partial<Ipv6Opts> = {}): Packet6Spec {
  return { ip6: { src, dst, hopLimit: 64, ...ip6 }, l4: { tcp: { sport, dport, flags, seq: 0x10002000, ack: flags & TCP.ACK ? 0x30004000 : 0 } } };
}
function udp(src: string, sport: number, dst: string, dport: number, payload: Buffer = Buffer.from('porttrig\n'), ip6: Partial<Ipv6Opts> = {}): Packet6Spec {
  return { ip6: { src, dst, hopLimit: 64, ...ip6 }, l4: { udp: { sport, dport, payload } } };
}
const withExt = (spec: Packet6Spec, ext: Ext6[]): Packet6Spec => ({ ...spec, ip6: { ...spec.ip6, ext } });
const frame = (p: Packet6Spec | Buffer): Buffer => (Buffer.isBuffer(p) ? p : buildPacket6(p));

let f: TestDatapath;
let ids: Map<string, number>;

function run(prog: 'lan' | 'wan', p: Packet6Spec | Buffer): { retval: number; out: Buffer; input: Buffer } {
  const input = frame(p);
  const out = Buffer.alloc(input.length + 512);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: out });
  assert.equal(r.ret, 0, `BPF_PROG_TEST_RUN of ${prog} failed: ${r.ret}`);
  return { retval: r.retval >>> 0, out: out.subarray(0, r.data_size_out), input };
}

/** The packet is refused: TC_ACT_UNSPEC and not a byte changed. */
function passes(prog: 'lan' | 'wan', p: Packet6Spec | Buffer, what: string): void {
  const r = run(prog, p);
  assert.equal(r.retval, TC_ACT_UNSPEC, `${what}: retval ${r.retval}, want TC_ACT_UNSPEC (${describe6(r.input)})`);
  assert.ok(r.out.equals(r.input), `${what}: the packet must pass untouched`);
}

function reset(): void {
  const m = f.dp.maps;
  for (const map of [m.sessions6, m.hostSessions6, m.flows6, m.frags6, m.sessions, m.hostSessions, m.flows, m.frags] as const) {
    for (const [k] of [...(map as { entries(): Iterable<[unknown, unknown]> }).entries()]) (map as { delete(k: unknown): boolean }).delete(k);
  }
  m.pktStats.zero(Array.from({ length: PKT_STATS_ENTRIES }, (_, i) => i));
  m.ruleStats.zero(Array.from({ length: RULE_STATS_ENTRIES }, (_, i) => i));
  f.state.setRuntime(WAN4, WAN_IFINDEX, 8);
}

function session(r: string, host: string, o: { peer?: string; ageMs?: number } = {}): void {
  const stamp = monotonicNs() - BigInt(Math.round((o.ageMs ?? 1000) * 1e6));
  const key: Pt6SessionKey = o.peer ? { rule: ids.get(r)!, host: '::', peer: o.peer } : { rule: ids.get(r)!, host, peer: '::' };
  f.dp.maps.sessions6.set(key, { opened_ns: stamp, last_seen_ns: stamp, host, ifindex: LAN_IF });
  f.dp.maps.hostSessions6.set(host, { sessions: 1, recheck_ns: 0n });
}
const sessions = (): string[] => [...f.dp.maps.sessions6.entries()].map(([k, v]) => `${k.rule}/${v.host}`).sort();
const flowCount = (): number => [...f.dp.maps.flows6.entries()].length;
/** pt_pkt_stats of a family (0 IPv4, 1 IPv6), direction (0 lan, 1 wan) and verdict. */
const pkt = (fam: number, dir: number, v: (typeof VERDICTS)[number]): number =>
  Number(f.dp.maps.pktStats.sum(pktStatsIndex(fam, dir, VERDICTS.indexOf(v))));
const counter = (fam: number, r: string, c: (typeof RULE_COUNTERS)[number]): number =>
  Number(f.dp.maps.ruleStats.sum(ruleStatsIndex(fam, ids.get(r)!, RULE_COUNTERS.indexOf(c))));

/** `spec`'s UDP payload with its last two bytes chosen so that its checksum, with `dport`/`sport` replaced, comes out 0 (sent 0xffff). */
function udpWhoseXlatedChecksumIsZero(spec: Packet6Spec, to: { sport?: number; dport?: number }): Packet6Spec {
  if (!('udp' in spec.l4)) throw new Error('udp only');
  const u = spec.l4.udp;
  const payload = Buffer.from(u.payload ?? Buffer.alloc(0));
  const len = 8 + payload.length;
  const dg = Buffer.alloc(len);
  dg.writeUInt16BE(to.sport ?? u.sport, 0);
  dg.writeUInt16BE(to.dport ?? u.dport, 2);
  dg.writeUInt16BE(len, 4);
  payload.copy(dg, 8);
  dg.writeUInt16BE(0, len - 2);
  // With the last word w, the sum is S + w; checksum ~(S + w) == 0 for w = ~S (one's complement).
  const ck = inetChecksum(pseudoHeader6(spec.ip6.src, spec.ip6.dst, 17, len), dg);  // ~S
  payload.writeUInt16BE(ck, payload.length - 2);
  return { ...spec, l4: { udp: { ...u, payload } } };
}

const udpChecksumAt = (b: Buffer, l4Off: number): number => b.readUInt16BE(l4Off + 6);

suite('IPv6 data path against an attacker (BPF_PROG_TEST_RUN)', SKIP ? { skip: SKIP } : {}, () => {
  before(() => {
    f = makeTestDatapath();
    const compiled = compileRules(RULES);
    f.state.applyRules(compiled);
    ids = compiled.ids;
    f.state.setRuntime(WAN4, WAN_IFINDEX, 8);
    f.state.setLocalAddrs([WAN4, '10.0.0.1']);
    f.state.setLanNets(['10.0.0.0/24']);
    f.state.setLocalAddrs6([GW_LAN, WAN6, 'fe80::1']);
    f.state.setLanNets6(['2001:db8:1::/64', 'fd00:1::/64']);
  });
  after(() => f?.cleanup());

  // ---- the WAN: nothing reaches a LAN host that its own trigger did not ask for ----
  test('WAN, mode any: another host of the same /64, the gateway and the subnet-router anycast address get nothing on the pinhole of HOST_A', () => {
    reset();
    session('irc', HOST_A);
    for (const dst of [HOST_B, GW_LAN, SUBNET_ANYCAST, '2001:db8:1::2:0', 'fd00:1::2']) {
      passes('wan', tcp(REMOTE, 55555, dst, 113, TCP.SYN), `SYN to ${dst}`);
    }
    assert.equal(flowCount(), 0);
    assert.equal(pkt(1, 1, 'pass'), 5);
  });

  test('WAN: a SYN from a source that is no remote host opens nothing (own, LAN, the host itself, loopback, ::, IPv4-mapped, multicast, link-local)', () => {
    reset();
    session('irc', HOST_A);
    const srcs = [WAN6, GW_LAN, HOST_B, HOST_A, '::1', '::', '::ffff:c633:6407', 'ff02::1', 'ff0e::1', 'fe80::7', 'fd00:1::9'];
    for (const src of srcs) passes('wan', tcp(src, 55555, HOST_A, 113, TCP.SYN), `SYN from ${src}`);
    assert.equal(flowCount(), 0);
  });

  test('WAN: multicast, link-local, loopback and unspecified destinations are never pinhole targets', () => {
    reset();
    session('irc', HOST_A);
    for (const dst of ['ff02::1', 'ff05::2', 'fe80::2', '::1', '::', '::ffff:a00:2']) {
      passes('wan', tcp(REMOTE, 55555, dst, 113, TCP.SYN), `SYN to ${dst}`);
      passes('wan', udp(REMOTE, 40001, dst, 28003), `UDP to ${dst}`);
    }
    assert.equal(flowCount(), 0);
  });

  test('WAN, TCP flags: only a bare SYN opens a flow (SYN+ACK, RST, SYN+RST, SYN+FIN, FIN, ACK, no flags pass)', () => {
    reset();
    session('irc', HOST_A);
    for (const fl of [TCP.SYN | TCP.ACK, TCP.RST, TCP.SYN | TCP.RST, TCP.SYN | TCP.FIN, TCP.FIN, TCP.ACK, TCP.RST | TCP.ACK, 0]) {
      passes('wan', tcp(REMOTE, 55555, HOST_A, 113, fl), `flags 0x${fl.toString(16)}`);
    }
    assert.equal(flowCount(), 0);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN | TCP.ECE | TCP.CWR)).retval, TC_ACT_REDIRECT, 'an ECN-setup SYN is a bare SYN');
  });

  test('WAN: an inbound SYN and inbound packets of its flow never refresh the session; the pinhole closes on time', () => {
    reset();
    session('irc', HOST_A, { ageMs: 9 * MIN });
    const [before] = [...f.dp.maps.sessions6.entries()].map(([, v]) => v);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)).retval, TC_ACT_REDIRECT);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.ACK)).retval, TC_ACT_REDIRECT);
    assert.equal(run('wan', tcp(REMOTE2, 55556, HOST_A, 113, TCP.SYN)).retval, TC_ACT_REDIRECT);
    const [afterS] = [...f.dp.maps.sessions6.entries()].map(([, v]) => v);
    assert.equal(afterS!.last_seen_ns, before!.last_seen_ns, 'session untouched by WAN traffic');
    // Past the idle timeout: a new remote is refused although the flows above still live.
    session('irc', HOST_A, { ageMs: 10 * MIN + 1000 });
    passes('wan', tcp(REMOTE2, 55557, HOST_A, 113, TCP.SYN), 'SYN after expiry');
  });

  test('WAN, mode contacted: a remote other than the contacted peer, and the peer to another host, get nothing', () => {
    reset();
    session('sip', HOST_A, { peer: SERVER });
    passes('wan', tcp(REMOTE, 55555, HOST_A, 5071, TCP.SYN), 'another remote');
    passes('wan', tcp(SERVER, 55555, HOST_B, 5071, TCP.SYN), 'the peer to HOST_B');
    passes('wan', tcp(SERVER, 55555, SUBNET_ANYCAST, 5071, TCP.SYN), 'the peer to the subnet-router anycast address');
    assert.equal(flowCount(), 0);
  });

  // ---- extension headers ----
  test('WAN: a SYN hidden behind an unknown header (253), No Next Header (59), AH or a header chain past 8 opens nothing', () => {
    reset();
    session('irc', HOST_A);
    const syn = buildPacket6(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN));
    const tcpBytes = syn.subarray(ETH_HLEN + 40);
    for (const nh of [253, NH.NONE, NH.AH, 4, 41]) {
      // An 8-byte header of type `nh` whose next header says TCP, then the SYN's TCP header.
      const hdr = Buffer.alloc(8);
      hdr[0] = 6;
      hdr[1] = 0;
      const b = buildPacket6({ ip6: { src: REMOTE, dst: HOST_A, nextHeader: nh }, l4: { raw: Buffer.concat([hdr, tcpBytes]), proto: nh } });
      passes('wan', b, `behind next header ${nh}`);
    }
    passes('wan', withExt(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), new Array<Ext6>(9).fill({ type: 'dstopts' })), 'nine headers');
    passes('wan', withExt(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), [{ type: 'routing' }, { type: 'hop' }]), 'hop-by-hop not first');
    assert.equal(flowCount(), 0);
  });

  test('LAN: a trigger behind an unknown header or AH arms nothing', () => {
    reset();
    const trig = buildPacket6(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN)).subarray(ETH_HLEN + 40);
    for (const nh of [253, NH.AH, NH.NONE]) {
      const hdr = Buffer.alloc(8);
      hdr[0] = 6;
      passes('lan', buildPacket6({ ip6: { src: HOST_A, dst: SERVER, nextHeader: nh }, l4: { raw: Buffer.concat([hdr, trig]), proto: nh } }), `behind ${nh}`);
    }
    assert.deepEqual(sessions(), []);
  });

  test('WAN: payload length lies: a TCP data offset past the payload length, or a UDP length below 8, opens nothing', () => {
    reset();
    session('irc', HOST_A);
    session('udpxl', HOST_A);
    const b = buildPacket6(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN));
    b[ETH_HLEN + 40 + 12] = 0x60;  // 24 bytes of header claimed, 20 there (the payload length says 20)
    passes('wan', b, 'doff past the payload');
    const u = buildPacket6(udp(REMOTE, 40001, HOST_A, 28003));
    u.writeUInt16BE(4, ETH_HLEN + 40 + 4);
    passes('wan', u, 'UDP length 4');
    // Payload length shorter than the datagram: the trailing bytes are no TCP header.
    const t = buildPacket6(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN));
    t.writeUInt16BE(12, ETH_HLEN + 4);
    passes('wan', t, 'payload length 12 of a 20-byte TCP header');
    assert.equal(flowCount(), 0);
  });

  test('reload: a flow whose WAN port a reload took from its rule is no longer forwarded, either way', () => {
    reset();
    session('irc', HOST_A);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)).retval, TC_ACT_REDIRECT);
    const moved = compileRules([rule('irc', 'tcp', 6667, [openSpec('tcp', 114, 114)]), ...RULES.slice(1)], ids);
    try {
      // The port table first, as applyRules() writes it; the flow entries still there (the race).
      const flows = [...f.dp.maps.flows6.entries()];
      f.state.applyRules(moved);
      for (const [k, v] of flows) f.dp.maps.flows6.set(k, v);
      passes('lan', tcp(HOST_A, 113, REMOTE, 55555, TCP.SYN | TCP.ACK), 'the reply');
      passes('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.ACK), 'the inbound ACK');
      // (The entries themselves are applyRules()'s and the sweep's to remove: a port no spec
      // holds is not looked up at all.)
      passes('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), 'a new SYN to the old port');
    } finally {
      f.state.applyRules(compileRules(RULES, ids));
    }
  });

  // ---- fragments ----
  test('WAN: a TCP first fragment without the whole TCP header (RFC 7112) opens nothing', () => {
    reset();
    session('irc', HOST_A);
    const whole = buildPacket6(withExt(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), [{ type: 'frag', id: 99 }]));
    // 16 bytes of TCP header in a first fragment (M set).
    const head = Buffer.from(whole.subarray(0, ETH_HLEN + 48 + 16));
    head.writeUInt16BE(1, ETH_HLEN + 40 + 2);
    head.writeUInt16BE(8 + 16, ETH_HLEN + 4);
    passes('wan', head, 'tiny first fragment');
    assert.equal(flowCount(), 0);
    assert.equal([...f.dp.maps.frags6.entries()].length, 0);
  });

  test('WAN: a second first fragment with the same id to a closed port takes over nothing: the later fragments no longer follow', () => {
    reset();
    session('udpxl', HOST_A);
    const big = (dport: number): Buffer => buildPacket6(withExt(udp(REMOTE, 40001, HOST_A, dport, Buffer.alloc(64, 0x5a)), [{ type: 'frag', id: 0x0badcafe }]));
    assert.equal(run('wan', fragment6(big(28003), 0, 32)).retval, TC_ACT_REDIRECT, 'the first fragment of the flow');
    assert.equal([...f.dp.maps.frags6.entries()].length, 1);
    passes('wan', fragment6(big(22), 0, 32), 'another first fragment, same id, port 22');
    assert.equal([...f.dp.maps.frags6.entries()].length, 0, 'the entry is forgotten');
    passes('wan', fragment6(big(28003), 32, 40), 'the later fragment');
  });

  test('WAN: an atomic fragment (offset 0, M clear) is an ordinary packet: it opens its flow and leaves no pt6_frags entry', () => {
    reset();
    session('irc', HOST_A);
    assert.equal(run('wan', withExt(tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN), [{ type: 'frag', id: 5 }])).retval, TC_ACT_REDIRECT);
    assert.equal([...f.dp.maps.frags6.entries()].length, 0);
    passes('wan', withExt(tcp(REMOTE, 55555, HOST_B, 113, TCP.SYN), [{ type: 'frag', id: 5 }]), 'to HOST_B');
  });

  // ---- ICMPv6 errors ----
  test('WAN: ICMPv6 errors open nothing and reach no one but the host of a live flow', () => {
    reset();
    session('irc', HOST_A);
    const q = tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK | TCP.SYN);
    const err = (o: Partial<{ src: string; dst: string; quoted: Packet6Spec; quoteLen: number; type: number }>): Packet6Spec =>
      icmp6Error({ type: o.type ?? ICMP6.DEST_UNREACH, code: 0, ip6: { src: o.src ?? REMOTE, dst: o.dst ?? HOST_A }, quoted: o.quoted ?? q, ...(o.quoteLen ? { quoteLen: o.quoteLen } : {}) });
    // No flow yet: an error quoting the host's would-be reply is nothing.
    passes('wan', err({}), 'error about no flow');
    // An error quoting a trigger packet never arms.
    passes('wan', err({ quoted: tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN) }), 'error quoting a trigger');
    assert.deepEqual(sessions(), [`${ids.get('irc')}/${HOST_A}`]);
    assert.equal(flowCount(), 0);
    // Now the flow exists.
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)).retval, TC_ACT_REDIRECT);
    assert.equal(run('wan', err({})).retval, TC_ACT_REDIRECT, 'the error about the flow goes to its host');
    passes('wan', err({ dst: HOST_B }), 'the same error sent to HOST_B');
    passes('wan', err({ src: HOST_B }), 'from a LAN source');
    passes('wan', err({ src: WAN6 }), 'from the gateway\'s address');
    passes('wan', err({ src: 'fe80::7' }), 'from link-local');
    passes('wan', err({ quoteLen: 40 + 4 }), 'quote cut inside the ports');
    passes('wan', err({ type: 128 }), 'an echo request that looks like the error');
    passes('wan', err({ quoted: withExt(tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK), [{ type: 'frag', offset: 8, more: true, id: 1 }]) }), 'quoting a non-first fragment');
    passes('wan', err({ quoted: withExt(tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK), [{ type: 'dstopts' }, { type: 'hop' }]) }), 'quote with a late hop-by-hop');
    passes('wan', err({ quoted: tcp(REMOTE, 55555, HOST_A, 113, TCP.ACK) }), 'quoting the inbound direction');
    assert.equal(flowCount(), 2, 'still the one flow');
  });

  test('WAN: an ICMPv6 error quoting only 8 bytes of a translated TCP reply: the quoted port put back, the ICMPv6 checksum right, nothing past the quote written', () => {
    reset();
    session('xl', HOST_A);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 6003, TCP.SYN)).retval, TC_ACT_REDIRECT);
    const quoted = tcp(HOST_A, 6003, REMOTE, 55555, TCP.SYN | TCP.ACK, { hopLimit: 63 });
    const e = run('wan', icmp6Error({ type: ICMP6.PKT_TOO_BIG, code: 0, rest: 1280, ip6: { src: REMOTE2, dst: HOST_A }, quoted, quoteLen: 48 }));
    assert.equal(e.retval, TC_ACT_REDIRECT);
    assert.equal(e.out.length, e.input.length);
    const want = buildPacket6(icmp6Error({ type: ICMP6.PKT_TOO_BIG, code: 0, rest: 1280, ip6: { src: REMOTE2, dst: HOST_A, hopLimit: 63 }, quoted: tcp(HOST_A, 7003, REMOTE, 55555, TCP.SYN | TCP.ACK, { hopLimit: 63 }), quoteLen: 48 }));
    assert.ok(e.out.equals(want), `${describe6(e.out)} != ${describe6(want)}`);
    assert.equal(verifyChecksums6(e.out).l4, true);
    // Cut one byte shorter (7 bytes of TCP): not even the ports' 8 bytes: passed untouched.
    passes('wan', icmp6Error({ type: ICMP6.PKT_TOO_BIG, code: 0, rest: 1280, ip6: { src: REMOTE2, dst: HOST_A }, quoted, quoteLen: 47 }), '7 bytes quoted');
  });

  test('LAN: an ICMPv6 error quoting an inbound packet of no flow reaches no one (no flow, no session)', () => {
    reset();
    passes('lan', icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_A, dst: REMOTE }, quoted: udp(REMOTE, 40001, HOST_A, 29003) }), 'no flow');
    assert.equal(flowCount(), 0);
    assert.deepEqual(sessions(), []);
  });

  // ---- hop limit ----
  test('hop limit 0 or 1 on a packet of a flow: to the stack untouched, the flow not refreshed', () => {
    reset();
    session('irc', HOST_A);
    assert.equal(run('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.SYN)).retval, TC_ACT_REDIRECT);
    const stamp = (): bigint[] => [...f.dp.maps.flows6.entries()].map(([, v]) => v).map((v) => v.last_seen_ns);
    const before0 = stamp();
    for (const hl of [0, 1]) {
      passes('wan', tcp(REMOTE, 55555, HOST_A, 113, TCP.ACK, { hopLimit: hl }), `inbound hop limit ${hl}`);
      passes('lan', tcp(HOST_A, 113, REMOTE, 55555, TCP.ACK, { hopLimit: hl }), `reply hop limit ${hl}`);
    }
    assert.deepEqual(stamp(), before0);
  });

  // ---- UDP checksum 0 after port translation ----
  test('UDP whose checksum comes out 0 after port translation is sent with 0xffff, both ways (RFC 8200 8.1)', () => {
    reset();
    session('udpxl', HOST_A);
    const inb = udpWhoseXlatedChecksumIsZero(udp(REMOTE, 40001, HOST_A, 28003, Buffer.from('porttrig ipv6 zero..')), { dport: 29003 });
    const r = run('wan', inb);
    assert.equal(r.retval, TC_ACT_REDIRECT);
    assert.equal(r.out.readUInt16BE(ETH_HLEN + 40 + 2), 29003);
    assert.equal(udpChecksumAt(r.out, ETH_HLEN + 40), 0xffff, 'inbound: checksum field');
    assert.equal(verifyChecksums6(r.out).l4, true);
    const rep = udpWhoseXlatedChecksumIsZero(udp(HOST_A, 29003, REMOTE, 40001, Buffer.from('porttrig ipv6 back..')), { sport: 28003 });
    const rr = run('lan', rep);
    assert.equal(rr.retval, TC_ACT_REDIRECT);
    assert.equal(rr.out.readUInt16BE(ETH_HLEN + 40), 28003);
    assert.equal(udpChecksumAt(rr.out, ETH_HLEN + 40), 0xffff, 'outbound: checksum field');
    assert.equal(verifyChecksums6(rr.out).l4, true);
    // The host's Port Unreachable quoting the first datagram: its quoted checksum (0xffff after
    // translation) is put back as the remote sent it, and the remote's one that becomes 0 goes 0xffff.
    const quoted = udpWhoseXlatedChecksumIsZero(udp(REMOTE, 40001, HOST_A, 29003, Buffer.from('porttrig ipv6 quote.')), { dport: 28003 });
    const e = run('lan', icmp6Error({ type: ICMP6.DEST_UNREACH, code: ICMP6.PORT_UNREACH, ip6: { src: HOST_A, dst: REMOTE }, quoted }));
    assert.equal(e.retval, TC_ACT_REDIRECT);
    const qOff = ETH_HLEN + 40 + 8 + 40;
    assert.equal(e.out.readUInt16BE(qOff + 2), 28003);
    assert.equal(udpChecksumAt(e.out, qOff), 0xffff, 'quoted checksum field');
    const ck = verifyChecksums6(e.out);
    assert.equal(ck.l4, true, 'ICMPv6 checksum');
    assert.equal(ck.quotedL4, true, 'quoted UDP checksum');
  });

  // ---- the LAN: what arms ----
  test('LAN: triggers to destinations that are no remote host arm nothing (IPv4-mapped, loopback, ::, the gateway, another LAN host, multicast)', () => {
    reset();
    for (const dst of ['::ffff:c633:640a', '::1', '::', WAN6, GW_LAN, HOST_B, SUBNET_ANYCAST, 'fd00:1::7', 'ff02::1', 'ff0e::1', 'fe80::9']) {
      passes('lan', tcp(HOST_A, 40000, dst, 6667, TCP.SYN), `trigger to ${dst}`);
    }
    assert.deepEqual(sessions(), []);
    assert.equal(counter(1, 'irc', 'trigger_hits'), 0);
  });

  test('LAN: a reply on an accepted flow to the remote\'s port that is a trigger port (udp/5070) arms nothing', () => {
    reset();
    session('udpxl', HOST_A);
    assert.equal(run('wan', udp(REMOTE, 5070, HOST_A, 28003)).retval, TC_ACT_REDIRECT);
    assert.equal(run('lan', udp(HOST_A, 29003, REMOTE, 5070)).retval, TC_ACT_REDIRECT);
    assert.deepEqual(sessions(), [`${ids.get('udpxl')}/${HOST_A}`], 'no sip session for the remote');
    assert.equal(counter(1, 'sip', 'trigger_hits'), 0);
  });

  test('LAN: a trigger from the subnet-router anycast address (prefix::) arms nothing, as IPv4\'s broadcast source', () => {
    reset();
    passes('lan', tcp(SUBNET_ANYCAST, 40000, SERVER, 6667, TCP.SYN), 'trigger from 2001:db8:1::');
    assert.deepEqual(sessions(), []);
    // Even with a session held by it (armed before this check existed), nothing goes in to it.
    session('irc', SUBNET_ANYCAST);
    passes('wan', tcp(REMOTE, 55555, SUBNET_ANYCAST, 113, TCP.SYN), 'inbound to it');
    assert.equal(flowCount(), 0);
    // A /127 (RFC 6164) has no subnet-router anycast address: its all-zero address is a host.
    f.state.setLanNets6(['2001:db8:1::/64', 'fd00:1::/64', '2001:db8:7::/127']);
    try {
      assert.equal(run('lan', tcp('2001:db8:7::', 40000, SERVER, 6667, TCP.SYN)).retval, TC_ACT_UNSPEC);
      assert.ok(sessions().includes(`${ids.get('irc')}/2001:db8:7::`), 'the /127 host arms');
      // Other hosts whose interface identifier has zero words still arm.
      for (const h of ['2001:db8:1:0:1::', '2001:db8:1:0:8000::', '2001:db8:1::8000:0', 'fd00:1::1']) {
        run('lan', tcp(h, 40000, SERVER, 6667, TCP.SYN));
        assert.ok(sessions().includes(`${ids.get('irc')}/${h}`), `${h} arms`);
      }
    } finally {
      f.state.setLanNets6(['2001:db8:1::/64', 'fd00:1::/64']);
    }
  });

  // ---- IPv4 behaviour for IPv6-looking frames ----
  test('an 0x86dd frame carrying IPv4 bytes is IPv6 malformed and touches no IPv4 state', () => {
    reset();
    const v4 = buildPacket({ ip: { src: '10.0.0.2', dst: '198.51.100.10' }, l4: { tcp: { sport: 40000, dport: 6667, flags: TCP.SYN } } });
    const b = Buffer.from(v4);
    b.writeUInt16BE(0x86dd, 12);
    // Pad to the 40 bytes of an IPv6 header at least.
    const pad = Buffer.concat([b, Buffer.alloc(40)]);
    passes('lan', pad, 'lan');
    passes('wan', pad, 'wan');
    assert.equal(pkt(1, 0, 'malformed') + pkt(1, 1, 'malformed'), 2);
    assert.equal(pkt(0, 0, 'pass') + pkt(0, 0, 'trigger') + pkt(0, 1, 'pass') + pkt(0, 1, 'malformed'), 0);
    assert.equal([...f.dp.maps.sessions.entries()].length, 0);
    assert.deepEqual(sessions(), []);
  });

  test('a VLAN-tagged (0x8100) IPv6 trigger is not parsed by either family; IPv4 counts it as passed', () => {
    reset();
    const v6 = buildPacket6(tcp(HOST_A, 40000, SERVER, 6667, TCP.SYN));
    const tagged = Buffer.concat([v6.subarray(0, 12), Buffer.from([0x81, 0x00, 0x00, 0x05]), v6.subarray(12)]);
    passes('lan', tagged, 'tagged trigger');
    assert.deepEqual(sessions(), []);
    assert.equal(pkt(0, 0, 'pass'), 1);
    assert.equal(pkt(1, 0, 'pass') + pkt(1, 0, 'trigger'), 0);
  });

});
