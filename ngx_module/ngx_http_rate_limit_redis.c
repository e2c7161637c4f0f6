
/*
 * hiredis's async API on nginx's event loop: in each worker, one
 * persistent, pipelined connection (a link) to each Redis address, the one
 * server or the masters of a Redis Cluster, reconnected in the background
 * with backoff.  hiredis 0.14 has no timers of its own, so every timeout
 * is an nginx timer.
 */


#include "ngx_http_rate_limit_module.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>


#define NGX_HTTP_RATE_LIMIT_CONNECT_TIMEOUT  1000
#define NGX_HTTP_RATE_LIMIT_BACKOFF_MIN      50
#define NGX_HTTP_RATE_LIMIT_BACKOFF_MAX      1000

/* replies owed for this long with none arriving: the connection is stuck */
#define NGX_HTTP_RATE_LIMIT_STALL_MIN        1000

/* how often a worker looks whether an open circuit is due for a probe */
#define NGX_HTTP_RATE_LIMIT_WATCH            100

/* ops kept for reuse: no allocation a request while the load is steady */
#define NGX_HTTP_RATE_LIMIT_FREE_OPS         1024

/* the slot map is read again this often, and after a redirect or failure */
#define NGX_HTTP_RATE_LIMIT_MAP_REFRESH      10000
#define NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP      100
#define NGX_HTTP_RATE_LIMIT_MAP_LOST_GAP     500

/* a key moving twice while one decision is made is a cluster in flux */
#define NGX_HTTP_RATE_LIMIT_REDIRECTS_MAX    3


typedef struct ngx_http_rate_limit_link_s  ngx_http_rate_limit_link_t;


/* one script call: the keys of one request that share a slot */
struct ngx_http_rate_limit_op_s {
    ngx_http_rate_limit_op_t          *next;      /* of the same request */
    ngx_http_request_t                *request;   /* NULL once detached */
    ngx_http_rate_limit_ctx_t         *ctx;
    ngx_http_rate_limit_link_t        *link;
    ngx_event_t                        timer;
    uint64_t                           sent_us;    /* for the histogram */
    int64_t                            asked_us;   /* before Redis' clock */
    ngx_uint_t                         nkeys;
    ngx_uint_t                         redirects;
    unsigned                           reloaded:1;
};


/* a connection to one Redis address, with its circuit */
struct ngx_http_rate_limit_link_s {
    ngx_str_t                          address;    /* for logs and metrics */
    u_char                             host[
                                         NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX];
    ngx_uint_t                         port;
    char                              *unix_path;

    redisAsyncContext                 *ac;
    ngx_connection_t                  *connection;

    ngx_event_t                        reconnect;
    ngx_event_t                        connect_timer;
    ngx_msec_t                         backoff;

    ngx_uint_t                         pending;
    ngx_msec_t                         progress;   /* last reply or send */

    ngx_http_rate_limit_circuit_t     *circuit;
    ngx_event_t                        probe_timer;
    ngx_event_t                        watch;
    uintptr_t                          probe_seq;

    unsigned                           used:1;
    unsigned                           seed:1;
    unsigned                           retired:1;  /* not in the slot map */
    unsigned                           connected:1;
    unsigned                           probing:1;
    unsigned                           in_write:1;
};


typedef struct {
    ngx_http_rate_limit_redis_conf_t  *conf;
    ngx_log_t                         *log;
    ngx_str_t                          password;

    ngx_http_rate_limit_link_t         links[
                                         NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES];

    /*
     * A cluster's slot map, with no node until a CLUSTER SLOTS reply fills
     * it, and the one the next reply is read into: the two are swapped.
     */
    ngx_http_rate_limit_cluster_map_t *maps;
    ngx_http_rate_limit_cluster_map_t *map;
    ngx_http_rate_limit_cluster_map_t *next_map;
    ngx_http_rate_limit_link_t        *node_links[
                                         NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES];
    ngx_event_t                        refresh;
    ngx_msec_t                         refreshed;  /* when last asked */

    ngx_http_rate_limit_op_t          *free_ops;
    ngx_uint_t                         nfree_ops;

    unsigned                           refreshing:1;
    unsigned                           map_error_logged:1;
    unsigned                           exiting:1;
} ngx_http_rate_limit_redis_t;


static ngx_http_rate_limit_link_t *ngx_http_rate_limit_redis_link(
    u_char *host, size_t len, ngx_uint_t port, char *unix_path);
