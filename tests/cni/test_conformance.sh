#!/bin/bash
# CNI conformance of meshlite-cni, driven exactly like a container runtime drives a chained
# plugin list: Debian's ptp or bridge (+ host-local IPAM) first, then meshlite-cni with the
# first plugin's result as prevResult, for ADD / CHECK / DEL / VERSION, from inside a "node"
# network namespace, against real pod network namespaces. Needs root; fails without it.
#
# Everything it creates carries $$ in its name (namespaces, bridge, BPF pin directory, temp
# directory) and is removed on exit, also on failure; the end of the test checks that
# nothing is left and that no iptables/nftables rule appeared.
set -euo pipefail

: "${MESHLITE_CNI:?MESHLITE_CNI must point to the meshlite-cni binary (set by meson)}"
CNI_BIN=${CNI_BIN:-/usr/lib/cni}

FAILS=0
# also recorded in a file: some checks run inside $(...), whose FAILS increments are lost
fail() {
	echo "FAIL: $*" >&2
	FAILS=$((FAILS + 1))
	[ -z "${TMP-}" ] || echo "$*" >>"$TMP/failed"
}
ok() { echo "ok: $*"; }
die() { echo "FATAL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "the CNI conformance test needs root (network namespaces, tc, BPF)"
for cmd in ip tc bpftool nsenter python3; do
	command -v "$cmd" >/dev/null || die "missing command '$cmd' (run scripts/install-deps.sh)"
done
for p in ptp bridge host-local; do
	[ -x "$CNI_BIN/$p" ] || die "missing $CNI_BIN/$p (apt-get install containernetworking-plugins)"
done
mountpoint -q /sys/fs/bpf || die "the BPF filesystem is not mounted at /sys/fs/bpf"

ID=$$
NODE=mlcni-node-$ID
BRIDGE=mlcnibr$ID
# "-cni-": tests/unit/ebpf uses meshlite-test-<pid>, which another PID namespace may share
BPF_DIR=/sys/fs/bpf/meshlite-test-cni-$ID
TMP=$(mktemp -d /tmp/mlcni-test.XXXXXX)
STATE=$TMP/state
IPAM=$TMP/ipam
PODS=()
LISTENER=""

cleanup() {
	local rc=$?
	[ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null && wait "$LISTENER" 2>/dev/null
	if [ $rc -ne 0 ] || [ "$FAILS" -ne 0 ] || [ -s "$TMP/failed" ]; then
		[ -f "$STATE.log" ] && { echo "--- meshlite-cni log (tail)"; tail -n 40 "$STATE.log"; }
	fi
	for p in "${PODS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
	ip netns del "$NODE" 2>/dev/null || true
	rm -rf "$BPF_DIR" "$TMP"
	exit $rc
}
trap cleanup EXIT

# Rules before, in the root namespace (the node namespace starts empty, checked at the end).
rules_snapshot() {
	if command -v nft >/dev/null; then nft list ruleset 2>&1; fi
	# (the "# Generated ... on <date>" comments differ between any two runs)
	if command -v iptables-save >/dev/null; then iptables-save 2>&1 | { grep -v '^#' || true; }; fi
	if command -v ip6tables-save >/dev/null; then ip6tables-save 2>&1 | { grep -v '^#' || true; }; fi
}
RULES_BEFORE=$(rules_snapshot)

ip netns add "$NODE"
ip -n "$NODE" link set lo up

# ---- the runtime ----

# Exit status and stdout of the last plugin run.
RC=0
OUT=""
# run_plugin BINARY COMMAND CONTAINER_ID NETNS_PATH CONFIG [CNI_ARGS]
# Runs like a runtime does: in the node's network namespace (setns only: the BPF filesystem
# stays the node's), with only the CNI_* environment, the config on stdin.
run_plugin() {
	local bin=$1 cmd=$2 cid=$3 netns=$4 conf=$5 args=${6-}
	local env=(CNI_COMMAND="$cmd" CNI_CONTAINERID="$cid" CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN")
	[ -n "$netns" ] && env+=(CNI_NETNS="$netns")
	[ -n "$args" ] && env+=(CNI_ARGS="$args")
	set +e
	OUT=$(printf '%s' "$conf" | nsenter --net="/run/netns/$NODE" env -i PATH="$PATH" \
		ASAN_OPTIONS="${ASAN_OPTIONS-}" UBSAN_OPTIONS="${UBSAN_OPTIONS-}" "${env[@]}" "$bin")
	RC=$?
	set -e
}

k8s_args() { echo "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=$1;K8S_POD_INFRA_CONTAINER_ID=$2;K8S_POD_UID=uid-$2"; }

# mesh_conf VERSION PREV_RESULT_JSON: meshlite-cni's config as the runtime builds it.
mesh_conf() {
	python3 - "$1" "$2" "$STATE" "$BPF_DIR" <<'EOF'
import json, sys
v, prev, state, bpf = sys.argv[1:5]
c = {"cniVersion": v, "name": "meshnet", "type": "meshlite-cni", "stateDir": state,
     "bpfDir": bpf, "logFile": state + ".log", "logLevel": "debug"}
if prev:
    c["prevResult"] = json.loads(prev)
print(json.dumps(c))
EOF
}

canon() { python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))'; }

# json_get JSON PYTHON_EXPR (on "d")
json_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

# The host-side veth of a result: no sandbox, and not the bridge.
host_veth() {
	python3 - "$1" "$BRIDGE" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
print([i["name"] for i in r["interfaces"] if not i.get("sandbox") and i["name"] != sys.argv[2]][0])
EOF
}

pod_ips() { python3 -c 'import json,sys; print(" ".join(i["address"].split("/")[0] for i in json.loads(sys.argv[1])["ips"]))' "$1"; }

# The pinned map must stay the one the first ADD created: the plugin never replaces it, so
# a new id means something else removed our pin (which would fake "entry gone" results).
MAP_ID=""
map_id() { bpftool -j map show pinned "$BPF_DIR/ml_enroll_v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }

# Enrollment map entries as "IP STATE" lines, from the raw bytes bpftool prints.
map_entries() {
	local id
	if [ ! -e "$BPF_DIR/ml_enroll_v1" ]; then
		[ -z "$MAP_ID" ] || fail "the pinned map $BPF_DIR/ml_enroll_v1 disappeared"
		return 0
	fi
	id=$(map_id)
	[ -n "$MAP_ID" ] || MAP_ID=$id
	[ "$id" = "$MAP_ID" ] || fail "the pinned map was replaced (id $MAP_ID -> $id)"
	bpftool -j map dump pinned "$BPF_DIR/ml_enroll_v1" | python3 -c '
import ipaddress, json, sys
for e in json.load(sys.stdin):
    k = bytes(int(b, 16) for b in e["key"])
    v = int.from_bytes(bytes(int(b, 16) for b in e["value"]), "little")
    fam = int.from_bytes(k[:4], "little")
    a = ipaddress.ip_address(k[4:8] if fam == 2 else k[4:20])
    print(a, {1: "ENROLLED", 2: "PENDING"}.get(v, v))'
}

# (grep reads captured output: a "producer | grep -q" pipeline fails under pipefail when grep
# exits early and the producer gets SIGPIPE)
filter_on() { grep -q 'name capture_pod' <<<"$(tc -n "$NODE" filter show dev "$1" ingress 2>/dev/null)"; }

reg_file() { echo "$STATE/pods/$1-eth0.json"; }

# expect_error WHAT CODE MSG_SUBSTRING: the last run failed with that CNI error.
expect_error() {
	local what=$1 code=$2 msg=$3 got
	if [ "$RC" -eq 0 ]; then fail "$what: exit status 0, expected error $code"; return; fi
	if ! got=$(python3 -c '
import json, sys
e = json.loads(sys.argv[1])
assert set(e) >= {"cniVersion", "code", "msg"}, e
print(e["code"], e["msg"])' "$OUT" 2>/dev/null); then
		fail "$what: stdout is not a CNI error object: $OUT"; return
	fi
	if [ "${got%% *}" != "$code" ] || [[ "${got#* }" != *"$msg"* ]]; then
		fail "$what: got error '$got', expected code $code with '$msg'"; return
	fi
	ok "$what -> code $code: ${got#* }"
}

# ---- one pod through a chain ----

# pod_add NAME CID FIRST_PLUGIN_CONF: a pod netns and the first plugin's ADD; sets RESULT.
RESULT=""
pod_add() {
	local name=$1 cid=$2 conf=$3 netns=/run/netns/mlcni-$1-$ID
	ip netns add "mlcni-$name-$ID"
	PODS+=("mlcni-$name-$ID")
	run_plugin "$CNI_BIN/$(json_get "$conf" 'd["type"]')" ADD "$cid" "$netns" "$conf"
	[ "$RC" -eq 0 ] || die "$name: reference plugin ADD failed: $OUT"
	RESULT=$OUT
}

# check_added NAME CID RESULT [STATE]: everything ADD must have put in place.
check_added() {
	local name=$1 cid=$2 result=$3 state=${4:-PENDING} veth ip f
	veth=$(host_veth "$result")
	if filter_on "$veth"; then ok "$name: capture_pod attached to $veth"; else
		fail "$name: no capture_pod on $veth: $(tc -n "$NODE" filter show dev "$veth" ingress)"; fi
	for ip in $(pod_ips "$result"); do
		if grep -qx "$ip $state" <<<"$(map_entries)"; then ok "$name: $ip $state in the map"; else
			fail "$name: $ip not $state in the map: $(map_entries | tr '\n' ' ')"; fi
	done
	f=$(reg_file "$cid")
	if [ -f "$f" ] && python3 - "$f" "$result" "$cid" "$name" "$veth" "/run/netns/mlcni-$name-$ID" <<'EOF'
import json, sys
f, result, cid, name, veth, netns = sys.argv[1:7]
r = json.load(open(f))
want_ips = [i["address"].split("/")[0] for i in json.loads(result)["ips"]]
assert r["containerId"] == cid and r["ifName"] == "eth0", r
assert r["podNamespace"] == "shop" and r["podName"] == name and r["podUid"] == "uid-" + cid, r
assert r["netns"] == netns and r["hostInterface"] == veth, r
assert r["hostIfindex"] > 0 and sorted(r["ips"]) == sorted(want_ips), r
assert r["createdAt"].endswith("Z"), r
EOF
	then ok "$name: registry file $f"; else fail "$name: registry file $f missing or wrong"; fi
}

# check_gone NAME CID RESULT: nothing of the pod left.
check_gone() {
	local name=$1 cid=$2 result=$3 veth ip
	veth=$(host_veth "$result")
	if ip -n "$NODE" link show "$veth" >/dev/null 2>&1 && filter_on "$veth"; then
		fail "$name: capture_pod still on $veth"; fi
	for ip in $(pod_ips "$result"); do
		if grep -q "^$ip " <<<"$(map_entries)"; then fail "$name: $ip still in the map"; fi
	done
	if [ -e "$(reg_file "$cid")" ]; then fail "$name: registry file left"; fi
	ok "$name: filter, map entries and registry file gone"
}

# ---- VERSION ----

for v in 0.3.1 0.4.0 1.0.0; do
	run_plugin "$MESHLITE_CNI" VERSION "" "" "{\"cniVersion\":\"$v\"}"
	if [ "$RC" -eq 0 ] && [ "$(printf '%s' "$OUT" | canon)" = \
		'{"cniVersion": "1.0.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0"]}' ]; then
		ok "VERSION ($v config): $OUT"
	else
		fail "VERSION ($v config): rc=$RC $OUT"
	fi
done

# ---- ptp + host-local, CNI 1.0.0 ----

PTP_CONF='{"cniVersion":"1.0.0","name":"meshnet","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","subnet":"10.199.1.0/24","dataDir":"'$IPAM'"}}'
CID=ptp-$ID
pod_add web-0 "$CID" "$PTP_CONF"
PTP_RESULT=$RESULT
MCONF=$(mesh_conf 1.0.0 "$PTP_RESULT")
run_plugin "$MESHLITE_CNI" ADD "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-0 "$CID")"
if [ "$RC" -ne 0 ]; then fail "ptp: meshlite-cni ADD failed: $OUT"; fi
if [ "$(printf '%s' "$OUT" | canon)" = "$(printf '%s' "$PTP_RESULT" | canon)" ]; then
	ok "ptp: ADD passed prevResult through unchanged"
else
	fail "ptp: ADD output differs from prevResult: $OUT vs $PTP_RESULT"
fi
check_added web-0 "$CID" "$PTP_RESULT"

# The pod starts blocked (PENDING): its new TCP connections are dropped until the node
# agent decides; once the entry is gone (not enrolled) they pass.
GW=$(json_get "$PTP_RESULT" 'd["ips"][0]["gateway"]')
PORT=$((20000 + ID % 10000))
nsenter --net="/run/netns/$NODE" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()' "$GW" "$PORT" &
LISTENER=$!
sleep 0.5
connect() {
	ip netns exec "mlcni-web-0-$ID" python3 -c '
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).recv(2)
except OSError:
    sys.exit(1)' "$GW" "$PORT"
}
if connect; then fail "ptp: a PENDING pod's connection went through"; else
	ok "ptp: PENDING pod's new connection dropped"; fi
POD_IP=$(pod_ips "$PTP_RESULT")
python3 -c 'import socket,sys; print(" ".join(str(b) for b in (2,0,0,0) + tuple(socket.inet_aton(sys.argv[1])) + (0,)*12))' "$POD_IP" >"$TMP/key"
# shellcheck disable=SC2046
bpftool map delete pinned "$BPF_DIR/ml_enroll_v1" key $(cat "$TMP/key")
if connect; then ok "ptp: connection passes once the pod is not enrolled (entry absent)"; else
	fail "ptp: connection still dropped with no map entry"; fi
# put it back as the plugin left it, so CHECK below tests the plugin's own state
# shellcheck disable=SC2046
bpftool map update pinned "$BPF_DIR/ml_enroll_v1" key $(cat "$TMP/key") value 2 0 0 0
kill "$LISTENER"; wait "$LISTENER" 2>/dev/null || true; LISTENER=""

run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-0 "$CID")"
if [ "$RC" -eq 0 ] && [ -z "$OUT" ]; then ok "ptp: CHECK passes"; else fail "ptp: CHECK: rc=$RC $OUT"; fi

# someone removes our filter: CHECK must say so
VETH=$(host_veth "$PTP_RESULT")
tc -n "$NODE" filter del dev "$VETH" ingress pref 1 handle 0x111 bpf
run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-0 "$CID")"
expect_error "ptp: CHECK after the filter was detached" 102 "not attached to $VETH"

# ADD again repairs it (the existing PENDING entry is kept, not duplicated)
run_plugin "$MESHLITE_CNI" ADD "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-0 "$CID")"
if [ "$RC" -eq 0 ] && filter_on "$VETH"; then ok "ptp: ADD again re-attaches"; else fail "ptp: ADD again: rc=$RC $OUT"; fi

# a registry file that disagrees with the runtime's view
run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-1 "$CID")"
expect_error "ptp: CHECK with another pod name" 103 "\"podName\" differs"

