/**
 * The Debian package (scripts/build-deb.sh, packaging/deb/): what is in it,
 * its control fields and conffiles, that it is reproducible, that lintian
 * passes, that the packaged tree runs, and what the maintainer scripts do,
 * run against a scratch DPKG_ROOT with systemd's helpers replaced by stubs
 * that log their calls. (Installing it under systemd, upgrading under
 * traffic and purging on a VM: not yet, README Known gaps.)
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/bpffs.js';

const root = process.getuid?.() === 0;
const tools = ['dpkg-deb', 'help2man', 'lintian'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
const skip = tools.length > 0 ? `${tools.join(', ')} missing: run scripts/setup.sh` : false;

const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ARCH = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();
/** Versions of Debian's own nodejs: 12 (bookworm, with its security update) and 13 (trixie). */
const DEBIAN_NODEJS = { bookworm: ['18.19.0+dfsg-6~deb12u2', '18.20.4+dfsg-1~deb12u3'], trixie: ['20.19.2+dfsg-1'] };

let work = '';
let deb = '';
let extracted = '';

function sh(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}: ${String(r.stderr)}${String(r.stdout).slice(-2000)}`);
  return String(r.stdout);
}

function build(out: string, env: Record<string, string> = {}): string {
  sh('bash', [join(REPO_ROOT, 'scripts/build-deb.sh')], { env: { ...process.env, PT_DEB_OUT: out, ...env } });
  const debs = readdirSync(out).filter((f) => f.endsWith('.deb'));
  assert.equal(debs.length, 1, `one .deb in ${out}: ${debs.join(' ')}`);
  return join(out, debs[0]!);
}

before(() => {
  if (skip) return;
  work = mkdtempSync(join(tmpdir(), 'porttrig-deb-'));
  deb = build(join(work, 'a'), { SOURCE_DATE_EPOCH: '1700000000' });
  extracted = join(work, 'x');
  sh('dpkg-deb', ['-x', deb, extracted]);
});
after(() => { if (work) rmSync(work, { recursive: true, force: true }); });

const field = (name: string): string => sh('dpkg-deb', ['-f', deb, name]).trim();
const contents = (): string[] => sh('dpkg-deb', ['-c', deb]).trim().split('\n').map((l) => l.replace(/^.* \.\//, '/').replace(/ -> .*$/, ''));

test('make deb: porttrig_<version>_<arch>.deb with its control fields', { skip }, () => {
  assert.equal(deb.endsWith(`/porttrig_${VERSION}_${ARCH}.deb`), true, deb);
  assert.equal(field('Package'), 'porttrig');
  assert.equal(field('Version'), VERSION);
  assert.equal(field('Architecture'), ARCH);
  assert.equal(field('Section'), 'net');
  assert.match(field('Maintainer'), /^[^<]+ <[^@>]+@[^>]+>$/);
  const size = Number(field('Installed-Size'));
  assert.ok(size > 1000 && size < 100_000, `Installed-Size ${size} KiB`);
  assert.match(field('Description'), /^port triggering for Linux gateways/);
});

test('Depends: nodejs (>= N) with N the highest Node.js major that porttrig or a bundled package needs (engines); Debian 13 satisfies it, 12 does not', { skip }, () => {
  const depends = field('Depends');
  const m = /nodejs \(>= (\d+)\)/.exec(depends);
  assert.ok(m, `no versioned nodejs in Depends: ${depends}`);
  const need = Number(m[1]);
  // Every engines.node among package.json and the production dependencies that are shipped.
  const pkgs = [join(REPO_ROOT, 'package.json'), ...readdirSync(join(extracted, 'usr/lib/porttrig/node_modules'), { recursive: true, encoding: 'utf8' })
    .filter((p) => /^(@[^/]+\/)?[^/@]+\/package\.json$/.test(p)).map((p) => join(REPO_ROOT, 'node_modules', p))];
  const majors = pkgs.map((p) => (JSON.parse(readFileSync(p, 'utf8')) as { engines?: { node?: string } }).engines?.node)
    .filter((e): e is string => e !== undefined)
    .map((e) => Math.min(...e.split('||').map((alt) => Number(/(\d+)/.exec(alt)?.[1] ?? 0))));
  assert.equal(need, Math.max(...majors), `engines ask for Node.js ${Math.max(...majors)}, Depends says ${need}`);
  const satisfies = (v: string): boolean => spawnSync('dpkg', ['--compare-versions', v, 'ge', String(need)]).status === 0;
  for (const v of DEBIAN_NODEJS.bookworm) assert.equal(satisfies(v), false, `Debian 12's nodejs ${v}`);
  for (const v of DEBIAN_NODEJS.trixie) assert.equal(satisfies(v), true, `Debian 13's nodejs ${v}`);
  // libbpf: the 1.1 API (src/ffi/libbpf.ts); Debian 12 has 1:1.1.2, 13 has 1:1.5.0.
  assert.match(depends, /libbpf1 \(>= 1:1\.1\)/);
  for (const v of ['1:1.1.2-0+deb12u1', '1:1.5.0-3']) assert.equal(spawnSync('dpkg', ['--compare-versions', v, 'ge', '1:1.1']).status, 0, v);
  // tc for postrm purge's detach.
  assert.match(depends, /(^|, )iproute2(,|$)/);
});

