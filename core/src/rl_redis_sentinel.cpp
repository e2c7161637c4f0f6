/*
 * Redis Sentinel: each worker asks every sentinel for the master of the
 * named service and listens to each for +switch-master; the master's link
 * (link 0) follows, and takes decisions only once ROLE says "master".  It
 * asks the sentinels again when the master cannot be reached, answers
 * -READONLY, or is not the master by ROLE.
 *
 * Sentinels may disagree for a moment during a failover: one that has not
 * heard of it yet names the old master.  So an answer moves the link only
 * when no master is known yet, or when the current one is in doubt and the
 * answer names another; else an answer that names another makes the
 * master in use say its ROLE again.  A +switch-master message, which a
 * sentinel sends only once it has taken the new configuration, always
 * moves it.
 */

#include "rl_redis_client.h"

#include <netinet/in.h>

#include <cstdio>
#include <cstring>


namespace rl {
namespace redis {

namespace {

constexpr char  kChannel[] = "+switch-master";


bool
is_string(const redisReply *r) noexcept
{
    return r && (r->type == REDIS_REPLY_STRING
                 || r->type == REDIS_REPLY_STATUS);
}


/* a port as Redis writes it in a reply; 0: not one */
unsigned
port_of(const char *s, size_t len) noexcept
{
    unsigned long  port = 0;

    if (len == 0 || len > 5) {
        return 0;
    }

    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }

        port = port * 10 + static_cast<unsigned>(s[i] - '0');
    }

    return port <= 65535 ? static_cast<unsigned>(port) : 0;
}

}  // namespace


/* link 0 is the master's, with no address until a sentinel answers */
bool
Client::sentinel_start(const rl_redis_config_t &config, char *err)
{
    if (cluster_ || config.nendpoints >= RL_REDIS_ADDRESSES) {
        std::snprintf(err, RL_REDIS_ERR_LEN,
                      "Sentinel takes no cluster, and at most %d sentinels",
                      RL_REDIS_ADDRESSES - 1);
        return false;
    }

    Link &master = links_[0];

    master.used = true;
    master.seed = true;
    master.address = "sentinel=" + sentinel_name_;

    for (size_t i = 0; i < config.nendpoints; i++) {
        Link *link = seed_link(config.endpoints[i], err);

        if (link == nullptr) {
            return false;
        }

        link->sentinel = true;
    }

    return true;
}


/*
 * A sentinel's connection: AUTH, the question, and the subscription, in
 * one write.  The link is ready at once: a later question goes behind
 * them, and a failed AUTH closes it.
 */
void
Client::sentinel_setup(Link &link)
{
    size_t at = link.out.mark();

    try {
        auth(link, sentinel_username_, sentinel_password_);

    } catch (...) {
        link.out.truncate(at);
        failure(link, true, "out of memory");
        close(link);
        return;
    }

    link.ready = true;
    link.progress_us = now_;

    (void) sentinel_question(link, false);
}


/*
 * SENTINEL get-master-addr-by-name, and the subscription to +switch-master
 * after it; again, on the subscribed connection, which takes no other
 * command, the subscription is ended first.  Unless an answer is owed
 * already.
 */
bool
Client::sentinel_question(Link &link, bool again)
{
    if (!link.open || !link.ready || link.asking) {
        return false;
    }

    size_t  at = link.out.mark();

    try {
        if (again) {
            begin(link);
            header(link, 2);
            arg(link, "UNSUBSCRIBE", 11);
            arg(link, kChannel, sizeof(kChannel) - 1);
            Expect e;
            e.name = "UNSUBSCRIBE";
            commit(link, std::move(e));
        }

        begin(link);
        header(link, 3);
        arg(link, "SENTINEL", 8);
        arg(link, "get-master-addr-by-name", 23);
        arg(link, sentinel_name_.data(), sentinel_name_.size());
        Expect q;
        q.kind = Expect_kind::sentinel;
        commit(link, std::move(q));

        begin(link);
        header(link, 2);
        arg(link, "SUBSCRIBE", 9);
        arg(link, kChannel, sizeof(kChannel) - 1);
        Expect e;
        e.name = "SUBSCRIBE";
        commit(link, std::move(e));

    } catch (...) {
        /* what the link expects no longer matches what it sends */
        link.out.truncate(at);
        failure(link, true, "out of memory");
        close(link);
        return false;
    }

    link.asking = true;

    /* a sentinel that takes the connection but never answers is dropped */
    set_link_timer(link.probe_deadline, now_ + kConnectTimeoutMs * 1000);

    return true;
}


void
Client::sentinel_timeout(Link &link)
{
    if (!link.open || !link.asking) {
        return;
    }

    char reason[64];

    std::snprintf(reason, sizeof(reason), "no answer for %llu ms",
                  static_cast<unsigned long long>(kConnectTimeoutMs));

    failure(link, true, reason);
    close(link);
}


