/**
 * The loaded data path: the eBPF object opened through libbpf, its maps
 * (pinned under pin_path and adopted from there when they exist), and the TC
 * attachment of its two programs.
 */
import { existsSync, mkdirSync, renameSync, statSync, statfsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as ffi from '../ffi/libbpf.js';
import { BpfError, PorttrigError, errnoName } from '../errors.js';
import {
  ATTACH_CREATED_QDISC, ATTACH_LAN, ATTACH_WAN, ATTACH_XDP, XDP_LAN_PROGRAM, XDP_MAPS, XDP_PROGRAM, XDP_TX_PROGRAMS, XdpConfigCodec, XdpTxCodec, type PtXdpConfig, type PtXdpTx, ConfigCodec, HostCodec, LoadOptsCodec, OPT_TEST_CLOCK, ReclaimCodec, FlowCodec, FlowKeyCodec, FragCodec, FragKeyCodec,
  LpmV4Codec, MAPS, TAIL_CALL_MAPS, PortCodec, PROGRAMS, PT_LAYOUT_VERSION, PT_MAX_RULES, SWEEP_PROGRAM, SWEEP_SECTION, SWEEP_SESSIONS, SWEEP_SESSIONS6, SWEEP_HOST6, SWEEP_LIVE_OFFSET, SWEEP_LIVE6_OFFSET, SweepCodec, PT_TC_HANDLE, PT_TC_PRIORITY, RuleCodec, RuleNameCodec,
  SessionCodec, SessionKeyCodec, Session6KeyCodec, Session6Codec, Flow6KeyCodec, Flow6Codec, Frag6KeyCodec, Frag6Codec, LpmV6Codec,
  type Pt6Session, type Pt6SessionKey, type Pt6Flow, type Pt6FlowKey, type Pt6Frag, type Pt6FragKey, type PtLpmV6,
  type PtConfig, type PtFlow, type PtFlowKey, type PtFrag, type PtFragKey, type PtLpmV4, type PtPort, type PtRule,
  type PtHost, type PtReclaim, type PtRuleName, type PtSession, type PtSessionKey, type PtSweep,
} from './abi.js';
import { IPV4, IPV6, U32, U64, U8 } from './struct.js';
import { PerCpuCounters, RawMap, TypedMap } from './map.js';

/** statfs(2) f_type of a bpffs. */
export const BPF_FS_MAGIC = 0xcafe4a11;
const EEXIST = 17;
const ENOENT = 2;
const EPERM = 1;
const ENODEV = 19;
const EINVAL = 22;
const EOPNOTSUPP = 95;
/** BPF_TC_INGRESS | BPF_TC_EGRESS: the whole clsact qdisc. */
const BPF_TC_CLSACT = 3;
const PERCPU_MAPS = new Set<string>([MAPS.ruleStats, MAPS.pktStats]);

export interface DatapathOptions {
  /** Path of the object: build/porttrig.bpf.o or build/porttrig-noct.bpf.o (src/bpf/conntrack.ts). */
  objectPath: string;
  /** bpffs directory for the pinned maps. */
  pinPath: string;
  /** Map capacities (SPEC limits). */
  limits: { sessions: number; flows: number };
  /** Receives libbpf's own messages (level 0 warn, 1 info, 2 debug). */
  onLibbpfLog?: (level: number, msg: string) => void;
  /**
   * Load the XDP fast path's programs too (datapath.xdp: pt_wan_xdp and the
   * tracepoint programs of bpf/xdp.h); without it they are not loaded at all.
   */
  xdp?: boolean;
  /**
   * Tests only: the data path's clock is Datapath.setTestClock()'s value
   * instead of the kernel's (PT_OPT_TEST_CLOCK), for simulated time.
   */
  testClock?: boolean;
}

/** Global-data sections of the object (bpf/porttrig.bpf.c). */
const OPTS_SECTION = '.rodata.opts';
const CLOCK_SECTION = '.data.clock';

/** The typed maps of the data path. */
export interface DatapathMaps {
  config: TypedMap<number, PtConfig>;
  rules: TypedMap<number, PtRule>;
  ruleNames: TypedMap<number, PtRuleName>;
  ports: TypedMap<number, PtPort>;
  sessions: TypedMap<PtSessionKey, PtSession>;
  hostSessions: TypedMap<string, PtHost>;
  flows: TypedMap<PtFlowKey, PtFlow>;
  /** Translations of fragmented datagrams: written and read by the data path only. */
  frags: TypedMap<PtFragKey, PtFrag>;
  localAddrs: TypedMap<string, number>;
  lanNets: TypedMap<PtLpmV4, number>;
  attach: TypedMap<number, number>;
  /** When the data path last reclaimed a full map (RECLAIM index): data path only. */
  reclaim: TypedMap<number, PtReclaim>;
  ruleStats: PerCpuCounters;
  pktStats: PerCpuCounters;
  /** IPv6 pinholes (SPEC 9): sessions, per-host counts (struct pt6_addr keys), flows. */
  sessions6: TypedMap<Pt6SessionKey, Pt6Session>;
  hostSessions6: TypedMap<string, PtHost>;
  flows6: TypedMap<Pt6FlowKey, Pt6Flow>;
  /** First fragments of IPv6 datagrams passed recently: data path only. */
  frags6: TypedMap<Pt6FragKey, Pt6Frag>;
  /** The gateway's own IPv6 addresses (struct pt6_addr -> 1). */
  localAddrs6: TypedMap<string, number>;
  /** The LAN's IPv6 prefixes (LPM trie; value: the prefix length). */
  lanNets6: TypedMap<PtLpmV6, number>;
}

export type ProgramRole = keyof typeof PROGRAMS;

/** The XDP fast path's maps (bpf/xdp.h). */
export interface XdpMaps { config: TypedMap<number, PtXdpConfig>; tx: TypedMap<number, PtXdpTx>; stats: PerCpuCounters }

/** What one run of the kernel sweep (pt_sweep) is asked to do: struct pt_sweep's inputs. */
export interface SweepRequest {
  /** Map clock (CLOCK_MONOTONIC + CLOCK_BIAS_NS) the expiry decisions are made at. */
  now: bigint;
  /** SWEEP_SESSIONS | SWEEP_FLOWS | SWEEP_RECOUNT | SWEEP_SESSIONS6 | SWEEP_FLOWS6 | SWEEP_HOST6. */
  what: number;
  /** Only this LAN host's IPv4 sessions (no per-rule counts then); default all. */
  host?: string;
  /** With SWEEP_HOST6: only this LAN host's IPv6 sessions (no per-rule counts then). */
  host6?: string;
}

/** One run of the kernel sweep: struct pt_sweep as the program left it, and per-rule live sessions. */
export interface SweepRun extends PtSweep {
  /** Live sessions by rule id (ids with none left out); only after a SWEEP_SESSIONS run of every host. */
  liveByRule: Map<number, number> | null;
  /** Live IPv6 sessions by rule id; only after a SWEEP_SESSIONS6 run without SWEEP_HOST6. */
  liveByRule6: Map<number, number> | null;
}

/**
 * Make sure `dir` is on a bpffs: create it, and mount a bpffs on it unless it
 * already lies on one. Needs CAP_SYS_ADMIN for the mount.
 */
export function ensureBpffs(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new PorttrigError('E_STATE', `cannot create the pin path ${dir}: ${code}`, { pinPath: dir });
  }
  if (statfsSync(dir).type === BPF_FS_MAGIC) return;
  if (ffi.mount('bpf', dir, 'bpf') !== 0) {
    throw new PorttrigError('E_STATE', `cannot mount a bpffs on ${dir}: errno ${ffi.lastErrno()}`, { pinPath: dir });
  }
}