static void ngx_http_rate_limit_redis_connect(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_schedule(
    ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_close(ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_rate_limit_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_rate_limit_redis_setup(ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_load_script(
    ngx_http_rate_limit_link_t *link);
static ngx_int_t ngx_http_rate_limit_redis_queue(
    ngx_http_rate_limit_link_t *link, redisCallbackFn *fn, void *privdata,
    int argc, const char **argv, const size_t *argvlen);
static ngx_int_t ngx_http_rate_limit_redis_internal(
    ngx_http_rate_limit_link_t *link, const char *name, int argc,
    const char **argv, const size_t *argvlen);
static void ngx_http_rate_limit_redis_internal_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_http_rate_limit_link_t *ngx_http_rate_limit_redis_route(
    ngx_str_t *key);
static void ngx_http_rate_limit_redis_ask_map(ngx_msec_t min_gap);
static void ngx_http_rate_limit_redis_refresh(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_slots_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_use_map(ngx_log_t *log);
static ngx_http_rate_limit_op_t *ngx_http_rate_limit_redis_op_alloc(
    ngx_log_t *log);
static void ngx_http_rate_limit_redis_op_free(ngx_http_rate_limit_op_t *op);
static ngx_int_t ngx_http_rate_limit_redis_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static ngx_int_t ngx_http_rate_limit_redis_evalsha(
    ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_rate_limit_redis_redirect(
    ngx_http_rate_limit_op_t *op, redisReply *reply);
static ngx_int_t ngx_http_rate_limit_redis_parse(ngx_http_rate_limit_op_t *op,
    redisReply *reply);
static void ngx_http_rate_limit_redis_remember(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_check_t *check);
static void ngx_http_rate_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_done(ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_refund(ngx_http_rate_limit_ctx_t *ctx);
static void ngx_http_rate_limit_redis_failure(
    ngx_http_rate_limit_link_t *link, ngx_uint_t hard, const char *reason);
static void ngx_http_rate_limit_redis_check_stall(
    ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_watch(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_probe(ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_probe_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_probe_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_command_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_read_handler(ngx_event_t *rev);
static void ngx_http_rate_limit_redis_write_handler(ngx_event_t *wev);
static void ngx_http_rate_limit_redis_add_read(void *data);
static void ngx_http_rate_limit_redis_del_read(void *data);
static void ngx_http_rate_limit_redis_add_write(void *data);
static void ngx_http_rate_limit_redis_del_write(void *data);
static void ngx_http_rate_limit_redis_cleanup(void *data);


static ngx_http_rate_limit_redis_t  ngx_http_rate_limit_redis;


/* nginx's cached time has milliseconds; round trips want microseconds */
static uint64_t
ngx_http_rate_limit_redis_clock_us(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


ngx_int_t
ngx_http_rate_limit_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_redis_conf_t *rcf)
{
    char                              *value;
    ngx_uint_t                         i;
    ngx_http_rate_limit_link_t        *link;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis;
    ngx_http_rate_limit_redis_addr_t  *addr;

    ngx_memzero(rd, sizeof(ngx_http_rate_limit_redis_t));

    rd->conf = rcf;
    rd->log = cycle->log;
    rd->password = rcf->password;

    if (rcf->password_env.len) {
        value = getenv((char *) rcf->password_env.data);

        if (value == NULL) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "rate_limit_redis: environment variable \"%V\" "
                          "holding the password is not set; add \"env %V;\" "
                          "to nginx.conf", &rcf->password_env,
                          &rcf->password_env);

        } else {
            rd->password.data = (u_char *) value;
            rd->password.len = ngx_strlen(value);
        }
    }

    if (rcf->cluster) {
        rd->maps = ngx_alloc(2 * sizeof(ngx_http_rate_limit_cluster_map_t),
                             cycle->log);
        if (rd->maps == NULL) {
            return NGX_ERROR;
        }

        rd->map = &rd->maps[0];
        rd->next_map = &rd->maps[1];
        rd->map->nnodes = 0;

        ngx_http_rate_limit_timer_init(&rd->refresh,
                                       ngx_http_rate_limit_redis_refresh, rd,
                                       cycle->log);
        ngx_add_timer(&rd->refresh, NGX_HTTP_RATE_LIMIT_MAP_REFRESH);
    }

    addr = rcf->addresses.elts;

    for (i = 0; i < rcf->addresses.nelts; i++) {
        link = ngx_http_rate_limit_redis_link(addr[i].host.data,
                                              addr[i].host.len, addr[i].port,
                                              (char *) addr[i].unix_path.data);
        if (link == NULL) {
            return NGX_ERROR;
        }

        link->seed = 1;
        link->address = addr[i].address;
    }

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        if (rd->links[i].used) {
            ngx_http_rate_limit_redis_connect(&rd->links[i].reconnect);
        }
    }

    return NGX_OK;
}


void
ngx_http_rate_limit_redis_exit_process(void)
{
    ngx_uint_t                    i;
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    rd->exiting = 1;

    if (rd->refresh.timer_set) {
        ngx_del_timer(&rd->refresh);
    }

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        link = &rd->links[i];

        if (!link->used) {
            continue;
        }

        if (link->reconnect.timer_set) {
            ngx_del_timer(&link->reconnect);
        }

        if (link->probe_timer.timer_set) {
            ngx_del_timer(&link->probe_timer);
        }

        if (link->watch.timer_set) {
            ngx_del_timer(&link->watch);
        }

        ngx_http_rate_limit_redis_close(link);
    }

    while (rd->free_ops) {
        op = rd->free_ops;
        rd->free_ops = op->next;
        ngx_free(op);
    }

    if (rd->maps) {
        ngx_free(rd->maps);
        rd->maps = NULL;
        rd->map = NULL;
    }
}


/*
 * The link to an address, made on first use.  Cluster nodes are found in
 * replies, so only numeric hosts are taken: a name would need a blocking
 * lookup in the worker.
 */
static ngx_http_rate_limit_link_t *
ngx_http_rate_limit_redis_link(u_char *host, size_t len, ngx_uint_t port,
    char *unix_path)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_link_t   *link, *free;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    free = NULL;

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        link = &rd->links[i];

        if (!link->used) {
            if (free == NULL) {
                free = link;
            }

            continue;
        }

        if (unix_path == NULL && link->unix_path == NULL
            && link->port == port && ngx_strlen(link->host) == len
            && ngx_strncmp(link->host, host, len) == 0)
        {
            return link;
        }
    }

    if (free == NULL || len >= NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX) {
        return NULL;
    }

    if (unix_path == NULL && ngx_inet_addr(host, len) == INADDR_NONE
#if (NGX_HAVE_INET6)
        && ngx_inet6_addr(host, len, NULL) != NGX_OK
#endif
        )
    {
        return NULL;
    }

    link = free;
    ngx_memzero(link, sizeof(ngx_http_rate_limit_link_t));

    link->used = 1;
    link->port = port;
    link->unix_path = unix_path;
    ngx_memcpy(link->host, host, len);

    p = ngx_alloc(len + NGX_INT_T_LEN + 4, rd->log);
    if (p == NULL) {
        link->used = 0;
        return NULL;
    }

    link->address.data = p;
    link->address.len = (ngx_strlchr(host, host + len, ':')
                         ? ngx_sprintf(p, "[%*s]:%ui", len, host, port)
                         : ngx_sprintf(p, "%*s:%ui", len, host, port))
                        - p;

    ngx_http_rate_limit_timer_init(&link->reconnect,
                                   ngx_http_rate_limit_redis_connect, link,
                                   rd->log);
    ngx_http_rate_limit_timer_init(&link->connect_timer,
                                   ngx_http_rate_limit_redis_connect_timeout,
                                   link, rd->log);
    ngx_http_rate_limit_timer_init(&link->probe_timer,
                                   ngx_http_rate_limit_redis_probe_timeout,
                                   link, rd->log);
    ngx_http_rate_limit_timer_init(&link->watch,
                                   ngx_http_rate_limit_redis_watch, link,
                                   rd->log);

    return link;
}


static void
ngx_http_rate_limit_redis_connect(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_rate_limit_link_t   *link = ev->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (link->circuit == NULL) {
        link->circuit = ngx_http_rate_limit_circuit_get(&link->address);
    }

    if (link->unix_path) {
        ac = redisAsyncConnectUnix(link->unix_path);

    } else {
        ac = redisAsyncConnect((char *) link->host, (int) link->port);
    }

    if (ac == NULL || ac->err) {
        ngx_http_rate_limit_redis_failure(link, 1, ac ? ac->errstr
                                                      : "out of memory");
        if (ac) {
            redisAsyncFree(ac);
        }

        goto retry;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        goto retry;
    }

    c->data = ac;
    c->read->handler = ngx_http_rate_limit_redis_read_handler;
    c->write->handler = ngx_http_rate_limit_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    ac->data = link;
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_rate_limit_redis_add_read;
    ac->ev.delRead = ngx_http_rate_limit_redis_del_read;
    ac->ev.addWrite = ngx_http_rate_limit_redis_add_write;
    ac->ev.delWrite = ngx_http_rate_limit_redis_del_write;
    ac->ev.cleanup = ngx_http_rate_limit_redis_cleanup;

    link->ac = ac;
    link->connection = c;
    link->connected = 0;
    link->pending = 0;

    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_rate_limit_redis_on_disconnect);

    /* the first writable event completes the connect: hiredis asks for it */
    redisAsyncSetConnectCallback(ac, ngx_http_rate_limit_redis_on_connect);

    ngx_add_timer(&link->connect_timer, NGX_HTTP_RATE_LIMIT_CONNECT_TIMEOUT);

    ngx_http_rate_limit_redis_setup(link);

    return;

retry:

    ngx_http_rate_limit_redis_schedule(link);
}


static void
ngx_http_rate_limit_redis_schedule(ngx_http_rate_limit_link_t *link)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->exiting || link->retired || link->reconnect.timer_set) {
        return;
    }

    link->backoff = link->backoff ? ngx_min(link->backoff * 2,
                                            NGX_HTTP_RATE_LIMIT_BACKOFF_MAX)
                                  : NGX_HTTP_RATE_LIMIT_BACKOFF_MIN;

    ngx_add_timer(&link->reconnect, link->backoff);
}


/* hiredis calls back every pending reply with NULL, then cleans up */
static void
ngx_http_rate_limit_redis_close(ngx_http_rate_limit_link_t *link)
{
    redisAsyncContext  *ac;

    ac = link->ac;

    if (ac == NULL) {
        return;
    }

    /* new requests fail at once instead of joining a dying connection */
    link->ac = NULL;
    link->connected = 0;

    redisAsyncFree(ac);
}


static void
ngx_http_rate_limit_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_link_t  *link = ev->data;

    if (link->connected) {
        return;
    }

    ngx_http_rate_limit_redis_failure(link, 1, "connect timed out");
    ngx_http_rate_limit_redis_close(link);
}


