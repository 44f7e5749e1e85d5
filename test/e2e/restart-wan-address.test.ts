/**
 * End to end: the WAN address changes under a running daemon (a DHCP renew
 * with a new lease) and translation follows it without a restart (issue 4).
 * Flows accepted on the old address are dropped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { GW_WAN, Topology, WAN_SERVER, sleep, type Proc } from './topology.js';
import { cliJson } from './restart-util.js';
import { ConfigCodec, MAPS } from '../../src/bpf/abi.js';
import { U32 } from '../../src/bpf/struct.js';
import * as ffi from '../../src/ffi/libbpf.js';

const root = process.getuid?.() === 0;
const NEW_WAN = '203.0.113.9';
/** Generous: the netlink path takes milliseconds, the polling fallback one sweep (1 s). */
const FOLLOW_MS = 5000;
const NO_REPLY_MS = 1500;
const RULES = `  - name: irc-ident
    trigger: tcp/6667
    open: tcp/113
`;

interface Flow { remote_port: number; wan_port: number }

/** The WAN address the data path translates to, read from the pinned pt_config. */
function pinnedWanAddr(pinPath: string): string {
  const fd = ffi.objGet(join(pinPath, MAPS.config));
  assert.ok(fd >= 0, `open pinned pt_config: ${fd}`);
  try {
    const v = Buffer.alloc(ConfigCodec.size);
    assert.equal(ffi.mapLookup(fd, U32.format(0), v), 0);
    return ConfigCodec.parse(v).wan_addr;
  } finally {
    ffi.closeFd(fd);
  }
}

/** Wait until the daemon has logged `line` (its stderr arrives through a pipe). */
async function logged(d: Proc, line: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!d.stderr.includes(line)) {
    assert.ok(Date.now() < deadline, `not logged: ${line}\n${d.stderr}`);
    await sleep(20);
  }
}

test('a new WAN address is followed within moments: the new address forwards, the old one does not', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const d = await topo.startDaemon(topo.writeConfig(RULES));
  const irc = topo.peer(topo.ns.wan, 'tcp-echo', 6667);
  await irc.waitFor((e) => e.event === 'listening');
  const ident = topo.peer(topo.ns.lan, 'tcp-echo', 113);
  await ident.waitFor((e) => e.event === 'listening');
  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000)).ok, true);
  const talk = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 113);
  const connected = await talk.waitFor((e) => e.event === 'connected');
  talk.send('before');
  await talk.waitFor((e) => e.reply === 'echo:before');
  assert.equal(pinnedWanAddr(topo.pinPath), GW_WAN);

  // Packets to the old address still reach the gateway (a stale upstream
  // route): the WAN server keeps a static neighbour entry for it.
  const mac = (JSON.parse(topo.exec(topo.ns.gw, 'ip', '-j', 'link', 'show', 'wan0')) as { address: string }[])[0]!.address;
  topo.exec(topo.ns.wan, 'ip', 'neigh', 'replace', GW_WAN, 'lladdr', mac, 'dev', 'eth0', 'nud', 'permanent');

  topo.exec(topo.ns.gw, 'ip', 'addr', 'del', `${GW_WAN}/24`, 'dev', 'wan0');
  const t0 = process.hrtime.bigint();  // includes the run time of the ip command itself
  topo.exec(topo.ns.gw, 'ip', 'addr', 'add', `${NEW_WAN}/24`, 'dev', 'wan0');
  const deadline = Date.now() + FOLLOW_MS;
  while (pinnedWanAddr(topo.pinPath) !== NEW_WAN) {
    assert.ok(Date.now() < deadline, `the data path still translates to ${pinnedWanAddr(topo.pinPath)} after ${FOLLOW_MS} ms`);
    await sleep(1);
  }
  t.diagnostic(`WAN address followed ${Number(process.hrtime.bigint() - t0) / 1e6} ms after the address change`);
  await logged(d, `msg="WAN address" interface=wan0 address=${NEW_WAN}`);

  const fresh = await topo.once(topo.ns.wan, 'tcp-once', NEW_WAN, 113, 'new', 3000);
  assert.deepEqual({ ok: fresh.ok, reply: fresh.reply }, { ok: true, reply: 'echo:new' }, JSON.stringify(fresh));
  const old = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'old', NO_REPLY_MS);
  assert.equal(old.ok, false, `a connection to the old address was forwarded: ${JSON.stringify(old)}`);

  // The flow accepted on the old address is dropped; only the new one is listed.
  const flows = await cliJson<Flow[]>(topo, 'flows');
  assert.equal(flows.some((f) => f.remote_port === Number(connected.local_port)), false, `old flow still listed: ${JSON.stringify(flows)}`);
  assert.equal(flows.length, 1, JSON.stringify(flows));
  await logged(d, `msg="flows on the replaced WAN address dropped" address=${GW_WAN} entries=2`);
});
