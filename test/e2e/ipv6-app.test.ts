/**
 * End to end with real applications over IPv6: an IRC server (ngircd) on the
 * WAN and an ident server (oidentd) on the LAN host. When a client registers,
 * ngircd connects back to the client's address on TCP 113 and asks who owns
 * the connection (RFC 1413); without an answer it marks the user with "~".
 * Behind the dual-stack gateway's usual firewall that connection is dropped,
 * until the rule `tcp/6667 -> open tcp/113` (added with `porttrig reload`)
 * opens the pinhole on the client's own connection to the IRC server.
 *
 * ngircd does its ident lookup only together with its DNS lookup; the WAN
 * namespace gets its own hosts, nsswitch.conf and resolv.conf (files in
 * /etc/netns/NS/, which `ip netns exec` mounts over /etc/...), so no query
 * leaves the namespace. Both daemons drop privileges (which clears a
 * parent-death signal), so each runs under a shell that is PID 1 of its own
 * PID namespace (unshare --pid --fork --kill-child): when the test kills
 * unshare, the shell dies and the kernel kills the rest of the namespace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LAN6_HOST, Topology, WAN6_SERVER, sleep, type Proc } from './topology.js';

const root = process.getuid?.() === 0;
const NGIRCD = '/usr/sbin/ngircd';
const OIDENTD = '/usr/sbin/oidentd';
const SKIP = !root ? 'needs root' : !existsSync(NGIRCD) || !existsSync(OIDENTD) ? 'needs ngircd and oidentd (scripts/setup.sh)' : false;
/** ngircd waits 10 s for an ident answer that never comes; then registration, with margin. */
const REGISTER_MS = 30_000;
/** How long the daemons may take to listen. */
const START_MS = 15_000;
const LAN_NAME = 'lanhost.test.example';

const BEFORE = `  - name: unrelated
    trigger: udp/9999
    open: udp/9998
`;
const AFTER = `${BEFORE}  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
`;

/** Run `argv` in `ns` under a shell that is PID 1 of a new PID namespace; its output goes to stderr. */
function contained(topo: Topology, ns: string, argv: string[]): Proc {
  return topo.spawn(ns, 'unshare', ['--pid', '--fork', '--kill-child', 'sh', '-c', '"$@" >&2 & wait', 'sh', ...argv]);
}

/** Wait until something in `ns` listens on TCP `port`. */
async function listening(topo: Topology, ns: string, port: number, proc: Proc): Promise<void> {
  const deadline = Date.now() + START_MS;
  while (!topo.exec(ns, 'ss', '-Hltn', `sport = :${port}`).trim()) {
    if (proc.child.exitCode !== null || Date.now() > deadline) throw new Error(`nothing listens on ${port} in ${ns}: ${proc.stderr.slice(-2000)}`);
    await sleep(100);
  }
}

describe('a real application over IPv6: ngircd asks oidentd on the LAN host back through the gateway', { skip: SKIP }, () => {
  let topo: Topology;
  let etc: string;
  let ircd: Proc;
  let identd: Proc;

  before(async () => {
    topo = new Topology({ ipv6: true });
    etc = join('/etc/netns', topo.ns.wan);
    topo.create();
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n${LAN6_HOST} ${LAN_NAME}\n`);
    writeFileSync(join(etc, 'nsswitch.conf'), 'hosts: files\n');
    // Nothing listens on the namespace's own loopback: a DNS query fails at once.
    writeFileSync(join(etc, 'resolv.conf'), 'nameserver 127.0.0.1\n');
    const conf = join(topo.dir, 'ngircd.conf');
    writeFileSync(conf, `[Global]
  Name = irc.test.example
  Info = porttrig IPv6 application test
  Listen = ::
  Ports = 6667
  MotdPhrase = porttrig test
  PidFile = ${join(topo.dir, 'ngircd.pid')}
  ServerUID = irc
  ServerGID = irc
[Options]
  DNS = yes
  Ident = yes
  PAM = no
  RequireAuthPing = no
`);
    await topo.startDaemon(topo.writeConfig(BEFORE));
    ircd = contained(topo, topo.ns.wan, [NGIRCD, '--nodaemon', '--config', conf]);
    identd = contained(topo, topo.ns.lan, [OIDENTD, '--foreground', '--nosyslog', '--debug', '--address', '::']);
    await Promise.all([listening(topo, topo.ns.wan, 6667, ircd), listening(topo, topo.ns.lan, 113, identd)]);
  });
  after(() => {
    topo?.destroy();
    if (etc) rmSync(etc, { recursive: true, force: true });
  });

  test('without a rule the ident lookup is dropped by the firewall: the user shows as ~nick', async () => {
    const r = await topo.once(topo.ns.lan, 'irc-whois', WAN6_SERVER, 6667, 'alice', REGISTER_MS);
    assert.deepEqual([r.ok, r.user, r.host, r.local], [true, '~alice', LAN_NAME, LAN6_HOST], `${JSON.stringify(r)}\nngircd: ${ircd.stderr.slice(-1500)}`);
    assert.doesNotMatch(identd.stderr, /Connection from/, 'the ident server was reached without a rule');
    assert.match(ircd.stderr, /IDENT lookup for connection \d+: no result/);
  });

  test('with tcp/6667 -> open tcp/113 (reload) the lookup gets through and ident answers', async () => {
    topo.writeConfig(AFTER);
    const rl = await topo.cli('reload');
    assert.equal(rl.status, 0, rl.stderr);
    const r = await topo.once(topo.ns.lan, 'irc-whois', WAN6_SERVER, 6667, 'bob', REGISTER_MS);
    // The client runs as root: oidentd names the owner of the connection.
    assert.deepEqual([r.ok, r.user, r.local], [true, 'root', LAN6_HOST],
      `${JSON.stringify(r)}\nngircd: ${ircd.stderr.slice(-1500)}\noidentd: ${identd.stderr.slice(-1500)}`);
    assert.match(identd.stderr, new RegExp(`Connection from ${WAN6_SERVER.replace(/\./g, '\\.')}`), 'the lookup came from the IRC server itself');
    const sessions = (await topo.sessions()).filter((s) => s.rule === 'irc-ident');
    assert.deepEqual(sessions.map((s) => [s.host, s.family]), [[LAN6_HOST, 'ipv6']], JSON.stringify(sessions));
  });
});
