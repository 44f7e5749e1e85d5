/**
 * Listing sessions and flows of tables of any size: filtered (rule, host,
 * peer, limit) and produced row by row as async generators that read the maps
 * in batches and hand the event loop back between batches, so a listing of a
 * million sessions neither stalls the control socket nor holds a million
 * objects (or one JSON string of them) in memory. The same decisions as
 * everywhere else: a session is listed while live (sessionExpired), a flow
 * counts for its session while flowFate() says live.
 */
import { isIPv4 } from 'node:net';
import {
  DIR_IN, FlowCodec, FlowKeyCodec, RULE_ENABLED, RULE_PEER_CONTACTED, SessionCodec, SessionKeyCodec,
  type PtRule, type PtSession,
} from '../bpf/abi.js';
import { readIpv4, writeIpv4 } from '../bpf/struct.js';
import { PorttrigError } from '../errors.js';
import { flowFate, partnerKey, sessionExpired } from './sweep.js';
import { flowView, type FlowView, type PorttrigState, type SessionView } from './state.js';

/** What a listing keeps: every given field must match; at most `limit` rows. */
export interface ListFilter { rule?: string; host?: string; peer?: string; limit?: number }

/** Entries read per batch between two turns of the event loop. */
const CHUNK = 4096;
/** Listings up to this many rows come sorted by rule and host; longer ones in table order. */
export const SORT_MAX_ROWS = 65536;
const TWO_32 = 2 ** 32;

const yieldLoop = (): Promise<void> => new Promise((r) => setImmediate(r));
const ipU32 = (b: Buffer, off: number): number => b.readUInt32BE(off);
function addrU32(a: string): number {
  const b = Buffer.alloc(4);
  writeIpv4(b, 0, a);
  return b.readUInt32BE(0);
}
const u32Addr = (n: number): string => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return readIpv4(b, 0);
};

interface Resolved { ruleId: number | null; host: number | null; peer: number | null; limit: number }

/** Check a filter: unknown rule E_NOT_FOUND, a host or peer that is not IPv4 or a bad limit E_USAGE. */
export function resolveFilter(state: PorttrigState, f: ListFilter): Resolved {
  let ruleId: number | null = null;
  if (f.rule !== undefined) {
    const id = state.ruleIds().get(f.rule);
    if (id === undefined) throw new PorttrigError('E_NOT_FOUND', `no rule named "${f.rule}"`, { rule: f.rule });
    ruleId = id;
  }
  for (const [field, v] of [['host', f.host], ['peer', f.peer]] as const) {
    if (v !== undefined && !isIPv4(v)) throw new PorttrigError('E_USAGE', `${field} "${v}" is not an IPv4 address`, { [field]: v });
  }
  const limit = f.limit ?? Infinity;
  if (!(limit === Infinity || (Number.isInteger(limit) && limit > 0))) {
    throw new PorttrigError('E_USAGE', `limit must be a positive integer, not ${String(f.limit)}`, { limit: f.limit });
  }
  return { ruleId, host: f.host === undefined ? null : addrU32(f.host), peer: f.peer === undefined ? null : addrU32(f.peer), limit };
}

/** A growable column of numbers. */
class Column {
  a = new Float64Array(1024);
  push(i: number, v: number): void {
    if (i >= this.a.length) { const b = new Float64Array(this.a.length * 2); b.set(this.a); this.a = b; }
    this.a[i] = v;
  }
}

/**
 * Live sessions matching `filter`, with their flow counts: two batched walks
 * (sessions, then flows); the matching sessions are held in typed columns
 * (40 bytes each) plus one index entry, never as objects.
 */
