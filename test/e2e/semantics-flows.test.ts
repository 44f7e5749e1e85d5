/**
 * End to end, SPEC 4-5 as a user sees them, with real sockets through one
 * shared gateway (one daemon, one rule per case, so the cases stay apart):
 * several open specs and `both`, port translation at both ends of a range,
 * refresh by trigger traffic and by flow traffic in each direction, and what
 * happens to an accepted TCP connection when its session expires, with and
 * without kill_flows_on_expiry. (triggering.test.ts has the basic open /
 * forward / expire cycle.) Each case has its own rule and ports, so they
 * can run at the same time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { GW_WAN, LAN_HOST, Topology, WAN_SERVER, sleep, type FlowJson, type Proc, type RuleJson } from './topology.js';

const root = process.getuid?.() === 0;
/** Idle timeout of the rules whose timing is tested; generous margins below (loaded machine). */
const IDLE_MS = 2000;
/** Keep-alive traffic interval, well inside IDLE_MS. */
const KEEPALIVE_MS = 400;
/** How long keep-alive traffic runs: well past the idle timeout. */
const KEPT_MS = 2.25 * IDLE_MS;
/** Expiry is immediate in the data path; the daemon's sweep runs every second. */
const SWEEP_SLACK_MS = 2000;
/** How long a connection attempt that must fail is given. */
const REFUSED_MS = 1500;
/** How long one that must succeed is given. */
const OK_MS = 4000;

const RULES = `  - name: multi
    trigger: both/7000
    open: [tcp/7100, udp/7200-7201, both/7300]
  - name: xl
    trigger: tcp/5000
    open: both/6000-6009 -> 7000
  - name: refresh-trigger
    trigger: udp/5100
    open: tcp/5101
    idle_timeout: ${IDLE_MS}ms
  - name: refresh-flow
    trigger: udp/5200
    open: udp/5201
    idle_timeout: ${IDLE_MS}ms
  - name: keep
    trigger: udp/5300
    open: tcp/5301
    idle_timeout: ${IDLE_MS}ms
  - name: kill
    trigger: udp/5300
    open: tcp/5401
    idle_timeout: ${IDLE_MS}ms
    kill_flows_on_expiry: true
`;

/**
 * Make the udp-talk peer `talker` send MSG-0, MSG-1, ... to host:port every
 * KEEPALIVE_MS until stop(), which resolves with how many it sent. The peer
 * keeps the time, not this process (whose event loop the synchronous CLI
 * calls block). Probes run while it still sends: a probe's own process may
 * take seconds to start on a loaded machine, longer than an idle timeout.
 */
function keepSending(talker: Proc, host: string, port: number, msg: string): { stop: () => Promise<number> } {
  const stopped = (e: Record<string, unknown>): boolean => e.event === 'stopped';
  const earlier = talker.events.filter(stopped).length;
  talker.send(`every ${KEEPALIVE_MS} ${host} ${port} ${msg}`);
  return {
    stop: async () => {
      talker.send('stop');
      const e = await talker.waitFor((x) => stopped(x) && talker.events.filter(stopped).indexOf(x) === earlier);
      return e.sent as number;
    },
  };
}

/** A rule's line of `porttrig rules --json` (its counters). */
async function ruleView(topo: Topology, name: string): Promise<RuleJson> {
  const r = (await topo.json<RuleJson[]>('rules')).find((x) => x.name === name);
  assert.ok(r, `porttrig rules lists no rule ${name}`);
  return r;
}

