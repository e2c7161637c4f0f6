/*
 * The Lua script in a real redis-server, checked against decide(): the
 * two must give the same answers, or a zone would behave differently with
 * backend=redis than with backend=local.
 *
 * Each test process starts its own redis-server on a free loopback port,
 * in a temporary folder, and stops it at the end.  Without redis-server
 * (RATE_LIMIT_REDIS_SERVER at build time, or the environment variable of
 * the same name) every test is skipped.
 */

#include "rate_limit_test_support.h"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>


namespace {

using rate_limit_test::decide;
using rate_limit_test::params_for;


std::string redis_server_path()
{
    if (const char *from_env = std::getenv("RATE_LIMIT_REDIS_SERVER")) {
        return from_env;
    }
#ifdef RATE_LIMIT_REDIS_SERVER
    return RATE_LIMIT_REDIS_SERVER;
#else
    return "";
#endif
}


/* a port nobody listens on right now; redis-server may still lose a race */
int free_loopback_port()
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }

    sockaddr_in address {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t address_len = sizeof(address);

    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0
        && getsockname(fd, reinterpret_cast<sockaddr *>(&address),
                       &address_len) == 0)
    {
        port = ntohs(address.sin_port);
    }

    close(fd);
    return port;
}


struct ReplyDeleter {
    void operator()(redisReply *reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
    void operator()(redisContext *context) const { redisFree(context); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;


/* one redis-server for the life of the object */
class RedisServer {
public:
    RedisServer() = default;
    RedisServer(const RedisServer &) = delete;
    RedisServer &operator=(const RedisServer &) = delete;

    static std::unique_ptr<RedisServer> start(const std::string &executable)
    {
        for (int attempt = 0; attempt < 5; attempt++) {
            auto server = std::make_unique<RedisServer>();
            if (server->launch(executable)) {
                return server;
            }
        }
        return nullptr;
    }

    ~RedisServer()
    {
        if (pid_ > 0) {
            kill(pid_, SIGTERM);
            waitpid(pid_, nullptr, 0);
        }
        if (!directory_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(directory_, ignored);
        }
    }

    int port() const { return port_; }

private:
    bool launch(const std::string &executable)
    {
        char directory_template[] = "/tmp/rate-limit-redis-XXXXXX";
        if (mkdtemp(directory_template) == nullptr) {
            return false;
        }
        directory_ = directory_template;

        port_ = free_loopback_port();
        if (port_ < 0) {
            return false;
        }

        const std::string port_text = std::to_string(port_);
        std::vector<std::string> args { executable, "--port", port_text,
                                        "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no",
                                        "--daemonize", "no",
                                        "--dir", directory_,
                                        "--logfile", directory_ + "/log" };
        std::vector<char *> argv;
        for (std::string &arg : args) {
            argv.push_back(arg.data());
        }
        argv.push_back(nullptr);

        const pid_t parent = getpid();
        pid_ = fork();
        if (pid_ < 0) {
            return false;
        }

        if (pid_ == 0) {
            /*
             * A test that crashes runs no destructor: the server must still
             * go, and must not keep ctest waiting on the output pipes.
             */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) {
                _exit(1);
            }
            const int null_fd = open("/dev/null", O_RDWR);
            if (null_fd >= 0) {
                dup2(null_fd, STDIN_FILENO);
                dup2(null_fd, STDOUT_FILENO);
                dup2(null_fd, STDERR_FILENO);
            }
            execv(executable.c_str(), argv.data());
            _exit(127);
        }

        const auto deadline = std::chrono::steady_clock::now()
                              + std::chrono::seconds(10);

        while (std::chrono::steady_clock::now() < deadline) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;              /* it exited: the port was taken */
                return false;
            }

            Context context(redisConnect("127.0.0.1", port_));
            if (context && context->err == 0) {
                Reply pong(static_cast<redisReply *>(
                    redisCommand(context.get(), "PING")));
                if (pong && pong->type == REDIS_REPLY_STATUS) {
                    return true;
                }
            }

            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }

        return false;
    }

    pid_t        pid_ = -1;
    int          port_ = -1;
    std::string  directory_;
};


struct Limit {
    std::string                    key;
    ngx_http_rate_limit_params_t   params;
    uint64_t                       cost;
};


struct KeyVerdict {
    bool     allowed;
    int64_t  remaining;
    int64_t  retry_after_us;
    int64_t  reset_us;
};


struct Verdict {
    bool                     all_allowed;
    std::vector<KeyVerdict>  keys;
};


