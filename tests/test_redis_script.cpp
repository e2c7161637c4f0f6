/*
 * The Lua scripts in a real redis-server, checked against decide() and
 * refund(): the two must give the same answers, or a zone would behave
 * differently with backend=redis than with backend=local.  And the
 * cluster routing of the core against what real cluster nodes say.
 *
 * Each test process starts its own redis-servers on free loopback ports,
 * in temporary folders, and stops them at the end.  Without redis-server
 * (RATE_LIMIT_REDIS_SERVER at build time, or the environment variable of
 * the same name) every test is skipped.
 */

#include "rate_limit_redis_server.h"
#include "rate_limit_test_support.h"

#include <hiredis/hiredis.h>

#include <array>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>


namespace {

using rate_limit_test::decide;
using rate_limit_test::params_for;
using rate_limit_test::state_for;
using rate_limit_test::ClusterNode;
using rate_limit_test::Context;
using rate_limit_test::RedisServer;
using rate_limit_test::Reply;
using rate_limit_test::command;
using rate_limit_test::runnable_redis_server;


/*
 * The way the module is expected to call a script: EVALSHA, then EVAL
 * when Redis answers NOSCRIPT.
 */
Reply eval_script(redisContext *context, const char *sha1,
    const char *script, size_t script_len,
    const std::vector<std::string> &keys,
    const std::vector<std::string> &values)
{
    std::vector<std::string> args { "EVALSHA", sha1,
                                    std::to_string(keys.size()) };
    args.insert(args.end(), keys.begin(), keys.end());
    args.insert(args.end(), values.begin(), values.end());

    Reply reply = command(context, args);
    if (reply && reply->type == REDIS_REPLY_ERROR
        && std::string(reply->str).rfind("NOSCRIPT", 0) == 0)
    {
        args[0] = "EVAL";
        args[1] = std::string(script, script_len);
        reply = command(context, args);
    }

    return reply;
}


struct Limit {
    std::string                    key;
    ngx_http_rate_limit_params_t   params;
    uint64_t                       cost;
};


uint32_t token_code(const ngx_http_rate_limit_params_t &params)
{
    return ngx_http_rate_limit_token_code(
        ngx_http_rate_limit_token_us(&params));
}


/* a bucket's state as the scripts store it: "-", the TAT, 3 code digits */
std::string state_text(const ngx_http_rate_limit_state_t &state)
{
    char code[8];
    std::snprintf(code, sizeof(code), "%03u", unsigned(state.token_code));
    return "-" + std::to_string(state.tat_us) + code;
}


/* what decide() reads for a stored text: the other way round */
ngx_http_rate_limit_state_t state_of(const std::string &text)
{
    if (text.size() >= 5 && text[0] == '-'
        && text.find_first_not_of("0123456789", 1) == std::string::npos)
    {
        return { std::strtoll(text.substr(1, text.size() - 4).c_str(),
                              nullptr, 10),
                 uint32_t(std::stoul(text.substr(text.size() - 3))) };
    }
    if (!text.empty()
        && text.find_first_not_of("0123456789") == std::string::npos)
    {
        return { std::strtoll(text.c_str(), nullptr, 10),
                 NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE };
    }
    return {};
}


bool same_state(const ngx_http_rate_limit_state_t &a,
    const ngx_http_rate_limit_state_t &b)
{
    return a.tat_us == b.tat_us && a.token_code == b.token_code;
}


int64_t wall_now_us()
{
    return std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::system_clock::now().time_since_epoch()).count();
}


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


/*
 * Every test runs twice: with the script for several keys, and with the
 * one-key script wherever a call holds one key, so that both are held to
 * the same expectations and to decide().
 */
