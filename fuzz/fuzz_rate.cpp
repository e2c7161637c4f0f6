/*
 * The rates of rate_limit_zone and of per-client limits, through to the
 * bucket they make.  The input is the rate text, then, after a NUL, bytes
 * that choose the burst, a cost, a stored TAT and the time: the seeds stay
 * readable, and the fuzzer can still reach every number.
 */

#include "fuzz_check.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstring>


namespace {

using rate_limit_fuzz::require;
using rate_limit_fuzz::require_message;

constexpr ngx_http_rate_limit_rate_t untouched_rate { 12345, 678 };


bool same_rate(const ngx_http_rate_limit_rate_t &a,
    const ngx_http_rate_limit_rate_t &b) noexcept
{
    return a.count == b.count && a.period_ms == b.period_ms;
}


/*
 * A blocked bucket rejects everything and owes nothing.  Any other: a full
 * bucket gives exactly burst tokens at one instant; whatever state was
 * stored, under any token code, no client waits longer than a full refill
 * and a second, and the wait a rejection gives holds for the state it
 * leaves; a refund gives back exactly what an allowed request took.
 */
void check_bucket(const ngx_http_rate_limit_params_t &params,
    FuzzedDataProvider &more) noexcept
{
    const int64_t now = more.ConsumeIntegralInRange<int64_t>(0,
                                                             int64_t(1) << 62);
    const uint64_t cost = more.ConsumeIntegralInRange<uint64_t>(
                              0, params.burst + 1);
    const ngx_http_rate_limit_state_t stored {
        more.ConsumeIntegral<int64_t>(),
        more.ConsumeIntegralInRange<uint32_t>(
            0, NGX_HTTP_RATE_LIMIT_TOKEN_CODES + 1) };
    ngx_http_rate_limit_decision_t d;

    if (ngx_http_rate_limit_params_blocked(&params)) {
        ngx_http_rate_limit_decide(&params, &stored, now, cost, &d);
        require(!d.allowed && d.state.tat_us == stored.tat_us
                && d.state.token_code == stored.token_code
                && d.remaining == 0 && d.reset_us == 0
                && d.retry_after_us
                   == NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US,
                "a blocked bucket rejects and keeps its state");
        const ngx_http_rate_limit_state_t refunded =
            ngx_http_rate_limit_refund(&params, &stored, now, cost);
        require(refunded.tat_us == stored.tat_us
                && refunded.token_code == stored.token_code,
                "a blocked bucket is owed nothing");
        return;
    }

    const int64_t token_us = ngx_http_rate_limit_token_us(&params);
    const uint32_t token_code = ngx_http_rate_limit_token_code(token_us);
    const int64_t tau = static_cast<int64_t>(params.burst) * token_us;

    ngx_http_rate_limit_decide(&params, nullptr, now, cost, &d);
    require(d.allowed == (cost <= params.burst),
            "a full bucket allows any cost up to burst, and no more");
    require(!d.allowed || d.remaining == params.burst - cost,
            "a full bucket keeps burst - cost tokens");

    ngx_http_rate_limit_decide(&params, &stored, now, cost, &d);
    require(d.remaining <= params.burst, "no more than burst remains");
    require(d.reset_us >= 0 && d.reset_us <= tau + 1000000,
            "never longer than a full refill until full, and a second");

    if (d.allowed) {
        require(d.retry_after_us == 0 && d.state.tat_us >= now
                && d.state.token_code == token_code,
                "an allowed request moves the TAT to now or later");
        const ngx_http_rate_limit_state_t refunded =
            ngx_http_rate_limit_refund(&params, &d.state, now, cost);
        require(refunded.tat_us
                == now + d.reset_us - static_cast<int64_t>(cost) * token_us
                && refunded.token_code == token_code,
                "a refund undoes an allowed request");
        return;
    }

    require(d.retry_after_us > 0, "a rejection asks to wait");
    require((d.state.tat_us == stored.tat_us
             && d.state.token_code == stored.token_code)
            || (d.state.tat_us == now + d.reset_us
                && d.state.token_code == token_code),
            "a rejection keeps the state, or stores it as read");

    if (cost <= params.burst && now + d.retry_after_us <= int64_t(1) << 62) {
        const ngx_http_rate_limit_state_t left = d.state;
        ngx_http_rate_limit_decide(&params, &left, now + d.retry_after_us,
                                   cost, &d);
        require(d.allowed, "the wait a rejection gives is enough");
    }
}


/* what nginx.conf gets: no 0 count, and burst 0 stands for the count */
void check_zone_params(const ngx_http_rate_limit_rate_t &rate,
    uint64_t burst, FuzzedDataProvider &more) noexcept
{
    ngx_http_rate_limit_params_t params {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    if (ngx_http_rate_limit_make_params(&rate, burst, &params, err,
                                        sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        require_message(err, sizeof(err));
        return;
    }

    require(params.interval_us >= 1.0, "at most a token a microsecond");
    require(params.burst == (burst != 0 ? burst : rate.count),
            "burst defaults to the rate's count");
    require(params.burst <= NGX_HTTP_RATE_LIMIT_BURST_MAX,
            "burst stays within BURST_MAX");
    require(!ngx_http_rate_limit_params_blocked(&params),
            "nginx.conf never yields blocked parameters");

    check_bucket(params, more);
}


/* what per-client limits get: a 0 count or a 0 burst blocks */
void check_client_params(const ngx_http_rate_limit_rate_t &rate,
    uint64_t burst, FuzzedDataProvider &more) noexcept
{
    ngx_http_rate_limit_params_t params {};
    ngx_http_rate_limit_params_t zone_params {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    const int rc = ngx_http_rate_limit_make_params_blocking(&rate, burst,
                                                            &params, err,
                                                            sizeof(err));
    if (rate.count != 0 && burst != 0) {
        const int zone_rc = ngx_http_rate_limit_make_params(&rate, burst,
                                                            &zone_params,
                                                            err, sizeof(err));
        require(rc == zone_rc, "a limit that blocks nothing is checked as "
                "nginx.conf checks it");
        require(rc != NGX_HTTP_RATE_LIMIT_OK
                || (params.interval_us == zone_params.interval_us
                    && params.burst == zone_params.burst),
                "and gets the same parameters");
    }

    if (rc != NGX_HTTP_RATE_LIMIT_OK) {
        require_message(err, sizeof(err));
        require(rate.count != 0, "a 0 count is always a valid block");
        return;
    }

    require(ngx_http_rate_limit_params_blocked(&params)
            == (rate.count == 0 || burst == 0),
            "blocked exactly when the count or the burst is 0");

    check_bucket(params, more);
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = reinterpret_cast<const char *>(data);
    const size_t text_len = strnlen(text, size);
    const size_t rest = std::min(text_len + 1, size);
    FuzzedDataProvider more(data + rest, size - rest);

    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    ngx_http_rate_limit_rate_t strict = untouched_rate;
    ngx_http_rate_limit_rate_t lenient = untouched_rate;

    const int strict_rc = ngx_http_rate_limit_parse_rate(text, text_len,
                                                         &strict, err,
                                                         sizeof(err));
    if (strict_rc != NGX_HTTP_RATE_LIMIT_OK) {
        require_message(err, sizeof(err));
        require(same_rate(strict, untouched_rate),
                "a refused rate is not written");
    }

    const int lenient_rc = ngx_http_rate_limit_parse_rate_allow_zero(
                               text, text_len, &lenient, err, sizeof(err));
    if (lenient_rc != NGX_HTTP_RATE_LIMIT_OK) {
        require_message(err, sizeof(err));
        require(same_rate(lenient, untouched_rate),
                "a refused rate is not written");
        require(strict_rc != NGX_HTTP_RATE_LIMIT_OK,
                "per-client limits accept every rate nginx.conf accepts");
        return 0;
    }

    require(lenient.period_ms > 0, "the period is positive");

    if (strict_rc == NGX_HTTP_RATE_LIMIT_OK) {
        require(same_rate(strict, lenient) && strict.count > 0,
                "both parsers read a positive count alike");
    } else {
        require(lenient.count == 0, "only a count of 0 sets them apart");
    }

    /* small bursts most of the time: they are the ones that fit */
    const uint64_t burst = more.ConsumeBool()
                           ? more.ConsumeIntegral<uint64_t>()
                           : more.ConsumeIntegralInRange<uint64_t>(0, 1000);

    if (strict_rc == NGX_HTTP_RATE_LIMIT_OK) {
        check_zone_params(strict, burst, more);
    }

    check_client_params(lenient, burst, more);

    return 0;
}