class RedisScript : public testing::Test {
protected:
    static void SetUpTestSuite()
    {
        const std::string executable = redis_server_path();
        if (!executable.empty() && access(executable.c_str(), X_OK) == 0) {
            server_ = RedisServer::start(executable);
        }
    }

    static void TearDownTestSuite()
    {
        server_.reset();
    }

    void SetUp() override
    {
        if (!server_) {
            GTEST_SKIP() << "no redis-server to run the script in";
        }

        context_.reset(redisConnect("127.0.0.1", server_->port()));
        ASSERT_TRUE(context_ && context_->err == 0);
        command({ "FLUSHALL" });
    }

    Reply command(const std::vector<std::string> &args)
    {
        std::vector<const char *> argv;
        std::vector<size_t> argv_len;
        for (const std::string &arg : args) {
            argv.push_back(arg.data());
            argv_len.push_back(arg.size());
        }

        Reply reply(static_cast<redisReply *>(redisCommandArgv(
            context_.get(), static_cast<int>(argv.size()), argv.data(),
            argv_len.data())));
        EXPECT_TRUE(reply) << "no reply to " << args[0];
        return reply;
    }

    Verdict run(const std::vector<Limit> &limits)
    {
        std::vector<std::string> keys;
        std::vector<std::string> values;
        for (const Limit &limit : limits) {
            keys.push_back(limit.key);
        }
        for (const Limit &limit : limits) {
            char interval[64];
            std::snprintf(interval, sizeof(interval), "%.17g",
                          limit.params.interval_us);
            values.push_back(interval);
            values.push_back(std::to_string(limit.params.burst));
            values.push_back(std::to_string(limit.cost));
        }
        return run_args(keys, values);
    }

    /*
     * The way the module is expected to call it: EVALSHA, then EVAL.
     * values holds interval, burst and cost for each key, as text.
     */
    Verdict run_args(const std::vector<std::string> &keys,
        const std::vector<std::string> &values)
    {
        std::vector<std::string> args { "EVALSHA",
                                        ngx_http_rate_limit_script_sha1(),
                                        std::to_string(keys.size()) };
        args.insert(args.end(), keys.begin(), keys.end());
        args.insert(args.end(), values.begin(), values.end());

        Reply reply = command(args);
        if (reply && reply->type == REDIS_REPLY_ERROR
            && std::string(reply->str).rfind("NOSCRIPT", 0) == 0)
        {
            size_t len = 0;
            const char *script = ngx_http_rate_limit_script(&len);
            args[0] = "EVAL";
            args[1] = std::string(script, len);
            reply = command(args);
        }

        /* one entry per limit even on failure, so tests may index it */
        Verdict verdict { false,
                          std::vector<KeyVerdict>(keys.size(),
                                                  { false, -1, -1, -1 }) };
        if (!reply) {
            return verdict;
        }

        EXPECT_EQ(reply->type, REDIS_REPLY_ARRAY)
            << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        EXPECT_EQ(reply->elements, 1 + 4 * keys.size());
        if (reply->type != REDIS_REPLY_ARRAY
            || reply->elements != 1 + 4 * keys.size())
        {
            return verdict;
        }

        for (size_t i = 0; i < reply->elements; i++) {
            EXPECT_EQ(reply->element[i]->type, REDIS_REPLY_INTEGER) << i;
        }

        verdict.all_allowed = reply->element[0]->integer == 1;
        for (size_t i = 0; i < keys.size(); i++) {
            redisReply **fields = reply->element + 1 + 4 * i;
            verdict.keys[i] = { fields[0]->integer == 1, fields[1]->integer,
                                fields[2]->integer, fields[3]->integer };
        }

        return verdict;
    }

    std::optional<int64_t> stored_tat(const std::string &key)
    {
        Reply reply = command({ "GET", key });
        if (!reply || reply->type != REDIS_REPLY_STRING) {
            return std::nullopt;
        }
        return std::strtoll(reply->str, nullptr, 10);
    }

    int64_t pttl(const std::string &key)
    {
        Reply reply = command({ "PTTL", key });
        return reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer
                                                           : -3;
    }

    static std::unique_ptr<RedisServer>  server_;
    Context                              context_;
};

std::unique_ptr<RedisServer> RedisScript::server_;


TEST_F(RedisScript, Sha1IsWhatRedisComputes)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_script(&len);

    Reply reply = command({ "SCRIPT", "LOAD", std::string(script, len) });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_STRING)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    EXPECT_STREQ(reply->str, ngx_http_rate_limit_script_sha1());
}


