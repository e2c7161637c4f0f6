/*
 * Per-client limits synced from PostgreSQL into the zones' stores.
 *
 * One process per node syncs: it holds a lease in shared memory, renewed
 * every second, and the preferred one (nginx's worker 0) takes it first.
 * It reads every row once, then only the rows changed since the last sync,
 * every interval and at once on NOTIFY.  While PostgreSQL cannot answer,
 * the last synced limits keep applying, and a reload keeps them without
 * reading everything again.
 */

#include "rl_pg_conn.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>


static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the lease's fields are lock-free atomics");
static_assert(std::atomic<int64_t>::is_always_lock_free,
              "the lease's fields are lock-free atomics");


/* written under the host's lock; read without it where a moment's value
 * does (the generation a sync starts from, the metrics' sync time) */
struct rl_pg_lease_s {
    std::atomic<int64_t>   owner{0};        /* the syncing process */
    std::atomic<uint64_t>  heartbeat{0};    /* ms, of the host's clock */
    std::atomic<uint64_t>  generation{0};   /* 0: never synced */
    std::atomic<int64_t>   cursor{0};       /* see the sync's queries */
    std::atomic<uint64_t>  synced{0};       /* ms of the last sync */
};


namespace rl {
namespace pg {
namespace {

constexpr uint64_t  kLeaseTickMs = 1000;
constexpr uint64_t  kLeaseStaleMs = 3000;
constexpr uint64_t  kBackoffMinMs = 100;
constexpr uint64_t  kBackoffMaxMs = 10000;

#define RL_PG_LISTEN_SQL  "LISTEN rate_limit_buckets;"

/*
 * Each row is zone, key, rate, burst, snapshot, deleted.  The snapshot is
 * the query's, and its xmin the cursor: the oldest transaction still
 * running when the snapshot was taken.  The next sync reads every row
 * written by that transaction or a later one, so a transaction that
 * commits long after it wrote is not missed.  The snapshot also tells
 * whether the rows saw the bucket API's last write of a key.  A row with a
 * NULL zone only carries the snapshot, for a table with no rows.
 */
constexpr char kFullSql[] =
    "SELECT b.zone, b.key, b.rate, b.burst, s.snapshot, false "
    "FROM (SELECT pg_current_snapshot()::text AS snapshot) s "
    "LEFT JOIN rate_limit_buckets b ON true";

/* in time order, so that a key deleted and created again ends up created */
constexpr char kChangesSql[] =
    "WITH s AS (SELECT pg_current_snapshot()::text AS snapshot) "
    "SELECT zone, key, rate, burst, snapshot, deleted FROM ("
    "SELECT b.zone, b.key, b.rate, b.burst, s.snapshot, false AS deleted, "
    "b.updated_at AS at FROM s, rate_limit_buckets b "
    "WHERE b.txid >= $1::text::xid8 "
    "UNION ALL "
    "SELECT d.zone, d.key, NULL, NULL, s.snapshot, true, d.deleted_at "
    "FROM s, rate_limit_bucket_deletions d "
    "WHERE d.txid >= $1::text::xid8 "
    "UNION ALL "
    "SELECT NULL, NULL, NULL, NULL, s.snapshot, false, NULL FROM s"
    ") AS changes ORDER BY at NULLS FIRST";

enum Column { kZone = 0, kKey, kRate, kBurst, kSnapshot, kDeleted };

enum class State { idle, setup, listen, ready, full, changes };


struct Zone {
    std::string  name;
    rl_store_t   store;
};


class Sync final : public Owner {
public:
    Sync(const rl_pg_sync_config_t &config, const rl_pg_adapter_t &adapter);

    void start();
    void release();
    bool owner() const { return owner_; }
    void on_io(bool readable, bool writable);
    void on_timer();

private:
    void on_time(uint64_t now);
    void ready() override;
    void result(PGresult *res) override;
    void failed(const char *reason) override;
    void notified() override { sync(); }

    void lease_tick();
    void close();
    void sync();
    bool need_full() const;
    void row(PGresult *res);
    bool read_limit(PGresult *res, rl_store_limit_t *limit, char *err) const;
    void ignored(PGresult *res, int level, const char *reason) const;
    void done();
    void arm();

