
/*
 * The verdict of a request: from what each of its limits decided (or
 * failed to), the all-or-nothing outcome, the limit closest to rejection,
 * the local tokens to give back and the numbers of the headers.  One pure
 * function: no I/O, no clock, no allocation, and no exception crosses it.
 *
 * Its names start with rl_verdict_, not the nginx module's
 * ngx_http_rate_limit_: the reader of a call knows on which side of the C
 * and C++ boundary it lands (issue 9).  The bucket types it reads are the
 * core's older ones, from ngx_http_rate_limit_core.h.
 */

#ifndef _RATE_LIMIT_VERDICT_H_INCLUDED_
#define _RATE_LIMIT_VERDICT_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"


#ifdef __cplusplus
extern "C" {
#endif


/*
 * The values of $rate_limit_status; the module's own enum takes them, so
 * that the two cannot drift apart.  0 is the module's "not limited".
 */
typedef enum {
    RL_VERDICT_PASSED = 1,
    RL_VERDICT_REJECTED,
    RL_VERDICT_REJECTED_DRY_RUN,
    RL_VERDICT_FAILED_OPEN,
    RL_VERDICT_FAILED_CLOSED,
    RL_VERDICT_DEGRADED_LOCAL,
    RL_VERDICT_DEGRADED_LOCAL_REJECTED
} rl_verdict_status_e;


/* what one limit decided for the request, as the metrics count it */
typedef enum {
    RL_VERDICT_OUTCOME_PASSED = 0,
    RL_VERDICT_OUTCOME_REJECTED,
    RL_VERDICT_OUTCOME_REJECTED_DRY_RUN,
    RL_VERDICT_OUTCOME_FAILED_OPEN,
    RL_VERDICT_OUTCOME_FAILED_CLOSED,
    RL_VERDICT_OUTCOME_DEGRADED_LOCAL,
    RL_VERDICT_OUTCOME_DEGRADED_LOCAL_REJECTED,
    RL_VERDICT_OUTCOMES,
    /* left unasked, as another limit rejected first: counted nowhere */
    RL_VERDICT_OUTCOME_NONE = RL_VERDICT_OUTCOMES
} rl_verdict_outcome_e;


/* rl_verdict_t.closest when no limit was decided */
#define RL_VERDICT_NO_LIMIT  ((size_t) -1)


/*
 * One limit of the request, as it stands once every answer is in.  Flags
 * are whole bytes, not bit-fields: the verdict runs on every request, and
 * a bit costs a read-modify-write at each store.
 */
typedef struct {
    /* in force: a per-client limit, or this node's share while degraded */
    ngx_http_rate_limit_params_t    params;
    ngx_http_rate_limit_decision_t  decision;   /* when decided */
    uint64_t                        cost;
    unsigned char                   decided;
    unsigned char                   failed;     /* on_failure decides */
    unsigned char                   closed;     /* on_failure=closed */
    /* decided locally while Redis is unreachable */
    unsigned char                   degraded;
    unsigned char                   taken;      /* took local tokens */
} rl_verdict_limit_t;


typedef struct {
    rl_verdict_outcome_e            outcome;
    unsigned char                   refund;     /* give its tokens back */
    unsigned char                   never_fits; /* see rl_verdict_judge() */
    /* in RateLimit-Policy: all but a failed one, which enforces nothing */
    unsigned char                   listed;
    uint64_t                        quota;      /* q, when listed */
    uint64_t                        window_s;   /* w, when listed */
} rl_verdict_limit_out_t;


typedef struct {
    rl_verdict_status_e             status;
    unsigned char                   rejected;   /* by a limit, dry run or
                                                   not */
    unsigned char                   reject;     /* answer with the
                                                   location's status */
    /* of closest: no t, no X-RateLimit-Reset, no Retry-After */
    unsigned char                   never_fits;
    unsigned char                   retry_after;    /* send Retry-After */
    /* the limit the RateLimit and X-RateLimit-* headers describe */
    size_t                          closest;
    uint64_t                        remaining;  /* r, X-RateLimit-Remaining */
    uint64_t                        limit;      /* X-RateLimit-Limit */
    uint64_t                        window_s;   /* t */
    uint64_t                        reset_s;    /* X-RateLimit-Reset */
    uint64_t                        retry_after_s;
} rl_verdict_t;


/*
 * Judges the n limits of a request, in the order of their lines, into *v
 * and out[0..n-1].  With dry_run a rejection is counted and described but
 * the request passes.  A limit never fits when it rejected a cost above
 * its burst (blocked clients aside: they are told to retry in a minute).
 */
void rl_verdict_judge(const rl_verdict_limit_t *limits, size_t n,
    int dry_run, rl_verdict_t *v, rl_verdict_limit_out_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RATE_LIMIT_VERDICT_H_INCLUDED_ */
