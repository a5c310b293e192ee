#!/bin/bash
# A first side-by-side measurement on one machine: the same pod pair across two lab nodes,
# once outside the mesh (direct) and once through two ztunnels (HBONE over mTLS).
#   iperf3 single stream (5 s) and wrk keep-alive (1 thread, 16 connections, 5 s, 1 KiB
#   responses), 3 runs each, medians. The full suite with peer proxies is perf/run (issue 6).
# Usage: perf/quick-compare.sh BUILD_DIR   (root; builds nothing itself)
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
meshlite=$build/cli/meshlite
export MESHLITE_ZTUNNEL=$build/ztunnel/ztunnel
testpeer=${TESTPEER:-$build/tests/tools/ml-testpeer}
runs=${RUNS:-3}
name=perfq
for c in iperf3 wrk python3; do command -v $c >/dev/null || { echo "missing $c" >&2; exit 1; }; done

fixture=$(mktemp -d)
sed "s|\${TESTPEER}|$testpeer|g" "$here/quick/pods.yaml" >"$fixture/pods.yaml"
"$meshlite" lab down --name $name >/dev/null 2>&1 || true
trap '"$meshlite" lab down --name $name >/dev/null 2>&1; rm -rf "$fixture"' EXIT
"$meshlite" lab up --name $name "$fixture" >/dev/null
status=$("$meshlite" lab status --name $name --json)
ip_of() { printf '%s' "$status" | python3 -c "import json,sys; print([p['ip'] for p in json.load(sys.stdin)['pods'] if p['namespace']=='$1' and p['name']=='server'][0])"; }
# wait until both servers answer (their processes start after ztunnel is ready)
for ns in plain mesh; do
	for _ in $(seq 50); do
		"$meshlite" lab exec --name $name "$ns/client" -- curl -sf -o /dev/null --max-time 1 \
			"http://$(ip_of $ns):8080/" && break
		sleep 0.2
	done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
iperf() { # ns ip -> Gbit/s
	"$meshlite" lab exec --name $name "$1/client" -- iperf3 -c "$2" -p 5201 -t 5 -J |
		python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}
wrk_rps() { # ns ip -> "rps p50ms p99ms"
	"$meshlite" lab exec --name $name "$1/client" -- wrk -t1 -c16 -d5s --latency "http://$2:8080/" |
		python3 -c '
import re, sys
t = sys.stdin.read()
if "Requests/sec" not in t:
    sys.exit("wrk failed:\n" + t)
def ms(s):
    v, u = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s*50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s*99%\s+(\S+)", t, re.M).group(1))
print("%.0f %.3f %.3f" % (rps, p50, p99))'
}

declare -A res
for ns in plain mesh; do
	ip=$(ip_of $ns)
	g=(); r=(); p5=(); p9=()
	for _ in $(seq "$runs"); do
		g+=("$(iperf $ns "$ip")")
		read -r a b c < <(wrk_rps $ns "$ip")
		r+=("$a"); p5+=("$b"); p9+=("$c")
	done
	res[$ns.gbps]=$(printf '%s\n' "${g[@]}" | median)
	res[$ns.rps]=$(printf '%s\n' "${r[@]}" | median)
	res[$ns.p50]=$(printf '%s\n' "${p5[@]}" | median)
	res[$ns.p99]=$(printf '%s\n' "${p9[@]}" | median)
done
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }
echo "| path | iperf3 1 stream Gbit/s | wrk -c16 req/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
echo "| direct (no mesh) | ${res[plain.gbps]} | ${res[plain.rps]} | ${res[plain.p50]} | ${res[plain.p99]} |"
echo "| meshlite (2 ztunnels, HBONE mTLS) | ${res[mesh.gbps]} | ${res[mesh.rps]} | ${res[mesh.p50]} | ${res[mesh.p99]} |"
echo "| ratio mesh / direct | $(ratio "${res[mesh.gbps]}" "${res[plain.gbps]}") | $(ratio "${res[mesh.rps]}" "${res[plain.rps]}") | | |"
echo "($runs runs each, medians; $(nproc) cores, $(uname -r), $(date -u +%F))"
