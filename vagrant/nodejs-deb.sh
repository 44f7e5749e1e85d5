#!/usr/bin/env bash
# Builds OUT_DIR/nodejs_<version>-0ptvm1_<arch>.deb: the host's own node
# binary as a package named nodejs, for the gateway VM. The VMs have no
# network, and Debian 12's nodejs is 18 while porttrig's package needs
# nodejs (>= 20) (README, "Installing as a service"); this stands in for the
# Node.js 20 package an operator installs on Debian 12 (Debian 13 has one).
# It holds /usr/bin/node only (no npm): what porttrig runs.
# Usage: nodejs-deb.sh OUT_DIR
set -euo pipefail
out=${1:?usage: nodejs-deb.sh OUT_DIR}
node_bin=$(command -v node)
ver=$("$node_bin" -p process.versions.node)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 755 "$node_bin" "$stage/usr/bin/node"
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CTL
Package: nodejs
Version: $ver-0ptvm1
Architecture: $arch
Maintainer: porttrig VM suite <maintainers@users.noreply.r-seed-0edc4e30.example>
Depends: libc6, libstdc++6, libgcc-s1
Section: javascript
Priority: optional
Description: Node.js $ver (the porttrig VM suite's host binary)
 The node binary of the host that runs the porttrig VM suite, packaged so
 that apt can satisfy porttrig's Depends: nodejs (>= 20) on Debian 12.
CTL
mkdir -p "$out"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/nodejs_${ver}-0ptvm1_${arch}.deb" >/dev/null
echo "$out/nodejs_${ver}-0ptvm1_${arch}.deb"
