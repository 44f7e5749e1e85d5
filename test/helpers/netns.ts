/**
 * A network namespace of a test's own, entered by node's main thread with
 * setns(2) for the test's duration: BPF_PROG_TEST_RUN runs a TC program on
 * an skb whose device is the caller's namespace's loopback, so the helpers
 * that look devices, routes and neighbours up (bpf_check_mtu(),
 * bpf_fib_lookup()) see this namespace. Its name is unique per process and
 * call; the thread goes back home and the namespace is deleted in t.after,
 * so also when the test fails.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import * as ffi from '../../src/ffi/libbpf.js';

/**
 * Create a namespace named `prefix` + a unique suffix, run `setup` in it
 * (each entry the arguments of `ip -n NAME ...`, or of `ip netns exec NAME
 * ...` when it starts with 'exec'), enter it, and return its name.
 */
export function enterTestNetns(t: { after: (fn: () => void) => void }, prefix: string, setup: string[][]): string {
  const name = `${prefix}${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
  const ip = (...a: string[]): string => execFileSync('ip', a, { encoding: 'utf8' });
  ip('netns', 'add', name);
  const home = openSync('/proc/self/ns/net', 'r');
  let target = -1;
  t.after(() => {
    assert.equal(ffi.setNetns(home), 0, `setns back: errno ${ffi.lastErrno()}`);
    closeSync(home);
    if (target >= 0) closeSync(target);
    ip('netns', 'del', name);
  });
  for (const cmd of setup) {
    if (cmd[0] === 'exec') ip('netns', 'exec', name, ...cmd.slice(1));
    else ip('-n', name, ...cmd);
  }
  target = openSync(`/run/netns/${name}`, 'r');
  assert.equal(ffi.setNetns(target), 0, `setns into ${name}: errno ${ffi.lastErrno()}`);
  return name;
}
