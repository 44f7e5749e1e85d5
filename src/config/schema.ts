/**
 * The one schema of the configuration file (SPEC 3). It validates the YAML
 * input, applies defaults, normalizes into `Config` (types.ts), and is the
 * source of the JSON Schema shipped in schema/porttrig.schema.json.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { PorttrigError } from '../errors.js';
import {
  MAX_PORT, OPEN_PATTERN, TRIGGER_PATTERN, formatRange, parseOpenSpec, parseTriggerSpec, type ParseResult,
} from './ports.js';
import type { Config, OpenSpec, Proto, TriggerSpec } from './types.js';

/** Shortest allowed idle timeout. */
export const MIN_IDLE_TIMEOUT_MS = 1000;
/** Longest allowed idle timeout (7 days). */
export const MAX_IDLE_TIMEOUT_MS = 7 * 86_400_000;
/** Most rules in one configuration (rule ids 1..1023 in the data path). */
export const MAX_RULES = 1023;
/** Most enabled rules that may share one trigger (protocol, port). */
export const MAX_RULES_PER_TRIGGER = 4;
/** Largest map capacity the kernel accepts (u32). */
export const MAX_LIMIT = 0xffff_ffff;
/** Longest Unix socket path (sun_path is 108 bytes with its NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** Defaults of every optional field (SPEC 3). */
export const DEFAULTS = {
  idleTimeout: '10m',
  peer: 'any',
  conflict: 'first',
  sessions: 65536,
  flows: 262144,
  sessionsPerHost: 64,
  pinPath: '/sys/fs/bpf/porttrig',
  metricsListen: '127.0.0.1:9469',
  controlSocket: '/run/porttrig/porttrig.sock',
} as const;

// ---------------------------------------------------------------------------
// Durations

const UNIT_MS: Readonly<Record<string, number>> = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 };
/** Regular expression (JSON Schema `pattern`) of a duration: `10m`, `1500ms`, `1h30m`. */
export const DURATION_PATTERN = '^\\s*(\\d+\\s*(ms|s|m|h|d)\\s*)+$';
const DURATION_RE = new RegExp(DURATION_PATTERN);
const DURATION_PART_RE = /(\d+)\s*(ms|s|m|h|d)/g;

