/* Rate parsing and bucket parameters: what "nginx -t" accepts or refuses. */

#include "rate_limit_test_support.h"

#include <cmath>
#include <string>
#include <vector>


namespace {

struct ParsedRate {
    int                          rc;
    ngx_http_rate_limit_rate_t   rate;
    std::string                  error;
};


ParsedRate parse(const std::string &text)
{
    /* a recognisable rate, to show that a failure leaves it alone */
    ParsedRate parsed { -1, { 12345, 678 }, "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    parsed.rc = ngx_http_rate_limit_parse_rate(text.data(), text.size(),
                                               &parsed.rate, err,
                                               sizeof(err));
    parsed.error = err;
    return parsed;
}


struct ValidRate {
    const char  *text;
    uint64_t     count;
    uint64_t     period_ms;
};

void PrintTo(const ValidRate &rate, std::ostream *out)
{
    *out << '"' << rate.text << '"';
}

class ValidRates : public testing::TestWithParam<ValidRate> {};

TEST_P(ValidRates, Parse)
{
    const ValidRate &expected = GetParam();
    const ParsedRate parsed = parse(expected.text);

    ASSERT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_OK) << parsed.error;
    EXPECT_EQ(parsed.rate.count, expected.count);
    EXPECT_EQ(parsed.rate.period_ms, expected.period_ms);
    EXPECT_EQ(parsed.error, "");
}

INSTANTIATE_TEST_SUITE_P(AllUnitsAndMultipliers, ValidRates, testing::Values(
    ValidRate { "10r/s", 10, 1000 },
    ValidRate { "100r/m", 100, 60000 },
    ValidRate { "5r/h", 5, 3600000 },
    ValidRate { "1r/d", 1, 86400000 },
    ValidRate { "3r/500ms", 3, 500 },
    ValidRate { "7r/ms", 7, 1 },
    ValidRate { "5r/30s", 5, 30000 },
    ValidRate { "2r/15m", 2, 900000 },
    ValidRate { "1r/12h", 1, 43200000 },
    ValidRate { "1r/365d", 1, 31536000000ULL },
    ValidRate { "1r/1s", 1, 1000 },
    ValidRate { "1r/213503982334d", 1, 18446744073657600000ULL },
    ValidRate { "010r/05s", 10, 5000 },
    ValidRate { "1000000r/s", 1000000, 1000 },
    ValidRate { "18446744073709551615r/s", 18446744073709551615ULL, 1000 },
    ValidRate { "1r/18446744073709551615ms", 1,
                18446744073709551615ULL }),
    [](const testing::TestParamInfo<ValidRate> &info) {
        return rate_limit_test::param_name(info.index, info.param.text);
    });


struct InvalidRate {
    std::string  text;
    const char  *message_part;
};

void PrintTo(const InvalidRate &rate, std::ostream *out)
{
    *out << testing::PrintToString(rate.text);
}

class InvalidRates : public testing::TestWithParam<InvalidRate> {};

TEST_P(InvalidRates, AreRefusedWithAMessage)
{
    const InvalidRate &bad = GetParam();
    const ParsedRate parsed = parse(bad.text);

    EXPECT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(parsed.error.find(bad.message_part), std::string::npos)
        << "message: \"" << parsed.error << "\"";

    /* the output is only written on success */
    EXPECT_EQ(parsed.rate.count, 12345u);
    EXPECT_EQ(parsed.rate.period_ms, 678u);
}

