/*
 * The core's PostgreSQL connection behind rl_pg.h: what its sources share,
 * and only they.  One libpq connection, asynchronous, driven by the
 * host's fd events and one timer (see rl_pg_adapter_t).
 */

#ifndef RL_PG_CONN_H_INCLUDED_
#define RL_PG_CONN_H_INCLUDED_


#include "rl_pg.h"

#include <libpq-fe.h>

#include <cstdint>
#include <string>
#include <vector>


namespace rl {
namespace pg {

constexpr uint64_t  kNever = UINT64_MAX;
/* a connect or a query that hears nothing for this long has a dead peer */
constexpr uint64_t  kStallMs = 15000;


/* the adapter, and its one timer, armed at the earliest of the owner's
 * deadlines */
class Host {
public:
    explicit Host(const rl_pg_adapter_t &adapter) : adapter_(adapter) {}

    void log(int level, const char *format, ...) const
        __attribute__((format(printf, 3, 4)));
    uint64_t now() const { return adapter_.now_ms(adapter_.data); }

    bool watch(int fd, bool write) const;
    void unwatch() const { adapter_.unwatch(adapter_.data); }
    void post() const { adapter_.post(adapter_.data); }
    void lock() const { adapter_.lock(adapter_.data); }
    void unlock() const { adapter_.unlock(adapter_.data); }

    /* the timer at the moment at (kNever: none), unless it is so already */
    void arm(uint64_t at);
    /* the timer went off: it is no longer armed */
    void fired() { armed_ = kNever; }

private:
    rl_pg_adapter_t  adapter_;
    uint64_t         armed_ = kNever;
};


/* pg_snapshot's text, "xmin:xmax:xip,xip,..."; false when it is not that */
struct Snapshot {
    uint64_t               xmin = 0;
    uint64_t               xmax = 0;
    std::vector<uint64_t>  xip;

    bool parse(const char *text, size_t len);
    rl_store_snapshot_t view() const
    {
        return rl_store_snapshot_t{xmin, xmax, xip.data(), xip.size()};
    }
};


/* digits only, [p, last) not empty, within uint64_t */
bool parse_decimal(const char *p, const char *last, uint64_t *value);

/* says, once until a row fits again, that zone has no room for rows */
void log_store_full(const Host &host, const unsigned char *zone,
                    size_t zone_len, const rl_store_t *store);


/* what a connection tells the object that uses it */
class Owner {
public:
    virtual void ready() = 0;
    /* each result of a query, then nullptr once the query is over */
    virtual void result(PGresult *res) = 0;
    /* the connection is closed already */
    virtual void failed(const char *reason) = 0;
    virtual void notified() {}

protected:
    ~Owner() = default;
};


class Conn {
public:
    Conn(Host &host, Owner &owner) : host_(host), owner_(owner) {}
    ~Conn() { close(); }

    Conn(const Conn &) = delete;
    Conn &operator=(const Conn &) = delete;

    /* starts connecting; a failure is told to owner.failed() at once */
    void connect(const char *conninfo);
    /* single_row: a million rows arrive as they come, not as one result;
     * false when a query is running already, or sending failed (told) */
    bool send(const char *sql, int nparams, const char *const *params,
              bool single_row);
    void close();

    bool open() const { return conn_ != nullptr; }
    bool busy() const { return busy_; }

    void on_io(bool readable, bool writable);
    /* when the owner's timer must look at this connection */
    uint64_t deadline() const { return stall_at_; }
    void on_time(uint64_t now);
    /* closes the connection, then tells the owner why (its first line) */
    void fail(const char *what);

private:
    bool watch(int fd, bool write);
    void poll_connect();
    void read();
    static void notice(void *arg, const char *message);

    Host     &host_;
    Owner    &owner_;
    PGconn   *conn_ = nullptr;
    int       fd_ = -1;
    bool      writing_ = false;
    bool      connecting_ = false;
    bool      busy_ = false;
    uint64_t  stall_at_ = kNever;
};

}  // namespace pg
}  // namespace rl


#endif
