/*
 * The YAML policy file: what loads, in which order, and where each refusal
 * points.  Every file is written into a mkdtemp folder that goes with the
 * test.
 */

#include "rate_limit_test_support.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <tuple>
#include <vector>


namespace {

using rate_limit_test::TempFolder;


struct Entry {
    std::string  zone;
    std::string  key;
    uint64_t     count;
    uint64_t     period_ms;
    uint64_t     burst;
    size_t       line;
    size_t       column;
};

bool operator==(const Entry &a, const Entry &b)
{
    return std::tie(a.zone, a.key, a.count, a.period_ms, a.burst, a.line,
                    a.column)
           == std::tie(b.zone, b.key, b.count, b.period_ms, b.burst, b.line,
                       b.column);
}

void PrintTo(const Entry &e, std::ostream *out)
{
    *out << "{" << e.zone << ", " << testing::PrintToString(e.key) << ", "
         << e.count << "r/" << e.period_ms << "ms, burst " << e.burst
         << ", at " << e.line << ":" << e.column << "}";
}


struct Loaded {
    int                       rc;
    std::string               error;
    std::vector<Entry>        entries;
    std::vector<std::string>  zones;      /* "name@line:column" */
};

Loaded load(const std::string &path)
{
    Loaded loaded { -1, "", {}, {} };
    char err[NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN] = "";

    /* a recognisable handle, to show that a failure leaves it alone */
    ngx_http_rate_limit_policy_t *const sentinel =
        reinterpret_cast<ngx_http_rate_limit_policy_t *>(&loaded);
    ngx_http_rate_limit_policy_t *policy = sentinel;

    loaded.rc = ngx_http_rate_limit_policy_load(path.c_str(), &policy, err,
                                                sizeof(err));
    loaded.error = err;

    if (loaded.rc != NGX_HTTP_RATE_LIMIT_OK) {
        EXPECT_EQ(policy, sentinel) << "written on failure";
        return loaded;
    }

    EXPECT_NE(policy, sentinel);
    EXPECT_EQ(loaded.error, "");

    for (size_t i = 0; i < ngx_http_rate_limit_policy_size(policy); i++) {
        ngx_http_rate_limit_policy_entry_t entry;
        ngx_http_rate_limit_policy_entry(policy, i, &entry);

        /* both are NUL ended as well as counted */
        EXPECT_EQ(entry.zone[entry.zone_len], '\0');
        EXPECT_EQ(entry.key[entry.key_len], '\0');

        loaded.entries.push_back(Entry {
            std::string(entry.zone, entry.zone_len),
            std::string(reinterpret_cast<const char *>(entry.key),
                        entry.key_len),
            entry.rate.count, entry.rate.period_ms, entry.burst, entry.line,
            entry.column });
    }

    for (size_t i = 0; i < ngx_http_rate_limit_policy_zones(policy); i++) {
        ngx_http_rate_limit_policy_zone_t zone;
        ngx_http_rate_limit_policy_zone(policy, i, &zone);

        loaded.zones.push_back(std::string(zone.name, zone.name_len) + "@"
                               + std::to_string(zone.line) + ":"
                               + std::to_string(zone.column));
    }

    ngx_http_rate_limit_policy_free(policy);
    return loaded;
}


class PolicyFile : public testing::Test {
protected:
    void SetUp() override
    {
        ASSERT_TRUE(folder_.ok());
    }

    std::string write(const std::string &text,
        const std::string &name = "policy.yaml")
    {
        return folder_.write(name, text);
    }

    Loaded load_text(const std::string &text)
    {
        return load(write(text));
    }

