/**
 * What one scrape reads from the data path: per-rule and per-packet counters
 * (per-CPU maps, summed), live sessions and flows, map fill, and the programs'
 * run statistics. Everything is read when Prometheus asks, never polled into
 * copies, so counters kept in the kernel carry on across daemon restarts.
 */
import {
  DIR_IN, DIRECTIONS, FAMILIES, FlowKeyCodec, Flow6KeyCodec, PT_MAX_RULES, RULE_COUNTERS, RULE_ENABLED, SessionCodec, SessionKeyCodec,
  Session6Codec, Session6KeyCodec, VERDICTS, XDP_COUNTERS, familyIndex, pktStatsIndex, ruleStatsIndex, type Family, type PtRule, type RuleCounter,
} from '../bpf/abi.js';
import type { StructCodec } from '../bpf/struct.js';
import type { PerCpuCounters, RawMap } from '../bpf/map.js';
import type { DatapathMaps } from '../bpf/datapath.js';
import { monotonicNs, readRuleNames } from '../core/state.js';
import { sessionExpired } from '../core/sweep.js';
import { progRunStats } from './progstats.js';
import type { EntryCounts } from '../daemon/sweeper.js';

/** Offset of a field, from the codecs that test/bpf/abi.test.ts proves against the BTF. */
const offsetOf = (c: StructCodec<object>, field: string): number => {
  const f = c.fields.find((x) => x.name === field);
  if (!f) throw new Error(`${c.cName} has no field ${field}`);
  return f.offset;
};
const FLOW_KEY_DIR = offsetOf(FlowKeyCodec, 'dir');
const FLOW6_KEY_DIR = offsetOf(Flow6KeyCodec, 'dir');
const SESSION_KEY_RULE = offsetOf(SessionKeyCodec, 'rule');
const SESSION_LAST_SEEN = offsetOf(SessionCodec, 'last_seen_ns');
const SESSION6_KEY_RULE = offsetOf(Session6KeyCodec, 'rule');
const SESSION6_LAST_SEEN = offsetOf(Session6Codec, 'last_seen_ns');
const U32_BYTES = 4;
const U64_BYTES = 8;

export type Direction = (typeof DIRECTIONS)[number];
export type Verdict = (typeof VERDICTS)[number];

/** A program of the data path, by its object name and file descriptor. */
export interface ProgramRef { name: string; fd: number }
/** An interface the data path should be attached to; `present`: it exists now (default true). */
export interface InterfaceRef { name: string; program: string; present?: boolean }

/** Where a scrape reads from. */
export interface SnapshotSource {
  /** The data path's maps (loaded or adopted). */
  maps: DatapathMaps;
  /** The daemon's loaded programs (their run statistics). */
  programs(): ProgramRef[];
  /** Interfaces porttrig attaches to, and the program each should run. */
  interfaces(): InterfaceRef[];
  /** Is a porttrig program attached to clsact ingress of `ifname`? */
  isAttached(ifname: string): boolean;
  /** The data path's clock (defaults to pt_now()). */
  clock?: () => bigint;
  /** The XDP fast path's counters (pt_xdp_stats of the daemon's object), when it is loaded. */
  xdpStats?: () => PerCpuCounters | null;
  /**
   * Entry counts kept by a sweeper (the daemon's kernel sweep): read instead
   * of walking pt_sessions, pt_flows and pt_host_sessions. Without it (tools
   * reading pinned maps with no daemon), the scrape walks them.
   */
  counts?: () => EntryCounts | null;
}

export interface MapFill { map: string; entries: number; capacity: number }

/** One scrape's reading of the data path. */
export interface DatapathSnapshot {
  /** Rules in use: id -> name. */
  rules: Map<number, string>;
  /** Per-rule counters summed over CPUs, by address family and rule id. */
  ruleCounters: Record<Family, Map<number, Record<RuleCounter, number>>>;
  /** Live (unexpired, enabled) sessions by family and rule id; every rule in use has an entry in each. */
  sessionsActive: Record<Family, Map<number, number>>;
  /** Accepted flows per family (one per connection, not per direction). */
  flowsActive: Record<Family, number>;
  packets: { family: Family; direction: Direction; verdict: Verdict; value: number }[];
  maps: MapFill[];
  programs: { program: string; runTimeNs: bigint; runCount: bigint }[];
  attached: { interface: string; program: string; attached: boolean; present: boolean }[];
  /** The XDP fast path's packet counters (enum pt_xdp_counter); empty when it is not loaded. */
  xdp: { result: (typeof XDP_COUNTERS)[number]; value: number }[];
}

