/**
 * Rules compiled into the data path's tables: stable rule ids, per-rule
 * settings, and the (protocol, port) table read on every packet. Pure: no I/O.
 */
import type { Proto, Rule } from '../config/types.js';
import {
  PT_MAX_RULES, PT_TRIGGER_SLOTS, RULE_CONFLICT_LAST, RULE_ENABLED, RULE_KILL_FLOWS, RULE_PEER_CONTACTED,
  portIndex, type PtPort, type PtRule,
} from '../bpf/abi.js';
import { PorttrigError } from '../errors.js';

export interface CompiledRules {
  /** Rule name -> id (1..PT_MAX_RULES-1). */
  ids: Map<string, number>;
  /** Rule id -> settings, for every rule in the config. */
  rules: Map<number, PtRule>;
  /** Non-empty slots of the port table, by index (see portIndex). */
  ports: Map<number, PtPort>;
}

/**
 * Give every rule an id, keeping the id a rule had before (identity is the
 * name, so sessions survive a reload) and filling ids that no rule held
 * for new rules.
 */
export function assignRuleIds(names: readonly string[], previous: ReadonlyMap<string, number>): Map<string, number> {
  const ids = new Map<string, number>();
  // A removed rule's id is not given to a new rule in the same step: its
  // sessions, flows and counters must not pass to the newcomer before a sweep
  // has closed them.
  const used = new Set<number>(previous.values());
  for (const name of names) {
    const id = previous.get(name);
    if (id !== undefined) { ids.set(name, id); used.add(id); }
  }
  let next = 1;
  for (const name of names) {
    if (ids.has(name)) continue;
    while (used.has(next)) next++;
    if (next >= PT_MAX_RULES) throw new PorttrigError('E_CONFIG', `more than ${PT_MAX_RULES - 1} rules`);
    ids.set(name, next);
    used.add(next);
  }
  return ids;
}

function emptyPort(): PtPort {
  return { trigger: new Array<number>(PT_TRIGGER_SLOTS).fill(0), open_rule: 0, open_lan_port: 0, lan_port_refs: 0 };
}

/** Compile `rules` (already validated) into table contents. */
export function compileRules(rules: readonly Rule[], previous: ReadonlyMap<string, number> = new Map()): CompiledRules {
  const ids = assignRuleIds(rules.map((r) => r.name), previous);
  const out = new Map<number, PtRule>();
  const ports = new Map<number, PtPort>();
  const slot = (proto: Proto, port: number): PtPort => {
    const i = portIndex(proto, port);
    let p = ports.get(i);
    if (!p) { p = emptyPort(); ports.set(i, p); }
    return p;
  };

  for (const rule of rules) {
    const id = ids.get(rule.name)!;
    out.set(id, {
      idle_timeout_ns: BigInt(rule.idleTimeoutMs) * 1_000_000n,
      flags: (rule.enabled ? RULE_ENABLED : 0) |
        (rule.peer === 'contacted' ? RULE_PEER_CONTACTED : 0) |
        (rule.conflict === 'last' ? RULE_CONFLICT_LAST : 0) |
        (rule.killFlowsOnExpiry ? RULE_KILL_FLOWS : 0),
    });
    if (!rule.enabled) continue;
    for (const proto of rule.trigger.protos) {
      for (const range of rule.trigger.ranges) {
        for (let port = range.from; port <= range.to; port++) {
          const p = slot(proto, port);
          if (p.trigger.includes(id)) continue;
          const free = p.trigger.indexOf(0);
          if (free < 0) {
            throw new PorttrigError('E_CONFIG', `${proto}/${port} triggers more than ${PT_TRIGGER_SLOTS} rules`, { rule: rule.name });
          }
          p.trigger[free] = id;
        }
      }
    }
    for (const spec of rule.open) {
      for (const proto of spec.protos) {
        for (let port = spec.from; port <= spec.to; port++) {
          const p = slot(proto, port);
          if (p.open_rule !== 0 && p.open_rule !== id) {
            throw new PorttrigError('E_CONFIG', `${proto}/${port} is opened by two rules`, { rule: rule.name });
          }
          p.open_rule = id;
          p.open_lan_port = spec.lanFrom + (port - spec.from);
          const lan = slot(proto, p.open_lan_port);
          lan.lan_port_refs = Math.min(0xffff, lan.lan_port_refs + 1);
        }
      }
    }
  }
  return { ids, rules: out, ports };
}
