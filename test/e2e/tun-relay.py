#!/usr/bin/env python3
"""A layer-3 link between two network namespaces, for the end-to-end tests.

    tun-relay.py NETNS_A IFNAME_A NETNS_B IFNAME_B

Creates TUN device IFNAME_A (IFF_TUN | IFF_NO_PI: bare IP packets, no
link-layer header, ARPHRD_NONE, like ppp0) in network namespace NETNS_A and
IFNAME_B in NETNS_B (by entering each with setns(2) before TUNSETIFF: a TUN
device is created in the caller's namespace), prints "ready", and copies
every packet read from one to the other until it is killed or stdin closes.
The devices are not persistent: they vanish when this process exits, which is
how the link-flap test takes the WAN interface away (as pppd's ppp0 goes on a
disconnect). Packets only ever go between the two devices.
"""
import ctypes
import fcntl
import os
import select
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MAX_PACKET = 65535

libc = ctypes.CDLL(None, use_errno=True)


def enter(netns):
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def open_tun(netns, name):
    enter(netns)
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    ns_a, if_a, ns_b, if_b = sys.argv[1:5]
    a = open_tun(ns_a, if_a)
    b = open_tun(ns_b, if_b)
    peer = {a: b, b: a}
    print("ready", flush=True)
    stdin = sys.stdin.fileno()
    while True:
        readable, _, _ = select.select([a, b, stdin], [], [])
        for fd in readable:
            if fd == stdin:
                if not os.read(stdin, 4096):
                    return  # the test went away
                continue
            try:
                pkt = os.read(fd, MAX_PACKET)
            except OSError:
                continue  # the device is down: nothing to read yet
            try:
                os.write(peer[fd], pkt)
            except OSError:
                pass  # the other end is down: dropped, as on a real link


if __name__ == "__main__":
    main()
