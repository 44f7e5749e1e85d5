/**
 * `porttrig doctor`: what this kernel and machine support, what porttrig
 * needs of them, and what to do about what is missing. Reads only: the
 * probes create a throw-away map and program, nothing is attached or pinned.
 * Returns a structured report; the CLI formats it. Never prints, never exits.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statfsSync } from 'node:fs';
import { release } from 'node:os';
import { dirname } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { MAPS, PROGRAMS, PT_TC_HANDLE, PT_TC_PRIORITY } from '../bpf/abi.js';
import { BPF_FS_MAGIC } from '../bpf/datapath.js';
import { loadConfigFile } from '../config/load.js';
import type { Config } from '../config/types.js';
import { PorttrigError } from '../errors.js';
import * as ffi from '../ffi/libbpf.js';
import { ipv4Of, ipv6Of, linkInfo, programRole, type Ipv6Addr } from '../daemon/netinfo.js';
import { armingClass } from '../core/addr.js';
import { CT_FIX_CAPS, CT_KFUNC, CT_LOST, CT_MODULE, chooseCtObject, probeCtKfunc } from '../bpf/conntrack.js';
import { CAPS, hasCap, missingRequiredCaps, ownCaps, type CapName } from './caps.js';

export type CheckStatus = 'ok' | 'warn' | 'missing';

/** One finding. `id` is stable (scripts may match it); `fix` says what to do. */
export interface Check {
  id: string;
  title: string;
  status: CheckStatus;
  /** A missing required check makes the report fail (exit 1). */
  required: boolean;
  detail: string;
  fix?: string;
}

export interface DoctorReport {
  /** No required check is missing. */
  ok: boolean;
  config: string | null;
  checks: Check[];
}

/** Where the machine's facts come from; tests and other namespaces override. */
export interface DoctorOptions {
  /** Configuration file; its interfaces and pin path are checked. */
  configPath?: string | null;
  /** Receives libbpf's own messages from the probes (they never go to stderr). */
  onLibbpfLog?: (level: number, msg: string) => void;
  /** /proc (for sysctls, the kernel config, capabilities). */
  proc?: string;
  /** The `tc` binary used to list qdiscs and filters. */
  tc?: string;
  /** The kernel's BTF directory (/sys/kernel/btf), for the conntrack kfunc. */
  btfDir?: string;
}

/** Oldest kernel with every feature the data path uses: hash-map lookup-and-delete (5.14). */
export const MIN_KERNEL: readonly [number, number] = [5, 14];
const MIN_LIBBPF_MAJOR = 1;
const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';
const DEFAULT_PIN_PATH = '/sys/fs/bpf/porttrig';
const EPERM = 1;
const ENOSYS = 38;
const EINVAL = 22;
/** The handle as tc prints it, e.g. 0x7074. */
const PT_TC_HANDLE_HEX = `0x${PT_TC_HANDLE.toString(16)}`;

/** Run every check. `configPath` null: no configuration (those checks are skipped). */
export function runDoctor(opts: DoctorOptions = {}): DoctorReport {
  const proc = opts.proc ?? '/proc';
  ffi.setLibbpfPrint(opts.onLibbpfLog ?? (() => {}));
  const checks: Check[] = [];
  let config: Config | null = null;
  if (opts.configPath) {
    try {
      config = loadConfigFile(opts.configPath);
      checks.push({ id: 'config', title: 'configuration', status: 'ok', required: true, detail: `${opts.configPath}: valid, ${config.rules.length} rules` });
    } catch (e) {
      checks.push({
        id: 'config', title: 'configuration', status: 'missing', required: true,
        detail: e instanceof PorttrigError ? e.message : String(e), fix: `fix the file; "porttrig check-config ${opts.configPath}" lists every error`,
      });
    }
  } else {
    checks.push({ id: 'config', title: 'configuration', status: 'warn', required: false, detail: 'no configuration given: interface checks skipped, pin path is the default', fix: 'pass --config FILE' });
  }

  const caps = ownCaps();
  checks.push(kernelCheck(), bpfSyscallCheck(), btfCheck(), tcBpfCheck(), conntrackCheck(caps, opts.btfDir), clsactCheck(proc), tcxCheck(), libbpfCheck(),
    capsCheck(caps), bpffsCheck(config?.datapath.pinPath ?? DEFAULT_PIN_PATH, caps), forwardingCheck(proc, config), ipv6ForwardingCheck(proc, config));
  if (config) {
    const names = [config.interfaces.wan, ...config.interfaces.lan];
    for (const name of names) checks.push(interfaceCheck(name, name === config.interfaces.wan ? 'WAN' : 'LAN'));
    for (const name of config.interfaces.lan) {
      if (linkInfo(name)) checks.push(lanIpv6Check(name, ipv6Of(name), config.interfaces.lanNetworks.filter((n) => n.includes(':'))));
    }
    for (const name of names) {
      const c = attachmentsCheck(name, opts.tc ?? 'tc');
      if (c) checks.push(c);
    }
  }
  return { ok: !checks.some((c) => c.required && c.status === 'missing'), config: opts.configPath ?? null, checks };
}

