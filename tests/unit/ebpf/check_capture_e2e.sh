#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
#
# End-to-end capture through real bpf_sk_assign, in four throwaway namespaces:
#
#   pod  (10.1.0.2, fd00:1::2) --veth-- node (vpod  |      ) --veth-- ext (10.77.0.1,
#   pod2 (10.2.0.2, fd00:2::2) --veth--      (vpod2 |  up0 )           fd00:77::1)
#
# The node forwards between them; its enrollment map is pinned in a private directory on
# the host's bpffs (--bpf-dir), and the node's meshlite-capture commands run with only the
# network namespace switched (nsenter --net), since "ip netns exec" hides /sys/fs/bpf.
#
# capture_pod is on both veths, but only what the map says is captured. Not enrolled, the
# pod's connections pass. Enrolled (no re-attach), its connection to ext is accepted by a
# transparent listener in the node (getsockname() = the original destination) and never
# reaches ext; without the listener it fails and still never reaches ext. Pending, its new
# connections are dropped until the state is known. pod2 stays outside the mesh: its
# traffic to ext passes, its plaintext to the enrolled pod lands in the node's :15006
# listener and its HBONE in :15008. With capture_node on up0, HBONE (:15008) to the pod's
# address lands in the node's :15008 listener, anything else in :15006, and once the pod
# leaves the mesh everything reaches the pod itself.
#
# capture_pod only lets the pod send from its own addresses (attach pod --addr): the pod
# also holds 10.1.0.3 and fd00:1::3, standing in for another pod's addresses; a SYN or a
# datagram from them reaches neither the listener nor ext, while ARP, neighbour discovery,
# DAD from :: and link-local traffic keep working.
#
# Usage: check_capture_e2e.sh MESHLITE_CAPTURE TPROXY_PEER_PY
# Needs root and /sys/fs/bpf mounted (bpffs). Every namespace it creates and its pin
# directory are deleted on exit, whatever happens; nothing is configured in the namespace
# it is started from.
set -u

CAP=$(readlink -f "${1:?usage: $0 MESHLITE_CAPTURE TPROXY_PEER_PY}")
PEER=${2:?usage: $0 MESHLITE_CAPTURE TPROXY_PEER_PY}
PY=/usr/bin/python3 # Debian's interpreter; the helper needs only the standard library
[ -x "$PY" ] || PY=python3

if [ "$(id -u)" -ne 0 ]; then
	echo "check_capture_e2e: must run as root (creates network namespaces, loads BPF)" >&2
	exit 1
fi

if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != bpf_fs ]; then
	echo "check_capture_e2e: /sys/fs/bpf is not a bpffs (mount -t bpf bpf /sys/fs/bpf)" >&2
	exit 1
fi

tag="mlcap$$"
POD="$tag-pod"
POD2="$tag-pod2"
NODE="$tag-node"
EXT="$tag-ext"
BPFDIR="/sys/fs/bpf/meshlite-test-capture-e2e-$$"
work=$(mktemp -d)
declare -A PIDS=()

