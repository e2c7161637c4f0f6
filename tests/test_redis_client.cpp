/*
 * The core's Redis client (rl_redis.h) against a fake host and a scripted
 * peer (rl_redis_fake.h): its state machine, step by step, on a clock that
 * only the test moves.  The behaviour expected is the C client's that it
 * replaces (ngx_module/ngx_http_rate_limit_{redis,decide,cluster,circuit,
 * nodes}.c), with its constants and log lines.
 */

#include "rl_redis_fake.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>


using namespace rl_fake;

namespace {

const char *const policy = "api=open, login=closed";
const char *const noscript = "NOSCRIPT No matching script. Please use EVAL.";


/* the texts a config points to, kept alive with it */
struct Conf {
    std::vector<std::string>          hosts, addresses;
    std::vector<rl_redis_endpoint_t>  endpoints;
    std::string                       password, username, heartbeat_key,
                                      heartbeat_id, named_address,
                                      named_host;
    rl_redis_config_t                 config {};

    Conf(std::vector<unsigned> ports, int cluster = 0,
          uint64_t timeout_ms = 200)
    {
        hosts.reserve(ports.size());
        addresses.reserve(ports.size());

        for (unsigned port : ports) {
            hosts.push_back("127.0.0.1");
            addresses.push_back("127.0.0.1:" + std::to_string(port));
            endpoints.push_back({hosts.back().c_str(), port, nullptr,
                                 addresses.back().c_str(), nullptr, 0,
                                 nullptr, 0});
        }

        config.endpoints = endpoints.data();
        config.nendpoints = endpoints.size();
        config.cluster = cluster;
        config.timeout_ms = timeout_ms;
        config.failure_policy = policy;
    }

    void auth(const std::string &p)
    {
        password = p;
        config.password = password.c_str();
        config.password_len = password.size();
    }

    void user(const std::string &u)
    {
        username = u;
        config.username = username.c_str();
        config.username_len = username.size();
    }

    /* the one server as a name resolved at run time; host is the address
     * it had when the configuration was read, or nullptr */
    void named(const std::string &address, const char *host)
    {
        named_address = address;
        named_host = host ? host : "";
        endpoints[0].address = named_address.c_str();
        endpoints[0].host = host ? named_host.c_str() : nullptr;
        endpoints[0].resolve = 1;
    }

    void heartbeat(const std::string &key, const std::string &id)
    {
        heartbeat_key = key;
        heartbeat_id = id;
        config.heartbeat_key = heartbeat_key.c_str();
        config.heartbeat_key_len = heartbeat_key.size();
        config.heartbeat_id = heartbeat_id.c_str();
        config.heartbeat_id_len = heartbeat_id.size();
    }
};


std::string
opened_line(const std::string &address, const std::string &reason,
    unsigned failures)
{
    return "rate_limit_redis \"" + address + "\" is unreachable (" + reason
           + "): circuit open after " + std::to_string(failures)
           + (failures == 1 ? " failure" : " failures")
           + ", requests are decided at once by the zones' on_failure "
             "policy: " + policy;
}


std::string
closed_line(const std::string &address)
{
    return "rate_limit_redis \"" + address + "\" is reachable again: "
           "circuit closed, zones are enforced by Redis";
}


/* EVALSHA sha n keys... values... of a request's keys */
Command
evalsha(const std::string &sha, Request &r, std::vector<size_t> which = {})
{
    if (which.empty()) {
        for (size_t i = 0; i < r.size(); i++) {
            which.push_back(i);
        }
    }

    Command c {"EVALSHA", sha, std::to_string(which.size())};

    for (size_t i : which) {
        c.push_back(r.text(i).key_text);
    }

    for (size_t i : which) {
        const Key &k = r.text(i);
        c.insert(c.end(), {k.interval, k.burst, k.cost, k.token_code});
    }

    return c;
}


Command
probe()
{
    return {"EVALSHA", one_sha(), "0", "0", "0", "1"};
}


std::vector<Command>
only(const std::vector<Command> &cs, const std::string &name)
{
    std::vector<Command> out;

    std::copy_if(cs.begin(), cs.end(), std::back_inserter(out),
                 [&](const Command &c) { return c[0] == name; });
    return out;
}


std::string
script_text(const char *(*f)(size_t *))
{
    size_t len = 0;
    const char *s = f(&len);

    return std::string(s, len);
}


resp::KeyAnswer
allowed(long long remaining = 9)
{
    return {true, remaining, 0, 100000};
}


resp::KeyAnswer
rejected(long long retry = 50000)
{
    return {false, 0, retry, 900000};
}


size_t
count_logs_all(std::initializer_list<const FakeHost *> hosts,
    const std::string &text)
{
    size_t n = 0;

    for (const FakeHost *h : hosts) {
        n += h->count_logs(text);
    }
    return n;
}


class RedisClient : public ::testing::Test {
protected:
    FakeClock     clock;
    SharedMemory  memory;
    FakeHost      host {clock, memory};

    /* one server on link 0, up and idle */
    rl_redis_client_t *start(Conf &s)
    {
        rl_redis_client_t *c = host.create(s.config);
        EXPECT_EQ(host.link(0).opens, 1u);
        host.bring_up(0);
        EXPECT_TRUE(host.take(0).empty());
        return c;
    }

    /* a request sent, one command on each of the links, not answered */
    void in_flight(Request &r, std::initializer_list<unsigned> links = {0})
    {
        ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
        host.end_pass();

        for (unsigned link : links) {
            host.take_one(link);
        }
    }

    /* requests of one pass, sent on link 0 in one batch, not answered */
    template <typename... Requests>
    void batch_in_flight(Requests &...rs)
    {
        (rs.decide(host.client()), ...);
        host.end_pass();
        ASSERT_EQ(host.take_one(0)[1], batch_sha());
    }

    /* a request of one key, sent and allowed */
    void decide_ok(Request &r)
    {
        ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
        host.end_pass();
        Command c = host.take_one(0);
        ASSERT_EQ(c[0], "EVALSHA");
        host.reply(0, resp::decision({allowed()}));
        ASSERT_EQ(r.done_calls(), 1u);
    }

    /* n decisions answered with an error reply: n soft failures */
    void soft_failures(unsigned n, const std::string &error = "ERR boom")
    {
        for (unsigned i = 0; i < n; i++) {
            Request r({"rl:api:ip" + std::to_string(i)});
            ASSERT_NO_FATAL_FAILURE(in_flight(r)) << i;
            host.reply(0, resp::error(error));
            ASSERT_EQ(r.done_calls(), 1u);
            EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
        }
    }

    rl_redis_circuit_info_t circuit(size_t i = 0)
    {
        rl_redis_circuit_info_t info {};
        EXPECT_LT(i, rl_redis_shared_circuits(memory.shared()));
        rl_redis_shared_circuit(memory.shared(), i, &info);
        return info;
    }
};


/* ---- connection set-up ---- */

TEST_F(RedisClient, ConnectsEachEndpointAtOnce)
{
    Conf s({6379});
    host.create(s.config);

    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.host, "127.0.0.1");
    EXPECT_EQ(host.link(0).endpoint.port, 6379u);
    EXPECT_EQ(host.link(0).endpoint.address, "127.0.0.1:6379");
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 127.0.0.1 6379");
    EXPECT_EQ(host.link(1).opens, 0u);
    /* nothing is written before the connection is up */
    EXPECT_TRUE(host.take(0).empty());
}


TEST_F(RedisClient, GivesOpenTheSocketAddressOfEachForm)
{
    Conf s({6379});
    std::string path = "/run/redis/redis.sock";
    s.endpoints = {{"::1", 6380, nullptr, "[::1]:6380", nullptr, 0, nullptr,
                    0},
                   {nullptr, 0, path.c_str(), path.c_str(), nullptr, 0,
                    nullptr, 0}};
    s.config.endpoints = s.endpoints.data();
    s.config.nendpoints = s.endpoints.size();
    s.config.cluster = 1;
    host.create(s.config);

    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet6 ::1 6380");
    EXPECT_EQ(host.link(1).endpoint.sockaddr, "unix " + path);
    /* the names a TLS host checks certificates against */
    EXPECT_EQ(host.link(0).endpoint.name, "::1");
    EXPECT_FALSE(host.link(1).endpoint.has_name);
}


/* the host as written, not the address it was resolved to */
TEST_F(RedisClient, GivesOpenTheHostAsWrittenForTls)
{
    Conf s({6379});
    s.endpoints = {{"10.0.0.7", 6380, nullptr, "redis.internal:6380",
                    nullptr, 0, nullptr, 0},
                   {"10.0.0.8", 6379, nullptr, "cache.internal", nullptr, 0,
                    nullptr, 0}};
    s.config.endpoints = s.endpoints.data();
    s.config.nendpoints = s.endpoints.size();
    s.config.cluster = 1;
    host.create(s.config);

    EXPECT_EQ(host.link(0).endpoint.name, "redis.internal");
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.7 6380");
    EXPECT_EQ(host.link(1).endpoint.name, "cache.internal");
}


