/*
 * The token bucket arithmetic, with the clock passed in: every instant is
 * chosen by the test, so every expected number is exact.
 */

#include "rate_limit_test_support.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>


namespace {

using rate_limit_test::base_now_us;
using rate_limit_test::decide;
using rate_limit_test::params_for;
using rate_limit_test::state_for;


/* the state a caller keeps: it stores the state decide() gives */
class Bucket {
public:
    explicit Bucket(ngx_http_rate_limit_params_t params) : params_(params) {}

    ngx_http_rate_limit_decision_t take(int64_t now_us, uint64_t cost = 1)
    {
        const ngx_http_rate_limit_decision_t d =
            decide(params_, state_, now_us, cost);

        if (!d.allowed && !changed_) {
            EXPECT_EQ(d.state.tat_us, state_.tat_us)
                << "a rejection under the same limit leaves the state";
            EXPECT_EQ(d.state.token_code, state_.token_code);
        }
        state_ = d.state;
        changed_ = false;
        return d;
    }

    /* the limit changes: the bucket keeps its state */
    void change(ngx_http_rate_limit_params_t params)
    {
        params_ = params;
        changed_ = true;
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

    int64_t tat_us() const { return state_.tat_us; }
    const ngx_http_rate_limit_state_t &state() const { return state_; }
    void set_state(const ngx_http_rate_limit_state_t &state)
    {
        state_ = state;
    }

private:
    ngx_http_rate_limit_params_t  params_;
    ngx_http_rate_limit_state_t   state_ {};
    bool                          changed_ = false;
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
        EXPECT_EQ(d.state.tat_us, base_now_us + 100000);
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
    EXPECT_EQ(d.state.tat_us, base_now_us + 100000);
    EXPECT_EQ(d.remaining, 9u);
    EXPECT_EQ(d.reset_us, 100000);
    EXPECT_EQ(d.retry_after_us, 0);

    d = bucket.take(base_now_us + 30000);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.state.tat_us, base_now_us + 200000);
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
        params_for("10r/s"), bucket.state(), later, 0);
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
        EXPECT_EQ(d.state.tat_us, 0);
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
    EXPECT_EQ(d.state.tat_us, base_now_us);
    EXPECT_EQ(d.remaining, 10u);
    EXPECT_EQ(d.reset_us, 0);

    d = decide(params, base_now_us + 1000000, base_now_us, 0);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.state.tat_us, base_now_us + 1000000);
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
        EXPECT_EQ(decide(params, bucket.state(), full_at, 0).remaining, 6u)
            << rate;
        EXPECT_EQ(decide(params, bucket.state(), full_at - 1, 0).remaining,
                  5u) << rate;
        EXPECT_EQ(decide(params, bucket.state(), full_at - 1, 0).reset_us,
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
            } else if (cost == 0) {
                /* within a second beyond tau it is waited for; further, tau */
                EXPECT_GT(tat_offset, 60000003) << tat_offset;
                EXPECT_LE(tat_offset, 60000003 + 1000000) << tat_offset;
                EXPECT_EQ(d.remaining, 0u);
                EXPECT_EQ(d.retry_after_us, tat_offset - 60000003);
            } else {
                EXPECT_LE(d.remaining, cost - 1);
                EXPECT_GT(d.retry_after_us, 0);
                EXPECT_LE(d.retry_after_us, 1000000 + int64_t(cost) * 8571429);
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


/*
 * Changed from "a TAT beyond one bucket is waited for" (issue 8): a client
 * never waits longer than its limit's full refill, give or take a second,
 * and the wait it is given holds.
 */
TEST(Gcra, StateFromALargerBucketWaitsNoLongerThanAFullRefill)
{
    /* a TAT beyond one bucket: the burst shrank, or the clock went back */
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    const int64_t far_tat = base_now_us + 3600000000LL;

    ngx_http_rate_limit_decision_t d =
        decide(params, state_for(params, far_tat), base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 1000000);
    EXPECT_EQ(d.retry_after_us, 100000);
    /* nothing taken, but the state is stored as read: an empty bucket */
    EXPECT_EQ(d.state.tat_us, base_now_us + 1000000);

    const ngx_http_rate_limit_state_t left = d.state;
    EXPECT_FALSE(decide(params, left,
                        base_now_us + d.retry_after_us - 1).allowed);
    d = decide(params, left, base_now_us + d.retry_after_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.state.tat_us, base_now_us + 1100000);
    EXPECT_EQ(d.remaining, 0u);

    /* the same for a TAT without a code, and for cost 0 */
    d = decide(params, far_tat, base_now_us, 0);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 1000000);

    /*
     * Within a second beyond, it is waited for: another worker's clock
     * may be that far ahead, and nothing of it is given back.
     */
    const int64_t near_tat = base_now_us + 1000000 + 1000000;
    d = decide(params, state_for(params, near_tat), base_now_us);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.reset_us, 2000000);
    EXPECT_EQ(d.retry_after_us, 1100000);
    EXPECT_EQ(d.state.tat_us, near_tat);
    d = decide(params, state_for(params, near_tat + 1), base_now_us);
    EXPECT_EQ(d.reset_us, 1000000);
    EXPECT_EQ(d.state.tat_us, base_now_us + 1000000);
}


