import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInterfacesExist, loadConfigFile, parseConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/types.js';
import { ConfigError, type ConfigIssue } from '../../src/errors.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Lines 1-3; `rules:` is line 4 and the first rule starts on line 5. */
const HEAD = 'interfaces:\n  wan: wan0\n  lan: [lan0]\n';
/** A rule of three lines (plus `more`), in block style. */
const rule = (name: string, trigger: string, open: string, ...more: string[]): string =>
  [`  - name: ${name}`, `    trigger: ${trigger}`, `    open: ${open}`, ...more.map((m) => `    ${m}`)].join('\n') + '\n';
const withRules = (...rules: string[]): string => `${HEAD}rules:\n${rules.join('')}`;
const ONE_RULE = rule('a', 'tcp/1', 'tcp/2');

function issuesOf(text: string): ConfigIssue[] {
  try {
    parseConfig(text, 'test.yaml');
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.equal(e.code, 'E_CONFIG');
    assert.equal(e.file, 'test.yaml');
    return e.issues;
  }
  assert.fail('expected the configuration to be rejected');
}

function parse(text: string): Config {
  return parseConfig(text, 'test.yaml');
}

// ---------------------------------------------------------------------------
// Rejected configurations: exactly one issue each, with path, message and line.

interface Bad { what: string; yaml: string; path: string; message: string; line?: number }

const fiveSharing = [
  rule('r0', 'tcp/6660-6670', 'tcp/1'),
  rule('r1', 'both/6667', 'tcp/2'),
  rule('r2', 'tcp/6000-7000', 'tcp/3'),
  rule('r3', 'tcp/6667,6697', 'tcp/4'),
  rule('r4', 'tcp/6665-6667', 'tcp/5'),
];