static void
ngx_http_rate_limit_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_rate_limit_link_t  *link = ac->data;

    if (status != REDIS_OK) {
        /* hiredis frees the context next; the cleanup hook retries */
        ngx_http_rate_limit_redis_failure(link, 1, ac->errstr);
        link->ac = NULL;
        return;
    }

    link->connected = 1;

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }
}


static void
ngx_http_rate_limit_redis_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (status != REDIS_OK && !rd->exiting) {
        ngx_http_rate_limit_redis_failure(link, 1, ac->errstr);
    }

    link->ac = NULL;
    link->connected = 0;
}


/* queued before the connect completes; pipelining keeps them in order */
static void
ngx_http_rate_limit_redis_setup(ngx_http_rate_limit_link_t *link)
{
    u_char                       *p;
    size_t                        argvlen[2];
    const char                   *argv[2];
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    u_char                        db[NGX_INT_T_LEN];

    if (rd->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (char *) rd->password.data;
        argvlen[1] = rd->password.len;

        (void) ngx_http_rate_limit_redis_internal(link, "AUTH", 2, argv,
                                                  argvlen);
    }

    if (rd->conf->db) {
        p = ngx_sprintf(db, "%ui", rd->conf->db);

        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (char *) db;
        argvlen[1] = p - db;

        (void) ngx_http_rate_limit_redis_internal(link, "SELECT", 2, argv,
                                                  argvlen);
    }

    ngx_http_rate_limit_redis_load_script(link);

    link->progress = ngx_current_msec;
}


