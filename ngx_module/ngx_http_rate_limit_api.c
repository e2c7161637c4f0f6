
/*
 * The bucket API, a JSON content handler: reads the zones and the per-client
 * limits, and writes the limits to PostgreSQL, the source of truth.  The
 * node that serves a write applies it at once; the other nodes hear of it
 * through NOTIFY.  Each worker keeps one connection for the API and runs
 * its queries one after another.
 */


#include "ngx_http_rate_limit_module.h"


/* room for a key of NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX bytes, as it is */
#define NGX_HTTP_RATE_LIMIT_API_BODY_MAX    8192
#define NGX_HTTP_RATE_LIMIT_API_PAGE        100
#define NGX_HTTP_RATE_LIMIT_API_PAGE_MAX    1000

/* PostgreSQL's CHECK allows 15 digits of count */
#define NGX_HTTP_RATE_LIMIT_API_COUNT_MAX   999999999999999ULL


typedef enum {
    NGX_HTTP_RATE_LIMIT_API_LIST = 0,
    NGX_HTTP_RATE_LIMIT_API_CREATE,
    NGX_HTTP_RATE_LIMIT_API_UPDATE,
    NGX_HTTP_RATE_LIMIT_API_DELETE
} ngx_http_rate_limit_api_query_e;


/* a query waiting for, or in, the worker's API connection */
typedef struct {
    ngx_queue_t                        queue;
    ngx_http_request_t                *request;   /* NULL once gone */
    ngx_http_rate_limit_api_query_e    kind;
    ngx_http_rate_limit_zone_t        *zone;
    ngx_str_t                          key;
    ngx_http_rate_limit_rate_t         rate;
    uint64_t                           burst;
    ngx_uint_t                         limit;
    const char                        *params[4];
    int                                nparams;
    ngx_str_t                          body;      /* the response, built */
    ngx_int_t                          status;
    const char                        *error;
} ngx_http_rate_limit_api_op_t;


typedef struct {
    ngx_http_rate_limit_pg_conn_t      pc;
    ngx_queue_t                        ops;
    ngx_http_rate_limit_api_op_t      *running;
    char                              *setup;    /* settings, schema */
    unsigned                           ready:1;
    unsigned                           setting_up:2;    /* 1, 2: recovering */
    unsigned                           setup_failed:1;
} ngx_http_rate_limit_api_pg_t;


typedef struct {
    ngx_str_t                          zone;
    ngx_str_t                          key;      /* decoded */
    ngx_int_t                          status;   /* when not routed */
    const char                        *error;
    const char                        *allow;
    unsigned                           has_key:1;
    unsigned                           zones:1;
} ngx_http_rate_limit_api_route_t;


static ngx_int_t ngx_http_rate_limit_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_authorized(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf);
static ngx_int_t ngx_http_rate_limit_api_route(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf,
    ngx_http_rate_limit_api_route_t *route);
static ngx_int_t ngx_http_rate_limit_api_unescape(ngx_pool_t *pool,
    u_char *p, u_char *last, ngx_str_t *out);
static ngx_int_t ngx_http_rate_limit_api_text(ngx_str_t *s);
static ngx_int_t ngx_http_rate_limit_api_header(ngx_http_request_t *r,
    const char *name, const char *value);
