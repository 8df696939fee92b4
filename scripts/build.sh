#!/usr/bin/env bash
# Builds nodeward's two static binaries into DIR:
#   nodeward-agent  pure Go (CGO_ENABLED=0)
#   nodeward        collector and CLI, with SQLite's C library linked in
#                   statically through cgo: its single writer bounds ingest,
#                   which the C library raises by 15-18% over the pure-Go
#                   translation (docs/BENCHMARKS.md).
#                   NODEWARD_PURE_GO=1 builds it on the pure-Go translation,
#                   with no C compiler: same file format, slower ingest.
# usage: scripts/build.sh DIR VERSION
# env: GOARCH  target architecture (default: the host's); a cross build of
#              the collector needs a C cross compiler: CC, by default
#              aarch64-linux-gnu-gcc for arm64 (apt-get install
#              gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
set -euo pipefail

if [[ $# -ne 2 ]]; then
	echo "usage: $0 DIR VERSION" >&2
	exit 2
fi
out=$1
ld="-s -w -X github.com/nodeward/nodeward/internal/buildinfo.version=$2"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$out"

CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/nodeward-agent" ./agent

if [[ ${NODEWARD_PURE_GO:-} == 1 ]]; then
	CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/nodeward" ./collector
	exit 0
fi
arch=$(go env GOARCH)
if [[ $arch != "$(go env GOHOSTARCH)" && -z ${CC:-} ]]; then
	case $arch in
	arm64) export CC=aarch64-linux-gnu-gcc ;;
	amd64) export CC=x86_64-linux-gnu-gcc ;;
	*) echo "build.sh: set CC to a C compiler for $arch, or NODEWARD_PURE_GO=1" >&2; exit 1 ;;
	esac
fi
if ! command -v "${CC:-gcc}" >/dev/null; then
	echo "build.sh: the collector links SQLite's C library: needs ${CC:-gcc} (apt-get install gcc libc6-dev), or NODEWARD_PURE_GO=1 for the pure-Go build" >&2
	exit 1
fi
# netgo and osusergo keep glibc's name-service lookups, which a static
# binary cannot load, out of the link.
CGO_ENABLED=1 go build -trimpath -tags netgo,osusergo,sqlite_omit_load_extension \
	-ldflags "$ld -linkmode external -extldflags -static" -o "$out/nodeward" ./collector
