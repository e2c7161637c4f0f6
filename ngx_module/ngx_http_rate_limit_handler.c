
/*
 * The preaccess handler: evaluates each limit's key, decides local limits
 * at once, waits for Redis without blocking, then passes or rejects.
 */


#include "ngx_http_rate_limit_module.h"


static ngx_http_rate_limit_ctx_t *ngx_http_rate_limit_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_rate_limit_cleanup(void *data);
static void ngx_http_rate_limit_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_take_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, int64_t now_us);
static ngx_int_t ngx_http_rate_limit_take_blocked(
    ngx_http_rate_limit_ctx_t *ctx, int64_t now_us);
static void ngx_http_rate_limit_take_degraded(ngx_http_rate_limit_ctx_t *ctx,
    int64_t now_us);
static void ngx_http_rate_limit_finish(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_http_rate_limit_check_t *ngx_http_rate_limit_closest(
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t rejected);
static ngx_int_t ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check, ngx_uint_t rejected,
    ngx_uint_t retry_after);
static ngx_int_t ngx_http_rate_limit_add_header(ngx_http_request_t *r,
    ngx_str_t *name, u_char *value, size_t len);


static ngx_str_t  ngx_http_rate_limit_status_names[] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("REJECTED_DRY_RUN"),
    ngx_string("FAILED_OPEN"),
    ngx_string("FAILED_CLOSED"),
    ngx_string("DEGRADED_LOCAL"),
    ngx_string("DEGRADED_LOCAL_REJECTED")
};


static ngx_str_t  ngx_http_rate_limit_policy_header =
    ngx_string("RateLimit-Policy");
static ngx_str_t  ngx_http_rate_limit_header = ngx_string("RateLimit");
static ngx_str_t  ngx_http_rate_limit_limit_header =
    ngx_string("X-RateLimit-Limit");
static ngx_str_t  ngx_http_rate_limit_remaining_header =
    ngx_string("X-RateLimit-Remaining");
static ngx_str_t  ngx_http_rate_limit_reset_header =
    ngx_string("X-RateLimit-Reset");
static ngx_str_t  ngx_http_rate_limit_retry_header = ngx_string("Retry-After");


