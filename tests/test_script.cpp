/*
 * The Redis script as text: what can be checked without a Redis.  The
 * script's behaviour is tested in test_redis_script.cpp.
 */

#include "rate_limit_test_support.h"

#include <set>
#include <string>
#include <thread>
#include <vector>


namespace {

using rate_limit_test::sha1_hex;


std::string script_text()
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_script(&len);
    return std::string(script, len);
}


size_t count_of(const std::string &text, const std::string &part)
{
    size_t count = 0;
    for (size_t at = text.find(part); at != std::string::npos;
         at = text.find(part, at + 1))
    {
        count++;
    }
    return count;
}


TEST(Script, Sha1IsTheSha1OfTheText)
{
    const std::string sha1 = ngx_http_rate_limit_script_sha1();

    EXPECT_EQ(sha1, sha1_hex(script_text()));
    EXPECT_EQ(sha1.size(), size_t(NGX_HTTP_RATE_LIMIT_SHA1_HEX));
    EXPECT_EQ(sha1.find_first_not_of("0123456789abcdef"), std::string::npos);
}


TEST(Script, LengthExcludesTheTerminator)
{
    size_t len = 0;
    const char *script = ngx_http_rate_limit_script(&len);

    ASSERT_GT(len, 100u);
    EXPECT_EQ(std::strlen(script), len);
    EXPECT_NE(ngx_http_rate_limit_script(nullptr), nullptr);
}


TEST(Script, IsCheap)
{
    const std::string script = script_text();

    /* one clock for every key, and only plain GET and SET */
    EXPECT_EQ(count_of(script, "redis.call("), 3u);
    EXPECT_EQ(count_of(script, "redis.call('TIME')"), 1u);
    EXPECT_EQ(count_of(script, "redis.call('GET', key)"), 1u);
    EXPECT_EQ(count_of(script, "redis.call('SET', key,"), 1u);
    EXPECT_EQ(count_of(script, "stored_state(KEYS[k0 + i])"), 1u);
    /* the tokens taken, or the state as read when nothing is taken */
    EXPECT_EQ(count_of(script, "store(KEYS[k0 + i],"), 2u);
    /* a code's length is computed only when the code differs */
    EXPECT_EQ(count_of(script, "if code ~= 0 and code ~= token_code then"),
              1u);
    EXPECT_EQ(count_of(script, "cjson"), 0u);
    EXPECT_EQ(count_of(script, "pcall"), 0u);
}


TEST(Script, BlocksZeroIntervalOrBurstWithTheHeadersRetryAfter)
{
    const std::string script = script_text();

    /* the number comes from the header, not from a copy of it */
    EXPECT_EQ(count_of(script, "local blocked_retry_after_us = "
                               + std::to_string(
                                   NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US)
                               + "\n"),
              1u);
    EXPECT_EQ(count_of(script, "if interval_us == 0 or burst == 0 then"), 1u);
    EXPECT_EQ(count_of(script, "reply[last + 3] = blocked_retry_after_us"),
              1u);

    /* a blocked key is decided before its GET */
    ASSERT_NE(script.find("stored_state(KEYS[k0 + i])"), std::string::npos);
    EXPECT_LT(script.find("burst == 0"),
              script.find("stored_state(KEYS[k0 + i])"));
}


TEST(Script, Sha1IsComputedOnceForAllThreads)
{
    std::vector<const char *> seen(8, nullptr);
    std::vector<std::thread> threads;

    for (size_t i = 0; i < seen.size(); i++) {
        threads.emplace_back([&seen, i] {
            seen[i] = ngx_http_rate_limit_script_sha1();
        });
    }
    for (std::thread &thread : threads) {
        thread.join();
    }

    const std::set<const char *> distinct(seen.begin(), seen.end());
    EXPECT_EQ(distinct.size(), 1u);
    EXPECT_EQ(std::string(seen[0]), sha1_hex(script_text()));
}

} // namespace
