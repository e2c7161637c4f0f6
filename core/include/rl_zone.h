
/*
 * A rate_limit_zone as the core reads it: its limit, its backend and
 * failure policy, the texts of its Redis script arguments, its store.  A
 * plain struct, in memory the host allocates with its configuration, so
 * that the hot path reads it without a call.  The host fills it from what
 * the core's configuration parser gives, and keeps its own data of the
 * zone (nginx's key, its shared memory) behind host.
 *
 * Names start with rl_zone_.  No exception crosses this boundary.
 */

#ifndef _RL_ZONE_H_INCLUDED_
#define _RL_ZONE_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rl_store.h"


#ifdef __cplusplus
extern "C" {
#endif


typedef enum {
    RL_ZONE_BACKEND_UNSET = 0,      /* until the configuration is read */
    RL_ZONE_BACKEND_LOCAL,
    RL_ZONE_BACKEND_REDIS
} rl_zone_backend_e;


/* what a Redis zone does while Redis cannot answer */
typedef enum {
    RL_ZONE_FAILURE_OPEN = 1,
    RL_ZONE_FAILURE_CLOSED,
    RL_ZONE_FAILURE_LOCAL
} rl_zone_failure_e;


/* "open", "closed" or "local", as nginx.conf spells them */
const char *rl_zone_failure_name(rl_zone_failure_e on_failure)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* the longest decimal of a uint64_t or an int64_t */
#define RL_ZONE_DECIMAL_LEN  20

/*
 * A limit's arguments of the Redis script, as text: formatted once for a
 * zone, and for a request only when a per-client limit applies.
 */
typedef struct {
    unsigned char                interval_len;   /* whole microseconds */
    unsigned char                burst_len;
    unsigned char                token_code_len;
    char                         interval[RL_ZONE_DECIMAL_LEN];
    char                         burst[RL_ZONE_DECIMAL_LEN];
    char                         token_code[RL_ZONE_DECIMAL_LEN];
} rl_zone_texts_t;

/*
 * The interval as the script counts it, rounded as the core rounds it, and
 * the token code that the script stores with the TAT, so that a changed
 * limit converts the TAT.
 */
void rl_zone_texts(const ngx_http_rate_limit_params_t *params,
    rl_zone_texts_t *texts)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


typedef struct {
    const unsigned char         *name;
    size_t                       name_len;

    /* the zone's own limit, as written and as the arithmetic takes it */
    ngx_http_rate_limit_rate_t   rate;
    ngx_http_rate_limit_params_t params;
    rl_zone_texts_t              texts;

    rl_zone_backend_e            backend;
    rl_zone_failure_e            on_failure;

    /* "<prefix>:<zone>:", for a Redis zone */
    const unsigned char         *redis_prefix;
    size_t                       redis_prefix_len;

    /* the process's handle of the zone's shared store */
    rl_store_t                   store;

    /* the entries the policy file gives the zone */
    size_t                       policy_entries;

    /* said once a process: the store had no room for a new bucket */
    unsigned char                full_logged;

    void                        *host;
} rl_zone_t;


#ifdef __cplusplus
}
#endif


#endif /* _RL_ZONE_H_INCLUDED_ */
