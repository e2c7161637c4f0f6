
/*
 * The bucket API's content handler: the glue between nginx and the core's
 * bucket API (core/include/rl_api.h), which routes, checks and writes every
 * answer.  Here are the I/O it asks for: the request body, and the tokens
 * of a bucket (the local zone or Redis).  The queries run in the core's
 * queue (rl_pg.h) on the worker's PostgreSQL connection, which applies a
 * write to this node's rows at once; the other nodes hear of it through
 * NOTIFY.
 */


#include "ngx_http_rate_limit_module.h"

#include <rl_api.h>


/* a request of the API, and its query in the core's queue */
typedef struct {
    ngx_http_request_t                *request;
    rl_api_plan_t                      plan;
    rl_api_reply_t                     reply;
    rl_pg_api_op_t                    *query;     /* NULL once answered */
} ngx_http_rate_limit_api_op_t;


static ngx_int_t ngx_http_rate_limit_api_handler(ngx_http_request_t *r);
static void *ngx_http_rate_limit_api_alloc(void *pool, size_t size);
static ngx_int_t ngx_http_rate_limit_api_authorized(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf);
static ngx_int_t ngx_http_rate_limit_api_zones(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_get(ngx_http_request_t *r,
    rl_api_plan_t *plan);
static void ngx_http_rate_limit_api_tokens(void *data);
static ngx_int_t ngx_http_rate_limit_api_bucket(ngx_http_request_t *r,
    rl_check_t *check);
static void ngx_http_rate_limit_api_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_enqueue(ngx_http_request_t *r,
    ngx_http_rate_limit_api_op_t *op);
static void ngx_http_rate_limit_api_cleanup(void *data);
static void ngx_http_rate_limit_api_answered(void *data);
static ngx_int_t ngx_http_rate_limit_api_refuse(ngx_http_request_t *r,
    rl_api_refusal_e why);
static ngx_int_t ngx_http_rate_limit_api_send(ngx_http_request_t *r,
    rl_api_reply_t *reply);
static ngx_int_t ngx_http_rate_limit_api_header(ngx_http_request_t *r,
    const char *name, const char *value);


static ngx_http_rate_limit_pg_host_t  ngx_http_rate_limit_api_host;


char *
ngx_http_rate_limit_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (rlcf->api_base.data) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

#if (NGX_PCRE)
    if (clcf->regex) {
        return "needs a prefix location, not a regular expression";
    }
#endif

    rlcf->api_base = clcf->name;
    clcf->handler = ngx_http_rate_limit_api_handler;

    return NGX_CONF_OK;
}


/*
 * A token variable missing or empty shuts the API's locations: said once
 * when the workers start, since every worker has the same environment.
 */
ngx_int_t
ngx_http_rate_limit_api_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    rl_conf_process_t  process;

    ngx_http_rate_limit_conf_process(cycle, &process);
    rl_conf_check_api_tokens(rmcf->conf, &process);

    return NGX_OK;
}


/* nginx counts a socket still watched at exit as a leak */
void
ngx_http_rate_limit_api_exit_process(void)
{
    ngx_http_rate_limit_pg_host_t  *host = &ngx_http_rate_limit_api_host;

    if (host->api) {
        rl_pg_api_destroy(host->api);
        host->api = NULL;
        ngx_http_rate_limit_pg_host_close(host);
    }
}


