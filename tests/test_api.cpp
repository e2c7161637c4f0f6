/*
 * The core's bucket API (rl_api.h): routes, checks, token, SQL and JSON,
 * with the answers nginx has always sent, byte for byte.
 */

#include <rl_api.h>

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>


namespace {

/* a pool as nginx's: everything given lives until the test ends */
class Pool {
public:
    rl_api_alloc_t alloc{ &Pool::take, this };

    int fail_after = -1;        /* allocations to grant; -1: all */

private:
    static void *take(void *data, size_t size)
    {
        auto *pool = static_cast<Pool *>(data);
        if (pool->fail_after == 0) {
            return nullptr;
        }
        if (pool->fail_after > 0) {
            pool->fail_after--;
        }
        pool->blocks_.emplace_back(new unsigned char[size]);
        return pool->blocks_.back().get();
    }

    std::vector<std::unique_ptr<unsigned char[]>> blocks_;
};


int zone_tag;

void *find_zone(void *, const unsigned char *name, size_t len)
{
    return std::string(reinterpret_cast<const char *>(name), len) == "api"
           ? &zone_tag : nullptr;
}


struct Routed {
    int             rc;
    rl_api_plan_t   plan;
    rl_api_reply_t  reply;

    std::string body() const
    {
        return std::string(reinterpret_cast<const char *>(reply.body),
                           reply.len);
    }

    std::string key() const
    {
        return std::string(reinterpret_cast<const char *>(plan.key),
                           plan.key_len);
    }
};


Routed route(Pool &pool, unsigned method, const std::string &uri,
    int64_t content_length = -1)
{
    static const std::string base = "/api/";

    const size_t q = uri.find('?');
    const std::string path = uri.substr(0, q);
    const std::string args = q == std::string::npos ? "" : uri.substr(q + 1);

    rl_api_request_t r{};
    r.base = reinterpret_cast<const unsigned char *>(base.data());
    r.base_len = base.size();
    r.path = reinterpret_cast<const unsigned char *>(path.data());
    r.path_len = path.size();
    r.args = reinterpret_cast<const unsigned char *>(args.data());
    r.args_len = args.size();
    r.method = method;
    r.content_length = content_length;
    r.find_zone = find_zone;

    /* the plan's zone points into path, gone on return: tests set it */
    Routed out{};
    out.rc = rl_api_route(&r, &pool.alloc, &out.plan, &out.reply);
    out.plan.zone = nullptr;
    return out;
}


void expect_error(const Routed &r, int status, const std::string &message,
    const char *allow = nullptr)
{
    ASSERT_EQ(r.rc, RL_API_OK);
    EXPECT_EQ(r.plan.action, RL_API_REPLY);
    EXPECT_EQ(r.reply.status, status);
    EXPECT_EQ(r.body(), "{\"error\":\"" + message + "\"}");
    if (allow) {
        ASSERT_NE(r.reply.allow, nullptr);
        EXPECT_STREQ(r.reply.allow, allow);
    } else {
        EXPECT_EQ(r.reply.allow, nullptr);
    }
}


std::string text(const rl_api_reply_t &reply)
{
    return std::string(reinterpret_cast<const char *>(reply.body), reply.len);
}


const std::string unknown_path =
    "unknown path, expected zones, buckets/{zone} or buckets/{zone}/{key}";

}  // namespace


