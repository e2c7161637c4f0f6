
/*
 * Per-client limits synced from PostgreSQL into the zones' shared memory.
 *
 * One worker per node syncs: it holds a lease in shared memory, renewed by
 * a timer, and worker 0 is preferred.  It reads every row once, then only
 * the rows changed since the last sync, every "interval" and at once on
 * NOTIFY.  While PostgreSQL cannot answer, the last synced limits keep
 * applying, and a reload keeps them without reading everything again.
 */


#include "ngx_http_rate_limit_module.h"


#define NGX_HTTP_RATE_LIMIT_SYNC_INTERVAL     10000
#define NGX_HTTP_RATE_LIMIT_SYNC_LEASE_TICK   1000
#define NGX_HTTP_RATE_LIMIT_SYNC_LEASE_STALE  3000
#define NGX_HTTP_RATE_LIMIT_SYNC_BACKOFF_MIN  100
#define NGX_HTTP_RATE_LIMIT_SYNC_BACKOFF_MAX  10000

#define NGX_HTTP_RATE_LIMIT_SYNC_CHANNEL      "rate_limit_buckets"
#define NGX_HTTP_RATE_LIMIT_SYNC_LISTEN_SQL   \
    "LISTEN " NGX_HTTP_RATE_LIMIT_SYNC_CHANNEL ";"


typedef enum {
    NGX_HTTP_RATE_LIMIT_SYNC_IDLE = 0,
    NGX_HTTP_RATE_LIMIT_SYNC_SETUP,
    NGX_HTTP_RATE_LIMIT_SYNC_LISTEN,
    NGX_HTTP_RATE_LIMIT_SYNC_READY,
    NGX_HTTP_RATE_LIMIT_SYNC_FULL,
    NGX_HTTP_RATE_LIMIT_SYNC_CHANGES
} ngx_http_rate_limit_sync_state_e;


typedef struct {
    ngx_http_rate_limit_pg_conn_t      pc;
    ngx_http_rate_limit_main_conf_t   *rmcf;
    ngx_http_rate_limit_pg_shctx_t    *sh;
    ngx_slab_pool_t                   *shpool;
    char                              *setup;     /* schema, then LISTEN */

    ngx_http_rate_limit_sync_state_e   state;
    ngx_event_t                        lease;
    ngx_event_t                        sync;
    ngx_event_t                        reconnect;
    ngx_msec_t                         backoff;

    ngx_uint_t                         generation;
    int64_t                            cursor;
    ngx_http_rate_limit_pg_snapshot_t  snapshot;    /* of the running query */

    ngx_uint_t                         rows;
    ngx_msec_t                         started;

    unsigned                           owner:1;
    unsigned                           lost:1;
    unsigned                           sync_again:1;
    unsigned                           truncated:1;
    unsigned                           snapshot_read:1;
    unsigned                           setup_failed:1;
} ngx_http_rate_limit_sync_t;


