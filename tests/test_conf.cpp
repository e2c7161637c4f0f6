/*
 * The configuration in the core (rl_conf.h): every directive's parameters
 * and the message of each refusal, word for word as nginx -t prints it (but
 * for the " in FILE:LINE" nginx appends), the time syntax as nginx reads
 * it, the checks across directives, the policy file's load into the zones,
 * and what a process builds.  The host here is the test: its zones are
 * plain structs, its resolver a table, its environment a map.
 */

#include "rate_limit_test_support.h"

#include <rl_conf.h>

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>


namespace {

using rate_limit_test::TempFolder;
using Words = std::vector<std::string>;


/* the arguments of one directive, NUL ended as nginx's */
class Line {
public:
    Line(std::vector<std::string> words, std::string file = "/etc/n.conf",
        size_t line = 7)
        : words_(std::move(words)), file_(std::move(file))
    {
        for (const std::string &w : words_) {
            args_.push_back({reinterpret_cast<const unsigned char *>(
                                 w.c_str()), w.size()});
        }

        line_.args = args_.data();
        line_.nargs = args_.size();
        line_.file = {reinterpret_cast<const unsigned char *>(file_.c_str()),
                      file_.size()};
        line_.line = line;
    }

    const rl_conf_line_t *get() const { return &line_; }

private:
    std::vector<std::string>    words_;
    std::string                 file_;
    std::vector<rl_conf_arg_t>  args_;
    rl_conf_line_t              line_{};
};


struct Resolver {
    std::map<std::string, std::pair<std::string, unsigned>>  hosts;
    /* names that do not resolve now, and their ports */
    std::map<std::string, unsigned>                          unresolved;
    std::vector<std::string>                                 asked;
    const char                                              *reason = nullptr;

    static int resolve(void *data, const unsigned char *address, size_t len,
        unsigned default_port, rl_conf_resolved_t *out)
    {
        auto         r = static_cast<Resolver *>(data);
        std::string  a(reinterpret_cast<const char *>(address), len);

        r->asked.push_back(a);

        /* a host that starts with a letter is a name */
        out->name = std::isalpha(static_cast<unsigned char>(a[0])) != 0;

        auto  name = r->unresolved.find(a);

        if (name != r->unresolved.end()) {
            out->port = name->second;
            out->err = r->reason;
            return RL_CONF_DECLINED;
        }

        auto  found = r->hosts.find(a);

        if (found == r->hosts.end()) {
            out->err = r->reason;
            return RL_CONF_ERROR;
        }

        std::snprintf(out->host, sizeof(out->host), "%s",
                      found->second.first.c_str());
        out->port = found->second.second ? found->second.second
                                         : default_port;
        return RL_CONF_OK;
    }
};


/* a process: its environment, and what it logs */
struct Process {
    static std::map<std::string, std::string>  env;

    std::vector<std::string>  logged;
    rl_conf_process_t         process{};
    std::string               hostname = "node1";

    explicit Process(unsigned worker = 0)
    {
        process.hostname = reinterpret_cast<const unsigned char *>(
            hostname.c_str());
        process.hostname_len = hostname.size();
        process.pid = 4242;
        process.master_pid = 17;
        process.worker = worker;
        process.getenv = getenv;
        process.log_error = log;
        process.log_data = this;
    }

    static char *getenv(const char *name)
    {
        auto  found = env.find(name);

        return found == env.end() ? nullptr : found->second.data();
    }

    static void log(void *data, const char *msg)
    {
        static_cast<Process *>(data)->logged.push_back(msg);
    }
};

std::map<std::string, std::string>  Process::env;


class Conf : public testing::Test {
protected:
    void SetUp() override
    {
        rl_conf_host_t  host{this, 4096, new_zone};

        conf_ = rl_conf_create(&host);
        ASSERT_NE(conf_, nullptr);
        Process::env.clear();
    }

    void TearDown() override { rl_conf_destroy(conf_); }

    static rl_zone_t *new_zone(void *data, const unsigned char *, size_t)
    {
        auto        test = static_cast<Conf *>(data);
        rl_zone_t  &zone = test->zones_.emplace_back();

        zone = rl_zone_t{};
        zone.host = &zone;
        return &zone;
    }

    /* "" when it is accepted, else the message */
    std::string zone(std::vector<std::string> params, size_t line = 7)
    {
        params.insert(params.begin(), {"rate_limit_zone", "$key"});
        Line       l(params, "/etc/n.conf", line);
        rl_conf_result_t  r;

        last_zone_ = nullptr;

        if (run(l, &r) != RL_CONF_OK) {
            return rl_conf_error(conf_);
        }

        last_zone_ = r.zone;
        last_size_ = r.size;
        return "";
    }

    std::string limit(std::vector<std::string> params, size_t line = 9)
    {
        params.insert(params.begin(), "rate_limit");
        Line  l(params, "/etc/n.conf", line);

        rl_conf_result_t  r;

        if (run(l, &r) != RL_CONF_OK) {
            return rl_conf_error(conf_);
        }

        limit_ = r.limit;
        return "";
    }

    /* "" when accepted, "is duplicate" as nginx says it, or the message */
    std::string directive(const char *name, std::vector<std::string> params)
    {
        params.insert(params.begin(), name);
        rl_conf_result_t  r;
        int               rc = run(Line(params), &r);

        return rc == RL_CONF_OK ? ""
               : rc == RL_CONF_DUPLICATE ? "is duplicate"
               : rl_conf_error(conf_);
    }

    std::string redis(std::vector<std::string> params)
    {
        return directive("rate_limit_redis", std::move(params));
    }

    std::string postgres(std::vector<std::string> params)
    {
        return directive("rate_limit_postgres", std::move(params));
    }

    int run(const Line &l, rl_conf_result_t *r)
    {
        return rl_conf_directive(conf_, l.get(), Resolver::resolve,
                                 &resolver_, r);
    }

    std::string finish()
    {
        return rl_conf_finish(conf_) == RL_CONF_OK ? ""
                                                   : rl_conf_error(conf_);
    }

    std::string redis_timeout(const std::string &value, uint64_t *ms)
    {
        resolver_.hosts["127.0.0.1"] = {"127.0.0.1", 0};
        std::string  err = redis({"127.0.0.1", "timeout=" + value});

        if (err.empty()) {
            Process            p;
            rl_redis_config_t  config;

            EXPECT_EQ(rl_conf_redis_config(conf_, &p.process, &config),
                      RL_CONF_OK);
            *ms = config.timeout_ms;
        }

        return err;
    }

