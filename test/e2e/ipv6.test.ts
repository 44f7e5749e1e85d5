/**
 * End to end, SPEC 9 (IPv6 pinholes) as users see them: real sockets through
 * one dual-stack gateway (2001:db8::/32, the usual IPv6 firewall of
 * examples/gateway-firewall-dualstack.nft: forward policy drop, so a closed
 * pinhole is a silent drop), two LAN hosts and two WAN servers. No address
 * translation: the remote connects to the LAN host's own IPv6 address. Each
 * case has its own rule and ports, so the cases run at the same time on one
 * gateway.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  GW_WAN, LAN6_HOST, LAN6_HOST2, LAN_HOST, Topology, WAN6_SERVER, WAN6_SERVER2, WAN_SERVER, sleep,
  type FlowJson, type Proc, type SessionJson,
} from './topology.js';

const root = process.getuid?.() === 0;
/** Idle timeout of the rules whose expiry is waited for (a loaded machine's CLI start takes seconds). */
const IDLE_MS = 6000;
/** Expiry is immediate in the data path; the daemon's sweep runs every second. */
const SWEEP_SLACK_MS = 2000;
/** How long a connection attempt that must fail is given (a drop: no RST, no ICMP). */
const REFUSED_MS = 1500;
/** How long one that must succeed is given. */
const OK_MS = 4000;
const METRICS_URL = 'http://127.0.0.1:9469/metrics';
/** Sweep interval (1 s) plus margin for a loaded machine. */
const METRICS_CATCH_UP_MS = 5000;

const RULES = `  - name: v6-tcp
    trigger: tcp/6667
    open: tcp/113
    idle_timeout: ${IDLE_MS}ms
  - name: v6-udp
    trigger: udp/27015
    open: udp/27000
    idle_timeout: ${IDLE_MS}ms
  - name: v6-xl
    trigger: tcp/5000
    open: both/6000-6009 -> 7000
  - name: v6-any
    trigger: udp/5500
    open: tcp/5501
    conflict: first
  - name: v6-contacted
    trigger: udp/5060
    open: tcp/5061
    peer: contacted
  - name: v6-dual
    trigger: udp/5800
    open: tcp/5801
  - name: v6-manual
    trigger: udp/5900
    open: tcp/5901
    idle_timeout: 5m
  - name: v6-metrics
    trigger: udp/5950
    open: udp/5951
  - name: v6-contacted-first
    trigger: udp/5160
    open: tcp/5161
    peer: contacted
    conflict: first
  - name: v6-kill
    trigger: udp/5300
    open: tcp/5401
    idle_timeout: ${IDLE_MS}ms
    kill_flows_on_expiry: true
  - name: v6-inbound-only
    trigger: udp/5200
    open: udp/5201
    idle_timeout: ${IDLE_MS}ms
`;
/** Trigger keep-alive interval, well inside IDLE_MS. */
const KEEPALIVE_MS = 400;
/** A UDP datagram that IPv6 sends in three fragments on a 1500-byte link. */
const BIG = 4000;

/** Send one trigger datagram from `armer` (udp-talk) and wait until the server got it. */
async function trigger(armer: Proc, server: Proc, host: string, port: number, tag: string): Promise<void> {
  armer.send(`${host} ${port} ${tag}`);
  await server.waitFor((e) => e.data === tag);
}

const accepts = (p: Proc): Record<string, unknown>[] => p.events.filter((e) => e.event === 'accept');

/** GET `url` from inside namespace `ns` (its loopback is not ours). */
function getIn(ns: string, url: string): Promise<{ status: number; body: string }> {
  const script = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))'
    + '.catch((e) => process.stdout.write(JSON.stringify({ status: 0, body: String(e) })))';
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', ns, process.execPath, '-e', script, url], { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, out) => {
      if (err) reject(err); else resolve(JSON.parse(out) as { status: number; body: string });
    });
  });
}

