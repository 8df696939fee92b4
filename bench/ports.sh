#!/usr/bin/env bash
# The ports source (listening sockets with their owners) against ss -ltn (no
# owners) and ss -ltnup (with owners), with 50 listeners and 20,000
# established loopback connections held by 5 helper processes, each holding
# both ends of its connections (a hard limit of 20,000 open files per
# process rules out one process holding them all).
#
# Two settings, each timed RUNS times, interleaved, medians and ratios:
#   isolated  a PID, mount and network namespace of the bench's own
#             (unshare): the node is the bench's processes and sockets alone.
#   host      this machine's own namespaces, with whatever else runs here.
# The helpers never outlive the script: in the isolated setting they die with
# the namespace's init (the script itself), in the host setting a trap ends
# them.
set -euo pipefail

RUNS=${RUNS:-15}
HELPERS=${HELPERS:-5}
LISTENERS=${LISTENERS:-50}
CONNS=${CONNS:-20000}

# usec CMD... runs CMD once, output discarded, and prints its wall time in µs.
usec() {
	local s e
	s=$(date +%s%N)
	"$@" >/dev/null 2>&1
	e=$(date +%s%N)
	echo $(((e - s) / 1000))
}

median() { sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

inner() {
	local setting=$1 dir=$2 i
	pids=()
	trap 'if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi' EXIT
	if [[ $setting == isolated ]]; then
		ip link set lo up
	fi
	local per_l=$((LISTENERS / HELPERS)) per_c=$((CONNS / HELPERS))
	for ((i = 0; i < HELPERS; i++)); do
		local l=$per_l
		((i == HELPERS - 1)) && l=$((LISTENERS - per_l * (HELPERS - 1)))
		"$dir/portsload" -listeners "$l" -conns "$per_c" </dev/null >"$dir/$setting.$i.out" 2>&1 &
		pids+=($!)
	done
	for ((i = 0; i < HELPERS; i++)); do
		local n=0
		until grep -q '^ready' "$dir/$setting.$i.out"; do
			if ! kill -0 "${pids[i]}" 2>/dev/null || ((n++ > 1200)); then
				echo "helper $i failed: $(cat "$dir/$setting.$i.out")" >&2
				return 1
			fi
			sleep 0.1
		done
	done

	local listening established ours
	listening=$(ss -ltnH | wc -l)
	established=$(ss -tnH state established | wc -l)
	ours=$("$dir/nodeward-agent" report --only ports -o json | grep -o '"port":' | wc -l)
	echo "[$setting] processes $(ls /proc | grep -c '^[0-9]'), TCP listeners $listening, established TCP sockets $established (both ends), ports source lists $ours (TCP and UDP, every netns)"

	# The agent command's wall time includes its process start; the snapshot's
	# duration_micros is the source alone, what the long-running agent pays.
	local -a t_ltn=() t_ltnup=() t_ours=() t_src=() t_start=()
	for ((i = 0; i < RUNS; i++)); do
		t_ltn+=("$(usec ss -ltn)")
		t_ltnup+=("$(usec ss -ltnup)")
		t_ours+=("$(usec sh -c '"$1" report --only ports -o json >"$2"' - "$dir/nodeward-agent" "$dir/out.json")")
		t_src+=("$(grep -o '"name": *"ports"[^}]*"duration_micros": *"[0-9]*"' "$dir/out.json" | grep -o '[0-9]*"$' | tr -d '"')")
		t_start+=("$(usec "$dir/nodeward-agent" --version)")
	done
	local m_ltn m_ltnup m_ours m_src m_start
	m_ltn=$(printf '%s\n' "${t_ltn[@]}" | median)
	m_ltnup=$(printf '%s\n' "${t_ltnup[@]}" | median)
	m_ours=$(printf '%s\n' "${t_ours[@]}" | median)
	m_src=$(printf '%s\n' "${t_src[@]}" | median)
	m_start=$(printf '%s\n' "${t_start[@]}" | median)
	printf '[%s] median of %d runs: ss -ltn %s ms, ss -ltnup %s ms, nodeward-agent report --only ports %s ms (source alone %s ms; agent start, --version, %s ms)\n' \
		"$setting" "$RUNS" "$(ms "$m_ltn")" "$(ms "$m_ltnup")" "$(ms "$m_ours")" "$(ms "$m_src")" "$(ms "$m_start")"
	printf '[%s] ratios, command: ports/ss-ltnup %s (goal <= 0.25), ports/ss-ltn %s (goal <= 3); source alone: %s and %s\n' \
		"$setting" "$(ratio "$m_ours" "$m_ltnup")" "$(ratio "$m_ours" "$m_ltn")" "$(ratio "$m_src" "$m_ltnup")" "$(ratio "$m_src" "$m_ltn")"
}

if [[ ${1:-} == --inner ]]; then
	inner "$2" "$3"
	exit
fi

cd "$(dirname "$0")/.."
for tool in ss ip unshare go; do
	command -v "$tool" >/dev/null || { echo "bench/ports.sh: $tool not found" >&2; exit 1; }
done
if [[ $(id -u) != 0 ]]; then
	echo "bench/ports.sh: needs root (namespaces, and reading every process's descriptors)" >&2
	exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# AGENT names an agent binary already built (make bench builds bin/nodeward-agent).
if [[ -n ${AGENT:-} ]]; then
	cp "$AGENT" "$work/nodeward-agent"
else
	go build -o "$work/nodeward-agent" ./agent
fi
go build -o "$work/portsload" ./bench/portsload
echo "ports: $LISTENERS listeners, $CONNS established loopback connections in $HELPERS helper processes; $(nproc) CPUs, kernel $(uname -r), $(date -u +%F)"
unshare --pid --fork --mount-proc --net bash "$0" --inner isolated "$work"
bash "$0" --inner host "$work"
