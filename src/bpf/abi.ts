/**
 * The map ABI of bpf/porttrig_abi.h, on the TypeScript side: constants, key and
 * value types, and their codecs. test/bpf/abi.test.ts proves every codec
 * against the compiled object's BTF.
 */
import { StructCodec, u16, u32, s32, u64, be16, be32, ipv4, ipv6, ipv4s, u16s, chars, mac, pad } from './struct.js';

export const PT_LAYOUT_VERSION = 7;
export const PT_MAX_RULES = 1024;
export const PT_TRIGGER_SLOTS = 4;
export const PT_PORTS_PER_PROTO = 65536;
export const PT_PORT_SLOTS = 2 * PT_PORTS_PER_PROTO;
export const PT_PROTO_IDX = { tcp: 0, udp: 1 } as const;
export const PT_TC_HANDLE = 0x7074;
export const PT_TC_PRIORITY = 1;

export const NSEC_PER_SEC = 1_000_000_000n;
/** Added to CLOCK_MONOTONIC for every timestamp in the maps (PT_CLOCK_BIAS_NS). */
export const CLOCK_BIAS_NS = 8n * 86400n * NSEC_PER_SEC;
/**
 * How far the data path's stamps (CLOCK_MONOTONIC_COARSE) may lag
 * CLOCK_MONOTONIC, which the daemon reads: one tick at CONFIG_HZ=100, the
 * longest (PT_CLOCK_TICK_MAX_NS).
 */
export const CLOCK_TICK_MAX_NS = 10_000_000n;
export const FLOW_TIMEOUT_UDP_NS = 300n * NSEC_PER_SEC;
export const FLOW_TIMEOUT_TCP_EST_NS = 7440n * NSEC_PER_SEC;
export const FLOW_TIMEOUT_TCP_TRANS_NS = 240n * NSEC_PER_SEC;
/** A flow entry whose partner direction is missing is over after this much idle time. */
export const FLOW_ORPHAN_NS = 10n * NSEC_PER_SEC;
/** How long the translation of a fragmented datagram is remembered (PT_FRAG_TIMEOUT_NS). */
export const FRAG_TIMEOUT_NS = 5n * NSEC_PER_SEC;
/** Capacity of pt_frags (PT_FRAG_SLOTS). */
export const PT_FRAG_SLOTS = 4096;

/** A full map is scanned for expired entries at most this often (PT_RECLAIM_INTERVAL_NS). */
export const RECLAIM_INTERVAL_NS = NSEC_PER_SEC;
/** A full-map scan stops after removing this many entries (PT_RECLAIM_BATCH). */
export const RECLAIM_BATCH = 1024;
/** No walk of pt_sessions follows another by less than this (PT_RECLAIM_GAP_NS). */
export const RECLAIM_GAP_NS = 100_000_000n;
/** enum pt_reclaim_map: entries of pt_reclaim_state. */
export const RECLAIM = { sessions: 0, flows: 1 } as const;
/** Load-time option (struct pt_load_opts.flags): pt_now() reads pt_test_now_ns. */
export const OPT_TEST_CLOCK = 1 << 0;

export const RULE_ENABLED = 1 << 0;
export const RULE_PEER_CONTACTED = 1 << 1;
export const RULE_CONFLICT_LAST = 1 << 2;
export const RULE_KILL_FLOWS = 1 << 3;

export const DIR_IN = 1;
export const DIR_OUT = 2;