TEST_F(RedisScript, ExactBurstThenRejection)
{
    for (const char *rate : { "3r/s", "7r/m", "1r/d", "100r/m" }) {
        const Limit limit { std::string("rl:burst:") + rate,
                            params_for(rate), 1 };

        for (uint64_t taken = 1; taken <= limit.params.burst; taken++) {
            const Verdict verdict = run({ limit });
            ASSERT_TRUE(verdict.all_allowed) << rate << " request " << taken;
            ASSERT_EQ(verdict.keys.size(), 1u);
            EXPECT_TRUE(verdict.keys[0].allowed);
            EXPECT_EQ(verdict.keys[0].remaining,
                      int64_t(limit.params.burst - taken));
            EXPECT_EQ(verdict.keys[0].retry_after_us, 0);
        }

        const Verdict verdict = run({ limit });
        EXPECT_FALSE(verdict.all_allowed) << rate;
        ASSERT_EQ(verdict.keys.size(), 1u);
        EXPECT_FALSE(verdict.keys[0].allowed);
        EXPECT_EQ(verdict.keys[0].remaining, 0);
        EXPECT_GT(verdict.keys[0].retry_after_us, 0);
    }
}


TEST_F(RedisScript, AllowedRequestStoresTheTatWithATtl)
{
    const Limit limit { "rl:ttl:k", params_for("10r/s"), 3 };

    const Verdict verdict = run({ limit });
    ASSERT_TRUE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 7);
    EXPECT_EQ(verdict.keys[0].reset_us, 300000);

    const std::optional<int64_t> tat = stored_tat(limit.key);
    ASSERT_TRUE(tat);
    /* a plain integer of microseconds since the epoch, around now */
    const int64_t wall_now_us = std::chrono::duration_cast<
        std::chrono::microseconds>(
            std::chrono::system_clock::now().time_since_epoch()).count();
    EXPECT_NEAR(double(*tat), double(wall_now_us + 300000), 60e6);

    /* the TTL is the time until full: 300 ms */
    const int64_t ttl = pttl(limit.key);
    EXPECT_GT(ttl, 200);
    EXPECT_LE(ttl, 300);
}


TEST_F(RedisScript, RejectionWritesNothing)
{
    const Limit limit { "rl:reject:k", params_for("1r/m"), 1 };

    ASSERT_TRUE(run({ limit }).all_allowed);
    const std::optional<int64_t> tat = stored_tat(limit.key);
    const int64_t ttl = pttl(limit.key);
    ASSERT_TRUE(tat);

    const Verdict verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(stored_tat(limit.key), tat);
    EXPECT_LE(pttl(limit.key), ttl);
    EXPECT_GT(pttl(limit.key), ttl - 5000);

    /* the verdict is the one decide() gives for the script's instant */
    const int64_t script_now = *tat - verdict.keys[0].reset_us;
    const ngx_http_rate_limit_decision_t d = decide(limit.params, *tat,
                                                    script_now);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(verdict.keys[0].retry_after_us, d.retry_after_us);
    EXPECT_EQ(verdict.keys[0].remaining, int64_t(d.remaining));
}


TEST_F(RedisScript, SeveralKeysAreAllOrNothing)
{
    const Limit roomy { "rl:roomy:k", params_for("100r/m", 5), 1 };
    const Limit tight { "rl:tight:k", params_for("1r/m"), 1 };

    ASSERT_TRUE(run({ tight }).all_allowed);
    const std::optional<int64_t> tight_tat = stored_tat(tight.key);

    const Verdict verdict = run({ roomy, tight });
    EXPECT_FALSE(verdict.all_allowed);
    ASSERT_EQ(verdict.keys.size(), 2u);

    /* the roomy key would allow, but took nothing: it reports before */
    EXPECT_TRUE(verdict.keys[0].allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 5);
    EXPECT_EQ(verdict.keys[0].retry_after_us, 0);
    EXPECT_EQ(verdict.keys[0].reset_us, 0);
    EXPECT_FALSE(stored_tat(roomy.key));

    EXPECT_FALSE(verdict.keys[1].allowed);
    EXPECT_EQ(verdict.keys[1].remaining, 0);
    EXPECT_GT(verdict.keys[1].retry_after_us, 59000000);
    EXPECT_EQ(stored_tat(tight.key), tight_tat);

    /* when every key allows, every key is written */
    const Limit other { "rl:other:k", params_for("10r/s"), 2 };
    const Verdict both = run({ roomy, other });
    EXPECT_TRUE(both.all_allowed);
    EXPECT_EQ(both.keys[0].remaining, 4);
    EXPECT_EQ(both.keys[1].remaining, 8);
    EXPECT_TRUE(stored_tat(roomy.key));
    EXPECT_TRUE(stored_tat(other.key));

    /* one TIME for all keys: both TATs are that instant plus the reset */
    EXPECT_EQ(*stored_tat(roomy.key) - both.keys[0].reset_us,
              *stored_tat(other.key) - both.keys[1].reset_us);
}


