#!/bin/sh
# /usr/bin/porttrig: the porttrig command line (README), run by Debian's
# node (Depends: nodejs (>= 20)) whatever PATH says.
exec /usr/bin/node /usr/lib/porttrig/dist/src/cli/main.js "$@"
