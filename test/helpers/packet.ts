/**
 * An independent packet builder and reader for the data path tests:
 * Ethernet II + IPv4 (options, fragments, deliberately bogus lengths) + TCP,
 * UDP or ICMP (errors quoting a datagram), with every checksum computed from
 * scratch by the RFC 1071 sum below.
 *
 * Nothing here is imported from bpf/ or src/: the expected output bytes of a
 * test must not share code (or bugs) with what is being tested.
 */

export const ETH_HLEN = 14;
export const ETH_P_IP = 0x0800;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMP = 1;

/** ICMP types (RFC 792) and the codes the tests use. */
export const ICMP = {
  ECHO_REPLY: 0, DEST_UNREACH: 3, ECHO_REQUEST: 8, TIME_EXCEEDED: 11, PARAMETER_PROBLEM: 12,
  /** DEST_UNREACH codes. */
  PORT_UNREACH: 3, FRAG_NEEDED: 4,
  /** TIME_EXCEEDED code: TTL exceeded in transit. */
  TTL_EXCEEDED: 0,
} as const;

/** TCP flag bits (byte 13 of the header). */
export const TCP = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10, URG: 0x20, ECE: 0x40, CWR: 0x80 } as const;

// --- RFC 1071 ---------------------------------------------------------------

/** 32-bit accumulation of 16-bit big-endian words (odd tail padded with zero). */
export function sum16(buf: Uint8Array, initial = 0): number {
  let s = initial;
  const n = buf.length & ~1;
  for (let i = 0; i < n; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (buf.length & 1) s += buf[buf.length - 1]! << 8;
  return s;
}

/** Fold carries into 16 bits (end-around carry). */
export function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The Internet checksum of `bufs` (one's complement of the one's complement sum). */
export function inetChecksum(...bufs: Uint8Array[]): number {
  // Buffers are summed as one stream, so an odd-length buffer shifts the next.
  const all = Buffer.concat(bufs.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
  return ~fold(sum16(all)) & 0xffff;
}

// --- addresses ----------------------------------------------------------------

/** Parsed addresses: a differential run builds ~10^5 frames from a few dozen of them. */
const ipCache = new Map<string, Buffer>();
const macCache = new Map<string, Buffer>();
const MEMO_MAX = 4096;

export function ipBytes(addr: string): Buffer {
  const hit = ipCache.get(addr);
  if (hit) return Buffer.from(hit);
  const parts = addr.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new TypeError(`not an IPv4 address: ${addr}`);
  }
  const b = Buffer.from(parts);
  if (ipCache.size < MEMO_MAX) ipCache.set(addr, Buffer.from(b));
  return b;
}

export function ipString(buf: Uint8Array, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

function macBytes(mac: string): Buffer {
  const hit = macCache.get(mac);
  if (hit) return Buffer.from(hit);
  const parts = mac.split(':').map((h) => parseInt(h, 16));
  if (parts.length !== 6 || parts.some((p) => !(p >= 0 && p <= 255))) throw new TypeError(`not a MAC address: ${mac}`);
  const b = Buffer.from(parts);
  if (macCache.size < MEMO_MAX) macCache.set(mac, Buffer.from(b));
  return b;
}

/** Pseudo header of RFC 793 / RFC 768 for an L4 segment of `l4len` bytes. */
export function pseudoHeader(src: string, dst: string, proto: number, l4len: number): Buffer {
  const ph = Buffer.alloc(12);
  ipBytes(src).copy(ph, 0);
  ipBytes(dst).copy(ph, 4);
  ph[8] = 0;
  ph[9] = proto;
  ph.writeUInt16BE(l4len & 0xffff, 10);
  return ph;
}

// --- builders -------------------------------------------------------------------

export interface EthOpts {
  dst?: string;
  src?: string;
  type?: number;
}

export interface Ipv4Opts {
  src: string;
  dst: string;
  ttl?: number;            // default 64
  id?: number;             // default 0x4242
  tos?: number;
  df?: boolean;
  mf?: boolean;
  /** Fragment offset in 8-byte units. */
  fragOffset?: number;
  /** Raw option bytes; padded with EOL (0) to a multiple of 4. */
  options?: Uint8Array;
  /** Overrides: written as given, even when they make the packet bogus. */
  totLen?: number;
  ihl?: number;
  version?: number;
  protocol?: number;
  /** Force this IP header checksum instead of computing it. */
  checksum?: number;
}

export interface TcpOpts {
  sport: number;
  dport: number;
  flags: number;           // TCP.* or'ed
  seq?: number;
  ack?: number;
  window?: number;         // default 64240
  urg?: number;
  /** Raw option bytes; padded with EOL (0) to a multiple of 4. */
  options?: Uint8Array;
  payload?: Uint8Array;
  /** Force this checksum instead of computing it. */
  checksum?: number;
}

export interface UdpOpts {
  sport: number;
  dport: number;
  payload?: Uint8Array;
  /** Send "no checksum" (0), RFC 768. */
  zeroChecksum?: boolean;
  /** Force this checksum instead of computing it. */
  checksum?: number;
  /** Override the UDP length field. */
  length?: number;
}

export type L4 = { tcp: TcpOpts } | { udp: UdpOpts } | { raw: Uint8Array; proto: number };

export interface PacketSpec {
  eth?: EthOpts;
  ip: Ipv4Opts;
  l4: L4;
}

function pad4(b: Uint8Array | undefined): Buffer {
  const src = Buffer.from(b ?? []);
  const out = Buffer.alloc(Math.ceil(src.length / 4) * 4);
  src.copy(out);
  return out;
}

/** The TCP segment (header + options + payload), checksummed over `src`/`dst`. */
export function tcpSegment(src: string, dst: string, o: TcpOpts): Buffer {
  const opts = pad4(o.options);
  const payload = Buffer.from(o.payload ?? []);
  const hlen = 20 + opts.length;
  if (hlen > 60) throw new RangeError(`TCP header of ${hlen} bytes`);
  const seg = Buffer.alloc(hlen + payload.length);
  seg.writeUInt16BE(o.sport, 0);
  seg.writeUInt16BE(o.dport, 2);
  seg.writeUInt32BE((o.seq ?? 0x01020304) >>> 0, 4);
  seg.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  seg[12] = (hlen / 4) << 4;
  seg[13] = o.flags & 0xff;
  seg.writeUInt16BE(o.window ?? 64240, 14);
  seg.writeUInt16BE(0, 16);
  seg.writeUInt16BE(o.urg ?? 0, 18);
  opts.copy(seg, 20);
  payload.copy(seg, hlen);
  const ck = o.checksum ?? inetChecksum(pseudoHeader(src, dst, IPPROTO_TCP, seg.length), seg);
  seg.writeUInt16BE(ck, 16);
  return seg;
}

/** The UDP datagram (header + payload), checksummed over `src`/`dst` unless zero. */
export function udpDatagram(src: string, dst: string, o: UdpOpts): Buffer {
  const payload = Buffer.from(o.payload ?? []);
  const dg = Buffer.alloc(8 + payload.length);
  dg.writeUInt16BE(o.sport, 0);
  dg.writeUInt16BE(o.dport, 2);
  dg.writeUInt16BE(o.length ?? dg.length, 4);
  dg.writeUInt16BE(0, 6);
  payload.copy(dg, 8);
  let ck: number;
  if (o.checksum !== undefined) ck = o.checksum;
  else if (o.zeroChecksum) ck = 0;
  else {
    ck = inetChecksum(pseudoHeader(src, dst, IPPROTO_UDP, dg.length), dg);
    if (ck === 0) ck = 0xffff;   // RFC 768: a computed 0 is sent as all ones
  }
  dg.writeUInt16BE(ck, 6);
  return dg;
}

/** An IPv4 header for `payloadLen` bytes of payload. */
export function ipv4Header(o: Ipv4Opts, proto: number, payloadLen: number): Buffer {
  const opts = pad4(o.options);
  const hlen = 20 + opts.length;
  if (hlen > 60) throw new RangeError(`IPv4 header of ${hlen} bytes`);
  const h = Buffer.alloc(hlen);
  const ihl = o.ihl ?? hlen / 4;
  h[0] = ((o.version ?? 4) << 4) | (ihl & 0x0f);
  h[1] = o.tos ?? 0;
  h.writeUInt16BE(o.totLen ?? hlen + payloadLen, 2);
  h.writeUInt16BE(o.id ?? 0x4242, 4);
  const frag = (o.df ? 0x4000 : 0) | (o.mf ? 0x2000 : 0) | ((o.fragOffset ?? 0) & 0x1fff);
  h.writeUInt16BE(frag, 6);
  h[8] = o.ttl ?? 64;
  h[9] = o.protocol ?? proto;
  h.writeUInt16BE(0, 10);
  ipBytes(o.src).copy(h, 12);
  ipBytes(o.dst).copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(o.checksum ?? inetChecksum(h), 10);
  return h;
}

/**
 * The device's own MAC as BPF_PROG_TEST_RUN sees it: the test run classifies
 * the frame (eth_type_trans) against the loopback device, whose address is
 * all zeros, so a frame sent there is PACKET_HOST, as a frame addressed to
 * the gateway is. Another unicast MAC makes it PACKET_OTHERHOST.
 */
export const HOST_MAC = '00:00:00:00:00:00';

export function ethHeader(o: EthOpts = {}): Buffer {
  const e = Buffer.alloc(ETH_HLEN);
  macBytes(o.dst ?? HOST_MAC).copy(e, 0);
  macBytes(o.src ?? '02:00:00:00:00:02').copy(e, 6);
  e.writeUInt16BE(o.type ?? ETH_P_IP, 12);
  return e;
}

/** A whole frame: Ethernet + IPv4 + L4, every checksum computed unless forced. */
export function buildPacket(spec: PacketSpec): Buffer {
  const { ip, l4 } = spec;
  let proto: number;
  let body: Buffer;
  if ('tcp' in l4) { proto = IPPROTO_TCP; body = tcpSegment(ip.src, ip.dst, l4.tcp); }
  else if ('udp' in l4) { proto = IPPROTO_UDP; body = udpDatagram(ip.src, ip.dst, l4.udp); }
  else { proto = l4.proto; body = Buffer.from(l4.raw); }
  return Buffer.concat([ethHeader(spec.eth), ipv4Header(ip, proto, body.length), body]);
}

export const tcpPacket = (ip: Ipv4Opts, tcp: TcpOpts, eth?: EthOpts): Buffer =>
  buildPacket({ ip, l4: { tcp }, ...(eth ? { eth } : {}) });
export const udpPacket = (ip: Ipv4Opts, udp: UdpOpts, eth?: EthOpts): Buffer =>
  buildPacket({ ip, l4: { udp }, ...(eth ? { eth } : {}) });

/**
 * One fragment of a whole frame built by buildPacket: the IP payload bytes
 * [offset, offset + len) (offset a multiple of 8), with MF set unless it is the
 * last one, and the IP header checksum recomputed. L4 checksums stay those of
 * the whole datagram, as on the wire.
 */
export function fragment(frame: Buffer, offset: number, len: number): Buffer {
  if (offset % 8 !== 0) throw new RangeError('fragment offset must be a multiple of 8');
  const ihl = (frame[ETH_HLEN]! & 0x0f) * 4;
  const payload = frame.subarray(ETH_HLEN + ihl);
  if (offset + len > payload.length) throw new RangeError('fragment past the end of the datagram');
  const last = offset + len === payload.length;
  const hdr = Buffer.from(frame.subarray(0, ETH_HLEN + ihl));
  const ip = hdr.subarray(ETH_HLEN);
  ip.writeUInt16BE(ihl + len, 2);
  ip.writeUInt16BE((ip.readUInt16BE(6) & 0x4000) | (last ? 0 : 0x2000) | (offset / 8), 6);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(inetChecksum(ip), 10);
  return Buffer.concat([hdr, payload.subarray(offset, offset + len)]);
}

/** An ICMP message (type, code, the 4 "rest of header" bytes, body) with its checksum. */
export function icmpMessage(type: number, code: number, rest: number, body: Uint8Array): Buffer {
  const m = Buffer.concat([Buffer.alloc(8), Buffer.from(body)]);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  m.writeUInt16BE(inetChecksum(m), 2);
  return m;
}

export interface IcmpErrorOpts {
  type: number;
  code: number;
  /** The 4 bytes after the checksum (e.g. the next-hop MTU of "fragmentation needed", RFC 1191). */
  rest?: number;
  /** The outer IPv4 header. */
  ip: Ipv4Opts;
  /** The offending datagram, built whole; the error quotes its IP header and `quoteL4` bytes after it. */
  quoted: PacketSpec;
  /** Bytes of the quoted datagram's payload: 8 by default (RFC 792), more as Linux sends. */
  quoteL4?: number;
}

/** An ICMP error quoting (the start of) another datagram, as a PacketSpec for buildPacket. */
export function icmpError(o: IcmpErrorOpts): PacketSpec {
  const inner = buildPacket(o.quoted).subarray(ETH_HLEN);
  const ihl = (inner[0]! & 0x0f) * 4;
  const quote = inner.subarray(0, Math.min(inner.length, ihl + (o.quoteL4 ?? 8)));
  return { ip: o.ip, l4: { raw: icmpMessage(o.type, o.code, o.rest ?? 0, quote), proto: IPPROTO_ICMP } };
}

// --- reader ------------------------------------------------------------------------

export interface ParsedIpv4 {
  version: number; ihl: number; tos: number; totLen: number; id: number;
  df: boolean; mf: boolean; fragOffset: number; ttl: number; protocol: number;
  checksum: number; src: string; dst: string; options: Buffer;
}
export interface ParsedTcp {
  sport: number; dport: number; seq: number; ack: number; dataOffset: number; flags: number;
  window: number; checksum: number; urg: number; options: Buffer; payload: Buffer;
}
export interface ParsedUdp { sport: number; dport: number; length: number; checksum: number; payload: Buffer }
export interface ParsedIcmp {
  type: number; code: number; checksum: number; rest: number; body: Buffer;
  /** The quoted datagram's IP header and ports, for errors that carry one. */
  quoted?: { ip: ParsedIpv4; sport?: number; dport?: number };
}
export interface ParsedPacket {
  eth: { dst: string; src: string; type: number };
  ip?: ParsedIpv4;
  tcp?: ParsedTcp;
  udp?: ParsedUdp;
  icmp?: ParsedIcmp;
}

function parseIpv4Header(ip: Buffer): ParsedIpv4 {
  const ihl = ip[0]! & 0x0f;
  const frag = ip.readUInt16BE(6);
  return {
    version: ip[0]! >> 4, ihl, tos: ip[1]!, totLen: ip.readUInt16BE(2), id: ip.readUInt16BE(4),
    df: (frag & 0x4000) !== 0, mf: (frag & 0x2000) !== 0, fragOffset: frag & 0x1fff,
    ttl: ip[8]!, protocol: ip[9]!, checksum: ip.readUInt16BE(10),
    src: ipString(ip, 12), dst: ipString(ip, 16),
    options: Buffer.from(ip.subarray(20, Math.max(20, Math.min(ihl * 4, ip.length)))),
  };
}

const ICMP_ERRORS = new Set<number>([ICMP.DEST_UNREACH, ICMP.TIME_EXCEEDED, ICMP.PARAMETER_PROBLEM]);

const mac = (b: Buffer, o: number): string =>
  [...b.subarray(o, o + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** Read the fields of a frame; stops quietly where the bytes run out. */
export function parsePacket(buf: Buffer): ParsedPacket {
  if (buf.length < ETH_HLEN) throw new RangeError(`frame of ${buf.length} bytes`);
  const out: ParsedPacket = { eth: { dst: mac(buf, 0), src: mac(buf, 6), type: buf.readUInt16BE(12) } };
  if (out.eth.type !== ETH_P_IP || buf.length < ETH_HLEN + 20) return out;
  const ip = buf.subarray(ETH_HLEN);
  const ihl = ip[0]! & 0x0f;
  out.ip = parseIpv4Header(ip);
  if (ihl < 5 || out.ip.fragOffset !== 0) return out;
  const end = Math.min(ip.length, out.ip.totLen);
  const l4 = ip.subarray(ihl * 4, Math.max(ihl * 4, end));
  if (out.ip.protocol === IPPROTO_TCP && l4.length >= 20) {
    const doff = (l4[12]! >> 4) * 4;
    out.tcp = {
      sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), seq: l4.readUInt32BE(4), ack: l4.readUInt32BE(8),
      dataOffset: doff, flags: l4[13]!, window: l4.readUInt16BE(14), checksum: l4.readUInt16BE(16),
      urg: l4.readUInt16BE(18), options: Buffer.from(l4.subarray(20, Math.max(20, doff))),
      payload: Buffer.from(l4.subarray(Math.max(20, doff))),
    };
  } else if (out.ip.protocol === IPPROTO_UDP && l4.length >= 8) {
    out.udp = {
      sport: l4.readUInt16BE(0), dport: l4.readUInt16BE(2), length: l4.readUInt16BE(4),
      checksum: l4.readUInt16BE(6), payload: Buffer.from(l4.subarray(8)),
    };
  } else if (out.ip.protocol === IPPROTO_ICMP && l4.length >= 8) {
    const body = Buffer.from(l4.subarray(8));
    out.icmp = { type: l4[0]!, code: l4[1]!, checksum: l4.readUInt16BE(2), rest: l4.readUInt32BE(4), body };
    if (ICMP_ERRORS.has(l4[0]!) && body.length >= 20) {
      const qip = parseIpv4Header(body);
      const q4 = body.subarray(qip.ihl * 4);
      out.icmp.quoted = { ip: qip, ...(q4.length >= 4 ? { sport: q4.readUInt16BE(0), dport: q4.readUInt16BE(2) } : {}) };
    }
  }
  return out;
}

export interface ChecksumReport {
  /** IPv4 header checksum is valid. */
  ip: boolean;
  /** L4 checksum valid; null when it cannot be checked (fragment, other protocol, cut short). */
  l4: boolean | null;
  /** UDP sent without checksum (field 0). */
  udpZero: boolean;
  /** IP header checksum of the datagram an ICMP error quotes; null when there is none. */
  quotedIp: boolean | null;
  detail: string;
}

/**
 * Re-check the IPv4 header checksum and the TCP/UDP checksum (pseudo header
 * included) of a frame. A fragment's L4 checksum covers the whole datagram, so
 * it is not checked here (l4: null).
 */
export function verifyChecksums(buf: Buffer): ChecksumReport {
  const p = parsePacket(buf);
  if (!p.ip) return { ip: false, l4: null, udpZero: false, quotedIp: null, detail: 'not an IPv4 frame' };
  const iph = buf.subarray(ETH_HLEN, ETH_HLEN + p.ip.ihl * 4);
  const ipOk = p.ip.ihl >= 5 && iph.length === p.ip.ihl * 4 && fold(sum16(iph)) === 0xffff;
  const detail: string[] = [`ip header checksum 0x${p.ip.checksum.toString(16)} ${ipOk ? 'ok' : 'BAD'}`];
  if (p.ip.mf || p.ip.fragOffset !== 0) return { ip: ipOk, l4: null, udpZero: false, quotedIp: null, detail: `${detail[0]}; fragment` };
  const start = ETH_HLEN + p.ip.ihl * 4;
  const end = ETH_HLEN + p.ip.totLen;
  if (end > buf.length || end < start) return { ip: ipOk, l4: null, udpZero: false, quotedIp: null, detail: `${detail[0]}; bogus length` };
  const l4 = buf.subarray(start, end);
  if (p.ip.protocol === IPPROTO_ICMP && l4.length >= 8) {
    const ok = fold(sum16(l4)) === 0xffff;
    let quotedIp: boolean | null = null;
    let q = '';
    if (p.icmp?.quoted) {
      const qh = p.icmp.body.subarray(0, p.icmp.quoted.ip.ihl * 4);
      quotedIp = qh.length === p.icmp.quoted.ip.ihl * 4 && qh.length >= 20 && fold(sum16(qh)) === 0xffff;
      q = `; quoted ip header checksum ${quotedIp ? 'ok' : 'BAD'}`;
    }
    return { ip: ipOk, l4: ok, udpZero: false, quotedIp, detail: `${detail[0]}; icmp checksum 0x${l4.readUInt16BE(2).toString(16)} ${ok ? 'ok' : 'BAD'}${q}` };
  }
  const ph = pseudoHeader(p.ip.src, p.ip.dst, p.ip.protocol, l4.length);
  if (p.ip.protocol === IPPROTO_UDP && l4.length >= 8) {
    const ck = l4.readUInt16BE(6);
    if (ck === 0) return { ip: ipOk, l4: true, udpZero: true, quotedIp: null, detail: `${detail[0]}; udp checksum 0 (none)` };
    const ok = fold(sum16(l4, sum16(ph))) === 0xffff;
    return { ip: ipOk, l4: ok, udpZero: false, quotedIp: null, detail: `${detail[0]}; udp checksum 0x${ck.toString(16)} ${ok ? 'ok' : 'BAD'}` };
  }
  if (p.ip.protocol === IPPROTO_TCP && l4.length >= 20) {
    const ok = fold(sum16(l4, sum16(ph))) === 0xffff;
    return { ip: ipOk, l4: ok, udpZero: false, quotedIp: null, detail: `${detail[0]}; tcp checksum 0x${l4.readUInt16BE(16).toString(16)} ${ok ? 'ok' : 'BAD'}` };
  }
  return { ip: ipOk, l4: null, udpZero: false, quotedIp: null, detail: `${detail[0]}; no checkable L4` };
}

/** A short human description of a frame, for assertion messages. */
export function describe(buf: Buffer): string {
  let p: ParsedPacket;
  try { p = parsePacket(buf); } catch { return `<${buf.length} bytes>`; }
  if (!p.ip) return `<eth type 0x${p.eth.type.toString(16)}, ${buf.length} bytes>`;
  const ip = p.ip;
  const l4 = p.tcp ? `tcp ${ip.src}:${p.tcp.sport} > ${ip.dst}:${p.tcp.dport} flags 0x${p.tcp.flags.toString(16)} ck 0x${p.tcp.checksum.toString(16)}`
    : p.udp ? `udp ${ip.src}:${p.udp.sport} > ${ip.dst}:${p.udp.dport} ck 0x${p.udp.checksum.toString(16)}`
    : p.icmp ? `icmp ${ip.src} > ${ip.dst} type ${p.icmp.type}/${p.icmp.code} ck 0x${p.icmp.checksum.toString(16)}${p.icmp.quoted
      ? ` quoting proto ${p.icmp.quoted.ip.protocol} ${p.icmp.quoted.ip.src}:${p.icmp.quoted.sport ?? '?'} > ${p.icmp.quoted.ip.dst}:${p.icmp.quoted.dport ?? '?'}` : ''}`
    : `proto ${ip.protocol} ${ip.src} > ${ip.dst}`;
  return `${l4} ttl ${ip.ttl} ihl ${ip.ihl} len ${ip.totLen} ipck 0x${ip.checksum.toString(16)} (${buf.length} bytes)`;
}

// --- IPv6 (RFC 8200), ICMPv6 (RFC 4443) ---------------------------------------------
// Built and read here from scratch, like the IPv4 side: nothing is shared with
// src/ (whose IPv6 text form comes from node:net) or bpf/.

export const ETH_P_IPV6 = 0x86dd;
export const IPPROTO_ICMPV6 = 58;
/** Next header values of the extension headers (RFC 8200 4). */
export const NH = { HOP: 0, ROUTING: 43, FRAGMENT: 44, DSTOPTS: 60, NONE: 59, AH: 51, ESP: 50 } as const;
/** ICMPv6 types (RFC 4443) the tests use. */
export const ICMP6 = {
  DEST_UNREACH: 1, PKT_TOO_BIG: 2, TIME_EXCEEDED: 3, PARAM_PROBLEM: 4, ECHO_REQUEST: 128, ECHO_REPLY: 129,
  NEIGHBOR_SOLICIT: 135,
  /** DEST_UNREACH codes. */
  ADM_PROHIBITED: 1, PORT_UNREACH: 4,
} as const;

/** The 16 bytes of an IPv6 address in text form (RFC 4291 2.2: '::' once, hex groups; no embedded IPv4). */
export function ip6Bytes(addr: string): Buffer {
  const halves = addr.toLowerCase().split('::');
  if (halves.length > 2) throw new TypeError(`not an IPv6 address: ${addr}`);
  const groups = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => {
    if (!/^[0-9a-f]{1,4}$/.test(g)) throw new TypeError(`not an IPv6 address: ${addr}`);
    return parseInt(g, 16);
  }));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const fill = 8 - head.length - tail.length;
  if ((halves.length === 1 && fill !== 0) || fill < 0 || (halves.length === 2 && fill < 1)) throw new TypeError(`not an IPv6 address: ${addr}`);
  const all = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(g, 2 * i));
  return b;
}

