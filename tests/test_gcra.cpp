/*
 * The token bucket arithmetic, with the clock passed in: every instant is
 * chosen by the test, so every expected number is exact.
 */

#include "rate_limit_test_support.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>


namespace {

using rate_limit_test::base_now_us;
using rate_limit_test::decide;
using rate_limit_test::params_for;


/* the state a caller keeps: it stores the TAT only when allowed */
class Bucket {
public:
    explicit Bucket(ngx_http_rate_limit_params_t params) : params_(params) {}

    ngx_http_rate_limit_decision_t take(int64_t now_us, uint64_t cost = 1)
    {
        const ngx_http_rate_limit_decision_t d =
            decide(params_, tat_us_, now_us, cost);

        EXPECT_EQ(d.tat_us, d.allowed ? d.tat_us : tat_us_)
            << "a rejection must leave the state as it was";
        if (d.allowed) {
            tat_us_ = d.tat_us;
        }
        return d;
    }

    /* allowed requests of cost 1 at one instant, until the first refusal */
    uint64_t drain(int64_t now_us, uint64_t limit)
    {
        uint64_t allowed = 0;
        while (allowed <= limit && take(now_us).allowed) {
            allowed++;
        }
        return allowed;
    }

    int64_t tat_us() const { return tat_us_; }
    void set_tat_us(int64_t tat_us) { tat_us_ = tat_us; }

private:
    ngx_http_rate_limit_params_t  params_;
    int64_t                       tat_us_ = 0;
};


struct BurstCase {
    const char  *rate;
    uint64_t     burst;
};

void PrintTo(const BurstCase &burst_case, std::ostream *out)
{
    *out << burst_case.rate << " burst=" << burst_case.burst;
}

class ExactBurst : public testing::TestWithParam<BurstCase> {};

TEST_P(ExactBurst, FitsAtOneInstantAndTheNextIsRejected)
{
    const ngx_http_rate_limit_params_t params =
        params_for(GetParam().rate, GetParam().burst);
    Bucket bucket(params);

    for (uint64_t taken = 1; taken <= params.burst; taken++) {
        const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
        ASSERT_TRUE(d.allowed) << "request " << taken << " of "
                               << params.burst;
        ASSERT_EQ(d.remaining, params.burst - taken);
        ASSERT_EQ(d.retry_after_us, 0);
    }

    const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_GT(d.retry_after_us, 0);
    EXPECT_LE(d.retry_after_us, std::llround(params.interval_us));
}

INSTANTIATE_TEST_SUITE_P(ManyRates, ExactBurst, testing::Values(
    BurstCase { "3r/s", 0 },
    BurstCase { "7r/m", 0 },
    BurstCase { "1r/d", 0 },
    BurstCase { "1r/365d", 0 },
    BurstCase { "1000000r/s", 0 },
    BurstCase { "999999r/s", 0 },
    BurstCase { "666667r/s", 0 },
    BurstCase { "400000r/s", 0 },
    BurstCase { "3r/ms", 0 },
    BurstCase { "13r/7s", 0 },
    BurstCase { "100r/m", 20 },
    BurstCase { "10r/s", 1 },
    BurstCase { "10r/s", 1000 },
    BurstCase { "5r/30s", 0 },
    BurstCase { "3r/500ms", 0 },
    BurstCase { "1000r/ms", 0 },
    BurstCase { "1r/s", 100000 },
    BurstCase { "7r/3ms", 50 }),
    [](const testing::TestParamInfo<BurstCase> &info) {
        return rate_limit_test::param_name(
            info.index, std::string(info.param.rate) + " burst "
                        + std::to_string(info.param.burst));
    });


TEST(ExactBurstSweep, EveryCountOverSeveralPeriods)
{
    for (uint64_t period_ms : { 1ULL, 7ULL, 999ULL, 1000ULL, 60000ULL,
                                3600000ULL, 86400000ULL })
    {
        for (uint64_t count = 1; count <= 300 && count <= period_ms * 1000;
             count++)
        {
            const ngx_http_rate_limit_rate_t rate { count, period_ms };
            ngx_http_rate_limit_params_t params {};
            ASSERT_EQ(ngx_http_rate_limit_make_params(&rate, 0, &params,
                                                      nullptr, 0),
                      NGX_HTTP_RATE_LIMIT_OK);

            Bucket bucket(params);
            ASSERT_EQ(bucket.drain(base_now_us, count), count)
                << count << "r/" << period_ms << "ms";
        }
    }
}


TEST(Gcra, NeverSeenKeyAndStaleStateAreBothAFullBucket)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s", 5);

