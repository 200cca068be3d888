#!/usr/bin/env bash
# Reproducible place-order benchmark: a release build, a fresh database, one server, one
# load run. Prints the machine it ran on, then the `ordo-bench place-order` report.
#
#   scripts/bench.sh                           # 32 clients for 20 s, as fast as possible
#   CONCURRENCY=64 DURATION=60 scripts/bench.sh
#   scripts/bench.sh --rate 2000               # extra arguments go to `ordo-bench place-order`
#
# Uses (and drops) the database ordo_bench and port 18088.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

readonly DB=ordo_bench
readonly ADDR=127.0.0.1:18088
readonly URL="http://$ADDR"
readonly ORDO=./target/release/ordo
readonly BENCH=./target/release/ordo-bench
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export ORDO_HTTP_ADDR=$ADDR
export ORDO_LOG=${ORDO_LOG:-warn}

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

SERVER_PID=
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
    psql_admin -c "drop database if exists $DB with (force)" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/dev-services
cargo build --release -p ordo -p ordo-bench

psql_admin -c "drop database if exists $DB with (force)"
# Creates and migrates the database, then prints the key alone on stdout.
KEY=$("$ORDO" keys create --role storefront --name bench)

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

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
pg=$(psql_admin -Atc "select current_setting('server_version') || ', fsync ' || current_setting('fsync')
                       || ', synchronous_commit ' || current_setting('synchronous_commit')")
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) RAM"
echo "postgres: $pg"
echo "ordo: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)'), release build"

"$BENCH" place-order --url "$URL" --key "$KEY" \
    --concurrency "${CONCURRENCY:-32}" --duration "${DURATION:-20}" "$@"