function kernelCheck(): Check {
  const rel = release();
  const [maj = 0, min = 0] = rel.split(/[.-]/).map(Number);
  const ok = maj > MIN_KERNEL[0] || (maj === MIN_KERNEL[0] && min >= MIN_KERNEL[1]);
  return {
    id: 'kernel', title: 'kernel version', required: true, status: ok ? 'ok' : 'missing',
    detail: `Linux ${rel} (porttrig needs ${MIN_KERNEL.join('.')} or later)`,
    ...(ok ? {} : { fix: `upgrade the kernel to ${MIN_KERNEL.join('.')} or later` }),
  };
}

function bpfSyscallCheck(): Check {
  const fd = ffi.mapCreateProbe();
  if (fd >= 0) {
    ffi.closeFd(fd);
    return { id: 'bpf_syscall', title: 'bpf() system call', status: 'ok', required: true, detail: 'a BPF map could be created' };
  }
  const errno = -fd;
  if (errno === EPERM) {
    return { id: 'bpf_syscall', title: 'bpf() system call', status: 'missing', required: true, detail: 'bpf() is there but refused this process (EPERM)', fix: 'run as root or with CAP_BPF (see capabilities)' };
  }
  return {
    id: 'bpf_syscall', title: 'bpf() system call', status: 'missing', required: true,
    detail: errno === ENOSYS ? 'the kernel has no bpf() (CONFIG_BPF_SYSCALL off)' : `bpf() failed: errno ${errno}`,
    fix: 'use a kernel built with CONFIG_BPF_SYSCALL=y',
  };
}

function btfCheck(): Check {
  const has = existsSync(VMLINUX_BTF);
  return {
    id: 'btf', title: 'kernel BTF', required: false, status: has ? 'ok' : 'warn',
    detail: has ? `${VMLINUX_BTF} present` : `${VMLINUX_BTF} absent: porttrig's object needs no CO-RE relocation and loads without it; bpftool cannot show map contents by type`,
    ...(has ? {} : { fix: 'optional: a kernel built with CONFIG_DEBUG_INFO_BTF=y' }),
  };
}

function tcBpfCheck(): Check {
  const prog = ffi.probeProgType(ffi.BPF_PROG_TYPE_SCHED_CLS);
  if (prog < 0) {
    return { id: 'tc_bpf', title: 'TC BPF programs', status: 'missing', required: true, detail: `cannot probe (errno ${-prog})`, fix: 'run as root or with CAP_BPF and CAP_NET_ADMIN' };
  }
  if (prog === 0) {
    return { id: 'tc_bpf', title: 'TC BPF programs', status: 'missing', required: true, detail: 'the kernel cannot load SCHED_CLS programs', fix: 'use a kernel with CONFIG_NET_CLS_BPF and CONFIG_NET_CLS_ACT' };
  }
  const helpers: [string, number][] = [['bpf_redirect_neigh', ffi.BPF_FUNC_REDIRECT_NEIGH], ['bpf_sk_lookup_tcp', ffi.BPF_FUNC_SK_LOOKUP_TCP]];
  const lacking = helpers.filter(([, id]) => ffi.probeHelper(ffi.BPF_PROG_TYPE_SCHED_CLS, id) !== 1).map(([n]) => n);
  if (lacking.length > 0) {
    return { id: 'tc_bpf', title: 'TC BPF programs', status: 'missing', required: true, detail: `SCHED_CLS programs load, but the kernel lacks ${lacking.join(', ')}`, fix: `upgrade the kernel to ${MIN_KERNEL.join('.')} or later` };
  }
  return { id: 'tc_bpf', title: 'TC BPF programs', status: 'ok', required: true, detail: 'SCHED_CLS programs with bpf_redirect_neigh and bpf_sk_lookup_tcp' };
}

