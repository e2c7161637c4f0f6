/*
 * The check of a request (rl_check.h) on real stores in malloc'd memory,
 * a clock the test moves, and the fake Redis host (rl_redis_fake.h) for
 * the Redis paths: the decisions, the refunds, the cache of rejections,
 * the degraded share, the headers' exact text and the log lines.
 */

#include "rl_redis_fake.h"

#include <rl_check.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>


namespace {

using namespace rl_fake;

constexpr int  log_err = RL_REDIS_LOG_ERR;
constexpr int  log_warn = RL_REDIS_LOG_WARN;
constexpr int  log_info = RL_REDIS_LOG_INFO;

const unsigned char seed[RL_STORE_SEED_LEN] = {
    9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6
};


struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
};


/* a zone as the host fills it, with its store in malloc'd memory */
class Zone {
public:
    Zone(const std::string &name, const std::string &rate, uint64_t burst,
         rl_zone_backend_e backend = RL_ZONE_BACKEND_LOCAL,
         rl_zone_failure_e on_failure = RL_ZONE_FAILURE_OPEN,
         size_t bytes = 1 << 20)
        : name_(name), prefix_("rl:" + name + ":"),
          memory_(std::malloc(bytes))
    {
        char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

        EXPECT_EQ(ngx_http_rate_limit_parse_rate(rate.data(), rate.size(),
                                                 &zone_.rate, err,
                                                 sizeof(err)),
                  NGX_HTTP_RATE_LIMIT_OK) << err;
        EXPECT_EQ(ngx_http_rate_limit_make_params(&zone_.rate, burst,
                                                  &zone_.params, err,
                                                  sizeof(err)),
                  NGX_HTTP_RATE_LIMIT_OK) << err;

        zone_.name = reinterpret_cast<const unsigned char *>(name_.data());
        zone_.name_len = name_.size();
        rl_zone_texts(&zone_.params, &zone_.texts);
        zone_.backend = backend;
        zone_.on_failure = on_failure;
        zone_.redis_prefix =
            reinterpret_cast<const unsigned char *>(prefix_.data());
        zone_.redis_prefix_len = prefix_.size();
        zone_.store.shared = rl_store_layout(memory_.get(), bytes, seed);
        zone_.store.lock = lock;
        zone_.store.unlock = unlock;
        zone_.store.lock_data = &held_;
        EXPECT_NE(zone_.store.shared, nullptr);
    }

    Zone(const Zone &) = delete;
    Zone &operator=(const Zone &) = delete;

    rl_zone_t *get() { return &zone_; }
    const rl_store_t *store() const { return &zone_.store; }

    /* a per-client limit, as the policy file gives it */
    void policy(const std::string &key, const std::string &rate,
                uint64_t burst)
    {
        keys_.push_back(key);
        rl_store_policy_entry_t  e {};
        char                     err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

        rl_store_key(&zone_.store,
                     reinterpret_cast<const unsigned char *>(
                         keys_.back().data()),
                     keys_.back().size(), &e.key);
        ASSERT_EQ(ngx_http_rate_limit_parse_rate_allow_zero(
                      rate.data(), rate.size(), &e.limit.rate, err,
                      sizeof(err)),
                  NGX_HTTP_RATE_LIMIT_OK) << err;
        ASSERT_EQ(ngx_http_rate_limit_make_params_blocking(
                      &e.limit.rate, burst, &e.limit.params, err,
                      sizeof(err)),
                  NGX_HTTP_RATE_LIMIT_OK) << err;
        entries_.push_back(e);
        ASSERT_EQ(rl_store_policy_replace(&zone_.store, entries_.data(),
                                          entries_.size()),
                  RL_STORE_OK);
    }

    /* rows until no more fit */
    void fill_with_rows()
    {
        const rl_store_snapshot_t  snapshot {1, 1, nullptr, 0};
        const rl_store_limit_t     limit {zone_.rate, zone_.params};

        for (int i = 0; i < 10000; i++) {
            const std::string  name = "row" + std::to_string(i);
            rl_store_key_t     key;

            rl_store_key(&zone_.store,
                         reinterpret_cast<const unsigned char *>(name.data()),
                         name.size(), &key);

            if (rl_store_row_sync(&zone_.store, &key, &limit, 1, &snapshot)
                != RL_STORE_OK)
            {
                return;
            }
        }

        ADD_FAILURE() << "the rows never filled the store";
    }