/** Milliseconds of a duration string, or why it is not one. */
export function tryParseDuration(text: string): ParseResult<number> {
  if (!DURATION_RE.test(text)) {
    return {
      ok: false,
      error: /^\s*\d+\s*$/.test(text)
        ? `duration "${text.trim()}" needs a unit: ms, s, m, h or d (e.g. ${text.trim()}s)`
        : `"${text}" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)`,
    };
  }
  let ms = 0;
  for (const m of text.matchAll(DURATION_PART_RE)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return { ok: true, value: ms };
}

/**
 * Milliseconds of a duration such as `10m`, `1500ms`, `7d` or `1h30m`
 * (units ms, s, m, h, d). Throws a PorttrigError (E_USAGE) if malformed.
 */
export function parseDuration(text: string): number {
  const r = tryParseDuration(text);
  if (!r.ok) throw new PorttrigError('E_USAGE', r.error, { value: text });
  return r.value;
}

/**
 * The exact spelling of `ms` with the largest units first:
 * 600000 → `10m`, 1500 → `1s500ms`, 90000 → `1m30s`, 0 → `0s`.
 * `parseDuration(formatDuration(n)) === n` for every integer n ≥ 0.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 0) return `-${formatDuration(-ms)}`;
  let rest = Math.round(ms);
  if (rest === 0) return '0s';
  let out = '';
  for (const [unit, size] of Object.entries(UNIT_MS)) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * size;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Field schemas

/** Human description of a value found in the file, for messages. */
function describeValue(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  switch (typeof v) {
    case 'string': return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v)}`;
    case 'number': return `the number ${v}`;
    case 'boolean': return `${v}`;
    case 'object': return 'a mapping';
    default: return typeof v;
  }
}

/** A string parsed by `parse` into T; a failed parse becomes an issue with its message. */
function parsedString<T>(meta: { description: string; pattern: string; examples: string[] }, parse: (s: string) => ParseResult<T>) {
  const typeError = (iss: { input?: unknown }): string | undefined =>
    iss.input === undefined ? undefined : `expected a string such as ${meta.examples[0]}, got ${describeValue(iss.input)}`;
  return z.string({ error: typeError }).meta(meta).transform((s, ctx): T => {
    const r = parse(s);
    if (!r.ok) {
      ctx.addIssue({ code: 'custom', message: r.error, input: s });
      return z.NEVER;
    }
    return r.value;
  });
}

function parseIdleTimeout(s: string): ParseResult<number> {
  const r = tryParseDuration(s);
  if (!r.ok) return r;
  if (r.value < MIN_IDLE_TIMEOUT_MS) return { ok: false, error: `timeout ${s.trim()} is below the minimum of 1s (allowed 1s..7d)` };
  if (r.value > MAX_IDLE_TIMEOUT_MS) return { ok: false, error: `timeout ${s.trim()} is above the maximum of 7d (allowed 1s..7d)` };
  return r;
}

const idleTimeout = parsedString(
  { description: 'Idle timeout: a number with unit ms, s, m, h or d (e.g. 10m, 1500ms, 1h30m); 1s..7d.', pattern: DURATION_PATTERN, examples: ['10m', '30s', '2h'] },
  parseIdleTimeout,
);

const triggerSpec = parsedString(
  {
    description: 'Trigger: PROTO/PORTS. PROTO is tcp, udp or both; PORTS is N or N-M, comma-separated; ports 1-65535.',
    pattern: TRIGGER_PATTERN,
    examples: ['tcp/6667,6697', 'udp/27015-27030'],
  },
  parseTriggerSpec,
);

const openSpec = parsedString(
  {
    description: 'Open ports: PROTO/PORTS like a trigger, or PROTO/A-B -> C: WAN ports A..B reach LAN ports C..C+(B-A) (one range, ending at or below 65535).',
    pattern: OPEN_PATTERN,
    examples: ['tcp/113', 'udp/27000-27015', 'tcp/6000-6009 -> 7000'],
  },
  parseOpenSpec,
);

const openSpecs = z
  .union([openSpec, z.array(openSpec).min(1, 'at least one open spec is required')], {
    error: (iss) => `expected an open spec such as tcp/113, or a list of them, got ${describeValue(iss.input)}`,
  })
  .transform((v): OpenSpec[] => (v.length > 0 && Array.isArray(v[0]) ? (v as OpenSpec[][]).flat() : (v as OpenSpec[])));

/** Linux interface name: 1-15 bytes, not `.` or `..`, no `/`, `:` or whitespace. */
const IFNAME_RE = /^(?!\.\.?$)[^\s/:]{1,15}$/;
const ifname = z.string().regex(IFNAME_RE, {
  error: (iss) => `invalid interface name ${JSON.stringify(iss.input)} (1-15 characters, no "/", ":" or whitespace)`,
});

/** A network prefix: `A.B.C.D/N` or an IPv6 `X::/N`, host bits zero. */
export const PREFIX_PATTERN = '^[0-9A-Fa-f:.]+/\\d{1,3}$';

function parsePrefix(s: string): ParseResult<string> {
  const m = /^([0-9A-Fa-f:.]+)\/(\d{1,3})$/.exec(s.trim());
  if (!m) return { ok: false, error: `"${s}" is not a network prefix such as 10.9.0.0/16 or 2001:db8:1::/48` };
  const [, addr, lenS] = m as unknown as [string, string, string];
  const len = Number(lenS);
  const family = isIP(addr);
  if (family === 0) return { ok: false, error: `"${addr}" is not an IPv4 or IPv6 address` };
  const bits = family === 4 ? 32 : 128;
  if (len > bits) return { ok: false, error: `prefix length ${len} out of range 0-${bits} for ${family === 4 ? 'IPv4' : 'IPv6'}` };
  if (len === 0) return { ok: false, error: `"${s}" covers every address: a LAN prefix must be narrower` };
  const net = prefixNetwork(addr, len, family);
  if (net !== canonical(addr, family)) return { ok: false, error: `"${s}" has host bits set; did you mean ${net}/${len}?` };
  return { ok: true, value: `${net}/${len}` };
}

/** The address written canonically (IPv6 compressed, lower case). */
function canonical(addr: string, family: number): string {
  return family === 4 ? addr.split('.').map(Number).join('.') : new URL(`http://[${addr}]`).hostname.slice(1, -1);
}

