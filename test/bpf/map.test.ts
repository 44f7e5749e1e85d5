/**
 * RawMap.batches(): chunked BPF_MAP_LOOKUP_BATCH reads of an array map from a
 * start index with a limit, and of a hash map in small chunks; entries() on
 * top of it sees every entry once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RULE_COUNTERS } from '../../src/bpf/abi.js';
import { bpfSkipReason, useDatapath } from '../helpers/bpffs.js';

const SKIP = bpfSkipReason();
const opts = SKIP ? { skip: SKIP } : {};

test('batches() of an array map: after an index, up to a limit, in chunks', opts, (t) => {
  const f = useDatapath(t);
  const raw = f.dp.maps.ruleStats.raw;
  for (let i = 0; i < 40; i++) f.dp.maps.ruleStats.add(i, BigInt(i));
  const after = Buffer.alloc(4);
  after.writeUInt32LE(9);
  const seen: number[] = [];
  const values: bigint[] = [];
  let chunks = 0;
  for (const { keys, values: v, count } of raw.batches({ after, limit: 2 * RULE_COUNTERS.length, chunk: 5 })) {
    chunks++;
    for (let i = 0; i < count; i++) {
      seen.push(keys.readUInt32LE(i * 4));
      values.push(v.readBigUInt64LE(i * raw.valueBytes));  // CPU 0's slot, where add() writes
    }
  }
  assert.deepEqual(seen, Array.from({ length: 16 }, (_, i) => 10 + i));
  assert.deepEqual(values, seen.map(BigInt));
  assert.equal(chunks, 4, '16 entries in chunks of 5');
});

test('batches() and entries() of a hash map see every entry once', opts, (t) => {
  const f = useDatapath(t, { limits: { sessions: 256, flows: 64 } });
  const hosts = Array.from({ length: 100 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
  for (const [i, h] of hosts.entries()) f.dp.maps.hostSessions.set(h, { sessions: i + 1, recheck_ns: BigInt(i) });
  let n = 0;
  for (const { count } of f.dp.maps.hostSessions.raw.batches({ chunk: 7 })) n += count;
  assert.equal(n, hosts.length);
  const got = new Map(f.dp.maps.hostSessions.entries());
  assert.deepEqual([...got.keys()].sort(), [...hosts].sort());
  for (const [i, h] of hosts.entries()) assert.deepEqual(got.get(h), { sessions: i + 1, recheck_ns: BigInt(i) });
});
