/*
 * The core's Redis client behind rl_redis.h: what its sources share, and
 * only they.  One client per worker, driven from one thread; the host
 * moves the bytes (see rl_redis_adapter_t).
 */

#ifndef RL_REDIS_CLIENT_H_INCLUDED_
#define RL_REDIS_CLIENT_H_INCLUDED_


#include "rl_redis.h"

#include <hiredis/hiredis.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>


namespace rl {
namespace redis {

static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "the shared counters are lock-free atomics");
static_assert(std::atomic<int>::is_always_lock_free,
              "the shared flags are lock-free atomics");


/* an address's circuit, shared by the workers of a node */
struct Circuit {
    /* written once, under the host's lock, before ncircuits counts it */
    char                   address[RL_REDIS_ADDRESS_LEN] = {};
    std::atomic<int>       up{0};
    std::atomic<int>       open{0};
    std::atomic<uint64_t>  failures{0};
    std::atomic<uint64_t>  probe_at{0};   /* ms of the client's clock */
    std::atomic<uint64_t>  backoff{0};    /* ms between probes */
    std::atomic<uint64_t>  opened{0};
    std::atomic<uint64_t>  closed{0};
};

}  // namespace redis
}  // namespace rl


struct rl_redis_shared_s {
    std::atomic<uint64_t>  ncircuits{0};
    rl::redis::Circuit     circuits[RL_REDIS_ADDRESSES];
    std::atomic<uint64_t>  nodes{0};
    std::atomic<uint64_t>  latency[RL_REDIS_LATENCY_BOUNDS + 1] = {};
    std::atomic<uint64_t>  latency_sum_us{0};
};