    /* a bucket's tokens now */
    uint64_t tokens(const std::string &key, int64_t now_us) const
    {
        rl_store_key_t                  k;
        ngx_http_rate_limit_decision_t  d {};

        rl_store_key(&zone_.store,
                     reinterpret_cast<const unsigned char *>(key.data()),
                     key.size(), &k);
        rl_store_peek(&zone_.store, &k, &zone_.params, now_us, &d);
        return d.remaining;
    }

    rl_store_stats_t stats() const
    {
        rl_store_stats_t  s {};
        rl_store_stats(&zone_.store, &s);
        return s;
    }

    bool held() const { return held_; }

private:
    static void lock(void *data)
    {
        bool *held = static_cast<bool *>(data);
        EXPECT_FALSE(*held);
        *held = true;
    }

    static void unlock(void *data)
    {
        bool *held = static_cast<bool *>(data);
        EXPECT_TRUE(*held);
        *held = false;
    }

    std::string                            name_, prefix_;
    std::unique_ptr<void, FreeDeleter>     memory_;
    bool                                   held_ = false;
    rl_zone_t                              zone_ {};
    std::vector<std::string>               keys_;
    std::vector<rl_store_policy_entry_t>   entries_;
};


/*
 * The host of one request: its pool (which hands out odd addresses, as
 * nginx's ngx_pnalloc() may), the clock, the log, the done() calls.
 */
class Request {
public:
    Request(FakeClock &clock, size_t nlimits)
        : clock_(clock), memory_(rl_check_size(nlimits) / 8 + 1)
    {
        EXPECT_EQ(rl_check_size(nlimits) % 8, 0u);
        alloc_.alloc = pool_alloc;
        alloc_.data = this;
        /* the object is laid out in memory that need not be zeroed */
        std::memset(memory_.data(), 0xa5, memory_.size() * 8);
        check_ = rl_check_init(memory_.data(), &host_, &alloc_, nlimits,
                               done_cb, this);
        EXPECT_NE(check_, nullptr);
    }

    Request(const Request &) = delete;
    Request &operator=(const Request &) = delete;

    rl_check_t *get() const { return check_; }
    const rl_api_alloc_t *alloc() const { return &alloc_; }

    void add(Zone &zone, const std::string &key, uint64_t cost = 1)
    {
        keys_.push_back(std::make_unique<std::string>(key));
        costs_.push_back(std::make_unique<std::string>(std::to_string(cost)));
        ASSERT_EQ(rl_check_add(check_, zone.get(), cost,
                               costs_.back()->data(), costs_.back()->size(),
                               reinterpret_cast<const unsigned char *>(
                                   keys_.back()->data()),
                               keys_.back()->size()),
                  RL_CHECK_OK);
    }

    /* rl_check_decide(): the result, when it is decided at once */
    int decide(rl_redis_client_t *client)
    {
        const rl_check_conf_t  c = conf();
        return rl_check_decide(check_, client, &c, &result_);
    }

    /* rl_check_finish(), once done() is called */
    const rl_check_result_t &finish()
    {
        const rl_check_conf_t  c = conf();
        rl_check_finish(check_, &c, &result_);
        return result_;
    }

    const rl_check_result_t &result() const { return result_; }

    /* the location's settings, and the request's log */
    int                      dry_run = 0;
    uintptr_t                log_level = log_info;
    const rl_redis_shared_t *shared = nullptr;

    unsigned done_calls() const { return done_; }
    const std::vector<LogLine> &logs() const { return logs_; }

private:
    static void *pool_alloc(void *data, size_t size)
    {
        auto *r = static_cast<Request *>(data);
        r->pool_.push_back(std::make_unique<unsigned char[]>(size + 1));
        return r->pool_.back().get() + 1;
    }

    static int64_t now_cb(void *data)
    {
        return static_cast<int64_t>(static_cast<Request *>(data)
                                        ->clock_.now_us);
    }

    static void log_cb(void *data, int level, const char *msg, size_t len)
    {
        EXPECT_EQ(msg[len], '\0');
        static_cast<Request *>(data)->logs_.push_back(
            {level, std::string(msg, len)});
    }

    static void done_cb(void *data)
    {
        static_cast<Request *>(data)->done_++;
    }

    rl_check_conf_t conf() const
    {
        rl_check_conf_t  c {};

        c.dry_run = dry_run;
        c.headers = 1;
        c.reject_level = log_err;
        c.log_level = log_level;
        c.shared = shared;
        return c;
    }

    static constexpr rl_check_host_t  host_ = { now_cb, log_cb };

    FakeClock                                      &clock_;
    std::vector<uint64_t>                           memory_;
    rl_check_result_t                               result_ {};
    rl_api_alloc_t                                  alloc_ {};
    std::vector<std::unique_ptr<unsigned char[]>>   pool_;
    std::vector<std::unique_ptr<std::string>>       keys_, costs_;
    rl_check_t                                     *check_ = nullptr;
    std::vector<LogLine>                            logs_;
    unsigned                                        done_ = 0;
};


