/*
 * The core's Redis client (rl_redis.h) on real sockets, driven by a small
 * poll() host (rl_redis_poll.h), against real redis-servers and a real
 * three-master Redis Cluster: what the fake peer of the unit tests cannot
 * show, that the bytes the client writes are what Redis reads, and that
 * it lives through what real servers do (a freeze, a restart, a flushed
 * script cache, a password, a migrating or moved slot).
 *
 * Each test starts its own servers (the cluster is shared by its suite),
 * and every server goes with its object, a failed test's too.  Without
 * redis-server every test is skipped.
 */

#include "rate_limit_redis_server.h"
#include "rate_limit_test_support.h"
#include "rl_redis_poll.h"

#include <rl_redis.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>


namespace {

using rate_limit_test::ClusterNode;
using rate_limit_test::Context;
using rate_limit_test::PollHost;
using rate_limit_test::RedisOptions;
using rate_limit_test::RedisServer;
using rate_limit_test::Reply;
using rate_limit_test::SharedMemory;
using rate_limit_test::command;
using rate_limit_test::params_for;
using rate_limit_test::runnable_redis_server;


/* one limit of a request: "<prefix>:<zone>:<key>", as nginx.conf says it */
struct Limit {
    std::string  key;
    std::string  rate = "1r/m";   /* no token comes back during a test */
    uint64_t     burst = 3;
    uint64_t     cost = 1;
};


/* whether the core is inside rl_redis_decide(): done must not run there */
bool inside_decide = false;


/*
 * One request and its keys, which must not move while it is in flight:
 * always held by unique_ptr.
 */
class Request {
public:
    explicit Request(std::vector<Limit> limits) : limits_(std::move(limits))
    {
        texts_.reserve(limits_.size() * 3);
        keys_.resize(limits_.size());

        for (size_t i = 0; i < limits_.size(); i++) {
            const ngx_http_rate_limit_params_t params =
                params_for(limits_[i].rate, limits_[i].burst);
            params_.push_back(params);

            texts_.push_back(std::to_string(
                int64_t(params.interval_us + 0.5)));
            texts_.push_back(std::to_string(params.burst));
            texts_.push_back(std::to_string(limits_[i].cost));
            texts_.push_back(std::to_string(ngx_http_rate_limit_token_code(
                ngx_http_rate_limit_token_us(&params))));

            const std::string *text = &texts_[texts_.size() - 4];
            rl_redis_key_t &key = keys_[i];
            key.key = reinterpret_cast<const unsigned char *>(
                limits_[i].key.data());
            key.key_len = limits_[i].key.size();
            key.interval = text[0].data();
            key.interval_len = text[0].size();
            key.burst = text[1].data();
            key.burst_len = text[1].size();
            key.cost = text[2].data();
            key.cost_len = text[2].size();
            key.token_code = text[3].data();
            key.token_code_len = text[3].size();
        }
    }

    Request(const Request &) = delete;
    Request &operator=(const Request &) = delete;

    /* rl_redis_decide(); what it returned */
    int start(rl_redis_client_t *client)
    {
        inside_decide = true;
        rc_ = rl_redis_decide(client, keys_.data(), keys_.size(), on_done,
                              this, &handle_);
        inside_decide = false;
        started_ = true;

        if (rc_ == RL_REDIS_ERROR) {
            for (size_t i = 0; i < keys_.size(); i++) {
                EXPECT_EQ(keys_[i].status, RL_REDIS_KEY_FAILED)
                    << "a refused request's key " << i << " is FAILED";
            }
        }
        return rc_;
    }

    void cancel(rl_redis_client_t *client)
    {
        ASSERT_EQ(rc_, RL_REDIS_OK);
        ASSERT_FALSE(done_) << "cancel() after the callback";
        rl_redis_cancel(client, handle_);
        cancelled_ = true;
    }

    /* the callback ran, or none will (refused) */
    bool finished() const
    {
        return started_ && (done_ || rc_ == RL_REDIS_ERROR);
    }

    bool done() const { return done_; }
    int rc() const { return rc_; }
    const rl_redis_key_t &key(size_t i) const { return keys_.at(i); }
    size_t size() const { return keys_.size(); }

    bool all_decided() const
    {
        for (const rl_redis_key_t &key : keys_) {
            if (key.status != RL_REDIS_KEY_DECIDED) {
                return false;
            }
        }
        return done_;
    }

    bool all_failed() const
    {
        for (const rl_redis_key_t &key : keys_) {
            if (key.status != RL_REDIS_KEY_FAILED) {
                return false;
            }
        }
        return finished();
    }

    const ngx_http_rate_limit_params_t &params(size_t i) const
    {
        return params_.at(i);
    }

private:
    static void on_done(void *data)
    {
        Request *request = static_cast<Request *>(data);

        EXPECT_FALSE(inside_decide) << "done() from inside rl_redis_decide()";
        EXPECT_FALSE(request->done_) << "done() twice";
        EXPECT_FALSE(request->cancelled_) << "done() after rl_redis_cancel()";
        EXPECT_EQ(request->rc_, RL_REDIS_OK) << "done() of a refused request";
        for (const rl_redis_key_t &key : request->keys_) {
            EXPECT_NE(key.status, RL_REDIS_KEY_PENDING)
                << "a key still PENDING at done()";
        }
        request->done_ = true;
    }

    std::vector<Limit>                         limits_;
    std::vector<ngx_http_rate_limit_params_t>  params_;
    std::vector<std::string>                   texts_;
    std::vector<rl_redis_key_t>                keys_;
    rl_redis_request_t                        *handle_ = nullptr;
    int                                        rc_ = RL_REDIS_ERROR;
    bool                                       started_ = false;
    bool                                       done_ = false;
    bool                                       cancelled_ = false;
};


using RequestPtr = std::unique_ptr<Request>;


/* where a client connects: host and port, or a unix socket */
struct Endpoint {
    std::string  host;
    unsigned     port = 0;
    std::string  unix_path;