TEST_F(RedisClient, RefusesAHostThatIsNotNumeric)
{
    Conf s({6379});
    s.endpoints[0].host = "redis.internal";
    char err[RL_REDIS_ERR_LEN];
    rl_redis_config_t config = s.config;
    config.shared = memory.shared();
    EXPECT_EQ(rl_redis_create(&config, &host.adapter(), err), nullptr);
    EXPECT_NE(std::string(err).find("must be numeric"), std::string::npos)
        << err;
}


/* a Redis 6+ ACL user: AUTH <username> <password> */
TEST_F(RedisClient, AuthNamesTheAclUser)
{
    Conf s({6379});
    s.auth("s3cret");
    s.user("ratelimit");
    host.create(s.config);
    host.connected(0);

    std::vector<Command> first = host.take(0);
    ASSERT_FALSE(first.empty());
    EXPECT_EQ(first[0], (Command {"AUTH", "ratelimit", "s3cret"}));

    /* the link is used once AUTH is answered */
    host.reply(0, resp::ok());
    Request r({"rl:api:1.2.3.4"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_FALSE(only(host.take(0), "EVALSHA").empty());
}


/* a user with nopass: its AUTH still names it, or the default user runs */
TEST_F(RedisClient, AuthNamesAnAclUserWithoutPassword)
{
    Conf s({6379});
    s.user("ratelimit");
    host.create(s.config);
    host.connected(0);

    std::vector<Command> first = host.take(0);
    ASSERT_FALSE(first.empty());
    EXPECT_EQ(first[0], (Command {"AUTH", "ratelimit", ""}));
}


TEST_F(RedisClient, AuthAndSelectGoFirstAndAloneUntilAnswered)
{
    Conf s({6379});
    s.auth("s3cret");
    s.config.db = 3;
    host.create(s.config);

    /* a decision that comes while the link connects waits for it */
    Request r({"rl:api:1.2.3.4"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    host.connected(0);

    std::vector<Command> first = host.take(0);
    ASSERT_FALSE(first.empty());
    EXPECT_EQ(first[0], (Command {"AUTH", "s3cret"}));

    for (const Command &c : first) {
        EXPECT_TRUE(c[0] == "AUTH" || c[0] == "SELECT") << show(first);
    }

    host.reply(0, resp::ok());
    std::vector<Command> second = host.take(0);
    std::vector<Command> selects = only(first, "SELECT");

    /* SELECT pipelined behind AUTH, or sent once AUTH answered */
    if (selects.empty()) {
        ASSERT_EQ(second.size(), 1u) << show(second);
        selects = second;
    } else {
        EXPECT_TRUE(second.empty()) << show(second);
    }

    ASSERT_EQ(selects.size(), 1u);
    EXPECT_EQ(selects[0], (Command {"SELECT", "3"}));
    EXPECT_EQ(r.done_calls(), 0u);

    host.reply(0, resp::ok());
    std::vector<Command> rest = host.take(0);
    ASSERT_FALSE(rest.empty());
    EXPECT_EQ(only(rest, "AUTH").size() + only(rest, "SELECT").size(), 0u);
    EXPECT_EQ(only(rest, "EVALSHA").size(), 1u) << show(rest);
    /* the scripts are loaded before the decision that needs them */
    EXPECT_EQ(rest.back(), evalsha(one_sha(), r));
}


TEST_F(RedisClient, NoAuthNorSelectWhenNotConfigured)
{
    Conf s({6379});
    host.create(s.config);
    host.connected(0);

    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    EXPECT_EQ(only(cs, "AUTH").size(), 0u);
    EXPECT_EQ(only(cs, "SELECT").size(), 0u);
    EXPECT_EQ(cs[0][0], "SCRIPT");
}


/* the scripts loaded when link 0 connects */
std::multiset<std::string>
scripts_loaded(FakeHost &host)
{
    std::multiset<std::string> loaded;

    host.connected(0);

    for (const Command &c : host.take(0)) {
        EXPECT_EQ(c.size(), 3u) << show(c);
        EXPECT_EQ(c[0], "SCRIPT");
        EXPECT_EQ(c[1], "LOAD");
        loaded.insert(c.back());
    }
    return loaded;
}


TEST_F(RedisClient, LoadsTheDecisionAndRefundScriptsOnConnect)
{
    Conf s({6379});
    host.create(s.config);

    std::multiset<std::string> scripts {
        script_text(ngx_http_rate_limit_script_one),
        script_text(ngx_http_rate_limit_script),
        script_text(ngx_http_rate_limit_batch_script),
        script_text(ngx_http_rate_limit_refund_script)};

    EXPECT_TRUE(scripts_loaded(host) == scripts);
}


TEST_F(RedisClient, LoadsTheNodesScriptTooWhenItSendsTheHeartbeat)
{
    Conf s({6379});
    s.heartbeat("rl:nodes", "web1:4242");
    host.create(s.config);

    std::multiset<std::string> scripts {
        script_text(ngx_http_rate_limit_script_one),
        script_text(ngx_http_rate_limit_script),
        script_text(ngx_http_rate_limit_batch_script),
        script_text(ngx_http_rate_limit_refund_script),
        script_text(ngx_http_rate_limit_nodes_script)};

    EXPECT_TRUE(scripts_loaded(host) == scripts);
}


TEST_F(RedisClient, AuthFailureOpensTheCircuitAndClosesTheLink)
{
    Conf s({6379});
    s.auth("wrong");
    host.create(s.config);
    host.connected(0);
    ASSERT_EQ(host.take(0).front()[0], "AUTH");

    const std::string err = "WRONGPASS invalid username-password pair or "
                            "user is disabled.";
    host.reply(0, resp::error(err));

    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "AUTH failed: " + err, 1),
                              RL_REDIS_LOG_ERR), 1u);
    EXPECT_EQ(host.logs().size(), 1u);
    EXPECT_TRUE(circuit().open);
    EXPECT_EQ(circuit().opened, 1u);
    EXPECT_EQ(std::string(circuit().address), "127.0.0.1:6379");

    /* an open circuit: a decision fails at once, done never called */
    Request r({"rl:api:1.2.3.4"});
    EXPECT_EQ(r.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    host.end_pass();
    EXPECT_EQ(r.done_calls(), 0u);

    /* and the link is tried again after the first backoff */
    host.advance_ms(49);
    EXPECT_EQ(host.link(0).opens, 1u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).opens, 2u);
}


TEST_F(RedisClient, ConnectTimesOutAfterOneSecond)
{
    Conf s({6379});
    host.create(s.config);

    host.advance_ms(999);
    EXPECT_TRUE(host.link(0).open);
    host.advance_ms(1);
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "connect timed out", 1)), 1u);

    host.advance_ms(50);
    EXPECT_EQ(host.link(0).opens, 2u);
}


TEST_F(RedisClient, SelectFailureOpensTheCircuit)
{
    Conf s({6379});
    s.config.db = 99;
    host.create(s.config);
    host.connected(0);
    ASSERT_EQ(host.take_one(0), (Command {"SELECT", "99"}));

    host.reply(0, resp::error("ERR DB index is out of range"));
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.count_logs(opened_line(
                  "127.0.0.1:6379",
                  "SELECT failed: ERR DB index is out of range", 1)), 1u);
}


TEST_F(RedisClient, OpenFailingAtOnceIsAHardFailure)
{
    Conf s({6379});
    host.link(0).fail_open = "Connection refused";
    host.create(s.config);

    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "Connection refused", 1)), 1u);

    Request r({"rl:api:1.2.3.4"});
    EXPECT_EQ(r.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);

    host.link(0).fail_open.clear();
    host.advance_ms(49);
    EXPECT_EQ(host.link(0).opens, 1u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).opens, 2u);
    host.bring_up(0);
    EXPECT_FALSE(circuit().open);
}


/* ---- decisions ---- */

/* a host whose client could not be made gets every key FAILED, as the
 * header promises for RL_REDIS_ERROR */
TEST(RedisClientNone, WithoutAClientEveryKeyFails)
{
    Request r({"rl:api:a", "rl:api:b"});

    EXPECT_EQ(r.decide(nullptr), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(r.key(1).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(r.done_calls(), 0u);
}


TEST_F(RedisClient, OneKeyDecisionAnsweredLater)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    r.key(0).decision.state.tat_us = 42;
    r.key(0).decision.state.token_code = 7;

    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    EXPECT_FALSE(r.done_inside_decide());
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_PENDING);
    host.end_pass();

    EXPECT_EQ(host.take_one(0), evalsha(one_sha(), r));
    EXPECT_EQ(r.done_calls(), 0u);

    host.reply(0, resp::decision({{true, 7, 0, 300000}}));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(0).decision.allowed, 1);
    EXPECT_EQ(r.key(0).decision.remaining, 7u);
    EXPECT_EQ(r.key(0).decision.retry_after_us, 0);
    EXPECT_EQ(r.key(0).decision.reset_us, 300000);
    /* the script keeps the state in Redis: no stale state comes back */
    EXPECT_EQ(r.key(0).decision.state.tat_us, 0);
    EXPECT_EQ(r.key(0).decision.state.token_code, 0u);
}


