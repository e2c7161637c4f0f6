
/*
 * The directive of the per-client limits synced from PostgreSQL, and the
 * glue that runs the core's sync (rl_pg.h) in each worker: one worker per
 * node syncs, by the lease the core keeps in this zone's shared memory.
 */


#include "ngx_http_rate_limit_module.h"


#define NGX_HTTP_RATE_LIMIT_SYNC_INTERVAL     10000


static ngx_int_t ngx_http_rate_limit_sync_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


static ngx_http_rate_limit_pg_host_t  ngx_http_rate_limit_sync_host;


char *
ngx_http_rate_limit_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    ngx_str_t   *value, name;
    ngx_uint_t   i;

    if (rmcf->pg_shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "env:", 4) == 0) {
        rmcf->pg_conninfo_env.data = value[1].data + 4;
        rmcf->pg_conninfo_env.len = value[1].len - 4;

        if (rmcf->pg_conninfo_env.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid connection string \"%V\" in \"%V\" "
                               "directive: no variable name", &value[1],
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

    } else {
        rmcf->pg_conninfo = value[1];
    }

    rmcf->pg_interval = NGX_HTTP_RATE_LIMIT_SYNC_INTERVAL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {

            if (ngx_http_rate_limit_conf_msec(cf, cmd, &value[i], 8,
                                              &rmcf->pg_interval)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_http_rate_limit_conf_unknown_secret(cf, cmd, &value[i],
                                                "; quote a connection string "
                                                "that holds spaces");
        return NGX_CONF_ERROR;
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
    char                            err[RL_PG_ERR_LEN];
    ngx_uint_t                      i;
    rl_pg_zone_t                   *zones;
    rl_pg_sync_config_t             config;
    ngx_http_rate_limit_zone_t    **zone;
    ngx_http_rate_limit_pg_host_t  *host = &ngx_http_rate_limit_sync_host;

    if (rmcf->pg_conninfo_env.len) {
        rmcf->pg_conninfo.data = (u_char *) getenv(
                                     (char *) rmcf->pg_conninfo_env.data);

        if (rmcf->pg_conninfo.data == NULL) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "rate_limit_postgres: environment variable \"%V\" "
                          "holding the connection string is not set; add "
                          "\"env %V;\" to nginx.conf",
                          &rmcf->pg_conninfo_env, &rmcf->pg_conninfo_env);
            return NGX_OK;
        }

        rmcf->pg_conninfo.len = ngx_strlen(rmcf->pg_conninfo.data);
    }

    zones = ngx_palloc(cycle->pool,
                       (rmcf->zones.nelts + 1) * sizeof(rl_pg_zone_t));
    if (zones == NULL) {
        return NGX_ERROR;
    }

    zone = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        zones[i].name = zone[i]->name.data;
        zones[i].name_len = zone[i]->name.len;
        zones[i].store = zone[i]->core.store;
    }

    config.conninfo = (char *) rmcf->pg_conninfo.data;
    config.interval_ms = rmcf->pg_interval;
    config.zones = zones;
    config.nzones = rmcf->zones.nelts;
    config.lease = rmcf->pg_lease;
    config.pid = ngx_pid;
    config.preferred = (ngx_worker == 0);

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
