/**
 * The daemon runs with exactly the capabilities packaging/porttrig.service
 * grants (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON) and forwards; without CAP_BPF
 * it refuses in one line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, GW_WAN, ROOT, Topology, WAN_SERVER, type Proc } from '../e2e/topology.js';
import { probeCtKfunc } from '../../src/bpf/conntrack.js';

const root = process.getuid?.() === 0;
const NOBODY = 65534;
const START_TIMEOUT_MS = 45_000;
const POLL_MS = 50;
const RULES = `  - name: ident
    trigger: tcp/6667
    open: tcp/113
`;

/** The capabilities of the unit file's CapabilityBoundingSet, as setpriv names them. */
function unitCaps(): string[] {
  const unit = readFileSync(join(ROOT, 'packaging/porttrig.service'), 'utf8');
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit);
  assert.ok(line, 'packaging/porttrig.service has no CapabilityBoundingSet=');
  const ambient = /^AmbientCapabilities=(.*)$/m.exec(unit);
  assert.equal(ambient?.[1], line[1], 'AmbientCapabilities= and CapabilityBoundingSet= differ');
  return line[1]!.trim().split(/\s+/).map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

/** Resolve when the daemon logs that it serves; reject with its stderr if it exits first. */
function started(d: Proc): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { clearInterval(poll); reject(new Error(`daemon did not start: ${d.stderr}`)); }, START_TIMEOUT_MS);
    const poll = setInterval(() => {
      if (d.stderr.includes('daemon started')) { clearTimeout(t); clearInterval(poll); resolve(); }
      if (d.child.exitCode !== null) { clearTimeout(t); clearInterval(poll); reject(new Error(`daemon exited ${d.child.exitCode}: ${d.stderr}`)); }
    }, POLL_MS);
  });
}

/** A trigger from the LAN host, then an inbound connection from the WAN server reaches it. */
async function forwards(topo: Topology): Promise<void> {
  const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
  await ident.waitFor((e) => e.event === 'listening');
  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');
  const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
  assert.equal(trig.ok, true, JSON.stringify(trig));
  const r = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hi', 3000);
  assert.deepEqual([r.ok, r.reply], [true, 'echo:hi'], JSON.stringify(r));
}

function setpriv(caps: string[], user: boolean): string[] {
  const set = `-all${caps.map((c) => `,+${c}`).join('')}`;
  return [
    ...(user ? ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', '--ambient-caps', set] : []),
    '--inh-caps', set, '--bounding-set', set,
  ];
}

/** What the daemon needs to run at all; the unit adds CAP_SYS_ADMIN for the conntrack check. */
const REQUIRED = ['bpf', 'net_admin', 'perfmon'];

test('the unit grants the required capabilities and CAP_SYS_ADMIN (the conntrack check where nf_conntrack is a module)', () => {
  assert.deepEqual(unitCaps().sort(), [...REQUIRED, 'sys_admin']);
});

test('as root with the required capabilities only (no CAP_SYS_ADMIN): starts, forwards, and says which capabilities it has', { skip: !root && 'needs root' }, async (t) => {
  const caps = REQUIRED;
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  const d = topo.spawn(topo.ns.gw, 'setpriv', [...setpriv(caps, false), process.execPath, CLI, 'daemon', '--config', cfg]);
  await started(d);
  const status = readFileSync(`/proc/${d.child.pid}/status`, 'utf8');
  assert.match(status, /^CapEff:\s*000000c000001000$/m, 'the daemon holds exactly CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF');
  await forwards(topo);
  assert.equal((await topo.cli('status')).status, 0);
  // The conntrack check's kfunc: resolvable without CAP_SYS_ADMIN only from vmlinux.
  const { conntrack } = JSON.parse((await topo.cli('status', '--json')).stdout) as { conntrack: { check: boolean; reason: string } };
  const home = probeCtKfunc().home;
  assert.equal(conntrack.check, home === 'vmlinux', conntrack.reason);
  if (home === 'nf_conntrack') assert.match(conntrack.reason, /only with CAP_SYS_ADMIN, which this process lacks/);

  // A restart under the same unit (systemctl restart, an upgrade) replaces
  // the programs it finds attached, without CAP_SYS_ADMIN.
  d.child.kill('SIGTERM');
  await new Promise((resolve) => d.child.once('exit', resolve));
  const again = topo.spawn(topo.ns.gw, 'setpriv', [...setpriv(caps, false), process.execPath, CLI, 'daemon', '--config', cfg]);
  await started(again);
  const sessions = JSON.parse((await topo.cli('sessions', '--json')).stdout) as { rule: string }[];
  assert.deepEqual(sessions.map((x) => x.rule), ['ident'], 'the restarted daemon adopted the session');
  const r = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'again', 3000);
  assert.deepEqual([r.ok, r.reply], [true, 'echo:again'], JSON.stringify(r));
});

