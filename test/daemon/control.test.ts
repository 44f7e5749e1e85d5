/**
 * The control socket: mode 0600, callers checked with SO_PEERCRED, and every
 * malformed request answered with a JSON error and a status, never a crash.
 * Runs the real ControlServer against a fake daemon.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ControlServer, MAX_BODY_BYTES, type ControlTarget } from '../../src/daemon/control.js';
import { createLogger } from '../../src/daemon/log.js';
import { PorttrigError } from '../../src/errors.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = join(ROOT, 'dist/src/cli/main.js');
const root = process.getuid?.() === 0;
const NOBODY = '65534';

/**
 * Run the CLI as nobody. Asynchronously: this process's event loop serves the
 * socket the CLI talks to.
 */
function cliAsNobody(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('setpriv', ['--reuid', NOBODY, '--regid', NOBODY, '--clear-groups', process.execPath, CLI, ...args], { encoding: 'utf8' },
      (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr }));
  });
}

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: { error?: { code: string; message: string } } & Record<string, unknown> }

function call(socket: string, method: string, path: string, body?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(text) as Reply['body'] }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A fake daemon that records calls; `open` throws what the test says. */
function fakeTarget(): ControlTarget & { opened: unknown[]; openThrows: unknown } {
  const t = {
    opened: [] as unknown[],
    openThrows: null as unknown,
    status: () => ({ ok: true }),
    sessions: () => [],
    flows: () => [],
    rules: () => [],
    reload: () => ({ rules: 0 }),
    openSession(req: unknown) { if (t.openThrows) throw t.openThrows; t.opened.push(req); return { action: 'opened' }; },
    closeSession: () => ({ closed: [] }),
  };
  return t;
}

async function serve(t: { after: (fn: () => unknown) => void }): Promise<{ socket: string; dir: string; target: ReturnType<typeof fakeTarget>; logs: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-control-'));
  const socket = join(dir, 'run', 'porttrig.sock');
  const target = fakeTarget();
  const logs: string[] = [];
  const server = await ControlServer.listen(socket, target, createLogger((l) => logs.push(l), 'debug'));
  t.after(async () => { await server.close(); rmSync(dir, { recursive: true, force: true }); });
  return { socket, dir, target, logs };
}

test('the socket is created 0600 in a 0700 directory', async (t) => {
  const { socket } = await serve(t);
  assert.equal(statSync(socket).mode & 0o777, 0o600);
  assert.equal(statSync(join(socket, '..')).mode & 0o777, 0o700);
});

test('malformed JSON: 400 E_BAD_REQUEST, and the server keeps answering', async (t) => {
  const { socket, target } = await serve(t);
  const r = await call(socket, 'POST', '/v1/sessions/open', '{"rule": "irc", host');
  assert.equal(r.status, 400);
  assert.equal(r.body.error?.code, 'E_BAD_REQUEST');
  assert.match(r.body.error!.message, /request body is not valid JSON/);
  assert.deepEqual(target.opened, []);
  assert.equal((await call(socket, 'GET', '/v1/status')).status, 200);
});

test('bad fields: 400 E_USAGE naming each; good ones reach the daemon', async (t) => {
  const { socket, target } = await serve(t);
  const r = await call(socket, 'POST', '/v1/sessions/open', JSON.stringify({ rule: 'irc', host: 5, extra: 1 }));
  assert.equal(r.status, 400);
  assert.equal(r.body.error?.code, 'E_USAGE');
  assert.match(r.body.error!.message, /host: .*expected string/);
  assert.match(r.body.error!.message, /extra/);
  const empty = await call(socket, 'POST', '/v1/sessions/close');
  assert.equal(empty.status, 400);
  assert.equal(empty.body.error?.code, 'E_USAGE');
  const ok = await call(socket, 'POST', '/v1/sessions/open', JSON.stringify({ rule: 'irc', host: '10.0.0.2', force: true }));
  assert.equal(ok.status, 200);
  assert.deepEqual(target.opened, [{ rule: 'irc', host: '10.0.0.2', force: true }]);
});

