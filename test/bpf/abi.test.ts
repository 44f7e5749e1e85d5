/**
 * The TypeScript side of the map ABI (src/bpf/abi.ts) against the compiled
 * object (build/porttrig.bpf.o) and its header (bpf/porttrig_abi.h):
 *
 *  - every codec in ALL_CODECS against the BTF struct of the same name, read
 *    with libbpf (btfStruct): size, and every member by name and byte offset,
 *    both ways;
 *  - the same structs through a small independent ELF/BTF reader (below), for
 *    what btfStruct does not tell: each member's width and byte order (__be*
 *    typedefs are network order, everything else host order) and array lengths;
 *  - the map definitions in the object's .maps section: names, pinning, the
 *    structs they use (each must have a codec) and the capacities that encode
 *    TS constants (rule counters, verdicts, port slots, rule ids);
 *  - the #defines and enums of porttrig_abi.h against the TS constants.
 *
 * Reads files only; needs neither root nor BPF.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { btfStruct } from '../../src/ffi/libbpf.js';
import * as abi from '../../src/bpf/abi.js';
import { readIpv6, writeIpv6, canonicalIpv6, IPV6, type FieldKind } from '../../src/bpf/struct.js';
import { isIPv6, SocketAddress } from 'node:net';
import { BPF_OBJECT, REPO_ROOT } from '../helpers/bpffs.js';

const HEADER = join(REPO_ROOT, 'bpf/porttrig_abi.h');
const SKIP = existsSync(BPF_OBJECT) ? false : `${BPF_OBJECT} missing: run "make build"`;

// --- a small BTF reader ---------------------------------------------------------------

const BTF_KIND = {
  INT: 1, PTR: 2, ARRAY: 3, STRUCT: 4, UNION: 5, ENUM: 6, FWD: 7, TYPEDEF: 8, VOLATILE: 9, CONST: 10,
  RESTRICT: 11, FUNC: 12, FUNC_PROTO: 13, VAR: 14, DATASEC: 15, FLOAT: 16, DECL_TAG: 17, TYPE_TAG: 18, ENUM64: 19,
} as const;

interface BtfMemberRec { name: string; type: number; offsetBits: number }
interface BtfType {
  id: number; kind: number; name: string; vlen: number; kflag: boolean;
  /** size (INT, STRUCT, UNION, ENUM, DATASEC) or referenced type id (PTR, TYPEDEF, VAR, ...). */
  sizeOrType: number;
  members: BtfMemberRec[];               // STRUCT, UNION
  array?: { type: number; nelems: number };
  vars?: { type: number; offset: number; size: number }[];  // DATASEC
}

class Btf {
  readonly types: BtfType[] = [];  // index = id; 0 is void

  constructor(elf: Buffer) {
    const sec = Btf.section(elf, '.BTF');
    const magic = sec.readUInt16LE(0);
    if (magic !== 0xeb9f) throw new Error(`.BTF magic 0x${magic.toString(16)}`);
    const hdrLen = sec.readUInt32LE(4);
    const typeOff = sec.readUInt32LE(8);
    const typeLen = sec.readUInt32LE(12);
    const strOff = sec.readUInt32LE(16);
    const strLen = sec.readUInt32LE(20);
    const types = sec.subarray(hdrLen + typeOff, hdrLen + typeOff + typeLen);
    const strs = sec.subarray(hdrLen + strOff, hdrLen + strOff + strLen);
    const str = (off: number): string => strs.toString('latin1', off, strs.indexOf(0, off));
    this.types.push({ id: 0, kind: 0, name: 'void', vlen: 0, kflag: false, sizeOrType: 0, members: [] });
    let o = 0;
    while (o < types.length) {
      const info = types.readUInt32LE(o + 4);
      const t: BtfType = {
        id: this.types.length, kind: (info >>> 24) & 0x1f, name: str(types.readUInt32LE(o)), vlen: info & 0xffff,
        kflag: (info >>> 31) === 1, sizeOrType: types.readUInt32LE(o + 8), members: [],
      };
      o += 12;
      switch (t.kind) {
        case BTF_KIND.INT: case BTF_KIND.VAR: case BTF_KIND.DECL_TAG: o += 4; break;
        case BTF_KIND.ARRAY:
          t.array = { type: types.readUInt32LE(o), nelems: types.readUInt32LE(o + 8) };
          o += 12;
          break;
        case BTF_KIND.STRUCT: case BTF_KIND.UNION:
          for (let i = 0; i < t.vlen; i++, o += 12) {
            const off = types.readUInt32LE(o + 8);
            t.members.push({ name: str(types.readUInt32LE(o)), type: types.readUInt32LE(o + 4), offsetBits: t.kflag ? off & 0xffffff : off });
          }
          break;
        case BTF_KIND.ENUM: case BTF_KIND.FUNC_PROTO: o += 8 * t.vlen; break;
        case BTF_KIND.ENUM64: o += 12 * t.vlen; break;
        case BTF_KIND.DATASEC:
          t.vars = [];
          for (let i = 0; i < t.vlen; i++, o += 12) {
            t.vars.push({ type: types.readUInt32LE(o), offset: types.readUInt32LE(o + 4), size: types.readUInt32LE(o + 8) });
          }
          break;
        case BTF_KIND.PTR: case BTF_KIND.FWD: case BTF_KIND.TYPEDEF: case BTF_KIND.VOLATILE: case BTF_KIND.CONST:
        case BTF_KIND.RESTRICT: case BTF_KIND.FUNC: case BTF_KIND.FLOAT: case BTF_KIND.TYPE_TAG:
          break;
        default: throw new Error(`unknown BTF kind ${t.kind} at type ${t.id}`);
      }
      this.types.push(t);
    }
  }

