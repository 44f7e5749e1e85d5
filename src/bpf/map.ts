/**
 * BPF maps on Buffers (RawMap) and through codecs (TypedMap). Sizes are checked
 * before every call; failures become BpfError naming the map and operation;
 * ENOENT on lookup/delete is "absent", not an error.
 */
import * as ffi from '../ffi/libbpf.js';
import { BpfError } from '../errors.js';
import type { Codec } from './struct.js';

const ENOENT = 2;
const EINVAL = 22;
/** Entries per BPF_MAP_LOOKUP_BATCH call unless a caller asks otherwise. */
const DEFAULT_BATCH = 4096;

/** Static facts about a map, read from the object or the kernel. */
export interface MapInfo { name: string; fd: number; keySize: number; valueSize: number; maxEntries: number; perCpu: boolean }

export class RawMap {
  /** Bytes of one value as user space sees it (all CPUs for per-CPU maps). */
  readonly valueBytes: number;
  readonly ncpu: number;

  constructor(readonly info: MapInfo) {
    this.ncpu = info.perCpu ? ffi.numPossibleCpus() : 1;
    this.valueBytes = info.perCpu ? Math.ceil(info.valueSize / 8) * 8 * this.ncpu : info.valueSize;
  }

  get name(): string { return this.info.name; }
  get fd(): number { return this.info.fd; }

  private check(what: string, buf: Buffer, size: number): void {
    if (buf.length !== size) throw new BpfError(`${this.name}: ${what}`, EINVAL, `buffer of ${buf.length} bytes, map wants ${size}`);
  }

  /** The value for `key`, or undefined when there is none. */
  lookup(key: Buffer): Buffer | undefined {
    this.check('lookup key', key, this.info.keySize);
    const value = Buffer.alloc(this.valueBytes);
    const r = ffi.mapLookup(this.fd, key, value);
    if (r === -ENOENT) return undefined;
    if (r < 0) throw new BpfError(`${this.name}: lookup`, -r);
    return value;
  }

  /** Insert or replace (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST). Atomic per entry. */
  update(key: Buffer, value: Buffer, flags = ffi.BPF_ANY): void {
    this.check('update key', key, this.info.keySize);
    this.check('update value', value, this.valueBytes);
    const r = ffi.mapUpdate(this.fd, key, value, flags);
    if (r < 0) throw new BpfError(`${this.name}: update`, -r);
  }

  /** Delete `key`; false when it was not there. */
  delete(key: Buffer): boolean {
    this.check('delete key', key, this.info.keySize);
    const r = ffi.mapDelete(this.fd, key);
    if (r === -ENOENT) return false;
    if (r < 0) throw new BpfError(`${this.name}: delete`, -r);
    return true;
  }

  /** Atomically remove `key` and return what it held (hash maps, kernel >= 5.14). */
  lookupAndDelete(key: Buffer): Buffer | undefined {
    this.check('lookup_and_delete key', key, this.info.keySize);
    const value = Buffer.alloc(this.valueBytes);
    const r = ffi.mapLookupAndDelete(this.fd, key, value);
    if (r === -ENOENT) return undefined;
    if (r < 0) throw new BpfError(`${this.name}: lookup_and_delete`, -r);
    return value;
  }

  /**
   * Entries in chunks, one BPF_MAP_LOOKUP_BATCH each, without a copy per
   * entry: each chunk's `keys` and `values` are packed (keySize and
   * valueBytes apart) and reused by the next chunk. For array maps, `after`
   * (a u32 index) starts the walk at the next index; `limit` stops it after
   * that many entries. Not a snapshot: entries changed during the walk may or may
   * not be seen.
   */
  *batches(opts: { chunk?: number; after?: Buffer; limit?: number } = {}): Generator<{ keys: Buffer; values: Buffer; count: number }> {
    const limit = opts.limit ?? Infinity;
    const n = Math.max(1, Math.min(opts.chunk ?? DEFAULT_BATCH, this.info.maxEntries, limit));
    const keys = Buffer.alloc(n * this.info.keySize);
    const values = Buffer.alloc(n * this.valueBytes);
    // The kernel's batch token: the last key of a chunk (hash maps: a bucket
    // index); at least 8 bytes for either.
    const tokenSize = Math.max(8, this.info.keySize);
    let inBatch: Buffer | null = null;
    if (opts.after) {
      this.check('batch start key', opts.after, this.info.keySize);
      inBatch = Buffer.alloc(tokenSize);
      opts.after.copy(inBatch);
    }
    let outBatch = Buffer.alloc(tokenSize);
    const count = Buffer.alloc(4);
    for (let seen = 0; seen < limit;) {
      count.writeUInt32LE(Math.min(n, limit - seen));
      const r = ffi.mapLookupBatch(this.fd, inBatch, outBatch, keys, values, count);
      if (r < 0 && r !== -ENOENT) throw new BpfError(`${this.name}: lookup_batch`, -r);
      const got = count.readUInt32LE();
      seen += got;
      if (got > 0) yield { keys, values, count: got };
      if (r === -ENOENT) return;
      inBatch = outBatch;
      outBatch = Buffer.alloc(tokenSize);
    }
  }