    std::string address() const
    {
        return unix_path.empty() ? host + ":" + std::to_string(port)
                                 : unix_path;
    }
};


Endpoint tcp(const RedisServer &server)
{
    return { "127.0.0.1", unsigned(server.port()), "" };
}


struct ClientOptions {
    bool         cluster = false;
    std::string  password;
    uint64_t     db = 0;
    uint64_t     timeout_ms = 300;
    std::string  heartbeat_key;
    std::string  heartbeat_id;
};


struct ClientDestroy {
    void operator()(rl_redis_client_t *client) const
    {
        rl_redis_destroy(client);
    }
};


/*
 * A client and its host: the host outlives the client, whose destroy
 * closes its links through the host.
 */
class TestClient {
public:
    TestClient(std::vector<Endpoint> endpoints, ClientOptions options)
        : endpoints_(std::move(endpoints)), options_(std::move(options))
    {
        for (const Endpoint &endpoint : endpoints_) {
            addresses_.push_back(endpoint.address());
        }
        for (size_t i = 0; i < endpoints_.size(); i++) {
            rl_redis_endpoint_t e {};
            if (endpoints_[i].unix_path.empty()) {
                e.host = endpoints_[i].host.c_str();
                e.port = endpoints_[i].port;
            } else {
                e.unix_path = endpoints_[i].unix_path.c_str();
            }
            e.address = addresses_[i].c_str();
            c_endpoints_.push_back(e);
        }

        rl_redis_config_t config {};
        config.endpoints = c_endpoints_.data();
        config.nendpoints = c_endpoints_.size();
        config.cluster = options_.cluster;
        config.password = options_.password.empty()
                          ? nullptr : options_.password.c_str();
        config.password_len = options_.password.size();
        config.db = options_.db;
        config.timeout_ms = options_.timeout_ms;
        if (!options_.heartbeat_key.empty()) {
            config.heartbeat_key = options_.heartbeat_key.c_str();
            config.heartbeat_key_len = options_.heartbeat_key.size();
            config.heartbeat_id = options_.heartbeat_id.c_str();
            config.heartbeat_id_len = options_.heartbeat_id.size();
        }
        config.failure_policy = "test=open";
        config.shared = shared.get();

        char err[RL_REDIS_ERR_LEN] = "";
        client_.reset(rl_redis_create(&config, host.adapter(), err));
        EXPECT_TRUE(client_) << "rl_redis_create: " << err;
        host.attach(client_.get());
    }

    TestClient(const TestClient &) = delete;
    TestClient &operator=(const TestClient &) = delete;

    ~TestClient()
    {
        client_.reset();
        host.attach(nullptr);
    }

    rl_redis_client_t *get() const { return client_.get(); }
    bool ok() const { return client_ != nullptr; }

    /* starts a request for limits, and runs the loop until it is done */
    RequestPtr decide(std::vector<Limit> limits, int max_ms = 2000)
    {
        auto request = std::make_unique<Request>(std::move(limits));
        if (request->start(get()) == RL_REDIS_OK) {
            EXPECT_TRUE(host.run_until([&] { return request->finished(); },
                                       max_ms))
                << "no callback within " << max_ms << " ms";
        }
        return request;
    }

    /*
     * Asks until one request has every key DECIDED: a client tells no
     * one when it is ready (a cluster's map, a reconnection), it fails
     * what it cannot send yet.
     */
    RequestPtr decide_eventually(const std::vector<Limit> &limits,
        int max_ms)
    {
        const uint64_t deadline = PollHost::monotonic_us()
                                  + uint64_t(max_ms) * 1000;
        RequestPtr request;
        do {
            request = decide(limits, max_ms);
            if (request->all_decided()) {
                break;
            }
            host.run_for(50);
        } while (PollHost::monotonic_us() < deadline);
        return request;
    }

    rl_redis_circuit_info_t circuit(size_t endpoint = 0) const
    {
        return shared.circuit(addresses_.at(endpoint));
    }

    bool circuit_open(size_t endpoint = 0) const
    {
        return circuit(endpoint).open != 0;
    }

    PollHost      host;
    SharedMemory  shared;

private:
    std::vector<Endpoint>             endpoints_;
    ClientOptions                     options_;
    std::vector<std::string>          addresses_;
    std::vector<rl_redis_endpoint_t>  c_endpoints_;
    std::unique_ptr<rl_redis_client_t, ClientDestroy>  client_;
};


/*
 * The decisions that the core's own GCRA gives for the same limit asked
 * one after the other at one instant: Redis must say the same, within
 * the time the requests took.
 */
void expect_gcra_sequence(const std::vector<RequestPtr> &requests)
{
    ASSERT_FALSE(requests.empty());
    const ngx_http_rate_limit_params_t params = requests[0]->params(0);
    const int64_t now = rate_limit_test::base_now_us;
    ngx_http_rate_limit_state_t state {};

    for (size_t i = 0; i < requests.size(); i++) {
        ASSERT_TRUE(requests[i]->all_decided()) << "request " << i;
        const ngx_http_rate_limit_decision_t want =
            rate_limit_test::decide(params, state, now);
        const ngx_http_rate_limit_decision_t &got =
            requests[i]->key(0).decision;

        EXPECT_EQ(got.allowed, want.allowed) << "request " << i;
        EXPECT_EQ(got.remaining, want.remaining) << "request " << i;
        EXPECT_NEAR(double(got.retry_after_us), double(want.retry_after_us),
                    1e6)
            << "request " << i;
        EXPECT_NEAR(double(got.reset_us), double(want.reset_us), 1e6)
            << "request " << i;
        if (want.allowed) {
            state = want.state;
        }
    }
}


uint64_t latency_count(const SharedMemory &shared)
{
    rl_redis_latency_t latency {};
    rl_redis_shared_latency(shared.get(), &latency);
    uint64_t total = 0;
    for (uint64_t count : latency.counts) {
        total += count;
    }
    return total;
}


/* "calls=N" of a command in INFO commandstats, 0 when never called */
long long command_calls(redisContext *context, const std::string &name)
{
    Reply info = command(context, { "INFO", "commandstats" });
    if (!info || info->type != REDIS_REPLY_STRING) {
        return -1;
    }
    const std::string text(info->str, info->len);
    const std::string tag = "cmdstat_" + name + ":calls=";
    const size_t at = text.find(tag);
    return at == std::string::npos
           ? 0 : std::stoll(text.substr(at + tag.size()));
}


class RealRedis : public testing::Test {
protected:
    void SetUp() override
    {
        executable_ = runnable_redis_server();
        if (executable_.empty()) {
            GTEST_SKIP() << "no redis-server to test the client against";
        }
    }

