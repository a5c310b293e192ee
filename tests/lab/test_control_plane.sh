#!/bin/bash
# Issue 3, lab part: `meshlite lab up --control-plane istiod` runs istiod-lite in the fabric
# and the ztunnels learn workloads over Delta ADS and get certificates from its CA.
#  - the namespace starts outside the mesh: both ztunnels become ready (first sync) and
#    node-1's /config_dump lists the server workload learned over xDS; traffic is direct
#  - `lab apply` of the namespace with istio.io/dataplane-mode=ambient: within 2 s the
#    client -> server connection goes through HBONE (access log with both identities, only
#    port 15008 on node-1's link) with certificates from istiod-lite's CA
#  - `lab apply` of the namespace without the label: direct again, no access-log line
#  - `lab apply` of a new Pod (+ its ServiceAccount): reachable through the mesh; applied
#    again: unchanged; with the pod label istio.io/dataplane-mode=none: out of the mesh;
#    `lab delete` of it: gone from the store, the ztunnels and the node
#  - refusals: an unsupported kind (nothing applied), deleting a pod that does not exist,
#    deleting a namespace that still runs pods
#  - killing istiod-lite (PID from lab status) does not break new connections between
#    known workloads; started again with the same command line, the ztunnels resync and a
#    pod applied afterwards reaches them
#  - lab down removes istiod-lite with everything else (a second, short lab checks that a
#    running one is stopped)
. "$(dirname "$0")/lib.sh"
require_root
: "${ISTIOD:?ISTIOD must point to the istiod-lite binary (set by meson)}"
fixtures=$(cd "$(dirname "$0")" && pwd)/fixtures/control-plane

work=$(mktemp -d)
cleanup() {
	local rc=$?
	rm -rf "$work"
	(exit $rc)
	on_exit
}
for f in pods server2 server2-none; do
	sed "s|\${TESTPEER}|$TESTPEER|g" "$fixtures/$f.yaml" >"$work/$f.yaml"
done
mkdir "$work/up" && mv "$work/pods.yaml" "$work/up/"
# A name of this run's own: lab runs of other build trees may be going on at the same time.
lab_up "t-cp-$$" --nodes 2 --control-plane istiod "$work/up"
trap cleanup EXIT # after lab_up's own

state=/run/meshlite/$LAB_NAME
n1=$(node_field node-1 netns)
n2=$(node_field node-2 netns)
client_ip=$(pod_ip shop/client)
server=$(pod_ip shop/server)
log1=$state/node-1/ztunnel.log
log2=$state/node-2/ztunnel.log
client_id=spiffe://cluster.local/ns/shop/sa/client
server_id=spiffe://cluster.local/ns/shop/sa/server

# config_dump NODE PYTHON-EXPR: evaluate EXPR with d = the node's /config_dump
config_dump() {
	local ns addr
	ns=$(node_field "$1" netns)
	addr=$(node_field "$1" ztunnel.admin)
	ip netns exec "$ns" curl -sf "http://$addr/config_dump" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(eval(sys.argv[1]))' "$2"
}
workload_protocol() { # NODE NAME -> HBONE | TCP | none
	config_dump "$1" "next((w['protocol'] for w in d['workloads'] if w['name'] == '$2'), 'none')"
}
cert_state() { # NODE IDENTITY -> Available | ... | none
	config_dump "$1" "next((c['state'] + '/' + c['source'] for c in d['certificates'] if c['identity'] == '$2'), 'none')"
}
hbone_lines() { # LOG DST-IDENTITY: access-log lines over HBONE from the client to it
	grep -c "access.*src.identity=$client_id .*dst.identity=$2 protocol=HBONE" "$1" || true
}
access_lines() { grep -c 'access' "$1" || true; }
echo_ok() { lab_exec shop/client -- "$TESTPEER" echo-check "$1" "${2:-3}" 1 2000 >/dev/null 2>&1; }
apply() { "$MESHLITE" lab apply --name "$LAB_NAME" -f "$@"; }
delete() { "$MESHLITE" lab delete --name "$LAB_NAME" -f "$@"; }
# link_tcp CMD...: run CMD while capturing node-1's uplink and print "SRC DST" per TCP
# packet, without the ztunnel's own xDS/CA connection to istiod-lite (port 15012)
link_tcp() {
	local pcap tpid
	pcap=$(mktemp --suffix=.pcap)
	ip netns exec "$n1" tcpdump --immediate-mode -i eth0 -U -w "$pcap" 'tcp and not port 15012' 2>/dev/null &
	tpid=$!
	sleep 1
	"$@" || fail "traffic under capture failed: $*"
	sleep 0.5
	kill "$tpid"
	wait "$tpid" 2>/dev/null || true
	tcpdump -nn -r "$pcap" 2>/dev/null | awk '{print $3" "$5}'
	rm -f "$pcap"
}

