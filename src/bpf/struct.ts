/**
 * Declarative codecs for C structs shared with the data path. One field table
 * drives parse, format and the layout test against the object's BTF
 * (test/bpf/abi.test.ts), so the offsets used here cannot drift unseen.
 */

/**
 * Field kinds. `ipv4`, `ipv6`, `be16` and `be32` are network order in memory
 * and host values here (`ipv6`: 16 bytes, a C `__be32[4]`, as text in the
 * canonical compressed form Node's net module prints).
 */
export type FieldKind =
  | { t: 'u8' } | { t: 'u16' } | { t: 'u32' } | { t: 's32' } | { t: 'u64' }
  | { t: 'be16' } | { t: 'be32' } | { t: 'ipv4' } | { t: 'ipv6' } | { t: 'mac' }
  | { t: 'u16[]'; len: number }
  | { t: 'ipv4[]'; len: number }
  | { t: 'char[]'; len: number }
  | { t: 'pad'; len: number };

export interface FieldSpec { name: string; offset: number; kind: FieldKind }

export const u8: FieldKind = { t: 'u8' };
export const u16: FieldKind = { t: 'u16' };
export const u32: FieldKind = { t: 'u32' };
export const s32: FieldKind = { t: 's32' };
export const u64: FieldKind = { t: 'u64' };
export const be16: FieldKind = { t: 'be16' };
export const be32: FieldKind = { t: 'be32' };
export const ipv4: FieldKind = { t: 'ipv4' };
export const ipv6: FieldKind = { t: 'ipv6' };
/** A link-layer address: a C `__u8[6]`, as text "02:00:5e:10:00:01" here. */
export const mac: FieldKind = { t: 'mac' };
export const u16s = (len: number): FieldKind => ({ t: 'u16[]', len });
export const ipv4s = (len: number): FieldKind => ({ t: 'ipv4[]', len });
export const chars = (len: number): FieldKind => ({ t: 'char[]', len });
export const pad = (len: number): FieldKind => ({ t: 'pad', len });

/** Write the link-layer address `text` ("aa:bb:cc:dd:ee:ff") into `buf` at `off`. */
export function writeMac(buf: Buffer, off: number, text: string): void {
  const parts = text.split(':');
  if (parts.length !== 6 || !parts.every((h) => /^[0-9a-fA-F]{2}$/.test(h))) throw new RangeError(`not a MAC address: ${JSON.stringify(text)}`);
  parts.forEach((h, i) => buf.writeUInt8(parseInt(h, 16), off + i));
}

/** Dotted quad of a network-order IPv4 address read from `buf`. */
export function readIpv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Write a dotted quad in network order; throws on anything else. */
export function writeIpv4(buf: Buffer, off: number, addr: string): void {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new TypeError(`not an IPv4 address: "${addr}"`);
  parts.forEach((p, i) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new TypeError(`not an IPv4 address: "${addr}"`);
    buf[off + i] = n;
  });
}

/**
 * Text of the 16-byte network-order IPv6 address at `buf[off]`: RFC 5952's
 * compressed form exactly as Node's net module (libuv's inet_ntop) prints it:
 * lower-case hex without leading zeros, the longest run of two or more zero
 * groups (the first of equal runs) as `::`, and a dotted IPv4 tail for
 * IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
 */
export function readIpv6(buf: Buffer, off: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(buf.readUInt16BE(off + 2 * i));
  let best = -1; let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (bestLen < 2) { best = -1; bestLen = 0; }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += readIpv4(buf, off + 12);
      return out;
    }
    out += w[i]!.toString(16);
  }
  if (best >= 0 && best + bestLen === 8) out += ':';
  return out;
}

/**
 * Write an IPv6 address (any RFC 4291 text form, with or without `::` and a
 * dotted IPv4 tail; no zone index) as 16 network-order bytes; throws on
 * anything else.
 */
export function writeIpv6(buf: Buffer, off: number, addr: string): void {
  const bad = (): never => { throw new TypeError(`not an IPv6 address: "${addr}"`); };
  if (typeof addr !== 'string' || addr.length > 45 || !/^[0-9a-fA-F:.]+$/.test(addr)) bad();
  const halves = addr.split('::');
  if (halves.length > 2) bad();
  const groups = (s: string, last: boolean): number[] => {
    if (s === '') return [];
    const parts = s.split(':');
    const out: number[] = [];
    parts.forEach((p, i) => {
      if (last && i === parts.length - 1 && p.includes('.')) {
        const v4 = Buffer.alloc(4);
        try { writeIpv4(v4, 0, p); } catch { bad(); }
        out.push(v4.readUInt16BE(0), v4.readUInt16BE(2));
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) bad();
        out.push(parseInt(p, 16));
      }
    });
    return out;
  };
  let words: number[];
  if (halves.length === 2) {
    const head = groups(halves[0]!, false);
    const tail = groups(halves[1]!, true);
    if (head.length + tail.length > 7) bad();
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    words = groups(addr, true);
    if (words.length !== 8) bad();
  }
  words.forEach((x, i) => buf.writeUInt16BE(x, off + 2 * i));
}

/** The canonical text of an IPv6 address, or null when `addr` is not one. */
export function canonicalIpv6(addr: string): string | null {
  const b = Buffer.alloc(16);
  try { writeIpv6(b, 0, addr); } catch { return null; }
  return readIpv6(b, 0);
}