const bad: Bad[] = [
  // unknown keys
  { what: 'unknown top-level key', yaml: `${HEAD}extra: 1\nrules: []\n`, path: 'extra', line: 4,
    message: 'unknown key "extra" (allowed: interfaces, defaults, limits, datapath, metrics, control, rules)' },
  { what: 'misspelt rule key', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timout: 5m')), path: 'rules[0].idle_timout', line: 8,
    message: 'unknown key "idle_timout" (did you mean "idle_timeout"?)' },
  { what: 'unknown key in defaults', yaml: `${HEAD}defaults:\n  timeout: 5m\nrules: []\n`, path: 'defaults.timeout', line: 5,
    message: 'unknown key "timeout" (allowed: idle_timeout, peer, conflict)' },
  { what: 'unknown key in interfaces', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lans: [lan1]\nrules: []\n',
    path: 'interfaces.lans', line: 4, message: 'unknown key "lans" (did you mean "lan"?)' },

  // ports and ranges
  { what: 'bad port', yaml: withRules(rule('a', 'tcp/abc', 'tcp/2')), path: 'rules[0].trigger', line: 6, message: 'port "abc" is not a number' },
  { what: 'open port out of range', yaml: withRules(rule('a', 'tcp/1', 'tcp/70000')), path: 'rules[0].open', line: 7,
    message: 'port 70000 out of range 1-65535' },
  { what: 'trigger port 0', yaml: withRules(rule('a', 'udp/0', 'tcp/2')), path: 'rules[0].trigger', line: 6, message: 'port 0 out of range 1-65535' },
  { what: 'bad port in an open list (flow)', yaml: withRules(rule('a', 'tcp/1', '[tcp/113, udp/0]')), path: 'rules[0].open[1]', line: 7,
    message: 'port 0 out of range 1-65535' },
  { what: 'bad port in an open list (block)', yaml: `${HEAD}rules:\n  - name: a\n    trigger: tcp/1\n    open:\n      - tcp/113\n      - udp/65536\n`,
    path: 'rules[0].open[1]', line: 9, message: 'port 65536 out of range 1-65535' },
  { what: 'empty range', yaml: withRules(rule('a', 'udp/30-20', 'tcp/2')), path: 'rules[0].trigger', line: 6, message: 'empty range 30-20' },
  { what: 'unknown protocol', yaml: withRules(rule('a', 'sctp/1', 'tcp/2')), path: 'rules[0].trigger', line: 6,
    message: 'unknown protocol "sctp" (expected tcp, udp or both)' },
  { what: 'trigger given as a number', yaml: withRules(rule('a', '6667', 'tcp/2')), path: 'rules[0].trigger', line: 6,
    message: 'expected a string such as tcp/6667,6697, got the number 6667' },
  { what: 'open given as a number', yaml: withRules(rule('a', 'tcp/1', '113')), path: 'rules[0].open', line: 7,
    message: 'expected an open spec such as tcp/113, or a list of them, got the number 113' },
  { what: 'empty open list', yaml: withRules(rule('a', 'tcp/1', '[]')), path: 'rules[0].open', line: 7, message: 'at least one open spec is required' },
  { what: 'translation past 65535', yaml: withRules(rule('a', 'tcp/1', 'tcp/6000-6009 -> 65530')), path: 'rules[0].open', line: 7,
    message: 'translation runs past 65535 (65530 + 9 = 65539; WAN 6000-6009 needs 10 LAN ports)' },
  { what: 'translation of two ranges', yaml: withRules(rule('a', 'tcp/1', 'tcp/80,443 -> 8080')), path: 'rules[0].open',
    message: 'a translated open spec must have exactly one port range (got 2: "tcp/80,443")' },

  // names and overlaps
  { what: 'duplicate rule names', yaml: withRules(rule('a', 'tcp/1', 'tcp/2'), rule('b', 'tcp/3', 'tcp/4'), rule('a', 'tcp/5', 'tcp/6')),
    path: 'rules[2].name', line: 11, message: 'duplicate rule name "a" (also rules[0].name)' },
  { what: 'overlapping open ports', yaml: withRules(rule('a', 'tcp/1', 'tcp/113'), rule('b', 'tcp/2', 'tcp/100-120')),
    path: 'rules[1].open', line: 10, message: 'tcp port 113 is also opened by enabled rule "a" (rules[0])' },
  { what: 'both overlaps tcp', yaml: withRules(rule('a', 'tcp/1', 'both/100-200'), rule('b', 'tcp/2', 'tcp/150-300')),
    path: 'rules[1].open', message: 'tcp ports 150-200 are also opened by enabled rule "a" (rules[0])' },
  { what: 'both overlaps udp', yaml: withRules(rule('a', 'tcp/1', 'udp/5000'), rule('b', 'tcp/2', '[tcp/1-10, both/4000-6000]')),
    path: 'rules[1].open', message: 'udp port 5000 is also opened by enabled rule "a" (rules[0])' },
  { what: 'a translated range overlapping a plain one', yaml: withRules(rule('a', 'tcp/1', 'tcp/7005'), rule('b', 'tcp/2', 'tcp/7000-7009 -> 8000')),
    path: 'rules[1].open', message: 'tcp port 7005 is also opened by enabled rule "a" (rules[0])' },
  { what: 'a port twice in one rule', yaml: withRules(rule('a', 'tcp/1', '[tcp/100-200, both/150 -> 9000]')),
    path: 'rules[0].open', message: 'tcp port 150 listed more than once in this rule\'s open ports' },
  { what: 'five enabled rules sharing a trigger', yaml: withRules(...fiveSharing), path: 'rules[4].trigger', line: 18,
    message: 'at most 4 enabled rules may share a trigger: tcp port 6667 already triggers "r0" (rules[0]), "r1" (rules[1]), "r2" (rules[2]), "r3" (rules[3])' },

  // timeouts
  { what: 'timeout below 1s', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 999ms')), path: 'rules[0].idle_timeout', line: 8,
    message: 'timeout 999ms is below the minimum of 1s (allowed 1s..7d)' },
  { what: 'default timeout above 7d', yaml: `${HEAD}defaults:\n  idle_timeout: 8d\nrules: []\n`, path: 'defaults.idle_timeout', line: 5,
    message: 'timeout 8d is above the maximum of 7d (allowed 1s..7d)' },
  { what: 'compound timeout just above 7d', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 6d24h1ms')), path: 'rules[0].idle_timeout',
    message: 'timeout 6d24h1ms is above the maximum of 7d (allowed 1s..7d)' },
  { what: 'timeout without unit', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: "10"')), path: 'rules[0].idle_timeout',
    message: 'duration "10" needs a unit: ms, s, m, h or d (e.g. 10s)' },
  { what: 'timeout as a number', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 10')), path: 'rules[0].idle_timeout',
    message: 'expected a string such as 10m, got the number 10' },
  { what: 'timeout that is no duration', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: soon')), path: 'rules[0].idle_timeout',
    message: '"soon" is not a duration (a number with unit ms, s, m, h or d, e.g. 1500ms, 30s, 10m, 2h, 7d)' },

  // limits
  { what: 'limit of 0', yaml: `${HEAD}limits:\n  sessions: 0\n${'rules: []\n'}`, path: 'limits.sessions', line: 5, message: 'must be at least 1 (got 0)' },
  { what: 'negative limit', yaml: `${HEAD}limits:\n  sessions_per_host: -1\nrules: []\n`, path: 'limits.sessions_per_host', message: 'must be at least 1 (got -1)' },
  { what: 'fractional limit', yaml: `${HEAD}limits:\n  flows: 1.5\nrules: []\n`, path: 'limits.flows', message: 'expected a whole number, got the number 1.5' },
  { what: 'limit as text', yaml: `${HEAD}limits:\n  flows: lots\nrules: []\n`, path: 'limits.flows', message: 'expected a number, got the string "lots"' },
  { what: 'limit above u32', yaml: `${HEAD}limits:\n  flows: 4294967296\nrules: []\n`, path: 'limits.flows',
    message: 'must be at most 4294967295 (got 4294967296)' },

  // missing and malformed sections
  { what: 'missing interfaces', yaml: 'rules: []\n', path: 'interfaces', line: 1, message: 'missing required field' },
  { what: 'missing rules', yaml: HEAD, path: 'rules', line: 1, message: 'missing required field' },
  { what: 'empty rules value', yaml: `${HEAD}rules:\n`, path: 'rules', line: 4, message: 'expected a list, got an empty value' },
  { what: 'missing lan', yaml: 'interfaces:\n  wan: wan0\nrules: []\n', path: 'interfaces.lan', line: 1, message: 'missing required field' },
  { what: 'empty lan list', yaml: 'interfaces:\n  wan: wan0\n  lan: []\nrules: []\n', path: 'interfaces.lan', line: 3,
    message: 'at least one LAN interface is required' },
  { what: 'lan as a single name', yaml: 'interfaces:\n  wan: wan0\n  lan: lan0\nrules: []\n', path: 'interfaces.lan', line: 3,
    message: 'expected a list, got the string "lan0"' },
  { what: 'bad interface name', yaml: 'interfaces:\n  wan: eth0/1\n  lan: [lan0]\nrules: []\n', path: 'interfaces.wan', line: 2,
    message: 'invalid interface name "eth0/1" (1-15 characters, no "/", ":" or whitespace)' },
  { what: 'interface name too long', yaml: 'interfaces:\n  wan: wan0\n  lan:\n    - lan0\n    - averyveryverylongname\nrules: []\n',
    path: 'interfaces.lan[1]', line: 5, message: 'invalid interface name "averyveryverylongname" (1-15 characters, no "/", ":" or whitespace)' },
  { what: 'WAN interface listed as LAN', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0, wan0]\nrules: []\n', path: 'interfaces.lan[1]',
    message: 'interface "wan0" is also the WAN interface' },
  { what: 'lan_networks entry without a prefix length', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [10.9.0.0]\nrules: []\n',
    path: 'interfaces.lan_networks[0]', line: 4, message: '"10.9.0.0" is not a network prefix such as 10.9.0.0/16 or 2001:db8:1::/48' },
  { what: 'lan_networks entry with host bits set', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks:\n    - 10.9.0.0/16\n    - 10.9.3.1/16\nrules: []\n',
    path: 'interfaces.lan_networks[1]', line: 6, message: '"10.9.3.1/16" has host bits set; did you mean 10.9.0.0/16?' },
  { what: 'lan_networks IPv6 entry with host bits set', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [\'2001:db8:1::1/48\']\nrules: []\n',
    path: 'interfaces.lan_networks[0]', line: 4, message: '"2001:db8:1::1/48" has host bits set; did you mean 2001:db8:1::/48?' },
  { what: 'lan_networks prefix too long', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [10.9.0.0/33]\nrules: []\n',
    path: 'interfaces.lan_networks[0]', line: 4, message: 'prefix length 33 out of range 0-32 for IPv4' },
  { what: 'lan_networks /0', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [0.0.0.0/0]\nrules: []\n',
    path: 'interfaces.lan_networks[0]', line: 4, message: '"0.0.0.0/0" covers every address: a LAN prefix must be narrower' },
  { what: 'lan_networks bad address', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [10.9.0.300/24]\nrules: []\n',
    path: 'interfaces.lan_networks[0]', line: 4, message: '"10.9.0.300" is not an IPv4 or IPv6 address' },
  { what: 'LAN interface listed twice', yaml: 'interfaces:\n  wan: wan0\n  lan: [lan0, lan0]\nrules: []\n', path: 'interfaces.lan[1]',
    message: 'interface "lan0" is listed twice (also interfaces.lan[0])' },
  { what: 'rule that is not a mapping', yaml: withRules('  - just-a-string\n'), path: 'rules[0]', line: 5,
    message: 'expected a mapping, got the string "just-a-string"' },
  { what: 'rule without a name', yaml: withRules('  - trigger: tcp/1\n    open: tcp/2\n'), path: 'rules[0].name', line: 5, message: 'missing required field' },
  { what: 'empty rule name', yaml: withRules(rule('""', 'tcp/1', 'tcp/2')), path: 'rules[0].name', line: 5,
    message: 'invalid rule name "" (1-63 letters, digits, "_", "." or "-")' },
  { what: 'rule name with a space', yaml: withRules(rule('"irc ident"', 'tcp/1', 'tcp/2')), path: 'rules[0].name',
    message: 'invalid rule name "irc ident" (1-63 letters, digits, "_", "." or "-")' },
  { what: 'bad peer mode', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'peer: everyone')), path: 'rules[0].peer', line: 8,
    message: 'expected "any" or "contacted", got the string "everyone"' },
  { what: 'bad conflict policy', yaml: `${HEAD}defaults:\n  conflict: newest\nrules: []\n`, path: 'defaults.conflict',
    message: 'expected "first" or "last", got the string "newest"' },
  { what: 'YAML 1.1 boolean', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'enabled: yes')), path: 'rules[0].enabled',
    message: 'expected true or false, got the string "yes"' },
  { what: 'metrics listen without port', yaml: `${HEAD}metrics:\n  listen: 127.0.0.1\nrules: []\n`, path: 'metrics.listen', line: 5,
    message: '"127.0.0.1" is not HOST:PORT with an IPv4 address or localhost (e.g. 127.0.0.1:9469)' },
  { what: 'metrics listen port 0', yaml: `${HEAD}metrics:\n  listen: localhost:0\nrules: []\n`, path: 'metrics.listen',
    message: 'port 0 out of range 1-65535' },
  { what: 'metrics listen bad address', yaml: `${HEAD}metrics:\n  listen: 10.0.0.256:9469\nrules: []\n`, path: 'metrics.listen',
    message: '"10.0.0.256" is not an IPv4 address (each part 0-255)' },
  { what: 'metrics bpf_stats not a boolean', yaml: `${HEAD}metrics:\n  bpf_stats: on\nrules: []\n`, path: 'metrics.bpf_stats', line: 5,
    message: 'expected true or false, got the string "on"' },
  { what: 'relative control socket', yaml: `${HEAD}control:\n  socket: porttrig.sock\nrules: []\n`, path: 'control.socket', line: 5,
    message: 'must be an absolute path (got "porttrig.sock")' },
  { what: 'relative pin path', yaml: `${HEAD}datapath:\n  pin_path: bpf/porttrig\nrules: []\n`, path: 'datapath.pin_path',
    message: 'must be an absolute path (got "bpf/porttrig")' },
  { what: 'top level is not a mapping', yaml: '- a\n- b\n', path: '', line: 1, message: 'expected a mapping, got a list' },
  { what: 'empty file', yaml: '# nothing here\n', path: '', line: 1,
    message: 'the file is empty (expected a mapping with at least interfaces and rules)' },
  { what: 'duplicate YAML key', yaml: 'interfaces:\n  wan: wan0\n  wan: wan1\n  lan: [lan0]\nrules: []\n', path: '', line: 3,
    message: 'YAML syntax error: Map keys must be unique' },
];