  /** The bytes of ELF64 section `name`. */
  static section(elf: Buffer, name: string): Buffer {
    if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw new Error('not a little-endian ELF64 file');
    const shoff = Number(elf.readBigUInt64LE(0x28));
    const shentsize = elf.readUInt16LE(0x3a);
    const shnum = elf.readUInt16LE(0x3c);
    const shstrndx = elf.readUInt16LE(0x3e);
    const sh = (i: number): { name: number; offset: number; size: number } => {
      const b = shoff + i * shentsize;
      return { name: elf.readUInt32LE(b), offset: Number(elf.readBigUInt64LE(b + 24)), size: Number(elf.readBigUInt64LE(b + 32)) };
    };
    const names = sh(shstrndx);
    for (let i = 0; i < shnum; i++) {
      const s = sh(i);
      const n = elf.toString('latin1', names.offset + s.name, elf.indexOf(0, names.offset + s.name));
      if (n === name) return elf.subarray(s.offset, s.offset + s.size);
    }
    throw new Error(`no ${name} section`);
  }

  byName(name: string, kind: number): BtfType | undefined {
    return this.types.find((t) => t.kind === kind && t.name === name);
  }

  /** Skip typedefs and qualifiers. */
  resolve(id: number): BtfType {
    let t = this.types[id]!;
    while ([BTF_KIND.TYPEDEF, BTF_KIND.VOLATILE, BTF_KIND.CONST, BTF_KIND.RESTRICT, BTF_KIND.TYPE_TAG].includes(t.kind as never)) {
      t = this.types[t.sizeOrType]!;
    }
    return t;
  }

  sizeOf(id: number): number {
    const t = this.resolve(id);
    switch (t.kind) {
      case BTF_KIND.INT: case BTF_KIND.STRUCT: case BTF_KIND.UNION: case BTF_KIND.ENUM: case BTF_KIND.ENUM64: case BTF_KIND.FLOAT:
        return t.sizeOrType;
      case BTF_KIND.PTR: return 8;
      case BTF_KIND.ARRAY: return t.array!.nelems * this.sizeOf(t.array!.type);
      default: throw new Error(`no size for BTF kind ${t.kind} (type ${t.id})`);
    }
  }

  /** Names along the typedef chain of `id` (e.g. ["__be32", "__u32", "unsigned int"]). */
  typeNames(id: number): string[] {
    const out: string[] = [];
    let t = this.types[id]!;
    for (;;) {
      if (t.name) out.push(t.name);
      if (![BTF_KIND.TYPEDEF, BTF_KIND.VOLATILE, BTF_KIND.CONST, BTF_KIND.RESTRICT, BTF_KIND.TYPE_TAG].includes(t.kind as never)) return out;
      t = this.types[t.sizeOrType]!;
    }
  }
}

let btfCache: Btf | null = null;
const btf = (): Btf => (btfCache ??= new Btf(readFileSync(BPF_OBJECT)));

/** Bytes a codec field kind occupies. */
function kindSize(k: FieldKind): number {
  switch (k.t) {
    case 'u8': return 1;
    case 'u16': case 'be16': return 2;
    case 'u32': case 's32': case 'be32': case 'ipv4': return 4;
    case 'ipv6': return 16;
    case 'mac': return 6;
    case 'u64': return 8;
    case 'u16[]': return 2 * k.len;
    case 'ipv4[]': return 4 * k.len;
    case 'char[]': case 'pad': return k.len;
  }
}

// --- 1. codecs against btfStruct (libbpf) --------------------------------------------------

test('ALL_CODECS is not empty and has no duplicate struct', () => {
  assert.ok(abi.ALL_CODECS.length > 0);
  const names = abi.ALL_CODECS.map((c) => c.cName);
  assert.deepEqual([...new Set(names)].sort(), [...names].sort(), 'a struct has two codecs');
});

for (const codec of abi.ALL_CODECS) {
  test(`codec ${codec.cName}: size and member offsets match the object's BTF (btfStruct)`, SKIP ? { skip: SKIP } : {}, () => {
    const s = btfStruct(BPF_OBJECT, codec.cName);
    assert.ok(s, `struct ${codec.cName} is not in the BTF of ${BPF_OBJECT}`);
    assert.equal(codec.size, s.size, `struct ${codec.cName}: codec size ${codec.size} != BTF size ${s.size}`);
    const fields = new Map(codec.fields.map((f) => [f.name, f]));
    for (const m of s.members) {
      assert.equal(m.offsetBits % 8, 0, `struct ${codec.cName}.${m.name}: bit field at bit ${m.offsetBits}; codecs cannot express it`);
      const f = fields.get(m.name);
      assert.ok(f, `struct ${codec.cName}.${m.name} (BTF offset ${m.offsetBits / 8}) has no codec field`);
      assert.equal(f.offset, m.offsetBits / 8,
        `struct ${codec.cName}.${m.name}: codec offset ${f.offset} != BTF offset ${m.offsetBits / 8}`);
    }
    const members = new Map(s.members.map((m) => [m.name, m]));
    for (const f of codec.fields) {
      const m = members.get(f.name);
      assert.ok(m, `struct ${codec.cName}.${f.name}: codec field (offset ${f.offset}) is not a BTF member (BTF offset: none)`);
    }
  });
}

