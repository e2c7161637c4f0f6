
/*
 * What the Redis files of the module share, and only they: the worker's
 * links to Redis, the script calls in flight, and the cluster's slot map.
 */


#ifndef _NGX_HTTP_RATE_LIMIT_REDIS_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_REDIS_H_INCLUDED_


#include "ngx_http_rate_limit_module.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/sds.h>


/* the slot map is read again this often, and after a redirect or failure */
#define NGX_HTTP_RATE_LIMIT_MAP_REFRESH      10000
#define NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP      100
#define NGX_HTTP_RATE_LIMIT_MAP_LOST_GAP     500


typedef struct ngx_http_rate_limit_link_s  ngx_http_rate_limit_link_t;
typedef struct ngx_http_rate_limit_block_s  ngx_http_rate_limit_block_t;


/* a block of the arena that a link's replies are built in */
struct ngx_http_rate_limit_block_s {
    ngx_http_rate_limit_block_t       *next;       /* older */
    size_t                             size;
    size_t                             used;
};


/* one script call: the keys of one request that share a slot */
struct ngx_http_rate_limit_op_s {
    ngx_http_rate_limit_op_t          *next;      /* of the same request */
    ngx_http_request_t                *request;   /* NULL once detached */
    ngx_http_rate_limit_ctx_t         *ctx;
    ngx_http_rate_limit_link_t        *link;
    ngx_event_t                        timer;
    uint64_t                           sent_us;    /* for the histogram */
    int64_t                            asked_us;   /* before Redis' clock */
    ngx_uint_t                         nkeys;
    ngx_uint_t                         redirects;
    ngx_http_rate_limit_op_t          *batch_next;  /* in one script call */
    unsigned                           reloaded:1;
};


/* a connection to one Redis address, with its circuit */
struct ngx_http_rate_limit_link_s {
    ngx_str_t                          address;    /* for logs and metrics */
    u_char                             host[
                                         NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX];
    ngx_uint_t                         port;
    char                              *unix_path;

    redisAsyncContext                 *ac;
    ngx_connection_t                  *connection;

    ngx_event_t                        reconnect;
    ngx_event_t                        connect_timer;
    ngx_msec_t                         backoff;

    ngx_uint_t                         pending;
    ngx_msec_t                         progress;   /* last reply or send */
    ngx_msec_t                         asked;      /* newest decision sent */

    /* the ops of this pass of the event loop, sent in one script call */
    ngx_http_rate_limit_op_t          *batch;
    ngx_http_rate_limit_op_t         **batch_last;
    ngx_event_t                        flush;

    ngx_http_rate_limit_circuit_t     *circuit;
    ngx_event_t                        probe_timer;
    ngx_event_t                        watch;
    uintptr_t                          probe_seq;

    ngx_http_rate_limit_block_t       *replies;    /* newest first */

    unsigned                           used:1;
    unsigned                           seed:1;
    unsigned                           retired:1;  /* not in the slot map */
    unsigned                           connected:1;
    unsigned                           ready:1;    /* AUTH and SELECT done */
    unsigned                           probing:1;
    unsigned                           in_write:1;
};


typedef struct {
    ngx_http_rate_limit_redis_conf_t  *conf;
    ngx_log_t                         *log;
    ngx_str_t                          password;

    ngx_http_rate_limit_link_t         links[
                                         NGX_HTTP_RATE_LIMIT_REDIS_ADDRESSES];

    /*
     * A cluster's slot map, with no node until a CLUSTER SLOTS reply fills
     * it, and the one the next reply is read into: the two are swapped.
     */
    ngx_http_rate_limit_cluster_map_t *maps;
    ngx_http_rate_limit_cluster_map_t *map;
    ngx_http_rate_limit_cluster_map_t *next_map;
    ngx_http_rate_limit_link_t        *node_links[
                                         NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES];
    ngx_event_t                        refresh;
    ngx_msec_t                         refreshed;  /* when last asked */

    ngx_http_rate_limit_op_t          *free_ops;
    ngx_uint_t                         nfree_ops;

    /* a command in RESP, and the arguments of a batch, kept for reuse */
    u_char                            *resp;
    size_t                             resp_size;
    const char                       **argv;
    size_t                            *argvlen;
    u_char                            *digits;
    ngx_uint_t                         nargs;

    unsigned                           refreshing:1;
    unsigned                           map_error_logged:1;
    unsigned                           exiting:1;
} ngx_http_rate_limit_redis_t;


extern ngx_http_rate_limit_redis_t  ngx_http_rate_limit_redis_worker;


void ngx_http_rate_limit_redis_ask_map(ngx_msec_t min_gap);
void ngx_http_rate_limit_redis_check_stall(
    ngx_http_rate_limit_link_t *link);
uint64_t ngx_http_rate_limit_redis_clock_us(void);
void ngx_http_rate_limit_redis_close(ngx_http_rate_limit_link_t *link);
void ngx_http_rate_limit_redis_connect(ngx_event_t *ev);
ngx_int_t ngx_http_rate_limit_redis_evalsha(
    ngx_http_rate_limit_op_t *op);
void ngx_http_rate_limit_redis_failure(
    ngx_http_rate_limit_link_t *link, ngx_uint_t hard, const char *reason);
void ngx_http_rate_limit_redis_flush(ngx_event_t *ev);
void ngx_http_rate_limit_redis_free_ops(void);
ngx_int_t ngx_http_rate_limit_redis_internal(
    ngx_http_rate_limit_link_t *link, const char *name, int argc,
    const char **argv, const size_t *argvlen);
ngx_http_rate_limit_link_t *ngx_http_rate_limit_redis_link(
    u_char *host, size_t len, ngx_uint_t port, char *unix_path,
    ngx_str_t *address);
void ngx_http_rate_limit_redis_load_script(
    ngx_http_rate_limit_link_t *link, const char *name);
void ngx_http_rate_limit_redis_probe(ngx_http_rate_limit_link_t *link);
ngx_int_t ngx_http_rate_limit_redis_queue(
    ngx_http_rate_limit_link_t *link, redisCallbackFn *fn, void *privdata,
    int argc, const char **argv, const size_t *argvlen);
ngx_int_t ngx_http_rate_limit_redis_redirect(
    ngx_http_rate_limit_op_t *op, redisReply *reply);
void ngx_http_rate_limit_redis_refresh(ngx_event_t *ev);
ngx_http_rate_limit_link_t *ngx_http_rate_limit_redis_route(
    ngx_str_t *key);
void ngx_http_rate_limit_redis_watch(ngx_event_t *ev);


#endif /* _NGX_HTTP_RATE_LIMIT_REDIS_H_INCLUDED_ */