using Headers = std::vector<std::pair<std::string, std::string>>;

Headers headers(const rl_check_result_t &r)
{
    Headers  h;

    for (size_t i = 0; i < r.nheaders; i++) {
        h.emplace_back(std::string(r.headers[i].name, r.headers[i].name_len),
                       std::string(reinterpret_cast<const char *>(
                                       r.headers[i].value),
                                   r.headers[i].value_len));
    }

    return h;
}


/* the headers in the order the check writes them; "" leaves one out */
Headers expected(const std::string &policy, const std::string &ratelimit,
    const std::string &limit, const std::string &remaining,
    const std::string &reset = "", const std::string &retry_after = "")
{
    Headers  h {{"RateLimit-Policy", policy}, {"RateLimit", ratelimit},
                {"X-RateLimit-Limit", limit},
                {"X-RateLimit-Remaining", remaining}};

    if (!reset.empty()) {
        h.emplace_back("X-RateLimit-Reset", reset);
    }

    if (!retry_after.empty()) {
        h.emplace_back("Retry-After", retry_after);
    }

    return h;
}


std::string status(const rl_check_result_t &r)
{
    size_t  len;
    return rl_check_status_name(r.status, &len);
}


std::string sha1(const std::string &s)
{
    char  hex[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];

    ngx_http_rate_limit_sha1_hex(
        reinterpret_cast<const unsigned char *>(s.data()), s.size(), hex);
    return hex;
}


class Check : public ::testing::Test {
protected:
    FakeClock  clock;

    /* decides a request of local limits and finishes it */
    rl_check_result_t run(Request &r, int dry_run = 0)
    {
        r.dry_run = dry_run;
        EXPECT_EQ(r.decide(nullptr), RL_CHECK_OK);
        return r.result();
    }

    /* a request of key "k" in zones a and b, decided */
    std::unique_ptr<Request> run_both(Zone &a, Zone &b, int dry_run = 0)
    {
        auto  r = std::make_unique<Request>(clock, 2);

        r->add(a, "k");
        r->add(b, "k");
        run(*r, dry_run);
        return r;
    }
};


/* ---- local limits ---- */

TEST_F(Check, LocalPassWritesTheHeaders)
{
    Zone     api("api", "10r/s", 10);
    Request  r(clock, 1);

    r.add(api, "k");
    rl_check_result_t  res = run(r);

    EXPECT_EQ(status(res), "PASSED");
    EXPECT_EQ(res.reject, 0);
    EXPECT_EQ(headers(res),
        expected("\"api\";q=10;w=1", "\"api\";r=9;t=1", "10", "9", "1"));
    EXPECT_TRUE(r.logs().empty());
    EXPECT_EQ(api.stats().outcomes[RL_VERDICT_OUTCOME_PASSED], 1u);
    EXPECT_EQ(api.tokens("k", clock.now_us), 9u);
    EXPECT_FALSE(api.held());
}


/* the numbers of the headers, in decimal whatever their length */
TEST_F(Check, HeadersWriteEveryNumberOfDigits)
{
    for (uint64_t burst : {1ULL, 9ULL, 10ULL, 11ULL, 99ULL, 100ULL, 101ULL,
                           999ULL, 1000ULL, 65535ULL, 100000ULL,
                           999999999ULL, 1000000000ULL, 123456789012345ULL,
                           1000000000000000ULL})
    {
        Zone     z("z", "1000000r/s", burst);
        Request  r(clock, 1);

        r.add(z, "k");
        Headers  h = headers(run(r));

        ASSERT_EQ(h.size(), 5u) << burst;
        EXPECT_EQ(h[2].second, std::to_string(burst));
        EXPECT_EQ(h[3].second, std::to_string(burst - 1));
    }
}


TEST_F(Check, AnEmptyKeyDoesNotLimit)
{
    Zone     api("api", "10r/s", 10);
    Request  r(clock, 1);

    r.add(api, "");
    rl_check_result_t  res = run(r);

    EXPECT_EQ(res.status, 0);
    EXPECT_EQ(status(res), "");
    EXPECT_EQ(res.reject, 0);
    EXPECT_EQ(res.nheaders, 0u);
    EXPECT_EQ(api.stats().requests, 0u);
}


TEST_F(Check, MoreLimitsThanMadeForIsAnError)
{
    Zone     api("api", "10r/s", 10);
    Request  r(clock, 1);
    char     cost[] = "1";

    r.add(api, "a");
    EXPECT_EQ(rl_check_add(r.get(), api.get(), 1, cost, 1,
                           reinterpret_cast<const unsigned char *>("b"), 1),
              RL_CHECK_ERROR);
}