    const ngx_http_rate_limit_decision_t fresh = decide(params, 0,
                                                        base_now_us);
    const ngx_http_rate_limit_decision_t stale =
        decide(params, base_now_us - 86400000000LL, base_now_us);
    const ngx_http_rate_limit_decision_t exactly_full =
        decide(params, base_now_us, base_now_us);

    for (const ngx_http_rate_limit_decision_t &d :
         { fresh, stale, exactly_full })
    {
        EXPECT_TRUE(d.allowed);
        EXPECT_EQ(d.tat_us, base_now_us + 100000);
        EXPECT_EQ(d.remaining, 4u);
        EXPECT_EQ(d.retry_after_us, 0);
        EXPECT_EQ(d.reset_us, 100000);
    }
}


TEST(Gcra, AllowedDecisionReportsWhatIsLeft)
{
    /* 10r/s: one token every 100000 us */
    Bucket bucket(params_for("10r/s"));

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, base_now_us + 100000);
    EXPECT_EQ(d.remaining, 9u);
    EXPECT_EQ(d.reset_us, 100000);
    EXPECT_EQ(d.retry_after_us, 0);

    d = bucket.take(base_now_us + 30000);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, base_now_us + 200000);
    /* 1.3 tokens are missing: 8.7 are left, 8 of them whole */
    EXPECT_EQ(d.remaining, 8u);
    EXPECT_EQ(d.reset_us, 170000);
}


TEST(Gcra, RefillsOneTokenPerInterval)
{
    Bucket bucket(params_for("10r/s"));
    ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us + 99999);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 1);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 900001);

    d = bucket.take(base_now_us + 100000);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 1000000);

    d = bucket.take(base_now_us + 100000);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 100000);
}


TEST(Gcra, PartialRefillGivesWholeTokensOnly)
{
    Bucket bucket(params_for("10r/s"));
    ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);

    /* 3.5 tokens back */
    const int64_t later = base_now_us + 350000;

    ngx_http_rate_limit_decision_t d = decide(
        params_for("10r/s"), bucket.tat_us(), later, 0);
    EXPECT_EQ(d.remaining, 3u);

    d = bucket.take(later);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 2u);
    EXPECT_EQ(d.reset_us, 750000);

    EXPECT_TRUE(bucket.take(later).allowed);
    EXPECT_TRUE(bucket.take(later).allowed);

    d = bucket.take(later);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    /* half a token is there already */
    EXPECT_EQ(d.retry_after_us, 50000);
    EXPECT_EQ(d.reset_us, 950000);
}


TEST(Gcra, FullRefillAfterTheWholePeriod)
{
    Bucket bucket(params_for("100r/m", 20));
    ASSERT_EQ(bucket.drain(base_now_us, 20), 20u);

    /* 20 tokens of 600000 us each */
    const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
    EXPECT_EQ(d.reset_us, 12000000);

    Bucket almost_full = bucket;
    EXPECT_EQ(almost_full.drain(base_now_us + 12000000 - 1, 20), 19u);

    Bucket full = bucket;
    EXPECT_EQ(full.drain(base_now_us + 12000000, 20), 20u);
}


TEST(Gcra, CostTakesSeveralTokens)
{
    Bucket bucket(params_for("10r/s"));

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us, 4);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 6u);
    EXPECT_EQ(d.reset_us, 400000);

    d = bucket.take(base_now_us, 4);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 2u);
    EXPECT_EQ(d.reset_us, 800000);

    d = bucket.take(base_now_us, 4);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 2u);
    EXPECT_EQ(d.reset_us, 800000);
    EXPECT_EQ(d.retry_after_us, 200000);

    /* what is left can still be used by a cheaper request */
    d = bucket.take(base_now_us, 2);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
}


TEST(Gcra, CostOfTheWholeBurstFitsAFullBucketOnly)
{
    Bucket bucket(params_for("10r/s"));

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us, 10);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 1000000);

    d = bucket.take(base_now_us + 999999, 10);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 1);

    EXPECT_TRUE(bucket.take(base_now_us + 1000000, 10).allowed);
}


