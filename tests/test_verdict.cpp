/*
 * The verdict of a request, without nginx: each limit's decision comes
 * from decide() at instants the test chooses, so the header numbers are
 * exact and are those t/test_headers.py reads from nginx.
 */

#include "rate_limit_test_support.h"

#include <rate_limit_verdict.h>

#include <string>
#include <vector>


namespace {

using rate_limit_test::base_now_us;
using rate_limit_test::decide;
using rate_limit_test::params_for;


/* a limit as the module hands it over: decided at base_now_us by default */
rl_verdict_limit_t limit(const ngx_http_rate_limit_params_t &params,
    int64_t tat_us = 0, uint64_t cost = 1)
{
    rl_verdict_limit_t  l {};

    l.params = params;
    l.cost = cost;
    l.decision = decide(params, tat_us, base_now_us, cost);
    l.decided = 1;
    l.taken = l.decision.allowed;
    return l;
}

rl_verdict_limit_t failed(const ngx_http_rate_limit_params_t &params,
    bool closed)
{
    rl_verdict_limit_t  l {};

    l.params = params;
    l.cost = 1;
    l.failed = 1;
    l.closed = closed;
    return l;
}

/* left unasked: another limit rejected first */
rl_verdict_limit_t unasked(const ngx_http_rate_limit_params_t &params)
{
    rl_verdict_limit_t  l {};

    l.params = params;
    l.cost = 1;
    return l;
}

ngx_http_rate_limit_params_t blocked_params()
{
    ngx_http_rate_limit_rate_t    rate { 0, 1000 };
    ngx_http_rate_limit_params_t  params {};
    char                          err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(&rate, 0, &params, err,
                                                       sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK) << err;
    EXPECT_TRUE(ngx_http_rate_limit_params_blocked(&params));
    return params;
}


struct Judged {
    rl_verdict_t                         v;
    std::vector<rl_verdict_limit_out_t>  out;
};

Judged judge(const std::vector<rl_verdict_limit_t> &limits,
    bool dry_run = false)
{
    Judged  j {};

    j.out.resize(limits.size());
    rl_verdict_judge(limits.data(), limits.size(), dry_run, &j.v,
                     j.out.data());
    return j;
}

/*
 * The numbers of the closest limit's headers: r and X-RateLimit-Remaining,
 * X-RateLimit-Limit, t, X-RateLimit-Reset, Retry-After; 0 for one not sent.
 */
void expect_headers(const rl_verdict_t &v, uint64_t remaining,
    uint64_t limit, uint64_t t, uint64_t reset_s, uint64_t retry_after_s)
{
    EXPECT_EQ(v.remaining, remaining);
    EXPECT_EQ(v.limit, limit);
    EXPECT_EQ(v.window_s, t);
    EXPECT_EQ(v.reset_s, reset_s);
    EXPECT_EQ(v.retry_after, retry_after_s != 0);
    EXPECT_EQ(v.retry_after_s, retry_after_s);
}

/* the TAT of a bucket of params after n requests of cost 1 at now */
int64_t tat_after(const ngx_http_rate_limit_params_t &params, int n)
{
    return base_now_us + n * ngx_http_rate_limit_token_us(&params);
}


TEST(Verdict, OneLimitPassesWithItsHeaderNumbers)
{
    const auto  p = params_for("10r/m", 5);
    const auto  j = judge({ limit(p) });

    EXPECT_EQ(j.v.status, RL_VERDICT_PASSED);
    EXPECT_FALSE(j.v.rejected);
    EXPECT_FALSE(j.v.reject);
    EXPECT_EQ(j.v.closest, 0u);
    EXPECT_FALSE(j.v.never_fits);
    EXPECT_EQ(j.v.remaining, 4u);
    EXPECT_EQ(j.v.limit, 5u);
    EXPECT_EQ(j.v.window_s, 6u) << "the next token, not the full bucket";
    EXPECT_EQ(j.v.reset_s, 6u);
    EXPECT_FALSE(j.v.retry_after);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_PASSED);
    EXPECT_FALSE(j.out[0].refund);
    EXPECT_TRUE(j.out[0].listed);
    EXPECT_EQ(j.out[0].quota, 5u);
    EXPECT_EQ(j.out[0].window_s, 30u);
}


