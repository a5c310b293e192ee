#!/bin/bash
# Issue 4: meshlite-cni + the node agent in ztunnel, with the istiod control plane.
#  - every pod comes up through ptp + host-local + meshlite-cni (capture program on its
#    veth, registered with the node agent); the agent reports each pod's capture state
#  - no iptables or nftables rule anywhere
#  - labelling the namespace ambient with lab apply puts its running pods in the mesh within
#    2 s, without restarting them: traffic HBONE (only 15008 on node-1's link); the server
#    application sees the client pod's own address; same-node traffic goes through the mesh
#  - plaintext from a pod outside the mesh to an enrolled pod: admitted by default
#    (PERMISSIVE; ztunnel reports connection_security_policy="unknown", the server sees the
#    outsider's address), refused under STRICT, admitted again under PERMISSIVE
#  - ztunnel killed on node-1: the enrolled client's connections fail, nothing of them on
#    the wire; pods outside the mesh unaffected; ztunnel started again re-adopts the pinned
#    state and the client's next connections work, without touching the pod
#  - a client port reused at once over one of ztunnel's TIME_WAIT sockets still connects
#  - ztunnel's SOCKS5 listener relays an explicit CONNECT and refuses a host name
#  - removing the label takes the pods out again (direct traffic)
#  - lab down leaves no pinned map
. "$(dirname "$0")/lib.sh"
require_root
: "${ISTIOD:?ISTIOD must point to the istiod-lite binary (set by meson)}"
command -v nft >/dev/null || die "nft is missing (scripts/install-deps.sh installs nftables)"
command -v iptables-save >/dev/null || die "iptables-save is missing (scripts/install-deps.sh installs iptables)"
fixtures=$(cd "$(dirname "$0")" && pwd)/fixtures/capture

work=$(mktemp -d)
restarted=""
cleanup() {
	local rc=$?
	if [ -n "$restarted" ]; then
		kill "$restarted" 2>/dev/null || true
		wait "$restarted" 2>/dev/null || true
	fi
	rm -rf "$work"
	(exit $rc)
	on_exit
}
root_netfilter() { nft list ruleset 2>&1; iptables-save 2>&1 | grep -vE '^[#:]' || true; }  # no counters
root_rules_before=$(root_netfilter)
mkdir "$work/up"
sed "s|\${TESTPEER}|$TESTPEER|g" "$fixtures/up/pods.yaml" >"$work/up/pods.yaml"
lab_up "t-cap-$$" --nodes 2 --control-plane istiod "$work/up"
trap cleanup EXIT # after lab_up's own

state=/run/meshlite/$LAB_NAME
n1=$(node_field node-1 netns)
n2=$(node_field node-2 netns)
client=$(pod_ip shop/client)
server=$(pod_ip shop/server)
outsider=$(pod_ip outside/outsider)
plainsrv=$(pod_ip outside/plainsrv)
log1=$state/node-1/ztunnel.log
log2=$state/node-2/ztunnel.log

apply() { "$MESHLITE" lab apply --name "$LAB_NAME" -f "$@" >/dev/null; }
whoami() { timeout 5 "$MESHLITE" lab exec --name "$LAB_NAME" "$1" -- "$TESTPEER" whoami "$2"; }
probe() { timeout 5 "$MESHLITE" lab exec --name "$LAB_NAME" "$1" -- "$TESTPEER" probe "$2" || echo timeout; }
echo_ok() { timeout 20 "$MESHLITE" lab exec --name "$LAB_NAME" "$1" -- "$TESTPEER" echo-check "$2" 3 1 2000 >/dev/null 2>&1; }
# capture_state NS/POD -> the node agent's state for it (lab status --json)
capture_state() {
	status_json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
p = next(p for p in json.load(sys.stdin)["pods"] if p["namespace"] == ns and p["name"] == name)
print((p.get("capture") or {}).get("state", "unknown"))' "$1"
}
access_count() { grep -c "$2" "$1" || true; }
# link_tcp CMD...: run CMD while capturing node-1's uplink; prints "SRC DST" per TCP packet
# (without ztunnel's own xDS/CA connection to istiod-lite, port 15012)
link_tcp() {
	local pcap tpid
	pcap=$(mktemp --suffix=.pcap)
	ip netns exec "$n1" tcpdump --immediate-mode -i eth0 -U -w "$pcap" 'tcp and not port 15012' 2>/dev/null &
	tpid=$!
	sleep 1
	"$@" >/dev/null 2>&1 || true
	sleep 0.5
	kill "$tpid"
	wait "$tpid" 2>/dev/null || true
	tcpdump -nn -r "$pcap" 2>/dev/null | awk '{print $3" "$5}'
	rm -f "$pcap"
}

