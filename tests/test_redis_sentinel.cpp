/*
 * The core's Redis client with Redis Sentinel (rl_redis.h, the sentinel_*
 * fields) against the fake host and its scripted peers (rl_redis_fake.h),
 * on a clock that only the test moves.  Link 0 is the master's, links 1..n
 * the sentinels', in the order of the endpoints.  Each sentinel is asked
 * SENTINEL get-master-addr-by-name and subscribed to +switch-master; the
 * master it names is checked with ROLE before any decision goes to it.
 */

#include "rl_redis_fake.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>


using namespace rl_fake;

namespace {

const char *const policy = "api=open, login=closed";
const char *const readonly = "READONLY You can't write against a read only "
                             "replica.";


/* the texts a Sentinel config points to, kept alive with it */
struct SentinelConf {
    std::vector<std::string>          hosts, addresses;
    std::vector<rl_redis_endpoint_t>  endpoints;
    std::string                       master, password, username,
                                      sentinel_password, sentinel_username,
                                      heartbeat_key, heartbeat_id;
    rl_redis_config_t                 config {};

    explicit SentinelConf(std::vector<unsigned> ports = {26379, 26380, 26381},
                          uint64_t timeout_ms = 200)
        : master("mymaster")
    {
        sentinels(ports);
        config.timeout_ms = timeout_ms;
        config.failure_policy = policy;
        config.sentinel_master = master.c_str();
        config.sentinel_master_len = master.size();
    }

    SentinelConf(const SentinelConf &) = delete;
    SentinelConf &operator=(const SentinelConf &) = delete;

    void sentinels(const std::vector<unsigned> &ports)
    {
        hosts.clear();
        addresses.clear();
        endpoints.clear();
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
    }

    /* the master's */
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

    /* the sentinels' */
    void sentinel_auth(const std::string &p)
    {
        sentinel_password = p;
        config.sentinel_password = sentinel_password.c_str();
        config.sentinel_password_len = sentinel_password.size();
    }