export const SEEN_SYN = 1 << 0;
export const SEEN_ACK = 1 << 1;
export const SEEN_FIN = 1 << 2;
export const SEEN_RST = 1 << 3;

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/** enum pt_rule_counter, in order. */
export const RULE_COUNTERS = [
  'trigger_hits', 'sessions_opened', 'refused_conflict', 'refused_host_limit',
  'refused_map_full', 'flows_opened', 'flows_refused', 'sessions_expired',
] as const;
export type RuleCounter = (typeof RULE_COUNTERS)[number];
/** enum pt_direction and enum pt_verdict, in order. */
export const DIRECTIONS = ['lan', 'wan'] as const;
export const VERDICTS = ['pass', 'trigger', 'translated', 'dropped', 'malformed'] as const;
/** enum pt_family, in order: the counters are kept per address family. */
export const FAMILIES = ['ipv4', 'ipv6'] as const;
export type Family = (typeof FAMILIES)[number];
export const PT_F_IPV4 = 0;
export const PT_F_IPV6 = 1;
/** enum pt_family's index of `family`. */
export function familyIndex(family: Family): number {
  return family === 'ipv6' ? PT_F_IPV6 : PT_F_IPV4;
}
/** pt_rule_stats entries: PT_F__COUNT * PT_MAX_RULES * PT_RC__COUNT. */
export const RULE_STATS_ENTRIES = FAMILIES.length * PT_MAX_RULES * RULE_COUNTERS.length;
/** pt_pkt_stats entries: PT_F__COUNT * PT_D__COUNT * PT_V__COUNT. */
export const PKT_STATS_ENTRIES = FAMILIES.length * DIRECTIONS.length * VERDICTS.length;
/** Index into pt_rule_stats: (family * PT_MAX_RULES + rule) * PT_RC__COUNT + counter. */
export function ruleStatsIndex(family: number, rule: number, counter: number): number {
  return (family * PT_MAX_RULES + rule) * RULE_COUNTERS.length + counter;
}
/** Index into pt_pkt_stats: (family * PT_D__COUNT + direction) * PT_V__COUNT + verdict. */
export function pktStatsIndex(family: number, dir: number, verdict: number): number {
  return (family * DIRECTIONS.length + dir) * VERDICTS.length + verdict;
}

/** Map names in the object (and file names under pin_path). */
export const MAPS = {
  config: 'pt_config',
  rules: 'pt_rules',
  ruleNames: 'pt_rule_names',
  ports: 'pt_ports',
  sessions: 'pt_sessions',
  hostSessions: 'pt_host_sessions',
  flows: 'pt_flows',
  frags: 'pt_frags',
  localAddrs: 'pt_local_addrs',
  lanNets: 'pt_lan_nets',
  ruleStats: 'pt_rule_stats',
  pktStats: 'pt_pkt_stats',
  attach: 'pt_attach',
  reclaim: 'pt_reclaim_state',
  sessions6: 'pt6_sessions',
  hostSessions6: 'pt6_host_sessions',
  flows6: 'pt6_flows',
  frags6: 'pt6_frags',
  lanNets6: 'pt6_lan_nets',
  localAddrs6: 'pt6_local_addrs',
} as const;
/**
 * Prog arrays of the object (tail calls: pt_*_ingress hands IPv6 packets to
 * pt6_*_ingress through pt6_progs). Not state and not in MAPS: each object
 * has its own, filled by libbpf at load. The kernel empties a prog array when
 * the last user reference goes (the daemon's fd at exit), which would cut
 * the attached programs' IPv6 path while no daemon runs; so the daemon pins
 * its own under pin_path once its programs are attached (Datapath.pinTailCalls).
 */
export const TAIL_CALL_MAPS = ['pt6_progs'] as const;
/**
 * Per-CPU scratch space of the programs (bpf/redirect.h: the argument of
 * bpf_fib_lookup(), kept off the 512-byte stack). Not state: never pinned,
 * never read by the daemon; each object has its own.
 */
export const SCRATCH_MAPS = ['pt_fib_scratch'] as const;
/**
 * The XDP fast path's maps (bpf/xdp.h): made with each object, never pinned.
 * The attached XDP program holds them while no daemon runs; a daemon fills its
 * object's own before it attaches that object's program.
 */