/* both decision scripts: for one key, and for several */
static void
ngx_http_rate_limit_redis_load_script(ngx_http_rate_limit_link_t *link)
{
    size_t       argvlen[3];
    const char  *argv[3];

    argv[0] = "SCRIPT";
    argvlen[0] = sizeof("SCRIPT") - 1;
    argv[1] = "LOAD";
    argvlen[1] = sizeof("LOAD") - 1;

    argv[2] = ngx_http_rate_limit_script_one(&argvlen[2]);
    (void) ngx_http_rate_limit_redis_internal(link, "SCRIPT LOAD", 3, argv,
                                              argvlen);

    argv[2] = ngx_http_rate_limit_script(&argvlen[2]);
    (void) ngx_http_rate_limit_redis_internal(link, "SCRIPT LOAD", 3, argv,
                                              argvlen);
}


/* every command goes through here: the stall detector counts replies owed */
static ngx_int_t
ngx_http_rate_limit_redis_queue(ngx_http_rate_limit_link_t *link,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    if (link->ac == NULL
        || redisAsyncCommandArgv(link->ac, fn, privdata, argc, argv, argvlen)
           != REDIS_OK)
    {
        return NGX_ERROR;
    }

    if (link->pending++ == 0) {
        link->progress = ngx_current_msec;
    }

    return NGX_OK;
}


/* a command of the connection's own: name says which, in the log */
static ngx_int_t
ngx_http_rate_limit_redis_internal(ngx_http_rate_limit_link_t *link,
    const char *name, int argc, const char **argv, const size_t *argvlen)
{
    return ngx_http_rate_limit_redis_queue(link,
                                      ngx_http_rate_limit_redis_internal_reply,
                                      (void *) name, argc, argv, argvlen);
}


static void
ngx_http_rate_limit_redis_internal_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    link->pending--;
    link->progress = ngx_current_msec;

    if (reply == NULL || rd->exiting) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* privdata names the command; Redis's message never holds secrets */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "rate_limit_redis \"%V\": %s failed: %*s",
                      &link->address, (char *) privdata,
                      (size_t) reply->len, reply->str);
        return;
    }

    /* the last command of a new connection: Redis answers again */
    if (ngx_strcmp(privdata, "SCRIPT LOAD") == 0) {
        link->backoff = 0;
        ngx_http_rate_limit_circuit_success(link->circuit, rd->log);

        if (rd->map && rd->map->nnodes == 0) {
            ngx_http_rate_limit_redis_ask_map(0);
        }
    }
}