namespace rl {
namespace redis {

/* every constant of the C client it replaces, unchanged */
constexpr uint64_t  kConnectTimeoutMs = 1000;
constexpr uint64_t  kBackoffMinMs = 50;
constexpr uint64_t  kBackoffMaxMs = 1000;
/* replies owed for this long with none arriving, or for timeout when that
 * is longer: the connection is stuck */
constexpr uint64_t  kStallMinMs = 1000;
/* how often a worker looks whether an open circuit is due for a probe */
constexpr uint64_t  kWatchMs = 100;
constexpr uint64_t  kMapRefreshMs = 10000;
constexpr uint64_t  kMapMinGapMs = 100;
constexpr uint64_t  kMapLostGapMs = 500;
/* a key moving twice while one decision is made is a cluster in flux */
constexpr unsigned  kRedirectsMax = 3;
constexpr uint64_t  kHeartbeatFirstMs = 100;
constexpr uint64_t  kHeartbeatMs = 1000;
/* silence after which a node no longer counts: a few missed heartbeats */
constexpr char      kNodeExpiry[] = "5000";
/* ops and requests kept for reuse: no allocation a request while the load
 * is steady, and no more kept than that after a burst */
constexpr unsigned  kFreeOps = 1024;
/* timeouts or errors in a row that open a closed circuit */
constexpr uint64_t  kCircuitFailures = 5;
constexpr uint64_t  kProbeMinMs = 100;
constexpr uint64_t  kProbeMaxMs = 1000;
/* a host name's answer is asked again no sooner than this after the last,
 * and after a failed one, with this backoff */
constexpr uint64_t  kResolveMinMs = 100;
constexpr uint64_t  kResolveRetryMinMs = 1000;
constexpr uint64_t  kResolveRetryMaxMs = 10000;
/* and at least this often, whatever the answer's validity */
constexpr uint64_t  kResolveMaxMs = 3600 * 1000;
/* the sentinels are asked again no sooner than this after the last time,
 * and this often while no master is known */
constexpr uint64_t  kSentinelAskGapMs = 100;
constexpr uint64_t  kSentinelRetryMs = 1000;
/* the first block of a link's arena: a batch's reply fits in it */
constexpr size_t    kReplyBlock = 8192;

constexpr uint64_t  kNever = UINT64_MAX;


struct Link;
struct Request;


/* an argument in RESP, appended to out: kept aside to be sent again */
void append_arg(std::string &out, const char *s, size_t len);
/* the script cache was emptied: a restart, a failover, a flush */
bool is_noscript(const char *reason) noexcept;
/* a replica's answer to a write: the master it was is one no longer */
bool is_readonly(const char *reason) noexcept;
/* a numeric host and its port, or a unix socket path, as the address to
 * connect to; false: not numeric, or a path too long for sockaddr_un */
bool socket_address(const char *host, unsigned port, const char *unix_path,
                    sockaddr_storage &sa, socklen_t &len) noexcept;
/* "host:port", "[v6]:port": for logs and metrics */
std::string host_port(const char *host, unsigned port);


/* one script call: the keys of one request that share a slot */
struct Op {
    Request   *request = nullptr;      /* nullptr once over or detached */
    Link      *link = nullptr;
    Op        *req_next = nullptr;     /* the ops of its request */
    Op        *batch_next = nullptr;   /* a link's batch, or one call's */
    Op        *free_next = nullptr;
    Op        *tq_prev = nullptr;      /* the timeout queue */
    Op        *tq_next = nullptr;
    uint64_t   deadline_us = 0;
    uint64_t   sent_us = 0;            /* for the histogram */
    unsigned   nkeys = 0;
    unsigned   redirects = 0;
    bool       reloaded = false;
    bool       in_tq = false;
};


struct KeyState {
    Op        *op;
    unsigned   slot;                   /* hashed once */
    bool       taken;                  /* the script took its tokens */
};


struct Request {
    rl_redis_key_t         *keys = nullptr;
    size_t                  nkeys = 0;
    void                  (*done)(void *data) = nullptr;
    void                   *data = nullptr;
    Op                     *ops = nullptr;
    unsigned                nops = 0;
    Request                *free_next = nullptr;
    size_t                  owner = 0; /* its place in Client::requests_ */
    std::vector<KeyState>   ks;        /* keeps its room for reuse */
};


/* what a command sent on a link expects back, in pipeline order */
enum class Expect_kind : uint8_t {
    internal,      /* AUTH, SELECT, SCRIPT LOAD, ASKING, refund: name */
    probe,         /* seq */
    op,            /* ops: one */
    batch,         /* ops: a list through batch_next */
    slots,         /* CLUSTER SLOTS */
    heartbeat,
    role,          /* a sentinel's master: ROLE */
    sentinel       /* SENTINEL get-master-addr-by-name */
};

struct Expect {
    Expect_kind   kind = Expect_kind::internal;
    const char   *name = nullptr;
    Op           *ops = nullptr;
    uint64_t      seq = 0;
    /* refund, heartbeat: the arguments after the SHA-1, to send again
     * with EVAL and the script's text after NOSCRIPT; empty once sent so */
    std::string   resend;
    size_t        resend_argc = 0;
};


/* a ring of what the link's commands expect */
class Fifo {
public:
    bool empty() const noexcept { return count_ == 0; }
    /* room for one more: the only step that may throw */
    void reserve_one();
    void push(Expect &&e) noexcept;
    Expect pop() noexcept;
    void swap(Fifo &other) noexcept;

private:
    std::vector<Expect>  slots_;
    size_t               head_ = 0;
    size_t               count_ = 0;
};


/* the bytes a link has to send, written in RESP in place */
class Output {
public:
    /* n more bytes of room at the end; may throw std::bad_alloc.  Inline:
     * every argument of every command asks */
    char *room(size_t n)
    {
        return cap_ - end_ >= n ? buf_.get() + end_ : grow(n);
    }
    void advance(size_t n) noexcept { end_ += n; }
    /* where a command starts, to take it back if it cannot be whole:
     * counted from the unsent bytes, as room() may move them */
    size_t mark() const noexcept { return end_ - start_; }
    void truncate(size_t mark) noexcept { end_ = start_ + mark; }
    const char *data() const noexcept { return buf_.get() + start_; }
    size_t size() const noexcept { return end_ - start_; }
    void consume(size_t n) noexcept;
    void clear() noexcept { start_ = end_ = 0; }

private:
    char *grow(size_t n);

