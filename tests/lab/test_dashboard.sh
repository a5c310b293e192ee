#!/bin/bash
# Issue 6 part 4/5: the node dashboard in a real browser. With live traffic between two lab
# nodes, Debian's chromium (headless, run inside node-1's network namespace, where the admin
# port is) loads ztunnel's /dashboard:
#  - no console message and no script error from the page (it logs nothing when healthy)
#  - the charts update: several samples, connections opened and bytes moving during the run
#  - the top-connections table names the workloads and SPIFFE identities
#  - a screenshot is saved as a test artifact (path printed)
# and `meshlite dashboard` prints the URL; `--forward 0` serves the page on 127.0.0.1 here.
. "$(dirname "$0")/lib.sh"
require_root
command -v chromium >/dev/null || die "missing command 'chromium' (run scripts/install-deps.sh)"

here=$(cd "$(dirname "$0")" && pwd)
artifacts=${LAB_ARTIFACTS:-$here/artifacts}
mkdir -p "$artifacts"
work=$(mktemp -d)
pids=()
cleanup_dash() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
# keep the test's exit status for on_exit (lib.sh), which reads $?
trap 'rc=$?; cleanup_dash; set +e; (exit $rc); on_exit' EXIT

sed "s|\${TESTPEER}|$TESTPEER|g" "$here/fixtures/datapath/pods.yaml" >"$work/pods.yaml"
lab_up "t-dash-$$" --nodes 2 "$work"
trap 'rc=$?; cleanup_dash; set +e; (exit $rc); on_exit' EXIT # lab_up set its own

server=$(pod_ip mesh/server)
wait_for 10 lab_exec mesh/client -- "$TESTPEER" probe "$server:8081" >/dev/null ||
	die "server pod never answered"
n1ns=$(node_field node-1 netns)
admin=$(node_field node-1 ztunnel.admin)

# -- meshlite dashboard NODE prints the URL of the node's admin port
url=$("$MESHLITE" dashboard --name "$LAB_NAME" node-1 2>"$work/hint")
[ "$url" = "http://$admin/dashboard" ] && ok "meshlite dashboard node-1 -> $url" ||
	fail "meshlite dashboard printed '$url', want http://$admin/dashboard"
grep -q "ip netns exec $n1ns" "$work/hint" && ok "it says how to open it from the node's namespace" ||
	fail "no namespace hint: $(cat "$work/hint")"
if "$MESHLITE" dashboard --name "$LAB_NAME" node-9 >/dev/null 2>"$work/err"; then
	fail "an unknown node was accepted"
else
	grep -q "node-1" "$work/err" && ok "an unknown node fails and lists the nodes" || fail "$(cat "$work/err")"
fi

# -- live traffic while the browser watches: short connections in a loop, and one long
# stream that moves bytes the whole time (the top connection)
(
	c=
	trap '[ -z "$c" ] || kill "$c" 2>/dev/null; exit 0' TERM
	while :; do
		"$MESHLITE" lab exec --name "$LAB_NAME" mesh/client -- "$TESTPEER" echo-check \
			"$server:8081" 400 8 8192 >/dev/null 2>&1 &
		c=$!
		wait "$c" || sleep 0.2
	done
) &
pids+=($!)
# lab exec becomes the command: this PID is ml-testpeer's
"$MESHLITE" lab exec --name "$LAB_NAME" mesh/client -- "$TESTPEER" send "$server:8080" 200000000000 \
	>/dev/null 2>&1 &
pids+=($!)
wait_for 10 sh -c "ip netns exec '$n1ns' curl -sf 'http://$admin/dashboard/data?top=3' | grep -q '\"bytes_sent\":[1-9]'" ||
	die "no traffic through node-1's ztunnel"

# -- the JSON the page charts
ip netns exec "$n1ns" curl -sf "http://$admin/dashboard/data?top=3" >"$work/data.json" ||
	fail "GET /dashboard/data failed"
if /usr/bin/python3 - "$work/data.json" <<'EOF'; then ok "/dashboard/data: counters, setup histogram, process, top connections"; else fail "/dashboard/data: $(cat "$work/data.json")"; fi
import json, sys
d = json.load(open(sys.argv[1]))
assert d["node"] == "node-1", d["node"]
assert d["connections"]["opened"] > 0 and d["connections"]["active"] > 0
assert d["bytes"]["received"] > 0
assert d["setup_seconds"]["count"] > 0 and len(d["setup_seconds"]["le"]) == len(d["setup_seconds"]["counts"])
assert d["process"]["rss_bytes"] > 0 and d["process"]["cpu_seconds"] > 0
top = d["top_connections"]
assert 1 <= len(top) <= 3
big = top[0]
assert big["src_identity"] == "spiffe://cluster.local/ns/mesh/sa/client", big
assert big["dst_identity"] == "spiffe://cluster.local/ns/mesh/sa/server", big
assert big["src_workload"] == "client" and big["dst_workload"] == "server", big
sizes = [c["bytes_sent"] + c["bytes_recv"] for c in top]
assert sizes == sorted(sizes, reverse=True), sizes
EOF

