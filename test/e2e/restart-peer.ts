/**
 * A counter stream for the restart tests, run inside a test namespace:
 *
 *   serve PORT        accept connections; stream on each
 *   connect HOST PORT connect once; stream on it
 *
 * On a connection each side sends the lines "0\n", "1\n", ... every
 * STREAM_INTERVAL_MS and checks that what it receives is exactly that
 * sequence. One JSON line per event on stdout: {event: 'connected'},
 * {event: 'progress', rx, tx} every PROGRESS_MS, {event: 'mismatch', ...} on
 * the first byte that is not the next expected one, {event: 'closed'|'error'}.
 * Lost, duplicated or reordered bytes all show as a mismatch.
 */
import { connect, createServer, type Socket } from 'node:net';

const STREAM_INTERVAL_MS = 20;
const PROGRESS_MS = 100;
const say = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

function stream(s: Socket): void {
  let tx = 0;
  let rx = 0;
  let buf = '';
  let broken = false;
  say({ event: 'connected', remote: s.remoteAddress, remote_port: s.remotePort, local_port: s.localPort });
  const send = setInterval(() => { s.write(`${tx}\n`); tx++; }, STREAM_INTERVAL_MS);
  const report = setInterval(() => say({ event: 'progress', rx, tx }), PROGRESS_MS);
  s.on('data', (d: Buffer) => {
    if (broken) return;
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line !== String(rx)) { broken = true; say({ event: 'mismatch', expected: rx, got: line }); return; }
      rx++;
    }
  });
  const end = (event: string, extra: Record<string, unknown> = {}): void => {
    clearInterval(send); clearInterval(report);
    say({ event, rx, tx, ...extra });
  };
  s.on('close', () => end('closed'));
  s.on('error', (e: NodeJS.ErrnoException) => end('error', { error: e.code ?? e.message }));
}

const [mode, ...a] = process.argv.slice(2);
if (mode === 'serve') {
  createServer(stream).listen(Number(a[0]), '0.0.0.0', () => say({ event: 'listening' }));
} else if (mode === 'connect') {
  const s = connect({ host: a[0]!, port: Number(a[1]) });
  s.on('connect', () => stream(s));
  s.on('error', (e: NodeJS.ErrnoException) => say({ event: 'error', error: e.code ?? e.message }));
} else {
  process.stderr.write(`restart-peer: unknown mode ${mode}\n`);
  process.exit(2);
}