static ngx_int_t ngx_http_rate_limit_api_zones(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_get(ngx_http_request_t *r,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *key);
static void ngx_http_rate_limit_api_tokens(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_bucket(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check, ngx_str_t *key, ngx_int_t tokens);
static void ngx_http_rate_limit_api_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_rate_limit_api_enqueue(ngx_http_request_t *r,
    ngx_http_rate_limit_api_op_t *op);
static void ngx_http_rate_limit_api_cleanup(void *data);
static void ngx_http_rate_limit_api_next(void);
static void ngx_http_rate_limit_api_ready(ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_api_result(ngx_http_rate_limit_pg_conn_t *pc,
    PGresult *res);
static void ngx_http_rate_limit_api_failed(ngx_http_rate_limit_pg_conn_t *pc,
    const char *reason);
static void ngx_http_rate_limit_api_finish(ngx_http_rate_limit_api_op_t *op);
static ngx_int_t ngx_http_rate_limit_api_list(ngx_http_rate_limit_api_op_t *op,
    PGresult *res);
static ngx_int_t ngx_http_rate_limit_api_written(
    ngx_http_rate_limit_api_op_t *op, PGresult *res);
static ngx_int_t ngx_http_rate_limit_api_error(ngx_http_request_t *r,
    ngx_int_t status, const char *fmt, ...);
static ngx_int_t ngx_http_rate_limit_api_send(ngx_http_request_t *r,
    ngx_int_t status, u_char *body, size_t len);
static u_char *ngx_http_rate_limit_api_rate(u_char *p,
    ngx_http_rate_limit_rate_t *rate);
static u_char *ngx_http_rate_limit_api_string(u_char *p, u_char *s,
    size_t len);
static size_t ngx_http_rate_limit_api_string_len(u_char *s, size_t len);


static ngx_http_rate_limit_api_pg_t  ngx_http_rate_limit_api_pg;


/* a write returns its transaction: no sync that missed it may undo it */
static const char  *ngx_http_rate_limit_api_sql[] = {
    "SELECT key, rate, burst FROM rate_limit_buckets "
    "WHERE zone = $1 AND key > $2 ORDER BY key LIMIT $3",

    "INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING "
    "RETURNING key, pg_current_xact_id()::text",

    "UPDATE rate_limit_buckets SET rate = $3, burst = $4 "
    "WHERE zone = $1 AND key = $2 RETURNING key, pg_current_xact_id()::text",

    "DELETE FROM rate_limit_buckets WHERE zone = $1 AND key = $2 "
    "RETURNING key, pg_current_xact_id()::text"
};


/*
 * A row locked by another writer must not hold up this worker's queue: the
 * write gives up after a second, and no query runs longer than five.  The
 * schema comes next, for a write may come before the syncing worker has
 * created it; it is idempotent, and the advisory lock in it waits for the
 * syncing worker's run.
 */
#define NGX_HTTP_RATE_LIMIT_API_SETTINGS                                      \
    "SET lock_timeout = '1s'; SET statement_timeout = '5s';\n"

static const char  ngx_http_rate_limit_api_settings[] =
    NGX_HTTP_RATE_LIMIT_API_SETTINGS;

/* a failed schema leaves its transaction aborted, and undoes the settings */
static const char  ngx_http_rate_limit_api_recover[] =
    "ROLLBACK; " NGX_HTTP_RATE_LIMIT_API_SETTINGS;


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
    u_char      *value;
    ngx_str_t   *names;
    ngx_uint_t   i;

    if (rmcf->api_token_envs == NULL || ngx_worker != 0) {
        return NGX_OK;
    }

    names = rmcf->api_token_envs->elts;

    for (i = 0; i < rmcf->api_token_envs->nelts; i++) {
        value = (u_char *) getenv((char *) names[i].data);

        if (value == NULL) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "rate_limit_api_token: environment variable "
                          "\"%V\" is not set, so its API locations refuse "
                          "every request; add \"env %V;\" to nginx.conf",
                          &names[i], &names[i]);

        } else if (*value == '\0') {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "rate_limit_api_token: environment variable "
                          "\"%V\" is empty, so its API locations refuse "
                          "every request", &names[i]);
        }
    }

    return NGX_OK;
}


/* nginx counts a socket still watched at exit as a leak */
void
ngx_http_rate_limit_api_exit_process(void)
{
    ngx_http_rate_limit_pg_close(&ngx_http_rate_limit_api_pg.pc);
}


static ngx_int_t
ngx_http_rate_limit_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_str_t                         value;
    ngx_http_rate_limit_ctx_t        *ctx;
    ngx_http_rate_limit_zone_t       *zone;
    ngx_http_rate_limit_api_op_t     *op;
    ngx_http_rate_limit_loc_conf_t   *rlcf;
    ngx_http_rate_limit_main_conf_t  *rmcf;
    ngx_http_rate_limit_api_route_t   route;

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_rate_limit_module);
    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    if (ngx_http_rate_limit_api_authorized(r, rlcf) != NGX_OK) {
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_error(r, NGX_HTTP_UNAUTHORIZED,
                                             "a valid bearer token is "
                                             "required");
    }

    rc = ngx_http_rate_limit_api_route(r, rlcf, &route);
    if (rc != NGX_OK) {
        ngx_http_discard_request_body(r);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        if (route.allow
            && ngx_http_rate_limit_api_header(r, "Allow", route.allow)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_rate_limit_api_error(r, route.status, "%s",
                                             route.error);
    }

    if (route.zones) {
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_zones(r);
    }

    /* an empty zone is no route at all: unknown, as it always was */
    if (route.zone.len
        && !ngx_http_rate_limit_valid_zone_name(route.zone.data,
                                                route.zone.len))
    {
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                   "invalid zone name, expected 1 to %d of "
                   "A-Z a-z 0-9 _ . -", NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX);
    }

    zone = ngx_http_rate_limit_zone_find(rmcf, route.zone.data,
                                         route.zone.len);

    if (zone == NULL || !zone->defined) {
        ngx_http_discard_request_body(r);
        return ngx_http_rate_limit_api_error(r, NGX_HTTP_NOT_FOUND,
                                             "unknown zone \"%V\"",
                                             &route.zone);
    }

    if (r->method == NGX_HTTP_POST || r->method == NGX_HTTP_PUT) {

        if (r->headers_in.content_length_n
            > NGX_HTTP_RATE_LIMIT_API_BODY_MAX)
        {
            ngx_http_discard_request_body(r);
            return ngx_http_rate_limit_api_error(r,
                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                       "the body is larger than %d bytes",
                       NGX_HTTP_RATE_LIMIT_API_BODY_MAX);
        }

        op = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_api_op_t));
        if (op == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        op->zone = zone;
        op->key = route.key;
        op->kind = (r->method == NGX_HTTP_POST)
                   ? NGX_HTTP_RATE_LIMIT_API_CREATE
                   : NGX_HTTP_RATE_LIMIT_API_UPDATE;

        ctx = ngx_http_rate_limit_create_ctx(r, 0);
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
    }

    ngx_http_discard_request_body(r);

    if ((r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) && route.has_key) {
        return ngx_http_rate_limit_api_get(r, zone, &route.key);
    }

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_api_op_t));
    if (op == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->zone = zone;
    op->key = route.key;
    op->kind = (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))
               ? NGX_HTTP_RATE_LIMIT_API_LIST : NGX_HTTP_RATE_LIMIT_API_DELETE;

    if (op->kind == NGX_HTTP_RATE_LIMIT_API_LIST) {
        op->limit = NGX_HTTP_RATE_LIMIT_API_PAGE;

        if (ngx_http_arg(r, (u_char *) "limit", 5, &value) == NGX_OK) {
            rc = ngx_atoi(value.data, value.len);

            if (rc <= 0 || rc > NGX_HTTP_RATE_LIMIT_API_PAGE_MAX) {
                return ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                           "limit must be a whole number from 1 to %d",
                           NGX_HTTP_RATE_LIMIT_API_PAGE_MAX);
            }

            op->limit = rc;
        }

        ngx_str_set(&op->key, "");

        if (ngx_http_arg(r, (u_char *) "after", 5, &value) == NGX_OK) {
            rc = ngx_http_rate_limit_api_unescape(r->pool, value.data,
                                                  value.data + value.len,
                                                  &op->key);
            if (rc == NGX_ERROR) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            if (rc == NGX_DECLINED) {
                return ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                           "after holds a malformed percent escape: a "
                           "\"%%\" must begin %%XX, two hex digits (a "
                           "literal \"%%\" is %%25)");
            }

            if (ngx_http_rate_limit_api_text(&op->key) != NGX_OK) {
                return ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                           "after must be UTF-8 without NUL bytes");
            }
        }
    }

    return ngx_http_rate_limit_api_enqueue(r, op);
}


