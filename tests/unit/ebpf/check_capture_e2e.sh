#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# End-to-end capture through real bpf_sk_assign, in three throwaway namespaces:
#
#   pod (10.1.0.2, fd00:1::2) --veth-- node (vpod | up0) --veth-- ext (10.77.0.1, fd00:77::1)
#
# The node forwards between them. With capture_pod on vpod, a pod's connection to ext is
# accepted by a transparent listener in the node (getsockname() = the original destination)
# and never reaches ext; without the listener it fails and still never reaches ext. With
# capture_node on up0, HBONE (:15008) to the pod's address lands in the node's listener.
#
# capture_pod only lets the pod send from its own addresses (attach pod --addr): the pod
# also holds 10.1.0.3 and fd00:1::3, standing in for another pod's addresses; a SYN or a
# datagram from them reaches neither the listener nor ext, while ARP, neighbour discovery,
# DAD from :: and link-local traffic keep working.
#
# Usage: check_capture_e2e.sh MESHLITE_CAPTURE TPROXY_PEER_PY
# Needs root. Every namespace it creates is deleted on exit, whatever happens; nothing is
# configured in the namespace it is started from.
set -u

CAP=$(readlink -f "${1:?usage: $0 MESHLITE_CAPTURE TPROXY_PEER_PY}")
PEER=${2:?usage: $0 MESHLITE_CAPTURE TPROXY_PEER_PY}
PY=/usr/bin/python3 # Debian's interpreter; the helper needs only the standard library
[ -x "$PY" ] || PY=python3

if [ "$(id -u)" -ne 0 ]; then
	echo "check_capture_e2e: must run as root (creates network namespaces, loads BPF)" >&2
	exit 1
fi

tag="mlcap$$"
POD="$tag-pod"
NODE="$tag-node"
EXT="$tag-ext"
work=$(mktemp -d)
declare -A PIDS=()

