/*
 * The links: in each worker, one persistent, pipelined connection to each
 * Redis address, the one server or the masters of a Redis Cluster,
 * reconnected in the background with backoff, and probed while its
 * circuit is open; the RESP writer, the replies read with hiredis's
 * reader, the one timer, and the node heartbeat.
 */

#include "rl_redis_client.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdarg>
#include <cstddef>
#include <cstdio>
#include <cstring>


namespace rl {
namespace redis {

namespace {

/* what a reply object, and the link before it, need */
constexpr size_t  kAlign = alignof(redisReply) > alignof(Link *)
                           ? alignof(redisReply) : alignof(Link *);


size_t
align(size_t n) noexcept
{
    return (n + kAlign - 1) & ~(kAlign - 1);
}


/* written in place from its last digit: most are one or two digits long */
char *
decimal(char *p, uint64_t n) noexcept
{
    size_t len = 1;

    for (uint64_t rest = n; rest >= 10; rest /= 10) {
        len++;
    }

    char *end = p + len;

    do {
        *--end = static_cast<char>('0' + n % 10);
        n /= 10;
    } while (n);

    return p + len;
}


/*
 * Each object starts with its link: the reader's free function gets
 * nothing else.
 */
redisReply *
reply_object(const redisReadTask *task, int type, size_t extra) noexcept
{
    Link *link = static_cast<Link *>(task->privdata);
    void *mem;

    try {
        mem = link->arena.alloc(align(align(sizeof(Link *))
                                      + sizeof(redisReply) + extra));
    } catch (...) {
        return nullptr;
    }

    *static_cast<Link **>(mem) = link;

    /* the extra room is written by the caller: a string's bytes, or an
     * array's elements, which the reader fills one by one */
    auto *r = reinterpret_cast<redisReply *>(static_cast<char *>(mem)
                                             + align(sizeof(Link *)));
    *r = redisReply();
    r->type = type;

    if (task->parent) {
        auto *parent = static_cast<redisReply *>(task->parent->obj);
        parent->element[task->idx] = r;
    }

    return r;
}


void *
create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = reply_object(task, task->type, len + 1);

    if (r == nullptr) {
        return nullptr;
    }

    r->str = reinterpret_cast<char *>(r + 1);
    r->len = len;
    std::memcpy(r->str, str, len);
    r->str[len] = '\0';