    TempFolder  folder_;
};


const std::string api_clients = "zones:\n  api:\n    clients:\n";


TEST_F(PolicyFile, TheDocumentedExample)
{
    const Loaded loaded = load_text(
        "zones:\n"
        "  api:\n"
        "    clients:\n"
        "      partner-acme: { rate: 1000r/m, burst: 200 }\n"
        "      trial-42:     { rate: 10r/m }          # burst: the count\n"
        "      blocked-bot:  { rate: 0r/s }           # blocked\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    EXPECT_EQ(loaded.entries, (std::vector<Entry> {
        { "api", "blocked-bot", 0, 1000, 0, 6, 7 },
        { "api", "partner-acme", 1000, 60000, 200, 4, 7 },
        { "api", "trial-42", 10, 60000, 10, 5, 7 },
    }));
}


TEST_F(PolicyFile, EmptyPoliciesAreValid)
{
    for (const std::string &text : std::vector<std::string> {
             "", "\n\n", "# nothing yet\n", "zones: {}\n", "---\n",
             "--- {}\n", "{}", "zones:\n  api: {}\n",
             "zones:\n  api:\n    clients: {}\n", "---\nzones: {}\n...\n" })
    {
        const Loaded loaded = load_text(text);
        EXPECT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK)
            << testing::PrintToString(text) << ": " << loaded.error;
        EXPECT_TRUE(loaded.entries.empty()) << testing::PrintToString(text);
    }
}


TEST_F(PolicyFile, EntriesAreSortedBytewiseByZoneThenKey)
{
    const Loaded loaded = load_text(
        "zones:\n"
        "  web:\n"
        "    clients:\n"
        "      b: { rate: 1r/s }\n"
        "      a: { rate: 1r/s }\n"
        "  api:\n"
        "    clients:\n"
        "      \"caf\\u00e9\": { rate: 1r/s }\n"
        "      cafe: { rate: 1r/s }\n"
        "      Zed: { rate: 1r/s }\n"
        "      ab: { rate: 1r/s }\n"
        "      a: { rate: 1r/s }\n"
        "      \"~\": { rate: 1r/s }\n"
        "  API:\n"
        "    clients:\n"
        "      x: { rate: 1r/s }\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;

    std::vector<std::pair<std::string, std::string>> order;
    for (const Entry &entry : loaded.entries) {
        order.emplace_back(entry.zone, entry.key);
    }

    /* upper case before lower, a prefix first, UTF-8 after ASCII */
    EXPECT_EQ(order, (std::vector<std::pair<std::string, std::string>> {
        { "API", "x" }, { "api", "Zed" }, { "api", "a" }, { "api", "ab" },
        { "api", "cafe" }, { "api", "caf\xc3\xa9" }, { "api", "~" },
        { "web", "a" }, { "web", "b" } }));
}


TEST_F(PolicyFile, KeysAreArbitraryText)
{
    /* as long as PostgreSQL and the bucket API take them */
    const std::string long_key(NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX, 'k');
    const Loaded loaded = load_text(
        api_clients
        + "      \"user:42 with spaces\": { rate: 5r/s }\n"
        + "      '#hash': { rate: 5r/s }\n"
        + "      12345: { rate: 5r/s }\n"
        + "      null: { rate: 5r/s }\n"
        + "      \"nul\\0inside\": { rate: 5r/s }\n"
        + "      \xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88: { rate: 5r/s }\n"
        /* YAML's implicit keys stop at 1024 characters */
        + "      ? " + long_key + "\n      : { rate: 5r/s }\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    ASSERT_EQ(loaded.entries.size(), 7u);

    std::vector<std::string> keys;
    for (const Entry &entry : loaded.entries) {
        keys.push_back(entry.key);
    }
    EXPECT_EQ(keys, (std::vector<std::string> {
        "#hash", "12345", long_key, std::string("nul\0inside", 10), "null",
        "user:42 with spaces", "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88" }));
}


TEST_F(PolicyFile, BlockStyleFlowStyleAndQuotedRates)
{
    const Loaded loaded = load_text(
        "# a comment first\n"
        "zones:\n"
        "  api:\n"
        "    clients:\n"
        "      block:\n"
        "        rate: 3r/500ms\n"
        "        burst: 7\n"
        "      quoted: { rate: \"10r/s\", burst: 0 }\n"
        "      single: { rate: '1r/d' }\n"
        "      blocked-with-burst: { burst: 5, rate: 0r/m }\n"
        "  other: { clients: { k: { rate: 1000000r/s, "
        "burst: 1000000000000000 } } }\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    EXPECT_EQ(loaded.entries, (std::vector<Entry> {
        { "api", "block", 3, 500, 7, 5, 7 },
        { "api", "blocked-with-burst", 0, 60000, 5, 10, 7 },
        { "api", "quoted", 10, 1000, 0, 8, 7 },
        { "api", "single", 1, 86400000, 1, 9, 7 },
        { "other", "k", 1000000, 1000, 1000000000000000ULL, 11, 23 },
    }));
}


