/**
 * A throw-away data path for tests: a fresh bpffs mounted on a unique temp dir
 * (/tmp/porttrig-test-XXXXXX/pin), the object loaded with small limits and its
 * maps pinned there, and a cleanup that closes the object, unmounts the bpffs
 * (lazily) and removes the dir. Never touches /sys/fs/bpf.
 *
 * Use `useDatapath(t)` inside a node:test test (cleanup registered with
 * t.after, so it runs when the test fails too), or `withDatapath(fn)`
 * (try/finally) anywhere else.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Datapath } from '../../src/bpf/datapath.js';
import * as ffi from '../../src/ffi/libbpf.js';
import { PorttrigState } from '../../src/core/state.js';

const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * The repository root: the nearest directory above this file whose
 * package.json is porttrig's (works from test/helpers and dist/test/helpers).
 */
export const REPO_ROOT: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'porttrig') return dir;
      } catch { /* keep looking */ }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`no porttrig package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
})();

/**
 * The compiled data path object (`make build`). PORTTRIG_TEST_BPF_OBJECT points
 * the tests at another build (e.g. a deliberately broken one, to see them fail).
 */
export const BPF_OBJECT = process.env.PORTTRIG_TEST_BPF_OBJECT || join(REPO_ROOT, 'build/porttrig.bpf.o');

/** Why BPF tests cannot run here, or null when they can. */
export function bpfSkipReason(): string | null {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root (BPF_PROG_TEST_RUN, bpffs mount)';
  if (!existsSync(BPF_OBJECT)) return `${BPF_OBJECT} missing: run "make build"`;
  return null;
}

export interface TestDatapathOptions {
  /** Map capacities; small by default. */
  limits?: { sessions: number; flows: number };
  /** The object to load; BPF_OBJECT by default (`make bench --compare` loads two). */
  objectPath?: string;
  /** Simulated time: the data path reads the clock that dp.setTestClock() sets (PT_OPT_TEST_CLOCK). */
  testClock?: boolean;
  /** Load the XDP fast path's programs too (datapath.xdp). */
  xdp?: boolean;
}

export interface TestDatapath {
  dp: Datapath;
  state: PorttrigState;
  /** The unique temp dir, and the bpffs mounted on `<dir>/pin`. */
  dir: string;
  pinPath: string;
  /** Close, unmount, remove. Idempotent; never throws. */
  cleanup(): void;
}

/** Every fixture not cleaned up yet: a last resort if the process exits early. */
const live = new Set<TestDatapath>();
let exitHook = false;

function unmount(path: string): void {
  if (ffi.umountLazy(path) === 0) return;
  const errno = ffi.lastErrno();
  // EINVAL: not a mount point (already gone); ENOENT: no such path.
  if (errno !== 22 && errno !== 2) throw new Error(`umount -l ${path}: errno ${errno}`);
}

/** Mount a fresh bpffs on a new temp dir and load the data path there. */
export function makeTestDatapath(opts: TestDatapathOptions = {}): TestDatapath {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-test-'));
  const pinPath = join(dir, 'pin');
  if (resolve(pinPath).startsWith('/sys/fs/bpf')) throw new Error(`refusing to pin under ${pinPath}`);
  let mounted = false;
  let dp: Datapath | null = null;
  let done = false;
  const fixture: TestDatapath = {
    dp: null as unknown as Datapath,
    state: null as unknown as PorttrigState,
    dir,
    pinPath,
    cleanup(): void {
      if (done) return;
      done = true;
      live.delete(fixture);
      const errors: string[] = [];
      try { dp?.close(); } catch (e) { errors.push(`close: ${String(e)}`); }
      if (mounted) {
        try { unmount(pinPath); } catch (e) { errors.push(String(e)); }
      }
      try { rmSync(dir, { recursive: true, force: true }); } catch (e) { errors.push(`rm ${dir}: ${String(e)}`); }
      if (errors.length) process.stderr.write(`porttrig test cleanup: ${errors.join('; ')}\n`);
    },
  };
  try {
    mkdirSync(pinPath, { mode: 0o700 });
    if (ffi.mount('bpf', pinPath, 'bpf') !== 0) throw new Error(`mount bpffs on ${pinPath}: errno ${ffi.lastErrno()}`);
    mounted = true;
    if (statfsSync(pinPath).type !== BPF_FS_MAGIC) throw new Error(`${pinPath} is not a bpffs after mount`);
    const libbpfLog: string[] = [];
    try {
      dp = Datapath.load({
        objectPath: opts.objectPath ?? BPF_OBJECT,
        pinPath,
        limits: opts.limits ?? { sessions: 64, flows: 64 },
        ...(opts.testClock ? { testClock: true } : {}),
        ...(opts.xdp ? { xdp: true } : {}),
        onLibbpfLog: (level, msg) => { if (level === 0) libbpfLog.push(msg); },
      });
    } catch (e) {
      throw new Error(`Datapath.load failed: ${String(e)}\n${libbpfLog.join('')}`, { cause: e });
    }
    fixture.dp = dp;
    fixture.state = new PorttrigState(dp.maps, undefined, dp);
  } catch (e) {
    fixture.cleanup();
    throw e;
  }
  live.add(fixture);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => { for (const f of [...live]) f.cleanup(); });
  }
  return fixture;
}

/** A test datapath whose cleanup runs after the test `t`, pass or fail. */
export function useDatapath(t: { after: (fn: () => void) => void }, opts: TestDatapathOptions = {}): TestDatapath {
  const f = makeTestDatapath(opts);
  t.after(() => f.cleanup());
  return f;
}

/** TC verdicts as runProg() returns them (unsigned: TC_ACT_UNSPEC is -1). */
export const TC_ACT_UNSPEC = 0xffffffff;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

/** BPF_PROG_TEST_RUN of one of the data path's TC programs on `input`: its verdict (unsigned) and the packet as the program left it. */
export function runProg(f: TestDatapath, prog: 'lan' | 'wan', input: Buffer): { retval: number; out: Buffer } {
  const out = Buffer.alloc(input.length + 512);
  const r = ffi.progTestRun(f.dp.programFd(prog), { data_in: input, data_out: out });
  if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN of ${prog} failed: ${r.ret}`);
  return { retval: r.retval >>> 0, out: out.subarray(0, r.data_size_out) };
}

/** XDP verdicts (enum xdp_action) as runXdp() returns them. */
export const XDP_PASS = 2;
export const XDP_REDIRECT = 4;

/** BPF_PROG_TEST_RUN of the XDP fast path (pt_wan_xdp; loaded with `xdp`) on the frame `input`. */
export function runXdp(f: TestDatapath, input: Buffer): { retval: number; out: Buffer } {
  const out = Buffer.alloc(input.length + 512);
  const r = ffi.progTestRun(f.dp.xdpProgramFd(), { data_in: input, data_out: out });
  if (r.ret !== 0) throw new Error(`BPF_PROG_TEST_RUN of pt_wan_xdp failed: ${r.ret}`);
  return { retval: r.retval >>> 0, out: out.subarray(0, r.data_size_out) };
}

/** Run `fn` with a fresh test datapath, cleaning up whatever happens. */
export async function withDatapath<T>(fn: (f: TestDatapath) => T | Promise<T>, opts: TestDatapathOptions = {}): Promise<T> {
  const f = makeTestDatapath(opts);
  try {
    return await fn(f);
  } finally {
    f.cleanup();
  }
}
