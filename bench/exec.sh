#!/usr/bin/env bash
# Exec tracing overhead: two exec storms, each run with no tracer, with
# `nodeward-agent trace -o json`, with bpftrace on the same tracepoint and with
# libbpf-tools' execsnoop, interleaved (none, nodeward, bpftrace, execsnoop, then
# again in a rotated order), REPS repetitions. Prints, per storm and tracer:
# median wall ns per exec and the median of the paired ratios to no tracer
# (same repetition); the same for CPU ns per exec (the storm's own CPU time,
# which includes the BPF programs, plus the tracer's CPU time during the
# storm: steadier than wall time on a shared machine); events recorded /
# expected; the tracer's CPU time and peak RSS.
#
#   (1) N fork+exec of /bin/true (a copy of it), 1 and 2 workers
#   (2) N vfork+exec of a tiny static binary that exits at once, 4 and 8 workers
#
# Needs root, clang or cc, go, bpftrace and libbpf-tools (execsnoop); a peer
# that is missing is reported and skipped.
# Usage: bench/exec.sh   (env: REPS=5 N=20000 STORMS="fork:1 fork:2 vfork:4 vfork:8";
#        a storm may carry its own count: "fork:1:5000")
set -euo pipefail

REPS=${REPS:-5}
N=${N:-20000}
STORMS=${STORMS:-"fork:1 fork:2 vfork:4 vfork:8"}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

if [[ $(id -u) != 0 ]]; then
	echo "exec.sh: needs root (eBPF)" >&2
	exit 1
fi
WORK=$(mktemp -d /dev/shm/nodeward-bench.XXXXXX)
TRACER_PID=
cleanup() {
	[[ -n $TRACER_PID ]] && kill -INT "$TRACER_PID" 2>/dev/null && wait "$TRACER_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

CC=${CC:-cc}
$CC -O2 -Wall -o "$WORK/storm" "$HERE/storm.c"
$CC -O2 -static -nostdlib -o "$WORK/tiny" "$HERE/tiny.c"
cp /bin/true "$WORK/true"
(cd "$REPO" && go build -o "$WORK/nodeward-agent" ./agent)
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing

TRACERS="none nodeward"
if command -v bpftrace >/dev/null; then TRACERS+=" bpftrace"; else echo "# bpftrace not installed: skipped" >&2; fi
EXECSNOOP=
for c in /usr/sbin/execsnoop /usr/sbin/execsnoop-bpfcc; do
	if [[ -x $c ]] && ! grep -q bpftrace "$c" 2>/dev/null; then EXECSNOOP=$c; break; fi
done
if [[ -n $EXECSNOOP ]]; then TRACERS+=" execsnoop"; else echo "# libbpf-tools execsnoop not installed: skipped" >&2; fi

# start_tracer NAME OUT: starts the tracer writing to OUT, waits until it is
# attached, sets TRACER_PID.
start_tracer() {
	local name=$1 out=$2
	case $name in
	none) TRACER_PID= ; return ;;
	nodeward)
		"$WORK/nodeward-agent" trace -o json --log-level info >"$out" 2>"$out.err" &
		TRACER_PID=$!
		for _ in $(seq 200); do grep -q 'msg=tracing' "$out.err" 2>/dev/null && break; sleep 0.05; done
		;;
	bpftrace)
		bpftrace -e 'tracepoint:sched:sched_process_exec { printf("%d %s\n", pid, str(args->filename)); }' >"$out" 2>"$out.err" &
		TRACER_PID=$!
		for _ in $(seq 400); do grep -q 'Attaching' "$out" 2>/dev/null && break; sleep 0.05; done
		;;
	execsnoop)
		"$EXECSNOOP" >"$out" 2>"$out.err" &
		TRACER_PID=$!
		sleep 3 # it prints nothing before its first event when not on a terminal
		;;
	esac
	sleep 0.5
}

# tracer_ticks: the tracer's CPU time so far, in clock ticks.
tracer_ticks() {
	if [[ -z $TRACER_PID ]]; then echo 0; return; fi
	awk '{print $14+$15}' "/proc/$TRACER_PID/stat"
}