/** Text of the 16 bytes at `off`: lowercase groups, the longest run (>= 2) of zero groups as '::' (RFC 5952). */
export function ip6String(buf: Uint8Array, off: number): string {
  const g = Array.from({ length: 8 }, (_, i) => (buf[off + 2 * i]! << 8) | buf[off + 2 * i + 1]!);
  let best = -1; let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (a: number[]): string => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The IPv6 pseudo-header (RFC 8200 8.1) for `len` bytes of upper-layer packet `nh`. */
export function pseudoHeader6(src: string, dst: string, nh: number, len: number): Buffer {
  const ph = Buffer.alloc(40);
  ip6Bytes(src).copy(ph, 0);
  ip6Bytes(dst).copy(ph, 16);
  ph.writeUInt32BE(len >>> 0, 32);
  ph[39] = nh;
  return ph;
}

/** An extension header: hop-by-hop, routing or destination options (PadN-filled, `len` 8-octet units after the first 8), or a fragment header. */
export type Ext6 =
  | { type: 'hop' | 'dstopts' | 'routing'; len?: number }
  | { type: 'frag'; offset?: number; more?: boolean; id?: number };

export interface Ipv6Opts {
  src: string;
  dst: string;
  hopLimit?: number;       // default 64
  trafficClass?: number;
  flowLabel?: number;
  ext?: Ext6[];
  /** Overrides, written as given even when they make the packet bogus. */
  payloadLen?: number;
  version?: number;
  /** The fixed header's next header (default: the first extension header's, or the L4 protocol). */
  nextHeader?: number;
}

export interface Packet6Spec {
  eth?: EthOpts;
  ip6: Ipv6Opts;
  l4: L4;
}

const extCode = (e: Ext6): number =>
  e.type === 'hop' ? NH.HOP : e.type === 'routing' ? NH.ROUTING : e.type === 'dstopts' ? NH.DSTOPTS : NH.FRAGMENT;

/** The bytes of one extension header whose next header is `nh`. */
export function extHeader(e: Ext6, nh: number): Buffer {
  if (e.type === 'frag') {
    const h = Buffer.alloc(8);
    h[0] = nh;
    h.writeUInt16BE((((e.offset ?? 0) & 0x1fff) << 3) | (e.more ? 1 : 0), 2);
    h.writeUInt32BE((e.id ?? 0x12345678) >>> 0, 4);
    return h;
  }
  const len = e.len ?? 0;
  const h = Buffer.alloc(8 * (len + 1));
  h[0] = nh;
  h[1] = len;
  if (e.type === 'routing') {
    h[2] = 253;              // routing type: experimental (RFC 4727); segments left 0: ignored
    h[3] = 0;
  } else {
    h[2] = 1;                // PadN (RFC 8200 4.2) over the rest
    h[3] = h.length - 4;
  }
  return h;
}

/** The L4 part of `spec` as the upper-layer packet (TCP/UDP checksummed over the IPv6 pseudo-header). */
function l4Bytes6(ip6: Ipv6Opts, l4: L4): { proto: number; body: Buffer } {
  if ('tcp' in l4) {
    const seg = tcpSegment('0.0.0.0', '0.0.0.0', { ...l4.tcp, checksum: 0 });
    seg.writeUInt16BE(l4.tcp.checksum ?? inetChecksum(pseudoHeader6(ip6.src, ip6.dst, IPPROTO_TCP, seg.length), seg), 16);
    return { proto: IPPROTO_TCP, body: seg };
  }
  if ('udp' in l4) {
    const dg = udpDatagram('0.0.0.0', '0.0.0.0', { ...l4.udp, checksum: 0 });
    let ck: number;
    if (l4.udp.checksum !== undefined) ck = l4.udp.checksum;
    else if (l4.udp.zeroChecksum) ck = 0;
    else {
      ck = inetChecksum(pseudoHeader6(ip6.src, ip6.dst, IPPROTO_UDP, dg.length), dg);
      if (ck === 0) ck = 0xffff;
    }
    dg.writeUInt16BE(ck, 6);
    return { proto: IPPROTO_UDP, body: dg };
  }
  return { proto: l4.proto, body: Buffer.from(l4.raw) };
}

/** The IPv6 datagram (fixed header, extension headers, upper-layer packet) of `spec`, no Ethernet. */
export function ipv6Datagram(spec: Packet6Spec): Buffer {
  const { ip6 } = spec;
  const { proto, body } = l4Bytes6(ip6, spec.l4);
  const exts = ip6.ext ?? [];
  const parts: Buffer[] = exts.map((e, i) => extHeader(e, i + 1 < exts.length ? extCode(exts[i + 1]!) : proto));
  const payload = Buffer.concat([...parts, body]);
  const h = Buffer.alloc(40);
  h.writeUInt32BE((((ip6.version ?? 6) & 0xf) << 28 | ((ip6.trafficClass ?? 0) & 0xff) << 20 | ((ip6.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(ip6.payloadLen ?? payload.length, 4);
  h[6] = ip6.nextHeader ?? (exts.length ? extCode(exts[0]!) : proto);
  h[7] = ip6.hopLimit ?? 64;
  ip6Bytes(ip6.src).copy(h, 8);
  ip6Bytes(ip6.dst).copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** A whole frame: Ethernet (type 0x86dd) + IPv6 + extension headers + L4, every checksum computed unless forced. */
export function buildPacket6(spec: Packet6Spec): Buffer {
  return Buffer.concat([ethHeader({ type: ETH_P_IPV6, ...spec.eth }), ipv6Datagram(spec)]);
}

/**
 * One fragment of `frame` (built by buildPacket6 with a fragment header in
 * its chain, offset 0 and M clear: the whole datagram): the fragmentable
 * part's bytes [offset, offset + len) after the fragment header (offset a
 * multiple of 8), its offset and M (set unless it is the last) in the
 * fragment header, the payload length fixed. Checksums stay the whole
 * datagram's, as on the wire.
 */
export function fragment6(frame: Buffer, offset: number, len: number): Buffer {
  if (offset % 8 !== 0) throw new RangeError('fragment offset must be a multiple of 8');
  let nh = frame[ETH_HLEN + 6]!;
  let off = ETH_HLEN + 40;
  let nhField = ETH_HLEN + 6;
  while (nh !== NH.FRAGMENT) {
    if (nh !== NH.HOP && nh !== NH.ROUTING && nh !== NH.DSTOPTS) throw new Error('fragment6: no fragment header in the chain');
    nhField = off;
    nh = frame[off]!;
    off += 8 * (frame[off + 1]! + 1);
  }
  void nhField;
  const rest = frame.subarray(off + 8);
  if (offset + len > rest.length) throw new RangeError('fragment past the end of the datagram');
  const last = offset + len === rest.length;
  const head = Buffer.from(frame.subarray(0, off + 8));
  head.writeUInt16BE(((offset / 8) << 3) | (last ? 0 : 1), off + 2);
  head.writeUInt16BE(head.length - ETH_HLEN - 40 + len, ETH_HLEN + 4);
  return Buffer.concat([head, rest.subarray(offset, offset + len)]);
}

/** An ICMPv6 message (type, code, 4 more header bytes, body), checksummed over the pseudo-header of src -> dst. */
export function icmp6Message(src: string, dst: string, type: number, code: number, rest: number, body: Uint8Array): Buffer {
  const m = Buffer.concat([Buffer.alloc(8), Buffer.from(body)]);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  m.writeUInt16BE(inetChecksum(pseudoHeader6(src, dst, IPPROTO_ICMPV6, m.length), m), 2);
  return m;
}

/** An ICMPv6 error from `ip6.src` to `ip6.dst` quoting the datagram of `quoted` (all of it, or its first `quoteLen` bytes). */
export function icmp6Error(o: { type: number; code: number; rest?: number; ip6: Ipv6Opts; quoted: Packet6Spec; quoteLen?: number; eth?: EthOpts }): Packet6Spec {
  const inner = ipv6Datagram(o.quoted);
  const quote = inner.subarray(0, Math.min(inner.length, o.quoteLen ?? inner.length));
  return {
    ...(o.eth ? { eth: o.eth } : {}),
    ip6: o.ip6,
    l4: { raw: icmp6Message(o.ip6.src, o.ip6.dst, o.type, o.code, o.rest ?? 0, quote), proto: IPPROTO_ICMPV6 },
  };
}

export interface ParsedIpv6 {
  version: number; payloadLen: number; nextHeader: number; hopLimit: number; src: string; dst: string;
  /** Extension headers walked, in order (next header codes). */
  exts: number[];
  /** The upper-layer protocol and where it starts (from the IPv6 header); fragment: offset and M. */
  proto: number; l4Off: number; frag?: { offset: number; more: boolean; id: number };
}

/** Read an IPv6 datagram at `buf` (fixed header and extension headers); undefined where it runs out. */
export function parseIpv6(buf: Buffer): ParsedIpv6 | undefined {
  if (buf.length < 40) return undefined;
  const p: ParsedIpv6 = {
    version: buf[0]! >> 4, payloadLen: buf.readUInt16BE(4), nextHeader: buf[6]!, hopLimit: buf[7]!,
    src: ip6String(buf, 8), dst: ip6String(buf, 24), exts: [], proto: buf[6]!, l4Off: 40,
  };
  let nh = buf[6]!;
  let off = 40;
  for (;;) {
    if (nh === NH.HOP || nh === NH.ROUTING || nh === NH.DSTOPTS) {
      if (off + 8 > buf.length) return p;
      p.exts.push(nh);
      const next = buf[off]!;
      off += 8 * (buf[off + 1]! + 1);
      nh = next;
    } else if (nh === NH.FRAGMENT) {
      if (off + 8 > buf.length) return p;
      p.exts.push(nh);
      const fo = buf.readUInt16BE(off + 2);
      p.frag = { offset: fo >> 3, more: (fo & 1) === 1, id: buf.readUInt32BE(off + 4) };
      nh = buf[off]!;
      off += 8;
      if (p.frag.offset !== 0) break;
    } else break;
  }
  p.proto = nh;
  p.l4Off = off;
  return p;
}

export interface Checksum6Report {
  /** The TCP/UDP/ICMPv6 checksum is right; null when it cannot be checked (fragment, cut short, other protocol). */
  l4: boolean | null;
  /** An ICMPv6 error's quoted UDP/TCP checksum, when the quote holds the whole quoted datagram; else null. */
  quotedL4: boolean | null;
  detail: string;
}

function l4Ok6(dg: Buffer, p: ParsedIpv6): boolean | null {
  const end = 40 + p.payloadLen;
  if (end > dg.length || p.frag) return null;
  const l4 = dg.subarray(p.l4Off, end);
  if (p.proto === IPPROTO_UDP && l4.length >= 8 && l4.readUInt16BE(6) === 0) return false;  // mandatory over IPv6
  if (![IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6].includes(p.proto)) return null;
  return fold(sum16(l4, sum16(pseudoHeader6(p.src, p.dst, p.proto, l4.length)))) === 0xffff;
}

/** Re-check the checksums of an IPv6 frame from scratch. */
export function verifyChecksums6(frame: Buffer): Checksum6Report {
  const dg = frame.subarray(ETH_HLEN);
  const p = parseIpv6(dg);
  if (!p || p.version !== 6) return { l4: null, quotedL4: null, detail: 'not an IPv6 frame' };
  const l4 = l4Ok6(dg, p);
  let quotedL4: boolean | null = null;
  if (p.proto === IPPROTO_ICMPV6 && l4 !== null && dg[p.l4Off]! < 128) {
    const q = dg.subarray(p.l4Off + 8, 40 + p.payloadLen);
    const qp = parseIpv6(q);
    if (qp && 40 + qp.payloadLen === q.length) quotedL4 = l4Ok6(q, qp);
  }
  return { l4, quotedL4, detail: `l4 ${l4 === null ? 'unchecked' : l4 ? 'ok' : 'BAD'}; quoted l4 ${quotedL4 === null ? 'unchecked' : quotedL4 ? 'ok' : 'BAD'}` };
}

/** A short description of an IPv6 frame, for assertion messages. */
export function describe6(frame: Buffer): string {
  const dg = frame.subarray(ETH_HLEN);
  const p = parseIpv6(dg);
  if (!p) return `<${frame.length} bytes>`;
  const l4 = dg.subarray(p.l4Off);
  const ports = (p.proto === IPPROTO_TCP || p.proto === IPPROTO_UDP) && l4.length >= 4 && !p.frag?.offset
    ? ` ${l4.readUInt16BE(0)} > ${l4.readUInt16BE(2)}` : '';
  return `ipv6 ${p.src} > ${p.dst} hlim ${p.hopLimit} plen ${p.payloadLen} exts [${p.exts.join(',')}] proto ${p.proto}${ports} (${frame.length} bytes)`;
}
