#!/usr/bin/env bash
# Instructions per request, with valgrind's callgrind: unlike wall time on
# this machine's 2 shared cores, they repeat from run to run.
#
# For each setup, nginx runs as ONE process under callgrind (master_process
# off, daemon off, worker_processes 1), with the confs of bench/run.sh:
#   plain     plain nginx                                bench/plain.conf
#   limit_req nginx's limit_req, for reference           bench/limit_req.conf
#   local     the module, backend=local                  bench/local.conf
#   redis     the module, backend=redis, a new key every bench/redis.conf
#             request: every request decided by Redis
#   redis_tls the same as redis, nginx reaching Redis    bench/redis.conf
#             over TLS (bench/tls.sh, as bench/run.sh's
#             setup of the same name)
#   abuse     the module, backend=redis, one key far     bench/redis.conf
#             over its limit: the requests are rejected
#   rows      local, plus a zone of BENCH_PROFILE_ROWS   bench/rows.conf
#             per-client rows synced from PostgreSQL;
#             the requests' keys are not among them
#   norows    the same conf, zone size and sync, on a    bench/rows.conf
#             database of no rows
# rows and norows share one throw-away PostgreSQL (bench/lib.sh), a database
# each; they are meant to run side by side (BENCH_PROFILE_SETUPS="norows
# rows"), and the table ends with their ratio of total instructions.  Before
# the warm-up, nginx must log "full sync of N rows", N all the rows.  Under
# valgrind a full sync of 1,000,000 rows is slow (PostgreSQL's rows parsed
# and stored at callgrind's pace, a minute or more), so the wait is bounded
# by a generous BENCH_PROFILE_SYNC_TIMEOUT.
# bench/http_load.py sends BENCH_PROFILE_WARMUP requests, then callgrind's
# counters are zeroed (callgrind_control -z), then it sends exactly
# BENCH_PROFILE_REQUESTS requests on BENCH_PROFILE_CONNECTIONS keep-alive
# connections, and the counters are dumped (callgrind_control -d).  The
# dump's instructions over the request count give, per request:
#   total    the whole nginx process (user space; the kernel is not counted)
#   vs plain that minus plain nginx's total: all the limiter costs
#   module   the own instructions of the module's .so (C module and C++
#            core), of libhiredis, and of any function whose name matches
#            ngx_http_rate_limit_|rate_limit|redis|hiredis|gcra
# and the top functions (bench/callgrind_summary.py).
#
#   RATE_LIMIT_MODULE           the module (default build/ngx_http_rate_limit_module.so)
#   BENCH_PROFILE_SETUPS        default "plain limit_req local redis abuse"
#   BENCH_PROFILE_REQUESTS      requests measured (default 20000)
#   BENCH_PROFILE_WARMUP        requests before the counters are zeroed (default 1000)
#   BENCH_PROFILE_CONNECTIONS   connections of the client (default 8)
#   BENCH_PROFILE_TOP           functions listed per setup (default 15)
#   BENCH_PROFILE_ROWS          rows of the rows setup (default 1000000)
#   BENCH_PROFILE_ROWS_ZONE     size of the zone that holds them, in both
#                               setups (default 256m: today a row takes
#                               128 bytes, and rows leave an eighth of the
#                               zone to buckets)
#   BENCH_PROFILE_SYNC_TIMEOUT  seconds to wait for the full sync under
#                               valgrind (default 1200)
#   BENCH_PROFILE_OUT           a folder to keep the dumps and summaries in,
#                               for callgrind_annotate (default: none)
#   BENCH_KEEP=1                keep the temp folder
# Takes about 2 minutes with the default setups; "norows rows" about 6
# (the full sync of 1,000,000 rows under valgrind takes 4 of them).
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
# shellcheck source=bench/lib.sh
. "$REPO_ROOT/bench/lib.sh"
# shellcheck source=bench/tls.sh
. "$REPO_ROOT/bench/tls.sh"

