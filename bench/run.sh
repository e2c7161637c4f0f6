#!/usr/bin/env bash
# The benchmark of issue 5: nginx serving a small static file on loopback,
# once per setup, all in ONE run with the same wrk settings and the same wrk
# script (bench/keys.lua, an X-Key header of 16 bytes on every request):
#   plain      1   plain nginx, no limiter: the ceiling          plain.conf
#   limit_req  2   nginx's own limit_req, local                  limit_req.conf
#   lua        3   the OpenResty-style peer: access_by_lua,      lua.conf
#                  lua-resty-redis, GCRA by EVALSHA, keepalive   lua_gcra.lua
#   local      4   the module, backend=local                     local.conf
#   redis      5   the module, backend=redis, strict, a new key  redis.conf
#                  every request (every request decided by Redis)
#   redis_tls  5t  the same, nginx reaching Redis over TLS       redis.conf
#                  (tls=on, a CA and a server certificate made with openssl
#                  in the temp folder, bench/tls.sh; Redis listens on its
#                  plain port, for this script's redis-cli, and on a TLS
#                  port, for nginx)
#   abuse      6   the module, backend=redis, one key far over   redis.conf
#                  its limit (most responses are 429)
#   active1m   7a  the module, backend=redis, keys drawn at      redis.conf
#                  random among BENCH_ACTIVE_KEYS buckets stored beforehand
#                  (bench/populate.py), all passing
#   active1    7b  the same with one stored bucket
# Then the Redis memory one client's bucket takes: used_memory before and
# after BENCH_MEM_KEYS distinct keys went through the module, over DBSIZE,
# next to the same number of plain "SET key value PX ms".
#
# One nginx worker; Redis, nginx and wrk on loopback, in a temp folder.  Each
# setup proves that its limiter runs before it is measured (a 1-token
# location answers 200 and then 429; the module's headers are there, or not
# there for plain nginx and limit_req), and after (no request rejected, or
# for "abuse" nearly all, and about as many passed as its rate allows; Redis
# read a bucket per request where each must be decided by Redis: keyspace
# hits + misses, whether one script call decides one request or a batch;
# and for "active1m" every request found its stored bucket: keyspace hits,
# no new key; for "redis_tls", Redis's CLIENT LIST shows nginx's links on
# the TLS port and none on the plain one).  The table: requests/s, p50 and
# p99 from wrk's latency distribution, each the median of the rounds, the
# ratio to plain nginx (the median of the ratios within each round, as for
# every ratio printed), the share of rejected (non-2xx) responses,
# EVALSHA/EVAL per request (script calls: round trips) and all Redis
# commands per request from INFO commandstats (which counts the TIME, GET
# and SET that a script runs too);
# for "redis" and "redis_tls", the notes give the CPU time per request of
# the nginx worker and of redis-server (utime + stime of /proc/PID/stat,
# before and after the measured wrk run, over the requests it made).
# Exits non-zero if a check failed.
#
#   BENCH_SKIP_SETUP=1 do not run scripts/install-deps.sh, nor scripts/build.sh
#                      when the module is missing
#   RATE_LIMIT_MODULE  the module (default build/ngx_http_rate_limit_module.so)
#   BENCH_SETUPS       setups to run, in this order (default: all of the above;
#                      lua is skipped when the Lua packages are missing)
#   BENCH_THREADS      wrk threads (default 1)
#   BENCH_CONNECTIONS  wrk connections (default 32)
#   BENCH_DURATION     wrk duration of a measurement (default 4s)
#   BENCH_WARMUP       warm-up before each measurement, in whole seconds as
#                      wrk takes them (default 1s, 0 = none)
#   BENCH_ROUNDS       measurements per setup, the setups in turn; the table
#                      shows the medians (default 3)
#   BENCH_ACTIVE_KEYS  buckets stored for setup 7a (default 1000000)
#   BENCH_MEM_KEYS     distinct keys of the memory measure (default 200000,
#                      0 = skip it)
#   BENCH_MEM_DURATION how long wrk sends them (default 12s; it cycles
#                      through the keys until then)
#   BENCH_OUT          a folder to write results.tsv to, and results.png
#                      from it (bench/chart.sh, needs gnuplot); default none
#   BENCH_VERBOSE=1    print wrk's full output
#   BENCH_KEEP=1       keep the temp folder
# Default run: 9 setups x 5 rounds x about 6 s, plus about 30 s: 5 minutes.
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
# shellcheck source=bench/lib.sh
. "$REPO_ROOT/bench/lib.sh"
# shellcheck source=bench/tls.sh
. "$REPO_ROOT/bench/tls.sh"