static ngx_int_t
ngx_http_rate_limit_api_handler(ngx_http_request_t *r)
{
    u_char                           *last;
    ngx_int_t                         rc;
    rl_api_alloc_t                    a;
    rl_api_reply_t                    reply;
    rl_api_request_t                  req;
    ngx_http_rate_limit_ctx_t        *ctx;
    ngx_http_rate_limit_api_op_t     *op;
    ngx_http_rate_limit_loc_conf_t   *rlcf;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);
    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    if (ngx_http_rate_limit_api_authorized(r, rlcf) != NGX_OK) {
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_refuse(r, RL_API_UNAUTHORIZED);
    }

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_api_op_t));
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    a = ngx_http_rate_limit_api_allocator(r->pool);

    /* the raw path: a key may hold an encoded "/" */
    last = r->args_start ? r->args_start - 1
                         : r->unparsed_uri.data + r->unparsed_uri.len;

    req.base = rlcf->api_base.data;
    req.base_len = rlcf->api_base.len;
    req.path = r->unparsed_uri.data;
    req.path_len = last - r->unparsed_uri.data;
    req.args = r->args.data;
    req.args_len = r->args.len;
    req.content_length = r->headers_in.content_length_n;
    req.find_zone = rl_conf_find_zone;
    req.data = rmcf->conf;

    req.method = rl_api_method(r->method_name.data, r->method_name.len);

    if (rl_api_route(&req, &a, &op->plan, &reply) != RL_API_OK) {
        ngx_http_discard_request_body(r);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    switch (op->plan.action) {

    case RL_API_CREATE:
    case RL_API_UPDATE:
        ctx = ngx_http_rate_limit_create_ctx(r, 0, NULL);
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->api_op = op;

        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r,
                                               ngx_http_rate_limit_api_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        return NGX_DONE;

    case RL_API_REPLY:
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_send(r, &reply);

    case RL_API_ZONES:
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_zones(r);

    case RL_API_GET:
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_get(r, &op->plan);

    default:
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_enqueue(r, op);
    }
}


static void *
ngx_http_rate_limit_api_alloc(void *pool, size_t size)
{
    return ngx_pnalloc(pool, size);
}


/* what the core gives lives as long as the request: in its pool */
rl_api_alloc_t
ngx_http_rate_limit_api_allocator(ngx_pool_t *pool)
{
    rl_api_alloc_t  a;

    a.alloc = ngx_http_rate_limit_api_alloc;
    a.data = pool;

    return a;
}


static ngx_int_t
ngx_http_rate_limit_api_authorized(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf)
{
    ngx_table_elt_t  *h;

    if (rlcf->api_token_env.len == 0) {
        return NGX_OK;
    }

    /* no token opens nothing; worker 0 said so when it started */
    h = r->headers_in.authorization;

    return rl_api_authorized(getenv((char *) rlcf->api_token_env.data),
                             h ? h->value.data : NULL, h ? h->value.len : 0)
           ? NGX_OK : NGX_DECLINED;
}


static ngx_int_t
ngx_http_rate_limit_api_zones(ngx_http_request_t *r)
{
    rl_api_alloc_t                     a;
    rl_api_reply_t                     reply;
    ngx_http_rate_limit_main_conf_t   *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);
    a = ngx_http_rate_limit_api_allocator(r->pool);

    if (rl_conf_api_zones(rmcf->conf, &a, &reply) != RL_CONF_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_api_send(r, &reply);
}


/* the limit in force for a key, where it comes from, and its tokens now */
static ngx_int_t
ngx_http_rate_limit_api_get(ngx_http_request_t *r, rl_api_plan_t *plan)
{
    ngx_http_rate_limit_ctx_t   *ctx;
    ngx_http_rate_limit_zone_t  *zone;

    zone = plan->host_zone;

    ctx = ngx_http_rate_limit_create_ctx(r, 1, ngx_http_rate_limit_api_tokens);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a cost of 0 reads a bucket without taking from it */
    if (rl_check_add(ctx->check, &zone->core, 0, "0", 1, plan->key,
                     plan->key_len)
        != RL_CHECK_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rl_check_peek(ctx->check, ngx_http_rate_limit_redis_client())
        == RL_CHECK_WAIT)
    {
        ctx->done = 0;
        r->main->count++;
        return NGX_DONE;
    }

    return ngx_http_rate_limit_api_bucket(r, ctx->check);
}


/* Redis has answered, or failed to */
static void
ngx_http_rate_limit_api_tokens(void *data)
{
    ngx_http_request_t *r = data;

    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);
    ctx->done = 1;

    ngx_http_finalize_request(r, ngx_http_rate_limit_api_bucket(r,
                                                                ctx->check));
}