/**
 * Count a map's entries (hash maps keep no count user space can read).
 * XXX: a batch walk copies every entry and visits every bucket (~0.3 s for a
 * full flow table of the default 2 x 262144 entries); a BPF map iterator
 * calling bpf_map_sum_elem_count() (kernel >= 6.6) would make it O(1).
 */
function countEntries(m: RawMap, keep?: (keys: Buffer, i: number) => boolean): number {
  let n = 0;
  for (const { keys, count } of m.batches()) {
    if (!keep) { n += count; continue; }
    for (let i = 0; i < count; i++) if (keep(keys, i)) n++;
  }
  return n;
}

/** Sum of one per-CPU u64 slot array, as a Number (exact below 2^53). */
function sumCpus(values: Buffer, off: number, ncpu: number): number {
  let s = 0;
  for (let c = 0; c < ncpu; c++) s += Number(values.readBigUInt64LE(off + c * U64_BYTES));
  return s;
}

/** Runs of consecutive ids, e.g. [1,2,3,7] -> [[1,3],[7,7]]. */
export function idRuns(ids: Iterable<number>): [number, number][] {
  const runs: [number, number][] = [];
  for (const id of [...ids].sort((a, b) => a - b)) {
    const last = runs[runs.length - 1];
    if (last && id === last[1] + 1) last[1] = id;
    else runs.push([id, id]);
  }
  return runs;
}

/**
 * Per-rule counters of the rules in use, summed over CPUs: one batch lookup
 * per run of consecutive ids (ids are handed out lowest first, so usually
 * one), reading only the counters of those ids.
 */
function readRuleCounters(raw: RawMap, ids: Iterable<number>, family: Family): Map<number, Record<RuleCounter, number>> {
  const out = new Map<number, Record<RuleCounter, number>>();
  const per = RULE_COUNTERS.length;
  for (const [first, last] of idRuns(ids)) {
    const after = Buffer.alloc(U32_BYTES);
    after.writeUInt32LE(ruleStatsIndex(familyIndex(family), first, 0) - 1);  // id >= 1, so never below 0
    let id = first;
    let k = 0;
    let c = {} as Record<RuleCounter, number>;
    for (const { values, count } of raw.batches({ after, limit: (last - first + 1) * per })) {
      for (let i = 0; i < count; i++) {
        c[RULE_COUNTERS[k]!] = sumCpus(values, i * raw.valueBytes, raw.ncpu);
        if (++k === per) { out.set(id++, c); c = {} as Record<RuleCounter, number>; k = 0; }
      }
    }
  }
  return out;
}

/** Live sessions per rule: enabled rule, not idle past its timeout (`at`: offsets of the key's rule and the value's last_seen_ns). */
function readSessions(raw: RawMap, settings: ReadonlyMap<number, PtRule>, now: bigint, at: { rule: number; lastSeen: number }): { entries: number; active: Map<number, number> } {
  const active = new Map<number, number>();
  let entries = 0;
  for (const { keys, values, count } of raw.batches()) {
    entries += count;
    for (let i = 0; i < count; i++) {
      const id = keys.readUInt32LE(i * raw.info.keySize + at.rule);
      const rule = settings.get(id);
      if (!rule || !(rule.flags & RULE_ENABLED)) continue;
      if (sessionExpired({ last_seen_ns: values.readBigUInt64LE(i * raw.valueBytes + at.lastSeen) }, rule, now)) continue;
      active.set(id, (active.get(id) ?? 0) + 1);
    }
  }
  return { entries, active };
}

/**
 * Read everything a scrape exports. Not atomic across maps: each map is read
 * once, in batches, while the data path keeps running.
 */
