/**
 * The offsets read from struct bpf_prog_info, checked against the running
 * kernel's BTF; and DaemonMetrics: statistics held while it runs, the sweep
 * histogram, a clean close.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { btfStruct } from '../../src/ffi/libbpf.js';
import { PROG_INFO, statsSysctlOn } from '../../src/metrics/progstats.js';
import { DaemonMetrics } from '../../src/metrics/daemon.js';
import { nullLogger } from '../../src/daemon/log.js';
import { bpfSkipReason, useDatapath } from '../helpers/bpffs.js';
import { parseExposition, valueOf } from './promtext.js';

const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';
const BITS = 8;
const U64_BYTES = 8;

test('bpf_prog_info offsets match the kernel\'s BTF', { skip: !existsSync(VMLINUX_BTF) && `${VMLINUX_BTF} missing (kernel without CONFIG_DEBUG_INFO_BTF)` }, () => {
  const s = btfStruct(VMLINUX_BTF, 'bpf_prog_info');
  assert.ok(s, 'struct bpf_prog_info not in the kernel BTF');
  const off = (name: string): number => {
    const m = s.members.find((x) => x.name === name);
    assert.ok(m, `bpf_prog_info has no ${name}`);
    return m.offsetBits / BITS;
  };
  assert.equal(off('id'), PROG_INFO.id, 'id');
  assert.equal(off('run_time_ns'), PROG_INFO.runTimeNs, 'run_time_ns');
  assert.equal(off('run_cnt'), PROG_INFO.runCnt, 'run_cnt');
  assert.equal(PROG_INFO.size, PROG_INFO.runCnt + U64_BYTES, 'the info buffer ends right after run_cnt');
});

test('DaemonMetrics: with bpfStats, stats on while it runs, the sweep histogram, 0 after close', { skip: bpfSkipReason() ?? false }, async (t) => {
  const f = useDatapath(t);
  const m = await DaemonMetrics.start({
    listen: { host: '127.0.0.1', port: 0 }, datapath: f.dp, bpfStats: true,
    interfaces: { wan: 'lo', lan: [] }, logger: nullLogger,
  });
  t.after(() => m.close());
  m.observeSweep(0.25);
  m.observeSweep(1.5);
  const e = parseExposition(await m.registry.metrics());
  assert.equal(valueOf(e, 'porttrig_sweep_duration_seconds_count'), 2, 'every walk is recorded');
  assert.equal(valueOf(e, 'porttrig_sweep_duration_seconds_sum'), 1.75);
  assert.equal(valueOf(e, 'porttrig_bpf_stats_enabled'), 1);
  assert.equal(valueOf(e, 'porttrig_datapath_attached', { interface: 'lo', program: 'pt_wan_ingress' }), 0, 'nothing attached to lo');
  await m.close();
  await m.close();
  assert.equal(valueOf(parseExposition(await m.registry.metrics()), 'porttrig_bpf_stats_enabled'), statsSysctlOn() ? 1 : 0, 'after close only the sysctl keeps statistics on');
});

test('statsSysctlOn reads kernel.bpf_stats_enabled: 1 is on; 0, garbage or a missing file is off', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-sysctl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'bpf_stats_enabled');
  writeFileSync(file, '1\n');
  assert.equal(statsSysctlOn(file), true);
  writeFileSync(file, '0\n');
  assert.equal(statsSysctlOn(file), false);
  writeFileSync(file, 'x');
  assert.equal(statsSysctlOn(file), false);
  assert.equal(statsSysctlOn(join(dir, 'absent')), false);
});

test('DaemonMetrics without bpfStats (the default) leaves BPF run-time statistics off', { skip: bpfSkipReason() ?? false }, async (t) => {
  const f = useDatapath(t);
  const m = await DaemonMetrics.start({
    listen: { host: '127.0.0.1', port: 0 }, datapath: f.dp,
    interfaces: { wan: 'lo', lan: [] }, logger: nullLogger,
  });
  t.after(() => m.close());
  const e = parseExposition(await m.registry.metrics());
  // Only an administrator's sysctl can have them on; the daemon did not.
  assert.equal(valueOf(e, 'porttrig_bpf_stats_enabled'), statsSysctlOn() ? 1 : 0);
  assert.equal(typeof valueOf(e, 'porttrig_bpf_run_count_total', { program: 'pt_wan_ingress' }), 'number', 'the run-time metrics are still exported');
});
