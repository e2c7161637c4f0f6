/*
 * The core's PostgreSQL side (rl_pg.h) against a real PostgreSQL, with no
 * nginx: a poll() host (rl_pg_poll.h) drives the sync and the bucket API's
 * queue.  One cluster for the suite, initdb'd into a temporary folder and
 * listening on a free port of 127.0.0.1; every test has a database of its
 * own.  Skipped when PostgreSQL's binaries are missing.
 */

#include "rate_limit_redis_server.h"
#include "rate_limit_test_support.h"
#include "rl_pg_conn.h"
#include "rl_pg_poll.h"

#include <rl_pg.h>
#include <rl_store.h>

#include <libpq-fe.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>


namespace {

using rate_limit_test::PgHost;

const char kBinDir[] = "/usr/lib/postgresql/15/bin";


/* a PostgreSQL cluster of the suite's own; run as "postgres" under root */
class PgServer {
public:
    static std::unique_ptr<PgServer> create(std::string &why_not)
    {
        if (access((std::string(kBinDir) + "/initdb").c_str(), X_OK) != 0) {
            why_not = std::string("no PostgreSQL binaries in ") + kBinDir;
            return nullptr;
        }

        auto server = std::unique_ptr<PgServer>(new PgServer());
        if (!server->init(why_not) || !server->start()) {
            if (why_not.empty()) {
                why_not = "PostgreSQL does not start: see " + server->dir_
                          + "/postgres.log";
            }
            return nullptr;
        }
        return server;
    }

    ~PgServer()
    {
        stop();
        std::string rm = "rm -rf '" + dir_ + "'";
        (void) std::system(rm.c_str());
    }

    bool start()
    {
        return run(pg_ctl() + " -l '" + dir_ + "/postgres.log' -w -t 30 "
                   "start");
    }

    /* immediate: the connections are cut at once */
    bool stop()
    {
        return run(pg_ctl() + " -m immediate -w -t 20 stop");
    }

    std::string conninfo(const std::string &db) const
    {
        return "host=127.0.0.1 port=" + std::to_string(port_)
               + " user=postgres dbname=" + db + " connect_timeout=3";
    }

    /* a new, empty database */
    std::string new_db()
    {
        std::string name = "t" + std::to_string(++dbs_);
        exec("postgres", "CREATE DATABASE " + name);
        return name;
    }

    /* runs sql in a transaction of its own; the first value it returned */
    std::string exec(const std::string &db, const std::string &sql) const
    {
        PGconn *conn = PQconnectdb(conninfo(db).c_str());
        std::string value;

        if (PQstatus(conn) != CONNECTION_OK) {
            ADD_FAILURE() << PQerrorMessage(conn);
            PQfinish(conn);
            return value;
        }

        PGresult *res = PQexec(conn, sql.c_str());
        ExecStatusType status = PQresultStatus(res);

        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            ADD_FAILURE() << sql << ": " << PQresultErrorMessage(res);

        } else if (PQntuples(res) > 0 && PQnfields(res) > 0) {
            value = PQgetvalue(res, 0, 0);
        }

        PQclear(res);
        PQfinish(conn);
        return value;
    }

private:
    PgServer()
    {
        char path[] = "/tmp/rate-limit-pg-XXXXXX";
        if (mkdtemp(path) != nullptr) {
            dir_ = path;
        }
        port_ = rate_limit_test::free_loopback_port();
    }

    bool init(std::string &why_not)
    {
        if (dir_.empty() || port_ <= 0) {
            why_not = "no temporary folder or free port";
            return false;
        }

        if (geteuid() == 0) {
            passwd *pw = getpwnam("postgres");
            if (pw == nullptr) {
                why_not = "running as root, and no \"postgres\" user";
                return false;
            }
            as_user_ = "runuser -u postgres -- ";
            if (chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
                why_not = "cannot chown " + dir_;
                return false;
            }
        }
        chmod(dir_.c_str(), 0755);

        if (!run(std::string(kBinDir) + "/initdb -D '" + dir_ + "/data' "
                 "-U postgres -A trust -E UTF8 --no-locale --no-sync "
                 "--no-instructions"))
        {
            why_not = "initdb failed: see " + dir_ + "/run.log";
            return false;
        }

        std::ofstream conf(dir_ + "/data/postgresql.conf", std::ios::app);
        conf << "\nlisten_addresses = '127.0.0.1'\n"
             << "port = " << port_ << "\n"
             << "unix_socket_directories = '" << dir_ << "'\n"
             << "fsync = off\nfull_page_writes = off\n"
             << "log_min_messages = warning\n";
        return conf.good();
    }

