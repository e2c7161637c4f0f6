
/*
 * ngx_http_rate_limit_module: distributed token buckets for nginx.
 */


#ifndef _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_rate_limit_core.h>
#include <rate_limit_verdict.h>
#include <rl_api.h>
#include <rl_conf.h>
#include <rl_pg.h>
#include <rl_redis.h>
#include <rl_store.h>
#include <rl_zone.h>


/*
 * The longest time a parameter may give: nginx hands the wait for its next
 * timer to epoll_wait() as an int of milliseconds, and a longer one wraps.
 */
#define NGX_HTTP_RATE_LIMIT_CONF_MSEC_MAX   NGX_MAX_INT32_VALUE


/* the verdict's values: the core decides them (rate_limit_verdict.h) */
typedef enum {
    NGX_HTTP_RATE_LIMIT_NONE = 0,
    NGX_HTTP_RATE_LIMIT_PASSED = RL_VERDICT_PASSED,
    NGX_HTTP_RATE_LIMIT_REJECTED = RL_VERDICT_REJECTED,
    NGX_HTTP_RATE_LIMIT_REJECTED_DRY_RUN = RL_VERDICT_REJECTED_DRY_RUN,
    NGX_HTTP_RATE_LIMIT_FAILED_OPEN = RL_VERDICT_FAILED_OPEN,
    NGX_HTTP_RATE_LIMIT_FAILED_CLOSED = RL_VERDICT_FAILED_CLOSED,
    NGX_HTTP_RATE_LIMIT_DEGRADED_LOCAL = RL_VERDICT_DEGRADED_LOCAL,
    NGX_HTTP_RATE_LIMIT_DEGRADED_LOCAL_REJECTED =
        RL_VERDICT_DEGRADED_LOCAL_REJECTED
} ngx_http_rate_limit_status_e;


/* a per-client limit: as written, and as the arithmetic takes it */
typedef rl_store_limit_t  ngx_http_rate_limit_spec_t;


typedef struct {
    rl_zone_t                        core;     /* what the core reads */
    ngx_str_t                        name;     /* core.name, for the log */
    ngx_shm_zone_t                  *shm_zone;
    ngx_slab_pool_t                 *shpool;
    ngx_http_complex_value_t         key;
    rl_conf_t                       *conf;     /* holds its policy entries */
} ngx_http_rate_limit_zone_t;


typedef struct {
    ngx_http_rate_limit_zone_t      *zone;
    ngx_uint_t                       cost;
    ngx_str_t                        cost_arg;
} ngx_http_rate_limit_limit_t;


typedef struct {
    rl_conf_t                       *conf;
    ngx_pool_t                      *pool;     /* the zones' memory */

    ngx_shm_zone_t                  *pg_shm_zone;
    rl_pg_lease_t                   *pg_lease;
    ngx_slab_pool_t                 *pg_shpool;

    /* its slab pool holds what the core's Redis clients share */
    ngx_shm_zone_t                  *metrics_zone;
    rl_redis_shared_t               *redis_shared;
} ngx_http_rate_limit_main_conf_t;


typedef struct {
    ngx_array_t                     *limits;   /* ngx_http_rate_limit_limit_t */
    ngx_uint_t                       status;
    ngx_flag_t                       headers;
    ngx_flag_t                       dry_run;
    ngx_uint_t                       log_level;
    ngx_str_t                        api_base;
    ngx_str_t                        api_token_env;
} ngx_http_rate_limit_loc_conf_t;


/*
 * One limit applied to one request.  What is decided for it (the params
 * in force, the decision, the flags) is written straight into its entry
 * of the ctx's verdict_in, which rl_verdict_judge() reads as it is.
 */
typedef struct {
    ngx_http_rate_limit_limit_t     *limit;
    rl_verdict_limit_t              *verdict_in;
    ngx_str_t                        key;       /* as stored */
    rl_store_key_t                   store_key;
    ngx_http_rate_limit_rate_t       rate;      /* as written */
    rl_zone_texts_t                 *texts;
    ngx_http_rate_limit_source_e     source;
    rl_redis_key_t                  *redis_key;  /* while Redis decides */
    unsigned                         redis:1;
} ngx_http_rate_limit_check_t;