TEST(Gcra, CostAboveBurstIsAlwaysRejected)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s", 5);

    /* on a full bucket: retry_after is one token, as if burst + 1 were due */
    for (uint64_t cost : { 6ULL, 7ULL, 1000ULL, 18446744073709551615ULL }) {
        const ngx_http_rate_limit_decision_t d =
            decide(params, 0, base_now_us, cost);
        EXPECT_FALSE(d.allowed) << cost;
        EXPECT_EQ(d.tat_us, 0);
        EXPECT_EQ(d.remaining, 5u);
        EXPECT_EQ(d.reset_us, 0);
        EXPECT_EQ(d.retry_after_us, 100000);
    }

    /* partly used: until full, plus that one token */
    const ngx_http_rate_limit_decision_t d =
        decide(params, base_now_us + 250000, base_now_us, 6);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 2u);
    EXPECT_EQ(d.reset_us, 250000);
    EXPECT_EQ(d.retry_after_us, 350000);

    /* even long after: it never fits */
    EXPECT_FALSE(decide(params, 0, base_now_us + 86400000000LL, 6).allowed);
}


TEST(Gcra, CostZeroTakesNothing)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");

    ngx_http_rate_limit_decision_t d = decide(params, 0, base_now_us, 0);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, base_now_us);
    EXPECT_EQ(d.remaining, 10u);
    EXPECT_EQ(d.reset_us, 0);

    d = decide(params, base_now_us + 1000000, base_now_us, 0);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, base_now_us + 1000000);
    EXPECT_EQ(d.remaining, 0u);
}


TEST(Gcra, RoundingAtAThirdOfASecond)
{
    /* 3r/s: 333333.33 us per token, counted as 333333 */
    Bucket bucket(params_for("3r/s"));

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
    EXPECT_EQ(d.remaining, 2u);
    EXPECT_EQ(d.reset_us, 333333);

    bucket.take(base_now_us);
    d = bucket.take(base_now_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 999999);

    d = bucket.take(base_now_us + 333332);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 1);
    EXPECT_EQ(d.reset_us, 666667);

    d = bucket.take(base_now_us + 333333);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
}


TEST(Gcra, RoundsTheIntervalHalfUp)
{
    /* 400000r/s: 2.5 us per token, counted as 3 */
    Bucket bucket(params_for("400000r/s", 4));
    ASSERT_EQ(bucket.drain(base_now_us, 4), 4u);
    EXPECT_EQ(bucket.tat_us(), base_now_us + 12);

    /* 7r/m: 8571428.57 us, counted as 8571429 */
    Bucket slow(params_for("7r/m"));
    EXPECT_EQ(slow.take(base_now_us).reset_us, 8571429);
}


TEST(Gcra, RetryAfterIsExactlyWhenTheRequestFits)
{
    for (const char *rate : { "3r/s", "7r/m", "10r/s", "1000000r/s",
                              "400000r/s", "13r/7s" })
    {
        const ngx_http_rate_limit_params_t params = params_for(rate, 10);

        for (uint64_t cost : { 1ULL, 3ULL, 10ULL }) {
            for (int64_t elapsed : { 0LL, 1LL, 12345LL, 333334LL }) {
                Bucket bucket(params);
                ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);

                const int64_t now = base_now_us + elapsed;
                const ngx_http_rate_limit_decision_t d = bucket.take(now,
                                                                     cost);
                if (d.allowed) {
                    continue;
                }

                ASSERT_GT(d.retry_after_us, 0);
                EXPECT_FALSE(bucket.take(now + d.retry_after_us - 1,
                                         cost).allowed)
                    << rate << " cost " << cost;
                EXPECT_TRUE(bucket.take(now + d.retry_after_us,
                                        cost).allowed)
                    << rate << " cost " << cost;
            }
        }
    }
}