/* t/test_headers.py test_t_is_the_next_token_not_the_full_bucket */
TEST(Verdict, WindowIsTheNextTokenThenRetryAfterOnRejection)
{
    const auto  p = params_for("10r/m", 5);

    for (int i = 0; i < 5; i++) {
        const auto  j = judge({ limit(p, tat_after(p, i)) });

        EXPECT_EQ(j.v.status, RL_VERDICT_PASSED) << i;
        EXPECT_EQ(j.v.remaining, uint64_t(4 - i)) << i;
        EXPECT_EQ(j.v.window_s, 6u) << i;
        EXPECT_EQ(j.v.reset_s, uint64_t(6 * (i + 1))) << i;
    }

    const auto  j = judge({ limit(p, tat_after(p, 5)) });

    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_TRUE(j.v.rejected);
    EXPECT_TRUE(j.v.reject);
    EXPECT_EQ(j.v.remaining, 0u);
    EXPECT_EQ(j.v.window_s, 6u);
    EXPECT_TRUE(j.v.retry_after);
    EXPECT_EQ(j.v.retry_after_s, 6u);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_REJECTED);
    EXPECT_FALSE(j.out[0].refund) << "a rejection took nothing";
}


/* t/test_headers.py test_t_counts_the_cost */
TEST(Verdict, WindowCountsTheCost)
{
    const auto  p = params_for("10r/m", 10);

    for (int i = 0; i < 3; i++) {
        const auto  j = judge({ limit(p, tat_after(p, 3 * i), 3) });

        EXPECT_EQ(j.v.remaining, uint64_t(7 - 3 * i)) << i;
        EXPECT_EQ(j.v.window_s, 18u) << i;
        EXPECT_EQ(j.v.reset_s, uint64_t(18 * (i + 1))) << i;
    }

    /* 1 token left, 2 more due in 12 s: t and Retry-After agree */
    auto  j = judge({ limit(p, tat_after(p, 9), 3) });
    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_EQ(j.v.remaining, 1u);
    EXPECT_EQ(j.v.window_s, 12u);
    EXPECT_EQ(j.v.retry_after_s, 12u);

    /* the last token at cost 1: the next in 6 s */
    j = judge({ limit(p, tat_after(p, 9), 1) });
    EXPECT_EQ(j.v.remaining, 0u);
    EXPECT_EQ(j.v.window_s, 6u);

    /* cost 3 with 5 of 5 left: the bucket is full before 3 more come */
    j = judge({ limit(params_for("10r/m", 5), 0, 3) });
    EXPECT_EQ(j.v.remaining, 2u);
    EXPECT_EQ(j.v.window_s, 18u);
}


/* t/test_headers.py test_policy_window_and_reset and the sub-second ones */
TEST(Verdict, PolicyQuotaAndWindow)
{
    struct Case {
        const char  *rate;
        uint64_t     burst, q, w, reset1;
    };

    const Case  cases[] = {
        { "10r/s", 5, 10, 1, 1 },
        { "5r/30s", 10, 10, 60, 6 },
        { "1r/d", 2, 2, 172800, 86400 },
        { "3r/500ms", 3, 6, 1, 1 },     /* 1e6 / (5e5 / 3) must not floor */
        { "1r/h", 7, 7, 25200, 3600 },
        { "10r/s", 15, 20, 2, 1 },      /* 1.5 s rounds to 2, which refill 20 */
        { "1000r/s", 10, 1000, 1, 1 },
        { "500r/100ms", 20, 5000, 1, 1 },
        { "1r/m", 5, 5, 300, 60 },
    };

    for (const Case &c : cases) {
        const auto  j = judge({ limit(params_for(c.rate, c.burst)) });

        EXPECT_EQ(j.out[0].quota, c.q) << c.rate << " burst " << c.burst;
        EXPECT_EQ(j.out[0].window_s, c.w) << c.rate << " burst " << c.burst;
        EXPECT_EQ(j.v.remaining, c.burst - 1) << c.rate;
        EXPECT_EQ(j.v.limit, c.burst) << c.rate;
        EXPECT_EQ(j.v.reset_s, c.reset1) << c.rate;
        EXPECT_EQ(j.v.window_s, c.reset1) << c.rate;
    }
}


TEST(Verdict, RetryAfterIsAtLeastOneSecond)
{
    const auto  p = params_for("10r/s", 1);
    const auto  j = judge({ limit(p, tat_after(p, 1)) });

    ASSERT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_EQ(j.v.retry_after_s, 1u) << "100 ms rounds up to 1 s";
    EXPECT_EQ(j.v.window_s, 1u);
}


