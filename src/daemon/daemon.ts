/**
 * The porttrig daemon: loads (or adopts) the data path, programs the rules,
 * attaches the programs, follows interface addresses, sweeps expired state,
 * and serves the control socket. It never prints and never exits: errors are
 * thrown as PorttrigError, events go to the injected Logger.
 */
import { networkInterfaces } from 'node:os';
import { Datapath, attachedProgramId } from '../bpf/datapath.js';
import { loadConfigFile } from '../config/load.js';
import type { Config } from '../config/types.js';
import { formatOpenSpec, formatTriggerSpec } from '../config/ports.js';
import { ConfigError, PorttrigError, errnoName } from '../errors.js';
import { canonicalIpv6 } from '../bpf/struct.js';
import { compileRules } from '../rules/compile.js';
import {
  PorttrigState, type CloseRequest, type CloseResult, type FlowView, type LanSubnet, type OpenRequest, type OpenResult,
  type SessionView,
} from '../core/state.js';
import { hasCap, missingRequiredCaps, ownCaps } from '../doctor/caps.js';
import { bpfObjectOverride, bpfObjectPaths, version } from '../paths.js';
import { CT_LOST, chooseCtObject, probeCtKfunc } from '../bpf/conntrack.js';
import type { Logger } from './log.js';
import {
  allIpv4, allIpv6, hasDevice, ifindexOf, ipv4Of, ipv6Of, isBridge, lanPrefixes6, lanQueueingProblem, linkInfo, linkMac, programRole, watchAddresses, xdpWanProblem,
  type AddressWatch, type LinkInfo,
} from './netinfo.js';
import { armingClass } from '../core/addr.js';
import { FAMILIES, PROGRAMS, XDP_LAN_PROGRAM, XDP_PROGRAM, XDP_TX_BRIDGE, XDP_TX_RETRY_NS, XDP_TX_SHAPED, type Family } from '../bpf/abi.js';
import { ControlServer, socketAlive } from './control.js';
import { DaemonMetrics } from '../metrics/daemon.js';
import { SweepScheduler, type Table } from './sweeper.js';
import { monotonicNs, sweepResult } from '../core/state.js';
import { DEFAULT_SWEEP_POLICY } from '../core/sweep.js';
import { listFlows, listSessions, type ListFilter } from '../core/listing.js';

/** libbpf's level for warnings (LIBBPF_WARN); info and debug are 1 and 2. */
const LIBBPF_WARN = 0;
/** A failed load can log thousands of verifier lines; its end says why. */
const MAX_LIBBPF_LINES_SHOWN = 40;
/** How often the sweep scheduler looks whether a table is due (its deadlines are met within this). */
const SWEEP_POLL_MS = 200;
/** Idle timeouts are at most 7 d (config schema): the walk interval without enabled rules. */
const MAX_IDLE_MS = 7 * 86400 * 1000;
/** pt_config.wan_addr when the WAN interface has no IPv4 address. */
const NO_ADDR = '0.0.0.0';

export interface DaemonOptions {
  configPath: string;
  logger: Logger;
  /**
   * How often addresses are re-read, and the shortest interval between two
   * walks of a table for its counts (expired state is removed at its deadline).
   */
  sweepIntervalMs?: number;
  /** Load this object as it is (else PORTTRIG_BPF_OBJECT, else the build chosen by `conntrack`). */
  objectPath?: string;
  /**
   * `auto` (default): the build with the conntrack check when the kernel
   * offers its kfunc, else the one without (a warning says what is lost);
   * `off`: always the one without (`porttrig daemon --no-conntrack`).
   */
  conntrack?: 'auto' | 'off';
}

/** Whether the loaded data path checks conntrack before it opens a UDP flow (bpf/conntrack.h). */
export interface ConntrackView {
  /** null: an object given by path (objectPath, PORTTRIG_BPF_OBJECT), not chosen here. */
  check: boolean | null;
  reason: string;
}

export interface StatusView {
  version: string;
  pid: number;
  started_at: string;
  config: string;
  pin_path: string;
  adopted: boolean;
  wan: { interface: string; ifindex: number; address: string | null } & LinkView;
  lan: ({ interface: string; ifindex: number } & LinkView)[];
  attached: { interface: string; program_id: number }[];
  conntrack: ConntrackView;
  rules: number;
  /** Live sessions and flows of both families as the last sweep counted them (at `counted_at`). */
  sessions: number;
  flows: number;
  /** The same per family. */
  by_family: Record<Family, { sessions: number; flows: number }>;
  /** The LAN's IPv6 prefixes the data path knows (interfaces' global and unique-local ones, and lan_networks). */
  lan_ipv6_prefixes: string[];
  counted_at: string | null;
  /** The XDP fast path (datapath.xdp): null when the config has it off. */
  xdp: XdpStatus | null;
}

export interface XdpStatus {
  /** pt_wan_xdp is attached to the WAN now. */
  attached: boolean;
  /** Why it is not, when it should be. */
  error: string | null;
  /** LAN interfaces whose flows stay on TC, and why. */
  tc_only: { interface: string; reason: string }[];
}

