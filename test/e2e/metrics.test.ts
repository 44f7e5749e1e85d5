/**
 * End to end: a real Prometheus server (Debian's prometheus) runs on loopback
 * inside the gateway namespace, scrapes the daemon there every second, and
 * sees the session and the flow that real traffic opened. The raw scrape
 * passes `promtool check metrics`, and the shipped dashboard and alert rules
 * name only metrics the daemon exports. Prometheus and its storage are
 * removed after the suite, also on failure.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, GW_WAN, Topology, WAN_SERVER, sleep, type Proc } from './topology.js';
import { alertExprs, dashboardExprs, exportedNames, metricNamesIn, parseExposition, type Exposition } from '../metrics/promtext.js';

const root = process.getuid?.() === 0;
const haveProm = spawnSync('prometheus', ['--version']).status === 0 && spawnSync('promtool', ['--version']).status === 0;
const SKIP = !root ? 'needs root' : !haveProm ? 'prometheus/promtool missing: run scripts/setup.sh (Debian package prometheus)' : false;

/** The daemon's default metrics.listen, inside the gateway namespace. */
const METRICS_URL = 'http://127.0.0.1:9469/metrics';
const PROM_ADDR = '127.0.0.1:9090';
const SCRAPE_INTERVAL = '1s';
/** Prometheus start plus a few scrapes, with a wide margin for a loaded machine. */
const PROM_TIMEOUT_MS = 60_000;
const POLL_MS = 500;
/** Series Prometheus makes up itself for every target. */
const SYNTHETIC = new Set(['up']);

const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
  - name: game
    trigger: udp/27015
    open: udp/27000
`;

/** GET `url` from inside namespace `ns` (its loopback is not ours). */
function getIn(topo: Topology, url: string): Promise<{ status: number; body: string }> {
  const script = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))'
    + '.catch((e) => process.stdout.write(JSON.stringify({ status: 0, body: String(e) })))';
  return new Promise((resolve, reject) => {
    execFile('ip', ['netns', 'exec', topo.ns.gw, process.execPath, '-e', script, url], { encoding: 'utf8', maxBuffer: 64 << 20 }, (err, out) => {
      if (err) reject(err); else resolve(JSON.parse(out) as { status: number; body: string });
    });
  });
}

/** Ask Prometheus (inside the gateway) for an instant vector's first value, or null. */
async function promValue(topo: Topology, query: string): Promise<number | null> {
  const r = await getIn(topo, `http://${PROM_ADDR}/api/v1/query?query=${encodeURIComponent(query)}`);
  if (r.status !== 200) return null;
  const j = JSON.parse(r.body) as { data?: { result?: { value: [number, string] }[] } };
  const v = j.data?.result?.[0]?.value[1];
  return v === undefined ? null : Number(v);
}

/** Poll until `query` yields `want`; fail with the last value seen. */
async function waitForValue(topo: Topology, query: string, want: number, prom: Proc): Promise<void> {
  const deadline = Date.now() + PROM_TIMEOUT_MS;
  let last: number | null = null;
  while (Date.now() < deadline) {
    last = await promValue(topo, query);
    if (last === want) return;
    if (prom.child.exitCode !== null) throw new Error(`prometheus exited ${prom.child.exitCode}: ${prom.stderr.slice(-2000)}`);
    await sleep(POLL_MS);
  }
  throw new Error(`${query} is ${last}, want ${want}, after ${PROM_TIMEOUT_MS} ms; prometheus: ${prom.stderr.slice(-2000)}`);
}