test('contents: only what runs, where the daemon looks for it', { skip }, () => {
  const files = contents().filter((p) => !p.endsWith('/'));
  const outside = files.filter((p) => !p.startsWith('/usr/lib/porttrig/'));
  assert.deepEqual(outside.sort(), [
    '/etc/porttrig/porttrig.yaml',
    '/etc/sysctl.d/60-porttrig-bpf-stats.conf',
    '/lib/systemd/system/porttrig.service',
    '/usr/bin/porttrig',
    '/usr/share/doc/porttrig/README.md.gz',
    '/usr/share/doc/porttrig/changelog.gz',
    '/usr/share/doc/porttrig/copyright',
    '/usr/share/lintian/overrides/porttrig',
    '/usr/share/man/man1/porttrig.1.gz',
    '/usr/share/porttrig/grafana-dashboard.json',
    '/usr/share/porttrig/porttrig.schema.json',
    '/usr/share/porttrig/prometheus-alerts.yml',
  ]);
  const app = files.filter((p) => p.startsWith('/usr/lib/porttrig/') && !p.startsWith('/usr/lib/porttrig/node_modules/'));
  // src/paths.ts: the package root holds package.json and build/*.bpf.o.
  for (const p of ['package.json', 'build/porttrig.bpf.o', 'build/porttrig-noct.bpf.o', 'dist/src/cli/main.js', 'dist/src/daemon/daemon.js']) {
    assert.ok(app.includes(`/usr/lib/porttrig/${p}`), `missing /usr/lib/porttrig/${p}`);
  }
  const built = readdirSync(join(REPO_ROOT, 'dist/src'), { recursive: true, encoding: 'utf8' }).filter((p) => p.endsWith('.js'));
  assert.equal(app.filter((p) => p.startsWith('/usr/lib/porttrig/dist/src/')).length, built.length, 'every compiled module of src/');
  assert.deepEqual(app.filter((p) => !/^\/usr\/lib\/porttrig\/(package\.json|build\/porttrig(-noct)?\.bpf\.o|dist\/src\/.*\.js)$/.test(p)), [], 'nothing else: no tests, maps, sources');
  // node_modules: exactly the production dependencies, nothing that never loads.
  const mods = new Set(files.filter((p) => p.startsWith('/usr/lib/porttrig/node_modules/'))
    .map((p) => /^\/usr\/lib\/porttrig\/node_modules\/((@[^/]+\/)?[^/]+)\//.exec(p)![1]));
  const prod = sh('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO_ROOT }).trim().split('\n').slice(1)
    .map((p) => p.replace(/^.*?\/node_modules\//, ''));
  assert.deepEqual([...mods].sort(), [...new Set(prod)].sort());
  for (const dev of ['typescript', '@types/node']) assert.equal(mods.has(dev), false, dev);
  const junk = files.filter((p) => p.includes('/node_modules/') && /(\.ts|\.map|\.md|\/\.[^/]+|musl_[^/]+\/.*)$/.test(p));
  assert.deepEqual(junk, []);
  assert.ok(files.some((p) => /\/node_modules\/@koromix\/koffi-linux-[^/]+\/linux_[^/]+\/koffi\.node$/.test(p)), 'koffi\'s native module');
});

test('conffiles: the configuration and the sysctl.d file; the shipped configuration is not started until edited', { skip }, () => {
  const conffiles = sh('dpkg-deb', ['-I', deb, 'conffiles']);
  assert.deepEqual(conffiles.trim().split('\n'), ['/etc/porttrig/porttrig.yaml', '/etc/sysctl.d/60-porttrig-bpf-stats.conf']);
  const cli = join(extracted, 'usr/lib/porttrig/dist/src/cli/main.js');
  const shipped = join(extracted, 'etc/porttrig/porttrig.yaml');
  const r = spawnSync(process.execPath, [cli, 'check-config', shipped], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stdout);
  assert.match(r.stderr, /porttrig\.yaml:\d+: interfaces: missing required field/, 'the error says what to edit');
  // Its commented interfaces and rules, uncommented, are a valid configuration (they do not rot).
  const text = readFileSync(shipped, 'utf8').split('\n').filter((l) => l !== 'rules: []')
    .map((l) => l.replace(/^#(interfaces:|rules:|  )/, '$1')).join('\n');
  const edited = join(work, 'edited.yaml');
  writeFileSync(edited, text);
  const ok = spawnSync(process.execPath, [cli, 'check-config', edited], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /ok \(3 rules\)/);
  // The sysctl is shipped off (the daemon turns statistics on while it runs).
  const sysctl = readFileSync(join(extracted, 'etc/sysctl.d/60-porttrig-bpf-stats.conf'), 'utf8');
  assert.match(sysctl, /^#kernel\.bpf_stats_enabled = 1$/m);
  assert.doesNotMatch(sysctl, /^kernel\./m);
});

test('the packaged tree runs: /usr/bin/porttrig\'s command, version, --help, libbpf through koffi', { skip }, () => {
  const cli = join(extracted, 'usr/lib/porttrig/dist/src/cli/main.js');
  assert.equal(sh(process.execPath, [cli, 'version']).trim(), VERSION);
  assert.match(sh(process.execPath, [cli, '--help']), /check-config \[options\] <file>/);
  // doctor loads libbpf.so.1 with koffi (exit 1 only if something required is missing).
  const d = spawnSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8' });
  assert.ok(d.status === 0 || d.status === 1, d.stderr);
  const report = JSON.parse(d.stdout) as { checks: { id: string; status: string }[] };
  assert.ok(report.checks.length > 0);
  assert.equal(readFileSync(join(extracted, 'usr/bin/porttrig'), 'utf8').split('\n').at(-2), 'exec /usr/bin/node /usr/lib/porttrig/dist/src/cli/main.js "$@"');
  const unit = readFileSync(join(extracted, 'lib/systemd/system/porttrig.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/porttrig daemon --config \/etc\/porttrig\/porttrig\.yaml$/m);
  const man = sh('sh', ['-c', `zcat '${join(extracted, 'usr/share/man/man1/porttrig.1.gz')}'`]);
  for (const c of ['daemon', 'status', 'check-config', 'detach', 'doctor']) assert.match(man, new RegExp(`^\\.SS "porttrig ${c}"$`, 'm'), c);
});

test('reproducible: a second build from the same tree and SOURCE_DATE_EPOCH is the same bytes', { skip }, () => {
  const again = build(join(work, 'b'), { SOURCE_DATE_EPOCH: '1700000000' });
  assert.equal(readFileSync(again).equals(readFileSync(deb)), true, `${deb} and ${again} differ`);
  const mtimes = new Set(sh('dpkg-deb', ['-c', deb]).trim().split('\n').map((l) => l.split(/\s+/).slice(3, 5).join(' ')));
  assert.equal(mtimes.size, 1, `one mtime for every entry: ${[...mtimes].join(', ')}`);
  assert.match(sh('dpkg-deb', ['-c', deb]), /^-rwxr-xr-x root\/root/m);
  assert.doesNotMatch(sh('dpkg-deb', ['-c', deb]), /^\S+ (?!root\/root)/m, 'every entry owned by root');
});

test('lintian: no error and no warning that packaging/deb/lintian-overrides does not explain', { skip }, () => {
  const r = spawnSync('lintian', ['--fail-on', 'error,warning', deb], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.doesNotMatch(r.stdout, /^[EW]: /m, r.stdout);
});

// ---- maintainer scripts -------------------------------------------------------

/**
 * A scratch system for the maintainer scripts: DPKG_ROOT with /etc/porttrig
 * and (if `systemd`) /run/systemd/system, and a bin/ of stubs first in PATH:
 * systemctl, deb-systemd-helper and deb-systemd-invoke log their arguments
 * (deb-systemd-invoke exits with $PT_INVOKE_RC); porttrig is the packaged CLI.
 */
interface Scratch { dir: string; run: (script: string, args: string[], netns?: string) => ReturnType<typeof spawnSync>; calls: () => string[] }
function scratch(opts: { systemd: boolean; config: string }): Scratch {
  const dir = mkdtempSync(join(work, 'root-'));
  const bin = join(dir, '.bin');
  mkdirSync(bin);
  mkdirSync(join(dir, 'etc/porttrig'), { recursive: true });
  if (opts.systemd) mkdirSync(join(dir, 'run/systemd/system'), { recursive: true });
  writeFileSync(join(dir, 'etc/porttrig/porttrig.yaml'), opts.config);
  const log = join(dir, '.calls');
  for (const s of ['systemctl', 'deb-systemd-helper', 'deb-systemd-invoke']) {
    writeFileSync(join(bin, s), `#!/bin/sh\necho "${s} $*" >> '${log}'\n${s === 'deb-systemd-invoke' ? 'exit ${PT_INVOKE_RC:-0}' : 'exit 0'}\n`);
    chmodSync(join(bin, s), 0o755);
  }
  writeFileSync(join(bin, 'porttrig'), `#!/bin/sh\nexec '${process.execPath}' '${join(extracted, 'usr/lib/porttrig/dist/src/cli/main.js')}' "$@"\n`);
  chmodSync(join(bin, 'porttrig'), 0o755);
  const ctl = join(work, 'ctl');
  if (!existsSync(ctl)) sh('sh', ['-c', `mkdir -p '${ctl}' && dpkg-deb -e '${deb}' '${ctl}'`]);
  return {
    dir,
    run: (script, args, netns) => spawnSync(netns ? 'ip' : 'sh', [...(netns ? ['netns', 'exec', netns, 'sh'] : []), join(ctl, script), ...args], {
      encoding: 'utf8', env: { PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`, DPKG_ROOT: dir, PT_INVOKE_RC: process.env.PT_INVOKE_RC ?? '0' },
    }),
    calls: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []),
  };
}

/** A configuration whose interfaces exist on any machine (lo) or on none. */
const config = (wan: string, pin: string): string => `interfaces: {wan: ${wan}, lan: [lo]}\ndatapath: {pin_path: ${pin}}\nrules: []\n`;

test('postinst configure (install): a configuration that fails check-config --interfaces is neither enabled nor started; the message says what to edit', { skip }, () => {
  const s = scratch({ systemd: true, config: config('ptnosuch0', '/sys/fs/bpf/pt-test') });
  const r = s.run('postinst', ['configure', '']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stderr), /interfaces\.wan: interface "ptnosuch0" does not exist/);
  assert.match(String(r.stderr), /not started\. Edit \/etc\/porttrig\/porttrig\.yaml/);
  assert.match(String(r.stderr), /systemctl enable --now porttrig/);
  const calls = s.calls();
  assert.equal(calls.some((c) => /^deb-systemd-helper enable|^deb-systemd-invoke start/.test(c)), false, calls.join('\n'));
  assert.ok(calls.includes('deb-systemd-helper update-state porttrig.service'), calls.join('\n'));
  // The pin path is recorded for purge all the same (the file is valid).
  assert.equal(readFileSync(join(s.dir, 'var/lib/porttrig/pin-path'), 'utf8'), '/sys/fs/bpf/pt-test\n');
});

test('postinst configure (install): a configuration that passes is enabled and started', { skip: skip || (!root && 'needs root (an interface in a namespace)') }, () => {
  const ns = `ptdeb${process.pid}`;
  sh('ip', ['netns', 'add', ns]);
  try {
    sh('ip', ['-n', ns, 'link', 'add', 'ptwan0', 'type', 'veth', 'peer', 'name', 'ptwan0p']);
    const s = scratch({ systemd: true, config: config('ptwan0', '/sys/fs/bpf/pt-test2') });
    const r = s.run('postinst', ['configure', ''], ns);
    assert.equal(r.status, 0, String(r.stderr));
    assert.match(String(r.stdout), /ok \(0 rules\); porttrig\.service enabled and started/);
    const calls = s.calls();
    assert.ok(calls.includes('deb-systemd-helper enable porttrig.service'), calls.join('\n'));
    assert.ok(calls.includes('deb-systemd-invoke start porttrig.service'), calls.join('\n'));
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
});

test('postinst configure (upgrade): restarts the daemon; a daemon that refuses to start does not fail the upgrade, and says where its reason is', { skip }, () => {
  const s = scratch({ systemd: true, config: config('ptnosuch0', '/sys/fs/bpf/pt-test3') });
  const r = s.run('postinst', ['configure', '0.0.9']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.deepEqual(s.calls(), ['systemctl --system daemon-reload', 'deb-systemd-invoke restart porttrig.service']);
  process.env.PT_INVOKE_RC = '1';
  try {
    const f = s.run('postinst', ['configure', '0.0.9']);
    assert.equal(f.status, 0, String(f.stderr));
    assert.match(String(f.stderr), /did not restart; forwarding goes on from the pinned state without it/);
    assert.match(String(f.stderr), /journalctl -u porttrig/);
  } finally {
    delete process.env.PT_INVOKE_RC;
  }
});

test('postinst without systemd running (a chroot): enables, starts nothing', { skip: skip || (!root && 'needs root (an interface in a namespace)') }, () => {
  const ns = `ptdebc${process.pid}`;
  sh('ip', ['netns', 'add', ns]);
  try {
    sh('ip', ['-n', ns, 'link', 'add', 'ptwan0', 'type', 'veth', 'peer', 'name', 'ptwan0p']);
    const s = scratch({ systemd: false, config: config('ptwan0', '/sys/fs/bpf/pt-test4') });
    const r = s.run('postinst', ['configure', ''], ns);
    assert.equal(r.status, 0, String(r.stderr));
    assert.deepEqual(s.calls(), ['deb-systemd-helper enable porttrig.service']);
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
  }
});

test('prerm remove: stops the daemon, leaves forwarding, records the pin path; prerm upgrade does nothing', { skip }, () => {
  const s = scratch({ systemd: true, config: config('ptnosuch0', '/sys/fs/bpf/pt-test5') });
  const up = s.run('prerm', ['upgrade', '0.2.0']);
  assert.equal(up.status, 0, String(up.stderr));
  assert.deepEqual(s.calls(), []);
  const r = s.run('prerm', ['remove']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.deepEqual(s.calls(), ['deb-systemd-invoke stop porttrig.service']);
  assert.match(String(r.stdout), /keeps forwarding \(state pinned under \/sys\/fs\/bpf\/pt-test5\) until 'apt purge porttrig' detaches it/);
  assert.equal(readFileSync(join(s.dir, 'var/lib/porttrig/pin-path'), 'utf8'), '/sys/fs/bpf/pt-test5\n');
});

test('postrm purge: removes the pins at the recorded pin path, the unit\'s state, /var/lib/porttrig and dpkg\'s leftovers in /etc/porttrig', { skip }, () => {
  const s = scratch({ systemd: true, config: '' });
  const pin = join(s.dir, 'pins');
  mkdirSync(pin);
  for (const n of ['pt_config', 'pt_sessions', 'pt_flows']) writeFileSync(join(pin, n), '');
  mkdirSync(join(s.dir, 'var/lib/porttrig'), { recursive: true });
  writeFileSync(join(s.dir, 'var/lib/porttrig/pin-path'), `${pin}\n`);
  // dpkg has removed the conffile itself by now; its backup is left.
  rmSync(join(s.dir, 'etc/porttrig/porttrig.yaml'));
  writeFileSync(join(s.dir, 'etc/porttrig/porttrig.yaml.dpkg-old'), 'old');
  const rm = s.run('postrm', ['remove']);
  assert.equal(rm.status, 0, String(rm.stderr));
  assert.deepEqual(s.calls(), ['systemctl --system daemon-reload']);
  const r = s.run('postrm', ['purge']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stdout), new RegExp(`detached from 0 interfaces, removed 3 pins under ${pin}`));
  assert.equal(existsSync(pin), false, 'the pin directory');
  assert.equal(existsSync(join(s.dir, 'var/lib/porttrig')), false);
  assert.equal(existsSync(join(s.dir, 'etc/porttrig')), false);
  assert.ok(s.calls().includes('deb-systemd-helper purge porttrig.service'), s.calls().join('\n'));
});

test('postrm purge: a file of the admin\'s in /etc/porttrig stays, and is named', { skip }, () => {
  const s = scratch({ systemd: false, config: '' });
  rmSync(join(s.dir, 'etc/porttrig/porttrig.yaml'));
  writeFileSync(join(s.dir, 'etc/porttrig/porttrig-ppp.yaml'), 'mine');
  const r = s.run('postrm', ['purge']);
  assert.equal(r.status, 0, String(r.stderr));
  assert.match(String(r.stderr), /left .*\/etc\/porttrig: it holds files that are not the package's \(porttrig-ppp\.yaml \)/);
  assert.equal(readFileSync(join(s.dir, 'etc/porttrig/porttrig-ppp.yaml'), 'utf8'), 'mine');
});
