/**
 * Differential test of the data path: random packet sequences (with clock
 * steps, daemon sweeps, reloads and lost flow entries) run through the real
 * programs with BPF_PROG_TEST_RUN on simulated time (PT_OPT_TEST_CLOCK) and
 * through the reference model of test/model/datapath-model.ts. After every
 * packet the TC verdict, the output bytes (built independently from the
 * model's decision) and the whole of pt_sessions, pt_host_sessions, pt_flows,
 * pt_frags, pt_reclaim_state, pt_rule_stats and pt_pkt_stats must agree.
 * Sweeps run the real PorttrigState.sweep() (the kernel's pt_sweep) on the maps
 * and DatapathModel.sweep() on the model.
 *
 * A divergence is shrunk (greedy removal of events, each attempt on a fresh
 * object) and printed with its seed, the shortest failing sequence, a JSON
 * file and the commands that replay it. Knobs (environment):
 *   PT_DIFF_SEEDS=1,2,3,4 | random   seeds (each its own limits and hosts)
 *   PT_DIFF_PACKETS=25000            packets per seed
 *   PT_DIFF_TIME=S                   keep running further seeds for S seconds (make fuzz)
 *   PT_DIFF_KEEP=i,j,...             with one seed: only these events of its sequence
 *   PT_DIFF_REPLAY=FILE.json         run exactly the events of a file a failure wrote
 *   PT_DIFF_SHRINK_S=180             time budget of the shrinking
 *   PT_DIFF_TRACE=1                  print every event as it runs (replays)
 * Nothing leaves the kernel's test run: no traffic is sent anywhere.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules, type CompiledRules } from '../../src/rules/compile.js';
import { PorttrigState } from '../../src/core/state.js';
import { CLOCK_BIAS_NS, DIRECTIONS, RECLAIM_BATCH, RULE_COUNTERS, VERDICTS } from '../../src/bpf/abi.js';

/** See DiffRun.syncReclaimFreed(): the one tolerance of the comparison. */
const RECLAIM_FREED_ORDER_DEPENDENT = true;
import type { RawMap } from '../../src/bpf/map.js';
import { TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC, bpfSkipReason, makeTestDatapath, type TestDatapath } from '../helpers/bpffs.js';
import { describe as describeFrame, verifyChecksums } from '../helpers/packet.js';
import { DatapathModel, type Act, type ModelConfig, type ModelMap, type Outcome } from '../model/datapath-model.js';
import { buildFrame, describeDesc, expectedFrame } from '../model/frames.js';
import {
  Generator, INITIALLY_DISABLED, RULES, WAN, WAN_IFINDEX, WAN_PORTS_USED, configForSeed, rulesWith,
  type DiffConfig, type DiffEvent,
} from '../model/generator.js';

const SKIP = bpfSkipReason();

const ACT_RETVAL: Record<Act, number> = { unspec: TC_ACT_UNSPEC, shot: TC_ACT_SHOT, redirect: TC_ACT_REDIRECT };
const RETVAL_NAME: Record<number, string> = { [TC_ACT_UNSPEC]: 'TC_ACT_UNSPEC', [TC_ACT_SHOT]: 'TC_ACT_SHOT', [TC_ACT_REDIRECT]: 'TC_ACT_REDIRECT' };
const ENOENT = 2;
/** The clock starts an hour after the bias, so that "long ago" is representable. */
const CLOCK_START = CLOCK_BIAS_NS + 3600n * 1_000_000_000n;

// --- reading the kernel's maps fast -----------------------------------------------------

/** One BPF_MAP_LOOKUP_BATCH of a whole (small) map into buffers allocated once. */
class MapReader {
  readonly keys: Buffer;
  readonly values: Buffer;
  private readonly count = Buffer.alloc(4);
  private readonly out: Buffer;
  readonly keySize: number;
  readonly valueBytes: number;

  constructor(readonly raw: RawMap, private readonly capacity = raw.info.maxEntries, private readonly after: Buffer | null = null) {
    this.keySize = raw.info.keySize;
    this.valueBytes = raw.valueBytes;
    this.keys = Buffer.alloc(capacity * this.keySize);
    this.values = Buffer.alloc(capacity * this.valueBytes);
    this.out = Buffer.alloc(Math.max(8, this.keySize));
  }

  /** Read every entry (or `capacity` from `after`); the number read. */
  read(): number {
    this.count.writeUInt32LE(this.capacity);
    const r = ffi.mapLookupBatch(this.raw.fd, this.after, this.out, this.keys, this.values, this.count);
    if (r < 0 && r !== -ENOENT) throw new Error(`${this.raw.name}: lookup_batch: errno ${-r}`);
    const n = this.count.readUInt32LE();
    // A hash map's walk that stops before its end (r 0) did not see every entry.
    if (r === 0 && !this.after && n === this.capacity && this.raw.info.maxEntries > this.capacity) {
      throw new Error(`${this.raw.name}: more than ${this.capacity} entries, the reader's capacity`);
    }
    return n;
  }
}

/** Sum of a per-CPU u64 value over CPUs (counts stay far below 2^53). */
function perCpuSum(values: Buffer, off: number, ncpu: number): number {
  let s = 0;
  for (let c = 0; c < ncpu; c++) s += values.readUInt32LE(off + 8 * c) + values.readUInt32LE(off + 8 * c + 4) * 0x1_0000_0000;
  return s;
}