TEST(ApiRoute, RoutesEachPathAndMethod)
{
    Pool pool;

    EXPECT_EQ(route(pool, RL_API_METHOD_GET, "/api/zones").plan.action,
              RL_API_ZONES);
    EXPECT_EQ(route(pool, RL_API_METHOD_HEAD, "/api/zones").plan.action,
              RL_API_ZONES);
    EXPECT_EQ(route(pool, RL_API_METHOD_GET, "/api/buckets/api").plan.action,
              RL_API_LIST);
    EXPECT_EQ(route(pool, RL_API_METHOD_GET, "/api/buckets/api/").plan.action,
              RL_API_LIST);
    EXPECT_EQ(route(pool, RL_API_METHOD_POST, "/api/buckets/api").plan.action,
              RL_API_CREATE);

    Routed get = route(pool, RL_API_METHOD_GET, "/api/buckets/api/a%2Fb");
    EXPECT_EQ(get.plan.action, RL_API_GET);
    EXPECT_EQ(get.key(), "a/b");
    EXPECT_EQ(get.plan.host_zone, &zone_tag);

    EXPECT_EQ(route(pool, RL_API_METHOD_PUT, "/api/buckets/api/k").plan.action,
              RL_API_UPDATE);
    EXPECT_EQ(route(pool, RL_API_METHOD_DELETE,
                    "/api/buckets/api/k").plan.action, RL_API_DELETE);
}


TEST(ApiRoute, ReadsTheMethodAsNginxDoes)
{
    auto method = [](const std::string &name) {
        return rl_api_method(
            reinterpret_cast<const unsigned char *>(name.data()), name.size());
    };

    EXPECT_EQ(method("GET"), unsigned(RL_API_METHOD_GET));
    EXPECT_EQ(method("HEAD"), unsigned(RL_API_METHOD_HEAD));
    EXPECT_EQ(method("POST"), unsigned(RL_API_METHOD_POST));
    EXPECT_EQ(method("PUT"), unsigned(RL_API_METHOD_PUT));
    EXPECT_EQ(method("DELETE"), unsigned(RL_API_METHOD_DELETE));
    for (const char *other : {"get", "GETS", "GE", "PATCH", "OPTIONS",
                                     "", "DELETE "}) {
        EXPECT_EQ(method(other), unsigned(RL_API_METHOD_OTHER)) << other;
    }
    EXPECT_EQ(rl_api_method(nullptr, 0), unsigned(RL_API_METHOD_OTHER));
}


TEST(ApiRoute, RefusesUnknownPathsAndMethods)
{
    Pool pool;

    expect_error(route(pool, RL_API_METHOD_GET, "/apx/zones"), 404,
                 unknown_path);
    expect_error(route(pool, RL_API_METHOD_GET, "/api/zone"), 404,
                 unknown_path);
    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets/"), 404,
                 unknown_path);
    expect_error(route(pool, RL_API_METHOD_POST, "/api/zones"), 405,
                 "method not allowed", "GET, HEAD");
    expect_error(route(pool, RL_API_METHOD_DELETE, "/api/buckets/api"), 405,
                 "method not allowed", "GET, HEAD, POST");
    expect_error(route(pool, RL_API_METHOD_POST, "/api/buckets/api/k"), 405,
                 "method not allowed", "GET, HEAD, PUT, DELETE");
    expect_error(route(pool, RL_API_METHOD_OTHER, "/api/buckets/api/k"), 405,
                 "method not allowed", "GET, HEAD, PUT, DELETE");
}


