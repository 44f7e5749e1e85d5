/**
 * The control API: HTTP + JSON on a Unix socket (mode 0600, root only).
 *
 *   GET  /v1/status     GET /v1/sessions     GET /v1/flows     GET /v1/rules
 *        /v1/sessions and /v1/flows take ?rule=NAME&host=ADDR&peer=ADDR&family=ipv4|ipv6&limit=N
 *        and stream a JSON array, one element per line
 *   POST /v1/reload
 *   POST /v1/sessions/open   {"rule", "host", "peer"?, "force"?}
 *   POST /v1/sessions/close  {"rule", "host", "peer"?}
 *
 * Errors answer {"error": {"code", "message", "details"}} with a 4xx/5xx status:
 * 400 E_BAD_REQUEST (body not JSON) or E_USAGE (bad fields), 403 E_PERMISSION
 * (caller is not root), 404 E_NO_ROUTE / E_NOT_FOUND, 405 E_METHOD (with
 * Allow), 409 E_CONFLICT / E_LIMIT, 413 E_BAD_REQUEST (body too large).
 *
 * Two locks on the door: the socket file is 0600 in a 0700 directory, and
 * every connection's peer is checked with SO_PEERCRED, so a socket whose mode
 * was loosened (or a directory shared with others) still answers only root
 * and the daemon's own user.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { connect, type Socket } from 'node:net';
import { z } from 'zod';
import { PorttrigError, type ErrorCode } from '../errors.js';
import { peerCredentials } from '../ffi/libbpf.js';
import type { CloseRequest, OpenRequest } from '../core/state.js';
import type { ListFilter } from '../core/listing.js';
import type { Logger } from './log.js';

/** What the control server asks of the daemon. */
export interface ControlTarget {
  status(): unknown;
  /** Rows to stream (or an array). */
  sessions(filter: ListFilter): AsyncIterable<unknown> | unknown[];
  flows(filter: ListFilter): AsyncIterable<unknown> | unknown[];
  rules(): unknown;
  reload(): unknown;
  openSession(req: OpenRequest): unknown;
  closeSession(req: CloseRequest): unknown;
}

/** Requests are a few hundred bytes; anything near this is not ours. */
export const MAX_BODY_BYTES = 64 * 1024;
const SOCKET_MODE = 0o600;
const SOCKET_DIR_MODE = 0o700;
const ROOT_UID = 0;

const HTTP = { ok: 200, badRequest: 400, forbidden: 403, notFound: 404, method: 405, conflict: 409, tooLarge: 413, internal: 500 } as const;
const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  E_CONFIG: HTTP.badRequest, E_USAGE: HTTP.badRequest, E_BAD_REQUEST: HTTP.badRequest,
  E_PERMISSION: HTTP.forbidden, E_NOT_FOUND: HTTP.notFound, E_NO_ROUTE: HTTP.notFound,
  E_METHOD: HTTP.method, E_CONFLICT: HTTP.conflict, E_LIMIT: HTTP.conflict,
};

const addressField = z.string().min(1);
const OpenBody = z.object({ rule: z.string().min(1), host: addressField, peer: addressField.nullable().optional(), force: z.boolean().optional() }).strict();
const CloseBody = z.object({ rule: z.string().min(1), host: addressField, peer: addressField.nullable().optional() }).strict();

/** A request body against its schema; E_USAGE naming every bad field. */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
  throw new PorttrigError('E_USAGE', `bad request body: ${issues.join('; ')}`, { issues });
}

type Handler = (body: unknown, query: URLSearchParams) => unknown;

const LIST_PARAMS = new Set(['rule', 'host', 'peer', 'family', 'limit']);

/** The listing filter of a query string; E_USAGE for unknown parameters or a bad limit. */
export function listFilter(q: URLSearchParams): ListFilter {
  const f: ListFilter = {};
  for (const [k, v] of q) {
    if (!LIST_PARAMS.has(k)) throw new PorttrigError('E_USAGE', `unknown query parameter "${k}" (known: ${[...LIST_PARAMS].join(', ')})`, { parameter: k });
    if (k === 'limit') {
      if (!/^[1-9]\d*$/.test(v)) throw new PorttrigError('E_USAGE', `limit must be a positive integer, not "${v}"`, { limit: v });
      f.limit = Number(v);
    } else if (k === 'family') {
      if (v !== 'ipv4' && v !== 'ipv6') throw new PorttrigError('E_USAGE', `family must be ipv4 or ipv6, not "${v}"`, { family: v });
      f.family = v;
    } else {
      f[k as 'rule' | 'host' | 'peer'] = v;
    }
  }
  return f;
}

const isAsyncIterable = (x: unknown): x is AsyncIterable<unknown> =>
  typeof x === 'object' && x !== null && Symbol.asyncIterator in x;

