/**
 * The daemon's log: structured lines with levels; libbpf's own messages only
 * at --log-level debug, or as errors right before a failed load's error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, Topology, type Proc } from '../e2e/topology.js';

const root = process.getuid?.() === 0;
const RULES = `  - name: ident
    trigger: tcp/6667
    open: tcp/113
`;
const LINE = /^time=\S+ level=(debug|info|warn|error) msg=/;
const START_TIMEOUT_MS = 15000;
const POLL_MS = 50;

function until(d: Proc, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { clearInterval(poll); reject(new Error(`no "${text}" in: ${d.stderr}`)); }, START_TIMEOUT_MS);
    const poll = setInterval(() => {
      if (d.stderr.includes(text)) { clearTimeout(t); clearInterval(poll); resolve(); }
    }, POLL_MS);
  });
}

test('info level: structured lines only, no libbpf chatter; debug level: libbpf lines as debug', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  const info = await topo.startDaemon(cfg);
  assert.equal((await topo.cli('open', 'ident', '10.77.0.2')).status, 0);
  await until(info, 'session opened by hand');
  info.kill('SIGTERM');
  await info.exited();
  const lines = info.stderr.trimEnd().split('\n');
  for (const l of lines) assert.match(l, LINE, `not a structured line: ${l}`);
  assert.ok(!/libbpf/i.test(info.stderr), `libbpf at info level:\n${info.stderr}`);
  assert.ok(lines.some((l) => /level=info msg="session opened by hand" rule=ident host=10\.77\.0\.2/.test(l)), info.stderr);

  const debug = topo.spawn(topo.ns.gw, process.execPath, [CLI, 'daemon', '--config', cfg, '--log-level', 'debug']);
  await until(debug, 'daemon started');
  assert.match(debug.stderr, /level=debug msg=libbpf level=\d text=/);
  for (const l of debug.stderr.trimEnd().split('\n')) assert.match(l, LINE, `not a structured line: ${l}`);
});

test('a load that fails shows libbpf\'s reason as error lines, then one clear error; exit 1', { skip: !root && 'needs root' }, (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(RULES);
  const bogus = join(topo.dir, 'not-an-object.o');
  writeFileSync(bogus, 'this is not an ELF file\n');
  const r = spawnSync('ip', ['netns', 'exec', topo.ns.gw, process.execPath, CLI, 'daemon', '--config', cfg], {
    encoding: 'utf8', env: { ...process.env, PORTTRIG_BPF_OBJECT: bogus },
  });
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  const last = lines.pop()!;
  assert.match(last, new RegExp(`^porttrig: open ${bogus}: `));
  assert.ok(lines.length > 0, 'no libbpf lines before the error');
  for (const l of lines) assert.match(l, /^time=\S+ level=error msg=libbpf text="libbpf: /, l);
  assert.ok(!r.stderr.includes('level=debug'));
});
