#!/usr/bin/env bash
# Full sync of per-client limits from PostgreSQL: how long nginx takes to read
# a large rate_limit_buckets table at start, and how much zone memory the
# rows need.
#
# A throw-away PostgreSQL cluster (initdb in a temp folder, 127.0.0.1 on a free
# port, run as the "postgres" user when this runs as root) gets ROWS rows in
# one INSERT ... generate_series; then nginx starts with the module and one
# zone of ZONE_SIZE, and the script reads "full sync of N rows in M ms" from
# the error log.  Zone memory: the shared-memory pages the syncing worker has
# touched in the zone's mapping (/proc/PID/smaps, Rss), which is what the rows
# and the slab allocator's bookkeeping occupy.  A second run with a zone of
# that size, plus the eighth of a zone that rows leave to buckets, plus 5%
# (at least 1 MB) checks that all rows fit ("zone is full" is an [alert] in
# the error log otherwise).  Request cost: wrk, side by side in one nginx,
# on a zone that holds the rows and on one that holds none, with a key that
# is not among the rows, so each request searches the full tree and then
# takes the zone's generous default.
#
#   BENCH_PG_ROWS       rows to load (default 1000000)
#   BENCH_PG_ZONE_MB    zone size of the first run, in MB (default 1000)
#   BENCH_PG_KEY_LEN    length of each key (default 16)
#   BENCH_PG_CHECK=0    skip the second run
#   BENCH_PG_WRK=0      skip the request-cost comparison
#   BENCH_KEEP=1        keep the temp folder
#   RATE_LIMIT_MODULE   the module (default build/ngx_http_rate_limit_module.so)
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

ROWS=${BENCH_PG_ROWS:-1000000}
ZONE_MB=${BENCH_PG_ZONE_MB:-1000}
KEY_LEN=${BENCH_PG_KEY_LEN:-16}
CHECK=${BENCH_PG_CHECK:-1}
WRK=${BENCH_PG_WRK:-1}
SYNC_TIMEOUT=120          # seconds to wait for the full sync line

if [ -z "${PG_BINDIR:-}" ]; then
    PG_BINDIR=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
[ -x "$PG_BINDIR/initdb" ] || die "PostgreSQL not found (apt-get install postgresql-15, or set PG_BINDIR)"
need_cmd curl "$NGINX_BIN"
need_module
[ "$KEY_LEN" -ge 8 ] || die "BENCH_PG_KEY_LEN must be at least 8"

WORK=
PG_DATA=
AS_PG=()

pg_stop() {
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop \
            >/dev/null 2>&1 || true
    fi
}

