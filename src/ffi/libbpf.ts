/**
 * Every foreign call porttrig makes, declared in one place: libbpf 1.1
 * (Debian's libbpf1) and the few libc functions around it, through koffi.
 *
 * Conventions of libbpf 1.x: low-level `bpf_*` calls return 0 or -errno;
 * calls that return a pointer return NULL and set errno. The wrappers here are
 * raw; src/bpf/ turns failures into typed errors.
 *
 * Structs passed by pointer are declared with their libbpf 1.1 layout and a
 * leading `sz`, which libbpf uses for forward/backward compatibility: we pass
 * only the fields we know, with `sz` set to their size.
 */
import koffi from 'koffi';

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

/** An opaque libbpf object pointer (struct bpf_object *, struct bpf_map *, ...). */
export type Ptr = unknown;

koffi.opaque('bpf_object');
koffi.opaque('bpf_map');
koffi.opaque('bpf_program');
koffi.opaque('bpf_link');
koffi.opaque('btf');

/** struct bpf_object_open_opts, up to pin_root_path. */
const BpfObjectOpenOpts = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
});

/** struct bpf_tc_hook. */
const BpfTcHook = koffi.struct('bpf_tc_hook', {
  sz: 'size_t',
  ifindex: 'int',
  attach_point: 'int',
  parent: 'uint32_t',
});

/** struct bpf_tc_opts. */
const BpfTcOpts = koffi.struct('bpf_tc_opts', {
  sz: 'size_t',
  prog_fd: 'int',
  flags: 'uint32_t',
  prog_id: 'uint32_t',
  handle: 'uint32_t',
  priority: 'uint32_t',
});

/** struct bpf_map_batch_opts. */
const BpfMapBatchOpts = koffi.struct('bpf_map_batch_opts', {
  sz: 'size_t',
  elem_flags: 'uint64_t',
  flags: 'uint64_t',
});

/** struct bpf_test_run_opts. */
const BpfTestRunOpts = koffi.struct('bpf_test_run_opts', {
  sz: 'size_t',
  data_in: 'void *',
  data_out: 'void *',
  data_size_in: 'uint32_t',
  data_size_out: 'uint32_t',
  ctx_in: 'void *',
  ctx_out: 'void *',
  ctx_size_in: 'uint32_t',
  ctx_size_out: 'uint32_t',
  retval: 'uint32_t',
  repeat: 'int',
  duration: 'uint32_t',
  flags: 'uint32_t',
  cpu: 'uint32_t',
  batch_size: 'uint32_t',
});

/** The head of struct btf_type; members (struct btf_member) follow it. */
const BtfType = koffi.struct('btf_type', { name_off: 'uint32_t', info: 'uint32_t', size: 'uint32_t' });
const BtfMember = koffi.struct('btf_member', { name_off: 'uint32_t', type: 'uint32_t', offset: 'uint32_t' });

const PrintFn = koffi.proto('int libbpf_print_fn_t(int level, const char *fmt, void *args)');

export const BPF_TC_INGRESS = 1;
export const BPF_TC_F_REPLACE = 1;
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BTF_KIND_STRUCT = 4;
export const BTF_KIND_FUNC = 12;
export const BPF_STATS_RUN_TIME = 0;

export interface TcHook { ifindex: number; attach_point: number; parent?: number }
export interface TcOpts { prog_fd?: number; flags?: number; prog_id?: number; handle: number; priority: number }
export interface TestRunOpts {
  data_in: Buffer; data_out: Buffer; data_size_out?: number; ctx_in?: Buffer | null; ctx_out?: Buffer | null;
  repeat?: number;
}
export interface TestRunResult { retval: number; duration: number; data_size_out: number }