/**
 * Can the data path ask conntrack before it opens a UDP flow (bpf/conntrack.h)?
 * Not required: without it porttrig loads its build without the check, and
 * loses what CT_LOST says. Judged for this process's capabilities, as the
 * daemon judges for its own.
 */
function conntrackCheck(caps: bigint, btfDir?: string): Check {
  const probe = probeCtKfunc(btfDir === undefined ? {} : { btfDir });
  const choice = chooseCtObject(probe, { forceOff: false, sysAdmin: hasCap(caps, 'CAP_SYS_ADMIN') });
  const base = { id: 'conntrack', title: 'conntrack check (kfunc bpf_skb_ct_lookup)', required: false };
  if (choice.check && probe.home === CT_MODULE) {
    return {
      ...base, status: 'ok',
      detail: `${choice.reason}: usable with CAP_SYS_ADMIN, which this process holds (as packaging/porttrig.service grants it); a daemon without it runs without the check (${CT_FIX_CAPS})`,
    };
  }
  if (choice.check) {
    return { ...base, status: 'ok', detail: `${choice.reason}: the data path asks conntrack before it opens a UDP flow` };
  }
  return {
    ...base, status: 'warn',
    detail: `${choice.reason}: porttrig loads its data path without the ${CT_KFUNC} check, so ${CT_LOST}`,
    ...(choice.fix ? { fix: choice.fix } : {}),
  };
}

/** The kernel's build configuration, from /proc/config.gz or /boot; null if neither is readable. */
function kernelConfig(proc: string): string | null {
  try { return gunzipSync(readFileSync(`${proc}/config.gz`)).toString('utf8'); } catch { /* try /boot */ }
  try { return readFileSync(`/boot/config-${release()}`, 'utf8'); } catch { return null; }
}

function clsactCheck(proc: string): Check {
  const cfg = kernelConfig(proc);
  const base = { id: 'clsact', title: 'clsact qdisc', required: true };
  if (cfg === null) {
    return { ...base, status: 'warn', detail: 'kernel configuration not readable (/proc/config.gz, /boot/config-*); the daemon finds out when it attaches' };
  }
  const m = /^CONFIG_NET_SCH_INGRESS=([ym])$/m.exec(cfg);
  if (!m) return { ...base, status: 'missing', detail: 'CONFIG_NET_SCH_INGRESS is not set: no clsact qdisc', fix: 'use a kernel with CONFIG_NET_SCH_INGRESS (and CONFIG_NET_CLS_BPF)' };
  return { ...base, status: 'ok', detail: m[1] === 'y' ? 'built into the kernel' : 'module sch_ingress (loaded on demand)' };
}

function tcxCheck(): Check {
  const LOOPBACK_IFINDEX = 1;
  const q = ffi.progQuery(LOOPBACK_IFINDEX, ffi.BPF_TCX_INGRESS);
  const kernel = Array.isArray(q) ? true : q === -EINVAL ? false : null;
  const lib = ffi.libbpfHas('bpf_program__attach_tcx');
  const k = kernel === null ? `unknown (errno ${-(q as number)})` : kernel ? 'yes' : 'no (kernel 6.6 or later)';
  const l = lib ? 'yes' : `no (libbpf ${ffi.libbpfVersion()} lacks bpf_program__attach_tcx; 1.3 or later has it)`;
  return {
    id: 'tcx', title: 'tcx attachment', required: false, status: kernel && !lib ? 'warn' : 'ok',
    detail: `kernel: ${k}; libbpf: ${l}; porttrig attaches with TC clsact${kernel && lib ? ' (tcx would be possible)' : ''}`,
    ...(kernel && !lib ? { fix: 'nothing needed: clsact works on every kernel; tcx needs a newer libbpf' } : {}),
  };
}

