/**
 * The Prometheus endpoint: `GET /metrics` on metrics.listen answers the
 * registry in the Prometheus text format; every other path is 404.
 */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { PorttrigError } from '../errors.js';
import type { Logger } from '../daemon/log.js';

export const METRICS_PATH = '/metrics';

const LISTEN_HINTS: Record<string, string> = {
  EADDRINUSE: 'address already in use: another process listens there; stop it or change metrics.listen',
  EADDRNOTAVAIL: 'address not available: no interface has it; change metrics.listen',
  EACCES: 'permission denied',
};

export class MetricsServer {
  private closed = false;

  private constructor(private readonly server: Server, readonly address: { host: string; port: number }) {}

  /**
   * Listen on `host:port` and serve `registry`. Resolves once listening;
   * rejects with E_STATE naming the address and the cause (e.g. port taken).
   * Port 0 picks a free port (see `address`).
   */
  static async listen(listen: { host: string; port: number }, registry: Registry, log: Logger): Promise<MetricsServer> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      req.resume();
      if (path !== METRICS_PATH) {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(`not found; metrics are at ${METRICS_PATH}\n`);
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
        return;
      }
      registry.metrics().then(
        (body) => { res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : body); },
        (e: unknown) => {
          log.error('metrics scrape failed', { error: e });
          res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`scrape failed: ${(e as Error)?.message ?? String(e)}\n`);
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const what = `${listen.host}:${listen.port}`;
        reject(new PorttrigError('E_STATE', `cannot serve metrics on ${what} (metrics.listen): ${LISTEN_HINTS[e.code ?? ''] ?? e.message}`,
          { listen: what, errno: e.code }, { cause: e }));
      });
      server.listen(listen.port, listen.host, () => resolve());
    });
    const a = server.address();
    const port = a && typeof a === 'object' ? a.port : listen.port;
    return new MetricsServer(server, { host: listen.host, port });
  }

  /** Stop listening and drop open connections. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