ALL_SETUPS="plain limit_req lua local redis redis_tls abuse active1m active1"
read -r -a SETUPS <<<"${BENCH_SETUPS:-$ALL_SETUPS}"
THREADS=${BENCH_THREADS:-1}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
DURATION=${BENCH_DURATION:-4s}
WARMUP=${BENCH_WARMUP:-1s}
ROUNDS=${BENCH_ROUNDS:-5}
ACTIVE_KEYS=${BENCH_ACTIVE_KEYS:-1000000}
MEM_KEYS=${BENCH_MEM_KEYS:-200000}
MEM_DURATION=${BENCH_MEM_DURATION:-12s}
OUT=${BENCH_OUT:-}
LUA_MODULE=/usr/lib/nginx/modules/ngx_http_lua_module.so
LUA_REDIS=/usr/share/lua/5.1/nginx/redis.lua
# the stored buckets' TAT is this far ahead of now, and their TTL as long:
# well inside the active zone's burst (1e9 tokens of 10 us = 10,000 s)
ACTIVE_AHEAD_S=3600
MIN_READS_PER_REQUEST=0.9     # buckets Redis read a request, where each
                              # request must be decided by Redis
MIN_HITS_PER_REQUEST=0.9      # stored buckets found a request (active1m/1)
MIN_ABUSE_REJECTED=0.9        # share of 429 in setup 6
ABUSE_RATE=10                 # the abuse zone of redis.conf: 10r/s burst=10
ABUSE_BURST=10

declare -A DESC=(
    [plain]="1 plain nginx (ceiling)"
    [limit_req]="2 nginx limit_req, local"
    [lua]="3 Lua peer, EVALSHA per req"
    [local]="4 ours, backend=local"
    [redis]="5 ours, redis, strict"
    [redis_tls]="5t ours, redis over TLS, strict"
    [abuse]="6 ours, redis, abusive key"
    [active1m]="7a ours, redis, 1M active keys"
    [active1]="7b ours, redis, 1 active key"
)
declare -A CONF=(
    [plain]=plain [limit_req]=limit_req [lua]=lua [local]=local
    [redis]=redis [redis_tls]=redis [abuse]=redis [active1m]=redis [active1]=redis [mem]=redis
)
declare -A URI=(
    [abuse]=/abuse/hello.txt [active1m]=/active/hello.txt
    [active1]=/active/hello.txt
)
declare -A KEYS=(
    [abuse]=one [active1m]="random:$ACTIVE_KEYS" [active1]=random:1
)
# Redis database of each setup: the stored buckets of 7a and 7b stay apart
# from the keys that the other setups make and flush
declare -A DB=([active1m]=1 [active1]=2 [redis_tls]=4)
MEM_DB=3
DESC[active1m]="7a ours, redis, $(awk -v n="$ACTIVE_KEYS" 'BEGIN {
    if (n >= 1000000 && n % 1000000 == 0) printf "%dM", n / 1000000;
    else printf "%d", n }') active keys"

TINY_CODES=
FAILURES=()
declare -A RPS P50 P99 REJ CALLS CMDS NOTE BROKEN
declare -A RUN_RPS RUN_P50 RUN_P99 RUN_REJ RUN_CALLS RUN_CMDS RUN_HITS RUN_MISSES
declare -A RUN_CPU_NGINX RUN_CPU_REDIS   # [SETUP]: CPU us a request, each round
declare -A ROUND_RPS       # [SETUP,ROUND]: requests/s, for ratios within a round

fail() {   # fail SETUP WORDS...: records a failed check
    local setup=$1
    shift
    FAILURES+=("$setup: $*")
    printf '  FAIL: %s\n' "$*"
}

is_ours() { case $1 in local|redis|redis_tls|abuse|active*) return 0 ;; esac; return 1; }
uses_redis() { case $1 in lua|redis|redis_tls|abuse|active*) return 0 ;; esac; return 1; }
measures_cpu() { case $1 in redis|redis_tls) return 0 ;; esac; return 1; }

# to_ms VALUE: wrk's "655.00us" / "1.20ms" / "1.02s" in milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000;
        else if (v ~ /s$/) n *= 1000
        printf "%.2f", n }'
}

