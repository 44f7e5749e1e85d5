import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assignRuleIds, compileRules } from '../../src/rules/compile.js';
import { portIndex, RULE_CONFLICT_LAST, RULE_ENABLED, RULE_PEER_CONTACTED } from '../../src/bpf/abi.js';
import type { Rule } from '../../src/config/types.js';

const rule = (name: string, over: Partial<Rule> = {}): Rule => ({
  name, enabled: true, trigger: { protos: ['tcp'], ranges: [{ from: 6667, to: 6667 }] },
  open: [{ protos: ['tcp'], from: 113, to: 113, lanFrom: 113 }], idleTimeoutMs: 300_000,
  peer: 'any', conflict: 'first', killFlowsOnExpiry: false, ...over,
});

test('rule ids are kept by name across compiles; a removed rule\'s id goes to a new rule only a step later', () => {
  const first = assignRuleIds(['a', 'b', 'c'], new Map());
  assert.deepEqual([...first], [['a', 1], ['b', 2], ['c', 3]]);
  // a and b are removed as d arrives: d must not inherit a's sessions, flows and counters.
  const second = assignRuleIds(['c', 'd'], first);
  assert.deepEqual([...second], [['c', 3], ['d', 4]]);
  const third = assignRuleIds(['c', 'd', 'e'], second);
  assert.deepEqual([...third], [['c', 3], ['d', 4], ['e', 1]]);
});

test('translation fills open ports and the reply filter on the LAN ports', () => {
  const c = compileRules([rule('t', { open: [{ protos: ['tcp', 'udp'], from: 6000, to: 6009, lanFrom: 7000 }] })]);
  const id = c.ids.get('t')!;
  assert.deepEqual(c.ports.get(portIndex('udp', 6005)), { trigger: [0, 0, 0, 0], open_rule: id, open_lan_port: 7005, lan_port_refs: 0 });
  assert.equal(c.ports.get(portIndex('tcp', 7009))!.lan_port_refs, 1);
  assert.equal(c.ports.get(portIndex('tcp', 6667))!.trigger[0], id);
  assert.equal(c.ports.has(portIndex('tcp', 6010)), false);
});

test('flags, timeouts, shared triggers and disabled rules', () => {
  const c = compileRules([
    rule('a', { peer: 'contacted', conflict: 'last' }),
    rule('b', { open: [{ protos: ['tcp'], from: 114, to: 114, lanFrom: 114 }] }),
    rule('off', { enabled: false, open: [{ protos: ['tcp'], from: 115, to: 115, lanFrom: 115 }] }),
  ]);
  assert.equal(c.rules.get(c.ids.get('a')!)!.flags, RULE_ENABLED | RULE_PEER_CONTACTED | RULE_CONFLICT_LAST);
  assert.equal(c.rules.get(c.ids.get('a')!)!.idle_timeout_ns, 300_000_000_000n);
  assert.equal(c.rules.get(c.ids.get('off')!)!.flags, 0);
  assert.deepEqual(c.ports.get(portIndex('tcp', 6667))!.trigger, [1, 2, 0, 0]);
  assert.equal(c.ports.has(portIndex('tcp', 115)), false, 'a disabled rule opens nothing');
});
