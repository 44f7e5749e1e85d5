#!/bin/sh
# Test traffic helper installed on the client and server VMs (socat only).
#   pt-peer tcp-serve PORT TAG   answer every TCP connection with "TAG from PEER"
#   pt-peer udp-serve PORT TAG   answer every UDP datagram with "TAG from PEER"
#   pt-peer tcp-ask HOST PORT    connect, print the answer (empty if none)
#   pt-peer udp-ask HOST PORT    send one datagram, print the answer (empty if none)
#   pt-peer tcp-echo PORT        echo every TCP connection back (cat)
#   pt-peer tcp-stream HOST PORT STOPFILE OUT
#                                one TCP connection that sends a numbered line
#                                every 0.5 s until STOPFILE exists, then "end";
#                                what comes back goes to OUT (background)
# Servers run in the background (setsid) and log to /tmp/pt-peer-PORT.log.
set -eu
# Seconds a client waits for a connection or an answer: generous, the VMs are
# emulated and share two host cores.
WAIT_S=15
cmd=$1; shift
case "$cmd" in
  tcp-serve)
    setsid socat TCP-LISTEN:"$1",reuseaddr,fork SYSTEM:"echo $2 from \$SOCAT_PEERADDR" \
      </dev/null >"/tmp/pt-peer-$1.log" 2>&1 &
    ;;
  udp-serve)
    setsid socat UDP-RECVFROM:"$1",reuseaddr,fork SYSTEM:"echo $2 from \$SOCAT_PEERADDR" \
      </dev/null >"/tmp/pt-peer-$1.log" 2>&1 &
    ;;
  tcp-echo)
    setsid socat TCP-LISTEN:"$1",reuseaddr,fork EXEC:cat </dev/null >"/tmp/pt-peer-$1.log" 2>&1 &
    ;;
  tcp-stream)
    rm -f "$3"
    # shellcheck disable=SC2016
    setsid sh -c '
      host=$1 port=$2 stop=$3 out=$4 wait=$5
      { i=0; while [ ! -e "$stop" ]; do i=$((i + 1)); echo "line $i"; sleep 0.5; done; echo end; } \
        | socat -t "$wait" - TCP:"$host":"$port",connect-timeout="$wait" >"$out" 2>&1' \
      sh "$1" "$2" "$3" "$4" "$WAIT_S" </dev/null >/dev/null 2>&1 &
    ;;
  tcp-ask)
    socat -t "$WAIT_S" -T "$WAIT_S" - TCP:"$1":"$2",connect-timeout="$WAIT_S" </dev/null 2>&1 || true
    ;;
  udp-ask)
    echo ping | socat -t "$WAIT_S" -T "$WAIT_S" - UDP:"$1":"$2" 2>&1 || true
    ;;
  *) echo "pt-peer: unknown command $cmd" >&2; exit 2 ;;
esac
