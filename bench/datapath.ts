/**
 * `make bench`: what each path of the data path costs per packet, measured with
 * BPF_PROG_TEST_RUN next to an empty TC program (bench/empty.bpf.c) loaded in
 * the same run, and printed as ns/packet and as a ratio to the empty program.
 *
 * The data path is loaded on a throw-away bpffs (test/helpers/bpffs.ts) and
 * seeded through the same code the daemon uses (config parser, rules compiler,
 * PorttrigState). Packets never leave the kernel's test run.
 *
 * BPF_PROG_TEST_RUN runs the program `repeat` times on ONE skb, so a program
 * that rewrites the packet sees its own output on the next repetition. The
 * paths that only read (misses, triggers) run 1e6 repetitions in one call.
 * The rewriting paths are seeded with two flow entries that translate into
 * each other (port A -> B, B -> A, same address), so that every repetition
 * takes the same hit-and-rewrite path; as each pass also decrements the TTL,
 * and a TTL of 1 takes the drop path, such a call can repeat only
 * REWRITE_REPEAT times, and a run is as many calls as make up 1e6 packets.
 * The empty program is measured both ways, and each path is compared with
 * the empty program measured the same way.
 *
 * The kernel reports the mean time of one repetition in whole ns (the loop's
 * own cost included, time spent rescheduled excluded). Each figure is the
 * median of RUNS runs; the paths take turns within a run, so that load from
 * other processes spreads over all of them.
 *
 * --compare OBJ loads a second build of the data path object next to the
 * first, seeded the same way, and measures both in turns (their order
 * alternating from run to run), so that a change is judged against the code
 * before it under the same load: the table gets OBJ's figures and the change
 * in per cent. Paths are checked in both objects.
 *
 * Usage: node dist/bench/datapath.js [--runs N] [--packets N] [--compare OBJ] [--json]
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { release } from 'node:os';
import * as ffi from '../src/ffi/libbpf.js';
import { parseConfig } from '../src/config/load.js';
import { compileRules } from '../src/rules/compile.js';
import { monotonicNs } from '../src/core/state.js';
import { DIRECTIONS, VERDICTS, type PtFlow, type PtFlowKey } from '../src/bpf/abi.js';
import { BPF_OBJECT, REPO_ROOT, bpfSkipReason, makeTestDatapath, withDatapath, type TestDatapath } from '../test/helpers/bpffs.js';
import { IPPROTO_TCP, TCP, buildPacket, type PacketSpec } from '../test/helpers/packet.js';

/** The empty baseline program, built by the Makefile next to the data path. */
const EMPTY_OBJECT = process.env.PORTTRIG_BENCH_EMPTY_OBJECT || join(REPO_ROOT, 'build/bench-empty.bpf.o');
const EMPTY_PROGRAM = 'bench_empty';

/** Repetitions per run and runs per figure (the median is reported). */
const DEFAULT_PACKETS = 1_000_000;
const DEFAULT_RUNS = 5;
/** Start TTL of the rewritten packets, and how many passes stay above TTL 1. */
const REWRITE_TTL = 255;
const REWRITE_REPEAT = 250;
/** The aims: ratio to the empty program, per path. */
const AIMS: Record<string, number> = { miss: 1.6, inbound: 3, trigger: 3 };

const TC_ACT_UNSPEC = 0xffffffff;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;

// TEST-NET and 10.x addresses only; nothing is sent anywhere.
const WAN = '203.0.113.1';
const GW_LAN = '10.0.0.1';
const HOST = '10.0.0.2';
const REMOTE = '198.51.100.7';
const SERVER = '198.51.100.10';
const LAN_IFINDEX = 1;           // redirect target of the flows: never used by a test run
const SESSIONS_PER_HOST = 64;
const EPHEMERAL = 40000;
const REMOTE_PORT = 55555;

/* Rules so that the inbound and the reply paths each find a session they
 * refresh and flows that stay live: `irc`/`irc2` (LAN host HOST) and
 * `game`/`game2` (owned by the WAN address, the "LAN host" of the
 * self-translating inbound flows below). A flow lives only while its rule
 * still opens its WAN port onto its LAN port (pt_flow_judge), so each pair of
 * ports that translate into each other is two rules, one per direction. */
const CONFIG = `interfaces: { wan: wan0, lan: [lan0] }
rules:
  - name: irc
    trigger: tcp/6667
    open: tcp/114 -> 113
  - name: irc2
    trigger: tcp/6668
    open: tcp/113 -> 114
  - name: game
    trigger: udp/27015
    open: tcp/27000 -> 27001
  - name: game2
    trigger: udp/27016
    open: tcp/27001 -> 27000
`;
const IRC_PORTS = [113, 114] as const;
const GAME_PORTS = [27000, 27001] as const;