TEST_F(RedisClient, PartialWritesKeepTheRest)
{
    Conf s({6379});
    start(s);
    host.link(0).write_chunk = 7;

    Request a({"rl:api:a"}), b({"rl:api:b"});
    ASSERT_EQ(a.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_EQ(host.take_one(0), evalsha(one_sha(), a));
    ASSERT_EQ(b.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_EQ(host.take_one(0), evalsha(one_sha(), b));
    EXPECT_EQ(host.output_pending(0), 0u);
}


TEST_F(RedisClient, RejectionFields)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    host.reply(0, resp::decision({{false, 0, 123456, 987654}}));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(0).decision.allowed, 0);
    EXPECT_EQ(r.key(0).decision.retry_after_us, 123456);
    EXPECT_EQ(r.key(0).decision.reset_us, 987654);
}


TEST_F(RedisClient, SeveralKeysOfOneRequestGoInOneScript)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4", "rl:login:alice"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();

    EXPECT_EQ(host.take_one(0), evalsha(multi_sha(), r));
    host.reply(0, resp::decision({allowed(4), rejected(777)}));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(0).decision.allowed, 1);
    EXPECT_EQ(r.key(0).decision.remaining, 4u);
    EXPECT_EQ(r.key(1).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(1).decision.allowed, 0);
    EXPECT_EQ(r.key(1).decision.retry_after_us, 777);
    /* one server decides all or nothing: no refund */
    EXPECT_TRUE(host.take(0).empty());
}


TEST_F(RedisClient, UnexpectedReplyFailsTheKeys)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    host.reply(0, resp::integers({1, 1}));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_TRUE(host.link(0).open);

    soft_failures(4);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379", "ERR boom", 5)),
              1u);
}


TEST_F(RedisClient, TwoDecisionsOfOnePassGoInOneBatch)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"});
    Request b({"rl:api:b", "rl:login:b"});
    ASSERT_EQ(a.decide(host.client()), RL_REDIS_OK);
    ASSERT_EQ(b.decide(host.client()), RL_REDIS_OK);
    /* nothing goes out before the end of the pass */
    EXPECT_TRUE(host.take(0).empty());
    host.end_pass();

    /* EVALSHA sha nkeys keys... nops (op's nkeys, its values...)... */
    Command expected {"EVALSHA", batch_sha(), "3", "rl:api:a", "rl:api:b",
                      "rl:login:b", "2", "1"};
    const Key &ka = a.text(0), &kb0 = b.text(0), &kb1 = b.text(1);
    expected.insert(expected.end(), {ka.interval, ka.burst, ka.cost,
                                     ka.token_code, "2"});
    expected.insert(expected.end(), {kb0.interval, kb0.burst, kb0.cost,
                                     kb0.token_code, kb1.interval, kb1.burst,
                                     kb1.cost, kb1.token_code});
    EXPECT_EQ(host.take_one(0), expected);

    host.reply(0, resp::batch({{rejected(5000)},
                               {allowed(3), {true, 8, 0, 200000}}}));

    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(a.key(0).decision.allowed, 0);
    EXPECT_EQ(a.key(0).decision.retry_after_us, 5000);
    EXPECT_EQ(b.key(0).decision.allowed, 1);
    EXPECT_EQ(b.key(0).decision.remaining, 3u);
    EXPECT_EQ(b.key(1).decision.allowed, 1);
    EXPECT_EQ(b.key(1).decision.remaining, 8u);
    EXPECT_EQ(b.key(1).decision.reset_us, 200000);
}


TEST_F(RedisClient, BatchReplyOfTheWrongSizeFailsEveryOne)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    batch_in_flight(a, b);

    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_FAILED);
}


TEST_F(RedisClient, BatchNoscriptLoadsAgainAndSendsEachAlone)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    batch_in_flight(a, b);

    host.reply(0, resp::error(noscript));
    EXPECT_EQ(a.done_calls(), 0u);

    std::vector<Command> cs = host.take(0);
    std::vector<Command> loads = only(cs, "SCRIPT");
    std::vector<Command> evals = only(cs, "EVALSHA");
    EXPECT_GE(loads.size(), 3u) << show(cs);
    ASSERT_EQ(evals.size(), 2u) << show(cs);
    EXPECT_EQ(evals[0], evalsha(one_sha(), a));
    EXPECT_EQ(evals[1], evalsha(one_sha(), b));
    /* the loads go before the decisions that need them */
    EXPECT_EQ(cs.front()[0], "SCRIPT");
    EXPECT_EQ(cs.back()[0], "EVALSHA");

    std::string answers;
    char sha[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];
    for (const Command &c : cs) {
        if (c[0] == "SCRIPT") {
            ngx_http_rate_limit_sha1_hex(
                reinterpret_cast<const unsigned char *>(c[2].data()),
                c[2].size(), sha);
            answers += resp::bulk(sha);
        } else if (c == evals[0]) {
            answers += resp::decision({allowed(1)});
        } else {
            answers += resp::decision({allowed(2)});
        }
    }
    host.reply(0, answers);

    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(a.key(0).decision.remaining, 1u);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(b.key(0).decision.remaining, 2u);
}


TEST_F(RedisClient, NoscriptRetriedOnceThenCountedAsAnError)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    Command sent = host.take_one(0);
    ASSERT_EQ(sent, evalsha(one_sha(), r));

    host.reply(0, resp::error(noscript));
    EXPECT_EQ(r.done_calls(), 0u);

    std::vector<Command> cs = host.take(0);
    EXPECT_GE(only(cs, "SCRIPT").size(), 3u) << show(cs);
    ASSERT_EQ(only(cs, "EVALSHA").size(), 1u) << show(cs);
    EXPECT_EQ(cs.back(), sent);

    /* the loads answer, and the script is still missing */
    std::string answers;
    for (size_t i = 0; i + 1 < cs.size(); i++) {
        answers += resp::bulk(one_sha());
    }
    host.reply(0, answers + resp::error(noscript));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_TRUE(only(host.take(0), "EVALSHA").empty());
    EXPECT_TRUE(host.link(0).open);
    EXPECT_FALSE(circuit().open);

    /* it was one soft failure: four more open the circuit */
    soft_failures(3);
    EXPECT_FALSE(circuit().open);
    soft_failures(1);
    EXPECT_TRUE(circuit().open);
}


/* ---- timeouts and the timer ---- */

TEST_F(RedisClient, ReplyTimesOutAndTheLateReplyIsDropped)
{
    Conf s({6379}, 0, 200);
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);

    host.advance_ms(199);
    EXPECT_EQ(r.done_calls(), 0u);
    host.advance_ms(1);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);

    /* a second decision pipelined behind the late one */
    Request r2({"rl:api:5.6.7.8"});
    in_flight(r2);

    host.advance_ms(50);
    host.reply(0, resp::decision({allowed(1)}) + resp::decision({allowed(2)}));

    EXPECT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    ASSERT_EQ(r2.done_calls(), 1u);
    EXPECT_EQ(r2.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r2.key(0).decision.remaining, 2u);
}


TEST_F(RedisClient, FiveTimeoutsOpenTheCircuit)
{
    Conf s({6379}, 0, 200);
    start(s);

    for (unsigned i = 0; i < 5; i++) {
        EXPECT_FALSE(circuit().open) << i;
        Request r({"rl:api:" + std::to_string(i)});
        in_flight(r);
        host.advance_ms(200);
        ASSERT_EQ(r.done_calls(), 1u);
        EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    }

    EXPECT_TRUE(circuit().open);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "reply timed out", 5),
                              RL_REDIS_LOG_ERR), 1u);
}


TEST_F(RedisClient, TimerHoldsWhileARequestIsInFlight)
{
    Conf s({6379}, 0, 200);
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);

    ASSERT_TRUE(host.timer_armed());
    EXPECT_EQ(host.timer_hold(), 1);
    /* armed for the request's timeout at the latest */
    EXPECT_LE(host.timer_deadline_us(), host.now_us() + 200000);

    host.advance_ms(10);
    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(host.timer_hold(), 0) << "the timer still holds a shutdown "
                                       "back after the request is done";
}


TEST_F(RedisClient, StallClosesTheLinkAndReconnectsWithBackoff)
{
    Conf s({6379}, 0, 2000);
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    uint64_t sent = host.now_us();

    /* stall = max(1 s, timeout) = 2 s, and the decision's timeout with it */
    host.advance_ms(1999);
    EXPECT_TRUE(host.link(0).open);
    host.advance_ms(1);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "no reply for 2000 ms", 2)), 1u)
        << (host.logs().empty() ? "" : host.logs().back().msg);
    uint64_t closed = host.now_us();
    EXPECT_EQ(closed - sent, 2000000u);

    /* 50, 100, 200 ... 1000 ms between a failed connection and the next */
    uint64_t expected[] = {50, 100, 200, 400, 800, 1000, 1000};

    for (uint64_t backoff : expected) {
        unsigned opens = host.link(0).opens;
        host.advance_ms(backoff - 1);
        EXPECT_EQ(host.link(0).opens, opens) << backoff;
        host.advance_ms(1);
        ASSERT_EQ(host.link(0).opens, opens + 1) << backoff;
        host.peer_closed(0, "Connection refused");
    }
}


