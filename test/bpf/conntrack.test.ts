/**
 * Which build of the data path the daemon loads (src/bpf/conntrack.ts):
 * finding the kfunc bpf_skb_ct_lookup in the kernel's BTF (vmlinux, or the
 * nf_conntrack module's split BTF), in generated BTF directories and on this
 * machine; the choice for each case; and that the two builds differ in just
 * that (the noct one references no kfunc, both have the same maps).
 * Reads files only; needs neither root nor BPF.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CT_FIX, CT_FIX_CAPS, CT_KFUNC, chooseCtObject, probeCtKfunc, type CtKfuncProbe,
} from '../../src/bpf/conntrack.js';
import { bpfObjectPaths } from '../../src/paths.js';
import { btfHasFunc } from '../../src/ffi/libbpf.js';
import { rawBtf } from '../helpers/btf.js';

/** A directory laid out like /sys/kernel/btf, removed after the test. */
function btfDir(t: { after: (fn: () => void) => void }, files: Record<string, Buffer>): string {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-btf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data);
  return dir;
}

test('probe: the kfunc in vmlinux, in the nf_conntrack module, or nowhere', (t) => {
  const withIt = rawBtf(['bpf_xdp_ct_lookup', CT_KFUNC, 'bpf_ct_release']);
  const without = rawBtf(['bpf_redirect_neigh_kfunc_not']);

  const inVmlinux = probeCtKfunc({ btfDir: btfDir(t, { vmlinux: withIt.data }) });
  assert.equal(inVmlinux.home, 'vmlinux');
  assert.match(inVmlinux.detail, /^bpf_skb_ct_lookup is in the kernel \(.*\/vmlinux\)$/);

  const module = rawBtf([CT_KFUNC, 'bpf_ct_release'], without);
  const inModule = probeCtKfunc({ btfDir: btfDir(t, { vmlinux: without.data, nf_conntrack: module.data }) });
  assert.equal(inModule.home, 'nf_conntrack', inModule.detail);
  assert.match(inModule.detail, /^bpf_skb_ct_lookup is in module nf_conntrack \(.*\/nf_conntrack\)$/);

  const notLoaded = probeCtKfunc({ btfDir: btfDir(t, { vmlinux: without.data }) });
  assert.equal(notLoaded.home, null);
  assert.match(notLoaded.detail, /no bpf_skb_ct_lookup in .*\/vmlinux, and module nf_conntrack is not loaded/);

  // A module BTF without it (a kernel before 5.18 had no such kfunc).
  const old = probeCtKfunc({ btfDir: btfDir(t, { vmlinux: without.data, nf_conntrack: rawBtf(['nf_ct_other'], without).data }) });
  assert.equal(old.home, null);
  assert.match(old.detail, /neither .* has bpf_skb_ct_lookup/);

  const noBtf = probeCtKfunc({ btfDir: btfDir(t, {}) });
  assert.deepEqual([noBtf.home, /vmlinux absent/.test(noBtf.detail)], [null, true]);

  const said: string[] = [];
  const broken = probeCtKfunc({ btfDir: btfDir(t, { vmlinux: Buffer.from('not BTF') }), onLibbpfLog: (_l, m) => said.push(m) });
  assert.equal(broken.home, null);
  assert.match(broken.detail, /^cannot read .*\/vmlinux: /);
  assert.ok(said.length > 0, 'libbpf\'s complaint goes to the given sink');
});

test('btfHasFunc: a split BTF counts only its own types, not its base\'s', (t) => {
  const base = rawBtf([CT_KFUNC]);
  const split = rawBtf(['something_else'], base);
  const dir = btfDir(t, { base: base.data, split: split.data });
  assert.equal(btfHasFunc(join(dir, 'base'), CT_KFUNC), 1);
  assert.equal(btfHasFunc(join(dir, 'split'), CT_KFUNC, join(dir, 'base')), 0);
  assert.equal(btfHasFunc(join(dir, 'split'), 'something_else', join(dir, 'base')), 1);
  assert.ok(btfHasFunc(join(dir, 'missing'), CT_KFUNC) < 0);
});

test('probe on this machine agrees with bpftool', (t) => {
  if (!existsSync('/sys/kernel/btf/vmlinux')) { t.skip('no /sys/kernel/btf/vmlinux'); return; }
  const probe = probeCtKfunc();
  const dump = (file: string): string => spawnSync('bpftool', ['btf', 'dump', 'file', file], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout;
  const inVmlinux = dump('/sys/kernel/btf/vmlinux').includes(`FUNC '${CT_KFUNC}'`);
  const mod = '/sys/kernel/btf/nf_conntrack';
  const inModule = !inVmlinux && existsSync(mod)
    && spawnSync('bpftool', ['btf', 'dump', 'file', mod, '--base-btf', '/sys/kernel/btf/vmlinux'], { encoding: 'utf8', maxBuffer: 1 << 30 }).stdout.includes(`FUNC '${CT_KFUNC}'`);
  assert.equal(probe.home, inVmlinux ? 'vmlinux' : inModule ? 'nf_conntrack' : null, probe.detail);
});

test('choice: the check wherever libbpf can resolve the kfunc, else the build without it and what to do', () => {
  const vmlinux: CtKfuncProbe = { home: 'vmlinux', detail: 'in vmlinux' };
  const module: CtKfuncProbe = { home: 'nf_conntrack', detail: 'in module' };
  const none: CtKfuncProbe = { home: null, detail: 'nowhere' };
  for (const sysAdmin of [false, true]) {
    assert.deepEqual(chooseCtObject(vmlinux, { forceOff: false, sysAdmin }), { check: true, reason: 'in vmlinux' });
    assert.deepEqual(chooseCtObject(none, { forceOff: false, sysAdmin }), { check: false, reason: 'nowhere', fix: CT_FIX });
    for (const p of [vmlinux, module, none]) {
      assert.deepEqual(chooseCtObject(p, { forceOff: true, sysAdmin }), { check: false, reason: 'turned off by --no-conntrack' });
    }
  }
  assert.deepEqual(chooseCtObject(module, { forceOff: false, sysAdmin: true }), { check: true, reason: 'in module' });
  const noCaps = chooseCtObject(module, { forceOff: false, sysAdmin: false });
  assert.equal(noCaps.check, false);
  assert.match(noCaps.reason, /^in module, but libbpf reads a module's BTF only with CAP_SYS_ADMIN/);
  assert.equal(noCaps.fix, CT_FIX_CAPS);
  assert.match(CT_FIX, /modprobe nf_conntrack/);
});

test('the two builds: only the conntrack one references the kfuncs; the maps are the same', (t) => {
  const { conntrack, noct } = bpfObjectPaths;
  if (!existsSync(conntrack) || !existsSync(noct)) { t.skip('run "make build" first'); return; }
  for (const kfunc of [CT_KFUNC, 'bpf_ct_release']) {
    assert.equal(btfHasFunc(conntrack, kfunc), 1, `${conntrack} lacks ${kfunc}`);
    assert.equal(btfHasFunc(noct, kfunc), 0, `${noct} references ${kfunc}`);
  }
  const maps = (obj: string): string => spawnSync('llvm-objdump', ['--syms', obj], { encoding: 'utf8' }).stdout
    .split('\n').filter((l) => /\s\.maps\s/.test(l)).map((l) => l.trim().split(/\s+/).pop()).sort().join(',');
  assert.ok(maps(conntrack).length > 0);
  assert.equal(maps(noct), maps(conntrack));
});
