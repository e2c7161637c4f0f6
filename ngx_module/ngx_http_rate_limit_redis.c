
/*
 * hiredis's async API on nginx's event loop: in each worker, one
 * persistent, pipelined connection (a link) to each Redis address, the one
 * server or the masters of a Redis Cluster, reconnected in the background
 * with backoff, and probed while its circuit is open.  hiredis 0.14 has no
 * timers of its own, so every timeout is an nginx timer.
 */


#include "ngx_http_rate_limit_redis.h"


#define NGX_HTTP_RATE_LIMIT_CONNECT_TIMEOUT  1000
#define NGX_HTTP_RATE_LIMIT_BACKOFF_MIN      50
#define NGX_HTTP_RATE_LIMIT_BACKOFF_MAX      1000

/*
 * Replies owed for this long with none arriving, or for timeout when that
 * is longer: the connection is stuck.
 */
#define NGX_HTTP_RATE_LIMIT_STALL_MIN        1000

/* how often a worker looks whether an open circuit is due for a probe */
#define NGX_HTTP_RATE_LIMIT_WATCH            100


static void ngx_http_rate_limit_redis_schedule(
    ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_rate_limit_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_rate_limit_redis_setup(ngx_http_rate_limit_link_t *link);
static void ngx_http_rate_limit_redis_ready(ngx_http_rate_limit_link_t *link);
static ngx_int_t ngx_http_rate_limit_redis_write(
    ngx_http_rate_limit_link_t *link, redisCallbackFn *fn, void *privdata,
    int argc, const char **argv, const size_t *argvlen);
static void ngx_http_rate_limit_redis_internal_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_watch_timer(ngx_event_t *ev);
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
static void *ngx_http_rate_limit_redis_reply_object(
    const redisReadTask *task, int type, size_t extra);
static void *ngx_http_rate_limit_redis_create_string(
    const redisReadTask *task, char *str, size_t len);
static void *ngx_http_rate_limit_redis_create_array(
    const redisReadTask *task, int elements);
static void *ngx_http_rate_limit_redis_create_integer(
    const redisReadTask *task, long long value);
static void *ngx_http_rate_limit_redis_create_nil(const redisReadTask *task);
static void ngx_http_rate_limit_redis_free_reply(void *reply);
static void ngx_http_rate_limit_redis_arena_free(
    ngx_http_rate_limit_link_t *link);


/* the first block of a link's arena: a batch's reply fits in it */
#define NGX_HTTP_RATE_LIMIT_REPLY_BLOCK  8192


static redisReplyObjectFunctions  ngx_http_rate_limit_redis_reply_fns = {
    ngx_http_rate_limit_redis_create_string,
    ngx_http_rate_limit_redis_create_array,
    ngx_http_rate_limit_redis_create_integer,
    ngx_http_rate_limit_redis_create_nil,
    ngx_http_rate_limit_redis_free_reply
};


ngx_http_rate_limit_redis_t  ngx_http_rate_limit_redis_worker;


/* nginx's cached time has milliseconds; round trips want microseconds */
uint64_t
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
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
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
                                              (char *) addr[i].unix_path.data,
                                              &addr[i].address);
        if (link == NULL) {
            return NGX_ERROR;
        }

        link->seed = 1;
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
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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

    ngx_http_rate_limit_redis_free_ops();

    for (i = 0; i < NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES; i++) {
        ngx_http_rate_limit_redis_arena_free(&rd->links[i]);
    }

    ngx_free(rd->resp);
    rd->resp = NULL;
    rd->resp_size = 0;

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
ngx_http_rate_limit_link_t *
ngx_http_rate_limit_redis_link(u_char *host, size_t len, ngx_uint_t port,
    char *unix_path, ngx_str_t *address)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_link_t   *link, *free;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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

    if (len) {
        ngx_memcpy(link->host, host, len);
    }

    if (address) {
        link->address = *address;

    } else {
        /* a cluster node's, for logs and metrics, as long as the worker */
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
    }

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
                                   ngx_http_rate_limit_redis_watch_timer, link,
                                   rd->log);
    ngx_http_rate_limit_timer_init(&link->flush,
                                   ngx_http_rate_limit_redis_flush, link,
                                   rd->log);

    link->batch_last = &link->batch;

    return link;
}