for (const c of bad) {
  test(`rejects: ${c.what}`, () => {
    const issues = issuesOf(c.yaml);
    assert.deepEqual(issues.map((i) => ({ path: i.path, message: i.message })), [{ path: c.path, message: c.message }]);
    if (c.line !== undefined) assert.equal(issues[0]!.line, c.line, 'line');
    else assert.equal(typeof issues[0]!.line, 'number', 'every issue carries a line');
  });
}

test('rejects: YAML syntax error, with its line', () => {
  const issues = issuesOf('interfaces:\n  wan: wan0\n  lan: [lan0\nrules: []\n');
  assert.ok(issues.length >= 1);
  for (const i of issues) {
    assert.equal(i.path, '');
    assert.match(i.message, /^YAML syntax error: \S/);
    assert.equal(typeof i.line, 'number');
  }
  assert.ok(issues.some((i) => i.line === 3 || i.line === 4), JSON.stringify(issues));
});

test('rejects: tab indentation is a YAML syntax error on its line', () => {
  assert.deepEqual(issuesOf('interfaces:\n  wan: wan0\n\tlan: [lan0]\nrules: []\n'),
    [{ path: '', message: 'YAML syntax error: Tabs are not allowed as indentation', line: 3 }]);
});

test('rejects: a nested mapping on one line is a YAML syntax error on its line', () => {
  assert.deepEqual(issuesOf(withRules('  - name: a\n    trigger: tcp/1\n    open: tcp: 113\n')),
    [{ path: '', message: 'YAML syntax error: Nested mappings are not allowed in compact mappings', line: 7 }]);
});