# ---- the control plane, as lab status shows it
cp_json=$(status_json | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["control_plane"]))')
echo "$cp_json" | python3 -c '
import json, os, sys
cp = json.load(sys.stdin)
assert cp["mode"] == "istiod", cp
assert isinstance(cp["pid"], int) and cp["pid"] > 0 and cp["alive"], cp
assert cp["xds"] == "10.200.0.254:15012", cp
assert cp["metrics"] == "10.200.0.254:15014", cp
assert os.path.isfile(cp["log"]), cp' && ok "status --json control_plane: $cp_json" ||
	fail "status --json control_plane: $cp_json"
istiod_pid=$(echo "$cp_json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
istiod_log=$(echo "$cp_json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["log"])')
[ "$(readlink /proc/"$istiod_pid"/exe)" = "$(readlink -f "$ISTIOD")" ] && ok "pid $istiod_pid is istiod-lite" ||
	fail "pid $istiod_pid is $(readlink /proc/"$istiod_pid"/exe), not $ISTIOD"
ip netns exec "$n1" curl -sf http://10.200.0.254:15014/healthz/ready >/dev/null &&
	ok "istiod-lite ready, reached from node-1" || fail "istiod-lite /healthz/ready not reachable from node-1"

# tokens: random, >= 32 hex chars, 0600, one per node, the same in istiod-lite's map
for n in node-1 node-2; do
	tok=$state/$n/token
	if [ "$(stat -c %a "$tok")" = 600 ] && grep -qE '^[0-9a-f]{32,}$' "$tok" &&
		python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); assert m[open(sys.argv[2]).read()] == sys.argv[3]' \
			"$state/istiod/tokens.json" "$tok" "$n"; then
		ok "$n token: 0600, $(wc -c <"$tok") hex digits, in tokens.json"
	else
		fail "$n token $tok is not a 0600 hex token known to istiod-lite"
	fi
done
[ "$(stat -c %a "$state/istiod/tokens.json")" = 600 ] && ok "tokens.json is 0600" || fail "tokens.json mode $(stat -c %a "$state/istiod/tokens.json")"
[ "$(sort -u "$state"/node-*/token | wc -l)" -eq 2 ] && ok "tokens differ per node" || fail "nodes share a token"

# the store holds what the API server would
python3 - "$state/store" "$server" <<'PY' && ok "store: pods placed, Running, Ready, with podIP and uid" || fail "store content"
import json, os, sys
store, server_ip = sys.argv[1], sys.argv[2]
files = sorted(os.listdir(store))
for f in ("namespace_shop.json", "serviceaccount_shop_client.json", "serviceaccount_shop_server.json",
          "pod_shop_client.json", "pod_shop_server.json"):
    assert f in files, (f, files)
p = json.load(open(os.path.join(store, "pod_shop_server.json")))
assert p["spec"]["nodeName"] == "node-2", p["spec"]
assert p["status"]["podIP"] == server_ip and p["status"]["podIPs"] == [{"ip": server_ip}], p["status"]
assert p["status"]["phase"] == "Running"
assert {"type": "Ready", "status": "True"}.items() <= next(c for c in p["status"]["conditions"] if c["type"] == "Ready").items()
assert p["metadata"]["uid"] and p["metadata"]["namespace"] == "shop"
PY

# ---- outside the mesh: ready after the first sync, workloads from xDS, traffic direct
for n in node-1 node-2; do
	ns=$(node_field $n netns)
	ip netns exec "$ns" curl -sf "http://$(node_field $n ztunnel.readiness)/healthz/ready" >/dev/null &&
		ok "$n ztunnel ready" || fail "$n ztunnel not ready"
	[ "$(config_dump $n "d['xds']['synced'] and d['xds']['connected']")" = True ] &&
		ok "$n synced with istiod-lite" || fail "$n xDS: $(config_dump $n "d['xds']")"
	python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); assert "workloads" not in c and "certificates" not in c and c["xds"]["address"] == "10.200.0.254:15012"' \
		"$state/$n/ztunnel.json" && ok "$n config has xds and no static workloads" || fail "$n config: $(cat "$state/$n/ztunnel.json")"