interface Difference { aspect: string; detail: string }

/**
 * Compare a kernel hash or array map with a model map, entry by entry on the
 * bytes; entries whose value `ignore` accepts count as absent. The decoded
 * differences, or null.
 */
function compareMap<K, V>(rd: MapReader, m: ModelMap<K, V>, ignore?: (v: V) => boolean): string | null {
  const n = rd.read();
  let matched = 0;
  for (let i = 0; i < n; i++) {
    const e = m.entries.get(rd.keys.toString('latin1', i * rd.keySize, (i + 1) * rd.keySize));
    const off = i * rd.valueBytes;
    if (!e || rd.values.compare(e.bytes, 0, e.bytes.length, off, off + e.bytes.length) !== 0) return explainMap(rd, n, m, ignore);
    matched++;
  }
  return matched === m.size ? null : explainMap(rd, n, m, ignore);
}

const show = (v: unknown): string => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x));

/** The differences of a map, decoded, one line each. Null when there are none (but ignored ones). */
function explainMap<K, V>(rd: MapReader, n: number, m: ModelMap<K, V>, ignore?: (v: V) => boolean): string | null {
  const gone = (v: V | undefined): boolean => v === undefined || (ignore?.(v) ?? false);
  const kernel = new Map<string, { key: K; value: V; bytes: Buffer }>();
  for (let i = 0; i < n; i++) {
    const id = rd.keys.toString('latin1', i * rd.keySize, (i + 1) * rd.keySize);
    const off = i * rd.valueBytes;
    kernel.set(id, {
      key: m.keyCodec.parse(rd.keys, i * rd.keySize), value: m.valueCodec.parse(rd.values, off),
      bytes: Buffer.from(rd.values.subarray(off, off + m.valueCodec.size)),
    });
  }
  const lines: string[] = [];
  for (const [id, k] of kernel) {
    const e = m.entries.get(id);
    if (gone(k.value) && gone(e?.value)) continue;
    if (!e || gone(e.value)) lines.push(`  only in the kernel: ${show(k.key)} = ${show(k.value)}`);
    else if (gone(k.value) || !e.bytes.equals(k.bytes)) {
      // Raw bytes, so that a difference the codec does not show (padding) is not lost.
      const same = show(k.value) === show(e.value) ? ` (bytes kernel ${k.bytes.toString('hex')}, model ${e.bytes.toString('hex')})` : '';
      lines.push(`  ${show(k.key)}:${same}\n    kernel ${show(k.value)}\n    model  ${show(e.value)}`);
    }
  }
  for (const [id, e] of m.entries) {
    if (!kernel.has(id) && !gone(e.value)) lines.push(`  only in the model: ${show(e.key)} = ${show(e.value)}`);
  }
  return lines.length ? lines.join('\n') : null;
}

// --- one run ---------------------------------------------------------------------------------

/**
 * What PorttrigState.applyRules() leaves in the maps of a fresh object, in a
 * fraction of its time: the fresh maps are zeroed, so only the rules, their
 * names and the non-empty port slots need writing (applyRules() formats all
 * 131072 slots, ~0.3 s; a shrinking loads hundreds of objects). Reloads during
 * a run go through applyRules() itself.
 */
function writeRulesFresh(f: TestDatapath, c: CompiledRules): void {
  const maps = f.dp.maps;
  maps.ruleNames.setMany([...c.ids].map(([name, id]) => [id, { name }] as const));
  maps.rules.setMany([...c.rules]);
  maps.ports.setMany([...c.ports]);
}

/**
 * A reload's effect on the maps, as PorttrigState.applyRules() leaves them,
 * but writing only the entries that change (applyRules() rewrites all 131072
 * port slots, ~0.2 s a reload): rule settings, and port slots that differ
 * between the old and the new tables. Names and ids stay (same rules).
 */
function writeRulesChanged(f: TestDatapath, before: CompiledRules, after: CompiledRules): void {
  const maps = f.dp.maps;
  const empty = { trigger: [0, 0, 0, 0], open_rule: 0, open_lan_port: 0, lan_port_refs: 0 };
  maps.rules.setMany([...after.rules]);
  const slots = new Set([...before.ports.keys(), ...after.ports.keys()]);
  const changed = [...slots]
    .map((i) => [i, after.ports.get(i) ?? empty] as const)
    .filter(([i, p]) => JSON.stringify(p) !== JSON.stringify(before.ports.get(i) ?? empty));
  if (changed.length) maps.ports.setMany(changed);
}

/** A change to the model's configuration: the identity, but for the self-test. */
type Tweak = (c: ModelConfig) => ModelConfig;

/** The model's view of a run's configuration. */
function modelConfig(cfg: DiffConfig, compiled: CompiledRules): ModelConfig {
  return {
    wanAddr: WAN, localAddrs: cfg.localAddrs, lanNets: cfg.lanNets, sessionsPerHost: cfg.sessionsPerHost, limits: cfg.limits,
    ifindex: ffi.ifNameToIndex('lo'), rules: compiled.rules, ports: compiled.ports,
  };
}

/** Packets between two full comparisons of every map in a normal run. */
const CHECK_EVERY = 16;