interface Path {
  name: string;
  /** Key into AIMS, if the issue sets an aim for this path. */
  aim?: string;
  prog: 'lan' | 'wan' | 'empty';
  packet: Buffer;
  retval: number;
  /** The data path's packet counter (pt_pkt_stats) this path must bump. */
  verdict?: (typeof VERDICTS)[number];
  /** Rewrites the packet: measured in calls of REWRITE_REPEAT. */
  rewrites: boolean;
}

function tcpAck(src: string, sport: number, dst: string, dport: number, ttl = 64): Buffer {
  const spec: PacketSpec = {
    ip: { src, dst, ttl, df: true },
    l4: { tcp: { sport, dport, flags: TCP.ACK | TCP.PSH, seq: 1, ack: 1, payload: Buffer.alloc(64, 0x61) } },
  };
  return buildPacket(spec);
}

function tcpSyn(src: string, sport: number, dst: string, dport: number, ttl: number): Buffer {
  return buildPacket({ ip: { src, dst, ttl, df: true }, l4: { tcp: { sport, dport, flags: TCP.SYN, seq: 1, ack: 0 } } });
}

const PATHS: Path[] = [
  { name: 'miss, LAN (LAN host to a server, no rule)', aim: 'miss', prog: 'lan',
    packet: tcpAck(HOST, EPHEMERAL, SERVER, 443), retval: TC_ACT_UNSPEC, verdict: 'pass', rewrites: false },
  { name: 'miss, WAN (reply to masqueraded traffic)', aim: 'miss', prog: 'wan',
    packet: tcpAck(SERVER, 443, WAN, EPHEMERAL), retval: TC_ACT_UNSPEC, verdict: 'pass', rewrites: false },
  { name: 'trigger hit + session refresh, LAN', aim: 'trigger', prog: 'lan',
    packet: tcpAck(HOST, EPHEMERAL, SERVER, 6667), retval: TC_ACT_UNSPEC, verdict: 'trigger', rewrites: false },
  { name: 'inbound hit + rewrite, WAN (existing flow)', aim: 'inbound', prog: 'wan',
    packet: tcpAck(REMOTE, REMOTE_PORT, WAN, GAME_PORTS[0], REWRITE_TTL), retval: TC_ACT_REDIRECT, verdict: 'translated', rewrites: true },
  { name: 'reply + rewrite, LAN (existing flow)', prog: 'lan',
    packet: tcpAck(HOST, IRC_PORTS[0], REMOTE, REMOTE_PORT, REWRITE_TTL), retval: TC_ACT_REDIRECT, verdict: 'translated', rewrites: true },
  // A flow's first packet runs every check before the flow goes in (session,
  // LAN source, local socket, conntrack) and then inserts two entries, which
  // a repetition would find. With TTL 1 it is dropped right after the checks
  // and changes nothing: what the checks cost, repeatable.
  { name: 'new inbound connection, checks only (TTL 1), WAN', prog: 'wan',
    packet: tcpSyn(REMOTE, REMOTE_PORT + 1, WAN, GAME_PORTS[0], 1), retval: TC_ACT_SHOT, verdict: 'dropped', rewrites: false },
];
const EMPTY: Path[] = [
  { name: 'empty TC program, 1 call', prog: 'empty', packet: PATHS[0]!.packet, retval: TC_ACT_UNSPEC, rewrites: false },
  { name: `empty TC program, calls of ${REWRITE_REPEAT}`, prog: 'empty', packet: PATHS[0]!.packet, retval: TC_ACT_UNSPEC, rewrites: true },
];

/**
 * Seed sessions and flows so that every path above stays on its path for
 * every repetition. Rewriting flows come in pairs that translate into each
 * other: the same address, port A <-> port B.
 */