read -r -a SETUPS <<<"${BENCH_PROFILE_SETUPS:-plain limit_req local redis abuse}"
REQUESTS=${BENCH_PROFILE_REQUESTS:-20000}
WARMUP_REQUESTS=${BENCH_PROFILE_WARMUP:-1000}
CONNECTIONS=${BENCH_PROFILE_CONNECTIONS:-8}
TOP=${BENCH_PROFILE_TOP:-15}
OUT=${BENCH_PROFILE_OUT:-}
ROWS=${BENCH_PROFILE_ROWS:-1000000}
ROWS_ZONE=${BENCH_PROFILE_ROWS_ZONE:-256m}
SYNC_TIMEOUT=${BENCH_PROFILE_SYNC_TIMEOUT:-1200}
START_TIMEOUT=60          # seconds for nginx to answer under valgrind

declare -A CONF=([plain]=plain [limit_req]=limit_req [local]=local [redis]=redis
                 [redis_tls]=redis [abuse]=redis
                 [rows]=rows [norows]=rows)
declare -A PG_ROWS=([rows]=$ROWS [norows]=0)   # the setups with PostgreSQL
declare -A URI=([abuse]=/abuse/hello.txt)
declare -A KEYS=([abuse]=one)
declare -A STATUSES=([abuse]="200,429")
declare -A TOTAL MODULE

# load SETUP COUNT SALT: COUNT requests of SETUP's kind
load() {
    "$PY" "$BENCH_DIR/http_load.py" "$NGINX_PORT" "${URI[$1]:-/bench/hello.txt}" "$2" \
        "$CONNECTIONS" "${KEYS[$1]:-unique}" "$3" "${STATUSES[$1]:-200}"
}

# profile SETUP: one nginx under callgrind; leaves TOTAL and MODULE [SETUP]
profile() {
    local setup=$1 prefix=$WORK/$1 pid i code dump summary
    case $setup in plain|limit_req) ;; *) need_module ;; esac
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" FLUSHALL >/dev/null
    if [ -n "${PG_ROWS[$setup]:-}" ]; then
        bench_site "$prefix" "${CONF[$setup]}" 0 PG="$(pg_conninfo "$setup")" \
            ROWS_ZONE="$ROWS_ZONE"
    else
        bench_site "$prefix" "${CONF[$setup]}" 0
    fi
    [ "$setup" != redis_tls ] || tls_rewrite_conf "$prefix/nginx.conf"
    "$NGINX_BIN" -t -q -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
        || die "nginx -t failed for $setup"
    valgrind --tool=callgrind --callgrind-out-file="$prefix/callgrind.out.%p" \
        --log-file="$prefix/valgrind.log" \
        "$NGINX_BIN" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" \
        -g 'daemon off; master_process off;' </dev/null >"$prefix/logs/stdout.log" 2>&1 &
    pid=$!
    remember_pid "$pid" "nginx under callgrind :$NGINX_PORT"
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null || true)
        [ -z "$code" ] || [ "$code" = 000 ] || break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$code" ] || [ "$code" = 000 ]; then
        cat "$prefix/valgrind.log" "$prefix/logs/error.log" >&2
        die "$setup: nginx did not start"
    fi
    if [ -n "${PG_ROWS[$setup]:-}" ]; then
        wait_full_sync "$prefix/logs/error.log" "$pid" "$SYNC_TIMEOUT"
        log "$setup: $SYNC_LINE (under valgrind)"
        case $SYNC_LINE in
            *"full sync of ${PG_ROWS[$setup]} rows "*) ;;
            *) die "$setup: expected a full sync of ${PG_ROWS[$setup]} rows" ;;
        esac
    fi

    load "$setup" "$WARMUP_REQUESTS" wup >"$prefix/warmup.txt" \
        || { cat "$prefix/warmup.txt" >&2; die "$setup: warm-up requests failed"; }
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "$setup: callgrind_control -z failed"
    load "$setup" "$REQUESTS" run >"$prefix/load.txt" \
        || { cat "$prefix/load.txt" >&2; die "$setup: the measured requests failed"; }
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "$setup: callgrind_control -d failed"
    dump=$prefix/callgrind.out.$pid.1
    for ((i = 0; i < 100; i++)); do [ -s "$dump" ] && break; sleep 0.1; done
    [ -s "$dump" ] || die "$setup: no callgrind dump $dump"
    forget_pid "$pid"
    if grep -E '\[(alert|emerg|crit)\]' "$prefix/logs/error.log" >&2; then
        die "$setup: nginx logged alerts (above)"
    fi

    summary=$prefix/summary.txt
    "$PY" "$BENCH_DIR/callgrind_summary.py" "$dump" "$REQUESTS" "$TOP" >"$summary"
    local total module
    read -r _ total _ module < <(head -n 1 "$summary")
    TOTAL[$setup]=$total MODULE[$setup]=$module
    log ""
    log "== $setup: responses $(tr '\n' ' ' <"$prefix/load.txt")"
    tail -n +2 "$summary"
    if [ -n "$OUT" ]; then
        cp "$dump" "$OUT/callgrind.$setup.out"
        cp "$summary" "$OUT/callgrind.$setup.txt"
    fi
}