const f = {
  libbpf_major_version: lib.func('uint32_t libbpf_major_version(void)'),
  libbpf_minor_version: lib.func('uint32_t libbpf_minor_version(void)'),
  libbpf_num_possible_cpus: lib.func('int libbpf_num_possible_cpus(void)'),
  libbpf_set_print: lib.func('void *libbpf_set_print(libbpf_print_fn_t *fn)'),
  bpf_object__open_file: lib.func('bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  bpf_object__load: lib.func('int bpf_object__load(bpf_object *obj)'),
  bpf_object__close: lib.func('void bpf_object__close(bpf_object *obj)'),
  bpf_object__find_map_by_name: lib.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  bpf_object__find_program_by_name: lib.func('bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)'),
  bpf_map__set_initial_value: lib.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)'),
  bpf_map__set_max_entries: lib.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  bpf_map__max_entries: lib.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
  bpf_map__fd: lib.func('int bpf_map__fd(const bpf_map *map)'),
  bpf_map__key_size: lib.func('uint32_t bpf_map__key_size(const bpf_map *map)'),
  bpf_map__value_size: lib.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
  bpf_map__type: lib.func('int bpf_map__type(const bpf_map *map)'),
  bpf_map__map_flags: lib.func('uint32_t bpf_map__map_flags(const bpf_map *map)'),
  bpf_prog_get_fd_by_id: lib.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
  bpf_program__fd: lib.func('int bpf_program__fd(const bpf_program *prog)'),
  bpf_program__set_autoload: lib.func('int bpf_program__set_autoload(bpf_program *prog, bool autoload)'),
  bpf_program__attach: lib.func('bpf_link *bpf_program__attach(const bpf_program *prog)'),
  bpf_link__pin: lib.func('int bpf_link__pin(bpf_link *link, const char *path)'),
  bpf_link__destroy: lib.func('int bpf_link__destroy(bpf_link *link)'),
  bpf_xdp_attach: lib.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)'),
  bpf_xdp_detach: lib.func('int bpf_xdp_detach(int ifindex, uint32_t flags, const void *opts)'),
  bpf_tc_hook_create: lib.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
  bpf_tc_hook_destroy: lib.func('int bpf_tc_hook_destroy(bpf_tc_hook *hook)'),
  bpf_tc_attach: lib.func('int bpf_tc_attach(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  bpf_tc_detach: lib.func('int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)'),
  bpf_tc_query: lib.func('int bpf_tc_query(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
  bpf_map_lookup_elem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  bpf_map_update_elem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  bpf_map_delete_elem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  bpf_map_lookup_and_delete_elem: lib.func('int bpf_map_lookup_and_delete_elem(int fd, const void *key, void *value)'),
  bpf_map_get_next_key: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
  bpf_map_lookup_batch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, const bpf_map_batch_opts *opts)'),
  bpf_map_update_batch: lib.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, void *count, const bpf_map_batch_opts *opts)'),
  bpf_map_delete_batch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, void *count, const bpf_map_batch_opts *opts)'),
  bpf_obj_get: lib.func('int bpf_obj_get(const char *pathname)'),
  bpf_obj_pin: lib.func('int bpf_obj_pin(int fd, const char *pathname)'),
  bpf_obj_get_info_by_fd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, void *info_len)'),
  bpf_enable_stats: lib.func('int bpf_enable_stats(int type)'),
  bpf_prog_test_run_opts: lib.func('int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)'),
  btf__parse: lib.func('btf *btf__parse(const char *path, void *btf_ext)'),
  btf__parse_split: lib.func('btf *btf__parse_split(const char *path, btf *base_btf)'),
  btf__free: lib.func('void btf__free(btf *btf)'),
  btf__type_cnt: lib.func('uint32_t btf__type_cnt(const btf *btf)'),
  btf__find_by_name_kind: lib.func('int btf__find_by_name_kind(const btf *btf, const char *name, uint32_t kind)'),
  btf__type_by_id: lib.func('const btf_type *btf__type_by_id(const btf *btf, uint32_t id)'),
  btf__name_by_offset: lib.func('const char *btf__name_by_offset(const btf *btf, uint32_t offset)'),
  close: libc.func('int close(int fd)'),
  if_nametoindex: libc.func('unsigned int if_nametoindex(const char *ifname)'),
  mount: libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)'),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  recv: libc.func('long recv(int fd, void *buf, size_t len, int flags)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long request, _Inout_ void *arg)'),
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)'),
};

/** Number of possible CPUs: per-CPU map values hold one slot for each. */
export const numPossibleCpus = (): number => f.libbpf_num_possible_cpus();

/** errno of the last foreign call on this thread. */
export function lastErrno(): number {
  return koffi.errno();
}

/** libbpf's version, e.g. "1.1". */
export function libbpfVersion(): string {
  return `${f.libbpf_major_version()}.${f.libbpf_minor_version()}`;
}

