#!/usr/bin/env bash
# End-to-end scenarios across the three VMs, run from the host over ssh.
# Usage: scenarios.sh SSH_CONFIG   (from `vagrant ssh-config`; hosts client, gateway, server)
# Needs: porttrig running on the gateway with vagrant/porttrig-vm.yaml and
# pt-peer installed on the client and server (run.sh does both).
# Prints one line per scenario (PASS/FAIL with the evidence) and a closing
# "N passed, N failed" line; exits non-zero if any scenario failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vagrant/net.env
. "$here/net.env"
cfg=${1:?usage: scenarios.sh SSH_CONFIG}

# The "short" rule's idle timeout in vagrant/porttrig-vm.yaml, and the margin
# past it before the expiry is checked (sweep interval, emulation, ssh latency).
SHORT_IDLE_S=10
EXPIRY_MARGIN_S=8
METRICS_PORT=9469

on() { local host=$1; shift; ssh -F "$cfg" -o LogLevel=ERROR "$host" "$@"; }
pt() { on gateway sudo /opt/porttrig/bin/porttrig "$@"; }

passed=0 failed=0 results=()
# check NAME EXPECTED_REGEX ACTUAL: a scenario passes when ACTUAL matches.
check() {
  local name=$1 want=$2 got=$3
  if grep -Eq -- "$want" <<< "$got"; then
    passed=$((passed + 1)); results+=("PASS  $name")
    echo "PASS  $name"
  else
    failed=$((failed + 1)); results+=("FAIL  $name")
    echo "FAIL  $name"
    echo "      wanted /$want/, got: $(printf '%s' "$got" | tr '\n' ' ' | cut -c1-300)"
  fi
}
# check_not NAME FORBIDDEN_REGEX ACTUAL: passes when ACTUAL does not match.
check_not() {
  local name=$1 bad=$2 got=$3
  if grep -Eq -- "$bad" <<< "$got"; then
    failed=$((failed + 1)); results+=("FAIL  $name")
    echo "FAIL  $name"
    echo "      must not match /$bad/, got: $(printf '%s' "$got" | tr '\n' ' ' | cut -c1-300)"
  else
    passed=$((passed + 1)); results+=("PASS  $name")
    echo "PASS  $name   (got: $(printf '%s' "$got" | tr '\n' ' ' | cut -c1-120))"
  fi
}
# sessions: "RULE HOST" per open session, from `porttrig sessions --json`
# (the CLI as an operator runs it; parsed on the host, where node is). The
# CLI's stderr passes through unparsed, so a failure shows in the evidence.
sessions() {
  { pt sessions --json 2>&3 | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      try { for (const x of JSON.parse(s)) console.log(`${x.rule} ${x.host}`); }
      catch { console.log(`not JSON: ${s.slice(0, 300)}`); }
    });'; } 3>&1
}

echo "== servers: client (LAN host) answers on tcp/113, udp/27000, tcp/7001; server (WAN) on tcp/6667, udp/27015, tcp/7000"
# As root: 113 is a privileged port.
on client "sudo pt-peer tcp-serve 113 ident-ok; sudo pt-peer udp-serve 27000 game-lan-ok; sudo pt-peer tcp-serve 7001 short-ok"
on server "sudo pt-peer tcp-serve 6667 irc-ok; sudo pt-peer udp-serve 27015 game-wan-ok; sudo pt-peer tcp-serve 7000 short-trigger-ok"
# Each server answers locally first: proof that it listens, and it warms the
# guest's caches (a first fork+exec under emulation can take seconds).
check "client: its servers answer locally" 'ident-ok from 127.0.0.1.*game-lan-ok from 127.0.0.1.*short-ok from 127.0.0.1' \
  "$(on client 'pt-peer tcp-ask 127.0.0.1 113; pt-peer udp-ask 127.0.0.1 27000; pt-peer tcp-ask 127.0.0.1 7001' | tr '\n' ' ')"
check "server: its servers answer locally" 'irc-ok from 127.0.0.1.*game-wan-ok from 127.0.0.1.*short-trigger-ok from 127.0.0.1' \
  "$(on server 'pt-peer tcp-ask 127.0.0.1 6667; pt-peer udp-ask 127.0.0.1 27015; pt-peer tcp-ask 127.0.0.1 7000' | tr '\n' ' ')"

