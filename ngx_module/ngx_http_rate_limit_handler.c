
/*
 * The preaccess handler: evaluates each limit's key and hands the request
 * to the core's check (rl_check.h), which decides local limits at once
 * and Redis ones without blocking; then passes or rejects, with the
 * headers the check wrote.
 */


#include "ngx_http_rate_limit_module.h"


static int64_t ngx_http_rate_limit_check_now(void *data);
static void ngx_http_rate_limit_check_log(void *data, int level,
    const char *msg, size_t len);
static ngx_http_rate_limit_ctx_t *ngx_http_rate_limit_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_rate_limit_cleanup(void *data);
static void ngx_http_rate_limit_resume(void *data);
static void ngx_http_rate_limit_conf(ngx_http_request_t *r,
    rl_check_conf_t *conf);
static ngx_inline void ngx_http_rate_limit_apply(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, rl_check_result_t *result);


static const rl_check_host_t  ngx_http_rate_limit_check_host = {
    ngx_http_rate_limit_check_now,
    ngx_http_rate_limit_check_log
};


ngx_int_t
ngx_http_rate_limit_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        key;
    ngx_uint_t                       i;
    rl_check_result_t                result;
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_limit_t     *limits;
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

    ctx = ngx_http_rate_limit_create_ctx(r, rlcf->limits->nelts,
                                         ngx_http_rate_limit_resume);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    limits = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {

        if (ngx_http_complex_value(r, &limits[i].zone->key, &key) != NGX_OK
            || rl_check_add(ctx->check, &limits[i].zone->core, limits[i].cost,
                            (const char *) limits[i].cost_arg.data,
                            limits[i].cost_arg.len, key.data, key.len)
               != RL_CHECK_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* kept for rl_check_finish() when Redis has answered */
    ngx_http_rate_limit_conf(r, &ctx->conf);

    if (rl_check_decide(ctx->check, ngx_http_rate_limit_redis_client(),
                        &ctx->conf, &result)
        == RL_CHECK_WAIT)
    {
        ctx->done = 0;
        r->read_event_handler = ngx_http_test_reading;
        return NGX_AGAIN;
    }

    ngx_http_rate_limit_apply(r, ctx, &result);

    rc = ctx->rc;
    ctx->rc = NGX_DECLINED;

    return rc;
}


/* Redis has answered, or failed to: the phases go on where they stopped */
static void
ngx_http_rate_limit_resume(void *data)
{
    ngx_http_request_t *r = data;

    ngx_connection_t           *c;
    rl_check_result_t           result;
    ngx_http_rate_limit_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);

    rl_check_finish(ctx->check, &ctx->conf, &result);
    ngx_http_rate_limit_apply(r, ctx, &result);

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_rate_limit_conf(ngx_http_request_t *r, rl_check_conf_t *conf)
{
    ngx_http_rate_limit_loc_conf_t   *rlcf;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);
    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    conf->dry_run = rlcf->dry_run;
    conf->headers = rlcf->headers;
    conf->reject_level = rlcf->log_level;
    conf->log_level = r->connection->log->log_level;
    conf->shared = rmcf->redis_shared;
}


/* the verdict: the status to answer with, or none, and the headers */
static ngx_inline void
ngx_http_rate_limit_apply(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx, rl_check_result_t *result)
{
    ngx_table_elt_t                 *h;
    rl_check_header_t               *header, *last;
    ngx_http_rate_limit_loc_conf_t  *rlcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);

    ctx->done = 1;
    ctx->status = result->status;
    ctx->rc = result->reject ? (ngx_int_t) rlcf->status : NGX_DECLINED;

    last = result->headers + result->nheaders;

    for (header = result->headers; header < last; header++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            ctx->rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return;
        }

        h->hash = 1;
        h->key.len = header->name_len;
        h->key.data = (u_char *) header->name;
        h->value.len = header->value_len;
        h->value.data = (u_char *) header->value;
    }
}


/* monotonic, as nginx's timers: a wall clock stepping back cannot lock out */
static int64_t
ngx_http_rate_limit_check_now(void *data)
{
    return ngx_http_rate_limit_now_us();
}


/* the request's log, so that its context stays on the line */
static void
ngx_http_rate_limit_check_log(void *data, int level, const char *msg,
    size_t len)
{
    ngx_http_request_t *r = data;

    ngx_log_error((ngx_uint_t) level, r->connection->log, 0, "%*s", len,
                  msg);
}


/*
 * done: what the check calls once Redis has answered; NULL makes a ctx
 * without a check, for the bucket API's writes, which keep their op in it.
 */
ngx_http_rate_limit_ctx_t *
ngx_http_rate_limit_create_ctx(ngx_http_request_t *r, ngx_uint_t nlimits,
    void (*done)(void *data))
{
    rl_api_alloc_t              a;
    ngx_pool_cleanup_t         *cln;
    ngx_http_rate_limit_ctx_t  *ctx;

    /* one block for the ctx and the check */
    ctx = ngx_palloc(r->pool, sizeof(ngx_http_rate_limit_ctx_t)
                              + (done ? rl_check_size(nlimits) : 0));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_memzero(ctx, sizeof(ngx_http_rate_limit_ctx_t));

    /* nothing pending: after an internal redirect, the request goes on */
    ctx->rc = NGX_DECLINED;
    ctx->done = 1;

    if (done) {
        a = ngx_http_rate_limit_api_allocator(r->pool);
        ctx->check = rl_check_init(&ctx[1], &ngx_http_rate_limit_check_host,
                                   &a, nlimits, done, r);
    }

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

    /* no client once the worker has destroyed it: the decision went too */
    if (!ctx->done) {
        rl_check_cancel(ctx->check, ngx_http_rate_limit_redis_client());
    }
}


ngx_int_t
ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    size_t                      len;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_rate_limit_get_ctx(r->main);

    if (ctx == NULL || ctx->status == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = (u_char *) rl_check_status_name(ctx->status, &len);
    v->len = len;

    return NGX_OK;
}