void
ngx_http_rate_limit_redis_connect(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    redisAsyncContext            *ac;
    ngx_http_rate_limit_link_t   *link = ev->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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
    ac->c.reader->fn = &ngx_http_rate_limit_redis_reply_fns;
    ac->c.reader->privdata = link;
    ac->ev.data = c;
    ac->ev.addRead = ngx_http_rate_limit_redis_add_read;
    ac->ev.delRead = ngx_http_rate_limit_redis_del_read;
    ac->ev.addWrite = ngx_http_rate_limit_redis_add_write;
    ac->ev.delWrite = ngx_http_rate_limit_redis_del_write;
    ac->ev.cleanup = ngx_http_rate_limit_redis_cleanup;

    link->ac = ac;
    link->connection = c;
    link->connected = 0;
    link->ready = 0;
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
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (rd->exiting || link->retired || link->reconnect.timer_set) {
        return;
    }

    link->backoff = link->backoff ? ngx_min(link->backoff * 2,
                                            NGX_HTTP_RATE_LIMIT_BACKOFF_MAX)
                                  : NGX_HTTP_RATE_LIMIT_BACKOFF_MIN;

    ngx_add_timer(&link->reconnect, link->backoff);
}


/* hiredis calls back every pending reply with NULL, then cleans up */
void
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
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (status != REDIS_OK && !rd->exiting) {
        ngx_http_rate_limit_redis_failure(link, 1, ac->errstr);
    }

    link->ac = NULL;
    link->connected = 0;
}


/*
 * Queued before the connect completes.  Nothing else goes out before AUTH
 * and SELECT have answered: a command pipelined behind a SELECT that
 * fails would write into database 0.
 */
