/**
 * Manual control of sessions (SPEC 4.7): PorttrigState.openSession and
 * closeSession against a real data path (maps in a throw-away bpffs), with a
 * fake clock.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLOCK_BIAS_NS, DIR_IN, DIR_OUT, FLOW6_CONTACTED, IPPROTO_TCP, IPPROTO_UDP, NSEC_PER_SEC, type PtSession } from '../../src/bpf/abi.js';
import { parseConfig } from '../../src/config/load.js';
import { PorttrigState, type LanSubnet } from '../../src/core/state.js';
import { PorttrigError, type ErrorCode } from '../../src/errors.js';
import { compileRules } from '../../src/rules/compile.js';
import { bpfSkipReason, useDatapath } from '../helpers/bpffs.js';

const skip = bpfSkipReason() ?? false;
const A = '192.168.1.10';
const B = '192.168.1.11';
const PEER = '198.51.100.7';
const LAN: LanSubnet[] = [{ interface: 'lan0', ifindex: 7, cidr: '192.168.1.0/24', address: '192.168.1.1' }];
const IDLE_S = 60n;

const CONFIG = `interfaces: {wan: wan0, lan: [lan0]}
rules:
  - {name: irc, trigger: tcp/6667, open: tcp/113, idle_timeout: ${IDLE_S}s}
  - {name: game, trigger: udp/27015, open: udp/27000, conflict: last, kill_flows_on_expiry: true}
  - {name: voip, trigger: udp/5060, open: tcp/5061, peer: contacted}
  - {name: off, enabled: false, trigger: tcp/7777, open: tcp/7778}
`;

/** A data path with CONFIG's rules and a clock the test moves. */
function setup(t: { after: (fn: () => void) => void }, sessionsPerHost = 8): { st: PorttrigState; clock: { now: bigint }; ids: Map<string, number> } {
  const f = useDatapath(t);
  const clock = { now: CLOCK_BIAS_NS + 1000n * NSEC_PER_SEC };
  const st = new PorttrigState(f.dp.maps, () => clock.now, f.dp);
  const compiled = compileRules(parseConfig(CONFIG, 'test.yaml').rules);
  st.applyRules(compiled);
  st.setRuntime('203.0.113.1', 3, sessionsPerHost);
  return { st, clock, ids: compiled.ids };
}

