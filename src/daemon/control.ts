/**
 * The control API: HTTP + JSON on a Unix socket (mode 0600, root only).
 *
 *   GET  /v1/status     GET /v1/sessions     GET /v1/flows     GET /v1/rules
 *   POST /v1/reload
 *
 * Errors answer {"error": {"code", "message", "details"}} with a 4xx/5xx status.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { connect } from 'node:net';
import { PorttrigError, type ErrorCode } from '../errors.js';
import type { Logger } from './log.js';

/** What the control server asks of the daemon. */
export interface ControlTarget {
  status(): unknown;
  sessions(): unknown;
  flows(): unknown;
  rules(): unknown;
  reload(): unknown;
}

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  E_CONFIG: 400, E_USAGE: 400, E_NOT_FOUND: 404, E_PERMISSION: 403,
};

/** Does something answer on `path` already? */
export function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export class ControlServer {
  private constructor(private readonly server: Server, readonly path: string) {}

  /** Listen on `path`, replacing a stale socket file but never a live daemon's. */
  static async listen(path: string, target: ControlTarget, log: Logger): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    if (existsSync(path)) {
      if (await socketAlive(path)) {
        throw new PorttrigError('E_STATE', `another porttrig daemon already answers on ${path}`, { socket: path });
      }
      unlinkSync(path);
    }
    const routes: Record<string, () => unknown> = {
      'GET /v1/status': () => target.status(),
      'GET /v1/sessions': () => target.sessions(),
      'GET /v1/flows': () => target.flows(),
      'GET /v1/rules': () => target.rules(),
      'POST /v1/reload': () => target.reload(),
    };
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const send = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      const route = routes[`${req.method} ${(req.url ?? '').split('?')[0]}`];
      req.resume();
      req.on('end', () => {
        if (!route) {
          send(404, { error: { code: 'E_USAGE', message: `no such endpoint: ${req.method} ${req.url}`, details: {} } });
          return;
        }
        try {
          send(200, route());
        } catch (e) {
          if (e instanceof PorttrigError) {
            send(STATUS_OF[e.code] ?? 500, { error: e.toJSON() });
          } else {
            log.error('control request failed', { url: req.url, error: e });
            send(500, { error: { code: 'E_CONTROL', message: String((e as Error)?.message ?? e), details: {} } });
          }
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // umask-free: create then restrict before anyone can have connected usefully.
      server.listen(path, () => { chmodSync(path, 0o600); resolve(); });
    });
    return new ControlServer(server, path);
  }

  /** Stop listening and remove the socket file. Idempotent. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    try { unlinkSync(this.path); } catch { /* already gone */ }
  }
}
