#!/usr/bin/env bash
# Runs nodeward on this machine: a collector with an embedded SQLite store
# and an agent for this node, then shows the node's posture and tails its
# live events until Ctrl-C. State lives in ./run/.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin
state=run
addr=${NODEWARD_SERVER:-127.0.0.1:7420}
mkdir -p "$state"
node=$(hostname | tr '[:upper:]' '[:lower:]')

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs and the SQLite store are in $state/" >&2
}
trap cleanup EXIT INT TERM

"$bin/nodeward" serve --listen "$addr" --store "sqlite:$state/nodeward.db" >"$state/collector.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "collector serving" "$state/collector.log" 2>/dev/null && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$state/collector.log" >&2; exit 1; fi
  sleep 0.1
done

if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: eBPF tracing and some checks will report themselves unavailable" >&2
fi
started=$(date +%s)
"$bin/nodeward-agent" run --collector "$addr" --node-name "$node" --interval 30s >"$state/agent.log" 2>&1 &
pids+=($!)

export NODEWARD_SERVER=$addr
# A snapshot taken by this agent, not one a store kept from an earlier run.
fresh_snapshot() {
  local at
  at=$("$bin/nodeward" node "$node" -o json 2>/dev/null | grep -o '"collected_at": *"[^"]*"' | head -1 | cut -d'"' -f4)
  [ -n "$at" ] && [ "$(date -d "$at" +%s)" -ge "$started" ]
}
for _ in $(seq 300); do
  fresh_snapshot && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then cat "$state/agent.log" >&2; exit 1; fi
  sleep 0.1
done
"$bin/nodeward" nodes
echo
"$bin/nodeward" node "$node"
echo
if "$bin/nodeward" --help | grep -q "^  tail "; then
  echo "Live events from $node (Ctrl-C to stop):"
  "$bin/nodeward" tail --node "$node" || true
else
  echo "Collector and agent are running (Ctrl-C to stop); logs in $state/."
  tail -f "$state/agent.log"
fi
