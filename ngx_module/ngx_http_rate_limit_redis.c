
/*
 * The core's Redis client (rl_redis.h) on nginx's event loop, and the only
 * place where the two meet: the core owns the protocol and every Redis
 * state, and this file moves its bytes, as a client library's event loop
 * adapters do, but with byte streams.  Each worker has one client, one
 * timer and one posted event for it, and a connection for each link.
 */


#include "ngx_http_rate_limit_module.h"


/* epoll is edge-triggered: a read drains the socket, this much at a time */
#define NGX_HTTP_RATE_LIMIT_REDIS_READ  16384


/* a link of the core's client: at most one connection at a time */
typedef struct {
    ngx_connection_t                  *connection;
    unsigned                           connected:1;
} ngx_http_rate_limit_redis_link_t;


typedef struct {
    rl_redis_client_t                 *client;
    ngx_log_t                         *log;
    ngx_log_t                          connection_log;
    ngx_slab_pool_t                   *shpool;
    ngx_event_t                        timer;
    ngx_event_t                        posted;
    ngx_http_rate_limit_redis_link_t   links[RL_REDIS_ADDRESSES];
    u_char                             buffer[
                                           NGX_HTTP_RATE_LIMIT_REDIS_READ];
} ngx_http_rate_limit_redis_t;


static int ngx_http_rate_limit_redis_open(void *data, unsigned link,
    const rl_redis_endpoint_t *endpoint, char *err);
static void ngx_http_rate_limit_redis_want_write(void *data, unsigned link);
static void ngx_http_rate_limit_redis_close(void *data, unsigned link);
static void ngx_http_rate_limit_redis_set_timer(void *data,
    uint64_t delay_ms, int hold);
static void ngx_http_rate_limit_redis_post(void *data);
static void ngx_http_rate_limit_redis_log(void *data, int level,
    const char *msg);
static uint64_t ngx_http_rate_limit_redis_now_us(void *data);
static void ngx_http_rate_limit_redis_lock(void *data);
static void ngx_http_rate_limit_redis_unlock(void *data);
static void ngx_http_rate_limit_redis_read_handler(ngx_event_t *rev);
static void ngx_http_rate_limit_redis_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_http_rate_limit_redis_ready(
    ngx_http_rate_limit_redis_link_t *link, ngx_connection_t *c,
    ngx_atomic_uint_t number);
static ngx_int_t ngx_http_rate_limit_redis_connected(ngx_connection_t *c);
static void ngx_http_rate_limit_redis_failed(ngx_connection_t *c,
    ngx_err_t err);
static void ngx_http_rate_limit_redis_closed(ngx_connection_t *c,
    const char *reason);
static void ngx_http_rate_limit_redis_strerror(ngx_err_t err, char *buf);
static void ngx_http_rate_limit_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_posted_handler(ngx_event_t *ev);


static ngx_http_rate_limit_redis_t  ngx_http_rate_limit_redis_worker;


static const rl_redis_adapter_t  ngx_http_rate_limit_redis_adapter = {
    &ngx_http_rate_limit_redis_worker,
    ngx_http_rate_limit_redis_open,
    ngx_http_rate_limit_redis_want_write,
    ngx_http_rate_limit_redis_close,
    ngx_http_rate_limit_redis_set_timer,
    ngx_http_rate_limit_redis_post,
    ngx_http_rate_limit_redis_log,
    ngx_http_rate_limit_redis_now_us,
    ngx_http_rate_limit_redis_lock,
    ngx_http_rate_limit_redis_unlock
};


ngx_int_t
ngx_http_rate_limit_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    char                          err[RL_REDIS_ERR_LEN];
    rl_conf_process_t             process;
    rl_redis_config_t             config;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    ngx_memzero(rd, sizeof(ngx_http_rate_limit_redis_t));

    rd->log = cycle->log;

    /*
     * The core logs a failed or lost link, with its reason.  nginx's own
     * line about it, an [error] or a [crit] at each reconnection, would
     * only repeat it: the connections log alerts alone.
     */
    rd->connection_log = *cycle->log;
    rd->connection_log.log_level = NGX_LOG_ALERT;

    rd->shpool = (ngx_slab_pool_t *) rmcf->metrics_zone->shm.addr;

    ngx_http_rate_limit_timer_init(&rd->timer,
                                   ngx_http_rate_limit_redis_timer_handler, rd,
                                   cycle->log);
    ngx_http_rate_limit_timer_init(&rd->posted,
                                   ngx_http_rate_limit_redis_posted_handler,
                                   rd, cycle->log);

    ngx_http_rate_limit_conf_process(cycle, &process);

    if (rl_conf_redis_config(rmcf->conf, &process, &config) != RL_CONF_OK) {
        return NGX_ERROR;
    }

    config.shared = rmcf->redis_shared;

    rd->client = rl_redis_create(&config, &ngx_http_rate_limit_redis_adapter,
                                 err);
    if (rd->client == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0, "rate_limit_redis: %s",
                      err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_rate_limit_redis_exit_process(void)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    /* it closes every connection, through ngx_http_rate_limit_redis_close() */
    rl_redis_destroy(rd->client);
    rd->client = NULL;

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    if (rd->posted.posted) {
        ngx_delete_posted_event(&rd->posted);
    }
}