/**
 * A loaded data path and a model, side by side, on the same clock. After
 * every packet: verdict, bytes, the whole of pt_sessions, pt_host_sessions,
 * pt_flows and pt_reclaim_state, pt_frags after fragments, and the counters
 * the model changed; every CHECK_EVERY packets, after every other event and
 * at the end, every map in full (counters only grow: one that only the kernel
 * changed still shows then). `exact`: every map in full after every packet.
 */
class DiffRun {
  readonly f: TestDatapath;
  readonly model: DatapathModel;
  private readonly state: PorttrigState;
  private ids: Map<string, number>;
  private compiled: CompiledRules;
  private readonly nRules: number;
  private readonly fd: { lan: number; wan: number };
  private readonly readers: {
    sessions: MapReader; hosts: MapReader; flows: MapReader; frags: MapReader; reclaim: MapReader; ruleStats: MapReader; pktStats: MapReader;
  };
  private readonly ncpu: number;
  private readonly outBuf = Buffer.alloc(4096);
  private readonly counterKey = Buffer.alloc(4);
  private readonly counterValue: Buffer;
  private sinceFull = 0;

  /**
   * RECLAIM_FREED_ORDER_DEPENDENT: pt_reclaim.freed counts the callbacks of a
   * scan that removed something, and when a flow's two entries do not name
   * each other (an entry replaced under an orphan's partner key, flows
   * opened in the same nanosecond) whether one callback or two remove them
   * depends on the hash walk's order, which the kernel seeds at random per
   * map. Below the budget (more 0 on both sides, same last_ns/next_ns) the
   * model takes the kernel's tally; the entries removed are still compared.
   */
  private syncReclaimFreed(): void {
    if (!RECLAIM_FREED_ORDER_DEPENDENT) return;
    const rd = this.readers.reclaim;
    const n = rd.read();
    for (let i = 0; i < n; i++) {
      const which = rd.keys.readUInt32LE(i * rd.keySize);
      const off = i * rd.valueBytes;
      const k = { last_ns: rd.values.readBigUInt64LE(off), next_ns: rd.values.readBigUInt64LE(off + 8), freed: rd.values.readUInt32LE(off + 16), more: rd.values.readUInt32LE(off + 20) };
      const mv = this.model.reclaimState.get(which);
      if (!mv || mv.freed === k.freed || k.more !== 0 || mv.more !== 0 || mv.last_ns !== k.last_ns || mv.next_ns !== k.next_ns) continue;
      if (k.freed === 0 || mv.freed === 0 || k.freed >= RECLAIM_BATCH) continue;
      this.model.reclaimState.set(which, { ...mv, freed: k.freed });
    }
  }

  /**
   * `exact`: compare every map after every packet. `tweak`: change the
   * model's configuration (the self-test's deliberately wrong models).
   */
  constructor(readonly cfg: DiffConfig, readonly exact = false, tweak: Tweak = (c) => c) {
    this.f = makeTestDatapath({ testClock: true, limits: cfg.limits });
    try {
      const compiled = compileRules(rulesWith(INITIALLY_DISABLED));
      this.compiled = compiled;
      this.ids = compiled.ids;
      this.nRules = RULES.length;
      writeRulesFresh(this.f, compiled);
      this.f.state.setRuntime(WAN, WAN_IFINDEX, cfg.sessionsPerHost);
      this.f.state.setLocalAddrs(cfg.localAddrs);
      this.f.state.setLanNets(cfg.lanNets);
      this.f.dp.setTestClock(CLOCK_START);
      this.model = new DatapathModel(tweak(modelConfig(cfg, compiled)), CLOCK_START);
      this.state = new PorttrigState(this.f.dp.maps, () => this.model.now, this.f.dp);
      this.fd = { lan: this.f.dp.programFd('lan'), wan: this.f.dp.programFd('wan') };
      const maps = this.f.dp.maps;
      const after = Buffer.alloc(8);
      after.writeUInt32LE(RULE_COUNTERS.length - 1);  // the last counter of rule id 0: the walk starts at rule 1
      this.readers = {
        sessions: new MapReader(maps.sessions.raw),
        hosts: new MapReader(maps.hostSessions.raw),
        flows: new MapReader(maps.flows.raw),
        frags: new MapReader(maps.frags.raw),
        reclaim: new MapReader(maps.reclaim.raw),
        ruleStats: new MapReader(maps.ruleStats.raw, this.nRules * RULE_COUNTERS.length, after),
        pktStats: new MapReader(maps.pktStats.raw),
      };
      this.ncpu = maps.ruleStats.raw.ncpu;
      this.counterValue = Buffer.alloc(maps.ruleStats.raw.valueBytes);
    } catch (e) {
      this.f.cleanup();
      throw e;
    }
  }

  close(): void {
    this.f.cleanup();
  }

  /** Apply one event to both sides; the differences found right after it. */
  apply(ev: DiffEvent): { diffs: Difference[]; outcome?: Outcome; retval?: number } {
    switch (ev.k) {
      case 'tick':
        this.model.advance(BigInt(ev.ns));
        this.f.dp.setTestClock(this.model.now);
        return { diffs: [] };
      case 'sweep':
        this.state.sweep();
        this.model.sweep();
        return { diffs: this.compareMaps() };
      case 'reload': {
        const compiled = compileRules(rulesWith(ev.disabled), this.ids);
        writeRulesChanged(this.f, this.compiled, compiled);
        this.compiled = compiled;
        this.ids = compiled.ids;
        this.model.setRules(compiled.rules, compiled.ports);
        return { diffs: this.compareMaps() };
      }
      case 'drop':
        this.f.dp.maps.flows.delete(ev.key);
        this.model.dropFlowEntry(ev.key);
        return { diffs: this.compareMaps() };
      case 'pkt':
        return this.packet(ev);
    }
  }