static ngx_int_t ngx_http_rate_limit_sync_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_rate_limit_sync_lease_handler(ngx_event_t *ev);
static void ngx_http_rate_limit_sync_release(void);
static void ngx_http_rate_limit_sync_connect(ngx_event_t *ev);
static void ngx_http_rate_limit_sync_ready(ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_sync_failed(ngx_http_rate_limit_pg_conn_t *pc,
    const char *reason);
static void ngx_http_rate_limit_sync_notified(
    ngx_http_rate_limit_pg_conn_t *pc);
static void ngx_http_rate_limit_sync_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_rate_limit_sync_need_full(void);
static void ngx_http_rate_limit_sync_result(ngx_http_rate_limit_pg_conn_t *pc,
    PGresult *res);
static void ngx_http_rate_limit_sync_row(PGresult *res);
static void ngx_http_rate_limit_sync_ignored(PGresult *res, ngx_uint_t level,
    const char *reason);
static u_char *ngx_http_rate_limit_sync_text(u_char *p, PGresult *res,
    int column, size_t shown);
static void ngx_http_rate_limit_sync_done(void);
static void ngx_http_rate_limit_sync_full(ngx_http_rate_limit_zone_t *zone,
    int rc, ngx_log_t *log);


static ngx_http_rate_limit_sync_t  ngx_http_rate_limit_sync;


/*
 * Each row is zone, key, rate, burst, snapshot, deleted.  The snapshot is
 * the query's, and its xmin the cursor: the oldest transaction still
 * running when the snapshot was taken.  The next sync reads every row
 * written by that transaction or a later one, so a transaction that
 * commits long after it wrote is not missed.  The snapshot also tells
 * whether the rows saw the bucket API's last write of a key.  A row with a
 * NULL zone only carries the snapshot, for a table with no rows.
 */
static const char  ngx_http_rate_limit_sync_full_sql[] =
    "SELECT b.zone, b.key, b.rate, b.burst, s.snapshot, false "
    "FROM (SELECT pg_current_snapshot()::text AS snapshot) s "
    "LEFT JOIN rate_limit_buckets b ON true";

/* in time order, so that a key deleted and created again ends up created */
static const char  ngx_http_rate_limit_sync_changes_sql[] =
    "WITH s AS (SELECT pg_current_snapshot()::text AS snapshot) "
    "SELECT zone, key, rate, burst, snapshot, deleted FROM ("
    "SELECT b.zone, b.key, b.rate, b.burst, s.snapshot, false AS deleted, "
    "b.updated_at AS at FROM s, rate_limit_buckets b "
    "WHERE b.txid >= $1::text::xid8 "
    "UNION ALL "
    "SELECT d.zone, d.key, NULL, NULL, s.snapshot, true, d.deleted_at "
    "FROM s, rate_limit_bucket_deletions d "
    "WHERE d.txid >= $1::text::xid8 "
    "UNION ALL "
    "SELECT NULL, NULL, NULL, NULL, s.snapshot, false, NULL FROM s"
    ") AS changes ORDER BY at NULLS FIRST";


char *
ngx_http_rate_limit_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rate_limit_main_conf_t *rmcf = conf;

    ngx_str_t   *value, name;
    ngx_uint_t   i;

    if (rmcf->pg_shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strncmp(value[1].data, "env:", 4) == 0) {
        rmcf->pg_conninfo_env.data = value[1].data + 4;
        rmcf->pg_conninfo_env.len = value[1].len - 4;

        if (rmcf->pg_conninfo_env.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid connection string \"%V\" in \"%V\" "
                               "directive: no variable name", &value[1],
                               &cmd->name);
            return NGX_CONF_ERROR;
        }

    } else {
        rmcf->pg_conninfo = value[1];
    }

    rmcf->pg_interval = NGX_HTTP_RATE_LIMIT_SYNC_INTERVAL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {

            if (ngx_http_rate_limit_conf_msec(cf, cmd, &value[i], 8,
                                              &rmcf->pg_interval)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_http_rate_limit_conf_unknown_secret(cf, cmd, &value[i],
                                                "; quote a connection string "
                                                "that holds spaces");
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&name, "ngx_http_rate_limit_postgres");

    rmcf->pg_shm_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                              &ngx_http_rate_limit_module);
    if (rmcf->pg_shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    rmcf->pg_shm_zone->init = ngx_http_rate_limit_sync_init_zone;
    rmcf->pg_shm_zone->data = rmcf;

    return NGX_CONF_OK;
}


/* a reload keeps the sync state, so it goes on from where it was */
static ngx_int_t
ngx_http_rate_limit_sync_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_main_conf_t  *ormcf = data;

    ngx_http_rate_limit_main_conf_t  *rmcf;

    rmcf = shm_zone->data;

    if (ormcf) {
        rmcf->pg_sh = ormcf->pg_sh;
        rmcf->pg_shpool = ormcf->pg_shpool;
        return NGX_OK;
    }

    rmcf->pg_shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        rmcf->pg_sh = rmcf->pg_shpool->data;
        return NGX_OK;
    }

    rmcf->pg_sh = ngx_slab_calloc(rmcf->pg_shpool,
                                  sizeof(ngx_http_rate_limit_pg_shctx_t));
    if (rmcf->pg_sh == NULL) {
        return NGX_ERROR;
    }

    rmcf->pg_shpool->data = rmcf->pg_sh;

    return NGX_OK;
}


