/**
 * porttrig's Prometheus metrics (SPEC 7), registered on a registry of the
 * caller's (never prom-client's global one, so daemons and tests stay apart).
 * Data-path metrics are read in collect(), at scrape time, from the kernel's
 * maps; see snapshot.ts. No label carries a host address.
 */
import { Counter, Gauge, Histogram, collectDefaultMetrics, type Registry } from 'prom-client';
import { FAMILIES, type Family, type RuleCounter } from '../bpf/abi.js';
import { ScrapeReader, type DatapathSnapshot, type SnapshotSource } from './snapshot.js';

/** Nanoseconds per second, as a float divisor. */
export const NS_PER_S = 1e9;

/** Why a session was refused, by the rule counter that records it. */
const REFUSAL_REASONS = [
  ['conflict', 'refused_conflict'],
  ['host_limit', 'refused_host_limit'],
  ['map_full', 'refused_map_full'],
] as const satisfies readonly (readonly [string, RuleCounter])[];

/**
 * Sweep durations in seconds: 100 µs to ~3 s by factors of 4 (a sweep of a
 * few sessions takes well under a millisecond; a full flow table, seconds).
 */
export const SWEEP_BUCKETS_S = [0.0001, 0.0004, 0.0016, 0.0064, 0.0256, 0.1024, 0.4096, 1.6384, 3.2768];

/**
 * prom-client defaults that are gauges named *_total, which `promtool check
 * metrics` rejects; their totals are the sums of nodejs_active_handles,
 * nodejs_active_requests and nodejs_active_resources, which stay.
 */
const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** The metrics the daemon updates itself (everything else is read at scrape). */
export interface PorttrigMetrics {
  sweepDuration: Histogram;
  /** The shared per-scrape reader (exposes how often the maps were read). */
  reader: ScrapeReader;
}

export interface MetricsOptions {
  /** Also register prom-client's process and Node.js metrics. */
  defaultMetrics?: boolean;
  /** Is BPF run-time statistics collection on (porttrig_bpf_stats_enabled)? */
  statsEnabled?: () => boolean;
}

/** A counter whose values come from the kernel: reset and refilled per scrape. */
function kernelCounter<L extends string>(
  registry: Registry, name: string, help: string, labelNames: readonly L[],
  fill: (s: DatapathSnapshot, set: (labels: Record<L, string>, value: number) => void) => void, reader: ScrapeReader,
): Counter<L> {
  return new Counter<L>({
    name, help, labelNames, registers: [registry],
    collect(this: Counter<L>) {
      this.reset();
      fill(reader.get(), (labels, value) => this.inc(labels as never, value));
    },
  });
}

/** A gauge read from the kernel at scrape time; series not set are dropped. */
function kernelGauge<L extends string>(
  registry: Registry, name: string, help: string, labelNames: readonly L[],
  fill: (s: DatapathSnapshot, set: (labels: Record<L, string>, value: number) => void) => void, reader: ScrapeReader,
): Gauge<L> {
  return new Gauge<L>({
    name, help, labelNames, registers: [registry],
    collect(this: Gauge<L>) {
      this.reset();
      fill(reader.get(), (labels, value) => this.set(labels as never, value));
    },
  });
}

/** Per-rule, per-family series of one rule counter (both families always exported). */
const perRule = (c: RuleCounter) => (s: DatapathSnapshot, set: (l: { rule: string; family: Family }, v: number) => void): void => {
  for (const family of FAMILIES) {
    for (const [id, name] of s.rules) set({ rule: name, family }, s.ruleCounters[family].get(id)?.[c] ?? 0);
  }
};

/**
 * Register every porttrig metric on `registry`, reading the data path through
 * `source` at scrape time. Returns the histogram the daemon observes itself.
 */