/* one limit rejects: the tokens the others took are given back */
TEST_F(Check, LocalLimitsAllOrNothing)
{
    Zone  a("a", "10r/s", 10);
    Zone  b("b", "1r/s", 1);

    EXPECT_EQ(status(run_both(a, b)->result()), "PASSED");

    auto                      request = run_both(a, b);
    Request                  &r = *request;
    const rl_check_result_t  &res = r.result();

    EXPECT_EQ(status(res), "REJECTED");
    EXPECT_EQ(res.reject, 1);
    EXPECT_EQ(headers(res),
              expected("\"a\";q=10;w=1, \"b\";q=1;w=1", "\"b\";r=0;t=1",
                       "1", "0", "1", "1"));

    /* a's token of the rejected request came back */
    EXPECT_EQ(a.tokens("k", clock.now_us), 9u);
    EXPECT_EQ(a.stats().outcomes[RL_VERDICT_OUTCOME_PASSED], 2u);
    EXPECT_EQ(b.stats().outcomes[RL_VERDICT_OUTCOME_PASSED], 1u);
    EXPECT_EQ(b.stats().outcomes[RL_VERDICT_OUTCOME_REJECTED], 1u);

    ASSERT_EQ(r.logs().size(), 1u);
    EXPECT_EQ(r.logs()[0].level, log_err);
    EXPECT_EQ(r.logs()[0].msg,
              "rate limit exceeded in zone \"b\", retry in 1.000s");
}


/* the first limit to reject stops the others: they are not asked */
TEST_F(Check, ARejectionLeavesTheNextLimitsUnasked)
{
    Zone  a("a", "1r/s", 1);
    Zone  b("b", "10r/s", 10);

    run_both(a, b);

    /* the first limit is the closest, the numbers are its own */
    EXPECT_EQ(headers(run_both(a, b)->result()),
              expected("\"a\";q=1;w=1, \"b\";q=10;w=1", "\"a\";r=0;t=1",
                       "1", "0", "1", "1"));

    EXPECT_EQ(b.tokens("k", clock.now_us), 9u);
    EXPECT_EQ(b.stats().outcomes[RL_VERDICT_OUTCOME_PASSED], 1u);
    EXPECT_EQ(b.stats().outcomes[RL_VERDICT_OUTCOME_REJECTED], 0u);
}


TEST_F(Check, DryRunPassesWhatItWouldReject)
{
    Zone  a("a", "10r/s", 10);
    Zone  b("b", "1r/s", 1);

    run_both(a, b, 1);

    auto                      r = run_both(a, b, 1);
    const rl_check_result_t  &res = r->result();

    EXPECT_EQ(status(res), "REJECTED_DRY_RUN");
    EXPECT_EQ(res.reject, 0);
    /* no Retry-After: the request is not rejected */
    EXPECT_EQ(headers(res),
              expected("\"a\";q=10;w=1, \"b\";q=1;w=1", "\"b\";r=0;t=1",
                       "1", "0", "1"));
    ASSERT_EQ(r->logs().size(), 1u);
    EXPECT_EQ(r->logs()[0].msg, "rate limit exceeded in zone \"b\", "
                                "retry in 1.000s, dry run");

    EXPECT_EQ(a.tokens("k", clock.now_us), 9u);
}


TEST_F(Check, NeverFitsHasNoWaitAndIsNamedOnceAMinute)
{
    Zone               nf("nf", "10r/s", 5);
    const std::string  key(300, 'x');       /* stored as its hash */

    for (int i = 0; i < 2; i++) {
        Request  r(clock, 1);
        r.add(nf, key, 10);
        rl_check_result_t  res = run(r);

        EXPECT_EQ(status(res), "REJECTED");
        EXPECT_EQ(res.reject, 1);
        EXPECT_EQ(headers(res),
            expected("\"nf\";q=10;w=1", "\"nf\";r=5", "5", "5"));

        ASSERT_EQ(r.logs().size(), i == 0 ? 2u : 1u);
        EXPECT_EQ(r.logs()[0].level, log_err);
        EXPECT_EQ(r.logs()[0].msg,
                  "rate limit exceeded in zone \"nf\", the cost exceeds "
                  "the burst: no retry can pass");

        if (i == 0) {
            EXPECT_EQ(r.logs()[1].level, log_warn);
            EXPECT_EQ(r.logs()[1].msg,
                      "rate_limit_zone \"nf\": a request of cost 10 can "
                      "never pass for the key of SHA-1 " + sha1(key)
                      + ", whose burst is 5 (default limit): it is "
                        "rejected without Retry-After");
        }
    }

    /* a minute later, the key is named again */
    clock.now_us += RL_STORE_NOFIT_PERIOD_US;

    Request  r(clock, 1);
    r.add(nf, key, 10);
    run(r);
    EXPECT_EQ(r.logs().size(), 2u);
}


