/*
 * The token bucket, as GCRA (generic cell rate algorithm): the whole state
 * of a bucket is one number, the theoretical arrival time (TAT).  The
 * bucket is full whenever TAT <= now, and TAT - now is the time the bucket
 * needs to become full again.  Taking cost tokens pushes TAT cost token
 * intervals further; a request is allowed when TAT would stay within one
 * bucket capacity (tau) of now.
 *
 * KEEP IN STEP WITH THE LUA SCRIPT in rate_limit_script.cpp: Redis runs the
 * same arithmetic, and a zone must not behave differently when it moves
 * between backend=local and backend=redis.  Every step below has a twin
 * there, in the same order and with the same names.
 *
 * Why whole microseconds per token: the TAT is stored as whole
 * microseconds, so every request moves it by a whole number of
 * microseconds anyway.  Rounding the interval once, and measuring the
 * capacity in the same unit (tau = burst * token_us), keeps token counting
 * exact: exactly burst requests of cost 1 fit at one instant for every rate
 * (7r/m: 7 tokens of 8571429 us need 60000003 us, so a tau rounded from
 * 7 * 8571428.57 = 60000000 us would refuse the 7th).  The price is that
 * the long-term rate is 1/token_us rather than 1/interval_us, an error of
 * at most 0.5 us per token: negligible up to many thousands of requests per
 * second, but visible near the 1000000r/s ceiling (400000r/s has 2.5 us
 * tokens, which round to 3 us, about 333333r/s).
 *
 * Why 10^15 us at most: the script does this arithmetic in Lua numbers,
 * which are doubles; with now about 1.7 * 10^15 us and every term a few
 * times 10^15 us at most, all sums stay under 2^53 and are exact on both
 * sides.
 *
 * A limit that changes keeps the tokens used.  TAT - now is a count of
 * tokens used in the token length of the limit that stored it, so the
 * stored state carries that length as a token code (three decimal digits
 * on a log scale, see the header), and a state stored under another code
 * is converted: the time until full over the length of the stored code,
 * times the length of this limit's token.  The length of a code is never
 * shorter than the true one, so the conversion never counts more tokens
 * used than there were.  A state without a code (from a version before it)
 * is taken as counted in the limit in force.
 *
 * The time until full is then capped at tau when it is more than a second
 * beyond: a client never waits longer than its limit's full refill (give
 * or take that second), be the stored TAT from a larger burst, a clock
 * that stepped back, or garbage.  Within the second it is taken at its
 * word: the workers of a node read their clocks at different moments, so
 * a bucket one of them has just written may be a little beyond tau for
 * another, and capping that (a rejection stores the state as read) would
 * give the difference back as tokens at every rejection.  (Before the
 * code, any TAT beyond tau was taken at its word and waited for.)
 *
 * Blocked parameters (burst 0 or interval 0, from a per-client "0r/s" or
 * burst 0) are not a bucket at all: an empty bucket of capacity 0 would
 * still let cost 0 through and would report a retry_after of one token, as
 * if waiting helped.  They are decided before any arithmetic, as the script
 * decides them before it reads the key.
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"

using ngx_http_rate_limit::write_error;

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>


namespace {

/* about 31.7 years: see above for why the span of a bucket is bounded */
constexpr int64_t max_bucket_span_us = 1000000000000000LL;

/* no bucket ever stores a TAT this far ahead: such a value is garbage */
constexpr int64_t max_until_full_us = 4 * max_bucket_span_us;

/* how far beyond tau a time until full is clock differences, see above */
constexpr int64_t clock_slack_us = 1000000;


/*
 * The microseconds each token code stands for, code - 1 at index: built
 * by the very multiplications the scripts do, one at a time from 1, so
 * that both sides hold the same doubles.
 */
constexpr std::array<double, NGX_HTTP_RATE_LIMIT_TOKEN_CODES>
token_code_lengths()
{
    std::array<double, NGX_HTTP_RATE_LIMIT_TOKEN_CODES> lengths {};
    double length = 1.0;

    for (double &at : lengths) {
        at = length;
        length *= NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO;
    }

    return lengths;
}