cleanup() {
	local pid ns
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "$POD" "$NODE" "$EXT"; do
		ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

ok() {
	echo "ok: $*"
}

inns() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# start NAME NS ADDR PORT TIMEOUT [--transparent] [--v6only]: a listener in the background
start() {
	local name=$1 ns=$2 addr=$3 port=$4 timeout=$5 i
	shift 5
	rm -f "$work/$name.ready"
	inns "$ns" "$PY" "$PEER" listen "$addr" "$port" "$work/$name.ready" "$timeout" "$@" \
		>"$work/$name.out" 2>&1 &
	PIDS[$name]=$!
	for i in $(seq 100); do
		[ -e "$work/$name.ready" ] && return 0
		kill -0 "${PIDS[$name]}" 2>/dev/null || break
		sleep 0.05
	done
	fail "listener $name did not start: $(cat "$work/$name.out")"
}

# finish NAME: wait for a listener; its exit status (0 accepted, 3 nothing came)
finish() {
	local rc
	wait "${PIDS[$1]}"
	rc=$?
	unset "PIDS[$1]"
	return $rc
}

accepted() { # NAME: the listener accepted one connection; what it saw goes to $out
	finish "$1" || fail "$1 accepted nothing: $(cat "$work/$1.out")"
	out=$(cat "$work/$1.out")
}

nothing() { # NAME: the listener saw no connection at all
	finish "$1"
	[ $? -eq 3 ] || fail "$1 got a connection it must not: $(cat "$work/$1.out")"
}

connect() { # NS ADDR PORT
	inns "$1" "$PY" "$PEER" connect "$2" "$3" 2
}

connect_from() { # NS SRC ADDR PORT: the client's socket bound to SRC
	inns "$1" "$PY" "$PEER" connect "$3" "$4" 2 --bind "$2"
}

# udp_start NAME NS ADDR PORT TIMEOUT: a UDP receiver in the background (finish: 0 got one)
udp_start() {
	local name=$1 ns=$2 addr=$3 port=$4 timeout=$5 i
	rm -f "$work/$name.ready"
	inns "$ns" "$PY" "$PEER" udp-listen "$addr" "$port" "$work/$name.ready" "$timeout" \
		>"$work/$name.out" 2>&1 &
	PIDS[$name]=$!
	for i in $(seq 100); do
		[ -e "$work/$name.ready" ] && return 0
		kill -0 "${PIDS[$name]}" 2>/dev/null || break
		sleep 0.05
	done
	fail "UDP receiver $name did not start: $(cat "$work/$name.out")"
}

counter() { # IFNAME NAME: one of meshlite-capture status's counters in the node
	inns "$NODE" "$CAP" status "$1" | awk -v n="$2" '$1 == n { print $2 }'
}

# ---------------------------------------------------------------- topology
ip netns add "$POD" && ip netns add "$NODE" && ip netns add "$EXT" || fail "ip netns add"
set -e
ip -n "$NODE" link add vpod type veth peer name eth0 netns "$POD"
ip -n "$NODE" link add up0 type veth peer name eth0 netns "$EXT"
for ns in "$POD" "$NODE" "$EXT"; do
	ip -n "$ns" link set lo up
done
ip -n "$POD" addr add 10.1.0.2/24 dev eth0
ip -n "$POD" -6 addr add fd00:1::2/64 dev eth0 nodad
# Not the pod's (see --addr below): what a compromised pod would put as its source.
# Deprecated, so the stack only uses it when a socket binds to it.
ip -n "$POD" addr add 10.1.0.3/32 dev eth0
ip -n "$POD" -6 addr add fd00:1::3/128 dev eth0 nodad preferred_lft 0
ip -n "$POD" link set eth0 up
ip -n "$POD" route add default via 10.1.0.1
ip -n "$POD" -6 route add default via fd00:1::1

ip -n "$NODE" addr add 10.1.0.1/24 dev vpod
ip -n "$NODE" -6 addr add fd00:1::1/64 dev vpod nodad
ip -n "$NODE" addr add 10.77.0.2/24 dev up0
ip -n "$NODE" -6 addr add fd00:77::2/64 dev up0 nodad
ip -n "$NODE" link set vpod up
ip -n "$NODE" link set up0 up
inns "$NODE" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

ip -n "$EXT" addr add 10.77.0.1/24 dev eth0
ip -n "$EXT" -6 addr add fd00:77::1/64 dev eth0 nodad
ip -n "$EXT" link set eth0 up
ip -n "$EXT" route add 10.1.0.0/24 via 10.77.0.2
ip -n "$EXT" -6 route add fd00:1::/64 via fd00:77::2
set +e

# Neighbour discovery is unreliable while link-local addresses are still tentative (DAD).
for i in $(seq 100); do
	tentative=""
	for ns in "$POD" "$NODE" "$EXT"; do
		tentative+=$(ip -n "$ns" -6 addr show tentative)
	done
	[ -z "$tentative" ] && break
	sleep 0.05
done
[ -z "$tentative" ] || fail "IPv6 addresses still tentative after 5s: $tentative"

# ---------------------------------------------------------------- baseline
# Without capture the pod reaches ext in plaintext: what follows is not a routing accident.
for dst in 10.77.0.1 fd00:77::1; do
	start ext "$EXT" "$dst" 8080 10
	connect "$POD" "$dst" 8080 || fail "baseline: pod cannot reach $dst:8080"
	accepted ext
	case "$out" in *"peer=10.1.0.2:"* | *"peer=[fd00:1::2]:"*) ;; *) fail "baseline: $out" ;; esac
done
ok "baseline: the pod reaches ext when nothing is captured"
# ... from the other addresses too: what the source check stops below is not routing.
for src in 10.1.0.3 fd00:1::3; do
	dst=10.77.0.1
	[ "$src" = fd00:1::3 ] && dst=fd00:77::1
	start ext "$EXT" "$dst" 8080 10
	connect_from "$POD" "$src" "$dst" 8080 || fail "baseline: pod cannot reach $dst from $src"
	accepted ext
	case "$out" in *"peer=$src:"* | *"peer=[$src]:"*) ;; *) fail "baseline from $src: $out" ;; esac
done
ok "baseline: uncaptured, the pod reaches ext from 10.1.0.3 and fd00:1::3 too"

