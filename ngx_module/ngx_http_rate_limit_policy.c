
/*
 * Static per-client limits from a YAML policy file, read with the
 * configuration: at start, at reload and by "nginx -t".  Each zone holds its
 * entries in configuration memory until its store takes them, when the
 * zone's shared memory is set up (ngx_http_rate_limit_init_zone()).
 */


#include "ngx_http_rate_limit_module.h"


static ngx_int_t ngx_http_rate_limit_policy_add(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf,
    ngx_http_rate_limit_policy_entry_t *entry);


char *
ngx_http_rate_limit_policy_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    ngx_str_t  *value;

    if (rmcf->policy_file.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rmcf->policy_file = value[1];

    if (ngx_conf_full_name(cf->cycle, &rmcf->policy_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* runs once every zone is defined: the file may name any of them */
ngx_int_t
ngx_http_rate_limit_policy_load_file(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    char                                err[NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN];
    size_t                              i, n;
    ngx_int_t                           rc;
    ngx_http_rate_limit_policy_t       *policy;
    ngx_http_rate_limit_policy_zone_t   zone;
    ngx_http_rate_limit_policy_entry_t  entry;

    if (rmcf->policy_file.data == NULL) {
        return NGX_OK;
    }

    if (ngx_http_rate_limit_policy_load((char *) rmcf->policy_file.data,
                                        &policy, err, sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"rate_limit_policy_file\" directive: %s", err);
        return NGX_ERROR;
    }

    rc = NGX_OK;
    n = ngx_http_rate_limit_policy_zones(policy);

    /* every zone is checked, even one without clients */
    for (i = 0; i < n; i++) {
        ngx_http_rate_limit_policy_zone(policy, i, &zone);

        if (ngx_http_rate_limit_zone_find(rmcf, (u_char *) zone.name,
                                          zone.name_len)
            == NULL)
        {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "\"rate_limit_policy_file\" directive: "
                          "%V:%uz:%uz: unknown zone \"%*s\", expected a zone "
                          "defined by \"rate_limit_zone\"",
                          &rmcf->policy_file, zone.line, zone.column,
                          zone.name_len, zone.name);
            rc = NGX_ERROR;
            break;
        }
    }

    n = (rc == NGX_OK) ? ngx_http_rate_limit_policy_size(policy) : 0;

    for (i = 0; i < n; i++) {
        ngx_http_rate_limit_policy_entry(policy, i, &entry);

        rc = ngx_http_rate_limit_policy_add(cf, rmcf, &entry);
        if (rc != NGX_OK) {
            break;
        }
    }

    ngx_http_rate_limit_policy_free(policy);

    return rc;
}


static ngx_int_t
ngx_http_rate_limit_policy_add(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf,
    ngx_http_rate_limit_policy_entry_t *entry)
{
    u_char                      *key;
    char                         err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    rl_store_policy_entry_t     *row;
    ngx_http_rate_limit_zone_t  *zone;

    /* the zones of the file were all found already */
    zone = ngx_http_rate_limit_zone_find(rmcf, (u_char *) entry->zone,
                                         entry->zone_len);

    if (zone->policy.elts == NULL
        && ngx_array_init(&zone->policy, cf->pool, 8,
                          sizeof(rl_store_policy_entry_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    row = ngx_array_push(&zone->policy);
    if (row == NULL) {
        return NGX_ERROR;
    }

    zone->core.policy_entries = zone->policy.nelts;

    key = ngx_pnalloc(cf->pool, NGX_HTTP_RATE_LIMIT_KEY_MAX);
    if (key == NULL) {
        return NGX_ERROR;
    }

    /* hashed with the store's seed once the store exists */
    row->key.data = key;
    row->key.len = ngx_http_rate_limit_encode_key(entry->key, entry->key_len,
                                                  key);

    row->limit.rate = entry->rate;

    if (ngx_http_rate_limit_make_params_blocking(&entry->rate, entry->burst,
                                                 &row->limit.params, err,
                                                 sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"rate_limit_policy_file\" directive: %V:%uz:%uz: %s",
                      &rmcf->policy_file, entry->line, entry->column, err);
        return NGX_ERROR;
    }

    return NGX_OK;
}
