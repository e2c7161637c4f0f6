
/*
 * Directives, configuration and process hooks.
 */


#include "ngx_http_rate_limit_module.h"


static ngx_int_t ngx_http_rate_limit_add_variables(ngx_conf_t *cf);
static void *ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf);
static rl_zone_t *ngx_http_rate_limit_new_zone(void *data, const u_char *name,
    size_t len);
static void ngx_http_rate_limit_conf_cleanup(void *data);
static char *ngx_http_rate_limit_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_rate_limit_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit_conf_uint(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static int ngx_http_rate_limit_resolve(void *data, const u_char *address,
    size_t len, unsigned default_port, rl_conf_resolved_t *out);
static char *ngx_http_rate_limit_policy_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_rate_limit_api_token(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_rate_limit_log_error(void *data, const char *msg);
static ngx_int_t ngx_http_rate_limit_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_rate_limit_init_process(ngx_cycle_t *cycle);
static void ngx_http_rate_limit_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_rate_limit_commands[] = {

    { ngx_string("rate_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_rate_limit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_rate_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_rate_limit_redis_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_rate_limit_postgres,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_rate_limit_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_rate_limit_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_api_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_rate_limit_api_token,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, api_token_env),
      NULL },

    { ngx_string("rate_limit_policy_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_rate_limit_policy_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rate_limit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_rate_limit_conf_uint,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, status),
      NULL },

    { ngx_string("rate_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, headers),
      NULL },

    { ngx_string("rate_limit_dry_run"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, dry_run),
      NULL },

    { ngx_string("rate_limit_log_level"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_rate_limit_conf_uint,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_rate_limit_loc_conf_t, log_level),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_rate_limit_module_ctx = {
    ngx_http_rate_limit_add_variables,     /* preconfiguration */
    ngx_http_rate_limit_init,              /* postconfiguration */

    ngx_http_rate_limit_create_main_conf,  /* create main configuration */
    ngx_http_rate_limit_init_main_conf,    /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_rate_limit_create_loc_conf,   /* create location configuration */
    ngx_http_rate_limit_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_rate_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_rate_limit_module_ctx,       /* module context */
    ngx_http_rate_limit_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_rate_limit_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_rate_limit_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_rate_limit_vars[] = {

    { ngx_string("rate_limit_status"), NULL,
      ngx_http_rate_limit_status_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_rate_limit_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_rate_limit_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static void *
ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf)
{
    rl_conf_host_t                    host;
    ngx_pool_cleanup_t               *cln;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    host.data = rmcf;
    host.page_size = ngx_pagesize;
    host.new_zone = ngx_http_rate_limit_new_zone;

    rmcf->pool = cf->pool;
    rmcf->conf = rl_conf_create(&host);
    if (rmcf->conf == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_rate_limit_conf_cleanup;
    cln->data = rmcf->conf;

    return rmcf;
}


/* a zone the core names: it lives as long as the configuration */
static rl_zone_t *
ngx_http_rate_limit_new_zone(void *data, const u_char *name, size_t len)
{
    ngx_http_rate_limit_main_conf_t *rmcf = data;

    ngx_http_rate_limit_zone_t  *zone;

    zone = ngx_pcalloc(rmcf->pool, sizeof(ngx_http_rate_limit_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    zone->name.data = (u_char *) name;
    zone->name.len = len;
    zone->conf = rmcf->conf;
    zone->core.host = zone;

    return &zone->core;
}


static void
ngx_http_rate_limit_conf_cleanup(void *data)
{
    rl_conf_destroy(data);
}


/*
 * Once the http block is parsed: zones may be defined after their uses,
 * and "resolver" after rate_limit_redis (nginx 1.22 always has a resolver,
 * with no name server unless the directive gives some).
 */
static char *
ngx_http_rate_limit_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->resolver && clcf->resolver->connections.nelts) {
        rmcf->resolver = clcf->resolver;
        rmcf->resolver_timeout = clcf->resolver_timeout
                                 == NGX_CONF_UNSET_MSEC
                                 ? 30000 : clcf->resolver_timeout;
    }

    if (rl_conf_redis_resolver(rmcf->conf, rmcf->resolver != NULL)
        != RL_CONF_OK
        || rl_conf_finish(rmcf->conf) != RL_CONF_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0, "%s",
                      rl_conf_error(rmcf->conf));
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_metrics_add_zone(cf, rmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_rate_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->limits = NGX_CONF_UNSET_PTR;
    conf->status = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET;
    conf->dry_run = NGX_CONF_UNSET;
    conf->log_level = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_rate_limit_loc_conf_t *prev = parent;
    ngx_http_rate_limit_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->limits, prev->limits, NULL);

    ngx_conf_merge_uint_value(conf->status, prev->status,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_value(conf->headers, prev->headers, 1);
    ngx_conf_merge_value(conf->dry_run, prev->dry_run, 0);
    ngx_conf_merge_uint_value(conf->log_level, prev->log_level, NGX_LOG_ERR);
    ngx_conf_merge_str_value(conf->api_token_env, prev->api_token_env, "");

    return NGX_CONF_OK;
}


/*
 * The directive's line into the core, which reads it; nginx appends
 * " in FILE:LINE" to the core's message.
 */
char *
ngx_http_rate_limit_conf_read(ngx_conf_t *cf, rl_conf_result_t *result)
{
    int                               rc;
    ngx_str_t                        *value;
    ngx_uint_t                        i;
    rl_conf_arg_t                    *args;
    rl_conf_line_t                    line;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    args = ngx_palloc(cf->temp_pool, cf->args->nelts * sizeof(rl_conf_arg_t));
    if (args == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 0; i < cf->args->nelts; i++) {
        args[i].data = value[i].data;
        args[i].len = value[i].len;
    }

    line.args = args;
    line.nargs = cf->args->nelts;
    line.file.data = cf->conf_file->file.name.data;
    line.file.len = cf->conf_file->file.name.len;
    line.line = cf->conf_file->line;

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rate_limit_module);

    rc = rl_conf_directive(rmcf->conf, &line, ngx_http_rate_limit_resolve, cf,
                           result);

    if (rc == RL_CONF_OK) {
        return NGX_CONF_OK;
    }

    if (rc == RL_CONF_DUPLICATE) {
        return "is duplicate";
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s", rl_conf_error(rmcf->conf));

    return NGX_CONF_ERROR;
}


/* the core's directives that need nothing of the host */
static char *
ngx_http_rate_limit_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    rl_conf_result_t  result;

    return ngx_http_rate_limit_conf_read(cf, &result);
}


/* a number of the location's configuration, at cmd->offset */
static char *
ngx_http_rate_limit_conf_uint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char              *rv;
    ngx_uint_t        *field;
    rl_conf_result_t   result;

    field = (ngx_uint_t *) ((char *) conf + cmd->offset);

    if (*field != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    rv = ngx_http_rate_limit_conf_read(cf, &result);

    if (rv == NGX_CONF_OK) {
        *field = result.value;
    }

    return rv;
}


static char *
ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                              *rv;
    ngx_str_t                         *value;
    rl_conf_result_t                   result;
    ngx_http_rate_limit_zone_t        *zone;
    ngx_http_compile_complex_value_t   ccv;

    rv = ngx_http_rate_limit_conf_read(cf, &result);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    zone = result.zone->host;
    value = cf->args->elts;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &zone->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = ngx_shared_memory_add(cf, &zone->name,
                                           (size_t) result.size,
                                           &ngx_http_rate_limit_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\" in \"%V\" directive",
                           &zone->name, &cmd->name);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_http_rate_limit_init_zone;
    zone->shm_zone->data = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    char                         *rv;
    ngx_uint_t                    i;
    rl_conf_result_t              result;
    ngx_http_rate_limit_limit_t  *limit;

    rv = ngx_http_rate_limit_conf_read(cf, &result);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (rlcf->limits == NGX_CONF_UNSET_PTR) {
        rlcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_rate_limit_limit_t));
        if (rlcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limit = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {
        if (limit[i].zone == result.limit.zone->host) {
            return "is duplicate";
        }
    }

    limit = ngx_array_push(rlcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->zone = result.limit.zone->host;
    limit->cost = (ngx_uint_t) result.limit.cost;
    limit->cost_arg.data = (u_char *) result.limit.cost_text;
    limit->cost_arg.len = result.limit.cost_text_len;

    return NGX_CONF_OK;
}


/* now: no blocking getaddrinfo() in a worker, which has nginx's resolver */
static int
ngx_http_rate_limit_resolve(void *data, const u_char *address, size_t len,
    unsigned default_port, rl_conf_resolved_t *out)
{
    ngx_conf_t *cf = data;

    ngx_url_t  u;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = (u_char *) address;
    u.url.len = len;
    u.default_port = (in_port_t) default_port;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        out->err = u.err;
        return RL_CONF_ERROR;
    }

    out->port = u.port;
    out->name = (u.naddrs == 0);

    if (out->name && ngx_inet_resolve_host(cf->pool, &u) != NGX_OK) {
        out->err = u.err;
        return RL_CONF_DECLINED;
    }

    len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                        (u_char *) out->host, RL_CONF_HOST_LEN - 1, 0);
    out->host[len] = '\0';
    out->port = u.port;

    return RL_CONF_OK;
}


/* the core reads the path made absolute */
static char *
ngx_http_rate_limit_policy_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_conf_full_name(cf->cycle, &value[1], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_rate_limit_conf(cf, cmd, conf);
}


static char *
ngx_http_rate_limit_api_token(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    char              *rv;
    rl_conf_result_t   result;

    if (rlcf->api_token_env.data) {
        return "is duplicate";
    }

    rv = ngx_http_rate_limit_conf_read(cf, &result);

    if (rv == NGX_CONF_OK) {
        /* NUL ended, as nginx's arguments are, for getenv() */
        rlcf->api_token_env.data = (u_char *) result.env.data;
        rlcf->api_token_env.len = result.env.len;
    }

    return rv;
}


/* what the core needs to know of this process */
void
ngx_http_rate_limit_conf_process(ngx_cycle_t *cycle,
    rl_conf_process_t *process)
{
    process->hostname = cycle->hostname.data;
    process->hostname_len = cycle->hostname.len;
    process->pid = ngx_pid;
    process->master_pid = getppid();
    process->worker = ngx_worker;
    process->getenv = getenv;
    process->log_error = ngx_http_rate_limit_log_error;
    process->log_data = cycle->log;
}


static void
ngx_http_rate_limit_log_error(void *data, const char *msg)
{
    ngx_log_error(NGX_LOG_ERR, (ngx_log_t *) data, 0, "%s", msg);
}


static ngx_int_t
ngx_http_rate_limit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* like limit_req: before access checks, so "satisfy any" cannot skip it */
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_rate_limit_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_rate_limit_init_process(ngx_cycle_t *cycle)
{
    ngx_http_rate_limit_main_conf_t  *rmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_rate_limit_module);

    if (rmcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_rate_limit_api_init_process(cycle, rmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (rmcf->pg_shm_zone
        && ngx_http_rate_limit_sync_init_process(cycle, rmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rl_conf_redis_zones(rmcf->conf) == 0) {
        return NGX_OK;
    }

    return ngx_http_rate_limit_redis_init_process(cycle, rmcf);
}


static void
ngx_http_rate_limit_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_rate_limit_redis_exit_process();
    ngx_http_rate_limit_sync_exit_process();
    ngx_http_rate_limit_api_exit_process();
}


/*
 * Gives back the nginx connection that watched libpq's socket.  libpq
 * closes the socket itself, so the events go without an epoll call, and
 * the socket is never closed twice.
 */
void
ngx_http_rate_limit_release_connection(ngx_connection_t *c)
{
    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


/* a worker's background timer: it never holds up a graceful shutdown */
void
ngx_http_rate_limit_timer_init(ngx_event_t *ev, ngx_event_handler_pt handler,
    void *data, ngx_log_t *log)
{
    ev->handler = handler;
    ev->data = data;
    ev->log = log;
    ev->cancelable = 1;
}


/* a whole response from memory: the bucket API's JSON, the metrics' text */
ngx_int_t
ngx_http_rate_limit_send(ngx_http_request_t *r, ngx_int_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
