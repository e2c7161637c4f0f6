/* The text of rate_limit_metrics (rl_metrics.h), byte for byte. */

#include <rl_metrics.h>

/* the shared counters' layout, to set them as the Redis clients would */
#include "../core/src/rl_redis_client.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>


namespace {

/* what an nginx pool gives, freed with the test */
class Pool {
public:
    rl_api_alloc_t alloc()
    {
        return rl_api_alloc_t { &Pool::give, this };
    }

private:
    static void *give(void *data, size_t size)
    {
        auto *pool = static_cast<Pool *>(data);
        pool->blocks_.emplace_back(new unsigned char[size]);
        return pool->blocks_.back().get();
    }

    std::vector<std::unique_ptr<unsigned char[]>>  blocks_;
};


/* the Redis clients' shared memory, as rl_redis_shared_init() lays it */
class Shared {
public:
    Shared() : memory_(new unsigned char[rl_redis_shared_size() + 8])
    {
        void *aligned = memory_.get()
                        + (8 - reinterpret_cast<uintptr_t>(memory_.get()) % 8)
                          % 8;
        shared_ = rl_redis_shared_init(aligned);
    }

    ~Shared() { shared_->~rl_redis_shared_s(); }

    void add(const char *address, int up, int open, uint64_t opened,
             uint64_t closed)
    {
        const uint64_t i = shared_->ncircuits.load();
        rl::redis::Circuit &cb = shared_->circuits[i];

        std::strncpy(cb.address, address, sizeof(cb.address) - 1);
        cb.up = up;
        cb.open = open;
        cb.opened = opened;
        cb.closed = closed;
        shared_->ncircuits = i + 1;
    }

