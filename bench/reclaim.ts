/**
 * What the data path's reclamation of a full map costs (README, Decisions,
 * "Expired state does not count"): a trigger that finds pt_sessions full, or
 * an inbound connection that finds pt_flows full, walks the whole map with
 * bpf_for_each_map_elem() to remove what is over. This measures that one
 * packet, with full tables of live entries (the scan finds nothing: the worst
 * case, repeated at most once a second) and of expired ones (the scan removes
 * them all), next to the same packet when the table has room.
 *
 * The data path runs on the test clock (simulated time), so that each
 * measured packet is allowed its scan (PT_RECLAIM_INTERVAL_NS apart) and the
 * entries are live or expired as wanted. Figures are the kernel's own
 * BPF_PROG_TEST_RUN duration of one run (ns), median of RUNS; only their
 * ratios to the no-scan packet travel between machines.
 *
 * Usage: node dist/bench/reclaim.js [--sessions N] [--flows N] [--runs N] [--json]
 */
import { parseArgs } from 'node:util';
import * as ffi from '../src/ffi/libbpf.js';
import { compileRules } from '../src/rules/compile.js';
import { CLOCK_BIAS_NS, DIR_IN, DIR_OUT, IPPROTO_TCP, NSEC_PER_SEC, type PtFlow, type PtFlowKey, type PtSession, type PtSessionKey } from '../src/bpf/abi.js';
import type { Rule } from '../src/config/types.js';
import { bpfSkipReason, makeTestDatapath, type TestDatapath } from '../test/helpers/bpffs.js';
import { TCP, buildPacket, type PacketSpec } from '../test/helpers/packet.js';

const WAN = '203.0.113.1';
const SERVER = '198.51.100.10';
const HOST = '10.0.0.2';
const T0 = CLOCK_BIAS_NS + 86_400n * NSEC_PER_SEC;
const CHUNK = 8192;

const { values: args } = parseArgs({
  options: {
    sessions: { type: 'string', default: '65536' },
    flows: { type: 'string', default: '262144' },
    runs: { type: 'string', default: '7' },
    json: { type: 'boolean', default: false },
  },
});
const SESSIONS = Number(args.sessions);
const FLOWS = Number(args.flows);
const RUNS = Number(args.runs);

/** Rule 1..n-1: fillers (their sessions fill pt_sessions); the last: the one measured. */
function rules(n: number): Rule[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `r${i}`, enabled: true, trigger: { protos: ['tcp'], ranges: [{ from: 1000 + i, to: 1000 + i }] },
    open: [{ protos: ['tcp'], from: 30000 + i, to: 30000 + i, lanFrom: 30000 + i }],
    idleTimeoutMs: 600_000, peer: 'contacted', conflict: 'first', killFlowsOnExpiry: false,
  }));
}