TEST(Gcra, ResetIsExactlyWhenTheBucketIsFull)
{
    for (const char *rate : { "3r/s", "7r/m", "10r/s", "1000000r/s",
                              "1r/d" })
    {
        const ngx_http_rate_limit_params_t params = params_for(rate, 6);
        Bucket bucket(params);
        bucket.take(base_now_us, 2);
        const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us, 3);
        ASSERT_TRUE(d.allowed);

        const int64_t full_at = base_now_us + d.reset_us;
        EXPECT_EQ(decide(params, bucket.tat_us(), full_at, 0).remaining, 6u)
            << rate;
        EXPECT_EQ(decide(params, bucket.tat_us(), full_at - 1, 0).remaining,
                  5u) << rate;
        EXPECT_EQ(decide(params, bucket.tat_us(), full_at - 1, 0).reset_us,
                  1) << rate;
    }
}


TEST(Gcra, RemainingNeverExceedsBurstMinusCost)
{
    const ngx_http_rate_limit_params_t params = params_for("7r/m", 7);

    for (int64_t tat_offset = -100000000; tat_offset <= 70000000;
         tat_offset += 999983)
    {
        for (uint64_t cost = 0; cost <= 7; cost++) {
            const ngx_http_rate_limit_decision_t d =
                decide(params, base_now_us + tat_offset, base_now_us, cost);
            if (d.allowed) {
                EXPECT_LE(d.remaining, 7 - cost);
                EXPECT_GE(d.reset_us, 0);
                EXPECT_EQ(d.retry_after_us, 0);
            } else {
                /* a TAT beyond tau refuses even cost 0, with nothing left */
                EXPECT_LE(d.remaining, cost == 0 ? 0 : cost - 1);
                EXPECT_GT(d.retry_after_us, 0);
            }
        }
    }
}


TEST(Gcra, HugeRate)
{
    /* a million per second and a million of burst: one token per us */
    const ngx_http_rate_limit_params_t params = params_for("1000000r/s");
    Bucket bucket(params);

    ASSERT_EQ(bucket.drain(base_now_us, 1000000), 1000000u);
    EXPECT_EQ(bucket.tat_us(), base_now_us + 1000000);

    ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 1);

    EXPECT_EQ(bucket.drain(base_now_us + 250, 1000), 250u);
}


TEST(Gcra, TinyRate)
{
    Bucket daily(params_for("1r/d"));
    ngx_http_rate_limit_decision_t d = daily.take(base_now_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.reset_us, 86400000000LL);

    d = daily.take(base_now_us + 1000000);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 86399000000LL);
    EXPECT_TRUE(daily.take(base_now_us + 86400000000LL).allowed);

    Bucket yearly(params_for("1r/365d"));
    EXPECT_TRUE(yearly.take(base_now_us).allowed);
    d = yearly.take(base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, 365LL * 86400000000LL);
}


TEST(Gcra, LongRunRateIsTheConfiguredOne)
{
    /* a client that retries the moment it is told to */
    Bucket bucket(params_for("3r/s"));
    int64_t now = base_now_us;
    uint64_t allowed = 0;

    while (now <= base_now_us + 100000000) {
        const ngx_http_rate_limit_decision_t d = bucket.take(now);
        if (d.allowed) {
            allowed++;
        } else {
            now += d.retry_after_us;
        }
    }

    /* the burst of 3, then one every 333333 us for 100 s */
    EXPECT_EQ(allowed, 3u + 100000000 / 333333);
}


TEST(Gcra, StateFromALargerBucketIsWaitedFor)
{
    /* a TAT beyond one bucket: the burst shrank, or the clock went back */
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    const int64_t far_tat = base_now_us + 3600000000LL;

    ngx_http_rate_limit_decision_t d = decide(params, far_tat, base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.tat_us, far_tat);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 3600000000LL);
    EXPECT_EQ(d.retry_after_us, 3600000000LL - 900000);

    EXPECT_FALSE(decide(params, far_tat,
                        base_now_us + d.retry_after_us - 1).allowed);
    d = decide(params, far_tat, base_now_us + d.retry_after_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, far_tat + 100000);
    EXPECT_EQ(d.remaining, 0u);
}


TEST(Gcra, ExtremeStoredValuesDoNotOverflow)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");

    ngx_http_rate_limit_decision_t d = decide(
        params, std::numeric_limits<int64_t>::max(), base_now_us, 10);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 4000000000000000LL);
    EXPECT_EQ(d.retry_after_us, 4000000000000000LL);

    d = decide(params, std::numeric_limits<int64_t>::min(), base_now_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.tat_us, base_now_us + 100000);

    d = decide(params, 0, std::numeric_limits<int64_t>::max());
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.reset_us, 100000);
}


