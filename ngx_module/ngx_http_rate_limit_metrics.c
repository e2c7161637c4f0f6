
/*
 * Counters shared by every worker, and their Prometheus text exposition.
 * Per-zone counters live in the zone's shared memory; the node-wide ones
 * (the Redis round trips and status) in a small zone of their own.  Both
 * survive a reload, as shared memory does.
 */


#include "ngx_http_rate_limit_module.h"


/* upper bounds of the Redis round-trip histogram, in microseconds */
static const uint64_t  ngx_http_rate_limit_latency_bounds[] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000
};

static const char  *ngx_http_rate_limit_outcome_names[] = {
    "passed", "rejected", "rejected_dry_run", "failed_open", "failed_closed",
    "degraded_local", "degraded_local_rejected"
};


static ngx_int_t ngx_http_rate_limit_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static ngx_int_t ngx_http_rate_limit_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_rate_limit_metrics_redis(u_char *p,
    ngx_http_rate_limit_metrics_t *m);


static ngx_http_rate_limit_metrics_t  *ngx_http_rate_limit_metrics_sh;


/* the node-wide counters: always there, and small */
ngx_int_t
ngx_http_rate_limit_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    ngx_str_t  name;

    ngx_str_set(&name, "ngx_http_rate_limit_metrics");

    rmcf->metrics_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
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

    ngx_slab_pool_t                  *shpool;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = shm_zone->data;

    if (ormcf) {
        rmcf->metrics = ormcf->metrics;

    } else {
        shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

        if (shm_zone->shm.exists) {
            rmcf->metrics = shpool->data;

        } else {
            rmcf->metrics = ngx_slab_calloc(shpool,
                                      sizeof(ngx_http_rate_limit_metrics_t));
            if (rmcf->metrics == NULL) {
                return NGX_ERROR;
            }

            shpool->data = rmcf->metrics;
        }
    }

    ngx_http_rate_limit_metrics_sh = rmcf->metrics;

    return NGX_OK;
}


/* one decision of one zone */
void
ngx_http_rate_limit_metrics_count(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_outcome_e outcome)
{
    (void) ngx_atomic_fetch_add(&zone->sh->requests, 1);

    if (outcome != NGX_HTTP_RATE_LIMIT_OUTCOME_NONE) {
        (void) ngx_atomic_fetch_add(&zone->sh->outcomes[outcome], 1);
    }
}


