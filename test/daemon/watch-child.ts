/**
 * Run inside a test namespace: watch IPv4 and IPv6 address events with
 * watchAddresses() and print one JSON line per callback, with the
 * CLOCK_MONOTONIC time (shared with the parent test). "close" on stdin closes
 * the watch; the process must then exit by itself.
 */
import { createInterface } from 'node:readline';
import { watchAddresses } from '../../src/daemon/netinfo.js';

const say = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
const w = watchAddresses(() => say({ event: 'change', at_ns: String(process.hrtime.bigint()) }));
if ('error' in w) {
  say({ event: 'error', errno: w.error });
  process.exit(1);
}
say({ event: 'ready' });
const rl = createInterface({ input: process.stdin });
rl.on('line', (l) => {
  if (l === 'close') { w.close(); rl.close(); process.stdin.destroy(); say({ event: 'closed' }); }
});
