/**
 * Rules written into the data path (PorttrigState.applyRules) against a real
 * data path: rule ids are reused, their counters are not.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RULE_COUNTERS, type RuleCounter } from '../../src/bpf/abi.js';
import { parseConfig } from '../../src/config/load.js';
import { PorttrigState } from '../../src/core/state.js';
import { compileRules } from '../../src/rules/compile.js';
import { bpfSkipReason, useDatapath } from '../helpers/bpffs.js';

const skip = bpfSkipReason() ?? false;
const rulesOf = (yaml: string) => parseConfig(`interfaces: {wan: wan0, lan: [lan0]}\nrules:\n${yaml}`, 'test.yaml').rules;

test('a rule that takes over a removed rule\'s id starts with zero counters; a kept rule keeps its counts', { skip }, (t) => {
  const f = useDatapath(t);
  const st = new PorttrigState(f.dp.maps, undefined, f.dp);
  const bump = (id: number, c: RuleCounter, n: bigint): void => f.dp.maps.ruleStats.add(id * RULE_COUNTERS.length + RULE_COUNTERS.indexOf(c), n);
  const first = compileRules(rulesOf('  - {name: irc, trigger: tcp/6667, open: tcp/113}\n  - {name: game, trigger: udp/27015, open: udp/27000}\n'));
  st.applyRules(first);
  const irc = first.ids.get('irc')!;
  const game = first.ids.get('game')!;
  bump(irc, 'trigger_hits', 5n);
  bump(irc, 'sessions_opened', 2n);
  bump(game, 'trigger_hits', 7n);

  // irc goes (one reload), then voip arrives (the next): it gets irc's freed id.
  st.applyRules(compileRules(rulesOf('  - {name: game, trigger: udp/27015, open: udp/27000}\n'), st.ruleIds()));
  const second = compileRules(rulesOf('  - {name: game, trigger: udp/27015, open: udp/27000}\n  - {name: voip, trigger: udp/5060, open: tcp/5061}\n'), st.ruleIds());
  assert.equal(second.ids.get('voip'), irc, 'precondition: the new rule reuses the removed rule\'s id');
  assert.equal(second.ids.get('game'), game);
  bump(irc, 'trigger_hits', 3n);  // a late count for the freed id (a packet in flight during the reload)
  st.applyRules(second);
  assert.equal(st.counter(irc, 'trigger_hits'), 0n, 'voip inherited irc\'s trigger hits');
  assert.equal(st.counter(irc, 'sessions_opened'), 0n, 'voip inherited irc\'s sessions_opened');
  assert.equal(st.counter(game, 'trigger_hits'), 7n, 'game, kept by name, lost its counts');
});