    rl_conf_t              *conf_ = nullptr;
    std::deque<rl_zone_t>   zones_;
    rl_zone_t              *last_zone_ = nullptr;
    uint64_t                last_size_ = 0;
    rl_conf_limit_t         limit_{};
    Resolver                resolver_;
};


int64_t
parse_time(const std::string &text)
{
    return rl_conf_parse_time(
        reinterpret_cast<const unsigned char *>(text.data()), text.size());
}


/* what ngx_parse_time(text, 0) of nginx 1.22 gives */
TEST(ConfTime, AsNginxReadsIt)
{
    const std::vector<std::pair<std::string, int64_t>>  cases = {
        {"50ms", 50}, {"2s", 2000}, {"1m30s", 90000}, {"1h 2m", 3720000},
        {"1h2m3s4ms", 3723004}, {"5", 5000}, {"1s500ms", 1500},
        {"1d", 86400000}, {"1w", 604800000}, {"24d", 2073600000},
        {"2147483647ms", 2147483647}, {"2147483s", 2147483000},
        {"0", 0}, {"0ms", 0}, {"1m 5", 65000}, {"1m 5s", 65000},
        {"1w1d1h1m1s1ms", 694861001}, {"1ms 5", 5001},
        /* beyond what a timer takes, still a time to nginx: the directive
         * says "too large" */
        {"2147483648ms", 2147483648LL}, {"25d", 2160000000LL},
        {"2147484s", 2147484000LL}, {"3000000", 3000000000LL},
        {"9223372036854775807ms", INT64_MAX},
        {"9223372036854775s", 9223372036854775000LL},
        /* what nginx refuses */
        {"", -1}, {"ms", -1}, {"s", -1}, {"1y", -1}, {"1M", -1},
        {"500ms1s", -1}, {"1m1m", -1}, {"1s 1m", -1}, {"1 s", -1},
        {"1x", -1}, {"-1s", -1}, {"1.5s", -1}, {" 1s", -1},
        {"24d1d", -1}, {"1msms", -1},
        /* what would overflow nginx's 64-bit arithmetic */
        {"9223372036854775808ms", -1}, {"18446744073709551617ms", -1},
        {"18446744073709552", -1}, {"1s18446744073709552", -1},
        {"9223372036854776", -1}, {"9223372036854776s", -1},
        {"15250284453w", -1}, {"9223372036854775807ms1", -1},
        {"15250284452w", 9223372036569600000LL},
    };

    for (const auto &[text, ms] : cases) {
        EXPECT_EQ(parse_time(text), ms) << "\"" << text << "\"";
    }
}


TEST_F(Conf, ZoneAccepted)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=10r/s", "burst=20",
                    "on_failure=closed"}), "");
    ASSERT_NE(last_zone_, nullptr);
    EXPECT_EQ(last_size_, 1048576u);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(last_zone_->name),
                          last_zone_->name_len), "api");
    EXPECT_EQ(last_zone_->rate.count, 10u);
    EXPECT_EQ(last_zone_->params.burst, 20u);
    EXPECT_EQ(last_zone_->on_failure, RL_ZONE_FAILURE_CLOSED);
    EXPECT_EQ(last_zone_->backend, RL_ZONE_BACKEND_UNSET);
    EXPECT_GT(last_zone_->texts.burst_len, 0u);

    EXPECT_EQ(finish(), "");
    EXPECT_EQ(last_zone_->backend, RL_ZONE_BACKEND_LOCAL);
    EXPECT_EQ(rl_conf_redis_zones(conf_), 0u);
}


TEST_F(Conf, ZoneRefusals)
{
    const std::string  in = "\" in \"rate_limit_zone\" directive";

    EXPECT_EQ(zone({"zone=api", "rate=1r/s"}),
              "invalid zone \"zone=api" + in
              + ", expected \"zone=NAME:SIZE\"");
    EXPECT_EQ(zone({"zone=a b:1m", "rate=1r/s"}),
              "invalid zone name \"a b" + in + ": a zone name is 1 to 64 "
              "bytes of A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");
    EXPECT_EQ(zone({"zone=:1m", "rate=1r/s"}).substr(0, 21),
              "invalid zone name \"\" ");
    EXPECT_EQ(zone({"zone=api:16k", "rate=1r/s"}),
              "zone \"zone=api:16k" + in + " is too small");
    EXPECT_EQ(zone({"zone=api:1x", "rate=1r/s"})
                  .rfind("invalid zone size \"zone=api:1x" + in + ": ", 0),
              0u);
    EXPECT_EQ(zone({"zone=api:1m", "rate=fast"})
                  .rfind("invalid rate \"rate=fast" + in + ": ", 0),
              0u);
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "backend=mysql"}),
              "invalid parameter \"backend=mysql" + in + "");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "rate=2r/s"}),
              "duplicate parameter \"rate" + in);
    EXPECT_EQ(zone({"rate=1r/s"}),
              "\"rate_limit_zone\" must have \"zone\" parameter");
    EXPECT_EQ(zone({"zone=api:1m"}),
              "\"rate_limit_zone\" must have \"rate\" parameter");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=0"}),
              "invalid burst \"burst=0" + in + ", expected a whole number "
              "from 1 to 1000000000000000");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=1e3"}),
              "invalid burst \"burst=1e3" + in + ", expected a whole number "
              "from 1 to 1000000000000000");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=1000000000000001"}),
              "invalid burst \"burst=1000000000000001" + in + ": too large, "
              "at most 1000000000000000");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s",
                    "burst=99999999999999999999999"}),
              "invalid burst \"burst=99999999999999999999999" + in
              + ": too large, at most 1000000000000000");

    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s"}), "");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s"}),
              "duplicate zone \"api" + in);
}


/* a value shown in a message reads as one line, in its quotes */
TEST_F(Conf, ShownValuesAreEscaped)
{
    EXPECT_EQ(zone({"zone=a\"b\nc:1m", "rate=1r/s"}),
              "invalid zone name \"a\\\"b\\nc\" in \"rate_limit_zone\" "
              "directive: a zone name is 1 to 64 bytes of A-Z, a-z, 0-9, "
              "\"_\", \".\" and \"-\"");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=\"\n"}),
              "invalid burst \"burst=\\\"\\n\" in \"rate_limit_zone\" "
              "directive, expected a whole number from 1 to "
              "1000000000000000");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "b\"=1", "b\"=2"}),
              "invalid parameter \"b\"=1\" in \"rate_limit_zone\" "
              "directive");
    EXPECT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=1", "burst=2"}),
              "duplicate parameter \"burst\" in \"rate_limit_zone\" "
              "directive");
}