/** A map's definition: what libbpf compares before it reuses a pinned map. */
interface MapDef { type: number; keySize: number; valueSize: number; maxEntries: number; flags: number }

/** struct bpf_map_info, up to map_flags: offsets of the fields read here. */
const MAP_INFO = { size: 96, type: 0, keySize: 8, valueSize: 12, maxEntries: 16, flags: 20 } as const;
/** enum bpf_map_type values porttrig uses, for messages. */
const MAP_TYPE_NAMES: Record<number, string> = { 1: 'hash', 2: 'array', 5: 'percpu_hash', 6: 'percpu_array', 9: 'lru_hash', 11: 'lpm_trie' };
const DEF_FIELDS: [keyof MapDef, string][] = [
  ['type', 'type'], ['keySize', 'key size'], ['valueSize', 'value size'], ['maxEntries', 'max_entries'], ['flags', 'map_flags'],
];

/** The definition of the map pinned at `path`, read from the kernel (bpf_obj_get_info_by_fd). */
function pinnedMapDef(path: string): MapDef {
  const fd = ffi.objGet(path);
  if (fd < 0) throw new BpfError(`open pinned map ${path}`, -fd);
  try {
    const info = Buffer.alloc(MAP_INFO.size);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    const r = ffi.objGetInfo(fd, info, len);
    if (r < 0) throw new BpfError(`info of pinned map ${path}`, -r);
    return {
      type: info.readUInt32LE(MAP_INFO.type), keySize: info.readUInt32LE(MAP_INFO.keySize),
      valueSize: info.readUInt32LE(MAP_INFO.valueSize), maxEntries: info.readUInt32LE(MAP_INFO.maxEntries),
      flags: info.readUInt32LE(MAP_INFO.flags),
    };
  } finally {
    ffi.closeFd(fd);
  }
}

/** The definition of map `name` in an opened (not yet loaded) object. */
function objectMapDef(obj: ffi.Ptr, name: string): MapDef {
  const m = ffi.objectFindMap(obj, name);
  if (!m) throw new BpfError(`find map ${name}`, ENOENT);
  return {
    type: ffi.mapType(m), keySize: ffi.mapKeySize(m), valueSize: ffi.mapValueSize(m),
    maxEntries: ffi.mapMaxEntries(m), flags: ffi.mapFlags(m),
  };
}

const showDef = (field: keyof MapDef, v: number): string =>
  field === 'type' ? (MAP_TYPE_NAMES[v] ?? `type ${v}`) : field === 'flags' ? `0x${v.toString(16)}` : String(v);

