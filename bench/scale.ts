/**
 * The control plane at scale (issue 11), measured in one run:
 *
 *   sudo node dist/bench/scale.js [--sessions N] [--flows N] [--quiet-s S] [--busy-s S] [--json]
 *
 * Builds full tables (default 1 048 576 sessions and 1 048 576 flows, i.e.
 * 2 097 152 flow entries, with limits of the same sizes) on a throw-away
 * bpffs, then starts a real `porttrig daemon` that adopts them, inside a
 * network namespace this script creates (two veth pairs, no traffic at
 * all: requests go to the daemon's Unix socket and to /metrics on the
 * namespace's own loopback). Namespace, bpffs and daemon are always removed.
 *
 * Measures:
 *  1. steady-state sweep CPU: the daemon's CPU time (utime + stime of the
 *     process, which includes the kernel sweep it runs) over a quiet window,
 *     as a share of one core;
 *  2. control-socket (GET /v1/status) and scrape (GET /metrics) latency while
 *     requests go on every 100 ms, overall and for requests that overlapped a
 *     sweep walk (from the daemon's debug log);
 *  3. mass expiry: every session and flow is stamped so that all expire at the
 *     same deadline; time from that deadline until both maps are empty;
 *  4. the daemon's RSS (VmHWM: the peak over its life, and VmRSS at the end).
 */
import { parseArgs } from 'node:util';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import * as ffi from '../src/ffi/libbpf.js';
import { CLOCK_BIAS_NS, IPPROTO_UDP, MAPS, NSEC_PER_SEC, FLOW_TIMEOUT_UDP_NS } from '../src/bpf/abi.js';
import { Datapath } from '../src/bpf/datapath.js';
import { PorttrigState } from '../src/core/state.js';
import { compileRules } from '../src/rules/compile.js';
import { parseConfig } from '../src/config/load.js';
import { BPF_OBJECT, REPO_ROOT } from '../test/helpers/bpffs.js';
import { fillTables } from '../test/helpers/tables.js';

const { values: args } = parseArgs({
  options: {
    sessions: { type: 'string', default: '1048576' },
    flows: { type: 'string', default: '1048576' },
    'quiet-s': { type: 'string', default: '60' },
    'busy-s': { type: 'string', default: '30' },
    json: { type: 'boolean', default: false },
    inner: { type: 'string' },
  },
});

const IDLE_S = 600;
const WAN = '203.0.113.1';
const METRICS_PORT = 9469;
const REQUEST_EVERY_MS = 100;
const TICKS_PER_S = 100;  // USER_HZ: /proc/PID/stat times are in these
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js');