let printCallback: unknown = null;
/** Longest libbpf message kept whole (a verifier log of a failed load). */
const LIBBPF_MSG_MAX = 1 << 20;
/**
 * Route libbpf's own messages to `sink` (level 0 warn, 1 info, 2 debug),
 * formatted through vsnprintf. x86-64 and arm64 pass va_list as a pointer-sized
 * handle, which is what the callback receives. One message can be a whole
 * verifier log (libbpf prints it with one "%s"), hence the large buffer: a
 * va_list cannot be formatted twice, so there is no second try with more.
 */
export function setLibbpfPrint(sink: (level: number, msg: string) => void): void {
  const buf = Buffer.alloc(LIBBPF_MSG_MAX);
  const fn = (level: number, fmt: string, args: unknown): number => {
    const n = f.vsnprintf(buf, buf.length, fmt, args) as number;
    sink(level, buf.subarray(0, Math.max(0, Math.min(n, buf.length - 1))).toString('utf8'));
    return 0;
  };
  const registered = koffi.register(fn, koffi.pointer(PrintFn));
  f.libbpf_set_print(registered);
  if (printCallback) koffi.unregister(printCallback as never);
  printCallback = registered;
}

/** bpf_object__open_file(). Returns null and leaves errno on failure. */
export function objectOpen(path: string, pinRootPath: string | null): Ptr | null {
  const opts = { sz: koffi.sizeof(BpfObjectOpenOpts), object_name: null, relaxed_maps: false, pin_root_path: pinRootPath };
  return f.bpf_object__open_file(path, opts);
}
export const objectLoad = (obj: Ptr): number => f.bpf_object__load(obj);
export const objectClose = (obj: Ptr): void => f.bpf_object__close(obj);
export const objectFindMap = (obj: Ptr, name: string): Ptr | null => f.bpf_object__find_map_by_name(obj, name);
export const objectFindProgram = (obj: Ptr, name: string): Ptr | null => f.bpf_object__find_program_by_name(obj, name);
export const mapSetMaxEntries = (map: Ptr, n: number): number => f.bpf_map__set_max_entries(map, n);
/** bpf_map__set_initial_value(): the contents of a global-data map (.rodata*, .data*) before load. */
export const mapSetInitialValue = (map: Ptr, data: Buffer): number => f.bpf_map__set_initial_value(map, data, data.length);
export const mapMaxEntries = (map: Ptr): number => f.bpf_map__max_entries(map);
export const mapFd = (map: Ptr): number => f.bpf_map__fd(map);
export const mapKeySize = (map: Ptr): number => f.bpf_map__key_size(map);
export const mapValueSize = (map: Ptr): number => f.bpf_map__value_size(map);
export const mapType = (map: Ptr): number => f.bpf_map__type(map);
export const mapFlags = (map: Ptr): number => f.bpf_map__map_flags(map);
export const programFd = (prog: Ptr): number => f.bpf_program__fd(prog);
/** bpf_program__set_autoload(): whether bpf_object__load() loads this program; 0 or -errno. */
export const programSetAutoload = (prog: Ptr, autoload: boolean): number => f.bpf_program__set_autoload(prog, autoload);

/** XDP attach flags (linux/if_link.h). */
export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
export const XDP_FLAGS_DRV_MODE = 1 << 2;
/** bpf_xdp_attach(): attach `progFd` as `ifindex`'s XDP program (netlink, stays after the process); 0 or -errno. */
export const xdpAttach = (ifindex: number, progFd: number, flags: number): number => f.bpf_xdp_attach(ifindex, progFd, flags, null);
/** bpf_xdp_detach(): remove `ifindex`'s XDP program of the mode in `flags`; 0 or -errno. */
export const xdpDetach = (ifindex: number, flags: number): number => f.bpf_xdp_detach(ifindex, flags, null);

/**
 * bpf_program__attach() then bpf_link__pin() at `path`: the program attached
 * (for a tp_btf program: to its tracepoint) for as long as the pin exists. The
 * process's own reference is dropped before it returns. 0 or -errno.
 */
export function attachPinned(prog: Ptr, path: string): number {
  const link = f.bpf_program__attach(prog) as Ptr | null;
  if (!link) return -lastErrno();
  const r = f.bpf_link__pin(link, path) as number;
  f.bpf_link__destroy(link);
  return r;
}

