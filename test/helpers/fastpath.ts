/**
 * The bed of the fast-path rows (test/bpf/redirect.test.ts, test/bpf/xdp.test.ts):
 * a namespace of their own (test/helpers/netns.ts) where the FIB lookup finds
 * `lan` (10.0.0.1/24, 2001:db8:1::1/64) with the LAN host's MAC as a permanent
 * neighbour, and `wan` (192.0.2.1/24, default route via 192.0.2.254, the
 * router's MAC permanent), forwarding on; and a data path on simulated time
 * with established flows through it.
 */
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { IRC_AND_GAME } from './rules.js';
import { DIR_IN, DIR_OUT, IPPROTO_TCP, IPPROTO_UDP } from '../../src/bpf/abi.js';
import { useDatapath, type TestDatapath, type TestDatapathOptions } from './bpffs.js';
import { enterTestNetns } from './netns.js';

export const WAN = '192.0.2.1';
export const ROUTER = '192.0.2.254';
export const REMOTE = '198.51.100.7';
export const HOST = '10.0.0.2';
export const HOST6 = '2001:db8:1::2';
export const REMOTE6 = '2001:db8:99::7';
export const HOST_MAC = '02:00:00:00:0a:02';
export const ROUTER_MAC = '02:00:00:00:c0:fe';
export const LAN_MAC = '02:00:00:00:0a:01';
export const WAN_MAC = '02:00:00:00:c0:01';
// What the test packets carry on arrival: to the test run's device (the
// namespace's loopback, MAC 0: PACKET_HOST), from a MAC the egresses do not have.
export const IN_ETH = { dst: '00:00:00:00:00:00', src: '02:00:00:00:ee:02' };

export const EPOCH = 1n << 30n;
/** The simulated clock: 700 ms into an epoch, so that 20 ms back is the same epoch. */
export const T = 5000n * EPOCH + 700_000_000n;
export const MS = 1_000_000n;

export const RULES = IRC_AND_GAME;

export function enterRedirectNetns(t: { after: (fn: () => void) => void }, opts: { hostNeigh: boolean; defaultRoute?: boolean; extra?: string[][] }): { lan: number; wan: number } {
  enterTestNetns(t, 'ptrd', [
    ['link', 'add', 'lan', 'address', LAN_MAC, 'type', 'veth', 'peer', 'name', 'lanp'],
    ['link', 'add', 'wan', 'address', WAN_MAC, 'type', 'veth', 'peer', 'name', 'wanp'],
    ['exec', 'sysctl', '-qw', 'net.ipv4.conf.all.forwarding=1', 'net.ipv6.conf.all.forwarding=1'],
    ['link', 'set', 'lan', 'up'], ['link', 'set', 'lanp', 'up'],
    ['link', 'set', 'wan', 'up'], ['link', 'set', 'wanp', 'up'],
    ['addr', 'add', '10.0.0.1/24', 'dev', 'lan'],
    ['addr', 'add', '2001:db8:1::1/64', 'dev', 'lan', 'nodad'],
    ['addr', 'add', `${WAN}/24`, 'dev', 'wan'],
    ...(opts.defaultRoute === false ? [] : [['route', 'add', 'default', 'via', ROUTER, 'dev', 'wan']]),
    ['neigh', 'replace', ROUTER, 'lladdr', ROUTER_MAC, 'nud', 'permanent', 'dev', 'wan'],
    ...(opts.hostNeigh ? [
      ['neigh', 'replace', HOST, 'lladdr', HOST_MAC, 'nud', 'permanent', 'dev', 'lan'],
      ['neigh', 'replace', HOST6, 'lladdr', HOST_MAC, 'nud', 'permanent', 'dev', 'lan'],
    ] : []),
    ...(opts.extra ?? []),
  ]);
  return { lan: ffi.ifNameToIndex('lan'), wan: ffi.ifNameToIndex('wan') };
}

/** The data path with an open TCP (irc) and UDP (game) flow and an IPv6 TCP flow, made at `created` and stamped `stamp`. */
export function seeded(t: { after: (fn: () => void) => void }, dev: { lan: number; wan: number }, stamp: bigint, created = T - 10n * EPOCH,
  opts: TestDatapathOptions = {}): TestDatapath {
  const f = useDatapath(t, { ...opts, testClock: true });
  const compiled = compileRules(RULES);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, dev.wan, 8);
  f.state.setLocalAddrs([WAN, '10.0.0.1']);
  f.state.setLanNets(['10.0.0.0/24']);
  f.state.setLanNets6(['2001:db8:1::/64']);
  f.dp.setTestClock(T);
  for (const [rule, proto, wanPort, hostPort] of [['irc', IPPROTO_TCP, 113, 113], ['game', IPPROTO_UDP, 27000, 28000]] as const) {
    const rid = compiled.ids.get(rule)!;
    f.dp.maps.sessions.set({ rule: rid, peer: '0.0.0.0' }, { opened_ns: created, last_seen_ns: stamp, host: HOST, ifindex: dev.lan });
    const seen = proto === IPPROTO_TCP ? 3 : 0;
    const common = { created_ns: created, last_seen_ns: stamp, rule: rid, sess_peer: '0.0.0.0', seen };
    f.dp.maps.flows.set({ saddr: REMOTE, daddr: WAN, sport: 40000, dport: wanPort, proto, dir: DIR_IN },
      { ...common, nat_addr: HOST, nat_port: hostPort, ifindex: dev.lan });
    f.dp.maps.flows.set({ saddr: HOST, daddr: REMOTE, sport: hostPort, dport: 40000, proto, dir: DIR_OUT },
      { ...common, nat_addr: WAN, nat_port: wanPort, ifindex: dev.wan });
  }
  const rid = compiled.ids.get('irc')!;
  f.dp.maps.sessions6.set({ rule: rid, host: HOST6, peer: '::' }, { opened_ns: created, last_seen_ns: stamp, host: HOST6, ifindex: dev.lan });
  const common6 = { created_ns: created, last_seen_ns: stamp, rule: rid, seen: 3, flags: 0, nat_port: 113 };
  f.dp.maps.flows6.set({ saddr: REMOTE6, daddr: HOST6, sport: 40000, dport: 113, proto: IPPROTO_TCP, dir: DIR_IN }, { ...common6, ifindex: dev.lan });
  f.dp.maps.flows6.set({ saddr: HOST6, daddr: REMOTE6, sport: 113, dport: 40000, proto: IPPROTO_TCP, dir: DIR_OUT }, { ...common6, ifindex: dev.wan });
  return f;
}

