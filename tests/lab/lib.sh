#!/bin/bash
# Shared helpers for the lab integration tests. Each test sources this file, calls
# lab_up with a fixture directory, and relies on the EXIT trap to tear the lab down.
# The tests need root (network namespaces, BPF): without it they FAIL, they never skip.
set -euo pipefail

: "${MESHLITE:?MESHLITE must point to the meshlite binary (set by meson)}"
: "${ZTUNNEL:?ZTUNNEL must point to the ztunnel binary (set by meson)}"
: "${TESTPEER:?TESTPEER must point to ml-testpeer (set by meson)}"
export MESHLITE_ZTUNNEL="$ZTUNNEL"
# istiod-lite, for labs with --control-plane istiod (set by meson as ISTIOD)
if [ -n "${ISTIOD:-}" ]; then export MESHLITE_ISTIOD="$ISTIOD"; fi

LAB_NAME=""
FAILS=0

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
die() { echo "FATAL: $*" >&2; exit 1; }

require_root() {
	if [ "$(id -u)" -ne 0 ]; then
		die "lab tests need root (network namespaces, tc, BPF); run 'make test' as root"
	fi
	for cmd in ip tcpdump python3 curl; do
		command -v "$cmd" >/dev/null || die "missing command '$cmd' (run scripts/install-deps.sh)"
	done
}

lab_down() {
	[ -n "$LAB_NAME" ] || return 0
	"$MESHLITE" lab down --name "$LAB_NAME" || echo "warning: lab down failed" >&2
}

on_exit() {
	local rc=$?
	if [ -n "$LAB_NAME" ] && [ $rc -ne 0 ] || [ $FAILS -ne 0 ]; then
		# Show what the ztunnels said before the evidence is deleted.
		for f in /run/meshlite/"$LAB_NAME"/node-*/ztunnel.log /run/meshlite/"$LAB_NAME"/istiod/istiod.log; do
			[ -f "$f" ] && { echo "--- $f (tail)"; tail -n 30 "$f"; }
		done
	fi
	lab_down
	exit $rc
}

# lab_up NAME FIXTURE_DIR [extra args]
lab_up() {
	LAB_NAME="$1"
	shift
	trap on_exit EXIT
	"$MESHLITE" lab down --name "$LAB_NAME" >/dev/null 2>&1 || true
	"$MESHLITE" lab up --name "$LAB_NAME" "$@"
}

status_json() { "$MESHLITE" lab status --name "$LAB_NAME" --json; }

# pod_ip NS/POD
pod_ip() {
	status_json | python3 -c '
import json, sys
ns, name = sys.argv[1].split("/")
for p in json.load(sys.stdin)["pods"]:
    if p["namespace"] == ns and p["name"] == name:
        print(p["ip"]); break
else:
    sys.exit("no pod " + sys.argv[1])' "$1"
}

# node_field NODE KEY  (netns, ip, ztunnel.metrics, ...)
node_field() {
	status_json | python3 -c '
import json, sys
node, key = sys.argv[1], sys.argv[2]
for n in json.load(sys.stdin)["nodes"]:
    if n["name"] == node:
        v = n
        for k in key.split("."):
            v = v[k]
        print(v); break
else:
    sys.exit("no node " + node)' "$1" "$2"
}

lab_exec() { "$MESHLITE" lab exec --name "$LAB_NAME" "$@"; }

# metric NODE NAME LABEL_FILTER...  -> sum of matching series (0 if none)
metric() {
	local node=$1 name=$2
	shift 2
	local ns addr
	ns=$(node_field "$node" netns)
	addr=$(node_field "$node" ztunnel.metrics)
	ip netns exec "$ns" curl -sf "http://$addr/metrics" | python3 -c '
import re, sys
name, filters = sys.argv[1], sys.argv[2:]
total = 0
for line in sys.stdin:
    if not line.startswith(name + "{") and not line.startswith(name + " "):
        continue
    if all(f in line for f in filters):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))' "$name" "$@"
}

# wait_for SECONDS CMD...  retries CMD until it succeeds
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}

finish() {
	if [ $FAILS -ne 0 ]; then
		echo "$FAILS check(s) failed" >&2
		exit 1
	fi
	echo "all checks passed"
}