/** The name of the loaded program `id` (the kernel keeps 15 bytes), or null when there is none. */
export function progNameById(id: number): string | null {
  const fd = f.bpf_prog_get_fd_by_id(id) as number;
  if (fd < 0) return null;
  try {
    const info = Buffer.alloc(BPF_PROG_INFO_LEN);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(info.length);
    if (f.bpf_obj_get_info_by_fd(fd, info, len) < 0) return null;
    const name = info.subarray(BPF_PROG_INFO_NAME_OFF, BPF_PROG_INFO_NAME_OFF + 16);
    const end = name.indexOf(0);
    return name.toString('latin1', 0, end < 0 ? 16 : end);
  } finally {
    f.close(fd);
  }
}
/** struct bpf_prog_info: its size up to and including name[16], and name's offset (linux/bpf.h). */
const BPF_PROG_INFO_NAME_OFF = 64;
const BPF_PROG_INFO_LEN = 80;

/** bpf_prog_get_fd_by_id(): a new fd for a loaded program, or -errno. */
export const progGetFdById = (id: number): number => f.bpf_prog_get_fd_by_id(id);

function tcHook(h: TcHook): Record<string, number> {
  return { sz: koffi.sizeof(BpfTcHook), ifindex: h.ifindex, attach_point: h.attach_point, parent: h.parent ?? 0 };
}
function tcOpts(o: TcOpts): Record<string, number> {
  return { sz: koffi.sizeof(BpfTcOpts), prog_fd: o.prog_fd ?? 0, flags: o.flags ?? 0, prog_id: o.prog_id ?? 0, handle: o.handle, priority: o.priority };
}
export const tcHookCreate = (h: TcHook): number => f.bpf_tc_hook_create(tcHook(h));
export const tcHookDestroy = (h: TcHook): number => f.bpf_tc_hook_destroy(tcHook(h));
export function tcAttach(h: TcHook, o: TcOpts): { ret: number; progId: number } {
  const opts = tcOpts(o);
  const ret = f.bpf_tc_attach(tcHook(h), opts) as number;
  return { ret, progId: opts.prog_id ?? 0 };
}
export const tcDetach = (h: TcHook, o: TcOpts): number => f.bpf_tc_detach(tcHook(h), tcOpts({ handle: o.handle, priority: o.priority }));
/** bpf_tc_query(): the id of the program at (handle, priority), or -errno. */
export function tcQuery(h: TcHook, o: TcOpts): { ret: number; progId: number } {
  const opts = tcOpts({ handle: o.handle, priority: o.priority });
  const ret = f.bpf_tc_query(tcHook(h), opts) as number;
  return { ret, progId: opts.prog_id ?? 0 };
}

export const mapLookup = (fd: number, key: Buffer, value: Buffer): number => f.bpf_map_lookup_elem(fd, key, value);
export const mapUpdate = (fd: number, key: Buffer, value: Buffer, flags: number): number => f.bpf_map_update_elem(fd, key, value, flags);
export const mapDelete = (fd: number, key: Buffer): number => f.bpf_map_delete_elem(fd, key);
export const mapLookupAndDelete = (fd: number, key: Buffer, value: Buffer): number => f.bpf_map_lookup_and_delete_elem(fd, key, value);
export const mapNextKey = (fd: number, key: Buffer | null, next: Buffer): number => f.bpf_map_get_next_key(fd, key, next);

function batchOpts(): Record<string, number> {
  return { sz: koffi.sizeof(BpfMapBatchOpts), elem_flags: 0, flags: 0 };
}
/** bpf_map_lookup_batch(); `count` (4 bytes) is in/out. */
export const mapLookupBatch = (fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: Buffer): number =>
  f.bpf_map_lookup_batch(fd, inBatch, outBatch, keys, values, count, batchOpts());
export const mapUpdateBatch = (fd: number, keys: Buffer, values: Buffer, count: Buffer): number =>
  f.bpf_map_update_batch(fd, keys, values, count, batchOpts());
export const mapDeleteBatch = (fd: number, keys: Buffer, count: Buffer): number =>
  f.bpf_map_delete_batch(fd, keys, count, batchOpts());

