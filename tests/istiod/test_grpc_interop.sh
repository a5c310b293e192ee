#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# istiod-lite against an independent gRPC client (Debian's python3-grpcio with the build's
# *_pb2.py), on 127.0.0.1 with free ports, root namespace (loopback only):
#   - TLS: openssl s_client sees TLS 1.3, ALPN h2, a certificate for istiod.istio-system.svc;
#   - grpc_client.py: ADS resources, live updates, NACK, refusals, CreateCertificate, metrics;
#   - drain: SIGTERM ends an open stream with UNAVAILABLE, the daemon exits 0;
#   - restart: the root CA is loaded, not recreated;
#   - the daemon's log: connection/CA/NACK lines, and no sanitizer report.
# Environment (meson sets it): ISTIOD, PROTO_PY_DIR, FIXTURES.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
: "${ISTIOD:?path of the istiod-lite binary}"
: "${PROTO_PY_DIR:?directory of the generated *_pb2.py}"
FIXTURES=${FIXTURES:-$here/fixtures}
PY=/usr/bin/python3
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

die() {
	echo "FAIL: $*" >&2
	exit 1
}

# Never skip: these are in scripts/install-deps.sh.
[ -x "$PY" ] || die "$PY missing (install python3; see scripts/install-deps.sh)"
"$PY" -c 'import grpc' 2>/dev/null || die "python3-grpcio missing (scripts/install-deps.sh)"
"$PY" -c 'import google.protobuf' 2>/dev/null ||
	die "python3-protobuf missing (scripts/install-deps.sh)"
command -v openssl >/dev/null || die "openssl missing (scripts/install-deps.sh)"
[ -f "$PROTO_PY_DIR/discovery_pb2.py" ] ||
	die "no $PROTO_PY_DIR/discovery_pb2.py: protoc (protobuf-compiler) missing at configure time"
[ -x "$ISTIOD" ] || die "$ISTIOD is not executable"

