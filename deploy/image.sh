#!/usr/bin/env bash
# Builds the nodeward-agent and nodeward (collector) images from ./Dockerfile
# with buildah (or podman), no Docker engine or registry needed: the static
# binaries are compiled here and copied into FROM-scratch images.
#
# usage: deploy/image.sh [--version V] [--save DIR]
#   --version V  image tag and the version stamped into the binaries
#                (default: git describe, else "dev")
#   --save DIR   also write DIR/nodeward-agent.tar and DIR/nodeward-collector.tar
#                (OCI archives: `podman load -i`, `skopeo copy oci-archive:...`)
# env:
#   NODEWARD_IMAGE_STORE  keep images in this directory (vfs storage) instead of
#                         the system's container storage
#   GOARCH                target architecture (default: the host's; see
#                         scripts/build.sh for the collector's C cross compiler)
# Prints the image names it built.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=""
save=""
while [[ $# -gt 0 ]]; do
	case $1 in
	--version) version=$2; shift 2 ;;
	--save) save=$2; shift 2 ;;
	*) echo "usage: $0 [--version V] [--save DIR]" >&2; exit 2 ;;
	esac
done
if [[ -z $version ]]; then
	version=$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)
fi

if command -v buildah >/dev/null; then
	builder=(buildah)
elif command -v podman >/dev/null; then
	builder=(podman)
else
	echo "image.sh: needs buildah or podman (apt-get install buildah)" >&2
	exit 1
fi
store=()
if [[ -n ${NODEWARD_IMAGE_STORE:-} ]]; then
	mkdir -p "$NODEWARD_IMAGE_STORE"
	store=(--root "$NODEWARD_IMAGE_STORE/storage" --runroot "$NODEWARD_IMAGE_STORE/runroot" --storage-driver vfs)
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/etc/ssl/certs" "$ctx/var/lib/nodeward"
cp "$repo/Dockerfile" "$ctx/Dockerfile"
cp "$repo/deploy/image/passwd" "$repo/deploy/image/group" "$ctx/etc/"
ca=/etc/ssl/certs/ca-certificates.crt
if [[ ! -s $ca ]]; then
	echo "image.sh: $ca missing (apt-get install ca-certificates)" >&2
	exit 1
fi
cp "$ca" "$ctx/etc/ssl/certs/ca-certificates.crt"

"$repo/scripts/build.sh" "$ctx" "$version"

# Image tags cannot hold "+"; git describe never makes one, a caller might.
tag=${version//+/_}
for target in agent collector; do
	name=localhost/nodeward-$target:$tag
	"${builder[@]}" "${store[@]}" build --isolation chroot --layers=false \
		--build-arg "VERSION=$version" --target "$target" -t "$name" -f "$ctx/Dockerfile" "$ctx" >&2
	if [[ -n $save ]]; then
		mkdir -p "$save"
		rm -f "$save/nodeward-$target.tar"
		"${builder[@]}" "${store[@]}" push "$name" "oci-archive:$save/nodeward-$target.tar:$name" >&2
	fi
	echo "$name"
done