class RedisScript : public testing::TestWithParam<bool> {
protected:
    static void SetUpTestSuite()
    {
        const std::string executable = runnable_redis_server();
        if (!executable.empty()) {
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
        return rate_limit_test::command(context_.get(), args);
    }

    Verdict run(const std::vector<Limit> &limits)
    {
        std::vector<std::string> keys;
        std::vector<std::string> values;
        for (const Limit &limit : limits) {
            keys.push_back(limit.key);
        }
        for (const Limit &limit : limits) {
            const std::vector<std::string> texts = script_args(limit);
            values.insert(values.end(), texts.begin(), texts.end());
        }
        return run_args(keys, values);
    }

    /*
     * interval, burst, cost and token code of one key, as the scripts are
     * sent them
     */
    static std::vector<std::string> script_args(const Limit &limit)
    {
        char interval[64];
        std::snprintf(interval, sizeof(interval), "%.17g",
                      limit.params.interval_us);
        return { interval, std::to_string(limit.params.burst),
                 std::to_string(limit.cost),
                 std::to_string(token_code(limit.params)) };
    }

    /* values holds interval, burst, cost and token code for each key */
    Verdict run_args(const std::vector<std::string> &keys,
        const std::vector<std::string> &values)
    {
        const bool one = GetParam() && keys.size() == 1;
        size_t len = 0;
        const char *script = one ? ngx_http_rate_limit_script_one(&len)
                                 : ngx_http_rate_limit_script(&len);
        Reply reply = eval_script(context_.get(),
                                  one ? ngx_http_rate_limit_script_one_sha1()
                                      : ngx_http_rate_limit_script_sha1(),
                                  script, len, keys, values);

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

    /* the refund script for one key; values as for the decision script */
    void refund_args(const std::string &key,
        const std::vector<std::string> &values)
    {
        size_t len = 0;
        const char *script = ngx_http_rate_limit_refund_script(&len);
        Reply reply = eval_script(context_.get(),
                                  ngx_http_rate_limit_refund_script_sha1(),
                                  script, len, { key }, values);
        ASSERT_TRUE(reply);
        ASSERT_EQ(reply->type, REDIS_REPLY_INTEGER)
            << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        EXPECT_EQ(reply->integer, 1);
    }

    void refund(const Limit &limit)
    {
        refund_args(limit.key, script_args(limit));
    }

    std::optional<std::string> stored_text(const std::string &key)
    {
        Reply reply = command({ "GET", key });
        if (!reply || reply->type != REDIS_REPLY_STRING) {
            return std::nullopt;
        }
        return std::string(reply->str, reply->len);
    }

    std::optional<ngx_http_rate_limit_state_t> stored_state(
        const std::string &key)
    {
        const std::optional<std::string> text = stored_text(key);
        if (!text) {
            return std::nullopt;
        }
        return state_of(*text);
    }

    std::optional<int64_t> stored_tat(const std::string &key)
    {
        const std::optional<ngx_http_rate_limit_state_t> state =
            stored_state(key);
        if (!state) {
            return std::nullopt;
        }
        return state->tat_us;
    }

    std::string encoding(const std::string &key)
    {
        Reply reply = command({ "OBJECT", "ENCODING", key });
        return reply && reply->type == REDIS_REPLY_STRING ? reply->str : "";
    }

    /*
     * The decision of one limit, checked against decide() at the script's
     * own instant, recovered from what it wrote or said: the stored state
     * and the verdict must be the same.  Returns false when the instant
     * cannot be told (a full bucket that stays full, or an expired key).
     */
    bool run_matches_decide(const Limit &limit, const std::string &context)
    {
        const std::optional<std::string> text_before = stored_text(limit.key);
        const ngx_http_rate_limit_state_t before =
            text_before ? state_of(*text_before)
                        : ngx_http_rate_limit_state_t {};

        const Verdict verdict = run({ limit });
        EXPECT_EQ(verdict.keys.size(), 1u) << context;
        const KeyVerdict &got = verdict.keys[0];

        const std::optional<std::string> text_after = stored_text(limit.key);
        int64_t script_now;
        if (!text_after) {
            /* never written, or a bucket of microseconds that expired */
            return false;
        }
        if (text_after != text_before) {
            script_now = state_of(*text_after).tat_us - got.reset_us;
        } else if (got.reset_us > 0) {
            script_now = before.tat_us - got.reset_us;
        } else {
            return false;
        }

        const ngx_http_rate_limit_decision_t d =
            decide(limit.params, before, script_now, limit.cost);

        EXPECT_EQ(got.allowed, bool(d.allowed)) << context;
        EXPECT_EQ(got.remaining, int64_t(d.remaining)) << context;
        EXPECT_EQ(got.retry_after_us, d.retry_after_us) << context;
        EXPECT_EQ(got.reset_us, d.reset_us) << context;

        if (same_state(d.state, before)) {
            EXPECT_EQ(text_after, text_before) << context;
        } else {
            EXPECT_EQ(text_after, state_text(d.state)) << context;
            /* a bucket of a few microseconds expires before it is asked */
            if (got.reset_us >= 1000000) {
                EXPECT_EQ(encoding(limit.key), "int") << context;
            }
        }
        return true;
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

INSTANTIATE_TEST_SUITE_P(Scripts, RedisScript, testing::Values(false, true),
    [](const testing::TestParamInfo<bool> &info) {
        return std::string(info.param ? "OneKeyScript" : "ManyKeysScript");
    });


TEST_P(RedisScript, OneKeySha1IsWhatRedisComputes)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_script_one(&len);
    Reply reply = command({ "SCRIPT", "LOAD", std::string(script, len) });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_STRING)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    EXPECT_STREQ(reply->str, ngx_http_rate_limit_script_one_sha1());
    EXPECT_STRNE(reply->str, ngx_http_rate_limit_script_sha1());
}


TEST_P(RedisScript, Sha1IsWhatRedisComputes)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_script(&len);

    Reply reply = command({ "SCRIPT", "LOAD", std::string(script, len) });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_STRING)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    EXPECT_STREQ(reply->str, ngx_http_rate_limit_script_sha1());
}


TEST_P(RedisScript, ExactBurstThenRejection)
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


TEST_P(RedisScript, AllowedRequestStoresTheTatWithATtl)
{
    const Limit limit { "rl:ttl:k", params_for("10r/s"), 3 };

    const Verdict verdict = run({ limit });
    ASSERT_TRUE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 7);
    EXPECT_EQ(verdict.keys[0].reset_us, 300000);

    /*
     * One integer that Redis keeps integer-encoded: "-", the TAT in
     * microseconds since the epoch, around now, and the limit's code.
     */
    const std::optional<std::string> text = stored_text(limit.key);
    ASSERT_TRUE(text);
    EXPECT_EQ(text->size(), 20u) << *text;
    EXPECT_EQ(encoding(limit.key), "int");
    const ngx_http_rate_limit_state_t state = state_of(*text);
    EXPECT_EQ(state.token_code, token_code(limit.params));
    EXPECT_EQ(state_text(state), *text);
    EXPECT_NEAR(double(state.tat_us), double(wall_now_us() + 300000), 60e6);

    /* the TTL is the time until full: 300 ms */
    const int64_t ttl = pttl(limit.key);
    EXPECT_GT(ttl, 200);
    EXPECT_LE(ttl, 300);
}


