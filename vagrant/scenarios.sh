#!/usr/bin/env bash
# End-to-end scenarios across the three VMs, run from the host over ssh.
# Usage: scenarios.sh SSH_CONFIG   (from `vagrant ssh-config`; hosts client, gateway, server)
# Needs: the packages in /tmp/pkgs on the gateway (porttrig_*.deb, nodejs_*.deb,
# upgrade/porttrig_*.deb), vagrant/porttrig-vm*.yaml in /tmp there, and pt-peer
# on the client and server (run.sh does all three).
# First the package: apt refuses it without nodejs (>= 20), installs it, leaves
# it stopped until the configuration is edited, then `systemctl start porttrig`.
# Then triggering, expiry and metrics; IPv6 pinholes to the client's own
# address; an upgrade under traffic; the same over
# PPPoE (ppp0), a PPP hang-up and redial; last `apt remove` (forwarding stays)
# and `apt purge` (nothing of porttrig left).
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
pt() { on gateway sudo porttrig "$@"; }
# Seconds the daemon gets to load the object and open its control socket.
DAEMON_READY_TIMEOUT_S=60
# wait_daemon: until porttrig.service answers on its control socket (or the timeout).
wait_daemon() {
  for _ in $(seq "$DAEMON_READY_TIMEOUT_S"); do
    on gateway 'sudo porttrig status >/dev/null 2>&1' && return 0
    sleep 1
  done
  return 1
}

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
# expand6 ADDR: ADDR written in full (2001:0db8:0077:0000:...), as socat's
# SOCAT_PEERADDR gives an IPv6 peer (in brackets).
expand6() {
  local head=$1 tail="" i x out=()
  local -a h=() t=()
  if [[ $1 == *::* ]]; then head=${1%%::*} tail=${1#*::}; fi
  [ -n "$head" ] && IFS=: read -ra h <<< "$head"
  [ -n "$tail" ] && IFS=: read -ra t <<< "$tail"
  for x in "${h[@]}"; do out+=("$(printf '%04x' "0x$x")"); done
  for ((i = ${#h[@]} + ${#t[@]}; i < 8; i++)); do out+=(0000); done
  for x in "${t[@]}"; do out+=("$(printf '%04x' "0x$x")"); done
  local IFS=:
  echo "${out[*]}"
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

# ---- the package: install as an operator would --------------------------------
echo "== package: apt install ./porttrig_*.deb on the gateway (Debian 12)"
out=$(on gateway 'cd /tmp/pkgs && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ./porttrig_*.deb 2>&1'; echo "exit=$?")
check "package: without Node.js 20 apt refuses porttrig and names the dependency (Debian 12's nodejs is 18)" \
  'Depends: nodejs \(>= 20\).*exit=[1-9]' "$(tr '\n' ' ' <<< "$out")"
out=$(on gateway 'cd /tmp/pkgs && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ./nodejs_*.deb 2>&1 && node --version')
check "package: nodejs 20 installed (the host's node, nodejs-deb.sh)" '^v2[0-9]\.' "$(tail -1 <<< "$out")"
out=$(on gateway 'cd /tmp/pkgs && sudo DEBIAN_FRONTEND=noninteractive apt install -y ./porttrig_*.deb 2>&1'; echo "exit=$?")
echo "$out" | grep porttrig | sed 's/^/  apt: /'
check "package: apt install ./porttrig_*.deb succeeds" 'exit=0$' "$out"
check "package: the shipped configuration is not started: postinst says what to edit" \
  'not started\. Edit /etc/porttrig/porttrig\.yaml.*systemctl enable --now porttrig' "$(tr '\n' ' ' <<< "$out")"
check "package: porttrig.service installed, not enabled, not running" '^disabled inactive$' \
  "$(on gateway 'echo $(sudo systemctl is-enabled porttrig.service) $(sudo systemctl is-active porttrig.service)')"
check "package: man page, dashboard, alert rules, schema in place" '^ok$' \
  "$(on gateway 'test -s /usr/share/man/man1/porttrig.1.gz && test -s /usr/share/porttrig/grafana-dashboard.json && test -s /usr/share/porttrig/prometheus-alerts.yml && test -s /usr/share/porttrig/porttrig.schema.json && echo ok')"
echo "== package: edit /etc/porttrig/porttrig.yaml (vagrant/porttrig-vm.yaml), systemctl start porttrig"
on gateway 'sudo cp /tmp/porttrig-vm.yaml /etc/porttrig/porttrig.yaml'
check "package: porttrig check-config --interfaces accepts the edited file" 'ok \([0-9]+ rules\)' \
  "$(on gateway 'sudo porttrig check-config --interfaces /etc/porttrig/porttrig.yaml 2>&1')"
on gateway 'sudo systemctl start porttrig'
wait_daemon
check "package: systemctl start porttrig: the daemon runs under systemd and answers" '^active .*conntrack check' \
  "$(on gateway 'echo $(sudo systemctl is-active porttrig.service) $(sudo porttrig status 2>&1 | tr "\n" " ")')"
on gateway 'sudo journalctl -u porttrig --no-pager -o cat' | sed 's/^/  daemon: /' | head -20

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

# ---- IPv6: pinholes to the client's own address -------------------------------
# Routed, not translated: the server connects to the client's IPv6 address,
# which the gateway's forward chain (policy drop) lets through only while the
# client's IPv6 session of the rule is open. The same rules as above; the
# client's IPv4 sessions are other sessions. IPv6 servers sit beside the IPv4
# ones on the same ports (ipv6only).
CLOSED_WAIT_S=8   # a dropped SYN or datagram gets no answer: no need to wait long
client6=$(expand6 "$PT_LAN6_CLIENT") server6=$(expand6 "$PT_WAN6_SERVER")
echo "== IPv6: client $PT_LAN6_CLIENT answers on tcp/113, udp/27000; server $PT_WAN6_SERVER on tcp/6667, udp/27015"
on client "sudo pt-peer tcp6-serve 113 ident6-ok; sudo pt-peer udp6-serve 27000 game6-lan-ok"
on server "sudo pt-peer tcp6-serve 6667 irc6-ok; sudo pt-peer udp6-serve 27015 game6-wan-ok"
check "ipv6: gateway forwards IPv6" '^1$' "$(on gateway sudo sysctl -n net.ipv6.conf.all.forwarding)"
check "ipv6: client's servers answer locally on ::1" 'ident6-ok from \[0000:0000:0000:0000:0000:0000:0000:0001\].*game6-lan-ok from \[0000:0000:0000:0000:0000:0000:0000:0001\]' \
  "$(on client 'pt-peer tcp6-ask ::1 113; pt-peer udp6-ask ::1 27000' | tr '\n' ' ')"
check "ipv6: server's servers answer locally on ::1" 'irc6-ok from \[0000:0000:0000:0000:0000:0000:0000:0001\].*game6-wan-ok from \[0000:0000:0000:0000:0000:0000:0000:0001\]' \
  "$(on server 'pt-peer tcp6-ask ::1 6667; pt-peer udp6-ask ::1 27015' | tr '\n' ' ')"
check "ipv6 tcp: inbound [$PT_LAN6_CLIENT]:113 dropped by the gateway's firewall before the IPv6 trigger" 'timed out' \
  "$(on server PT_PEER_WAIT_S=$CLOSED_WAIT_S pt-peer tcp6-ask "$PT_LAN6_CLIENT" 113)"
check "ipv6 tcp: client reaches [server]:6667 through the gateway, its own address (the trigger)" \
  "irc6-ok from \\[$client6\\]" "$(on client pt-peer tcp6-ask "$PT_WAN6_SERVER" 6667)"
check "ipv6 tcp: inbound [$PT_LAN6_CLIENT]:113 forwarded to the client after the trigger" \
  "ident6-ok from \\[$server6\\]" "$(on server pt-peer tcp6-ask "$PT_LAN6_CLIENT" 113)"
check_not "ipv6 udp: inbound [$PT_LAN6_CLIENT]:27000 dropped by the gateway's firewall before the IPv6 trigger" 'game6-lan-ok' \
  "$(on server PT_PEER_WAIT_S=$CLOSED_WAIT_S pt-peer udp6-ask "$PT_LAN6_CLIENT" 27000)"
check "ipv6 udp: client reaches [server]:27015 through the gateway, its own address (the trigger)" \
  "game6-wan-ok from \\[$client6\\]" "$(on client pt-peer udp6-ask "$PT_WAN6_SERVER" 27015)"
check "ipv6 udp: inbound [$PT_LAN6_CLIENT]:27000 forwarded to the client after the trigger, reply back" \
  "game6-lan-ok from \\[$server6\\]" "$(on server pt-peer udp6-ask "$PT_LAN6_CLIENT" 27000)"
open_sessions=$(sessions)
check "ipv6: porttrig sessions: irc-ident open for the client's IPv6 address" "^irc-ident $PT_LAN6_CLIENT\$" "$open_sessions"
check "ipv6: porttrig sessions: game open for the client's IPv6 address" "^game $PT_LAN6_CLIENT\$" "$open_sessions"
check "ipv6: porttrig sessions: the client's IPv4 sessions are still open beside them" "^irc-ident $PT_LAN_CLIENT\$" "$open_sessions"
metrics6=$(on client curl -sS --max-time 10 "http://$PT_LAN_GW:$METRICS_PORT/metrics" 2>&1 | grep 'family="ipv6"')
check "ipv6 metrics: porttrig_sessions_opened_total{rule=\"irc-ident\",family=\"ipv6\"} >= 1" \
  '^porttrig_sessions_opened_total\{[^}]*rule="irc-ident"[^}]*\} +[1-9]' "$metrics6"
check "ipv6 metrics: porttrig_flows_opened_total{rule=\"game\",family=\"ipv6\"} >= 1" \
  '^porttrig_flows_opened_total\{[^}]*rule="game"[^}]*\} +[1-9]' "$metrics6"

# ---- upgrade under traffic ---------------------------------------------------
# A connection through a triggered port (stream: tcp/7101 to the client's echo
# server) sends a line every 0.5 s while apt upgrades porttrig to a rebuild of
# the same tree with a higher version. The daemon restarts and adopts the
# pinned state: no line is lost, the connection is not reset, the session
# stays, and the new daemon's version answers.
echo "== upgrade: apt install ./upgrade/porttrig_*.deb while a triggered connection streams"
on client "sudo pt-peer tcp-echo 7101"
on server "sudo pt-peer tcp-serve 7100 stream-trigger-ok"
check "upgrade: client triggers stream (tcp/7100)" "stream-trigger-ok from $PT_WAN_GW" "$(on client pt-peer tcp-ask "$PT_WAN_SERVER" 7100)"
old_version=$(pt version 2>&1)
old_pid=$(on gateway 'sudo systemctl show -p MainPID --value porttrig.service')
on server "pt-peer tcp-stream $PT_WAN_GW 7101 /tmp/pt-stream.stop /tmp/pt-stream.out"
sleep 3
before=$(on server 'grep -c "^line" /tmp/pt-stream.out')
out=$(on gateway 'cd /tmp/pkgs/upgrade && sudo DEBIAN_FRONTEND=noninteractive apt install -y ./porttrig_*.deb 2>&1'; echo "exit=$?")
echo "$out" | grep -i porttrig | sed 's/^/  apt: /'
check "upgrade: apt install ./upgrade/porttrig_*.deb succeeds" 'exit=0$' "$out"
wait_daemon
new_pid=$(on gateway 'sudo systemctl show -p MainPID --value porttrig.service')
check "upgrade: porttrig.service active again, with a new main process" '^active new$' \
  "$(on gateway 'sudo systemctl is-active porttrig.service') $([ -n "$new_pid" ] && [ "$new_pid" != 0 ] && [ "$new_pid" != "$old_pid" ] && echo new || echo "same-or-none:$old_pid:$new_pid")"
check "upgrade: porttrig version is the new one ($old_version before)" '\+vmupgrade1$' "$(pt version 2>&1)"
check "upgrade: the new daemon adopted the pinned state (its 'daemon started' line)" 'daemon started.*version=[^ ]*vmupgrade1.*adopted=true' \
  "$(on gateway 'sudo journalctl -u porttrig --no-pager -o cat' 2>&1 | grep 'daemon started' | tail -1)"
sleep 3
on server 'touch /tmp/pt-stream.stop'
sleep 4
stream=$(on server 'cat /tmp/pt-stream.out')
sent=$(grep -c '^line' <<< "$stream")
last=$(grep '^line' <<< "$stream" | tail -1 | awk '{print $2}')
check "upgrade: the stream went on through the upgrade (lines echoed: $before before it, $sent in all)" \
  "^[0-9]+ [0-9]+ end$" "$sent ${last:-0} $(tail -1 <<< "$stream")"
check "upgrade: no line lost or reordered: lines 1..$sent came back in order, then end" '^ok$' \
  "$(awk 'BEGIN {n = 0} /^line / {n++; if ($2 != n) {print "gap at " n ": " $0; exit}} /^end$/ {print "ok"}' <<< "$stream")"
check "upgrade: the session survived (porttrig sessions)" "^stream $PT_LAN_CLIENT\$" "$(sessions)"
check "upgrade: a new inbound connection is forwarded by the new daemon's state" "ident-ok from $PT_WAN_SERVER" \
  "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"

# ---- XDP fast path (datapath.xdp) on Debian 12's kernel ----------------------
# porttrig restarted with datapath.xdp: true: pt_wan_xdp on the WAN's
# virtio_net, which forwards the established flow's packets itself. virtio_net
# takes XDP frames only with an XDP program of its own (ENXIO otherwise): the
# daemon sees the kernel's report and attaches pt_lan_xdp_pass to lan0. A TCP
# stream through a triggered port must lose and reorder nothing meanwhile.
# Then back to datapath.xdp: false: both programs come off.
echo "== XDP: porttrig restarted with datapath.xdp: true"
on gateway "sudo sed -i 's|^  pin_path: /sys/fs/bpf/porttrig\$|&\n  xdp: true|' /etc/porttrig/porttrig.yaml"
on gateway 'sudo systemctl restart porttrig'
wait_daemon
check "xdp: porttrig status says the XDP fast path is attached" '^XDP fast path: attached' "$(pt status 2>&1 | grep '^XDP')"
# As root: ip shows a program's name only to those who may read its info.
check "xdp: pt_wan_xdp on wan0 (native)" 'prog/xdp id [0-9]+ name pt_wan_xdp' "$(on gateway 'sudo ip -d link show dev wan0')"
on server "rm -f /tmp/pt-stream.stop /tmp/pt-stream.out; pt-peer tcp-stream $PT_WAN_GW 7101 /tmp/pt-stream.stop /tmp/pt-stream.out"
sleep 12
on server 'touch /tmp/pt-stream.stop'
sleep 4
stream=$(on server 'cat /tmp/pt-stream.out')
check "xdp: a TCP stream through the triggered port: lines 1..N came back in order, then end" '^ok [1-9][0-9]*$' \
  "$(awk 'BEGIN {n = 0} /^line / {n++; if ($2 != n) {print "gap at " n ": " $0; exit}} /^end$/ {print "ok " n}' <<< "$stream")"
journal=$(on gateway 'sudo journalctl -u porttrig --no-pager -o cat' 2>&1)
echo "$journal" | grep -E 'XDP|LAN interface' | tail -5 | sed 's/^/  daemon: /'
check "xdp: pt_lan_xdp_pass on lan0 (virtio_net takes XDP frames only with a program of its own), or none needed" \
  'XDP_PASS program attached to a LAN interface.*interface=lan0|^none needed$' \
  "$(grep -m1 'XDP_PASS program attached' <<< "$journal" || (on gateway 'sudo ip -d link show dev lan0' | grep -q 'prog/xdp' || echo 'none needed'))"
metrics=$(on client curl -sS --max-time 10 "http://$PT_LAN_GW:$METRICS_PORT/metrics" 2>&1)
check "xdp: pt_wan_xdp redirected packets itself (porttrig_xdp_packets_total)" '^porttrig_xdp_packets_total\{result="redirected"\} [1-9][0-9]*$' \
  "$(grep 'porttrig_xdp_packets_total{result="redirected"}' <<< "$metrics")"
check "xdp: a new inbound connection is forwarded" "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"
echo "== XDP: back to datapath.xdp: false"
on gateway "sudo sed -i '/^  xdp: true\$/d' /etc/porttrig/porttrig.yaml"
on gateway 'sudo systemctl restart porttrig'
wait_daemon
check_not "xdp: off again: no XDP program on wan0 or lan0" 'prog/xdp' \
  "$(on gateway 'sudo ip -d link show dev wan0; sudo ip -d link show dev lan0')"
check "xdp: off again: a new inbound connection is forwarded (TC)" "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "$PT_WAN_GW" 113)"

# ---- PPPoE: the WAN becomes ppp0 ---------------------------------------------
# The server turns access concentrator (pppoe-server, rp-pppoe), the gateway
# dials it with pppd's rp-pppoe plugin over wan0 (no addresses on wan0 any
# more), the firewall's WAN is ppp0, and porttrig restarts with ppp0 as WAN.
# Then the server hangs up the PPP session: pppd redials (persist), a new
# ppp0 (new ifindex) comes up and the session opened before works again.
PPP_WAIT_S=60
# ppp0_addr: "IFINDEX ADDRESS" of the gateway's ppp0 once it has an address, else empty.
ppp0_addr() {
  on gateway "ip -4 -o addr show dev ppp0 2>/dev/null" | awk '{sub(":", "", $1); split($4, a, "/"); print $1, a[1]; exit}'
}
wait_ppp0() { # wait_ppp0 [NOT_IFINDEX]: waits for a ppp0 with an address (another ifindex than NOT_IFINDEX)
  local got
  for _ in $(seq "$PPP_WAIT_S"); do
    got=$(ppp0_addr)
    if [ -n "$got" ] && [ "${got%% *}" != "${1:-}" ]; then echo "$got"; return 0; fi
    sleep 1
  done
  return 1
}
echo "== PPPoE: pppoe-server on the server, pppd on the gateway; porttrig restarted with WAN ppp0"
on gateway 'sudo systemctl stop porttrig && sudo porttrig detach --config /etc/porttrig/porttrig.yaml' 2>&1 | sed 's/^/  /'
on gateway "sudo ip addr flush dev wan0"
on server "sudo ip addr flush dev wan0"
on gateway 'sed "s/wan0/ppp0/g" /tmp/gateway-firewall.nft | sudo sh -c "nft flush ruleset && nft -f -"'
on server 'printf "noauth\nlcp-echo-interval 1\nlcp-echo-failure 3\nmtu 1492\nmru 1492\n" | sudo tee /etc/ppp/pt-pppoe-server-options >/dev/null'
on server "sudo pppoe-server -I wan0 -L $PT_WAN_SERVER -R $PT_WAN_GW -N 1 -O /etc/ppp/pt-pppoe-server-options"
on gateway "sudo pppd plugin rp-pppoe.so nic-wan0 ifname ppp0 noauth noipdefault defaultroute persist maxfail 0 holdoff 1 \
  lcp-echo-interval 1 lcp-echo-failure 3 mtu 1492 mru 1492 linkname pt logfile /var/log/pt-pppd.log"
first=$(wait_ppp0) || first=""
check "pppoe: the gateway dialled in: ppp0 up with an address" '^[0-9]+ [0-9.]+$' "$first"
ppp_if=${first%% *} ppp_addr=${first#* }
on gateway 'sudo cp /tmp/porttrig-vm-ppp.yaml /etc/porttrig/porttrig.yaml && sudo systemctl start porttrig'
wait_daemon
status=$(pt status 2>&1)
check "pppoe: porttrig status shows WAN ppp0 ${ppp_addr:-?}" "^WAN: +ppp0 ${ppp_addr//./\\.}\$" "$status"
check "pppoe: program attached to ppp0" 'ppp0\(prog [0-9]+\)' "$status"
check "pppoe tcp: inbound ppp0:113 refused by the gateway before the trigger" 'Connection refused' \
  "$(on server pt-peer tcp-ask "$ppp_addr" 113)"
check "pppoe tcp: client reaches server:6667 over ppp0, masqueraded (the trigger)" \
  "irc-ok from ${ppp_addr:-none}" "$(on client pt-peer tcp-ask "$PT_WAN_SERVER" 6667)"
check "pppoe tcp: inbound ppp0:113 forwarded to the client, source kept" \
  "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "$ppp_addr" 113)"
check "pppoe udp: client reaches server:27015 over ppp0 (the trigger)" \
  "game-wan-ok from ${ppp_addr:-none}" "$(on client pt-peer udp-ask "$PT_WAN_SERVER" 27015)"
check "pppoe udp: inbound ppp0:27000 forwarded to the client, reply translated back" \
  "game-lan-ok from $PT_WAN_SERVER" "$(on server pt-peer udp-ask "$ppp_addr" 27000)"

echo "== PPPoE: the server hangs up the session (its pppd, /run/ppp0.pid); the gateway redials"
on server 'sudo sh -c "kill \$(cat /run/ppp0.pid)"'
second=$(wait_ppp0 "$ppp_if") || second=""
check "pppoe: redialled: a new ppp0 (ifindex ${ppp_if:-?} before) with an address" '^[0-9]+ [0-9.]+$' "$second"
new_addr=${second#* }
# porttrig attaches to the new ppp0 when it appears; give it the sweep's second.
attached=""
for _ in $(seq 10); do
  attached=$(pt status 2>&1)
  grep -Eq "^WAN: +ppp0 ${new_addr//./\\.}\$" <<< "$attached" && grep -Eq 'ppp0\(prog [0-9]+\)' <<< "$attached" && break
  sleep 1
done
check "pppoe: porttrig attached to the new ppp0 with address ${new_addr:-?}" 'ppp0\(prog [0-9]+\)' "$attached"
check "pppoe: the irc-ident session is still open after the redial" "^irc-ident $PT_LAN_CLIENT\$" "$(sessions)"
check "pppoe: inbound to the new ppp0:113 forwarded to the client again (no new trigger)" \
  "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "${new_addr:-none}" 113)"

# ---- remove, then purge --------------------------------------------------------
# apt remove stops the daemon and leaves forwarding as SPEC 6 has it for a
# stopped daemon; apt purge detaches: no program on any interface, no pins,
# no file of the package, no configuration, no unit.
echo "== remove: apt remove porttrig (forwarding stays), then apt purge porttrig (nothing left)"
on gateway 'dpkg -L porttrig > /tmp/porttrig.files'
out=$(on gateway 'sudo DEBIAN_FRONTEND=noninteractive apt-get remove -y porttrig 2>&1'; echo "exit=$?")
check "remove: apt remove porttrig succeeds and says forwarding stays until purge" "until 'apt purge porttrig' detaches it.*exit=0" "$(tr '\n' ' ' <<< "$out")"
check "remove: no daemon runs" '^inactive$' "$(on gateway 'sudo systemctl is-active porttrig.service')"
check "remove: the program stays on ppp0 (SPEC 6)" 'handle 0x7074' "$(on gateway 'sudo tc filter show dev ppp0 ingress')"
check "remove: inbound ppp0:113 still forwarded to the client without a daemon" \
  "ident-ok from $PT_WAN_SERVER" "$(on server pt-peer tcp-ask "${new_addr:-none}" 113)"
out=$(on gateway 'sudo DEBIAN_FRONTEND=noninteractive apt-get purge -y porttrig 2>&1'; echo "exit=$?")
echo "$out" | grep -i porttrig | sed 's/^/  apt: /'
check "purge: apt purge porttrig succeeds and detaches" 'porttrig: detached from [1-9][0-9]* interfaces, removed [1-9][0-9]* pins.*exit=0' "$(tr '\n' ' ' <<< "$out")"
check_not "purge: no porttrig program on any interface" 'handle 0x7074|pt_(lan|wan)_ingress' \
  "$(on gateway 'for d in $(ls /sys/class/net); do sudo tc filter show dev $d ingress 2>/dev/null; done')"
check "purge: no pins (/sys/fs/bpf/porttrig gone)" '^gone$' "$(on gateway 'sudo test -e /sys/fs/bpf/porttrig && sudo ls -la /sys/fs/bpf/porttrig || echo gone')"
# Every file the package had (dpkg -L before the remove), and porttrig's own directories.
check "purge: no file of the package left, no /etc/porttrig, /var/lib/porttrig, /usr/lib/porttrig" '^none$' \
  "$(on gateway 'while read -r f; do [ -d "$f" ] || { [ -e "$f" ] && echo "$f"; }; done < /tmp/porttrig.files
    for d in /etc/porttrig /var/lib/porttrig /usr/lib/porttrig /usr/share/porttrig /usr/share/doc/porttrig; do [ -e "$d" ] && echo "$d"; done
    echo none' | tr '\n' ' ' | sed 's/ $//')"
check "purge: dpkg knows no porttrig, systemd no porttrig.service" '^not-installed not-found$' \
  "$(on gateway 'echo $(dpkg-query -W -f="\${db:Status-Abbrev}" porttrig 2>/dev/null | grep -q "^ii" && echo installed || echo not-installed) $(sudo systemctl show -p LoadState --value porttrig.service)')"
check "purge: inbound ppp0:113 refused by the gateway again" 'Connection refused' \
  "$(on server pt-peer tcp-ask "${new_addr:-none}" 113)"

echo
echo "== VM scenarios"
printf '%s\n' "${results[@]}"
echo "vm-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
