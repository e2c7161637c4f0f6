#include "rl_redis_poll.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>


namespace rate_limit_test {

namespace {

PollHost *host_of(void *data)
{
    return static_cast<PollHost *>(data);
}


void copy_reason(char *err, const char *reason)
{
    std::snprintf(err, RL_REDIS_ERR_LEN, "%s", reason);
}

} // namespace


PollHost::PollHost()
{
    adapter_.data = this;
    adapter_.open = open_link;
    adapter_.want_write = want_write;
    adapter_.close = close_link;
    adapter_.set_timer = set_timer;
    adapter_.post = post;
    adapter_.log = log_line;
    adapter_.now_us = now_us;
    adapter_.lock = lock;
    adapter_.unlock = unlock;
}


PollHost::~PollHost()
{
    for (Link &link : links_) {
        if (link.fd >= 0) {
            ::close(link.fd);
        }
    }
}


uint64_t PollHost::monotonic_us()
{
    timespec ts {};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000 + uint64_t(ts.tv_nsec) / 1000;
}


bool PollHost::logged(const std::string &text) const
{
    return std::any_of(log_.begin(), log_.end(), [&](const LogLine &line) {
        return line.text.find(text) != std::string::npos;
    });
}


int PollHost::open_link(void *data, unsigned i,
    const rl_redis_endpoint_t *endpoint, char *err)
{
    PollHost *host = host_of(data);

    if (i >= RL_REDIS_ADDRESSES) {
        copy_reason(err, "no such link");
        return RL_REDIS_ERROR;
    }
    Link &link = host->links_[i];
    host->stats_[i].opens++;

    if (link.fd >= 0) {
        /* the contract: one connection a link at a time */
        std::fprintf(stderr, "open() of link %u, which is open\n", i);
        std::abort();
    }

    /* the core gives the address it made with the link */
    if (endpoint->sockaddr == nullptr || endpoint->socklen == 0) {
        std::fprintf(stderr, "open() of link %u without an address\n", i);
        std::abort();
    }
    const int family = endpoint->sockaddr->sa_family;

    const int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0);
    if (fd < 0) {
        copy_reason(err, std::strerror(errno));
        return RL_REDIS_ERROR;
    }
    if (family == AF_INET) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }

    if (connect(fd, endpoint->sockaddr, endpoint->socklen) != 0
        && errno != EINPROGRESS && errno != EAGAIN)
    {
        copy_reason(err, std::strerror(errno));
        ::close(fd);
        return RL_REDIS_ERROR;
    }

    /*
     * Even a connect that is done at once is reported in a later pass,
     * when poll() says the socket is writable: never from inside open().
     */
    link.fd = fd;
    link.connecting = true;
    link.want_write = false;
    link.generation++;
    return RL_REDIS_OK;
}


void PollHost::want_write(void *data, unsigned i)
{
    PollHost *host = host_of(data);
    if (i < RL_REDIS_ADDRESSES) {
        host->links_[i].want_write = true;
    }
}


void PollHost::close_link(void *data, unsigned i)
{
    PollHost *host = host_of(data);
    if (i < RL_REDIS_ADDRESSES) {
        host->stats_[i].closes++;
        host->drop(i);
    }
}


void PollHost::set_timer(void *data, uint64_t delay_ms, int hold)
{
    PollHost *host = host_of(data);
    host->timer_armed_ = true;
    host->timer_hold_ = hold != 0;
    host->timer_at_us_ = monotonic_us() + delay_ms * 1000;
}


void PollHost::post(void *data)
{
    host_of(data)->posted_ = true;
}


void PollHost::log_line(void *data, int level, const char *msg)
{
    PollHost *host = host_of(data);
    host->log_.push_back({ level, msg });
    if (std::getenv("RL_REDIS_TEST_LOG") != nullptr) {
        std::fprintf(stderr, "[rl_redis %d] %s\n", level, msg);
    }
}


uint64_t PollHost::now_us(void *)
{
    return monotonic_us();
}


void PollHost::lock(void *data)
{
    host_of(data)->shared_lock_.lock();
}


void PollHost::unlock(void *data)
{
    host_of(data)->shared_lock_.unlock();
}


void PollHost::drop(unsigned i)
{
    Link &link = links_[i];
    if (link.fd >= 0) {
        ::close(link.fd);
    }
    link.fd = -1;
    link.connecting = false;
    link.want_write = false;
    link.generation++;
    stats_[i].connected = false;
}


/* the host closes first, then tells the client, as the contract says */
void PollHost::lost(unsigned i, const char *reason)
{
    drop(i);
    stats_[i].losses++;
    if (client_ != nullptr) {
        rl_redis_on_closed(client_, i, reason);
    }
}