/* the link that holds a key: the one server, or the master of its slot */
static ngx_http_rate_limit_link_t *
ngx_http_rate_limit_redis_route(ngx_str_t *key)
{
    ngx_uint_t                    node;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

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
static void
ngx_http_rate_limit_redis_ask_map(ngx_msec_t min_gap)
{
    ngx_uint_t                    i;
    const char                   *argv[2];
    size_t                        argvlen[2];
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

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


static void
ngx_http_rate_limit_redis_refresh(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    ngx_add_timer(&rd->refresh, NGX_HTTP_RATE_LIMIT_MAP_REFRESH);

    ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP);
}


static void
ngx_http_rate_limit_redis_slots_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

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
    ngx_http_rate_limit_redis_t        *rd = &ngx_http_rate_limit_redis;
    ngx_http_rate_limit_cluster_map_t  *map;
    ngx_http_rate_limit_cluster_node_t *node;

    map = rd->next_map;
    rd->next_map = rd->map;
    rd->map = map;

    for (i = 0; i < map->nnodes; i++) {
        node = &map->nodes[i];

        link = ngx_http_rate_limit_redis_link((u_char *) node->host,
                                              ngx_strlen(node->host),
                                              node->port, NULL);
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


ngx_int_t
ngx_http_rate_limit_redis_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_uint_t                    i, j, probe;
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_check_t  *check, *other;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (ngx_http_rate_limit_redis_keys(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* one op for the keys of each slot: a script's keys share a slot */
    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis || check->op || check->failed) {
            continue;
        }

        link = ngx_http_rate_limit_redis_route(&check->redis_key);

        if (link == NULL || link->ac == NULL
            || !ngx_http_rate_limit_circuit_allow(link->circuit, &probe))
        {
            if (link && link->circuit && link->circuit->open) {
                ngx_http_rate_limit_redis_watch(&link->watch);
            }

            check->failed = 1;
            continue;
        }

        op = ngx_http_rate_limit_redis_op_alloc(r->connection->log);
        if (op == NULL) {
            check->failed = 1;
            continue;
        }

        op->request = r;
        op->ctx = ctx;
        op->link = link;
        op->asked_us = ngx_http_rate_limit_now_us();

        for (j = i; j < ctx->nchecks; j++) {
            other = &ctx->checks[j];

            if (other->redis && other->op == NULL && !other->failed
                && (rd->map == NULL
                    || ngx_http_rate_limit_cluster_slot(
                           other->redis_key.data, other->redis_key.len)
                       == ngx_http_rate_limit_cluster_slot(
                              check->redis_key.data, check->redis_key.len)))
            {
                other->op = op;
                op->nkeys++;
            }
        }

        if (ngx_http_rate_limit_redis_evalsha(op) != NGX_OK) {
            for (j = i; j < ctx->nchecks; j++) {
                if (ctx->checks[j].op == op) {
                    ctx->checks[j].op = NULL;
                    ctx->checks[j].failed = 1;
                }
            }

            ngx_http_rate_limit_redis_op_free(op);
            continue;
        }

        /* not cancelable: a worker that quits answers its requests first */
        op->timer.handler = ngx_http_rate_limit_redis_timeout;
        op->timer.data = op;
        op->timer.log = r->connection->log;
        ngx_add_timer(&op->timer, rd->conf->timeout);

        op->next = ctx->op;
        ctx->op = op;
        ctx->nops++;
    }

    return ctx->nops ? NGX_OK : NGX_DECLINED;
}


static ngx_http_rate_limit_op_t *
ngx_http_rate_limit_redis_op_alloc(ngx_log_t *log)
{
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    op = rd->free_ops;

    if (op) {
        rd->free_ops = op->next;
        rd->nfree_ops--;

    } else {
        op = ngx_alloc(sizeof(ngx_http_rate_limit_op_t), log);
        if (op == NULL) {
            return NULL;
        }
    }

    ngx_memzero(op, sizeof(ngx_http_rate_limit_op_t));

    return op;
}


static void
ngx_http_rate_limit_redis_op_free(ngx_http_rate_limit_op_t *op)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->exiting || rd->nfree_ops == NGX_HTTP_RATE_LIMIT_FREE_OPS) {
        ngx_free(op);
        return;
    }

    op->next = rd->free_ops;
    rd->free_ops = op;
    rd->nfree_ops++;
}


/* "<prefix>:<zone>:<key>", made once a request: routing and EVALSHA use it */
static ngx_int_t
ngx_http_rate_limit_redis_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis) {
            continue;
        }

        zone = check->limit->zone;

        p = ngx_pnalloc(r->pool, zone->redis_prefix.len + check->key.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        check->redis_key.data = p;
        check->redis_key.len = ngx_cpymem(ngx_cpymem(p, zone->redis_prefix.data,
                                                     zone->redis_prefix.len),
                                          check->key.data, check->key.len)
                               - p;
    }

    return NGX_OK;
}


/*
 * EVALSHA sha n key... (interval burst cost)... for the op's keys, with
 * the cheaper script when there is one key
 */
