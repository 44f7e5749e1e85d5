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
 */
import { createServer, connect, type Socket } from 'node:net';
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const say = (o: Record<string, unknown>): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };
const [mode, ...a] = process.argv.slice(2);

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
  lines(s, (l) => { clearTimeout(t); s.end(); done({ ok: true, reply: l, local: s.localAddress, remote: s.remoteAddress }); });
  s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); done({ ok: false, error: e.code ?? e.message }); });
}

switch (mode) {
  case 'tcp-echo':
    listenAll(a, (port, done) => {
      createServer((s) => {
        say({ event: 'accept', remote: s.remoteAddress, remote_port: s.remotePort, local: s.localAddress, local_port: s.localPort });
        lines(s, (l) => {
          say({ event: 'line', remote: s.remoteAddress, remote_port: s.remotePort, local_port: s.localPort, line: l });
          s.write(`echo:${l}\n`);
        });
        s.on('error', () => {});
      }).listen(port, '0.0.0.0', done);
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
      const s = createSocket('udp4');
      s.on('message', (m, r) => {
        say({ event: 'datagram', remote: r.address, remote_port: r.port, local_port: port, data: m.toString() });
        s.send(`echo:${m.toString()}`, r.port, r.address);
      });
      s.bind(port, '0.0.0.0', done);
    });
    break;
  case 'udp-talk': {
    const s = createSocket('udp4');
    s.on('message', (m, r) => say({ event: 'datagram', remote: r.address, remote_port: r.port, data: m.toString() }));
    s.bind(Number(a[0]), '0.0.0.0', () => say({ event: 'listening' }));
    let timer: NodeJS.Timeout | undefined;
    let sent = 0;
    createInterface({ input: process.stdin }).on('line', (l) => {
      const words = l.split(' ');
      if (words[0] === 'every') {
        const [, ms, host, port, msg] = words;
        const tick = (): void => { s.send(`${msg}-${sent++}`, Number(port), host!); };
        clearInterval(timer);
        sent = 0;
        tick();
        timer = setInterval(tick, Number(ms));
      } else if (words[0] === 'stop') {
        clearInterval(timer);
        say({ event: 'stopped', sent });
      } else {
        const [host, port, ...msg] = words;
        s.send(msg.join(' '), Number(port), host!);
      }
    });
    break;
  }
  case 'udp-once': {
    const s = createSocket('udp4');
    const t = setTimeout(() => { say({ ok: false, error: 'timeout' }); process.exit(0); }, Number(a[3]));
    s.on('message', (m, r) => { clearTimeout(t); say({ ok: true, reply: m.toString(), from: r.address, from_port: r.port }); process.exit(0); });
    s.send(a[2]!, Number(a[1]), a[0]!);
    break;
  }
  case 'udp-connected': {
    const s = createSocket('udp4');
    const t = setTimeout(() => { say({ ok: false, error: 'timeout' }); process.exit(0); }, Number(a[3]));
    s.on('message', (m, r) => { clearTimeout(t); say({ ok: true, reply: m.toString(), from: r.address, from_port: r.port }); process.exit(0); });
    s.on('error', (e: NodeJS.ErrnoException) => { clearTimeout(t); say({ ok: false, error: e.code ?? e.message }); process.exit(0); });
    s.connect(Number(a[1]), a[0]!, () => s.send(a[2]!));
    break;
  }
  case 'udp-callback': {
    const s = createSocket('udp4');
    s.on('message', (_m, r) => {
      tcpOnce(a[1]!, Number(a[2]), 'callback', Number(a[3]), (res) => say({ event: 'callback', trigger_from: r.address, ...res }));
    });
    s.bind(Number(a[0]), '0.0.0.0', () => say({ event: 'listening' }));
    break;
  }
  default:
    process.stderr.write(`peer: unknown mode ${mode}\n`);
    process.exit(2);
}