    std::string pg_ctl() const
    {
        return std::string(kBinDir) + "/pg_ctl -D '" + dir_ + "/data'";
    }

    bool run(const std::string &command) const
    {
        std::string line = as_user_ + command + " >>'" + dir_
                           + "/run.log' 2>&1";
        return std::system(line.c_str()) == 0;
    }

    std::string  dir_;
    int          port_ = -1;
    std::string  as_user_;
    int          dbs_ = 0;
};


/* a blocking session, for what another transaction holds */
class Session {
public:
    explicit Session(const std::string &conninfo)
        : conn_(PQconnectdb(conninfo.c_str()))
    {
        EXPECT_EQ(PQstatus(conn_), CONNECTION_OK) << PQerrorMessage(conn_);
    }

    ~Session() { PQfinish(conn_); }

    void exec(const std::string &sql)
    {
        PGresult *res = PQexec(conn_, sql.c_str());
        EXPECT_EQ(PQresultStatus(res), PGRES_COMMAND_OK)
            << sql << ": " << PQresultErrorMessage(res);
        PQclear(res);
    }

private:
    PGconn  *conn_;
};


/* a zone's store in memory of its own, with its lock */
class Store {
public:
    explicit Store(size_t bytes = 1 << 20)
        : memory_(new uint64_t[bytes / 8])
    {
        const unsigned char seed[RL_STORE_SEED_LEN] = {1, 2, 3};

        store_.shared = rl_store_layout(memory_.get(), bytes, seed);
        store_.lock = [](void *m) { static_cast<std::mutex *>(m)->lock(); };
        store_.unlock = [](void *m) {
            static_cast<std::mutex *>(m)->unlock();
        };
        store_.lock_data = &mutex_;
    }

    const rl_store_t &get() const { return store_; }

    /* the row's limit as "<count>r/<period ms> <burst>", or "" */
    std::string row(const std::string &key) const
    {
        unsigned char encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
        size_t len = ngx_http_rate_limit_encode_key(
            reinterpret_cast<const unsigned char *>(key.data()), key.size(),
            encoded);

        rl_store_key_t k;
        rl_store_key(&store_, encoded, len, &k);

        rl_store_limit_t limit {};
        if (rl_store_find_limit(&store_, &k, &limit)
            != NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES)
        {
            return "";
        }
        return std::to_string(limit.rate.count) + "r/"
               + std::to_string(limit.rate.period_ms) + " "
               + std::to_string(limit.params.burst);
    }

private:
    std::unique_ptr<uint64_t[]>  memory_;
    std::mutex                   mutex_;
    rl_store_t                   store_ {};
};


/* a lease in memory of its own, as nginx's shared zone holds it */
class Lease {
public:
    Lease() : memory_(new uint64_t[rl_pg_lease_size() / 8 + 1]),
              lease_(rl_pg_lease_init(memory_.get()))
    {}

    rl_pg_lease_t *get() const { return lease_; }

private:
    std::unique_ptr<uint64_t[]>  memory_;
    rl_pg_lease_t               *lease_;
};


struct SyncDeleter {
    void operator()(rl_pg_sync_t *sync) const { rl_pg_sync_destroy(sync); }
};
using SyncPtr = std::unique_ptr<rl_pg_sync_t, SyncDeleter>;

struct ApiDeleter {
    void operator()(rl_pg_api_t *api) const { rl_pg_api_destroy(api); }
};
using ApiPtr = std::unique_ptr<rl_pg_api_t, ApiDeleter>;


