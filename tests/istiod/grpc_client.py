#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""An independent gRPC client (Debian's python3-grpcio + the build's *_pb2.py) against a
running istiod-lite, for tests/istiod/test_grpc_interop.sh.

Usage: grpc_client.py [hold]  (everything else comes from the environment, see main())

Checks, in order, printing one "ok ..." line per check and exiting 1 on the first failure:
  1. Delta ADS over TLS as node-1's ztunnel: Workload/Service/Authorization resources with
     Istio's names and contents; ACK.
  2. Live updates: a Pod written to the store arrives alone within 2 s; its deletion comes
     back in removed_resources (which we NACK, to exercise the reject path).
  3. Refusals on ADS: unknown token, another node's NODE_NAME, a foreign clusterid.
  4. CreateCertificate: a pod of node-1 gets a chain whose leaf has the URI SAN; a pod of
     node-2 is refused; a bad token is UNAUTHENTICATED; the plaintext port works too.
  5. /metrics shows the connected proxy, the pushes, the reject and the CA counters.
With "hold": open a stream, print "streaming", and expect UNAVAILABLE when the server drains.
"""
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.environ["PROTO_PY_DIR"])

import grpc  # noqa: E402
from google.protobuf import struct_pb2  # noqa: E402

import authorization_pb2  # noqa: E402
import ca_pb2  # noqa: E402
import core_pb2  # noqa: E402
import discovery_pb2  # noqa: E402
import workload_pb2  # noqa: E402

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CA = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
T_ADDR = "type.googleapis.com/istio.workload.Address"
T_AUTHZ = "type.googleapis.com/istio.security.Authorization"
NODE1_ID = "ztunnel~10.200.0.1~ztunnel-node-1.istio-system~istio-system.svc.cluster.local"
TD = "cluster.local"
WAIT = 5.0


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def ok(msg):
    print("ok   " + msg, flush=True)


def check(cond, msg):
    if not cond:
        fail(msg)


class Ads:
    """One DeltaAggregatedResources stream: requests from a queue, responses into a queue."""

    def __init__(self, channel, token, node_name="node-1", node_id=NODE1_ID, extra_md=()):
        self.reqs = queue.Queue()
        self.rsps = queue.Queue()
        call = channel.stream_stream(
            ADS,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)
        md = [("authorization", "Bearer " + token)] + list(extra_md)
        self.node = core_pb2.Node(id=node_id)
        if node_name is not None:
            self.node.metadata.update({"NODE_NAME": node_name, "NAME": "ztunnel-x",
                                       "NAMESPACE": "istio-system"})
        self.first = True
        self.call = call(iter(self.reqs.get, None), metadata=md)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                self.rsps.put(r)
            self.rsps.put(("end", self.call.code(), self.call.details()))
        except grpc.RpcError as e:
            self.rsps.put(("end", e.code(), e.details()))

    def send(self, type_url, nonce="", error=None, subscribe=()):
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                                  resource_names_subscribe=list(subscribe))
        if self.first:
            req.node.CopyFrom(self.node)
            self.first = False
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        self.reqs.put(req)

    def recv(self, timeout=WAIT):
        try:
            r = self.rsps.get(timeout=timeout)
        except queue.Empty:
            return None
        return r

    def expect_response(self, what, timeout=WAIT):
        r = self.recv(timeout)
        check(r is not None, "%s: no response within %.1f s" % (what, timeout))
        if isinstance(r, tuple):
            fail("%s: stream ended: %s %s" % (what, r[1], r[2]))
        return r

    def expect_end(self, what, timeout=WAIT):
        r = self.recv(timeout)
        check(isinstance(r, tuple), "%s: expected the stream to end, got %r" % (what, r))
        return r[1], r[2]

    def close(self):
        self.reqs.put(None)


def ip4(s):
    return bytes(int(x) for x in s.split("."))


def check_resources(ads):
    """Step 1: the initial state for both types, decoded and checked; ACK both."""
    ads.send(T_ADDR)
    ads.send(T_AUTHZ)
    got = {}
    for _ in range(2):
        r = ads.expect_response("initial push")
        check(r.type_url not in got, "two initial responses for " + r.type_url)
        got[r.type_url] = r
    check(set(got) == {T_ADDR, T_AUTHZ}, "initial responses for %s" % sorted(got))
    addr = got[T_ADDR]
    names = sorted(res.name for res in addr.resources)
    want = sorted(["Kubernetes//Pod/demo/sleep-1", "Kubernetes//Pod/demo/httpbin-2",
                   "demo/httpbin.demo.svc.cluster.local"])
    check(names == want, "Address names %s, want %s" % (names, want))
    check(not addr.removed_resources, "removed_resources in the initial push")
    check(addr.nonce, "no nonce")
    by_name = {}
    for res in addr.resources:
        check(res.resource.type_url == T_ADDR, "Any.type_url " + res.resource.type_url)
        check(res.version, "resource %s has no version" % res.name)
        a = workload_pb2.Address.FromString(res.resource.value)
        by_name[res.name] = a
    ok("Address resources with Istio's names: %s" % ", ".join(names))

    w = by_name["Kubernetes//Pod/demo/sleep-1"]
    check(w.WhichOneof("type") == "workload", "sleep-1 is not a Workload")
    w = w.workload
    check(w.uid == "Kubernetes//Pod/demo/sleep-1", "uid " + w.uid)
    check((w.name, w.namespace) == ("sleep-1", "demo"), "name/namespace %s/%s" % (w.name, w.namespace))
    check(list(w.addresses) == [ip4("10.200.1.10")], "addresses %r" % list(w.addresses))
    check(w.service_account == "sleep", "service_account " + w.service_account)
    check(w.node == "node-1", "node " + w.node)
    check(w.tunnel_protocol == workload_pb2.HBONE, "tunnel_protocol %d" % w.tunnel_protocol)
    check(w.cluster_id == "Kubernetes", "cluster_id " + w.cluster_id)
    check(w.trust_domain in ("", TD), "trust_domain " + w.trust_domain)
    check(w.status == workload_pb2.HEALTHY, "status %d" % w.status)

    w = by_name["Kubernetes//Pod/demo/httpbin-2"].workload
    svc = "demo/httpbin.demo.svc.cluster.local"
    check(svc in w.services, "httpbin-2 services %s" % list(w.services))
    ports = [(p.service_port, p.target_port) for p in w.services[svc].ports]
    check(ports == [(8000, 8080)], "httpbin-2 ports %s" % ports)
    check(list(w.authorization_policies) == ["demo/allow-sleep"],
          "httpbin-2 authorization_policies %s" % list(w.authorization_policies))
    check(w.node == "node-2", "httpbin-2 node " + w.node)

    s = by_name[svc]
    check(s.WhichOneof("type") == "service", "httpbin is not a Service")
    s = s.service
    check((s.name, s.namespace, s.hostname) == ("httpbin", "demo", "httpbin.demo.svc.cluster.local"),
          "service %s/%s %s" % (s.namespace, s.name, s.hostname))
    check([a.address for a in s.addresses] == [ip4("10.96.1.20")], "service VIPs")
    check([(p.service_port, p.target_port) for p in s.ports] == [(8000, 8080)], "service ports")
    ok("Workload sleep-1 (node-1, HBONE, sa sleep), httpbin-2 (service port, policy), "
       "Service httpbin decode correctly")

    az = got[T_AUTHZ]
    names = [res.name for res in az.resources]
    check(names == ["demo/allow-sleep"], "Authorization names %s" % names)
    p = authorization_pb2.Authorization.FromString(az.resources[0].resource.value)
    check((p.name, p.namespace) == ("allow-sleep", "demo"), "policy %s/%s" % (p.namespace, p.name))
    check(p.scope == authorization_pb2.WORKLOAD_SELECTOR, "scope %d" % p.scope)
    check(p.action == authorization_pb2.ALLOW, "action %d" % p.action)
    m = [mm for g in p.groups for r in g.rules for mm in r.matches]
    principals = [sm.exact for mm in m for sm in mm.principals]
    dports = [pt for mm in m for pt in mm.destination_ports]
    check(principals == ["cluster.local/ns/demo/sa/sleep"], "principals %s" % principals)
    check(dports == [8080], "destination_ports %s" % dports)
    ok("Authorization demo/allow-sleep: WORKLOAD_SELECTOR ALLOW from sleep to port 8080")

    ads.send(T_ADDR, nonce=addr.nonce)
    ads.send(T_AUTHZ, nonce=az.nonce)
    check(ads.recv(0.3) is None, "a response after the ACKs with nothing changed")
    ok("ACKed both types; nothing more is sent")


LIVE_POD = """apiVersion: v1
kind: Pod
metadata:
  name: live-1
  namespace: demo
  labels:
    app: live
