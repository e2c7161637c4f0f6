# Helpers shared by scripts/demo.sh and bench/run.sh (sourced, not run).
#
# Everything started with start_redis / start_nginx is remembered and stopped
# by stop_all, which the callers run from an EXIT trap: nothing is left behind.
# Only loopback addresses are used.

# shellcheck shell=bash

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE_SO=${RATE_LIMIT_MODULE:-$REPO_ROOT/build/ngx_http_rate_limit_module.so}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
PY=/usr/bin/python3

STARTED_PIDS=()     # pids of the servers we started, in start order
STARTED_NAMES=()

log()  { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 \
            || die "'$c' not found: run scripts/install-deps.sh first"
    done
}

need_module() {
    [ -f "$MODULE_SO" ] \
        || die "$MODULE_SO not found: run scripts/build.sh first"
}

# free_ports N: prints N distinct free TCP ports on 127.0.0.1, one a line.
# All sockets are held open together so the ports differ from each other.
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# make_workdir: a fresh temp folder readable by nginx workers (they run as
# nobody when the master is root, so the 0700 of mktemp is not enough).
make_workdir() {
    local d
    d=$(mktemp -d "${TMPDIR:-/tmp}/rate-limit-$1.XXXXXX")
    chmod 755 "$d"
    printf '%s\n' "$d"
}

# render TEMPLATE OUTPUT NAME=VALUE...: copies TEMPLATE replacing @NAME@.
render() {
    local template=$1 output=$2 kv name value
    shift 2
    local args=()
    for kv in "$@"; do
        name=${kv%%=*} value=${kv#*=}
        value=${value//\\/\\\\}; value=${value//|/\\|}; value=${value//&/\\&}
        args+=(-e "s|@${name}@|${value}|g")
    done
    sed "${args[@]}" "$template" >"$output"
    if grep -n '@[A-Z_]*@' "$output" >&2; then
        die "unreplaced placeholders left in $output (from $template)"
    fi
}

remember_pid() { STARTED_PIDS+=("$1"); STARTED_NAMES+=("$2"); }

# stop_pid PID NAME: TERM, wait up to 5 s, then KILL.
stop_pid() {
    local pid=$1 name=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name (pid $pid) did not stop on TERM, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# forget_pid PID: stops PID now and drops it from the list stop_all walks.
forget_pid() {
    local pid=$1 i
    for i in "${!STARTED_PIDS[@]}"; do
        if [ "${STARTED_PIDS[$i]}" = "$pid" ]; then
            stop_pid "$pid" "${STARTED_NAMES[$i]}"
            unset 'STARTED_PIDS[i]' 'STARTED_NAMES[i]'
        fi
    done
}

stop_all() {
    local i
    local idx=("${!STARTED_PIDS[@]}")
    for ((i = ${#idx[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[${idx[$i]}]}" "${STARTED_NAMES[${idx[$i]}]}"
    done
    STARTED_PIDS=() STARTED_NAMES=()
}

# start_redis DIR PORT [ARG...]: a throw-away Redis on 127.0.0.1:PORT (no
# persistence), given the redis-server arguments ARG too.  Sets REDIS_PID.
start_redis() {
    local dir=$1 port=$2 i
    shift 2
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$dir" --logfile "$dir/redis.log" --daemonize no "$@" \
        </dev/null >/dev/null 2>&1 &
    REDIS_PID=$!
    remember_pid "$REDIS_PID" "redis-server :$port"
    for i in $(seq 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/redis.log" >&2 || true
    die "redis-server did not come up on 127.0.0.1:$port"
}

# start_nginx PREFIX CONF PORT: tests CONF, then runs nginx in the foreground
# (as a background job of this shell) and waits until PORT answers HTTP.
# Sets NGINX_PID.
start_nginx() {
    local prefix=$1 conf=$2 port=$3 i code
    mkdir -p "$prefix/logs" "$prefix/tmp"
    if ! "$NGINX_BIN" -t -q -p "$prefix" -e "$prefix/logs/error.log" -c "$conf" \
            >"$prefix/logs/nginx-t.log" 2>&1; then
        cat "$prefix/logs/nginx-t.log" >&2
        die "nginx -t failed for $conf"
    fi
    "$NGINX_BIN" -p "$prefix" -e "$prefix/logs/error.log" -c "$conf" \
        -g 'daemon off;' </dev/null >>"$prefix/logs/stdout.log" 2>&1 &
    NGINX_PID=$!
    remember_pid "$NGINX_PID" "nginx :$port"
    for i in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
            "http://127.0.0.1:$port/" 2>/dev/null || true)
        if [ -n "$code" ] && [ "$code" != 000 ]; then
            return 0
        fi
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$prefix/logs/error.log" >&2 || true
    die "nginx did not come up on 127.0.0.1:$port ($conf)"
}