function libbpfCheck(): Check {
  const v = ffi.libbpfVersion();
  const ok = Number(v.split('.')[0]) >= MIN_LIBBPF_MAJOR;
  return { id: 'libbpf', title: 'libbpf', required: true, status: ok ? 'ok' : 'missing', detail: `libbpf ${v}`, ...(ok ? {} : { fix: 'install libbpf 1.x (Debian: libbpf1)' }) };
}

function capsCheck(mask: bigint): Check {
  const names = Object.keys(CAPS) as CapName[];
  const held = names.filter((c) => hasCap(mask, c));
  const lacking = missingRequiredCaps(mask);
  const detail = `this process holds ${held.join(', ') || 'none of them'}` +
    (hasCap(mask, 'CAP_SYS_ADMIN') ? '' : '; without CAP_SYS_ADMIN a bpffs cannot be mounted');
  if (lacking.length > 0) {
    return { id: 'capabilities', title: 'capabilities', required: true, status: 'missing', detail: `${detail}; missing ${lacking.join(', ')}`, fix: 'run as root, or with CAP_BPF CAP_NET_ADMIN CAP_PERFMON (packaging/porttrig.service)' };
  }
  return { id: 'capabilities', title: 'capabilities', required: true, status: 'ok', detail };
}

/** The nearest existing directory at or above `path`. */
function existingAncestor(path: string): string {
  let p = path;
  while (!existsSync(p) && dirname(p) !== p) p = dirname(p);
  return p;
}

function bpffsCheck(pinPath: string, caps: bigint): Check {
  const base = { id: 'bpffs', title: 'bpffs at the pin path', required: true };
  const at = existingAncestor(pinPath);
  const onBpffs = statfsSync(at).type === BPF_FS_MAGIC;
  if (onBpffs) {
    const pins = at === pinPath ? readdirSync(pinPath).filter((f) => (Object.values(MAPS) as string[]).includes(f)).length : 0;
    return {
      ...base, status: 'ok',
      detail: at === pinPath ? `${pinPath} is on a bpffs${pins ? ` and holds porttrig state (${pins} pinned maps)` : ''}` : `${pinPath} will be created on the bpffs at ${at}`,
    };
  }
  const canMount = hasCap(caps, 'CAP_SYS_ADMIN');
  return {
    ...base, status: canMount ? 'warn' : 'missing',
    detail: `${at} is not on a bpffs; the daemon mounts one on ${pinPath}${canMount ? '' : ', which needs CAP_SYS_ADMIN'}`,
    fix: 'mount -t bpf bpf /sys/fs/bpf (systemd does at boot), or keep CAP_SYS_ADMIN for the daemon',
  };
}

function forwardingCheck(proc: string, config: Config | null): Check {
  const read = (p: string): string | null => { try { return readFileSync(`${proc}/sys/net/ipv4/${p}`, 'utf8').trim(); } catch { return null; } };
  const off: string[] = [];
  if (read('ip_forward') !== '1') off.push('net.ipv4.ip_forward');
  for (const name of config ? [config.interfaces.wan, ...config.interfaces.lan] : []) {
    const v = read(`conf/${name}/forwarding`);
    if (v !== null && v !== '1') off.push(`net.ipv4.conf.${name}.forwarding`);
  }
  if (off.length === 0) return { id: 'ip_forward', title: 'IPv4 forwarding', required: true, status: 'ok', detail: 'enabled' };
  return {
    id: 'ip_forward', title: 'IPv4 forwarding', required: true, status: 'missing',
    detail: `${off.join(', ')} = 0: the gateway does not route, so LAN hosts never reach a trigger port`,
    fix: `sysctl -w ${off.map((s) => `${s}=1`).join(' ')} (persist in /etc/sysctl.d/)`,
  };
}

/**
 * IPv6 forwarding (SPEC 9): net.ipv6.conf.all.forwarding, and the configured
 * interfaces' own. Not required: an IPv4-only gateway runs without it; its
 * IPv6 pinholes then never carry anything. `proc`: /proc, or a directory
 * laid out like it (tests).
 */