    std::unique_ptr<RedisServer> start(const RedisOptions &options = {})
    {
        std::unique_ptr<RedisServer> server =
            RedisServer::start(executable_, options);
        EXPECT_TRUE(server) << "redis-server does not start";
        return server;
    }

    /* a client of server, with its first decision made */
    static std::unique_ptr<TestClient> ready_client(
        const RedisServer &server, ClientOptions options = {})
    {
        auto client = std::make_unique<TestClient>(
            std::vector<Endpoint> { tcp(server) }, options);
        if (client->ok()) {
            RequestPtr first = client->decide_eventually(
                { { "rl:warm:up" } }, 3000);
            EXPECT_TRUE(first->all_decided()) << "the client never decides";
        }
        return client;
    }

    std::string  executable_;
};


/* the old client queued what came before its connection was up */
TEST_F(RealRedis, ADecisionRightAfterCreateWaitsForTheConnection)
{
    auto server = start();
    ASSERT_TRUE(server);
    TestClient client({ tcp(*server) }, {});
    ASSERT_TRUE(client.ok());

    RequestPtr request = client.decide({ { "rl:z:first" } });
    EXPECT_EQ(request->rc(), RL_REDIS_OK);
    ASSERT_TRUE(request->all_decided());
    EXPECT_TRUE(request->key(0).decision.allowed);
    EXPECT_EQ(client.host.link(0).connects, 1u);
}


TEST_F(RealRedis, DecisionsFollowGcra)
{
    auto server = start();
    ASSERT_TRUE(server);
    auto client = ready_client(*server);
    ASSERT_TRUE(client->ok());
    const uint64_t counted = latency_count(client->shared);

    /* burst 3: three pass, the fourth waits for a token, a minute */
    std::vector<RequestPtr> requests;
    for (int i = 0; i < 4; i++) {
        requests.push_back(client->decide({ { "rl:z:gcra" } }));
    }
    expect_gcra_sequence(requests);
    EXPECT_EQ(requests[2]->key(0).decision.remaining, 0u);
    EXPECT_FALSE(requests[3]->key(0).decision.allowed);
    EXPECT_GT(requests[3]->key(0).decision.retry_after_us, 50000000);

    /* the state is in Redis, as the script writes it: "-<TAT><code>" */
    Context context = server->connect();
    ASSERT_TRUE(context);
    Reply stored = command(context.get(), { "GET", "rl:z:gcra" });
    ASSERT_TRUE(stored);
    ASSERT_EQ(stored->type, REDIS_REPLY_STRING);
    EXPECT_EQ(stored->str[0], '-');

    /* each answer's round trip is counted in the shared histogram */
    EXPECT_GE(latency_count(client->shared), counted + 4);
}


/*
 * Requests queued in one pass of the loop go out as one script call, and
 * each stays all or nothing: a request whose one key is spent takes no
 * token from its other key.
 */
TEST_F(RealRedis, ABatchOfRequestsInOnePassIsOneScriptCall)
{
    auto server = start();
    ASSERT_TRUE(server);
    auto client = ready_client(*server);
    ASSERT_TRUE(client->ok());

    RequestPtr spend = client->decide({ { "rl:z:spent", "1r/m", 1 } });
    ASSERT_TRUE(spend->all_decided());
    ASSERT_TRUE(spend->key(0).decision.allowed);

    Context context = server->connect();
    ASSERT_TRUE(context);
    command(context.get(), { "CONFIG", "RESETSTAT" });

    std::vector<RequestPtr> batch;
    for (int i = 0; i < 6; i++) {
        batch.push_back(std::make_unique<Request>(std::vector<Limit> {
            { "rl:z:batch" + std::to_string(i) } }));
    }
    batch.push_back(std::make_unique<Request>(std::vector<Limit> {
        { "rl:z:spent", "1r/m", 1 }, { "rl:z:untouched", "1r/m", 1 } }));
    for (const RequestPtr &request : batch) {
        ASSERT_EQ(request->start(client->get()), RL_REDIS_OK);
    }

    ASSERT_TRUE(client->host.run_until([&] {
        for (const RequestPtr &request : batch) {
            if (!request->finished()) {
                return false;
            }
        }
        return true;
    }, 2000));

    for (int i = 0; i < 6; i++) {
        ASSERT_TRUE(batch[i]->all_decided()) << i;
        EXPECT_TRUE(batch[i]->key(0).decision.allowed) << i;
        EXPECT_EQ(batch[i]->key(0).decision.remaining, 2u) << i;
    }
    ASSERT_TRUE(batch[6]->all_decided());
    EXPECT_FALSE(batch[6]->key(0).decision.allowed);

    long long evalsha = command_calls(context.get(), "evalsha");
    long long eval = command_calls(context.get(), "eval");
    EXPECT_EQ(evalsha + eval, 1) << "seven requests, one script call";

    /* the spent key's partner kept its token */
    RequestPtr alone = client->decide({ { "rl:z:untouched", "1r/m", 1 } });
    ASSERT_TRUE(alone->all_decided());
    EXPECT_TRUE(alone->key(0).decision.allowed);
}


/* SCRIPT FLUSH empties the cache: NOSCRIPT, the script again, a decision */
TEST_F(RealRedis, ADecisionPassesAfterScriptFlush)
{
    auto server = start();
    ASSERT_TRUE(server);
    auto client = ready_client(*server);
    ASSERT_TRUE(client->ok());
    Context context = server->connect();
    ASSERT_TRUE(context);

    std::vector<RequestPtr> requests;
    requests.push_back(client->decide({ { "rl:z:flush" } }));
    command(context.get(), { "SCRIPT", "FLUSH" });
    requests.push_back(client->decide({ { "rl:z:flush" } }));
    expect_gcra_sequence(requests);

    /* and the batch script, flushed the same way */
    command(context.get(), { "SCRIPT", "FLUSH" });
    std::vector<RequestPtr> batch;
    for (int i = 0; i < 3; i++) {
        batch.push_back(std::make_unique<Request>(std::vector<Limit> {
            { "rl:z:flushed" + std::to_string(i) } }));
        ASSERT_EQ(batch.back()->start(client->get()), RL_REDIS_OK);
    }
    ASSERT_TRUE(client->host.run_until([&] {
        return batch[0]->finished() && batch[1]->finished()
               && batch[2]->finished();
    }, 2000));
    for (const RequestPtr &request : batch) {
        ASSERT_TRUE(request->all_decided());
        EXPECT_TRUE(request->key(0).decision.allowed);
    }
    EXPECT_FALSE(client->circuit_open());
}


/*
 * A frozen server (SIGSTOP): the request fails by its timeout, the stall
 * detector closes the link a while later and opens the circuit; while it
 * is open requests fail at once; once the server runs again (SIGCONT) the
 * probes close the circuit, and decisions pass again.
 */
TEST_F(RealRedis, AFrozenServerFailsByTimeoutOpensTheCircuitAndRecovers)
{
    auto server = start();
    ASSERT_TRUE(server);
    ClientOptions options;
    options.timeout_ms = 300;
    auto client = ready_client(*server, options);
    ASSERT_TRUE(client->ok());
    const unsigned closes = client->host.link(0).closes;

    server->freeze();

    const uint64_t asked = PollHost::monotonic_us();
    RequestPtr stuck = client->decide({ { "rl:z:frozen" } }, 1500);
    const uint64_t waited_ms = (PollHost::monotonic_us() - asked) / 1000;
    ASSERT_EQ(stuck->rc(), RL_REDIS_OK);
    ASSERT_TRUE(stuck->done());
    EXPECT_EQ(stuck->key(0).status, RL_REDIS_KEY_FAILED);
    EXPECT_GE(waited_ms, 280u) << "failed before its timeout";
    EXPECT_LT(waited_ms, 1000u) << "failed long after its timeout";

    /*
     * Traffic, a request every 100 ms: timeouts in a row open the
     * circuit; with replies owed for a second, the link is closed.
     */
    std::vector<RequestPtr> traffic;
    ASSERT_TRUE(client->host.run_until([&] {
        if (client->circuit_open()) {
            return true;
        }
        traffic.push_back(std::make_unique<Request>(std::vector<Limit> {
            { "rl:z:frozen" } }));
        traffic.back()->start(client->get());
        client->host.run_for(100);
        return false;
    }, 3000)) << "the circuit stays closed";
    EXPECT_TRUE(client->host.run_until([&] {
        return client->host.link(0).closes > closes;
    }, 3000)) << "the stall detector did not close the link";
    for (const RequestPtr &request : traffic) {
        EXPECT_TRUE(request->all_failed());
    }
    EXPECT_EQ(client->circuit().opened, 1u);
    EXPECT_FALSE(client->circuit().up);

    RequestPtr refused = client->decide({ { "rl:z:frozen" } });
    EXPECT_EQ(refused->rc(), RL_REDIS_ERROR)
        << "a request waits on an open circuit";

    server->thaw();

    ASSERT_TRUE(client->host.run_until([&] {
        return !client->circuit_open();
    }, 6000)) << "the circuit never closes";
    EXPECT_EQ(client->circuit().closed, 1u);
    EXPECT_TRUE(client->circuit().up);

    RequestPtr again = client->decide_eventually({ { "rl:z:thawed" } },
                                                 2000);
    ASSERT_TRUE(again->all_decided());
    EXPECT_TRUE(again->key(0).decision.allowed);
}


/*
 * A restart on the same port: the connection is lost, decisions fail at
 * once meanwhile, the client reconnects by itself, loads the scripts the
 * new server does not have, and decides again.
 */
TEST_F(RealRedis, ARestartedServerIsReconnected)
{
    auto server = start();
    ASSERT_TRUE(server);
    auto client = ready_client(*server);
    ASSERT_TRUE(client->ok());
    RequestPtr before = client->decide({ { "rl:z:restart" } });
    ASSERT_TRUE(before->all_decided());
    EXPECT_EQ(before->key(0).decision.remaining, 2u);
    const unsigned opens = client->host.link(0).opens;

    server->stop();
    ASSERT_TRUE(client->host.run_until([&] {
        return client->host.link(0).losses > 0;
    }, 2000)) << "the client never hears of the closed connection";

    RequestPtr down = client->decide({ { "rl:z:restart" } }, 1000);
    EXPECT_TRUE(down->all_failed()) << "a decision without a server";
    EXPECT_TRUE(client->circuit_open())
        << "a lost connection opens the circuit at once";

    ASSERT_TRUE(server->restart());

    /* the restarted server is empty: the bucket is full again */
    RequestPtr after = client->decide_eventually({ { "rl:z:restart" } },
                                                 5000);
    ASSERT_TRUE(after->all_decided()) << "no decision after the restart";
    EXPECT_TRUE(after->key(0).decision.allowed);
    EXPECT_EQ(after->key(0).decision.remaining, 2u);
    EXPECT_GT(client->host.link(0).opens, opens);

    ASSERT_TRUE(client->host.run_until([&] {
        return !client->circuit_open();
    }, 3000));
    EXPECT_GE(client->circuit().opened, 1u);
    EXPECT_EQ(client->circuit().closed, client->circuit().opened);
}


TEST_F(RealRedis, AuthAndSelect)
{
    RedisOptions server_options;
    server_options.password = "s3cret pass";
    auto server = start(server_options);
    ASSERT_TRUE(server);

    ClientOptions options;
    options.password = server_options.password;
    options.db = 3;
    auto client = ready_client(*server, options);
    ASSERT_TRUE(client->ok());

    RequestPtr request = client->decide({ { "rl:z:db3" } });
    ASSERT_TRUE(request->all_decided());
    EXPECT_TRUE(request->key(0).decision.allowed);

    Context context = server->connect();
    ASSERT_TRUE(context);
    command(context.get(), { "SELECT", "3" });
    Reply in_3 = command(context.get(), { "EXISTS", "rl:z:db3" });
    command(context.get(), { "SELECT", "0" });
    Reply in_0 = command(context.get(), { "EXISTS", "rl:z:db3" });
    ASSERT_TRUE(in_3 && in_0);
    EXPECT_EQ(in_3->integer, 1);
    EXPECT_EQ(in_0->integer, 0);
}


TEST_F(RealRedis, AWrongPasswordDecidesNothing)
{
    RedisOptions server_options;
    server_options.password = "right";
    auto server = start(server_options);
    ASSERT_TRUE(server);

    ClientOptions options;
    options.password = "wrong";
    TestClient client({ tcp(*server) }, options);
    ASSERT_TRUE(client.ok());
    client.host.run_until([&] { return client.host.link(0).connects > 0; },
                          2000);

    RequestPtr request = client.decide({ { "rl:z:auth" } });
    EXPECT_TRUE(request->all_failed());
    EXPECT_TRUE(client.host.run_until([&] { return client.circuit_open(); },
                                      2000))
        << "a refused AUTH does not open the circuit";
    EXPECT_TRUE(client.host.logged("WRONGPASS")
                || client.host.logged("invalid password"))
        << "the refusal is not logged";
}


TEST_F(RealRedis, AUnixSocket)
{
    RedisOptions server_options;
    server_options.unix_socket = true;
    auto server = start(server_options);
    ASSERT_TRUE(server);

    TestClient client({ { "", 0, server->socket() } }, {});
    ASSERT_TRUE(client.ok());
    std::vector<RequestPtr> requests;
    requests.push_back(client.decide_eventually({ { "rl:z:unix" } }, 3000));
    requests.push_back(client.decide({ { "rl:z:unix" } }));
    expect_gcra_sequence(requests);

    Context context = server->connect();
    ASSERT_TRUE(context);
    Reply exists = command(context.get(), { "EXISTS", "rl:z:unix" });
    ASSERT_TRUE(exists);
    EXPECT_EQ(exists->integer, 1);
}


/* a cancelled request hears nothing, even when its reply comes late */
TEST_F(RealRedis, ACancelledRequestIsNeverCalledBack)
{
    auto server = start();
    ASSERT_TRUE(server);
    auto client = ready_client(*server);
    ASSERT_TRUE(client->ok());

    auto at_once = std::make_unique<Request>(std::vector<Limit> {
        { "rl:z:cancel" } });
    ASSERT_EQ(at_once->start(client->get()), RL_REDIS_OK);
    at_once->cancel(client->get());

    server->freeze();
    auto late = std::make_unique<Request>(std::vector<Limit> {
        { "rl:z:late" } });
    ASSERT_EQ(late->start(client->get()), RL_REDIS_OK);
    client->host.run_for(100);
    /* a request waits: a graceful shutdown must wait for the timer */
    EXPECT_TRUE(client->host.timer_armed() && client->host.timer_holds());
    late->cancel(client->get());
    /* past its timeout, then its reply */
    client->host.run_for(500);
    server->thaw();

    RequestPtr next = client->decide_eventually({ { "rl:z:next" } }, 4000);
    ASSERT_TRUE(next->all_decided());
    client->host.run_for(100);
    EXPECT_FALSE(at_once->done());
    EXPECT_FALSE(late->done());
}


/* the node heartbeat: this node is in the registry, and counted */
TEST_F(RealRedis, TheHeartbeatCountsTheNode)
{
    auto server = start();
    ASSERT_TRUE(server);
    ClientOptions options;
    options.heartbeat_key = "rl:nodes";
    options.heartbeat_id = "testhost:4242";
    TestClient client({ tcp(*server) }, options);
    ASSERT_TRUE(client.ok());

    EXPECT_TRUE(client.host.run_until([&] {
        return rl_redis_shared_nodes(client.shared.get()) == 1;
    }, 3000)) << "no heartbeat counted";

    Context context = server->connect();
    ASSERT_TRUE(context);
    Reply score = command(context.get(),
                          { "ZSCORE", "rl:nodes", "testhost:4242" });
    ASSERT_TRUE(score);
    EXPECT_EQ(score->type, REDIS_REPLY_STRING);
}


/*
 * A real cluster of three masters, each with a third of the slots, shared
 * by the tests of the suite; each test uses slots of its own.
 */
class RealCluster : public testing::Test {
protected:
    static constexpr size_t masters = 3;

