/**
 * The one schema of the configuration file (SPEC 3). It validates, applies
 * defaults, and emits the JSON Schema shipped in schema/porttrig.schema.json.
 */
import { z } from 'zod';
import type { Config, OpenSpec, PortRange, Proto, TriggerSpec } from './types.js';

const MIN_TIMEOUT_MS = 1000;
const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const MAX_TRIGGER_SHARING = 4;
const MAX_RULES = 1023;

/** Milliseconds of a duration such as `10m`, `1500ms`, `7d`; NaN if malformed. */
export function parseDuration(s: string): number {
  const m = /^\s*(\d+)\s*(ms|s|m|h|d)\s*$/.exec(s);
  return m ? Number(m[1]) * UNIT_MS[m[2]!]! : NaN;
}

/** The shortest exact spelling of `ms`: 600000 -> `10m`. */
export function formatDuration(ms: number): string {
  for (const u of ['d', 'h', 'm', 's'] as const) if (ms % UNIT_MS[u]! === 0) return `${ms / UNIT_MS[u]!}${u}`;
  return `${ms}ms`;
}

function protosOf(p: string): Proto[] | string {
  if (p === 'tcp' || p === 'udp') return [p];
  if (p === 'both') return ['tcp', 'udp'];
  return `unknown protocol "${p}" (expected tcp, udp or both)`;
}

function port(s: string): number | string {
  if (!/^\d+$/.test(s)) return `"${s}" is not a port number`;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : `port ${n} out of range 1-65535`;
}

function ranges(spec: string): PortRange[] | string {
  const out: PortRange[] = [];
  for (const part of spec.split(',').map((x) => x.trim())) {
    const [a, b, extra] = part.split('-').map((x) => x.trim());
    if (extra !== undefined || !a) return `bad port range "${part}"`;
    const from = port(a);
    if (typeof from === 'string') return from;
    const to = b === undefined ? from : port(b);
    if (typeof to === 'string') return to;
    if (to < from) return `empty range ${from}-${to}`;
    out.push({ from, to });
  }
  return out;
}

/** Parse a trigger `PROTO/PORTS`; a string result is the error. */
export function parseTrigger(s: string): TriggerSpec | string {
  const m = /^\s*([a-z]+)\s*\/\s*(.+?)\s*$/i.exec(s);
  if (!m) return `"${s}" is not PROTO/PORTS (e.g. tcp/6667,6697)`;
  const protos = protosOf(m[1]!.toLowerCase());
  if (typeof protos === 'string') return protos;
  const r = ranges(m[2]!);
  return typeof r === 'string' ? r : { protos, ranges: r };
}

/** Parse an open spec `PROTO/PORTS` or `PROTO/A-B -> C`; a string result is the error. */
export function parseOpen(s: string): OpenSpec[] | string {
  const [lhs, rhs, extra] = s.split('->');
  if (extra !== undefined) return `"${s}" has more than one "->"`;
  const t = parseTrigger(lhs!);
  if (typeof t === 'string') return t;
  if (rhs === undefined) return t.ranges.map((r) => ({ protos: t.protos, from: r.from, to: r.to, lanFrom: r.from }));
  if (t.ranges.length !== 1) return 'a translated open spec takes exactly one port range';
  const lan = port(rhs.trim());
  if (typeof lan === 'string') return lan;
  const r = t.ranges[0]!;
  if (lan + (r.to - r.from) > 65535) return `translation runs past 65535 (${lan} + ${r.to - r.from})`;
  return [{ protos: t.protos, from: r.from, to: r.to, lanFrom: lan }];
}

const duration = z.string().superRefine((s, ctx) => {
  const ms = parseDuration(s);
  if (Number.isNaN(ms)) ctx.addIssue({ code: 'custom', message: `"${s}" is not a duration (e.g. 500ms, 30s, 10m, 2h, 7d)` });
  else if (ms < MIN_TIMEOUT_MS || ms > MAX_TIMEOUT_MS) ctx.addIssue({ code: 'custom', message: `timeout ${s} outside 1s..7d` });
}).meta({ description: 'duration with unit ms, s, m, h or d; 1s..7d', pattern: '^\\d+(ms|s|m|h|d)$' });

const ifname = z.string().regex(/^[^\s/]{1,15}$/, 'interface name of 1-15 characters without "/" or spaces');
const portSpec = (what: string, parse: (s: string) => unknown) => z.string().superRefine((s, ctx) => {
  const r = parse(s);
  if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
}).meta({ description: what });
const triggerSpec = portSpec('PROTO/PORTS: PROTO tcp|udp|both, PORTS N or N-M, comma-separated', parseTrigger);
const openSpec = portSpec('PROTO/PORTS, or PROTO/A-B -> C to translate WAN ports A-B to LAN ports C..', parseOpen);
const peer = z.enum(['any', 'contacted']);
const conflict = z.enum(['first', 'last']);
const limit = z.number().int().min(1, 'a limit must be at least 1');

const rule = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,63}$/, 'rule name of 1-63 letters, digits, "_", "." or "-"'),
  enabled: z.boolean().default(true),
  trigger: triggerSpec,
  open: z.union([openSpec, z.array(openSpec).min(1, 'at least one open spec')]),
  idle_timeout: duration.optional(),
  peer: peer.optional(),
  conflict: conflict.optional(),
  kill_flows_on_expiry: z.boolean().default(false),
});

