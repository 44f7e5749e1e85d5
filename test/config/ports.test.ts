import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatOpenSpec, formatTriggerSpec, lanPortOf, parseOpenSpec, parseTriggerSpec,
} from '../../src/config/ports.js';
import type { OpenSpec, TriggerSpec } from '../../src/config/types.js';

const goodTriggers: [string, TriggerSpec][] = [
  ['tcp/6667', { protos: ['tcp'], ranges: [{ from: 6667, to: 6667 }] }],
  ['tcp/6667,6697', { protos: ['tcp'], ranges: [{ from: 6667, to: 6667 }, { from: 6697, to: 6697 }] }],
  ['udp/27015-27030', { protos: ['udp'], ranges: [{ from: 27015, to: 27030 }] }],
  ['both/1-1', { protos: ['tcp', 'udp'], ranges: [{ from: 1, to: 1 }] }],
  ['udp/65535', { protos: ['udp'], ranges: [{ from: 65535, to: 65535 }] }],
  ['  tcp / 6667 , 7000 - 7010 ', { protos: ['tcp'], ranges: [{ from: 6667, to: 6667 }, { from: 7000, to: 7010 }] }],
  ['tcp/1-65535', { protos: ['tcp'], ranges: [{ from: 1, to: 65535 }] }],
];

for (const [text, want] of goodTriggers) {
  test(`trigger ${JSON.stringify(text)} parses`, () => {
    assert.deepEqual(parseTriggerSpec(text), { ok: true, value: want });
  });
}

const badTriggers: [string, string][] = [
  ['sctp/80', 'unknown protocol "sctp" (expected tcp, udp or both)'],
  ['TCP/80', 'unknown protocol "TCP" (expected tcp, udp or both)'],
  ['/80', 'missing protocol before "/" (expected tcp, udp or both)'],
  ['6667', '"6667" is not PROTO/PORTS (e.g. tcp/6667,6697 or udp/27015-27030)'],
  ['tcp/', 'missing ports after "/" (expected N or N-M)'],
  ['tcp/70000', 'port 70000 out of range 1-65535'],
  ['tcp/0', 'port 0 out of range 1-65535'],
  ['udp/65536', 'port 65536 out of range 1-65535'],
  ['tcp/99999999999999999999', 'port 99999999999999999999 out of range 1-65535'],
  ['udp/30-20', 'empty range 30-20'],
  ['tcp/abc', 'port "abc" is not a number'],
  ['tcp/80,,90', 'empty entry in port list "80,,90"'],
  ['tcp/80,', 'empty entry in port list "80,"'],
  ['tcp/1-2-3', 'bad port range "1-2-3" (expected N or N-M)'],
  ['tcp/-5', 'missing port number'],
  ['tcp/5-', 'missing port number'],
  ['tcp/80 -> 90', 'a trigger cannot translate ports ("->" belongs in open specs)'],
];

for (const [text, error] of badTriggers) {
  test(`trigger ${JSON.stringify(text)} is rejected: ${error}`, () => {
    assert.deepEqual(parseTriggerSpec(text), { ok: false, error });
  });
}

const goodOpens: [string, OpenSpec[]][] = [
  ['tcp/113', [{ protos: ['tcp'], from: 113, to: 113, lanFrom: 113 }]],
  ['udp/27000-27015,27020', [
    { protos: ['udp'], from: 27000, to: 27015, lanFrom: 27000 },
    { protos: ['udp'], from: 27020, to: 27020, lanFrom: 27020 },
  ]],
  ['tcp/6000-6009 -> 7000', [{ protos: ['tcp'], from: 6000, to: 6009, lanFrom: 7000 }]],
  ['both/8080->80', [{ protos: ['tcp', 'udp'], from: 8080, to: 8080, lanFrom: 80 }]],
  ['tcp/100-200 -> 65335', [{ protos: ['tcp'], from: 100, to: 200, lanFrom: 65335 }]],
  [' udp / 5000 - 5001  ->  1 ', [{ protos: ['udp'], from: 5000, to: 5001, lanFrom: 1 }]],
];

for (const [text, want] of goodOpens) {
  test(`open ${JSON.stringify(text)} parses`, () => {
    assert.deepEqual(parseOpenSpec(text), { ok: true, value: want });
  });
}

const badOpens: [string, string][] = [
  ['tcp/6000-6009 -> 65530', 'translation runs past 65535 (65530 + 9 = 65539; WAN 6000-6009 needs 10 LAN ports)'],
  ['tcp/1-65535 -> 2', 'translation runs past 65535 (2 + 65534 = 65536; WAN 1-65535 needs 65535 LAN ports)'],
  ['tcp/80,81 -> 8080', 'a translated open spec must have exactly one port range (got 2: "tcp/80,81")'],
  ['tcp/80 -> 0', 'translation target port 0 out of range 1-65535'],
  ['tcp/80 -> 70000', 'translation target port 70000 out of range 1-65535'],
  ['tcp/80 -> x', 'translation target port "x" is not a number'],
  ['tcp/80 ->', 'missing translation target port number'],
  ['tcp/80 -> 90 -> 100', 'more than one "->" in "tcp/80 -> 90 -> 100"'],
  ['tcp/70000 -> 80', 'port 70000 out of range 1-65535'],
  ['icmp/1', 'unknown protocol "icmp" (expected tcp, udp or both)'],
  ['tcp/9-8', 'empty range 9-8'],
];

for (const [text, error] of badOpens) {
  test(`open ${JSON.stringify(text)} is rejected: ${error}`, () => {
    assert.deepEqual(parseOpenSpec(text), { ok: false, error });
  });
}

test('translation math: WAN p in A..B reaches LAN C + (p - A)', () => {
  const r = parseOpenSpec('tcp/6000-6009 -> 7000');
  assert.ok(r.ok);
  const [spec] = r.value;
  assert.ok(spec);
  assert.equal(lanPortOf(spec, 6000), 7000);
  assert.equal(lanPortOf(spec, 6005), 7005);
  assert.equal(lanPortOf(spec, 6009), 7009);
  const up = parseOpenSpec('udp/10-20 -> 65525');
  assert.ok(up.ok);
  assert.equal(lanPortOf(up.value[0]!, 20), 65535);
  const plain = parseOpenSpec('udp/27000-27015');
  assert.ok(plain.ok);
  assert.equal(lanPortOf(plain.value[0]!, 27007), 27007);
});

test('format and parse round-trip', () => {
  for (const text of ['tcp/6667,6697', 'udp/27015-27030', 'both/1,3-4']) {
    const r = parseTriggerSpec(text);
    assert.ok(r.ok);
    assert.equal(formatTriggerSpec(r.value), text);
  }
  for (const text of ['tcp/113', 'both/27000-27015', 'tcp/6000-6009 -> 7000']) {
    const r = parseOpenSpec(text);
    assert.ok(r.ok);
    assert.equal(r.value.map(formatOpenSpec).join(','), text);
  }
});