export const objGet = (path: string): number => f.bpf_obj_get(path);
export const objPin = (fd: number, path: string): number => f.bpf_obj_pin(fd, path);
export const objGetInfo = (fd: number, info: Buffer, len: Buffer): number => f.bpf_obj_get_info_by_fd(fd, info, len);
export const enableStats = (type: number): number => f.bpf_enable_stats(type);
export const closeFd = (fd: number): number => f.close(fd);
/** mount(2) of a filesystem without options; 0 or -1 with errno. */
export const mount = (source: string, target: string, fstype: string): number => f.mount(source, target, fstype, 0, null);
/** umount2(2) with MNT_DETACH (2); 0 or -1 with errno. */
export const umountLazy = (target: string): number => f.umount2(target, 2);
/**
 * setns(2) into the network namespace open at `fd` (CLONE_NEWNET), for the
 * calling thread only: node's main thread, which makes every other call
 * here (BPF_PROG_TEST_RUN runs in its namespace). 0 or -1 with errno.
 */
export const setNetns = (fd: number): number => f.setns(fd, 0x40000000);
const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;
const POLLIN = 1;
const MSG_DONTWAIT = 0x40;
/** RTMGRP_IPV4_IFADDR: IPv4 address added or removed (RTM_NEWADDR/RTM_DELADDR). */
export const RTMGRP_IPV4_IFADDR = 0x10;
/** RTMGRP_IPV6_IFADDR: IPv6 address added or removed (RTM_NEWADDR/RTM_DELADDR). */
export const RTMGRP_IPV6_IFADDR = 0x100;
/** RTMGRP_LINK: interface created, changed or removed (RTM_NEWLINK/RTM_DELLINK). */
export const RTMGRP_LINK = 0x1;

/**
 * A non-blocking rtnetlink socket subscribed to multicast `groups`, or -errno.
 * Bound with nl_pid 0 (the kernel picks a port id).
 */
export function netlinkOpen(groups: number): number {
  const fd = f.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
  if (fd < 0) return -koffi.errno();
  // struct sockaddr_nl { u16 nl_family; u16 nl_pad; u32 nl_pid; u32 nl_groups; }
  const sa = Buffer.alloc(12);
  sa.writeUInt16LE(AF_NETLINK, 0);
  sa.writeUInt32LE(groups, 8);
  if ((f.bind(fd, sa, sa.length) as number) < 0) {
    const errno = koffi.errno();
    f.close(fd);
    return -errno;
  }
  return fd;
}

/**
 * Wait up to `timeoutMs` on a worker thread (koffi async) until `fd` is
 * readable; `done` gets true when it is. Keeps the event loop free meanwhile.
 */
export function pollReadableAsync(fd: number, timeoutMs: number, done: (err: unknown, readable: boolean) => void): void {
  // struct pollfd { int fd; short events; short revents; }
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  f.poll.async(pfd, 1, timeoutMs, (err: unknown, n: number) => done(err, !err && n > 0 && (pfd.readInt16LE(6) & POLLIN) !== 0));
}

/** Read and discard everything queued on a non-blocking socket; the number of messages. */
export function drainSocket(fd: number, buf: Buffer = Buffer.alloc(8192)): number {
  let n = 0;
  while ((f.recv(fd, buf, buf.length, MSG_DONTWAIT) as number) >= 0) n++;
  return n;
}

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SIOCGIFHWADDR = 0x8927;
/** struct ifreq: ifr_name[IFNAMSIZ] then a union; ifr_hwaddr.sa_family at 16. */
const IFREQ_SIZE = 40;
const IFNAMSIZ = 16;

/**
 * The link type (ARPHRD_*, `dev->type`) of interface `name` in this network
 * namespace, or -errno (-ENODEV when there is no such interface): ioctl
 * SIOCGIFHWADDR on an AF_INET socket, which reports the device type as
 * ifr_hwaddr.sa_family. Needs no privilege.
 */
export function linkType(name: string): number {
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length >= IFNAMSIZ) return -19;
  const fd = f.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) return -koffi.errno();
  try {
    const ifr = Buffer.alloc(IFREQ_SIZE);
    nameBytes.copy(ifr, 0);
    if ((f.ioctl(fd, SIOCGIFHWADDR, ifr) as number) < 0) return -koffi.errno();
    return ifr.readUInt16LE(IFNAMSIZ);
  } finally {
    f.close(fd);
  }
}

