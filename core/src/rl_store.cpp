/*
 * The zone's store (rl_store.h): one hash table of fixed-size slots in the
 * host's shared memory, laid out as
 *
 *   [ header | chain heads: uint32 x nslots | slots: 96 bytes x nslots ]
 *
 * Every kind of entry lives in the same table and the same slots, so that
 * what one kind frees another may take.  Slots are named by index, 1 to
 * nslots (0: none), never by address: the memory holds no pointer.  A slot
 * never handed out yet lies beyond the high-water mark, so that laying a
 * store out writes only its header and chain heads; a slot handed back
 * goes to the free list.
 *
 * An entry's slot holds a 16-byte head (its chain link, its list links,
 * its key's length and kind, and 16 bits of its hash), the kind's payload,
 * and then as much of the key as fits.  A longer key gives the first 4
 * bytes of that room to the index of an extension slot, which holds the
 * next extension's index and 92 bytes more of the key.
 */

#include <rl_store.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>


namespace {

enum Kind : unsigned {
    kind_bucket = 1,
    kind_row,               /* a tombstone too, by its flag */
    kind_policy,
    kind_blocked,
    kind_nofit,
    kinds
};

/* the lists that order the entries of each kind, by index */
enum ListId : unsigned {
    list_lru = 0,           /* buckets, the most recently used first */
    list_rows,              /* every row, for the sweep */
    list_tombstones,
    list_policy,            /* for policy_replace() to drop them all */
    list_blocked,           /* the most recently blocked first */
    list_nofit,             /* the most recently logged first */
    lists
};

struct Bucket {
    int64_t                 tat_us;
    uint32_t                token_code;
    unsigned char           key[68];
};

struct Row {
    rl_store_limit_t        limit;
    uint64_t                generation;
    uint64_t                txid;           /* 0: as synced */
    unsigned char           key[32];
};

struct Policy {
    rl_store_limit_t        limit;
    unsigned char           key[48];
};

struct Blocked {
    int64_t                 until_us;
    int64_t                 full_us;
    uint64_t                version;        /* of the zone's limits */
    unsigned char           key[56];
};

struct Nofit {
    int64_t                 logged_us;
    unsigned char           key[72];
};

/* meta: the key's length (0 to 256: 9 bits), the kind, the tombstone */
constexpr unsigned meta_len_mask = 0x1ff;
constexpr unsigned meta_kind_shift = 9;
constexpr unsigned meta_tombstone = 1u << 12;
constexpr unsigned meta_match_mask = meta_tombstone - 1;

static_assert(NGX_HTTP_RATE_LIMIT_KEY_MAX <= meta_len_mask,
              "a key's length fits its 9 bits");
static_assert(kinds <= (1u << (12 - meta_kind_shift)),
              "a kind fits its 3 bits");

struct Entry {
    uint32_t                chain;          /* next in the chain, or free */
    uint32_t                prev;           /* in the entry's list */
    uint32_t                next;
    uint16_t                meta;
    /* the hash's low bits: the chain was picked by its high ones */
    uint16_t                tag;
    union {
        Bucket              bucket;
        Row                 row;
        Policy              policy;
        Blocked             blocked;
        Nofit               nofit;
    } u;
};

constexpr size_t slot_size = 96;
constexpr size_t extension_room = slot_size - sizeof(uint32_t);

struct Extension {
    uint32_t                next;
    unsigned char           key[extension_room];
};

union Slot {
    Entry                   entry;
    Extension               extension;
};

static_assert(sizeof(Slot) == slot_size,
              "a slot is 96 bytes: a row or a bucket of a key of up to 32 "
              "bytes takes one slot and one chain head, 100 bytes");
static_assert(sizeof(Bucket) == sizeof(Row) && sizeof(Row) == sizeof(Policy)
              && sizeof(Policy) == sizeof(Blocked)
              && sizeof(Blocked) == sizeof(Nofit),
              "every payload fills its slot to the end with key bytes");
static_assert(sizeof(rl_store_limit_t) == 32, "a limit is 32 bytes");

/* where each kind's key begins in its slot */
constexpr size_t key_offset[kinds] = {
    0,
    offsetof(Entry, u.bucket.key),
    offsetof(Entry, u.row.key),
    offsetof(Entry, u.policy.key),
    offsetof(Entry, u.blocked.key),
    offsetof(Entry, u.nofit.key),
};

constexpr ListId list_of_kind[kinds] = {
    list_lru, list_lru, list_rows, list_policy, list_blocked, list_nofit
};

struct List {
    uint32_t                head;
    uint32_t                tail;
};

using Count = std::atomic<uint32_t>;
using Counter = std::atomic<uint64_t>;

static_assert(Count::is_always_lock_free && Counter::is_always_lock_free,
              "the counters are read without the lock, by any process");

constexpr uint64_t store_magic = 0x32766f74736c72ULL;   /* "rlstov2" */

/* the most slots an entry takes: a row of the longest key */
constexpr size_t max_slots = 4;

/* a store with fewer slots has no eighth to keep */
constexpr size_t min_slots = 8;

/* expiry and unblocking per call: bounded, so a call stays O(1) */
constexpr unsigned expire_per_take = 3;
constexpr unsigned unblock_per_block = 2;

}  // namespace


struct rl_store_shared_s {
    uint64_t                magic;
    uint32_t                slot_bytes;
    uint32_t                nslots;
    uint64_t                chains_offset;  /* from the header */
    uint64_t                slots_offset;
    uint64_t                bytes;          /* laid out */
    uint64_t                seed[2];

    uint32_t                free_head;
    uint32_t                high_water;     /* slots ever handed out */
    List                    list[lists];