    struct Node : ClusterNode {
        unsigned  first;   /* its slots */
        unsigned  last;
    };

    static void SetUpTestSuite()
    {
        const std::string executable = runnable_redis_server();
        if (executable.empty()) {
            return;
        }

        const unsigned slots = NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS;
        for (size_t i = 0; i < masters; i++) {
            Node &node = nodes_[i];
            if (!node.start(executable)) {
                return;
            }
            node.first = unsigned(i * slots / masters);
            node.last = unsigned((i + 1) * slots / masters - 1);
            command(node.context.get(),
                    { "CLUSTER", "ADDSLOTSRANGE", std::to_string(node.first),
                      std::to_string(node.last) });
        }
        for (size_t i = 1; i < masters; i++) {
            command(nodes_[0].context.get(),
                    { "CLUSTER", "MEET", "127.0.0.1",
                      std::to_string(nodes_[i].server->port()),
                      std::to_string(nodes_[i].server->bus_port()) });
        }

        /* gossip takes a moment: until every node sees every slot served */
        const uint64_t deadline = PollHost::monotonic_us() + 15000000;
        while (PollHost::monotonic_us() < deadline) {
            if (all_ok()) {
                ready_ = true;
                return;
            }
            usleep(50000);
        }
    }

    static void TearDownTestSuite()
    {
        for (Node &node : nodes_) {
            node.context.reset();
            node.server.reset();
        }
        ready_ = false;
    }