/** if_nametoindex(3): 0 when there is no such interface. */
export const ifNameToIndex = (name: string): number => f.if_nametoindex(name);

/** BPF_PROG_TEST_RUN through bpf_prog_test_run_opts(). */
export function progTestRun(progFd: number, o: TestRunOpts): TestRunResult & { ret: number } {
  const opts = {
    sz: koffi.sizeof(BpfTestRunOpts),
    data_in: o.data_in, data_out: o.data_out,
    data_size_in: o.data_in.length, data_size_out: o.data_size_out ?? o.data_out.length,
    ctx_in: o.ctx_in ?? null, ctx_out: o.ctx_out ?? null,
    ctx_size_in: o.ctx_in?.length ?? 0, ctx_size_out: o.ctx_out?.length ?? 0,
    retval: 0, repeat: o.repeat ?? 1, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
  const ret = f.bpf_prog_test_run_opts(progFd, opts) as number;
  return { ret, retval: opts.retval, duration: opts.duration, data_size_out: opts.data_size_out };
}

function syscallRunOpts(ctx: Buffer): Record<string, unknown> {
  return {
    sz: koffi.sizeof(BpfTestRunOpts), data_in: null, data_out: null, data_size_in: 0, data_size_out: 0,
    // A syscall program's context is copied back into ctx_in; ctx_out must be NULL.
    ctx_in: ctx, ctx_out: null, ctx_size_in: ctx.length, ctx_size_out: 0,
    retval: 0, repeat: 0, duration: 0, flags: 0, cpu: 0, batch_size: 0,
  };
}

/**
 * BPF_PROG_TEST_RUN of a SEC("syscall") program with `ctx` as its context,
 * in and out (the kernel copies it in, runs the program once in this thread,
 * and copies it back into `ctx`). Returns 0 or -errno. Blocks the caller for
 * the program's run.
 */
export const progRunSyscall = (progFd: number, ctx: Buffer): number => f.bpf_prog_test_run_opts(progFd, syscallRunOpts(ctx));

/**
 * progRunSyscall() on a libuv worker thread (koffi async): the event loop
 * goes on while the program runs. `done` gets 0 or -errno; `ctx` holds the
 * program's context as it left it. The caller keeps `ctx` alive meanwhile
 * (it is captured by the callback here).
 */
export function progRunSyscallAsync(progFd: number, ctx: Buffer, done: (err: unknown, ret: number) => void): void {
  f.bpf_prog_test_run_opts.async(progFd, syscallRunOpts(ctx), (err: unknown, ret: number) => { void ctx; done(err, ret); });
}

/** A struct's size and members from a BTF file (for the ABI layout test). */
export interface BtfStruct { size: number; members: { name: string; offsetBits: number }[] }
/** Read struct `name` from the BTF of an ELF object; null if it is absent. */
export function btfStruct(elfPath: string, name: string): BtfStruct | null {
  const btf = f.btf__parse(elfPath, null);
  if (!btf) return null;
  try {
    const id = f.btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT) as number;
    if (id < 0) return null;
    const tp = f.btf__type_by_id(btf, id);
    const t = koffi.decode(tp, BtfType) as { name_off: number; info: number; size: number };
    const vlen = t.info & 0xffff;
    const kflag = (t.info >>> 31) & 1;
    const members = (vlen ? koffi.decode(tp, koffi.sizeof(BtfType), BtfMember, vlen) : []) as { name_off: number; offset: number }[];
    return {
      size: t.size,
      members: members.map((m) => ({
        name: f.btf__name_by_offset(btf, m.name_off) as string,
        offsetBits: kflag ? m.offset & 0xffffff : m.offset,
      })),
    };
  } finally {
    f.btf__free(btf);
  }
}

/**
 * Does the BTF at `path` define a FUNC named `name`? The file is raw BTF (as
 * /sys/kernel/btf/*) or an ELF object's .BTF. With `basePath`, it is split
 * BTF on top of that base (a module's BTF on vmlinux's), and only its own
 * types count. Returns 1 found, 0 not found, -errno when a file cannot be
 * parsed.
 */