    void sentinel_user(const std::string &u)
    {
        sentinel_username = u;
        config.sentinel_username = sentinel_username.c_str();
        config.sentinel_username_len = sentinel_username.size();
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


Command
question(const std::string &name = "mymaster")
{
    return {"SENTINEL", "get-master-addr-by-name", name};
}


Command
subscribe()
{
    return {"SUBSCRIBE", "+switch-master"};
}


/* UNSUBSCRIBE, of every channel or of +switch-master */
bool
is_unsubscribe(const Command &c)
{
    return c[0] == "UNSUBSCRIBE"
           && (c.size() == 1 || (c.size() == 2 && c[1] == "+switch-master"));
}


/* the answer to get-master-addr-by-name */
std::string
master_at(const std::string &ip, unsigned port)
{
    return resp::array({resp::bulk(ip), resp::bulk(std::to_string(port))});
}


std::string
subscribed()
{
    return resp::subscription("subscribe", "+switch-master", 1);
}


std::string
unsubscribed()
{
    return resp::subscription("unsubscribe", "+switch-master", 0);
}


/* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
std::string
switch_master(const std::string &payload)
{
    return resp::message("+switch-master", payload);
}


/* ROLE of a master: its replication offset and its replicas */
std::string
role_master()
{
    return resp::array({resp::bulk("master"), resp::integer(3129659),
                        resp::array({resp::array({resp::bulk("127.0.0.1"),
                                                  resp::bulk("6381"),
                                                  resp::bulk("3129242")})})});
}


/* ROLE of a replica: its master, the link's state, the offset */
std::string
role_slave(const std::string &ip, unsigned port)
{
    return resp::array({resp::bulk("slave"), resp::bulk(ip),
                        resp::integer(port), resp::bulk("connected"),
                        resp::integer(3167038)});
}


/* a line of the master's link */
std::string
line(const std::string &text)
{
    return "rate_limit_redis \"sentinel=mymaster\": " + text;
}


std::string
sentinel_line(unsigned port, const std::string &text)
{
    return "rate_limit_redis sentinel \"127.0.0.1:" + std::to_string(port)
           + "\": " + text;
}


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


/* EVALSHA sha n keys... values... of a request's keys */
Command
evalsha(const std::string &sha, Request &r)
{
    Command c {"EVALSHA", sha, std::to_string(r.size())};

    for (size_t i = 0; i < r.size(); i++) {
        c.push_back(r.text(i).key_text);
    }

    for (size_t i = 0; i < r.size(); i++) {
        const Key &k = r.text(i);
        c.insert(c.end(), {k.interval, k.burst, k.cost, k.token_code});
    }

    return c;
}


std::vector<Command>
only(const std::vector<Command> &cs, const std::string &name)
{
    std::vector<Command> out;

    std::copy_if(cs.begin(), cs.end(), std::back_inserter(out),
                 [&](const Command &c) { return c[0] == name; });
    return out;
}


resp::KeyAnswer
allowed(long long remaining = 9)
{
    return {true, remaining, 0, 100000};
}


bool
starts_with(const std::string &s, const std::string &prefix)
{
    return s.compare(0, prefix.size(), prefix) == 0;
}


std::string
sha_of(const std::string &script)
{
    char sha[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];

    ngx_http_rate_limit_sha1_hex(
        reinterpret_cast<const unsigned char *>(script.data()),
        script.size(), sha);
    return sha;
}


class RedisSentinel : public ::testing::Test {
protected:
    FakeClock     clock;
    SharedMemory  memory;
    FakeHost      host {clock, memory};
    SentinelConf  s;

    /* no secret, of the master or of the sentinels, in any line */
    void TearDown() override
    {
        for (const LogLine &l : host.logs()) {
            for (const std::string *secret : {&s.password,
                                              &s.sentinel_password})
            {
                if (!secret->empty()) {
                    EXPECT_EQ(l.msg.find(*secret), std::string::npos)
                        << "a secret in the log: " << l.msg;
                }
            }
        }
    }

    /* what a sentinel link writes once connected, all at once */
    std::vector<Command> hello() const
    {
        std::vector<Command> cs;

        if (!s.sentinel_password.empty()) {
            Command auth {"AUTH"};
            if (!s.sentinel_username.empty()) {
                auth.push_back(s.sentinel_username);
            }
            auth.push_back(s.sentinel_password);
            cs.push_back(auth);
        }

        cs.push_back(question(s.master));
        cs.push_back(subscribe());
        return cs;
    }

    /* what link 0 writes before ROLE is answered */
    std::vector<Command> master_hello() const
    {
        std::vector<Command> cs;

        if (!s.password.empty() || !s.username.empty()) {
            Command auth {"AUTH"};
            if (!s.username.empty()) {
                auth.push_back(s.username);
            }
            auth.push_back(s.password);
            cs.push_back(auth);
        }

        if (s.config.db) {
            cs.push_back({"SELECT", std::to_string(s.config.db)});
        }

        cs.push_back({"ROLE"});
        return cs;
    }

    /* sentinel link i connected, and its hello written */
    void sentinel_up(unsigned i)
    {
        host.connected(i);
        std::vector<Command> cs = host.take(i);
        ASSERT_EQ(cs, hello()) << "sentinel link " << i << ": " << show(cs);
    }

    /* sentinel i's replies to its hello: [AUTH,] the question, SUBSCRIBE */
    void answer(unsigned i, const std::string &reply)
    {
        host.reply(i, (s.sentinel_password.empty() ? "" : resp::ok())
                      + reply + subscribed());
    }

    void answer(unsigned i, const std::string &ip, unsigned port)
    {
        answer(i, master_at(ip, port));
    }

    /* its replies when asked again: UNSUBSCRIBE, the question, SUBSCRIBE */
    void answer_again(unsigned i, const std::string &ip, unsigned port)
    {
        host.reply(i, unsubscribed() + master_at(ip, port) + subscribed());
    }

    /* each of links asked again, in this order, and nothing else */
    void asked_again(std::initializer_list<unsigned> links)
    {
        for (unsigned i : links) {
            std::vector<Command> cs = host.take(i);
            ASSERT_EQ(cs.size(), 3u) << "sentinel link " << i << ": "
                                     << show(cs);
            EXPECT_TRUE(is_unsubscribe(cs[0])) << show(cs);
            EXPECT_EQ(cs[1], question(s.master)) << show(cs);
            EXPECT_EQ(cs[2], subscribe()) << show(cs);
        }
    }

    /*
     * Link 0 connected: every command it writes before ROLE is answered,
     * AUTH and SELECT answered +OK as they come.
     */
    std::vector<Command> handshake()
    {
        std::vector<Command> all;

        host.connected(0);

        for (unsigned round = 0; round < 5; round++) {
            std::vector<Command> cs = host.take(0);

            if (cs.empty()) {
                break;
            }

            all.insert(all.end(), cs.begin(), cs.end());

            std::string answers;

            for (const Command &c : cs) {
                if (c[0] == "AUTH" || c[0] == "SELECT") {
                    answers += resp::ok();
                }
            }

            if (!answers.empty()) {
                host.reply(0, answers);
            }

            if (std::find(cs.begin(), cs.end(), Command {"ROLE"})
                != cs.end())
            {
                break;
            }
        }

        /* and whatever follows while ROLE is not answered */
        std::vector<Command> more = host.take(0);
        all.insert(all.end(), more.begin(), more.end());
        return all;
    }

    /* ROLE says master: the scripts load, and link 0 takes decisions */
    void role_is_master(size_t scripts = 4)
    {
        host.reply(0, role_master());

        std::vector<Command> cs = host.take(0);
        ASSERT_EQ(cs.size(), scripts) << show(cs);

        std::string answers;

        for (const Command &c : cs) {
            ASSERT_EQ(c.size(), 3u) << show(c);
            ASSERT_EQ(c[0], "SCRIPT") << show(c);
            ASSERT_EQ(c[1], "LOAD") << show(c);
            answers += resp::bulk(sha_of(c[2]));
        }

        host.reply(0, answers);
    }

    /* the three sentinels up, each saying 127.0.0.1:6380 */
    void sentinels_answer()
    {
        host.create(s.config);

        for (unsigned i = 1; i <= 3; i++) {
            ASSERT_NO_FATAL_FAILURE(sentinel_up(i));
        }

        answer(1, "127.0.0.1", 6380);
        ASSERT_EQ(host.link(0).opens, 1u);
        answer(2, "127.0.0.1", 6380);
        answer(3, "127.0.0.1", 6380);
        ASSERT_EQ(host.link(0).opens, 1u);
    }

    /* and the master at 127.0.0.1:6380 up, ready, idle */
    void start(size_t scripts = 4)
    {
        ASSERT_NO_FATAL_FAILURE(sentinels_answer());
        std::vector<Command> cs = handshake();
        ASSERT_EQ(cs, master_hello()) << show(cs);
        ASSERT_NO_FATAL_FAILURE(role_is_master(scripts));

        for (unsigned i = 0; i <= 3; i++) {
            ASSERT_TRUE(host.take(i).empty()) << i;
        }
    }

    /* the sentinels answered, and 127.0.0.1:6380 says it is a replica:
     * every sentinel asked again */
    void to_replica()
    {
        ASSERT_NO_FATAL_FAILURE(sentinels_answer());
        ASSERT_EQ(handshake(), master_hello());
        host.reply(0, role_slave("127.0.0.1", 6381));
        ASSERT_FALSE(host.link(0).open);
        ASSERT_NO_FATAL_FAILURE(asked_again({1, 2, 3}));
    }

    /* a request sent on link 0, not answered */
    void in_flight(Request &r)
    {
        ASSERT_EQ(r.decide(host.client()), RL_REDIS_OK);
        host.end_pass();
        ASSERT_EQ(host.take_one(0), evalsha(one_sha(), r));
    }

    /* a request of one key, sent on link 0 and allowed */
    void decide_ok(Request &r)
    {
        ASSERT_NO_FATAL_FAILURE(in_flight(r));
        host.reply(0, resp::decision({allowed()}));
        ASSERT_EQ(r.done_calls(), 1u);
        EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);
    }

    /* at once: on_failure decides, done never called */
    void fails_at_once(const std::string &key)
    {
        Request r({key});
        EXPECT_EQ(r.decide(host.client()), RL_REDIS_ERROR);
        EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
        host.end_pass();
        EXPECT_EQ(r.done_calls(), 0u);
    }

    /* the link reopened within ms, the clock moved 1 ms at a time */
    bool reopens_within(unsigned link, uint64_t ms)
    {
        unsigned opens = host.link(link).opens;

        for (uint64_t t = 0; t < ms && host.link(link).opens == opens; t++) {
            host.advance_ms(1);
        }
        return host.link(link).opens > opens;
    }

    rl_redis_circuit_info_t circuit(size_t i = 0)
    {
        rl_redis_circuit_info_t info {};
        EXPECT_LT(i, rl_redis_shared_circuits(memory.shared()));
        rl_redis_shared_circuit(memory.shared(), i, &info);
        return info;
    }
};


/* ---- the sentinels ---- */

TEST_F(RedisSentinel, OpensEverySentinelAndNotTheMaster)
{
    host.create(s.config);

    EXPECT_EQ(host.link(0).opens, 0u);

    for (unsigned i = 1; i <= 3; i++) {
        std::string port = std::to_string(26378 + i);
        ASSERT_EQ(host.link(i).opens, 1u) << i;
        EXPECT_EQ(host.link(i).endpoint.host, "127.0.0.1");
        EXPECT_EQ(host.link(i).endpoint.port, 26378u + i);
        EXPECT_EQ(host.link(i).endpoint.address, "127.0.0.1:" + port);
        EXPECT_EQ(host.link(i).endpoint.name, "127.0.0.1");
        EXPECT_EQ(host.link(i).endpoint.sockaddr, "inet 127.0.0.1 " + port);
    }

    EXPECT_EQ(host.link(4).opens, 0u);

    /* the sentinels have no circuit: the one there may be is the master's */
    for (size_t i = 0; i < rl_redis_shared_circuits(memory.shared()); i++) {
        EXPECT_EQ(std::string(circuit(i).address), "sentinel=mymaster");
    }

    /* no master yet: on_failure decides at once */
    fails_at_once("rl:api:a");
}


TEST_F(RedisSentinel, AsksAndSubscribesPipelinedOnceConnected)
{
    host.create(s.config);

    host.connected(2);
    std::vector<Command> cs = host.take(2);
    EXPECT_EQ(cs, (std::vector<Command> {question(), subscribe()}))
        << show(cs);

    /* each on its own connection, and the question is still unanswered */
    host.connected(1);
    cs = host.take(1);
    EXPECT_EQ(cs, (std::vector<Command> {question(), subscribe()}))
        << show(cs);
    EXPECT_EQ(host.link(0).opens, 0u);
    fails_at_once("rl:api:a");
}


TEST_F(RedisSentinel, AsksForTheMasterOfItsOwnName)
{
    s.master = "cache-1.eu:main";
    s.config.sentinel_master = s.master.c_str();
    s.config.sentinel_master_len = s.master.size();
    host.create(s.config);

    host.connected(1);
    std::vector<Command> cs = host.take(1);
    EXPECT_EQ(cs, (std::vector<Command> {question("cache-1.eu:main"),
                                         subscribe()})) << show(cs);

    host.reply(1, master_at("127.0.0.1", 6380) + subscribed());
    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_TRUE(starts_with(host.link(0).endpoint.address,
                            "sentinel=cache-1.eu:main"))
        << host.link(0).endpoint.address;
}


TEST_F(RedisSentinel, AuthenticatesToTheSentinelsWithTheirOwnPassword)
{
    s.sentinel_auth("s3nt1nel-pw");
    s.auth("m4ster-pw");
    host.create(s.config);

    host.connected(1);
    std::vector<Command> cs = host.take(1);
    EXPECT_EQ(cs, (std::vector<Command> {{"AUTH", "s3nt1nel-pw"}, question(),
                                         subscribe()})) << show(cs);
    EXPECT_EQ(host.link(1).written.find("m4ster-pw"), std::string::npos);

    answer(1, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    cs = handshake();
    EXPECT_EQ(cs, (std::vector<Command> {{"AUTH", "m4ster-pw"}, {"ROLE"}}))
        << show(cs);
    EXPECT_EQ(host.link(0).written.find("s3nt1nel-pw"), std::string::npos);
}


TEST_F(RedisSentinel, AuthenticatesToTheSentinelsAsTheirAclUser)
{
    s.sentinel_auth("s3nt1nel-pw");
    s.sentinel_user("sentinel-user");
    s.auth("m4ster-pw");
    s.user("ratelimit");
    host.create(s.config);

    host.connected(1);
    std::vector<Command> cs = host.take(1);
    EXPECT_EQ(cs, (std::vector<Command> {
                      {"AUTH", "sentinel-user", "s3nt1nel-pw"}, question(),
                      subscribe()})) << show(cs);

    answer(1, "127.0.0.1", 6380);
    cs = handshake();
    EXPECT_EQ(cs, (std::vector<Command> {{"AUTH", "ratelimit", "m4ster-pw"},
                                         {"ROLE"}})) << show(cs);
}


TEST_F(RedisSentinel, TheMastersPasswordNeverGoesToTheSentinels)
{
    s.auth("m4ster-pw");
    s.user("ratelimit");
    host.create(s.config);

    host.connected(1);
    std::vector<Command> cs = host.take(1);
    EXPECT_EQ(cs, (std::vector<Command> {question(), subscribe()}))
        << show(cs);
    EXPECT_EQ(host.link(1).written.find("m4ster-pw"), std::string::npos);
}


TEST_F(RedisSentinel, RefusesMoreSentinelsThanLinks)
{
    std::vector<unsigned> ports;

    for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
        ports.push_back(26379 + i);
    }

    /* the master takes a link: 31 sentinels at most */
    s.sentinels(ports);
    rl_redis_config_t config = s.config;
    config.shared = memory.shared();
    char err[RL_REDIS_ERR_LEN] = "";
    EXPECT_EQ(rl_redis_create(&config, &host.adapter(), err), nullptr);
    EXPECT_NE(err[0], '\0');

    ports.pop_back();
    s.sentinels(ports);
    ASSERT_NE(host.create(s.config), nullptr);
    EXPECT_EQ(host.link(0).opens, 0u);
    EXPECT_EQ(host.link(RL_REDIS_ADDRESSES - 1).opens, 1u);
    EXPECT_EQ(host.link(RL_REDIS_ADDRESSES - 1).endpoint.port,
              26379u + RL_REDIS_ADDRESSES - 2);
}


/* ---- the master they name ---- */

TEST_F(RedisSentinel, TheFirstAnswerOpensTheMaster)
{
    host.create(s.config);
    sentinel_up(1);
    sentinel_up(2);

    /* the second sentinel answers first */
    answer(2, "127.0.0.1", 6380);

    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.host, "127.0.0.1");
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
    EXPECT_EQ(host.link(0).endpoint.name, "127.0.0.1");
    EXPECT_TRUE(starts_with(host.link(0).endpoint.address,
                            "sentinel=mymaster"))
        << host.link(0).endpoint.address;
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 127.0.0.1 6380");
    EXPECT_EQ(host.count_logs(line("the master is 127.0.0.1:6380, said "
                                   "sentinel 127.0.0.1:26380"),
                              RL_REDIS_LOG_NOTICE), 1u);

