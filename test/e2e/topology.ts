/**
 * A three-host test topology in network namespaces, unique per test run:
 *
 *   lan host 10.77.0.2 --- lan0 10.77.0.1 [gateway] wan0 203.0.113.1 --- 203.0.113.2 wan server
 *
 * With `lanHosts: 2` a second LAN host (10.77.0.3) joins; the gateway's lan0
 * is then a bridge with one veth port per host, as on a home router's br-lan
 * (the config still says `lan: [lan0]`). `wanServers: 2` likewise adds a second
 * WAN server (203.0.113.3) behind a bridge wan0.
 *
 * The gateway forwards with the usual stateful firewall (forward policy drop,
 * established/related accepted, LAN to WAN accepted, masquerade on wan0).
 *
 * With `ipv6: true` every host and the gateway are dual-stack (2001:db8::/32,
 * documentation addresses; `nodad` so they are usable at once):
 *
 *   lan host 2001:db8:77::2 (::3) --- lan0 2001:db8:77::1 [gateway] wan0 2001:db8:cb::1 --- 2001:db8:cb::2 (::3) wan server
 *
 * the gateway forwards IPv6 and runs examples/gateway-firewall-dualstack.nft
 * (the same IPv4 rules, ICMPv6 per RFC 4890; IPv6 is routed, not translated),
 * LAN hosts and WAN servers route IPv6 via the gateway, and the peers
 * (peer.ts) listen on both families.
 * Pinned state goes to a bpffs mounted on a per-run temp dir. Everything is
 * removed by destroy(), which tests call from t.after() so it also runs when
 * a test fails. No traffic leaves these namespaces.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ffi from '../../src/ffi/libbpf.js';
import { MAPS, PT_MAX_RULES, RULE_COUNTERS, type RuleCounter } from '../../src/bpf/abi.js';
import { PerCpuCounters, RawMap } from '../../src/bpf/map.js';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = join(ROOT, 'dist/src/cli/main.js');
const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));
/** The TUN relay (a Python script: the source file, not compiled). */
const TUN_RELAY = join(ROOT, 'test/e2e/tun-relay.py');
/** How long the TUN relay may take to create its devices. */
const TUN_START_MS = 10_000;

/** How long startDaemon() waits for "daemon started". */
const DAEMON_START_MS = 45_000;
/** How long create() waits for the gateway's links to get carrier. */
const CARRIER_WAIT_MS = 10_000;

export const LAN_HOST = '10.77.0.2';
export const GW_LAN = '10.77.0.1';
export const GW_WAN = '203.0.113.1';
export const WAN_SERVER = '203.0.113.2';
export const LAN_HOST2 = '10.77.0.3';
export const WAN_SERVER2 = '203.0.113.3';
/** IPv6 addresses (with `ipv6: true`): the LAN /64 and the WAN /64. */
export const LAN6_HOST = '2001:db8:77::2';
export const GW_LAN6 = '2001:db8:77::1';
export const GW_WAN6 = '2001:db8:cb::1';
export const WAN6_SERVER = '2001:db8:cb::2';
export const LAN6_HOST2 = '2001:db8:77::3';
export const WAN6_SERVER2 = '2001:db8:cb::3';
const PREFIX6 = 64;

/** How long a peer process may take to start listening. */
const PEER_START_MS = 15000;

const sh = (cmd: string, args: string[], input?: string): string =>
  execFileSync(cmd, args, { encoding: 'utf8', input, stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });

/** A child process whose stdout JSON lines are collected. */
export class Proc {
  readonly events: Record<string, unknown>[] = [];
  stderr = '';
  private waiters: (() => void)[] = [];
  constructor(readonly child: ChildProcess) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try { this.events.push(JSON.parse(line) as Record<string, unknown>); } catch { /* not an event */ }
        this.waiters.forEach((w) => w());
      }
    });
    child.stderr!.on('data', (d: Buffer) => { this.stderr += d.toString(); this.waiters.forEach((w) => w()); });
  }

  /** Resolve with the first event matching `pred`, or reject after `ms`. */
  waitFor(pred: (e: Record<string, unknown>) => boolean, ms = 5000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const e = this.events.find(pred);
        if (e) { cleanup(); resolve(e); return true; }
        return false;
      };
      const t = setTimeout(() => { cleanup(); reject(new Error(`timed out; events ${JSON.stringify(this.events)} stderr ${this.stderr}`)); }, ms);
      const cleanup = (): void => { clearTimeout(t); this.waiters = this.waiters.filter((w) => w !== check); };
      if (!check()) this.waiters.push(check);
    });
  }

  send(line: string): void { this.child.stdin!.write(`${line}\n`); }
  kill(sig: NodeJS.Signals = 'SIGTERM'): void { if (this.child.exitCode === null) this.child.kill(sig); }
  exited(): Promise<number | null> {
    return this.child.exitCode !== null ? Promise.resolve(this.child.exitCode)
      : new Promise((r) => this.child.once('exit', (c) => r(c)));
  }
}