cleanup() {
    stop_all
    pg_stop
    if [ -n "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WORK=$(make_workdir pgsync)
mapfile -t PORTS < <(free_ports 2)
PG_PORT=${PORTS[0]} NGINX_PORT=${PORTS[1]}
PG_DIR=$WORK/pg
PG_DATA=$PG_DIR/data
mkdir -p "$PG_DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PG_DIR"
    AS_PG=(runuser -u postgres --)
fi

log "PostgreSQL: initdb in $PG_DIR, 127.0.0.1:$PG_PORT"
"${AS_PG[@]}" "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --no-locale \
    --no-sync --no-instructions >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_DIR'
fsync = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
EOF
"${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w -t 60 start \
    >/dev/null || { tail -n 20 "$PG_DIR/postgres.log" >&2; die "PostgreSQL did not start"; }

psql_do() {
    "$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        -d bench "$@"
}
"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE DATABASE bench;"
psql_do -f "$REPO_ROOT/config/rate_limit_schema.sql"

log "loading $ROWS rows (keys of $KEY_LEN bytes) in one INSERT"
t0=$(date +%s%N)
psql_do -c "INSERT INTO rate_limit_buckets (zone, key, rate, burst)
            SELECT z, 'k' || lpad(g::text, $KEY_LEN - 1, '0'),
                   (g % 100 + 1) || 'r/s', g % 1000 + 1
            FROM generate_series(1, $ROWS) AS g,
                 (VALUES ('api'), ('fast')) AS zones (z)
            WHERE z = 'api' OR $WRK = 1;"
load_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
table_size=$(psql_do -c "SELECT pg_size_pretty(pg_total_relation_size('rate_limit_buckets'));")
log "loaded in $load_ms ms (table with indexes: $table_size)"

# run_nginx NAME ZONE_SIZE: starts nginx, waits for the full sync, checks a
# few keys, measures the zone's touched memory; leaves SYNC_LINE, SYNC_WALL_MS,
# ZONE_KB, FULL set; stops nginx.
run_nginx() {
    local name=$1 zone=$2 prefix=$WORK/$1 i t_start pid line sample worker
    mkdir -p "$prefix/html" "$prefix/logs" "$prefix/tmp"
    echo ok >"$prefix/html/ok.txt"
    cat >"$prefix/nginx.conf" <<EOF
load_module $MODULE_SO;
worker_processes 2;
error_log $prefix/logs/error.log info;
pid $prefix/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $prefix/tmp;
    rate_limit_postgres "host=127.0.0.1 port=$PG_PORT user=postgres dbname=bench" interval=60s;
    rate_limit_zone \$http_x_key zone=api:$zone rate=100r/s burst=100;
    rate_limit_zone \$http_x_key zone=fast:$((${zone%m} + 1))m rate=1000000r/s burst=1000000;
    rate_limit_zone \$http_x_key zone=none:1m rate=1000000r/s burst=1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $prefix/html;
        location / { rate_limit zone=api; try_files /ok.txt =404; }
        location /rows/ { rate_limit zone=fast; try_files /ok.txt =404; }
        location /none/ { rate_limit zone=none; try_files /ok.txt =404; }
    }
}
EOF
    t_start=$(date +%s%N)
    start_nginx "$prefix" "$prefix/nginx.conf" "$NGINX_PORT"
    SYNC_LINE=
    for ((i = 0; i < SYNC_TIMEOUT * 10; i++)); do
        SYNC_LINE=$(grep -o 'rate_limit_postgres: full sync of [0-9]* rows in [0-9]* ms' \
            "$prefix/logs/error.log" | head -n 1 || true)
        [ -n "$SYNC_LINE" ] && break
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited: $(tail -n 5 "$prefix/logs/error.log")"
        sleep 0.1
    done
    [ -n "$SYNC_LINE" ] || die "no full sync line after ${SYNC_TIMEOUT}s"
    SYNC_WALL_MS=$(( ($(date +%s%N) - t_start) / 1000000 ))

    # a few keys must show their own burst
    for sample in 1 $((ROWS / 2)) "$ROWS"; do
        line=$(curl -s -o /dev/null -D - --max-time 5 \
                -H "X-Key: k$(printf "%0$((KEY_LEN - 1))d" "$sample")" \
                "http://127.0.0.1:$NGINX_PORT/x" | tr -d '\r' \
               | sed -n 's/^X-RateLimit-Limit: //Ip')
        [ "$line" = $((sample % 1000 + 1)) ] \
            || warn "key $sample: X-RateLimit-Limit '$line', expected $((sample % 1000 + 1))"
    done

    # the syncing worker: the one that logged "this worker syncs"
    worker=$(sed -n 's/.*\[info\] \([0-9]*\)#.*this worker syncs.*/\1/p' \
             "$prefix/logs/error.log" | tail -n 1)
    ZONE_KB=$(awk -v want="$(( ${zone%m} * 1024 ))" '
        /^[0-9a-f]+-[0-9a-f]+ / { inmap = 0 }
        /^[0-9a-f]+-[0-9a-f]+ .*\/dev\/zero/ { inmap = 1 }
        inmap && /^Size:/ { size = $2 }
        inmap && /^Rss:/ && size == want { print $2; exit }' "/proc/$worker/smaps" 2>/dev/null || true)
    FULL=$(grep -c 'is full' "$prefix/logs/error.log" || true)

    if [ "$WRK" = 1 ] && [ "$name" = run1 ]; then
        wrk_compare
    fi

    forget_pid "$NGINX_PID"
}

# wrk_compare: requests/s on /rows/ (a zone holding ROWS rows) and /none/
# (a zone holding none), twice in turn; the ratio uses the best of each
wrk_compare() {
    local round where rps best_rows=0 best_none=0
    for round in 1 2; do
        for where in rows none; do
            rps=$(wrk -t1 -c16 -d3s -H "X-Key: not-a-row-key" \
                    "http://127.0.0.1:$NGINX_PORT/$where/x" \
                  | sed -n 's/^Requests\/sec: *\([0-9]*\).*/\1/p')
            log "  wrk round $round, /$where/: $rps requests/s"
            if [ "$where" = rows ]; then
                [ "$rps" -gt "$best_rows" ] && best_rows=$rps
            else
                [ "$rps" -gt "$best_none" ] && best_none=$rps
            fi
        done
    done
    WRK_RATIO=$(awk -v a="$best_rows" -v b="$best_none" 'BEGIN { printf "%.2f", a / b }')
    log "  request cost: a zone of $ROWS rows vs one of none, throughput ratio $WRK_RATIO"
}

log ""
log "run 1: zone of ${ZONE_MB}m"
run_nginx run1 "${ZONE_MB}m"
SYNC1=$SYNC_LINE WALL1=$SYNC_WALL_MS KB1=$ZONE_KB FULL1=$FULL
[ "$FULL1" = 0 ] || warn "the ${ZONE_MB}m zone was full: raise BENCH_PG_ZONE_MB"
[ -n "$KB1" ] || die "could not find the zone's mapping in /proc/PID/smaps"
log "  $SYNC1 (nginx start to sync done: $WALL1 ms)"
log "  zone memory touched by the rows: $((KB1 / 1024)) MB ($((KB1 * 1024 / ROWS)) bytes a row)"

if [ "$CHECK" = 1 ]; then
    need_mb=$(( (KB1 * 8 * 105 / (7 * 100) + 1023) / 1024 ))
    [ "$need_mb" -ge 1 ] || need_mb=1
    log ""
    log "run 2: zone of ${need_mb}m (measured, the eighth kept for buckets, + 5%)"
    run_nginx run2 "${need_mb}m"
    log "  $SYNC_LINE (nginx start to sync done: $SYNC_WALL_MS ms)"
    if [ "$FULL" != 0 ]; then
        warn "a zone of ${need_mb}m is too small for $ROWS rows"
    else
        log "  all $ROWS rows fit in ${need_mb}m"
    fi
fi

synced=${SYNC1#*full sync of } synced=${synced%% *}
sync_ms=${SYNC1% ms} sync_ms=${sync_ms##* }
log ""
log "summary: rows=$ROWS load_ms=$load_ms synced=$synced full_sync_ms=$sync_ms" \
    "start_to_synced_ms=$WALL1 zone_mb_needed=$(( (KB1 + 1023) / 1024 ))" \
    "bytes_per_row=$((KB1 * 1024 / ROWS))" "wrk_ratio_rows_vs_none=${WRK_RATIO:-skipped}"