# an entry removed from the map behind the plugin's back
# shellcheck disable=SC2046
bpftool map delete pinned "$BPF_DIR/ml_enroll_v1" key $(cat "$TMP/key")
run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF" "$(k8s_args web-0 "$CID")"
expect_error "ptp: CHECK without the map entry" 101 "no entry for the pod's address $POD_IP"
# shellcheck disable=SC2046
bpftool map update pinned "$BPF_DIR/ml_enroll_v1" key $(cat "$TMP/key") value 2 0 0 0

# DEL in reverse chain order, twice, then the reference plugin's DEL
run_plugin "$MESHLITE_CNI" DEL "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF"
if [ "$RC" -eq 0 ] && [ -z "$OUT" ]; then ok "ptp: DEL"; else fail "ptp: DEL: rc=$RC $OUT"; fi
check_gone web-0 "$CID" "$PTP_RESULT"
run_plugin "$MESHLITE_CNI" DEL "$CID" "/run/netns/mlcni-web-0-$ID" "$MCONF"
if [ "$RC" -eq 0 ] && [ -z "$OUT" ]; then ok "ptp: second DEL succeeds"; else fail "ptp: second DEL: rc=$RC $OUT"; fi
run_plugin "$MESHLITE_CNI" DEL "$CID" "" "$(mesh_conf 1.0.0 "")"
if [ "$RC" -eq 0 ]; then ok "ptp: DEL without prevResult or netns succeeds"; else fail "ptp: DEL without prevResult: $OUT"; fi
run_plugin "$CNI_BIN/ptp" DEL "$CID" "/run/netns/mlcni-web-0-$ID" "$PTP_CONF"
[ "$RC" -eq 0 ] || fail "ptp: reference DEL failed: $OUT"