static ngx_int_t
ngx_http_rate_limit_redis_evalsha(ngx_http_rate_limit_op_t *op)
{
    u_char                       *p;
    size_t                       *argvlen;
    ngx_uint_t                    i, k, v, argc;
    const char                  **argv;
    ngx_http_request_t           *r;
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_check_t  *check;

    r = op->request;
    ctx = op->ctx;

    if (op->link->ac == NULL) {
        return NGX_ERROR;
    }

    argc = 3 + 4 * op->nkeys;

    argv = ngx_palloc(r->pool, argc * sizeof(char *));
    argvlen = ngx_palloc(r->pool, argc * sizeof(size_t));
    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = sizeof("EVALSHA") - 1;
    argv[1] = (op->nkeys == 1) ? ngx_http_rate_limit_script_one_sha1()
                               : ngx_http_rate_limit_script_sha1();
    argvlen[1] = NGX_HTTP_RATE_LIMIT_SHA1_HEX;
    argv[2] = (char *) p;
    argvlen[2] = ngx_sprintf(p, "%ui", op->nkeys) - p;

    /* all the keys, then the values of each: interval, burst, cost */
    k = 3;
    v = 3 + op->nkeys;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->op != op) {
            continue;
        }

        argv[k] = (char *) check->redis_key.data;
        argvlen[k] = check->redis_key.len;
        k++;

        argv[v] = (char *) check->texts->interval_arg.data;
        argvlen[v] = check->texts->interval_arg.len;
        argv[v + 1] = (char *) check->texts->burst_arg.data;
        argvlen[v + 1] = check->texts->burst_arg.len;
        argv[v + 2] = (char *) check->limit->cost_arg.data;
        argvlen[v + 2] = check->limit->cost_arg.len;
        v += 3;
    }

    if (ngx_http_rate_limit_redis_queue(op->link,
                                        ngx_http_rate_limit_redis_reply, op,
                                        (int) argc, argv, argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    op->sent_us = ngx_http_rate_limit_redis_clock_us();

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_op_t     *op = privdata;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    link->pending--;

    if (reply) {
        link->progress = ngx_current_msec;
    }

    if (op->request == NULL || rd->exiting) {
        /* the request timed out or went away: its late reply is dropped */
        ngx_http_rate_limit_redis_op_free(op);
        return;
    }

    if (reply == NULL) {
        goto failed;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* the script cache was emptied: a restart, a failover, a flush */
        if (!op->reloaded && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            op->reloaded = 1;

            ngx_http_rate_limit_redis_load_script(link);

            if (ngx_http_rate_limit_redis_evalsha(op) == NGX_OK) {
                return;
            }
        }

        if (rd->map
            && ngx_http_rate_limit_redis_redirect(op, reply) == NGX_OK)
        {
            return;
        }

        ngx_http_rate_limit_redis_failure(link, 0, reply->str);
        goto failed;
    }

    if (ngx_http_rate_limit_redis_parse(op, reply) != NGX_OK) {
        ngx_http_rate_limit_redis_failure(link, 0,
                                          "unexpected reply to EVALSHA");
        goto failed;
    }

    ngx_http_rate_limit_circuit_success(link->circuit, rd->log);
    ngx_http_rate_limit_metrics_latency(ngx_http_rate_limit_redis_clock_us()
                                        - op->sent_us);

    ngx_http_rate_limit_redis_done(op);
    return;

failed:

    /* hiredis is done with the op: it is freed here, not on a later reply */
    ngx_http_rate_limit_redis_fail(op);
    ngx_http_rate_limit_redis_op_free(op);
}


/*
 * MOVED: the slot has another master for good; ASK: this once, during a
 * migration.  The op goes there, within the time it was given.
 */
static ngx_int_t
ngx_http_rate_limit_redis_redirect(ngx_http_rate_limit_op_t *op,
    redisReply *reply)
{
    u_char                         *host;
    ngx_http_rate_limit_link_t     *link;
    ngx_http_rate_limit_redis_t    *rd = &ngx_http_rate_limit_redis;
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
                                          NULL);
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


static ngx_int_t
ngx_http_rate_limit_redis_parse(ngx_http_rate_limit_op_t *op,
    redisReply *reply)
{
    ngx_uint_t                       i, n;
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_decision_t  *d;

    ctx = op->ctx;

    d = ngx_palloc(op->request->pool,
                   op->nkeys * sizeof(ngx_http_rate_limit_decision_t));
    if (d == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_rate_limit_parse_script_reply(reply, op->nkeys, d)
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->op != op) {
            continue;
        }

        check->decision = d[n++];
        check->decided = 1;

        /* the script took the tokens only if all its keys allowed */
        check->redis_taken = (reply->element[0]->integer == 1);

        if (!check->decision.allowed) {
            ngx_http_rate_limit_redis_remember(op, check);
        }
    }

    return NGX_OK;
}


/*
 * A rejection is kept in the zone's shared memory, so that the node's
 * next requests of the key are rejected without a round trip.  Times
 * count from when the op was sent, before Redis read its clock: the
 * cache may forget a rejection early, never hold one too long.
 */
static void
ngx_http_rate_limit_redis_remember(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_check_t *check)
{
    int64_t                          interval_us;
    ngx_http_rate_limit_decision_t  *d;

    d = &check->decision;
    interval_us = (int64_t) (check->params.interval_us + 0.5);

    /* a wait shorter than the clock's millisecond is not worth keeping */
    if (ngx_http_rate_limit_params_blocked(&check->params)
        || d->retry_after_us
           - (int64_t) (check->limit->cost - 1) * interval_us < 2000)
    {
        return;
    }

    ngx_http_rate_limit_shm_block(check->limit->zone, &check->key,
        op->asked_us + d->retry_after_us
        - (int64_t) (check->limit->cost - 1) * interval_us,
        op->asked_us + d->reset_us, ngx_http_rate_limit_now_us());
}


static void
ngx_http_rate_limit_redis_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_op_t    *op = ev->data;
    ngx_http_rate_limit_link_t  *link;

    link = op->link;

    ngx_http_rate_limit_redis_failure(link, 0, "reply timed out");

    /* the op stays with hiredis until its reply or the disconnect */
    ngx_http_rate_limit_redis_fail(op);

    ngx_http_rate_limit_redis_check_stall(link);
}