TEST_P(RedisScript, RejectionWritesNothing)
{
    const Limit limit { "rl:reject:k", params_for("1r/m"), 1 };

    ASSERT_TRUE(run({ limit }).all_allowed);
    const std::optional<std::string> text = stored_text(limit.key);
    const int64_t ttl = pttl(limit.key);
    ASSERT_TRUE(text);

    const Verdict verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(stored_text(limit.key), text);
    EXPECT_LE(pttl(limit.key), ttl);
    EXPECT_GT(pttl(limit.key), ttl - 5000);

    /* the verdict is the one decide() gives for the script's instant */
    const ngx_http_rate_limit_state_t state = state_of(*text);
    const int64_t script_now = state.tat_us - verdict.keys[0].reset_us;
    const ngx_http_rate_limit_decision_t d = decide(limit.params, state,
                                                    script_now);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(verdict.keys[0].retry_after_us, d.retry_after_us);
    EXPECT_EQ(verdict.keys[0].remaining, int64_t(d.remaining));
}


TEST_P(RedisScript, SeveralKeysAreAllOrNothing)
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


TEST_P(RedisScript, CostAboveBurstIsRejected)
{
    const Limit limit { "rl:cost:k", params_for("10r/s", 5), 6 };

    const Verdict verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 5);
    EXPECT_EQ(verdict.keys[0].reset_us, 0);
    EXPECT_EQ(verdict.keys[0].retry_after_us, 100000);
    EXPECT_FALSE(stored_tat(limit.key));
}


TEST_P(RedisScript, MatchesDecideStepByStep)
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
            /* a bucket of a few microseconds may expire before it is read */
            run_matches_decide({ key, params, cost },
                               std::string(rate) + " "
                               + std::to_string(step));
        }
    }
}


/*
 * Changed from "a TAT from a larger bucket is waited for" (issue 8): no
 * client waits longer than its limit's full refill.
 */
TEST_P(RedisScript, StoredStateFromOutsideIsReadLikeDecideReadsIt)
{
    const Limit limit { "rl:outside:k", params_for("1r/s", 10), 1 };

    /* garbage is a full bucket, as for a key never seen */
    for (const char *garbage : { "not a number", "-inf", "-nan", "-1e300",
                                 "-12", "-", "--1234", "-1234.5", "", "nan",
                                 "inf", "1e300", "0x7fffffff", " 12" })
    {
        command({ "SET", limit.key, garbage });
        const Verdict verdict = run({ limit });
        EXPECT_TRUE(verdict.all_allowed) << garbage;
        EXPECT_EQ(verdict.keys[0].remaining, 9) << garbage;
    }

    /*
     * A TAT from a larger bucket, an hour ahead: an empty bucket, stored
     * as read, so that the wait given holds.
     */
    const std::optional<int64_t> tat = stored_tat(limit.key);
    ASSERT_TRUE(tat);
    const int64_t far_tat = *tat + 3600000000LL;
    for (const std::string &far : { std::to_string(far_tat),
                                    state_text(state_for(limit.params,
                                                         far_tat)) })
    {
        command({ "SET", limit.key, far });
        ASSERT_TRUE(run_matches_decide(limit, far));
        const std::optional<ngx_http_rate_limit_state_t> left =
            stored_state(limit.key);
        ASSERT_TRUE(left);
        EXPECT_LE(left->tat_us, far_tat - 3600000000LL + 10000000 + 5000000);
        EXPECT_LE(pttl(limit.key), 10000);
    }

    const Verdict verdict = run({ limit });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 0);
    EXPECT_LE(verdict.keys[0].retry_after_us, 1000000);
    EXPECT_LE(verdict.keys[0].reset_us, 10000000);
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


TEST_P(RedisScript, BlockedKeyIsRejectedAndNeverWritten)
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


TEST_P(RedisScript, BlockedAsTheModuleSendsItAndAsTextVariants)
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


TEST_P(RedisScript, BlockedKeyIgnoresItsStoredState)
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


TEST_P(RedisScript, ABlockedKeyRejectsTheWholeRequest)
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


TEST_P(RedisScript, BlockedMatchesDecide)
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


/* the refund script, for a request that another cluster master rejected */

TEST_P(RedisScript, RefundSha1IsWhatRedisComputes)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_refund_script(&len);

    Reply reply = command({ "SCRIPT", "LOAD", std::string(script, len) });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_STRING)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    EXPECT_STREQ(reply->str, ngx_http_rate_limit_refund_script_sha1());
    EXPECT_STRNE(reply->str, ngx_http_rate_limit_script_sha1());
}


