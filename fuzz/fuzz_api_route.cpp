/*
 * The bucket API's router, given any request line: it always answers, with
 * a plan that keeps the API's promises or a reply that is a JSON error, and
 * a key read back from its JSON is the key that was routed.
 */

#include "fuzz_check.h"
#include "fuzz_json.h"

#include <rl_api.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>


namespace {

using rate_limit_fuzz::is_utf8;
using rate_limit_fuzz::require;


struct Pool {
    std::vector<std::unique_ptr<unsigned char[]>> blocks;

    static void *take(void *data, size_t size)
    {
        auto *pool = static_cast<Pool *>(data);
        pool->blocks.emplace_back(new unsigned char[size]);
        return pool->blocks.back().get();
    }
};


int zone_tag;

void *find_zone(void *, const unsigned char *name, size_t len)
{
    return len == 3 && std::string(reinterpret_cast<const char *>(name), len)
                       == "api" ? &zone_tag : nullptr;
}


nlohmann::json parsed(const rl_api_reply_t &reply)
{
    try {
        return nlohmann::json::parse(
                   std::string(reinterpret_cast<const char *>(reply.body),
                               reply.len));

    } catch (const nlohmann::json::parse_error &) {
        require(false, "every body is JSON");
    }
    return nullptr;
}


}  // namespace


/* the first byte picks the method, the rest is the path and its arguments */
extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    static const unsigned methods[] = {
        RL_API_METHOD_GET, RL_API_METHOD_HEAD, RL_API_METHOD_POST,
        RL_API_METHOD_PUT, RL_API_METHOD_DELETE, RL_API_METHOD_OTHER
    };
    const unsigned method = methods[data[0] % 6];

    const std::string uri(reinterpret_cast<const char *>(data + 1), size - 1);
    const size_t q = uri.find('?');
    const std::string path = uri.substr(0, q);
    const std::string args = q == std::string::npos ? "" : uri.substr(q + 1);
    static const std::string base = "/api/";

    rl_api_request_t r{};
    r.base = reinterpret_cast<const unsigned char *>(base.data());
    r.base_len = base.size();
    r.path = reinterpret_cast<const unsigned char *>(path.data());
    r.path_len = path.size();
    r.args = reinterpret_cast<const unsigned char *>(args.data());
    r.args_len = args.size();
    r.method = method;
    r.content_length = (data[0] & 0x80) ? 9000 : -1;
    r.find_zone = find_zone;

    Pool pool;
    const rl_api_alloc_t a = { &Pool::take, &pool };
    rl_api_plan_t plan;
    rl_api_reply_t reply;

    require(rl_api_route(&r, &a, &plan, &reply) == RL_API_OK,
            "routing fails only for want of memory");

    if (plan.action == RL_API_REPLY) {
        require(reply.status >= 400 && reply.status < 500,
                "a refused request is the client's error");
        const nlohmann::json error = parsed(reply);
        require(error.is_object() && error.size() == 1
                && error.at("error").is_string(),
                "a refusal is {\"error\": message}");
        require((reply.status == 405) == (reply.allow != nullptr),
                "Allow comes with 405 and only with it");
        return 0;
    }

    if (plan.action == RL_API_ZONES) {
        return 0;
    }

    require(plan.host_zone == &zone_tag, "a plan names a zone that exists");
    require(plan.key_len <= NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX
            || plan.action == RL_API_LIST,
            "a key is at most 4096 bytes");

    const std::string key(reinterpret_cast<const char *>(plan.key),
                          plan.key_len);

    if (plan.action == RL_API_LIST) {
        require(plan.limit >= 1 && plan.limit <= 1000,
                "a page holds 1 to 1000 buckets");
    }
    if (plan.action == RL_API_LIST || plan.action == RL_API_UPDATE
        || plan.action == RL_API_DELETE)
    {
        require(is_utf8(key) && key.find('\0') == std::string::npos,
                "what PostgreSQL is asked for is UTF-8 without NUL");
    }
    if (plan.action == RL_API_CREATE) {
        require(plan.key_len == 0, "a POST's key comes from its body");
    }

    if (plan.action == RL_API_GET) {
        const rl_api_bucket_t bucket = { plan.zone, plan.zone_len, plan.key,
                                         plan.key_len, { 1, 1000 }, 1,
                                         "zone", -1 };
        require(rl_api_bucket(&bucket, &a, &reply) == RL_API_OK,
                "a bucket is written");
        const nlohmann::json json = parsed(reply);
        require(!is_utf8(key) || json.at("key").get<std::string>() == key,
                "a UTF-8 key comes back as it was");
    }

    return 0;
}