export const XDP_MAPS = { config: 'pt_xdp_config', tx: 'pt_xdp_tx', stats: 'pt_xdp_stats' } as const;
/** The XDP program of the WAN device, and the tracepoint programs that take a LAN interface out of its path. */
export const XDP_PROGRAM = 'pt_wan_xdp';
/** The LAN side's XDP_PASS program, for drivers that take XDP frames only with an XDP program of their own. */
export const XDP_LAN_PROGRAM = 'pt_lan_xdp_pass';
export const XDP_TX_PROGRAMS = ['pt_xdp_redirect_err', 'pt_xdp_devmap_xmit'] as const;
/** enum pt_xdp_counter: pt_xdp_stats indices, in order. */
export const XDP_COUNTERS = ['redirected', 'passed', 'fallback'] as const;
/** Capacity of pt_xdp_tx (LAN interfaces the XDP path can stop sending to). */
export const PT_XDP_TX_MAX = 64;
/** Capacity of pt6_lan_nets and of pt6_local_addrs. */
export const PT6_LAN_NETS_MAX = 256;
export const PT6_LOCAL_ADDRS_MAX = 256;
/**
 * The TC programs, by role. The `_l3` builds are for layer-3 devices (PPP,
 * TUN, WireGuard: no link-layer header at TC ingress); see linkKind().
 */
export const PROGRAMS = {
  lan: 'pt_lan_ingress', wan: 'pt_wan_ingress', lan_l3: 'pt_lan_ingress_l3', wan_l3: 'pt_wan_ingress_l3',
} as const;
/** pt_config.wan_flags: the WAN interface is a layer-3 device (PT_WAN_L3). */
export const WAN_L3 = 1 << 0;
/** The daemon's sweep: a SEC("syscall") program run with BPF_PROG_TEST_RUN, never attached. */
export const SWEEP_PROGRAM = 'pt_sweep';
/**
 * Global-data section where pt_sweep counts live sessions per rule:
 * `{ __u32 live[PT_MAX_RULES]; __u32 live6[PT_MAX_RULES]; struct pt_sweep last; }`.
 */
export const SWEEP_SECTION = '.data.sweep';
/** Byte offsets in SWEEP_SECTION of live (IPv4), live6 and last. */
export const SWEEP_LIVE_OFFSET = 0;
export const SWEEP_LIVE6_OFFSET = 4 * PT_MAX_RULES;
export const SWEEP_LAST_OFFSET = 8 * PT_MAX_RULES;
/** PT_SWEEP_*: what a run of pt_sweep does. */
export const SWEEP_SESSIONS = 1 << 0;
export const SWEEP_FLOWS = 1 << 1;
export const SWEEP_RECOUNT = 1 << 2;
export const SWEEP_SESSIONS6 = 1 << 3;
export const SWEEP_FLOWS6 = 1 << 4;
export const SWEEP_HOST6 = 1 << 5;

/** The gateway's addresses that pt_config carries inline (PT_CONFIG_LOCAL_ADDRS). */
export const CONFIG_LOCAL_ADDRS = 8;

export interface PtConfig {
  wan_addr: string; wan_ifindex: number; layout_version: number; sessions_per_host: number;
  /** Up to CONFIG_LOCAL_ADDRS addresses of pt_local_addrs; '0.0.0.0' = free slot. */
  local_addrs: string[];
  /** 1: local_addrs holds all of pt_local_addrs; 0: the data path looks there too. */
  local_addrs_all: number;
  /** WAN_L3 when the WAN interface is a layer-3 device. */
  wan_flags: number;
}
export const ConfigCodec = new StructCodec<PtConfig>('pt_config', 56, [
  { name: 'wan_addr', offset: 0, kind: ipv4 },
  { name: 'wan_ifindex', offset: 4, kind: u32 },
  { name: 'layout_version', offset: 8, kind: u32 },
  { name: 'sessions_per_host', offset: 12, kind: u32 },
  { name: 'local_addrs', offset: 16, kind: ipv4s(CONFIG_LOCAL_ADDRS) },
  { name: 'local_addrs_all', offset: 48, kind: u32 },
  { name: 'wan_flags', offset: 52, kind: u32 },
]);