    uint64_t                pg_generation;
    uint64_t                limits_version;
    int64_t                 nofit_unnamed_us;
    uint32_t                nnofit;
    uint32_t                rows_full;      /* said since a row last fitted */
    uint32_t                policy_slots;
    uint32_t                bucket_slots;   /* extensions included */

    /* written under the lock, read without it */
    Count                   used;           /* slots, extensions included */
    Count                   nbuckets;
    Count                   nrows;
    Count                   npolicy;
    Count                   nblocked;

    Counter                 requests;
    Counter                 outcomes[RL_VERDICT_OUTCOMES];
    Counter                 cached;
};


namespace {

using Shared = rl_store_shared_s;

constexpr auto relaxed = std::memory_order_relaxed;


void add(Count &count, int32_t n) noexcept
{
    count.store(count.load(relaxed) + n, relaxed);
}


/*
 * SipHash-1-3 (Aumasson and Bernstein), keyed with the store's seed.  Not
 * OpenSSL's: its EVP_MAC API allocates a context per call, too slow once
 * per request.  Clients choose keys: an unkeyed hash would let them pile
 * every key into one chain.
 */
uint64_t rotl(uint64_t x, int b) noexcept
{
    return (x << b) | (x >> (64 - b));
}


struct Sip {
    uint64_t v0, v1, v2, v3;

    void round() noexcept
    {
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);
    }

    void absorb(uint64_t m) noexcept
    {
        v3 ^= m;
        round();
        v0 ^= m;
    }
};


uint64_t load_le64(const unsigned char *p) noexcept
{
    uint64_t v;

    std::memcpy(&v, p, sizeof(v));

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif

    return v;
}


uint64_t siphash13(const uint64_t seed[2], const unsigned char *data,
    size_t len) noexcept
{
    Sip s { seed[0] ^ 0x736f6d6570736575ULL, seed[1] ^ 0x646f72616e646f6dULL,
            seed[0] ^ 0x6c7967656e657261ULL, seed[1] ^ 0x7465646279746573ULL };

    const unsigned char *end = data + (len & ~size_t(7));

    for (; data != end; data += 8) {
        s.absorb(load_le64(data));
    }

    uint64_t last = uint64_t(len) << 56;

    switch (len & 7) {
    case 7: last |= uint64_t(data[6]) << 48; [[fallthrough]];
    case 6: last |= uint64_t(data[5]) << 40; [[fallthrough]];
    case 5: last |= uint64_t(data[4]) << 32; [[fallthrough]];
    case 4: last |= uint64_t(data[3]) << 24; [[fallthrough]];
    case 3: last |= uint64_t(data[2]) << 16; [[fallthrough]];
    case 2: last |= uint64_t(data[1]) << 8; [[fallthrough]];
    case 1: last |= uint64_t(data[0]);
    }

    s.absorb(last);

    s.v2 ^= 0xff;
    s.round();
    s.round();
    s.round();

    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}


/* the store seen by one call, which holds the lock where it must */
class Store {
public:
    explicit Store(Shared *sh) noexcept
        : sh_(*sh),
          chains_(reinterpret_cast<uint32_t *>(
              reinterpret_cast<char *>(sh) + sh->chains_offset)),
          slots_(reinterpret_cast<Slot *>(
              reinterpret_cast<char *>(sh) + sh->slots_offset))
    {}

    Shared &sh() noexcept { return sh_; }

    Entry &entry(uint32_t i) noexcept { return slots_[i - 1].entry; }

    /* an index a link may hold: a killed holder may have left any */
    bool valid(uint32_t i) const noexcept
    {
        return i - 1 < sh_.high_water;
    }

    uint32_t free_slots() const noexcept
    {
        const uint32_t used = sh_.used.load(relaxed);

        return used < sh_.nslots ? sh_.nslots - used : 0;
    }

    /*
     * Whether need slots more of what is not a bucket (freed: slots of it
     * about to go) leave the buckets the last eighth.  Buckets count as
     * room: they may be forgotten, a row's limit may not.
     */
    bool leaves_reserve(uint64_t need, uint64_t freed = 0) const noexcept
    {
        const uint64_t held = uint64_t(sh_.bucket_slots) + freed;
        const uint64_t used = sh_.used.load(relaxed);
        const uint64_t others = used > held ? used - held : 0;

        return (others + need) * 8 <= uint64_t(sh_.nslots) * 7;
    }

    static constexpr size_t slots_for(unsigned kind, size_t len) noexcept
    {
        const size_t room = slot_size - key_offset[kind];

        if (len <= room) {
            return 1;
        }

        return 1 + (len - (room - sizeof(uint32_t)) + extension_room - 1)
                   / extension_room;
    }

    uint32_t find(unsigned kind, const rl_store_key_t &key) noexcept;
    uint32_t find_limit(const rl_store_key_t &key) noexcept;
    uint32_t insert(unsigned kind, const rl_store_key_t &key) noexcept;
    uint32_t insert_beside_buckets(unsigned kind,
        const rl_store_key_t &key) noexcept;
    bool make_room(size_t need) noexcept;
    size_t key_of(uint32_t i, unsigned char *out) noexcept;
    void remove(uint32_t i) noexcept;

    uint32_t hash(const unsigned char *data, size_t len) const noexcept
    {
        const uint64_t h = siphash13(sh_.seed, data, len);
        return uint32_t(h ^ (h >> 32));
    }

    void push(ListId l, uint32_t i) noexcept;
    void unlink(ListId l, uint32_t i) noexcept;

    /* inline, the hot path's: an entry with a neighbour before it and a
     * head to go before, as a list a killed holder left whole has */
    void to_front(ListId l, uint32_t i) noexcept
    {
        List &list = sh_.list[l];
        Entry &e = entry(i);
        const uint32_t prev = e.prev;
        const uint32_t next = e.next;

        if (list.head == i) {
            return;
        }

        if (!valid(prev) || !valid(list.head)) {
            unlink(l, i);
            push(l, i);
            return;
        }

        entry(prev).next = next;

        if (valid(next)) {
            entry(next).prev = prev;

        } else if (list.tail == i) {
            list.tail = prev;
        }

        e.prev = 0;
        e.next = list.head;
        entry(list.head).prev = i;
        list.head = i;
    }