# ---- every pod set up through the chain, registered with its node agent
for p in shop/client shop/server shop/neighbour outside/outsider outside/plainsrv; do
	s=$(capture_state "$p")
	[ "$s" = not_enrolled ] && ok "$p: registered by meshlite-cni, capture state $s" ||
		fail "$p: capture state $s, want not_enrolled"
done
for n in "$n1" "$n2"; do
	host_if=$(ip -n "$n" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -v '^eth0$' | head -n1)
	tc -n "$n" filter show dev "$host_if" ingress | grep -q capture_pod &&
		ok "$n: capture_pod on $host_if" || fail "$n: no capture_pod on $host_if"
	tc -n "$n" filter show dev eth0 ingress | grep -q capture_node &&
		ok "$n: capture_node on the uplink" || fail "$n: no capture_node on eth0"
done
[ -e "/sys/fs/bpf/meshlite/$LAB_NAME/node-1/ml_enroll_v1" ] && ok "node-1's enrollment map is pinned" ||
	fail "no pinned enrollment map for node-1"

# ---- no netfilter rules, anywhere: the lab's namespaces have none at all, and the root
# namespace (which may hold the host's own) is exactly as it was before the lab came up
rules=""
for ns in "$n1" "$n2" $(status_json | python3 -c 'import json,sys; print(" ".join(p["netns"] for p in json.load(sys.stdin)["pods"]))'); do
	r=$(ip netns exec "$ns" nft list ruleset 2>&1; ip netns exec "$ns" iptables-save 2>&1 | grep -E '^-A' || true)
	[ -z "$r" ] || rules="$rules [$ns] $r"
done
[ "$(root_netfilter)" = "$root_rules_before" ] || rules="$rules [root namespace changed]"
[ -z "$rules" ] && ok "no iptables/nftables rule in the node and pod namespaces, root namespace unchanged" ||
	fail "netfilter rules found:$rules"

# ---- outside the mesh: direct, the server sees the client
seen=$(whoami shop/client "$server:9000" || true)
[ "${seen%%:*}" = "$client" ] && ok "before enrollment: direct, server sees $seen" || fail "before enrollment: server saw '$seen'"

# ---- enrollment, live
hb_before=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
t0=$(date +%s.%N)
apply "$fixtures/ns-ambient.yaml"
wait_for 5 bash -c "[ \"\$(\"$MESHLITE\" lab exec --name $LAB_NAME shop/client -- $TESTPEER probe $server:8081)\" = data ]" ||
	fail "no connection after enrolling"
t1=$(date +%s.%N)
hb_after=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
secs=$(python3 -c "print(round($t1 - $t0, 2))")
if [ "$hb_after" -gt "$hb_before" ] && python3 -c "import sys; sys.exit(0 if $t1 - $t0 <= 2.0 else 1)"; then
	ok "namespace labelled: traffic HBONE after ${secs}s (lab apply included), pods not restarted"
else
	fail "namespace labelled: HBONE lines $hb_before -> $hb_after after ${secs}s (want more, within 2 s)"
fi
for p in shop/client shop/server shop/neighbour; do
	s=$(capture_state "$p")
	[ "$s" = enrolled ] && ok "$p: capture state enrolled" || fail "$p: capture state $s"
done
s=$(capture_state outside/outsider)
[ "$s" = not_enrolled ] && ok "outside/outsider stays not_enrolled" || fail "outside/outsider: $s"

seen=$(whoami shop/client "$server:9000" || true)
[ "${seen%%:*}" = "$client" ] && ok "through the mesh, the server application sees the client's own address ($seen)" ||
	fail "through the mesh the server saw '$seen', not $client"
grep -q "direction=inbound src.addr=$client:.*dst.addr=$server:9000.*protocol=HBONE" "$log2" &&
	ok "node-2 logged the inbound HBONE connection from $client" || fail "no inbound HBONE access line on node-2"

lines=$(link_tcp bash -c "\"$MESHLITE\" lab exec --name $LAB_NAME shop/client -- $TESTPEER echo-check $server:8081 20 4 20000")
other=$(echo "$lines" | grep -v '\.15008\( \|$\)' | grep -vc '\.15008:\?$' || true)
total=$(echo "$lines" | grep -c . || true)
[ "$total" -gt 0 ] && [ "$other" -eq 0 ] && ok "node-1's link: $total TCP packets, every one on 15008" ||
	fail "node-1's link: $other of $total TCP packets not on 15008: $(echo "$lines" | grep -v 15008 | head -n 3)"