test('unknown route 404 E_NO_ROUTE; wrong method 405 E_METHOD with Allow', async (t) => {
  const { socket } = await serve(t);
  const nf = await call(socket, 'GET', '/v1/nothing');
  assert.deepEqual([nf.status, nf.body.error?.code], [404, 'E_NO_ROUTE']);
  const m = await call(socket, 'DELETE', '/v1/sessions');
  assert.deepEqual([m.status, m.body.error?.code, m.headers.allow], [405, 'E_METHOD', 'GET']);
  const m2 = await call(socket, 'GET', '/v1/reload');
  assert.deepEqual([m2.status, m2.headers.allow], [405, 'POST']);
});

test('typed errors map to statuses; an unexpected exception is a logged 500, not a crash', async (t) => {
  const { socket, target, logs } = await serve(t);
  const body = JSON.stringify({ rule: 'irc', host: '10.0.0.2' });
  target.openThrows = new PorttrigError('E_CONFLICT', 'held by 10.0.0.3');
  assert.deepEqual([(await call(socket, 'POST', '/v1/sessions/open', body)).status], [409]);
  target.openThrows = new PorttrigError('E_NOT_FOUND', 'no rule');
  assert.equal((await call(socket, 'POST', '/v1/sessions/open', body)).status, 404);
  const status = target.status;
  target.status = () => ({ n: 1n });  // a BigInt: JSON.stringify throws
  const unserialisable = await call(socket, 'GET', '/v1/status');
  assert.deepEqual([unserialisable.status, unserialisable.body.error?.code], [500, 'E_CONTROL']);
  target.status = status;
  target.openThrows = new TypeError('boom');
  const r = await call(socket, 'POST', '/v1/sessions/open', body);
  assert.deepEqual([r.status, r.body.error?.code], [500, 'E_CONTROL']);
  assert.ok(logs.some((l) => l.includes('level=error') && l.includes('boom')));
  assert.equal((await call(socket, 'GET', '/v1/status')).status, 200);
});

test('a body larger than the limit: 413', async (t) => {
  const { socket } = await serve(t);
  const r = await call(socket, 'POST', '/v1/sessions/open', 'x'.repeat(MAX_BODY_BYTES + 1));
  assert.deepEqual([r.status, r.body.error?.code], [413, 'E_BAD_REQUEST']);
  assert.equal((await call(socket, 'GET', '/v1/status')).status, 200);
});

test('bytes that are not HTTP: a JSON 400, and the server lives on', async (t) => {
  const { socket } = await serve(t);
  const reply = await new Promise<string>((resolve, reject) => {
    const s = connect(socket);
    let text = '';
    s.on('data', (d) => { text += d.toString(); });
    s.on('end', () => resolve(text));
    s.on('error', reject);
    s.end('\x00\x01 garbage\r\n\r\n');
  });
  assert.match(reply, /^HTTP\/1\.1 400 /);
  assert.match(reply, /"code":"E_BAD_REQUEST"/);
  assert.equal((await call(socket, 'GET', '/v1/status')).status, 200);
});

test('a caller that is not root is refused even when the socket mode lets it in (SO_PEERCRED)', { skip: !root && 'needs root (setpriv)' }, async (t) => {
  const { socket, dir, logs } = await serve(t);
  // Loosen the file system's lock on purpose: only the peer check is left.
  chmodSync(dir, 0o711);
  chmodSync(join(dir, 'run'), 0o711);
  chmodSync(socket, 0o666);
  const r = await cliAsNobody('status', '--socket', socket);
  assert.equal(r.status, 1, `stdout ${r.stdout} stderr ${r.stderr}`);
  assert.equal(r.stderr, `porttrig: the control socket is root-only: uid ${NOBODY} refused\n`);
  assert.ok(logs.some((l) => l.includes('control request refused') && l.includes(`uid=${NOBODY}`)), logs.join('\n'));
});

test('with the socket as created, a non-root CLI gets a one-line refusal', { skip: !root && 'needs root (setpriv)' }, async (t) => {
  const { socket, dir } = await serve(t);
  chmodSync(dir, 0o711);
  const r = await cliAsNobody('sessions', '--socket', socket);
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `porttrig: no access to ${socket}: the control socket is root-only\n`);
});
