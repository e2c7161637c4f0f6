
/*
 * Directives, configuration and process hooks.
 */


#include "ngx_http_rate_limit_module.h"


#define NGX_HTTP_RATE_LIMIT_REDIS_PORT     6379
#define NGX_HTTP_RATE_LIMIT_REDIS_TIMEOUT  50
#define NGX_HTTP_RATE_LIMIT_REDIS_PREFIX   "rl"

/* Redis' own bound: its "databases" setting is an int */
#define NGX_HTTP_RATE_LIMIT_REDIS_DB_MAX   NGX_MAX_INT32_VALUE

/* the bytes of a socket path that sockaddr_un holds, with its NUL */
#define NGX_HTTP_RATE_LIMIT_UNIX_PATH_MAX                                    \
    (sizeof(((struct sockaddr_un *) 0)->sun_path) - 1)


static ngx_int_t ngx_http_rate_limit_add_variables(ngx_conf_t *cf);
static void *ngx_http_rate_limit_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_rate_limit_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_rate_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_rate_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_rate_limit_redis_address(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_http_rate_limit_redis_conf_t *rcf,
    ngx_str_t *value);
static char *ngx_http_rate_limit_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit_log_level(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_rate_limit_api_token(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_http_rate_limit_zone_t *ngx_http_rate_limit_zone_get(
    ngx_conf_t *cf, ngx_http_rate_limit_main_conf_t *rmcf, ngx_str_t *name);
static ngx_int_t ngx_http_rate_limit_conf_number(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *value, size_t name_len, uint64_t min,
    uint64_t max, uint64_t *n);
static ngx_int_t ngx_http_rate_limit_conf_zone_name(ngx_conf_t *cf,
    ngx_command_t *cmd, ngx_str_t *name);
static ngx_int_t ngx_http_rate_limit_conf_escape(ngx_conf_t *cf,
    ngx_str_t *value, ngx_str_t *shown);
static void ngx_http_rate_limit_conf_param_name(ngx_str_t *value,
    ngx_str_t *name);
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
      ngx_http_rate_limit_redis,
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
      ngx_http_rate_limit_status,
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
      ngx_http_rate_limit_log_level,
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


static ngx_conf_enum_t  ngx_http_rate_limit_log_levels[] = {
    { ngx_string("info"), NGX_LOG_INFO },
    { ngx_string("notice"), NGX_LOG_NOTICE },
    { ngx_string("warn"), NGX_LOG_WARN },
    { ngx_string("error"), NGX_LOG_ERR },
    { ngx_null_string, 0 }
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
    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     rmcf->redis = NULL;
     *     rmcf->redis_zones = 0;
     */

    if (ngx_array_init(&rmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_rate_limit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&rmcf->refs, cf->pool, 4,
                       sizeof(ngx_http_rate_limit_limit_t))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


/*
 * Runs once the whole http block is parsed: zones may be defined after the
 * lines that use them, so references and backends are checked here.
 */
static char *
ngx_http_rate_limit_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone, **zones;
    ngx_http_rate_limit_limit_t  *limit;

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        zone = zones[i];

        if (!zone->defined) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "unknown zone \"%V\" in \"rate_limit\" directive "
                          "in %V:%ui", &zone->name, &zone->file, zone->line);
            return NGX_CONF_ERROR;
        }

        if (zone->core.backend == RL_ZONE_BACKEND_UNSET) {
            zone->core.backend = rmcf->redis ? RL_ZONE_BACKEND_REDIS
                                        : RL_ZONE_BACKEND_LOCAL;
        }

        if (zone->core.backend != RL_ZONE_BACKEND_REDIS) {
            continue;
        }

        if (rmcf->redis == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"rate_limit_zone\" directive: zone \"%V\" uses "
                          "\"backend=redis\" but \"rate_limit_redis\" is not "
                          "set in %V:%ui", &zone->name, &zone->file,
                          zone->line);
            return NGX_CONF_ERROR;
        }

        zone->core.redis_prefix_len = rmcf->redis->prefix.len
                                      + zone->name.len + 2;
        p = ngx_pnalloc(cf->pool, zone->core.redis_prefix_len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_sprintf(p, "%V:%V:", &rmcf->redis->prefix, &zone->name);
        zone->core.redis_prefix = p;

        rmcf->redis_zones++;
    }

    if (ngx_http_rate_limit_policy_load_file(cf, rmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_metrics_add_zone(cf, rmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    limit = rmcf->refs.elts;

    for (i = 0; i < rmcf->refs.nelts; i++, limit++) {

        if (limit->cost > limit->zone->core.params.burst) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "invalid cost \"%ui\" in \"rate_limit\" directive: "
                          "it exceeds the burst %uL of zone \"%V\", so no "
                          "request could ever pass, in %V:%ui", limit->cost,
                          limit->zone->core.params.burst, &limit->zone->name,
                          &limit->file, limit->line);
            return NGX_CONF_ERROR;
        }
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


ngx_http_rate_limit_zone_t *
ngx_http_rate_limit_zone_find(ngx_http_rate_limit_main_conf_t *rmcf,
    u_char *name, size_t len)
{
    ngx_uint_t                   i;
    ngx_http_rate_limit_zone_t  **zones;

    zones = rmcf->zones.elts;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->name.len == len
            && ngx_strncmp(zones[i]->name.data, name, len) == 0)
        {
            return zones[i];
        }
    }

    return NULL;
}


/* finds the zone, or makes a placeholder for a zone defined further on */
static ngx_http_rate_limit_zone_t *
ngx_http_rate_limit_zone_get(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf, ngx_str_t *name)
{
    ngx_http_rate_limit_zone_t  *zone, **zones;

    zone = ngx_http_rate_limit_zone_find(rmcf, name->data, name->len);
    if (zone) {
        return zone;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    zone->name = *name;
    zone->core.name = name->data;
    zone->core.name_len = name->len;
    zone->core.host = zone;
    zone->file = cf->conf_file->file.name;
    zone->line = cf->conf_file->line;

    zones = ngx_array_push(&rmcf->zones);
    if (zones == NULL) {
        return NULL;
    }

    *zones = zone;

    return zone;
}


/*
 * The value of a "name=N" parameter, N a whole number from min to max.
 * ngx_atoi() takes an overflow for a typo; here a number too large is told
 * apart, so that the message can give the largest allowed.
 */
static ngx_int_t
ngx_http_rate_limit_conf_number(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, size_t name_len, uint64_t min, uint64_t max,
    uint64_t *n)
{
    u_char      *p, *last;
    uint64_t     v, digit;
    ngx_str_t    shown;
    ngx_uint_t   too_large;

    p = value->data + name_len + 1;
    last = value->data + value->len;
    v = 0;
    too_large = 0;

    for ( /* void */ ; p < last; p++) {

        if (*p < '0' || *p > '9') {
            break;
        }

        digit = *p - '0';

        if (too_large || v > max / 10 || (v == max / 10 && digit > max % 10))
        {
            too_large = 1;
            continue;
        }

        v = v * 10 + digit;
    }

    if (p == last && !too_large && p != value->data + name_len + 1
        && v >= min)
    {
        *n = v;
        return NGX_OK;
    }

    if (ngx_http_rate_limit_conf_escape(cf, value, &shown) != NGX_OK) {
        return NGX_ERROR;
    }

    if (p == last && too_large) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %*s \"%V\" in \"%V\" directive: too "
                           "large, at most %uL", name_len, value->data,
                           &shown, &cmd->name, max);
        return NGX_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid %*s \"%V\" in \"%V\" directive, expected a "
                       "whole number from %uL to %uL", name_len, value->data,
                       &shown, &cmd->name, min, max);

    return NGX_ERROR;
}


