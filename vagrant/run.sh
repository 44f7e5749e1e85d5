#!/usr/bin/env bash
# `make vagrant-test`: the VM integration tests from a bare Debian 12 host.
#  1. host.sh up: packages, libvirtd/virtlogd, storage pool, isolated networks
#  2. the box: built by build-box.sh unless the one under .build is current
#  3. vagrant up: client, gateway, server (in parallel)
#  4. the packages onto the gateway (make deb's porttrig, a rebuild with a
#     higher version, nodejs from the host's node); pt-peer onto client and server
#  5. scenarios.sh (installs porttrig with apt and runs it under systemd,
#     upgrades it under traffic, removes and purges it), then a summary
# The VMs are destroyed and the daemons stopped on every exit (trap), also on
# failure. Exits non-zero if a stage or a scenario fails.
# Env: PT_VM_KEEP=1 leaves the VMs and daemons up for debugging (run
#      `vagrant/run.sh down` to remove them); see the Vagrantfile for the rest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build="$here/.build"
state="$build/state"
export VAGRANT_CWD="$here"
export PT_VM_LOG_DIR="$build/logs"
box_name=${PT_VM_BOX:-porttrig-debian12}
export PT_VM_BOX=$box_name
ssh_cfg="$build/ssh-config"
[ "$(id -u)" = 0 ] || { echo "vm-test: run as root (packages, libvirt, loop mount)" >&2; exit 1; }
mkdir -p "$build" "$state" "$PT_VM_LOG_DIR"

t0=$(date +%s)
stage_start=$t0
timings=()
stage() { # stage NAME: closes the previous stage's timer, announces the next
  local now; now=$(date +%s)
  [ -n "${cur_stage:-}" ] && timings+=("$(printf '%-40s %4ds' "$cur_stage" $((now - stage_start)))")
  cur_stage=$1; stage_start=$now
  [ -n "$1" ] && printf '\n\033[1m== vm-test: %s\033[0m\n' "$1"
  return 0
}

down() {
  # Close the shared ssh connections (see ssh-config) before the VMs go.
  local ctl; ctl=$(awk '$1 == "ControlPath" {sub("/%n$", "", $2); print $2; exit}' "$ssh_cfg" 2>/dev/null || true)
  if [ -n "$ctl" ] && [ -d "$ctl" ]; then
    for h in client gateway server; do
      ssh -F "$ssh_cfg" -O exit "$h" 2>/dev/null || true
    done
    rm -rf "$ctl"
  fi
  if command -v vagrant >/dev/null && [ -d "$here/.vagrant" ]; then
    vagrant destroy -f 2>&1 | sed 's/^/  /' || true
  fi
  bash "$here/host.sh" down "$state" || true
}

if [ "${1:-}" = down ]; then down; exit 0; fi