TEST_F(RedisClient, StallNeedsOneSecondAtLeast)
{
    Conf s({6379}, 0, 200);
    start(s);

    /* replies owed since the first decision, none coming */
    Request r1({"rl:api:1"});
    in_flight(r1);
    host.advance_ms(750);
    ASSERT_EQ(r1.done_calls(), 1u);

    /* its timeout 950 ms after the first was sent: not yet a stall */
    Request r2({"rl:api:2"});
    in_flight(r2);
    host.advance_ms(200);
    ASSERT_EQ(r2.done_calls(), 1u);
    EXPECT_TRUE(host.link(0).open) << "closed after 950 ms without a reply";

    Request r3({"rl:api:3"});
    in_flight(r3);
    host.advance_ms(200);
    ASSERT_EQ(r3.done_calls(), 1u);
    EXPECT_FALSE(host.link(0).open) << "still open after 1150 ms";
    EXPECT_EQ(host.count_logs("(no reply for 1150 ms)"), 1u);
}


TEST_F(RedisClient, BackoffResetByASuccessfulScriptLoad)
{
    Conf s({6379});
    start(s);

    host.peer_closed(0);
    host.advance_ms(50);
    ASSERT_EQ(host.link(0).opens, 2u);
    host.peer_closed(0, "Connection refused");
    host.advance_ms(100);
    ASSERT_EQ(host.link(0).opens, 3u);

    /* up again: the scripts load, and the next loss waits 50 ms again */
    host.bring_up(0);
    host.peer_closed(0);
    host.advance_ms(49);
    EXPECT_EQ(host.link(0).opens, 3u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).opens, 4u);
}


/* ---- circuit ---- */

TEST_F(RedisClient, FiveSoftFailuresOpenTheCircuit)
{
    Conf s({6379});
    start(s);

    soft_failures(4);
    EXPECT_FALSE(circuit().open);
    EXPECT_EQ(host.logs().size(), 0u);

    /* a success in between starts the count again */
    Request ok({"rl:api:ok"});
    decide_ok(ok);
    soft_failures(4);
    EXPECT_FALSE(circuit().open);
    soft_failures(1);

    EXPECT_TRUE(circuit().open);
    EXPECT_EQ(circuit().opened, 1u);
    EXPECT_EQ(circuit().up, 0);
    ASSERT_EQ(host.logs().size(), 1u);
    EXPECT_EQ(host.logs()[0].level, RL_REDIS_LOG_ERR);
    EXPECT_EQ(host.logs()[0].msg,
              opened_line("127.0.0.1:6379", "ERR boom", 5));

    Request r({"rl:api:late"});
    EXPECT_EQ(r.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    host.end_pass();
    EXPECT_TRUE(only(host.take(0), "EVALSHA").empty());
    EXPECT_EQ(r.done_calls(), 0u);
}


TEST_F(RedisClient, ProbeOnScheduleAndItsSuccessClosesTheCircuit)
{
    Conf s({6379});
    start(s);
    soft_failures(5);
    ASSERT_TRUE(circuit().open);
    host.clear_logs();

    /* the probes: 100 ms after the opening, then 200, 400 ... 1000 ms
     * after each failed one */
    uint64_t gaps[] = {100, 200, 400, 800, 1000, 1000};

    for (uint64_t gap : gaps) {
        host.advance_ms(gap - 1);
        EXPECT_TRUE(host.take(0).empty()) << gap;
        host.advance_ms(1);
        ASSERT_EQ(host.take_one(0), probe()) << gap;
        host.reply(0, resp::error("ERR still down"));
        EXPECT_TRUE(circuit().open);
    }

    EXPECT_EQ(host.logs().size(), 0u);
    host.advance_ms(1000);
    ASSERT_EQ(host.take_one(0), probe());
    host.reply(0, resp::integers({1}));

    EXPECT_FALSE(circuit().open);
    EXPECT_EQ(circuit().closed, 1u);
    EXPECT_EQ(circuit().up, 1);
    ASSERT_EQ(host.logs().size(), 1u);
    EXPECT_EQ(host.logs()[0].level, RL_REDIS_LOG_NOTICE);
    EXPECT_EQ(host.logs()[0].msg, closed_line("127.0.0.1:6379"));

    Request r({"rl:api:again"});
    decide_ok(r);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
}


TEST_F(RedisClient, TwoWorkersShareOneCircuit)
{
    FakeHost other(clock, memory);
    Conf s({6379});

    host.create(s.config);
    other.create(s.config);
    host.bring_up(0);
    other.bring_up(0);
    EXPECT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(memory.lock_errors(), 0u);
    EXPECT_FALSE(memory.locked());

    soft_failures(5);
    ASSERT_TRUE(circuit().open);

    /* the other worker sees it open, and does not log it again */
    Request r({"rl:api:1.2.3.4"});
    EXPECT_EQ(r.decide(other.client()), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    other.end_pass();
    EXPECT_TRUE(only(other.take(0), "EVALSHA").empty());
    EXPECT_EQ(count_logs_all({&host, &other}, "is unreachable"), 1u);

    /* one probe for the node, from whichever worker's turn it is */
    advance_all_ms({&host, &other}, 100);
    std::vector<Command> mine = host.take(0), theirs = other.take(0);
    ASSERT_EQ(mine.size() + theirs.size(), 1u)
        << show(mine) << " / " << show(theirs);
    FakeHost &prober = mine.empty() ? other : host;
    EXPECT_EQ(mine.empty() ? theirs[0] : mine[0], probe());
    prober.reply(0, resp::integers({1}));

    EXPECT_FALSE(circuit().open);
    EXPECT_EQ(count_logs_all({&host, &other}, "is reachable again"), 1u);
    EXPECT_EQ(prober.count_logs("is reachable again"), 1u);

    Request r2({"rl:api:1.2.3.4"});
    EXPECT_EQ(r2.decide(other.client()), RL_REDIS_OK);
    other.end_pass();
    EXPECT_EQ(other.take_one(0), evalsha(one_sha(), r2));
    other.reply(0, resp::decision({allowed()}));
    EXPECT_EQ(r2.done_calls(), 1u);
    EXPECT_EQ(memory.lock_errors(), 0u);
}


TEST_F(RedisClient, ProbeNoscriptLoadsTheScriptsAgain)
{
    Conf s({6379});
    start(s);
    soft_failures(5);
    ASSERT_TRUE(circuit().open);

    host.advance_ms(100);
    ASSERT_EQ(host.take_one(0), probe());
    host.reply(0, resp::error(noscript));

    std::vector<Command> cs = host.take(0);
    EXPECT_GE(only(cs, "SCRIPT").size(), 3u) << show(cs);
    EXPECT_EQ(cs.size(), only(cs, "SCRIPT").size()) << show(cs);
    EXPECT_TRUE(circuit().open);

    /* a failed probe: the next one 200 ms later */
    std::string answers;
    for (size_t i = 0; i < cs.size(); i++) {
        answers += resp::bulk("x");
    }
    host.reply(0, answers);
    EXPECT_TRUE(circuit().open) << "a load after NOSCRIPT proves nothing";
    host.advance_ms(199);
    EXPECT_TRUE(host.take(0).empty());
    host.advance_ms(1);
    EXPECT_EQ(host.take_one(0), probe());
}


TEST_F(RedisClient, ProbeTimesOutAsAFailedProbe)
{
    Conf s({6379}, 0, 150);
    start(s);
    soft_failures(5);

    host.advance_ms(100);
    ASSERT_EQ(host.take_one(0), probe());
    /* no answer: at 150 ms it failed, and the next waits 200 ms */
    host.advance_ms(300);
    EXPECT_TRUE(host.take(0).empty());
    EXPECT_TRUE(circuit().open);
    host.advance_ms(100);
    EXPECT_EQ(host.take_one(0), probe());
}


/* ---- cancel, closes ---- */

TEST_F(RedisClient, CancelMidFlight)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    r.cancel(host.client());

    /* a request behind it still gets its own answer */
    Request r2({"rl:api:5.6.7.8"});
    in_flight(r2);
    host.reply(0, resp::decision({allowed(1)}) + resp::decision({allowed(2)}));

    EXPECT_EQ(r.done_calls(), 0u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_PENDING);
    ASSERT_EQ(r2.done_calls(), 1u);
    EXPECT_EQ(r2.key(0).decision.remaining, 2u);

    /* no timeout fires for it either */
    host.advance_ms(1000);
    EXPECT_EQ(r.done_calls(), 0u);
}


TEST_F(RedisClient, CancelBeforeTheBatchGoesOut)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    ASSERT_EQ(a.decide(host.client()), RL_REDIS_OK);
    ASSERT_EQ(b.decide(host.client()), RL_REDIS_OK);
    a.cancel(host.client());
    host.end_pass();

    EXPECT_EQ(host.take_one(0), evalsha(one_sha(), b));
    host.reply(0, resp::decision({allowed()}));
    EXPECT_EQ(a.done_calls(), 0u);
    EXPECT_EQ(b.done_calls(), 1u);
}


