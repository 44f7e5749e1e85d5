#!/usr/bin/env bash
# `make deb`: builds porttrig_<version>_<arch>.deb from the built tree with
# dpkg-deb (README, "Installing as a service"). Needs `make build` first.
#
# What goes in: only what runs. The compiled JavaScript of src/ (no tests, no
# source maps), the production npm dependencies (`npm ls --omit=dev`) less
# what is never loaded (TypeScript declarations and sources, source maps, the
# musl build of koffi's native module, koffi's C++ sources), both builds of
# the BPF object, the systemd unit, the shipped configuration (a conffile),
# the sysctl.d file, the JSON Schema, the Grafana dashboard and the alert
# rules, a man page made from every command's --help, README, copyright.
#
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last
# commit's time), owners are root, modes are set, dpkg-deb sorts the archive;
# test/packaging/deb.test.ts builds twice and compares the bytes.
#
# Env: PT_DEB_VERSION   package version (default: package.json's version;
#                       written into the packaged package.json too, so that
#                       `porttrig version` tells the installed build)
#      PT_DEB_OUT       output directory (default: build/)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

for f in dist/.stamp build/porttrig.bpf.o build/porttrig-noct.bpf.o; do
  [ -e "$f" ] || { echo "build-deb: $f missing: run make build first" >&2; exit 1; }
done
for t in dpkg-deb help2man; do
  command -v "$t" >/dev/null || { echo "build-deb: $t missing: run scripts/setup.sh" >&2; exit 1; }
done

version=${PT_DEB_VERSION:-$(node -p "require('./package.json').version")}
arch=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y package.json)}
out=${PT_DEB_OUT:-build}
mkdir -p "$out"
out=$(cd "$out" && pwd)
deb="$out/porttrig_${version}_${arch}.deb"