TEST(ApiRoute, ChecksTheZoneAndTheKey)
{
    Pool pool;

    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets/a%20b"), 400,
                 "invalid zone name, expected 1 to 64 of A-Z a-z 0-9 _ . -");
    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets/nope/k"), 404,
                 "unknown zone \\\"nope\\\"");
    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets//k"), 404,
                 "unknown zone \\\"\\\"");
    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets/api/a%2"), 400,
                 "the key holds a malformed percent escape");
    expect_error(route(pool, RL_API_METHOD_GET, "/api/buckets/api/a%zz"), 400,
                 "the key holds a malformed percent escape");
    expect_error(route(pool, RL_API_METHOD_GET,
                       "/api/buckets/api/" + std::string(4097, 'k')),
                 400, "the key is longer than 4096 bytes");
    expect_error(route(pool, RL_API_METHOD_PUT, "/api/buckets/api/a%00"), 400,
                 "the key must be UTF-8 without NUL bytes");
    expect_error(route(pool, RL_API_METHOD_DELETE, "/api/buckets/api/%ff"),
                 400, "the key must be UTF-8 without NUL bytes");
    expect_error(route(pool, RL_API_METHOD_PUT, "/api/buckets/api/%ed%a0%80"),
                 400, "the key must be UTF-8 without NUL bytes");

    /* reading takes any bytes, as $binary_remote_addr needs */
    Routed binary = route(pool, RL_API_METHOD_GET, "/api/buckets/api/%00%FF");
    EXPECT_EQ(binary.plan.action, RL_API_GET);
    EXPECT_EQ(binary.key(), std::string("\0\xff", 2));

    EXPECT_EQ(route(pool, RL_API_METHOD_GET,
                    "/api/buckets/api/" + std::string(4096, 'k')).plan.action,
              RL_API_GET);

    /* the zone is checked before the body's size */
    expect_error(route(pool, RL_API_METHOD_POST, "/api/buckets/nope", 9000),
                 404, "unknown zone \\\"nope\\\"");
    expect_error(route(pool, RL_API_METHOD_POST, "/api/buckets/api", 8193),
                 413, "the body is larger than 8192 bytes");
    EXPECT_EQ(route(pool, RL_API_METHOD_PUT, "/api/buckets/api/k",
                    8192).plan.action, RL_API_UPDATE);
}


TEST(ApiRoute, ReadsTheListArguments)
{
    Pool pool;

    Routed plain = route(pool, RL_API_METHOD_GET, "/api/buckets/api");
    EXPECT_EQ(plain.plan.limit, 100u);
    EXPECT_EQ(plain.key(), "");

    Routed page = route(pool, RL_API_METHOD_GET,
                        "/api/buckets/api?x=1&LIMIT=0010&after=a%25b%2B+c");
    EXPECT_EQ(page.plan.action, RL_API_LIST);
    EXPECT_EQ(page.plan.limit, 10u);
    EXPECT_EQ(page.key(), "a%b++c");

    /* as nginx's ngx_http_arg(): the first, and only after "&" */
    EXPECT_EQ(route(pool, RL_API_METHOD_GET,
                    "/api/buckets/api?xlimit=5&limit=7&limit=9").plan.limit,
              7u);

    const std::string limit_message =
        "limit must be a whole number from 1 to 1000";
    for (const char *bad : { "0", "1001", "", "-1", "+5", "5x", "1e2",
                             "99999999999999999999999" })
    {
        expect_error(route(pool, RL_API_METHOD_GET,
                           std::string("/api/buckets/api?limit=") + bad),
                     400, limit_message);
    }
    EXPECT_EQ(route(pool, RL_API_METHOD_GET,
                    "/api/buckets/api?limit=1000").plan.limit, 1000u);

    const std::string escape_message =
        "after holds a malformed percent escape: a \\\"%\\\" must begin %XX, "
        "two hex digits (a literal \\\"%\\\" is %25)";
    for (const char *bad : { "%", "%4", "a%g0", "%%41" }) {
        expect_error(route(pool, RL_API_METHOD_GET,
                           std::string("/api/buckets/api?after=") + bad),
                     400, escape_message);
    }

    for (const char *bad : { "%00", "%c3", "%c0%80", "%f4%90%80%80" }) {
        expect_error(route(pool, RL_API_METHOD_GET,
                           std::string("/api/buckets/api?after=") + bad),
                     400, "after must be UTF-8 without NUL bytes");
    }

    EXPECT_EQ(route(pool, RL_API_METHOD_GET,
                    "/api/buckets/api?after=%C3%A9").key(), "\xc3\xa9");

    /* the limit is checked first, and only for a zone that exists */
    expect_error(route(pool, RL_API_METHOD_GET,
                       "/api/buckets/api?after=%&limit=0"),
                 400, limit_message);
    expect_error(route(pool, RL_API_METHOD_GET,
                       "/api/buckets/nope?limit=0"),
                 404, "unknown zone \\\"nope\\\"");
}


