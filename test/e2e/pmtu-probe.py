#!/usr/bin/env python3
"""Path MTU discovery probes for the end-to-end MTU tests (test/e2e/mtu.test.ts,
test/e2e/ipv6-mtu.test.ts).

    pmtu-probe.py bulk-server PORT SIZE [6]
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

IPv6: bulk-server listens on IPv6 with a last argument 6; the clients use the
family of HOST. The path MTU is then IPV6_MTU, the error an ICMPv6 one
(origin icmp6) and the sizes include the 40-byte IPv6 header.

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
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_PROBE = 3
IPV6_RECVERR = 25
IPV6_MTU = 24
SO_EE_ORIGIN_ICMP6 = 3
IP6_UDP_HLEN = 48


def is_v6(host):
    return ':' in host


def path_mtu(sock):
    if sock.family == socket.AF_INET6:
        return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
    return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)


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


def bulk_server(port, size, v6=False):
    srv = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('::' if v6 else '0.0.0.0', port))
    srv.listen(1)
    out({'event': 'listening', 'port': port})
    conn, peer = srv.accept()
    out({'event': 'accept', 'remote': peer[0]})
    r = exchange(conn, size, 120)
    r.update({'event': 'done', 'pmtu': path_mtu(conn)})
    out(r)
    time.sleep(1)
    conn.close()


def bulk_client(host, port, size, timeout):
    t0 = time.monotonic()
    sock = socket.create_connection((host, port), timeout=10)
    r = exchange(sock, size, timeout)
    try:
        pmtu = path_mtu(sock)
    except OSError:  # reset or timed out: no route cached for it any more
        pmtu = None
    r.update({'ok': r['received_ok'] and r['sent_all'], 'secs': round(time.monotonic() - t0, 2), 'pmtu': pmtu})
    out(r)
    sock.close()


def udp_df(host, port, size, timeout):
    v6 = is_v6(host)
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    level = socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP
    recverr = IPV6_RECVERR if v6 else IP_RECVERR
    sock.setsockopt(level, IPV6_MTU_DISCOVER if v6 else IP_MTU_DISCOVER, IPV6_PMTUDISC_PROBE if v6 else IP_PMTUDISC_PROBE)
    sock.setsockopt(level, recverr, 1)
    sock.connect((host, port))
    sock.settimeout(3)
    sock.send(b'open')
    try:
        echo = sock.recv(2048)
    except OSError as e:
        out({'ok': False, 'stage': 'open', 'error': str(e)})
        return
    sock.send(b'x' * (size - (IP6_UDP_HLEN if v6 else IP_UDP_HLEN)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = select.poll()
        p.register(sock, select.POLLERR)
        if not p.poll(200):
            continue
        data, anc, _flags, _addr = sock.recvmsg(65535, 1024, socket.MSG_ERRQUEUE)
        for level, typ, val in anc:
            if level != (socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP) or typ != recverr:
                continue
            ee_errno, origin, icmp_type, icmp_code, _pad, info, _data = struct.unpack_from('=IBBBBII', val)
            # SO_EE_OFFENDER: the sockaddr after the 16-byte sock_extended_err.
            if v6:
                offender = socket.inet_ntop(socket.AF_INET6, val[24:40]) if len(val) >= 40 else None
            else:
                offender = socket.inet_ntoa(val[20:24]) if len(val) >= 24 else None
            out({
                'ok': True, 'echo': echo.decode(errors='replace'), 'errno': ee_errno,
                'origin': {SO_EE_ORIGIN_ICMP: 'icmp', SO_EE_ORIGIN_ICMP6: 'icmp6'}.get(origin, origin),
                'type': icmp_type, 'code': icmp_code, 'mtu': info, 'offender': offender,
                'quoted_payload': len(data), 'ip_mtu': path_mtu(sock),
            })
            return
    out({'ok': False, 'stage': 'error', 'echo': echo.decode(errors='replace'), 'error': 'no ICMP error within the timeout'})


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == 'bulk-server':
        bulk_server(int(args[0]), int(args[1]), len(args) > 2 and args[2] == '6')
    elif mode == 'bulk-client':
        bulk_client(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif mode == 'udp-df':
        udp_df(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f'unknown mode {mode}')


if __name__ == '__main__':
    main()