/** The layout version written in a pinned pt_config. */
function pinnedLayoutVersion(path: string): number {
  const fd = ffi.objGet(path);
  if (fd < 0) throw new BpfError(`open pinned ${MAPS.config}`, -fd);
  try {
    const v = Buffer.alloc(ConfigCodec.size);
    const r = ffi.mapLookup(fd, U32.format(0), v);
    if (r < 0) throw new BpfError(`read pinned ${MAPS.config}`, -r);
    return ConfigCodec.parse(v).layout_version;
  } finally {
    ffi.closeFd(fd);
  }
}

/** One program porttrig puts on one interface. */
export interface AttachTarget { ifindex: number; role: ProgramRole }

/** What attachAll() changed on one interface, enough to put it back. */
interface AttachUndo {
  ifindex: number;
  /** fd of the program that was at porttrig's handle/priority before, or -1. */
  prevProgFd: number;
  /** A program was there but could not be held (no CAP_SYS_ADMIN): leave the new one. */
  keepNew: boolean;
  createdQdisc: boolean;
  /** pt_attach entry before, or undefined. */
  prevRecord: number | undefined;
}

export class Datapath {
  readonly maps: DatapathMaps;
  /** True when the maps were adopted from pin_path rather than created. */
  readonly adopted: boolean;
  private obj: ffi.Ptr | null;

  private constructor(obj: ffi.Ptr, maps: DatapathMaps, adopted: boolean, readonly pinPath: string,
    private readonly clock: RawMap | null, private readonly sweepCounts: RawMap) {
    this.obj = obj;
    this.maps = maps;
    this.adopted = adopted;
  }

  private sweepInput(req: SweepRequest): Buffer {
    return SweepCodec.format({
      now: req.now, what: req.what, host: req.host ?? '0.0.0.0', sessions_next_ns: 0n, flows_next_ns: 0n,
      sessions: 0, sessions_live: 0, sessions_expired: 0, sessions_closed: 0,
      flow_entries: 0, flows_live: 0, flow_entries_removed: 0, hosts_fixed: 0, hosts: 0,
      host6: req.host6 ?? '::', sessions6_next_ns: 0n, flows6_next_ns: 0n,
      sessions6: 0, sessions6_live: 0, sessions6_expired: 0, sessions6_closed: 0,
      flow6_entries: 0, flows6_live: 0, flow6_entries_removed: 0, hosts6_fixed: 0, hosts6: 0,
    });
  }

  private sweepOutput(req: SweepRequest, ctx: Buffer): SweepRun {
    const out = SweepCodec.parse(ctx);
    const want4 = (req.what & SWEEP_SESSIONS) !== 0 && !req.host;
    const want6 = (req.what & SWEEP_SESSIONS6) !== 0 && !(req.what & SWEEP_HOST6);
    let liveByRule: Map<number, number> | null = null;
    let liveByRule6: Map<number, number> | null = null;
    if (want4 || want6) {
      const v = this.sweepCounts.lookup(U32.format(0));
      if (!v) throw new BpfError(`read ${SWEEP_SECTION}`, ENOENT);
      const read = (base: number): Map<number, number> => {
        const m = new Map<number, number>();
        for (let id = 1; id < PT_MAX_RULES; id++) {
          const n = v.readUInt32LE(base + 4 * id);
          if (n) m.set(id, n);
        }
        return m;
      };
      if (want4) liveByRule = read(SWEEP_LIVE_OFFSET);
      if (want6) liveByRule6 = read(SWEEP_LIVE6_OFFSET);
    }
    return { ...out, liveByRule, liveByRule6 };
  }

  /**
   * Run the kernel sweep (pt_sweep, BPF_PROG_TEST_RUN) in this thread:
   * removes expired sessions and flows that are over with the data path's
   * own decisions and counts what lives, without copying the maps to user
   * space. Blocks for the walk (a few ms per 100 000 entries): for the rare
   * synchronous needs (a manual open at the host limit); the daemon's
   * periodic sweep uses sweepAsync(). Needs CAP_BPF.
   */
  sweep(req: SweepRequest): SweepRun {
    const ctx = this.sweepInput(req);
    const r = ffi.progRunSyscall(this.programFdByName(SWEEP_PROGRAM), ctx);
    if (r < 0) throw new BpfError(`run ${SWEEP_PROGRAM}`, -r);
    return this.sweepOutput(req, ctx);
  }

