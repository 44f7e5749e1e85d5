/**
 * `make bench-e2e`: what forwarding one packet costs the gateway, end to end,
 * in network namespaces: plain kernel forwarding (routing only), a static
 * nftables port forward (DNAT, conntrack, the usual stateful firewall) and
 * porttrig (the real daemon, a triggered session, inbound flows), for UDP and
 * TCP, one flow and many. Printed as gateway CPU ns per delivered packet and
 * as ratios to plain forwarding measured in the same round.
 *
 * Two floors bound what any BPF forwarder can reach on the same links: the
 * least a forwarder does (bench/floor.bpf.c: FIB lookup, TTL, MACs,
 * redirect; no state, no translation) on a routing-only gateway, as a TC
 * program on both links ("TC floor") and as an XDP program ("XDP floor").
 * A floor's packets must not reach ip_forward() (checked per measurement).
 *
 * The "-frames" scenarios feed the gateway pages instead of skbs, as a NIC's
 * driver receives them (Bed.createFrameSource()): on veth a local sender's
 * skb is handed over whole, which spares the gateway the skb allocation a
 * NIC driver pays, and makes XDP copy it into a page first.
 *
 * Method (README, Benchmarks, "The data path end to end"):
 *  - One test bed per configuration, each three namespaces: a sender (the
 *    remote, 198.51.100.2), the gateway, a receiver (the LAN host, 10.88.0.2),
 *    joined by veth pairs. The beds are alike but for the gateway's
 *    configuration, and exist side by side for the whole run.
 *  - Every veth end runs its receive side in a NAPI thread of its own (GRO on,
 *    which gives veth a NAPI instance, and `threaded` NAPI). The gateway's two
 *    threads are pinned to one CPU (--gw-cpu), the hosts' threads and every
 *    process (senders, TCP sink, the daemon) to the other (--host-cpu). All
 *    the gateway does for a packet -- GRO, TC ingress, IP receive, netfilter,
 *    routing, neighbour output, the veth transmit to the receiver -- runs in
 *    the gateway's NAPI threads, so their CPU time (sum_exec_runtime, in ns,
 *    from /proc/PID/schedstat) is the gateway's cost and nothing else: other
 *    processes on the machine that share the CPU do not count, unlike /proc/stat.
 *  - The hosts send complete checksums (tx checksum offload off), as frames
 *    off a wire carry them: no CHECKSUM_PARTIAL skbs, which an XDP redirect
 *    cannot carry.
 *  - Senders pace by the clock to the same rate (--pps) in every
 *    configuration: equal offered load, below what any configuration needs
 *    its CPU for, so that batching is alike. TCP writes carry PSH (small
 *    writes with TCP_NODELAY), so GRO merges no segments; UDP is not merged
 *    on forwarding anyway. Delivered packets are the receiver veth's
 *    rx_packets; the gateway's cost of forwarding TCP ACKs back counts in.
 *  - Rounds interleave: every round measures each scenario in each
 *    configuration (in a rotating order) for --seconds after a warm-up, so
 *    that load from other work spreads over all. Ratios are taken within a
 *    round (configuration / plain forwarding of that round and scenario);
 *    the table shows medians over rounds.
 *  - "porttrig + BPF stats" is the porttrig bed with the kernel's BPF
 *    run-time statistics on (bpf_enable_stats) during its measurement only:
 *    its ratio to porttrig is what the statistics cost, and the programs'
 *    run_time_ns / run_cnt give the BPF program's own ns per run. "TC floor
 *    + BPF stats" gives the same for the floor's program: the part of
 *    porttrig's program that any forwarder pays.
 *
 * Namespaces are named after the process id and a random suffix, and are
 * deleted with everything else (processes, bpffs mount, temp dir) on exit,
 * on an error and on SIGINT/SIGTERM. Traffic flows only between the
 * namespaces it creates. The bpffs is mounted on a per-run temp dir.
 *
 * --compare OBJ adds a fourth bed whose daemon loads OBJ (PORTTRIG_BPF_OBJECT),
 * measured in the same rounds: a change to the data path judged against the
 * build before it under the same load.
 *
 * Usage: node dist/bench/e2e.js [--rounds N] [--seconds S] [--pps N] [--flows N]
 *          [--scenarios udp1,udp-many,tcp1,tcp-many,udp1-frames,udp-many-frames] [--gw-cpu N] [--host-cpu N]
 *          [--compare OBJ] [--json]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import * as ffi from '../src/ffi/libbpf.js';
import { progRunStats } from '../src/metrics/progstats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const TRAFFIC = join(ROOT, 'build/e2e-traffic');
const FLOOR_OBJECT = join(ROOT, 'build/bench-floor.bpf.o');

// Documentation and private addresses only, inside the bench's namespaces.
const SENDER = '198.51.100.2';
const GW_WAN = '198.51.100.1';
const GW_LAN = '10.88.0.1';
const RECEIVER = '10.88.0.2';
const UDP_PORT = 20000;          // UDP flows: destination ports UDP_PORT .. UDP_PORT + flows - 1
const TCP_PORT = 5001;           // TCP flows: connections to one port
const TRIGGER_UDP = 7000;        // the LAN host's trigger packets, to the sender
const TRIGGER_TCP = 7001;
const UDP_PAYLOAD = 64;
const TCP_PAYLOAD = 1000;        // below the MSS: one segment per write
const MAX_FLOWS = 10000;

/** NAPI interrupt moderation of every veth end (napi_defer_hard_irqs, gro_flush_timeout). */
const COALESCE_DEFER = 2;
const COALESCE_NS = 250_000;

