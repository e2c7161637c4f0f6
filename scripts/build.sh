#!/usr/bin/env bash
# Configures and builds everything into build/: the core library
# (build/core/librate_limit_core.a, the core's only build), then the nginx
# module (build/ngx_http_rate_limit_module.so) and the GoogleTest binaries,
# which both link that library.
#   BUILD_TYPE   CMake build type (default RelWithDebInfo)
#   BUILD_JOBS   parallel jobs (default: number of cores)
#   RATE_LIMIT_BUILD_DIR  where to build (default build/)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${RATE_LIMIT_BUILD_DIR:-$REPO_ROOT/build}
MODULE_SO=$BUILD_DIR/ngx_http_rate_limit_module.so

log() { printf 'build: %s\n' "$*"; }
die() { printf 'build: ERROR: %s\n' "$*" >&2; exit 1; }

command -v cmake >/dev/null 2>&1 || die "cmake not found: run scripts/install-deps.sh first"

log "configuring ($BUILD_DIR, ${BUILD_TYPE:-RelWithDebInfo})"
cmake -S "$REPO_ROOT" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
    || die "cmake configure failed"

log "building with ${BUILD_JOBS:-$(nproc)} jobs"
cmake --build "$BUILD_DIR" -j "${BUILD_JOBS:-$(nproc)}" \
    || die "build failed (see the compiler output above)"

[ -f "$MODULE_SO" ] || die "build finished but $MODULE_SO is missing"
log "ok: $MODULE_SO"