export interface TopologyOptions {
  /** Hosts send CHECKSUM_PARTIAL skbs (veth tx offload on); else full checksums. */
  hostTxOffload?: boolean;
  /** 1 (default) or 2 LAN hosts; with 2, the gateway's lan0 is a bridge. */
  lanHosts?: 1 | 2;
  /** 1 (default) or 2 WAN servers; with 2, the gateway's wan0 is a bridge. */
  wanServers?: 1 | 2;
  /**
   * `veth` (default): wan0 is an Ethernet link. `tun`: wan0 and the WAN
   * server's eth0 are TUN devices (IFF_TUN: layer 3, no link-layer header,
   * ARPHRD_NONE, as pppd's ppp0) joined by test/e2e/tun-relay.py; one WAN
   * server only. replaceWan() takes it away and brings it back.
   */
  wanLink?: 'veth' | 'tun';
  /**
   * Dual stack: IPv6 addresses and routes beside the IPv4 ones, IPv6
   * forwarding on the gateway, the dual-stack firewall, peers listening on
   * both families. Ethernet WAN only.
   */
  ipv6?: boolean;
}

/** Namespaces of a topology; lan2 and wan2 exist with lanHosts / wanServers 2. */
export interface Namespaces { lan: string; gw: string; wan: string; lan2?: string; wan2?: string }

export class Topology {
  readonly id: string;
  readonly ns: Namespaces;
  readonly dir: string;
  readonly pinPath: string;
  readonly socket: string;
  private procs: Proc[] = [];
  private relay: Proc | null = null;

