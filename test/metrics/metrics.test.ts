/**
 * The metrics on a real (throw-away) data path with an isolated registry:
 * names and labels of SPEC 7, values read from the per-CPU maps and summed,
 * one reading per scrape, series following the rules, counters surviving a
 * restart (adoption), and the programs' run statistics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { Datapath } from '../../src/bpf/datapath.js';
import {
  DIR_IN, DIR_OUT, DIRECTIONS, IPPROTO_TCP, IPPROTO_UDP, PT_F_IPV6, PT_MAX_RULES, RULE_COUNTERS, VERDICTS, pktStatsIndex, ruleStatsIndex,
  type RuleCounter,
} from '../../src/bpf/abi.js';
import type { RawMap } from '../../src/bpf/map.js';
import { monotonicNs } from '../../src/core/state.js';
import { compileRules } from '../../src/rules/compile.js';
import type { Rule } from '../../src/config/types.js';
import * as ffi from '../../src/ffi/libbpf.js';
import { registerMetrics } from '../../src/metrics/metrics.js';
import { enableRunTimeStats } from '../../src/metrics/progstats.js';
import { idRuns, type SnapshotSource } from '../../src/metrics/snapshot.js';
import { BPF_OBJECT, bpfSkipReason, useDatapath, type TestDatapath } from '../helpers/bpffs.js';
import { buildPacket, TCP } from '../helpers/packet.js';
import { parseExposition, valueOf, type Exposition } from './promtext.js';

const SKIP = bpfSkipReason();
const opts = SKIP ? { skip: SKIP } : {};
const MIN_MS = 60_000;
const NS_PER_MS = 1_000_000n;
const IPV4 = /\b\d{1,3}(\.\d{1,3}){3}\b/;

/** Every name SPEC 7 requires. */
const SPEC_NAMES = [
  'porttrig_trigger_hits_total', 'porttrig_sessions_opened_total', 'porttrig_sessions_expired_total',
  'porttrig_sessions_refused_total', 'porttrig_sessions_active', 'porttrig_flows_active', 'porttrig_flows_opened_total',
  'porttrig_packets_total', 'porttrig_map_entries', 'porttrig_map_capacity', 'porttrig_sweep_duration_seconds',
  'porttrig_bpf_run_time_seconds_total', 'porttrig_bpf_run_count_total', 'process_cpu_seconds_total',
];

function rule(name: string, trigger: number, open: number, o: Partial<Rule> = {}): Rule {
  return {
    name, enabled: true, trigger: { protos: ['tcp'], ranges: [{ from: trigger, to: trigger }] },
    open: [{ protos: ['tcp'], from: open, to: open, lanFrom: open }],
    idleTimeoutMs: 10 * MIN_MS, peer: 'any', conflict: 'first', killFlowsOnExpiry: false, ...o,
  };
}
const RULES = [rule('irc', 6667, 113), rule('game', 27015, 27000, { idleTimeoutMs: MIN_MS })];

/** Write a per-CPU counter: CPU c holds `base * (c + 1)`; returns the sum. */
function seedPerCpu(raw: RawMap, index: number, base: number): number {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(index);
  const v = Buffer.alloc(raw.valueBytes);
  let sum = 0;
  for (let c = 0; c < raw.ncpu; c++) { v.writeBigUInt64LE(BigInt(base * (c + 1)), c * 8); sum += base * (c + 1); }
  raw.update(key, v);
  return sum;
}

function source(f: TestDatapath, attached = new Map([['lan0', true], ['wan0', false]])): SnapshotSource {
  return {
    maps: f.dp.maps,
    programs: () => [{ name: 'pt_lan_ingress', fd: f.dp.programFd('lan') }, { name: 'pt_wan_ingress', fd: f.dp.programFd('wan') }],
    interfaces: () => [{ name: 'lan0', program: 'pt_lan_ingress' }, { name: 'wan0', program: 'pt_wan_ingress' }],
    isAttached: (n) => attached.get(n) ?? false,
  };
}