TEST_F(RedisClient, CancelThenTheLinkCloses)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    r.cancel(host.client());
    host.peer_closed(0);
    EXPECT_EQ(r.done_calls(), 0u);
}


TEST_F(RedisClient, CancelOneOfABatchInFlight)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    batch_in_flight(a, b);
    a.cancel(host.client());

    host.reply(0, resp::batch({{allowed(1)}, {allowed(2)}}));
    EXPECT_EQ(a.done_calls(), 0u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(b.key(0).decision.remaining, 2u);
}


/* what waits for AUTH is dropped when its request is over; without
 * AUTH nor SELECT, the C client queued it at once, as this one does */
TEST_F(RedisClient, DecisionWaitingForAuthTimesOutAndIsNotSentLater)
{
    Conf s({6379}, 0, 200);
    s.auth("s3cret");
    host.create(s.config);

    Request r({"rl:api:1.2.3.4"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    host.advance_ms(199);
    EXPECT_EQ(r.done_calls(), 0u);
    host.advance_ms(1);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);

    host.advance_ms(100);
    host.connected(0);
    ASSERT_EQ(host.take_one(0), (Command {"AUTH", "s3cret"}));
    host.reply(0, resp::ok());
    std::vector<Command> cs = host.take(0);
    EXPECT_FALSE(only(cs, "SCRIPT").empty()) << show(cs);
    EXPECT_TRUE(only(cs, "EVALSHA").empty()) << show(cs);
}


TEST_F(RedisClient, ScriptLoadErrorIsLogged)
{
    Conf s({6379});
    host.create(s.config);
    host.connected(0);
    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());

    std::string answers = resp::error("ERR script too big");
    for (size_t i = 1; i < cs.size(); i++) {
        answers += resp::bulk("x");
    }
    host.reply(0, answers);

    EXPECT_EQ(host.count_logs("rate_limit_redis \"127.0.0.1:6379\": SCRIPT "
                              "LOAD failed: ERR script too big",
                              RL_REDIS_LOG_ERR), 1u);
    EXPECT_TRUE(host.link(0).open);
}


TEST_F(RedisClient, CallbackAsksAgain)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    a.on_done = [&] { EXPECT_EQ(b.decide(host.client()), RL_REDIS_OK); };
    in_flight(a);
    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(a.done_calls(), 1u);
    EXPECT_EQ(b.done_calls(), 0u);

    EXPECT_EQ(host.take_one(0), evalsha(one_sha(), b));
    host.reply(0, resp::decision({allowed(4)}));
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(b.key(0).decision.remaining, 4u);
}


TEST_F(RedisClient, CallbackCancelsTheNextOfItsBatch)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"}), c({"rl:api:c"});
    a.on_done = [&] { b.cancel(host.client()); };
    batch_in_flight(a, b, c);

    host.reply(0, resp::batch({{allowed(1)}, {allowed(2)}, {allowed(3)}}));
    EXPECT_EQ(a.done_calls(), 1u);
    EXPECT_EQ(b.done_calls(), 0u);
    ASSERT_EQ(c.done_calls(), 1u);
    EXPECT_EQ(c.key(0).decision.remaining, 3u);
}


TEST_F(RedisClient, BatchTimesOutAndItsLateReplyIsDropped)
{
    Conf s({6379}, 0, 200);
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    batch_in_flight(a, b);

    host.advance_ms(200);
    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_FAILED);

    host.reply(0, resp::batch({{allowed(1)}, {allowed(2)}}));
    EXPECT_EQ(a.done_calls(), 1u);
    EXPECT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
}


TEST_F(RedisClient, PeerClosesWithAPartialReply)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);

    std::string full = resp::decision({allowed()});
    host.reply(0, full.substr(0, full.size() / 2));
    EXPECT_EQ(r.done_calls(), 0u);
    host.peer_closed(0);

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_TRUE(circuit().open);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:6379",
                                          "Server closed the connection",
                                          1)), 1u);

    /* the new connection starts afresh: the half reply is forgotten */
    host.advance_ms(50);
    ASSERT_EQ(host.link(0).opens, 2u);
    host.bring_up(0);
    EXPECT_FALSE(circuit().open);

    Request r2({"rl:api:again"});
    decide_ok(r2);
    EXPECT_EQ(r2.key(0).status, RL_REDIS_KEY_DECIDED);
}


TEST_F(RedisClient, PeerClosedFailsEveryPendingKeyAndReconnects)
{
    Conf s({6379});
    start(s);

    Request a({"rl:api:a"}), b({"rl:api:b"});
    a.decide(host.client());
    host.end_pass();
    host.take_one(0);
    b.decide(host.client());
    host.end_pass();
    host.take_one(0);

    host.peer_closed(0);
    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.link(0).closes, 0u);

    /* no connection: a decision fails at once */
    Request c({"rl:api:c"});
    EXPECT_EQ(c.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(c.key(0).status, RL_REDIS_KEY_FAILED);

    host.advance_ms(50);
    EXPECT_EQ(host.link(0).opens, 2u);
}


TEST_F(RedisClient, ReplyThatClosesTheLinkWithBytesLeftInTheChunk)
{
    Conf s({6379});
    s.auth("wrong");
    s.config.db = 2;
    host.create(s.config);

    Request r({"rl:api:1.2.3.4"});
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    host.connected(0);
    std::vector<Command> cs = host.take(0);
    ASSERT_EQ(cs.front()[0], "AUTH");

    /* the AUTH error, and in the same read what follows it */
    host.reply(0, resp::error("WRONGPASS nope") + resp::ok()
                  + resp::decision({allowed()}));

    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_FALSE(host.link(0).open);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.count_logs("is unreachable (AUTH failed: WRONGPASS nope)"),
              1u);
}


TEST_F(RedisClient, DestroyWithRequestsInFlight)
{
    Conf s({6379});
    start(s);

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);

    host.destroy();
    EXPECT_EQ(r.done_calls(), 0u);
    EXPECT_EQ(host.link(0).closes, 1u);
}


/* ---- host names that move ---- */

class RedisClientName : public RedisClient {
protected:
    Conf s {{6379}};

    /* redis.test, first at 10.0.0.2, up and idle, its answer valid 60 s */
    void start_named()
    {
        s.named("redis.test:6379", "10.0.0.2");
        host.create(s.config);
        host.bring_up(0);
        ASSERT_EQ(host.link(0).resolves, 1u);
        host.resolved(0, {"10.0.0.2"}, 60000);
        ASSERT_TRUE(host.take(0).empty());
        ASSERT_EQ(host.link(0).closes, 0u);
    }
};


TEST_F(RedisClientName, ResolvesFirstWhenTheNameHadNoAddress)
{
    s.named("redis.test:6379", nullptr);
    host.create(s.config);

    EXPECT_EQ(host.link(0).opens, 0u);
    EXPECT_EQ(host.link(0).resolves, 1u);
    EXPECT_EQ(host.link(0).resolve_name, "redis.test");

    /* no address yet: on_failure decides at once */
    Request early({"rl:api:a"});
    EXPECT_EQ(early.decide(host.client()), RL_REDIS_ERROR);

    host.resolved(0, {"10.0.0.2", "10.0.0.9"}, 1000);

    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.2 6379");
    EXPECT_EQ(host.link(0).endpoint.address, "redis.test:6379");
    EXPECT_EQ(host.link(0).endpoint.name, "redis.test");
    EXPECT_EQ(host.count_logs("\"redis.test\" is 10.0.0.2",
                              RL_REDIS_LOG_INFO), 1u);

    host.bring_up(0);
    Request r({"rl:api:b"});
    decide_ok(r);
}


TEST_F(RedisClientName, ConnectsToTheKnownAddressAndResolvesAtOnce)
{
    s.named("redis.test:6379", "10.0.0.2");
    host.create(s.config);

    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.2 6379");
    EXPECT_EQ(host.link(0).resolves, 1u);
}


TEST_F(RedisClientName, ResolvesAgainWhenTheAnswerRunsOutUnchanged)
{
    s.named("redis.test:6379", "10.0.0.2");
    host.create(s.config);
    host.bring_up(0);
    host.resolved(0, {"10.0.0.9", "10.0.0.2"}, 1500);

    host.advance_ms(1499);
    EXPECT_EQ(host.link(0).resolves, 1u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).resolves, 2u);

    host.resolved(0, {"10.0.0.2"}, 1000);
    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(host.count_logs("moved"), 0u);

    Request r({"rl:api:a"});
    decide_ok(r);
}