ngx_int_t
ngx_http_rate_limit_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf)
{
    size_t                       len;
    const char                  *schema;
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    static const char  listen[] = NGX_HTTP_RATE_LIMIT_SYNC_LISTEN_SQL;

    ngx_memzero(sync, sizeof(ngx_http_rate_limit_sync_t));

    if (rmcf->pg_conninfo_env.len) {
        rmcf->pg_conninfo.data = (u_char *) getenv(
                                     (char *) rmcf->pg_conninfo_env.data);

        if (rmcf->pg_conninfo.data == NULL) {
            ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                          "rate_limit_postgres: environment variable \"%V\" "
                          "holding the connection string is not set; add "
                          "\"env %V;\" to nginx.conf",
                          &rmcf->pg_conninfo_env, &rmcf->pg_conninfo_env);
            return NGX_OK;
        }

        rmcf->pg_conninfo.len = ngx_strlen(rmcf->pg_conninfo.data);
    }

    schema = ngx_http_rate_limit_pg_schema(&len);

    sync->setup = ngx_pnalloc(cycle->pool, len + sizeof(listen));
    if (sync->setup == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(sync->setup, schema, len), listen, sizeof(listen));

    sync->rmcf = rmcf;
    sync->sh = rmcf->pg_sh;
    sync->shpool = rmcf->pg_shpool;

    sync->pc.conninfo = (char *) rmcf->pg_conninfo.data;
    sync->pc.log = cycle->log;
    sync->pc.ready = ngx_http_rate_limit_sync_ready;
    sync->pc.result = ngx_http_rate_limit_sync_result;
    sync->pc.failed = ngx_http_rate_limit_sync_failed;
    sync->pc.notified = ngx_http_rate_limit_sync_notified;

    ngx_http_rate_limit_timer_init(&sync->lease,
                                   ngx_http_rate_limit_sync_lease_handler,
                                   sync, cycle->log);
    ngx_http_rate_limit_timer_init(&sync->sync,
                                   ngx_http_rate_limit_sync_handler, sync,
                                   cycle->log);
    ngx_http_rate_limit_timer_init(&sync->reconnect,
                                   ngx_http_rate_limit_sync_connect, sync,
                                   cycle->log);

    ngx_http_rate_limit_sync_lease_handler(&sync->lease);

    return NGX_OK;
}


void
ngx_http_rate_limit_sync_exit_process(void)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (sync->rmcf == NULL) {
        return;
    }

    if (sync->lease.timer_set) {
        ngx_del_timer(&sync->lease);
    }

    ngx_http_rate_limit_sync_release();

    if (sync->snapshot.xip) {
        ngx_free(sync->snapshot.xip);
        sync->snapshot.xip = NULL;
    }
}


/*
 * The lease: worker 0 takes it whenever it is free or stale, any other
 * worker only once it is very stale, so that a killed worker 0 is replaced.
 */
static void
ngx_http_rate_limit_sync_lease_handler(ngx_event_t *ev)
{
    ngx_uint_t                   take;
    ngx_msec_t                   age;
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (ngx_exiting) {
        ngx_http_rate_limit_sync_release();
        return;
    }

    ngx_shmtx_lock(&sync->shpool->mutex);

    age = ngx_current_msec - sync->sh->heartbeat;

    if (sync->sh->owner == (ngx_pid_t) ngx_pid) {
        take = 1;

    } else if (sync->sh->owner == 0
               || age > NGX_HTTP_RATE_LIMIT_SYNC_LEASE_STALE)
    {
        take = (ngx_worker == 0
                || age > 2 * NGX_HTTP_RATE_LIMIT_SYNC_LEASE_STALE);

    } else {
        take = 0;
    }

    if (take) {
        sync->sh->owner = ngx_pid;
        sync->sh->heartbeat = ngx_current_msec;
    }

    ngx_shmtx_unlock(&sync->shpool->mutex);

    if (take && !sync->owner) {
        sync->owner = 1;

        ngx_log_error(NGX_LOG_INFO, ev->log, 0,
                      "rate_limit_postgres: this worker syncs the "
                      "per-client limits");

        ngx_http_rate_limit_sync_connect(&sync->reconnect);

    } else if (!take && sync->owner) {
        sync->owner = 0;
        ngx_http_rate_limit_pg_close(&sync->pc);
        sync->state = NGX_HTTP_RATE_LIMIT_SYNC_IDLE;
    }

    ngx_add_timer(ev, NGX_HTTP_RATE_LIMIT_SYNC_LEASE_TICK);
}


