/**
 * Typed errors of porttrig's core. One class per failure kind, each with a
 * stable `code` that the CLI maps to an exit status and that scripts may match.
 * The core throws these and never prints or exits.
 */

/** Stable error codes. Never rename one; add new ones. */
export type ErrorCode =
  | 'E_CONFIG'        // configuration file invalid (exit 2)
  | 'E_USAGE'         // bad command line or request arguments (exit 2)
  | 'E_NOT_FOUND'     // named rule/session/host does not exist (exit 1)
  | 'E_BPF'           // a libbpf / bpf(2) operation failed (exit 1)
  | 'E_ATTACH'        // attaching or detaching a TC program failed (exit 1)
  | 'E_INTERFACE'     // an interface is missing or has no IPv4 address (exit 1)
  | 'E_LINK_TYPE'     // an interface's link type is one the data path cannot handle (exit 1)
  | 'E_PERMISSION'    // not root / missing capabilities (exit 1)
  | 'E_NO_DAEMON'     // no daemon answers on the control socket (exit 1)
  | 'E_STATE'         // pinned state unusable (layout mismatch, ...) (exit 1)
  | 'E_CONTROL'       // control socket request failed (exit 1)
  | 'E_CONFLICT'      // the session is held by another LAN host (exit 1)
  | 'E_LIMIT'         // sessions_per_host reached or a map is full (exit 1)
  | 'E_BAD_REQUEST'   // control API: body is not valid JSON or too large (exit 1)
  | 'E_NO_ROUTE'      // control API: no such endpoint (exit 1)
  | 'E_METHOD';       // control API: endpoint exists, method does not (exit 1)

export class PorttrigError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PorttrigError';
    this.code = code;
    this.details = details;
  }
  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/** One problem found in a configuration file. */
export interface ConfigIssue {
  /** Field path in the file, e.g. `rules[2].open`. Empty for the whole file. */
  path: string;
  message: string;
  /** 1-based line in the YAML source, when known. */
  line?: number;
}

/** A configuration failed to parse or validate; `issues` lists every problem. */
export class ConfigError extends PorttrigError {
  readonly file: string;
  readonly issues: ConfigIssue[];
  constructor(file: string, issues: ConfigIssue[]) {
    super('E_CONFIG', formatConfigIssues(file, issues), { file, issues });
    this.name = 'ConfigError';
    this.file = file;
    this.issues = issues;
  }
}

export function formatConfigIssues(file: string, issues: ConfigIssue[]): string {
  return issues
    .map((i) => `${file}${i.line !== undefined ? `:${i.line}` : ''}: ${i.path ? `${i.path}: ` : ''}${i.message}`)
    .join('\n');
}

/** A bpf(2) or libbpf call failed. `op` names the operation, `errno` the cause. */
export class BpfError extends PorttrigError {
  readonly errno: number;
  constructor(op: string, errno: number, extra = '') {
    super('E_BPF', `${op}: ${errnoName(errno)}${extra ? ` (${extra})` : ''}`, { op, errno });
    this.name = 'BpfError';
    this.errno = errno;
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM: operation not permitted', 2: 'ENOENT: no such entry', 7: 'E2BIG: too big',
  9: 'EBADF: bad file descriptor', 12: 'ENOMEM: out of memory', 13: 'EACCES: permission denied',
  14: 'EFAULT: bad address', 16: 'EBUSY: resource busy', 17: 'EEXIST: already exists',
  19: 'ENODEV: no such device', 22: 'EINVAL: invalid argument', 28: 'ENOSPC: no space left (map full)',
  95: 'EOPNOTSUPP: operation not supported', 524: 'ENOTSUPP: not supported by the kernel',
};

/** Human name for an errno value, e.g. `ENOENT: no such entry`. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}
