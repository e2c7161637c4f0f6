# TLS helpers of bench/run.sh's setup redis_tls (sourced, not run), on top
# of scripts/common.sh and bench/lib.sh: throw-away certificates made with
# openssl, and the bench's Redis listening on its plain port (the scripts'
# own redis-cli control) and on a TLS port (nginx's links).

# shellcheck shell=bash

TLS_DIR=            # the certificates: ca.pem, server.pem, server.key
REDIS_TLS_PORT=

# tls_make_certs DIR: a CA (ca.pem) and a server certificate signed by it
# (server.pem, server.key) for DNS:localhost and IP:127.0.0.1, valid for
# two days, all in DIR; EC P-256 keys, quick to make.  Sets TLS_DIR.
tls_make_certs() {
    local d=$1
    mkdir -p "$d"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 \
            -subj "/CN=rate-limit bench CA" \
        && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -nodes -keyout "$d/server.key" -out "$d/server.csr" \
            -subj "/CN=localhost" \
        && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/server.ext" \
        && openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" \
            -CAkey "$d/ca.key" -CAcreateserial -days 2 \
            -extfile "$d/server.ext" -out "$d/server.pem"
    } >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "openssl failed"; }
    openssl verify -CAfile "$d/ca.pem" "$d/server.pem" >>"$d/openssl.log" 2>&1 \
        || { cat "$d/openssl.log" >&2; die "the server certificate does not verify"; }
    chmod 644 "$d/ca.pem" "$d/server.pem"
    TLS_DIR=$d
}

# start_redis_tls DIR PORT TLS_PORT: start_redis (scripts/common.sh) with a
# TLS port too, the certificates of TLS_DIR, clients not asked for a
# certificate; waits until the TLS port answers PING too (checked against
# the CA, as localhost).  Sets REDIS_PID and REDIS_TLS_PORT.
start_redis_tls() {
    local dir=$1 port=$2 i
    REDIS_TLS_PORT=$3
    start_redis "$dir" "$port" --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
        --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no
    for i in $(seq 100); do
        if [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_TLS_PORT" --tls \
                --cacert "$TLS_DIR/ca.pem" --sni localhost ping 2>/dev/null)" = PONG ]
        then
            return 0
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/redis.log" >&2 || true
    die "redis-server did not come up on TLS port 127.0.0.1:$REDIS_TLS_PORT"
}

# tls_rewrite_conf CONF: the rendered nginx.conf CONF with its
# "rate_limit_redis 127.0.0.1:REDIS_PORT " line sent to the TLS port, with
# tls=on, the CA and the name localhost instead; the rest of the line (the
# timeout, the db) as it was
tls_rewrite_conf() {
    local conf=$1 tls
    tls="127.0.0.1:$REDIS_TLS_PORT tls=on tls_trusted_certificate=$TLS_DIR/ca.pem"
    tls+=" tls_server_name=localhost"
    sed -i "s|^\\( *rate_limit_redis \\)127\\.0\\.0\\.1:$REDIS_PORT |\\1$tls |" "$conf"
    grep -q "^ *rate_limit_redis $tls " "$conf" \
        || die "$conf: no \"rate_limit_redis 127.0.0.1:$REDIS_PORT \" line to send over TLS"
}
