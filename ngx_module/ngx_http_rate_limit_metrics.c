
/*
 * Counters shared by every worker, and their Prometheus text exposition.
 * Per-zone counters live in the zone's shared memory; the node-wide ones
 * (the Redis round trips, circuits and live nodes) in what the core's
 * Redis clients share, in a small zone of its own.  Both survive a
 * reload, as shared memory does.
 */


#include "ngx_http_rate_limit_module.h"


static const char  *ngx_http_rate_limit_outcome_names[] = {
    "passed", "rejected", "rejected_dry_run", "failed_open", "failed_closed",
    "degraded_local", "degraded_local_rejected"
};


static ngx_int_t ngx_http_rate_limit_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_rate_limit_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_rate_limit_metrics_redis(u_char *p,
    rl_redis_shared_t *shared);


static rl_redis_shared_t  *ngx_http_rate_limit_metrics_sh;


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

    ngx_http_rate_limit_metrics_sh = rmcf->redis_shared;

    return NGX_OK;
}


/* one decision of one zone */
void
ngx_http_rate_limit_metrics_count(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_outcome_e outcome)
{
    rl_store_count(&zone->store, (rl_verdict_outcome_e) outcome);
}


/* the divisor of degraded limits: never 0, even before any heartbeat */
ngx_uint_t
ngx_http_rate_limit_nodes_live(void)
{
    uint64_t  nodes;

    nodes = rl_redis_shared_nodes(ngx_http_rate_limit_metrics_sh);

    return nodes ? (ngx_uint_t) nodes : 1;
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
    u_char                            *body, *p;
    size_t                             len;
    uint64_t                           cumulative;
    ngx_int_t                          rc;
    ngx_uint_t                         i, o;
    rl_store_stats_t                  *stats;
    rl_redis_latency_t                 latency;
    ngx_http_rate_limit_zone_t       **zones;
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
    zones = rmcf->zones.elts;

    len = 4096 + RL_REDIS_LATENCY_BOUNDS * 96
          + RL_REDIS_ADDRESSES * (4 * RL_REDIS_ADDRESS_LEN + 256);

    for (i = 0; i < rmcf->zones.nelts; i++) {
        len += 16 * (zones[i]->name.len + 128);
    }

    body = ngx_pnalloc(r->pool, len);
    stats = ngx_palloc(r->pool, rmcf->zones.nelts * sizeof(rl_store_stats_t));

    if (body == NULL || stats == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < rmcf->zones.nelts; i++) {
        rl_store_stats(&zones[i]->store, &stats[i]);
    }

    p = ngx_cpymem(body,
        "# HELP nginx_rate_limit_requests_total Requests a zone's limit "
        "applied to.\n"
        "# TYPE nginx_rate_limit_requests_total counter\n",
        sizeof("# HELP nginx_rate_limit_requests_total Requests a zone's "
               "limit applied to.\n"
               "# TYPE nginx_rate_limit_requests_total counter\n") - 1);

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_requests_total{zone=\"%V\"} %uL\n",
                        &zones[i]->name, stats[i].requests);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_decisions_total Decisions of a zone, by "
        "outcome.\n"
        "# TYPE nginx_rate_limit_decisions_total counter\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        for (o = 0; o < NGX_HTTP_RATE_LIMIT_OUTCOMES; o++) {
            p = ngx_sprintf(p, "nginx_rate_limit_decisions_total{zone=\"%V\","
                            "outcome=\"%s\"} %uL\n", &zones[i]->name,
                            ngx_http_rate_limit_outcome_names[o],
                            stats[i].outcomes[o]);
        }
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_cached_rejections_total Rejections "
        "served from the zone's cache of what Redis rejected, with no "
        "round trip.\n"
        "# TYPE nginx_rate_limit_cached_rejections_total counter\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_cached_rejections_total"
                        "{zone=\"%V\"} %uL\n",
                        &zones[i]->name, stats[i].cached);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_dynamic_limits Per-client limits from "
        "PostgreSQL held in a zone.\n"
        "# TYPE nginx_rate_limit_dynamic_limits gauge\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_dynamic_limits{zone=\"%V\"} %uL\n",
                        &zones[i]->name, stats[i].rows);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_zone_memory_bytes A zone's shared memory, "
        "used and free.\n"
        "# TYPE nginx_rate_limit_zone_memory_bytes gauge\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_zone_memory_bytes{zone=\"%V\","
                        "state=\"used\"} %uL\n"
                        "nginx_rate_limit_zone_memory_bytes{zone=\"%V\","
                        "state=\"free\"} %uL\n",
                        &zones[i]->name,
                        stats[i].bytes - stats[i].free_slots
                                         * stats[i].slot_bytes,
                        &zones[i]->name,
                        stats[i].free_slots * stats[i].slot_bytes);
    }

    if (rmcf->redis) {
        p = ngx_http_rate_limit_metrics_redis(p, rmcf->redis_shared);
        rl_redis_shared_latency(rmcf->redis_shared, &latency);

        p = ngx_sprintf(p,
            "# HELP nginx_rate_limit_redis_latency_seconds Redis round "
            "trips of decisions.\n"
            "# TYPE nginx_rate_limit_redis_latency_seconds histogram\n");

        cumulative = 0;

        for (i = 0; i < RL_REDIS_LATENCY_BOUNDS; i++) {
            cumulative += latency.counts[i];
            p = ngx_sprintf(p, "nginx_rate_limit_redis_latency_seconds_bucket"
                            "{le=\"%uL.%06uL\"} %uL\n",
                            latency.bounds_us[i] / 1000000,
                            latency.bounds_us[i] % 1000000, cumulative);
        }

        cumulative += latency.counts[RL_REDIS_LATENCY_BOUNDS];

        p = ngx_sprintf(p, "nginx_rate_limit_redis_latency_seconds_bucket"
                        "{le=\"+Inf\"} %uL\n"
                        "nginx_rate_limit_redis_latency_seconds_sum "
                        "%uL.%06uL\n"
                        "nginx_rate_limit_redis_latency_seconds_count %uL\n",
                        cumulative, latency.sum_us / 1000000,
                        latency.sum_us % 1000000, cumulative);
    }

    if (rmcf->pg_sh && rmcf->pg_sh->synced) {
        p = ngx_sprintf(p,
            "# HELP nginx_rate_limit_postgres_sync_age_seconds Time since "
            "the last successful sync.\n"
            "# TYPE nginx_rate_limit_postgres_sync_age_seconds gauge\n"
            "nginx_rate_limit_postgres_sync_age_seconds %T\n",
            ngx_time() - rmcf->pg_sh->synced);
    }

    return ngx_http_rate_limit_send(r, NGX_HTTP_OK, &type, body, p - body);
}


