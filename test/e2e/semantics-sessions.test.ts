/**
 * End to end, SPEC 4.4-4.6 as users see them: two LAN hosts and two WAN
 * servers, real sockets. Who owns a session when two hosts trigger the same
 * rule (conflict first / last), peer mode contacted, and sessions_per_host.
 * Each case has its own rule and ports; the cases of one gateway run at the
 * same time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  GW_WAN, LAN_HOST, LAN_HOST2, Topology, WAN_SERVER, WAN_SERVER2, sleep, type Proc,
} from './topology.js';

const root = process.getuid?.() === 0;
/** Idle timeout of the rule whose expiry is waited for. */
const IDLE_MS = 2000;
/** Trigger keep-alive interval, well inside IDLE_MS. */
const KEEPALIVE_MS = 400;
/** Margin after an idle timeout (loaded machine; the sweep runs every second). */
const EXPIRY_SLACK_MS = 2000;
const REFUSED_MS = 1500;
const OK_MS = 4000;

const RULES = `  - name: first
    trigger: udp/5500
    open: tcp/5501
    idle_timeout: ${IDLE_MS}ms
    conflict: first
  - name: last
    trigger: udp/5600
    open: tcp/5601
    conflict: last
  - name: contacted
    trigger: udp/5060
    open: tcp/5061
    peer: contacted
`;

/** Send one trigger datagram from `armer` (udp-talk) and wait until the server got it. */
async function trigger(armer: Proc, server: Proc, host: string, port: number, tag: string): Promise<void> {
  armer.send(`${host} ${port} ${tag}`);
  await server.waitFor((e) => e.data === tag);
}

const accepts = (p: Proc): Record<string, unknown>[] => p.events.filter((e) => e.event === 'accept');

describe('semantics: two LAN hosts, one rule (conflicts, peer mode contacted)', { skip: !root && 'needs root', concurrency: true }, () => {
  let topo: Topology;
  let ns: Required<Topology['ns']>;

  before(async () => {
    topo = new Topology({ lanHosts: 2, wanServers: 2 });
    ns = topo.ns as Required<Topology['ns']>;
    topo.create();
    await topo.startDaemon(topo.writeConfig(RULES));
  });
  after(() => topo?.destroy());

  const owners = async (rule: string): Promise<[string, string | null][]> =>
    (await topo.sessions()).filter((s) => s.rule === rule).map((s) => [s.host, s.peer]);

  /** On each LAN host an app on `openPort` and a trigger sender; on WAN server 1 a listener on `triggerPort`. */
  const twoHosts = (openPort: number, triggerPort: number): Promise<Proc[]> => Promise.all([
    topo.listener(ns.lan, 'tcp-echo', openPort), topo.listener(ns.lan2, 'tcp-echo', openPort),
    topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0), topo.listener(ns.wan, 'udp-talk', triggerPort),
  ]);

  test('conflict first: the second host is refused while the first holds the session, and takes it after expiry', async () => {
    const [appA, appB, armA, armB, server] = await twoHosts(5501, 5500);
    // Host A holds the session with trigger traffic (timed by its own peer).
    armA.send(`every ${KEEPALIVE_MS} ${WAN_SERVER} 5500 a`);
    await server.waitFor((e) => e.data === 'a-0');
    await trigger(armB, server, WAN_SERVER, 5500, 'b-refused');

    assert.deepEqual(await owners('first'), [[LAN_HOST, null]]);
    const c = await topo.ruleCounters('first');
    assert.deepEqual([c.sessions_opened, c.refused_conflict], [1, 1], JSON.stringify(c));
    const r = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5501, 'to-a', OK_MS);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual([accepts(appA).length, accepts(appB).length], [1, 0], 'the connection went to the owner, host A');

    // A stops; once its session has expired, B's trigger takes the rule.
    armA.send('stop');
    await armA.waitFor((e) => e.event === 'stopped');
    await sleep(IDLE_MS + EXPIRY_SLACK_MS);
    armB.send(`every ${KEEPALIVE_MS} ${WAN_SERVER} 5500 b`);
    await server.waitFor((e) => e.data === 'b-0');
    assert.deepEqual(await owners('first'), [[LAN_HOST2, null]]);
    const r2 = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5501, 'to-b', OK_MS);
    armB.send('stop');
    assert.equal(r2.ok, true, JSON.stringify(r2));
    assert.deepEqual([accepts(appA).length, accepts(appB).length], [1, 1], 'the new connection went to host B');
    assert.equal((await topo.ruleCounters('first')).sessions_opened, 2);
  });

  test('conflict last: the newest trigger takes the session over; an accepted connection stays with the first host', async () => {
    const [appA, appB, armA, armB, server] = await twoHosts(5601, 5600);
    await trigger(armA, server, WAN_SERVER, 5600, 'a');
    const talk = topo.peer(ns.wan, 'tcp-talk', GW_WAN, 5601);
    await talk.waitFor((e) => e.event === 'connected', OK_MS);
    talk.send('one');
    await talk.waitFor((e) => e.reply === 'echo:one');
    assert.equal(accepts(appA).length, 1);

    await trigger(armB, server, WAN_SERVER, 5600, 'b');
    assert.deepEqual(await owners('last'), [[LAN_HOST2, null]], 'host B took the session over');
    const c = await topo.ruleCounters('last');
    assert.deepEqual([c.sessions_opened, c.refused_conflict], [2, 0], JSON.stringify(c));

    const r = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5601, 'new', OK_MS);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual([accepts(appA).length, accepts(appB).length], [1, 1], 'the new connection went to host B');

    talk.send('two');
    await talk.waitFor((e) => e.reply === 'echo:two');
    assert.ok(appA.events.some((e) => e.line === 'two'), 'the old connection still reaches host A');
    assert.ok(!appB.events.some((e) => e.line === 'two'));
    const flows = (await topo.json<{ rule: string; host: string }[]>('flows')).filter((f) => f.rule === 'last').map((f) => f.host).sort();
    assert.deepEqual(flows, [LAN_HOST, LAN_HOST2]);
  });

  test('peer contacted: only the contacted server connects; two hosts hold the rule at once, one per server', async () => {
    const [appA, appB, armA, armB, s1, s2] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5061), topo.listener(ns.lan2, 'tcp-echo', 5061),
      topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0),
      topo.listener(ns.wan, 'udp-talk', 5060), topo.listener(ns.wan2, 'udp-talk', 5060),
    ]);
    await trigger(armA, s1, WAN_SERVER, 5060, 'a-to-s1');
    assert.deepEqual(await owners('contacted'), [[LAN_HOST, WAN_SERVER]]);

    const fromS2 = await topo.once(ns.wan2, 'tcp-once', GW_WAN, 5061, 'uninvited', REFUSED_MS);
    assert.equal(fromS2.ok, false, `a server host A never contacted got through: ${JSON.stringify(fromS2)}`);
    const fromS1 = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5061, 'invited', OK_MS);
    assert.equal(fromS1.ok, true, JSON.stringify(fromS1));
    assert.deepEqual(accepts(appA).map((e) => e.remote), [WAN_SERVER]);

    await trigger(armB, s2, WAN_SERVER2, 5060, 'b-to-s2');
    assert.deepEqual(await owners('contacted'), [[LAN_HOST, WAN_SERVER], [LAN_HOST2, WAN_SERVER2]]);
    const [r1, r2] = await Promise.all([
      topo.once(ns.wan, 'tcp-once', GW_WAN, 5061, 's1-again', OK_MS),
      topo.once(ns.wan2, 'tcp-once', GW_WAN, 5061, 's2-now', OK_MS),
    ]);
    assert.deepEqual([r1.ok, r2.ok], [true, true], JSON.stringify([r1, r2]));
    assert.deepEqual(accepts(appA).map((e) => e.remote), [WAN_SERVER, WAN_SERVER], 'server 1 still reaches host A');
    assert.deepEqual(accepts(appB).map((e) => e.remote), [WAN_SERVER2], 'server 2 reaches host B');
    const c = await topo.ruleCounters('contacted');
    assert.deepEqual([c.sessions_opened, c.refused_conflict], [2, 0], JSON.stringify(c));
  });
});

