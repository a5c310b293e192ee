#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""TCP peers for check_capture_e2e.sh: a (transparent) listener that reports what it
accepted, and a client. Both exchange one line so the whole connection is exercised.

  tproxy_peer.py listen ADDR PORT READY_FILE TIMEOUT [--transparent] [--v6only]
      prints "accepted local=IP:PORT peer=IP:PORT" and exits 0, or exits 3 if nothing
      connected within TIMEOUT seconds
  tproxy_peer.py connect ADDR PORT TIMEOUT [--bind SRC]
      exits 0 once "pong" came back, 1 otherwise (error on stderr); SRC is the
      client's source address
  tproxy_peer.py udp-listen ADDR PORT READY_FILE TIMEOUT
      prints "received from=IP:PORT" and exits 0 on the first datagram, 3 on timeout
  tproxy_peer.py udp-send ADDR PORT [--bind SRC] [--size N]
      sends one datagram ("ping\n", or N bytes: more than the MTU leaves in fragments)
  tproxy_peer.py ping ADDR TIMEOUT
      one ICMP / ICMPv6 echo; ADDR may carry a scope ("fe80::1%eth0"); exits 0 on
      the reply, 1 otherwise
"""
import os
import select
import socket
import struct
import sys
import time

IP_TRANSPARENT = 19  # linux/in.h
IPV6_TRANSPARENT = 75  # linux/in6.h


def fmt(addr):
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(addr, port, ready, timeout, transparent, v6only):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    if transparent:
        if family == socket.AF_INET:
            srv.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        else:
            srv.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    srv.bind((addr, port))
    srv.listen(8)
    srv.settimeout(timeout)
    with open(ready, "w", encoding="ascii") as f:
        f.write("ready\n")
    try:
        conn, peer = srv.accept()
    except socket.timeout:
        print("no connection")
        return 3
    conn.settimeout(timeout)
    local = conn.getsockname()
    line = conn.recv(64)
    if line == b"ping\n":
        conn.sendall(b"pong\n")
    print(f"accepted local={fmt(local)} peer={fmt(peer)} got={line!r}", flush=True)
    conn.close()
    return 0


def connect(addr, port, timeout, src=None):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
            if src:
                c.bind((src, 0))
            c.connect((addr, port))
            c.sendall(b"ping\n")
            got = c.recv(64)
    except OSError as e:
        print(f"connect {addr} {port}: {e}", file=sys.stderr)
        return 1
    if got != b"pong\n":
        print(f"connect {addr} {port}: got {got!r}", file=sys.stderr)
        return 1
    return 0


def udp_listen(addr, port, ready, timeout):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as srv:
        srv.bind((addr, port))
        srv.settimeout(timeout)
        with open(ready, "w", encoding="ascii") as f:
            f.write("ready\n")
        try:
            data, peer = srv.recvfrom(65535)
        except socket.timeout:
            print("no datagram")
            return 3
    print(f"received from={fmt(peer)} len={len(data)}", flush=True)
    return 0


def udp_send(addr, port, src=None, size=None):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as c:
        if src:
            c.bind((src, 0))
        c.sendto(b"x" * size if size else b"ping\n", (addr, port))
    return 0


def icmp_checksum(data):
    data += b"\0" * (len(data) & 1)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(addr, timeout):
    """One echo request over a raw socket; the kernel fills in the ICMPv6 checksum."""
    host, _, scope = addr.partition("%")
    v6 = ":" in host
    ident = os.getpid() & 0xFFFF
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        dst = (host, 0, 0, socket.if_nametoindex(scope) if scope else 0)
        req, rep = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        dst = (host, 0)
        req, rep = 8, 0
    with sock:
        msg = struct.pack("!BBHHH", req, 0, 0, ident, 1) + b"meshlite"
        if not v6:
            msg = msg[:2] + struct.pack("!H", icmp_checksum(msg)) + msg[4:]
        sock.sendto(msg, dst)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                print(f"ping {addr}: no reply", file=sys.stderr)
                return 1
            data = sock.recv(1500)
            if not v6:
                data = data[(data[0] & 0xF) * 4:]  # raw IPv4 sockets get the IP header
            if len(data) >= 8 and data[0] == rep and struct.unpack("!H", data[4:6])[0] == ident:
                return 0


def opt(args, name):
    return args[args.index(name) + 1] if name in args[:-1] else None


def main(argv):
    if len(argv) >= 6 and argv[1] == "listen":
        return listen(argv[2], int(argv[3]), argv[4], float(argv[5]),
                      "--transparent" in argv[6:], "--v6only" in argv[6:])
    if len(argv) in (5, 7) and argv[1] == "connect":
        return connect(argv[2], int(argv[3]), float(argv[4]), opt(argv[5:], "--bind"))
    if len(argv) == 6 and argv[1] == "udp-listen":
        return udp_listen(argv[2], int(argv[3]), argv[4], float(argv[5]))
    if len(argv) in (4, 6, 8) and argv[1] == "udp-send":
        size = opt(argv[4:], "--size")
        return udp_send(argv[2], int(argv[3]), opt(argv[4:], "--bind"), int(size) if size else None)
    if len(argv) == 4 and argv[1] == "ping":
        return ping(argv[2], float(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