echo_ok shop/neighbour "$server:8081" && ok "same-node client -> server through the mesh" || fail "same-node echo failed"
seen=$(whoami shop/neighbour "$server:9000" || true)
neighbour=$(pod_ip shop/neighbour)
[ "${seen%%:*}" = "$neighbour" ] && ok "same node: server sees $seen" || fail "same node: server saw '$seen'"
grep -q "direction=outbound src.addr=$neighbour:.*protocol=HBONE" "$log2" &&
	ok "same-node connection went through HBONE" || fail "same-node connection not logged as HBONE on node-2"

# ---- churn: the peer-server closes first, so ztunnel's socket towards the client ends in
# TIME_WAIT; the client reusing its port at once must still get through (tc leaves that SYN
# to the kernel's TIME_WAIT path, capture_lookup gives it ztunnel's listener)
reuse=$(lab_exec shop/client -- /usr/bin/python3 - "$server" <<'PY'
import socket, sys, time
ok = 0
for i in range(3):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", 45678))
    s.settimeout(3)
    try:
        s.connect((sys.argv[1], 9000))
        if s.recv(100).endswith(b"\n"):
            ok += 1
    except OSError as e:
        print("attempt", i, e)
    s.close()
    time.sleep(0.1)
print(ok)
PY
)
[ "$(echo "$reuse" | tail -n 1)" = 3 ] && ok "a client port reused at once after ztunnel closed first: 3/3 connections" ||
	fail "port reuse over ztunnel's TIME_WAIT: $reuse"

# ---- plaintext from outside the mesh: PERMISSIVE by default, STRICT refuses
m0=$(metric node-2 istio_tcp_connections_opened_total 'reporter="destination"' 'connection_security_policy="unknown"')
echo_ok outside/outsider "$server:8081" && ok "outsider -> enrolled server (no PeerAuthentication): admitted" ||
	fail "outsider -> enrolled server refused without a PeerAuthentication"
seen=$(whoami outside/outsider "$server:9000" || true)
[ "${seen%%:*}" = "$outsider" ] && ok "plaintext inbound: server sees the outsider's address ($seen)" ||
	fail "plaintext inbound: server saw '$seen', not $outsider"
m1=$(metric node-2 istio_tcp_connections_opened_total 'reporter="destination"' 'connection_security_policy="unknown"')
[ "$m1" -ge $((m0 + 4)) ] && ok "istio_tcp_connections_opened_total{connection_security_policy=\"unknown\"}: $m0 -> $m1" ||
	fail "plaintext inbound metric $m0 -> $m1"
grep -q "direction=inbound src.addr=$outsider:.*protocol=TCP" "$log2" &&
	ok "node-2 logged the plaintext inbound connection" || fail "no plaintext inbound access line"

apply "$fixtures/strict.yaml"
wait_for 5 bash -c "[ \"\$(timeout 5 \"$MESHLITE\" lab exec --name $LAB_NAME outside/outsider -- $TESTPEER probe $server:8081)\" != data ]" &&
	ok "STRICT: plaintext from the outsider refused ($(probe outside/outsider "$server:8081"))" ||
	fail "STRICT: plaintext still admitted"
grep -q "src.addr=$outsider:.*AuthorizationPolicyDenied" "$log2" && ok "STRICT refusal logged with its reason" ||
	fail "no AuthorizationPolicyDenied line for the outsider"
echo_ok shop/client "$server:8081" && ok "STRICT: the mesh client still gets through" || fail "STRICT broke mesh traffic"
apply "$fixtures/permissive.yaml"
wait_for 5 bash -c "[ \"\$(timeout 5 \"$MESHLITE\" lab exec --name $LAB_NAME outside/outsider -- $TESTPEER probe $server:8081)\" = data ]" &&
	ok "PERMISSIVE: plaintext admitted again" || fail "PERMISSIVE: plaintext still refused"