  constructor(readonly opts: TopologyOptions = {}) {
    this.id = `pt${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
    this.ns = { lan: `${this.id}-lan`, gw: `${this.id}-gw`, wan: `${this.id}-wan` };
    if (opts.lanHosts === 2) this.ns.lan2 = `${this.id}-lan2`;
    if (opts.wanServers === 2) this.ns.wan2 = `${this.id}-wan2`;
    this.dir = mkdtempSync(join(tmpdir(), 'porttrig-e2e-'));
    this.pinPath = join(this.dir, 'bpf');
    this.socket = join(this.dir, 'porttrig.sock');
  }

  /** Create namespaces, links, addresses, routes, firewall and the bpffs. */
  create(): this {
    const { gw } = this.ns;
    sh('ip', ['netns', 'add', gw]);
    this.exec(gw, 'ip', 'link', 'set', 'lo', 'up');
    const v6 = this.opts.ipv6 === true;
    const lanHosts: Host[] = [{ ns: this.ns.lan, addr: LAN_HOST, addr6: LAN6_HOST }];
    if (this.ns.lan2) lanHosts.push({ ns: this.ns.lan2, addr: LAN_HOST2, addr6: LAN6_HOST2 });
    const wanHosts: Host[] = [{ ns: this.ns.wan, addr: WAN_SERVER, addr6: WAN6_SERVER }];
    if (this.ns.wan2) wanHosts.push({ ns: this.ns.wan2, addr: WAN_SERVER2, addr6: WAN6_SERVER2 });
    this.side('lan0', { addr: `${GW_LAN}/24`, addr6: GW_LAN6 }, lanHosts, { via: GW_LAN, via6: GW_LAN6 });
    if (this.opts.wanLink === 'tun') {
      if (this.ns.wan2) throw new Error('wanLink tun has one WAN server');
      if (v6) throw new Error('wanLink tun is IPv4 only');
      sh('ip', ['netns', 'add', this.ns.wan]);
      this.exec(this.ns.wan, 'ip', 'link', 'set', 'lo', 'up');
      this.tunWan();
    } else {
      // IPv4 is masqueraded (WAN servers need no route back); IPv6 is routed.
      this.side('wan0', { addr: `${GW_WAN}/24`, addr6: GW_WAN6 }, wanHosts, { via: null, via6: GW_WAN6 });
    }
    this.exec(gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    if (v6) this.exec(gw, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
    this.exec(gw, 'nft', '-f', join(ROOT, v6 ? 'examples/gateway-firewall-dualstack.nft' : 'examples/gateway-firewall.nft'));
    mkdirSync(this.pinPath);
    sh('mount', ['-t', 'bpf', 'bpf', this.pinPath]);
    this.waitCarrier();
    return this;
  }

  /**
   * Wait until every gateway link has carrier: a veth toggled by ethtool comes
   * back a moment later, and until then the kernel (and os.networkInterfaces())
   * does not count it as running.
   */
  private waitCarrier(): void {
    const deadline = Date.now() + CARRIER_WAIT_MS;
    const tick = new Int32Array(new SharedArrayBuffer(4));
    while (sh('ip', ['-n', this.ns.gw, '-o', 'link', 'show']).includes('NO-CARRIER')) {
      if (Date.now() > deadline) throw new Error(`gateway links without carrier after ${CARRIER_WAIT_MS} ms:\n${sh('ip', ['-n', this.ns.gw, '-br', 'link'])}`);
      Atomics.wait(tick, 0, 0, 20);
    }
  }

  /**
   * One side of the gateway: interface `gwIf` with address `gw.addr`, and one
   * namespace per host, each linked by a veth (straight to `gwIf` for one
   * host, through a bridge `gwIf` for two). Hosts route via `via.via` if
   * given. With IPv6 on, the `addr6` addresses (/64, nodad) and IPv6 default
   * routes via `via.via6` too.
   */
  private side(gwIf: string, gwAddrs: { addr: string; addr6: string }, hosts: Host[], via: { via: string | null; via6: string }): void {
    const { gw } = this.ns;
    const v6 = this.opts.ipv6 === true;
    const bridged = hosts.length > 1;
    // Without a multicast querier, a snooping bridge may stop flooding the
    // neighbour solicitations of a group it has seen one report for.
    if (bridged) this.exec(gw, 'ip', 'link', 'add', gwIf, 'type', 'bridge', ...(v6 ? ['mcast_snooping', '0'] : []));
    hosts.forEach(({ ns, addr, addr6 }, i) => {
      sh('ip', ['netns', 'add', ns]);
      const [hostEnd, gwEnd] = [`${this.id}${gwIf[0]}${i}h`, `${this.id}${gwIf[0]}${i}g`];
      sh('ip', ['link', 'add', hostEnd, 'netns', ns, 'type', 'veth', 'peer', 'name', gwEnd, 'netns', gw]);
      const route = via.via ? [`route add default via ${via.via}`] : [];
      const inet6 = v6 ? [`addr add ${addr6}/${PREFIX6} dev eth0 nodad`, `route add default via ${via.via6} dev eth0`] : [];
      sh('ip', ['-n', ns, '-batch', '-'], `${[`link set ${hostEnd} name eth0`, 'link set eth0 up', 'link set lo up',
        `addr add ${addr}/24 dev eth0`, ...route, ...inet6].join('\n')}\n`);
      // Receivers verify checksums in software.
      this.exec(ns, 'ethtool', '-K', 'eth0', 'rx', 'off');
      if (this.opts.hostTxOffload === false) this.exec(ns, 'ethtool', '-K', 'eth0', 'tx', 'off');
      if (bridged) {
        this.exec(gw, 'ip', 'link', 'set', gwEnd, 'master', gwIf, 'up');
        this.exec(gw, 'ethtool', '-K', gwEnd, 'tx', 'off');
      } else {
        this.exec(gw, 'ip', 'link', 'set', gwEnd, 'name', gwIf);
      }
    });
    this.exec(gw, 'ip', 'addr', 'add', gwAddrs.addr, 'dev', gwIf);
    if (v6) this.exec(gw, 'ip', 'addr', 'add', `${gwAddrs.addr6}/${PREFIX6}`, 'dev', gwIf, 'nodad');
    this.exec(gw, 'ip', 'link', 'set', gwIf, 'up');
    // The gateway's egress finalises CHECKSUM_PARTIAL skbs in software, so a
    // wrong pseudo-header sum shows.
    this.exec(gw, 'ethtool', '-K', gwIf, 'tx', 'off');
  }

  /**
   * The layer-3 WAN: a TUN relay makes wan0 (gateway) and eth0 (WAN server),
   * then both get their addresses, as a PPP link comes up with its
   * addresses. Waits (synchronously, like create()) until the devices exist.
   */
  private tunWan(): void {
    this.relay = this.spawn('/', 'python3', [TUN_RELAY, this.ns.gw, 'wan0', this.ns.wan, 'eth0']);
    const deadline = Date.now() + TUN_START_MS;
    const tick = new Int32Array(new SharedArrayBuffer(4));
    const exists = (ns: string, dev: string): boolean => {
      try { sh('ip', ['-n', ns, 'link', 'show', dev]); return true; } catch { return false; }
    };
    while (!exists(this.ns.gw, 'wan0') || !exists(this.ns.wan, 'eth0')) {
      if (this.relay.child.exitCode !== null || Date.now() > deadline) throw new Error(`TUN relay did not create its devices: ${this.relay.stderr}`);
      Atomics.wait(tick, 0, 0, 20);
    }
    this.exec(this.ns.gw, 'ip', 'addr', 'add', `${GW_WAN}/24`, 'dev', 'wan0');
    this.exec(this.ns.gw, 'ip', 'link', 'set', 'wan0', 'up');
    this.exec(this.ns.wan, 'ip', 'addr', 'add', `${WAN_SERVER}/24`, 'dev', 'eth0');
    this.exec(this.ns.wan, 'ip', 'link', 'set', 'eth0', 'up');
  }

  /**
   * Take the layer-3 WAN away (the relay exits: both TUN devices vanish, as
   * ppp0 does when pppd hangs up), wait `gapMs`, and bring a new one up (new
   * ifindex, same addresses, as after a redial). Returns wan0's ifindexes.
   */
  async replaceWan(gapMs: number): Promise<{ before: number; after: number }> {
    if (!this.relay) throw new Error('replaceWan needs wanLink tun');
    const ifindex = (): number => Number(/^(\d+):/.exec(sh('ip', ['-n', this.ns.gw, '-o', 'link', 'show', 'wan0']))?.[1] ?? 0);
    const before = ifindex();
    const old = this.relay;
    old.kill('SIGKILL');
    await old.exited();
    this.procs = this.procs.filter((p) => p !== old);
    const deadline = Date.now() + TUN_START_MS;
    for (;;) {
      try { sh('ip', ['-n', this.ns.gw, 'link', 'show', 'wan0']); } catch { break; }
      if (Date.now() > deadline) throw new Error('wan0 did not go away');
      await sleep(20);
    }
    await sleep(gapMs);
    this.tunWan();
    return { before, after: ifindex() };
  }

  exec(ns: string, cmd: string, ...args: string[]): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
  }

  /** Start a long-running process in `ns` ('/': this process's own namespace), with `env` added to ours. */
  spawn(ns: string, cmd: string, args: string[], env: Record<string, string> = {}): Proc {
    const argv = ns === '/' ? [cmd, args] as const : ['ip', ['netns', 'exec', ns, cmd, ...args]] as const;
    const p = new Proc(spawn(argv[0], argv[1], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
    this.procs.push(p);
    return p;
  }

  /** Start peer.js MODE ARGS in `ns` (its servers listen on both families in a dual-stack topology). */
  peer(ns: string, mode: string, ...args: (string | number)[]): Proc {
    return this.spawn(ns, process.execPath, [PEER, mode, ...args.map(String)], this.opts.ipv6 ? { PT_PEER_DUAL: '1' } : {});
  }

  /** Start peer.js MODE ARGS in `ns` and wait until it listens (node starts slowly on a loaded machine). */
  async listener(ns: string, mode: string, ...args: (string | number)[]): Promise<Proc> {
    const p = this.peer(ns, mode, ...args);
    await p.waitFor((e) => e.event === 'listening', PEER_START_MS);
    return p;
  }

  /** Run peer.js to completion and return its one result line. */
  async once(ns: string, mode: string, ...args: (string | number)[]): Promise<Record<string, unknown>> {
    const p = this.peer(ns, mode, ...args);
    return p.waitFor(() => true, 15000);
  }

  /** Write a config file for this topology with the given rules YAML. */
  writeConfig(rulesYaml: string, extra = ''): string {
    const file = join(this.dir, 'porttrig.yaml');
    writeFileSync(file, `interfaces:
  wan: wan0
  lan: [lan0]
datapath:
  pin_path: ${this.pinPath}
control:
  socket: ${this.socket}
${extra}rules:
${rulesYaml}`);
    return file;
  }

  /** Start the daemon in the gateway namespace (`args`: more options); resolves once it serves. */
  async startDaemon(config: string, ...args: string[]): Promise<Proc> {
    const d = this.spawn(this.ns.gw, process.execPath, [CLI, 'daemon', '--config', config, ...args]);
    await new Promise<void>((resolve, reject) => {
      // Loading verifies five programs: seconds on a loaded 2-vCPU machine.
      const t = setTimeout(() => reject(new Error(`daemon did not start: ${d.stderr}`)), DAEMON_START_MS);
      const check = setInterval(() => {
        if (d.stderr.includes('daemon started')) { clearTimeout(t); clearInterval(check); resolve(); }
        if (d.child.exitCode !== null) { clearTimeout(t); clearInterval(check); reject(new Error(`daemon exited ${d.child.exitCode}: ${d.stderr}`)); }
      }, 50);
    });
    return d;
  }

  /**
   * Run the CLI in the gateway namespace; resolves with exit status and
   * output. Asynchronous, so that it never stalls the test's own timers and
   * peers (a node start takes seconds on a loaded machine).
   */
  cli(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile('ip', ['netns', 'exec', this.ns.gw, process.execPath, CLI, '--socket', this.socket, ...args], { encoding: 'utf8' },
        (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
    });
  }

  /** `porttrig ARGS --json`, parsed; throws with the CLI's stderr if it fails. */
  async json<T = Record<string, unknown>[]>(...args: string[]): Promise<T> {
    const r = await this.cli(...args, '--json');
    if (r.status !== 0) throw new Error(`porttrig ${args.join(' ')} --json: exit ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** The open sessions as `porttrig sessions --json` lists them. */
  sessions(): Promise<SessionJson[]> {
    return this.json<SessionJson[]>('sessions');
  }

  /**
   * A rule's counters, summed over CPUs, as the data path keeps them in the
   * pinned pt_rule_stats map (the rule id is the one `porttrig rules` shows).
   */
  async ruleCounters(rule: string): Promise<Record<RuleCounter, number>> {
    const r = (await this.json<RuleJson[]>('rules')).find((x) => x.name === rule);
    if (!r) throw new Error(`porttrig rules lists no rule ${rule}`);
    const path = join(this.pinPath, MAPS.ruleStats);
    const fd = ffi.objGet(path);
    if (fd < 0) throw new Error(`open pinned ${path}: ${fd}`);
    try {
      const stats = new PerCpuCounters(new RawMap({
        name: MAPS.ruleStats, fd, keySize: 4, valueSize: 8, maxEntries: PT_MAX_RULES * RULE_COUNTERS.length, perCpu: true,
      }));
      return Object.fromEntries(RULE_COUNTERS.map((c, i) => [c, Number(stats.sum(r.id * RULE_COUNTERS.length + i))])) as Record<RuleCounter, number>;
    } finally {
      ffi.closeFd(fd);
    }
  }

  /** Remove everything this topology made. Safe to call twice. */
  destroy(): void {
    for (const p of this.procs) p.kill('SIGKILL');
    this.procs = [];
    for (const n of Object.values(this.ns)) {
      try { sh('ip', ['netns', 'del', n]); } catch { /* already gone */ }
    }
    try { sh('umount', ['-l', this.pinPath]); } catch { /* not mounted */ }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** One entry of `porttrig sessions --json`. */
export interface SessionJson {
  rule: string; host: string; peer: string | null; opened_at: string; last_seen: string; expires_in_s: number; flows: number;
  family?: 'ipv4' | 'ipv6';
}

/** One entry of `porttrig flows --json`. */
export interface FlowJson {
  rule: string; proto: 'tcp' | 'udp'; remote: string; remote_port: number; wan_port: number; host: string; host_port: number;
  family?: 'ipv4' | 'ipv6';
}

/** A host of one side of the gateway: its namespace, IPv4 and IPv6 address. */
interface Host { ns: string; addr: string; addr6: string }

/** One entry of `porttrig rules --json` (the fields the tests read). */
export interface RuleJson { name: string; id: number; trigger_hits: number; sessions_opened: number; flows_opened: number }

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