    /* the same answer again changes nothing */
    answer(1, "127.0.0.1", 6380);
    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(host.count_logs("said sentinel"), 1u);
    EXPECT_EQ(host.link(1).closes, 0u);
    EXPECT_EQ(host.link(2).closes, 0u);
}


/* the brief's contract: the address the host is given, for its logs, is
 * the one of the metrics, "sentinel=<name>" */
/* the host's own lines about a connection name the server it reaches */
TEST_F(RedisSentinel, TheMastersEndpointAddressNamesTheServer)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, "127.0.0.1", 6380);

    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.address,
              "sentinel=mymaster at 127.0.0.1:6380");
}


TEST_F(RedisSentinel, AnIpv6Master)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, "::1", 6380);

    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.host, "::1");
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
    EXPECT_EQ(host.link(0).endpoint.name, "::1");
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet6 ::1 6380");
}


TEST_F(RedisSentinel, ANilAnswerLogsNoMasterNamed)
{
    host.create(s.config);
    sentinel_up(1);
    sentinel_up(2);
    sentinel_up(3);

    /* RESP2's null array, as Redis writes it */
    answer(1, resp::null_array());
    EXPECT_EQ(host.count_logs(sentinel_line(26379,
                                            "no master named \"mymaster\""),
                              RL_REDIS_LOG_ERR), 1u);
    EXPECT_EQ(host.link(0).opens, 0u);
    EXPECT_EQ(host.link(1).closes, 0u);
    fails_at_once("rl:api:a");

    /* and a null bulk string */
    answer(2, resp::nil());
    EXPECT_EQ(host.count_logs(sentinel_line(26380,
                                            "no master named \"mymaster\"")),
              1u);
    EXPECT_EQ(host.link(0).opens, 0u);

    answer(3, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.count_logs(line("the master is 127.0.0.1:6380, said "
                                   "sentinel 127.0.0.1:26381")), 1u);
}