/** The network address of `addr`/`len`, canonical. */
function prefixNetwork(addr: string, len: number, family: number): string {
  const bits = family === 4 ? 32 : 128;
  let v = 0n;
  if (family === 4) {
    for (const o of addr.split('.')) v = (v << 8n) | BigInt(Number(o));
  } else {
    const full = new URL(`http://[${addr}]`).hostname.slice(1, -1);
    const [head, tail] = full.includes('::') ? full.split('::') as [string, string] : [full, ''];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    for (const g of groups) v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  const mask = ((1n << BigInt(bits)) - 1n) ^ ((1n << BigInt(bits - len)) - 1n);
  v &= mask;
  if (family === 4) return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 255n)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => ((v >> BigInt(112 - 16 * i)) & 0xffffn).toString(16));
  return canonical(groups.join(':'), 6);
}

const lanNetwork = parsedString(
  {
    description: 'A prefix routed behind a LAN interface (IPv4 or IPv6), host bits zero.',
    pattern: PREFIX_PATTERN,
    examples: ['10.9.0.0/16', '2001:db8:1::/48'],
  },
  parsePrefix,
);

const peer = z.enum(['any', 'contacted']).meta({
  description: 'any: any remote host may connect to the open ports; contacted: only hosts the LAN host sent trigger traffic to.',
});
const conflict = z.enum(['first', 'last']).meta({
  description: 'When a second LAN host triggers an open session: first keeps the owner until expiry, last hands it over.',
});

// multipleOf(1) rather than int(): zod's int() aborts the whole parse on a
// fraction, which would hide every other issue (cross-field checks included).
const limit = (description: string) =>
  z.number()
    .multipleOf(1, { error: (iss) => `expected a whole number, got ${describeValue(iss.input)}` })
    .min(1, { error: (iss) => `must be at least 1 (got ${String(iss.input)})` })
    .max(MAX_LIMIT, { error: (iss) => `must be at most ${MAX_LIMIT} (got ${String(iss.input)})` })
    .meta({ type: 'integer', description });

