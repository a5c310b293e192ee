#!/bin/bash
# What eBPF redirection costs (issue 4): the same client, server and ztunnel relay, reached
#   direct     no ztunnel at all (baseline)
#   captured   an enrolled pod connects to the server's address; capture_pod hands the SYN
#              to ztunnel's transparent 15001 (bpf_sk_assign), ztunnel relays it
#   explicit   a pod outside the mesh asks ztunnel's SOCKS5 listener (15080) for the server;
#              same relay, no eBPF on the way in (but one SOCKS5 round trip per connection)
# The server is outside the mesh, so ztunnel's relay is plain TCP on both paths: the
# difference between captured and explicit is the redirection, not TLS.
# Connection rate: one HTTP/1.1 request per connection, 4 workers, 5 s. Request latency:
# 2,000 sequential requests on one keep-alive connection (1 KiB responses). RUNS (3)
# repetitions, medians. Usage: perf/redirect-bench.sh BUILD_DIR (root; release build).
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
meshlite=$build/cli/meshlite
export MESHLITE_ZTUNNEL=$build/ztunnel/ztunnel
testpeer=${TESTPEER:-$build/tests/tools/ml-testpeer}
runs=${RUNS:-3}
secs=${SECONDS_PER_RUN:-5}
name=perfredir$$

fixture=$(mktemp -d)
sed "s|\${TESTPEER}|$testpeer|g" "$here/redirect/pods.yaml" >"$fixture/pods.yaml"
trap '"$meshlite" lab down --name $name >/dev/null 2>&1; rm -rf "$fixture"' EXIT
"$meshlite" lab up --name $name "$fixture" >/dev/null
status=$("$meshlite" lab status --name $name --json)
server=$(printf '%s' "$status" | python3 -c "import json,sys; print([p['ip'] for p in json.load(sys.stdin)['pods'] if p['namespace']=='plain' and p['name']=='server'][0])")
socks=10.200.0.1:15080
ex() { "$meshlite" lab exec --name $name "$@"; }
for _ in $(seq 50); do
	ex plain/client -- "$testpeer" latency "$server:8080" 1 >/dev/null 2>&1 && break
	sleep 0.2
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# path -> "conns_per_s conn_p50_us lat_p50_us lat_p99_us" (one run)
measure() {
	local client=$1 via=${2:-} r l
	r=$(ex "$client" -- "$testpeer" rate "$server:8080" "$secs" 4 $via)
	l=$(ex "$client" -- "$testpeer" latency "$server:8080" 2000 $via)
	echo "$(echo "$r" | awk '{print $2, $4}') $(echo "$l" | awk '{print $2, $6}')"
}
declare -A res
for path in direct captured explicit; do
	case $path in
	direct) args=(plain/client) ;;
	captured) args=(mesh/client) ;;
	explicit) args=(plain/client "$socks") ;;
	esac
	c=(); cp=(); lp=(); l9=()
	for _ in $(seq "$runs"); do
		read -r a b d e < <(measure "${args[@]}")
		c+=("$a"); cp+=("$b"); lp+=("$d"); l9+=("$e")
	done
	res[$path]="$(printf '%s\n' "${c[@]}" | median) $(printf '%s\n' "${cp[@]}" | median) $(printf '%s\n' "${lp[@]}" | median) $(printf '%s\n' "${l9[@]}" | median)"
done
# the captured path really was captured, the explicit one really went through SOCKS5
ns1=$(printf '%s' "$status" | python3 -c "import json,sys; print([n['netns'] for n in json.load(sys.stdin)['nodes'] if n['name']=='node-1'][0])")
log1=$(printf '%s' "$status" | python3 -c "import json,sys; print([n['ztunnel']['log'] for n in json.load(sys.stdin)['nodes'] if n['name']=='node-1'][0])")
nc=$(grep -c "direction=outbound src.addr=10.244.1.2:" "$log1" || true)
echo "node-1 ztunnel relayed $nc outbound connections from the enrolled client (and $(grep -c 'direction=outbound src.addr=10.244.1.3:' "$log1" || true) from the SOCKS5 client)" >&2

echo
echo "| path | connections/s | connect+request p50 µs | keep-alive request p50 µs | p99 µs |"
echo "|---|---|---|---|---|"
for path in direct captured explicit; do
	read -r a b d e <<<"${res[$path]}"
	echo "| $path | $a | $b | $d | $e |"
done
read -r ca cb cd ce <<<"${res[captured]}"
read -r ea eb ed ee <<<"${res[explicit]}"
read -r da db dd de <<<"${res[direct]}"
python3 - "$ca" "$ea" "$da" "$cd" "$ed" "$dd" <<'PY'
import sys
ca, ea, da, cd, ed, dd = map(float, sys.argv[1:])
print()
print("captured / explicit: connections/s %.2f, keep-alive p50 %.2f" % (ca / ea, cd / ed))
print("captured / direct:   connections/s %.2f, keep-alive p50 %.2f" % (ca / da, cd / dd))
PY
