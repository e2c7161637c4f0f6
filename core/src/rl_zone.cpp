/*
 * What a zone's plain struct needs computed: the texts of its Redis
 * arguments, and the names of its failure policies.
 */

#include <charconv>

#include <rl_zone.h>


namespace {

unsigned char
write_decimal(char (&out)[RL_ZONE_DECIMAL_LEN], int64_t n) noexcept
{
    auto r = std::to_chars(out, out + RL_ZONE_DECIMAL_LEN, n);
    return static_cast<unsigned char>(r.ptr - out);
}


unsigned char
write_decimal(char (&out)[RL_ZONE_DECIMAL_LEN], uint64_t n) noexcept
{
    auto r = std::to_chars(out, out + RL_ZONE_DECIMAL_LEN, n);
    return static_cast<unsigned char>(r.ptr - out);
}

} // namespace


extern "C" const char *
rl_zone_failure_name(rl_zone_failure_e on_failure) noexcept
{
    switch (on_failure) {
    case RL_ZONE_FAILURE_CLOSED:
        return "closed";
    case RL_ZONE_FAILURE_LOCAL:
        return "local";
    default:
        return "open";
    }
}


extern "C" void
rl_zone_texts(const ngx_http_rate_limit_params_t *params,
    rl_zone_texts_t *texts) noexcept
{
    /* the script counts whole microseconds a token, rounded as the core */
    texts->interval_len = write_decimal(
        texts->interval, static_cast<int64_t>(params->interval_us + 0.5));
    texts->burst_len = write_decimal(texts->burst, params->burst);
    texts->token_code_len = write_decimal(
        texts->token_code,
        static_cast<uint64_t>(ngx_http_rate_limit_token_code(
            ngx_http_rate_limit_token_us(params))));
}