describe('semantics: sessions_per_host', { skip: !root && 'needs root' }, () => {
  let topo: Topology;
  before(async () => {
    topo = new Topology({ lanHosts: 2 });
    topo.create();
    await topo.startDaemon(topo.writeConfig(`  - name: l1
    trigger: udp/5701
    open: tcp/5711
  - name: l2
    trigger: udp/5702
    open: tcp/5712
  - name: l3
    trigger: udp/5703
    open: tcp/5713
`, 'limits:\n  sessions_per_host: 2\n'));
  });
  after(() => topo?.destroy());

  test('a host holding sessions_per_host sessions is refused the next one (listed, counted); another host is not', async () => {
    const ns = topo.ns as Required<Topology['ns']>;
    const [appA, appB, armA, armB, server] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5711, 5712, 5713), topo.listener(ns.lan2, 'tcp-echo', 5713),
      topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0), topo.listener(ns.wan, 'udp-echo', 5701, 5702, 5703),
    ]);
    for (const port of [5701, 5702, 5703]) await trigger(armA, server, WAN_SERVER, port, `a-${port}`);

    assert.deepEqual((await topo.sessions()).map((s) => [s.rule, s.host]), [['l1', LAN_HOST], ['l2', LAN_HOST]]);
    const c3 = await topo.ruleCounters('l3');
    assert.deepEqual([c3.trigger_hits, c3.sessions_opened, c3.refused_host_limit], [1, 0, 1], JSON.stringify(c3));

    const [open1, refused3] = await Promise.all([
      topo.once(ns.wan, 'tcp-once', GW_WAN, 5711, 'l1', OK_MS),
      topo.once(ns.wan, 'tcp-once', GW_WAN, 5713, 'l3', REFUSED_MS),
    ]);
    assert.equal(open1.ok, true, JSON.stringify(open1));
    assert.equal(refused3.ok, false, `l3 was refused to host A but its port is open: ${JSON.stringify(refused3)}`);
    assert.deepEqual(accepts(appA).map((e) => e.local_port), [5711]);

    // The limit is per host: B may still open l3.
    await trigger(armB, server, WAN_SERVER, 5703, 'b-5703');
    assert.deepEqual((await topo.sessions()).map((s) => [s.rule, s.host]), [['l1', LAN_HOST], ['l2', LAN_HOST], ['l3', LAN_HOST2]]);
    const r = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5713, 'l3-b', OK_MS);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.deepEqual(accepts(appB).map((e) => e.local_port), [5713]);
  });
});
