/** The CLI side of the control socket. */
import { request } from 'node:http';
import { PorttrigError, type ErrorCode } from '../errors.js';

/** Call the daemon; resolves with the JSON body, rejects with PorttrigError. */
export function callDaemon<T>(socket: string, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath: socket, method, path, headers: payload ? { 'content-type': 'application/json' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(new PorttrigError('E_CONTROL', `daemon sent a reply that is not JSON (HTTP ${res.statusCode})`));
          return;
        }
        if ((res.statusCode ?? 500) >= 400) {
          const err = (parsed as { error?: { code?: ErrorCode; message?: string; details?: Record<string, unknown> } }).error ?? {};
          reject(new PorttrigError(err.code ?? 'E_CONTROL', err.message ?? `HTTP ${res.statusCode}`, err.details ?? {}));
        } else {
          resolve(parsed as T);
        }
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
        reject(new PorttrigError('E_NO_DAEMON', `no porttrig daemon answers on ${socket} (is it running?)`, { socket }));
      } else if (e.code === 'EACCES') {
        reject(new PorttrigError('E_PERMISSION', `no access to ${socket}: the control socket is root-only`, { socket }));
      } else {
        reject(new PorttrigError('E_CONTROL', `control socket ${socket}: ${e.message}`, { socket }));
      }
    });
    req.end(payload);
  });
}