/* no sentinel knows the name yet: they are asked again, in a while */
TEST_F(RedisSentinel, NoMasterNamedIsAskedAgainLater)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, resp::null_array());

    auto asked_within = [&](unsigned ms) {
        for (unsigned t = 0; t < ms; t++) {
            host.advance_ms(1);
            std::vector<Command> cs = host.take(1);
            if (!cs.empty()) {
                EXPECT_EQ(cs.size(), 3u) << show(cs);
                EXPECT_TRUE(is_unsubscribe(cs[0])) << show(cs);
                EXPECT_EQ(cs[1], question()) << show(cs);
                return true;
            }
        }
        return false;
    };

    ASSERT_TRUE(asked_within(3000));
    host.reply(1, unsubscribed() + resp::null_array() + subscribed());
    /* logged once until it names a master */
    EXPECT_EQ(host.count_logs("no master named"), 1u);
    EXPECT_EQ(host.link(0).opens, 0u);

    ASSERT_TRUE(asked_within(3000));
    answer_again(1, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
}


/* a sentinel that announces host names: the worker cannot resolve them */
TEST_F(RedisSentinel, AMasterNamedByAHostNameIsNotOpened)
{
    host.create(s.config);
    sentinel_up(1);
    sentinel_up(2);

    answer(1, "redis-1.internal", 6380);
    EXPECT_EQ(host.link(0).opens, 0u);
    EXPECT_EQ(host.count_logs("\"redis-1.internal\"", RL_REDIS_LOG_ERR), 1u);
    fails_at_once("rl:api:a");

    answer(2, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
}


TEST_F(RedisSentinel, NoScriptNorDecisionBeforeRoleAnswers)
{
    s.auth("m4ster-pw");
    s.user("ratelimit");
    s.config.db = 3;
    host.create(s.config);
    sentinel_up(1);
    answer(1, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);

    /* a decision while the master connects: not sent before ROLE says */
    Request r({"rl:api:a"});
    int rc = r.decide(host.client());
    host.end_pass();

    std::vector<Command> cs = handshake();
    EXPECT_EQ(cs, (std::vector<Command> {{"AUTH", "ratelimit", "m4ster-pw"},
                                         {"SELECT", "3"}, {"ROLE"}}))
        << show(cs);
    EXPECT_EQ(r.done_calls(), 0u);

    host.reply(0, role_master());
    cs = host.take(0);
    EXPECT_EQ(only(cs, "SCRIPT").size(), 4u) << show(cs);

    if (rc == RL_REDIS_OK) {
        /* it waited: it goes behind the scripts */
        ASSERT_EQ(cs.size(), 5u) << show(cs);
        EXPECT_EQ(cs.back(), evalsha(one_sha(), r));

        std::string answers;
        for (size_t i = 0; i < 4; i++) {
            answers += resp::bulk(sha_of(cs[i][2]));
        }
        host.reply(0, answers + resp::decision({allowed()}));
        ASSERT_EQ(r.done_calls(), 1u);
        EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_DECIDED);

    } else {
        EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
        EXPECT_EQ(cs.size(), 4u) << show(cs);
    }
}


TEST_F(RedisSentinel, DecidesOnTheMasterOnceRoleSaysMaster)
{
    start();

    Request r({"rl:api:a"});
    decide_ok(r);

    /* no decision on a sentinel */
    for (unsigned i = 1; i <= 3; i++) {
        EXPECT_TRUE(host.take(i).empty()) << i;
    }

    /* one circuit, the master's, under the sentinels' name */
    ASSERT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(std::string(circuit().address), "sentinel=mymaster");
    EXPECT_EQ(circuit().up, 1);
    EXPECT_EQ(circuit().open, 0);
}


TEST_F(RedisSentinel, TheMastersAuthFailureOpensItsCircuit)
{
    s.auth("wr0ng-pw");
    host.create(s.config);
    sentinel_up(1);
    answer(1, "127.0.0.1", 6380);
    host.connected(0);

    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    ASSERT_EQ(cs[0], (Command {"AUTH", "wr0ng-pw"}));
    EXPECT_TRUE(only(cs, "SCRIPT").empty()) << show(cs);

    const std::string err = "WRONGPASS invalid username-password pair or "
                            "user is disabled.";
    host.reply(0, resp::error(err) + resp::error("NOAUTH Authentication "
                                                 "required."));

    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_EQ(host.count_logs(opened_line("sentinel=mymaster",
                                          "AUTH failed: " + err, 1),
                              RL_REDIS_LOG_ERR), 1u);
    ASSERT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(circuit().open, 1);
    fails_at_once("rl:api:a");
}


/* an ACL user of the master without +role */
TEST_F(RedisSentinel, ARoleErrorFailsTheMaster)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, "127.0.0.1", 6380);
    ASSERT_EQ(handshake(), master_hello());

    host.reply(0, resp::error("NOPERM User ratelimit has no permissions to "
                              "run the 'role' command"));

    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_EQ(host.count_logs("NOPERM", RL_REDIS_LOG_ERR), 1u);
    EXPECT_EQ(circuit().open, 1);
    fails_at_once("rl:api:a");
}


TEST_F(RedisSentinel, HeartbeatGoesToTheMasterOnly)
{
    s.heartbeat("rl:nodes", "web1:4242");
    start(5);

    host.advance_ms(100);
    EXPECT_EQ(host.take_one(0),
              (Command {"EVALSHA", nodes_sha(), "1", "rl:nodes", "web1:4242",
                        "5000"}));

    for (unsigned i = 1; i <= 3; i++) {
        EXPECT_TRUE(host.take(i).empty()) << i;
    }
}


TEST_F(RedisSentinel, DestroyClosesEveryLink)
{
    start();
    Request r({"rl:api:a"});
    in_flight(r);

    host.destroy();
    EXPECT_EQ(r.done_calls(), 0u);

    for (unsigned i = 0; i <= 3; i++) {
        EXPECT_EQ(host.link(i).closes, 1u) << i;
        EXPECT_FALSE(host.link(i).open) << i;
    }
}


/* ---- not the master ---- */

TEST_F(RedisSentinel, RoleSlaveClosesAndAsksTheConnectedSentinels)
{
    host.create(s.config);
    sentinel_up(1);
    sentinel_up(2);
    /* the third still connects */
    answer(1, "127.0.0.1", 6380);
    answer(2, "127.0.0.1", 6380);
    ASSERT_EQ(handshake(), master_hello());

    host.reply(0, role_slave("127.0.0.1", 6381));

    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.link(0).closes, 1u);
    /* the replica's own master is not taken: the sentinels say */
    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6380 is not the master (ROLE "
                                   "says \"slave\"), asking the sentinels"),
                              RL_REDIS_LOG_ERR), 1u);
    asked_again({1, 2});
    fails_at_once("rl:api:a");

    /* a sentinel that connects now asks, once */
    sentinel_up(3);

    answer_again(1, "127.0.0.1", 6381);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 127.0.0.1 6381");
    EXPECT_TRUE(starts_with(host.link(0).endpoint.address,
                            "sentinel=mymaster"))
        << host.link(0).endpoint.address;
    EXPECT_EQ(host.count_logs("127.0.0.1:6381, said sentinel "
                              "127.0.0.1:26379", RL_REDIS_LOG_NOTICE), 1u);

    /* the others agree: nothing more */
    answer_again(2, "127.0.0.1", 6381);
    answer(3, "127.0.0.1", 6381);
    EXPECT_EQ(host.link(0).opens, 2u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:b"});
    decide_ok(r);
}