    return r;
}


/* the count is an int in hiredis 0.14, a size_t in 1.x */
template <typename Count>
void *
create_array(const redisReadTask *task, Count elements)
{
    size_t n = elements > 0 ? static_cast<size_t>(elements) : 0;
    redisReply *r = reply_object(task, REDIS_REPLY_ARRAY,
                                 n * sizeof(redisReply *));

    if (r == nullptr) {
        return nullptr;
    }

    r->elements = n;
    r->element = n ? reinterpret_cast<redisReply **>(r + 1) : nullptr;

    /* whatever a cut reply leaves unread is a null element, never junk */
    if (n) {
        std::memset(static_cast<void *>(r->element), 0,
                    n * sizeof(redisReply *));
    }

    return r;
}


void *
create_integer(const redisReadTask *task, long long value)
{
    redisReply *r = reply_object(task, REDIS_REPLY_INTEGER, 0);

    if (r == nullptr) {
        return nullptr;
    }

    r->integer = value;

    return r;
}


void *
create_nil(const redisReadTask *task)
{
    return reply_object(task, REDIS_REPLY_NIL, 0);
}


/* a whole reply, or what was read of one */
void
free_object(void *reply)
{
    Link *link = *reinterpret_cast<Link **>(static_cast<char *>(reply)
                                            - align(sizeof(Link *)));

    link->arena.reset();
}


/* by member name: hiredis 1.x has more members, and in another order */
redisReplyObjectFunctions
reply_functions() noexcept
{
    redisReplyObjectFunctions fns{};

    fns.createString = create_string;
    fns.createArray = create_array;
    fns.createInteger = create_integer;
    fns.createNil = create_nil;
    fns.freeObject = free_object;

    return fns;
}


redisReplyObjectFunctions  reply_fns = reply_functions();


/* the resolver's answers carry no port: the host is what is compared */
bool
same_host(const sockaddr_storage &a, socklen_t alen, const sockaddr *b,
          socklen_t blen) noexcept
{
    if (alen == 0 || blen < sizeof(sockaddr_in)
        || a.ss_family != b->sa_family)
    {
        return false;
    }

    if (b->sa_family == AF_INET) {
        return std::memcmp(&reinterpret_cast<const sockaddr_in &>(a).sin_addr,
                           &reinterpret_cast<const sockaddr_in *>(b)->sin_addr,
                           sizeof(in_addr)) == 0;
    }

    return b->sa_family == AF_INET6 && blen >= sizeof(sockaddr_in6)
           && std::memcmp(
                  &reinterpret_cast<const sockaddr_in6 &>(a).sin6_addr,
                  &reinterpret_cast<const sockaddr_in6 *>(b)->sin6_addr,
                  sizeof(in6_addr)) == 0;
}


/* an answer's address with the link's port, and as text; false: not IP */
bool
with_port(const sockaddr *sa, socklen_t len, unsigned port,
          sockaddr_storage &out, socklen_t &outlen, char *text,
          size_t size) noexcept
{
    const void *addr;

    if (sa->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
        auto &in = reinterpret_cast<sockaddr_in &>(out);

        in = *reinterpret_cast<const sockaddr_in *>(sa);
        in.sin_port = htons(static_cast<uint16_t>(port));
        outlen = sizeof(sockaddr_in);
        addr = &in.sin_addr;

    } else if (sa->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
        auto &in6 = reinterpret_cast<sockaddr_in6 &>(out);

        in6 = *reinterpret_cast<const sockaddr_in6 *>(sa);
        in6.sin6_port = htons(static_cast<uint16_t>(port));
        outlen = sizeof(sockaddr_in6);
        addr = &in6.sin6_addr;

    } else {
        return false;
    }

    return inet_ntop(sa->sa_family, addr, text,
                     static_cast<socklen_t>(size)) != nullptr;
}


/* "redis.internal" of "redis.internal:6380", "::1" of "[::1]:6380" */
std::string
written_host(const std::string &address)
{
    if (!address.empty() && address[0] == '[') {
        size_t  end = address.find(']');

        return address.substr(1, end == std::string::npos ? end : end - 1);
    }

    size_t  colon = address.find(':');

    return colon != std::string::npos && address.rfind(':') == colon
               ? address.substr(0, colon)
               : address;
}


}  // namespace


/*
 * A numeric host and its port, or a unix socket path, as the address the
 * host connects to.  false: not numeric, or a path too long for
 * sockaddr_un.
 */
bool
socket_address(const char *host, unsigned port, const char *unix_path,
               sockaddr_storage &sa, socklen_t &len) noexcept
{
    if (unix_path) {
        auto &un = reinterpret_cast<sockaddr_un &>(sa);
        size_t n = std::strlen(unix_path);

        if (n >= sizeof(un.sun_path)) {
            return false;
        }

        un.sun_family = AF_UNIX;
        std::memcpy(un.sun_path, unix_path, n + 1);
        len = sizeof(sockaddr_un);
        return true;
    }

    auto &in = reinterpret_cast<sockaddr_in &>(sa);

    if (inet_pton(AF_INET, host, &in.sin_addr) == 1) {
        in.sin_family = AF_INET;
        in.sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof(sockaddr_in);
        return true;
    }

    auto &in6 = reinterpret_cast<sockaddr_in6 &>(sa);

    if (inet_pton(AF_INET6, host, &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof(sockaddr_in6);
        return true;
    }

    return false;
}


std::string
host_port(const char *host, unsigned port)
{
    std::string  text = std::strchr(host, ':') ? "[" + std::string(host) + "]"
                                               : std::string(host);

    return text + ":" + std::to_string(port);
}


void
append_arg(std::string &out, const char *s, size_t len)
{
    char digits[20];

    out += '$';
    out.append(digits, static_cast<size_t>(decimal(digits, len) - digits));
    out += "\r\n";
    out.append(s, len);
    out += "\r\n";
}


bool
is_noscript(const char *reason) noexcept
{
    return reason && std::strncmp(reason, "NOSCRIPT", 8) == 0;
}


/* Redis 7 keeps a script's error code; 6 wraps it in its own */
bool
is_readonly(const char *reason) noexcept
{
    return reason && (std::strncmp(reason, "READONLY", 8) == 0
                      || std::strstr(reason, "-READONLY ") != nullptr);
}


void
Fifo::reserve_one()
{
    if (count_ < slots_.size()) {
        return;
    }

    std::vector<Expect> bigger(std::max<size_t>(16, 2 * slots_.size()));

    for (size_t i = 0; i < count_; i++) {
        bigger[i] = std::move(slots_[(head_ + i) % slots_.size()]);
    }

    slots_.swap(bigger);
    head_ = 0;
}


void
Fifo::push(Expect &&e) noexcept
{
    slots_[(head_ + count_) % slots_.size()] = std::move(e);
    count_++;
}


Expect
Fifo::pop() noexcept
{
    Expect e = std::move(slots_[head_]);

    head_ = (head_ + 1) % slots_.size();
    count_--;

    return e;
}


void
Fifo::swap(Fifo &other) noexcept
{
    slots_.swap(other.slots_);
    std::swap(head_, other.head_);
    std::swap(count_, other.count_);
}


char *
Output::grow(size_t n)
{
    size_t used = end_ - start_;

    if (start_ && cap_ - used >= n) {
        std::memmove(buf_.get(), buf_.get() + start_, used);

    } else {
        size_t cap = std::max(2 * cap_, used + n);
        cap = std::max(cap, size_t{4096});

        std::unique_ptr<char[]> bigger = std::make_unique<char[]>(cap);

        if (used) {
            std::memcpy(bigger.get(), buf_.get() + start_, used);
        }

        buf_ = std::move(bigger);
        cap_ = cap;
    }

    start_ = 0;
    end_ = used;

    return buf_.get() + end_;
}


void
Output::consume(size_t n) noexcept
{
    start_ += std::min(n, end_ - start_);

    if (start_ == end_) {
        start_ = end_ = 0;
    }
}


void *
Arena::grow(size_t n)
{
    size_t size = std::max(kReplyBlock,
                           2 * (blocks_.empty() ? 0 : blocks_.back().size)
                           + n);

    blocks_.push_back(Block{std::make_unique<unsigned char[]>(size), size});

    next_ = blocks_.back().mem.get() + n;
    end_ = blocks_.back().mem.get() + size;

    return blocks_.back().mem.get();
}


void
Arena::reset() noexcept
{
    if (blocks_.empty()) {
        return;
    }

    if (blocks_.size() > 1) {
        std::swap(blocks_.front(), blocks_.back());
        blocks_.resize(1);
    }

    next_ = blocks_.front().mem.get();
    end_ = next_ + blocks_.front().size;
}


Client::Client(const rl_redis_config_t &config,
               const rl_redis_adapter_t &adapter)
    : ad_(adapter),
      db_(config.db),
      timeout_ms_(config.timeout_ms),
      cluster_(config.cluster != 0),
      shared_(config.shared)
{
    if (config.password && config.password_len) {
        password_.assign(config.password, config.password_len);
    }

    if (config.username && config.username_len) {
        username_.assign(config.username, config.username_len);
    }

    if (config.sentinel_master && config.sentinel_master_len) {
        sentinel_name_.assign(config.sentinel_master,
                              config.sentinel_master_len);
    }

    if (config.sentinel_password && config.sentinel_password_len) {
        sentinel_password_.assign(config.sentinel_password,
                                  config.sentinel_password_len);
    }

    if (config.sentinel_username && config.sentinel_username_len) {
        sentinel_username_.assign(config.sentinel_username,
                                  config.sentinel_username_len);
    }

    if (config.heartbeat_key) {
        hb_key_.assign(config.heartbeat_key, config.heartbeat_key_len);
        hb_id_.assign(config.heartbeat_id ? config.heartbeat_id : "",
                      config.heartbeat_id ? config.heartbeat_id_len : 0);
    }

    policy_ = config.failure_policy ? config.failure_policy : "";

    for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
        links_[i].index = i;
    }

    nodes_sha_[0] = '\0';
}


Client::~Client()
{
    destroying_ = true;

    for (Link &link : links_) {
        if (link.open) {
            close(link);
        }

        for (Op *op = link.batch, *next; op; op = next) {
            next = op->batch_next;
            std::unique_ptr<Op> drop(op);
        }

        link.batch = link.batch_tail = nullptr;

        if (link.reader) {
            redisReaderFree(link.reader);
            link.reader = nullptr;
        }
    }

    while (free_ops_) {
        Op *op = free_ops_;
        free_ops_ = op->free_next;
        std::unique_ptr<Op> drop(op);
    }
}


bool
Client::start(const rl_redis_config_t &config, char *err)
{
    if (cluster_) {
        maps_[0] = std::make_unique<ngx_http_rate_limit_cluster_map_t>();
        maps_[1] = std::make_unique<ngx_http_rate_limit_cluster_map_t>();
        map_ = maps_[0].get();
        next_map_ = maps_[1].get();

        refresh_at_ = now_ + kMapRefreshMs * 1000;
    }

    if (!hb_key_.empty()) {
        size_t len;
        const char *script = ngx_http_rate_limit_nodes_script(&len);

        ngx_http_rate_limit_sha1_hex(
            reinterpret_cast<const unsigned char *>(script), len, nodes_sha_);

        hb_slot_ = cluster_ ? ngx_http_rate_limit_cluster_slot(
                                  reinterpret_cast<const unsigned char *>(
                                      hb_key_.data()), hb_key_.size())
                            : 0;

        /* the first beat soon, once the connection is up */
        heartbeat_at_ = now_ + kHeartbeatFirstMs * 1000;
    }

    if (!sentinel_name_.empty()) {
        if (!sentinel_start(config, err)) {
            return false;
        }

    } else {
        for (size_t i = 0; i < config.nendpoints; i++) {
            if (seed_link(config.endpoints[i], err) == nullptr) {
                return false;
            }
        }
    }

    for (Link &link : links_) {
        if (link.used) {
            connect(link);
            resolve(link);
        }
    }

    return true;
}


/* a configured address's link; nullptr with a reason in err */
Link *
Client::seed_link(const rl_redis_endpoint_t &ep, char *err)
{
    if (ep.resolve && ad_.resolve == nullptr) {
        std::snprintf(err, RL_REDIS_ERR_LEN,
                      "the Redis address \"%s\" is a name, and the host "
                      "resolves none", ep.address ? ep.address : "");
        return nullptr;
    }

    Link *link = link_for(ep.host, ep.host ? std::strlen(ep.host) : 0,
                          ep.port, ep.unix_path, ep.address, ep.resolve != 0);
    if (link == nullptr) {
        std::snprintf(err, RL_REDIS_ERR_LEN,
                      "the Redis address \"%s\" cannot be used: it must be "
                      "numeric, and at most %d addresses are kept",
                      ep.address ? ep.address : "", RL_REDIS_ADDRESSES);
        return nullptr;
    }

    link->seed = true;

    return link;
}


void
Client::log(int level, const char *fmt, ...) noexcept
{
    char     line[1024];
    va_list  args, again;

    va_start(args, fmt);
    va_copy(again, args);

    int n = std::vsnprintf(line, sizeof(line), fmt, args);

    if (n >= 0 && static_cast<size_t>(n) >= sizeof(line)) {
        try {
            std::string big(static_cast<size_t>(n) + 1, '\0');
            std::vsnprintf(&big[0], big.size(), fmt, again);
            ad_.log(ad_.data, level, big.c_str());
            va_end(again);
            va_end(args);
            return;
        } catch (...) {
            /* the line cut short, rather than none */
        }
    }

    va_end(again);
    va_end(args);

    ad_.log(ad_.data, level, line);
}


/*
 * The link to an address, made on first use.  Cluster nodes are found in
 * replies, so only numeric hosts are taken: a name would need a blocking
 * lookup in the worker.  With resolve, the address is a name resolved at
 * run time: its link is its own, whatever address it has now (host, or
 * none yet).
 */
Link *
Client::link_for(const char *host, size_t len, unsigned port,
                 const char *unix_path, const char *address, bool resolve)
{
    Link *free = nullptr;

    for (Link &link : links_) {
        if (!link.used) {
            if (free == nullptr) {
                free = &link;
            }

            continue;
        }

        if (!resolve && !link.resolve && unix_path == nullptr
            && link.unix_path.empty() && link.port == port
            && std::strlen(link.host) == len
            && std::memcmp(link.host, host, len) == 0)
        {
            return &link;
        }
    }

    if (free == nullptr || len >= sizeof(free->host)) {
        return nullptr;
    }

    char name[sizeof(free->host)];

    if (len) {
        std::memcpy(name, host, len);
    }

    name[len] = '\0';

    sockaddr_storage sa = {};
    socklen_t salen = 0;

    if (!(resolve && len == 0)
        && !socket_address(name, port, unix_path, sa, salen))
    {
        return nullptr;
    }

    std::string text;

    if (address) {
        text = address;

    } else {
        /* a cluster node's, for logs and metrics */
        text = host_port(name, port);
    }

    Link &link = *free;

    link.unix_path = unix_path ? unix_path : "";
    link.name = unix_path ? "" : address ? written_host(address) : name;
    link.address = std::move(text);
    std::memcpy(link.host, name, len + 1);
    link.port = port;
    link.sockaddr = sa;
    link.socklen = salen;
    link.used = true;
    link.seed = false;
    link.retired = false;
    link.resolve = resolve;
    link.circuit = nullptr;
    link.backoff_ms = 0;

    return &link;
}


void
Client::connect(Link &link)
{
    if (link.circuit == nullptr && !link.sentinel) {
        link.circuit = circuit_get(link.address);
    }

    /* a name with no address yet: its answer connects */
    if (link.socklen == 0) {
        resolve(link);
        return;
    }

    /* a sentinel's master: the host names the address it connects to */
    if (!sentinel_name_.empty() && link.index == 0) {
        try {
            master_conn_ = host_port(link.host, link.port);
            link.name = link.host;
            link.peer = link.address + " at " + master_conn_;
        } catch (...) {
            failure(link, true, "out of memory");
            schedule(link);
            return;
        }
    }

    redisReader *reader = redisReaderCreateWithFunctions(&reply_fns);

    if (reader == nullptr) {
        failure(link, true, "out of memory");
        schedule(link);
        return;
    }

    reader->privdata = &link;

    rl_redis_endpoint_t ep;
    ep.host = link.unix_path.empty() ? link.host : nullptr;
    ep.port = link.port;
    ep.unix_path = link.unix_path.empty() ? nullptr : link.unix_path.c_str();
    ep.address = link.peer.empty() ? link.address.c_str()
                                   : link.peer.c_str();
    ep.name = link.unix_path.empty() ? link.name.c_str() : nullptr;
    ep.sockaddr = reinterpret_cast<const sockaddr *>(&link.sockaddr);
    ep.socklen = link.socklen;

    char err[RL_REDIS_ERR_LEN];
    err[0] = '\0';

    if (ad_.open(ad_.data, link.index, &ep, err) != RL_REDIS_OK) {
        redisReaderFree(reader);
        err[RL_REDIS_ERR_LEN - 1] = '\0';
        failure(link, true, err);
        schedule(link);
        return;
    }

    link.reader = reader;
    link.open = true;
    link.connected = false;
    link.ready = false;
    link.pending = 0;

    set_link_timer(link.connect_deadline, now_ + kConnectTimeoutMs * 1000);

    setup(link);
}


void
Client::schedule(Link &link)
{
    if (destroying_ || link.retired || link.reconnect_at) {
        return;
    }

    link.backoff_ms = link.backoff_ms
                      ? std::min(link.backoff_ms * 2, kBackoffMaxMs)
                      : kBackoffMinMs;

    set_link_timer(link.reconnect_at, now_ + link.backoff_ms * 1000);
}


/*
 * Written before the connect completes.  Nothing else goes out before AUTH
 * and SELECT have answered: a command pipelined behind a SELECT that
 * fails would write into database 0.
 */
void
Client::setup(Link &link)
{
    if (link.sentinel) {
        sentinel_setup(link);
        return;
    }

    size_t at = link.out.mark();

    try {
        auth(link, username_, password_);

        if (db_) {
            begin(link);
            header(link, 2);
            arg(link, "SELECT", 6);
            arg(link, db_);
            Expect e;
            e.name = "SELECT";
            commit(link, std::move(e));
        }

        /* a sentinel's master may be one no longer */
        if (!sentinel_name_.empty()) {
            begin(link);
            header(link, 1);
            arg(link, "ROLE", 4);
            Expect e;
            e.kind = Expect_kind::role;
            commit(link, std::move(e));
        }

    } catch (...) {
        link.out.truncate(at);

        /* a link without its AUTH or SELECT is never used */
        failure(link, true, "out of memory");
        close(link);
        return;
    }

    link.progress_us = now_;

    if (link.pending == 0) {
        ready(link);
    }
}


/* an ACL user may have no password: AUTH it all the same; none without
 * either.  May throw std::bad_alloc. */
void
Client::auth(Link &link, const std::string &username,
             const std::string &password)
{
    if (password.empty() && username.empty()) {
        return;
    }

    begin(link);
    header(link, username.empty() ? 2 : 3);
    arg(link, "AUTH", 4);

    if (!username.empty()) {
        arg(link, username.data(), username.size());
    }

    arg(link, password.data(), password.size());
    Expect e;
    e.name = "AUTH";
    commit(link, std::move(e));
}


/* the link takes commands: the decisions that waited for it go out now */
void
Client::ready(Link &link)
{
    link.ready = true;

    load_script(link, "SCRIPT LOAD");

    if (link.batch) {
        post_batches();
    }
}


/*
 * Every script the client sends with EVALSHA.  name tells a new
 * connection's load, which proves that Redis answers again, from a load
 * after NOSCRIPT, which proves nothing.
 */
void
Client::load_script(Link &link, const char *name)
{
    const char *text[5];
    size_t len[5];
    size_t n = 0;

    text[n] = ngx_http_rate_limit_script_one(&len[n]);
    n++;
    text[n] = ngx_http_rate_limit_script(&len[n]);
    n++;
    text[n] = ngx_http_rate_limit_batch_script(&len[n]);
    n++;
    text[n] = ngx_http_rate_limit_refund_script(&len[n]);
    n++;

    if (!hb_key_.empty()) {
        text[n] = ngx_http_rate_limit_nodes_script(&len[n]);
        n++;
    }

    for (size_t i = 0; i < n; i++) {
        const char *argv[2] = { "LOAD", text[i] };
        size_t argvlen[2] = { 4, len[i] };

        (void) queue_internal(link, name, "SCRIPT", argv, argvlen, 2);
    }
}


/* room for what the command expects, before it is written */
void
Client::begin(Link &link)
{
    link.fifo.reserve_one();
}


void
Client::header(Link &link, size_t argc)
{
    char *p = link.out.room(24);
    char *start = p;

    *p++ = '*';
    p = decimal(p, argc);
    *p++ = '\r';
    *p++ = '\n';

    link.out.advance(static_cast<size_t>(p - start));
}


void
Client::arg(Link &link, const char *s, size_t len)
{
    char *p = link.out.room(len + 26);
    char *start = p;

    *p++ = '$';
    p = decimal(p, len);
    *p++ = '\r';
    *p++ = '\n';

    if (len) {
        std::memcpy(p, s, len);
        p += len;
    }

    *p++ = '\r';
    *p++ = '\n';

    link.out.advance(static_cast<size_t>(p - start));
}


void
Client::raw(Link &link, const std::string &bytes)
{
    char *p = link.out.room(bytes.size());

    std::memcpy(p, bytes.data(), bytes.size());
    link.out.advance(bytes.size());
}


void
Client::arg(Link &link, uint64_t n)
{
    char digits[20];

    arg(link, digits, static_cast<size_t>(decimal(digits, n) - digits));
}


/* the stall detector counts replies owed */
void
Client::commit(Link &link, Expect &&e) noexcept
{
    link.fifo.push(std::move(e));

    if (link.pending++ == 0) {
        link.progress_us = now_;
    }

    if (!link.want) {
        link.want = true;
        ad_.want_write(ad_.data, link.index);
    }
}


/* a command of the connection's own: name says which, in the log */
bool
Client::queue_internal(Link &link, const char *name, const char *cmd,
                       const char *const *argv, const size_t *argvlen,
                       size_t argc)
{
    Expect e;
    e.name = name;

    return queue(link, argc + 1, std::move(e), [&] {
        arg(link, cmd, std::strlen(cmd));

        for (size_t i = 0; i < argc; i++) {
            arg(link, argv[i], argvlen[i]);
        }
    });
}


/*
 * After NOSCRIPT, a refund or a heartbeat goes once more with the script's
 * text: EVAL takes the same arguments after it as EVALSHA after the SHA-1.
 */
bool
Client::send_eval_again(Link &link, Expect_kind kind, const char *name,
                        const char *script, size_t script_len,
                        const Expect &sent)
{
    Expect e;
    e.kind = kind;
    e.name = name;

    return queue(link, 2 + sent.resend_argc, std::move(e), [&] {
        arg(link, "EVAL", 4);
        arg(link, script, script_len);
        raw(link, sent.resend);
    });
}


/* hiredis calls back every pending reply with NULL, then cleans up */
void
Client::close(Link &link)
{
    if (!link.open) {
        return;
    }

    /* new requests fail at once instead of joining a dying connection */
    link.open = false;
    link.connected = false;
    link.ready = false;

    ad_.close(ad_.data, link.index);

    teardown(link, nullptr);
}


/* the reply stream is broken: as hiredis, the connection is dropped */
void
Client::peer_error(Link &link, const char *reason)
{
    char copy[RL_REDIS_ERR_LEN];

    std::snprintf(copy, sizeof(copy), "%s", reason);

    link.open = false;
    link.connected = false;
    link.ready = false;

    ad_.close(ad_.data, link.index);

    teardown(link, copy);
}


/*
 * Every reply owed gets none, then reason, when there is one, is the hard
 * failure of a connection that was up, and the link reconnects.
 */
void
Client::teardown(Link &link, const char *reason)
{
    Fifo owed;
    owed.swap(link.fifo);

    /* the connection that had replies owed is gone: the next one goes to
     * the new address */
    link.moving = false;
    clear_link_timer(link.move_at);
    link.out.clear();
    link.want = false;
    link.pending = 0;

    if (link.reader) {
        if (link.reading && link.dead_reader == nullptr) {
            link.dead_reader = link.reader;
        } else {
            redisReaderFree(link.reader);
        }

        link.reader = nullptr;
    }

    while (!owed.empty()) {
        Expect e = owed.pop();
        drop(link, e);
    }

    if (reason && !destroying_) {
        failure(link, true, reason);
    }

    clear_link_timer(link.connect_deadline);

    /* decisions that waited for AUTH and SELECT go to on_failure now */
    if (link.batch && !destroying_) {
        post_batches();
    }

    schedule(link);
}


void
Client::connect_timeout(Link &link)
{
    if (link.connected) {
        return;
    }

    failure(link, true, "connect timed out");
    close(link);
}


/*
 * Replies owed and none coming for long: Redis is frozen, or the path to
 * it is gone; start afresh.  Not before the newest decision has had its
 * whole timeout, which the drop would cut short.
 */
void
Client::check_stall(Link &link)
{
    uint64_t stall_us = std::max(kStallMinMs, timeout_ms_) * 1000;

    if (!link.open || link.pending == 0
        || now_ - link.progress_us < stall_us
        || now_ - link.asked_us < timeout_ms_ * 1000)
    {
        return;
    }

    char reason[64];

    std::snprintf(reason, sizeof(reason), "no reply for %llu ms",
                  static_cast<unsigned long long>(
                      (now_ - link.progress_us) / 1000));

    close(link);
    failure(link, true, reason);
}


void
Client::failure(Link &link, bool hard, const char *reason)
{
    if (destroying_) {
        return;
    }

    if (link.sentinel) {
        sentinel_down(link, hard, reason);
        return;
    }

    circuit_failure(link.circuit, hard, reason);

    /* a master lost: its replica may have taken over the slots; a name
     * may have moved, a sentinel's master may have changed */
    if (hard) {
        ask_map(kMapMinGapMs);
        resolve(link);
    }

    /* a demoted master: its ROLE keeps decisions away until it moves */
    if (!sentinel_name_.empty() && (hard || is_readonly(reason))) {
        sentinel_doubt(hard ? nullptr : "is read only");

        if (!hard) {
            check_role(link);
        }
    }

    if (link.circuit && link.circuit->open.load() && !link.watch_at) {
        set_link_timer(link.watch_at, now_ + kWatchMs * 1000);
    }
}


/*
 * While the circuit is open, the workers that saw it open take turns to
 * probe, with or without traffic, so that it closes as soon as Redis
 * answers and not with the next request.
 */
void
Client::watch(Link &link)
{
    bool probe_now;

    if (destroying_ || link.retired
        || circuit_allow(link.circuit, &probe_now))
    {
        return;
    }

    if (probe_now) {
        probe(link);
    }

    /* a lost master's replica takes over in seconds: look for it */
    ask_map(kMapLostGapMs);

    if (!link.watch_at) {
        set_link_timer(link.watch_at, now_ + kWatchMs * 1000);
    }
}


/*
 * While the circuit is open, the script for one key on this worker's
 * connection tells whether Redis decides again in time; no request waits
 * for it.  A PING would pass where the script fails (a server, or a proxy
 * in front of several, that answers NOSCRIPT).  With no key and a blocked
 * limit, the script reads and writes nothing.  Without a connection, the
 * reconnection in the background is the probe.
 */
void
Client::probe(Link &link)
{
    if (!link.connected || link.probing) {
        return;
    }

    Expect e;
    e.kind = Expect_kind::probe;
    e.seq = ++link.probe_seq;

    if (!queue(link, 6, std::move(e), [&] {
            arg(link, "EVALSHA", 7);
            arg(link, ngx_http_rate_limit_script_one_sha1(),
                NGX_HTTP_RATE_LIMIT_SHA1_HEX);
            arg(link, "0", 1);
            arg(link, "0", 1);
            arg(link, "0", 1);
            arg(link, "1", 1);
        }))
    {
        return;
    }

    link.probing = true;
    set_link_timer(link.probe_deadline, now_ + timeout_ms_ * 1000);
}


void
Client::probe_reply(Link &link, uint64_t seq, const redisReply *reply)
{
    /* a reply later than the timeout proves nothing about the next ones */
    if (!link.probing || seq != link.probe_seq || destroying_) {
        return;
    }

    link.probing = false;
    clear_link_timer(link.probe_deadline);

    if (reply == nullptr) {
        failure(link, false, "connection lost");
        return;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        circuit_success(link.circuit);
        return;
    }

    /* one load, for the next probe; a NOSCRIPT after it is a failure */
    if (is_noscript(reply->str)) {
        load_script(link, "SCRIPT LOAD again");
    }

    failure(link, false, reply->str);
}


void
Client::probe_timeout(Link &link)
{
    link.probing = false;

    failure(link, false, "probe timed out");
    check_stall(link);
}


/*
 * The host is asked for the addresses of the link's name, unless it is
 * already; the answer comes in a later event.
 */
void
Client::resolve(Link &link)
{
    if (!link.resolve || link.resolving || destroying_) {
        return;
    }

    clear_link_timer(link.resolve_at);

    char err[RL_REDIS_ERR_LEN];
    err[0] = '\0';

    if (ad_.resolve(ad_.data, link.index, link.name.c_str(), err)
        != RL_REDIS_OK)
    {
        err[RL_REDIS_ERR_LEN - 1] = '\0';
        resolve_failed(link, err);
        return;
    }

    link.resolving = true;
}


/* the link keeps its address, and asks again with backoff; logged once */
void
Client::resolve_failed(Link &link, const char *reason)
{
    if (link.resolve_backoff_ms == 0) {
        log(RL_REDIS_LOG_ERR,
            "rate_limit_redis \"%s\": resolving \"%s\" failed (%s), %s%s",
            link.address.c_str(), link.name.c_str(), reason,
            link.host[0] ? "the link stays at " : "no address yet",
            link.host);
    }

    link.resolve_backoff_ms = link.resolve_backoff_ms
                              ? std::min(link.resolve_backoff_ms * 2,
                                         kResolveRetryMaxMs)
                              : kResolveRetryMinMs;

    set_link_timer(link.resolve_at, now_ + link.resolve_backoff_ms * 1000);
}


/*
 * The name's addresses: while the link's is among them, nothing changes;
 * else the link moves to the first.  The name is asked again once the
 * answer's validity runs out.
 */
void
Client::on_resolved(unsigned index, const sockaddr *const *addrs,
                    const socklen_t *lens, size_t n, uint64_t valid_ms,
                    const char *err)
{
    Link &link = links_[index];
    sockaddr_storage sa = {};
    socklen_t salen = 0;
    char ip[INET6_ADDRSTRLEN];

    if (!link.resolving) {
        return;
    }

    link.resolving = false;

    bool same = false;

    for (size_t i = 0; i < std::min<size_t>(n, RL_REDIS_RESOLVED) && !same;
         i++)
    {
        same = same_host(link.sockaddr, link.socklen, addrs[i], lens[i]);

        if (salen == 0
            && !with_port(addrs[i], lens[i], link.port, sa, salen, ip,
                          sizeof(ip)))
        {
            salen = 0;
        }
    }

    if (!same && salen == 0) {
        resolve_failed(link, err ? err : "no IP address");
        return;
    }

    link.resolve_backoff_ms = 0;
    set_link_timer(link.resolve_at,
                   now_ + std::clamp(valid_ms, kResolveMinMs, kResolveMaxMs)
                          * 1000);

    if (same) {
        return;
    }

    if (link.host[0]) {
        log(RL_REDIS_LOG_NOTICE,
            "rate_limit_redis \"%s\": \"%s\" moved from %s to %s, the "
            "link follows", link.address.c_str(), link.name.c_str(),
            link.host, ip);

    } else {
        log(RL_REDIS_LOG_INFO, "rate_limit_redis \"%s\": \"%s\" is %s",
            link.address.c_str(), link.name.c_str(), ip);
    }

    std::snprintf(link.host, sizeof(link.host), "%s", ip);
    link.sockaddr = sa;
    link.socklen = salen;

    move(link, true);
}


/*
 * To the link's new address: at once when no reply is owed on the old
 * one, or without drain.  Else the link sends nothing more until the
 * replies owed are in, or until the newest decision sent on it is over
 * (answered or timed out), and the decisions that come meanwhile wait in
 * its batch for the new connection.
 */
void
Client::move(Link &link, bool drain)
{
    if (drain && link.ready && link.pending) {
        if (!link.moving) {
            link.moving = true;
            set_link_timer(link.move_at, std::max(now_ + 1,
                           link.asked_us + timeout_ms_ * 1000));
        }

        return;
    }

    close(link);
    clear_link_timer(link.reconnect_at);
    connect(link);
}


/*
 * One worker of each node sends the heartbeat, to the link of its key and
 * only while that answers; Redis replies with the live node count.
 */
void
Client::heartbeat()
{
    heartbeat_at_ = now_ + kHeartbeatMs * 1000;

    if (hb_pending_) {
        return;
    }

    Link *link = route(hb_slot_);

    if (link == nullptr || !link->connected
        || (link->circuit && link->circuit->open.load()))
    {
        return;
    }

    /* what EVAL would take after the script's text, kept for NOSCRIPT */
    Expect e;
    e.kind = Expect_kind::heartbeat;
    e.resend_argc = 4;

    try {
        append_arg(e.resend, "1", 1);
        append_arg(e.resend, hb_key_.data(), hb_key_.size());
        append_arg(e.resend, hb_id_.data(), hb_id_.size());
        append_arg(e.resend, kNodeExpiry, sizeof(kNodeExpiry) - 1);
    } catch (...) {
        return;
    }

    /* e moves into the link's FIFO only once its arguments are written */
    if (!queue(*link, 2 + e.resend_argc, std::move(e), [&] {
            arg(*link, "EVALSHA", 7);
            arg(*link, nodes_sha_, NGX_HTTP_RATE_LIMIT_SHA1_HEX);
            raw(*link, e.resend);
        }))
    {
        return;
    }

    hb_pending_ = true;
}


void
Client::heartbeat_reply(Link &link, Expect &e, const redisReply *reply)
{
    if (reply && !destroying_ && reply->type == REDIS_REPLY_ERROR
        && !e.resend.empty() && is_noscript(reply->str))
    {
        size_t len;
        const char *script = ngx_http_rate_limit_nodes_script(&len);

        load_script(link, "SCRIPT LOAD again");

        if (send_eval_again(link, Expect_kind::heartbeat, nullptr, script,
                            len, e))
        {
            return;
        }
    }

    hb_pending_ = false;

    if (reply == nullptr || destroying_ || shared_ == nullptr
        || reply->type != REDIS_REPLY_INTEGER || reply->integer < 1)
    {
        return;
    }

    shared_->nodes.store(static_cast<uint64_t>(reply->integer),
                         std::memory_order_relaxed);
}


void
Client::internal_reply(Link &link, Expect &e, const redisReply *reply)
{
    if (reply == nullptr || destroying_) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && !link.ready) {
        /*
         * AUTH or SELECT failed: the connection is a failed one, and its
         * reason is logged with the circuit that it opens, once
         */
        char reason[RL_REDIS_ERR_LEN];

        std::snprintf(reason, sizeof(reason), "%s failed: %.*s", e.name,
                      static_cast<int>(reply->len), reply->str);

        failure(link, true, reason);
        close(link);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        /* the script cache was emptied: the refund goes with its text */
        if (!e.resend.empty() && is_noscript(reply->str)) {
            size_t len;
            const char *script = ngx_http_rate_limit_refund_script(&len);

            load_script(link, "SCRIPT LOAD again");

            if (send_eval_again(link, Expect_kind::internal, e.name, script,
                                len, e))
            {
                return;
            }
        }

        /* the name says the command; Redis's message never holds secrets */
        log(RL_REDIS_LOG_ERR, "rate_limit_redis \"%s\": %s failed: %.*s",
            link.address.c_str(), e.name, static_cast<int>(reply->len),
            reply->str);
        return;
    }