const DAEMON_START_MS = 60_000;
const READY_MS = 120_000;
const WARMUP_MS = 1000;

type ConfigName = 'plain' | 'tc-floor' | 'tc-floor+stats' | 'xdp-floor' | 'nft' | 'porttrig' | 'porttrig+stats' | 'porttrig-xdp' | 'porttrig-xdp+stats' | 'compare';
/** Configurations measured with the kernel's BPF run-time statistics on, on the bed of the one without. */
type StatsConfig = 'tc-floor+stats' | 'porttrig+stats' | 'porttrig-xdp+stats';
const isStats = (c: ConfigName): c is StatsConfig => c.endsWith('+stats');
const CONFIG_TITLE: Record<ConfigName, string> = {
  plain: 'plain forwarding',
  'tc-floor': 'TC floor',
  'tc-floor+stats': 'TC floor + BPF stats on',
  'xdp-floor': 'XDP floor',
  nft: 'nftables DNAT + conntrack',
  porttrig: 'porttrig',
  'porttrig+stats': 'porttrig + BPF stats on',
  'porttrig-xdp': 'porttrig, datapath.xdp on',
  'porttrig-xdp+stats': 'porttrig, datapath.xdp on + BPF stats on',
  compare: 'porttrig, --compare OBJ',
};

/** `frames`: the gateway receives pages (xdp_frames), not the sender's skbs: a NIC's receive (Bed.createFrameSource()). */
interface Scenario { id: string; proto: 'udp' | 'tcp'; flows: number; frames?: boolean }

const { values: opts } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    pps: { type: 'string', default: '40000' },
    flows: { type: 'string', default: String(MAX_FLOWS) },
    scenarios: { type: 'string', default: 'udp1,udp-many,tcp1,tcp-many,udp1-frames,udp-many-frames' },
    'gw-cpu': { type: 'string', default: '1' },
    'host-cpu': { type: 'string', default: '0' },
    compare: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(opts.rounds);
const SECONDS = Number(opts.seconds);
const PPS = Number(opts.pps);
const MANY = Number(opts.flows);
const GW_CPU = Number(opts['gw-cpu']);
const HOST_CPU = Number(opts['host-cpu']);
const ALL_SCENARIOS: Scenario[] = [
  { id: 'udp1', proto: 'udp', flows: 1 },
  { id: 'udp-many', proto: 'udp', flows: MANY },
  { id: 'tcp1', proto: 'tcp', flows: 1 },
  { id: 'tcp-many', proto: 'tcp', flows: MANY },
  { id: 'udp1-frames', proto: 'udp', flows: 1, frames: true },
  { id: 'udp-many-frames', proto: 'udp', flows: MANY, frames: true },
];
const CONFIGS: ConfigName[] = ['plain', 'tc-floor', 'tc-floor+stats', 'xdp-floor', 'nft', 'porttrig', 'porttrig+stats', 'porttrig-xdp', 'porttrig-xdp+stats', ...(opts.compare ? ['compare' as const] : [])];
const SCENARIOS = opts.scenarios.split(',').map((id) => {
  const s = ALL_SCENARIOS.find((x) => x.id === id);
  if (!s) throw new Error(`unknown scenario ${id} (${ALL_SCENARIOS.map((x) => x.id).join(', ')})`);
  return s;
});
if (!(ROUNDS >= 1 && SECONDS >= 1 && PPS >= 1 && MANY >= 1 && MANY <= MAX_FLOWS && GW_CPU !== HOST_CPU)) {
  throw new Error(`bad options: rounds >= 1, seconds >= 1, pps >= 1, 1 <= flows <= ${MAX_FLOWS}, gw-cpu != host-cpu`);
}