async function scrape(registry: Registry): Promise<Exposition> {
  return parseExposition(await registry.metrics());
}

function programRules(f: TestDatapath, rules: Rule[]): Map<string, number> {
  const c = compileRules(rules, f.state.ruleIds());
  f.state.applyRules(c);
  return c.ids;
}

test('every SPEC 7 metric, its labels, and values summed over all CPUs', opts, async (t) => {
  const f = useDatapath(t);
  const ids = programRules(f, RULES);
  const want = new Map<string, Record<RuleCounter, number>>();
  let base = 1;
  for (const [name, id] of ids) {
    const c = {} as Record<RuleCounter, number>;
    RULE_COUNTERS.forEach((counter, i) => { c[counter] = seedPerCpu(f.dp.maps.ruleStats.raw, id * RULE_COUNTERS.length + i, base++); });
    want.set(name, c);
  }
  const wanTranslated = seedPerCpu(f.dp.maps.pktStats.raw, 1 * VERDICTS.length + VERDICTS.indexOf('translated'), 7);
  const lanTrigger = seedPerCpu(f.dp.maps.pktStats.raw, 0 * VERDICTS.length + VERDICTS.indexOf('trigger'), 3);

  const now = monotonicNs();
  const live = { opened_ns: now, last_seen_ns: now, ifindex: 3 };
  f.dp.maps.sessions.set({ rule: ids.get('irc')!, peer: '0.0.0.0' }, { ...live, host: '10.0.0.2' });
  // Idle past game's 1 min timeout: still in the map, no longer active.
  const old = now - 2n * BigInt(MIN_MS) * NS_PER_MS;
  f.dp.maps.sessions.set({ rule: ids.get('game')!, peer: '0.0.0.0' }, { opened_ns: old, last_seen_ns: old, host: '10.0.0.3', ifindex: 3 });
  f.dp.maps.hostSessions.set('10.0.0.2', { sessions: 1, recheck_ns: 0n });
  for (const [i, proto] of [IPPROTO_TCP, IPPROTO_UDP].entries()) {
    const flow = { created_ns: now, last_seen_ns: now, rule: ids.get('irc')!, sess_peer: '0.0.0.0', ifindex: 3, seen: 0 };
    const sport = 40000 + i;
    f.dp.maps.flows.set({ saddr: '198.51.100.7', daddr: '203.0.113.1', sport, dport: 113, proto, dir: DIR_IN }, { ...flow, nat_addr: '10.0.0.2', nat_port: 113 });
    f.dp.maps.flows.set({ saddr: '10.0.0.2', daddr: '198.51.100.7', sport: 113, dport: sport, proto, dir: DIR_OUT }, { ...flow, nat_addr: '203.0.113.1', nat_port: 113 });
  }

  const registry = new Registry();
  registerMetrics(registry, source(f));
  const e = await scrape(registry);

  for (const n of SPEC_NAMES) assert.ok(e.types.has(n), `${n} is not exported`);
  assert.equal(e.types.get('porttrig_sweep_duration_seconds'), 'histogram');
  for (const [name, c] of want) {
    assert.equal(valueOf(e, 'porttrig_trigger_hits_total', { family: 'ipv4', rule: name }), c.trigger_hits, `${name} trigger hits`);
    assert.equal(valueOf(e, 'porttrig_sessions_opened_total', { family: 'ipv4', rule: name }), c.sessions_opened);
    assert.equal(valueOf(e, 'porttrig_sessions_expired_total', { family: 'ipv4', rule: name }), c.sessions_expired);
    assert.equal(valueOf(e, 'porttrig_flows_opened_total', { family: 'ipv4', rule: name }), c.flows_opened);
    assert.equal(valueOf(e, 'porttrig_flows_refused_total', { family: 'ipv4', rule: name }), c.flows_refused);
    assert.equal(valueOf(e, 'porttrig_sessions_refused_total', { family: 'ipv4', rule: name, reason: 'conflict' }), c.refused_conflict);
    assert.equal(valueOf(e, 'porttrig_sessions_refused_total', { family: 'ipv4', rule: name, reason: 'host_limit' }), c.refused_host_limit);
    assert.equal(valueOf(e, 'porttrig_sessions_refused_total', { family: 'ipv4', rule: name, reason: 'map_full' }), c.refused_map_full);
  }
  assert.equal(e.samples.filter((s) => s.name === 'porttrig_sessions_refused_total').length, 2 * RULES.length * 3, 'per family, rule and reason');
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv4', direction: 'wan', verdict: 'translated' }), wanTranslated);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv4', direction: 'lan', verdict: 'trigger' }), lanTrigger);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv4', direction: 'lan', verdict: 'dropped' }), 0);
  assert.equal(e.samples.filter((s) => s.name === 'porttrig_packets_total').length, 2 * 2 * VERDICTS.length, 'per family, direction and verdict');

  assert.equal(valueOf(e, 'porttrig_sessions_active', { family: 'ipv4', rule: 'irc' }), 1);
  assert.equal(valueOf(e, 'porttrig_sessions_active', { family: 'ipv4', rule: 'game' }), 0, 'an expired, unswept session is not active');
  assert.equal(valueOf(e, 'porttrig_flows_active', { family: 'ipv4' }), 2);
  assert.equal(valueOf(e, 'porttrig_flows_active', { family: 'ipv6' }), 0);
  const fill = (map: string): [number, number] => [valueOf(e, 'porttrig_map_entries', { map }), valueOf(e, 'porttrig_map_capacity', { map })];
  assert.deepEqual(fill('sessions'), [2, 64]);
  assert.deepEqual(fill('flows'), [4, 128]);
  assert.deepEqual(fill('host_sessions'), [1, 64]);
  assert.deepEqual(fill('rules'), [2, PT_MAX_RULES - 1]);
  assert.equal(valueOf(e, 'porttrig_datapath_attached', { interface: 'lan0', program: 'pt_lan_ingress' }), 1);
  assert.equal(valueOf(e, 'porttrig_datapath_attached', { interface: 'wan0', program: 'pt_wan_ingress' }), 0);
  for (const program of ['pt_lan_ingress', 'pt_wan_ingress']) {
    assert.ok(valueOf(e, 'porttrig_bpf_run_count_total', { program }) >= 0);
    assert.ok(valueOf(e, 'porttrig_bpf_run_time_seconds_total', { program }) >= 0);
  }
  assert.equal(valueOf(e, 'porttrig_sweep_duration_seconds_count'), 0);

  for (const s of e.samples) {
    for (const [k, v] of Object.entries(s.labels)) assert.ok(!IPV4.test(v), `${s.name} label ${k}="${v}" carries an address`);
  }
});

