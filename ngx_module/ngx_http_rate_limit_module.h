
/*
 * ngx_http_rate_limit_module: distributed token buckets for nginx.
 */


#ifndef _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ngx_http_rate_limit_core.h>


#define NGX_HTTP_RATE_LIMIT_BACKEND_UNSET   0
#define NGX_HTTP_RATE_LIMIT_BACKEND_LOCAL   1
#define NGX_HTTP_RATE_LIMIT_BACKEND_REDIS   2

#define NGX_HTTP_RATE_LIMIT_FAILURE_OPEN    1
#define NGX_HTTP_RATE_LIMIT_FAILURE_CLOSED  2


typedef enum {
    NGX_HTTP_RATE_LIMIT_NONE = 0,
    NGX_HTTP_RATE_LIMIT_PASSED,
    NGX_HTTP_RATE_LIMIT_REJECTED,
    NGX_HTTP_RATE_LIMIT_REJECTED_DRY_RUN,
    NGX_HTTP_RATE_LIMIT_FAILED_OPEN,
    NGX_HTTP_RATE_LIMIT_FAILED_CLOSED
} ngx_http_rate_limit_status_e;


/* the shared part of a zone: local buckets, found by key, oldest last */
typedef struct {
    ngx_rbtree_t                     rbtree;
    ngx_rbtree_node_t                sentinel;
    ngx_queue_t                      queue;
} ngx_http_rate_limit_shctx_t;


typedef struct {
    ngx_str_t                        name;
    ngx_shm_zone_t                  *shm_zone;
    ngx_http_rate_limit_shctx_t     *sh;
    ngx_slab_pool_t                 *shpool;

    ngx_http_complex_value_t         key;
    ngx_http_rate_limit_rate_t       rate;
    ngx_http_rate_limit_params_t     params;
    ngx_uint_t                       backend;
    ngx_uint_t                       on_failure;

    /* script arguments and header values, formatted once */
    ngx_str_t                        redis_prefix;    /* "<prefix>:<zone>:" */
    ngx_str_t                        interval_arg;
    ngx_str_t                        burst_arg;
    ngx_str_t                        policy;          /* RateLimit-Policy */

    /* where the zone was first named, for errors found after parsing */
    ngx_str_t                        file;
    ngx_uint_t                       line;
    unsigned                         defined:1;
    unsigned                         local_full_logged:1;
} ngx_http_rate_limit_zone_t;


typedef struct {
    ngx_http_rate_limit_zone_t      *zone;
    ngx_uint_t                       cost;
    ngx_str_t                        cost_arg;
    ngx_str_t                        file;
    ngx_uint_t                       line;
} ngx_http_rate_limit_limit_t;


typedef struct {
    ngx_str_t                        address;        /* as written, for logs */
    ngx_str_t                        host;           /* numeric, NUL ended */
    ngx_int_t                        port;
    ngx_str_t                        unix_path;      /* NUL ended */
    ngx_str_t                        password;
    ngx_str_t                        password_env;
    ngx_uint_t                       db;
    ngx_msec_t                       timeout;
    ngx_str_t                        prefix;
} ngx_http_rate_limit_redis_conf_t;


typedef struct {
    /* of ngx_http_rate_limit_zone_t *, and of ngx_http_rate_limit_limit_t */
    ngx_array_t                      zones;
    ngx_array_t                      refs;
    ngx_http_rate_limit_redis_conf_t *redis;
    ngx_uint_t                       redis_zones;
} ngx_http_rate_limit_main_conf_t;


typedef struct {
    ngx_array_t                     *limits;   /* ngx_http_rate_limit_limit_t */
    ngx_uint_t                       status;
    ngx_flag_t                       headers;
    ngx_flag_t                       dry_run;
    ngx_uint_t                       log_level;
} ngx_http_rate_limit_loc_conf_t;


/* one limit applied to one request */
typedef struct {
    ngx_http_rate_limit_limit_t     *limit;
    ngx_str_t                        key;       /* as stored */
    ngx_http_rate_limit_decision_t   decision;
    unsigned                         redis:1;
    unsigned                         decided:1;
    unsigned                         failed:1;  /* on_failure decides */
    unsigned                         taken:1;   /* local tokens to refund */
} ngx_http_rate_limit_check_t;


typedef struct ngx_http_rate_limit_op_s  ngx_http_rate_limit_op_t;


typedef struct {
    ngx_http_request_t              *request;
    ngx_http_rate_limit_check_t     *checks;
    ngx_uint_t                       nchecks;
    ngx_uint_t                       nredis;
    ngx_http_rate_limit_op_t        *op;
    ngx_http_rate_limit_status_e     status;
    ngx_int_t                        rc;
    unsigned                         done:1;
} ngx_http_rate_limit_ctx_t;


extern ngx_module_t  ngx_http_rate_limit_module;


/* handler */
ngx_int_t ngx_http_rate_limit_handler(ngx_http_request_t *r);
void ngx_http_rate_limit_resume(ngx_http_request_t *r);
ngx_int_t ngx_http_rate_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* shared memory */
ngx_int_t ngx_http_rate_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
ngx_int_t ngx_http_rate_limit_shm_take(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_uint_t cost, int64_t now_us,
    ngx_http_rate_limit_decision_t *d);
void ngx_http_rate_limit_shm_refund(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_uint_t cost, int64_t now_us);
int64_t ngx_http_rate_limit_now_us(void);

/* redis */
ngx_int_t ngx_http_rate_limit_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_rate_limit_redis_conf_t *rcf);
void ngx_http_rate_limit_redis_exit_process(void);
ngx_int_t ngx_http_rate_limit_redis_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
void ngx_http_rate_limit_redis_detach(ngx_http_rate_limit_op_t *op);


#endif /* _NGX_HTTP_RATE_LIMIT_MODULE_H_INCLUDED_ */
