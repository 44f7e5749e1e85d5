/**
 * The data path's own cost: run time and run count of a BPF program, which the
 * kernel keeps in struct bpf_prog_info only while BPF run-time statistics are
 * enabled (bpf_enable_stats(BPF_STATS_RUN_TIME), kernel >= 5.8). Enabling them
 * costs two clock reads per program run, i.e. a few tens of ns per packet.
 */
import { readFileSync } from 'node:fs';
import * as ffi from '../ffi/libbpf.js';
import { BpfError } from '../errors.js';

/**
 * Offsets in struct bpf_prog_info (linux/bpf.h, stable UAPI; checked against
 * the kernel's BTF by test/metrics/progstats.test.ts).
 */
export const PROG_INFO = {
  /** Bytes we ask for: up to and including run_cnt. */
  size: 208,
  id: 4,
  runTimeNs: 192,
  runCnt: 200,
} as const;

/** Run statistics of one program. */
export interface ProgRunStats { id: number; runTimeNs: bigint; runCount: bigint }

/**
 * Turn on the kernel's BPF run-time statistics for as long as the returned
 * file descriptor stays open (the kernel counts its holders). Needs
 * CAP_SYS_ADMIN. Throws BpfError when the kernel refuses.
 */
export function enableRunTimeStats(): number {
  const fd = ffi.enableStats(ffi.BPF_STATS_RUN_TIME);
  if (fd < 0) throw new BpfError('bpf_enable_stats(BPF_STATS_RUN_TIME)', -fd);
  return fd;
}

/** Where an administrator turns the statistics on for the whole machine. */
export const BPF_STATS_SYSCTL = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Is the sysctl kernel.bpf_stats_enabled on? It counts as a holder of its own,
 * so a daemon without CAP_SYS_ADMIN (the systemd unit) still gets run-time
 * statistics when the administrator sets it.
 */
export function statsSysctlOn(path = BPF_STATS_SYSCTL): boolean {
  try {
    return readFileSync(path, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

/**
 * Read id, run time and run count of the program behind `progFd` with one
 * BPF_OBJ_GET_INFO_BY_FD. Run time and count stay 0 while statistics are off.
 */
export function progRunStats(progFd: number): ProgRunStats {
  const info = Buffer.alloc(PROG_INFO.size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(info.length);
  const r = ffi.objGetInfo(progFd, info, len);
  if (r < 0) throw new BpfError('bpf_obj_get_info_by_fd (program)', -r);
  return {
    id: info.readUInt32LE(PROG_INFO.id),
    runTimeNs: info.readBigUInt64LE(PROG_INFO.runTimeNs),
    runCount: info.readBigUInt64LE(PROG_INFO.runCnt),
  };
}
