#!/usr/bin/env bash
# Where the CPU goes per place-order command: the release `ordo serve` on a fresh database,
# 32 clients of `ordo-bench place-order` at full rate, and the CPU time of each process
# (`ordo`, every PostgreSQL backend, nats-server, the load generator) over a steady window
# of the run, divided by the orders committed in that window; and the write-ahead log the
# whole server wrote in that window per command (records, full-page images, bytes).
#
#   scripts/bench-cost.sh                         # every role in the process
#   ROLES=api scripts/bench-cost.sh               # the write path alone (also api,projector …)
#   scripts/bench-cost.sh --rate 700              # extra arguments go to `ordo-bench place-order`
#   scripts/bench-cost.sh --stages                # downstream roles alone, over a backlog
#   ORDO=/tmp/ordo-before scripts/bench-cost.sh   # another build of ordo (A/B comparisons)
#   CONCURRENCY=64 scripts/bench-cost.sh          # more clients than the 32 of the targets
#   STATEMENTS=1 scripts/bench-cost.sh            # and PostgreSQL's time per statement (below)
#
# STATEMENTS=1 also prints, for the window, the statements that took PostgreSQL the most
# time, per command. It needs pg_stat_statements loaded by the server (as a superuser:
# `ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'`, then a restart); the
# extension is created in the database `postgres`, never in Ordo's. Execution time is wall
# time, waits included: read it as shares, not as CPU.
#
# --stages writes a backlog with the API alone, then runs the relay alone and the JetStream
# workers alone until each has caught up, and prints each one's rate and CPU per event.
#
# Uses the release binaries as they are (build them first: `cargo build --release -p ordo
# -p ordo-bench`), the database ordo_cost (dropped afterwards), JetStream streams
# ORDO_COST_<pid>*, and ports 18288-18289. Linux only (/proc).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DB=ordo_cost
readonly ORDO=${ORDO:-./target/release/ordo}
readonly BENCH=./target/release/ordo-bench
readonly URL=http://127.0.0.1:18288
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ORDO_HTTP_ADDR=127.0.0.1:18288
export ORDO_LOG=${ORDO_LOG:-error}
export ORDO_NATS_STREAM=ORDO_COST_$$
export ORDO_NATS_SUBJECT_PREFIX=ordo.cost$$
export ORDO_NATS_DLQ_STREAM=${ORDO_NATS_STREAM}_DLQ
export ORDO_NATS_DLQ_SUBJECT_PREFIX=ordo.cost$$-dlq

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -h 127.0.0.1 -U postgres -d postgres "$@"; }
query() { psql -X -q -At -h 127.0.0.1 -U postgres -d "$DB" -c "$1"; }

SERVER_PID=
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
cleanup() {
    stop_server
    psql_admin -c "drop database if exists $DB with (force)" || true
    "$BENCH" drop-streams "$ORDO_NATS_STREAM" "${ORDO_NATS_STREAM}_ADVISORIES" "$ORDO_NATS_DLQ_STREAM" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

serve() { # roles, address
    ORDO_HTTP_ADDR=$2 "$ORDO" serve --roles "$1" &
    SERVER_PID=$!
    for _ in {1..300}; do
        curl -fsS -o /dev/null "http://$2/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-cost: the server did not answer on $2 within 30 s" >&2
    exit 1
}

# CPU ticks (1/100 s) of a process; of every PostgreSQL process; of the whole machine.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
postgres_ticks() {
    local total=0 pid
    for pid in $(pgrep -u postgres); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
NATS_PID=$(pgrep -x nats-server | head -n 1)
[[ -n "$NATS_PID" ]] || { echo "bench-cost: no nats-server running (scripts/dev-services)" >&2; exit 1; }

scripts/dev-services >/dev/null
psql_admin -c "drop database if exists $DB with (force)"
KEY=$("$ORDO" keys create --role storefront --name bench-cost)

if [[ "${1:-}" == --stages ]]; then
    serve api 127.0.0.1:18288
    "$BENCH" place-order --url "$URL" --key "$KEY" --concurrency "${CONCURRENCY:-32}" --duration "${DURATION:-10}" |
        sed -n 's/^throughput: /backlog written at /p'
    stop_server
    events=$(query "select count(*) from event_store.events")
    stage() { # name, roles, SQL that is true once the stage has caught up
        local pg0 nats0 started pg1 nats1 own
        pg0=$(postgres_ticks) nats0=$(ticks "$NATS_PID") started=$(date +%s.%N)
        serve "$2" 127.0.0.1:18289
        until [[ "$(query "$3")" == t ]]; do sleep 0.1; done
        own=$(ticks "$SERVER_PID") pg1=$(postgres_ticks) nats1=$(ticks "$NATS_PID")
        local took
        took=$(echo "$(date +%s.%N) - $started" | bc)
        stop_server
        awk -v s="$1" -v n="$events" -v t="$took" -v o="$own" -v p=$((pg1 - pg0)) -v q=$((nats1 - nats0)) 'BEGIN {
            printf "%-10s %d events in %.1f s (%.0f events/s); ms CPU per event: ordo %.3f  postgres %.3f  nats %.3f  total %.3f\n",
                s, n, t, n / t, o * 10 / n, p * 10 / n, q * 10 / n, (o + p + q) * 10 / n }'
    }
    stage relay relay "select coalesce((select max(global_position) from relay.checkpoint)
                                       >= (select max(global_position) from event_store.events), false)"
    stage workers workers "select (select count(*) from notification.processed) >= $events
                              and (select count(*) from analytics.processed) >= $events
                              and (select count(*) from integration.processed) >= $events"
    stage projector projector "select count(*) = 3 and coalesce(bool_and(global_position >= (select max(global_position)
                                                from event_store.events)), false) from projections.checkpoints"
    exit 0