TEST_F(Check, AShortKeyIsNamedByItsSha1)
{
    Zone     nf("nf", "10r/s", 5);
    Request  r(clock, 1);

    r.add(nf, "client-1", 6);
    run(r);

    ASSERT_EQ(r.logs().size(), 2u);
    EXPECT_NE(r.logs()[1].msg.find("SHA-1 " + sha1("client-1") + ","),
              std::string::npos) << r.logs()[1].msg;
}


TEST_F(Check, ALogAboveItsLevelIsNotWritten)
{
    Zone     nf("nf", "10r/s", 5);
    Request  r(clock, 1);

    r.add(nf, "k", 6);
    r.log_level = uintptr_t(log_err - 1);
    EXPECT_EQ(r.decide(nullptr), RL_CHECK_OK);

    EXPECT_TRUE(r.logs().empty());
}


/* nginx's level of a debug_connection client: every bit above the levels */
TEST_F(Check, ADebugConnectionLogWritesEveryLine)
{
    Zone     nf("nf", "10r/s", 5);
    Request  r(clock, 1);

    r.add(nf, "k", 6);
    r.log_level = 0xfffffff0u;
    EXPECT_EQ(r.decide(nullptr), RL_CHECK_OK);

    ASSERT_EQ(r.logs().size(), 2u);
    EXPECT_EQ(r.logs()[0].level, log_err);
    EXPECT_EQ(r.logs()[1].level, log_warn);
}


TEST_F(Check, AFullZoneSaysSoOnceAndFailsOpen)
{
    Zone      tiny("tiny", "10r/s", 10, RL_ZONE_BACKEND_LOCAL,
                   RL_ZONE_FAILURE_OPEN, 2000);
    unsigned  full = 0, warnings = 0;

    /* the rows leave the buckets too few slots for a key of 256 bytes */
    tiny.fill_with_rows();

    for (int i = 0; i < 3; i++) {
        Request  r(clock, 1);
        r.add(tiny, std::string(NGX_HTTP_RATE_LIMIT_KEY_MAX, 'a' + i));
        rl_check_result_t  res = run(r);

        for (const LogLine &l : r.logs()) {
            EXPECT_EQ(l.level, log_warn);
            EXPECT_EQ(l.msg, "rate_limit_zone \"tiny\" is full: new keys "
                             "follow its \"on_failure\" policy until "
                             "buckets expire");
            warnings++;
        }

        if (status(res) == "FAILED_OPEN") {
            EXPECT_EQ(res.reject, 0);
            /* a limit that enforces nothing now describes nothing */
            EXPECT_EQ(res.nheaders, 0u);
            full++;
        }
    }

    EXPECT_EQ(full, 3u);
    EXPECT_EQ(warnings, 1u);
    EXPECT_EQ(tiny.get()->full_logged, 1);
}


TEST_F(Check, APerClientLimitIsInForce)
{
    Zone     api("api", "10r/s", 10);
    Request  r(clock, 1);

    api.policy("vip", "100r/s", 50);
    r.add(api, "vip");
    rl_check_result_t  res = run(r);

    EXPECT_EQ(headers(res)[3],
              (std::pair<std::string, std::string>(
                  "X-RateLimit-Remaining", "49")));
}


/* ---- Redis limits ---- */

class CheckRedis : public Check {
protected:
    SharedMemory  memory;
    FakeHost      host {clock, memory};
    std::string   address = "127.0.0.1:6379", ip = "127.0.0.1";
    std::string   beat_key = "rl:nodes", beat_id = "web1:1";

    rl_redis_client_t *start(bool heartbeat = false)
    {
        rl_redis_endpoint_t  endpoint {ip.c_str(), 6379, nullptr,
                                       address.c_str(), nullptr, 0, nullptr, 0};
        rl_redis_config_t    config {};

        config.endpoints = &endpoint;
        config.nendpoints = 1;
        config.timeout_ms = 200;
        config.failure_policy = "r=open";

        if (heartbeat) {
            config.heartbeat_key = beat_key.c_str();
            config.heartbeat_key_len = beat_key.size();
            config.heartbeat_id = beat_id.c_str();
            config.heartbeat_id_len = beat_id.size();
        }

        rl_redis_client_t *c = host.create(config);
        host.bring_up(0);
        EXPECT_TRUE(host.take(0).empty());
        return c;
    }