/*
 * The value of a "name=TIME" parameter in milliseconds, in nginx's time
 * syntax ("50ms", "2s", "1m30s"), above zero and at most
 * NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX.
 */
ngx_int_t
ngx_http_rate_limit_conf_msec(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, size_t name_len, ngx_msec_t *msec)
{
    u_char     *p, *q;
    ngx_int_t   ms;
    ngx_str_t   s, small, shown;

    s.data = value->data + name_len + 1;
    s.len = value->len - name_len - 1;

    ms = ngx_parse_time(&s, 0);

    if (ms == NGX_ERROR) {

        /*
         * ngx_parse_time() fails an overflow as it fails a typo: when the
         * same text with every number cut to one digit parses, the only
         * fault was a number too large
         */

        small.data = ngx_pnalloc(cf->temp_pool, s.len);
        if (small.data == NULL) {
            return NGX_ERROR;
        }

        q = small.data;

        for (p = s.data; p < s.data + s.len; p++) {
            if (*p < '0' || *p > '9') {
                *q++ = *p;

            } else if (p == s.data || p[-1] < '0' || p[-1] > '9') {
                *q++ = '1';
            }
        }

        small.len = q - small.data;

        if (ngx_parse_time(&small, 0) != NGX_ERROR) {
            ms = NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX + 1;
        }
    }

    if (ms > 0 && ms <= NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX) {
        *msec = (ngx_msec_t) ms;
        return NGX_OK;
    }

    if (ngx_http_rate_limit_conf_escape(cf, value, &shown) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ms > NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %*s \"%V\" in \"%V\" directive: too "
                           "large, at most %dms", name_len, value->data,
                           &shown, &cmd->name,
                           NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX);
        return NGX_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid %*s \"%V\" in \"%V\" directive, expected a "
                       "time above zero like 50ms or 2s", name_len,
                       value->data, &shown, &cmd->name);

    return NGX_ERROR;
}


