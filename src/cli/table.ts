/** Plain-text tables for the CLI's human output. */
import type { RuleView } from '../daemon/daemon.js';

export function table(rows: readonly Record<string, unknown>[], columns: readonly string[]): string {
  return tableLines(rows, columns).lines.join('\n');
}

/**
 * A table's lines (header first) and its column widths. `minWidths`: columns
 * at least this wide, so that later batches of a streamed listing line up
 * with the first.
 */
export function tableLines(rows: readonly Record<string, unknown>[], columns: readonly string[], minWidths: readonly number[] = []): { lines: string[]; widths: number[] } {
  const cell = (v: unknown): string => (v === null || v === undefined ? '-' : Array.isArray(v) ? v.join(' ') : String(v));
  const head = columns.map((c) => c.toUpperCase());
  const body = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = head.map((h, i) => Math.max(h.length, minWidths[i] ?? 0, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return { lines: [line(head), ...body.map(line)], widths };
}

/** A rule as the human table shows it: each counter as "sum (IPv4/IPv6)". */
export function ruleRow(r: RuleView): Record<string, unknown> {
  const c = (k: 'trigger_hits' | 'sessions_opened' | 'flows_opened'): string => `${r[k]} (${r.by_family.ipv4[k]}/${r.by_family.ipv6[k]})`;
  return {
    ...r, 'trigger_hits (v4/v6)': c('trigger_hits'), 'sessions_opened (v4/v6)': c('sessions_opened'), 'flows_opened (v4/v6)': c('flows_opened'),
  };
}
