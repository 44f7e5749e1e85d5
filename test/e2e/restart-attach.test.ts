/**
 * End to end: attaching is all or nothing, and a daemon that cannot start
 * leaves the running data path as it was: a second daemon, a failed attach
 * (a foreign filter holding porttrig's priority), pinned state of another
 * layout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, GW_WAN, Topology, WAN_SERVER, type Proc } from './topology.js';
import { cliJson, exitCode, hasClsact, porttrigProgId, streamAdvances, streamPeer, tcFilters } from './restart-util.js';
import { ConfigCodec, MAPS, PT_LAYOUT_VERSION } from '../../src/bpf/abi.js';
import { U32 } from '../../src/bpf/struct.js';
import * as ffi from '../../src/ffi/libbpf.js';

const root = process.getuid?.() === 0;
const FLOWING = 25;
const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
`;

function setup(t: { after: (fn: () => void) => void }): Topology {
  const topo = new Topology();
  t.after(() => topo.destroy());
  return topo.create();
}

/** Run the daemon expecting it to refuse to start; its exit code and stderr. */
async function daemonRefuses(topo: Topology, cfg: string): Promise<{ code: number | null; stderr: string }> {
  const d = topo.spawn(topo.ns.gw, process.execPath, [CLI, 'daemon', '--config', cfg]);
  const code = await exitCode(d, 15000);
  return { code, stderr: d.stderr };
}

/** A foreign filter at porttrig's priority on `dev` ingress: porttrig cannot attach there. */
function blockPriority(topo: Topology, dev: string): void {
  topo.exec(topo.ns.gw, 'tc', 'qdisc', 'replace', 'dev', dev, 'clsact');
  // u32 with no action: the classifier every kernel with TC has (no act_* module needed).
  topo.exec(topo.ns.gw, 'tc', 'filter', 'add', 'dev', dev, 'ingress', 'prio', '1', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0');
}

/** A trigger and a counter stream through the opened port. */
async function streaming(topo: Topology): Promise<[Proc, string][]> {
  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');
  const server = streamPeer(topo, topo.ns.lan, 'serve', 113);
  await server.waitFor((e) => e.event === 'listening');
  const trig = await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000);
  assert.equal(trig.ok, true, JSON.stringify(trig));
  const client = streamPeer(topo, topo.ns.wan, 'connect', GW_WAN, 113);
  await client.waitFor((e) => e.event === 'connected');
  const ends: [Proc, string][] = [[client, 'WAN client'], [server, 'LAN server']];
  await streamAdvances(ends, FLOWING);
  return ends;
}

test('a failed second attach undoes the first: no filter and no qdisc left behind', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  blockPriority(topo, 'wan0');
  const r = await daemonRefuses(topo, topo.writeConfig(RULES));
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /attach pt_wan_ingress to ifindex \d+ .*priority 1/);
  assert.equal(porttrigProgId(topo, 'lan0'), 0, `lan0 keeps a porttrig filter: ${tcFilters(topo, 'lan0')}`);
  assert.equal(hasClsact(topo, 'lan0'), false, 'the clsact qdisc porttrig created on lan0 is removed again');
  assert.match(tcFilters(topo, 'wan0'), /u32/, 'the foreign filter is untouched');
});

test('a restart whose attach fails puts the previous programs back; forwarding never stops', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  topo.exec(topo.ns.gw, 'ip', 'link', 'add', 'lan1', 'type', 'veth', 'peer', 'name', 'lan1p');
  topo.exec(topo.ns.gw, 'ip', 'link', 'set', 'lan1', 'up');
  const cfg = topo.writeConfig(RULES);
  const d1 = await topo.startDaemon(cfg);
  const ends = await streaming(topo);
  const before = { lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') };
  d1.kill('SIGKILL');
  await exitCode(d1);

  // The next daemon also serves lan1, where a foreign filter holds the priority:
  // it replaces lan0's program first, then fails on lan1 and must put lan0's back.
  blockPriority(topo, 'lan1');
  const wide = join(topo.dir, 'wide.yaml');
  writeFileSync(wide, readFileSync(cfg, 'utf8').replace('lan: [lan0]', 'lan: [lan0, lan1]'));
  const r = await daemonRefuses(topo, wide);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /attach pt_lan_ingress/);
  assert.deepEqual({ lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') }, before,
    'the programs of the previous daemon are attached again');
  await streamAdvances(ends, FLOWING);

  // Once lan1 is free, the same config starts and adopts.
  topo.exec(topo.ns.gw, 'tc', 'filter', 'del', 'dev', 'lan1', 'ingress', 'prio', '1');
  const d3 = await topo.startDaemon(wide);
  assert.ok(porttrigProgId(topo, 'lan1') > 0);
  assert.notEqual(porttrigProgId(topo, 'lan0'), before.lan0);
  assert.equal((await cliJson<unknown[]>(topo, 'sessions')).length, 1);
  await streamAdvances(ends, FLOWING);

  // Back to the config without lan1: the next daemon leaves lan1 (its clsact
  // qdisc predates porttrig and stays).
  d3.kill('SIGTERM');
  await exitCode(d3);
  await topo.startDaemon(cfg);
  assert.equal(porttrigProgId(topo, 'lan1'), 0, `lan1 keeps a porttrig filter: ${tcFilters(topo, 'lan1')}`);
  assert.equal(hasClsact(topo, 'lan1'), true);
  await streamAdvances(ends, FLOWING);
});

test('a second daemon is refused before it touches the running one', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  const cfg = topo.writeConfig(RULES);
  await topo.startDaemon(cfg);
  const before = { lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') };
  const r = await daemonRefuses(topo, cfg);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /another porttrig daemon already answers/);
  assert.deepEqual({ lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') }, before);
  assert.equal((await topo.cli('status')).status, 0, 'the first daemon still serves');
});

test('the daemon refuses pinned state of another layout version and leaves it alone', { skip: !root && 'needs root' }, async (t) => {
  const topo = setup(t);
  const cfg = topo.writeConfig(RULES);
  const d1 = await topo.startDaemon(cfg);
  d1.kill('SIGTERM');
  await exitCode(d1);
  const fd = ffi.objGet(join(topo.pinPath, MAPS.config));
  assert.ok(fd >= 0);
  const v = Buffer.alloc(ConfigCodec.size);
  ffi.mapLookup(fd, U32.format(0), v);
  ConfigCodec.format({ ...ConfigCodec.parse(v), layout_version: PT_LAYOUT_VERSION + 1 }, v);
  ffi.mapUpdate(fd, U32.format(0), v, ffi.BPF_ANY);
  const progs = { lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') };
  const r = await daemonRefuses(topo, cfg);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, new RegExp(`pt_config: layout version ${PT_LAYOUT_VERSION + 1} pinned, ${PT_LAYOUT_VERSION} in this object`));
  assert.match(r.stderr, /porttrig detach/);
  const after = Buffer.alloc(ConfigCodec.size);
  ffi.mapLookup(fd, U32.format(0), after);
  ffi.closeFd(fd);
  assert.equal(ConfigCodec.parse(after).layout_version, PT_LAYOUT_VERSION + 1, 'pinned config untouched');
  assert.deepEqual({ lan0: porttrigProgId(topo, 'lan0'), wan0: porttrigProgId(topo, 'wan0') }, progs, 'programs untouched');
});