    /* inline, the check that mostly finds nothing to do */
    void expire(int64_t now_us) noexcept
    {
        const uint32_t i = sh_.list[list_lru].tail;

        if (valid(i) && entry(i).u.bucket.tat_us <= now_us) {
            forget_lru(now_us);
        }
    }

    void forget_lru(int64_t now_us) noexcept;
    void forget_bucket(uint32_t i) noexcept;
    void unblock(int64_t now_us, unsigned n) noexcept;
    int row_put(uint32_t i, const rl_store_key_t &key,
        const rl_store_limit_t &limit, uint64_t generation,
        uint64_t txid) noexcept;
    void row_remove(uint32_t i) noexcept;

    bool check() noexcept;

private:
    uint32_t &chain_of(uint32_t hash) noexcept
    {
        return chains_[(uint64_t(hash) * sh_.nslots) >> 32];
    }

    /* inline, the check of every lookup; a long key's rest is compared
     * out of line */
    bool matches(const Entry &e, unsigned kind,
        const rl_store_key_t &key) noexcept
    {
        if ((e.meta & meta_match_mask) != (key.len | kind << meta_kind_shift)
            || e.tag != uint16_t(key.hash))
        {
            return false;
        }

        const unsigned char *stored =
            reinterpret_cast<const unsigned char *>(&e) + key_offset[kind];

        if (key.len > slot_size - key_offset[kind]) {
            return matches_long(stored, kind, key);
        }

        /* an empty key's data may be NULL, which memcmp() may not take */
        return key.len == 0 || std::memcmp(stored, key.data, key.len) == 0;
    }

    bool matches_long(const unsigned char *stored, unsigned kind,
        const rl_store_key_t &key) noexcept;
    uint32_t take_slot() noexcept;
    void give_slot(uint32_t i) noexcept;

    static ListId list_of(const Entry &e) noexcept
    {
        return (e.meta & meta_tombstone)
               ? list_tombstones
               : list_of_kind[(e.meta & meta_match_mask) >> meta_kind_shift];
    }

    Shared   &sh_;
    uint32_t *chains_;
    Slot     *slots_;
};


/* a key longer than its first slot's room, from stored on */
bool Store::matches_long(const unsigned char *stored, unsigned kind,
    const rl_store_key_t &key) noexcept
{
    const size_t room = slot_size - key_offset[kind];
    uint32_t next;
    std::memcpy(&next, stored, sizeof(next));

    size_t part = room - sizeof(next);

    if (std::memcmp(stored + sizeof(next), key.data, part) != 0) {
        return false;
    }

    for (size_t done = part; done < key.len; done += part) {
        if (!valid(next)) {
            return false;
        }

        const Extension &x = slots_[next - 1].extension;

        part = key.len - done < extension_room ? key.len - done
                                               : extension_room;

        if (std::memcmp(x.key, key.data + done, part) != 0) {
            return false;
        }

        next = x.next;
    }

    return true;
}


uint32_t Store::find(unsigned kind, const rl_store_key_t &key) noexcept
{
    if (key.len > NGX_HTTP_RATE_LIMIT_KEY_MAX) {
        return 0;
    }

    uint32_t i = chain_of(key.hash);

    for (uint32_t n = sh_.nslots; valid(i) && n--; i = entry(i).chain) {
        if (matches(entry(i), kind, key)) {
            return i;
        }
    }

    return 0;
}


/* the row of key, else its policy entry: one walk finds either */
uint32_t Store::find_limit(const rl_store_key_t &key) noexcept
{
    uint32_t found = 0;

    if (key.len > NGX_HTTP_RATE_LIMIT_KEY_MAX) {
        return 0;
    }

    uint32_t i = chain_of(key.hash);

    for (uint32_t n = sh_.nslots; valid(i) && n--; i = entry(i).chain) {
        const Entry &e = entry(i);

        if (matches(e, kind_row, key)) {
            if (!(e.meta & meta_tombstone)) {
                return i;
            }

        } else if (!found && matches(e, kind_policy, key)) {
            found = i;
        }
    }

    return found;
}


/* 0 when none is left, whatever the counts say: a killed holder may have
 * left them off */
uint32_t Store::take_slot() noexcept
{
    uint32_t i = sh_.free_head;

    if (valid(i)) {
        sh_.free_head = entry(i).chain;

    } else if (sh_.high_water < sh_.nslots) {
        sh_.free_head = 0;
        i = ++sh_.high_water;

    } else {
        sh_.free_head = 0;
        return 0;
    }

    add(sh_.used, 1);

    return i;
}


void Store::give_slot(uint32_t i) noexcept
{
    if (!valid(i)) {
        return;
    }

    entry(i).chain = sh_.free_head;
    sh_.free_head = i;
    add(sh_.used, -1);
}