const sh = (cmd: string, args: string[], input?: string): string =>
  execFileSync(cmd, args, { encoding: 'utf8', input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const scenarioTitle = (s: Scenario): string =>
  `${s.proto.toUpperCase()}${s.frames ? ' frames' : ''}, ${s.flows === 1 ? '1 flow' : `${s.flows} flows`}`;

/** A process whose stdout JSON lines are collected. */
class Proc {
  readonly lines: Record<string, unknown>[] = [];
  stderr = '';
  constructor(readonly child: ChildProcess, readonly what: string) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        try { this.lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>); } catch { /* not JSON */ }
        buf = buf.slice(i + 1);
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); });
  }

  async waitFor(pred: (l: Record<string, unknown>) => boolean, ms: number, text?: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.lines.some(pred) && !(text && this.stderr.includes(text))) {
      if (this.child.exitCode !== null) throw new Error(`${this.what} exited ${this.child.exitCode}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`${this.what} not ready after ${ms} ms: ${this.stderr}`);
      await sleep(50);
    }
  }

  signal(sig: NodeJS.Signals): void { if (this.child.exitCode === null) this.child.kill(sig); }
}

/** Everything created, for cleanup on any exit. */
const created = { namespaces: [] as string[], procs: [] as Proc[], mounts: [] as string[], dirs: [] as string[], statsFd: -1 };
let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  if (created.statsFd >= 0) ffi.closeFd(created.statsFd);
  for (const p of created.procs) p.signal('SIGKILL');
  for (const n of created.namespaces) { try { sh('ip', ['netns', 'del', n]); } catch { /* gone */ } }
  for (const m of created.mounts) { try { sh('umount', ['-l', m]); } catch { /* not mounted */ } }
  for (const d of created.dirs) rmSync(d, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => { cleanup(); process.exit(130); });
}

const RUN_ID = `${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 2).toString(36)}`;

/** The napi/DEV-N kernel thread that runs the receive side of `dev`. */
function napiThread(dev: string): number {
  const prefix = `napi/${dev}-`;
  const hits = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((pid) => {
    try { return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith(prefix); } catch { return false; }
  });
  if (hits.length !== 1) throw new Error(`${hits.length} NAPI threads named ${prefix}*`);
  return Number(hits[0]);
}

/** CPU time of a thread, ns (sum_exec_runtime). */
function threadNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

class Bed {
  readonly ns: { snd: string; gw: string; rcv: string; src: string };
  readonly dev: { snd: string; wan: string; lan: string; rcv: string; src: string; fwd: string };
  gwThreads: number[] = [];
  dir = '';
  socket = '';
  senders = new Map<string, Proc>();
  progIds: number[] = [];

  /**
   * `object`: the daemon's BPF object (PORTTRIG_BPF_OBJECT), else the build's;
   * `xdp`: the daemon runs with datapath.xdp on.
   */
  constructor(readonly config: Exclude<ConfigName, StatsConfig | 'compare' | 'porttrig-xdp'>, k: number, readonly object?: string, readonly xdp = false) {
    const base = `pte${RUN_ID}${k}`;
    this.ns = { snd: `${base}-snd`, gw: `${base}-gw`, rcv: `${base}-rcv`, src: `${base}-src` };
    // Names short enough that the NAPI thread's comm (15 chars) keeps them whole.
    const d = `b${k}${RUN_ID}`.slice(0, 8);
    this.dev = { snd: `${d}s`, wan: `${d}w`, lan: `${d}l`, rcv: `${d}r`, src: `${d}a`, fwd: `${d}f` };
  }

  private in(ns: string, ...args: string[]): string { return sh('ip', ['netns', 'exec', ns, ...args]); }

  /** The gateway and its hosts: namespaces, links, addresses, routes, NAPI threads. */
  create(): void {
    for (const n of this.namespaces()) {
      sh('ip', ['netns', 'add', n]);
      created.namespaces.push(n);
      sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
    const { ns, dev } = this;
    sh('ip', ['link', 'add', dev.snd, 'netns', ns.snd, 'type', 'veth', 'peer', 'name', dev.wan, 'netns', ns.gw]);
    sh('ip', ['link', 'add', dev.rcv, 'netns', ns.rcv, 'type', 'veth', 'peer', 'name', dev.lan, 'netns', ns.gw]);
    sh('ip', ['-n', ns.snd, '-batch', '-'], `addr add ${SENDER}/24 dev ${dev.snd}\nlink set ${dev.snd} up\nroute add 10.88.0.0/24 via ${GW_WAN}\n`);
    sh('ip', ['-n', ns.rcv, '-batch', '-'], `addr add ${RECEIVER}/24 dev ${dev.rcv}\nlink set ${dev.rcv} up\nroute add default via ${GW_LAN}\n`);
    sh('ip', ['-n', ns.gw, '-batch', '-'], `addr add ${GW_WAN}/24 dev ${dev.wan}\nlink set ${dev.wan} up\naddr add ${GW_LAN}/24 dev ${dev.lan}\nlink set ${dev.lan} up\n`);
    this.in(ns.gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // The floors (bench/floor.bpf.c) forward in both directions; attached
    // before the NAPI set-up below, so that the threads it pins are the ones
    // that run them.
    for (const d of [dev.wan, dev.lan]) {
      if (this.config === 'tc-floor') {
        this.in(ns.gw, 'tc', 'qdisc', 'add', 'dev', d, 'clsact');
        this.in(ns.gw, 'tc', 'filter', 'add', 'dev', d, 'ingress', 'bpf', 'direct-action', 'obj', FLOOR_OBJECT, 'sec', 'tc');
      } else if (this.config === 'xdp-floor') {
        this.in(ns.gw, 'ip', 'link', 'set', 'dev', d, 'xdpdrv', 'obj', FLOOR_OBJECT, 'sec', 'xdp');
      }
    }
    const ends: [string, string, number][] = [[ns.snd, dev.snd, HOST_CPU], [ns.gw, dev.wan, GW_CPU], [ns.gw, dev.lan, GW_CPU], [ns.rcv, dev.rcv, HOST_CPU]];
    for (const [n, d, cpu] of ends) {
      // GRO on gives the veth a NAPI instance; tso/gso off: one segment per skb.
      this.in(n, 'ethtool', '-K', d, 'gro', 'on', 'tso', 'off', 'gso', 'off');
      // The hosts send complete checksums, as frames off a wire carry them
      // (no CHECKSUM_PARTIAL skbs, which an XDP redirect could not keep).
      if (n !== ns.gw) this.in(n, 'ethtool', '-K', d, 'tx', 'off');
      // Interrupt moderation, as a NIC under load has it: after a poll that
      // found packets, the next poll waits for a timer (COALESCE_NS) instead
      // of a wake-up per packet, so NAPI takes packets in batches.
      this.in(n, 'sh', '-c', `echo 1 > /sys/class/net/${d}/threaded; echo ${COALESCE_DEFER} > /sys/class/net/${d}/napi_defer_hard_irqs; ` +
        `echo ${COALESCE_NS} > /sys/class/net/${d}/gro_flush_timeout`);
      const pid = napiThread(d);
      sh('taskset', ['-p', '-c', String(cpu), String(pid)]);
      if (n === ns.gw) this.gwThreads.push(pid);
    }
    // Static ARP entries: no neighbour resolution inside a measurement.
    this.waitCarrier();
    sh('ip', ['-n', ns.snd, 'neigh', 'replace', GW_WAN, 'lladdr', this.mac(ns.gw, dev.wan), 'dev', dev.snd]);
    sh('ip', ['-n', ns.rcv, 'neigh', 'replace', GW_LAN, 'lladdr', this.mac(ns.gw, dev.lan), 'dev', dev.rcv]);
    sh('ip', ['-n', ns.gw, 'neigh', 'replace', SENDER, 'lladdr', this.mac(ns.snd, dev.snd), 'dev', dev.wan]);
    sh('ip', ['-n', ns.gw, 'neigh', 'replace', RECEIVER, 'lladdr', this.mac(ns.rcv, dev.rcv), 'dev', dev.lan]);
    if (this.config === 'nft' || this.config === 'porttrig') sh('ip', ['netns', 'exec', ns.gw, 'nft', '-f', '-'], this.firewall());
    if (SCENARIOS.some((s) => s.frames)) this.createFrameSource();
    if (this.config === 'tc-floor') this.findTcProgs();
  }

  /**
   * Frames for the gateway, as a NIC's driver receives them: a veth end
   * passes the skbs its sender made to its peer, so the gateway would take
   * over the sender's socket skbs, never build one (and an XDP program there
   * gets a copy of each). Frame scenarios send from a source namespace
   * instead (the sender's address, on a veth into the sender namespace),
   * whose packets the sender namespace routes with the XDP floor: it copies
   * each into a page (on the hosts' CPU) and redirects it to the gateway's
   * link, so the gateway's end receives xdp_frames and builds its skbs
   * itself, or with XDP none at all. The TTL arrives one lower; the
   * gateway's work is the same as with a NIC. Nothing reaches the gateway
   * another way: the sender namespace's own stack drops these packets
   * (their source is one of its addresses, a martian to ip_route_input()).
   */
  private createFrameSource(): void {
    const { ns, dev } = this;
    sh('ip', ['link', 'add', dev.src, 'netns', ns.src, 'type', 'veth', 'peer', 'name', dev.fwd, 'netns', ns.snd]);
    sh('ip', ['-n', ns.snd, 'link', 'set', dev.fwd, 'up']);
    this.in(ns.snd, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    this.in(ns.snd, 'ip', 'link', 'set', 'dev', dev.fwd, 'xdpdrv', 'obj', FLOOR_OBJECT, 'sec', 'xdp');
    sh('ip', ['-n', ns.src, '-batch', '-'], `addr add ${SENDER}/24 dev ${dev.src}\nlink set ${dev.src} up\nroute add 10.88.0.0/24 via ${GW_WAN}\n`);
    this.in(ns.src, 'ethtool', '-K', dev.src, 'tx', 'off', 'tso', 'off', 'gso', 'off');
    this.waitCarrier();
    sh('ip', ['-n', ns.src, 'neigh', 'replace', GW_WAN, 'lladdr', this.mac(ns.snd, dev.fwd), 'dev', dev.src]);
  }

  private mac(ns: string, dev: string): string {
    return (JSON.parse(sh('ip', ['-n', ns, '-j', 'link', 'show', dev])) as { address: string }[])[0]!.address;
  }

  /** The bed's namespaces: the frame source's only if a scenario sends frames. */
  private namespaces(): string[] {
    const { src, ...rest } = this.ns;
    return [...Object.values(rest), ...(SCENARIOS.some((s) => s.frames) ? [src] : [])];
  }

  private waitCarrier(): void {
    const deadline = Date.now() + 10_000;
    const tick = new Int32Array(new SharedArrayBuffer(4));
    while (this.namespaces().some((n) => sh('ip', ['-n', n, '-o', 'link', 'show']).includes('NO-CARRIER'))) {
      if (Date.now() > deadline) throw new Error('links without carrier after 10 s');
      Atomics.wait(tick, 0, 0, 20);
    }
  }

  /**
   * The usual stateful firewall (examples/gateway-firewall.nft with this
   * bed's interface names); for `nft` also the static port forward a user
   * would set up instead of porttrig: DNAT of the same ports, and the
   * forward rule that lets DNATed connections in.
   */
  private firewall(): string {
    const { wan, lan } = this.dev;
    const dnat = this.config === 'nft';
    return `table inet filter {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "${lan}" oifname "${wan}" accept
${dnat ? '    ct status dnat accept\n' : ''}  }
}
table ip nat {
${dnat ? `  chain prerouting {
    type nat hook prerouting priority -100;
    iifname "${wan}" udp dport ${UDP_PORT}-${UDP_PORT + MAX_FLOWS - 1} dnat to ${RECEIVER}
    iifname "${wan}" tcp dport ${TCP_PORT} dnat to ${RECEIVER}
  }
` : ''}  chain postrouting {
    type nat hook postrouting priority 100;
    oifname "${wan}" masquerade
  }
}
`;
  }

  /** porttrig: the daemon (on the hosts' CPU), then a trigger packet per rule from the LAN host. */
  async startPorttrig(): Promise<void> {
    this.dir = mkdtempSync(join(tmpdir(), 'porttrig-bench-e2e-'));
    created.dirs.push(this.dir);
    const pin = join(this.dir, 'bpf');
    mkdirSync(pin);
    sh('mount', ['-t', 'bpf', 'bpf', pin]);
    created.mounts.push(pin);
    this.socket = join(this.dir, 'porttrig.sock');
    const config = join(this.dir, 'porttrig.yaml');
    writeFileSync(config, `interfaces: { wan: ${this.dev.wan}, lan: [${this.dev.lan}] }