# status PATH KEY [HEADERS_FILE]: HTTP status of one GET with X-Key: KEY
status() {
    curl -sS -o /dev/null ${3:+-D "$3"} -w '%{http_code}' --max-time 5 \
        -H "X-Key: $2" "http://127.0.0.1:$NGINX_PORT$1" || true
}

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# redis_counts: "EVALS ALL HITS MISSES" since the last CONFIG RESETSTAT:
# EVALSHA + EVAL calls, all commands but this script's own INFO and CONFIG
# (commands that scripts run are counted too), keyspace hits and misses
redis_counts() {
    rcli INFO all | tr -d '\r' | awk -F'[:=,]' '
        /^cmdstat_/ {
            name = substr($1, 9)
            if (name == "evalsha" || name == "eval") evals += $3
            if (name != "info" && name !~ /^config/) all += $3
        }
        $1 == "keyspace_hits" { hits = $2 }
        $1 == "keyspace_misses" { misses = $2 }
        END { printf "%d %d %d %d\n", evals, all, hits, misses }'
}

dbsize() { rcli -n "$1" DBSIZE; }
used_memory() { rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory://p'; }

# cpu_ticks PID...: utime + stime of the PIDs, in clock ticks, summed (the
# fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the
# command's name); fails if one of them is gone
cpu_ticks() {
    local pid stat sum=0
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
        stat=${stat##*) }
        sum=$(awk -v s="$sum" -v f="$stat" 'BEGIN {
            split(f, a, " "); printf "%d", s + a[12] + a[13] }')
    done
    printf '%s\n' "$sum"
}

# nginx_workers: the pids of the children of NGINX_PID, nginx's master
nginx_workers() { ps -o pid= --ppid "$NGINX_PID" | tr -d ' '; }

# cpu_us_per_request TICKS REQUESTS: microseconds of CPU a request
cpu_us_per_request() {
    awk -v t="$1" -v r="$2" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t * 1e6 / hz / r}'
}

# links_on_tls: "TLS PLAIN": Redis's clients whose local port is the TLS
# port, and those on the plain port but this redis-cli itself
links_on_tls() {
    rcli CLIENT LIST | tr -d '\r' | awk -v tls="laddr=127.0.0.1:$REDIS_TLS_PORT" \
            -v plain="laddr=127.0.0.1:$REDIS_PORT" '
        { own = 0; on_tls = 0; on_plain = 0
          for (i = 1; i <= NF; i++) {
              if ($i == tls) on_tls = 1
              if ($i == plain) on_plain = 1
              if ($i ~ /^cmd=client/) own = 1
          }
          t += on_tls; if (on_plain && !own) p++ }
        END { printf "%d %d\n", t, p }'
}

# pre_check SETUP ROUND: before measuring, the file is served and the
# limiter runs
pre_check() {
    local setup=$1 code key=precheck000000001
    local h=$WORK/$setup/headers
    case ${KEYS[$setup]:-unique} in
        random:*) key=a000000000000000 ;;
        one) key=abuser0000000000 ;;
    esac
    code=$(status "${URI[$setup]:-/bench/hello.txt}" "$key" "$h")
    [ "$code" = 200 ] || { fail "$setup" "GET ${URI[$setup]:-/bench/hello.txt} gave $code, not 200"; return 1; }
    if is_ours "$setup" || [ "$setup" = lua ]; then
        if ! grep -qi '^x-ratelimit-limit:' "$h"; then
            fail "$setup" "no X-RateLimit-Limit header: the limiter does not run"
            return 1
        fi
    elif grep -qi '^x-ratelimit-limit:' "$h"; then
        fail "$setup" "X-RateLimit-Limit sent: is the module loaded?"
        return 1
    fi
    if [ "$setup" != plain ]; then
        local codes=()
        for _ in 1 2 3; do codes+=("$(status /tiny/hello.txt "tiny-$setup-$2")"); done
        if [ "${codes[0]}" != 200 ] || [ "${codes[2]}" != 429 ]; then
            fail "$setup" "1-token location gave ${codes[*]}, expected 200 ... 429: limiter not running"
            return 1
        fi
        TINY_CODES="${codes[*]}"
    fi
}