TEST_F(RedisClientName, AnAnswerValidForNoTimeIsAskedAgainSoonNotAtOnce)
{
    start_named();
    host.advance_ms(60000);
    ASSERT_EQ(host.link(0).resolves, 2u);
    host.resolved(0, {"10.0.0.2"}, 0);

    host.advance_ms(99);
    EXPECT_EQ(host.link(0).resolves, 2u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).resolves, 3u);
}


TEST_F(RedisClientName, ResolvesAgainAfterALostConnectionBeforeReconnecting)
{
    start_named();

    host.peer_closed(0);
    EXPECT_EQ(host.link(0).resolves, 2u);
    EXPECT_EQ(host.link(0).opens, 1u);

    /* the answer comes before the reconnection's backoff runs out */
    host.resolved(0, {"10.0.0.3"}, 60000);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.3 6379");
}


TEST_F(RedisClientName, ResolvesAgainAfterAFailedConnect)
{
    s.named("redis.test:6379", "10.0.0.2");
    host.create(s.config);
    host.resolved(0, {"10.0.0.2"}, 60000);

    host.peer_closed(0, "Connection refused");
    EXPECT_EQ(host.link(0).resolves, 2u);

    /* the same address: the reconnection goes on with its backoff */
    host.resolved(0, {"10.0.0.2"}, 60000);
    EXPECT_EQ(host.link(0).opens, 1u);
    host.advance_ms(50);
    EXPECT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.2 6379");
}


TEST_F(RedisClientName, AnIdleLinkMovesAtOnce)
{
    start_named();
    host.advance_ms(60000);
    host.resolved(0, {"10.0.0.3"}, 60000);

    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.3 6379");
    EXPECT_EQ(host.link(0).endpoint.name, "redis.test");
    EXPECT_EQ(host.count_logs("rate_limit_redis \"redis.test:6379\": "
                              "\"redis.test\" moved from 10.0.0.2 to "
                              "10.0.0.3, the link follows",
                              RL_REDIS_LOG_NOTICE), 1u);

    /* the circuit is the address's as written: the same one */
    host.bring_up(0);
    EXPECT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(std::string(circuit().address), "redis.test:6379");
    EXPECT_EQ(circuit().open, 0);

    Request r({"rl:api:a"});
    decide_ok(r);
}


/* no request fails because of a move */
TEST_F(RedisClientName, ABusyLinkMovesOnceItsRepliesAreIn)
{
    start_named();

    /* sent just before the answer runs out */
    host.advance_ms(59900);
    Request before({"rl:api:a"});
    in_flight(before);

    host.advance_ms(100);
    host.resolved(0, {"10.0.0.3"}, 60000);
    EXPECT_EQ(host.link(0).closes, 0u);

    /* a decision meanwhile waits for the new connection */
    Request during({"rl:api:b"});
    ASSERT_EQ(during.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_TRUE(host.take(0).empty());

    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(before.done_calls(), 1u);
    EXPECT_EQ(before.key(0).status, RL_REDIS_KEY_DECIDED);

    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 10.0.0.3 6379");
    EXPECT_EQ(during.done_calls(), 0u);

    host.connected(0);
    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    EXPECT_EQ(cs.back(), evalsha(one_sha(), during)) << show(cs);
    EXPECT_EQ(only(cs, "SCRIPT").size(), cs.size() - 1) << show(cs);

    std::string answers;
    for (size_t i = 0; i + 1 < cs.size(); i++) {
        answers += resp::bulk("sha");
    }
    host.reply(0, answers + resp::decision({allowed()}));

    ASSERT_EQ(during.done_calls(), 1u);
    EXPECT_EQ(during.key(0).status, RL_REDIS_KEY_DECIDED);
}


/* the replies owed never come: the move waits no longer than the newest
 * decision sent, and what came meanwhile still has its own time */
TEST_F(RedisClientName, ABusyLinkMovesOnceItsNewestDecisionIsOver)
{
    start_named();

    host.advance_ms(59900);
    Request before({"rl:api:a"});
    in_flight(before);
    host.advance_ms(100);
    host.resolved(0, {"10.0.0.3"}, 60000);

    Request during({"rl:api:b"});
    ASSERT_EQ(during.decide(host.client()), RL_REDIS_OK);
    host.end_pass();

    host.advance_ms(99);
    EXPECT_EQ(host.link(0).closes, 0u);
    host.advance_ms(1);
    EXPECT_EQ(before.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(during.done_calls(), 0u);

    host.connected(0);
    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    EXPECT_EQ(cs.back(), evalsha(one_sha(), during)) << show(cs);
}


TEST_F(RedisClientName, AResolverErrorKeepsTheAddressAndRetriesWithBackoff)
{
    start_named();
    host.advance_ms(60000);
    ASSERT_EQ(host.link(0).resolves, 2u);

    host.resolved(0, {}, 0, "Host not found");
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(host.count_logs("rate_limit_redis \"redis.test:6379\": "
                              "resolving \"redis.test\" failed (Host not "
                              "found), the link stays at 10.0.0.2",
                              RL_REDIS_LOG_ERR), 1u);

    Request r({"rl:api:a"});
    decide_ok(r);

    host.advance_ms(999);
    EXPECT_EQ(host.link(0).resolves, 2u);
    host.advance_ms(1);
    ASSERT_EQ(host.link(0).resolves, 3u);

    /* the hook itself may fail: the same backoff, doubled; logged once */
    host.link(0).fail_resolve = "cannot start a query";
    host.resolved(0, {}, 0, "Server failure");
    host.advance_ms(1999);
    EXPECT_EQ(host.link(0).resolves, 3u);
    host.advance_ms(1);
    EXPECT_EQ(host.link(0).resolves, 4u);
    host.advance_ms(4000);
    EXPECT_EQ(host.link(0).resolves, 5u);
    EXPECT_EQ(host.count_logs("failed"), 1u);

    /* answered again: the backoff starts over */
    host.link(0).fail_resolve.clear();
    host.advance_ms(8000);
    ASSERT_EQ(host.link(0).resolves, 6u);
    host.resolved(0, {"10.0.0.2"}, 60000);
    EXPECT_EQ(host.link(0).closes, 0u);
    host.advance_ms(59999);
    EXPECT_EQ(host.link(0).resolves, 6u);
}


TEST_F(RedisClientName, AClusterSeedNameIsItsOwnLink)
{
    s.named("seed.test:7000", "10.0.0.2");
    s.endpoints[0].port = 7000;
    s.config.cluster = 1;
    host.create(s.config);
    host.resolved(0, {"10.0.0.2"}, 60000);

    /* a master announced at the seed's address gets a link of its own */
    host.bring_up(0, resp::cluster_slots({{0, 16383, "10.0.0.2", 7000}}));
    ASSERT_EQ(host.link(1).opens, 1u);
    EXPECT_EQ(host.link(1).endpoint.address, "10.0.0.2:7000");
    EXPECT_EQ(host.link(1).resolves, 0u);
}


/* ---- latency ---- */

TEST_F(RedisClient, LatencyHistogramCountsTheRoundTrip)
{
    Conf s({6379});
    start(s);

    rl_redis_latency_t before {};
    rl_redis_shared_latency(memory.shared(), &before);
    const uint64_t bounds[] = {250, 500, 1000, 2500, 5000, 10000, 25000,
                               50000, 100000, 250000};
    for (size_t i = 0; i < RL_REDIS_LATENCY_BOUNDS; i++) {
        EXPECT_EQ(before.bounds_us[i], bounds[i]);
    }

    Request r({"rl:api:1.2.3.4"});
    in_flight(r);
    host.advance_us(3000);
    host.reply(0, resp::decision({allowed()}));

    rl_redis_latency_t after {};
    rl_redis_shared_latency(memory.shared(), &after);

    for (size_t i = 0; i <= RL_REDIS_LATENCY_BOUNDS; i++) {
        EXPECT_EQ(after.counts[i] - before.counts[i], i == 4 ? 1u : 0u) << i;
    }
    EXPECT_EQ(after.sum_us - before.sum_us, 3000u);
}


/* ---- heartbeat ---- */

TEST_F(RedisClient, HeartbeatCadence)
{
    Conf s({6379}, 0, 1500);
    s.heartbeat("rl:nodes", "web1:4242");
    start(s);
    Command beat {"EVALSHA", nodes_sha(), "1", "rl:nodes", "web1:4242",
                  "5000"};

    EXPECT_EQ(rl_redis_shared_nodes(memory.shared()), 0u);

    host.advance_ms(99);
    EXPECT_TRUE(host.take(0).empty());
    host.advance_ms(1);
    EXPECT_EQ(host.take_one(0), beat);
    host.reply(0, resp::integer(3));
    EXPECT_EQ(rl_redis_shared_nodes(memory.shared()), 3u);

    host.advance_ms(999);
    EXPECT_TRUE(host.take(0).empty());
    host.advance_ms(1);
    EXPECT_EQ(host.take_one(0), beat);

    /* unanswered: the next beat is skipped */
    host.advance_ms(1000);
    EXPECT_TRUE(host.take(0).empty());
    host.advance_ms(50);
    host.reply(0, resp::integer(2));
    EXPECT_EQ(rl_redis_shared_nodes(memory.shared()), 2u);

    host.advance_ms(950);
    EXPECT_EQ(host.take_one(0), beat);
    host.reply(0, resp::integer(0));
    /* a count below 1 is not a count */
    EXPECT_EQ(rl_redis_shared_nodes(memory.shared()), 2u);
}


TEST_F(RedisClient, NoHeartbeatWhileTheCircuitIsOpen)
{
    Conf s({6379});
    s.heartbeat("rl:nodes", "web1:4242");
    start(s);
    soft_failures(5);
    ASSERT_TRUE(circuit().open);

    /* two seconds of probes, each failing, and no heartbeat among them */
    unsigned probes = 0;

    for (unsigned step = 0; step < 20; step++) {
        host.advance_ms(100);

        for (const Command &c : host.take(0)) {
            ASSERT_EQ(c, probe());
            probes++;
            host.reply(0, resp::error("ERR down"));
        }
    }

    EXPECT_GE(probes, 3u);
    EXPECT_TRUE(circuit().open);
}


TEST_F(RedisClient, HeartbeatResumesOnTheNextConnection)
{
    Conf s({6379}, 0, 1500);
    s.heartbeat("rl:nodes", "web1:4242");
    start(s);

    host.advance_ms(100);
    ASSERT_EQ(host.take_one(0)[1], nodes_sha());

    /* the beat is lost with its connection, and not waited for */
    host.peer_closed(0);
    host.advance_ms(50);
    ASSERT_EQ(host.link(0).opens, 2u);
    host.bring_up(0);

    host.advance_ms(950);
    std::vector<Command> cs = host.take(0);
    ASSERT_EQ(cs.size(), 1u) << show(cs);
    EXPECT_EQ(cs[0][1], nodes_sha());
}


TEST_F(RedisClient, NoHeartbeatWithoutItsKey)
{
    Conf s({6379});
    start(s);

    host.advance_ms(3000);
    EXPECT_TRUE(host.take(0).empty());
}


/* ---- cluster ---- */

TEST_F(RedisClient, ClusterKeysFailAtOnceBeforeTheMap)
{
    Conf s({7000}, 1);
    host.create(s.config);
    host.connected(0);

    Request r({"rl:api:1.2.3.4"});
    EXPECT_EQ(r.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    host.end_pass();
    EXPECT_EQ(r.done_calls(), 0u);
}


class RedisCluster : public RedisClient {
protected:
    Conf     s {{7000}, 1, 500};
    unsigned  l7000 = 0, l7001 = 0;
    uint64_t  created_us = 0;

    static std::string two_masters()
    {
        return resp::cluster_slots({{0, 8191, "127.0.0.1", 7000},
                                    {8192, 16383, "127.0.0.1", 7001}});
    }

    static unsigned slot(const std::string &k)
    {
        return ngx_http_rate_limit_cluster_slot(
            reinterpret_cast<const unsigned char *>(k.data()), k.size());
    }

    /* a key whose slot is in [first, last], other than those in not */
    static std::string key_in(unsigned first, unsigned last,
                              const std::set<unsigned> &not_slots = {})
    {
        for (unsigned i = 0;; i++) {
            std::string k = "rl:api:" + std::to_string(i);
            unsigned sl = slot(k);
            if (sl >= first && sl <= last && !not_slots.count(sl)) {
                return k;
            }
        }
    }

    int link_of(unsigned port)
    {
        for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
            if (host.link(i).open && host.link(i).endpoint.port == port) {
                return int(i);
            }
        }
        return -1;
    }

    void SetUp() override
    {
        created_us = host.now_us();
        host.create(s.config);
        ASSERT_EQ(host.link(0).endpoint.port, 7000u);

        /* the slot map is asked once the seed is up */
        host.connected(0);
        bool asked = false;
        for (unsigned round = 0; round < 5 && !asked; round++) {
            std::vector<Command> cs = host.take(0);
            std::string answers;
            for (const Command &c : cs) {
                if (c == Command {"CLUSTER", "SLOTS"}) {
                    asked = true;
                    answers += two_masters();
                } else {
                    ASSERT_EQ(c[0], "SCRIPT") << show(c);
                    answers += resp::bulk("x");
                }
            }
            host.reply(0, answers);
        }
        ASSERT_TRUE(asked) << "no CLUSTER SLOTS after connect";

        ASSERT_EQ(link_of(7000), 0);
        ASSERT_GE(link_of(7001), 0) << "the second master is not opened";
        l7001 = unsigned(link_of(7001));
        EXPECT_EQ(host.link(l7001).endpoint.host, "127.0.0.1");
        EXPECT_EQ(host.link(l7001).endpoint.address, "127.0.0.1:7001");
        EXPECT_EQ(host.link(l7001).endpoint.name, "127.0.0.1");
        host.bring_up(l7001, two_masters());
    }

    /* every command sent on every link */
    std::vector<Command> take_all()
    {
        std::vector<Command> all;
        for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
            std::vector<Command> cs = host.take(i);
            all.insert(all.end(), cs.begin(), cs.end());
        }
        return all;
    }
};


TEST_F(RedisCluster, MovedToANewNodeOpensItsLink)
{
    std::string k = key_in(0, 8191);
    Request r({k});

    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    Command sent = host.take_one(l7000);
    host.reply(l7000, resp::error("MOVED " + std::to_string(slot(k))
                                  + " 127.0.0.1:7002"));

    int l = link_of(7002);
    ASSERT_GE(l, 0) << "no link opened to the node MOVED named";
    EXPECT_EQ(host.link(l).endpoint.address, "127.0.0.1:7002");
    EXPECT_EQ(r.done_calls(), 0u);

    /* once connected, the scripts and then the decision */
    host.connected(l);
    std::vector<Command> cs = host.take(l);
    ASSERT_FALSE(cs.empty());
    EXPECT_EQ(cs.front()[0], "SCRIPT");
    ASSERT_EQ(only(cs, "EVALSHA"), std::vector<Command> {sent}) << show(cs);

    std::string answers;
    for (const Command &c : cs) {
        answers += c[0] == "SCRIPT" ? resp::bulk("x")
                                    : resp::decision({allowed(7)});
    }
    host.reply(l, answers);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).decision.remaining, 7u);
}