/* the token is compared in constant time, whatever the bytes given */
static ngx_int_t
ngx_http_rate_limit_api_authorized(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf)
{
    u_char           diff;
    size_t           i, len;
    u_char          *token;
    ngx_str_t        given;
    ngx_table_elt_t *h;

    if (rlcf->api_token_env.len == 0) {
        return NGX_OK;
    }

    token = (u_char *) getenv((char *) rlcf->api_token_env.data);

    /* no token opens nothing; worker 0 said so when it started */
    if (token == NULL || *token == '\0') {
        return NGX_DECLINED;
    }

    h = r->headers_in.authorization;

    if (h == NULL || h->value.len < 7
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_DECLINED;
    }

    given.data = h->value.data + 7;
    given.len = h->value.len - 7;

    len = ngx_strlen(token);
    diff = (u_char) (given.len != len);

    for (i = 0; i < given.len; i++) {
        diff |= given.data[i] ^ token[len ? i % len : 0];
    }

    return diff ? NGX_DECLINED : NGX_OK;
}


/*
 * {base}zones, {base}buckets/{zone} or {base}buckets/{zone}/{key}.  Returns
 * NGX_DECLINED with the status and reason of a request that fits no route.
 */
static ngx_int_t
ngx_http_rate_limit_api_route(ngx_http_request_t *r,
    ngx_http_rate_limit_loc_conf_t *rlcf,
    ngx_http_rate_limit_api_route_t *route)
{
    u_char      *p, *last, *slash;
    ngx_uint_t   allowed;

    ngx_memzero(route, sizeof(ngx_http_rate_limit_api_route_t));

    route->status = NGX_HTTP_NOT_FOUND;
    route->error = "unknown path, expected zones, buckets/{zone} or "
                   "buckets/{zone}/{key}";

    /* the raw path: a key may hold an encoded "/" */
    p = r->unparsed_uri.data;
    last = r->args_start ? r->args_start - 1
                         : r->unparsed_uri.data + r->unparsed_uri.len;

    if ((size_t) (last - p) < rlcf->api_base.len
        || ngx_strncmp(p, rlcf->api_base.data, rlcf->api_base.len) != 0)
    {
        return NGX_DECLINED;
    }

    p += rlcf->api_base.len;

    if (p < last && *p == '/') {
        p++;
    }

    if ((size_t) (last - p) == sizeof("zones") - 1
        && ngx_strncmp(p, "zones", sizeof("zones") - 1) == 0)
    {
        route->zones = 1;
        allowed = NGX_HTTP_GET | NGX_HTTP_HEAD;
        route->allow = "GET, HEAD";
        goto method;
    }

    if ((size_t) (last - p) <= sizeof("buckets/") - 1
        || ngx_strncmp(p, "buckets/", sizeof("buckets/") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p += sizeof("buckets/") - 1;

    slash = ngx_strlchr(p, last, '/');

    route->zone.data = p;
    route->zone.len = (slash ? slash : last) - p;

    if (slash == NULL || slash + 1 == last) {
        allowed = NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_POST;
        route->allow = "GET, HEAD, POST";
        goto method;
    }

    route->has_key = 1;
    allowed = NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_PUT | NGX_HTTP_DELETE;

    route->status = NGX_HTTP_BAD_REQUEST;

    switch (ngx_http_rate_limit_api_unescape(r->pool, slash + 1, last,
                                             &route->key))
    {
    case NGX_ERROR:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;

    case NGX_DECLINED:
        route->error = "the key holds a malformed percent escape";
        return NGX_DECLINED;
    }

    /* as PostgreSQL and the policy file take keys */
    if (route->key.len > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
        route->error = "the key is longer than 4096 bytes";
        return NGX_DECLINED;
    }

    route->allow = "GET, HEAD, PUT, DELETE";

    /*
     * PostgreSQL stores UTF-8 text without NUL bytes, so only such a key can
     * be written; reading a key's limit takes any bytes, as a binary key
     * such as $binary_remote_addr needs.
     */
    if ((r->method & (NGX_HTTP_PUT|NGX_HTTP_DELETE))
        && ngx_http_rate_limit_api_text(&route->key) != NGX_OK)
    {
        route->error = "the key must be UTF-8 without NUL bytes";
        route->allow = NULL;
        return NGX_DECLINED;
    }

method:

    if (r->method & allowed) {
        return NGX_OK;
    }

    route->status = NGX_HTTP_NOT_ALLOWED;
    route->error = "method not allowed";

    return NGX_DECLINED;
}


/*
 * Decodes %XX escapes into a new string.  Unlike ngx_unescape_uri(), a "%"
 * that two hex digits do not follow is NGX_DECLINED, not taken as it is:
 * the client meant something else, and a guess would name another key.
 */
static ngx_int_t
ngx_http_rate_limit_api_unescape(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_str_t *out)
{
    u_char     *d;
    ngx_int_t   c;

    out->data = ngx_pnalloc(pool, ngx_max(last - p, 1));
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;

    while (p < last) {

        if (*p != '%') {
            *d++ = *p++;
            continue;
        }

        c = (last - p >= 3) ? ngx_hextoi(p + 1, 2) : NGX_ERROR;

        if (c == NGX_ERROR) {
            return NGX_DECLINED;
        }

        *d++ = (u_char) c;
        p += 3;
    }

    out->len = d - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rate_limit_api_text(ngx_str_t *s)
{
    u_char  *p, *last;

    p = s->data;
    last = s->data + s->len;

    while (p < last) {
        if (*p == '\0') {
            return NGX_ERROR;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        if (ngx_utf8_decode(&p, last - p) > 0x10ffff) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
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


static ngx_int_t
ngx_http_rate_limit_api_zones(ngx_http_request_t *r)
{
    u_char                            *body, *p;
    size_t                             len;
    ngx_uint_t                         i;
    ngx_http_rate_limit_zone_t       **zones, *zone;
    ngx_http_rate_limit_main_conf_t   *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    zones = rmcf->zones.elts;
    len = sizeof("{\"zones\":[]}");

    for (i = 0; i < rmcf->zones.nelts; i++) {
        len += zones[i]->name.len + 3 * NGX_INT64_LEN + 128;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"zones\":[", sizeof("{\"zones\":[") - 1);

    for (i = 0; i < rmcf->zones.nelts; i++) {
        zone = zones[i];

        p = ngx_sprintf(p, "%s{\"name\":\"%V\",\"rate\":\"", i ? "," : "",
                        &zone->name);
        p = ngx_http_rate_limit_api_rate(p, &zone->rate);
        p = ngx_sprintf(p, "\",\"burst\":%uL,\"backend\":\"%s\","
                        "\"on_failure\":\"%s\",\"policy_entries\":%ui}",
                        zone->params.burst,
                        zone->backend == NGX_HTTP_RATE_LIMIT_BACKEND_REDIS
                        ? "redis" : "local",
                        ngx_http_rate_limit_on_failure_name(zone->on_failure),
                        zone->policy.nelts);
    }

    p = ngx_cpymem(p, "]}", 2);

    return ngx_http_rate_limit_api_send(r, NGX_HTTP_OK, body, p - body);
}


/* the limit in force for a key, where it comes from, and its tokens now */
static ngx_int_t
ngx_http_rate_limit_api_get(ngx_http_request_t *r,
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *key)
{
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_limit_t     *limit;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_decision_t   d;

    ctx = ngx_http_rate_limit_create_ctx(r, 1);
    limit = ngx_pcalloc(r->pool, sizeof(ngx_http_rate_limit_limit_t));

    if (ctx == NULL || limit == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a cost of 0 reads a bucket without taking from it */
    limit->zone = zone;
    ngx_str_set(&limit->cost_arg, "0");

    check = &ctx->checks[0];
    ctx->nchecks = 1;
    ctx->resume = ngx_http_rate_limit_api_tokens;

    check->limit = limit;
    check->key.data = ngx_pnalloc(r->pool, NGX_HTTP_RATE_LIMIT_KEY_MAX);
    if (check->key.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    check->key.len = ngx_http_rate_limit_encode_key(key->data, key->len,
                                                    check->key.data);

    ctx->api_key = *key;

    if (ngx_http_rate_limit_find_limit(r, check) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (zone->backend == NGX_HTTP_RATE_LIMIT_BACKEND_LOCAL) {
        if (ngx_http_rate_limit_shm_peek(zone, &check->key,
                                         &check->verdict_in->params,
                                         ngx_http_rate_limit_now_us(), &d)
            != NGX_OK)
        {
            return ngx_http_rate_limit_api_bucket(r, check, key, -1);
        }

        return ngx_http_rate_limit_api_bucket(r, check, key,
                                              (ngx_int_t) d.remaining);
    }

    if (ngx_http_rate_limit_params_blocked(&check->verdict_in->params)) {
        return ngx_http_rate_limit_api_bucket(r, check, key, 0);
    }

    check->redis = 1;
    ctx->nredis = 1;

    if (ngx_http_rate_limit_ask_redis(r, ctx) != NGX_OK) {
        return ngx_http_rate_limit_api_bucket(r, check, key, -1);
    }

    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_rate_limit_api_tokens(ngx_http_request_t *r)
{
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_check_t  *check;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);
    check = &ctx->checks[0];

    ngx_http_finalize_request(r,
        ngx_http_rate_limit_api_bucket(r, check, &ctx->api_key,
                                       check->verdict_in->decided
                                       ? (ngx_int_t)
                                         check->verdict_in->decision.remaining
                                       : -1));
}


/* tokens -1: unknown, for Redis could not say */
static ngx_int_t
ngx_http_rate_limit_api_bucket(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check, ngx_str_t *key, ngx_int_t tokens)
{
    u_char  *body, *p;

    body = ngx_pnalloc(r->pool, check->limit->zone->name.len
                                + ngx_http_rate_limit_api_string_len(key->data,
                                                                     key->len)
                                + 4 * NGX_INT64_LEN + 128);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"zone\":\"%V\",\"key\":",
                    &check->limit->zone->name);
    p = ngx_http_rate_limit_api_string(p, key->data, key->len);

    p = ngx_cpymem(p, ",\"rate\":\"", sizeof(",\"rate\":\"") - 1);
    p = ngx_http_rate_limit_api_rate(p, &check->rate);
    p = ngx_sprintf(p, "\",\"burst\":%uL,\"source\":\"%s\",\"tokens\":",
                    check->verdict_in->params.burst,
                    ngx_http_rate_limit_source_name(check->source));

    if (tokens < 0) {
        p = ngx_cpymem(p, "null}", 5);

    } else {
        p = ngx_sprintf(p, "%i}", tokens);
    }

    return ngx_http_rate_limit_api_send(r, NGX_HTTP_OK, body, p - body);
}


/* POST and PUT, once the body is read */
static void
ngx_http_rate_limit_api_body(ngx_http_request_t *r)
{
    char                               err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    u_char                            *data, *p;
    size_t                             len;
    ngx_chain_t                       *cl;
    ngx_http_rate_limit_ctx_t         *ctx;
    ngx_http_rate_limit_api_op_t      *op;
    ngx_http_rate_limit_bucket_body_t  body;

    ctx = ngx_http_get_module_ctx(r, ngx_http_rate_limit_module);
    op = ctx->api_op;

    len = 0;

    if (r->request_body && !r->request_body->temp_file) {
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            len += ngx_buf_size(cl->buf);
        }
    }

    if ((r->request_body && r->request_body->temp_file)
        || len > NGX_HTTP_RATE_LIMIT_API_BODY_MAX)
    {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "the body is larger than %d bytes",
                                          NGX_HTTP_RATE_LIMIT_API_BODY_MAX));
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

    if (ngx_http_rate_limit_parse_bucket_body((char *) data, len,
                                              op->kind
                                              == NGX_HTTP_RATE_LIMIT_API_CREATE,
                                              &body, err, sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST, "%s", err));
        return;
    }

    if (op->kind == NGX_HTTP_RATE_LIMIT_API_CREATE) {
        op->key.data = ngx_pnalloc(r->pool, body.key_len);
        if (op->key.data == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        op->key.len = body.key_len;
        ngx_memcpy(op->key.data, body.key, body.key_len);

    } else if (body.key_len
               && (body.key_len != op->key.len
                   || ngx_memcmp(body.key, op->key.data, body.key_len) != 0))
    {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                                          "the key in the body differs from "
                                          "the key in the path"));
        return;
    }

    /* PostgreSQL stores UTF-8 text: a NUL byte cannot be a key there */
    if (ngx_http_rate_limit_api_text(&op->key) != NGX_OK) {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                                          "the key must be UTF-8 without NUL "
                                          "bytes"));
        return;
    }

    if (body.rate.count > NGX_HTTP_RATE_LIMIT_API_COUNT_MAX) {
        ngx_http_finalize_request(r,
            ngx_http_rate_limit_api_error(r, NGX_HTTP_BAD_REQUEST,
                                          "the rate's count is too large"));
        return;
    }

    op->rate = body.rate;
    op->burst = body.burst;

    ngx_http_finalize_request(r, ngx_http_rate_limit_api_enqueue(r, op));
}


static ngx_int_t
ngx_http_rate_limit_api_enqueue(ngx_http_request_t *r,
    ngx_http_rate_limit_api_op_t *op)
{
    u_char                           *p;
    size_t                            len;
    const char                       *schema;
    ngx_pool_cleanup_t               *cln;
    ngx_http_rate_limit_api_pg_t     *api = &ngx_http_rate_limit_api_pg;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = ngx_http_get_module_main_conf(r, ngx_http_rate_limit_module);

    if (rmcf->pg_conninfo.data == NULL) {
        return ngx_http_rate_limit_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "no \"rate_limit_postgres\" is "
                                             "configured: per-client limits "
                                             "cannot be listed or written");
    }

    /* zone and key are NUL ended for libpq, which takes C strings */
    p = ngx_pnalloc(r->pool, op->zone->name.len + op->key.len
                             + 3 * NGX_INT64_LEN + 32);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    op->params[0] = (char *) p;
    p = ngx_sprintf(p, "%V%Z", &op->zone->name);

    op->params[1] = (char *) p;
    p = ngx_sprintf(p, "%V%Z", &op->key);

    switch (op->kind) {

    case NGX_HTTP_RATE_LIMIT_API_LIST:
        op->params[2] = (char *) p;
        p = ngx_sprintf(p, "%ui%Z", op->limit);
        op->nparams = 3;
        break;

    case NGX_HTTP_RATE_LIMIT_API_DELETE:
        op->nparams = 2;
        break;

    default:
        op->params[2] = (char *) p;
        p = ngx_http_rate_limit_api_rate(p, &op->rate);
        *p++ = '\0';
        op->params[3] = (char *) p;
        p = ngx_sprintf(p, "%uL%Z", op->burst);
        op->nparams = 4;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_rate_limit_api_cleanup;
    cln->data = op;

    op->request = r;

    if (api->pc.log == NULL) {
        schema = ngx_http_rate_limit_pg_schema(&len);

        api->setup = ngx_pnalloc(ngx_cycle->pool,
                                 sizeof(ngx_http_rate_limit_api_settings)
                                 + len);
        if (api->setup == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ngx_cpymem(api->setup, ngx_http_rate_limit_api_settings,
                              sizeof(ngx_http_rate_limit_api_settings) - 1),
                   schema, len + 1);

        ngx_queue_init(&api->ops);

        api->pc.log = ngx_cycle->log;
        api->pc.ready = ngx_http_rate_limit_api_ready;
        api->pc.result = ngx_http_rate_limit_api_result;
        api->pc.failed = ngx_http_rate_limit_api_failed;
    }

    api->pc.conninfo = (char *) rmcf->pg_conninfo.data;

    ngx_queue_insert_tail(&api->ops, &op->queue);

    r->main->count++;

    if (api->pc.conn == NULL) {
        api->ready = 0;
        (void) ngx_http_rate_limit_pg_connect(&api->pc);

    } else {
        ngx_http_rate_limit_api_next();
    }

    return NGX_DONE;
}


/* a request that goes away leaves its query to finish unanswered */
static void
ngx_http_rate_limit_api_cleanup(void *data)
{
    ngx_http_rate_limit_api_op_t  *op = data;
    ngx_http_rate_limit_api_pg_t  *api = &ngx_http_rate_limit_api_pg;

    op->request = NULL;

    if (api->running != op) {
        ngx_queue_remove(&op->queue);
        return;
    }

    /* the running op lives in the request's pool: forget it */
    api->running = NULL;
}


static void
ngx_http_rate_limit_api_next(void)
{
    ngx_queue_t                   *q;
    ngx_http_rate_limit_api_op_t  *op;
    ngx_http_rate_limit_api_pg_t  *api = &ngx_http_rate_limit_api_pg;

    if (!api->ready || api->pc.busy || ngx_queue_empty(&api->ops)) {
        return;
    }

    q = ngx_queue_head(&api->ops);
    ngx_queue_remove(q);

    op = ngx_queue_data(q, ngx_http_rate_limit_api_op_t, queue);
    api->running = op;

    /* the op joins no queue while it runs: its cleanup must not unlink */
    ngx_queue_init(&op->queue);

    if (ngx_http_rate_limit_pg_send(&api->pc,
                                    ngx_http_rate_limit_api_sql[op->kind],
                                    op->nparams, op->params, 0)
        != NGX_OK)
    {
        /* failed() has answered every op already */
        return;
    }
}


/* the writes wait for the settings and the schema: see the settings */
static void
ngx_http_rate_limit_api_ready(ngx_http_rate_limit_pg_conn_t *pc)
{
    ngx_http_rate_limit_api_pg_t  *api = &ngx_http_rate_limit_api_pg;

    api->ready = 1;
    api->setting_up = 1;
    api->setup_failed = 0;

    (void) ngx_http_rate_limit_pg_send(pc, api->setup, 0, NULL, 0);
}


static void
ngx_http_rate_limit_api_result(ngx_http_rate_limit_pg_conn_t *pc,
    PGresult *res)
{
    char                          *sqlstate;
    ngx_http_rate_limit_api_op_t  *op;
    ngx_http_rate_limit_api_pg_t  *api = &ngx_http_rate_limit_api_pg;

    if (api->setting_up) {

        if (res) {
            if (PQresultStatus(res) == PGRES_FATAL_ERROR
                && api->setting_up == 1)
            {
                /* a role that may not create tables may write a table made */
                ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                              "rate_limit_api: cannot create the schema: %s",
                              PQresultErrorMessage(res));
                api->setup_failed = 1;
            }

            return;
        }

        if (api->setting_up == 1 && api->setup_failed) {
            api->setting_up = 2;
            (void) ngx_http_rate_limit_pg_send(pc,
                                               ngx_http_rate_limit_api_recover,
                                               0, NULL, 0);
            return;
        }

        api->setting_up = 0;
        ngx_http_rate_limit_api_next();
        return;
    }

    op = api->running;

    if (res == NULL) {
        api->running = NULL;

        if (op) {
            ngx_http_rate_limit_api_finish(op);
        }

        ngx_http_rate_limit_api_next();
        return;
    }

    if (op == NULL || op->status) {
        return;
    }

    switch (PQresultStatus(res)) {

    case PGRES_TUPLES_OK:
        if (op->kind == NGX_HTTP_RATE_LIMIT_API_LIST) {
            op->status = ngx_http_rate_limit_api_list(op, res);
            return;
        }

        op->status = PQntuples(res) ? ngx_http_rate_limit_api_written(op, res)
                     : (op->kind == NGX_HTTP_RATE_LIMIT_API_CREATE
                        ? NGX_HTTP_CONFLICT : NGX_HTTP_NOT_FOUND);
        return;

    default:
        sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        /* lock_not_available: another writer holds the row */
        if (sqlstate && ngx_strcmp(sqlstate, "55P03") == 0) {
            op->status = NGX_HTTP_CONFLICT;
            op->error = "the bucket is being changed by another writer, "
                        "try again";
            return;
        }

        ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                      "rate_limit_api: query failed: %s",
                      PQresultErrorMessage(res));

        op->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    }
}