static ngx_int_t
ngx_http_rate_limit_api_bucket(ngx_http_request_t *r, rl_check_t *check)
{
    rl_api_alloc_t  a;
    rl_api_reply_t  reply;

    a = ngx_http_rate_limit_api_allocator(r->pool);

    if (rl_check_bucket(check, &a, &reply) != RL_CHECK_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_api_send(r, &reply);
}


/* POST and PUT, once the body is read */
static void
ngx_http_rate_limit_api_body(ngx_http_request_t *r)
{
    u_char                        *data, *p;
    size_t                         len;
    ngx_chain_t                   *cl;
    rl_api_alloc_t                 a;
    rl_api_reply_t                 reply;
    ngx_http_rate_limit_ctx_t     *ctx;
    ngx_http_rate_limit_api_op_t  *op;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);
    op = ctx->api_op;

    len = 0;

    if (r->request_body && !r->request_body->temp_file) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
        }
    }

    if ((r->request_body && r->request_body->temp_file)
        || len > RL_API_BODY_MAX)
    {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_refuse(r, RL_API_TOO_LARGE));
        return;
    }

    /* the body may come in more than one buffer: JSON wants it whole */
    data = ngx_pnalloc(r->pool, len + 1);
    if (data == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = data;

    if (r->request_body) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            p = ngx_cpymem(p, cl->buf->pos, ngx_buf_size(cl->buf));
        }
    }

    a = ngx_http_rate_limit_api_allocator(r->pool);

    if (rl_api_body((char *) data, len, &a, &op->plan, &reply) != RL_API_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_finalize_request(r, op->plan.action == RL_API_REPLY
                                 ? ngx_http_rate_limit_api_send(r, &reply)
                                 : ngx_http_rate_limit_api_enqueue(r, op));
}


static ngx_int_t
ngx_http_rate_limit_api_enqueue(ngx_http_request_t *r,
    ngx_http_rate_limit_api_op_t *op)
{
    char                              err[RL_PG_ERR_LEN];
    const char                       *conninfo;
    rl_api_alloc_t                    a;
    ngx_pool_cleanup_t               *cln;
    ngx_http_rate_limit_zone_t       *zone;
    ngx_http_rate_limit_pg_host_t    *host = &ngx_http_rate_limit_api_host;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    conninfo = rl_conf_pg_conninfo(rmcf->conf);

    if (conninfo == NULL) {
        return ngx_http_rate_limit_api_refuse(r, RL_API_NO_POSTGRES);
    }

    if (host->api == NULL) {
        ngx_http_rate_limit_pg_host_init(host, ngx_cycle->log, NULL);

        host->api = rl_pg_api_create(conninfo, &host->adapter, err);
        if (host->api == NULL) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "rate_limit_api: %s", err);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    a = ngx_http_rate_limit_api_allocator(r->pool);
    zone = op->plan.host_zone;
    op->request = r;

    if (rl_pg_api_run(host->api, &op->plan, &zone->core.store, &a, &op->reply,
                      ngx_http_rate_limit_api_answered, op, &op->query)
        != RL_PG_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_rate_limit_api_cleanup;
    cln->data = op;

    r->main->count++;

    return NGX_DONE;
}


/* a request that goes away leaves its query to finish unanswered */
static void
ngx_http_rate_limit_api_cleanup(void *data)
{
    ngx_http_rate_limit_api_op_t  *op = data;

    if (op->query) {
        rl_pg_api_cancel(ngx_http_rate_limit_api_host.api, op->query);
    }
}


/* reply status 0: the core ran out of memory */
static void
ngx_http_rate_limit_api_answered(void *data)
{
    ngx_http_rate_limit_api_op_t  *op = data;

    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    op->query = NULL;
    r = op->request;
    c = r->connection;

    rc = op->reply.status ? ngx_http_rate_limit_api_send(r, &op->reply)
                          : NGX_HTTP_INTERNAL_SERVER_ERROR;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_rate_limit_api_refuse(ngx_http_request_t *r, rl_api_refusal_e why)
{
    rl_api_alloc_t  a;
    rl_api_reply_t  reply;

    a = ngx_http_rate_limit_api_allocator(r->pool);

    if (rl_api_refuse(why, &a, &reply) != RL_API_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_api_send(r, &reply);
}


static ngx_int_t
ngx_http_rate_limit_api_send(ngx_http_request_t *r, rl_api_reply_t *reply)
{
    static ngx_str_t  json = ngx_string("application/json");

    if (reply->allow
        && ngx_http_rate_limit_api_header(r, "Allow", reply->allow) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (reply->www_authenticate
        && ngx_http_rate_limit_api_header(r, "WWW-Authenticate", "Bearer")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_send(r, reply->status, &json, reply->body,
                                    reply->len);
}


static ngx_int_t
ngx_http_rate_limit_api_header(ngx_http_request_t *r, const char *name,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}