function seed(f: TestDatapath): void {
  const config = parseConfig(CONFIG, 'bench');
  const compiled = compileRules(config.rules);
  f.state.applyRules(compiled);
  f.state.setRuntime(WAN, LAN_IFINDEX, SESSIONS_PER_HOST);
  f.state.setLocalAddrs([GW_LAN, WAN]);
  f.state.setLanNets(['10.0.0.0/24']);
  const now = monotonicNs();
  const id = (name: string): number => compiled.ids.get(name)!;
  const session = (rule: number, host: string): void =>
    f.dp.maps.sessions.set({ rule, peer: '0.0.0.0' }, { opened_ns: now, last_seen_ns: now, host, ifindex: LAN_IFINDEX });
  for (const r of ['irc', 'irc2']) session(id(r), HOST);
  for (const r of ['game', 'game2']) session(id(r), WAN);
  const flow = (key: Omit<PtFlowKey, 'proto'>, nat: { addr: string; port: number }, rule: number): void => {
    const value: PtFlow = {
      created_ns: now, last_seen_ns: now, nat_addr: nat.addr, nat_port: nat.port, rule, sess_peer: '0.0.0.0',
      ifindex: LAN_IFINDEX, seen: 0,
    };
    f.dp.maps.flows.set({ ...key, proto: IPPROTO_TCP }, value);
  };
  const DIR_IN = 1;
  const DIR_OUT = 2;
  for (const [a, b] of [[0, 1], [1, 0]] as const) {
    // Inbound: REMOTE -> WAN:game port a, rewritten to WAN:game port b (rule
    // game opens 27000 onto 27001, game2 27001 onto 27000).
    flow({ saddr: REMOTE, daddr: WAN, sport: REMOTE_PORT, dport: GAME_PORTS[a], dir: DIR_IN }, { addr: WAN, port: GAME_PORTS[b] },
      id(a === 0 ? 'game' : 'game2'));
    // Reply: HOST:irc port a -> REMOTE, leaving from WAN port b (rule irc
    // opens WAN port 114 onto LAN port 113, irc2 113 onto 114).
    flow({ saddr: HOST, daddr: REMOTE, sport: IRC_PORTS[a], dport: REMOTE_PORT, dir: DIR_OUT }, { addr: HOST, port: IRC_PORTS[b] },
      id(a === 0 ? 'irc' : 'irc2'));
  }
}

/** An fd of the empty baseline program, and a close for it. */
function loadEmpty(): { fd: number; close: () => void } {
  const obj = ffi.objectOpen(EMPTY_OBJECT, null);
  if (!obj) throw new Error(`open ${EMPTY_OBJECT}: errno ${ffi.lastErrno()} (run "make build/bench-empty.bpf.o")`);
  const r = ffi.objectLoad(obj);
  if (r < 0) { ffi.objectClose(obj); throw new Error(`load ${EMPTY_OBJECT}: errno ${-r}`); }
  const prog = ffi.objectFindProgram(obj, EMPTY_PROGRAM);
  if (!prog) { ffi.objectClose(obj); throw new Error(`no program ${EMPTY_PROGRAM} in ${EMPTY_OBJECT}`); }
  return { fd: ffi.programFd(prog), close: () => ffi.objectClose(obj) };
}

/**
 * Run each path once (one call) and check that the data path counted every
 * repetition under the path's own verdict, and nothing else: proof that the
 * figures below are of the path named, not of an early exit.
 */
function checkPaths(f: TestDatapath, fds: Record<Path['prog'], number>): void {
  const out = Buffer.alloc(2048);
  for (const p of PATHS) {
    const before = f.dp.maps.pktStats.sumAll();
    const r = ffi.progTestRun(fds[p.prog], { data_in: p.packet, data_out: out, repeat: REWRITE_REPEAT });
    if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN (${p.name}): ${r.ret}`);
    const after = f.dp.maps.pktStats.sumAll();
    const want = DIRECTIONS.indexOf(p.prog as 'lan' | 'wan') * VERDICTS.length + VERDICTS.indexOf(p.verdict!);
    after.forEach((n, i) => {
      const d = n - before[i]!;
      const expect = i === want ? BigInt(REWRITE_REPEAT) : 0n;
      if (d !== expect) {
        const name = `${DIRECTIONS[Math.floor(i / VERDICTS.length)]}/${VERDICTS[i % VERDICTS.length]}`;
        throw new Error(`${p.name}: counter ${name} moved by ${d}, expected ${expect}: the path is not the one being measured`);
      }
    });
  }
}

/** Mean ns per repetition over `packets` repetitions of `path` (one run). */
function measure(fd: number, path: Path, packets: number): number {
  const out = Buffer.alloc(path.packet.length + 256);
  const calls = path.rewrites ? Math.ceil(packets / REWRITE_REPEAT) : 1;
  const repeat = path.rewrites ? REWRITE_REPEAT : packets;
  let total = 0;
  for (let i = 0; i < calls; i++) {
    const r = ffi.progTestRun(fd, { data_in: path.packet, data_out: out, repeat });
    if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN (${path.name}): ${r.ret}`);
    if (r.retval >>> 0 !== path.retval) {
      throw new Error(`${path.name}: verdict ${r.retval | 0}, expected ${path.retval | 0}: the path is not the one being measured`);
    }
    total += r.duration;
  }
  return total / calls;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

