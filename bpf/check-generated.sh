#!/usr/bin/env bash
# Fails when the committed bpf2go output in agent/tracer (the *_bpfel.go
# files and *_bpfel.o objects) is not what the C sources in bpf/ compile to:
# it regenerates into a temporary copy of the tree and compares.
# Needs clang (Debian's clang-14 made the committed objects) and go.
# Usage: bpf/check-generated.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

mkdir -p "$TMP/agent/tracer"
cp -r "$REPO/bpf" "$TMP/bpf"
cp "$REPO/agent/tracer/gen.go" "$TMP/agent/tracer/"
# bpf2go takes the package name from the environment go generate sets; run
# the generate line itself, from the same relative directory, so that paths
# recorded in the objects match.
cmd=$(sed -n 's|^//go:generate ||p' "$REPO/agent/tracer/gen.go")
(cd "$TMP/agent/tracer" && GOPACKAGE=tracer GOFILE=gen.go GOFLAGS=-mod=mod bash -c "$cmd" >/dev/null) || {
	echo "check-generated: regenerating failed" >&2
	exit 1
}
status=0
for f in "$REPO"/agent/tracer/*_bpfel.go "$REPO"/agent/tracer/*_bpfel.o; do
	b=$(basename "$f")
	if ! cmp -s "$f" "$TMP/agent/tracer/$b"; then
		echo "check-generated: agent/tracer/$b is stale: run 'go generate ./agent/tracer' and commit" >&2
		status=1
	fi
done
for f in "$TMP"/agent/tracer/*_bpfel.*; do
	[[ -e $REPO/agent/tracer/$(basename "$f") ]] || { echo "check-generated: agent/tracer/$(basename "$f") is not committed" >&2; status=1; }
done
[[ $status == 0 ]] && echo "check-generated: committed eBPF objects are up to date"
exit $status