# run_wrk SETUP DURATION SALT OUTPUT [URI KEYS]
run_wrk() {
    local setup=$1 duration=$2 salt=$3 out=$4
    BENCH_PATH=${5:-${URI[$setup]:-/bench/hello.txt}} \
    BENCH_KEYS=${6:-${KEYS[$setup]:-unique}} BENCH_SALT=$salt BENCH_THREADS=$THREADS \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" --timeout 5s --latency \
            -s "$BENCH_DIR/keys.lua" "http://127.0.0.1:$NGINX_PORT/" >"$out" 2>&1 \
        || { cat "$out" >&2; return 1; }
}

# prepare_nginx SETUP DB: renders SETUP's conf into $WORK/SETUP, starts nginx
prepare_nginx() {
    bench_site "$WORK/$1" "${CONF[$1]}" "$2"
    [ "$1" != redis_tls ] || tls_rewrite_conf "$WORK/$1/nginx.conf"
    start_nginx "$WORK/$1" "$WORK/$1/nginx.conf" "$NGINX_PORT"
}

# populate DB COUNT: COUNT stored buckets of the active zone in DB, unless
# they are there already (their TTL outlasts a run)
populate() {
    local db=$1 count=$2 t0
    [ "$(dbsize "$db")" -ge "$count" ] && return 0
    t0=$(date +%s%N)
    rcli -n "$db" FLUSHDB >/dev/null
    "$PY" "$BENCH_DIR/populate.py" "$REDIS_PORT" "$db" "$count" rl:active "$ACTIVE_AHEAD_S"
    log "  stored $(dbsize "$db") buckets in Redis db $db in" \
        "$(( ($(date +%s%N) - t0) / 1000000 )) ms (used_memory $(used_memory))"
}