    rl_redis_shared_t *get() const { return shared_; }

private:
    std::unique_ptr<unsigned char[]>  memory_;
    rl_redis_shared_t                *shared_;
};


rl_store_stats_t stats(uint64_t base)
{
    rl_store_stats_t s {};

    s.requests = base;
    for (size_t o = 0; o < RL_VERDICT_OUTCOMES; o++) {
        s.outcomes[o] = base + o + 1;
    }
    s.cached = base + 10;
    s.rows = base + 20;
    s.slots = 1000;
    s.free_slots = 250;
    s.slot_bytes = 128;
    s.bytes = 1000 * 128 + 4096;
    return s;
}


std::string text_of(const rl_metrics_t &m)
{
    Pool pool;
    const rl_api_alloc_t a = pool.alloc();
    size_t len = 0;

    const unsigned char *text = rl_metrics_text(&m, &a, &len);
    EXPECT_NE(text, nullptr);

    return text ? std::string(reinterpret_cast<const char *>(text), len)
                : std::string();
}


const char zones_text[] =
    "# HELP nginx_rate_limit_requests_total Requests a zone's limit "
    "applied to.\n"
    "# TYPE nginx_rate_limit_requests_total counter\n"
    "nginx_rate_limit_requests_total{zone=\"api\"} 100\n"
    "nginx_rate_limit_requests_total{zone=\"web.v-2_\"} 18446744073709551615\n"
    "# HELP nginx_rate_limit_decisions_total Decisions of a zone, by "
    "outcome.\n"
    "# TYPE nginx_rate_limit_decisions_total counter\n"
    "nginx_rate_limit_decisions_total{zone=\"api\",outcome=\"passed\"} 101\n"
    "nginx_rate_limit_decisions_total{zone=\"api\",outcome=\"rejected\"} 102\n"
    "nginx_rate_limit_decisions_total{zone=\"api\","
    "outcome=\"rejected_dry_run\"} 103\n"
    "nginx_rate_limit_decisions_total{zone=\"api\",outcome=\"failed_open\"} "
    "104\n"
    "nginx_rate_limit_decisions_total{zone=\"api\",outcome=\"failed_closed\"} "
    "105\n"
    "nginx_rate_limit_decisions_total{zone=\"api\","
    "outcome=\"degraded_local\"} 106\n"
    "nginx_rate_limit_decisions_total{zone=\"api\","
    "outcome=\"degraded_local_rejected\"} 107\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\",outcome=\"passed\"} "
    "0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"rejected\"} 0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"rejected_dry_run\"} 0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"failed_open\"} 0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"failed_closed\"} 0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"degraded_local\"} 0\n"
    "nginx_rate_limit_decisions_total{zone=\"web.v-2_\","
    "outcome=\"degraded_local_rejected\"} 0\n"
    "# HELP nginx_rate_limit_cached_rejections_total Rejections served from "
    "the zone's cache of what Redis rejected, with no round trip.\n"
    "# TYPE nginx_rate_limit_cached_rejections_total counter\n"
    "nginx_rate_limit_cached_rejections_total{zone=\"api\"} 110\n"
    "nginx_rate_limit_cached_rejections_total{zone=\"web.v-2_\"} 0\n"
    "# HELP nginx_rate_limit_dynamic_limits Per-client limits from "
    "PostgreSQL held in a zone.\n"
    "# TYPE nginx_rate_limit_dynamic_limits gauge\n"
    "nginx_rate_limit_dynamic_limits{zone=\"api\"} 120\n"
    "nginx_rate_limit_dynamic_limits{zone=\"web.v-2_\"} 0\n"
    "# HELP nginx_rate_limit_zone_memory_bytes A zone's shared memory, used "
    "and free.\n"
    "# TYPE nginx_rate_limit_zone_memory_bytes gauge\n"
    /* 132096 laid out, 250 free slots of 128 bytes */
    "nginx_rate_limit_zone_memory_bytes{zone=\"api\",state=\"used\"} 100096\n"
    "nginx_rate_limit_zone_memory_bytes{zone=\"api\",state=\"free\"} 32000\n"
    "nginx_rate_limit_zone_memory_bytes{zone=\"web.v-2_\",state=\"used\"} 0\n"
    "nginx_rate_limit_zone_memory_bytes{zone=\"web.v-2_\",state=\"free\"} "
    "0\n";

const char redis_text[] =
    "# HELP nginx_rate_limit_redis_up Whether the Redis address answered "
    "this node last time.\n"
    "# TYPE nginx_rate_limit_redis_up gauge\n"
    "nginx_rate_limit_redis_up{address=\"127.0.0.1:6379\"} 1\n"
    "nginx_rate_limit_redis_up{address=\"/run/redis.sock\"} 0\n"
    "# HELP nginx_rate_limit_redis_circuit_open Whether this node has "
    "stopped asking the Redis address.\n"
    "# TYPE nginx_rate_limit_redis_circuit_open gauge\n"
    "nginx_rate_limit_redis_circuit_open{address=\"127.0.0.1:6379\"} 0\n"
    "nginx_rate_limit_redis_circuit_open{address=\"/run/redis.sock\"} 1\n"
    "# HELP nginx_rate_limit_redis_circuit_transitions_total Times the "
    "circuit of a Redis address opened or closed.\n"
    "# TYPE nginx_rate_limit_redis_circuit_transitions_total counter\n"
    "nginx_rate_limit_redis_circuit_transitions_total"
    "{address=\"127.0.0.1:6379\",to=\"open\"} 2\n"
    "nginx_rate_limit_redis_circuit_transitions_total"
    "{address=\"127.0.0.1:6379\",to=\"closed\"} 2\n"
    "nginx_rate_limit_redis_circuit_transitions_total"
    "{address=\"/run/redis.sock\",to=\"open\"} 3\n"
    "nginx_rate_limit_redis_circuit_transitions_total"
    "{address=\"/run/redis.sock\",to=\"closed\"} 2\n"
    "# HELP nginx_rate_limit_nodes Live nginx nodes sharing the Redis "
    "buckets, as the registry last said.\n"
    "# TYPE nginx_rate_limit_nodes gauge\n"
    "nginx_rate_limit_nodes 3\n"
    "# HELP nginx_rate_limit_redis_latency_seconds Redis round trips of "
    "decisions.\n"
    "# TYPE nginx_rate_limit_redis_latency_seconds histogram\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.000250\"} 1\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.000500\"} 1\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.001000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.002500\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.005000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.010000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.025000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.050000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.100000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"0.250000\"} 4\n"
    "nginx_rate_limit_redis_latency_seconds_bucket{le=\"+Inf\"} 6\n"
    "nginx_rate_limit_redis_latency_seconds_sum 2.001234\n"
    "nginx_rate_limit_redis_latency_seconds_count 6\n";

const char postgres_text[] =
    "# HELP nginx_rate_limit_postgres_sync_age_seconds Time since the last "
    "successful sync.\n"
    "# TYPE nginx_rate_limit_postgres_sync_age_seconds gauge\n"
    "nginx_rate_limit_postgres_sync_age_seconds 42\n";


/* two zones, one of them empty and with a counter at its largest */
struct Input {
    rl_metrics_zone_t  zones[2];
    Shared             shared;
    rl_metrics_t       m {};

