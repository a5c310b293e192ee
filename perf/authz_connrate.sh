#!/bin/bash
# New connections per second through the mesh while the destination's ztunnel holds 0, 1
# and 10,000 AuthorizationPolicies (issue 5: "the connection-rate change with 10,000
# policies loaded").
#
# Three two-node labs with the istiod-lite control plane, side by side, identical but for
# the policies node-2's ztunnel holds: bench/client on node-1, an echo server (bench/server,
# app=server) on node-2. Every connection is one request: connect, send 64 bytes,
# half-close, read the echo back to EOF, close (ml-testpeer echo-check, PARALLEL at a time,
# every byte checked), so each one costs an HBONE stream on a pooled tunnel and one
# authorization check at node-2's inbound.
#   0      no policy at all (the check finds no candidate: allow)
#   1      bench/allow-client only: ALLOW selecting the server, 10 rules of
#          "principals [one] and ports [one]"; only the last rule admits the client
#   10000  the same ALLOW plus 9,999 policies of 10 rules that do not select the server:
#          selector policies in bench for other apps, and selector/namespace-wide ALLOW and
#          DENY policies in 100 other namespaces (the shape of perf/authz_bench.c)
# Policies go through the real path (lab apply -> istiod-lite store -> conversion ->
# Delta ADS -> node-2's ztunnel); measuring starts once node-2's /config_dump lists them
# all, and `meshlite authz explain` checks that the verdict is decided by rule 9 of the
# ALLOW. The labs are measured in turns (RUNS rounds, the order rotating each round), so
# the load of a shared machine hits all three alike; the ratios are the medians of the
# per-round ratios. A run with any failed connection aborts.
#
# Usage: perf/authz_connrate.sh BUILD_DIR    (root; a release build: meson setup
#        --buildtype=release; env RUNS (9), CONNS (5000), PARALLEL (16), POLICIES (10000))
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
meshlite=$build/cli/meshlite
export MESHLITE_ZTUNNEL=$build/ztunnel/ztunnel
export MESHLITE_ISTIOD=$build/istiod-lite/istiod-lite
testpeer=${TESTPEER:-$build/tests/tools/ml-testpeer}
runs=${RUNS:-9}
conns=${CONNS:-5000}
parallel=${PARALLEL:-16}
npol=${POLICIES:-10000}
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces, BPF)" >&2; exit 1; }
for f in "$meshlite" "$MESHLITE_ZTUNNEL" "$MESHLITE_ISTIOD" "$testpeer"; do
	[ -x "$f" ] || { echo "$0: $f is missing: build $build first" >&2; exit 1; }
done
python3 -c '
import json, sys
opts = {o["name"]: o["value"] for o in json.load(open(sys.argv[1]))}
sys.exit(opts.get("buildtype") != "release" or opts.get("b_sanitize") not in ("none", None))' \
	"$build/meson-info/intro-buildoptions.json" 2>/dev/null ||
	echo "warning: $build is not a release build without sanitizers; its numbers are not the ones to report" >&2

work=$(mktemp -d)
labs=("azcr0-$$" "azcr1-$$" "azcrn-$$")
cleanup() {
	for l in "${labs[@]}"; do "$meshlite" lab down --name "$l" >/dev/null 2>&1 || true; done
	rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/up" "$work/others"
cat >"$work/up/pods.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: bench, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: bench}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: server, namespace: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers:
  - {name: sleep, command: ["sleep", "infinity"]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: server}}
spec:
  nodeName: node-2
  serviceAccountName: server
  containers:
  - {name: echo, command: ["$testpeer", "echo-server", "8080"]}
EOF
# The policies: allow.yaml (the one that selects the server), namespaces.yaml and others/
# (npol - 1 more, in files of 1,000: the lab reads YAML files of up to 4 MiB).
python3 - "$work" "$npol" <<'PY'
import sys
work, n = sys.argv[1], int(sys.argv[2])
RULES, OTHER_NS = 10, 100