// --- 2. widths and byte order (own BTF reader) ------------------------------------------------

for (const codec of abi.ALL_CODECS) {
  test(`codec ${codec.cName}: every field has the width, byte order and length of its C member`, SKIP ? { skip: SKIP } : {}, () => {
    const b = btf();
    const t: BtfType | undefined = b.byName(codec.cName, BTF_KIND.STRUCT);
    assert.ok(t, `struct ${codec.cName} not found by the ELF/BTF reader`);
    assert.equal(t.sizeOrType, codec.size, `struct ${codec.cName}: size`);
    // The two BTF readers agree.
    const viaLibbpf = btfStruct(BPF_OBJECT, codec.cName)!;
    assert.deepEqual(t.members.map((m) => [m.name, m.offsetBits]), viaLibbpf.members.map((m) => [m.name, m.offsetBits]),
      `struct ${codec.cName}: libbpf and the ELF reader disagree on the members`);

    let end = 0;
    for (const f of [...codec.fields].sort((x, y) => x.offset - y.offset)) {
      assert.ok(f.offset >= end, `struct ${codec.cName}.${f.name}: codec field at ${f.offset} overlaps the previous one (ends at ${end})`);
      end = f.offset + kindSize(f.kind);
      const m: BtfMemberRec | undefined = t.members.find((x) => x.name === f.name);
      if (!m) continue;  // reported by the test above
      const size = b.sizeOf(m.type);
      assert.equal(kindSize(f.kind), size,
        `struct ${codec.cName}.${f.name}: codec kind ${f.kind.t} is ${kindSize(f.kind)} bytes, the C member ${b.typeNames(m.type).join(' -> ') || 'type'} is ${size}`);
      // An array's byte order is its element type's.
      const mt = b.resolve(m.type);
      const names = b.typeNames(mt.kind === BTF_KIND.ARRAY ? mt.array!.type : m.type);
      const bigEndian = names.some((n) => n.startsWith('__be'));
      if (f.kind.t === 'ipv4' || f.kind.t === 'ipv4[]' || f.kind.t === 'be16' || f.kind.t === 'be32' || f.kind.t === 'ipv6') {
        assert.ok(bigEndian, `struct ${codec.cName}.${f.name}: codec reads network order (${f.kind.t}) but the C type is ${names.join(' -> ')}`);
      } else if (f.kind.t !== 'pad') {
        assert.ok(!bigEndian, `struct ${codec.cName}.${f.name}: codec reads host order (${f.kind.t}) but the C type is ${names.join(' -> ')}`);
      }
      if (f.kind.t === 'ipv6') {
        // An IPv6 address is a __be32[4] in the ABI (16 bytes checked above).
        const arr = b.resolve(m.type);
        assert.equal(arr.kind, BTF_KIND.ARRAY, `struct ${codec.cName}.${f.name}: an ipv6 field must be a __be32[4], the C member is not an array`);
        assert.equal(arr.array!.nelems, 4, `struct ${codec.cName}.${f.name}: an ipv6 field must be a __be32[4]`);
        assert.equal(b.sizeOf(arr.array!.type), 4, `struct ${codec.cName}.${f.name}: an ipv6 field must be a __be32[4]`);
      }
      if (f.kind.t === 'mac') {
        const arr = b.resolve(m.type);
        assert.ok(arr.kind === BTF_KIND.ARRAY && arr.array!.nelems === 6 && b.sizeOf(arr.array!.type) === 1,
          `struct ${codec.cName}.${f.name}: a mac field must be a __u8[6]`);
      }
      if (f.kind.t === 'u16[]' || f.kind.t === 'ipv4[]' || f.kind.t === 'char[]') {
        const arr = b.resolve(m.type);
        assert.equal(arr.kind, BTF_KIND.ARRAY, `struct ${codec.cName}.${f.name}: codec is an array, the C member is not`);
        assert.equal(arr.array!.nelems, f.kind.len, `struct ${codec.cName}.${f.name}: array length`);
      }
    }
    assert.ok(end <= codec.size, `struct ${codec.cName}: codec fields run past the struct (${end} > ${codec.size})`);
  });
}

// --- 3. the map definitions ---------------------------------------------------------------------

