#!/bin/bash
# Issue 6 part 5: the Prometheus exposition, checked by Prometheus' own tools.
#  - `promtool check metrics` finds no problem in either ztunnel's :15020/metrics or
#    istiod-lite's :15014/metrics
#  - a real Prometheus server (Debian's), run in node-1's network namespace, scrapes both
#    ztunnels and istiod-lite; after traffic its HTTP API returns
#    istio_tcp_connections_opened_total with Istio's labels from both reporters
#  - every query of the Grafana dashboard (manifests/dashboards/) names metrics and labels
#    ztunnel exposes, parses (promtool) and evaluates on that server
. "$(dirname "$0")/lib.sh"
require_root
: "${ISTIOD:?ISTIOD must point to the istiod-lite binary (set by meson)}"
for cmd in prometheus promtool; do
	command -v "$cmd" >/dev/null || die "missing command '$cmd' (run scripts/install-deps.sh)"
done

here=$(cd "$(dirname "$0")" && pwd)
dashboard="$here/../../manifests/dashboards/ztunnel-node.json"
work=$(mktemp -d)
prom=""
cleanup_prom() {
	if [ -n "$prom" ]; then
		kill "$prom" 2>/dev/null || true
		wait "$prom" 2>/dev/null || true
	fi
	rm -rf "$work"
}
# keep the test's exit status for on_exit (lib.sh), which reads $?
trap 'rc=$?; cleanup_prom; set +e; (exit $rc); on_exit' EXIT

sed "s|\${TESTPEER}|$TESTPEER|g" "$here/fixtures/authz-live/pods.yaml" >"$work/pods.yaml"
lab_up "t-prom-$$" --nodes 2 --control-plane istiod "$work"
trap 'rc=$?; cleanup_prom; set +e; (exit $rc); on_exit' EXIT # lab_up set its own

server=$(pod_ip mesh/server)
wait_for 10 lab_exec mesh/client -- "$TESTPEER" probe "$server:8081" >/dev/null || die "server not up"
n1ns=$(node_field node-1 netns)
zt1=$(node_field node-1 ztunnel.metrics)
zt2=$(node_field node-2 ztunnel.metrics)
istiod=$(status_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["control_plane"]["metrics"])')

# -- traffic, then one connection denied by policy (so the denial counters exist)
out=$(lab_exec mesh/client -- "$TESTPEER" echo-check "$server:8081" 50 10 4096) &&
	ok "50 connections through the mesh: $out" || fail "traffic: $out"
"$MESHLITE" lab apply --name "$LAB_NAME" -f "$here/fixtures/authz-live/deny.yaml" >/dev/null ||
	die "lab apply of the DENY policy failed"
wait_for 5 sh -c "[ \"\$('$MESHLITE' lab exec --name '$LAB_NAME' mesh/client -- '$TESTPEER' probe '$server:8081')\" = reset ]" &&
	ok "a connection denied by policy" || fail "the DENY policy did not take effect"
"$MESHLITE" lab delete --name "$LAB_NAME" -f "$here/fixtures/authz-live/deny.yaml" >/dev/null ||
	die "lab delete of the DENY policy failed"
wait_for 5 sh -c "[ \"\$('$MESHLITE' lab exec --name '$LAB_NAME' mesh/client -- '$TESTPEER' probe '$server:8081')\" = data ]" ||
	fail "still denied after the policy was deleted"

