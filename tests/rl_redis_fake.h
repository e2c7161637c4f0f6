/*
 * A fake host for the core's Redis client (rl_redis.h), for deterministic
 * unit tests: a clock that only the test moves, an adapter that records
 * what the client asks of it (open, close, want_write, set_timer, post,
 * log, resolve), and a scripted peer on each link that parses the RESP
 * commands the client writes and answers with the raw bytes the test
 * gives it.
 *
 * A pass of the event loop is what one host event does in nginx: the
 * event, then the posted call.  The helpers that deliver an event
 * (connected(), reply(), peer_closed(), advance_ms()) end the pass; a
 * test that calls rl_redis_decide() itself ends it with end_pass(), so
 * that what several decisions of one pass queue can be batched.
 *
 * Two hosts may share one SharedMemory and one FakeClock: two workers of
 * one node.
 */

#ifndef RL_REDIS_FAKE_H
#define RL_REDIS_FAKE_H

#include <rl_redis.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>


namespace rl_fake {

using Command = std::vector<std::string>;


/* RESP replies, as a Redis server writes them */
namespace resp {

std::string ok();
std::string status(const std::string &text);
std::string error(const std::string &text);     /* without the '-' */
std::string integer(long long n);
std::string bulk(const std::string &s);
std::string nil();
/* an array of already encoded elements */
std::string array(const std::vector<std::string> &elements);
std::string integers(const std::vector<long long> &values);

/* one key's part of the decision script's reply */
struct KeyAnswer {
    bool       allowed;
    long long  remaining;
    long long  retry_after_us;
    long long  reset_us;
};

/* the decision script's reply for one request: verdict, then each key */
std::string decision(const std::vector<KeyAnswer> &keys);
/* the batch script's reply: each request's reply in turn */
std::string batch(const std::vector<std::vector<KeyAnswer>> &requests);

struct SlotRange {
    unsigned     first;
    unsigned     last;
    std::string  host;
    unsigned     port;
};

/* a CLUSTER SLOTS reply, masters only */
std::string cluster_slots(const std::vector<SlotRange> &ranges);

/* a null array, "*-1": what Redis answers for a missing entry in RESP2 */
std::string null_array();

/* pub/sub: a message pushed to a subscriber, and the reply to SUBSCRIBE
 * or UNSUBSCRIBE ("subscribe", the channel, the count subscribed now) */
std::string message(const std::string &channel, const std::string &payload);
std::string subscription(const std::string &kind, const std::string &channel,
                         long long count);

}  // namespace resp


/* the one clock of the hosts of a node, CLOCK_MONOTONIC in microseconds */
struct FakeClock {
    /* far from zero, so that no test runs near it by accident */
    uint64_t  now_us = 1000000000000ULL;
};


/*
 * The shared memory of a node, aligned to 8, initialised once; and the
 * host's lock of it, which checks that it is never taken twice nor freed
 * untaken.
 */
class SharedMemory {
public:
    SharedMemory();

    rl_redis_shared_t *shared() const { return shared_; }

    void lock();
    void unlock();
    bool locked() const { return locked_; }
    unsigned locks() const { return locks_; }
    /* lock() while locked, or unlock() while not */
    unsigned lock_errors() const { return lock_errors_; }

private:
    std::vector<uint64_t>  memory_;
    rl_redis_shared_t     *shared_ = nullptr;
    bool                   locked_ = false;
    unsigned               locks_ = 0;
    unsigned               lock_errors_ = 0;
};


struct LogLine {
    int          level;
    std::string  msg;
};

struct TimerCall {
    uint64_t  at_us;        /* when set_timer() was called */
    uint64_t  delay_ms;
    int       hold;
};

struct Endpoint {
    std::string  host;      /* "" when none */
    unsigned     port = 0;
    std::string  unix_path;
    std::string  address;
    std::string  name;
    bool         has_name = false;
    /* the socket address the core gave, as "family host port" */
    std::string  sockaddr;
};


/* one link as its peer sees it */
struct Link {
    bool                  open = false;      /* a connection, up or not */
    bool                  connected = false;
    Endpoint              endpoint;          /* of the last open() */
    unsigned              opens = 0;
    unsigned              closes = 0;        /* by the client */
    std::vector<uint64_t> open_at_us;        /* the time of each open() */
    bool                  want_write = false;
    unsigned              want_writes = 0;
    /* open() fails at once with this reason when not empty */
    std::string           fail_open;
    /* bytes taken at most per rl_redis_output_sent() (0: all) */
    size_t                write_chunk = 0;
    /* commands written and parsed, not yet taken by the test */
    std::deque<Command>   commands;
    /* every byte written on the current connection */
    std::string           written;
    std::shared_ptr<void> reader;            /* redisReader */

    /* resolve(): the queries, the name of the last, one under way */
    unsigned              resolves = 0;
    std::vector<uint64_t> resolve_at_us;
    std::string           resolve_name;
    bool                  resolving = false;
    /* resolve() fails at once with this reason when not empty */
    std::string           fail_resolve;
};


class FakeHost {
public:
    FakeHost(FakeClock &clock, SharedMemory &memory);
    ~FakeHost();

    FakeHost(const FakeHost &) = delete;
    FakeHost &operator=(const FakeHost &) = delete;

    const rl_redis_adapter_t &adapter() const { return adapter_; }

    /*
     * rl_redis_create() with this host's adapter, config.shared set to
     * the shared memory's; fails the test when it fails.  The client is
     * destroyed with the host.
     */
    rl_redis_client_t *create(rl_redis_config_t config);
    rl_redis_client_t *client() const { return client_; }
    void destroy();

