#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Keeps one TCP connection to an echo server busy (a line every 50 ms) and reports when it
dies: prints "open" once the first echo came back, then "closed <epoch seconds> <why>"."""
import socket
import sys
import time

s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(5)
first = True
while True:
    try:
        s.sendall(b"ping\n")
        data = s.recv(64)
        if not data:
            print("closed %.3f eof" % time.time(), flush=True)
            break
        if first:
            print("open", flush=True)
            first = False
    except OSError as e:
        print("closed %.3f %s" % (time.time(), type(e).__name__), flush=True)
        break
    time.sleep(0.05)