# measure SETUP ROUND: one measurement of SETUP on a fresh nginx; appends
# its numbers to the RUN_* lists of SETUP
measure() {
    local setup=$1 round=$2 prefix=$WORK/$1 db=${DB[$1]:-0} out
    case $setup in
        active1m) populate "$db" "$ACTIVE_KEYS" ;;
        active1) populate "$db" 1 ;;
        *) rcli -n "$db" FLUSHDB >/dev/null ;;
    esac
    prepare_nginx "$setup" "$db"

    if ! pre_check "$setup" "$round"; then
        forget_pid "$NGINX_PID"
        return 1
    fi
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        if ! run_wrk "$setup" "$WARMUP" "w$round" "$prefix/warmup.txt"; then
            fail "$setup" "wrk warm-up failed"
            forget_pid "$NGINX_PID"
            return 1
        fi
    fi
    local keys_before keys_after counts workers=() cpu_before=() cpu_after=() links=
    keys_before=$(dbsize "$db")
    if measures_cpu "$setup"; then
        mapfile -t workers < <(nginx_workers)
        [ "${#workers[@]}" -gt 0 ] \
            || { fail "$setup" "no nginx worker found"; forget_pid "$NGINX_PID"; return 1; }
    fi
    rcli CONFIG RESETSTAT >/dev/null

    out=$prefix/wrk-$round.txt
    if measures_cpu "$setup"; then
        cpu_before=("$(cpu_ticks "${workers[@]}")" "$(cpu_ticks "$REDIS_PID")")
    fi
    if ! run_wrk "$setup" "$DURATION" "m$round" "$out"; then
        fail "$setup" "wrk failed"
        forget_pid "$NGINX_PID"
        return 1
    fi
    if measures_cpu "$setup"; then
        cpu_after=("$(cpu_ticks "${workers[@]}" || true)" "$(cpu_ticks "$REDIS_PID" || true)")
    fi
    counts=$(redis_counts)
    keys_after=$(dbsize "$db")
    [ "$setup" != redis_tls ] || links=$(links_on_tls)
    forget_pid "$NGINX_PID"
    if [ "${BENCH_VERBOSE:-0}" = 1 ]; then sed 's/^/  | /' "$out"; fi

    local rps p50 p99 reqs non2xx errors rej
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
    reqs=$(awk '/requests in/ {print $1}' "$out")
    if [ -z "$rps" ] || [ -z "$reqs" ] || [ "$reqs" -le 0 ]; then
        cat "$out" >&2
        fail "$setup" "cannot read wrk's output, or no request completed"
        return 1
    fi
    non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
    non2xx=${non2xx:-0}
    rej=$(awk -v n="$non2xx" -v r="$reqs" 'BEGIN {printf "%.3f", n / r}')
    errors=$(grep 'Socket errors:' "$out" || true)
    if [ -n "$errors" ]; then warn "$setup: wrk reports ${errors# }"; fi

    local evals all hits misses per_eval per_all per_hit per_miss
    read -r evals all hits misses <<<"$counts"
    per_eval=$(awk -v c="$evals" -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')
    per_all=$(awk -v c="$all" -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')
    per_hit=$(awk -v c="$hits" -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')
    per_miss=$(awk -v c="$misses" -v r="$reqs" 'BEGIN {printf "%.2f", c / r}')

    RUN_RPS[$setup]+=" $rps" RUN_P50[$setup]+=" $p50" RUN_P99[$setup]+=" $p99"
    ROUND_RPS[$setup,$round]=$rps
    RUN_REJ[$setup]+=" $rej" RUN_CALLS[$setup]+=" $per_eval" RUN_CMDS[$setup]+=" $per_all"
    RUN_HITS[$setup]+=" $per_hit" RUN_MISSES[$setup]+=" $per_miss"

    local cpu_nginx cpu_redis
    if measures_cpu "$setup"; then
        if [ -z "${cpu_after[0]}" ] || [ -z "${cpu_after[1]}" ]; then
            fail "$setup" "an nginx worker or redis-server exited during the run"
        else
            cpu_nginx=$(cpu_us_per_request $((cpu_after[0] - cpu_before[0])) "$reqs")
            cpu_redis=$(cpu_us_per_request $((cpu_after[1] - cpu_before[1])) "$reqs")
            RUN_CPU_NGINX[$setup]+=" $cpu_nginx" RUN_CPU_REDIS[$setup]+=" $cpu_redis"
        fi
    fi

    local line
    line=$(printf '  %-34s round %d: %6s req/s  p50 %5s ms  p99 %5s ms  %s requests' \
        "${DESC[$setup]}" "$round" "$rps" "$p50" "$p99" "$reqs")
    if uses_redis "$setup"; then
        line+=", EVALSHA $per_eval, Redis cmds $per_all, hits $per_hit, misses $per_miss /req"
    fi
    [ -z "${cpu_nginx:-}" ] || line+=", CPU us/req: nginx $cpu_nginx, redis $cpu_redis"
    [ "$setup" = plain ] || line+=", 1-token: $TINY_CODES"

    # after: each setup really did what it is measured for
    if [ "$setup" = abuse ]; then
        line+=", rejected $rej"
        if awk -v s="$rej" -v m="$MIN_ABUSE_REJECTED" 'BEGIN {exit !(s < m)}'; then
            fail "$setup" "only $rej of the responses were rejected (expected >= $MIN_ABUSE_REJECTED)"
        fi
        # the bucket is empty after the warm-up: about rate x duration pass,
        # no more (nothing passes that Redis would reject), and not far
        # fewer (cached rejections expire)
        local passed=$((reqs - non2xx)) least most
        read -r least most < <(awk -v d="$DURATION" -v r="$ABUSE_RATE" -v b="$ABUSE_BURST" 'BEGIN {
            s = d + 0; if (d ~ /m$/) s *= 60; else if (d ~ /h$/) s *= 3600
            printf "%d %d\n", r * s / 2, r * (s + 1) + b }')
        line+=", passed $passed"
        [ "$passed" -le "$most" ] \
            || fail "$setup" "$passed requests passed, more than the zone allows ($most)"
        [ "$passed" -ge "$least" ] \
            || fail "$setup" "only $passed requests passed, fewer than half the rate allows"
        [ "$evals" -gt 0 ] || [ "$keys_after" -gt 0 ] \
            || fail "$setup" "Redis neither ran a script nor holds the key: the limiter did not ask Redis"
    elif [ "$non2xx" != 0 ]; then
        fail "$setup" "$non2xx responses were not 2xx (rejected, or a Redis failure)"
    fi
    case $setup in
        lua|redis|redis_tls|active*)
            # a script call may decide several requests (a batch): count
            # the buckets Redis read, found or not
            if awk -v h="$per_hit" -v m="$per_miss" -v t="$MIN_READS_PER_REQUEST" \
                    'BEGIN {exit !(h + m < t)}'; then
                fail "$setup" "Redis read $per_hit + $per_miss buckets a request" \
                    "(expected >= $MIN_READS_PER_REQUEST): not every request was decided by Redis"
            fi
            [ "$evals" -gt 0 ] || fail "$setup" "Redis ran no script" ;;
    esac
    if [ "$setup" = redis_tls ]; then
        # nginx's links are on the TLS port, none on the plain one
        local on_tls on_plain
        read -r on_tls on_plain <<<"$links"
        line+=", links: $on_tls on TLS, $on_plain on TCP"
        [ "$on_tls" -gt 0 ] || fail "$setup" "no Redis client on the TLS port :$REDIS_TLS_PORT"
        [ "$on_plain" -eq 0 ] \
            || fail "$setup" "$on_plain Redis clients on the plain port :$REDIS_PORT: not all links are TLS"
    fi
    case $setup in
        active*)
            if awk -v p="$per_hit" -v m="$MIN_HITS_PER_REQUEST" 'BEGIN {exit !(p < m)}'; then
                fail "$setup" "only $per_hit stored buckets found a request: keys not active?"
            fi
            # the module's own keys (its node registry) may come and go
            [ $((keys_after - keys_before)) -le 2 ] \
                || fail "$setup" "Redis db $db went from $keys_before to $keys_after keys:" \
                        "requests missed the stored buckets" ;;
    esac
    log "$line"
    if grep -E '\[(alert|emerg|crit)\]' "$prefix/logs/error.log" >&2; then
        fail "$setup" "nginx logged alerts (above)"
    fi
}

