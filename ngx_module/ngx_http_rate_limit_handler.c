
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
static ngx_uint_t ngx_http_rate_limit_never_fits(
    ngx_http_rate_limit_check_t *check);
static void ngx_http_rate_limit_log_never_fits(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_http_rate_limit_check_t *ngx_http_rate_limit_closest(
    ngx_http_rate_limit_ctx_t *ctx, ngx_uint_t rejected);
static ngx_int_t ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_check_t *closest,
    ngx_uint_t rejected, ngx_uint_t retry_after);
static u_char *ngx_http_rate_limit_policy_item(u_char *p,
    ngx_http_rate_limit_check_t *check);
static uint64_t ngx_http_rate_limit_window_s(
    ngx_http_rate_limit_check_t *check, ngx_uint_t rejected);
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

    return ngx_http_rate_limit_format_limit(r->pool, &check->params,
                                            check->texts);
}


/*
 * The arguments of the Redis script for a limit, formatted once per zone,
 * and per request only for a per-client limit.
 */
ngx_int_t
ngx_http_rate_limit_format_limit(ngx_pool_t *pool,
    ngx_http_rate_limit_params_t *params, ngx_http_rate_limit_texts_t *texts)
{
    u_char  *p;

    p = ngx_pnalloc(pool, 3 * NGX_INT64_LEN);
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

        if (ngx_http_rate_limit_never_fits(closest)) {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "rate limit exceeded in zone \"%V\", the cost "
                          "exceeds the burst: no retry can pass%s%s",
                          &closest->limit->zone->name,
                          closest->degraded ? ", decided locally while "
                                              "Redis is unreachable" : "",
                          rlcf->dry_run ? ", dry run" : "");

        } else {
            ngx_log_error(rlcf->log_level, r->connection->log, 0,
                          "rate limit exceeded in zone \"%V\", retry in "
                          "%L.%03Ls%s%s", &closest->limit->zone->name,
                          retry_us / 1000000, retry_us % 1000000 / 1000,
                          closest->degraded ? ", decided locally while "
                                              "Redis is unreachable" : "",
                          rlcf->dry_run ? ", dry run" : "");
        }

        ngx_http_rate_limit_log_never_fits(r, ctx);

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
        && ngx_http_rate_limit_set_headers(r, ctx, closest, rejected,
                                           ctx->rc != NGX_DECLINED && rejected)
           != NGX_OK)
    {
        ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->done = 1;
}


/*
 * A request whose cost exceeds the burst of its limit is rejected however
 * long the client waits: its limit (a per-client one, or the burst divided
 * among the nodes while Redis is unreachable) holds fewer tokens than the
 * location takes.  Blocked clients are not meant here: they are told to
 * come back in a minute, when an operator may have lifted the block.
 */
static ngx_uint_t
ngx_http_rate_limit_never_fits(ngx_http_rate_limit_check_t *check)
{
    return check->decided
           && !check->decision.allowed
           && !ngx_http_rate_limit_params_blocked(&check->params)
           && check->limit->cost > check->params.burst;
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
    ngx_int_t                     rc;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    now_us = ngx_http_rate_limit_now_us();

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!ngx_http_rate_limit_never_fits(check)) {
            continue;
        }

        zone = check->limit->zone;

        rc = ngx_http_rate_limit_shm_nofit(zone, &check->key, now_us);

        if (rc == NGX_BUSY) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "rate_limit_zone \"%V\": requests whose cost "
                          "exceeds their burst came from more keys in the "
                          "last minute than the log names", &zone->name);
            continue;
        }

        if (rc != NGX_OK) {
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
                      check->params.burst,
                      ngx_http_rate_limit_source_name(check->source),
                      check->degraded ? ", divided among the live nodes "
                                        "while Redis is unreachable" : "");
    }
}


/*
 * The limit that RateLimit and the X-RateLimit-* headers describe: on a
 * rejection the rejecting limit that asks for the longest wait, one that
 * can never fit first; otherwise the one with the fewest tokens left.
 */
static ngx_http_rate_limit_check_t *
ngx_http_rate_limit_closest(ngx_http_rate_limit_ctx_t *ctx,
    ngx_uint_t rejected)
{
    ngx_uint_t                    i, never, closest_never;
    ngx_http_rate_limit_check_t  *check, *closest;

    closest = NULL;
    closest_never = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->decided || (rejected && check->decision.allowed)) {
            continue;
        }

        never = ngx_http_rate_limit_never_fits(check);

        if (closest == NULL
            || (rejected && never > closest_never)
            || (rejected && never == closest_never
                && check->decision.retry_after_us
                   > closest->decision.retry_after_us)
            || (!rejected && check->decision.remaining
                             < closest->decision.remaining))
        {
            closest = check;
            closest_never = never;
        }
    }

    return closest;
}