TEST(Gcra, HandMadeParametersAreKeptInRange)
{
    /* what make_params() refuses must still not crash or overflow */
    ngx_http_rate_limit_params_t params { 0.25, 10 };
    ngx_http_rate_limit_decision_t d = decide(params, 0, base_now_us, 10);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.reset_us, 10);

    params = { 1e300, std::numeric_limits<uint64_t>::max() };
    d = decide(params, 0, base_now_us, 1);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.reset_us, 1000000000000000LL);

    params = { std::nan(""), 3 };
    EXPECT_TRUE(decide(params, 0, base_now_us, 3).allowed);

    params = { 1000.0, 0 };
    EXPECT_FALSE(decide(params, 0, base_now_us, 1).allowed);
}


TEST(Gcra, NullArguments)
{
    ngx_http_rate_limit_decision_t d {};
    d.allowed = 1;
    ngx_http_rate_limit_decide(nullptr, 42, base_now_us, 1, &d);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.tat_us, 42);

    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    ngx_http_rate_limit_decide(&params, 0, base_now_us, 1, nullptr);

    EXPECT_EQ(ngx_http_rate_limit_refund(nullptr, 42, base_now_us, 1), 42);
}


TEST(Refund, GivesBackWhatWasTaken)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    Bucket bucket(params);

    bucket.take(base_now_us, 2);
    const int64_t before = bucket.tat_us();
    const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us, 3);
    ASSERT_TRUE(d.allowed);

    EXPECT_EQ(ngx_http_rate_limit_refund(&params, d.tat_us, base_now_us, 3),
              before);
    /* later, the refund is the same amount of time */
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, d.tat_us,
                                         base_now_us + 50000, 3),
              before);
}


TEST(Refund, NeverBeyondAFullBucket)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    const int64_t tat = base_now_us + 300000;

    EXPECT_EQ(ngx_http_rate_limit_refund(&params, tat, base_now_us, 3),
              base_now_us);
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, tat, base_now_us, 5),
              base_now_us);
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, tat, base_now_us + 250000,
                                         1),
              base_now_us + 250000);
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, 0, base_now_us, 1),
              base_now_us);
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, tat, base_now_us, 0), tat);
    EXPECT_EQ(ngx_http_rate_limit_refund(
                  &params, tat, base_now_us,
                  std::numeric_limits<uint64_t>::max()),
              base_now_us);
}


TEST(Refund, UndoesARejectedMultiLimitRequest)
{
    /* two limits: the first allows, the second rejects, so the first is
     * given back and the bucket is as if nothing happened */
    const ngx_http_rate_limit_params_t params = params_for("3r/s");
    Bucket bucket(params);
    bucket.take(base_now_us);

    const int64_t before = bucket.tat_us();
    const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us + 10);
    ASSERT_TRUE(d.allowed);
    bucket.set_tat_us(ngx_http_rate_limit_refund(&params, bucket.tat_us(),
                                                 base_now_us + 10, 1));
    EXPECT_EQ(bucket.tat_us(), before);
}

TEST(TokenUs, IsTheIntervalAsDecideCountsIt)
{
    const std::vector<std::pair<double, int64_t>> cases {
        { 0.4, 1 }, { 1.0, 1 }, { 1.5, 2 }, { 2.49, 2 }, { 333333.3333, 333333 },
        { 60e6, 60000000 }, { 1e16, 1000000000000000 },
        { std::numeric_limits<double>::quiet_NaN(), 1 },
    };

    for (const auto &[interval_us, want] : cases) {
        ngx_http_rate_limit_params_t params { interval_us, 10 };
        EXPECT_EQ(ngx_http_rate_limit_token_us(&params), want) << interval_us;
    }

    /* the same count decide() uses: one token's wait after a full bucket */
    const ngx_http_rate_limit_params_t params = params_for("3r/s", 1);
    const ngx_http_rate_limit_decision_t first =
        decide(params, 0, base_now_us, 1);
    const ngx_http_rate_limit_decision_t second =
        decide(params, first.tat_us, base_now_us, 1);
    EXPECT_EQ(second.retry_after_us, ngx_http_rate_limit_token_us(&params));
}

} // namespace