void PollHost::finish_connect(unsigned i)
{
    Link &link = links_[i];
    int error = 0;
    socklen_t error_len = sizeof(error);

    if (getsockopt(link.fd, SOL_SOCKET, SO_ERROR, &error, &error_len) != 0) {
        error = errno;
    }
    if (error != 0) {
        lost(i, std::strerror(error));
        return;
    }

    link.connecting = false;
    stats_[i].connects++;
    stats_[i].connected = true;
    if (client_ != nullptr) {
        rl_redis_on_connected(client_, i);
    }
}


void PollHost::read_link(unsigned i)
{
    char buffer[16384];
    const uint64_t generation = links_[i].generation;

    /* until it would block: the next poll() may not say it again */
    while (links_[i].generation == generation) {
        const ssize_t n = recv(links_[i].fd, buffer, sizeof(buffer), 0);
        if (n > 0) {
            if (client_ != nullptr) {
                rl_redis_on_data(client_, i, buffer, size_t(n));
            }
            continue;
        }
        if (n == 0) {
            lost(i, "Server closed the connection");
            return;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            lost(i, std::strerror(errno));
        }
        return;
    }
}


void PollHost::write_link(unsigned i)
{
    const uint64_t generation = links_[i].generation;
    links_[i].want_write = false;

    while (client_ != nullptr && links_[i].generation == generation) {
        const char *data = nullptr;
        size_t len = 0;
        rl_redis_output(client_, i, &data, &len);
        if (len == 0 || links_[i].generation != generation) {
            return;
        }

        const ssize_t n = send(links_[i].fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            rl_redis_output_sent(client_, i, size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            links_[i].want_write = true;
            return;
        }
        lost(i, n < 0 ? std::strerror(errno) : "send wrote nothing");
        return;
    }
}


void PollHost::run_once(int wait_ms)
{
    std::vector<pollfd> fds;
    std::vector<unsigned> which;

    for (unsigned i = 0; i < RL_REDIS_ADDRESSES; i++) {
        const Link &link = links_[i];
        if (link.fd < 0) {
            continue;
        }
        short events = 0;
        if (link.connecting) {
            events = POLLOUT;
        } else {
            events = POLLIN;
            if (link.want_write) {
                events |= POLLOUT;
            }
        }
        fds.push_back({ link.fd, events, 0 });
        which.push_back(i);
    }

    int timeout = posted_ ? 0 : std::max(wait_ms, 0);
    if (timer_armed_) {
        const uint64_t now = monotonic_us();
        const uint64_t left_ms = timer_at_us_ > now
                                 ? (timer_at_us_ - now + 999) / 1000 : 0;
        timeout = int(std::min<uint64_t>(uint64_t(timeout), left_ms));
    }

    const int ready = poll(fds.data(), fds.size(), timeout);

    for (size_t k = 0; ready > 0 && k < fds.size(); k++) {
        const unsigned i = which[k];
        const short revents = fds[k].revents;
        /* an earlier event of this pass may have closed or reopened it */
        if (revents == 0 || links_[i].fd != fds[k].fd) {
            continue;
        }

        if (links_[i].connecting) {
            finish_connect(i);
            continue;
        }

        const uint64_t generation = links_[i].generation;
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
            read_link(i);
        }
        if ((revents & POLLOUT) && links_[i].generation == generation
            && links_[i].want_write)
        {
            write_link(i);
        }
    }

    if (timer_armed_ && monotonic_us() >= timer_at_us_) {
        timer_armed_ = false;
        if (client_ != nullptr) {
            rl_redis_on_timer(client_);
        }
    }

    /* what this pass posted runs at its end; what that posts, next pass */
    if (posted_) {
        posted_ = false;
        if (client_ != nullptr) {
            rl_redis_on_posted(client_);
        }
    }
}


bool PollHost::run_until(const std::function<bool()> &predicate, int max_ms)
{
    const uint64_t deadline = monotonic_us() + uint64_t(max_ms) * 1000;

    while (!predicate()) {
        const uint64_t now = monotonic_us();
        if (now >= deadline) {
            return false;
        }
        run_once(int(std::min<uint64_t>((deadline - now) / 1000 + 1, 20)));
    }
    return true;
}


void PollHost::run_for(int ms)
{
    run_until([] { return false; }, ms);
}


SharedMemory::SharedMemory()
    : memory_(std::make_unique<uint64_t[]>(
          (rl_redis_shared_size() + sizeof(uint64_t) - 1)
          / sizeof(uint64_t)))
{
    shared_ = rl_redis_shared_init(memory_.get());
}


rl_redis_circuit_info_t SharedMemory::circuit(const std::string &address)
    const
{
    rl_redis_circuit_info_t info {};
    for (size_t i = 0; i < rl_redis_shared_circuits(shared_); i++) {
        rl_redis_shared_circuit(shared_, i, &info);
        if (address == info.address) {
            return info;
        }
    }
    return rl_redis_circuit_info_t {};
}

} // namespace rate_limit_test
