#!/usr/bin/env bash
# Installs the Debian packages needed to build, test, demo and benchmark the
# module.  Idempotent: only missing packages are installed, and `apt-get
# update` runs only when something is missing.  Runs as root (as CI does) or
# through sudo.
#
# Installing nginx, redis-server or redis-sentinel must not leave the
# distribution's own services running on ports 80 / 6379 / 26379: their
# start is blocked while installing (policy-rc.d), and one that runs anyway
# is stopped afterwards.
set -euo pipefail

PACKAGES=(
    # build
    build-essential cmake pkg-config
    nginx nginx-dev libhiredis-dev libyaml-dev libpq-dev nlohmann-json3-dev
    libssl-dev
    # unit tests and micro-benchmarks
    libgtest-dev googletest libbenchmark-dev libasan8 libubsan1
    # fuzzing (scripts/fuzz.sh): clang, libFuzzer, and llvm-symbolizer
    clang-14 libclang-rt-14-dev llvm-14
    # integration tests, demo
    redis-server redis-sentinel postgresql-15 postgresql-client-15
    python3-pytest python3-requests curl
    # fault tests: libfaketime, and promtool (from prometheus) for the metrics
    faketime prometheus
    # benchmark (wrk, and the Lua reference setup)
    wrk libnginx-mod-http-lua lua-nginx-redis
    # benchmark chart and instruction profile (bench/chart.sh, bench/profile.sh)
    gnuplot-nox valgrind
)

log() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "not root and no sudo: cannot run '$*'"
    fi
}

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        is_installed "$p" || printf '%s\n' "$p"
    done
}

# retry N COMMAND...: up to N tries, 5 s apart (mirrors can hiccup)
retry() {
    local tries=$1 i
    shift
    for ((i = 1; i <= tries; i++)); do
        "$@" && return 0
        [ "$i" -lt "$tries" ] && { log "failed (try $i of $tries), retrying in 5 s"; sleep 5; }
    done
    return 1
}

# While installing, forbid maintainer scripts to start services, unless the
# machine already has a policy (containers often do).
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=0
block_service_starts() {
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# added by install-deps.sh while installing\nexit 101\n' \
            | as_root tee "$POLICY" >/dev/null
        as_root chmod 755 "$POLICY"
        OWN_POLICY=1
    fi
}
unblock_service_starts() {
    if [ "$OWN_POLICY" = 1 ]; then
        as_root rm -f "$POLICY"
        OWN_POLICY=0
    fi
}

# pid_alive PIDFILE: the pid written in PIDFILE is a live process.
pid_alive() {
    local pid
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_distro_service NAME PIDFILE: stops the distribution's service NAME
# if its pid file shows it running (it would hold port 80, 6379 or 26379).
stop_distro_service() {
    local name=$1 pidfile=$2
    pid_alive "$pidfile" || return 0
    log "stopping the distribution's $name service (installed just now)"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl stop "$name" || true
        as_root systemctl disable "$name" >/dev/null 2>&1 || true
    else
        as_root service "$name" stop || true
    fi
    if pid_alive "$pidfile"; then
        as_root kill "$(tr -dc '0-9' <"$pidfile")" || true
    fi
}

main() {
    local missing
    mapfile -t missing < <(missing_packages)
    if [ "${#missing[@]}" -eq 0 ]; then
        log "all ${#PACKAGES[@]} packages already installed, nothing to do"
        return 0
    fi

    log "missing: ${missing[*]}"
    trap unblock_service_starts EXIT
    block_service_starts
    local apt=(as_root env DEBIAN_FRONTEND=noninteractive apt-get -q
               -o DPkg::Lock::Timeout=300)
    retry 3 "${apt[@]}" update || die "apt-get update failed"
    retry 3 "${apt[@]}" install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" || die "apt-get install failed"
    unblock_service_starts

    local p
    for p in "${missing[@]}"; do
        case $p in
            nginx) stop_distro_service nginx /run/nginx.pid ;;
            redis-server) stop_distro_service redis-server /run/redis/redis-server.pid ;;
            redis-sentinel) stop_distro_service redis-sentinel /run/sentinel/redis-sentinel.pid ;;
            postgresql-15) stop_distro_service postgresql /run/postgresql/15-main.pid ;;
            prometheus) stop_distro_service prometheus /run/prometheus/prometheus.pid ;;
        esac
    done

    mapfile -t missing < <(missing_packages)
    [ "${#missing[@]}" -eq 0 ] || die "still missing after apt-get: ${missing[*]}"
    log "installed; all ${#PACKAGES[@]} packages present"
}

main "$@"
