#!/usr/bin/env node
/**
 * The porttrig command line. Thin: parses options, calls the core or the
 * daemon, prints, and maps typed errors to exit codes (0 ok, 1 operational
 * error, 2 usage or config error).
 */
import { Command, CommanderError, Option } from 'commander';
import { Daemon, type RuleView, type StatusView } from '../daemon/daemon.js';
import { createLogger, type LogLevel } from '../daemon/log.js';
import { checkInterfacesExist, loadConfigFile } from '../config/load.js';
import { ifindexOf } from '../daemon/netinfo.js';
import { detachAll } from '../bpf/detach.js';
import { ConfigError, PorttrigError } from '../errors.js';
import type { CloseResult, OpenResult } from '../core/state.js';
import { version } from '../paths.js';
import { runDoctor, type DoctorReport } from '../doctor/doctor.js';
import { existsSync } from 'node:fs';
import { callDaemon, streamDaemon } from './client.js';
import { ruleRow, table, tableLines } from './table.js';

const DEFAULT_CONFIG = '/etc/porttrig/porttrig.yaml';
const DEFAULT_SOCKET = '/run/porttrig/porttrig.sock';

interface GlobalOpts { json?: boolean; socket?: string; config?: string }

const out = (s: string): void => { process.stdout.write(`${s}\n`); };

/** The control socket: --socket, else the one in --config, else the default. */
function socketOf(o: GlobalOpts): string {
  if (o.socket) return o.socket;
  if (o.config) return loadConfigFile(o.config).control.socket;
  return DEFAULT_SOCKET;
}

function print(o: GlobalOpts, data: unknown, human: () => string): void {
  out(o.json ? JSON.stringify(data, null, 2) : human());
}

function exitCodeOf(e: unknown): number {
  if (e instanceof PorttrigError) return e.code === 'E_CONFIG' || e.code === 'E_USAGE' ? 2 : 1;
  return 1;
}

interface ListOpts { rule?: string; host?: string; peer?: string; family?: string; limit?: string }