TEST_F(Conf, LimitRefusals)
{
    const std::string  in = "\" in \"rate_limit\" directive";

    EXPECT_EQ(limit({"cost=2"}),
              "\"rate_limit\" must have \"zone\" parameter");
    EXPECT_EQ(limit({"zone=a/b"})
                  .rfind("invalid zone name \"a/b" + in + ": a zone name", 0),
              0u);
    EXPECT_EQ(limit({"zone=api", "cost=0"}),
              "invalid cost \"cost=0" + in + ", expected a whole number "
              "from 1 to 1000000000000000");
    EXPECT_EQ(limit({"zone=api", "cost=2000000000000000"}),
              "invalid cost \"cost=2000000000000000" + in + ": too large, "
              "at most 1000000000000000");
    EXPECT_EQ(limit({"zone=api", "weight=2"}),
              "invalid parameter \"weight=2" + in);
    EXPECT_EQ(limit({"zone=api", "zone=api"}),
              "duplicate parameter \"zone" + in);

    ASSERT_EQ(limit({"zone=api", "cost=3"}), "");
    EXPECT_EQ(limit_.cost, 3u);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(limit_.cost_text),
                          limit_.cost_text_len), "3");
    ASSERT_NE(limit_.zone, nullptr);
    EXPECT_EQ(limit_.zone->host, limit_.zone);
}


TEST_F(Conf, CrossDirectiveChecks)
{
    /* the zone named first by a rate_limit line, at its line */
    ASSERT_EQ(limit({"zone=later"}, 3), "");
    EXPECT_EQ(finish(), "unknown zone \"later\" in \"rate_limit\" directive "
              "in /etc/n.conf:3");
}


TEST_F(Conf, ALimitUsesTheZoneDefinedLater)
{
    ASSERT_EQ(limit({"zone=api", "cost=2"}), "");
    rl_zone_t  *used = limit_.zone;

    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=5"}), "");
    EXPECT_EQ(last_zone_, used);
    EXPECT_EQ(zones_.size(), 1u);
    EXPECT_EQ(finish(), "");
}


TEST_F(Conf, CostAboveTheBurst)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s", "burst=5"}), "");
    ASSERT_EQ(limit({"zone=api", "cost=6"}, 12), "");
    EXPECT_EQ(finish(), "invalid cost \"6\" in \"rate_limit\" directive: it "
              "exceeds the burst 5 of zone \"api\", so no request could "
              "ever pass, in /etc/n.conf:12");
}


TEST_F(Conf, RedisBackendNeedsRateLimitRedis)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s", "backend=redis"}, 4), "");
    EXPECT_EQ(finish(), "\"rate_limit_zone\" directive: zone \"api\" uses "
              "\"backend=redis\" but \"rate_limit_redis\" is not set in "
              "/etc/n.conf:4");
}


/* a zone's errors after parsing point at the line that named it first */
TEST_F(Conf, ErrorsPointAtTheFirstUse)
{
    ASSERT_EQ(limit({"zone=api"}, 3), "");
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s", "backend=redis"}, 8), "");
    EXPECT_EQ(finish(), "\"rate_limit_zone\" directive: zone \"api\" uses "
              "\"backend=redis\" but \"rate_limit_redis\" is not set in "
              "/etc/n.conf:3");
}


TEST_F(Conf, ZoneNameRule)
{
    const std::string  longest(NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX, 'z');

    EXPECT_EQ(zone({"zone=" + longest + ":1m", "rate=1r/s"}), "");
    EXPECT_EQ(zone({"zone=A-Z_a.z-09:1m", "rate=1r/s"}), "");
    EXPECT_EQ(limit({"zone=" + longest + "z"}),
              "invalid zone name \"" + longest + "z\" in \"rate_limit\" "
              "directive: a zone name is 1 to 64 bytes of A-Z, a-z, 0-9, "
              "\"_\", \".\" and \"-\"");
    EXPECT_NE(limit({"zone=caf\xc3\xa9"}), "");
    EXPECT_NE(limit({"zone="}), "");
}


TEST_F(Conf, RedisIsTheDefaultBackendOnceSet)
{
    resolver_.hosts["10.0.0.1:7000"] = {"10.0.0.1", 7000};
    ASSERT_EQ(zone({"zone=a:1m", "rate=1r/s"}), "");
    rl_zone_t  *a = last_zone_;
    ASSERT_EQ(zone({"zone=b:1m", "rate=1r/s", "backend=local"}), "");
    rl_zone_t  *b = last_zone_;
    ASSERT_EQ(zone({"zone=c:1m", "rate=1r/s", "on_failure=local"}), "");
    rl_zone_t  *c = last_zone_;
    ASSERT_EQ(redis({"10.0.0.1:7000", "prefix=app"}), "");
    EXPECT_TRUE(rl_conf_has_redis(conf_));

    ASSERT_EQ(finish(), "");
    EXPECT_EQ(a->backend, RL_ZONE_BACKEND_REDIS);
    EXPECT_EQ(b->backend, RL_ZONE_BACKEND_LOCAL);
    EXPECT_EQ(rl_conf_redis_zones(conf_), 2u);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(a->redis_prefix),
                          a->redis_prefix_len), "app:a:");
    EXPECT_EQ(b->redis_prefix, nullptr);

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    ASSERT_EQ(config.nendpoints, 1u);
    EXPECT_STREQ(config.endpoints[0].host, "10.0.0.1");
    EXPECT_EQ(config.endpoints[0].port, 7000u);
    EXPECT_STREQ(config.endpoints[0].address, "10.0.0.1:7000");
    EXPECT_EQ(config.endpoints[0].unix_path, nullptr);
    EXPECT_EQ(config.password, nullptr);
    EXPECT_EQ(config.timeout_ms, 50u);
    EXPECT_EQ(config.db, 0u);
    EXPECT_STREQ(config.heartbeat_key, "app:nodes");
    EXPECT_EQ(config.heartbeat_key_len, 9u);
    EXPECT_STREQ(config.heartbeat_id, "node1:17");
    EXPECT_EQ(config.heartbeat_id_len, 8u);
    EXPECT_STREQ(config.failure_policy, "a=open, c=local");
    EXPECT_TRUE(p.logged.empty());
    (void) c;

    /* one heartbeat a node: the other workers send none */
    Process  other(1);
    ASSERT_EQ(rl_conf_redis_config(conf_, &other.process, &config),
              RL_CONF_OK);
    EXPECT_EQ(config.heartbeat_key, nullptr);
    EXPECT_EQ(config.heartbeat_id, nullptr);
}