# ---- bridge + host-local, dual stack, CNI 0.4.0, then DEL with the netns gone ----

BR_CONF='{"cniVersion":"0.4.0","name":"meshnet","type":"bridge","bridge":"'$BRIDGE'","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.199.2.0/24"}],[{"subnet":"fd00:199:2::/64"}]],"dataDir":"'$IPAM'"}}'
CID=br-$ID
pod_add api-0 "$CID" "$BR_CONF"
BR_RESULT=$RESULT
MCONF=$(mesh_conf 0.4.0 "$BR_RESULT")
run_plugin "$MESHLITE_CNI" ADD "$CID" "/run/netns/mlcni-api-0-$ID" "$MCONF" "$(k8s_args api-0 "$CID")"
if [ "$RC" -ne 0 ]; then fail "bridge: meshlite-cni ADD failed: $OUT"; fi
if [ "$(printf '%s' "$OUT" | canon)" = "$(printf '%s' "$BR_RESULT" | canon)" ]; then
	ok "bridge: ADD passed the 0.4.0 prevResult through unchanged"
else
	fail "bridge: ADD output differs from prevResult: $OUT vs $BR_RESULT"
fi
check_added api-0 "$CID" "$BR_RESULT"
if grep -q capture_pod <<<"$(tc -n "$NODE" filter show dev "$BRIDGE" ingress 2>/dev/null)"; then
	fail "bridge: capture_pod attached to the bridge itself"; else ok "bridge: the bridge itself untouched"; fi
