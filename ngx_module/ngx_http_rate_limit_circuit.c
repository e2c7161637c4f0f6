
/*
 * A circuit breaker for each Redis address, shared by the workers of a node.
 *
 * Each worker has its own connection, but the node as a whole decides
 * whether Redis is worth waiting for: once failures pile up, no worker
 * sends it a decision, every request is decided at once by its zone's
 * on_failure policy, and one probe at a time, with a growing pause between
 * them, tells when Redis answers again.  The worker that wins a transition
 * logs it, so the error log has one line per transition and node.
 */


#include "ngx_http_rate_limit_module.h"


/* timeouts or errors in a row that open a closed circuit */
#define NGX_HTTP_RATE_LIMIT_CIRCUIT_FAILURES   5

#define NGX_HTTP_RATE_LIMIT_PROBE_MIN          100
#define NGX_HTTP_RATE_LIMIT_PROBE_MAX          1000


/* "z=open, api=local": what the node does while the circuit is open */
static ngx_str_t  ngx_http_rate_limit_circuit_policy;


ngx_int_t
ngx_http_rate_limit_circuit_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    u_char                       *p;
    size_t                        len;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t  **zones;

    zones = rmcf->zones.elts;
    len = 0;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        len += zones[i]->name.len + sizeof("=closed, ");
    }

    p = ngx_pnalloc(cycle->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_rate_limit_circuit_policy.data = p;

    for (i = 0; i < rmcf->zones.nelts; i++) {
        if (zones[i]->backend != NGX_HTTP_RATE_LIMIT_BACKEND_REDIS) {
            continue;
        }

        if (p != ngx_http_rate_limit_circuit_policy.data) {
            p = ngx_cpymem(p, ", ", 2);
        }

        p = ngx_sprintf(p, "%V=%s", &zones[i]->name,
                        ngx_http_rate_limit_on_failure_name(
                            zones[i]->on_failure));
    }

    ngx_http_rate_limit_circuit_policy.len =
                                  p - ngx_http_rate_limit_circuit_policy.data;

    return NGX_OK;
}


/*
 * The circuit of an address, made on first use.  Addresses are few and
 * come at start-up or with a new cluster map, so a spinlock will do.
 */
ngx_http_rate_limit_circuit_t *
ngx_http_rate_limit_circuit_get(ngx_str_t *address)
{
    size_t                          len;
    ngx_uint_t                      i;
    ngx_http_rate_limit_metrics_t  *m;
    ngx_http_rate_limit_circuit_t  *cb, *found;

    m = ngx_http_rate_limit_metrics_node();

    if (m == NULL) {
        return NULL;
    }

    len = ngx_min(address->len, NGX_HTTP_RATE_LIMIT_REDIS_ADDRESS_LEN - 1);
    found = NULL;

    ngx_spinlock(&m->lock, ngx_pid, 1024);

    for (i = 0; i < m->ncircuits; i++) {
        cb = &m->circuits[i];

        if (ngx_strncmp(cb->address, address->data, len) == 0
            && cb->address[len] == '\0')
        {
            found = cb;
            break;
        }
    }

    if (found == NULL && m->ncircuits < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES) {
        found = &m->circuits[m->ncircuits];

        ngx_memzero(found, sizeof(ngx_http_rate_limit_circuit_t));
        ngx_memcpy(found->address, address->data, len);
        found->up = 1;

        m->ncircuits++;
    }

    ngx_unlock(&m->lock);

    return found;
}


/*
 * Whether a decision may be sent.  When the circuit is open, the one
 * caller in the whole node whose turn it is gets *probe set instead.
 */
ngx_uint_t
ngx_http_rate_limit_circuit_allow(ngx_http_rate_limit_circuit_t *cb,
    ngx_uint_t *probe)
{
    ngx_atomic_uint_t  at;

    *probe = 0;

    if (cb == NULL || !cb->open) {
        return 1;
    }

    at = cb->probe_at;

    if ((ngx_msec_int_t) (ngx_current_msec - at) >= 0
        && ngx_atomic_cmp_set(&cb->probe_at, at,
                              ngx_current_msec + cb->backoff))
    {
        *probe = 1;
    }

    return 0;
}


void
ngx_http_rate_limit_circuit_success(ngx_http_rate_limit_circuit_t *cb,
    ngx_log_t *log)
{
    if (cb == NULL) {
        return;
    }

    cb->up = 1;

    if (cb->failures) {
        cb->failures = 0;
    }

    if (cb->open && ngx_atomic_cmp_set(&cb->open, 1, 0)) {
        (void) ngx_atomic_fetch_add(&cb->closed, 1);

        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "rate_limit_redis \"%s\" is reachable again: circuit "
                      "closed, zones are enforced by Redis", cb->address);
    }
}


/*
 * A hard failure, a refused or lost connection, opens the circuit at once;
 * timeouts and error replies open it when they come in a row.
 */
void
ngx_http_rate_limit_circuit_failure(ngx_http_rate_limit_circuit_t *cb,
    ngx_uint_t hard, const char *reason, ngx_log_t *log)
{
    ngx_atomic_uint_t  failures, backoff;

    if (cb == NULL) {
        return;
    }

    cb->up = 0;

    if (cb->open) {
        /* a probe failed: wait longer before the next one */
        backoff = ngx_min(cb->backoff * 2, NGX_HTTP_RATE_LIMIT_PROBE_MAX);
        cb->backoff = backoff;
        cb->probe_at = ngx_current_msec + backoff;
        return;
    }

    failures = ngx_atomic_fetch_add(&cb->failures, 1) + 1;

    if (!hard && failures < NGX_HTTP_RATE_LIMIT_CIRCUIT_FAILURES) {
        return;
    }

    cb->backoff = NGX_HTTP_RATE_LIMIT_PROBE_MIN;
    cb->probe_at = ngx_current_msec + NGX_HTTP_RATE_LIMIT_PROBE_MIN;

    if (!ngx_atomic_cmp_set(&cb->open, 0, 1)) {
        return;
    }

    (void) ngx_atomic_fetch_add(&cb->opened, 1);

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "rate_limit_redis \"%s\" is unreachable (%s): circuit "
                  "open after %uA failure%s, requests are decided at once "
                  "by the zones' on_failure policy: %V", cb->address,
                  reason, failures, failures == 1 ? "" : "s",
                  &ngx_http_rate_limit_circuit_policy);
}
