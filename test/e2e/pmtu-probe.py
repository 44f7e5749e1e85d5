#!/usr/bin/env python3
"""Path MTU discovery probes for the end-to-end MTU tests (test/e2e/mtu.test.ts).

    pmtu-probe.py bulk-server PORT SIZE
    pmtu-probe.py bulk-client HOST PORT SIZE TIMEOUT_S
    pmtu-probe.py udp-df HOST PORT SIZE TIMEOUT_S

bulk-server: listens on TCP PORT (prints {"event": "listening"}), accepts one
connection, reads SIZE bytes while sending SIZE bytes of its own, and prints
what it received. bulk-client: connects, sends SIZE bytes while reading SIZE
bytes, checks both against the pattern, prints the outcome and the path MTU
the kernel learned (IP_MTU). Both directions run at once, so each side's
large segments meet the narrower link.

udp-df: a connected UDP socket with DF on every datagram (IP_PMTUDISC_PROBE:
sent even above the path MTU the kernel knows) and IP_RECVERR. Sends a small
datagram and waits for its echo (the flow is open), then one datagram of
SIZE bytes (IP header included), and prints the ICMP error the kernel queued
on the socket: origin, type, code, the MTU it carried (ee_info) and its
sender (SO_EE_OFFENDER). The kernel queues an ICMP error on a socket only if
the datagram it quotes matches the socket's addresses and ports, so an
error here shows that the quote is the datagram as this socket sent it.

Every mode prints one JSON line with its result and only ever talks to
HOST:PORT given to it (addresses inside the test's namespaces).
"""
import json
import select
import socket
import struct
import sys
import threading
import time

IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IP_RECVERR = 11
IP_MTU = 14
SO_EE_ORIGIN_ICMP = 2
IP_UDP_HLEN = 28


def out(obj):
    print(json.dumps(obj), flush=True)


def pattern(size):
    return bytes(i % 251 for i in range(size))


def exchange(sock, size, timeout):
    """Send `size` bytes of the pattern while receiving `size` bytes."""
    sock.settimeout(timeout)
    data = pattern(size)
    err = []

    def sender():
        try:
            sock.sendall(data)
        except OSError as e:
            err.append(str(e))

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    th.join(max(0.0, deadline - time.monotonic()))
    return {
        'received': len(got),
        'received_ok': bytes(got) == data,
        'sent_all': not th.is_alive() and not err,
        'send_error': err[0] if err else None,
    }


def bulk_server(port, size):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('0.0.0.0', port))
    srv.listen(1)
    out({'event': 'listening', 'port': port})
    conn, peer = srv.accept()
    out({'event': 'accept', 'remote': peer[0]})
    r = exchange(conn, size, 120)
    r.update({'event': 'done', 'pmtu': conn.getsockopt(socket.IPPROTO_IP, IP_MTU)})
    out(r)
    time.sleep(1)
    conn.close()


def bulk_client(host, port, size, timeout):
    t0 = time.monotonic()
    sock = socket.create_connection((host, port), timeout=10)
    r = exchange(sock, size, timeout)
    try:
        pmtu = sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:  # reset or timed out: no route cached for it any more
        pmtu = None
    r.update({'ok': r['received_ok'] and r['sent_all'], 'secs': round(time.monotonic() - t0, 2), 'pmtu': pmtu})
    out(r)
    sock.close()


def udp_df(host, port, size, timeout):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.connect((host, port))
    sock.settimeout(3)
    sock.send(b'open')
    try:
        echo = sock.recv(2048)
    except OSError as e:
        out({'ok': False, 'stage': 'open', 'error': str(e)})
        return
    sock.send(b'x' * (size - IP_UDP_HLEN))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = select.poll()
        p.register(sock, select.POLLERR)
        if not p.poll(200):
            continue
        data, anc, _flags, _addr = sock.recvmsg(65535, 1024, socket.MSG_ERRQUEUE)
        for level, typ, val in anc:
            if level != socket.IPPROTO_IP or typ != IP_RECVERR:
                continue
            ee_errno, origin, icmp_type, icmp_code, _pad, info, _data = struct.unpack_from('=IBBBBII', val)
            offender = socket.inet_ntoa(val[20:24]) if len(val) >= 24 else None
            out({
                'ok': True, 'echo': echo.decode(errors='replace'), 'errno': ee_errno,
                'origin': 'icmp' if origin == SO_EE_ORIGIN_ICMP else origin,
                'type': icmp_type, 'code': icmp_code, 'mtu': info, 'offender': offender,
                'quoted_payload': len(data), 'ip_mtu': sock.getsockopt(socket.IPPROTO_IP, IP_MTU),
            })
            return
    out({'ok': False, 'stage': 'error', 'echo': echo.decode(errors='replace'), 'error': 'no ICMP error within the timeout'})


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == 'bulk-server':
        bulk_server(int(args[0]), int(args[1]))
    elif mode == 'bulk-client':
        bulk_client(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == 'udp-df':
        udp_df(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f'unknown mode {mode}')


if __name__ == '__main__':
    main()