# memory_per_client: Redis used_memory for MEM_KEYS distinct keys that went
# through the module (zone "api", rate=1r/m, so each lives a minute), over
# DBSIZE; then the same for plain SETs of the same names and values
memory_per_client() {
    local prefix=$WORK/mem before after keys out value
    rcli -n "$MEM_DB" FLUSHDB >/dev/null
    prepare_nginx mem "$MEM_DB"
    [ "$(status /mem/hello.txt precheck000000001)" = 200 ] \
        || { fail mem "GET /mem/hello.txt did not give 200"; forget_pid "$NGINX_PID"; return 1; }
    rcli -n "$MEM_DB" FLUSHDB >/dev/null
    sleep 0.5
    before=$(used_memory)
    out=$prefix/wrk.txt
    if ! run_wrk mem "$MEM_DURATION" mem "$out" /mem/hello.txt "cycle:$MEM_KEYS"; then
        fail mem "wrk failed"
        forget_pid "$NGINX_PID"
        return 1
    fi
    sleep 1     # lets Redis finish rehashing its tables
    after=$(used_memory)
    keys=$(dbsize "$MEM_DB")
    value=$(rcli -n "$MEM_DB" GET rl:api:mem0000000000000)
    forget_pid "$NGINX_PID"
    if [ "$keys" -lt $((MEM_KEYS * 9 / 10)) ]; then
        warn "only $keys of $MEM_KEYS keys reached Redis in $MEM_DURATION (raise BENCH_MEM_DURATION)"
    fi
    [ "$keys" -gt 0 ] || { fail mem "no key reached Redis"; return 1; }
    MEM_MODULE=$(( (after - before) / keys )) MEM_N=$keys

    # the same names, values and TTL, by plain SET ... PX
    rcli -n "$MEM_DB" FLUSHDB >/dev/null
    sleep 0.5
    before=$(used_memory)
    "$PY" "$BENCH_DIR/populate.py" "$REDIS_PORT" "$MEM_DB" "$keys" rl:api 60 \
        --format "mem00%011d"
    sleep 1
    after=$(used_memory)
    MEM_SET=$(( (after - before) / $(dbsize "$MEM_DB") ))
    rcli -n "$MEM_DB" FLUSHDB >/dev/null
    log "  $MEM_N keys like rl:api:mem0000000000000 = $value through the module:" \
        "$MEM_MODULE bytes each; by plain SET ... PX: $MEM_SET bytes each"
}