TEST_F(RedisSentinel, AnAnswerThatStillNamesTheReplicaIsIgnored)
{
    to_replica();

    answer_again(1, "127.0.0.1", 6380);
    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.count_logs("said sentinel"), 1u);
    fails_at_once("rl:api:a");

    /* the next sentinel knows better */
    answer_again(2, "127.0.0.1", 6381);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(host.count_logs("127.0.0.1:6381, said sentinel "
                              "127.0.0.1:26380", RL_REDIS_LOG_NOTICE), 1u);
}


/*
 * The doubt follows the connection that failed: 6380 lost, a sentinel
 * that is behind names 6382, which turns out a replica; the sentinels'
 * answer 6380 is then no longer the doubted address, and is followed.
 */
TEST_F(RedisSentinel, TheDoubtFollowsTheConnectionThatFailed)
{
    start();

    host.peer_closed(0);
    asked_again({1, 2, 3});
    answer_again(1, "127.0.0.1", 6382);
    ASSERT_EQ(host.link(0).endpoint.port, 6382u);
    answer_again(2, "127.0.0.1", 6380);
    answer_again(3, "127.0.0.1", 6380);
    EXPECT_EQ(host.link(0).endpoint.port, 6382u) << "6380 is in doubt";

    ASSERT_EQ(handshake(), master_hello());
    host.reply(0, role_slave("127.0.0.1", 6380));
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6382 is not the master (ROLE "
                                   "says \"slave\"), asking the sentinels"),
                              RL_REDIS_LOG_ERR), 1u);

    /* within 100 ms of the last question: asked at its end */
    host.advance_ms(100);
    asked_again({1, 2, 3});
    answer_again(2, "127.0.0.1", 6380);
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);
}


/*
 * A sentinel that names another master while the one in use is not in
 * doubt (a switch this worker missed, or a sentinel behind): the master
 * in use says its ROLE again.  Still master: it stays.
 */
TEST_F(RedisSentinel, AnotherAnswerChecksTheRoleOfTheMasterInUse)
{
    start();

    host.peer_closed(1);
    ASSERT_TRUE(reopens_within(1, 2000));
    sentinel_up(1);
    answer(1, "127.0.0.1", 6381);

    EXPECT_EQ(host.link(0).opens, 1u);
    ASSERT_EQ(host.take(0), (std::vector<Command> {{"ROLE"}}));
    host.reply(0, role_master());
    EXPECT_TRUE(host.take(0).empty()) << "no script loaded again";
    EXPECT_EQ(host.link(0).opens, 1u);
    Request r({"rl:api:a"});
    decide_ok(r);
}


/* ... and a demoted one is left for the master the sentinels name */
TEST_F(RedisSentinel, AnotherAnswerLeavesADemotedMaster)
{
    start();

    host.peer_closed(1);
    ASSERT_TRUE(reopens_within(1, 2000));
    sentinel_up(1);
    answer(1, "127.0.0.1", 6381);
    ASSERT_EQ(host.take(0), (std::vector<Command> {{"ROLE"}}));
    host.reply(0, role_slave("127.0.0.1", 6381));

    EXPECT_FALSE(host.link(0).open);
    asked_again({1, 2, 3});
    answer_again(1, "127.0.0.1", 6381);
    ASSERT_EQ(host.link(0).endpoint.port, 6381u);
    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
}


/* Redis 6 wraps a script's error in its own */
TEST_F(RedisSentinel, ReadonlyWrappedByRedis6AsksTheSentinels)
{
    start();

    Request r({"rl:api:a"});
    in_flight(r);
    host.reply(0, resp::error("ERR Error running script (call to "
                              "f_0123): @user_script:1: @user_script: 1: "
                              "-READONLY You can't write against a read "
                              "only replica."));
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6380 is read only, asking the "
                                   "sentinels"), RL_REDIS_LOG_ERR), 1u);
    asked_again({1, 2, 3});
}


/*
 * Every sentinel still names the replica, and it is promoted back: the
 * client finds it again, by asking or by trying it, and checks its ROLE
 * before deciding there.
 */
TEST_F(RedisSentinel, ANamedReplicaThatBecomesTheMasterIsUsedAgain)
{
    to_replica();

    for (unsigned i = 1; i <= 3; i++) {
        answer_again(i, "127.0.0.1", 6380);
    }

    bool ready = false;

    for (unsigned t = 0; t < 3000 && !ready; t++) {
        host.advance_ms(1);

        for (unsigned i = 1; i <= 3; i++) {
            std::vector<Command> cs = host.take(i);
            if (!cs.empty()) {
                ASSERT_EQ(cs.size(), 3u) << show(cs);
                ASSERT_EQ(cs[1], question());
                answer_again(i, "127.0.0.1", 6380);
            }
        }

        if (host.link(0).open && !host.link(0).connected) {
            EXPECT_EQ(host.link(0).endpoint.port, 6380u);
            ASSERT_EQ(handshake(), master_hello());
            ASSERT_NO_FATAL_FAILURE(role_is_master());
            ready = true;
        }
    }

    ASSERT_TRUE(ready) << "not tried again within 3 s";
    Request r({"rl:api:a"});
    decide_ok(r);
}


TEST_F(RedisSentinel, ReadonlyFailsTheDecisionAndAsksTheSentinels)
{
    start();

    Request r({"rl:api:a"});
    in_flight(r);
    host.reply(0, resp::error(readonly));

    ASSERT_EQ(r.done_calls(), 1u);
    EXPECT_EQ(r.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6380 is read only, asking the "
                                   "sentinels"), RL_REDIS_LOG_ERR), 1u);
    asked_again({1, 2, 3});
    /* and the master in use says its ROLE: decisions wait for no answer */
    ASSERT_EQ(host.take(0), (std::vector<Command> {{"ROLE"}}));

    /* the link moves once ROLE, owed on it, is in */
    answer_again(3, "127.0.0.1", 6381);
    EXPECT_EQ(host.link(0).opens, 1u);
    host.reply(0, role_slave("127.0.0.1", 6381));
    ASSERT_TRUE(reopens_within(0, 2000));
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_TRUE(host.link(0).open);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(host.count_logs("127.0.0.1:6381, said sentinel "
                              "127.0.0.1:26381", RL_REDIS_LOG_NOTICE), 1u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request again({"rl:api:b"});
    decide_ok(again);
}


/* the replies to a pipeline of decisions: one question */
TEST_F(RedisSentinel, ReadonlyRepliesOfOneReadAskOnce)
{
    start();

    Request a({"rl:api:a"}), b({"rl:api:b"});
    in_flight(a);
    in_flight(b);
    host.reply(0, resp::error(readonly) + resp::error(readonly));

    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_FAILED);
    asked_again({1, 2, 3});
    EXPECT_EQ(host.count_logs("is read only"), 1u);
}


