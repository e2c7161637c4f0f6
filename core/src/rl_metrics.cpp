/*
 * The metrics' text (rl_metrics.h), family by family in the order the
 * module has always served them.
 *
 * The text is written twice by the same code: once to count its bytes,
 * once into the host's memory of exactly that size.  So every shared
 * counter is read before the first pass, into a snapshot that both passes
 * share: a counter that moved in between would make the second pass
 * longer than the memory.
 */

#include <rl_metrics.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>


namespace {

/* by rl_verdict_outcome_e */
constexpr const char *outcome_names[] = {
    "passed", "rejected", "rejected_dry_run", "failed_open", "failed_closed",
    "degraded_local", "degraded_local_rejected"
};

static_assert(sizeof(outcome_names) / sizeof(outcome_names[0])
              == RL_VERDICT_OUTCOMES, "an outcome without its label");


/* the Redis clients' counters, read once */
struct Redis_snapshot {
    size_t                   ncircuits;
    rl_redis_circuit_info_t  circuits[RL_REDIS_ADDRESSES];
    rl_redis_latency_t       latency;
    uint64_t                 nodes;
};


/* writes into out, or with out nullptr only counts */
class Text {
public:
    explicit Text(unsigned char *out) noexcept : out_(out) {}

    size_t size() const noexcept { return len_; }

    Text &operator<<(std::string_view s) noexcept
    {
        if (out_ != nullptr) {
            std::memcpy(out_ + len_, s.data(), s.size());
        }
        len_ += s.size();
        return *this;
    }

    template <typename Integer>
    Text &number(Integer n) noexcept
    {
        char digits[24];
        const auto end = std::to_chars(digits, digits + sizeof(digits), n).ptr;
        return *this << std::string_view(digits, end - digits);
    }

    /* microseconds as seconds, with all six decimals */
    Text &seconds(uint64_t us) noexcept
    {
        char fraction[6];

        uint64_t rest = us % 1000000;
        for (size_t i = sizeof(fraction); i-- > 0; rest /= 10) {
            fraction[i] = static_cast<char>('0' + rest % 10);
        }

        return number(us / 1000000) << "."
               << std::string_view(fraction, sizeof(fraction));
    }