/*
 * The headers of draft-ietf-httpapi-ratelimit-headers-11, and the older
 * X-RateLimit-* and Retry-After.  RateLimit-Policy lists every limit the
 * request went through, in the order of its lines, so that it stays the
 * same from one response to the next; RateLimit, as the draft's B.1.2
 * allows, only the closest.  A limit that Redis failed to decide, and that
 * this node does not decide either, enforces nothing now and is left out.
 */
static ngx_int_t
ngx_http_rate_limit_set_headers(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, ngx_http_rate_limit_check_t *closest,
    ngx_uint_t rejected, ngx_uint_t retry_after)
{
    size_t                           len;
    u_char                          *p, *last;
    uint64_t                         reset_s, retry_s;
    ngx_uint_t                       i, never;
    ngx_http_rate_limit_zone_t      *zone;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_decision_t  *d;

    zone = closest->limit->zone;
    d = &closest->decision;
    never = ngx_http_rate_limit_never_fits(closest);

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
        check = &ctx->checks[i];

        if (check->failed) {
            continue;
        }

        if (last != p) {
            *last++ = ',';
            *last++ = ' ';
        }

        last = ngx_http_rate_limit_policy_item(last, check);
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
    last = ngx_http_rate_limit_decimal(last, d->remaining);

    if (!never) {
        last = ngx_cpymem(last, ";t=", sizeof(";t=") - 1);
        last = ngx_http_rate_limit_decimal(last,
                   ngx_http_rate_limit_window_s(closest, rejected));
    }

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_header, p,
                                       last - p)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = last;
    last = ngx_http_rate_limit_decimal(p, closest->params.burst);

    if (ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_limit_header,
                                       p, last - p)
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

    /* the times a client would wait for: none helps a cost that never fits */
    if (never) {
        return NGX_OK;
    }

    reset_s = (uint64_t) (d->reset_us + 999999) / 1000000;

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

    retry_s = ngx_http_rate_limit_window_s(closest, 1);

    p = last;
    last = ngx_http_rate_limit_decimal(p, retry_s);

    return ngx_http_rate_limit_add_header(r, &ngx_http_rate_limit_retry_header,
                                          p, last - p);
}


/*
 * "zone";q=Q;w=W as enforced for this request: a per-client limit, or the
 * share of this node while Redis is unreachable.  The window is the whole
 * seconds a full refill takes, at least one, and the quota what the window
 * admits at length: the burst, or what the rate refills in the window when
 * that is more, as a burst refilled in a fraction of the one second
 * advertised is refilled several times in it.  A blocked client has a
 * quota of 0.
 */
static u_char *
ngx_http_rate_limit_policy_item(u_char *p, ngx_http_rate_limit_check_t *check)
{
    uint64_t                       q, w;
    ngx_str_t                     *name;
    ngx_http_rate_limit_params_t  *params;

    name = &check->limit->zone->name;
    params = &check->params;

    if (ngx_http_rate_limit_params_blocked(params)) {
        q = 0;
        w = 1;

    } else {
        w = (uint64_t) (params->interval_us * params->burst + 999999)
            / 1000000;
        if (w == 0) {
            w = 1;
        }

        /* the margin keeps 1e6 / (5e5 / 3) from flooring to 5 */
        q = (uint64_t) (w * 1e6 / params->interval_us + 1e-6);
        q = ngx_max(q, params->burst);
    }

    *p++ = '"';
    p = ngx_cpymem(p, name->data, name->len);
    p = ngx_cpymem(p, "\";q=", sizeof("\";q=") - 1);
    p = ngx_http_rate_limit_decimal(p, q);
    p = ngx_cpymem(p, ";w=", sizeof(";w=") - 1);

    return ngx_http_rate_limit_decimal(p, w);
}


/*
 * The draft's effective window "t", in whole seconds rounded up and at
 * least one: the time within which the client can use no more than the
 * tokens left.  On a rejection, until the request's cost fits, as
 * Retry-After says.  Otherwise until a request of the same cost more than
 * those tokens allow fits: until cost more tokens have come in, or the
 * bucket is full, whichever is first.
 */
static uint64_t
ngx_http_rate_limit_window_s(ngx_http_rate_limit_check_t *check,
    ngx_uint_t rejected)
{
    int64_t                          wait_us;
    uint64_t                         later;
    ngx_http_rate_limit_decision_t  *d;

    d = &check->decision;

    if (rejected) {
        wait_us = d->retry_after_us;

    } else {
        /*
         * reset_us is the time the missing tokens take, the fraction of
         * one included: the last of them come in last
         */
        wait_us = d->reset_us;

        if (d->remaining + check->limit->cost < check->params.burst) {
            later = check->params.burst - d->remaining - check->limit->cost;
            wait_us -= (int64_t) later
                       * ngx_http_rate_limit_token_us(&check->params);
        }
    }

    return wait_us > 1000000 ? (uint64_t) (wait_us + 999999) / 1000000 : 1;
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
