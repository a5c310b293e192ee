#!/bin/bash
# Issue 5 with the real lab and control plane: AuthorizationPolicies applied with
# `meshlite lab apply` reach the destination's ztunnel through istiod-lite (Delta ADS) and
# decide real connections between pods on two nodes (clients on node-1, the server on
# node-2); `meshlite authz explain` says why, with exit status 0 (allow) / 1 (deny).
#  1. ALLOW by namespace (source.namespaces): mesh/client is admitted, other/client refused
#  2. ALLOW by port (to.operation.ports): port 8081 admitted, 9090 refused
#  3. DENY overriding ALLOW: other/client refused on 8081 although the port ALLOW admits it
#  4. explain names the deciding policy of a deny and of an allow; --json, --admin from the
#     node's namespace, and usage errors (exit 2)
. "$(dirname "$0")/lib.sh"
require_root
: "${ISTIOD:?ISTIOD must point to the istiod-lite binary (set by meson)}"
fixtures=$(cd "$(dirname "$0")" && pwd)/fixtures/authz-lab
work=$(mktemp -d)
sed "s|\${TESTPEER}|$TESTPEER|g" "$fixtures/pods.yaml" >"$work/pods.yaml"
lab_up "t-azlab-$$" --nodes 2 --control-plane istiod "$work" >/dev/null
rm -rf "$work"

server=$(pod_ip mesh/server)
probe() { # CLIENT PORT -> data | reset | refused | eof
	lab_exec "$1" -- "$TESTPEER" probe "$server:$2" 2>/dev/null || true
}
probe_is() { [ "$(probe "$1" "$2")" = "$3" ]; }
# want CLIENT PORT RESULT WHY: a policy just applied reaches node-2 within a second or so,
# so retry for a few seconds before calling it a failure
want() {
	local got
	if wait_for 5 probe_is "$1" "$2" "$3"; then
		ok "$1 -> mesh/server:$2: $3 ($4)"
	else
		got=$(probe "$1" "$2")
		fail "$1 -> mesh/server:$2: want $3, got $got ($4)"
	fi
}
apply() { "$MESHLITE" lab apply --name "$LAB_NAME" -f "$fixtures/$1" >/dev/null || die "lab apply $1 failed"; }
delete() { "$MESHLITE" lab delete --name "$LAB_NAME" -f "$fixtures/$1" >/dev/null || die "lab delete $1 failed"; }
# explain ARGS... -> sets $out (stdout+stderr) and $rc
explain() {
	rc=0
	out=$("$MESHLITE" authz explain --lab "$LAB_NAME" "$@" 2>&1) || rc=$?
}
expect_explain() { # NAME WANT_RC SUBSTRING...
	local name=$1 want=$2 s
	shift 2
	[ "$rc" = "$want" ] || { fail "$name: exit $rc, want $want: $out"; return; }
	for s in "$@"; do
		case "$out" in *"$s"*) ;; *) fail "$name: no '$s' in: $out"; return ;; esac
	done
	ok "$name (exit $rc)"
}

wait_for 10 probe_is mesh/client 8081 data || die "server not reachable before any policy"
ok "no policy: mesh/client reaches mesh/server"

# 1. ALLOW by namespace
apply allow-ns.yaml
want other/client 8081 reset "ALLOW from namespace mesh refuses namespace other"
want mesh/client 8081 data "ALLOW from namespace mesh admits mesh/client"
want mesh/client 9090 data "an ALLOW by namespace covers every port"
explain --src other/client --dst mesh/server --port 8081
expect_explain "explain: namespace deny" 1 "DENY  other/client -> mesh/server:8081" \
	"allow policies exist, but none allowed" "mesh/allow-from-mesh" \
	"namespaces [exact mesh] did not match other" "answered by  ztunnel on node-2"
explain --src mesh/client --dst mesh/server --port 8081
expect_explain "explain: namespace allow" 0 "ALLOW  mesh/client -> mesh/server:8081" \
	"allowed by: mesh/allow-from-mesh (rule 0)" "MATCHED rule 0  <- decided"

# 2. ALLOW by port (the namespace ALLOW removed)
delete allow-ns.yaml
apply allow-port.yaml
want mesh/client 9090 reset "ALLOW to port 8081 refuses port 9090"
want mesh/client 8081 data "ALLOW to port 8081 admits port 8081"
want other/client 8081 data "ALLOW to port 8081 admits any namespace"
explain --src mesh/client --dst mesh/server --port 9090
expect_explain "explain: port deny" 1 "DENY  mesh/client -> mesh/server:9090" \
	"mesh/allow-port-8081" "destination_ports [8081] did not match 9090"

# 3. DENY overrides ALLOW
apply deny.yaml
want other/client 8081 reset "DENY from namespace other overrides the port ALLOW"
want mesh/client 8081 data "the DENY leaves namespace mesh alone"
explain --src other/client --dst mesh/server --port 8081
expect_explain "explain: DENY overrides ALLOW" 1 "DENY  other/client -> mesh/server:8081" \
	"explicitly denied by: mesh/deny-other (rule 0)" "MATCHED rule 0  <- decided" \
	"matched rule 0, but DENY mesh/deny-other decided first"
grep -q 'explicitly denied by: mesh/deny-other' "/run/meshlite/$LAB_NAME/node-2/ztunnel.log" &&
	ok "node-2 logged the deny with the same words" || fail "no deny line naming mesh/deny-other"
# the same questions in the other forms of SRC and DST
client_ip=$(pod_ip mesh/client)
explain --src ns/mesh/sa/client --dst "$server" --port 8081
expect_explain "explain: identity and IP" 0 "ALLOW  spiffe://cluster.local/ns/mesh/sa/client -> mesh/server:8081" \
	"allowed by: mesh/allow-port-8081" "(any address: the question named an identity)"
explain --src spiffe://cluster.local/ns/other/sa/client --dst mesh/server --port 8081 --json
expect_explain "explain --json" 1 '"verdict": "DENY"' '"node": "node-2"' '"pod": "mesh/server"'
printf '%s' "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["explain"]["policy"] == "mesh/deny-other"' &&
	ok "--json is one JSON document with the endpoint's answer" || fail "--json output: $out"
n2=$(node_field node-2 netns)
admin=$(node_field node-2 ztunnel.admin)
rc=0
out=$(ip netns exec "$n2" "$MESHLITE" authz explain --admin "$admin" --src "$client_ip" --dst "$server" --port 9090 2>&1) || rc=$?
expect_explain "explain --admin from the node's namespace (no lab needed)" 1 \
	"DENY  spiffe://cluster.local/ns/mesh/sa/client -> $server:9090" "answered by  ztunnel (admin $admin)"
explain --node node-1 --src mesh/client --dst mesh/server --port 8081
expect_explain "explain asked of the wrong node warns" 0 "only node-2's ztunnel enforces"

# usage and errors: exit 2
explain --src mesh/client --dst mesh/server
expect_explain "missing --port" 2 "--port are required"
explain --src mesh/client --dst mesh/nope --port 1
expect_explain "unknown pod" 2 "has no pod mesh/nope"
explain --src mesh/client --dst 10.9.9.9 --port 1
expect_explain "an address outside the lab needs --node/--admin" 2 "--node NODE or --admin"
explain --node node-2 --src 10.9.9.9 --dst mesh/server --port 1
expect_explain "ztunnel refuses an unknown source" 2 "refused the question (HTTP 400)"
explain --node node-9 --src mesh/client --dst mesh/server --port 1
expect_explain "unknown node" 2 "has no node node-9"
finish
