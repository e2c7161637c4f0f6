
/*
 * The host of the core's PostgreSQL objects (rl_pg.h) on nginx's event
 * loop: the sync and the bucket API's queue each have one.  libpq owns the
 * socket: nginx only watches it, level-triggered, and never closes it.
 */


#include "ngx_http_rate_limit_module.h"


static int ngx_http_rate_limit_pg_watch(void *data, int fd, int write);
static void ngx_http_rate_limit_pg_unwatch(void *data);
static void ngx_http_rate_limit_pg_set_timer(void *data, uint64_t delay_ms);
static void ngx_http_rate_limit_pg_stop_timer(void *data);
static void ngx_http_rate_limit_pg_post(void *data);
static void ngx_http_rate_limit_pg_log(void *data, int level,
    const char *msg);
static uint64_t ngx_http_rate_limit_pg_now_ms(void *data);
static void ngx_http_rate_limit_pg_lock(void *data);
static void ngx_http_rate_limit_pg_unlock(void *data);
static void ngx_http_rate_limit_pg_io_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_pg_timer_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_pg_posted_handler(ngx_event_t *ev);


/* shpool: the lease's lock, NULL for the bucket API */
void
ngx_http_rate_limit_pg_host_init(ngx_http_rate_limit_pg_host_t *host,
    ngx_log_t *log, ngx_slab_pool_t *shpool)
{
    rl_pg_adapter_t  *a = &host->adapter;

    host->log = log;
    host->shpool = shpool;

    ngx_http_rate_limit_timer_init(&host->timer,
                                   ngx_http_rate_limit_pg_timer_handler,
                                   host, log);
    ngx_http_rate_limit_timer_init(&host->posted,
                                   ngx_http_rate_limit_pg_posted_handler,
                                   host, log);

    a->data = host;
    a->watch = ngx_http_rate_limit_pg_watch;
    a->unwatch = ngx_http_rate_limit_pg_unwatch;
    a->set_timer = ngx_http_rate_limit_pg_set_timer;
    a->stop_timer = ngx_http_rate_limit_pg_stop_timer;
    a->post = ngx_http_rate_limit_pg_post;
    a->log = ngx_http_rate_limit_pg_log;
    a->now_ms = ngx_http_rate_limit_pg_now_ms;
    a->lock = ngx_http_rate_limit_pg_lock;
    a->unlock = ngx_http_rate_limit_pg_unlock;
}


/* once the core object is gone: nginx counts a socket watched as a leak */
void
ngx_http_rate_limit_pg_host_close(ngx_http_rate_limit_pg_host_t *host)
{
    ngx_http_rate_limit_pg_unwatch(host);
    ngx_http_rate_limit_pg_stop_timer(host);

    if (host->posted.posted) {
        ngx_delete_posted_event(&host->posted);
    }
}


static int
ngx_http_rate_limit_pg_watch(void *data, int fd, int write)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    ngx_connection_t  *c;

    c = host->connection;

    if (c && c->fd != fd) {
        ngx_http_rate_limit_pg_unwatch(host);
        c = NULL;
    }

    if (c == NULL) {
        c = ngx_get_connection(fd, host->log);
        if (c == NULL) {
            return RL_PG_ERROR;
        }

        c->data = host;
        c->read->handler = ngx_http_rate_limit_pg_io_handler;
        c->write->handler = ngx_http_rate_limit_pg_io_handler;
        c->read->log = host->log;
        c->write->log = host->log;

        host->connection = c;

        if (ngx_add_event(c->read, NGX_READ_EVENT, 0) != NGX_OK) {
            return RL_PG_ERROR;
        }
    }

    if (write && !c->write->active) {
        return ngx_add_event(c->write, NGX_WRITE_EVENT, 0) == NGX_OK
               ? RL_PG_OK : RL_PG_ERROR;
    }

    if (!write && c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    return RL_PG_OK;
}


static void
ngx_http_rate_limit_pg_unwatch(void *data)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    if (host->connection) {
        ngx_http_rate_limit_release_connection(host->connection);
        host->connection = NULL;
    }
}


static void
ngx_http_rate_limit_pg_set_timer(void *data, uint64_t delay_ms)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    ngx_add_timer(&host->timer, (ngx_msec_t) delay_ms);
}


static void
ngx_http_rate_limit_pg_stop_timer(void *data)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    if (host->timer.timer_set) {
        ngx_del_timer(&host->timer);
    }
}


static void
ngx_http_rate_limit_pg_post(void *data)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    if (!host->posted.posted) {
        ngx_post_event(&host->posted, &ngx_posted_events);
    }
}


static void
ngx_http_rate_limit_pg_log(void *data, int level, const char *msg)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    ngx_log_error((ngx_uint_t) level, host->log, 0, "%s", msg);
}


static uint64_t
ngx_http_rate_limit_pg_now_ms(void *data)
{
    return ngx_current_msec;
}


static void
ngx_http_rate_limit_pg_lock(void *data)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    ngx_shmtx_lock(&host->shpool->mutex);
}


static void
ngx_http_rate_limit_pg_unlock(void *data)
{
    ngx_http_rate_limit_pg_host_t *host = data;

    ngx_shmtx_unlock(&host->shpool->mutex);
}


static void
ngx_http_rate_limit_pg_io_handler(ngx_event_t *ev)
{
    ngx_connection_t               *c = ev->data;
    ngx_http_rate_limit_pg_host_t  *host = c->data;

    if (host->sync) {
        rl_pg_sync_on_io(host->sync, !ev->write, ev->write);

    } else {
        rl_pg_api_on_io(host->api, !ev->write, ev->write);
    }
}


static void
ngx_http_rate_limit_pg_timer_handler(ngx_event_t *ev)
{
    ngx_http_rate_limit_pg_host_t  *host = ev->data;

    if (host->api) {
        rl_pg_api_on_timer(host->api);

    } else if (ngx_exiting) {
        rl_pg_sync_release(host->sync);

    } else {
        rl_pg_sync_on_timer(host->sync);
    }
}


static void
ngx_http_rate_limit_pg_posted_handler(ngx_event_t *ev)
{
    ngx_http_rate_limit_pg_host_t  *host = ev->data;

    rl_pg_api_on_posted(host->api);
}
