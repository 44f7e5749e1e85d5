/**
 * Packet descriptions for the differential test: a small JSON-serialisable
 * description of one frame (so that a failing sequence prints and replays as
 * data), the frame it stands for, and the frame the data path must emit when
 * the model decides to translate it. Frames are built by test/helpers/packet.ts
 * with every checksum computed from scratch: the expected bytes share no
 * arithmetic with the C's incremental updates.
 */
import {
  ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, buildPacket, fragment, icmpError, inetChecksum,
  type Ipv4Opts, type PacketSpec,
} from '../helpers/packet.js';

/** Link-layer destination: the test device's own MAC (PACKET_HOST), another unicast MAC, broadcast, multicast. */
export type MacKind = 'host' | 'other' | 'bcast' | 'mcast';

export const MACS: Record<MacKind, string> = {
  host: '00:00:00:00:00:00',
  other: '02:00:00:00:00:09',
  bcast: 'ff:ff:ff:ff:ff:ff',
  mcast: '01:00:5e:00:00:fb',
};

/** The datagram an ICMP error quotes. */
export interface QuotedDesc {
  proto: 'tcp' | 'udp';
  src: string; dst: string; sport: number; dport: number;
  flags?: number;
  payload?: number;
  udpZero?: boolean;
  /** Fragment offset (8-byte units) written in the quoted header: a quote of a non-first fragment. */
  fragOff?: number;
}

export interface IcmpDesc {
  type: number;
  code: number;
  quoted: QuotedDesc;
  /** Bytes of the quoted datagram after its IP header (8: RFC 792; more, as Linux sends). */
  quoteL4: number;
}

/**
 * Ways to spoil a frame. Each one is a single defect; the rest of the frame
 * (checksums included) stays consistent.
 *  ipcsum: IP header checksum off by 0x100; ihl: IHL `arg` (< 5); version: 6;
 *  totlen-long: tot_len `arg` bytes beyond the frame; totlen-short: tot_len
 *  below the header; totlen-l4: tot_len ends inside the L4 header; truncated:
 *  the frame cut to `arg` bytes of IP (at least 20: BPF_PROG_TEST_RUN refuses a
 *  frame whose IPv4 header is cut, with EINVAL); doff-small: TCP doff `arg` (< 5);
 *  doff-big: TCP doff 15 past a short segment; udplen-small: UDP length `arg`
 *  (< 8); udplen-big: UDP length `arg` bytes past the datagram.
 */
export type BadKind =
  | 'ipcsum' | 'ihl' | 'version' | 'totlen-long' | 'totlen-short' | 'totlen-l4' | 'truncated'
  | 'doff-small' | 'doff-big' | 'udplen-small' | 'udplen-big';

export interface PacketDesc {
  prog: 'lan' | 'wan';
  /** Default 'host'. */
  mac?: MacKind;
  /** Another ethertype than IPv4 (ARP, IPv6): the IPv4 bytes follow but the frame is not IPv4. */
  etype?: number;
  /** tcp, udp, icmp, or another IP protocol number (raw payload). */
  proto: 'tcp' | 'udp' | 'icmp' | number;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** TCP flags (byte 13). */
  flags?: number;
  /** Default 64. */
  ttl?: number;
  /** IP identification; default 0x1c46. */
  id?: number;
  /** Words of IP options (NOPs), 1..10. */
  ipOpts?: number;
  /** Words of TCP options (NOPs), 1..10. */
  tcpOpts?: number;
  /** Payload bytes (TCP, UDP, raw). */
  payload?: number;
  /** UDP sent without a checksum (0). */
  udpZero?: boolean;
  /** The last two payload bytes (an even payload): chosen so that a checksum comes out as wanted. */
  fill?: number;
  /** This frame is one fragment of the datagram: IP payload bytes [off, off + len); off 0 is the first (MF). */
  frag?: { off: number; len: number };
  icmp?: IcmpDesc;
  bad?: BadKind;
  badArg?: number;
  /** Ethernet padding after the datagram (tot_len shorter than the frame). */
  pad?: number;
}

