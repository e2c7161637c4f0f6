
/*
 * Counters shared by every worker, and where their Prometheus text is
 * served.  Per-zone counters live in the zone's store; the node-wide ones
 * (the Redis round trips, circuits and live nodes) in what the core's
 * Redis clients share, in a small zone of its own.  Both survive a
 * reload, as shared memory does.  The core writes the text (rl_metrics.h):
 * this gathers its inputs and sends it.
 */


#include "ngx_http_rate_limit_module.h"

#include <rl_metrics.h>


static ngx_int_t ngx_http_rate_limit_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_rate_limit_metrics_handler(ngx_http_request_t *r);


/* the node-wide counters: always there, and small */
ngx_int_t
ngx_http_rate_limit_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    ngx_str_t  name;

    ngx_str_set(&name, "ngx_http_rate_limit_metrics");

    rmcf->metrics_zone = ngx_shared_memory_add(cf, &name,
                             8 * ngx_pagesize
                             + ngx_align(rl_redis_shared_size(), ngx_pagesize),
                             &ngx_http_rate_limit_module);
    if (rmcf->metrics_zone == NULL) {
        return NGX_ERROR;
    }

    rmcf->metrics_zone->init = ngx_http_rate_limit_metrics_init_zone;
    rmcf->metrics_zone->data = rmcf;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rate_limit_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_main_conf_t  *ormcf = data;

    void                             *memory;
    ngx_slab_pool_t                  *shpool;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = shm_zone->data;

    if (ormcf) {
        rmcf->redis_shared = ormcf->redis_shared;

    } else {
        shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

        if (shm_zone->shm.exists) {
            rmcf->redis_shared = shpool->data;

        } else {
            /* the slab pool aligns it to 8 at least */
            memory = ngx_slab_alloc(shpool, rl_redis_shared_size());
            if (memory == NULL) {
                return NGX_ERROR;
            }

            rmcf->redis_shared = rl_redis_shared_init(memory);
            shpool->data = rmcf->redis_shared;
        }
    }

    return NGX_OK;
}


char *
ngx_http_rate_limit_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_rate_limit_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_rate_limit_metrics_handler(ngx_http_request_t *r)
{
    u_char                            *body;
    size_t                             len;
    uint64_t                           synced;
    ngx_int_t                          rc;
    rl_metrics_t                       m;
    rl_api_alloc_t                     a;
    ngx_http_rate_limit_main_conf_t   *rmcf;

    static ngx_str_t  type = ngx_string("text/plain; version=0.0.4");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);
    a = ngx_http_rate_limit_api_allocator(r->pool);

    if (rl_conf_metrics_zones(rmcf->conf, &a, &m) != RL_CONF_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    m.redis = rl_conf_has_redis(rmcf->conf) ? rmcf->redis_shared : NULL;
    synced = rmcf->pg_lease ? rl_pg_lease_synced_ms(rmcf->pg_lease) : 0;
    m.pg_synced = (synced != 0);
    /* another worker's cached clock may be a little ahead of this one */
    m.pg_sync_age_s = (m.pg_synced && ngx_current_msec > synced)
                      ? (ngx_current_msec - synced) / 1000 : 0;

    body = rl_metrics_text(&m, &a, &len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_send(r, NGX_HTTP_OK, &type, body, len);
}