TEST_F(Conf, RedisAddresses)
{
    const std::string  in = "\" in \"rate_limit_redis\" directive";

    EXPECT_EQ(redis({"db=1"}), "\"rate_limit_redis\" directive has no "
              "address");
    EXPECT_EQ(redis({"unix:"}), "invalid address \"unix:" + in
              + ": no socket path");

    const std::string  longest = "unix:/" + std::string(106, 'p');
    const std::string  too_long = "unix:/" + std::string(107, 'p');

    resolver_.reason = "host not found";
    EXPECT_EQ(redis({"nosuch:6379"}), "invalid address \"nosuch:6379" + in
              + ": host not found");
    resolver_.reason = nullptr;
    EXPECT_EQ(redis({"nosuch"}), "invalid address \"nosuch" + in);

    /* an address is resolved as it is read: its error comes first */
    EXPECT_EQ(redis({"nosuch", "db=x"}), "invalid address \"nosuch" + in);

    EXPECT_EQ(redis({too_long}), "invalid address \"" + too_long + in
              + ": the socket path is 108 bytes, at most 107 fit a unix "
              "socket address");
    EXPECT_EQ(redis({"unix:/\"\n" + std::string(106, 'p')}),
              "invalid address \"unix:/\\\"\\n" + std::string(106, 'p')
              + in + ": the socket path is 109 bytes, at most 107 fit a "
              "unix socket address");

    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};
    resolver_.hosts["10.0.0.2"] = {"10.0.0.2", 0};
    EXPECT_EQ(redis({"10.0.0.1", "10.0.0.2"}), "\"rate_limit_redis\" "
              "directive has several addresses but no \"cluster\" "
              "parameter");
    EXPECT_EQ(redis({"cluster", "10.0.0.1", "unix:/r.sock"}),
              "invalid address \"unix:/r.sock" + in
              + ": a cluster is reached over TCP");
    EXPECT_EQ(redis({"cluster", "10.0.0.1", "db=2"}), "\"rate_limit_redis\" "
              "directive: a Redis Cluster has no database but 0, \"db\" "
              "cannot be used with \"cluster\"");

    std::vector<std::string>  many(RL_REDIS_ADDRESSES + 1, "10.0.0.1");
    many.insert(many.begin(), "cluster");
    EXPECT_EQ(redis(many), "too many addresses in \"rate_limit_redis\" "
              "directive, at most 32");

    ASSERT_EQ(redis({longest, "db=3", "timeout=1s"}), "");
    EXPECT_EQ(redis({"10.0.0.1"}), "is duplicate");

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    ASSERT_EQ(config.nendpoints, 1u);
    EXPECT_EQ(config.endpoints[0].host, nullptr);
    EXPECT_EQ(std::string(config.endpoints[0].unix_path), longest.substr(5));
    EXPECT_EQ(config.db, 3u);
    EXPECT_EQ(config.timeout_ms, 1000u);
    EXPECT_STREQ(config.failure_policy, "");
}


TEST_F(Conf, RedisClusterSeeds)
{
    resolver_.hosts["a:7000"] = {"10.0.0.1", 7000};
    resolver_.hosts["b"] = {"10.0.0.2", 0};

    ASSERT_EQ(redis({"a:7000", "cluster", "b"}), "");
    EXPECT_EQ(resolver_.asked, (Words{"a:7000", "b"}));

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_EQ(config.cluster, 1);
    ASSERT_EQ(config.nendpoints, 2u);
    EXPECT_STREQ(config.endpoints[1].host, "10.0.0.2");
    EXPECT_EQ(config.endpoints[1].port, 6379u);
    EXPECT_STREQ(config.endpoints[1].address, "b");
}


/* a name that does not resolve now: the workers' resolver may, else the
 * configuration fails with nginx's words, once its file and line */
TEST_F(Conf, RedisNamesWithoutAResolverAreResolvedOnce)
{
    resolver_.unresolved["redis.test:6380"] = 6380;
    resolver_.reason = "host not found";

    ASSERT_EQ(redis({"redis.test:6380"}), "");
    EXPECT_EQ(rl_conf_redis_resolver(conf_, 0), RL_CONF_ERROR);
    EXPECT_STREQ(rl_conf_error(conf_), "invalid address \"redis.test:6380\" "
                 "in \"rate_limit_redis\" directive: host not found in "
                 "/etc/n.conf:7");
}


TEST_F(Conf, RedisNamesWithAResolverAreResolvedAtRunTime)
{
    resolver_.unresolved["redis.test:6380"] = 6380;
    resolver_.hosts["cache.test"] = {"10.0.0.2", 0};
    resolver_.hosts["10.0.0.1:7000"] = {"10.0.0.1", 7000};

    ASSERT_EQ(redis({"cluster", "redis.test:6380", "cache.test",
                     "10.0.0.1:7000"}), "");
    ASSERT_EQ(rl_conf_redis_resolver(conf_, 1), RL_CONF_OK);

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    ASSERT_EQ(config.nendpoints, 3u);
    EXPECT_EQ(config.endpoints[0].host, nullptr);
    EXPECT_EQ(config.endpoints[0].port, 6380u);
    EXPECT_EQ(config.endpoints[0].resolve, 1);
    EXPECT_STREQ(config.endpoints[1].host, "10.0.0.2");
    EXPECT_EQ(config.endpoints[1].resolve, 1);
    EXPECT_STREQ(config.endpoints[2].host, "10.0.0.1");
    EXPECT_EQ(config.endpoints[2].resolve, 0);
}


TEST_F(Conf, RedisNamesWithoutAResolverKeepTheAddressRead)
{
    resolver_.hosts["cache.test"] = {"10.0.0.2", 0};

    ASSERT_EQ(redis({"cache.test"}), "");
    ASSERT_EQ(rl_conf_redis_resolver(conf_, 0), RL_CONF_OK);

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_STREQ(config.endpoints[0].host, "10.0.0.2");
    EXPECT_EQ(config.endpoints[0].resolve, 0);
}