describe('IPv6 pinholes through a dual-stack gateway', { skip: !root && 'needs root', concurrency: true }, () => {
  let topo: Topology;
  let ns: Required<Topology['ns']>;

  before(async () => {
    topo = new Topology({ ipv6: true, lanHosts: 2, wanServers: 2 });
    ns = topo.ns as Required<Topology['ns']>;
    topo.create();
    await topo.startDaemon(topo.writeConfig(RULES));
  });
  after(() => topo?.destroy());

  const sessionsOf = async (rule: string): Promise<SessionJson[]> => (await topo.sessions()).filter((s) => s.rule === rule);

  test('TCP: closed before the trigger, open after, closed after the idle timeout; an accepted connection keeps working', async () => {
    const [ident, , other] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 113), topo.listener(ns.wan, 'tcp-echo', 6667), topo.listener(ns.lan2, 'tcp-echo', 113),
    ]);

    const early = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 113, 'early', REFUSED_MS);
    assert.equal(early.ok, false, `reached the LAN host's IPv6 address before any trigger: ${JSON.stringify(early)}`);
    assert.deepEqual(accepts(ident), []);

    const trig = await topo.once(ns.lan, 'tcp-once', WAN6_SERVER, 6667, 'NICK x', OK_MS);
    assert.deepEqual([trig.ok, trig.local], [true, LAN6_HOST], `IPv6 trigger connection: ${JSON.stringify(trig)}`);

    const talk = topo.peer(ns.wan, 'tcp-talk', LAN6_HOST, 113);
    await talk.waitFor((e) => e.event === 'connected', OK_MS);
    talk.send('first');
    await talk.waitFor((e) => e.reply === 'echo:first');
    const acc = await ident.waitFor((e) => e.event === 'accept');
    assert.deepEqual([acc.remote, acc.local], [WAN6_SERVER, LAN6_HOST], 'no address translation: the LAN host sees the remote, on its own address');
    // The pinhole is the triggering host's own address, not the LAN's.
    const neighbour = await topo.once(ns.wan, 'tcp-once', LAN6_HOST2, 113, 'neighbour', REFUSED_MS);
    assert.equal(neighbour.ok, false, `another LAN host got through on host A's session: ${JSON.stringify(neighbour)}`);
    assert.deepEqual(accepts(other), []);

    const s = await sessionsOf('v6-tcp');
    assert.deepEqual(s.map((x) => [x.host, x.peer, x.family, x.flows]), [[LAN6_HOST, null, 'ipv6', 1]], JSON.stringify(s));
    const flows = (await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'v6-tcp');
    assert.deepEqual(flows.map((f) => [f.proto, f.remote, f.wan_port, f.host, f.host_port, f.family]),
      [['tcp', WAN6_SERVER, 113, LAN6_HOST, 113, 'ipv6']], JSON.stringify(flows));

    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    const late = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 113, 'late', REFUSED_MS);
    assert.equal(late.ok, false, `a new connection got through after the idle timeout: ${JSON.stringify(late)}`);
    assert.deepEqual(await sessionsOf('v6-tcp'), [], 'the session expired');
    assert.equal(accepts(ident).length, 1, 'only the connection accepted while open reached the host');

    talk.send('second');
    await talk.waitFor((e) => e.reply === 'echo:second', OK_MS);
  });

  test('UDP: closed before the trigger, open after (replies from the host\'s own address and port), closed after the idle timeout', async () => {
    const [game, , remote] = await Promise.all([
      topo.listener(ns.lan, 'udp-echo', 27000), topo.listener(ns.wan, 'udp-echo', 27015), topo.listener(ns.wan, 'udp-talk', 40000),
    ]);
    const early = await topo.once(ns.wan, 'udp-once', LAN6_HOST, 27000, 'early', REFUSED_MS);
    assert.equal(early.ok, false, `reached the LAN host before any trigger: ${JSON.stringify(early)}`);
    assert.deepEqual(game.events.filter((e) => e.event === 'datagram'), []);

    const trig = await topo.once(ns.lan, 'udp-once', WAN6_SERVER, 27015, 'register', OK_MS);
    assert.deepEqual([trig.ok, trig.from], [true, WAN6_SERVER], JSON.stringify(trig));

    const r = await topo.once(ns.wan, 'udp-once', LAN6_HOST, 27000, 'join', OK_MS);
    assert.deepEqual([r.ok, r.reply, r.from, r.from_port], [true, 'echo:join', LAN6_HOST, 27000], JSON.stringify(r));
    assert.equal((await game.waitFor((e) => e.data === 'join')).remote, WAN6_SERVER);

    // A flow from a fixed remote port, accepted while the session is open.
    remote.send(`${LAN6_HOST} 27000 keep-1`);
    await remote.waitFor((e) => e.data === 'echo:keep-1', OK_MS);
    assert.deepEqual((await sessionsOf('v6-udp')).map((x) => [x.host, x.family]), [[LAN6_HOST, 'ipv6']]);

    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    const late = await topo.once(ns.wan, 'udp-once', LAN6_HOST, 27000, 'late', REFUSED_MS);
    assert.equal(late.ok, false, `a new flow got through after the idle timeout: ${JSON.stringify(late)}`);
    assert.deepEqual(await sessionsOf('v6-udp'), []);
    remote.send(`${LAN6_HOST} 27000 keep-2`);
    await remote.waitFor((e) => e.data === 'echo:keep-2', OK_MS);
  });

  test('port translation 6000-6009 -> 7000 over IPv6: both ends of the range, replies from the WAN ports, no address translation', async () => {
    const ports = [7000, 7009, 6000, 6009];
    const [tcpApp, udpApp] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', ...ports), topo.listener(ns.lan, 'udp-echo', ...ports), topo.listener(ns.wan, 'tcp-echo', 5000),
    ]);
    const trig = await topo.once(ns.lan, 'tcp-once', WAN6_SERVER, 5000, 'x', OK_MS);
    assert.equal(trig.ok, true, JSON.stringify(trig));

    for (const [wanPort, lanPort] of [[6000, 7000], [6009, 7009]] as const) {
      const t = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, wanPort, `t${wanPort}`, OK_MS);
      assert.deepEqual([t.ok, t.reply, t.remote], [true, `echo:t${wanPort}`, LAN6_HOST], `tcp/${wanPort}: ${JSON.stringify(t)}`);
      const acc = await tcpApp.waitFor((e) => e.event === 'accept' && e.local_port === lanPort);
      assert.equal(acc.remote, WAN6_SERVER);

      const u = await topo.once(ns.wan, 'udp-once', LAN6_HOST, wanPort, `u${wanPort}`, OK_MS);
      assert.deepEqual([u.ok, u.reply, u.from, u.from_port], [true, `echo:u${wanPort}`, LAN6_HOST, wanPort], `udp/${wanPort}: ${JSON.stringify(u)}`);
      const dg = await udpApp.waitFor((e) => e.data === `u${wanPort}`);
      assert.deepEqual([dg.remote, dg.local_port], [WAN6_SERVER, lanPort]);
    }
    const past = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 6010, 'past', REFUSED_MS);
    assert.equal(past.ok, false, `tcp/6010 is past the range but was forwarded: ${JSON.stringify(past)}`);
    const decoys = (e: Record<string, unknown>): boolean => [6000, 6009].includes(e.local_port as number);
    assert.deepEqual([...tcpApp.events, ...udpApp.events].filter(decoys), [], 'the untranslated ports on the LAN host must see nothing');
    const flows = (await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'v6-xl');
    assert.deepEqual(flows.map((f) => `${f.family} ${f.proto} ${f.wan_port}->${f.host_port}`).sort(),
      ['ipv6 tcp 6000->7000', 'ipv6 tcp 6009->7009', 'ipv6 udp 6000->7000', 'ipv6 udp 6009->7009']);
  });

  test('peer mode any: two LAN hosts hold the same rule at once (conflict first refuses nobody), both reachable from any server', async () => {
    const [appA, appB, armA, armB, server] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5501), topo.listener(ns.lan2, 'tcp-echo', 5501),
      topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0), topo.listener(ns.wan, 'udp-talk', 5500),
    ]);
    await trigger(armA, server, WAN6_SERVER, 5500, 'a');
    await trigger(armB, server, WAN6_SERVER, 5500, 'b');
    const s = await sessionsOf('v6-any');
    assert.deepEqual(s.map((x) => [x.host, x.peer, x.family]).sort(), [[LAN6_HOST, null, 'ipv6'], [LAN6_HOST2, null, 'ipv6']], JSON.stringify(s));

    const [toA, toB, toBfromS2] = await Promise.all([
      topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5501, 'to-a', OK_MS),
      topo.once(ns.wan, 'tcp-once', LAN6_HOST2, 5501, 'to-b', OK_MS),
      topo.once(ns.wan2, 'tcp-once', LAN6_HOST2, 5501, 'to-b-from-s2', OK_MS),
    ]);
    assert.deepEqual([toA.ok, toB.ok, toBfromS2.ok], [true, true, true], JSON.stringify([toA, toB, toBfromS2]));
    assert.deepEqual(accepts(appA).map((e) => e.remote), [WAN6_SERVER]);
    assert.deepEqual(accepts(appB).map((e) => e.remote).sort(), [WAN6_SERVER, WAN6_SERVER2].sort());
    const rule = (await topo.json<{ name: string; sessions_opened: number }[]>('rules')).find((r) => r.name === 'v6-any');
    assert.equal(rule?.sessions_opened, 2, JSON.stringify(rule));
  });

  test('peer mode contacted: only the contacted server connects; another server cannot', async () => {
    const [appA, appB, armA, armB, s1, s2] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5061), topo.listener(ns.lan2, 'tcp-echo', 5061),
      topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0),
      topo.listener(ns.wan, 'udp-talk', 5060), topo.listener(ns.wan2, 'udp-talk', 5060),
    ]);
    await trigger(armA, s1, WAN6_SERVER, 5060, 'a-to-s1');
    assert.deepEqual((await sessionsOf('v6-contacted')).map((x) => [x.host, x.peer, x.family]), [[LAN6_HOST, WAN6_SERVER, 'ipv6']]);

    const fromS2 = await topo.once(ns.wan2, 'tcp-once', LAN6_HOST, 5061, 'uninvited', REFUSED_MS);
    assert.equal(fromS2.ok, false, `a server host A never contacted got through: ${JSON.stringify(fromS2)}`);
    const fromS1 = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5061, 'invited', OK_MS);
    assert.equal(fromS1.ok, true, JSON.stringify(fromS1));
    assert.deepEqual(accepts(appA).map((e) => e.remote), [WAN6_SERVER]);

    // Host B contacts server 2: its own session; server 2 reaches B, still not A.
    await trigger(armB, s2, WAN6_SERVER2, 5060, 'b-to-s2');
    assert.deepEqual((await sessionsOf('v6-contacted')).map((x) => [x.host, x.peer]).sort(),
      [[LAN6_HOST, WAN6_SERVER], [LAN6_HOST2, WAN6_SERVER2]]);
    const [s2toB, s2toA, s1toB] = await Promise.all([
      topo.once(ns.wan2, 'tcp-once', LAN6_HOST2, 5061, 's2-to-b', OK_MS),
      topo.once(ns.wan2, 'tcp-once', LAN6_HOST, 5061, 's2-to-a', REFUSED_MS),
      topo.once(ns.wan, 'tcp-once', LAN6_HOST2, 5061, 's1-to-b', REFUSED_MS),
    ]);
    assert.deepEqual([s2toB.ok, s2toA.ok, s1toB.ok], [true, false, false], JSON.stringify([s2toB, s2toA, s1toB]));
    assert.deepEqual(accepts(appA).map((e) => e.remote), [WAN6_SERVER], 'host A saw only the server it contacted');
    assert.deepEqual(accepts(appB).map((e) => e.remote), [WAN6_SERVER2], 'host B saw only the server it contacted');
  });

  test('peer mode contacted, conflict first: a second host contacting the same server is refused while the first holds it', async () => {
    const [appA, appB, armA, armB, s1] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5161), topo.listener(ns.lan2, 'tcp-echo', 5161),
      topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan2, 'udp-talk', 0), topo.listener(ns.wan, 'udp-talk', 5160),
    ]);
    await trigger(armA, s1, WAN6_SERVER, 5160, 'a');
    await trigger(armB, s1, WAN6_SERVER, 5160, 'b');
    assert.deepEqual((await sessionsOf('v6-contacted-first')).map((x) => [x.host, x.peer, x.family]), [[LAN6_HOST, WAN6_SERVER, 'ipv6']],
      'the same peer: host B is refused, host A keeps the session');
    const [toA, toB] = await Promise.all([
      topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5161, 'to-a', OK_MS),
      topo.once(ns.wan, 'tcp-once', LAN6_HOST2, 5161, 'to-b', REFUSED_MS),
    ]);
    assert.deepEqual([toA.ok, toB.ok], [true, false], JSON.stringify([toA, toB]));
    assert.deepEqual([accepts(appA).length, accepts(appB).length], [1, 0]);
  });

  test('kill_flows_on_expiry over IPv6: an accepted connection is cut when its session expires', async () => {
    const [armer] = await Promise.all([topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.lan, 'tcp-echo', 5401), topo.listener(ns.wan, 'udp-talk', 5300)]);
    // Trigger traffic holds the session until the connection is up, however slowly its process starts.
    armer.send(`every ${KEEPALIVE_MS} ${WAN6_SERVER} 5300 arm`);
    const talk = topo.peer(ns.wan, 'tcp-talk', LAN6_HOST, 5401);
    await talk.waitFor((e) => e.event === 'connected', OK_MS);
    talk.send('before');
    await talk.waitFor((e) => e.reply === 'echo:before');
    armer.send('stop');
    await armer.waitFor((e) => e.event === 'stopped');
    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    assert.deepEqual(await sessionsOf('v6-kill'), []);
    assert.deepEqual((await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'v6-kill'), [], 'the flow went with its session');
    talk.send('after');
    const cut = await talk.waitFor((e) => e.reply === 'echo:after' || e.event === 'error' || e.event === 'closed', OK_MS).catch((): Record<string, unknown> => ({ event: 'no answer' }));
    assert.notEqual(cut.reply, 'echo:after', 'the connection still works after its session expired');
  });

  test('refresh: a remote\'s inbound traffic alone does not keep an IPv6 session open', async () => {
    const [app, remote] = await Promise.all([topo.listener(ns.lan, 'udp-talk', 5201), topo.listener(ns.wan, 'udp-talk', 41000), topo.listener(ns.wan, 'udp-echo', 5200)]);
    const trig = await topo.once(ns.lan, 'udp-once', WAN6_SERVER, 5200, 'arm', OK_MS);
    assert.equal(trig.ok, true, JSON.stringify(trig));
    remote.send(`every ${KEEPALIVE_MS} ${LAN6_HOST} 5201 in`);
    await app.waitFor((e) => e.data === 'in-0', OK_MS);
    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    const heard = app.events.filter((e) => typeof e.data === 'string' && e.data.startsWith('in-')).length;
    assert.ok(heard > 3, 'the accepted flow lives on its own timer: the remote\'s datagrams still arrive');
    assert.deepEqual(await sessionsOf('v6-inbound-only'), [], 'the session expired although the remote kept sending');
    // A new flow (a fresh source port): the LAN app does not answer, so look at what it got.
    await topo.once(ns.wan, 'udp-once', LAN6_HOST, 5201, 'probe', REFUSED_MS);
    assert.deepEqual(app.events.filter((e) => e.data === 'probe'), [], 'a new inbound flow got through after expiry');
    remote.send('stop');
  });

  test('a dual-stack host holds an IPv4 and an IPv6 session of the same rule; each family reaches it', async () => {
    const [app, arm, server] = await Promise.all([
      topo.listener(ns.lan, 'tcp-echo', 5801), topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.wan, 'udp-talk', 5800),
    ]);
    await trigger(arm, server, WAN_SERVER, 5800, 'v4');
    await trigger(arm, server, WAN6_SERVER, 5800, 'v6');
    assert.equal(server.events.find((e) => e.data === 'v4')?.remote, GW_WAN, 'IPv4 is masqueraded');
    assert.equal(server.events.find((e) => e.data === 'v6')?.remote, LAN6_HOST, 'IPv6 is routed');

    const s = await sessionsOf('v6-dual');
    assert.deepEqual(s.map((x) => [x.family, x.host]).sort(), [['ipv4', LAN_HOST], ['ipv6', LAN6_HOST]], JSON.stringify(s));

    const [v4, v6] = await Promise.all([
      topo.once(ns.wan, 'tcp-once', GW_WAN, 5801, 'over-v4', OK_MS),
      topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5801, 'over-v6', OK_MS),
    ]);
    assert.deepEqual([v4.ok, v4.reply, v6.ok, v6.reply], [true, 'echo:over-v4', true, 'echo:over-v6'], JSON.stringify([v4, v6]));
    assert.deepEqual(accepts(app).map((e) => e.remote).sort(), [WAN_SERVER, WAN6_SERVER].sort());
    const flows = (await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'v6-dual');
    assert.deepEqual(flows.map((f) => [f.family, f.host]).sort(), [['ipv4', LAN_HOST], ['ipv6', LAN6_HOST]], JSON.stringify(flows));
  });

  test('porttrig open RULE <IPv6 host> opens the pinhole by hand, close closes it (the IPv4 session is another one)', async () => {
    const [app] = await Promise.all([topo.listener(ns.lan, 'tcp-echo', 5901)]);
    const early = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5901, 'early', REFUSED_MS);
    assert.equal(early.ok, false, `forwarded before any open: ${JSON.stringify(early)}`);

    const open = await topo.cli('open', 'v6-manual', LAN6_HOST);
    assert.equal(open.status, 0, open.stderr);
    assert.equal(open.stdout, `opened v6-manual for ${LAN6_HOST}; closes after 300 s idle\n`);
    const open4 = await topo.cli('open', 'v6-manual', LAN_HOST);
    assert.equal(open4.status, 0, `an IPv4 session beside the IPv6 one: ${open4.stderr}`);
    assert.deepEqual((await sessionsOf('v6-manual')).map((x) => [x.family, x.host]).sort(), [['ipv4', LAN_HOST], ['ipv6', LAN6_HOST]]);

    const during = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5901, 'hello', OK_MS);
    assert.deepEqual([during.ok, during.reply], [true, 'echo:hello'], JSON.stringify(during));
    assert.equal((await app.waitFor((e) => e.event === 'accept')).remote, WAN6_SERVER);

    const close = await topo.cli('close', 'v6-manual', LAN6_HOST);
    assert.equal(close.status, 0, close.stderr);
    assert.equal(close.stdout, `closed 1 session of v6-manual for ${LAN6_HOST}; 1 flow left to run out\n`);
    assert.deepEqual((await sessionsOf('v6-manual')).map((x) => [x.family, x.host]), [['ipv4', LAN_HOST]], 'the IPv4 session stays');
    const late = await topo.once(ns.wan, 'tcp-once', LAN6_HOST, 5901, 'late', REFUSED_MS);
    assert.equal(late.ok, false, `forwarded after close: ${JSON.stringify(late)}`);
    const v4 = await topo.once(ns.wan, 'tcp-once', GW_WAN, 5901, 'v4', OK_MS);
    assert.equal(v4.ok, true, `the IPv4 session no longer forwards: ${JSON.stringify(v4)}`);
  });

  test('metrics: the IPv6 session and flow are counted with family="ipv6"; no address in any label', async () => {
    const [app, arm, server] = await Promise.all([
      topo.listener(ns.lan, 'udp-echo', 5951), topo.listener(ns.lan, 'udp-talk', 0), topo.listener(ns.wan, 'udp-talk', 5950),
    ]);
    await trigger(arm, server, WAN6_SERVER, 5950, 'arm');
    const r = await topo.once(ns.wan, 'udp-once', LAN6_HOST, 5951, 'in', OK_MS);
    assert.equal(r.ok, true, JSON.stringify(r));
    await app.waitFor((e) => e.data === 'in');

    // The gauges come from the daemon's last sweep (every second): scrape until they caught up.
    let m = { status: 0, body: '' };
    const series = (name: string, rule: string, family: string): number[] => m.body.split('\n')
      .filter((l) => l.startsWith(`${name}{`) && l.includes(`rule="${rule}"`) && l.includes(`family="${family}"`))
      .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    const deadline = Date.now() + METRICS_CATCH_UP_MS;
    do {
      m = await getIn(ns.gw, METRICS_URL);
      if (series('porttrig_sessions_active', 'v6-metrics', 'ipv6')[0] === 1) break;
      await sleep(250);
    } while (Date.now() < deadline);
    assert.equal(m.status, 200, m.body);
    assert.deepEqual(series('porttrig_sessions_opened_total', 'v6-metrics', 'ipv6'), [1], 'sessions_opened_total{rule="v6-metrics",family="ipv6"}');
    assert.deepEqual(series('porttrig_flows_opened_total', 'v6-metrics', 'ipv6'), [1], 'flows_opened_total{rule="v6-metrics",family="ipv6"}');
    assert.deepEqual(series('porttrig_sessions_active', 'v6-metrics', 'ipv6'), [1], 'sessions_active{rule="v6-metrics",family="ipv6"}');
    for (const n of ['porttrig_sessions_opened_total', 'porttrig_flows_opened_total']) {
      assert.ok(series(n, 'v6-metrics', 'ipv4').every((v) => v === 0), `${n}{rule="v6-metrics",family="ipv4"} counts IPv6 traffic`);
    }
    assert.match(m.body, /^porttrig_packets_total\{[^}]*family="ipv6"[^}]*\} [1-9]/m, 'packets_total has IPv6 packets');
    assert.doesNotMatch(m.body, /2001:db8|10\.77\.0\.|203\.0\.113\./, 'a label carries an address');
  });
});

