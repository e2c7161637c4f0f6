/*
 * The body of a bucket API request, as POST (key required) and as PUT (key
 * optional) read it.
 */

#include "fuzz_check.h"

#include <cstdint>
#include <cstring>


namespace {

using rate_limit_fuzz::require;
using rate_limit_fuzz::require_message;


struct Parsed {
    int                                rc;
    ngx_http_rate_limit_bucket_body_t  body;
};


Parsed parse(const uint8_t *data, size_t size, int require_key)
{
    Parsed parsed;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    /* a recognisable body, to show that a failure leaves it alone */
    std::memset(&parsed.body, 0xa5, sizeof(parsed.body));

    parsed.rc = ngx_http_rate_limit_parse_bucket_body(
                    reinterpret_cast<const char *>(data), size, require_key,
                    &parsed.body, err, sizeof(err));

    if (parsed.rc != NGX_HTTP_RATE_LIMIT_OK) {
        require_message(err, sizeof(err));

        ngx_http_rate_limit_bucket_body_t untouched;
        std::memset(&untouched, 0xa5, sizeof(untouched));
        require(std::memcmp(&parsed.body, &untouched, sizeof(untouched))
                == 0,
                "a refused body is not written");
        return parsed;
    }

    const ngx_http_rate_limit_bucket_body_t &body = parsed.body;
    ngx_http_rate_limit_params_t params;

    require(body.key_len <= NGX_HTTP_RATE_LIMIT_KEY_MAX,
            "a key fits NGX_HTTP_RATE_LIMIT_KEY_MAX");
    require(!require_key || body.key_len > 0, "POST has a key");
    require(body.burst <= NGX_HTTP_RATE_LIMIT_BURST_MAX,
            "burst stays within BURST_MAX");
    require(ngx_http_rate_limit_make_params_blocking(&body.rate, body.burst,
                                                     &params, err,
                                                     sizeof(err))
            == NGX_HTTP_RATE_LIMIT_OK,
            "an accepted body passes make_params_blocking()");

    return parsed;
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const Parsed post = parse(data, size, 1);
    const Parsed put = parse(data, size, 0);

    if (post.rc == NGX_HTTP_RATE_LIMIT_OK) {
        require(put.rc == NGX_HTTP_RATE_LIMIT_OK
                && put.body.key_len == post.body.key_len
                && std::memcmp(put.body.key, post.body.key,
                               post.body.key_len) == 0
                && put.body.rate.count == post.body.rate.count
                && put.body.rate.period_ms == post.body.rate.period_ms
                && put.body.burst == post.body.burst,
                "PUT reads what POST accepts alike");
    }

    return 0;
}