/* a password is never shown, not even a part of it */
TEST_F(Conf, RedisSecretsAreNotShown)
{
    const std::string  in = "\" in \"rate_limit_redis\" directive";

    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};

    EXPECT_EQ(redis({"10.0.0.1", "passwd=s3cret"}),
              "invalid parameter \"passwd" + in);
    EXPECT_EQ(redis({"10.0.0.1", "s3cret=x"}),
              "invalid parameter \"s3cret" + in);
    EXPECT_EQ(redis({"10.0.0.1", "password=s3cret", "password=env:PW"}),
              "duplicate parameter \"password" + in);
    EXPECT_EQ(redis({"10.0.0.1", "password=env:"}),
              "invalid parameter \"password=env:" + in
              + ": no variable name");
    EXPECT_EQ(redis({"10.0.0.1", "prefix="}),
              "invalid prefix \"prefix=" + in);
    EXPECT_EQ(redis({"10.0.0.1", "db=-1"}), "invalid db \"db=-1" + in
              + ", expected a whole number from 0 to 2147483647");
    EXPECT_EQ(redis({"10.0.0.1", "db=2147483648"}), "invalid db "
              "\"db=2147483648" + in + ": too large, at most 2147483647");

    ASSERT_EQ(redis({"10.0.0.1", "password=s3cret"}), "");

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_EQ(std::string(config.password, config.password_len), "s3cret");
}


TEST_F(Conf, RedisPasswordFromTheEnvironment)
{
    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};
    ASSERT_EQ(redis({"10.0.0.1", "password=env:RL_PW"}), "");

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_EQ(config.password, nullptr);
    EXPECT_EQ(p.logged, (Words{
        "rate_limit_redis: environment variable \"RL_PW\" holding the "
        "password is not set; add \"env RL_PW;\" to nginx.conf"}));

    Process::env["RL_PW"] = "hunter2";
    Process  q;
    ASSERT_EQ(rl_conf_redis_config(conf_, &q.process, &config), RL_CONF_OK);
    EXPECT_EQ(std::string(config.password, config.password_len), "hunter2");
    EXPECT_TRUE(q.logged.empty());
}


TEST_F(Conf, RedisAclUser)
{
    const std::string  in = "\" in \"rate_limit_redis\" directive";

    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};

    EXPECT_EQ(redis({"10.0.0.1", "username="}),
              "invalid parameter \"username=" + in + ": no user name");
    EXPECT_EQ(redis({"10.0.0.1", "username=ratelimit"}),
              "\"username=" + in + " needs \"password=\": an ACL user "
              "authenticates with both");
    ASSERT_EQ(redis({"10.0.0.1", "username=ratelimit", "password=env:PW"}),
              "");

    Process            p;
    rl_redis_config_t  config;

    Process::env["PW"] = "s3cret";
    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_EQ(std::string(config.username, config.username_len), "ratelimit");
    EXPECT_EQ(std::string(config.password, config.password_len), "s3cret");
}


TEST_F(Conf, RedisSentinel)
{
    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};
    resolver_.hosts["10.0.0.2:26380"] = {"10.0.0.2", 26380};

    /* the sentinels' port is the default, written before or after */
    ASSERT_EQ(redis({"10.0.0.1", "sentinel=my-master.1", "10.0.0.2:26380",
                     "password=env:PW", "sentinel_username=watcher",
                     "sentinel_password=env:SPW", "db=2"}), "");

    Process            p;
    rl_redis_config_t  config;

    Process::env["PW"] = "s3cret";
    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    ASSERT_EQ(config.nendpoints, 2u);
    EXPECT_STREQ(config.endpoints[0].host, "10.0.0.1");
    EXPECT_EQ(config.endpoints[0].port, 26379u);
    EXPECT_EQ(config.endpoints[1].port, 26380u);
    EXPECT_EQ(std::string(config.sentinel_master, config.sentinel_master_len),
              "my-master.1");
    EXPECT_EQ(std::string(config.sentinel_username,
                          config.sentinel_username_len), "watcher");
    EXPECT_EQ(config.sentinel_password, nullptr);
    EXPECT_EQ(std::string(config.password, config.password_len), "s3cret");
    EXPECT_EQ(config.db, 2u);
    EXPECT_EQ(p.logged, (Words{
        "rate_limit_redis: environment variable \"SPW\" holding the "
        "sentinel password is not set; add \"env SPW;\" to nginx.conf"}));

    Process::env["SPW"] = "watchword";
    Process  q;
    ASSERT_EQ(rl_conf_redis_config(conf_, &q.process, &config), RL_CONF_OK);
    EXPECT_EQ(std::string(config.sentinel_password,
                          config.sentinel_password_len), "watchword");
}


TEST_F(Conf, RedisSentinelWithoutIsNoSentinel)
{
    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};
    ASSERT_EQ(redis({"10.0.0.1"}), "");

    Process            p;
    rl_redis_config_t  config;

    ASSERT_EQ(rl_conf_redis_config(conf_, &p.process, &config), RL_CONF_OK);
    EXPECT_EQ(config.endpoints[0].port, 6379u);
    EXPECT_EQ(config.sentinel_master, nullptr);
    EXPECT_EQ(config.sentinel_password, nullptr);
    EXPECT_EQ(config.sentinel_username, nullptr);
}


TEST_F(Conf, RedisSentinelRefusals)
{
    const std::string  in = "\" in \"rate_limit_redis\" directive";

    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};
    resolver_.hosts["10.0.0.2"] = {"10.0.0.2", 0};

    EXPECT_EQ(redis({"10.0.0.1", "sentinel="}),
              "invalid parameter \"sentinel=" + in + ": no master name");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=my master"}),
              "invalid master name \"my master" + in + ": at most 128 "
              "letters, digits, \".\", \"_\", \":\" and \"-\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=a\"\n"}),
              "invalid master name \"a\\\"\\n" + in + ": at most 128 "
              "letters, digits, \".\", \"_\", \":\" and \"-\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=" + std::string(129, 'm')}),
              "invalid master name \"" + std::string(129, 'm') + in
              + ": at most 128 letters, digits, \".\", \"_\", \":\" and "
              "\"-\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=" + std::string(128, 'm'),
                     "cluster"}),
              "\"sentinel=\" and \"cluster\" cannot be used together in "
              "\"rate_limit_redis\" directive");
    EXPECT_EQ(redis({"sentinel=m", "password=x"}),
              "\"rate_limit_redis\" directive has no address");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=m", "unix:/s.sock"}),
              "invalid address \"unix:/s.sock" + in + ": the sentinels are "
              "reached over TCP");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel_password=hunter2"}),
              "\"sentinel_password=" + in + " needs \"sentinel=\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel_password=env:SPW"}),
              "\"sentinel_password=" + in + " needs \"sentinel=\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel_username=u"}),
              "\"sentinel_username=" + in + " needs \"sentinel=\"");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=m", "sentinel_username=u"}),
              "\"sentinel_username=" + in + " needs \"sentinel_password=\": "
              "an ACL user authenticates with both");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=m", "sentinel_username="}),
              "invalid parameter \"sentinel_username=" + in
              + ": no user name");
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=m", "sentinel_password=env:"}),
              "invalid parameter \"sentinel_password=env:" + in
              + ": no variable name");
    /* a misspelt secret is named, never shown */
    EXPECT_EQ(redis({"10.0.0.1", "sentinel=m", "sentinel_pasword=hunter2"}),
              "invalid parameter \"sentinel_pasword" + in);

    std::vector<std::string>  many = {"sentinel=m"};

    for (int i = 0; i < RL_REDIS_ADDRESSES; i++) {
        many.push_back("10.0.1." + std::to_string(i));
        resolver_.hosts[many.back()] = {many.back(), 0};
    }

    EXPECT_EQ(redis(many), "too many addresses in \"rate_limit_redis\" "
              "directive, at most 31 sentinels");
    many.pop_back();
    EXPECT_EQ(redis(many), "");
}