    /* the last of AUTH and SELECT: ready, unless ROLE is still owed */
    if (!link.ready) {
        if (link.pending == 0) {
            ready(link);
        }

        return;
    }

    /* the last command of a new connection: Redis answers again */
    if (std::strcmp(e.name, "SCRIPT LOAD") == 0) {
        link.backoff_ms = 0;
        circuit_success(link.circuit);

        if (map_ && map_->nnodes == 0) {
            ask_map(0);
        }
    }
}


/* a reply that came: what its command expected says what it means */
void
Client::dispatch(Link &link, const redisReply *reply)
{
    /* a sentinel's message is no command's reply */
    if (link.sentinel && sentinel_message(link, reply)) {
        return;
    }

    if (link.fifo.empty()) {
        /* as hiredis: a reply no command asked for breaks the stream */
        peer_error(link, reply->type == REDIS_REPLY_ERROR
                         ? reply->str : "unexpected reply");
        return;
    }

    Expect e = link.fifo.pop();

    link.pending--;
    link.progress_us = now_;

    switch (e.kind) {

    case Expect_kind::internal:
        if (link.sentinel) {
            sentinel_internal(link, e, reply);
        } else {
            internal_reply(link, e, reply);
        }

        break;

    case Expect_kind::probe:
        probe_reply(link, e.seq, reply);
        break;

    case Expect_kind::op:
        op_reply(link, e.ops, reply);
        break;

    case Expect_kind::batch:
        batch_reply(link, e.ops, reply);
        break;

    case Expect_kind::slots:
        slots_reply(link, reply);
        break;

    case Expect_kind::heartbeat:
        heartbeat_reply(link, e, reply);
        break;

    case Expect_kind::role:
        role_reply(link, reply);
        break;

    case Expect_kind::sentinel:
        sentinel_answer(link, reply);
        break;
    }

    /* the last reply owed on a link that moves: it moves now */
    if (link.moving && link.pending == 0) {
        move(link, false);
    }
}


