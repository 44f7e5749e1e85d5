/**
 * How long a metrics scrape takes as the data path fills: 1000 rules, then
 * sessions and flows up to a large table, on a throw-away data path (own
 * bpffs under /tmp; needs root). Prints one line per case; not a test.
 *
 *   make build && node dist/bench/metrics-scrape.js [RULES]     (default 1000)
 */
import { Registry } from 'prom-client';
import { DIR_IN, DIR_OUT, IPPROTO_UDP, RULE_COUNTERS, type PtFlow, type PtFlowKey, type PtSession, type PtSessionKey } from '../src/bpf/abi.js';
import { monotonicNs } from '../src/core/state.js';
import { compileRules } from '../src/rules/compile.js';
import type { Rule } from '../src/config/types.js';
import { registerMetrics } from '../src/metrics/metrics.js';
import { makeTestDatapath } from '../test/helpers/bpffs.js';

const RULES = Number(process.argv[2] ?? 1000);
const SCRAPES = 20;
const LIMITS = { sessions: 65536, flows: 262144 };
const TRIGGER_BASE = 10000;
const OPEN_BASE = 30000;
const MS_PER_NS = 1e-6;

const ip = (n: number, net = 10): string => `${net}.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;

function rules(n: number): Rule[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `rule-${i}`, enabled: true, trigger: { protos: ['udp'], ranges: [{ from: TRIGGER_BASE + i, to: TRIGGER_BASE + i }] },
    open: [{ protos: ['udp'], from: OPEN_BASE + i, to: OPEN_BASE + i, lanFrom: OPEN_BASE + i }],
    idleTimeoutMs: 600_000, peer: 'contacted', conflict: 'first', killFlowsOnExpiry: false,
  } satisfies Rule));
}

async function time(registry: Registry): Promise<{ median: number; max: number; bytes: number }> {
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < SCRAPES; i++) {
    const t0 = process.hrtime.bigint();
    bytes = (await registry.metrics()).length;
    ms.push(Number(process.hrtime.bigint() - t0) * MS_PER_NS);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[Math.floor(ms.length / 2)]!, max: ms[ms.length - 1]!, bytes };
}

const f = makeTestDatapath({ limits: LIMITS });
try {
  const c = compileRules(rules(RULES));
  f.state.applyRules(c);
  const ids = [...c.ids.values()];
  for (const id of ids) for (let k = 0; k < RULE_COUNTERS.length; k++) f.dp.maps.ruleStats.add(id * RULE_COUNTERS.length + k, BigInt(id + k));
  const registry = new Registry();
  registerMetrics(registry, {
    maps: f.dp.maps,
    programs: () => [{ name: 'pt_lan_ingress', fd: f.dp.programFd('lan') }, { name: 'pt_wan_ingress', fd: f.dp.programFd('wan') }],
    interfaces: () => [], isAttached: () => false,
  });
  const now = monotonicNs();
  let sessions = 0;
  let flows = 0;
  for (const [wantSessions, wantFlows] of [[0, 0], [1000, 1000], [10_000, 10_000], [50_000, 100_000], [65_536, 262_144]] as const) {
    const s: [PtSessionKey, PtSession][] = [];
    for (; sessions < wantSessions; sessions++) {
      s.push([{ rule: ids[sessions % ids.length]!, peer: ip(sessions, 198) }, { opened_ns: now, last_seen_ns: now, host: ip(sessions % 250), ifindex: 1 }]);
    }
    f.dp.maps.sessions.setMany(s);
    const fl: [PtFlowKey, PtFlow][] = [];
    for (; flows < wantFlows; flows++) {
      const v = { created_ns: now, last_seen_ns: now, rule: ids[flows % ids.length]!, sess_peer: '0.0.0.0', ifindex: 1, seen: 0 };
      const port = OPEN_BASE + (flows % RULES);
      fl.push([{ saddr: ip(flows, 198), daddr: '203.0.113.1', sport: 40000, dport: port, proto: IPPROTO_UDP, dir: DIR_IN }, { ...v, nat_addr: '10.0.0.2', nat_port: port }]);
      fl.push([{ saddr: '10.0.0.2', daddr: ip(flows, 198), sport: port, dport: 40000, proto: IPPROTO_UDP, dir: DIR_OUT }, { ...v, nat_addr: '203.0.113.1', nat_port: port }]);
    }
    for (let i = 0; i < fl.length; i += 8192) f.dp.maps.flows.setMany(fl.slice(i, i + 8192));
    const r = await time(registry);
    process.stdout.write(`rules=${RULES} sessions=${sessions} flows=${flows}: scrape median ${r.median.toFixed(1)} ms, max ${r.max.toFixed(1)} ms, ${(r.bytes / 1024).toFixed(0)} KiB\n`);
  }
} finally {
  f.cleanup();
}