    static bool all_ok()
    {
        for (const Node &node : nodes_) {
            Reply info = command(node.context.get(), { "CLUSTER", "INFO" });
            if (!info || info->type != REDIS_REPLY_STRING
                || std::strstr(info->str, "cluster_state:ok") == nullptr
                || std::strstr(info->str, "cluster_known_nodes:3")
                   == nullptr)
            {
                return false;
            }
        }
        return true;
    }

    void SetUp() override
    {
        if (!ready_) {
            GTEST_SKIP() << "no three-master redis cluster could be formed";
        }
    }

    static unsigned slot_of(const std::string &key)
    {
        return ngx_http_rate_limit_cluster_slot(
            reinterpret_cast<const unsigned char *>(key.data()),
            key.size());
    }

    /*
     * A key named after tag whose slot node i serves, and that no other
     * test of the suite uses; checked against CLUSTER KEYSLOT.
     */
    static std::string key_on(size_t i, const std::string &tag)
    {
        for (int n = 0; n < 100000; n++) {
            const std::string key = "rl:" + tag + ":" + std::to_string(n);
            const unsigned slot = slot_of(key);
            if (slot < nodes_[i].first || slot > nodes_[i].last
                || !used_slots_.insert(slot).second)
            {
                continue;
            }
            Reply keyslot = command(nodes_[i].context.get(),
                                    { "CLUSTER", "KEYSLOT", key });
            EXPECT_TRUE(keyslot && keyslot->type == REDIS_REPLY_INTEGER
                        && keyslot->integer == slot)
                << key;
            return key;
        }
        ADD_FAILURE() << "no key for node " << i;
        return "";
    }