test('rejects: more than 1023 rules', () => {
  const rules = Array.from({ length: 1024 }, (_, i) => rule(`r${i}`, `tcp/${i + 1}`, `udp/${i + 1}`));
  const issues = issuesOf(withRules(...rules));
  assert.deepEqual(issues.map((i) => [i.path, i.message, i.line]), [['rules', 'at most 1023 rules are supported (got 1024)', 4]]);
});

test('all problems are reported at once, in line order, each with file:line: path', () => {
  const yaml = [
    'interfaces:', '  wan: wan0', '  lan: [lan0]',
    'limits:', '  flows: 0',
    'rules:',
    '  - name: a', '    trigger: tcp/70000', '    open: tcp/113',
    '  - name: a', '    trigger: tcp/2', '    open: tcp/113', '    colour: red',
  ].join('\n');
  let err: unknown;
  try {
    parseConfig(yaml, '/etc/porttrig.yaml');
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ConfigError);
  assert.deepEqual(err.issues, [
    { path: 'limits.flows', message: 'must be at least 1 (got 0)', line: 5 },
    { path: 'rules[0].trigger', message: 'port 70000 out of range 1-65535', line: 8 },
    { path: 'rules[1].name', message: 'duplicate rule name "a" (also rules[0].name)', line: 10 },
    { path: 'rules[1].open', message: 'tcp port 113 is also opened by enabled rule "a" (rules[0])', line: 12 },
    { path: 'rules[1].colour', message: 'unknown key "colour" (allowed: name, enabled, trigger, open, idle_timeout, peer, conflict, kill_flows_on_expiry)', line: 13 },
  ]);
  assert.equal(err.message.split('\n')[1], '/etc/porttrig.yaml:8: rules[0].trigger: port 70000 out of range 1-65535');
});