static void
ngx_http_rate_limit_redis_setup(ngx_http_rate_limit_link_t *link)
{
    u_char                       *p;
    size_t                        argvlen[2];
    const char                   *argv[2];
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    u_char                        db[NGX_INT_T_LEN];

    if (rd->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = sizeof("AUTH") - 1;
        argv[1] = (char *) rd->password.data;
        argvlen[1] = rd->password.len;

        if (ngx_http_rate_limit_redis_write(link,
                                      ngx_http_rate_limit_redis_internal_reply,
                                      "AUTH", 2, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    if (rd->conf->db) {
        p = ngx_sprintf(db, "%ui", rd->conf->db);

        argv[0] = "SELECT";
        argvlen[0] = sizeof("SELECT") - 1;
        argv[1] = (char *) db;
        argvlen[1] = p - db;

        if (ngx_http_rate_limit_redis_write(link,
                                      ngx_http_rate_limit_redis_internal_reply,
                                      "SELECT", 2, argv, argvlen)
            != NGX_OK)
        {
            goto failed;
        }
    }

    link->progress = ngx_current_msec;

    if (link->pending == 0) {
        ngx_http_rate_limit_redis_ready(link);
    }

    return;

failed:

    /* a link without its AUTH or SELECT is never used */
    ngx_http_rate_limit_redis_failure(link, 1, "out of memory");
    ngx_http_rate_limit_redis_close(link);
}


/* the link takes commands: the decisions that waited for it go out now */
static void
ngx_http_rate_limit_redis_ready(ngx_http_rate_limit_link_t *link)
{
    link->ready = 1;

    ngx_http_rate_limit_redis_load_script(link, "SCRIPT LOAD");

    if (link->batch && !link->flush.posted) {
        ngx_post_event(&link->flush, &ngx_posted_events);
    }
}


/*
 * The decision scripts: for one key, for several, for several requests.
 * name tells a new connection's load, which proves that Redis answers
 * again, from a load after NOSCRIPT, which proves nothing.
 */
void
ngx_http_rate_limit_redis_load_script(ngx_http_rate_limit_link_t *link,
    const char *name)
{
    size_t       argvlen[3];
    const char  *argv[3];

    argv[0] = "SCRIPT";
    argvlen[0] = sizeof("SCRIPT") - 1;
    argv[1] = "LOAD";
    argvlen[1] = sizeof("LOAD") - 1;

    argv[2] = ngx_http_rate_limit_script_one(&argvlen[2]);
    (void) ngx_http_rate_limit_redis_internal(link, name, 3, argv, argvlen);

    argv[2] = ngx_http_rate_limit_script(&argvlen[2]);
    (void) ngx_http_rate_limit_redis_internal(link, name, 3, argv, argvlen);

    argv[2] = ngx_http_rate_limit_batch_script(&argvlen[2]);
    (void) ngx_http_rate_limit_redis_internal(link, name, 3, argv, argvlen);
}


/* every command but AUTH and SELECT: only once they have succeeded */
ngx_int_t
ngx_http_rate_limit_redis_queue(ngx_http_rate_limit_link_t *link,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    if (!link->ready) {
        return NGX_ERROR;
    }

    return ngx_http_rate_limit_redis_write(link, fn, privdata, argc, argv,
                                           argvlen);
}


/*
 * Every command goes through here: the stall detector counts replies owed.
 * The command is written in RESP here, into a buffer kept for the next
 * one: hiredis' own formatting costs more than the rest of a request's
 * Redis work in the worker.
 */
static ngx_int_t
ngx_http_rate_limit_redis_write(ngx_http_rate_limit_link_t *link,
    redisCallbackFn *fn, void *privdata, int argc, const char **argv,
    const size_t *argvlen)
{
    u_char                       *p;
    size_t                        size;
    ngx_int_t                     i;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (link->ac == NULL) {
        return NGX_ERROR;
    }

    size = sizeof("*\r\n") - 1 + NGX_INT_T_LEN;

    for (i = 0; i < argc; i++) {
        size += sizeof("$\r\n\r\n") - 1 + NGX_SIZE_T_LEN + argvlen[i];
    }

    if (size > rd->resp_size) {
        ngx_free(rd->resp);

        rd->resp_size = ngx_max(size, 2 * rd->resp_size);
        rd->resp = ngx_alloc(rd->resp_size, rd->log);

        if (rd->resp == NULL) {
            rd->resp_size = 0;
            return NGX_ERROR;
        }
    }

    p = rd->resp;
    *p++ = '*';
    p = ngx_http_rate_limit_decimal(p, (uint64_t) argc);
    *p++ = CR;
    *p++ = LF;

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_http_rate_limit_decimal(p, argvlen[i]);
        *p++ = CR;
        *p++ = LF;
        p = ngx_cpymem(p, argv[i], argvlen[i]);
        *p++ = CR;
        *p++ = LF;
    }

    if (redisAsyncFormattedCommand(link->ac, fn, privdata, (char *) rd->resp,
                                   p - rd->resp)
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
ngx_int_t
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
    u_char                       *p;
    redisReply                   *reply = r;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    u_char                        reason[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    link->pending--;
    link->progress = ngx_current_msec;

    if (reply == NULL || rd->exiting) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && !link->ready) {
        /*
         * AUTH or SELECT failed: the connection is a failed one, and its
         * reason is logged with the circuit that it opens, once
         */
        p = ngx_snprintf(reason, sizeof(reason) - 1, "%s failed: %*s",
                         (char *) privdata, (size_t) reply->len, reply->str);
        *p = '\0';

        ngx_http_rate_limit_redis_failure(link, 1, (char *) reason);
        ngx_http_rate_limit_redis_close(link);
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

    if (!link->ready) {
        if (ngx_strcmp(privdata, "SELECT") == 0 || rd->conf->db == 0) {
            ngx_http_rate_limit_redis_ready(link);
        }

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


/*
 * Replies owed and none coming for long: Redis is frozen, or the path to
 * it is gone; start afresh.  Not before the newest decision has had its
 * whole timeout, which the drop would cut short.
 */
void
ngx_http_rate_limit_redis_check_stall(ngx_http_rate_limit_link_t *link)
{
    ngx_msec_t                    stall;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    u_char                        reason[sizeof("no reply for  ms")
                                         + NGX_INT_T_LEN];

    stall = ngx_max(NGX_HTTP_RATE_LIMIT_STALL_MIN, rd->conf->timeout);

    if (link->ac == NULL || link->pending == 0
        || ngx_current_msec - link->progress < stall
        || ngx_current_msec - link->asked < rd->conf->timeout)
    {
        return;
    }

    *ngx_sprintf(reason, "no reply for %M ms",
                 (ngx_msec_t) (ngx_current_msec - link->progress)) = '\0';

    ngx_http_rate_limit_redis_close(link);
    ngx_http_rate_limit_redis_failure(link, 1, (char *) reason);
}


void
ngx_http_rate_limit_redis_failure(ngx_http_rate_limit_link_t *link,
    ngx_uint_t hard, const char *reason)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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
void
ngx_http_rate_limit_redis_watch(ngx_event_t *ev)
{
    ngx_uint_t                    probe;
    ngx_http_rate_limit_link_t   *link = ev->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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
 * While the circuit is open no decision is sent, so no request's timeout
 * looks at the connection: the watch does, out of any request's handler,
 * as closing the connection resumes the requests that wait on it.
 */
static void
ngx_http_rate_limit_redis_watch_timer(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_check_stall(ev->data);
    ngx_http_rate_limit_redis_watch(ev);
}


/*
 * While the circuit is open, the script for one key on this worker's
 * connection tells whether Redis decides again in time; no request waits
 * for it.  A PING would pass where the script fails (a server, or a proxy
 * in front of several, that answers NOSCRIPT).  With no key and a blocked
 * limit, the script reads and writes nothing.  Without a connection, the
 * reconnection in the background is the probe.
 */
void
ngx_http_rate_limit_redis_probe(ngx_http_rate_limit_link_t *link)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    static const char  *probe[] = { "EVALSHA", NULL, "0", "0", "0", "1" };
    static size_t       probe_len[] = { sizeof("EVALSHA") - 1,
                                        NGX_HTTP_RATE_LIMIT_SHA1_HEX,
                                        1, 1, 1, 1 };

    if (link->ac == NULL || !link->connected || link->probing) {
        return;
    }

    link->probe_seq++;
    probe[1] = ngx_http_rate_limit_script_one_sha1();

    if (ngx_http_rate_limit_redis_queue(link,
                                        ngx_http_rate_limit_redis_probe_reply,
                                        (void *) link->probe_seq, 6, probe,
                                        probe_len)
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
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

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

    if (reply == NULL) {
        ngx_http_rate_limit_redis_failure(link, 0, "connection lost");
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_http_rate_limit_circuit_success(link->circuit, rd->log);
        return;
    }

    /* one load, for the next probe; a NOSCRIPT after it is a failure */
    if (ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        ngx_http_rate_limit_redis_load_script(link, "SCRIPT LOAD again");
    }

    ngx_http_rate_limit_redis_failure(link, 0, reply->str);
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
    ngx_http_rate_limit_redis_t      *rd = &ngx_http_rate_limit_redis_worker;

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
    ngx_connection_t             *c = data;
    redisAsyncContext            *ac = c->data;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    ngx_http_rate_limit_release_connection(c);

    if (link->connection == c) {
        link->connection = NULL;
        link->ac = NULL;
        link->connected = 0;
    }

    if (link->connect_timer.timer_set) {
        ngx_del_timer(&link->connect_timer);
    }

    /* decisions that waited for AUTH and SELECT go to on_failure now */
    if (link->batch && !link->flush.posted && !rd->exiting) {
        ngx_post_event(&link->flush, &ngx_posted_events);
    }

    ngx_http_rate_limit_redis_schedule(link);
}


/*
 * hiredis' reply objects, built in an arena of the link's: a batch's reply
 * holds an object for each number, and a malloc() and a free() for each
 * cost more than reading it.  hiredis builds one reply of a connection at
 * a time and frees it before it reads the next, so freeing a reply empties
 * the arena.  Each object starts with its link, for the free.
 */
static void *
ngx_http_rate_limit_redis_reply_object(const redisReadTask *task, int type,
    size_t extra)
{
    size_t                        size, bsize;
    redisReply                   *r, *parent;
    ngx_http_rate_limit_link_t   *link = task->privdata, **owner;
    ngx_http_rate_limit_block_t  *block;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    size = ngx_align(sizeof(ngx_http_rate_limit_link_t *) + sizeof(redisReply)
                     + extra, NGX_ALIGNMENT);

    block = link->replies;

    if (block == NULL || block->size - block->used < size) {
        bsize = ngx_max(NGX_HTTP_RATE_LIMIT_REPLY_BLOCK,
                        2 * (block ? block->size : 0) + size);

        block = ngx_alloc(sizeof(ngx_http_rate_limit_block_t) + bsize,
                          rd->log);
        if (block == NULL) {
            return NULL;
        }

        block->size = bsize;
        block->used = 0;
        block->next = link->replies;
        link->replies = block;
    }

    owner = (ngx_http_rate_limit_link_t **)
                ((u_char *) (block + 1) + block->used);
    block->used += size;

    *owner = link;

    r = (redisReply *) (owner + 1);
    ngx_memzero(r, sizeof(redisReply) + extra);
    r->type = type;

    if (task->parent) {
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }

    return r;
}


static void *
ngx_http_rate_limit_redis_create_string(const redisReadTask *task, char *str,
    size_t len)
{
    redisReply  *r;

    r = ngx_http_rate_limit_redis_reply_object(task, task->type, len + 1);
    if (r == NULL) {
        return NULL;
    }

    r->str = (char *) (r + 1);
    r->len = len;
    ngx_memcpy(r->str, str, len);

    return r;
}


static void *
ngx_http_rate_limit_redis_create_array(const redisReadTask *task,
    int elements)
{
    redisReply  *r;

    r = ngx_http_rate_limit_redis_reply_object(task, REDIS_REPLY_ARRAY,
                                               elements * sizeof(redisReply *));
    if (r == NULL) {
        return NULL;
    }

    r->elements = elements;
    r->element = elements ? (redisReply **) (r + 1) : NULL;

    return r;
}


static void *
ngx_http_rate_limit_redis_create_integer(const redisReadTask *task,
    long long value)
{
    redisReply  *r;

    r = ngx_http_rate_limit_redis_reply_object(task, REDIS_REPLY_INTEGER, 0);
    if (r == NULL) {
        return NULL;
    }

    r->integer = value;

    return r;
}


static void *
ngx_http_rate_limit_redis_create_nil(const redisReadTask *task)
{
    return ngx_http_rate_limit_redis_reply_object(task, REDIS_REPLY_NIL, 0);
}


/* a whole reply, or what was read of one: the arena's newest block stays */
static void
ngx_http_rate_limit_redis_free_reply(void *reply)
{
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_block_t  *block, *older;

    link = *((ngx_http_rate_limit_link_t **) reply - 1);

    block = link->replies;
    block->used = 0;

    for (older = block->next; older; older = block->next) {
        block->next = older->next;
        ngx_free(older);
    }
}


static void
ngx_http_rate_limit_redis_arena_free(ngx_http_rate_limit_link_t *link)
{
    ngx_http_rate_limit_block_t  *block, *older;

    for (block = link->replies; block; block = older) {
        older = block->next;
        ngx_free(block);
    }

    link->replies = NULL;
}
