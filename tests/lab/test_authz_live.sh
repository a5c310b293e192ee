#!/bin/bash
# Issue 5, live re-evaluation with the real control plane: a connection admitted under no
# policy is closed within a second of a DENY AuthorizationPolicy reaching the destination's
# ztunnel (istiod-lite -> Delta ADS), new connections are refused, and removing the policy
# lets new connections through again.
. "$(dirname "$0")/lib.sh"
require_root
: "${ISTIOD:?ISTIOD must point to the istiod-lite binary (set by meson)}"
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
sed "s|\${TESTPEER}|$TESTPEER|g" "$here/fixtures/authz-live/pods.yaml" >"$work/pods.yaml"
lab_up "t-azl-$$" --nodes 2 --control-plane istiod "$work"
rm -rf "$work"

server=$(pod_ip mesh/server)
wait_for 10 lab_exec mesh/client -- "$TESTPEER" probe "$server:8081" >/dev/null || die "server not up"
[ "$(lab_exec mesh/client -- "$TESTPEER" probe "$server:8081")" = data ] && ok "allowed before any policy" ||
	fail "no connection before any policy"

out=$(mktemp)
lab_exec mesh/client -- /usr/bin/python3 "$here/longconn.py" "$server" 8081 >"$out" 2>&1 &
lc=$!
wait_for 5 grep -q '^open' "$out" || die "long connection did not open: $(cat "$out")"
ok "long-lived connection open"

t0=$(date +%s.%N)
"$MESHLITE" lab apply --name "$LAB_NAME" -f "$here/fixtures/authz-live/deny.yaml" >/dev/null ||
	die "lab apply of the DENY policy failed"
if wait_for 5 grep -q '^closed' "$out"; then
	t1=$(awk '/^closed/ {print $2}' "$out")
	dt=$(python3 -c "print('%.2f' % ($t1 - $t0))")
	python3 -c "import sys; sys.exit(0 if $t1 - $t0 <= 2.0 else 1)" &&
		ok "existing connection closed ${dt} s after the DENY was applied ($(grep closed "$out"))" ||
		fail "existing connection closed only after ${dt} s"
else
	fail "existing connection still open 5 s after the DENY: $(cat "$out")"
fi
wait "$lc" 2>/dev/null || true
rm -f "$out"

r=$(lab_exec mesh/client -- "$TESTPEER" probe "$server:8081")
[ "$r" = reset ] && ok "new connection refused under DENY (reset)" || fail "new connection under DENY: $r"
log=/run/meshlite/$LAB_NAME/node-2/ztunnel.log
grep -q 'policy change' "$log" && ok "the close is logged with its reason" || fail "no 'policy change' line in $log"
grep -q 'mesh/deny-client' "$log" && ok "the deny names the policy" || fail "policy name not in $log"

"$MESHLITE" lab delete --name "$LAB_NAME" -f "$here/fixtures/authz-live/deny.yaml" >/dev/null ||
	die "lab delete of the DENY policy failed"
wait_for 5 sh -c "[ \"\$('$MESHLITE' lab exec --name '$LAB_NAME' mesh/client -- '$TESTPEER' probe '$server:8081')\" = data ]" &&
	ok "allowed again after the policy was deleted" || fail "still refused after deleting the policy"
finish
