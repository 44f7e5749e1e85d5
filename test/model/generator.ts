/**
 * The differential test's world and its random event sequences: a few LAN
 * hosts, WAN peers and martians, a handful of rules that cover peer modes,
 * conflicts, translations, `both`, kill_flows_on_expiry and short timeouts,
 * small map limits; and a seeded generator of packets, clock steps, sweeps,
 * reloads and lost flow entries. The generator looks at the model's state
 * (never the kernel's) to aim at interesting cases: packets on existing flows,
 * inbound connections to ports of live sessions, times right at a deadline.
 * So a sequence is a pure function of (seed, length) and can be regenerated.
 */
import type { Rule } from '../../src/config/types.js';
import { compileRules } from '../../src/rules/compile.js';
import {
  DIR_IN, DIR_OUT, FLOW_ORPHAN_NS, FLOW_TIMEOUT_TCP_EST_NS, FLOW_TIMEOUT_TCP_TRANS_NS, FLOW_TIMEOUT_UDP_NS, FRAG_TIMEOUT_NS,
  IPPROTO_TCP, RECLAIM_INTERVAL_NS, RULE_KILL_FLOWS, RULE_PEER_CONTACTED, portIndex, type PtFlowKey,
} from '../../src/bpf/abi.js';
import { withZeroChecksumAfter, type BadKind, type PacketDesc } from './frames.js';
import { REFRESH_GRANULARITY_NS, type DatapathModel } from './datapath-model.js';
import { flowFate, partnerKey } from '../../src/core/sweep.js';
import { Prng } from './prng.js';

// --- the world --------------------------------------------------------------------

export const WAN = '203.0.113.1';
export const OTHER_WAN = '203.0.113.99';
export const GW_LAN = '10.0.0.1';
export const WAN_IFINDEX = 7;
export const LAN_NETS = ['10.0.0.0/24'];
export const LOCAL_ADDRS = [GW_LAN, WAN];
/** A source on the LAN side that is not inside a LAN subnet. */
const NOT_LAN = '10.9.0.5';
const REMOTES = ['198.51.100.7', '198.51.100.8', '192.0.2.33', '203.0.113.50'];
/** A router on the path, sending ICMP errors. */
const ROUTER = '198.51.100.254';
/** Sources the WAN side must never translate (SPEC 8). */
const WAN_MARTIANS = ['0.1.2.3', '127.0.0.1', '224.0.0.5', '240.0.0.9', '255.255.255.255', WAN, GW_LAN, '10.0.0.3'];
/** Destinations of LAN packets that are not a remote host (SPEC 4.1). */
const LAN_ODD_DSTS = [GW_LAN, WAN, '10.0.0.255', '224.0.0.251', '255.255.255.255', '10.0.0.3', '127.0.0.1', '0.0.0.0', '240.1.2.3'];
/** Odd sources of LAN packets: the gateway, outside the LAN, martians, the subnet's broadcast. */
const LAN_ODD_SRCS = [GW_LAN, NOT_LAN, '0.0.0.0', '127.0.0.1', '10.0.0.255', WAN];
/** Source ports of remote peers: few, so that 5-tuples repeat. */
const REMOTE_PORTS = [40000, 40001, 40002, 55555];
/** Trigger ports as a remote's source port: the LAN host's replies then go to a trigger port. */
const TRIGGER_PORTS_AS_SOURCE = [6667, 27015, 4000, 5060];
/** IP ids of fragmented datagrams: few, so that ids repeat (RFC 4963). */
const FRAG_IDS = [0x1000, 0x1001, 0x1002];
const MS = 1_000_000;
const S = 1_000 * MS;

const T = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

/** TCP flags of each kind of packet, weighted. */
const TRIGGER_FLAGS: [number, number][] = [[40, T.SYN], [25, T.ACK | T.PSH], [15, T.ACK], [8, T.SYN | T.ACK], [6, T.FIN | T.ACK], [6, T.RST]];
const INBOUND_FLAGS: [number, number][] = [[30, T.ACK], [20, T.ACK | T.PSH], [12, T.SYN], [10, T.FIN | T.ACK], [6, T.RST], [4, T.SYN | T.ACK], [4, T.RST | T.ACK], [2, 0]];
const REPLY_FLAGS: [number, number][] = [[25, T.SYN | T.ACK], [30, T.ACK], [15, T.ACK | T.PSH], [10, T.FIN | T.ACK], [6, T.RST], [6, T.SYN]];
const TICKS: [number, string][] = [[40, 'tiny'], [22, 'short'], [16, 'mid'], [4, 'long'], [1.2, 'huge'], [16, 'boundary']];
const DEADLINES: [number, string][] = [[4, 'session'], [3, 'flow'], [2, 'stamp'], [1, 'frag'], [1, 'reclaim'], [1, 'recheck']];
const PACKETS: [number, string][] = [
  [18, 'trigger'], [14, 'inbound-new'], [16, 'inbound-flow'], [16, 'reply'], [7, 'frag'], [6, 'icmp'], [8, 'noise'], [7, 'malformed'],
];
const ICMP_TYPES: [number, [number, number]][] = [[30, [3, 3]], [20, [3, 4]], [15, [11, 0]], [8, [12, 0]], [4, [8, 0]], [3, [0, 0]], [3, [5, 1]]];

