#!/usr/bin/env bash
# Reproducible place-order benchmark: a release build, a fresh database, `ordo serve` with
# every role in the process, and in one invocation:
#   1. pgbench's one-row insert with one commit each, 32 clients, on the same PostgreSQL;
#   2. Ordo's place-order over HTTP, 32 connections, as fast as it goes;
#   3. the same at half that rate (latency when not saturated);
#   4. the same as 2 with an Idempotency-Key on every command;
#   5. the same as 2 again;
#   6. pgbench again, since a VM's speed can drift within the run; and, the server stopped,
#   7. commit -> worker handler at 1,000 events/s with every role running (`ordo-bench
#      pipeline --all-roles` on a database of its own; it measures the code ordo-bench was
#      built from, not $ORDO; PIPELINE=0 skips it).
# Prints the machine, each report and what it left downstream, then both rates (Ordo's the
# mean of 2 and 5, pgbench's of 1 and 6), their ratio, how far each pair differs, the
# latencies, the keyed rate against the mean of the plain runs on either side of it, and
# the commit -> handler latency.
#
#   scripts/bench.sh                           # 32 clients, 20 s per run
#   CONCURRENCY=64 DURATION=60 scripts/bench.sh
#   scripts/bench.sh --customers 50            # extra arguments go to `ordo-bench place-order`
#
#   BUILD=0 scripts/bench.sh                   # the release binaries as they are, unbuilt
#   BUILD=0 ORDO=/tmp/ordo-before scripts/bench.sh   # another build of ordo (A/B comparisons)
#   HANGING_WEBHOOK=1 scripts/bench.sh         # with a webhook endpoint that never answers
#   ORDO_ROLES=api,projector scripts/bench.sh  # fewer roles in the process (the targets name all)
#
# Uses (and drops) the databases ordo_bench, ordo_bench_pgbench and ordo_bench_pipeline,
# JetStream streams ORDO_BENCH_<pid>* (and the pipeline's own, which it deletes), and ports
# 18088-18089.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DB=ordo_bench
readonly PIPELINE_DB=ordo_bench_pipeline
readonly ADDR=127.0.0.1:18088
readonly URL="http://$ADDR"
readonly ORDO=${ORDO:-./target/release/ordo}
readonly BENCH=./target/release/ordo-bench
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ORDO_HTTP_ADDR=$ADDR
export ORDO_LOG=${ORDO_LOG:-warn}
# JetStream streams of this run alone: a stream left by an earlier run would be replayed
# to the workers (its messages name customers this fresh database never had).
export ORDO_NATS_STREAM=ORDO_BENCH_$$
export ORDO_NATS_SUBJECT_PREFIX=ordo.bench$$
export ORDO_NATS_DLQ_STREAM=${ORDO_NATS_STREAM}_DLQ
export ORDO_NATS_DLQ_SUBJECT_PREFIX=ordo.bench$$-dlq

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

SERVER_PID=
HANG_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in {1..100}; do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -n "$HANG_PID" ]] && kill "$HANG_PID" 2>/dev/null || true
    psql_admin -c "drop database if exists $DB with (force)" || true
    psql_admin -c "drop database if exists $PIPELINE_DB with (force)" || true
    "$BENCH" drop-streams "$ORDO_NATS_STREAM" "${ORDO_NATS_STREAM}_ADVISORIES" "$ORDO_NATS_DLQ_STREAM" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/dev-services
# BUILD=0 runs the release binaries as they are (say, to bench one build several times).
[[ "${BUILD:-1}" == 0 ]] || cargo build --release -p ordo -p ordo-bench

psql_admin -c "drop database if exists $DB with (force)"
# Creates and migrates the database, then prints the key alone on stdout.
KEY=$("$ORDO" keys create --role storefront --name bench)

# HANGING_WEBHOOK=1: register a webhook endpoint (on loopback) that accepts connections and
# never answers, to show that it slows nothing else.
if [[ "${HANGING_WEBHOOK:-0}" == 1 ]]; then
    export ORDO_WEBHOOK_ALLOW_PRIVATE=true
    python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 18089)); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' &
    HANG_PID=$!
fi

"$ORDO" serve &
SERVER_PID=$!

for i in {1..300}; do
    curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "bench: the server exited during start-up" >&2; exit 1; }
    if ((i == 300)); then
        echo "bench: the server did not answer $URL/healthz within 30 s" >&2
        exit 1
    fi
    sleep 0.1
done