function throwsCode(fn: () => unknown, code: ErrorCode, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PorttrigError, `not a PorttrigError: ${String(e)}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

const hostCount = (st: PorttrigState, host: string): number | undefined => st.maps.hostSessions.get(host)?.sessions;

test('open: creates the session with the LAN interface, counts it; again: refreshes, no second count', { skip }, (t) => {
  const { st, clock, ids } = setup(t);
  const r = st.openSession({ rule: 'irc', host: A }, LAN);
  assert.deepEqual(r, { rule: 'irc', family: 'ipv4', host: A, peer: null, action: 'opened', previous_host: null, expires_in_s: Number(IDLE_S) });
  const s = st.maps.sessions.get({ rule: ids.get('irc')!, peer: '0.0.0.0' });
  assert.deepEqual(s, { opened_ns: clock.now, last_seen_ns: clock.now, host: A, ifindex: 7 });
  assert.equal(hostCount(st, A), 1);
  assert.equal(st.counter(ids.get('irc')!, 'sessions_opened'), 1n);

  clock.now += 10n * NSEC_PER_SEC;
  assert.equal(st.openSession({ rule: 'irc', host: A }, LAN).action, 'refreshed');
  const s2 = st.maps.sessions.get({ rule: ids.get('irc')!, peer: '0.0.0.0' })!;
  assert.equal(s2.opened_ns, s!.opened_ns, 'a refresh keeps the opening time');
  assert.equal(s2.last_seen_ns, clock.now, 'a refresh restarts the idle timer');
  assert.equal(hostCount(st, A), 1);
  assert.deepEqual(st.sessions().map((v) => [v.rule, v.host]), [['irc', A]]);
});

test('open: bad arguments are typed errors and change nothing', { skip }, (t) => {
  const { st } = setup(t);
  throwsCode(() => st.openSession({ rule: 'nope', host: A }, LAN), 'E_NOT_FOUND', /no rule named "nope" \(rules: game, irc, off, voip\)/);
  throwsCode(() => st.openSession({ rule: 'irc', host: 'lan-pc' }, LAN), 'E_USAGE', /host "lan-pc" is not an IPv4 or IPv6 address/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '10.9.9.9' }, LAN), 'E_USAGE', /10\.9\.9\.9 is not inside a LAN subnet \(LAN subnets: 192\.168\.1\.0\/24 on lan0\)/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '192.168.1.1' }, LAN), 'E_USAGE', /gateway's own address on lan0/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '192.168.1.0' }, LAN), 'E_USAGE', /network address/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '192.168.1.255' }, LAN), 'E_USAGE', /broadcast address/);
  throwsCode(() => st.openSession({ rule: 'off', host: A }, LAN), 'E_USAGE', /rule "off" is disabled/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A }, LAN), 'E_USAGE', /peer: contacted; say which remote peer/);
  throwsCode(() => st.openSession({ rule: 'irc', host: A, peer: PEER }, LAN), 'E_USAGE', /peer: any; --peer applies/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A, peer: '192.168.1.20' }, LAN), 'E_USAGE', /peer 192\.168\.1\.20 is inside the LAN/);
  assert.deepEqual([...st.maps.sessions.entries()], []);
  assert.deepEqual([...st.maps.hostSessions.entries()], []);
});

test('conflict: first refuses another host unless --force; force moves the count', { skip }, (t) => {
  const { st } = setup(t);
  st.openSession({ rule: 'irc', host: A }, LAN);
  throwsCode(() => st.openSession({ rule: 'irc', host: B }, LAN), 'E_CONFLICT', /held by 192\.168\.1\.10 for another 60 s \(conflict: first\); use --force/);
  assert.equal(st.sessions()[0]!.host, A);
  assert.equal(hostCount(st, B), undefined, 'a refused open takes no slot');
  const r = st.openSession({ rule: 'irc', host: B, force: true }, LAN);
  assert.equal(r.action, 'taken_over');
  assert.equal(r.previous_host, A);
  assert.equal(st.sessions()[0]!.host, B);
  assert.equal(hostCount(st, A), undefined, "the previous owner's slot is released");
  assert.equal(hostCount(st, B), 1);
});

test('conflict: last takes the session over without --force, like a trigger would', { skip }, (t) => {
  const { st } = setup(t);
  st.openSession({ rule: 'game', host: A }, LAN);
  assert.equal(st.openSession({ rule: 'game', host: B }, LAN).action, 'taken_over');
  assert.equal(st.sessions()[0]!.host, B);
});

test('an expired session of another host is as good as absent', { skip }, (t) => {
  const { st, clock } = setup(t);
  st.openSession({ rule: 'irc', host: A }, LAN);
  clock.now += (IDLE_S + 1n) * NSEC_PER_SEC;
  const r = st.openSession({ rule: 'irc', host: B }, LAN);
  assert.deepEqual([r.action, r.previous_host], ['opened', null]);
  assert.equal(hostCount(st, A), undefined);
  assert.equal(hostCount(st, B), 1);
});

test('sessions_per_host: a host at its limit is refused and keeps what it has', { skip }, (t) => {
  const { st } = setup(t, 1);
  st.openSession({ rule: 'irc', host: A }, LAN);
  throwsCode(() => st.openSession({ rule: 'game', host: A }, LAN), 'E_LIMIT', /192\.168\.1\.10 holds 1 sessions; limits\.sessions_per_host is 1/);
  assert.deepEqual(st.sessions().map((s) => s.rule), ['irc']);
  assert.equal(st.openSession({ rule: 'irc', host: A }, LAN).action, 'refreshed', 'refreshing needs no new slot');
  assert.equal(st.openSession({ rule: 'game', host: B }, LAN).action, 'opened', 'the limit is per host');
});

test('a session changed by the data path between the decision and the write: the data path wins, decided again', { skip }, (t) => {
  const { st, ids } = setup(t);
  st.openSession({ rule: 'irc', host: A }, LAN);
  const key = { rule: ids.get('irc')!, peer: '0.0.0.0' };
  const sessions = st.maps.sessions;
  const realTake = sessions.take.bind(sessions);
  let raced = false;
  // Like a trigger of B under conflict: last landing just before the take.
  sessions.take = (k) => {
    if (!raced) {
      raced = true;
      const v = sessions.get(k)!;
      sessions.set(k, { ...v, host: B, opened_ns: v.opened_ns + 1n } satisfies PtSession);
    }
    return realTake(k);
  };
  throwsCode(() => st.openSession({ rule: 'irc', host: A }, LAN), 'E_CONFLICT', /held by 192\.168\.1\.11/);
  assert.ok(raced);
  assert.equal(sessions.get(key)!.host, B, "the data path's entry is put back untouched");
});

test('close: removes the session and releases the count; errors name what is wrong', { skip }, (t) => {
  const { st } = setup(t);
  st.openSession({ rule: 'irc', host: A }, LAN);
  throwsCode(() => st.closeSession({ rule: 'irc', host: B }), 'E_NOT_FOUND', /the session of rule "irc" is held by 192\.168\.1\.10, not 192\.168\.1\.11/);
  throwsCode(() => st.closeSession({ rule: 'irc', host: 'x' }), 'E_USAGE', /not an IPv4 or IPv6 address/);
  throwsCode(() => st.closeSession({ rule: 'zzz', host: A }), 'E_NOT_FOUND', /no rule named "zzz"/);
  assert.equal(st.sessions().length, 1, 'refused closes change nothing');
  assert.deepEqual(st.closeSession({ rule: 'irc', host: A }), { rule: 'irc', family: 'ipv4', host: A, closed: [null], flows_removed: 0, flows_kept: 0 });
  assert.deepEqual(st.sessions(), []);
  assert.equal(hostCount(st, A), undefined);
  throwsCode(() => st.closeSession({ rule: 'irc', host: A }), 'E_NOT_FOUND', /192\.168\.1\.10 holds no open session of rule "irc"/);
});

test('close: flows follow kill_flows_on_expiry (removed for game, kept for irc)', { skip }, (t) => {
  const { st, clock, ids } = setup(t);
  const flow = (rule: string, port: number, remotePort: number): void => {
    const now = clock.now;
    const base = { created_ns: now, last_seen_ns: now, rule: ids.get(rule)!, sess_peer: '0.0.0.0', seen: 0, ifindex: 7 };
    st.maps.flows.set({ saddr: PEER, daddr: '203.0.113.1', sport: remotePort, dport: port, proto: IPPROTO_TCP, dir: DIR_IN },
      { ...base, nat_addr: A, nat_port: port });
    st.maps.flows.set({ saddr: A, daddr: PEER, sport: port, dport: remotePort, proto: IPPROTO_TCP, dir: DIR_OUT },
      { ...base, nat_addr: '203.0.113.1', nat_port: port });
  };
  st.openSession({ rule: 'irc', host: A }, LAN);
  st.openSession({ rule: 'game', host: A }, LAN);
  flow('irc', 113, 40000);
  flow('game', 27000, 40001);
  flow('game', 27000, 40002);
  const irc = st.closeSession({ rule: 'irc', host: A });
  assert.deepEqual([irc.flows_removed, irc.flows_kept], [0, 1]);
  const game = st.closeSession({ rule: 'game', host: A });
  assert.deepEqual([game.flows_removed, game.flows_kept], [2, 0]);
  assert.deepEqual(st.flows().map((f) => f.rule), ['irc'], 'only the irc flow is left');
  assert.equal([...st.maps.flows.entries()].length, 2, 'both directions of the killed flows are gone');
});

test('peer mode contacted: open per peer; close without --peer closes all of the host', { skip }, (t) => {
  const { st } = setup(t);
  const P2 = '198.51.100.8';
  assert.equal(st.openSession({ rule: 'voip', host: A, peer: PEER }, LAN).peer, PEER);
  st.openSession({ rule: 'voip', host: A, peer: P2 }, LAN);
  st.openSession({ rule: 'voip', host: B, peer: '198.51.100.9' }, LAN);
  assert.equal(hostCount(st, A), 2);
  assert.deepEqual(st.closeSession({ rule: 'voip', host: A, peer: P2 }).closed, [P2]);
  assert.equal(hostCount(st, A), 1);
  st.openSession({ rule: 'voip', host: A, peer: P2 }, LAN);
  assert.deepEqual(st.closeSession({ rule: 'voip', host: A }).closed.sort(), [PEER, P2]);
  assert.deepEqual(st.sessions().map((s) => [s.host, s.peer]), [[B, '198.51.100.9']]);
  assert.equal(hostCount(st, A), undefined);
});

// --- IPv6 hosts (SPEC 9) -------------------------------------------------------------------

const A6 = '2001:db8:1::10';
const B6 = '2001:db8:1::11';
const PEER6 = '2001:db8:ff::7';
const LAN6: LanSubnet[] = [...LAN, { interface: 'lan0', ifindex: 7, cidr: '2001:db8:1::/64', address: '2001:db8:1::1' }];
const hostCount6 = (st: PorttrigState, host: string): number | undefined => st.maps.hostSessions6.get(host)?.sessions;

test('IPv6 open in mode any: key (rule, host, ::), counted in pt6_host_sessions; two hosts hold the rule at once, no conflict', { skip }, (t) => {
  const { st, clock, ids } = setup(t);
  const r = st.openSession({ rule: 'irc', host: '2001:DB8:1:0::10' }, LAN6);
  assert.deepEqual(r, { rule: 'irc', family: 'ipv6', host: A6, peer: null, action: 'opened', previous_host: null, expires_in_s: Number(IDLE_S) });
  assert.deepEqual(st.maps.sessions6.get({ rule: ids.get('irc')!, host: A6, peer: '::' }), { opened_ns: clock.now, last_seen_ns: clock.now, host: A6, ifindex: 7 });
  assert.equal(hostCount6(st, A6), 1);
  assert.deepEqual([...st.maps.sessions.entries()], []);
  assert.equal(st.counter(ids.get('irc')!, 'sessions_opened', 'ipv6'), 1n);
  assert.equal(st.counter(ids.get('irc')!, 'sessions_opened', 'ipv4'), 0n);
  assert.equal(st.counter(ids.get('irc')!, 'sessions_opened'), 1n, 'both families summed');

  // conflict: first does not apply between IPv6 hosts in mode any.
  assert.equal(st.openSession({ rule: 'irc', host: B6 }, LAN6).action, 'opened');
  clock.now += 5n * NSEC_PER_SEC;
  assert.equal(st.openSession({ rule: 'irc', host: A6 }, LAN6).action, 'refreshed');
  assert.equal(hostCount6(st, A6), 1, 'a refresh takes no second slot');
  // A dual-stack host: its IPv4 session of the same rule beside the IPv6 ones.
  st.openSession({ rule: 'irc', host: A }, LAN6);
  assert.deepEqual(st.sessions().map((v) => [v.family, v.host]), [['ipv4', A], ['ipv6', A6], ['ipv6', B6]]);
});

test('IPv6 open: bad hosts and peers are typed errors and change nothing', { skip }, (t) => {
  const { st } = setup(t);
  throwsCode(() => st.openSession({ rule: 'irc', host: 'fe80::10' }, LAN6), 'E_USAGE', /fe80::10 is a link-local IPv6 address; only global and unique-local/);
  throwsCode(() => st.openSession({ rule: 'irc', host: 'ff02::1' }, LAN6), 'E_USAGE', /multicast/);
  throwsCode(() => st.openSession({ rule: 'irc', host: 'fe80::1%lan0' }, LAN6), 'E_USAGE', /not an IPv4 or IPv6 address/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '2001:db8:2::10' }, LAN6), 'E_USAGE', /not inside a LAN prefix \(LAN IPv6 prefixes: 2001:db8:1::\/64 on lan0\)/);
  throwsCode(() => st.openSession({ rule: 'irc', host: A6 }, LAN), 'E_USAGE', /none: the LAN interfaces have no global or unique-local IPv6 address/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '2001:db8:1::1' }, LAN6), 'E_USAGE', /gateway's own addresses/);
  st.setLocalAddrs6(['2001:db8:1::fe']);
  throwsCode(() => st.openSession({ rule: 'irc', host: '2001:db8:1::fe' }, LAN6), 'E_USAGE', /gateway's own addresses/);
  throwsCode(() => st.openSession({ rule: 'irc', host: '2001:db8:1::' }, LAN6), 'E_USAGE', /subnet-router anycast address of 2001:db8:1::\/64/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A6 }, LAN6), 'E_USAGE', /say which remote peer/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A6, peer: PEER }, LAN6), 'E_USAGE', /peer "198\.51\.100\.7" is not an IPv6 address \(the host is IPv6\)/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A, peer: PEER6 }, LAN6), 'E_USAGE', /is not an IPv4 address \(the host is IPv4\)/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A6, peer: 'fe80::9' }, LAN6), 'E_USAGE', /fe80::9 is a link-local IPv6 address; a remote peer/);
  throwsCode(() => st.openSession({ rule: 'voip', host: A6, peer: '2001:db8:1::99' }, LAN6), 'E_USAGE', /inside the LAN subnet 2001:db8:1::\/64/);
  throwsCode(() => st.openSession({ rule: 'irc', host: A6, peer: PEER6 }, LAN6), 'E_USAGE', /peer: any; --peer applies/);
  assert.deepEqual([...st.maps.sessions6.entries()], []);
  assert.deepEqual([...st.maps.hostSessions6.entries()], []);
});

test('IPv6 peer mode contacted: key (rule, ::, peer) with the owner in the value; conflict first/last and --force between hosts', { skip }, (t) => {
  const { st, ids } = setup(t);
  const voip = ids.get('voip')!;
  const r = st.openSession({ rule: 'voip', host: A6, peer: '2001:DB8:FF::7' }, LAN6);
  assert.deepEqual([r.family, r.peer], ['ipv6', PEER6], 'the peer in canonical form');
  assert.equal(st.maps.sessions6.get({ rule: voip, host: '::', peer: PEER6 })!.host, A6);
  throwsCode(() => st.openSession({ rule: 'voip', host: B6, peer: PEER6 }, LAN6), 'E_CONFLICT', /session of rule "voip" for peer 2001:db8:ff::7 is held by 2001:db8:1::10/);
  assert.equal(st.openSession({ rule: 'voip', host: B6, peer: '2001:db8:ff::8' }, LAN6).action, 'opened', 'another peer: no conflict');
  const forced = st.openSession({ rule: 'voip', host: B6, peer: PEER6, force: true }, LAN6);
  assert.deepEqual([forced.action, forced.previous_host], ['taken_over', A6]);
  assert.equal(hostCount6(st, A6), undefined, "the previous owner's slot is released");
  assert.equal(hostCount6(st, B6), 2);
  assert.deepEqual(st.sessions().map((v) => [v.family, v.host, v.peer]), [['ipv6', B6, PEER6], ['ipv6', B6, '2001:db8:ff::8']]);
  // close without --peer: all of the host's sessions of the rule.
  assert.deepEqual(st.closeSession({ rule: 'voip', host: B6 }).closed.sort(), [PEER6, '2001:db8:ff::8']);
  assert.equal(hostCount6(st, B6), undefined);
});

test('IPv6 sessions_per_host counts per family and per address; at the limit a host sweep (PT_SWEEP_HOST6) runs first', { skip }, (t) => {
  const { st, clock } = setup(t, 1);
  st.openSession({ rule: 'irc', host: A }, LAN6);
  assert.equal(st.openSession({ rule: 'irc', host: A6 }, LAN6).action, 'opened', 'the IPv4 session does not count against IPv6');
  throwsCode(() => st.openSession({ rule: 'game', host: A6 }, LAN6), 'E_LIMIT', /2001:db8:1::10 holds 1 IPv6 sessions; limits\.sessions_per_host is 1/);
  assert.equal(st.openSession({ rule: 'game', host: '2001:db8:1::a10' }, LAN6).action, 'opened', 'a privacy address of the same host counts on its own');
  // The irc session expires: the sweep of that one host (the kernel's) frees the slot.
  clock.now += (IDLE_S + 1n) * NSEC_PER_SEC;
  assert.equal(st.openSession({ rule: 'game', host: A6 }, LAN6).action, 'opened');
  assert.equal(hostCount6(st, A6), 1);
});

test('IPv6 close: flows follow kill_flows_on_expiry; their session is found from the flow (mode any and contacted)', { skip }, (t) => {
  const { st, clock, ids } = setup(t);
  const flow6 = (rule: string, port: number, remotePort: number, host: string, flags = 0, proto = IPPROTO_TCP): void => {
    const now = clock.now;
    const base = { created_ns: now, last_seen_ns: now, rule: ids.get(rule)!, seen: 0, ifindex: 7, flags };
    st.maps.flows6.set({ saddr: PEER6, daddr: host, sport: remotePort, dport: port, proto, dir: DIR_IN }, { ...base, nat_port: port });
    st.maps.flows6.set({ saddr: host, daddr: PEER6, sport: port, dport: remotePort, proto, dir: DIR_OUT }, { ...base, nat_port: port });
  };
  st.openSession({ rule: 'irc', host: A6 }, LAN6);
  st.openSession({ rule: 'game', host: A6 }, LAN6);
  st.openSession({ rule: 'game', host: B6 }, LAN6);
  st.openSession({ rule: 'voip', host: A6, peer: PEER6 }, LAN6);
  flow6('irc', 113, 40000, A6);
  flow6('game', 27000, 40001, A6, 0, IPPROTO_UDP);
  flow6('game', 27000, 40002, B6, 0, IPPROTO_UDP);
  flow6('voip', 5061, 40003, A6, FLOW6_CONTACTED);
  assert.deepEqual(st.sessions().map((v) => [v.rule, v.host, v.flows]),
    [['game', A6, 1], ['game', B6, 1], ['irc', A6, 1], ['voip', A6, 1]]);
  const flows = st.flows();
  assert.deepEqual(flows.map((f) => [f.family, f.rule, f.host, f.remote, f.wan_port, f.host_port]).sort(), [
    ['ipv6', 'game', A6, PEER6, 27000, 27000], ['ipv6', 'game', B6, PEER6, 27000, 27000],
    ['ipv6', 'irc', A6, PEER6, 113, 113], ['ipv6', 'voip', A6, PEER6, 5061, 5061],
  ]);
  const irc = st.closeSession({ rule: 'irc', host: A6 });
  assert.deepEqual([irc.family, irc.closed, irc.flows_removed, irc.flows_kept], ['ipv6', [null], 0, 1]);
  const game = st.closeSession({ rule: 'game', host: A6 });
  assert.deepEqual([game.flows_removed, game.flows_kept], [1, 0], "only A6's game flow is killed; B6's session and flow stay");
  assert.deepEqual(st.closeSession({ rule: 'voip', host: A6, peer: PEER6 }).closed, [PEER6]);
  assert.deepEqual(st.flows().map((f) => [f.rule, f.host]).sort(), [['game', B6], ['irc', A6], ['voip', A6]]);
  assert.equal([...st.maps.flows6.entries()].length, 6, 'both directions of the killed flow are gone');
  throwsCode(() => st.closeSession({ rule: 'irc', host: A6 }), 'E_NOT_FOUND', /2001:db8:1::10 holds no open session of rule "irc"/);
});
