/*
 * Parsing of "N r/PERIOD" rates, as written in rate_limit_zone.
 *
 * The grammar is deliberately strict: configuration is read once, and a
 * typo that silently became some other rate would be far worse than an
 * "nginx -t" failure.  So no white space, no signs, no fractions and no
 * upper case units.
 *
 * A count of 0 is refused in nginx.conf, where it can only be a mistake,
 * and accepted for per-client limits, where it deliberately blocks one
 * client; the period must be valid either way.
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"

using ngx_http_rate_limit::write_error;

#include <array>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string_view>


namespace {

struct PeriodUnit {
    std::string_view  name;
    uint64_t          milliseconds;
};

/* units are matched as whole words, so "ms" and "m" cannot be confused */
constexpr std::array<PeriodUnit, 5> period_units {{
    { "ms", 1 },
    { "s",  1000 },
    { "m",  60 * 1000 },
    { "h",  60 * 60 * 1000 },
    { "d",  24 * 60 * 60 * 1000 },
}};


bool is_digit(char c) noexcept
{
    return c >= '0' && c <= '9';
}


bool is_space(char c) noexcept
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
           || c == '\v';
}


enum class NumberStatus { ok, missing, overflow };

/*
 * Consumes the leading decimal digits of text.  Overflow is reported
 * rather than wrapped, so "18446744073709551617r/s" cannot become 1r/s.
 */
NumberStatus take_number(std::string_view &text, uint64_t &value) noexcept
{
    size_t digits = 0;
    value = 0;

    while (digits < text.size() && is_digit(text[digits])) {
        const uint64_t digit = static_cast<uint64_t>(text[digits] - '0');

        if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
            return NumberStatus::overflow;
        }

        value = value * 10 + digit;
        digits++;
    }

    if (digits == 0) {
        return NumberStatus::missing;
    }

    text.remove_prefix(digits);
    return NumberStatus::ok;
}


std::optional<uint64_t> unit_milliseconds(std::string_view name) noexcept
{
    for (const PeriodUnit &unit : period_units) {
        if (unit.name == name) {
            return unit.milliseconds;
        }
    }

    return std::nullopt;
}


enum class ZeroCount { refused, allowed };

int parse_rate(std::string_view text, ZeroCount zero_count,
    ngx_http_rate_limit_rate_t &rate, char *err, size_t errlen) noexcept
{
    if (text.empty()) {
        write_error(err, errlen, "empty rate, expected N r/PERIOD like 10r/s");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    for (char c : text) {
        if (is_space(c)) {
            write_error(err, errlen, "the rate must not contain white space");
            return NGX_HTTP_RATE_LIMIT_EINVAL;
        }
    }

    uint64_t count;

    switch (take_number(text, count)) {
    case NumberStatus::missing:
        write_error(err, errlen,
                    "the rate must start with a whole number of requests");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    case NumberStatus::overflow:
        write_error(err, errlen, "the number of requests is too large");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    case NumberStatus::ok:
        break;
    }

    if (count == 0 && zero_count == ZeroCount::refused) {
        write_error(err, errlen, "the number of requests must be positive");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (!text.empty() && text.front() == '.') {
        write_error(err, errlen,
                    "the number of requests must be a whole number");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    constexpr std::string_view separator = "r/";

    if (text.substr(0, separator.size()) != separator) {
        write_error(err, errlen,
                    "expected \"r/\" after the number of requests");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    text.remove_prefix(separator.size());

    /* "r/s" means "r/1s": the multiplier is optional */
    uint64_t multiplier = 1;

    switch (take_number(text, multiplier)) {
    case NumberStatus::missing:
        multiplier = 1;
        break;
    case NumberStatus::overflow:
        write_error(err, errlen, "the period is too long");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    case NumberStatus::ok:
        if (multiplier == 0) {
            write_error(err, errlen, "the period must be positive");
            return NGX_HTTP_RATE_LIMIT_EINVAL;
        }
        break;
    }

    if (!text.empty() && text.front() == '.') {
        write_error(err, errlen, "the period must be a whole number, "
                    "use a smaller unit such as 1500ms");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (text.empty()) {
        write_error(err, errlen,
                    "missing period unit, expected ms, s, m, h or d");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    const std::optional<uint64_t> unit = unit_milliseconds(text);

    if (!unit) {
        write_error(err, errlen,
                    "unknown period unit, expected ms, s, m, h or d");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (multiplier > std::numeric_limits<uint64_t>::max() / *unit) {
        write_error(err, errlen, "the period is too long");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    rate.count = count;
    rate.period_ms = multiplier * *unit;

    return NGX_HTTP_RATE_LIMIT_OK;
}


int parse_rate_checked(const char *text, size_t len, ZeroCount zero_count,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen) noexcept
{
    try {
        if (rate == nullptr || (text == nullptr && len != 0)) {
            write_error(err, errlen, "internal error: no rate to parse");
            return NGX_HTTP_RATE_LIMIT_EINVAL;
        }

        /* a local result, so that a failure leaves *rate untouched */
        ngx_http_rate_limit_rate_t parsed {};

        const int rc = parse_rate(std::string_view(text, len), zero_count,
                                  parsed, err, errlen);
        if (rc == NGX_HTTP_RATE_LIMIT_OK) {
            *rate = parsed;
        }

        return rc;

    } catch (...) {
        write_error(err, errlen, "internal error while parsing the rate");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }
}

} // namespace


extern "C" int
ngx_http_rate_limit_parse_rate(const char *text, size_t len,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen) noexcept
{
    return parse_rate_checked(text, len, ZeroCount::refused, rate, err,
                              errlen);
}


extern "C" int
ngx_http_rate_limit_parse_rate_allow_zero(const char *text, size_t len,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen) noexcept
{
    return parse_rate_checked(text, len, ZeroCount::allowed, rate, err,
                              errlen);
}
