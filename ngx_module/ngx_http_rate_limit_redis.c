
/*
 * hiredis's async API on nginx's event loop: one persistent, pipelined
 * connection per worker, reconnected in the background with backoff.
 * hiredis 0.14 has no timers of its own, so every timeout is an nginx timer.
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


struct ngx_http_rate_limit_op_s {
    ngx_http_request_t                *request;   /* NULL once detached */
    ngx_http_rate_limit_ctx_t         *ctx;
    ngx_event_t                        timer;
    uint64_t                           sent_us;    /* for the histogram */
    unsigned                           reloaded:1;
};


typedef struct {
    ngx_http_rate_limit_redis_conf_t  *conf;
    ngx_log_t                         *log;
    ngx_str_t                          password;

    redisAsyncContext                 *ac;
    ngx_connection_t                  *connection;
    const char                        *error;

    ngx_event_t                        reconnect;
    ngx_event_t                        connect_timer;
    ngx_msec_t                         backoff;

    ngx_uint_t                         pending;
    ngx_msec_t                         progress;   /* last reply or send */

    unsigned                           connected:1;
    unsigned                           unreachable:1;
    unsigned                           in_write:1;
    unsigned                           exiting:1;
} ngx_http_rate_limit_redis_t;


static void ngx_http_rate_limit_redis_connect(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_schedule(void);
static void ngx_http_rate_limit_redis_close(void);
static void ngx_http_rate_limit_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_rate_limit_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_rate_limit_redis_setup(redisAsyncContext *ac);
static void ngx_http_rate_limit_redis_load_script(redisAsyncContext *ac);
static void ngx_http_rate_limit_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_rate_limit_redis_evalsha(
    ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_rate_limit_redis_parse(
    ngx_http_rate_limit_ctx_t *ctx, redisReply *reply);
static void ngx_http_rate_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_unreachable(const char *reason);
static void ngx_http_rate_limit_redis_reachable(void);
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
    char                         *value;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

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

    ngx_http_rate_limit_timer_init(&rd->reconnect,
                                   ngx_http_rate_limit_redis_connect, rd,
                                   cycle->log);
    ngx_http_rate_limit_timer_init(&rd->connect_timer,
                                   ngx_http_rate_limit_redis_connect_timeout,
                                   rd, cycle->log);

    ngx_http_rate_limit_redis_connect(&rd->reconnect);

    return NGX_OK;
}


void
ngx_http_rate_limit_redis_exit_process(void)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    rd->exiting = 1;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_http_rate_limit_redis_close();
}


static void
ngx_http_rate_limit_redis_connect(ngx_event_t *ev)
{
    ngx_connection_t                  *c;
    redisAsyncContext                 *ac;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis;
    ngx_http_rate_limit_redis_conf_t  *rcf;

    rcf = rd->conf;

    if (rcf->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) rcf->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) rcf->host.data, rcf->port);
    }

    if (ac == NULL || ac->err) {
        ngx_http_rate_limit_redis_unreachable(ac ? ac->errstr
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

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_rate_limit_redis_add_read;
    ac->ev.delRead = ngx_http_rate_limit_redis_del_read;
    ac->ev.addWrite = ngx_http_rate_limit_redis_add_write;
    ac->ev.delWrite = ngx_http_rate_limit_redis_del_write;
    ac->ev.cleanup = ngx_http_rate_limit_redis_cleanup;

    rd->ac = ac;
    rd->connection = c;
    rd->connected = 0;
    rd->pending = 0;

    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_rate_limit_redis_on_disconnect);

    /* the first writable event completes the connect: hiredis asks for it */
    redisAsyncSetConnectCallback(ac, ngx_http_rate_limit_redis_on_connect);

    ngx_add_timer(&rd->connect_timer, NGX_HTTP_RATE_LIMIT_CONNECT_TIMEOUT);

    ngx_http_rate_limit_redis_setup(ac);

    return;

retry:

    ngx_http_rate_limit_redis_schedule();
}


static void
ngx_http_rate_limit_redis_schedule(void)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->exiting || rd->reconnect.timer_set) {
        return;
    }

    rd->backoff = rd->backoff ? ngx_min(rd->backoff * 2,
                                        NGX_HTTP_RATE_LIMIT_BACKOFF_MAX)
                              : NGX_HTTP_RATE_LIMIT_BACKOFF_MIN;

    ngx_add_timer(&rd->reconnect, rd->backoff);
}


/* hiredis calls back every pending reply with NULL, then cleans up */
static void
ngx_http_rate_limit_redis_close(void)
{
    redisAsyncContext            *ac;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    ac = rd->ac;

    if (ac == NULL) {
        return;
    }

    /* new requests fail at once instead of joining a dying connection */
    rd->ac = NULL;
    rd->connected = 0;

    redisAsyncFree(ac);
}


static void
ngx_http_rate_limit_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->connected) {
        return;
    }

    ngx_http_rate_limit_redis_unreachable("connect timed out");
    ngx_http_rate_limit_redis_close();
}


