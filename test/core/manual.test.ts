/**
 * Manual control of sessions (SPEC 4.7): PorttrigState.openSession and
 * closeSession against a real data path (maps in a throw-away bpffs), with a
 * fake clock.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CLOCK_BIAS_NS, DIR_IN, DIR_OUT, IPPROTO_TCP, NSEC_PER_SEC, type PtSession } from '../../src/bpf/abi.js';
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
  assert.deepEqual(r, { rule: 'irc', host: A, peer: null, action: 'opened', previous_host: null, expires_in_s: Number(IDLE_S) });
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
  throwsCode(() => st.openSession({ rule: 'irc', host: 'lan-pc' }, LAN), 'E_USAGE', /host "lan-pc" is not an IPv4 address/);
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
  throwsCode(() => st.closeSession({ rule: 'irc', host: 'x' }), 'E_USAGE', /not an IPv4 address/);
  throwsCode(() => st.closeSession({ rule: 'zzz', host: A }), 'E_NOT_FOUND', /no rule named "zzz"/);
  assert.equal(st.sessions().length, 1, 'refused closes change nothing');
  assert.deepEqual(st.closeSession({ rule: 'irc', host: A }), { rule: 'irc', host: A, closed: [null], flows_removed: 0, flows_kept: 0 });
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
