/**
 * What one scrape reads from the data path: per-rule and per-packet counters
 * (per-CPU maps, summed), live sessions and flows, map fill, and the programs'
 * run statistics. Everything is read when Prometheus asks, never polled into
 * copies, so counters kept in the kernel carry on across daemon restarts.
 */
import {
  DIR_IN, DIRECTIONS, FlowKeyCodec, PT_MAX_RULES, RULE_COUNTERS, RULE_ENABLED, VERDICTS, type RuleCounter,
} from '../bpf/abi.js';
import type { RawMap } from '../bpf/map.js';
import { monotonicNs, type PorttrigState } from '../core/state.js';
import { sessionExpired } from '../core/sweep.js';
import { progRunStats } from './progstats.js';

/** Offset of `dir` in a pt_flow_key (from the codec the ABI test proves). */
const FLOW_KEY_DIR = FlowKeyCodec.fields.find((f) => f.name === 'dir')!.offset;

export type Direction = (typeof DIRECTIONS)[number];
export type Verdict = (typeof VERDICTS)[number];

/** A program of the data path, by its object name and file descriptor. */
export interface ProgramRef { name: string; fd: number }
/** An interface the data path should be attached to. */
export interface InterfaceRef { name: string; program: string }

/** Where a scrape reads from. */
export interface SnapshotSource {
  state: PorttrigState;
  /** The daemon's loaded programs (their run statistics). */
  programs(): ProgramRef[];
  /** Interfaces porttrig attaches to, and the program each should run. */
  interfaces(): InterfaceRef[];
  /** Is a porttrig program attached to clsact ingress of `ifname`? */
  isAttached(ifname: string): boolean;
  /** The data path's clock (defaults to pt_now()). */
  clock?: () => bigint;
}

export interface MapFill { map: string; entries: number; capacity: number }

/** One scrape's reading of the data path. */
export interface DatapathSnapshot {
  /** Rules in use: id -> name. */
  rules: Map<number, string>;
  /** Per-rule counters summed over CPUs, by rule id. */
  ruleCounters: Map<number, Record<RuleCounter, number>>;
  /** Live (unexpired, enabled) sessions by rule id; every rule in use has an entry. */
  sessionsActive: Map<number, number>;
  /** Accepted flows (one per connection, not per direction). */
  flowsActive: number;
  packets: { direction: Direction; verdict: Verdict; value: number }[];
  maps: MapFill[];
  programs: { program: string; runTimeNs: bigint; runCount: bigint }[];
  attached: { interface: string; program: string; attached: boolean }[];
}

/** Count a map's entries with batch lookups (hash maps have no cheaper count). */
function countEntries(m: RawMap, keep: (key: Buffer) => boolean = () => true): number {
  let n = 0;
  for (const [k] of m.entries()) if (keep(k)) n++;
  return n;
}

/**
 * Read everything a scrape exports. Not atomic across maps: each map is read
 * once, in batches, while the data path keeps running.
 */
export function readSnapshot(src: SnapshotSource): DatapathSnapshot {
  const { state } = src;
  const maps = state.maps;
  const now = (src.clock ?? monotonicNs)();

  const rules = state.ruleNames();
  // One batch read of the whole counter array is cheaper than 8 lookups per
  // rule once there are more than a handful of rules, and costs ~1 ms at most.
  const sums = maps.ruleStats.sumAll();
  const ruleCounters = new Map<number, Record<RuleCounter, number>>();
  for (const id of rules.keys()) {
    const c = {} as Record<RuleCounter, number>;
    RULE_COUNTERS.forEach((name, i) => { c[name] = Number(sums[id * RULE_COUNTERS.length + i] ?? 0n); });
    ruleCounters.set(id, c);
  }

  const settings = state.ruleSettings();
  const sessionsActive = new Map<number, number>([...rules.keys()].map((id) => [id, 0]));
  let sessionEntries = 0;
  for (const [k, v] of maps.sessions.entries()) {
    sessionEntries++;
    const rule = settings.get(k.rule);
    if (!rule || !(rule.flags & RULE_ENABLED) || sessionExpired(v, rule, now)) continue;
    sessionsActive.set(k.rule, (sessionsActive.get(k.rule) ?? 0) + 1);
  }

  let flowEntries = 0;
  const flowsActive = countEntries(maps.flows.raw, (k) => { flowEntries++; return k[FLOW_KEY_DIR] === DIR_IN; });

  const pkt = maps.pktStats.sumAll();
  const packets = DIRECTIONS.flatMap((direction, d) => VERDICTS.map((verdict, v) => ({
    direction, verdict, value: Number(pkt[d * VERDICTS.length + v] ?? 0n),
  })));

  const fill = (map: string, raw: RawMap, entries: number): MapFill => ({ map, entries, capacity: raw.info.maxEntries });
  const mapFill = [
    fill('sessions', maps.sessions.raw, sessionEntries),
    fill('flows', maps.flows.raw, flowEntries),
    fill('host_sessions', maps.hostSessions.raw, countEntries(maps.hostSessions.raw)),
    fill('local_addrs', maps.localAddrs.raw, countEntries(maps.localAddrs.raw)),
    fill('lan_nets', maps.lanNets.raw, countEntries(maps.lanNets.raw)),
    // Id 0 means "no rule": PT_MAX_RULES - 1 usable ids.
    { map: 'rules', entries: rules.size, capacity: PT_MAX_RULES - 1 },
  ];

  const programs = src.programs().map((p) => {
    const s = progRunStats(p.fd);
    return { program: p.name, runTimeNs: s.runTimeNs, runCount: s.runCount };
  });
  const attached = src.interfaces().map((i) => ({ interface: i.name, program: i.program, attached: src.isAttached(i.name) }));

  return { rules, ruleCounters, sessionsActive, flowsActive, packets, maps: mapFill, programs, attached };
}

/**
 * readSnapshot(), shared by every metric of one scrape: prom-client calls the
 * collect() of all metrics synchronously, one after the other, so a reading
 * kept until the current task ends serves exactly one scrape. A later scrape
 * (or a collect outside a scrape) reads afresh.
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