/* the decisions of one pass in one batch: one reply, one question */
TEST_F(RedisSentinel, ReadonlyToABatchFailsEachAndAsks)
{
    start();

    Request a({"rl:api:a"}), b({"rl:api:b"});
    ASSERT_EQ(a.decide(host.client()), RL_REDIS_OK);
    ASSERT_EQ(b.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    ASSERT_EQ(host.take_one(0)[1], batch_sha());

    host.reply(0, resp::error(readonly));
    ASSERT_EQ(a.done_calls(), 1u);
    ASSERT_EQ(b.done_calls(), 1u);
    EXPECT_EQ(a.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(b.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6380 is read only, asking the "
                                   "sentinels"), RL_REDIS_LOG_ERR), 1u);
    asked_again({1, 2, 3});
}


/* ---- the master lost ---- */

TEST_F(RedisSentinel, ALostMasterAsksTheSentinelsAgain)
{
    start();

    host.peer_closed(0);
    EXPECT_EQ(host.count_logs(opened_line("sentinel=mymaster",
                                          "Server closed the connection",
                                          1)), 1u);
    asked_again({1, 2, 3});

    /* the new master: at once, not after the reconnection's backoff */
    answer_again(2, "127.0.0.1", 6381);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);
    EXPECT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(circuit().open, 0);
}


/*
 * The master lost, and back at its address as a replica before the
 * sentinels have noticed: the line says so, even though the sentinels
 * were asked already when the connection was lost.
 */
TEST_F(RedisSentinel, ALostMasterBackAsAReplicaIsLogged)
{
    start();

    host.peer_closed(0);
    asked_again({1, 2, 3});

    for (unsigned i = 1; i <= 3; i++) {
        answer_again(i, "127.0.0.1", 6380);
    }

    ASSERT_TRUE(reopens_within(0, 2000));
    EXPECT_EQ(host.link(0).endpoint.port, 6380u);
    ASSERT_EQ(handshake(), master_hello());
    host.reply(0, role_slave("127.0.0.1", 6381));

    EXPECT_FALSE(host.link(0).open);
    EXPECT_EQ(host.count_logs(line("127.0.0.1:6380 is not the master (ROLE "
                                   "says \"slave\"), asking the sentinels"),
                              RL_REDIS_LOG_ERR), 1u);
}


/*
 * The circuit open since the master was lost, and the new master's ROLE
 * not answered yet: no script goes to it, not even the circuit's probe.
 */
TEST_F(RedisSentinel, NoProbeBeforeRoleAnswers)
{
    start();

    host.peer_closed(0);
    ASSERT_EQ(circuit().open, 1);
    asked_again({1, 2, 3});
    answer_again(1, "127.0.0.1", 6381);
    ASSERT_EQ(host.link(0).opens, 2u);
    ASSERT_EQ(handshake(), master_hello());

    for (unsigned t = 1; t <= 900; t++) {
        host.advance_ms(1);
        std::vector<Command> cs = host.take(0);
        ASSERT_TRUE(cs.empty()) << t << " ms into ROLE: " << show(cs);
    }

    ASSERT_NO_FATAL_FAILURE(role_is_master());
    EXPECT_EQ(circuit().open, 0);
    Request r({"rl:api:a"});
    decide_ok(r);
}


TEST_F(RedisSentinel, AMasterThatCannotBeReachedAsksEvery100MsAtMost)
{
    start();
    host.link(0).fail_open = "Connection refused";

    uint64_t t0 = host.now_us();
    std::vector<uint64_t> asked;

    /* the sentinels answer each question at once, with the same master */
    auto answer_questions = [&] {
        bool any = false;

        for (unsigned i = 1; i <= 3; i++) {
            std::vector<Command> cs = host.take(i);
            if (cs.empty()) {
                continue;
            }
            ASSERT_EQ(cs.size(), 3u) << show(cs);
            ASSERT_TRUE(is_unsubscribe(cs[0])) << show(cs);
            ASSERT_EQ(cs[1], question());
            any = true;
            answer_again(i, "127.0.0.1", 6380);
        }

        if (any) {
            asked.push_back(host.now_us() - t0);
        }
    };

    host.peer_closed(0);
    answer_questions();
    ASSERT_EQ(asked, std::vector<uint64_t> {0}) << "not asked at once";

    /* the reconnections fail at once, with their backoff */
    for (unsigned t = 0; t < 2000; t++) {
        host.advance_ms(1);
        answer_questions();
    }

    EXPECT_GT(host.link(0).opens, 3u);
    ASSERT_GE(asked.size(), 2u) << "asked once only in 2 s of failures";

    for (size_t i = 1; i < asked.size(); i++) {
        EXPECT_GE(asked[i] - asked[i - 1], 100000u)
            << "asked at " << asked[i - 1] / 1000 << " and "
            << asked[i] / 1000 << " ms";
    }
}


TEST_F(RedisSentinel, ASentinelThatFailsReconnectsWithBackoffLoggedOnce)
{
    host.create(s.config);

    host.peer_closed(1, "Connection refused");
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "Connection refused"),
                              RL_REDIS_LOG_ERR), 1u);
    /* no circuit: not the circuit's line */
    EXPECT_EQ(host.count_logs("is unreachable"), 0u);

    std::vector<uint64_t> gaps;

    for (unsigned n = 0; n < 5; n++) {
        uint64_t before = host.now_us();
        ASSERT_TRUE(reopens_within(1, 2000)) << n;
        gaps.push_back(host.now_us() - before);
        EXPECT_EQ(host.link(1).endpoint.address, "127.0.0.1:26379");
        host.peer_closed(1, "Connection refused");
    }

    EXPECT_GT(gaps[0], 0u);
    EXPECT_GT(gaps.back(), gaps[0]) << "no backoff";
    for (size_t i = 1; i < gaps.size(); i++) {
        EXPECT_GE(gaps[i], gaps[i - 1]);
    }
    EXPECT_EQ(host.count_logs("sentinel \"127.0.0.1:26379\""), 1u);

    /* it answers: its next failure is logged again */
    ASSERT_TRUE(reopens_within(1, 2000));
    sentinel_up(1);
    answer(1, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    host.peer_closed(1);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "Server closed the "
                                                   "connection"),
                              RL_REDIS_LOG_ERR), 1u);

    /* the master is the master still */
    EXPECT_EQ(host.link(0).closes, 0u);
}


TEST_F(RedisSentinel, AReconnectedSentinelAsksAndSubscribesAfresh)
{
    start();

    host.peer_closed(2);
    EXPECT_EQ(host.count_logs(sentinel_line(26380, "Server closed the "
                                                   "connection"),
                              RL_REDIS_LOG_ERR), 1u);
    ASSERT_TRUE(reopens_within(2, 2000));

    /* a new connection: no UNSUBSCRIBE */
    sentinel_up(2);
    answer(2, "127.0.0.1", 6380);
    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).closes, 0u);

    /* its messages are heard again */
    host.reply(2, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    EXPECT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
}


