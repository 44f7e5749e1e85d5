/**
 * Parsers for the port spec strings of the configuration (SPEC 3):
 *
 * - trigger: `PROTO/PORTS`, e.g. `tcp/6667,6697`, `udp/27015-27030`;
 * - open:    the same, or a translation `PROTO/A-B -> C` (WAN port p in A..B
 *   reaches LAN port C + (p - A)).
 *
 * PROTO is `tcp`, `udp` or `both`; PORTS is a comma-separated list of `N` or
 * `N-M`. Whitespace around tokens is tolerated. Pure functions: they return
 * either a value or a message that says what is wrong; they never throw.
 */
import type { OpenSpec, PortRange, Proto, TriggerSpec } from './types.js';

/** Outcome of a parser: the value, or a human-readable reason. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

export const MIN_PORT = 1;
export const MAX_PORT = 65535;

/** Regular expression (JSON Schema `pattern`, ECMA-262) of a trigger spec. */
export const TRIGGER_PATTERN =
  '^\\s*(tcp|udp|both)\\s*/\\s*\\d+(\\s*-\\s*\\d+)?(\\s*,\\s*\\d+(\\s*-\\s*\\d+)?)*\\s*$';

/** Regular expression (JSON Schema `pattern`, ECMA-262) of an open spec. */
export const OPEN_PATTERN =
  '^\\s*(tcp|udp|both)\\s*/\\s*\\d+(\\s*-\\s*\\d+)?(\\s*,\\s*\\d+(\\s*-\\s*\\d+)?)*(\\s*->\\s*\\d+)?\\s*$';

const ok = <T>(value: T): ParseResult<T> => ({ ok: true, value });
const fail = <T>(error: string): ParseResult<T> => ({ ok: false, error });

/** Protocols of a PROTO token: `both` expands to tcp and udp. */
export function parseProto(token: string): ParseResult<Proto[]> {
  const p = token.trim();
  if (p === 'tcp' || p === 'udp') return ok([p]);
  if (p === 'both') return ok(['tcp', 'udp']);
  if (p === '') return fail('missing protocol before "/" (expected tcp, udp or both)');
  return fail(`unknown protocol "${p}" (expected tcp, udp or both)`);
}

/** One port number, 1..65535. `what` names it in messages ("port", "translation target port"). */
export function parsePort(token: string, what = 'port'): ParseResult<number> {
  const t = token.trim();
  if (!/^\d+$/.test(t)) return fail(t === '' ? `missing ${what} number` : `${what} "${t}" is not a number`);
  const n = Number(t);
  if (n < MIN_PORT || n > MAX_PORT) return fail(`${what} ${t.replace(/^0+(?=\d)/, '')} out of range ${MIN_PORT}-${MAX_PORT}`);
  return ok(n);
}

/** A comma-separated list of `N` or `N-M`, each range non-empty. */
export function parsePortList(text: string): ParseResult<PortRange[]> {
  const out: PortRange[] = [];
  const parts = text.split(',');
  for (const raw of parts) {
    const part = raw.trim();
    if (part === '') {
      return fail(parts.length > 1 ? `empty entry in port list "${text.trim()}"` : 'missing ports after "/" (expected N or N-M)');
    }
    const bounds = part.split('-');
    if (bounds.length > 2) return fail(`bad port range "${part}" (expected N or N-M)`);
    const from = parsePort(bounds[0]!);
    if (!from.ok) return from;
    if (bounds.length === 1) {
      out.push({ from: from.value, to: from.value });
      continue;
    }
    const to = parsePort(bounds[1]!);
    if (!to.ok) return to;
    if (to.value < from.value) return fail(`empty range ${from.value}-${to.value}`);
    out.push({ from: from.value, to: to.value });
  }
  return ok(out);
}

function splitProto(text: string): ParseResult<{ protos: Proto[]; rest: string }> {
  const slash = text.indexOf('/');
  if (slash < 0) return fail(`"${text.trim()}" is not PROTO/PORTS (e.g. tcp/6667,6697 or udp/27015-27030)`);
  const protos = parseProto(text.slice(0, slash));
  if (!protos.ok) return protos;
  return ok({ protos: protos.value, rest: text.slice(slash + 1) });
}

/** Parse a trigger spec `PROTO/PORTS`, e.g. `tcp/6667,6697` or `both/3478-3479`. */
export function parseTriggerSpec(text: string): ParseResult<TriggerSpec> {
  if (text.includes('->')) return fail('a trigger cannot translate ports ("->" belongs in open specs)');
  const head = splitProto(text);
  if (!head.ok) return head;
  const ranges = parsePortList(head.value.rest);
  if (!ranges.ok) return ranges;
  return ok({ protos: head.value.protos, ranges: ranges.value });
}

/**
 * Parse an open spec: `PROTO/PORTS` (one OpenSpec per range, LAN port = WAN
 * port) or `PROTO/A-B -> C` / `PROTO/A -> C` (exactly one range, WAN A..B to
 * LAN C..C+(B-A), which must end at or below 65535).
 */
export function parseOpenSpec(text: string): ParseResult<OpenSpec[]> {
  const arrow = text.split('->');
  if (arrow.length > 2) return fail(`more than one "->" in "${text.trim()}"`);
  const trigger = parseTriggerSpec(arrow[0]!);
  if (!trigger.ok) return trigger;
  const { protos, ranges } = trigger.value;
  if (arrow.length === 1) return ok(ranges.map((r) => ({ protos: [...protos], from: r.from, to: r.to, lanFrom: r.from })));

  if (ranges.length !== 1) {
    return fail(`a translated open spec must have exactly one port range (got ${ranges.length}: "${arrow[0]!.trim()}")`);
  }
  const lan = parsePort(arrow[1]!, 'translation target port');
  if (!lan.ok) return lan;
  const r = ranges[0]!;
  const span = r.to - r.from;
  if (lan.value + span > MAX_PORT) {
    return fail(`translation runs past ${MAX_PORT} (${lan.value} + ${span} = ${lan.value + span}; WAN ${r.from}-${r.to} needs ${span + 1} LAN ports)`);
  }
  return ok([{ protos: [...protos], from: r.from, to: r.to, lanFrom: lan.value }]);
}

/** The LAN port that WAN port `wanPort` (within spec.from..spec.to) reaches. */
export function lanPortOf(spec: OpenSpec, wanPort: number): number {
  return spec.lanFrom + (wanPort - spec.from);
}

function formatProtos(protos: readonly Proto[]): string {
  return protos.includes('tcp') && protos.includes('udp') ? 'both' : protos[0] ?? 'tcp';
}

/** `N` or `N-M`. */
export function formatRange(r: PortRange): string {
  return r.from === r.to ? `${r.from}` : `${r.from}-${r.to}`;
}

/** Canonical spelling of a trigger spec, e.g. `tcp/6667,6697`. */
export function formatTriggerSpec(t: TriggerSpec): string {
  return `${formatProtos(t.protos)}/${t.ranges.map(formatRange).join(',')}`;
}

/** Canonical spelling of one open spec, e.g. `udp/27000-27015` or `tcp/6000-6009 -> 7000`. */
export function formatOpenSpec(o: OpenSpec): string {
  const base = `${formatProtos(o.protos)}/${formatRange(o)}`;
  return o.lanFrom === o.from ? base : `${base} -> ${o.lanFrom}`;
}