test('one scrape reads the data path once; the next scrape reads it again', opts, async (t) => {
  const f = useDatapath(t);
  const ids = programRules(f, RULES);
  const registry = new Registry();
  const m = registerMetrics(registry, source(f), { defaultMetrics: false });
  await registry.metrics();
  assert.equal(m.reader.reads, 1);
  const idx = ids.get('irc')! * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('trigger_hits');
  const n = seedPerCpu(f.dp.maps.ruleStats.raw, idx, 5);
  const e = await scrape(registry);
  assert.equal(m.reader.reads, 2);
  assert.equal(valueOf(e, 'porttrig_trigger_hits_total', { family: 'ipv4', rule: 'irc' }), n, 'the second scrape sees the new count');
});

test('series follow the rules: a removed rule disappears, a new one starts at its kernel value', opts, async (t) => {
  const f = useDatapath(t);
  programRules(f, RULES);
  const registry = new Registry();
  registerMetrics(registry, source(f), { defaultMetrics: false });
  const before = await scrape(registry);
  assert.deepEqual(before.samples.filter((s) => s.name === 'porttrig_trigger_hits_total').map((s) => `${s.labels.rule}/${s.labels.family}`).sort(),
    ['game/ipv4', 'game/ipv6', 'irc/ipv4', 'irc/ipv6']);
  programRules(f, [RULES[1]!, rule('voip', 5060, 5061)]);
  const after = await scrape(registry);
  for (const name of ['porttrig_trigger_hits_total', 'porttrig_sessions_active', 'porttrig_sessions_refused_total']) {
    assert.deepEqual([...new Set(after.samples.filter((s) => s.name === name).map((s) => s.labels.rule))].sort(), ['game', 'voip'], name);
  }
});