    std::unique_ptr<char[]>  buf_;
    size_t                   cap_ = 0;
    size_t                   start_ = 0;
    size_t                   end_ = 0;
};


/*
 * hiredis' reply objects, built in an arena of the link's: a batch's reply
 * holds an object for each number, and an allocation and a free for each
 * would cost more than reading it.  The reader builds one reply at a time,
 * and the client drops it before the next is read, so dropping a reply
 * empties the arena; the newest block stays.
 */
class Arena {
public:
    /* n bytes, n a multiple of alignof(redisReply); inline: every number
     * of a reply asks */
    void *alloc(size_t n)
    {
        if (static_cast<size_t>(end_ - next_) < n) {
            return grow(n);
        }

        void *p = next_;
        next_ += n;
        return p;
    }

    void reset() noexcept;

private:
    void *grow(size_t n);

    struct Block {
        std::unique_ptr<unsigned char[]>  mem;
        size_t                            size;
    };

    std::vector<Block>  blocks_;       /* the newest last */
    unsigned char      *next_ = nullptr;   /* free room of the newest */
    unsigned char      *end_ = nullptr;
};


/* a connection to one Redis address, with its circuit */
struct Link {
    unsigned       index = 0;
    bool           used = false;
    bool           seed = false;
    bool           retired = false;    /* not in the slot map */
    bool           open = false;       /* a connection, maybe connecting */
    bool           connected = false;
    bool           ready = false;      /* AUTH and SELECT done */
    bool           probing = false;
    bool           want = false;       /* want_write() called */
    bool           reading = false;
    bool           resolve = false;    /* name is resolved at run time */
    bool           resolving = false;  /* resolve() under way */
    /* a new address: the replies owed come in before the link moves */
    bool           moving = false;
    bool           sentinel = false;   /* to a sentinel, not to Redis */
    bool           asking = false;     /* a sentinel's answer is owed */
    bool           down_logged = false;    /* a sentinel's failure */
    bool           unknown_logged = false; /* its "no master named" */

    /* numeric; empty while a name to resolve has no address yet */
    char           host[NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX] = {};
    unsigned       port = 0;
    std::string    unix_path;
    std::string    address;            /* for logs and metrics */
    /* a sentinel's master: address with the master's, for the host;
     * name and peer are set when it connects */
    std::string    peer;
    std::string    name;               /* rl_redis_endpoint_t.name */
    /* where open() connects, made once with the link */
    sockaddr_storage sockaddr = {};
    socklen_t      socklen = 0;

    Circuit       *circuit = nullptr;
    uint64_t       backoff_ms = 0;
    unsigned       pending = 0;
    uint64_t       progress_us = 0;    /* last reply or send */
    uint64_t       asked_us = 0;       /* newest decision sent */
    uint64_t       probe_seq = 0;

    /* timers: the client's clock, 0 when not armed */
    uint64_t       reconnect_at = 0;
    uint64_t       connect_deadline = 0;
    uint64_t       probe_deadline = 0;
    uint64_t       watch_at = 0;
    uint64_t       resolve_at = 0;
    uint64_t       move_at = 0;        /* the last decision owed is over */
    uint64_t       resolve_backoff_ms = 0;

    /* the ops of this pass of the event loop, sent in one script call */
    Op            *batch = nullptr;
    Op            *batch_tail = nullptr;

    Output         out;
    Fifo           fifo;
    redisReader   *reader = nullptr;
    redisReader   *dead_reader = nullptr;  /* closed while it read */
    Arena          arena;
};


class Client {
public:
    Client(const rl_redis_config_t &config,
           const rl_redis_adapter_t &adapter);
    ~Client();

    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    /* false with a reason in err */
    bool start(const rl_redis_config_t &config, char *err);

    void on_connected(unsigned link);
    void on_data(unsigned link, const char *data, size_t len);
    void on_closed(unsigned link, const char *reason);
    void output(unsigned link, const char **data, size_t *len);
    void output_sent(unsigned link, size_t n);
    void on_timer();
    void on_posted();
    void on_resolved(unsigned link, const sockaddr *const *addrs,
                     const socklen_t *lens, size_t n, uint64_t valid_ms,
                     const char *err);

    int decide(rl_redis_key_t *keys, size_t nkeys, void (*done)(void *),
               void *data, Request **request);
    void cancel(Request *request);