TEST(Verdict, AllOrNothingRefundsWhatTheOthersTook)
{
    const auto  big = params_for("1r/m", 10);
    const auto  small = params_for("1r/m", 3);
    const auto  other = params_for("1r/m", 5);

    /* big took, small rejects, other was left unasked */
    const auto  j = judge({ limit(big), limit(small, tat_after(small, 3)),
                            unasked(other) });

    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_TRUE(j.v.reject);
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_PASSED);
    EXPECT_EQ(j.out[1].outcome, RL_VERDICT_OUTCOME_REJECTED);
    EXPECT_EQ(j.out[2].outcome, RL_VERDICT_OUTCOME_NONE);
    EXPECT_TRUE(j.out[0].refund);
    EXPECT_FALSE(j.out[1].refund);
    EXPECT_FALSE(j.out[2].refund);
    /* every limit but a failed one is in RateLimit-Policy */
    EXPECT_TRUE(j.out[0].listed && j.out[1].listed && j.out[2].listed);
    EXPECT_EQ(j.out[2].quota, 5u);
    EXPECT_EQ(j.out[2].window_s, 300u);
    EXPECT_EQ(j.v.remaining, 0u);
    EXPECT_EQ(j.v.limit, 3u);
    EXPECT_EQ(j.v.retry_after_s, 60u);
}


TEST(Verdict, ClosestWhenAllowedHasTheFewestTokensLeft)
{
    const auto  big = params_for("1r/m", 10);
    const auto  small = params_for("1r/m", 3);

    auto  j = judge({ limit(big), limit(small) });
    EXPECT_EQ(j.v.status, RL_VERDICT_PASSED);
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_EQ(j.v.remaining, 2u);
    EXPECT_FALSE(j.out[0].refund || j.out[1].refund)
        << "a request that passes keeps its tokens";

    j = judge({ limit(small), limit(big) });
    EXPECT_EQ(j.v.closest, 0u);

    /* a tie keeps the first line */
    j = judge({ limit(small), limit(small) });
    EXPECT_EQ(j.v.closest, 0u);
}


TEST(Verdict, ClosestWhenRejectedAsksForTheLongestWait)
{
    const auto  minute = params_for("1r/m", 1);
    const auto  second = params_for("1r/s", 1);

    auto  j = judge({ limit(second, tat_after(second, 1)),
                      limit(minute, tat_after(minute, 1)) });
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_EQ(j.v.retry_after_s, 60u);

    j = judge({ limit(minute, tat_after(minute, 1)),
                limit(second, tat_after(second, 1)) });
    EXPECT_EQ(j.v.closest, 0u);

    /* the same wait: the first line stays the closest */
    j = judge({ limit(minute, tat_after(minute, 1)),
                limit(minute, tat_after(minute, 1)) });
    EXPECT_EQ(j.v.closest, 0u);

    /* a limit that allowed is never the closest of a rejection */
    j = judge({ limit(params_for("1r/m", 1)), limit(second,
                                                    tat_after(second, 1)) });
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_EQ(j.v.retry_after_s, 1u);
}


TEST(Verdict, NeverFitsIsTheClosestAndHasNoWait)
{
    const auto  tight = params_for("1r/s", 2);
    const auto  minute = params_for("1r/m", 1);

    const auto  j = judge({ limit(minute, tat_after(minute, 1)),
                            limit(tight, 0, 3) });

    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_FALSE(j.out[0].never_fits);
    EXPECT_TRUE(j.out[1].never_fits);
    EXPECT_EQ(j.v.closest, 1u) << "before the longer wait of the minute";
    EXPECT_TRUE(j.v.never_fits);
    EXPECT_TRUE(j.v.reject);
    expect_headers(j.v, 2, 2, 0, 0, 0);
}


TEST(Verdict, BlockedClientIsToldToComeBackInAMinute)
{
    const auto  p = blocked_params();
    const auto  j = judge({ limit(p, 0, 5) });

    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_FALSE(j.out[0].never_fits) << "a cost above burst 0 is not meant";
    EXPECT_FALSE(j.v.never_fits);
    EXPECT_EQ(j.out[0].quota, 0u);
    EXPECT_EQ(j.out[0].window_s, 1u);
    expect_headers(j.v, 0, 0, 60, 0, 60);
}


TEST(Verdict, DryRunDescribesTheRejectionButPasses)
{
    const auto  p = params_for("1r/m", 1);
    const auto  taken = params_for("1r/m", 5);

    const auto  j = judge({ limit(taken), limit(p, tat_after(p, 1)) }, true);

    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED_DRY_RUN);
    EXPECT_TRUE(j.v.rejected);
    EXPECT_FALSE(j.v.reject);
    EXPECT_EQ(j.out[1].outcome, RL_VERDICT_OUTCOME_REJECTED_DRY_RUN);
    EXPECT_TRUE(j.out[0].refund) << "all or nothing holds in a dry run too";
    EXPECT_EQ(j.v.window_s, 60u);
    EXPECT_FALSE(j.v.retry_after) << "the request passes";

    /* a degraded rejection in a dry run is a dry run first */
    auto  degraded = limit(p, tat_after(p, 1));
    degraded.degraded = 1;
    const auto  d = judge({ degraded }, true);
    EXPECT_EQ(d.v.status, RL_VERDICT_REJECTED_DRY_RUN);
    EXPECT_EQ(d.out[0].outcome, RL_VERDICT_OUTCOME_REJECTED_DRY_RUN);

    /* closed on failure, in a dry run: counted, not enforced */
    const auto  c = judge({ limit(taken), failed(p, true) }, true);
    EXPECT_EQ(c.v.status, RL_VERDICT_FAILED_CLOSED);
    EXPECT_FALSE(c.v.reject);
    EXPECT_TRUE(c.out[0].refund);
}