class PgTest : public ::testing::Test {
protected:
    static void SetUpTestSuite()
    {
        server_ = PgServer::create(why_not_).release();
    }

    static void TearDownTestSuite()
    {
        delete server_;
        server_ = nullptr;
    }

    void SetUp() override
    {
        if (server_ == nullptr) {
            GTEST_SKIP() << why_not_;
        }
        db_ = server_->new_db();
        conninfo_ = server_->conninfo(db_);
    }

    void TearDown() override
    {
        /* a test that stopped the server leaves it running */
        if (server_ != nullptr) {
            (void) server_->start();
        }
    }

    /* the schema, as the sync or the API would make it */
    void schema()
    {
        size_t len = 0;
        const char *sql = ngx_http_rate_limit_pg_schema(&len);
        server_->exec(db_, std::string(sql, len));
    }

    SyncPtr sync(PgHost &host, rl_pg_lease_t *lease, int64_t pid,
                 bool preferred, uint64_t interval_ms = 60000)
    {
        rl_pg_sync_config_t config {};
        config.conninfo = conninfo_.c_str();
        config.interval_ms = interval_ms;
        config.zones = zones_.data();
        config.nzones = zones_.size();
        config.lease = lease;
        config.pid = pid;
        config.preferred = preferred;

        char err[RL_PG_ERR_LEN] = "";
        SyncPtr s(rl_pg_sync_create(&config, host.adapter(), err));
        EXPECT_NE(s, nullptr) << err;
        host.attach(s.get());
        return s;
    }

    void add_zone(const char *name, const Store &store)
    {
        zones_.push_back(rl_pg_zone_t{
            reinterpret_cast<const unsigned char *>(name), std::strlen(name),
            store.get()});
    }

    /* the zone "api" and its sync, the lease's preferred holder, once
     * its log says full_sync */
    SyncPtr synced(const std::string &full_sync, uint64_t interval_ms = 60000)
    {
        add_zone("api", store_);
        SyncPtr s = sync(host_, lease_.get(), 100, true, interval_ms);
        EXPECT_TRUE(PgHost::run_until({&host_}, [&] {
            return host_.logged(full_sync) == 1;
        }, 10000)) << full_sync;
        return s;
    }

    static PgServer           *server_;
    static std::string         why_not_;
    Store                      store_;
    Lease                      lease_;
    PgHost                     host_;
    std::string                db_;
    std::string                conninfo_;
    std::vector<rl_pg_zone_t>  zones_;
};

PgServer     *PgTest::server_ = nullptr;
std::string   PgTest::why_not_;


bool run_until(PgHost &host, const std::function<bool()> &predicate,
               int max_ms = 10000)
{
    return PgHost::run_until({&host}, predicate, max_ms);
}


TEST(PgSnapshot, ReadsPostgresText)
{
    rl::pg::Snapshot s;
    const std::string text = "10:20:12,15";

    ASSERT_TRUE(s.parse(text.data(), text.size()));
    EXPECT_EQ(s.xmin, 10u);
    EXPECT_EQ(s.xmax, 20u);
    EXPECT_EQ(s.xip, (std::vector<uint64_t>{12, 15}));

    const std::string none = "7:7:";
    ASSERT_TRUE(s.parse(none.data(), none.size()));
    EXPECT_TRUE(s.xip.empty());

    rl_store_snapshot_t view = s.view();
    EXPECT_EQ(view.xmin, 7u);
    EXPECT_EQ(view.nxip, 0u);
}


TEST(PgSnapshot, RefusesWhatIsNotASnapshot)
{
    for (const std::string bad : {"", "1", "1:2", ":2:", "1::", "a:2:",
                                  "1:2:x", "1:2:3,,4",
                                  "99999999999999999999:1:"})
    {
        rl::pg::Snapshot s;
        EXPECT_FALSE(s.parse(bad.data(), bad.size())) << bad;
    }
}


/* what the bucket API's queue gives a test: the replies, in order */
struct Answers {
    struct One {
        Answers         *all;
        std::string      name;
        rl_api_plan_t    plan {};
        rl_api_reply_t   reply {};
        rl_pg_api_op_t  *op = nullptr;
    };