def rules(i, admit_last):
    out = []
    for r in range(RULES):
        last = admit_last and r == RULES - 1
        p = ("cluster.local/ns/bench/sa/client" if last
             else "cluster.local/ns/client-%d/sa/c%d-%d" % (i % 97, i, r))
        port = 8080 if last else 10000 + (i * RULES + r) % 50000
        out.append('  - from:\n    - source:\n        principals: ["%s"]\n'
                   '    to:\n    - operation:\n        ports: ["%d"]\n' % (p, port))
    return "".join(out)

def policy(name, ns, action, selector, i, admit_last=False):
    sel = "  selector:\n    matchLabels: {app: %s}\n" % selector if selector else ""
    return ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {name: %s, namespace: %s}\nspec:\n%s  action: %s\n  rules:\n%s---\n"
            % (name, ns, sel, action, rules(i, admit_last)))

with open(work + "/allow.yaml", "w") as f:
    f.write(policy("allow-client", "bench", "ALLOW", "server", 0, admit_last=True))
with open(work + "/namespaces.yaml", "w") as f:
    for k in range(OTHER_NS):
        f.write("apiVersion: v1\nkind: Namespace\nmetadata: {name: other-%d}\n---\n" % k)
files = {}
for i in range(1, n):
    k = i // 1000
    if k not in files:
        files[k] = open(work + "/others/policies-%03d.yaml" % k, "w")
    action = "ALLOW" if i % 3 else "DENY"
    if i % 10 == 0:
        # the server's own namespace, other apps: never selects bench/server
        doc = policy("p-%d" % i, "bench", action, "app-%d" % i, i)
    else:
        sel = "app-%d" % i if i % 4 else None  # every 4th is namespace-wide
        doc = policy("p-%d" % i, "other-%d" % (i % OTHER_NS), action, sel, i)
    files[k].write(doc)
for f in files.values():
    f.close()
PY

declare -A server n2 admin2
lab_up() { # LAB: up, wider port range, server answering
	local l=$1 status client_netns
	echo "lab up $l (2 nodes, istiod-lite)" >&2
	"$meshlite" lab up --name "$l" --nodes 2 --control-plane istiod "$work/up" >/dev/null 2>&1 ||
		{ echo "lab up $l failed" >&2; exit 1; }
	status=$("$meshlite" lab status --name "$l" --json)
	field() { printf '%s' "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
	server[$l]=$(field "[p['ip'] for p in d['pods'] if p['name']=='server'][0]")
	client_netns=$(field "[p['netns'] for p in d['pods'] if p['name']=='client'][0]")
	n2[$l]=$(field "[n['netns'] for n in d['nodes'] if n['name']=='node-2'][0]")
	admin2[$l]=$(field "[n['ztunnel']['admin'] for n in d['nodes'] if n['name']=='node-2'][0]")
	# Hundreds of thousands of short connections: the client closes first and keeps each
	# port in TIME_WAIT for 60 s, as node-2's ztunnel does for its upstream side. Widen the
	# port range and reuse TIME_WAIT ports, in the lab's own namespaces only.
	for ns in "$client_netns" "${n2[$l]}"; do
		ip netns exec "$ns" sysctl -q -w net.ipv4.ip_local_port_range="1024 65535" \
			net.ipv4.tcp_tw_reuse=1
	done
	for _ in $(seq 50); do
		"$meshlite" lab exec --name "$l" bench/client -- "$testpeer" echo-check \
			"${server[$l]}:8080" 1 1 64 >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	echo "$l: bench/server does not answer" >&2
	exit 1
}
policies_on_node2() { # LAB
	ip netns exec "${n2[$1]}" curl -sf "http://${admin2[$1]}/config_dump" |
		python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("policies", [])))'
}
wait_policies() { # LAB N: until node-2's ztunnel holds N policies (60 s)
	local t0=$SECONDS
	until [ "$(policies_on_node2 "$1")" = "$2" ]; do
		[ $((SECONDS - t0)) -lt 60 ] ||
			{ echo "$1: node-2 holds $(policies_on_node2 "$1") policies, want $2" >&2; exit 1; }
		sleep 0.5
	done
	echo "$1: node-2's ztunnel holds $2 policies" >&2
}
apply() { # LAB FILE|DIR
	"$meshlite" lab apply --name "$1" -f "$2" >/dev/null || { echo "lab apply $2 failed" >&2; exit 1; }
}
rate() { # LAB -> connections/s of one run
	local out
	out=$("$meshlite" lab exec --name "$1" bench/client -- "$testpeer" echo-check \
		"${server[$1]}:8080" "$conns" "$parallel" 64) ||
		{ echo "$1: echo-check failed: $out" >&2; exit 1; }
	printf '%s' "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
m = re.match(r"ok (\d+)/(\d+) connections byte-exact \(0 failed\) in ([\d.]+) s", t)
if not m:
    sys.exit("echo-check: " + t)
print("%.0f" % (int(m.group(1)) / float(m.group(3))))'
}

