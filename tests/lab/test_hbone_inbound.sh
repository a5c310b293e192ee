#!/bin/bash
# ztunnel's inbound HBONE listener against an independent client (Python ssl + python3-h2),
# run from node-1 straight to <server-pod-ip>:15008 on node-2:
#  - a valid CONNECT with the client's mesh certificate -> 200 and the bytes echo back
#  - a non-CONNECT request -> 400; an authority that is not the connection's destination
#    -> 400; an unparsable authority -> 400; an upstream that refuses -> 503
#  - no client certificate, or one from another CA -> the TLS handshake fails
#  - a tunnel to a pod outside the mesh is refused (no certificate to present)
. "$(dirname "$0")/lib.sh"
require_root
PY=/usr/bin/python3
$PY -c 'import h2' 2>/dev/null || die "python3-h2 is missing (scripts/install-deps.sh installs it)"
command -v openssl >/dev/null || die "openssl is missing (scripts/install-deps.sh installs it)"
client_py=$(cd "$(dirname "$0")" && pwd)/hbone_client.py

fixture=$(mktemp -d)
sed "s|\${TESTPEER}|$TESTPEER|g" "$(dirname "$0")/fixtures/hbone/pods.yaml" >"$fixture/pods.yaml"
lab_up t-hbone --nodes 2 "$fixture"
rm -rf "$fixture"

server=$(pod_ip mesh/server)
outsider=$(pod_ip plain/outsider)
n1=$(node_field node-1 netns)
pki=/run/meshlite/$LAB_NAME/pki
cert=$pki/mesh.client.pem key=$pki/mesh.client-key.pem root=$pki/root-cert.pem
wait_for 10 lab_exec mesh/client -- "$TESTPEER" probe "$server:8081" >/dev/null || die "server not up"

hb() { ip netns exec "$n1" "$PY" "$client_py" "$@" 2>&1 || true; }
expect() { # name want got
	case "$3" in *"$2"*) ok "$1: $2" ;; *) fail "$1: want '$2', got '$3'" ;; esac
}

expect "valid CONNECT" "status 200" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "$server:8081" hello-hbone)"
expect "valid CONNECT echoes" "echo hello-hbone" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "$server:8081" hello-hbone)"
expect "GET instead of CONNECT" "status 400" "$(hb "$server" 15008 "$cert" "$key" "$root" GET "$server:8081")"
expect "authority is another IP" "status 400" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "$outsider:8081")"
expect "unparsable authority" "status 400" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "not-an-address")"
expect "upstream refuses" "status 503" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "$server:9999")"
expect "ztunnel's own port" "status 400" "$(hb "$server" 15008 "$cert" "$key" "$root" CONNECT "$server:15008")"

r=$(hb "$server" 15008 - - "$root" CONNECT "$server:8081")
case "$r" in status*) fail "no client certificate was accepted: $r" ;; *) ok "no client certificate -> refused ($r)" ;; esac

tmp=$(mktemp -d)
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key" 2>/dev/null
openssl req -x509 -new -key "$tmp/ca.key" -subj /O=evil -days 1 -out "$tmp/ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/leaf.key" 2>/dev/null
openssl req -new -key "$tmp/leaf.key" -subj /O=evil -out "$tmp/leaf.csr" 2>/dev/null
printf 'subjectAltName=URI:spiffe://cluster.local/ns/mesh/sa/client\nextendedKeyUsage=clientAuth\n' >"$tmp/ext"
openssl x509 -req -in "$tmp/leaf.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
	-days 1 -extfile "$tmp/ext" -out "$tmp/leaf.pem" 2>/dev/null
r=$(hb "$server" 15008 "$tmp/leaf.pem" "$tmp/leaf.key" "$root" CONNECT "$server:8081")
rm -rf "$tmp"
case "$r" in status*) fail "a certificate from another CA was accepted: $r" ;; *) ok "foreign CA -> refused ($r)" ;; esac

r=$(hb "$outsider" 15008 "$cert" "$key" "$root" CONNECT "$outsider:8081")
case "$r" in status*) fail "tunnel to a non-mesh pod answered: $r" ;; *) ok "non-mesh destination -> refused ($r)" ;; esac

log=/run/meshlite/$LAB_NAME/node-2/ztunnel.log
grep -q 'reason=IPMismatch' "$log" && ok "IPMismatch logged" || fail "no IPMismatch line in $log"
grep -q 'tls.*handshake failed' "$log" && ok "TLS failures logged" || fail "no TLS failure line in $log"
finish