run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-api-0-$ID" "$MCONF" "$(k8s_args api-0 "$CID")"
if [ "$RC" -eq 0 ]; then ok "bridge: CHECK passes"; else fail "bridge: CHECK: rc=$RC $OUT"; fi

# the pod's netns disappears before DEL (node reboot, runtime crash): DEL still succeeds
ip netns del "mlcni-api-0-$ID"
run_plugin "$MESHLITE_CNI" DEL "$CID" "/run/netns/mlcni-api-0-$ID" "$MCONF"
if [ "$RC" -eq 0 ]; then ok "bridge: DEL with the netns gone"; else fail "bridge: DEL with the netns gone: $OUT"; fi
check_gone api-0 "$CID" "$BR_RESULT"
run_plugin "$CNI_BIN/bridge" DEL "$CID" "/run/netns/mlcni-api-0-$ID" "$BR_CONF"
[ "$RC" -eq 0 ] || fail "bridge: reference DEL failed: $OUT"

# ---- ptp, CNI 0.3.1 config (no CHECK in 0.3.1) ----

PTP31_CONF=${PTP_CONF/1.0.0/0.3.1}
CID=old-$ID
pod_add db-0 "$CID" "$PTP31_CONF"
MCONF=$(mesh_conf 0.3.1 "$RESULT")
# the node agent got there first and enrolled the address: ADD keeps its decision
python3 -c 'import socket,sys; print(" ".join(str(b) for b in (2,0,0,0) + tuple(socket.inet_aton(sys.argv[1])) + (0,)*12))' "$(pod_ips "$RESULT")" >"$TMP/key"
# shellcheck disable=SC2046
bpftool map update pinned "$BPF_DIR/ml_enroll_v1" key $(cat "$TMP/key") value 1 0 0 0
run_plugin "$MESHLITE_CNI" ADD "$CID" "/run/netns/mlcni-db-0-$ID" "$MCONF" "$(k8s_args db-0 "$CID")"
if [ "$RC" -eq 0 ] && [ "$(printf '%s' "$OUT" | canon)" = "$(printf '%s' "$RESULT" | canon)" ]; then
	ok "0.3.1: ADD"; else fail "0.3.1: ADD: rc=$RC $OUT"; fi