    Host               host_;
    Conn               conn_;
    std::string        conninfo_;
    std::string        setup_;       /* schema, then LISTEN */
    uint64_t           interval_ms_;
    std::vector<Zone>  zones_;
    rl_pg_lease_t     *lease_;
    int64_t            pid_;
    bool               preferred_;

    State              state_ = State::idle;
    uint64_t           lease_at_ = kNever;
    uint64_t           sync_at_ = kNever;
    uint64_t           reconnect_at_ = kNever;
    uint64_t           backoff_ = 0;

    uint64_t           generation_ = 0;
    int64_t            cursor_ = 0;
    Snapshot           snapshot_;        /* of the running query */
    uint64_t           rows_ = 0;
    uint64_t           started_ = 0;

    bool               owner_ = false;
    bool               lost_ = false;
    bool               sync_again_ = false;
    bool               truncated_ = false;
    bool               snapshot_read_ = false;
    bool               setup_failed_ = false;
};


Sync::Sync(const rl_pg_sync_config_t &config,
           const rl_pg_adapter_t &adapter)
    : host_(adapter), conn_(host_, *this), conninfo_(config.conninfo),
      interval_ms_(config.interval_ms), lease_(config.lease),
      pid_(config.pid), preferred_(config.preferred != 0)
{
    size_t len = 0;
    const char *schema = ngx_http_rate_limit_pg_schema(&len);

    setup_.assign(schema, len);
    setup_ += RL_PG_LISTEN_SQL;

    for (size_t i = 0; i < config.nzones; i++) {
        const rl_pg_zone_t &zone = config.zones[i];
        zones_.push_back(Zone{
            std::string(reinterpret_cast<const char *>(zone.name),
                        zone.name_len),
            zone.store});
    }
}


void Sync::start()
{
    lease_tick();
    arm();
}


void Sync::arm()
{
    host_.arm(std::min({lease_at_, sync_at_, reconnect_at_,
                        conn_.deadline()}));
}


void Sync::on_io(bool readable, bool writable)
{
    try {
        conn_.on_io(readable, writable);

    } catch (const std::bad_alloc &) {
        conn_.fail("out of memory");
    }

    arm();
}


void Sync::on_timer()
{
    host_.fired();

    try {
        on_time(host_.now());

    } catch (const std::bad_alloc &) {
        conn_.fail("out of memory");
    }

    arm();
}


void Sync::on_time(uint64_t now)
{
    conn_.on_time(now);

    if (lease_at_ <= now) {
        lease_at_ = kNever;
        lease_tick();
    }

    if (reconnect_at_ <= now) {
        reconnect_at_ = kNever;
        if (owner_) {
            conn_.connect(conninfo_.c_str());
        }
    }

    if (sync_at_ <= now) {
        sync_at_ = kNever;
        sync();
    }
}


/*
 * The lease: the preferred process takes it whenever it is free or stale,
 * any other only once it is very stale, so that a killed one is replaced.
 */
void Sync::lease_tick()
{
    uint64_t now = host_.now();
    bool take;

    host_.lock();

    uint64_t heartbeat = lease_->heartbeat.load();
    /* another process's clock may have read a moment later than ours */
    uint64_t age = now > heartbeat ? now - heartbeat : 0;
    int64_t holder = lease_->owner.load();

    if (holder == pid_) {
        take = true;

    } else if (holder == 0 || age > kLeaseStaleMs) {
        take = preferred_ || age > 2 * kLeaseStaleMs;

    } else {
        take = false;
    }

    if (take) {
        lease_->owner.store(pid_);
        lease_->heartbeat.store(now);
    }

    host_.unlock();

    if (take && !owner_) {
        owner_ = true;
        host_.log(RL_PG_LOG_INFO, "rate_limit_postgres: this worker syncs "
                  "the per-client limits");
        conn_.connect(conninfo_.c_str());

    } else if (!take && owner_) {
        owner_ = false;
        close();
    }

    lease_at_ = now + kLeaseTickMs;
}


void Sync::close()
{
    conn_.close();
    state_ = State::idle;
    sync_at_ = kNever;
    reconnect_at_ = kNever;
}


void Sync::release()
{
    lease_at_ = kNever;

    if (owner_) {
        owner_ = false;

        host_.lock();
        if (lease_->owner.load() == pid_) {
            lease_->owner.store(0);
        }
        host_.unlock();

        close();
    }

    arm();
}


/* the table, its trigger and LISTEN, in one round trip */
void Sync::ready()
{
    state_ = State::setup;
    setup_failed_ = false;

    (void) conn_.send(setup_.c_str(), 0, nullptr, false);
}


/* one line when PostgreSQL is lost; the last synced limits stay in force */
void Sync::failed(const char *reason)
{
    if (!lost_) {
        lost_ = true;
        host_.log(RL_PG_LOG_ERR, "rate_limit_postgres: cannot sync (%s): the "
                  "last synced limits keep applying", reason);
    }

    state_ = State::idle;
    sync_at_ = kNever;

    backoff_ = backoff_ ? std::min(backoff_ * 2, kBackoffMaxMs)
                        : kBackoffMinMs;

    if (owner_ && reconnect_at_ == kNever) {
        reconnect_at_ = host_.now() + backoff_;
        host_.log(RL_PG_LOG_DEBUG, "rate_limit_postgres: connecting again "
                  "in %llu ms", static_cast<unsigned long long>(backoff_));
    }
}


void Sync::sync()
{
    if (state_ != State::ready) {
        /* a query is running: sync again once it is done */
        sync_again_ = true;
        return;
    }

    sync_at_ = kNever;
    sync_again_ = false;
    snapshot_read_ = false;
    rows_ = 0;
    started_ = host_.now();

    if (need_full()) {
        state_ = State::full;
        generation_ = lease_->generation.load() + 1;
        cursor_ = 0;
        truncated_ = false;

        (void) conn_.send(kFullSql, 0, nullptr, true);
        return;
    }

    state_ = State::changes;
    generation_ = lease_->generation.load();
    cursor_ = lease_->cursor.load();

    std::string cursor = std::to_string(cursor_);
    const char *params[1] = {cursor.c_str()};

    (void) conn_.send(kChangesSql, 1, params, true);
}


/* a zone created since the last full sync has none of the rows yet */
bool Sync::need_full() const
{
    uint64_t generation = lease_->generation.load();

    if (generation == 0 || truncated_) {
        return true;
    }

    return std::any_of(zones_.begin(), zones_.end(), [&](const Zone &zone) {
        return rl_store_row_generation(&zone.store) != generation;
    });
}


void Sync::result(PGresult *res)
{
    if (res == nullptr) {
        done();
        return;
    }

    switch (PQresultStatus(res)) {

    case PGRES_SINGLE_TUPLE:
        row(res);
        return;

    case PGRES_TUPLES_OK:
    case PGRES_COMMAND_OK:
        return;

    default:
        if (state_ == State::setup) {
            /* a role that may not create tables may read a table made */
            host_.log(RL_PG_LOG_ERR, "rate_limit_postgres: cannot create the "
                      "schema: %s", PQresultErrorMessage(res));
            setup_failed_ = true;
            return;
        }

        host_.log(RL_PG_LOG_ERR, "rate_limit_postgres: query failed: %s",
                  PQresultErrorMessage(res));

        /* the results go on to their end; this sync does not count */
        generation_ = 0;
    }
}


void Sync::row(PGresult *res)
{
    /* every row of a query carries the same snapshot */
    if (!snapshot_read_) {
        if (!snapshot_.parse(PQgetvalue(res, 0, kSnapshot),
                             size_t(PQgetlength(res, 0, kSnapshot))))
        {
            if (generation_) {
                host_.log(RL_PG_LOG_ERR, "rate_limit_postgres: unreadable "
                          "snapshot \"%.*s\": this sync does not count",
                          std::min(PQgetlength(res, 0, kSnapshot), 64),
                          PQgetvalue(res, 0, kSnapshot));
                generation_ = 0;
            }
            return;
        }

        snapshot_read_ = true;

        if (int64_t(snapshot_.xmin) > cursor_) {
            cursor_ = int64_t(snapshot_.xmin);
        }
    }

    if (PQgetisnull(res, 0, kZone)) {
        return;
    }

    rows_++;

    /* TRUNCATE leaves an empty zone: the whole table is read again */
    size_t zone_len = size_t(PQgetlength(res, 0, kZone));
    if (zone_len == 0) {
        truncated_ = true;
        return;
    }

    const char *name = PQgetvalue(res, 0, kZone);
    bool deleted = PQgetvalue(res, 0, kDeleted)[0] == 't';

    auto zone = std::find_if(zones_.begin(), zones_.end(),
                             [&](const Zone &z) {
        return z.name.size() == zone_len
               && std::memcmp(z.name.data(), name, zone_len) == 0;
    });

    if (zone == zones_.end()) {
        /* it may be a zone of another node's configuration */
        if (!deleted) {
            ignored(res, RL_PG_LOG_NOTICE, "no such zone on this node");
        }
        return;
    }

    /* only a table made without the shipped CHECKs holds a longer key */
    if (PQgetlength(res, 0, kKey) > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
        if (!deleted) {
            ignored(res, RL_PG_LOG_WARN,
                    "the key is longer than 4096 bytes");
        }
        return;
    }

    rl_store_limit_t limit;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    if (!deleted && !read_limit(res, &limit, err)) {
        ignored(res, RL_PG_LOG_WARN, err);
        return;
    }

    unsigned char encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    size_t len = ngx_http_rate_limit_encode_key(
        reinterpret_cast<const unsigned char *>(PQgetvalue(res, 0, kKey)),
        size_t(PQgetlength(res, 0, kKey)), encoded);

    rl_store_key_t key;
    rl_store_key(&zone->store, encoded, len, &key);

    rl_store_snapshot_t snapshot = snapshot_.view();

    if (rl_store_row_sync(&zone->store, &key, deleted ? nullptr : &limit,
                          generation_, &snapshot)
        == RL_STORE_FULL_NEWLY)
    {
        log_store_full(host_,
                       reinterpret_cast<const unsigned char *>(name),
                       zone_len, &zone->store);
    }
}


/* rate, and burst (NULL: the rate's count) */
bool Sync::read_limit(PGresult *res, rl_store_limit_t *limit, char *err) const
{
    if (ngx_http_rate_limit_parse_rate_allow_zero(
            PQgetvalue(res, 0, kRate), size_t(PQgetlength(res, 0, kRate)),
            &limit->rate, err, NGX_HTTP_RATE_LIMIT_ERR_LEN)
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return false;
    }

    uint64_t burst = limit->rate.count;

    if (!PQgetisnull(res, 0, kBurst)) {
        const char *text = PQgetvalue(res, 0, kBurst);

        if (!parse_decimal(text, text + PQgetlength(res, 0, kBurst),
                           &burst))
        {
            std::strcpy(err, "invalid burst");
            return false;
        }
    }

    return ngx_http_rate_limit_make_params_blocking(
               &limit->rate, burst, &limit->params, err,
               NGX_HTTP_RATE_LIMIT_ERR_LEN)
           == NGX_HTTP_RATE_LIMIT_OK;
}


/*
 * A column, quoted and escaped as in JSON; NULL for NULL.  At most shown
 * bytes of it are shown, and then its length, so that the line stays
 * whole.
 */
void append_column(std::string &out, PGresult *res, int column,
                   size_t shown)
{
    if (PQgetisnull(res, 0, column)) {
        out += "NULL";
        return;
    }

    const unsigned char *s = reinterpret_cast<const unsigned char *>(
        PQgetvalue(res, 0, column));
    size_t len = size_t(PQgetlength(res, 0, column));
    size_t cut = len;

    if (cut > shown) {
        cut = shown;

        /* no character is halved */
        while (cut > 0 && (s[cut] & 0xc0) == 0x80) {
            cut--;
        }
    }

    std::string escaped(ngx_http_rate_limit_json_escape_len(s, cut), '\0');
    escaped.resize(ngx_http_rate_limit_json_escape(
        s, cut, reinterpret_cast<unsigned char *>(&escaped[0])));

    out += '"';
    out += escaped;
    out += '"';

    if (cut < len) {
        out += "...(" + std::to_string(len) + " bytes)";
    }
}


/* names a row that does not apply, so that an operator can find it */
void Sync::ignored(PGresult *res, int level, const char *reason) const
{
    std::string line = "zone=";
    append_column(line, res, kZone, 64);
    line += " key=";
    append_column(line, res, kKey, 128);
    line += " rate=";
    append_column(line, res, kRate, 32);
    line += " burst=";
    append_column(line, res, kBurst, 24);

    host_.log(level, "rate_limit_postgres: a row is ignored (%s): %s",
              reason, line.c_str());
}


void Sync::done()
{
    State state = state_;

    /*
     * The failed schema left its transaction aborted, and LISTEN unsent:
     * nothing would run on this connection until a ROLLBACK.
     */
    if (state == State::setup && setup_failed_) {
        state_ = State::listen;
        (void) conn_.send("ROLLBACK; " RL_PG_LISTEN_SQL, 0, nullptr, false);
        return;
    }

    state_ = State::ready;

    if (lost_) {
        lost_ = false;
        host_.log(RL_PG_LOG_NOTICE, "rate_limit_postgres: connected again");
    }

    backoff_ = 0;

    /* a query that failed, or gave no snapshot, does not count */
    bool counted = (state == State::full || state == State::changes)
                   && generation_ && snapshot_read_;
    rl_store_snapshot_t snapshot = snapshot_.view();
    uint64_t now = host_.now();

    if (counted && state == State::full) {
        for (const Zone &zone : zones_) {
            rl_store_row_sweep(&zone.store, generation_, &snapshot);
        }

        host_.log(RL_PG_LOG_INFO, "rate_limit_postgres: full sync of %llu "
                  "rows in %llu ms", static_cast<unsigned long long>(rows_),
                  static_cast<unsigned long long>(now - started_));
    }

    if (counted) {
        host_.lock();

        lease_->generation.store(generation_);
        if (cursor_ > lease_->cursor.load()) {
            lease_->cursor.store(cursor_);
        }
        lease_->synced.store(now);

        host_.unlock();

        for (const Zone &zone : zones_) {
            rl_store_row_forget(&zone.store, snapshot_.xmin);
        }
    }

    if (sync_again_ || truncated_ || state == State::setup
        || state == State::listen)
    {
        sync();
        return;
    }

    sync_at_ = now + interval_ms_;
}

}  // namespace
}  // namespace pg
}  // namespace rl