// ---------------------------------------------------------------------------
// Accepted configurations.

test('interfaces.lan_networks: IPv4 and IPv6 prefixes, written canonically', () => {
  const c = parse('interfaces:\n  wan: wan0\n  lan: [lan0]\n  lan_networks: [10.9.0.0/16, \'2001:DB8:1:0::/48\', 192.168.7.0/24]\n' + 'rules:\n' + ONE_RULE);
  assert.deepEqual(c.interfaces.lanNetworks, ['10.9.0.0/16', '2001:db8:1::/48', '192.168.7.0/24']);
});

test('defaults are applied', () => {
  const c = parse(withRules(ONE_RULE));
  assert.deepEqual(c, {
    interfaces: { wan: 'wan0', lan: ['lan0'], lanNetworks: [] },
    defaults: { idleTimeoutMs: 600_000, peer: 'any', conflict: 'first' },
    limits: { sessions: 65536, flows: 262144, sessionsPerHost: 64 },
    datapath: { pinPath: '/sys/fs/bpf/porttrig', xdp: false },
    metrics: { listen: { host: '127.0.0.1', port: 9469 }, bpfStats: false },
    control: { socket: '/run/porttrig/porttrig.sock' },
    rules: [{
      name: 'a', enabled: true,
      trigger: { protos: ['tcp'], ranges: [{ from: 1, to: 1 }] },
      open: [{ protos: ['tcp'], from: 2, to: 2, lanFrom: 2 }],
      idleTimeoutMs: 600_000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false,
    }],
  } satisfies Config);
});