    Input()
    {
        zones[0] = { reinterpret_cast<const unsigned char *>("api"), 3,
                     stats(100) };
        zones[1] = { reinterpret_cast<const unsigned char *>("web.v-2_"), 8,
                     rl_store_stats_t {} };
        zones[1].stats.requests = UINT64_MAX;

        shared.add("127.0.0.1:6379", 1, 0, 2, 2);
        shared.add("/run/redis.sock", 0, 1, 3, 2);
        shared.get()->nodes = 3;
        shared.get()->latency[0] = 1;
        shared.get()->latency[2] = 3;
        shared.get()->latency[RL_REDIS_LATENCY_BOUNDS] = 2;
        shared.get()->latency_sum_us = 2001234;

        m.zones = zones;
        m.nzones = 2;
    }
};


/*
 * The checks of t/test_metrics.py's parse(), and one more: every line is
 * HELP, TYPE, or a sample of the family typed last.
 */
void expect_parses(const std::string &text)
{
    /* a label's value: its escapes, or any byte but '"', '\\' and LF */
    static const std::string label =
        R"([a-zA-Z_][a-zA-Z0-9_]*="(\\[\\"n]|[^"\\\n])*")";
    static const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{)" + label + "(," + label
        + R"()*\})? (-?[0-9.]+|\+Inf)$)");
    static const std::regex help(
        R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$)");
    static const std::regex type(
        R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");

    ASSERT_FALSE(text.empty());
    ASSERT_EQ(text.back(), '\n');

    std::set<std::string> typed;
    std::string family;
    std::istringstream lines(text);
    std::string line;
    std::smatch match;

    while (std::getline(lines, line)) {
        ASSERT_FALSE(line.empty()) << "a blank line in:\n" << text;

        if (std::regex_match(line, match, help)) {
            continue;
        }

        if (std::regex_match(line, match, type)) {
            EXPECT_TRUE(typed.insert(match[1]).second) << "TYPE twice: "
                                                       << line;
            family = match[1];
            continue;
        }

        ASSERT_TRUE(std::regex_match(line, match, sample)) << line;

        const std::string name = match[1];
        EXPECT_TRUE(name == family || name == family + "_bucket"
                    || name == family + "_sum" || name == family + "_count")
            << "not after its TYPE: " << line;
    }
}


TEST(MetricsText, ZonesRedisAndPostgres)
{
    Input in;
    in.m.redis = in.shared.get();
    in.m.pg_synced = 1;
    in.m.pg_sync_age_s = 42;

    const std::string text = text_of(in.m);

    EXPECT_EQ(text, std::string(zones_text) + redis_text + postgres_text);
    expect_parses(text);
}


TEST(MetricsText, NoRedisNoSync)
{
    Input in;
    in.m.pg_sync_age_s = 42;    /* no sync yet: not shown */

    const std::string text = text_of(in.m);

    EXPECT_EQ(text, zones_text);
    expect_parses(text);
}


TEST(MetricsText, RedisWithoutPostgres)
{
    Input in;
    in.m.redis = in.shared.get();

    const std::string text = text_of(in.m);

    EXPECT_EQ(text, std::string(zones_text) + redis_text);
    expect_parses(text);
}


TEST(MetricsText, NoZoneStillTypesEveryFamily)
{
    rl_metrics_t m {};

    const std::string text = text_of(m);

    EXPECT_NE(text.find("# TYPE nginx_rate_limit_zone_memory_bytes gauge\n"),
              std::string::npos);
    expect_parses(text);
}


TEST(MetricsText, HostileAddressIsEscaped)
{
    Input in;
    in.m.redis = in.shared.get();
    in.shared.add("/tmp/a\"b\\c\nd} 1\n# TYPE x counter", 1, 0, 0, 0);

    const std::string text = text_of(in.m);

    EXPECT_NE(text.find("nginx_rate_limit_redis_up{address="
                        "\"/tmp/a\\\"b\\\\c\\nd} 1\\n# TYPE x counter\"} 1\n"),
              std::string::npos) << text;
    expect_parses(text);
}


TEST(MetricsText, AnAddressOfFullLengthIsCutAtItsEnd)
{
    Input in;
    in.m.redis = in.shared.get();
    const std::string longest(RL_REDIS_ADDRESS_LEN - 1, 'h');
    in.shared.add(longest.c_str(), 1, 0, 0, 0);

    const std::string text = text_of(in.m);

    EXPECT_NE(text.find("nginx_rate_limit_redis_up{address=\"" + longest
                        + "\"} 1\n"), std::string::npos);
    expect_parses(text);
}


TEST(MetricsText, FreeNeverAboveTheZone)
{
    Input in;
    in.zones[0].stats.free_slots = in.zones[0].stats.slots * 10;

    const std::string text = text_of(in.m);

    EXPECT_NE(text.find("nginx_rate_limit_zone_memory_bytes{zone=\"api\","
                        "state=\"used\"} 0\n"
                        "nginx_rate_limit_zone_memory_bytes{zone=\"api\","
                        "state=\"free\"} 132096\n"), std::string::npos);
}


TEST(MetricsText, NoMemoryNoText)
{
    Input in;
    const rl_api_alloc_t none { [](void *, size_t) -> void * {
                                    return nullptr;
                                }, nullptr };
    size_t len = 7;

    EXPECT_EQ(rl_metrics_text(&in.m, &none, &len), nullptr);
    EXPECT_EQ(len, 7u);
}


TEST(MetricsText, BadArguments)
{
    Pool pool;
    const rl_api_alloc_t a = pool.alloc();
    rl_metrics_t m {};
    size_t len;

    EXPECT_EQ(rl_metrics_text(nullptr, &a, &len), nullptr);
    EXPECT_EQ(rl_metrics_text(&m, nullptr, &len), nullptr);
    EXPECT_EQ(rl_metrics_text(&m, &a, nullptr), nullptr);

    m.nzones = 1;
    EXPECT_EQ(rl_metrics_text(&m, &a, &len), nullptr);
}

} // namespace