constexpr auto token_code_us = token_code_lengths();

static_assert(token_code_us.back() >= static_cast<double>(max_bucket_span_us),
              "the last token code must stand for the longest token");


/* the smallest code whose length is token_us or more */
uint32_t token_code(int64_t token_us) noexcept
{
    const auto at = std::lower_bound(token_code_us.begin(),
                                     token_code_us.end() - 1,
                                     static_cast<double>(token_us));

    return static_cast<uint32_t>(at - token_code_us.begin()) + 1;
}


/*
 * Rounds half up, which is what the script's math.floor(x + 0.5) does;
 * within [1, 10^15] that equals llround() exactly.  Out of range values
 * (only from parameters make_params() did not produce) are clamped so the
 * arithmetic cannot overflow.
 */
int64_t whole_token_us(double interval_us) noexcept
{
    if (!(interval_us >= 1.0)) {            /* NaN lands here too */
        return 1;
    }

    if (interval_us >= static_cast<double>(max_bucket_span_us)) {
        return max_bucket_span_us;
    }

    return static_cast<int64_t>(std::floor(interval_us + 0.5));
}


/*
 * Exact comparisons: make_params_blocking() writes these zeros, the module
 * sends them to the script as "0", and the script tests them the same way.
 */
bool is_blocked(const ngx_http_rate_limit_params_t &params) noexcept
{
    return params.burst == 0 || params.interval_us == 0.0;
}


class Bucket {
public:
    explicit Bucket(const ngx_http_rate_limit_params_t &params) noexcept
        : token_us_(whole_token_us(params.interval_us)),
          token_code_(token_code(token_us_)),
          burst_(std::min<uint64_t>(params.burst,
                                    max_bucket_span_us / token_us_)),
          tau_us_(static_cast<int64_t>(burst_) * token_us_)
    {}

    int64_t tau_us() const noexcept { return tau_us_; }

    /* the state this bucket stores */
    ngx_http_rate_limit_state_t state(int64_t tat_us) const noexcept
    {
        return ngx_http_rate_limit_state_t { tat_us, token_code_ };
    }

    /*
     * A cost above burst can never fit, however long one waits; counting
     * it as burst + 1 keeps the sums bounded and still rejects it, with a
     * retry_after of "until full, plus one token".
     */
    int64_t cost_us(uint64_t cost) const noexcept
    {
        return static_cast<int64_t>(std::min<uint64_t>(cost, burst_ + 1))
               * token_us_;
    }

    /*
     * The time the bucket still needs to be full again, in this bucket's
     * tokens: the tokens used under the stored code; tau when that is
     * more than clock_slack_us beyond it.
     */
    int64_t until_full_us(const ngx_http_rate_limit_state_t &stored,
        int64_t now_us) const noexcept
    {
        int64_t until_full = stored.tat_us > now_us
                             ? std::min(stored.tat_us - now_us,
                                        max_until_full_us)
                             : 0;

        if (stored.token_code != NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE
            && stored.token_code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES
            && stored.token_code != token_code_)
        {
            /*
             * The script's very operations on the same doubles, in its
             * order: both get the same number of microseconds.
             */
            const double carried = std::floor(
                static_cast<double>(until_full)
                / token_code_us[stored.token_code - 1]
                * static_cast<double>(token_us_));

            if (carried > static_cast<double>(tau_us_ + clock_slack_us)) {
                return tau_us_;
            }

            until_full = static_cast<int64_t>(carried);
        }

        return until_full > tau_us_ + clock_slack_us ? tau_us_ : until_full;
    }

    /*
     * Whether stored already says until_full in this bucket's tokens, or
     * the bucket is full whichever way it is read: else a rejection
     * stores the state as read, so that the tokens used refill at this
     * bucket's rate from now on, and the retry_after it gives holds.
     */
    bool holds(const ngx_http_rate_limit_state_t &stored, int64_t now_us,
        int64_t until_full) const noexcept
    {
        return until_full == 0
               || (stored.token_code == token_code_
                   && stored.tat_us == now_us + until_full);
    }