test('counters kept in the kernel carry on across a daemon restart (pinned maps adopted)', opts, async (t) => {
  const f = useDatapath(t);
  const ids = programRules(f, RULES);
  const idx = ids.get('game')! * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('sessions_opened');
  const n = seedPerCpu(f.dp.maps.ruleStats.raw, idx, 11);
  const pkts = seedPerCpu(f.dp.maps.pktStats.raw, 0, 13);

  // A second "daemon": a new object loaded on the same pin path adopts the maps.
  const dp2 = Datapath.load({ objectPath: BPF_OBJECT, pinPath: f.pinPath, limits: { sessions: 64, flows: 64 } });
  t.after(() => dp2.close());
  assert.equal(dp2.adopted, true);
  f.dp.close();
  const registry = new Registry();
  registerMetrics(registry, {
    maps: dp2.maps, programs: () => [{ name: 'pt_lan_ingress', fd: dp2.programFd('lan') }], interfaces: () => [], isAttached: () => false,
  }, { defaultMetrics: false });
  const e = await scrape(registry);
  assert.equal(valueOf(e, 'porttrig_sessions_opened_total', { family: 'ipv4', rule: 'game' }), n);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv4', direction: 'lan', verdict: 'pass' }), pkts);
});

test('the programs\' run count and run time grow with BPF statistics enabled', opts, async (t) => {
  const f = useDatapath(t);
  programRules(f, RULES);
  const registry = new Registry();
  let enabled = false;
  registerMetrics(registry, source(f), { defaultMetrics: false, statsEnabled: () => enabled });
  const fd = enableRunTimeStats();
  enabled = true;
  t.after(() => ffi.closeFd(fd));
  const before = await scrape(registry);
  const RUNS = 50;
  const pkt = buildPacket({ ip: { src: '10.0.0.2', dst: '198.51.100.10', ttl: 64 }, l4: { tcp: { sport: 40000, dport: 80, flags: TCP.SYN } } });
  const r = ffi.progTestRun(f.dp.programFd('lan'), { data_in: pkt, data_out: Buffer.alloc(pkt.length + 512), repeat: RUNS });
  assert.equal(r.ret, 0, 'BPF_PROG_TEST_RUN failed');
  const after = await scrape(registry);
  const runs = (e: Exposition, program: string): number => valueOf(e, 'porttrig_bpf_run_count_total', { program });
  assert.equal(runs(after, 'pt_lan_ingress') - runs(before, 'pt_lan_ingress'), RUNS);
  assert.equal(runs(after, 'pt_wan_ingress'), runs(before, 'pt_wan_ingress'), 'the WAN program did not run');
  assert.ok(valueOf(after, 'porttrig_bpf_run_time_seconds_total', { program: 'pt_lan_ingress' })
    > valueOf(before, 'porttrig_bpf_run_time_seconds_total', { program: 'pt_lan_ingress' }));
  assert.equal(valueOf(after, 'porttrig_bpf_stats_enabled'), 1);
});

