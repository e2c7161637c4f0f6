/*
 * The zone's store (rl_store.h) on memory the test allocates, with a test
 * lock that counts its holds and a clock the test passes in, so every
 * expected number is exact.
 */

#include "rate_limit_test_support.h"

#include <rl_store.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>

#include <atomic>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>


namespace {

using rate_limit_test::base_now_us;
using rate_limit_test::decide;
using rate_limit_test::params_for;

constexpr int64_t minute_us = 60000000;

const unsigned char test_seed[RL_STORE_SEED_LEN] = {
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16
};


/* a lock that is never taken twice and counts how often it was taken */
struct TestLock {
    int held = 0;
    int taken = 0;

    static void lock(void *data)
    {
        auto *l = static_cast<TestLock *>(data);
        EXPECT_EQ(l->held, 0) << "the store takes its lock once";
        l->held = 1;
        l->taken++;
    }

    static void unlock(void *data)
    {
        auto *l = static_cast<TestLock *>(data);
        EXPECT_EQ(l->held, 1);
        l->held = 0;
    }
};


struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
};


struct Slots {
    uint64_t n;
};


/* a store laid out on malloc'd memory */
class TestStore {
public:
    explicit TestStore(size_t bytes, const unsigned char *seed = test_seed)
        : memory_(std::malloc(bytes)), bytes_(bytes)
    {
        store_.shared = rl_store_layout(memory_.get(), bytes, seed);
        store_.lock = TestLock::lock;
        store_.unlock = TestLock::unlock;
        store_.lock_data = &lock_;
    }

    /* a store of exactly n slots */
    explicit TestStore(Slots slots) : TestStore(bytes_for(slots.n))
    {
        EXPECT_TRUE(laid_out());
        if (laid_out()) {
            EXPECT_EQ(stats().slots, slots.n);
        }
    }

    /* the bytes that lay out exactly nslots slots */
    static size_t bytes_for(uint64_t nslots)
    {
        size_t bytes = nslots * 100 + 256;

        for (int tries = 0; tries < 1000; tries++) {
            std::unique_ptr<void, FreeDeleter> m(std::malloc(bytes));
            rl_store_shared_t *sh = rl_store_layout(m.get(), bytes,
                                                    test_seed);
            rl_store_t s { sh, TestLock::lock, TestLock::unlock, nullptr };
            TestLock l;
            s.lock_data = &l;
            uint64_t got = 0;

            if (sh) {
                rl_store_stats_t st {};
                rl_store_stats(&s, &st);
                got = st.slots;
            }

            if (got == nslots) {
                return bytes;
            }

            bytes = got < nslots ? bytes + 8 : bytes - 8;
        }

        ADD_FAILURE() << "no size lays out " << nslots << " slots";
        return 0;
    }

    const rl_store_t *get() const { return &store_; }
    bool laid_out() const { return store_.shared != nullptr; }
    TestLock &lock() { return lock_; }
    unsigned char *memory() const
    {
        return static_cast<unsigned char *>(memory_.get());
    }
    size_t bytes() const { return bytes_; }

    rl_store_stats_t stats() const
    {
        rl_store_stats_t s {};
        rl_store_stats(&store_, &s);
        return s;
    }

    uint64_t used() const
    {
        const rl_store_stats_t s = stats();
        return s.slots - s.free_slots;
    }

    bool consistent() const { return rl_store_check(&store_) == 1; }

private:
    std::unique_ptr<void, FreeDeleter> memory_;
    size_t bytes_;
    TestLock lock_;
    rl_store_t store_ {};
};


/* a key with its own bytes */
class Key {
public:
    Key(const rl_store_t *store, std::string text) : text_(std::move(text))
    {
        rl_store_key(store, reinterpret_cast<const unsigned char *>(
                                text_.data()),
                     text_.size(), &key_);
    }

    Key(const Key &other) = delete;
    Key &operator=(const Key &) = delete;

    /* the store's calls take the key's rl_store_key_t: &key gives it */
    const rl_store_key_t *operator&() const { return &key_; }
    const rl_store_key_t &get() const { return key_; }

private:
    std::string text_;
    rl_store_key_t key_ {};
};


ngx_http_rate_limit_decision_t
take(const rl_store_t *store, const Key &key,
    const ngx_http_rate_limit_params_t &params, int64_t now_us,
    uint64_t cost = 1, int *rc = nullptr)
{
    ngx_http_rate_limit_decision_t d {};
    const int r = rl_store_take(store, &key, &params, cost, now_us, &d);
    if (rc) {
        *rc = r;
    }
    return d;
}


ngx_http_rate_limit_decision_t
peek(const rl_store_t *store, const Key &key,
    const ngx_http_rate_limit_params_t &params, int64_t now_us)
{
    ngx_http_rate_limit_decision_t d {};
    rl_store_peek(store, &key, &params, now_us, &d);
    return d;
}


/* whether the store holds a bucket for key: a held one has given a token */
bool held(const rl_store_t *store, const Key &key,
    const ngx_http_rate_limit_params_t &params, int64_t now_us)
{
    return peek(store, key, params, now_us).remaining < params.burst;
}