/* replies owed and none coming for long: Redis is frozen, start afresh */
static void
ngx_http_rate_limit_redis_check_stall(ngx_http_rate_limit_link_t *link)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (link->ac && link->pending
        && ngx_current_msec - link->progress
           >= ngx_max(NGX_HTTP_RATE_LIMIT_STALL_MIN, 4 * rd->conf->timeout))
    {
        ngx_http_rate_limit_redis_close(link);
    }
}


/* the op's keys go to the zones' on_failure policies */
static void
ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op)
{
    ngx_uint_t                  i;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = op->ctx;

    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].op == op) {
            ctx->checks[i].failed = 1;
            ctx->checks[i].decided = 0;
        }
    }

    ngx_http_rate_limit_redis_done(op);
}


/* the op is over for the request; the last one resumes it */
static void
ngx_http_rate_limit_redis_done(ngx_http_rate_limit_op_t *op)
{
    ngx_uint_t                    i;
    ngx_http_request_t           *r;
    ngx_http_rate_limit_op_t    **pp;
    ngx_http_rate_limit_ctx_t    *ctx;

    r = op->request;
    ctx = op->ctx;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    op->request = NULL;

    for (pp = &ctx->op; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }

    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].op == op) {
            ctx->checks[i].op = NULL;
        }
    }

    if (--ctx->nops) {
        return;
    }

    ngx_http_rate_limit_redis_refund(ctx);

    ctx->resume(r);
}


/*
 * In a cluster the keys of one request may be decided by several scripts.
 * When one rejects, those that took tokens give them back, so that a
 * rejected request costs no other limit anything, a moment later.
 */
static void
ngx_http_rate_limit_redis_refund(ngx_http_rate_limit_ctx_t *ctx)
{
    size_t                        argvlen[7];
    ngx_uint_t                    i;
    const char                   *argv[7];
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis && check->decided && !check->decision.allowed) {
            break;
        }
    }

    if (i == ctx->nchecks) {
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_rate_limit_refund_script(&argvlen[1]);
    argv[2] = "1";
    argvlen[2] = 1;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis_taken) {
            continue;
        }

        check->redis_taken = 0;

        link = ngx_http_rate_limit_redis_route(&check->redis_key);
        if (link == NULL) {
            continue;
        }

        argv[3] = (char *) check->redis_key.data;
        argvlen[3] = check->redis_key.len;
        argv[4] = (char *) check->texts->interval_arg.data;
        argvlen[4] = check->texts->interval_arg.len;
        argv[5] = (char *) check->texts->burst_arg.data;
        argvlen[5] = check->texts->burst_arg.len;
        argv[6] = (char *) check->limit->cost_arg.data;
        argvlen[6] = check->limit->cost_arg.len;

        (void) ngx_http_rate_limit_redis_internal(link, "refund", 7, argv,
                                                  argvlen);
    }
}


/* the request went away: its ops' replies, when they come, are dropped */
void
ngx_http_rate_limit_redis_detach(ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_http_rate_limit_op_t  *op;

    for (op = ctx->op; op; op = op->next) {
        op->request = NULL;

        if (op->timer.timer_set) {
            ngx_del_timer(&op->timer);
        }
    }

    ctx->op = NULL;
    ctx->nops = 0;
}


static void
ngx_http_rate_limit_redis_failure(ngx_http_rate_limit_link_t *link,
    ngx_uint_t hard, const char *reason)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->exiting) {
        return;
    }

    ngx_http_rate_limit_circuit_failure(link->circuit, hard, reason, rd->log);

    /* a master lost: its replica may have taken over the slots */
    if (hard) {
        ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP);
    }

    if (link->circuit && link->circuit->open && !link->watch.timer_set) {
        ngx_add_timer(&link->watch, NGX_HTTP_RATE_LIMIT_WATCH);
    }
}


/*
 * While the circuit is open, the workers that saw it open take turns to
 * probe, with or without traffic, so that it closes as soon as Redis
 * answers and not with the next request.
 */
static void
ngx_http_rate_limit_redis_watch(ngx_event_t *ev)
{
    ngx_uint_t                    probe;
    ngx_http_rate_limit_link_t   *link = ev->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->exiting || link->retired
        || ngx_http_rate_limit_circuit_allow(link->circuit, &probe))
    {
        return;
    }

    if (probe) {
        ngx_http_rate_limit_redis_probe(link);
    }

    /* a lost master's replica takes over in seconds: look for it */
    ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_LOST_GAP);

    if (!link->watch.timer_set) {
        ngx_add_timer(&link->watch, NGX_HTTP_RATE_LIMIT_WATCH);
    }
}


/*
 * While the circuit is open, a PING on this worker's connection tells
 * whether Redis answers again in time; no request waits for it.  Without
 * a connection, the reconnection in the background is the probe.
 */
static void
ngx_http_rate_limit_redis_probe(ngx_http_rate_limit_link_t *link)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    static const char  *ping[] = { "PING" };
    static size_t       ping_len[] = { sizeof("PING") - 1 };

    if (link->ac == NULL || !link->connected || link->probing) {
        return;
    }

    link->probe_seq++;

    if (ngx_http_rate_limit_redis_queue(link,
                                        ngx_http_rate_limit_redis_probe_reply,
                                        (void *) link->probe_seq, 1, ping,
                                        ping_len)
        != NGX_OK)
    {
        return;
    }

    link->probing = 1;
    ngx_add_timer(&link->probe_timer, rd->conf->timeout);
}