# ---------------------------------------------------------------- pod capture
inns "$NODE" "$CAP" routing setup || fail "routing setup"
inns "$NODE" "$CAP" routing setup || fail "routing setup is not idempotent"
[ "$(inns "$NODE" ip rule | grep -c 'fwmark 0x111 lookup 133')" -eq 1 ] ||
	fail "expected one fwmark rule: $(inns "$NODE" ip rule)"
inns "$NODE" ip route show table 133 | grep -q '^local default dev lo' ||
	fail "no local default route in table 133"
inns "$NODE" ip -6 route show table 133 | grep -q '^local default dev lo' ||
	fail "no IPv6 local default route in table 133"
inns "$NODE" "$CAP" attach pod vpod --addr 10.1.0.2/24 --addr fd00:1::2/64 ||
	fail "attach pod vpod"
status=$(inns "$NODE" "$CAP" status vpod) || fail "status: not attached after attach"
[ "$(echo "$status" | awk '$1 == "allowed_source" { print $2 }' | tr '\n' ' ')" = \
	"10.1.0.2 fd00:1::2 " ] || fail "status: allowed sources: $status"
# ARP and neighbour discovery now have to get through capture_pod again, both ways.
for ns in "$POD" "$NODE"; do
	ip -n "$ns" -4 neigh flush all
	ip -n "$ns" -6 neigh flush all
done
ok "attach pod --addr 10.1.0.2/24 --addr fd00:1::2/64 + routing setup"

# ztunnel down: the connection fails and nothing reaches ext (fail closed)
for dst in 10.77.0.1 fd00:77::1; do
	start ext "$EXT" "$dst" 8080 4
	connect "$POD" "$dst" 8080 2>/dev/null && fail "ztunnel down: pod reached $dst:8080"
	nothing ext
done
n=$(counter vpod dropped_no_listener)
[ "${n:-0}" -ge 2 ] || fail "dropped_no_listener = ${n:-?}, want >= 2"
ok "no listener: connects fail, nothing leaves the node (dropped_no_listener=$n)"

# ztunnel up: the transparent listener gets the connection with the original destination
start ext "$EXT" 10.77.0.1 8080 4
start zt "$NODE" 0.0.0.0 15001 10 --transparent
connect "$POD" 10.77.0.1 8080 || fail "captured v4 connection did not complete"
accepted zt
case "$out" in
*"local=10.77.0.1:8080 peer=10.1.0.2:"*"got=b'ping\n'"*) ;;
*) fail "v4 capture: $out" ;;
esac
nothing ext
ok "v4: $out"

start ext "$EXT" fd00:77::1 8080 4
start zt "$NODE" :: 15001 10 --transparent
connect "$POD" fd00:77::1 8080 || fail "captured v6 connection did not complete"
accepted zt
case "$out" in
*"local=[fd00:77::1]:8080 peer=[fd00:1::2]:"*) ;;
*) fail "v6 capture: $out" ;;
esac
nothing ext
ok "v6: $out"

# one dual-stack listener takes IPv4 too (the v4 lookup finds non-v6only sockets)
start zt "$NODE" :: 15001 10 --transparent
connect "$POD" 10.77.0.1 8080 || fail "v4 through a dual-stack listener did not complete"
accepted zt
case "$out" in
*"local=[::ffff:10.77.0.1]:8080 peer=[::ffff:10.1.0.2]:"*) ;;
*) fail "v4 via dual-stack: $out" ;;
esac
ok "v4 via [::]:15001: $out"

syn=$(counter vpod syn_captured)
est=$(counter vpod established_assigned)
[ "${syn:-0}" -ge 3 ] || fail "syn_captured = ${syn:-?}, want >= 3"
[ "${est:-0}" -ge 3 ] || fail "established_assigned = ${est:-?}, want >= 3"
ok "counters: syn_captured=$syn established_assigned=$est"

# ---------------------------------------------------------------- source check
# Everything legitimate so far (ARP, ND, MLD, the captured connections) passed the check.
n=$(counter vpod dropped_spoofed)
[ "${n:-?}" = 0 ] || fail "dropped_spoofed = ${n:-?} before any spoofing, want 0"