export function readSnapshot(src: SnapshotSource): DatapathSnapshot {
  const { maps } = src;
  const now = (src.clock ?? monotonicNs)();

  const rules = readRuleNames(maps);
  const ruleCounters = {
    ipv4: readRuleCounters(maps.ruleStats.raw, rules.keys(), 'ipv4'),
    ipv6: readRuleCounters(maps.ruleStats.raw, rules.keys(), 'ipv6'),
  };
  const settings = new Map<number, PtRule>();
  for (const id of rules.keys()) {
    const r = maps.rules.get(id);
    if (r) settings.set(id, r);
  }
  const kept = src.counts?.() ?? null;
  const sessions = kept
    ? { entries: kept.sessionEntries, active: kept.sessionsByRule }
    : readSessions(maps.sessions.raw, settings, now, { rule: SESSION_KEY_RULE, lastSeen: SESSION_LAST_SEEN });
  const sessions6 = kept
    ? { entries: kept.sessionEntries6, active: kept.sessionsByRule6 }
    : readSessions(maps.sessions6.raw, settings, now, { rule: SESSION6_KEY_RULE, lastSeen: SESSION6_LAST_SEEN });
  const perRule = (m: Map<number, number>): Map<number, number> => new Map([...rules.keys()].map((id) => [id, m.get(id) ?? 0]));
  const sessionsActive = { ipv4: perRule(sessions.active), ipv6: perRule(sessions6.active) };

  let flowEntries = kept?.flowEntries ?? 0;
  const flowsLive4 = kept ? kept.flowsLive : countEntries(maps.flows.raw, (keys, i) => {
    flowEntries++;
    return keys[i * maps.flows.raw.info.keySize + FLOW_KEY_DIR] === DIR_IN;
  });
  let flowEntries6 = kept?.flowEntries6 ?? 0;
  const flowsLive6 = kept ? kept.flowsLive6 : countEntries(maps.flows6.raw, (keys, i) => {
    flowEntries6++;
    return keys[i * maps.flows6.raw.info.keySize + FLOW6_KEY_DIR] === DIR_IN;
  });
  const flowsActive = { ipv4: flowsLive4, ipv6: flowsLive6 };

  const pkt = maps.pktStats.sumAll();
  const packets = FAMILIES.flatMap((family) => DIRECTIONS.flatMap((direction, d) => VERDICTS.map((verdict, v) => ({
    family, direction, verdict, value: Number(pkt[pktStatsIndex(familyIndex(family), d, v)] ?? 0n),
  }))));

  const fill = (map: string, raw: RawMap, entries: number): MapFill => ({ map, entries, capacity: raw.info.maxEntries });
  const mapFill = [
    fill('sessions', maps.sessions.raw, sessions.entries),
    fill('flows', maps.flows.raw, flowEntries),
    fill('host_sessions', maps.hostSessions.raw, kept ? kept.hostEntries : countEntries(maps.hostSessions.raw)),
    fill('local_addrs', maps.localAddrs.raw, countEntries(maps.localAddrs.raw)),
    fill('lan_nets', maps.lanNets.raw, countEntries(maps.lanNets.raw)),
    // The IPv6 maps (SPEC 9), named like the IPv4 ones with a 6.
    fill('sessions6', maps.sessions6.raw, sessions6.entries),
    fill('flows6', maps.flows6.raw, flowEntries6),
    fill('host_sessions6', maps.hostSessions6.raw, kept ? kept.hostEntries6 : countEntries(maps.hostSessions6.raw)),
    fill('local_addrs6', maps.localAddrs6.raw, countEntries(maps.localAddrs6.raw)),
    fill('lan_nets6', maps.lanNets6.raw, countEntries(maps.lanNets6.raw)),
    // Id 0 means "no rule": PT_MAX_RULES - 1 usable ids.
    { map: 'rules', entries: rules.size, capacity: PT_MAX_RULES - 1 },
  ];

  const programs = src.programs().map((p) => {
    const s = progRunStats(p.fd);
    return { program: p.name, runTimeNs: s.runTimeNs, runCount: s.runCount };
  });
  const attached = src.interfaces().map((i) => ({ interface: i.name, program: i.program, attached: src.isAttached(i.name), present: i.present ?? true }));

  const xs = src.xdpStats?.()?.sumAll() ?? null;
  const xdp = xs ? XDP_COUNTERS.map((result, i) => ({ result, value: Number(xs[i] ?? 0n) })) : [];

  return { rules, ruleCounters, sessionsActive, flowsActive, packets, maps: mapFill, programs, attached, xdp };
}

/**
 * readSnapshot(), shared by every metric of one scrape: prom-client's
 * registry.metrics() calls the collect() of all metrics synchronously, one
 * after the other, so a reading dropped at the next microtask serves exactly
 * one scrape. A later scrape (or a collect outside a scrape) reads afresh; if
 * prom-client ever awaited between collects, each would read for itself:
 * slower, never stale.
 */
export class ScrapeReader {
  private current: DatapathSnapshot | null = null;
  /** How many times the data path was read (for tests and the bench). */
  reads = 0;

  constructor(private readonly src: SnapshotSource) {}

  get(): DatapathSnapshot {
    if (!this.current) {
      this.current = readSnapshot(this.src);
      this.reads++;
      queueMicrotask(() => { this.current = null; });
    }
    return this.current;
  }
}
