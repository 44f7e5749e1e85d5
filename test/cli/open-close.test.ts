/**
 * `porttrig open` and `porttrig close` through a daemon in a namespace
 * topology: a manual open makes an inbound connection work, a close stops it;
 * bad arguments and refusals exit 2 or 1 with one clear line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, GW_WAN, LAN_HOST, Topology } from '../e2e/topology.js';
import { LpmV6Codec, MAPS } from '../../src/bpf/abi.js';
import { RawMap } from '../../src/bpf/map.js';
import { IPV6, type Codec } from '../../src/bpf/struct.js';
import * as ffi from '../../src/ffi/libbpf.js';

const root = process.getuid?.() === 0;
const OTHER_LAN_HOST = '10.77.0.3';
const CONNECT_TIMEOUT_MS = 1500;

const RULES = `  - name: ident
    trigger: tcp/6667
    open: tcp/113
    idle_timeout: 5m
  - name: voip
    trigger: udp/5060
    open: tcp/5061
    peer: contacted
`;

test('open makes an inbound connection reach the LAN host; close stops new ones', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  await topo.startDaemon(topo.writeConfig(RULES));
  const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
  await ident.waitFor((e) => e.event === 'listening');

  const before = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hello', CONNECT_TIMEOUT_MS);
  assert.equal(before.ok, false, `forwarded before any open: ${JSON.stringify(before)}`);

  const open = await topo.cli('open', 'ident', LAN_HOST);
  assert.equal(open.status, 0, open.stderr);
  assert.equal(open.stdout, `opened ident for ${LAN_HOST}; closes after 300 s idle\n`);
  const sessions = JSON.parse((await topo.cli('sessions', '--json')).stdout) as Record<string, unknown>[];
  assert.deepEqual(sessions.map((s) => [s.rule, s.host, s.peer]), [['ident', LAN_HOST, null]]);

  const during = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'hello', 3000);
  assert.deepEqual([during.ok, during.reply], [true, 'echo:hello'], JSON.stringify(during));

  const again = await topo.cli('open', 'ident', LAN_HOST, '--json');
  assert.equal(again.status, 0);
  assert.equal((JSON.parse(again.stdout) as { action: string }).action, 'refreshed');

  const close = await topo.cli('close', 'ident', LAN_HOST);
  assert.equal(close.status, 0, close.stderr);
  assert.equal(close.stdout, `closed 1 session of ident for ${LAN_HOST}; 1 flow left to run out\n`);
  assert.deepEqual(JSON.parse((await topo.cli('sessions', '--json')).stdout), []);

  const after = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'late', CONNECT_TIMEOUT_MS);
  assert.equal(after.ok, false, `forwarded after close: ${JSON.stringify(after)}`);
});

test('open/close refusals: exit 2 for bad arguments, 1 for the state, one line each', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  await topo.startDaemon(topo.writeConfig(RULES));
  const cases: [string[], number, RegExp][] = [
    [['open', 'ident', 'lanpc'], 2, /^porttrig: host "lanpc" is not an IPv4 or IPv6 address\n$/],
    [['open', 'ident', '192.0.2.9'], 2, /^porttrig: host 192\.0\.2\.9 is not inside a LAN subnet \(LAN subnets: 10\.77\.0\.0\/24 on lan0\)\n$/],
    [['open', 'voip', LAN_HOST], 2, /^porttrig: rule "voip" has peer: contacted; say which remote peer may connect with --peer ADDR\n$/],
    [['open', 'ident', LAN_HOST, '--peer', '198.51.100.1'], 2, /peer: any; --peer applies/],
    [['open', 'nosuch', LAN_HOST], 1, /^porttrig: no rule named "nosuch" \(rules: ident, voip\)\n$/],
    [['close', 'ident', LAN_HOST], 1, /^porttrig: 10\.77\.0\.2 holds no open session of rule "ident"\n$/],
    [['open'], 2, /missing required argument 'rule'/],
  ];
  for (const [args, status, stderr] of cases) {
    const r = await topo.cli(...args);
    assert.equal(r.status, status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr, args.join(' '));
  }

  assert.equal((await topo.cli('open', 'ident', LAN_HOST)).status, 0);
  const conflict = await topo.cli('open', 'ident', OTHER_LAN_HOST, '--json');
  assert.equal(conflict.status, 1);
  const err = (JSON.parse(conflict.stderr) as { error: { code: string; details: { holder: string } } }).error;
  assert.deepEqual([err.code, err.details.holder], ['E_CONFLICT', LAN_HOST]);
  const forced = await topo.cli('open', 'ident', OTHER_LAN_HOST, '--force');
  assert.equal(forced.status, 0, forced.stderr);
  assert.match(forced.stdout, new RegExp(`^took over ident for ${OTHER_LAN_HOST} from ${LAN_HOST};`));

  const peer = await topo.cli('open', 'voip', LAN_HOST, '--peer', '198.51.100.1', '--json');
  assert.equal(peer.status, 0, peer.stderr);
  assert.equal((JSON.parse(peer.stdout) as { peer: string }).peer, '198.51.100.1');
  assert.equal((await topo.cli('close', 'voip', LAN_HOST)).status, 0);
});

test('IPv6 hosts (SPEC 9): open, list with family, filter, rules per family, close; the LAN prefix follows lan0', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  topo.exec(topo.ns.gw, 'ip', '-6', 'addr', 'add', '2001:db8:77::1/64', 'dev', 'lan0', 'nodad');
  topo.exec(topo.ns.gw, 'ip', '-6', 'addr', 'add', '2001:db8:ee::1/64', 'dev', 'wan0', 'nodad');
  const cfg = topo.writeConfig(RULES);
  // An IPv6 prefix routed behind the LAN (interfaces.lan_networks).
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('  lan: [lan0]\n', "  lan: [lan0]\n  lan_networks: ['2001:db8:99::/48']\n"));
  await topo.startDaemon(cfg);
  const H6 = '2001:db8:77::2';
  const H6B = '2001:db8:77::3';

  const status = await topo.json<{ lan_ipv6_prefixes: string[] }>('status');
  assert.deepEqual(status.lan_ipv6_prefixes, ['2001:db8:77::/64', '2001:db8:99::/48'], "lan0's prefix (not its link-local one) and lan_networks'");
  // What the data path got: pt6_lan_nets and pt6_local_addrs, read from the pins.
  const pinned = <K>(name: string, codec: Codec<K>): K[] => {
    const fd = ffi.objGet(join(topo.pinPath, name));
    assert.ok(fd >= 0, `open pinned ${name}`);
    try {
      return [...new RawMap({ name, fd, keySize: codec.size, valueSize: 1, maxEntries: 256, perCpu: false }).entries()].map(([k]) => codec.parse(k));
    } finally {
      ffi.closeFd(fd);
    }
  };
  assert.deepEqual(pinned(MAPS.lanNets6, LpmV6Codec).map((k) => `${k.addr}/${k.prefixlen}`).sort(), ['2001:db8:77::/64', '2001:db8:99::/48']);
  const own = pinned(MAPS.localAddrs6, IPV6).sort();
  assert.deepEqual(own, ['2001:db8:77::1', '2001:db8:ee::1'], 'the gateway\'s own IPv6 addresses of every interface, without link-local ones');

  const open = await topo.cli('open', 'ident', '2001:DB8:77:0::2');
  assert.equal(open.status, 0, open.stderr);
  assert.equal(open.stdout, `opened ident for ${H6}; closes after 300 s idle\n`);
  // Mode any: a second IPv6 host holds the same rule at once; an IPv4 host too (dual stack).
  assert.equal((await topo.cli('open', 'ident', H6B)).status, 0);
  assert.equal((await topo.cli('open', 'ident', LAN_HOST)).status, 0);
  const sessions = await topo.json<{ rule: string; family: string; host: string; peer: string | null }[]>('sessions');
  assert.deepEqual(sessions.map((s) => [s.rule, s.family, s.host, s.peer]),
    [['ident', 'ipv4', LAN_HOST, null], ['ident', 'ipv6', H6, null], ['ident', 'ipv6', H6B, null]]);
  assert.deepEqual((await topo.json<{ host: string }[]>('sessions', '--host', H6)).map((s) => s.host), [H6]);
  assert.deepEqual((await topo.json<{ family: string }[]>('sessions', '--family', 'ipv4')).map((s) => s.family), ['ipv4']);
  const table = await topo.cli('sessions', '--family', 'ipv6');
  assert.match(table.stdout, /^RULE +FAMILY +HOST +PEER/);
  assert.match(table.stdout, new RegExp(`\\nident +ipv6 +${H6.replace(/:/g, ':')} +- `));
  const mixed = await topo.cli('sessions', '--host', H6, '--peer', '198.51.100.1');
  assert.equal(mixed.status, 2);
  assert.match(mixed.stderr, /peer 198\.51\.100\.1 is an IPv4 address; the listing is of IPv6/);
  assert.equal((await topo.cli('sessions', '--family', 'ipv5')).status, 2);

  const rules = await topo.json<{ name: string; sessions_opened: number; by_family: Record<string, { sessions_opened: number }> }[]>('rules');
  const ident = rules.find((r) => r.name === 'ident')!;
  assert.deepEqual([ident.sessions_opened, ident.by_family.ipv4!.sessions_opened, ident.by_family.ipv6!.sessions_opened], [3, 1, 2]);
  assert.match((await topo.cli('rules')).stdout, /SESSIONS_OPENED \(V4\/V6\)[\s\S]*\nident .* 3 \(1\/2\)/);

  const peer = await topo.cli('open', 'voip', H6, '--peer', '2001:db8:ff::9', '--json');
  assert.equal(peer.status, 0, peer.stderr);
  assert.deepEqual(JSON.parse(peer.stdout), { rule: 'voip', family: 'ipv6', host: H6, peer: '2001:db8:ff::9', action: 'opened', previous_host: null, expires_in_s: 600 });
  const cases: [string[], number, RegExp][] = [
    [['open', 'ident', 'fe80::2'], 2, /^porttrig: host fe80::2 is a link-local IPv6 address; only global and unique-local LAN addresses hold sessions\n$/],
    [['open', 'ident', '2001:db8:98::2'], 2, /^porttrig: host 2001:db8:98::2 is not inside a LAN prefix \(LAN IPv6 prefixes: 2001:db8:77::\/64 on lan0, 2001:db8:99::\/48 on lan0\)\n$/],
    [['open', 'ident', '2001:db8:77::1'], 2, /gateway's own addresses/],
    [['open', 'voip', H6B, '--peer', '198.51.100.1'], 2, /is not an IPv6 address \(the host is IPv6\)/],
    [['open', 'voip', H6B, '--peer', '2001:db8:ff::9'], 1, /held by 2001:db8:77::2/],
  ];
  for (const [args, code, stderr] of cases) {
    const r = await topo.cli(...args);
    assert.equal(r.status, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr, args.join(' '));
  }

  const routed = await topo.cli('open', 'ident', '2001:db8:99:1::5', '--json');
  assert.equal(routed.status, 0, `a host of lan_networks: ${routed.stderr}`);
  assert.equal((await topo.cli('close', 'ident', '2001:db8:99:1::5')).status, 0);

  const close = await topo.cli('close', 'ident', H6);
  assert.equal(close.status, 0, close.stderr);
  assert.equal(close.stdout, `closed 1 session of ident for ${H6}; 0 flows left to run out\n`);
  assert.deepEqual((await topo.json<{ host: string }[]>('sessions', '--rule', 'ident')).map((s) => s.host), [LAN_HOST, H6B]);
  assert.equal((await topo.cli('close', 'ident', H6)).status, 1);

  // The prefix goes with lan0's address: a host in it is no longer a LAN host.
  topo.exec(topo.ns.gw, 'ip', '-6', 'addr', 'del', '2001:db8:77::1/64', 'dev', 'lan0');
  const deadline = Date.now() + 5000;
  while ((await topo.json<{ lan_ipv6_prefixes: string[] }>('status')).lan_ipv6_prefixes.length > 1) {
    assert.ok(Date.now() < deadline, 'the removed prefix is still listed after 5 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal((await topo.cli('open', 'ident', H6)).status, 2);
  assert.deepEqual(pinned(MAPS.lanNets6, LpmV6Codec).map((k) => `${k.addr}/${k.prefixlen}`), ['2001:db8:99::/48']);
  assert.deepEqual(pinned(MAPS.localAddrs6, IPV6), ['2001:db8:ee::1']);
});

test('open and close have --help naming their options and exit statuses', () => {
  for (const cmd of ['open', 'close']) {
    const r = spawnSync(process.execPath, [CLI, cmd, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, new RegExp(`Usage: porttrig ${cmd} \\[options\\] <rule> <host>`));
    assert.match(r.stdout, /--peer <addr>/);
    assert.match(r.stdout, /Exit status: 0 /);
  }
});