void
ngx_http_rate_limit_metrics_latency(uint64_t us)
{
    ngx_uint_t                      i, n;
    ngx_http_rate_limit_metrics_t  *m = ngx_http_rate_limit_metrics_sh;

    if (m == NULL) {
        return;
    }

    n = sizeof(ngx_http_rate_limit_latency_bounds) / sizeof(uint64_t);

    for (i = 0; i < n; i++) {
        if (us <= ngx_http_rate_limit_latency_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&m->latency[i], 1);
    (void) ngx_atomic_fetch_add(&m->latency_sum_us, us);
}


ngx_http_rate_limit_metrics_t *
ngx_http_rate_limit_metrics_node(void)
{
    return ngx_http_rate_limit_metrics_sh;
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
    ngx_uint_t                         i, o, n, pages, free;
    ngx_http_rate_limit_zone_t       **zones, *zone;
    ngx_http_rate_limit_metrics_t     *m;
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
    m = rmcf->metrics;
    zones = rmcf->zones.elts;
    n = sizeof(ngx_http_rate_limit_latency_bounds) / sizeof(uint64_t);

    len = 4096 + n * 96
          + NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES
            * (4 * NGX_HTTP_RATE_LIMIT_REDIS_ADDRESS_LEN + 256);

    for (i = 0; i < rmcf->zones.nelts; i++) {
        len += 16 * (zones[i]->name.len + 128);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body,
        "# HELP nginx_rate_limit_requests_total Requests a zone's limit "
        "applied to.\n"
        "# TYPE nginx_rate_limit_requests_total counter\n",
        sizeof("# HELP nginx_rate_limit_requests_total Requests a zone's "
               "limit applied to.\n"
               "# TYPE nginx_rate_limit_requests_total counter\n") - 1);

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_requests_total{zone=\"%V\"} %uA\n",
                        &zones[i]->name, zones[i]->sh->requests);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_decisions_total Decisions of a zone, by "
        "outcome.\n"
        "# TYPE nginx_rate_limit_decisions_total counter\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        for (o = 0; o < NGX_HTTP_RATE_LIMIT_OUTCOMES; o++) {
            p = ngx_sprintf(p, "nginx_rate_limit_decisions_total{zone=\"%V\","
                            "outcome=\"%s\"} %uA\n", &zones[i]->name,
                            ngx_http_rate_limit_outcome_names[o],
                            zones[i]->sh->outcomes[o]);
        }
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_cached_rejections_total Rejections "
        "served from the zone's cache of what Redis rejected, with no "
        "round trip.\n"
        "# TYPE nginx_rate_limit_cached_rejections_total counter\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_cached_rejections_total"
                        "{zone=\"%V\"} %uA\n",
                        &zones[i]->name, zones[i]->sh->cached);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_dynamic_limits Per-client limits from "
        "PostgreSQL held in a zone.\n"
        "# TYPE nginx_rate_limit_dynamic_limits gauge\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        p = ngx_sprintf(p, "nginx_rate_limit_dynamic_limits{zone=\"%V\"} %ui\n",
                        &zones[i]->name, zones[i]->sh->nrows);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_zone_memory_bytes A zone's shared memory, "
        "used and free.\n"
        "# TYPE nginx_rate_limit_zone_memory_bytes gauge\n");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        zone = zones[i];
        pages = (zone->shpool->end - zone->shpool->start) / ngx_pagesize;
        free = zone->shpool->pfree;

        p = ngx_sprintf(p, "nginx_rate_limit_zone_memory_bytes{zone=\"%V\","
                        "state=\"used\"} %ui\n"
                        "nginx_rate_limit_zone_memory_bytes{zone=\"%V\","
                        "state=\"free\"} %ui\n",
                        &zone->name, (pages - free) * ngx_pagesize,
                        &zone->name, free * ngx_pagesize);
    }

    if (rmcf->redis) {
        p = ngx_http_rate_limit_metrics_redis(p, m);

        p = ngx_sprintf(p,
            "# HELP nginx_rate_limit_redis_latency_seconds Redis round "
            "trips of decisions.\n"
            "# TYPE nginx_rate_limit_redis_latency_seconds histogram\n");

        cumulative = 0;

        for (i = 0; i < n; i++) {
            cumulative += m->latency[i];
            p = ngx_sprintf(p, "nginx_rate_limit_redis_latency_seconds_bucket"
                            "{le=\"%uL.%06uL\"} %uL\n",
                            ngx_http_rate_limit_latency_bounds[i] / 1000000,
                            ngx_http_rate_limit_latency_bounds[i] % 1000000,
                            cumulative);
        }

        cumulative += m->latency[n];

        p = ngx_sprintf(p, "nginx_rate_limit_redis_latency_seconds_bucket"
                        "{le=\"+Inf\"} %uL\n"
                        "nginx_rate_limit_redis_latency_seconds_sum "
                        "%uA.%06uA\n"
                        "nginx_rate_limit_redis_latency_seconds_count %uL\n",
                        cumulative, m->latency_sum_us / 1000000,
                        m->latency_sum_us % 1000000, cumulative);
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


/* each Redis address: whether it answers, its circuit, and the fleet size */
static u_char *
ngx_http_rate_limit_metrics_redis(u_char *p, ngx_http_rate_limit_metrics_t *m)
{
    ngx_uint_t                      i, n;
    ngx_http_rate_limit_circuit_t  *cb;

    n = ngx_min(m->ncircuits, NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES);

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_up Whether the Redis address "
        "answered this node last time.\n"
        "# TYPE nginx_rate_limit_redis_up gauge\n");

    for (i = 0; i < n; i++) {
        cb = &m->circuits[i];
        p = ngx_sprintf(p, "nginx_rate_limit_redis_up{address=\"%s\"} %uA\n",
                        cb->address, cb->up);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_circuit_open Whether this node "
        "has stopped asking the Redis address.\n"
        "# TYPE nginx_rate_limit_redis_circuit_open gauge\n");

    for (i = 0; i < n; i++) {
        cb = &m->circuits[i];
        p = ngx_sprintf(p, "nginx_rate_limit_redis_circuit_open{address="
                        "\"%s\"} %uA\n", cb->address, cb->open);
    }

    p = ngx_sprintf(p,
        "# HELP nginx_rate_limit_redis_circuit_transitions_total Times the "
        "circuit of a Redis address opened or closed.\n"
        "# TYPE nginx_rate_limit_redis_circuit_transitions_total counter\n");

    for (i = 0; i < n; i++) {
        cb = &m->circuits[i];
        p = ngx_sprintf(p, "nginx_rate_limit_redis_circuit_transitions_total"
                        "{address=\"%s\",to=\"open\"} %uA\n"
                        "nginx_rate_limit_redis_circuit_transitions_total"
                        "{address=\"%s\",to=\"closed\"} %uA\n",
                        cb->address, cb->opened, cb->address, cb->closed);
    }

    return ngx_sprintf(p,
        "# HELP nginx_rate_limit_nodes Live nginx nodes sharing the Redis "
        "buckets, as the registry last said.\n"
        "# TYPE nginx_rate_limit_nodes gauge\n"
        "nginx_rate_limit_nodes %uA\n", m->nodes);
}