function sh(cmd: string, ...a: string[]): void {
  const r = spawnSync(cmd, a, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${a.join(' ')}: ${r.stderr || r.error}`);
}

/** Outer part: make the namespace, run this script inside it, always clean up. */
function outer(): void {
  const ns = `ptscale-${process.pid}`;
  sh('ip', 'netns', 'add', ns);
  try {
    for (const [ifname, addr] of [['wan0', `${WAN}/24`], ['lan0', '10.0.0.1/8']] as const) {
      // A veth pair with both ends in the namespace (no dummy module needed); nothing is sent on it.
      sh('ip', '-n', ns, 'link', 'add', ifname, 'type', 'veth', 'peer', 'name', `${ifname}p`);
      sh('ip', '-n', ns, 'addr', 'add', addr, 'dev', ifname);
      sh('ip', '-n', ns, 'link', 'set', ifname, 'up');
      sh('ip', '-n', ns, 'link', 'set', `${ifname}p`, 'up');
    }
    sh('ip', '-n', ns, 'link', 'set', 'lo', 'up');
    const argv = process.argv.slice(2).filter((a) => a !== '--inner');
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, process.argv[1]!, ...argv, '--inner', ns], { stdio: 'inherit' });
    process.exitCode = r.status ?? 1;
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
}

function get(opts: { socketPath?: string; host?: string; port?: number; path: string }): Promise<number> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request({ ...opts, method: 'GET' }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(Number(process.hrtime.bigint() - t0) / 1e6) : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

const cpuTicks = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);  // utime, stime (fields 14, 15)
};
const statusKb = (pid: number, key: string): number => Number(/\d+/.exec(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(key)) ?? '0')?.[0] ?? 0);
const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Is the pinned map empty? One BPF_MAP_GET_NEXT_KEY from no key. */
function pinnedEmpty(path: string, keySize: number): boolean {
  const fd = ffi.objGet(path);
  if (fd < 0) throw new Error(`open ${path}: ${fd}`);
  try { return ffi.mapNextKey(fd, null, Buffer.alloc(keySize)) < 0; } finally { ffi.closeFd(fd); }
}

interface Walk { table: string; end: number; seconds: number }

async function inner(ns: string): Promise<void> {
  const sessions = Number(args.sessions);
  const flows = Number(args.flows);
  const quietS = Number(args['quiet-s']);
  const busyS = Number(args['busy-s']);
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-scale-'));
  const pin = join(dir, 'pin');
  mkdirSync(pin);
  if (ffi.mount('bpf', pin, 'bpf') !== 0) throw new Error(`mount bpffs: errno ${ffi.lastErrno()}`);
  let daemon: ChildProcess | null = null;
  try {
    const cfgText = `interfaces: { wan: wan0, lan: [lan0] }
limits: { sessions: ${sessions}, flows: ${flows}, sessions_per_host: 64 }
datapath: { pin_path: ${pin} }
metrics: { listen: 127.0.0.1:${METRICS_PORT} }
control: { socket: ${join(dir, 'ctl.sock')} }
rules:
  - { name: game, trigger: udp/27015, open: udp/27000, peer: contacted, idle_timeout: ${IDLE_S}s }
`;
    const cfgPath = join(dir, 'porttrig.yaml');
    writeFileSync(cfgPath, cfgText);
    const config = parseConfig(cfgText, cfgPath);

    // Every session and flow runs out at `deadline`.
    const t0 = process.hrtime.bigint() + CLOCK_BIAS_NS;
    const fillStart = Date.now();
    const dp = Datapath.load({ objectPath: BPF_OBJECT, pinPath: pin, limits: { sessions, flows } });
    const state = new PorttrigState(dp.maps, undefined, dp);
    const compiled = compileRules(config.rules);
    state.applyRules(compiled);
    const lead = BigInt(quietS + busyS + 60) * NSEC_PER_SEC;  // fill + start + windows, generously
    const deadline = t0 + lead;
    fillTables(dp.maps, {
      rule: compiled.ids.get('game')!, sessions, hostsEvery: 16, flows, wanAddr: WAN, wanPort: 27000, proto: IPPROTO_UDP,
      sessionSeen: () => deadline - BigInt(IDLE_S) * NSEC_PER_SEC,
      flowSeen: () => deadline - FLOW_TIMEOUT_UDP_NS,
    });
    dp.close();
    const fillS = (Date.now() - fillStart) / 1000;

    const walks: Walk[] = [];
    const startAt = Date.now();
    daemon = spawn(process.execPath, [CLI, 'daemon', '--config', cfgPath, '--log-level', 'debug', '--no-conntrack'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let logTail = '';
    daemon.stderr!.on('data', (c: Buffer) => {
      logTail = (logTail + c.toString()).slice(-4000);
      for (const line of c.toString().split('\n')) {
        const m = /^time=(\S+) level=debug msg="sweep walk" table=(\w+) seconds=([\d.e-]+)/.exec(line);
        if (m) walks.push({ table: m[2]!, end: Date.parse(m[1]!), seconds: Number(m[3]) });
      }
    });
    const socket = join(dir, 'ctl.sock');
    for (;;) {
      if (daemon.exitCode !== null) throw new Error(`daemon exited: ${logTail}`);
      try { await get({ socketPath: socket, path: '/v1/status' }); break; } catch { await sleep(100); }
    }
    const pid = daemon.pid!;
    const startS = (Date.now() - startAt) / 1000;

    // 1. Quiet window: nothing but the daemon's own timers and sweeps.
    const c0 = cpuTicks(pid);
    const q0 = Date.now();
    await sleep(quietS * 1000);
    const quietCpu = (cpuTicks(pid) - c0) / TICKS_PER_S / ((Date.now() - q0) / 1000);
    const quietWalks = walks.filter((w) => w.end >= q0).length;

    // 2 and 3. Requests every 100 ms through the busy window and the mass expiry.
    const lat: { kind: 'control' | 'scrape'; start: number; ms: number }[] = [];
    let requesting = true;
    const loop = (async () => {
      while (requesting) {
        const start = Date.now();
        const [a, b] = await Promise.all([
          get({ socketPath: socket, path: '/v1/status' }), get({ host: '127.0.0.1', port: METRICS_PORT, path: '/metrics' }),
        ]);
        lat.push({ kind: 'control', start, ms: a }, { kind: 'scrape', start, ms: b });
        await sleep(Math.max(0, REQUEST_EVERY_MS - (Date.now() - start)));
      }
    })();
    const b0 = Date.now();
    const bc0 = cpuTicks(pid);
    await sleep(busyS * 1000);
    const busyCpu = (cpuTicks(pid) - bc0) / TICKS_PER_S / ((Date.now() - b0) / 1000);
    const deadlineWall = Date.now() + Number((deadline - (process.hrtime.bigint() + CLOCK_BIAS_NS)) / 1_000_000n);
    if (deadlineWall < Date.now()) throw new Error('the deadline passed before the expiry window: raise the lead');
    await sleep(deadlineWall - Date.now());
    let emptyAt = 0;
    while (Date.now() - deadlineWall < 30_000) {
      if (pinnedEmpty(join(pin, MAPS.sessions), 8) && pinnedEmpty(join(pin, MAPS.flows), 16)) { emptyAt = Date.now(); break; }
      await sleep(20);
    }
    await sleep(2000);
    requesting = false;
    await loop;
    const hwmMb = statusKb(pid, 'VmHWM:') / 1024;
    const rssMb = statusKb(pid, 'VmRSS:') / 1024;

    const during = (x: { start: number; ms: number }): boolean =>
      walks.some((w) => x.start < w.end && x.start + x.ms > w.end - w.seconds * 1000);
    const summary = (kind: 'control' | 'scrape', sel: (x: { start: number; ms: number }) => boolean) => {
      const xs = lat.filter((x) => x.kind === kind && sel(x)).map((x) => x.ms);
      return { n: xs.length, p50: pct(xs, 50), p99: pct(xs, 99), max: Math.max(...xs) };
    };
    const result = {
      sessions, flows, flow_entries: 2 * flows, fill_s: fillS, daemon_start_s: startS, loadavg_1m: loadavg()[0],
      sweep_cpu_quiet_pct: 100 * quietCpu, quiet_window_s: quietS, quiet_walks: quietWalks,
      cpu_with_requests_pct: 100 * busyCpu,
      control_all: summary('control', () => true), control_during_walks: summary('control', during),
      scrape_all: summary('scrape', () => true), scrape_during_walks: summary('scrape', during),
      mass_expiry_s: emptyAt ? (emptyAt - deadlineWall) / 1000 : null,
      walks: walks.map((w) => `${w.table}:${w.seconds.toFixed(3)}s`).join(' '),
      rss_peak_mb: hwmMb, rss_end_mb: rssMb, netns: ns,
    };
    if (args.json) { console.log(JSON.stringify(result, null, 2)); return; }
    const f1 = (x: number | null): string => (x === null ? 'not within 30 s' : x.toFixed(1));
    console.log(`porttrig scale bench: ${sessions} sessions, ${flows} flows (${2 * flows} entries); load average ${result.loadavg_1m.toFixed(1)}`);
    console.log(`fill ${fillS.toFixed(1)} s; daemon up (adopted, first sweep of both tables done) in ${startS.toFixed(1)} s`);
    console.log(`| measure | value | target |\n| --- | ---: | ---: |`);
    console.log(`| daemon CPU, quiet ${quietS} s (${quietWalks} walks) | ${result.sweep_cpu_quiet_pct.toFixed(2)} % of a core | < 5 % |`);
    console.log(`| daemon CPU with 10 status + 10 scrapes a second | ${result.cpu_with_requests_pct.toFixed(2)} % | |`);
    for (const [name, s] of [['control socket', result.control_all], ['control socket during walks', result.control_during_walks],
      ['scrape', result.scrape_all], ['scrape during walks', result.scrape_during_walks]] as const) {
      console.log(`| ${name}: p50 / p99 / max (n=${s.n}) | ${f1(s.p50)} / ${f1(s.p99)} / ${f1(s.max)} ms | p99 < 50 ms |`);
    }
    console.log(`| mass expiry of all sessions and flow entries, after the deadline | ${f1(result.mass_expiry_s)} s | < 2 s |`);
    console.log(`| daemon RSS peak / at end | ${hwmMb.toFixed(0)} / ${rssMb.toFixed(0)} MB | < 150 MB |`);
    console.log(`walks: ${result.walks}`);
  } finally {
    if (daemon && daemon.exitCode === null) {
      daemon.kill('SIGTERM');
      await new Promise((r) => daemon!.once('exit', r));
    }
    ffi.umountLazy(pin);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.getuid?.() !== 0) {
  console.error('bench/scale: run as root (network namespace, bpffs, BPF)');
  process.exitCode = 2;
} else if (args.inner) {
  await inner(args.inner);
} else {
  outer();
}