# -- promtool's linter on each exposition. istiod-lite keeps Istio's own names for istiod's
# counters (Istio exports these without "_total", and its dashboards and alerts query them by
# these names), so exactly these two naming findings are waived for exactly these names.
istio_names='citadel_server_authentication_failure_count|citadel_server_csr_count|citadel_server_csr_parsing_err_count|citadel_server_csr_sign_err_count|citadel_server_success_cert_issuance_count|pilot_total_xds_rejects|pilot_xds_pushes'
waived="^($istio_names) (counter metrics should have \"_total\" suffix|non-histogram and non-summary metrics should not have \"_count\" suffix)\$"
for t in "ztunnel node-1:$zt1" "ztunnel node-2:$zt2" "istiod-lite:$istiod"; do
	what=${t%%:*}
	addr=${t#*:}
	f="$work/$(echo "$what" | tr ' ' '-').prom"
	ip netns exec "$n1ns" curl -sf "http://$addr/metrics" >"$f" || { fail "GET $addr/metrics"; continue; }
	lint=$(promtool check metrics <"$f" 2>&1) && rc=0 || rc=$?
	rest=$(echo "$lint" | grep -Ev "$waived" | grep -v '^$' || true)
	nwaived=$(echo "$lint" | grep -Ec "$waived" || true)
	if [ -z "$rest" ] && { [ "$rc" -eq 0 ] || [ "$nwaived" -gt 0 ]; }; then
		note=""
		[ "$nwaived" -eq 0 ] || note=" ($nwaived findings on Istio's own names waived)"
		ok "promtool check metrics: $what ($addr, $(grep -vc '^#' "$f") samples) is clean$note"
	else
		fail "promtool check metrics on $what ($addr), exit $rc: $rest"
	fi
done
grep -q '^istio_tcp_connections_opened_total{' "$work/ztunnel-node-1.prom" ||
	fail "node-1 exposes no istio_tcp_connections_opened_total"

# -- a Prometheus server in node-1's namespace (its web port is local to that namespace)
port=$((19090 + $$ % 1000))
cat >"$work/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: ztunnel
    static_configs: [{targets: ["$zt1", "$zt2"]}]
  - job_name: istiod
    static_configs: [{targets: ["$istiod"]}]
EOF
promtool check config "$work/prometheus.yml" >/dev/null || die "prometheus.yml: $(promtool check config "$work/prometheus.yml" 2>&1)"
ip netns exec "$n1ns" prometheus --config.file="$work/prometheus.yml" \
	--storage.tsdb.path="$work/tsdb" --web.listen-address="127.0.0.1:$port" \
	--log.level=warn >"$work/prometheus.log" 2>&1 &
prom=$!
api="http://127.0.0.1:$port"
pq() { ip netns exec "$n1ns" curl -sf --get "$api/api/v1/$1" ${2:+--data-urlencode "$2"}; }
wait_for 30 ip netns exec "$n1ns" curl -sf "$api/-/ready" >/dev/null ||
	die "prometheus not ready: $(tail -5 "$work/prometheus.log")"
ok "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') up in $n1ns (pid $prom)"

# every target scraped and healthy
wait_for 20 sh -c "ip netns exec '$n1ns' curl -sf '$api/api/v1/targets' | /usr/bin/python3 -c '
import json, sys
t = json.load(sys.stdin)[\"data\"][\"activeTargets\"]
sys.exit(0 if len(t) == 3 and all(x[\"health\"] == \"up\" for x in t) else 1)'" &&
	ok "all 3 targets (2 ztunnels, istiod-lite) are up" ||
	fail "targets: $(pq targets | head -c 2000)"

# more traffic now that Prometheus watches, so rate() has something to see
lab_exec mesh/client -- "$TESTPEER" echo-check "$server:8081" 50 10 4096 >/dev/null || fail "second traffic run"
sleep 3

q='istio_tcp_connections_opened_total{source_workload="client",destination_workload="server"}'
check_opened() {
	pq query "query=$q" >"$work/q.json" || return 1
	/usr/bin/python3 - "$work/q.json" "$zt1" "$zt2" <<'EOF'
import json, sys
res = json.load(open(sys.argv[1]))["data"]["result"]
by = {(s["metric"]["reporter"], s["metric"]["response_flags"]): s for s in res}
assert set(by) == {("source", "-"), ("destination", "-"), ("destination", "DENY")}, by.keys()
# the denied connection: Istio's response_flags="DENY", on the destination's ztunnel
deny = by[("destination", "DENY")]
assert deny["metric"]["instance"] == sys.argv[3] and float(deny["value"][1]) >= 1, deny
want = {"source_principal": "spiffe://cluster.local/ns/mesh/sa/client",
        "destination_principal": "spiffe://cluster.local/ns/mesh/sa/server",
        "source_workload_namespace": "mesh", "destination_workload_namespace": "mesh",
        "connection_security_policy": "mutual_tls", "request_protocol": "tcp", "job": "ztunnel"}
for rep, inst in (("source", sys.argv[2]), ("destination", sys.argv[3])):
    s = by[(rep, "-")]
    for k, v in dict(want, instance=inst).items():
        assert s["metric"].get(k) == v, (rep, k, s["metric"].get(k))
    assert float(s["value"][1]) >= 100, (rep, s["value"])
    print("%s: %s = %s" % (rep, s["metric"]["instance"], s["value"][1]))
EOF
}
if wait_for 15 check_opened >"$work/check.out" 2>&1; then
	ok "Prometheus has istio_tcp_connections_opened_total with Istio's labels: $(tr '\n' ' ' <"$work/check.out")"
else
	check_opened || true
	fail "istio_tcp_connections_opened_total from Prometheus: $(head -c 2000 "$work/q.json")"
fi
r=$(pq query 'query=sum(rate(istio_tcp_connections_opened_total[1m]))' | /usr/bin/python3 -c '
import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
python3 -c "import sys; sys.exit(0 if float('$r') > 0 else 1)" &&
	ok "rate(istio_tcp_connections_opened_total[1m]) = $r/s" || fail "rate of opened connections is $r"
d=$(pq query 'query=sum(meshlite_ztunnel_authz_denied_total)' | /usr/bin/python3 -c '
import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
[ "${d%.*}" -ge 1 ] 2>/dev/null && ok "meshlite_ztunnel_authz_denied_total = $d" || fail "denials: $d"
b=$(pq query 'query=count(process_resident_memory_bytes{job="ztunnel"} > 0)' | /usr/bin/python3 -c '
import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
[ "$b" = 2 ] && ok "process_resident_memory_bytes from both ztunnels" || fail "process RSS series: $b"

# -- the Grafana dashboard against ztunnel's exposition and this server
ip netns exec "$n1ns" curl -sf "http://$zt1/metrics" >"$work/zt1.prom"
ip netns exec "$n1ns" curl -sf "http://$zt2/metrics" >"$work/zt2.prom"
if ip netns exec "$n1ns" /usr/bin/python3 "$here/check_grafana.py" "$dashboard" \
	--metrics "$work/zt1.prom" --metrics "$work/zt2.prom" --promtool "$(command -v promtool)" \
	--prometheus "$api" --nonempty istio_tcp_connections_opened_total \
	--nonempty istio_tcp_received_bytes_total --nonempty process_cpu_seconds_total \
	--nonempty meshlite_ztunnel_connection_setup_seconds_bucket >"$work/grafana.out" 2>&1; then
	ok "Grafana dashboard: $(tail -1 "$work/grafana.out")"
else
	fail "Grafana dashboard: $(cat "$work/grafana.out")"
fi

finish
