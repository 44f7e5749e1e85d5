/**
 * A three-host test topology in network namespaces, unique per test run:
 *
 *   lan host 10.77.0.2 --- lan0 10.77.0.1 [gateway] wan0 203.0.113.1 --- 203.0.113.2 wan server
 *
 * The gateway forwards with the usual stateful firewall (forward policy drop,
 * established/related accepted, LAN to WAN accepted, masquerade on wan0).
 * Pinned state goes to a bpffs mounted on a per-run temp dir. Everything is
 * removed by destroy(), which tests call from t.after() so it also runs when
 * a test fails. No traffic leaves these namespaces.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = join(ROOT, 'dist/src/cli/main.js');
const PEER = fileURLToPath(new URL('./peer.js', import.meta.url));

export const LAN_HOST = '10.77.0.2';
export const GW_LAN = '10.77.0.1';
export const GW_WAN = '203.0.113.1';
export const WAN_SERVER = '203.0.113.2';

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
}

export class Topology {
  readonly id: string;
  readonly ns: { lan: string; gw: string; wan: string };
  readonly dir: string;
  readonly pinPath: string;
  readonly socket: string;
  private procs: Proc[] = [];

  constructor(readonly opts: TopologyOptions = {}) {
    this.id = `pt${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
    this.ns = { lan: `${this.id}-lan`, gw: `${this.id}-gw`, wan: `${this.id}-wan` };
    this.dir = mkdtempSync(join(tmpdir(), 'porttrig-e2e-'));
    this.pinPath = join(this.dir, 'bpf');
    this.socket = join(this.dir, 'porttrig.sock');
  }

  /** Create namespaces, links, addresses, routes, firewall and the bpffs. */
  create(): this {
    const { lan, gw, wan } = this.ns;
    for (const n of [lan, gw, wan]) sh('ip', ['netns', 'add', n]);
    const [l1, l2, w1, w2] = ['l1', 'l2', 'w1', 'w2'].map((s) => `${this.id}${s}`);
    sh('ip', ['link', 'add', l1!, 'netns', lan, 'type', 'veth', 'peer', 'name', l2!, 'netns', gw]);
    sh('ip', ['link', 'add', w1!, 'netns', wan, 'type', 'veth', 'peer', 'name', w2!, 'netns', gw]);
    const batch = (n: string, cmds: string[]): void => { sh('ip', ['-n', n, '-batch', '-'], `${cmds.join('\n')}\n`); };
    batch(lan, [`link set ${l1} name eth0`, 'link set eth0 up', 'link set lo up', 'addr add 10.77.0.2/24 dev eth0', `route add default via ${GW_LAN}`]);
    batch(gw, [`link set ${l2} name lan0`, `link set ${w2} name wan0`, 'link set lan0 up', 'link set wan0 up', 'link set lo up',
      'addr add 10.77.0.1/24 dev lan0', 'addr add 203.0.113.1/24 dev wan0']);
    batch(wan, [`link set ${w1} name eth0`, 'link set eth0 up', 'link set lo up', 'addr add 203.0.113.2/24 dev eth0']);
    this.exec(gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // Receivers verify checksums in software; the gateway's egress finalises
    // CHECKSUM_PARTIAL skbs in software, so a wrong pseudo-header sum shows.
    this.exec(gw, 'ethtool', '-K', 'lan0', 'tx', 'off');
    this.exec(gw, 'ethtool', '-K', 'wan0', 'tx', 'off');
    for (const n of [lan, wan]) {
      this.exec(n, 'ethtool', '-K', 'eth0', 'rx', 'off');
      if (this.opts.hostTxOffload === false) this.exec(n, 'ethtool', '-K', 'eth0', 'tx', 'off');
    }
    this.exec(gw, 'nft', '-f', join(ROOT, 'examples/gateway-firewall.nft'));
    mkdirSync(this.pinPath);
    sh('mount', ['-t', 'bpf', 'bpf', this.pinPath]);
    return this;
  }

  exec(ns: string, cmd: string, ...args: string[]): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
  }

  /** Start a long-running process in `ns`. */
  spawn(ns: string, cmd: string, args: string[]): Proc {
    const p = new Proc(spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
    this.procs.push(p);
    return p;
  }

  /** Start peer.js MODE ARGS in `ns`. */
  peer(ns: string, mode: string, ...args: (string | number)[]): Proc {
    return this.spawn(ns, process.execPath, [PEER, mode, ...args.map(String)]);
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

  /** Start the daemon in the gateway namespace; resolves once it serves. */
  async startDaemon(config: string): Promise<Proc> {
    const d = this.spawn(this.ns.gw, process.execPath, [CLI, 'daemon', '--config', config]);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`daemon did not start: ${d.stderr}`)), 15000);
      const check = setInterval(() => {
        if (d.stderr.includes('daemon started')) { clearTimeout(t); clearInterval(check); resolve(); }
        if (d.child.exitCode !== null) { clearTimeout(t); clearInterval(check); reject(new Error(`daemon exited ${d.child.exitCode}: ${d.stderr}`)); }
      }, 50);
    });
    return d;
  }

  /** Run the CLI in the gateway namespace; returns exit status and output. */
  cli(...args: string[]): { status: number; stdout: string; stderr: string } {
    try {
      const stdout = execFileSync('ip', ['netns', 'exec', this.ns.gw, process.execPath, CLI, '--socket', this.socket, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return { status: 0, stdout, stderr: '' };
    } catch (e) {
      const x = e as { status: number; stdout: string; stderr: string };
      return { status: x.status, stdout: x.stdout, stderr: x.stderr };
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

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