check_added db-0 "$CID" "$RESULT" ENROLLED
run_plugin "$MESHLITE_CNI" CHECK "$CID" "/run/netns/mlcni-db-0-$ID" "$MCONF" "$(k8s_args db-0 "$CID")"
expect_error "0.3.1: CHECK" 1 "does not allow CHECK"
run_plugin "$MESHLITE_CNI" DEL "$CID" "/run/netns/mlcni-db-0-$ID" "$MCONF"
[ "$RC" -eq 0 ] || fail "0.3.1: DEL: $OUT"
check_gone db-0 "$CID" "$RESULT"

# ---- errors, with a live pod's result so only the tested thing is wrong ----

CID=err-$ID
pod_add bad-0 "$CID" "$PTP_CONF"
ERR_RESULT=$RESULT
MCONF=$(mesh_conf 1.0.0 "$ERR_RESULT")
NS=/run/netns/mlcni-bad-0-$ID
ARGS=$(k8s_args bad-0 "$CID")

run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" '{"cniVersion":"1.0.0","name":' "$ARGS"
expect_error "ADD with malformed JSON" 6 "failed to decode the network config"
run_plugin "$MESHLITE_CNI" ADD "" "$NS" "$MCONF" "$ARGS"
expect_error "ADD without CNI_CONTAINERID" 4 "CNI_CONTAINERID is not set"
run_plugin "$MESHLITE_CNI" ADD "$CID" "" "$MCONF" "$ARGS"
expect_error "ADD without CNI_NETNS" 4 "CNI_NETNS is not set"
run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" "$MCONF" ""
expect_error "ADD without K8S_POD_* in CNI_ARGS" 4 "K8S_POD_NAMESPACE"
run_plugin "$MESHLITE_CNI" ADD "bad/id" "$NS" "$MCONF" "$ARGS"
expect_error "ADD with an invalid container ID" 4 "CNI_CONTAINERID"
run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" "$(mesh_conf 0.2.0 "$ERR_RESULT")" "$ARGS"
expect_error "ADD with cniVersion 0.2.0" 1 "incompatible CNI version \"0.2.0\""
run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" "$(mesh_conf 1.0.0 "")" "$ARGS"
expect_error "ADD without prevResult" 7 "chained plugin"
run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" "$(mesh_conf 1.0.0 "${ERR_RESULT//$(host_veth "$ERR_RESULT")/vethmissing0}")" "$ARGS"
expect_error "ADD with a host interface that does not exist" 100 "vethmissing0"
run_plugin "$MESHLITE_CNI" GC "$CID" "$NS" "$MCONF" "$ARGS"
expect_error "unknown CNI_COMMAND" 4 "unknown CNI_COMMAND"
run_plugin "$MESHLITE_CNI" CHECK "$CID" "$NS" "$MCONF" "$ARGS"
expect_error "CHECK of a pod never added" 102 "not attached"
# a failed ADD leaves nothing behind
check_gone bad-0 "$CID" "$ERR_RESULT"

