#!/bin/bash
# L4 authorization on ztunnel's HBONE inbound (mission-anchors §2.2, §2.7), against the
# independent HBONE client (hbone_client.py). Static mode, without the lab CLI: one ztunnel
# (fixtures/authz/ztunnel.json: an ALLOW for mesh/client, a DENY for port 9090, a dry-run
# DENY for */sa/other) and echo servers in a private network namespace, on 127.0.0.2.
#  - ALLOW by principal admits mesh/client (200, bytes echo: a raw non-HTTP TCP flow is
#    authorized, CVE-2019-12243) and refuses mesh/other with 401 and no upstream connection
#  - DENY overrides ALLOW (client to 9090 -> 401)
#  - metrics (response_flags="DENY", authz_denied_total, dry-run) and the deny log line
#  - /debug/authz explains a deny and an allow; bad parameters -> 400
. "$(dirname "$0")/lib.sh"
require_root
PY=/usr/bin/python3
$PY -c 'import h2' 2>/dev/null || die "python3-h2 is missing (scripts/install-deps.sh installs it)"
command -v openssl >/dev/null || die "openssl is missing (scripts/install-deps.sh installs it)"
here=$(cd "$(dirname "$0")" && pwd)
client_py=$here/hbone_client.py

ns=ml-authz-$$
dir=$(mktemp -d)
cleanup() {
	local rc=$?
	if [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; then
		[ -f "$dir/ztunnel.log" ] && { echo "--- ztunnel.log (tail)"; tail -n 30 "$dir/ztunnel.log"; }
	fi
	for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$dir"
	exit $rc
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

# A mesh CA and three identities.
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
openssl req -x509 -new -key "$dir/ca.key" -subj /O=cluster.local -days 1 \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
	-out "$dir/root-cert.pem" 2>/dev/null
leaf() { # name sa
	openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$1-key.pem" 2>/dev/null
	openssl req -new -key "$dir/$1-key.pem" -subj /O=cluster.local -out "$dir/$1.csr" 2>/dev/null
	printf 'subjectAltName=critical,URI:spiffe://cluster.local/ns/mesh/sa/%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' "$2" >"$dir/$1.ext"
	openssl x509 -req -in "$dir/$1.csr" -CA "$dir/root-cert.pem" -CAkey "$dir/ca.key" \
		-CAcreateserial -days 1 -extfile "$dir/$1.ext" -out "$dir/$1.pem" 2>/dev/null
}
leaf server server
leaf client client
leaf other other
sed "s|@DIR@|$dir|g" "$here/fixtures/authz/ztunnel.json" >"$dir/ztunnel.json"

# nsenter execs the server itself, so the PIDs the cleanup kills are the servers' own
nsenter --net=/run/netns/"$ns" -- "$TESTPEER" echo-server 8081 >/dev/null 2>&1 &
nsenter --net=/run/netns/"$ns" -- "$TESTPEER" echo-server 9090 >/dev/null 2>&1 &
# nsenter execs (no fork), so $! is ztunnel itself and gets the SIGTERM below
nsenter --net=/run/netns/"$ns" -- "$ZTUNNEL" --config "$dir/ztunnel.json" >"$dir/ztunnel.log" 2>&1 &
zt_pid=$!
ready() { in_ns curl -sf http://127.0.0.2:15021/healthz/ready >/dev/null; }
wait_for 10 ready || die "ztunnel did not become ready"

hb() { # cert-name port payload
	in_ns "$PY" "$client_py" 127.0.0.2 15008 "$dir/$1.pem" "$dir/$1-key.pem" "$dir/root-cert.pem" \
		CONNECT "127.0.0.2:$2" "${3:-}" 2>&1 || true
}
expect() { # name want got
	case "$3" in *"$2"*) ok "$1: $2" ;; *) fail "$1: want '$2', got '$3'" ;; esac
}
metric() { # name filters...
	local name=$1
	shift
	in_ns curl -sf http://127.0.0.2:15020/metrics | $PY -c '
import sys
name, filters = sys.argv[1], sys.argv[2:]
total = 0
for line in sys.stdin:
    if (line.startswith(name + "{") or line.startswith(name + " ")) and all(f in line for f in filters):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))' "$name" "$@"
}
debug() { in_ns curl -s -w ' http=%{http_code}' "http://127.0.0.2:15000/debug/authz?$1"; }

