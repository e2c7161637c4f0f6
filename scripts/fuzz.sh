#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang (ASan and UBSan), then
# runs each for SECONDS (default 10).  Fails if the build fails or any
# target finds a crash, a leak, a sanitizer report, a broken promise or a
# hang; the input that did it is kept and printed with the command that
# replays it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600
#                                                    scripts/fuzz.sh 60 policy
#
# Targets are the files fuzz/fuzz_TARGET.cpp.  Each run starts from the
# seeds in fuzz/corpus/TARGET/ and from what earlier runs found, kept in
# the build folder, so long runs add up; the seeds in git are never
# written.  fuzz/dict/TARGET.dict, if there, gives the format's tokens.
#   RATE_LIMIT_FUZZ_BUILD_DIR  where to build (default build-fuzz/)
#   RATE_LIMIT_FUZZ_CXX        the compiler (default clang++-14)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${RATE_LIMIT_FUZZ_BUILD_DIR:-$REPO_ROOT/build-fuzz}
FUZZ_CXX=${RATE_LIMIT_FUZZ_CXX:-clang++-14}
DURATION=${1:-10}

log() { printf 'fuzz: %s\n' "$*"; }
die() { printf 'fuzz: ERROR: %s\n' "$*" >&2; exit 1; }

case $DURATION in
    ''|*[!0-9]*|0) die "SECONDS must be a whole number above 0: '$DURATION'" ;;
esac
if [ "$#" -gt 0 ]; then
    shift
fi

command -v "$FUZZ_CXX" >/dev/null 2>&1 \
    || die "$FUZZ_CXX not found: run scripts/install-deps.sh first"

# build: the core and every target, in a folder of their own
mkdir -p "$BUILD_DIR/logs"
log "building in $BUILD_DIR with $FUZZ_CXX"
cmake -S "$REPO_ROOT/fuzz" -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER="$FUZZ_CXX" \
    >"$BUILD_DIR/logs/cmake.log" 2>&1 \
    || { cat "$BUILD_DIR/logs/cmake.log" >&2; die "cmake failed"; }
cmake --build "$BUILD_DIR" -j "$(nproc)" >"$BUILD_DIR/logs/build.log" 2>&1 \
    || { tail -n 60 "$BUILD_DIR/logs/build.log" >&2; die "the build failed"; }

TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    for source in "$REPO_ROOT"/fuzz/fuzz_*.cpp; do
        name=${source##*/fuzz_}
        TARGETS+=("${name%.cpp}")
    done
fi

SYMBOLIZER=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer \
             || true)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
[ -n "$SYMBOLIZER" ] && export ASAN_SYMBOLIZER_PATH=$SYMBOLIZER

PASSED=0
FAILED=0
FAILURES=()

# run_target NAME: fuzzes one target for DURATION seconds
run_target() {
    local name=$1 rc=0
    local binary=$BUILD_DIR/fuzz_$name
    local seeds=$REPO_ROOT/fuzz/corpus/$name
    local found=$BUILD_DIR/corpus/$name
    local artifacts=$BUILD_DIR/artifacts/$name/
    local output=$BUILD_DIR/logs/$name.log
    local options=(-max_total_time="$DURATION" -timeout=10 -print_final_stats=1
                   -artifact_prefix="$artifacts")

    [ -x "$binary" ] || die "no target '$name' (fuzz/fuzz_$name.cpp)"
    [ -d "$seeds" ] || die "no seeds for '$name' in fuzz/corpus/$name/"
    # only this run's findings are shown
    rm -rf "$artifacts"
    mkdir -p "$found" "$artifacts"

    if [ -f "$REPO_ROOT/fuzz/dict/$name.dict" ]; then
        options+=(-dict="$REPO_ROOT/fuzz/dict/$name.dict")
    fi

    # new inputs go to the first folder only: the build's, not git's
    timeout --kill-after=10 "$((DURATION + 120))" \
        "$binary" "${options[@]}" "$found" "$seeds" >"$output" 2>&1 || rc=$?

    local runs inputs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$output")
    inputs=$(find "$found" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        log "PASS  $name: ${runs:-?} runs in ${DURATION}s, $inputs in corpus"
        PASSED=$((PASSED + 1))
        return 0
    fi

    FAILED=$((FAILED + 1))
    FAILURES+=("$name")
    log "FAIL  $name (exit $rc), last lines of $output:"
    tail -n 60 "$output" | sed 's/^/    /'
    local crash
    for crash in "$artifacts"*; do
        [ -e "$crash" ] || continue
        log "input kept: $crash"
        log "replay it:  $binary $crash"
    done
}

log "running ${#TARGETS[@]} targets for ${DURATION}s each: ${TARGETS[*]}"
for target in "${TARGETS[@]}"; do
    run_target "$target"
done

if [ "$FAILED" -ne 0 ]; then
    log "failed: ${FAILURES[*]}"
fi
printf 'fuzz: %d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
