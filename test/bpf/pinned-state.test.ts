/**
 * Adopting pinned state (SPEC 6, upgrades): pins that another layout version
 * or other map definitions made are refused before anything is adopted, with
 * a message naming each map and what differs, and the pins are left exactly
 * as they were. Each test pins real state under its own bpffs, tampers with
 * it, and loads the object again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Datapath, ensureBpffs } from '../../src/bpf/datapath.js';
import {
  ConfigCodec, DIRECTIONS, MAPS, PKT_STATS_ENTRIES, PT_F_IPV6, PT_LAYOUT_VERSION, TAIL_CALL_MAPS, VERDICTS, pktStatsIndex,
} from '../../src/bpf/abi.js';
import { PerCpuCounters, RawMap } from '../../src/bpf/map.js';
import { detachAll } from '../../src/bpf/detach.js';
import { U32 } from '../../src/bpf/struct.js';
import * as ffi from '../../src/ffi/libbpf.js';
import { PorttrigError } from '../../src/errors.js';
import { BPF_OBJECT, bpfSkipReason, useDatapath, type TestDatapath } from '../helpers/bpffs.js';

const skip = bpfSkipReason() ?? false;
const LIMITS = { sessions: 64, flows: 64 };
const HOST = '10.77.0.2';

/** Pinned state with one session in it, the object closed again. */
function pinnedState(t: { after: (fn: () => void) => void }): TestDatapath {
  const f = useDatapath(t, { limits: LIMITS });
  f.dp.maps.sessions.set({ rule: 1, peer: '0.0.0.0' }, { opened_ns: 1n, last_seen_ns: 2n, host: HOST, ifindex: 3 });
  f.dp.close();
  return f;
}

const load = (pinPath: string, limits = LIMITS): Datapath => Datapath.load({ objectPath: BPF_OBJECT, pinPath, limits });