tmp=$(mktemp -d /tmp/istiod-test.XXXXXX)
pid=
hold_pid=
cleanup() {
	# only what we started, by PID
	[ -n "$hold_pid" ] && kill "$hold_pid" 2>/dev/null || true
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
	[ -n "$pid" ] && wait "$pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# --help is true to the binary; bad usage is exit 2
"$ISTIOD" --help | grep -q -- "--plaintext-listen" || die "--help lacks --plaintext-listen"
rc=0
"$ISTIOD" --store x 2>/dev/null || rc=$?
[ "$rc" = 2 ] || die "missing --ca-dir/--tokens: exit $rc, want 2"

mkdir -p "$tmp/store" "$tmp/ca"
cp "$FIXTURES"/*.yaml "$tmp/store/"
tok1=$(openssl rand -hex 24)
tok2=$(openssl rand -hex 24)
printf '{"%s": "node-1", "%s": "node-2"}\n' "$tok1" "$tok2" >"$tmp/tokens.json"
chmod 600 "$tmp/tokens.json"

read -r p_tls p_plain p_metrics < <("$PY" -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
')
log=$tmp/istiod.log

start() {
	"$ISTIOD" --store "$tmp/store" --ca-dir "$tmp/ca" --tokens "$tmp/tokens.json" \
		--listen "127.0.0.1:$p_tls" --plaintext-listen "127.0.0.1:$p_plain" \
		--metrics "127.0.0.1:$p_metrics" "$@" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$p_metrics/healthz/ready', timeout=1)" 2>/dev/null; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || { cat "$log"; die "istiod-lite exited at start"; }
		sleep 0.1
	done
	cat "$log"
	die "istiod-lite not ready within 10 s"
}

stop() {
	kill -TERM "$pid"
	local rc=0
	wait "$pid" || rc=$?
	pid=
	[ "$rc" = 0 ] || { cat "$log"; die "istiod-lite exited with $rc after SIGTERM"; }
}

# A tokens file with a guessable token is refused at start, naming the entry, not the token.
printf '{"short": "node-1"}\n' >"$tmp/bad-tokens.json"
rc=0
"$ISTIOD" --store "$tmp/store" --ca-dir "$tmp/ca-unused" --tokens "$tmp/bad-tokens.json" \
	--listen 127.0.0.1:0 --metrics 127.0.0.1:0 >"$tmp/bad.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || { cat "$tmp/bad.log"; die "bad tokens file: exit $rc, want 1"; }
grep -q "token #1 has 5 bytes" "$tmp/bad.log" || { cat "$tmp/bad.log"; die "bad tokens file: no reason"; }
grep -qE "AddressSanitizer|LeakSanitizer|runtime error:" "$tmp/bad.log" &&
	{ cat "$tmp/bad.log"; die "sanitizer report on the failed start"; }
echo "ok   a tokens file with a 5-byte token is refused at start"

start
echo "istiod-lite ready (tls $p_tls, plaintext $p_plain, metrics $p_metrics)"
root=$tmp/ca/root-cert.pem
[ -s "$root" ] || die "no root-cert.pem in --ca-dir"
[ "$(stat -c %a "$tmp/ca/ca-key.pem")" = 600 ] || die "ca-key.pem is not 0600"

# TLS as ztunnel sees it: 1.3, ALPN h2, verified for istiod.istio-system.svc, no client cert.
out=$(openssl s_client -connect "127.0.0.1:$p_tls" -tls1_3 -alpn h2 -CAfile "$root" \
	-verify_hostname istiod.istio-system.svc -verify_return_error -servername istiod.istio-system.svc \
	</dev/null 2>&1) || { echo "$out"; die "openssl s_client failed"; }
grep -q "ALPN protocol: h2" <<<"$out" || { echo "$out"; die "ALPN h2 not negotiated"; }
grep -q "Verify return code: 0 (ok)" <<<"$out" || { echo "$out"; die "server certificate not verified"; }
grep -q "TLSv1.3" <<<"$out" || { echo "$out"; die "not TLS 1.3"; }
openssl s_client -connect "127.0.0.1:$p_tls" -tls1_3 -alpn h2 -CAfile "$root" -showcerts </dev/null 2>/dev/null |
	openssl x509 -noout -ext subjectAltName >"$tmp/san.txt"
grep -q "URI:spiffe://cluster.local/ns/istio-system/sa/istiod" "$tmp/san.txt" ||
	{ cat "$tmp/san.txt"; die "serving certificate lacks istiod's SPIFFE ID"; }
grep -q "DNS:istiod.istio-system.svc" "$tmp/san.txt" ||
	{ cat "$tmp/san.txt"; die "serving certificate lacks DNS istiod.istio-system.svc"; }
echo "ok   openssl s_client: TLS 1.3, ALPN h2, SANs $(tr -d '\n ' <"$tmp/san.txt" | sed 's/.*Name:\(critical\)\{0,1\}//')"

# A CSR as ztunnel makes it: P-256 key, a URI SAN only.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$tmp/key.pem" -out "$tmp/csr.pem" -subj "/O=meshlite-test" \
	-addext "subjectAltName=URI:spiffe://cluster.local/ns/demo/sa/sleep" 2>/dev/null ||
	die "openssl req failed"

export PROTO_PY_DIR ROOT_CERT=$root CSR=$tmp/csr.pem STORE=$tmp/store
export ISTIOD_TLS=127.0.0.1:$p_tls ISTIOD_PLAIN=127.0.0.1:$p_plain
export METRICS_URL=http://127.0.0.1:$p_metrics TOKEN_NODE1=$tok1 TOKEN_NODE2=$tok2
"$PY" "$here/grpc_client.py" || { echo "--- istiod-lite log"; cat "$log"; die "gRPC client checks failed"; }

# Drain: an open stream ends with UNAVAILABLE, the daemon exits 0.
"$PY" "$here/grpc_client.py" hold >"$tmp/hold.out" 2>&1 &
hold_pid=$!
for _ in $(seq 100); do
	grep -q streaming "$tmp/hold.out" && break
	kill -0 "$hold_pid" 2>/dev/null || break
	sleep 0.1
done
grep -q streaming "$tmp/hold.out" || { cat "$tmp/hold.out"; die "hold client did not start"; }
stop
rc=0
wait "$hold_pid" || rc=$?
hold_pid=
cat "$tmp/hold.out"
[ "$rc" = 0 ] || { cat "$log"; die "hold client failed"; }

# Restart with a 4 s serving certificate: the root CA is loaded, not replaced, and the
# serving certificate is renewed at half life (new serial, still verifies).
serving_serial() {
	openssl s_client -connect "127.0.0.1:$p_tls" -tls1_3 -alpn h2 -CAfile "$root" \
		-verify_hostname istiod.istio-system.svc -verify_return_error </dev/null 2>/dev/null |
		openssl x509 -noout -serial
}
sum=$(sha256sum <"$root")
start --serving-cert-ttl 4
grep -q "loaded the root CA" "$log" || die "restart did not load the existing root CA"
s1=$(serving_serial) || die "TLS after restart failed"
for _ in $(seq 50); do
	grep -q "serving certificate renewed" "$log" && break
	sleep 0.1
done
grep -q "serving certificate renewed" "$log" || { cat "$log"; die "serving certificate not renewed"; }
s2=$(serving_serial) || die "TLS after renewal failed"
[ -n "$s1" ] && [ "$s1" != "$s2" ] || die "serving certificate serial unchanged ($s1)"
stop
[ "$(sha256sum <"$root")" = "$sum" ] || die "root-cert.pem changed across a restart"
echo "ok   restart loads the existing root CA; serving certificate renewed at half life"

# The log: one line per connection open/close, the CA's decisions, the NACK, no sanitizer.
for want in "connection opened" "connection closed" "xDS stream opened" "xDS stream refused" \
	"call refused" "issued certificate" "certificate request refused" \
	"client rejected configuration (NACK)" "shutting down" "stopped"; do
	grep -qF "$want" "$log" || { cat "$log"; die "log lacks \"$want\""; }
done
if grep -qE "AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer" "$log"; then
	cat "$log"
	die "sanitizer report in the istiod-lite log"
fi
grep -q "$tok1" "$log" && die "a bearer token appears in the log"
echo "ok   log: connections, streams, CA decisions, NACK; no sanitizer report; no token"
echo "--- istiod-lite log"
cat "$log"
echo PASS