TEST(Verdict, DegradedStatuses)
{
    const auto  p = params_for("1r/m", 3);

    auto  allowed = limit(p);
    allowed.degraded = 1;
    auto  j = judge({ allowed });
    EXPECT_EQ(j.v.status, RL_VERDICT_DEGRADED_LOCAL);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_DEGRADED_LOCAL);
    EXPECT_FALSE(j.out[0].refund);

    auto  rejected = limit(p, tat_after(p, 3));
    rejected.degraded = 1;
    j = judge({ limit(p), rejected });
    EXPECT_EQ(j.v.status, RL_VERDICT_DEGRADED_LOCAL_REJECTED);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_PASSED);
    EXPECT_EQ(j.out[1].outcome, RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED);
    EXPECT_TRUE(j.v.reject);
    EXPECT_TRUE(j.out[0].refund);

    /* the status follows the closest: a Redis rejection with a longer wait */
    const auto  minute = params_for("1r/m", 1);
    auto  second = limit(params_for("1r/s", 1),
                         tat_after(params_for("1r/s", 1), 1));
    second.degraded = 1;
    j = judge({ second, limit(minute, tat_after(minute, 1)) });
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED);
}


TEST(Verdict, FailurePrecedence)
{
    const auto  p = params_for("1r/m", 3);

    /* open: passes, keeps its tokens, and the failed limit is not listed */
    auto  j = judge({ limit(p), failed(p, false) });
    EXPECT_EQ(j.v.status, RL_VERDICT_FAILED_OPEN);
    EXPECT_FALSE(j.v.reject);
    EXPECT_EQ(j.out[1].outcome, RL_VERDICT_OUTCOME_FAILED_OPEN);
    EXPECT_FALSE(j.out[0].refund);
    EXPECT_TRUE(j.out[0].listed);
    EXPECT_FALSE(j.out[1].listed);
    EXPECT_EQ(j.v.closest, 0u);
    EXPECT_FALSE(j.v.retry_after);

    /* closed: rejects and gives back what the others took */
    j = judge({ limit(p), failed(p, true) });
    EXPECT_EQ(j.v.status, RL_VERDICT_FAILED_CLOSED);
    EXPECT_TRUE(j.v.reject);
    EXPECT_FALSE(j.v.rejected);
    EXPECT_EQ(j.out[1].outcome, RL_VERDICT_OUTCOME_FAILED_CLOSED);
    EXPECT_TRUE(j.out[0].refund);
    EXPECT_FALSE(j.v.retry_after) << "no limit said when to retry";
    EXPECT_EQ(j.v.window_s, 60u);

    /* closed over open, open over degraded, a rejection over all */
    j = judge({ failed(p, false), failed(p, true) });
    EXPECT_EQ(j.v.status, RL_VERDICT_FAILED_CLOSED);
    EXPECT_EQ(j.v.closest, RL_VERDICT_NO_LIMIT);

    auto  degraded = limit(p);
    degraded.degraded = 1;
    j = judge({ degraded, failed(p, false) });
    EXPECT_EQ(j.v.status, RL_VERDICT_FAILED_OPEN);

    j = judge({ failed(p, true), limit(p, tat_after(p, 3)) });
    EXPECT_EQ(j.v.status, RL_VERDICT_REJECTED);
    EXPECT_TRUE(j.v.reject);
    EXPECT_EQ(j.v.closest, 1u);
    EXPECT_TRUE(j.v.retry_after);

    /* a limit that failed after it had been decided counts as failed */
    auto  both = limit(p, tat_after(p, 3));
    both.failed = 1;
    j = judge({ both });
    EXPECT_EQ(j.v.status, RL_VERDICT_FAILED_OPEN);
    EXPECT_EQ(j.out[0].outcome, RL_VERDICT_OUTCOME_FAILED_OPEN);
}


TEST(Verdict, NoLimitDecided)
{
    const auto  j = judge({});

    EXPECT_EQ(j.v.status, RL_VERDICT_PASSED);
    EXPECT_EQ(j.v.closest, RL_VERDICT_NO_LIMIT);
    EXPECT_FALSE(j.v.reject);
}

}  // namespace