TEST_F(Conf, RedisTlsRefusals)
{
    const std::string  in = "\" in \"rate_limit_redis\" directive";
    const std::string  ca = "tls_trusted_certificate=/ca.pem";

    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};

    EXPECT_EQ(redis({"10.0.0.1", "tls=yes"}),
              "invalid value \"tls=yes" + in + ", it must be \"tls=on\" or "
              "\"tls=off\"");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_verify=1"}),
              "invalid value \"tls_verify=1" + in + ", it must be "
              "\"tls_verify=on\" or \"tls_verify=off\"");
    EXPECT_EQ(redis({"10.0.0.1", ca}),
              "\"tls_trusted_certificate" + in + " needs \"tls=on\"");
    EXPECT_EQ(redis({"10.0.0.1", "tls=off", "tls_server_name=r"}),
              "\"tls_server_name" + in + " needs \"tls=on\"");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on"}),
              "\"rate_limit_redis\" directive: \"tls_verify=on\" (the "
              "default) needs \"tls_trusted_certificate=\", the CA file that "
              "signed the server's certificate (or \"tls_verify=off\", "
              "which trusts any server)");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_certificate=/c.pem"}),
              "\"tls_certificate=" + in + " needs \"tls_certificate_key=\": "
              "a client certificate goes with its key");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_certificate_key=/k"}),
              "\"tls_certificate_key=" + in + " needs \"tls_certificate=\": "
              "a client certificate goes with its key");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", "tls_trusted_certificate="}),
              "invalid parameter \"tls_trusted_certificate=" + in
              + ": no file");
    const std::string  name = ": a server name is a host name (at most 253 "
                              "letters, digits, '-', '_' and '.') or an IP "
                              "address, without a port";

    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_server_name=a b"}),
              "invalid parameter \"tls_server_name=a b" + in + name);
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_server_name=r:6380"}),
              "invalid parameter \"tls_server_name=r:6380" + in + name);
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_server_name=[::1]"}),
              "invalid parameter \"tls_server_name=[::1]" + in + name);
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca,
                     "tls_server_name=" + std::string(254, 'a')}),
              "invalid parameter \"tls_server_name=" + std::string(254, 'a')
              + in + name);
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", "tls_verify=off", ca}),
              "\"tls_trusted_certificate=" + in + " is not used with "
              "\"tls_verify=off\"");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls_server_name="}),
              "invalid parameter \"tls_server_name=" + in + ": no name");
    EXPECT_EQ(redis({"unix:/run/redis.sock", "tls=on", ca}),
              "invalid address \"unix:/run/redis.sock" + in + ": Redis speaks "
              "TLS over TCP only, not on a unix socket");
    EXPECT_EQ(redis({"10.0.0.1", "tls=on", ca, "tls=on"}),
              "duplicate parameter \"tls" + in);
    EXPECT_EQ(redis({"10.0.0.1", "tls_ciphers=x"}),
              "invalid parameter \"tls_ciphers" + in);

    rl_conf_redis_tls_t  tls;

    ASSERT_EQ(rl_conf_redis_tls(conf_, &tls), RL_CONF_OK);
    EXPECT_EQ(tls.enabled, 0);
}


TEST_F(Conf, RedisTls)
{
    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};

    ASSERT_EQ(redis({"10.0.0.1", "tls=on", "tls_trusted_certificate=ca.pem",
                     "tls_certificate=c.pem", "tls_certificate_key=c.key",
                     "tls_server_name=redis-1.internal"}), "");

    rl_conf_redis_tls_t  tls;

    ASSERT_EQ(rl_conf_redis_tls(conf_, &tls), RL_CONF_OK);
    EXPECT_EQ(tls.enabled, 1);
    EXPECT_EQ(tls.verify, 1);
    EXPECT_STREQ(tls.trusted_certificate, "ca.pem");
    EXPECT_STREQ(tls.certificate, "c.pem");
    EXPECT_STREQ(tls.certificate_key, "c.key");
    EXPECT_STREQ(tls.server_name, "redis-1.internal");
}


TEST_F(Conf, RedisTlsWithoutVerification)
{
    resolver_.hosts["10.0.0.1"] = {"10.0.0.1", 0};

    ASSERT_EQ(redis({"10.0.0.1", "tls=on", "tls_verify=off"}), "");

    rl_conf_redis_tls_t  tls;

    ASSERT_EQ(rl_conf_redis_tls(conf_, &tls), RL_CONF_OK);
    EXPECT_EQ(tls.enabled, 1);
    EXPECT_EQ(tls.verify, 0);
    EXPECT_EQ(tls.trusted_certificate, nullptr);
    EXPECT_EQ(tls.certificate, nullptr);
    EXPECT_EQ(tls.server_name, nullptr);
}


TEST_F(Conf, TimeParameters)
{
    uint64_t  ms = 0;

    EXPECT_EQ(redis_timeout("1m30s", &ms), "");
    EXPECT_EQ(ms, 90000u);
}