  /** Every entry, each key and value a copy, read in batches of `chunk`. */
  *entries(chunk = DEFAULT_BATCH): Generator<[Buffer, Buffer]> {
    const { keySize } = this.info;
    for (const { keys, values, count } of this.batches({ chunk })) {
      for (let i = 0; i < count; i++) {
        yield [
          Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)),
          Buffer.from(values.subarray(i * this.valueBytes, (i + 1) * this.valueBytes)),
        ];
      }
    }
  }

  /** Write many entries with one BPF_MAP_UPDATE_BATCH; keys/values are packed. */
  updateBatch(keys: Buffer, values: Buffer): void {
    const n = keys.length / this.info.keySize;
    if (!Number.isInteger(n) || values.length !== n * this.valueBytes) {
      throw new BpfError(`${this.name}: update_batch`, EINVAL, `${keys.length} key bytes and ${values.length} value bytes do not pair up`);
    }
    if (n === 0) return;
    const count = Buffer.alloc(4);
    count.writeUInt32LE(n);
    const r = ffi.mapUpdateBatch(this.fd, keys, values, count);
    if (r < 0) throw new BpfError(`${this.name}: update_batch`, -r, `${count.readUInt32LE()} of ${n} written`);
  }

  /** Delete many keys with one BPF_MAP_DELETE_BATCH; returns how many went. */
  deleteBatch(keys: Buffer): number {
    const n = keys.length / this.info.keySize;
    if (n === 0) return 0;
    const count = Buffer.alloc(4);
    count.writeUInt32LE(n);
    const r = ffi.mapDeleteBatch(this.fd, keys, count);
    if (r < 0 && r !== -ENOENT) throw new BpfError(`${this.name}: delete_batch`, -r);
    return count.readUInt32LE();
  }
}

/** A map through codecs for its key and value. */
export class TypedMap<K, V> {
  constructor(readonly raw: RawMap, readonly key: Codec<K>, readonly value: Codec<V>) {
    if (key.size !== raw.info.keySize) throw new BpfError(`${raw.name}: key codec`, EINVAL, `codec ${key.size} bytes, map ${raw.info.keySize}`);
    if (!raw.info.perCpu && value.size !== raw.info.valueSize) {
      throw new BpfError(`${raw.name}: value codec`, EINVAL, `codec ${value.size} bytes, map ${raw.info.valueSize}`);
    }
  }

  get(k: K): V | undefined {
    const v = this.raw.lookup(this.key.format(k));
    return v === undefined ? undefined : this.value.parse(v);
  }

  set(k: K, v: V, flags = ffi.BPF_ANY): void {
    this.raw.update(this.key.format(k), this.value.format(v), flags);
  }

  delete(k: K): boolean {
    return this.raw.delete(this.key.format(k));
  }

  /** Remove `k` atomically, returning what it held. */
  take(k: K): V | undefined {
    const v = this.raw.lookupAndDelete(this.key.format(k));
    return v === undefined ? undefined : this.value.parse(v);
  }

  *entries(): Generator<[K, V]> {
    for (const [k, v] of this.raw.entries()) yield [this.key.parse(k), this.value.parse(v)];
  }

  /** Write many entries in one syscall. */
  setMany(entries: readonly (readonly [K, V])[]): void {
    const keys = Buffer.alloc(entries.length * this.key.size);
    const values = Buffer.alloc(entries.length * this.value.size);
    entries.forEach(([k, v], i) => {
      this.key.format(k, keys, i * this.key.size);
      this.value.format(v, values, i * this.value.size);
    });
    this.raw.updateBatch(keys, values);
  }

  /** Delete many keys in one syscall; returns how many were deleted. */
  deleteMany(keys: readonly K[]): number {
    const buf = Buffer.alloc(keys.length * this.key.size);
    keys.forEach((k, i) => this.key.format(k, buf, i * this.key.size));
    return this.raw.deleteBatch(buf);
  }
}

/** Per-CPU u64 counters: sums over all CPUs. */
export class PerCpuCounters {
  constructor(readonly raw: RawMap) {}

  /** Sum of counter `index` over all CPUs. */
  sum(index: number): bigint {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = this.raw.lookup(key);
    if (!v) return 0n;
    let s = 0n;
    for (let c = 0; c < this.raw.ncpu; c++) s += v.readBigUInt64LE(c * 8);
    return s;
  }

  /** All counters summed over CPUs, index by index, in one batch read. */
  sumAll(): bigint[] {
    const out = new Array<bigint>(this.raw.info.maxEntries).fill(0n);
    for (const [k, v] of this.raw.entries()) {
      let s = 0n;
      for (let c = 0; c < this.raw.ncpu; c++) s += v.readBigUInt64LE(c * 8);
      out[k.readUInt32LE()] = s;
    }
    return out;
  }

  /** Set counters `indices` to 0 on every CPU, in one batch update. */
  zero(indices: readonly number[]): void {
    if (indices.length === 0) return;
    const keys = Buffer.alloc(4 * indices.length);
    indices.forEach((idx, i) => keys.writeUInt32LE(idx, 4 * i));
    this.raw.updateBatch(keys, Buffer.alloc(this.raw.valueBytes * indices.length));
  }

  /** Add `delta` to counter `index` (on the first CPU's slot). */
  add(index: number, delta: bigint): void {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const v = this.raw.lookup(key) ?? Buffer.alloc(this.raw.valueBytes);
    v.writeBigUInt64LE(v.readBigUInt64LE(0) + delta, 0);
    this.raw.update(key, v);
  }
}