struct rl_pg_sync_s {
    rl_pg_sync_s(const rl_pg_sync_config_t &config,
                 const rl_pg_adapter_t &adapter)
        : sync(config, adapter)
    {}

    rl::pg::Sync  sync;
};


size_t rl_pg_lease_size(void) noexcept
{
    return sizeof(rl_pg_lease_t);
}


rl_pg_lease_t *rl_pg_lease_init(void *memory) noexcept
{
    return new (memory) rl_pg_lease_t();
}


uint64_t rl_pg_lease_synced_ms(const rl_pg_lease_t *lease) noexcept
{
    return lease->synced.load();
}


rl_pg_sync_t *rl_pg_sync_create(const rl_pg_sync_config_t *config,
    const rl_pg_adapter_t *adapter, char *err) noexcept
{
    if (config->conninfo == nullptr || config->lease == nullptr
        || config->pid == 0)
    {
        std::strcpy(err, "no connection string, lease or pid");
        return nullptr;
    }

    try {
        auto sync = std::make_unique<rl_pg_sync_t>(*config, *adapter);
        sync->sync.start();
        return sync.release();

    } catch (const std::bad_alloc &) {
        std::strcpy(err, "out of memory");
        return nullptr;
    }
}


void rl_pg_sync_release(rl_pg_sync_t *sync) noexcept
{
    sync->sync.release();
}


void rl_pg_sync_destroy(rl_pg_sync_t *sync) noexcept
{
    if (sync == nullptr) {
        return;
    }

    sync->sync.release();
    delete sync;
}


int rl_pg_sync_owner(const rl_pg_sync_t *sync) noexcept
{
    return sync->sync.owner() ? 1 : 0;
}


void rl_pg_sync_on_io(rl_pg_sync_t *sync, int readable, int writable)
    noexcept
{
    sync->sync.on_io(readable != 0, writable != 0);
}


void rl_pg_sync_on_timer(rl_pg_sync_t *sync) noexcept
{
    sync->sync.on_timer();
}