export interface PtRule { idle_timeout_ns: bigint; flags: number }
export const RuleCodec = new StructCodec<PtRule>('pt_rule', 16, [
  { name: 'idle_timeout_ns', offset: 0, kind: u64 },
  { name: 'flags', offset: 8, kind: u32 },
  { name: '_pad', offset: 12, kind: pad(4) },
]);

export interface PtRuleName { name: string }
export const RuleNameCodec = new StructCodec<PtRuleName>('pt_rule_name', 64, [
  { name: 'name', offset: 0, kind: chars(64) },
]);

export interface PtPort { trigger: number[]; open_rule: number; open_lan_port: number; lan_port_refs: number }
export const PortCodec = new StructCodec<PtPort>('pt_port', 16, [
  { name: 'trigger', offset: 0, kind: u16s(PT_TRIGGER_SLOTS) },
  { name: 'open_rule', offset: 8, kind: u16 },
  { name: 'open_lan_port', offset: 10, kind: u16 },
  { name: 'lan_port_refs', offset: 12, kind: u16 },
  { name: '_pad', offset: 14, kind: pad(2) },
]);

export interface PtSessionKey { rule: number; peer: string }
export const SessionKeyCodec = new StructCodec<PtSessionKey>('pt_session_key', 8, [
  { name: 'rule', offset: 0, kind: u32 },
  { name: 'peer', offset: 4, kind: ipv4 },
]);

export interface PtSession { opened_ns: bigint; last_seen_ns: bigint; host: string; ifindex: number }
export const SessionCodec = new StructCodec<PtSession>('pt_session', 24, [
  { name: 'opened_ns', offset: 0, kind: u64 },
  { name: 'last_seen_ns', offset: 8, kind: u64 },
  { name: 'host', offset: 16, kind: ipv4 },
  { name: 'ifindex', offset: 20, kind: u32 },
]);

export interface PtHost {
  /** Sessions the host holds (live, or expired and not yet removed). */
  sessions: number;
  /** None of them ends before this time (map clock); 0n = unknown. */
  recheck_ns: bigint;
}
export const HostCodec = new StructCodec<PtHost>('pt_host', 16, [
  { name: 'sessions', offset: 0, kind: u32 },
  // Scratch of the kernel sweep's recount (pt_sweep); never read or written here.
  { name: 'recount', offset: 4, kind: pad(4) },
  { name: 'recheck_ns', offset: 8, kind: u64 },
]);

export interface PtReclaim { last_ns: bigint; next_ns: bigint; freed: number; more: number }
export const ReclaimCodec = new StructCodec<PtReclaim>('pt_reclaim', 24, [
  { name: 'last_ns', offset: 0, kind: u64 },
  { name: 'next_ns', offset: 8, kind: u64 },
  { name: 'freed', offset: 16, kind: u32 },
  { name: 'more', offset: 20, kind: u32 },
]);