cleanup() {
	local pid ns
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "$POD" "$POD2" "$NODE" "$EXT"; do
		ip netns del "$ns" 2>/dev/null
	done
	"$CAP" --bpf-dir "$BPFDIR" unpin 2>/dev/null
	rm -rf "$BPFDIR"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# A failed check that does not make the ones after it meaningless: reported at once,
# counted, and the script fails at the end.
SOFT_FAILS=0
soft_fail() {
	echo "FAIL: $*" >&2
	SOFT_FAILS=$((SOFT_FAILS + 1))
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

# cap ARGS...: meshlite-capture in the node's network namespace, with the node's pin dir.
# nsenter keeps the mount namespace, where /sys/fs/bpf is the host's bpffs.
cap() {
	nsenter --net="/run/netns/$NODE" "$CAP" --bpf-dir "$BPFDIR" "$@"
}

counter() { # IFNAME NAME: one of meshlite-capture status's counters in the node
	cap status "$1" | awk -v n="$2" '$1 == n { print $2 }'
}

enrolls() { # the enrollment map as one line: "ADDR STATE, ..." sorted
	cap enroll list | sort | paste -sd, | sed 's/,/, /g'
}

# ---------------------------------------------------------------- topology
ip netns add "$POD" && ip netns add "$POD2" && ip netns add "$NODE" && ip netns add "$EXT" ||
	fail "ip netns add"
set -e
ip -n "$NODE" link add vpod type veth peer name eth0 netns "$POD"
ip -n "$NODE" link add vpod2 type veth peer name eth0 netns "$POD2"
ip -n "$NODE" link add up0 type veth peer name eth0 netns "$EXT"
for ns in "$POD" "$POD2" "$NODE" "$EXT"; do
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

ip -n "$POD2" addr add 10.2.0.2/24 dev eth0
ip -n "$POD2" -6 addr add fd00:2::2/64 dev eth0 nodad
ip -n "$POD2" link set eth0 up
ip -n "$POD2" route add default via 10.2.0.1
ip -n "$POD2" -6 route add default via fd00:2::1

ip -n "$NODE" addr add 10.1.0.1/24 dev vpod
ip -n "$NODE" -6 addr add fd00:1::1/64 dev vpod nodad
ip -n "$NODE" addr add 10.2.0.1/24 dev vpod2
ip -n "$NODE" -6 addr add fd00:2::1/64 dev vpod2 nodad
ip -n "$NODE" link set vpod2 up
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
ip -n "$EXT" route add 10.2.0.0/24 via 10.77.0.2
ip -n "$EXT" -6 route add fd00:2::/64 via fd00:77::2
set +e

# Neighbour discovery is unreliable while link-local addresses are still tentative (DAD).
for i in $(seq 100); do
	tentative=""
	for ns in "$POD" "$POD2" "$NODE" "$EXT"; do
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
cap routing setup || fail "routing setup"
cap routing setup || fail "routing setup is not idempotent"
[ "$(inns "$NODE" ip rule | grep -c 'fwmark 0x111 lookup 133')" -eq 1 ] ||
	fail "expected one fwmark rule: $(inns "$NODE" ip rule)"
inns "$NODE" ip route show table 133 | grep -q '^local default dev lo' ||
	fail "no local default route in table 133"
inns "$NODE" ip -6 route show table 133 | grep -q '^local default dev lo' ||
	fail "no IPv6 local default route in table 133"
[ -e "$BPFDIR" ] && fail "$BPFDIR exists before the first attach"
cap attach pod vpod --addr 10.1.0.2/24 --addr fd00:1::2/64 || fail "attach pod vpod"
[ -e "$BPFDIR/ml_enroll_v1" ] || fail "attach did not pin the enrollment map in $BPFDIR"
cap attach pod vpod2 --addr 10.2.0.2/24 --addr fd00:2::2/64 || fail "attach pod vpod2"
status=$(cap status vpod) || fail "status: not attached after attach"
[ "$(echo "$status" | awk '$1 == "allowed_source" { print $2 }' | tr '\n' ' ')" = \
	"10.1.0.2 fd00:1::2 " ] || fail "status: allowed sources: $status"
[ -z "$(cap enroll list)" ] || fail "enroll list after attach: $(cap enroll list)"
# ARP and neighbour discovery now have to get through capture_pod again, both ways.
for ns in "$POD" "$POD2" "$NODE"; do
	ip -n "$ns" -4 neigh flush all
	ip -n "$ns" -6 neigh flush all
done
ok "attach pod vpod, vpod2 (one pinned map in $BPFDIR, empty) + routing setup"

# not enrolled: the pod's connections are not ours, even with ztunnel up
for dst in 10.77.0.1 fd00:77::1; do
	lst=0.0.0.0
	[ "$dst" = fd00:77::1 ] && lst=::
	start ext "$EXT" "$dst" 8080 10
	start zt "$NODE" "$lst" 15001 3 --transparent
	connect "$POD" "$dst" 8080 || fail "not enrolled: pod cannot reach $dst:8080"
	accepted ext
	case "$out" in *"peer=10.1.0.2:"* | *"peer=[fd00:1::2]:"*) ;; *) fail "not enrolled: $out" ;; esac
	nothing zt
done
n=$(counter vpod syn_captured)
[ "${n:-?}" = 0 ] || fail "not enrolled: syn_captured = ${n:-?}, want 0"
ok "not enrolled: the pod reaches ext in plaintext past a running listener"