# The roles the server runs, as /readyz lists them (its body says so whether ready or not).
READY=$(curl -sS "$URL/readyz")
jq -e '.roles | length > 0' <<<"$READY" >/dev/null 2>&1 || {
    echo "bench: /readyz lists no roles: $READY" >&2
    exit 1
}
ADMIN=$("$ORDO" keys create --role admin --name bench-admin)
if [[ -n "$HANG_PID" ]]; then
    curl -fsS -o /dev/null "$URL/v1/webhooks" -H "authorization: Bearer $ADMIN" \
        -H 'content-type: application/json' -d '{"url": "http://127.0.0.1:18089/hook", "event_types": ["*"]}'
    echo "webhook: one endpoint that accepts and never answers is registered"
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
pg=$(psql_admin -Atc "select current_setting('server_version') || ', fsync ' || current_setting('fsync')
                       || ', synchronous_commit ' || current_setting('synchronous_commit')")
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
echo "postgres: $pg"
echo "ordo: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), release build"
echo "roles: $(jq -r '.roles | keys | join(", ")' <<<"$READY")"

# PostgreSQL's own rate for the same kind of write: one-row inserts, one commit each, from
# 32 clients, on the same server in the same run; timed before Ordo's runs and again after
# them, since a VM's speed can drift by a quarter within minutes: the ratio is against the
# mean of the two, and the summary says how far apart they are.
pgbench_rate() {
    local script tps
    psql_admin -c "drop database if exists ${DB}_pgbench with (force)" -c "create database ${DB}_pgbench" >/dev/null
    psql_admin -d "${DB}_pgbench" -c "create table t (id bigserial primary key, v int not null)" >/dev/null
    script=$(mktemp)
    echo 'INSERT INTO t (v) VALUES (1);' >"$script"
    tps=$(pgbench -h 127.0.0.1 -p 5432 -U postgres -n -c "${CONCURRENCY:-32}" -j 2 -T "${DURATION:-20}" \
              -f "$script" "${DB}_pgbench" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n 1)
    rm -f "$script"
    psql_admin -c "drop database if exists ${DB}_pgbench with (force)" >/dev/null
    [[ -n "$tps" ]] || { echo "bench: pgbench gave no rate" >&2; exit 1; }
    echo "$tps"
}
pg_before=$(pgbench_rate)
echo "pgbench: ${pg_before} one-row inserts/s (one commit each, ${CONCURRENCY:-32} clients)"

place_order() {
    "$BENCH" place-order --url "$URL" --key "$KEY" \
        --concurrency "${CONCURRENCY:-32}" --duration "${DURATION:-20}" "$@"
}
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" | head -n 1; }

# Which downstream roles the server runs (a role name starting with $1, as /readyz lists
# them): with ORDO_ROLES naming fewer roles, the backlogs of the others only grow, so they
# are neither read nor waited for.
runs() {
    jq -e --arg p "$1" '.roles | keys | any(startswith($p))' <<<"$READY" >/dev/null
}
runs projector. && RUNS_PROJECTOR=1 || RUNS_PROJECTOR=0
runs relay && RUNS_RELAY=1 || RUNS_RELAY=0
runs worker. && RUNS_WORKERS=1 || RUNS_WORKERS=0

# The backlog downstream of the log, into three variables: events the read models have still
# to apply, events the relay has still to publish (its gauge on /metrics), messages the
# workers have still to handle; `none` for a role the server does not run.
downstream() {
    projections=none relay=none workers=none
    if ((RUNS_PROJECTOR)); then
        projections=$(curl -fsS "$URL/v1/projections" -H "authorization: Bearer $ADMIN" |
            jq '[.items[].lag_events] | add')
    fi
    if ((RUNS_RELAY)); then
        relay=$(curl -fsS "$URL/metrics" | sed -n 's/^ordo_relay_lag_events \([0-9.e+]*\).*/\1/p')
        relay=${relay:-unknown}
    fi
    if ((RUNS_WORKERS)); then
        workers=$(curl -fsS "$URL/v1/workers" -H "authorization: Bearer $ADMIN" |
            jq '[.items[] | (.pending // 0) + (.in_flight // 0)] | add')
    fi
}

# Whether a backlog from `downstream` is caught up (empty, or its role does not run).
caught_up() { [[ "$1" == none || "$1" =~ ^0(\.0*)?$ ]]; }

# Before each run, wait (at most 120 s) until every read model, the relay and every worker
# that runs have caught up with the log, so that no run pays for the backlog of the one
# before.
settle() {
    local i projections relay workers
    for ((i = 0; i < 1200; i++)); do
        downstream
        if caught_up "$projections" && caught_up "$relay" && caught_up "$workers"; then
            # The same start for every run: the previous run's garbage vacuumed, statistics
            # fresh, and no checkpoint of its writes falling into the next run.
            psql_admin -d "$DB" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
            return 0
        fi
        sleep 0.1
    done
    # A run measured beside a backlog (or a relay that cannot reach NATS) would time
    # something else than the targets name.
    echo "bench: the read models, relay and workers did not catch up within 120 s" \
        "(read models $projections, relay $relay, workers $workers)" >&2
    exit 1
}

# A backlog from `downstream` in words: "$1 $2", or "not running".
backlog() { if [[ "$1" == none ]]; then echo "not running"; else echo "$1 $2"; fi; }

# What a run left downstream the moment its load stopped. A rate bought by letting the
# read models, the relay or the workers fall behind shows here (and grows with the run's
# length), not in the rate.
left_behind() {
    local projections relay workers
    downstream
    echo "left downstream when the load stopped: read models $(backlog "$projections" events)," \
        "relay $(backlog "$relay" events), workers $(backlog "$workers" messages)"
}

# One run after the last one's backlog: its heading, then its report, printed and kept in
# $report, then what it left downstream. Arguments go to place_order.
phase() {
    local title=$1
    shift
    echo
    echo "== $title"
    settle
    report=$(place_order "$@")
    echo "$report"
    left_behind
}

phase "full rate" "$@"
full=$report
rate=$(echo "$full" | field throughput:)
phase "half rate ($((${rate%.*} / 2))/s)" --rate "$((${rate%.*} / 2))" "$@"
half=$report
phase "full rate, each command with an Idempotency-Key" --idempotency-keys "$@"
keyed_rate=$(echo "$report" | field throughput:)
phase "full rate again" "$@"
rate_again=$(echo "$report" | field throughput:)

echo
echo "== pgbench again"
settle
pg_after=$(pgbench_rate)
echo "pgbench: ${pg_after} one-row inserts/s"

# 7. The workers' latency target, at 1,000 events/s (a rate, not the peak): a lingering
# reader would show here, not in the rates above.
pipeline=
if [[ "${PIPELINE:-1}" != 0 ]]; then
    echo
    echo "== commit -> worker handler at 1,000 events/s, every role (ordo-bench pipeline)"
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    # Stopped: the clean-up must not signal whatever process gets this pid next.
    SERVER_PID=
    psql_admin -c "drop database if exists $PIPELINE_DB with (force)" -c "create database $PIPELINE_DB"
    pipeline=$(DATABASE_URL="postgres://postgres@127.0.0.1:5432/$PIPELINE_DB" \
        timeout 300 "$BENCH" pipeline --events 20000 --rate 1000 --duration "${DURATION:-20}" --all-roles |
        grep 'commit -> analytics handler')
    echo "$pipeline"
fi

echo
echo "== summary"
awk -v o1="$rate" -v o2="$rate_again" -v p1="$pg_before" -v p2="$pg_after" -v k="$keyed_rate" \
    -v p50="$(echo "$full" | field p50)" -v p99="$(echo "$full" | field p99)" \
    -v h50="$(echo "$half" | field p50)" -v h99="$(echo "$half" | field p99)" '
function drift(a, b,   d) {
    d = 100 * (b - a) / a
    return sprintf("%.0f/s and %.0f/s (%+.0f %%)%s", a, b, d,
        (d > 10 || d < -10) ? "; more than 10 % apart: the machine or Ordo changed speed during the run, compare with care" : "")
}
BEGIN {
    o = (o1 + o2) / 2
    p = (p1 + p2) / 2
    printf "ordo place-order: %.0f/s   pgbench one-insert-per-commit: %.0f/s   ratio: %.2f\n", o, p, o / p
    printf "ordo first and last: %s\n", drift(o1, o2)
    printf "pgbench before and after: %s\n", drift(p1, p2)
    printf "latency at full rate: p50 %s ms  p99 %s ms;  at half rate: p50 %s ms  p99 %s ms\n", p50, p99, h50, h99
    printf "with Idempotency-Key: %.0f/s (%.0f %% of the plain runs before and after it)\n", k, 100 * k / o
}'
if [[ -n "$pipeline" ]]; then
    echo "commit -> worker handler at 1,000 events/s: p50 $(echo "$pipeline" | field p50) ms" \
        " p99 $(echo "$pipeline" | field p99) ms (target p99 < 50 ms)"
fi
