/*
 * Deliberate zero limits for one client ("0r/s", burst 0), and the order
 * in which a client's limit is picked from its sources.  nginx.conf must
 * go on refusing zeros, so each lenient entry point is checked against its
 * strict twin too.
 */

#include "rate_limit_test_support.h"

#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>


namespace {

using rate_limit_test::base_now_us;
using rate_limit_test::decide;
using rate_limit_test::params_for;

constexpr int64_t blocked_retry_after_us =
    NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US;


struct Parsed {
    int                          rc;
    ngx_http_rate_limit_rate_t   rate;
    std::string                  error;
};

Parsed parse_allow_zero(const std::string &text)
{
    Parsed parsed { -1, { 12345, 678 }, "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    parsed.rc = ngx_http_rate_limit_parse_rate_allow_zero(
        text.data(), text.size(), &parsed.rate, err, sizeof(err));
    parsed.error = err;
    return parsed;
}


TEST(ParseRateAllowZero, AcceptsAZeroCountWithAnyValidPeriod)
{
    for (const auto &[text, period_ms] :
         std::vector<std::pair<std::string, uint64_t>> {
             { "0r/s", 1000 }, { "0r/m", 60000 }, { "000r/s", 1000 },
             { "0r/500ms", 500 }, { "0r/d", 86400000 } })
    {
        const Parsed parsed = parse_allow_zero(text);
        ASSERT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_OK) << text << parsed.error;
        EXPECT_EQ(parsed.rate.count, 0u) << text;
        EXPECT_EQ(parsed.rate.period_ms, period_ms) << text;
    }
}