function ports(s: string): { from: number; to: number }[] {
  return s.split(',').map((r) => {
    const [a, b] = r.split('-').map(Number);
    return { from: a!, to: b ?? a! };
  });
}

function rule(name: string, trigger: string, open: string[], o: Partial<Rule>): Rule {
  const [p, list] = trigger.split('/');
  return {
    name, enabled: true, idleTimeoutMs: 5000, peer: 'any', conflict: 'first', killFlowsOnExpiry: false,
    trigger: { protos: p === 'both' ? ['tcp', 'udp'] : [p as 'tcp' | 'udp'], ranges: ports(list!) },
    open: open.map((spec) => {
      const m = /^(tcp|udp|both)\/(\d+)(?:-(\d+))?(?: -> (\d+))?$/.exec(spec)!;
      const from = Number(m[2]);
      return { protos: m[1] === 'both' ? ['tcp', 'udp'] : [m[1] as 'tcp' | 'udp'], from, to: m[3] ? Number(m[3]) : from, lanFrom: m[4] ? Number(m[4]) : from };
    }),
    ...o,
  };
}

/**
 * The rules of every run. Two share a trigger port (tcp/6667); xl and collide
 * reach the same LAN port 7000 from two WAN ports; off starts disabled.
 */
export const RULES: Rule[] = [
  rule('irc', 'tcp/6667', ['tcp/113'], { idleTimeoutMs: 5000 }),
  rule('game', 'udp/27015-27016', ['udp/27000-27001', 'tcp/27040'], { idleTimeoutMs: 3000, conflict: 'last' }),
  rule('xl', 'tcp/5000', ['tcp/6000-6001 -> 7000'], { idleTimeoutMs: 2000, peer: 'contacted' }),
  rule('dual', 'both/4000', ['both/4001'], { idleTimeoutMs: 1000, killFlowsOnExpiry: true }),
  rule('off', 'tcp/7777', ['tcp/7778'], { enabled: false }),
  rule('share', 'tcp/6667', ['udp/3200'], { idleTimeoutMs: 6000, peer: 'contacted', conflict: 'last', killFlowsOnExpiry: true }),
  rule('long', 'udp/5060', ['udp/5061-5062 -> 15061'], { idleTimeoutMs: 600_000 }),
  rule('collide', 'tcp/8000', ['tcp/7000'], { idleTimeoutMs: 8000 }),
];

/** The rules with the named ones disabled (a reload). */
export function rulesWith(disabled: readonly string[]): Rule[] {
  return RULES.map((r) => ({ ...r, enabled: !disabled.includes(r.name) }));
}
export const INITIALLY_DISABLED = RULES.filter((r) => !r.enabled).map((r) => r.name);

/** Rule names by id (ids are stable across reloads: the names stay). */
const RULE_NAMES = new Map([...compileRules(RULES).ids].map(([n, i]) => [i, n]));

interface PortUse { proto: 'tcp' | 'udp'; port: number; rule: string }
const TRIGGERS: PortUse[] = RULES.flatMap((r) => r.trigger.protos.flatMap((proto) =>
  r.trigger.ranges.flatMap(({ from, to }) => Array.from({ length: to - from + 1 }, (_, i) => ({ proto, port: from + i, rule: r.name })))));
/** WAN ports of open specs, and the LAN ports they reach. */
const OPEN: (PortUse & { lanPort: number })[] = RULES.flatMap((r) => r.open.flatMap((o) => o.protos.flatMap((proto) =>
  Array.from({ length: o.to - o.from + 1 }, (_, i) => ({ proto, port: o.from + i, lanPort: o.lanFrom + i, rule: r.name })))));

/** Every (protocol, port) the runs use for inbound connections: they must not be bound on this machine. */
export const WAN_PORTS_USED: { proto: 'tcp' | 'udp'; port: number }[] = OPEN.map(({ proto, port }) => ({ proto, port }));

// --- runs ---------------------------------------------------------------------------

/** What one seed runs with. */
export interface DiffConfig {
  seed: number;
  limits: { sessions: number; flows: number };
  sessionsPerHost: number;
  lanHosts: string[];
  /** The gateway's own addresses: GW_LAN and WAN, and on some seeds more than pt_config carries inline. */
  localAddrs: string[];
  /** LAN subnets: 10.0.0.0/24, and on some seeds a routed prefix (interfaces.lan_networks). */
  lanNets: string[];
}

