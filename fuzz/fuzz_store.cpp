/*
 * The zone's store (rl_store.h) driven by random sequences of its calls.
 * In a store with room to spare, every answer and count must be those of
 * a reference model written from the contract, plainly, with std
 * containers; in a tiny store, where entries are forgotten and refused,
 * the store must stay consistent (rl_store_check(): no slot lost or held
 * twice, every entry found by its key) whatever the sequence.
 */

#include "fuzz_check.h"

#include <rl_store.h>

#include <algorithm>
#include <cstdint>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <vector>


namespace {

using rate_limit_fuzz::require;

constexpr int64_t base_now_us = 1700000000000000LL;
constexpr size_t nkeys = 80;
constexpr size_t roomy_bytes = 256 * 1024;


/* the input, read a byte at a time; 0 once it runs out */
class Input {
public:
    Input(const uint8_t *data, size_t size) : data_(data), size_(size) {}

    bool more() const { return pos_ < size_; }
    uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
    unsigned pick(unsigned n) { return byte() % n; }

private:
    const uint8_t *data_;
    size_t size_;
    size_t pos_ = 0;
};


struct FlagLock {
    bool held = false;

    static void lock(void *data)
    {
        auto *l = static_cast<FlagLock *>(data);
        require(!l->held, "the store never takes its lock twice");
        l->held = true;
    }

