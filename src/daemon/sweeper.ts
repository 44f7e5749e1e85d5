/**
 * The daemon's sweep schedule: runs the kernel sweep (pt_sweep, through
 * Datapath.sweepAsync on a libuv worker thread) on the session table and on
 * the flow table, each when it is due (core/sweep.ts nextWalkAt(): deadlines
 * first, counts at a cost-bounded interval), one walk at a time. Keeps the counts the last walks found, which the metrics and
 * `porttrig status` read instead of the maps. Never prints: results go to
 * the injected callbacks.
 */
import { SWEEP_FLOWS, SWEEP_FLOWS6, SWEEP_RECOUNT, SWEEP_SESSIONS, SWEEP_SESSIONS6 } from '../bpf/abi.js';
import type { SweepRequest, SweepRun } from '../bpf/datapath.js';
import { DEFAULT_SWEEP_POLICY, MIN_FLOW_TIMER_NS, nextWalkAt, type SweepPolicy, type WalkRecord } from '../core/sweep.js';

/** Entry counts as the last walks of each table found them (after their removals). */
export interface EntryCounts {
  /** Live IPv4 sessions by rule id (ids with none are absent). */
  sessionsByRule: Map<number, number>;
  /** pt_sessions entries (live, and expired ones the data path has not met yet). */
  sessionEntries: number;
  /** pt_host_sessions entries. */
  hostEntries: number;
  /** Live IPv4 flows (one per connection). */
  flowsLive: number;
  /** pt_flows entries (two per flow). */
  flowEntries: number;
  /** The same for IPv6: pt6_sessions, pt6_host_sessions, pt6_flows. */
  sessionsByRule6: Map<number, number>;
  sessionEntries6: number;
  hostEntries6: number;
  flowsLive6: number;
  flowEntries6: number;
}

/** The earlier of two deadlines, 0n meaning none. */
const earliest = (a: bigint, b: bigint): bigint => (a === 0n ? b : b === 0n ? a : a < b ? a : b);

export type Table = 'sessions' | 'flows';

export interface SweepSchedulerOptions {
  /** Runs pt_sweep off the event loop. */
  run: (req: SweepRequest) => Promise<SweepRun>;
  /** Map clock (CLOCK_MONOTONIC + CLOCK_BIAS_NS). */
  clock: () => bigint;
  /** The shortest idle timeout of an enabled rule (ns): no session made after a walk expires sooner. */
  minIdleNs: () => bigint;
  /** A walk finished: its table, its run, and how long it took. */
  onWalk?: (table: Table, run: SweepRun, seconds: number) => void;
  /** A walk failed (it is tried again at the next due time). */
  onError?: (table: Table, error: unknown) => void;
  policy?: SweepPolicy;
  /** The caller polls this often (ms): poll() arms a timer for a table due sooner (0: never). */
  wakeWithinMs?: number;
}

const NS_PER_S = 1e9;