static void
ngx_http_rate_limit_redis_probe_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    link->pending--;

    if (reply) {
        link->progress = ngx_current_msec;
    }

    /* a reply later than the timeout proves nothing about the next ones */
    if (!link->probing || (uintptr_t) privdata != link->probe_seq
        || rd->exiting)
    {
        return;
    }

    link->probing = 0;

    if (link->probe_timer.timer_set) {
        ngx_del_timer(&link->probe_timer);
    }

    if (reply && reply->type == REDIS_REPLY_STATUS) {
        ngx_http_rate_limit_circuit_success(link->circuit, rd->log);

    } else {
        ngx_http_rate_limit_redis_failure(link, 0,
                                          reply ? "unexpected reply to PING"
                                                : "connection lost");
    }
}


static void
ngx_http_rate_limit_redis_probe_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_link_t  *link = ev->data;

    link->probing = 0;

    ngx_http_rate_limit_redis_failure(link, 0, "probe timed out");
    ngx_http_rate_limit_redis_check_stall(link);
}


/*
 * A command of the module's own, such as the node heartbeat, sent to the
 * link of key only while it answers; its reply is handed over as it is,
 * or NULL.
 */
ngx_int_t
ngx_http_rate_limit_redis_command(ngx_http_rate_limit_redis_cmd_t *cmd,
    ngx_str_t *key, int argc, const char **argv, const size_t *argvlen)
{
    ngx_http_rate_limit_link_t  *link;

    link = ngx_http_rate_limit_redis_route(key);

    if (link == NULL || link->ac == NULL || !link->connected
        || (link->circuit && link->circuit->open))
    {
        return NGX_DECLINED;
    }

    return ngx_http_rate_limit_redis_queue(link,
                                       ngx_http_rate_limit_redis_command_reply,
                                       cmd, argc, argv, argvlen);
}


static void
ngx_http_rate_limit_redis_command_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_rate_limit_link_t       *link = ac->data;
    ngx_http_rate_limit_redis_cmd_t  *cmd = privdata;
    ngx_http_rate_limit_redis_t      *rd = &ngx_http_rate_limit_redis;

    link->pending--;

    if (r) {
        link->progress = ngx_current_msec;
    }

    cmd->handler(rd->exiting ? NULL : r, cmd->data);
}


static void
ngx_http_rate_limit_redis_read_handler(ngx_event_t *rev)
{
    ngx_connection_t  *c = rev->data;

    redisAsyncHandleRead(c->data);
}


/*
 * Commands queued during one pass of the event loop go out in one write:
 * the write handler runs as a posted event.  The socket is watched for
 * writability only while hiredis still holds unsent bytes.
 */
static void
ngx_http_rate_limit_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t            *c = wev->data;
    redisAsyncContext           *ac;
    ngx_http_rate_limit_link_t  *link;

    ac = c->data;
    link = ac->data;

    link->in_write = 1;
    redisAsyncHandleWrite(ac);
    link->in_write = 0;

    if (link->ac != ac) {
        /* the context is gone, and the connection with it */
        return;
    }

    if (!link->connected || sdslen(ac->c.obuf) > 0) {
        if (!wev->active) {
            ngx_add_event(wev, NGX_WRITE_EVENT, 0);
        }

    } else if (wev->active) {
        ngx_del_event(wev, NGX_WRITE_EVENT, 0);
    }
}


static void
ngx_http_rate_limit_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    /* level-triggered: one hiredis read takes at most 16k */
    if (!c->read->active) {
        ngx_add_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_rate_limit_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_rate_limit_redis_add_write(void *data)
{
    ngx_connection_t            *c = data;
    redisAsyncContext           *ac = c->data;
    ngx_http_rate_limit_link_t  *link = ac->data;

    if (link->in_write || c->write->active) {
        return;
    }

    if (!link->connected) {
        ngx_add_event(c->write, NGX_WRITE_EVENT, 0);
        return;
    }

    if (!c->write->posted) {
        ngx_post_event(c->write, &ngx_posted_events);
    }
}


static void
ngx_http_rate_limit_redis_del_write(void *data)
{
    ngx_connection_t            *c = data;
    redisAsyncContext           *ac = c->data;
    ngx_http_rate_limit_link_t  *link = ac->data;

    if (link->in_write) {
        return;
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }
}


/*
 * hiredis closes the socket itself right after this hook, so the
 * connection is freed, not closed, and its events are dropped without an
 * epoll call.
 */
static void
ngx_http_rate_limit_redis_cleanup(void *data)
{
    ngx_connection_t            *c = data;
    redisAsyncContext           *ac = c->data;
    ngx_http_rate_limit_link_t  *link = ac->data;

    ngx_http_rate_limit_release_connection(c);

    if (link->connection == c) {
        link->connection = NULL;
        link->ac = NULL;
        link->connected = 0;
    }

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    ngx_http_rate_limit_redis_schedule(link);
}
