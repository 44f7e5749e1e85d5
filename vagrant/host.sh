#!/usr/bin/env bash
# Host side of the VM tests: `host.sh up STATE_DIR` installs the packages,
# starts libvirt's daemons (PID 1 here is not systemd) and defines the storage
# pool and the three isolated networks; `host.sh down STATE_DIR` removes the
# networks and stops the daemons that `up` started (their PIDs are kept in
# STATE_DIR), and only those. Both are idempotent. Run as root.
#
# Every network is isolated: no <forward> element, so libvirt routes nothing
# between it and the outside. LAN and WAN carry no host address at all (the
# host is not on the test networks); the management network has one host
# address so that vagrant can ssh in, and gives the guests no default route.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=vagrant/net.env
. "$here/net.env"
cmd=${1:?usage: host.sh up|down STATE_DIR}
state=${2:?usage: host.sh up|down STATE_DIR}
mkdir -p "$state"

pkgs=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86
      qemu-utils debootstrap dnsmasq-base extlinux)

# Seconds to wait for a daemon's socket or pid file to appear.
DAEMON_START_TIMEOUT_S=30

wait_for() { # wait_for WHAT TEST...
  local what=$1; shift
  for _ in $(seq $((DAEMON_START_TIMEOUT_S * 10))); do "$@" && return 0; sleep 0.1; done
  echo "host: $what did not come up within ${DAEMON_START_TIMEOUT_S}s" >&2; return 1
}

define_net() { # define_net NAME BRIDGE [IP-XML]
  local name=$1 bridge=$2 ipxml=${3:-}
  if ! virsh -q net-info "$name" >/dev/null 2>&1; then
    virsh -q net-define /dev/stdin >/dev/null <<XML
<network>
  <name>$name</name>
  <bridge name="$bridge" stp="off" delay="0"/>
  $ipxml
</network>
XML
  fi
  [[ "$(virsh -q net-info "$name")" =~ Active:\ *yes ]] || virsh -q net-start "$name" >/dev/null
}

up() {
  local missing=()
  for p in "${pkgs[@]}"; do [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "host: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # With no udev, /dev/kvm is root:root 0600 and libvirt re-probes QEMU on
  # every domain define (about 48 s each); group kvm read-write avoids that.
  if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
  fi

  if ! pgrep -x virtlogd >/dev/null; then
    virtlogd --daemon
    wait_for virtlogd test -s /run/virtlogd.pid
    cat /run/virtlogd.pid > "$state/virtlogd.pid"
  fi
  if ! pgrep -x libvirtd >/dev/null; then
    libvirtd --daemon
    wait_for libvirtd test -S /run/libvirt/libvirt-sock
    wait_for libvirtd test -s /run/libvirtd.pid
    cat /run/libvirtd.pid > "$state/libvirtd.pid"
  fi
  wait_for "libvirtd's API" virsh -q list

  if ! virsh -q pool-info default >/dev/null 2>&1; then
    mkdir -p /var/lib/libvirt/images
    virsh -q pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
  fi
  [[ "$(virsh -q pool-info default)" =~ State:\ *running ]] || virsh -q pool-start default >/dev/null

  define_net "$PT_NET_MGMT" "$PT_BR_MGMT" \
    "<ip address='$PT_MGMT_HOST' netmask='255.255.255.0'><dhcp><range start='$PT_MGMT_DHCP_START' end='$PT_MGMT_DHCP_END'/></dhcp></ip>"
  define_net "$PT_NET_LAN" "$PT_BR_LAN"
  define_net "$PT_NET_WAN" "$PT_BR_WAN"
  echo "host: libvirt $(virsh -q version --daemon | awk '/daemon/{print $NF}' | head -1) ready; networks $PT_NET_MGMT, $PT_NET_LAN, $PT_NET_WAN (isolated)"
}

down() {
  if pgrep -x libvirtd >/dev/null; then
    for n in "$PT_NET_MGMT" "$PT_NET_LAN" "$PT_NET_WAN"; do
      virsh -q net-destroy "$n" >/dev/null 2>&1 || true
      virsh -q net-undefine "$n" >/dev/null 2>&1 || true
    done
  fi
  for d in libvirtd virtlogd; do
    if [ -s "$state/$d.pid" ]; then
      local pid; pid=$(cat "$state/$d.pid")
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq $((DAEMON_START_TIMEOUT_S * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "host: stopped $d ($pid)"
      fi
      rm -f "$state/$d.pid"
    fi
  done
}

"$cmd"
