/**
 * Helpers shared by the restart, reload and detach end-to-end tests: the
 * counter stream peer, tc inspection in the gateway namespace, and CLI JSON.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Topology, type Proc, sleep } from './topology.js';

const STREAM_PEER = fileURLToPath(new URL('./restart-peer.js', import.meta.url));

/** Start the counter stream peer in `ns`. */
export function streamPeer(topo: Topology, ns: string, ...args: (string | number)[]): Proc {
  return topo.spawn(ns, process.execPath, [STREAM_PEER, ...args.map(String)]);
}

/** The latest progress report of a stream peer ({rx: 0, tx: 0} before the first). */
export function progress(p: Proc): { rx: number; tx: number } {
  const last = [...p.events].reverse().find((e) => e.event === 'progress');
  return { rx: Number(last?.rx ?? 0), tx: Number(last?.tx ?? 0) };
}

/** Fail if a stream peer saw a wrong byte or lost its connection. */
export function assertStreamIntact(p: Proc, who: string): void {
  const bad = p.events.find((e) => e.event === 'mismatch' || e.event === 'closed' || e.event === 'error');
  assert.equal(bad, undefined, `${who}: stream broken: ${JSON.stringify(bad)}`);
}

/** Wait until both stream ends have received at least `more` further lines. */
export async function streamAdvances(ends: [Proc, string][], more: number, ms = 8000): Promise<void> {
  const start = ends.map(([p]) => progress(p).rx);
  const deadline = Date.now() + ms;
  for (;;) {
    if (ends.every(([p], i) => progress(p).rx >= start[i]! + more)) return;
    for (const [p, who] of ends) assertStreamIntact(p, who);
    if (Date.now() > deadline) {
      assert.fail(`stream stalled: ${ends.map(([p, who], i) => `${who} rx ${start[i]} -> ${progress(p).rx}`).join(', ')}`);
    }
    await sleep(50);
  }
}

/** Run the CLI with --json and parse what it printed; fails on a non-zero exit. */
export async function cliJson<T>(topo: Topology, ...args: string[]): Promise<T> {
  const r = await topo.cli(...args, '--json');
  assert.equal(r.status, 0, `porttrig ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** `tc filter show dev IF ingress` in the gateway namespace. */
export function tcFilters(topo: Topology, dev: string): string {
  return topo.exec(topo.ns.gw, 'tc', 'filter', 'show', 'dev', dev, 'ingress');
}

/** Whether `dev` in the gateway namespace has a clsact qdisc. */
export function hasClsact(topo: Topology, dev: string): boolean {
  return /qdisc clsact/.test(topo.exec(topo.ns.gw, 'tc', 'qdisc', 'show', 'dev', dev));
}

/** The id of porttrig's program on `dev` ingress (handle 0x7074), or 0. */
export function porttrigProgId(topo: Topology, dev: string): number {
  const m = /handle 0x7074 .*? id (\d+)/.exec(tcFilters(topo, dev).replace(/\n/g, ' '));
  return m ? Number(m[1]) : 0;
}

/** Wait for a process to exit; its exit code. */
export async function exitCode(p: Proc, ms = 10000): Promise<number | null> {
  return Promise.race([p.exited(), sleep(ms).then(() => { throw new Error(`no exit within ${ms} ms: ${p.stderr}`); })]);
}
