#!/usr/bin/env python3
"""The delaying link of scripts/netlab.sh: every IP packet read from one TUN device is written to
the other DELAY_MS later, in both directions, so a real TCP connection between the two sides
sees a round trip of 2 * DELAY_MS (with its own Nagle, slow start and ACK clocking). This kernel
has no netem; a TUN pair and this relay stand in for it.

usage: netlab_relay.py DEV_A DEV_B DELAY_MS   (prints "ready" once both devices are attached)
"""
import fcntl
import heapq
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000


def attach(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    os.set_blocking(fd, False)
    return fd


def main():
    a_name, b_name, delay = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000.0
    a, b = attach(a_name), attach(b_name)
    other = {a: b, b: a}
    pending = []  # (due, seq, fd, packet): a heap, so equal delays keep their order
    seq = 0
    print("ready", flush=True)
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                heapq.heappush(pending, (now + delay, seq, other[fd], packet))
                seq += 1
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, fd, packet = heapq.heappop(pending)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # the device is going away (the lab is being torn down)


if __name__ == "__main__":
    main()