/* a new entry of key in its chain, in no list yet; 0 when no room */
uint32_t Store::insert(unsigned kind, const rl_store_key_t &key) noexcept
{
    const size_t need = slots_for(kind, key.len);

    if (key.len > NGX_HTTP_RATE_LIMIT_KEY_MAX || need > free_slots()) {
        return 0;
    }

    uint32_t taken[max_slots];

    for (size_t n = 0; n < need; n++) {
        taken[n] = take_slot();

        if (taken[n] == 0) {
            while (n--) {
                give_slot(taken[n]);
            }

            return 0;
        }
    }

    const uint32_t i = taken[0];
    Entry &e = entry(i);

    e.meta = uint16_t(key.len | kind << meta_kind_shift);
    e.tag = uint16_t(key.hash);

    unsigned char *stored = reinterpret_cast<unsigned char *>(&e)
                            + key_offset[kind];
    const size_t room = slot_size - key_offset[kind];

    if (key.len <= room) {
        if (key.len) {
            std::memcpy(stored, key.data, key.len);
        }

    } else {
        size_t part = room - sizeof(uint32_t);
        unsigned char *link = stored;

        std::memcpy(stored + sizeof(uint32_t), key.data, part);

        const uint32_t *x_next = taken + 1;

        for (size_t done = part; done < key.len; done += part) {
            const uint32_t x = *x_next++;
            Extension &ext = slots_[x - 1].extension;

            std::memcpy(link, &x, sizeof(x));
            part = key.len - done < extension_room ? key.len - done
                                                   : extension_room;
            std::memcpy(ext.key, key.data + done, part);
            link = reinterpret_cast<unsigned char *>(&ext.next);
        }

        const uint32_t none = 0;
        std::memcpy(link, &none, sizeof(none));
    }

    uint32_t &head = chain_of(key.hash);
    e.chain = head;
    head = i;

    return i;
}


/*
 * insert() of what is not a bucket: when the buckets keep their last
 * eighth, the least recently used of them make room.  A zone full of
 * buckets is their normal state, as with limit_req, and no reason for a
 * row's limit to go unenforced.
 */
uint32_t Store::insert_beside_buckets(unsigned kind,
    const rl_store_key_t &key) noexcept
{
    const size_t need = slots_for(kind, key.len);

    if (key.len > NGX_HTTP_RATE_LIMIT_KEY_MAX || !leaves_reserve(need)) {
        return 0;
    }

    make_room(need);

    return insert(kind, key);
}


/* forgets the least recently used buckets, full or not, until need slots
 * are free; false when they are not */
bool Store::make_room(size_t need) noexcept
{
    for (uint32_t n = sh_.nslots; free_slots() < need && n--; ) {
        const uint32_t i = sh_.list[list_lru].tail;

        if (!valid(i)) {
            return false;
        }

        forget_bucket(i);
    }

    return free_slots() >= need;
}


/* copies entry i's key into out, which holds NGX_HTTP_RATE_LIMIT_KEY_MAX
 * bytes; returns its length */
size_t Store::key_of(uint32_t i, unsigned char *out) noexcept
{
    const Entry &e = entry(i);
    const unsigned kind = (e.meta & meta_match_mask) >> meta_kind_shift;
    const size_t len = e.meta & meta_len_mask;
    const size_t room = slot_size - key_offset[kind];
    const unsigned char *stored =
        reinterpret_cast<const unsigned char *>(&e) + key_offset[kind];

    if (len <= room) {
        std::memcpy(out, stored, len);
        return len;
    }

    uint32_t next;
    std::memcpy(&next, stored, sizeof(next));

    size_t part = room - sizeof(next);
    std::memcpy(out, stored + sizeof(next), part);

    for (size_t done = part; done < len; done += part) {
        if (!valid(next)) {
            std::memset(out + done, 0, len - done);
            break;
        }

        const Extension &x = slots_[next - 1].extension;

        part = len - done < extension_room ? len - done : extension_room;
        std::memcpy(out + done, x.key, part);
        next = x.next;
    }

    return len;
}


/*
 * Drops entry i: from its chain, its list and its slots.  The slot keeps
 * 16 bits of the hash, not the whole, for a row and a key of 32 bytes to
 * fit in one: the chain is found by hashing the key again, once for an
 * entry's life, where its lookups are many.  The chain goes first: a
 * holder killed between the two leaves an entry no lookup finds, which
 * its list's next walk drops again; the other way round would leave one
 * found forever that no walk ever drops.
 */
