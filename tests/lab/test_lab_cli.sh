#!/bin/bash
# `meshlite lab up / exec / status --json / down` behave as documented, and `down` leaves
# no namespace, veth, tc filter, pinned BPF object or process behind.
. "$(dirname "$0")/lib.sh"
require_root

before_netns=$(ip netns list | sort)
before_links=$(ip -o link show | awk -F': ' '{print $2}' | sort)
before_pins=$(find /sys/fs/bpf -maxdepth 3 2>/dev/null | sort)

fixture=$(mktemp -d)
cp "$(dirname "$0")/../../examples/demo/"*.yaml "$fixture/"
lab_up t-cli --nodes 3 "$fixture"
rm -rf "$fixture"

json=$(status_json)
echo "$json" | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert len(s["nodes"]) == 3, "want 3 nodes"
names = [n["name"] for n in s["nodes"]]
assert names == ["node-1", "node-2", "node-3"], names
for n in s["nodes"]:
    for k in ("name", "netns", "ip"):
        assert n.get(k), (n, k)
    for k in ("admin", "metrics", "readiness"):
        v = n["ztunnel"][k]
        host, port = v.rsplit(":", 1)
        assert host == n["ip"] and port.isdigit(), v
assert s["pods"], "no pods"
for p in s["pods"]:
    for k in ("namespace", "name", "node", "netns", "ip"):
        assert p.get(k), (p, k)
print("status --json has the documented keys")' && ok "status --json shape" || fail "status --json: $json"

# exec passes output through and returns the command's exit status
out=$(lab_exec demo/client -- sh -c 'echo hello-from-$HOSTNAME; exit 7') && rc=0 || rc=$?
[ "$rc" -eq 7 ] && ok "exec exit status passed through" || fail "exec exit status $rc, want 7"
[ "$out" = "hello-from-client" ] && ok "exec output passed through" || fail "exec output '$out'"

# each node's ztunnel answers readiness
for n in node-1 node-2 node-3; do
	ns=$(node_field $n netns)
	addr=$(node_field $n ztunnel.readiness)
	ip netns exec "$ns" curl -sf "http://$addr/healthz/ready" >/dev/null && ok "$n ztunnel ready" ||
		fail "$n ztunnel not ready"
done

# collect the PIDs the lab started, then take it down
pids=$(echo "$json" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(" ".join(str(n["ztunnel"]["pid"]) for n in s["nodes"]) + " " +
      " ".join(str(c["pid"]) for p in s["pods"] for c in p["containers"]))')
"$MESHLITE" lab down --name t-cli
LAB_NAME=""
"$MESHLITE" lab down --name t-cli && ok "second down is a no-op" || fail "second down failed"

for pid in $pids; do
	[ -d /proc/$pid ] && [ "$(awk '{print $3}' /proc/$pid/stat)" != Z ] && fail "process $pid survived down"
done
[ "$(ip netns list | sort)" = "$before_netns" ] && ok "no namespace left" || fail "namespaces left: $(ip netns list)"
[ "$(ip -o link show | awk -F': ' '{print $2}' | sort)" = "$before_links" ] && ok "no link left in the root namespace" ||
	fail "links changed in the root namespace"
[ "$(find /sys/fs/bpf -maxdepth 3 2>/dev/null | sort)" = "$before_pins" ] && ok "no BPF pin left" || fail "BPF pins left"
[ ! -e /run/meshlite/t-cli ] && ok "state dir removed" || fail "/run/meshlite/t-cli left behind"
if command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -q -i meshlite; then
	fail "iptables rules mention meshlite"
fi
finish
