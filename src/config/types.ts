/** Normalized configuration, as the rest of porttrig sees it (SPEC 3). */
export type Proto = 'tcp' | 'udp';
/** Inclusive port range, 1..65535. */
export interface PortRange { from: number; to: number }
/** `both` is expanded to ['tcp', 'udp']. */
export interface TriggerSpec { protos: Proto[]; ranges: PortRange[] }
/** WAN ports from..to reach LAN ports lanFrom..lanFrom+(to-from). */
export interface OpenSpec { protos: Proto[]; from: number; to: number; lanFrom: number }
export type PeerMode = 'any' | 'contacted';
export type ConflictPolicy = 'first' | 'last';
export interface Rule {
  name: string;
  enabled: boolean;
  trigger: TriggerSpec;
  open: OpenSpec[];
  idleTimeoutMs: number;
  peer: PeerMode;
  conflict: ConflictPolicy;
  killFlowsOnExpiry: boolean;
}
export interface Config {
  /** lanNetworks: extra LAN prefixes (IPv4 or IPv6), canonical `net/len`. */
  interfaces: { wan: string; lan: string[]; lanNetworks: string[] };
  defaults: { idleTimeoutMs: number; peer: PeerMode; conflict: ConflictPolicy };
  limits: { sessions: number; flows: number; sessionsPerHost: number };
  datapath: { pinPath: string; xdp: boolean };
  /** bpfStats: hold BPF run-time statistics on (bpf_enable_stats) while the daemon runs. */
  metrics: { listen: { host: string; port: number }; bpfStats: boolean };
  control: { socket: string };
  rules: Rule[];
}