const absolutePath = z.string().regex(/^\//, { error: (iss) => `must be an absolute path (got ${JSON.stringify(iss.input)})` });

/** `HOST:PORT` with an IPv4 address or `localhost`. */
export const LISTEN_PATTERN = '^(localhost|\\d{1,3}(\\.\\d{1,3}){3}):\\d{1,5}$';

function parseListen(s: string): ParseResult<{ host: string; port: number }> {
  const m = /^(localhost|\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(s.trim());
  if (!m) return { ok: false, error: `"${s}" is not HOST:PORT with an IPv4 address or localhost (e.g. 127.0.0.1:9469)` };
  const host = m[1]!;
  if (host !== 'localhost' && host.split('.').some((o) => Number(o) > 255)) {
    return { ok: false, error: `"${host}" is not an IPv4 address (each part 0-255)` };
  }
  const port = Number(m[2]);
  if (port < 1 || port > MAX_PORT) return { ok: false, error: `port ${port} out of range 1-${MAX_PORT}` };
  return { ok: true, value: { host, port } };
}

const listen = parsedString(
  { description: 'HOST:PORT of the Prometheus endpoint; HOST is an IPv4 address or localhost.', pattern: LISTEN_PATTERN, examples: ['127.0.0.1:9469'] },
  parseListen,
);

const rule = z.strictObject({
  name: z.string()
    .regex(/^[A-Za-z0-9_.-]{1,63}$/, {
      error: (iss) => `invalid rule name ${JSON.stringify(iss.input)} (1-63 letters, digits, "_", "." or "-")`,
    })
    .meta({ description: 'Unique rule name: 1-63 letters, digits, "_", "." or "-".' }),
  enabled: z.boolean().default(true).meta({ description: 'A disabled rule stays configured but neither triggers nor opens.' }),
  trigger: triggerSpec,
  open: openSpecs,
  idle_timeout: idleTimeout.optional().meta({ description: 'Session idle timeout of this rule; defaults.idle_timeout if absent.' }),
  peer: peer.optional().meta({ description: 'Peer mode of this rule (any | contacted); defaults.peer if absent.' }),
  conflict: conflict.optional().meta({ description: 'Conflict policy of this rule (first | last); defaults.conflict if absent.' }),
  kill_flows_on_expiry: z.boolean().default(false).meta({ description: 'Close the flows of a session when the session expires.' }),
});

const fields = z.strictObject({
  interfaces: z.strictObject({
    wan: ifname.meta({ description: 'The WAN interface; its IPv4 address is read from it and followed.' }),
    lan: z.array(ifname).min(1, 'at least one LAN interface is required')
      .meta({ description: 'LAN interfaces (a bridge such as br-lan counts as one).' }),
    lan_networks: z.array(lanNetwork).default([]).meta({
      description: 'Extra LAN prefixes routed behind a LAN interface (IPv4 or IPv6); the LAN interfaces\' own subnets are always LAN. ' +
        'Hosts in them may trigger; traffic from them arriving on the WAN is never translated.',
    }),
  }),
  defaults: z.strictObject({
    idle_timeout: idleTimeout.prefault(DEFAULTS.idleTimeout),
    peer: peer.default(DEFAULTS.peer),
    conflict: conflict.default(DEFAULTS.conflict),
  }).prefault({}).meta({ description: 'Defaults of the rules\' idle_timeout, peer and conflict.' }),
  limits: z.strictObject({
    sessions: limit('Capacity of the session map.').default(DEFAULTS.sessions),
    flows: limit('Capacity of the flow map.').default(DEFAULTS.flows),
    sessions_per_host: limit('Most sessions one LAN host may hold.').default(DEFAULTS.sessionsPerHost),
  }).prefault({}),
  datapath: z.strictObject({
    pin_path: absolutePath.default(DEFAULTS.pinPath)
      .meta({ description: 'Where maps and programs are pinned; must be on a bpffs (mounted there if it is not).' }),
    xdp: z.boolean().default(false).meta({
      description: 'Forward the inbound packets of established IPv4 flows from an XDP program on the WAN (native XDP; an Ethernet WAN without VLAN sub-interfaces), ' +
        'before the kernel builds an skb; everything else stays on TC. A LAN interface that cannot take XDP frames falls back to TC after its first failure (README, XDP fast path).',
    }),
  }).prefault({}),
  metrics: z.strictObject({
    listen: listen.prefault(DEFAULTS.metricsListen),
    bpf_stats: z.boolean().default(false).meta({
      description: 'Turn on the kernel\'s BPF run-time statistics while the daemon runs (porttrig_bpf_run_*): two clock reads per run of every BPF program on the machine. Off: those metrics stay 0 unless the sysctl kernel.bpf_stats_enabled is 1.',
    }),
  }).prefault({}),
  control: z.strictObject({
    socket: absolutePath
      .refine((s) => Buffer.byteLength(s) <= MAX_SOCKET_PATH_BYTES, { error: `a Unix socket path may have at most ${MAX_SOCKET_PATH_BYTES} bytes` })
      .default(DEFAULTS.controlSocket)
      .meta({ description: 'Unix socket of the control API (HTTP + JSON, mode 0600).' }),
  }).prefault({}),
  rules: z.array(rule).max(MAX_RULES, {
    error: (iss) => `at most ${MAX_RULES} rules are supported (got ${Array.isArray(iss.input) ? iss.input.length : '?'})`,
  }),
}).meta({
  title: 'porttrig configuration',
  description: 'Configuration of porttrig, port triggering for Linux gateways (YAML). Every field but interfaces and rules has a default.',
});

// ---------------------------------------------------------------------------
// Cross-field checks. They run even when some fields failed, on whatever
// parts did parse, so one run reports every problem.

type Ctx = z.RefinementCtx;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isProtoList = (v: unknown): v is Proto[] => Array.isArray(v) && v.every((p) => p === 'tcp' || p === 'udp');
const isTriggerSpec = (v: unknown): v is TriggerSpec =>
  isRecord(v) && isProtoList(v.protos) && Array.isArray(v.ranges) && v.ranges.every((r) => isRecord(r) && typeof r.from === 'number');
const isOpenSpecs = (v: unknown): v is OpenSpec[] =>
  Array.isArray(v) && v.every((o) => isRecord(o) && isProtoList(o.protos) && typeof o.from === 'number' && typeof o.lanFrom === 'number');

interface RuleView { index: number; name: string | undefined; enabled: boolean; trigger?: TriggerSpec; open?: OpenSpec[] }

function ruleViews(rules: unknown): RuleView[] {
  if (!Array.isArray(rules)) return [];
  const out: RuleView[] = [];
  rules.forEach((r: unknown, index) => {
    if (!isRecord(r)) return;
    out.push({
      index,
      name: typeof r.name === 'string' ? r.name : undefined,
      enabled: r.enabled !== false,
      ...(isTriggerSpec(r.trigger) ? { trigger: r.trigger } : {}),
      ...(isOpenSpecs(r.open) ? { open: r.open } : {}),
    });
  });
  return out;
}

const portsWord = (from: number, to: number): string => (from === to ? `port ${from}` : `ports ${formatRange({ from, to })}`);
const ruleRef = (r: RuleView): string => `${r.name !== undefined ? `"${r.name}"` : 'unnamed rule'} (rules[${r.index}])`;

function checkInterfaces(v: Record<string, unknown>, ctx: Ctx): void {
  const ifs = v.interfaces;
  if (!isRecord(ifs) || !Array.isArray(ifs.lan)) return;
  const seen = new Map<string, number>();
  ifs.lan.forEach((n: unknown, i) => {
    if (typeof n !== 'string') return;
    const j = seen.get(n);
    if (j !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['interfaces', 'lan', i], message: `interface "${n}" is listed twice (also interfaces.lan[${j}])`, input: n });
    } else if (n === ifs.wan) {
      ctx.addIssue({ code: 'custom', path: ['interfaces', 'lan', i], message: `interface "${n}" is also the WAN interface`, input: n });
    }
    seen.set(n, i);
  });
}