INSTANTIATE_TEST_SUITE_P(Errors, InvalidRates, testing::Values(
    InvalidRate { "", "empty rate" },
    InvalidRate { " 10r/s", "white space" },
    InvalidRate { "10r/s ", "white space" },
    InvalidRate { "10 r/s", "white space" },
    InvalidRate { "10r/ s", "white space" },
    InvalidRate { "10r/s\n", "white space" },
    InvalidRate { "\t10r/s", "white space" },
    InvalidRate { "r/s", "whole number of requests" },
    InvalidRate { "-1r/s", "whole number of requests" },
    InvalidRate { "+1r/s", "whole number of requests" },
    InvalidRate { "abc", "whole number of requests" },
    InvalidRate { "0r/s", "must be positive" },
    InvalidRate { "000r/s", "must be positive" },
    InvalidRate { "1.5r/s", "whole number" },
    InvalidRate { "10/s", "\"r/\"" },
    InvalidRate { "10rs", "\"r/\"" },
    InvalidRate { "10R/s", "\"r/\"" },
    InvalidRate { "10r", "\"r/\"" },
    InvalidRate { "10", "\"r/\"" },
    InvalidRate { "10r/", "missing period unit" },
    InvalidRate { "10r/5", "missing period unit" },
    InvalidRate { "10r/0s", "period must be positive" },
    InvalidRate { "10r/0ms", "period must be positive" },
    InvalidRate { "10r/1.5s", "whole number" },
    InvalidRate { "10r/sec", "unknown period unit" },
    InvalidRate { "10r/S", "unknown period unit" },
    InvalidRate { "10r/mss", "unknown period unit" },
    InvalidRate { "10r/s/", "unknown period unit" },
    InvalidRate { "10r/s10", "unknown period unit" },
    InvalidRate { "10r/w", "unknown period unit" },
    InvalidRate { "10r/-1s", "unknown period unit" },
    InvalidRate { std::string("10r/s\0x", 7), "unknown period unit" },
    InvalidRate { std::string("10r/s\0", 6), "unknown period unit" },
    InvalidRate { "18446744073709551616r/s", "too large" },
    InvalidRate { "99999999999999999999999r/s", "too large" },
    InvalidRate { "1r/18446744073709551616ms", "period is too long" },
    InvalidRate { "1r/18446744073709551615s", "period is too long" },
    InvalidRate { "1r/213503982335d", "period is too long" }),
    [](const testing::TestParamInfo<InvalidRate> &info) {
        return rate_limit_test::param_name(info.index, info.param.text);
    });