describe('metrics scraped by a real Prometheus in the gateway namespace', { skip: SKIP }, () => {
  let topo: Topology;
  let prom: Proc;
  let daemon: Proc;
  let config: string;
  let scrape: Exposition;
  let rawScrape: string;

  before(async () => {
    topo = new Topology().create();
    // BPF run-time statistics are opt-in (metrics.bpf_stats); this test reads them.
    config = topo.writeConfig(RULES, 'metrics:\n  bpf_stats: true\n');
    daemon = await topo.startDaemon(config);
    const dir = join(topo.dir, 'prometheus');
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(join(dir, 'prometheus.yml'), `global:
  scrape_interval: ${SCRAPE_INTERVAL}
  evaluation_interval: ${SCRAPE_INTERVAL}
scrape_configs:
  - job_name: porttrig
    static_configs:
      - targets: ['127.0.0.1:9469']
`);
    prom = topo.spawn(topo.ns.gw, 'prometheus', [
      `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=${PROM_ADDR}`, '--log.level=warn',
    ]);
  });

  // Kill Prometheus (topo.destroy() SIGKILLs every process it spawned) and
  // remove namespaces, bpffs and the temp dir holding Prometheus's storage.
  after(() => topo?.destroy());

  test('Prometheus sees the session and the flow that traffic opened', async () => {
    await waitForValue(topo, 'up{job="porttrig"}', 1, prom);
    await waitForValue(topo, 'porttrig_sessions_opened_total{rule="irc-ident", family="ipv4"}', 0, prom);

    const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
    await ident.waitFor((e) => e.event === 'listening');
    const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
    await irc.waitFor((e) => e.event === 'listening');
    const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
    assert.equal(trig.ok, true, `trigger connection failed: ${JSON.stringify(trig)}`);
    const flow = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hello', 3000);
    assert.equal(flow.ok, true, `inbound connection not forwarded: ${JSON.stringify(flow)}`);

    await waitForValue(topo, 'porttrig_sessions_opened_total{rule="irc-ident", family="ipv4"}', 1, prom);
    await waitForValue(topo, 'porttrig_flows_opened_total{rule="irc-ident", family="ipv4"}', 1, prom);
    await waitForValue(topo, 'porttrig_sessions_active{rule="irc-ident", family="ipv4"}', 1, prom);
    await waitForValue(topo, 'porttrig_flows_opened_total{rule="game", family="ipv4"}', 0, prom);
    await waitForValue(topo, 'min(porttrig_datapath_attached)', 1, prom);
    await waitForValue(topo, 'porttrig_bpf_stats_enabled', 1, prom);
    const hits = await promValue(topo, 'porttrig_trigger_hits_total{rule="irc-ident", family="ipv4"}');
    assert.ok(hits !== null && hits >= 1, `trigger hits ${hits}`);
    const translated = await promValue(topo, 'sum(porttrig_packets_total{verdict="translated"})');
    assert.ok(translated !== null && translated >= 2, `translated packets ${translated}: the flow's SYN and its reply at least`);
    const runs = await promValue(topo, 'sum(porttrig_bpf_run_count_total)');
    assert.ok(runs !== null && runs > 0, `the data path's run count ${runs}`);

    const r = await getIn(topo, METRICS_URL);
    assert.equal(r.status, 200);
    rawScrape = r.body;
    scrape = parseExposition(rawScrape);
  });

  test('promtool check metrics finds nothing to complain about in the scrape', () => {
    assert.ok(rawScrape, 'no scrape (the test before failed)');
    const r = spawnSync('promtool', ['check', 'metrics'], { input: rawScrape, encoding: 'utf8' });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool check metrics reported problems');
    assert.equal(r.status, 0);
  });

  test('the dashboard and the alert rules name only metrics the daemon exports', () => {
    assert.ok(scrape, 'no scrape (the first test failed)');
    const names = exportedNames(scrape);
    const exprs = [...dashboardExprs(), ...alertExprs()];
    assert.ok(exprs.length > 0);
    const unknown = exprs.flatMap(({ where, expr }) => metricNamesIn(expr)
      .filter((n) => !names.has(n) && !SYNTHETIC.has(n)).map((n) => `${where}: ${n}`));
    assert.deepEqual(unknown, [], 'expressions name metrics the daemon does not export');
  });

  test('counters carry on across a daemon restart: Prometheus sees no reset', async () => {
    assert.ok(scrape, 'no scrape (the first test failed)');
    daemon.kill('SIGTERM');
    assert.equal(await daemon.exited(), 0, `daemon did not stop cleanly: ${daemon.stderr.slice(-2000)}`);
    await waitForValue(topo, 'up{job="porttrig"}', 0, prom);
    daemon = await topo.startDaemon(config);
    await waitForValue(topo, 'up{job="porttrig"}', 1, prom);
    await waitForValue(topo, 'porttrig_sessions_opened_total{rule="irc-ident", family="ipv4"}', 1, prom);
    await waitForValue(topo, 'porttrig_flows_opened_total{rule="irc-ident", family="ipv4"}', 1, prom);
    assert.equal(await promValue(topo, 'resets(porttrig_sessions_opened_total{rule="irc-ident", family="ipv4"}[10m])'), 0);
    assert.equal(await promValue(topo, 'resets(porttrig_packets_total{family="ipv4", direction="wan", verdict="translated"}[10m])'), 0);
  });

  test('the endpoint answers 404 beside /metrics', async () => {
    const r = await getIn(topo, METRICS_URL.replace('/metrics', '/'));
    assert.equal(r.status, 404);
  });

  test('a metrics port that is taken stops the daemon at start with a clear error', async () => {
    daemon.kill('SIGTERM');
    await daemon.exited();
    // Prometheus holds PROM_ADDR in the same namespace.
    const cfg = topo.writeConfig(RULES, `metrics:\n  listen: ${PROM_ADDR}\n`);
    const d = topo.spawn(topo.ns.gw, process.execPath, [CLI, 'daemon', '--config', cfg]);
    assert.equal(await d.exited(), 1, d.stderr);
    assert.match(d.stderr, new RegExp(`cannot serve metrics on ${PROM_ADDR} \\(metrics.listen\\): address already in use`));
    assert.doesNotMatch(d.stderr, /unexpected error/);
  });
});
