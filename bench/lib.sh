# Helpers shared by the bench/ scripts (sourced, not run),
# on top of scripts/common.sh.

# shellcheck shell=bash

BENCH_DIR=$REPO_ROOT/bench
WORK=               # the script's temp folder

# cleanup: the bench scripts' EXIT trap: stops all they started and removes
# WORK, unless BENCH_KEEP=1
cleanup() {
    stop_all
    pg_stop
    if [ -n "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
}

# bench_workdir TAG: cleanup trapped and a fresh WORK folder
bench_workdir() {
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    WORK=$(make_workdir "$1")
}

# bench_begin TAG [tls]: OUT made absolute, cleanup trapped, a fresh
# WORK folder, free ports (REDIS_PORT, NGINX_PORT) and Redis started; with
# tls, the certificates made in WORK/tls and Redis listening on a TLS port
# too (bench/tls.sh, which the caller sources: REDIS_TLS_PORT)
bench_begin() {
    if [ -n "$OUT" ]; then mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd); fi
    bench_workdir "$1"
    local ports
    mapfile -t ports < <(free_ports 3)
    REDIS_PORT=${ports[0]} NGINX_PORT=${ports[1]}
    if [ "${2:-}" = tls ]; then
        tls_make_certs "$WORK/tls"
        start_redis_tls "$WORK/redis" "$REDIS_PORT" "${ports[2]}"
    else
        start_redis "$WORK/redis" "$REDIS_PORT"
    fi
}

# bench_site PREFIX CONF DB [NAME=VALUE...]: an nginx prefix folder with the
# small file in every location of the benchmark confs, and bench/CONF.conf
# rendered into PREFIX/nginx.conf for NGINX_PORT, REDIS_PORT, Redis database
# DB and the conf's own placeholders NAME
bench_site() {
    local prefix=$1 conf=$2 db=$3 d
    shift 3
    for d in bench tiny abuse active mem; do
        mkdir -p "$prefix/html/$d"
        printf 'hello, world\n' >"$prefix/html/$d/hello.txt"
    done
    mkdir -p "$prefix/logs" "$prefix/tmp"
    printf 'ok\n' >"$prefix/html/index.html"
    render "$BENCH_DIR/$conf.conf" "$prefix/nginx.conf" PREFIX="$prefix" \
        PORT="$NGINX_PORT" MODULE="$MODULE_SO" REDIS="127.0.0.1:$REDIS_PORT" \
        REDIS_PORT="$REDIS_PORT" BENCH_DIR="$BENCH_DIR" DB="$db" "$@"
}


# nginx_conf_head PREFIX WORKERS: an nginx.conf that loads the module, up to
# inside its http block, logging at info (the sync's lines) in PREFIX/logs
nginx_conf_head() {
    cat <<EOF
load_module $MODULE_SO;
worker_processes $2;
error_log $1/logs/error.log info;
pid $1/nginx.pid;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $1/tmp;
EOF
}

# A throw-away PostgreSQL cluster: initdb in a temp folder, 127.0.0.1 on
# PG_PORT, run as the "postgres" user when the script runs as root.  The
# cleanup (above) runs pg_stop.
PG_DATA=
AS_PG=()

# pg_find: PG_BINDIR, the newest installed PostgreSQL unless it is set
pg_find() {
    if [ -z "${PG_BINDIR:-}" ]; then
        PG_BINDIR=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    [ -x "$PG_BINDIR/initdb" ] \
        || die "PostgreSQL not found (apt-get install postgresql-15, or set PG_BINDIR)"
}

# pg_start DIR PORT: the cluster in DIR, started on 127.0.0.1:PORT; sets
# PG_PORT
pg_start() {
    local dir=$1
    PG_PORT=$2 PG_DATA=$1/data
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        AS_PG=(runuser -u postgres --)
    fi
    log "PostgreSQL: initdb in $dir, 127.0.0.1:$PG_PORT"
    "${AS_PG[@]}" "$PG_BINDIR/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 \
        --no-locale --no-sync --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    cat >>"$PG_DATA/postgresql.conf" <<EOC
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$dir'
fsync = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
EOC
    "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -l "$dir/postgres.log" -w -t 60 start \
        >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
}

# pg_bench_begin TAG: cleanup trapped, a fresh WORK folder, a free
# NGINX_PORT, and PostgreSQL started with a database "bench"
pg_bench_begin() {
    local ports
    pg_find
    bench_workdir "$1"
    mapfile -t ports < <(free_ports 2)
    NGINX_PORT=${ports[1]}
    pg_start "$WORK/pg" "${ports[0]}"
    pg_create_db bench
}

pg_stop() {
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        "${AS_PG[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop \
            >/dev/null 2>&1 || true
    fi
}

# pg_conninfo DB: the libpq connection string of database DB
pg_conninfo() {
    printf 'host=127.0.0.1 port=%s user=postgres dbname=%s' "$PG_PORT" "$1"
}

# pg_psql DB PSQL-ARGS...: psql on database DB, unaligned, stops on errors
pg_psql() {
    local db=$1
    shift
    "$PG_BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" \
        -U postgres -d "$db" "$@"
}

# pg_create_db DB: a new database with the module's schema
pg_create_db() {
    pg_psql postgres -c "CREATE DATABASE $1;"
    pg_psql "$1" -f "$REPO_ROOT/config/rate_limit_schema.sql" >/dev/null
}

# pg_load_rows DB ROWS KEY_LEN ZONE...: ROWS per-client rows in each ZONE,
# in one INSERT ... generate_series; the keys are "k" and the row's number,
# zero-padded to KEY_LEN bytes; rates and bursts vary from row to row
pg_load_rows() {
    local db=$1 rows=$2 key_len=$3 zones
    shift 3
    [ "$key_len" -ge 8 ] || die "keys of the rows must have at least 8 bytes"
    zones=$(printf "('%s')," "$@")
    pg_psql "$db" -c "INSERT INTO rate_limit_buckets (zone, key, rate, burst)
        SELECT z, 'k' || lpad(g::text, $key_len - 1, '0'),
               (g % 100 + 1) || 'r/s', g % 1000 + 1
        FROM generate_series(1, $rows) AS g, (VALUES ${zones%,}) AS zones (z);"
}

# wait_full_sync LOG PID SECONDS: waits until LOG has the syncing worker's
# "full sync of N rows in M ms" line, at most SECONDS; sets SYNC_LINE
wait_full_sync() {
    local log_file=$1 pid=$2 seconds=$3 i
    SYNC_LINE=
    for ((i = 0; i < seconds * 10; i++)); do
        SYNC_LINE=$(grep -o 'rate_limit_postgres: full sync of [0-9]* rows in [0-9]* ms' \
            "$log_file" | head -n 1 || true)
        [ -n "$SYNC_LINE" ] && return 0
        kill -0 "$pid" 2>/dev/null || die "nginx exited: $(tail -n 5 "$log_file")"
        sleep 0.1
    done
    die "no \"full sync of N rows\" line in $log_file after ${seconds}s"
}