export function btfHasFunc(path: string, name: string, basePath: string | null = null): number {
  const base = basePath === null ? null : f.btf__parse(basePath, null);
  if (basePath !== null && !base) return -koffi.errno();
  try {
    const btf = base ? f.btf__parse_split(path, base) : f.btf__parse(path, null);
    if (!btf) return -koffi.errno();
    try {
      const id = f.btf__find_by_name_kind(btf, name, BTF_KIND_FUNC) as number;
      if (id < 0) return 0;
      // A split BTF's search also finds the base's types (ids below its first own one).
      return base && id <= (f.btf__type_cnt(base) as number) - 1 ? 0 : 1;
    } finally {
      f.btf__free(btf);
    }
  } finally {
    if (base) f.btf__free(base);
  }
}

// --- control socket peers, capabilities probes (doctor) ----------------------

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
/** struct ucred: pid_t pid, uid_t uid, gid_t gid. */
const UCRED_SIZE = 12;
const getsockoptFn = libc.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)');

/** Who is on the other end of a connected Unix socket (SO_PEERCRED), or null with errno. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } | null {
  const cred = Buffer.alloc(UCRED_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(UCRED_SIZE);
  if (getsockoptFn(fd, SOL_SOCKET, SO_PEERCRED, cred, len) !== 0) return null;
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
}

export const BPF_MAP_TYPE_ARRAY = 2;
export const BPF_PROG_TYPE_SCHED_CLS = 3;
/** enum bpf_func_id values of the helpers the data path calls that came late. */
export const BPF_FUNC_SK_LOOKUP_TCP = 84;
export const BPF_FUNC_REDIRECT_NEIGH = 152;
/** enum bpf_attach_type BPF_TCX_INGRESS (kernel 6.6); newer than Debian 12's headers. */
export const BPF_TCX_INGRESS = 46;

const probeFns = {
  bpf_map_create: lib.func('int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)'),
  libbpf_probe_bpf_prog_type: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  libbpf_probe_bpf_helper: lib.func('int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts)'),
  bpf_prog_query: lib.func('int bpf_prog_query(int target_fd, int type, uint32_t query_flags, void *attach_flags, void *prog_ids, void *prog_cnt)'),
  bpf_xdp_query_id: lib.func('int bpf_xdp_query_id(int ifindex, int flags, void *prog_id)'),
};

/** bpf_map_create() of a one-entry array: the fd, or -errno. The caller closes the fd. */
export const mapCreateProbe = (): number => probeFns.bpf_map_create(BPF_MAP_TYPE_ARRAY, null, 4, 4, 1, null);
/** libbpf_probe_bpf_prog_type(): 1 supported, 0 not, -errno when it cannot tell. */
export const probeProgType = (type: number): number => probeFns.libbpf_probe_bpf_prog_type(type, null);
/** libbpf_probe_bpf_helper(): 1 supported, 0 not, -errno when it cannot tell. */
export const probeHelper = (progType: number, helper: number): number => probeFns.libbpf_probe_bpf_helper(progType, helper, null);

/**
 * bpf_prog_query() for an attach point: the ids of the attached programs, or
 * -errno (EINVAL when the kernel does not know the attach type).
 */
export function progQuery(targetFd: number, attachType: number, maxIds = 64): number[] | number {
  const flags = Buffer.alloc(4);
  const ids = Buffer.alloc(4 * maxIds);
  const cnt = Buffer.alloc(4);
  cnt.writeUInt32LE(maxIds);
  const r = probeFns.bpf_prog_query(targetFd, attachType, 0, flags, ids, cnt) as number;
  if (r < 0) return r;
  return Array.from({ length: cnt.readUInt32LE() }, (_, i) => ids.readUInt32LE(4 * i));
}

/** bpf_xdp_query_id(): the id of the XDP program on `ifindex` (0: none), or -errno. */
export function xdpProgId(ifindex: number): number {
  const id = Buffer.alloc(4);
  const r = probeFns.bpf_xdp_query_id(ifindex, 0, id) as number;
  return r < 0 ? r : id.readUInt32LE();
}

/** Does this libbpf export `symbol`? (e.g. bpf_program__attach_tcx, libbpf >= 1.3) */
export function libbpfHas(symbol: string): boolean {
  try {
    lib.func(`void ${symbol}(void)`);
    return true;
  } catch {
    return false;
  }
}
