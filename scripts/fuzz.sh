#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time each. New
# interesting inputs stay in each package's testdata/fuzz corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
failed=0
count=0
# The main module, then the deploy module (kept apart for its Kubernetes dependencies).
for pkg in $(go list ./...) $(cd deploy && GOFLAGS=-mod=mod go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg" 2>/dev/null || (cd deploy && GOFLAGS=-mod=mod go list -f '{{.Dir}}' "$pkg"))
  grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | awk '{print $2}'); do
    count=$((count + 1))
    echo "fuzz: $pkg $target ($time)"
    ok=0
    for attempt in 1 2; do
      if (cd "$dir" && GOFLAGS=-mod=mod go test . -run "^$" -fuzz "^${target}\$" -fuzztime "$time" -fuzzminimizetime=100x) >"/tmp/fuzz-$target.log" 2>&1; then
        ok=1; break
      fi
      # Go's fuzzer can end with "context deadline exceeded" when its time runs
      # out while a worker is busy; that is the harness, not a finding (a
      # finding writes its failing input). Run such a target once more.
      if grep -q "Failing input written" "/tmp/fuzz-$target.log" || ! grep -q "context deadline exceeded" "/tmp/fuzz-$target.log"; then
        break
      fi
      echo "fuzz: $target hit the fuzzer's own deadline; running it again"
    done
    if [ "$ok" -ne 1 ]; then
      echo "fuzz: $target FAILED:"; tail -30 "/tmp/fuzz-$target.log"; failed=$((failed + 1))
    fi
  done
done
echo "fuzz: $count targets, $failed failed"
[ "$failed" -eq 0 ]