TEST_F(RedisSentinel, ASentinelsAuthFailureIsAConnectionFailure)
{
    s.sentinel_auth("s3nt1nel-pw");
    host.create(s.config);
    host.connected(1);
    ASSERT_EQ(host.take(1), hello());

    const std::string err = "WRONGPASS invalid username-password pair or "
                            "user is disabled.";
    host.reply(1, resp::error(err)
                  + resp::error("NOAUTH Authentication required.")
                  + resp::error("NOAUTH Authentication required."));

    EXPECT_FALSE(host.link(1).open);
    EXPECT_EQ(host.link(1).closes, 1u);
    ASSERT_EQ(host.count_logs(sentinel_line(26379, ""), RL_REDIS_LOG_ERR),
              1u);
    EXPECT_EQ(host.count_logs("AUTH"), 1u);
    EXPECT_EQ(host.count_logs("is unreachable"), 0u);
    EXPECT_EQ(host.link(0).opens, 0u);

    /* tried again later, and not logged again */
    ASSERT_TRUE(reopens_within(1, 2000));
    host.connected(1);
    ASSERT_EQ(host.take(1), hello());
    host.reply(1, resp::error(err));
    EXPECT_FALSE(host.link(1).open);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "")), 1u);
}


/* a nil is an answer: what fails after it is logged */
TEST_F(RedisSentinel, AFailureAfterANilAnswerIsLogged)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, resp::null_array());
    ASSERT_EQ(host.count_logs(sentinel_line(26379, "no master named")), 1u);

    host.peer_closed(1);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "Server closed the "
                                                   "connection"),
                              RL_REDIS_LOG_ERR), 1u);
}


TEST_F(RedisSentinel, ASentinelConnectTimesOutAfterOneSecond)
{
    host.create(s.config);

    host.advance_ms(999);
    EXPECT_TRUE(host.link(1).open);
    host.advance_ms(1);
    EXPECT_FALSE(host.link(1).open);
    EXPECT_EQ(host.link(1).closes, 1u);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "connect timed out"),
                              RL_REDIS_LOG_ERR), 1u);
    EXPECT_TRUE(reopens_within(1, 2000));
}


/* a sentinel that takes the connection but never answers the question */
TEST_F(RedisSentinel, ASilentSentinelIsDroppedAfterOneSecond)
{
    host.create(s.config);
    sentinel_up(1);

    host.advance_ms(999);
    EXPECT_TRUE(host.link(1).open);
    host.advance_ms(1);
    EXPECT_FALSE(host.link(1).open);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, "no answer for 1000 ms"),
                              RL_REDIS_LOG_ERR), 1u);
    EXPECT_TRUE(reopens_within(1, 2000));
}


/* the answer disarms it: a sentinel subscribed for long stays */
TEST_F(RedisSentinel, AnAnsweredSentinelStays)
{
    start();

    host.advance_ms(5000);
    for (unsigned i = 1; i <= 3; i++) {
        EXPECT_TRUE(host.link(i).open) << "sentinel link " << i;
        EXPECT_EQ(host.link(i).closes, 0u) << "sentinel link " << i;
    }
}


/* a reason to ask within 100 ms of the last question is kept for its end */
TEST_F(RedisSentinel, AnAskWithinTheGapIsDeferredToItsEnd)
{
    start();

    host.peer_closed(0);
    asked_again({1, 2, 3});

    for (unsigned i = 1; i <= 3; i++) {
        answer_again(i, "127.0.0.1", 6380);
    }

    /* the master is back with the first reconnection, 50 ms into the
     * gap, a replica now */
    ASSERT_TRUE(reopens_within(0, 60));
    ASSERT_EQ(handshake(), master_hello());
    host.reply(0, role_slave("127.0.0.1", 6381));

    for (unsigned i = 1; i <= 3; i++) {
        EXPECT_TRUE(host.take(i).empty()) << "asked within the gap";
    }

    host.advance_ms(60);
    asked_again({1, 2, 3});
}


/* a sentinel that wants a password the config does not give */
TEST_F(RedisSentinel, ASentinelAskingForAuthIsAConnectionFailure)
{
    host.create(s.config);
    host.connected(1);
    ASSERT_EQ(host.take(1), hello());

    host.reply(1, resp::error("NOAUTH Authentication required.")
                  + resp::error("NOAUTH Authentication required."));

    EXPECT_FALSE(host.link(1).open);
    EXPECT_EQ(host.link(1).closes, 1u);
    EXPECT_EQ(host.count_logs(sentinel_line(26379, ""), RL_REDIS_LOG_ERR),
              1u);
    EXPECT_EQ(host.count_logs("NOAUTH"), 1u);
    EXPECT_EQ(host.link(0).opens, 0u);
    EXPECT_TRUE(reopens_within(1, 2000));
}


/* ---- +switch-master ---- */

TEST_F(RedisSentinel, ASwitchMovesAnIdleMasterAtOnce)
{
    start();

    host.reply(2, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));

    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(host.link(0).endpoint.sockaddr, "inet 127.0.0.1 6381");
    EXPECT_EQ(host.link(0).endpoint.name, "127.0.0.1");
    EXPECT_TRUE(starts_with(host.link(0).endpoint.address,
                            "sentinel=mymaster"))
        << host.link(0).endpoint.address;
    EXPECT_EQ(host.count_logs(line("the master moved from 127.0.0.1:6380 to "
                                   "127.0.0.1:6381, said sentinel "
                                   "127.0.0.1:26380"),
                              RL_REDIS_LOG_NOTICE), 1u);

    /* the new one is checked too */
    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);

    /* the same circuit */
    EXPECT_EQ(rl_redis_shared_circuits(memory.shared()), 1u);
    EXPECT_EQ(std::string(circuit().address), "sentinel=mymaster");
}


/* each sentinel publishes the switch: the master moves once */
TEST_F(RedisSentinel, TheSameSwitchFromEachSentinelMovesOnce)
{
    start();

    for (unsigned i = 1; i <= 3; i++) {
        host.reply(i, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 "
                                    "6381"));
    }

    EXPECT_EQ(host.link(0).closes, 1u);
    EXPECT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.count_logs("moved"), 1u);

    /* also once the new master is up */
    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    EXPECT_EQ(host.link(0).opens, 2u);
    Request r({"rl:api:a"});
    decide_ok(r);
}


TEST_F(RedisSentinel, ASwitchOfAnotherMasterIsIgnored)
{
    start();

    host.reply(1, switch_master("othermaster 127.0.0.1 6380 127.0.0.1 6399")
                  + switch_master("mymaster2 127.0.0.1 6380 127.0.0.1 6399")
                  + switch_master("mymaste 127.0.0.1 6380 127.0.0.1 6399"));

    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(host.link(1).closes, 0u);
    EXPECT_EQ(host.count_logs("moved"), 0u);
    Request r({"rl:api:a"});
    decide_ok(r);
}


TEST_F(RedisSentinel, AMalformedSwitchIsIgnored)
{
    start();

    host.reply(1, switch_master("mymaster 127.0.0.1 6380")
                  + switch_master("mymaster 127.0.0.1 6380 not-an-ip 6381")
                  + switch_master("mymaster 127.0.0.1 6380 127.0.0.1 port")
                  + switch_master(""));

    EXPECT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(host.link(1).closes, 0u);
    Request r({"rl:api:a"});
    decide_ok(r);

    /* and the next good one is followed */
    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    EXPECT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
}


