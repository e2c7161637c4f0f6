/*
 * What the fuzz targets share.  A broken promise aborts: libFuzzer counts
 * an abort as a crash and keeps the input that caused it, so a target
 * checks what a parser says about its result, not only that it survives.
 */

#ifndef RATE_LIMIT_FUZZ_CHECK_H
#define RATE_LIMIT_FUZZ_CHECK_H

#include <ngx_http_rate_limit_core.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>


namespace rate_limit_fuzz {

inline void require(bool holds, const char *promise) noexcept
{
    if (!holds) {
        std::fprintf(stderr, "broken promise: %s\n", promise);
        std::abort();
    }
}


/* every refusal names its problem, NUL ended within the caller's buffer */
inline void require_message(const char *err, size_t errlen) noexcept
{
    const size_t len = strnlen(err, errlen);

    require(len < errlen, "the error message is NUL ended");
    require(len > 0, "a refusal comes with a message");
}

}  // namespace rate_limit_fuzz


#endif /* RATE_LIMIT_FUZZ_CHECK_H */