# link-local: the pod pings the node's fe80:: address on vpod (ND from fe80:: both ways)
ll=$(ip -n "$NODE" -6 -o addr show dev vpod scope link | awk '{ sub(/\/.*/, "", $4); print $4 }')
[ -n "$ll" ] || fail "vpod has no link-local address"
inns "$POD" "$PY" "$PEER" ping "$ll%eth0" 2 || fail "pod cannot ping the node's $ll%eth0"
inns "$POD" "$PY" "$PEER" ping 10.77.0.1 2 || fail "pod cannot ping ext (ICMP, own source)"
ok "link-local: pod pings $ll%eth0; ICMP from the pod's own address passes"

# DAD from :: reaches the node: the node holds fd00:1::9, so the pod's DAD for it fails
ip -n "$NODE" -6 addr add fd00:1::9/64 dev vpod nodad
ip -n "$POD" -6 addr add fd00:1::9/64 dev eth0
for i in $(seq 100); do
	[ -n "$(ip -n "$POD" -6 addr show dev eth0 dadfailed)" ] && break
	sleep 0.05
done
[ -n "$(ip -n "$POD" -6 addr show dev eth0 dadfailed)" ] ||
	fail "the pod's DAD (from ::) never reached the node: $(ip -n "$POD" -6 addr show dev eth0)"
ip -n "$POD" -6 addr del fd00:1::9/64 dev eth0
ip -n "$NODE" -6 addr del fd00:1::9/64 dev vpod
n=$(counter vpod dropped_spoofed)
[ "${n:-?}" = 0 ] || fail "dropped_spoofed = ${n:-?} after link-local and DAD, want 0"
ok "DAD from :: reaches the node (duplicate detected), nothing dropped as spoofed"

# A spoofed SYN reaches neither ztunnel's listener nor ext; the listener's one and only
# connection is the legitimate one that follows.
for src in 10.1.0.3 fd00:1::3; do
	dst=10.77.0.1 lst=0.0.0.0 own=10.1.0.2
	[ "$src" = fd00:1::3 ] && dst=fd00:77::1 lst=:: own=fd00:1::2
	start ext "$EXT" "$dst" 8080 4
	start zt "$NODE" "$lst" 15001 10 --transparent
	connect_from "$POD" "$src" "$dst" 8080 2>/dev/null && fail "spoofed $src: connect to $dst completed"
	connect "$POD" "$dst" 8080 || fail "after the spoofed SYN, the pod's own connection to $dst failed"
	accepted zt
	case "$out" in
	*"peer=$own:"* | *"peer=[$own]:"*) ;;
	*) fail "the listener's connection is not the pod's own: $out" ;;
	esac
	nothing ext
	ok "spoofed SYN from $src dropped; the pod's own $own still captured"
done

# Not only TCP: a spoofed datagram never gets to ext, the pod's own does
udp_start udp "$EXT" 10.77.0.1 9999 3
inns "$POD" "$PY" "$PEER" udp-send 10.77.0.1 9999 --bind 10.1.0.3 || fail "udp-send"
finish udp
[ $? -eq 3 ] || fail "a datagram from 10.1.0.3 reached ext: $(cat "$work/udp.out")"
udp_start udp "$EXT" 10.77.0.1 9999 10
inns "$POD" "$PY" "$PEER" udp-send 10.77.0.1 9999 || fail "udp-send"
finish udp || fail "the pod's own datagram did not reach ext: $(cat "$work/udp.out")"
grep -q "from=10.1.0.2:" "$work/udp.out" || fail "UDP: $(cat "$work/udp.out")"
udp_start udp "$EXT" fd00:77::1 9999 3
inns "$POD" "$PY" "$PEER" udp-send fd00:77::1 9999 --bind fd00:1::3 || fail "udp-send"
finish udp
[ $? -eq 3 ] || fail "a datagram from fd00:1::3 reached ext: $(cat "$work/udp.out")"
n=$(counter vpod dropped_spoofed)
[ "${n:-0}" -ge 4 ] || fail "dropped_spoofed = ${n:-?}, want >= 4"
ok "spoofed UDP dropped, the pod's own passes (dropped_spoofed=$n)"