  private packet(ev: Extract<DiffEvent, { k: 'pkt' }>): { diffs: Difference[]; outcome: Outcome; retval: number } {
    const frame = buildFrame(ev.p);
    const outcome = this.model.step(ev.p.prog, frame);
    const r = ffi.progTestRun(this.fd[ev.p.prog], { data_in: frame, data_out: this.outBuf });
    if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN failed (${r.ret}) on ${describeDesc(ev.p)}: ${frame.toString('hex')}`);
    const retval = r.retval >>> 0;
    const got = this.outBuf.subarray(0, r.data_size_out);
    const want = expectedFrame(ev.p, frame, outcome.rewrite);
    const diffs: Difference[] = [];
    if (retval !== ACT_RETVAL[outcome.act]) {
      diffs.push({ aspect: 'verdict', detail: `kernel ${RETVAL_NAME[retval] ?? retval}, model ${RETVAL_NAME[ACT_RETVAL[outcome.act]]} (${outcome.verdict}, ${outcome.path})` });
    }
    if (!got.equals(want)) diffs.push({ aspect: 'bytes', detail: hexDiff(got, want) });
    if (outcome.rewrite && outcome.rewrite.kind !== 'l3') {
      // The expected frame itself: every checksum right (it was built from scratch).
      const ck = verifyChecksums(want);
      if (!ck.ip || ck.l4 === false || ck.quotedIp === false) throw new Error(`the expected frame has a bad checksum: ${ck.detail}`);
    }
    if (this.exact || ++this.sinceFull >= CHECK_EVERY) diffs.push(...this.compareMaps());
    else diffs.push(...this.compareTouched((frame.readUInt16BE(20) & 0x3fff) !== 0));
    return { diffs, outcome, retval };
  }

  private check(diffs: Difference[], aspect: string, d: string | null): void {
    if (d) diffs.push({ aspect, detail: d });
  }

  /** The state maps in full, pt_frags after a fragment, and the counters the model changed. */
  private compareTouched(fragment: boolean): Difference[] {
    const m = this.model;
    const rd = this.readers;
    const diffs: Difference[] = [];
    this.check(diffs, 'pt_sessions', compareMap(rd.sessions, m.sessions));
    this.check(diffs, 'pt_host_sessions', compareMap(rd.hosts, m.hosts, (v) => v.sessions === 0));
    this.check(diffs, 'pt_flows', compareMap(rd.flows, m.flows));
    if (fragment) this.check(diffs, 'pt_frags', compareMap(rd.frags, m.frags));
    this.syncReclaimFreed();
    this.check(diffs, 'pt_reclaim_state', compareMap(rd.reclaim, m.reclaimState));
    this.check(diffs, 'pt_rule_stats', this.lookupCounters(this.f.dp.maps.ruleStats.raw, m.touchedRuleStats, m.ruleStats, (i) => this.ruleCounterName(i)));
    this.check(diffs, 'pt_pkt_stats', this.lookupCounters(this.f.dp.maps.pktStats.raw, m.touchedPktStats, m.pktStats, pktCounterName));
    m.touchedRuleStats.clear();
    m.touchedPktStats.clear();
    return diffs;
  }

  /** Every map of the data path's state against the model's. */
  compareMaps(): Difference[] {
    const m = this.model;
    const rd = this.readers;
    const diffs: Difference[] = [];
    this.check(diffs, 'pt_sessions', compareMap(rd.sessions, m.sessions));
    // A count of 0 and no entry are the same (whether the data path keeps the entry is its own choice).
    this.check(diffs, 'pt_host_sessions', compareMap(rd.hosts, m.hosts, (v) => v.sessions === 0));
    this.check(diffs, 'pt_flows', compareMap(rd.flows, m.flows));
    this.check(diffs, 'pt_frags', compareMap(rd.frags, m.frags));
    this.syncReclaimFreed();
    this.check(diffs, 'pt_reclaim_state', compareMap(rd.reclaim, m.reclaimState));
    this.check(diffs, 'pt_rule_stats', this.compareCounters(rd.ruleStats, m.ruleStats, (i) => this.ruleCounterName(i)));
    this.check(diffs, 'pt_pkt_stats', this.compareCounters(rd.pktStats, m.pktStats, pktCounterName));
    m.touchedRuleStats.clear();
    m.touchedPktStats.clear();
    this.sinceFull = 0;
    return diffs;
  }

  private ruleCounterName(i: number): string {
    const id = Math.floor(i / RULE_COUNTERS.length);
    const name = [...this.ids].find(([, x]) => x === id)?.[0] ?? `#${id}`;
    return `${name}/${RULE_COUNTERS[i % RULE_COUNTERS.length]}`;
  }