/** A fixed-size value that can go in and out of a map. */
export interface Codec<T> {
  readonly size: number;
  parse(buf: Buffer, off?: number): T;
  format(value: T, buf?: Buffer, off?: number): Buffer;
}

/** Codec of a C struct named `cName` (as in the object's BTF). */
export class StructCodec<T extends object> implements Codec<T> {
  constructor(readonly cName: string, readonly size: number, readonly fields: readonly FieldSpec[]) {}

  parse(buf: Buffer, off = 0): T {
    const out: Record<string, unknown> = {};
    for (const f of this.fields) {
      const o = off + f.offset;
      const k = f.kind;
      switch (k.t) {
        case 'u8': out[f.name] = buf.readUInt8(o); break;
        case 'u16': out[f.name] = buf.readUInt16LE(o); break;
        case 'u32': out[f.name] = buf.readUInt32LE(o); break;
        case 's32': out[f.name] = buf.readInt32LE(o); break;
        case 'u64': out[f.name] = buf.readBigUInt64LE(o); break;
        case 'be16': out[f.name] = buf.readUInt16BE(o); break;
        case 'be32': out[f.name] = buf.readUInt32BE(o); break;
        case 'ipv4': out[f.name] = readIpv4(buf, o); break;
        case 'ipv6': out[f.name] = readIpv6(buf, o); break;
        case 'mac': out[f.name] = [...buf.subarray(o, o + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':'); break;
        case 'u16[]': out[f.name] = Array.from({ length: k.len }, (_, i) => buf.readUInt16LE(o + 2 * i)); break;
        case 'ipv4[]': out[f.name] = Array.from({ length: k.len }, (_, i) => readIpv4(buf, o + 4 * i)); break;
        case 'char[]': {
          const end = buf.indexOf(0, o);
          out[f.name] = buf.toString('utf8', o, end < 0 || end > o + k.len ? o + k.len : end);
          break;
        }
        case 'pad': break;
      }
    }
    return out as T;
  }

  format(value: T, buf: Buffer = Buffer.alloc(this.size), off = 0): Buffer {
    buf.fill(0, off, off + this.size);  // padding is always zero
    const v = value as Record<string, unknown>;
    for (const f of this.fields) {
      const o = off + f.offset;
      const k = f.kind;
      const x = v[f.name];
      switch (k.t) {
        case 'u8': buf.writeUInt8(Number(x ?? 0), o); break;
        case 'u16': buf.writeUInt16LE(Number(x ?? 0), o); break;
        case 'u32': buf.writeUInt32LE(Number(x ?? 0), o); break;
        case 's32': buf.writeInt32LE(Number(x ?? 0), o); break;
        case 'u64': buf.writeBigUInt64LE(BigInt((x as bigint | number | undefined) ?? 0), o); break;
        case 'be16': buf.writeUInt16BE(Number(x ?? 0), o); break;
        case 'be32': buf.writeUInt32BE(Number(x ?? 0), o); break;
        case 'ipv4': writeIpv4(buf, o, String(x ?? '0.0.0.0')); break;
        case 'ipv6': writeIpv6(buf, o, String(x ?? '::')); break;
        case 'mac': writeMac(buf, o, String(x ?? '00:00:00:00:00:00')); break;
        case 'u16[]': ((x as number[] | undefined) ?? []).slice(0, k.len).forEach((n, i) => buf.writeUInt16LE(n, o + 2 * i)); break;
        case 'ipv4[]': ((x as string[] | undefined) ?? []).slice(0, k.len).forEach((a, i) => writeIpv4(buf, o + 4 * i, a)); break;
        case 'char[]': {
          const s = Buffer.from(String(x ?? ''), 'utf8');
          if (s.length >= k.len) throw new RangeError(`${this.cName}.${f.name}: "${String(x)}" longer than ${k.len - 1} bytes`);
          s.copy(buf, o);
          break;
        }
        case 'pad': break;
      }
    }
    return buf;
  }
}

/** Codec of a bare little-endian u32 / u64 / u8 (map keys and scalar values). */
export const U32: Codec<number> = {
  size: 4,
  parse: (b, o = 0) => b.readUInt32LE(o),
  format: (v, b = Buffer.alloc(4), o = 0) => { b.writeUInt32LE(v, o); return b; },
};
export const U64: Codec<bigint> = {
  size: 8,
  parse: (b, o = 0) => b.readBigUInt64LE(o),
  format: (v, b = Buffer.alloc(8), o = 0) => { b.writeBigUInt64LE(v, o); return b; },
};
export const U8: Codec<number> = {
  size: 1,
  parse: (b, o = 0) => b.readUInt8(o),
  format: (v, b = Buffer.alloc(1), o = 0) => { b.writeUInt8(v, o); return b; },
};
/** A network-order IPv4 address as a dotted quad. */
export const IPV4: Codec<string> = {
  size: 4,
  parse: (b, o = 0) => readIpv4(b, o),
  format: (v, b = Buffer.alloc(4), o = 0) => { writeIpv4(b, o, v); return b; },
};
/** A network-order IPv6 address in its canonical text form. */
export const IPV6: Codec<string> = {
  size: 16,
  parse: (b, o = 0) => readIpv6(b, o),
  format: (v, b = Buffer.alloc(16), o = 0) => { writeIpv6(b, o, v); return b; },
};