/* zone names go unescaped into headers, metrics labels and Redis keys */
static ngx_int_t
ngx_http_rate_limit_conf_zone_name(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *name)
{
    ngx_str_t  shown;

    if (ngx_http_rate_limit_valid_zone_name(name->data, name->len)) {
        return NGX_OK;
    }

    if (ngx_http_rate_limit_conf_escape(cf, name, &shown) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid zone name \"%V\" in \"%V\" directive: a "
                       "zone name is 1 to %d bytes of A-Z, a-z, 0-9, \"_\", "
                       "\".\" and \"-\"", &shown, &cmd->name,
                       NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX);

    return NGX_ERROR;
}


/*
 * A value as an error message shows it, escaped as inside a JSON string:
 * nginx.conf can quote a value with a quote or a newline in it, and the
 * message must still read as one line with the value in its quotes.
 */
static ngx_int_t
ngx_http_rate_limit_conf_escape(ngx_conf_t *cf, ngx_str_t *value,
    ngx_str_t *shown)
{
    shown->data = ngx_pnalloc(cf->temp_pool,
                              ngx_http_rate_limit_json_escape_len(value->data,
                                                                  value->len));
    if (shown->data == NULL) {
        return NGX_ERROR;
    }

    shown->len = ngx_http_rate_limit_json_escape(value->data, value->len,
                                                 shown->data);

    return NGX_OK;
}


/* "name" of "name=value"; a parameter without '=' is its own name */
static void
ngx_http_rate_limit_conf_param_name(ngx_str_t *value, ngx_str_t *name)
{
    u_char  *p;

    p = ngx_strlchr(value->data, value->data + value->len, '=');

    name->data = value->data;
    name->len = p ? (size_t) (p - value->data) : value->len;
}


/*
 * Refuses a parameter given twice from argument first on: nginx.conf
 * would otherwise keep the last one silently.  "password=env:X" repeats
 * "password=x".  Only the name is shown, as a value may be a secret.
 */