    /* free_us is negative for a time until full within the slack */
    uint64_t whole_tokens(int64_t free_us) const noexcept
    {
        return free_us > 0 ? static_cast<uint64_t>(free_us / token_us_) : 0;
    }

private:
    int64_t   token_us_;
    uint32_t  token_code_;
    uint64_t  burst_;
    int64_t   tau_us_;
};


/*
 * Times are microseconds since the epoch; holding now within a range that
 * no real clock leaves (2^62 us is some 146000 years) keeps the sums from
 * overflowing whatever a caller passes.
 */
int64_t valid_now(int64_t now_us) noexcept
{
    return std::clamp<int64_t>(now_us, 0, int64_t(1) << 62);
}


void decide(const ngx_http_rate_limit_params_t &params,
    const ngx_http_rate_limit_state_t &stored, int64_t now_us, uint64_t cost,
    ngx_http_rate_limit_decision_t &d) noexcept
{
    if (is_blocked(params)) {
        d.allowed = 0;
        d.state = stored;
        d.remaining = 0;
        d.retry_after_us = NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US;
        d.reset_us = 0;
        return;
    }

    const Bucket bucket(params);
    const int64_t now = valid_now(now_us);

    const int64_t until_full = bucket.until_full_us(stored, now);
    const int64_t until_full_after = until_full + bucket.cost_us(cost);

    if (until_full_after <= bucket.tau_us()) {
        d.allowed = 1;
        d.state = bucket.state(now + until_full_after);
        d.remaining = bucket.whole_tokens(bucket.tau_us() - until_full_after);
        d.retry_after_us = 0;
        d.reset_us = until_full_after;
        return;
    }

    /* nothing is taken: the state stays as it was read */
    d.allowed = 0;
    d.state = bucket.holds(stored, now, until_full)
              ? stored : bucket.state(now + until_full);
    d.remaining = bucket.whole_tokens(bucket.tau_us() - until_full);
    d.retry_after_us = until_full_after - bucket.tau_us();
    d.reset_us = until_full;
}


ngx_http_rate_limit_state_t refund(const ngx_http_rate_limit_params_t &params,
    const ngx_http_rate_limit_state_t &stored, int64_t now_us, uint64_t cost)
    noexcept
{
    /* a blocked bucket never allowed anything, so nothing is owed */
    if (is_blocked(params)) {
        return stored;
    }

    const Bucket bucket(params);
    const int64_t now = valid_now(now_us);

    const int64_t until_full = bucket.until_full_us(stored, now);
    const int64_t cost_us = bucket.cost_us(cost);

    /* never refill beyond full: a full bucket is TAT == now */
    if (until_full <= cost_us) {
        return bucket.state(now);
    }

    return bucket.state(now + until_full - cost_us);
}


/*
 * Checks rate, and a bucket of capacity tokens at that rate; capacity 0
 * (a blocked client) checks the rate alone.  Writes params only when all is
 * well.
 */