# enrolled, without re-attaching: from the next connection on, captured
cap enroll 10.1.0.2 enrolled || fail "enroll 10.1.0.2 enrolled"
cap enroll fd00:1::2/64 enrolled || fail "enroll fd00:1::2/64 enrolled"
[ "$(enrolls)" = "10.1.0.2 enrolled, fd00:1::2 enrolled" ] || fail "enroll list: $(enrolls)"
ok "enroll 10.1.0.2, fd00:1::2: $(enrolls)"

# ztunnel down: the connection fails and nothing reaches ext (fail closed)
for dst in 10.77.0.1 fd00:77::1; do
	start ext "$EXT" "$dst" 8080 3
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

# pending: new connections dropped (ztunnel up or not), nothing reaches ext
cap enroll 10.1.0.2 pending || fail "enroll 10.1.0.2 pending"
[ "$(enrolls)" = "10.1.0.2 pending, fd00:1::2 enrolled" ] || fail "enroll list: $(enrolls)"
start ext "$EXT" 10.77.0.1 8080 3
start zt "$NODE" 0.0.0.0 15001 3 --transparent
connect "$POD" 10.77.0.1 8080 2>/dev/null && fail "pending: the pod's connection completed"
nothing zt
nothing ext
n=$(counter vpod dropped_pending)
[ "${n:-0}" -ge 1 ] || fail "dropped_pending = ${n:-?}, want >= 1"
ok "pending: SYNs dropped, neither ztunnel nor ext saw a connection (dropped_pending=$n)"

# ... and TCP's own retransmission gets through once the pod is enrolled
start zt "$NODE" 0.0.0.0 15001 10 --transparent
inns "$POD" "$PY" "$PEER" connect 10.77.0.1 8080 8 &
PIDS[client]=$!
sleep 0.5
cap enroll 10.1.0.2 enrolled || fail "enroll 10.1.0.2 enrolled"
finish client || fail "pending then enrolled: the retried connection did not complete"
accepted zt
case "$out" in *"local=10.77.0.1:8080 peer=10.1.0.2:"*) ;; *) fail "pending then enrolled: $out" ;; esac
n2=$(counter vpod dropped_pending)
[ "$n2" -gt "$n" ] || fail "dropped_pending = $n2, want > $n (the first SYN was pending)"
ok "pending then enrolled: the retransmitted SYN is captured ($out)"

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

# Larger than the MTU, the enrolled pod's datagram leaves in fragments: not TCP, not ours
for dst in 10.77.0.1 fd00:77::1; do
	udp_start udp "$EXT" "$dst" 9999 3
	inns "$POD" "$PY" "$PEER" udp-send "$dst" 9999 --size 3000 || fail "udp-send --size 3000"
	if finish udp && grep -q "len=3000" "$work/udp.out"; then
		ok "a fragmented 3000-byte datagram from the enrolled pod reaches $dst"
	else
		soft_fail "a fragmented 3000-byte datagram from the enrolled pod did not reach $dst" \
			"(dropped_unparsed=$(counter vpod dropped_unparsed)): $(cat "$work/udp.out")"
	fi
done

# ---------------------------------------------------------------- a pod outside the mesh
# pod2 is not enrolled: its traffic to ext passes uncaptured, ztunnel's listener up or not
for dst in 10.77.0.1 fd00:77::1; do
	lst=0.0.0.0
	[ "$dst" = fd00:77::1 ] && lst=::
	start ext "$EXT" "$dst" 8080 10
	start zt "$NODE" "$lst" 15001 3 --transparent
	connect "$POD2" "$dst" 8080 || fail "pod2 cannot reach $dst:8080"
	accepted ext
	case "$out" in *"peer=10.2.0.2:"* | *"peer=[fd00:2::2]:"*) ;; *) fail "pod2 to ext: $out" ;; esac
	nothing zt
done
ok "pod2 (not enrolled) reaches ext uncaptured"