fi

serve "${ROLES:-api,projector,process-manager,relay,workers}" 127.0.0.1:18288
duration=${DURATION:-15}
"$BENCH" place-order --url "$URL" --key "$KEY" --concurrency "${CONCURRENCY:-32}" --duration "$duration" "$@" >"/tmp/bench-cost.$$" &
bench_pid=$!
# The window: from 4 s into the orders (the load generator registers its customers first,
# which takes a while with `--customers 60000`; its warm-up is then over) to 3 s before
# their end.
until [[ "$(query "select exists (select from event_store.events where aggregate_type = 'order')")" == t ]]; do
    kill -0 "$bench_pid" 2>/dev/null || break
    sleep 0.2
done
sleep 4
snapshot() {
    echo "$(ticks "$SERVER_PID") $(postgres_ticks) $(ticks "$NATS_PID") $(ticks "$bench_pid") $(machine_ticks)" \
        "$(query "select count(*) from event_store.events where event_type = 'order.placed'")" \
        "$(query "select xact_commit from pg_stat_database where datname = current_database()")" \
        "$(query "select wal_records || ' ' || wal_fpi || ' ' || wal_bytes from pg_stat_wal")"
}
statements() { psql_admin -At -v ON_ERROR_STOP=1 "$@"; }
if [[ "${STATEMENTS:-0}" == 1 ]]; then
    [[ "$(statements -c "show shared_preload_libraries")" == *pg_stat_statements* ]] || {
        echo "bench-cost: STATEMENTS=1 needs pg_stat_statements in shared_preload_libraries" >&2
        exit 1
    }
    statements -c "create extension if not exists pg_stat_statements" \
        -c "select pg_stat_statements_reset(0, (select oid from pg_database where datname = '$DB'), 0)" >/dev/null
fi
read -r o0 p0 n0 b0 m0 e0 x0 r0 f0 w0 < <(snapshot)
sleep $((duration - 7))
read -r o1 p1 n1 b1 m1 e1 x1 r1 f1 w1 < <(snapshot)
if [[ "${STATEMENTS:-0}" == 1 ]]; then
    statements -F $'\t' -c "
        select round((total_exec_time / $((e1 - e0)))::numeric, 4), round((calls * 1000.0 / $((e1 - e0)))::numeric, 1),
               round((rows::numeric / $((e1 - e0))), 2),
               round((100 * total_exec_time / sum(total_exec_time) over ())::numeric, 1),
               left(regexp_replace(regexp_replace(query, '--[^\n]*', '', 'g'), '\s+', ' ', 'g'), 90)
          from pg_stat_statements where dbid = (select oid from pg_database where datname = '$DB')
         order by total_exec_time desc limit ${TOP:-15}" >"/tmp/bench-cost-statements.$$"
fi
wait "$bench_pid"
cat "/tmp/bench-cost.$$"
rm -f "/tmp/bench-cost.$$"
if [[ -s "/tmp/bench-cost-statements.$$" ]]; then
    printf 'PostgreSQL statements in the window, by execution time:\n%10s %10s %8s %6s  %s\n' \
        "ms/command" "calls/1000" "rows/cmd" "share" "statement"
    awk -F '\t' '{ printf "%10s %10s %8s %5s%%  %s\n", $1, $2, $3, $4, $5 }' "/tmp/bench-cost-statements.$$"
    rm -f "/tmp/bench-cost-statements.$$"
fi
awk -v c=$((e1 - e0)) -v o=$((o1 - o0)) -v p=$((p1 - p0)) -v n=$((n1 - n0)) -v b=$((b1 - b0)) -v m=$((m1 - m0)) -v x=$((x1 - x0)) \
    -v r=$((r1 - r0)) -v f=$((f1 - f0)) -v w=$((w1 - w0)) 'BEGIN {
    printf "window: %d orders; ms CPU per command: ordo %.3f  postgres %.3f  nats %.3f  load generator %.3f  machine %.3f; PostgreSQL transactions per command %.2f\n",
        c, o * 10 / c, p * 10 / c, n * 10 / c, b * 10 / c, m * 10 / c, x / c
    printf "WAL per command (the whole server): %.1f records, %.2f full-page images, %.0f bytes\n", r / c, f / c, w / c }'