/* the connection is gone with the reply owed: none comes */
void
Client::drop(Link &link, Expect &e)
{
    switch (e.kind) {

    case Expect_kind::internal:
        break;

    case Expect_kind::probe:
        probe_reply(link, e.seq, nullptr);
        break;

    case Expect_kind::op:
        op_reply(link, e.ops, nullptr);
        break;

    case Expect_kind::batch:
        batch_reply(link, e.ops, nullptr);
        break;

    case Expect_kind::slots:
        refreshing_ = false;
        break;

    case Expect_kind::heartbeat:
        heartbeat_reply(link, e, nullptr);
        break;

    case Expect_kind::role:
        role_checking_ = false;
        break;

    case Expect_kind::sentinel:
        link.asking = false;
        clear_link_timer(link.probe_deadline);
        break;
    }
}


void
Client::on_connected(unsigned index)
{
    Link &link = links_[index];

    if (!link.open) {
        return;
    }

    link.connected = true;
    clear_link_timer(link.connect_deadline);
}


void
Client::on_data(unsigned index, const char *data, size_t len)
{
    Link &link = links_[index];
    redisReader *reader = link.reader;

    if (!link.open || reader == nullptr) {
        return;
    }

    if (redisReaderFeed(reader, data, len) != REDIS_OK) {
        peer_error(link, "out of memory");
        return;
    }

    link.reading = true;

    for ( ;; ) {
        void *r = nullptr;

        if (redisReaderGetReply(reader, &r) != REDIS_OK) {
            peer_error(link, reader->errstr);
            break;
        }

        if (r == nullptr) {
            break;
        }

        dispatch(link, static_cast<const redisReply *>(r));
        link.arena.reset();

        /* the connection was closed meanwhile: the rest is dropped */
        if (link.reader != reader) {
            break;
        }
    }

    link.reading = false;

    if (link.dead_reader) {
        redisReaderFree(link.dead_reader);
        link.dead_reader = nullptr;
    }
}