test('as nobody with the unit\'s capabilities as ambient ones: starts and forwards', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  // The daemon's own files (config, socket dir, pinned maps) belong to its user.
  for (const p of [topo.dir, topo.pinPath, cfg]) chownSync(p, NOBODY, NOBODY);
  const d = topo.spawn(topo.ns.gw, 'setpriv', [...setpriv(unitCaps(), true), process.execPath, CLI, 'daemon', '--config', cfg]);
  await started(d);
  assert.ok(readdirSync(topo.pinPath).includes('pt_sessions'));
  assert.equal(statSync(topo.socket).uid, NOBODY);
  await forwards(topo);
  // Root may use the daemon's socket (and so may its own user).
  assert.equal((await topo.cli('sessions', '--json')).status, 0);
  // With the unit's CAP_SYS_ADMIN the conntrack check is on wherever the kfunc is.
  const { conntrack } = JSON.parse((await topo.cli('status', '--json')).stdout) as { conntrack: { check: boolean; reason: string } };
  assert.equal(conntrack.check, probeCtKfunc().home !== null, conntrack.reason);
});

for (const lacking of ['bpf', 'perfmon']) {
  test(`without CAP_${lacking.toUpperCase()} (and CAP_SYS_ADMIN, which stands in for it) the daemon refuses to start, in one line, and attaches nothing`, { skip: !root && 'needs root' }, async (t) => {
    const topo = new Topology();
    t.after(() => topo.destroy());
    topo.create();
    const cfg = topo.writeConfig(RULES);
    const caps = REQUIRED.filter((c) => c !== lacking);
    const d = topo.spawn(topo.ns.gw, 'setpriv', [...setpriv(caps, false), process.execPath, CLI, 'daemon', '--config', cfg]);
    assert.equal(await d.exited(), 1);
    assert.equal(d.stderr, `porttrig: porttrig daemon lacks CAP_${lacking.toUpperCase()}: run it as root or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (see packaging/porttrig.service)\n`);
    assert.deepEqual(readdirSync(topo.pinPath).filter((f) => !f.endsWith('.debug')), [], 'nothing pinned');
    assert.equal(topo.exec(topo.ns.gw, 'tc', 'qdisc', 'show', 'dev', 'lan0').includes('clsact'), false, 'nothing attached');
  });
}


test('the unit file: systemd-analyze verify has nothing to say; reload is SIGHUP, restart on failure', (t) => {
  const unit = readFileSync(join(ROOT, 'packaging/porttrig.service'), 'utf8');
  for (const line of ['ExecStart=/usr/bin/porttrig daemon --config /etc/porttrig/porttrig.yaml', 'ExecReload=/bin/kill -HUP $MAINPID',
    'After=network-online.target nftables.service',
    'Restart=on-failure', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ReadWritePaths=/sys/fs/bpf /run/porttrig', 'ProtectHome=yes', 'PrivateTmp=yes']) {
    assert.ok(unit.split('\n').includes(line), `packaging/porttrig.service lacks "${line}"`);
  }
  const which = spawnSync('sh', ['-c', 'command -v systemd-analyze']);
  if (which.status !== 0) { t.skip('systemd-analyze not installed (scripts/setup.sh installs it)'); return; }
  // verify wants ExecStart's binary to exist: point a copy at the built CLI.
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'porttrig.service'), unit.replace('/usr/bin/porttrig', CLI));
  // --man=no: Documentation= names man:porttrig(1), which only the installed
  // package has (test/packaging/deb.test.ts checks the page).
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', join(dir, 'porttrig.service')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(`${r.stdout}${r.stderr}`, '', 'systemd-analyze verify printed warnings');
});