# its plaintext to the enrolled pod goes to ztunnel's inbound plaintext listener (:15006)
for dst in 10.1.0.2 fd00:1::2; do
	lst=0.0.0.0 want="local=10.1.0.2:8081 peer=10.2.0.2:"
	[ "$dst" = fd00:1::2 ] && lst=:: want="local=[fd00:1::2]:8081 peer=[fd00:2::2]:"
	start pod8081 "$POD" "$lst" 8081 3
	start plain "$NODE" "$lst" 15006 10 --transparent
	connect "$POD2" "$dst" 8081 || fail "pod2 to the enrolled pod's $dst:8081 did not complete"
	accepted plain
	case "$out" in *"$want"*) ;; *) fail "pod2 to the enrolled pod: $out" ;; esac
	nothing pod8081
	ok "pod2 -> enrolled pod $dst:8081: $out"
done

# ... its HBONE to the ztunnel's inbound listener (:15008)
start pod15008 "$POD" 0.0.0.0 15008 3
start hbone "$NODE" 0.0.0.0 15008 10 --transparent
connect "$POD2" 10.1.0.2 15008 || fail "pod2's HBONE to the enrolled pod did not complete"
accepted hbone
case "$out" in *"local=10.1.0.2:15008 peer=10.2.0.2:"*) ;; *) fail "pod2 HBONE: $out" ;; esac
nothing pod15008
ok "pod2 -> enrolled pod :15008: $out"

# ... and without the plaintext listener, nothing reaches the enrolled pod
start pod8081 "$POD" 0.0.0.0 8081 3
connect "$POD2" 10.1.0.2 8081 2>/dev/null && fail "pod2 reached the enrolled pod without ztunnel"
nothing pod8081
n=$(counter vpod2 dropped_no_listener)
[ "${n:-0}" -ge 1 ] || fail "vpod2 dropped_no_listener = ${n:-?}, want >= 1"
ok "pod2 -> enrolled pod with no :15006 listener: dropped (dropped_no_listener=$n)"

# the enrolled pod's connection to pod2 is the enrolled pod's own: outbound (:15001)
start pod2_8082 "$POD2" 0.0.0.0 8082 3
start zt "$NODE" 0.0.0.0 15001 10 --transparent
connect "$POD" 10.2.0.2 8082 || fail "enrolled pod to pod2 did not complete"
accepted zt
case "$out" in *"local=10.2.0.2:8082 peer=10.1.0.2:"*) ;; *) fail "pod -> pod2: $out" ;; esac
nothing pod2_8082
ok "enrolled pod -> pod2: outbound, $out"

# ---------------------------------------------------------------- node capture (HBONE)
cap attach node up0 || fail "attach node up0"
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

# other ports: plaintext for ztunnel's inbound plaintext listener (:15006), not the pod
for dst in 10.1.0.2 fd00:1::2; do
	lst=0.0.0.0 want="local=10.1.0.2:8081 peer=10.77.0.1:"
	[ "$dst" = fd00:1::2 ] && lst=:: want="local=[fd00:1::2]:8081 peer=[fd00:77::1]:"
	start pod8081 "$POD" "$lst" 8081 3
	start plain "$NODE" "$lst" 15006 10 --transparent
	connect "$EXT" "$dst" 8081 || fail "node: plaintext to $dst:8081 did not complete"
	accepted plain
	case "$out" in *"$want"*) ;; *) fail "node plaintext: $out" ;; esac
	nothing pod8081
	ok "node: plaintext $dst:8081: $out"
done

# no listener: dropped, the pod never sees it
start pod15008 "$POD" 0.0.0.0 15008 3
connect "$EXT" 10.1.0.2 15008 2>/dev/null && fail "HBONE without listener completed"
nothing pod15008
start pod8081 "$POD" 0.0.0.0 8081 3
connect "$EXT" 10.1.0.2 8081 2>/dev/null && fail "plaintext without listener completed"
nothing pod8081
ok "node: no listener, nothing reaches the pod"

# the pod leaves the mesh: both ports reach the pod itself, ztunnel's listeners up or not
cap enroll 10.1.0.2 none || fail "enroll 10.1.0.2 none"
cap enroll 10.1.0.2 none || fail "enroll 10.1.0.2 none, twice"
[ "$(enrolls)" = "fd00:1::2 enrolled" ] || fail "enroll list: $(enrolls)"
for port in 8081 15008; do
	start pod$port "$POD" 0.0.0.0 $port 10
	start zt$port "$NODE" 0.0.0.0 $port 3 --transparent
	connect "$EXT" 10.1.0.2 $port || fail "ext could not reach the pod on $port after it left"
	accepted pod$port
	case "$out" in *"local=10.1.0.2:$port peer=10.77.0.1:"*) ;; *) fail "node pass: $out" ;; esac
	nothing zt$port