interface MapDef { name: string; fields: Map<string, number> }
/** BPF_MAP_TYPE_PROG_ARRAY: a table of programs (pt6_progs, the IPv6 tail calls), not state. */
const BPF_MAP_TYPE_PROG_ARRAY = 3;
/** The __uint(type, N) of a map definition. */
function mapType(b: Btf, def: ReturnType<Btf['resolve']>): number | undefined {
  const m = def.members.find((x) => x.name === 'type');
  if (!m) return undefined;
  return b.types[b.types[m.type]!.sizeOrType]!.array?.nelems;
}
/** The prog arrays of the .maps section, by name. */
function progArrays(b: Btf): string[] {
  const sec = b.types.find((t) => t.kind === BTF_KIND.DATASEC && t.name === '.maps');
  assert.ok(sec, 'no .maps DATASEC in the BTF');
  return sec.vars!.map((v) => b.types[v.type]!).filter((vt) => mapType(b, b.resolve(vt.sizeOrType)) === BPF_MAP_TYPE_PROG_ARRAY).map((vt) => vt.name);
}
/**
 * Each map of the .maps section that holds state: its __uint() values and
 * __type() type ids. Prog arrays (filled by libbpf with the object's own
 * programs at load, never pinned) are not state: see progArrays().
 */
/** The object's maps but prog arrays: state maps, and with `scratch` the scratch ones too. */
function mapDefs(b: Btf, scratch = false): MapDef[] {
  const sec = b.types.find((t) => t.kind === BTF_KIND.DATASEC && t.name === '.maps');
  assert.ok(sec, 'no .maps DATASEC in the BTF');
  const state = sec.vars!.filter((v) => mapType(b, b.resolve(b.types[v.type]!.sizeOrType)) !== BPF_MAP_TYPE_PROG_ARRAY &&
    (scratch || !(abi.SCRATCH_MAPS as readonly string[]).includes(b.types[v.type]!.name)));
  return state.map((v) => {
    const vt = b.types[v.type]!;
    const def = b.resolve(vt.sizeOrType);
    const fields = new Map<string, number>();
    for (const m of def.members) {
      const ptr = b.types[m.type]!;
      assert.equal(ptr.kind, BTF_KIND.PTR, `map ${vt.name}.${m.name} is not a pointer`);
      const target = b.types[ptr.sizeOrType]!;
      // __uint(name, N) is int (*name)[N]; __type(name, T) is T *name.
      if (['type', 'max_entries', 'pinning', 'map_flags', 'key_size', 'value_size'].includes(m.name)) {
        assert.equal(target.kind, BTF_KIND.ARRAY, `map ${vt.name}.${m.name} is not __uint()`);
        fields.set(m.name, target.array!.nelems);
      } else {
        fields.set(m.name, ptr.sizeOrType);
      }
    }
    return { name: vt.name, fields };
  });
}

test('every map of the object is in MAPS (pinned by name) or SCRATCH_MAPS (per-CPU, never pinned), and vice versa', SKIP ? { skip: SKIP } : {}, () => {
  const defs = mapDefs(btf(), true);
  const inObject = defs.map((d) => d.name).sort();
  const inTs = [...Object.values(abi.MAPS), ...abi.SCRATCH_MAPS, ...Object.values(abi.XDP_MAPS)].sort();
  assert.deepEqual(inTs, inObject, 'MAPS, SCRATCH_MAPS and XDP_MAPS (src/bpf/abi.ts) against the maps of the object');
  for (const d of defs) {
    if ((Object.values(abi.XDP_MAPS) as string[]).includes(d.name)) {
      assert.equal(d.fields.get('pinning'), undefined, `XDP map ${d.name} is not pinned`);
    } else if ((abi.SCRATCH_MAPS as readonly string[]).includes(d.name)) {
      assert.equal(d.fields.get('pinning'), undefined, `scratch map ${d.name} is not pinned`);
      assert.equal(d.fields.get('type'), 6, `scratch map ${d.name} is BPF_MAP_TYPE_PERCPU_ARRAY`);
      assert.equal(d.fields.get('max_entries'), 1, `scratch map ${d.name} has one slot per CPU`);
    } else {
      assert.equal(d.fields.get('pinning'), 1, `map ${d.name}: pinning must be LIBBPF_PIN_BY_NAME (1)`);
    }
  }
});

test('the only prog array is pt6_progs (the IPv6 programs\' tail calls), never pinned', SKIP ? { skip: SKIP } : {}, () => {
  const b = btf();
  assert.deepEqual(progArrays(b), ['pt6_progs']);
  const sec = b.types.find((t) => t.kind === BTF_KIND.DATASEC && t.name === '.maps')!;
  const vt = sec.vars!.map((v) => b.types[v.type]!).find((t) => t.name === 'pt6_progs')!;
  const def = b.resolve(vt.sizeOrType);
  assert.equal(def.members.find((m) => m.name === 'pinning'), undefined, 'pt6_progs is not pinned: each object fills its own');
  assert.ok(!Object.values(abi.MAPS).includes('pt6_progs' as never), 'not a state map (MAPS)');
});