/* refund() of a stored state, as a TAT */
int64_t refunded_tat(const ngx_http_rate_limit_params_t &params,
    const ngx_http_rate_limit_state_t &stored, int64_t now_us, uint64_t cost)
{
    const ngx_http_rate_limit_state_t refunded =
        ngx_http_rate_limit_refund(&params, &stored, now_us, cost);
    EXPECT_EQ(refunded.token_code, token_code(params));
    return refunded.tat_us;
}


TEST_P(RedisScript, RefundGivesBackWhatWasTaken)
{
    /* 6 s a token: no token refills while the test runs */
    const ngx_http_rate_limit_params_t params = params_for("10r/m");

    const Verdict taken = run({ { "rl:refund:k", params, 5 } });
    ASSERT_TRUE(taken.all_allowed);
    const std::optional<ngx_http_rate_limit_state_t> state =
        stored_state("rl:refund:k");
    ASSERT_TRUE(state);
    const int64_t script_now = state->tat_us - taken.keys[0].reset_us;

    refund({ "rl:refund:k", params, 2 });

    const int64_t expected = refunded_tat(params, *state, script_now, 2);
    EXPECT_EQ(expected, state->tat_us - 12000000);
    EXPECT_EQ(stored_text("rl:refund:k"),
              state_text({ expected, token_code(params) }));

    /* the TTL follows the TAT: 18 s until full */
    const int64_t ttl = pttl("rl:refund:k");
    EXPECT_LE(ttl, 18000);
    EXPECT_GT(ttl, 18000 - 5000);

    /* 5 taken, 2 given back, 1 more taken */
    const Verdict next = run({ { "rl:refund:k", params, 1 } });
    EXPECT_TRUE(next.all_allowed);
    EXPECT_EQ(next.keys[0].remaining, 6);
}


TEST_P(RedisScript, RefundToFullDeletesTheKey)
{
    const ngx_http_rate_limit_params_t params = params_for("10r/m");

    for (const uint64_t given : { 3, 4, 1000 }) {
        const std::string key = "rl:refund:full:" + std::to_string(given);

        ASSERT_TRUE(run({ { key, params, 3 } }).all_allowed);
        const std::optional<ngx_http_rate_limit_state_t> state =
            stored_state(key);
        ASSERT_TRUE(state);

        refund({ key, params, given });

        /* refund() says full: TAT now, which a missing key means too */
        EXPECT_EQ(refunded_tat(params, *state, state->tat_us - 18000000,
                               given),
                  state->tat_us - 18000000)
            << given;
        EXPECT_FALSE(stored_tat(key)) << given;
        EXPECT_EQ(pttl(key), -2) << given;

        EXPECT_EQ(run({ { key, params, 1 } }).keys[0].remaining, 9);
    }
}


TEST_P(RedisScript, RefundOfAFullBucketWritesNothing)
{
    const Limit limit { "rl:refund:absent", params_for("10r/s"), 1 };

    refund(limit);
    EXPECT_EQ(pttl(limit.key), -2);

    /* a TAT in the past is a full bucket too, with a code or without */
    for (const std::string &past : { std::string("12345"),
                                     state_text({ 12345, 17 }) })
    {
        command({ "SET", limit.key, past });
        refund(limit);
        EXPECT_EQ(pttl(limit.key), -2) << past;
    }

    /* garbage reads as a full bucket, as the decision script reads it */
    command({ "SET", limit.key, "not a number", "PX", "600000" });
    refund(limit);
    EXPECT_EQ(pttl(limit.key), -2);
}


/*
 * Changed (issue 8): refund() reads the state as decide() does, at most a
 * full bucket's time until full, so a cost above burst, which would give
 * back burst + 1 tokens, always gives back a full bucket.
 */
TEST_P(RedisScript, RefundOfACostAboveBurstGivesBackAFullBucket)
{
    const Limit limit { "rl:refund:cost", params_for("1r/s", 10), 100 };
    const int64_t tat = wall_now_us() + 3600000000LL;

    command({ "SET", limit.key, std::to_string(tat), "PX", "3600000" });
    refund(limit);
    EXPECT_EQ(pttl(limit.key), -2);

    const int64_t now = wall_now_us();
    EXPECT_EQ(refunded_tat(limit.params, state_of(std::to_string(tat)), now,
                           limit.cost),
              now);
}


/*
 * Changed (issue 8): a value more than 4 * 10^15 us ahead is no longer left
 * alone but read as decide() reads it, an empty bucket.
 */
TEST_P(RedisScript, RefundLeavesBlockedKeysAloneAndReadsForeignValues)
{
    const std::string key = "rl:refund:blocked";

    /* blocked parameters, as the module sends them and as text variants */
    for (const auto &[interval, burst] :
         std::vector<std::pair<std::string, std::string>> {
             { "0", "0" }, { "0", "10" }, { "100000", "0" }, { "-0", "3" } })
    {
        const int64_t far = 9000000000000000LL;
        command({ "SET", key, std::to_string(far), "PX", "600000" });
        const int64_t ttl = pttl(key);

        refund_args(key, { interval, burst, "5", "7" });
        EXPECT_EQ(stored_tat(key), far) << interval << " " << burst;
        EXPECT_LE(pttl(key), ttl);
        EXPECT_GT(pttl(key), ttl - 5000);
    }

    /* 5 * 10^15 us ahead: an empty bucket of 10 s, 1 s given back */
    const Limit limit { key, params_for("1r/s", 10), 1 };
    const int64_t before = wall_now_us();
    command({ "SET", key, std::to_string(before + 5000000000000000LL) });

    refund(limit);
    const int64_t after = wall_now_us();
    const std::optional<ngx_http_rate_limit_state_t> state = stored_state(key);
    ASSERT_TRUE(state);
    EXPECT_EQ(state->token_code, token_code(limit.params));
    EXPECT_GE(state->tat_us, before + 9000000);
    EXPECT_LE(state->tat_us, after + 9000000);
    EXPECT_LE(pttl(key), 9000);
    EXPECT_GT(pttl(key), 9000 - 5000);
}