done
[ "$(workload_protocol node-1 server)" = TCP ] && ok "node-1 learned the server workload over xDS (TCP)" ||
	fail "node-1 server workload: $(workload_protocol node-1 server)"
wait_for 10 echo_ok "$server:8081" || die "server pod never answered"
[ "$(access_lines "$log1")" -eq 0 ] && ok "not enrolled: no access-log line (direct)" ||
	fail "not enrolled, but node-1 logged: $(grep access "$log1" | tail -1)"

# ---- enroll the namespace: HBONE within 2 s
t0=$EPOCHREALTIME
apply "$fixtures/namespace-ambient.yaml" || fail "lab apply (ambient namespace) failed"
hbone() { echo_ok "$server:8081" 1 && [ "$(hbone_lines "$log1" "$server_id")" -gt 0 ]; }
until hbone; do
	if python3 -c 'import sys; sys.exit(float(sys.argv[1]) - float(sys.argv[2]) < 2)' "$EPOCHREALTIME" "$t0"; then
		break
	fi
	sleep 0.05
done
dt=$(python3 -c 'import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))' "$EPOCHREALTIME" "$t0")
if [ "$(hbone_lines "$log1" "$server_id")" -gt 0 ] && python3 -c 'import sys; sys.exit(float(sys.argv[1]) >= 2)' "$dt"; then
	ok "client -> server over HBONE with both identities ${dt}s after lab apply"
else
	fail "no HBONE access line within 2 s (${dt}s): $(tail -2 "$log1")"
fi
for pair in "node-1 $client_id" "node-2 $server_id"; do
	set -- $pair
	st=$(cert_state "$1" "$2") || true
	[ "$st" = Available/ca ] && ok "$1 certificate for $2 from the CA: $st" || fail "$1 certificate for $2: $st"
done
issued=$(ip netns exec "$n1" curl -sf http://10.200.0.254:15014/metrics |
	awk '$1 ~ /^citadel_server_success_cert_issuance_count/ {s += $2} END {print s + 0}') || true
[ "$issued" -ge 2 ] && ok "istiod-lite issued $issued certificates" || fail "istiod-lite issued $issued certificates"
pkts=$(link_tcp echo_ok "$server:8081" 5) || true
total=$(echo "$pkts" | grep -c . || true)
plain=$(echo "$pkts" | grep -c -v '\.15008[: ]' || true)
[ "$total" -gt 0 ] && [ "$plain" -eq 0 ] && ok "node-1 link: all $total pod packets are HBONE (15008)" ||
	fail "node-1 link while enrolled: $plain of $total packets not on 15008"