interface Row {
  path: string; ns: number; runs: number[]; baseline: string; ratio: number; aim: number | null;
  /** With --compare: the other object's figures. */
  compare?: { ns: number; runs: number[]; ratio: number };
}

/** Median ns per path over the runs, and the ratio to the matching empty program. */
function rowsOf(samples: Map<Path, number[]>, all: Path[]): Row[] {
  return all.map((p) => {
    const base = EMPTY[p.rewrites ? 1 : 0]!;
    const ns = median(samples.get(p)!);
    return {
      path: p.name, ns, runs: samples.get(p)!, baseline: base.name,
      ratio: ns / median(samples.get(base)!), aim: p.aim ? AIMS[p.aim]! : null,
    };
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: 'string' }, packets: { type: 'string' }, compare: { type: 'string' }, json: { type: 'boolean' } },
  });
  const runs = Number(values.runs ?? DEFAULT_RUNS);
  const packets = Number(values.packets ?? DEFAULT_PACKETS);
  if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs: want a positive integer, got ${values.runs}`);
  if (!Number.isInteger(packets) || packets < REWRITE_REPEAT) throw new Error(`--packets: want an integer >= ${REWRITE_REPEAT}, got ${values.packets}`);
  const skip = bpfSkipReason();
  if (skip) throw new Error(`cannot benchmark: ${skip}`);

  const empty = loadEmpty();
  try {
    await withDatapath(async (f) => {
      const other = values.compare === undefined ? null : makeTestDatapath({ objectPath: values.compare });
      try {
        const sides = [f, ...(other ? [other] : [])].map((d) => {
          seed(d);
          const fds = { lan: d.dp.programFd('lan'), wan: d.dp.programFd('wan'), empty: empty.fd };
          checkPaths(d, fds);
          return { fds, samples: new Map<Path, number[]>() };
        });
        const all = [...EMPTY, ...PATHS];
        for (const side of sides) for (const p of all) side.samples.set(p, []);
        for (let r = 0; r < runs; r++) {
          for (const p of all) {
            // Alternate which object goes first, so neither always runs warm.
            const order = r % 2 ? [...sides].reverse() : sides;
            for (const side of order) side.samples.get(p)!.push(measure(side.fds[p.prog], p, packets));
          }
        }
        const rows = rowsOf(sides[0]!.samples, all);
        if (sides[1]) {
          const cmp = rowsOf(sides[1].samples, all);
          rows.forEach((row, i) => { row.compare = { ns: cmp[i]!.ns, runs: cmp[i]!.runs, ratio: cmp[i]!.ratio }; });
        }
        print(rows, runs, packets, values.json === true, values.compare);
      } finally {
        other?.cleanup();
      }
    });
  } finally {
    empty.close();
  }
}

function print(rows: Row[], runs: number, packets: number, json: boolean, compare: string | undefined): void {
  if (json) {
    const objects = { object: BPF_OBJECT, ...(compare === undefined ? {} : { compare }) };
    process.stdout.write(`${JSON.stringify({ runs, packets, rewrite_repeat: REWRITE_REPEAT, ...objects, rows }, null, 2)}\n`);
    return;
  }
  const verdict = (ratio: number, aim: number | null): string => (aim === null ? '' : ratio <= aim ? 'ok' : 'OVER');
  const head = ['path', 'ns/packet', 'x empty', 'aim', '', ...(compare === undefined ? [] : ['ns other', 'x empty', '', 'change'])];
  const body = rows.map((r) => [
    r.path, r.ns.toFixed(1), r.ratio.toFixed(2), r.aim === null ? '' : `<= ${r.aim}`, verdict(r.ratio, r.aim),
    ...(r.compare === undefined ? [] : [
      r.compare.ns.toFixed(1), r.compare.ratio.toFixed(2), verdict(r.compare.ratio, r.aim),
      `${r.compare.ns >= r.ns ? '+' : ''}${((r.compare.ns / r.ns - 1) * 100).toFixed(1)} %`,
    ]),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  process.stdout.write(`BPF_PROG_TEST_RUN, median of ${runs} runs of ${packets} packets each; kernel ${release()}\n`);
  if (compare !== undefined) process.stdout.write(`object ${BPF_OBJECT}; other: ${compare} (measured in turns)\n`);
  process.stdout.write(`${line(head)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const b of body) process.stdout.write(`${line(b)}\n`);
  process.stdout.write(`(rewriting paths: calls of ${REWRITE_REPEAT} repetitions, compared with the empty program measured the same way)\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