TEST_F(Conf, TimeRefusals)
{
    uint64_t           ms = 0;
    const std::string  in = "\" in \"rate_limit_redis\" directive";
    const std::string  expected = ", expected a time above zero like 50ms "
                                  "or 2s";
    const std::string  large = ": too large, at most 2147483647ms";

    resolver_.hosts["127.0.0.1"] = {"127.0.0.1", 0};

    for (const std::string &bad : Words{"abc", "0", "0ms", "", "1y", "1x",
                                   "500ms1s", "-5s"}) {
        EXPECT_EQ(redis({"127.0.0.1", "timeout=" + bad}),
                  "invalid timeout \"timeout=" + bad + in + expected) << bad;
    }

    for (const std::string &huge : Words{"2147483648ms", "25d", "3000000",
                                    "99999999999999999999999s", "24d21h",
                                    "1h99999999999999999999ms",
                                    "18446744073709551617ms",
                                    "18446744073709552", "1s18446744073709552",
                                    "9223372036854776"}) {
        EXPECT_EQ(redis({"127.0.0.1", "timeout=" + huge}),
                  "invalid timeout \"timeout=" + huge + in + large) << huge;
    }

    EXPECT_EQ(redis({"127.0.0.1", "timeout=\"\n"}),
              "invalid timeout \"timeout=\\\"\\n" + in + expected);

    EXPECT_EQ(redis_timeout("2147483647ms", &ms), "");
    EXPECT_EQ(ms, 2147483647u);
}


TEST_F(Conf, Postgres)
{
    const std::string  in = "\" in \"rate_limit_postgres\" directive";

    EXPECT_EQ(postgres({"env:"}), "invalid connection string \"env:" + in
              + ": no variable name");
    /* a connection string split by spaces shows only a parameter's name */
    EXPECT_EQ(postgres({"host=db", "password=s3cret"}),
              "invalid parameter \"password" + in + "; quote a connection "
              "string that holds spaces");
    EXPECT_EQ(postgres({"host=db", "interval=0"}),
              "invalid interval \"interval=0" + in + ", expected a time "
              "above zero like 50ms or 2s");
    EXPECT_EQ(rl_conf_pg_conninfo(conf_), nullptr);

    ASSERT_EQ(postgres({"host=db password=s3cret", "interval=2s"}), "");
    EXPECT_EQ(postgres({"host=db"}), "is duplicate");
    EXPECT_STREQ(rl_conf_pg_conninfo(conf_), "host=db password=s3cret");

    ASSERT_EQ(zone({"zone=a:1m", "rate=1r/s"}), "");
    ASSERT_EQ(finish(), "");

    Process              p(0);
    rl_pg_sync_config_t  config;

    ASSERT_EQ(rl_conf_pg_sync_config(conf_, &p.process, &config),
              RL_CONF_OK);
    EXPECT_STREQ(config.conninfo, "host=db password=s3cret");
    EXPECT_EQ(config.interval_ms, 2000u);
    ASSERT_EQ(config.nzones, 1u);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(config.zones[0].name),
                          config.zones[0].name_len), "a");
    EXPECT_EQ(config.pid, 4242);
    EXPECT_EQ(config.preferred, 1);

    Process  other(2);
    ASSERT_EQ(rl_conf_pg_sync_config(conf_, &other.process, &config),
              RL_CONF_OK);
    EXPECT_EQ(config.preferred, 0);
}


TEST_F(Conf, PostgresFromTheEnvironment)
{
    ASSERT_EQ(postgres({"env:RL_PG"}), "");
    ASSERT_EQ(finish(), "");

    Process              p;
    rl_pg_sync_config_t  config;

    EXPECT_EQ(rl_conf_pg_sync_config(conf_, &p.process, &config),
              RL_CONF_DECLINED);
    EXPECT_EQ(p.logged, (Words{
        "rate_limit_postgres: environment variable \"RL_PG\" holding the "
        "connection string is not set; add \"env RL_PG;\" to nginx.conf"}));
    EXPECT_EQ(rl_conf_pg_conninfo(conf_), nullptr);

    Process::env["RL_PG"] = "host=db";
    ASSERT_EQ(rl_conf_pg_sync_config(conf_, &p.process, &config),
              RL_CONF_OK);
    EXPECT_STREQ(config.conninfo, "host=db");
    EXPECT_EQ(config.interval_ms, 10000u);
    EXPECT_STREQ(rl_conf_pg_conninfo(conf_), "host=db");
}


/* nginx counts the arguments first; what it lets through, the core checks */
TEST_F(Conf, UnknownDirectiveOrArguments)
{
    rl_conf_result_t  r;

    EXPECT_EQ(run(Line({"rate_limit_nosuch", "x"}), &r), RL_CONF_ERROR);
    EXPECT_STREQ(rl_conf_error(conf_), "unknown directive "
                 "\"rate_limit_nosuch\" or its arguments");
    EXPECT_EQ(run(Line({"rate_limit_status"}), &r), RL_CONF_ERROR);
    EXPECT_EQ(run(Line({"rate_limit_zone", "$key"}), &r), RL_CONF_ERROR);
    EXPECT_EQ(rl_conf_directive(conf_, nullptr, nullptr, nullptr, &r),
              RL_CONF_ERROR);
    EXPECT_STREQ(rl_conf_error(conf_), "no directive");
}


TEST_F(Conf, StatusAndLogLevel)
{
    rl_conf_result_t  r;

    for (const std::string &bad : Words{"399", "600", "abc", "", "-429", "4 29",
                                   "99999999999999999999999", "429x"}) {
        Line  l({"rate_limit_status", bad});

        ASSERT_EQ(run(l, &r), RL_CONF_ERROR);
        EXPECT_EQ(std::string(rl_conf_error(conf_)),
                  "invalid status \"" + bad + "\" in \"rate_limit_status\" "
                  "directive, expected a code from 400 to 599");
    }

    Line  ok({"rate_limit_status", "503"});
    ASSERT_EQ(run(ok, &r), RL_CONF_OK);
    EXPECT_EQ(r.value, 503u);

    const std::vector<std::pair<std::string, unsigned>>  levels = {
        {"info", 7}, {"notice", 6}, {"warn", 5}, {"error", 4}};

    for (const auto &[name, level] : levels) {
        Line  l({"rate_limit_log_level", name});

        ASSERT_EQ(run(l, &r), RL_CONF_OK);
        EXPECT_EQ(r.value, level);
    }

    Line  bad({"rate_limit_log_level", "debug"});
    ASSERT_EQ(run(bad, &r), RL_CONF_ERROR);
    EXPECT_STREQ(rl_conf_error(conf_), "invalid log level \"debug\" in "
                 "\"rate_limit_log_level\" directive, expected \"info\", "
                 "\"notice\", \"warn\" or \"error\"");
}


