#!/bin/sh
# The README's demo (`make demo`): a two-node lab from examples/demo, a request from the
# client pod to the server pod through the mesh, and the access log lines of both ztunnels
# showing the SPIFFE identities on each end. Always removes the lab again.
#
# Usage: scripts/demo.sh BUILD_DIR    (run as root: the lab creates network namespaces)
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (the lab creates network namespaces): sudo $0 $1" >&2
	exit 1
fi
build=$(cd "$1" && pwd) || { echo "demo: no build directory $1" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
meshlite="$build/cli/meshlite"
name=demo
if [ ! -x "$meshlite" ]; then
	echo "demo: $meshlite is missing: build first (ninja -C $1)" >&2
	exit 1
fi

lab() {
	"$meshlite" lab "$@"
}

# Leftovers of an interrupted demo first, then make sure this one is removed however it ends.
lab down --name "$name" >/dev/null 2>&1 || true
trap 'echo; echo "== removing the lab"; lab down --name "$name" || echo "demo: lab down failed; run: $meshlite lab down --name $name" >&2' EXIT
trap 'exit 130' INT TERM

echo "== meshlite lab up --name $name examples/demo"
lab up --name "$name" "$root/examples/demo"

status=$(lab status --name "$name" --json)
field() {
	printf '%s' "$status" | python3 -c "import json, sys; s = json.load(sys.stdin); print($1)"
}
server_ip=$(field '[p["ip"] for p in s["pods"] if p["namespace"] == "demo" and p["name"] == "server"][0]')
logs=$(field '" ".join(n["ztunnel"]["log"] for n in s["nodes"])')

# The server needs a moment to bind after its process started (loopback is not captured).
for _ in 1 2 3 4 5 6 7 8 9 10; do
	lab exec --name "$name" demo/server -- curl -s -o /dev/null --max-time 1 \
		http://127.0.0.1:8080/ && break
	sleep 0.2
done

echo
echo "== demo/client -> http://$server_ip:8080/"
rc=0
lab exec --name "$name" demo/client -- curl -sS --max-time 5 "http://$server_ip:8080/" || rc=$?
[ "$rc" -eq 0 ] || echo "demo: the request failed (curl exit status $rc)" >&2

# ztunnel logs one line per connection with scope "access" and the peers' identities.
sleep 1
for log in $logs; do
	node=$(basename "$(dirname "$log")")
	echo
	echo "== ztunnel on $node: access log"
	grep -E '(^|[[:space:]"])access([[:space:]"]|$)' "$log" |
		grep -E 'src\.identity|dst\.identity' ||
		echo "(no access log lines in $log)"
done
exit "$rc"
