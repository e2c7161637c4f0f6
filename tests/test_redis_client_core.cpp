/*
 * What the thorough suite, test_redis_client.cpp, does not check of the
 * core's Redis client: late replies of timed-out decisions ahead of a
 * probe's, a refund sent again with EVAL after NOSCRIPT, no map asked for
 * within 100 ms of the last, a decision made from a callback while a batch
 * is read, and a random walk of events that keeps every promise.
 */

#include <rl_redis.h>

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>


namespace {

struct Fake {
    uint64_t                  now_us = 1000000;
    std::vector<unsigned>     opened;
    std::vector<unsigned>     closed;
    std::vector<std::string>  logs;
    int                       posts = 0;
    uint64_t                  timer_ms = 0;
    int                       timer_hold = -1;
    int                       timers = 0;
    bool                      refuse = false;

    rl_redis_adapter_t adapter()
    {
        rl_redis_adapter_t a {};

        a.data = this;
        a.open = [](void *d, unsigned link, const rl_redis_endpoint_t *,
                    char *err) {
            auto *f = static_cast<Fake *>(d);
            if (f->refuse) {
                std::strcpy(err, "Connection refused");
                return RL_REDIS_ERROR;
            }
            f->opened.push_back(link);
            return RL_REDIS_OK;
        };
        a.want_write = [](void *, unsigned) {};
        a.close = [](void *d, unsigned link) {
            static_cast<Fake *>(d)->closed.push_back(link);
        };
        a.set_timer = [](void *d, uint64_t ms, int hold) {
            auto *f = static_cast<Fake *>(d);
            f->timer_ms = ms;
            f->timer_hold = hold;
            f->timers++;
        };
        a.post = [](void *d) { static_cast<Fake *>(d)->posts++; };
        a.log = [](void *d, int, const char *msg) {
            static_cast<Fake *>(d)->logs.push_back(msg);
        };
        a.now_us = [](void *d) { return static_cast<Fake *>(d)->now_us; };
        a.lock = [](void *) {};
        a.unlock = [](void *) {};

        return a;
    }
};


std::string
take(rl_redis_client_t *c, unsigned link)
{
    const char *data;
    size_t len;

    rl_redis_output(c, link, &data, &len);
    std::string out(data ? data : "", len);
    rl_redis_output_sent(c, link, len);

    return out;
}


size_t
count(const std::string &s, const std::string &what)
{
    size_t n = 0;

    for (size_t at = s.find(what); at != std::string::npos;
         at = s.find(what, at + 1))
    {
        n++;
    }

    return n;
}


void
feed(rl_redis_client_t *c, unsigned link, const std::string &bytes)
{
    rl_redis_on_data(c, link, bytes.data(), bytes.size());
}


std::string
sha_reply()
{
    return "$40\r\n" + std::string(40, 'a') + "\r\n";
}


struct Client {
    Fake                                  fake;
    std::unique_ptr<unsigned char[]>      shm;
    rl_redis_shared_t                    *shared;
    rl_redis_client_t                    *client = nullptr;

    size_t scripts = 4;

    explicit Client(const char *password = nullptr, uint64_t db = 0,
                    bool cluster = false, const char *heartbeat = nullptr)
    {
        shm.reset(new unsigned char[rl_redis_shared_size() + 8]);
        shared = rl_redis_shared_init(shm.get());

        static rl_redis_endpoint_t ep = { "127.0.0.1", 6379, nullptr,
                                          "127.0.0.1:6379", nullptr, 0,
                                          nullptr, 0 };
        rl_redis_config_t cfg {};
        cfg.endpoints = &ep;
        cfg.nendpoints = 1;
        cfg.password = password;
        cfg.password_len = password ? std::strlen(password) : 0;
        cfg.db = db;
        cfg.cluster = cluster;
        if (heartbeat) {
            cfg.heartbeat_key = heartbeat;
            cfg.heartbeat_key_len = std::strlen(heartbeat);
            cfg.heartbeat_id = "host:42";
            cfg.heartbeat_id_len = 7;
            scripts = 5;
        }
        cfg.timeout_ms = 100;
        cfg.failure_policy = "z=open";
        cfg.shared = shared;

        rl_redis_adapter_t a = fake.adapter();
        char err[RL_REDIS_ERR_LEN];
        client = rl_redis_create(&cfg, &a, err);
    }

    ~Client() { rl_redis_destroy(client); }

    /* connected, scripts loaded */
    void up()
    {
        rl_redis_on_connected(client, 0);
        std::string out = take(client, 0);
        EXPECT_EQ(count(out, "SCRIPT"), scripts) << out;
        std::string loaded;
        for (size_t i = 0; i < scripts; i++) {
            loaded += sha_reply();
        }
        feed(client, 0, loaded);
    }
};


struct Key {
    rl_redis_key_t k {};