ngx_int_t
ngx_http_rate_limit_conf_unique(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_uint_t first)
{
    ngx_str_t   *value, name, other, shown;
    ngx_uint_t   i, j;

    value = cf->args->elts;

    for (i = first + 1; i < cf->args->nelts; i++) {
        ngx_http_rate_limit_conf_param_name(&value[i], &name);

        for (j = first; j < i; j++) {
            ngx_http_rate_limit_conf_param_name(&value[j], &other);

            if (name.len != other.len
                || ngx_memcmp(name.data, other.data, name.len) != 0)
            {
                continue;
            }

            if (ngx_http_rate_limit_conf_escape(cf, &name, &shown) == NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "duplicate parameter \"%V\" in \"%V\" "
                                   "directive", &shown, &cmd->name);
            }

            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static char *
ngx_http_rate_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    u_char                            *p;
    char                               err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    uint64_t                           size, burst;
    ngx_str_t                         *value, name, s;
    ngx_uint_t                         i;
    rl_zone_backend_e                  backend;
    rl_zone_failure_e                  on_failure;
    ngx_http_rate_limit_rate_t         rate;
    ngx_http_rate_limit_zone_t        *zone;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    size = 0;
    burst = 0;
    rate.count = 0;
    backend = RL_ZONE_BACKEND_UNSET;
    on_failure = RL_ZONE_FAILURE_OPEN;
    ngx_str_null(&name);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {

            name.data = value[i].data + 5;

            p = (u_char *) ngx_strchr(name.data, ':');

            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone \"%V\" in \"%V\" directive, "
                                   "expected \"zone=NAME:SIZE\"",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            name.len = p - name.data;

            if (ngx_http_rate_limit_conf_zone_name(cf, cmd, &name)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            s.data = p + 1;
            s.len = value[i].data + value[i].len - s.data;

            if (ngx_http_rate_limit_parse_size((char *) s.data, s.len,
                                               &size, err, sizeof(err))
                != NGX_HTTP_RATE_LIMIT_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid zone size \"%V\" in \"%V\" "
                                   "directive: %s", &value[i], &cmd->name,
                                   err);
                return NGX_CONF_ERROR;
            }

            if (size < 8 * ngx_pagesize) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "zone \"%V\" in \"%V\" directive is too "
                                   "small", &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {

            if (ngx_http_rate_limit_parse_rate((char *) value[i].data + 5,
                                               value[i].len - 5, &rate,
                                               err, sizeof(err))
                != NGX_HTTP_RATE_LIMIT_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\" in \"%V\" "
                                   "directive: %s", &value[i], &cmd->name,
                                   err);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {

            if (ngx_http_rate_limit_conf_number(cf, cmd, &value[i], 5, 1,
                                                NGX_HTTP_RATE_LIMIT_BURST_MAX,
                                                &burst)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "backend=redis") == 0) {
            backend = RL_ZONE_BACKEND_REDIS;
            continue;
        }

        if (ngx_strcmp(value[i].data, "backend=local") == 0) {
            backend = RL_ZONE_BACKEND_LOCAL;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=open") == 0) {
            on_failure = RL_ZONE_FAILURE_OPEN;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=closed") == 0) {
            on_failure = RL_ZONE_FAILURE_CLOSED;
            continue;
        }

        if (ngx_strcmp(value[i].data, "on_failure=local") == 0) {
            on_failure = RL_ZONE_FAILURE_LOCAL;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\" directive",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_conf_unique(cf, cmd, 2) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (name.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (rate.count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"rate\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_rate_limit_zone_get(cf, rmcf, &name);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->defined) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\" in \"%V\" directive",
                           &name, &cmd->name);
        return NGX_CONF_ERROR;
    }

    zone->defined = 1;
    zone->core.rate = rate;
    zone->core.backend = backend;
    zone->core.on_failure = on_failure;

    if (ngx_http_rate_limit_make_params(&zone->core.rate, burst,
                                        &zone->core.params, err, sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate or burst in zone \"%V\" in \"%V\" "
                           "directive: %s", &name, &cmd->name, err);
        return NGX_CONF_ERROR;
    }

    rl_zone_texts(&zone->core.params, &zone->core.texts);

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = &zone->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_rate_limit_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (zone->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate zone \"%V\" in \"%V\" directive",
                           &name, &cmd->name);
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

    u_char                            *p;
    uint64_t                           cost;
    ngx_str_t                         *value, name;
    ngx_uint_t                         i;
    ngx_http_rate_limit_limit_t       *limit, *ref;
    ngx_http_rate_limit_main_conf_t   *rmcf;

    value = cf->args->elts;

    ngx_str_null(&name);
    cost = 1;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;

            if (ngx_http_rate_limit_conf_zone_name(cf, cmd, &name)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "cost=", 5) == 0) {

            /* a cost above the largest burst could never pass */
            if (ngx_http_rate_limit_conf_number(cf, cmd, &value[i], 4, 1,
                                                NGX_HTTP_RATE_LIMIT_BURST_MAX,
                                                &cost)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\" directive",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_conf_unique(cf, cmd, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (name.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"zone\" parameter",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (rlcf->limits == NGX_CONF_UNSET_PTR) {
        rlcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_rate_limit_limit_t));
        if (rlcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rate_limit_module);

    limit = rlcf->limits->elts;

    for (i = 0; i < rlcf->limits->nelts; i++) {
        if (limit[i].zone->name.len == name.len
            && ngx_strncmp(limit[i].zone->name.data, name.data, name.len)
               == 0)
        {
            return "is duplicate";
        }
    }

    limit = ngx_array_push(rlcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->zone = ngx_http_rate_limit_zone_get(cf, rmcf, &name);
    if (limit->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->cost = (ngx_uint_t) cost;
    limit->file = cf->conf_file->file.name;
    limit->line = cf->conf_file->line;

    p = ngx_pnalloc(cf->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    limit->cost_arg.data = p;
    limit->cost_arg.len = ngx_sprintf(p, "%ui", limit->cost) - p;

    ref = ngx_array_push(&rmcf->refs);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    /* a copy: the limits array may move as more lines are added */
    *ref = *limit;

    return NGX_CONF_OK;
}


static char *
ngx_http_rate_limit_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    uint64_t                           db;
    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_rate_limit_redis_addr_t  *addr;
    ngx_http_rate_limit_redis_conf_t  *rcf;

    if (rmcf->redis) {
        return "is duplicate";
    }

    rcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rate_limit_redis_conf_t));
    if (rcf == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_array_init(&rcf->addresses, cf->pool, 1,
                       sizeof(ngx_http_rate_limit_redis_addr_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    rcf->timeout = NGX_HTTP_RATE_LIMIT_REDIS_TIMEOUT;
    ngx_str_set(&rcf->prefix, NGX_HTTP_RATE_LIMIT_REDIS_PREFIX);

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "cluster") == 0) {
            rcf->cluster = 1;
            continue;
        }

        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')
            == NULL)
        {
            if (ngx_http_rate_limit_redis_address(cf, cmd, rcf, &value[i])
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password=env:", 13) == 0) {
            rcf->password_env.data = value[i].data + 13;
            rcf->password_env.len = value[i].len - 13;

            if (rcf->password_env.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\" in \"%V\" "
                                   "directive: no variable name",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rcf->password.data = value[i].data + 9;
            rcf->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {

            if (ngx_http_rate_limit_conf_number(cf, cmd, &value[i], 2, 0,
                                            NGX_HTTP_RATE_LIMIT_REDIS_DB_MAX,
                                            &db)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            rcf->db = (ngx_uint_t) db;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {

            if (ngx_http_rate_limit_conf_msec(cf, cmd, &value[i], 7,
                                              &rcf->timeout)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rcf->prefix.data = value[i].data + 7;
            rcf->prefix.len = value[i].len - 7;

            if (rcf->prefix.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid prefix \"%V\" in \"%V\" directive",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_http_rate_limit_conf_unknown_secret(cf, cmd, &value[i], "");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_rate_limit_conf_unique(cf, cmd, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (rcf->addresses.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" directive has no address", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (!rcf->cluster && rcf->addresses.nelts > 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" directive has several addresses but no "
                           "\"cluster\" parameter", &cmd->name);
        return NGX_CONF_ERROR;
    }

    addr = rcf->addresses.elts;

    for (i = 0; rcf->cluster && i < rcf->addresses.nelts; i++) {
        if (addr[i].unix_path.len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"%V\" directive: "
                               "a cluster is reached over TCP",
                               &addr[i].address, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    if (rcf->cluster && rcf->db) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" directive: a Redis Cluster has no "
                           "database but 0, \"db\" cannot be used with "
                           "\"cluster\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    rmcf->redis = rcf;

    return NGX_CONF_OK;
}


/* resolved now: a blocking getaddrinfo() must stay out of the workers */
static ngx_int_t
ngx_http_rate_limit_redis_address(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_rate_limit_redis_conf_t *rcf, ngx_str_t *value)
{
    u_char                            *p;
    ngx_str_t                          shown;
    ngx_url_t                          u;
    ngx_http_rate_limit_redis_addr_t  *addr;

    if (rcf->addresses.nelts == RL_REDIS_ADDRESSES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many addresses in \"%V\" directive, at most "
                           "%d", &cmd->name,
                           RL_REDIS_ADDRESSES);
        return NGX_ERROR;
    }

    addr = ngx_array_push(&rcf->addresses);
    if (addr == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(addr, sizeof(ngx_http_rate_limit_redis_addr_t));

    addr->address = *value;

    if (ngx_strncmp(value->data, "unix:", 5) == 0) {

        if (value->len == 5) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"%V\" directive: no "
                               "socket path", value, &cmd->name);
            return NGX_ERROR;
        }

        /* cf->args values are NUL ended */
        addr->unix_path.data = value->data + 5;
        addr->unix_path.len = value->len - 5;

        /* a longer path would not fit the socket's address */
        if (addr->unix_path.len > NGX_HTTP_RATE_LIMIT_UNIX_PATH_MAX) {

            if (ngx_http_rate_limit_conf_escape(cf, value, &shown)
                == NGX_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid address \"%V\" in \"%V\" "
                                   "directive: the socket path is %uz bytes, "
                                   "at most %uz fit a unix socket address",
                                   &shown, &cmd->name, addr->unix_path.len,
                                   NGX_HTTP_RATE_LIMIT_UNIX_PATH_MAX);
            }

            return NGX_ERROR;
        }

        return NGX_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = *value;
    u.default_port = NGX_HTTP_RATE_LIMIT_REDIS_PORT;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0 || u.no_port) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"%V\" directive: "
                               "%s", value, &cmd->name, u.err);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid address \"%V\" in \"%V\" directive",
                               value, &cmd->name);
        }

        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    addr->host.data = p;
    addr->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                   p, NGX_SOCKADDR_STRLEN, 0);
    p[addr->host.len] = '\0';
    addr->port = u.port;

    return NGX_OK;
}


static char *
ngx_http_rate_limit_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    ngx_int_t   status;
    ngx_str_t  *value;

    if (rlcf->status != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    status = ngx_atoi(value[1].data, value[1].len);

    if (status < 400 || status > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid status \"%V\" in \"%V\" directive, "
                           "expected a code from 400 to 599",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    rlcf->status = status;

    return NGX_CONF_OK;
}


static char *
ngx_http_rate_limit_log_level(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    ngx_str_t        *value;
    ngx_conf_enum_t  *e;

    if (rlcf->log_level != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (e = ngx_http_rate_limit_log_levels; e->name.len; e++) {
        if (e->name.len == value[1].len
            && ngx_strcmp(e->name.data, value[1].data) == 0)
        {
            rlcf->log_level = e->value;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid log level \"%V\" in \"%V\" directive, expected "
                       "\"info\", \"notice\", \"warn\" or \"error\"",
                       &value[1], &cmd->name);

    return NGX_CONF_ERROR;
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

    if (rmcf->redis == NULL || rmcf->redis_zones == 0) {
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


/* env:NAME only: a token written in nginx.conf would sit in backups */
static char *
ngx_http_rate_limit_api_token(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_loc_conf_t *rlcf = conf;

    ngx_str_t                        *value, *names, *name;
    ngx_uint_t                        i;
    ngx_http_rate_limit_main_conf_t  *rmcf;

    if (rlcf->api_token_env.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len <= 4 || ngx_strncmp(value[1].data, "env:", 4) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid token source in \"%V\" directive, "
                           "expected \"env:NAME\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    rlcf->api_token_env.data = value[1].data + 4;
    rlcf->api_token_env.len = value[1].len - 4;

    /* each variable is checked once, when the workers start */
    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rate_limit_module);

    if (rmcf->api_token_envs == NULL) {
        rmcf->api_token_envs = ngx_array_create(cf->pool, 1,
                                                sizeof(ngx_str_t));
        if (rmcf->api_token_envs == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    names = rmcf->api_token_envs->elts;

    for (i = 0; i < rmcf->api_token_envs->nelts; i++) {
        if (names[i].len == rlcf->api_token_env.len
            && ngx_strncmp(names[i].data, rlcf->api_token_env.data,
                           names[i].len) == 0)
        {
            return NGX_CONF_OK;
        }
    }

    name = ngx_array_push(rmcf->api_token_envs);
    if (name == NULL) {
        return NGX_CONF_ERROR;
    }

    *name = rlcf->api_token_env;

    return NGX_CONF_OK;
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


/*
 * An unknown parameter of a directive whose values may be secrets (a
 * password, a connection string split by spaces): only its name is logged.
 */
void
ngx_http_rate_limit_conf_unknown_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_str_t *value, const char *hint)
{
    ngx_str_t  name;

    ngx_http_rate_limit_conf_param_name(value, &name);

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\" directive%s",
                       &name, &cmd->name, hint);
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
