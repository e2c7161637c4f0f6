
/*
 * The directive of the per-client limits synced from PostgreSQL, and the
 * glue that runs the core's sync (rl_pg.h) in each worker: one worker per
 * node syncs, by the lease the core keeps in this zone's shared memory.
 */


#include "ngx_http_rate_limit_module.h"


static ngx_int_t ngx_http_rate_limit_sync_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


static ngx_http_rate_limit_pg_host_t  ngx_http_rate_limit_sync_host;


char *
ngx_http_rate_limit_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    char              *rv;
    ngx_str_t          name;
    rl_conf_result_t   result;

    rv = ngx_http_rate_limit_conf_read(cf, &result);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    ngx_str_set(&name, "ngx_http_rate_limit_postgres");

    rmcf->pg_shm_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                              &ngx_http_rate_limit_module);
    if (rmcf->pg_shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    rmcf->pg_shm_zone->init = ngx_http_rate_limit_sync_init_zone;
    rmcf->pg_shm_zone->data = rmcf;

    return NGX_CONF_OK;
}


/* a reload keeps the sync state, so it goes on from where it was */
static ngx_int_t
ngx_http_rate_limit_sync_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_main_conf_t  *ormcf = data;

    void                             *lease;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = shm_zone->data;

    if (ormcf) {
        rmcf->pg_lease = ormcf->pg_lease;
        rmcf->pg_shpool = ormcf->pg_shpool;
        return NGX_OK;
    }

    rmcf->pg_shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        rmcf->pg_lease = rmcf->pg_shpool->data;
        return NGX_OK;
    }

    lease = ngx_slab_alloc(rmcf->pg_shpool, rl_pg_lease_size());
    if (lease == NULL) {
        return NGX_ERROR;
    }

    rmcf->pg_lease = rl_pg_lease_init(lease);
    rmcf->pg_shpool->data = rmcf->pg_lease;

    return NGX_OK;
}


ngx_int_t
ngx_http_rate_limit_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    int                             rc;
    char                            err[RL_PG_ERR_LEN];
    rl_conf_process_t               process;
    rl_pg_sync_config_t             config;
    ngx_http_rate_limit_pg_host_t  *host = &ngx_http_rate_limit_sync_host;

    ngx_http_rate_limit_conf_process(cycle, &process);

    /* without its connection string, the sync does not start */
    rc = rl_conf_pg_sync_config(rmcf->conf, &process, &config);
    if (rc != RL_CONF_OK) {
        return (rc == RL_CONF_DECLINED) ? NGX_OK : NGX_ERROR;
    }

    config.lease = rmcf->pg_lease;

    ngx_memzero(host, sizeof(ngx_http_rate_limit_pg_host_t));
    ngx_http_rate_limit_pg_host_init(host, cycle->log, rmcf->pg_shpool);

    host->sync = rl_pg_sync_create(&config, &host->adapter, err);

    if (host->sync == NULL) {
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "rate_limit_postgres: cannot start the sync: %s", err);
        ngx_http_rate_limit_pg_host_close(host);
    }

    return NGX_OK;
}


void
ngx_http_rate_limit_sync_exit_process(void)
{
    ngx_http_rate_limit_pg_host_t  *host = &ngx_http_rate_limit_sync_host;

    if (host->sync == NULL) {
        return;
    }

    rl_pg_sync_destroy(host->sync);
    host->sync = NULL;

    ngx_http_rate_limit_pg_host_close(host);
}
