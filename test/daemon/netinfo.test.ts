/**
 * watchAddresses(): rtnetlink address events reach the callback at once, and
 * close() lets the process exit. Runs the watcher in a network namespace of
 * its own (created and always deleted here), where the test adds addresses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { allIpv6, ipv6Of, lanPrefixes6, networkCidr } from '../../src/daemon/netinfo.js';

const root = process.getuid?.() === 0;
const CHILD = fileURLToPath(new URL('./watch-child.js', import.meta.url));
/** No event may come while nothing changes, for this long. */
const QUIET_MS = 700;
/** Generous bound for one event on a loaded machine (measured: milliseconds). */
const EVENT_MS = 3000;
/** After close(), the watcher's pending poll ends within its 500 ms timeout. */
const EXIT_MS = 3000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('networkCidr gives the network of an address', () => {
  assert.equal(networkCidr('10.1.2.3/24'), '10.1.2.0/24');
  assert.equal(networkCidr('203.0.113.9/32'), '203.0.113.9/32');
  assert.equal(networkCidr('192.168.7.200/0'), '0.0.0.0/0');
});

/** A networkInterfaces() table as Node gives it, with the IPv6 entries SPEC 9 cares about. */
const TABLE = {
  lo: [
    { address: '127.0.0.1', netmask: '255.0.0.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: true, cidr: '127.0.0.1/8' },
    { address: '::1', netmask: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', family: 'IPv6', mac: '00:00:00:00:00:00', internal: true, cidr: '::1/128', scopeid: 0 },
  ],
  lan0: [
    { address: '192.168.1.1', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:01', internal: false, cidr: '192.168.1.1/24' },
    { address: '2001:DB8:1::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: '2001:DB8:1::1/64', scopeid: 0 },
    { address: '2001:db8:1::2', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: '2001:db8:1::2/64', scopeid: 0 },
    { address: 'fd00:1::1', netmask: 'ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: 'fd00:1::1/48', scopeid: 0 },
    { address: 'fe80::1', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:01', internal: false, cidr: 'fe80::1/64', scopeid: 3 },
  ],
  wan0: [
    { address: '203.0.113.1', netmask: '255.255.255.0', family: 'IPv4', mac: '02:00:00:00:00:02', internal: false, cidr: '203.0.113.1/24' },
    { address: '2001:db8:ffff::2', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:02', internal: false, cidr: '2001:db8:ffff::2/64', scopeid: 0 },
    { address: 'fe80::2', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '02:00:00:00:00:02', internal: false, cidr: 'fe80::2/64', scopeid: 4 },
  ],
} as const;
const table = TABLE as unknown as NodeJS.Dict<{ family: string; address: string; cidr: string }[]>;

test('IPv6 of an interface: every class, canonical text, the prefix of each', () => {
  assert.deepEqual(ipv6Of('lan0', table), [
    { address: '2001:db8:1::1', cidr: '2001:db8:1::/64', class: 'global' },
    { address: '2001:db8:1::2', cidr: '2001:db8:1::/64', class: 'global' },
    { address: 'fd00:1::1', cidr: 'fd00:1::/48', class: 'unique-local' },
    { address: 'fe80::1', cidr: 'fe80::/64', class: 'link-local' },
  ]);
  assert.deepEqual(ipv6Of('nosuch0', table), []);
});

test('LAN IPv6 prefixes: global and unique-local, each once, never link-local', () => {
  assert.deepEqual(lanPrefixes6('lan0', table), ['2001:db8:1::/64', 'fd00:1::/48']);
  assert.deepEqual(lanPrefixes6('lo', table), [], 'loopback is no LAN prefix');
});

test("the gateway's own IPv6 addresses: all interfaces, without link-local and loopback ones", () => {
  assert.deepEqual(allIpv6(table).sort(), ['2001:db8:1::1', '2001:db8:1::2', '2001:db8:ffff::2', 'fd00:1::1']);
});

test('address events reach the callback within milliseconds; close() lets the process exit', { skip: !root && 'needs root' }, async (t) => {
  const ns = `ptw${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
  execFileSync('ip', ['netns', 'add', ns]);
  t.after(() => { try { execFileSync('ip', ['netns', 'del', ns]); } catch { /* gone */ } });
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, CHILD], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  const events: Record<string, string>[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { events.push(JSON.parse(buf.slice(0, i)) as Record<string, string>); buf = buf.slice(i + 1); }
  });
  const waitEvent = async (name: string, count: number, ms: number): Promise<void> => {
    const deadline = Date.now() + ms;
    while (events.filter((e) => e.event === name).length < count) {
      assert.ok(Date.now() < deadline, `no "${name}" #${count} within ${ms} ms: ${JSON.stringify(events)}`);
      await sleep(5);
    }
  };
  await waitEvent('ready', 1, EVENT_MS);
  await sleep(QUIET_MS);
  assert.equal(events.filter((e) => e.event === 'change').length, 0, 'no event while nothing changed');

  const before = process.hrtime.bigint();
  execFileSync('ip', ['-n', ns, 'addr', 'add', '192.0.2.1/32', 'dev', 'lo']);
  const ipDone = process.hrtime.bigint();
  await waitEvent('change', 1, EVENT_MS);
  const at = BigInt(events.find((e) => e.event === 'change')!.at_ns!);
  t.diagnostic(`callback ${Number(at - before) / 1e6} ms after "ip addr add" started (the command itself took ${Number(ipDone - before) / 1e6} ms)`);

  execFileSync('ip', ['-n', ns, 'addr', 'del', '192.0.2.1/32', 'dev', 'lo']);
  await waitEvent('change', 2, EVENT_MS);

  // IPv6 addresses too (RTMGRP_IPV6_IFADDR): a LAN prefix coming and going.
  await sleep(QUIET_MS);  // late events of the IPv4 changes are in by now
  const n2 = events.filter((e) => e.event === 'change').length;
  execFileSync('ip', ['-n', ns, '-6', 'addr', 'add', '2001:db8:77::1/64', 'dev', 'lo', 'nodad']);
  await waitEvent('change', n2 + 1, EVENT_MS);
  const n3 = events.filter((e) => e.event === 'change').length;
  execFileSync('ip', ['-n', ns, '-6', 'addr', 'del', '2001:db8:77::1/64', 'dev', 'lo']);
  await waitEvent('change', n3 + 1, EVENT_MS);

  child.stdin.write('close\n');
  await waitEvent('closed', 1, EVENT_MS);
  const code = await Promise.race([
    new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c)))),
    sleep(EXIT_MS).then(() => 'still running'),
  ]);
  assert.equal(code, 0, 'the watcher let the process exit after close()');
});
