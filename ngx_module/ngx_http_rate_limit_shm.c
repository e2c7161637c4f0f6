
/*
 * A zone's shared memory: nginx creates it, and the core's store
 * (rl_store.h) lays itself out in one block of it.  The store's lock is
 * the zone's slab-pool mutex, which nginx's master force-unlocks when a
 * worker dies holding it.
 */


#include "ngx_http_rate_limit_module.h"

#include <openssl/rand.h>


/* pages the slab keeps beside the store, for its own bookkeeping */
#define NGX_HTTP_RATE_LIMIT_SLAB_PAGES  2


static void ngx_http_rate_limit_store_lock(void *data);
static void ngx_http_rate_limit_store_unlock(void *data);
static ngx_int_t ngx_http_rate_limit_store_policy(
    ngx_http_rate_limit_zone_t *zone, ngx_log_t *log);


/* monotonic, as nginx's timers: a wall clock stepping back cannot lock out */
int64_t
ngx_http_rate_limit_now_us(void)
{
    return (int64_t) ngx_current_msec * 1000;
}


ngx_int_t
ngx_http_rate_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_zone_t  *ozone = data;

    void                        *memory;
    size_t                       bytes;
    u_char                       seed[RL_STORE_SEED_LEN];
    ngx_http_rate_limit_zone_t  *zone;

    zone = shm_zone->data;

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    zone->core.store.lock = ngx_http_rate_limit_store_lock;
    zone->core.store.unlock = ngx_http_rate_limit_store_unlock;
    zone->core.store.lock_data = &zone->shpool->mutex;

    if (ozone) {
        /* a reload keeps the buckets; the rejections cached may no longer
         * hold under the new limits */
        zone->core.store.shared = ozone->core.store.shared;
        rl_store_limits_changed(&zone->core.store);
        return ngx_http_rate_limit_store_policy(zone, shm_zone->shm.log);
    }

    if (shm_zone->shm.exists) {
        zone->core.store.shared = zone->shpool->data;
        return NGX_OK;
    }

    if (zone->shpool->pfree <= NGX_HTTP_RATE_LIMIT_SLAB_PAGES) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "rate_limit_zone \"%V\" is too small",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    bytes = (zone->shpool->pfree - NGX_HTTP_RATE_LIMIT_SLAB_PAGES)
            * ngx_pagesize;

    memory = ngx_slab_alloc(zone->shpool, bytes);

    /* clients pick the keys: the hash must be one they cannot predict */
    if (memory == NULL || RAND_bytes(seed, sizeof(seed)) != 1) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "rate_limit_zone \"%V\": cannot lay its store out",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    zone->core.store.shared = rl_store_layout(memory, bytes, seed);

    if (zone->core.store.shared == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "rate_limit_zone \"%V\" is too small",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    zone->shpool->data = zone->core.store.shared;

    return ngx_http_rate_limit_store_policy(zone, shm_zone->shm.log);
}


static void
ngx_http_rate_limit_store_lock(void *data)
{
    ngx_shmtx_lock((ngx_shmtx_t *) data);
}


static void
ngx_http_rate_limit_store_unlock(void *data)
{
    ngx_shmtx_unlock((ngx_shmtx_t *) data);
}


/*
 * The policy file's entries replace those of the last configuration, in
 * the master, before the new workers start: a zone without room for them
 * fails the start or the reload, and the running workers keep the old.
 */
static ngx_int_t
ngx_http_rate_limit_store_policy(ngx_http_rate_limit_zone_t *zone,
    ngx_log_t *log)
{
    size_t  n;

    if (rl_conf_store_policy(zone->conf, &zone->core, &n) != RL_STORE_OK) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "rate_limit_zone \"%V\" has no room for the %uz "
                      "limits of the policy file: give the zone more memory",
                      &zone->name, n);
        return NGX_ERROR;
    }

    return NGX_OK;
}