/* NULL in a worker with no Redis zone, and once the worker is exiting */
rl_redis_client_t *
ngx_http_rate_limit_redis_client(void)
{
    return ngx_http_rate_limit_redis_worker.client;
}


static int
ngx_http_rate_limit_redis_open(void *data, unsigned n,
    const rl_redis_endpoint_t *endpoint, char *err)
{
    ngx_http_rate_limit_redis_t *rd = data;

    int                                nodelay = 1;
    ngx_int_t                          rc;
    ngx_str_t                          name;
    ngx_connection_t                  *c;
    ngx_peer_connection_t              pc;
    ngx_http_rate_limit_redis_link_t  *link;

    link = &rd->links[n];

    ngx_memzero(&pc, sizeof(ngx_peer_connection_t));

    name.data = (u_char *) endpoint->address;
    name.len = ngx_strlen(endpoint->address);

    pc.sockaddr = (struct sockaddr *) endpoint->sockaddr;
    pc.socklen = endpoint->socklen;
    pc.name = &name;
    pc.get = ngx_event_get_peer;
    pc.log = &rd->connection_log;
    pc.log_error = NGX_ERROR_INFO;

    /* a failure of nginx's own, such as no free connection, sets none */
    ngx_set_socket_errno(0);

    rc = ngx_event_connect_peer(&pc);

    if (rc == NGX_ERROR || rc == NGX_DECLINED || rc == NGX_BUSY) {
        if (ngx_socket_errno) {
            ngx_http_rate_limit_redis_strerror(ngx_socket_errno, err);

        } else {
            ngx_cpystrn((u_char *) err, (u_char *) "no free connection "
                        "(worker_connections)", RL_REDIS_ERR_LEN);
        }

        return RL_REDIS_ERROR;
    }

    c = pc.connection;

    /*
     * A batch longer than a segment, or a command cut by a short send,
     * must not wait for the ACK of the previous segment (Nagle), which
     * the peer delays: hiredis set TCP_NODELAY, and so does this.
     */
    if (endpoint->unix_path == NULL) {
        if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY,
                       (const void *) &nodelay, sizeof(int))
            == -1)
        {
            ngx_http_rate_limit_redis_strerror(ngx_socket_errno, err);
            ngx_close_connection(c);
            return RL_REDIS_ERROR;
        }

        c->tcp_nodelay = NGX_TCP_NODELAY_SET;
    }

    c->data = link;
    c->read->handler = ngx_http_rate_limit_redis_read_handler;
    c->write->handler = ngx_http_rate_limit_redis_write_handler;

    link->connection = c;
    link->connected = 0;

    /* connected at once (a unix socket): the core hears of it later, too */
    if (rc == NGX_OK) {
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return RL_REDIS_OK;
}


/*
 * Posted, so that what the requests of this pass of the event loop queue
 * goes out in one write.  Before the connect completes, the write handler
 * sends once it does.
 */
static void
ngx_http_rate_limit_redis_want_write(void *data, unsigned n)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_http_rate_limit_redis_link_t  *link;

    link = &rd->links[n];

    if (link->connected) {
        ngx_post_event(link->connection->write, &ngx_posted_events);
    }
}


static void
ngx_http_rate_limit_redis_close(void *data, unsigned n)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_http_rate_limit_redis_link_t  *link;

    link = &rd->links[n];

    if (link->connection) {
        ngx_close_connection(link->connection);
        link->connection = NULL;
        link->connected = 0;
    }
}


static void
ngx_http_rate_limit_redis_set_timer(void *data, uint64_t delay_ms, int hold)
{
    ngx_http_rate_limit_redis_t *rd = data;

    /* ngx_add_timer() alone would keep a timer set less than 300 ms away */
    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    /* a request waiting on the client holds up a graceful shutdown */
    rd->timer.cancelable = !hold;

    ngx_add_timer(&rd->timer,
                  (ngx_msec_t) ngx_min(delay_ms,
                                       NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX));
}


static void
ngx_http_rate_limit_redis_post(void *data)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_post_event(&rd->posted, &ngx_posted_events);
}


static void
ngx_http_rate_limit_redis_log(void *data, int level, const char *msg)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_log_error((ngx_uint_t) level, rd->log, 0, "%s", msg);
}


/* nginx's cached time has milliseconds; round trips want microseconds */
static uint64_t
ngx_http_rate_limit_redis_now_us(void *data)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


/* the slab pool's mutex: the master frees it when a worker dies holding it */
static void
ngx_http_rate_limit_redis_lock(void *data)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_shmtx_lock(&rd->shpool->mutex);
}