ngx_int_t
ngx_http_rate_limit_handler(ngx_http_request_t *r)
{
    int64_t                          now_us;
    ngx_int_t                        rc;
    ngx_str_t                        key;
    ngx_uint_t                       i;
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_limit_t     *limits;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_loc_conf_t  *rlcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_rate_limit_get_ctx(r);

    if (ctx) {
        if (!ctx->done) {
            return NGX_AGAIN;
        }

        /* decided once: after an internal redirect the request just goes on */
        rc = ctx->rc;
        ctx->rc = NGX_DECLINED;
        return rc;
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    if (rlcf->limits == NULL) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_rate_limit_create_ctx(r, rlcf->limits->nelts);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->resume = ngx_http_rate_limit_resume;

    limits = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {

        if (ngx_http_complex_value(r, &limits[i].zone->key, &key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (key.len == 0) {
            continue;
        }

        check = &ctx->checks[ctx->nchecks++];

        check->limit = &limits[i];

        check->key.data = ngx_pnalloc(r->pool, NGX_HTTP_RATE_LIMIT_KEY_MAX);
        if (check->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        check->key.len = ngx_http_rate_limit_encode_key(key.data, key.len,
                                                        check->key.data);

        if (ngx_http_rate_limit_find_limit(r, check) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (limits[i].zone->backend == NGX_HTTP_RATE_LIMIT_BACKEND_REDIS) {
            check->redis = 1;
            ctx->nredis++;
        }
    }

    if (ctx->nchecks == 0) {
        return NGX_DECLINED;
    }

    now_us = ngx_http_rate_limit_now_us();

    if (ngx_http_rate_limit_take_local(r, ctx, now_us) == NGX_DECLINED
        && ctx->nredis
        && ngx_http_rate_limit_take_blocked(ctx, now_us) == NGX_DECLINED)
    {
        if (ngx_http_rate_limit_redis_send(r, ctx) == NGX_OK) {
            r->read_event_handler = ngx_http_test_reading;
            return NGX_AGAIN;
        }

        for (i = 0; i < ctx->nchecks; i++) {
            ctx->checks[i].failed |= ctx->checks[i].redis;
        }
    }

    ngx_http_rate_limit_finish(r, ctx);

    rc = ctx->rc;
    ctx->rc = NGX_DECLINED;

    return rc;
}


static void
ngx_http_rate_limit_resume(ngx_http_request_t *r)
{
    ngx_connection_t           *c;
    ngx_http_rate_limit_ctx_t  *ctx;

    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);

    ngx_http_rate_limit_finish(r, ctx);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/*
 * The limit in force for the key: a row synced from PostgreSQL, else an
 * entry of the policy file, else the zone's defaults.  Never a network call.
 */
ngx_int_t
ngx_http_rate_limit_find_limit(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check)
{
    ngx_http_rate_limit_zone_t          *zone;
    ngx_http_rate_limit_spec_t           row, entry, *spec;
    const ngx_http_rate_limit_params_t  *params;

    zone = check->limit->zone;

    /* an unlocked peek: most zones hold no per-client limits at all */
    params = ngx_http_rate_limit_pick_params(
                 (zone->sh->nrows
                  && ngx_http_rate_limit_shm_row_get(zone, &check->key, &row)
                     == NGX_OK)
                 ? &row.params : NULL,
                 (ngx_http_rate_limit_policy_find(zone, &check->key, &entry)
                  == NGX_OK)
                 ? &entry.params : NULL,
                 &zone->params, &check->source);

    check->params = *params;
    check->texts = &zone->texts;

    switch (check->source) {

    case NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES:
        spec = &row;
        break;

    case NGX_HTTP_RATE_LIMIT_SOURCE_YAML:
        spec = &entry;
        break;

    default:
        check->rate = zone->rate;
        return NGX_OK;
    }

    check->rate = spec->rate;

    check->texts = ngx_palloc(r->pool, sizeof(ngx_http_rate_limit_texts_t));
    if (check->texts == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_rate_limit_format_limit(r->pool, &zone->name,
                                            &check->params, check->texts);
}


/*
 * The arguments of the Redis script and the values of the headers for a
 * limit, formatted once per zone, and per request only for a per-client
 * limit.
 */
ngx_int_t
ngx_http_rate_limit_format_limit(ngx_pool_t *pool, ngx_str_t *name,
    ngx_http_rate_limit_params_t *params, ngx_http_rate_limit_texts_t *texts)
{
    u_char    *p;
    uint64_t   window;

    p = ngx_pnalloc(pool, 3 * NGX_INT64_LEN + name->len + 2 * NGX_INT64_LEN
                          + sizeof("\"\";q=;w="));
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* the script counts whole microseconds a token, rounded as the core does */
    texts->interval_arg.data = p;
    p = ngx_sprintf(p, "%L", (int64_t) (params->interval_us + 0.5));
    texts->interval_arg.len = p - texts->interval_arg.data;

    texts->burst_arg.data = p;
    p = ngx_sprintf(p, "%uL", params->burst);
    texts->burst_arg.len = p - texts->burst_arg.data;

    /* the script stores it with the TAT: a changed limit converts the TAT */
    texts->token_code_arg.data = p;
    p = ngx_sprintf(p, "%uD", ngx_http_rate_limit_token_code(
                                  ngx_http_rate_limit_token_us(params)));
    texts->token_code_arg.len = p - texts->token_code_arg.data;

    /* the draft's window: the time in which a full quota is refilled */
    window = (uint64_t) (params->interval_us * params->burst + 999999)
             / 1000000;
    if (window == 0) {
        window = 1;
    }

    texts->policy.data = p;
    p = ngx_sprintf(p, "\"%V\";q=%uL;w=%uL", name, params->burst, window);
    texts->policy.len = p - texts->policy.data;

    return NGX_OK;
}


/*
 * Local limits are taken all or nothing: when one rejects, the tokens the
 * others took are given back.  Returns NGX_OK when a local limit rejected
 * and nothing more needs asking, NGX_DECLINED otherwise.
 */
static ngx_int_t
ngx_http_rate_limit_take_local(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, int64_t now_us)
{
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis) {
            continue;
        }

        zone = check->limit->zone;

        if (ngx_http_rate_limit_shm_take(zone, &check->key, &check->params,
                                         check->limit->cost, now_us,
                                         &check->decision)
            != NGX_OK)
        {
            if (!zone->local_full_logged) {
                zone->local_full_logged = 1;
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "rate_limit_zone \"%V\" is full: new keys "
                              "follow its \"on_failure\" policy until "
                              "buckets expire", &zone->name);
            }

            check->failed = 1;
            continue;
        }

        check->decided = 1;

        if (!check->decision.allowed) {
            return NGX_OK;
        }

        check->taken = 1;
    }

    return NGX_DECLINED;
}


/*
 * While Redis cannot answer, an on_failure=local zone decides in this
 * node's shared memory, its limit divided among the live nodes so that the
 * fleet as a whole stays near it.  All or nothing, as take_local().  A
 * check whose zone is full stays failed, and passes as with open.
 */
static void
ngx_http_rate_limit_take_degraded(ngx_http_rate_limit_ctx_t *ctx,
    int64_t now_us)
{
    ngx_uint_t                     i, nodes;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_check_t   *check;
    ngx_http_rate_limit_params_t   params;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];
        zone = check->limit->zone;

        if (!check->failed || !check->redis
            || zone->on_failure != NGX_HTTP_RATE_LIMIT_FAILURE_LOCAL)
        {
            continue;
        }

        params = check->params;

        if (!ngx_http_rate_limit_params_blocked(&params)) {
            nodes = ngx_http_rate_limit_nodes_live();
            params.interval_us *= nodes;
            params.burst = ngx_max(params.burst / nodes, 1);
        }

        if (ngx_http_rate_limit_shm_take(zone, &check->key, &params,
                                         check->limit->cost, now_us,
                                         &check->decision)
            != NGX_OK)
        {
            continue;
        }

        check->params = params;
        check->failed = 0;
        check->decided = 1;
        check->degraded = 1;

        if (!check->decision.allowed) {
            return;
        }

        check->taken = 1;
    }
}


/*
 * A key that Redis rejected a moment ago is rejected again here, until
 * the time Redis gave, which it cannot have moved: the cache never lets
 * through what Redis would reject.  The other limits are not asked.
 */
static ngx_int_t
ngx_http_rate_limit_take_blocked(ngx_http_rate_limit_ctx_t *ctx,
    int64_t now_us)
{
    ngx_uint_t                    i;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis
            && ngx_http_rate_limit_shm_blocked(check->limit->zone,
                   &check->key, check->limit->cost,
                   ngx_http_rate_limit_token_us(&check->params), now_us,
                   &check->decision)
               == NGX_OK)
        {
            check->decided = 1;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static void
ngx_http_rate_limit_finish(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    int64_t                          now_us, retry_us;
    ngx_uint_t                       i, rejected, failed_open, failed_closed,
                                     degraded;
    ngx_http_rate_limit_check_t     *check, *closest;
    ngx_http_rate_limit_outcome_e    outcome;
    ngx_http_rate_limit_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    rejected = 0;
    failed_open = 0;
    failed_closed = 0;
    degraded = 0;

    if (ctx->nredis) {
        ngx_http_rate_limit_take_degraded(ctx, ngx_http_rate_limit_now_us());
    }

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        /* a limit left unasked, as another rejected first, counts no outcome */
        outcome = NGX_HTTP_RATE_LIMIT_OUTCOME_NONE;

        if (check->failed) {
            if (check->limit->zone->on_failure
                == NGX_HTTP_RATE_LIMIT_FAILURE_CLOSED)
            {
                failed_closed = 1;
                outcome = NGX_HTTP_RATE_LIMIT_OUTCOME_FAILED_CLOSED;

            } else {
                failed_open = 1;
                outcome = NGX_HTTP_RATE_LIMIT_OUTCOME_FAILED_OPEN;
            }

        } else if (check->decided && !check->decision.allowed) {
            rejected = 1;
            outcome = rlcf->dry_run
                      ? NGX_HTTP_RATE_LIMIT_OUTCOME_REJECTED_DRY_RUN
                      : check->degraded
                      ? NGX_HTTP_RATE_LIMIT_OUTCOME_DEGRADED_LOCAL_REJECTED
                      : NGX_HTTP_RATE_LIMIT_OUTCOME_REJECTED;

        } else if (check->decided) {
            outcome = check->degraded
                      ? NGX_HTTP_RATE_LIMIT_OUTCOME_DEGRADED_LOCAL
                      : NGX_HTTP_RATE_LIMIT_OUTCOME_PASSED;
        }

        degraded |= check->degraded;

        ngx_http_rate_limit_metrics_count(check->limit->zone, outcome);
    }

    if (rejected || failed_closed) {
        now_us = ngx_http_rate_limit_now_us();

        for (i = 0; i < ctx->nchecks; i++) {
            check = &ctx->checks[i];

            if (check->taken) {
                ngx_http_rate_limit_shm_refund(check->limit->zone,
                                               &check->key, &check->params,
                                               check->limit->cost, now_us);
                check->taken = 0;
            }
        }
    }

    closest = ngx_http_rate_limit_closest(ctx, rejected);

    if (rejected) {
        ctx->status = rlcf->dry_run ? NGX_HTTP_RATE_LIMIT_REJECTED_DRY_RUN
                      : closest->degraded
                      ? NGX_HTTP_RATE_LIMIT_DEGRADED_LOCAL_REJECTED
                      : NGX_HTTP_RATE_LIMIT_REJECTED;

        retry_us = closest->decision.retry_after_us;

        ngx_log_error(rlcf->log_level, r->connection->log, 0,
                      "rate limit exceeded in zone \"%V\", retry in "
                      "%L.%03Ls%s%s", &closest->limit->zone->name,
                      retry_us / 1000000, retry_us % 1000000 / 1000,
                      closest->degraded ? ", decided locally while Redis "
                                          "is unreachable" : "",
                      rlcf->dry_run ? ", dry run" : "");

    } else if (failed_closed) {
        ctx->status = NGX_HTTP_RATE_LIMIT_FAILED_CLOSED;

    } else if (failed_open) {
        ctx->status = NGX_HTTP_RATE_LIMIT_FAILED_OPEN;

    } else if (degraded) {
        ctx->status = NGX_HTTP_RATE_LIMIT_DEGRADED_LOCAL;

    } else {
        ctx->status = NGX_HTTP_RATE_LIMIT_PASSED;
    }

    ctx->rc = NGX_DECLINED;

    if ((rejected || failed_closed) && !rlcf->dry_run) {
        ctx->rc = rlcf->status;
    }

    if (rlcf->headers && closest
        && ngx_http_rate_limit_set_headers(r, closest, rejected,
                                           ctx->rc != NGX_DECLINED && rejected)
           != NGX_OK)
    {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->done = 1;
}


/*
 * The limit the headers describe: on a rejection the rejecting limit that
 * asks for the longest wait, otherwise the one with the fewest tokens left.
 */
static ngx_http_rate_limit_check_t *
ngx_http_rate_limit_closest(ngx_http_rate_limit_ctx_t *ctx,
    ngx_uint_t rejected)
{
    ngx_uint_t                    i;
    ngx_http_rate_limit_check_t  *check, *closest;

    closest = NULL;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->decided || (rejected && check->decision.allowed)) {
            continue;
        }

        if (closest == NULL
            || (rejected && check->decision.retry_after_us
                            > closest->decision.retry_after_us)
            || (!rejected && check->decision.remaining
                             < closest->decision.remaining))
        {
            closest = check;
        }
    }

    return closest;
}


