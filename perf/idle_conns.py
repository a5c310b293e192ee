#!/usr/bin/python3
"""Open N keep-alive HTTP/1.1 connections, complete one request on each, then hold them idle.

Run by perf/run inside the client pod:  idle_conns.py HOST PORT N [PATH]
Every connection carries one full request/response first, so the whole chain (client ->
node proxy -> tunnel -> node proxy -> server) is established end to end before the proxies'
memory is sampled. At most WINDOW connections are being set up at once (the proxies' accept
queues and TLS handshakes are what we measure, not SYN floods).

Prints one line `ready OK FAILED SECONDS` when every connection has either completed its
request or failed, then waits for a line on stdin (or EOF), closes everything and exits.
A connection that fails is not retried: OK is what the path could hold.
"""
import errno
import selectors
import socket
import sys
import time

WINDOW = 256
TIMEOUT = 30.0  # per connection, from connect() to the end of the response


def main():
    host, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    path = sys.argv[4] if len(sys.argv) > 4 else "/1k"
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode()
    sel = selectors.DefaultSelector()
    idle, failed, started = [], 0, 0
    pending = {}  # fd -> [sock, stage, buf, deadline]; stage 0 connecting, 1 reading
    t0 = time.monotonic()

    def fail(fd):
        nonlocal failed
        s = pending.pop(fd)[0]
        sel.unregister(s)
        s.close()
        failed += 1

    while started < total or pending:
        while started < total and len(pending) < WINDOW:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            r = s.connect_ex((host, port))
            if r not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            pending[s.fileno()] = [s, 0, b"", time.monotonic() + TIMEOUT]
            sel.register(s, selectors.EVENT_WRITE)
        for key, _ in sel.select(timeout=0.5):
            fd = key.fd
            ent = pending.get(fd)
            if ent is None:
                continue
            s = ent[0]
            if ent[1] == 0:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(fd)
                    continue
                try:
                    s.send(req)
                except OSError:
                    fail(fd)
                    continue
                ent[1] = 1
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                fail(fd)
                continue
            if not data:
                fail(fd)
                continue
            ent[2] += data
            head, sep, body = ent[2].partition(b"\r\n\r\n")
            if not sep:
                continue
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if len(body) >= length:
                if not head.startswith(b"HTTP/1.1 200"):
                    fail(fd)
                    continue
                sel.unregister(s)
                del pending[fd]
                idle.append(s)
        now = time.monotonic()
        for fd in [fd for fd, e in pending.items() if e[3] < now]:
            fail(fd)
    print("ready %d %d %.2f" % (len(idle), failed, time.monotonic() - t0), flush=True)
    sys.stdin.readline()
    for s in idle:
        s.close()


if __name__ == "__main__":
    main()