int check_params(const ngx_http_rate_limit_rate_t &rate, uint64_t capacity,
    ngx_http_rate_limit_params_t &params, char *err, size_t errlen) noexcept
{
    if (rate.count == 0) {
        write_error(err, errlen, "the number of requests must be positive");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (rate.period_ms == 0) {
        write_error(err, errlen, "the period must be positive");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    const double interval_us = static_cast<double>(rate.period_ms) * 1000.0
                               / static_cast<double>(rate.count);

    if (!(interval_us >= 1.0)) {
        write_error(err, errlen,
                    "the rate is faster than %d requests per second",
                    NGX_HTTP_RATE_LIMIT_MAX_PER_SEC);
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    /* rounded the way decide() and the script round it */
    const double token_us = std::floor(interval_us + 0.5);

    if (capacity == 0 && token_us > static_cast<double>(max_bucket_span_us))
    {
        write_error(err, errlen, "the period is too long: one request would "
                    "take more than 10^15 microseconds to refill");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (token_us > static_cast<double>(max_bucket_span_us)
        || capacity > static_cast<uint64_t>(max_bucket_span_us)
                      / static_cast<uint64_t>(token_us))
    {
        write_error(err, errlen,
                    "burst %llu is too large for the rate: a full refill "
                    "would take more than 10^15 microseconds",
                    static_cast<unsigned long long>(capacity));
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    params.interval_us = interval_us;
    params.burst = capacity;

    return NGX_HTTP_RATE_LIMIT_OK;
}

} // namespace


extern "C" int
ngx_http_rate_limit_make_params(const ngx_http_rate_limit_rate_t *rate,
    uint64_t burst, ngx_http_rate_limit_params_t *params, char *err,
    size_t errlen) noexcept
{
    try {
        if (rate == nullptr || params == nullptr) {
            write_error(err, errlen, "internal error: no rate given");
            return NGX_HTTP_RATE_LIMIT_EINVAL;
        }

        return check_params(*rate, burst != 0 ? burst : rate->count, *params,
                            err, errlen);

    } catch (...) {
        write_error(err, errlen, "internal error while checking the rate");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }
}


extern "C" int
ngx_http_rate_limit_make_params_blocking(
    const ngx_http_rate_limit_rate_t *rate, uint64_t burst,
    ngx_http_rate_limit_params_t *params, char *err, size_t errlen) noexcept
{
    try {
        if (rate == nullptr || params == nullptr) {
            write_error(err, errlen, "internal error: no rate given");
            return NGX_HTTP_RATE_LIMIT_EINVAL;
        }

        if (rate->count == 0) {
            *params = ngx_http_rate_limit_params_t { 0.0, 0 };
            return NGX_HTTP_RATE_LIMIT_OK;
        }

        /* a rate refused in nginx.conf stays refused, even with burst 0 */
        ngx_http_rate_limit_params_t checked {};

        const int rc = check_params(*rate, burst, checked, err, errlen);
        if (rc != NGX_HTTP_RATE_LIMIT_OK) {
            return rc;
        }

        *params = burst != 0 ? checked
                             : ngx_http_rate_limit_params_t { 0.0, 0 };
        return NGX_HTTP_RATE_LIMIT_OK;

    } catch (...) {
        write_error(err, errlen, "internal error while checking the rate");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }
}


extern "C" int
ngx_http_rate_limit_params_blocked(
    const ngx_http_rate_limit_params_t *params) noexcept
{
    return params != nullptr && is_blocked(*params) ? 1 : 0;
}


extern "C" int64_t
ngx_http_rate_limit_token_us(const ngx_http_rate_limit_params_t *params)
    noexcept
{
    return whole_token_us(params->interval_us);
}


extern "C" uint32_t
ngx_http_rate_limit_token_code(int64_t token_us) noexcept
{
    return token_code(token_us);
}


extern "C" double
ngx_http_rate_limit_token_code_us(uint32_t code) noexcept
{
    return code != NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE
           && code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES
           ? token_code_us[code - 1] : 0.0;
}


extern "C" void
ngx_http_rate_limit_decide(const ngx_http_rate_limit_params_t *params,
    const ngx_http_rate_limit_state_t *stored, int64_t now_us, uint64_t cost,
    ngx_http_rate_limit_decision_t *d) noexcept
{
    if (d == nullptr) {
        return;
    }

    const ngx_http_rate_limit_state_t state =
        stored != nullptr ? *stored : ngx_http_rate_limit_state_t {};

    try {
        if (params == nullptr) {
            /* without a bucket nothing can be allowed */
            *d = ngx_http_rate_limit_decision_t {};
            d->state = state;
            return;
        }

        decide(*params, state, now_us, cost, *d);

    } catch (...) {
        *d = ngx_http_rate_limit_decision_t {};
        d->state = state;
    }
}


extern "C" ngx_http_rate_limit_state_t
ngx_http_rate_limit_refund(const ngx_http_rate_limit_params_t *params,
    const ngx_http_rate_limit_state_t *stored, int64_t now_us, uint64_t cost)
    noexcept
{
    const ngx_http_rate_limit_state_t state =
        stored != nullptr ? *stored : ngx_http_rate_limit_state_t {};

    try {
        return params != nullptr ? refund(*params, state, now_us, cost)
                                 : state;

    } catch (...) {
        return state;
    }
}
