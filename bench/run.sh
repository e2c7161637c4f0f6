#!/usr/bin/env bash
# Throughput and latency of nginx serving a small static file, in one run:
#   plain  (a) plain nginx, without the module                 bench/plain.conf
#   local  (b) the module, backend=local                       bench/local.conf
#   redis  (c) the module, backend=redis, a new key per request bench/redis.conf
#   lua    (d) reference: a Lua GCRA via lua-resty-redis       bench/lua.conf
# 1 nginx worker, Redis and nginx on loopback in a temp folder, wrk as client.
# Before each measurement it checks that the limiter really runs (a tiny-burst
# location must reject, the headers must be there), and after it that nothing
# was rejected and, for Redis setups, that Redis made one decision a request.
#
#   BENCH_SETUPS       setups to run (default "plain local redis lua";
#                      lua is skipped when the Lua module is not installed)
#   BENCH_THREADS      wrk threads (default 1)
#   BENCH_CONNECTIONS  wrk connections (default 32)
#   BENCH_DURATION     wrk duration (default 5s)
#   BENCH_WARMUP       warm-up before each measurement (default 1s, 0 = none)
#   BENCH_ROUNDS       measurements per setup, taken in turn; the table shows
#                      the medians (default 3)
#   BENCH_VERBOSE=1    print wrk's full output
#   BENCH_KEEP=1       keep the temp folder
# Needs build/ngx_http_rate_limit_module.so (scripts/build.sh) for local/redis.
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"