TEST(ApiRoute, OutOfMemoryIsAnError)
{
    Pool pool;
    pool.fail_after = 0;

    EXPECT_EQ(route(pool, RL_API_METHOD_GET, "/api/buckets/api/k").rc,
              RL_API_ERROR);
    EXPECT_EQ(route(pool, RL_API_METHOD_GET, "/api/zone").rc, RL_API_ERROR);
}


TEST(ApiToken, ComparesTheBearerToken)
{
    const auto check = [](const char *token, const char *header) {
        return rl_api_authorized(
                   token, reinterpret_cast<const unsigned char *>(header),
                   header ? std::strlen(header) : 0);
    };

    EXPECT_EQ(check("s3cret", "Bearer s3cret"), 1);
    EXPECT_EQ(check("s3cret", "bEARER s3cret"), 1);
    EXPECT_EQ(check("s3cret", "Bearer s3cre"), 0);
    EXPECT_EQ(check("s3cret", "Bearer s3cret2"), 0);
    EXPECT_EQ(check("s3cret", "Bearer s3cres"), 0);
    EXPECT_EQ(check("s3cret", "Bearer s3crets3cret"), 0);
    EXPECT_EQ(check("s3cret", "Bearer  s3cret"), 0);
    EXPECT_EQ(check("s3cret", "Basic s3cret"), 0);
    EXPECT_EQ(check("s3cret", "Bearers3cret"), 0);
    EXPECT_EQ(check("s3cret", "Bearer"), 0);
    EXPECT_EQ(check("s3cret", nullptr), 0);
    EXPECT_EQ(check("", "Bearer "), 0);
    EXPECT_EQ(check(nullptr, "Bearer x"), 0);
    EXPECT_EQ(rl_api_authorized("s3cret",
                  reinterpret_cast<const unsigned char *>("Bearer\0s3cret"),
                  13), 0);
}


TEST(ApiBody, ReadsCreateAndUpdate)
{
    Pool pool;

    Routed post = route(pool, RL_API_METHOD_POST, "/api/buckets/api");
    const std::string create =
        R"({"key":"k\u00e9","rate":"5r/2m","burst":3})";
    ASSERT_EQ(rl_api_body(create.data(), create.size(), &pool.alloc,
                          &post.plan, &post.reply), RL_API_OK);
    EXPECT_EQ(post.plan.action, RL_API_CREATE);
    EXPECT_EQ(post.key(), "k\xc3\xa9");
    EXPECT_EQ(post.plan.rate.count, 5u);
    EXPECT_EQ(post.plan.rate.period_ms, 120000u);
    EXPECT_EQ(post.plan.burst, 3u);

    Routed put = route(pool, RL_API_METHOD_PUT, "/api/buckets/api/k");
    const std::string other = R"({"key":"j","rate":"1r/s","burst":1})";
    ASSERT_EQ(rl_api_body(other.data(), other.size(), &pool.alloc,
                          &put.plan, &put.reply), RL_API_OK);
    expect_error(put, 400,
                 "the key in the body differs from the key in the path");

    put = route(pool, RL_API_METHOD_PUT, "/api/buckets/api/k");
    const std::string same = R"({"key":"k","rate":"1r/s","burst":1})";
    ASSERT_EQ(rl_api_body(same.data(), same.size(), &pool.alloc,
                          &put.plan, &put.reply), RL_API_OK);
    EXPECT_EQ(put.plan.action, RL_API_UPDATE);

    post = route(pool, RL_API_METHOD_POST, "/api/buckets/api");
    const std::string nul = R"({"key":"a\u0000","rate":"1r/s","burst":1})";
    ASSERT_EQ(rl_api_body(nul.data(), nul.size(), &pool.alloc,
                          &post.plan, &post.reply), RL_API_OK);
    expect_error(post, 400, "the key must be UTF-8 without NUL bytes");

    post = route(pool, RL_API_METHOD_POST, "/api/buckets/api");
    const std::string big =
        R"({"key":"a","rate":"1000000000000000r/20000d","burst":1})";
    ASSERT_EQ(rl_api_body(big.data(), big.size(), &pool.alloc,
                          &post.plan, &post.reply), RL_API_OK);
    expect_error(post, 400, "the rate's count is too large");

    post = route(pool, RL_API_METHOD_POST, "/api/buckets/api");
    ASSERT_EQ(rl_api_body("{", 1, &pool.alloc, &post.plan, &post.reply),
              RL_API_OK);
    EXPECT_EQ(post.plan.action, RL_API_REPLY);
    EXPECT_EQ(post.reply.status, 400);
    EXPECT_EQ(post.body().rfind("{\"error\":\"", 0), 0u);
}