  /**
   * sweep() on a libuv worker thread: the event loop (control socket,
   * /metrics) goes on while the kernel walks the maps. Runs must not overlap
   * (the per-rule counts are one buffer): the caller serialises them.
   */
  sweepAsync(req: SweepRequest): Promise<SweepRun> {
    let ctx: ReturnType<Datapath['sweepInput']>;
    let fd: number;
    try {
      ctx = this.sweepInput(req);
      fd = this.programFdByName(SWEEP_PROGRAM);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      ffi.progRunSyscallAsync(fd, ctx, (err, r) => {
        if (err) { reject(err); return; }
        if (r < 0) { reject(new BpfError(`run ${SWEEP_PROGRAM}`, -r)); return; }
        try { resolve(this.sweepOutput(req, ctx)); } catch (e) { reject(e); }
      });
    });
  }

  /**
   * Set the data path's clock (map clock: CLOCK_MONOTONIC + PT_CLOCK_BIAS_NS)
   * of a data path loaded with `testClock`; every program run reads it until
   * the next call.
   */
  setTestClock(ns: bigint): void {
    if (!this.clock) throw new PorttrigError('E_STATE', 'setTestClock: the data path was not loaded with testClock');
    this.clock.update(U32.format(0), U64.format(ns), 0);
  }

  /**
   * Open the object, size its maps from `limits`, and load it into the kernel,
   * reusing maps already pinned under pin_path (libbpf LIBBPF_PIN_BY_NAME).
   * Pinned state of another layout version or other capacities is refused with
   * E_STATE before anything changes. Needs CAP_BPF (or root).
   */
  static load(opts: DatapathOptions): Datapath {
    if (opts.onLibbpfLog) ffi.setLibbpfPrint(opts.onLibbpfLog);
    ensureBpffs(opts.pinPath);
    const obj = ffi.objectOpen(opts.objectPath, opts.pinPath);
    if (!obj) throw new BpfError(`open ${opts.objectPath}`, ffi.lastErrno());
    try {
      const size = (name: string, n: number): void => {
        const m = ffi.objectFindMap(obj, name);
        if (!m) throw new BpfError(`find map ${name}`, ENOENT);
        const r = ffi.mapSetMaxEntries(m, n);
        if (r < 0) throw new BpfError(`size map ${name}`, -r);
      };
      // The IPv6 maps are sized like the IPv4 ones (SPEC 9: the limits hold per family).
      for (const [v4, v6] of [[MAPS.sessions, MAPS.sessions6], [MAPS.hostSessions, MAPS.hostSessions6]] as const) {
        size(v4, opts.limits.sessions);
        size(v6, opts.limits.sessions);
      }
      size(MAPS.flows, 2 * opts.limits.flows);
      size(MAPS.flows6, 2 * opts.limits.flows);
      const optsMap = ffi.objectFindMap(obj, OPTS_SECTION);
      if (!optsMap) throw new BpfError(`find map ${OPTS_SECTION}`, ENOENT);
      const r0 = ffi.mapSetInitialValue(optsMap, LoadOptsCodec.format({ flags: opts.testClock ? OPT_TEST_CLOCK : 0 }));
      if (r0 < 0) throw new BpfError(`set ${OPTS_SECTION}`, -r0);
      for (const name of [XDP_PROGRAM, XDP_LAN_PROGRAM, ...XDP_TX_PROGRAMS]) {
        const p = ffi.objectFindProgram(obj, name);
        if (!p) throw new BpfError(`find program ${name}`, ENOENT);
        const ra = ffi.programSetAutoload(p, opts.xdp === true);
        if (ra < 0) throw new BpfError(`set autoload of ${name}`, -ra);
      }
      const adopted = Datapath.checkPinnedState(obj, opts);
      const r = ffi.objectLoad(obj);
      if (r < 0) throw new BpfError(`load ${opts.objectPath}`, -r, 'see the libbpf log above for the verifier output');
      const raw = (name: string): RawMap => {
        const m = ffi.objectFindMap(obj, name);
        if (!m) throw new BpfError(`find map ${name}`, ENOENT);
        const fd = ffi.mapFd(m);
        return new RawMap({
          name, fd, keySize: ffi.mapKeySize(m), valueSize: ffi.mapValueSize(m), maxEntries: ffi.mapMaxEntries(m),
          perCpu: PERCPU_MAPS.has(name),
        });
      };
      const maps: DatapathMaps = {
        config: new TypedMap(raw(MAPS.config), U32, ConfigCodec),
        rules: new TypedMap(raw(MAPS.rules), U32, RuleCodec),
        ruleNames: new TypedMap(raw(MAPS.ruleNames), U32, RuleNameCodec),
        ports: new TypedMap(raw(MAPS.ports), U32, PortCodec),
        sessions: new TypedMap(raw(MAPS.sessions), SessionKeyCodec, SessionCodec),
        hostSessions: new TypedMap(raw(MAPS.hostSessions), IPV4, HostCodec),
        flows: new TypedMap(raw(MAPS.flows), FlowKeyCodec, FlowCodec),
        frags: new TypedMap(raw(MAPS.frags), FragKeyCodec, FragCodec),
        localAddrs: new TypedMap(raw(MAPS.localAddrs), IPV4, U8),
        lanNets: new TypedMap(raw(MAPS.lanNets), LpmV4Codec, U8),
        attach: new TypedMap(raw(MAPS.attach), U32, U32),
        reclaim: new TypedMap(raw(MAPS.reclaim), U32, ReclaimCodec),
        ruleStats: new PerCpuCounters(raw(MAPS.ruleStats)),
        pktStats: new PerCpuCounters(raw(MAPS.pktStats)),
        sessions6: new TypedMap(raw(MAPS.sessions6), Session6KeyCodec, Session6Codec),
        hostSessions6: new TypedMap(raw(MAPS.hostSessions6), IPV6, HostCodec),
        flows6: new TypedMap(raw(MAPS.flows6), Flow6KeyCodec, Flow6Codec),
        frags6: new TypedMap(raw(MAPS.frags6), Frag6KeyCodec, Frag6Codec),
        localAddrs6: new TypedMap(raw(MAPS.localAddrs6), IPV6, U8),
        lanNets6: new TypedMap(raw(MAPS.lanNets6), LpmV6Codec, U8),
      };
      const dp = new Datapath(obj, maps, adopted, opts.pinPath, opts.testClock ? raw(CLOCK_SECTION) : null, raw(SWEEP_SECTION));
      if (!adopted) {
        maps.config.set(0, {
          wan_addr: '0.0.0.0', wan_ifindex: 0, layout_version: PT_LAYOUT_VERSION, sessions_per_host: 0,
          local_addrs: [], local_addrs_all: 0, wan_flags: 0,
        });
      }
      return dp;
    } catch (e) {
      ffi.objectClose(obj);
      throw e;
    }
  }

  /**
   * Decide whether the pins under pin_path can be adopted by `obj` (opened and
   * sized, not loaded): every map must be pinned, each with this object's
   * type, key size, value size, max_entries and flags, and pt_config must carry
   * this PT_LAYOUT_VERSION. All pins are checked before anything is adopted,
   * and every difference is reported at once (E_STATE), with what to do; the
   * pins are left as they are. True when there is state to adopt, false when
   * pin_path holds none of porttrig's maps.
   */
  private static checkPinnedState(obj: ffi.Ptr, opts: DatapathOptions): boolean {
    const names = Object.values(MAPS);
    const pinned = names.filter((n) => existsSync(join(opts.pinPath, n)));
    if (pinned.length === 0) return false;
    const problems: string[] = [];
    const missing = names.filter((n) => !pinned.includes(n));
    if (missing.length > 0) problems.push(`${missing.join(', ')}: not pinned (incomplete state)`);
    // Differences that only limits explain: these three maps are sized from them.
    const resizable = new Set<string>([MAPS.sessions, MAPS.hostSessions, MAPS.flows, MAPS.sessions6, MAPS.hostSessions6, MAPS.flows6]);
    let limitsOnly = missing.length === 0;
    const pinnedMax = new Map<string, number>();
    for (const name of pinned) {
      const have = pinnedMapDef(join(opts.pinPath, name));
      const want = objectMapDef(obj, name);
      pinnedMax.set(name, have.maxEntries);
      const diffs = DEF_FIELDS.filter(([f]) => have[f] !== want[f]);
      if (diffs.length === 0) continue;
      problems.push(`${name}: ${diffs.map(([f, label]) => `${label} ${showDef(f, have[f])} pinned, ${showDef(f, want[f])} in this object`).join('; ')}`);
      if (!resizable.has(name) || diffs.some(([f]) => f !== 'maxEntries')) limitsOnly = false;
    }
    if (pinned.includes(MAPS.config) && !problems.some((p) => p.startsWith(`${MAPS.config}:`))) {
      const version = pinnedLayoutVersion(join(opts.pinPath, MAPS.config));
      if (version !== PT_LAYOUT_VERSION) {
        problems.unshift(`${MAPS.config}: layout version ${version} pinned, ${PT_LAYOUT_VERSION} in this object`);
        limitsOnly = false;
      }
    }
    if (problems.length === 0) return true;
    const lost = 'open sessions and flows are lost';
    const advice = limitsOnly
      ? `the state was made with limits.sessions: ${pinnedMax.get(MAPS.sessions)}, limits.flows: ${(pinnedMax.get(MAPS.flows) ?? 0) / 2}; ` +
        `restore those limits, or run "porttrig detach" and start again (${lost})`
      : `it was made by another porttrig version or is damaged; run "porttrig detach" and start again (${lost}), ` +
        'or go back to the porttrig version that made it';
    throw new PorttrigError('E_STATE', `cannot adopt the pinned state in ${opts.pinPath}; nothing was changed:\n  ${problems.join('\n  ')}\n${advice}`,
      { pinPath: opts.pinPath, problems });
  }

  private object(): ffi.Ptr {
    if (!this.obj) throw new PorttrigError('E_STATE', 'data path object already closed');
    return this.obj;
  }

  /** File descriptor of one of the two programs. */
  programFd(role: ProgramRole): number {
    return this.programFdByName(PROGRAMS[role]);
  }

  private programFdByName(name: string): number {
    const p = ffi.objectFindProgram(this.object(), name);
    if (!p) throw new BpfError(`find program ${name}`, ENOENT);
    return ffi.programFd(p);
  }

  /**
   * Attach the programs to clsact ingress of every target, in order, as one
   * step: either all are attached or, when one fails, every interface done so
   * far is put back as it was (the program that was there before, or none; a
   * clsact qdisc porttrig created is removed; the pt_attach record restored).
   * Each attach replaces the filter at porttrig's handle and priority in place
   * (BPF_TC_F_REPLACE), so across a daemon restart every packet meets either
   * the old program or the new one. Creates the clsact qdisc if missing and
   * records in pt_attach that it did; tolerates one that exists. Idempotent.
   * Needs CAP_NET_ADMIN; the rollback to an earlier daemon's programs also
   * needs CAP_SYS_ADMIN (to hold them by id), else those interfaces keep the new ones.
   */
  attachAll(targets: readonly AttachTarget[]): void {
    const done: AttachUndo[] = [];
    try {
      for (const t of targets) done.push(this.attachOne(t));
    } catch (e) {
      const failed: string[] = [];
      for (const u of done.reverse()) {
        try { this.undoAttach(u); } catch (ue) { failed.push(String((ue as Error).message)); }
      }
      if (failed.length > 0 && e instanceof PorttrigError) {
        throw new PorttrigError(e.code, `${e.message}; rolling back also failed: ${failed.join('; ')}`, e.details, { cause: e });
      }
      throw e;
    } finally {
      for (const u of done) if (u.prevProgFd >= 0) ffi.closeFd(u.prevProgFd);
    }
  }

  private attachOne({ ifindex, role }: AttachTarget): AttachUndo {
    const hook = { ifindex, attach_point: ffi.BPF_TC_INGRESS };
    const prevId = attachedProgramId(ifindex);
    let prevProgFd = prevId ? ffi.progGetFdById(prevId) : -1;
    // Holding another program by id needs CAP_SYS_ADMIN, which the systemd
    // unit does not grant. Without it, a failure later leaves this
    // interface on the new program: it serves the same pinned state.
    const keepNew = prevId !== 0 && prevProgFd === -EPERM;
    if (keepNew) prevProgFd = -1;
    else if (prevId && prevProgFd < 0) {
      throw new PorttrigError('E_ATTACH', `cannot hold the program attached on ifindex ${ifindex} (id ${prevId}) to restore it on failure: ${errnoName(-prevProgFd)}`, { ifindex });
    }
    const prevRecord = this.maps.attach.get(ifindex);
    const h = ffi.tcHookCreate(hook);
    if (h < 0 && h !== -EEXIST) {
      if (prevProgFd >= 0) ffi.closeFd(prevProgFd);
      throw new PorttrigError('E_ATTACH', `create clsact qdisc on ifindex ${ifindex}: ${errnoName(-h)}`, { ifindex });
    }
    const undo: AttachUndo = { ifindex, prevProgFd, keepNew, createdQdisc: h === 0, prevRecord };
    const created = undo.createdQdisc ? ATTACH_CREATED_QDISC : (prevRecord ?? 0) & ATTACH_CREATED_QDISC;
    const record = ((prevRecord ?? 0) & ~(ATTACH_LAN | ATTACH_WAN)) | created | (role === 'lan' ? ATTACH_LAN : ATTACH_WAN);
    try {
      // Recorded before the attach: a crash in between leaves a record that detach can act on.
      this.maps.attach.set(ifindex, record);
      const { ret } = ffi.tcAttach(hook, {
        prog_fd: this.programFd(role), flags: ffi.BPF_TC_F_REPLACE, handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY,
      });
      if (ret < 0) {
        throw new PorttrigError('E_ATTACH', `attach ${PROGRAMS[role]} to ifindex ${ifindex} (handle 0x${PT_TC_HANDLE.toString(16)}, priority ${PT_TC_PRIORITY}): ${errnoName(-ret)}` +
          (ret === -EINVAL ? '; another filter may hold that priority' : ''), { ifindex });
      }
    } catch (e) {
      try { this.undoAttach(undo); } finally { if (prevProgFd >= 0) ffi.closeFd(prevProgFd); }
      throw e;
    }
    return undo;
  }

  /** Put one interface back as attachOne() found it. */
  private undoAttach(u: AttachUndo): void {
    if (u.keepNew) return;
    const hook = { ifindex: u.ifindex, attach_point: ffi.BPF_TC_INGRESS };
    if (u.prevProgFd >= 0) {
      const { ret } = ffi.tcAttach(hook, { prog_fd: u.prevProgFd, flags: ffi.BPF_TC_F_REPLACE, handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY });
      if (ret < 0) throw new PorttrigError('E_ATTACH', `restore the earlier program on ifindex ${u.ifindex}: ${errnoName(-ret)}`, { ifindex: u.ifindex });
    } else {
      detachInterface(u.ifindex, u.createdQdisc ? ATTACH_CREATED_QDISC : 0);
    }
    if (u.prevRecord === undefined) this.maps.attach.delete(u.ifindex);
    else this.maps.attach.set(u.ifindex, u.prevRecord);
  }

  /**
   * Detach from interfaces recorded in pt_attach that are not in `keep` (an
   * interface dropped from the config between two daemons). Returns their ifindexes.
   */
  detachOthers(keep: ReadonlySet<number>): number[] {
    const gone: number[] = [];
    for (const [ifindex, flags] of [...this.maps.attach.entries()]) {
      if (keep.has(ifindex)) continue;
      detachInterface(ifindex, flags);
      this.maps.attach.delete(ifindex);
      gone.push(ifindex);
    }
    return gone;
  }

  /**
   * Pin the object's prog arrays (TAIL_CALL_MAPS) under pin_path, replacing
   * those of an earlier object: a prog array keeps its programs only while
   * user space holds it (a pin does), so that the attached programs keep
   * their IPv6 path while no daemon runs (SPEC 6). Call it once this object's
   * programs are attached (the earlier object's are then detached): each
   * array is pinned under a temporary name, then renamed over the old pin in
   * one step, so there is always one pinned. Idempotent.
   */
  pinTailCalls(): void {
    for (const name of TAIL_CALL_MAPS) {
      const m = ffi.objectFindMap(this.object(), name);
      if (!m) throw new BpfError(`find map ${name}`, ENOENT);
      const final = join(this.pinPath, name);
      const tmp = `${final}_new`;  // bpffs refuses dots in names
      if (existsSync(tmp)) unlinkSync(tmp);
      const r = ffi.objPin(ffi.mapFd(m), tmp);
      if (r < 0) throw new BpfError(`pin ${name} at ${tmp}`, -r);
      renameSync(tmp, final);
    }
  }

  /** True when the XDP fast path's programs were loaded (DatapathOptions.xdp). */
  get xdpLoaded(): boolean {
    const p = ffi.objectFindProgram(this.object(), XDP_PROGRAM);
    return p !== null && ffi.programFd(p) >= 0;
  }

  /** File descriptor of pt_wan_xdp (loaded only with DatapathOptions.xdp). */
  xdpProgramFd(): number {
    return this.programFdByName(XDP_PROGRAM);
  }

  private xdpMapsCache: XdpMaps | null = null;

  /** The XDP fast path's maps (not pinned: this object's own). */
  xdpMaps(): XdpMaps {
    if (this.xdpMapsCache) return this.xdpMapsCache;
    const raw = (name: string, perCpu: boolean): RawMap => {
      const m = ffi.objectFindMap(this.object(), name);
      if (!m) throw new BpfError(`find map ${name}`, ENOENT);
      return new RawMap({ name, fd: ffi.mapFd(m), keySize: ffi.mapKeySize(m), valueSize: ffi.mapValueSize(m), maxEntries: ffi.mapMaxEntries(m), perCpu });
    };
    this.xdpMapsCache = {
      config: new TypedMap(raw(XDP_MAPS.config, false), U32, XdpConfigCodec),
      tx: new TypedMap(raw(XDP_MAPS.tx, false), U32, XdpTxCodec),
      stats: new PerCpuCounters(raw(XDP_MAPS.stats, true)),
    };
    return this.xdpMapsCache;
  }

  /**
   * Attach the XDP fast path to the WAN device `ifindex` (native mode only),
   * whose own MAC is `mac`: the tracepoint programs first (pinned links under
   * pin_path, each replacing an earlier daemon's in one rename), then
   * pt_wan_xdp, replacing an earlier porttrig's in place. An XDP program that
   * is not porttrig's is never replaced (E_ATTACH). Records PT_ATTACH_XDP in
   * pt_attach before the attach, so that detach finds it. Idempotent.
   */
  attachXdp(ifindex: number, mac: string): void {
    if (!this.xdpLoaded) throw new PorttrigError('E_STATE', 'attachXdp: the data path was loaded without its XDP programs');
    const maps = this.xdpMaps();
    maps.config.set(0, { wan_mac: mac, all_off: maps.config.get(0)?.all_off ?? 0, wan_ifindex: ifindex, netns_ino: statSync('/proc/self/ns/net').ino });
    for (const name of XDP_TX_PROGRAMS) {
      const p = ffi.objectFindProgram(this.object(), name);
      if (!p) throw new BpfError(`find program ${name}`, ENOENT);
      const final = join(this.pinPath, xdpLinkPin(name));
      const tmp = `${final}_new`;
      if (existsSync(tmp)) unlinkSync(tmp);
      const r = ffi.attachPinned(p, tmp);
      if (r < 0) throw new PorttrigError('E_ATTACH', `attach ${name} (tracepoint ${name.replace(/^pt_/, '')}): ${errnoName(-r)}`, { program: name });
      renameSync(tmp, final);
    }
    this.attachXdpProgram(ifindex, XDP_PROGRAM);
  }

  /**
   * Attach pt_lan_xdp_pass to the LAN device `ifindex`, whose driver takes
   * XDP frames only with an XDP program of its own (it answered ENXIO).
   * Same rules as attachXdp(): recorded in pt_attach, never over another
   * program.
   */
  attachLanXdpPass(ifindex: number): void {
    if (!this.xdpLoaded) throw new PorttrigError('E_STATE', 'attachLanXdpPass: the data path was loaded without its XDP programs');
    this.attachXdpProgram(ifindex, XDP_LAN_PROGRAM);
  }

  private attachXdpProgram(ifindex: number, program: typeof XDP_PROGRAM | typeof XDP_LAN_PROGRAM): void {
    const prev = ffi.xdpProgId(ifindex);
    if (prev < 0) throw new PorttrigError('E_ATTACH', `query the XDP program of ifindex ${ifindex}: ${errnoName(-prev)}`, { ifindex });
    if (prev > 0) {
      // Without CAP_SYS_ADMIN the name cannot be read: pt_attach's record says whose it is.
      const name = ffi.progNameById(prev) ?? ((this.maps.attach.get(ifindex) ?? 0) & ATTACH_XDP ? program : null);
      if (name !== program) {
        throw new PorttrigError('E_ATTACH', `ifindex ${ifindex} already runs XDP program id ${prev} (${name ?? 'unknown'}); porttrig does not replace another XDP program: remove it, or set datapath.xdp: false`, { ifindex, progId: prev });
      }
    }
    this.maps.attach.set(ifindex, (this.maps.attach.get(ifindex) ?? 0) | ATTACH_XDP);
    const r = ffi.xdpAttach(ifindex, this.programFdByName(program), ffi.XDP_FLAGS_DRV_MODE);
    if (r < 0) {
      if (prev === 0) this.maps.attach.set(ifindex, (this.maps.attach.get(ifindex) ?? 0) & ~ATTACH_XDP);
      throw new PorttrigError('E_ATTACH', `attach ${program} to ifindex ${ifindex} in native mode: ${errnoName(-r)}` +
        (r === -EOPNOTSUPP ? ' (the driver has no native XDP: set datapath.xdp: false)' : ''), { ifindex });
    }
  }

  /** Remove the tracepoint links' pins (datapath.xdp off): their programs go with them. Idempotent. */
  unpinXdpLinks(): number {
    let n = 0;
    for (const name of XDP_TX_PROGRAMS) {
      for (const p of [join(this.pinPath, xdpLinkPin(name)), join(this.pinPath, `${xdpLinkPin(name)}_new`)]) {
        if (existsSync(p)) { unlinkSync(p); n++; }
      }
    }
    return n;
  }

  /**
   * Take porttrig's XDP program off `ifindex` if pt_attach records it there
   * (datapath.xdp turned off, or the WAN changed). The tracepoint links stay
   * pinned while another WAN may use them; detachAll() removes them.
   */
  detachXdp(ifindex: number): boolean {
    const flags = this.maps.attach.get(ifindex);
    if (flags === undefined || !(flags & ATTACH_XDP)) return false;
    detachXdpProgram(ifindex);
    this.maps.attach.set(ifindex, flags & ~ATTACH_XDP);
    return true;
  }

  /** Close the object. Attached programs and pinned maps stay. Idempotent. */
  close(): void {
    if (this.obj) ffi.objectClose(this.obj);
    this.obj = null;
    this.xdpMapsCache = null;
  }
}

