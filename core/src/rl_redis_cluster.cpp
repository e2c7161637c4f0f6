/*
 * A Redis Cluster's slot map, read with CLUSTER SLOTS by each worker and
 * read again after a redirect, a lost master, and every few seconds; and
 * the MOVED and ASK redirects, followed within the request's timeout.
 */

#include "rl_redis_client.h"

#include <cstdio>
#include <cstring>


namespace rl {
namespace redis {

/* CLUSTER SLOTS on any link that answers, unless asked a moment ago */
void
Client::ask_map(uint64_t min_gap_ms)
{
    if (map_ == nullptr || refreshing_ || destroying_
        || (refreshed_ && now_ - refreshed_us_ < min_gap_ms * 1000))
    {
        return;
    }

    for (Link &link : links_) {
        if (!link.used || !link.connected
            || (link.circuit && link.circuit->open.load()))
        {
            continue;
        }

        Expect e;
        e.kind = Expect_kind::slots;

        if (!queue(link, 2, std::move(e), [&] {
                arg(link, "CLUSTER", 7);
                arg(link, "SLOTS", 5);
            }))
        {
            continue;
        }

        refreshing_ = true;
        refreshed_ = true;
        refreshed_us_ = now_;
        return;
    }
}


void
Client::slots_reply(Link &link, const redisReply *reply)
{
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    refreshing_ = false;

    if (reply == nullptr || destroying_) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        std::snprintf(err, sizeof(err), "%.*s", static_cast<int>(reply->len),
                      reply->str);

    } else if (ngx_http_rate_limit_cluster_parse_slots(reply, link.host,
                                                       next_map_, err,
                                                       sizeof(err))
               == NGX_HTTP_RATE_LIMIT_OK)
    {
        map_error_logged_ = false;
        use_map();
        return;
    }

    if (!map_error_logged_) {
        map_error_logged_ = true;
        log(RL_REDIS_LOG_ERR,
            "rate_limit_redis \"%s\": CLUSTER SLOTS failed: %s",
            link.address.c_str(), err);
    }
}


/*
 * Swaps in the map just read: each master gets its link, connected at
 * once if new, and links no longer in the map stop reconnecting.
 */
void
Client::use_map()
{
    std::swap(map_, next_map_);

    for (unsigned i = 0; i < map_->nnodes; i++) {
        const ngx_http_rate_limit_cluster_node_t &node = map_->nodes[i];
        Link *link;

        try {
            link = link_for(node.host, std::strlen(node.host), node.port,
                            nullptr, nullptr, false);
        } catch (...) {
            link = nullptr;
        }

        node_links_[i] = link;

        if (link == nullptr) {
            log(RL_REDIS_LOG_ERR,
                "rate_limit_redis: cluster node \"%s:%u\" cannot be used: "
                "its address must be numeric, and at most %d addresses are "
                "kept", node.host, node.port, RL_REDIS_ADDRESSES);
            continue;
        }

        if (link->retired || (!link->open && !link->reconnect_at)) {
            link->retired = false;
            connect(*link);
        }
    }

    for (Link &link : links_) {
        if (!link.used || link.seed || link.retired) {
            continue;
        }

        unsigned j;

        for (j = 0; j < map_->nnodes; j++) {
            if (node_links_[j] == &link) {
                break;
            }
        }

        if (j == map_->nnodes) {
            link.retired = true;
            clear_link_timer(link.reconnect_at);
            close(link);
        }
    }
}


/*
 * MOVED: the slot has another master for good; ASK: this once, during a
 * migration.  The op goes there, within the time it was given.
 */
bool
Client::redirect(Op &op, const redisReply *reply)
{
    ngx_http_rate_limit_redirect_t to;

    if (ngx_http_rate_limit_cluster_redirect(reply->str, reply->len, &to)
        == NGX_HTTP_RATE_LIMIT_REDIRECT_NONE
        || op.redirects++ == kRedirectsMax)
    {
        return false;
    }

    const char *host = to.host[0] ? to.host : op.link->host;
    Link *link;

    try {
        link = link_for(host, std::strlen(host), to.port, nullptr, nullptr,
                        false);
    } catch (...) {
        link = nullptr;
    }

    if (link == nullptr) {
        return false;
    }

    if (!link->open) {
        link->retired = false;
        clear_link_timer(link->reconnect_at);

        connect(*link);

        if (!link->open) {
            return false;
        }
    }

    if (to.kind == NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED) {
        ask_map(kMapMinGapMs);

    } else if (!queue_internal(*link, "ASKING", "ASKING", nullptr, nullptr,
                               0))
    {
        return false;
    }

    op.link = link;

    if (destroying_) {
        return false;
    }

    return evalsha(op);
}

}  // namespace redis
}  // namespace rl