    /* the registry says nodes nodes are live */
    void nodes(long long n)
    {
        start(true);
        host.advance_ms(100);
        Command  beat = host.take_one(0);
        ASSERT_EQ(beat[1], nodes_sha());
        host.reply(0, resp::integer(n));
        ASSERT_EQ(rl_redis_shared_nodes(memory.shared()),
                  static_cast<uint64_t>(n));
    }

    /* r, sent to Redis: its one command */
    Command asked(Request &r)
    {
        EXPECT_EQ(r.decide(host.client()), RL_CHECK_WAIT);
        EXPECT_EQ(r.done_calls(), 0u);
        host.end_pass();
        return host.take_one(0);
    }

    static Command script(const Zone &zone, const std::string &key,
                          const std::string &cost = "1")
    {
        const rl_zone_texts_t  &t = const_cast<Zone &>(zone).get()->texts;

        return {"EVALSHA", one_sha(), "1", key,
                std::string(t.interval, t.interval_len),
                std::string(t.burst, t.burst_len), cost,
                std::string(t.token_code, t.token_code_len)};
    }
};


TEST_F(CheckRedis, RedisDecidesLater)
{
    Zone     red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);
    Request  r(clock, 1);

    start();
    r.add(red, "k");

    EXPECT_EQ(asked(r), script(red, "rl:r:k"));

    host.reply(0, resp::decision({{true, 9, 0, 100000}}));
    ASSERT_EQ(r.done_calls(), 1u);

    rl_check_result_t  res = r.finish();

    EXPECT_EQ(status(res), "PASSED");
    EXPECT_EQ(headers(res),
        expected("\"r\";q=10;w=1", "\"r\";r=9;t=1", "10", "9", "1"));
    EXPECT_EQ(red.stats().outcomes[RL_VERDICT_OUTCOME_PASSED], 1u);
}


/* a local limit that rejects leaves Redis unasked */
TEST_F(CheckRedis, ALocalRejectionAsksNoRedis)
{
    Zone  loc("l", "1r/s", 1);
    Zone  red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);

    start();

    for (int i = 0; i < 2; i++) {
        Request  r(clock, 2);
        r.add(loc, "k");
        r.add(red, "k");

        if (i == 0) {
            asked(r);
            host.reply(0, resp::decision({{true, 9, 0, 100000}}));
            EXPECT_EQ(status(r.finish()), "PASSED");
            continue;
        }

        ASSERT_EQ(r.decide(host.client()), RL_CHECK_OK);
        host.end_pass();
        EXPECT_TRUE(host.take(0).empty());
        EXPECT_EQ(status(r.result()), "REJECTED");
    }
}


/* a rejection is remembered: the next request of the key asks no Redis */
TEST_F(CheckRedis, ARejectionIsCached)
{
    Zone  red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);

    start();

    {
        Request  r(clock, 1);
        r.add(red, "k");
        asked(r);
        host.reply(0, resp::decision({{false, 0, 5000000, 10000000}}));

        rl_check_result_t  res = r.finish();

        EXPECT_EQ(status(res), "REJECTED");
        EXPECT_EQ(res.reject, 1);
        EXPECT_EQ(headers(res),
            expected("\"r\";q=10;w=1", "\"r\";r=0;t=5", "10", "0", "10", "5"));
        ASSERT_EQ(r.logs().size(), 1u);
        EXPECT_EQ(r.logs()[0].msg,
                  "rate limit exceeded in zone \"r\", retry in 5.000s");
    }

    clock.now_us += 1000000;

    Request  r(clock, 1);
    r.add(red, "k");
    ASSERT_EQ(r.decide(host.client()), RL_CHECK_OK);
    host.end_pass();
    EXPECT_TRUE(host.take(0).empty());

    rl_check_result_t  res = r.result();

    EXPECT_EQ(status(res), "REJECTED");
    EXPECT_EQ(headers(res).back(),
              (std::pair<std::string, std::string>("Retry-After", "4")));
    EXPECT_EQ(red.stats().cached, 1u);
}


TEST_F(CheckRedis, APerClientLimitSendsItsOwnArguments)
{
    Zone     red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);
    Request  r(clock, 1);

    start();
    red.policy("vip", "100r/s", 50);
    r.add(red, "vip", 3);

    Command  c = asked(r);
    ASSERT_EQ(c.size(), 8u);
    EXPECT_EQ(c[3], "rl:r:vip");
    EXPECT_EQ(c[4], "10000");
    EXPECT_EQ(c[5], "50");
    EXPECT_EQ(c[6], "3");
}