# A raw, non-HTTP payload through an authorized tunnel (CVE-2019-12243: L4 policy must not
# depend on the bytes looking like HTTP).
r=$(hb client 8081 $'\x01\x02raw-tcp-not-http')
expect "ALLOW by principal admits mesh/client" "status 200" "$r"
expect "a raw non-HTTP TCP flow is authorized" "raw-tcp-not-http" "$r"
expect "another identity is denied" "status 401" "$(hb other 8081 hello)"
expect "DENY overrides ALLOW" "status 401" "$(hb client 9090 hello)"
expect "the allowed identity still reaches 9090's neighbour" "status 200" "$(hb client 8081 again)"

c=$(metric istio_tcp_connections_opened_total 'response_flags="DENY"' 'reporter="destination"')
[ "$c" = 2 ] && ok "opened_total{response_flags=DENY} = 2" || fail "opened_total DENY = $c, want 2"
wait_for 5 test "$(metric istio_tcp_connections_closed_total 'response_flags="DENY"')" = 2 &&
	ok "closed_total{response_flags=DENY} = 2" || fail "closed_total DENY != 2"
c=$(metric meshlite_ztunnel_authz_denied_total 'policy="mesh/deny-9090"')
[ "$c" = 1 ] && ok "authz_denied_total{policy=mesh/deny-9090} = 1" || fail "deny-9090 count $c"
c=$(metric meshlite_ztunnel_authz_denied_total 'policy="-"')
[ "$c" = 1 ] && ok "authz_denied_total{policy=-} (none allowed) = 1" || fail "none-allowed count $c"
c=$(metric meshlite_ztunnel_authz_dry_run_total 'policy="mesh/audit-other"' 'verdict="deny"')
[ "$c" = 1 ] && ok "dry-run hit counted" || fail "dry-run count $c"

grep -q 'AuthorizationPolicyDenied: explicitly denied by: mesh/deny-9090' "$dir/ztunnel.log" &&
	ok "deny logged with the policy" || fail "no deny line naming mesh/deny-9090"
grep -q 'AuthorizationPolicyDenied: allow policies exist, but none allowed' "$dir/ztunnel.log" &&
	ok "none-allowed deny logged" || fail "no 'none allowed' line"

r=$(debug 'src=spiffe://cluster.local/ns/mesh/sa/other&dst=127.0.0.2&port=8081')
expect "/debug/authz explains a deny" '"verdict":"DENY"' "$r"
expect "/debug/authz names the reason" 'none allowed' "$r"
r=$(debug 'src=127.0.0.3&dst=127.0.0.2&port=8081')
expect "/debug/authz explains an allow (source by workload IP)" '"verdict":"ALLOW"' "$r"
expect "/debug/authz names the deciding policy" 'mesh/allow-client' "$r"
expect "/debug/authz without dst" 'http=400' "$(debug 'src=127.0.0.3&port=1')"
expect "/debug/authz unknown source IP" 'http=400' "$(debug 'src=10.9.9.9&dst=127.0.0.2&port=1')"
expect "/debug/authz bad port" 'http=400' "$(debug 'src=127.0.0.3&dst=127.0.0.2&port=99999')"

kill -TERM "$zt_pid"
rc=0
wait "$zt_pid" || rc=$?
[ $rc = 0 ] && ok "ztunnel exited cleanly (no leak, no sanitizer report)" || fail "ztunnel exit status $rc"
finish