datapath: { pin_path: ${pin}, xdp: ${this.xdp} }
control: { socket: ${this.socket} }
metrics: { listen: 127.0.0.1:9469 }
rules:
  - name: bench-udp
    trigger: udp/${TRIGGER_UDP}
    open: udp/${UDP_PORT}-${UDP_PORT + MAX_FLOWS - 1}
    idle_timeout: 1h
  - name: bench-tcp
    trigger: udp/${TRIGGER_TCP}
    open: tcp/${TCP_PORT}
    idle_timeout: 1h
`);
    const d = this.spawn(this.ns.gw, 'porttrig daemon', [process.execPath, CLI, 'daemon', '--config', config],
      this.object ? { ...process.env, PORTTRIG_BPF_OBJECT: this.object } : undefined);
    await d.waitFor(() => false, DAEMON_START_MS, 'daemon started');
    for (const port of [TRIGGER_UDP, TRIGGER_TCP]) {
      this.in(this.ns.rcv, 'python3', '-c', `import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'trigger', ('${SENDER}', ${port}))`);
    }
    const sessions = JSON.parse(this.in(this.ns.gw, process.execPath, CLI, '--socket', this.socket, 'sessions', '--json')) as { rule: string; host: string }[];
    const rules = sessions.filter((s) => s.host === RECEIVER).map((s) => s.rule).sort();
    if (rules.join() !== 'bench-tcp,bench-udp') throw new Error(`trigger packets opened ${JSON.stringify(sessions)}`);
    this.findTcProgs();
    // With XDP, "+ BPF stats on" reads pt_wan_xdp alone: the inbound path's program.
    if (this.xdp) {
      const net = JSON.parse(this.in(this.ns.gw, 'bpftool', '-j', 'net', 'show')) as { xdp: { id: number; devname: string }[] }[];
      const x = net[0]!.xdp.filter((p) => p.devname === this.dev.wan);
      if (x.length !== 1) throw new Error(`expected pt_wan_xdp on ${this.dev.wan}, bpftool net show: ${JSON.stringify(net)}`);
      this.progIds = [x[0]!.id];
    }
  }

  /** porttrig_xdp_packets_total{result="redirected"} from the daemon's /metrics, inside the gateway namespace. */
  xdpRedirected(): number {
    const script = 'fetch(process.argv[1]).then(async (r) => process.stdout.write(await r.text()))';
    const text = this.in(this.ns.gw, process.execPath, '-e', script, 'http://127.0.0.1:9469/metrics');
    const m = /^porttrig_xdp_packets_total\{result="redirected"\} (\d+)$/m.exec(text);
    if (!m) throw new Error('the daemon exports no porttrig_xdp_packets_total{result="redirected"}');
    return Number(m[1]);
  }

  /** The TC programs on the gateway's two links, whose run-time statistics "+ BPF stats on" reads. */
  findTcProgs(): void {
    const net = JSON.parse(this.in(this.ns.gw, 'bpftool', '-j', 'net', 'show')) as { tc: { id: number; name: string }[] }[];
    this.progIds = net[0]!.tc.map((t) => t.id);
    if (this.progIds.length !== 2) throw new Error(`expected a TC program on two interfaces, bpftool net show: ${JSON.stringify(net)}`);
  }

  private spawn(ns: string, what: string, argv: string[], env?: NodeJS.ProcessEnv): Proc {
    const child = spawn('ip', ['netns', 'exec', ns, 'taskset', '-c', String(HOST_CPU), ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    const p = new Proc(child, what);
    created.procs.push(p);
    return p;
  }

  /** The TCP sink on the receiver and one paused sender per scenario. */
  async startTraffic(): Promise<void> {
    const dst = this.config === 'nft' || this.config === 'porttrig' ? GW_WAN : RECEIVER;
    if (SCENARIOS.some((s) => s.proto === 'tcp')) {
      const sink = this.spawn(this.ns.rcv, 'tcp sink', [TRAFFIC, 'tcp-sink', String(TCP_PORT)]);
      await sink.waitFor((l) => l.ready === 'sink', READY_MS);
      // Senders open up to 2 x 10 000 connections: room for them.
      this.in(this.ns.snd, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=10000 65000');
    }
    for (const s of SCENARIOS) {
      const argv = s.proto === 'udp'
        ? [TRAFFIC, 'udp-send', dst, String(UDP_PORT), String(s.flows), String(PPS), String(UDP_PAYLOAD)]
        : [TRAFFIC, 'tcp-send', dst, String(TCP_PORT), String(s.flows), String(PPS), String(TCP_PAYLOAD)];
      const p = this.spawn(s.frames ? this.ns.src : this.ns.snd, `${s.id} sender`, argv);
      await p.waitFor((l) => l.ready !== undefined, READY_MS);
      this.senders.set(s.id, p);
    }
  }

  rxPackets(): number {
    const l = JSON.parse(sh('ip', ['-n', this.ns.rcv, '-j', '-s', 'link', 'show', this.dev.rcv])) as { stats64: { rx: { packets: number } } }[];
    return l[0]!.stats64.rx.packets;
  }

  gwNs(): number { return this.gwThreads.reduce((a, pid) => a + threadNs(pid), 0); }

  /** Packets the gateway's IP stack forwarded (Ip ForwDatagrams): those that took ip_forward(). */
  ipForwarded(): number {
    const ip = this.in(this.ns.gw, 'cat', '/proc/net/snmp').split('\n').filter((l) => l.startsWith('Ip:'));
    const names = ip[0]!.split(/\s+/);
    return Number(ip[1]!.split(/\s+/)[names.indexOf('ForwDatagrams')]);
  }

  progStats(): { runNs: number; runs: number } {
    let runNs = 0;
    let runs = 0;
    for (const id of this.progIds) {
      const fd = ffi.progGetFdById(id);
      if (fd < 0) throw new Error(`bpf_prog_get_fd_by_id(${id}): ${-fd}`);
      try {
        const st = progRunStats(fd);
        runNs += Number(st.runTimeNs);
        runs += Number(st.runCount);
      } finally { ffi.closeFd(fd); }
    }
    return { runNs, runs };
  }
}

interface Sample {
  round: number; scenario: string; config: ConfigName; gwNs: number; delivered: number; offered: number;
  /** porttrig-xdp: of the packets, those that pt_wan_xdp redirected (porttrig_xdp_packets_total). */
  xdpRedirected?: number;
  /** Of the packets, those that went through the gateway's ip_forward(). */
  ipForwarded: number;
  bpfNs?: number; bpfRuns?: number;
}

async function measure(bed: Bed, s: Scenario, config: ConfigName, round: number): Promise<Sample> {
  const sender = bed.senders.get(s.id)!;
  sender.signal('SIGUSR1');
  await sleep(WARMUP_MS);
  const withStats = isStats(config);
  if (withStats) {
    created.statsFd = ffi.enableStats(ffi.BPF_STATS_RUN_TIME);
    if (created.statsFd < 0) throw new Error(`bpf_enable_stats: ${-created.statsFd}`);
  }
  const p0 = withStats ? bed.progStats() : null;
  const x0 = bed.xdp ? bed.xdpRedirected() : 0;
  const f0 = bed.ipForwarded();
  const rx0 = bed.rxPackets();
  const c0 = bed.gwNs();
  const t0 = process.hrtime.bigint();
  await sleep(SECONDS * 1000);
  const c1 = bed.gwNs();
  const rx1 = bed.rxPackets();
  const t1 = process.hrtime.bigint();
  const p1 = withStats ? bed.progStats() : null;
  const f1 = bed.ipForwarded();
  const x1 = bed.xdp ? bed.xdpRedirected() : 0;
  if (withStats) { ffi.closeFd(created.statsFd); created.statsFd = -1; }
  sender.signal('SIGUSR2');
  const sample: Sample = {
    round, scenario: s.id, config, gwNs: c1 - c0, delivered: rx1 - rx0, ipForwarded: f1 - f0,
    offered: Math.round(PPS * Number(t1 - t0) / 1e9),
  };
  if (p0 && p1) { sample.bpfNs = p1.runNs - p0.runNs; sample.bpfRuns = p1.runs - p0.runs; }
  if (bed.xdp) sample.xdpRedirected = x1 - x0;
  // A floor measures its program only if its program forwarded (the
  // packets' way back included): nearly nothing may reach ip_forward().
  // A bed that forwards next to nothing is broken, not slow.
  if (sample.delivered < 0.1 * sample.offered) {
    throw new Error(`${config}, ${s.id}: ${sample.delivered} of ${sample.offered} packets delivered: the bed does not forward`);
  }
  // XDP on: the inbound packets are XDP's to forward (a few per flow and second take TC: pt_neigh_due()).
  if (bed.xdp && s.frames && sample.xdpRedirected! < 0.5 * sample.delivered) {
    throw new Error(`${config}, ${s.id}: XDP redirected ${sample.xdpRedirected} of ${sample.delivered} packets`);
  }
  if (config.includes('floor') && sample.ipForwarded > 0.01 * sample.delivered) {
    throw new Error(`${config}: ${sample.ipForwarded} of ${sample.delivered} packets went through ip_forward(), not the floor program`);
  }
  await sleep(200);  // the pause reaches the sender and the queues drain
  return sample;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench-e2e needs root (namespaces, BPF)');
  const load0 = loadavg();
  const beds = new Map<ConfigName, Bed>();
  const plain = new Bed('plain', 0);
  const nft = new Bed('nft', 1);
  const pt = new Bed('porttrig', 2);
  const tcFloor = new Bed('tc-floor', 4);
  const xdpFloor = new Bed('xdp-floor', 5);
  const ptXdp = new Bed('porttrig', 6, undefined, true);
  beds.set('plain', plain).set('tc-floor', tcFloor).set('xdp-floor', xdpFloor).set('nft', nft).set('porttrig', pt).set('porttrig+stats', pt).set('tc-floor+stats', tcFloor)
    .set('porttrig-xdp', ptXdp).set('porttrig-xdp+stats', ptXdp);
  const all = [plain, tcFloor, xdpFloor, nft, pt, ptXdp];
  if (opts.compare) {
    const cmp = new Bed('porttrig', 3, opts.compare);
    beds.set('compare', cmp);
    all.push(cmp);
  }
  for (const b of all) b.create();
  for (const b of all) if (b.config === 'porttrig') await b.startPorttrig();
  for (const b of all) await b.startTraffic();

  const samples: Sample[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of SCENARIOS) {
      for (let i = 0; i < CONFIGS.length; i++) {
        const config = CONFIGS[(i + round) % CONFIGS.length]!;
        const sample = await measure(beds.get(config)!, s, config, round);
        samples.push(sample);
        if (!opts.json) {
          process.stderr.write(`round ${round + 1}/${ROUNDS} ${s.id.padEnd(8)} ${config.padEnd(15)} ` +
            `${(sample.gwNs / sample.delivered).toFixed(0)} ns/pkt, delivered ${sample.delivered}/${sample.offered}\n`);
        }
      }
    }
  }
  const load1 = loadavg();
  const rows = SCENARIOS.map((s) => {
    const of = (c: ConfigName): Sample[] => samples.filter((x) => x.scenario === s.id && x.config === c);
    const perPkt = (x: Sample): number => x.gwNs / x.delivered;
    const ratio = (c: ConfigName, base: ConfigName): number => median(of(c).map((x) => perPkt(x) / perPkt(of(base).find((y) => y.round === x.round)!)));
    const nsPerRun = (c: StatsConfig): number => median(of(c).map((x) => x.bpfNs! / x.bpfRuns!));
    return {
      scenario: s.id, title: scenarioTitle(s),
      ns: Object.fromEntries(CONFIGS.map((c) => [c, median(of(c).map(perPkt))])),
      delivered: Object.fromEntries(CONFIGS.map((c) => [c, median(of(c).map((x) => x.delivered / x.offered))])),
      vsPlain: Object.fromEntries(CONFIGS.map((c) => [c, ratio(c, 'plain')])),
      porttrigVsNft: ratio('porttrig', 'nft'),
      porttrigVsTcFloor: ratio('porttrig', 'tc-floor'),
      porttrigXdpVsNft: ratio('porttrig-xdp', 'nft'),
      porttrigXdpVsPorttrig: ratio('porttrig-xdp', 'porttrig'),
      ipForwardedShare: Object.fromEntries(CONFIGS.map((c) => [c, median(of(c).map((x) => x.ipForwarded / x.delivered))])),
      ...(opts.compare ? { porttrigVsCompare: ratio('porttrig', 'compare') } : {}),
      statsVsPorttrig: ratio('porttrig+stats', 'porttrig'),
      bpfNsPerRun: nsPerRun('porttrig+stats'),
      xdpNsPerRun: nsPerRun('porttrig-xdp+stats'),
      bpfNsPerPkt: median(of('porttrig+stats').map((x) => x.bpfNs! / x.delivered)),
      floorBpfNsPerRun: nsPerRun('tc-floor+stats'),
    };
  });
  const meta = {
    kernel: release(), compare: opts.compare ?? null, pps: PPS, seconds: SECONDS, rounds: ROUNDS, gwCpu: GW_CPU, hostCpu: HOST_CPU,
    loadavg: { start: load0.map((x) => +x.toFixed(2)), end: load1.map((x) => +x.toFixed(2)) },
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ meta, rows, samples }, null, 1)}\n`);
    return;
  }
  const f0 = (x: number): string => x.toFixed(0);
  const f2 = (x: number): string => x.toFixed(2);
  const out: string[] = [];
  out.push(`kernel ${meta.kernel}; ${PPS} packets/s offered; ${ROUNDS} rounds of ${SECONDS} s per cell; ` +
    `load average ${meta.loadavg.start.join(' ')} at start, ${meta.loadavg.end.join(' ')} at end`);
  out.push('');
  out.push('gateway CPU ns per delivered packet (median over rounds), and ratio to plain forwarding (median of same-round ratios)');
  out.push('');
  out.push(`| scenario | ${CONFIGS.map((c) => CONFIG_TITLE[c]).join(' | ')} | porttrig / nftables | porttrig's BPF programs: ns per run / per packet | TC floor's: ns per run |`);
  out.push(`| --- | ${CONFIGS.map(() => '---:').join(' | ')} | ---: | ---: | ---: |`);
  for (const r of rows) {
    out.push(`| ${r.title} | ${CONFIGS.map((c) => `${f0(r.ns[c]!)} (${f2(r.vsPlain[c]!)})`).join(' | ')} | ${f2(r.porttrigVsNft)} | ${f0(r.bpfNsPerRun)} / ${f0(r.bpfNsPerPkt)} | ${f0(r.floorBpfNsPerRun)} |`);
  }
  out.push('');
  out.push(`porttrig / TC floor (same-round ratio): ${rows.map((r) => `${r.scenario} ${f2(r.porttrigVsTcFloor)}`).join(', ')}`);
  out.push(`pt_wan_xdp's ns per run (porttrig, datapath.xdp on + BPF stats on): ${rows.map((r) => `${r.scenario} ${f0(r.xdpNsPerRun)}`).join(', ')}`);
  out.push(`porttrig with datapath.xdp / nftables: ${rows.map((r) => `${r.scenario} ${f2(r.porttrigXdpVsNft)}`).join(', ')}; / porttrig on TC: ${rows.map((r) => `${r.scenario} ${f2(r.porttrigXdpVsPorttrig)}`).join(', ')}`);
  out.push(`packets through the gateway's ip_forward() (median share): ${rows.map((r) => `${r.scenario} ${CONFIGS.filter((c) => !isStats(c)).map((c) => `${c} ${(100 * r.ipForwardedShare[c]!).toFixed(1)} %`).join(' ')}`).join('; ')}`);
  out.push(`porttrig + BPF stats on / porttrig (same-round ratio): ${rows.map((r) => `${r.scenario} ${f2(r.statsVsPorttrig)}`).join(', ')}`);
  if (opts.compare) {
    out.push('');
    out.push(`porttrig / porttrig with ${opts.compare} (same-round ratio): ${rows.map((r) => `${r.scenario} ${f2(r.porttrigVsCompare!)}`).join(', ')}`);
  }
  const lossy = rows.flatMap((r) => CONFIGS.filter((c) => r.delivered[c]! < 0.98).map((c) => `${r.scenario}/${c}: ${(100 * r.delivered[c]!).toFixed(1)} %`));
  out.push('');
  out.push(lossy.length ? `delivered below 98 % of offered: ${lossy.join(', ')}` : 'every cell delivered at least 98 % of the offered packets');
  process.stdout.write(`${out.join('\n')}\n`);
}

main().then(() => { cleanup(); }, (e: unknown) => {
  cleanup();
  process.stderr.write(`bench-e2e: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});
