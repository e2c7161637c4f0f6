/*
 * The C face of the core's Redis client (rl_redis.h): no exception crosses
 * it; running out of memory fails the operation at hand.
 */

#include "rl_redis_client.h"

#include <cstdio>


struct rl_redis_client_s {
    rl::redis::Client  client;

    rl_redis_client_s(const rl_redis_config_t &config,
                      const rl_redis_adapter_t &adapter)
        : client(config, adapter)
    {
    }
};


namespace {

rl::redis::Request *
request_of(rl_redis_request_t *r) noexcept
{
    return reinterpret_cast<rl::redis::Request *>(r);
}


/*
 * Runs one event of the host's: the clock read once, the timer armed
 * again after it, and whatever it throws stopped here.
 */
template <typename F>
void
event(rl_redis_client_t *c, F &&f) noexcept
{
    if (c == nullptr) {
        return;
    }

    try {
        c->client.tick();
        f(c->client);
    } catch (...) {
        /* out of memory: what was under way failed as it could */
    }

    c->client.arm();
}


/* no key on its way: what rl_redis_decide() promises then */
void
fail_keys(rl_redis_key_t *keys, size_t nkeys) noexcept
{
    for (size_t i = 0; i < nkeys; i++) {
        keys[i].status = RL_REDIS_KEY_FAILED;
    }
}

}  // namespace


extern "C" {

rl_redis_client_t *
rl_redis_create(const rl_redis_config_t *config,
    const rl_redis_adapter_t *adapter, char *err) noexcept
{
    if (config->nendpoints == 0 || config->nendpoints > RL_REDIS_ADDRESSES) {
        std::snprintf(err, RL_REDIS_ERR_LEN,
                      "from 1 to %d Redis addresses are needed, not %zu",
                      RL_REDIS_ADDRESSES, config->nendpoints);
        return nullptr;
    }

    try {
        auto c = std::make_unique<rl_redis_client_t>(*config, *adapter);

        c->client.tick();

        if (!c->client.start(*config, err)) {
            return nullptr;
        }

        c->client.arm();

        return c.release();

    } catch (...) {
        std::snprintf(err, RL_REDIS_ERR_LEN, "out of memory");
        return nullptr;
    }
}


void
rl_redis_destroy(rl_redis_client_t *client) noexcept
{
    std::unique_ptr<rl_redis_client_t> drop(client);
}


void
rl_redis_on_connected(rl_redis_client_t *client, unsigned link) noexcept
{
    if (link < RL_REDIS_ADDRESSES) {
        event(client, [link](rl::redis::Client &c) { c.on_connected(link); });
    }
}


void
rl_redis_on_data(rl_redis_client_t *client, unsigned link, const char *data,
    size_t len) noexcept
{
    if (link < RL_REDIS_ADDRESSES) {
        event(client, [=](rl::redis::Client &c) {
            c.on_data(link, data, len);
        });
    }
}


void
rl_redis_on_closed(rl_redis_client_t *client, unsigned link,
    const char *reason) noexcept
{
    if (link < RL_REDIS_ADDRESSES) {
        event(client, [=](rl::redis::Client &c) {
            c.on_closed(link, reason ? reason : "connection closed");
        });
    }
}


void
rl_redis_on_resolved(rl_redis_client_t *client, unsigned link,
    const struct sockaddr *const *addrs, const socklen_t *lens, size_t n,
    uint64_t valid_ms, const char *err) noexcept
{
    if (link < RL_REDIS_ADDRESSES) {
        event(client, [=](rl::redis::Client &c) {
            c.on_resolved(link, addrs, lens, n, valid_ms, err);
        });
    }
}


void
rl_redis_output(rl_redis_client_t *client, unsigned link, const char **data,
    size_t *len) noexcept
{
    *data = nullptr;
    *len = 0;

    if (client && link < RL_REDIS_ADDRESSES) {
        client->client.output(link, data, len);
    }
}


void
rl_redis_output_sent(rl_redis_client_t *client, unsigned link, size_t n)
    noexcept
{
    if (client && link < RL_REDIS_ADDRESSES) {
        client->client.output_sent(link, n);
    }
}


void
rl_redis_on_timer(rl_redis_client_t *client) noexcept
{
    event(client, [](rl::redis::Client &c) { c.on_timer(); });
}


void
rl_redis_on_posted(rl_redis_client_t *client) noexcept
{
    event(client, [](rl::redis::Client &c) { c.on_posted(); });
}


int
rl_redis_decide(rl_redis_client_t *client, rl_redis_key_t *keys,
    size_t nkeys, void (*done)(void *data), void *data,
    rl_redis_request_t **request) noexcept
{
    int rc = RL_REDIS_ERROR;
    rl::redis::Request *r = nullptr;

    if (client == nullptr) {
        fail_keys(keys, nkeys);
        return RL_REDIS_ERROR;
    }

    event(client, [&](rl::redis::Client &c) {
        try {
            rc = c.decide(keys, nkeys, done, data, &r);
        } catch (...) {
            fail_keys(keys, nkeys);
            rc = RL_REDIS_ERROR;
        }
    });

    if (rc == RL_REDIS_OK) {
        *request = reinterpret_cast<rl_redis_request_t *>(r);
    }

    return rc;
}


void
rl_redis_cancel(rl_redis_client_t *client, rl_redis_request_t *request)
    noexcept
{
    if (request == nullptr) {
        return;
    }

    event(client, [request](rl::redis::Client &c) {
        c.cancel(request_of(request));
    });
}

}  // extern "C"
