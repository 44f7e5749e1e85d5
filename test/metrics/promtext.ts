/**
 * A small reader of the Prometheus text format (0.0.4) for tests: samples
 * with their labels and values, and the metric families named in # TYPE;
 * the metric names PromQL expressions read; the expressions of the shipped
 * dashboard and alert rules.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { REPO_ROOT } from '../helpers/bpffs.js';

export const ALERTS = join(REPO_ROOT, 'packaging/prometheus-alerts.yml');
export const DASHBOARD = join(REPO_ROOT, 'packaging/grafana-dashboard.json');

export interface Sample { name: string; labels: Record<string, string>; value: number }
export interface Exposition { samples: Sample[]; types: Map<string, string> }

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parse an exposition; throws on a line it cannot read. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) { types.set(type[1]!, type[2]!); continue; }
    if (line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    const v = m[3]!;
    samples.push({ name: m[1]!, labels, value: v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v) });
  }
  return { samples, types };
}

/** The value of the one sample of `name` whose labels include `labels`; throws if not exactly one. */
export function valueOf(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  const hits = e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length !== 1) {
    throw new Error(`${hits.length} samples of ${name}${JSON.stringify(labels)}; have ${JSON.stringify(e.samples.filter((s) => s.name === name))}`);
  }
  return hits[0]!.value;
}

/** Names a PromQL expression may use for the families in `e` (histograms add _bucket, _sum, _count). */
export function exportedNames(e: Exposition): Set<string> {
  const names = new Set(e.samples.map((s) => s.name));
  for (const [n, t] of e.types) {
    names.add(n);
    if (t === 'histogram' || t === 'summary') for (const s of ['_bucket', '_sum', '_count']) names.add(`${n}${s}`);
  }
  return names;
}

const PROMQL_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names a PromQL expression reads: identifiers that are not
 * functions, keywords, label names (in matchers and grouping clauses),
 * strings, durations or Grafana variables.
 */
export function metricNamesIn(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ')            // strings
    .replace(/\{[^}]*\}/g, ' ')                                       // label matchers
    .replace(/\[[^\]]*\]/g, ' ')                                      // ranges and subqueries
    .replace(/\$\{[^}]*\}|\$[a-zA-Z_]\w*/g, ' ')                      // Grafana variables
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const out: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = s.slice(m.index! + m[0].length).trimStart();
    if (after.startsWith('(')) continue;                              // a function
    if (PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    if (/^\d/.test(s.slice(m.index! - 1, m.index!))) continue;         // unit of a number, e.g. 5m, 1e9
    out.push(m[0]);
  }
  return out;
}

/** Every PromQL expression of the dashboard: panel targets and query variables. */
export function dashboardExprs(): { where: string; expr: string }[] {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: { title: string; type: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; type: string; query?: { query: string } }[] };
  };
  const out: { where: string; expr: string }[] = [];
  for (const p of d.panels) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: t.expr });
  for (const v of d.templating.list) {
    const q = v.type === 'query' ? /^label_values\((\w+)/.exec(v.query?.query ?? '') : null;
    if (q) out.push({ where: `variable $${v.name}`, expr: q[1]! });
  }
  return out;
}

/** Every alert expression of the rules file. */
export function alertExprs(): { where: string; expr: string }[] {
  const doc = parse(readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert: string; expr: string }[] }[] };
  return doc.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
}