test('every struct a map uses as key or value has a codec of the same size', SKIP ? { skip: SKIP } : {}, () => {
  const b = btf();
  const codecs = new Map<string, number>(abi.ALL_CODECS.map((c) => [c.cName, c.size]));
  let structs = 0;
  for (const d of mapDefs(b)) {
    for (const role of ['key', 'value'] as const) {
      const id = d.fields.get(role);
      assert.ok(id !== undefined, `map ${d.name} has no __type(${role})`);
      const t = b.resolve(id);
      if (t.kind !== BTF_KIND.STRUCT) continue;
      structs++;
      assert.ok(codecs.has(t.name), `map ${d.name}: ${role} struct ${t.name || '(anonymous)'} has no codec in ALL_CODECS`);
      assert.equal(codecs.get(t.name), t.sizeOrType, `map ${d.name}: ${role} struct ${t.name} size`);
    }
  }
  assert.ok(structs >= 8, `only ${structs} struct keys/values found: the BTF walk is broken`);
});

test('map capacities in the object agree with the TS constants', SKIP ? { skip: SKIP } : {}, () => {
  const defs = new Map(mapDefs(btf()).map((d) => [d.name, d.fields.get('max_entries')]));
  assert.equal(defs.get(abi.MAPS.config), 1, `${abi.MAPS.config} max_entries`);
  assert.equal(defs.get(abi.MAPS.rules), abi.PT_MAX_RULES, `${abi.MAPS.rules} max_entries = PT_MAX_RULES`);
  assert.equal(defs.get(abi.MAPS.ruleNames), abi.PT_MAX_RULES, `${abi.MAPS.ruleNames} max_entries = PT_MAX_RULES`);
  assert.equal(defs.get(abi.MAPS.ports), abi.PT_PORT_SLOTS, `${abi.MAPS.ports} max_entries = PT_PORT_SLOTS`);
  assert.equal(defs.get(abi.MAPS.frags), abi.PT_FRAG_SLOTS, `${abi.MAPS.frags} max_entries = PT_FRAG_SLOTS`);
  assert.equal(defs.get(abi.MAPS.ruleStats), abi.FAMILIES.length * abi.PT_MAX_RULES * abi.RULE_COUNTERS.length,
    `${abi.MAPS.ruleStats} max_entries = PT_F__COUNT * PT_MAX_RULES * PT_RC__COUNT: FAMILIES x RULE_COUNTERS is ${abi.FAMILIES.length} x ${abi.RULE_COUNTERS.length}`);
  assert.equal(abi.RULE_STATS_ENTRIES, defs.get(abi.MAPS.ruleStats), 'RULE_STATS_ENTRIES');
  assert.equal(defs.get(abi.MAPS.pktStats), abi.FAMILIES.length * abi.DIRECTIONS.length * abi.VERDICTS.length,
    `${abi.MAPS.pktStats} max_entries = PT_F__COUNT * PT_D__COUNT * PT_V__COUNT: FAMILIES x DIRECTIONS x VERDICTS is ${abi.FAMILIES.length} x ${abi.DIRECTIONS.length} x ${abi.VERDICTS.length}`);
  assert.equal(abi.PKT_STATS_ENTRIES, defs.get(abi.MAPS.pktStats), 'PKT_STATS_ENTRIES');
  assert.equal(defs.get(abi.MAPS.frags6), abi.PT_FRAG_SLOTS, `${abi.MAPS.frags6} max_entries = PT_FRAG_SLOTS`);
  assert.equal(defs.get(abi.MAPS.lanNets6), abi.PT6_LAN_NETS_MAX, `${abi.MAPS.lanNets6} max_entries`);
  assert.equal(defs.get(abi.MAPS.localAddrs6), abi.PT6_LOCAL_ADDRS_MAX, `${abi.MAPS.localAddrs6} max_entries`);
});

test('the IPv6 maps have the key, value and type of the ABI (common.md)', SKIP ? { skip: SKIP } : {}, () => {
  const b = btf();
  const defs = new Map(mapDefs(b).map((d) => [d.name, d]));
  const BPF_MAP_TYPE = { HASH: 1, LRU_HASH: 9, LPM_TRIE: 11 } as const;
  const BPF_F_NO_PREALLOC = 1;
  const want: [string, number, string, string][] = [
    [abi.MAPS.sessions6, BPF_MAP_TYPE.HASH, 'pt6_session_key', 'pt6_session'],
    [abi.MAPS.hostSessions6, BPF_MAP_TYPE.HASH, 'pt6_addr', 'pt_host'],
    [abi.MAPS.flows6, BPF_MAP_TYPE.HASH, 'pt6_flow_key', 'pt6_flow'],
    [abi.MAPS.frags6, BPF_MAP_TYPE.LRU_HASH, 'pt6_frag_key', 'pt6_frag'],
    [abi.MAPS.lanNets6, BPF_MAP_TYPE.LPM_TRIE, 'pt_lpm_v6', '__u8'],
    [abi.MAPS.localAddrs6, BPF_MAP_TYPE.HASH, 'pt6_addr', '__u8'],
  ];
  for (const [name, type, key, value] of want) {
    const d = defs.get(name);
    assert.ok(d, `map ${name} is not in the object`);
    assert.equal(d.fields.get('type'), type, `map ${name}: type`);
    for (const [role, cName] of [['key', key], ['value', value]] as const) {
      const id = d.fields.get(role);
      assert.ok(id !== undefined, `map ${name} has no __type(${role})`);
      assert.ok(b.typeNames(id).includes(cName) || b.resolve(id).name === cName,
        `map ${name}: ${role} is ${b.typeNames(id).join(' -> ')}, expected ${cName}`);
    }
  }
  assert.equal(defs.get(abi.MAPS.lanNets6)!.fields.get('map_flags'), BPF_F_NO_PREALLOC, `${abi.MAPS.lanNets6}: BPF_F_NO_PREALLOC`);
});