/** A prefix routed behind the LAN (lan_networks), and a host in it. */
const ROUTED_LAN = '10.20.0.0/16';
const ROUTED_HOST = '10.20.5.5';
/** More of the gateway's own addresses: pt_config carries 8 inline, the rest only pt_local_addrs. */
const MORE_LOCAL_ADDRS = ['10.0.0.240', '10.0.0.241', '10.0.0.242', '10.0.0.243', '10.0.0.244', '10.0.0.245', '192.0.2.200', '198.51.100.200'];

/**
 * The configuration of a seed: small limits (so that limits and reclaiming
 * happen), 3-10 LAN hosts; on some seeds 10 local addresses and a routed LAN
 * prefix.
 */
export function configForSeed(seed: number): DiffConfig {
  const r = new Prng(seed ^ 0x5eed5eed);
  const n = r.int(3, 10);
  const cfg: DiffConfig = {
    seed,
    limits: { sessions: r.int(4, 12), flows: r.int(3, 10) },
    sessionsPerHost: r.int(1, 3),
    lanHosts: Array.from({ length: n }, (_, i) => `10.0.0.${2 + i}`),
    localAddrs: [...LOCAL_ADDRS],
    lanNets: [...LAN_NETS],
  };
  if (r.chance(0.5)) cfg.localAddrs.push(...MORE_LOCAL_ADDRS);
  if (r.chance(0.5)) {
    cfg.lanNets.push(ROUTED_LAN);
    cfg.lanHosts.push(ROUTED_HOST);
  }
  return cfg;
}

/** One step of a run. Plain data: a sequence prints and replays as JSON. */
export type DiffEvent =
  | { k: 'pkt'; p: PacketDesc }
  /** The clock moves on by `ns`. */
  | { k: 'tick'; ns: number }
  /** The daemon's sweep. */
  | { k: 'sweep' }
  /** A reload: the same rules with these disabled. */
  | { k: 'reload'; disabled: string[] }
  /** One flow entry lost (a daemon killed halfway through removing a flow): the other one is an orphan. */
  | { k: 'drop'; key: PtFlowKey };

/**
 * Cases the generator leaves out because the data path is known to get them
 * wrong (findings of the differential test, reported for the C's owner). Each
 * is one flag: set it to false when the C is fixed, and the case comes back.
 */
export const EXCLUDE = {
  /**
   * Remote peers whose source port is a trigger port (they connected from
   * 6667, say): the LAN host's replies on their flows must not arm (SPEC 8).
   * Not excluded: the generator sends them.
   */
  replyToTriggerPort: false,
  /**
   * Finding 2 (SPEC 8): an ICMP error about a flow, or a non-first fragment of
   * a translated datagram, whose IP header checksum is wrong (a packet ip_rcv()
   * drops) is translated and redirected, its checksum still wrong:
   * pt_icmp() and pt_fragment() never call pt_ip_csum_ok(), which every other
   * path that acts on a packet does (malformed, passed untouched). Excluded:
   * no bad IP checksum on ICMP errors and non-first fragments. Remove when
   * both check it.
   */
  badIpChecksumIcmpOrFragment: false,  // fixed in the C
  /**
   * Finding 3 (SPEC 4.2, README "a session's stamp can trail its flows' last
   * packet by up to 20 ms"): pt_flow_get() looks up the session of an
   * outbound packet only when the flow's outbound entry is due a refresh, but
   * that entry is stamped when an inbound packet creates the flow; so the LAN
   * host's packets in the first 10 ms of a flow (a SYN-ACK, the answer to a
   * UDP query) never refresh a stale session, which can then expire a whole
   * idle timeout early. Excluded: the clock moves past those 10 ms before such
   * a packet. Remove when the data path refreshes the session then too.
   */
  hostPacketOnFreshOutEntry: false,  // fixed in the C
  /**
   * Finding 4 (README: "dead state never blocks new state, with or without a
   * daemon"): pt_open_flow() reclaims when the outbound entry of a new flow
   * finds pt_flows full, not when the inbound one does. With an orphan entry
   * (odd count) the table fills up to one free slot: the outbound entry takes
   * it, the inbound one fails with E2BIG and the flow is refused without a
   * reclaim, for every new flow until a daemon sweeps. Excluded: while an
   * orphan exists and the table is full or one entry short of it (the
   * packet's own lookup may end an orphan first), the generator lets an
   * orphan go (as a daemon's sweep would) before anything else. Remove when
   * pt_open_flow() reclaims on either E2BIG.
   */
  inboundEntryOfFullTable: false,  // fixed in the C
  /**
   * Finding 5 (README: "dead state never blocks new state"): when the
   * outbound key of a new flow is held by an entry that is over (an orphan
   * idle past PT_FLOW_ORPHAN_NS), pt_open_flow() gets EEXIST and refuses the
   * flow without judging that entry; nothing but a daemon's sweep or a packet
   * of the LAN host on it removes it, so the 5-tuple stays blocked. Excluded:
   * such an entry goes first (as a daemon's sweep would). Remove when
   * pt_open_flow() ends a dead entry it collides with and inserts again.
   */
  deadEntryUnderNewFlowKey: false,  // fixed in the C
};