# ---- out of the mesh again: direct, no access-log line
apply "$fixtures/namespace-plain.yaml" || fail "lab apply (plain namespace) failed"
before1=$(access_lines "$log1") before2=$(access_lines "$log2")
echo_ok "$server:8081" 5 && ok "not enrolled: the connection still works" || fail "not enrolled: connection failed"
pkts=$(link_tcp echo_ok "$server:8081" 3) || true
sleep 0.3
[ "$(access_lines "$log1")" -eq "$before1" ] && [ "$(access_lines "$log2")" -eq "$before2" ] &&
	ok "no new access-log line on either node" || fail "access log grew: $(tail -1 "$log1")"
direct=$(echo "$pkts" | grep -c "\.8081[: ]" || true)
hb=$(echo "$pkts" | grep -c '\.15008[: ]' || true)
[ "$direct" -gt 0 ] && [ "$hb" -eq 0 ] && ok "node-1 link carries the traffic directly to 8081 ($direct packets)" ||
	fail "node-1 link while not enrolled: $direct packets to 8081, $hb on 15008"
[ "$(workload_protocol node-1 client)" = TCP ] && ok "node-1 has the client as TCP again" ||
	fail "node-1 client workload: $(workload_protocol node-1 client)"

# ---- refusals
if out=$(apply "$fixtures/deployment.yaml" 2>&1); then
	fail "applying a Deployment succeeded: $out"
else
	case "$out" in
	*"kind Deployment"*"nothing was changed"*) ok "unsupported kind refused: nothing applied" ;;
	*) fail "unsupported kind: $out" ;;
	esac
fi
[ ! -e "$state/store/serviceaccount_shop_never-written.json" ] && ok "no object of the refused file was written" ||
	fail "a refused file's ServiceAccount reached the store"
if out=$(delete "$work/server2.yaml" 2>&1); then
	fail "deleting a pod that does not exist succeeded: $out"
else
	case "$out" in *"shop/server2 not found"*) ok "delete of a missing pod: $(echo "$out" | head -1)" ;; *) fail "delete missing pod: $out" ;; esac
fi
if out=$(delete "$fixtures/namespace-plain.yaml" 2>&1); then
	fail "deleting a namespace with running pods succeeded: $out"
else
	case "$out" in *"still has pods"*) ok "namespace with pods not deleted" ;; *) fail "delete namespace: $out" ;; esac
fi
[ -e "$state/store/namespace_shop.json" ] || fail "the namespace left the store"

# ---- a new pod, applied into the mesh
apply "$fixtures/namespace-ambient.yaml" >/dev/null || fail "lab apply (ambient namespace, again) failed"
apply "$work/server2.yaml" || fail "lab apply (new pod) failed"
server2=$(pod_ip shop/server2) || die "server2 is not in lab status"
[ "$(workload_protocol node-1 server2)" = HBONE ] && ok "node-1 learned the new pod as HBONE" ||
	fail "node-1 server2 workload: $(workload_protocol node-1 server2)"
[ "$(cert_state node-2 spiffe://cluster.local/ns/shop/sa/server2)" = Available/ca ] &&
	ok "node-2 holds a CA certificate for the new pod's new service account" ||
	fail "node-2 server2 certificate: $(cert_state node-2 spiffe://cluster.local/ns/shop/sa/server2)"
wait_for 5 echo_ok "$server2:8082" && ok "new pod reachable" || fail "new pod $server2:8082 not reachable"
[ "$(hbone_lines "$log1" spiffe://cluster.local/ns/shop/sa/server2)" -gt 0 ] &&
	ok "client -> new pod went through HBONE" || fail "no HBONE line to the new pod: $(tail -1 "$log1")"

