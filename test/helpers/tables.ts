/**
 * Fill pt_sessions, pt_host_sessions and pt_flows with many entries quickly:
 * each entry is formatted once with the ABI codecs into a template and only
 * the bytes that differ are patched, then written in batches of 64 Ki
 * entries (BPF_MAP_UPDATE_BATCH). For the scale tests and bench/scale.ts.
 *
 * Session i: rule `rule` (peer mode contacted), peer 11.x.y.z, host
 * 10.a.b.c with `hostsEvery` sessions per host. Flow i (two entries): remote
 * 12.x.y.z:4000 -> WAN:`wanPort`, to host of session i, on session i.
 */
import { DIR_IN, DIR_OUT, FlowCodec, FlowKeyCodec, HostCodec, SessionCodec, SessionKeyCodec } from '../../src/bpf/abi.js';
import type { DatapathMaps } from '../../src/bpf/datapath.js';
import { IPV4 } from '../../src/bpf/struct.js';

const CHUNK = 65536;

/** The i-th address of a /8 (`first`.x.y.z), i < 2^24, as 4 network-order bytes written at `off`. */
function putAddr(buf: Buffer, off: number, first: number, i: number): void {
  buf[off] = first; buf[off + 1] = (i >>> 16) & 255; buf[off + 2] = (i >>> 8) & 255; buf[off + 3] = i & 255;
}

/** Dotted quad of the i-th address of `first`/8. */
export const nthAddr = (first: number, i: number): string => `${first}.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;

export const SESSION_PEER_NET = 11;
export const HOST_NET = 10;
export const REMOTE_NET = 12;

export interface FillSpec {
  rule: number;
  sessions: number;
  /** Sessions per host (>= 1). */
  hostsEvery: number;
  /** Flows, on sessions 0..flows-1 (flows <= sessions). */
  flows: number;
  wanAddr: string;
  wanPort: number;
  proto: number;
  /** Stamp of every session's last_seen (and opened). */
  sessionSeen: (i: number) => bigint;
  /** Stamp of both entries of flow i. */
  flowSeen: (i: number) => bigint;
  ifindex?: number;
}

/** Write the tables of `spec` (counts per host included). */
export function fillTables(maps: DatapathMaps, spec: FillSpec): void {
  const ifindex = spec.ifindex ?? 1;
  const host = (i: number): number => Math.floor(i / spec.hostsEvery);
  // Sessions.
  const sk = SessionKeyCodec.format({ rule: spec.rule, peer: '0.0.0.0' });
  const sv = SessionCodec.format({ opened_ns: 0n, last_seen_ns: 0n, host: '0.0.0.0', ifindex });
  for (let base = 0; base < spec.sessions; base += CHUNK) {
    const n = Math.min(CHUNK, spec.sessions - base);
    const keys = Buffer.alloc(n * sk.length);
    const values = Buffer.alloc(n * sv.length);
    for (let j = 0; j < n; j++) {
      const i = base + j;
      sk.copy(keys, j * sk.length);
      putAddr(keys, j * sk.length + 4, SESSION_PEER_NET, i);
      sv.copy(values, j * sv.length);
      const seen = spec.sessionSeen(i);
      values.writeBigUInt64LE(seen, j * sv.length);
      values.writeBigUInt64LE(seen, j * sv.length + 8);
      putAddr(values, j * sv.length + 16, HOST_NET, host(i));
    }
    maps.sessions.raw.updateBatch(keys, values);
  }
  // Per-host counts.
  const hosts = Math.ceil(spec.sessions / spec.hostsEvery);
  for (let base = 0; base < hosts; base += CHUNK) {
    const n = Math.min(CHUNK, hosts - base);
    const keys = Buffer.alloc(n * 4);
    const values = Buffer.alloc(n * HostCodec.size);
    for (let j = 0; j < n; j++) {
      const h = base + j;
      putAddr(keys, j * 4, HOST_NET, h);
      values.writeUInt32LE(Math.min(spec.hostsEvery, spec.sessions - h * spec.hostsEvery), j * HostCodec.size);
    }
    maps.hostSessions.raw.updateBatch(keys, values);
  }
  // Flows: IN and OUT entries.
  const wan = IPV4.format(spec.wanAddr);
  const inKey = FlowKeyCodec.format({ saddr: '0.0.0.0', daddr: spec.wanAddr, sport: 4000, dport: spec.wanPort, proto: spec.proto, dir: DIR_IN });
  const outKey = FlowKeyCodec.format({ saddr: '0.0.0.0', daddr: '0.0.0.0', sport: spec.wanPort, dport: 4000, proto: spec.proto, dir: DIR_OUT });
  const inVal = FlowCodec.format({ created_ns: 0n, last_seen_ns: 0n, nat_addr: '0.0.0.0', nat_port: spec.wanPort, rule: spec.rule, sess_peer: '0.0.0.0', ifindex, seen: 0 });
  const outVal = FlowCodec.format({ created_ns: 0n, last_seen_ns: 0n, nat_addr: spec.wanAddr, nat_port: spec.wanPort, rule: spec.rule, sess_peer: '0.0.0.0', ifindex, seen: 0 });
  const half = CHUNK / 2;
  for (let base = 0; base < spec.flows; base += half) {
    const n = Math.min(half, spec.flows - base);
    const keys = Buffer.alloc(2 * n * inKey.length);
    const values = Buffer.alloc(2 * n * inVal.length);
    for (let j = 0; j < n; j++) {
      const i = base + j;
      const seen = spec.flowSeen(i);
      const ko = 2 * j * inKey.length;
      const vo = 2 * j * inVal.length;
      inKey.copy(keys, ko);
      putAddr(keys, ko, REMOTE_NET, i);                         // IN: saddr = remote
      inVal.copy(values, vo);
      values.writeBigUInt64LE(seen, vo);
      values.writeBigUInt64LE(seen, vo + 8);
      putAddr(values, vo + 16, HOST_NET, host(i));               // nat_addr = LAN host
      putAddr(values, vo + 24, SESSION_PEER_NET, i);             // sess_peer
      outKey.copy(keys, ko + inKey.length);
      putAddr(keys, ko + inKey.length, HOST_NET, host(i));       // OUT: saddr = LAN host
      putAddr(keys, ko + inKey.length + 4, REMOTE_NET, i);       //      daddr = remote
      outVal.copy(values, vo + inVal.length);
      values.writeBigUInt64LE(seen, vo + inVal.length);
      values.writeBigUInt64LE(seen, vo + inVal.length + 8);
      wan.copy(values, vo + inVal.length + 16);
      putAddr(values, vo + inVal.length + 24, SESSION_PEER_NET, i);
    }
    maps.flows.raw.updateBatch(keys, values);
  }
}