const ip = (n: number): string => `100.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;

function run(f: TestDatapath, prog: 'lan' | 'wan', p: PacketSpec): { retval: number; ns: number } {
  const input = buildPacket(p);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: Buffer.alloc(input.length + 256) });
  if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN: ${r.ret}`);
  return { retval: r.retval >>> 0, ns: r.duration };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function main(): void {
  const skip = bpfSkipReason();
  if (skip) throw new Error(`cannot run: ${skip}`);
  const f = makeTestDatapath({ testClock: true, limits: { sessions: SESSIONS, flows: FLOWS } });
  try {
    const compiled = compileRules(rules(2));
    f.state.applyRules(compiled);
    f.state.setRuntime(WAN, 7, 1_000_000);
    f.state.setLocalAddrs(['10.0.0.1', WAN]);
    f.state.setLanNets(['10.0.0.0/8']);
    const filler = compiled.ids.get('r0')!;
    const measured = compiled.ids.get('r1')!;

    // Fill pt_sessions with sessions of rule r0 (peer mode contacted: one per peer),
    // last seen at `stamp`; and pt_flows with flows of r0.
    const fillSessions = (stamp: bigint): void => {
      for (let i = 0; i < SESSIONS; i += CHUNK) {
        const batch: [PtSessionKey, PtSession][] = [];
        for (let j = i; j < Math.min(i + CHUNK, SESSIONS); j++) {
          batch.push([{ rule: filler, peer: ip(j) }, { opened_ns: stamp, last_seen_ns: stamp, host: HOST, ifindex: 1 }]);
        }
        f.dp.maps.sessions.setMany(batch);
      }
      f.dp.maps.hostSessions.set(HOST, { sessions: SESSIONS, recheck_ns: 0n });
    };
    const fillFlows = (stamp: bigint): void => {
      for (let i = 0; i < FLOWS; i += CHUNK / 2) {
        const batch: [PtFlowKey, PtFlow][] = [];
        for (let j = i; j < Math.min(i + CHUNK / 2, FLOWS); j++) {
          const remote = ip(j);
          const v = { created_ns: stamp, last_seen_ns: stamp, rule: filler, sess_peer: remote, ifindex: 1, seen: 1 };
          batch.push([{ saddr: remote, daddr: WAN, sport: 40000, dport: 30000, proto: IPPROTO_TCP, dir: DIR_IN }, { ...v, nat_addr: HOST, nat_port: 30000 }]);
          batch.push([{ saddr: HOST, daddr: remote, sport: 30000, dport: 40000, proto: IPPROTO_TCP, dir: DIR_OUT }, { ...v, nat_addr: WAN, nat_port: 30000 }]);
        }
        f.dp.maps.flows.setMany(batch);
      }
    };
    const clear = (): void => {
      for (const [k] of [...f.dp.maps.sessions.entries()]) f.dp.maps.sessions.delete(k);
      for (const [k] of [...f.dp.maps.flows.entries()]) f.dp.maps.flows.delete(k);
      for (const [k] of [...f.dp.maps.hostSessions.entries()]) f.dp.maps.hostSessions.delete(k);
    };

    let now = T0;
    const tick = (): void => { now += 2n * NSEC_PER_SEC; f.dp.setTestClock(now); };
    const trigger = (): PacketSpec => ({ ip: { src: HOST, dst: SERVER, ttl: 64, id: 1 }, l4: { tcp: { sport: 40000, dport: 1001, flags: TCP.SYN } } });
    const syn = (n: number): PacketSpec => ({ ip: { src: SERVER, dst: WAN, ttl: 64, id: 1 }, l4: { tcp: { sport: 50000 + n, dport: 30001, flags: TCP.SYN } } });

    const results: Record<string, number[]> = { 'trigger, room': [], 'trigger, full of live sessions': [], 'trigger, full of expired sessions': [],
      'inbound SYN, room': [], 'inbound SYN, full of live flows': [], 'inbound SYN, full of expired flows': [] };
    for (let r = 0; r < RUNS; r++) {
      clear(); tick();
      results['trigger, room']!.push(run(f, 'lan', trigger()).ns);
      // The measured rule's session is open from here on (a peer per run).
      f.dp.maps.sessions.set({ rule: measured, peer: SERVER }, { opened_ns: now, last_seen_ns: now, host: HOST, ifindex: 1 });
      results['inbound SYN, room']!.push(run(f, 'wan', syn(r)).ns);

      clear(); tick();
      fillSessions(now); tick();
      results['trigger, full of live sessions']!.push(run(f, 'lan', trigger()).ns);
      clear(); fillSessions(now - 3600n * NSEC_PER_SEC); tick();
      results['trigger, full of expired sessions']!.push(run(f, 'lan', trigger()).ns);

      clear(); tick();
      f.dp.maps.sessions.set({ rule: measured, peer: SERVER }, { opened_ns: now, last_seen_ns: now, host: HOST, ifindex: 1 });
      fillFlows(now); tick();
      results['inbound SYN, full of live flows']!.push(run(f, 'wan', syn(r)).ns);
      clear(); tick();
      f.dp.maps.sessions.set({ rule: measured, peer: SERVER }, { opened_ns: now, last_seen_ns: now, host: HOST, ifindex: 1 });
      fillFlows(now - 3600n * NSEC_PER_SEC); tick();
      results['inbound SYN, full of expired flows']!.push(run(f, 'wan', syn(r)).ns);
    }
    const table = Object.entries(results).map(([path, xs]) => ({ path, ns: median(xs) }));
    if (args.json) {
      process.stdout.write(`${JSON.stringify({ sessions: SESSIONS, flows: FLOWS, runs: RUNS, results })}\n`);
      return;
    }
    process.stdout.write(`reclaim scan cost: pt_sessions ${SESSIONS}, pt_flows ${FLOWS} flows (${2 * FLOWS} entries), median of ${RUNS}\n`);
    const base = { trigger: table[0]!.ns, inbound: table[3]!.ns };
    for (const { path, ns } of table) {
      const ref = path.startsWith('trigger') ? base.trigger : base.inbound;
      process.stdout.write(`  ${path.padEnd(36)} ${(ns / 1000).toFixed(1).padStart(10)} us  ${(ns / ref).toFixed(0).padStart(7)}x\n`);
    }
  } finally {
    f.cleanup();
  }
}

main();