status=$(pt status 2>&1)
check "gateway: porttrig status shows WAN wan0 $PT_WAN_GW" "^WAN: +wan0 ${PT_WAN_GW//./\\.}\$" "$status"
check "gateway: programs attached to lan0 and wan0" \
  '^attached: +(lan0\(prog [0-9]+\), wan0\(prog [0-9]+\)|wan0\(prog [0-9]+\), lan0\(prog [0-9]+\))$' "$status"

# TCP: irc-ident (trigger tcp/6667, open tcp/113)
# Before a trigger the gateway itself refuses (RST / ICMP port unreachable):
# proof that the packet reached the gateway and was not forwarded.
check "tcp: inbound 203.0.113.1:113 refused by the gateway before the trigger" 'Connection refused' \
  "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"
check "tcp: client reaches server:6667 through the gateway, masqueraded (the trigger)" \
  "irc-ok from $PT_WAN_GW" "$(on client pt-peer tcp-ask "$PT_WAN_SERVER" 6667)"
check "tcp: inbound 203.0.113.1:113 forwarded to the client after the trigger, source kept" \
  "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"

# UDP: game (trigger udp/27015, open udp/27000)
check "udp: inbound 203.0.113.1:27000 refused by the gateway before the trigger" 'Connection refused' \
  "$(on server pt-peer udp-ask "$PT_WAN_GW" 27000)"
check "udp: client reaches server:27015 through the gateway, masqueraded (the trigger)" \
  "game-wan-ok from $PT_WAN_GW" "$(on client pt-peer udp-ask "$PT_WAN_SERVER" 27015)"
check "udp: inbound 203.0.113.1:27000 forwarded to the client after the trigger, reply translated back" \
  "game-lan-ok from $PT_WAN_SERVER" "$(on server pt-peer udp-ask "$PT_WAN_GW" 27000)"

open_sessions=$(sessions)
check "porttrig sessions: irc-ident open for the client" "^irc-ident $PT_LAN_CLIENT\$" "$open_sessions"
check "porttrig sessions: game open for the client" "^game $PT_LAN_CLIENT\$" "$open_sessions"

# Idle expiry: short (trigger tcp/7000, open tcp/7001, idle_timeout 10s)
check "expiry: client triggers short (tcp/7000)" \
  "short-trigger-ok from $PT_WAN_GW" "$(on client pt-peer tcp-ask "$PT_WAN_SERVER" 7000)"
check "expiry: inbound 203.0.113.1:7001 forwarded while the session is fresh" \
  "short-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "$PT_WAN_GW" 7001)"
echo "== waiting $((SHORT_IDLE_S + EXPIRY_MARGIN_S)) s for the short rule's idle timeout (${SHORT_IDLE_S}s)"
sleep $((SHORT_IDLE_S + EXPIRY_MARGIN_S))
open_sessions=$(sessions)
check_not "expiry: session short gone after ${SHORT_IDLE_S}s idle (porttrig sessions)" '^short ' "$open_sessions"
check "expiry: session irc-ident (10m) still listed" "^irc-ident $PT_LAN_CLIENT\$" "$open_sessions"
check "expiry: inbound 203.0.113.1:7001 refused by the gateway again" 'Connection refused' \
  "$(on server pt-peer tcp-ask "$PT_WAN_GW" 7001)"
check "expiry: irc-ident (10m) still open" "ident-ok from $PT_WAN_SERVER" \
  "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"

# Metrics, scraped from the LAN side (the client) as a monitoring host would.
metrics=$(on client curl -sS --max-time 10 "http://$PT_LAN_GW:$METRICS_PORT/metrics" 2>&1)
check "metrics: porttrig_sessions_opened_total{rule=\"irc-ident\"} >= 1, scraped from the client" \
  '^porttrig_sessions_opened_total\{[^}]*rule="irc-ident"[^}]*\} +[1-9]' "$metrics"
check "metrics: porttrig_sessions_opened_total{rule=\"game\"} >= 1, scraped from the client" \
  '^porttrig_sessions_opened_total\{[^}]*rule="game"[^}]*\} +[1-9]' "$metrics"

echo
echo "== VM scenarios"
printf '%s\n' "${results[@]}"
echo "vm-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
