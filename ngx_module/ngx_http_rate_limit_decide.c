
/*
 * Decisions in Redis: the script calls (ops) of a request, one for the
 * keys of each slot, their replies, timeouts and refunds, and the cache of
 * rejections they fill.
 */


#include "ngx_http_rate_limit_redis.h"


/* ops kept for reuse: no allocation a request while the load is steady */
#define NGX_HTTP_RATE_LIMIT_FREE_OPS         1024


static ngx_http_rate_limit_op_t *ngx_http_rate_limit_redis_op_alloc(
    ngx_log_t *log);
static void ngx_http_rate_limit_redis_op_free(ngx_http_rate_limit_op_t *op);
static ngx_int_t ngx_http_rate_limit_redis_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx);
static void ngx_http_rate_limit_redis_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_rate_limit_redis_answer(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_link_t *link, redisReply *reply);
static ngx_int_t ngx_http_rate_limit_redis_batch_args(ngx_uint_t argc,
    ngx_uint_t nops);
static void ngx_http_rate_limit_redis_batch_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static ngx_int_t ngx_http_rate_limit_redis_parse(ngx_http_rate_limit_op_t *op,
    redisReply *reply);
static void ngx_http_rate_limit_redis_remember(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_check_t *check);
static void ngx_http_rate_limit_redis_timeout(ngx_event_t *ev);
static void ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_done(ngx_http_rate_limit_op_t *op);
static void ngx_http_rate_limit_redis_refund(ngx_http_rate_limit_ctx_t *ctx);


ngx_int_t
ngx_http_rate_limit_redis_send(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_uint_t                    i, j, probe, slot;
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_check_t  *check, *other;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (ngx_http_rate_limit_redis_keys(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* one op for the keys of each slot: a script's keys share a slot */
    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis || check->op || check->failed) {
            continue;
        }

        link = ngx_http_rate_limit_redis_route(&check->redis_key);
        probe = 0;

        if (link == NULL || link->ac == NULL
            || !ngx_http_rate_limit_circuit_allow(link->circuit, &probe))
        {
            /* this request's turn to probe: the probe goes, not it */
            if (probe) {
                ngx_http_rate_limit_redis_probe(link);
            }

            if (link && link->circuit && link->circuit->open) {
                ngx_http_rate_limit_redis_watch(&link->watch);
            }

            /* in a cluster, the slot may have a new master already */
            ngx_http_rate_limit_redis_ask_map(NGX_HTTP_RATE_LIMIT_MAP_MIN_GAP);

            check->failed = 1;
            continue;
        }

        op = ngx_http_rate_limit_redis_op_alloc(r->connection->log);
        if (op == NULL) {
            check->failed = 1;
            continue;
        }

        op->request = r;
        op->ctx = ctx;
        op->link = link;
        op->asked_us = ngx_http_rate_limit_now_us();

        slot = rd->map ? ngx_http_rate_limit_cluster_slot(
                             check->redis_key.data, check->redis_key.len)
                       : 0;

        for (j = i; j < ctx->nchecks; j++) {
            other = &ctx->checks[j];

            if (other->redis && other->op == NULL && !other->failed
                && (rd->map == NULL
                    || ngx_http_rate_limit_cluster_slot(
                           other->redis_key.data, other->redis_key.len)
                       == slot))
            {
                other->op = op;
                op->nkeys++;
            }
        }

        if (rd->map == NULL) {
            /*
             * A cluster's keys of different slots cannot share a script.
             * A new connection's ops wait for its AUTH and SELECT.
             */
            *link->batch_last = op;
            link->batch_last = &op->batch_next;

            if (link->ready && !link->flush.posted) {
                ngx_post_event(&link->flush, &ngx_posted_events);
            }

        } else if (ngx_http_rate_limit_redis_evalsha(op) != NGX_OK) {
            for (j = i; j < ctx->nchecks; j++) {
                if (ctx->checks[j].op == op) {
                    ctx->checks[j].op = NULL;
                    ctx->checks[j].failed = 1;
                }
            }

            ngx_http_rate_limit_redis_op_free(op);
            continue;
        }

        /* not cancelable: a worker that quits answers its requests first */
        op->timer.handler = ngx_http_rate_limit_redis_timeout;
        op->timer.data = op;
        op->timer.log = r->connection->log;
        ngx_add_timer(&op->timer, rd->conf->timeout);

        op->next = ctx->op;
        ctx->op = op;
        ctx->nops++;
    }

    return ctx->nops ? NGX_OK : NGX_DECLINED;
}


