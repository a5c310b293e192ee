#!/bin/bash
# Issue 2 acceptance: pod -> pod across nodes through two ztunnels over HBONE/mTLS.
#  - a 100 MiB stream and 1,000 concurrent short connections arrive byte-exact (SHA-256)
#  - half-close works in both directions
#  - an upstream that refuses the connection gives the client a reset
#  - the istio_tcp_* metrics on both nodes count exactly what was sent
#  - a capture on the node link shows a marker string never crosses in the clear and the
#    only pod-to-pod TCP on the wire is HBONE on 15008
#  - a pod outside the mesh is still reachable (passthrough) from an enrolled pod
. "$(dirname "$0")/lib.sh"
require_root

fixture=$(mktemp -d)
sed "s|\${TESTPEER}|$TESTPEER|g" "$(dirname "$0")/fixtures/datapath/pods.yaml" >"$fixture/pods.yaml"
lab_up t-datapath --nodes 2 "$fixture"
rm -rf "$fixture"

server=$(pod_ip mesh/server)
outsider=$(pod_ip plain/outsider)
# the servers were started after ztunnel was ready; give them a moment to listen
wait_for 10 lab_exec mesh/client -- "$TESTPEER" probe "$server:8081" >/dev/null ||
	die "server pod never answered"

# -- metrics before
m_open_src0=$(metric node-1 istio_tcp_connections_opened_total 'reporter="source"' 'destination_workload="server"')
m_recv_src0=$(metric node-1 istio_tcp_received_bytes_total 'reporter="source"' 'destination_workload="server"')
m_recv_dst0=$(metric node-2 istio_tcp_received_bytes_total 'reporter="destination"' 'source_workload="client"')
m_close_dst0=$(metric node-2 istio_tcp_connections_closed_total 'reporter="destination"' 'source_workload="client"')

# -- 100 MiB, byte-exact; client->server half-close is how sha-server knows the end
if out=$(lab_exec mesh/client -- "$TESTPEER" send "$server:8080" 104857600); then
	ok "100 MiB stream byte-exact: $out"
else
	fail "100 MiB stream: $out"
fi
sent_total=104857600

# -- metrics after exactly one connection
wait_for 5 test "$(metric node-2 istio_tcp_connections_closed_total 'reporter="destination"' 'source_workload="client"')" -gt "$m_close_dst0" || true
d_open=$(($(metric node-1 istio_tcp_connections_opened_total 'reporter="source"' 'destination_workload="server"') - m_open_src0))
d_recv_src=$(($(metric node-1 istio_tcp_received_bytes_total 'reporter="source"' 'destination_workload="server"') - m_recv_src0))
d_recv_dst=$(($(metric node-2 istio_tcp_received_bytes_total 'reporter="destination"' 'source_workload="client"') - m_recv_dst0))
[ "$d_open" -eq 1 ] && ok "opened_total +1 on the source node" || fail "opened_total delta $d_open, want 1"
[ "$d_recv_src" -eq $sent_total ] && ok "source received_bytes +$sent_total" ||
	fail "source received_bytes delta $d_recv_src, want $sent_total"
[ "$d_recv_dst" -eq $sent_total ] && ok "destination received_bytes +$sent_total" ||
	fail "destination received_bytes delta $d_recv_dst, want $sent_total"
labels=$(ip netns exec "$(node_field node-2 netns)" curl -sf "http://$(node_field node-2 ztunnel.metrics)/metrics" |
	grep '^istio_tcp_connections_opened_total' | grep 'reporter="destination"' | head -1)
for want in 'source_principal="spiffe://cluster.local/ns/mesh/sa/client"' \
	'destination_principal="spiffe://cluster.local/ns/mesh/sa/server"' \
	'connection_security_policy="mutual_tls"' 'request_protocol="tcp"' \
	'source_workload_namespace="mesh"' 'destination_service="unknown"'; do
	case "$labels" in *"$want"*) ok "label $want" ;; *) fail "label $want missing in: $labels" ;; esac
done

# -- 1,000 concurrent short connections, each checked byte for byte
if out=$(lab_exec mesh/client -- "$TESTPEER" echo-check "$server:8081" 1000 200 4096); then
	ok "1000 short connections: $out"
else
	fail "1000 short connections: $out"
fi

# -- parallel bulk streams on one pooled tunnel, both ways at once (iperf3 -P 4 shape):
# flow control across streams, buffers for the tunnel, frames around NO_COPY DATA frames
if out=$(timeout 120 "$MESHLITE" lab exec --name "$LAB_NAME" mesh/client -- "$TESTPEER" echo-check "$server:8081" 8 4 20000000); then
	ok "4 parallel 20 MB streams x2, echoed byte for byte: $out"
else
	fail "parallel bulk streams: $out"
fi

# -- half-close the other way: the server finishes first, the client keeps sending
if out=$(lab_exec mesh/client -- "$TESTPEER" pull "$server:8082" 3000000 2000000); then
	ok "server-side half-close: $out"
else
	fail "server-side half-close: $out"
fi
want=$(echo "$out" | awk '{print $NF}')
podlog=$(status_json | python3 -c '
import json,sys
for p in json.load(sys.stdin)["pods"]:
    if p["name"] == "server":
        for c in p["containers"]:
            if c["name"] == "push": print(c["log"])')
wait_for 5 grep -q "2000000 $want" "$podlog" && ok "server received the client's bytes after its own FIN" ||
	fail "push-server log lacks '2000000 $want': $(cat "$podlog")"

# -- nothing listens on 9999: the client must see a reset, not a clean close
r=$(lab_exec mesh/client -- "$TESTPEER" probe "$server:9999")
[ "$r" = reset ] && ok "refused upstream -> client reset" || fail "refused upstream -> client saw '$r'"

# -- passthrough to a pod outside the mesh still works
if out=$(lab_exec mesh/client -- "$TESTPEER" send "$outsider:8080" 100000); then
	ok "enrolled -> non-mesh pod (passthrough): $out"
else
	fail "passthrough: $out"
fi

# -- no plaintext on the node link
n1ns=$(node_field node-1 netns)
pcap=$(mktemp --suffix=.pcap)
ip netns exec "$n1ns" tcpdump -i eth0 -U -w "$pcap" 'tcp' 2>/dev/null &
tpid=$!
sleep 1
marker="MESHLITE-PLAINTEXT-MARKER-$$"
lab_exec mesh/client -- "$TESTPEER" marker "$server:8080" "$marker" 20000 >/dev/null ||
	fail "marker transfer failed"
sleep 0.5
kill "$tpid"
wait "$tpid" 2>/dev/null || true
if grep -aq "$marker" "$pcap"; then
	fail "marker seen in clear text on node-1's link"
else
	ok "marker never on the wire in clear text"
fi
ports=$(tcpdump -nn -r "$pcap" 2>/dev/null | awk '{print $3" "$5}' | grep -c -v '\.15008[: ]' || true)
total=$(tcpdump -nn -r "$pcap" 2>/dev/null | wc -l)
[ "$total" -gt 0 ] && [ "$ports" -eq 0 ] && ok "all $total captured packets are HBONE (15008)" ||
	fail "$ports of $total captured packets are not on 15008"
rm -f "$pcap"

# -- the access log names both identities
for n in node-1 node-2; do
	log=/run/meshlite/$LAB_NAME/$n/ztunnel.log
	grep -q 'src.identity=spiffe://cluster.local/ns/mesh/sa/client.*dst.identity=spiffe://cluster.local/ns/mesh/sa/server' "$log" &&
		ok "$n access log names both identities" || fail "$n access log lacks identities"
done

finish
