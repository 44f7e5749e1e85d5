/**
 * Linux capabilities of this process, read from /proc/self/status (CapEff):
 * what the daemon needs, and what `porttrig doctor` reports.
 */
import { readFileSync } from 'node:fs';

/** Capability numbers (linux/capability.h) porttrig cares about. */
export const CAPS = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapName = keyof typeof CAPS;

/**
 * What the daemon cannot run without: creating maps and loading programs
 * (CAP_BPF), loading SCHED_CLS programs, attaching them and creating the
 * clsact qdisc (CAP_NET_ADMIN), and CAP_PERFMON: without it the verifier
 * treats the programs as unprivileged ones and refuses them (EACCES) on the
 * Spectre v1 and pointer-leak rules (test/daemon/caps.test.ts shows it).
 */
export const REQUIRED_CAPS: readonly CapName[] = ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_PERFMON'];

/** The kernel accepts CAP_SYS_ADMIN for these (bpf_capable(), perfmon_capable()). */
const SYS_ADMIN_COVERS: ReadonlySet<CapName> = new Set(['CAP_BPF', 'CAP_PERFMON']);

/** The effective capability mask of `status` (text of /proc/<pid>/status). */
export function effectiveCaps(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!m) throw new Error('no CapEff line in /proc/self/status');
  return BigInt(`0x${m[1]}`);
}

/** Does `mask` hold capability `cap`? */
export function hasCap(mask: bigint, cap: CapName): boolean {
  return ((mask >> BigInt(CAPS[cap])) & 1n) === 1n;
}

/** This process's effective capabilities. */
export function ownCaps(): bigint {
  return effectiveCaps(readFileSync('/proc/self/status', 'utf8'));
}

/**
 * The required capabilities this process lacks. CAP_SYS_ADMIN stands in for
 * CAP_BPF and CAP_PERFMON, as the kernel allows.
 */
export function missingRequiredCaps(mask: bigint = ownCaps()): CapName[] {
  return REQUIRED_CAPS.filter((c) => !hasCap(mask, c) && !(SYS_ADMIN_COVERS.has(c) && hasCap(mask, 'CAP_SYS_ADMIN')));
}
