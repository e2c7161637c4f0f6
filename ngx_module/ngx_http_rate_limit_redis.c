
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
/* a TLS connection's pool holds its ngx_ssl_connection_t alone */
#define NGX_HTTP_RATE_LIMIT_REDIS_TLS_POOL  512


/* a link of the core's client: at most one connection at a time */
typedef struct {
    ngx_connection_t                  *connection;
    /* what TLS checks the certificate against, and sends as SNI */
    ngx_str_t                          name;
    /* a query of its name, its answer posted, the name it writes to */
    ngx_resolver_ctx_t                *resolving;
    ngx_event_t                        resolved;
    u_char                             host[NGX_MAXHOSTNAMELEN];
    /* the answer, copied: nginx frees a list of several in the handler */
    ngx_sockaddr_t                     answer[RL_REDIS_RESOLVED];
    socklen_t                          answer_lens[RL_REDIS_RESOLVED];
    ngx_uint_t                         nanswer;
    ngx_int_t                          answer_state;
    time_t                             answer_valid;
    unsigned                           connected:1;
    unsigned                           name_is_address:1;
} ngx_http_rate_limit_redis_link_t;


typedef struct {
    rl_redis_client_t                 *client;
    ngx_log_t                         *log;
    ngx_log_t                          connection_log;
    ngx_slab_pool_t                   *shpool;
    ngx_ssl_t                         *ssl;        /* NULL: plain TCP */
    ngx_resolver_t                    *resolver;
    ngx_msec_t                         resolver_timeout;
    ngx_str_t                          server_name;
    ngx_flag_t                         verify;
    /* the last message nginx logged about a connection, its reason */
    u_char                             last_error[RL_REDIS_ERR_LEN];
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
static int ngx_http_rate_limit_redis_resolve(void *data, unsigned link,
    const char *name, char *err);
static void ngx_http_rate_limit_redis_resolve_handler(ngx_resolver_ctx_t *ctx);
static void ngx_http_rate_limit_redis_resolved(ngx_event_t *ev);
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
static void ngx_http_rate_limit_redis_close_connection(ngx_connection_t *c);
static ngx_int_t ngx_http_rate_limit_redis_tls_start(ngx_connection_t *c);
static void ngx_http_rate_limit_redis_tls_done(ngx_connection_t *c);
static ngx_int_t ngx_http_rate_limit_redis_tls_check(ngx_connection_t *c,
    char *reason);
static void ngx_http_rate_limit_redis_log_writer(ngx_log_t *log,
    ngx_uint_t level, u_char *buf, size_t len);
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
    ngx_http_rate_limit_redis_unlock,
    ngx_http_rate_limit_redis_resolve
};


ngx_int_t
ngx_http_rate_limit_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    char                          err[RL_REDIS_ERR_LEN];
    ngx_uint_t                    i;
    rl_conf_redis_tls_t           tls;
    rl_conf_process_t             process;
    rl_redis_config_t             config;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    ngx_memzero(rd, sizeof(ngx_http_rate_limit_redis_t));

    rd->log = cycle->log;

    /*
     * The core logs a failed or lost link, with its reason.  nginx's own
     * line about it, an [error] or a [crit] at each reconnection, would
     * only repeat it: the connections' log keeps the last line, the reason
     * given to the core (the SSL library's, which nginx takes from its
     * error queue), and writes alerts alone.
     */
    rd->connection_log = *cycle->log;
    rd->connection_log.log_level = NGX_LOG_INFO;
    rd->connection_log.writer = ngx_http_rate_limit_redis_log_writer;
    rd->connection_log.wdata = rd;
    rd->connection_log.next = NULL;

    rd->ssl = rmcf->redis_ssl;
    rd->resolver = rmcf->resolver;
    rd->resolver_timeout = rmcf->resolver_timeout;

    for (i = 0; i < RL_REDIS_ADDRESSES; i++) {
        ngx_http_rate_limit_timer_init(&rd->links[i].resolved,
                                       ngx_http_rate_limit_redis_resolved,
                                       &rd->links[i], cycle->log);
    }

    (void) rl_conf_redis_tls(rmcf->conf, &tls);

    if (tls.server_name) {
        rd->server_name.data = (u_char *) tls.server_name;
        rd->server_name.len = ngx_strlen(tls.server_name);
    }

    rd->verify = tls.verify;

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
    ngx_uint_t                         i;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    /* it closes every connection, through ngx_http_rate_limit_redis_close() */
    rl_redis_destroy(rd->client);
    rd->client = NULL;

    for (i = 0; i < RL_REDIS_ADDRESSES; i++) {
        link = &rd->links[i];

        if (link->resolved.posted) {
            ngx_delete_posted_event(&link->resolved);
        }

        if (link->resolving) {
            ngx_resolve_name_done(link->resolving);
            link->resolving = NULL;
        }
    }

    if (rd->timer.timer_set) {
        ngx_del_timer(&rd->timer);
    }

    if (rd->posted.posted) {
        ngx_delete_posted_event(&rd->posted);
    }
}