    std::vector<std::unique_ptr<One>>  ops;
    std::vector<std::string>           done;   /* names, as answered */

    /* as a request's pool: freed with the test's answers */
    std::vector<std::unique_ptr<char[]>>  pool;

    static void *alloc(void *data, size_t size)
    {
        auto &pool = *static_cast<std::vector<std::unique_ptr<char[]>> *>(
            data);
        pool.push_back(std::make_unique<char[]>(size));
        return pool.back().get();
    }

    One &add(const std::string &name, rl_api_action_e action,
             const char *key, const char *rate = "5r/s", uint64_t burst = 7)
    {
        ops.push_back(std::make_unique<One>());
        One &one = *ops.back();
        one.all = this;
        one.name = name;
        one.plan.action = action;
        one.plan.zone = reinterpret_cast<const unsigned char *>("api");
        one.plan.zone_len = 3;
        one.plan.key = reinterpret_cast<const unsigned char *>(key);
        one.plan.key_len = std::strlen(key);
        one.plan.limit = 100;
        char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
        EXPECT_EQ(ngx_http_rate_limit_parse_rate_allow_zero(
                      rate, std::strlen(rate), &one.plan.rate, err,
                      sizeof(err)),
                  NGX_HTTP_RATE_LIMIT_OK);
        one.plan.burst = burst;
        return one;
    }

    static void answered(void *data)
    {
        One *one = static_cast<One *>(data);
        one->all->done.push_back(one->name);
    }

    void run(rl_pg_api_t *api, One &one, const rl_store_t *store = nullptr)
    {
        rl_api_alloc_t a {alloc, &pool};
        ASSERT_EQ(rl_pg_api_run(api, &one.plan, store, &a, &one.reply,
                                answered, &one, &one.op),
                  RL_PG_OK);
    }

    std::string body(const One &one) const
    {
        return std::string(reinterpret_cast<const char *>(one.reply.body),
                           one.reply.len);
    }
};


ApiPtr api_for(PgHost &host, const std::string &conninfo)
{
    char err[RL_PG_ERR_LEN] = "";
    ApiPtr api(rl_pg_api_create(conninfo.c_str(), host.adapter(), err));
    EXPECT_NE(api, nullptr) << err;
    host.attach(api.get());
    return api;
}


TEST_F(PgTest, ApiRunsItsQueriesInOrder)
{
    PgHost host;
    ApiPtr api = api_for(host, conninfo_);
    Answers answers;

    Answers::One &a = answers.add("a", RL_API_CREATE, "alice");
    Answers::One &b = answers.add("b", RL_API_CREATE, "bob", "3r/m", 3);
    Answers::One &again = answers.add("again", RL_API_CREATE, "alice");
    Answers::One &list = answers.add("list", RL_API_LIST, "");

    for (Answers::One *one : {&a, &b, &again, &list}) {
        answers.run(api.get(), *one);
    }

    /* never from inside the call */
    EXPECT_TRUE(answers.done.empty());

    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 4; }));
    EXPECT_EQ(answers.done,
              (std::vector<std::string>{"a", "b", "again", "list"}));

    EXPECT_EQ(a.reply.status, 201);
    EXPECT_EQ(b.reply.status, 201);
    EXPECT_EQ(again.reply.status, 409);
    EXPECT_EQ(list.reply.status, 200);
    EXPECT_NE(answers.body(list).find("\"alice\""), std::string::npos)
        << answers.body(list);
    EXPECT_NE(answers.body(list).find("\"bob\""), std::string::npos);

    EXPECT_EQ(server_->exec(db_, "SELECT rate FROM rate_limit_buckets "
                                 "WHERE key = 'bob'"), "3r/m");
}


