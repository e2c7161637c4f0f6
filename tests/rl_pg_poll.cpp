#include "rl_pg_poll.h"

#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>


namespace rate_limit_test {

namespace {

PgHost *host_of(void *data)
{
    return static_cast<PgHost *>(data);
}

} // namespace


PgHost::PgHost(std::shared_ptr<std::mutex> lock) : lock_(std::move(lock))
{
    adapter_.data = this;
    adapter_.watch = watch;
    adapter_.unwatch = unwatch;
    adapter_.set_timer = set_timer;
    adapter_.stop_timer = stop_timer;
    adapter_.post = post;
    adapter_.log = log_line;
    adapter_.now_ms = clock;
    adapter_.lock = PgHost::lock;
    adapter_.unlock = PgHost::unlock;
}


uint64_t PgHost::now_ms()
{
    timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}


size_t PgHost::logged(const std::string &text) const
{
    return size_t(std::count_if(log_.begin(), log_.end(),
                                [&](const LogLine &line) {
        return line.text.find(text) != std::string::npos;
    }));
}


int PgHost::watch(void *data, int fd, int write)
{
    PgHost *host = host_of(data);

    if (fd < 0) {
        std::fprintf(stderr, "watch() of fd %d\n", fd);
        std::abort();
    }

    host->fd_ = fd;
    host->want_write_ = write != 0;
    return RL_PG_OK;
}


void PgHost::unwatch(void *data)
{
    host_of(data)->fd_ = -1;
    host_of(data)->want_write_ = false;
}


void PgHost::set_timer(void *data, uint64_t delay_ms)
{
    PgHost *host = host_of(data);

    host->timer_armed_ = true;
    host->timer_at_ = now_ms() + delay_ms;
    host->delays_.push_back(delay_ms);
}


void PgHost::stop_timer(void *data)
{
    host_of(data)->timer_armed_ = false;
}


void PgHost::post(void *data)
{
    host_of(data)->posted_ = true;
}


void PgHost::log_line(void *data, int level, const char *msg)
{
    host_of(data)->log_.push_back(LogLine{level, msg});

    if (std::getenv("RL_PG_TEST_LOG") != nullptr) {
        std::fprintf(stderr, "[%d] %s\n", level, msg);
    }
}


uint64_t PgHost::clock(void *)
{
    return now_ms();
}


void PgHost::lock(void *data)
{
    host_of(data)->lock_->lock();
}


void PgHost::unlock(void *data)
{
    host_of(data)->lock_->unlock();
}


void PgHost::io(bool readable, bool writable)
{
    if (sync_ != nullptr) {
        rl_pg_sync_on_io(sync_, readable, writable);
    }
    if (api_ != nullptr) {
        rl_pg_api_on_io(api_, readable, writable);
    }
}


void PgHost::timer()
{
    timer_armed_ = false;

    if (sync_ != nullptr) {
        rl_pg_sync_on_timer(sync_);
    }
    if (api_ != nullptr) {
        rl_pg_api_on_timer(api_);
    }
}


void PgHost::run_once(const std::vector<PgHost *> &hosts, int wait_ms)
{
    std::vector<pollfd> fds;
    std::vector<PgHost *> owners;
    uint64_t now = now_ms();

    for (PgHost *host : hosts) {
        if (host->frozen) {
            continue;
        }
        if (host->posted_) {
            wait_ms = 0;
        }
        if (host->timer_armed_) {
            wait_ms = std::min<int>(wait_ms, host->timer_at_ > now
                                             ? int(host->timer_at_ - now)
                                             : 0);
        }
        if (host->fd_ >= 0) {
            short events = POLLIN;
            if (host->want_write_) {
                events |= POLLOUT;
            }
            fds.push_back(pollfd{host->fd_, events, 0});
            owners.push_back(host);
        }
    }

    (void) poll(fds.data(), fds.size(), wait_ms);

    for (size_t i = 0; i < fds.size(); i++) {
        PgHost *host = owners[i];

        /* an earlier event of this pass may have moved it to another fd */
        if (fds[i].revents == 0 || host->fd_ != fds[i].fd) {
            continue;
        }

        bool failed = (fds[i].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
        host->io((fds[i].revents & POLLIN) || failed,
                 (fds[i].revents & POLLOUT) || failed);
    }

    now = now_ms();

    for (PgHost *host : hosts) {
        if (!host->frozen && host->timer_armed_ && host->timer_at_ <= now) {
            host->timer();
        }
    }

    for (PgHost *host : hosts) {
        if (!host->frozen && host->posted_) {
            host->posted_ = false;
            if (host->api_ != nullptr) {
                rl_pg_api_on_posted(host->api_);
            }
        }
    }
}


bool PgHost::run_until(const std::vector<PgHost *> &hosts,
                       const std::function<bool()> &predicate, int max_ms)
{
    const uint64_t end = now_ms() + uint64_t(max_ms);

    while (!predicate()) {
        uint64_t now = now_ms();
        if (now >= end) {
            return false;
        }
        run_once(hosts, int(std::min<uint64_t>(end - now, 50)));
    }

    return true;
}

} // namespace rate_limit_test
