
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
#include <rl_check.h>
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
    ngx_ssl_t                       *redis_ssl;    /* tls=on */
    /* the resolver directive's, with name servers: Redis names move */
    ngx_resolver_t                  *resolver;
    ngx_msec_t                       resolver_timeout;
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
    rl_check_t                      *check;
    rl_check_conf_t                  conf;      /* as the check was asked */
    void                            *api_op;
    rl_verdict_status_e              status;    /* 0: not limited */
    ngx_int_t                        rc;
    unsigned                         done:1;    /* no decision pending */
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
    ngx_http_request_t *r, ngx_uint_t nlimits, void (*done)(void *data));
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
char *ngx_http_rate_limit_redis_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


#endif /* _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_ */
