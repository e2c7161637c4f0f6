#!/bin/sh
# nginx with AddressSanitizer and UndefinedBehaviorSanitizer preloaded, for a
# module built with -fsanitize=address,undefined (scripts/test.sh, step 5).
# Debian's nginx is not instrumented: the sanitizers watch the module's code.
# Reports go to files under RATE_LIMIT_SANITIZER_LOGS, which the caller reads.
: "${RATE_LIMIT_SANITIZER_LOGS:?set RATE_LIMIT_SANITIZER_LOGS to a folder}"
lib=/usr/lib/x86_64-linux-gnu
[ -e "$lib/libasan.so.8" ] || lib=/lib/x86_64-linux-gnu
export LD_PRELOAD="$lib/libasan.so.8 $lib/libubsan.so.1"
export ASAN_OPTIONS="detect_leaks=0:log_path=$RATE_LIMIT_SANITIZER_LOGS/asan"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$RATE_LIMIT_SANITIZER_LOGS/ubsan"
exec /usr/sbin/nginx "$@"