# -- chromium inside node-1's namespace (only lab addresses are reachable from there)
chromium_run() {
	local prof
	prof=$(mktemp -d -p "$work")
	ip netns exec "$n1ns" timeout 120 chromium --headless --no-sandbox --disable-gpu \
		--no-first-run --no-default-browser-check --disable-background-networking \
		--disable-component-update --disable-sync --disable-extensions \
		--disable-default-apps --mute-audio --user-data-dir="$prof" \
		--enable-logging=stderr --v=0 --window-size=1400,1250 \
		--virtual-time-budget=15000 "$@"
}
chromium_run --dump-dom "$url" >"$work/dom.html" 2>"$work/chromium.log" ||
	fail "chromium --dump-dom failed: $(tail -5 "$work/chromium.log")"
body=$(grep -o '<body[^>]*>' "$work/dom.html" || true)
echo "page state: $body"
attr() { echo "$body" | sed -n "s/.* $1=\"\([^\"]*\)\".*/\1/p"; }
# console messages are logged as "INFO:CONSOLE(...)" lines; the page prints none
if grep -q ':CONSOLE' "$work/chromium.log"; then
	fail "console messages from the page: $(grep ':CONSOLE' "$work/chromium.log" | head -5)"
else
	ok "no console messages"
fi
[ "$(attr data-errors)" = 0 ] && ok "no script errors" ||
	fail "script errors: $(sed -n '/<pre id="errors">/,/<\/pre>/p' "$work/dom.html")"
[ "$(attr data-fetch-errors)" = 0 ] && ok "every poll of /dashboard/data succeeded" ||
	fail "$(attr data-fetch-errors) failed polls"
samples=$(attr data-samples)
[ "${samples:-0}" -ge 5 ] && ok "$samples samples charted" || fail "only '${samples}' samples"
[ "$(attr data-opened)" -gt 0 ] && [ "$(attr data-opened-delta)" -gt 0 ] &&
	ok "connections opened: $(attr data-opened), +$(attr data-opened-delta) while the page ran" ||
	fail "opened $(attr data-opened), delta $(attr data-opened-delta)"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 and float(sys.argv[2]) > 0 else 1)" \
	"$(attr data-max-opened-rate)" "$(attr data-max-rx-rate)" &&
	ok "rates charted: peak $(attr data-max-opened-rate) conn/s, $(attr data-max-rx-rate) B/s in" ||
	fail "no rate: opened $(attr data-max-opened-rate)/s, in $(attr data-max-rx-rate) B/s"
charts=$(grep -o 'data-chart="[^"]*" data-points="[0-9]*"' "$work/dom.html" || true)
nchart=$(echo "$charts" | grep -c 'data-points="[1-9]' || true)
[ "$nchart" -eq 7 ] && ok "all 7 charts drew points" || fail "charts with points: $nchart of 7: $charts"
grep -q 'spiffe://cluster.local/ns/mesh/sa/client' "$work/dom.html" &&
	grep -q 'spiffe://cluster.local/ns/mesh/sa/server' "$work/dom.html" &&
	ok "the top-connections table names both identities" ||
	fail "identities missing from the table"

shot="$artifacts/dashboard-node-1.png"
rm -f "$shot"
chromium_run --screenshot="$shot" "$url" >/dev/null 2>"$work/chromium-shot.log" || true
if [ -s "$shot" ] && [ "$(head -c 8 "$shot" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] &&
	[ "$(stat -c %s "$shot")" -gt 20000 ]; then
	ok "screenshot saved: $shot ($(stat -c %s "$shot") bytes)"
else
	fail "no screenshot at $shot: $(tail -5 "$work/chromium-shot.log")"
fi

# -- --forward: the page from this namespace, on loopback
"$MESHLITE" dashboard --name "$LAB_NAME" --forward 0 node-1 >"$work/fwd.out" 2>"$work/fwd.err" &
fwd=$!
pids+=($fwd)
wait_for 5 grep -q '^http://127.0.0.1:' "$work/fwd.out" || fail "forwarder printed no URL: $(cat "$work/fwd.err")"
furl=$(head -1 "$work/fwd.out")
if curl -sf -o "$work/fwd.html" "$furl" && grep -q '<!DOCTYPE html>' "$work/fwd.html" &&
	curl -sf -o "$work/fwd.json" "${furl}/data" && grep -q '"node":"node-1"' "$work/fwd.json"; then
	ok "--forward serves the page and its data at $furl"
else
	fail "--forward: $furl did not serve the dashboard ($(cat "$work/fwd.err"))"
fi
# many requests at once through the forwarder
if seq 1 40 | xargs -P 20 -I{} curl -sf -o /dev/null "${furl}/data" 2>"$work/par.err"; then
	ok "40 concurrent requests through the forwarder"
else
	fail "concurrent requests through the forwarder failed: $(cat "$work/par.err")"
fi
kill "$fwd"
rc=0
wait "$fwd" 2>/dev/null || rc=$?
[ "$rc" -eq 0 ] && ok "the forwarder exits cleanly on SIGTERM" || fail "forwarder exit status $rc"

finish