# ---------------------------------------------------------------- node capture (HBONE)
inns "$NODE" "$CAP" attach node up0 || fail "attach node up0"
start pod15008 "$POD" 0.0.0.0 15008 4
start hbone "$NODE" 0.0.0.0 15008 10 --transparent
connect "$EXT" 10.1.0.2 15008 || fail "HBONE connection to the pod address did not complete"
accepted hbone
case "$out" in
*"local=10.1.0.2:15008 peer=10.77.0.1:"*) ;;
*) fail "node capture: $out" ;;
esac
nothing pod15008
ok "node: $out"

# other ports pass untouched: ext reaches the pod's own listener
start pod8081 "$POD" 0.0.0.0 8081 10
connect "$EXT" 10.1.0.2 8081 || fail "ext could not reach the pod on 8081 through up0"
accepted pod8081
case "$out" in *"local=10.1.0.2:8081 peer=10.77.0.1:"*) ;; *) fail "node pass: $out" ;; esac
ok "node: other ports pass to the pod"

# no HBONE listener: dropped, the pod never sees it
start pod15008 "$POD" 0.0.0.0 15008 4
connect "$EXT" 10.1.0.2 15008 2>/dev/null && fail "HBONE without listener completed"
nothing pod15008
ok "node: no listener, nothing reaches the pod"

# ---------------------------------------------------------------- detach + teardown
for dev in vpod up0; do
	inns "$NODE" "$CAP" detach "$dev" || fail "detach $dev"
	inns "$NODE" "$CAP" detach "$dev" || fail "second detach $dev"
	inns "$NODE" "$CAP" status "$dev" >/dev/null && fail "status: $dev still attached"
done
inns "$NODE" "$CAP" routing teardown || fail "routing teardown"
inns "$NODE" "$CAP" routing teardown || fail "second routing teardown"
inns "$NODE" ip rule | grep -q fwmark && fail "fwmark rule left: $(inns "$NODE" ip rule)"
[ -z "$(inns "$NODE" ip route show table 133)" ] || fail "table 133 not empty"
start ext "$EXT" 10.77.0.1 8080 10
connect "$POD" 10.77.0.1 8080 || fail "after detach: pod cannot reach ext"
accepted ext
ok "detach + teardown (twice each): traffic flows uncaptured again"

# ---------------------------------------------------------------- CLI errors
err=$(inns "$NODE" "$CAP" attach pod nosuchdev0 --addr 10.1.0.2 2>&1) &&
	fail "attach to a missing device succeeded"
[ "$err" = "meshlite-capture: attach to nosuchdev0: No such device" ] || fail "error text: $err"
ok "CLI: $err"

err=$(inns "$NODE" "$CAP" attach pod vpod 2>&1) && fail "attach pod without --addr succeeded"
case "$err" in
"meshlite-capture: attach pod: give the pod's addresses with --addr IP (at least one)"*) ;;
*) fail "error text: $err" ;;
esac
inns "$NODE" "$CAP" status vpod >/dev/null && fail "attach pod without --addr attached something"
ok "CLI: attach pod without --addr refused"

err=$(inns "$NODE" "$CAP" attach pod vpod --addr 127.0.0.1 2>&1) && fail "--addr 127.0.0.1 accepted"
case "$err" in "meshlite-capture: --addr 127.0.0.1: not an address a pod can own"*) ;;
*) fail "error text: $err" ;; esac
err=$(inns "$NODE" "$CAP" attach node up0 --addr 10.1.0.2 2>&1) && fail "attach node --addr accepted"
case "$err" in "meshlite-capture: attach node: --addr is only for pod"*) ;;
*) fail "error text: $err" ;; esac
inns "$NODE" "$CAP" status up0 >/dev/null && fail "attach node --addr attached something"
ok "CLI: bad --addr and --addr on node refused"

echo "PASS"
