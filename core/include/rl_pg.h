/*
 * The core's PostgreSQL side: one asynchronous libpq connection class, and
 * the two things that run on it, each on a connection of its own:
 *   - the sync of the per-client limits (rate_limit_buckets) into the
 *     zones' stores, by transaction and not by clock: a full read once,
 *     then the rows changed since the cursor (the xmin of the last
 *     snapshot), the deletion log, TRUNCATE, LISTEN/NOTIFY, one syncing
 *     process a node by a lease in shared memory, reconnection with
 *     backoff;
 *   - the bucket API's queue: its queries, one after another, answered
 *     through rl_api.h, each applied to this node's store at once.
 *
 * The core does no I/O of its own: libpq owns the socket (it opens and
 * closes it), and the host only watches the fd it is given, level-
 * triggered, and arms one timer, through rl_pg_adapter_t.  The host is
 * nginx (ngx_module/ngx_http_rate_limit_pg.c) or a test (tests/).
 *
 * Names start with rl_pg_.  No exception crosses this boundary.  Not
 * thread-safe: each object is driven from one thread.
 */

#ifndef _RL_PG_H_INCLUDED_
#define _RL_PG_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rl_api.h"
#include "rl_store.h"


#ifdef __cplusplus
extern "C" {
#endif


#define RL_PG_OK                     0
#define RL_PG_ERROR                 -1

/* the log levels of rl_pg_adapter_t.log(), nginx's numbers */
#define RL_PG_LOG_ALERT              2
#define RL_PG_LOG_ERR                4
#define RL_PG_LOG_WARN               5
#define RL_PG_LOG_NOTICE             6
#define RL_PG_LOG_INFO               7
#define RL_PG_LOG_DEBUG              8

#define RL_PG_ERR_LEN                NGX_HTTP_RATE_LIMIT_ERR_LEN


/*
 * The host's side, one for each object.  None of these may call back into
 * the core (any rl_pg_*() function) before it returns.
 */
typedef struct {
    void                       *data;

    /*
     * Watch fd for reading, and for writing too while write is 1, level-
     * triggered, until unwatch() or a watch() of another fd, which
     * replaces it; then rl_pg_*_on_io().  The host never closes fd: libpq
     * does.  RL_PG_ERROR when it cannot watch.
     */
    int                       (*watch)(void *data, int fd, int write);
    void                      (*unwatch)(void *data);

    /* the one timer: rl_pg_*_on_timer() delay_ms from now, replacing any
     * earlier one; stop_timer() disarms it */
    void                      (*set_timer)(void *data, uint64_t delay_ms);
    void                      (*stop_timer)(void *data);

    /* rl_pg_api_on_posted() at the end of this pass of the event loop
     * (the sync needs none: NULL) */
    void                      (*post)(void *data);

    /* one line of the error log, without a newline; msg is NUL ended */
    void                      (*log)(void *data, int level, const char *msg);

    /* CLOCK_MONOTONIC in milliseconds: the same clock in every process of
     * a node, for the lease's heartbeat */
    uint64_t                  (*now_ms)(void *data);

    /* the lock of the lease's shared memory (nginx: its slab pool's
     * mutex); the API needs none: NULL */
    void                      (*lock)(void *data);
    void                      (*unlock)(void *data);
} rl_pg_adapter_t;


/*
 * What a node's processes share about the sync: the lease (the syncing
 * process and its heartbeat), the last full sync's generation, the cursor
 * and the time of the last sync.  The host allocates rl_pg_lease_size()
 * bytes, aligned to 8, and calls rl_pg_lease_init() once, when the memory
 * is new: a reload keeps it, and the sync goes on from where it was.
 */
typedef struct rl_pg_lease_s  rl_pg_lease_t;

size_t rl_pg_lease_size(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
rl_pg_lease_t *rl_pg_lease_init(void *memory)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* now_ms() of the last sync that counted; 0: none yet.  Lock-free. */
uint64_t rl_pg_lease_synced_ms(const rl_pg_lease_t *lease)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* a zone of nginx.conf, whose rows the sync writes into its store */
typedef struct {
    const unsigned char        *name;
    size_t                      name_len;
    rl_store_t                  store;
} rl_pg_zone_t;


typedef struct {
    const char                 *conninfo;  /* NUL ended */
    uint64_t                    interval_ms;    /* between syncs */
    const rl_pg_zone_t         *zones;
    size_t                      nzones;
    rl_pg_lease_t              *lease;
    int64_t                     pid;       /* this process, not 0 */
    /* takes a free or stale lease at once (nginx: worker 0); the others
     * wait until it is twice as stale, so a killed worker 0 is replaced */
    int                         preferred;
} rl_pg_sync_config_t;

typedef struct rl_pg_sync_s  rl_pg_sync_t;


/*
 * Copies what it needs of config and adapter, and takes its first look
 * at the lease: the owner connects at once.  NULL with a reason in err
 * (RL_PG_ERR_LEN bytes) on failure.
 */
rl_pg_sync_t *rl_pg_sync_create(const rl_pg_sync_config_t *config,
    const rl_pg_adapter_t *adapter, char *err)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* gives the lease up (a graceful shutdown), closes, stops the timer */
void rl_pg_sync_release(rl_pg_sync_t *sync)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* rl_pg_sync_release(), then frees everything; NULL is allowed */
void rl_pg_sync_destroy(rl_pg_sync_t *sync)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* 1 while this process holds the lease */
int rl_pg_sync_owner(const rl_pg_sync_t *sync)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

void rl_pg_sync_on_io(rl_pg_sync_t *sync, int readable, int writable)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_pg_sync_on_timer(rl_pg_sync_t *sync)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The bucket API's queue: a connection made on the first query, which
 * first sets up the session and the schema (rl_api_setup_sql()), then runs
 * the queries in the order given.  When PostgreSQL fails, every query
 * waiting is answered 503, and the next query connects again.
 */
typedef struct rl_pg_api_s     rl_pg_api_t;
typedef struct rl_pg_api_op_s  rl_pg_api_op_t;

rl_pg_api_t *rl_pg_api_create(const char *conninfo,
    const rl_pg_adapter_t *adapter, char *err)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* closes; the callbacks of the queries waiting are not called */
void rl_pg_api_destroy(rl_pg_api_t *api)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Runs the query of plan (LIST, CREATE, UPDATE or DELETE), after those
 * queued.  A write that PostgreSQL made is applied to store at once (NULL:
 * none), before NOTIFY comes back, so that this node enforces it now.
 * reply gets the answer, allocated with a, and done(data) is called once,
 * from rl_pg_api_on_posted(), never from inside this call; reply->status
 * 0 then means out of memory.  plan, a and reply must stay valid until
 * then, or until rl_pg_api_cancel().  RL_PG_ERROR: out of memory, done is
 * never called.
 */
int rl_pg_api_run(rl_pg_api_t *api, const rl_api_plan_t *plan,
    const rl_store_t *store, const rl_api_alloc_t *a, rl_api_reply_t *reply,
    void (*done)(void *data), void *data, rl_pg_api_op_t **op)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The request went away: done is never called and nothing given to
 * rl_pg_api_run() is touched again.  A query waiting is not sent; one
 * running finishes unanswered.  Not for an op whose callback has run.
 */
void rl_pg_api_cancel(rl_pg_api_t *api, rl_pg_api_op_t *op)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

void rl_pg_api_on_io(rl_pg_api_t *api, int readable, int writable)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_pg_api_on_timer(rl_pg_api_t *api)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_pg_api_on_posted(rl_pg_api_t *api)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_PG_H_INCLUDED_ */
