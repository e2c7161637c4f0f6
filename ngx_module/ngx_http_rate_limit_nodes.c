
/*
 * The node registry: one worker of each node sends a heartbeat to Redis
 * every second, and keeps the live node count Redis returns in shared
 * memory, where on_failure=local reads it as the divisor of its limits.
 * The last count seen before Redis failed is the one used while it is down.
 */


#include "ngx_http_rate_limit_module.h"

#include <hiredis/hiredis.h>


#define NGX_HTTP_RATE_LIMIT_HEARTBEAT      1000
/* silence after which a node no longer counts: a few missed heartbeats */
#define NGX_HTTP_RATE_LIMIT_NODE_EXPIRY    "5000"


typedef struct {
    ngx_event_t                       timer;
    ngx_str_t                         key;        /* "<prefix>:nodes" */
    ngx_str_t                         id;         /* "<host>:<master pid>" */
    ngx_http_rate_limit_redis_cmd_t   cmd;
    unsigned                          pending:1;
} ngx_http_rate_limit_nodes_t;


static void ngx_http_rate_limit_nodes_beat(ngx_event_t *ev);
static void ngx_http_rate_limit_nodes_reply(void *r, void *data);


static ngx_http_rate_limit_nodes_t  ngx_http_rate_limit_nodes;


ngx_int_t
ngx_http_rate_limit_nodes_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    u_char                       *p;
    ngx_http_rate_limit_nodes_t  *nd = &ngx_http_rate_limit_nodes;

    ngx_memzero(nd, sizeof(ngx_http_rate_limit_nodes_t));

    /* one heartbeat a node is enough; the master restarts a lost worker 0 */
    if (ngx_worker != 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(cycle->pool, rmcf->redis->prefix.len + sizeof(":nodes")
                                 + cycle->hostname.len + NGX_INT64_LEN + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    nd->key.data = p;
    p = ngx_sprintf(p, "%V:nodes", &rmcf->redis->prefix);
    nd->key.len = p - nd->key.data;

    /* the master's pid tells apart the nodes of one host, and survives a
     * reload and a restarted worker */
    nd->id.data = p;
    p = ngx_sprintf(p, "%V:%P", &cycle->hostname, getppid());
    nd->id.len = p - nd->id.data;

    nd->cmd.handler = ngx_http_rate_limit_nodes_reply;
    nd->cmd.data = nd;

    ngx_http_rate_limit_timer_init(&nd->timer,
                                   ngx_http_rate_limit_nodes_beat, nd,
                                   cycle->log);

    /* the first beat soon, once the connection is up */
    ngx_add_timer(&nd->timer, 100);

    return NGX_OK;
}


void
ngx_http_rate_limit_nodes_exit_process(void)
{
    ngx_http_rate_limit_nodes_t  *nd = &ngx_http_rate_limit_nodes;

    if (nd->timer.timer_set) {
        ngx_del_timer(&nd->timer);
    }
}


static void
ngx_http_rate_limit_nodes_beat(ngx_event_t *ev)
{
    size_t                        len;
    size_t                        argvlen[6];
    const char                   *argv[6];
    ngx_http_rate_limit_nodes_t  *nd = ev->data;

    ngx_add_timer(&nd->timer, NGX_HTTP_RATE_LIMIT_HEARTBEAT);

    if (nd->pending) {
        return;
    }

    argv[0] = "EVAL";
    argv[1] = ngx_http_rate_limit_nodes_script(&len);
    argvlen[1] = len;
    argv[2] = "1";
    argv[3] = (char *) nd->key.data;
    argvlen[3] = nd->key.len;
    argv[4] = (char *) nd->id.data;
    argvlen[4] = nd->id.len;
    argv[5] = NGX_HTTP_RATE_LIMIT_NODE_EXPIRY;

    argvlen[0] = sizeof("EVAL") - 1;
    argvlen[2] = 1;
    argvlen[5] = sizeof(NGX_HTTP_RATE_LIMIT_NODE_EXPIRY) - 1;

    if (ngx_http_rate_limit_redis_command(&nd->cmd, &nd->key, 6, argv,
                                          argvlen)
        == NGX_OK)
    {
        nd->pending = 1;
    }
}


static void
ngx_http_rate_limit_nodes_reply(void *r, void *data)
{
    redisReply                     *reply = r;
    ngx_http_rate_limit_nodes_t    *nd = data;
    ngx_http_rate_limit_metrics_t  *m;

    nd->pending = 0;

    m = ngx_http_rate_limit_metrics_node();

    if (m == NULL || reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer < 1)
    {
        return;
    }

    m->nodes = (ngx_atomic_uint_t) reply->integer;
}


/* the divisor of degraded limits: never 0, even before any heartbeat */
ngx_uint_t
ngx_http_rate_limit_nodes_live(void)
{
    ngx_http_rate_limit_metrics_t  *m;

    m = ngx_http_rate_limit_metrics_node();

    if (m == NULL || m->nodes == 0) {
        return 1;
    }

    return m->nodes;
}