export function ipv6ForwardingCheck(proc: string, config: Config | null): Check {
  const read = (p: string): string | null => { try { return readFileSync(`${proc}/sys/net/ipv6/${p}`, 'utf8').trim(); } catch { return null; } };
  const base = { id: 'ip6_forward', title: 'IPv6 forwarding', required: false };
  const all = read('conf/all/forwarding');
  if (all === null) {
    return { ...base, status: 'warn', detail: 'net.ipv6.conf.all.forwarding not readable: the kernel has no IPv6 (disabled or not built); IPv6 pinholes do nothing' };
  }
  const off: string[] = [];
  if (all !== '1') off.push('net.ipv6.conf.all.forwarding');
  for (const name of config ? [config.interfaces.wan, ...config.interfaces.lan] : []) {
    const v = read(`conf/${name}/forwarding`);
    if (v !== null && v !== '1') off.push(`net.ipv6.conf.${name}.forwarding`);
  }
  if (off.length === 0) return { ...base, status: 'ok', detail: 'net.ipv6.conf.all.forwarding = 1' };
  return {
    ...base, status: 'warn',
    detail: `${off.join(', ')} = 0: the gateway does not route IPv6, so IPv6 pinholes carry nothing (IPv4 is not affected)`,
    fix: `sysctl -w ${off.map((v) => `${v}=1`).join(' ')} (persist in /etc/sysctl.d/); with forwarding on, the WAN needs net.ipv6.conf.<wan>.accept_ra=2 to keep taking router advertisements`,
  };
}

/**
 * A LAN interface's IPv6 addresses and the prefixes porttrig takes from them
 * (SPEC 9: global and unique-local; link-local ones never arm). A warning,
 * not a failure, when there is none (and no IPv6 lan_networks): IPv6 hosts
 * on it then never open a pinhole.
 */
export function lanIpv6Check(name: string, addrs: readonly Ipv6Addr[], extraPrefixes: readonly string[] = []): Check {
  const base = { id: `ipv6:${name}`, title: `LAN interface ${name} IPv6`, required: false };
  const shown = addrs.map((a) => `${a.address}/${a.cidr.split('/')[1]} (${a.class})`);
  const prefixes = [...new Set(addrs.filter((a) => armingClass(a.class)).map((a) => a.cidr))];
  const extra = extraPrefixes.length ? `; lan_networks adds ${extraPrefixes.join(', ')}` : '';
  if (prefixes.length === 0) {
    return {
      ...base, status: 'warn',
      detail: `${shown.length ? shown.join(', ') : 'no IPv6 address'}: no global or unique-local prefix, so no LAN IPv6 prefix from ${name}${extra}`,
      fix: `give ${name} an address of the LAN's IPv6 prefix (e.g. ip -6 addr add 2001:db8:1::1/64 dev ${name}, or a delegated prefix) if its hosts are to use IPv6 pinholes`,
    };
  }
  return { ...base, status: 'ok', detail: `LAN prefixes ${prefixes.join(', ')} (addresses ${shown.join(', ')})${extra}` };
}

function interfaceCheck(name: string, role: 'WAN' | 'LAN'): Check {
  const id = `interface:${name}`;
  const link = linkInfo(name);
  if (!link) {
    // Not fatal: pppd creates ppp0 only once it is connected, and a daemon
    // started before its interface exists waits for it (README, Decisions).
    return {
      id, title: `${role} interface ${name}`, required: true, status: 'warn', detail: `interface "${name}" does not exist (yet)`,
      fix: `the daemon attaches to ${name} within a second of its appearing; if it never will, name the right interface in the configuration`,
    };
  }
  const { ifindex } = link;
  const prog = link.kind ? PROGRAMS[programRole(role === 'WAN' ? 'wan' : 'lan', link.kind)] : null;
  const type = `link type ${link.typeName}${link.kind === 'l3' ? ' (layer 3, no link-layer header)' : ''}`;
  if (!prog) {
    return {
      id, title: `${role} interface ${name}`, required: true, status: 'missing', detail: `ifindex ${ifindex}, ${type}: not handled by the data path`,
      fix: 'porttrig handles Ethernet-like links (ether), ppp, TUN/WireGuard (none) and raw-IP modems (rawip); use one of those as the interface',
    };
  }
  const addrs = ipv4Of(name).map((a) => `${a.address}/${a.cidr.split('/')[1]}`);
  if (addrs.length === 0) {
    return {
      id, title: `${role} interface ${name}`, required: true, status: 'warn', detail: `ifindex ${ifindex}, ${type}, program ${prog}, no IPv4 address`,
      fix: role === 'WAN' ? 'nothing is forwarded until it has one (the daemon follows it when it comes)' : 'give it the LAN subnet\'s address: the LAN subnets come from it',
    };
  }
  return { id, title: `${role} interface ${name}`, required: true, status: 'ok', detail: `ifindex ${ifindex}, ${type}, program ${prog}, ${addrs.join(', ')}` };
}

