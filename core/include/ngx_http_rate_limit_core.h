/*
 * The C face of the C++ core. Plain structs and functions only: no nginx
 * headers, and no exception ever crosses this boundary.
 */

#ifndef _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/*
 * The C++ definitions promise never to throw; C++17 makes that part of the
 * function type, so the declarations must say it too.  C sees nothing.
 */
#ifdef __cplusplus
#define NGX_HTTP_RATE_LIMIT_NOEXCEPT    noexcept
#else
#define NGX_HTTP_RATE_LIMIT_NOEXCEPT
#endif


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_HTTP_RATE_LIMIT_OK          0
#define NGX_HTTP_RATE_LIMIT_EINVAL      1

/* the room a caller leaves for an error message */
#define NGX_HTTP_RATE_LIMIT_ERR_LEN     128

/* keys longer than this are replaced by their hash */
#define NGX_HTTP_RATE_LIMIT_KEY_MAX     256

/* '#' followed by 40 hex digits of SHA-1 */
#define NGX_HTTP_RATE_LIMIT_HASHED_LEN  41

#define NGX_HTTP_RATE_LIMIT_SHA1_HEX    40

/* one token per microsecond: beyond it the interval has no resolution */
#define NGX_HTTP_RATE_LIMIT_MAX_PER_SEC 1000000


/* "N r/PERIOD": count tokens are refilled over period_ms */
typedef struct {
    uint64_t  count;
    uint64_t  period_ms;
} ngx_http_rate_limit_rate_t;


/* a bucket's fixed parameters, derived once from rate and burst */
typedef struct {
    double    interval_us;        /* microseconds to refill one token */
    uint64_t  burst;              /* the bucket's capacity, in tokens */
} ngx_http_rate_limit_params_t;


typedef struct {
    int       allowed;
    int64_t   tat_us;             /* the state to store when allowed */
    uint64_t  remaining;          /* whole tokens left after this request */
    int64_t   retry_after_us;     /* when rejected: wait until cost fits */
    int64_t   reset_us;           /* until the bucket is full again */
} ngx_http_rate_limit_decision_t;


/*
 * Parses "100r/m", "10r/s", "5r/30s", "1r/d", "3r/500ms".  The period
 * units are ms, s, m, h and d, with an optional whole multiplier.  On error
 * writes a message naming the problem into err (errlen bytes, NUL ended).
 */
int ngx_http_rate_limit_parse_rate(const char *text, size_t len,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Derives the bucket parameters; burst 0 means "the count in rate".
 * Rejects rates faster than NGX_HTTP_RATE_LIMIT_MAX_PER_SEC and buckets
 * whose full refill would not fit the arithmetic.
 */
int ngx_http_rate_limit_make_params(const ngx_http_rate_limit_rate_t *rate,
    uint64_t burst, ngx_http_rate_limit_params_t *params, char *err,
    size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * GCRA token bucket.  tat_us is the stored theoretical arrival time, 0 for
 * a key never seen (a full bucket).  The caller stores d->tat_us only when
 * d->allowed.  The same arithmetic runs in the Redis script.  The interval
 * counts as whole microseconds (rounded half up), so exactly burst tokens
 * fit at one instant; a cost above burst is always rejected, with
 * retry_after_us = reset_us + one interval.
 */
void ngx_http_rate_limit_decide(const ngx_http_rate_limit_params_t *params,
    int64_t tat_us, int64_t now_us, uint64_t cost,
    ngx_http_rate_limit_decision_t *d)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* gives back cost tokens taken by an allowed decision: returns the new tat */
int64_t ngx_http_rate_limit_refund(const ngx_http_rate_limit_params_t *params,
    int64_t tat_us, int64_t now_us, uint64_t cost)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Writes the key as stored: itself when it is at most
 * NGX_HTTP_RATE_LIMIT_KEY_MAX bytes and does not start with '#', else '#'
 * and its SHA-1 in hex.  out must hold NGX_HTTP_RATE_LIMIT_KEY_MAX bytes.
 * Returns the length written.
 */
size_t ngx_http_rate_limit_encode_key(const unsigned char *key, size_t len,
    unsigned char *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* SHA-1 of data in lower case hex, NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1 bytes */
void ngx_http_rate_limit_sha1_hex(const unsigned char *data, size_t len,
    char *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The Lua decision script for Redis and its SHA-1.  KEYS are the bucket
 * keys; ARGV holds, for each key, interval_us, burst and cost.  The reply
 * is an array: the overall verdict (1 allowed, 0 rejected), then for each
 * key allowed, remaining, retry_after_us and reset_us.  No key is written
 * unless every key allows.
 */
const char *ngx_http_rate_limit_script(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *ngx_http_rate_limit_script_sha1(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_ */