test('isolated registries: two sets of metrics side by side, none on the global registry', opts, async (t) => {
  const f = useDatapath(t);
  programRules(f, RULES);
  const a = new Registry();
  const b = new Registry();
  registerMetrics(a, source(f));
  registerMetrics(b, source(f));  // would throw on a shared registry (duplicate names)
  const { register } = await import('prom-client');
  assert.equal(register.getSingleMetric('porttrig_trigger_hits_total'), undefined);
  assert.deepEqual((await scrape(a)).types, (await scrape(b)).types);
});

test('counters of rules with gaps between their ids are read from the right slots', opts, async (t) => {
  const f = useDatapath(t);
  const four = [rule('a', 1001, 2001), rule('b', 1002, 2002), rule('c', 1003, 2003), rule('d', 1004, 2004)];
  programRules(f, four);
  const ids = programRules(f, [four[0]!, four[2]!, four[3]!]);  // b's id is now free: ids 1, 3, 4
  assert.deepEqual(idRuns(ids.values()), [[1, 1], [3, 4]]);
  const want = new Map<string, number>();
  for (const id of [1, 2, 3, 4, 5]) {
    // Every slot of ids 1..5 holds a distinct value; only ids in use may show.
    for (let k = 0; k < RULE_COUNTERS.length; k++) seedPerCpu(f.dp.maps.ruleStats.raw, id * RULE_COUNTERS.length + k, 100 * id + k);
  }
  for (const [name, id] of ids) want.set(name, seedPerCpu(f.dp.maps.ruleStats.raw, id * RULE_COUNTERS.length + RULE_COUNTERS.indexOf('flows_opened'), 1000 * id));
  const registry = new Registry();
  registerMetrics(registry, source(f), { defaultMetrics: false });
  const e = await scrape(registry);
  for (const [name, v] of want) assert.equal(valueOf(e, 'porttrig_flows_opened_total', { family: 'ipv4', rule: name }), v, name);
  const expiredIdx = RULE_COUNTERS.indexOf('sessions_expired');
  for (const [name, id] of ids) {
    const perCpuSum = Array.from({ length: f.dp.maps.ruleStats.raw.ncpu }, (_, c) => (100 * id + expiredIdx) * (c + 1)).reduce((a, b) => a + b, 0);
    assert.equal(valueOf(e, 'porttrig_sessions_expired_total', { family: 'ipv4', rule: name }), perCpuSum, `${name} (id ${id})`);
  }
  assert.equal(e.samples.filter((s) => s.name === 'porttrig_flows_opened_total').length, 2 * 3);
});