/** What the daemon knows of a configured interface's link (status, metrics). */
export interface LinkView {
  /** The interface exists now. */
  present: boolean;
  /** ARPHRD name (ether, ppp, none, ...); null while it does not exist. */
  link_type: string | null;
  /** The program attached there (pt_*_ingress or pt_*_ingress_l3), null when none is. */
  program: string | null;
  /** Why it is not attached, when it exists and is not. */
  error: string | null;
}

/** A configured interface as the daemon follows it (rtnetlink link events). */
interface Link {
  name: string;
  side: 'lan' | 'wan';
  /** 0 while the interface does not exist. */
  ifindex: number;
  /** The ifindex it had when it last existed (0: never seen), for moving state to a new one. */
  lastIfindex: number;
  info: LinkInfo | null;
  /** The program attached on `ifindex`, or null. */
  program: string | null;
  error: string | null;
}

/** The XDP fast path as the daemon keeps it (datapath.xdp). */
interface XdpView {
  /** The WAN ifindex pt_wan_xdp is attached to; 0: not attached. */
  ifindex: number;
  /** The WAN MAC written to pt_xdp_config. */
  mac: string | null;
  /** Why it is not attached, when it should be. */
  error: string | null;
  /** LAN ifindexes of pt_xdp_tx already reported. */
  reported: Set<number>;
  /** LAN name -> the ifindex whose queueing was last checked (lanQueueingProblem()). */
  queueingChecked: Map<string, number>;
  /** LAN ifindex -> why XDP frames must not go there (its queueing). */
  shaped: Map<number, string>;
  /** LAN ifindexes pt_lan_xdp_pass was attached to (or tried). */
  lanPass: Set<number>;
}

export interface RuleView {
  name: string;
  id: number;
  enabled: boolean;
  trigger: string;
  open: string[];
  idle_timeout_ms: number;
  peer: string;
  conflict: string;
  kill_flows_on_expiry: boolean;
  /** Counters of both families summed. */
  trigger_hits: number;
  sessions_opened: number;
  flows_opened: number;
  /** The same counters per family. */
  by_family: Record<Family, RuleCounters>;
}

export interface RuleCounters { trigger_hits: number; sessions_opened: number; flows_opened: number }

const EOPNOTSUPP = 95;
const ENXIO = 6;

export class Daemon {
  private config: Config;
  private readonly dp: Datapath;
  private readonly state: PorttrigState;
  private timer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private readonly sweeper: SweepScheduler;
  private addrWatch: AddressWatch | null = null;
  private control: ControlServer | null = null;
  private metrics: DaemonMetrics | null = null;
  private wanAddr: string | null = null;
  /** The last WAN address the data path translated to (from the pins at start), to drop its flows when it is replaced. */
  private lastWanAddr: string | null = null;
  private localKey = '';
  private localKey6 = '';
  /** The IPv6 prefixes last written to pt6_lan_nets. */
  private lanNets6: string[] = [];
  /** The configured interfaces, by name, as last seen (followLinks()). */
  private links = new Map<string, Link>();
  private readonly xdp: XdpView = { ifindex: 0, mac: null, error: null, reported: new Set(), queueingChecked: new Map(), shaped: new Map(), lanPass: new Set() };
  private readonly startedAt = new Date();
  private stopped = false;

  private constructor(private readonly opts: DaemonOptions, config: Config, dp: Datapath, private readonly conntrack: ConntrackView) {
    this.config = config;
    this.dp = dp;
    this.state = new PorttrigState(dp.maps, monotonicNs, dp);
    const intervalNs = BigInt(opts.sweepIntervalMs ?? 1000) * 1_000_000n;
    this.sweeper = new SweepScheduler({
      run: (req) => dp.sweepAsync(req),
      clock: monotonicNs,
      minIdleNs: () => this.minIdleNs(),
      policy: { ...DEFAULT_SWEEP_POLICY, minIntervalNs: intervalNs },
      wakeWithinMs: Math.min(SWEEP_POLL_MS, opts.sweepIntervalMs ?? 1000),
      onWalk: (table, run, seconds) => this.onWalk(table, sweepResult(run), seconds),
      onError: (table, error) => opts.logger.error('sweep failed', { table, error }),
    });
    const pinned = dp.maps.config.get(0)?.wan_addr;
    this.lastWanAddr = pinned && pinned !== NO_ADDR ? pinned : null;
  }