TEST(ParseRateAllowZero, NginxConfStillRefusesZero)
{
    ngx_http_rate_limit_rate_t rate {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_parse_rate("0r/s", 4, &rate, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(std::string(err).find("must be positive"), std::string::npos);
}


TEST(ParseRateAllowZero, EverythingElseIsAsStrict)
{
    for (const char *text : { "", "0", "0r", "0r/", "0r/0s", "-0r/s",
                              "+0r/s", "0.0r/s", " 0r/s", "0r/sec", "0r/1.5s",
                              "10r/S", "99999999999999999999r/s" })
    {
        const Parsed lenient = parse_allow_zero(text);
        EXPECT_EQ(lenient.rc, NGX_HTTP_RATE_LIMIT_EINVAL) << text;
        EXPECT_GT(lenient.error.size(), 10u) << text;
        EXPECT_EQ(lenient.rate.count, 12345u) << "untouched on failure";
    }

    /* and a positive rate reads the same through both */
    for (const std::string &text : std::vector<std::string> {
             "10r/s", "1r/d", "3r/500ms", "7r/m" })
    {
        ngx_http_rate_limit_rate_t strict {};
        ASSERT_EQ(ngx_http_rate_limit_parse_rate(text.data(), text.size(),
                                                 &strict, nullptr, 0),
                  NGX_HTTP_RATE_LIMIT_OK);
        const Parsed lenient = parse_allow_zero(text);
        EXPECT_EQ(lenient.rc, NGX_HTTP_RATE_LIMIT_OK);
        EXPECT_EQ(lenient.rate.count, strict.count);
        EXPECT_EQ(lenient.rate.period_ms, strict.period_ms);
    }

    ngx_http_rate_limit_rate_t rate {};
    EXPECT_EQ(ngx_http_rate_limit_parse_rate_allow_zero("0r/s", 4, nullptr,
                                                        nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_parse_rate_allow_zero(nullptr, 4, &rate,
                                                        nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}


struct Made {
    int                            rc;
    ngx_http_rate_limit_params_t   params;
    std::string                    error;
};

Made make_blocking(uint64_t count, uint64_t period_ms, uint64_t burst)
{
    const ngx_http_rate_limit_rate_t rate { count, period_ms };
    Made made { -1, { -1.0, 4242 }, "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    made.rc = ngx_http_rate_limit_make_params_blocking(&rate, burst,
                                                       &made.params, err,
                                                       sizeof(err));
    made.error = err;
    return made;
}


TEST(MakeParamsBlocking, ZeroCountOrZeroBurstBlocks)
{
    for (const Made &made : { make_blocking(0, 1000, 0),
                              make_blocking(0, 1000, 50),
                              make_blocking(0, 60000, 1),
                              make_blocking(10, 1000, 0),
                              make_blocking(1, 86400000, 0),
                              make_blocking(1000000, 1000, 0) })
    {
        ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
        EXPECT_EQ(made.params.interval_us, 0.0);
        EXPECT_EQ(made.params.burst, 0u);
        EXPECT_EQ(ngx_http_rate_limit_params_blocked(&made.params), 1);
    }
}


TEST(MakeParamsBlocking, APositiveLimitIsWhatMakeParamsGives)
{
    for (const auto &[count, period_ms, burst] :
         std::vector<std::tuple<uint64_t, uint64_t, uint64_t>> {
             { 10, 1000, 10 }, { 100, 60000, 20 }, { 7, 60000, 7 },
             { 1, 1000, 1000000000 }, { 1000000, 1000, 1 } })
    {
        const ngx_http_rate_limit_rate_t rate { count, period_ms };
        ngx_http_rate_limit_params_t strict {};
        ASSERT_EQ(ngx_http_rate_limit_make_params(&rate, burst, &strict,
                                                  nullptr, 0),
                  NGX_HTTP_RATE_LIMIT_OK);

        const Made made = make_blocking(count, period_ms, burst);
        ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
        EXPECT_EQ(made.params.interval_us, strict.interval_us);
        EXPECT_EQ(made.params.burst, strict.burst);
        EXPECT_EQ(ngx_http_rate_limit_params_blocked(&made.params), 0);
    }
}


TEST(MakeParamsBlocking, ARateRefusedInNginxConfIsRefusedEvenWhenBlocked)
{
    Made made = make_blocking(2000000, 1000, 0);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("faster than 1000000"), std::string::npos)
        << made.error;

    made = make_blocking(1, 36500ULL * 86400000, 0);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("the period is too long"), std::string::npos)
        << made.error;

    made = make_blocking(1, 0, 0);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("period must be positive"), std::string::npos);

    made = make_blocking(1, 1000, 1000000001);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("burst 1000000001 is too large"),
              std::string::npos) << made.error;

    /* the output is only written on success */
    EXPECT_EQ(made.params.interval_us, -1.0);
    EXPECT_EQ(made.params.burst, 4242u);

    EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(nullptr, 1,
                                                       &made.params, nullptr,
                                                       0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    const ngx_http_rate_limit_rate_t rate { 1, 1000 };
    EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(&rate, 1, nullptr,
                                                       nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}


TEST(MakeParamsBlocking, MakeParamsStillReadsBurstZeroAsTheCount)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s", 0);
    EXPECT_EQ(params.burst, 10u);
    EXPECT_EQ(ngx_http_rate_limit_params_blocked(&params), 0);

    const ngx_http_rate_limit_rate_t zero { 0, 1000 };
    ngx_http_rate_limit_params_t untouched { 1.0, 1 };
    EXPECT_EQ(ngx_http_rate_limit_make_params(&zero, 5, &untouched, nullptr,
                                              0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}


void expect_blocked(const ngx_http_rate_limit_decision_t &d, int64_t tat_us,
    const std::string &context)
{
    EXPECT_EQ(d.allowed, 0) << context;
    EXPECT_EQ(d.state.tat_us, tat_us) << context;
    EXPECT_EQ(d.state.token_code, NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE)
        << context;
    EXPECT_EQ(d.remaining, 0u) << context;
    EXPECT_EQ(d.reset_us, 0) << context;
    EXPECT_EQ(d.retry_after_us, blocked_retry_after_us) << context;
}


TEST(BlockedDecide, RejectsEveryRequestWhateverTheStateAndCost)
{
    const Made made = make_blocking(0, 1000, 0);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK);

    const std::vector<int64_t> tats { 0, base_now_us - 1000000, base_now_us,
                                      base_now_us + 5000000,
                                      std::numeric_limits<int64_t>::max(),
                                      std::numeric_limits<int64_t>::min() };
    const std::vector<uint64_t> costs {
        0, 1, 2, 1000, std::numeric_limits<uint64_t>::max() };
    const std::vector<int64_t> nows { base_now_us, 0,
                                      std::numeric_limits<int64_t>::max() };

    for (int64_t tat : tats) {
        for (uint64_t cost : costs) {
            for (int64_t now : nows) {
                expect_blocked(decide(made.params, tat, now, cost), tat,
                               "tat " + std::to_string(tat) + " cost "
                               + std::to_string(cost) + " now "
                               + std::to_string(now));
            }
        }
    }
}


TEST(BlockedDecide, NeverAllowsOverTime)
{
    const Made made = make_blocking(10, 1000, 0);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK);

    for (int64_t later = 0; later < 7LL * 86400000000LL;
         later += 3600000000LL)
    {
        EXPECT_FALSE(decide(made.params, 0, base_now_us + later).allowed);
    }
}


TEST(BlockedDecide, HandMadeZerosBlockToo)
{
    /* burst 0 or interval 0, however the parameters came about */
    for (const ngx_http_rate_limit_params_t &params :
         { ngx_http_rate_limit_params_t { 1000.0, 0 },
           ngx_http_rate_limit_params_t { 0.0, 10 },
           ngx_http_rate_limit_params_t { -0.0, 10 },
           ngx_http_rate_limit_params_t { 0.0, 0 } })
    {
        EXPECT_EQ(ngx_http_rate_limit_params_blocked(&params), 1);
        expect_blocked(decide(params, 42, base_now_us, 0), 42, "cost 0");
        expect_blocked(decide(params, 42, base_now_us, 1), 42, "cost 1");
    }

    /* a tiny interval is not zero: it is a one-microsecond token */
    const ngx_http_rate_limit_params_t tiny { 0.25, 10 };
    EXPECT_EQ(ngx_http_rate_limit_params_blocked(&tiny), 0);
    EXPECT_TRUE(decide(tiny, 0, base_now_us).allowed);
    EXPECT_EQ(ngx_http_rate_limit_params_blocked(nullptr), 0);
}


TEST(BlockedDecide, RefundGivesBackNothing)
{
    const Made made = make_blocking(0, 1000, 0);
    const int64_t tat = base_now_us + 300000;

    for (const ngx_http_rate_limit_state_t &stored :
         { ngx_http_rate_limit_state_t { tat, 0 },
           ngx_http_rate_limit_state_t { tat, 17 },
           ngx_http_rate_limit_state_t { 0, 0 } })
    {
        const ngx_http_rate_limit_state_t refunded =
            ngx_http_rate_limit_refund(&made.params, &stored, base_now_us, 5);
        EXPECT_EQ(refunded.tat_us, stored.tat_us);
        EXPECT_EQ(refunded.token_code, stored.token_code);
    }
}


TEST(BlockedDecide, RetryAfterIsTheDocumentedMinute)
{
    EXPECT_EQ(blocked_retry_after_us, 60000000);
}


/* the precedence of the sources is the store's: tests/test_store.cpp */

TEST(Precedence, SourceNames)
{
    EXPECT_STREQ(ngx_http_rate_limit_source_name(
                     NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT), "default");
    EXPECT_STREQ(ngx_http_rate_limit_source_name(
                     NGX_HTTP_RATE_LIMIT_SOURCE_YAML), "yaml");
    EXPECT_STREQ(ngx_http_rate_limit_source_name(
                     NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES), "postgres");
    EXPECT_STREQ(ngx_http_rate_limit_source_name(
                     static_cast<ngx_http_rate_limit_source_e>(7)),
                 "unknown");
}

} // namespace