median() {   # median NUMBER...
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

summarise() {   # summarise SETUP: medians of its rounds
    local setup=$1
    [ -n "${RUN_RPS[$setup]:-}" ] || return 0
    # shellcheck disable=SC2086   # the lists are space-separated numbers
    {
        RPS[$setup]=$(printf '%.0f' "$(median ${RUN_RPS[$setup]})")
        P50[$setup]=$(printf '%.2f' "$(median ${RUN_P50[$setup]})")
        P99[$setup]=$(printf '%.2f' "$(median ${RUN_P99[$setup]})")
        REJ[$setup]=$(printf '%.2f' "$(median ${RUN_REJ[$setup]})")
        CALLS[$setup]=- CMDS[$setup]=-
        if uses_redis "$setup"; then
            CALLS[$setup]=$(printf '%.2f' "$(median ${RUN_CALLS[$setup]})")
            CMDS[$setup]=$(printf '%.2f' "$(median ${RUN_CMDS[$setup]})")
        fi
        case $setup in
            redis|redis_tls|lua) NOTE[$setup]="misses/req $(printf '%.2f' "$(median ${RUN_MISSES[$setup]})")" ;;
            active*) NOTE[$setup]="hits/req $(printf '%.2f' "$(median ${RUN_HITS[$setup]})")" ;;
            abuse) NOTE[$setup]="429 share ${REJ[$setup]}" ;;
        esac
        if [ -n "${RUN_CPU_NGINX[$setup]:-}" ]; then
            NOTE[$setup]+=", CPU us/req nginx $(printf '%.1f' "$(median ${RUN_CPU_NGINX[$setup]})")"
            NOTE[$setup]+=", redis $(printf '%.1f' "$(median ${RUN_CPU_REDIS[$setup]})")"
        fi
    }
}

# ratio A B: the median over the rounds of setup A's requests/s over setup
# B's in the same round, with 2 decimals (- when no round measured both).
# The load of this machine drifts between rounds: a ratio taken within a
# round, a minute apart at most, is steadier than a ratio of medians.
ratio() {
    local r ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do
        if [ -n "${ROUND_RPS[$1,$r]:-}" ] && [ -n "${ROUND_RPS[$2,$r]:-}" ]; then
            ratios+=("$(awk -v a="${ROUND_RPS[$1,$r]}" -v b="${ROUND_RPS[$2,$r]}" \
                'BEGIN {printf "%.4f", a / b}')")
        fi
    done
    if [ "${#ratios[@]}" -eq 0 ]; then printf -- '-'; return; fi
    printf '%.2f' "$(median "${ratios[@]}")"
}

print_table() {
    local setup
    log ""
    log "== results: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/keys.lua," \
        "1 nginx worker, $(nproc) cores, nginx $(nginx -v 2>&1 | sed 's/.*\///')," \
        "Redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), median of $ROUNDS round(s)"
    log ""
    printf '| %-34s | %10s | %6s | %6s | %8s | %8s | %8s | %10s | %-15s |\n' setup requests/s \
        "p50 ms" "p99 ms" "vs plain" rejected "EVALSHA" "Redis cmds" notes
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" \
        "-----------:" "-------:" "-------:" "---------:" "---------:" "---------:" \
        "-----------:" "-----------------"
    [ -z "$OUT" ] || printf 'setup\tlabel\trps\tp50_ms\tp99_ms\tratio\trejected\tevalsha_per_req\tcmds_per_req\n' \
        >"$OUT/results.tsv"
    for setup in "${SETUPS[@]}"; do
        if [ -z "${RPS[$setup]:-}" ]; then
            printf '| %-34s | %10s | %6s | %6s | %8s | %8s | %8s | %10s | %-15s |\n' \
                "${DESC[$setup]}" - - - - - - - "not measured"
            continue
        fi
        printf '| %-34s | %10s | %6s | %6s | %8s | %8s | %8s | %10s | %-15s |\n' \
            "${DESC[$setup]}" "${RPS[$setup]}" "${P50[$setup]}" "${P99[$setup]}" \
            "$(ratio "$setup" plain)" "${REJ[$setup]}" "${CALLS[$setup]}" \
            "${CMDS[$setup]}" "${NOTE[$setup]:-}"
        [ -z "$OUT" ] || printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$setup" \
            "${DESC[$setup]}" "${RPS[$setup]}" "${P50[$setup]}" "${P99[$setup]}" \
            "$(ratio "$setup" plain)" "${REJ[$setup]}" "${CALLS[$setup]}" \
            "${CMDS[$setup]}" >>"$OUT/results.tsv"
    done
}

# target NAME VALUE OP GOAL: one line of the issue's targets
target() {
    local verdict=missed
    [ "$2" != - ] || { printf '  %-44s %6s  (not measured)\n' "$1" -; return; }
    if awk -v v="$2" -v g="$4" -v op="$3" 'BEGIN {exit !(op == ">=" ? v >= g : v <= g)}'; then
        verdict=met
    fi
    printf '  %-44s %6s  target %s %s: %s\n' "$1" "$2" "$3" "$4" "$verdict"
}