  private compareCounters(rd: MapReader, model: readonly number[], name: (i: number) => string): string | null {
    const n = rd.read();
    const lines: string[] = [];
    for (let i = 0; i < n; i++) {
      const idx = rd.keys.readUInt32LE(i * rd.keySize);
      const k = perCpuSum(rd.values, i * rd.valueBytes, this.ncpu);
      // The model counts IPv4 (family 0); the generator sends nothing else,
      // so every counter past its indices (IPv6's) must stay 0.
      const want = idx < model.length ? model[idx] : 0;
      if (k !== want) lines.push(`  ${name(idx)}: kernel ${k}, model ${want}`);
    }
    return lines.length ? lines.join('\n') : null;
  }

  /** The counters at `indices`, one lookup each. */
  private lookupCounters(raw: RawMap, indices: ReadonlySet<number>, model: readonly number[], name: (i: number) => string): string | null {
    const lines: string[] = [];
    for (const idx of indices) {
      this.counterKey.writeUInt32LE(idx);
      const r = ffi.mapLookup(raw.fd, this.counterKey, this.counterValue.subarray(0, raw.valueBytes));
      if (r < 0) throw new Error(`${raw.name}: lookup ${idx}: errno ${-r}`);
      const k = perCpuSum(this.counterValue, 0, this.ncpu);
      if (k !== model[idx]) lines.push(`  ${name(idx)}: kernel ${k}, model ${model[idx]}`);
    }
    return lines.length ? lines.join('\n') : null;
  }
}

const pktCounterName = (i: number): string =>
  `${i >= DIRECTIONS.length * VERDICTS.length ? 'ipv6 ' : ''}${DIRECTIONS[Math.floor(i / VERDICTS.length) % DIRECTIONS.length]}/${VERDICTS[i % VERDICTS.length]}`;

function hexDiff(got: Buffer, want: Buffer): string {
  const lines = [`  kernel ${describeFrame(got)}`, `  model  ${describeFrame(want)}`];
  if (got.length !== want.length) lines.push(`  length ${got.length} != ${want.length}`);
  const diffs: string[] = [];
  for (let i = 0; i < Math.max(got.length, want.length) && diffs.length < 16; i++) {
    if (got[i] !== want[i]) diffs.push(`@${i}: ${got[i]?.toString(16).padStart(2, '0') ?? '--'}/${want[i]?.toString(16).padStart(2, '0') ?? '--'}`);
  }
  if (diffs.length) lines.push(`  bytes differ (kernel/model) ${diffs.join(' ')}`);
  return lines.join('\n');
}

// --- sequences --------------------------------------------------------------------------------

interface Failure {
  /** Index (in the sequence run) of the event after which the sides differed. */
  at: number;
  /**
   * What shrinking keeps failing: the kind of event, the model's path and the
   * aspects that differed. A candidate that fails in another way is another
   * divergence (delta debugging must not slip from one bug to another).
   */
  sig: string;
  report: string;
}

function signature(res: ReturnType<DiffRun['apply']>): string {
  return `${res.outcome?.path ?? 'no packet'}: ${res.diffs.map((d) => d.aspect).join(', ')}`;
}

interface RunStats { packets: number; events: number; ms: number; coverage: Map<string, number> }

function describeEvent(ev: DiffEvent): string {
  switch (ev.k) {
    case 'pkt': return describeDesc(ev.p);
    case 'tick': return `clock +${fmtNs(ev.ns)}`;
    case 'sweep': return 'daemon sweep';
    case 'reload': return `reload, disabled: ${ev.disabled.join(', ') || 'none'}`;
    case 'drop': return `lose flow entry ${show(ev.key)}`;
  }
}