TEST_F(PgTest, ApiDropsACancelledQuery)
{
    PgHost host;
    ApiPtr api = api_for(host, conninfo_);
    Answers answers;

    Answers::One &x = answers.add("x", RL_API_CREATE, "x");
    Answers::One &y = answers.add("y", RL_API_CREATE, "y");
    Answers::One &z = answers.add("z", RL_API_CREATE, "z");

    answers.run(api.get(), x);
    answers.run(api.get(), y);
    answers.run(api.get(), z);
    rl_pg_api_cancel(api.get(), y.op);

    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 2; }));
    /* the loop runs on a while: y is never answered */
    PgHost::run_until({&host}, [] { return false; }, 300);

    EXPECT_EQ(answers.done, (std::vector<std::string>{"x", "z"}));
    EXPECT_EQ(server_->exec(db_, "SELECT string_agg(key, ',' ORDER BY key) "
                                 "FROM rate_limit_buckets"), "x,z");
}


/*
 * A request that goes away while its query runs leaves its reply behind
 * in a freed pool: when the connection then fails, the reply is not
 * written to.
 */
TEST_F(PgTest, ApiLeavesACancelledRunningQueryAloneWhenPostgresFails)
{
    PgHost host;
    ApiPtr api = api_for(host, conninfo_);
    Answers answers;

    Answers::One &first = answers.add("first", RL_API_CREATE, "first");
    answers.run(api.get(), first);
    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 1; }));

    /* the next write waits for this lock: it is running, unanswered */
    Session session(conninfo_);
    session.exec("BEGIN");
    session.exec("LOCK TABLE rate_limit_buckets IN ACCESS EXCLUSIVE MODE");

    Answers::One &x = answers.add("x", RL_API_CREATE, "x");
    answers.run(api.get(), x);
    PgHost::run_until({&host}, [] { return false; }, 300);

    rl_pg_api_cancel(api.get(), x.op);
    const int freed = 12345;
    x.reply.status = freed;

    /* the API's backend, waiting for the lock */
    ASSERT_EQ(server_->exec(db_, "SELECT count(pg_terminate_backend(pid)) "
                                 "FROM pg_stat_activity "
                                 "WHERE wait_event_type = 'Lock' "
                                 "AND datname = current_database()"),
              "1");

    ASSERT_TRUE(run_until(host, [&] {
        return host.logged("rate_limit_api: PostgreSQL is unavailable") == 1;
    }, 5000));
    PgHost::run_until({&host}, [] { return false; }, 100);

    EXPECT_EQ(x.reply.status, freed);
    EXPECT_EQ(answers.done, (std::vector<std::string>{"first"}));
}


TEST_F(PgTest, ApiAnswersUnavailableWhenPostgresIsAway)
{
    PgHost host;
    ApiPtr api = api_for(host, "host=127.0.0.1 port="
                               + std::to_string(
                                     rate_limit_test::free_loopback_port())
                               + " user=postgres connect_timeout=3");
    Answers answers;
    Answers::One &a = answers.add("a", RL_API_CREATE, "a");

    answers.run(api.get(), a);
    EXPECT_TRUE(answers.done.empty());

    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 1; }));
    EXPECT_EQ(a.reply.status, 503);
    EXPECT_EQ(host.logged("rate_limit_api: PostgreSQL is unavailable"), 1u);
}


TEST_F(PgTest, ApiAppliesItsWriteToTheStore)
{
    PgHost host;
    ApiPtr api = api_for(host, conninfo_);
    Store store;
    Answers answers;

    Answers::One &a = answers.add("a", RL_API_CREATE, "carol", "2r/s", 4);
    answers.run(api.get(), a, &store.get());

    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 1; }));
    EXPECT_EQ(a.reply.status, 201);
    EXPECT_EQ(store.row("carol"), "2r/1000 4");

    Answers::One &d = answers.add("d", RL_API_DELETE, "carol");
    answers.run(api.get(), d, &store.get());

    ASSERT_TRUE(run_until(host, [&] { return answers.done.size() == 2; }));
    EXPECT_EQ(d.reply.status, 204);
    EXPECT_EQ(store.row("carol"), "");
}