/* with tls=on, the SSL context is made now, as proxy_ssl_* make theirs:
 * a file that cannot be loaded fails the configuration */
char *
ngx_http_rate_limit_redis_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    char                 *rv;
    ngx_str_t             cert, key;
    rl_conf_result_t      result;
    ngx_pool_cleanup_t   *cln;
    rl_conf_redis_tls_t   tls;

    rv = ngx_http_rate_limit_conf_read(cf, &result);

    if (rv != NGX_CONF_OK || rl_conf_redis_tls(rmcf->conf, &tls) != RL_CONF_OK
        || !tls.enabled)
    {
        return rv;
    }

    rmcf->redis_ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (rmcf->redis_ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    rmcf->redis_ssl->log = cf->log;

    if (ngx_ssl_create(rmcf->redis_ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(rmcf->redis_ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = rmcf->redis_ssl;

    /* the core's output may grow, and so move, between a write that the
     * socket took in part and the next one, from the same byte on */
    SSL_CTX_set_mode(rmcf->redis_ssl->ctx,
                     SSL_MODE_ENABLE_PARTIAL_WRITE
                     |SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if (tls.certificate) {
        cert.data = (u_char *) tls.certificate;
        cert.len = ngx_strlen(tls.certificate);
        key.data = (u_char *) tls.certificate_key;
        key.len = ngx_strlen(tls.certificate_key);

        if (ngx_ssl_certificate(cf, rmcf->redis_ssl, &cert, &key, NULL)
            != NGX_OK)
        {
            /* the key is not shown: it may be given inline, "data:..." */
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \""
                               "tls_certificate=%V\" or its "
                               "\"tls_certificate_key=\" in \"%V\" "
                               "directive: cannot be loaded, see the line "
                               "above", &cert, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    if (tls.verify) {
        cert.data = (u_char *) tls.trusted_certificate;
        cert.len = ngx_strlen(tls.trusted_certificate);

        if (ngx_ssl_trusted_certificate(cf, rmcf->redis_ssl, &cert, 9)
            != NGX_OK)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid \""
                               "tls_trusted_certificate=%V\" in \"%V\" "
                               "directive: cannot be loaded, see the line "
                               "above", &cert, &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
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

    if (rd->server_name.len) {
        link->name = rd->server_name;

    } else if (endpoint->name) {
        link->name.data = (u_char *) endpoint->name;
        link->name.len = ngx_strlen(endpoint->name);
    }

    link->name_is_address =
        ngx_inet_addr(link->name.data, link->name.len) != INADDR_NONE
        || ngx_strlchr(link->name.data, link->name.data + link->name.len, ':');

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
        ngx_http_rate_limit_redis_close_connection(link->connection);
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


/* nginx's resolver may answer from its cache inside ngx_resolve_name():
 * the core hears of it in a later event, as its contract says */
static int
ngx_http_rate_limit_redis_resolve(void *data, unsigned n, const char *name,
    char *err)
{
    ngx_http_rate_limit_redis_t *rd = data;

    ngx_resolver_ctx_t                *ctx;
    ngx_http_rate_limit_redis_link_t  *link;

    link = &rd->links[n];

    ctx = rd->resolver ? ngx_resolve_start(rd->resolver, NULL) : NULL;

    if (ctx == NULL || ctx == NGX_NO_RESOLVER) {
        goto failed;
    }

    ctx->name.data = link->host;
    ctx->name.len = ngx_cpystrn(link->host, (u_char *) name,
                                NGX_MAXHOSTNAMELEN)
                    - link->host;
    ctx->handler = ngx_http_rate_limit_redis_resolve_handler;
    ctx->data = link;
    ctx->timeout = rd->resolver_timeout;
    ctx->cancelable = 1;

    link->resolving = ctx;

    /* on failure, it has freed ctx */
    if (ngx_resolve_name(ctx) == NGX_OK) {
        return RL_REDIS_OK;
    }

    link->resolving = NULL;

failed:

    ngx_cpystrn((u_char *) err, (u_char *) "cannot start a query",
                RL_REDIS_ERR_LEN);
    return RL_REDIS_ERROR;
}


static void
ngx_http_rate_limit_redis_resolve_handler(ngx_resolver_ctx_t *ctx)
{
    ngx_http_rate_limit_redis_link_t *link = ctx->data;

    ngx_uint_t  n;

    for (n = 0; ctx->state == NGX_OK && n < ctx->naddrs
                && n < RL_REDIS_RESOLVED; n++)
    {
        ngx_memcpy(&link->answer[n], ctx->addrs[n].sockaddr,
                   ctx->addrs[n].socklen);
        link->answer_lens[n] = ctx->addrs[n].socklen;
    }

    link->nanswer = n;
    link->answer_state = ctx->state;
    link->answer_valid = ctx->valid;
    link->resolving = NULL;

    ngx_resolve_name_done(ctx);
    ngx_post_event(&link->resolved, &ngx_posted_events);
}


/* ctx->valid is the last second of nginx's cache of the answer, on the
 * wall clock: the core is told how long until the cache lets it go */
static void
ngx_http_rate_limit_redis_resolved(ngx_event_t *ev)
{
    ngx_http_rate_limit_redis_link_t *link = ev->data;

    ngx_uint_t                    n;
    int64_t                       valid_ms;
    ngx_time_t                   *tp;
    const struct sockaddr        *addrs[RL_REDIS_RESOLVED];
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    for (n = 0; n < link->nanswer; n++) {
        addrs[n] = &link->answer[n].sockaddr;
    }

    tp = ngx_timeofday();
    valid_ms = ((int64_t) link->answer_valid + 1 - tp->sec) * 1000
               - (int64_t) tp->msec;

    rl_redis_on_resolved(rd->client, (unsigned) (link - rd->links), addrs,
                         link->answer_lens, link->nanswer,
                         valid_ms > 0 ? (uint64_t) valid_ms : 0,
                         link->answer_state == NGX_OK
                         ? NULL : ngx_resolver_strerror(link->answer_state));
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
        rd->last_error[0] = '\0';

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

        rd->last_error[0] = '\0';

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

    if (rd->ssl) {
        return ngx_http_rate_limit_redis_tls_start(c);
    }

    link->connected = 1;

    rl_redis_on_connected(rd->client, (unsigned) (link - rd->links));

    return NGX_OK;
}


/* the handshake, as the proxy module's: NGX_OK once done and told,
 * NGX_AGAIN while it goes on, NGX_ERROR when it failed, closed and told */
static ngx_int_t
ngx_http_rate_limit_redis_tls_start(ngx_connection_t *c)
{
    ngx_int_t                          rc;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;
    rd->last_error[0] = '\0';

    /* the SSL state's memory, freed with the connection */
    c->pool = ngx_create_pool(NGX_HTTP_RATE_LIMIT_REDIS_TLS_POOL, c->log);

    if (c->pool == NULL
        || ngx_ssl_create_connection(rd->ssl, c, NGX_SSL_CLIENT) != NGX_OK)
    {
        ngx_http_rate_limit_redis_closed(c, "TLS: cannot create the "
                                         "connection's SSL state");
        return NGX_ERROR;
    }

    /* RFC 6066: no SNI for an address */
    if (link->name.len && !link->name_is_address
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) link->name.data)
           == 0)
    {
        ngx_http_rate_limit_redis_closed(c, "TLS: cannot set the SNI");
        return NGX_ERROR;
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_http_rate_limit_redis_tls_done;
        return NGX_AGAIN;
    }

    ngx_http_rate_limit_redis_tls_done(c);

    return link->connection == c && link->connected ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_rate_limit_redis_tls_done(ngx_connection_t *c)
{
    char                               reason[RL_REDIS_ERR_LEN];
    u_char                            *why;
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;

    if (!c->ssl->handshaked) {
        /* "SSL_do_handshake() failed (SSL: ...)": the SSL library's part */
        why = (u_char *) ngx_strstr(rd->last_error, "(SSL: ");

        *ngx_snprintf((u_char *) reason, RL_REDIS_ERR_LEN - 1,
                      "TLS handshake failed: %s",
                      why ? why : rd->last_error[0] ? rd->last_error
                                : (u_char *) "the server closed the connection")
            = '\0';
        ngx_http_rate_limit_redis_closed(c, reason);
        return;
    }

    if (rd->verify
        && ngx_http_rate_limit_redis_tls_check(c, reason) != NGX_OK)
    {
        ngx_http_rate_limit_redis_closed(c, reason);
        return;
    }

    c->read->handler = ngx_http_rate_limit_redis_read_handler;
    c->write->handler = ngx_http_rate_limit_redis_write_handler;

    link->connected = 1;

    rl_redis_on_connected(rd->client, (unsigned) (link - rd->links));

    /* what was queued goes out: the handshake's last event may have been
     * a write one, and another may never come */
    if (link->connection == c) {
        ngx_post_event(c->write, &ngx_posted_events);
    }
}


/* the chain to the trusted CA, and the name, as proxy_ssl_verify checks */
static ngx_int_t
ngx_http_rate_limit_redis_tls_check(ngx_connection_t *c, char *reason)
{
    long                               rc;
    X509                              *cert;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;

    rc = SSL_get_verify_result(c->ssl->connection);

    if (rc != X509_V_OK) {
        *ngx_snprintf((u_char *) reason, RL_REDIS_ERR_LEN - 1,
                      "TLS certificate verify error: (%l:%s)", rc,
                      X509_verify_cert_error_string(rc))
            = '\0';
        return NGX_ERROR;
    }

    /* X509_check_host() matches names only: an address has its own check */
    if (link->name_is_address) {
        cert = SSL_get_peer_certificate(c->ssl->connection);
        rc = cert && X509_check_ip_asc(cert, (char *) link->name.data, 0) == 1;
        X509_free(cert);

    } else {
        rc = ngx_ssl_check_host(c, &link->name) == NGX_OK;
    }

    if (!rc) {
        *ngx_snprintf((u_char *) reason, RL_REDIS_ERR_LEN - 1,
                      "TLS certificate does not match \"%V\"", &link->name)
            = '\0';
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* an SSL failure has nginx's line about it; a socket's, its errno */
static void
ngx_http_rate_limit_redis_failed(ngx_connection_t *c, ngx_err_t err)
{
    char                          reason[RL_REDIS_ERR_LEN];
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (c->ssl && rd->last_error[0]) {
        ngx_cpystrn((u_char *) reason, rd->last_error, RL_REDIS_ERR_LEN);

    } else {
        ngx_http_rate_limit_redis_strerror(err, reason);
    }

    ngx_http_rate_limit_redis_closed(c, reason);
}


/* closes the connection, then tells the core why */
static void
ngx_http_rate_limit_redis_closed(ngx_connection_t *c, const char *reason)
{
    ngx_http_rate_limit_redis_t       *rd = &ngx_http_rate_limit_redis_worker;
    ngx_http_rate_limit_redis_link_t  *link;

    link = c->data;

    ngx_http_rate_limit_redis_close_connection(c);
    link->connection = NULL;
    link->connected = 0;

    rl_redis_on_closed(rd->client, (unsigned) (link - rd->links), reason);
}


/* with no TLS close_notify: the link is over, whatever the server says */
static void
ngx_http_rate_limit_redis_close_connection(ngx_connection_t *c)
{
    ngx_pool_t  *pool;

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }

    pool = c->pool;

    ngx_close_connection(c);

    if (pool) {
        ngx_destroy_pool(pool);
    }
}


/* as strerror(), into the core's buffer of RL_REDIS_ERR_LEN bytes */
static void
ngx_http_rate_limit_redis_strerror(ngx_err_t err, char *buf)
{
    *ngx_strerror(err, (u_char *) buf, RL_REDIS_ERR_LEN - 1) = '\0';
}


/*
 * The connections' log: buf is a whole line, "TIME [LEVEL] PID#TID: MSG";
 * the message is kept, and an alert goes on to the error log.
 */
static void
ngx_http_rate_limit_redis_log_writer(ngx_log_t *log, ngx_uint_t level,
    u_char *buf, size_t len)
{
    ngx_http_rate_limit_redis_t *rd = log->wdata;

    u_char  *msg, *last;

    /* a debug line about the connection is no reason for its failure */
    if (level == NGX_LOG_DEBUG) {
        return;
    }

    last = buf + len;
    msg = ngx_strlchr(buf, last, ']');
    msg = msg ? ngx_strlchr(msg, last, ':') : NULL;
    msg = msg && msg + 2 <= last ? msg + 2 : buf;

    while (last > msg && (last[-1] == LF || last[-1] == CR)) {
        last--;
    }

    len = ngx_min((size_t) (last - msg), RL_REDIS_ERR_LEN - 1);
    ngx_memcpy(rd->last_error, msg, len);
    rd->last_error[len] = '\0';

    if (level <= NGX_LOG_ALERT) {
        ngx_log_error(level, rd->log, 0, "%*s", (size_t) (last - msg), msg);
    }
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
