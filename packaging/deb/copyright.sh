#!/usr/bin/env bash
# Prints debian/copyright (DEP-5) for the package staged at $1
# (usr/lib/porttrig): porttrig's own files, then one paragraph per bundled
# npm package with its license (from its package.json) and copyright line
# (from its license file), then the license texts. Used by scripts/build-deb.sh.
set -euo pipefail
lib=$1
cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: porttrig
Comment: porttrig bundles its production npm dependencies under
 /usr/lib/porttrig/node_modules; each has a paragraph below.

Files: *
Copyright: porttrig maintainers
License: MIT

Files: usr/lib/porttrig/build/*.bpf.o
Copyright: porttrig maintainers
License: MIT or GPL-2
Comment: the eBPF objects declare the license "Dual MIT/GPL" to the kernel.
HEAD
licenses=" MIT GPL-2 "
for pj in $(cd "$lib" && find node_modules -name package.json -path '*node_modules/*' | sort); do
  dir=${pj%/package.json}
  # Only package roots: node_modules/NAME or node_modules/@SCOPE/NAME.
  [[ "$dir" =~ ^node_modules/(@[^/]+/)?[^/]+$ ]] || continue
  lic=$(node -p "require('$lib/$pj').license || ''")
  [ -n "$lic" ] || { echo "copyright.sh: $dir has no license in package.json" >&2; exit 1; }
  holder=$(grep -h -i -m1 '^ *copyright ' "$lib/$dir"/LICEN[CS]E* "$lib/$dir"/LICEN[CS]E.* 2>/dev/null | head -1 | sed -e 's/^ *[Cc]opyright *//' -e 's/^([Cc]) *//' || true)
  [ -n "$holder" ] || holder="$(node -p "const p = require('$lib/$pj'); (typeof p.author === 'string' ? p.author : p.author?.name) || 'the authors of ' + p.name")"
  printf '\nFiles: usr/lib/porttrig/%s/*\nCopyright: %s\nLicense: %s\n' "$dir" "$holder" "$lic"
  case "$licenses" in *" $lic "*) ;; *) licenses="$licenses$lic " ;; esac
done
for lic in $licenses; do
  echo
  case "$lic" in
    MIT) cat <<'T'
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
T
    ;;
    ISC) cat <<'T'
License: ISC
 Permission to use, copy, modify, and/or distribute this software for any
 purpose with or without fee is hereby granted, provided that the above
 copyright notice and this permission notice appear in all copies.
 .
 THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
 WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
 MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
 ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
 WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
 ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
 OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
T
    ;;
    Apache-2.0) printf 'License: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n' ;;
    GPL-2) printf 'License: GPL-2\n On Debian systems the full text of the GNU General Public License\n version 2 is in /usr/share/common-licenses/GPL-2.\n' ;;
    *) echo "copyright.sh: no text for license $lic: add it here" >&2; exit 1 ;;
  esac
done