rl_store_limit_t limit_of(const char *rate_text, uint64_t burst)
{
    rl_store_limit_t limit {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    EXPECT_EQ(ngx_http_rate_limit_parse_rate(rate_text, strlen(rate_text),
                                             &limit.rate, err, sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK);
    limit.params = params_for(rate_text, burst);
    return limit;
}


ngx_http_rate_limit_source_e
find(const rl_store_t *store, const Key &key, rl_store_limit_t *limit)
{
    *limit = rl_store_limit_t {};
    return rl_store_find_limit(store, &key, limit);
}


rl_store_snapshot_t snapshot(uint64_t xmin, uint64_t xmax,
    const std::vector<uint64_t> &xip = {})
{
    return { xmin, xmax, xip.empty() ? nullptr : xip.data(), xip.size() };
}


std::string key_name(const char *prefix, int i)
{
    return std::string(prefix) + std::to_string(i);
}


/* keys prefix0 to prefix(n - 1) */
using Keys = std::vector<std::unique_ptr<Key>>;

Keys keys_named(const rl_store_t *store, const char *prefix, int n)
{
    Keys keys;
    for (int i = 0; i < n; i++) {
        keys.push_back(std::make_unique<Key>(store, key_name(prefix, i)));
    }
    return keys;
}


/* every slot of s a bucket, of the keys "b0" on, the first the least
 * recently used */
Keys fill_with_buckets(const TestStore &s,
    const ngx_http_rate_limit_params_t &params)
{
    const uint64_t n = s.stats().slots;
    Keys keys = keys_named(s.get(), "b", int(n));

    for (uint64_t i = 0; i < n; i++) {
        take(s.get(), *keys[i], params, base_now_us);
    }

    EXPECT_EQ(s.stats().free_slots, 0u);

    return keys;
}


TEST(StoreLayout, RefusesMemoryTooSmallOrMisaligned)
{
    unsigned char small[512];
    EXPECT_EQ(rl_store_layout(small, sizeof(small), test_seed), nullptr);

    std::unique_ptr<void, FreeDeleter> m(std::malloc(65536));
    EXPECT_EQ(rl_store_layout(static_cast<char *>(m.get()) + 1, 65535,
                              test_seed), nullptr);
    EXPECT_NE(rl_store_layout(m.get(), 65536, test_seed), nullptr);

    const size_t eight = TestStore::bytes_for(8);
    TestStore fits(eight);
    ASSERT_TRUE(fits.laid_out());
    EXPECT_EQ(fits.stats().slots, 8u);

    TestStore too_small(eight - 100);
    EXPECT_FALSE(too_small.laid_out());
}


TEST(StoreLayout, CountsItsBytesAndTouchesNoSlot)
{
    const size_t bytes = 1 << 20;
    std::unique_ptr<void, FreeDeleter> m(std::malloc(bytes));
    auto *p = static_cast<unsigned char *>(m.get());
    std::memset(p, 0xab, bytes);

    TestLock lock;
    rl_store_t store { rl_store_layout(p, bytes, test_seed), TestLock::lock,
                       TestLock::unlock, &lock };
    ASSERT_NE(store.shared, nullptr);

    rl_store_stats_t s {};
    rl_store_stats(&store, &s);

    EXPECT_EQ(s.slot_bytes, 100u);
    EXPECT_LE(s.bytes, bytes);
    EXPECT_GT(s.bytes, s.slots * s.slot_bytes);
    EXPECT_LT(s.bytes, s.slots * s.slot_bytes + 1024);
    EXPECT_EQ(s.free_slots, s.slots);
    EXPECT_EQ(s.buckets + s.rows + s.policy + s.blocked + s.requests, 0u);

    /* the slots lie at the end, untouched: layout wrote only the header
     * and the chain heads before them */
    const size_t slots_at = s.bytes - s.slots * 96;
    size_t touched_slots = 0, touched = 0;
    for (size_t i = 0; i < bytes; i++) {
        (i < slots_at ? touched : touched_slots) += p[i] != 0xab;
    }
    EXPECT_EQ(touched_slots, 0u);
    EXPECT_GE(touched, s.slots * 4) << "the chain heads are zeroed";
    EXPECT_LE(touched, slots_at);
    EXPECT_EQ(rl_store_check(&store), 1);
}


TEST(StoreKey, HashIsSeeded)
{
    TestStore a(65536);
    const unsigned char other[RL_STORE_SEED_LEN] = { 16, 15, 14 };
    TestStore b(65536, other);

    Key ka(a.get(), "client-1"), ka2(a.get(), "client-1");
    Key kb(b.get(), "client-1");
    Key kc(a.get(), "client-2");

    EXPECT_EQ(ka.get().hash, ka2.get().hash);
    EXPECT_NE(ka.get().hash, kb.get().hash);
    EXPECT_NE(ka.get().hash, kc.get().hash);
    EXPECT_EQ(ka.get().len, 8u);
}


/*
 * SipHash-1-3 of key 00..0f: the empty message gives 0xabac0158050fc4dc,
 * the reference vector; the store keeps the two halves xor'ed.  (The same
 * code with 2 and 4 rounds gives the paper's SipHash-2-4 vectors.)
 */
TEST(StoreKey, HashIsSipHash13)
{
    unsigned char seed[RL_STORE_SEED_LEN];
    unsigned char message[15];
    for (unsigned i = 0; i < sizeof(seed); i++) {
        seed[i] = static_cast<unsigned char>(i);
    }
    for (unsigned i = 0; i < sizeof(message); i++) {
        message[i] = static_cast<unsigned char>(i);
    }

    TestStore s(65536, seed);
    rl_store_key_t key;

    rl_store_key(s.get(), message, 0, &key);
    EXPECT_EQ(key.hash, 0xabac0158u ^ 0x050fc4dcu);
    rl_store_key(s.get(), message, 15, &key);
    EXPECT_EQ(key.hash, 0xd320d86du ^ 0x2a519956u);
    EXPECT_EQ(key.data, message);
    EXPECT_EQ(key.len, 15u);
}


TEST(StoreBuckets, TakeRefundAndPeekMatchTheArithmetic)
{
    TestStore s(65536);
    const auto params = params_for("10r/s", 5);
    Key key(s.get(), "client");

    ngx_http_rate_limit_state_t ref {};
    const int64_t steps[] = { 0, 0, 0, 30000, 30000, 30000, 30000, 30000,
                              30000, 250000, 250000, 900000, 900000 };
    const uint64_t costs[] = { 1, 2, 1, 1, 3, 1, 1, 1, 6, 2, 1, 4, 1 };

    for (size_t n = 0; n < sizeof(steps) / sizeof(steps[0]); n++) {
        const int64_t now = base_now_us + steps[n];
        const auto want = decide(params, ref, now, costs[n]);
        int rc = -1;
        const auto got = take(s.get(), key, params, now, costs[n], &rc);

        EXPECT_EQ(rc, RL_STORE_OK);
        EXPECT_EQ(got.allowed, want.allowed) << n;
        EXPECT_EQ(got.remaining, want.remaining) << n;
        EXPECT_EQ(got.retry_after_us, want.retry_after_us) << n;
        EXPECT_EQ(got.reset_us, want.reset_us) << n;
        EXPECT_EQ(got.state.tat_us, want.state.tat_us) << n;
        ref = want.state;

        const auto p = peek(s.get(), key, params, now);
        const auto wp = decide(params, ref, now, 0);
        EXPECT_EQ(p.remaining, wp.remaining) << n;
        EXPECT_EQ(p.reset_us, wp.reset_us) << n;
    }

    const int64_t now = base_now_us + 900000;
    rl_store_refund(s.get(), &key, &params, 2, now);
    ref = ngx_http_rate_limit_refund(&params, &ref, now, 2);

    const auto p = peek(s.get(), key, params, now);
    EXPECT_EQ(p.remaining, decide(params, ref, now, 0).remaining);
    EXPECT_EQ(p.state.tat_us, ref.tat_us);

    /* a refund of a bucket not held stores nothing */
    Key other(s.get(), "other");
    rl_store_refund(s.get(), &other, &params, 1, now);
    EXPECT_EQ(s.stats().buckets, 1u);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreBuckets, ARejectionOfABucketNeverSeenStoresNothing)
{
    TestStore s(65536);
    const auto params = params_for("10r/s", 2);
    Key key(s.get(), "client");

    const auto d = take(s.get(), key, params, base_now_us, 3);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(s.stats().buckets, 0u);
    EXPECT_EQ(s.used(), 0u);

    /* a rejection read under another limit is stored */
    take(s.get(), key, params, base_now_us, 2);
    const auto other = params_for("1r/s", 1);
    const auto r = take(s.get(), key, other, base_now_us, 1);
    EXPECT_FALSE(r.allowed);
    ngx_http_rate_limit_state_t stored = take(s.get(), key, other,
                                              base_now_us, 1).state;
    EXPECT_EQ(stored.tat_us, r.state.tat_us);
    EXPECT_EQ(stored.token_code, r.state.token_code);
}


TEST(StoreBuckets, ExpiresUpToThreeFullBucketsFromTheTail)
{
    TestStore s(65536);
    const auto params = params_for("10r/s", 1);

    const Keys keys = keys_named(s.get(), "k", 6);
    for (int i = 0; i < 6; i++) {
        take(s.get(), *keys[i], params, base_now_us + i);
    }
    EXPECT_EQ(s.stats().buckets, 6u);

    /* k0..k5 are full at base + 100 ms + i; at base + 100 ms + 3, k0..k3 */
    const int64_t later = base_now_us + 100000 + 3;
    Key fresh(s.get(), "fresh");
    take(s.get(), fresh, params, later);
    EXPECT_EQ(s.stats().buckets, 6u - 3 + 1);

    /* the one full bucket left goes at the next take; k4 is not full */
    take(s.get(), fresh, params, later);
    EXPECT_EQ(s.stats().buckets, 3u);

    /* not yet full: none goes */
    take(s.get(), fresh, params, later);
    EXPECT_EQ(s.stats().buckets, 3u);
    EXPECT_TRUE(held(s.get(), *keys[4], params, later));
    EXPECT_TRUE(s.consistent());
}


TEST(StoreBuckets, ForgetsTheLeastRecentlyUsedWhenNoSlotIsLeft)
{
    TestStore s(Slots { 16 });
    const auto params = params_for("1r/m", 1);

    const Keys keys = keys_named(s.get(), "k", 17);

    for (int i = 0; i < 16; i++) {
        int rc = -1;
        EXPECT_TRUE(take(s.get(), *keys[i], params, base_now_us, 1,
                         &rc).allowed);
        EXPECT_EQ(rc, RL_STORE_OK);
    }
    EXPECT_EQ(s.stats().free_slots, 0u);

    /* k0 used again: k1 is now the least recently used */
    EXPECT_FALSE(take(s.get(), *keys[0], params, base_now_us).allowed);

    int rc = -1;
    EXPECT_TRUE(take(s.get(), *keys[16], params, base_now_us, 1,
                     &rc).allowed);
    EXPECT_EQ(rc, RL_STORE_OK);
    EXPECT_EQ(s.stats().buckets, 16u);
    EXPECT_TRUE(held(s.get(), *keys[0], params, base_now_us));
    EXPECT_FALSE(held(s.get(), *keys[1], params, base_now_us));
    EXPECT_TRUE(held(s.get(), *keys[2], params, base_now_us));
    EXPECT_TRUE(held(s.get(), *keys[16], params, base_now_us));
    EXPECT_TRUE(s.consistent());
}


/* rows "row0" on, synced by full sync 1, in the slots from the first */
void sync_rows(const TestStore &s, int n, const rl_store_limit_t &limit)
{
    const rl_store_snapshot_t snap = snapshot(1, 1);

    for (int i = 0; i < n; i++) {
        Key k(s.get(), key_name("row", i));
        EXPECT_EQ(rl_store_row_sync(s.get(), &k, &limit, 1, &snap),
                  RL_STORE_OK) << i;
    }
}


TEST(StoreBuckets, AStoreWithNothingToForgetIsFull)
{
    TestStore s(Slots { 8 });
    const auto params = params_for("1r/m", 1);

    /* rows keep an eighth free: 7 of 8 slots */
    sync_rows(s, 7, limit_of("10r/s", 10));
    EXPECT_EQ(s.stats().free_slots, 1u);

    /* a bucket of a 256-byte key needs 4 slots: none can be forgotten */
    Key long_key(s.get(), std::string(256, 'x'));
    int rc = -1;
    const auto d = take(s.get(), long_key, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_FULL);
    EXPECT_TRUE(d.allowed) << "decided still";
    EXPECT_EQ(s.stats().buckets, 0u);

    /* one slot: a short key fits, and the next takes its place */
    Key a(s.get(), "a"), b(s.get(), "b");
    take(s.get(), a, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_OK);
    take(s.get(), b, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_OK);
    EXPECT_FALSE(held(s.get(), a, params, base_now_us));
    EXPECT_TRUE(held(s.get(), b, params, base_now_us));

    /* a key longer than any stored is never stored, and forgets nothing */
    Key too_long(s.get(), std::string(NGX_HTTP_RATE_LIMIT_KEY_MAX + 1, 'y'));
    take(s.get(), too_long, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_FULL);
    EXPECT_TRUE(held(s.get(), b, params, base_now_us));
    EXPECT_TRUE(s.consistent());
}


/* a bucket of a long key forgets as many as it needs, no more */
TEST(StoreBuckets, ALongKeyForgetsTheFewItNeeds)
{
    TestStore s(Slots { 8 });
    const auto params = params_for("1r/m", 1);
    const Keys keys = fill_with_buckets(s, params);

    /* 256 bytes: 4 slots */
    Key long_key(s.get(), std::string(256, 'x'));
    int rc = -1;
    take(s.get(), long_key, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_OK);
    EXPECT_TRUE(held(s.get(), long_key, params, base_now_us));
    EXPECT_EQ(s.stats().buckets, 5u);
    EXPECT_FALSE(held(s.get(), *keys[3], params, base_now_us));
    EXPECT_TRUE(held(s.get(), *keys[4], params, base_now_us));
    EXPECT_TRUE(s.consistent());
}


TEST(StoreRows, WriteDeleteTombstoneAndFind)
{
    TestStore s(65536);
    Key key(s.get(), "client");
    const auto limit = limit_of("5r/s", 7);
    rl_store_limit_t got;

    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);

    EXPECT_EQ(rl_store_row_write(s.get(), &key, &limit, 100), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(got.rate.count, 5u);
    EXPECT_EQ(got.rate.period_ms, 1000u);
    EXPECT_EQ(got.params.burst, 7u);
    EXPECT_EQ(s.stats().rows, 1u);

    EXPECT_EQ(rl_store_row_write(s.get(), &key, nullptr, 101), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(s.stats().rows, 0u);
    EXPECT_EQ(s.used(), 1u) << "the tombstone stays";

    /* a sync that did not see the deletion cannot restore the row */
    const std::vector<uint64_t> in_progress { 101 };
    const auto old_snap = snapshot(101, 102, in_progress);
    EXPECT_EQ(rl_store_row_sync(s.get(), &key, &limit, 1, &old_snap),
              RL_STORE_OK);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);

    /* forgotten once every later snapshot sees it */
    rl_store_row_forget(s.get(), 101);
    EXPECT_EQ(s.used(), 1u);
    rl_store_row_forget(s.get(), 102);
    EXPECT_EQ(s.used(), 0u);

    /* a deletion of a row never seen leaves a tombstone too */
    Key other(s.get(), "other");
    EXPECT_EQ(rl_store_row_write(s.get(), &other, nullptr, 200), RL_STORE_OK);
    EXPECT_EQ(s.used(), 1u);
    const auto before = snapshot(150, 150);
    rl_store_row_sync(s.get(), &other, &limit, 1, &before);
    EXPECT_EQ(find(s.get(), other, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);

    /* a write over the tombstone revives it */
    EXPECT_EQ(rl_store_row_write(s.get(), &other, &limit, 201), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), other, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(s.stats().rows, 1u);
    EXPECT_EQ(s.used(), 1u);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreRows, AnOlderSnapshotDoesNotUndoTheApiNewerAppliesIt)
{
    TestStore s(65536);
    Key key(s.get(), "client");
    const auto api = limit_of("5r/s", 5);
    const auto synced = limit_of("9r/s", 9);
    rl_store_limit_t got;

    EXPECT_EQ(rl_store_row_write(s.get(), &key, &api, 500), RL_STORE_OK);

    /* 500 in progress when the sync's snapshot was taken */
    const std::vector<uint64_t> xip { 500 };
    const auto older = snapshot(499, 501, xip);
    EXPECT_EQ(rl_store_row_sync(s.get(), &key, &synced, 1, &older),
              RL_STORE_OK);
    find(s.get(), key, &got);
    EXPECT_EQ(got.params.burst, 5u);

    /* nor does its deletion, nor its sweep */
    rl_store_row_sync(s.get(), &key, nullptr, 1, &older);
    rl_store_row_sweep(s.get(), 1, &older);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(got.params.burst, 5u);
    EXPECT_EQ(rl_store_row_generation(s.get()), 1u);

    /* a snapshot that saw 500 applies what it read */
    const auto newer = snapshot(501, 501);
    EXPECT_EQ(rl_store_row_sync(s.get(), &key, &synced, 2, &newer),
              RL_STORE_OK);
    find(s.get(), key, &got);
    EXPECT_EQ(got.params.burst, 9u);

    /* now as synced (txid 0): the next older snapshot applies too */
    rl_store_row_sync(s.get(), &key, &api, 2, &older);
    find(s.get(), key, &got);
    EXPECT_EQ(got.params.burst, 5u);

    rl_store_row_sync(s.get(), &key, nullptr, 2, &older);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(s.used(), 0u) << "a sync's deletion leaves no tombstone";
    EXPECT_TRUE(s.consistent());
}


TEST(StoreRows, SweepDropsWhatTheFullSyncDidNotSee)
{
    TestStore s(65536);
    const auto limit = limit_of("5r/s", 5);
    const auto snap = snapshot(1000, 1000);
    Key a(s.get(), "a"), b(s.get(), "b"), c(s.get(), "c"), d(s.get(), "d");
    rl_store_limit_t got;

    rl_store_row_sync(s.get(), &a, &limit, 1, &snap);
    rl_store_row_sync(s.get(), &b, &limit, 1, &snap);
    rl_store_row_sweep(s.get(), 1, &snap);
    EXPECT_EQ(s.stats().rows, 2u);
    EXPECT_EQ(rl_store_row_generation(s.get()), 1u);

    /* generation 2 reads a only; c is the API's, after its snapshot; d the
     * API's, before it */
    rl_store_row_sync(s.get(), &a, &limit, 2, &snap);
    rl_store_row_write(s.get(), &c, &limit, 1000);
    rl_store_row_write(s.get(), &d, &limit, 999);
    rl_store_row_sweep(s.get(), 2, &snap);

    EXPECT_EQ(find(s.get(), a, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(find(s.get(), b, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(find(s.get(), c, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(find(s.get(), d, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(s.stats().rows, 2u);
    EXPECT_EQ(rl_store_row_generation(s.get()), 2u);

    /* the API's write takes the store's generation, or the row's if later */
    Key e(s.get(), "e");
    rl_store_row_sync(s.get(), &e, &limit, 3, &snap);
    rl_store_row_write(s.get(), &e, &limit, 2000);
    rl_store_row_write(s.get(), &a, &limit, 2001);
    const auto later = snapshot(3000, 3000);
    rl_store_row_sweep(s.get(), 3, &later);
    EXPECT_EQ(find(s.get(), e, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES)
        << "generation 3 kept by the write";
    EXPECT_EQ(find(s.get(), a, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT)
        << "generation 2 given by the write";
    EXPECT_TRUE(s.consistent());
}


TEST(StoreRows, KeepTheLastEighthAndSayFullOnce)
{
    TestStore s(Slots { 64 });
    const auto limit = limit_of("5r/s", 5);
    const auto snap = snapshot(10, 10);

    for (int i = 0; i < 56; i++) {
        Key k(s.get(), key_name("row", i));
        ASSERT_EQ(rl_store_row_write(s.get(), &k, &limit, 1), RL_STORE_OK)
            << i;
    }

    Key r56(s.get(), "row56"), r57(s.get(), "row57");
    EXPECT_EQ(rl_store_row_write(s.get(), &r56, &limit, 1),
              RL_STORE_FULL_NEWLY);
    EXPECT_EQ(rl_store_row_sync(s.get(), &r57, &limit, 1, &snap),
              RL_STORE_FULL);
    EXPECT_EQ(rl_store_row_write(s.get(), &r56, &limit, 1), RL_STORE_FULL);
    EXPECT_EQ(s.stats().rows, 56u);
    EXPECT_EQ(s.stats().free_slots, 8u);

    /* a deletion finds no room for its tombstone: no tombstone, OK */
    EXPECT_EQ(rl_store_row_write(s.get(), &r57, nullptr, 2), RL_STORE_OK);
    EXPECT_EQ(s.stats().free_slots, 8u);

    /* a row deleted: said anew, as the tombstone keeps its slot */
    Key r0(s.get(), "row0");
    EXPECT_EQ(rl_store_row_write(s.get(), &r0, nullptr, 3), RL_STORE_OK);
    EXPECT_EQ(s.stats().rows, 55u);
    EXPECT_EQ(rl_store_row_write(s.get(), &r56, &limit, 4),
              RL_STORE_FULL_NEWLY);

    /* the tombstone forgotten, a row fits, and then it is full anew */
    rl_store_row_forget(s.get(), 4);
    EXPECT_EQ(rl_store_row_write(s.get(), &r56, &limit, 5), RL_STORE_OK);
    EXPECT_EQ(rl_store_row_write(s.get(), &r57, &limit, 6),
              RL_STORE_FULL_NEWLY);

    /* the reserve stays for buckets, which may take all of it */
    const auto params = params_for("1r/m", 1);
    for (int i = 0; i < 8; i++) {
        Key b(s.get(), key_name("bucket", i));
        int rc = -1;
        take(s.get(), b, params, base_now_us, 1, &rc);
        EXPECT_EQ(rc, RL_STORE_OK);
    }
    EXPECT_EQ(s.stats().free_slots, 0u);
    EXPECT_EQ(s.stats().buckets, 8u);

    /* and cached rejections and nofit keys keep off it too */
    Key blocked(s.get(), "blocked");
    rl_store_block(s.get(), &blocked, base_now_us + 1000, base_now_us + 2000,
                   base_now_us);
    EXPECT_EQ(s.stats().blocked, 0u);
    Key nofit(s.get(), "nofit");
    EXPECT_EQ(rl_store_nofit(s.get(), &nofit, base_now_us),
              RL_STORE_NOFIT_UNNAMED);
    EXPECT_TRUE(s.consistent());
}


TEST(StorePolicy, ReplaceIsAllOrNothing)
{
    TestStore s(Slots { 64 });
    const auto limit = limit_of("3r/s", 3);
    rl_store_limit_t got;

    const Keys p = keys_named(s.get(), "p", 57);
    const Keys q = keys_named(s.get(), "q", 57);
    std::vector<rl_store_policy_entry_t> first, second;
    for (int i = 0; i < 57; i++) {
        first.push_back({ p[i]->get(), limit });
        second.push_back({ q[i]->get(), limit_of("4r/s", 4) });
    }

    EXPECT_EQ(rl_store_policy_replace(s.get(), first.data(), 56),
              RL_STORE_OK);
    EXPECT_EQ(s.stats().policy, 56u);
    Key p0(s.get(), "p0"), q0(s.get(), "q0"), p56(s.get(), "p56");
    EXPECT_EQ(find(s.get(), p0, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(got.params.burst, 3u);

    /* the old entries' slots count as free */
    EXPECT_EQ(rl_store_policy_replace(s.get(), second.data(), 56),
              RL_STORE_OK);
    EXPECT_EQ(s.stats().policy, 56u);
    EXPECT_EQ(find(s.get(), p0, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(find(s.get(), q0, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(got.params.burst, 4u);

    /* one too many: refused, the store as it was */
    const uint64_t locks = s.lock().taken;
    EXPECT_EQ(rl_store_policy_replace(s.get(), first.data(), 57),
              RL_STORE_FULL);
    EXPECT_EQ(s.lock().taken, int(locks + 1)) << "one hold of the lock";
    EXPECT_EQ(s.stats().policy, 56u);
    EXPECT_EQ(find(s.get(), q0, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(find(s.get(), p56, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);

    /* a key given twice: the last holds */
    std::vector<rl_store_policy_entry_t> twice {
        { p0.get(), limit_of("1r/s", 1) }, { p0.get(), limit_of("2r/s", 2) }
    };
    EXPECT_EQ(rl_store_policy_replace(s.get(), twice.data(), 2), RL_STORE_OK);
    EXPECT_EQ(s.stats().policy, 1u);
    EXPECT_EQ(find(s.get(), p0, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(got.params.burst, 2u);

    /* emptied */
    EXPECT_EQ(rl_store_policy_replace(s.get(), nullptr, 0), RL_STORE_OK);
    EXPECT_EQ(s.stats().policy, 0u);
    EXPECT_EQ(s.used(), 0u);
    EXPECT_TRUE(s.consistent());
}


/* a zone full of buckets is their normal state: a reload must not fail */
TEST(StorePolicy, ReplaceForgetsBucketsButLeavesThemTheLastEighth)
{
    TestStore s(Slots { 64 });
    const auto params = params_for("1r/m", 1);
    const Keys buckets = fill_with_buckets(s, params);

    EXPECT_EQ(rl_store_policy_replace(s.get(), nullptr, 0), RL_STORE_OK);
    EXPECT_EQ(s.stats().buckets, 64u);

    const Keys p = keys_named(s.get(), "p", 57);
    std::vector<rl_store_policy_entry_t> entries;
    for (int i = 0; i < 57; i++) {
        entries.push_back({ p[i]->get(), limit_of("3r/s", 3) });
    }

    EXPECT_EQ(rl_store_policy_replace(s.get(), entries.data(), 10),
              RL_STORE_OK);
    EXPECT_EQ(s.stats().policy, 10u);
    EXPECT_EQ(s.stats().buckets, 54u);
    EXPECT_FALSE(held(s.get(), *buckets[9], params, base_now_us))
        << "the least recently used went";
    EXPECT_TRUE(held(s.get(), *buckets[10], params, base_now_us));

    EXPECT_EQ(rl_store_policy_replace(s.get(), entries.data(), 56),
              RL_STORE_OK);
    EXPECT_EQ(s.stats().buckets, 8u);

    EXPECT_EQ(rl_store_policy_replace(s.get(), entries.data(), 57),
              RL_STORE_FULL);
    EXPECT_EQ(s.stats().policy, 56u);
    EXPECT_EQ(s.stats().buckets, 8u);
    EXPECT_TRUE(s.consistent());
}


/* rows, tombstones, rejections and nofit keys forget buckets likewise */
TEST(StoreRows, ForgetBucketsButLeaveThemTheLastEighth)
{
    TestStore s(Slots { 64 });
    const auto params = params_for("1r/m", 1);
    const auto limit = limit_of("5r/s", 5);
    fill_with_buckets(s, params);

    Key blocked(s.get(), "blocked"), nofit(s.get(), "nofit");
    rl_store_block(s.get(), &blocked, base_now_us + 1000, base_now_us + 2000,
                   base_now_us);
    EXPECT_EQ(s.stats().blocked, 1u);
    EXPECT_EQ(rl_store_nofit(s.get(), &nofit, base_now_us),
              RL_STORE_NOFIT_NAME);
    Key gone(s.get(), "gone");
    EXPECT_EQ(rl_store_row_write(s.get(), &gone, nullptr, 1), RL_STORE_OK);
    EXPECT_EQ(s.stats().buckets, 61u);

    for (int i = 0; i < 53; i++) {
        Key k(s.get(), key_name("row", i));
        ASSERT_EQ(rl_store_row_write(s.get(), &k, &limit, 1), RL_STORE_OK)
            << i;
    }
    Key last(s.get(), "row53");
    EXPECT_EQ(rl_store_row_write(s.get(), &last, &limit, 1),
              RL_STORE_FULL_NEWLY);
    EXPECT_EQ(s.stats().rows, 53u);
    EXPECT_EQ(s.stats().buckets, 8u);
    EXPECT_TRUE(s.consistent());
}


TEST(StorePolicy, ARowComesBeforeThePolicy)
{
    TestStore s(65536);
    Key key(s.get(), "client");
    rl_store_limit_t got;
    const rl_store_policy_entry_t entry { key.get(), limit_of("3r/s", 3) };

    ASSERT_EQ(rl_store_policy_replace(s.get(), &entry, 1), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(got.params.burst, 3u);

    const auto row = limit_of("8r/s", 8);
    rl_store_row_write(s.get(), &key, &row, 10);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(got.params.burst, 8u);

    /* a tombstone hides no policy */
    rl_store_row_write(s.get(), &key, nullptr, 11);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(got.params.burst, 3u);
}


TEST(StoreLocks, NoLockWhileNothingIsHeld)
{
    TestStore s(65536);
    Key key(s.get(), "client");
    rl_store_limit_t got;
    ngx_http_rate_limit_decision_t d {};

    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 1000, base_now_us, &d), 0);
    rl_store_count(s.get(), RL_VERDICT_OUTCOME_PASSED);
    EXPECT_EQ(s.lock().taken, 0);

    rl_store_block(s.get(), &key, base_now_us + 10, base_now_us + 20,
                   base_now_us);
    EXPECT_EQ(s.lock().taken, 1);
    EXPECT_EQ(find(s.get(), key, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(s.lock().taken, 1) << "a rejection cached holds no limit";
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 1000, base_now_us, &d), 1);
    EXPECT_EQ(s.lock().taken, 2);

    EXPECT_TRUE(std::atomic<uint64_t>().is_lock_free());
    EXPECT_TRUE(std::atomic<uint32_t>().is_lock_free());
}


TEST(StoreBlocked, CachesRedisRejectionsUntilTheyRunOut)
{
    TestStore s(65536);
    Key key(s.get(), "client");
    ngx_http_rate_limit_decision_t d {};
    const int64_t now = base_now_us;

    rl_store_block(s.get(), &key, now + 1000, now + 5000, now);
    EXPECT_EQ(s.stats().blocked, 1u);

    d.allowed = 1;
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now, &d), 1);
    EXPECT_EQ(d.allowed, 0);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(d.retry_after_us, 1000);
    EXPECT_EQ(d.reset_us, 5000);

    /* each token more waits one interval more */
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 3, 300, now + 500, &d), 1);
    EXPECT_EQ(d.retry_after_us, 1000 + 600 - 500);
    EXPECT_EQ(d.reset_us, 4500);

    /* cost 3 still waits at until, one token does not: the entry stays */
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 1000, &d), 0);
    EXPECT_EQ(s.stats().blocked, 0u) << "run out at until: dropped";
    EXPECT_EQ(s.stats().cached, 2u);

    /* a stale entry (limits changed) is not served, and goes when run out */
    rl_store_block(s.get(), &key, now + 3000, now + 5000, now + 1000);
    rl_store_limits_changed(s.get());
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 1500, &d), 0);
    EXPECT_EQ(s.stats().blocked, 1u);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 3000, &d), 0);
    EXPECT_EQ(s.stats().blocked, 0u);

    /* the full time passed is reset 0 */
    rl_store_block(s.get(), &key, now + 9000, now + 8000, now + 7000);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 8500, &d), 1);
    EXPECT_EQ(d.reset_us, 0);

    /* a row written changes the limits too */
    const auto limit = limit_of("5r/s", 5);
    Key other(s.get(), "other");
    rl_store_row_write(s.get(), &other, &limit, 1);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 8500, &d), 0);

    /* and so does the policy */
    rl_store_block(s.get(), &key, now + 9000, now + 9000, now + 8500);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 8500, &d), 1);
    const rl_store_policy_entry_t entry { other.get(), limit };
    rl_store_policy_replace(s.get(), &entry, 1);
    EXPECT_EQ(rl_store_blocked(s.get(), &key, 1, 300, now + 8500, &d), 0);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreBlocked, EachBlockDropsUpToTwoRunOutOrStale)
{
    TestStore s(65536);
    const int64_t now = base_now_us;
    const Keys keys = keys_named(s.get(), "b", 5);

    for (int i = 0; i < 5; i++) {
        rl_store_block(s.get(), &*keys[i], now + 100 * (i + 1),
                       now + 1000, now);
    }
    EXPECT_EQ(s.stats().blocked, 5u);

    /* b0, b1, b2 have run out at now + 300: two go */
    Key fresh(s.get(), "fresh");
    rl_store_block(s.get(), &fresh, now + 10000, now + 10000, now + 300);
    EXPECT_EQ(s.stats().blocked, 4u);
    rl_store_block(s.get(), &fresh, now + 10000, now + 10000, now + 300);
    EXPECT_EQ(s.stats().blocked, 3u);
    rl_store_block(s.get(), &fresh, now + 10000, now + 10000, now + 300);
    EXPECT_EQ(s.stats().blocked, 3u) << "b3 has not run out";

    /* stale ones go too, whatever their time */
    rl_store_limits_changed(s.get());
    rl_store_block(s.get(), &*keys[0], now + 10000, now + 10000, now + 300);
    EXPECT_EQ(s.stats().blocked, 2u) << "b3 and b4 dropped, b0 added";
    EXPECT_TRUE(s.consistent());
}


TEST(StoreNofit, NamesSixtyFourKeysAMinuteThenOneLine)
{
    TestStore s(1 << 20);
    const int64_t now = base_now_us;
    const Keys keys = keys_named(s.get(), "n", RL_STORE_NOFIT_KEYS + 2);

    for (int i = 0; i < RL_STORE_NOFIT_KEYS; i++) {
        EXPECT_EQ(rl_store_nofit(s.get(), &*keys[i], now + i),
                  RL_STORE_NOFIT_NAME) << i;
    }
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[0], now + 100),
              RL_STORE_NOFIT_QUIET);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[64], now + 100),
              RL_STORE_NOFIT_UNNAMED);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[65], now + 200),
              RL_STORE_NOFIT_QUIET);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[64], now + 200),
              RL_STORE_NOFIT_QUIET);

    /* a minute after n0: n0 is forgotten and named again, its slot free */
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[0], now + minute_us),
              RL_STORE_NOFIT_NAME);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[1], now + minute_us),
              RL_STORE_NOFIT_QUIET);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[64], now + minute_us + 1),
              RL_STORE_NOFIT_NAME);
    EXPECT_EQ(rl_store_nofit(s.get(), &*keys[65], now + minute_us + 2),
              RL_STORE_NOFIT_NAME);

    /* the first keys have all gone: n0, n64 and n65 are left */
    const int64_t t1 = now + minute_us + 100;
    const Keys more = keys_named(s.get(), "m", RL_STORE_NOFIT_KEYS - 3);
    for (int i = 0; i < RL_STORE_NOFIT_KEYS - 3; i++) {
        EXPECT_EQ(rl_store_nofit(s.get(), &*more[i], t1),
                  RL_STORE_NOFIT_NAME) << i;
    }
    EXPECT_EQ(s.used(), 64u);

    /* the unnamed line: once a minute */
    Key extra(s.get(), "extra"), extra2(s.get(), "extra2");
    EXPECT_EQ(rl_store_nofit(s.get(), &extra, t1), RL_STORE_NOFIT_UNNAMED);
    EXPECT_EQ(rl_store_nofit(s.get(), &extra2, t1 + 1),
              RL_STORE_NOFIT_QUIET);
    EXPECT_EQ(s.used(), 64u);

    /* two minutes on, every key has gone */
    EXPECT_EQ(rl_store_nofit(s.get(), &extra, now + 3 * minute_us),
              RL_STORE_NOFIT_NAME);
    EXPECT_EQ(s.used(), 1u);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreKeys, LongKeysAreStoredAndComparedWhole)
{
    TestStore s(Slots { 64 });
    const auto params = params_for("1r/m", 2);
    const int64_t now = base_now_us;

    const std::string base(NGX_HTTP_RATE_LIMIT_KEY_MAX - 1, 'k');
    Key a(s.get(), base + "a"), b(s.get(), base + "b");
    Key prefix(s.get(), base), shorter(s.get(), base.substr(0, 100));
    Key middle(s.get(), base.substr(0, 150) + "x" + base.substr(151) + "a");

    take(s.get(), a, params, now);
    /* 256 bytes: 68 - 4 in the slot, then 92, 92 and 8 */
    EXPECT_EQ(s.used(), 4u);

    EXPECT_TRUE(held(s.get(), a, params, now));
    EXPECT_FALSE(held(s.get(), b, params, now));
    EXPECT_FALSE(held(s.get(), prefix, params, now));
    EXPECT_FALSE(held(s.get(), shorter, params, now));
    EXPECT_FALSE(held(s.get(), middle, params, now));

    take(s.get(), b, params, now);
    take(s.get(), b, params, now);
    take(s.get(), shorter, params, now);
    EXPECT_EQ(peek(s.get(), a, params, now).remaining, 1u);
    EXPECT_EQ(peek(s.get(), b, params, now).remaining, 0u);
    EXPECT_EQ(peek(s.get(), shorter, params, now).remaining, 1u);
    EXPECT_EQ(s.used(), 4u + 4 + 2);

    /* expired, their slots go back, and serve other long keys */
    const int64_t later = now + 3 * minute_us;
    Key c(s.get(), base + "c");
    take(s.get(), c, params, later);
    EXPECT_EQ(s.stats().buckets, 1u);
    EXPECT_EQ(s.used(), 4u);
    EXPECT_FALSE(held(s.get(), a, params, later));
    EXPECT_TRUE(held(s.get(), c, params, later));
    EXPECT_TRUE(s.consistent());

    /* every kind stores a long key: rows, policy, blocked, nofit */
    const auto limit = limit_of("2r/s", 2);
    rl_store_limit_t got;
    EXPECT_EQ(rl_store_row_write(s.get(), &a, &limit, 1), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), a, &got), NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES);
    EXPECT_EQ(find(s.get(), b, &got), NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    const rl_store_policy_entry_t entry { b.get(), limit };
    EXPECT_EQ(rl_store_policy_replace(s.get(), &entry, 1), RL_STORE_OK);
    EXPECT_EQ(find(s.get(), b, &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(find(s.get(), prefix, &got),
              NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    rl_store_block(s.get(), &a, later + 10, later + 10, later);
    ngx_http_rate_limit_decision_t d {};
    EXPECT_EQ(rl_store_blocked(s.get(), &a, 1, 1, later, &d), 1);
    EXPECT_EQ(rl_store_blocked(s.get(), &b, 1, 1, later, &d), 0);
    EXPECT_EQ(rl_store_nofit(s.get(), &a, later), RL_STORE_NOFIT_NAME);
    EXPECT_EQ(rl_store_nofit(s.get(), &b, later), RL_STORE_NOFIT_NAME);
    EXPECT_EQ(rl_store_nofit(s.get(), &a, later), RL_STORE_NOFIT_QUIET);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreKeys, AnEmptyKeyIsAKeyOfItsOwn)
{
    TestStore s(65536);
    const auto params = params_for("1r/m", 2);
    rl_store_key_t empty;
    rl_store_key(s.get(), nullptr, 0, &empty);
    Key one(s.get(), std::string(1, '\0'));

    ngx_http_rate_limit_decision_t d {};
    EXPECT_EQ(rl_store_take(s.get(), &empty, &params, 1, base_now_us, &d),
              RL_STORE_OK);
    EXPECT_EQ(d.remaining, 1u);
    EXPECT_EQ(rl_store_take(s.get(), &empty, &params, 1, base_now_us, &d),
              RL_STORE_OK);
    EXPECT_EQ(d.remaining, 0u);
    EXPECT_EQ(take(s.get(), one, params, base_now_us).remaining, 1u);
    EXPECT_EQ(s.stats().buckets, 2u);
    EXPECT_TRUE(s.consistent());
}


TEST(StoreKeys, BytesPerRowAndBucketByKeyLength)
{
    const size_t lengths[] = { 15, 32, 40, 64 };
    const uint64_t row_slots[] = { 1, 1, 2, 2 };
    const uint64_t bucket_slots[] = { 1, 1, 1, 1 };
    const auto limit = limit_of("2r/s", 2);
    const auto params = params_for("1r/m", 2);

    for (size_t n = 0; n < 4; n++) {
        TestStore s(65536);
        Key key(s.get(), std::string(lengths[n], 'k'));

        rl_store_row_write(s.get(), &key, &limit, 1);
        const uint64_t rows = s.used();
        take(s.get(), key, params, base_now_us);
        const uint64_t buckets = s.used() - rows;

        EXPECT_EQ(rows, row_slots[n]) << lengths[n];
        EXPECT_EQ(buckets, bucket_slots[n]) << lengths[n];
        std::printf("key of %zu bytes: a row %llu bytes, a bucket %llu\n",
                    lengths[n],
                    (unsigned long long) (rows * s.stats().slot_bytes),
                    (unsigned long long) (buckets * s.stats().slot_bytes));
    }
}


TEST(StoreKeys, KeysOfOneChainStayApart)
{
    TestStore s(Slots { 32 });
    const auto params = params_for("1r/m", 3);
    const uint64_t nslots = s.stats().slots;

    /* keys whose hash picks chain 0 */
    Keys keys;
    for (int i = 0; keys.size() < 12 && i < 100000; i++) {
        auto k = std::make_unique<Key>(s.get(), key_name("c", i));
        if ((uint64_t(k->get().hash) * nslots) >> 32 == 0) {
            keys.push_back(std::move(k));
        }
    }
    ASSERT_EQ(keys.size(), 12u);

    for (size_t i = 0; i < keys.size(); i++) {
        for (size_t n = 0; n <= i % 3; n++) {
            take(s.get(), *keys[i], params, base_now_us);
        }
    }
    for (size_t i = 0; i < keys.size(); i++) {
        EXPECT_EQ(peek(s.get(), *keys[i], params, base_now_us).remaining,
                  3 - (i % 3 + 1)) << i;
    }

    /* rows and policy in the same chain */
    const auto limit = limit_of("2r/s", 7);
    rl_store_row_write(s.get(), &*keys[3], &limit, 1);
    const rl_store_policy_entry_t entry { keys[4]->get(), limit };
    rl_store_policy_replace(s.get(), &entry, 1);
    rl_store_limit_t got;
    for (size_t i = 0; i < keys.size(); i++) {
        EXPECT_EQ(find(s.get(), *keys[i], &got),
                  i == 3 ? NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES
                  : i == 4 ? NGX_HTTP_RATE_LIMIT_SOURCE_YAML
                  : NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT) << i;
    }

    /* removed from the middle of the chain */
    rl_store_row_write(s.get(), &*keys[3], nullptr, 2);
    rl_store_row_forget(s.get(), 3);
    EXPECT_EQ(find(s.get(), *keys[3], &got),
              NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT);
    EXPECT_EQ(find(s.get(), *keys[4], &got), NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_TRUE(s.consistent());

    /* expired in LRU order, the others still found */
    const int64_t later = base_now_us + 10 * minute_us;
    Key other(s.get(), "other");
    take(s.get(), other, params, later);
    EXPECT_EQ(s.stats().buckets, 12u - 3 + 1);
    EXPECT_TRUE(s.consistent());
}


double cpu_seconds()
{
    timespec t {};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) / 1e9;
}


TEST(StoreScale, AMillionBuckets)
{
    const size_t n = 1000000;
    TestStore s(Slots { n + n / 16 });
    const auto params = params_for("1r/m", 5);

    std::vector<std::string> names(n);
    for (size_t i = 0; i < n; i++) {
        names[i] = "client:" + std::to_string(i * 7919);
    }

    /* the CPU time of this thread: the machine's other work aside */
    const double start = cpu_seconds();
    size_t stored = 0, right = 0;

    for (size_t i = 0; i < n; i++) {
        rl_store_key_t k;
        rl_store_key(s.get(), reinterpret_cast<const unsigned char *>(
                                  names[i].data()), names[i].size(), &k);
        ngx_http_rate_limit_decision_t d {};
        stored += rl_store_take(s.get(), &k, &params, 1 + i % 3,
                                base_now_us, &d) == RL_STORE_OK
                  && d.allowed;
    }

    for (size_t i = 0; i < n; i++) {
        rl_store_key_t k;
        rl_store_key(s.get(), reinterpret_cast<const unsigned char *>(
                                  names[i].data()), names[i].size(), &k);
        ngx_http_rate_limit_decision_t d {};
        rl_store_peek(s.get(), &k, &params, base_now_us, &d);
        right += d.remaining == 5 - (1 + i % 3);
    }

    const double seconds = cpu_seconds() - start;

    EXPECT_EQ(stored, n);
    EXPECT_EQ(right, n);
    EXPECT_EQ(s.stats().buckets, n);
    std::printf("a million takes and peeks: %.3f s of CPU\n", seconds);
#if !defined(__SANITIZE_ADDRESS__)
    EXPECT_LT(seconds, 2.0);
#endif
}


/*
 * The links of slot i, written by hand as a worker killed mid-update might
 * leave them: the layout of rl_store.cpp, its slots of 96 bytes at the end
 * of what it laid out, each beginning with its chain link, then its list's
 * prev and next.
 */
uint32_t *links_of(const TestStore &s, uint32_t i)
{
    const rl_store_stats_t st = s.stats();

    return reinterpret_cast<uint32_t *>(
        s.memory() + st.bytes - st.slots * 96 + (i - 1) * 96);
}

enum Link { chain_link = 0, prev_link, next_link };


/* runs calls in a child, which must end well within 10 s */
void ends_in_time(void (*calls)(const TestStore &), const TestStore &s)
{
    const pid_t pid = fork();
    ASSERT_NE(pid, -1);

    if (pid == 0) {
        alarm(10);
        calls(s);
        _exit(0);
    }

    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}


/* every call that walks a chain or a list */
void walk_everything(const TestStore &s)
{
    const auto params = params_for("1r/m", 1);
    const auto limit = limit_of("5r/s", 5);
    const rl_store_snapshot_t snap = snapshot(5, 5);
    rl_store_limit_t got;

    for (int i = 0; i < 40; i++) {
        Key k(s.get(), key_name("new", i));
        take(s.get(), k, params, base_now_us + minute_us * 2);
        rl_store_find_limit(s.get(), &k, &got);
        rl_store_row_write(s.get(), &k, &limit, 3);
        rl_store_row_write(s.get(), &k, nullptr, 4);
        rl_store_block(s.get(), &k, base_now_us + 1, base_now_us + 2,
                       base_now_us + minute_us * 3);
        ngx_http_rate_limit_decision_t d {};
        rl_store_blocked(s.get(), &k, 1, 1000, base_now_us, &d);
        rl_store_nofit(s.get(), &k, base_now_us + minute_us * 4);
    }

    rl_store_row_sweep(s.get(), 1, &snap);
    rl_store_row_sweep(s.get(), 2, &snap);
    rl_store_row_forget(s.get(), 100);

    Key p(s.get(), "policy");
    const rl_store_policy_entry_t entry { p.get(), limit };
    rl_store_policy_replace(s.get(), &entry, 1);
    rl_store_policy_replace(s.get(), nullptr, 0);
    rl_store_check(s.get());
}


/* a store holding some of every kind, each kind's slots in a known range */
void fill_every_kind(const TestStore &s)
{
    const auto params = params_for("1r/m", 1);
    const auto limit = limit_of("5r/s", 5);

    for (int i = 0; i < 8; i++) {
        Key b(s.get(), key_name("bucket", i)), r(s.get(), key_name("row", i));
        take(s.get(), b, params, base_now_us);
        ASSERT_EQ(rl_store_row_write(s.get(), &r, &limit, 1), RL_STORE_OK);
    }

    Key p(s.get(), "policy"), n(s.get(), "nofit"), x(s.get(), "blocked");
    const rl_store_policy_entry_t entry { p.get(), limit };
    ASSERT_EQ(rl_store_policy_replace(s.get(), &entry, 1), RL_STORE_OK);
    rl_store_nofit(s.get(), &n, base_now_us);
    rl_store_block(s.get(), &x, base_now_us + minute_us, base_now_us + minute_us,
                   base_now_us);
    ASSERT_EQ(s.used(), 19u);
}


TEST(StoreCrash, CyclesInChainsAndListsEndEveryWalk)
{
    TestStore s(Slots { 64 });
    fill_every_kind(s);

    /* each entry its own successor, in its chain and in its list */
    for (uint32_t i = 1; i <= 19; i++) {
        links_of(s, i)[chain_link] = i;
        links_of(s, i)[next_link] = i;
        links_of(s, i)[prev_link] = i;
    }
    EXPECT_FALSE(s.consistent());

    ends_in_time(walk_everything, s);
}


TEST(StoreCrash, LinksBeyondTheSlotsAreIgnored)
{
    TestStore s(Slots { 64 });
    fill_every_kind(s);

    for (uint32_t i = 1; i <= 19; i++) {
        links_of(s, i)[chain_link] = 0x7fffff00 + i;
        links_of(s, i)[next_link] = 40 + i;     /* beyond the high water */
        links_of(s, i)[prev_link] = 0xffffffff;
    }
    EXPECT_FALSE(s.consistent());

    ends_in_time(walk_everything, s);
}


/* counts a killed holder left one off: the free list lost a slot */
TEST(StoreCrash, NoSlotIsHandedOutBeyondTheLast)
{
    TestStore s(Slots { 8 });
    const auto params = params_for("1r/m", 1);
    const rl_store_snapshot_t snap = snapshot(1, 1);

    /* rows in slots 1 to 7, a bucket in 8 */
    sync_rows(s, 7, limit_of("5r/s", 5));
    Key b(s.get(), "bucket");
    take(s.get(), b, params, base_now_us);

    /* freed: slot 2, then slot 1; slot 2's link to 1 lost */
    Key r0(s.get(), "row0"), r1(s.get(), "row1");
    rl_store_row_sync(s.get(), &r0, nullptr, 1, &snap);
    rl_store_row_sync(s.get(), &r1, nullptr, 1, &snap);
    links_of(s, 2)[chain_link] = 0;
    ASSERT_EQ(s.stats().free_slots, 2u);

    Key n0(s.get(), "new0"), n1(s.get(), "new1");
    int rc = -1;
    take(s.get(), n0, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_OK);
    take(s.get(), n1, params, base_now_us, 1, &rc);
    EXPECT_EQ(rc, RL_STORE_FULL) << "no slot 9";
    EXPECT_EQ(s.stats().buckets, 2u);
}


TEST(StoreStats, CountsRequestsOutcomesAndEntries)
{
    TestStore s(65536);
    rl_store_count(s.get(), RL_VERDICT_OUTCOME_PASSED);
    rl_store_count(s.get(), RL_VERDICT_OUTCOME_PASSED);
    rl_store_count(s.get(), RL_VERDICT_OUTCOME_REJECTED);
    rl_store_count(s.get(), RL_VERDICT_OUTCOME_NONE);

    Key a(s.get(), "a"), b(s.get(), "b");
    const auto limit = limit_of("2r/s", 2);
    take(s.get(), a, limit.params, base_now_us);
    rl_store_row_write(s.get(), &a, &limit, 1);
    rl_store_row_write(s.get(), &b, nullptr, 2);
    const rl_store_policy_entry_t entry { b.get(), limit };
    rl_store_policy_replace(s.get(), &entry, 1);
    rl_store_block(s.get(), &b, base_now_us + 5, base_now_us + 5, base_now_us);

    const rl_store_stats_t st = s.stats();
    EXPECT_EQ(st.requests, 4u);
    EXPECT_EQ(st.outcomes[RL_VERDICT_OUTCOME_PASSED], 2u);
    EXPECT_EQ(st.outcomes[RL_VERDICT_OUTCOME_REJECTED], 1u);
    EXPECT_EQ(st.outcomes[RL_VERDICT_OUTCOME_FAILED_OPEN], 0u);
    EXPECT_EQ(st.buckets, 1u);
    EXPECT_EQ(st.rows, 1u);
    EXPECT_EQ(st.policy, 1u);
    EXPECT_EQ(st.blocked, 1u);
    EXPECT_EQ(st.slots - st.free_slots, 5u) << "a tombstone takes a slot";
    EXPECT_TRUE(s.consistent());
}


TEST(StoreSnapshot, VisibleAsPostgresSays)
{
    const std::vector<uint64_t> xip { 12, 14 };
    const auto snap = snapshot(10, 16, xip);

    EXPECT_EQ(rl_store_visible(&snap, 9), 1);
    EXPECT_EQ(rl_store_visible(&snap, 10), 1);
    EXPECT_EQ(rl_store_visible(&snap, 12), 0);
    EXPECT_EQ(rl_store_visible(&snap, 13), 1);
    EXPECT_EQ(rl_store_visible(&snap, 14), 0);
    EXPECT_EQ(rl_store_visible(&snap, 15), 1);
    EXPECT_EQ(rl_store_visible(&snap, 16), 0);
    EXPECT_EQ(rl_store_visible(&snap, 100), 0);
}


/* a process-shared mutex in the mapping, as nginx's slab mutex is */
void shared_lock(void *data)
{
    pthread_mutex_lock(static_cast<pthread_mutex_t *>(data));
}

void shared_unlock(void *data)
{
    pthread_mutex_unlock(static_cast<pthread_mutex_t *>(data));
}


TEST(StoreProcesses, FourProcessesShareOneBucket)
{
    const size_t store_bytes = 1 << 20;
    const size_t bytes = 4096 + store_bytes;
    void *map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(map, MAP_FAILED);

    auto *mutex = static_cast<pthread_mutex_t *>(map);
    auto *allowed = new (static_cast<char *>(map) + 256)
                        std::atomic<uint64_t>(0);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    ASSERT_EQ(pthread_mutex_init(mutex, &attr), 0);
    pthread_mutexattr_destroy(&attr);

    const rl_store_t store {
        rl_store_layout(static_cast<char *>(map) + 4096, store_bytes,
                        test_seed),
        shared_lock, shared_unlock, mutex
    };
    ASSERT_NE(store.shared, nullptr);

    const auto params = params_for("10r/m", 37);
    const int children = 4, takes = 10000;
    std::vector<pid_t> pids;

    for (int c = 0; c < children; c++) {
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);

        if (pid == 0) {
            const char name[] = "shared-client";
            rl_store_key_t k;
            rl_store_key(&store, reinterpret_cast<const unsigned char *>(
                                     name), sizeof(name) - 1, &k);
            uint64_t mine = 0;

            for (int i = 0; i < takes; i++) {
                ngx_http_rate_limit_decision_t d {};
                rl_store_take(&store, &k, &params, 1, base_now_us, &d);
                mine += d.allowed;
                rl_store_count(&store, d.allowed ? RL_VERDICT_OUTCOME_PASSED
                                       : RL_VERDICT_OUTCOME_REJECTED);
            }

            allowed->fetch_add(mine);
            _exit(0);
        }

        pids.push_back(pid);
    }

    for (pid_t pid : pids) {
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }

    EXPECT_EQ(allowed->load(), 37u);

    rl_store_stats_t st {};
    rl_store_stats(&store, &st);
    EXPECT_EQ(st.requests, uint64_t(children * takes));
    EXPECT_EQ(st.outcomes[RL_VERDICT_OUTCOME_PASSED], 37u);
    EXPECT_EQ(st.buckets, 1u);
    EXPECT_EQ(rl_store_check(&store), 1);

    pthread_mutex_destroy(mutex);
    munmap(map, bytes);
}

}  // namespace