TEST(ParseRate, ReadsOnlyTheGivenLength)
{
    const char text[] = "10r/sGARBAGE";
    ngx_http_rate_limit_rate_t rate {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    ASSERT_EQ(ngx_http_rate_limit_parse_rate(text, 5, &rate, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(rate.count, 10u);
    EXPECT_EQ(rate.period_ms, 1000u);
}


TEST(ParseRate, ErrorBufferIsOptionalAndNeverOverrun)
{
    ngx_http_rate_limit_rate_t rate {};

    EXPECT_EQ(ngx_http_rate_limit_parse_rate("x", 1, &rate, nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);

    char tiny[8];
    std::memset(tiny, 'Z', sizeof(tiny));
    EXPECT_EQ(ngx_http_rate_limit_parse_rate("x", 1, &rate, tiny, 5),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(std::strlen(tiny), 4u);
    EXPECT_EQ(tiny[5], 'Z');

    char untouched = 'U';
    EXPECT_EQ(ngx_http_rate_limit_parse_rate("x", 1, &rate, &untouched, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(untouched, 'U');
}


TEST(ParseRate, MessagesFitTheCallersBuffer)
{
    for (const char *text : { "", " ", "r/s", "0r/s", "1.5r/s", "1x", "1r/",
                              "1r/0s", "1r/2.5s", "1r/y",
                              "99999999999999999999r/s",
                              "1r/99999999999999999999d" })
    {
        char err[NGX_HTTP_RATE_LIMIT_ERR_LEN + 64];
        std::memset(err, 0, sizeof(err));
        ngx_http_rate_limit_rate_t rate {};

        ngx_http_rate_limit_parse_rate(text, std::strlen(text), &rate, err,
                                       sizeof(err));
        EXPECT_GT(std::strlen(err), 10u) << text;
        EXPECT_LT(std::strlen(err), size_t(NGX_HTTP_RATE_LIMIT_ERR_LEN))
            << "\"" << err << "\" would be cut";
    }
}


TEST(ParseRate, NullArgumentsAreRefused)
{
    ngx_http_rate_limit_rate_t rate {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_parse_rate(nullptr, 3, &rate, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_parse_rate("1r/s", 4, nullptr, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_parse_rate(nullptr, 0, &rate, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}


/* make_params */

struct MadeParams {
    int                            rc;
    ngx_http_rate_limit_params_t   params;
    std::string                    error;
};


MadeParams make(uint64_t count, uint64_t period_ms, uint64_t burst)
{
    const ngx_http_rate_limit_rate_t rate { count, period_ms };
    MadeParams made { -1, { -1.0, 4242 }, "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    made.rc = ngx_http_rate_limit_make_params(&rate, burst, &made.params,
                                              err, sizeof(err));
    made.error = err;
    return made;
}


TEST(MakeParams, IntervalIsThePeriodSharedByTheCount)
{
    MadeParams made = make(3, 1000, 0);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
    EXPECT_DOUBLE_EQ(made.params.interval_us, 1000000.0 / 3);

    made = make(100, 60000, 20);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
    EXPECT_DOUBLE_EQ(made.params.interval_us, 600000.0);
    EXPECT_EQ(made.params.burst, 20u);

    made = make(1, 86400000, 0);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
    EXPECT_DOUBLE_EQ(made.params.interval_us, 86400000000.0);
}


TEST(MakeParams, BurstZeroMeansTheCount)
{
    EXPECT_EQ(make(100, 60000, 0).params.burst, 100u);
    EXPECT_EQ(make(1, 1000, 0).params.burst, 1u);
    EXPECT_EQ(make(100, 60000, 1).params.burst, 1u);
    EXPECT_EQ(make(100, 60000, 500).params.burst, 500u);
}


TEST(MakeParams, ZeroCountOrPeriodIsRefused)
{
    MadeParams made = make(0, 1000, 5);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("number of requests must be positive"),
              std::string::npos) << made.error;

    made = make(5, 0, 5);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("period must be positive"), std::string::npos)
        << made.error;

    /* the output is only written on success */
    EXPECT_EQ(made.params.interval_us, -1.0);
    EXPECT_EQ(made.params.burst, 4242u);
}


TEST(MakeParams, AMillionPerSecondIsTheFastestRate)
{
    MadeParams made = make(1000000, 1000, 0);
    ASSERT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_OK) << made.error;
    EXPECT_EQ(made.params.interval_us, 1.0);

    EXPECT_EQ(make(1000, 1, 0).rc, NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(make(3600000000ULL, 3600000, 0).rc, NGX_HTTP_RATE_LIMIT_OK);

    for (const ngx_http_rate_limit_rate_t &too_fast :
         { ngx_http_rate_limit_rate_t { 1000001, 1000 },
           ngx_http_rate_limit_rate_t { 1001, 1 },
           ngx_http_rate_limit_rate_t { 3600000001ULL, 3600000 },
           ngx_http_rate_limit_rate_t { 18446744073709551615ULL, 1000 } })
    {
        made = make(too_fast.count, too_fast.period_ms, 1);
        EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL) << too_fast.count;
        EXPECT_NE(made.error.find("faster than 1000000 requests per second"),
                  std::string::npos) << made.error;
    }
}


TEST(MakeParams, BurstMustRefillWithinTenToTheFifteenMicroseconds)
{
    /* 1r/s: one token is 10^6 us, so 10^9 tokens take exactly 10^15 us */
    EXPECT_EQ(make(1, 1000, 1000000000ULL).rc, NGX_HTTP_RATE_LIMIT_OK);

    MadeParams made = make(1, 1000, 1000000001ULL);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("burst 1000000001 is too large for the rate"),
              std::string::npos) << made.error;

    EXPECT_EQ(make(1000000, 1000, 1000000000000000ULL).rc,
              NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(make(1000000, 1000, 1000000000000001ULL).rc,
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(make(1000000, 1000, 18446744073709551615ULL).rc,
              NGX_HTTP_RATE_LIMIT_EINVAL);

    /* slow rates: a year is fine, a century is not even for one token */
    EXPECT_EQ(make(1, 365ULL * 86400000, 0).rc, NGX_HTTP_RATE_LIMIT_OK);
    made = make(1, 36500ULL * 86400000, 0);
    EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(made.error.find("too large for the rate"), std::string::npos)
        << made.error;
    EXPECT_EQ(make(1, 18446744073709551615ULL, 0).rc,
              NGX_HTTP_RATE_LIMIT_EINVAL);

    /* a huge default burst at a fast rate is still one period */
    EXPECT_EQ(make(1000000000ULL, 1000000, 0).rc, NGX_HTTP_RATE_LIMIT_OK);
}


TEST(MakeParams, MessagesFitTheCallersBuffer)
{
    for (const MadeParams &made : { make(0, 1, 1), make(1, 0, 1),
                                    make(2000000, 1000, 1),
                                    make(1, 1000, 18446744073709551615ULL) })
    {
        EXPECT_EQ(made.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
        EXPECT_GT(made.error.size(), 10u);
        EXPECT_LT(made.error.size(), size_t(NGX_HTTP_RATE_LIMIT_ERR_LEN) - 1)
            << "\"" << made.error << "\" may have been cut";
    }
}


TEST(MakeParams, NullArgumentsAreRefused)
{
    const ngx_http_rate_limit_rate_t rate { 1, 1000 };
    ngx_http_rate_limit_params_t params {};

    EXPECT_EQ(ngx_http_rate_limit_make_params(nullptr, 1, &params, nullptr,
                                              0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_make_params(&rate, 1, nullptr, nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}

} // namespace