TEST(Gcra, AClockAMomentBehindGivesNothingBack)
{
    /*
     * Two workers of a node on one bucket, one reading its clock 5 ms
     * behind the other: what the late one reads as beyond tau is waited
     * for, so over a second exactly burst + rate pass.
     */
    Bucket bucket(params_for("100r/s", 10));
    uint64_t allowed = 0;

    for (int64_t at = 0; at <= 1000000; at += 1000) {
        allowed += bucket.take(base_now_us + at).allowed;
        allowed += bucket.take(base_now_us + at - 5000).allowed;
    }

    EXPECT_EQ(allowed, 10u + 100u);
}


TEST(Gcra, ExtremeStoredValuesDoNotOverflow)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");

    /*
     * Read as 4 * 10^15 us of the code's tokens, at most a second beyond
     * an empty bucket, and an empty bucket for codes of a token up to
     * 4 * 10^9 us long, no code, this bucket's code and codes beyond the
     * last.
     */
    for (uint32_t code = 0; code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES + 1;
         code++)
    {
        const ngx_http_rate_limit_decision_t d = decide(
            params, ngx_http_rate_limit_state_t {
                std::numeric_limits<int64_t>::max(), code },
            base_now_us, 10);
        const double code_us = ngx_http_rate_limit_token_code_us(code);

        EXPECT_FALSE(d.allowed) << code;
        EXPECT_LE(d.reset_us, 2000000) << code;
        EXPECT_EQ(d.retry_after_us, d.reset_us) << code;
        if (code_us <= 4e9) {
            EXPECT_EQ(d.remaining, 0u) << code;
            EXPECT_EQ(d.reset_us, 1000000) << code;
        }
    }
    ngx_http_rate_limit_decision_t d = decide(
        params, ngx_http_rate_limit_state_t {
            std::numeric_limits<int64_t>::max(), 4294967295u },
        base_now_us, 10);
    EXPECT_EQ(d.reset_us, 1000000);

    d = decide(params, std::numeric_limits<int64_t>::min(), base_now_us);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.state.tat_us, base_now_us + 100000);

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
    const ngx_http_rate_limit_state_t stored { 42, 7 };
    ngx_http_rate_limit_decision_t d {};
    d.allowed = 1;
    ngx_http_rate_limit_decide(nullptr, &stored, base_now_us, 1, &d);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.state.tat_us, 42);
    EXPECT_EQ(d.state.token_code, 7u);

    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    ngx_http_rate_limit_decide(&params, &stored, base_now_us, 1, nullptr);

    /* no state: a key never seen */
    ngx_http_rate_limit_decide(&params, nullptr, base_now_us, 1, &d);
    EXPECT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 9u);

    const ngx_http_rate_limit_state_t refunded =
        ngx_http_rate_limit_refund(nullptr, &stored, base_now_us, 1);
    EXPECT_EQ(refunded.tat_us, 42);
    EXPECT_EQ(refunded.token_code, 7u);
    EXPECT_EQ(ngx_http_rate_limit_refund(&params, nullptr, base_now_us,
                                         1).tat_us,
              base_now_us);
}