test('.data.sweep holds live[PT_MAX_RULES], live6[PT_MAX_RULES] and struct pt_sweep last at the TS offsets', SKIP ? { skip: SKIP } : {}, () => {
  const b = btf();
  const sec = b.types.find((t) => t.kind === BTF_KIND.DATASEC && t.name === abi.SWEEP_SECTION);
  assert.ok(sec, `no ${abi.SWEEP_SECTION} DATASEC in the BTF`);
  assert.equal(sec.vars!.length, 1, `${abi.SWEEP_SECTION} holds one variable`);
  const v = sec.vars![0]!;
  assert.equal(v.offset, 0, `${abi.SWEEP_SECTION}: the variable at offset 0`);
  const st = b.resolve(b.types[v.type]!.sizeOrType);
  assert.equal(st.kind, BTF_KIND.STRUCT, `${abi.SWEEP_SECTION}: a struct`);
  const member = (n: string): BtfMemberRec => {
    const m = st.members.find((x) => x.name === n);
    assert.ok(m, `${abi.SWEEP_SECTION}: no member ${n}`);
    return m;
  };
  const arrOf = (m: BtfMemberRec): number => {
    const a = b.resolve(m.type);
    assert.equal(a.kind, BTF_KIND.ARRAY, `${abi.SWEEP_SECTION}.${m.name} is an array`);
    assert.equal(b.sizeOf(a.array!.type), 4, `${abi.SWEEP_SECTION}.${m.name}: __u32 elements`);
    return a.array!.nelems;
  };
  assert.equal(member('live').offsetBits / 8, abi.SWEEP_LIVE_OFFSET, 'live offset');
  assert.equal(arrOf(member('live')), abi.PT_MAX_RULES, 'live length');
  assert.equal(member('live6').offsetBits / 8, abi.SWEEP_LIVE6_OFFSET, 'live6 offset');
  assert.equal(arrOf(member('live6')), abi.PT_MAX_RULES, 'live6 length');
  assert.equal(member('last').offsetBits / 8, abi.SWEEP_LAST_OFFSET, 'last offset');
  assert.equal(b.resolve(member('last').type).name, 'pt_sweep', 'last is a struct pt_sweep');
});

// --- 4. the header's constants and enums ----------------------------------------------------------

/** `#define NAME expr` of the header, evaluated where they are plain integer arithmetic. */
function headerDefines(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const line of text.split('\n')) {
    const m = /^#define\s+(PT6?_\w+)\s+(.+?)\s*(?:\/\*.*)?$/.exec(line);
    if (!m) continue;
    let expr = m[2]!;
    expr = expr.replace(/\bPT6?_\w+\b/g, (n) => (out.has(n) ? `(${out.get(n)}n)` : n));
    expr = expr.replace(/\b(0x[0-9a-fA-F]+|\d+)(?:ULL|UL|LL|U|L)?\b/g, '$1n');
    if (!/^[\s\dxa-fA-Fn()+\-*<|]+$/.test(expr)) continue;
    out.set(m[1]!, (new Function(`return (${expr});`) as () => bigint)());
  }
  return out;
}

