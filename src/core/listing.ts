/**
 * Listing sessions and flows of tables of any size: filtered (rule, host,
 * peer, limit) and produced row by row as async generators that read the maps
 * in batches and hand the event loop back between batches, so a listing of a
 * million sessions neither stalls the control socket nor holds a million
 * objects (or one JSON string of them) in memory. The same decisions as
 * everywhere else: a session is listed while live (sessionExpired), a flow
 * counts for its session while flowFate() says live.
 */
import {
  DIR_IN, FlowCodec, FlowKeyCodec, Flow6Codec, Flow6KeyCodec, RULE_ENABLED, RULE_PEER_CONTACTED, SessionCodec, SessionKeyCodec,
  Session6Codec, Session6KeyCodec, type Family, type PtRule, type PtSession,
} from '../bpf/abi.js';
import { canonicalIpv6, readIpv4, writeIpv4 } from '../bpf/struct.js';
import { PorttrigError } from '../errors.js';
import { familyOf } from './addr.js';
import { flow6Host, flowFate, flowFate6, partnerKey, partnerKey6, session6Id, session6KeyOfFlow, sessionExpired } from './sweep.js';
import { flowView, flowView6, type FlowView, type PorttrigState, type SessionView } from './state.js';

/**
 * What a listing keeps: every given field must match; at most `limit` rows.
 * `host` and `peer` are addresses of either family (an IPv6 one in any text
 * form); either limits the listing to its family, as `family` does.
 */
export interface ListFilter { rule?: string; host?: string; peer?: string; family?: Family; limit?: number }

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

interface Resolved {
  ruleId: number | null;
  /** IPv4 filters as 32-bit values. */
  host: number | null; peer: number | null;
  /** IPv6 filters in canonical text. */
  host6: string | null; peer6: string | null;
  /** Which families are listed. */
  v4: boolean; v6: boolean;
  limit: number;
}

/**
 * Check a filter: unknown rule E_NOT_FOUND; a host or peer that is no
 * address, addresses or `family` that disagree on the family, or a bad limit
 * E_USAGE.
 */
export function resolveFilter(state: PorttrigState, f: ListFilter): Resolved {
  let ruleId: number | null = null;
  if (f.rule !== undefined) {
    const id = state.ruleIds().get(f.rule);
    if (id === undefined) throw new PorttrigError('E_NOT_FOUND', `no rule named "${f.rule}"`, { rule: f.rule });
    ruleId = id;
  }
  if (f.family !== undefined && f.family !== 'ipv4' && f.family !== 'ipv6') {
    throw new PorttrigError('E_USAGE', `family must be ipv4 or ipv6, not "${String(f.family)}"`, { family: f.family });
  }
  let family: Family | null = f.family ?? null;
  for (const [field, v] of [['host', f.host], ['peer', f.peer]] as const) {
    if (v === undefined) continue;
    const fam = familyOf(v);
    if (fam === null) throw new PorttrigError('E_USAGE', `${field} "${v}" is not an IPv4 or IPv6 address`, { [field]: v });
    if (family !== null && fam !== family) {
      throw new PorttrigError('E_USAGE', `${field} ${v} is an ${fam === 'ipv4' ? 'IPv4' : 'IPv6'} address; the listing is of ${family === 'ipv4' ? 'IPv4' : 'IPv6'}`, { [field]: v });
    }
    family = fam;
  }
  const limit = f.limit ?? Infinity;
  if (!(limit === Infinity || (Number.isInteger(limit) && limit > 0))) {
    throw new PorttrigError('E_USAGE', `limit must be a positive integer, not ${String(f.limit)}`, { limit: f.limit });
  }
  const v4 = family !== 'ipv6';
  const v6 = family !== 'ipv4';
  return {
    ruleId, limit, v4, v6,
    host: v4 && f.host !== undefined ? addrU32(f.host) : null,
    peer: v4 && f.peer !== undefined ? addrU32(f.peer) : null,
    host6: !v4 && f.host !== undefined ? canonicalIpv6(f.host) : null,
    peer6: !v4 && f.peer !== undefined ? canonicalIpv6(f.peer) : null,
  };
}