TEST_F(RedisCluster, KeysGoToTheMasterOfTheirSlot)
{
    Request low({key_in(0, 8191)}), high({key_in(8192, 16383)});

    ASSERT_EQ(low.decide(host.client()), RL_REDIS_OK);
    ASSERT_EQ(high.decide(host.client()), RL_REDIS_OK);
    host.end_pass();

    EXPECT_EQ(host.take_one(l7000), evalsha(one_sha(), low));
    EXPECT_EQ(host.take_one(l7001), evalsha(one_sha(), high));
    host.reply(l7001, resp::decision({allowed(5)}));
    host.reply(l7000, resp::decision({allowed(6)}));

    EXPECT_EQ(low.done_calls(), 1u);
    EXPECT_EQ(low.key(0).decision.remaining, 6u);
    EXPECT_EQ(high.done_calls(), 1u);
    EXPECT_EQ(high.key(0).decision.remaining, 5u);
}


TEST_F(RedisCluster, KeysOfTwoSlotsAreTwoScripts)
{
    std::string k1 = key_in(0, 8191);
    std::string k2 = key_in(0, 8191, {slot(k1)});
    Request r({k1, k2});

    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();

    std::vector<Command> cs = host.take(l7000);
    ASSERT_EQ(cs.size(), 2u) << show(cs);
    EXPECT_EQ(cs[0], evalsha(one_sha(), r, {0}));
    EXPECT_EQ(cs[1], evalsha(one_sha(), r, {1}));

    host.reply(l7000, resp::decision({allowed(1)}));
    EXPECT_EQ(r.done_calls(), 0u);
    host.reply(l7000, resp::decision({allowed(2)}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).decision.remaining, 1u);
    EXPECT_EQ(r.key(1).decision.remaining, 2u);
}


TEST_F(RedisCluster, KeysOfOneSlotShareAScript)
{
    Request r({"rl:api:{user1}", "rl:login:{user1}"});

    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    unsigned l = slot("user1") < 8192 ? l7000 : l7001;
    EXPECT_EQ(host.take_one(l), evalsha(multi_sha(), r));
}