BENCH_DIR=$REPO_ROOT/bench
read -r -a SETUPS <<<"${BENCH_SETUPS:-plain local redis lua}"
THREADS=${BENCH_THREADS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
DURATION=${BENCH_DURATION:-5s}
WARMUP=${BENCH_WARMUP:-1s}
ROUNDS=${BENCH_ROUNDS:-3}
LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
FILE_PATH=/bench/hello.txt
MIN_CALLS_PER_REQUEST=0.9

WORK=
TINY_CODES=
FAILURES=()
declare -A DESC=(
    [plain]="a) plain nginx"
    [local]="b) module, backend=local"
    [redis]="c) module, backend=redis"
    [lua]="d) lua-resty-redis (ref.)"
)
declare -A RPS P50 P99 NOTE RUN_RPS RUN_P50 RUN_P99 RUN_CALLS BROKEN

cleanup() {
    stop_all
    if [ -n "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}

fail() {
    FAILURES+=("$1: $2")
    printf '  FAIL: %s\n' "$2"
}

# to_ms VALUE: wrk's "655.00us" / "1.20ms" / "1.02s" in milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000;
        else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

# status PATH [HEADERS_FILE]: HTTP status of one GET
status() {
    curl -sS -o /dev/null ${2:+-D "$2"} -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:$NGINX_PORT$1" || true
}

redis_stat() {   # redis_stat COMMAND: calls of COMMAND since the last reset
    redis-cli -p "$REDIS_PORT" INFO commandstats \
        | sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | head -n 1 | grep . || echo 0
}

# checks before measuring: the file is served, and the limiter runs
pre_check() {
    local setup=$1 code
    local h=$WORK/$setup/headers
    code=$(status "$FILE_PATH" "$h")
    [ "$code" = 200 ] || { fail "$setup" "GET $FILE_PATH gave $code, not 200"; return 1; }
    case $setup in
        plain)
            if grep -qi '^x-ratelimit-limit:' "$h"; then
                fail "$setup" "plain nginx sends X-RateLimit-Limit: the module is loaded?"
                return 1
            fi ;;
        local|redis)
            if ! grep -qi '^x-ratelimit-limit:' "$h"; then
                fail "$setup" "no X-RateLimit-Limit header on $FILE_PATH: limiter not running"
                return 1
            fi ;;
    esac
    if [ "$setup" != plain ]; then
        local codes=() i
        for i in 1 2 3; do codes+=("$(status /tiny/hello.txt)"); done
        if [ "${codes[0]}" != 200 ] || [ "${codes[2]}" != 429 ]; then
            fail "$setup" "tiny-burst zone gave ${codes[*]}, expected 200 ... 429: limiter not running"
            return 1
        fi
        TINY_CODES="${codes[*]}"
    fi
}

run_wrk() {   # run_wrk DURATION OUTPUT
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" --timeout 5s --latency \
        "http://127.0.0.1:$NGINX_PORT$FILE_PATH" >"$2" 2>&1 \
        || { cat "$2" >&2; return 1; }
}

# measure SETUP ROUND: one measurement of SETUP on a fresh nginx; appends
# its numbers to RUN_RPS / RUN_P50 / RUN_P99 / RUN_CALLS [SETUP]
measure() {
    local setup=$1 round=$2 prefix=$WORK/$1 conf out
    mkdir -p "$prefix/html/bench" "$prefix/html/tiny" "$prefix/logs" "$prefix/tmp"
    printf 'hello, world\n' >"$prefix/html/bench/hello.txt"
    printf 'hello, world\n' >"$prefix/html/tiny/hello.txt"
    printf 'ok\n' >"$prefix/html/index.html"
    conf=$prefix/nginx.conf
    render "$BENCH_DIR/$setup.conf" "$conf" PREFIX="$prefix" PORT="$NGINX_PORT" \
        MODULE="$MODULE_SO" REDIS="127.0.0.1:$REDIS_PORT" REDIS_PORT="$REDIS_PORT" \
        BENCH_DIR="$BENCH_DIR"
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
    start_nginx "$prefix" "$conf" "$NGINX_PORT"

    if ! pre_check "$setup"; then
        forget_pid "$NGINX_PID"
        return 1
    fi
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        if ! run_wrk "$WARMUP" "$prefix/warmup.txt"; then
            fail "$setup" "wrk warm-up failed"
            forget_pid "$NGINX_PID"
            return 1
        fi
    fi
    redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null

    out=$prefix/wrk-$round.txt
    if ! run_wrk "$DURATION" "$out"; then
        fail "$setup" "wrk failed"
        forget_pid "$NGINX_PID"
        return 1
    fi
    local evalsha eval_calls
    evalsha=$(redis_stat evalsha)
    eval_calls=$(redis_stat eval)
    forget_pid "$NGINX_PID"
    if [ "${BENCH_VERBOSE:-0}" = 1 ]; then sed 's/^/  | /' "$out"; fi

    local rps p50 p99 reqs non2xx errors
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    if [ -z "$rps" ] || [ -z "$reqs" ]; then
        cat "$out" >&2
        fail "$setup" "cannot read wrk's output"
        return 1
    fi
    local line
    line=$(printf '  %-27s round %d: %7s req/s  p50 %6s ms  p99 %6s ms  (%s requests)' \
        "${DESC[$setup]}" "$round" "$rps" "$p50" "$p99" "$reqs")
    RUN_RPS[$setup]+=" $rps" RUN_P50[$setup]+=" $p50" RUN_P99[$setup]+=" $p99"

    if [ "$reqs" -le 0 ]; then fail "$setup" "wrk completed no request"; fi
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    if [ -n "$non2xx" ]; then
        fail "$setup" "$non2xx responses were not 2xx (rejected, or a Redis failure)"
    fi
    errors=$(grep 'Socket errors:' "$out" || true)
    if [ -n "$errors" ]; then warn "$setup: wrk reports ${errors# }"; fi

    if [ "$setup" != plain ]; then line+=", tiny-burst: $TINY_CODES"; fi
    case $setup in
        redis|lua)
            local calls=$((evalsha + eval_calls)) per
            per=$(awk -v c="$calls" -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')
            RUN_CALLS[$setup]+=" $per"
            line+=", Redis calls: $per a request"
            if [ "$evalsha" -eq 0 ]; then
                fail "$setup" "Redis saw no EVALSHA: the limiter did not ask Redis"
            elif awk -v p="$per" -v m="$MIN_CALLS_PER_REQUEST" 'BEGIN {exit !(p < m)}'; then
                fail "$setup" "only $per Redis calls a request (expected >= $MIN_CALLS_PER_REQUEST)"
            fi ;;
    esac
    log "$line"
    if grep -E '\[(alert|emerg|crit)\]' "$prefix/logs/error.log" >&2; then
        fail "$setup" "nginx logged alerts (above)"
    fi
}

median() {   # median NUMBER...
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summarise() {   # summarise SETUP: medians of its rounds into RPS, P50, P99, NOTE
    local setup=$1
    [ -n "${RUN_RPS[$setup]:-}" ] || return 0
    # shellcheck disable=SC2086   # the lists are space-separated numbers
    {
        RPS[$setup]=$(printf '%.0f' "$(median ${RUN_RPS[$setup]})")
        P50[$setup]=$(median ${RUN_P50[$setup]})
        P99[$setup]=$(median ${RUN_P99[$setup]})
        case $setup in
            redis|lua) NOTE[$setup]="evalsha/request $(median ${RUN_CALLS[$setup]})" ;;
            local) NOTE[$setup]="limiter checked" ;;
        esac
    }
}