TEST_F(CheckRedis, WithoutRedisOnFailureDecides)
{
    const std::pair<rl_zone_failure_e, const char *>  cases[] = {
        {RL_ZONE_FAILURE_OPEN, "FAILED_OPEN"},
        {RL_ZONE_FAILURE_CLOSED, "FAILED_CLOSED"}
    };

    for (const auto &[on_failure, name] : cases) {
        Zone     zone("z", "10r/s", 10, RL_ZONE_BACKEND_REDIS, on_failure);
        Request  r(clock, 1);

        r.add(zone, "k");
        rl_check_result_t  res = run(r);

        EXPECT_EQ(status(res), name);
        EXPECT_EQ(res.reject, on_failure == RL_ZONE_FAILURE_CLOSED);
        /* a limit that enforces nothing now describes nothing */
        EXPECT_EQ(res.nheaders, 0u);
        EXPECT_EQ(zone.stats().outcomes[on_failure == RL_ZONE_FAILURE_OPEN
                                        ? RL_VERDICT_OUTCOME_FAILED_OPEN
                                        : RL_VERDICT_OUTCOME_FAILED_CLOSED],
                  1u);
    }
}


/* a failed answer is a failure too, decided later */
TEST_F(CheckRedis, AnErrorReplyFailsTheKey)
{
    Zone     closed("c", "10r/s", 10, RL_ZONE_BACKEND_REDIS,
                    RL_ZONE_FAILURE_CLOSED);
    Request  r(clock, 1);

    start();
    r.add(closed, "k");
    asked(r);
    host.reply(0, resp::error("ERR boom"));
    ASSERT_EQ(r.done_calls(), 1u);

    EXPECT_EQ(status(r.finish()), "FAILED_CLOSED");
}


/* on_failure=local: this node's share, the limit divided among the nodes */
TEST_F(CheckRedis, DegradedShareDividesAmongTheLiveNodes)
{
    Zone  deg("d", "6r/s", 6, RL_ZONE_BACKEND_REDIS, RL_ZONE_FAILURE_LOCAL);

    nodes(3);

    for (int i = 0; i < 3; i++) {
        Request  r(clock, 1);
        r.add(deg, "k");
        r.shared = memory.shared();
        ASSERT_EQ(r.decide(nullptr), RL_CHECK_OK);
        rl_check_result_t  res = r.result();

        if (i < 2) {
            EXPECT_EQ(status(res), "DEGRADED_LOCAL");
            EXPECT_EQ(res.reject, 0);
            EXPECT_EQ(headers(res),
                expected("\"d\";q=2;w=1",
                         i == 0 ? "\"d\";r=1;t=1" : "\"d\";r=0;t=1", "2",
                         i == 0 ? "1" : "0", "1")) << i;
            continue;
        }

        EXPECT_EQ(status(res), "DEGRADED_LOCAL_REJECTED");
        EXPECT_EQ(res.reject, 1);
        ASSERT_EQ(r.logs().size(), 1u);
        EXPECT_EQ(r.logs()[0].msg,
                  "rate limit exceeded in zone \"d\", retry in 0.500s, "
                  "decided locally while Redis is unreachable");
    }

    EXPECT_EQ(deg.stats().outcomes[RL_VERDICT_OUTCOME_DEGRADED_LOCAL], 2u);
}


/* before any heartbeat the node counts itself alone */
TEST_F(CheckRedis, DegradedShareBeforeAnyHeartbeatIsTheWholeLimit)
{
    Zone     deg("d", "6r/s", 6, RL_ZONE_BACKEND_REDIS, RL_ZONE_FAILURE_LOCAL);
    Request  r(clock, 1);

    r.add(deg, "k");
    r.shared = memory.shared();
    ASSERT_EQ(r.decide(nullptr), RL_CHECK_OK);
    rl_check_result_t  res = r.result();

    EXPECT_EQ(status(res), "DEGRADED_LOCAL");
    EXPECT_EQ(headers(res)[2],
              (std::pair<std::string, std::string>("X-RateLimit-Limit", "6")));
}


