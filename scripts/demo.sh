#!/usr/bin/env bash
# The demo: two nginx nodes share one rate limit through one Redis.
#
#   bash scripts/demo.sh              installs what is missing, builds, runs the demo
#   bash scripts/demo.sh --no-setup   runs the demo on what is already built
#
# It starts a Redis and two nginx nodes (A and B) on free loopback ports, in a
# temp folder, both from config/nginx.conf.  Then it sends a burst of requests
# with one X-Api-Key, alternating between A and B, and shows that together
# they let through exactly the zone's burst (5): the limit is shared.
# Everything it started is stopped when it ends.
#   DEMO_REQUESTS  how many requests in the burst (default 12)
#   DEMO_KEEP=1    keep the temp folder (configs, logs) for a look afterwards
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CONFIG_TEMPLATE=$REPO_ROOT/config/nginx.conf
REQUESTS=${DEMO_REQUESTS:-12}
API_KEY=demo-key-$$
WORK=

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }

cleanup() {
    stop_all
    if [ -n "$WORK" ]; then
        if [ "${DEMO_KEEP:-0}" = 1 ]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

setup() {
    log "== installing what is missing"
    bash "$REPO_ROOT/scripts/install-deps.sh"
    log ""
    log "== building"
    bash "$REPO_ROOT/scripts/build.sh"
    log ""
}

# the burst of the per_key zone, read from the config so the check follows it
per_key_burst() {
    sed -n 's/^[[:space:]]*rate_limit_zone .*zone=per_key:.* burst=\([0-9]*\).*/\1/p' \
        "$CONFIG_TEMPLATE" | head -n 1
}

start_node() {
    local name=$1 port=$2 prefix=$WORK/node-$1
    mkdir -p "$prefix/html/api" "$prefix/logs" "$prefix/tmp"
    printf '{"hello": "from node %s"}\n' "$name" >"$prefix/html/api/hello.json"
    printf 'not rate limited\n' >"$prefix/html/index.html"
    render "$CONFIG_TEMPLATE" "$prefix/nginx.conf" \
        MODULE="$MODULE_SO" PREFIX="$prefix" LISTEN="127.0.0.1:$port" \
        REDIS="127.0.0.1:$REDIS_PORT" NODE="$name"
    start_nginx "$prefix" "$prefix/nginx.conf" "$port"
    log "node $name: nginx on 127.0.0.1:$port (pid $NGINX_PID)"
}

# request PORT KEY: one GET of the limited file; sets STATUS, REMAINING, RETRY
request() {
    local port=$1 key=$2 headers=$WORK/headers
    STATUS=$(curl -sS -o /dev/null -D "$headers" -w '%{http_code}' --max-time 5 \
        -H "X-Api-Key: $key" "http://127.0.0.1:$port/api/hello.json" || true)
    REMAINING=$(header "$headers" X-RateLimit-Remaining)
    RETRY=$(header "$headers" Retry-After)
}

header() {
    local v
    v=$(grep -i "^$2:" "$1" 2>/dev/null | head -n 1 | cut -d: -f2- | tr -d ' \r') || true
    printf '%s' "${v:--}"
}

main() {
    case ${1:-} in
        --no-setup) ;;
        "") setup ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    need_cmd redis-server redis-cli curl "$NGINX_BIN"
    need_module

    local burst
    burst=$(per_key_burst)
    [ -n "$burst" ] || die "cannot find the per_key zone's burst in $CONFIG_TEMPLATE"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$(make_workdir demo)

    local ports
    mapfile -t ports < <(free_ports 3)
    REDIS_PORT=${ports[0]}
    log "== starting Redis and two nginx nodes (config/nginx.conf)"
    start_redis "$WORK/redis" "$REDIS_PORT"
    log "redis on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
    start_node A "${ports[1]}"
    start_node B "${ports[2]}"
    log ""

    log "== $REQUESTS requests with X-Api-Key: $API_KEY, alternating A, B, A, ..."
    log "   zone per_key: rate=10r/m burst=$burst, kept in Redis"
    log ""
    printf '  %3s  %-4s  %-6s  %-21s  %s\n' '#' node status X-RateLimit-Remaining Retry-After
    local i node port ok_a=0 ok_b=0 no_a=0 no_b=0 other=0
    for ((i = 1; i <= REQUESTS; i++)); do
        if ((i % 2)); then node=A port=${ports[1]}; else node=B port=${ports[2]}; fi
        request "$port" "$API_KEY"
        printf '  %3d  %-4s  %-6s  %-21s  %s\n' "$i" "$node" "$STATUS" "$REMAINING" "$RETRY"
        case $node/$STATUS in
            A/200) ok_a=$((ok_a + 1)) ;;
            B/200) ok_b=$((ok_b + 1)) ;;
            A/429) no_a=$((no_a + 1)) ;;
            B/429) no_b=$((no_b + 1)) ;;
            *) other=$((other + 1)) ;;
        esac
    done
    log ""
    log "node A: ${ok_a}×200 ${no_a}×429, node B: ${ok_b}×200 ${no_b}×429"
    log ""

    log "== what Redis holds: <prefix>:<zone>:<key> = GCRA TAT in microseconds,"
    log "   expiring when the bucket is full again (the global zone's after ~1 ms)"
    local key
    while read -r key; do
        [ -n "$key" ] || continue
        printf '  %-40s value=%s pttl=%sms\n' "$key" \
            "$(redis-cli -p "$REDIS_PORT" GET "$key")" \
            "$(redis-cli -p "$REDIS_PORT" PTTL "$key")"
    done < <(redis-cli -p "$REDIS_PORT" --scan | grep -v ':nodes$' | sort)
    log "  and the node registry, rl:nodes (each node's last heartbeat, ms):"
    redis-cli -p "$REDIS_PORT" ZRANGE rl:nodes 0 -1 WITHSCORES \
        | paste - - | sed 's/^/    /'
    log ""

    log "== another API key has a bucket of its own"
    request "${ports[1]}" "other-key-$$"
    log "  node A, X-Api-Key: other-key-$$: $STATUS, X-RateLimit-Remaining: $REMAINING"
    log ""

    log "== access logs (\$rate_limit_status at the end)"
    for node in A B; do
        grep ' /api/' "$WORK/node-$node/logs/access.log" | sed "s/^/  $node: /" || true
    done
    log ""

    local total=$((ok_a + ok_b)) expected=$((REQUESTS < burst ? REQUESTS : burst))
    if [ "$total" -eq "$expected" ] && [ "$other" -eq 0 ] \
            && [ $((no_a + no_b)) -eq $((REQUESTS - expected)) ]; then
        log "OK: $total of $REQUESTS requests passed across both nodes (burst $burst):" \
            "the two nodes share one limit."
    else
        log "UNEXPECTED: $total requests passed across both nodes (burst is $burst)," \
            "$((no_a + no_b)) rejected, $other other statuses."
        log "error logs:"
        tail -n 20 "$WORK"/node-*/logs/error.log || true
        exit 1
    fi
}

main "$@"