/** A translation decided by the model: what the data path rewrites. */
export type Rewrite =
  /** Full packet or first fragment: address and port, TTL - 1, IP and L4 checksums. */
  | { kind: 'l4'; dst: boolean; addr: string; port: number }
  /** Non-first fragment: address, TTL - 1, IP checksum. */
  | { kind: 'l3'; dst: boolean; addr: string }
  /** ICMP error about a flow: quoted address and port, outer address, TTL - 1, every checksum. */
  | { kind: 'icmp'; inbound: boolean; addr: string; port: number };

function bytesOf(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt * 7 + 0x41) & 0xff;
  return b;
}

const nops = (words: number | undefined): Uint8Array | undefined =>
  words ? new Uint8Array(words * 4).fill(1) : undefined;

function quotedSpec(q: QuotedDesc): PacketSpec {
  const ip: Ipv4Opts = { src: q.src, dst: q.dst, ttl: 63, id: 0x3131, ...(q.fragOff ? { fragOffset: q.fragOff } : {}) };
  const payload = bytesOf(q.payload ?? 0, 3);
  if (q.proto === 'tcp') {
    return { ip, l4: { tcp: { sport: q.sport, dport: q.dport, flags: q.flags ?? 0x10, seq: 0x0a0b0c0d, ack: 0x01020304, payload } } };
  }
  return { ip, l4: { udp: { sport: q.sport, dport: q.dport, payload, ...(q.udpZero ? { zeroChecksum: true } : {}) } } };
}

/** The packet.ts spec of a description (whole datagram: fragmenting and spoiling come after). */
export function specOf(d: PacketDesc): PacketSpec {
  const ip: Ipv4Opts = {
    src: d.src, dst: d.dst, ttl: d.ttl ?? 64, id: d.id ?? 0x1c46,
    ...(d.ipOpts ? { options: nops(d.ipOpts)! } : {}),
  };
  const eth = { dst: MACS[d.mac ?? 'host'], ...(d.etype !== undefined ? { type: d.etype } : {}) };
  const payload = bytesOf(d.payload ?? 0, 1);
  if (d.fill !== undefined && payload.length >= 2) payload.writeUInt16BE(d.fill, payload.length - 2);
  if (d.proto === 'tcp') {
    const flags = d.flags ?? 0x02;
    return {
      eth, ip,
      l4: {
        tcp: {
          sport: d.sport ?? 0, dport: d.dport ?? 0, flags, seq: 0x10002000, ack: flags & 0x10 ? 0x30004000 : 0,
          payload, ...(d.tcpOpts ? { options: nops(d.tcpOpts)! } : {}),
        },
      },
    };
  }
  if (d.proto === 'udp') {
    return { eth, ip, l4: { udp: { sport: d.sport ?? 0, dport: d.dport ?? 0, payload, ...(d.udpZero ? { zeroChecksum: true } : {}) } } };
  }
  if (d.proto === 'icmp') {
    const ic = d.icmp ?? { type: 8, code: 0, quoted: { proto: 'udp', src: d.dst, dst: d.src, sport: 1, dport: 1 }, quoteL4: 8 };
    const e = icmpError({
      type: ic.type, code: ic.code, rest: ic.type === 3 && ic.code === 4 ? 1400 : 0,
      ip, quoted: quotedSpec(ic.quoted), quoteL4: ic.quoteL4,
    });
    return { ...e, eth };
  }
  return { eth, ip, l4: { raw: payload, proto: d.proto } };
}

function fixIpChecksum(b: Buffer): void {
  const ihl = Math.max(5, b[ETH_HLEN]! & 0x0f) * 4;
  if (b.length < ETH_HLEN + ihl) return;
  b.writeUInt16BE(0, ETH_HLEN + 10);
  b.writeUInt16BE(inetChecksum(b.subarray(ETH_HLEN, ETH_HLEN + ihl)), ETH_HLEN + 10);
}