  /**
   * Start: validate the config, load or adopt the data path, attach to the
   * interfaces, program the rules, start sweeping and serving. Until the
   * attach, a failure changes nothing (another daemon running, unusable
   * pinned state, bad config: refused first). The attach is all or nothing
   * (Datapath.attachAll). After it, the new programs stay attached whatever
   * happens: they forward from the same pinned state as the old ones.
   */
  static async start(opts: DaemonOptions): Promise<Daemon> {
    const log = opts.logger;
    const config = loadConfigFile(opts.configPath);
    // Capabilities, not uid 0: the systemd unit runs with just these.
    const lacking = missingRequiredCaps();
    if (lacking.length > 0) {
      throw new PorttrigError('E_PERMISSION', `porttrig daemon lacks ${lacking.join(', ')}: run it as root or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (see packaging/porttrig.service)`, { missing: lacking });
    }
    // A configured interface that does not exist yet is waited for (pppd
    // creates ppp0 once connected); one whose link type the data path cannot
    // handle is refused before anything changes.
    for (const name of [config.interfaces.wan, ...config.interfaces.lan]) {
      const info = linkInfo(name);
      if (!info) log.warn('configured interface does not exist; the daemon attaches when it appears', { interface: name, side: name === config.interfaces.wan ? 'wan' : 'lan' });
      else if (!info.kind) throw linkTypeError(info);
    }
    if (config.datapath.xdp) {
      // A WAN that can never run XDP is a configuration error; one with
      // upper devices now may lose them (followXdp() waits for that).
      const wan = linkInfo(config.interfaces.wan);
      if (wan?.kind && wan.kind !== 'ethernet') {
        throw new PorttrigError('E_CONFIG', `datapath.xdp: ${xdpWanProblem(wan)!}; set datapath.xdp: false`, { interface: config.interfaces.wan });
      }
    }
    compileRules(config.rules);  // throws E_CONFIG for tables the schema cannot judge, before anything changes
    // A second daemon would replace the first one's programs before failing on
    // the socket: refuse first.
    if (await socketAlive(config.control.socket)) {
      throw new PorttrigError('E_STATE', `another porttrig daemon already answers on ${config.control.socket}; stop it first`, { socket: config.control.socket });
    }

    // libbpf's own messages are debug lines; its warnings during the load are
    // kept, and shown as errors only if the load fails (the verifier's reasons).
    const warnings: string[] = [];
    const onLibbpfLog = (level: number, msg: string): void => {
      log.debug('libbpf', { level, text: msg.trimEnd() });
      if (level === LIBBPF_WARN) warnings.push(msg.trimEnd());
    };
    const { objectPath, conntrack } = Daemon.chooseObject(opts, onLibbpfLog);
    let dp: Datapath;
    try {
      dp = Datapath.load({ objectPath, pinPath: config.datapath.pinPath, limits: config.limits, onLibbpfLog, xdp: config.datapath.xdp });
    } catch (e) {
      const shown = warnings.slice(-MAX_LIBBPF_LINES_SHOWN);
      if (warnings.length > shown.length) log.error('libbpf', { text: `${warnings.length - shown.length} earlier lines omitted; --log-level debug shows them all` });
      for (const text of shown) log.error('libbpf', { text });
      throw e;
    }
    const d = new Daemon(opts, config, dp, conntrack);
    try {
      d.attachAll();
      // Our programs are attached: their tail calls (the IPv6 path) must
      // outlive this process, the earlier daemon's need not.
      dp.pinTailCalls();
      d.program(config);
      d.followAddresses();
      // The first walk of both tables, so that counts exist before anyone asks.
      await d.sweeper.sweepNow();
      d.metrics = await DaemonMetrics.start({
        listen: config.metrics.listen, bpfStats: config.metrics.bpfStats, datapath: dp, interfaces: config.interfaces, logger: log,
        counts: () => d.sweeper.entryCounts(),
      });
      d.control = await ControlServer.listen(config.control.socket, d, log);
    } catch (e) {
      await d.metrics?.close();
      dp.close();
      throw e;
    }
    const w = watchAddresses(() => d.onAddressEvent());
    if ('error' in w) log.warn('no rtnetlink address events; addresses are re-read every sweep only', { errno: w.error });
    else d.addrWatch = w;
    log.info('daemon started', {
      version, config: opts.configPath, pin_path: config.datapath.pinPath, adopted: dp.adopted,
      rules: config.rules.length, wan: config.interfaces.wan, lan: config.interfaces.lan.join(','),
      conntrack_check: conntrack.check === null ? 'unknown' : conntrack.check ? 'on' : 'off', object: objectPath,
    });
    d.timer = setInterval(() => d.tick(), opts.sweepIntervalMs ?? 1000);
    d.sweepTimer = setInterval(() => d.sweeper.poll(), Math.min(SWEEP_POLL_MS, opts.sweepIntervalMs ?? 1000));
    return d;
  }

  /**
   * The object to load: one given by path as it is; else the build with the
   * conntrack check when the kernel offers its kfunc (src/bpf/conntrack.ts),
   * else the one without, with a warning that says what is lost and why.
   */
  private static chooseObject(opts: DaemonOptions, onLibbpfLog: (level: number, msg: string) => void): { objectPath: string; conntrack: ConntrackView } {
    const log = opts.logger;
    const given = opts.objectPath ?? bpfObjectOverride;
    if (given) return { objectPath: given, conntrack: { check: null, reason: `object given by path: ${given}` } };
    const probe = probeCtKfunc({ onLibbpfLog });
    const choice = chooseCtObject(probe, { forceOff: opts.conntrack === 'off', sysAdmin: hasCap(ownCaps(), 'CAP_SYS_ADMIN') });
    if (choice.check) log.info('conntrack check on', { reason: choice.reason });
    else log.warn('conntrack check off', { reason: choice.reason, lost: CT_LOST, fix: choice.fix });
    return { objectPath: choice.check ? bpfObjectPaths.conntrack : bpfObjectPaths.noct, conntrack: { check: choice.check, reason: choice.reason } };
  }

  /** Compile and write the rules, keeping the ids of rules that still exist. */
  private program(config: Config): void {
    const compiled = compileRules(config.rules, this.state.ruleIds());
    this.state.applyRules(compiled);
  }