    /* whether node i holds key: it answers for its own slots only */
    static long long holds(size_t i, const std::string &key)
    {
        Reply reply = command(nodes_[i].context.get(),
                              { "CLUSTER", "COUNTKEYSINSLOT",
                                std::to_string(slot_of(key)) });
        return reply && reply->type == REDIS_REPLY_INTEGER ? reply->integer
                                                           : -1;
    }

    static long long errors(size_t i, const std::string &kind)
    {
        Reply info = command(nodes_[i].context.get(),
                             { "INFO", "errorstats" });
        if (!info || info->type != REDIS_REPLY_STRING) {
            return -1;
        }
        const std::string text(info->str, info->len);
        const std::string tag = "errorstat_" + kind + ":count=";
        const size_t at = text.find(tag);
        return at == std::string::npos
               ? 0 : std::stoll(text.substr(at + tag.size()));
    }

    /* a cluster client seeded with node 0 alone, with every master up */
    static std::unique_ptr<TestClient> ready_client()
    {
        ClientOptions options;
        options.cluster = true;
        auto client = std::make_unique<TestClient>(
            std::vector<Endpoint> { tcp(*nodes_[0].server) }, options);
        if (!client->ok()) {
            return client;
        }

        std::vector<Limit> warm;
        for (size_t i = 0; i < masters; i++) {
            warm.push_back({ "rl:warm" + std::to_string(i) + ":"
                             + std::to_string(++warmups_) + "{"
                             + warm_tag(i) + "}" });
        }
        RequestPtr first = client->decide_eventually(warm, 5000);
        EXPECT_TRUE(first->all_decided())
            << "the cluster client never decides on every master";
        return client;
    }

    /* a hash tag whose slot node i serves */
    static std::string warm_tag(size_t i)
    {
        for (int n = 0;; n++) {
            const std::string tag = "w" + std::to_string(n);
            const unsigned slot = slot_of(tag);
            if (slot >= nodes_[i].first && slot <= nodes_[i].last) {
                return tag;
            }
        }
    }