const listen = z.string().superRefine((s, ctx) => {
  const m = /^(localhost|\d{1,3}(?:\.\d{1,3}){3}):(\d+)$/.exec(s);
  const p = m ? Number(m[2]) : 0;
  if (!m || p < 1 || p > 65535 || (m[1] !== 'localhost' && m[1]!.split('.').some((o) => Number(o) > 255))) {
    ctx.addIssue({ code: 'custom', message: `"${s}" is not HOST:PORT (IPv4 address or localhost, port 1-65535)` });
  }
});

/** The configuration schema: validation and JSON Schema both come from here. */
export const configSchema = z.strictObject({
  interfaces: z.strictObject({ wan: ifname, lan: z.array(ifname).min(1, 'at least one LAN interface') }),
  defaults: z.strictObject({
    idle_timeout: duration.default('10m'), peer: peer.default('any'), conflict: conflict.default('first'),
  }).default({ idle_timeout: '10m', peer: 'any', conflict: 'first' }),
  limits: z.strictObject({
    sessions: limit.default(65536), flows: limit.default(262144), sessions_per_host: limit.default(64),
  }).default({ sessions: 65536, flows: 262144, sessions_per_host: 64 }),
  datapath: z.strictObject({ pin_path: z.string().startsWith('/', 'an absolute path').default('/sys/fs/bpf/porttrig') })
    .default({ pin_path: '/sys/fs/bpf/porttrig' }),
  metrics: z.strictObject({ listen: listen.default('127.0.0.1:9469') }).default({ listen: '127.0.0.1:9469' }),
  control: z.strictObject({ socket: z.string().startsWith('/', 'an absolute path').default('/run/porttrig/porttrig.sock') })
    .default({ socket: '/run/porttrig/porttrig.sock' }),
  rules: z.array(rule).max(MAX_RULES, `at most ${MAX_RULES} rules`),
}).superRefine((c, ctx) => {
  const names = new Map<string, number>();
  c.rules.forEach((r, i) => {
    const j = names.get(r.name);
    if (j !== undefined) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `duplicate rule name "${r.name}" (also rules[${j}])` });
    else names.set(r.name, i);
  });
  const opened = new Map<string, { rule: string; index: number }>();
  const triggers = new Map<string, number>();
  c.rules.forEach((r, i) => {
    if (!r.enabled) return;
    const specs = (Array.isArray(r.open) ? r.open : [r.open]).map(parseOpen).filter((x): x is OpenSpec[] => typeof x !== 'string').flat();
    let reported = false;
    for (const s of specs) for (const proto of s.protos) for (let p = s.from; p <= s.to && !reported; p++) {
      const other = opened.get(`${proto}/${p}`);
      if (other && other.index !== i) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'open'], message: `${proto}/${p} is already opened by rule "${other.rule}" (rules[${other.index}])` });
        reported = true;
      } else opened.set(`${proto}/${p}`, { rule: r.name, index: i });
    }
    const t = parseTrigger(r.trigger);
    if (typeof t === 'string') return;
    const seen = new Set<string>();
    for (const proto of t.protos) for (const rg of t.ranges) for (let p = rg.from; p <= rg.to; p++) {
      const k = `${proto}/${p}`;
      if (seen.has(k)) continue;
      seen.add(k);
      const n = (triggers.get(k) ?? 0) + 1;
      triggers.set(k, n);
      if (n === MAX_TRIGGER_SHARING + 1) {
        ctx.addIssue({ code: 'custom', path: ['rules', i, 'trigger'], message: `${k} triggers more than ${MAX_TRIGGER_SHARING} enabled rules` });
      }
    }
  });
});

export type RawConfig = z.output<typeof configSchema>;

/** Normalize validated input into the Config the rest of porttrig uses. */
export function toConfig(c: RawConfig): Config {
  const defaults = { idleTimeoutMs: parseDuration(c.defaults.idle_timeout), peer: c.defaults.peer, conflict: c.defaults.conflict };
  const [host, portS] = [c.metrics.listen.slice(0, c.metrics.listen.lastIndexOf(':')), c.metrics.listen.slice(c.metrics.listen.lastIndexOf(':') + 1)];
  return {
    interfaces: { wan: c.interfaces.wan, lan: c.interfaces.lan },
    defaults,
    limits: { sessions: c.limits.sessions, flows: c.limits.flows, sessionsPerHost: c.limits.sessions_per_host },
    datapath: { pinPath: c.datapath.pin_path },
    metrics: { listen: { host, port: Number(portS) } },
    control: { socket: c.control.socket },
    rules: c.rules.map((r) => ({
      name: r.name,
      enabled: r.enabled,
      trigger: parseTrigger(r.trigger) as TriggerSpec,
      open: (Array.isArray(r.open) ? r.open : [r.open]).flatMap((s) => parseOpen(s) as OpenSpec[]),
      idleTimeoutMs: r.idle_timeout ? parseDuration(r.idle_timeout) : defaults.idleTimeoutMs,
      peer: r.peer ?? defaults.peer,
      conflict: r.conflict ?? defaults.conflict,
      killFlowsOnExpiry: r.kill_flows_on_expiry,
    })),
  };
}

/** The JSON Schema of the configuration file (input form, for editors). */
export function configJsonSchema(): object {
  return {
    $id: 'https://porttrig.invalid/porttrig.schema.json',
    title: 'porttrig configuration',
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
  };
}
