/*
 * The one rule for zone names, for every place that takes one: nginx.conf,
 * the PostgreSQL schema, the policy file and the bucket API.
 *
 * A zone name is written as it is, unquoted and unescaped, into the
 * RateLimit-Policy and RateLimit headers (a Structured Field token), the
 * Prometheus labels, the Redis keys and the logs.  So the set is small
 * enough to be safe in all of them: a quote, a backslash, a semicolon, a
 * comma, white space, a control or non-ASCII byte would split a header,
 * break a label or a log line, or change what a key means.
 */

#include <ngx_http_rate_limit_core.h>


namespace {

constexpr bool zone_name_byte(unsigned char c) noexcept
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

} // namespace


extern "C" int
ngx_http_rate_limit_valid_zone_name(const unsigned char *name, size_t len)
    noexcept
{
    if (name == nullptr || len == 0
        || len > NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX)
    {
        return 0;
    }

    for (size_t i = 0; i < len; i++) {
        if (!zone_name_byte(name[i])) {
            return 0;
        }
    }

    return 1;
}