static void
ngx_http_rate_limit_api_failed(ngx_http_rate_limit_pg_conn_t *pc,
    const char *reason)
{
    ngx_queue_t                   *q;
    ngx_http_rate_limit_api_op_t  *op;
    ngx_http_rate_limit_api_pg_t  *api = &ngx_http_rate_limit_api_pg;

    ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                  "rate_limit_api: PostgreSQL is unavailable (%s)", reason);

    api->ready = 0;

    op = api->running;
    api->running = NULL;

    if (op) {
        op->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_rate_limit_api_finish(op);
    }

    while (!ngx_queue_empty(&api->ops)) {
        q = ngx_queue_head(&api->ops);
        ngx_queue_remove(q);
        ngx_queue_init(q);

        op = ngx_queue_data(q, ngx_http_rate_limit_api_op_t, queue);
        op->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_rate_limit_api_finish(op);
    }
}


static void
ngx_http_rate_limit_api_finish(ngx_http_rate_limit_api_op_t *op)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = op->request;

    if (r == NULL) {
        return;
    }

    c = r->connection;

    switch (op->status) {

    case 0:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        rc = ngx_http_rate_limit_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "PostgreSQL is unavailable");
        break;

    case NGX_HTTP_CONFLICT:
        rc = ngx_http_rate_limit_api_error(r, NGX_HTTP_CONFLICT, "%s",
                                           op->error ? op->error
                                           : "the bucket exists already");
        break;

    case NGX_HTTP_NOT_FOUND:
        rc = ngx_http_rate_limit_api_error(r, NGX_HTTP_NOT_FOUND,
                                           "no such bucket");
        break;

    case NGX_HTTP_NO_CONTENT:
        rc = ngx_http_rate_limit_api_send(r, NGX_HTTP_NO_CONTENT, NULL, 0);
        break;

    default:
        rc = ngx_http_rate_limit_api_send(r, op->status, op->body.data,
                                          op->body.len);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_rate_limit_api_list(ngx_http_rate_limit_api_op_t *op, PGresult *res)
{
    int          i, n;
    u_char      *p, *key;
    size_t       len, klen;
    ngx_str_t    zone;

    n = PQntuples(res);
    zone = op->zone->name;

    len = sizeof("{\"zone\":\"\",\"buckets\":[],\"next\":}") + zone.len
          + 2 * NGX_HTTP_RATE_LIMIT_KEY_MAX;

    for (i = 0; i < n; i++) {
        len += ngx_http_rate_limit_api_string_len(
                   (u_char *) PQgetvalue(res, i, 0), PQgetlength(res, i, 0))
               + PQgetlength(res, i, 1) + NGX_INT64_LEN + 40;
    }

    p = ngx_pnalloc(op->request->pool, len);
    if (p == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    op->body.data = p;

    p = ngx_sprintf(p, "{\"zone\":\"%V\",\"buckets\":[", &zone);

    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, i ? ",{\"key\":" : "{\"key\":", i ? 8 : 7);
        p = ngx_http_rate_limit_api_string(p,
                                           (u_char *) PQgetvalue(res, i, 0),
                                           PQgetlength(res, i, 0));
        p = ngx_sprintf(p, ",\"rate\":\"%*s\",\"burst\":",
                        (size_t) PQgetlength(res, i, 1), PQgetvalue(res, i, 1));

        if (PQgetisnull(res, i, 2)) {
            p = ngx_cpymem(p, "null}", 5);

        } else {
            p = ngx_sprintf(p, "%*s}", (size_t) PQgetlength(res, i, 2),
                            PQgetvalue(res, i, 2));
        }
    }

    p = ngx_cpymem(p, "],\"next\":", sizeof("],\"next\":") - 1);

    if (n > 0 && (ngx_uint_t) n == op->limit) {
        key = (u_char *) PQgetvalue(res, n - 1, 0);
        klen = PQgetlength(res, n - 1, 0);

        /* the last key was measured above with the others */
        p = ngx_http_rate_limit_api_string(p, key, klen);

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    *p++ = '}';

    op->body.len = p - op->body.data;

    return NGX_HTTP_OK;
}