/* every sentinel that takes the question; once in a gap at most, the
 * later ones deferred to its end */
void
Client::sentinel_ask()
{
    if (destroying_) {
        return;
    }

    if (sentinel_asked_us_
        && now_ - sentinel_asked_us_ < kSentinelAskGapMs * 1000)
    {
        if (sentinel_ask_at_ == 0) {
            sentinel_ask_at_ = sentinel_asked_us_ + kSentinelAskGapMs * 1000;
        }

        return;
    }

    sentinel_asked_us_ = now_;
    sentinel_ask_at_ = 0;

    for (Link &link : links_) {
        if (link.sentinel) {
            (void) sentinel_question(link, true);
        }
    }
}


/*
 * The master failed, or may be one no longer: the sentinels are asked,
 * and their answers may move the link.  why, when given, is logged once
 * until a master is confirmed by ROLE.
 */
void
Client::sentinel_doubt(const char *why)
{
    const Link &master = links_[0];

    /* the address of the connection that failed: the link may be on its
     * way to another already */
    if (!master_conn_.empty() && (!doubt_ || doubted_ != master_conn_)) {
        try {
            doubted_ = master_conn_;
            doubt_ = true;
            doubt_said_.clear();
        } catch (...) {
            /* the next failure doubts it */
        }
    }

    /* each reason once while the doubt lasts */
    if (why && doubt_ && doubt_said_ != why) {
        try {
            doubt_said_ = why;
        } catch (...) {
            doubt_said_.clear();
        }

        log(RL_REDIS_LOG_ERR,
            "rate_limit_redis \"%s\": %s %s, asking the sentinels",
            master.address.c_str(), doubted_.c_str(), why);
    }

    sentinel_ask();
}


/* a sentinel's connection failed: logged once until it answers again */
void
Client::sentinel_down(Link &link, bool hard, const char *reason)
{
    if (hard) {
        resolve(link);
    }

    if (!link.down_logged) {
        link.down_logged = true;
        log(RL_REDIS_LOG_ERR, "rate_limit_redis sentinel \"%s\": %s",
            link.address.c_str(), reason);
    }
}


/* AUTH, SUBSCRIBE, UNSUBSCRIBE: only an error says something */
void
Client::sentinel_internal(Link &link, Expect &e, const redisReply *reply)
{
    if (reply == nullptr || destroying_
        || reply->type != REDIS_REPLY_ERROR)
    {
        return;
    }

    char reason[RL_REDIS_ERR_LEN];

    std::snprintf(reason, sizeof(reason), "%s failed: %.*s", e.name,
                  static_cast<int>(reply->len), reply->str);

    failure(link, true, reason);
    close(link);
}


void
Client::sentinel_answer(Link &link, const redisReply *reply)
{
    link.asking = false;
    clear_link_timer(link.probe_deadline);

    if (reply == nullptr || destroying_) {
        return;
    }

    Link &master = links_[0];

    if (reply->type == REDIS_REPLY_NIL) {
        if (!link.unknown_logged) {
            link.unknown_logged = true;
            log(RL_REDIS_LOG_ERR,
                "rate_limit_redis sentinel \"%s\": no master named \"%s\"",
                link.address.c_str(), sentinel_name_.c_str());
        }

        if (master.host[0] == '\0' && sentinel_ask_at_ == 0) {
            sentinel_ask_at_ = now_ + kSentinelRetryMs * 1000;
        }

        return;
    }

    unsigned  port = 0;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && is_string(reply->element[0]) && is_string(reply->element[1]))
    {
        port = port_of(reply->element[1]->str, reply->element[1]->len);
    }

    if (port == 0) {
        char reason[RL_REDIS_ERR_LEN];

        std::snprintf(reason, sizeof(reason), "SENTINEL failed: %.*s",
                      reply->type == REDIS_REPLY_ERROR
                          ? static_cast<int>(reply->len) : 16,
                      reply->type == REDIS_REPLY_ERROR
                          ? reply->str : "unexpected reply");

        failure(link, true, reason);
        close(link);
        return;
    }

    link.backoff_ms = 0;
    link.down_logged = false;
    link.unknown_logged = false;

    const char *host = reply->element[0]->str;

    if (master.host[0] == '\0') {
        sentinel_master(link, host, port);
        return;
    }

    /* the master in doubt is named still: its ROLE says whether it is */
    if (master.port == port && std::strcmp(master.host, host) == 0) {
        if (doubt_) {
            check_role(master);
        }

        return;
    }

    /* a sentinel that has not heard of the failover names the old one */
    try {
        if (doubt_ && host_port(host, port) != doubted_) {
            sentinel_master(link, host, port);
            return;
        }
    } catch (...) {
        /* the next failure asks again */
        return;
    }

    /*
     * Not in doubt: the master in use may have missed a switch (while this
     * worker's sentinels were away), or the sentinel is behind.  The one in
     * use says which by ROLE: a demoted master is left, a master stays.
     */
    if (!doubt_) {
        check_role(master);
    }
}


