#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""TCP peers for check_capture_e2e.sh: a (transparent) listener that reports what it
accepted, and a client. Both exchange one line so the whole connection is exercised.

  tproxy_peer.py listen ADDR PORT READY_FILE TIMEOUT [--transparent] [--v6only]
      prints "accepted local=IP:PORT peer=IP:PORT" and exits 0, or exits 3 if nothing
      connected within TIMEOUT seconds
  tproxy_peer.py connect ADDR PORT TIMEOUT
      exits 0 once "pong" came back, 1 otherwise (error on stderr)
"""
import socket
import sys

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


def connect(addr, port, timeout):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as c:
            c.settimeout(timeout)
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


def main(argv):
    if len(argv) >= 6 and argv[1] == "listen":
        return listen(argv[2], int(argv[3]), argv[4], float(argv[5]),
                      "--transparent" in argv[6:], "--v6only" in argv[6:])
    if len(argv) == 5 and argv[1] == "connect":
        return connect(argv[2], int(argv[3]), float(argv[4]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