void
Client::on_closed(unsigned index, const char *reason)
{
    Link &link = links_[index];

    if (!link.open) {
        return;
    }

    bool was_connected = link.connected;

    link.open = false;
    link.connected = false;
    link.ready = false;

    /* a connect that failed is the failure; a lost one, after its replies */
    if (!was_connected) {
        failure(link, true, reason);
    }

    teardown(link, was_connected ? reason : nullptr);
}


void
Client::output(unsigned index, const char **data, size_t *len)
{
    Link &link = links_[index];

    *data = link.out.data();
    *len = link.out.size();

    if (*len == 0) {
        link.want = false;
    }
}


void
Client::output_sent(unsigned index, size_t n)
{
    Link &link = links_[index];

    link.out.consume(n);

    if (link.out.size() == 0) {
        link.want = false;
    }
}


void
Client::set_link_timer(uint64_t &field, uint64_t at) noexcept
{
    field = at;

    if (at < link_min_) {
        link_min_ = at;
    }
}


void
Client::clear_link_timer(uint64_t &field) noexcept
{
    if (field) {
        field = 0;
        link_timers_dirty_ = true;
    }
}


void
Client::post_batches() noexcept
{
    if (!posted_) {
        posted_ = true;
        ad_.post(ad_.data);
    }
}


