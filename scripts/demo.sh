#!/usr/bin/env bash
# porttrig demo: a LAN host, a gateway running porttrig, and a WAN server, in
# network namespaces made for this run and removed at the end (also on error).
# Shows that the WAN server cannot reach the LAN host on tcp/113 until the LAN
# host connects to the IRC port tcp/6667, and that it can right after.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)"; exit 1; }

id="ptdemo$$"
LAN="$id-lan" GW="$id-gw" WAN="$id-wan"
dir=$(mktemp -d /tmp/porttrig-demo.XXXXXX)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  for n in "$LAN" "$GW" "$WAN"; do ip netns del "$n" 2>/dev/null || true; done
  umount -l "$dir/bpf" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
node=$(command -v node)
peer="$PWD/dist/test/e2e/peer.js"
pt() { ip netns exec "$GW" "$node" dist/src/cli/main.js "$@" --socket "$dir/porttrig.sock"; }

step "topology: lan host 10.77.0.2 -- [lan0 gateway wan0 203.0.113.1] -- 203.0.113.2 wan server"
for n in "$LAN" "$GW" "$WAN"; do ip netns add "$n"; done
ip link add "${id}l" netns "$LAN" type veth peer name lan0 netns "$GW"
ip link add "${id}w" netns "$WAN" type veth peer name wan0 netns "$GW"
ip -n "$LAN" link set "${id}l" name eth0
ip -n "$WAN" link set "${id}w" name eth0
for n in "$LAN" "$GW" "$WAN"; do ip -n "$n" link set lo up; done
ip -n "$LAN" link set eth0 up; ip -n "$LAN" addr add 10.77.0.2/24 dev eth0; ip -n "$LAN" route add default via 10.77.0.1
ip -n "$WAN" link set eth0 up; ip -n "$WAN" addr add 203.0.113.2/24 dev eth0
ip -n "$GW" link set lan0 up; ip -n "$GW" addr add 10.77.0.1/24 dev lan0
ip -n "$GW" link set wan0 up; ip -n "$GW" addr add 203.0.113.1/24 dev wan0
ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$GW" nft -f examples/gateway-firewall.nft
echo "gateway firewall: forward policy drop, established/related and LAN->WAN accepted, masquerade on wan0"

mkdir -p "$dir/bpf" && mount -t bpf bpf "$dir/bpf"
sed -e "s#@PIN@#$dir/bpf#" -e "s#@SOCK@#$dir/porttrig.sock#" examples/demo.yaml > "$dir/porttrig.yaml"
step "config ($dir/porttrig.yaml)"
cat "$dir/porttrig.yaml"

step "porttrig daemon starts on the gateway"
ip netns exec "$GW" "$node" dist/src/cli/main.js daemon --config "$dir/porttrig.yaml" 2> >(sed 's/^/  daemon: /' >&2) &
daemon_pid=$!
for _ in $(seq 50); do [ -S "$dir/porttrig.sock" ] && break; sleep 0.1; done
pt status

# The LAN host runs an ident server; the WAN server runs an IRC-ish echo server.
ip netns exec "$LAN" "$node" "$peer" tcp-echo 113 > "$dir/ident.log" &
ip netns exec "$WAN" "$node" "$peer" tcp-echo 6667 > /dev/null &
sleep 0.5

step "before any trigger: the WAN server connects to 203.0.113.1:113"
ip netns exec "$WAN" "$node" "$peer" tcp-once 203.0.113.1 113 ident-query 1500

step "the LAN host connects to the IRC server 203.0.113.2:6667 (the trigger)"
ip netns exec "$LAN" "$node" "$peer" tcp-once 203.0.113.2 6667 "NICK demo" 3000

step "porttrig sessions"
pt sessions

step "now the WAN server connects to 203.0.113.1:113 again"
ip netns exec "$WAN" "$node" "$peer" tcp-once 203.0.113.1 113 ident-query 3000
echo "the LAN host's ident server saw: $(grep accept "$dir/ident.log" | head -1)"

step "porttrig flows"
pt flows
step "porttrig rules"
pt rules
step "metrics (GET /metrics on the gateway's 127.0.0.1:9469, a few of them)"
ip netns exec "$GW" "$node" -e '
  fetch("http://127.0.0.1:9469/metrics").then((r) => r.text()).then((t) => {
    for (const l of t.split("\n")) if (/^porttrig_(trigger_hits_total|sessions_opened_total|flows_opened_total|sessions_active|packets_total)/.test(l)) console.log(l);
  });'
step "waiting for the idle timeout (5s) ..."
sleep 6.5
pt sessions
ip netns exec "$WAN" "$node" "$peer" tcp-once 203.0.113.1 113 ident-query 1500
step "done; removing the demo topology"
