/*
 * The one rule for zone names.  A zone name is written unquoted into
 * response headers, metric labels, JSON answers and log lines, so it is
 * kept to characters that none of them needs to escape.
 */

#include <ngx_http_rate_limit_core.h>


extern "C" int
ngx_http_rate_limit_valid_zone_name(const unsigned char *name,
    size_t len) noexcept
{
    if (name == nullptr || len == 0
        || len > NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX)
    {
        return 0;
    }

    for (size_t i = 0; i < len; i++) {
        const unsigned char c = name[i];

        /* ASCII by value: no locale may widen the set */
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                        || (c >= '0' && c <= '9') || c == '_' || c == '.'
                        || c == '-';
        if (!ok) {
            return 0;
        }
    }

    return 1;
}