/* the serving node applies its own write at once: key, transaction */
static ngx_int_t
ngx_http_rate_limit_api_written(ngx_http_rate_limit_api_op_t *op,
    PGresult *res)
{
    char                         err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    off_t                        txid;
    u_char                      *p;
    ngx_http_rate_limit_spec_t   spec;

    txid = ngx_atoof((u_char *) PQgetvalue(res, 0, 1),
                     PQgetlength(res, 0, 1));

    /* unreadable, the write still applies, as one any sync may replace */
    if (txid == NGX_ERROR) {
        txid = 0;
    }

    if (op->kind == NGX_HTTP_RATE_LIMIT_API_DELETE) {
        ngx_http_rate_limit_sync_apply(op->zone, &op->key, NULL,
                                       (uint64_t) txid,
                                       op->request->connection->log);
        return NGX_HTTP_NO_CONTENT;
    }

    spec.rate = op->rate;

    if (ngx_http_rate_limit_make_params_blocking(&op->rate, op->burst,
                                                 &spec.params, err,
                                                 sizeof(err))
        == NGX_HTTP_RATE_LIMIT_OK)
    {
        ngx_http_rate_limit_sync_apply(op->zone, &op->key, &spec,
                                       (uint64_t) txid,
                                       op->request->connection->log);
    }

    p = ngx_pnalloc(op->request->pool,
                    op->zone->name.len
                    + ngx_http_rate_limit_api_string_len(op->key.data,
                                                         op->key.len)
                    + 3 * NGX_INT64_LEN + 64);
    if (p == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    op->body.data = p;

    p = ngx_sprintf(p, "{\"zone\":\"%V\",\"key\":", &op->zone->name);
    p = ngx_http_rate_limit_api_string(p, op->key.data, op->key.len);
    p = ngx_cpymem(p, ",\"rate\":\"", sizeof(",\"rate\":\"") - 1);
    p = ngx_http_rate_limit_api_rate(p, &op->rate);
    p = ngx_sprintf(p, "\",\"burst\":%uL,\"source\":\"postgres\"}",
                    op->burst);

    op->body.len = p - op->body.data;

    return (op->kind == NGX_HTTP_RATE_LIMIT_API_CREATE) ? NGX_HTTP_CREATED
                                                        : NGX_HTTP_OK;
}


static ngx_int_t
ngx_http_rate_limit_api_error(ngx_http_request_t *r, ngx_int_t status,
    const char *fmt, ...)
{
    u_char   *body, *p;
    u_char    text[NGX_HTTP_RATE_LIMIT_ERR_LEN * 2];
    size_t    len;
    va_list   args;

    va_start(args, fmt);
    len = ngx_vslprintf(text, text + sizeof(text), fmt, args) - text;
    va_end(args);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\"}")
                                + ngx_http_rate_limit_api_string_len(text,
                                                                     len));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"error\":", sizeof("{\"error\":") - 1);
    p = ngx_http_rate_limit_api_string(p, text, len);
    *p++ = '}';

    if (status == NGX_HTTP_UNAUTHORIZED
        && ngx_http_rate_limit_api_header(r, "WWW-Authenticate", "Bearer")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_rate_limit_api_send(r, status, body, p - body);
}