    static void unlock(void *data)
    {
        auto *l = static_cast<FlagLock *>(data);
        require(l->held, "the store unlocks what it locked");
        l->held = false;
    }
};


/* keys that share prefixes, of 1 to 256 bytes, differing in the last */
std::vector<std::string> make_keys()
{
    const size_t lengths[] = { 0, 14, 31, 32, 63, 67, 200, 255 };
    std::vector<std::string> keys;

    for (size_t i = 0; i < nkeys; i++) {
        keys.push_back(std::string(lengths[i % 8], 'k')
                       + static_cast<char>(i));
    }

    return keys;
}


rl_store_limit_t make_limit(uint64_t count, uint64_t period_ms,
    uint64_t burst)
{
    rl_store_limit_t limit {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    limit.rate = { count, period_ms };
    require(ngx_http_rate_limit_make_params_blocking(
                &limit.rate, burst, &limit.params, err, sizeof(err))
            == NGX_HTTP_RATE_LIMIT_OK, "the fuzzer's limits are valid");
    return limit;
}


const std::vector<rl_store_limit_t> &limits()
{
    static const std::vector<rl_store_limit_t> all {
        make_limit(10, 1000, 5), make_limit(1, 60000, 2),
        make_limit(100, 1000, 50), make_limit(0, 1000, 0),
    };
    return all;
}


bool same(const ngx_http_rate_limit_decision_t &a,
    const ngx_http_rate_limit_decision_t &b)
{
    return a.allowed == b.allowed && a.remaining == b.remaining
           && a.retry_after_us == b.retry_after_us && a.reset_us == b.reset_us
           && a.state.tat_us == b.state.tat_us
           && a.state.token_code == b.state.token_code;
}


bool same(const rl_store_limit_t &a, const rl_store_limit_t &b)
{
    return a.rate.count == b.rate.count && a.rate.period_ms == b.rate.period_ms
           && a.params.burst == b.params.burst
           && a.params.interval_us == b.params.interval_us;
}


struct Snapshot {
    std::vector<uint64_t> xip;
    rl_store_snapshot_t s {};
};

void read_snapshot(Input &in, Snapshot &snap)
{
    snap.xip.clear();
    const uint64_t xmin = 1 + in.pick(40);
    const uint64_t xmax = xmin + in.pick(8);
    for (unsigned n = in.pick(4); n; n--) {
        snap.xip.push_back(xmin + in.pick(8));
    }
    snap.s = { xmin, xmax, snap.xip.data(), snap.xip.size() };
}


/* the contract, plainly: what the store must answer in a roomy store */
class Model {
public:
    struct Row {
        rl_store_limit_t limit;
        uint64_t generation;
        uint64_t txid;
        bool tombstone;
    };

    struct Blocked {
        size_t key;
        int64_t until_us, full_us;
        uint64_t version;
    };

    ngx_http_rate_limit_decision_t take(size_t key,
        const ngx_http_rate_limit_params_t &params, uint64_t cost,
        int64_t now)
    {
        ngx_http_rate_limit_decision_t d {};

        expire(now);

        auto it = find_bucket(key);
        if (it != lru_.end()) {
            ngx_http_rate_limit_decide(&params, &it->second, now, cost, &d);
            it->second = d.state;
            lru_.splice(lru_.begin(), lru_, it);
            return d;
        }

        ngx_http_rate_limit_decide(&params, nullptr, now, cost, &d);
        if (d.allowed) {
            lru_.emplace_front(key, d.state);
        }
        return d;
    }

    void refund(size_t key, const ngx_http_rate_limit_params_t &params,
        uint64_t cost, int64_t now)
    {
        auto it = find_bucket(key);
        if (it != lru_.end()) {
            it->second = ngx_http_rate_limit_refund(&params, &it->second, now,
                                                    cost);
        }
    }

    ngx_http_rate_limit_decision_t peek(size_t key,
        const ngx_http_rate_limit_params_t &params, int64_t now)
    {
        ngx_http_rate_limit_decision_t d {};
        auto it = find_bucket(key);
        ngx_http_rate_limit_decide(&params,
                                   it != lru_.end() ? &it->second : nullptr,
                                   now, 0, &d);
        return d;
    }

    ngx_http_rate_limit_source_e find_limit(size_t key,
        rl_store_limit_t *limit)
    {
        auto r = rows_.find(key);
        if (r != rows_.end() && !r->second.tombstone) {
            *limit = r->second.limit;
            return NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES;
        }
        auto p = policy_.find(key);
        if (p != policy_.end()) {
            *limit = p->second;
            return NGX_HTTP_RATE_LIMIT_SOURCE_YAML;
        }
        return NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT;
    }

    void policy_replace(const std::vector<std::pair<size_t,
        rl_store_limit_t>> &entries)
    {
        /* none for none changes no limit */
        if (entries.empty() && policy_.empty()) {
            return;
        }

        policy_.clear();
        for (const auto &[key, limit] : entries) {
            policy_[key] = limit;
        }
        version_++;
    }

    void row_write(size_t key, const rl_store_limit_t *limit, uint64_t txid)
    {
        auto it = rows_.find(key);
        const bool live = it != rows_.end() && !it->second.tombstone;

        if (limit) {
            const uint64_t generation =
                live ? std::max(it->second.generation, generation_)
                     : generation_;
            put(key, *limit, generation, txid);
            return;
        }

        if (live) {
            version_++;
        }
        Row &row = rows_[key];
        row.tombstone = true;
        row.txid = txid;
    }

    void row_sync(size_t key, const rl_store_limit_t *limit,
        uint64_t generation, const rl_store_snapshot_t &snap)
    {
        auto it = rows_.find(key);

        if (it != rows_.end() && it->second.txid
            && !rl_store_visible(&snap, it->second.txid))
        {
            return;
        }

        if (limit) {
            put(key, *limit, generation, 0);

        } else if (it != rows_.end()) {
            remove_row(it);
        }
    }

    void row_sweep(uint64_t generation, const rl_store_snapshot_t &snap)
    {
        for (auto it = rows_.begin(); it != rows_.end(); ) {
            const Row &row = it->second;
            auto next = std::next(it);

            if (!row.tombstone && row.generation != generation
                && (row.txid == 0 || rl_store_visible(&snap, row.txid)))
            {
                remove_row(it);
            }
            it = next;
        }
        generation_ = generation;
    }

    void row_forget(uint64_t xmin)
    {
        for (auto it = rows_.begin(); it != rows_.end(); ) {
            auto next = std::next(it);
            if (it->second.tombstone && it->second.txid < xmin) {
                rows_.erase(it);
            }
            it = next;
        }
    }

    int blocked(size_t key, uint64_t cost, int64_t interval_us, int64_t now,
        ngx_http_rate_limit_decision_t *d)
    {
        auto it = find_blocked(key);
        if (it == blocked_.end()) {
            return 0;
        }

        int rc = 0;
        if (it->version == version_) {
            const int64_t until_us = it->until_us
                                     + int64_t(cost - 1) * interval_us;
            if (until_us > now) {
                d->allowed = 0;
                d->remaining = 0;
                d->retry_after_us = until_us - now;
                d->reset_us = std::max<int64_t>(it->full_us - now, 0);
                rc = 1;
                cached_++;
            }
        }

        if (rc == 0 && it->until_us <= now) {
            blocked_.erase(it);
        }
        return rc;
    }

    void block(size_t key, int64_t until_us, int64_t full_us, int64_t now)
    {
        for (int n = 0; n < 2 && !blocked_.empty(); n++) {
            const Blocked &tail = blocked_.back();
            if (tail.until_us > now && tail.version == version_) {
                break;
            }
            blocked_.pop_back();
        }

        auto it = find_blocked(key);
        if (it != blocked_.end()) {
            blocked_.erase(it);
        }
        blocked_.push_front({ key, until_us, full_us, version_ });
    }

    void limits_changed() { version_++; }

    rl_store_nofit_e nofit(size_t key, int64_t now)
    {
        while (!nofit_.empty()
               && now - nofit_.back().second >= RL_STORE_NOFIT_PERIOD_US)
        {
            nofit_.pop_back();
        }

        for (const auto &n : nofit_) {
            if (n.first == key) {
                return RL_STORE_NOFIT_QUIET;
            }
        }

        if (nofit_.size() < RL_STORE_NOFIT_KEYS) {
            nofit_.emplace_front(key, now);
            return RL_STORE_NOFIT_NAME;
        }

        if (now - unnamed_us_ >= RL_STORE_NOFIT_PERIOD_US) {
            unnamed_us_ = now;
            return RL_STORE_NOFIT_UNNAMED;
        }
        return RL_STORE_NOFIT_QUIET;
    }

    uint64_t generation() const { return generation_; }

    void check_counts(const rl_store_stats_t &st) const
    {
        size_t live = 0;
        for (const auto &r : rows_) {
            live += !r.second.tombstone;
        }
        require(st.buckets == lru_.size(), "buckets as the model's");
        require(st.rows == live, "rows as the model's");
        require(st.policy == policy_.size(), "policy as the model's");
        require(st.blocked == blocked_.size(), "blocked as the model's");
        require(st.cached == cached_, "cached as the model's");
    }

private:
    using Bucket = std::pair<size_t, ngx_http_rate_limit_state_t>;

    void expire(int64_t now)
    {
        for (int n = 0; n < 3 && !lru_.empty(); n++) {
            if (lru_.back().second.tat_us > now) {
                return;
            }
            lru_.pop_back();
        }
    }

    std::list<Bucket>::iterator find_bucket(size_t key)
    {
        return std::find_if(lru_.begin(), lru_.end(),
                            [key](const Bucket &b) { return b.first == key; });
    }

    std::list<Blocked>::iterator find_blocked(size_t key)
    {
        return std::find_if(blocked_.begin(), blocked_.end(),
                            [key](const Blocked &b) { return b.key == key; });
    }

    void put(size_t key, const rl_store_limit_t &limit, uint64_t generation,
        uint64_t txid)
    {
        Row &row = rows_[key];
        row.limit = limit;
        row.generation = generation;
        row.txid = txid;
        row.tombstone = false;
        version_++;
    }

    void remove_row(std::map<size_t, Row>::iterator it)
    {
        if (!it->second.tombstone) {
            version_++;
        }
        rows_.erase(it);
    }

    std::list<Bucket> lru_;
    std::map<size_t, Row> rows_;
    std::map<size_t, rl_store_limit_t> policy_;
    std::list<Blocked> blocked_;
    std::list<std::pair<size_t, int64_t>> nofit_;
    int64_t unnamed_us_ = -RL_STORE_NOFIT_PERIOD_US;
    uint64_t generation_ = 0;
    uint64_t version_ = 0;
    uint64_t cached_ = 0;
};


alignas(64) unsigned char memory[roomy_bytes];

}  // namespace


extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const std::vector<std::string> texts = make_keys();
    Input in(data, size);