function spoil(frame: Buffer, kind: BadKind, arg: number): Buffer {
  const b = Buffer.from(frame);
  const ip = ETH_HLEN;
  const hlen = (b[ip]! & 0x0f) * 4;
  const tot = b.readUInt16BE(ip + 2);
  const l4 = ip + hlen;
  switch (kind) {
    case 'ipcsum':
      b.writeUInt16BE(b.readUInt16BE(ip + 10) ^ 0x0100, ip + 10);
      return b;
    case 'ihl':
      b[ip] = (b[ip]! & 0xf0) | (arg & 0x0f);
      break;
    case 'version':
      b[ip] = 0x60 | (b[ip]! & 0x0f);
      break;
    case 'totlen-long':
      b.writeUInt16BE(b.length - ETH_HLEN + arg, ip + 2);
      break;
    case 'totlen-short':
      b.writeUInt16BE(Math.max(0, hlen - arg), ip + 2);
      break;
    case 'totlen-l4':
      b.writeUInt16BE(hlen + (b[ip + 9] === IPPROTO_TCP ? 19 : 7) - (arg % 4), ip + 2);
      break;
    case 'truncated':
      return b.subarray(0, Math.min(b.length, ETH_HLEN + arg));
    case 'doff-small':
      b[l4 + 12] = ((arg & 0x0f) << 4) | (b[l4 + 12]! & 0x0f);
      return b;
    case 'doff-big':
      b[l4 + 12] = 0xf0 | (b[l4 + 12]! & 0x0f);
      return b;
    case 'udplen-small':
      b.writeUInt16BE(arg & 7, l4 + 4);
      return b;
    case 'udplen-big':
      b.writeUInt16BE(tot - hlen + Math.max(1, arg), l4 + 4);
      return b;
  }
  fixIpChecksum(b);
  return b;
}

/** The frame of a description: built whole, fragmented, spoiled, padded. */
export function buildFrame(d: PacketDesc): Buffer {
  let frame = buildPacket(specOf(d));
  if (d.frag) frame = fragment(frame, d.frag.off, d.frag.len);
  if (d.etype !== undefined && d.etype !== ETH_P_IP) frame.writeUInt16BE(d.etype, 12);
  if (d.bad) frame = spoil(frame, d.bad, d.badArg ?? 0);
  if (d.pad) frame = Buffer.concat([frame, Buffer.alloc(d.pad)]);
  return frame;
}

/** The description of the packet after a translation: fields rewritten, TTL - 1. */
export function rewriteDesc(d: PacketDesc, r: Rewrite): PacketDesc {
  const ttl = (d.ttl ?? 64) - 1;
  if (r.kind === 'l4') {
    return r.dst ? { ...d, ttl, dst: r.addr, dport: r.port } : { ...d, ttl, src: r.addr, sport: r.port };
  }
  if (r.kind === 'l3') return r.dst ? { ...d, ttl, dst: r.addr } : { ...d, ttl, src: r.addr };
  const ic = d.icmp;
  if (!ic) throw new Error('an ICMP rewrite of a packet that is not ICMP');
  return r.inbound
    ? { ...d, ttl, dst: r.addr, icmp: { ...ic, quoted: { ...ic.quoted, src: r.addr, sport: r.port } } }
    : { ...d, ttl, src: r.addr, icmp: { ...ic, quoted: { ...ic.quoted, dst: r.addr, dport: r.port } } };
}

/**
 * The frame the data path must emit for `input` (the frame of `d`) under the
 * model's decision: the input itself when nothing is rewritten; else built
 * anew from the rewritten description (L4 and ICMP rewrites: every checksum
 * from scratch) or, for a non-first fragment, the input with its IP header
 * rewritten and its header checksum computed from scratch.
 */