void Store::remove(uint32_t i) noexcept
{
    Entry &e = entry(i);
    const unsigned kind = (e.meta & meta_match_mask) >> meta_kind_shift;
    const size_t len = e.meta & meta_len_mask;
    const size_t room = slot_size - key_offset[kind];

    unsigned char key[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    key_of(i, key);

    uint32_t *link = &chain_of(hash(key, len));

    for (uint32_t n = sh_.nslots; valid(*link) && n--;
         link = &entry(*link).chain)
    {
        if (*link == i) {
            *link = e.chain;
            break;
        }
    }

    unlink(list_of(e), i);

    if (len > room) {
        uint32_t x;
        std::memcpy(&x, reinterpret_cast<unsigned char *>(&e)
                        + key_offset[kind], sizeof(x));

        for (size_t n = slots_for(kind, len) - 1; n-- && valid(x); ) {
            const uint32_t next = slots_[x - 1].extension.next;
            give_slot(x);
            x = next;
        }
    }

    give_slot(i);
}


void Store::push(ListId l, uint32_t i) noexcept
{
    List &list = sh_.list[l];
    Entry &e = entry(i);
    const uint32_t head = valid(list.head) ? list.head : 0;

    e.prev = 0;
    e.next = head;

    if (head) {
        entry(head).prev = i;

    } else {
        list.tail = i;
    }

    list.head = i;
}


void Store::unlink(ListId l, uint32_t i) noexcept
{
    List &list = sh_.list[l];
    Entry &e = entry(i);
    const uint32_t prev = valid(e.prev) ? e.prev : 0;
    const uint32_t next = valid(e.next) ? e.next : 0;

    /* an end is moved only when it is i: an entry unlinked already, its
     * links zeroed, must not empty its list */
    if (prev) {
        entry(prev).next = next;

    } else if (list.head == i) {
        list.head = next;
    }

    if (next) {
        entry(next).prev = prev;

    } else if (list.tail == i) {
        list.tail = prev;
    }

    e.prev = 0;
    e.next = 0;
}

/* a bucket whose tat has passed is full, the same as no bucket at all, so
 * dropping it loses nothing */
void Store::forget_lru(int64_t now_us) noexcept
{
    for (unsigned n = 0; n < expire_per_take; n++) {
        const uint32_t i = sh_.list[list_lru].tail;

        if (!valid(i) || entry(i).u.bucket.tat_us > now_us) {
            return;
        }

        forget_bucket(i);
    }
}


void Store::forget_bucket(uint32_t i) noexcept
{
    const uint32_t slots =
        uint32_t(slots_for(kind_bucket, entry(i).meta & meta_len_mask));

    remove(i);
    add(sh_.nbuckets, -1);
    sh_.bucket_slots -= slots < sh_.bucket_slots ? slots : sh_.bucket_slots;
}


/* drops up to n rejections that have run out, or that older limits gave,
 * the oldest first */
void Store::unblock(int64_t now_us, unsigned n) noexcept
{
    while (n--) {
        const uint32_t i = sh_.list[list_blocked].tail;

        if (!valid(i)) {
            return;
        }

        const Blocked &b = entry(i).u.blocked;

        if (b.until_us > now_us && b.version == sh_.limits_version) {
            return;
        }

        remove(i);
        add(sh_.nblocked, -1);
    }
}


/*
 * Makes entry i, or a new entry when i is 0, the row of key.  Rows may not
 * take the last eighth of the slots, which stays for the buckets that
 * enforce them and the defaults.  A full store keeps the rows it has and
 * says so once (RL_STORE_FULL_NEWLY), until a row fits again.
 */
int Store::row_put(uint32_t i, const rl_store_key_t &key,
    const rl_store_limit_t &limit, uint64_t generation, uint64_t txid) noexcept
{
    bool was_row = false;

    if (i == 0) {
        i = insert_beside_buckets(kind_row, key);

        if (i == 0) {
            if (sh_.rows_full) {
                return RL_STORE_FULL;
            }

            sh_.rows_full = 1;
            return RL_STORE_FULL_NEWLY;
        }

    } else if (entry(i).meta & meta_tombstone) {
        unlink(list_tombstones, i);
        entry(i).meta &= ~meta_tombstone;

    } else {
        was_row = true;
    }

    if (!was_row) {
        push(list_rows, i);
        add(sh_.nrows, 1);
        sh_.rows_full = 0;
    }

    Entry &e = entry(i);

    e.u.row.limit = limit;
    e.u.row.generation = generation;
    e.u.row.txid = txid;
    sh_.limits_version++;

    return RL_STORE_OK;
}


/* a row or a tombstone */
void Store::row_remove(uint32_t i) noexcept
{
    if (!(entry(i).meta & meta_tombstone)) {
        add(sh_.nrows, -1);
        sh_.rows_full = 0;
        sh_.limits_version++;
    }

    remove(i);
}


/*
 * Walks every list, chain and free slot: each slot is in exactly one
 * place, and the counts agree with what the lists hold.
 */
bool Store::check() noexcept
{
    const uint32_t n = sh_.nslots;

    if (sh_.magic != store_magic || sh_.slot_bytes != slot_size
        || sh_.high_water > n)
    {
        return false;
    }

    uint64_t seen = 0;
    uint32_t counts[lists] = {};
    uint32_t policy_slots = 0;
    uint32_t bucket_slots = 0;
    uint32_t used = 0;

    for (unsigned l = 0; l < lists; l++) {
        uint32_t prev = 0;

        for (uint32_t i = sh_.list[l].head; i; i = entry(i).next) {
            const Entry &e = entry(i);
            const unsigned kind = (e.meta & meta_match_mask)
                                  >> meta_kind_shift;

            if (i > sh_.high_water || e.prev != prev || kind == 0
                || kind >= kinds || list_of(e) != l
                || (e.meta & meta_len_mask) > NGX_HTTP_RATE_LIMIT_KEY_MAX
                || ++counts[l] > n)
            {
                return false;
            }

            unsigned char key[NGX_HTTP_RATE_LIMIT_KEY_MAX];
            const size_t len = key_of(i, key);
            const rl_store_key_t k { key, len, hash(key, len) };

            /* findable by its key: the first of its kind in its chain */
            if (e.tag != uint16_t(k.hash) || find(kind, k) != i) {
                return false;
            }

            const uint32_t slots = uint32_t(slots_for(kind, len));
            used += slots;

            if (kind == kind_policy) {
                policy_slots += slots;

            } else if (kind == kind_bucket) {
                bucket_slots += slots;
            }

            prev = i;
        }

        if (sh_.list[l].tail != prev) {
            return false;
        }
    }

    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t c = chains_[i]; c; c = entry(c).chain) {
            if (c > sh_.high_water || ++seen > n) {
                return false;
            }
        }
    }

    uint32_t nfree = 0;

    for (uint32_t i = sh_.free_head; i; i = entry(i).chain) {
        if (i > sh_.high_water || ++nfree > n) {
            return false;
        }
    }

    uint32_t entries = 0;

    for (unsigned l = 0; l < lists; l++) {
        entries += counts[l];
    }

    return seen == entries
           && used == sh_.used.load(relaxed)
           && used + nfree + (n - sh_.high_water) == n
           && policy_slots == sh_.policy_slots
           && bucket_slots == sh_.bucket_slots
           && counts[list_lru] == sh_.nbuckets.load(relaxed)
           && counts[list_rows] == sh_.nrows.load(relaxed)
           && counts[list_policy] == sh_.npolicy.load(relaxed)
           && counts[list_blocked] == sh_.nblocked.load(relaxed)
           && counts[list_nofit] == sh_.nnofit;
}