/** struct pt_sweep: the context of pt_sweep, in (now, what, host, host6) and out. */
export interface PtSweep {
  now: bigint; what: number; host: string;
  sessions_next_ns: bigint; flows_next_ns: bigint;
  sessions: number; sessions_live: number; sessions_expired: number; sessions_closed: number;
  flow_entries: number; flows_live: number; flow_entries_removed: number; hosts_fixed: number; hosts: number;
  /** With SWEEP_HOST6: only this LAN host's IPv6 sessions. */
  host6: string;
  sessions6_next_ns: bigint; flows6_next_ns: bigint;
  sessions6: number; sessions6_live: number; sessions6_expired: number; sessions6_closed: number;
  flow6_entries: number; flows6_live: number; flow6_entries_removed: number; hosts6_fixed: number; hosts6: number;
}
export const SweepCodec = new StructCodec<PtSweep>('pt_sweep', 144, [
  { name: 'now', offset: 0, kind: u64 },
  { name: 'what', offset: 8, kind: u32 },
  { name: 'host', offset: 12, kind: ipv4 },
  { name: 'sessions_next_ns', offset: 16, kind: u64 },
  { name: 'flows_next_ns', offset: 24, kind: u64 },
  { name: 'sessions', offset: 32, kind: u32 },
  { name: 'sessions_live', offset: 36, kind: u32 },
  { name: 'sessions_expired', offset: 40, kind: u32 },
  { name: 'sessions_closed', offset: 44, kind: u32 },
  { name: 'flow_entries', offset: 48, kind: u32 },
  { name: 'flows_live', offset: 52, kind: u32 },
  { name: 'flow_entries_removed', offset: 56, kind: u32 },
  { name: 'hosts_fixed', offset: 60, kind: u32 },
  { name: 'hosts', offset: 64, kind: u32 },
  { name: '_pad', offset: 68, kind: pad(4) },
  { name: 'host6', offset: 72, kind: ipv6 },
  { name: 'sessions6_next_ns', offset: 88, kind: u64 },
  { name: 'flows6_next_ns', offset: 96, kind: u64 },
  { name: 'sessions6', offset: 104, kind: u32 },
  { name: 'sessions6_live', offset: 108, kind: u32 },
  { name: 'sessions6_expired', offset: 112, kind: u32 },
  { name: 'sessions6_closed', offset: 116, kind: u32 },
  { name: 'flow6_entries', offset: 120, kind: u32 },
  { name: 'flows6_live', offset: 124, kind: u32 },
  { name: 'flow6_entries_removed', offset: 128, kind: u32 },
  { name: 'hosts6_fixed', offset: 132, kind: u32 },
  { name: 'hosts6', offset: 136, kind: u32 },
  { name: '_pad6', offset: 140, kind: pad(4) },
]);

export interface PtLoadOpts { flags: number }
export const LoadOptsCodec = new StructCodec<PtLoadOpts>('pt_load_opts', 8, [
  { name: 'flags', offset: 0, kind: u32 },
  { name: '_pad', offset: 4, kind: pad(4) },
]);

export interface PtFlowKey { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }
export const FlowKeyCodec = new StructCodec<PtFlowKey>('pt_flow_key', 16, [
  { name: 'saddr', offset: 0, kind: ipv4 },
  { name: 'daddr', offset: 4, kind: ipv4 },
  { name: 'sport', offset: 8, kind: be16 },
  { name: 'dport', offset: 10, kind: be16 },
  { name: 'proto', offset: 12, kind: { t: 'u8' } },
  { name: 'dir', offset: 13, kind: { t: 'u8' } },
  { name: '_pad', offset: 14, kind: pad(2) },
]);

export interface PtFlow {
  created_ns: bigint; last_seen_ns: bigint; nat_addr: string; nat_port: number;
  rule: number; sess_peer: string; ifindex: number; seen: number;
}
export const FlowCodec = new StructCodec<PtFlow>('pt_flow', 40, [
  { name: 'created_ns', offset: 0, kind: u64 },
  { name: 'last_seen_ns', offset: 8, kind: u64 },
  { name: 'nat_addr', offset: 16, kind: ipv4 },
  { name: 'nat_port', offset: 20, kind: be16 },
  { name: 'rule', offset: 22, kind: u16 },
  { name: 'sess_peer', offset: 24, kind: ipv4 },
  { name: 'ifindex', offset: 28, kind: u32 },
  { name: 'seen', offset: 32, kind: u32 },
  { name: '_pad', offset: 36, kind: pad(4) },
]);

export interface PtFragKey { saddr: string; daddr: string; id: number; proto: number; dir: number }
export const FragKeyCodec = new StructCodec<PtFragKey>('pt_frag_key', 12, [
  { name: 'saddr', offset: 0, kind: ipv4 },
  { name: 'daddr', offset: 4, kind: ipv4 },
  { name: 'id', offset: 8, kind: be16 },
  { name: 'proto', offset: 10, kind: { t: 'u8' } },
  { name: 'dir', offset: 11, kind: { t: 'u8' } },
]);

