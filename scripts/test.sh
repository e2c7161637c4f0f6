#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   1. dependencies        scripts/install-deps.sh
#   2. build               scripts/build.sh
#   3. unit tests          ctest (GoogleTest, tests/)
#   4. fuzz targets        scripts/fuzz.sh, a few seconds each (fuzz/)
#   5. integration tests   pytest on t/ (real nginx + Redis on loopback)
#   6. the same under ASan and UBSan
# Exits non-zero if any step fails; a test runner that finds no test fails too.
#   TEST_SKIP_SETUP=1   skip steps 1 and 2 (use what is built)
#   PYTEST_ARGS         extra pytest arguments, e.g. "-k headers -x"
#   FUZZ_SECONDS        how long each fuzz target runs (default 4)
#   RATE_LIMIT_BUILD_DIR  where to build (default build/)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${RATE_LIMIT_BUILD_DIR:-$REPO_ROOT/build}
CTEST_TIMEOUT=${CTEST_TIMEOUT:-60}              # seconds, per unit test
CTEST_TOTAL_TIMEOUT=${CTEST_TOTAL_TIMEOUT:-300}  # seconds, the whole ctest run
PYTEST_TIMEOUT=${PYTEST_TIMEOUT:-480}           # seconds, the whole pytest run
FUZZ_SECONDS=${FUZZ_SECONDS:-4}                 # seconds, each fuzz target
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-300}               # seconds, build and all targets

RESULTS=()
FAILED=0
START=$SECONDS

STEP_START=$SECONDS

section() {
    STEP_START=$SECONDS
    printf '\n==============================================================\n'
    printf '== %s\n' "$*"
    printf '==============================================================\n'
}

# each step with its seconds: the suite must stay well under 15 minutes
record() {   # record NAME RC
    local took=$((SECONDS - STEP_START))
    if [ "$2" -eq 0 ]; then
        RESULTS+=("PASS  $1 (${took} s)")
    else
        RESULTS+=("FAIL  $1 (exit $2, ${took} s)")
        FAILED=1
    fi
}

summary() {
    section "summary ($((SECONDS - START)) s)"
    printf '  %s\n' "${RESULTS[@]}"
    if [ "$FAILED" -ne 0 ]; then
        printf '\nTESTS FAILED\n'
    else
        printf '\nALL TESTS PASSED\n'
    fi
}

run_step() {   # run_step NAME COMMAND...: runs it, records its exit code
    local name=$1 rc=0
    shift
    "$@" || rc=$?
    record "$name" "$rc"
    return "$rc"
}

# The module built with -fsanitize=address,undefined into DIR.  It links a
# core library of its own, built by CMake (that target alone) with the same
# flags in DIR/core: the sanitizers must see the core too.
sanitizer_build() {   # sanitizer_build DIR
    local dir=$1 flags="-fsanitize=address,undefined -fno-omit-frame-pointer"
    cmake -S "$REPO_ROOT" -B "$dir/core" \
        -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
        -DCMAKE_CXX_FLAGS="$flags" \
        -DRATE_LIMIT_BUILD_TESTS=OFF -DRATE_LIMIT_BUILD_MODULE=OFF || return
    cmake --build "$dir/core" -j "$(nproc)" --target rate_limit_core || return
    RATE_LIMIT_CC_OPT=$flags RATE_LIMIT_LD_OPT="-fsanitize=address,undefined" \
        bash "$REPO_ROOT/scripts/build-module.sh" /usr/share/nginx/src \
            "$dir/nginx" "$REPO_ROOT/ngx_module" \
            "$dir/ngx_http_rate_limit_module.so" \
            "$dir/core/core/librate_limit_core.a"
}

# The sanitizer build loaded into Debian's nginx with the sanitizers
# preloaded; any report fails the step.
# the self-tests of the harness and the README's check load no module: the
# first pass runs them, the sanitizers have nothing to see there
NO_MODULE_TESTS=(--ignore=t/test_harness.py --ignore=t/test_cluster_harness.py
                 --ignore=t/test_readme.py)

