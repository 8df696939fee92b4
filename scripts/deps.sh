#!/usr/bin/env bash
# Installs what building, running and testing nodeward needs on Debian 12:
# Debian packages (only the missing ones) and the Go modules. Safe to rerun.
#   scripts/deps.sh            packages for `make run` and `make test`
#   scripts/deps.sh bench      adds the peer tools the benchmarks compare with
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: installing Debian packages needs root (missing: $*)" >&2
    exit 1
  fi
}

pkgs=(
  ca-certificates make git iproute2 util-linux procps kmod
  gcc libc6-dev                    # cgo: the collector's SQLite, go test -race
  openssh-server openssh-client    # real sshd for the sshd config and SSH session tests
  rpm                              # rpm -qa as the oracle for rpm databases
  cryptsetup                       # LUKS headers for the encryption check tests
  systemd systemd-container dbus   # a real systemd over D-Bus (systemd-nspawn)
  postgresql                       # the PostgreSQL store's conformance tests
  prometheus                       # promtool check metrics
  podman buildah runc uidmap       # make image without a Docker engine
  containerd                       # a real CRI runtime for the pod-name tests (agent/cri)
  rsyslog                          # sshd's auth log for the SSH enrichment tests
  clang llvm libbpf-dev bpftool    # make generate: the eBPF objects
  protobuf-compiler libprotobuf-dev
)
if [ "${1:-}" = bench ]; then
  pkgs+=(bpftrace libbpf-tools hyperfine)
fi

missing=()
for p in "${pkgs[@]}"; do
  if [ "$(dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[@]}"
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installing these must not leave services running on the machine.
  for svc in postgresql ssh rsyslog; do
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
      systemctl stop "$svc" 2>/dev/null || true
    fi
  done
fi

if ! command -v go >/dev/null; then
  if [ -x /usr/local/go/bin/go ]; then
    export PATH=/usr/local/go/bin:$PATH
  else
    echo "deps: Go 1.26 is required (https://go.dev/dl); /usr/local/go/bin/go not found" >&2
    exit 1
  fi
fi
go mod download
