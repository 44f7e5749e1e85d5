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