finish() {
  local rc=$?
  stage "destroy VMs, stop libvirt"
  if [ "${PT_VM_KEEP:-0}" = 1 ]; then
    echo "PT_VM_KEEP=1: leaving the VMs up (ssh -F $ssh_cfg gateway); remove with: $here/run.sh down"
  else
    down
  fi
  stage ""
  echo
  echo "== vm-test: stage timings"
  printf '  %s\n' "${timings[@]}"
  printf '  %-40s %4ds\n' total $(( $(date +%s) - t0 ))
  if [ $rc -ne 0 ]; then
    echo "vm-test: FAILED (exit $rc); guest serial consoles are in $PT_VM_LOG_DIR"
  else
    echo "vm-test: ok"
  fi
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

stage "host set-up"
bash "$here/host.sh" up "$state"

stage "box $box_name"
box_file="$build/box/porttrig-debian12.box"
box_stamp="$build/box/stamp"
want_stamp=$(sha256sum "$here/build-box.sh" | cut -d' ' -f1)
if [ "$box_name" = porttrig-debian12 ]; then
  if [ ! -f "$box_file" ] || [ "$(cat "$box_stamp" 2>/dev/null)" != "$want_stamp" ]; then
    rm -f "$box_file" "$box_stamp"
    bash "$here/build-box.sh" "$build/box"
    echo "$want_stamp" > "$box_stamp"
  else
    echo "vm-test: box $box_file is current (build-box.sh unchanged)"
  fi
  # Add it to vagrant when vagrant's copy is not this build. vagrant-libvirt
  # keeps its own copy of the image in the storage pool: drop that too, or it
  # would keep booting the old one.
  added_stamp="$build/box/added"
  if ! [[ "$(vagrant box list 2>/dev/null)" =~ (^|$'\n')"$box_name " ]] || [ "$(cat "$added_stamp" 2>/dev/null)" != "$want_stamp" ]; then
    for vol in $(virsh -q vol-list default 2>/dev/null | awk -v p="${box_name}_vagrant_box_image_" 'index($1, p) == 1 {print $1}'); do
      virsh -q vol-delete --pool default "$vol" >/dev/null
    done
    vagrant box add --force --name "$box_name" "$box_file" 2>&1 | sed -u 's/\x1b\[K/\n/g' | grep --line-buffered -v '^Progress: '
    echo "$want_stamp" > "$added_stamp"
  fi
fi

stage "vagrant up (client, gateway, server)"
# Drop vagrant's in-place progress counters (thousands of them in a log).
vagrant up --provider=libvirt 2>&1 | sed -u 's/\x1b\[K/\n/g' | grep --line-buffered -v '^Progress: '
vagrant ssh-config > "$ssh_cfg"
ssh_ctl=$(mktemp -d /tmp/porttrig-vm-ssh.XXXXXX)   # short: unix socket paths are limited
# One ssh connection per VM, reused by every command: a new connection's key
# exchange takes seconds in an emulated guest.
cat >> "$ssh_cfg" <<SSH
Host *
  ControlMaster auto
  ControlPath $ssh_ctl/%n
  ControlPersist 15m
SSH
for d in $(virsh -q list --name); do echo "  $d: $(virsh dumpxml "$d" | grep -o "<domain type=.[a-z]*." | head -1), cpu $(virsh dumpxml "$d" | grep -o "<model[^>]*>[^<]*" | head -1 | sed "s/.*>//")"; done

stage "packages for the gateway: porttrig (make deb), its upgrade, nodejs"
# The package as `make deb` builds it, and a rebuild of the same tree with a
# higher version for the upgrade scenario; nodejs 20 from the host's node
# (nodejs-deb.sh: the VMs have no network and Debian 12's nodejs is 18).
make -C "$root" deb
version=$(node -p "require('$root/package.json').version")
arch=$(dpkg --print-architecture)
pkgs="$build/pkgs"
rm -rf "$pkgs" && mkdir -p "$pkgs/upgrade"
cp "$root/build/porttrig_${version}_${arch}.deb" "$pkgs/"
PT_DEB_VERSION="${version}+vmupgrade1" PT_DEB_OUT="$pkgs/upgrade" bash "$root/scripts/build-deb.sh"
bash "$here/nodejs-deb.sh" "$pkgs" >/dev/null
ls -l "$pkgs" "$pkgs/upgrade" | sed 's/^/  /'
ssh_on() { local host=$1; shift; ssh -F "$ssh_cfg" -o LogLevel=ERROR "$host" "$@"; }
ssh_on gateway 'rm -rf /tmp/pkgs && mkdir -p /tmp/pkgs/upgrade'
tar -C "$pkgs" -cf - . | ssh_on gateway 'tar -xf - -C /tmp/pkgs'
ssh_on gateway 'tee /tmp/porttrig-vm.yaml >/dev/null' < "$here/porttrig-vm.yaml"
ssh_on gateway 'tee /tmp/porttrig-vm-ppp.yaml >/dev/null' < "$here/porttrig-vm-ppp.yaml"
for h in client server; do
  ssh_on "$h" 'sudo tee /usr/local/bin/pt-peer >/dev/null && sudo chmod 755 /usr/local/bin/pt-peer' < "$here/pt-peer.sh"
done

stage "scenarios"
rc=0
bash "$here/scenarios.sh" "$ssh_cfg" || rc=$?
echo "== daemon log on the gateway (journal of porttrig.service)"
ssh_on gateway 'sudo journalctl -u porttrig --no-pager -o short-monotonic' | tail -60 | sed 's/^/  daemon: /' || true
exit $rc
