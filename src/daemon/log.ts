/**
 * Structured logging: one logfmt line per event. The core takes a Logger and
 * never writes to a stream itself; the CLI decides where lines go.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function fmtValue(v: unknown): string {
  const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v) ?? 'undefined';
  return /^[\w.:/@+-]+$/.test(s) ? s : JSON.stringify(s);
}

/** Format one log line (without newline). */
export function formatLogLine(level: LogLevel, msg: string, fields: LogFields = {}, now = new Date()): string {
  const parts = [`time=${now.toISOString()}`, `level=${level}`, `msg=${fmtValue(msg)}`];
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) parts.push(`${k}=${fmtValue(v)}`);
  return parts.join(' ');
}

/** A logger that hands formatted lines at or above `min` to `write`. */
export function createLogger(write: (line: string) => void, min: LogLevel = 'info'): Logger {
  const at = (level: LogLevel) => (msg: string, fields?: LogFields): void => {
    if (ORDER[level] >= ORDER[min]) write(formatLogLine(level, msg, fields));
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A logger that drops everything (tests, library use). */
export const nullLogger: Logger = createLogger(() => {}, 'error');