static void
ngx_http_rate_limit_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (status != REDIS_OK) {
        /* hiredis frees the context next; the cleanup hook retries */
        ngx_http_rate_limit_redis_unreachable(ac->errstr);
        rd->ac = NULL;
        return;
    }

    rd->connected = 1;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }
}


static void
ngx_http_rate_limit_redis_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (status != REDIS_OK && !rd->exiting) {
        ngx_http_rate_limit_redis_unreachable(ac->errstr);
    }

    rd->ac = NULL;
    rd->connected = 0;
}


/* queued before the connect completes; pipelining keeps them in order */
static void
ngx_http_rate_limit_redis_setup(redisAsyncContext *ac)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->password.len) {
        if (redisAsyncCommand(ac, ngx_http_rate_limit_redis_setup_reply,
                              "AUTH", "AUTH %b", rd->password.data,
                              rd->password.len)
            == REDIS_OK)
        {
            rd->pending++;
        }
    }

    if (rd->conf->db) {
        if (redisAsyncCommand(ac, ngx_http_rate_limit_redis_setup_reply,
                              "SELECT", "SELECT %d", (int) rd->conf->db)
            == REDIS_OK)
        {
            rd->pending++;
        }
    }

    ngx_http_rate_limit_redis_load_script(ac);

    rd->progress = ngx_current_msec;
}


static void
ngx_http_rate_limit_redis_load_script(redisAsyncContext *ac)
{
    size_t                        len;
    const char                   *script;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    script = ngx_http_rate_limit_script(&len);

    if (redisAsyncCommand(ac, ngx_http_rate_limit_redis_setup_reply,
                          "SCRIPT LOAD", "SCRIPT LOAD %b", script, len)
        == REDIS_OK)
    {
        rd->pending++;
    }
}


static void
ngx_http_rate_limit_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    rd->pending--;
    rd->progress = ngx_current_msec;

    if (reply == NULL || rd->exiting) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* privdata names the command; Redis's message never holds secrets */
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "rate_limit_redis \"%V\": %s failed: %*s",
                      &rd->conf->address, (char *) privdata,
                      (size_t) reply->len, reply->str);
        return;
    }

    /* the last command of a new connection: Redis answers again */
    if (ngx_strcmp(privdata, "SCRIPT LOAD") == 0) {
        ngx_http_rate_limit_redis_reachable();
    }
}


ngx_int_t
ngx_http_rate_limit_redis_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->ac == NULL) {
        return NGX_DECLINED;
    }

    op = ngx_calloc(sizeof(ngx_http_rate_limit_op_t), r->connection->log);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->request = r;
    op->ctx = ctx;

    if (ngx_http_rate_limit_redis_evalsha(op) != NGX_OK) {
        ngx_free(op);
        return NGX_ERROR;
    }

    op->timer.handler = ngx_http_rate_limit_redis_timeout;
    op->timer.data = op;
    op->timer.log = r->connection->log;

    ngx_add_timer(&op->timer, rd->conf->timeout);

    ctx->op = op;

    return NGX_OK;
}


