/**
 * A small network peer run inside a test namespace (`ip netns exec NS node
 * peer.js MODE ...`). It prints one JSON line per event on stdout, so tests
 * can assert what a user's application would see. Servers of several ports
 * print one "listening" line once all of them listen.
 *
 *   tcp-echo PORT...              accept on each PORT, report the peer and each line, echo lines back
 *   tcp-talk HOST PORT            connect; each stdin line is sent and the echo printed;
 *                                 reports an error or the connection's close
 *   tcp-once HOST PORT MSG MS     connect, send MSG, print the echo or the failure
 *   udp-echo PORT...              echo datagrams to each PORT, reporting the sender
 *   udp-talk PORT                 report datagrams to PORT and their sender; each stdin
 *                                 line "HOST PORT MSG" is sent from PORT (no echo);
 *                                 "every MS HOST PORT MSG" sends MSG-0, MSG-1, ... every
 *                                 MS ms (timed here, not by the test process) until "stop",
 *                                 which reports how many were sent
 *   udp-once HOST PORT MSG MS     send MSG from a fresh socket, print the reply and its source
 *   udp-connected HOST PORT MSG MS
 *                                 send MSG from a connected socket: an ICMP error about it
 *                                 comes back as an error (ECONNREFUSED for port unreachable)
 *   udp-callback PORT CBHOST CBPORT MS
 *                                 on each datagram, at once connect (TCP) to CBHOST:CBPORT
 *                                 and print whether it got through
 *   irc-whois HOST PORT NICK MS   register with an IRC server as NICK (USER NICK), WHOIS
 *                                 itself and print the user name and host the server gives
 *                                 it (RPL_WHOISUSER; "~NICK" when its ident lookup failed)
 *
 * Clients use the family of the HOST they are given. Servers listen on IPv4
 * only, or with PT_PEER_DUAL=1 (a dual-stack topology) on IPv4 and IPv6 (one
 * socket bound to ::); addresses are printed as plain IPv4 or IPv6, never as
 * IPv4-mapped ::ffff:a.b.c.d.
 */
import { createServer, connect, isIPv4, isIPv6, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const say = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
const [mode, ...a] = process.argv.slice(2);
const dual = process.env.PT_PEER_DUAL === '1';
/** Where servers listen, and the family of their UDP sockets. */
const ANY = dual ? '::' : '0.0.0.0';
const UDP_SERVER = dual ? 'udp6' : 'udp4';
/** An address as users write it: IPv4-mapped IPv6 back to IPv4. */
const plain = (addr: string | undefined): string | undefined => (addr?.startsWith('::ffff:') && isIPv4(addr.slice(7)) ? addr.slice(7) : addr);
/** A destination for a server's socket: IPv4 as IPv4-mapped on a dual-stack one. */
const dest = (host: string): string => (dual && isIPv4(host) ? `::ffff:${host}` : host);
/** A client's UDP socket family: that of its destination. */
const udpFor = (host: string): 'udp4' | 'udp6' => (isIPv6(host) ? 'udp6' : 'udp4');

function lines(sock: Socket, onLine: (l: string) => void): void {
  let buf = '';
  sock.on('data', (d) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) { onLine(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
}

/** Run `listen(port, done)` for every port; say "listening" when all are done. */
function listenAll(ports: string[], listen: (port: number, done: () => void) => void): void {
  let left = ports.length;
  for (const p of ports) listen(Number(p), () => { if (--left === 0) say({ event: 'listening' }); });
}

function tcpOnce(host: string, port: number, msg: string, ms: number, done: (r: Record<string, unknown>) => void): void {
  const s = connect({ host, port });
  const t = setTimeout(() => { s.destroy(); done({ ok: false, error: 'timeout' }); }, ms);
  s.on('connect', () => s.write(`${msg}\n`));
  lines(s, (l) => { clearTimeout(t); s.end(); done({ ok: true, reply: l, local: plain(s.localAddress), remote: plain(s.remoteAddress) }); });
  s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); done({ ok: false, error: e.code ?? e.message }); });
}