static void
ngx_http_rate_limit_sync_release(void)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (!sync->owner) {
        return;
    }

    sync->owner = 0;

    ngx_shmtx_lock(&sync->shpool->mutex);

    if (sync->sh->owner == (ngx_pid_t) ngx_pid) {
        sync->sh->owner = 0;
    }

    ngx_shmtx_unlock(&sync->shpool->mutex);

    if (sync->sync.timer_set) {
        ngx_del_timer(&sync->sync);
    }

    if (sync->reconnect.timer_set) {
        ngx_del_timer(&sync->reconnect);
    }

    ngx_http_rate_limit_pg_close(&sync->pc);
    sync->state = NGX_HTTP_RATE_LIMIT_SYNC_IDLE;
}


static void
ngx_http_rate_limit_sync_connect(ngx_event_t *ev)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (sync->owner && sync->pc.conninfo) {
        (void) ngx_http_rate_limit_pg_connect(&sync->pc);
    }
}


/* the table, its trigger and LISTEN, in one round trip */
static void
ngx_http_rate_limit_sync_ready(ngx_http_rate_limit_pg_conn_t *pc)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    sync->state = NGX_HTTP_RATE_LIMIT_SYNC_SETUP;
    sync->setup_failed = 0;

    (void) ngx_http_rate_limit_pg_send(pc, sync->setup, 0, NULL, 0);
}


/* one line when PostgreSQL is lost; the last synced limits stay in force */
static void
ngx_http_rate_limit_sync_failed(ngx_http_rate_limit_pg_conn_t *pc,
    const char *reason)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (!sync->lost) {
        sync->lost = 1;
        ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                      "rate_limit_postgres: cannot sync (%s): the last "
                      "synced limits keep applying", reason);
    }

    sync->state = NGX_HTTP_RATE_LIMIT_SYNC_IDLE;

    if (sync->sync.timer_set) {
        ngx_del_timer(&sync->sync);
    }

    sync->backoff = sync->backoff
                    ? ngx_min(sync->backoff * 2,
                              NGX_HTTP_RATE_LIMIT_SYNC_BACKOFF_MAX)
                    : NGX_HTTP_RATE_LIMIT_SYNC_BACKOFF_MIN;

    if (sync->owner && !sync->reconnect.timer_set) {
        ngx_add_timer(&sync->reconnect, sync->backoff);
    }
}


static void
ngx_http_rate_limit_sync_notified(ngx_http_rate_limit_pg_conn_t *pc)
{
    ngx_http_rate_limit_sync_handler(&ngx_http_rate_limit_sync.sync);
}


static void
ngx_http_rate_limit_sync_handler(ngx_event_t *ev)
{
    char                         cursor[NGX_INT64_LEN + 1];
    const char                  *params[1];
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (sync->state != NGX_HTTP_RATE_LIMIT_SYNC_READY) {
        /* a query is running: sync again once it is done */
        sync->sync_again = 1;
        return;
    }

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }

    sync->sync_again = 0;
    sync->snapshot_read = 0;
    sync->rows = 0;
    sync->started = ngx_current_msec;

    if (ngx_http_rate_limit_sync_need_full()) {
        sync->state = NGX_HTTP_RATE_LIMIT_SYNC_FULL;
        sync->generation = sync->sh->generation + 1;
        sync->cursor = 0;
        sync->truncated = 0;

        (void) ngx_http_rate_limit_pg_send(&sync->pc,
                                           ngx_http_rate_limit_sync_full_sql,
                                           0, NULL, 1);
        return;
    }

    sync->state = NGX_HTTP_RATE_LIMIT_SYNC_CHANGES;
    sync->generation = sync->sh->generation;
    sync->cursor = sync->sh->cursor;

    *ngx_sprintf((u_char *) cursor, "%L", sync->cursor) = '\0';
    params[0] = cursor;

    (void) ngx_http_rate_limit_pg_send(&sync->pc,
                                       ngx_http_rate_limit_sync_changes_sql,
                                       1, params, 1);
}


