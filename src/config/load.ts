/**
 * Reading a configuration file: YAML with source positions, validated by the
 * one schema of schema.ts, every problem reported with its field path and line.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isSeq, type Node } from 'yaml';
import { ConfigError, type ConfigIssue } from '../errors.js';
import { configSchema, toConfig } from './schema.js';
import type { Config } from './types.js';

/** Format a zod-style path as `rules[2].open`. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');
}

function lineOf(doc: ReturnType<typeof parseDocument>, lc: LineCounter, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  let best: number | undefined = (node as Node | null)?.range ? lc.linePos((node as Node).range![0]).line : undefined;
  for (const p of path) {
    if (isMap(node)) {
      const pair = node.items.find((it) => (it.key as { value?: unknown } | null)?.value === p);
      if (!pair) break;
      const k = pair.key as Node;
      if (k?.range) best = lc.linePos(k.range[0]).line;
      node = pair.value;
    } else if (isSeq(node) && typeof p === 'number') {
      node = node.items[p];
      if ((node as Node | undefined)?.range) best = lc.linePos((node as Node).range![0]).line;
    } else break;
  }
  return best;
}

/** Parse and validate configuration text; throws one ConfigError with all issues. */
export function parseConfig(text: string, file: string): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]}`, line: e.linePos?.[0]?.line })));
  }
  const raw = doc.toJS() as unknown;
  const r = configSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issues: ConfigIssue[] = r.error.issues.map((i) => ({
      path: formatPath(i.path), message: i.message, line: lineOf(doc, lc, i.path),
    }));
    throw new ConfigError(file, issues);
  }
  return toConfig(r.data);
}

/** Read and validate a configuration file. */
export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }]);
  }
  return parseConfig(text, file);
}

/** Interfaces of `config` that `exists` says are missing, as config issues. */
export function checkInterfacesExist(config: Config, exists: (name: string) => boolean): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!exists(config.interfaces.wan)) issues.push({ path: 'interfaces.wan', message: `interface "${config.interfaces.wan}" does not exist` });
  config.interfaces.lan.forEach((n, i) => {
    if (!exists(n)) issues.push({ path: `interfaces.lan[${i}]`, message: `interface "${n}" does not exist` });
  });
  return issues;
}