void
Client::on_timer()
{
    armed_ = false;

    /* the requests' timeouts come in the order they were sent */
    while (tq_head_ && tq_head_->deadline_us <= now_) {
        op_timeout(*tq_head_);
    }

    for (Link &link : links_) {
        if (!link.used) {
            continue;
        }

        if (link.reconnect_at && link.reconnect_at <= now_) {
            link.reconnect_at = 0;
            connect(link);
        }

        if (link.connect_deadline && link.connect_deadline <= now_) {
            link.connect_deadline = 0;
            connect_timeout(link);
        }

        if (link.probe_deadline && link.probe_deadline <= now_) {
            link.probe_deadline = 0;

            if (link.sentinel) {
                sentinel_timeout(link);
            } else {
                probe_timeout(link);
            }
        }

        /*
         * While the circuit is open no decision is sent, so no request's
         * timeout looks at the connection: the watch does.
         */
        if (link.watch_at && link.watch_at <= now_) {
            link.watch_at = 0;
            check_stall(link);
            watch(link);
        }

        if (link.resolve_at && link.resolve_at <= now_) {
            link.resolve_at = 0;
            resolve(link);
        }

        if (link.move_at && link.move_at <= now_) {
            link.move_at = 0;
            move(link, false);
        }
    }

    link_timers_dirty_ = true;

    if (refresh_at_ && refresh_at_ <= now_) {
        refresh_at_ = now_ + kMapRefreshMs * 1000;
        ask_map(kMapMinGapMs);
    }

    if (heartbeat_at_ && heartbeat_at_ <= now_) {
        heartbeat();
    }

    if (sentinel_ask_at_ && sentinel_ask_at_ <= now_) {
        sentinel_ask_at_ = 0;
        sentinel_ask();
    }
}


