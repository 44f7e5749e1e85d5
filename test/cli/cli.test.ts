/** The CLI as a user runs it: exit codes and one-line errors. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('a command that needs the daemon and finds none says so in one line and exits 1', () => {
  const r = run('sessions', '--socket', '/nonexistent/porttrig.sock');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, 'porttrig: no porttrig daemon answers on /nonexistent/porttrig.sock (is it running?)\n');
});

test('check-config: 0 for the example, 2 with every error for a bad file', (t) => {
  assert.equal(run('check-config', join(ROOT, 'examples/porttrig.yaml')).status, 0);
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, 'interfaces: {wan: w, lan: [l]}\nrules:\n  - name: a\n    trigger: tcp/6667\n    open: tcp/70000\n');
  const r = run('check-config', bad);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /bad\.yaml:5: rules\[0\]\.open: port 70000 out of range 1-65535/);
});

test('check-config --interfaces refuses a missing interface (exit 2); without it the file is valid (the daemon waits for it)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'c.yaml');
  writeFileSync(cfg, `interfaces: {wan: ptnosuch0, lan: [lo]}\ndatapath: {pin_path: ${dir}/bpf}\ncontrol: {socket: ${dir}/s.sock}\nrules: []\n`);
  assert.equal(run('check-config', cfg).status, 0);
  // --json names the pin path (the package's maintainer scripts record it for purge).
  assert.deepEqual(JSON.parse(run('check-config', '--json', cfg).stdout), { ok: true, rules: 0, pinPath: `${dir}/bpf` });
  const r = run('check-config', '--interfaces', cfg);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /interfaces\.wan: interface "ptnosuch0" does not exist/);
});

test('unknown command or option: usage error, exit 2', () => {
  assert.equal(run('frobnicate').status, 2);
  assert.equal(run('sessions', '--bogus').status, 2);
});

test('every SPEC 6 command has --help (exit 0) and the daemon-facing ones take --json and --socket', () => {
  const commands = ['daemon', 'status', 'rules', 'sessions', 'flows', 'open', 'close', 'reload', 'check-config', 'doctor', 'detach', 'version'];
  for (const c of commands) {
    const r = run(c, '--help');
    assert.equal(r.status, 0, `${c} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: porttrig ${c}`), c);
    if (c !== 'daemon') {
      assert.match(r.stdout, /--json/, `${c} has no --json`);
      assert.match(r.stdout, /--socket <path>/, `${c} has no --socket`);
    }
  }
  const top = run('--help').stdout;
  for (const c of commands) assert.match(top, new RegExp(`^  ${c}\\b`, 'm'), `porttrig --help does not list ${c}`);
});

test('--socket wins over the socket named in --config', () => {
  const r = run('status', '--config', join(ROOT, 'examples/porttrig.yaml'), '--socket', '/nonexistent/other.sock');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no porttrig daemon answers on \/nonexistent\/other\.sock/);
  const c = run('status', '--config', join(ROOT, 'examples/porttrig.yaml'));
  assert.match(c.stderr, /no porttrig daemon answers on \/run\/porttrig\/porttrig\.sock|no access to \/run\/porttrig\/porttrig\.sock/);
});
