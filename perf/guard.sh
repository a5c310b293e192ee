#!/bin/bash
# The CI perf guard (issue 6 §3): counts the instructions hbone-guard executes in its measured
# function (guard_measure: 200 HBONE streams with one request/response each, 1,000 exchanges
# on one stream, 4 MiB bulk, through lib/tls + lib/hbone as ztunnel drives them) under
# valgrind --tool=callgrind, and compares the count with perf/guard/baseline.json.
# More than TOLERANCE (5 %) above the baseline fails; more than 5 % below passes with a hint
# to record the improvement.
#
# Usage: perf/guard.sh BUILD_DIR [--record] [--runs N] [--top]
#   BUILD_DIR  a release build (CI: build/, what `make` builds); hbone-guard is built in it
#   --record   run N times (default 5), store the median and the spread as the new baseline
#   --runs N   runs to take the median of (default 1 when checking: the count is stable)
#   --top      also print the 25 functions with the most instructions (hot spots)
#
# Determinism: the workload has no sockets, threads or timers and fixed inputs; TLS keys
# differ per run but AES-GCM's instruction count does not. glibc would pick `rep movsb` for
# copies above a CPU-dependent size, and valgrind counts one instruction per byte moved by it,
# so the count would depend on the CPU's ERMS/FSRM flags and cache size: GLIBC_TUNABLES below
# makes glibc use its vector loops everywhere (also closer to what copies really cost).
# Measured spread over 5 runs on this machine kind: see "spread_pct" in the baseline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
baseline=$here/guard/baseline.json
TOLERANCE=${TOLERANCE:-5}
ARGS=(200 1000 4194304 128 1024) # streams, exchanges, bulk bytes, request, response
export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1073741824:glibc.cpu.x86_rep_stosb_threshold=1073741824:glibc.cpu.x86_non_temporal_threshold=1073741824

usage() {
	sed -n '/^# Usage/,/^#   --top/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
build=""
record=0
runs=""
top=0
while [ $# -gt 0 ]; do
	case "$1" in
	--record) record=1 ;;
	--runs) runs=${2:?--runs needs a number}; shift ;;
	--top) top=1 ;;
	-h | --help) usage ;;
	-*) echo "perf/guard.sh: unknown option $1" >&2; usage ;;
	*) [ -z "$build" ] || usage; build=$1 ;;
	esac
	shift
done
[ -n "$build" ] || usage
[ -n "$runs" ] || runs=$([ $record = 1 ] && echo 5 || echo 1)
command -v valgrind >/dev/null || { echo "perf/guard.sh: valgrind is missing (scripts/install-deps.sh installs it)" >&2; exit 1; }
py=/usr/bin/python3

ninja -C "$build" perf/hbone-guard >/dev/null
exe=$build/perf/hbone-guard
buildtype=$($py -c 'import json,sys; print([o["value"] for o in json.load(open(sys.argv[1])) if o["name"]=="buildtype"][0])' \
	"$build/meson-info/intro-buildoptions.json")
if [ "$buildtype" != release ]; then
	echo "perf/guard.sh: $build is a $buildtype build; the baseline is from a release build" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
counts=()
for i in $(seq "$runs"); do
	out=$tmp/callgrind.$i.out
	if ! valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
		--toggle-collect=guard_measure "$exe" "${ARGS[@]}" >"$tmp/run.log" 2>&1; then
		echo "perf/guard.sh: hbone-guard failed under valgrind:" >&2
		cat "$tmp/run.log" >&2
		exit 1
	fi
	n=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out")
	[ -n "$n" ] && [ "$n" -gt 0 ] || { echo "perf/guard.sh: no instruction total in $out" >&2; exit 1; }
	counts+=("$n")
done
grep '^hbone-guard:' "$tmp/run.log" || true
if [ $top = 1 ]; then
	callgrind_annotate "$tmp/callgrind.1.out" >"$tmp/annotate.txt" 2>/dev/null
	sed -n '/^Ir *file:function/,$p' "$tmp/annotate.txt" | head -27 || true
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
$py - "$baseline" "$record" "$TOLERANCE" "$cpu" "$(valgrind --version)" "${ARGS[*]}" "$rev" "${counts[@]}" <<'EOF'
import datetime, json, os, statistics, sys
path, record, tol, cpu, vg, args, rev = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
counts = [int(x) for x in sys.argv[8:]]
ir = int(statistics.median(counts))
spread = 100.0 * (max(counts) - min(counts)) / ir
if record:
    doc = {"ir": ir, "runs": counts, "spread_pct": round(spread, 4), "tolerance_pct": tol,
           "args": args, "recorded": datetime.date.today().isoformat(), "git": rev, "cpu": cpu,
           "valgrind": vg, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("perf guard: recorded %d instructions (median of %d runs, spread %.3f %%) in %s" % (ir, len(counts), spread, path))
    sys.exit(0)
try:
    base = json.load(open(path))
except OSError:
    sys.exit("perf guard: no baseline at %s: record one with perf/guard.sh BUILD --record" % path)
if base["args"] != args:
    sys.exit("perf guard: the baseline was recorded for workload '%s', this is '%s': re-record it" % (base["args"], args))
delta = 100.0 * (ir - base["ir"]) / base["ir"]
where = "" if base.get("cpu") == cpu else " (note: baseline CPU was %s, this is %s)" % (base.get("cpu"), cpu)
line = "perf guard: %d instructions vs baseline %d (%s, %s): %+.2f %%, tolerance %.0f %%%s" % (
    ir, base["ir"], base.get("recorded"), base.get("git"), delta, tol, where)
if delta > tol:
    print(line)
    print("perf guard: FAIL: the HBONE path got %.1f %% more expensive. Find the cause with "
          "perf/guard.sh BUILD --top (and callgrind_annotate); if the cost is intended, "
          "re-record with --record and say why in the commit." % delta)
    sys.exit(1)
print(line)
if delta < -tol:
    print("perf guard: PASS, and %.1f %% cheaper than the baseline: record it (--record) so the "
          "gain is kept." % -delta)
else:
    print("perf guard: PASS")
EOF
