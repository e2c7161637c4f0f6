#!/usr/bin/env bash
# Bytes of shared memory a per-client row and a local bucket take, measured
# from outside the module: from how many a zone of a fixed size holds, never
# from the module's own accounting.
#
# One nginx (one worker) has, for each key length L, two zones of
# BENCH_ZONE_MB each:
#   rows    rL: a throw-away PostgreSQL (bench/lib.sh) holds more rows of
#           L-byte keys for it than can fit (a zone's bytes / (L + 16):
#           no row nor bucket takes less than its key and 16 bytes);
#           the full sync fills the zone until the module logs the alert
#           'rate_limit_zone "rL" is full at N per-client limits'.
#           Bytes a row = zone bytes / N.  Rows may not take the last eighth
#           of a zone, which the module keeps for buckets, so this is what a
#           row costs in a zone sized for rows, that eighth included.
#   buckets bL: backend=local, rate=1r/d burst=2, so no bucket expires
#           while the script runs; bench/zone_probe.py sends distinct keys,
#           oldest first, until the zone has to forget the least recently
#           used ones, then asks for them again, newest first, and counts
#           the keys that still show a used token (X-RateLimit-Remaining)
#           before the first that starts anew: the most buckets the zone
#           holds, M.  Bytes a bucket = zone bytes / M.
# Both include what the zone spends besides rows and buckets (nginx's slab
# pool, the module's header, the index), shared out over N or M.
#
#   BENCH_ZONE_MB        size of each zone, in MB (default 8)
#   BENCH_KEY_LEN        the key length of the headline figures (default 16)
#   BENCH_KEY_LENS_MORE  more key lengths, also printed (default "15 32 64";
#                        empty: none)
#   BENCH_KEEP=1         keep the temp folder
#   RATE_LIMIT_MODULE    the module (default build/ngx_http_rate_limit_module.so)
# Everything runs on loopback, on free ports, and is stopped at the end.
# Takes about 1 to 2 minutes.
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
# shellcheck source=bench/lib.sh
. "$REPO_ROOT/bench/lib.sh"

ZONE_MB=${BENCH_ZONE_MB:-8}
read -r -a KEY_LENS <<<"${BENCH_KEY_LEN:-16} ${BENCH_KEY_LENS_MORE-15 32 64}"
ZONE_BYTES=$((ZONE_MB * 1024 * 1024))
SYNC_TIMEOUT=300            # seconds for the full sync of all the rows

# conf PREFIX: nginx.conf with a rows zone and a bucket zone per key length
conf() {
    local prefix=$1 len
    nginx_conf_head "$prefix" 1
    cat <<EOF
    keepalive_requests 10000000;
    rate_limit_postgres "$(pg_conninfo bench)" interval=1h;
EOF
    for len in "${KEY_LENS[@]}"; do
        cat <<EOF
    rate_limit_zone \$http_x_key zone=r$len:${ZONE_MB}m rate=1r/d burst=2 backend=local;
    rate_limit_zone \$http_x_key zone=b$len:${ZONE_MB}m rate=1r/d burst=2 backend=local;
EOF
    done
    cat <<EOF
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $prefix/html;
        location = / { return 204; }
EOF
    for len in "${KEY_LENS[@]}"; do
        printf '        location /b%s/ { rate_limit zone=b%s; try_files /ok.txt =404; }\n' \
            "$len" "$len"
    done
    printf '    }\n}\n'
}

main() {
    local len prefix held n
    declare -A FILL
    declare -A ROWS_HELD BUCKETS_HELD
    for len in "${KEY_LENS[@]}"; do
        [ "$len" -ge 8 ] || die "key lengths must be at least 8 bytes (got $len)"
        FILL[$len]=$((ZONE_BYTES / (len + 16)))
    done
    need_cmd curl "$NGINX_BIN"
    need_module
    pg_bench_begin zonebytes
    for len in "${KEY_LENS[@]}"; do
        log "zone r$len: loading ${FILL[$len]} rows of $len-byte keys"
        pg_load_rows bench "${FILL[$len]}" "$len" "r$len"
    done

    prefix=$WORK/nginx
    mkdir -p "$prefix/html" "$prefix/logs" "$prefix/tmp"
    echo ok >"$prefix/html/ok.txt"
    conf "$prefix" >"$prefix/nginx.conf"
    start_nginx "$prefix" "$prefix/nginx.conf" "$NGINX_PORT"
    wait_full_sync "$prefix/logs/error.log" "$NGINX_PID" "$SYNC_TIMEOUT"
    log "$SYNC_LINE"

    for len in "${KEY_LENS[@]}"; do
        n=$(sed -n "s/.*rate_limit_zone \"r$len\" is full at \([0-9]*\) per-client limits.*/\1/p" \
            "$prefix/logs/error.log" | head -n 1)
        [ -n "$n" ] || die "zone r$len took all ${FILL[$len]} rows: no \"is full\" alert"
        ROWS_HELD[$len]=$n

        log "zone b$len: ${FILL[$len]} keys of $len bytes, then asked again newest first"
        held=$("$PY" "$BENCH_DIR/zone_probe.py" "$NGINX_PORT" "/b$len/x" "$len" "${FILL[$len]}") \
            || die "zone b$len: bench/zone_probe.py failed"
        BUCKETS_HELD[$len]=${held#held }
    done
    forget_pid "$NGINX_PID"

    log ""
    log "== bytes of shared memory, zones of ${ZONE_MB}m ($ZONE_BYTES bytes)"
    log ""
    printf '| %s | %s | %s | %s | %s |\n' "key bytes" "rows held" "bytes a row" \
        "buckets held" "bytes a bucket"
    printf '|%s|%s|%s|%s|%s|\n' "--:" "--:" "--:" "--:" "--:"
    for len in "${KEY_LENS[@]}"; do
        awk -v len="$len" -v zone="$ZONE_BYTES" -v rows="${ROWS_HELD[$len]}" \
            -v buckets="${BUCKETS_HELD[$len]}" 'BEGIN {
            printf "| %d | %d | %.1f | %d | %.1f |\n",
                len, rows, zone / rows, buckets, zone / buckets }'
    done
}

main "$@"