test('IPv6 (SPEC 9): the family label carries the per-family counters, sessions and flows; the pt6_ maps have their fill; no address in a label', opts, async (t) => {
  const f = useDatapath(t);
  const ids = programRules(f, RULES);
  const irc = ids.get('irc')!;
  const hits6 = seedPerCpu(f.dp.maps.ruleStats.raw, ruleStatsIndex(PT_F_IPV6, irc, RULE_COUNTERS.indexOf('trigger_hits')), 17);
  const hits4 = seedPerCpu(f.dp.maps.ruleStats.raw, ruleStatsIndex(0, irc, RULE_COUNTERS.indexOf('trigger_hits')), 2);
  const conflict6 = seedPerCpu(f.dp.maps.ruleStats.raw, ruleStatsIndex(PT_F_IPV6, irc, RULE_COUNTERS.indexOf('refused_conflict')), 4);
  const wanTranslated6 = seedPerCpu(f.dp.maps.pktStats.raw, pktStatsIndex(PT_F_IPV6, DIRECTIONS.indexOf('wan'), VERDICTS.indexOf('translated')), 9);
  const lanMalformed6 = seedPerCpu(f.dp.maps.pktStats.raw, pktStatsIndex(PT_F_IPV6, DIRECTIONS.indexOf('lan'), VERDICTS.indexOf('malformed')), 1);

  const now = monotonicNs();
  const host = '2001:db8:1::10';
  const remote = '2001:db8:ff::7';
  // Two hosts hold irc at once (mode any: no conflict between IPv6 hosts); one session of game is expired.
  for (const h of [host, '2001:db8:1::11']) f.dp.maps.sessions6.set({ rule: irc, host: h, peer: '::' }, { opened_ns: now, last_seen_ns: now, host: h, ifindex: 3 });
  const old = now - 2n * BigInt(MIN_MS) * NS_PER_MS;
  f.dp.maps.sessions6.set({ rule: ids.get('game')!, host, peer: '::' }, { opened_ns: old, last_seen_ns: old, host, ifindex: 3 });
  f.dp.maps.hostSessions6.set(host, { sessions: 1, recheck_ns: 0n });
  const base = { created_ns: now, last_seen_ns: now, rule: irc, ifindex: 3, seen: 0, flags: 0 };
  f.dp.maps.flows6.set({ saddr: remote, daddr: host, sport: 40000, dport: 113, proto: IPPROTO_TCP, dir: DIR_IN }, { ...base, nat_port: 113 });
  f.dp.maps.flows6.set({ saddr: host, daddr: remote, sport: 113, dport: 40000, proto: IPPROTO_TCP, dir: DIR_OUT }, { ...base, nat_port: 113 });
  f.dp.maps.lanNets6.set({ prefixlen: 64, addr: '2001:db8:1::' }, 64);
  f.dp.maps.localAddrs6.set('2001:db8:1::1', 1);

  const registry = new Registry();
  registerMetrics(registry, source(f), { defaultMetrics: false });
  const e = await scrape(registry);
  assert.equal(valueOf(e, 'porttrig_trigger_hits_total', { rule: 'irc', family: 'ipv6' }), hits6);
  assert.equal(valueOf(e, 'porttrig_trigger_hits_total', { rule: 'irc', family: 'ipv4' }), hits4);
  assert.equal(valueOf(e, 'porttrig_sessions_refused_total', { rule: 'irc', family: 'ipv6', reason: 'conflict' }), conflict6);
  assert.equal(valueOf(e, 'porttrig_sessions_refused_total', { rule: 'irc', family: 'ipv4', reason: 'conflict' }), 0);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv6', direction: 'wan', verdict: 'translated' }), wanTranslated6);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv4', direction: 'wan', verdict: 'translated' }), 0);
  assert.equal(valueOf(e, 'porttrig_packets_total', { family: 'ipv6', direction: 'lan', verdict: 'malformed' }), lanMalformed6);
  assert.equal(valueOf(e, 'porttrig_sessions_active', { rule: 'irc', family: 'ipv6' }), 2);
  assert.equal(valueOf(e, 'porttrig_sessions_active', { rule: 'game', family: 'ipv6' }), 0, 'an expired, unswept session is not active');
  assert.equal(valueOf(e, 'porttrig_sessions_active', { rule: 'irc', family: 'ipv4' }), 0);
  assert.equal(valueOf(e, 'porttrig_flows_active', { family: 'ipv6' }), 1);
  assert.equal(valueOf(e, 'porttrig_flows_active', { family: 'ipv4' }), 0);
  const fill = (map: string): [number, number] => [valueOf(e, 'porttrig_map_entries', { map }), valueOf(e, 'porttrig_map_capacity', { map })];
  assert.deepEqual(fill('sessions6'), [3, 64]);
  assert.deepEqual(fill('host_sessions6'), [1, 64]);
  assert.deepEqual(fill('flows6'), [2, 128]);
  assert.deepEqual(fill('lan_nets6'), [1, 256]);
  assert.deepEqual(fill('local_addrs6'), [1, 256]);
  assert.deepEqual(fill('sessions'), [0, 64]);
  for (const smp of e.samples) {
    assert.equal('family' in smp.labels ? ['ipv4', 'ipv6'].includes(smp.labels.family!) : true, true, `${smp.name} family="${smp.labels.family}"`);
    for (const [k, v] of Object.entries(smp.labels)) assert.ok(!v.includes(':') && !IPV4.test(v), `${smp.name} label ${k}="${v}" carries an address`);
  }
});