/* the TAT refund() gives back for a TAT stored under params */
int64_t refund(const ngx_http_rate_limit_params_t &params, int64_t tat_us,
    int64_t now_us, uint64_t cost)
{
    const ngx_http_rate_limit_state_t stored = state_for(params, tat_us);
    const ngx_http_rate_limit_state_t refunded =
        ngx_http_rate_limit_refund(&params, &stored, now_us, cost);
    EXPECT_EQ(refunded.token_code, stored.token_code);
    return refunded.tat_us;
}


TEST(Refund, GivesBackWhatWasTaken)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    Bucket bucket(params);

    bucket.take(base_now_us, 2);
    const int64_t before = bucket.tat_us();
    const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us, 3);
    ASSERT_TRUE(d.allowed);

    EXPECT_EQ(refund(params, d.state.tat_us, base_now_us, 3), before);
    /* later, the refund is the same amount of time */
    EXPECT_EQ(refund(params, d.state.tat_us, base_now_us + 50000, 3),
              before);
}


TEST(Refund, NeverBeyondAFullBucket)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/s");
    const int64_t tat = base_now_us + 300000;

    EXPECT_EQ(refund(params, tat, base_now_us, 3), base_now_us);
    EXPECT_EQ(refund(params, tat, base_now_us, 5), base_now_us);
    EXPECT_EQ(refund(params, tat, base_now_us + 250000, 1),
              base_now_us + 250000);
    EXPECT_EQ(refund(params, 0, base_now_us, 1), base_now_us);
    EXPECT_EQ(refund(params, tat, base_now_us, 0), tat);
    EXPECT_EQ(refund(params, tat, base_now_us,
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
    bucket.set_state(ngx_http_rate_limit_refund(&params, &bucket.state(),
                                                base_now_us + 10, 1));
    EXPECT_EQ(bucket.tat_us(), before);
}

/*
 * A changed limit (issue 8): the tokens used are carried over, capped at
 * the new burst, and refill at the new rate.
 */

/* used tokens of params at now: burst minus what a cost of 0 sees */
uint64_t used(const ngx_http_rate_limit_params_t &params,
    const ngx_http_rate_limit_state_t &state, int64_t now_us)
{
    return params.burst - decide(params, state, now_us, 0).remaining;
}


TEST(LimitChange, RaisedLimitKeepsTheTokensUsed)
{
    /* used 10 of 1r/h burst=10, raised to 1000r/h burst=1000 */
    Bucket bucket(params_for("1r/h", 10));
    ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);
    EXPECT_FALSE(bucket.take(base_now_us + 1000000).allowed);

    const ngx_http_rate_limit_params_t raised = params_for("1000r/h", 1000);
    bucket.change(raised);

    const int64_t now = base_now_us + 1000000;
    ngx_http_rate_limit_decision_t d = bucket.take(now);
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 989u);
    EXPECT_EQ(d.state.token_code, state_for(raised, 0).token_code);

    /* from then on, the new rate: 3.6 s a token */
    EXPECT_EQ(bucket.drain(now, 1000), 989u);
    d = bucket.take(now);
    ASSERT_FALSE(d.allowed);
    EXPECT_LE(d.retry_after_us, 3600000);
    const int64_t next = now + d.retry_after_us;
    EXPECT_TRUE(bucket.take(next).allowed);
    EXPECT_EQ(bucket.take(next).retry_after_us, 3600000);
}