    static std::array<Node, masters>  nodes_;
    static bool                       ready_;
    static std::set<unsigned>         used_slots_;
    static int                        warmups_;
};

std::array<RealCluster::Node, RealCluster::masters> RealCluster::nodes_;
bool RealCluster::ready_ = false;
std::set<unsigned> RealCluster::used_slots_;
int RealCluster::warmups_ = 0;


/* each key is decided by its master, and stored there */
TEST_F(RealCluster, KeysAreDecidedByTheirMasters)
{
    auto client = ready_client();
    ASSERT_TRUE(client->ok());

    std::vector<Limit> limits;
    for (size_t i = 0; i < masters; i++) {
        limits.push_back({ key_on(i, "route") });
    }

    RequestPtr first = client->decide(limits);
    RequestPtr second = client->decide(limits);
    ASSERT_TRUE(first->all_decided());
    ASSERT_TRUE(second->all_decided());

    for (size_t i = 0; i < masters; i++) {
        EXPECT_TRUE(first->key(i).decision.allowed) << i;
        EXPECT_EQ(first->key(i).decision.remaining, 2u) << i;
        EXPECT_EQ(second->key(i).decision.remaining, 1u) << i;
        EXPECT_EQ(holds(i, limits[i].key), 1) << limits[i].key;
    }
    /* every master has a link, found in the map: only node 0 was given */
    EXPECT_GE(rl_redis_shared_circuits(client->shared.get()), masters);
}


/*
 * One master rejects: the others' tokens are given back, so a later
 * request on them finds them as they were.
 */
TEST_F(RealCluster, ARejectionOnOneMasterRefundsTheOthers)
{
    auto client = ready_client();
    ASSERT_TRUE(client->ok());

    const std::string spent = key_on(0, "refund");
    const std::string other1 = key_on(1, "refund");
    const std::string other2 = key_on(2, "refund");

    RequestPtr spend = client->decide({ { spent, "1r/m", 1 } });
    ASSERT_TRUE(spend->all_decided());
    ASSERT_TRUE(spend->key(0).decision.allowed);

    RequestPtr rejected = client->decide({ { spent, "1r/m", 1 },
                                           { other1, "1r/m", 2 },
                                           { other2, "1r/m", 2 } });
    ASSERT_TRUE(rejected->all_decided());
    EXPECT_FALSE(rejected->key(0).decision.allowed);

    RequestPtr after = client->decide({ { other1, "1r/m", 2 },
                                        { other2, "1r/m", 2 } });
    ASSERT_TRUE(after->all_decided());
    EXPECT_EQ(after->key(0).decision.remaining, 1u) << "not refunded";
    EXPECT_EQ(after->key(1).decision.remaining, 1u) << "not refunded";
}


/* a slot being migrated: ASK, then ASKING and the script on the target */
TEST_F(RealCluster, AMigratingSlotIsFollowedWithAsking)
{
    auto client = ready_client();
    ASSERT_TRUE(client->ok());

    const std::string key = key_on(0, "ask");
    const std::string slot = std::to_string(slot_of(key));
    command(nodes_[1].context.get(),
            { "CLUSTER", "SETSLOT", slot, "IMPORTING", nodes_[0].id });
    command(nodes_[0].context.get(),
            { "CLUSTER", "SETSLOT", slot, "MIGRATING", nodes_[1].id });
    const long long asks = errors(0, "ASK");

    /* the key is on neither: node 0 sends it to node 1, once each time */
    std::vector<RequestPtr> requests;
    requests.push_back(client->decide({ { key } }));
    requests.push_back(client->decide({ { key } }));
    expect_gcra_sequence(requests);
    EXPECT_EQ(errors(0, "ASK"), asks + 2);
    EXPECT_EQ(holds(1, key), 1);
    EXPECT_EQ(holds(0, key), 0);

    /* the migration ends: node 1 owns the slot */
    for (const Node &node : nodes_) {
        command(node.context.get(),
                { "CLUSTER", "SETSLOT", slot, "NODE", nodes_[1].id });
    }
    RequestPtr owned = client->decide_eventually({ { key } }, 3000);
    ASSERT_TRUE(owned->all_decided());
    EXPECT_EQ(owned->key(0).decision.remaining, 0u);
}


/* a slot moved for good: MOVED, the new master, and a new map */
TEST_F(RealCluster, AMovedSlotIsFollowedAndTheMapRefreshed)
{
    auto client = ready_client();
    ASSERT_TRUE(client->ok());

    const std::string key = key_on(0, "moved");
    const std::string slot = std::to_string(slot_of(key));
    RequestPtr before = client->decide({ { key } });
    ASSERT_TRUE(before->all_decided());
    ASSERT_EQ(holds(0, key), 1);

    /* the slot and its key move to node 2, as redis-cli --cluster does */
    command(nodes_[2].context.get(),
            { "CLUSTER", "SETSLOT", slot, "IMPORTING", nodes_[0].id });
    command(nodes_[0].context.get(),
            { "CLUSTER", "SETSLOT", slot, "MIGRATING", nodes_[2].id });
    Reply migrated = command(nodes_[0].context.get(),
                             { "MIGRATE", "127.0.0.1",
                               std::to_string(nodes_[2].server->port()), "",
                               "0", "5000", "KEYS", key });
    ASSERT_TRUE(migrated);
    ASSERT_EQ(migrated->type, REDIS_REPLY_STATUS)
        << (migrated->type == REDIS_REPLY_ERROR ? migrated->str : "");
    for (const Node &node : nodes_) {
        command(node.context.get(),
                { "CLUSTER", "SETSLOT", slot, "NODE", nodes_[2].id });
    }
    ASSERT_EQ(holds(2, key), 1);
    const long long moved = errors(0, "MOVED");
    /* a map asked for less than 100 ms ago is not asked again */
    client->host.run_for(150);

    RequestPtr redirected = client->decide({ { key } });
    ASSERT_TRUE(redirected->all_decided());
    EXPECT_EQ(redirected->key(0).decision.remaining, 1u)
        << "not decided on the key's state at its new master";
    EXPECT_EQ(errors(0, "MOVED"), moved + 1);

    /* the map is asked again: the next one goes straight to node 2 */
    client->host.run_for(300);
    RequestPtr straight = client->decide({ { key } });
    ASSERT_TRUE(straight->all_decided());
    EXPECT_EQ(straight->key(0).decision.remaining, 0u);
    EXPECT_EQ(errors(0, "MOVED"), moved + 1) << "the map was not refreshed";
}

/*
 * A failover (CLUSTER FAILOVER on a replica of node 2): the old master
 * answers MOVED, the client follows to the new one, which it was never
 * told of, and decides on the replicated state.  The roles are swapped
 * back at the end, for the tests after it.
 */
TEST_F(RealCluster, AFailoverIsFollowed)
{
    RedisOptions options;
    options.cluster = true;
    std::unique_ptr<RedisServer> replica =
        RedisServer::start(runnable_redis_server(), options);
    ASSERT_TRUE(replica);
    Context to_replica = replica->connect();
    ASSERT_TRUE(to_replica);
    /* its first sync at once, not after the 5 s of the default */
    command(nodes_[2].context.get(),
            { "CONFIG", "SET", "repl-diskless-sync-delay", "0" });
    command(nodes_[0].context.get(),
            { "CLUSTER", "MEET", "127.0.0.1", std::to_string(replica->port()),
              std::to_string(replica->bus_port()) });

    Reply replica_id = command(to_replica.get(), { "CLUSTER", "MYID" });
    ASSERT_TRUE(replica_id && replica_id->type == REDIS_REPLY_STRING);
    const std::string replica_name = replica_id->str;

    /*
     * A manual failover needs the replica in sync, and the votes of the
     * masters, which must know it as the replica of its master.
     */
    auto may_fail_over = [&](redisContext *replica_of, const std::string &id,
                             const std::string &master_id) {
        Reply info = command(replica_of, { "INFO", "replication" });
        if (!info || info->type != REDIS_REPLY_STRING
            || std::strstr(info->str, "master_link_status:up") == nullptr)
        {
            return false;
        }
        for (size_t i = 0; i < 2; i++) {
            Reply nodes = command(nodes_[i].context.get(),
                                  { "CLUSTER", "NODES" });
            if (!nodes || nodes->type != REDIS_REPLY_STRING) {
                return false;
            }
            const std::string text(nodes->str, nodes->len);
            const size_t line = text.find(id);
            if (line == std::string::npos
                || text.find(" slave " + master_id, line)
                   > text.find('\n', line))
            {
                return false;
            }
        }
        return true;
    };

    /* it must know node 2 before it can replicate it */
    const uint64_t deadline = PollHost::monotonic_us() + 10000000;
    while (!may_fail_over(to_replica.get(), replica_name, nodes_[2].id)
           && PollHost::monotonic_us() < deadline)
    {
        command(to_replica.get(), { "CLUSTER", "REPLICATE", nodes_[2].id });
        usleep(100000);
    }
    ASSERT_TRUE(may_fail_over(to_replica.get(), replica_name, nodes_[2].id))
        << "the replica never syncs";

    auto client = ready_client();
    ASSERT_TRUE(client->ok());
    const std::string key = key_on(2, "failover");
    RequestPtr before = client->decide({ { key } });
    ASSERT_TRUE(before->all_decided());
    command(nodes_[2].context.get(), { "WAIT", "1", "2000" });

    /* until node is a master and the others send key's slot to it */
    auto serves = [&](redisContext *node, int port) {
        Reply role = command(node, { "ROLE" });
        if (!role || role->type != REDIS_REPLY_ARRAY || role->elements == 0
            || std::string(role->element[0]->str) != "master")
        {
            return false;
        }
        for (size_t i = 0; i < 2; i++) {
            Reply moved = command(nodes_[i].context.get(), { "EXISTS", key });
            if (!moved || moved->type != REDIS_REPLY_ERROR
                || std::string(moved->str).find(":" + std::to_string(port))
                   == std::string::npos)
            {
                return false;
            }
        }
        return true;
    };
    /* a manual failover that loses its election is asked again */
    uint64_t asked_at = 0;
    ASSERT_TRUE(client->host.run_until([&] {
        if (PollHost::monotonic_us() - asked_at > 3000000) {
            command(to_replica.get(), { "CLUSTER", "FAILOVER" });
            asked_at = PollHost::monotonic_us();
        }
        return serves(to_replica.get(), replica->port());
    }, 10000)) << "the failover does not complete";

    RequestPtr after = client->decide_eventually({ { key } }, 3000);
    ASSERT_TRUE(after->all_decided());
    EXPECT_EQ(after->key(0).decision.remaining, 1u)
        << "not decided on the replicated state";

    ASSERT_TRUE(client->host.run_until([&] {
        return may_fail_over(nodes_[2].context.get(), nodes_[2].id,
                             replica_name);
    }, 10000)) << "the old master never syncs with the new one";
    /* no election this time: the clean-up need not wait for votes */
    command(nodes_[2].context.get(), { "CLUSTER", "FAILOVER", "TAKEOVER" });
    ASSERT_TRUE(client->host.run_until([&] {
        return serves(nodes_[2].context.get(), nodes_[2].server->port());
    }, 10000)) << "the roles are not swapped back";
}

} // namespace
