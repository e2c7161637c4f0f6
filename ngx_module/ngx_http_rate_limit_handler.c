
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
static void ngx_http_rate_limit_redis_done(void *data);
static void ngx_http_rate_limit_remember(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_check_t *check);
static void ngx_http_rate_limit_finish(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static void ngx_http_rate_limit_log_never_fits(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_int_t ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, rl_verdict_t *v);
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
    rl_verdict_limit_t              *in;
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

        in = check->verdict_in;
        in->cost = limits[i].cost;
        in->closed = (limits[i].zone->core.on_failure
                      == RL_ZONE_FAILURE_CLOSED);

        check->key.data = ngx_pnalloc(r->pool, NGX_HTTP_RATE_LIMIT_KEY_MAX);
        if (check->key.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        check->key.len = ngx_http_rate_limit_encode_key(key.data, key.len,
                                                        check->key.data);

        rl_store_key(&limits[i].zone->core.store, check->key.data, check->key.len,
                     &check->store_key);

        if (ngx_http_rate_limit_find_limit(r, check) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (limits[i].zone->core.backend == RL_ZONE_BACKEND_REDIS) {
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
        if (ngx_http_rate_limit_ask_redis(r, ctx) == NGX_OK) {
            r->read_event_handler = ngx_http_test_reading;
            return NGX_AGAIN;
        }

        for (i = 0; i < ctx->nchecks; i++) {
            ctx->checks[i].verdict_in->failed |= ctx->checks[i].redis;
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
    ngx_http_rate_limit_zone_t  *zone;
    ngx_http_rate_limit_spec_t   spec;

    zone = check->limit->zone;

    check->source = rl_store_find_limit(&zone->core.store, &check->store_key,
                                        &spec);
    check->texts = &zone->core.texts;

    if (check->source == NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT) {
        check->verdict_in->params = zone->core.params;
        check->rate = zone->core.rate;
        return NGX_OK;
    }

    check->verdict_in->params = spec.params;
    check->rate = spec.rate;

    check->texts = ngx_palloc(r->pool, sizeof(rl_zone_texts_t));
    if (check->texts == NULL) {
        return NGX_ERROR;
    }

    rl_zone_texts(&spec.params, check->texts);

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
    rl_verdict_limit_t           *in;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis) {
            continue;
        }

        zone = check->limit->zone;
        in = check->verdict_in;

        if (rl_store_take(&zone->core.store, &check->store_key, &in->params,
                          check->limit->cost, now_us, &in->decision)
            != RL_STORE_OK)
        {
            if (!zone->core.full_logged) {
                zone->core.full_logged = 1;
                ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                              "rate_limit_zone \"%V\" is full: new keys "
                              "follow its \"on_failure\" policy until "
                              "buckets expire", &zone->name);
            }

            in->failed = 1;
            continue;
        }

        in->decided = 1;

        if (!in->decision.allowed) {
            return NGX_OK;
        }

        in->taken = 1;
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
    rl_verdict_limit_t            *in;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_check_t   *check;
    ngx_http_rate_limit_params_t   params;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];
        zone = check->limit->zone;
        in = check->verdict_in;

        if (!in->failed || !check->redis
            || zone->core.on_failure != RL_ZONE_FAILURE_LOCAL)
        {
            continue;
        }

        params = in->params;

        if (!ngx_http_rate_limit_params_blocked(&params)) {
            nodes = ngx_http_rate_limit_nodes_live();
            params.interval_us *= nodes;
            params.burst = ngx_max(params.burst / nodes, 1);
        }

        if (rl_store_take(&zone->core.store, &check->store_key, &params,
                          check->limit->cost, now_us, &in->decision)
            != RL_STORE_OK)
        {
            continue;
        }

        in->params = params;
        in->failed = 0;
        in->decided = 1;
        in->degraded = 1;

        if (!in->decision.allowed) {
            return;
        }

        in->taken = 1;
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
    rl_verdict_limit_t           *in;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];
        in = check->verdict_in;

        if (check->redis
            && rl_store_blocked(&check->limit->zone->core.store,
                   &check->store_key, check->limit->cost,
                   ngx_http_rate_limit_token_us(&in->params), now_us,
                   &in->decision))
        {
            in->decided = 1;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * The Redis limits go to the core's client in one call.  NGX_OK: the
 * request waits for ngx_http_rate_limit_redis_done(); NGX_DECLINED: no key
 * is on its way, and every Redis limit failed; NGX_ERROR: no memory.
 */
ngx_int_t
ngx_http_rate_limit_ask_redis(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                       *p;
    ngx_uint_t                    i, n;
    rl_redis_key_t               *keys, *key;
    rl_redis_client_t            *client;
    rl_redis_request_t           *request;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    client = ngx_http_rate_limit_redis_client();
    if (client == NULL) {
        return NGX_DECLINED;
    }

    keys = ngx_pcalloc(r->pool, ctx->nredis * sizeof(rl_redis_key_t));
    if (keys == NULL) {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis || check->verdict_in->failed) {
            continue;
        }

        zone = check->limit->zone;

        /* "<prefix>:<zone>:<key>" */
        p = ngx_pnalloc(r->pool, zone->core.redis_prefix_len
                                 + check->key.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        key = &keys[n++];

        key->key = p;
        key->key_len = ngx_cpymem(ngx_cpymem(p, zone->core.redis_prefix,
                                             zone->core.redis_prefix_len),
                                  check->key.data, check->key.len)
                       - p;
        key->interval = check->texts->interval;
        key->interval_len = check->texts->interval_len;
        key->burst = check->texts->burst;
        key->burst_len = check->texts->burst_len;
        key->cost = (const char *) check->limit->cost_arg.data;
        key->cost_len = check->limit->cost_arg.len;
        key->token_code = check->texts->token_code;
        key->token_code_len = check->texts->token_code_len;

        check->redis_key = key;
    }

    if (n == 0) {
        return NGX_DECLINED;
    }

    /* before Redis reads its clock: see ngx_http_rate_limit_remember() */
    ctx->redis_asked_us = ngx_http_rate_limit_now_us();

    if (rl_redis_decide(client, keys, n, ngx_http_rate_limit_redis_done, ctx,
                        &request)
        != RL_REDIS_OK)
    {
        return NGX_DECLINED;
    }

    ctx->redis_request = request;

    return NGX_OK;
}


/* every key is decided or failed: the request goes on */
static void
ngx_http_rate_limit_redis_done(void *data)
{
    ngx_http_rate_limit_ctx_t *ctx = data;

    ngx_uint_t                    i;
    rl_verdict_limit_t           *in;
    ngx_http_rate_limit_check_t  *check;

    ctx->redis_request = NULL;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis_key == NULL) {
            continue;
        }

        in = check->verdict_in;

        if (check->redis_key->status == RL_REDIS_KEY_DECIDED) {
            in->decision = check->redis_key->decision;
            in->decided = 1;

            if (!in->decision.allowed) {
                ngx_http_rate_limit_remember(ctx, check);
            }

        } else {
            in->failed = 1;
            in->decided = 0;
        }

        check->redis_key = NULL;
    }

    ctx->resume(ctx->request);
}


