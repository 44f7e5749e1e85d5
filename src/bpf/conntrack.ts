/**
 * The data path's conntrack check (bpf/conntrack.h): whether this kernel
 * offers the kfunc it needs, and which of the two builds of the object to
 * load. build/porttrig.bpf.o calls bpf_skb_ct_lookup() before it opens a
 * UDP flow; build/porttrig-noct.bpf.o does not, and loads where the kfunc is
 * missing (libbpf refuses an object whose kfunc it cannot resolve).
 * Both have the same maps, so either adopts the other's pinned state.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as ffi from '../ffi/libbpf.js';
import { errnoName } from '../errors.js';

/** The kfunc the check calls (bpf_ct_release() comes with it). */
export const CT_KFUNC = 'bpf_skb_ct_lookup';
/** Where the kernel publishes its BTF: vmlinux, and one file per loaded module. */
export const SYS_BTF_DIR = '/sys/kernel/btf';
/** The module that defines conntrack's kfuncs when conntrack is not built in. */
export const CT_MODULE = 'nf_conntrack';

/** What is lost without the check, for logs and doctor. */
export const CT_LOST = 'a UDP reply to another LAN host\'s masqueraded traffic that kept its source port, '
  + 'when that port is an open port of a live session, is forwarded to the session\'s host instead of its owner';
/** What to do about a missing kfunc. */
export const CT_FIX = `load ${CT_MODULE} before porttrig starts (modprobe ${CT_MODULE}, or start the firewall first: `
  + 'its ct state and masquerade rules load it; packaging/porttrig.service orders After=nftables.service), then restart porttrig';
/** What to do when the kfunc is in the module but the process lacks CAP_SYS_ADMIN. */
export const CT_FIX_CAPS = 'give the daemon CAP_SYS_ADMIN (packaging/porttrig.service grants it; a drop-in that removes it '
  + 'from CapabilityBoundingSet= and AmbientCapabilities= turns the check off), or use a kernel with nf_conntrack built in; then restart porttrig';

/** Where the kernel defines CT_KFUNC: in vmlinux, in the nf_conntrack module's BTF, or nowhere. */
export type CtKfuncHome = 'vmlinux' | typeof CT_MODULE | null;

export interface CtKfuncProbe {
  home: CtKfuncHome;
  /** What was found, for logs and doctor. */
  detail: string;
}

export interface CtProbeOptions {
  /** The kernel's BTF directory; SYS_BTF_DIR by default (tests point elsewhere). */
  btfDir?: string;
  /** Receives libbpf's own messages while the BTF is parsed. */
  onLibbpfLog?: (level: number, msg: string) => void;
}

/**
 * Look for CT_KFUNC in the kernel's BTF: vmlinux first (conntrack built in),
 * then the nf_conntrack module's split BTF (present while the module is
 * loaded). Reads files only.
 */
export function probeCtKfunc(opts: CtProbeOptions = {}): CtKfuncProbe {
  const btfDir = opts.btfDir ?? SYS_BTF_DIR;
  if (opts.onLibbpfLog) ffi.setLibbpfPrint(opts.onLibbpfLog);
  const vmlinux = join(btfDir, 'vmlinux');
  if (!existsSync(vmlinux)) {
    return { home: null, detail: `${vmlinux} absent: no kernel BTF, so no kfuncs` };
  }
  const inVmlinux = ffi.btfHasFunc(vmlinux, CT_KFUNC);
  if (inVmlinux < 0) return { home: null, detail: `cannot read ${vmlinux}: ${errnoName(-inVmlinux)}` };
  if (inVmlinux === 1) return { home: 'vmlinux', detail: `${CT_KFUNC} is in the kernel (${vmlinux})` };
  const module = join(btfDir, CT_MODULE);
  if (!existsSync(module)) {
    return { home: null, detail: `no ${CT_KFUNC} in ${vmlinux}, and module ${CT_MODULE} is not loaded (no ${module})` };
  }
  const inModule = ffi.btfHasFunc(module, CT_KFUNC, vmlinux);
  if (inModule < 0) return { home: null, detail: `cannot read ${module}: ${errnoName(-inModule)}` };
  if (inModule === 1) return { home: CT_MODULE, detail: `${CT_KFUNC} is in module ${CT_MODULE} (${module})` };
  return { home: null, detail: `neither ${vmlinux} nor ${module} has ${CT_KFUNC} (a kernel before 5.18?)` };
}

export interface CtChoice {
  /** Load the object with the conntrack check. */
  check: boolean;
  /** Why, in a sentence. */
  reason: string;
  /** When the check is off for want of something: what to do. */
  fix?: string;
}

/**
 * Which build to load. A kfunc in vmlinux resolves for any process that may
 * load BPF. One in a module needs the module's BTF object: libbpf finds it
 * through BPF_BTF_GET_NEXT_ID and BPF_BTF_GET_FD_BY_ID, which the kernel
 * grants only to CAP_SYS_ADMIN (libbpf 1.1 then fails the whole load, later
 * versions skip module BTF) -- so without CAP_SYS_ADMIN, as under
 * packaging/porttrig.service, a module's kfunc cannot be used.
 */
export function chooseCtObject(probe: CtKfuncProbe, opts: { forceOff: boolean; sysAdmin: boolean }): CtChoice {
  if (opts.forceOff) return { check: false, reason: 'turned off by --no-conntrack' };
  if (probe.home === 'vmlinux') return { check: true, reason: probe.detail };
  if (probe.home === CT_MODULE) {
    if (opts.sysAdmin) return { check: true, reason: probe.detail };
    return {
      check: false,
      reason: `${probe.detail}, but libbpf reads a module's BTF only with CAP_SYS_ADMIN, which this process lacks`,
      fix: CT_FIX_CAPS,
    };
  }
  return { check: false, reason: probe.detail, fix: CT_FIX };
}