export function registerMetrics(registry: Registry, source: SnapshotSource, opts: MetricsOptions = {}): PorttrigMetrics {
  const reader = new ScrapeReader(source);
  const counter = <L extends string>(name: string, help: string, labels: readonly L[], fill: Parameters<typeof kernelCounter<L>>[4]) =>
    kernelCounter(registry, name, help, labels, fill, reader);
  const gauge = <L extends string>(name: string, help: string, labels: readonly L[], fill: Parameters<typeof kernelGauge<L>>[4]) =>
    kernelGauge(registry, name, help, labels, fill, reader);

  // `family` (ipv4, ipv6): the counts that differ by address family (SPEC 9). Never an address.
  const RF = ['rule', 'family'] as const;
  counter('porttrig_trigger_hits_total', 'Trigger packets seen from LAN hosts, per rule and address family.', RF, perRule('trigger_hits'));
  counter('porttrig_sessions_opened_total', 'Sessions opened (or taken over) by a trigger, per rule and address family.', RF, perRule('sessions_opened'));
  counter('porttrig_sessions_expired_total', 'Sessions removed after their idle timeout, per rule and address family.', RF, perRule('sessions_expired'));
  counter('porttrig_sessions_refused_total', 'Triggers that could not open a session, per rule, address family and reason (conflict, host_limit, map_full).',
    ['rule', 'family', 'reason'], (s, set) => {
      for (const family of FAMILIES) {
        for (const [id, name] of s.rules) {
          for (const [reason, c] of REFUSAL_REASONS) set({ rule: name, family, reason }, s.ruleCounters[family].get(id)?.[c] ?? 0);
        }
      }
    });
  counter('porttrig_flows_opened_total', 'Inbound connections accepted through a session, per rule and address family.', RF, perRule('flows_opened'));
  counter('porttrig_flows_refused_total', 'Inbound connections on an open session that could not be added to the flow table (full, or a clashing entry), per rule and address family.', RF, perRule('flows_refused'));
  counter('porttrig_packets_total', 'Packets seen by the data path, by address family, interface side (lan, wan) and verdict.', ['family', 'direction', 'verdict'],
    (s, set) => { for (const p of s.packets) set({ family: p.family, direction: p.direction, verdict: p.verdict }, p.value); });
  counter('porttrig_xdp_packets_total', 'Packets seen by the XDP fast path on the WAN (datapath.xdp), by result: redirected (translated by XDP), passed (left to TC), fallback (an established flow\'s packet left to TC because XDP cannot transmit to its LAN interface).', ['result'],
    (s, set) => { for (const x of s.xdp) set({ result: x.result }, x.value); });
  counter('porttrig_bpf_run_time_seconds_total', 'Time the kernel spent running each data path program (needs BPF run-time statistics).', ['program'],
    (s, set) => { for (const p of s.programs) set({ program: p.program }, Number(p.runTimeNs) / NS_PER_S); });
  counter('porttrig_bpf_run_count_total', 'Runs of each data path program, i.e. packets it saw (needs BPF run-time statistics).', ['program'],
    (s, set) => { for (const p of s.programs) set({ program: p.program }, Number(p.runCount)); });

  gauge('porttrig_sessions_active', 'Open (unexpired) sessions, per rule and address family.', RF, (s, set) => {
    for (const family of FAMILIES) for (const [id, name] of s.rules) set({ rule: name, family }, s.sessionsActive[family].get(id) ?? 0);
  });
  gauge('porttrig_flows_active', 'Accepted flows in the flow tables, per address family.', ['family'], (s, set) => {
    for (const family of FAMILIES) set({ family }, s.flowsActive[family]);
  });
  gauge('porttrig_map_entries', 'Entries in each data path map (flows: two per flow, one per direction).', ['map'],
    (s, set) => { for (const m of s.maps) set({ map: m.map }, m.entries); });
  gauge('porttrig_map_capacity', 'Capacity of each data path map.', ['map'],
    (s, set) => { for (const m of s.maps) set({ map: m.map }, m.capacity); });
  gauge('porttrig_datapath_attached', '1 when a porttrig program is attached to the interface, else 0.', ['interface', 'program'],
    (s, set) => { for (const a of s.attached) set({ interface: a.interface, program: a.program }, a.attached ? 1 : 0); });
  gauge('porttrig_interface_present', '1 when the configured interface exists, 0 while it is gone (e.g. ppp0 between a disconnect and the redial).', ['interface'],
    (s, set) => { for (const a of s.attached) set({ interface: a.interface }, a.present ? 1 : 0); });

  const statsEnabled = opts.statsEnabled ?? (() => false);
  new Gauge({
    name: 'porttrig_bpf_stats_enabled', help: '1 while the daemon keeps BPF run-time statistics enabled, else 0.', registers: [registry],
    collect(this: Gauge) { this.set(statsEnabled() ? 1 : 0); },
  });

  const sweepDuration = new Histogram({
    name: 'porttrig_sweep_duration_seconds', help: 'Duration of one sweep of expired sessions and flows.',
    buckets: SWEEP_BUCKETS_S, registers: [registry],
  });

  if (opts.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);
  }
  return { sweepDuration, reader };
}