/** Load must fail with E_STATE whose message matches every pattern. */
function refused(pinPath: string, patterns: RegExp[], limits = LIMITS): void {
  assert.throws(() => load(pinPath, limits), (e: unknown) => {
    assert.ok(e instanceof PorttrigError, String(e));
    assert.equal(e.code, 'E_STATE');
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/** Fingerprint of every pin: file names and the map ids behind them. */
function pins(pinPath: string): string {
  return readdirSync(pinPath).sort().map((n) => {
    const fd = ffi.objGet(join(pinPath, n));
    const info = Buffer.alloc(96);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    ffi.objGetInfo(fd, info, len);
    ffi.closeFd(fd);
    return `${n}#${info.readUInt32LE(4)}`;
  }).join(',');
}

function writePinnedVersion(pinPath: string, version: number): void {
  const fd = ffi.objGet(join(pinPath, MAPS.config));
  const v = Buffer.alloc(ConfigCodec.size);
  assert.equal(ffi.mapLookup(fd, U32.format(0), v), 0);
  ConfigCodec.format({ ...ConfigCodec.parse(v), layout_version: version }, v);
  assert.equal(ffi.mapUpdate(fd, U32.format(0), v, ffi.BPF_ANY), 0);
  ffi.closeFd(fd);
}

function sessionStillThere(pinPath: string): void {
  const dp = load(pinPath);
  try {
    assert.equal(dp.adopted, true);
    assert.equal(dp.maps.sessions.get({ rule: 1, peer: '0.0.0.0' })?.host, HOST, 'the pinned session survived the refusal');
  } finally {
    dp.close();
  }
}

test('matching pins are adopted with their contents', { skip }, (t) => {
  const f = pinnedState(t);
  sessionStillThere(f.pinPath);
});

test('another layout version in pt_config is refused; the pins stay as they were', { skip }, (t) => {
  const f = pinnedState(t);
  writePinnedVersion(f.pinPath, PT_LAYOUT_VERSION - 1);
  const before = pins(f.pinPath);
  refused(f.pinPath, [
    new RegExp(`pt_config: layout version ${PT_LAYOUT_VERSION - 1} pinned, ${PT_LAYOUT_VERSION} in this object`),
    /porttrig detach/, /nothing was changed/,
  ]);
  assert.equal(pins(f.pinPath), before);
  writePinnedVersion(f.pinPath, PT_LAYOUT_VERSION);
  sessionStillThere(f.pinPath);
});

test('a pinned map with another value size is refused, naming the map and both sizes', { skip }, (t) => {
  const f = pinnedState(t);
  // pt_rule_names (64-byte values) pinned where pt_rules (16-byte values) belongs:
  // same type, key size and capacity, only the value size differs.
  const rules = join(f.pinPath, MAPS.rules);
  const names = ffi.objGet(join(f.pinPath, MAPS.ruleNames));
  unlinkSync(rules);
  assert.equal(ffi.objPin(names, rules), 0);
  ffi.closeFd(names);
  const before = pins(f.pinPath);
  refused(f.pinPath, [/pt_rules: value size 64 pinned, 16 in this object/, /another porttrig version/, /porttrig detach/]);
  assert.equal(pins(f.pinPath), before);
});

test('a pinned map of another type and key size is refused with every difference', { skip }, (t) => {
  const f = pinnedState(t);
  const sessions = join(f.pinPath, MAPS.sessions);
  const flows = ffi.objGet(join(f.pinPath, MAPS.flows));
  unlinkSync(sessions);
  assert.equal(ffi.objPin(flows, sessions), 0);
  ffi.closeFd(flows);
  refused(f.pinPath, [/pt_sessions: key size 16 pinned, 8 in this object; value size 40 pinned, 24 in this object; max_entries 128 pinned, 64/]);
});

test('other limits are refused with the limits the state was made with', { skip }, (t) => {
  const f = pinnedState(t);
  const before = pins(f.pinPath);
  refused(f.pinPath, [
    /pt_sessions: max_entries 64 pinned, 128 in this object/, /pt_flows: max_entries 128 pinned, 512 in this object/,
    /restore those limits/, /limits\.sessions: 64, limits\.flows: 64/,
  ], { sessions: 128, flows: 256 });
  assert.equal(pins(f.pinPath), before);
  sessionStillThere(f.pinPath);
});

test('incomplete pinned state is refused rather than completed', { skip }, (t) => {
  const f = pinnedState(t);
  unlinkSync(join(f.pinPath, MAPS.attach));
  unlinkSync(join(f.pinPath, MAPS.pktStats));
  const before = pins(f.pinPath);
  refused(f.pinPath, [/pt_pkt_stats, pt_attach: not pinned/]);
  assert.equal(pins(f.pinPath), before, 'nothing was pinned to fill the gap');
  assert.equal(existsSync(join(f.pinPath, MAPS.attach)), false);
});

test('a pin path that cannot be created is E_STATE naming the path, not a crash', (t) => {
  // Under a regular file mkdir fails (ENOTDIR), as it failed on a read-only
  // /sys/fs/bpf (a unit with ProtectKernelTunables=).
  const base = mkdtempSync(join(tmpdir(), 'pt-pinpath-'));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  writeFileSync(join(base, 'file'), '');
  const dir = join(base, 'file', 'pins');
  assert.throws(() => ensureBpffs(dir), (e: unknown) =>
    e instanceof PorttrigError && e.code === 'E_STATE' && e.message.includes(dir));
});

test('IPv6 (layout 7): the pt6_ maps are sized from limits like the IPv4 ones, pinned and adopted with their contents', { skip }, (t) => {
  const f = useDatapath(t, { limits: { sessions: 96, flows: 80 } });
  const m = f.dp.maps;
  assert.deepEqual([m.sessions6.raw.info.maxEntries, m.hostSessions6.raw.info.maxEntries, m.flows6.raw.info.maxEntries],
    [m.sessions.raw.info.maxEntries, m.hostSessions.raw.info.maxEntries, m.flows.raw.info.maxEntries]);
  assert.deepEqual([m.sessions6.raw.info.maxEntries, m.flows6.raw.info.maxEntries], [96, 160]);
  for (const name of [MAPS.sessions6, MAPS.hostSessions6, MAPS.flows6, MAPS.frags6, MAPS.lanNets6, MAPS.localAddrs6]) {
    assert.ok(existsSync(join(f.pinPath, name)), `${name} is pinned`);
  }
  m.sessions6.set({ rule: 1, host: '2001:db8:1::10', peer: '::' }, { opened_ns: 1n, last_seen_ns: 2n, host: '2001:db8:1::10', ifindex: 3 });
  m.lanNets6.set({ prefixlen: 64, addr: '2001:db8:1::' }, 64);
  f.dp.close();
  const dp = Datapath.load({ objectPath: BPF_OBJECT, pinPath: f.pinPath, limits: { sessions: 96, flows: 80 } });
  try {
    assert.equal(dp.adopted, true);
    assert.equal(dp.maps.sessions6.get({ rule: 1, host: '2001:db8:1::10', peer: '::' })?.host, '2001:db8:1::10');
    assert.deepEqual([...dp.maps.lanNets6.entries()], [[{ prefixlen: 64, addr: '2001:db8:1::' }, 64]]);
  } finally {
    dp.close();
  }
  refused(f.pinPath, [/pt6_sessions: max_entries 96 pinned, 64 in this object/, /pt6_flows: max_entries 160 pinned, 128 in this object/, /restore those limits/]);
});

test('pins of the IPv4-only layout 6 (no pt6_ maps) are refused with the layout version first and "porttrig detach"', { skip }, (t) => {
  const f = pinnedState(t);
  writePinnedVersion(f.pinPath, 6);
  for (const name of [MAPS.sessions6, MAPS.hostSessions6, MAPS.flows6, MAPS.frags6, MAPS.lanNets6, MAPS.localAddrs6]) unlinkSync(join(f.pinPath, name));
  const before = pins(f.pinPath);
  assert.throws(() => load(f.pinPath), (e: unknown) => {
    assert.ok(e instanceof PorttrigError, String(e));
    assert.equal(e.code, 'E_STATE');
    const lines = e.message.split('\n');
    assert.equal(lines[1], `  pt_config: layout version 6 pinned, ${PT_LAYOUT_VERSION} in this object`, 'the version comes first');
    assert.match(e.message, /pt6_sessions, pt6_host_sessions, pt6_flows, pt6_frags, pt6_lan_nets, pt6_local_addrs: not pinned/);
    assert.match(e.message, /another porttrig version .*run "porttrig detach" and start again/);
    return true;
  });
  assert.equal(pins(f.pinPath), before, 'nothing was pinned to fill the gap');
});

/**
 * A reference of our own to the program a loaded data path runs for `role`,
 * taken by id as TC holds an attached program: it outlives the object.
 */
function holdProgram(t: { after: (fn: () => void) => void }, dp: Datapath, role: 'lan' | 'wan'): number {
  const info = Buffer.alloc(256);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(info.length);
  assert.equal(ffi.objGetInfo(dp.programFd(role), info, len), 0);
  const fd = ffi.progGetFdById(info.readUInt32LE(4));  // struct bpf_prog_info.id
  assert.ok(fd >= 0);
  t.after(() => ffi.closeFd(fd));
  return fd;
}

/**
 * Run the held program `prog` on an IPv6 frame whose header is cut short:
 * the IPv6 program counts it malformed; a program whose tail call finds
 * nothing counts it passed. Returns which.
 */
function ipv6Path(pinPath: string, prog: number): 'ipv6 program' | 'no tail call' {
  const stats = (): bigint[] => {
    const fd = ffi.objGet(join(pinPath, MAPS.pktStats));
    const c = new PerCpuCounters(new RawMap({ name: MAPS.pktStats, fd, keySize: 4, valueSize: 8, maxEntries: PKT_STATS_ENTRIES, perCpu: true }));
    const v = ['malformed', 'pass'].map((x) => c.sum(pktStatsIndex(PT_F_IPV6, DIRECTIONS.indexOf('lan'), VERDICTS.indexOf(x as never))));
    ffi.closeFd(fd);
    return v;
  };
  {
    const frame = Buffer.alloc(14 + 40);
    frame.fill(2, 0, 12);
    frame.writeUInt16BE(0x86dd, 12);
    frame[14] = 0x60;
    frame.writeUInt16BE(200, 18);  // payload length 200, none there
    frame[20] = 6;
    frame[21] = 64;
    const [m0, p0] = stats();
    const r = ffi.progTestRun(prog, { data_in: frame, data_out: Buffer.alloc(frame.length + 256) });
    assert.equal(r.ret, 0);
    const [m1, p1] = stats();
    if (m1 === m0! + 1n && p1 === p0) return 'ipv6 program';
    assert.deepEqual([m1, p1], [m0, p0! + 1n], 'counted malformed (IPv6 program) or passed (no tail call)');
    return 'no tail call';
  }
}

test('the IPv6 tail calls (pt6_progs) outlive the daemon once pinned; a later object\'s pin replaces them; detach removes it', { skip }, (t) => {
  const f = useDatapath(t, { limits: LIMITS });
  const first = holdProgram(t, f.dp, 'lan');
  assert.equal(ipv6Path(f.pinPath, first), 'ipv6 program');
  // Without the pin the kernel empties the prog array with the object's last fd:
  // an attached program would pass IPv6 untouched while no daemon runs.
  const bare = load(f.pinPath);
  const bareId = holdProgram(t, bare, 'lan');
  bare.close();
  assert.equal(ipv6Path(f.pinPath, bareId), 'no tail call', 'the kernel clears an unpinned prog array (this test can fail)');

  f.dp.pinTailCalls();
  assert.ok(existsSync(join(f.pinPath, TAIL_CALL_MAPS[0])));
  f.dp.close();
  assert.equal(ipv6Path(f.pinPath, first), 'ipv6 program', 'pinned: the first object\'s programs keep their IPv6 path');

  const second = load(f.pinPath);
  t.after(() => second.close());
  const secondId = holdProgram(t, second, 'lan');
  second.pinTailCalls();
  assert.equal(existsSync(join(f.pinPath, `${TAIL_CALL_MAPS[0]}_new`)), false);
  second.close();
  assert.equal(ipv6Path(f.pinPath, secondId), 'ipv6 program', 'the new pin holds the new programs\' array');
  assert.equal(ipv6Path(f.pinPath, first), 'no tail call', 'the replaced array is released (its programs are detached by then)');

  const r = detachAll(f.pinPath);
  assert.ok(r.pinsRemoved >= Object.values(MAPS).length + 1);
  assert.equal(existsSync(join(f.pinPath, TAIL_CALL_MAPS[0])), false);
});
