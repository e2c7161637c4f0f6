/*
 * One asynchronous libpq connection.  libpq owns the socket: the host only
 * watches it, level-triggered, and never closes it.  The socket may change
 * while connecting (libpq tries the next address), so it is looked at
 * again after every PQconnectPoll().
 */

#include "rl_pg_conn.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>


namespace rl {
namespace pg {

void Host::log(int level, const char *format, ...) const
{
    char line[2048];
    va_list args;

    va_start(args, format);
    std::vsnprintf(line, sizeof(line), format, args);
    va_end(args);

    adapter_.log(adapter_.data, level, line);
}


bool Host::watch(int fd, bool write) const
{
    return adapter_.watch(adapter_.data, fd, write ? 1 : 0) == RL_PG_OK;
}


void Host::arm(uint64_t at)
{
    if (at == armed_) {
        return;
    }

    armed_ = at;

    if (at == kNever) {
        adapter_.stop_timer(adapter_.data);
        return;
    }

    uint64_t now = this->now();
    adapter_.set_timer(adapter_.data, at > now ? at - now : 0);
}


bool parse_decimal(const char *p, const char *last, uint64_t *value)
{
    if (p == last) {
        return false;
    }

    uint64_t n = 0;

    for (; p < last; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - 9) / 10) {
            return false;
        }
        n = n * 10 + uint64_t(*p - '0');
    }

    *value = n;
    return true;
}


void log_store_full(const Host &host, const unsigned char *zone,
                    size_t zone_len, const rl_store_t *store)
{
    rl_store_stats_t stats;
    rl_store_stats(store, &stats);

    host.log(RL_PG_LOG_ALERT,
             "rate_limit_zone \"%.*s\" is full at %llu per-client limits: "
             "the rows already held and the defaults keep applying; give "
             "the zone more memory", int(zone_len),
             reinterpret_cast<const char *>(zone),
             static_cast<unsigned long long>(stats.rows));
}


bool Snapshot::parse(const char *text, size_t len)
{
    const char *p = text;
    const char *last = text + len;
    uint64_t *fields[2] = {&xmin, &xmax};

    xip.clear();

    for (uint64_t *field : fields) {
        const char *end = static_cast<const char *>(
            std::memchr(p, ':', size_t(last - p)));

        if (end == nullptr || !parse_decimal(p, end, field)) {
            return false;
        }
        p = end + 1;
    }

    while (p < last) {
        const char *end = static_cast<const char *>(
            std::memchr(p, ',', size_t(last - p)));
        if (end == nullptr) {
            end = last;
        }

        uint64_t n;
        if (!parse_decimal(p, end, &n)) {
            return false;
        }
        xip.push_back(n);
        p = end + 1;
    }

    return true;
}


void Conn::connect(const char *conninfo)
{
    if (conn_ != nullptr) {
        return;
    }

    conn_ = PQconnectStart(conninfo);

    if (conn_ == nullptr) {
        fail("out of memory");
        return;
    }

    /* libpq would print notices on stderr, that is into the error log */
    PQsetNoticeProcessor(conn_, notice, this);

    connecting_ = true;
    busy_ = true;
    stall_at_ = host_.now() + kStallMs;

    /* libpq waits for writability first */
    if (PQstatus(conn_) == CONNECTION_BAD || !watch(PQsocket(conn_), true)) {
        fail(PQerrorMessage(conn_));
    }
}


void Conn::close()
{
    if (fd_ >= 0) {
        host_.unwatch();
        fd_ = -1;
    }

    if (conn_ != nullptr) {
        PQfinish(conn_);
        conn_ = nullptr;
    }

    writing_ = false;
    connecting_ = false;
    busy_ = false;
    stall_at_ = kNever;
}