/* the host of one core PostgreSQL object: the sync, or the API's queue */
typedef struct {
    rl_pg_adapter_t                  adapter;
    rl_pg_sync_t                    *sync;
    rl_pg_api_t                     *api;
    ngx_connection_t                *connection;   /* watches libpq's fd */
    ngx_event_t                      timer;
    ngx_event_t                      posted;
    ngx_log_t                       *log;
    ngx_slab_pool_t                 *shpool;       /* the lease's lock */
} ngx_http_rate_limit_pg_host_t;


typedef struct {
    ngx_http_request_t              *request;
    ngx_http_rate_limit_check_t     *checks;
    ngx_uint_t                       nchecks;
    rl_verdict_limit_t              *verdict_in;    /* one per check */
    rl_verdict_limit_out_t          *verdict_out;
    ngx_uint_t                       nredis;
    rl_redis_request_t              *redis_request;  /* in flight */
    int64_t                          redis_asked_us;
    void                           (*resume)(ngx_http_request_t *r);
    void                            *api_op;
    ngx_str_t                        api_key;   /* as the API was given it */
    ngx_http_rate_limit_status_e     status;
    ngx_int_t                        rc;
    unsigned                         done:1;
} ngx_http_rate_limit_ctx_t;


extern ngx_module_t  ngx_http_rate_limit_module;


/* configuration */
char *ngx_http_rate_limit_conf_read(ngx_conf_t *cf,
    rl_conf_result_t *result);
void ngx_http_rate_limit_conf_process(ngx_cycle_t *cycle,
    rl_conf_process_t *process);
void ngx_http_rate_limit_release_connection(ngx_connection_t *c);
ngx_int_t ngx_http_rate_limit_send(ngx_http_request_t *r, ngx_int_t status,
    ngx_str_t *type, u_char *body, size_t len);
u_char *ngx_http_rate_limit_decimal(u_char *p, uint64_t n);
void ngx_http_rate_limit_timer_init(ngx_event_t *ev,
    ngx_event_handler_pt handler, void *data, ngx_log_t *log);

/* the core's PostgreSQL objects on nginx's event loop */
void ngx_http_rate_limit_pg_host_init(ngx_http_rate_limit_pg_host_t *host,
    ngx_log_t *log, ngx_slab_pool_t *shpool);
void ngx_http_rate_limit_pg_host_close(ngx_http_rate_limit_pg_host_t *host);

/* sync */
char *ngx_http_rate_limit_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_rate_limit_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf);
void ngx_http_rate_limit_sync_exit_process(void);

/* metrics */
ngx_int_t ngx_http_rate_limit_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_rate_limit_main_conf_t *rmcf);
char *ngx_http_rate_limit_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_rate_limit_metrics_count(ngx_http_rate_limit_zone_t *zone,
    rl_verdict_outcome_e outcome);
ngx_uint_t ngx_http_rate_limit_nodes_live(void);

/* bucket API */
char *ngx_http_rate_limit_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_rate_limit_api_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf);
void ngx_http_rate_limit_api_exit_process(void);
rl_api_alloc_t ngx_http_rate_limit_api_allocator(ngx_pool_t *pool);

/* handler */
ngx_int_t ngx_http_rate_limit_handler(ngx_http_request_t *r);
ngx_http_rate_limit_ctx_t *ngx_http_rate_limit_create_ctx(
    ngx_http_request_t *r, ngx_uint_t nlimits);
ngx_int_t ngx_http_rate_limit_find_limit(ngx_http_request_t *r,
    ngx_http_rate_limit_check_t *check);
ngx_int_t ngx_http_rate_limit_ask_redis(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
ngx_int_t ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* shared memory */
ngx_int_t ngx_http_rate_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
int64_t ngx_http_rate_limit_now_us(void);

/* the core's Redis client on nginx's event loop */
ngx_int_t ngx_http_rate_limit_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_main_conf_t *rmcf);
void ngx_http_rate_limit_redis_exit_process(void);
rl_redis_client_t *ngx_http_rate_limit_redis_client(void);


#endif /* _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_ */