stage=$(mktemp -d "${TMPDIR:-/tmp}/porttrig-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg="$stage/root"
lib="$pkg/usr/lib/porttrig"
doc="$pkg/usr/share/doc/porttrig"
share="$pkg/usr/share/porttrig"
umask 022
mkdir -p "$lib/build" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/porttrig" "$pkg/etc/sysctl.d" \
  "$doc" "$share" "$pkg/usr/share/man/man1" "$pkg/usr/share/lintian/overrides" "$pkg/DEBIAN"

# The application: package.json (its "type": "module" makes node load dist as
# ES modules; src/paths.ts reads the version from it), dist/src, build/*.bpf.o.
node -e '
  const p = require("./package.json");
  const o = { name: p.name, version: process.argv[1], description: p.description, license: p.license, type: p.type, private: true };
  process.stdout.write(JSON.stringify(o, null, 2) + "\n");' "$version" > "$lib/package.json"
(cd dist && find src -name '*.js' | sort | while read -r f; do install -D -m 644 "$f" "$lib/dist/$f"; done)
chmod 755 "$lib/dist/src/cli/main.js"   # it has a #! line (the package's bin)
install -m 644 build/porttrig.bpf.o build/porttrig-noct.bpf.o "$lib/build/"

# The production dependencies, as npm resolved them (package-lock.json).
deps=$(npm ls --omit=dev --all --parseable | sed -n "s#^$root/##p" | grep '^node_modules/' | sort)
[ -n "$deps" ] || { echo "build-deb: npm ls found no production dependencies" >&2; exit 1; }
# shellcheck disable=SC2086
tar -cf - $deps | tar -xf - -C "$lib"
nm="$lib/node_modules"
find "$nm" \( -name '*.map' -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' \) -type f -delete
# koffi: the C++ sources of its native module (built by its npm install script
# only when no prebuilt binary fits; the prebuilt one is @koromix/koffi-linux-*),
# its docs, and the musl build of the binary.
find "$nm/koffi/src" -type f ! -name '*.js' ! -name '*.cjs' -delete
rm -rf "$nm/koffi/vendor" "$nm/koffi/doc" "$nm/koffi/cnoke.cjs" "$nm"/@koromix/koffi-linux-*/musl_*
# Their READMEs, changelogs, examples and npm's dotfiles (their licenses stay).
find "$nm" -type f \( -iname 'readme*' -o -iname 'changelog*' -o -name '*.md' -o -name '*.html' -o -name '.*' \) -delete
find "$nm" -type d -empty -delete

# The command, the unit, configuration, monitoring files, schema.
install -m 755 packaging/deb/porttrig.sh "$pkg/usr/bin/porttrig"
install -m 644 packaging/porttrig.service "$pkg/lib/systemd/system/porttrig.service"
install -m 644 packaging/deb/porttrig.yaml "$pkg/etc/porttrig/porttrig.yaml"
install -m 644 packaging/deb/sysctl-bpf-stats.conf "$pkg/etc/sysctl.d/60-porttrig-bpf-stats.conf"
install -m 644 packaging/grafana-dashboard.json packaging/prometheus-alerts.yml schema/porttrig.schema.json "$share/"
install -m 644 packaging/deb/lintian-overrides "$pkg/usr/share/lintian/overrides/porttrig"

# Documentation: README, the man page (every command's --help), changelog, copyright.
gzip -9n < README.md > "$doc/README.md.gz"
run="$stage/bin/porttrig"
mkdir -p "$stage/bin"
printf '#!/bin/sh\nexec node %s/dist/src/cli/main.js "$@"\n' "$lib" > "$run"
chmod 755 "$run"
{
  echo '[DESCRIPTION]'
  echo 'porttrig opens ports on a Linux gateway'"'"'s WAN address for the LAN host that'
  echo 'sent traffic to a trigger port, and forwards them to it until an idle timeout.'
  echo 'The data path is an eBPF program on TC ingress of the LAN and WAN interfaces;'
  echo '.B porttrig daemon'
  echo 'loads it and keeps its state, the other commands ask the daemon or the kernel.'
  echo '[COMMANDS]'
  for c in $("$run" --help | sed -n '/^Commands:/,$p' | awk 'NR > 1 && /^  [a-z]/ {print $1}' | grep -v '^help$'); do
    echo ".SS \"porttrig $c\""
    echo '.nf'
    "$run" "$c" --help | sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"
    echo '.fi'
  done
  echo '[FILES]'
  echo '.TP'; echo '.I /etc/porttrig/porttrig.yaml'; echo 'the configuration (JSON Schema: /usr/share/porttrig/porttrig.schema.json)'
  echo '.TP'; echo '.I /sys/fs/bpf/porttrig'; echo 'the pinned state (datapath.pin_path)'
  echo '.TP'; echo '.I /run/porttrig/porttrig.sock'; echo 'the control socket'
  echo '.TP'; echo '.I /usr/share/porttrig'; echo 'Grafana dashboard and Prometheus alert rules'
  echo '[SEE ALSO]'
  echo '/usr/share/doc/porttrig/README.md.gz, tc(8), systemctl(1)'
} > "$stage/man.include"
help2man -N -s 1 -n 'port triggering for Linux gateways (eBPF data path and daemon)' \
  --version-string="$version" -i "$stage/man.include" "$run" > "$stage/porttrig.1"
gzip -9n < "$stage/porttrig.1" > "$pkg/usr/share/man/man1/porttrig.1.gz"
changelog_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
cat > "$stage/changelog" <<CL
porttrig ($version) unstable; urgency=medium

  * Built from the porttrig repository at $(git rev-parse --short HEAD 2>/dev/null || echo 'an unknown commit');
    what changed is in its history and README.

 -- porttrig maintainers <maintainers@users.noreply.r-seed-0edc4e30.example>  $changelog_date
CL
gzip -9n < "$stage/changelog" > "$doc/changelog.gz"
bash packaging/deb/copyright.sh "$lib" > "$doc/copyright"

# Maintainer scripts: the shared shell functions inlined where marked.
for s in postinst prerm postrm; do
  awk -v rec="packaging/deb/record-pin-path.sh" -v det="packaging/deb/detach.sh" '
    /^#PT_RECORD_PIN_PATH#$/ { while ((getline l < rec) > 0) print l; next }
    /^#PT_DETACH#$/ { while ((getline l < det) > 0) print l; next }
    { print }' "packaging/deb/$s" > "$pkg/DEBIAN/$s"
  chmod 755 "$pkg/DEBIAN/$s"
done
echo /etc/porttrig/porttrig.yaml > "$pkg/DEBIAN/conffiles"
echo /etc/sysctl.d/60-porttrig-bpf-stats.conf >> "$pkg/DEBIAN/conffiles"

# Modes and times: files 644 (755 if executable), directories 755, all at SOURCE_DATE_EPOCH.
find "$pkg" -type d -exec chmod 755 {} +
find "$pkg" -type f ! -perm -u+x -exec chmod 644 {} +
find "$pkg" -type f -perm -u+x -exec chmod 755 {} +
(cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$pkg/DEBIAN/md5sums"
chmod 644 "$pkg/DEBIAN/md5sums" "$pkg/DEBIAN/conffiles"
installed_kb=$(du -sk --apparent-size --exclude=DEBIAN "$pkg" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_kb/" \
  packaging/deb/control > "$pkg/DEBIAN/control"
chmod 644 "$pkg/DEBIAN/control"
find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

rm -f "$deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "build-deb: $deb ($(du -h "$deb" | cut -f1), $(dpkg-deb -c "$deb" | wc -l) entries)"
