/*
 * A host for the core's Redis client on real sockets and poll(): what
 * nginx's adapter (ngx_module/ngx_http_rate_limit_redis.c) does with its
 * event loop, in one small class, for the tests that run the client
 * against real redis-servers.  One thread, one process.
 *
 * A pass of the loop is: poll() the links, read each readable one until
 * it would block, finish connects (SO_ERROR), write what the client has
 * for the writable ones, run the timer when due, then the posted call.
 */

#ifndef RL_REDIS_POLL_H
#define RL_REDIS_POLL_H

#include <rl_redis.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>


namespace rate_limit_test {

class PollHost {
public:
    PollHost();
    ~PollHost();

    PollHost(const PollHost &) = delete;
    PollHost &operator=(const PollHost &) = delete;

    /* the adapter to hand to rl_redis_create(); data is this host */
    const rl_redis_adapter_t *adapter() const { return &adapter_; }

    /* the client whose events this host delivers; nullptr: none */
    void attach(rl_redis_client_t *client) { client_ = client; }

    /* one pass; poll() waits at most wait_ms for an event or the timer */
    void run_once(int wait_ms);

    /* passes until predicate() holds or max_ms are gone; what it says */
    bool run_until(const std::function<bool()> &predicate, int max_ms);

    /* passes for ms, whatever happens */
    void run_for(int ms);

    static uint64_t monotonic_us();

    /* what the client did through the adapter, for the tests to check */
    struct LinkStats {
        unsigned  opens = 0;        /* open() calls */
        unsigned  connects = 0;     /* rl_redis_on_connected() delivered */
        unsigned  closes = 0;       /* close() calls by the client */
        unsigned  losses = 0;       /* rl_redis_on_closed() delivered */
        bool      connected = false;
    };

    const LinkStats &link(unsigned i) const { return stats_.at(i); }
    bool timer_armed() const { return timer_armed_; }
    bool timer_holds() const { return timer_hold_; }

    struct LogLine {
        int          level;
        std::string  text;
    };
    const std::vector<LogLine> &log() const { return log_; }
    /* whether a line of the log holds text */
    bool logged(const std::string &text) const;

private:
    struct Link {
        int       fd = -1;
        bool      connecting = false;
        bool      want_write = false;
        /* counts the connections: an event is for the one it was read on */
        uint64_t  generation = 0;
    };

    static int open_link(void *data, unsigned link,
        const rl_redis_endpoint_t *endpoint, char *err);
    static void want_write(void *data, unsigned link);
    static void close_link(void *data, unsigned link);
    static void set_timer(void *data, uint64_t delay_ms, int hold);
    static void post(void *data);
    static void log_line(void *data, int level, const char *msg);
    static uint64_t now_us(void *data);
    static void lock(void *data);
    static void unlock(void *data);

    void drop(unsigned link);
    void lost(unsigned link, const char *reason);
    void finish_connect(unsigned link);
    void read_link(unsigned link);
    void write_link(unsigned link);

    rl_redis_adapter_t                      adapter_ {};
    rl_redis_client_t                      *client_ = nullptr;
    std::array<Link, RL_REDIS_ADDRESSES>    links_;
    std::array<LinkStats, RL_REDIS_ADDRESSES>  stats_;
    bool                                    timer_armed_ = false;
    bool                                    timer_hold_ = false;
    uint64_t                                timer_at_us_ = 0;
    bool                                    posted_ = false;
    std::mutex                              shared_lock_;
    std::vector<LogLine>                    log_;
};


/* what rl_redis_shared_init() is given: 8-aligned, freed with the object */
class SharedMemory {
public:
    SharedMemory();

    rl_redis_shared_t *get() const { return shared_; }

    /* the circuit of address, or one with address "" when there is none */
    rl_redis_circuit_info_t circuit(const std::string &address) const;

private:
    std::unique_ptr<uint64_t[]>  memory_;
    rl_redis_shared_t           *shared_ = nullptr;
};

} // namespace rate_limit_test

#endif
