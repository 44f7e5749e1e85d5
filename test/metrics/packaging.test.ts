/**
 * The shipped monitoring files: the alert rules pass `promtool check rules`
 * and their own promtool unit tests; the Grafana dashboard parses and every
 * panel has PromQL. (That they name only exported metrics is checked against
 * a real daemon's scrape in test/e2e/metrics.test.ts.) promtool comes with
 * Debian's prometheus package (scripts/setup.sh).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/bpffs.js';
import { ALERTS, dashboardExprs, metricNamesIn } from './promtext.js';

const ALERT_TESTS = join(REPO_ROOT, 'test/metrics/prometheus-alerts.test.yml');

const promtool = spawnSync('promtool', ['--version']).status === 0;
const needPromtool = promtool ? {} : { skip: 'promtool missing: run scripts/setup.sh (Debian package prometheus)' };

test('promtool check rules accepts packaging/prometheus-alerts.yml', needPromtool, () => {
  const out = execFileSync('promtool', ['check', 'rules', ALERTS], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  assert.match(out, /SUCCESS: \d+ rules found/);
});

test('the alerts fire on what they should and not on look-alikes (promtool test rules)', needPromtool, () => {
  const r = spawnSync('promtool', ['test', 'rules', ALERT_TESTS], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
});

test('the dashboard parses, and every panel queries porttrig metrics', () => {
  const exprs = dashboardExprs();
  assert.ok(exprs.length >= 15, `only ${exprs.length} expressions`);
  for (const { where, expr } of exprs) assert.ok(metricNamesIn(expr).length > 0, `${where}: no metric in ${expr}`);
  const names = new Set(exprs.flatMap((e) => metricNamesIn(e.expr)));
  for (const n of ['porttrig_sessions_active', 'porttrig_flows_active', 'porttrig_trigger_hits_total', 'porttrig_sessions_refused_total',
    'porttrig_packets_total', 'porttrig_map_entries', 'porttrig_bpf_run_time_seconds_total']) {
    assert.ok(names.has(n), `the dashboard shows no ${n}`);
  }
});

test('metric names are found in PromQL, and only they', () => {
  assert.deepEqual(metricNamesIn('sum by (rule, reason) (rate(porttrig_x_total{instance=~"$instance", reason="a b"}[$__rate_interval]))'), ['porttrig_x_total']);
  assert.deepEqual(metricNamesIn('a / b > 0.9 and on (instance) c == 1e9'), ['a', 'b', 'c']);
  assert.deepEqual(metricNamesIn('histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))'), ['h_bucket']);
  assert.deepEqual(metricNamesIn('absent(up{job="porttrig"}) offset 5m'), ['up']);
});