// --- the generator -----------------------------------------------------------------------

export class Generator {
  private readonly r: Prng;
  /** Datagrams whose first fragment was sent lately: their other fragments follow. */
  private readonly datagrams: { d: PacketDesc; total: number }[] = [];
  /** Flow keys seen in the model lately, to send packets on flows that have ended since. */
  private readonly pastFlows: PtFlowKey[] = [];
  private disabled: string[] = [...INITIALLY_DISABLED];
  /** LAN destinations that are not a remote host, WAN sources never translated, odd LAN sources: with this seed's own addresses. */
  private readonly oddDsts: string[];
  private readonly martians: string[];
  private readonly oddSrcs: string[];

  constructor(readonly cfg: DiffConfig) {
    this.r = new Prng(cfg.seed);
    const extra = cfg.localAddrs.filter((a) => !LOCAL_ADDRS.includes(a));
    this.oddDsts = [...LAN_ODD_DSTS, ...extra, ...(cfg.lanHosts.includes(ROUTED_HOST) ? [ROUTED_HOST] : [])];
    this.martians = [...WAN_MARTIANS, ...extra, ...(cfg.lanHosts.includes(ROUTED_HOST) ? [ROUTED_HOST] : [])];
    this.oddSrcs = [...LAN_ODD_SRCS, ...extra];
  }

  /** The next event, given the model's state now. */
  next(m: DatapathModel): DiffEvent {
    const r = this.r;
    this.notePastFlows(m);
    const roll = r.next();
    if (roll < 0.36) return { k: 'tick', ns: this.tick(m) };
    if (roll < 0.3622) return { k: 'sweep' };
    if (roll < 0.3623) return this.reload();
    if (roll < 0.3628 && m.flows.size > 0) {
      const key = r.pick(m.flows.list())[0];
      if (key.dir === DIR_IN) this.pastFlows.push(key, key, key);  // its tuple comes back, to find the orphan
      return { k: 'drop', key };
    }
    const p = this.packet(m);
    return this.instead(m, p) ?? { k: 'pkt', p };
  }

  /**
   * What happens instead of sending `p` when it is a case of EXCLUDE (null:
   * send it): the clock moves on past the case, or the orphan goes.
   */
  private instead(m: DatapathModel, p: PacketDesc): DiffEvent | null {
    if (EXCLUDE.inboundEntryOfFullTable && p.prog === 'wan' && m.flows.size >= m.flows.capacity - 1) {
      // An orphan: its partner is missing, or the entry under its partner's key is another flow's.
      const orphan = m.flows.list().find(([k, v]) => m.flows.get(partnerKey(k, v))?.created_ns !== v.created_ns);
      if (orphan) return { k: 'drop', key: orphan[0] };
    }
    if (EXCLUDE.deadEntryUnderNewFlowKey && p.prog === 'wan' && (p.proto === 'tcp' || p.proto === 'udp') && p.dst === WAN) {
      const dead = this.deadReplyEntry(m, p);
      if (dead) return { k: 'drop', key: dead };
    }
    const wait = this.tooSoon(m, p);
    return wait > 0n ? { k: 'tick', ns: Number(wait) } : null;
  }

  /** The outbound key a new flow for `p` would take, when an entry that is over holds it. */
  private deadReplyEntry(m: DatapathModel, p: PacketDesc): PtFlowKey | null {
    const proto = p.proto === 'tcp' ? 'tcp' : 'udp';
    const port = m.cfg.ports.get(portIndex(proto, p.dport ?? 0));
    const rule = port?.open_rule ? m.cfg.rules.get(port.open_rule) : undefined;
    if (!port || !rule) return null;
    const s = m.sessions.get({ rule: port.open_rule, peer: rule.flags & RULE_PEER_CONTACTED ? p.src : '0.0.0.0' });
    if (!s) return null;
    const key: PtFlowKey = { saddr: s.host, daddr: p.src, sport: port.open_lan_port, dport: p.sport ?? 0, proto: proto === 'tcp' ? IPPROTO_TCP : 17, dir: DIR_OUT };
    const v = m.flows.get(key);
    if (!v) return null;
    const fate = flowFate(key, v, m.flows.get(partnerKey(key, v)), m.cfg.rules.get(v.rule), m.sessions.get({ rule: v.rule, peer: v.sess_peer }), m.now);
    return fate === 'live' ? null : key;
  }