TEST(LimitChange, LoweredLimitKeepsTheTokensUsedCappedAtTheNewBurst)
{
    /* used 2 of 1r/h burst=10, lowered to 10r/h burst=3: exactly 1 more */
    Bucket bucket(params_for("1r/h", 10));
    ASSERT_TRUE(bucket.take(base_now_us, 2).allowed);

    const ngx_http_rate_limit_params_t lowered = params_for("10r/h", 3);
    bucket.change(lowered);
    EXPECT_EQ(bucket.drain(base_now_us + 1000, 3), 1u);

    /* used 10 of it, lowered to burst 3: empty, and a token in 6 minutes */
    Bucket full(params_for("1r/h", 10));
    ASSERT_EQ(full.drain(base_now_us, 10), 10u);
    full.change(lowered);

    const ngx_http_rate_limit_decision_t d = full.take(base_now_us + 1000);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.reset_us, 3 * 360000000LL);
    EXPECT_EQ(d.retry_after_us, 360000000LL);

    /* the rejection stored the state as read: the wait it gave holds */
    EXPECT_EQ(d.state.tat_us, base_now_us + 1000 + 3 * 360000000LL);
    EXPECT_EQ(d.state.token_code, state_for(lowered, 0).token_code);
    EXPECT_FALSE(full.take(base_now_us + 1000 + 360000000LL - 1).allowed);
    EXPECT_TRUE(full.take(base_now_us + 1000 + 360000000LL).allowed);
}


TEST(LimitChange, QuotaUpgrade)
{
    /* 10r/d, all used, upgraded to 1000r/d burst=1000: 990 left */
    Bucket bucket(params_for("10r/d"));
    ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);

    bucket.change(params_for("1000r/d", 1000));
    for (int i = 0; i < 10; i++) {
        ASSERT_TRUE(bucket.take(base_now_us + 5000000).allowed) << i;
    }
    EXPECT_EQ(decide(params_for("1000r/d", 1000), bucket.state(),
                     base_now_us + 5000000, 0).remaining,
              980u);
}


TEST(LimitChange, NeverWaitsLongerThanTheNewFullRefill)
{
    rate_limit_test::for_each_change({
        { "1r/d", 100 }, { "1r/h", 10 }, { "10r/h", 3 }, { "1000r/m", 1000 },
        { "1r/m", 1 }, { "7r/m", 0 }, { "1000000r/s", 0 }, { "1r/365d", 2 },
    }, [](const ngx_http_rate_limit_params_t &before,
          const ngx_http_rate_limit_params_t &after,
          const std::string &context) {
        const int64_t token_us = ngx_http_rate_limit_token_us(&after);
        const int64_t tau = int64_t(after.burst) * token_us;

        Bucket bucket(before);
        ASSERT_TRUE(bucket.take(base_now_us, before.burst).allowed);
        bucket.change(after);

        const ngx_http_rate_limit_decision_t d = bucket.take(base_now_us);
        EXPECT_LE(d.reset_us, tau + 1000000) << context;
        EXPECT_LE(d.retry_after_us, token_us + 1000000) << context;

        if (!d.allowed) {
            EXPECT_TRUE(bucket.take(base_now_us + d.retry_after_us).allowed)
                << context;
        }
    });
}


