#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""An independent HBONE client (Python's ssl + python3-h2) for tests/lab/test_hbone_inbound.sh.

Usage: hbone_client.py HOST PORT CERT KEY ROOT METHOD AUTHORITY [PAYLOAD]
Connects with TLS 1.3 + ALPN h2 (client certificate CERT/KEY, server verified against ROOT),
sends one request (a classic CONNECT: only :method and :authority; any other METHOD is sent
as a normal request with :scheme and :path), prints "status <code>" and, for a 200 on a
CONNECT, sends PAYLOAD, half-closes and prints "echo <bytes>" with what came back.
On a TLS failure it prints "tls-error <reason>"; a reset connection prints "reset".
"""
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events


def main():
    host, port, cert, key, root, method, authority = sys.argv[1:8]
    payload = sys.argv[8].encode() if len(sys.argv) > 8 else b""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # mesh certificates carry a SPIFFE URI SAN, no DNS name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(root)
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((host, int(port)), timeout=5)
    try:
        s = ctx.wrap_socket(raw)
        # TLS 1.3: a rejected client certificate is reported on the first read
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        if method == "CONNECT":
            hdrs = [(":method", "CONNECT"), (":authority", authority)]
        else:
            hdrs = [(":method", method), (":scheme", "https"), (":path", "/"),
                    (":authority", authority)]
        conn.send_headers(sid, hdrs, end_stream=(method != "CONNECT"))
        s.sendall(conn.data_to_send())
        status, echoed, done = None, b"", False
        while not done:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(":status")
                    print("status", status, flush=True)
                    if status == "200" and method == "CONNECT":
                        conn.send_data(sid, payload, end_stream=True)
                    else:
                        done = True
                elif isinstance(ev, h2.events.DataReceived):
                    echoed += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
        if status == "200" and method == "CONNECT":
            print("echo", echoed.decode(errors="replace"), flush=True)
        if status is None:
            print("no-response", flush=True)
    except ssl.SSLError as e:
        print("tls-error", e.reason or e, flush=True)
    except (ConnectionResetError, BrokenPipeError):
        print("reset", flush=True)
    except OSError as e:
        print("error", e, flush=True)
    except Exception as e:  # an h2 protocol error from a misbehaving server, say
        print("error", type(e).__name__, e, flush=True)


main()
