#!/usr/bin/env bash
# Collector sizing with `nodeward loadtest` over real gRPC, on SQLite and on
# PostgreSQL:
#   1. sustained ingest: AGENTS simulated agents x RATE events/s each, DURATION
#   2. tail latency: TAILS live tail subscribers while AGENTS agents send,
#      once at each rate in TAIL_RATES (events/s per agent: by default one
#      near saturation, and one the collector keeps up with)
#   3. query latency (ListPackages, QueryEvents) once the store holds
#      FILL_EVENTS events from AGENTS nodes; store sizes after it
# PostgreSQL is a hermetic server of the script's own (initdb + pg_ctl on
# 127.0.0.1, fsync on: acks mean durable), removed at the end.
# The query store is filled through the Store interface (`loadtest
# --fill-store`, the commit path ingest uses, without gRPC) because filling
# 10 million events over gRPC would take most of an hour on 2 cores.
# SKIP_QUERIES=1 runs only the ingest and tail phases.
# BENCH_DIR=DIR keeps the stores in DIR across runs (a filled store is
# reused); by default everything goes to a temporary directory.
# Usage: bench/collector.sh [sqlite|postgres]...   (default: both)
set -euo pipefail

AGENTS=${AGENTS:-1000}
# 51 per agent: 51,000 offered, so that what is acked can clear the goal of
# 50,000 (each agent's first batch comes at a random point of its interval,
# so about 1% of the nominal rate is never sent within the window).
RATE=${RATE:-51}
DURATION=${DURATION:-60s}
TAILS=${TAILS:-10}
TAIL_RATES=${TAIL_RATES:-10 2}
TAIL_DURATION=${TAIL_DURATION:-30s}
FILL_EVENTS=${FILL_EVENTS:-10000000}
FILL_RATE=${FILL_RATE:-100}
QUERIES=${QUERIES:-200}
PG_BIN=${NODEWARD_PG_BIN:-/usr/lib/postgresql/15/bin}
STORES=("$@")
[ ${#STORES[@]} -gt 0 ] || STORES=(sqlite postgres)

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEEP=${BENCH_DIR:+yes}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/nodeward-bench.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"
SERVE_PID=
PG_DATA=
cleanup() {
	[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
	[ -n "$PG_DATA" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
	[ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building nodeward"
"$ROOT/scripts/build.sh" "$WORK" bench >/dev/null # the collector as it ships (C SQLite)
NW=$WORK/nodeward
ulimit -n 20000 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_serve() { # STORE-SPEC
	local port
	port=$(free_port)
	ADDR=127.0.0.1:$port
	"$NW" serve --listen "$ADDR" --store "$1" --log-level warn --retention 0 >"$WORK/serve.log" 2>&1 &
	SERVE_PID=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	cat "$WORK/serve.log"
	return 1
}

# cpu_ms: CPU time (user + system) the collector process has used so far.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d\n", ($14 + $15) * 1000 / hz}' "/proc/$SERVE_PID/stat"; }

# measured LOADTEST-ARGS...: runs loadtest and adds the collector's own CPU
# cost per event, a figure the machine's other load does not change much.
measured() {
	local c0 c1 out n
	c0=$(cpu_ms)
	out=$("$NW" loadtest "$@")
	c1=$(cpu_ms)
	echo "$out"
	n=$(echo "$out" | sed -n 's/^ingest: *\([0-9]*\) events.*/\1/p')
	[ -n "$n" ] && [ "$n" -gt 0 ] && echo "collector CPU: $((c1 - c0)) ms for $n events = $(((c1 - c0) * 1000000 / n)) ns/event (one core's worth: $((n * 1000 / (c1 - c0 + 1))) events/s)"
	return 0
}

stop_serve() {
	kill "$SERVE_PID"
	wait "$SERVE_PID" 2>/dev/null || true
	SERVE_PID=
}

start_postgres() {
	PG_DATA=$WORK/pg/data
	mkdir -p "$WORK/pg"
	chown postgres:postgres "$WORK/pg"
	local fresh=
	if [ ! -d "$PG_DATA" ]; then
		runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
		fresh=yes
	fi
	PG_PORT=$(free_port)
	runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg/pg.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $WORK/pg -c shared_buffers=1GB -c max_wal_size=8GB -c max_connections=200" start >/dev/null
	[ -z "$fresh" ] || psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc 'CREATE DATABASE nodeward'
	PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/nodeward?sslmode=disable"
}

event_count() { # STORE
	if [ "$1" = sqlite ]; then
		[ -f "$WORK/nodeward.db" ] || { echo 0; return; }
		python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$WORK/nodeward.db?mode=ro', uri=True).execute('select max(id) from events').fetchone()[0] or 0)"
	else
		# A new database has no tables until the collector first opens it.
		psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d nodeward -Atc 'select count(*) from events' 2>/dev/null || echo 0
	fi
}

store_size() { # STORE
	if [ "$1" = sqlite ]; then
		du -cb "$WORK"/nodeward.db* | tail -1 | awk '{printf "%.2f GiB (database file plus WAL)\n", $1/2^30}'
	else
		psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d nodeward -Atc \
			"select pg_size_pretty(pg_database_size('nodeward')) || ' (events table ' || pg_size_pretty(pg_total_relation_size('events')) || ' with indexes)'"
	fi
}

for STORE in "${STORES[@]}"; do
	case $STORE in
	sqlite) SPEC=sqlite:$WORK/nodeward.db ;;
	fill-sqlite | fill-postgres)
		# Only fill the store (for a BENCH_DIR reused by later runs).
		if [ "$STORE" = fill-postgres ]; then start_postgres; SPEC=$PG_DSN; S=postgres; else SPEC=sqlite:$WORK/nodeward.db; S=sqlite; fi
		have=$(event_count "$S")
		[ "$have" -ge "$FILL_EVENTS" ] || "$NW" loadtest --fill-store "$SPEC" --agents "$AGENTS" --fill-events $((FILL_EVENTS - have))
		echo "events stored: $(event_count "$S"); store size: $(store_size "$S")"
		if [ "$S" = postgres ]; then runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null; PG_DATA=; fi
		continue
		;;
	postgres)
		start_postgres
		SPEC=$PG_DSN
		;;
	*) echo "unknown store $STORE" >&2; exit 2 ;;
	esac
	echo
	echo "== $STORE: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
	start_serve "$SPEC"
	echo "-- 1. sustained ingest: $AGENTS agents x $RATE events/s for $DURATION"
	measured --server "$ADDR" --agents "$AGENTS" --rate "$RATE" --duration "$DURATION"
	for rate in $TAIL_RATES; do
		echo "-- 2. tail latency: $TAILS tails, $AGENTS agents x $rate events/s for $TAIL_DURATION"
		measured --server "$ADDR" --agents "$AGENTS" --rate "$rate" --duration "$TAIL_DURATION" --tails "$TAILS" --snapshot=false
	done
	stop_serve
	if [ -n "${SKIP_QUERIES:-}" ]; then
		[ "$STORE" != postgres ] || { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null; PG_DATA=; }
		continue
	fi
	have=$(event_count "$STORE")
	echo "-- 3. filling to $FILL_EVENTS events from $AGENTS nodes (has $have)"
	if [ "$have" -lt "$FILL_EVENTS" ]; then
		"$NW" loadtest --fill-store "$SPEC" --agents "$AGENTS" --fill-events $((FILL_EVENTS - have)) | tail -1
	fi
	echo "events stored: $(event_count "$STORE"); store size: $(store_size "$STORE")"
	echo "-- 4. queries over that store"
	start_serve "$SPEC"
	"$NW" loadtest --server "$ADDR" --agents "$AGENTS" --query-only --queries "$QUERIES"
	stop_serve
	if [ "$STORE" = postgres ]; then
		runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
		PG_DATA=
	fi
done