export class SweepScheduler {
  private readonly last: Record<Table, WalkRecord | null> = { sessions: null, flows: null };
  private readonly running: Record<Table, Promise<void> | null> = { sessions: null, flows: null };
  private readonly dirty: Record<Table, boolean> = { sessions: true, flows: true };
  private counts: EntryCounts = {
    sessionsByRule: new Map(), sessionEntries: 0, hostEntries: 0, flowsLive: 0, flowEntries: 0,
    sessionsByRule6: new Map(), sessionEntries6: 0, hostEntries6: 0, flowsLive6: 0, flowEntries6: 0,
  };
  private readonly known: Record<Table, boolean> = { sessions: false, flows: false };
  /** Wall clock (ms) when each table's last walk finished. */
  private readonly doneAt: Record<Table, number | null> = { sessions: null, flows: null };
  /** A one-shot poll at a deadline that falls between the caller's polls (see poll()). */
  private wake: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly opts: SweepSchedulerOptions) {}

  /** The counts of the last walks; null until each table has been walked once. */
  entryCounts(): EntryCounts | null {
    return this.known.sessions && this.known.flows ? this.counts : null;
  }

  /** When the older of the two counts was taken (wall clock), null before both tables were walked. */
  countedAt(): Date | null {
    const { sessions, flows } = this.doneAt;
    return sessions === null || flows === null ? null : new Date(Math.min(sessions, flows));
  }

  /** Walk both tables at the next poll (rules changed, a session was closed by hand). */
  invalidate(): void {
    this.dirty.sessions = true;
    this.dirty.flows = true;
  }

  /** When the table is due next (map clock; 0n: now). */
  dueAt(table: Table): bigint {
    if (this.dirty[table]) return 0n;
    return nextWalkAt(this.last[table], table === 'sessions' ? this.opts.minIdleNs() : MIN_FLOW_TIMER_NS, this.opts.policy ?? DEFAULT_SWEEP_POLICY);
  }

  /**
   * Start a walk that is due, unless one is running: one walk at a time, so
   * that a walk, which holds its CPU in the kernel until it is done, leaves
   * the other CPUs of a small gateway to the event loop (measured on 2 vCPUs:
   * with both tables walked in parallel the control socket waited for them).
   * Sessions first. Cheap: call it often (every 100-250 ms). When nothing
   * is due but a table falls due within `wakeWithinMs`, a one-shot timer
   * polls again at that moment, so that an expiry deadline is met to the
   * millisecond rather than up to one poll interval late.
   */
  poll(): void {
    if (this.closed || this.running.sessions || this.running.flows) return;
    const now = this.opts.clock();
    let soonest: bigint | null = null;
    for (const table of ['sessions', 'flows'] as const) {
      const due = this.dueAt(table);
      if (now >= due) {
        this.start(table, now);
        return;
      }
      if (soonest === null || due < soonest) soonest = due;
    }
    const wakeWithinMs = this.opts.wakeWithinMs ?? 0;
    if (soonest !== null && this.wake === null && wakeWithinMs > 0) {
      const ms = Math.ceil(Number(soonest - now) / 1e6);
      if (ms < wakeWithinMs) {
        this.wake = setTimeout(() => { this.wake = null; this.poll(); }, ms);
        this.wake.unref();
      }
    }
  }

  /** No walk starts after this (walks under way finish: await idle()). */
  close(): void {
    this.closed = true;
    if (this.wake) clearTimeout(this.wake);
    this.wake = null;
  }

  /** Walk both tables now, one after the other (after walks under way), and resolve when done. */
  async sweepNow(): Promise<void> {
    await this.idle();
    this.invalidate();
    for (let i = 0; i < 2; i++) {
      this.poll();
      await this.idle();
    }
  }

  /** Resolves when no walk is running. */
  async idle(): Promise<void> {
    while (this.running.sessions || this.running.flows) {
      await Promise.all([this.running.sessions, this.running.flows]);
    }
  }

  private start(table: Table, now: bigint): void {
    this.dirty[table] = false;
    // One walk per table covers both families: the IPv4 map, then the IPv6 one.
    const what = table === 'sessions' ? SWEEP_SESSIONS | SWEEP_SESSIONS6 | SWEEP_RECOUNT : SWEEP_FLOWS | SWEEP_FLOWS6;
    const t0 = process.hrtime.bigint();
    this.running[table] = this.opts.run({ now, what }).then((r) => {
      const costNs = process.hrtime.bigint() - t0;
      if (table === 'sessions') {
        this.last.sessions = { at: now, next: earliest(r.sessions_next_ns, r.sessions6_next_ns), costNs };
        this.counts = {
          ...this.counts, sessionsByRule: r.liveByRule ?? new Map(),
          sessionEntries: r.sessions - r.sessions_expired - r.sessions_closed, hostEntries: r.hosts,
          sessionsByRule6: r.liveByRule6 ?? new Map(),
          sessionEntries6: r.sessions6 - r.sessions6_expired - r.sessions6_closed, hostEntries6: r.hosts6,
        };
        // kill_flows_on_expiry: flows of the sessions just removed end now.
        if (r.sessions_expired + r.sessions_closed + r.sessions6_expired + r.sessions6_closed > 0) this.dirty.flows = true;
      } else {
        this.last.flows = { at: now, next: earliest(r.flows_next_ns, r.flows6_next_ns), costNs };
        this.counts = {
          ...this.counts, flowsLive: r.flows_live, flowEntries: r.flow_entries, flowsLive6: r.flows6_live, flowEntries6: r.flow6_entries,
        };
      }
      this.known[table] = true;
      this.doneAt[table] = Date.now();
      this.opts.onWalk?.(table, r, Number(costNs) / NS_PER_S);
    }, (e: unknown) => {
      // Not again before the next regular interval: a failing walk must not spin.
      this.last[table] = { at: now, next: 0n, costNs: process.hrtime.bigint() - t0 };
      this.opts.onError?.(table, e);
    }).finally(() => {
      this.running[table] = null;
      this.poll();  // the other table may be due already (a mass expiry): no need to wait for the timer
    });
  }
}