test('empty sections take their defaults too', () => {
  const c = parse(`${HEAD}defaults: {}\nlimits: {}\ndatapath: {}\nmetrics: {}\ncontrol: {}\nrules: []\n`);
  assert.deepEqual(c.defaults, { idleTimeoutMs: 600_000, peer: 'any', conflict: 'first' });
  assert.deepEqual(c.limits, { sessions: 65536, flows: 262144, sessionsPerHost: 64 });
  assert.equal(c.datapath.pinPath, '/sys/fs/bpf/porttrig');
  assert.deepEqual(c.metrics, { listen: { host: '127.0.0.1', port: 9469 }, bpfStats: false });
  assert.equal(c.control.socket, '/run/porttrig/porttrig.sock');
  assert.deepEqual(c.rules, []);
});

test('metrics.bpf_stats: true turns BPF run-time statistics on', () => {
  assert.equal(parse(`${HEAD}metrics:\n  bpf_stats: true\nrules: []\n`).metrics.bpfStats, true);
});

test('rules inherit idle_timeout, peer and conflict from defaults unless they set their own', () => {
  const c = parse(`${HEAD}defaults:\n  idle_timeout: 90s\n  peer: contacted\n  conflict: last\nrules:\n` +
    rule('inherit', 'tcp/1', 'tcp/2') +
    rule('own', 'tcp/3', 'tcp/4', 'idle_timeout: 1h30m', 'peer: any', 'conflict: first', 'kill_flows_on_expiry: true', 'enabled: false'));
  assert.deepEqual(c.defaults, { idleTimeoutMs: 90_000, peer: 'contacted', conflict: 'last' });
  const [inherit, own] = c.rules;
  assert.deepEqual([inherit!.idleTimeoutMs, inherit!.peer, inherit!.conflict, inherit!.enabled, inherit!.killFlowsOnExpiry],
    [90_000, 'contacted', 'last', true, false]);
  assert.deepEqual([own!.idleTimeoutMs, own!.peer, own!.conflict, own!.enabled, own!.killFlowsOnExpiry],
    [5_400_000, 'any', 'first', false, true]);
});