/* no request fails because of a switch */
TEST_F(RedisSentinel, ASwitchWaitsForTheRepliesOwed)
{
    start();

    Request before({"rl:api:a"});
    in_flight(before);

    host.reply(3, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    EXPECT_EQ(host.link(0).closes, 0u);

    /* a decision meanwhile waits for the new master */
    Request during({"rl:api:b"});
    ASSERT_EQ(during.decide(host.client()), RL_REDIS_OK);
    host.end_pass();
    EXPECT_TRUE(host.take(0).empty());

    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(before.done_calls(), 1u);
    EXPECT_EQ(before.key(0).status, RL_REDIS_KEY_DECIDED);

    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(during.done_calls(), 0u);

    /* not before the new master's ROLE */
    ASSERT_EQ(handshake(), master_hello());
    host.reply(0, role_master());
    std::vector<Command> cs = host.take(0);
    ASSERT_EQ(cs.size(), 5u) << show(cs);
    EXPECT_EQ(only(cs, "SCRIPT").size(), 4u) << show(cs);
    EXPECT_EQ(cs.back(), evalsha(one_sha(), during));

    std::string answers;
    for (size_t i = 0; i < 4; i++) {
        answers += resp::bulk(sha_of(cs[i][2]));
    }
    host.reply(0, answers + resp::decision({allowed()}));

    ASSERT_EQ(during.done_calls(), 1u);
    EXPECT_EQ(during.key(0).status, RL_REDIS_KEY_DECIDED);
}


/* the replies owed never come: the switch waits no longer than the newest
 * decision sent, and what came meanwhile still has its own time */
TEST_F(RedisSentinel, ASwitchWaitsNoLongerThanTheNewestDecision)
{
    start();

    Request before({"rl:api:a"});
    in_flight(before);
    host.advance_ms(50);
    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));

    Request during({"rl:api:b"});
    ASSERT_EQ(during.decide(host.client()), RL_REDIS_OK);
    host.end_pass();

    host.advance_ms(149);
    EXPECT_EQ(host.link(0).closes, 0u);
    EXPECT_EQ(before.done_calls(), 0u);
    host.advance_ms(1);
    ASSERT_EQ(before.done_calls(), 1u);
    EXPECT_EQ(before.key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(during.done_calls(), 0u);

    ASSERT_EQ(handshake(), master_hello());
    host.reply(0, role_master());
    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    EXPECT_EQ(cs.back(), evalsha(one_sha(), during)) << show(cs);
}


/* switched again while the replies owed drain: the newest address */
TEST_F(RedisSentinel, ASecondSwitchWhileDrainingGoesToTheNewest)
{
    start();

    Request before({"rl:api:a"});
    in_flight(before);
    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    host.reply(2, switch_master("mymaster 127.0.0.1 6381 127.0.0.1 6382"));
    EXPECT_EQ(host.link(0).closes, 0u);

    host.reply(0, resp::decision({allowed()}));
    ASSERT_EQ(before.done_calls(), 1u);
    EXPECT_EQ(before.key(0).status, RL_REDIS_KEY_DECIDED);
    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6382u);
}


/* no sentinel knew the name, then one hears of its failover */
TEST_F(RedisSentinel, ASwitchBeforeAnyAnswerMakesTheMasterKnown)
{
    host.create(s.config);
    sentinel_up(1);
    answer(1, resp::null_array());
    ASSERT_EQ(host.link(0).opens, 0u);

    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    ASSERT_EQ(host.link(0).opens, 1u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);
}


/* a master whose ROLE is not answered yet moves at once */
TEST_F(RedisSentinel, ASwitchDuringTheHandshakeMovesAtOnce)
{
    host.create(s.config);
    sentinel_up(1);
    sentinel_up(2);
    answer(1, "127.0.0.1", 6380);
    answer(2, "127.0.0.1", 6380);
    ASSERT_EQ(handshake(), master_hello());

    host.reply(2, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381"));
    EXPECT_EQ(host.link(0).closes, 1u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);
}


/* ---- messages among replies ---- */

TEST_F(RedisSentinel, MessagesAmongTheRepliesAreNotReplies)
{
    to_replica();

    const std::string other = switch_master("othermaster 10.0.0.1 6379 "
                                            "10.0.0.2 6379");
    size_t errors = host.count_logs("", RL_REDIS_LOG_ERR);

    host.reply(1, other + unsubscribed() + other
                  + master_at("127.0.0.1", 6381) + other + subscribed()
                  + other);

    EXPECT_EQ(host.link(1).closes, 0u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);
    EXPECT_EQ(host.count_logs("", RL_REDIS_LOG_ERR), errors)
        << host.logs().back().msg;

    /* still in step: what comes next is a message */
    host.reply(1, switch_master("mymaster 127.0.0.1 6381 127.0.0.1 6382"));
    EXPECT_EQ(host.link(0).opens, 3u);
    EXPECT_EQ(host.link(0).endpoint.port, 6382u);
    EXPECT_EQ(host.link(1).closes, 0u);
}


TEST_F(RedisSentinel, ASwitchAmongTheRepliesIsFollowed)
{
    to_replica();

    /* the message before the answer: both name 6381, one move */
    host.reply(2, unsubscribed()
                  + switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381")
                  + master_at("127.0.0.1", 6381) + subscribed());

    EXPECT_EQ(host.link(2).closes, 0u);
    ASSERT_EQ(host.link(0).opens, 2u);
    EXPECT_EQ(host.link(0).endpoint.port, 6381u);

    /* a sentinel still answering from before the switch, with its
     * message first */
    host.reply(1, switch_master("mymaster 127.0.0.1 6380 127.0.0.1 6381")
                  + unsubscribed() + master_at("127.0.0.1", 6381)
                  + subscribed());
    EXPECT_EQ(host.link(1).closes, 0u);
    EXPECT_EQ(host.link(0).opens, 2u);

    ASSERT_EQ(handshake(), master_hello());
    ASSERT_NO_FATAL_FAILURE(role_is_master());
    Request r({"rl:api:a"});
    decide_ok(r);
}


/* ---- secrets ---- */

TEST_F(RedisSentinel, NoSecretInAnyLineNorOnTheWrongLink)
{
    s.auth("m4ster-secret-pw");
    s.user("ratelimit");
    s.sentinel_auth("s3nt1nel-secret-pw");
    s.sentinel_user("sentinel-user");
    host.create(s.config);

    /* a sentinel refuses its AUTH */
    host.connected(1);
    ASSERT_EQ(host.take(1), hello());
    host.reply(1, resp::error("WRONGPASS invalid username-password pair")
                  + resp::error("NOAUTH Authentication required.")
                  + resp::error("NOAUTH Authentication required."));

    /* another names the master, which refuses its AUTH */
    sentinel_up(2);
    answer(2, "127.0.0.1", 6380);
    ASSERT_EQ(host.link(0).opens, 1u);
    host.connected(0);
    std::vector<Command> cs = host.take(0);
    ASSERT_FALSE(cs.empty());
    ASSERT_EQ(cs[0], (Command {"AUTH", "ratelimit", "m4ster-secret-pw"}));
    EXPECT_EQ(host.link(0).written.find("s3nt1nel-secret-pw"),
              std::string::npos);
    EXPECT_EQ(host.link(2).written.find("m4ster-secret-pw"),
              std::string::npos);
    host.reply(0, resp::error("WRONGPASS invalid username-password pair"));

    EXPECT_GE(host.logs().size(), 2u);
    /* TearDown looks for the secrets in every line */
}

}  // namespace