for l in "${labs[@]}"; do lab_up "$l"; done
l0=${labs[0]} l1=${labs[1]} ln=${labs[2]}
apply "$l1" "$work/allow.yaml"
apply "$ln" "$work/allow.yaml"
apply "$ln" "$work/namespaces.yaml"
t0=$SECONDS
apply "$ln" "$work/others"
echo "$ln: lab apply of $((npol - 1)) more policies took $((SECONDS - t0)) s" >&2
wait_policies "$l0" 0
wait_policies "$l1" 1
wait_policies "$ln" "$npol"
for l in "$l1" "$ln"; do
	rc=0
	"$meshlite" authz explain --name "$l" --src bench/client --dst bench/server --port 8080 \
		>"$work/explain.txt" 2>&1 || rc=$?
	if [ $rc != 0 ] || ! grep -q 'allowed by: bench/allow-client (rule 9)' "$work/explain.txt"; then
		echo "$l: the check is not the one intended (exit $rc):" >&2
		cat "$work/explain.txt" >&2
		exit 1
	fi
done

declare -A runs_of
for l in "${labs[@]}"; do v=$(rate "$l"); done # warm-up: tunnels, certificates, caches
for r in $(seq "$runs"); do
	line="round $r:"
	for k in 0 1 2; do
		l=${labs[$(((k + r) % 3))]}
		v=$(rate "$l")
		runs_of[$l]="${runs_of[$l]:-} $v"
		line="$line $l=$v"
	done
	echo "$line conn/s" >&2
done

python3 - "$npol" "${runs_of[$l0]}" "${runs_of[$l1]}" "${runs_of[$ln]}" <<'PY'
import statistics as st, sys
npol = int(sys.argv[1])
z, one, n = ([float(x) for x in a.split()] for a in sys.argv[2:5])
def ratio(a, b):
    return "%.3f" % st.median([x / y for x, y in zip(a, b)])
print("| policies held by node-2 | candidates for the server | new conn/s (median) | runs "
      "| ratio to 0 | ratio to 1 |")
print("|---|---|---|---|---|---|")
rows = (("0", "none (allow)", z), ("1", "the ALLOW (rule 9 admits)", one),
        ("{:,}".format(npol), "the ALLOW (rule 9 admits)", n))
for name, cand, v in rows:
    print("| %s | %s | %.0f | %s | %s | %s |" % (name, cand, st.median(v),
          " ".join("%.0f" % x for x in v), ratio(v, z), ratio(v, one)))
# A run far below its lab's median is a stall (a connection waiting seconds), not the cost
# of a check: say so, the medians above do not hide it from a reader.
for name, _, v in rows:
    for i, x in enumerate(v):
        if x < st.median(v) / 4:
            print("warning: lab %s, round %d: %.0f conn/s, under a quarter of its median "
                  "(stalled connections?)" % (name, i + 1, x), file=sys.stderr)
PY
echo "($runs rounds of $conns connections per lab, $parallel at a time, 64-byte echo each;" \
	"$(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%F))"