# ---- applying it again: unchanged; with the pod's own opt-out label: out of the mesh
out=$(apply "$work/server2.yaml" 2>&1) || fail "re-applying server2 failed: $out"
case "$out" in
*warning*) fail "re-applying an unchanged pod warned: $out" ;;
*"Pod shop/server2 unchanged"*) ok "re-applying an unchanged pod: unchanged" ;;
*) fail "re-applying server2: $out" ;;
esac
out=$(apply "$work/server2-none.yaml" 2>&1) || fail "applying server2's opt-out label failed: $out"
case "$out" in
*"Pod shop/server2 configured"*"Pod shop/server2 left the mesh"* | *"Pod shop/server2 left the mesh"*"Pod shop/server2 configured"*)
	ok "pod label istio.io/dataplane-mode=none: server2 left the mesh" ;;
*) fail "opt-out label: $out" ;;
esac
[ "$(workload_protocol node-1 server2)" = TCP ] && ok "node-1 has server2 as TCP" ||
	fail "node-1 server2 workload: $(workload_protocol node-1 server2)"
n0=$(hbone_lines "$log1" spiffe://cluster.local/ns/shop/sa/server2)
echo_ok "$server2:8082" && ok "opted-out pod still reachable" || fail "opted-out server2 not reachable"
sleep 0.3
[ "$(hbone_lines "$log1" spiffe://cluster.local/ns/shop/sa/server2)" -eq "$n0" ] &&
	ok "no HBONE to the opted-out pod" || fail "the client still reached server2 over HBONE"

# ---- deleting it
delete "$work/server2.yaml" || fail "lab delete (new pod) failed"
status_json | python3 -c 'import json, sys; assert all(p["name"] != "server2" for p in json.load(sys.stdin)["pods"])' &&
	ok "server2 gone from lab status" || fail "server2 still in lab status"
! ip netns list | grep -q "ml-$LAB_NAME-p-shop-server2" && ok "server2's network namespace removed" || fail "server2's netns left"
[ ! -e "$state/store/pod_shop_server2.json" ] && [ ! -e "$state/store/serviceaccount_shop_server2.json" ] &&
	ok "server2 and its service account left the store" || fail "server2 objects still in the store"
[ "$(workload_protocol node-1 server2)" = none ] && ok "node-1 forgot server2" ||
	fail "node-1 still lists server2: $(workload_protocol node-1 server2)"

# ---- the control plane goes away: known workloads keep talking over HBONE
mapfile -d '' istiod_argv </proc/"$istiod_pid"/cmdline
fabric=$(status_json | python3 -c 'import json, sys; print(json.load(sys.stdin)["nodes"][0]["netns"].rsplit("-node-", 1)[0] + "-fabric")')
kill -KILL "$istiod_pid"
wait_for 5 sh -c "! kill -0 $istiod_pid 2>/dev/null || grep -q '^Z' /proc/$istiod_pid/stat 2>/dev/null" || fail "istiod-lite survived SIGKILL"
[ "$(status_json | python3 -c 'import json, sys; print(json.load(sys.stdin)["control_plane"]["alive"])')" = False ] &&
	ok "lab status shows istiod-lite stopped" || fail "lab status still shows istiod-lite alive"
wait_for 10 grep -q 'control plane connection failed' "$log1" || fail "node-1 did not notice istiod-lite was gone"
n0=$(hbone_lines "$log1" "$server_id")
echo_ok "$server:8081" 20 && ok "20 new connections after istiod-lite died" || fail "connections failed without istiod-lite"
sleep 0.3
n1_=$(hbone_lines "$log1" "$server_id")
[ $((n1_ - n0)) -ge 20 ] && ok "they went through HBONE ($((n1_ - n0)) access lines)" ||
	fail "only $((n1_ - n0)) HBONE access lines for 20 connections"

# ---- istiod-lite back (same command line, same CA and tokens): the ztunnels resync
syncs1=$(grep -c 'control plane connection restored' "$log1" || true)
nsenter --net="/run/netns/$fabric" "${istiod_argv[@]}" >>"$istiod_log" 2>&1 &
istiod2=$!
wait_for 10 ip netns exec "$n1" curl -sf http://10.200.0.254:15014/healthz/ready -o /dev/null &&
	ok "istiod-lite restarted ($istiod2)" || fail "restarted istiod-lite not ready"
wait_for 15 sh -c "[ \$(grep -c 'control plane connection restored' '$log1') -gt $syncs1 ]" &&
	ok "node-1 resynced with the restarted istiod-lite" || fail "node-1 did not resync"
# a change made after the restart reaches the ztunnels
python3 - "$work/server2.yaml" "$work/server3.yaml" <<'PY'
import sys
# server3: the pod of server2.yaml under another name, with server2's service account kept
docs = open(sys.argv[1]).read().split("\n---\n")
pod = [d for d in docs if "kind: Pod" in d][0]
pod = pod.replace("name: server2\n", "name: server3\n", 1).replace("app: server2", "app: server3").replace("8082", "8083")
sa = [d for d in docs if "kind: ServiceAccount" in d][0]
open(sys.argv[2], "w").write(sa + "\n---\n" + pod + "\n")
PY
apply "$work/server3.yaml" >/dev/null || fail "lab apply after the restart failed"
wait_for 10 sh -c "[ \"\$(ip netns exec $n1 curl -sf http://$(node_field node-1 ztunnel.admin)/config_dump | python3 -c 'import json,sys; print(next((w[\"protocol\"] for w in json.load(sys.stdin)[\"workloads\"] if w[\"name\"] == \"server3\"), \"none\"))')\" = HBONE ]" &&
	ok "a pod applied after the restart reached node-1 over xDS" || fail "node-1 did not learn server3 from the restarted istiod-lite"
echo_ok "$(pod_ip shop/server3):8083" 3 && ok "client -> server3 through the mesh" || fail "client -> server3 failed"
kill "$istiod2" 2>/dev/null || fail "restarted istiod-lite died: $(tail -n 3 "$istiod_log")"
wait "$istiod2" 2>/dev/null || true

# ---- no sanitizer report in any daemon's log
for f in "$istiod_log" "$log1" "$log2"; do
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$f"; then
		fail "sanitizer report in $f"
	fi
done

# ---- lab down removes istiod-lite and everything else
pids=$(status_json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join([str(n["ztunnel"]["pid"]) for n in s["nodes"]] +
               [str(c["pid"]) for p in s["pods"] for c in p["containers"]]))')
lab=$LAB_NAME
"$MESHLITE" lab down --name "$lab" || fail "lab down failed"
LAB_NAME=""
for pid in $pids $istiod_pid; do
	if [ -d /proc/$pid ] && [ "$(awk '{print $3}' /proc/$pid/stat)" != Z ]; then
		fail "process $pid survived down"
	fi
done
ip netns list | grep -q "^ml-$lab-" && fail "namespaces left: $(ip netns list | grep "ml-$lab-")" || ok "no namespace left"
[ ! -e "/run/meshlite/$lab" ] && ok "state dir removed" || fail "/run/meshlite/$lab left behind"

# ---- and a running istiod-lite goes with lab down (the one above was killed on purpose)
lab_up "t-cp2-$$" --nodes 2 --control-plane istiod "$work/up" >/dev/null
trap cleanup EXIT
pid=$(status_json | python3 -c 'import json, sys; print(json.load(sys.stdin)["control_plane"]["pid"])')
kill -0 "$pid" || fail "second lab: istiod-lite $pid is not running"
"$MESHLITE" lab down --name "$LAB_NAME" >/dev/null || fail "second lab: lab down failed"
LAB_NAME=""
if [ -d /proc/$pid ] && [ "$(awk '{print $3}' /proc/$pid/stat)" != Z ]; then
	fail "lab down left istiod-lite $pid running"
else
	ok "lab down stopped a running istiod-lite ($pid)"
fi
finish
