/*
 * The core's Redis client (rl_redis.h) driven by a host that the input
 * plays: a sequence of events, each an opcode and its operands, on an
 * in-memory host with a fake clock.  Bytes arrive on links (random, or
 * replies Redis could give: OK, script answers, NOSCRIPT, MOVED, ASK, a
 * slot map), connects complete or fail, connections close, the clock
 * moves and fires the timer, the posted call runs, requests are decided
 * and cancelled, output is taken in pieces.
 *
 * Whatever the order, the client must not crash, leak, or break the
 * contract: done once, never from inside rl_redis_decide(), never after
 * rl_redis_cancel() nor from rl_redis_destroy(); every key DECIDED or
 * FAILED at done, every one FAILED when rl_redis_decide() refuses; keys
 * never touched after done or cancel (they are freed right then, so
 * ASan sees a touch); no callback of the host with a link out of range,
 * an open() of a link that has a connection, or an unbalanced lock.
 */

#include "fuzz_check.h"

#include <rl_redis.h>

#include <fuzzer/FuzzedDataProvider.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>


namespace {

using rate_limit_fuzz::require;


struct Link {
    bool  open = false;         /* a connection, connecting or connected */
    bool  connecting = false;
};


/* the host: what the client asked of it, and the fake clock */
struct Host {
    std::array<Link, RL_REDIS_ADDRESSES>  links;
    /* counts each link's connections: an event is for the one it was on */
    std::array<uint64_t, RL_REDIS_ADDRESSES>  generation {};
    uint64_t                              now_us = 1000000000000ULL;
    bool                                  timer_armed = false;
    uint64_t                              timer_at_us = 0;
    bool                                  posted = false;
    bool                                  fail_next_open = false;
    bool                                  locked = false;
};

Host *host;


int open_link(void *, unsigned link, const rl_redis_endpoint_t *endpoint,
    char *err)
{
    require(link < RL_REDIS_ADDRESSES, "open(): a link in range");
    require(!host->links[link].open, "open(): one connection a link");
    require(endpoint != nullptr && endpoint->address != nullptr,
            "open(): an endpoint with an address");
    require(endpoint->unix_path != nullptr || endpoint->host != nullptr,
            "open(): a host or a unix path");

    if (host->fail_next_open) {
        host->fail_next_open = false;
        std::strcpy(err, "Connection refused");
        return RL_REDIS_ERROR;
    }

    host->links[link].open = true;
    host->links[link].connecting = true;
    host->generation[link]++;
    return RL_REDIS_OK;
}


void want_write(void *, unsigned link)
{
    require(link < RL_REDIS_ADDRESSES, "want_write(): a link in range");
}


void close_link(void *, unsigned link)
{
    require(link < RL_REDIS_ADDRESSES, "close(): a link in range");
    host->links[link] = Link {};
}


void set_timer(void *, uint64_t delay_ms, int)
{
    require(delay_ms < 24 * 3600 * 1000ULL, "set_timer(): a sane delay");
    host->timer_armed = true;
    host->timer_at_us = host->now_us + delay_ms * 1000;
}


void post(void *)
{
    host->posted = true;
}


void log_line(void *, int level, const char *msg)
{
    require(level >= RL_REDIS_LOG_ERR && level <= RL_REDIS_LOG_INFO,
            "log(): a level of the four");
    require(msg != nullptr && std::strlen(msg) < 4096,
            "log(): a NUL ended line");
}


uint64_t now_us(void *)
{
    return host->now_us;
}


void lock(void *)
{
    require(!host->locked, "lock(): not taken twice");
    host->locked = true;
}


void unlock(void *)
{
    require(host->locked, "unlock(): after lock()");
    host->locked = false;
}


/* a request's keys and texts: freed at done or cancel, as nginx does */
struct Request {
    std::vector<rl_redis_key_t>  keys;
    std::vector<std::string>     texts;
    rl_redis_request_t          *handle = nullptr;
};

std::map<uintptr_t, std::unique_ptr<Request>> *requests;
bool inside_decide = false;
bool inside_destroy = false;


void on_done(void *data)
{
    require(!inside_decide, "done() never from inside rl_redis_decide()");
    require(!inside_destroy, "done() never from rl_redis_destroy()");

    const auto found = requests->find(reinterpret_cast<uintptr_t>(data));
    require(found != requests->end(),
            "done() once, and never after rl_redis_cancel()");

    for (const rl_redis_key_t &key : found->second->keys) {
        require(key.status == RL_REDIS_KEY_DECIDED
                || key.status == RL_REDIS_KEY_FAILED,
                "every key DECIDED or FAILED at done()");
        if (key.status == RL_REDIS_KEY_DECIDED) {
            require(key.decision.allowed == 0 || key.decision.allowed == 1,
                    "a decision allows or not");
        }
    }
    requests->erase(found);
}


const char *const key_names[] = {
    "rl:z:a", "rl:z:b", "rl:z:{a}c", "rl:z:foo", "rl:y:bar", "rl:z:",
};

/* the texts of a limit: mostly sane, sometimes not */
const char *const intervals[] = { "100000", "1", "60000000", "0", "x" };
const char *const bursts[] = { "3", "1", "1000", "0" };
const char *const costs[] = { "1", "2", "0" };
const char *const codes[] = { "7", "0", "999" };


template <size_t N>
const char *pick(FuzzedDataProvider &input, const char *const (&texts)[N])
{
    return texts[input.ConsumeIntegralInRange<size_t>(0, N - 1)];
}


void decide(rl_redis_client_t *client, FuzzedDataProvider &input,
    uintptr_t id)
{
    auto request = std::make_unique<Request>();
    const size_t nkeys = input.ConsumeIntegralInRange<size_t>(1, 4);

    request->texts.reserve(nkeys);
    request->keys.resize(nkeys);
    for (rl_redis_key_t &key : request->keys) {
        request->texts.push_back(pick(input, key_names));
        const std::string &name = request->texts.back();
        key.key = reinterpret_cast<const unsigned char *>(name.data());
        key.key_len = name.size();
        key.interval = pick(input, intervals);
        key.interval_len = std::strlen(key.interval);
        key.burst = pick(input, bursts);
        key.burst_len = std::strlen(key.burst);
        key.cost = pick(input, costs);
        key.cost_len = std::strlen(key.cost);
        key.token_code = pick(input, codes);
        key.token_code_len = std::strlen(key.token_code);
        /* what the client must overwrite */
        key.status = static_cast<rl_redis_key_status_e>(
            input.ConsumeIntegralInRange<int>(0, 2));
    }

    Request *const held = request.get();
    (*requests)[id] = std::move(request);

    inside_decide = true;
    const int rc = rl_redis_decide(client, held->keys.data(),
                                   held->keys.size(), on_done,
                                   reinterpret_cast<void *>(id),
                                   &held->handle);
    inside_decide = false;

    require(rc == RL_REDIS_OK || rc == RL_REDIS_ERROR,
            "rl_redis_decide() says OK or ERROR");
    require(requests->count(id) == 1, "no done() before it returns");

    if (rc == RL_REDIS_ERROR) {
        for (const rl_redis_key_t &key : held->keys) {
            require(key.status == RL_REDIS_KEY_FAILED,
                    "a refused request's keys are all FAILED");
        }
        requests->erase(id);
        return;
    }
    require(held->handle != nullptr, "an accepted request has a handle");
}


/* replies that Redis could give, so that the input need not spell them */
std::vector<std::string> canned_replies()
{
    auto bulk = [](const std::string &text) {
        return "$" + std::to_string(text.size()) + "\r\n" + text + "\r\n";
    };
    return {
        "+OK\r\n",
        ":1\r\n",
        ":3\r\n",
        "-ERR unknown\r\n",
        "-NOSCRIPT No matching script. Please use EVAL.\r\n",
        "-WRONGPASS invalid username-password pair\r\n",
        "-LOADING Redis is loading the dataset in memory\r\n",
        "-MOVED 3999 127.0.0.1:7001\r\n",
        "-MOVED 3999 :7002\r\n",
        "-ASK 3999 127.0.0.1:7002\r\n",
        "-CLUSTERDOWN The cluster is down\r\n",
        bulk(ngx_http_rate_limit_script_sha1()),
        bulk(ngx_http_rate_limit_script_one_sha1()),
        bulk(ngx_http_rate_limit_batch_script_sha1()),
        bulk(ngx_http_rate_limit_refund_script_sha1()),
        /* one key allowed, one rejected, two keys */
        "*5\r\n:1\r\n:2\r\n:0\r\n:100000\r\n",
        "*5\r\n:0\r\n:0\r\n:60000000\r\n:60000000\r\n",
        "*9\r\n:1\r\n:1\r\n:2\r\n:0\r\n:100000\r\n:1\r\n:0\r\n:0\r\n"
        ":300000\r\n",
        /* a batch of two one-key requests */
        "*2\r\n*5\r\n:1\r\n:2\r\n:0\r\n:100000\r\n"
        "*5\r\n:0\r\n:0\r\n:5\r\n:5\r\n",
        /* CLUSTER SLOTS: two masters, on the seeds' ports */
        "*2\r\n*3\r\n:0\r\n:8191\r\n*3\r\n" + bulk("127.0.0.1")
        + ":7000\r\n" + bulk("id0") + "*3\r\n:8192\r\n:16383\r\n*3\r\n"
        + bulk("127.0.0.1") + ":7001\r\n" + bulk("id1"),
        /* and one where a new master takes half of them */
        "*2\r\n*3\r\n:0\r\n:8191\r\n*3\r\n" + bulk("127.0.0.1")
        + ":7002\r\n" + bulk("id2") + "*3\r\n:8192\r\n:16383\r\n*3\r\n"
        + bulk("") + ":7001\r\n" + bulk("id1"),
    };
}


enum Event {
    CONNECTED, DATA, CANNED, CLOSED, CLOCK, POSTED, DECIDE, CANCEL, OUTPUT,
    FAIL_NEXT_OPEN, EVENTS
};


void on_output(rl_redis_client_t *client, unsigned link,
    FuzzedDataProvider &input)
{
    const char *data = nullptr;
    size_t len = 0;
    rl_redis_output(client, link, &data, &len);
    if (len == 0) {
        return;
    }
    require(data != nullptr, "output(): bytes to take");

    /* every byte read, so that ASan sees a buffer too short */
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++) {
        sum += static_cast<unsigned char>(data[i]);
    }
    (void) sum;