    /* the end of a pass: the posted call, while one is posted */
    void end_pass();

    /* the host's events, each ending the pass */
    void connected(unsigned link);
    void reply(unsigned link, const std::string &bytes);
    void peer_closed(unsigned link,
                     const char *reason = "Server closed the connection");
    /* the answer to the link's query: IPv4 or IPv6 addresses, or err */
    void resolved(unsigned link, const std::vector<std::string> &ips,
                  uint64_t valid_ms, const char *err = nullptr);

    /*
     * Moves the clock ms milliseconds on; the timer fires (and its pass
     * ends) each time its deadline passes on the way.
     */
    void advance_ms(uint64_t ms);
    void advance_us(uint64_t us);

    /*
     * Takes what the client queued on the link (only when it said so with
     * want_write, as nginx does), parses it, and returns the commands
     * written since the last call.
     */
    std::vector<Command> take(unsigned link);
    /* the one command expected; fails the test otherwise */
    Command take_one(unsigned link);

    /* the bytes waiting in the client's output, without taking them */
    size_t output_pending(unsigned link) const;

    Link &link(unsigned i) { return links_.at(i); }
    uint64_t now_us() const { return clock_.now_us; }

    /* the timer as last armed */
    bool timer_armed() const { return timer_armed_; }
    uint64_t timer_deadline_us() const { return timer_deadline_us_; }
    int timer_hold() const { return timer_hold_; }
    const std::vector<TimerCall> &timer_calls() const { return timer_calls_; }

    bool posted() const { return posted_; }
    unsigned posts() const { return posts_; }

    const std::vector<LogLine> &logs() const { return logs_; }
    /* how many lines hold text (at the given level, -1: any) */
    size_t count_logs(const std::string &text, int level = -1) const;
    void clear_logs() { logs_.clear(); }

    /*
     * A connected link that has answered AUTH, SELECT and the SCRIPT
     * LOADs it was sent (and CLUSTER SLOTS, with slots_reply, in a
     * cluster): the commands are checked only by name here, and answered.
     */
    void bring_up(unsigned link, const std::string &slots_reply = "");

private:
    static int open_cb(void *data, unsigned link,
                       const rl_redis_endpoint_t *endpoint, char *err);
    static void want_write_cb(void *data, unsigned link);
    static void close_cb(void *data, unsigned link);
    static void set_timer_cb(void *data, uint64_t delay_ms, int hold);
    static void post_cb(void *data);
    static void log_cb(void *data, int level, const char *msg);
    static uint64_t now_us_cb(void *data);
    static void lock_cb(void *data);
    static void unlock_cb(void *data);
    static int resolve_cb(void *data, unsigned link, const char *name,
                          char *err);

    void parse(Link &l, const char *data, size_t len);
    void fire_timer();

    FakeClock             &clock_;
    SharedMemory          &memory_;
    rl_redis_adapter_t     adapter_ {};
    rl_redis_client_t     *client_ = nullptr;
    std::vector<Link>      links_;
    bool                   timer_armed_ = false;
    uint64_t               timer_deadline_us_ = 0;
    int                    timer_hold_ = 0;
    std::vector<TimerCall> timer_calls_;
    bool                   posted_ = false;
    unsigned               posts_ = 0;
    std::vector<LogLine>   logs_;

    friend void advance_all_us(std::initializer_list<FakeHost *> hosts,
                               uint64_t us);
};


/*
 * Advances the shared clock of several hosts, firing each host's timer in
 * deadline order, as two workers' event loops would.
 */
void advance_all_ms(std::initializer_list<FakeHost *> hosts, uint64_t ms);
void advance_all_us(std::initializer_list<FakeHost *> hosts, uint64_t us);


/* a key of a decision with its texts kept alive */
struct Key {
    Key(std::string key, std::string interval = "100000",
        std::string burst = "10", std::string cost = "1",
        std::string token_code = "0");

    Key(const Key &) = delete;
    Key &operator=(const Key &) = delete;

    std::string     key_text, interval, burst, cost, token_code;
    rl_redis_key_t  k {};
};

/* a request: its keys as the client sees them, and its callback */
class Request {
public:
    explicit Request(std::vector<std::string> keys);

    Request(const Request &) = delete;
    Request &operator=(const Request &) = delete;

    /* rl_redis_decide(); done must not run inside it (checked) */
    int decide(rl_redis_client_t *client);
    void cancel(rl_redis_client_t *client);

    rl_redis_key_t &key(size_t i) { return keys_.at(i); }
    size_t size() const { return keys_.size(); }
    unsigned done_calls() const { return done_; }
    bool done_inside_decide() const { return inside_; }
    rl_redis_request_t *handle() const { return handle_; }

    /* runs in the callback, after it is counted: what a resumed request
     * does next (ask again, cancel another) */
    std::function<void()>  on_done;

    /* the texts sent for key i, to compare with a command's arguments */
    const Key &text(size_t i) const { return *texts_.at(i); }

private:
    static void done_cb(void *data);

    std::vector<std::unique_ptr<Key>>  texts_;
    std::vector<rl_redis_key_t>        keys_;
    rl_redis_request_t                *handle_ = nullptr;
    bool                               deciding_ = false;
    bool                               inside_ = false;
    unsigned                           done_ = 0;
};


/* the scripts' SHA-1s as the client must send them */
std::string one_sha();
std::string batch_sha();
std::string multi_sha();
std::string refund_sha();
std::string nodes_sha();

/* the commands as one line, for failure messages */
std::string show(const Command &c);
std::string show(const std::vector<Command> &cs);

}  // namespace rl_fake


#endif /* RL_REDIS_FAKE_H */