export interface PtFrag { first_ns: bigint; nat_addr: string; ifindex: number }
export const FragCodec = new StructCodec<PtFrag>('pt_frag', 16, [
  { name: 'first_ns', offset: 0, kind: u64 },
  { name: 'nat_addr', offset: 8, kind: ipv4 },
  { name: 'ifindex', offset: 12, kind: u32 },
]);

export interface PtLpmV4 { prefixlen: number; addr: string }
export const LpmV4Codec = new StructCodec<PtLpmV4>('pt_lpm_v4', 8, [
  { name: 'prefixlen', offset: 0, kind: u32 },
  { name: 'addr', offset: 4, kind: ipv4 },
]);

// --- IPv6 pinholes (SPEC 9) ---------------------------------------------------------
// Addresses are IPv6 text in canonical form (readIpv6); '::' = none.

/**
 * pt6_sessions key. Peer mode `any`: (rule, host, '::'); mode `contacted`:
 * (rule, '::', peer), the owner in the value.
 */
export interface Pt6SessionKey { rule: number; host: string; peer: string }
export const Session6KeyCodec = new StructCodec<Pt6SessionKey>('pt6_session_key', 40, [
  { name: 'rule', offset: 0, kind: u32 },
  { name: '_pad', offset: 4, kind: pad(4) },
  { name: 'host', offset: 8, kind: ipv6 },
  { name: 'peer', offset: 24, kind: ipv6 },
]);

export interface Pt6Session { opened_ns: bigint; last_seen_ns: bigint; host: string; ifindex: number }
export const Session6Codec = new StructCodec<Pt6Session>('pt6_session', 40, [
  { name: 'opened_ns', offset: 0, kind: u64 },
  { name: 'last_seen_ns', offset: 8, kind: u64 },
  { name: 'host', offset: 16, kind: ipv6 },
  { name: 'ifindex', offset: 32, kind: u32 },
  { name: '_pad', offset: 36, kind: pad(4) },
]);

/** struct pt6_addr: key of pt6_host_sessions and pt6_local_addrs. */
export interface Pt6Addr { a: string }
export const Addr6Codec = new StructCodec<Pt6Addr>('pt6_addr', 16, [
  { name: 'a', offset: 0, kind: ipv6 },
]);

export interface Pt6FlowKey { saddr: string; daddr: string; sport: number; dport: number; proto: number; dir: number }
export const Flow6KeyCodec = new StructCodec<Pt6FlowKey>('pt6_flow_key', 40, [
  { name: 'saddr', offset: 0, kind: ipv6 },
  { name: 'daddr', offset: 16, kind: ipv6 },
  { name: 'sport', offset: 32, kind: be16 },
  { name: 'dport', offset: 34, kind: be16 },
  { name: 'proto', offset: 36, kind: { t: 'u8' } },
  { name: 'dir', offset: 37, kind: { t: 'u8' } },
  { name: '_pad', offset: 38, kind: pad(2) },
]);

/** pt6_flow.flags: the flow's session is keyed by peer (mode contacted). */
export const FLOW6_CONTACTED = 1 << 0;

export interface Pt6Flow {
  created_ns: bigint; last_seen_ns: bigint; nat_port: number; rule: number; ifindex: number; seen: number; flags: number;
}
export const Flow6Codec = new StructCodec<Pt6Flow>('pt6_flow', 32, [
  { name: 'created_ns', offset: 0, kind: u64 },
  { name: 'last_seen_ns', offset: 8, kind: u64 },
  { name: 'nat_port', offset: 16, kind: be16 },
  { name: 'rule', offset: 18, kind: u16 },
  { name: 'ifindex', offset: 20, kind: u32 },
  { name: 'seen', offset: 24, kind: u32 },
  { name: 'flags', offset: 28, kind: u32 },
]);