# DEL removes a map entry only while no other registered pod claims the address (the
# registry says who owns it): here a later pod's file lists the same IP
run_plugin "$MESHLITE_CNI" ADD "$CID" "$NS" "$MCONF" "$ARGS"
[ "$RC" -eq 0 ] || fail "ownership: ADD failed: $OUT"
ERR_IP=$(pod_ips "$ERR_RESULT")
sed -e "s/\"containerId\":\"$CID\"/\"containerId\":\"later-$ID\"/" "$(reg_file "$CID")" >"$(reg_file "later-$ID")"
run_plugin "$MESHLITE_CNI" DEL "$CID" "$NS" "$MCONF"
[ "$RC" -eq 0 ] || fail "ownership: DEL failed: $OUT"
if grep -qx "$ERR_IP PENDING" <<<"$(map_entries)"; then ok "ownership: DEL kept $ERR_IP, registered to another pod"; else
	fail "ownership: DEL removed $ERR_IP although another pod's registry file lists it"; fi
if [ -e "$(reg_file "$CID")" ] || [ ! -e "$(reg_file "later-$ID")" ]; then
	fail "ownership: DEL removed the wrong registry file"; fi
run_plugin "$MESHLITE_CNI" DEL "later-$ID" "" "$(mesh_conf 1.0.0 "")"
[ "$RC" -eq 0 ] || fail "ownership: DEL of the other pod failed: $OUT"
check_gone bad-0 "$CID" "$ERR_RESULT"
run_plugin "$CNI_BIN/ptp" DEL "$CID" "$NS" "$PTP_CONF"
[ "$RC" -eq 0 ] || fail "errors: reference DEL failed: $OUT"

