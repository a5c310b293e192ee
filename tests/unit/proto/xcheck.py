#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Byte-for-byte comparison of protobuf-c (proto_dump) with python3-protobuf.

Both sides are generated from the same proto/*.proto, by two different compilers (protoc-c,
protoc) and runtimes; the Python side also uses the runtime's own well-known types rather
than our local copies in proto/google/protobuf/. Every message type is filled by the same
rule on each side (see fill.h) and must serialize to the same bytes, and every realistic
sample (samples.c) is rebuilt here by field name and must match too.

usage: xcheck.py <proto_dump> <dir with *_pb2.py>      exit 0 ok, 1 mismatch or missing python3-protobuf
"""
import importlib
import subprocess
import sys

DEPTH = 3  # PB_FILL_DEPTH
VARIANTS = 6  # PB_FILL_VARIANTS
MODULES = ("workload_pb2", "authorization_pb2", "core_pb2", "status_pb2", "discovery_pb2",
           "ca_pb2")
TYPE_ADDRESS = "type.googleapis.com/istio.workload.Address"


def load(pydir):
    try:
        from google.protobuf import descriptor  # noqa: F401
    except ImportError:
        print("FAIL: google.protobuf is not importable: install Debian's python3-protobuf "
              "(scripts/install-deps.sh does)")
        sys.exit(1)
    sys.path.insert(0, pydir)
    return {m: importlib.import_module(m) for m in MODULES}


def message_class(full_name):
    from google.protobuf import descriptor_pool, symbol_database
    try:
        return symbol_database.Default().GetSymbol(full_name)
    except KeyError:
        from google.protobuf import message_factory
        desc = descriptor_pool.Default().FindMessageTypeByName(full_name)
        return message_factory.MessageFactory().GetPrototype(desc)


def scalar(f, depth, sid, k):
    from google.protobuf.descriptor import FieldDescriptor as FD
    seed = f.number * 1000 + depth * 100 + sid * 10 + k
    t = f.type
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32, FD.TYPE_INT64, FD.TYPE_SINT64,
             FD.TYPE_SFIXED64):
        return -seed
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32, FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return seed
    if t == FD.TYPE_FLOAT:
        return seed + 0.5
    if t == FD.TYPE_DOUBLE:
        return seed + 0.25
    if t == FD.TYPE_BOOL:
        return True
    if t == FD.TYPE_ENUM:
        return max(v.number for v in f.enum_type.values)
    if t == FD.TYPE_STRING:
        return "f%dd%ds%dk%d" % (f.number, depth, sid, k)
    if t == FD.TYPE_BYTES:
        return bytes([f.number & 0xff, depth, sid, k, 0xff])
    raise ValueError("unhandled type %d in %s" % (t, f.full_name))


def is_map(f):
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def fill(msg, depth, sid, variant):
    """The rule of fill.h, written independently of fill.c."""
    from google.protobuf.descriptor import FieldDescriptor as FD
    for f in sorted(msg.DESCRIPTOR.fields, key=lambda f: f.number):
        is_msg = f.type == FD.TYPE_MESSAGE
        deep = depth + 1 > DEPTH
        if f.containing_oneof is not None:
            members = sorted(f.containing_oneof.fields, key=lambda m: m.number)
            if members[variant % len(members)].number != f.number:
                continue
            if is_msg:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                if not deep:
                    fill(sub, depth + 1, 0, variant)
            else:
                setattr(msg, f.name, scalar(f, depth, sid, 0))
            continue
        if f.label == FD.LABEL_REPEATED:
            if is_msg and deep:
                continue
            if is_map(f):
                m = getattr(msg, f.name)
                kf = f.message_type.fields_by_name["key"]
                vf = f.message_type.fields_by_name["value"]
                for k in range(2):
                    key = scalar(kf, depth + 1, k, 0)
                    if vf.type == FD.TYPE_MESSAGE:
                        v = m[key]  # present even when empty, as a map value always is
                        if depth + 2 <= DEPTH:
                            fill(v, depth + 2, 0, variant)
                    else:
                        m[key] = scalar(vf, depth + 1, k, 0)
                continue
            lst = getattr(msg, f.name)
            for k in range(2):
                if is_msg:
                    fill(lst.add(), depth + 1, k, variant)
                else:
                    lst.append(scalar(f, depth, sid, k))
            continue
        if is_msg:
            if deep:
                continue
            sub = getattr(msg, f.name)
            sub.SetInParent()
            fill(sub, depth + 1, 0, variant)
        else:
            setattr(msg, f.name, scalar(f, depth, sid, 0))


def samples(mods):
    from google.protobuf import any_pb2, empty_pb2
    W = mods["workload_pb2"]
    S = mods["authorization_pb2"]
    C = mods["core_pb2"]
    R = mods["status_pb2"]
    D = mods["discovery_pb2"]
    A = mods["ca_pb2"]
    out = {}

    w = W.Workload(
        uid="Kubernetes//Pod/default/echo-5d8f7-abcde", name="echo-5d8f7-abcde",
        namespace="default",
        addresses=[bytes([10, 244, 1, 5]), bytes.fromhex("fd00000000000000000000000000000a")],
        tunnel_protocol=W.HBONE, trust_domain="cluster.local", service_account="echo",
        waypoint=W.GatewayAddress(address=W.NetworkAddress(address=bytes([10, 244, 1, 9])),
                                  hbone_mtls_port=15008),
        node="node-1", canonical_name="echo", canonical_revision="v1", workload_type=W.POD,
        workload_name="echo", authorization_policies=["default/allow-sleep"],
        status=W.HEALTHY, cluster_id="Kubernetes",
        locality=W.Locality(region="eu-west1", zone="eu-west1-b"))
    w.services["default/echo.default.svc.cluster.local"].ports.add(
        service_port=80, target_port=8080, app_protocol=W.HTTP11)
    w.capacity.value = 2
    out["workload"] = W.Address(workload=w)

    svc = W.Service(
        name="echo", namespace="default", hostname="echo.default.svc.cluster.local",
        addresses=[W.NetworkAddress(address=bytes([10, 96, 0, 10]))],
        ports=[W.Port(service_port=80, target_port=8080, app_protocol=W.HTTP2),
               W.Port(service_port=9090)],
        waypoint=W.GatewayAddress(
            hostname=W.NamespacedHostname(namespace="default",
                                          hostname="waypoint.default.svc.cluster.local"),
            hbone_mtls_port=15008),
        load_balancing=W.LoadBalancing(
            routing_preference=[W.LoadBalancing.NETWORK, W.LoadBalancing.REGION,
                                W.LoadBalancing.ZONE],
            mode=W.LoadBalancing.FAILOVER),
        ip_families=W.IPV4_ONLY)
    out["service"] = W.Address(service=svc)

    match = S.Match(
        principals=[S.StringMatch(exact="cluster.local/ns/default/sa/sleep")],
        namespaces=[S.StringMatch(prefix="prod-")],
        source_ips=[S.Address(address=bytes([10, 0, 0, 0]), length=8)],
        not_destination_ports=[9090, 15000],
        service_accounts=[S.ServiceAccountMatch(namespace="default", serviceAccount="sleep")])
    out["authz_allow"] = S.Authorization(
        name="allow-sleep", namespace="default", scope=S.WORKLOAD_SELECTOR, action=S.ALLOW,
        groups=[S.Group(rules=[S.Rules(matches=[match])])])
    strict = S.Match(not_principals=[S.StringMatch(presence=empty_pb2.Empty())])
    out["authz_strict"] = S.Authorization(
        name="istio_converted_peer_authentication_default", namespace="istio-system",
        scope=S.GLOBAL, action=S.DENY, groups=[S.Group(rules=[S.Rules(matches=[strict])])])

    node = C.Node(
        id="ztunnel~10.244.1.2~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local")
    node.metadata.update({"NAME": "ztunnel-x7k2p", "NAMESPACE": "istio-system"})
    req = D.DeltaDiscoveryRequest(node=node, type_url=TYPE_ADDRESS,
                                  resource_names_subscribe=["*"])
    req.initial_resource_versions["Kubernetes//Pod/default/echo-5d8f7-abcde"] = "1"
    out["delta_request"] = req
    out["delta_nack"] = D.DeltaDiscoveryRequest(
        type_url=TYPE_ADDRESS, response_nonce="7f3a",
        error_detail=R.Status(code=3, message="default/bad: unknown address family"))

    packed = any_pb2.Any()
    packed.Pack(out["service"])
    assert packed.type_url == TYPE_ADDRESS, packed.type_url
    out["delta_response"] = D.DeltaDiscoveryResponse(
        system_version_info="2026-01-01T00:00:00Z/3",
        resources=[D.Resource(name="default/echo.default.svc.cluster.local", version="3",
                              resource=packed, aliases=["/10.96.0.10"])],
        type_url=TYPE_ADDRESS, nonce="7f3a",
        removed_resources=["default/old.default.svc.cluster.local"],
        control_plane=C.ControlPlane(identifier="istiod-lite"))

    csr = A.IstioCertificateRequest(
        csr="-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        validity_duration=86400)
    csr.metadata.update({"ImpersonatedIdentity": "spiffe://cluster.local/ns/default/sa/echo"})
    out["csr_request"] = csr
    out["csr_response"] = A.IstioCertificateResponse(cert_chain=[
        "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n"])
    return out


def all_types(mods):
    """Every message type declared in our .proto files, map entries excluded."""
    names = set()

    def walk(d):
        if d.GetOptions().map_entry:
            return
        names.add(d.full_name)
        for n in d.nested_types:
            walk(n)

    for m in mods.values():
        for d in m.DESCRIPTOR.message_types_by_name.values():
            walk(d)
    return names


def compare(what, cls, cbytes, pymsg, errors):
    pybytes = pymsg.SerializeToString(deterministic=True)
    parsed = cls.FromString(cbytes)
    if pybytes != cbytes or parsed != pymsg:
        errors.append("%s: C %s\n  py %s\n  C parsed by Python:\n%s  built by Python:\n%s"
                      % (what, cbytes.hex(), pybytes.hex(), parsed, pymsg))


def main():
    dump, pydir = sys.argv[1], sys.argv[2]
    mods = load(pydir)
    lines = subprocess.run([dump], check=True, capture_output=True, text=True).stdout.split("\n")
    errors = []
    filled = set()
    nfill = 0
    nsamples = 0
    py_samples = samples(mods)

    for line in filter(None, lines):
        parts = line.split(" ")
        hexs = parts[-1]
        cbytes = b"" if hexs == "-" else bytes.fromhex(hexs)
        if parts[0] == "fill":
            variant, name = int(parts[1]), parts[2]
            filled.add(name)
            nfill += 1
            cls = message_class(name)
            m = cls()
            fill(m, 0, 0, variant)
            compare("fill %s/%d" % (name, variant), cls, cbytes, m, errors)
        elif parts[0] == "sample":
            sname, name = parts[1], parts[2]
            nsamples += 1
            pym = py_samples.pop(sname, None)
            if pym is None:
                errors.append("sample %s: not built in xcheck.py" % sname)
                continue
            if pym.DESCRIPTOR.full_name != name:
                errors.append("sample %s: C type %s, Python type %s"
                              % (sname, name, pym.DESCRIPTOR.full_name))
                continue
            compare("sample " + sname, type(pym), cbytes, pym, errors)
        else:
            errors.append("unexpected line: " + line)

    missing = all_types(mods) - filled
    if missing:
        errors.append("message types never exercised from C: " + ", ".join(sorted(missing)))
    if py_samples:
        errors.append("samples only in xcheck.py: " + ", ".join(sorted(py_samples)))
    for e in errors:
        print("MISMATCH " + e)
    print("%d message types (%d filled variants), %d samples compared, %d mismatches"
          % (len(filled), nfill, nsamples, len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