  /**
   * Attach to the configured interfaces that exist (all or none), each with
   * the program of its link type, then leave the ones no longer configured
   * (or gone). Interfaces that do not exist yet are attached by followLinks()
   * when they appear.
   */
  private attachAll(): void {
    const { wan, lan } = this.config.interfaces;
    const links: Link[] = [...lan.map((name) => ({ name, side: 'lan' as const })), { name: wan, side: 'wan' as const }].map(({ name, side }) => {
      const info = linkInfo(name);
      const program = info?.kind ? PROGRAMS[programRole(side, info.kind)] : null;
      return { name, side, ifindex: info?.ifindex ?? 0, lastIfindex: info?.ifindex ?? 0, info, program, error: null };
    });
    const present = links.filter((l) => l.info?.kind);
    this.dp.attachAll(present.map((l) => ({ ifindex: l.ifindex, role: programRole(l.side, l.info!.kind!) })));
    const gone = this.dp.detachOthers(new Set(present.map((l) => l.ifindex)));
    if (gone.length > 0) this.opts.logger.info('detached from interfaces no longer configured', { ifindexes: gone.join(',') });
    this.links = new Map(links.map((l) => [l.name, l]));
    const w = this.links.get(wan)!;
    this.state.setWanLink(w.ifindex, w.info?.kind === 'l3');
    for (const l of links) {
      if (l.info) this.opts.logger.info('attached', { interface: l.name, side: l.side, ifindex: l.ifindex, link_type: l.info.typeName, program: l.program });
    }
    this.followXdp(true);
  }

  /**
   * Keep the XDP fast path (datapath.xdp, bpf/xdp.h) where the config wants
   * it: on the WAN as it is now (attached again after the WAN comes back with
   * a new ifindex, its MAC followed), taken off a WAN that has an upper device
   * (a VLAN: see xdpWanProblem()), whoever attached it, and off when the
   * config turns it off. LAN interfaces that must not get XDP frames are
   * marked in pt_xdp_tx before the program is attached, and again after a
   * reload: bridges (checked on every call), and LANs whose qdisc or egress
   * filters XDP frames would bypass (checked when the program is attached,
   * on reload and when a LAN gets a new ifindex). An interface the tracepoint
   * programs marked is reported once. `strict` (start): an attach failure
   * throws; later ones are logged and retried on the next tick.
   */
  private followXdp(strict: boolean): void {
    const log = this.opts.logger;
    const w = this.links.get(this.config.interfaces.wan)!;
    if (!this.config.datapath.xdp) {
      for (const l of this.links.values()) {
        if (l.ifindex && this.dp.detachXdp(l.ifindex)) log.info('XDP fast path detached (datapath.xdp is off)', { interface: l.name, ifindex: l.ifindex });
      }
      if (strict) this.dp.unpinXdpLinks();
      return;
    }
    const x = this.xdp;
    if (x.ifindex !== 0 && x.ifindex !== w.ifindex) { x.ifindex = 0; x.mac = null; }
    if (!w.ifindex || !w.info?.kind) return;
    const problem = xdpWanProblem(w.info);
    if (problem) {
      // Also an earlier daemon's program, which pt_attach records.
      if (this.dp.detachXdp(w.ifindex)) log.info('XDP fast path detached', { interface: w.name, ifindex: w.ifindex });
      x.ifindex = 0;
      if (x.error !== problem) log.error('XDP fast path not attached; inbound packets take the TC path', { interface: w.name, error: problem });
      x.error = problem;
      return;
    }
    const mac = linkMac(w.name);
    const attaching = x.ifindex === 0;
    // Queueing is asked of tc when attaching, not on every retry of a failed attach.
    this.markLans(attaching && x.error === null);
    if (attaching || mac !== x.mac) {
      try {
        if (!mac) throw new PorttrigError('E_ATTACH', `cannot read the link-layer address of ${w.name}`, { interface: w.name });
        this.dp.attachXdp(w.ifindex, mac);
      } catch (e) {
        if (strict) throw e;
        const msg = e instanceof Error ? e.message : String(e);
        if (x.error !== msg) log.error('XDP fast path not attached; inbound packets take the TC path', { interface: w.name, error: msg });
        x.error = msg;
        return;
      }
      if (attaching) log.info('XDP fast path attached', { interface: w.name, ifindex: w.ifindex, program: XDP_PROGRAM, mac });
      x.ifindex = w.ifindex;
      x.mac = mac;
      x.error = null;
    }
    for (const [ifindex, t] of this.dp.xdpMaps().tx.entries()) {
      if (x.reported.has(ifindex)) continue;
      x.reported.add(ifindex);
      const lan = [...this.links.values()].find((l) => l.side === 'lan' && l.ifindex === ifindex);
      const fields = { interface: lan?.name ?? `ifindex ${ifindex}`, ifindex };
      if (t.err === XDP_TX_BRIDGE) log.info('LAN interface left to the TC path: a bridge cannot transmit XDP frames', fields);
      else if (t.err === XDP_TX_SHAPED) log.info('LAN interface left to the TC path', { ...fields, reason: x.shaped.get(ifindex) ?? 'shaped' });
      else if (t.err === -ENXIO && lan && hasDevice(lan.name) && !x.lanPass.has(ifindex)) {
        // A NIC driver that takes XDP frames only with an XDP program of its own.
        x.lanPass.add(ifindex);
        try {
          this.dp.attachLanXdpPass(ifindex);
          this.dp.xdpMaps().tx.delete(ifindex);
          x.reported.delete(ifindex);
          log.info(`XDP_PASS program attached to a LAN interface whose driver takes XDP frames only with one (${XDP_LAN_PROGRAM})`, fields);
        } catch (e) {
          log.warn('LAN interface left to the TC path: its driver takes XDP frames only with an XDP program of its own, which could not be attached', { ...fields, error: e });
        }
      } else {
        const lasting = t.err === -EOPNOTSUPP || t.err === -ENXIO;
        log.warn(`LAN interface left to the TC path${lasting ? '' : ' for a second after each failure'}: the kernel could not transmit an XDP frame there (${errnoName(-t.err)})`, {
          ...fields, failures: t.failures,
          fix: lasting ? 'a veth needs NAPI on its peer (an XDP program or GRO there); a NIC may need an XDP program of its own; "porttrig reload" retries' : undefined,
        });
      }
    }
  }