function fmtNs(ns: number): string {
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(ns % 1e9 === 0 ? 0 : 9).replace(/\.?0+$/, '')} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(6).replace(/\.?0+$/, '')} ms`;
  return `${ns} ns`;
}

function failureReport(run: DiffRun, ev: DiffEvent, at: number, res: ReturnType<DiffRun['apply']>): string {
  const lines = [`event ${at}: ${describeEvent(ev)}`];
  if (res.outcome) lines.push(`  model: ${res.outcome.verdict} (${res.outcome.path})`);
  lines.push(`  clock: CLOCK_START + ${fmtNs(Number(run.model.now - CLOCK_START))}`);
  for (const d of res.diffs) lines.push(`${d.aspect} differs:\n${d.detail}`);
  return lines.join('\n');
}

/** Run `events` on a fresh data path and model; the first divergence, if any. */
function runEvents(cfg: DiffConfig, events: readonly DiffEvent[], trace = false, tweak?: Tweak): Failure | null {
  const run = new DiffRun(cfg, true, tweak);
  try {
    for (const [i, ev] of events.entries()) {
      const res = run.apply(ev);
      if (trace) {
        const verdict = res.outcome ? `  -> model ${res.outcome.verdict} (${res.outcome.path}), kernel ${RETVAL_NAME[res.retval!] ?? res.retval}` : '';
        process.stderr.write(`${i}: ${describeEvent(ev)}${verdict}\n`);
      }
      if (res.diffs.length) return { at: i, sig: signature(res), report: failureReport(run, ev, i, res) };
    }
    return null;
  } finally {
    run.close();
  }
}

/** The sequence of a seed, regenerated on the model alone (no kernel): the same events a run made. */
function generate(cfg: DiffConfig, packets: number): DiffEvent[] {
  const compiled = compileRules(rulesWith(INITIALLY_DISABLED));
  let ids = compiled.ids;
  const model = new DatapathModel(modelConfig(cfg, compiled), CLOCK_START);
  const gen = new Generator(cfg);
  const events: DiffEvent[] = [];
  for (let n = 0; n < packets;) {
    const ev = gen.next(model);
    events.push(ev);
    if (ev.k === 'pkt') { model.step(ev.p.prog, buildFrame(ev.p)); n++; }
    else if (ev.k === 'tick') model.advance(BigInt(ev.ns));
    else if (ev.k === 'sweep') model.sweep();
    else if (ev.k === 'drop') model.dropFlowEntry(ev.key);
    else {
      const c = compileRules(rulesWith(ev.disabled), ids);
      ids = c.ids;
      model.setRules(c.rules, c.ports);
    }
  }
  return events;
}

/** Generate and run a seed's sequence in one go (the generator reads the run's model). */
function runSeed(cfg: DiffConfig, packets: number, tweak?: Tweak): { failure: Failure | null; events: DiffEvent[]; stats: RunStats } {
  const t0 = performance.now();
  const run = new DiffRun(cfg, false, tweak);
  const gen = new Generator(cfg);
  const events: DiffEvent[] = [];
  let n = 0;
  try {
    while (n < packets) {
      const ev = gen.next(run.model);
      events.push(ev);
      if (ev.k === 'pkt') n++;
      const res = run.apply(ev);
      if (n === packets) res.diffs.push(...run.compareMaps());
      if (res.diffs.length) {
        const at = events.length - 1;
        const stats = { packets: n, events: events.length, ms: performance.now() - t0, coverage: run.model.coverage };
        run.close();
        return { failure: locate(cfg, events, { at, sig: signature(res), report: failureReport(run, ev, at, res) }, tweak), events, stats };
      }
    }
    return { failure: null, events, stats: { packets: n, events: events.length, ms: performance.now() - t0, coverage: run.model.coverage } };
  } finally {
    run.close();
  }
}

/**
 * A divergence seen at a full comparison may have happened a few packets
 * before: run the sequence again comparing every map after every event, and
 * report the first event after which the sides differ.
 */
function locate(cfg: DiffConfig, events: readonly DiffEvent[], seen: Failure, tweak?: Tweak): Failure {
  return runEvents(cfg, events.slice(0, seen.at + 1), false, tweak) ?? seen;
}

/**
 * The shortest failing subsequence we can find in the time budget: cut after
 * the failing event, then remove chunks of events (halving the chunk size
 * when nothing more goes), keeping a candidate when it still fails the same
 * way (same first aspect). Each attempt runs on a fresh object.
 */
function shrink(cfg: DiffConfig, events: readonly DiffEvent[], fail: Failure, budgetMs: number): { kept: number[]; failure: Failure; attempts: number } {
  const deadline = performance.now() + budgetMs;
  let cur = Array.from({ length: fail.at + 1 }, (_, i) => i);
  let best = fail;
  let attempts = 0;
  const tryRun = (idx: number[]): Failure | null => {
    attempts++;
    const f = runEvents(cfg, idx.map((i) => events[i]!));
    return f && f.sig === fail.sig ? f : null;
  };
  // The shortest failing suffix first (binary search): what a divergence
  // needs usually happened lately, and each attempt then replays less.
  let lo = 1;
  let hi = cur.length;
  let suffix = cur;
  while (lo < hi && performance.now() < deadline) {
    const mid = (lo + hi) >> 1;
    const cand = cur.slice(cur.length - mid);
    const f = tryRun(cand);
    if (f) {
      hi = mid;
      best = f;
      suffix = cand.slice(0, f.at + 1);
    } else {
      lo = mid + 1;
    }
  }
  cur = suffix;
  let chunk = Math.max(1, Math.ceil(cur.length / 2));
  while (performance.now() < deadline) {
    let progress = false;
    for (let start = 0; start < cur.length && performance.now() < deadline;) {
      const cand = [...cur.slice(0, start), ...cur.slice(start + chunk)];
      const f = cand.length ? tryRun(cand) : null;
      if (f) {
        cur = cand.slice(0, f.at + 1);
        best = f;
        progress = true;
      } else {
        start += chunk;
      }
    }
    if (!progress) {
      if (chunk === 1) break;
      chunk = Math.max(1, Math.floor(chunk / 2));
    }
  }
  return { kept: cur, failure: best, attempts };
}

/** Everything a reader needs to see and replay a divergence. */
function failureMessage(cfg: DiffConfig, packets: number, events: readonly DiffEvent[], fail: Failure, budgetMs: number): string {
  const t0 = performance.now();
  const s = shrink(cfg, events, fail, budgetMs);
  const file = join(tmpdir(), `porttrig-diff-seed${cfg.seed}-${Date.now()}.json`);
  writeFileSync(file, `${JSON.stringify({ config: cfg, events: s.kept.map((i) => events[i]) }, null, 1)}\n`);
  return [
    `data path and model diverge: seed ${cfg.seed} (limits ${show(cfg.limits)}, sessions_per_host ${cfg.sessionsPerHost}, ${cfg.lanHosts.length} LAN hosts)`,
    `first divergence after event ${fail.at} of the generated sequence:`,
    fail.report,
    '',
    `shrunk to ${s.kept.length} events in ${s.attempts} runs (${Math.round(performance.now() - t0)} ms):`,
    ...s.kept.map((i) => `  [${i}] ${describeEvent(events[i]!)}`),
    '',
    'the shrunk sequence fails like this:',
    s.failure.report,
    '',
    'replay:',
    `  PT_DIFF_REPLAY=${file} PT_DIFF_TRACE=1 node --test dist/test/bpf/differential.test.js`,
    `  PT_DIFF_SEEDS=${cfg.seed} PT_DIFF_PACKETS=${packets} PT_DIFF_KEEP=${s.kept.join(',')} PT_DIFF_TRACE=1 node --test dist/test/bpf/differential.test.js`,
  ].join('\n');
}

// --- knobs --------------------------------------------------------------------------------------

const env = process.env;
const PACKETS = Number(env.PT_DIFF_PACKETS ?? 25_000);
const TIME_S = Number(env.PT_DIFF_TIME ?? 0);
const SHRINK_MS = 1000 * Number(env.PT_DIFF_SHRINK_S ?? 180);
const TRACE = env.PT_DIFF_TRACE === '1';
const SEEDS: number[] = env.PT_DIFF_SEEDS === 'random'
  ? [Date.now() % 1_000_000_007]
  : (env.PT_DIFF_SEEDS ?? '1,2,3,4').split(',').map((s) => Number(s.trim()));

/** The (protocol, port)s inbound connections use that a socket on this machine holds: the data path leaves those alone. */
function boundPorts(): string[] {
  const bound: string[] = [];
  for (const { proto, port } of WAN_PORTS_USED) {
    for (const file of proto === 'tcp' ? ['/proc/net/tcp', '/proc/net/tcp6'] : ['/proc/net/udp', '/proc/net/udp6']) {
      let text = '';
      try { text = readFileSync(file, 'utf8'); } catch { continue; }
      for (const line of text.split('\n').slice(1)) {
        const cols = line.trim().split(/\s+/);
        if (cols.length < 4) continue;
        const lport = parseInt(cols[1]!.slice(cols[1]!.lastIndexOf(':') + 1), 16);
        if (lport === port && (proto === 'udp' || cols[3] === '0A')) bound.push(`${proto}/${port}`);
      }
    }
  }
  return bound;
}

function coverageTable(cov: Map<string, number>): string {
  return [...cov].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `  ${k.padEnd(52)} ${n}`).join('\n');
}

/**
 * Paths every default run must take: the generator reaches them, so agreement
 * there means something. (pt_arm()'s disabled-rule check is unreachable:
 * disabled rules are not in the trigger table.)
 */
const MUST_COVER = [
  'lan:trigger', 'lan:trigger-addrs-not-ok', 'lan:reply', 'lan:reply-to-a-trigger-port-does-not-arm', 'lan:reply:syn', 'lan:reply:ttl-drop', 'lan:syn-reopens',
  'lan:malformed', 'lan:bad-ipcsum', 'lan:pkt-type-otherhost', 'lan:pkt-type-broadcast', 'lan:pkt-type-multicast', 'lan:skip',
  'wan:open:new-flow', 'wan:flow', 'wan:flow:ttl-drop', 'wan:flow:syn-retransmit', 'wan:syn-reopens', 'wan:closed-port',
  'wan:not-to-wan-addr', 'wan:open:bad-source', 'wan:open:no-session', 'wan:open:session-expired', 'wan:open:ttl-drop',
  'wan:open:refused-full', 'wan:no-flow-not-syn', 'wan:malformed', 'wan:bad-ipcsum', 'wan:pkt-type-otherhost', 'wan:skip',
  'wan:frag:translated', 'lan:frag:translated', 'wan:frag:too-old', 'wan:frag:unknown', 'frag:remembered',
  'wan:icmp:translated', 'lan:icmp:translated', 'wan:icmp:no-flow', 'wan:icmp:bad-source', 'wan:icmp:ttl-drop',
  'lan:icmp:not-from-the-host', 'lan:icmp:not-a-lan-port', 'wan:icmp:not-an-error-quoting-tcp-udp',
  'arm:opened', 'arm:refresh', 'arm:refresh-within-granularity', 'arm:refused-conflict', 'arm:refused-host-limit',
  'arm:refused-host-map-full', 'arm:refused-map-full', 'arm:take-over-live', 'arm:reopen-own-expired', 'arm:replace-expired-of-other-host',
  'reclaim:sessions-scan', 'reclaim:sessions-not-due', 'reclaim:flows-scan', 'reclaim:flows-not-due', 'reclaim:host',
  'reclaim:session-removed', 'reclaim:flow-removed',
  'flow:expired', 'flow:killed', 'flow:orphan', 'flow:session-refreshed',
  // Not 'sweep:host-count-fixed': one packet at a time the data path's counts no longer drift
  // (pt_reclaim_host recounts the host), so the kernel sweep's recount finds nothing to fix.
  'sweep:session-expired', 'sweep:flow-entry-removed', 'reclaim:host-gap',
];

// --- the tests ---------------------------------------------------------------------------------------

test('differential: the data path and the reference model agree on every packet, verdict, byte and map entry', { skip: SKIP ?? undefined }, (t) => {
  const bound = boundPorts();
  assert.deepEqual(bound, [], `precondition: sockets on this machine hold ports the runs forward (${bound.join(', ')}); the data path rightly leaves the gateway's own ports alone, so free them`);

  if (env.PT_DIFF_REPLAY) {
    const { config, events } = JSON.parse(readFileSync(env.PT_DIFF_REPLAY, 'utf8')) as { config: DiffConfig; events: DiffEvent[] };
    const f = runEvents(config, events, TRACE);
    assert.equal(f, null, f ? `replay of ${env.PT_DIFF_REPLAY} diverges:\n${f.report}` : '');
    t.diagnostic(`replayed ${events.length} events of ${env.PT_DIFF_REPLAY}: no divergence`);
    return;
  }
  if (env.PT_DIFF_KEEP) {
    assert.equal(SEEDS.length, 1, 'PT_DIFF_KEEP needs exactly one seed (PT_DIFF_SEEDS)');
    const cfg = configForSeed(SEEDS[0]!);
    const all = generate(cfg, PACKETS);
    const keep = env.PT_DIFF_KEEP.split(',').map(Number);
    const f = runEvents(cfg, keep.map((i) => all[i]!), TRACE);
    assert.equal(f, null, f ? `replay of seed ${cfg.seed}, events ${keep.join(',')} diverges:\n${f.report}` : '');
    t.diagnostic(`replayed ${keep.length} events of seed ${cfg.seed}: no divergence`);
    return;
  }

  const t0 = performance.now();
  const coverage = new Map<string, number>();
  let total = 0;
  let events = 0;
  const seeds = [...SEEDS];
  for (let i = 0; i < seeds.length; i++) {
    const cfg = configForSeed(seeds[i]!);
    const { failure, events: seq, stats } = runSeed(cfg, PACKETS);
    total += stats.packets;
    events += stats.events;
    for (const [k, n] of stats.coverage) coverage.set(k, (coverage.get(k) ?? 0) + n);
    const line = `seed ${cfg.seed}: ${stats.packets} packets, ${stats.events} events, ${Math.round(stats.ms)} ms ` +
      `(limits ${show(cfg.limits)}, sessions_per_host ${cfg.sessionsPerHost}, ${cfg.lanHosts.length} LAN hosts, ` +
      `${cfg.localAddrs.length} local addresses, LAN ${cfg.lanNets.join(' ')})`;
    t.diagnostic(line);
    // The TAP reporter shows diagnostics only when the test ends: long runs say how far they got.
    if (TIME_S > 0) process.stderr.write(`differential: ${line}${failure ? ': DIVERGES' : ''}\n`);
    if (failure) assert.fail(failureMessage(cfg, PACKETS, seq, failure, SHRINK_MS));
    if (TIME_S > 0 && i === seeds.length - 1 && performance.now() - t0 < TIME_S * 1000) seeds.push((seeds[i]! * 1103515245 + 12345) % 2_147_483_647);
  }
  const ms = performance.now() - t0;
  t.diagnostic(`${total} packets (${events} events) in ${(ms / 1000).toFixed(1)} s, ${Math.round((ms * 1000) / total)} us per packet; seeds ${seeds.join(',')}`);
  if (TRACE || env.PT_DIFF_COVERAGE === '1') process.stderr.write(`paths taken:\n${coverageTable(coverage)}\n`);
  if (!env.PT_DIFF_SEEDS && !env.PT_DIFF_PACKETS) {
    const missing = MUST_COVER.filter((p) => !coverage.has(p));
    assert.deepEqual(missing, [], `the generator no longer reaches ${missing.join(', ')}; paths taken:\n${coverageTable(coverage)}`);
  }
});

