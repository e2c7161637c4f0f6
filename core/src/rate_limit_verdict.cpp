/*
 * The verdict of a request (see rate_limit_verdict.h): what the nginx
 * module used to work out inline once every limit had answered, now one
 * pure function that the unit tests drive without nginx.
 */

#include <rate_limit_verdict.h>

#include <algorithm>
#include <cstdint>


namespace {

/*
 * A request whose cost exceeds the burst of its limit is rejected however
 * long the client waits: its limit (a per-client one, or the burst divided
 * among the nodes while Redis is unreachable) holds fewer tokens than the
 * location takes.  Blocked clients are not meant here: they are told to
 * come back in a minute, when an operator may have lifted the block.
 */
bool never_fits(const rl_verdict_limit_t &limit) noexcept
{
    return limit.decided
           && !limit.decision.allowed
           && !ngx_http_rate_limit_params_blocked(&limit.params)
           && limit.cost > limit.params.burst;
}


rl_verdict_outcome_e outcome_of(const rl_verdict_limit_t &limit,
    bool dry_run) noexcept
{
    if (limit.failed) {
        return limit.closed ? RL_VERDICT_OUTCOME_FAILED_CLOSED
                            : RL_VERDICT_OUTCOME_FAILED_OPEN;
    }

    if (!limit.decided) {
        return RL_VERDICT_OUTCOME_NONE;
    }

    if (!limit.decision.allowed) {
        return dry_run ? RL_VERDICT_OUTCOME_REJECTED_DRY_RUN
               : limit.degraded ? RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED
               : RL_VERDICT_OUTCOME_REJECTED;
    }

    return limit.degraded ? RL_VERDICT_OUTCOME_DEGRADED_LOCAL
                          : RL_VERDICT_OUTCOME_PASSED;
}


/*
 * The limit that RateLimit and the X-RateLimit-* headers describe: on a
 * rejection the rejecting limit that asks for the longest wait, one that
 * can never fit first; otherwise the one with the fewest tokens left.
 */
size_t closest_of(const rl_verdict_limit_t *limits,
    const rl_verdict_limit_out_t *out, size_t n, bool rejected) noexcept
{
    size_t  closest = RL_VERDICT_NO_LIMIT;

    for (size_t i = 0; i < n; i++) {
        const rl_verdict_limit_t  &limit = limits[i];

        if (!limit.decided || (rejected && limit.decision.allowed)) {
            continue;
        }

        if (closest == RL_VERDICT_NO_LIMIT) {
            closest = i;
            continue;
        }

        const rl_verdict_limit_t  &best = limits[closest];
        const bool                 never = out[i].never_fits;
        const bool                 best_never = out[closest].never_fits;

        if ((rejected && never > best_never)
            || (rejected && never == best_never
                && limit.decision.retry_after_us
                   > best.decision.retry_after_us)
            || (!rejected
                && limit.decision.remaining < best.decision.remaining))
        {
            closest = i;
        }
    }

    return closest;
}


/*
 * "q" and "w" of RateLimit-Policy as enforced for this request.  The
 * window is the whole seconds a full refill takes, at least one, and the
 * quota what the window admits at length: the burst, or what the rate
 * refills in the window when that is more, as a burst refilled in a
 * fraction of the one second advertised is refilled several times in it.
 * A blocked client has a quota of 0.
 */
void policy_of(const ngx_http_rate_limit_params_t &params,
    rl_verdict_limit_out_t &out) noexcept
{
    if (ngx_http_rate_limit_params_blocked(&params)) {
        out.quota = 0;
        out.window_s = 1;
        return;
    }

    const uint64_t  w = std::max<uint64_t>(
        static_cast<uint64_t>(params.interval_us * params.burst + 999999)
        / 1000000, 1);

    /* the margin keeps 1e6 / (5e5 / 3) from flooring to 5 */
    const auto  q = static_cast<uint64_t>(w * 1e6 / params.interval_us
                                          + 1e-6);

    out.window_s = w;
    out.quota = std::max(q, params.burst);
}


/*
 * The draft's effective window "t", in whole seconds rounded up and at
 * least one: the time within which the client can use no more than the
 * tokens left.  On a rejection, until the request's cost fits, as
 * Retry-After says.  Otherwise until a request of the same cost more than
 * those tokens allow fits: until cost more tokens have come in, or the
 * bucket is full, whichever is first.
 */
uint64_t window_s(const rl_verdict_limit_t &limit, bool rejected) noexcept
{
    const ngx_http_rate_limit_decision_t  &d = limit.decision;
    int64_t                                wait_us;

    if (rejected) {
        wait_us = d.retry_after_us;

    } else {
        /*
         * reset_us is the time the missing tokens take, the fraction of
         * one included: the last of them come in last
         */
        wait_us = d.reset_us;

        if (d.remaining + limit.cost < limit.params.burst) {
            const uint64_t  later = limit.params.burst - d.remaining
                                    - limit.cost;

            wait_us -= static_cast<int64_t>(later)
                       * ngx_http_rate_limit_token_us(&limit.params);
        }
    }

    return wait_us > 1000000 ? static_cast<uint64_t>(wait_us + 999999)
                               / 1000000
                             : 1;
}



/* the outcomes of a request seen so far, one bit each */
constexpr unsigned bit(rl_verdict_outcome_e outcome) noexcept
{
    return 1u << outcome;
}

constexpr unsigned  rejected_bits = bit(RL_VERDICT_OUTCOME_REJECTED)
                        | bit(RL_VERDICT_OUTCOME_REJECTED_DRY_RUN)
                        | bit(RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED);
constexpr unsigned  degraded_bits = bit(RL_VERDICT_OUTCOME_DEGRADED_LOCAL)
                        | bit(RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED);

}  // namespace