  /**
   * Mark in pt_xdp_tx the LAN interfaces that must not get XDP frames: bridges
   * always, and with `queueing` (or for a LAN not checked at its ifindex
   * yet), those whose qdisc or egress filters XDP frames would bypass.
   */
  private markLans(queueing: boolean): void {
    const tx = this.dp.xdpMaps().tx;
    const x = this.xdp;
    for (const l of this.links.values()) {
      if (l.side !== 'lan' || !l.ifindex) continue;
      const mark = (err: number): void => {
        const t = tx.get(l.ifindex);
        if (!t || t.err <= 0) tx.set(l.ifindex, { since_ns: monotonicNs(), last_ns: monotonicNs(), err, failures: 0 });
      };
      if (isBridge(l.name)) { mark(XDP_TX_BRIDGE); continue; }
      if (!queueing && x.queueingChecked.get(l.name) === l.ifindex) continue;
      x.queueingChecked.set(l.name, l.ifindex);
      const why = lanQueueingProblem(l.name);
      if (why) { x.shaped.set(l.ifindex, why); mark(XDP_TX_SHAPED); } else {
        x.shaped.delete(l.ifindex);
        if (tx.get(l.ifindex)?.err === XDP_TX_SHAPED) { tx.delete(l.ifindex); x.reported.delete(l.ifindex); }
      }
    }
  }

  /** Forget which LAN interfaces XDP cannot send to (reload): each is tried again; bridges and shaped LANs are marked again first. */
  private resetXdpTx(): void {
    if (!this.config.datapath.xdp || !this.dp.xdpLoaded) return;
    const tx = this.dp.xdpMaps().tx;
    this.markLans(true);
    for (const [k, t] of [...tx.entries()]) if (t.err <= 0) tx.delete(k);
    const c = this.dp.xdpMaps().config;
    const cur = c.get(0);
    if (cur?.all_off) c.set(0, { ...cur, all_off: 0 });
    this.xdp.reported.clear();
  }

  /**
   * Follow the configured interfaces: called on every rtnetlink link or
   * address event and on every tick. An interface that appears (first time,
   * or again with a new ifindex: pppd's ppp0 after a redial) gets the
   * program of its link type at once; the WAN's new ifindex goes to
   * pt_config (outbound flows leave by it), a LAN's to the sessions and flows
   * that named the old one. One that goes away is logged and waited for:
   * sessions and flows stay pinned, and nothing is forwarded through it
   * meanwhile. An attach that fails is retried on the next call.
   */
  private followLinks(): void {
    const log = this.opts.logger;
    for (const l of this.links.values()) {
      const info = linkInfo(l.name);
      const ifindex = info?.ifindex ?? 0;
      if (ifindex === l.ifindex && (ifindex === 0 || l.program || l.error)) continue;
      const old = l.ifindex;
      if (old !== 0 && old !== ifindex) {
        // The kernel removed the device's qdiscs with it; the record would
        // name an ifindex that a later interface may get.
        this.dp.maps.attach.delete(old);
        if (ifindex === 0) log.warn('interface gone; waiting for it to come back (sessions and flows are kept)', { interface: l.name, side: l.side, ifindex: old });
      }
      const last = l.lastIfindex;
      l.ifindex = ifindex;
      if (ifindex !== 0) l.lastIfindex = ifindex;
      l.info = info;
      l.program = null;
      l.error = null;
      if (l.side === 'wan') this.state.setWanLink(0, false);
      if (!info) continue;
      if (!info.kind) {
        const e = linkTypeError(info);
        l.error = e.message;
        log.error('interface not attached', { interface: l.name, code: e.code, error: e.message });
        continue;
      }
      const role = programRole(l.side, info.kind);
      try {
        this.dp.attachAll([{ ifindex, role }]);
      } catch (e) {
        l.error = e instanceof Error ? e.message : String(e);
        log.error('attach failed; retrying at the next sweep', { interface: l.name, ifindex, error: e });
        continue;
      }
      l.program = PROGRAMS[role];
      if (l.side === 'wan') this.state.setWanLink(ifindex, info.kind === 'l3');
      else if (last !== 0 && last !== ifindex) {
        const n = this.state.moveLanIfindex(last, ifindex);
        if (n > 0) log.info('sessions and flows moved to the new LAN interface', { interface: l.name, entries: n });
      }
      log.info(last === 0 ? 'interface appeared; attached' : 'interface came back; attached', {
        interface: l.name, side: l.side, ifindex, previous_ifindex: last || undefined, link_type: info.typeName, program: l.program,
      });
    }
  }