TEST_F(PolicyFile, ByteOrderMarkAndCrLf)
{
    const Loaded loaded = load_text(
        "\xef\xbb\xbfzones:\r\n  api:\r\n    clients:\r\n"
        "      a: { rate: 1r/s }\r\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    EXPECT_EQ(loaded.entries, (std::vector<Entry> {
        { "api", "a", 1, 1000, 1, 4, 7 } }));
}


TEST_F(PolicyFile, EntriesMakeUsableParameters)
{
    const Loaded loaded = load_text(
        api_clients + "      ok: { rate: 10r/s, burst: 20 }\n"
                    + "      zero-burst: { rate: 10r/s, burst: 0 }\n"
                    + "      zero-rate: { rate: 0r/s }\n");
    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    ASSERT_EQ(loaded.entries.size(), 3u);

    for (const Entry &entry : loaded.entries) {
        const ngx_http_rate_limit_rate_t rate { entry.count,
                                                entry.period_ms };
        ngx_http_rate_limit_params_t params {};
        ASSERT_EQ(ngx_http_rate_limit_make_params_blocking(
                      &rate, entry.burst, &params, nullptr, 0),
                  NGX_HTTP_RATE_LIMIT_OK) << entry.key;
        EXPECT_EQ(ngx_http_rate_limit_params_blocked(&params),
                  entry.key == "ok" ? 0 : 1) << entry.key;
    }
}