    /*
     * A label's value, escaped as the text format wants: backslash, double
     * quote and line feed, and nothing else (JSON's \t or \u00XX would be
     * invalid escapes there).
     */
    Text &label(std::string_view value) noexcept
    {
        for (const char c : value) {
            switch (c) {
            case '\\': *this << "\\\\"; break;
            case '"':  *this << "\\\""; break;
            case '\n': *this << "\\n"; break;
            default:   *this << std::string_view(&c, 1);
            }
        }
        return *this;
    }

private:
    unsigned char  *out_;
    size_t          len_ = 0;
};


std::string_view zone_name(const rl_metrics_zone_t &zone) noexcept
{
    return zone.name_len ? std::string_view(
                               reinterpret_cast<const char *>(zone.name),
                               zone.name_len)
                         : std::string_view();
}


std::string_view address(const rl_redis_circuit_info_t &circuit) noexcept
{
    return std::string_view(circuit.address,
                            strnlen(circuit.address, RL_REDIS_ADDRESS_LEN));
}


/* a family's HELP and TYPE lines, before its samples */
void family(Text &t, std::string_view name, std::string_view type,
    std::string_view help) noexcept
{
    t << "# HELP " << name << " " << help << "\n"
      << "# TYPE " << name << " " << type << "\n";
}


/* a label of a sample; no name: none */
struct Label {
    std::string_view  name;
    std::string_view  value;
};


/* name{first="...",second="..."} n */
template <typename Integer>
void sample(Text &t, std::string_view name, Label first, Label second,
    Integer n) noexcept
{
    t << name << "{" << first.name << "=\"";
    t.label(first.value) << "\"";

    if (!second.name.empty()) {
        t << "," << second.name << "=\"";
        t.label(second.value) << "\"";
    }

    t << "} ";
    t.number(n) << "\n";
}


/* a family of one sample for each zone, of what value() reads */
template <typename Value>
void by_zone(Text &t, const rl_metrics_t &m, std::string_view name,
    std::string_view type, std::string_view help, Value value) noexcept
{
    family(t, name, type, help);

    for (size_t i = 0; i < m.nzones; i++) {
        sample(t, name, { "zone", zone_name(m.zones[i]) }, {},
               value(m.zones[i].stats));
    }
}


void zones(Text &t, const rl_metrics_t &m) noexcept
{
    by_zone(t, m, "nginx_rate_limit_requests_total", "counter",
            "Requests a zone's limit applied to.",
            [](const rl_store_stats_t &s) { return s.requests; });

    family(t, "nginx_rate_limit_decisions_total", "counter",
           "Decisions of a zone, by outcome.");

    for (size_t i = 0; i < m.nzones; i++) {
        for (size_t o = 0; o < RL_VERDICT_OUTCOMES; o++) {
            sample(t, "nginx_rate_limit_decisions_total",
                   { "zone", zone_name(m.zones[i]) },
                   { "outcome", outcome_names[o] },
                   m.zones[i].stats.outcomes[o]);
        }
    }

    by_zone(t, m, "nginx_rate_limit_cached_rejections_total", "counter",
            "Rejections served from the zone's cache of what Redis "
            "rejected, with no round trip.",
            [](const rl_store_stats_t &s) { return s.cached; });

    by_zone(t, m, "nginx_rate_limit_dynamic_limits", "gauge",
            "Per-client limits from PostgreSQL held in a zone.",
            [](const rl_store_stats_t &s) { return s.rows; });

    family(t, "nginx_rate_limit_zone_memory_bytes", "gauge",
           "A zone's shared memory, used and free.");

    for (size_t i = 0; i < m.nzones; i++) {
        const rl_store_stats_t &s = m.zones[i].stats;

        /* the free slots are the memory a zone can still give */
        const uint64_t free_bytes = std::min(s.free_slots * s.slot_bytes,
                                             s.bytes);
        const Label zone { "zone", zone_name(m.zones[i]) };

        sample(t, "nginx_rate_limit_zone_memory_bytes", zone,
               { "state", "used" }, s.bytes - free_bytes);
        sample(t, "nginx_rate_limit_zone_memory_bytes", zone,
               { "state", "free" }, free_bytes);
    }
}


/* each Redis address: whether it answers, its circuit; the fleet size */
void redis(Text &t, const Redis_snapshot &r) noexcept
{
    family(t, "nginx_rate_limit_redis_up", "gauge",
           "Whether the Redis address answered this node last time.");

    for (size_t i = 0; i < r.ncircuits; i++) {
        sample(t, "nginx_rate_limit_redis_up",
               { "address", address(r.circuits[i]) }, {}, r.circuits[i].up);
    }

    family(t, "nginx_rate_limit_redis_circuit_open", "gauge",
           "Whether this node has stopped asking the Redis address.");

    for (size_t i = 0; i < r.ncircuits; i++) {
        sample(t, "nginx_rate_limit_redis_circuit_open",
               { "address", address(r.circuits[i]) }, {},
               r.circuits[i].open);
    }

    family(t, "nginx_rate_limit_redis_circuit_transitions_total", "counter",
           "Times the circuit of a Redis address opened or closed.");

    for (size_t i = 0; i < r.ncircuits; i++) {
        const Label at { "address", address(r.circuits[i]) };

        sample(t, "nginx_rate_limit_redis_circuit_transitions_total", at,
               { "to", "open" }, r.circuits[i].opened);
        sample(t, "nginx_rate_limit_redis_circuit_transitions_total", at,
               { "to", "closed" }, r.circuits[i].closed);
    }

    family(t, "nginx_rate_limit_nodes", "gauge",
           "Live nginx nodes sharing the Redis buckets, as the registry "
           "last said.");
    t << "nginx_rate_limit_nodes ";
    t.number(r.nodes) << "\n";

    family(t, "nginx_rate_limit_redis_latency_seconds", "histogram",
           "Redis round trips of decisions.");

    uint64_t cumulative = 0;

    for (size_t i = 0; i < RL_REDIS_LATENCY_BOUNDS; i++) {
        cumulative += r.latency.counts[i];
        t << "nginx_rate_limit_redis_latency_seconds_bucket{le=\"";
        t.seconds(r.latency.bounds_us[i]) << "\"} ";
        t.number(cumulative) << "\n";
    }

    cumulative += r.latency.counts[RL_REDIS_LATENCY_BOUNDS];

    t << "nginx_rate_limit_redis_latency_seconds_bucket{le=\"+Inf\"} ";
    t.number(cumulative) << "\n"
        << "nginx_rate_limit_redis_latency_seconds_sum ";
    t.seconds(r.latency.sum_us) << "\n"
        << "nginx_rate_limit_redis_latency_seconds_count ";
    t.number(cumulative) << "\n";
}


void write(Text &t, const rl_metrics_t &m, const Redis_snapshot *r) noexcept
{
    zones(t, m);

    if (r != nullptr) {
        redis(t, *r);
    }

    if (m.pg_synced) {
        family(t, "nginx_rate_limit_postgres_sync_age_seconds", "gauge",
               "Time since the last successful sync.");
        t << "nginx_rate_limit_postgres_sync_age_seconds ";
        t.number(m.pg_sync_age_s) << "\n";
    }
}

} // namespace


extern "C" unsigned char *
rl_metrics_text(const rl_metrics_t *m, const rl_api_alloc_t *a,
    size_t *len) noexcept
{
    if (m == nullptr || a == nullptr || len == nullptr
        || (m->zones == nullptr && m->nzones != 0))
    {
        return nullptr;
    }

    Redis_snapshot  snapshot;

    if (m->redis != nullptr) {
        snapshot.ncircuits = std::min<size_t>(
            rl_redis_shared_circuits(m->redis), RL_REDIS_ADDRESSES);

        for (size_t i = 0; i < snapshot.ncircuits; i++) {
            rl_redis_shared_circuit(m->redis, i, &snapshot.circuits[i]);
        }

        rl_redis_shared_latency(m->redis, &snapshot.latency);
        snapshot.nodes = rl_redis_shared_nodes(m->redis);
    }

    const Redis_snapshot *redis = m->redis ? &snapshot : nullptr;

    Text counted(nullptr);
    write(counted, *m, redis);

    auto *out = static_cast<unsigned char *>(a->alloc(a->data,
                                                      counted.size()));
    if (out == nullptr) {
        return nullptr;
    }

    Text written(out);
    write(written, *m, redis);

    *len = written.size();
    return out;
}