  /** The status of the configured interface `name`. */
  private linkView(name: string): LinkView {
    const l = this.links.get(name);
    return {
      present: !!l && l.ifindex !== 0, link_type: l?.info?.typeName ?? null,
      program: l?.program ?? null, error: l?.error ?? null,
    };
  }

  /** An interface or an IPv4 address changed somewhere: re-read at once rather than at the next sweep. */
  private onAddressEvent(): void {
    if (this.stopped) return;
    try {
      this.followLinks();
      this.followAddresses();
      this.followXdp(false);
    } catch (e) {
      this.opts.logger.error('address update failed', { error: e });
    }
  }

  /**
   * Read the WAN address, the gateway's own addresses and the LAN subnets,
   * and write what changed. Called at start, on every rtnetlink address
   * event and on every tick (the fallback), so a new WAN address (DHCP renew)
   * is used within milliseconds. Flows accepted on a replaced address are
   * dropped; an address that only goes away keeps them (it may come back).
   */
  private followAddresses(): void {
    const { wan, lan } = this.config.interfaces;
    const table = networkInterfaces();  // one getifaddrs() for every question below
    const wanAddr = ipv4Of(wan, table)[0]?.address ?? null;
    if (wanAddr !== this.wanAddr) {
      this.state.setRuntime(wanAddr ?? NO_ADDR, ifindexOf(wan), this.config.limits.sessionsPerHost);
      if (wanAddr) this.opts.logger.info('WAN address', { interface: wan, address: wanAddr, previous: this.wanAddr ?? 'none' });
      else this.opts.logger.warn('WAN interface has no IPv4 address; nothing is forwarded until it has one', { interface: wan });
      this.wanAddr = wanAddr;
      if (wanAddr && this.lastWanAddr && wanAddr !== this.lastWanAddr) {
        const n = this.state.dropFlowsOfWanAddr(this.lastWanAddr);
        if (n > 0) this.opts.logger.info('flows on the replaced WAN address dropped', { address: this.lastWanAddr, entries: n });
      }
      if (wanAddr) this.lastWanAddr = wanAddr;
    }
    const local = allIpv4(table);
    // The LAN interfaces' own subnets, and the extra prefixes routed behind
    // them (interfaces.lan_networks; the IPv4 ones: the data path is IPv4).
    const nets = [...lan.flatMap((n) => ipv4Of(n, table).map((a) => a.cidr)), ...this.extraLanNets()];
    const key = `${local.join(',')}|${nets.join(',')}`;
    if (key !== this.localKey) {
      this.state.setLocalAddrs(local);
      this.state.setLanNets(nets);
      this.localKey = key;
    }
    this.followAddresses6(table);
  }

  /**
   * IPv6 (SPEC 9): the LAN interfaces' global and unique-local prefixes
   * (never link-local) and the IPv6 prefixes of interfaces.lan_networks go to
   * pt6_lan_nets; every IPv6 address of the gateway (all interfaces, but
   * link-local) to pt6_local_addrs. Written when they change: SLAAC and
   * privacy addresses come and go, each an rtnetlink event.
   */
  private followAddresses6(table: ReturnType<typeof networkInterfaces>): void {
    const log = this.opts.logger;
    const local6 = allIpv6(table).sort();
    const nets6 = [...new Set([...this.config.interfaces.lan.flatMap((n) => lanPrefixes6(n, table)), ...this.extraLanNets6()])];
    const key6 = `${local6.join(',')}|${nets6.join(',')}`;
    if (key6 === this.localKey6) return;
    const a = this.state.setLocalAddrs6(local6);
    const n = this.state.setLanNets6(nets6);
    if (a.dropped.length > 0) log.warn('more IPv6 addresses on the gateway than pt6_local_addrs holds; these are not known as its own', { dropped: a.dropped.join(',') });
    if (n.dropped.length > 0) log.warn('more LAN IPv6 prefixes than pt6_lan_nets holds; these are not LAN', { dropped: n.dropped.join(',') });
    const before = new Set(this.lanNets6);
    const prefixes = nets6.slice(0, n.written);
    if (prefixes.length !== this.lanNets6.length || prefixes.some((p) => !before.has(p))) {
      log.info('LAN IPv6 prefixes', { prefixes: prefixes.join(',') || 'none', local_addresses: a.written });
    }
    this.lanNets6 = prefixes;
    this.localKey6 = key6;
  }

  private tick(): void {
    try {
      this.followLinks();
      this.followAddresses();
      this.followXdp(false);
    } catch (e) {
      this.opts.logger.error('address update failed', { error: e });
    }
  }