function checkNames(rules: RuleView[], ctx: Ctx): void {
  const seen = new Map<string, number>();
  for (const r of rules) {
    if (r.name === undefined) continue;
    const j = seen.get(r.name);
    if (j !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['rules', r.index, 'name'], message: `duplicate rule name "${r.name}" (also rules[${j}].name)`, input: r.name });
    } else seen.set(r.name, r.index);
  }
}

interface Interval { from: number; to: number; rule: RuleView }

/** Calls `found` for every pair of overlapping intervals (a before b in sort order). */
function eachOverlap(ivs: Interval[], found: (a: Interval, b: Interval) => void): void {
  const sorted = [...ivs].sort((a, b) => a.from - b.from || a.rule.index - b.rule.index);
  for (let k = 0; k < sorted.length; k++) {
    for (let m = k + 1; m < sorted.length && sorted[m]!.from <= sorted[k]!.to; m++) found(sorted[k]!, sorted[m]!);
  }
}

function openIntervals(rules: RuleView[], proto: Proto): Interval[] {
  return rules.flatMap((rule) => (rule.open ?? []).filter((o) => o.protos.includes(proto)).map((o) => ({ from: o.from, to: o.to, rule })));
}

function checkOpenOverlaps(rules: RuleView[], ctx: Ctx): void {
  const reported = new Set<string>();
  // Within one rule (enabled or not): a WAN port listed twice is ambiguous.
  for (const rule of rules) {
    for (const proto of ['tcp', 'udp'] as const) {
      eachOverlap(openIntervals([rule], proto), (a, b) => {
        if (reported.has(`${rule.index}`)) return;
        reported.add(`${rule.index}`);
        ctx.addIssue({
          code: 'custom', path: ['rules', rule.index, 'open'],
          message: `${proto} ${portsWord(b.from, Math.min(a.to, b.to))} listed more than once in this rule's open ports`,
        });
      });
    }
  }
  // Across enabled rules: each WAN port opens for one rule only.
  const enabled = rules.filter((r) => r.enabled);
  for (const proto of ['tcp', 'udp'] as const) {
    eachOverlap(openIntervals(enabled, proto), (a, b) => {
      if (a.rule === b.rule) return;
      const [first, second] = a.rule.index < b.rule.index ? [a.rule, b.rule] : [b.rule, a.rule];
      const key = `${first.index}:${second.index}`;
      if (reported.has(key)) return;
      reported.add(key);
      const lo = b.from;
      const hi = Math.min(a.to, b.to);
      ctx.addIssue({
        code: 'custom', path: ['rules', second.index, 'open'],
        message: `${proto} ${portsWord(lo, hi)} ${lo === hi ? 'is' : 'are'} also opened by enabled rule ${ruleRef(first)}`,
      });
    });
  }
}