    const size_t sent = input.ConsumeBool()
                        ? len : input.ConsumeIntegralInRange<size_t>(0, len);
    rl_redis_output_sent(client, link, sent);
}


void run(FuzzedDataProvider &input)
{
    static const std::vector<std::string> replies = canned_replies();

    const bool cluster = input.ConsumeBool();
    const size_t nseeds = input.ConsumeIntegralInRange<size_t>(1, 3);
    const bool unix_seed = input.ConsumeBool();
    static const char *const addresses[] = {
        "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002" };
    std::vector<rl_redis_endpoint_t> endpoints(nseeds);
    for (size_t i = 0; i < nseeds; i++) {
        endpoints[i].address = addresses[i];
        if (unix_seed && i == 0) {
            endpoints[i].unix_path = "/tmp/redis.sock";
            endpoints[i].address = "/tmp/redis.sock";
        } else {
            endpoints[i].host = "127.0.0.1";
            endpoints[i].port = unsigned(7000 + i);
        }
    }

    static constexpr char password[] = "secret";
    static constexpr char heartbeat_key[] = "rl:nodes";
    static constexpr char heartbeat_id[] = "host:1";

    std::vector<uint64_t> memory((rl_redis_shared_size() + 7) / 8);
    rl_redis_shared_t *shared = rl_redis_shared_init(memory.data());
    require(shared != nullptr, "shared memory is initialised");

    rl_redis_config_t config {};
    config.endpoints = endpoints.data();
    config.nendpoints = endpoints.size();
    config.cluster = cluster;
    if (input.ConsumeBool()) {
        config.password = password;
        config.password_len = sizeof(password) - 1;
    }
    config.db = input.ConsumeIntegralInRange<uint64_t>(0, 2);
    config.timeout_ms = input.ConsumeIntegralInRange<uint64_t>(1, 2000);
    if (input.ConsumeBool()) {
        config.heartbeat_key = heartbeat_key;
        config.heartbeat_key_len = sizeof(heartbeat_key) - 1;
        config.heartbeat_id = heartbeat_id;
        config.heartbeat_id_len = sizeof(heartbeat_id) - 1;
    }
    config.failure_policy = "z=open";
    config.shared = shared;

    rl_redis_adapter_t adapter {};
    adapter.open = open_link;
    adapter.want_write = want_write;
    adapter.close = close_link;
    adapter.set_timer = set_timer;
    adapter.post = post;
    adapter.log = log_line;
    adapter.now_us = now_us;
    adapter.lock = lock;
    adapter.unlock = unlock;

    char err[RL_REDIS_ERR_LEN] = "";
    rl_redis_client_t *client = rl_redis_create(&config, &adapter, err);
    if (client == nullptr) {
        rate_limit_fuzz::require_message(err, sizeof(err));
        return;
    }

    uintptr_t next_id = 1;

    while (input.remaining_bytes() > 0) {
        const unsigned link =
            input.ConsumeIntegralInRange<unsigned>(0, 3);
        Link &state = host->links[link];

        switch (input.ConsumeIntegralInRange<int>(0, EVENTS - 1)) {

        case CONNECTED:
            if (state.open && state.connecting) {
                state.connecting = false;
                rl_redis_on_connected(client, link);
            }
            break;

        case DATA: {
            const std::string bytes = input.ConsumeRandomLengthString(512);
            if (state.open && !state.connecting) {
                rl_redis_on_data(client, link, bytes.data(), bytes.size());
            }
            break;
        }

        case CANNED: {
            const std::string &reply = replies[
                input.ConsumeIntegralInRange<size_t>(0, replies.size() - 1)];
            if (state.open && !state.connecting) {
                /* in two pieces: a reply may come cut anywhere */
                const size_t cut =
                    input.ConsumeIntegralInRange<size_t>(0, reply.size());
                const uint64_t generation = host->generation[link];
                rl_redis_on_data(client, link, reply.data(), cut);
                if (host->links[link].open
                    && host->generation[link] == generation)
                {
                    rl_redis_on_data(client, link, reply.data() + cut,
                                     reply.size() - cut);
                }
            }
            break;
        }

        case CLOSED:
            if (state.open) {
                state = Link {};
                rl_redis_on_closed(client, link,
                                   input.ConsumeBool()
                                   ? "Server closed the connection"
                                   : "Connection refused");
            }
            break;

        case CLOCK:
            host->now_us += uint64_t(input.ConsumeIntegralInRange<unsigned>(
                                0, 3000)) * 1000;
            if (host->timer_armed && host->now_us >= host->timer_at_us) {
                host->timer_armed = false;
                rl_redis_on_timer(client);
            }
            break;

        case POSTED:
            if (host->posted) {
                host->posted = false;
                rl_redis_on_posted(client);
            }
            break;

        case DECIDE:
            decide(client, input, next_id++);
            break;

        case CANCEL:
            if (!requests->empty()) {
                auto it = requests->begin();
                std::advance(it, input.ConsumeIntegralInRange<size_t>(
                                     0, requests->size() - 1));
                rl_redis_cancel(client, it->second->handle);
                requests->erase(it);
            }
            break;

        case OUTPUT:
            if (state.open && !state.connecting) {
                on_output(client, link, input);
            }
            break;

        case FAIL_NEXT_OPEN:
            host->fail_next_open = !host->fail_next_open;
            break;
        }

        require(!host->locked, "the lock is let go before the client returns");
    }

    const size_t circuits = rl_redis_shared_circuits(shared);
    require(circuits <= RL_REDIS_ADDRESSES, "at most ADDRESSES circuits");
    for (size_t i = 0; i < circuits; i++) {
        rl_redis_circuit_info_t info;
        rl_redis_shared_circuit(shared, i, &info);
        require(strnlen(info.address, sizeof(info.address))
                < sizeof(info.address),
                "a circuit's address is NUL ended");
        require(info.opened >= info.closed
                && info.opened - info.closed == uint64_t(info.open != 0),
                "a circuit is open when it opened once more than it closed");
    }

    inside_destroy = true;
    rl_redis_destroy(client);
    inside_destroy = false;
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Host fresh;
    std::map<uintptr_t, std::unique_ptr<Request>> live;
    host = &fresh;
    requests = &live;

    FuzzedDataProvider input(data, size);
    run(input);

    host = nullptr;
    requests = nullptr;
    return 0;
}
