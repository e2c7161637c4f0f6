
/*
 * One asynchronous PostgreSQL connection on nginx's event loop, shared by
 * the sync of per-client limits and the bucket API.  libpq owns the socket:
 * nginx only watches it, level-triggered, and never closes it.
 */


#include "ngx_http_rate_limit_module.h"


/* a connect or a query that hears nothing for this long has a dead peer */
#define NGX_HTTP_RATE_LIMIT_PG_STALL  15000


static ngx_int_t ngx_http_rate_limit_pg_watch(
    ngx_http_rate_limit_pg_conn_t *pc, int fd);
static void ngx_http_rate_limit_pg_unwatch(ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_pg_event_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_pg_poll_connect(
    ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_pg_read(ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_pg_stall_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_pg_fail(ngx_http_rate_limit_pg_conn_t *pc,
    const char *what);
static void ngx_http_rate_limit_pg_notice(void *arg, const char *message);
static ngx_int_t ngx_http_rate_limit_pg_xid(u_char *p, u_char *last,
    uint64_t *xid);


ngx_int_t
ngx_http_rate_limit_pg_connect(ngx_http_rate_limit_pg_conn_t *pc)
{
    if (pc->conn) {
        return NGX_OK;
    }

    ngx_http_rate_limit_timer_init(&pc->stall,
                                   ngx_http_rate_limit_pg_stall_handler, pc,
                                   pc->log);

    pc->conn = PQconnectStart(pc->conninfo);

    if (pc->conn == NULL) {
        ngx_http_rate_limit_pg_fail(pc, "out of memory");
        return NGX_ERROR;
    }

    if (PQstatus(pc->conn) == CONNECTION_BAD
        || ngx_http_rate_limit_pg_watch(pc, PQsocket(pc->conn)) != NGX_OK)
    {
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return NGX_ERROR;
    }

    /* libpq would print notices on stderr, that is into the error log */
    PQsetNoticeProcessor(pc->conn, ngx_http_rate_limit_pg_notice, pc);

    pc->connecting = 1;
    pc->busy = 1;

    ngx_add_timer(&pc->stall, NGX_HTTP_RATE_LIMIT_PG_STALL);

    /* libpq waits for writability first */
    if (ngx_add_event(pc->connection->write, NGX_WRITE_EVENT, 0) != NGX_OK) {
        ngx_http_rate_limit_pg_fail(pc, "cannot watch the socket");
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_rate_limit_pg_close(ngx_http_rate_limit_pg_conn_t *pc)
{
    if (pc->stall.timer_set) {
        ngx_del_timer(&pc->stall);
    }

    ngx_http_rate_limit_pg_unwatch(pc);

    if (pc->conn) {
        PQfinish(pc->conn);
        pc->conn = NULL;
    }

    pc->connecting = 0;
    pc->busy = 0;
}


/* single_row: a million rows arrive as they come, not as one result */
ngx_int_t
ngx_http_rate_limit_pg_send(ngx_http_rate_limit_pg_conn_t *pc,
    const char *sql, int nparams, const char *const *params,
    ngx_uint_t single_row)
{
    int  rc;

    if (pc->conn == NULL || pc->busy) {
        return NGX_DECLINED;
    }

    if (nparams) {
        rc = PQsendQueryParams(pc->conn, sql, nparams, NULL, params, NULL,
                               NULL, 0);

    } else {
        rc = PQsendQuery(pc->conn, sql);
    }

    if (rc != 1) {
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return NGX_ERROR;
    }

    if (single_row) {
        PQsetSingleRowMode(pc->conn);
    }

    pc->busy = 1;

    ngx_add_timer(&pc->stall, NGX_HTTP_RATE_LIMIT_PG_STALL);

    switch (PQflush(pc->conn)) {

    case 0:
        return NGX_OK;

    case 1:
        if (!pc->connection->write->active
            && ngx_add_event(pc->connection->write, NGX_WRITE_EVENT, 0)
               != NGX_OK)
        {
            ngx_http_rate_limit_pg_fail(pc, "cannot watch the socket");
            return NGX_ERROR;
        }

        return NGX_OK;

    default:
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return NGX_ERROR;
    }
}


static ngx_int_t
ngx_http_rate_limit_pg_watch(ngx_http_rate_limit_pg_conn_t *pc, int fd)
{
    ngx_connection_t  *c;

    if (pc->connection && pc->connection->fd == fd) {
        return NGX_OK;
    }

    ngx_http_rate_limit_pg_unwatch(pc);

    if (fd < 0) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, pc->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->read->handler = ngx_http_rate_limit_pg_event_handler;
    c->write->handler = ngx_http_rate_limit_pg_event_handler;
    c->read->log = pc->log;
    c->write->log = pc->log;

    pc->connection = c;

    return ngx_add_event(c->read, NGX_READ_EVENT, 0);
}


static void
ngx_http_rate_limit_pg_unwatch(ngx_http_rate_limit_pg_conn_t *pc)
{
    ngx_connection_t  *c;

    c = pc->connection;

    if (c == NULL) {
        return;
    }

    ngx_http_rate_limit_release_connection(c);

    pc->connection = NULL;
}


static void
ngx_http_rate_limit_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t               *c = ev->data;
    ngx_http_rate_limit_pg_conn_t  *pc = c->data;

    if (pc->connecting) {
        ngx_http_rate_limit_pg_poll_connect(pc);
        return;
    }

    if (ev->write) {
        switch (PQflush(pc->conn)) {

        case 0:
            ngx_del_event(ev, NGX_WRITE_EVENT, 0);
            break;

        case 1:
            break;

        default:
            ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        }

        return;
    }

    ngx_http_rate_limit_pg_read(pc);
}


static void
ngx_http_rate_limit_pg_poll_connect(ngx_http_rate_limit_pg_conn_t *pc)
{
    ngx_connection_t           *c;
    PostgresPollingStatusType   status;

    status = PQconnectPoll(pc->conn);

    /* libpq may have moved to another socket, trying the next address */
    if (ngx_http_rate_limit_pg_watch(pc, PQsocket(pc->conn)) != NGX_OK) {
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return;
    }

    c = pc->connection;

    switch (status) {

    case PGRES_POLLING_WRITING:
        if (!c->write->active) {
            (void) ngx_add_event(c->write, NGX_WRITE_EVENT, 0);
        }
        return;

    case PGRES_POLLING_READING:
        if (c->write->active) {
            (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
        }
        return;

    case PGRES_POLLING_OK:
        break;

    default:
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return;
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, 0);
    }

    if (PQsetnonblocking(pc->conn, 1) != 0) {
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return;
    }

    pc->connecting = 0;
    pc->busy = 0;

    if (pc->stall.timer_set) {
        ngx_del_timer(&pc->stall);
    }

    pc->ready(pc);
}


static void
ngx_http_rate_limit_pg_read(ngx_http_rate_limit_pg_conn_t *pc)
{
    PGresult  *res;
    PGnotify  *notify;
    ngx_uint_t notified;

    if (PQconsumeInput(pc->conn) != 1) {
        ngx_http_rate_limit_pg_fail(pc, PQerrorMessage(pc->conn));
        return;
    }

    if (pc->busy) {
        ngx_add_timer(&pc->stall, NGX_HTTP_RATE_LIMIT_PG_STALL);
    }

    /* the handler may send the next query, which is read on in this loop */
    while (pc->conn && pc->busy && !PQisBusy(pc->conn)) {
        res = PQgetResult(pc->conn);

        if (res == NULL) {
            pc->busy = 0;

            if (pc->stall.timer_set) {
                ngx_del_timer(&pc->stall);
            }

            pc->result(pc, NULL);
            continue;
        }

        pc->result(pc, res);
        PQclear(res);
    }

    if (pc->conn == NULL) {
        return;
    }

    notified = 0;

    while ((notify = PQnotifies(pc->conn)) != NULL) {
        notified = 1;
        PQfreemem(notify);
    }

    if (notified && pc->notified) {
        pc->notified(pc);
    }
}


/*
 * Reads pg_snapshot's text, "xmin:xmax:xip,xip,...", into *snapshot, whose
 * xip array grows as needed and is kept for the next snapshot.
 */
ngx_int_t
ngx_http_rate_limit_pg_snapshot(ngx_http_rate_limit_pg_snapshot_t *snapshot,
    u_char *text, size_t len)
{
    u_char      *p, *last, *end;
    uint64_t     n, *xip;
    ngx_uint_t   field, count;

    last = text + len;
    count = 1;

    for (p = text; p < last; p++) {
        count += (*p == ',');
    }

    if (count > snapshot->room) {
        xip = ngx_alloc(count * sizeof(uint64_t), ngx_cycle->log);
        if (xip == NULL) {
            return NGX_ERROR;
        }

        if (snapshot->xip) {
            ngx_free(snapshot->xip);
        }

        snapshot->xip = xip;
        snapshot->room = count;
    }

    snapshot->view.xip = snapshot->xip;
    snapshot->view.nxip = 0;
    p = text;

    for (field = 0; field < 2; field++) {
        end = ngx_strlchr(p, last, ':');

        if (end == NULL || ngx_http_rate_limit_pg_xid(p, end, &n) != NGX_OK) {
            return NGX_ERROR;
        }

        if (field == 0) {
            snapshot->view.xmin = n;

        } else {
            snapshot->view.xmax = n;
        }

        p = end + 1;
    }

    /* a list of at most count ids: count is one more than the commas */
    while (p < last) {
        end = ngx_strlchr(p, last, ',');

        if (end == NULL) {
            end = last;
        }

        if (ngx_http_rate_limit_pg_xid(p, end, &n) != NGX_OK) {
            return NGX_ERROR;
        }

        snapshot->xip[snapshot->view.nxip++] = n;
        p = end + 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rate_limit_pg_xid(u_char *p, u_char *last, uint64_t *xid)
{
    uint64_t  n;

    if (p == last) {
        return NGX_ERROR;
    }

    for (n = 0; p < last; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10) {
            return NGX_ERROR;
        }

        n = n * 10 + (*p - '0');
    }

    *xid = n;

    return NGX_OK;
}


static void
ngx_http_rate_limit_pg_stall_handler(ngx_event_t *ev)
{
    ngx_http_rate_limit_pg_fail(ev->data, "no answer");
}


/* closes the connection, then tells the owner why */
static void
ngx_http_rate_limit_pg_fail(ngx_http_rate_limit_pg_conn_t *pc,
    const char *what)
{
    u_char  reason[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    size_t  len;

    /* libpq's messages go on over several lines: the first says it */
    for (len = 0;
         what[len] && what[len] != '\n' && len < sizeof(reason) - 1;
         len++)
    {
        reason[len] = what[len];
    }

    reason[len] = '\0';

    ngx_http_rate_limit_pg_close(pc);

    pc->failed(pc, (char *) reason);
}


static void
ngx_http_rate_limit_pg_notice(void *arg, const char *message)
{
    ngx_http_rate_limit_pg_conn_t  *pc = arg;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "rate_limit_postgres: %s", message);
}