# ---- explicit outbound: ztunnel's SOCKS5 listener (the lab turns it on, on 15080)
socks_out=$(lab_exec outside/outsider -- /usr/bin/python3 - "$plainsrv" <<'PY'
import socket, struct, sys
def ask(req):
    s = socket.create_connection(("10.200.0.1", 15080), timeout=5)
    s.sendall(b"\x05\x01\x00" + req)  # greeting and request in one write
    method = s.recv(2)
    rep = b""
    while len(rep) < 10:
        b = s.recv(10 - len(rep))
        if not b:
            break
        rep += b
    return s, method, rep
s, m, rep = ask(b"\x05\x01\x00\x01" + socket.inet_aton(sys.argv[1]) + struct.pack("!H", 8081))
s.sendall(b"through socks5")
echo = s.recv(100)
s, m2, rep2 = ask(b"\x05\x01\x00\x03\x07example\x00\x50")
print(m.hex(), rep[:2].hex(), echo.decode(), rep2[:2].hex())
PY
)
[ "$socks_out" = "0500 0500 through socks5 0508" ] &&
	ok "SOCKS5 on 15080: CONNECT relayed (echo), a name refused with reply 8" ||
	fail "SOCKS5: got '$socks_out'"

# ---- leaving the mesh, and back
apply "$fixtures/ns-plain.yaml"
hb_before=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
seen=$(whoami shop/client "$server:9000" || true)
hb_after=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
[ "$hb_after" -eq "$hb_before" ] && [ "${seen%%:*}" = "$client" ] && ok "label removed: direct again" ||
	fail "label removed: HBONE lines $hb_before -> $hb_after, server saw '$seen'"
s=$(capture_state shop/client)
[ "$s" = not_enrolled ] && ok "shop/client: capture state not_enrolled" || fail "shop/client: $s"
apply "$fixtures/ns-ambient.yaml"
hb_before=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
echo_ok shop/client "$server:8081" || fail "echo after enrolling again"
hb_after=$(access_count "$log1" "direction=outbound.*protocol=HBONE")
[ "$hb_after" -gt "$hb_before" ] && ok "label back: HBONE again" || fail "label back: no HBONE line"

# ---- fail closed while ztunnel is down
zt_pid=$(node_field node-1 ztunnel.pid)
zt_conf=$(node_field node-1 ztunnel.config)
echo_ok outside/outsider "$plainsrv:8081" || fail "outsider -> plainsrv before the kill"
kill -KILL "$zt_pid"
wait_for 5 bash -c "! kill -0 $zt_pid 2>/dev/null" || fail "ztunnel $zt_pid did not die"
lines=$(link_tcp bash -c "timeout 4 \"$MESHLITE\" lab exec --name $LAB_NAME shop/client -- $TESTPEER marker $server:8082 PLAINTEXT-LEAK-$$ 100")
leaked=$(echo "$lines" | grep -c "^$client\." || true)
r=$(probe shop/client "$server:8081")
[ "$r" != data ] && ok "ztunnel down: the enrolled client's connection fails ($r)" || fail "ztunnel down: the client still got data"
[ "$leaked" -eq 0 ] && ok "ztunnel down: nothing from the client on node-1's link" ||
	fail "ztunnel down: $leaked packets from $client on the wire"
echo_ok outside/outsider "$plainsrv:8081" && ok "ztunnel down: pods outside the mesh unaffected" ||
	fail "ztunnel down broke a pod outside the mesh"

# nsenter, not ip netns exec: that one remounts /sys and hides the bpffs with the pins
nsenter --net="/run/netns/$n1" "$ZTUNNEL" --config "$zt_conf" >>"$log1" 2>&1 &
restarted=$!
wait_for 10 ip netns exec "$n1" curl -sf "http://$(node_field node-1 ztunnel.readiness)/healthz/ready" -o /dev/null ||
	fail "restarted ztunnel not ready"
grep -q "node agent started.*pods_adopted=2" "$log1" && ok "restarted ztunnel re-adopted node-1's 2 pods" ||
	fail "no re-adoption line: $(grep 'node agent started' "$log1" | tail -n1)"
wait_for 5 bash -c "[ \"\$(\"$MESHLITE\" lab exec --name $LAB_NAME shop/client -- $TESTPEER probe $server:8081)\" = data ]" &&
	ok "ztunnel back: the client's new connections work, pod untouched" || fail "ztunnel back: still failing"
echo_ok shop/client "$server:8081" || fail "echo after the restart"

kill "$restarted" 2>/dev/null || fail "the restarted ztunnel died: $(tail -n 3 "$log1")"
wait "$restarted" 2>/dev/null || true
restarted=""
lab_down
name=$LAB_NAME
LAB_NAME=""
[ ! -e "/sys/fs/bpf/meshlite/$name" ] && ok "lab down: no pinned objects left" || fail "lab down left /sys/fs/bpf/meshlite/$name"
finish
