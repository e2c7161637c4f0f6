
/*
 * The store of a rate_limit_zone: what the workers of one node share about
 * a zone, laid out by the core in shared memory that the host allocates.
 * It holds, in one hash table of fixed-size slots:
 *   - the local buckets (backend=local, and degraded mode), forgotten in
 *     LRU order when the zone fills, as limit_req forgets its oldest;
 *   - the cache of Redis's rejections, until the time Redis gave;
 *   - the per-client limits synced from PostgreSQL (rows), with the
 *     tombstones of the bucket API's deletes;
 *   - the policy file's limits;
 *   - the keys whose cost could never fit, logged in the last minute;
 * and the zone's counters.  Every lookup is O(1): a seeded hash picks one
 * chain of a table with as many chains as slots, whatever the number of
 * entries.  A key longer than its slot's room goes on in more slots, so
 * keys are compared whole, never by hash alone.
 *
 * Locking: the host's lock (rl_store_t.lock), which must survive a worker
 * killed while holding it; nginx's slab-pool mutex does, as the master
 * force-unlocks it.  The next holder then finds what the killed one left
 * half done: no walk of a chain or a list goes beyond the slots' number of
 * steps nor follows a link out of the slots handed out, so that it ends,
 * at worst forgetting entries.  The counters of entries and the zone's counters are
 * lock-free atomics, so that a zone holding no rows or rejections costs a
 * check no lock.
 *
 * Names start with rl_store_.  No exception crosses this boundary.
 */

#ifndef _RL_STORE_H_INCLUDED_
#define _RL_STORE_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rate_limit_verdict.h"


