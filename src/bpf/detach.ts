/**
 * `porttrig detach`: remove the programs porttrig attached, the clsact qdiscs
 * it created, and its pinned state. Works without a daemon, from the pins
 * alone. Idempotent: running it twice is fine.
 */
import { existsSync, readdirSync, rmdirSync, statfsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as ffi from '../ffi/libbpf.js';
import { BpfError } from '../errors.js';
import { MAPS, TAIL_CALL_MAPS, XDP_TX_PROGRAMS } from './abi.js';
import { BPF_FS_MAGIC, detachInterface, xdpLinkPin } from './datapath.js';
import { RawMap } from './map.js';

export interface DetachResult { interfaces: number[]; pinsRemoved: number }

/** Detach everything recorded under `pinPath` and remove the pins. */
export function detachAll(pinPath: string): DetachResult {
  const res: DetachResult = { interfaces: [], pinsRemoved: 0 };
  if (!existsSync(pinPath)) return res;
  const attachPin = join(pinPath, MAPS.attach);
  if (existsSync(attachPin)) {
    const fd = ffi.objGet(attachPin);
    if (fd < 0) throw new BpfError(`open ${attachPin}`, -fd);
    try {
      const m = new RawMap({ name: MAPS.attach, fd, keySize: 4, valueSize: 4, maxEntries: 64, perCpu: false });
      for (const [k, v] of m.entries()) {
        const ifindex = k.readUInt32LE();
        detachInterface(ifindex, v.readUInt32LE());
        res.interfaces.push(ifindex);
      }
    } finally {
      ffi.closeFd(fd);
    }
  }
  // The maps, the prog arrays the daemon pinned (TAIL_CALL_MAPS), the XDP
  // path's tracepoint links (`_new`: a pin cut short by a crash).
  const pins = [...TAIL_CALL_MAPS, ...XDP_TX_PROGRAMS.map(xdpLinkPin)];
  for (const name of [...Object.values(MAPS), ...pins.flatMap((n) => [n, `${n}_new`])]) {
    const p = join(pinPath, name);
    if (existsSync(p)) { unlinkSync(p); res.pinsRemoved++; }
  }
  // A bpffs that porttrig mounted on pin_path itself: unmount it.
  if (statfsSync(pinPath).type === BPF_FS_MAGIC && readdirSync(pinPath).every((f) => f.endsWith('.debug'))) {
    if (ffi.umountLazy(pinPath) !== 0) {
      // Not a mount point of its own (a directory inside /sys/fs/bpf): remove it.
      try { rmdirSync(pinPath); } catch { /* not empty: leave it */ }
      return res;
    }
  }
  try { rmdirSync(pinPath); } catch { /* busy or not empty: leave it */ }
  return res;
}