describe('IPv6 hosts: sessions_per_host per family and per address; link-local sources never arm', { skip: !root && 'needs root' }, () => {
  let topo: Topology;
  /** A second address of the LAN host (as a privacy address): its own count. */
  const LAN6_HOST_B = '2001:db8:77::a2';

  before(async () => {
    topo = new Topology({ ipv6: true });
    topo.create();
    topo.exec(topo.ns.lan, 'ip', 'addr', 'add', `${LAN6_HOST_B}/64`, 'dev', 'eth0', 'nodad');
    await topo.startDaemon(topo.writeConfig(`  - name: l1
    trigger: udp/5701
    open: tcp/5711
  - name: l2
    trigger: udp/5702
    open: tcp/5712
`, 'limits:\n  sessions_per_host: 1\n'));
  });
  after(() => topo?.destroy());

  /** Send one UDP datagram from the LAN host, from source address `src` (scope id for link-local). */
  const sendFrom = (src: string, dst: string, port: number): void => {
    const scope = src.startsWith('fe80:') ? "socket.if_nametoindex('eth0')" : '0';
    topo.exec(topo.ns.lan, 'python3', '-c', `import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(('${src}', 0, 0, ${scope}))
s.sendto(b'trigger', ('${dst}', ${port}))`);
  };
  const sessions = async (): Promise<string[]> => (await topo.sessions()).map((x) => `${x.rule} ${x.family} ${x.host}`).sort();

  test('limit 1: a dual-stack host holds one IPv4 and one IPv6 session, a second IPv6 one is refused, its other address has its own', async () => {
    const { lan, wan } = topo.ns;
    const [app, server, server2, arm] = await Promise.all([
      topo.listener(lan, 'tcp-echo', 5711, 5712), topo.listener(wan, 'udp-talk', 5701), topo.listener(wan, 'udp-talk', 5702), topo.listener(lan, 'udp-talk', 0),
    ]);
    // IPv6 triggers from a chosen source: the host has two addresses in one prefix.
    await trigger(arm, server, WAN_SERVER, 5701, 'v4');
    sendFrom(LAN6_HOST, WAN6_SERVER, 5701);
    await server.waitFor((e) => e.data === 'trigger' && e.remote === LAN6_HOST);
    sendFrom(LAN6_HOST, WAN6_SERVER, 5702);
    await server2.waitFor((e) => e.data === 'trigger' && e.remote === LAN6_HOST);
    assert.deepEqual(await sessions(), ['l1 ipv4 10.77.0.2', `l1 ipv6 ${LAN6_HOST}`], 'per family: one IPv4 and one IPv6 session at limit 1; l2 refused to the same IPv6 address');
    const closed = await topo.once(wan, 'tcp-once', LAN6_HOST, 5712, 'l2', REFUSED_MS);
    assert.equal(closed.ok, false, `l2 was refused but its port is open: ${JSON.stringify(closed)}`);

    sendFrom(LAN6_HOST_B, WAN6_SERVER, 5702);
    await server2.waitFor((e) => e.data === 'trigger' && e.remote === LAN6_HOST_B);
    assert.deepEqual(await sessions(), ['l1 ipv4 10.77.0.2', `l1 ipv6 ${LAN6_HOST}`, `l2 ipv6 ${LAN6_HOST_B}`], 'the host\'s other address counts on its own');
    const open = await topo.once(wan, 'tcp-once', LAN6_HOST_B, 5712, 'l2-b', OK_MS);
    assert.equal(open.ok, true, JSON.stringify(open));
    assert.deepEqual(accepts(app).map((e) => [e.local, e.local_port]), [[LAN6_HOST_B, 5712]]);
  });

  test('a trigger from the LAN host\'s link-local address opens nothing', async () => {
    const ll = /inet6 (fe80::[0-9a-f:]+)\//.exec(topo.exec(topo.ns.lan, 'ip', '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'))?.[1];
    assert.ok(ll, 'the LAN host has a link-local address');
    const before = await sessions();
    const hits = async (): Promise<number> => (await topo.json<{ name: string; trigger_hits: number }[]>('rules')).find((r) => r.name === 'l2')!.trigger_hits;
    const hitsBefore = await hits();
    sendFrom(ll, WAN6_SERVER, 5702);
    sendFrom(ll, WAN6_SERVER, 5702);
    await sleep(500);
    assert.deepEqual(await sessions(), before, 'a link-local source armed a session');
    assert.equal(await hits(), hitsBefore, 'a link-local source counted as a trigger hit');
  });
});