# ---- nothing left ----

if [ -n "$(map_entries)" ]; then fail "map entries left: $(map_entries | tr '\n' ' ')"; else ok "enrollment map empty"; fi
if [ -n "$(ls -A "$STATE/pods" 2>/dev/null)" ]; then fail "registry files left: $(ls -A "$STATE/pods")"; else ok "registry empty"; fi
LEFT=$(tc -n "$NODE" filter show 2>/dev/null; for l in $(ip -n "$NODE" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
	tc -n "$NODE" filter show dev "$l" ingress 2>/dev/null; done)
if [ -n "$LEFT" ]; then fail "tc filters left in the node: $LEFT"; else ok "no tc filters left"; fi
if [ -n "$(nsenter --net="/run/netns/$NODE" sh -c 'command -v nft >/dev/null && nft list ruleset || true')" ]; then
	fail "nftables rules in the node namespace"; else ok "no nftables rules in the node namespace"; fi
if [ "$(rules_snapshot)" != "$RULES_BEFORE" ]; then fail "iptables/nftables rules changed in the root namespace"; else
	ok "no iptables/nftables rule created in the root namespace"; fi

for p in "${PODS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
PODS=()
ip netns del "$NODE"
rm -rf "$BPF_DIR"
if grep -q -- "-$ID\b" <<<"$(ip netns list)"; then fail "namespaces left: $(ip netns list | grep -- "-$ID")"; fi
if [ -e "$BPF_DIR" ]; then fail "pins left in $BPF_DIR"; else ok "no namespaces or pins left"; fi

[ ! -s "$TMP/failed" ] || FAILS=$(wc -l <"$TMP/failed")
if [ "$FAILS" -ne 0 ]; then
	echo "$FAILS check(s) failed" >&2
	exit 1
fi
echo "all CNI conformance checks passed"
