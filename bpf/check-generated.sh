#!/usr/bin/env bash
# Fails when committed bpf2go output (the *_bpfel.go files and *_bpfel.o
# objects beside each gen.go that runs bpf2go) is not what the C sources in
# bpf/ compile to: it regenerates into a temporary copy and compares.
# Needs clang (Debian's clang-14 made the committed objects) and go.
# Usage: bpf/check-generated.sh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp -r "$REPO/bpf" "$TMP/bpf"

status=0
for gen in $(grep -l 'go:generate .*bpf2go' "$REPO"/agent/*/gen.go); do
	pkgdir=$(dirname "${gen#"$REPO"/}")
	pkg=$(sed -n 's/^package //p' "$gen")
	mkdir -p "$TMP/$pkgdir"
	cp "$gen" "$TMP/$pkgdir/"
	# Run the generate line itself, from the same relative directory, so the
	# paths recorded in the objects match.
	cmd=$(sed -n 's|^//go:generate ||p' "$gen")
	(cd "$TMP/$pkgdir" && GOPACKAGE=$pkg GOFILE=gen.go GOFLAGS=-mod=mod bash -c "$cmd" >/dev/null) || {
		echo "check-generated: regenerating $pkgdir failed" >&2
		exit 1
	}
	for f in "$REPO/$pkgdir"/*_bpfel.go "$REPO/$pkgdir"/*_bpfel.o; do
		if ! cmp -s "$f" "$TMP/$pkgdir/$(basename "$f")"; then
			echo "check-generated: $pkgdir/$(basename "$f") is stale: run 'go generate ./$pkgdir' and commit" >&2
			status=1
		fi
	done
	for f in "$TMP/$pkgdir"/*_bpfel.*; do
		[[ -e $REPO/$pkgdir/$(basename "$f") ]] || { echo "check-generated: $pkgdir/$(basename "$f") is not committed" >&2; status=1; }
	done
done
[[ $status == 0 ]] && echo "check-generated: committed eBPF objects are up to date"
exit $status
