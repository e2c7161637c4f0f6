/*
 * A host for the core's PostgreSQL objects (rl_pg.h) on poll(): what
 * nginx's adapter (ngx_module/ngx_http_rate_limit_pg.c) does with its event
 * loop, for the tests that run them against a real PostgreSQL.  One host a
 * core object, as nginx has one adapter each; run() drives several hosts
 * in one loop, as the workers of a node run side by side.
 */

#ifndef RL_PG_POLL_H
#define RL_PG_POLL_H

#include <rl_pg.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>


namespace rate_limit_test {

class PgHost {
public:
    /* lock: the lease's, shared by the hosts of one node */
    explicit PgHost(std::shared_ptr<std::mutex> lock
                    = std::make_shared<std::mutex>());

    PgHost(const PgHost &) = delete;
    PgHost &operator=(const PgHost &) = delete;

    const rl_pg_adapter_t *adapter() const { return &adapter_; }

    void attach(rl_pg_sync_t *sync) { sync_ = sync; }
    void attach(rl_pg_api_t *api) { api_ = api; }

    /* a frozen process: no event reaches its object */
    bool frozen = false;

    static uint64_t now_ms();

    struct LogLine {
        int          level;
        std::string  text;
    };
    const std::vector<LogLine> &log() const { return log_; }
    /* how many lines hold text */
    size_t logged(const std::string &text) const;

    /* every delay set_timer() was given, in order */
    const std::vector<uint64_t> &delays() const { return delays_; }
    bool watching() const { return fd_ >= 0; }

    /* one pass over hosts; poll() waits at most wait_ms */
    static void run_once(const std::vector<PgHost *> &hosts, int wait_ms);
    /* passes until predicate() holds or max_ms are gone; what it says */
    static bool run_until(const std::vector<PgHost *> &hosts,
                          const std::function<bool()> &predicate,
                          int max_ms);

private:
    static int watch(void *data, int fd, int write);
    static void unwatch(void *data);
    static void set_timer(void *data, uint64_t delay_ms);
    static void stop_timer(void *data);
    static void post(void *data);
    static void log_line(void *data, int level, const char *msg);
    static uint64_t clock(void *data);
    static void lock(void *data);
    static void unlock(void *data);

    void io(bool readable, bool writable);
    void timer();

    rl_pg_adapter_t               adapter_ {};
    std::shared_ptr<std::mutex>   lock_;
    rl_pg_sync_t                 *sync_ = nullptr;
    rl_pg_api_t                  *api_ = nullptr;
    int                           fd_ = -1;
    bool                          want_write_ = false;
    bool                          timer_armed_ = false;
    uint64_t                      timer_at_ = 0;
    bool                          posted_ = false;
    std::vector<uint64_t>         delays_;
    std::vector<LogLine>          log_;
};

} // namespace rate_limit_test

#endif
