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
# shellcheck source=bench/lib.sh
. "$REPO_ROOT/bench/lib.sh"

ROWS=${BENCH_PG_ROWS:-1000000}
ZONE_MB=${BENCH_PG_ZONE_MB:-1000}
KEY_LEN=${BENCH_PG_KEY_LEN:-16}
CHECK=${BENCH_PG_CHECK:-1}
WRK=${BENCH_PG_WRK:-1}
SYNC_TIMEOUT=120          # seconds to wait for the full sync line

need_cmd curl "$NGINX_BIN"
need_module
[ "$KEY_LEN" -ge 8 ] || die "BENCH_PG_KEY_LEN must be at least 8"
pg_bench_begin pgsync

log "loading $ROWS rows (keys of $KEY_LEN bytes) in one INSERT"
t0=$(date +%s%N)
zones=(api)
if [ "$WRK" = 1 ]; then zones+=(fast); fi
pg_load_rows bench "$ROWS" "$KEY_LEN" "${zones[@]}"
load_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
table_size=$(pg_psql bench -c "SELECT pg_size_pretty(pg_total_relation_size('rate_limit_buckets'));")
log "loaded in $load_ms ms (table with indexes: $table_size)"

# run_nginx NAME ZONE_SIZE: starts nginx, waits for the full sync, checks a
# few keys, measures the zone's touched memory; leaves SYNC_LINE, SYNC_WALL_MS,
# ZONE_KB, FULL set; stops nginx.
run_nginx() {
    local name=$1 zone=$2 prefix=$WORK/$1 i t_start pid line sample worker
    mkdir -p "$prefix/html" "$prefix/logs" "$prefix/tmp"
    echo ok >"$prefix/html/ok.txt"
    {
        nginx_conf_head "$prefix" 2
        cat <<EOF
    rate_limit_postgres "$(pg_conninfo bench)" interval=60s;
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
    } >"$prefix/nginx.conf"
    t_start=$(date +%s%N)
    start_nginx "$prefix" "$prefix/nginx.conf" "$NGINX_PORT"
    wait_full_sync "$prefix/logs/error.log" "$NGINX_PID" "$SYNC_TIMEOUT"
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