TEST_F(Conf, ApiTokens)
{
    rl_conf_result_t  r;

    for (const std::string &bad : Words{"env:", "secret", "ENV:X"}) {
        Line  l({"rate_limit_api_token", bad});

        ASSERT_EQ(run(l, &r), RL_CONF_ERROR);
        /* a token written by mistake is not shown */
        EXPECT_STREQ(rl_conf_error(conf_), "invalid token source in "
                     "\"rate_limit_api_token\" directive, expected "
                     "\"env:NAME\"");
    }

    for (const std::string &name : Words{"T1", "T2", "T1", "T3"}) {
        Line  l({"rate_limit_api_token", "env:" + name});

        ASSERT_EQ(run(l, &r), RL_CONF_OK);
        EXPECT_EQ(std::string(reinterpret_cast<const char *>(r.env.data),
                              r.env.len), name);
        EXPECT_EQ(r.env.data[r.env.len], '\0');
    }

    Process::env["T2"] = "";
    Process::env["T3"] = "token";

    Process  first(0);
    rl_conf_check_api_tokens(conf_, &first.process);
    EXPECT_EQ(first.logged, (Words{
        "rate_limit_api_token: environment variable \"T1\" is not set, so "
        "its API locations refuse every request; add \"env T1;\" to "
        "nginx.conf",
        "rate_limit_api_token: environment variable \"T2\" is empty, so its "
        "API locations refuse every request"}));

    Process  second(1);
    rl_conf_check_api_tokens(conf_, &second.process);
    EXPECT_TRUE(second.logged.empty());
}


class ConfPolicy : public Conf {
protected:
    std::string policy(const std::string &text)
    {
        const std::string  path = folder_.write("policy.yaml", text);
        rl_conf_result_t   r;

        EXPECT_EQ(run(Line({"rate_limit_policy_file", path}), &r),
                  RL_CONF_OK);
        return path;
    }

    TempFolder  folder_;
};


TEST_F(ConfPolicy, UnknownZone)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s"}), "");
    const std::string  path = policy("zones:\n  nosuch:\n    clients: {}\n");

    EXPECT_EQ(finish(), "\"rate_limit_policy_file\" directive: " + path
              + ":2:3: unknown zone \"nosuch\", expected a zone defined by "
              "\"rate_limit_zone\"");
}


TEST_F(ConfPolicy, FileErrors)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s"}), "");
    const std::string  path = policy("zones: [\n");
    const std::string  err = finish();

    EXPECT_EQ(err.rfind("\"rate_limit_policy_file\" directive: " + path + ":",
                        0), 0u) << err;

    rl_conf_result_t  r;

    EXPECT_EQ(run(Line({"rate_limit_policy_file", path}), &r),
              RL_CONF_DUPLICATE);
}


TEST_F(ConfPolicy, EntriesGoIntoTheZoneStore)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=1r/s"}), "");
    rl_zone_t  *api = last_zone_;
    ASSERT_EQ(zone({"zone=web:1m", "rate=1r/s"}), "");
    rl_zone_t  *web = last_zone_;

    policy("zones:\n  api:\n    clients:\n"
           "      k1: { rate: 10r/s, burst: 20 }\n"
           "      k2: { rate: 0r/s }\n");
    ASSERT_EQ(finish(), "");
    EXPECT_EQ(api->policy_entries, 2u);
    EXPECT_EQ(web->policy_entries, 0u);

    const size_t         bytes = 1 << 20;
    const unsigned char  seed[RL_STORE_SEED_LEN] = {1, 2, 3};
    std::vector<std::unique_ptr<void, decltype(&std::free)>>  memory;

    for (rl_zone_t *z : {api, web}) {
        memory.emplace_back(std::malloc(bytes), std::free);
        z->store.shared = rl_store_layout(memory.back().get(), bytes, seed);
        z->store.lock = [](void *) {};
        z->store.unlock = [](void *) {};
        ASSERT_NE(z->store.shared, nullptr);
    }

    size_t  n = 0;

    EXPECT_EQ(rl_conf_store_policy(conf_, api, &n), RL_STORE_OK);
    EXPECT_EQ(n, 2u);
    EXPECT_EQ(rl_conf_store_policy(conf_, web, &n), RL_STORE_OK);
    EXPECT_EQ(n, 0u);

    /* the file's key, encoded and hashed as the handler's are */
    unsigned char     encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    size_t            len = ngx_http_rate_limit_encode_key(
        reinterpret_cast<const unsigned char *>("k1"), 2, encoded);
    rl_store_key_t    key;
    rl_store_limit_t  found{};

    rl_store_key(&api->store, encoded, len, &key);
    EXPECT_EQ(rl_store_find_limit(&api->store, &key, &found),
              NGX_HTTP_RATE_LIMIT_SOURCE_YAML);
    EXPECT_EQ(found.rate.count, 10u);
    EXPECT_EQ(found.params.burst, 20u);

    /* the zone lists see the same zones, in the order of nginx.conf */
    rl_api_alloc_t  a{[](void *, size_t size) { return std::malloc(size); },
                      nullptr};
    rl_metrics_t    m{};

    ASSERT_EQ(rl_conf_metrics_zones(conf_, &a, &m), RL_CONF_OK);
    ASSERT_EQ(m.nzones, 2u);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(m.zones[1].name),
                          m.zones[1].name_len), "web");
    std::free(const_cast<rl_metrics_zone_t *>(m.zones));

    EXPECT_EQ(rl_conf_find_zone(conf_,
                                reinterpret_cast<const unsigned char *>("web"),
                                3), web);
    EXPECT_EQ(rl_conf_find_zone(conf_,
                                reinterpret_cast<const unsigned char *>("we"),
                                2), nullptr);
}


TEST_F(Conf, ApiZonesList)
{
    ASSERT_EQ(zone({"zone=api:1m", "rate=10r/s", "burst=3"}), "");
    ASSERT_EQ(finish(), "");

    std::vector<std::unique_ptr<void, decltype(&std::free)>>  blocks;
    rl_api_alloc_t   a{[](void *data, size_t size) {
                           auto  v = static_cast<std::vector<std::unique_ptr<
                               void, decltype(&std::free)>> *>(data);
                           v->emplace_back(std::malloc(size), std::free);
                           return v->back().get();
                       }, &blocks};
    rl_api_reply_t   reply{};

    ASSERT_EQ(rl_conf_api_zones(conf_, &a, &reply), RL_CONF_OK);
    const std::string  body(reinterpret_cast<const char *>(reply.body),
                            reply.len);
    EXPECT_NE(body.find("\"api\""), std::string::npos) << body;
    EXPECT_NE(body.find("\"local\""), std::string::npos) << body;
}

}  // namespace