#ifdef __cplusplus
extern "C" {
#endif


#define RL_STORE_OK              0
/* no slot is left, even after forgetting what may be forgotten */
#define RL_STORE_FULL            1
/* RL_STORE_FULL, and the first time since a row last fitted: say it once */
#define RL_STORE_FULL_NEWLY      2


/* the store's shared part, in the host's shared memory; opaque */
typedef struct rl_store_shared_s  rl_store_shared_t;


/*
 * A process's handle of a store: plain, in the process's own memory, since
 * the functions' addresses differ between the processes of two reloads.
 * lock() and unlock() take lock_data.
 */
typedef struct {
    rl_store_shared_t           *shared;
    void                       (*lock)(void *lock_data);
    void                       (*unlock)(void *lock_data);
    void                        *lock_data;
} rl_store_t;


/* the seed of the store's hash: random, so clients cannot pick collisions */
#define RL_STORE_SEED_LEN        16

/*
 * Lays a new, empty store out in memory (bytes long, aligned to 8), which
 * the store then owns for its lifetime, reloads included.  NULL when bytes
 * cannot hold even a handful of slots.  The memory need not be zeroed.
 */
rl_store_shared_t *rl_store_layout(void *memory, size_t bytes,
    const unsigned char seed[RL_STORE_SEED_LEN])
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * A key as stored (at most NGX_HTTP_RATE_LIMIT_KEY_MAX bytes, see
 * ngx_http_rate_limit_encode_key()), with its hash, computed once by
 * rl_store_key() for every call about that key.  data must outlive them.
 * A longer key is never stored nor found: a take() of it decides as for a
 * key never seen and says RL_STORE_FULL.
 */
typedef struct {
    const unsigned char         *data;
    size_t                       len;
    uint32_t                     hash;
} rl_store_key_t;

void rl_store_key(const rl_store_t *store, const unsigned char *data,
    size_t len, rl_store_key_t *key)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* a per-client limit: as written, and as the arithmetic takes it */
typedef struct {
    ngx_http_rate_limit_rate_t   rate;
    ngx_http_rate_limit_params_t params;
} rl_store_limit_t;


/*
 * Local buckets.  take() decides a request of cost tokens and stores the
 * bucket's new state (a rejection too, when the state was read under
 * another limit; a rejection of a bucket never seen stores nothing).
 * RL_STORE_FULL: no room for a new bucket, even after forgetting as many
 * of the least recently used as its key needs (1 slot, more for a key
 * over 68 bytes), when the other kinds leave too few; d is decided still,
 * but nothing was stored.
 */
int rl_store_take(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, uint64_t cost, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* gives cost tokens back to a bucket, if it is held */
void rl_store_refund(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, uint64_t cost,
    int64_t now_us)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* a bucket's tokens now, taking none: for the bucket API */
void rl_store_peek(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The limit in force for key other than the zone's defaults: a row synced
 * from PostgreSQL, else an entry of the policy file.  Returns its source,
 * NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT when neither holds key (limit is left
 * as it is).  Takes no lock while the store holds no row and no policy.
 */
ngx_http_rate_limit_source_e rl_store_find_limit(const rl_store_t *store,
    const rl_store_key_t *key, rl_store_limit_t *limit)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The policy file's entries, replacing those the store held, all at once
 * under one hold of the lock, so that no check sees a half-loaded file.
 * Buckets count as room: the least recently used are forgotten, full or
 * not, as the entries need their slots.  RL_STORE_FULL: they do not fit
 * with the last eighth of the slots left to the buckets (the old entries'
 * slots count as free), and the store is left as it was (but for a store
 * whose counts a killed worker left off, which keeps the entries that
 * fitted).  A key given twice takes the last entry's limit.  No entries
 * in a store holding none changes nothing.
 */
typedef struct {
    rl_store_key_t               key;
    rl_store_limit_t             limit;
} rl_store_policy_entry_t;

int rl_store_policy_replace(const rl_store_t *store,
    const rl_store_policy_entry_t *entries, size_t n)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Which transactions a PostgreSQL snapshot (pg_current_snapshot()) saw:
 * all below xmin, none from xmax on, and in between all but those of xip.
 */
typedef struct {
    uint64_t                     xmin;
    uint64_t                     xmax;
    const uint64_t              *xip;
    size_t                       nxip;
} rl_store_snapshot_t;

/* 1 when a committed transaction txid is visible in snapshot, as
 * PostgreSQL's pg_visible_in_snapshot() says */
int rl_store_visible(const rl_store_snapshot_t *snapshot, uint64_t txid)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Rows.  The bucket API applies its own writes at once, and a sync whose
 * snapshot did not see such a write must not undo it: a row keeps the
 * API's transaction until a sync that saw it applies the row.  A row the
 * API deleted stays as a tombstone with the deletion's transaction, until
 * every later sync sees the deletion.  Rows and tombstones never take the
 * last eighth of the slots, which stays for the buckets that enforce them;
 * short of that they take the slots of the least recently used buckets,
 * which may be forgotten where a row's limit may not.
 *
 * row_write(): the bucket API's own write, committed by transaction txid;
 * limit NULL deletes.  RL_STORE_FULL(_NEWLY): the row did not fit (a
 * delete that finds no room for its tombstone is RL_STORE_OK: a sync
 * already running may restore the row then, as it would have anyway).
 */
int rl_store_row_write(const rl_store_t *store, const rl_store_key_t *key,
    const rl_store_limit_t *limit, uint64_t txid)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * A row as a sync read it in snapshot (limit NULL: deleted), by the full
 * sync numbered generation or an incremental one of it.  The bucket API's
 * last write of key stays when snapshot did not see it.
 */
int rl_store_row_sync(const rl_store_t *store, const rl_store_key_t *key,
    const rl_store_limit_t *limit, uint64_t generation,
    const rl_store_snapshot_t *snapshot)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * After full sync generation read every row: the rows it did not see were
 * deleted meanwhile, but for those the bucket API wrote after its
 * snapshot.  The store then counts generation as its last full sync, which
 * the bucket API's writes take as theirs.
 */
void rl_store_row_sweep(const rl_store_t *store, uint64_t generation,
    const rl_store_snapshot_t *snapshot)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the last full sync that swept the store (0: none yet) */
uint64_t rl_store_row_generation(const rl_store_t *store)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* once every later snapshot sees a deletion (below xmin), its tombstone
 * has done its work */
void rl_store_row_forget(const rl_store_t *store, uint64_t xmin)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The cache of Redis's rejections.  blocked() says whether Redis said a
 * moment ago that key has no token for a request of cost yet (interval_us
 * is one token's time, for each token beyond the first): then 1, with d
 * filled as a rejection, and the request needs no round trip.  Takes no
 * lock while the cache is empty.  A cached rejection no longer holds once
 * the limits change (a row, the policy, a reload: rl_store_limits_changed()).
 * block() remembers a rejection: no token before until_us, full at
 * full_us; a store without room does without (room as for a row: beside
 * the buckets' last eighth, their least recently used forgotten).
 */
int rl_store_blocked(const rl_store_t *store, const rl_store_key_t *key,
    uint64_t cost, int64_t interval_us, int64_t now_us,
    ngx_http_rate_limit_decision_t *d)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

void rl_store_block(const rl_store_t *store, const rl_store_key_t *key,
    int64_t until_us, int64_t full_us, int64_t now_us)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the zone's limits changed by a reload: the cached rejections are stale */
void rl_store_limits_changed(const rl_store_t *store)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Whether the log may say now that a request of key can never fit:
 * RL_STORE_NOFIT_NAME names the key, once a minute for each key across the
 * node's workers; RL_STORE_NOFIT_UNNAMED, once a minute for the zone,
 * stands for the keys beyond the RL_STORE_NOFIT_KEYS remembered, so that a
 * flood of keys cannot take the buckets' memory (a key is remembered in
 * room as for a row); RL_STORE_NOFIT_QUIET says nothing.
 */
#define RL_STORE_NOFIT_PERIOD_US  60000000
#define RL_STORE_NOFIT_KEYS       64

typedef enum {
    RL_STORE_NOFIT_QUIET = 0,
    RL_STORE_NOFIT_NAME,
    RL_STORE_NOFIT_UNNAMED
} rl_store_nofit_e;

rl_store_nofit_e rl_store_nofit(const rl_store_t *store,
    const rl_store_key_t *key, int64_t now_us)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* the zone's counters, lock-free: one request, and its outcome */
void rl_store_count(const rl_store_t *store, rl_verdict_outcome_e outcome)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


typedef struct {
    uint64_t                     requests;
    uint64_t                     outcomes[RL_VERDICT_OUTCOMES];
    uint64_t                     cached;        /* rejections served */
    uint64_t                     rows;          /* tombstones not counted */
    uint64_t                     policy;
    uint64_t                     buckets;
    uint64_t                     blocked;
    uint64_t                     slots;         /* in all */
    uint64_t                     free_slots;
    uint64_t                     slot_bytes;    /* a slot, its chain head
                                                   included */
    uint64_t                     bytes;         /* laid out, in all */
} rl_store_stats_t;

/*
 * Memory: bytes is what rl_store_layout() laid out (at most what it was
 * given): the header, then one chain head and one slot for each of slots.
 * Every slot costs slot_bytes, whether in use or not, so the bytes in use
 * are (slots - free_slots) * slot_bytes.  An entry takes one slot, and
 * extension slots when its key is longer than the room its kind leaves in
 * one: 68 bytes for a bucket, 32 for a row or a tombstone, 48 for a
 * policy entry, 56 for a cached rejection, 72 for a nofit key; each
 * extension holds 92 bytes more (the first slot then keeps 4 bytes less).
 */

/* the counters and the occupancy, read without the lock (each value is
 * exact, their sum a moment's picture) */
void rl_store_stats(const rl_store_t *store, rl_store_stats_t *stats)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * 1 when the store is consistent: every slot is held by exactly one entry
 * or extension, or is free; each entry is found by its key; the lists and
 * the counts agree.  O(slots), under the lock: for tests and the fuzzer.
 */
int rl_store_check(const rl_store_t *store)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_STORE_H_INCLUDED_ */