TEST(ApiQuery, GivesEachQueryItsParameters)
{
    Pool pool;
    rl_api_query_t q;

    Routed list = route(pool, RL_API_METHOD_GET,
                        "/api/buckets/api?limit=7&after=b");
    const std::string zone = "api";
    list.plan.zone = reinterpret_cast<const unsigned char *>(zone.data());
    list.plan.zone_len = zone.size();
    ASSERT_EQ(rl_api_query(&list.plan, &pool.alloc, &q), RL_API_OK);
    EXPECT_STREQ(q.sql, "SELECT key, rate, burst FROM rate_limit_buckets "
                        "WHERE zone = $1 AND key > $2 ORDER BY key LIMIT $3");
    ASSERT_EQ(q.nparams, 3);
    EXPECT_STREQ(q.params[0], "api");
    EXPECT_STREQ(q.params[1], "b");
    EXPECT_STREQ(q.params[2], "7");

    rl_api_plan_t write = list.plan;
    write.action = RL_API_UPDATE;
    write.rate = { 90, 5400000 };
    write.burst = 12;
    ASSERT_EQ(rl_api_query(&write, &pool.alloc, &q), RL_API_OK);
    ASSERT_EQ(q.nparams, 4);
    EXPECT_NE(std::strstr(q.sql, "UPDATE rate_limit_buckets"), nullptr);
    EXPECT_STREQ(q.params[2], "90r/90m");
    EXPECT_STREQ(q.params[3], "12");

    write.action = RL_API_CREATE;
    write.rate = { 1, 1500 };
    ASSERT_EQ(rl_api_query(&write, &pool.alloc, &q), RL_API_OK);
    EXPECT_NE(std::strstr(q.sql, "ON CONFLICT DO NOTHING"), nullptr);
    EXPECT_STREQ(q.params[2], "1r/1500ms");

    write.action = RL_API_DELETE;
    ASSERT_EQ(rl_api_query(&write, &pool.alloc, &q), RL_API_OK);
    EXPECT_EQ(q.nparams, 2);
    EXPECT_NE(std::strstr(q.sql, "DELETE FROM"), nullptr);

    write.action = RL_API_ZONES;
    EXPECT_EQ(rl_api_query(&write, &pool.alloc, &q), RL_API_ERROR);

    const std::string setup = rl_api_setup_sql();
    EXPECT_EQ(setup.rfind("SET lock_timeout = '1s'; SET statement_timeout = "
                          "'5s';\n", 0), 0u);
    EXPECT_NE(setup.find("rate_limit_buckets"), std::string::npos);
    EXPECT_STREQ(rl_api_recover_sql(), "ROLLBACK; SET lock_timeout = '1s'; "
                                       "SET statement_timeout = '5s';\n");

    EXPECT_EQ(rl_api_busy("55P03"), 1);
    EXPECT_EQ(rl_api_busy("57014"), 0);
    EXPECT_EQ(rl_api_busy(nullptr), 0);
}