static ngx_int_t
ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check, ngx_uint_t rejected,
    ngx_uint_t retry_after)
{
    u_char                          *p, *last;
    uint64_t                         reset_s, retry_s;
    ngx_http_rate_limit_zone_t      *zone;
    ngx_http_rate_limit_decision_t  *d;

    zone = check->limit->zone;
    d = &check->decision;

    reset_s = (uint64_t) (d->reset_us + 999999) / 1000000;

    retry_s = (uint64_t) (d->retry_after_us + 999999) / 1000000;
    if (retry_s == 0) {
        retry_s = 1;
    }

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_policy_header,
                                       check->texts->policy.data,
                                       check->texts->policy.len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* RateLimit and the numbers of the three headers after it */
    p = ngx_pnalloc(r->pool, zone->name.len + 5 * NGX_INT64_LEN + 16);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* "zone";r=N;t=N: on a rejection "t" and Retry-After name one moment */
    last = p;
    *last++ = '"';
    last = ngx_cpymem(last, zone->name.data, zone->name.len);
    last = ngx_cpymem(last, "\";r=", sizeof("\";r=") - 1);
    last = ngx_http_rate_limit_decimal(last, d->remaining);
    last = ngx_cpymem(last, ";t=", sizeof(";t=") - 1);
    last = ngx_http_rate_limit_decimal(last, rejected ? retry_s : reset_s);

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_header, p,
                                       last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_limit_header,
                                       check->texts->burst_arg.data,
                                       check->texts->burst_arg.len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, d->remaining);

    if (ngx_http_rate_limit_add_header(r,
                                       &ngx_http_rate_limit_remaining_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, reset_s);

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_reset_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!retry_after) {
        return NGX_OK;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, retry_s);

    return ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_retry_header,
                                          p, last - p);
}