/* a zone created since the last full sync has none of the rows yet */
static ngx_int_t
ngx_http_rate_limit_sync_need_full(void)
{
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t  **zones;
    ngx_http_rate_limit_sync_t   *sync = &ngx_http_rate_limit_sync;

    if (sync->sh->generation == 0 || sync->truncated) {
        return 1;
    }

    zones = sync->rmcf->zones.elts;

    for (i = 0; i < sync->rmcf->zones.nelts; i++) {
        if (rl_store_row_generation(&zones[i]->store)
            != sync->sh->generation)
        {
            return 1;
        }
    }

    return 0;
}


static void
ngx_http_rate_limit_sync_result(ngx_http_rate_limit_pg_conn_t *pc,
    PGresult *res)
{
    ngx_http_rate_limit_sync_t  *sync = &ngx_http_rate_limit_sync;

    if (res == NULL) {
        ngx_http_rate_limit_sync_done();
        return;
    }

    switch (PQresultStatus(res)) {

    case PGRES_SINGLE_TUPLE:
        ngx_http_rate_limit_sync_row(res);
        return;

    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        return;

    default:
        if (sync->state == NGX_HTTP_RATE_LIMIT_SYNC_SETUP) {
            /* a role that may not create tables may read a table made */
            ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                          "rate_limit_postgres: cannot create the schema: %s",
                          PQresultErrorMessage(res));
            sync->setup_failed = 1;
            return;
        }

        ngx_log_error(NGX_LOG_ERR, pc->log, 0,
                      "rate_limit_postgres: query failed: %s",
                      PQresultErrorMessage(res));

        /* the results go on to their end; this sync does not count */
        sync->generation = 0;
    }
}


