
/*
 * Local buckets in a zone's shared memory, shared by the workers of one
 * node: an rbtree by key hash, and an LRU queue whose tail is expired.
 */


#include "ngx_http_rate_limit_module.h"


typedef struct {
    u_char                           color;
    u_char                           dummy;
    u_short                          len;
    ngx_queue_t                      queue;
    int64_t                          tat_us;
    u_char                           data[1];
} ngx_http_rate_limit_node_t;


static void ngx_http_rate_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_rate_limit_node_t *ngx_http_rate_limit_lookup(
    ngx_http_rate_limit_zone_t *zone, ngx_str_t *key, uint32_t hash);
static void ngx_http_rate_limit_expire(ngx_http_rate_limit_zone_t *zone,
    int64_t now_us, ngx_uint_t force);


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
        /* a reload: keep the buckets of the running configuration */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_rate_limit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_rate_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

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
ngx_http_rate_limit_lookup(ngx_http_rate_limit_zone_t *zone, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                    rc;
    ngx_rbtree_node_t           *node, *sentinel;
    ngx_http_rate_limit_node_t  *rln;

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

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
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    for (n = 0; n < 3; n++) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);

        rln = ngx_queue_data(q, ngx_http_rate_limit_node_t, queue);

        if (!force && rln->tat_us > now_us) {
            return;
        }

        force = 0;

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) rln - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&zone->sh->rbtree, node);

        ngx_slab_free_locked(zone->shpool, node);
    }
}


ngx_int_t
ngx_http_rate_limit_shm_take(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_uint_t cost, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
{
    size_t                       size;
    uint32_t                     hash;
    ngx_rbtree_node_t           *node;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    ngx_http_rate_limit_expire(zone, now_us, 0);

    rln = ngx_http_rate_limit_lookup(zone, key, hash);

    if (rln) {
        ngx_http_rate_limit_decide(&zone->params, rln->tat_us, now_us, cost,
                                   d);
        if (d->allowed) {
            rln->tat_us = d->tat_us;
        }

        ngx_queue_remove(&rln->queue);
        ngx_queue_insert_head(&zone->sh->queue, &rln->queue);

        ngx_shmtx_unlock(&zone->shpool->mutex);

        return NGX_OK;
    }

    ngx_http_rate_limit_decide(&zone->params, 0, now_us, cost, d);

    if (!d->allowed) {
        /* a rejection leaves a full bucket as it was: nothing to store */
        ngx_shmtx_unlock(&zone->shpool->mutex);
        return NGX_OK;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_rate_limit_node_t, data)
           + key->len;

    node = ngx_slab_alloc_locked(zone->shpool, size);

    if (node == NULL) {
        ngx_http_rate_limit_expire(zone, now_us, 1);

        node = ngx_slab_alloc_locked(zone->shpool, size);
        if (node == NULL) {
            ngx_shmtx_unlock(&zone->shpool->mutex);
            return NGX_ERROR;
        }
    }

    node->key = hash;

    rln = (ngx_http_rate_limit_node_t *) &node->color;

    rln->len = (u_short) key->len;
    rln->tat_us = d->tat_us;
    ngx_memcpy(rln->data, key->data, key->len);

    ngx_rbtree_insert(&zone->sh->rbtree, node);
    ngx_queue_insert_head(&zone->sh->queue, &rln->queue);

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


void
ngx_http_rate_limit_shm_refund(ngx_http_rate_limit_zone_t *zone,
    ngx_str_t *key, ngx_uint_t cost, int64_t now_us)
{
    uint32_t                     hash;
    ngx_http_rate_limit_node_t  *rln;

    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    rln = ngx_http_rate_limit_lookup(zone, key, hash);

    if (rln) {
        rln->tat_us = ngx_http_rate_limit_refund(&zone->params, rln->tat_us,
                                                 now_us, cost);
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);
}