TEST_P(RedisScript, RefundMatchesRefundStepByStep)
{
    /* tokens of a third of a second or more: no refill between the calls */
    for (const char *rate : { "7r/m", "13r/7s", "5r/30s", "3r/s" }) {
        const ngx_http_rate_limit_params_t params = params_for(rate, 6);

        for (const auto &[taken, given] :
             std::vector<std::pair<uint64_t, uint64_t>> {
                 { 1, 0 }, { 2, 1 }, { 6, 5 }, { 6, 1 }, { 4, 4 },
                 { 3, 7 } })
        {
            const std::string key = std::string("rl:refund:step:") + rate
                                    + ":" + std::to_string(taken) + ":"
                                    + std::to_string(given);
            const Verdict verdict = run({ { key, params, taken } });
            ASSERT_TRUE(verdict.all_allowed) << key;
            const std::optional<ngx_http_rate_limit_state_t> state =
                stored_state(key);
            ASSERT_TRUE(state) << key;
            const int64_t script_now = state->tat_us
                                       - verdict.keys[0].reset_us;

            refund({ key, params, given });

            const int64_t expected = refunded_tat(params, *state, script_now,
                                                  given);

            if (expected == script_now) {
                EXPECT_FALSE(stored_tat(key)) << key;
                continue;
            }

            EXPECT_EQ(stored_text(key),
                      state_text({ expected, token_code(params) }))
                << key;

            /* whole milliseconds until full, from a later clock */
            const int64_t ttl_ms = (expected - script_now + 999) / 1000;
            EXPECT_LE(pttl(key), ttl_ms) << key;
            EXPECT_GT(pttl(key), ttl_ms - 5000) << key;
        }
    }
}


/*
 * A limit changed since the state was stored (issue 8): the scripts carry
 * the tokens used over exactly as decide() does, and refund() too.
 */
TEST_P(RedisScript, LimitChangeMatchesDecide)
{
    rate_limit_test::for_each_change({
        { "1r/h", 10 }, { "1000r/h", 1000 }, { "10r/h", 3 }, { "10r/d", 0 },
        { "1000r/d", 1000 }, { "7r/m", 20 }, { "13r/7s", 5 }, { "1r/s", 1 },
    }, [this](const ngx_http_rate_limit_params_t &before,
              const ngx_http_rate_limit_params_t &after,
              const std::string &context) {
        const std::string key = "rl:change:" + context;

        for (uint64_t taken = 0; taken < before.burst && taken < 4; taken++) {
            ASSERT_TRUE(run({ { key, before, 1 } }).all_allowed) << context;
        }

        /* a look, then requests until one is rejected, then a look */
        run_matches_decide({ key, after, 0 }, context + ", look");
        for (int i = 0; i < 6; i++) {
            run_matches_decide({ key, after, 1 },
                               context + ", " + std::to_string(i));
        }
        run_matches_decide({ key, after, 0 }, context + ", last look");

        /* and back: a refund under the first limit, in its code */
        if (!stored_state(key)) {
            return;
        }
        refund({ key, before, 1 });
        const std::optional<ngx_http_rate_limit_state_t> refunded =
            stored_state(key);
        if (refunded) {
            EXPECT_EQ(refunded->token_code, token_code(before)) << context;
            EXPECT_EQ(encoding(key), "int") << context;
        }
    });
}


/*
 * Every code: the script's length of a code, computed by its own loop of
 * multiplications, converts as decide() converts, to the microsecond.
 */
TEST_P(RedisScript, EveryTokenCodeConvertsAsDecideConverts)
{
    /* 1 s tokens and a bucket of 10^15 us: nothing is capped */
    const Limit limit { "rl:code:k", params_for("1r/s", 1000000000), 0 };

    for (uint32_t code = 1; code <= NGX_HTTP_RATE_LIMIT_TOKEN_CODES; code++) {
        const double code_us = ngx_http_rate_limit_token_code_us(code);
        const int64_t until_full = std::min<int64_t>(
            10000000 + int64_t(code_us * 123.456789), 3000000000000000LL);

        command({ "SET", limit.key,
                  state_text({ wall_now_us() + until_full, code }) });
        ASSERT_TRUE(run_matches_decide(limit, std::to_string(code)));
    }
}