# stop_tracer T0: prints "cpu_ns_since_T0 peak_rss_kib" of the tracer.
stop_tracer() {
	if [[ -z $TRACER_PID ]]; then echo "0 0"; return; fi
	sleep 1 # let it drain
	local tk rss
	tk=$(tracer_ticks)
	rss=$(awk '/^VmHWM/{print $2}' "/proc/$TRACER_PID/status")
	kill -INT "$TRACER_PID"
	wait "$TRACER_PID" 2>/dev/null || true
	TRACER_PID=
	echo "$(((tk - $1) * 1000000000 / $(getconf CLK_TCK))) $rss"
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), REPS=$REPS N=$N" >&2
read -r -a tracers <<<"$TRACERS"
for rep in $(seq "$REPS"); do
	# Rotate the order each repetition so no tracer always runs first.
	order=()
	for i in "${!tracers[@]}"; do order+=("${tracers[$(((i + rep - 1) % ${#tracers[@]}))]}"); done
	for storm in $STORMS; do
		IFS=: read -r mode workers n <<<"$storm"
		n=${n:-$N}
		# A private copy of /bin/true, so that execs of it by anything else on the
		# machine are not counted for a tracer that prints only the filename.
		prog=$WORK/true
		[[ $mode == vfork ]] && prog=$WORK/tiny
		for tr in "${order[@]}"; do
			tag="nwb$rep$mode$workers$tr"
			out=$WORK/$tag.out
			start_tracer "$tr" "$out"
			t0=$(tracer_ticks)
			read -r ns failed scpu < <("$WORK/storm" "$mode" "$n" "$workers" "$prog" "$tag")
			read -r cpu rss < <(stop_tracer "$t0")
			case $tr in
			none) got=$n ;;
			bpftrace) got=$(grep -c " $prog\$" "$out" || true) ;;
			nodeward) got=$(grep -F -- "$tag-" "$out" | grep -c '"exec":{' || true) ;;
			*) got=$(grep -c -- "$tag-" "$out" || true) ;;
			esac
			printf '%s\t%s:%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$mode" "$workers" "$tr" "$((ns / n))" "$got" "$((cpu / 1000000))" "$rss" "$n" \
				"$(((scpu + cpu) / n))" >>"$RESULTS"
			printf '# rep %s %s:%s %-9s wall %7d ns/exec  cpu %6d ns/exec (tracer %4d ms)  recorded %s/%s  rss %s KiB  load %s\n' \
				"$rep" "$mode" "$workers" "$tr" "$((ns / n))" "$(((scpu + cpu) / n))" "$((cpu / 1000000))" "$got" "$n" "$rss" "$(cut -d' ' -f1 /proc/loadavg)" >&2
			rm -f "$out" "$out.err"
		done
	done
done

# Summary: medians over repetitions; a ratio is the paired ratio to no tracer
# in the same repetition: median (min-max).
awk -F'\t' '
function median(s,   a, k, i, j, t) {
	k = split(s, a, " ")
	for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function minmax(s,   a, k, i, lo, hi) {
	k = split(s, a, " "); lo = hi = a[1]
	for (i = 2; i <= k; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
	return sprintf("%.2f-%.2f", lo, hi)
}
function ratio(s) { return sprintf("%.3f (%s)", median(s), minmax(s)) }
{ key = $2 SUBSEP $3; n[$2] = $8; ns[key] = ns[key] " " $4; got[key] = got[key] " " $5; cpu[key] = cpu[key] " " $6
  rss[key] = rss[key] " " $7; cns[key] = cns[key] " " $9
  if ($3 == "none") { base[$1 SUBSEP $2] = $4; cbase[$1 SUBSEP $2] = $9 }
  row[NR] = $0; if (!($2 in seen)) { seen[$2] = 1; storms[++ns_] = $2 }
  if (!($3 in tseen)) { tseen[$3] = 1; trs[++nt] = $3 } }
END {
	for (r = 1; r <= NR; r++) {
		split(row[r], f, "\t")
		if (f[3] == "none") continue
		wr[f[2] SUBSEP f[3]] = wr[f[2] SUBSEP f[3]] " " f[4] / base[f[1] SUBSEP f[2]]
		cr[f[2] SUBSEP f[3]] = cr[f[2] SUBSEP f[3]] " " f[9] / cbase[f[1] SUBSEP f[2]]
	}
	printf "%-9s %-10s %9s %19s %9s %19s %13s %10s %9s\n", "storm", "tracer", "wall ns", "wall ratio", "cpu ns", "cpu ratio", "recorded", "tracer ms", "peak RSS"
	for (s = 1; s <= ns_; s++) for (t = 1; t <= nt; t++) {
		key = storms[s] SUBSEP trs[t]
		if (!(key in ns)) continue
		w = trs[t] == "none" ? "1" : ratio(wr[key]); c = trs[t] == "none" ? "1" : ratio(cr[key])
		split(got[key], g, " "); lo = g[1]; for (i in g) if (g[i] + 0 < lo + 0) lo = g[i]
		split(rss[key], m, " "); hi = 0; for (i in m) if (m[i] + 0 > hi) hi = m[i]
		printf "%-9s %-10s %9.0f %19s %9.0f %19s %13s %10.0f %8.1fM\n", storms[s], trs[t], median(ns[key]), w, median(cns[key]), c, lo "/" n[storms[s]], median(cpu[key]), hi / 1024
	}
}' "$RESULTS"