  /** EXCLUDE.hostPacketOnFreshOutEntry: how long until `p` is no such case (0: it is none). */
  private tooSoon(m: DatapathModel, p: PacketDesc): bigint {
    if (EXCLUDE.hostPacketOnFreshOutEntry && p.prog === 'lan' && (p.proto === 'tcp' || p.proto === 'udp') && !(p.frag && p.frag.off > 0)) {
      const k: PtFlowKey = { saddr: p.src, daddr: p.dst, sport: p.sport ?? 0, dport: p.dport ?? 0, proto: p.proto === 'tcp' ? IPPROTO_TCP : 17, dir: DIR_OUT };
      const f = m.flows.get(k);
      const age = f ? m.now - f.last_seen_ns : 0n;
      if (f && age <= REFRESH_GRANULARITY_NS) {
        const rule = m.cfg.rules.get(f.rule);
        const s = m.sessions.get({ rule: f.rule, peer: f.sess_peer });
        const kill = rule ? (rule.flags & RULE_KILL_FLOWS) !== 0 : true;
        if (!kill && s && s.host === p.src && m.now - s.last_seen_ns > REFRESH_GRANULARITY_NS) return REFRESH_GRANULARITY_NS + 1n - age;
      }
    }
    return 0n;
  }

  private notePastFlows(m: DatapathModel): void {
    if (m.flows.size === 0 || !this.r.chance(0.05)) return;
    const k = this.r.pick(m.flows.list())[0];
    if (this.pastFlows.length >= 24) this.pastFlows.shift();
    this.pastFlows.push(k);
  }

  private reload(): DiffEvent {
    const name = this.r.pick(RULES).name;
    this.disabled = this.disabled.includes(name) ? this.disabled.filter((n) => n !== name) : [...this.disabled, name];
    return { k: 'reload', disabled: [...this.disabled] };
  }

  // --- time ---

  /** A clock step: mostly short, sometimes past every timer, often right at a deadline. */
  private tick(m: DatapathModel): number {
    const r = this.r;
    const kind = r.weighted(TICKS);
    switch (kind) {
      case 'tiny': return r.logUniform(1_000, 12 * MS);
      case 'short': return r.logUniform(12 * MS, 2 * S);
      case 'mid': return r.logUniform(2 * S, 15 * S);
      case 'long': return r.logUniform(15 * S, 400 * S);
      case 'huge': return r.logUniform(400 * S, 8000 * S);
      default: {
        const target = this.deadline(m);
        const dt = target === null ? 0n : target - m.now;
        return dt > 0n ? Number(dt) : r.logUniform(1_000, 12 * MS);
      }
    }
  }

  /** A deadline of the model's state (or one ns after it): where the data path changes its mind. */
  private deadline(m: DatapathModel): bigint | null {
    const r = this.r;
    const plus = BigInt(r.int(0, 1));
    const choice = r.weighted(DEADLINES);
    if (choice === 'session') {
      const s = m.sessions.list();
      if (!s.length) return null;
      const [k, v] = r.pick(s);
      const rule = m.cfg.rules.get(k.rule);
      return rule ? v.last_seen_ns + rule.idle_timeout_ns + plus : null;
    }
    if (choice === 'flow' || choice === 'stamp') {
      const f = m.flows.list();
      if (!f.length) return null;
      const v = r.pick(f)[1];
      if (choice === 'stamp') return v.last_seen_ns + REFRESH_GRANULARITY_NS + plus;
      const timer = r.pick([FLOW_ORPHAN_NS, FLOW_TIMEOUT_TCP_TRANS_NS, FLOW_TIMEOUT_UDP_NS, FLOW_TIMEOUT_TCP_EST_NS]);
      return v.last_seen_ns + timer + plus;
    }
    if (choice === 'frag') {
      const f = m.frags.list();
      return f.length ? r.pick(f)[1].first_ns + FRAG_TIMEOUT_NS + plus : null;
    }
    if (choice === 'reclaim') {
      const st = r.pick(m.reclaimState.list())[1];
      if (st.last_ns === 0n) return null;
      return r.chance(0.5) || st.next_ns === 0n ? st.last_ns + RECLAIM_INTERVAL_NS - 1n + plus : st.next_ns + plus;
    }
    const h = m.hosts.list().filter(([, v]) => v.recheck_ns !== 0n);
    return h.length ? r.pick(h)[1].recheck_ns + plus : null;
  }

  // --- packets ---

  private packet(m: DatapathModel): PacketDesc {
    const r = this.r;
    const kind = r.weighted(PACKETS);
    let d: PacketDesc;
    switch (kind) {
      case 'trigger': d = this.trigger(); break;
      case 'inbound-new': d = this.inboundNew(m); break;
      case 'inbound-flow': d = this.inboundFlow(m); break;
      case 'reply': d = this.reply(m); break;
      case 'frag': d = this.frag(m); break;
      case 'icmp': d = this.icmp(m); break;
      case 'noise': d = this.noise(); break;
      default: d = this.malformed(m); break;
    }
    return this.modify(d);
  }