TEST_F(PgTest, SyncReadsEveryRowThenTheChanges)
{
    schema();
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate, "
                       "burst) VALUES ('api', 'a', '10r/s', 20), "
                       "('api', 'b', '1r/m', NULL), "
                       "('elsewhere', 'c', '1r/s', 1)");

    SyncPtr s = synced("full sync of 3 rows");
    ASSERT_TRUE(rl_pg_sync_owner(s.get()));
    EXPECT_EQ(store_.row("a"), "10r/1000 20");
    EXPECT_EQ(store_.row("b"), "1r/60000 1");
    EXPECT_EQ(host_.logged("rate_limit_postgres: a row is ignored (no such "
                          "zone on this node): zone=\"elsewhere\" key=\"c\" "
                          "rate=\"1r/s\" burst=\"1\""), 1u);
    EXPECT_NE(rl_pg_lease_synced_ms(lease_.get()), 0u);

    /* another transaction; the interval is a minute: NOTIFY says it */
    server_->exec(db_, "UPDATE rate_limit_buckets SET rate = '7r/s' "
                       "WHERE key = 'a'; INSERT INTO rate_limit_buckets "
                       "(zone, key, rate, burst) VALUES "
                       "('api', 'd', '3r/s', 0)");
    ASSERT_TRUE(run_until(host_, [&] { return store_.row("d") != ""; },
                          3000));
    EXPECT_EQ(store_.row("a"), "7r/1000 20");
    /* burst 0 blocks */
    EXPECT_EQ(store_.row("d"), "3r/1000 0");

    /* the deletion log */
    server_->exec(db_, "DELETE FROM rate_limit_buckets WHERE key = 'a'");
    ASSERT_TRUE(run_until(host_, [&] { return store_.row("a") == ""; },
                          3000));
    EXPECT_EQ(store_.row("b"), "1r/60000 1");

    /* no full sync but the first */
    EXPECT_EQ(host_.logged("full sync of"), 1u);

    /* TRUNCATE: everything is read again */
    server_->exec(db_, "TRUNCATE rate_limit_buckets");
    ASSERT_TRUE(run_until(host_, [&] {
        return host_.logged("full sync of 0 rows") == 1;
    }, 3000));
    EXPECT_EQ(store_.row("b"), "");
    EXPECT_EQ(store_.row("d"), "");
}


TEST_F(PgTest, SyncIgnoresBadRowsWithTheirReason)
{
    schema();
    /* a table made without the shipped CHECKs */
    server_->exec(db_, "ALTER TABLE rate_limit_buckets DROP CONSTRAINT IF "
                       "EXISTS rate_limit_buckets_rate_check");
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate, "
                       "burst) VALUES ('api', 'good', '1r/s', 1), "
                       "('api', 'bad', 'often', 1)");

    SyncPtr s = synced("full sync of 2 rows");
    EXPECT_EQ(store_.row("good"), "1r/1000 1");
    EXPECT_EQ(store_.row("bad"), "");
    EXPECT_EQ(host_.logged("rate_limit_postgres: a row is ignored ("), 1u);
    EXPECT_EQ(host_.logged("key=\"bad\" rate=\"often\""), 1u);
}


TEST_F(PgTest, OneSyncALeaseWithTakeover)
{
    schema();
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate) "
                       "VALUES ('api', 'a', '1r/s')");

    Store store;
    add_zone("api", store);
    Lease lease;
    auto lock = std::make_shared<std::mutex>();
    PgHost first(lock), second(lock);
    SyncPtr worker0 = sync(first, lease.get(), 100, true);
    SyncPtr worker1 = sync(second, lease.get(), 101, false);

    ASSERT_TRUE(PgHost::run_until({&first, &second}, [&] {
        return first.logged("full sync of 1 rows") == 1;
    }, 10000));
    PgHost::run_until({&first, &second}, [] { return false; }, 1500);

    EXPECT_TRUE(rl_pg_sync_owner(worker0.get()));
    EXPECT_FALSE(rl_pg_sync_owner(worker1.get()));
    EXPECT_FALSE(second.watching());

    /* worker 0 stops renewing: the other waits for twice the stale time */
    first.frozen = true;
    uint64_t frozen_at = PgHost::now_ms();

    ASSERT_TRUE(PgHost::run_until({&first, &second}, [&] {
        return rl_pg_sync_owner(worker1.get()) != 0;
    }, 9000));
    /* its last heartbeat was at most a tick before it froze */
    EXPECT_GE(PgHost::now_ms() - frozen_at, 5000u);
    EXPECT_EQ(second.logged("this worker syncs the per-client limits"), 1u);

    /* it goes on from the lease's cursor: changes, no full read */
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate) "
                       "VALUES ('api', 'b', '2r/s')");
    ASSERT_TRUE(PgHost::run_until({&first, &second}, [&] {
        return store.row("b") != "";
    }, 5000));
    EXPECT_EQ(second.logged("full sync of"), 0u);

    /* worker 0 wakes up to a lease held: it gives up its connection */
    first.frozen = false;
    ASSERT_TRUE(PgHost::run_until({&first, &second}, [&] {
        return !rl_pg_sync_owner(worker0.get());
    }, 3000));
    EXPECT_FALSE(first.watching());
    EXPECT_TRUE(rl_pg_sync_owner(worker1.get()));
}