/** The query string of a listing's options (the daemon checks them). */
function listQuery(o: ListOpts): string {
  const q = new URLSearchParams();
  for (const k of ['rule', 'host', 'peer', 'family', 'limit'] as const) if (o[k] !== undefined) q.set(k, o[k]!);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Rows printed as a table this many at a time; the first batch sets the column widths. */
const TABLE_BATCH = 1000;

/**
 * Print a streamed listing: with --json the daemon's array goes to stdout as
 * it arrives; else a table, printed in batches as rows arrive.
 */
async function listing(opts: GlobalOpts, path: string, columns: string[], none: string): Promise<void> {
  const socket = socketOf(opts);
  if (opts.json) {
    await streamDaemon(socket, path, { raw: (c) => { process.stdout.write(c); } });
    return;
  }
  let batch: Record<string, unknown>[] = [];
  let widths: number[] = [];
  let rows = 0;
  const flush = (): void => {
    if (batch.length === 0) return;
    const t = tableLines(batch, columns, widths);
    process.stdout.write(`${(rows === batch.length ? t.lines : t.lines.slice(1)).join('\n')}\n`);
    widths = t.widths;
    batch = [];
  };
  await streamDaemon(socket, path, {
    onRow: (r) => {
      batch.push(r as Record<string, unknown>);
      rows++;
      if (batch.length >= TABLE_BATCH) flush();
    },
  });
  if (rows === 0) out(none);
  else flush();
}

function fail(e: unknown, json: boolean): never {
  if (json && e instanceof PorttrigError) process.stderr.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
  else if (e instanceof ConfigError) process.stderr.write(`porttrig: invalid configuration:\n${e.message}\n`);
  else if (e instanceof PorttrigError) process.stderr.write(`porttrig: ${e.message}\n`);
  else process.stderr.write(`porttrig: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exit(exitCodeOf(e));
}

async function runDaemon(opts: { config: string; logLevel: LogLevel; conntrack: boolean }): Promise<void> {
  const logger = createLogger((l) => process.stderr.write(`${l}\n`), opts.logLevel);
  const d = await Daemon.start({ configPath: opts.config, logger, conntrack: opts.conntrack ? 'auto' : 'off' });
  process.on('SIGHUP', () => {
    try { d.reload(); } catch (e) { logger.error('reload refused; running config kept', { error: e instanceof PorttrigError ? e.message : e }); }
  });
  const stop = (sig: string) => (): void => {
    logger.info('signal', { signal: sig });
    void d.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop('SIGTERM'));
  process.on('SIGINT', stop('SIGINT'));
}

const STATUS_WIDTH = 'missing'.length;

/** The doctor's report as text: one line per check, its fix under it. */
function formatDoctor(r: DoctorReport): string {
  const lines = r.checks.flatMap((c) => [
    `${c.status.padEnd(STATUS_WIDTH)}  ${c.title}: ${c.detail}`,
    ...(c.fix && c.status !== 'ok' ? [`${' '.repeat(STATUS_WIDTH)}  -> ${c.fix}`] : []),
  ]);
  const missing = r.checks.filter((c) => c.required && c.status === 'missing').length;
  const warn = r.checks.filter((c) => c.status === 'warn').length;
  lines.push('', missing ? `${missing} required item${missing === 1 ? '' : 's'} missing` : `nothing required is missing${warn ? ` (${warn} warning${warn === 1 ? '' : 's'})` : ''}`);
  return lines.join('\n');
}

export function buildProgram(): Command {
  const program = new Command('porttrig')
    .description('Port triggering for Linux gateways (eBPF data path)')
    .version(version, '-V, --version')
    .option('--json', 'machine-readable JSON output')
    .option('--socket <path>', `control socket (default: from --config, else ${DEFAULT_SOCKET})`)
    .option('-c, --config <file>', 'configuration file (to find the control socket)')
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();

  let current: Command = program;
  const g = (): GlobalOpts => current.optsWithGlobals<GlobalOpts>();
  /** A subcommand that also takes --json, --socket and --config after its name. */
  const cmd = (nameAndArgs: string): Command => program.command(nameAndArgs)
    .option('--json', 'machine-readable JSON output')
    .option('--socket <path>', 'control socket')
    .option('-c, --config <file>', 'configuration file (to find the control socket)')
    .hook('preAction', (_p, action) => { current = action; });

  program.command('daemon')
    .description('run the daemon in the foreground (logs to stderr)')
    .option('-c, --config <file>', 'configuration file', DEFAULT_CONFIG)
    .addOption(new Option('--log-level <level>', 'lowest level logged').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .option('--no-conntrack', 'load the data path without its conntrack check, even where the kernel offers it (README, Decisions)')
    .action(async (o: { config: string; logLevel: LogLevel; conntrack: boolean }) => runDaemon(o));

  cmd('status')
    .description('what the daemon runs: interfaces, attachment, counts')
    .action(async () => {
      const s = await callDaemon<StatusView>(socketOf(g()), 'GET', '/v1/status');
      print(g(), s, () => [
        `porttrig ${s.version}, pid ${s.pid}, up since ${s.started_at}${s.adopted ? ' (adopted pinned state)' : ''}`,
        `config:   ${s.config}`,
        `pin path: ${s.pin_path}`,
        `WAN:      ${s.wan.interface} ${s.wan.address ?? '(no IPv4 address)'}`,
        `LAN:      ${s.lan.map((l) => l.interface).join(', ')}`,
        `attached: ${s.attached.map((a) => `${a.interface}${a.program_id ? `(prog ${a.program_id})` : '(NOT ATTACHED)'}`).join(', ')}`,
        `conntrack check: ${s.conntrack.check === null ? 'unknown' : s.conntrack.check ? 'on' : 'OFF'} (${s.conntrack.reason})`,
        `LAN IPv6: ${s.lan_ipv6_prefixes.join(', ') || '(no global or unique-local prefix)'}`,
        ...(s.xdp ? [`XDP fast path: ${s.xdp.attached ? 'attached' : `NOT ATTACHED (${s.xdp.error ?? 'WAN absent'})`}` +
          (s.xdp.tc_only.length ? `; on TC only: ${s.xdp.tc_only.map((l) => `${l.interface} (${l.reason})`).join(', ')}` : '')] : []),
        `rules ${s.rules}, sessions ${s.sessions} (IPv4 ${s.by_family.ipv4.sessions}, IPv6 ${s.by_family.ipv6.sessions}), ` +
          `flows ${s.flows} (IPv4 ${s.by_family.ipv4.flows}, IPv6 ${s.by_family.ipv6.flows})`,
      ].join('\n'));
    });

  const familyOption = (): Option => new Option('--family <family>', 'only this address family').choices(['ipv4', 'ipv6']);

  cmd('sessions')
    .description('open sessions of both address families (streamed; filter with --rule, --host, --peer, --family, --limit)')
    .option('--rule <name>', 'only sessions of this rule')
    .option('--host <addr>', 'only sessions of this LAN host (IPv4 or IPv6)')
    .option('--peer <addr>', 'only sessions for this remote peer (peer: contacted; IPv4 or IPv6)')
    .addOption(familyOption())
    .option('--limit <n>', 'at most this many')
    .action(async (o: ListOpts) => {
      await listing(g(), `/v1/sessions${listQuery(o)}`, ['rule', 'family', 'host', 'peer', 'opened_at', 'last_seen', 'expires_in_s', 'flows'], 'no open sessions');
    });

  cmd('flows')
    .description('accepted inbound flows of both address families (streamed; filter with --rule, --host, --peer, --family, --limit)')
    .option('--rule <name>', 'only flows of this rule')
    .option('--host <addr>', 'only flows to this LAN host (IPv4 or IPv6)')
    .option('--peer <addr>', 'only flows from this remote address (IPv4 or IPv6)')
    .addOption(familyOption())
    .option('--limit <n>', 'at most this many')
    .action(async (o: ListOpts) => {
      await listing(g(), `/v1/flows${listQuery(o)}`, ['rule', 'family', 'proto', 'remote', 'remote_port', 'wan_port', 'host', 'host_port', 'state', 'idle_s'], 'no flows');
    });

  cmd('rules')
    .description('configured rules with their counters (both families summed; IPv4/IPv6 in parentheses; --json: by_family)')
    .action(async () => {
      const rows = await callDaemon<RuleView[]>(socketOf(g()), 'GET', '/v1/rules');
      print(g(), rows, () => table(rows.map(ruleRow), ['name', 'enabled', 'trigger', 'open', 'peer', 'conflict', 'trigger_hits (v4/v6)', 'sessions_opened (v4/v6)', 'flows_opened (v4/v6)']));
    });

  cmd('open <rule> <host>')
    .description('open a session of RULE for LAN host HOST by hand, as its trigger would (conflict and sessions_per_host apply)')
    .option('--peer <addr>', 'remote peer allowed to connect (rules with peer: contacted; required there)')
    .option('--force', 'take the session over from another host even under conflict: first')
    .addHelpText('after', `
HOST is an IPv4 or IPv6 address (an IPv6 one global or unique-local, inside a
LAN prefix); --peer is of the same family. IPv6 hosts hold a rule's session
each in peer mode any; in peer mode contacted one host per peer (conflict).

Exit status: 0 opened or refreshed; 2 bad arguments (host not an IPv4 or IPv6
address, not inside a LAN subnet or prefix, --peer missing or not allowed, rule disabled);
1 refused by the state (unknown rule E_NOT_FOUND, held by another host
E_CONFLICT, sessions_per_host or map full E_LIMIT) or no daemon.`)
    .action(async (rule: string, host: string, o: { peer?: string; force?: boolean }) => {
      const r = await callDaemon<OpenResult>(socketOf(g()), 'POST', '/v1/sessions/open', { rule, host, peer: o.peer ?? null, force: !!o.force });
      const what = `${r.rule} for ${r.host}${r.peer ? ` (peer ${r.peer})` : ''}`;
      print(g(), r, () => (r.action === 'taken_over'
        ? `took over ${what} from ${r.previous_host}; closes after ${r.expires_in_s} s idle`
        : `${r.action} ${what}; closes after ${r.expires_in_s} s idle`));
    });

  cmd('close <rule> <host>')
    .description("close HOST's session of RULE (HOST IPv4 or IPv6); its flows follow the rule's kill_flows_on_expiry")
    .option('--peer <addr>', 'only the session for this remote peer (peer: contacted; default: all of the host)')
    .addHelpText('after', `
Exit status: 0 closed; 2 bad arguments; 1 no such rule or no open session
of the host (E_NOT_FOUND) or no daemon.`)
    .action(async (rule: string, host: string, o: { peer?: string }) => {
      const r = await callDaemon<CloseResult>(socketOf(g()), 'POST', '/v1/sessions/close', { rule, host, peer: o.peer ?? null });
      const n = (k: number, w: string): string => `${k} ${w}${k === 1 ? '' : 's'}`;
      print(g(), r, () => `closed ${n(r.closed.length, 'session')} of ${r.rule} for ${r.host}; ${r.flows_removed ? `${n(r.flows_removed, 'flow')} removed` : `${n(r.flows_kept, 'flow')} left to run out`}`);
    });

  cmd('reload')
    .description('apply the changed configuration file (like SIGHUP)')
    .action(async () => {
      const r = await callDaemon<{ rules: number }>(socketOf(g()), 'POST', '/v1/reload');
      print(g(), r, () => `reloaded: ${r.rules} rules`);
    });

  cmd('check-config <file>')
    .description('validate a configuration file; exit 2 with every error if it is invalid (--json: also its pinPath)')
    .option('--interfaces', 'also require the configured interfaces to exist now (the daemon itself waits for missing ones)')
    .action((file: string, o: { interfaces?: boolean }) => {
      const c = loadConfigFile(file);
      if (o.interfaces) {
        const missing = checkInterfacesExist(c, (n) => ifindexOf(n) !== 0);
        if (missing.length > 0) throw new ConfigError(file, missing);
      }
      // pinPath: where the package's maintainer scripts find the pinned state (packaging/deb).
      print(g(), { ok: true, rules: c.rules.length, pinPath: c.datapath.pinPath }, () => `${file}: ok (${c.rules.length} rules)`);
    });

  cmd('doctor')
    .description('what the kernel and machine support, what porttrig needs, and what to do about what is missing')
    .addHelpText('after', `
Reads only. With a configuration (--config, else ${DEFAULT_CONFIG} if it exists)
it also checks the interfaces, their forwarding sysctls and what else is
attached to them. Exit status: 0 nothing required is missing, 1 something is.`)
    .action(() => {
      const o = g();
      const configPath = o.config ?? (existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : null);
      const r = runDoctor({ configPath });
      print(o, r, () => formatDoctor(r));
      if (!r.ok) process.exitCode = 1;
    });

  cmd('detach')
    .description('remove the programs, the qdiscs porttrig created, and all pinned state')
    .option('--pin-path <dir>', 'pinned state (default: from --config)')
    .action((o: { pinPath?: string }) => {
      const pin = o.pinPath ?? (g().config ? loadConfigFile(g().config!).datapath.pinPath : '/sys/fs/bpf/porttrig');
      const r = detachAll(pin);
      print(g(), r, () => (r.interfaces.length === 0 && r.pinsRemoved === 0
        ? `nothing to do: no porttrig state under ${pin}`
        : `detached from ${r.interfaces.length} interfaces, removed ${r.pinsRemoved} pins under ${pin}`));
    });

  cmd('version')
    .description('print the version')
    .action(() => print(g(), { version }, () => version));

  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    fail(e, argv.includes('--json'));
  }
}

void main(process.argv);
