import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  configJsonSchema, configJsonSchemaText, formatDuration, parseDuration, tryParseDuration, validateConfig,
} from '../../src/config/schema.js';
import { PorttrigError } from '../../src/errors.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

test('schema/porttrig.schema.json is up to date (regenerate: node dist/scripts/gen-json-schema.js)', () => {
  const committed = readFileSync(`${ROOT}schema/porttrig.schema.json`, 'utf8');
  assert.equal(committed, configJsonSchemaText());
});

test('the JSON Schema describes the YAML input: strict objects, required fields, defaults, patterns', () => {
  type S = { properties: Record<string, S>; items: S; required?: string[]; additionalProperties?: boolean; default?: unknown; pattern?: string; anyOf?: S[]; maxItems?: number };
  const s = configJsonSchema() as S;
  assert.deepEqual(s.required, ['interfaces', 'rules']);
  assert.equal(s.additionalProperties, false);
  const rule = s.properties.rules!.items;
  assert.equal(rule.additionalProperties, false);
  assert.deepEqual(rule.required, ['name', 'trigger', 'open']);
  assert.equal(s.properties.rules!.maxItems, 1023);
  assert.equal(s.properties.defaults!.properties.idle_timeout!.default, '10m');
  assert.equal(s.properties.defaults!.properties.peer!.default, 'any');
  assert.equal(s.properties.defaults!.properties.conflict!.default, 'first');
  assert.equal(s.properties.limits!.properties.sessions!.default, 65536);
  assert.equal(s.properties.limits!.properties.flows!.default, 262144);
  assert.equal(s.properties.limits!.properties.sessions_per_host!.default, 64);
  assert.equal(s.properties.datapath!.properties.pin_path!.default, '/sys/fs/bpf/porttrig');
  assert.equal(s.properties.metrics!.properties.listen!.default, '127.0.0.1:9469');
  assert.equal(s.properties.control!.properties.socket!.default, '/run/porttrig/porttrig.sock');
  assert.equal(rule.properties.enabled!.default, true);
  assert.equal(rule.properties.kill_flows_on_expiry!.default, false);

  // The patterns accept what the validator accepts (and reject the obvious).
  const trigger = new RegExp(rule.properties.trigger!.pattern!);
  for (const t of ['tcp/6667,6697', 'udp/27015-27030', ' both / 1 - 2 , 3 ']) assert.match(t, trigger);
  for (const t of ['sctp/1', 'tcp', 'tcp/1 -> 2', 'tcp/a']) assert.doesNotMatch(t, trigger);
  const open = new RegExp(rule.properties.open!.anyOf![0]!.pattern!);
  for (const t of ['tcp/113', 'tcp/6000-6009 -> 7000', 'both/1,2']) assert.match(t, open);
  const duration = new RegExp(rule.properties.idle_timeout!.pattern!);
  for (const t of ['10m', '1500ms', '7d', '1h30m']) assert.match(t, duration);
  for (const t of ['10', 'm', '10 minutes']) assert.doesNotMatch(t, duration);
});

test('validateConfig works on plain data and reports raw paths', () => {
  const r = validateConfig({ interfaces: { wan: 'wan0', lan: ['lan0'] }, rules: [{ name: 'a', trigger: 'tcp/1', open: ['tcp/2', 'udp/x'] }] });
  assert.deepEqual(r, { ok: false, issues: [{ path: ['rules', 0, 'open', 1], message: 'port "x" is not a number' }] });
  const ok = validateConfig({ interfaces: { wan: 'wan0', lan: ['lan0'] }, rules: [] });
  assert.ok(ok.ok);
});

const durations: [string, number][] = [
  ['1500ms', 1500], ['1s', 1000], ['30s', 30_000], ['10m', 600_000], ['2h', 7_200_000], ['7d', 604_800_000],
  ['1h30m', 5_400_000], [' 1m 30s ', 90_000], ['0s', 0], ['001m', 60_000],
];

for (const [text, ms] of durations) {
  test(`parseDuration(${JSON.stringify(text)}) = ${ms}`, () => {
    assert.equal(parseDuration(text), ms);
  });
}

test('parseDuration rejects malformed durations with a PorttrigError', () => {
  for (const [text, message] of [
    ['10', 'duration "10" needs a unit: ms, s, m, h or d (e.g. 10s)'],
    ['', '"" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)'],
    ['10 minutes', '"10 minutes" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)'],
    ['1.5h', '"1.5h" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)'],
    ['-1s', '"-1s" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)'],
  ] as const) {
    assert.throws(() => parseDuration(text), (e: unknown) => e instanceof PorttrigError && e.code === 'E_USAGE' && e.message === message, text);
    assert.deepEqual(tryParseDuration(text), { ok: false, error: message });
  }
});

test('formatDuration spells durations with the largest units and round-trips', () => {
  const cases: [number, string][] = [
    [0, '0s'], [1, '1ms'], [1000, '1s'], [1500, '1s500ms'], [90_000, '1m30s'], [600_000, '10m'],
    [3_600_000, '1h'], [5_400_000, '1h30m'], [86_400_000, '1d'], [604_800_000, '7d'], [90_061_001, '1d1h1m1s1ms'],
  ];
  for (const [ms, text] of cases) {
    assert.equal(formatDuration(ms), text);
    assert.equal(parseDuration(text), ms);
  }
  for (let ms = 0; ms < 5_000_000_000; ms = ms * 3 + 7) assert.equal(parseDuration(formatDuration(ms)), ms);
});