/* a reload keeps the shared memory: the new worker reads only changes */
TEST_F(PgTest, AReloadGoesOnFromTheLease)
{
    schema();
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate) "
                       "VALUES ('api', 'a', '1r/s')");

    SyncPtr old_worker = synced("full sync of 1 rows");
    old_worker.reset();

    PgHost host;
    SyncPtr new_worker = sync(host, lease_.get(), 200, true);
    EXPECT_TRUE(rl_pg_sync_owner(new_worker.get()));

    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate) "
                       "VALUES ('api', 'b', '2r/s')");
    ASSERT_TRUE(run_until(host, [&] { return store_.row("b") != ""; },
                          5000));
    EXPECT_EQ(store_.row("a"), "1r/1000 1");
    EXPECT_EQ(host.logged("full sync of"), 0u);
}


TEST_F(PgTest, SyncReconnectsWithBackoff)
{
    schema();
    SyncPtr s = synced("full sync of 0 rows");

    ASSERT_TRUE(server_->stop());

    /* 100 ms, then twice as long each time */
    ASSERT_TRUE(run_until(host_, [&] {
        return host_.logged("connecting again in 1600 ms") == 1;
    }, 5000));

    std::vector<std::string> backoff;
    for (const PgHost::LogLine &line : host_.log()) {
        if (line.text.find("connecting again in") != std::string::npos) {
            backoff.push_back(line.text.substr(line.text.find(" in ") + 4));
        }
    }
    EXPECT_EQ(backoff, (std::vector<std::string>{"100 ms", "200 ms",
                                                 "400 ms", "800 ms",
                                                 "1600 ms"}));
    EXPECT_EQ(host_.logged("cannot sync"), 1u);

    ASSERT_TRUE(server_->start());
    server_->exec(db_, "INSERT INTO rate_limit_buckets (zone, key, rate) "
                       "VALUES ('api', 'back', '4r/s')");

    ASSERT_TRUE(run_until(host_, [&] { return store_.row("back") != ""; },
                          15000));
    EXPECT_EQ(host_.logged("rate_limit_postgres: connected again"), 1u);
    EXPECT_EQ(host_.logged("full sync of"), 1u);
}


TEST_F(PgTest, SyncGivesUpOnAStalledQuery)
{
    schema();
    SyncPtr s = synced("full sync of 0 rows", 200);

    /* the next sync waits for this lock, and hears nothing */
    auto session = std::make_unique<Session>(conninfo_);
    session->exec("BEGIN");
    session->exec("LOCK TABLE rate_limit_buckets IN ACCESS EXCLUSIVE MODE");
    uint64_t locked_at = PgHost::now_ms();

    ASSERT_TRUE(run_until(host_, [&] {
        return host_.logged("rate_limit_postgres: cannot sync (no answer)")
               == 1;
    }, 20000));
    EXPECT_GE(PgHost::now_ms() - locked_at, 15000u);

    session.reset();
    ASSERT_TRUE(run_until(host_, [&] {
        return host_.logged("connected again") == 1;
    }, 5000));
}

} // namespace