  /** Occasional variations on any packet: link-layer destination, TTL, IP options, padding. */
  private modify(d: PacketDesc): PacketDesc {
    const r = this.r;
    if (r.chance(0.05)) d = { ...d, mac: r.pick(['other', 'bcast', 'mcast'] as const) };
    if (r.chance(0.04)) d = { ...d, ttl: r.pick([0, 1, 1, 2]) };
    if (r.chance(0.05) && !d.bad) d = { ...d, ipOpts: r.int(1, 10) };
    if (r.chance(0.04) && d.bad !== 'truncated' && d.bad !== 'totlen-long') d = { ...d, pad: r.int(1, 30) };
    return d;
  }

  private tcpOrUdp(proto: 'tcp' | 'udp', flags: number): Partial<PacketDesc> {
    const r = this.r;
    if (proto === 'tcp') {
      return { proto, flags, payload: r.chance(0.5) ? 0 : r.int(1, 30), ...(r.chance(0.06) ? { tcpOpts: r.int(1, 5) } : {}) };
    }
    return { proto, payload: r.int(0, 30), ...(r.chance(0.2) ? { udpZero: true } : {}) };
  }

  private lanHost(): string {
    return this.r.chance(0.9) ? this.r.pick(this.cfg.lanHosts) : this.r.pick(this.oddSrcs);
  }

  private remotePort(): number {
    if (EXCLUDE.replyToTriggerPort) return this.r.pick(REMOTE_PORTS);
    return this.r.chance(0.9) ? this.r.pick(REMOTE_PORTS) : this.r.pick(TRIGGER_PORTS_AS_SOURCE);
  }

  /** A LAN host's packet to a trigger port. */
  private trigger(): PacketDesc {
    const r = this.r;
    const t = r.pick(TRIGGERS);
    const flags = r.weighted(TRIGGER_FLAGS);
    const sport = r.chance(0.9) ? r.int(41000, 41003) : r.pick(OPEN).lanPort;
    return {
      prog: 'lan', src: this.lanHost(), dst: r.chance(0.9) ? r.pick(REMOTES) : r.pick(this.oddDsts),
      sport, dport: t.port, ...this.tcpOrUdp(t.proto, flags),
    } as PacketDesc;
  }

  /** An inbound packet to an open port (of a live session, more often than not) without a flow yet. */
  private inboundNew(m: DatapathModel): PacketDesc {
    const r = this.r;
    const live = m.liveSessions();
    let src = r.chance(0.85) ? r.pick(REMOTES) : r.pick(this.martians);
    let open = r.pick(OPEN);
    if (live.length && r.chance(0.6)) {
      const [k] = r.pick(live);
      const name = RULE_NAMES.get(k.rule);
      const mine = OPEN.filter((o) => o.rule === name);
      if (mine.length) open = r.pick(mine);
      if (k.peer !== '0.0.0.0' && r.chance(0.8)) src = k.peer;
    }
    const flags = r.chance(0.75) ? T.SYN : r.pick([T.ACK, T.SYN | T.ACK, T.RST, T.FIN | T.ACK, T.ACK | T.PSH]);
    return {
      prog: 'wan', src, dst: r.chance(0.95) ? WAN : OTHER_WAN, sport: this.remotePort(), dport: open.port,
      ...this.tcpOrUdp(open.proto, flags),
    } as PacketDesc;
  }

  private flowKey(m: DatapathModel, dir: number): PtFlowKey | null {
    const r = this.r;
    const past = this.pastFlows.filter((k) => k.dir === dir);
    if (past.length && r.chance(0.25)) return r.pick(past);
    const now = m.flows.list().filter(([k]) => k.dir === dir);
    return now.length ? r.pick(now)[0] : past.length ? r.pick(past) : null;
  }

  /** An inbound packet on a flow (live, or ended lately). */
  private inboundFlow(m: DatapathModel): PacketDesc {
    const r = this.r;
    const k = this.flowKey(m, DIR_IN);
    if (!k) return this.inboundNew(m);
    const flags = r.weighted(INBOUND_FLAGS);
    const d = {
      prog: 'wan', src: k.saddr, dst: k.daddr, sport: k.sport, dport: k.dport,
      ...this.tcpOrUdp(k.proto === IPPROTO_TCP ? 'tcp' : 'udp', flags),
    } as PacketDesc;
    const v = m.flows.get(k);
    // Now and then a datagram whose checksum becomes 0 when translated (then sent as 0xffff).
    if (v && d.proto === 'udp' && !d.udpZero && r.chance(0.08)) {
      return withZeroChecksumAfter({ ...d, payload: 2 * r.int(1, 12) }, { kind: 'l4', dst: true, addr: v.nat_addr, port: v.nat_port });
    }
    return d;
  }

