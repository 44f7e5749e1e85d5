/**
 * The daemon's metrics: an isolated registry, BPF run-time statistics held on
 * for the daemon's life when metrics.bpf_stats asks for them, and the HTTP
 * endpoint on metrics.listen.
 */
import { Registry } from 'prom-client';
import * as ffi from '../ffi/libbpf.js';
import { PorttrigError } from '../errors.js';
import type { Logger } from '../daemon/log.js';
import { ifindexOf, linkInfo, programRole } from '../daemon/netinfo.js';
import { PROGRAMS, XDP_PROGRAM } from '../bpf/abi.js';
import { attachedProgramId, type Datapath, type ProgramRole } from '../bpf/datapath.js';
import { registerMetrics } from './metrics.js';
import { MetricsServer } from './server.js';
import { enableRunTimeStats, statsSysctlOn } from './progstats.js';
import type { SnapshotSource } from './snapshot.js';
import type { EntryCounts } from '../daemon/sweeper.js';

export interface DaemonMetricsOptions {
  listen: { host: string; port: number };
  /**
   * Hold BPF run-time statistics on while the daemon runs (metrics.bpf_stats).
   * They cost every BPF program on the machine two clock reads per run, so
   * they are opt-in; off, porttrig_bpf_run_* stay 0 (unless the sysctl
   * kernel.bpf_stats_enabled is on) and porttrig_bpf_stats_enabled reads 0.
   */
  bpfStats?: boolean;
  datapath: Datapath;
  /** Interfaces the data path is attached to (fixed until restart). */
  interfaces: { wan: string; lan: readonly string[] };
  logger: Logger;
  /** Entry counts kept by the daemon's kernel sweep (read instead of walking the maps). */
  counts?: () => EntryCounts | null;
}

/** What a scrape of the daemon reads: its maps, its loaded programs, its interfaces. */
export function daemonSource(dp: Datapath, ifs: DaemonMetricsOptions['interfaces'], counts?: () => EntryCounts | null): SnapshotSource {
  const roles = Object.keys(PROGRAMS) as ProgramRole[];
  return {
    maps: dp.maps,
    ...(counts ? { counts } : {}),
    programs: () => [
      ...roles.map((role) => ({ name: PROGRAMS[role], fd: dp.programFd(role) })),
      ...(dp.xdpLoaded ? [{ name: XDP_PROGRAM, fd: dp.xdpProgramFd() }] : []),
    ],
    xdpStats: () => (dp.xdpLoaded ? dp.xdpMaps().stats : null),
    interfaces: () => [...ifs.lan.map((name) => ({ name, side: 'lan' as const })), { name: ifs.wan, side: 'wan' as const }].map(({ name, side }) => {
      // The program that serves the interface's link type (Ethernet or layer 3).
      const info = linkInfo(name);
      return { name, program: PROGRAMS[programRole(side, info?.kind ?? 'ethernet')], present: info !== null };
    }),
    isAttached: (name) => attachedProgramId(ifindexOf(name)) !== 0,
  };
}

export class DaemonMetrics {
  private constructor(
    readonly registry: Registry,
    private readonly server: MetricsServer,
    private readonly stats: { fd: number },
    private readonly observe: (seconds: number) => void,
  ) {}

  /**
   * Enable BPF run-time statistics if `bpfStats` (kept until close(); a kernel
   * that refuses only costs the run-time metrics, with a warning), register the metrics on
   * a registry of their own and listen. A listen failure (port taken) throws
   * E_STATE and leaves nothing behind.
   */
  static async start(opts: DaemonMetricsOptions): Promise<DaemonMetrics> {
    // Shared with the gauge, so that it reads 0 once close() released the fd.
    const stats = { fd: -1 };
    if (opts.bpfStats) {
      try {
        stats.fd = enableRunTimeStats();
      } catch (e) {
        if (statsSysctlOn()) {
          opts.logger.info('BPF run-time statistics are on through the sysctl kernel.bpf_stats_enabled', { error: e instanceof PorttrigError ? e.message : e });
        } else {
          opts.logger.warn('BPF run-time statistics unavailable (bpf_enable_stats needs CAP_SYS_ADMIN; or set the sysctl kernel.bpf_stats_enabled=1); porttrig_bpf_run_* stay 0', { error: e instanceof PorttrigError ? e.message : e });
        }
      }
    } else if (statsSysctlOn()) {
      opts.logger.info('BPF run-time statistics are on through the sysctl kernel.bpf_stats_enabled');
    } else {
      opts.logger.info('BPF run-time statistics off (metrics.bpf_stats: false): porttrig_bpf_run_* stay 0');
    }
    const registry = new Registry();
    const m = registerMetrics(registry, daemonSource(opts.datapath, opts.interfaces, opts.counts), { statsEnabled: () => stats.fd >= 0 || statsSysctlOn() });
    try {
      const server = await MetricsServer.listen(opts.listen, registry, opts.logger);
      opts.logger.info('metrics listening', { listen: `${server.address.host}:${server.address.port}` });
      return new DaemonMetrics(registry, server, stats, (s) => m.sweepDuration.observe(s));
    } catch (e) {
      if (stats.fd >= 0) ffi.closeFd(stats.fd);
      throw e;
    }
  }

  /** Record one walk of the kernel sweep (porttrig_sweep_duration_seconds). */
  observeSweep(seconds: number): void {
    this.observe(seconds);
  }

  /** Stop serving and release the statistics. Idempotent. */
  async close(): Promise<void> {
    await this.server.close();
    if (this.stats.fd >= 0) ffi.closeFd(this.stats.fd);
    this.stats.fd = -1;
  }
}
