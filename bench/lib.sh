# Helpers shared by bench/run.sh and bench/profile.sh (sourced, not run),
# on top of scripts/common.sh.

# shellcheck shell=bash

BENCH_DIR=$REPO_ROOT/bench

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