TEST(LimitChange, TokensCarriedOverAreNeverMoreThanUsedNorMuchFewer)
{
    const std::vector<const char *> rates {
        "1r/d", "1r/h", "10r/h", "3r/s", "7r/m", "13r/7s", "1000r/m",
        "999999r/s", "1r/7d", "5r/30s",
    };

    for (const char *old_rate : rates) {
        for (const char *new_rate : rates) {
            const ngx_http_rate_limit_params_t before =
                params_for(old_rate, 50);
            const ngx_http_rate_limit_params_t after =
                params_for(new_rate, 1000);

            for (uint64_t taken : { 1u, 7u, 50u }) {
                Bucket bucket(before);
                bucket.take(base_now_us, taken);

                const int64_t new_token_us =
                    ngx_http_rate_limit_token_us(&after);
                const int64_t until_full =
                    decide(after, bucket.state(), base_now_us, 0).reset_us;
                const double carried = double(until_full)
                                       / double(new_token_us);
                const std::string context = std::string(old_rate) + " to "
                                            + new_rate + ", "
                                            + std::to_string(taken);

                EXPECT_LE(carried, double(taken)) << context;
                EXPECT_GE(carried,
                          double(taken) / NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO
                          - 1.0 / double(new_token_us))
                    << context;
                EXPECT_EQ(used(after, bucket.state(), base_now_us),
                          uint64_t(std::ceil(carried)))
                    << context;
            }
        }
    }
}


TEST(LimitChange, ATatWithoutACodeIsTakenAsCountedInTheLimitInForce)
{
    /* what a version before the code stored: 5 tokens used */
    const ngx_http_rate_limit_params_t params = params_for("1r/m", 20);
    const ngx_http_rate_limit_decision_t d =
        decide(params, base_now_us + 5 * 60000000LL, base_now_us);
    ASSERT_TRUE(d.allowed);
    EXPECT_EQ(d.remaining, 14u);
    EXPECT_EQ(d.state.tat_us, base_now_us + 6 * 60000000LL);
    EXPECT_EQ(d.state.token_code, state_for(params, 0).token_code);

    /* a rejection stores it with the code, unchanged otherwise */
    const ngx_http_rate_limit_decision_t rejected =
        decide(params, base_now_us + 20 * 60000000LL, base_now_us);
    EXPECT_FALSE(rejected.allowed);
    EXPECT_EQ(rejected.retry_after_us, 60000000);
    EXPECT_EQ(rejected.state.tat_us, base_now_us + 20 * 60000000LL);
    EXPECT_EQ(rejected.state.token_code, state_for(params, 0).token_code);

    /* a full bucket is full whichever way it is read: nothing to store */
    const ngx_http_rate_limit_decision_t full =
        decide(params, base_now_us - 1, base_now_us, 21);
    EXPECT_FALSE(full.allowed);
    EXPECT_EQ(full.state.tat_us, base_now_us - 1);
    EXPECT_EQ(full.state.token_code, NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE);
}


TEST(LimitChange, TheSameLimitAndAnotherBurstConvertNothing)
{
    /* a burst change keeps the code: used time is used tokens already */
    Bucket bucket(params_for("1r/m", 10));
    ASSERT_TRUE(bucket.take(base_now_us, 4).allowed);
    const ngx_http_rate_limit_state_t stored = bucket.state();

    const ngx_http_rate_limit_params_t bigger = params_for("1r/m", 100);
    const ngx_http_rate_limit_decision_t d = decide(bigger, stored,
                                                    base_now_us, 0);
    EXPECT_EQ(d.remaining, 96u);
    EXPECT_EQ(d.reset_us, 4 * 60000000LL);
    EXPECT_EQ(d.state.tat_us, stored.tat_us);
}


TEST(LimitChange, RefundReadsAsDecideReads)
{
    /* taken under 1r/h, given back under 1000r/h: in the new tokens */
    const ngx_http_rate_limit_params_t before = params_for("1r/h", 10);
    const ngx_http_rate_limit_params_t after = params_for("1000r/h", 1000);
    Bucket bucket(before);
    ASSERT_EQ(bucket.drain(base_now_us, 10), 10u);

    const int64_t until_full = decide(after, bucket.state(), base_now_us,
                                      0).reset_us;
    const ngx_http_rate_limit_state_t refunded =
        ngx_http_rate_limit_refund(&after, &bucket.state(), base_now_us, 2);
    EXPECT_EQ(refunded.tat_us, base_now_us + until_full - 2 * 3600000);
    EXPECT_EQ(refunded.token_code, state_for(after, 0).token_code);
}