TEST_P(RedisScript, ATatWithoutACodeIsReadUnderTheLimitInForce)
{
    /* a bucket of a version before the code: 5 tokens used of 20 */
    const Limit limit { "rl:legacy:k", params_for("1r/m", 20), 1 };
    command({ "SET", limit.key, std::to_string(wall_now_us() + 300000000),
              "PX", "300000" });
    EXPECT_EQ(encoding(limit.key), "int");

    ASSERT_TRUE(run_matches_decide(limit, "legacy"));
    const std::optional<std::string> text = stored_text(limit.key);
    ASSERT_TRUE(text);
    EXPECT_EQ(state_of(*text).token_code, token_code(limit.params));
    EXPECT_EQ(encoding(limit.key), "int");

    const Verdict verdict = run({ limit });
    EXPECT_TRUE(verdict.all_allowed);
    EXPECT_EQ(verdict.keys[0].remaining, 13);
}


TEST_P(RedisScript, ARejectionStoresTheStateAsReadAndItsWaitHolds)
{
    /* used 10 of 1r/h burst=10, lowered to 10r/h burst=3 */
    const ngx_http_rate_limit_params_t before = params_for("1r/h", 10);
    const Limit lowered { "rl:held:k", params_for("10r/h", 3), 1 };
    ASSERT_TRUE(run({ { lowered.key, before, 10 } }).all_allowed);

    ASSERT_TRUE(run_matches_decide(lowered, "first"));
    const std::optional<ngx_http_rate_limit_state_t> state =
        stored_state(lowered.key);
    ASSERT_TRUE(state);
    EXPECT_EQ(state->token_code, token_code(lowered.params));

    /* 6 minutes a token from then on: the next rejections keep it */
    const Verdict verdict = run({ lowered });
    EXPECT_FALSE(verdict.all_allowed);
    EXPECT_LE(verdict.keys[0].retry_after_us, 360000000);
    EXPECT_GT(verdict.keys[0].retry_after_us, 360000000 - 5000000);
    EXPECT_EQ(stored_text(lowered.key), state_text(*state));
    EXPECT_LE(pttl(lowered.key), 3 * 360000);
    EXPECT_GT(pttl(lowered.key), 3 * 360000 - 5000);

    /* with another key that allows: nothing taken, and both stored */
    const Limit roomy { "rl:held:roomy", params_for("1r/h", 10), 1 };
    command({ "SET", roomy.key, state_text({ wall_now_us() + 7200000000LL,
                                             token_code(before) + 5 }) });
    const Verdict both = run({ roomy, lowered });
    EXPECT_FALSE(both.all_allowed);
    EXPECT_TRUE(both.keys[0].allowed);
    const std::optional<ngx_http_rate_limit_state_t> roomy_state =
        stored_state(roomy.key);
    ASSERT_TRUE(roomy_state);
    EXPECT_EQ(roomy_state->token_code, token_code(roomy.params));
    EXPECT_EQ(stored_text(lowered.key), state_text(*state));
    /* one clock: the lowered key says when now is */
    const int64_t script_now = state->tat_us - both.keys[1].reset_us;
    EXPECT_EQ(both.keys[0].reset_us, roomy_state->tat_us - script_now);
    EXPECT_LT(both.keys[0].reset_us, 2 * 3600000000LL);
    EXPECT_GT(both.keys[0].reset_us, 3600000000LL);
}


TEST_P(RedisScript, TheStateTakesNoMoreMemoryThanAPlainTat)
{
    const Limit limit { "rl:memory:0000000000000000", params_for("1r/m"),
                        1 };
    ASSERT_TRUE(run({ limit }).all_allowed);
    const std::optional<int64_t> tat = stored_tat(limit.key);
    ASSERT_TRUE(tat);

    const std::string plain = "rl:memory:0000000000000001";
    command({ "SET", plain, std::to_string(*tat), "PX", "60000" });

    Reply module = command({ "MEMORY", "USAGE", limit.key });
    Reply legacy = command({ "MEMORY", "USAGE", plain });
    ASSERT_TRUE(module && legacy);
    ASSERT_EQ(module->type, REDIS_REPLY_INTEGER);
    ASSERT_EQ(legacy->type, REDIS_REPLY_INTEGER);
    EXPECT_EQ(module->integer, legacy->integer);
    EXPECT_EQ(encoding(limit.key), "int");
}


/*
 * The batch script decides each request as the script for several keys
 * would, called for each in turn: later requests see what earlier ones
 * took, and a rejected request takes nothing.  Buckets of 1 r/m keep the
 * few microseconds between the calls out of the numbers compared.
 */