done
ok "node: a pod outside the mesh gets its traffic, :15008 included"

# ---------------------------------------------------------------- detach + teardown
for dev in vpod vpod2 up0; do
	cap detach "$dev" || fail "detach $dev"
	cap detach "$dev" || fail "second detach $dev"
	cap status "$dev" >/dev/null && fail "status: $dev still attached"
done
cap routing teardown || fail "routing teardown"
cap routing teardown || fail "second routing teardown"
inns "$NODE" ip rule | grep -q fwmark && fail "fwmark rule left: $(inns "$NODE" ip rule)"
[ -z "$(inns "$NODE" ip route show table 133)" ] || fail "table 133 not empty"
start ext "$EXT" 10.77.0.1 8080 10
connect "$POD" 10.77.0.1 8080 || fail "after detach: pod cannot reach ext"
accepted ext
ok "detach + teardown (twice each): traffic flows uncaptured again"

cap unpin || fail "unpin"
[ -e "$BPFDIR" ] && fail "unpin left $BPFDIR: $(ls -la "$BPFDIR")"
cap unpin || fail "second unpin"
out=$(cap enroll list) || fail "enroll list with nothing pinned"
[ -z "$out" ] || fail "enroll list with nothing pinned: $out"
[ -e "$BPFDIR" ] && fail "enroll list created $BPFDIR"
ok "unpin (twice): the pin directory is gone, enroll list is empty"

# ---------------------------------------------------------------- CLI errors
err=$(cap attach pod nosuchdev0 --addr 10.1.0.2 2>&1) &&
	fail "attach to a missing device succeeded"
[ "$err" = "meshlite-capture: attach to nosuchdev0: No such device" ] || fail "error text: $err"
ok "CLI: $err"

err=$(cap attach pod vpod 2>&1) && fail "attach pod without --addr succeeded"
case "$err" in
"meshlite-capture: attach pod: give the pod's addresses with --addr IP (at least one)"*) ;;
*) fail "error text: $err" ;;
esac
cap status vpod >/dev/null && fail "attach pod without --addr attached something"
ok "CLI: attach pod without --addr refused"

err=$(cap attach pod vpod --addr 127.0.0.1 2>&1) && fail "--addr 127.0.0.1 accepted"
case "$err" in "meshlite-capture: --addr 127.0.0.1: not an address a pod can own"*) ;;
*) fail "error text: $err" ;; esac
err=$(cap attach node up0 --addr 10.1.0.2 2>&1) && fail "attach node --addr accepted"
case "$err" in "meshlite-capture: attach node: --addr is only for pod"*) ;;
*) fail "error text: $err" ;; esac
cap status up0 >/dev/null && fail "attach node --addr attached something"
ok "CLI: bad --addr and --addr on node refused"

# no bpffs where the map should go ("ip netns exec" remounts /sys): nothing is attached
err=$(inns "$NODE" "$CAP" --bpf-dir "$work/nobpf" attach node up0 2>&1) &&
	fail "attach without a bpffs for the map succeeded"
case "$err" in "meshlite-capture: enrollment map in $work/nobpf: "*) ;; *) fail "error text: $err" ;; esac
cap status up0 >/dev/null && fail "attach without its map attached something"
ok "CLI: $err"

err=$(cap enroll 10.1.0 enrolled 2>&1) && fail "enroll 10.1.0 accepted"
case "$err" in "meshlite-capture: enroll: not an IP address"*) ;; *) fail "error text: $err" ;; esac
err=$(cap enroll 10.1.0.2 maybe 2>&1) && fail "enroll state maybe accepted"
case "$err" in "meshlite-capture: enroll: state must be enrolled, pending or none"*) ;;
*) fail "error text: $err" ;; esac
err=$(cap enroll 10.1.0.2 2>&1) && fail "enroll without a state accepted"
[ -e "$BPFDIR" ] && fail "refused commands created $BPFDIR"
ok "CLI: bad enroll commands refused, nothing pinned"

[ "$SOFT_FAILS" -eq 0 ] || fail "$SOFT_FAILS check(s) failed, see above"
echo "PASS"
