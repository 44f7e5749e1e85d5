/**
 * The loaded data path: the eBPF object opened through libbpf, its maps
 * (pinned under pin_path and adopted from there when they exist), and the TC
 * attachment of its two programs.
 */
import { existsSync, mkdirSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import * as ffi from '../ffi/libbpf.js';
import { BpfError, PorttrigError } from '../errors.js';
import {
  ATTACH_CREATED_QDISC, ATTACH_LAN, ATTACH_WAN, ConfigCodec, FlowCodec, FlowKeyCodec, FragCodec, FragKeyCodec,
  LpmV4Codec, MAPS, PortCodec, PROGRAMS, PT_LAYOUT_VERSION, PT_TC_HANDLE, PT_TC_PRIORITY, RuleCodec, RuleNameCodec,
  SessionCodec, SessionKeyCodec,
  type PtConfig, type PtFlow, type PtFlowKey, type PtFrag, type PtFragKey, type PtLpmV4, type PtPort, type PtRule,
  type PtRuleName, type PtSession, type PtSessionKey,
} from './abi.js';
import { IPV4, U32, U8 } from './struct.js';
import { PerCpuCounters, RawMap, TypedMap } from './map.js';

/** statfs(2) f_type of a bpffs. */
export const BPF_FS_MAGIC = 0xcafe4a11;
const EEXIST = 17;
const ENOENT = 2;
const PERCPU_MAPS = new Set<string>([MAPS.ruleStats, MAPS.pktStats]);

export interface DatapathOptions {
  /** Path of porttrig.bpf.o. */
  objectPath: string;
  /** bpffs directory for the pinned maps. */
  pinPath: string;
  /** Map capacities (SPEC limits). */
  limits: { sessions: number; flows: number };
  /** Receives libbpf's own messages (level 0 warn, 1 info, 2 debug). */
  onLibbpfLog?: (level: number, msg: string) => void;
}

/** The typed maps of the data path. */
export interface DatapathMaps {
  config: TypedMap<number, PtConfig>;
  rules: TypedMap<number, PtRule>;
  ruleNames: TypedMap<number, PtRuleName>;
  ports: TypedMap<number, PtPort>;
  sessions: TypedMap<PtSessionKey, PtSession>;
  hostSessions: TypedMap<string, number>;
  flows: TypedMap<PtFlowKey, PtFlow>;
  /** Translations of fragmented datagrams: written and read by the data path only. */
  frags: TypedMap<PtFragKey, PtFrag>;
  localAddrs: TypedMap<string, number>;
  lanNets: TypedMap<PtLpmV4, number>;
  attach: TypedMap<number, number>;
  ruleStats: PerCpuCounters;
  pktStats: PerCpuCounters;
}

export type ProgramRole = keyof typeof PROGRAMS;

/**
 * Make sure `dir` is on a bpffs: create it, and mount a bpffs on it unless it
 * already lies on one. Needs CAP_SYS_ADMIN for the mount.
 */
export function ensureBpffs(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (statfsSync(dir).type === BPF_FS_MAGIC) return;
  if (ffi.mount('bpf', dir, 'bpf') !== 0) {
    throw new PorttrigError('E_STATE', `cannot mount a bpffs on ${dir}: errno ${ffi.lastErrno()}`, { pinPath: dir });
  }
}

/** Read a pinned map's (key size, value size, max entries) without libbpf. */
function pinnedMapInfo(path: string): { keySize: number; valueSize: number; maxEntries: number } | null {
  if (!existsSync(path)) return null;
  const fd = ffi.objGet(path);
  if (fd < 0) throw new BpfError(`open pinned map ${path}`, -fd);
  try {
    const info = Buffer.alloc(96);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    const r = ffi.objGetInfo(fd, info, len);
    if (r < 0) throw new BpfError(`info of pinned map ${path}`, -r);
    return { keySize: info.readUInt32LE(8), valueSize: info.readUInt32LE(12), maxEntries: info.readUInt32LE(16) };
  } finally {
    ffi.closeFd(fd);
  }
}

export class Datapath {
  readonly maps: DatapathMaps;
  /** True when the maps were adopted from pin_path rather than created. */
  readonly adopted: boolean;
  private obj: ffi.Ptr | null;

  private constructor(obj: ffi.Ptr, maps: DatapathMaps, adopted: boolean, readonly pinPath: string) {
    this.obj = obj;
    this.maps = maps;
    this.adopted = adopted;
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
    const adopted = Datapath.checkPinnedState(opts);

    const obj = ffi.objectOpen(opts.objectPath, opts.pinPath);
    if (!obj) throw new BpfError(`open ${opts.objectPath}`, ffi.lastErrno());
    try {
      const size = (name: string, n: number): void => {
        const m = ffi.objectFindMap(obj, name);
        if (!m) throw new BpfError(`find map ${name}`, ENOENT);
        const r = ffi.mapSetMaxEntries(m, n);
        if (r < 0) throw new BpfError(`size map ${name}`, -r);
      };
      size(MAPS.sessions, opts.limits.sessions);
      size(MAPS.hostSessions, opts.limits.sessions);
      size(MAPS.flows, 2 * opts.limits.flows);
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
        hostSessions: new TypedMap(raw(MAPS.hostSessions), IPV4, U32),
        flows: new TypedMap(raw(MAPS.flows), FlowKeyCodec, FlowCodec),
        frags: new TypedMap(raw(MAPS.frags), FragKeyCodec, FragCodec),
        localAddrs: new TypedMap(raw(MAPS.localAddrs), IPV4, U8),
        lanNets: new TypedMap(raw(MAPS.lanNets), LpmV4Codec, U8),
        attach: new TypedMap(raw(MAPS.attach), U32, U32),
        ruleStats: new PerCpuCounters(raw(MAPS.ruleStats)),
        pktStats: new PerCpuCounters(raw(MAPS.pktStats)),
      };
      const dp = new Datapath(obj, maps, adopted, opts.pinPath);
      if (!adopted) {
        maps.config.set(0, { wan_addr: '0.0.0.0', wan_ifindex: 0, layout_version: PT_LAYOUT_VERSION, sessions_per_host: 0 });
      }
      return dp;
    } catch (e) {
      ffi.objectClose(obj);
      throw e;
    }
  }

  /** Refuse pinned state this object cannot adopt; true if there is some to adopt. */
  private static checkPinnedState(opts: DatapathOptions): boolean {
    const cfg = pinnedMapInfo(join(opts.pinPath, MAPS.config));
    if (!cfg) return false;
    if (cfg.valueSize !== ConfigCodec.size) {
      throw new PorttrigError('E_STATE', `pinned state in ${opts.pinPath} has another layout (pt_config of ${cfg.valueSize} bytes); run "porttrig detach" to remove it`, { pinPath: opts.pinPath });
    }
    const fd = ffi.objGet(join(opts.pinPath, MAPS.config));
    if (fd < 0) throw new BpfError(`open pinned ${MAPS.config}`, -fd);
    try {
      const v = Buffer.alloc(ConfigCodec.size);
      const r = ffi.mapLookup(fd, U32.format(0), v);
      if (r < 0) throw new BpfError(`read pinned ${MAPS.config}`, -r);
      const version = ConfigCodec.parse(v).layout_version;
      if (version !== PT_LAYOUT_VERSION) {
        throw new PorttrigError('E_STATE', `pinned state in ${opts.pinPath} is layout version ${version}, this porttrig uses ${PT_LAYOUT_VERSION}; run "porttrig detach" to remove it (open sessions are lost)`, { pinPath: opts.pinPath, version });
      }
    } finally {
      ffi.closeFd(fd);
    }
    const want: [string, number][] = [
      [MAPS.sessions, opts.limits.sessions], [MAPS.hostSessions, opts.limits.sessions], [MAPS.flows, 2 * opts.limits.flows],
    ];
    for (const [name, n] of want) {
      const info = pinnedMapInfo(join(opts.pinPath, name));
      if (info && info.maxEntries !== n) {
        throw new PorttrigError('E_STATE', `pinned map ${name} holds ${info.maxEntries} entries but the limits ask for ${n}; restore the old limits or run "porttrig detach" first (open sessions are lost)`, { map: name });
      }
    }
    return true;
  }

  private object(): ffi.Ptr {
    if (!this.obj) throw new PorttrigError('E_STATE', 'data path object already closed');
    return this.obj;
  }

  /** File descriptor of one of the two programs. */
  programFd(role: ProgramRole): number {
    const p = ffi.objectFindProgram(this.object(), PROGRAMS[role]);
    if (!p) throw new BpfError(`find program ${PROGRAMS[role]}`, ENOENT);
    return ffi.programFd(p);
  }

  /**
   * Attach the `role` program to clsact ingress of `ifindex`, replacing an
   * earlier porttrig program there atomically (BPF_TC_F_REPLACE), so packets
   * keep flowing across a daemon restart. Creates the clsact qdisc if missing
   * and records that it did. Idempotent. Needs CAP_NET_ADMIN.
   */
  attach(ifindex: number, role: ProgramRole): number {
    const hook = { ifindex, attach_point: ffi.BPF_TC_INGRESS };
    const h = ffi.tcHookCreate(hook);
    if (h < 0 && h !== -EEXIST) throw new PorttrigError('E_ATTACH', `create clsact qdisc on ifindex ${ifindex}: errno ${-h}`, { ifindex });
    const prev = this.maps.attach.get(ifindex) ?? 0;
    const created = h === 0 ? ATTACH_CREATED_QDISC : prev & ATTACH_CREATED_QDISC;
    const { ret, progId } = ffi.tcAttach(hook, {
      prog_fd: this.programFd(role), flags: ffi.BPF_TC_F_REPLACE, handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY,
    });
    if (ret < 0) {
      if (h === 0) ffi.tcHookDestroy({ ifindex, attach_point: ffi.BPF_TC_INGRESS });
      throw new PorttrigError('E_ATTACH', `attach ${PROGRAMS[role]} to ifindex ${ifindex}: errno ${-ret}`, { ifindex });
    }
    this.maps.attach.set(ifindex, (prev & ~(ATTACH_LAN | ATTACH_WAN)) | created | (role === 'lan' ? ATTACH_LAN : ATTACH_WAN));
    return progId;
  }

  /** Close the object. Attached programs and pinned maps stay. Idempotent. */
  close(): void {
    if (this.obj) ffi.objectClose(this.obj);
    this.obj = null;
  }
}