print_table() {
    local base=${RPS[plain]:-} setup ratio
    log ""
    log "== results: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 1 nginx worker, $(nproc) cores," \
        "nginx $(nginx -v 2>&1 | sed 's/.*\///')$( [ "$ROUNDS" -gt 1 ] && printf ', median of %s rounds' "$ROUNDS")"
    log ""
    printf '| %-27s | %10s | %8s | %8s | %8s | %-22s |\n' setup requests/s "p50 ms" "p99 ms" "vs plain" notes
    printf '|%s|%s|%s|%s|%s|%s|\n' "-----------------------------" "-----------:" "---------:" \
        "---------:" "---------:" "------------------------"
    for setup in "${SETUPS[@]}"; do
        if [ -z "${RPS[$setup]:-}" ]; then
            printf '| %-27s | %10s | %8s | %8s | %8s | %-22s |\n' \
                "${DESC[$setup]}" - - - - "not measured"
            continue
        fi
        ratio=-
        if [ -n "$base" ]; then
            ratio=$(awk -v a="${RPS[$setup]}" -v b="$base" 'BEGIN {printf "%.2f", a / b}')
        fi
        printf '| %-27s | %10s | %8s | %8s | %8s | %-22s |\n' "${DESC[$setup]}" \
            "${RPS[$setup]}" "${P50[$setup]}" "${P99[$setup]}" "$ratio" "${NOTE[$setup]:-}"
    done
}

main() {
    need_cmd wrk redis-server redis-cli curl "$NGINX_BIN"
    local setup keep=()
    for setup in "${SETUPS[@]}"; do
        case $setup in
            plain) ;;
            local|redis) need_module ;;
            lua)
                if [ ! -f "$LUA_MODULE" ] || [ ! -f /usr/share/lua/5.1/nginx/redis.lua ]; then
                    warn "skipping setup lua: libnginx-mod-http-lua / lua-nginx-redis not installed"
                    continue
                fi ;;
            *) die "unknown setup '$setup' (plain, local, redis, lua)" ;;
        esac
        keep+=("$setup")
    done
    SETUPS=("${keep[@]}")
    [ "${#SETUPS[@]}" -gt 0 ] || die "no setup to run"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$(make_workdir bench)
    local ports
    mapfile -t ports < <(free_ports 2)
    REDIS_PORT=${ports[0]} NGINX_PORT=${ports[1]}
    start_redis "$WORK/redis" "$REDIS_PORT"
    log "redis on 127.0.0.1:$REDIS_PORT, nginx on 127.0.0.1:$NGINX_PORT, setups: ${SETUPS[*]}"

    log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency after a $WARMUP warm-up;" \
        "$ROUNDS round(s), the setups in turn"
    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        log ""
        log "== round $round of $ROUNDS"
        for setup in "${SETUPS[@]}"; do
            [ -z "${BROKEN[$setup]:-}" ] || continue
            measure "$setup" "$round" || BROKEN[$setup]=1
        done
    done
    for setup in "${SETUPS[@]}"; do
        summarise "$setup"
    done
    print_table

    log ""
    if [ "${#FAILURES[@]}" -gt 0 ]; then
        log "FAILED checks:"
        printf '  %s\n' "${FAILURES[@]}"
        exit 1
    fi
    log "all checks passed"
}

main "$@"