static_assert(max_slots == Store::slots_for(kind_row,
                                            NGX_HTTP_RATE_LIMIT_KEY_MAX),
              "a row of the longest key takes the most slots");


/* holds the host's lock for a scope */
class Hold {
public:
    explicit Hold(const rl_store_t *store) noexcept : store_(store)
    {
        store_->lock(store_->lock_data);
    }

    ~Hold() { store_->unlock(store_->lock_data); }

    Hold(const Hold &) = delete;
    Hold &operator=(const Hold &) = delete;

private:
    const rl_store_t *store_;
};


size_t align_up(size_t n, size_t to) noexcept
{
    return (n + to - 1) / to * to;
}


/* where the chain heads and the slots of nslots begin, and their end */
struct Extent {
    size_t chains;
    size_t slots;
    size_t end;
};

Extent extent_of(size_t nslots) noexcept
{
    Extent x;

    x.chains = align_up(sizeof(Shared), 64);
    x.slots = align_up(x.chains + nslots * sizeof(uint32_t), 64);
    x.end = x.slots + nslots * slot_size;

    return x;
}

}  // namespace


extern "C" rl_store_shared_t *
rl_store_layout(void *memory, size_t bytes,
    const unsigned char seed[RL_STORE_SEED_LEN]) noexcept
{
    const size_t header = extent_of(0).slots;

    if (memory == nullptr
        || reinterpret_cast<uintptr_t>(memory) % alignof(Shared) != 0
        || bytes < header)
    {
        return nullptr;
    }

    /* at most a slot too many, for the alignment; index 0 is none, and the
     * chain pick multiplies 32 bits by nslots */
    uint64_t nslots = (bytes - header) / (slot_size + sizeof(uint32_t));

    if (nslots > UINT32_MAX - 1) {
        nslots = UINT32_MAX - 1;
    }

    while (nslots >= min_slots && extent_of(nslots).end > bytes) {
        nslots--;
    }

    if (nslots < min_slots) {
        return nullptr;
    }

    const Extent x = extent_of(nslots);
    Shared *sh = new (memory) Shared();

    sh->magic = store_magic;
    sh->slot_bytes = slot_size;
    sh->nslots = uint32_t(nslots);
    sh->chains_offset = x.chains;
    sh->slots_offset = x.slots;
    sh->bytes = x.end;
    sh->seed[0] = load_le64(seed);
    sh->seed[1] = load_le64(seed + 8);
    sh->nofit_unnamed_us = -RL_STORE_NOFIT_PERIOD_US;

    std::memset(static_cast<char *>(memory) + x.chains, 0,
                nslots * sizeof(uint32_t));

    return sh;
}


extern "C" void
rl_store_key(const rl_store_t *store, const unsigned char *data, size_t len,
    rl_store_key_t *key) noexcept
{
    const uint64_t h = siphash13(store->shared->seed, data, len);

    key->data = data;
    key->len = len;
    key->hash = uint32_t(h ^ (h >> 32));
}


extern "C" int
rl_store_take(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, uint64_t cost, int64_t now_us,
    ngx_http_rate_limit_decision_t *d) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    s.expire(now_us);

    uint32_t i = s.find(kind_bucket, *key);

    if (i) {
        Bucket &b = s.entry(i).u.bucket;
        const ngx_http_rate_limit_state_t stored { b.tat_us, b.token_code };

        ngx_http_rate_limit_decide(params, &stored, now_us, cost, d);

        /* a rejection too, when the bucket was read under another limit */
        b.tat_us = d->state.tat_us;
        b.token_code = d->state.token_code;

        s.to_front(list_lru, i);

        return RL_STORE_OK;
    }

    ngx_http_rate_limit_decide(params, nullptr, now_us, cost, d);

    if (!d->allowed) {
        /* a rejection leaves a full bucket as it was: nothing to store */
        return RL_STORE_OK;
    }

    i = s.insert(kind_bucket, *key);

    const size_t slots = Store::slots_for(kind_bucket, key->len);

    /* a key too long to store is no reason to forget another bucket; one
     * that needs more slots than the buckets hold, neither */
    if (i == 0 && key->len <= NGX_HTTP_RATE_LIMIT_KEY_MAX
        && s.free_slots() + s.sh().bucket_slots >= slots)
    {
        /* under memory pressure the least recently used go even if not
         * full, as with limit_req */
        s.make_room(slots);

        i = s.insert(kind_bucket, *key);
    }

    if (i == 0) {
        return RL_STORE_FULL;
    }

    Bucket &b = s.entry(i).u.bucket;
    b.tat_us = d->state.tat_us;
    b.token_code = d->state.token_code;

    s.push(list_lru, i);
    add(s.sh().nbuckets, 1);
    s.sh().bucket_slots += uint32_t(slots);

    return RL_STORE_OK;
}


extern "C" void
rl_store_refund(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, uint64_t cost,
    int64_t now_us) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    const uint32_t i = s.find(kind_bucket, *key);

    if (i) {
        Bucket &b = s.entry(i).u.bucket;
        const ngx_http_rate_limit_state_t stored { b.tat_us, b.token_code };
        const ngx_http_rate_limit_state_t state =
            ngx_http_rate_limit_refund(params, &stored, now_us, cost);

        b.tat_us = state.tat_us;
        b.token_code = state.token_code;
    }
}


extern "C" void
rl_store_peek(const rl_store_t *store, const rl_store_key_t *key,
    const ngx_http_rate_limit_params_t *params, int64_t now_us,
    ngx_http_rate_limit_decision_t *d) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    const uint32_t i = s.find(kind_bucket, *key);
    ngx_http_rate_limit_state_t stored {};

    if (i) {
        stored.tat_us = s.entry(i).u.bucket.tat_us;
        stored.token_code = s.entry(i).u.bucket.token_code;
    }

    ngx_http_rate_limit_decide(params, i ? &stored : nullptr, now_us, 0, d);
}