/*
 * A rejection is kept in the zone's shared memory, so that the node's
 * next requests of the key are rejected without a round trip.  Times
 * count from when the request was asked, before Redis read its clock: the
 * cache may forget a rejection early, never hold one too long.
 */
static void
ngx_http_rate_limit_remember(ngx_http_rate_limit_ctx_t *ctx,
    ngx_http_rate_limit_check_t *check)
{
    int64_t                          first_us;
    rl_verdict_limit_t              *in;
    ngx_http_rate_limit_decision_t  *d;

    in = check->verdict_in;
    d = &in->decision;

    if (ngx_http_rate_limit_params_blocked(&in->params)) {
        return;
    }

    /* until a request of cost 1 fits: the cache serves every cost */
    first_us = d->retry_after_us - (int64_t) (check->limit->cost - 1)
                                   * ngx_http_rate_limit_token_us(&in->params);

    /* a wait shorter than the clock's millisecond is not worth keeping */
    if (first_us < 2000) {
        return;
    }

    rl_store_block(&check->limit->zone->core.store, &check->store_key,
                   ctx->redis_asked_us + first_us,
                   ctx->redis_asked_us + d->reset_us,
                   ngx_http_rate_limit_now_us());
}


/*
 * The core judges the request (rl_verdict_judge()); what is left here is
 * what touches nginx: the metrics, the refunds in shared memory, the log
 * and the headers.
 */