static ngx_int_t
ngx_http_rate_limit_add_header(ngx_http_request_t *r, ngx_str_t *name,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key = *name;
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


ngx_http_rate_limit_ctx_t *
ngx_http_rate_limit_create_ctx(ngx_http_request_t *r, ngx_uint_t nlimits)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->checks = ngx_pcalloc(r->pool,
                              nlimits * sizeof(ngx_http_rate_limit_check_t));
    if (ctx->checks == NULL) {
        return NULL;
    }

    ctx->request = r;

    /*
     * The cleanup both detaches a pending Redis reply from the request and
     * lets the ctx be found again after an internal redirect clears r->ctx.
     */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_rate_limit_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_rate_limit_module);

    return ctx;
}


static ngx_http_rate_limit_ctx_t *
ngx_http_rate_limit_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_rate_limit_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_rate_limit_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_rate_limit_cleanup(void *data)
{
    ngx_http_rate_limit_ctx_t  *ctx = data;

    if (ctx->op) {
        ngx_http_rate_limit_redis_detach(ctx);
    }
}


ngx_int_t
ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_rate_limit_get_ctx(r->main);

    if (ctx == NULL || ctx->status == NGX_HTTP_RATE_LIMIT_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = ngx_http_rate_limit_status_names[ctx->status].len;
    v->data = ngx_http_rate_limit_status_names[ctx->status].data;

    return NGX_OK;
}