  /** A walk of the kernel sweep finished: record its time, log what it removed. */
  private onWalk(table: Table, r: ReturnType<typeof sweepResult>, seconds: number): void {
    this.metrics?.observeSweep(seconds);
    this.opts.logger.debug('sweep walk', { table, seconds });
    if (r.sessionsExpired || r.sessionsClosed || r.flowsRemoved) {
      this.opts.logger.info('sweep', {
        table, sessions_expired: r.sessionsExpired, sessions_closed: r.sessionsClosed, flows_removed: r.flowsRemoved,
        ipv6_sessions_expired: r.ipv6.sessionsExpired, ipv6_sessions_closed: r.ipv6.sessionsClosed, ipv6_flows_removed: r.ipv6.flowsRemoved, seconds,
      });
    }
  }

  /** The shortest idle timeout of an enabled rule: no session opened after a walk expires sooner. */
  private minIdleNs(): bigint {
    const ms = this.config.rules.filter((r) => r.enabled).map((r) => r.idleTimeoutMs);
    return BigInt(ms.length ? Math.min(...ms) : MAX_IDLE_MS) * 1_000_000n;
  }

  /**
   * Apply the config file again (SPEC 6). A file that fails validation is
   * refused with its errors and nothing changes. Rules keep their identity
   * by name; sessions of removed rules are closed by the next sweep.
   */
  reload(): { rules: number } {
    const next = loadConfigFile(this.opts.configPath);
    const cur = this.config;
    const fixed: [string, unknown, unknown][] = [
      ['interfaces', cur.interfaces, next.interfaces], ['limits.sessions', cur.limits.sessions, next.limits.sessions],
      ['limits.flows', cur.limits.flows, next.limits.flows], ['datapath.pin_path', cur.datapath.pinPath, next.datapath.pinPath],
      ['control.socket', cur.control.socket, next.control.socket], ['metrics.listen', cur.metrics.listen, next.metrics.listen],
      ['metrics.bpf_stats', cur.metrics.bpfStats, next.metrics.bpfStats], ['datapath.xdp', cur.datapath.xdp, next.datapath.xdp],
    ];
    const changed = fixed.filter(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b)).map(([n]) => n);
    if (changed.length > 0) {
      throw new ConfigError(this.opts.configPath, changed.map((path) => ({ path, message: 'cannot change on reload; restart the daemon' })));
    }
    this.program(next);
    this.config = next;
    this.sweeper.invalidate();  // removed or disabled rules: their sessions and flows go at once
    this.resetXdpTx();
    this.wanAddr = null;  // re-write runtime settings (sessions_per_host may have changed)
    this.followAddresses();
    this.opts.logger.info('config reloaded', { rules: next.rules.length });
    return { rules: next.rules.length };
  }

  /** The IPv4 prefixes of interfaces.lan_networks. */
  private extraLanNets(): string[] {
    return this.config.interfaces.lanNetworks.filter((n) => !n.includes(':'));
  }

  /** The IPv6 prefixes of interfaces.lan_networks, in canonical form. */
  private extraLanNets6(): string[] {
    return this.config.interfaces.lanNetworks.filter((n) => n.includes(':')).map((n) => {
      const [addr, len] = n.split('/');
      return `${canonicalIpv6(addr!) ?? addr}/${len}`;
    });
  }

  /**
   * The LAN subnets with their interfaces, as they are now. An extra prefix
   * (interfaces.lan_networks) is reached through the first LAN interface:
   * the kernel's route to it picks the next hop (bpf_redirect_neigh).
   */
  private lanSubnets(): LanSubnet[] {
    const table = networkInterfaces();
    const own = this.config.interfaces.lan.flatMap((name) => {
      const ifindex = ifindexOf(name);
      return [
        ...ipv4Of(name, table).map((a) => ({ interface: name, ifindex, cidr: a.cidr, address: a.address })),
        // IPv6: the prefixes of the interface's global and unique-local addresses (SPEC 9).
        ...ipv6Of(name, table).filter((a) => armingClass(a.class)).map((a) => ({ interface: name, ifindex, cidr: a.cidr, address: a.address })),
      ];
    });
    const first = this.config.interfaces.lan[0]!;
    const extra = [...this.extraLanNets(), ...this.extraLanNets6()].map((cidr) => ({ interface: first, ifindex: ifindexOf(first), cidr, address: '' }));
    return [...own, ...extra];
  }

  /** `porttrig open`: see PorttrigState.openSession. */
  openSession(req: OpenRequest): OpenResult {
    const r = this.state.openSession(req, this.lanSubnets());
    this.opts.logger.info('session opened by hand', { rule: r.rule, host: r.host, peer: r.peer ?? undefined, action: r.action, previous_host: r.previous_host ?? undefined });
    return r;
  }

  /** `porttrig close`: see PorttrigState.closeSession. */
  closeSession(req: CloseRequest): CloseResult {
    const r = this.state.closeSession(req);
    this.sweeper.invalidate();  // counts
    this.opts.logger.info('session closed by hand', { rule: r.rule, host: r.host, sessions: r.closed.length, flows_removed: r.flows_removed, flows_kept: r.flows_kept });
    return r;
  }

  /** Live sessions matching `filter`, streamed (core/listing.ts). */
  sessions(filter: ListFilter = {}): AsyncGenerator<SessionView> { return listSessions(this.state, filter, monotonicNs()); }
  /** Accepted flows matching `filter`, streamed (core/listing.ts). */
  flows(filter: ListFilter = {}): AsyncGenerator<FlowView> { return listFlows(this.state, filter, monotonicNs()); }

  rules(): RuleView[] {
    const ids = this.state.ruleIds();
    return this.config.rules.map((r) => {
      const id = ids.get(r.name) ?? 0;
      return {
        name: r.name, id, enabled: r.enabled,
        trigger: formatTriggerSpec(r.trigger),
        open: r.open.map(formatOpenSpec),
        idle_timeout_ms: r.idleTimeoutMs, peer: r.peer, conflict: r.conflict, kill_flows_on_expiry: r.killFlowsOnExpiry,
        ...ruleCounters(this.state, id),
      };
    });
  }

  /**
   * The daemon's view; the session and flow numbers are those of the last
   * walks of the kernel sweep (`counted_at`), never a walk of the maps here.
   */
  status(): StatusView {
    const counts = this.sweeper.entryCounts();
    const { wan, lan } = this.config.interfaces;
    const ifaces = [...lan, wan];
    const sum = (m: Map<number, number> | undefined): number => [...(m?.values() ?? [])].reduce((a, b) => a + b, 0);
    const by_family = {
      ipv4: { sessions: sum(counts?.sessionsByRule), flows: counts?.flowsLive ?? 0 },
      ipv6: { sessions: sum(counts?.sessionsByRule6), flows: counts?.flowsLive6 ?? 0 },
    };
    return {
      version, pid: process.pid, started_at: this.startedAt.toISOString(), config: this.opts.configPath,
      pin_path: this.config.datapath.pinPath, adopted: this.dp.adopted,
      wan: { interface: wan, ifindex: ifindexOf(wan), address: this.wanAddr, ...this.linkView(wan) },
      lan: lan.map((n) => ({ interface: n, ifindex: ifindexOf(n), ...this.linkView(n) })),
      attached: ifaces.map((n) => ({ interface: n, program_id: attachedProgramId(ifindexOf(n)) })),
      conntrack: this.conntrack,
      rules: this.config.rules.length,
      sessions: by_family.ipv4.sessions + by_family.ipv6.sessions,
      flows: by_family.ipv4.flows + by_family.ipv6.flows,
      by_family,
      lan_ipv6_prefixes: [...this.lanNets6],
      counted_at: this.sweeper.countedAt()?.toISOString() ?? null,
      xdp: this.xdpStatus(),
    };
  }

  private xdpStatus(): XdpStatus | null {
    if (!this.config.datapath.xdp) return null;
    const x = this.xdp;
    const now = monotonicNs();
    const tcOnly = [...this.dp.xdpMaps().tx.entries()].flatMap(([ifindex, t]) => {
      const lasting = t.err > 0 || t.err === -EOPNOTSUPP || t.err === -ENXIO;
      if (!lasting && now - t.last_ns >= XDP_TX_RETRY_NS) return [];
      const lan = [...this.links.values()].find((l) => l.side === 'lan' && l.ifindex === ifindex);
      const reason = t.err === XDP_TX_BRIDGE ? 'a bridge' : t.err === XDP_TX_SHAPED ? x.shaped.get(ifindex) ?? 'shaped'
        : `transmit failed (${errnoName(-t.err).split(':')[0]})${lasting ? '' : ', retried'}`;
      return [{ interface: lan?.name ?? `ifindex ${ifindex}`, reason }];
    });
    return { attached: x.ifindex !== 0, error: x.error, tc_only: tcOnly };
  }

  /**
   * Stop sweeping and serving. The programs stay attached and the maps stay
   * pinned: forwarding goes on until a new daemon adopts it (SPEC 6).
   * Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweeper.close();
    await this.sweeper.idle();  // the object stays open until the kernel sweep under way is back
    this.addrWatch?.close();
    await this.control?.close();
    await this.metrics?.close();
    this.dp.close();
    this.opts.logger.info('daemon stopped; data path left attached');
  }
}

/** A rule's counters, both families summed and each on its own. */
export function ruleCounters(state: Pick<PorttrigState, 'counter'>, id: number): RuleCounters & { by_family: Record<Family, RuleCounters> } {
  const of = (family: Family): RuleCounters => ({
    trigger_hits: Number(state.counter(id, 'trigger_hits', family)),
    sessions_opened: Number(state.counter(id, 'sessions_opened', family)),
    flows_opened: Number(state.counter(id, 'flows_opened', family)),
  });
  const by_family = Object.fromEntries(FAMILIES.map((f) => [f, of(f)])) as Record<Family, RuleCounters>;
  return {
    trigger_hits: by_family.ipv4.trigger_hits + by_family.ipv6.trigger_hits,
    sessions_opened: by_family.ipv4.sessions_opened + by_family.ipv6.sessions_opened,
    flows_opened: by_family.ipv4.flows_opened + by_family.ipv6.flows_opened,
    by_family,
  };
}

/** E_LINK_TYPE for an interface whose link type the data path cannot handle. */
function linkTypeError(info: LinkInfo): PorttrigError {
  return new PorttrigError('E_LINK_TYPE',
    `interface ${info.name} has link type ${info.typeName} (ARPHRD ${info.type}), which the data path cannot handle; ` +
    'porttrig handles Ethernet-like links (ether), ppp, TUN/WireGuard (none) and raw-IP modems (rawip)',
    { interface: info.name, ifindex: info.ifindex, link_type: info.typeName, arphrd: info.type });
}