test('translation and lists are normalized', () => {
  const c = parse(withRules(
    rule('t', 'both/5000', 'tcp/6000-6009 -> 7000'),
    rule('l', 'udp/27015-27030', '[udp/27000-27014, tcp/27040, both/3478-3479]'),
  ));
  assert.deepEqual(c.rules[0]!.trigger, { protos: ['tcp', 'udp'], ranges: [{ from: 5000, to: 5000 }] });
  assert.deepEqual(c.rules[0]!.open, [{ protos: ['tcp'], from: 6000, to: 6009, lanFrom: 7000 }]);
  assert.deepEqual(c.rules[1]!.open, [
    { protos: ['udp'], from: 27000, to: 27014, lanFrom: 27000 },
    { protos: ['tcp'], from: 27040, to: 27040, lanFrom: 27040 },
    { protos: ['tcp', 'udp'], from: 3478, to: 3479, lanFrom: 3478 },
  ]);
});

const good: { what: string; yaml: string }[] = [
  { what: 'overlap between a disabled and an enabled rule', yaml: withRules(rule('off', 'tcp/1', 'tcp/100-200', 'enabled: false'), rule('on', 'tcp/2', 'tcp/150')) },
  { what: 'overlap between an enabled and a later disabled rule', yaml: withRules(rule('on', 'tcp/2', 'both/150'), rule('off', 'tcp/1', 'tcp/100-200', 'enabled: false')) },
  { what: 'overlap between two disabled rules', yaml: withRules(rule('x', 'tcp/1', 'tcp/5', 'enabled: false'), rule('y', 'tcp/1', 'tcp/5', 'enabled: false')) },
  { what: 'same port on different protocols', yaml: withRules(rule('t', 'tcp/1', 'tcp/5000'), rule('u', 'tcp/2', 'udp/5000')) },
  { what: 'adjacent ranges', yaml: withRules(rule('a', 'tcp/1', 'tcp/100-199'), rule('b', 'tcp/2', 'tcp/200-300')) },
  { what: 'translated LAN ports may coincide with another rule\'s WAN ports', yaml: withRules(rule('a', 'tcp/1', 'tcp/80'), rule('b', 'tcp/2', 'tcp/8080 -> 80')) },
  { what: 'four enabled rules sharing a trigger', yaml: withRules(...fiveSharing.slice(0, 4)) },
  { what: 'a fifth sharing rule that is disabled', yaml: withRules(...fiveSharing.slice(0, 4), rule('r4', 'tcp/6667', 'tcp/5', 'enabled: false')) },
  { what: 'a fifth rule on the other protocol', yaml: withRules(...fiveSharing.slice(0, 4).map((r) => r.replace('both/6667', 'tcp/6667')), rule('r4', 'udp/6667', 'tcp/5')) },
  { what: 'a trigger port repeated within one rule counts once', yaml: withRules(...fiveSharing.slice(0, 3), rule('r3', 'tcp/6667,6667,6660-6670', 'tcp/4')) },
  { what: 'timeouts at the bounds', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 1s'), rule('b', 'tcp/3', 'tcp/4', 'idle_timeout: 7d')) },
  { what: 'timeout in milliseconds', yaml: withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 1500ms')) },
  { what: 'translation ending at 65535', yaml: withRules(rule('a', 'tcp/1', 'tcp/6000-6009 -> 65526')) },
  { what: 'several LAN interfaces and localhost metrics', yaml: `interfaces:\n  wan: eth0.2\n  lan: [br-lan, wlan0]\nmetrics:\n  listen: localhost:9100\nrules: []\n` },
  { what: 'a rule name of 63 characters', yaml: withRules(rule('a'.repeat(63), 'tcp/1', 'tcp/2')) },
  { what: 'exactly 1023 rules', yaml: withRules(...Array.from({ length: 1023 }, (_, i) => rule(`r${i}`, `tcp/${i + 1}`, `udp/${i + 1}`))) },
];

for (const c of good) {
  test(`accepts: ${c.what}`, () => {
    assert.doesNotThrow(() => parse(c.yaml));
  });
}

test('timeouts are converted to milliseconds', () => {
  const c = parse(withRules(
    rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 1s'), rule('b', 'tcp/3', 'tcp/4', 'idle_timeout: 7d'),
    rule('c', 'tcp/5', 'tcp/6', 'idle_timeout: 1500ms'), rule('d', 'tcp/7', 'tcp/8', 'idle_timeout: 2h'),
  ));
  assert.deepEqual(c.rules.map((r) => r.idleTimeoutMs), [1000, 604_800_000, 1500, 7_200_000]);
});

test('a rule name of 64 characters is rejected', () => {
  const issues = issuesOf(withRules(rule('a'.repeat(64), 'tcp/1', 'tcp/2')));
  assert.equal(issues.length, 1);
  assert.equal(issues[0]!.path, 'rules[0].name');
});

// ---------------------------------------------------------------------------
// Files.

test('the example configuration parses', () => {
  const c = loadConfigFile(join(ROOT, 'examples', 'porttrig.yaml'));
  assert.deepEqual(c.interfaces, { wan: 'wan0', lan: ['lan0'], lanNetworks: [] });
  assert.deepEqual(c.rules.map((r) => r.name), ['irc-ident', 'game', 'translated']);
  const [irc, game, translated] = c.rules;
  assert.deepEqual(irc!.trigger.ranges, [{ from: 6667, to: 6667 }, { from: 6697, to: 6697 }]);
  assert.equal(irc!.idleTimeoutMs, 300_000);
  assert.equal(game!.idleTimeoutMs, 600_000);
  assert.equal(game!.open.length, 2);
  assert.deepEqual(translated!.open, [{ protos: ['tcp'], from: 6000, to: 6009, lanFrom: 7000 }]);
  assert.equal(translated!.peer, 'contacted');
  assert.equal(translated!.conflict, 'last');
});

test('loadConfigFile reads a file and reports unreadable ones as ConfigError', () => {
  const dir = mkdtempSync(join(tmpdir(), 'porttrig-config-'));
  try {
    const file = join(dir, 'porttrig.yaml');
    writeFileSync(file, withRules(ONE_RULE));
    assert.equal(loadConfigFile(file).rules[0]!.name, 'a');

    const missing = join(dir, 'nope.yaml');
    assert.throws(() => loadConfigFile(missing), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.file, missing);
      assert.deepEqual(e.issues, [{ path: '', message: 'cannot read the configuration file: no such file (ENOENT)' }]);
      assert.equal(e.message, `${missing}: cannot read the configuration file: no such file (ENOENT)`);
      return true;
    });
    assert.throws(() => loadConfigFile(dir), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(e.issues, [{ path: '', message: 'cannot read the configuration file: is a directory, not a file (EISDIR)' }]);
      return true;
    });

    writeFileSync(file, withRules(rule('a', 'tcp/1', 'tcp/2', 'idle_timeout: 0s')));
    assert.throws(() => loadConfigFile(file), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `${file}:8: rules[0].idle_timeout: timeout 0s is below the minimum of 1s (allowed 1s..7d)`);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('checkInterfacesExist names each missing interface with its path', () => {
  const c = parse(`interfaces:\n  wan: wan0\n  lan: [lan0, eth9, lan2]\nrules: []\n`);
  assert.deepEqual(checkInterfacesExist(c, () => true), []);
  assert.deepEqual(checkInterfacesExist(c, (n) => n === 'lan0'), [
    { path: 'interfaces.wan', message: 'interface "wan0" does not exist' },
    { path: 'interfaces.lan[1]', message: 'interface "eth9" does not exist' },
    { path: 'interfaces.lan[2]', message: 'interface "lan2" does not exist' },
  ]);
});