TEST_F(PolicyFile, AccessorsTolerateNullAndOutOfRange)
{
    EXPECT_EQ(ngx_http_rate_limit_policy_size(nullptr), 0u);
    ngx_http_rate_limit_policy_free(nullptr);

    ngx_http_rate_limit_policy_entry_t entry;
    std::memset(&entry, 0x5a, sizeof(entry));
    ngx_http_rate_limit_policy_entry(nullptr, 0, &entry);
    EXPECT_EQ(entry.zone, nullptr);
    EXPECT_EQ(entry.key_len, 0u);

    ngx_http_rate_limit_policy_t *policy = nullptr;
    ASSERT_EQ(ngx_http_rate_limit_policy_load(
                  write(api_clients + "      a: { rate: 1r/s }\n").c_str(),
                  &policy, nullptr, 0),
              NGX_HTTP_RATE_LIMIT_OK);
    ASSERT_EQ(ngx_http_rate_limit_policy_size(policy), 1u);

    std::memset(&entry, 0x5a, sizeof(entry));
    ngx_http_rate_limit_policy_entry(policy, 1, &entry);
    EXPECT_EQ(entry.zone, nullptr);
    EXPECT_EQ(entry.key, nullptr);
    EXPECT_EQ(entry.burst, 0u);
    EXPECT_EQ(entry.line, 0u);
    ngx_http_rate_limit_policy_entry(policy, 0, nullptr);

    ngx_http_rate_limit_policy_free(policy);

    char err[64] = "";
    EXPECT_EQ(ngx_http_rate_limit_policy_load(nullptr, &policy, err,
                                              sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_policy_load("/x", nullptr, err,
                                              sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
}


TEST_F(PolicyFile, UnreadableFiles)
{
    const std::string missing = folder_.path() + "/missing.yaml";
    Loaded loaded = load(missing);
    EXPECT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(loaded.error,
              missing + ": cannot open: No such file or directory");

    loaded = load(folder_.path());
    EXPECT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(loaded.error, folder_.path() + ": cannot read: Is a directory");
}


TEST_F(PolicyFile, LargerThanTheLimitIsRefusedUnread)
{
    /* sparse: the size is refused before a byte is read */
    const std::string path = write("");
    ASSERT_EQ(truncate(path.c_str(), NGX_HTTP_RATE_LIMIT_POLICY_MAX_SIZE + 1),
              0);

    const auto started = std::chrono::steady_clock::now();
    const Loaded loaded = load(path);
    EXPECT_LT(std::chrono::steady_clock::now() - started,
              std::chrono::milliseconds(200));

    EXPECT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(loaded.error, path + ": the file is larger than 64 MiB, the "
                                   "most a policy may be");
}


TEST_F(PolicyFile, AHundredThousandClientsLoadFast)
{
    constexpr size_t clients = 100000;

    std::string text = "zones:\n  api:\n    clients:\n";
    for (size_t i = 0; i < clients; i++) {
        /* written in an order that sorting must undo */
        const size_t n = (i * 7919) % clients;
        text += "      client-" + std::to_string(n) + ": { rate: "
                + std::to_string(1 + n % 1000) + "r/m, burst: "
                + std::to_string(n % 50) + " }\n";
    }
    const std::string path = write(text);

    const auto started = std::chrono::steady_clock::now();
    ngx_http_rate_limit_policy_t *policy = nullptr;
    char err[NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN] = "";
    ASSERT_EQ(ngx_http_rate_limit_policy_load(path.c_str(), &policy, err,
                                              sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK) << err;
    const auto took = std::chrono::steady_clock::now() - started;

    /* about a tenth of a second here: the bound leaves room for slow CI */
    EXPECT_LT(took, std::chrono::seconds(3));
    RecordProperty("load_ms", static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(took).count()));

    ASSERT_EQ(ngx_http_rate_limit_policy_size(policy), clients);

    std::vector<std::string> keys;
    for (size_t i = 0; i < clients; i++) {
        ngx_http_rate_limit_policy_entry_t entry;
        ngx_http_rate_limit_policy_entry(policy, i, &entry);
        keys.emplace_back(reinterpret_cast<const char *>(entry.key),
                          entry.key_len);
    }
    EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
    EXPECT_EQ(std::adjacent_find(keys.begin(), keys.end()), keys.end());

    /* what C would do: binary search, then read the entry */
    const auto found = std::lower_bound(keys.begin(), keys.end(),
                                        "client-4242");
    ASSERT_NE(found, keys.end());
    ASSERT_EQ(*found, "client-4242");

    ngx_http_rate_limit_policy_entry_t entry;
    ngx_http_rate_limit_policy_entry(
        policy, static_cast<size_t>(found - keys.begin()), &entry);
    EXPECT_EQ(entry.rate.count, 243u);
    EXPECT_EQ(entry.rate.period_ms, 60000u);
    EXPECT_EQ(entry.burst, 42u);
    EXPECT_EQ(entry.column, 7u);
    EXPECT_GE(entry.line, 4u);

    ngx_http_rate_limit_policy_free(policy);
}


TEST_F(PolicyFile, ErrorBufferIsOptionalAndNeverOverrun)
{
    const std::string path = write("zones: [\n");
    ngx_http_rate_limit_policy_t *policy = nullptr;

    EXPECT_EQ(ngx_http_rate_limit_policy_load(path.c_str(), &policy, nullptr,
                                              0),
              NGX_HTTP_RATE_LIMIT_EINVAL);

    char tiny[16];
    std::memset(tiny, 'Z', sizeof(tiny));
    EXPECT_EQ(ngx_http_rate_limit_policy_load(path.c_str(), &policy, tiny, 9),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(std::strlen(tiny), 8u);
    EXPECT_EQ(tiny[9], 'Z');
    EXPECT_EQ(policy, nullptr);
}


/* refusals: each with the place it points at */

struct PolicyErrorCase {
    std::string  text;
    size_t       line;
    size_t       column;
    std::string  message_part;
};

void PrintTo(const PolicyErrorCase &c, std::ostream *out)
{
    *out << testing::PrintToString(c.text.substr(0, 48));
}

class PolicyErrors : public testing::TestWithParam<PolicyErrorCase> {
protected:
    TempFolder  folder_;
};

TEST_P(PolicyErrors, PointAtTheProblem)
{
    const PolicyErrorCase &c = GetParam();
    ASSERT_TRUE(folder_.ok());
    const std::string path = folder_.write("bad.yaml", c.text);

    const auto started = std::chrono::steady_clock::now();
    const Loaded loaded = load(path);
    EXPECT_LT(std::chrono::steady_clock::now() - started,
              std::chrono::seconds(1));

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_EINVAL);

    const std::string prefix = path + ":" + std::to_string(c.line) + ":"
                               + std::to_string(c.column) + ": ";
    EXPECT_EQ(loaded.error.substr(0, prefix.size()), prefix)
        << "message: " << loaded.error;
    EXPECT_NE(loaded.error.find(c.message_part), std::string::npos)
        << "message: " << loaded.error;

    /* after the place, the message fits the module's usual buffer */
    EXPECT_LT(loaded.error.size() - path.size(),
              size_t(NGX_HTTP_RATE_LIMIT_ERR_LEN)) << loaded.error;
}

std::string client(const std::string &line)
{
    return api_clients + "      " + line + "\n";
}

std::string error_case_name(
    const testing::TestParamInfo<PolicyErrorCase> &info)
{
    return rate_limit_test::param_name(info.index,
                                       info.param.message_part.substr(0, 40));
}

const std::string burst_expected =
    "expected burst to be a whole number from 0 to 1000000000000000";

INSTANTIATE_TEST_SUITE_P(Schema, PolicyErrors, testing::Values(
    /* the top */
    PolicyErrorCase { "zone:\n  api: {}\n", 1, 1,
                      "unknown top-level key \"zone\", expected \"zones\"" },
    PolicyErrorCase { "zones: {}\nzones: {}\n", 2, 1,
                      "duplicate key \"zones\"" },
    PolicyErrorCase { "- zones\n", 1, 1,
                      "expected a mapping with the key \"zones\"" },
    PolicyErrorCase { "hello\n", 1, 1,
                      "expected a mapping with the key \"zones\"" },
    PolicyErrorCase { "? [a]\n: b\n", 1, 3,
                      "expected a top-level key, not a collection" },
    PolicyErrorCase { "zones: {}\n---\nzones: {}\n", 2, 1,
                      "a policy is one YAML document" },
    /* zones */
    PolicyErrorCase { "zones: [api]\n", 1, 8,
                      "expected a mapping of zone names under \"zones\"" },
    PolicyErrorCase { "zones: api\n", 1, 8,
                      "expected a mapping of zone names under \"zones\"" },
    PolicyErrorCase { "zones:\n", 1, 7,
                      "expected a mapping of zone names under \"zones\"" },
    PolicyErrorCase { "zones:\n  api: {}\n  api: {}\n", 3, 3,
                      "duplicate zone \"api\", first at line 2" },
    PolicyErrorCase { "zones:\n  ? {a: 1}\n  : {}\n", 2, 5,
                      "expected a zone name, not a collection" },
    /* the names nginx.conf accepts, and no other */
    PolicyErrorCase { "zones:\n  \"a b\": {}\n", 2, 3,
                      "invalid zone name \"a b\", expected 1 to 64 of "
                      "A-Z a-z 0-9 _ . -" },
    PolicyErrorCase { "zones:\n  api: {}\n  \"x\\ny\": {}\n", 3, 3,
                      "invalid zone name \"x?y\"" },
    PolicyErrorCase { "zones:\n  caf\xc3\xa9: {}\n", 2, 3,
                      "invalid zone name \"caf\xc3\xa9\"" },
    PolicyErrorCase { "zones:\n  '': {}\n", 2, 3,
                      "invalid zone name \"\"" },
    PolicyErrorCase { "zones:\n  " + std::string(65, 'z') + ": {}\n", 2, 3,
                      "invalid zone name \"zzzz" },
    /* a zone */
    PolicyErrorCase { "zones:\n  api: 5\n", 2, 8,
                      "expected a mapping with the key \"clients\" for zone "
                      "\"api\"" },
    PolicyErrorCase { "zones:\n  api:\n    client: {}\n", 3, 5,
                      "unknown zone field \"client\", expected \"clients\"" },
    PolicyErrorCase { "zones:\n  api:\n    clients: {}\n    clients: {}\n",
                      4, 5, "duplicate key \"clients\"" },
    PolicyErrorCase { "zones:\n  api:\n    clients: [a]\n", 3, 14,
                      "expected a mapping of client keys to limits" },
    /* a client */
    PolicyErrorCase { client("bot: 10r/s"), 4, 12,
                      "expected a mapping such as { rate: 10r/s, burst: 20 } "
                      "for client \"bot\"" },
    PolicyErrorCase { client("bot:"), 4, 11,
                      "expected a mapping such as" },
    PolicyErrorCase { client("\"\": { rate: 1r/s }"), 4, 7,
                      "expected a client key, not an empty one" },
    PolicyErrorCase { client("? " + std::string(
                                         NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX + 1,
                                         'k')
                             + "\n      : { rate: 1r/s }"), 4, 9,
                      "is 4097 bytes long, the most is 4096" },
    PolicyErrorCase { client("bot: { rate: 1r/s }") + "      bot: { rate: 2r/s }\n",
                      5, 7,
                      "duplicate client \"bot\" in zone \"api\", first at "
                      "line 4" },
    PolicyErrorCase { client("bot: { rate: 1r/s }")
                      + "      \"bot\": { rate: 2r/s }\n", 5, 7,
                      "duplicate client \"bot\"" },
    PolicyErrorCase { client("bot: { burst: 5 }"), 4, 7,
                      "expected a rate for client \"bot\", such as "
                      "{ rate: 10r/s }" },
    PolicyErrorCase { client("bot: { rate: 1r/s, brust: 5 }"), 4, 26,
                      "unknown client field \"brust\", expected rate or "
                      "burst" },
    PolicyErrorCase { client("bot: { rate: 1r/s, rate: 2r/s }"), 4, 26,
                      "duplicate field \"rate\" for client \"bot\"" },
    PolicyErrorCase { client("bot: { [rate]: 1r/s }"), 4, 14,
                      "expected rate or burst, not a collection" },
    /* rates */
    PolicyErrorCase { client("bot: { rate: 10r/sec }"), 4, 20,
                      "bad rate \"10r/sec\": unknown period unit" },
    PolicyErrorCase { client("bot: { rate: \"\" }"), 4, 20,
                      "bad rate \"\": empty rate" },
    PolicyErrorCase { client("bot: { rate: 10 r/s }"), 4, 20,
                      "white space" },
    PolicyErrorCase { client("bot: { rate: 0r/0s }"), 4, 20,
                      "the period must be positive" },
    PolicyErrorCase { client("bot: { rate: -1r/s }"), 4, 20,
                      "whole number of requests" },
    PolicyErrorCase { client("bot: { rate: 2000000r/s }"), 4, 20,
                      "faster than 1000000 requests per second" },
    PolicyErrorCase { client("bot: { rate: 1r/36500d, burst: 0 }"), 4, 20,
                      "the period is too long" },
    PolicyErrorCase { client("bot: { rate: [1] }"), 4, 20,
                      "expected rate to be a text such as 10r/s" },
    /* bursts */
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: -1 }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: 1.5 }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: \"5\" }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: 0x10 }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: 1e3 }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: ~ }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: !!str 5 }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: 1000000000000001 }"),
                      4, 33, burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: "
                             "99999999999999999999999 }"),
                      4, 33, burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: {a: 1} }"), 4, 33,
                      burst_expected },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: 1000000001 }"), 4, 33,
                      "burst 1000000001 is too large for the rate" },
    PolicyErrorCase { client("bot: { rate: 1r/d }") + "      x: { rate: 1r/365d, "
                      "burst: 40000 }\n", 5, 34,
                      "burst 40000 is too large for the rate" }),
    error_case_name);