  /** A LAN host's reply on a flow (live, or ended lately), or from an open LAN port without one. */
  private reply(m: DatapathModel): PacketDesc {
    const r = this.r;
    const k = this.flowKey(m, DIR_OUT);
    const flags = r.weighted(REPLY_FLAGS);
    if (!k) {
      const o = r.pick(OPEN);
      return { prog: 'lan', src: this.lanHost(), dst: r.pick(REMOTES), sport: o.lanPort, dport: this.remotePort(), ...this.tcpOrUdp(o.proto, flags) } as PacketDesc;
    }
    const src = r.chance(0.95) ? k.saddr : this.lanHost();
    const d = {
      prog: 'lan', src, dst: k.daddr, sport: k.sport, dport: k.dport,
      ...this.tcpOrUdp(k.proto === IPPROTO_TCP ? 'tcp' : 'udp', flags),
    } as PacketDesc;
    const v = m.flows.get(k);
    if (v && src === k.saddr && d.proto === 'udp' && !d.udpZero && r.chance(0.08)) {
      return withZeroChecksumAfter({ ...d, payload: 2 * r.int(1, 12) }, { kind: 'l4', dst: false, addr: v.nat_addr, port: v.nat_port });
    }
    return d;
  }

  /** IP payload bytes of a whole datagram. */
  private static ipPayload(d: PacketDesc): number {
    return (d.proto === 'tcp' ? 20 + (d.tcpOpts ?? 0) * 4 : 8) + (d.payload ?? 0);
  }

  /** A first fragment of a datagram on a flow (or to an open port), or a later fragment of one sent lately. */
  private frag(m: DatapathModel): PacketDesc {
    const r = this.r;
    const recent = this.datagrams;
    if (recent.length && r.chance(0.55)) {
      const { d, total } = r.pick(recent);
      const off = 8 * r.int(1, Math.floor((total - 1) / 8));
      const rest = total - off;
      const len = r.chance(0.5) || rest <= 8 ? rest : 8 * r.int(1, Math.floor((rest - 1) / 8));
      return { ...d, frag: { off, len } };
    }
    if (r.chance(0.1)) {
      // A later fragment of a datagram nobody has seen the start of.
      const base = r.chance(0.5) ? this.inboundFlow(m) : this.reply(m);
      const d: PacketDesc = { ...base, payload: 40, id: r.pick(FRAG_IDS) };
      return { ...d, frag: { off: 16, len: Generator.ipPayload(d) - 16 } };
    }
    const base = r.weighted<() => PacketDesc>([[4, () => this.inboundFlow(m)], [3, () => this.reply(m)], [2, () => this.inboundNew(m)], [1, () => this.trigger()]])();
    const d: PacketDesc = { ...base, payload: r.int(40, 90), id: r.pick(FRAG_IDS) };
    const total = Generator.ipPayload(d);
    const first = 8 * r.int(Math.ceil((d.proto === 'tcp' ? 20 : 8) / 8), Math.floor((total - 1) / 8));
    if (recent.length >= 6) recent.shift();
    recent.push({ d, total });
    return { ...d, frag: { off: 0, len: first } };
  }

  /** An ICMP error about a flow (or not quite), from the WAN or from the LAN host. */
  private icmp(m: DatapathModel): PacketDesc {
    const r = this.r;
    const [type, code] = r.weighted(ICMP_TYPES);
    const k = this.flowKey(m, DIR_IN) ?? { saddr: r.pick(REMOTES), daddr: WAN, sport: this.remotePort(), dport: r.pick(OPEN).port, proto: IPPROTO_TCP, dir: DIR_IN };
    const entry = m.flows.get(k);
    const host = entry?.nat_addr ?? r.pick(this.cfg.lanHosts);
    const hostPort = entry?.nat_port ?? r.pick(OPEN).lanPort;
    const proto = k.proto === IPPROTO_TCP ? 'tcp' : 'udp';
    const payload = r.int(0, 16);
    const quoteL4 = proto === 'tcp' ? r.pick([8, 8, 20, 28]) : r.pick([8, 8 + payload]);
    const extra = { ...(proto === 'udp' && r.chance(0.2) ? { udpZero: true } : {}), ...(r.chance(0.04) ? { fragOff: 3 } : {}) };
    const mismatch = r.chance(0.1);
    const rport = mismatch ? k.sport + 1 : k.sport;
    if (r.chance(0.6)) {
      // From the WAN, about the flow's reply WAN:wanport -> remote:rport.
      const src = r.weighted([[5, k.saddr], [4, ROUTER], [1, r.pick(this.martians)]]);
      return {
        prog: 'wan', proto: 'icmp', src, dst: r.chance(0.95) ? WAN : OTHER_WAN,
        icmp: { type, code, quoteL4, quoted: { proto, src: WAN, dst: k.saddr, sport: k.dport, dport: rport, payload, ...extra } },
      };
    }
    // From the LAN host, about the inbound packet remote:rport -> host:hostport.
    const src = r.chance(0.9) ? host : this.lanHost();
    return {
      prog: 'lan', proto: 'icmp', src, dst: k.saddr,
      icmp: { type, code, quoteL4, quoted: { proto, src: k.saddr, dst: host, sport: rport, dport: hostPort, payload, ...extra } },
    };
  }