// Fragments on a gateway without bridges: with a bridge lan0 / wan0 and
// bridge netfilter on (net.bridge.bridge-nf-call-ip6tables, per namespace,
// default 1 where br_netfilter is loaded) conntrack reassembles the fragments
// before the bridge device's TC ingress, and the data path sees one datagram
// bigger than the MTU, which it hands to the stack: inbound it is dropped by
// the forward chain, outbound it leaves untranslated (both families; README
// Known gaps).
test('fragments: a datagram of 4000 bytes through a translated pinhole and its echo back, both in fragments', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology({ ipv6: true });
  t.after(() => topo.destroy());
  topo.create();
  await topo.startDaemon(topo.writeConfig(`  - name: v6-frag
    trigger: udp/5970
    open: udp/5971 -> 5972
`));
  const [app] = await Promise.all([topo.listener(topo.ns.lan, 'udp-echo', 5972, 5971), topo.listener(topo.ns.wan, 'udp-echo', 5970)]);
  const trig = await topo.once(topo.ns.lan, 'udp-once', WAN6_SERVER, 5970, 'x'.repeat(BIG), OK_MS);
  assert.deepEqual([trig.ok, (trig.reply as string | undefined)?.length], [true, BIG + 'echo:'.length], 'the fragmented trigger and its fragmented reply');
  const big = 'y'.repeat(BIG);
  const r = await topo.once(topo.ns.wan, 'udp-once', LAN6_HOST, 5971, big, OK_MS);
  assert.deepEqual([r.ok, r.reply === `echo:${big}`, r.from, r.from_port], [true, true, LAN6_HOST, 5971],
    `inbound fragments translated to 5972 and the fragmented reply from 5971: ${JSON.stringify({ ...r, reply: (r.reply as string | undefined)?.length })}`);
  const dg = await app.waitFor((e) => e.data === big);
  assert.deepEqual([dg.remote, dg.local_port], [WAN6_SERVER, 5972]);
  const flows = (await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'v6-frag');
  assert.deepEqual(flows.map((f) => [f.family, f.wan_port, f.host_port]), [['ipv6', 5971, 5972]]);
});