function checkTriggerSharing(rules: RuleView[], ctx: Ctx): void {
  const reported = new Set<number>();
  for (const proto of ['tcp', 'udp'] as const) {
    const events: { at: number; delta: number; rule: RuleView }[] = [];
    for (const rule of rules) {
      if (!rule.enabled || !rule.trigger?.protos.includes(proto)) continue;
      for (const r of rule.trigger.ranges) events.push({ at: r.from, delta: 1, rule }, { at: r.to + 1, delta: -1, rule });
    }
    events.sort((a, b) => a.at - b.at);
    const active = new Map<RuleView, number>();
    for (let k = 0; k < events.length;) {
      const at = events[k]!.at;
      for (; k < events.length && events[k]!.at === at; k++) {
        const e = events[k]!;
        const n = (active.get(e.rule) ?? 0) + e.delta;
        if (n === 0) active.delete(e.rule);
        else active.set(e.rule, n);
      }
      if (active.size <= MAX_RULES_PER_TRIGGER) continue;
      const sharing = [...active.keys()].sort((a, b) => a.index - b.index);
      const firsts = sharing.slice(0, MAX_RULES_PER_TRIGGER).map(ruleRef).join(', ');
      for (const rule of sharing.slice(MAX_RULES_PER_TRIGGER)) {
        if (reported.has(rule.index)) continue;
        reported.add(rule.index);
        ctx.addIssue({
          code: 'custom', path: ['rules', rule.index, 'trigger'],
          message: `at most ${MAX_RULES_PER_TRIGGER} enabled rules may share a trigger: ${proto} port ${at} already triggers ${firsts}`,
        });
      }
    }
  }
}

function crossCheck(value: unknown, ctx: Ctx): void {
  if (!isRecord(value)) return;
  checkInterfaces(value, ctx);
  const rules = ruleViews(value.rules);
  checkNames(rules, ctx);
  checkOpenOverlaps(rules, ctx);
  checkTriggerSharing(rules, ctx);
}

// ---------------------------------------------------------------------------
// Normalization

type Fields = z.output<typeof fields>;

function normalize(c: Fields): Config {
  const defaults = { idleTimeoutMs: c.defaults.idle_timeout, peer: c.defaults.peer, conflict: c.defaults.conflict };
  return {
    interfaces: { wan: c.interfaces.wan, lan: [...c.interfaces.lan], lanNetworks: [...c.interfaces.lan_networks] },
    defaults,
    limits: { sessions: c.limits.sessions, flows: c.limits.flows, sessionsPerHost: c.limits.sessions_per_host },
    datapath: { pinPath: c.datapath.pin_path, xdp: c.datapath.xdp },
    metrics: { listen: c.metrics.listen, bpfStats: c.metrics.bpf_stats },
    control: { socket: c.control.socket },
    rules: c.rules.map((r) => ({
      name: r.name,
      enabled: r.enabled,
      trigger: r.trigger,
      open: r.open,
      idleTimeoutMs: r.idle_timeout ?? defaults.idleTimeoutMs,
      peer: r.peer ?? defaults.peer,
      conflict: r.conflict ?? defaults.conflict,
      killFlowsOnExpiry: r.kill_flows_on_expiry,
    })),
  };
}

/**
 * The configuration schema: YAML input (snake_case, with defaults) in,
 * normalized `Config` out. Validation and the JSON Schema both come from here.
 */
export const configSchema = fields
  .superRefine((value, ctx) => crossCheck(value, ctx), { when: () => true })
  .transform(normalize);

/** The configuration as written in the file (before defaults and normalization). */
export type ConfigInput = z.input<typeof configSchema>;

// ---------------------------------------------------------------------------
// Validation with readable issues

/** One validation problem: `path` into the input (keys and list indexes), and why. */
export interface SchemaIssue { path: (string | number)[]; message: string }

export type ValidationResult = { ok: true; config: Config } | { ok: false; issues: SchemaIssue[] };

const EXPECTED: Readonly<Record<string, string>> = {
  string: 'a string', number: 'a number', int: 'a whole number', boolean: 'true or false',
  object: 'a mapping', array: 'a list',
};