  /** Traffic that matches nothing, or nearly. */
  private noise(): PacketDesc {
    const r = this.r;
    const kind = r.int(0, 6);
    switch (kind) {
      case 0:
        return { prog: 'wan', src: r.pick(REMOTES), dst: WAN, sport: this.remotePort(), dport: r.pick([22, 80, 443, 7001, 114, 27002]), ...this.tcpOrUdp(r.pick(['tcp', 'udp']), T.SYN) } as PacketDesc;
      case 1:
        return { prog: 'lan', src: this.lanHost(), dst: r.pick(REMOTES), sport: r.int(41000, 41003), dport: r.pick([80, 443, 53, 6668]), ...this.tcpOrUdp(r.pick(['tcp', 'udp']), T.SYN) } as PacketDesc;
      case 2:
        return { prog: r.pick(['lan', 'wan']), proto: r.pick([47, 50, 132]), src: r.pick(REMOTES), dst: WAN, payload: r.int(0, 40) };
      case 3:
        // Not IPv4 (IPv6, ARP); long enough for the test run, which refuses a cut IPv6 header.
        return { prog: r.pick(['lan', 'wan']), proto: 'udp', src: r.pick(this.cfg.lanHosts), dst: r.pick(REMOTES), sport: 1, dport: 4000, payload: 20, etype: r.pick([0x86dd, 0x0806]) };
      case 4: {
        const o = r.pick(OPEN);
        return { prog: 'lan', src: this.lanHost(), dst: r.pick(REMOTES), sport: o.lanPort, dport: this.remotePort(), ...this.tcpOrUdp(o.proto, r.pick([T.SYN | T.ACK, T.ACK])) } as PacketDesc;
      }
      case 5: {
        const t = r.pick(TRIGGERS);
        return { prog: 'lan', src: this.lanHost(), dst: r.pick(this.cfg.lanHosts), sport: 41000, dport: t.port, ...this.tcpOrUdp(t.proto, T.SYN) } as PacketDesc;
      }
      default:
        return { prog: r.pick(['lan', 'wan']), proto: 'icmp', src: r.pick(REMOTES), dst: WAN, icmp: { type: 8, code: 0, quoteL4: 8, quoted: { proto: 'udp', src: WAN, dst: r.pick(REMOTES), sport: 1, dport: 2 } } };
    }
  }

  /** A packet of the other kinds, spoiled in one way. */
  private malformed(m: DatapathModel): PacketDesc {
    const r = this.r;
    const base = r.weighted<() => PacketDesc>([[4, () => this.inboundNew(m)], [3, () => this.inboundFlow(m)], [3, () => this.reply(m)], [3, () => this.trigger()], [1, () => this.frag(m)], [1, () => this.icmp(m)]])();
    const l4 = base.proto === 'tcp' || base.proto === 'udp';
    const plain = l4 && !base.frag;
    const unchecked = base.proto === 'icmp' || (base.frag !== undefined && base.frag.off > 0);
    const kinds: BadKind[] = ['ihl', 'version', 'totlen-long', 'totlen-short', 'truncated'];
    if (!(EXCLUDE.badIpChecksumIcmpOrFragment && unchecked)) kinds.push('ipcsum', 'ipcsum');
    if (plain) kinds.push('totlen-l4');
    if (plain && base.proto === 'tcp') kinds.push('doff-small', ...(base.tcpOpts || (base.payload ?? 0) > 30 ? [] : ['doff-big' as const]));
    if (plain && base.proto === 'udp') kinds.push('udplen-small', 'udplen-big');
    const bad = r.pick(kinds);
    const ipLen = 20 + (base.frag ? base.frag.len : base.proto === 'icmp' ? 16 : Generator.ipPayload(base));
    const badArg = bad === 'ihl' ? r.int(0, 4) : bad === 'totlen-long' ? r.int(1, 30) : bad === 'totlen-short' ? r.int(1, 20)
      : bad === 'truncated' ? r.int(20, ipLen - 1) : bad === 'doff-small' ? r.int(0, 4) : bad === 'udplen-small' ? r.int(0, 7)
      : bad === 'udplen-big' ? r.int(1, 100) : bad === 'totlen-l4' ? r.int(0, 3) : undefined;
    return { ...base, bad, ...(badArg !== undefined ? { badArg } : {}) };
  }
}