static void
ngx_http_rate_limit_redis_unlock(void *data)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_shmtx_unlock(&rd->shpool->mutex);
}


/*
 * The core may close a link, and open it again, from inside any of its
 * calls; the new connection may even take the freed ngx_connection_t.  A
 * handler touches c again only while it is still the link's, the same one.
 */
static ngx_inline ngx_uint_t
ngx_http_rate_limit_redis_still(ngx_http_rate_limit_redis_link_t *link,
    ngx_connection_t *c, ngx_atomic_uint_t number)
{
    return link->connection == c && c->number == number;
}


/*
 * NGX_OK when the handler of an event of c may go on: the connect is done,
 * and c is still the link's.  A failed connect is read as well as written.
 */
static ngx_int_t
ngx_http_rate_limit_redis_ready(ngx_http_rate_limit_redis_link_t *link,
    ngx_connection_t *c, ngx_atomic_uint_t number)
{
    if (link->connected) {
        return NGX_OK;
    }

    if (ngx_http_rate_limit_redis_connected(c) != NGX_OK
        || !ngx_http_rate_limit_redis_still(link, c, number))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_read_handler(ngx_event_t *rev)
{
    ssize_t                            n;
    unsigned                           index;
    ngx_atomic_uint_t                  number;
    ngx_connection_t                  *c;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    c = rev->data;
    link = c->data;
    number = c->number;
    index = (unsigned) (link - rd->links);

    if (ngx_http_rate_limit_redis_ready(link, c, number) != NGX_OK) {
        return;
    }

    for ( ;; ) {
        n = c->recv(c, rd->buffer, NGX_HTTP_RATE_LIMIT_REDIS_READ);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_http_rate_limit_redis_closed(c, "Server closed the connection");
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_rate_limit_redis_failed(c, ngx_socket_errno);
            return;
        }

        rl_redis_on_data(rd->client, index, (const char *) rd->buffer,
                         (size_t) n);

        if (!ngx_http_rate_limit_redis_still(link, c, number)) {
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_rate_limit_redis_failed(c, ngx_socket_errno);
    }
}


static void
ngx_http_rate_limit_redis_write_handler(ngx_event_t *wev)
{
    size_t                             len;
    ssize_t                            n;
    unsigned                           index;
    ngx_atomic_uint_t                  number;
    const char                        *data;
    ngx_connection_t                  *c;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    c = wev->data;
    link = c->data;
    number = c->number;
    index = (unsigned) (link - rd->links);

    if (ngx_http_rate_limit_redis_ready(link, c, number) != NGX_OK) {
        return;
    }

    for ( ;; ) {
        rl_redis_output(rd->client, index, &data, &len);

        if (len == 0) {
            break;
        }

        n = c->send(c, (u_char *) data, len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ngx_http_rate_limit_redis_failed(c, ngx_socket_errno);
            return;
        }

        rl_redis_output_sent(rd->client, index, (size_t) n);

        /* a part went out: the socket's buffer is full */
        if (!wev->ready) {
            break;
        }
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_rate_limit_redis_failed(c, ngx_socket_errno);
    }
}


/*
 * The connect's outcome, as ngx_http_upstream_test_connect() reads it.
 * NGX_OK once the core has heard that the link is up (and may have closed
 * it again); NGX_ERROR when it failed, closed and told.
 */
static ngx_int_t
ngx_http_rate_limit_redis_connected(ngx_connection_t *c)
{
    int                                err;
    socklen_t                          len;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_http_rate_limit_redis_failed(c, err);
        return NGX_ERROR;
    }

    link->connected = 1;

    rl_redis_on_connected(rd->client, (unsigned) (link - rd->links));

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_failed(ngx_connection_t *c, ngx_err_t err)
{
    char  reason[RL_REDIS_ERR_LEN];

    ngx_http_rate_limit_redis_strerror(err, reason);
    ngx_http_rate_limit_redis_closed(c, reason);
}


/* closes the connection, then tells the core why */
static void
ngx_http_rate_limit_redis_closed(ngx_connection_t *c, const char *reason)
{
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;

    ngx_close_connection(c);
    link->connection = NULL;
    link->connected = 0;

    rl_redis_on_closed(rd->client, (unsigned) (link - rd->links), reason);
}


/* as strerror(), into the core's buffer of RL_REDIS_ERR_LEN bytes */
static void
ngx_http_rate_limit_redis_strerror(ngx_err_t err, char *buf)
{
    *ngx_strerror(err, (u_char *) buf, RL_REDIS_ERR_LEN - 1) = '\0';
}


static void
ngx_http_rate_limit_redis_timer_handler(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_t *rd = ev->data;

    rl_redis_on_timer(rd->client);
}


static void
ngx_http_rate_limit_redis_posted_handler(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_t *rd = ev->data;

    rl_redis_on_posted(rd->client);
}