static void
ngx_http_rate_limit_finish(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    int64_t                          now_us, retry_us;
    ngx_uint_t                       i;
    rl_verdict_t                     v;
    rl_verdict_limit_out_t          *out;
    ngx_http_rate_limit_check_t     *check, *closest;
    ngx_http_rate_limit_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    if (ctx->nredis) {
        ngx_http_rate_limit_take_degraded(ctx, ngx_http_rate_limit_now_us());
    }

    out = ctx->verdict_out;

    rl_verdict_judge(ctx->verdict_in, ctx->nchecks, rlcf->dry_run, &v, out);

    /* one clock for all the refunds, and none when there is nothing to do */
    now_us = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        ngx_http_rate_limit_metrics_count(check->limit->zone, out[i].outcome);

        if (out[i].refund) {
            if (now_us == 0) {
                now_us = ngx_http_rate_limit_now_us();
            }

            rl_store_refund(&check->limit->zone->core.store, &check->store_key,
                            &check->verdict_in->params, check->limit->cost,
                            now_us);
            check->verdict_in->taken = 0;
        }
    }

    closest = (v.closest == RL_VERDICT_NO_LIMIT) ? NULL
                                                 : &ctx->checks[v.closest];

    ctx->status = (ngx_http_rate_limit_status_e) v.status;

    if (v.rejected) {
        retry_us = closest->verdict_in->decision.retry_after_us;

        if (v.never_fits) {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "rate limit exceeded in zone \"%V\", the cost "
                          "exceeds the burst: no retry can pass%s%s",
                          &closest->limit->zone->name,
                          closest->verdict_in->degraded
                          ? ", decided locally while Redis is unreachable"
                          : "",
                          rlcf->dry_run ? ", dry run" : "");

        } else {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "rate limit exceeded in zone \"%V\", retry in "
                          "%L.%03Ls%s%s", &closest->limit->zone->name,
                          retry_us / 1000000, retry_us % 1000000 / 1000,
                          closest->verdict_in->degraded
                          ? ", decided locally while Redis is unreachable"
                          : "",
                          rlcf->dry_run ? ", dry run" : "");
        }

        ngx_http_rate_limit_log_never_fits(r, ctx);
    }

    ctx->rc = NGX_DECLINED;

    if (v.reject) {
        ctx->rc = rlcf->status;
    }

    if (rlcf->headers && closest
        && ngx_http_rate_limit_set_headers(r, ctx, &v) != NGX_OK)
    {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->done = 1;
}


/*
 * The operator learns of such a request once a minute for each zone and
 * key, whichever worker of the node served it.  The key may be a
 * credential, and is user input anyway: the log names its SHA-1 only.
 */
static void
ngx_http_rate_limit_log_never_fits(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                        sha1[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];
    int64_t                       now_us;
    ngx_uint_t                    i;
    rl_store_nofit_e              nofit;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    /* most rejections fit in time: the clock is read for the others only */
    now_us = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!ctx->verdict_out[i].never_fits) {
            continue;
        }

        if (now_us == 0) {
            now_us = ngx_http_rate_limit_now_us();
        }

        zone = check->limit->zone;

        nofit = rl_store_nofit(&zone->core.store, &check->store_key, now_us);

        if (nofit == RL_STORE_NOFIT_UNNAMED) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "rate_limit_zone \"%V\": requests whose cost "
                          "exceeds their burst came from more keys in the "
                          "last minute than the log names", &zone->name);
            continue;
        }

        if (nofit != RL_STORE_NOFIT_NAME) {
            continue;
        }

        /* a stored key of '#' and a SHA-1 is the hash of the key given */
        if (check->key.len == NGX_HTTP_RATE_LIMIT_HASHED_LEN
            && check->key.data[0] == '#')
        {
            ngx_memcpy(sha1, check->key.data + 1, NGX_HTTP_RATE_LIMIT_SHA1_HEX);
            sha1[NGX_HTTP_RATE_LIMIT_SHA1_HEX] = '\0';

        } else {
            ngx_http_rate_limit_sha1_hex(check->key.data, check->key.len,
                                         (char *) sha1);
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "rate_limit_zone \"%V\": a request of cost %ui can "
                      "never pass for the key of SHA-1 %s, whose burst is "
                      "%uL (%s limit%s): it is rejected without Retry-After",
                      &zone->name, check->limit->cost, sha1,
                      check->verdict_in->params.burst,
                      ngx_http_rate_limit_source_name(check->source),
                      check->verdict_in->degraded
                      ? ", divided among the live nodes while Redis is "
                        "unreachable"
                      : "");
    }
}


