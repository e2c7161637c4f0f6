/*
 * How the core hands an error message to C: written into the caller's
 * buffer, cut to fit, never thrown.
 */

#ifndef _NGX_HTTP_RATE_LIMIT_ERROR_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_ERROR_H_INCLUDED_


#include <cstdarg>
#include <cstddef>
#include <cstdio>


namespace ngx_http_rate_limit {

__attribute__((format(printf, 3, 4)))
inline void write_error(char *err, size_t errlen, const char *format, ...)
    noexcept
{
    /* the caller may not want a message at all */
    if (err == nullptr || errlen == 0) {
        return;
    }

    va_list args;
    va_start(args, format);
    std::vsnprintf(err, errlen, format, args);
    va_end(args);
}

}  // namespace ngx_http_rate_limit


#endif /* _NGX_HTTP_RATE_LIMIT_ERROR_H_INCLUDED_ */
