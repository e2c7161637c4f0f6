
/*
 * A Redis Cluster's slot map, read with CLUSTER SLOTS by each worker and
 * read again after a redirect, a lost master, and every few seconds; and
 * the MOVED and ASK redirects, followed within the request's timeout.
 */


#include "ngx_http_rate_limit_redis.h"


/* a key moving twice while one decision is made is a cluster in flux */
#define NGX_HTTP_RATE_LIMIT_REDIRECTS_MAX    3


static void ngx_http_rate_limit_redis_slots_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_use_map(ngx_log_t *log);


/* the link that holds a key: the one server, or the master of its slot */
ngx_http_rate_limit_link_t *
ngx_http_rate_limit_redis_route(ngx_str_t *key)
{
    ngx_uint_t                    node;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (rd->map == NULL) {
        return &rd->links[0];
    }

    node = rd->map->slot_node[ngx_http_rate_limit_cluster_slot(key->data,
                                                               key->len)];

    if (node == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE
        || node >= rd->map->nnodes)
    {
        return NULL;
    }

    return rd->node_links[node];
}


/* CLUSTER SLOTS on any link that answers, unless asked a moment ago */
void
ngx_http_rate_limit_redis_ask_map(ngx_msec_t min_gap)
{
    ngx_uint_t                    i;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (rd->map == NULL || rd->refreshing || rd->exiting
        || (rd->refreshed && ngx_current_msec - rd->refreshed < min_gap))
    {
        return;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = sizeof("CLUSTER") - 1;
    argv[1] = "SLOTS";
    argvlen[1] = sizeof("SLOTS") - 1;

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        link = &rd->links[i];

        if (!link->used || !link->connected || link->ac == NULL
            || (link->circuit && link->circuit->open))
        {
            continue;
        }

        if (ngx_http_rate_limit_redis_queue(link,
                                         ngx_http_rate_limit_redis_slots_reply,
                                         NULL, 2, argv, argvlen)
            != NGX_OK)
        {
            continue;
        }

        rd->refreshing = 1;
        rd->refreshed = ngx_current_msec;
        return;
    }
}


void
ngx_http_rate_limit_redis_refresh(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    ngx_add_timer(&rd->refresh, NGX_HTTP_RATE_LIMIT_MAP_REFRESH);

    ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP);
}


static void
ngx_http_rate_limit_redis_slots_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    char                          err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    link->pending--;
    link->progress = ngx_current_msec;
    rd->refreshing = 0;

    if (reply == NULL || rd->exiting) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_cpystrn((u_char *) err, (u_char *) reply->str,
                    ngx_min(sizeof(err), reply->len + 1));

    } else if (ngx_http_rate_limit_cluster_parse_slots(reply,
                                                       (char *) link->host,
                                                       rd->next_map, err,
                                                       sizeof(err))
               == NGX_HTTP_RATE_LIMIT_OK)
    {
        rd->map_error_logged = 0;
        ngx_http_rate_limit_redis_use_map(rd->log);
        return;
    }

    if (!rd->map_error_logged) {
        rd->map_error_logged = 1;
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "rate_limit_redis \"%V\": CLUSTER SLOTS failed: %s",
                      &link->address, err);
    }
}


/*
 * Swaps in the map just read: each master gets its link, connected at
 * once if new, and links no longer in the map stop reconnecting.
 */
static void
ngx_http_rate_limit_redis_use_map(ngx_log_t *log)
{
    ngx_uint_t                          i, j;
    ngx_http_rate_limit_link_t         *link;
    ngx_http_rate_limit_redis_t        *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_cluster_map_t  *map;
    ngx_http_rate_limit_cluster_node_t *node;

    map = rd->next_map;
    rd->next_map = rd->map;
    rd->map = map;

    for (i = 0; i < map->nnodes; i++) {
        node = &map->nodes[i];

        link = ngx_http_rate_limit_redis_link((u_char *) node->host,
                                              ngx_strlen(node->host),
                                              node->port, NULL, NULL);
        rd->node_links[i] = link;

        if (link == NULL) {
            ngx_log_error(NGX_LOG_ERR, log, 0,
                          "rate_limit_redis: cluster node \"%s:%ui\" cannot "
                          "be used: its address must be numeric, and at most "
                          "%d addresses are kept", node->host,
                          (ngx_uint_t) node->port,
                          NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES);
            continue;
        }

        if (link->retired || (link->ac == NULL
                              && !link->reconnect.timer_set))
        {
            link->retired = 0;
            ngx_http_rate_limit_redis_connect(&link->reconnect);
        }
    }

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        link = &rd->links[i];

        if (!link->used || link->seed || link->retired) {
            continue;
        }

        for (j = 0; j < map->nnodes; j++) {
            if (rd->node_links[j] == link) {
                break;
            }
        }

        if (j == map->nnodes) {
            link->retired = 1;

            if (link->reconnect.timer_set) {
                ngx_del_timer(&link->reconnect);
            }

            ngx_http_rate_limit_redis_close(link);
        }
    }
}


/*
 * MOVED: the slot has another master for good; ASK: this once, during a
 * migration.  The op goes there, within the time it was given.
 */
ngx_int_t
ngx_http_rate_limit_redis_redirect(ngx_http_rate_limit_op_t *op,
    redisReply *reply)
{
    u_char                         *host;
    ngx_http_rate_limit_link_t     *link;
    ngx_http_rate_limit_redis_t    *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redirect_t  to;

    static const char  *asking[] = { "ASKING" };
    static size_t       asking_len[] = { sizeof("ASKING") - 1 };

    if (ngx_http_rate_limit_cluster_redirect(reply->str, reply->len, &to)
        == NGX_HTTP_RATE_LIMIT_REDIRECT_NONE
        || op->redirects++ == NGX_HTTP_RATE_LIMIT_REDIRECTS_MAX)
    {
        return NGX_DECLINED;
    }

    host = to.host[0] ? (u_char *) to.host : op->link->host;

    link = ngx_http_rate_limit_redis_link(host, ngx_strlen(host), to.port,
                                          NULL, NULL);
    if (link == NULL) {
        return NGX_DECLINED;
    }

    if (link->ac == NULL) {
        link->retired = 0;

        if (link->reconnect.timer_set) {
            ngx_del_timer(&link->reconnect);
        }

        ngx_http_rate_limit_redis_connect(&link->reconnect);

        if (link->ac == NULL) {
            return NGX_DECLINED;
        }
    }

    if (to.kind == NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED) {
        ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP);

    } else if (ngx_http_rate_limit_redis_internal(link, "ASKING", 1, asking,
                                                  asking_len)
               != NGX_OK)
    {
        return NGX_DECLINED;
    }

    op->link = link;

    if (rd->exiting) {
        return NGX_DECLINED;
    }

    return ngx_http_rate_limit_redis_evalsha(op) == NGX_OK ? NGX_OK
                                                            : NGX_DECLINED;
}