extern "C" ngx_http_rate_limit_source_e
rl_store_find_limit(const rl_store_t *store, const rl_store_key_t *key,
    rl_store_limit_t *limit) noexcept
{
    Shared &sh = *store->shared;

    if (sh.nrows.load(relaxed) == 0 && sh.npolicy.load(relaxed) == 0) {
        return NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT;
    }

    Store s(&sh);
    Hold hold(store);

    const uint32_t i = s.find_limit(*key);

    if (i == 0) {
        return NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT;
    }

    const Entry &e = s.entry(i);

    if ((e.meta & meta_match_mask) >> meta_kind_shift == kind_row) {
        *limit = e.u.row.limit;
        return NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES;
    }

    *limit = e.u.policy.limit;
    return NGX_HTTP_RATE_LIMIT_SOURCE_YAML;
}


extern "C" int
rl_store_policy_replace(const rl_store_t *store,
    const rl_store_policy_entry_t *entries, size_t n) noexcept
{
    uint64_t need = 0;

    for (size_t k = 0; k < n; k++) {
        if (entries[k].key.len > NGX_HTTP_RATE_LIMIT_KEY_MAX) {
            return RL_STORE_FULL;
        }

        /* a key given twice is counted twice: the count errs on the safe
         * side */
        need += Store::slots_for(kind_policy, entries[k].key.len);
    }

    Store s(store->shared);
    Hold hold(store);
    Shared &sh = s.sh();

    if (n == 0 && sh.list[list_policy].head == 0) {
        return RL_STORE_OK;
    }

    if (!s.leaves_reserve(need, sh.policy_slots)) {
        return RL_STORE_FULL;
    }

    for (uint32_t left = sh.nslots;
         s.valid(sh.list[list_policy].head) && left--; )
    {
        s.remove(sh.list[list_policy].head);
    }

    sh.list[list_policy] = List {};
    s.make_room(need);

    uint32_t count = 0;
    uint32_t slots = 0;
    int rc = RL_STORE_OK;

    for (size_t k = 0; k < n; k++) {
        const rl_store_key_t &key = entries[k].key;

        /* the last of a key given twice holds, as a later line would */
        uint32_t i = s.find(kind_policy, key);

        if (i == 0) {
            i = s.insert(kind_policy, key);

            if (i == 0) {
                /* only counts a killed holder left off come here: keep
                 * what fitted */
                rc = RL_STORE_FULL;
                break;
            }

            s.push(list_policy, i);
            count++;
            slots += uint32_t(Store::slots_for(kind_policy, key.len));
        }

        s.entry(i).u.policy.limit = entries[k].limit;
    }

    sh.npolicy.store(count, relaxed);
    sh.policy_slots = slots;
    sh.limits_version++;

    return rc;
}


extern "C" int
rl_store_visible(const rl_store_snapshot_t *snapshot, uint64_t txid) noexcept
{
    if (txid < snapshot->xmin) {
        return 1;
    }

    if (txid >= snapshot->xmax) {
        return 0;
    }

    for (size_t k = 0; k < snapshot->nxip; k++) {
        if (snapshot->xip[k] == txid) {
            return 0;
        }
    }

    return 1;
}


extern "C" int
rl_store_row_write(const rl_store_t *store, const rl_store_key_t *key,
    const rl_store_limit_t *limit, uint64_t txid) noexcept
{
    Store s(store->shared);
    Hold hold(store);
    Shared &sh = s.sh();

    uint32_t i = s.find(kind_row, *key);
    const bool live = i && !(s.entry(i).meta & meta_tombstone);

    if (limit) {
        /* a full sync running may have seen the row already: it stays */
        const uint64_t generation =
            live && s.entry(i).u.row.generation > sh.pg_generation
            ? s.entry(i).u.row.generation : sh.pg_generation;

        return s.row_put(i, *key, *limit, generation, txid);
    }

    if (live) {
        s.unlink(list_rows, i);
        add(sh.nrows, -1);
        sh.rows_full = 0;
        sh.limits_version++;
        s.entry(i).meta |= meta_tombstone;

    } else if (i == 0) {
        i = s.insert_beside_buckets(kind_row, *key);

        if (i == 0) {
            /* no tombstone: a sync already running may restore the row */
            return RL_STORE_OK;
        }

        s.entry(i).meta |= meta_tombstone;

    } else {
        s.unlink(list_tombstones, i);
    }

    s.entry(i).u.row.txid = txid;
    s.push(list_tombstones, i);

    return RL_STORE_OK;
}


extern "C" int
rl_store_row_sync(const rl_store_t *store, const rl_store_key_t *key,
    const rl_store_limit_t *limit, uint64_t generation,
    const rl_store_snapshot_t *snapshot) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    const uint32_t i = s.find(kind_row, *key);

    if (i && s.entry(i).u.row.txid
        && !rl_store_visible(snapshot, s.entry(i).u.row.txid))
    {
        return RL_STORE_OK;
    }

    if (limit) {
        return s.row_put(i, *key, *limit, generation, 0);
    }

    if (i) {
        s.row_remove(i);
    }

    return RL_STORE_OK;
}


extern "C" void
rl_store_row_sweep(const rl_store_t *store, uint64_t generation,
    const rl_store_snapshot_t *snapshot) noexcept
{
    Store s(store->shared);
    Hold hold(store);
    Shared &sh = s.sh();

    uint32_t next;

    for (uint32_t i = sh.list[list_rows].head, left = sh.nslots;
         s.valid(i) && left--; i = next)
    {
        const Row &row = s.entry(i).u.row;

        next = s.entry(i).next;

        if (row.generation != generation
            && (row.txid == 0 || rl_store_visible(snapshot, row.txid)))
        {
            s.row_remove(i);
        }
    }

    sh.pg_generation = generation;
}


