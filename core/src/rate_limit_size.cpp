/*
 * Parsing of the SIZE in zone=NAME:SIZE.
 *
 * The grammar is nginx's own ngx_parse_size(), so that a size written for
 * limit_req_zone means the same here; unlike it, the arithmetic is checked
 * for overflow on every platform and a size of 0 is refused at once rather
 * than left to a later "too small".
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"

using ngx_http_rate_limit::write_error;

#include <array>
#include <charconv>
#include <cstdint>
#include <string_view>
#include <system_error>


namespace {

struct SizeUnit {
    char      lower;
    char      upper;
    uint64_t  bytes;
};

constexpr std::array<SizeUnit, 3> size_units {{
    { 'k', 'K', uint64_t(1) << 10 },
    { 'm', 'M', uint64_t(1) << 20 },
    { 'g', 'G', uint64_t(1) << 30 },
}};


int parse_size(std::string_view text, uint64_t &bytes, char *err,
    size_t errlen) noexcept
{
    if (text.empty()) {
        write_error(err, errlen,
                    "empty size, expected a number of bytes like 10m");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    uint64_t scale = 1;

    for (const SizeUnit &unit : size_units) {
        if (text.back() == unit.lower || text.back() == unit.upper) {
            scale = unit.bytes;
            text.remove_suffix(1);
            break;
        }
    }

    /* from_chars takes no sign and no white space, as ngx_parse_size() */
    uint64_t value = 0;
    const char *end = text.data() + text.size();
    const std::from_chars_result parsed = std::from_chars(text.data(), end,
                                                          value);

    if (parsed.ec == std::errc::invalid_argument || parsed.ptr != end) {
        write_error(err, errlen, "the size must be a whole number of bytes, "
                    "optionally followed by k, m or g");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    constexpr uint64_t size_max = NGX_HTTP_RATE_LIMIT_SIZE_MAX;

    if (parsed.ec == std::errc::result_out_of_range
        || value > size_max / scale)
    {
        write_error(err, errlen, "the size is too large, at most %lld "
                    "bytes", static_cast<long long>(size_max));
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (value == 0) {
        write_error(err, errlen, "the size must be positive");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    bytes = value * scale;

    return NGX_HTTP_RATE_LIMIT_OK;
}

} // namespace


extern "C" int
ngx_http_rate_limit_parse_size(const char *text, size_t len, uint64_t *bytes,
    char *err, size_t errlen) noexcept
{
    if (bytes == nullptr || (text == nullptr && len != 0)) {
        write_error(err, errlen, "internal error: no size to parse");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    /* a local result, so that a failure leaves *bytes untouched */
    uint64_t parsed = 0;

    const int rc = parse_size(std::string_view(text, len), parsed, err,
                              errlen);
    if (rc == NGX_HTTP_RATE_LIMIT_OK) {
        *bytes = parsed;
    }

    return rc;
}