main() {
    need_cmd valgrind callgrind_control redis-server redis-cli curl "$NGINX_BIN"
    local setup pg=0
    for setup in "${SETUPS[@]}"; do
        [ -n "${CONF[$setup]:-}" ] \
            || die "unknown setup '$setup' (plain limit_req local redis redis_tls abuse rows norows)"
        [ -z "${PG_ROWS[$setup]:-}" ] || pg=1
    done
    [ "$pg" = 0 ] || pg_find
    if [[ " ${SETUPS[*]} " == *" redis_tls "* ]]; then
        need_cmd openssl
        bench_begin profile tls
    else
        bench_begin profile
    fi
    if [ "$pg" = 1 ]; then
        pg_start "$WORK/pg" "$(free_ports 1)"
        for setup in "${SETUPS[@]}"; do
            [ -n "${PG_ROWS[$setup]:-}" ] || continue
            pg_create_db "$setup"
            [ "${PG_ROWS[$setup]}" = 0 ] && continue
            log "$setup: loading ${PG_ROWS[$setup]} rows into PostgreSQL"
            pg_load_rows "$setup" "${PG_ROWS[$setup]}" 16 rows
        done
    fi
    log "callgrind, $REQUESTS requests after $WARMUP_REQUESTS, $CONNECTIONS connections;" \
        "setups: ${SETUPS[*]}"
    for setup in "${SETUPS[@]}"; do
        profile "$setup"
    done

    log ""
    log "== instructions per request (callgrind, $REQUESTS requests, one nginx process)"
    log ""
    printf '| %-6s | %10s | %10s | %10s |\n' setup total "vs plain" module
    printf '|%s|%s|%s|%s|\n' "--------" "-----------:" "-----------:" "-----------:"
    for setup in "${SETUPS[@]}"; do
        local delta=-
        if [ -n "${TOTAL[plain]:-}" ]; then
            delta=$(awk -v a="${TOTAL[$setup]}" -v b="${TOTAL[plain]}" 'BEGIN {printf "%+d", a - b}')
        fi
        printf '| %-6s | %10s | %10s | %10s |\n' "$setup" "${TOTAL[$setup]}" "$delta" \
            "${MODULE[$setup]}"
    done
    if [ -n "${TOTAL[rows]:-}" ] && [ -n "${TOTAL[norows]:-}" ]; then
        log ""
        awk -v a="${TOTAL[rows]}" -v b="${TOTAL[norows]}" -v n="$ROWS" 'BEGIN {
            printf "rows vs norows: %+.1f%% (total instructions a request, %d rows vs none)\n",
                (a / b - 1) * 100, n }'
    fi
}

main "$@"