/*
 * The headers of draft-ietf-httpapi-ratelimit-headers-11, and the older
 * X-RateLimit-* and Retry-After, from the verdict's numbers.
 * RateLimit-Policy lists every limit the request went through, in the
 * order of its lines, so that it stays the same from one response to the
 * next; RateLimit, as the draft's B.1.2 allows, only the closest.  A limit
 * that Redis failed to decide, and that this node does not decide either,
 * enforces nothing now and is left out.
 */
static ngx_int_t
ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, rl_verdict_t *v)
{
    size_t                       len;
    u_char                      *p, *last;
    ngx_str_t                   *name;
    ngx_uint_t                   i;
    rl_verdict_limit_out_t      *out;
    ngx_http_rate_limit_zone_t  *zone;

    zone = ctx->checks[v->closest].limit->zone;
    out = ctx->verdict_out;

    /* the policies, RateLimit, then the numbers of the headers after it */
    len = zone->name.len + sizeof("\"\";r=;t=") - 1 + 6 * NGX_INT64_LEN;

    for (i = 0; i < ctx->nchecks; i++) {
        len += ctx->checks[i].limit->zone->name.len
               + sizeof(", \"\";q=;w=") - 1 + 2 * NGX_INT64_LEN;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = p;

    for (i = 0; i < ctx->nchecks; i++) {

        if (!out[i].listed) {
            continue;
        }

        if (last != p) {
            *last++ = ',';
            *last++ = ' ';
        }

        /* "zone";q=Q;w=W */
        name = &ctx->checks[i].limit->zone->name;
        *last++ = '"';
        last = ngx_cpymem(last, name->data, name->len);
        last = ngx_cpymem(last, "\";q=", sizeof("\";q=") - 1);
        last = ngx_http_rate_limit_decimal(last, out[i].quota);
        last = ngx_cpymem(last, ";w=", sizeof(";w=") - 1);
        last = ngx_http_rate_limit_decimal(last, out[i].window_s);
    }

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_policy_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * "zone";r=N;t=N.  A request that can never fit gets no "t": no wait
     * brings it quota.
     */
    p = last;
    *last++ = '"';
    last = ngx_cpymem(last, zone->name.data, zone->name.len);
    last = ngx_cpymem(last, "\";r=", sizeof("\";r=") - 1);
    last = ngx_http_rate_limit_decimal(last, v->remaining);

    if (!v->never_fits) {
        last = ngx_cpymem(last, ";t=", sizeof(";t=") - 1);
        last = ngx_http_rate_limit_decimal(last, v->window_s);
    }

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_header, p,
                                       last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, v->limit);

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_limit_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, v->remaining);

    if (ngx_http_rate_limit_add_header(r,
                                       &ngx_http_rate_limit_remaining_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (v->never_fits) {
        return NGX_OK;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, v->reset_s);

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_reset_header,
                                       p, last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!v->retry_after) {
        return NGX_OK;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, v->retry_after_s);

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
    size_t                      zeroed;
    ngx_uint_t                  i;
    ngx_pool_cleanup_t         *cln;
    ngx_http_rate_limit_ctx_t  *ctx;

    /*
     * One block for the ctx, its checks and the verdict's arrays, as every
     * request takes them all; the verdict's output is filled before it is
     * read, and is not zeroed.  Each part is a multiple of 8 bytes long.
     */
    zeroed = sizeof(ngx_http_rate_limit_ctx_t)
             + nlimits * (sizeof(ngx_http_rate_limit_check_t)
                          + sizeof(rl_verdict_limit_t));

    ctx = ngx_palloc(r->pool, zeroed
                              + nlimits * sizeof(rl_verdict_limit_out_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_memzero(ctx, zeroed);

    ctx->checks = (ngx_http_rate_limit_check_t *) &ctx[1];
    ctx->verdict_in = (rl_verdict_limit_t *) &ctx->checks[nlimits];
    ctx->verdict_out = (rl_verdict_limit_out_t *) &ctx->verdict_in[nlimits];

    for (i = 0; i < nlimits; i++) {
        ctx->checks[i].verdict_in = &ctx->verdict_in[i];
    }

    ctx->request = r;

    /*
     * The cleanup both cancels a pending Redis decision and lets the ctx
     * be found again after an internal redirect clears r->ctx.
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

    rl_redis_client_t  *client;

    if (ctx->redis_request == NULL) {
        return;
    }

    /* none once the worker has destroyed it: the request goes with it */
    client = ngx_http_rate_limit_redis_client();

    if (client) {
        rl_redis_cancel(client, ctx->redis_request);
    }

    ctx->redis_request = NULL;
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