/** Members of `enum name { ... }` in order, with their values. */
function headerEnum(text: string, name: string): [string, number][] {
  const m = new RegExp(`enum\\s+${name}\\s*\\{([^}]*)\\}`).exec(text);
  assert.ok(m, `enum ${name} not found in ${HEADER}`);
  const out: [string, number][] = [];
  let next = 0;
  for (const raw of m[1]!.replace(/\/\*[\s\S]*?\*\//g, '').split(',')) {
    const e = /^\s*(\w+)\s*(?:=\s*(\d+))?\s*$/.exec(raw);
    if (!e) continue;
    const v = e[2] !== undefined ? Number(e[2]) : next;
    out.push([e[1]!, v]);
    next = v + 1;
  }
  return out;
}

test('#defines of porttrig_abi.h equal the TS constants', () => {
  const d = headerDefines(readFileSync(HEADER, 'utf8'));
  const want: [string, bigint | number][] = [
    ['PT_LAYOUT_VERSION', abi.PT_LAYOUT_VERSION], ['PT_MAX_RULES', abi.PT_MAX_RULES],
    ['PT_TRIGGER_SLOTS', abi.PT_TRIGGER_SLOTS], ['PT_CONFIG_LOCAL_ADDRS', abi.CONFIG_LOCAL_ADDRS], ['PT_PORTS_PER_PROTO', abi.PT_PORTS_PER_PROTO],
    ['PT_PORT_SLOTS', abi.PT_PORT_SLOTS], ['PT_PROTO_IDX_TCP', abi.PT_PROTO_IDX.tcp], ['PT_PROTO_IDX_UDP', abi.PT_PROTO_IDX.udp],
    ['PT_NSEC_PER_SEC', abi.NSEC_PER_SEC], ['PT_CLOCK_BIAS_NS', abi.CLOCK_BIAS_NS], ['PT_CLOCK_TICK_MAX_NS', abi.CLOCK_TICK_MAX_NS],
    ['PT_FLOW_TIMEOUT_UDP_NS', abi.FLOW_TIMEOUT_UDP_NS],
    ['PT_FLOW_TIMEOUT_TCP_EST_NS', abi.FLOW_TIMEOUT_TCP_EST_NS], ['PT_FLOW_TIMEOUT_TCP_TRANS_NS', abi.FLOW_TIMEOUT_TCP_TRANS_NS],
    ['PT_FLOW_ORPHAN_NS', abi.FLOW_ORPHAN_NS], ['PT_FRAG_TIMEOUT_NS', abi.FRAG_TIMEOUT_NS], ['PT_FRAG_SLOTS', abi.PT_FRAG_SLOTS],
    ['PT_TC_HANDLE', abi.PT_TC_HANDLE], ['PT_TC_PRIORITY', abi.PT_TC_PRIORITY],
    ['PT_ATTACH_LAN', abi.ATTACH_LAN], ['PT_ATTACH_WAN', abi.ATTACH_WAN], ['PT_ATTACH_CREATED_QDISC', abi.ATTACH_CREATED_QDISC], ['PT_ATTACH_XDP', abi.ATTACH_XDP], ['PT_XDP_TX_MAX', abi.PT_XDP_TX_MAX], ['PT_XDP_TX_BRIDGE', abi.XDP_TX_BRIDGE], ['PT_XDP_TX_SHAPED', abi.XDP_TX_SHAPED], ['PT_XDP_TX_RETRY_NS', abi.XDP_TX_RETRY_NS],
    ['PT_RULE_ENABLED', abi.RULE_ENABLED], ['PT_RULE_PEER_CONTACTED', abi.RULE_PEER_CONTACTED],
    ['PT_RULE_CONFLICT_LAST', abi.RULE_CONFLICT_LAST], ['PT_RULE_KILL_FLOWS', abi.RULE_KILL_FLOWS],
    ['PT_DIR_IN', abi.DIR_IN], ['PT_DIR_OUT', abi.DIR_OUT],
    ['PT_SEEN_SYN', abi.SEEN_SYN], ['PT_SEEN_ACK', abi.SEEN_ACK], ['PT_SEEN_FIN', abi.SEEN_FIN], ['PT_SEEN_RST', abi.SEEN_RST],
    ['PT_SWEEP_SESSIONS', abi.SWEEP_SESSIONS], ['PT_SWEEP_FLOWS', abi.SWEEP_FLOWS], ['PT_SWEEP_RECOUNT', abi.SWEEP_RECOUNT],
    ['PT_SWEEP_SESSIONS6', abi.SWEEP_SESSIONS6], ['PT_SWEEP_FLOWS6', abi.SWEEP_FLOWS6], ['PT_SWEEP_HOST6', abi.SWEEP_HOST6],
    ['PT6_FLOW_CONTACTED', abi.FLOW6_CONTACTED],
  ];
  for (const [name, ts] of want) {
    assert.ok(d.has(name), `${name} not found (or not evaluable) in ${HEADER}`);
    assert.equal(d.get(name), BigInt(ts), `${name}: C ${d.get(name)} != TS ${ts}`);
  }
  // Struct name lengths that the codecs hard-code.
  const nameKind = abi.RuleNameCodec.fields.find((f) => f.name === 'name')!.kind;
  assert.equal(nameKind.t === 'char[]' ? BigInt(nameKind.len) : -1n, d.get('PT_RULE_NAME_LEN'), 'PT_RULE_NAME_LEN');
});

test('enums of porttrig_abi.h equal RULE_COUNTERS, DIRECTIONS, VERDICTS, FAMILIES and XDP_COUNTERS, in order', () => {
  const text = readFileSync(HEADER, 'utf8');
  const check = (name: string, prefix: string, ts: readonly string[]): void => {
    const members = headerEnum(text, name);
    const count = members.find(([n]) => n === `${prefix}_COUNT`);
    assert.ok(count, `enum ${name} has no ${prefix}_COUNT`);
    const real = members.filter(([n]) => n !== `${prefix}_COUNT`);
    real.forEach(([n, v], i) => assert.equal(v, i, `enum ${name}: ${n} = ${v}, expected dense values from 0`));
    assert.deepEqual(real.map(([n]) => n.slice(prefix.length).toLowerCase()), [...ts], `enum ${name} against the TS list`);
    assert.equal(count[1], ts.length, `${prefix}_COUNT`);
  };
  check('pt_rule_counter', 'PT_RC_', abi.RULE_COUNTERS);
  check('pt_direction', 'PT_D_', abi.DIRECTIONS);
  check('pt_verdict', 'PT_V_', abi.VERDICTS);
  check('pt_family', 'PT_F_', abi.FAMILIES);
  check('pt_xdp_counter', 'PT_XDP_', abi.XDP_COUNTERS);
  assert.equal(abi.PT_F_IPV4, abi.FAMILIES.indexOf('ipv4'));
  assert.equal(abi.PT_F_IPV6, abi.FAMILIES.indexOf('ipv6'));
});

// --- 5. the IPv6 field kind and the per-family counter indices -----------------------------------

test('ipv6 fields: text is the canonical form of node:net, bytes are network order, both ways', () => {
  const b = Buffer.alloc(16);
  writeIpv6(b, 0, '2001:db8::1');
  assert.equal(b.toString('hex'), '20010db8000000000000000000000001');
  assert.equal(readIpv6(b, 0), '2001:db8::1');
  const cases: [string, string][] = [
    ['::', '::'], ['::1', '::1'], ['2001:0DB8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
    ['2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'], ['fe80::', 'fe80::'], ['1:0:2:3:4:5:6:7', '1:0:2:3:4:5:6:7'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'], ['::ffff:c000:201', '::ffff:192.0.2.1'], ['::192.0.2.1', '::192.0.2.1'],
    ['::2', '::2'], ['fd00:1:2:3::abcd', 'fd00:1:2:3::abcd'], ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
  ];
  for (const [input, want] of cases) {
    assert.equal(canonicalIpv6(input), want, input);
    assert.equal(canonicalIpv6(input), new SocketAddress({ address: input, family: 'ipv6' }).address, `${input}: as node:net prints it`);
  }
  // Random addresses with runs of zero groups: the same text as node:net's inet_ntop.
  let seed = 12345;
  const rnd = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 16; };
  for (let i = 0; i < 2000; i++) {
    for (let w = 0; w < 8; w++) b.writeUInt16BE(rnd() % 3 === 0 ? 0 : (rnd() % 4 === 0 ? 0xffff : rnd()), 2 * w);
    const text = readIpv6(b, 0);
    assert.ok(isIPv6(text), text);
    assert.equal(text, new SocketAddress({ address: text, family: 'ipv6' }).address, `bytes ${b.toString('hex')}`);
    assert.equal(IPV6.format(text).toString('hex'), b.toString('hex'), `${text} back to bytes`);
  }
  for (const bad of ['', ':', '1::2::3', '12345::', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', 'fe80::1%eth0', '::1.2.3', '::256.1.1.1',
    'g::', '1:2:3:4:5:6:7:8::', '192.0.2.1', '::1.2.3.4:5']) {
    assert.equal(canonicalIpv6(bad), null, `"${bad}" must be refused`);
    assert.throws(() => writeIpv6(Buffer.alloc(16), 0, bad), TypeError, `"${bad}"`);
  }
});

test('IPv6 codecs: a pt6_session_key and a pt6_flow_key go out and back in network order', () => {
  const k = abi.Session6KeyCodec.format({ rule: 7, host: '2001:db8:1::10', peer: '::' });
  assert.equal(k.length, 40);
  assert.equal(k.readUInt32LE(0), 7);
  assert.equal(k.subarray(8, 24).toString('hex'), '20010db8000100000000000000000010');
  assert.equal(k.subarray(24, 40).toString('hex'), '0'.repeat(32));
  assert.deepEqual(abi.Session6KeyCodec.parse(k), { rule: 7, host: '2001:db8:1::10', peer: '::' });
  const f = abi.Flow6KeyCodec.format({ saddr: '2001:db8::5', daddr: 'fd00::1', sport: 0x1234, dport: 80, proto: 6, dir: abi.DIR_IN });
  assert.equal(f.readUInt16BE(32), 0x1234);
  assert.equal(f.readUInt16BE(34), 80);
  assert.equal(f[36], 6);
  assert.equal(f[37], abi.DIR_IN);
  const fk = abi.Frag6KeyCodec.format({ saddr: '::1', daddr: '::2', id: 0x01020304, proto: 17, dir: 2 });
  assert.equal(fk.subarray(32, 36).toString('hex'), '01020304', 'fragment id is network order');
  assert.equal(abi.Frag6KeyCodec.parse(fk).id, 0x01020304);
});

test('per-family counter indices: family 0 keeps the IPv4 indices; IPv6 follows them', () => {
  const rc = abi.RULE_COUNTERS.length;
  assert.equal(abi.ruleStatsIndex(abi.PT_F_IPV4, 5, 2), 5 * rc + 2);
  assert.equal(abi.ruleStatsIndex(abi.PT_F_IPV6, 5, 2), (abi.PT_MAX_RULES + 5) * rc + 2);
  assert.equal(abi.ruleStatsIndex(abi.PT_F_IPV6, abi.PT_MAX_RULES - 1, rc - 1), abi.RULE_STATS_ENTRIES - 1);
  const v = abi.VERDICTS.length;
  assert.equal(abi.pktStatsIndex(abi.PT_F_IPV4, 1, 3), 1 * v + 3);
  assert.equal(abi.pktStatsIndex(abi.PT_F_IPV6, 0, 0), abi.DIRECTIONS.length * v);
  assert.equal(abi.pktStatsIndex(abi.PT_F_IPV6, abi.DIRECTIONS.length - 1, v - 1), abi.PKT_STATS_ENTRIES - 1);
  assert.equal(abi.familyIndex('ipv4'), 0);
  assert.equal(abi.familyIndex('ipv6'), 1);
});