export interface Pt6FragKey { saddr: string; daddr: string; id: number; proto: number; dir: number }
export const Frag6KeyCodec = new StructCodec<Pt6FragKey>('pt6_frag_key', 40, [
  { name: 'saddr', offset: 0, kind: ipv6 },
  { name: 'daddr', offset: 16, kind: ipv6 },
  { name: 'id', offset: 32, kind: be32 },
  { name: 'proto', offset: 36, kind: { t: 'u8' } },
  { name: 'dir', offset: 37, kind: { t: 'u8' } },
  { name: '_pad', offset: 38, kind: pad(2) },
]);

export interface Pt6Frag { first_ns: bigint; ifindex: number }
export const Frag6Codec = new StructCodec<Pt6Frag>('pt6_frag', 16, [
  { name: 'first_ns', offset: 0, kind: u64 },
  { name: 'ifindex', offset: 8, kind: u32 },
  { name: '_pad', offset: 12, kind: pad(4) },
]);

export interface PtLpmV6 { prefixlen: number; addr: string }
export const LpmV6Codec = new StructCodec<PtLpmV6>('pt_lpm_v6', 20, [
  { name: 'prefixlen', offset: 0, kind: u32 },
  { name: 'addr', offset: 4, kind: ipv6 },
]);

/** struct pt_xdp_config (bpf/xdp.h): what the XDP fast path knows of the WAN device. */
export interface PtXdpConfig { wan_mac: string; all_off: number; wan_ifindex: number; netns_ino: number }
export const XdpConfigCodec = new StructCodec<PtXdpConfig>('pt_xdp_config', 16, [
  { name: 'wan_mac', offset: 0, kind: mac },
  { name: 'all_off', offset: 6, kind: u16 },
  { name: 'wan_ifindex', offset: 8, kind: u32 },
  { name: 'netns_ino', offset: 12, kind: u32 },
]);

/** struct pt_xdp_tx: why the XDP path stopped sending to a LAN interface. */
export interface PtXdpTx { since_ns: bigint; last_ns: bigint; err: number; failures: number }
export const XdpTxCodec = new StructCodec<PtXdpTx>('pt_xdp_tx', 24, [
  { name: 'since_ns', offset: 0, kind: u64 },
  { name: 'last_ns', offset: 8, kind: u64 },
  { name: 'err', offset: 16, kind: s32 },
  { name: 'failures', offset: 20, kind: u32 },
]);
/** pt_xdp_tx marks of the daemon (positive err): a bridge; a LAN whose qdisc or egress filters XDP frames would bypass. */
export const XDP_TX_BRIDGE = 1;
export const XDP_TX_SHAPED = 2;
/** How long the XDP path leaves a LAN interface to TC after a failure that may pass (PT_XDP_TX_RETRY_NS). */
export const XDP_TX_RETRY_NS = 1_000_000_000n;

/** Every struct codec, for the layout test. */
export const ALL_CODECS = [
  ConfigCodec, RuleCodec, RuleNameCodec, PortCodec, SessionKeyCodec, SessionCodec, FlowKeyCodec, FlowCodec,
  FragKeyCodec, FragCodec, LpmV4Codec, HostCodec, ReclaimCodec, LoadOptsCodec, SweepCodec,
  Session6KeyCodec, Session6Codec, Addr6Codec, Flow6KeyCodec, Flow6Codec, Frag6KeyCodec, Frag6Codec, LpmV6Codec,
  XdpConfigCodec, XdpTxCodec,
] as const;

/** Index into pt_ports for (protocol, port). */
export function portIndex(proto: 'tcp' | 'udp', port: number): number {
  return PT_PROTO_IDX[proto] * PT_PORTS_PER_PROTO + port;
}

export const ATTACH_LAN = 1 << 0;
export const ATTACH_WAN = 1 << 1;
export const ATTACH_CREATED_QDISC = 1 << 2;
/** pt_attach: porttrig's XDP program (XDP_PROGRAM) is attached here (datapath.xdp). */
export const ATTACH_XDP = 1 << 3;