TEST_F(RedisScript, CostAboveBurstIsRejected)
{
    const Limit limit { "rl:cost:k", params_for("10r/s", 5), 6 };

    const Verdict verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 5);
    EXPECT_EQ(verdict.keys[0].reset_us, 0);
    EXPECT_EQ(verdict.keys[0].retry_after_us, 100000);
    EXPECT_FALSE(stored_tat(limit.key));
}


TEST_F(RedisScript, MatchesDecideStepByStep)
{
    /* fractional intervals, rounding half up, and several costs */
    const std::vector<std::pair<const char *, uint64_t>> rates {
        { "3r/s", 0 }, { "7r/m", 0 }, { "13r/7s", 20 }, { "400000r/s", 50 },
        { "1r/s", 1000000000 }, { "999999r/s", 0 }, { "5r/30s", 0 },
    };

    for (const auto &[rate, burst] : rates) {
        const ngx_http_rate_limit_params_t params = params_for(rate, burst);
        const std::string key = std::string("rl:step:") + rate;

        for (uint64_t step = 0; step < 12; step++) {
            const uint64_t cost = 1 + (step * 7) % 4;
            const int64_t tat_before = stored_tat(key).value_or(0);

            const Verdict verdict = run({ { key, params, cost } });
            ASSERT_EQ(verdict.keys.size(), 1u);
            const KeyVerdict &got = verdict.keys[0];

            /*
             * The script's clock, recovered from what it wrote or said.  A
             * bucket of a few microseconds may expire before it is read.
             */
            const std::optional<int64_t> tat_after = stored_tat(key);
            int64_t script_now;
            if (got.allowed && tat_after) {
                script_now = *tat_after - got.reset_us;
            } else if (!got.allowed && got.reset_us > 0) {
                script_now = tat_before - got.reset_us;
            } else {
                continue;
            }

            const ngx_http_rate_limit_decision_t d =
                decide(params, tat_before, script_now, cost);

            EXPECT_EQ(got.allowed, bool(d.allowed)) << rate << " " << step;
            EXPECT_EQ(got.remaining, int64_t(d.remaining))
                << rate << " " << step;
            EXPECT_EQ(got.retry_after_us, d.retry_after_us)
                << rate << " " << step;
            EXPECT_EQ(got.reset_us, d.reset_us) << rate << " " << step;
            if (d.allowed) {
                EXPECT_EQ(tat_after, d.tat_us) << rate << " " << step;
            }
        }
    }
}


TEST_F(RedisScript, StoredStateFromOutsideIsReadLikeDecideReadsIt)
{
    const Limit limit { "rl:outside:k", params_for("1r/s", 10), 1 };

    /* garbage is a full bucket, as for a key never seen */
    command({ "SET", limit.key, "not a number" });
    Verdict verdict = run({ limit });
    EXPECT_TRUE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 9);

    /* a TAT from a larger bucket, an hour ahead, is waited for */
    const std::optional<int64_t> tat = stored_tat(limit.key);
    ASSERT_TRUE(tat);
    const int64_t far_tat = *tat + 3600000000LL;
    command({ "SET", limit.key, std::to_string(far_tat) });

    verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 0);
    const int64_t script_now = far_tat - verdict.keys[0].reset_us;
    EXPECT_EQ(verdict.keys[0].retry_after_us,
              decide(limit.params, far_tat, script_now).retry_after_us);
    EXPECT_EQ(stored_tat(limit.key), far_tat);
}


/* blocked clients: "0r/s" or burst 0 from a per-client limit */

ngx_http_rate_limit_params_t blocked_params(uint64_t count, uint64_t burst)
{
    const ngx_http_rate_limit_rate_t rate { count, 1000 };
    ngx_http_rate_limit_params_t params {};
    EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(&rate, burst, &params,
                                                       nullptr, 0),
              NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(ngx_http_rate_limit_params_blocked(&params), 1);
    return params;
}