/* ROLE on the master's ready connection, one at a time */
void
Client::check_role(Link &link)
{
    if (role_checking_ || link.moving) {
        return;
    }

    Expect e;
    e.kind = Expect_kind::role;

    role_checking_ = queue(link, 1, std::move(e), [&] {
        arg(link, "ROLE", 4);
    });
}


/*
 * "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>".  false:
 * the reply is no message, but a command's.
 */
bool
Client::sentinel_message(Link &link, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || !is_string(reply->element[0]) || !is_string(reply->element[2])
        || std::strcmp(reply->element[0]->str, "message") != 0)
    {
        return false;
    }

    /* the longest name, two IPv6 addresses and their ports */
    char        text[256 + 2 * (INET6_ADDRSTRLEN + 8)];
    const char *part[5];
    size_t      n = 0;

    /* cut short, it could name another address */
    if (reply->element[2]->len >= sizeof(text)) {
        return true;
    }

    std::memcpy(text, reply->element[2]->str, reply->element[2]->len);
    text[reply->element[2]->len] = '\0';

    for (char *p = text, *save = nullptr;
         n < 5 && (p = strtok_r(n ? nullptr : p, " ", &save)) != nullptr;
         n++)
    {
        part[n] = p;
    }

    if (n < 5 || sentinel_name_ != part[0] || destroying_) {
        return true;
    }

    unsigned  port = port_of(part[4], std::strlen(part[4]));
    Link     &master = links_[0];

    if (port && (master.port != port || std::strcmp(master.host, part[3])))
    {
        sentinel_master(link, part[3], port);
    }

    return true;
}


/* the master is at host:port, as the sentinel of link says */
void
Client::sentinel_master(Link &from, const char *host, unsigned port)
{
    Link             &master = links_[0];
    sockaddr_storage  sa = {};
    socklen_t         salen = 0;

    if (std::strlen(host) >= sizeof(master.host)
        || !socket_address(host, port, nullptr, sa, salen))
    {
        log(RL_REDIS_LOG_ERR,
            "rate_limit_redis \"%s\": sentinel \"%s\" names the master "
            "\"%.64s\", which is not a numeric address",
            master.address.c_str(), from.address.c_str(), host);
        return;
    }

    std::string  to = host_port(host, port);

    if (master.host[0]) {
        log(RL_REDIS_LOG_NOTICE,
            "rate_limit_redis \"%s\": the master moved from %s to %s, said "
            "sentinel %s", master.address.c_str(),
            host_port(master.host, master.port).c_str(), to.c_str(),
            from.address.c_str());

    } else {
        log(RL_REDIS_LOG_NOTICE,
            "rate_limit_redis \"%s\": the master is %s, said sentinel %s",
            master.address.c_str(), to.c_str(), from.address.c_str());
    }

    /* name and peer follow in connect(): the connection that drains may
     * still use them */
    std::snprintf(master.host, sizeof(master.host), "%s", host);
    master.port = port;
    master.sockaddr = sa;
    master.socklen = salen;

    move(master, true);
}


void
Client::role_reply(Link &link, const redisReply *reply)
{
    /* a check on a ready link, or the handshake's */
    if (link.ready) {
        role_checking_ = false;
    }

    if (reply == nullptr || destroying_) {
        return;
    }

    char reason[RL_REDIS_ERR_LEN];

    if (reply->type == REDIS_REPLY_ERROR) {
        std::snprintf(reason, sizeof(reason), "ROLE failed: %.*s",
                      static_cast<int>(reply->len), reply->str);
        failure(link, true, reason);
        close(link);
        return;
    }

    const char *role = reply->type == REDIS_REPLY_ARRAY && reply->elements
                       && is_string(reply->element[0])
                       ? reply->element[0]->str : "";

    if (std::strcmp(role, "master") == 0) {
        doubt_ = false;
        doubt_said_.clear();

        if (!link.ready && link.pending == 0) {
            ready(link);
        }

        return;
    }

    char why[96];

    std::snprintf(why, sizeof(why), "is not the master (ROLE says \"%.32s\")",
                  role);
    sentinel_doubt(why);

    std::snprintf(reason, sizeof(reason), "ROLE says \"%.32s\"", role);
    failure(link, true, reason);
    close(link);
}

}  // namespace redis
}  // namespace rl