    /* the one timer, armed when its earliest deadline or hold changes */
    void arm() noexcept;
    void tick() noexcept { now_ = ad_.now_us(ad_.data); }

private:
    void log(int level, const char *fmt, ...) noexcept
        __attribute__((format(printf, 3, 4)));

    /* rl_redis_shared.cpp: the circuits and the shared counters */
    Circuit *circuit_get(const std::string &address) noexcept;
    bool circuit_allow(Circuit *cb, bool *probe) noexcept;
    void circuit_success(Circuit *cb) noexcept;
    void circuit_failure(Circuit *cb, bool hard, const char *reason)
        noexcept;
    void latency(uint64_t us) noexcept;

    /* rl_redis_link.cpp: links */
    Link *seed_link(const rl_redis_endpoint_t &ep, char *err);
    Link *link_for(const char *host, size_t len, unsigned port,
                   const char *unix_path, const char *address,
                   bool resolve);
    void connect(Link &link);
    void schedule(Link &link);
    void setup(Link &link);
    void auth(Link &link, const std::string &username,
              const std::string &password);
    void ready(Link &link);
    void close(Link &link);
    void peer_error(Link &link, const char *reason);
    void teardown(Link &link, const char *reason);
    void load_script(Link &link, const char *name);
    void check_stall(Link &link);
    void failure(Link &link, bool hard, const char *reason);
    void watch(Link &link);
    void probe(Link &link);
    void connect_timeout(Link &link);
    void resolve(Link &link);
    void resolve_failed(Link &link, const char *reason);
    void move(Link &link, bool drain);
    void probe_timeout(Link &link);
    void heartbeat();
    void dispatch(Link &link, const redisReply *reply);
    void drop(Link &link, Expect &e);
    void internal_reply(Link &link, Expect &e, const redisReply *reply);
    void probe_reply(Link &link, uint64_t seq, const redisReply *reply);
    void heartbeat_reply(Link &link, Expect &e, const redisReply *reply);

    /* rl_redis_sentinel.cpp: the sentinels and their master */
    bool sentinel_start(const rl_redis_config_t &config, char *err);
    void sentinel_setup(Link &link);
    bool sentinel_question(Link &link, bool again);
    void sentinel_ask();
    void sentinel_timeout(Link &link);
    void sentinel_doubt(const char *why);
    void sentinel_down(Link &link, bool hard, const char *reason);
    void sentinel_internal(Link &link, Expect &e, const redisReply *reply);
    void sentinel_answer(Link &link, const redisReply *reply);
    bool sentinel_message(Link &link, const redisReply *reply);
    void sentinel_master(Link &from, const char *host, unsigned port);
    void role_reply(Link &link, const redisReply *reply);
    void check_role(Link &link);
    void set_link_timer(uint64_t &field, uint64_t at) noexcept;
    void clear_link_timer(uint64_t &field) noexcept;
    void post_batches() noexcept;

    /* the RESP writer: one command, rolled back when it cannot be whole */
    void begin(Link &link);
    void header(Link &link, size_t argc);
    void arg(Link &link, const char *s, size_t len);
    void arg(Link &link, uint64_t n);
    void commit(Link &link, Expect &&e) noexcept;
    template <typename Args>
    bool queue(Link &link, size_t argc, Expect &&e, Args &&args);
    bool queue_internal(Link &link, const char *name, const char *cmd,
                        const char *const *argv, const size_t *argvlen,
                        size_t argc);
    void raw(Link &link, const std::string &bytes);
    bool send_eval_again(Link &link, Expect_kind kind, const char *name,
                         const char *script, size_t script_len,
                         const Expect &sent);