export function expectedFrame(d: PacketDesc, input: Buffer, r: Rewrite | undefined): Buffer {
  if (!r) return input;
  if (d.bad && d.bad !== 'totlen-l4') throw new Error(`the model translated a spoiled packet (${d.bad}): a model bug`);
  if (r.kind !== 'l3') return buildFrame(rewriteDesc(d, r));
  const out = Buffer.from(input);
  const ip = ETH_HLEN;
  out[ip + 8] = out[ip + 8]! - 1;
  const addr = r.addr.split('.').map(Number);
  Buffer.from(addr).copy(out, ip + (r.dst ? 16 : 12));
  fixIpChecksum(out);
  return out;
}

const TCP_FLAG_NAMES: [number, string][] = [[0x02, 'S'], [0x10, '.'], [0x01, 'F'], [0x04, 'R'], [0x08, 'P'], [0x20, 'U']];

/** TCP flags as tcpdump writes them ([S.] for SYN+ACK). */
export function tcpFlagsText(f: number): string {
  return `[${TCP_FLAG_NAMES.filter(([b]) => f & b).map(([, n]) => n).join('')}]`;
}

/** One line for a description, for failure reports. */
export function describeDesc(d: PacketDesc): string {
  const proto = typeof d.proto === 'number' ? `proto ${d.proto}` : d.proto;
  let s = `${d.prog} ${proto} ${d.src}`;
  if (d.proto === 'tcp' || d.proto === 'udp') s += `:${d.sport} > ${d.dst}:${d.dport}`;
  else s += ` > ${d.dst}`;
  if (d.proto === 'tcp') s += ` ${tcpFlagsText(d.flags ?? 0x02)}`;
  if (d.icmp) {
    const q = d.icmp.quoted;
    s += ` type ${d.icmp.type}/${d.icmp.code} quoting ${q.proto} ${q.src}:${q.sport} > ${q.dst}:${q.dport}` +
      `${q.fragOff ? ` fragoff ${q.fragOff}` : ''} (${d.icmp.quoteL4} bytes)`;
  }
  const extra: string[] = [];
  if ((d.ttl ?? 64) !== 64) extra.push(`ttl ${d.ttl}`);
  if (d.id !== undefined) extra.push(`id 0x${d.id.toString(16)}`);
  if (d.frag) extra.push(`frag ${d.frag.off}+${d.frag.len}`);
  if (d.mac && d.mac !== 'host') extra.push(`mac ${d.mac}`);
  if (d.etype !== undefined) extra.push(`ethertype 0x${d.etype.toString(16)}`);
  if (d.ipOpts) extra.push(`ipopts ${d.ipOpts * 4}`);
  if (d.tcpOpts) extra.push(`tcpopts ${d.tcpOpts * 4}`);
  if (d.payload) extra.push(`payload ${d.payload}`);
  if (d.udpZero) extra.push('udp csum 0');
  if (d.fill !== undefined) extra.push(`fill 0x${d.fill.toString(16)}`);
  if (d.pad) extra.push(`pad ${d.pad}`);
  if (d.bad) extra.push(`BAD ${d.bad}${d.badArg !== undefined ? `(${d.badArg})` : ''}`);
  return extra.length ? `${s} ${extra.join(' ')}` : s;
}

/**
 * The filler that makes the UDP checksum of `d` after the rewrite `r` come
 * out as 0, which must then be sent as 0xffff (RFC 768): `d` with that fill.
 * `d` needs an even payload of at least 2 bytes and a checksum.
 */
export function withZeroChecksumAfter(d: PacketDesc, r: Rewrite): PacketDesc {
  const probe = { ...d, fill: 0 };
  const frame = buildFrame(rewriteDesc(probe, r));
  const ck = frame.readUInt16BE(frame.length - (d.pad ?? 0) - (d.payload ?? 0) - 2);
  // The checksum is ~S; adding w to the sum gives ~(S + w): 0 when S + w = 0xffff.
  const s = ~ck & 0xffff;
  return { ...d, fill: (0xffff - s) & 0xffff };
}

/** IP protocol number of a description. */
export function protoNumber(d: PacketDesc): number {
  return d.proto === 'tcp' ? IPPROTO_TCP : d.proto === 'udp' ? IPPROTO_UDP : d.proto === 'icmp' ? 1 : d.proto;
}
