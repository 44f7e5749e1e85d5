/** The CLI side of the control socket. */
import { request } from 'node:http';
import { PorttrigError, type ErrorCode } from '../errors.js';

/** The typed error for a failure to reach the control socket. */
function socketError(socket: string, e: NodeJS.ErrnoException): PorttrigError {
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
    return new PorttrigError('E_NO_DAEMON', `no porttrig daemon answers on ${socket} (is it running?)`, { socket });
  }
  if (e.code === 'EACCES') return new PorttrigError('E_PERMISSION', `no access to ${socket}: the control socket is root-only`, { socket });
  return new PorttrigError('E_CONTROL', `control socket ${socket}: ${e.message}`, { socket });
}

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
    req.on('error', (e: NodeJS.ErrnoException) => reject(socketError(socket, e)));
    req.end(payload);
  });
}

/**
 * GET a streamed listing (a JSON array, one element per line) and hand each
 * row to `onRow` as it arrives, or, with `raw`, each chunk of the body as it
 * is (for --json: nothing is parsed or held). Rejects with PorttrigError for
 * an error answer or a listing cut short.
 */
export function streamDaemon(socket: string, path: string, sink: { onRow?: (row: unknown) => void; raw?: (chunk: Buffer) => void }): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method: 'GET', path }, (res) => {
      if ((res.statusCode ?? 500) >= 400) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const err = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: { code?: ErrorCode; message?: string; details?: Record<string, unknown> } }).error ?? {};
            reject(new PorttrigError(err.code ?? 'E_CONTROL', err.message ?? `HTTP ${res.statusCode}`, err.details ?? {}));
          } catch {
            reject(new PorttrigError('E_CONTROL', `daemon sent a reply that is not JSON (HTTP ${res.statusCode})`));
          }
        });
        return;
      }
      let pending = '';
      let closed = false;
      res.on('data', (c: Buffer) => {
        if (sink.raw) sink.raw(c);
        const text = pending + c.toString('utf8');
        const lines = text.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) {
          if (line === '[' || line === '') continue;
          if (line === ']' || line === '[]') { closed = true; continue; }
          if (sink.onRow) sink.onRow(JSON.parse(line.endsWith(',') ? line.slice(0, -1) : line));
        }
      });
      res.on('end', () => (closed ? resolve() : reject(new PorttrigError('E_CONTROL', 'the daemon cut the listing short (see its log)'))));
      res.on('error', (e) => reject(new PorttrigError('E_CONTROL', `listing: ${e.message}`)));
    });
    req.on('error', (e: NodeJS.ErrnoException) => reject(socketError(socket, e)));
    req.end();
  });
}
