#!/usr/bin/env bash
# Installs what porttrig needs on a fresh Debian 12 machine: the BPF toolchain,
# libbpf, the network tools the tests and demo use, lintian and help2man (make deb), Prometheus (the metrics e2e
# test runs one; promtool checks the alert rules), ngircd and oidentd (the IPv6 application test runs an IRC
# server that asks an ident server back through the gateway), and the npm packages.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have clang || need_pkgs+=(clang)
have llc || need_pkgs+=(llvm)
have bpftool || need_pkgs+=(bpftool)
have ip || need_pkgs+=(iproute2)
have nft || need_pkgs+=(nftables)
have ping || need_pkgs+=(iputils-ping)
have ethtool || need_pkgs+=(ethtool)
have gcc || need_pkgs+=(gcc)
have systemd-analyze || need_pkgs+=(systemd)   # verifies packaging/porttrig.service
have setpriv || need_pkgs+=(util-linux)        # runs the daemon with reduced capabilities in tests
have lintian || need_pkgs+=(lintian)           # make deb's package is checked by lintian in make test
have help2man || need_pkgs+=(help2man)         # make deb: the man page from every command's --help
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
[ -e /usr/lib/x86_64-linux-gnu/libbpf.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libbpf.so.1 ] || need_pkgs+=(libbpf1)
[ -f /usr/include/linux/bpf.h ] || need_pkgs+=(linux-libc-dev)
[ -f /usr/include/stdint.h ] || need_pkgs+=(libc6-dev)
# Debian's prometheus ships promtool too. Its own service is not wanted here:
# see the install step below.
{ have prometheus && have promtool; } || need_pkgs+=(prometheus)
# The IPv6 application test (test/e2e/ipv6-app.test.ts) starts both in its own
# namespaces; their system services stay off (see the install step below).
[ -x /usr/sbin/ngircd ] || need_pkgs+=(ngircd)
[ -x /usr/sbin/oidentd ] || need_pkgs+=(oidentd)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # A policy-rc.d that answers 101 keeps maintainer scripts from starting
  # services (prometheus would listen on :9090); only ours is removed after.
  no_start=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    no_start=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need_pkgs[@]}"
  if [ -n "$no_start" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  # The tests start their own Prometheus in a namespace; the package's system
  # service stays off (a no-op where systemd does not run).
  if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  # Nothing may listen on the host for IRC (6667) or ident (113): oidentd is
  # socket-activated too, so its socket unit goes as well.
  if [[ " ${need_pkgs[*]} " == *" ngircd "* || " ${need_pkgs[*]} " == *" oidentd "* ]] && [ -d /run/systemd/system ]; then
    for unit in ngircd.service oidentd.socket oidentd.service; do
      systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "setup: ok (clang $(clang --version | head -1 | grep -o '[0-9][0-9.]*' | head -1), libbpf $(node -e "import('./node_modules/koffi/index.js').then(k=>{const l=k.default.load('libbpf.so.1');console.log(l.func('uint32_t libbpf_major_version(void)')()+'.'+l.func('uint32_t libbpf_minor_version(void)')())})"))"