    explicit Key(const char *name)
    {
        k.key = reinterpret_cast<const unsigned char *>(name);
        k.key_len = std::strlen(name);
        k.interval = "1000";
        k.interval_len = 4;
        k.burst = "10";
        k.burst_len = 2;
        k.cost = "1";
        k.cost_len = 1;
        k.token_code = "7";
        k.token_code_len = 1;
    }
};


int done_calls;

void
on_done(void *data)
{
    (void) data;
    done_calls++;
}


const char kAllowed[] = "*5\r\n:1\r\n:1\r\n:9\r\n:0\r\n:1000\r\n";


/* one decision sent, and its timeout run out */
void
time_out_one(Client &c)
{
    Key a("p:z:a");
    rl_redis_request_t *ra;

    ASSERT_EQ(rl_redis_decide(c.client, &a.k, 1, on_done, nullptr, &ra),
              RL_REDIS_OK);
    rl_redis_on_posted(c.client);
    take(c.client, 0);
    c.fake.now_us += 100000;
    rl_redis_on_timer(c.client);
    EXPECT_EQ(a.k.status, RL_REDIS_KEY_FAILED);
}

}  // namespace


TEST(RedisClientCore, FiveTimeoutsOpenTheCircuitAndAProbeClosesIt)
{
    Client c;
    c.up();

    for (int i = 0; i < 5; i++) {
        time_out_one(c);
    }

    ASSERT_EQ(c.fake.logs.size(), 1u);
    EXPECT_EQ(c.fake.logs[0],
              "rate_limit_redis \"127.0.0.1:6379\" is unreachable (reply "
              "timed out): circuit open after 5 failures, requests are "
              "decided at once by the zones' on_failure policy: z=open");

    rl_redis_circuit_info_t info;
    ASSERT_EQ(rl_redis_shared_circuits(c.shared), 1u);
    rl_redis_shared_circuit(c.shared, 0, &info);
    EXPECT_EQ(info.open, 1);
    EXPECT_EQ(info.opened, 1u);
    EXPECT_STREQ(info.address, "127.0.0.1:6379");

    /* open: decided at once, no round trip */
    Key b("p:z:b");
    rl_redis_request_t *rb;
    EXPECT_EQ(rl_redis_decide(c.client, &b.k, 1, on_done, nullptr, &rb),
              RL_REDIS_ERROR);
    EXPECT_EQ(b.k.status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(take(c.client, 0), "");

    /* the watch probes 100 ms after the circuit opened */
    c.fake.now_us += 100000;
    rl_redis_on_timer(c.client);
    std::string probe = take(c.client, 0);
    EXPECT_EQ(probe, std::string("*6\r\n$7\r\nEVALSHA\r\n$40\r\n")
                     + ngx_http_rate_limit_script_one_sha1()
                     + "\r\n$1\r\n0\r\n$1\r\n0\r\n$1\r\n0\r\n$1\r\n1\r\n");

    /* the five late replies are dropped, the probe's closes the circuit */
    std::string late;
    for (int i = 0; i < 6; i++) {
        late += kAllowed;
    }
    feed(c.client, 0, late);

    ASSERT_EQ(c.fake.logs.size(), 2u);
    EXPECT_EQ(c.fake.logs[1],
              "rate_limit_redis \"127.0.0.1:6379\" is reachable again: "
              "circuit closed, zones are enforced by Redis");
    rl_redis_shared_circuit(c.shared, 0, &info);
    EXPECT_EQ(info.open, 0);
    EXPECT_EQ(info.closed, 1u);
}


TEST(RedisClientCore, ClusterRoutesBySlotAndRefundsWhenOneRejects)
{
    Client c(nullptr, 0, true);
    c.up();

    /* the first SCRIPT LOAD asks for the map */
    std::string out = take(c.client, 0);
    EXPECT_EQ(out, "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n");

    feed(c.client, 0,
         "*2\r\n"
         "*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
         "*3\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n");
    ASSERT_EQ(c.fake.opened.size(), 2u);
    EXPECT_EQ(c.fake.opened[1], 1u);
    rl_redis_on_connected(c.client, 1);
    EXPECT_EQ(count(take(c.client, 1), "SCRIPT"), 4u);

    /* "{b}" is slot 3300, on link 0; "{a}" slot 15495, on link 1 */
    Key keys[2] = { Key("{a}x"), Key("{b}y") };
    rl_redis_key_t k[2] = { keys[0].k, keys[1].k };
    rl_redis_request_t *r;
    done_calls = 0;

    ASSERT_EQ(rl_redis_decide(c.client, k, 2, on_done, nullptr, &r),
              RL_REDIS_OK);
    EXPECT_EQ(count(take(c.client, 0), "{b}y"), 1u);
    EXPECT_EQ(count(take(c.client, 1), "{a}x"), 1u);

    feed(c.client, 0, kAllowed);
    EXPECT_EQ(done_calls, 0);
    feed(c.client, 1, sha_reply() + sha_reply() + sha_reply() + sha_reply()
                      + "*5\r\n:0\r\n:0\r\n:0\r\n:500\r\n:1000\r\n");
    EXPECT_EQ(done_calls, 1);
    EXPECT_EQ(k[0].status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(k[0].decision.allowed, 0);
    EXPECT_EQ(k[1].decision.allowed, 1);

    /* the tokens {b}y took go back, with the refund script */
    out = take(c.client, 0);
    EXPECT_EQ(count(out, ngx_http_rate_limit_refund_script_sha1()), 1u) << out;
    EXPECT_EQ(count(out, "{b}y"), 1u);
    EXPECT_EQ(take(c.client, 1), "");

    /* NOSCRIPT: loaded again, and sent once more with the script's text */
    feed(c.client, 0, "-NOSCRIPT No matching script\r\n");
    out = take(c.client, 0);
    EXPECT_EQ(count(out, "SCRIPT"), 4u);
    EXPECT_EQ(count(out, "$4\r\nEVAL\r\n"), 1u);
    EXPECT_EQ(count(out, "{b}y"), 1u);
}


TEST(RedisClientCore, MovedSendsTheOpToTheNewMaster)
{
    Client c(nullptr, 0, true);
    c.up();
    take(c.client, 0);
    feed(c.client, 0,
         "*1\r\n"
         "*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n");

    Key a("{a}x");
    rl_redis_request_t *r;
    done_calls = 0;

    ASSERT_EQ(rl_redis_decide(c.client, &a.k, 1, on_done, nullptr, &r),
              RL_REDIS_OK);
    take(c.client, 0);

    feed(c.client, 0, "-MOVED 15495 127.0.0.1:7002\r\n");
    ASSERT_EQ(c.fake.opened.size(), 2u);
    std::string out = take(c.client, 1);
    EXPECT_EQ(count(out, "SCRIPT"), 4u);
    EXPECT_EQ(count(out, "{a}x"), 1u);
    /* the map was read a moment ago: not asked again within 100 ms */
    EXPECT_EQ(count(take(c.client, 0), "CLUSTER"), 0u);

    rl_redis_on_connected(c.client, 1);
    feed(c.client, 1, sha_reply() + sha_reply() + sha_reply() + sha_reply()
                      + kAllowed);
    EXPECT_EQ(done_calls, 1);
    EXPECT_EQ(a.k.status, RL_REDIS_KEY_DECIDED);
}


namespace {

struct Reentrant {
    rl_redis_client_t    *client;
    rl_redis_request_t   *victim;
    rl_redis_key_t       *again;
    rl_redis_request_t   *again_request = nullptr;
    int                   again_rc = 0;
    int                   calls = 0;
};


void
on_done_reentrant(void *data)
{
    auto *r = static_cast<Reentrant *>(data);

    if (r->calls++ == 0) {
        rl_redis_cancel(r->client, r->victim);
        r->again_rc = rl_redis_decide(r->client, r->again, 1, on_done,
                                      nullptr, &r->again_request);
    }
}

}  // namespace


TEST(RedisClientCore, ACallbackMayCancelAndDecideWhileABatchIsRead)
{
    Client c;
    c.up();

    Key a("p:z:a"), b("p:z:b"), v("p:z:v"), again("p:z:again");
    rl_redis_request_t *ra, *rb, *rv;
    Reentrant re{c.client, nullptr, &again.k};
    done_calls = 0;

    ASSERT_EQ(rl_redis_decide(c.client, &a.k, 1, on_done_reentrant, &re,
                              &ra), RL_REDIS_OK);
    ASSERT_EQ(rl_redis_decide(c.client, &b.k, 1, on_done_reentrant, &re,
                              &rb), RL_REDIS_OK);
    ASSERT_EQ(rl_redis_decide(c.client, &v.k, 1, on_done_reentrant, &re,
                              &rv), RL_REDIS_OK);
    re.victim = rv;
    rl_redis_on_posted(c.client);
    take(c.client, 0);

    std::string three;
    for (int i = 0; i < 3; i++) {
        three += ":1\r\n:1\r\n:9\r\n:0\r\n:1000\r\n";
    }
    feed(c.client, 0, "*15\r\n" + three);

    EXPECT_EQ(re.calls, 2);
    EXPECT_EQ(re.again_rc, RL_REDIS_OK);
    EXPECT_EQ(v.k.status, RL_REDIS_KEY_PENDING);
    EXPECT_EQ(c.fake.posts, 2);

    rl_redis_on_posted(c.client);
    EXPECT_EQ(count(take(c.client, 0), "p:z:again"), 1u);
    feed(c.client, 0, kAllowed);
    EXPECT_EQ(done_calls, 1);
    EXPECT_EQ(again.k.status, RL_REDIS_KEY_DECIDED);
}


namespace {

/* a request of the random walk, alive until its callback or its cancel */
struct Walk_request {
    std::vector<Key>             names;
    std::vector<rl_redis_key_t>  keys;
    rl_redis_request_t          *handle = nullptr;
    bool                         over = false;
};

std::vector<Walk_request *>  walk_live;
int                          walk_bad_callbacks;


void
walk_done(void *data)
{
    auto *r = static_cast<Walk_request *>(data);

    for (const rl_redis_key_t &k : r->keys) {
        if (k.status == RL_REDIS_KEY_PENDING) {
            walk_bad_callbacks++;
        }
    }

    if (r->over) {
        walk_bad_callbacks++;
    }

    r->over = true;
}


void
random_walk(bool cluster, unsigned seed)
{
    Client c(seed % 2 ? "pw" : nullptr, seed % 3, cluster,
             seed % 2 ? "p:nodes" : nullptr);
    std::srand(seed);
    walk_bad_callbacks = 0;

    const char *names[] = { "{a}x", "{b}y", "k1", "{a}z" };
    const std::string replies[] = {
        /* mostly what Redis says, now and then what it should not */
        kAllowed, "*5\r\n:0\r\n:0\r\n:0\r\n:500\r\n:1000\r\n", "+OK\r\n",
        sha_reply(),
        "*10\r\n:1\r\n:1\r\n:9\r\n:0\r\n:1000\r\n:1\r\n:1\r\n:9\r\n:0\r\n"
        ":1000\r\n",
        "-NOSCRIPT No matching script\r\n", "-ERR busy\r\n",
        "-MOVED 3300 127.0.0.1:7001\r\n", "-ASK 15495 127.0.0.1:6379\r\n",
        "*2\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:6379\r\n"
        "*3\r\n:8192\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n",
        ":3\r\n", "x\r\n", "*3\r\n:1\r\n", "$5\r\nab"
    };

    for (int step = 0; step < 20000; step++) {
        int what = std::rand() % 100;
        unsigned link = static_cast<unsigned>(std::rand() % 2);

        if (what < 25) {
            auto *r = new Walk_request;
            size_t n = 1 + std::rand() % 3;
            for (size_t i = 0; i < n; i++) {
                r->names.emplace_back(names[std::rand() % 4]);
            }
            for (Key &k : r->names) {
                r->keys.push_back(k.k);
            }
            if (rl_redis_decide(c.client, r->keys.data(), n, walk_done, r,
                                &r->handle) == RL_REDIS_OK)
            {
                walk_live.push_back(r);
            } else {
                for (const rl_redis_key_t &k : r->keys) {
                    EXPECT_EQ(k.status, RL_REDIS_KEY_FAILED);
                }
                delete r;
            }

        } else if (what < 32 && !walk_live.empty()) {
            size_t i = std::rand() % walk_live.size();
            if (!walk_live[i]->over) {
                rl_redis_cancel(c.client, walk_live[i]->handle);
                walk_live[i]->over = true;
            }

        } else if (what < 60) {
            const std::string &r = replies[std::rand() % 4
                                           ? std::rand() % 5
                                           : std::rand() % 14];
            size_t cut = std::rand() % (r.size() + 1);
            feed(c.client, link, r.substr(0, cut));
            feed(c.client, link, r.substr(cut));

        } else if (what < 70) {
            rl_redis_on_posted(c.client);

        } else if (what < 82) {
            c.fake.now_us += std::rand() % 300000;
            rl_redis_on_timer(c.client);

        } else if (what < 83) {
            rl_redis_on_closed(c.client, link, "Connection reset by peer");

        } else if (what < 92) {
            rl_redis_on_connected(c.client, link);

        } else {
            take(c.client, link);
        }

        for (size_t i = 0; i < walk_live.size(); ) {
            if (walk_live[i]->over) {
                delete walk_live[i];
                walk_live[i] = walk_live.back();
                walk_live.pop_back();
            } else {
                i++;
            }
        }
    }

    EXPECT_EQ(walk_bad_callbacks, 0);

    rl_redis_destroy(c.client);
    c.client = nullptr;

    for (Walk_request *r : walk_live) {
        delete r;
    }

    walk_live.clear();
}

}  // namespace


TEST(RedisClientCore, RandomEventsKeepEveryPromise)
{
    for (unsigned seed = 1; seed <= 6; seed++) {
        random_walk(false, seed);
        random_walk(true, seed);
    }
}
