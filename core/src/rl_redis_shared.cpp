/*
 * What a node's workers share: a circuit breaker for each Redis address,
 * the live-node count of the heartbeat, and the round-trip histogram.
 *
 * Each worker has its own connection, but the node as a whole decides
 * whether Redis is worth waiting for: once failures pile up, no worker
 * sends it a decision, every request is decided at once by its zone's
 * on_failure policy, and one probe at a time, with a growing pause between
 * them, tells when Redis answers again.  The worker that wins a transition
 * logs it, so the error log has one line per transition and node.
 */

#include "rl_redis_client.h"

#include <cstring>
#include <new>


namespace rl {
namespace redis {

namespace {

/* upper bounds of the round-trip histogram, in microseconds */
constexpr uint64_t  kLatencyBounds[RL_REDIS_LATENCY_BOUNDS] = {
    250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000
};

}  // namespace


/*
 * The circuit of an address, made on first use, under the host's lock:
 * addresses are few and come at start-up or with a new cluster map.
 */
Circuit *
Client::circuit_get(const std::string &address) noexcept
{
    if (shared_ == nullptr) {
        return nullptr;
    }

    size_t len = std::min(address.size(), size_t{RL_REDIS_ADDRESS_LEN - 1});
    Circuit *found = nullptr;

    ad_.lock(ad_.data);

    uint64_t n = shared_->ncircuits.load(std::memory_order_acquire);

    for (uint64_t i = 0; i < n; i++) {
        Circuit *cb = &shared_->circuits[i];

        if (std::strncmp(cb->address, address.data(), len) == 0
            && cb->address[len] == '\0')
        {
            found = cb;
            break;
        }
    }

    if (found == nullptr && n < RL_REDIS_ADDRESSES) {
        found = &shared_->circuits[n];

        std::memset(found->address, 0, sizeof(found->address));
        std::memcpy(found->address, address.data(), len);
        found->open.store(0);
        found->failures.store(0);
        found->probe_at.store(0);
        found->backoff.store(0);
        found->opened.store(0);
        found->closed.store(0);
        found->up.store(1);

        shared_->ncircuits.store(n + 1, std::memory_order_release);
    }

    ad_.unlock(ad_.data);

    return found;
}


/*
 * Whether a decision may be sent.  When the circuit is open, the one
 * caller in the whole node whose turn it is gets *probe set instead.
 */
bool
Client::circuit_allow(Circuit *cb, bool *probe) noexcept
{
    *probe = false;

    if (cb == nullptr || !cb->open.load(std::memory_order_relaxed)) {
        return true;
    }

    uint64_t now_ms = now_ / 1000;
    uint64_t at = cb->probe_at.load();

    if (static_cast<int64_t>(now_ms - at) >= 0
        && cb->probe_at.compare_exchange_strong(at,
                                                now_ms + cb->backoff.load()))
    {
        *probe = true;
    }

    return false;
}


void
Client::circuit_success(Circuit *cb) noexcept
{
    if (cb == nullptr) {
        return;
    }

    cb->up.store(1, std::memory_order_relaxed);

    if (cb->failures.load(std::memory_order_relaxed)) {
        cb->failures.store(0);
    }

    int open = 1;

    if (cb->open.load(std::memory_order_relaxed)
        && cb->open.compare_exchange_strong(open, 0))
    {
        cb->closed.fetch_add(1);

        log(RL_REDIS_LOG_NOTICE,
            "rate_limit_redis \"%s\" is reachable again: circuit closed, "
            "zones are enforced by Redis", cb->address);
    }
}


/*
 * A hard failure, a refused or lost connection, opens the circuit at once;
 * timeouts and error replies open it when they come in a row.
 */
void
Client::circuit_failure(Circuit *cb, bool hard, const char *reason) noexcept
{
    if (cb == nullptr) {
        return;
    }

    uint64_t now_ms = now_ / 1000;

    cb->up.store(0, std::memory_order_relaxed);

    if (cb->open.load()) {
        /* a probe failed: wait longer before the next one */
        uint64_t backoff = std::min(cb->backoff.load() * 2, kProbeMaxMs);
        cb->backoff.store(backoff);
        cb->probe_at.store(now_ms + backoff);
        return;
    }

    uint64_t failures = cb->failures.fetch_add(1) + 1;

    if (!hard && failures < kCircuitFailures) {
        return;
    }

    cb->backoff.store(kProbeMinMs);
    cb->probe_at.store(now_ms + kProbeMinMs);

    int closed = 0;

    if (!cb->open.compare_exchange_strong(closed, 1)) {
        return;
    }

    cb->opened.fetch_add(1);

    log(RL_REDIS_LOG_ERR,
        "rate_limit_redis \"%s\" is unreachable (%s): circuit open after "
        "%llu failure%s, requests are decided at once by the zones' "
        "on_failure policy: %s", cb->address, reason,
        static_cast<unsigned long long>(failures), failures == 1 ? "" : "s",
        policy_.c_str());
}


void
Client::latency(uint64_t us) noexcept
{
    if (shared_ == nullptr) {
        return;
    }

    size_t i;

    for (i = 0; i < RL_REDIS_LATENCY_BOUNDS; i++) {
        if (us <= kLatencyBounds[i]) {
            break;
        }
    }

    shared_->latency[i].fetch_add(1, std::memory_order_relaxed);
    shared_->latency_sum_us.fetch_add(us, std::memory_order_relaxed);
}

}  // namespace redis
}  // namespace rl


extern "C" {

size_t
rl_redis_shared_size(void) noexcept
{
    return sizeof(rl_redis_shared_t);
}


rl_redis_shared_t *
rl_redis_shared_init(void *memory) noexcept
{
    return new (memory) rl_redis_shared_t();
}


size_t
rl_redis_shared_circuits(const rl_redis_shared_t *shared) noexcept
{
    return shared->ncircuits.load(std::memory_order_acquire);
}


void
rl_redis_shared_circuit(const rl_redis_shared_t *shared, size_t i,
    rl_redis_circuit_info_t *out) noexcept
{
    const rl::redis::Circuit &cb = shared->circuits[i];

    std::memcpy(out->address, cb.address, sizeof(out->address));
    out->address[sizeof(out->address) - 1] = '\0';
    out->up = cb.up.load(std::memory_order_relaxed);
    out->open = cb.open.load(std::memory_order_relaxed);
    out->opened = cb.opened.load(std::memory_order_relaxed);
    out->closed = cb.closed.load(std::memory_order_relaxed);
}


void
rl_redis_shared_latency(const rl_redis_shared_t *shared,
    rl_redis_latency_t *out) noexcept
{
    for (size_t i = 0; i < RL_REDIS_LATENCY_BOUNDS; i++) {
        out->bounds_us[i] = rl::redis::kLatencyBounds[i];
    }

    for (size_t i = 0; i <= RL_REDIS_LATENCY_BOUNDS; i++) {
        out->counts[i] = shared->latency[i].load(std::memory_order_relaxed);
    }

    out->sum_us = shared->latency_sum_us.load(std::memory_order_relaxed);
}


uint64_t
rl_redis_shared_nodes(const rl_redis_shared_t *shared) noexcept
{
    return shared->nodes.load(std::memory_order_relaxed);
}

}  // extern "C"