INSTANTIATE_TEST_SUITE_P(Syntax, PolicyErrors, testing::Values(
    PolicyErrorCase { "zones: {\n", 2, 1, "YAML syntax error: " },
    PolicyErrorCase { "zones: {}}\n", 1, 10, "YAML syntax error: " },
    PolicyErrorCase { client("bot: { rate: 1r/s"), 5, 1,
                      "YAML syntax error: " },
    PolicyErrorCase { "zones:\n\tapi: {}\n", 2, 1,
                      "YAML syntax error: found character that cannot start "
                      "any token" },
    PolicyErrorCase { "zones: {}\n  - x\n", 2, 3, "YAML syntax error: " },
    PolicyErrorCase { "zones: \"open\n", 2, 1, "YAML syntax error: " },
    PolicyErrorCase { client("a: &lim { rate: 1r/s }") + "      b: *lim\n",
                      5, 10, "aliases (*name) are not supported" },
    PolicyErrorCase { client("b\xffot: { rate: 1r/s }"), 4, 8,
                      "not valid UTF-8 or UTF-16: invalid leading UTF-8 "
                      "octet (0xff)" },
    PolicyErrorCase { client("caf\xc3\xa9\xc3: { rate: 1r/s }"), 4, 12,
                      "not valid UTF-8 or UTF-16: invalid trailing UTF-8 "
                      "octet (0x3a)" }),
    error_case_name);