/* EVALSHA sha n key... (interval burst cost)... in the ctx's Redis order */
static ngx_int_t
ngx_http_rate_limit_redis_evalsha(ngx_http_rate_limit_op_t *op)
{
    u_char                       *p;
    size_t                       *argvlen;
    ngx_uint_t                    i, n, argc;
    const char                  **argv;
    ngx_http_request_t           *r;
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    r = op->request;
    ctx = op->ctx;

    argc = 3 + 4 * ctx->nredis;

    argv = ngx_palloc(r->pool, argc * sizeof(char *));
    argvlen = ngx_palloc(r->pool, argc * sizeof(size_t));
    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = sizeof("EVALSHA") - 1;
    argv[1] = ngx_http_rate_limit_script_sha1();
    argvlen[1] = NGX_HTTP_RATE_LIMIT_SHA1_HEX;
    argv[2] = (char *) p;
    argvlen[2] = ngx_sprintf(p, "%ui", ctx->nredis) - p;

    n = 3;

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

        argv[n] = (char *) p;
        argvlen[n] = ngx_cpymem(ngx_cpymem(p, zone->redis_prefix.data,
                                           zone->redis_prefix.len),
                                check->key.data, check->key.len)
                     - p;
        n++;
    }

    /* after all the keys, the values of each: interval, burst, cost */
    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis) {
            continue;
        }

        argv[n] = (char *) check->texts->interval_arg.data;
        argvlen[n] = check->texts->interval_arg.len;
        argv[n + 1] = (char *) check->texts->burst_arg.data;
        argvlen[n + 1] = check->texts->burst_arg.len;
        argv[n + 2] = (char *) check->limit->cost_arg.data;
        argvlen[n + 2] = check->limit->cost_arg.len;
        n += 3;
    }

    if (redisAsyncCommandArgv(rd->ac, ngx_http_rate_limit_redis_reply, op,
                              (int) argc, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
    }

    if (rd->pending++ == 0) {
        rd->progress = ngx_current_msec;
    }

    op->sent_us = ngx_http_rate_limit_redis_clock_us();

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_request_t           *req;
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_op_t     *op = privdata;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    rd->pending--;

    if (reply) {
        rd->progress = ngx_current_msec;
    }

    req = op->request;

    if (req == NULL || rd->exiting) {
        /* the request timed out or went away: its late reply is dropped */
        ngx_free(op);
        return;
    }

    if (reply == NULL) {
        ngx_http_rate_limit_redis_fail(op);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* the script cache was emptied: a restart, a failover, a flush */
        if (!op->reloaded && rd->ac
            && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
        {
            op->reloaded = 1;

            ngx_http_rate_limit_redis_load_script(rd->ac);

            if (ngx_http_rate_limit_redis_evalsha(op) == NGX_OK) {
                return;
            }
        }

        ngx_http_rate_limit_redis_unreachable(reply->str);
        ngx_http_rate_limit_redis_fail(op);
        return;
    }

    if (ngx_http_rate_limit_redis_parse(op->ctx, reply) != NGX_OK) {
        ngx_http_rate_limit_redis_unreachable("unexpected reply to EVALSHA");
        ngx_http_rate_limit_redis_fail(op);
        return;
    }

    ngx_http_rate_limit_redis_reachable();
    ngx_http_rate_limit_metrics_latency(ngx_http_rate_limit_redis_clock_us()
                                        - op->sent_us);

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    ctx = op->ctx;
    ctx->op = NULL;
    ngx_free(op);

    ctx->resume(req);
}


static ngx_int_t
ngx_http_rate_limit_redis_parse(ngx_http_rate_limit_ctx_t *ctx,
    redisReply *reply)
{
    size_t                           i, n;
    redisReply                     **e;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_decision_t  *d;

    if (reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 1 + 4 * ctx->nredis)
    {
        return NGX_ERROR;
    }

    e = reply->element;

    for (i = 0; i < reply->elements; i++) {
        if (e[i]->type != REDIS_REPLY_INTEGER || e[i]->integer < 0) {
            return NGX_ERROR;
        }
    }

    n = 1;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis) {
            continue;
        }

        d = &check->decision;

        d->allowed = (e[n]->integer != 0);
        d->remaining = (uint64_t) e[n + 1]->integer;
        d->retry_after_us = e[n + 2]->integer;
        d->reset_us = e[n + 3]->integer;

        check->decided = 1;
        n += 4;
    }

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_op_t     *op = ev->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    ngx_http_rate_limit_redis_unreachable("reply timed out");

    /* the op stays with hiredis until its reply or the disconnect */
    ngx_http_rate_limit_redis_fail(op);

    if (rd->ac && rd->pending
        && ngx_current_msec - rd->progress
           >= ngx_max(NGX_HTTP_RATE_LIMIT_STALL_MIN, 4 * rd->conf->timeout))
    {
        ngx_http_rate_limit_redis_close();
    }
}


/* lets the zones' on_failure policies decide, and resumes the request */
static void
ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op)
{
    ngx_uint_t                  i;
    ngx_http_request_t         *r;
    ngx_http_rate_limit_ctx_t  *ctx;

    r = op->request;
    ctx = op->ctx;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].redis) {
            ctx->checks[i].failed = 1;
            ctx->checks[i].decided = 0;
        }
    }

    ngx_http_rate_limit_redis_detach(op);
    ctx->op = NULL;

    ctx->resume(r);
}


void
ngx_http_rate_limit_redis_detach(ngx_http_rate_limit_op_t *op)
{
    op->request = NULL;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }
}


/* one line when Redis is lost and one when it is back, never one a request */
static void
ngx_http_rate_limit_redis_unreachable(const char *reason)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->unreachable || rd->exiting) {
        return;
    }

    rd->unreachable = 1;

    ngx_http_rate_limit_metrics_redis_up(0);

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "rate_limit_redis \"%V\" is unreachable (%s): zones "
                  "follow their \"on_failure\" policy until it answers",
                  &rd->conf->address, reason);
}


static void
ngx_http_rate_limit_redis_reachable(void)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    rd->backoff = 0;

    ngx_http_rate_limit_metrics_redis_up(1);

    if (!rd->unreachable) {
        return;
    }

    rd->unreachable = 0;

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "rate_limit_redis \"%V\" is reachable again",
                  &rd->conf->address);
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
    ngx_connection_t             *c = wev->data;
    redisAsyncContext            *ac;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    ac = c->data;

    rd->in_write = 1;
    redisAsyncHandleWrite(ac);
    rd->in_write = 0;

    if (rd->ac != ac) {
        /* the context is gone, and the connection with it */
        return;
    }

    if (!rd->connected || sdslen(ac->c.obuf) > 0) {
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
    ngx_connection_t             *c = data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->in_write || c->write->active) {
        return;
    }

    if (!rd->connected) {
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
    ngx_connection_t             *c = data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    if (rd->in_write) {
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
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis;

    ngx_http_rate_limit_release_connection(c);

    if (rd->connection == c) {
        rd->connection = NULL;
        rd->ac = NULL;
        rd->connected = 0;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    ngx_http_rate_limit_redis_schedule();
}
