/**
 * The HTTP endpoint: GET /metrics answers the registry in the Prometheus text
 * format, other paths 404, other methods 405; a taken port is a clear E_STATE
 * error. Loopback only, port chosen by the kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Counter, Registry } from 'prom-client';
import { PorttrigError } from '../../src/errors.js';
import { nullLogger } from '../../src/daemon/log.js';
import { MetricsServer } from '../../src/metrics/server.js';

const LOOPBACK = '127.0.0.1';

async function serve(t: { after: (fn: () => Promise<void>) => void }): Promise<{ url: string; server: MetricsServer }> {
  const registry = new Registry();
  new Counter({ name: 'porttrig_test_total', help: 'A test counter.', registers: [registry] }).inc(3);
  const server = await MetricsServer.listen({ host: LOOPBACK, port: 0 }, registry, nullLogger);
  t.after(() => server.close());
  return { url: `http://${LOOPBACK}:${server.address.port}`, server };
}

test('GET /metrics serves the registry in the Prometheus text format', async (t) => {
  const { url } = await serve(t);
  const r = await fetch(`${url}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const body = await r.text();
  assert.match(body, /^# TYPE porttrig_test_total counter$/m);
  assert.match(body, /^porttrig_test_total 3$/m);
  const q = await fetch(`${url}/metrics?x=1`);
  assert.equal(q.status, 200, 'a query string does not change the path');
  await q.text();
});

test('other paths are 404 and other methods 405', async (t) => {
  const { url } = await serve(t);
  for (const path of ['/', '/metric', '/metrics/', '/v1/status']) {
    const r = await fetch(`${url}${path}`);
    assert.equal(r.status, 404, path);
    await r.text();
  }
  const p = await fetch(`${url}/metrics`, { method: 'POST', body: 'x' });
  assert.equal(p.status, 405);
  assert.equal(p.headers.get('allow'), 'GET, HEAD');
  await p.text();
});

test('a port already taken is a clear startup error naming the address', async (t) => {
  const { server } = await serve(t);
  const port = server.address.port;
  await assert.rejects(MetricsServer.listen({ host: LOOPBACK, port }, new Registry(), nullLogger), (e: unknown) => {
    assert.ok(e instanceof PorttrigError);
    assert.equal(e.code, 'E_STATE');
    assert.match(e.message, new RegExp(`${LOOPBACK}:${port} \\(metrics.listen\\): address already in use`));
    return true;
  });
});

test('close() is idempotent and frees the port', async (t) => {
  const { server } = await serve(t);
  await server.close();
  await server.close();
  const again = await MetricsServer.listen({ host: LOOPBACK, port: server.address.port }, new Registry(), nullLogger);
  await again.close();
});