void
Client::arm() noexcept
{
    if (destroying_) {
        return;
    }

    if (link_timers_dirty_) {
        link_timers_dirty_ = false;
        link_min_ = kNever;

        for (const Link &link : links_) {
            for (uint64_t at : { link.reconnect_at, link.connect_deadline,
                                 link.probe_deadline, link.watch_at,
                                 link.resolve_at, link.move_at })
            {
                if (at && at < link_min_) {
                    link_min_ = at;
                }
            }
        }
    }

    uint64_t at = link_min_;

    if (refresh_at_ && refresh_at_ < at) {
        at = refresh_at_;
    }

    if (heartbeat_at_ && heartbeat_at_ < at) {
        at = heartbeat_at_;
    }

    if (sentinel_ask_at_ && sentinel_ask_at_ < at) {
        at = sentinel_ask_at_;
    }

    if (tq_head_ && tq_head_->deadline_us < at) {
        at = tq_head_->deadline_us;
    }

    bool hold = tq_head_ != nullptr;

    if (armed_ && at >= armed_at_ && hold == armed_hold_) {
        return;
    }

    if (at == kNever) {
        if (!armed_) {
            return;
        }

        /* only the hold changed: the timer stays, and lets nginx quit */
        at = armed_at_;
    }

    uint64_t delay_ms = at > now_ ? (at - now_ + 999) / 1000 : 0;

    ad_.set_timer(ad_.data, delay_ms, hold ? 1 : 0);

    armed_ = true;
    armed_at_ = at;
    armed_hold_ = hold;
}

}  // namespace redis
}  // namespace rl
