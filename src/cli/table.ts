/** Plain-text tables for the CLI's human output. */
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