/** The program id attached by porttrig on `ifindex`, or 0 if none. */
export function attachedProgramId(ifindex: number): number {
  const { ret, progId } = ffi.tcQuery({ ifindex, attach_point: ffi.BPF_TC_INGRESS }, { handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY });
  return ret === 0 ? progId : 0;
}

/** The pin name (under pin_path) of a tracepoint program's link: bpffs refuses dots. */
export const xdpLinkPin = (program: string): string => `${program}_link`;

/**
 * Remove porttrig's XDP program (pt_wan_xdp, pt_lan_xdp_pass) from `ifindex`,
 * which pt_attach records as having one; another program, or none, is left
 * alone. A name that cannot be read (no CAP_SYS_ADMIN) is taken as the
 * record says: porttrig's.
 */
export function detachXdpProgram(ifindex: number): void {
  const id = ffi.xdpProgId(ifindex);
  if (id <= 0) return;
  const name = ffi.progNameById(id);
  if (name !== null && name !== XDP_PROGRAM && name !== XDP_LAN_PROGRAM) return;
  const r = ffi.xdpDetach(ifindex, ffi.XDP_FLAGS_DRV_MODE);
  if (r < 0 && r !== -ENODEV) throw new PorttrigError('E_ATTACH', `detach ${name ?? `XDP program id ${id}`} from ifindex ${ifindex}: ${errnoName(-r)}`, { ifindex });
}