/*
 * Every field of *v and out[] is written: the numbers that do not apply
 * (no closest, a cost that never fits, no Retry-After) are 0.
 */
extern "C" void
rl_verdict_judge(const rl_verdict_limit_t *limits, size_t n, int dry_run,
    rl_verdict_t *v, rl_verdict_limit_out_t *out) noexcept
{
    unsigned  seen = 0;

    for (size_t i = 0; i < n; i++) {
        const rl_verdict_limit_t  &limit = limits[i];

        out[i].outcome = outcome_of(limit, dry_run);
        out[i].refund = 0;
        out[i].never_fits = never_fits(limit);
        out[i].listed = !limit.failed;

        /* NONE has a bit of its own too, which nothing reads */
        seen |= bit(out[i].outcome);

        if (out[i].listed) {
            policy_of(limit.params, out[i]);

        } else {
            out[i].quota = 0;
            out[i].window_s = 0;
        }
    }

    const bool  rejected = seen & rejected_bits;
    const bool  failed_closed = seen & bit(RL_VERDICT_OUTCOME_FAILED_CLOSED);

    /* all or nothing: a request that does not pass takes no local token */
    if (rejected || failed_closed) {
        for (size_t i = 0; i < n; i++) {
            out[i].refund = limits[i].taken;
        }
    }

    v->closest = closest_of(limits, out, n, rejected);
    v->rejected = rejected;
    v->reject = (rejected || failed_closed) && !dry_run;

    if (rejected) {
        v->status = dry_run ? RL_VERDICT_REJECTED_DRY_RUN
                    : limits[v->closest].degraded
                    ? RL_VERDICT_DEGRADED_LOCAL_REJECTED
                    : RL_VERDICT_REJECTED;

    } else if (failed_closed) {
        v->status = RL_VERDICT_FAILED_CLOSED;

    } else if (seen & bit(RL_VERDICT_OUTCOME_FAILED_OPEN)) {
        v->status = RL_VERDICT_FAILED_OPEN;

    } else if (seen & degraded_bits) {
        v->status = RL_VERDICT_DEGRADED_LOCAL;

    } else {
        v->status = RL_VERDICT_PASSED;
    }

    v->never_fits = 0;
    v->retry_after = 0;
    v->remaining = 0;
    v->limit = 0;
    v->window_s = 0;
    v->reset_s = 0;
    v->retry_after_s = 0;

    if (v->closest == RL_VERDICT_NO_LIMIT) {
        return;
    }

    const rl_verdict_limit_t  &closest = limits[v->closest];

    v->never_fits = out[v->closest].never_fits;
    v->remaining = closest.decision.remaining;
    v->limit = closest.params.burst;

    /* the times a client would wait for: none helps a cost that never fits */
    if (v->never_fits) {
        return;
    }

    v->window_s = window_s(closest, rejected);
    v->reset_s = static_cast<uint64_t>(closest.decision.reset_us + 999999)
                 / 1000000;
    v->retry_after = v->reject && rejected;

    if (v->retry_after) {
        v->retry_after_s = window_s(closest, true);
    }
}
