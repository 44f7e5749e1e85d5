/**
 * watchAddresses(): rtnetlink address events reach the callback at once, and
 * close() lets the process exit. Runs the watcher in a network namespace of
 * its own (created and always deleted here), where the test adds addresses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { networkCidr } from '../../src/daemon/netinfo.js';

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

  child.stdin.write('close\n');
  await waitEvent('closed', 1, EVENT_MS);
  const code = await Promise.race([
    new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c)))),
    sleep(EXIT_MS).then(() => 'still running'),
  ]);
  assert.equal(code, 0, 'the watcher let the process exit after close()');
});