/**
 * Remove porttrig's filter from clsact ingress of `ifindex`, the clsact
 * qdisc too when porttrig created it, and its XDP program when pt_attach
 * records one (`flags`: PT_ATTACH_*). Missing pieces (no filter, no qdisc,
 * no such interface any more) are fine: idempotent.
 */
export function detachInterface(ifindex: number, flags: number): void {
  const createdQdisc = (flags & ATTACH_CREATED_QDISC) !== 0;
  if (flags & ATTACH_XDP) detachXdpProgram(ifindex);
  const gone = (r: number): boolean => r === -ENOENT || r === -EINVAL /* no qdisc */ || r === -ENODEV;
  const r = ffi.tcDetach({ ifindex, attach_point: ffi.BPF_TC_INGRESS }, { handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY });
  if (r < 0 && !gone(r)) {
    throw new PorttrigError('E_ATTACH', `detach from ifindex ${ifindex}: ${errnoName(-r)}`, { ifindex });
  }
  if (createdQdisc) {
    const d = ffi.tcHookDestroy({ ifindex, attach_point: BPF_TC_CLSACT });
    if (d < 0 && !gone(d)) throw new PorttrigError('E_ATTACH', `remove clsact from ifindex ${ifindex}: ${errnoName(-d)}`, { ifindex });
  }
}