static ngx_http_rate_limit_op_t *
ngx_http_rate_limit_redis_op_alloc(ngx_log_t *log)
{
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    op = rd->free_ops;

    if (op) {
        rd->free_ops = op->next;
        rd->nfree_ops--;

    } else {
        op = ngx_alloc(sizeof(ngx_http_rate_limit_op_t), log);
        if (op == NULL) {
            return NULL;
        }
    }

    ngx_memzero(op, sizeof(ngx_http_rate_limit_op_t));

    return op;
}


static void
ngx_http_rate_limit_redis_op_free(ngx_http_rate_limit_op_t *op)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (rd->exiting || rd->nfree_ops == NGX_HTTP_RATE_LIMIT_FREE_OPS) {
        ngx_free(op);
        return;
    }

    op->next = rd->free_ops;
    rd->free_ops = op;
    rd->nfree_ops++;
}


/* "<prefix>:<zone>:<key>", made once a request: routing and EVALSHA use it */
static ngx_int_t
ngx_http_rate_limit_redis_keys(ngx_http_request_t *r,
    ngx_http_rate_limit_ctx_t *ctx)
{
    u_char                       *p;
    ngx_uint_t                    i;
    ngx_http_rate_limit_zone_t   *zone;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis) {
            continue;
        }

        zone = check->limit->zone;

        p = ngx_pnalloc(r->pool, zone->redis_prefix.len + check->key.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        check->redis_key.data = p;
        check->redis_key.len = ngx_cpymem(ngx_cpymem(p, zone->redis_prefix.data,
                                                     zone->redis_prefix.len),
                                          check->key.data, check->key.len)
                               - p;
    }

    return NGX_OK;
}


/*
 * EVALSHA sha n key... (interval burst cost code)... for the op's keys,
 * with the cheaper script when there is one key
 */
ngx_int_t
ngx_http_rate_limit_redis_evalsha(ngx_http_rate_limit_op_t *op)
{
    u_char                       *p;
    size_t                       *argvlen;
    ngx_uint_t                    i, k, v, argc;
    const char                  **argv;
    ngx_http_request_t           *r;
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_check_t  *check;

    r = op->request;
    ctx = op->ctx;

    if (op->link->ac == NULL) {
        return NGX_ERROR;
    }

    argc = 3 + 5 * op->nkeys;

    argv = ngx_palloc(r->pool, argc * sizeof(char *));
    argvlen = ngx_palloc(r->pool, argc * sizeof(size_t));
    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);

    if (argv == NULL || argvlen == NULL || p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = sizeof("EVALSHA") - 1;
    argv[1] = (op->nkeys == 1) ? ngx_http_rate_limit_script_one_sha1()
                               : ngx_http_rate_limit_script_sha1();
    argvlen[1] = NGX_HTTP_RATE_LIMIT_SHA1_HEX;
    argv[2] = (char *) p;
    argvlen[2] = ngx_http_rate_limit_decimal(p, op->nkeys) - p;

    /* all the keys, then the values of each: interval, burst, cost, code */
    k = 3;
    v = 3 + op->nkeys;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->op != op) {
            continue;
        }

        argv[k] = (char *) check->redis_key.data;
        argvlen[k] = check->redis_key.len;
        k++;

        argv[v] = (char *) check->texts->interval_arg.data;
        argvlen[v] = check->texts->interval_arg.len;
        argv[v + 1] = (char *) check->texts->burst_arg.data;
        argvlen[v + 1] = check->texts->burst_arg.len;
        argv[v + 2] = (char *) check->limit->cost_arg.data;
        argvlen[v + 2] = check->limit->cost_arg.len;
        argv[v + 3] = (char *) check->texts->token_code_arg.data;
        argvlen[v + 3] = check->texts->token_code_arg.len;
        v += 4;
    }

    if (ngx_http_rate_limit_redis_queue(op->link,
                                        ngx_http_rate_limit_redis_reply, op,
                                        (int) argc, argv, argvlen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    op->sent_us = ngx_http_rate_limit_redis_clock_us();
    op->link->asked = ngx_current_msec;

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    redisReply                   *reply = r;
    ngx_http_rate_limit_op_t     *op = privdata;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    link->pending--;

    if (reply) {
        link->progress = ngx_current_msec;
    }

    if (op->request == NULL || rd->exiting) {
        /* the request timed out or went away: its late reply is dropped */
        ngx_http_rate_limit_redis_op_free(op);
        return;
    }

    if (reply == NULL) {
        goto failed;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* the script cache was emptied: a restart, a failover, a flush */
        if (!op->reloaded && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
            op->reloaded = 1;

            ngx_http_rate_limit_redis_load_script(link, "SCRIPT LOAD again");

            if (ngx_http_rate_limit_redis_evalsha(op) == NGX_OK) {
                return;
            }
        }

        if (rd->map
            && ngx_http_rate_limit_redis_redirect(op, reply) == NGX_OK)
        {
            return;
        }

        ngx_http_rate_limit_redis_failure(link, 0, reply->str);
        goto failed;
    }

    ngx_http_rate_limit_redis_answer(op, link, reply);
    return;

failed:

    /* hiredis is done with the op: it is freed here, not on a later reply */
    ngx_http_rate_limit_redis_fail(op);
    ngx_http_rate_limit_redis_op_free(op);
}


/* the script's answer for a live op: the op is over, and freed */
static void
ngx_http_rate_limit_redis_answer(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_link_t *link, redisReply *reply)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (ngx_http_rate_limit_redis_parse(op, reply) != NGX_OK) {
        ngx_http_rate_limit_redis_failure(link, 0,
                                          "unexpected reply to EVALSHA");
        ngx_http_rate_limit_redis_fail(op);

    } else {
        ngx_http_rate_limit_circuit_success(link->circuit, rd->log);
        ngx_http_rate_limit_metrics_latency(
            ngx_http_rate_limit_redis_clock_us() - op->sent_us);

        ngx_http_rate_limit_redis_done(op);
    }

    ngx_http_rate_limit_redis_op_free(op);
}


/*
 * Sends the ops gathered in one pass of the event loop: one alone as it
 * is, several in one call of the batch script, so that Redis runs one
 * script for them all.
 */
void
ngx_http_rate_limit_redis_flush(ngx_event_t *ev)
{
    u_char                       *p;
    size_t                        len;
    uint64_t                      now_us;
    ngx_uint_t                    nops, nkeys, argc, i, k, v;
    ngx_http_rate_limit_op_t     *op, *next, *ops, **last;
    ngx_http_rate_limit_ctx_t    *ctx;
    ngx_http_rate_limit_link_t   *link = ev->data;
    ngx_http_rate_limit_check_t  *check;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    ops = NULL;
    last = &ops;
    nops = 0;
    nkeys = 0;

    /* the ops of requests that went away meanwhile are dropped */
    for (op = link->batch; op; op = next) {
        next = op->batch_next;
        op->batch_next = NULL;

        if (op->request == NULL) {
            ngx_http_rate_limit_redis_op_free(op);
            continue;
        }

        *last = op;
        last = &op->batch_next;
        nops++;
        nkeys += op->nkeys;
    }

    link->batch = NULL;
    link->batch_last = &link->batch;

    if (nops == 1) {
        if (ngx_http_rate_limit_redis_evalsha(ops) != NGX_OK) {
            ngx_http_rate_limit_redis_fail(ops);
            ngx_http_rate_limit_redis_op_free(ops);
        }

        return;
    }

    if (nops == 0) {
        return;
    }

    argc = 4 + nkeys + nops + 4 * nkeys;

    if (ngx_http_rate_limit_redis_batch_args(argc, nops) != NGX_OK) {
        goto failed;
    }

    rd->argv[0] = "EVALSHA";
    rd->argvlen[0] = sizeof("EVALSHA") - 1;
    rd->argv[1] = ngx_http_rate_limit_batch_script_sha1();
    rd->argvlen[1] = NGX_HTTP_RATE_LIMIT_SHA1_HEX;

    p = rd->digits;

    rd->argv[2] = (char *) p;
    len = ngx_http_rate_limit_decimal(p, nkeys) - p;
    rd->argvlen[2] = len;
    p += len;

    k = 3;
    v = 3 + nkeys;
    now_us = ngx_http_rate_limit_redis_clock_us();

    rd->argv[v] = (char *) p;
    len = ngx_http_rate_limit_decimal(p, nops) - p;
    rd->argvlen[v++] = len;
    p += len;

    for (op = ops; op; op = op->batch_next) {
        ctx = op->ctx;
        op->sent_us = now_us;

        rd->argv[v] = (char *) p;
        len = ngx_http_rate_limit_decimal(p, op->nkeys) - p;
        rd->argvlen[v++] = len;
        p += len;

        for (i = 0; i < ctx->nchecks; i++) {
            check = &ctx->checks[i];

            if (check->op != op) {
                continue;
            }

            rd->argv[k] = (char *) check->redis_key.data;
            rd->argvlen[k++] = check->redis_key.len;

            rd->argv[v] = (char *) check->texts->interval_arg.data;
            rd->argvlen[v++] = check->texts->interval_arg.len;
            rd->argv[v] = (char *) check->texts->burst_arg.data;
            rd->argvlen[v++] = check->texts->burst_arg.len;
            rd->argv[v] = (char *) check->limit->cost_arg.data;
            rd->argvlen[v++] = check->limit->cost_arg.len;
            rd->argv[v] = (char *) check->texts->token_code_arg.data;
            rd->argvlen[v++] = check->texts->token_code_arg.len;
        }
    }

    if (ngx_http_rate_limit_redis_queue(link,
                                        ngx_http_rate_limit_redis_batch_reply,
                                        ops, (int) argc, rd->argv,
                                        rd->argvlen)
        == NGX_OK)
    {
        link->asked = ngx_current_msec;
        return;
    }

failed:

    for (op = ops; op; op = next) {
        next = op->batch_next;
        ngx_http_rate_limit_redis_fail(op);
        ngx_http_rate_limit_redis_op_free(op);
    }
}


/* room for the arguments of a batch, grown as batches grow */
static ngx_int_t
ngx_http_rate_limit_redis_batch_args(ngx_uint_t argc, ngx_uint_t nops)
{
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    if (argc <= rd->nargs) {
        return NGX_OK;
    }

    ngx_free(rd->argv);
    ngx_free(rd->argvlen);
    ngx_free(rd->digits);

    rd->nargs = ngx_max(argc, 2 * rd->nargs);

    rd->argv = ngx_alloc(rd->nargs * sizeof(char *), rd->log);
    rd->argvlen = ngx_alloc(rd->nargs * sizeof(size_t), rd->log);
    /* a count for the keys, for the ops, and for each op: at most argc */
    rd->digits = ngx_alloc(rd->nargs * NGX_INT_T_LEN, rd->log);

    if (rd->argv == NULL || rd->argvlen == NULL || rd->digits == NULL) {
        rd->nargs = 0;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_rate_limit_redis_batch_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    size_t                        at;
    redisReply                   *reply = r, part;
    const char                   *reason;
    ngx_http_rate_limit_op_t     *op, *next, *ops = privdata;
    ngx_http_rate_limit_link_t   *link = ac->data;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    link->pending--;

    if (reply) {
        link->progress = ngx_current_msec;
    }

    at = 0;

    for (op = ops; op; op = op->batch_next) {
        at += 1 + 4 * op->nkeys;
    }

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == at
        && !rd->exiting)
    {
        at = 0;

        for (op = ops; op; op = next) {
            next = op->batch_next;

            part = *reply;
            part.elements = 1 + 4 * op->nkeys;
            part.element = reply->element + at;
            at += part.elements;

            if (op->request == NULL) {
                ngx_http_rate_limit_redis_op_free(op);

            } else {
                ngx_http_rate_limit_redis_answer(op, link, &part);
            }
        }

        return;
    }

    reason = (reply == NULL) ? NULL
             : (reply->type == REDIS_REPLY_ERROR) ? reply->str
             : "unexpected reply to EVALSHA";

    /* the script cache was emptied: each op goes again on its own */
    if (reason && ngx_strncmp(reason, "NOSCRIPT", 8) == 0 && !rd->exiting) {
        ngx_http_rate_limit_redis_load_script(link, "SCRIPT LOAD again");
        reason = NULL;

    } else if (reason && !rd->exiting) {
        ngx_http_rate_limit_redis_failure(link, 0, reason);
    }

    for (op = ops; op; op = next) {
        next = op->batch_next;
        op->batch_next = NULL;

        if (op->request == NULL || rd->exiting) {
            ngx_http_rate_limit_redis_op_free(op);
            continue;
        }

        if (reply && reason == NULL) {
            op->reloaded = 1;

            if (ngx_http_rate_limit_redis_evalsha(op) == NGX_OK) {
                continue;
            }
        }

        ngx_http_rate_limit_redis_fail(op);
        ngx_http_rate_limit_redis_op_free(op);
    }
}


static ngx_int_t
ngx_http_rate_limit_redis_parse(ngx_http_rate_limit_op_t *op,
    redisReply *reply)
{
    ngx_uint_t                       i, n;
    ngx_http_rate_limit_ctx_t       *ctx;
    ngx_http_rate_limit_check_t     *check;
    ngx_http_rate_limit_decision_t  *d;

    ctx = op->ctx;

    d = ngx_palloc(op->request->pool,
                   op->nkeys * sizeof(ngx_http_rate_limit_decision_t));
    if (d == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_rate_limit_parse_script_reply(reply, op->nkeys, d)
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return NGX_ERROR;
    }

    n = 0;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->op != op) {
            continue;
        }

        check->decision = d[n++];
        check->decided = 1;

        /* the script took the tokens only if all its keys allowed */
        check->redis_taken = (reply->element[0]->integer == 1);

        if (!check->decision.allowed) {
            ngx_http_rate_limit_redis_remember(op, check);
        }
    }

    return NGX_OK;
}


/*
 * A rejection is kept in the zone's shared memory, so that the node's
 * next requests of the key are rejected without a round trip.  Times
 * count from when the op was sent, before Redis read its clock: the
 * cache may forget a rejection early, never hold one too long.
 */
static void
ngx_http_rate_limit_redis_remember(ngx_http_rate_limit_op_t *op,
    ngx_http_rate_limit_check_t *check)
{
    int64_t                          interval_us;
    ngx_http_rate_limit_decision_t  *d;

    d = &check->decision;
    interval_us = ngx_http_rate_limit_token_us(&check->params);

    /* a wait shorter than the clock's millisecond is not worth keeping */
    if (ngx_http_rate_limit_params_blocked(&check->params)
        || d->retry_after_us
           - (int64_t) (check->limit->cost - 1) * interval_us < 2000)
    {
        return;
    }

    ngx_http_rate_limit_shm_block(check->limit->zone, &check->key,
        op->asked_us + d->retry_after_us
        - (int64_t) (check->limit->cost - 1) * interval_us,
        op->asked_us + d->reset_us, ngx_http_rate_limit_now_us());
}


static void
ngx_http_rate_limit_redis_timeout(ngx_event_t *ev)
{
    ngx_http_rate_limit_op_t    *op = ev->data;
    ngx_http_rate_limit_link_t  *link;

    link = op->link;

    ngx_http_rate_limit_redis_failure(link, 0, "reply timed out");

    /* the op stays with hiredis until its reply or the disconnect */
    ngx_http_rate_limit_redis_fail(op);

    ngx_http_rate_limit_redis_check_stall(link);
}


/* the op's keys go to the zones' on_failure policies */
static void
ngx_http_rate_limit_redis_fail(ngx_http_rate_limit_op_t *op)
{
    ngx_uint_t                  i;
    ngx_http_rate_limit_ctx_t  *ctx;

    ctx = op->ctx;

    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].op == op) {
            ctx->checks[i].failed = 1;
            ctx->checks[i].decided = 0;
        }
    }

    ngx_http_rate_limit_redis_done(op);
}


/* the op is over for the request; the last one resumes it */
static void
ngx_http_rate_limit_redis_done(ngx_http_rate_limit_op_t *op)
{
    ngx_uint_t                    i;
    ngx_http_request_t           *r;
    ngx_http_rate_limit_op_t    **pp;
    ngx_http_rate_limit_ctx_t    *ctx;

    r = op->request;
    ctx = op->ctx;

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    op->request = NULL;

    for (pp = &ctx->op; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }

    for (i = 0; i < ctx->nchecks; i++) {
        if (ctx->checks[i].op == op) {
            ctx->checks[i].op = NULL;
        }
    }

    if (--ctx->nops) {
        return;
    }

    ngx_http_rate_limit_redis_refund(ctx);

    ctx->resume(r);
}


/*
 * In a cluster the keys of one request may be decided by several scripts.
 * When one rejects, those that took tokens give them back, so that a
 * rejected request costs no other limit anything, a moment later.
 */
static void
ngx_http_rate_limit_redis_refund(ngx_http_rate_limit_ctx_t *ctx)
{
    size_t                        argvlen[8];
    ngx_uint_t                    i;
    const char                   *argv[8];
    ngx_http_rate_limit_link_t   *link;
    ngx_http_rate_limit_check_t  *check;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (check->redis && check->decided && !check->decision.allowed) {
            break;
        }
    }

    if (i == ctx->nchecks) {
        return;
    }

    argv[0] = "EVAL";
    argvlen[0] = sizeof("EVAL") - 1;
    argv[1] = ngx_http_rate_limit_refund_script(&argvlen[1]);
    argv[2] = "1";
    argvlen[2] = 1;

    for (i = 0; i < ctx->nchecks; i++) {
        check = &ctx->checks[i];

        if (!check->redis_taken) {
            continue;
        }

        check->redis_taken = 0;

        link = ngx_http_rate_limit_redis_route(&check->redis_key);
        if (link == NULL) {
            continue;
        }

        argv[3] = (char *) check->redis_key.data;
        argvlen[3] = check->redis_key.len;
        argv[4] = (char *) check->texts->interval_arg.data;
        argvlen[4] = check->texts->interval_arg.len;
        argv[5] = (char *) check->texts->burst_arg.data;
        argvlen[5] = check->texts->burst_arg.len;
        argv[6] = (char *) check->limit->cost_arg.data;
        argvlen[6] = check->limit->cost_arg.len;
        argv[7] = (char *) check->texts->token_code_arg.data;
        argvlen[7] = check->texts->token_code_arg.len;

        (void) ngx_http_rate_limit_redis_internal(link, "refund", 8, argv,
                                                  argvlen);
    }
}


/* the request went away: its ops' replies, when they come, are dropped */
void
ngx_http_rate_limit_redis_detach(ngx_http_rate_limit_ctx_t *ctx)
{
    ngx_http_rate_limit_op_t  *op;

    for (op = ctx->op; op; op = op->next) {
        op->request = NULL;

        if (op->timer.timer_set) {
            ngx_del_timer(&op->timer);
        }
    }

    ctx->op = NULL;
    ctx->nops = 0;
}


/* at exit, the ops kept for reuse and the room for batches */
void
ngx_http_rate_limit_redis_free_ops(void)
{
    ngx_http_rate_limit_op_t     *op;
    ngx_http_rate_limit_redis_t  *rd = &ngx_http_rate_limit_redis_worker;

    while (rd->free_ops) {
        op = rd->free_ops;
        rd->free_ops = op->next;
        ngx_free(op);
    }

    ngx_free(rd->argv);
    ngx_free(rd->argvlen);
    ngx_free(rd->digits);
    rd->nargs = 0;
}
