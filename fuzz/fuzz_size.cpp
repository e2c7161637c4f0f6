/*
 * The SIZE of zone=NAME:SIZE, against a plain reading of its grammar:
 * digits and an optional k, m or g in either case, from 1 byte to
 * NGX_HTTP_RATE_LIMIT_SIZE_MAX.
 */

#include "fuzz_check.h"

#include <cstdint>
#include <optional>


namespace {

using rate_limit_fuzz::require;
using rate_limit_fuzz::require_message;


std::optional<uint64_t> expected_size(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return std::nullopt;
    }

    uint64_t scale = 1;

    switch (data[size - 1]) {
    case 'k': case 'K': scale = uint64_t(1) << 10; size--; break;
    case 'm': case 'M': scale = uint64_t(1) << 20; size--; break;
    case 'g': case 'G': scale = uint64_t(1) << 30; size--; break;
    default: break;
    }

    if (size == 0) {
        return std::nullopt;
    }

    uint64_t value = 0;

    for (size_t i = 0; i < size; i++) {
        if (data[i] < '0' || data[i] > '9') {
            return std::nullopt;
        }
        if (__builtin_mul_overflow(value, 10, &value)
            || __builtin_add_overflow(value, data[i] - '0', &value))
        {
            return std::nullopt;
        }
    }

    uint64_t bytes;

    if (value == 0 || __builtin_mul_overflow(value, scale, &bytes)
        || bytes > NGX_HTTP_RATE_LIMIT_SIZE_MAX)
    {
        return std::nullopt;
    }

    return bytes;
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    constexpr uint64_t untouched = 12345;
    uint64_t bytes = untouched;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    const int rc = ngx_http_rate_limit_parse_size(
                       reinterpret_cast<const char *>(data), size, &bytes,
                       err, sizeof(err));
    const std::optional<uint64_t> expected = expected_size(data, size);

    if (rc != NGX_HTTP_RATE_LIMIT_OK) {
        require_message(err, sizeof(err));
        require(bytes == untouched, "a refused size is not written");
        require(!expected, "every size of the grammar is accepted");
        return 0;
    }

    require(expected && bytes == *expected,
            "an accepted size is of the grammar, and read right");

    return 0;
}