/* nesting: refused at the first level the schema has no room for */
INSTANTIATE_TEST_SUITE_P(Nesting, PolicyErrors, testing::Values(
    PolicyErrorCase { "zones: " + std::string(100000, '['), 1, 8,
                      "expected a mapping of zone names" },
    PolicyErrorCase { client("bot: { rate: " + std::string(100000, '[')),
                      4, 20, "expected rate to be a text" },
    PolicyErrorCase { client("bot: { rate: 1r/s, burst: "
                             + std::string(100000, '{')),
                      4, 33, burst_expected },
    PolicyErrorCase { [] {
                          std::string text = client("bot:") + "        rate:\n";
                          for (size_t depth = 0; depth < 2000; depth++) {
                              text += std::string(10 + 2 * depth, ' ')
                                      + "x:\n";
                          }
                          return text;
                      }(),
                      6, 11, "expected rate to be a text" }),
    error_case_name);

} // namespace


/* a zone with no clients is still listed, so the module can check its name */
TEST_F(PolicyFile, ZonesAreListedWithTheirPlaceEvenWithoutClients)
{
    const Loaded loaded = load_text("zones:\n"
                                    "  web:\n"
                                    "    clients: {}\n"
                                    "  api:\n"
                                    "    clients:\n"
                                    "      k: { rate: 1r/s }\n");

    ASSERT_EQ(loaded.rc, NGX_HTTP_RATE_LIMIT_OK) << loaded.error;
    EXPECT_EQ(loaded.zones,
              (std::vector<std::string> { "web@2:3", "api@4:3" }));
    EXPECT_EQ(loaded.entries.size(), 1u);
}


TEST(PolicyZones, OutOfRangeGivesAnAllZeroZone)
{
    ngx_http_rate_limit_policy_zone_t zone;
    zone.name = "x";

    ngx_http_rate_limit_policy_zone(nullptr, 0, &zone);

    EXPECT_EQ(zone.name, nullptr);
    EXPECT_EQ(zone.line, 0u);
    EXPECT_EQ(ngx_http_rate_limit_policy_zones(nullptr), 0u);
}