switch (mode) {
  case 'tcp-echo':
    listenAll(a, (port, done) => {
      createServer((s) => {
        say({ event: 'accept', remote: plain(s.remoteAddress), remote_port: s.remotePort, local: plain(s.localAddress), local_port: s.localPort });
        lines(s, (l) => {
          say({ event: 'line', remote: plain(s.remoteAddress), remote_port: s.remotePort, local_port: s.localPort, line: l });
          s.write(`echo:${l}\n`);
        });
        s.on('error', () => {});
      }).listen(port, ANY, done);
    });
    break;
  case 'tcp-talk': {
    const s = connect({ host: a[0]!, port: Number(a[1]) });
    s.on('connect', () => say({ event: 'connected', local_port: s.localPort }));
    s.on('error', (e: NodeJS.ErrnoException) => say({ event: 'error', error: e.code }));
    s.on('close', () => say({ event: 'closed' }));
    lines(s, (l) => say({ event: 'reply', reply: l }));
    createInterface({ input: process.stdin }).on('line', (l) => s.write(`${l}\n`));
    break;
  }
  case 'tcp-once':
    tcpOnce(a[0]!, Number(a[1]), a[2]!, Number(a[3]), (r) => { say(r); process.exit(0); });
    break;
  case 'udp-echo':
    listenAll(a, (port, done) => {
      const s = createSocket(UDP_SERVER);
      s.on('message', (m, r) => {
        say({ event: 'datagram', remote: plain(r.address), remote_port: r.port, local_port: port, data: m.toString() });
        s.send(`echo:${m.toString()}`, r.port, r.address);
      });
      s.bind(port, ANY, done);
    });
    break;
  case 'udp-talk': {
    const s = createSocket(UDP_SERVER);
    s.on('message', (m, r) => say({ event: 'datagram', remote: plain(r.address), remote_port: r.port, data: m.toString() }));
    s.bind(Number(a[0]), ANY, () => say({ event: 'listening' }));
    let timer: NodeJS.Timeout | undefined;
    let sent = 0;
    createInterface({ input: process.stdin }).on('line', (l) => {
      const words = l.split(' ');
      if (words[0] === 'every') {
        const [, ms, host, port, msg] = words;
        const tick = (): void => { s.send(`${msg}-${sent++}`, Number(port), dest(host!)); };
        clearInterval(timer);
        sent = 0;
        tick();
        timer = setInterval(tick, Number(ms));
      } else if (words[0] === 'stop') {
        clearInterval(timer);
        say({ event: 'stopped', sent });
      } else {
        const [host, port, ...msg] = words;
        s.send(msg.join(' '), Number(port), dest(host!));
      }
    });
    break;
  }
  case 'udp-once': {
    const s = createSocket(udpFor(a[0]!));
    const t = setTimeout(() => { say({ ok: false, error: 'timeout' }); process.exit(0); }, Number(a[3]));
    s.on('message', (m, r) => { clearTimeout(t); say({ ok: true, reply: m.toString(), from: plain(r.address), from_port: r.port }); process.exit(0); });
    s.send(a[2]!, Number(a[1]), a[0]!);
    break;
  }
  case 'udp-connected': {
    const s = createSocket(udpFor(a[0]!));
    const t = setTimeout(() => { say({ ok: false, error: 'timeout' }); process.exit(0); }, Number(a[3]));
    s.on('message', (m, r) => { clearTimeout(t); say({ ok: true, reply: m.toString(), from: plain(r.address), from_port: r.port }); process.exit(0); });
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); say({ ok: false, error: e.code ?? e.message }); process.exit(0); });
    s.connect(Number(a[1]), a[0]!, () => s.send(a[2]!));
    break;
  }
  case 'udp-callback': {
    const s = createSocket(UDP_SERVER);
    s.on('message', (_m, r) => {
      tcpOnce(a[1]!, Number(a[2]), 'callback', Number(a[3]), (res) => say({ event: 'callback', trigger_from: plain(r.address), ...res }));
    });
    s.bind(Number(a[0]), ANY, () => say({ event: 'listening' }));
    break;
  }
  case 'irc-whois': {
    const [host, port, nick, ms] = a;
    const s = connect({ host: host!, port: Number(port) });
    const t = setTimeout(() => { say({ ok: false, error: 'timeout' }); process.exit(0); }, Number(ms));
    let whois = false;
    s.on('connect', () => s.write(`NICK ${nick}\r\nUSER ${nick} 0 * :porttrig test\r\n`));
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); say({ ok: false, error: e.code ?? e.message }); process.exit(0); });
    lines(s, (l) => {
      const [, cmd, ...rest] = l.trimEnd().split(' ');
      if (cmd === '001' && !whois) { whois = true; s.write(`WHOIS ${nick}\r\n`); }
      // :server 311 me NICK USER HOST * :realname
      if (cmd === '311') {
        clearTimeout(t);
        s.end('QUIT\r\n');
        say({ ok: true, user: rest[2], host: rest[3], local: plain(s.localAddress) });
        process.exit(0);
      }
    });
    break;
  }
  default:
    process.stderr.write(`peer: unknown mode ${mode}\n`);
    process.exit(2);
}
