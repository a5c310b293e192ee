#!/bin/sh
# Installs everything meshlite needs to build, test and run the lab, from Debian 12 packages.
set -eu
pkgs="build-essential meson ninja-build pkg-config clang llvm bpftool
      liburing-dev android-libboringssl-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler
      libbpf-dev libelf-dev zlib1g-dev check libyaml-dev libjansson-dev libclang-rt-14-dev
      containernetworking-plugins iproute2 procps tcpdump socat iperf3 wrk curl python3
      make protobuf-compiler python3-protobuf python3-grpcio python3-h2 openssl
      chromium prometheus nftables iptables
      valgrind haproxy stunnel4 nghttp2-client nginx-light"
# nftables and iptables are only read by the tests (nft list ruleset, iptables-save) to prove
# that meshlite creates no netfilter rule anywhere: redirection is eBPF only.
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing packages:$missing (run as root to install them)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi
