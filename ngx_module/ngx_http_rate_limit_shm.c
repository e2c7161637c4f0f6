
/*
 * A zone's shared memory, shared by the workers of one node.  It holds
 * four rbtrees by key hash with one node layout: local buckets, whose LRU
 * queue tail is expired; per-client limits synced from PostgreSQL, whose
 * queue lists them all for a sweep after a full sync; the keys that Redis
 * rejected, until the time it gave, whose queue tail is expired too; and
 * the keys whose cost could never fit, logged in the last minute.
 */


#include "ngx_http_rate_limit_module.h"


/*
 * A key is named in the log once a minute.  The keys remembered for that
 * are few and small, so that a flood of keys cannot take the zone's memory
 * from the buckets: beyond them, a line a minute says that more were seen.
 */
#define NGX_HTTP_RATE_LIMIT_NOFIT_PERIOD_US  60000000
#define NGX_HTTP_RATE_LIMIT_NOFIT_KEYS       64


/*
 * A per-client limit.  The bucket API applies its own writes at once, and
 * a sync whose snapshot did not see such a write must not undo it: txid
 * is the API's transaction until a sync that saw it applies the row.  A
 * row the API deleted stays as a tombstone with the deletion's txid,
 * until every later sync sees the deletion.
 */
typedef struct {
    ngx_http_rate_limit_spec_t       spec;
    ngx_uint_t                       generation;
    uint64_t                         txid;       /* 0: as synced */
} ngx_http_rate_limit_row_t;


/* a key Redis rejected: no token before until_us, full at full_us */
typedef struct {
    int64_t                          until_us;
    int64_t                          full_us;
    ngx_uint_t                       version;    /* of the zone's limits */
} ngx_http_rate_limit_blocked_t;


typedef struct {
    u_char                           color;
    u_char                           tombstone;  /* rows only */
    u_short                          len;
    ngx_queue_t                      queue;
    union {
        ngx_http_rate_limit_state_t  state;
        ngx_http_rate_limit_row_t    row;
        ngx_http_rate_limit_blocked_t  blocked;
        int64_t                      logged_us;
    } u;
    u_char                           data[1];
} ngx_http_rate_limit_node_t;


static void ngx_http_rate_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_rate_limit_node_t *ngx_http_rate_limit_lookup(
    ngx_rbtree_t *rbtree, ngx_str_t *key, uint32_t hash);
static ngx_rbtree_node_t *ngx_http_rate_limit_node_alloc(
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *key, uint32_t hash);
static void ngx_http_rate_limit_node_free(ngx_http_rate_limit_zone_t *zone,
    ngx_rbtree_t *rbtree, ngx_http_rate_limit_node_t *rln);
static void ngx_http_rate_limit_expire(ngx_http_rate_limit_zone_t *zone,
    int64_t now_us, ngx_uint_t force);
static void ngx_http_rate_limit_unblock(ngx_http_rate_limit_zone_t *zone,
    int64_t now_us, ngx_uint_t n);
static ngx_uint_t ngx_http_rate_limit_shm_scarce(
    ngx_http_rate_limit_zone_t *zone);
static ngx_int_t ngx_http_rate_limit_row_put(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_node_t *rln, ngx_str_t *key, uint32_t hash,
    ngx_http_rate_limit_spec_t *spec, ngx_uint_t generation, uint64_t txid,
    ngx_log_t *log);
static void ngx_http_rate_limit_row_remove(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_node_t *rln);


/* monotonic, as nginx's timers: a wall clock stepping back cannot lock out */
int64_t
ngx_http_rate_limit_now_us(void)
{
    return (int64_t) ngx_current_msec * 1000;
}


ngx_int_t
ngx_http_rate_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_rate_limit_zone_t  *ozone = data;

    size_t                       len;
    ngx_http_rate_limit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* a reload: keep the buckets; the rejections cached may no longer
         * hold under the new limits */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        zone->sh->limits_version++;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    /* zeroed: the counters are read before anything writes them, and
     * nginx built with NGX_DEBUG_MALLOC fills what ngx_slab_alloc() gives */
    zone->sh = ngx_slab_calloc(zone->shpool,
                               sizeof(ngx_http_rate_limit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_rate_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    ngx_rbtree_init(&zone->sh->rows, &zone->sh->rows_sentinel,
                    ngx_http_rate_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->rows_queue);
    ngx_queue_init(&zone->sh->tombstones);

    ngx_rbtree_init(&zone->sh->blocked, &zone->sh->blocked_sentinel,
                    ngx_http_rate_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->blocked_queue);

    ngx_rbtree_init(&zone->sh->nofit, &zone->sh->nofit_sentinel,
                    ngx_http_rate_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->nofit_queue);

    zone->sh->nofit_unnamed_us = -NGX_HTTP_RATE_LIMIT_NOFIT_PERIOD_US;

    len = sizeof(" in rate_limit_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in rate_limit_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is handled by the caller; the slab need not log it */
    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_http_rate_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t           **p;
    ngx_http_rate_limit_node_t   *rln, *rlnt;

    for ( ;; ) {

        if (node->key < temp->key) {

            p = &temp->left;

        } else if (node->key > temp->key) {

            p = &temp->right;

        } else { /* node->key == temp->key */

            rln = (ngx_http_rate_limit_node_t *) &node->color;
            rlnt = (ngx_http_rate_limit_node_t *) &temp->color;

            p = (ngx_memn2cmp(rln->data, rlnt->data, rln->len, rlnt->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_rate_limit_node_t *
ngx_http_rate_limit_lookup(ngx_rbtree_t *rbtree, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_rate_limit_node_t  *rln;

    node = rbtree->root;
    sentinel = rbtree->sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        rln = (ngx_http_rate_limit_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, rln->data, key->len, (size_t) rln->len);

        if (rc == 0) {
            return rln;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * A bucket whose tat has passed is full, the same as no bucket at all, so
 * dropping it loses nothing.  Under memory pressure ("force") the least
 * recently used bucket goes even if it is not full, as with limit_req.
 */
static void
ngx_http_rate_limit_expire(ngx_http_rate_limit_zone_t *zone, int64_t now_us,
    ngx_uint_t force)
{
    ngx_uint_t                   n;
    ngx_queue_t                 *q;
    ngx_http_rate_limit_node_t  *rln;

    for (n = 0; n < 3; n++) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (!force && rln->u.state.tat_us > now_us) {
            return;
        }

        force = 0;

        ngx_http_rate_limit_node_free(zone, &zone->sh->rbtree, rln);
    }
}


static ngx_rbtree_node_t *
ngx_http_rate_limit_node_alloc(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, uint32_t hash)
{
    size_t                       size;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_rate_limit_node_t, data)
           + key->len;

    node = ngx_slab_alloc_locked(zone->shpool, size);
    if (node == NULL) {
        return NULL;
    }

    node->key = hash;

    rln = (ngx_http_rate_limit_node_t *) &node->color;

    rln->len = (u_short) key->len;
    ngx_memcpy(rln->data, key->data, key->len);

    return node;
}


static void
ngx_http_rate_limit_node_free(ngx_http_rate_limit_zone_t *zone,
    ngx_rbtree_t *rbtree, ngx_http_rate_limit_node_t *rln)
{
    ngx_rbtree_node_t  *node;

    ngx_queue_remove(&rln->queue);

    node = (ngx_rbtree_node_t *)
               ((u_char *) rln - offsetof(ngx_rbtree_node_t, color));

    ngx_rbtree_delete(rbtree, node);

    ngx_slab_free_locked(zone->shpool, node);
}


ngx_int_t
ngx_http_rate_limit_shm_take(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_params_t *params, ngx_uint_t cost,
    int64_t now_us, ngx_http_rate_limit_decision_t *d)
{
    uint32_t                     hash;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_rate_limit_expire(zone, now_us, 0);

    rln = ngx_http_rate_limit_lookup(&zone->sh->rbtree, key, hash);

    if (rln) {
        ngx_http_rate_limit_decide(params, &rln->u.state, now_us, cost, d);

        /* a rejection too, when the bucket was read under another limit */
        rln->u.state = d->state;

        ngx_queue_remove(&rln->queue);
        ngx_queue_insert_head(&zone->sh->queue, &rln->queue);

        ngx_shmtx_unlock(&zone->shpool->mutex);

        return NGX_OK;
    }

    ngx_http_rate_limit_decide(params, NULL, now_us, cost, d);

    if (!d->allowed) {
        /* a rejection leaves a full bucket as it was: nothing to store */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_OK;
    }

    node = ngx_http_rate_limit_node_alloc(zone, key, hash);

    if (node == NULL) {
        ngx_http_rate_limit_expire(zone, now_us, 1);

        node = ngx_http_rate_limit_node_alloc(zone, key, hash);
        if (node == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return NGX_ERROR;
        }
    }

    rln = (ngx_http_rate_limit_node_t *) &node->color;
    rln->u.state = d->state;

    ngx_rbtree_insert(&zone->sh->rbtree, node);
    ngx_queue_insert_head(&zone->sh->queue, &rln->queue);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


void
ngx_http_rate_limit_shm_refund(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_params_t *params, ngx_uint_t cost,
    int64_t now_us)
{
    uint32_t                     hash;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(&zone->sh->rbtree, key, hash);

    if (rln) {
        rln->u.state = ngx_http_rate_limit_refund(params, &rln->u.state,
                                                  now_us, cost);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* a bucket's tokens now, without taking any: for the bucket API */
ngx_int_t
ngx_http_rate_limit_shm_peek(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_params_t *params, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
{
    uint32_t                     hash;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(&zone->sh->rbtree, key, hash);

    ngx_http_rate_limit_decide(params, rln ? &rln->u.state : NULL, now_us, 0,
                               d);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/* the per-client limit of key, if one was synced: the lock is held briefly */
ngx_int_t
ngx_http_rate_limit_shm_row_get(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_spec_t *spec)
{
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    if (zone->sh->nrows == 0) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_DECLINED;
    }

    rln = ngx_http_rate_limit_lookup(&zone->sh->rows, key, hash);

    if (rln && !rln->tombstone) {
        *spec = rln->u.row.spec;
        rc = NGX_OK;

    } else {
        rc = NGX_DECLINED;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}


/*
 * The bucket API's own write, committed by transaction txid: spec NULL
 * deletes.  A deletion leaves a tombstone when the zone has room for it.
 */
ngx_int_t
ngx_http_rate_limit_shm_row_write(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_spec_t *spec, uint64_t txid,
    ngx_log_t *log)
{
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_uint_t                   generation;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(&zone->sh->rows, key, hash);

    if (spec) {
        /* a full sync running may have seen the row already: it stays */
        generation = (rln && !rln->tombstone)
                     ? ngx_max(rln->u.row.generation, zone->sh->pg_generation)
                     : zone->sh->pg_generation;

        rc = ngx_http_rate_limit_row_put(zone, rln, key, hash, spec,
                                         generation, txid, log);
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return rc;
    }

    if (rln && !rln->tombstone) {
        ngx_queue_remove(&rln->queue);
        zone->sh->nrows--;
        zone->sh->rows_full = 0;
        zone->sh->limits_version++;

    } else if (rln == NULL) {
        node = ngx_http_rate_limit_shm_scarce(zone)
               ? NULL : ngx_http_rate_limit_node_alloc(zone, key, hash);

        if (node == NULL) {
            /* no tombstone: a sync already running may restore the row */
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return NGX_OK;
        }

        ngx_rbtree_insert(&zone->sh->rows, node);
        rln = (ngx_http_rate_limit_node_t *) &node->color;

    } else {
        ngx_queue_remove(&rln->queue);
    }

    rln->tombstone = 1;
    rln->u.row.txid = txid;
    ngx_queue_insert_head(&zone->sh->tombstones, &rln->queue);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/*
 * A row as a sync read it (spec NULL: deleted), in a snapshot that may be
 * older than the bucket API's last write of the key: that write stays.
 */
void
ngx_http_rate_limit_shm_row_sync(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_http_rate_limit_spec_t *spec, ngx_uint_t generation,
    ngx_http_rate_limit_pg_snapshot_t *snapshot, ngx_log_t *log)
{
    uint32_t                     hash;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(&zone->sh->rows, key, hash);

    if (rln && rln->u.row.txid
        && !ngx_http_rate_limit_pg_visible(snapshot, rln->u.row.txid))
    {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return;
    }

    if (spec) {
        (void) ngx_http_rate_limit_row_put(zone, rln, key, hash, spec,
                                           generation, 0, log);

    } else if (rln) {
        ngx_http_rate_limit_row_remove(zone, rln);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * After a full sync: the rows it did not see were deleted meanwhile, but
 * for those the bucket API wrote after its snapshot.
 */
void
ngx_http_rate_limit_shm_row_sweep(ngx_http_rate_limit_zone_t *zone,
    ngx_uint_t generation, ngx_http_rate_limit_pg_snapshot_t *snapshot)
{
    ngx_queue_t                 *q, *next;
    ngx_http_rate_limit_node_t  *rln;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->rows_queue);
         q != ngx_queue_sentinel(&zone->sh->rows_queue);
         q = next)
    {
        next = ngx_queue_next(q);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (rln->u.row.generation != generation
            && (rln->u.row.txid == 0
                || ngx_http_rate_limit_pg_visible(snapshot, rln->u.row.txid)))
        {
            ngx_http_rate_limit_row_remove(zone, rln);
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* once every later snapshot sees a deletion, its tombstone has done */
void
ngx_http_rate_limit_shm_row_forget(ngx_http_rate_limit_zone_t *zone,
    uint64_t xmin)
{
    ngx_queue_t                 *q, *next;
    ngx_http_rate_limit_node_t  *rln;

    ngx_shmtx_lock(&zone->shpool->mutex);

    for (q = ngx_queue_head(&zone->sh->tombstones);
         q != ngx_queue_sentinel(&zone->sh->tombstones);
         q = next)
    {
        next = ngx_queue_next(q);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (rln->u.row.txid < xmin) {
            ngx_http_rate_limit_row_remove(zone, rln);
        }
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/*
 * Makes rln, or a new node when rln is NULL, the row of key; the lock is
 * held.  Rows may not take the last eighth of the zone, which stays for
 * the buckets that enforce them and the defaults.  A full zone keeps the
 * rows it has and says so once, in an alert, until a row fits again.
 */
static ngx_int_t
ngx_http_rate_limit_row_put(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_node_t *rln, ngx_str_t *key, uint32_t hash,
    ngx_http_rate_limit_spec_t *spec, ngx_uint_t generation, uint64_t txid,
    ngx_log_t *log)
{
    ngx_rbtree_node_t  *node;

    if (rln == NULL) {
        node = ngx_http_rate_limit_shm_scarce(zone)
               ? NULL : ngx_http_rate_limit_node_alloc(zone, key, hash);

        if (node == NULL) {
            if (!zone->sh->rows_full) {
                zone->sh->rows_full = 1;
                ngx_log_error(NGX_LOG_ALERT, log, 0,
                              "rate_limit_zone \"%V\" is full at %ui "
                              "per-client limits: the rows already held and "
                              "the defaults keep applying; give the zone "
                              "more memory", &zone->name, zone->sh->nrows);
            }

            return NGX_ERROR;
        }

        rln = (ngx_http_rate_limit_node_t *) &node->color;

        ngx_rbtree_insert(&zone->sh->rows, node);
        rln->tombstone = 1;
        ngx_queue_init(&rln->queue);
    }

    if (rln->tombstone) {
        rln->tombstone = 0;
        ngx_queue_remove(&rln->queue);
        ngx_queue_insert_head(&zone->sh->rows_queue, &rln->queue);
        zone->sh->nrows++;
        zone->sh->rows_full = 0;
    }

    rln->u.row.spec = *spec;
    rln->u.row.generation = generation;
    rln->u.row.txid = txid;
    zone->sh->limits_version++;

    return NGX_OK;
}


/* a row or a tombstone; the lock is held */
static void
ngx_http_rate_limit_row_remove(ngx_http_rate_limit_zone_t *zone,
    ngx_http_rate_limit_node_t *rln)
{
    if (!rln->tombstone) {
        zone->sh->nrows--;
        zone->sh->rows_full = 0;
        zone->sh->limits_version++;
    }

    ngx_http_rate_limit_node_free(zone, &zone->sh->rows, rln);
}


/*
 * Rows and cached rejections may not take the last eighth of the zone,
 * which stays for the buckets that enforce limits locally.
 */
static ngx_uint_t
ngx_http_rate_limit_shm_scarce(ngx_http_rate_limit_zone_t *zone)
{
    ngx_uint_t  pages;

    pages = (zone->shpool->end - zone->shpool->start) / ngx_pagesize;

    return zone->shpool->pfree * 8 < pages;
}


/*
 * Whether Redis said a moment ago that key has no token for a request of
 * this cost yet: then the request is rejected here, with no round trip.
 * The cache is read without the lock while it is empty.
 */
ngx_int_t
ngx_http_rate_limit_shm_blocked(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_uint_t cost, int64_t interval_us, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
{
    int64_t                      until_us;
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_http_rate_limit_node_t  *rln;

    if (zone->sh->nblocked == 0) {
        return NGX_DECLINED;
    }

    hash = ngx_crc32_short(key->data, key->len);
    rc = NGX_DECLINED;

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(&zone->sh->blocked, key, hash);

    if (rln && rln->u.blocked.version == zone->sh->limits_version) {
        /* the time for one token, and for each token more */
        until_us = rln->u.blocked.until_us + (int64_t) (cost - 1) * interval_us;

        if (until_us > now_us) {
            d->allowed = 0;
            d->remaining = 0;
            d->retry_after_us = until_us - now_us;
            d->reset_us = ngx_max(rln->u.blocked.full_us - now_us, 0);
            rc = NGX_OK;
        }
    }

    if (rln && rc == NGX_DECLINED && rln->u.blocked.until_us <= now_us) {
        ngx_http_rate_limit_node_free(zone, &zone->sh->blocked, rln);
        zone->sh->nblocked--;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    if (rc == NGX_OK) {
        (void) ngx_atomic_fetch_add(&zone->sh->cached, 1);
    }

    return rc;
}


/* remembers a rejection by Redis; a full zone just does without */
void
ngx_http_rate_limit_shm_block(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, int64_t until_us, int64_t full_us, int64_t now_us)
{
    uint32_t                     hash;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_rate_limit_unblock(zone, now_us, 2);

    rln = ngx_http_rate_limit_lookup(&zone->sh->blocked, key, hash);

    if (rln == NULL) {
        node = ngx_http_rate_limit_shm_scarce(zone)
               ? NULL : ngx_http_rate_limit_node_alloc(zone, key, hash);

        if (node == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return;
        }

        rln = (ngx_http_rate_limit_node_t *) &node->color;

        ngx_rbtree_insert(&zone->sh->blocked, node);
        zone->sh->nblocked++;

    } else {
        ngx_queue_remove(&rln->queue);
    }

    ngx_queue_insert_head(&zone->sh->blocked_queue, &rln->queue);

    rln->u.blocked.until_us = until_us;
    rln->u.blocked.full_us = full_us;
    rln->u.blocked.version = zone->sh->limits_version;

    ngx_shmtx_unlock(&zone->shpool->mutex);
}


/* drops up to n rejections that have run out, the oldest first */
static void
ngx_http_rate_limit_unblock(ngx_http_rate_limit_zone_t *zone, int64_t now_us,
    ngx_uint_t n)
{
    ngx_queue_t                 *q;
    ngx_http_rate_limit_node_t  *rln;

    while (n-- && !ngx_queue_empty(&zone->sh->blocked_queue)) {

        q = ngx_queue_last(&zone->sh->blocked_queue);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (rln->u.blocked.until_us > now_us
            && rln->u.blocked.version == zone->sh->limits_version)
        {
            return;
        }

        ngx_http_rate_limit_node_free(zone, &zone->sh->blocked, rln);
        zone->sh->nblocked--;
    }
}


/*
 * Whether the log may say now that a request of key can never fit: NGX_OK
 * names the key, once a minute for each key across the node's workers;
 * NGX_BUSY, once a minute for the zone, stands for the keys beyond those
 * remembered; NGX_DECLINED says nothing.
 */
ngx_int_t
ngx_http_rate_limit_shm_nofit(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, int64_t now_us)
{
    uint32_t                     hash;
    ngx_int_t                    rc;
    ngx_queue_t                 *q;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    /* logged in turn, so the oldest are last */
    while (!ngx_queue_empty(&zone->sh->nofit_queue)) {

        q = ngx_queue_last(&zone->sh->nofit_queue);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (now_us - rln->u.logged_us < NGX_HTTP_RATE_LIMIT_NOFIT_PERIOD_US) {
            break;
        }

        ngx_http_rate_limit_node_free(zone, &zone->sh->nofit, rln);
        zone->sh->nnofit--;
    }

    if (ngx_http_rate_limit_lookup(&zone->sh->nofit, key, hash)) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_DECLINED;
    }

    node = (zone->sh->nnofit >= NGX_HTTP_RATE_LIMIT_NOFIT_KEYS
            || ngx_http_rate_limit_shm_scarce(zone))
           ? NULL : ngx_http_rate_limit_node_alloc(zone, key, hash);

    if (node) {
        rln = (ngx_http_rate_limit_node_t *) &node->color;
        rln->u.logged_us = now_us;

        ngx_rbtree_insert(&zone->sh->nofit, node);
        ngx_queue_insert_head(&zone->sh->nofit_queue, &rln->queue);
        zone->sh->nnofit++;

        rc = NGX_OK;

    } else if (now_us - zone->sh->nofit_unnamed_us
               >= NGX_HTTP_RATE_LIMIT_NOFIT_PERIOD_US)
    {
        zone->sh->nofit_unnamed_us = now_us;
        rc = NGX_BUSY;

    } else {
        rc = NGX_DECLINED;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return rc;
}
