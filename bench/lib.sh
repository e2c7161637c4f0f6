# Helpers shared by bench/run.sh and bench/profile.sh (sourced, not run),
# on top of scripts/common.sh.

# shellcheck shell=bash

BENCH_DIR=$REPO_ROOT/bench

# bench_begin TAG: OUT made absolute, the caller's cleanup trapped, a fresh
# WORK folder, two free ports (REDIS_PORT, NGINX_PORT) and Redis started
bench_begin() {
    if [ -n "$OUT" ]; then mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); fi
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$(make_workdir "$1")
    local ports
    mapfile -t ports < <(free_ports 2)
    REDIS_PORT=${ports[0]} NGINX_PORT=${ports[1]}
    start_redis "$WORK/redis" "$REDIS_PORT"
}

# bench_site PREFIX CONF DB: an nginx prefix folder with the small file in
# every location of the benchmark confs, and bench/CONF.conf rendered into
# PREFIX/nginx.conf for NGINX_PORT, REDIS_PORT and Redis database DB
bench_site() {
    local prefix=$1 conf=$2 db=$3 d
    for d in bench tiny abuse active mem; do
        mkdir -p "$prefix/html/$d"
        printf 'hello, world\n' >"$prefix/html/$d/hello.txt"
    done
    mkdir -p "$prefix/logs" "$prefix/tmp"
    printf 'ok\n' >"$prefix/html/index.html"
    render "$BENCH_DIR/$conf.conf" "$prefix/nginx.conf" PREFIX="$prefix" \
        PORT="$NGINX_PORT" MODULE="$MODULE_SO" REDIS="127.0.0.1:$REDIS_PORT" \
        REDIS_PORT="$REDIS_PORT" BENCH_DIR="$BENCH_DIR" DB="$db"
}
