#!/usr/bin/env bash
# Packages source against the native tools, on the same databases:
#   - dpkg-query -W on this machine's dpkg database;
#   - rpm -qa on the Amazon Linux 2 fixture (BerkeleyDB Packages).
# Each pair runs interleaved RUNS times (after WARMUP runs) and the script
# prints medians and ratios for: the native command; the whole agent command
# (`nodeward-agent report --only packages -o json`: process start, the
# source, JSON out); and the packages source alone, as the agent measures it
# in-process (the snapshot's duration_micros) - what a long-running agent
# pays per collection.
#
# Usage: bench/packages.sh   (RUNS=21 WARMUP=3; NODEWARD_FIXTURES=dir)
set -euo pipefail

RUNS=${RUNS:-21}
WARMUP=${WARMUP:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
fixtures=${NODEWARD_FIXTURES:-$repo/../shared/fixtures}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

need() { command -v "$1" >/dev/null || { echo "packages.sh: $1 not installed${2:+ ($2)}" >&2; exit 1; }; }
need go
need dpkg-query
need rpm "apt-get install rpm"

(cd "$repo" && go build -o "$work/nodeward-agent" ./agent)
agent=$work/nodeward-agent

# cpu_us: the children's user+sys CPU between two `times` snapshots, in
# microseconds (bash's own clock for its children: no extra process).
cpu_us() {
	awk 'function us(t,  m, s) { split(t, p, "m"); return (p[1] * 60 + substr(p[2], 1, length(p[2]) - 1)) * 1e6 }
		FNR == 2 { v = us($1) + us($2); if (NR == 2) a = v; else b = v }
		END { printf "%d\n", b - a }' "$1" "$2"
}

# median of the numbers on stdin
median() { sort -n | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%8.2f ms", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%6.2fx", a / b }'; }

# run_pair NAME NATIVE-CMD... -- AGENT-ARGS...
# Times the native command and the agent, interleaved, and prints a table.
run_pair() {
	local name=$1
	shift
	local native=() args=()
	while [[ $1 != -- ]]; do native+=("$1"); shift; done
	shift
	args=("$@")
	: >"$work/native" >"$work/agent" >"$work/source" >"$work/native.cpu" >"$work/agent.cpu"
	local i s e
	for ((i = 0; i < WARMUP + RUNS; i++)); do
		times >"$work/t0"
		s=$EPOCHREALTIME
		"${native[@]}" >/dev/null 2>&1
		e=$EPOCHREALTIME
		times >"$work/t1"
		((i < WARMUP)) || {
			echo $((${e/./} - ${s/./})) >>"$work/native"
			cpu_us "$work/t0" "$work/t1" >>"$work/native.cpu"
		}
		times >"$work/t0"
		s=$EPOCHREALTIME
		"$agent" report "${args[@]}" --only packages -o json >"$work/out.json" 2>/dev/null
		e=$EPOCHREALTIME
		times >"$work/t1"
		((i < WARMUP)) || {
			echo $((${e/./} - ${s/./})) >>"$work/agent"
			cpu_us "$work/t0" "$work/t1" >>"$work/agent.cpu"
			grep -o '"duration_micros":"[0-9]*"' "$work/out.json" | grep -o '[0-9]*' >>"$work/source"
		}
	done
	local n_native n_agent
	n_native=$("${native[@]}" 2>/dev/null | wc -l)
	n_agent=$(grep -o '"state":"' "$work/out.json" | wc -l)
	local mn ma msrc cn ca
	mn=$(median <"$work/native")
	ma=$(median <"$work/agent")
	msrc=$(median <"$work/source")
	cn=$(awk '{ s += $1 } END { print s / NR }' "$work/native.cpu")
	ca=$(awk '{ s += $1 } END { print s / NR }' "$work/agent.cpu")
	printf '%s: %d packages listed by the native tool, %d by the agent; %d runs\n' "$name" "$n_native" "$n_agent" "$RUNS"
	printf '  %-46s %12s %10s %14s %10s\n' "" "wall median" "ratio" "cpu mean" "ratio"
	printf '  %-46s %s %10s %s %10s\n' "${native[0]} (native)" "$(ms "$mn")" "" "$(ms "$cn")" ""
	printf '  %-46s %s %10s %s %10s\n' "nodeward-agent report --only packages -o json" "$(ms "$ma")" "$(ratio "$ma" "$mn")" "$(ms "$ca")" "$(ratio "$ca" "$cn")"
	printf '  %-46s %s %10s\n' "packages source alone (in-process)" "$(ms "$msrc")" "$(ratio "$msrc" "$mn")"
}

echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "agent process start alone (nodeward-agent --version): $(for ((i = 0; i < 11; i++)); do s=$EPOCHREALTIME; "$agent" --version >/dev/null; e=$EPOCHREALTIME; echo $((${e/./} - ${s/./})); done | median | xargs -I{} awk -v us={} 'BEGIN { printf "%.2f ms", us / 1000 }')"
echo

run_pair "dpkg, this machine" dpkg-query -W -- --root /

al2=$work/al2
cp -r "$fixtures/hosts/rpm-amazonlinux2/root" "$al2"
chmod -R u+w "$al2"
echo
run_pair "rpm, Amazon Linux 2 fixture (bdb)" rpm --dbpath "$al2/var/lib/rpm" --define "_db_backend bdb_ro" -qa -- --root "$al2"