TEST(ApiJson, WritesAListPage)
{
    Pool pool;
    rl_api_reply_t reply;
    rl_api_plan_t plan{};
    const std::string zone = "api";
    plan.action = RL_API_LIST;
    plan.zone = reinterpret_cast<const unsigned char *>(zone.data());
    plan.zone_len = zone.size();
    plan.limit = 2;

    const std::string odd = std::string("a\"\\\n\x01\xff", 6)
                            + "\xe2\x80\xa8" "\xc3\xa9";
    rl_api_row_t rows[2] = {};
    rows[0].value[0] = odd.data();
    rows[0].len[0] = odd.size();
    rows[0].value[1] = "5r/s";
    rows[0].len[1] = 4;
    rows[0].value[2] = "7";
    rows[0].len[2] = 1;
    rows[1].value[0] = "z";
    rows[1].len[0] = 1;
    rows[1].value[1] = "1r/m";
    rows[1].len[1] = 4;

    ASSERT_EQ(rl_api_listed(&plan, rows, 2, &pool.alloc, &reply), RL_API_OK);
    EXPECT_EQ(reply.status, 200);
    EXPECT_EQ(text(reply),
              "{\"zone\":\"api\",\"buckets\":["
              "{\"key\":\"a\\\"\\\\\\n\\u0001\\u00ff\\u2028\xc3\xa9\","
              "\"rate\":\"5r/s\",\"burst\":7},"
              "{\"key\":\"z\",\"rate\":\"1r/m\",\"burst\":null}],"
              "\"next\":\"z\"}");

    ASSERT_EQ(rl_api_listed(&plan, rows, 1, &pool.alloc, &reply), RL_API_OK);
    EXPECT_NE(text(reply).find("\"next\":null}"), std::string::npos);

    plan.limit = 100;
    ASSERT_EQ(rl_api_listed(&plan, nullptr, 0, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(text(reply), "{\"zone\":\"api\",\"buckets\":[],\"next\":null}");

    rows[1].value[2] = "x";
    rows[1].len[2] = 1;
    EXPECT_EQ(rl_api_listed(&plan, rows, 2, &pool.alloc, &reply),
              RL_API_ERROR);
}


TEST(ApiJson, WritesAWriteResult)
{
    Pool pool;
    rl_api_reply_t reply;
    uint64_t txid = 1;
    rl_api_plan_t plan{};
    const std::string zone = "api";
    const std::string key = "k\xe2\x80\xa9";
    plan.zone = reinterpret_cast<const unsigned char *>(zone.data());
    plan.zone_len = zone.size();
    plan.key = reinterpret_cast<const unsigned char *>(key.data());
    plan.key_len = key.size();
    plan.rate = { 3, 86400000 };
    plan.burst = 4;

    plan.action = RL_API_CREATE;
    ASSERT_EQ(rl_api_written(&plan, nullptr, 0, &txid, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(reply.status, 409);
    EXPECT_EQ(text(reply), "{\"error\":\"the bucket exists already\"}");
    EXPECT_EQ(txid, 0u);

    plan.action = RL_API_UPDATE;
    ASSERT_EQ(rl_api_written(&plan, nullptr, 0, &txid, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(reply.status, 404);
    EXPECT_EQ(text(reply), "{\"error\":\"no such bucket\"}");

    rl_api_row_t row{};
    row.value[0] = "k";
    row.len[0] = 1;
    row.value[1] = "123456";
    row.len[1] = 6;

    plan.action = RL_API_CREATE;
    ASSERT_EQ(rl_api_written(&plan, &row, 1, &txid, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(reply.status, 201);
    EXPECT_EQ(txid, 123456u);
    EXPECT_EQ(text(reply), "{\"zone\":\"api\",\"key\":\"k\\u2029\","
                           "\"rate\":\"3r/d\",\"burst\":4,"
                           "\"source\":\"postgres\"}");

    row.value[1] = "12x";
    row.len[1] = 3;
    plan.action = RL_API_DELETE;
    ASSERT_EQ(rl_api_written(&plan, &row, 1, &txid, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(reply.status, 204);
    EXPECT_EQ(reply.len, 0u);
    EXPECT_EQ(txid, 0u);
}


TEST(ApiJson, WritesZonesBucketsAndRefusals)
{
    Pool pool;
    rl_api_reply_t reply;

    const std::string names[2] = { "a", "b.c" };
    rl_api_zone_t zones[2] = {
        { reinterpret_cast<const unsigned char *>(names[0].data()), 1,
          { 10, 1000 }, 5, "local", "open", 0 },
        { reinterpret_cast<const unsigned char *>(names[1].data()), 3,
          { 1, 7200000 }, 0, "redis", "closed", 2 }
    };
    ASSERT_EQ(rl_api_zones(zones, 2, &pool.alloc, &reply), RL_API_OK);
    EXPECT_EQ(text(reply),
              "{\"zones\":[{\"name\":\"a\",\"rate\":\"10r/s\",\"burst\":5,"
              "\"backend\":\"local\",\"on_failure\":\"open\","
              "\"policy_entries\":0},{\"name\":\"b.c\",\"rate\":\"1r/2h\","
              "\"burst\":0,\"backend\":\"redis\",\"on_failure\":\"closed\","
              "\"policy_entries\":2}]}");
    ASSERT_EQ(rl_api_zones(nullptr, 0, &pool.alloc, &reply), RL_API_OK);
    EXPECT_EQ(text(reply), "{\"zones\":[]}");

    const std::string key("\x80\x00", 2);
    rl_api_bucket_t bucket = {
        reinterpret_cast<const unsigned char *>(names[0].data()), 1,
        reinterpret_cast<const unsigned char *>(key.data()), key.size(),
        { 2, 60000 }, 9, "policy", -1
    };
    ASSERT_EQ(rl_api_bucket(&bucket, &pool.alloc, &reply), RL_API_OK);
    EXPECT_EQ(text(reply), "{\"zone\":\"a\",\"key\":\"\\u0080\\u0000\","
                           "\"rate\":\"2r/m\",\"burst\":9,"
                           "\"source\":\"policy\",\"tokens\":null}");
    bucket.tokens = 8;
    ASSERT_EQ(rl_api_bucket(&bucket, &pool.alloc, &reply), RL_API_OK);
    EXPECT_NE(text(reply).find("\"tokens\":8}"), std::string::npos);

    ASSERT_EQ(rl_api_refuse(RL_API_UNAUTHORIZED, &pool.alloc, &reply),
              RL_API_OK);
    EXPECT_EQ(reply.status, 401);
    EXPECT_EQ(reply.www_authenticate, 1u);
    EXPECT_EQ(text(reply),
              "{\"error\":\"a valid bearer token is required\"}");

    const struct {
        rl_api_refusal_e  why;
        int               status;
        const char       *body;
    } refusals[] = {
        { RL_API_TOO_LARGE, 413,
          "{\"error\":\"the body is larger than 8192 bytes\"}" },
        { RL_API_NO_POSTGRES, 503,
          "{\"error\":\"no \\\"rate_limit_postgres\\\" is configured: "
          "per-client limits cannot be listed or written\"}" },
        { RL_API_UNAVAILABLE, 503,
          "{\"error\":\"PostgreSQL is unavailable\"}" },
        { RL_API_BUSY, 409,
          "{\"error\":\"the bucket is being changed by another writer, "
          "try again\"}" },
    };
    for (const auto &r : refusals) {
        ASSERT_EQ(rl_api_refuse(r.why, &pool.alloc, &reply), RL_API_OK);
        EXPECT_EQ(reply.status, r.status);
        EXPECT_EQ(reply.www_authenticate, 0u);
        EXPECT_EQ(text(reply), r.body);
    }

    pool.fail_after = 0;
    EXPECT_EQ(rl_api_refuse(RL_API_BUSY, &pool.alloc, &reply), RL_API_ERROR);
}
