/**
 * `porttrig doctor` in a namespace topology: what it reports about
 * forwarding, interfaces, capabilities and what else is attached.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ROOT, Topology } from '../e2e/topology.js';
import type { Check, DoctorReport } from '../../src/doctor/doctor.js';
import { effectiveCaps, hasCap, missingRequiredCaps, ownCaps } from '../../src/doctor/caps.js';
import { ipv6ForwardingCheck, lanIpv6Check, runDoctor } from '../../src/doctor/doctor.js';
import { parseConfig } from '../../src/config/load.js';
import { rawBtf } from '../helpers/btf.js';

const root = process.getuid?.() === 0;
const RULES = `  - name: ident
    trigger: tcp/6667
    open: tcp/113
`;

async function doctor(topo: Topology, ...args: string[]): Promise<{ status: number; report: DoctorReport; stdout: string }> {
  const r = await topo.cli('doctor', '--json', ...args);
  return { status: r.status, report: JSON.parse(r.stdout) as DoctorReport, stdout: r.stdout };
}
const find = (r: DoctorReport, id: string): Check => {
  const c = r.checks.find((x) => x.id === id);
  assert.ok(c, `no check ${id} in ${r.checks.map((x) => x.id).join(', ')}`);
  return c;
};

test('CapEff parsing: required capabilities, CAP_SYS_ADMIN standing in for CAP_BPF', () => {
  const mask = effectiveCaps('Name:\tx\nCapEff:\t000000c000001000\n');  // CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF
  assert.ok(hasCap(mask, 'CAP_BPF') && hasCap(mask, 'CAP_NET_ADMIN') && hasCap(mask, 'CAP_PERFMON'));
  assert.ok(!hasCap(mask, 'CAP_SYS_ADMIN'));
  assert.deepEqual(missingRequiredCaps(mask), []);
  assert.deepEqual(missingRequiredCaps(1n << 12n), ['CAP_BPF', 'CAP_PERFMON']);
  assert.deepEqual(missingRequiredCaps((1n << 12n) | (1n << 21n)), [], 'CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON');
  assert.deepEqual(missingRequiredCaps(0n), ['CAP_BPF', 'CAP_NET_ADMIN', 'CAP_PERFMON']);
});

test('doctor: the conntrack check is a warning, not a failure, where the kfunc is missing or in a module out of reach', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-btf-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const vmlinux = rawBtf(['some_other_kfunc']);
  writeFileSync(join(dir, 'vmlinux'), vmlinux.data);
  const missing = find(runDoctor({ btfDir: dir }), 'conntrack');
  assert.equal(missing.status, 'warn');
  assert.equal(missing.required, false);
  assert.match(missing.detail, /module nf_conntrack is not loaded .*: porttrig loads its data path without the bpf_skb_ct_lookup check, so a UDP reply to another LAN host's masqueraded traffic .* is forwarded to the session's host instead of its owner$/);
  assert.match(missing.fix!, /^load nf_conntrack before porttrig starts \(modprobe nf_conntrack, or start the firewall first/);

  writeFileSync(join(dir, 'nf_conntrack'), rawBtf(['bpf_skb_ct_lookup', 'bpf_ct_release'], vmlinux).data);
  const module = find(runDoctor({ btfDir: dir }), 'conntrack');
  if (hasCap(ownCaps(), 'CAP_SYS_ADMIN')) {
    assert.equal(module.status, 'ok');
    assert.match(module.detail, /is in module nf_conntrack .*: usable with CAP_SYS_ADMIN, which this process holds \(as packaging\/porttrig\.service grants it\); a daemon without it runs without the check \(give the daemon CAP_SYS_ADMIN/);
  } else {
    assert.equal(module.status, 'warn');
    assert.match(module.detail, /but libbpf reads a module's BTF only with CAP_SYS_ADMIN, which this process lacks/);
  }
});

test('doctor: all well in the gateway namespace; forwarding off (exit 1), a missing interface (a warning: the daemon waits), link types and one that cannot be handled (exit 1) are reported', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);

  const good = await doctor(topo, '--config', cfg);
  assert.equal(good.status, 0, good.stdout);
  assert.equal(good.report.ok, true);
  for (const id of ['config', 'kernel', 'bpf_syscall', 'tc_bpf', 'conntrack', 'libbpf', 'capabilities', 'ip_forward', 'interface:wan0', 'interface:lan0']) {
    assert.equal(find(good.report, id).status, 'ok', `${id}: ${find(good.report, id).detail}`);
  }
  assert.equal(find(good.report, 'interface:wan0').detail.replace(/^ifindex \d+/, 'ifindex N'), 'ifindex N, link type ether, program pt_wan_ingress, 203.0.113.1/24');
  assert.match(find(good.report, 'bpffs').detail, new RegExp(`${topo.pinPath} is on a bpffs`));
  assert.equal(find(good.report, 'attached:lan0').detail, 'nothing else attached');
  assert.match(find(good.report, 'tcx').detail, /libbpf: /);
  // This kernel has nf_conntrack built in: the kfunc is in vmlinux.
  assert.equal(find(good.report, 'conntrack').detail,
    'bpf_skb_ct_lookup is in the kernel (/sys/kernel/btf/vmlinux): the data path asks conntrack before it opens a UDP flow');
  assert.equal(find(good.report, 'conntrack').required, false);

  topo.exec(topo.ns.gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=0');
  const off = await doctor(topo, '--config', cfg);
  assert.equal(off.status, 1);
  assert.equal(off.report.ok, false);
  const fwd = find(off.report, 'ip_forward');
  assert.equal(fwd.status, 'missing');
  assert.match(fwd.detail, /net\.ipv4\.ip_forward/);
  assert.match(fwd.fix!, /sysctl -w net\.ipv4\.ip_forward=1/);

  const human = await topo.cli('doctor', '--config', cfg);
  assert.equal(human.status, 1);
  assert.match(human.stdout, /^missing  IPv4 forwarding: .*\n {9}-> sysctl -w/m);
  assert.match(human.stdout, /\n1 required item missing\n$/);

  topo.exec(topo.ns.gw, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  const bad = topo.writeConfig(RULES);  // the same file as cfg: rewritten below
  execFileSync('sed', ['-i', 's/wan: wan0/wan: ptnosuch0/', bad]);
  const missing = await doctor(topo, '--config', bad);
  assert.equal(missing.status, 0, missing.stdout);
  assert.deepEqual([find(missing.report, 'interface:ptnosuch0').status, find(missing.report, 'interface:ptnosuch0').detail],
    ['warn', 'interface "ptnosuch0" does not exist (yet)']);
  assert.equal(find(missing.report, 'interface:lan0').status, 'ok');

  // A layer-3 WAN (TUN, ARPHRD_NONE, as ppp0): the L3 build.
  topo.exec(topo.ns.gw, 'ip', 'tuntap', 'add', 'dev', 'pttun0', 'mode', 'tun');
  execFileSync('sed', ['-i', 's/wan: ptnosuch0/wan: pttun0/', bad]);
  const tun = find((await doctor(topo, '--config', bad)).report, 'interface:pttun0');
  assert.deepEqual([tun.status, tun.detail.replace(/^ifindex \d+/, 'ifindex N')],
    ['warn', 'ifindex N, link type none (layer 3, no link-layer header), program pt_wan_ingress_l3, no IPv4 address']);
  // Loopback (ARPHRD_LOOPBACK) is no link the data path handles.
  execFileSync('sed', ['-i', 's/lan: \\[lan0\\]/lan: [lo]/', bad]);
  const lo = await doctor(topo, '--config', bad);
  assert.equal(lo.status, 1, lo.stdout);
  assert.equal(find(lo.report, 'interface:lo').status, 'missing');
  assert.match(find(lo.report, 'interface:lo').detail, /link type loopback: not handled by the data path/);

  topo.writeConfig(RULES);
  topo.exec(topo.ns.gw, 'ip', 'addr', 'flush', 'dev', 'wan0');
  const noAddr = find((await doctor(topo, '--config', cfg)).report, 'interface:wan0');
  assert.deepEqual([noAddr.status, noAddr.detail.replace(/^ifindex \d+/, 'ifindex N')], ['warn', 'ifindex N, link type ether, program pt_wan_ingress, no IPv4 address']);
});

test('doctor: an ingress qdisc is a blocker, a foreign TC filter a warning, porttrig\'s own filter fine', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  await topo.startDaemon(cfg);
  const own = await doctor(topo, '--config', cfg);
  assert.match(find(own.report, 'attached:lan0').detail, /^porttrig's own bpf filter pref 1 handle 0x7074 \(prog pt_lan_ingress/);
  assert.equal(find(own.report, 'attached:lan0').status, 'ok');

  // Another tool's filter: the empty TC program (no maps, so tc pins nothing
  // on whatever bpffs it finds mounted).
  topo.exec(topo.ns.gw, 'tc', 'filter', 'add', 'dev', 'lan0', 'ingress', 'prio', '5', 'handle', '3', 'bpf', 'da',
    'obj', join(ROOT, 'build/bench-empty.bpf.o'), 'sec', 'tc');
  topo.exec(topo.ns.gw, 'tc', 'qdisc', 'del', 'dev', 'wan0', 'clsact');
  topo.exec(topo.ns.gw, 'tc', 'qdisc', 'add', 'dev', 'wan0', 'ingress');
  const r = await doctor(topo, '--config', cfg);
  const lan = find(r.report, 'attached:lan0');
  assert.equal(lan.status, 'warn');
  assert.match(lan.detail, /bpf filter pref 5 handle 0x3 .*runs after porttrig's/);
  const wan = find(r.report, 'attached:wan0');
  assert.equal(wan.status, 'missing');
  assert.match(wan.detail, /an "ingress" qdisc, which excludes the clsact qdisc/);
  assert.match(wan.fix!, /tc qdisc del dev wan0 ingress/);
  assert.equal(r.status, 1);
});

test('doctor: without CAP_BPF the bpf() probe and the capabilities are reported missing', { skip: !root && 'needs root (setpriv)' }, () => {
  // Root keeps uid 0 but only CAP_NET_ADMIN: effective = bounding set after exec.
  const r = spawnSync('setpriv', ['--bounding-set', '-all,+net_admin', '--inh-caps', '-all', process.execPath, CLI, 'doctor', '--json'], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stderr, '', 'libbpf says nothing on stderr');
  const report = JSON.parse(r.stdout) as DoctorReport;
  const caps = find(report, 'capabilities');
  assert.equal(caps.status, 'missing');
  assert.match(caps.detail, /holds CAP_NET_ADMIN; .*missing CAP_BPF, CAP_PERFMON/);
  assert.equal(find(report, 'bpf_syscall').status, 'missing');
  assert.match(find(report, 'bpf_syscall').detail, /EPERM/);
});

// --- IPv6 (SPEC 9) --------------------------------------------------------------------------

test('doctor: IPv6 forwarding from net.ipv6.conf.all.forwarding and the interfaces\' own; a warning, never a failure', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'pt-doctor-proc-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const config = parseConfig('interfaces: {wan: wan0, lan: [lan0]}\nrules: []\n', 'test.yaml');
  const conf = (name: string, v: string): void => {
    mkdirSync(join(dir, 'sys/net/ipv6/conf', name), { recursive: true });
    writeFileSync(join(dir, 'sys/net/ipv6/conf', name, 'forwarding'), `${v}\n`);
  };
  const none = ipv6ForwardingCheck(dir, config);
  assert.deepEqual([none.id, none.status, none.required], ['ip6_forward', 'warn', false]);
  assert.match(none.detail, /no IPv6/);

  conf('all', '0');
  conf('lan0', '0');
  const off = ipv6ForwardingCheck(dir, config);
  assert.equal(off.status, 'warn');
  assert.match(off.detail, /^net\.ipv6\.conf\.all\.forwarding, net\.ipv6\.conf\.lan0\.forwarding = 0/);
  assert.match(off.fix!, /sysctl -w net\.ipv6\.conf\.all\.forwarding=1 net\.ipv6\.conf\.lan0\.forwarding=1/);

  conf('all', '1');
  conf('lan0', '1');
  const on = ipv6ForwardingCheck(dir, config);
  assert.deepEqual([on.status, on.detail], ['ok', 'net.ipv6.conf.all.forwarding = 1']);
});

test('doctor: a LAN interface\'s IPv6 addresses and the prefixes taken from them (global, unique-local; not link-local)', () => {
  const ok = lanIpv6Check('lan0', [
    { address: '2001:db8:1::1', cidr: '2001:db8:1::/64', class: 'global' },
    { address: 'fd00:1::1', cidr: 'fd00:1::/48', class: 'unique-local' },
    { address: 'fe80::1', cidr: 'fe80::/64', class: 'link-local' },
  ], ['2001:db8:9::/48']);
  assert.deepEqual([ok.id, ok.status, ok.required], ['ipv6:lan0', 'ok', false]);
  assert.equal(ok.detail, 'LAN prefixes 2001:db8:1::/64, fd00:1::/48 (addresses 2001:db8:1::1/64 (global), fd00:1::1/48 (unique-local), fe80::1/64 (link-local)); lan_networks adds 2001:db8:9::/48');
  const linkLocal = lanIpv6Check('lan0', [{ address: 'fe80::1', cidr: 'fe80::/64', class: 'link-local' }]);
  assert.equal(linkLocal.status, 'warn');
  assert.match(linkLocal.detail, /^fe80::1\/64 \(link-local\): no global or unique-local prefix/);
  assert.match(linkLocal.fix!, /ip -6 addr add .* dev lan0/);
  assert.match(lanIpv6Check('lan0', []).detail, /^no IPv6 address: /);
});

test('doctor in the gateway namespace: IPv6 forwarding and the LAN\'s IPv6 prefixes are reported', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  topo.exec(topo.ns.gw, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=0');
  const before = await doctor(topo, '--config', cfg);
  assert.equal(find(before.report, 'ip6_forward').status, 'warn');
  assert.equal(before.report.ok, find(before.report, 'ip_forward').status === 'ok', 'IPv6 forwarding off never fails the report');

  topo.exec(topo.ns.gw, 'sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1');
  topo.exec(topo.ns.gw, 'ip', '-6', 'addr', 'add', '2001:db8:5::1/64', 'dev', 'lan0', 'nodad');
  const after = await doctor(topo, '--config', cfg);
  assert.equal(find(after.report, 'ip6_forward').status, 'ok', find(after.report, 'ip6_forward').detail);
  const lan = find(after.report, 'ipv6:lan0');
  assert.equal(lan.status, 'ok', lan.detail);
  assert.match(lan.detail, /^LAN prefixes 2001:db8:5::\/64 \(addresses .*2001:db8:5::1\/64 \(global\)/);
  const human = await topo.cli('doctor', '--config', cfg);
  assert.match(human.stdout, /^ok +IPv6 forwarding: net\.ipv6\.conf\.all\.forwarding = 1$/m);
  assert.match(human.stdout, /^ok +LAN interface lan0 IPv6: LAN prefixes 2001:db8:5::\/64/m);
});