/*
 * Each Redis address: whether it answers, its circuit, and the fleet size.
 * The circuits are read once, so that the three families agree.
 */
static u_char *
ngx_http_rate_limit_metrics_redis(u_char *p, rl_redis_shared_t *shared)
{
    size_t                   i, n;
    rl_redis_circuit_info_t  cb[RL_REDIS_ADDRESSES];

    n = ngx_min(rl_redis_shared_circuits(shared), RL_REDIS_ADDRESSES);

    for (i = 0; i < n; i++) {
        rl_redis_shared_circuit(shared, i, &cb[i]);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_up Whether the Redis address "
        "answered this node last time.\n"
        "# TYPE nginx_rate_limit_redis_up gauge\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_redis_up{address=\"%s\"} %d\n",
                        cb[i].address, cb[i].up);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_circuit_open Whether this node "
        "has stopped asking the Redis address.\n"
        "# TYPE nginx_rate_limit_redis_circuit_open gauge\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_redis_circuit_open{address="
                        "\"%s\"} %d\n", cb[i].address, cb[i].open);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_circuit_transitions_total Times the "
        "circuit of a Redis address opened or closed.\n"
        "# TYPE nginx_rate_limit_redis_circuit_transitions_total counter\n");

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_redis_circuit_transitions_total"
                        "{address=\"%s\",to=\"open\"} %uL\n"
                        "nginx_rate_limit_redis_circuit_transitions_total"
                        "{address=\"%s\",to=\"closed\"} %uL\n",
                        cb[i].address, cb[i].opened, cb[i].address,
                        cb[i].closed);
    }

    return ngx_sprintf(p,
        "# HELP nginx_rate_limit_nodes Live nginx nodes sharing the Redis "
        "buckets, as the registry last said.\n"
        "# TYPE nginx_rate_limit_nodes gauge\n"
        "nginx_rate_limit_nodes %uL\n", rl_redis_shared_nodes(shared));
}