    /* rl_redis_decide.cpp: requests and their ops */
    Link *route(unsigned slot) noexcept;
    void hold(Link &link, Op &op) noexcept;
    Op *op_alloc() noexcept;
    void op_free(Op *op) noexcept;
    Request *request_alloc();
    void request_free(Request *r) noexcept;
    void tq_push(Op *op) noexcept;
    void tq_remove(Op *op) noexcept;
    void arg_keys(Link &link, const Op &op);
    void arg_values(Link &link, const Op &op);
    bool evalsha(Op &op);
    void flush(Link &link);
    void op_reply(Link &link, Op *op, const redisReply *reply);
    void batch_reply(Link &link, Op *ops, const redisReply *reply);
    void answer(Op &op, Link &link, const redisReply *reply);
    bool parse(Op &op, const redisReply *reply);
    void op_timeout(Op &op);
    void fail(Op &op);
    void over(Op &op);
    void refund(Request &r);
    void send_refund(Link &link, const rl_redis_key_t &key);

    /* rl_redis_cluster.cpp: the slot map and the redirects */
    void ask_map(uint64_t min_gap_ms);
    void slots_reply(Link &link, const redisReply *reply);
    void use_map();
    bool redirect(Op &op, const redisReply *reply);

    rl_redis_adapter_t          ad_;
    std::string                 password_;
    std::string                 username_;
    uint64_t                    db_;
    uint64_t                    timeout_ms_;
    bool                        cluster_;
    std::string                 hb_key_;
    std::string                 hb_id_;
    unsigned                    hb_slot_ = 0;
    std::string                 policy_;

    /* Sentinel: the master's name, and what the sentinels were told */
    std::string                 sentinel_name_;
    std::string                 sentinel_password_;
    std::string                 sentinel_username_;
    /* the address of the master's connection, and the one that failed
     * while the sentinels are asked */
    std::string                 master_conn_;
    bool                        doubt_ = false;
    bool                        role_checking_ = false;
    std::string                 doubt_said_;   /* why, as last logged */
    std::string                 doubted_;
    uint64_t                    sentinel_asked_us_ = 0;
    uint64_t                    sentinel_ask_at_ = 0;
    rl_redis_shared_t          *shared_;
    char                        nodes_sha_[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];

    Link                        links_[RL_REDIS_ADDRESSES];

    /* a cluster's slot map, with no node until CLUSTER SLOTS fills it,
     * and the one the next reply is read into: the two are swapped */
    std::unique_ptr<ngx_http_rate_limit_cluster_map_t>  maps_[2];
    ngx_http_rate_limit_cluster_map_t  *map_ = nullptr;
    ngx_http_rate_limit_cluster_map_t  *next_map_ = nullptr;
    Link                       *node_links_[
                                   NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES] = {};
    bool                        refreshing_ = false;
    bool                        map_error_logged_ = false;
    uint64_t                    refreshed_us_ = 0;   /* when last asked */
    bool                        refreshed_ = false;

    uint64_t                    now_ = 0;
    uint64_t                    refresh_at_ = 0;
    uint64_t                    heartbeat_at_ = 0;
    bool                        hb_pending_ = false;
    uint64_t                    link_min_ = kNever;
    bool                        link_timers_dirty_ = false;
    bool                        armed_ = false;
    bool                        armed_hold_ = false;
    uint64_t                    armed_at_ = 0;

    Op                         *tq_head_ = nullptr;
    Op                         *tq_tail_ = nullptr;
    Op                         *free_ops_ = nullptr;
    unsigned                    nfree_ops_ = 0;
    std::vector<std::unique_ptr<Request>>  requests_;
    Request                    *free_requests_ = nullptr;
    unsigned                    nfree_requests_ = 0;
    std::vector<ngx_http_rate_limit_decision_t>  scratch_;

    uint32_t                    batch_links_ = 0;    /* a bit a link */
    bool                        posted_ = false;
    bool                        destroying_ = false;
};


/*
 * One command of argc arguments, written by args after its header, and
 * what it expects: on a link ready to take it, whole or not at all.
 */
template <typename Args>
bool
Client::queue(Link &link, size_t argc, Expect &&e, Args &&args)
{
    /* a link that moves takes no more commands for its old connection */
    if (!link.open || !link.ready || link.moving) {
        return false;
    }

    size_t at = link.out.mark();

    try {
        begin(link);
        header(link, argc);
        args();
        commit(link, std::move(e));

    } catch (...) {
        link.out.truncate(at);
        return false;
    }

    return true;
}

}  // namespace redis
}  // namespace rl


#endif /* RL_REDIS_CLIENT_H_INCLUDED_ */