const REPLAYING = env.PT_DIFF_REPLAY !== undefined || env.PT_DIFF_KEEP !== undefined;

test('differential: a wrong model is caught, at the packet where it goes wrong', { skip: SKIP ?? (REPLAYING ? 'replaying' : undefined) }, () => {
  // Models wrong in one detail each: the harness must see every kind of
  // difference (verdict and bytes, maps, counters), or agreement means nothing.
  const cases: { name: string; tweak: Tweak; aspect: string }[] = [
    { name: 'another WAN address', tweak: (c) => ({ ...c, wanAddr: '203.0.113.77' }), aspect: 'verdict' },
    { name: 'sessions_per_host one higher', tweak: (c) => ({ ...c, sessionsPerHost: c.sessionsPerHost + 1 }), aspect: 'pt_sessions' },
    { name: 'sessions stamped with another ifindex', tweak: (c) => ({ ...c, ifindex: c.ifindex + 1 }), aspect: 'pt_sessions' },
  ];
  for (const c of cases) {
    const cfg = configForSeed(3);
    const { failure, events } = runSeed(cfg, 3000, c.tweak);
    assert.ok(failure, `a model with ${c.name} agreed with the data path for 3000 packets`);
    assert.ok(failure.sig.includes(c.aspect), `a model with ${c.name}: caught by ${failure.sig}, expected ${c.aspect}:\n${failure.report}`);
    // Located exactly: the sequence one event shorter agrees.
    assert.equal(runEvents(cfg, events.slice(0, failure.at), false, c.tweak), null, `a model with ${c.name}: not located at event ${failure.at}`);
  }
});