static ngx_int_t
ngx_http_rate_limit_api_send(ngx_http_request_t *r, ngx_int_t status,
    u_char *body, size_t len)
{
    static ngx_str_t  json = ngx_string("application/json");

    return ngx_http_rate_limit_send(r, status, &json, body, len);
}


/* "N r/PERIOD" with the largest whole unit, as the table's CHECK expects */
static u_char *
ngx_http_rate_limit_api_rate(u_char *p, ngx_http_rate_limit_rate_t *rate)
{
    ngx_uint_t  i;

    static struct {
        uint64_t    ms;
        const char *unit;
    } units[] = {
        { 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
        { 1, "ms" }
    };

    for (i = 0; i < sizeof(units) / sizeof(units[0]) - 1; i++) {
        if (rate->period_ms % units[i].ms == 0) {
            break;
        }
    }

    if (rate->period_ms == units[i].ms) {
        return ngx_sprintf(p, "%uLr/%s", rate->count, units[i].unit);
    }

    return ngx_sprintf(p, "%uLr/%uL%s", rate->count,
                       rate->period_ms / units[i].ms, units[i].unit);
}


static u_char *
ngx_http_rate_limit_api_string(u_char *p, u_char *s, size_t len)
{
    *p++ = '"';
    p += ngx_http_rate_limit_json_escape(s, len, p);
    *p++ = '"';

    return p;
}


static size_t
ngx_http_rate_limit_api_string_len(u_char *s, size_t len)
{
    return ngx_http_rate_limit_json_escape_len(s, len) + 2;
}