    /* roomy: the model's answers; tiny: 8 to 70 slots, consistency */
    const bool roomy = in.pick(4) != 0;
    const size_t bytes = roomy ? roomy_bytes : 1200 + 100 * in.pick(64);

    unsigned char seed[RL_STORE_SEED_LEN];
    for (auto &b : seed) {
        b = in.byte();
    }

    FlagLock lock;
    const rl_store_t store { rl_store_layout(memory, bytes, seed),
                             FlagLock::lock, FlagLock::unlock, &lock };
    require(store.shared != nullptr, "the fuzzer's stores can be laid out");

    std::vector<rl_store_key_t> keys(nkeys);
    for (size_t i = 0; i < nkeys; i++) {
        rl_store_key(&store, reinterpret_cast<const unsigned char *>(
                                 texts[i].data()), texts[i].size(), &keys[i]);
    }

    Model model;
    Snapshot snap;
    int64_t now = base_now_us;
    uint64_t counted = 0;
    const int64_t steps[] = { 0, 1, 1000, 100000, 10000000, 61000000 };

    while (in.more()) {
        const size_t key = in.pick(nkeys);
        const rl_store_limit_t &limit = limits()[in.pick(4)];
        const uint64_t cost = in.pick(8);
        ngx_http_rate_limit_decision_t d {}, want {};
        rl_store_limit_t got {}, expected {};

        switch (in.pick(15)) {
        case 0: {
            const int rc = rl_store_take(&store, &keys[key], &limit.params,
                                         cost, now, &d);
            if (roomy) {
                want = model.take(key, limit.params, cost, now);
                require(rc == RL_STORE_OK, "a roomy store takes every bucket");
                require(same(d, want), "take() decides as the model");
            }
            break;
        }
        case 1:
            rl_store_refund(&store, &keys[key], &limit.params, cost, now);
            model.refund(key, limit.params, cost, now);
            break;
        case 2:
            rl_store_peek(&store, &keys[key], &limit.params, now, &d);
            if (roomy) {
                want = model.peek(key, limit.params, now);
                require(same(d, want), "peek() reads as the model");
            }
            break;
        case 3: {
            const auto source = rl_store_find_limit(&store, &keys[key], &got);
            if (roomy) {
                const auto ws = model.find_limit(key, &expected);
                require(source == ws, "find_limit() finds the model's");
                require(source == NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT
                        || same(got, expected), "with the model's limit");
            }
            break;
        }
        case 4: {
            std::vector<rl_store_policy_entry_t> entries;
            std::vector<std::pair<size_t, rl_store_limit_t>> mine;
            for (unsigned n = in.pick(12); n; n--) {
                const size_t k = in.pick(nkeys);
                const rl_store_limit_t &l = limits()[in.pick(4)];
                entries.push_back({ keys[k], l });
                mine.emplace_back(k, l);
            }
            const int rc = rl_store_policy_replace(&store, entries.data(),
                                                   entries.size());
            if (roomy) {
                require(rc == RL_STORE_OK, "a roomy store takes the policy");
            }
            if (rc == RL_STORE_OK) {
                model.policy_replace(mine);
            }
            break;
        }
        case 5: {
            const bool del = in.pick(3) == 0;
            const uint64_t txid = 1 + in.pick(48);
            const int rc = rl_store_row_write(&store, &keys[key],
                                              del ? nullptr : &limit, txid);
            model.row_write(key, del ? nullptr : &limit, txid);
            if (roomy) {
                require(rc == RL_STORE_OK, "a roomy store takes the row");
            }
            break;
        }
        case 6: {
            const bool del = in.pick(3) == 0;
            const uint64_t generation = model.generation() + in.pick(3);
            read_snapshot(in, snap);
            const int rc = rl_store_row_sync(&store, &keys[key],
                                             del ? nullptr : &limit,
                                             generation, &snap.s);
            model.row_sync(key, del ? nullptr : &limit, generation, snap.s);
            if (roomy) {
                require(rc == RL_STORE_OK, "a roomy store takes the row");
            }
            break;
        }
        case 7: {
            const uint64_t generation = model.generation() + in.pick(3);
            read_snapshot(in, snap);
            rl_store_row_sweep(&store, generation, &snap.s);
            model.row_sweep(generation, snap.s);
            require(rl_store_row_generation(&store) == generation,
                    "the sweep's generation is the store's");
            break;
        }
        case 8: {
            const uint64_t xmin = in.pick(50);
            rl_store_row_forget(&store, xmin);
            model.row_forget(xmin);
            break;
        }
        case 9: {
            const int64_t interval = in.pick(4) * 1000;
            const int rc = rl_store_blocked(&store, &keys[key], cost,
                                            interval, now, &d);
            if (roomy) {
                const int wrc = model.blocked(key, cost, interval, now,
                                              &want);
                require(rc == wrc, "blocked() answers as the model");
                require(rc == 0 || (d.allowed == 0
                                    && d.retry_after_us == want.retry_after_us
                                    && d.reset_us == want.reset_us),
                        "with the model's wait");
            }
            break;
        }
        case 10: {
            const int64_t until = now + steps[in.pick(6)];
            const int64_t full = until + steps[in.pick(6)];
            rl_store_block(&store, &keys[key], until, full, now);
            model.block(key, until, full, now);
            break;
        }
        case 11:
            rl_store_limits_changed(&store);
            model.limits_changed();
            break;
        case 12: {
            const auto rc = rl_store_nofit(&store, &keys[key], now);
            if (roomy) {
                require(rc == model.nofit(key, now),
                        "nofit() answers as the model");
            }
            break;
        }
        case 13:
            rl_store_count(&store, static_cast<rl_verdict_outcome_e>(
                                       in.pick(RL_VERDICT_OUTCOMES + 1)));
            counted++;
            break;
        default:
            now += steps[in.pick(6)];
            break;
        }

        require(!lock.held, "every call lets go of the lock");
        require(rl_store_check(&store) == 1, "the store stays consistent");

        rl_store_stats_t st {};
        rl_store_stats(&store, &st);
        require(st.requests == counted, "every request counted");
        require(st.free_slots <= st.slots, "free slots within the slots");
        if (roomy) {
            model.check_counts(st);
        }
    }

    return 0;
}