TEST_F(RedisCluster, MovedGoesToTheNewMasterAndRefreshesTheMap)
{
    std::string k = key_in(0, 8191);
    Request r({k});

    host.advance_ms(200);
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    Command sent = host.take_one(l7000);

    host.reply(l7000, resp::error("MOVED " + std::to_string(slot(k))
                                  + " 127.0.0.1:7001"));
    EXPECT_EQ(r.done_calls(), 0u);

    std::vector<Command> on7001 = host.take(l7001);
    EXPECT_EQ(only(on7001, "EVALSHA"), std::vector<Command> {sent});
    std::vector<Command> on7000 = host.take(l7000);
    std::vector<Command> all = on7001;
    all.insert(all.end(), on7000.begin(), on7000.end());
    EXPECT_EQ(only(all, "CLUSTER").size(), 1u) << show(all);
    EXPECT_TRUE(only(all, "ASKING").empty());

    host.reply(l7001, resp::decision({allowed(3)}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(0).decision.remaining, 3u);
}


TEST_F(RedisCluster, AskSendsAskingThenTheScriptToTheTarget)
{
    std::string k = key_in(0, 8191);
    Request r({k});

    host.advance_ms(200);
    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    Command sent = host.take_one(l7000);

    host.reply(l7000, resp::error("ASK " + std::to_string(slot(k))
                                  + " 127.0.0.1:7001"));

    std::vector<Command> cs = host.take(l7001);
    ASSERT_EQ(cs.size(), 2u) << show(cs);
    EXPECT_EQ(cs[0], Command {"ASKING"});
    EXPECT_EQ(cs[1], sent);
    /* the map stays as it is */
    EXPECT_TRUE(host.take(l7000).empty());

    host.reply(l7001, resp::ok() + resp::decision({allowed(4)}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).decision.remaining, 4u);
}


TEST_F(RedisCluster, ThreeRedirectsAtMost)
{
    std::string k = key_in(0, 8191);
    std::string moved_to_7001 = resp::error("MOVED " + std::to_string(slot(k))
                                            + " 127.0.0.1:7001");
    std::string moved_to_7000 = resp::error("MOVED " + std::to_string(slot(k))
                                            + " 127.0.0.1:7000");
    Request r({k});

    ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    ASSERT_EQ(only(host.take(l7000), "EVALSHA").size(), 1u);

    unsigned at = l7000;
    for (unsigned redirect = 1; redirect <= 3; redirect++) {
        host.reply(at, at == l7000 ? moved_to_7001 : moved_to_7000);
        at = (at == l7000) ? l7001 : l7000;
        std::vector<Command> cs = take_all();
        ASSERT_EQ(only(cs, "EVALSHA").size(), 1u)
            << "redirect " << redirect << ": " << show(cs);
        EXPECT_EQ(r.done_calls(), 0u);
    }

    host.reply(at, at == l7000 ? moved_to_7001 : moved_to_7000);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_TRUE(only(take_all(), "EVALSHA").empty());
}


TEST_F(RedisCluster, RejectionOnOneMasterRefundsTheOther)
{
    std::string low = key_in(0, 8191), high = key_in(8192, 16383);
    Request r({low, high});

    in_flight(r, {l7000, l7001});

    host.reply(l7000, resp::decision({allowed(5)}));
    EXPECT_EQ(r.done_calls(), 0u);
    host.reply(l7001, resp::decision({rejected()}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).decision.allowed, 1);
    EXPECT_EQ(r.key(1).decision.allowed, 0);

    const Key &k = r.text(0);
    EXPECT_EQ(host.take_one(l7000),
              (Command {"EVALSHA", refund_sha(), "1", low, k.interval,
                        k.burst, k.cost, k.token_code}));
    EXPECT_TRUE(host.take(l7001).empty());
    host.reply(l7000, resp::integer(1));
    EXPECT_EQ(r.done_calls(), 1u);
}


TEST_F(RedisCluster, NoRefundWhenAllAllow)
{
    Request r({key_in(0, 8191), key_in(8192, 16383)});

    in_flight(r, {l7000, l7001});
    host.reply(l7000, resp::decision({allowed()}));
    host.reply(l7001, resp::decision({allowed()}));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_TRUE(take_all().empty());
}


TEST_F(RedisCluster, NoRefundWhenTheOtherKeyFailed)
{
    Request r({key_in(0, 8191), key_in(8192, 16383)});

    in_flight(r, {l7000, l7001});
    host.reply(l7000, resp::decision({allowed()}));
    host.reply(l7001, resp::error("ERR boom"));
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(r.key(1).status, RL_REDIS_KEY_FAILED);
    EXPECT_TRUE(take_all().empty());
}


TEST_F(RedisCluster, EachMasterHasItsOwnCircuit)
{
    host.peer_closed(l7001);
    ASSERT_EQ(rl_redis_shared_circuits(memory.shared()), 2u);
    EXPECT_EQ(host.count_logs(opened_line("127.0.0.1:7001",
                                          "Server closed the connection",
                                          1)), 1u);

    Request high({key_in(8192, 16383)}), low({key_in(0, 8191)});
    EXPECT_EQ(high.decide(host.client()), RL_REDIS_ERROR);
    EXPECT_EQ(low.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_EQ(only(host.take(l7000), "EVALSHA").size(), 1u);
}


TEST_F(RedisCluster, LostMasterAsksForTheMap)
{
    host.advance_ms(200);
    host.peer_closed(l7001);
    std::vector<Command> cs = host.take(l7000);
    EXPECT_EQ(only(cs, "CLUSTER").size(), 1u) << show(cs);
}


TEST_F(RedisCluster, MapWithoutANodeRetiresItsLink)
{
    host.advance_ms(200);
    std::string k = key_in(8192, 16383);
    Request r({k});
    in_flight(r, {l7001});

    /* 7000 took every slot: MOVED, and the new map has no 7001 */
    host.reply(l7001, resp::error("MOVED " + std::to_string(slot(k))
                                  + " 127.0.0.1:7000"));
    std::vector<Command> cs = host.take(l7000);
    ASSERT_EQ(only(cs, "CLUSTER").size(), 1u) << show(cs);
    ASSERT_EQ(only(cs, "EVALSHA").size(), 1u) << show(cs);
    std::string answers;
    for (const Command &c : cs) {
        answers += c[0] == "CLUSTER"
                   ? resp::cluster_slots({{0, 16383, "127.0.0.1", 7000}})
                   : resp::decision({allowed()});
    }
    host.reply(l7000, answers);
    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);

    EXPECT_FALSE(host.link(l7001).open);
    EXPECT_EQ(host.link(l7001).closes, 1u);
    unsigned opens = host.link(l7001).opens;
    host.advance_ms(3000);
    EXPECT_EQ(host.link(l7001).opens, opens) << "a retired link reconnects";

    Request r2({k});
    ASSERT_EQ(r2.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_EQ(host.take_one(l7000), evalsha(one_sha(), r2));
}


TEST_F(RedisCluster, SlotsErrorLoggedOnce)
{
    for (unsigned i = 0; i < 2; i++) {
        host.advance_ms(10000);
        std::vector<Command> on7000 = host.take(l7000);
        std::vector<Command> on7001 = host.take(l7001);
        ASSERT_EQ(only(on7000, "CLUSTER").size()
                  + only(on7001, "CLUSTER").size(), 1u) << i;
        host.reply(only(on7000, "CLUSTER").empty() ? l7001 : l7000,
                   resp::error("ERR cluster support disabled"));
    }

    EXPECT_EQ(host.count_logs(": CLUSTER SLOTS failed: ERR cluster support "
                              "disabled", RL_REDIS_LOG_ERR), 1u);
}


TEST_F(RedisCluster, CancelAfterOneMasterAnswered)
{
    Request r({key_in(0, 8191), key_in(8192, 16383)});

    in_flight(r, {l7000, l7001});
    host.reply(l7000, resp::decision({allowed()}));
    r.cancel(host.client());
    host.reply(l7001, resp::decision({rejected()}));

    EXPECT_EQ(r.done_calls(), 0u);
    EXPECT_TRUE(take_all().empty());
}


TEST_F(RedisCluster, HeartbeatGoesToTheMasterOfItsKey)
{
    FakeHost beating(clock, memory);
    Conf c({7000}, 1, 1500);
    /* a key that the map puts on 7001 */
    std::string k = key_in(8192, 16383);
    c.heartbeat(k, "web1:4242");
    beating.create(c.config);
    beating.bring_up(0, two_masters());

    int l = -1;
    for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
        if (beating.link(i).open && beating.link(i).endpoint.port == 7001) {
            l = int(i);
        }
    }
    ASSERT_GE(l, 0);
    beating.bring_up(unsigned(l), two_masters());

    beating.advance_ms(100);
    EXPECT_TRUE(only(beating.take(0), "EVALSHA").empty());
    std::vector<Command> cs = beating.take(unsigned(l));
    ASSERT_EQ(cs.size(), 1u) << show(cs);
    EXPECT_EQ(cs[0], (Command {"EVALSHA", nodes_sha(), "1", k, "web1:4242",
                               "5000"}));
}


TEST_F(RedisCluster, MapRefreshedEveryTenSeconds)
{
    uint64_t due = created_us + 10000000;

    host.advance_us(due - host.now_us() - 1000);
    EXPECT_TRUE(only(take_all(), "CLUSTER").empty());
    host.advance_ms(1);
    EXPECT_EQ(only(take_all(), "CLUSTER").size(), 1u);
}


}  // namespace