export async function* listSessions(state: PorttrigState, filter: ListFilter, now: bigint, wallNow = Date.now()): AsyncGenerator<SessionView> {
  const want = resolveFilter(state, filter);
  const names = state.ruleNames();
  const rules = state.ruleSettings();
  const sk = SessionKeyCodec.size;
  const cols = { rule: new Column(), peer: new Column(), host: new Column(), opened: new Column(), last: new Column(), flows: new Column() };
  const index = new Map<number, number>();  // rule * 2^32 + peer -> row
  let n = 0;
  const sraw = state.maps.sessions.raw;
  walk: for (const { keys, values, count } of sraw.batches({ chunk: CHUNK })) {
    for (let i = 0; i < count && n < want.limit; i++) {
      const rule = keys.readUInt32LE(i * sk);
      const peer = ipU32(keys, i * sk + 4);
      const v = SessionCodec.parse(values, i * sraw.valueBytes);
      const r = rules.get(rule);
      if (!r || !(r.flags & RULE_ENABLED) || sessionExpired(v, r, now)) continue;
      if ((want.ruleId !== null && rule !== want.ruleId) || (want.peer !== null && peer !== want.peer) ||
          (want.host !== null && addrU32(v.host) !== want.host)) continue;
      cols.rule.push(n, rule); cols.peer.push(n, peer); cols.host.push(n, addrU32(v.host));
      cols.opened.push(n, Number(v.opened_ns)); cols.last.push(n, Number(v.last_seen_ns)); cols.flows.push(n, 0);
      index.set(rule * TWO_32 + peer, n);
      n++;
    }
    if (n >= want.limit) break walk;
    await yieldLoop();
  }
  if (n > 0) {
    const fraw = state.maps.flows.raw;
    const fk = fraw.info.keySize;
    for (const { keys, values, count } of fraw.batches({ chunk: CHUNK })) {
      for (let i = 0; i < count; i++) {
        if (keys[i * fk + 13] !== DIR_IN) continue;
        const vo = i * fraw.valueBytes;
        const row = index.get(values.readUInt16LE(vo + 22) * TWO_32 + ipU32(values, vo + 24));
        if (row === undefined || cols.host.a[row] !== ipU32(values, vo + 16)) continue;
        const k = FlowKeyCodec.parse(keys, i * fk);
        const v = FlowCodec.parse(values, vo);
        const partner = state.maps.flows.get(partnerKey(k, v));
        const session: PtSession = { opened_ns: 0n, last_seen_ns: BigInt(cols.last.a[row]!), host: u32Addr(cols.host.a[row]!), ifindex: 0 };
        if (partner && flowFate(k, v, partner, rules.get(v.rule), session, now) === 'live') cols.flows.a[row]!++;
      }
      await yieldLoop();
    }
  }
  const order = Array.from({ length: n }, (_, i) => i);
  if (n <= SORT_MAX_ROWS) {
    const name = (i: number): string => names.get(cols.rule.a[i]!) ?? '';
    order.sort((a, b) => name(a).localeCompare(name(b)) || cols.host.a[a]! - cols.host.a[b]!);
  }
  const wall = (ns: number): string => new Date(wallNow - (Number(now) - ns) / 1e6).toISOString();
  for (const i of order) {
    const rule = cols.rule.a[i]!;
    const r = rules.get(rule) as PtRule;
    const left = Number(r.idle_timeout_ns) - (Number(now) - cols.last.a[i]!);
    yield {
      rule: names.get(rule) ?? `#${rule}`,
      host: u32Addr(cols.host.a[i]!),
      peer: r.flags & RULE_PEER_CONTACTED ? u32Addr(cols.peer.a[i]!) : null,
      opened_at: wall(cols.opened.a[i]!),
      last_seen: wall(cols.last.a[i]!),
      expires_in_s: Math.max(0, Math.round(left / 1e6) / 1000),
      flows: cols.flows.a[i]!,
    };
  }
}

/**
 * Accepted flows matching `filter` (rule; host: the LAN host; peer: the
 * remote), one row per flow from its inbound entry, in table order, read in
 * batches; the other direction's entry is looked up per listed flow.
 */
export async function* listFlows(state: PorttrigState, filter: ListFilter, now: bigint): AsyncGenerator<FlowView> {
  const want = resolveFilter(state, filter);
  const names = state.ruleNames();
  const fraw = state.maps.flows.raw;
  const fk = fraw.info.keySize;
  let n = 0;
  for (const { keys, values, count } of fraw.batches({ chunk: CHUNK })) {
    for (let i = 0; i < count && n < want.limit; i++) {
      if (keys[i * fk + 13] !== DIR_IN) continue;
      const vo = i * fraw.valueBytes;
      if ((want.ruleId !== null && values.readUInt16LE(vo + 22) !== want.ruleId) ||
          (want.host !== null && ipU32(values, vo + 16) !== want.host) ||
          (want.peer !== null && ipU32(keys, i * fk) !== want.peer)) continue;
      const k = FlowKeyCodec.parse(keys, i * fk);
      const v = FlowCodec.parse(values, vo);
      const partner = state.maps.flows.get(partnerKey(k, v));
      n++;
      yield flowView(k, v, partner, names, now);
    }
    if (n >= want.limit) return;
    await yieldLoop();
  }
}
