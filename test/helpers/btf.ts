/**
 * Minimal raw BTF files (the format of /sys/kernel/btf/*, linux/btf.h), for
 * tests that need a kernel BTF with or without some function: an `int`, one
 * FUNC_PROTO `int (void)`, and a FUNC of that prototype per name. `splitOn`
 * makes split BTF on top of such a base, as a module's BTF is on vmlinux's:
 * its type ids continue after the base's and its string offsets after the
 * base's string section.
 */

const BTF_MAGIC = 0xeb9f;
const HDR_LEN = 24;
const KIND_INT = 1;
const KIND_FUNC = 12;
const KIND_FUNC_PROTO = 13;
/** BTF_INT_SIGNED in the INT's encoding bits. */
const INT_SIGNED = 1;
const LINKAGE_GLOBAL = 1;

export interface RawBtf {
  data: Buffer;
  /** Types including void (ids 0 .. count-1), for a split BTF on top of this one. */
  typeCount: number;
  strLen: number;
}

export function rawBtf(funcs: readonly string[], splitOn?: RawBtf): RawBtf {
  const firstId = splitOn ? splitOn.typeCount : 1;
  const strBase = splitOn ? splitOn.strLen : 0;
  const strs: Buffer[] = [Buffer.from([0])];
  let strLen = 1;
  const str = (s: string): number => {
    const off = strBase + strLen;
    strs.push(Buffer.from(`${s}\0`));
    strLen += s.length + 1;
    return off;
  };
  const words: number[] = [];
  const info = (kind: number, vlen = 0): number => ((kind << 24) | vlen) >>> 0;
  // [firstId] int
  words.push(str('int'), info(KIND_INT), 4, ((INT_SIGNED << 24) | 32) >>> 0);
  const intId = firstId;
  // [firstId + 1] int (void)
  words.push(0, info(KIND_FUNC_PROTO), intId);
  const protoId = firstId + 1;
  for (const f of funcs) words.push(str(f), info(KIND_FUNC, LINKAGE_GLOBAL), protoId);

  const types = Buffer.alloc(4 * words.length);
  words.forEach((w, i) => types.writeUInt32LE(w, 4 * i));
  const strings = Buffer.concat(strs);
  const hdr = Buffer.alloc(HDR_LEN);
  hdr.writeUInt16LE(BTF_MAGIC, 0);
  hdr.writeUInt8(1, 2);                   // version
  hdr.writeUInt8(0, 3);                   // flags
  hdr.writeUInt32LE(HDR_LEN, 4);
  hdr.writeUInt32LE(0, 8);                // type_off
  hdr.writeUInt32LE(types.length, 12);    // type_len
  hdr.writeUInt32LE(types.length, 16);    // str_off
  hdr.writeUInt32LE(strings.length, 20);  // str_len
  return {
    data: Buffer.concat([hdr, types, strings]),
    typeCount: firstId + 2 + funcs.length,
    strLen: strBase + strings.length,
  };
}