/** The program id attached by porttrig on `ifindex`, or 0 if none. */
export function attachedProgramId(ifindex: number): number {
  const { ret, progId } = ffi.tcQuery({ ifindex, attach_point: ffi.BPF_TC_INGRESS }, { handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY });
  return ret === 0 ? progId : 0;
}

/**
 * Remove porttrig's filter from clsact ingress of `ifindex`, and the clsact
 * qdisc too when porttrig created it (`createdQdisc`). Missing pieces are fine.
 */
export function detachInterface(ifindex: number, createdQdisc: boolean): void {
  const hook = { ifindex, attach_point: ffi.BPF_TC_INGRESS };
  const r = ffi.tcDetach(hook, { handle: PT_TC_HANDLE, priority: PT_TC_PRIORITY });
  if (r < 0 && r !== -ENOENT && r !== -22 /* EINVAL: no qdisc */) {
    throw new PorttrigError('E_ATTACH', `detach from ifindex ${ifindex}: errno ${-r}`, { ifindex });
  }
  if (createdQdisc) {
    // BPF_TC_INGRESS | BPF_TC_EGRESS: the whole clsact qdisc.
    const d = ffi.tcHookDestroy({ ifindex, attach_point: 3 });
    if (d < 0 && d !== -ENOENT && d !== -22) throw new PorttrigError('E_ATTACH', `remove clsact from ifindex ${ifindex}: errno ${-d}`, { ifindex });
  }
}