// The cases share nothing but the gateway, and mostly wait: they run concurrently.
describe('semantics: open specs, translation, refresh, flows after expiry', { skip: !root && 'needs root', concurrency: true }, () => {
  let topo: Topology;
  let lan: string;
  let wan: string;

  before(async () => {
    topo = new Topology();
    ({ lan, wan } = topo.ns);
    topo.create();
    await topo.startDaemon(topo.writeConfig(RULES));
  });
  after(() => topo?.destroy());

  test('a rule with several open specs and protocol both: exactly its ports open, for a TCP or a UDP trigger', async () => {
    const tcpOpen = [7100, 7300];
    const udpOpen = [7200, 7201, 7300];
    // Listeners on the LAN host for every port, also those the rule must not open.
    const [tcpApp, udpApp] = await Promise.all([
      topo.listener(lan, 'tcp-echo', 7100, 7200, 7300, 7202),
      topo.listener(lan, 'udp-echo', 7100, 7200, 7201, 7300, 7202),
      topo.listener(wan, 'udp-echo', 7000),
      topo.listener(wan, 'tcp-echo', 7000),
    ]);

    const before = await topo.once(wan, 'tcp-once', GW_WAN, 7100, 'early', REFUSED_MS);
    assert.equal(before.ok, false, `tcp/7100 reached the LAN host before any trigger: ${JSON.stringify(before)}`);

    const trig = await topo.once(lan, 'udp-once', WAN_SERVER, 7000, 'hello', OK_MS);
    assert.equal(trig.ok, true, `UDP trigger traffic itself failed: ${JSON.stringify(trig)}`);
    assert.equal((await ruleView(topo, 'multi')).trigger_hits, 1, 'one UDP datagram to udp/7000 is one trigger hit');
    assert.deepEqual((await topo.sessions()).filter((s) => s.rule === 'multi').map((s) => s.host), [LAN_HOST]);

    const results = await Promise.all([
      ...tcpOpen.map(async (p) => ['tcp', p, await topo.once(wan, 'tcp-once', GW_WAN, p, `t${p}`, OK_MS)] as const),
      ...udpOpen.map(async (p) => ['udp', p, await topo.once(wan, 'udp-once', GW_WAN, p, `u${p}`, OK_MS)] as const),
    ]);
    for (const [proto, port, r] of results) {
      assert.equal(r.ok, true, `${proto}/${port} is in the open specs but was not forwarded: ${JSON.stringify(r)}`);
      assert.equal(r.reply, `echo:${proto[0]}${port}`);
      if (proto === 'udp') assert.deepEqual([r.from, r.from_port], [GW_WAN, port], 'the reply comes from the WAN address and port');
    }
    for (const p of tcpOpen) assert.equal((await tcpApp.waitFor((e) => e.local_port === p)).remote, WAN_SERVER);

    // The other protocol of a single-protocol spec, and the port past a range, stay closed.
    const closed = await Promise.all([
      ...[7200, 7202].map(async (p) => ['tcp', p, await topo.once(wan, 'tcp-once', GW_WAN, p, 'no', REFUSED_MS)] as const),
      ...[7100, 7202].map(async (p) => ['udp', p, await topo.once(wan, 'udp-once', GW_WAN, p, 'no', REFUSED_MS)] as const),
    ]);
    for (const [proto, port, r] of closed) assert.equal(r.ok, false, `${proto}/${port} is not in the open specs but was forwarded: ${JSON.stringify(r)}`);
    assert.deepEqual(tcpApp.events.filter((e) => e.local_port === 7200 || e.local_port === 7202), [], 'TCP to a closed port reached the LAN host');
    assert.deepEqual(udpApp.events.filter((e) => e.local_port === 7100 || e.local_port === 7202), [], 'UDP to a closed port reached the LAN host');

    // The TCP half of `both`: a TCP connection to port 7000 hits the same rule.
    const tcpTrig = await topo.once(lan, 'tcp-once', WAN_SERVER, 7000, 'hi', OK_MS);
    assert.equal(tcpTrig.ok, true, JSON.stringify(tcpTrig));
    assert.ok((await ruleView(topo, 'multi')).trigger_hits >= 1 + 3, 'the TCP connection (SYN, ACK, data...) hits the rule too');
  });

  test('translation 6000-6009 -> 7000: both ends of the range reach 7000 and 7009, replies come from 6000 and 6009', async () => {
    // On the LAN host: the translated ports, and the untranslated ones as decoys.
    const ports = [7000, 7009, 7010, 6000, 6009];
    const [tcpApp, udpApp] = await Promise.all([
      topo.listener(lan, 'tcp-echo', ...ports), topo.listener(lan, 'udp-echo', ...ports), topo.listener(wan, 'tcp-echo', 5000),
    ]);
    const trig = await topo.once(lan, 'tcp-once', WAN_SERVER, 5000, 'x', OK_MS);
    assert.equal(trig.ok, true, JSON.stringify(trig));

    for (const [wanPort, lanPort] of [[6000, 7000], [6009, 7009]] as const) {
      const t = await topo.once(wan, 'tcp-once', GW_WAN, wanPort, `t${wanPort}`, OK_MS);
      assert.deepEqual([t.ok, t.reply, t.remote], [true, `echo:t${wanPort}`, GW_WAN], `tcp/${wanPort}: ${JSON.stringify(t)}`);
      const acc = await tcpApp.waitFor((e) => e.event === 'accept' && e.local_port === lanPort);
      assert.equal(acc.remote, WAN_SERVER);

      const u = await topo.once(wan, 'udp-once', GW_WAN, wanPort, `u${wanPort}`, OK_MS);
      assert.deepEqual([u.ok, u.reply, u.from, u.from_port], [true, `echo:u${wanPort}`, GW_WAN, wanPort], `udp/${wanPort}: ${JSON.stringify(u)}`);
      const dg = await udpApp.waitFor((e) => e.data === `u${wanPort}`);
      assert.deepEqual([dg.remote, dg.local_port], [WAN_SERVER, lanPort]);
    }
    const past = await topo.once(wan, 'tcp-once', GW_WAN, 6010, 'past', REFUSED_MS);
    assert.equal(past.ok, false, `tcp/6010 is past the range but was forwarded: ${JSON.stringify(past)}`);
    const decoys = (e: Record<string, unknown>): boolean => [6000, 6009, 7010].includes(e.local_port as number);
    assert.deepEqual([...tcpApp.events, ...udpApp.events].filter(decoys), [], 'the untranslated ports on the LAN host must see nothing');
    assert.deepEqual(tcpApp.events.filter((e) => e.event === 'accept').map((e) => e.local_port), [7000, 7009]);
    const flows = (await topo.json<FlowJson[]>('flows')).filter((f) => f.rule === 'xl');
    assert.deepEqual(flows.map((f) => `${f.proto} ${f.wan_port}->${f.host_port}`).sort(),
      ['tcp 6000->7000', 'tcp 6009->7009', 'udp 6000->7000', 'udp 6009->7009']);
  });

  test('refresh: trigger traffic keeps a session open past its idle timeout (never reopened)', async () => {
    const [app, server, client] = await Promise.all([
      topo.listener(lan, 'tcp-echo', 5101), topo.listener(wan, 'udp-talk', 5100), topo.listener(lan, 'udp-talk', 0),
    ]);
    const keep = keepSending(client, WAN_SERVER, 5100, 'keepalive');
    await sleep(KEPT_MS);
    const r = await topo.once(wan, 'tcp-once', GW_WAN, 5101, 'still', OK_MS);
    const s = (await topo.sessions()).find((x) => x.rule === 'refresh-trigger');
    const sent = await keep.stop();
    await server.waitFor((e) => e.data === `keepalive-${sent - 1}`);

    assert.equal(r.ok, true, `the session expired although trigger traffic kept coming: ${JSON.stringify(r)}`);
    assert.equal((await app.waitFor((e) => e.event === 'accept')).remote, WAN_SERVER);
    assert.ok(s, 'the session is listed');
    assert.ok(Date.now() - Date.parse(s.opened_at) >= KEPT_MS, `opened_at ${s.opened_at} is recent: it was reopened`);
    const v = await ruleView(topo, 'refresh-trigger');
    assert.equal(v.sessions_opened, 1, 'refreshed, not expired and opened again');
    assert.equal(v.trigger_hits, sent, 'every trigger datagram is a hit');
  });

  test('refresh: the LAN host\'s traffic on an accepted flow keeps its session open; a remote\'s inbound traffic alone does not', async () => {
    const [app, peer] = await Promise.all([
      topo.listener(lan, 'udp-talk', 5201), topo.listener(wan, 'udp-talk', 40000), topo.listener(wan, 'udp-echo', 5200),
    ]);
    const trig = await topo.once(lan, 'udp-once', WAN_SERVER, 5200, 'arm', OK_MS);
    assert.equal(trig.ok, true, JSON.stringify(trig));

    // A probe from a new source port: a new flow, accepted only while the session is open.
    const probe = async (tag: string, want: 'accepted' | 'refused'): Promise<void> => {
      await topo.once(wan, 'udp-once', GW_WAN, 5201, tag, 300);  // no echo: the app only listens
      const e = await app.waitFor((x) => x.data === tag, want === 'accepted' ? OK_MS : REFUSED_MS).catch(() => null);
      const state = async (): Promise<string> => `sessions ${JSON.stringify(await topo.sessions())}; ` +
        `flows ${JSON.stringify(await topo.json('flows'))}; counters ${JSON.stringify(await topo.ruleCounters('refresh-flow'))}; ` +
        `app ${JSON.stringify(app.events.slice(-3))}; peer ${JSON.stringify(peer.events.slice(-3))}`;
      if (want === 'accepted' && !e) assert.fail(`${tag}: a new inbound datagram was not forwarded: the session expired; ${await state()}`);
      if (want === 'refused' && e) assert.fail(`${tag}: a new inbound datagram was forwarded: the session is still open; ${await state()}`);
      if (e) assert.notEqual(e.remote_port, 40000);
    };

    // The remote opens a flow and keeps sending on it; the LAN app talks back on it.
    const inbound = keepSending(peer, GW_WAN, 5201, 'in');
    const first = await app.waitFor((e) => e.data === 'in-0', OK_MS);
    assert.deepEqual([first.remote, first.remote_port], [WAN_SERVER, 40000]);
    const outbound = keepSending(app, WAN_SERVER, 40000, 'out');
    const got = await peer.waitFor((e) => e.data === 'out-0');
    assert.deepEqual([got.remote, got.remote_port], [GW_WAN, 5201], 'replies leave from the WAN address and port');
    await sleep(KEPT_MS);
    await probe('probe-while-the-host-talks', 'accepted');

    // Inbound only: the LAN app falls silent, the remote goes on (RFC 4787
    // REQ-6, RFC 6092 REC-16: only the inside refreshes).
    await outbound.stop();
    const heard = (): number => app.events.filter((e) => typeof e.data === 'string' && e.data.startsWith('in-')).length;
    const before = heard();
    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    assert.ok(heard() > before, 'the accepted flow lives on its own timer: the remote\'s datagrams still arrive');
    await probe('probe-after-inbound-only', 'refused');
    assert.equal((await topo.sessions()).filter((s) => s.rule === 'refresh-flow').length, 0, 'the session expired although the remote kept sending');
    await inbound.stop();
    assert.equal((await ruleView(topo, 'refresh-flow')).sessions_opened, 1, 'opened once, never reopened by inbound traffic');
    assert.equal((await ruleView(topo, 'refresh-flow')).trigger_hits, 1, 'no trigger traffic but the first datagram');
  });

  test('session expiry: an accepted TCP connection keeps working, unless kill_flows_on_expiry cuts it', async () => {
    const [armer] = await Promise.all([
      topo.listener(lan, 'udp-talk', 0), topo.listener(lan, 'tcp-echo', 5301, 5401), topo.listener(wan, 'udp-talk', 5300),
    ]);
    // Both rules trigger on udp/5300; trigger traffic holds the sessions open
    // until both connections are up, however slowly their processes start.
    const arming = keepSending(armer, WAN_SERVER, 5300, 'arm');
    const keep = topo.peer(wan, 'tcp-talk', GW_WAN, 5301);
    const kill = topo.peer(wan, 'tcp-talk', GW_WAN, 5401);
    for (const c of [keep, kill]) {
      await c.waitFor((e) => e.event === 'connected', OK_MS);
      c.send('before');
      await c.waitFor((e) => e.reply === 'echo:before');
    }
    assert.deepEqual((await topo.sessions()).filter((s) => ['keep', 'kill'].includes(s.rule)).map((s) => [s.rule, s.flows]).sort(),
      [['keep', 1], ['kill', 1]]);
    await arming.stop();

    await sleep(IDLE_MS + SWEEP_SLACK_MS);
    assert.deepEqual((await topo.sessions()).filter((s) => ['keep', 'kill'].includes(s.rule)), [], 'both sessions expired');
    const flows = (await topo.json<FlowJson[]>('flows')).map((f) => f.rule);
    assert.ok(flows.includes('keep') && !flows.includes('kill'), `flows after expiry: ${JSON.stringify(flows)}`);

    keep.send('after');
    await keep.waitFor((e) => e.reply === 'echo:after');
    kill.send('after');
    const cut = await kill.waitFor((e) => e.reply === 'echo:after' || e.event === 'error' || e.event === 'closed', OK_MS);
    assert.notEqual(cut.reply, 'echo:after', 'kill_flows_on_expiry: the connection still works after its session expired');
    // No flow: the gateway's own stack answers the segment with a reset.
    assert.equal(cut.error, 'ECONNRESET', JSON.stringify(kill.events));
  });
});
