/**
 * End to end: `porttrig reload` and SIGHUP (SPEC 6). Rules keep their
 * identity by name: their sessions and flows stay, a changed idle_timeout
 * applies to the sessions already open; a removed rule's sessions close and
 * its flows end; a file that fails validation is refused with its errors and
 * the running config goes on working.
 */
import { test } from 'node:test';
import { callDaemon } from '../../src/cli/client.js';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { GW_WAN, Topology, WAN_SERVER, sleep, type Proc } from './topology.js';
import { cliJson } from './restart-util.js';

const root = process.getuid?.() === 0;
/** The shorter idle timeout the reload gives `keep`. */
const NEW_IDLE_S = 5;
/** Sweep interval (1 s) plus margin for a loaded machine. */
const SWEEP_SLACK_MS = 2500;
const NO_REPLY_MS = 1500;
/** opened_at is converted from the monotonic clock at each listing (a preemption between the two clock reads shifts it); a re-opened session would be seconds off. */
const CLOCK_SLACK_MS = 50;

const rule = (name: string, trigger: string, open: string, idle = '10m'): string =>
  `  - name: ${name}\n    trigger: ${trigger}\n    open: ${open}\n    idle_timeout: ${idle}\n`;
const BEFORE = rule('keep', 'tcp/6667', 'tcp/113') + rule('gone', 'udp/5060', 'tcp/5061');
const AFTER = rule('keep', 'tcp/6667', 'tcp/113', `${NEW_IDLE_S}s`) + rule('fresh', 'udp/7000', 'tcp/7001');

interface Session { rule: string; host: string; opened_at: string }
interface Flow { rule: string; wan_port: number }
interface Rule { name: string; id: number }

async function listening(p: Proc): Promise<Proc> { await p.waitFor((e) => e.event === 'listening'); return p; }

/** Send a line on a tcp-talk peer; true if its echo came back in time. */
async function echoes(talk: Proc, line: string, ms = 3000): Promise<boolean> {
  talk.send(line);
  try { await talk.waitFor((e) => e.reply === `echo:${line}`, ms); return true; } catch { return false; }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(100);
  }
}

test('reload keeps sessions and flows by rule name, closes removed rules, applies new timeouts, refuses bad files', { skip: !root && 'needs root' }, async (t) => {
  const topo = new Topology();
  t.after(() => topo.destroy());
  topo.create();
  const cfg = topo.writeConfig(BEFORE);
  const d = await topo.startDaemon(cfg);
  await listening(topo.peer(topo.ns.wan, 'tcp-echo', 6667));
  await listening(topo.peer(topo.ns.wan, 'udp-echo', 5060));
  await listening(topo.peer(topo.ns.wan, 'udp-echo', 7000));
  for (const port of [113, 5061, 7001]) await listening(topo.peer(topo.ns.lan, 'tcp-echo', port));

  assert.equal((await topo.once(topo.ns.lan, 'tcp-once', WAN_SERVER, 6667, 'NICK x', 3000)).ok, true);
  assert.equal((await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 5060, 'INVITE', 3000)).ok, true);
  const talkKeep = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 113);
  const talkGone = topo.peer(topo.ns.wan, 'tcp-talk', GW_WAN, 5061);
  assert.ok(await echoes(talkKeep, 'k1'));
  assert.ok(await echoes(talkGone, 'g1'));
  const sessions0 = await cliJson<Session[]>(topo, 'sessions');
  assert.deepEqual(sessions0.map((s) => s.rule), ['gone', 'keep']);
  const goneId = (await cliJson<Rule[]>(topo, 'rules')).find((r) => r.name === 'gone')!.id;

  // A valid change: keep stays (shorter timeout), gone goes, fresh arrives.
  // keep's host answers once more right before, and the check asks the
  // socket directly: on a loaded machine each CLI run takes 1-2 s, and four
  // of them since the last packet outlast the new 5 s timeout.
  assert.ok(await echoes(talkKeep, 'k1b'));
  topo.writeConfig(AFTER);
  const r = await topo.cli('reload');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /reloaded: 2 rules/);
  const kept = (await callDaemon<Session[]>(topo.socket, 'GET', '/v1/sessions')).find((s) => s.rule === 'keep');
  assert.ok(kept, 'keep\'s session survives the reload');
  const drift = Date.parse(kept.opened_at) - Date.parse(sessions0.find((s) => s.rule === 'keep')!.opened_at);
  assert.ok(Math.abs(drift) <= CLOCK_SLACK_MS, `keep's session is the same one (opened_at moved ${drift} ms)`);
  await until('the removed rule\'s session is closed', async () => !(await cliJson<Session[]>(topo, 'sessions')).some((s) => s.rule === 'gone'), SWEEP_SLACK_MS);
  await until('the removed rule\'s flow is removed', async () => !(await cliJson<Flow[]>(topo, 'flows')).some((f) => f.wan_port === 5061), SWEEP_SLACK_MS);
  assert.equal(await echoes(talkGone, 'g2', NO_REPLY_MS), false, 'a removed rule\'s flow no longer forwards');
  assert.ok(await echoes(talkKeep, 'k2'), 'keep\'s flow still forwards');
  const rules1 = await cliJson<Rule[]>(topo, 'rules');
  assert.notEqual(rules1.find((x) => x.name === 'fresh')!.id, goneId, 'a new rule does not inherit a removed rule\'s id');
  assert.equal((await cliJson<Flow[]>(topo, 'flows')).filter((f) => f.wan_port === 113).length, 1);

  // The new idle timeout applies to the session opened under the old one.
  await sleep(NEW_IDLE_S * 1000 + SWEEP_SLACK_MS);
  assert.deepEqual((await cliJson<Session[]>(topo, 'sessions')).filter((s) => s.rule === 'keep'), [], `keep idles out after ${NEW_IDLE_S} s`);
  const closed = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 113, 'late', NO_REPLY_MS);
  assert.equal(closed.ok, false, JSON.stringify(closed));

  // A file that fails validation: refused with its errors, the running config stays.
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('open: tcp/7001', 'open: tcp/70000'));
  const bad = await topo.cli('reload');
  assert.equal(bad.status, 2, bad.stdout);
  assert.match(bad.stderr, /rules\[1\]\.open.*70000/);
  d.kill('SIGHUP');
  await until('SIGHUP with a bad file is refused in the log', () => /reload refused; running config kept/.test(d.stderr), 5000);
  assert.equal((await topo.cli('status')).status, 0, 'the daemon still serves');
  assert.equal((await topo.once(topo.ns.lan, 'udp-once', WAN_SERVER, 7000, 'hello', 3000)).ok, true);
  const fresh = await topo.once(topo.ns.wan, 'tcp-once', GW_WAN, 7001, 'in', 3000);
  assert.deepEqual({ ok: fresh.ok, reply: fresh.reply }, { ok: true, reply: 'echo:in' }, 'the running config still opens ports');

  // SIGHUP with a valid file applies it.
  topo.writeConfig(AFTER + rule('extra', 'udp/7100', 'tcp/7101'));
  d.kill('SIGHUP');
  await until('SIGHUP applied the file', async () => (await cliJson<Rule[]>(topo, 'rules')).some((x) => x.name === 'extra'), 5000);
});