TEST_P(RedisScript, BatchDecidesEachRequestAsIfAloneInTurn)
{
    const ngx_http_rate_limit_params_t small = params_for("1r/m", 2);
    const ngx_http_rate_limit_params_t big = params_for("1r/m", 3);
    const ngx_http_rate_limit_params_t blocked = blocked_params(1, 0);

    /* requests of one or two limits on a pool of three keys */
    const std::vector<std::vector<std::tuple<std::string,
                                             ngx_http_rate_limit_params_t,
                                             uint64_t>>> requests {
        { { "a", small, 1 } },
        { { "a", small, 1 }, { "b", big, 1 } },
        { { "a", small, 1 }, { "b", big, 1 } },     /* a rejects: b kept */
        { { "b", big, 2 } },
        { { "c", big, 1 }, { "x", blocked, 1 } },   /* blocked: c kept */
        { { "c", big, 4 } },                        /* above burst */
        { { "b", big, 1 } },
        { { "c", big, 3 } },
    };

    std::vector<std::string> keys;
    std::vector<std::string> values { std::to_string(requests.size()) };
    std::vector<Verdict> alone;

    for (const auto &request : requests) {
        std::vector<Limit> limits;
        values.push_back(std::to_string(request.size()));
        for (const auto &[key, params, cost] : request) {
            keys.push_back("rl:batch:" + key);
            limits.push_back({ "rl:alone:" + key, params, cost });
            const std::vector<std::string> texts =
                script_args(limits.back());
            values.insert(values.end(), texts.begin(), texts.end());
        }
        alone.push_back(run(limits));
    }

    size_t len = 0;
    const char *script = ngx_http_rate_limit_batch_script(&len);
    Reply reply = eval_script(context_.get(),
                              ngx_http_rate_limit_batch_script_sha1(), script,
                              len, keys, values);
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ARRAY)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");

    size_t at = 0;
    for (size_t r = 0; r < requests.size(); r++) {
        ASSERT_LE(at + 1 + 4 * requests[r].size(), reply->elements);
        EXPECT_EQ(reply->element[at]->integer == 1, alone[r].all_allowed)
            << "request " << r;
        for (size_t k = 0; k < requests[r].size(); k++) {
            redisReply **got = reply->element + at + 1 + 4 * k;
            const KeyVerdict &want = alone[r].keys[k];
            EXPECT_EQ(got[0]->integer == 1, want.allowed) << r << " " << k;
            EXPECT_EQ(got[1]->integer, want.remaining) << r << " " << k;
            EXPECT_NEAR(got[2]->integer, want.retry_after_us, 100000)
                << r << " " << k;
            EXPECT_NEAR(got[3]->integer, want.reset_us, 100000)
                << r << " " << k;
        }
        at += 1 + 4 * requests[r].size();
    }
    EXPECT_EQ(at, reply->elements);

    for (const char *key : { "a", "b", "c" }) {
        const std::optional<int64_t> batch =
            stored_tat(std::string("rl:batch:") + key);
        const std::optional<int64_t> one =
            stored_tat(std::string("rl:alone:") + key);
        ASSERT_TRUE(batch && one) << key;
        EXPECT_NEAR(*batch, *one, 100000) << key;
    }
    EXPECT_FALSE(stored_tat("rl:batch:x"));
}


TEST_P(RedisScript, BatchSha1IsWhatRedisComputes)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_batch_script(&len);
    Reply reply = command({ "SCRIPT", "LOAD", std::string(script, len) });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_STRING)
        << (reply->type == REDIS_REPLY_ERROR ? reply->str : "");
    EXPECT_STREQ(reply->str, ngx_http_rate_limit_batch_script_sha1());
}


/*
 * Two real cluster nodes, each serving half of the slots: what the core
 * reads must be what Redis says.
 */
class RedisCluster : public testing::Test {
protected:
    static constexpr unsigned half = NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS / 2;