void expect_blocked(const KeyVerdict &got, const std::string &context)
{
    EXPECT_FALSE(got.allowed) << context;
    EXPECT_EQ(got.remaining, 0) << context;
    EXPECT_EQ(got.retry_after_us,
              int64_t(NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US))
        << context;
    EXPECT_EQ(got.reset_us, 0) << context;
}


TEST_F(RedisScript, BlockedKeyIsRejectedAndNeverWritten)
{
    for (const auto &[count, burst] :
         std::vector<std::pair<uint64_t, uint64_t>> { { 0, 0 }, { 0, 9 },
                                                      { 10, 0 } })
    {
        const Limit limit { "rl:blocked:" + std::to_string(count) + ":"
                            + std::to_string(burst),
                            blocked_params(count, burst), 1 };

        for (int attempt = 0; attempt < 3; attempt++) {
            const Verdict verdict = run({ limit });
            EXPECT_FALSE(verdict.all_allowed);
            expect_blocked(verdict.keys[0], limit.key);
        }
        EXPECT_FALSE(stored_tat(limit.key)) << limit.key;
    }
}


TEST_F(RedisScript, BlockedAsTheModuleSendsItAndAsTextVariants)
{
    /* the module sends the rounded interval: "0", and burst "0" */
    for (const auto &[interval, burst] :
         std::vector<std::pair<std::string, std::string>> {
             { "0", "0" }, { "0", "10" }, { "100000", "0" },
             { "0.000000", "5" }, { "0.0", "0.0" }, { "-0", "3" } })
    {
        const std::string key = "rl:blocked-text:" + interval + ":" + burst;
        for (const char *cost : { "0", "1", "1000" }) {
            const Verdict verdict = run_args({ key }, { interval, burst,
                                                        cost });
            EXPECT_FALSE(verdict.all_allowed) << key << " cost " << cost;
            expect_blocked(verdict.keys[0], key + " cost " + cost);
        }
        EXPECT_FALSE(stored_tat(key));
    }
}


TEST_F(RedisScript, BlockedKeyIgnoresItsStoredState)
{
    const Limit limit { "rl:blocked:stored", blocked_params(0, 0), 1 };

    /* whatever is there stays there, expiry included */
    command({ "SET", limit.key, "12345", "PX", "600000" });
    const int64_t ttl = pttl(limit.key);

    const Verdict verdict = run({ limit });
    expect_blocked(verdict.keys[0], "stored");
    EXPECT_EQ(stored_tat(limit.key), 12345);
    EXPECT_LE(pttl(limit.key), ttl);
    EXPECT_GT(pttl(limit.key), ttl - 5000);

    command({ "SET", limit.key, "not a number" });
    expect_blocked(run({ limit }).keys[0], "garbage");
}


TEST_F(RedisScript, ABlockedKeyRejectsTheWholeRequest)
{
    const Limit roomy { "rl:blocked:roomy", params_for("100r/m", 5), 1 };
    const Limit blocked { "rl:blocked:bot", blocked_params(0, 0), 1 };

    for (const std::vector<Limit> &limits :
         { std::vector<Limit> { roomy, blocked },
           std::vector<Limit> { blocked, roomy } })
    {
        const Verdict verdict = run(limits);
        EXPECT_FALSE(verdict.all_allowed);

        for (size_t i = 0; i < limits.size(); i++) {
            if (limits[i].key == blocked.key) {
                expect_blocked(verdict.keys[i], "together");
            } else {
                /* would allow, but took nothing */
                EXPECT_TRUE(verdict.keys[i].allowed);
                EXPECT_EQ(verdict.keys[i].remaining, 5);
                EXPECT_EQ(verdict.keys[i].reset_us, 0);
            }
        }
    }

    EXPECT_FALSE(stored_tat(roomy.key));
    EXPECT_FALSE(stored_tat(blocked.key));
}


TEST_F(RedisScript, BlockedMatchesDecide)
{
    const ngx_http_rate_limit_params_t params = blocked_params(0, 0);
    const Verdict verdict = run({ { "rl:blocked:twin", params, 1 } });
    const ngx_http_rate_limit_decision_t d =
        decide(params, 0, rate_limit_test::base_now_us);

    EXPECT_EQ(verdict.keys[0].allowed, bool(d.allowed));
    EXPECT_EQ(verdict.keys[0].remaining, int64_t(d.remaining));
    EXPECT_EQ(verdict.keys[0].retry_after_us, d.retry_after_us);
    EXPECT_EQ(verdict.keys[0].reset_us, d.reset_us);
}

} // namespace