spec:
  nodeName: node-1
  serviceAccountName: live
status:
  phase: Running
  podIP: 10.200.1.11
  conditions:
  - type: Ready
    status: "True"
"""


def check_live(ads, store):
    """Step 2: add a Pod, then delete it."""
    name = "Kubernetes//Pod/demo/live-1"
    tmp = os.path.join(store, ".live.yaml.tmp")
    with open(tmp, "w") as f:
        f.write(LIVE_POD)
    t0 = time.monotonic()
    os.rename(tmp, os.path.join(store, "live.yaml"))
    r = ads.expect_response("push after adding a Pod", timeout=2.0)
    dt = time.monotonic() - t0
    check(r.type_url == T_ADDR, "push type " + r.type_url)
    check([x.name for x in r.resources] == [name] and not r.removed_resources,
          "push has %s, removed %s" % ([x.name for x in r.resources], list(r.removed_resources)))
    w = workload_pb2.Address.FromString(r.resources[0].resource.value).workload
    check(w.uid == name and list(w.addresses) == [ip4("10.200.1.11")], "live workload %s" % w)
    ok("new Pod pushed alone in %.0f ms" % (dt * 1000))
    ads.send(T_ADDR, nonce=r.nonce)

    t0 = time.monotonic()
    os.unlink(os.path.join(store, "live.yaml"))
    r = ads.expect_response("push after deleting the Pod", timeout=2.0)
    dt = time.monotonic() - t0
    check(r.type_url == T_ADDR and not r.resources and list(r.removed_resources) == [name],
          "removal push: resources %s removed %s" % ([x.name for x in r.resources],
                                                     list(r.removed_resources)))
    ok("deleted Pod in removed_resources in %.0f ms" % (dt * 1000))
    # NACK this one: the server logs it, counts it, and keeps serving.
    ads.send(T_ADDR, nonce=r.nonce, error="test: rejected on purpose")
    check(ads.recv(0.3) is None, "a response after the NACK")
    ok("NACK accepted, stream still open")


def check_ads_refusals(channel, token1, token2):
    """Step 3."""
    a = Ads(channel, "not-a-valid-token-0000000000")
    a.send(T_ADDR)
    code, details = a.expect_end("unknown token")
    check(code == grpc.StatusCode.UNAUTHENTICATED, "unknown token: %s %s" % (code, details))
    a.close()
    ok("ADS with an unknown token: UNAUTHENTICATED (%s)" % details)

    a = Ads(channel, token1, node_name="node-2")
    a.send(T_ADDR)
    code, details = a.expect_end("wrong node")
    check(code == grpc.StatusCode.PERMISSION_DENIED, "wrong node: %s %s" % (code, details))
    a.close()
    ok("ADS with node-1's token claiming NODE_NAME node-2: PERMISSION_DENIED (%s)" % details)

    a = Ads(channel, token1, node_name=None)
    a.send(T_ADDR)
    code, details = a.expect_end("no NODE_NAME")
    check(code == grpc.StatusCode.PERMISSION_DENIED, "no NODE_NAME: %s %s" % (code, details))
    a.close()
    ok("ADS without NODE_NAME: PERMISSION_DENIED")

    a = Ads(channel, token2, node_name="node-2", extra_md=[("clusterid", "Elsewhere")])
    a.send(T_ADDR)
    code, details = a.expect_end("foreign cluster")
    check(code == grpc.StatusCode.UNAUTHENTICATED, "foreign clusterid: %s %s" % (code, details))
    a.close()
    ok("ADS with clusterid of another cluster: UNAUTHENTICATED")


def openssl(*args, stdin=None):
    p = subprocess.run(["openssl"] + list(args), input=stdin, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def create_cert(channel, token, csr, identity, extra_md=()):
    req = ca_pb2.IstioCertificateRequest(csr=csr, validity_duration=3600)
    req.metadata.update({"ImpersonatedIdentity": identity})
    call = channel.unary_unary(CA, request_serializer=ca_pb2.IstioCertificateRequest.SerializeToString,
                               response_deserializer=ca_pb2.IstioCertificateResponse.FromString)
    md = [("authorization", "Bearer " + token), ("clusterid", "Kubernetes")] + list(extra_md)
    try:
        return call(req, metadata=md, timeout=WAIT), None
    except grpc.RpcError as e:
        return None, e


def check_ca(channel, plain, token1, csr, root):
    """Step 4."""
    ident = "spiffe://%s/ns/demo/sa/sleep" % TD
    rsp, err = create_cert(channel, token1, csr, ident)
    check(err is None, "CreateCertificate for sleep: %s" % (err and (err.code(), err.details())))
    check(len(rsp.cert_chain) == 2, "chain of %d certificates" % len(rsp.cert_chain))
    with tempfile.TemporaryDirectory() as d:
        leaf = os.path.join(d, "leaf.pem")
        with open(leaf, "w") as f:
            f.write(rsp.cert_chain[0])
        rc, out = openssl("x509", "-in", leaf, "-noout", "-ext", "subjectAltName")
        check(rc == 0, "openssl x509: " + out)
        uris = re.findall(r"URI:(\S+)", out)
        check(uris == [ident], "leaf URI SANs %s, want [%s]" % (uris, ident))
        rc, out = openssl("verify", "-CAfile", root, leaf)
        check(rc == 0, "leaf does not verify against root-cert.pem: " + out)
    with open(root) as f:
        check(rsp.cert_chain[1].strip() == f.read().strip(), "chain[1] is not root-cert.pem")
    ok("CreateCertificate for %s: leaf with exactly that URI SAN, verifies to the root" % ident)

    rsp, err = create_cert(channel, token1, csr, "spiffe://%s/ns/demo/sa/httpbin" % TD)
    check(err is not None and err.code() in (grpc.StatusCode.PERMISSION_DENIED,
                                             grpc.StatusCode.UNAUTHENTICATED),
          "httpbin (node-2) from node-1: %s" % (err and err.code()))
    ok("CreateCertificate for a pod on node-2 with node-1's token: %s (%s)"
       % (err.code().name, err.details()))

    rsp, err = create_cert(channel, "bad-token-bad-token-bad-token", csr, ident)
    check(err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED,
          "bad token: %s" % (err and err.code()))
    ok("CreateCertificate with a bad token: UNAUTHENTICATED")

    rsp, err = create_cert(plain, token1, csr, ident)
    check(err is None and len(rsp.cert_chain) == 2,
          "plaintext CreateCertificate: %s" % (err and (err.code(), err.details())))
    ok("CreateCertificate over the plaintext port")


def metrics(url):
    with urllib.request.urlopen(url, timeout=WAIT) as r:
        return r.read().decode()


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def check_metrics(url):
    """Step 5 (the stream from step 1 is still open)."""
    t = metrics(url + "/metrics")
    want = [
        ("pilot_xds", "", lambda v: v == 1),
        ("pilot_xds_pushes", '{type="wds"}', lambda v: v >= 3),
        ("pilot_xds_pushes", '{type="wads"}', lambda v: v >= 1),
        ("pilot_total_xds_rejects", '{type="wds"}', lambda v: v == 1),
        ("pilot_proxy_convergence_time_count", '{type="wds"}', lambda v: v >= 3),
        ("citadel_server_csr_count", "", lambda v: v >= 4),
        ("citadel_server_success_cert_issuance_count", "", lambda v: v >= 2),
        ("citadel_server_authentication_failure_count", "", lambda v: v >= 1),
    ]
    for name, labels, good in want:
        v = metric(t, name, labels)
        check(v is not None and good(v), "metric %s%s = %s" % (name, labels, v))
    ok("/metrics: pilot_xds 1, pushes, the NACK, convergence time, citadel counters")
    with urllib.request.urlopen(url + "/healthz/ready", timeout=WAIT) as r:
        check(r.status == 200, "/healthz/ready %d" % r.status)
    ok("/healthz/ready 200")


def hold(env, tls):
    """Keep a stream open until the server ends it: the drain on SIGTERM must end it with
    UNAVAILABLE (so ztunnel reconnects elsewhere at once)."""
    ads = Ads(tls, env["TOKEN_NODE1"])
    ads.send(T_ADDR)
    r = ads.expect_response("initial push")
    ads.send(T_ADDR, nonce=r.nonce)
    print("streaming", flush=True)
    code, details = ads.expect_end("drain", timeout=30)
    check(code == grpc.StatusCode.UNAVAILABLE, "stream end on drain: %s %s" % (code, details))
    ok("on SIGTERM the open stream ended with UNAVAILABLE (%s)" % details)
    print("PASS", flush=True)


def main():
    env = os.environ
    root = env["ROOT_CERT"]
    with open(root, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    # The serving certificate has a SPIFFE URI SAN and DNS SAN istiod.istio-system.svc, the
    # name ztunnel dials; we dial 127.0.0.1 and verify that name.
    opts = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    tls = grpc.secure_channel(env["ISTIOD_TLS"], creds, options=opts)
    plain = grpc.insecure_channel(env["ISTIOD_PLAIN"])
    grpc.channel_ready_future(tls).result(timeout=WAIT)
    ok("TLS channel to %s ready (verified istiod.istio-system.svc against root-cert.pem)"
       % env["ISTIOD_TLS"])
    if sys.argv[1:] == ["hold"]:
        hold(env, tls)
        return
    with open(env["CSR"]) as f:
        csr = f.read()

    ads = Ads(tls, env["TOKEN_NODE1"])
    check_resources(ads)
    check_live(ads, env["STORE"])
    check_ads_refusals(tls, env["TOKEN_NODE1"], env["TOKEN_NODE2"])
    check_ca(tls, plain, env["TOKEN_NODE1"], csr, root)
    check_metrics(env["METRICS_URL"])

    ads.close()
    code, details = ads.expect_end("half-close")
    check(code == grpc.StatusCode.OK, "stream end after half-close: %s %s" % (code, details))
    ok("half-closed ADS stream ends with OK")
    tls.close()
    plain.close()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
