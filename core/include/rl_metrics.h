
/*
 * The text that rate_limit_metrics serves: Prometheus's text exposition
 * format 0.0.4, written from plain data the host gathers (each zone's
 * store counters, the Redis clients' shared counters, the age of the
 * PostgreSQL sync).  The core does no I/O: the host sends the text.
 *
 * Names start with rl_metrics_.  No exception crosses this boundary.
 */

#ifndef _RL_METRICS_H_INCLUDED_
#define _RL_METRICS_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rl_api.h"
#include "rl_redis.h"
#include "rl_store.h"


#ifdef __cplusplus
extern "C" {
#endif


/* a zone of nginx.conf, as its store counts it */
typedef struct {
    const unsigned char           *name;
    size_t                         name_len;
    rl_store_stats_t               stats;
} rl_metrics_zone_t;


typedef struct {
    const rl_metrics_zone_t       *zones;     /* in the order of nginx.conf */
    size_t                         nzones;
    /* NULL: no rate_limit_redis, and no nginx_rate_limit_redis_* family */
    const rl_redis_shared_t       *redis;
    /* 0: no PostgreSQL sync has succeeded yet, and no sync age */
    int                            pg_synced;
    int64_t                        pg_sync_age_s;
} rl_metrics_t;


/*
 * The exposition of m, in memory from a (not NUL ended: *len is its
 * length); NULL when a gives no memory, or m is not whole.  The Redis
 * counters are read once, so that their families agree with each other.
 */
unsigned char *rl_metrics_text(const rl_metrics_t *m,
    const rl_api_alloc_t *a, size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_METRICS_H_INCLUDED_ */