bool Conn::send(const char *sql, int nparams, const char *const *params,
                bool single_row)
{
    if (conn_ == nullptr || busy_) {
        return false;
    }

    int rc = nparams
             ? PQsendQueryParams(conn_, sql, nparams, nullptr, params,
                                 nullptr, nullptr, 0)
             : PQsendQuery(conn_, sql);

    if (rc != 1) {
        fail(PQerrorMessage(conn_));
        return false;
    }

    if (single_row) {
        PQsetSingleRowMode(conn_);
    }

    busy_ = true;
    stall_at_ = host_.now() + kStallMs;

    switch (PQflush(conn_)) {
    case 0:
        return true;
    case 1:
        if (!watch(fd_, true)) {
            fail("cannot watch the socket");
            return false;
        }
        return true;
    default:
        fail(PQerrorMessage(conn_));
        return false;
    }
}


bool Conn::watch(int fd, bool write)
{
    if (fd < 0) {
        return false;
    }

    if (fd == fd_ && write == writing_) {
        return true;
    }

    fd_ = fd;
    writing_ = write;

    return host_.watch(fd, write);
}


void Conn::on_io(bool readable, bool writable)
{
    if (conn_ == nullptr) {
        return;
    }

    if (connecting_) {
        poll_connect();
        return;
    }

    if (writable && writing_) {
        switch (PQflush(conn_)) {
        case 0:
            if (!watch(fd_, false)) {
                fail("cannot watch the socket");
                return;
            }
            break;
        case 1:
            break;
        default:
            fail(PQerrorMessage(conn_));
            return;
        }
    }

    if (readable) {
        read();
    }
}


void Conn::poll_connect()
{
    PostgresPollingStatusType status = PQconnectPoll(conn_);

    switch (status) {
    case PGRES_POLLING_WRITING:
    case PGRES_POLLING_READING:
        /* libpq may have moved to another socket, trying the next address */
        if (!watch(PQsocket(conn_), status == PGRES_POLLING_WRITING)) {
            fail(PQerrorMessage(conn_));
        }
        return;

    case PGRES_POLLING_OK:
        break;

    default:
        fail(PQerrorMessage(conn_));
        return;
    }

    if (!watch(PQsocket(conn_), false) || PQsetnonblocking(conn_, 1) != 0) {
        fail(PQerrorMessage(conn_));
        return;
    }

    connecting_ = false;
    busy_ = false;
    stall_at_ = kNever;

    owner_.ready();
}


void Conn::read()
{
    if (PQconsumeInput(conn_) != 1) {
        fail(PQerrorMessage(conn_));
        return;
    }

    if (busy_) {
        stall_at_ = host_.now() + kStallMs;
    }

    /* the owner may send the next query, which is read on in this loop */
    while (conn_ != nullptr && busy_ && !PQisBusy(conn_)) {
        PGresult *res = PQgetResult(conn_);

        if (res == nullptr) {
            busy_ = false;
            stall_at_ = kNever;
            owner_.result(nullptr);
            continue;
        }

        /* cleared even when the owner runs out of memory reading it */
        const std::unique_ptr<PGresult, decltype(&PQclear)> held(res,
                                                                  PQclear);
        owner_.result(held.get());
    }

    if (conn_ == nullptr) {
        return;
    }

    bool notified = false;

    while (PGnotify *notify = PQnotifies(conn_)) {
        notified = true;
        PQfreemem(notify);
    }

    if (notified) {
        owner_.notified();
    }
}


void Conn::on_time(uint64_t now)
{
    if (now >= stall_at_) {
        fail("no answer");
    }
}


/* closes the connection, then tells the owner why */
void Conn::fail(const char *what)
{
    /* libpq's messages go on over several lines: the first says it */
    char reason[RL_PG_ERR_LEN];
    size_t len = 0;

    while (what[len] != '\0' && what[len] != '\n'
           && len < sizeof(reason) - 1)
    {
        reason[len] = what[len];
        len++;
    }
    reason[len] = '\0';

    close();
    owner_.failed(reason);
}


void Conn::notice(void *arg, const char *message)
{
    Conn *conn = static_cast<Conn *>(arg);
    size_t len = std::strlen(message);

    if (len > 0 && message[len - 1] == '\n') {
        len--;
    }

    conn->host_.log(RL_PG_LOG_DEBUG, "rate_limit_postgres: %.*s", int(len),
                    message);
}

}  // namespace pg
}  // namespace rl