/** Does something answer on `path` already? */
export function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/** The file descriptor of a connected socket (libuv's pipe handle keeps it). */
function socketFd(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

function errorBody(code: ErrorCode, message: string, details: Record<string, unknown> = {}): { error: { code: ErrorCode; message: string; details: Record<string, unknown> } } {
  return { error: { code, message, details } };
}

export class ControlServer {
  private constructor(private readonly server: Server, readonly path: string) {}

  /**
   * Listen on `path`, replacing a stale socket file but never a live daemon's.
   * Callers other than root and the daemon's own uid are refused (403).
   * No request, however malformed, throws out of the server.
   */
  static async listen(path: string, target: ControlTarget, log: Logger): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: SOCKET_DIR_MODE });
    if (existsSync(path)) {
      if (await socketAlive(path)) {
        throw new PorttrigError('E_STATE', `another porttrig daemon already answers on ${path}`, { socket: path });
      }
      unlinkSync(path);
    }
    const routes: Record<string, Record<string, Handler>> = {
      '/v1/status': { GET: () => target.status() },
      '/v1/sessions': { GET: (_b, q) => target.sessions(listFilter(q)) },
      '/v1/flows': { GET: (_b, q) => target.flows(listFilter(q)) },
      '/v1/rules': { GET: () => target.rules() },
      '/v1/reload': { POST: () => target.reload() },
      '/v1/sessions/open': { POST: (b) => target.openSession(parseBody(OpenBody, b)) },
      '/v1/sessions/close': { POST: (b) => target.closeSession(parseBody(CloseBody, b)) },
    };
    const allowed = new Set([ROOT_UID, process.geteuid?.() ?? ROOT_UID]);
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      res.on('error', () => { /* the caller went away; nothing to tell it */ });
      const send = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
        if (res.headersSent) return;
        const text = `${JSON.stringify(body)}\n`;  // before the head: a body that cannot be serialised still gets an answer
        res.writeHead(status, { 'content-type': 'application/json', ...headers });
        res.end(text);
      };
      const fail = (e: unknown): void => {
        if (e instanceof PorttrigError) {
          send(STATUS_OF[e.code] ?? HTTP.internal, { error: e.toJSON() });
        } else {
          log.error('control request failed', { url: req.url, error: e });
          send(HTTP.internal, errorBody('E_CONTROL', String((e as Error)?.message ?? e)));
        }
      };

      /**
       * Stream rows as a JSON array, one element per line, waiting for the
       * socket to drain. An error before the first row is an ordinary error
       * answer; after it, the connection is cut (the client sees a truncated array).
       */
      const stream = async (rows: AsyncIterable<unknown>): Promise<void> => {
        const it = rows[Symbol.asyncIterator]();
        let first: IteratorResult<unknown>;
        try {
          first = await it.next();
        } catch (e) {
          fail(e);
          return;
        }
        res.writeHead(HTTP.ok, { 'content-type': 'application/json' });
        const write = async (text: string): Promise<void> => {
          if (!res.write(text)) await new Promise<void>((r) => { res.once('drain', r); res.once('close', r); });
        };
        try {
          let cur = first;
          let sep = '[\n';
          while (!cur.done) {
            if (res.destroyed) { await it.return?.(); return; }
            await write(`${sep}${JSON.stringify(cur.value)}`);
            sep = ',\n';
            cur = await it.next();
          }
          res.end(sep === '[\n' ? '[]\n' : '\n]\n');
        } catch (e) {
          log.error('control listing failed', { url: req.url, error: e });
          res.destroy();
        }
      };

      const cred = peerCredentials(socketFd(req.socket));
      if (!cred || !allowed.has(cred.uid)) {
        log.warn('control request refused', { uid: cred?.uid ?? 'unknown', pid: cred?.pid ?? 'unknown', url: req.url });
        send(HTTP.forbidden, errorBody('E_PERMISSION',
          cred ? `the control socket is root-only: uid ${cred.uid} refused` : 'the control socket is root-only: cannot tell who is calling',
          cred ? { uid: cred.uid } : {}), { connection: 'close' });
        req.resume();
        return;
      }

      const path = (req.url ?? '').split('?')[0]!;
      const methods = routes[path];
      const handler = methods?.[req.method ?? ''];
      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY_BYTES) {
          if (!tooLarge) {
            tooLarge = true;
            send(HTTP.tooLarge, errorBody('E_BAD_REQUEST', `request body larger than ${MAX_BODY_BYTES} bytes`), { connection: 'close' });
          }
          return;
        }
        chunks.push(c);
      });
      req.on('error', () => { /* aborted upload: nothing to answer */ });
      req.on('end', () => {
        if (tooLarge) return;
        if (!methods) {
          send(HTTP.notFound, errorBody('E_NO_ROUTE', `no such endpoint: ${req.method} ${path}`, { path }));
          return;
        }
        if (!handler) {
          const allow = Object.keys(methods).join(', ');
          send(HTTP.method, errorBody('E_METHOD', `${req.method} is not allowed on ${path} (allowed: ${allow})`, { path, allow }), { allow });
          return;
        }
        let body: unknown;
        const text = Buffer.concat(chunks).toString('utf8');
        if (text.trim() !== '') {
          try {
            body = JSON.parse(text);
          } catch (e) {
            send(HTTP.badRequest, errorBody('E_BAD_REQUEST', `request body is not valid JSON: ${(e as Error).message}`));
            return;
          }
        }
        try {
          const query = new URL(req.url ?? '/', 'http://control').searchParams;
          const result = handler(body, query);
          if (isAsyncIterable(result)) void stream(result);
          else send(HTTP.ok, result);
        } catch (e) {
          fail(e);
        }
      });
    });
    // Garbage that is not even HTTP: answer 400 in JSON and hang up.
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (!socket.writable) { socket.destroy(); return; }
      const body = `${JSON.stringify(errorBody('E_BAD_REQUEST', `malformed HTTP request: ${err.code ?? err.message}`))}\n`;
      socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The file is created with the umask's mode and restricted at once; a
      // caller that slips in between still meets the SO_PEERCRED check.
      server.listen(path, () => { chmodSync(path, SOCKET_MODE); resolve(); });
    });
    return new ControlServer(server, path);
  }

  /** Stop listening and remove the socket file. Idempotent. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try { unlinkSync(this.path); } catch { /* already gone */ }
  }
}