sanitizer_suite() {
    local rc=0 dir=$BUILD_DIR/sanitizers
    rm -rf "$dir/logs"
    mkdir -p "$dir/logs"
    sanitizer_build "$dir" || rc=$?
    if [ "$rc" -eq 0 ]; then
        # shellcheck disable=SC2086
        RATE_LIMIT_SANITIZER_LOGS=$dir/logs NGINX_BIN=$REPO_ROOT/scripts/nginx-asan.sh \
        RATE_LIMIT_MODULE=$dir/ngx_http_rate_limit_module.so \
            timeout --kill-after=30 "$PYTEST_TIMEOUT" \
            /usr/bin/python3 -m pytest -q -p no:cacheprovider t/ \
                "${NO_MODULE_TESTS[@]}" ${PYTEST_ARGS:-} || rc=$?
    fi
    if [ -n "$(ls -A "$dir/logs")" ]; then
        echo "sanitizer reports:"
        cat "$dir"/logs/*
        rc=1
    fi
    record "integration tests under ASan and UBSan" "$rc"
}

main() {
    cd "$REPO_ROOT"

    if [ "${TEST_SKIP_SETUP:-0}" != 1 ]; then
        section "1/6 dependencies (scripts/install-deps.sh)"
        if ! run_step "dependencies" bash scripts/install-deps.sh; then
            summary; exit 1
        fi

        section "2/6 build (scripts/build.sh)"
        if ! run_step "build" bash scripts/build.sh; then
            summary; exit 1
        fi
    fi

    section "3/6 unit tests (ctest)"
    local rc=0
    if [ -f "$BUILD_DIR/CTestTestfile.cmake" ]; then
        # one process a test, most of them start-up: run them side by side
        # (those that need a redis-server start their own on free ports)
        (cd "$BUILD_DIR" && timeout --kill-after=30 "$CTEST_TOTAL_TIMEOUT" \
            ctest --output-on-failure --no-tests=error -j "$(nproc)" \
                --timeout "$CTEST_TIMEOUT") || rc=$?
        case $rc in
            124|137) echo "ctest did not finish within ${CTEST_TOTAL_TIMEOUT}s" ;;
        esac
    else
        echo "no $BUILD_DIR/CTestTestfile.cmake: the unit tests were not built"
        rc=1
    fi
    record "unit tests (ctest)" "$rc"

    section "4/6 fuzz targets, ${FUZZ_SECONDS}s each (scripts/fuzz.sh)"
    rc=0
    RATE_LIMIT_FUZZ_BUILD_DIR=$BUILD_DIR/fuzz \
        timeout --kill-after=30 "$FUZZ_TIMEOUT" \
        bash scripts/fuzz.sh "$FUZZ_SECONDS" || rc=$?
    case $rc in
        124|137) echo "scripts/fuzz.sh did not finish within ${FUZZ_TIMEOUT}s" ;;
    esac
    record "fuzz targets (libFuzzer, ${FUZZ_SECONDS}s each)" "$rc"

    section "5/6 integration tests (pytest t/)"
    export RATE_LIMIT_REQUIRE_MODULE=1
    export RATE_LIMIT_MODULE=${RATE_LIMIT_MODULE:-$BUILD_DIR/ngx_http_rate_limit_module.so}
    rc=0
    # shellcheck disable=SC2086
    timeout --kill-after=30 "$PYTEST_TIMEOUT" \
        /usr/bin/python3 -m pytest -q -p no:cacheprovider t/ ${PYTEST_ARGS:-} || rc=$?
    case $rc in
        5) echo "pytest collected no test: counted as a failure" ;;
        124|137) echo "pytest did not finish within ${PYTEST_TIMEOUT}s" ;;
    esac
    record "integration tests (pytest)" "$rc"

    section "6/6 integration tests again, module under ASan and UBSan"
    sanitizer_suite
    summary
    exit "$FAILED"
}

main "$@"