/* a degraded cost above this node's share never fits: said so */
TEST_F(CheckRedis, DegradedNeverFitsSaysTheShare)
{
    Zone     deg("d", "6r/s", 6, RL_ZONE_BACKEND_REDIS, RL_ZONE_FAILURE_LOCAL);
    Request  r(clock, 1);

    nodes(3);
    r.add(deg, "k", 4);
    r.shared = memory.shared();
    ASSERT_EQ(r.decide(nullptr), RL_CHECK_OK);

    ASSERT_EQ(r.logs().size(), 2u);
    EXPECT_EQ(r.logs()[0].msg,
              "rate limit exceeded in zone \"d\", the cost exceeds the "
              "burst: no retry can pass, decided locally while Redis is "
              "unreachable");
    EXPECT_EQ(r.logs()[1].msg,
              "rate_limit_zone \"d\": a request of cost 4 can never pass "
              "for the key of SHA-1 " + sha1("k") + ", whose burst is 2 "
              "(default limit, divided among the live nodes while Redis is "
              "unreachable): it is rejected without Retry-After");
}


TEST_F(CheckRedis, ACancelledCheckIsNeverDone)
{
    Zone     red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);
    Request  r(clock, 1);

    start();
    r.add(red, "k");
    asked(r);

    rl_check_cancel(r.get(), host.client());
    host.reply(0, resp::decision({{true, 9, 0, 100000}}));
    EXPECT_EQ(r.done_calls(), 0u);

    /* twice, or with no client left, is harmless */
    rl_check_cancel(r.get(), host.client());
    rl_check_cancel(r.get(), nullptr);
}


/* ---- the bucket API's read ---- */

std::string body(const rl_api_reply_t &reply)
{
    return std::string(reinterpret_cast<const char *>(reply.body),
                       reply.len);
}


TEST_F(CheckRedis, BucketOfALocalZone)
{
    Zone  api("api", "10r/s", 10);

    for (int i = 0; i < 3; i++) {
        Request  r(clock, 1);
        r.add(api, "k");
        run(r);
    }

    Request         r(clock, 1);
    rl_api_reply_t  reply {};

    r.add(api, "k", 0);
    ASSERT_EQ(rl_check_peek(r.get(), nullptr), RL_CHECK_OK);
    ASSERT_EQ(rl_check_bucket(r.get(), r.alloc(), &reply), RL_CHECK_OK);

    EXPECT_EQ(reply.status, 200);
    EXPECT_EQ(body(reply), "{\"zone\":\"api\",\"key\":\"k\","
                           "\"rate\":\"10r/s\",\"burst\":10,"
                           "\"source\":\"default\",\"tokens\":7}");
    /* peeking took nothing */
    EXPECT_EQ(api.tokens("k", clock.now_us), 7u);
}


TEST_F(CheckRedis, BucketOfARedisZone)
{
    Zone  red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);

    start();
    red.policy("vip", "100r/s", 50);

    Request         r(clock, 1);
    rl_api_reply_t  reply {};

    r.add(red, "vip", 0);
    ASSERT_EQ(rl_check_peek(r.get(), host.client()), RL_CHECK_WAIT);
    host.end_pass();
    Command  c = host.take_one(0);
    ASSERT_EQ(c.size(), 8u);
    EXPECT_EQ(c[6], "0");
    host.reply(0, resp::decision({{true, 42, 0, 100000}}));
    ASSERT_EQ(r.done_calls(), 1u);

    ASSERT_EQ(rl_check_bucket(r.get(), r.alloc(), &reply), RL_CHECK_OK);
    EXPECT_EQ(body(reply), "{\"zone\":\"r\",\"key\":\"vip\","
                           "\"rate\":\"100r/s\",\"burst\":50,"
                           "\"source\":\"yaml\",\"tokens\":42}");
}


TEST_F(CheckRedis, BucketWhenRedisCannotSay)
{
    Zone            red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);
    Request         r(clock, 1);
    rl_api_reply_t  reply {};

    r.add(red, "k", 0);
    ASSERT_EQ(rl_check_peek(r.get(), nullptr), RL_CHECK_OK);
    ASSERT_EQ(rl_check_bucket(r.get(), r.alloc(), &reply), RL_CHECK_OK);
    EXPECT_NE(body(reply).find("\"tokens\":null"), std::string::npos)
        << body(reply);
}


TEST_F(CheckRedis, BucketOfABlockedKeyAsksNoRedis)
{
    Zone            red("r", "10r/s", 10, RL_ZONE_BACKEND_REDIS);
    Request         r(clock, 1);
    rl_api_reply_t  reply {};

    start();
    red.policy("bot", "0r/s", 0);
    r.add(red, "bot", 0);
    ASSERT_EQ(rl_check_peek(r.get(), host.client()), RL_CHECK_OK);
    host.end_pass();
    EXPECT_TRUE(host.take(0).empty());
    ASSERT_EQ(rl_check_bucket(r.get(), r.alloc(), &reply), RL_CHECK_OK);
    EXPECT_NE(body(reply).find("\"tokens\":0"), std::string::npos)
        << body(reply);
}

}  // namespace