interface TcQdisc { kind: string; handle?: string; parent?: string }
interface TcFilter { kind: string; pref?: number; options?: { handle?: string; prog?: { id?: number; name?: string } } }

/**
 * What else is attached where porttrig attaches: an `ingress` qdisc (which
 * excludes clsact), TC filters of others on clsact ingress (they run after
 * porttrig's and never see translated packets), XDP and tcx programs (they run
 * before it). Null when the interface does not exist.
 */
function attachmentsCheck(name: string, tc: string): Check | null {
  const ifindex = ffi.ifNameToIndex(name);
  if (ifindex === 0) return null;
  const base = { id: `attached:${name}`, title: `other programs on ${name}`, required: true };
  const problems: string[] = [];
  const notes: string[] = [];
  let blocking = false;
  let qdiscs: TcQdisc[];
  let filters: TcFilter[];
  try {
    qdiscs = JSON.parse(execFileSync(tc, ['-j', 'qdisc', 'show', 'dev', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) || '[]') as TcQdisc[];
    filters = qdiscs.some((q) => q.kind === 'clsact' || q.kind === 'ingress')
      ? JSON.parse(execFileSync(tc, ['-j', 'filter', 'show', 'dev', name, 'ingress'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) || '[]') as TcFilter[]
      : [];
  } catch (e) {
    return { ...base, required: false, status: 'warn', detail: `cannot list qdiscs and filters with ${tc}: ${(e as Error).message.split('\n')[0]}`, fix: 'install iproute2' };
  }
  if (qdiscs.some((q) => q.kind === 'ingress')) {
    blocking = true;
    problems.push('an "ingress" qdisc, which excludes the clsact qdisc porttrig attaches to');
  }
  for (const f of filters) {
    if (!f.options) continue;  // tc prints a header entry per filter chain
    const own = f.kind === 'bpf' && f.pref === PT_TC_PRIORITY && f.options.handle === PT_TC_HANDLE_HEX;
    const what = `${f.kind} filter pref ${f.pref ?? '?'} handle ${f.options.handle ?? '?'}${f.options.prog ? ` (prog ${f.options.prog.name ?? '?'} id ${f.options.prog.id ?? '?'})` : ''}`;
    if (own) notes.push(`porttrig's own ${what}`);
    else problems.push(`${what} on ingress: runs after porttrig's and does not see translated packets`);
  }
  const xdp = ffi.xdpProgId(ifindex);
  if (xdp > 0) problems.push(`XDP program id ${xdp}: runs before porttrig and may drop or redirect its packets`);
  const tcx = ffi.progQuery(ifindex, ffi.BPF_TCX_INGRESS);
  if (Array.isArray(tcx) && tcx.length > 0) problems.push(`tcx ingress programs ${tcx.join(', ')}: run before porttrig's clsact filter`);

  if (problems.length === 0) return { ...base, status: 'ok', detail: notes.length ? notes.join('; ') : 'nothing else attached' };
  return {
    ...base, status: blocking ? 'missing' : 'warn', detail: [...problems, ...notes].join('; '),
    fix: blocking ? `tc qdisc del dev ${name} ingress (porttrig creates clsact itself)` : 'make sure the other programs pass porttrig\'s traffic, or remove them',
  };
}
