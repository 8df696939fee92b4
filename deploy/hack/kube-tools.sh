#!/usr/bin/env bash
# Builds a real kube-apiserver, kubectl and etcd from the Go module proxy into
# a cache directory, for the deploy tests' server-side dry runs. Nothing is
# downloaded as a prebuilt binary: k8s.io/kubernetes is built through a small
# wrapper module whose replace directives point the staging modules at their
# published versions. Takes about 7 minutes on 2 cores the first time; a
# second run finds the binaries and returns at once.
#
# usage: deploy/hack/kube-tools.sh [DIR]
#   DIR defaults to $NODEWARD_KUBE_TOOLS, else ${XDG_CACHE_HOME:-$HOME/.cache}/nodeward-test/kube-$KUBE_VERSION
# prints DIR/bin on success.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.7}
staging=v0.${KUBE_VERSION#v1.}

dir=${1:-${NODEWARD_KUBE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/nodeward-test/kube-$KUBE_VERSION}}
bin=$dir/bin
if [[ -x $bin/kube-apiserver && -x $bin/kubectl && -x $bin/etcd ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$bin" "$dir/kapi" "$dir/etcd"

# Only one builder at a time per cache directory (parallel test runs).
exec 9>"$dir/.lock"
flock 9
if [[ -x $bin/kube-apiserver && -x $bin/kubectl && -x $bin/etcd ]]; then
	echo "$bin"
	exit 0
fi

export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0
nice=(nice -n 10)

if [[ ! -x $bin/etcd ]]; then
	cd "$dir/etcd"
	printf 'module example.com/etcdbuild\n\ngo 1.25\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
	printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
	go mod tidy >&2
	"${nice[@]}" go build -trimpath -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3 >&2
	mv "$bin/etcd.tmp" "$bin/etcd"
fi

if [[ ! -x $bin/kube-apiserver || ! -x $bin/kubectl ]]; then
	cd "$dir/kapi"
	gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
	{
		printf 'module example.com/kapi\n\ngo 1.25\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
		grep -oE 'k8s.io/[a-z0-9.-]+ => ./staging/src/k8s.io/[a-z0-9.-]+' "$gomod" |
			awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
		printf ')\n'
	} >go.mod
	printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' >tools.go
	go mod tidy >&2
	ld="-X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
	for cmd in kube-apiserver kubectl; do
		[[ -x $bin/$cmd ]] && continue
		"${nice[@]}" go build -trimpath -ldflags "$ld" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2
		mv "$bin/$cmd.tmp" "$bin/$cmd"
	done
fi
echo "$bin"
