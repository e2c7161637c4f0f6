/* The fake host of the Redis client's unit tests: see rl_redis_fake.h. */

#include "rl_redis_fake.h"

#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <sstream>


namespace rl_fake {

namespace {

/* what open() was given to connect to, to compare in a test */
std::string
sockaddr_text(const sockaddr *sa, socklen_t len)
{
    char text[INET6_ADDRSTRLEN];

    if (sa == nullptr) {
        return "none";
    }

    switch (sa->sa_family) {
    case AF_UNIX:
        return len == sizeof(sockaddr_un)
               ? std::string("unix ")
                 + reinterpret_cast<const sockaddr_un *>(sa)->sun_path
               : "unix, bad length";
    case AF_INET: {
        auto in = reinterpret_cast<const sockaddr_in *>(sa);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        return len == sizeof(sockaddr_in)
               ? "inet " + std::string(text) + " "
                 + std::to_string(ntohs(in->sin_port))
               : "inet, bad length";
    }
    case AF_INET6: {
        auto in6 = reinterpret_cast<const sockaddr_in6 *>(sa);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
        return len == sizeof(sockaddr_in6)
               ? "inet6 " + std::string(text) + " "
                 + std::to_string(ntohs(in6->sin6_port))
               : "inet6, bad length";
    }
    default:
        return "family " + std::to_string(sa->sa_family);
    }
}

} // namespace


namespace resp {

std::string
ok()
{
    return "+OK\r\n";
}


std::string
status(const std::string &text)
{
    return "+" + text + "\r\n";
}


std::string
error(const std::string &text)
{
    return "-" + text + "\r\n";
}


std::string
integer(long long n)
{
    return ":" + std::to_string(n) + "\r\n";
}


std::string
bulk(const std::string &s)
{
    return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}


std::string
nil()
{
    return "$-1\r\n";
}


std::string
array(const std::vector<std::string> &elements)
{
    std::string out = "*" + std::to_string(elements.size()) + "\r\n";

    for (const std::string &e : elements) {
        out += e;
    }
    return out;
}


std::string
integers(const std::vector<long long> &values)
{
    std::vector<std::string> elements;

    for (long long v : values) {
        elements.push_back(integer(v));
    }
    return array(elements);
}


static std::vector<long long>
decision_values(const std::vector<KeyAnswer> &keys)
{
    bool all = std::all_of(keys.begin(), keys.end(),
                           [](const KeyAnswer &k) { return k.allowed; });
    std::vector<long long> values {all ? 1 : 0};

    for (const KeyAnswer &k : keys) {
        values.push_back(k.allowed ? 1 : 0);
        values.push_back(k.remaining);
        values.push_back(k.retry_after_us);
        values.push_back(k.reset_us);
    }
    return values;
}


std::string
decision(const std::vector<KeyAnswer> &keys)
{
    return integers(decision_values(keys));
}


std::string
batch(const std::vector<std::vector<KeyAnswer>> &requests)
{
    std::vector<long long> values;

    for (const std::vector<KeyAnswer> &r : requests) {
        std::vector<long long> one = decision_values(r);
        values.insert(values.end(), one.begin(), one.end());
    }
    return integers(values);
}


std::string
cluster_slots(const std::vector<SlotRange> &ranges)
{
    std::vector<std::string> elements;

    for (const SlotRange &r : ranges) {
        elements.push_back(array({
            integer(r.first), integer(r.last),
            array({bulk(r.host), integer(r.port),
                   bulk("0123456789012345678901234567890123456789")})}));
    }
    return array(elements);
}


std::string
null_array()
{
    return "*-1\r\n";
}


std::string
message(const std::string &channel, const std::string &payload)
{
    return array({bulk("message"), bulk(channel), bulk(payload)});
}


std::string
subscription(const std::string &kind, const std::string &channel,
    long long count)
{
    return array({bulk(kind), bulk(channel), integer(count)});
}

}  // namespace resp


SharedMemory::SharedMemory()
    : memory_((rl_redis_shared_size() + sizeof(uint64_t) - 1)
              / sizeof(uint64_t) + 1, 0)
{
    shared_ = rl_redis_shared_init(memory_.data());
}


void
SharedMemory::lock()
{
    if (locked_) {
        lock_errors_++;
    }
    locked_ = true;
    locks_++;
}


void
SharedMemory::unlock()
{
    if (!locked_) {
        lock_errors_++;
    }
    locked_ = false;
}


FakeHost::FakeHost(FakeClock &clock, SharedMemory &memory)
    : clock_(clock), memory_(memory), links_(RL_REDIS_ADDRESSES)
{
    adapter_.data = this;
    adapter_.open = open_cb;
    adapter_.want_write = want_write_cb;
    adapter_.close = close_cb;
    adapter_.set_timer = set_timer_cb;
    adapter_.post = post_cb;
    adapter_.log = log_cb;
    adapter_.now_us = now_us_cb;
    adapter_.lock = lock_cb;
    adapter_.unlock = unlock_cb;
    adapter_.resolve = resolve_cb;
}


FakeHost::~FakeHost()
{
    destroy();
}


rl_redis_client_t *
FakeHost::create(rl_redis_config_t config)
{
    char err[RL_REDIS_ERR_LEN] = "";

    destroy();
    config.shared = memory_.shared();
    client_ = rl_redis_create(&config, &adapter_, err);
    EXPECT_NE(client_, nullptr) << err;
    return client_;
}


void
FakeHost::destroy()
{
    if (client_ != nullptr) {
        rl_redis_destroy(client_);
        client_ = nullptr;
    }
}


void
FakeHost::end_pass()
{
    /* a post made by the posted call itself runs in the next pass, but
     * the test sees the two passes as one */
    for (unsigned n = 0; posted_ && n < 100; n++) {
        posted_ = false;
        rl_redis_on_posted(client_);
    }
    EXPECT_FALSE(posted_) << "the client posts itself forever";
}


void
FakeHost::connected(unsigned i)
{
    Link &l = links_.at(i);

    EXPECT_TRUE(l.open) << "link " << i << " connected without open()";
    l.connected = true;
    rl_redis_on_connected(client_, i);
    end_pass();
}


void
FakeHost::reply(unsigned i, const std::string &bytes)
{
    EXPECT_TRUE(links_.at(i).connected)
        << "a reply on link " << i << ", which is not connected";
    rl_redis_on_data(client_, i, bytes.data(), bytes.size());
    end_pass();
}


void
FakeHost::peer_closed(unsigned i, const char *reason)
{
    Link &l = links_.at(i);

    EXPECT_TRUE(l.open) << "link " << i << " closed while not open";
    l.open = false;
    l.connected = false;
    l.want_write = false;
    rl_redis_on_closed(client_, i, reason);
    end_pass();
}


void
FakeHost::resolved(unsigned i, const std::vector<std::string> &ips,
    uint64_t valid_ms, const char *err)
{
    Link &l = links_.at(i);
    std::vector<sockaddr_storage> storage(ips.size());
    std::vector<const sockaddr *> addrs;
    std::vector<socklen_t> lens;

    for (size_t n = 0; n < ips.size(); n++) {
        auto &in = reinterpret_cast<sockaddr_in &>(storage[n]);
        auto &in6 = reinterpret_cast<sockaddr_in6 &>(storage[n]);

        if (inet_pton(AF_INET, ips[n].c_str(), &in.sin_addr) == 1) {
            in.sin_family = AF_INET;
            lens.push_back(sizeof(sockaddr_in));
        } else {
            EXPECT_EQ(inet_pton(AF_INET6, ips[n].c_str(), &in6.sin6_addr), 1)
                << ips[n];
            in6.sin6_family = AF_INET6;
            lens.push_back(sizeof(sockaddr_in6));
        }
        addrs.push_back(reinterpret_cast<const sockaddr *>(&storage[n]));
    }

    EXPECT_TRUE(l.resolving) << "an answer on link " << i << ", not asked";
    l.resolving = false;
    rl_redis_on_resolved(client_, i, addrs.data(), lens.data(), addrs.size(),
                         valid_ms, err);
    end_pass();
}


void
FakeHost::fire_timer()
{
    timer_armed_ = false;
    rl_redis_on_timer(client_);
    end_pass();
}


void
FakeHost::advance_us(uint64_t us)
{
    advance_all_us({this}, us);
}


void
FakeHost::advance_ms(uint64_t ms)
{
    advance_all_us({this}, ms * 1000);
}


void
advance_all_ms(std::initializer_list<FakeHost *> hosts, uint64_t ms)
{
    advance_all_us(hosts, ms * 1000);
}


void
advance_all_us(std::initializer_list<FakeHost *> hosts, uint64_t us)
{
    if (hosts.size() == 0) {
        return;
    }

    FakeClock &clock = (*hosts.begin())->clock_;
    uint64_t target = clock.now_us + us;

    for (;;) {
        FakeHost *next = nullptr;

        for (FakeHost *h : hosts) {
            if (h->timer_armed_ && h->timer_deadline_us_ <= target
                && (next == nullptr
                    || h->timer_deadline_us_ < next->timer_deadline_us_))
            {
                next = h;
            }
        }

        if (next == nullptr) {
            break;
        }

        clock.now_us = std::max(clock.now_us, next->timer_deadline_us_);
        next->fire_timer();
    }

    clock.now_us = target;
}


void
FakeHost::parse(Link &l, const char *data, size_t len)
{
    redisReader *r = static_cast<redisReader *>(l.reader.get());

    l.written.append(data, len);
    ASSERT_EQ(redisReaderFeed(r, data, len), REDIS_OK);

    for (;;) {
        void *reply = nullptr;

        ASSERT_EQ(redisReaderGetReply(r, &reply), REDIS_OK)
            << "the client wrote bad RESP: " << r->errstr;

        if (reply == nullptr) {
            return;
        }

        std::unique_ptr<redisReply, void (*)(void *)> owned(
            static_cast<redisReply *>(reply), freeReplyObject);
        ASSERT_EQ(owned->type, REDIS_REPLY_ARRAY)
            << "a command is an array of bulk strings";

        Command c;

        for (size_t i = 0; i < owned->elements; i++) {
            const redisReply *e = owned->element[i];
            ASSERT_EQ(e->type, REDIS_REPLY_STRING)
                << "a command is an array of bulk strings";
            c.emplace_back(e->str, e->len);
        }

        ASSERT_FALSE(c.empty()) << "an empty command";
        l.commands.push_back(std::move(c));
    }
}


std::vector<Command>
FakeHost::take(unsigned i)
{
    Link &l = links_.at(i);

    if (l.want_write && l.connected) {
        l.want_write = false;

        for (;;) {
            const char *data = nullptr;
            size_t len = 0;

            rl_redis_output(client_, i, &data, &len);

            if (len == 0) {
                break;
            }

            size_t n = l.write_chunk ? std::min(len, l.write_chunk) : len;
            std::string chunk(data, n);

            rl_redis_output_sent(client_, i, n);
            parse(l, chunk.data(), chunk.size());
        }
    }

    std::vector<Command> out(l.commands.begin(), l.commands.end());
    l.commands.clear();
    return out;
}


Command
FakeHost::take_one(unsigned i)
{
    std::vector<Command> cs = take(i);

    EXPECT_EQ(cs.size(), 1u) << "link " << i << ": " << show(cs);
    return cs.empty() ? Command {} : cs.front();
}


size_t
FakeHost::output_pending(unsigned i) const
{
    const char *data = nullptr;
    size_t len = 0;

    rl_redis_output(client_, i, &data, &len);
    return len;
}


size_t
FakeHost::count_logs(const std::string &text, int level) const
{
    return std::count_if(logs_.begin(), logs_.end(),
                         [&](const LogLine &l) {
                             return (level < 0 || l.level == level)
                                    && l.msg.find(text) != std::string::npos;
                         });
}


void
FakeHost::bring_up(unsigned i, const std::string &slots_reply)
{
    connected(i);

    /* each answer may release the next command: AUTH before the rest */
    for (unsigned round = 0; round < 10; round++) {
        std::vector<Command> cs = take(i);

        if (cs.empty()) {
            break;
        }

        std::string answers;

        for (const Command &c : cs) {
            if (c[0] == "AUTH" || c[0] == "SELECT") {
                answers += resp::ok();

            } else if (c[0] == "SCRIPT" && c.size() == 3) {
                char sha[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];
                ngx_http_rate_limit_sha1_hex(
                    reinterpret_cast<const unsigned char *>(c[2].data()),
                    c[2].size(), sha);
                answers += resp::bulk(sha);

            } else if (c[0] == "CLUSTER") {
                EXPECT_FALSE(slots_reply.empty()) << show(c);
                answers += slots_reply;

            } else {
                ADD_FAILURE() << "bring_up: not a start-up command: "
                              << show(c);
                return;
            }
        }

        reply(i, answers);
    }
}


int
FakeHost::open_cb(void *data, unsigned i, const rl_redis_endpoint_t *ep,
    char *err)
{
    FakeHost *h = static_cast<FakeHost *>(data);

    if (i >= RL_REDIS_ADDRESSES) {
        ADD_FAILURE() << "open() of link " << i;
        snprintf(err, RL_REDIS_ERR_LEN, "no such link");
        return RL_REDIS_ERROR;
    }

    Link &l = h->links_[i];

    EXPECT_FALSE(l.open) << "link " << i << " opened twice";
    l.opens++;
    l.open_at_us.push_back(h->clock_.now_us);
    l.endpoint.host = ep->host ? ep->host : "";
    l.endpoint.port = ep->port;
    l.endpoint.unix_path = ep->unix_path ? ep->unix_path : "";
    l.endpoint.address = ep->address ? ep->address : "";
    l.endpoint.has_name = ep->name != nullptr;
    l.endpoint.name = ep->name ? ep->name : "";
    l.endpoint.sockaddr = sockaddr_text(ep->sockaddr, ep->socklen);

    if (!l.fail_open.empty()) {
        snprintf(err, RL_REDIS_ERR_LEN, "%s", l.fail_open.c_str());
        return RL_REDIS_ERROR;
    }

    l.open = true;
    l.connected = false;
    l.want_write = false;
    l.commands.clear();
    l.written.clear();
    l.reader.reset(redisReaderCreate(),
                   [](void *r) {
                       redisReaderFree(static_cast<redisReader *>(r));
                   });
    return RL_REDIS_OK;
}


void
FakeHost::want_write_cb(void *data, unsigned i)
{
    FakeHost *h = static_cast<FakeHost *>(data);
    Link &l = h->links_.at(i);

    EXPECT_TRUE(l.open) << "want_write() on link " << i << ", not open";
    l.want_write = true;
    l.want_writes++;
}


void
FakeHost::close_cb(void *data, unsigned i)
{
    FakeHost *h = static_cast<FakeHost *>(data);
    Link &l = h->links_.at(i);

    EXPECT_TRUE(l.open) << "close() of link " << i << ", not open";
    l.open = false;
    l.connected = false;
    l.want_write = false;
    l.closes++;
}


void
FakeHost::set_timer_cb(void *data, uint64_t delay_ms, int hold)
{
    FakeHost *h = static_cast<FakeHost *>(data);

    h->timer_armed_ = true;
    h->timer_deadline_us_ = h->clock_.now_us + delay_ms * 1000;
    h->timer_hold_ = hold;
    h->timer_calls_.push_back({h->clock_.now_us, delay_ms, hold});
}


void
FakeHost::post_cb(void *data)
{
    FakeHost *h = static_cast<FakeHost *>(data);

    h->posted_ = true;
    h->posts_++;
}


void
FakeHost::log_cb(void *data, int level, const char *msg)
{
    FakeHost *h = static_cast<FakeHost *>(data);

    EXPECT_EQ(std::strchr(msg, '\n'), nullptr) << msg;
    h->logs_.push_back({level, msg});
}


uint64_t
FakeHost::now_us_cb(void *data)
{
    return static_cast<FakeHost *>(data)->clock_.now_us;
}


void
FakeHost::lock_cb(void *data)
{
    static_cast<FakeHost *>(data)->memory_.lock();
}


void
FakeHost::unlock_cb(void *data)
{
    static_cast<FakeHost *>(data)->memory_.unlock();
}


int
FakeHost::resolve_cb(void *data, unsigned i, const char *name, char *err)
{
    FakeHost *h = static_cast<FakeHost *>(data);
    Link &l = h->links_.at(i);

    EXPECT_FALSE(l.resolving) << "link " << i << " resolved twice at once";
    l.resolves++;
    l.resolve_at_us.push_back(h->clock_.now_us);
    l.resolve_name = name;

    if (!l.fail_resolve.empty()) {
        snprintf(err, RL_REDIS_ERR_LEN, "%s", l.fail_resolve.c_str());
        return RL_REDIS_ERROR;
    }

    l.resolving = true;
    return RL_REDIS_OK;
}


Key::Key(std::string key, std::string interval_, std::string burst_,
    std::string cost_, std::string token_code_)
    : key_text(std::move(key)), interval(std::move(interval_)),
      burst(std::move(burst_)), cost(std::move(cost_)),
      token_code(std::move(token_code_))
{
    k.key = reinterpret_cast<const unsigned char *>(key_text.data());
    k.key_len = key_text.size();
    k.interval = interval.data();
    k.interval_len = interval.size();
    k.burst = burst.data();
    k.burst_len = burst.size();
    k.cost = cost.data();
    k.cost_len = cost.size();
    k.token_code = token_code.data();
    k.token_code_len = token_code.size();
    k.status = RL_REDIS_KEY_PENDING;
}


Request::Request(std::vector<std::string> keys)
{
    for (std::string &k : keys) {
        texts_.push_back(std::make_unique<Key>(std::move(k)));
        keys_.push_back(texts_.back()->k);
    }
}


int
Request::decide(rl_redis_client_t *client)
{
    deciding_ = true;
    int rc = rl_redis_decide(client, keys_.data(), keys_.size(), done_cb,
                             this, &handle_);
    deciding_ = false;
    return rc;
}


void
Request::cancel(rl_redis_client_t *client)
{
    rl_redis_cancel(client, handle_);
    handle_ = nullptr;
}


void
Request::done_cb(void *data)
{
    Request *r = static_cast<Request *>(data);

    if (r->deciding_) {
        r->inside_ = true;
    }
    r->done_++;
    r->handle_ = nullptr;

    if (r->on_done) {
        r->on_done();
    }
}


std::string
one_sha()
{
    return ngx_http_rate_limit_script_one_sha1();
}


std::string
batch_sha()
{
    return ngx_http_rate_limit_batch_script_sha1();
}


std::string
multi_sha()
{
    return ngx_http_rate_limit_script_sha1();
}


std::string
refund_sha()
{
    return ngx_http_rate_limit_refund_script_sha1();
}


std::string
nodes_sha()
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_nodes_script(&len);
    char sha[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];

    ngx_http_rate_limit_sha1_hex(
        reinterpret_cast<const unsigned char *>(script), len, sha);
    return sha;
}


std::string
show(const Command &c)
{
    std::ostringstream out;

    for (size_t i = 0; i < c.size(); i++) {
        std::string a = c[i].size() > 40 ? c[i].substr(0, 40) + "..." : c[i];
        out << (i ? " " : "") << '"' << a << '"';
    }
    return out.str();
}


std::string
show(const std::vector<Command> &cs)
{
    std::string out;

    for (const Command &c : cs) {
        out += "[" + show(c) + "] ";
    }
    return cs.empty() ? "(no command)" : out;
}

}  // namespace rl_fake