# figure NAME VALUE: a line with the targets' layout, for a ratio the issue
# sets no bound on
figure() {
    [ "$2" != - ] || { printf '  %-44s %6s  (not measured)\n' "$1" -; return; }
    printf '  %-44s %6s\n' "$1" "$2"
}

print_targets() {
    log ""
    log "== issue 5 targets (ratios from this run)"
    target "5 strict / plain nginx" "$(ratio redis plain)" ">=" 0.80
    target "5 strict / Lua peer" "$(ratio redis lua)" ">=" 2
    figure "5t strict TLS / strict TCP" "$(ratio redis_tls redis)"
    target "6 abusive key / plain nginx" "$(ratio abuse plain)" ">=" 0.95
    target "4 backend=local / plain nginx" "$(ratio local plain)" ">=" 0.97
    target "  (2 limit_req / plain nginx, for reference)" "$(ratio limit_req plain)" ">=" 0.97
    target "7 active keys: ${DESC[active1m]#7a ours, redis, } / 1" \
        "$(ratio active1m active1)" ">=" 0.95
    target "Redis bytes per active client" "${MEM_MODULE:--}" "<=" 100
    [ -z "${MEM_SET:-}" ] || log "  (a plain SET ... PX of the same key and value: $MEM_SET bytes)"
}

main() {
    # one command on a fresh clone: what is missing is installed and built
    if [ "${BENCH_SKIP_SETUP:-0}" != 1 ]; then
        bash "$REPO_ROOT/scripts/install-deps.sh"
        [ -n "${RATE_LIMIT_MODULE:-}" ] || [ -f "$MODULE_SO" ] \
            || bash "$REPO_ROOT/scripts/build.sh"
    fi
    need_cmd wrk redis-server redis-cli curl "$NGINX_BIN"
    local setup keep=()
    for setup in "${SETUPS[@]}"; do
        [ -n "${DESC[$setup]:-}" ] || die "unknown setup '$setup' ($ALL_SETUPS)"
        if [ "$setup" = lua ] && { [ ! -f "$LUA_MODULE" ] || [ ! -f "$LUA_REDIS" ]; }; then
            warn "skipping setup lua: libnginx-mod-http-lua / lua-nginx-redis not installed"
            continue
        fi
        is_ours "$setup" && need_module
        keep+=("$setup")
    done
    SETUPS=("${keep[@]}")
    [ "${#SETUPS[@]}" -gt 0 ] || die "no setup to run"
    [ "$MEM_KEYS" = 0 ] || need_module
    CLK_TCK=$(getconf CLK_TCK)
    if [[ " ${SETUPS[*]} " == *" redis_tls "* ]]; then
        need_cmd openssl
        bench_begin bench tls
        log "redis on 127.0.0.1:$REDIS_PORT and TLS :$REDIS_TLS_PORT (certificates in" \
            "$TLS_DIR), nginx on 127.0.0.1:$NGINX_PORT, module $MODULE_SO"
    else
        bench_begin bench
        log "redis on 127.0.0.1:$REDIS_PORT, nginx on 127.0.0.1:$NGINX_PORT, module $MODULE_SO"
    fi
    log "setups: ${SETUPS[*]}"
    log "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency -s bench/keys.lua after a" \
        "$WARMUP warm-up; $ROUNDS round(s), the setups in turn"
    local round
    for ((round = 1; round <= ROUNDS; round++)); do
        log ""
        log "== round $round of $ROUNDS"
        for setup in "${SETUPS[@]}"; do
            [ -z "${BROKEN[$setup]:-}" ] || continue
            measure "$setup" "$round" || BROKEN[$setup]=1
        done
    done
    if [ "$MEM_KEYS" != 0 ]; then
        log ""
        log "== Redis memory per active client ($MEM_KEYS distinct keys, wrk for $MEM_DURATION)"
        memory_per_client || true
    fi
    for setup in "${SETUPS[@]}"; do
        summarise "$setup"
    done
    print_table
    print_targets
    if [ -n "$OUT" ]; then
        if command -v gnuplot >/dev/null 2>&1; then
            bash "$BENCH_DIR/chart.sh" "$OUT/results.tsv" "$OUT/results.png"
        else
            warn "gnuplot not installed: no chart"
        fi
    fi

    log ""
    if [ "${#FAILURES[@]}" -gt 0 ]; then
        log "FAILED checks:"
        printf '  %s\n' "${FAILURES[@]}"
        exit 1
    fi
    log "all checks passed"
}

main "$@"