TEST(TokenCode, EndsAndOutOfRange)
{
    EXPECT_EQ(ngx_http_rate_limit_token_code(1), 1u);
    EXPECT_EQ(ngx_http_rate_limit_token_code_us(1), 1.0);
    EXPECT_EQ(ngx_http_rate_limit_token_code(1000000000000000LL),
              uint32_t(NGX_HTTP_RATE_LIMIT_TOKEN_CODES));
    EXPECT_GE(ngx_http_rate_limit_token_code_us(
                  NGX_HTTP_RATE_LIMIT_TOKEN_CODES),
              1e15);

    EXPECT_EQ(ngx_http_rate_limit_token_code(0), 1u);
    EXPECT_EQ(ngx_http_rate_limit_token_code(-5), 1u);
    EXPECT_EQ(ngx_http_rate_limit_token_code(
                  std::numeric_limits<int64_t>::max()),
              uint32_t(NGX_HTTP_RATE_LIMIT_TOKEN_CODES));
    EXPECT_EQ(ngx_http_rate_limit_token_code_us(
                  NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE),
              0.0);
    EXPECT_EQ(ngx_http_rate_limit_token_code_us(
                  NGX_HTTP_RATE_LIMIT_TOKEN_CODES + 1),
              0.0);
}


TEST(TokenCode, IsRatioToTheCodeMinusOneMultipliedAsTheScriptDoes)
{
    /* the script's loop, in doubles: the same numbers exactly */
    double length = 1.0;
    for (uint32_t code = 1; code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES; code++) {
        EXPECT_EQ(ngx_http_rate_limit_token_code_us(code), length) << code;
        length *= NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO;
    }
    EXPECT_NEAR(NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO,
                std::pow(10.0, 15.0 / 998.0), 1e-15);
}


TEST(TokenCode, MonotoneNeverShorterAndWithinTheRatio)
{
    std::vector<int64_t> lengths;
    for (int64_t t = 1; t <= 5000; t++) {
        lengths.push_back(t);
    }
    for (uint32_t code = 1; code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES; code++) {
        const double at = ngx_http_rate_limit_token_code_us(code);
        for (int64_t near : { int64_t(std::floor(at)) - 1,
                              int64_t(std::floor(at)),
                              int64_t(std::ceil(at)),
                              int64_t(std::ceil(at)) + 1 })
        {
            if (near >= 1 && near <= 1000000000000000LL) {
                lengths.push_back(near);
            }
        }
    }
    for (const char *rate : { "3r/s", "7r/m", "1r/h", "10r/d", "1r/365d",
                              "13r/7s", "400000r/s" })
    {
        const ngx_http_rate_limit_params_t params = params_for(rate);
        lengths.push_back(ngx_http_rate_limit_token_us(&params));
    }
    std::sort(lengths.begin(), lengths.end());

    uint32_t last = 0;
    for (const int64_t token_us : lengths) {
        const uint32_t code = ngx_http_rate_limit_token_code(token_us);
        const double length = ngx_http_rate_limit_token_code_us(code);

        ASSERT_GE(code, last) << token_us;
        last = code;
        EXPECT_GE(length, double(token_us)) << token_us;
        EXPECT_LT(length, double(token_us)
                          * NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO
                          * (1 + 1e-12))
            << token_us;
        if (code > 1) {
            /* the smallest such code */
            EXPECT_LT(ngx_http_rate_limit_token_code_us(code - 1),
                      double(token_us))
                << token_us;
        }
    }
    EXPECT_EQ(last, uint32_t(NGX_HTTP_RATE_LIMIT_TOKEN_CODES));
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
        decide(params, first.state, base_now_us, 1);
    EXPECT_EQ(second.retry_after_us, ngx_http_rate_limit_token_us(&params));
}

} // namespace