extern "C" uint64_t
rl_store_row_generation(const rl_store_t *store) noexcept
{
    Hold hold(store);

    return store->shared->pg_generation;
}


extern "C" void
rl_store_row_forget(const rl_store_t *store, uint64_t xmin) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    uint32_t next;

    for (uint32_t i = s.sh().list[list_tombstones].head,
         left = s.sh().nslots; s.valid(i) && left--; i = next)
    {
        next = s.entry(i).next;

        if (s.entry(i).u.row.txid < xmin) {
            s.row_remove(i);
        }
    }
}


extern "C" int
rl_store_blocked(const rl_store_t *store, const rl_store_key_t *key,
    uint64_t cost, int64_t interval_us, int64_t now_us,
    ngx_http_rate_limit_decision_t *d) noexcept
{
    Shared &sh = *store->shared;

    if (sh.nblocked.load(relaxed) == 0) {
        return 0;
    }

    int rc = 0;

    {
        Store s(&sh);
        Hold hold(store);

        const uint32_t i = s.find(kind_blocked, *key);

        if (i == 0) {
            return 0;
        }

        const Blocked &b = s.entry(i).u.blocked;

        if (b.version == sh.limits_version) {
            /* the time for one token, and for each token more */
            const int64_t until_us = b.until_us
                                     + int64_t(cost - 1) * interval_us;

            if (until_us > now_us) {
                d->allowed = 0;
                d->remaining = 0;
                d->retry_after_us = until_us - now_us;
                d->reset_us = b.full_us > now_us ? b.full_us - now_us : 0;
                rc = 1;
            }
        }

        if (rc == 0 && b.until_us <= now_us) {
            s.remove(i);
            add(sh.nblocked, -1);
        }
    }

    if (rc) {
        sh.cached.fetch_add(1, relaxed);
    }

    return rc;
}


extern "C" void
rl_store_block(const rl_store_t *store, const rl_store_key_t *key,
    int64_t until_us, int64_t full_us, int64_t now_us) noexcept
{
    Store s(store->shared);
    Hold hold(store);
    Shared &sh = s.sh();

    s.unblock(now_us, unblock_per_block);

    uint32_t i = s.find(kind_blocked, *key);

    if (i == 0) {
        i = s.insert_beside_buckets(kind_blocked, *key);

        if (i == 0) {
            return;
        }

        add(sh.nblocked, 1);

    } else {
        s.unlink(list_blocked, i);
    }

    s.push(list_blocked, i);

    Blocked &b = s.entry(i).u.blocked;
    b.until_us = until_us;
    b.full_us = full_us;
    b.version = sh.limits_version;
}


extern "C" void
rl_store_limits_changed(const rl_store_t *store) noexcept
{
    Hold hold(store);

    store->shared->limits_version++;
}


extern "C" rl_store_nofit_e
rl_store_nofit(const rl_store_t *store, const rl_store_key_t *key,
    int64_t now_us) noexcept
{
    Store s(store->shared);
    Hold hold(store);
    Shared &sh = s.sh();

    /* logged in turn, so the oldest are last */
    for (uint32_t i = sh.list[list_nofit].tail, left = sh.nslots;
         s.valid(i) && left--; i = sh.list[list_nofit].tail)
    {
        if (now_us - s.entry(i).u.nofit.logged_us
            < RL_STORE_NOFIT_PERIOD_US)
        {
            break;
        }

        s.remove(i);

        if (sh.nnofit) {
            sh.nnofit--;
        }
    }

    if (s.find(kind_nofit, *key)) {
        return RL_STORE_NOFIT_QUIET;
    }

    const uint32_t i = sh.nnofit < RL_STORE_NOFIT_KEYS
                       ? s.insert_beside_buckets(kind_nofit, *key) : 0;

    if (i) {
        s.entry(i).u.nofit.logged_us = now_us;
        s.push(list_nofit, i);
        sh.nnofit++;

        return RL_STORE_NOFIT_NAME;
    }

    if (now_us - sh.nofit_unnamed_us >= RL_STORE_NOFIT_PERIOD_US) {
        sh.nofit_unnamed_us = now_us;
        return RL_STORE_NOFIT_UNNAMED;
    }

    return RL_STORE_NOFIT_QUIET;
}


extern "C" void
rl_store_count(const rl_store_t *store, rl_verdict_outcome_e outcome) noexcept
{
    Shared &sh = *store->shared;

    sh.requests.fetch_add(1, relaxed);

    if (outcome < RL_VERDICT_OUTCOMES) {
        sh.outcomes[outcome].fetch_add(1, relaxed);
    }
}


extern "C" void
rl_store_stats(const rl_store_t *store, rl_store_stats_t *stats) noexcept
{
    const Shared &sh = *store->shared;

    stats->requests = sh.requests.load(relaxed);

    for (unsigned o = 0; o < RL_VERDICT_OUTCOMES; o++) {
        stats->outcomes[o] = sh.outcomes[o].load(relaxed);
    }

    stats->cached = sh.cached.load(relaxed);
    stats->rows = sh.nrows.load(relaxed);
    stats->policy = sh.npolicy.load(relaxed);
    stats->buckets = sh.nbuckets.load(relaxed);
    stats->blocked = sh.nblocked.load(relaxed);
    stats->slots = sh.nslots;
    stats->free_slots = sh.nslots - sh.used.load(relaxed);
    stats->slot_bytes = slot_size + sizeof(uint32_t);
    stats->bytes = sh.bytes;
}


extern "C" int
rl_store_check(const rl_store_t *store) noexcept
{
    Store s(store->shared);
    Hold hold(store);

    return s.check();
}
