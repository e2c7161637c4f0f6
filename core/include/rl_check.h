
/*
 * The check of one request against its limits: the keys as stored, the
 * limit in force for each (a row, the policy file, the zone's own), the
 * local limits taken all or nothing, the cache of Redis's rejections, the
 * Redis decision, the degraded share while Redis fails, the verdict, the
 * zones' counters, the refunds, the log lines and the headers' text.
 *
 * The host (ngx_module/ngx_http_rate_limit_handler.c) evaluates each
 * limit's key, then: rl_check_init(), rl_check_add() for each limit, and
 * rl_check_decide(), which gives the status, whether to reject and the
 * headers to send; or, when Redis decides, rl_check_finish() gives them
 * once the host's done(data) is called.  Nothing here blocks: a Redis
 * decision ends in a later event.  The bucket API reads a key's tokens
 * through the same object with rl_check_peek() and rl_check_bucket().
 *
 * The object lives in memory the host gives, rl_check_size() bytes, and
 * what more it needs (a long key's hash, Redis's keys) comes from the
 * host's allocator (the request's pool): it lives as long as the request,
 * and nothing here needs freeing.  No heap, no lock beyond the stores'
 * own.  Names start with rl_check_.  No exception
 * crosses this boundary.  Not thread-safe: one request, one thread.
 */

#ifndef _RL_CHECK_H_INCLUDED_
#define _RL_CHECK_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rate_limit_verdict.h"
#include "rl_api.h"
#include "rl_redis.h"
#include "rl_zone.h"


#ifdef __cplusplus
extern "C" {
#endif


#define RL_CHECK_OK                  0
#define RL_CHECK_ERROR              -1      /* out of memory */
/* rl_check_decide(), rl_check_peek(): Redis decides, done() comes later */
#define RL_CHECK_WAIT                1


/* the host's side, the same for every request: a static of the host */
typedef struct {
    /* the clock of the stores, monotonic, in microseconds */
    int64_t                   (*now_us)(void *data);

    /* one line of the request's error log; msg is len bytes, NUL ended */
    void                      (*log)(void *data, int level, const char *msg,
                                     size_t len);
} rl_check_host_t;


typedef struct rl_check_s  rl_check_t;


/* the bytes of an object for up to nlimits limits, its headers' text
 * included: a multiple of 8 */
size_t rl_check_size(size_t nlimits)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Lays an object for up to nlimits limits out in memory, rl_check_size()
 * bytes aligned to 8, which need not be zeroed.  host and alloc are kept
 * (host must outlive the object).  done(data) is called once, from a
 * later event, when a decision that rl_check_decide() or rl_check_peek()
 * left waiting is in; data is also what host's functions get.
 */
rl_check_t *rl_check_init(void *memory, const rl_check_host_t *host,
    const rl_api_alloc_t *alloc, size_t nlimits, void (*done)(void *data),
    void *data)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * One limit of the request: its zone, the cost of a request and the
 * cost's text for the Redis script, and the key as nginx evaluated it
 * (key, cost_text and zone must outlive the object).  An empty key does
 * not limit the request, and is not added.  RL_CHECK_ERROR: out of
 * memory, or more than nlimits limits.
 */
int rl_check_add(rl_check_t *check, rl_zone_t *zone, uint64_t cost,
    const char *cost_text, size_t cost_text_len, const unsigned char *key,
    size_t key_len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* what the location, the request's log and the node say */
typedef struct {
    int                        dry_run;
    int                        headers;          /* send them */
    /*
     * Levels as nginx's ngx_uint_t holds them: a debug_connection log's
     * level has its top bit set, and must still read as the most verbose.
     */
    uintptr_t                  reject_level;     /* of a rejection's line */
    /* the most verbose level the request's log writes: a line above it is
     * not even written out */
    uintptr_t                  log_level;
    /* the live nodes' count, which divides the degraded limits */
    const rl_redis_shared_t   *shared;
} rl_check_conf_t;


/* RateLimit-Policy, RateLimit, X-RateLimit-*, Retry-After */
#define RL_CHECK_HEADERS             6

/* each a length and its bytes, as nginx's ngx_str_t */
typedef struct {
    size_t                     name_len;
    const char                *name;
    size_t                     value_len;
    const unsigned char       *value;
} rl_check_header_t;

typedef struct {
    /* the value of $rate_limit_status, 0 when no limit applied */
    rl_verdict_status_e        status;
    unsigned char              reject;     /* answer with the location's
                                              status */
    size_t                     nheaders;
    rl_check_header_t          headers[RL_CHECK_HEADERS];
} rl_check_result_t;

/*
 * Decides the local limits, then the Redis ones when none rejected, with
 * the worker's client (NULL: none, or no memory for the keys: the Redis
 * limits fail).  RL_CHECK_OK: decided and judged as rl_check_finish()
 * does, *result written; RL_CHECK_WAIT: done() will say, and
 * rl_check_finish() follows then.
 */
int rl_check_decide(rl_check_t *check, rl_redis_client_t *client,
    const rl_check_conf_t *conf, rl_check_result_t *result)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Judges the request once every answer is in: the degraded share for a
 * Redis limit that failed, the verdict, each zone's counters, the tokens
 * given back, the log lines (through the host's log()) and the headers
 * (when conf->headers), all in *result.  With no limit added, status 0
 * and nothing else.
 */
void rl_check_finish(rl_check_t *check, const rl_check_conf_t *conf,
    rl_check_result_t *result)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The request went away (its pool is being freed): a decision in flight
 * is cancelled with client (NULL: the worker destroyed it already, and
 * the decision with it), and done() is never called.
 */
void rl_check_cancel(rl_check_t *check, rl_redis_client_t *client)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* "PASSED", "REJECTED", ...; "" for 0 */
const char *rl_check_status_name(rl_verdict_status_e status, size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The bucket API: the tokens of the one limit added (of cost 0), taking
 * none: a local bucket's now, 0 for a blocked key, else what Redis says
 * to a decision of cost 0.  RL_CHECK_OK or RL_CHECK_WAIT as
 * rl_check_decide(); then rl_check_bucket() writes the reply.
 */
int rl_check_peek(rl_check_t *check, rl_redis_client_t *client)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the limit in force, its source and its tokens (-1 when Redis could not
 * say), as rl_api_bucket() writes them */
int rl_check_bucket(const rl_check_t *check, const rl_api_alloc_t *alloc,
    rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_CHECK_H_INCLUDED_ */