/** A growable column of numbers. */
class Column {
  a = new Float64Array(1024);
  push(i: number, v: number): void {
    if (i >= this.a.length) { const b = new Float64Array(this.a.length * 2); b.set(this.a); this.a = b; }
    this.a[i] = v;
  }
}

/** One IPv6 session row of a listing. */
interface Row6 { rule: number; host: string; hostKey: string; peer: string; opened: bigint; last: bigint; flows: number }

/**
 * Live sessions matching `filter`, with their flow counts: IPv4 then IPv6,
 * each two batched walks (sessions, then flows). The matching IPv4 sessions
 * are held in typed columns (40 bytes each) plus one index entry, never as
 * objects; IPv6 rows are small objects. Up to SORT_MAX_ROWS rows come sorted
 * by rule, family (IPv4 first) and host.
 */
export async function* listSessions(state: PorttrigState, filter: ListFilter, now: bigint, wallNow = Date.now()): AsyncGenerator<SessionView> {
  const want = resolveFilter(state, filter);
  const names = state.ruleNames();
  const rules = state.ruleSettings();
  const sk = SessionKeyCodec.size;
  const cols = { rule: new Column(), peer: new Column(), host: new Column(), opened: new Column(), last: new Column(), flows: new Column() };
  const index = new Map<number, number>();  // rule * 2^32 + peer -> row
  let n = 0;
  if (want.v4) {
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
  }
  const n4 = n;
  if (n4 > 0) {
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

  // IPv6 (pt6_sessions): the key is (rule, host, ::) in mode any, (rule, ::, peer) in mode contacted.
  const rows6: Row6[] = [];
  const index6 = new Map<string, number>();  // session6Id -> row
  if (want.v6 && n < want.limit) {
    const sraw = state.maps.sessions6.raw;
    const ks = sraw.info.keySize;
    walk6: for (const { keys, values, count } of sraw.batches({ chunk: CHUNK })) {
      for (let i = 0; i < count && n < want.limit; i++) {
        const k = Session6KeyCodec.parse(keys, i * ks);
        const r = rules.get(k.rule);
        if (!r || !(r.flags & RULE_ENABLED)) continue;
        if (want.ruleId !== null && k.rule !== want.ruleId) continue;
        const v = Session6Codec.parse(values, i * sraw.valueBytes);
        if (sessionExpired(v, r, now)) continue;
        if ((want.host6 !== null && v.host !== want.host6) || (want.peer6 !== null && k.peer !== want.peer6)) continue;
        const hostKey = values.toString('hex', i * sraw.valueBytes + 16, i * sraw.valueBytes + 32);
        index6.set(session6Id(k), rows6.length);
        rows6.push({ rule: k.rule, host: v.host, hostKey, peer: k.peer, opened: v.opened_ns, last: v.last_seen_ns, flows: 0 });
        n++;
      }
      if (n >= want.limit) break walk6;
      await yieldLoop();
    }
  }
  if (rows6.length > 0) {
    const fraw = state.maps.flows6.raw;
    const fk = fraw.info.keySize;
    for (const { keys, values, count } of fraw.batches({ chunk: CHUNK })) {
      for (let i = 0; i < count; i++) {
        const k = Flow6KeyCodec.parse(keys, i * fk);
        if (k.dir !== DIR_IN) continue;
        const v = Flow6Codec.parse(values, i * fraw.valueBytes);
        const row = index6.get(session6Id(session6KeyOfFlow(k, v)));
        if (row === undefined || rows6[row]!.host !== flow6Host(k)) continue;
        const partner = state.maps.flows6.get(partnerKey6(k, v));
        const session = { opened_ns: 0n, last_seen_ns: rows6[row]!.last, host: rows6[row]!.host, ifindex: 0 };
        if (partner && flowFate6(k, v, partner, rules.get(v.rule), session, now) === 'live') rows6[row]!.flows++;
      }
      await yieldLoop();
    }
  }

  // Row refs: 0..n4-1 are IPv4 rows, n4.. IPv6 rows.
  const order = Array.from({ length: n }, (_, i) => i);
  if (n <= SORT_MAX_ROWS) {
    const ruleOf = (i: number): number => (i < n4 ? cols.rule.a[i]! : rows6[i - n4]!.rule);
    const name = (i: number): string => names.get(ruleOf(i)) ?? '';
    order.sort((a, b) => {
      const c = name(a).localeCompare(name(b));
      if (c !== 0) return c;
      if ((a < n4) !== (b < n4)) return a < n4 ? -1 : 1;
      if (a < n4) return cols.host.a[a]! - cols.host.a[b]!;
      const x = rows6[a - n4]!.hostKey;
      const y = rows6[b - n4]!.hostKey;
      return x < y ? -1 : x > y ? 1 : 0;
    });
  }
  const wall = (ns: number): string => new Date(wallNow - (Number(now) - ns) / 1e6).toISOString();
  for (const i of order) {
    if (i < n4) {
      const rule = cols.rule.a[i]!;
      const r = rules.get(rule) as PtRule;
      const left = Number(r.idle_timeout_ns) - (Number(now) - cols.last.a[i]!);
      yield {
        rule: names.get(rule) ?? `#${rule}`,
        family: 'ipv4',
        host: u32Addr(cols.host.a[i]!),
        peer: r.flags & RULE_PEER_CONTACTED ? u32Addr(cols.peer.a[i]!) : null,
        opened_at: wall(cols.opened.a[i]!),
        last_seen: wall(cols.last.a[i]!),
        expires_in_s: Math.max(0, Math.round(left / 1e6) / 1000),
        flows: cols.flows.a[i]!,
      };
    } else {
      const row = rows6[i - n4]!;
      const r = rules.get(row.rule) as PtRule;
      const left = Number(r.idle_timeout_ns) - (Number(now) - Number(row.last));
      yield {
        rule: names.get(row.rule) ?? `#${row.rule}`,
        family: 'ipv6',
        host: row.host,
        peer: r.flags & RULE_PEER_CONTACTED ? row.peer : null,
        opened_at: wall(Number(row.opened)),
        last_seen: wall(Number(row.last)),
        expires_in_s: Math.max(0, Math.round(left / 1e6) / 1000),
        flows: row.flows,
      };
    }
  }
}

/**
 * Accepted flows matching `filter` (rule; host: the LAN host; peer: the
 * remote), one row per flow from its inbound entry, IPv4 then IPv6, in table
 * order, read in batches; the other direction's entry is looked up per
 * listed flow.
 */
export async function* listFlows(state: PorttrigState, filter: ListFilter, now: bigint): AsyncGenerator<FlowView> {
  const want = resolveFilter(state, filter);
  const names = state.ruleNames();
  let n = 0;
  if (want.v4) {
    const fraw = state.maps.flows.raw;
    const fk = fraw.info.keySize;
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
  if (!want.v6) return;
  const fraw = state.maps.flows6.raw;
  const fk = fraw.info.keySize;
  for (const { keys, values, count } of fraw.batches({ chunk: CHUNK })) {
    for (let i = 0; i < count && n < want.limit; i++) {
      const k = Flow6KeyCodec.parse(keys, i * fk);
      if (k.dir !== DIR_IN) continue;
      const v = Flow6Codec.parse(values, i * fraw.valueBytes);
      if ((want.ruleId !== null && v.rule !== want.ruleId) || (want.host6 !== null && k.daddr !== want.host6) ||
          (want.peer6 !== null && k.saddr !== want.peer6)) continue;
      const partner = state.maps.flows6.get(partnerKey6(k, v));
      n++;
      yield flowView6(k, v, partner, names, now);
    }
    if (n >= want.limit) return;
    await yieldLoop();
  }
}