/** Messages for zod's generic issues; schema-specific messages take precedence. */
const errorMap = (iss: z.core.$ZodRawIssue): string | undefined => {
  switch (iss.code) {
    case 'invalid_type':
      if (iss.input === undefined) return 'missing required field';
      return `expected ${EXPECTED[iss.expected] ?? iss.expected}, got ${describeValue(iss.input)}`;
    case 'invalid_value':
      return `expected ${iss.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${describeValue(iss.input)}`;
    case 'too_small':
      if (iss.origin === 'array') return `must have at least ${String(iss.minimum)} entr${iss.minimum === 1 ? 'y' : 'ies'}`;
      return `must be at least ${String(iss.minimum)} (got ${String(iss.input)})`;
    case 'too_big':
      if (iss.origin === 'array') return `must have at most ${String(iss.maximum)} entries`;
      return `must be at most ${String(iss.maximum)} (got ${String(iss.input)})`;
    default:
      return undefined;
  }
};

/** Keys an object schema at `path` accepts (for "unknown key" messages), if it is one. */
function keysAt(path: readonly PropertyKey[]): string[] | undefined {
  interface Def { type: string; shape?: Record<string, { _zod: { def: Def } }>; element?: { _zod: { def: Def } }; in?: { _zod: { def: Def } }; innerType?: { _zod: { def: Def } } }
  let def: Def = (fields as unknown as { _zod: { def: Def } })._zod.def;
  let i = 0;
  for (;;) {
    const next = def.in ?? def.innerType;
    if ((def.type === 'pipe' || def.type === 'default' || def.type === 'prefault' || def.type === 'optional') && next) {
      def = next._zod.def;
    } else if (def.type === 'object' && def.shape) {
      if (i === path.length) return Object.keys(def.shape);
      const child = def.shape[String(path[i++])];
      if (!child) return undefined;
      def = child._zod.def;
    } else if (def.type === 'array' && def.element && i < path.length) {
      i++;
      def = def.element._zod.def;
    } else {
      return undefined;
    }
  }
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function unknownKeyMessage(key: string, allowed: string[] | undefined): string {
  if (!allowed || allowed.length === 0) return `unknown key "${key}"`;
  const best = allowed
    .map((k) => ({ k, d: editDistance(key.toLowerCase(), k) }))
    .sort((a, b) => a.d - b.d)[0]!;
  if (best.d <= 2 && best.d < key.length) return `unknown key "${key}" (did you mean "${best.k}"?)`;
  return `unknown key "${key}" (allowed: ${allowed.join(', ')})`;
}

const toPath = (p: readonly PropertyKey[]): (string | number)[] => p.map((k) => (typeof k === 'number' ? k : String(k)));

/** Turn zod issues into SchemaIssues: one per unknown key, union branches resolved. */
function flattenIssue(issue: z.core.$ZodIssue, prefix: (string | number)[], out: SchemaIssue[]): void {
  const path = [...prefix, ...toPath(issue.path)];
  if (issue.code === 'unrecognized_keys') {
    const allowed = keysAt(path);
    for (const key of issue.keys) out.push({ path: [...path, key], message: unknownKeyMessage(key, allowed) });
    return;
  }
  if (issue.code === 'invalid_union') {
    // Keep the branch the value was meant for: the one that did not fail on its type alone.
    const meant = issue.errors.filter((b) => !(b.length === 1 && b[0]!.code === 'invalid_type' && b[0]!.path.length === 0));
    if (meant.length === 1) {
      for (const sub of meant[0]!) flattenIssue(sub, path, out);
      return;
    }
  }
  out.push({ path, message: issue.message });
}

/**
 * Validate a parsed YAML value (plain JS data). On success, the normalized
 * Config; otherwise every issue found, in document order of discovery.
 */
export function validateConfig(input: unknown): ValidationResult {
  const r = configSchema.safeParse(input, { error: errorMap });
  if (r.success) return { ok: true, config: r.data };
  const issues: SchemaIssue[] = [];
  for (const issue of r.error.issues) flattenIssue(issue, [], issues);
  return { ok: false, issues };
}

/** JSON Schema (draft 2020-12) of the configuration file as written, for editors and tools. */
export function configJsonSchema(): object {
  return z.toJSONSchema(configSchema, { io: 'input' });
}

/** The text of schema/porttrig.schema.json: configJsonSchema() as pretty JSON with a final newline. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`;
}
