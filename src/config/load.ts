/**
 * Reading a configuration file: YAML parsed with source positions, validated
 * by the one schema of schema.ts, every problem reported at once with the path
 * of its field and the line it is on.
 */
import { readFileSync } from 'node:fs';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { ConfigError, type ConfigIssue } from '../errors.js';
import { validateConfig } from './schema.js';
import type { Config } from './types.js';

export { formatDuration, parseDuration } from './schema.js';

/** Format a field path as `rules[2].open` (odd keys as `["a b"]`). */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/**
 * 1-based line of the node at `path` in `doc`; for a mapping entry, the line
 * of its key. When the path leads to a field that is not in the file (a
 * missing key), the line of the nearest enclosing node that is.
 */
function lineAt(doc: Document, lc: LineCounter, path: readonly (string | number)[]): number | undefined {
  const lineOf = (node: unknown): number | undefined => {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return range ? lc.linePos(range[0]).line : undefined;
  };
  let node: unknown = doc.contents;
  let line = lineOf(node);
  for (const seg of path) {
    if (isAlias(node)) node = node.resolve(doc);
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (!pair) break;
      line = lineOf(pair.key) ?? lineOf(pair.value) ?? line;
      node = pair.value;
    } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
      node = node.items[seg];
      line = lineOf(node) ?? line;
    } else {
      break;
    }
  }
  return line;
}

const byLine = (a: ConfigIssue, b: ConfigIssue): number => (a.line ?? Number.MAX_SAFE_INTEGER) - (b.line ?? Number.MAX_SAFE_INTEGER);

/**
 * Parse and validate configuration text. `file` names the source in messages.
 * Returns the normalized Config; throws one ConfigError listing every problem
 * (YAML syntax errors, or else every validation issue), each with its line.
 */
export function parseConfig(text: string, file: string): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => ({
      path: '',
      message: `YAML syntax error: ${e.message.split('\n')[0]}`,
      line: lc.linePos(e.pos[0]).line,
    })));
  }

  let data: unknown;
  try {
    data = doc.toJS();
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML: ${(e as Error).message}`, line: 1 }]);
  }
  if (data === null || data === undefined) {
    throw new ConfigError(file, [{ path: '', message: 'the file is empty (expected a mapping with at least interfaces and rules)', line: 1 }]);
  }

  const r = validateConfig(data);
  if (r.ok) return r.config;
  const issues: ConfigIssue[] = r.issues.map((i) => {
    const line = lineAt(doc, lc, i.path);
    return { path: formatPath(i.path), message: i.message, ...(line !== undefined ? { line } : {}) };
  });
  throw new ConfigError(file, issues.sort(byLine));
}

const READ_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many symbolic links',
};

/** Read and validate the configuration file `file`; an unreadable file is a ConfigError too. */
export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = (code && READ_ERRORS[code]) ? `${READ_ERRORS[code]} (${code})` : (e as Error).message;
    throw new ConfigError(file, [{ path: '', message: `cannot read the configuration file: ${why}` }]);
  }
  return parseConfig(text, file);
}

/**
 * Interfaces named in `config` that `exists` says are missing, as issues with
 * paths `interfaces.wan` / `interfaces.lan[1]` (checked when the daemon starts).
 */
export function checkInterfacesExist(config: Config, exists: (name: string) => boolean): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!exists(config.interfaces.wan)) {
    issues.push({ path: 'interfaces.wan', message: `interface "${config.interfaces.wan}" does not exist` });
  }
  config.interfaces.lan.forEach((name, i) => {
    if (!exists(name)) issues.push({ path: `interfaces.lan[${i}]`, message: `interface "${name}" does not exist` });
  });
  return issues;
}