/* zone, key, rate, burst, snapshot, deleted */
static void
ngx_http_rate_limit_sync_row(PGresult *res)
{
    char                           err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    u_char                         encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    uint64_t                       burst;
    ngx_int_t                      n;
    ngx_str_t                      key;
    rl_store_key_t                 stored;
    ngx_http_rate_limit_spec_t     spec;
    ngx_http_rate_limit_zone_t    *zone;
    ngx_http_rate_limit_sync_t    *sync = &ngx_http_rate_limit_sync;

    /* every row of a query carries the same snapshot */
    if (!sync->snapshot_read) {
        if (ngx_http_rate_limit_pg_snapshot(&sync->snapshot,
                                            (u_char *) PQgetvalue(res, 0, 4),
                                            PQgetlength(res, 0, 4))
            != NGX_OK)
        {
            if (sync->generation) {
                ngx_log_error(NGX_LOG_ERR, sync->pc.log, 0,
                              "rate_limit_postgres: unreadable snapshot "
                              "\"%*s\": this sync does not count",
                              (size_t) ngx_min(PQgetlength(res, 0, 4), 64),
                              PQgetvalue(res, 0, 4));
                sync->generation = 0;
            }

            return;
        }

        sync->snapshot_read = 1;

        if ((int64_t) sync->snapshot.view.xmin > sync->cursor) {
            sync->cursor = (int64_t) sync->snapshot.view.xmin;
        }
    }

    if (PQgetisnull(res, 0, 0)) {
        return;
    }

    sync->rows++;

    /* TRUNCATE leaves an empty zone: the whole table is read again */
    if (PQgetlength(res, 0, 0) == 0) {
        sync->truncated = 1;
        return;
    }

    zone = ngx_http_rate_limit_zone_find(sync->rmcf,
                                         (u_char *) PQgetvalue(res, 0, 0),
                                         PQgetlength(res, 0, 0));
    if (zone == NULL) {
        /* it may be a zone of another node's configuration */
        if (PQgetvalue(res, 0, 5)[0] != 't') {
            ngx_http_rate_limit_sync_ignored(res, NGX_LOG_NOTICE,
                                             "no such zone on this node");
        }

        return;
    }

    /* only a table made without the shipped CHECKs holds a longer key */
    if (PQgetlength(res, 0, 1) > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
        if (PQgetvalue(res, 0, 5)[0] != 't') {
            ngx_http_rate_limit_sync_ignored(res, NGX_LOG_WARN,
                                             "the key is longer than 4096 "
                                             "bytes");
        }

        return;
    }

    key.data = encoded;
    key.len = ngx_http_rate_limit_encode_key(
                               (u_char *) PQgetvalue(res, 0, 1),
                               PQgetlength(res, 0, 1), encoded);

    rl_store_key(&zone->store, key.data, key.len, &stored);

    if (PQgetvalue(res, 0, 5)[0] == 't') {
        (void) rl_store_row_sync(&zone->store, &stored, NULL,
                                 sync->generation, &sync->snapshot.view);
        return;
    }

    if (ngx_http_rate_limit_parse_rate_allow_zero(PQgetvalue(res, 0, 2),
                                                  PQgetlength(res, 0, 2),
                                                  &spec.rate, err,
                                                  sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        goto invalid;
    }

    if (PQgetisnull(res, 0, 3)) {
        burst = spec.rate.count;

    } else {
        n = ngx_atoi((u_char *) PQgetvalue(res, 0, 3),
                     PQgetlength(res, 0, 3));
        if (n == NGX_ERROR) {
            ngx_cpystrn((u_char *) err, (u_char *) "invalid burst",
                        sizeof(err));
            goto invalid;
        }

        burst = (uint64_t) n;
    }

    if (ngx_http_rate_limit_make_params_blocking(&spec.rate, burst,
                                                 &spec.params, err,
                                                 sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        goto invalid;
    }

    ngx_http_rate_limit_sync_full(zone,
        rl_store_row_sync(&zone->store, &stored, &spec, sync->generation,
                          &sync->snapshot.view),
        sync->pc.log);
    return;

invalid:

    ngx_http_rate_limit_sync_ignored(res, NGX_LOG_WARN, err);
}


/*
 * Names a row that does not apply, so that an operator can find it.  Zone,
 * key and rate are user data: each is escaped as in JSON, and cut short
 * (saying its length) so that the line stays whole.
 */
static void
ngx_http_rate_limit_sync_ignored(PGresult *res, ngx_uint_t level,
    const char *reason)
{
    u_char                       *p;
    u_char                        line[NGX_MAX_ERROR_STR - 256];
    ngx_http_rate_limit_sync_t   *sync = &ngx_http_rate_limit_sync;

    p = ngx_cpymem(line, "zone=", 5);
    p = ngx_http_rate_limit_sync_text(p, res, 0, 64);
    p = ngx_cpymem(p, " key=", 5);
    p = ngx_http_rate_limit_sync_text(p, res, 1, 128);
    p = ngx_cpymem(p, " rate=", 6);
    p = ngx_http_rate_limit_sync_text(p, res, 2, 32);
    p = ngx_cpymem(p, " burst=", 7);
    p = ngx_http_rate_limit_sync_text(p, res, 3, 24);

    ngx_log_error(level, sync->pc.log, 0,
                  "rate_limit_postgres: a row is ignored (%s): %*s",
                  reason, (size_t) (p - line), line);
}


/*
 * A column, quoted and escaped; NULL for NULL.  At most shown bytes of it
 * are shown, 6 * shown + 32 bytes written at most.
 */
static u_char *
ngx_http_rate_limit_sync_text(u_char *p, PGresult *res, int column,
    size_t shown)
{
    u_char  *s;
    size_t   len, cut;

    if (PQgetisnull(res, 0, column)) {
        return ngx_cpymem(p, "NULL", 4);
    }

    s = (u_char *) PQgetvalue(res, 0, column);
    len = PQgetlength(res, 0, column);
    cut = len;

    if (cut > shown) {
        cut = shown;

        /* no character is halved */
        while (cut > 0 && (s[cut] & 0xc0) == 0x80) {
            cut--;
        }
    }

    *p++ = '"';
    p += ngx_http_rate_limit_json_escape(s, cut, p);
    *p++ = '"';

    if (cut < len) {
        p = ngx_sprintf(p, "...(%uz bytes)", len);
    }

    return p;
}


static void
ngx_http_rate_limit_sync_done(void)
{
    ngx_uint_t                         i, counted;
    ngx_http_rate_limit_zone_t       **zones;
    ngx_http_rate_limit_sync_t        *sync = &ngx_http_rate_limit_sync;
    ngx_http_rate_limit_sync_state_e   state;

    state = sync->state;

    /*
     * The failed schema left its transaction aborted, and LISTEN unsent:
     * nothing would run on this connection until a ROLLBACK.
     */
    if (state == NGX_HTTP_RATE_LIMIT_SYNC_SETUP && sync->setup_failed) {
        sync->state = NGX_HTTP_RATE_LIMIT_SYNC_LISTEN;

        (void) ngx_http_rate_limit_pg_send(&sync->pc, "ROLLBACK; "
                                           NGX_HTTP_RATE_LIMIT_SYNC_LISTEN_SQL,
                                           0, NULL, 0);
        return;
    }

    sync->state = NGX_HTTP_RATE_LIMIT_SYNC_READY;

    if (sync->lost) {
        sync->lost = 0;
        ngx_log_error(NGX_LOG_NOTICE, sync->pc.log, 0,
                      "rate_limit_postgres: connected again");
    }

    sync->backoff = 0;

    /* a query that failed, or gave no snapshot, does not count */
    counted = (state == NGX_HTTP_RATE_LIMIT_SYNC_FULL
               || state == NGX_HTTP_RATE_LIMIT_SYNC_CHANGES)
              && sync->generation && sync->snapshot_read;

    zones = sync->rmcf->zones.elts;

    if (counted && state == NGX_HTTP_RATE_LIMIT_SYNC_FULL) {

        for (i = 0; i < sync->rmcf->zones.nelts; i++) {
            rl_store_row_sweep(&zones[i]->store, sync->generation,
                               &sync->snapshot.view);
        }

        ngx_log_error(NGX_LOG_INFO, sync->pc.log, 0,
                      "rate_limit_postgres: full sync of %ui rows in %M ms",
                      sync->rows, ngx_current_msec - sync->started);
    }

    if (counted) {
        ngx_shmtx_lock(&sync->shpool->mutex);

        sync->sh->generation = sync->generation;

        if (sync->cursor > sync->sh->cursor) {
            sync->sh->cursor = sync->cursor;
        }

        sync->sh->synced = ngx_time();

        ngx_shmtx_unlock(&sync->shpool->mutex);

        for (i = 0; i < sync->rmcf->zones.nelts; i++) {
            rl_store_row_forget(&zones[i]->store, sync->snapshot.view.xmin);
        }
    }

    if (sync->sync_again || sync->truncated
        || state == NGX_HTTP_RATE_LIMIT_SYNC_SETUP
        || state == NGX_HTTP_RATE_LIMIT_SYNC_LISTEN)
    {
        ngx_http_rate_limit_sync_handler(&sync->sync);
        return;
    }

    ngx_add_timer(&sync->sync, sync->rmcf->pg_interval);
}


/*
 * Lets the bucket API apply its write, committed by transaction txid, at
 * once, before NOTIFY comes back; no sync that missed the write undoes it.
 */
void
ngx_http_rate_limit_sync_apply(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_spec_t *spec, uint64_t txid,
    ngx_log_t *log)
{
    u_char          encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    rl_store_key_t  stored;

    rl_store_key(&zone->store, encoded,
                 ngx_http_rate_limit_encode_key(key->data, key->len, encoded),
                 &stored);

    ngx_http_rate_limit_sync_full(zone,
                                  rl_store_row_write(&zone->store, &stored,
                                                     spec, txid),
                                  log);
}


/*
 * A full zone keeps the rows it has, and says so once, until a row fits
 * again.
 */
static void
ngx_http_rate_limit_sync_full(ngx_http_rate_limit_zone_t *zone, int rc,
    ngx_log_t *log)
{
    rl_store_stats_t  stats;

    if (rc != RL_STORE_FULL_NEWLY) {
        return;
    }

    rl_store_stats(&zone->store, &stats);

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "rate_limit_zone \"%V\" is full at %uL per-client limits: "
                  "the rows already held and the defaults keep applying; "
                  "give the zone more memory", &zone->name, stats.rows);
}
