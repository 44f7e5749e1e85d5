/**
 * The daemon's sweep against the data path: the sweep judges a snapshot of
 * pt_flows, and deletes what it judged over some time later (a whole-map walk
 * and a batch delete). A flow that the data path ended meanwhile, and that a
 * new connection re-opened on the same 5-tuple, must not be taken with it:
 * the sweep must remove only the entries it judged (same creation stamp), as
 * it already does for sessions (take, compare, put back).
 *
 * Simulated time (test clock); packets go through BPF_PROG_TEST_RUN only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ffi from '../../src/ffi/libbpf.js';
import { compileRules } from '../../src/rules/compile.js';
import { PorttrigState } from '../../src/core/state.js';
import { CLOCK_BIAS_NS, NSEC_PER_SEC, type PtFlowKey } from '../../src/bpf/abi.js';
import type { Rule } from '../../src/config/types.js';
import { bpfSkipReason, useDatapath, type TestDatapath } from '../helpers/bpffs.js';
import { buildPacket, type PacketSpec } from '../helpers/packet.js';

const SKIP = bpfSkipReason();
const TC_ACT_REDIRECT = 7;
const WAN = '203.0.113.1';
const GW_LAN = '10.0.0.1';
const HOST_A = '10.0.0.2';
const SERVER = '198.51.100.10';
const REMOTE = '198.51.100.7';

const GAME: Rule = {
  name: 'game', enabled: true, trigger: { protos: ['udp'], ranges: [{ from: 27015, to: 27015 }] },
  open: [{ protos: ['udp'], from: 27000, to: 27009, lanFrom: 27000 }],
  idleTimeoutMs: 600_000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false,
};

const udp = (src: string, sport: number, dst: string, dport: number): PacketSpec =>
  ({ ip: { src, dst, ttl: 64, id: 0x2222 }, l4: { udp: { sport, dport, payload: Buffer.from('x') } } });

function run(f: TestDatapath, prog: 'lan' | 'wan', p: PacketSpec): number {
  const input = buildPacket(p);
  const out = Buffer.alloc(input.length + 256);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: out });
  assert.equal(r.ret, 0, `BPF_PROG_TEST_RUN of ${prog}: ${r.ret}`);
  return r.retval >>> 0;
}

test('a sweep does not remove a flow that a new connection opened on the same 5-tuple while the sweep ran', SKIP ? { skip: SKIP } : {}, (t) => {
  const f = useDatapath(t, { testClock: true });
  f.state.applyRules(compileRules([GAME]));
  f.state.setRuntime(WAN, 7, 8);
  f.state.setLocalAddrs([GW_LAN, WAN]);
  f.state.setLanNets(['10.0.0.0/24']);
  const t0 = CLOCK_BIAS_NS + 3600n * NSEC_PER_SEC;
  let now = t0;
  const at = (s: number): void => { now = t0 + BigInt(s) * NSEC_PER_SEC; f.dp.setTestClock(now); };
  const state = new PorttrigState(f.dp.maps, () => now);

  at(0);
  run(f, 'lan', udp(HOST_A, 50000, SERVER, 27015));                    // A opens the session
  at(1);
  assert.equal(run(f, 'wan', udp(REMOTE, 40001, WAN, 27005)), TC_ACT_REDIRECT, 'a first datagram opens a flow');
  at(300);
  run(f, 'lan', udp(HOST_A, 50000, SERVER, 27015));                    // A keeps its session
  at(320);                                                             // the flow is 319 s idle: over (UDP 300 s)

  // While the sweep runs (after its snapshot, before its delete), the remote
  // sends again: the data path ends the dead flow and opens a new one.
  // (Hooked on both ways a sweep may remove flows: a batch, or one by one.)
  const flows = f.dp.maps.flows;
  const deleteMany = flows.deleteMany.bind(flows);
  const take = flows.take.bind(flows);
  let reopened = false;
  const remoteSendsAgain = (): void => {
    if (reopened) return;
    reopened = true;
    assert.equal(run(f, 'wan', udp(REMOTE, 40001, WAN, 27005)), TC_ACT_REDIRECT, 'the new datagram opens a new flow');
  };
  flows.deleteMany = (keys: readonly PtFlowKey[]): number => { remoteSendsAgain(); return deleteMany(keys); };
  flows.take = (k: PtFlowKey) => { remoteSendsAgain(); return take(k); };
  state.sweep();
  assert.ok(reopened, 'the sweep judged the dead flow over (else this test shows nothing)');

  const left = [...f.dp.maps.flows.entries()];
  assert.equal(left.length, 2,
    `the flow opened during the sweep must survive it (both entries, created at ${now}); pt_flows holds ${left.length}: ${JSON.stringify(left.map(([k, v]) => [k.dir, k.saddr, k.sport, String(v.created_ns)]))}`);
  // And the LAN host's reply on it still leaves through the WAN address and port.
  assert.equal(run(f, 'lan', udp(HOST_A, 27005, REMOTE, 40001)), TC_ACT_REDIRECT, 'the reply on the new flow is translated');
});