    static void SetUpTestSuite()
    {
        const std::string executable = runnable_redis_server();
        if (executable.empty()) {
            return;
        }

        for (auto &node : nodes_) {
            if (!node.start(executable)) {
                return;
            }
        }

        command(nodes_[0].context.get(),
                { "CLUSTER", "ADDSLOTSRANGE", "0", std::to_string(half - 1) });
        command(nodes_[1].context.get(),
                { "CLUSTER", "ADDSLOTSRANGE", std::to_string(half),
                  std::to_string(NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1) });
        command(nodes_[0].context.get(),
                { "CLUSTER", "MEET", "127.0.0.1",
                  std::to_string(nodes_[1].server->port()),
                  std::to_string(nodes_[1].server->bus_port()) });

        /* gossip takes a moment: until each node routes every slot */
        const auto deadline = std::chrono::steady_clock::now()
                              + std::chrono::seconds(15);
        while (std::chrono::steady_clock::now() < deadline) {
            if (routes_everything(0) && routes_everything(1)) {
                ready_ = true;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }

    static void TearDownTestSuite()
    {
        for (auto &node : nodes_) {
            node.context.reset();
            node.server.reset();
        }
    }

    void SetUp() override
    {
        if (!ready_) {
            GTEST_SKIP() << "no two-node redis cluster could be formed";
        }
    }

    /* CLUSTER SLOTS of node i, read by the core */
    static int slots_of(size_t i, ngx_http_rate_limit_cluster_map_t &map,
        std::string &err)
    {
        Reply reply = command(nodes_[i].context.get(),
                              { "CLUSTER", "SLOTS" });
        char text[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";
        const int rc = ngx_http_rate_limit_cluster_parse_slots(
            reply.get(), "127.0.0.1", &map, text, sizeof(text));
        err = text;
        return rc;
    }

    static bool routes_everything(size_t i)
    {
        auto map = std::make_unique<ngx_http_rate_limit_cluster_map_t>();
        std::string err;
        if (slots_of(i, *map, err) != 0 || map->nnodes != 2) {
            return false;
        }
        for (const unsigned char node : map->slot_node) {
            if (node == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE) {
                return false;
            }
        }
        return true;
    }

    /* until CLUSTER INFO of every node says cluster_state:ok */
    static bool wait_for_state_ok()
    {
        const auto deadline = std::chrono::steady_clock::now()
                              + std::chrono::seconds(15);
        while (std::chrono::steady_clock::now() < deadline) {
            bool ok = true;
            for (const ClusterNode &node : nodes_) {
                Reply info = command(node.context.get(),
                                     { "CLUSTER", "INFO" });
                ok = ok && info && info->type == REDIS_REPLY_STRING
                     && std::strstr(info->str, "cluster_state:ok")
                        != nullptr;
            }
            if (ok) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }

    static std::string owner(const ngx_http_rate_limit_cluster_map_t &map,
        unsigned slot)
    {
        const ngx_http_rate_limit_cluster_node_t &node =
            map.nodes[map.slot_node[slot]];
        return std::string(node.host) + ":" + std::to_string(node.port);
    }

    static std::string address(size_t i)
    {
        return "127.0.0.1:" + std::to_string(nodes_[i].server->port());
    }

    static unsigned slot_of(const std::string &key)
    {
        return ngx_http_rate_limit_cluster_slot(
            reinterpret_cast<const unsigned char *>(key.data()),
            key.size());
    }

    static std::array<ClusterNode, 2>  nodes_;
    static bool                        ready_;
};

std::array<ClusterNode, 2> RedisCluster::nodes_;
bool RedisCluster::ready_ = false;


TEST_F(RedisCluster, SlotsAreWhatClusterKeyslotSays)
{
    /* tags, empty tags, braces anywhere, NUL and high bytes */
    const std::string alphabet("ab{}:\0\xff", 7);
    uint32_t state = 12345;

    for (int n = 0; n < 500; n++) {
        std::string key;
        state = state * 1103515245 + 12345;
        const size_t len = (state >> 16) % 12;
        for (size_t i = 0; i < len; i++) {
            state = state * 1103515245 + 12345;
            key += alphabet[(state >> 16) % alphabet.size()];
        }

        Reply reply = command(nodes_[0].context.get(),
                              { "CLUSTER", "KEYSLOT", key });
        ASSERT_TRUE(reply);
        ASSERT_EQ(reply->type, REDIS_REPLY_INTEGER);
        ASSERT_EQ(slot_of(key), static_cast<unsigned>(reply->integer))
            << testing::PrintToString(key);
    }
}


TEST_F(RedisCluster, BothNodesGiveTheSameMap)
{
    for (size_t i = 0; i < nodes_.size(); i++) {
        auto map = std::make_unique<ngx_http_rate_limit_cluster_map_t>();
        std::string err;
        ASSERT_EQ(slots_of(i, *map, err), 0) << err;

        ASSERT_EQ(map->nnodes, 2u);
        EXPECT_EQ(owner(*map, 0), address(0)) << i;
        EXPECT_EQ(owner(*map, half - 1), address(0)) << i;
        EXPECT_EQ(owner(*map, half), address(1)) << i;
        EXPECT_EQ(owner(*map, NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1),
                  address(1))
            << i;
    }
}


TEST_F(RedisCluster, MovedAndAskPointWhereTheMapDoes)
{
    /* "foo" is in slot 12182, on the second node */
    const unsigned slot = slot_of("foo");
    ASSERT_GE(slot, half);
    ASSERT_TRUE(wait_for_state_ok());

    Reply reply = command(nodes_[0].context.get(), { "GET", "foo" });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ERROR);

    ngx_http_rate_limit_redirect_t redirect {};
    ASSERT_EQ(ngx_http_rate_limit_cluster_redirect(reply->str, reply->len,
                                                   &redirect),
              NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED)
        << reply->str;
    EXPECT_EQ(redirect.slot, slot);
    EXPECT_EQ(std::string(redirect.host) + ":"
              + std::to_string(redirect.port),
              address(1));

    /* a slot half moved from the first node to the second: ASK */
    const unsigned moving = slot_of("bar");
    ASSERT_LT(moving, half);
    const std::string moving_text = std::to_string(moving);

    command(nodes_[1].context.get(), { "CLUSTER", "SETSLOT", moving_text,
                                       "IMPORTING", nodes_[0].id });
    command(nodes_[0].context.get(), { "CLUSTER", "SETSLOT", moving_text,
                                       "MIGRATING", nodes_[1].id });

    reply = command(nodes_[0].context.get(), { "GET", "bar" });

    command(nodes_[0].context.get(), { "CLUSTER", "SETSLOT", moving_text,
                                       "STABLE" });
    command(nodes_[1].context.get(), { "CLUSTER", "SETSLOT", moving_text,
                                       "STABLE" });

    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ERROR);
    ASSERT_EQ(ngx_http_rate_limit_cluster_redirect(reply->str, reply->len,
                                                   &redirect),
              NGX_HTTP_RATE_LIMIT_REDIRECT_ASK)
        << reply->str;
    EXPECT_EQ(redirect.slot, moving);
    EXPECT_EQ(std::string(redirect.host) + ":"
              + std::to_string(redirect.port),
              address(1));

    /* other errors are no redirect */
    reply = command(nodes_[0].context.get(), { "MGET", "foo", "bar" });
    ASSERT_TRUE(reply);
    ASSERT_EQ(reply->type, REDIS_REPLY_ERROR);
    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(reply->str, reply->len,
                                                   &redirect),
              NGX_HTTP_RATE_LIMIT_REDIRECT_NONE)
        << reply->str;
}

} // namespace
