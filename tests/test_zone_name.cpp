/* Zone names: the set that nginx.conf, the schema, the policy file and the
 * bucket API all accept. */

#include "rate_limit_test_support.h"

#include <rl_zone.h>

#include <string>


namespace {

bool valid(const std::string &name)
{
    return ngx_http_rate_limit_valid_zone_name(
               reinterpret_cast<const unsigned char *>(name.data()),
               name.size())
           != 0;
}


TEST(ZoneName, AcceptsEveryAllowedCharacter)
{
    EXPECT_TRUE(valid("a"));
    EXPECT_TRUE(valid("api"));
    EXPECT_TRUE(valid("API_v2.per-client"));
    EXPECT_TRUE(valid("0"));
    EXPECT_TRUE(valid("..."));
    EXPECT_TRUE(valid("-_-"));
    EXPECT_TRUE(valid("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
    EXPECT_TRUE(valid("abcdefghijklmnopqrstuvwxyz0123456789_.-"));
}


TEST(ZoneName, LengthIsOneToMax)
{
    EXPECT_EQ(NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX, 64);
    EXPECT_FALSE(valid(""));
    EXPECT_TRUE(valid(std::string(NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX, 'z')));
    EXPECT_FALSE(valid(std::string(NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX + 1,
                                   'z')));
    EXPECT_FALSE(valid(std::string(4096, 'z')));
}


TEST(ZoneName, NullIsRefused)
{
    EXPECT_EQ(ngx_http_rate_limit_valid_zone_name(nullptr, 0), 0);
    EXPECT_EQ(ngx_http_rate_limit_valid_zone_name(nullptr, 3), 0);
}


/* every byte outside the set, alone and amid allowed ones */
TEST(ZoneName, RefusesEveryOtherByte)
{
    const std::string allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz0123456789_.-";
    int refused = 0;

    for (int c = 0; c < 256; c++) {
        const std::string byte(1, static_cast<char>(c));

        if (allowed.find(static_cast<char>(c)) != std::string::npos) {
            EXPECT_TRUE(valid(byte)) << "byte " << c;
            continue;
        }

        refused++;
        EXPECT_FALSE(valid(byte)) << "byte " << c;
        EXPECT_FALSE(valid("ab" + byte + "cd")) << "byte " << c;
        EXPECT_FALSE(valid("abcd" + byte)) << "byte " << c;
    }

    EXPECT_EQ(refused, 256 - 65);
}


/* the bytes that broke headers, labels and logs before the rule */
TEST(ZoneName, RefusesWhatBrokeHeadersAndLabels)
{
    EXPECT_FALSE(valid("a\"b"));
    EXPECT_FALSE(valid("a\\b"));
    EXPECT_FALSE(valid("a;b"));
    EXPECT_FALSE(valid("a,b"));
    EXPECT_FALSE(valid("a b"));
    EXPECT_FALSE(valid("a\nb"));
    EXPECT_FALSE(valid("a\r\nSet-Cookie: x=1"));
    EXPECT_FALSE(valid("a:b"));
    EXPECT_FALSE(valid("a=b"));
    EXPECT_FALSE(valid("z\xc3\xa9"));
    EXPECT_FALSE(valid(std::string("a\0b", 3)));
}

} // namespace


/* the texts of a zone's Redis arguments, as the module formatted them */
namespace {

std::string text(const char *data, unsigned char len)
{
    return std::string(data, len);
}


TEST(ZoneTexts, FormatsTheScriptArguments)
{
    ngx_http_rate_limit_rate_t rate{10, 1000};
    ngx_http_rate_limit_params_t params;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    ASSERT_EQ(ngx_http_rate_limit_make_params(&rate, 20, &params, err,
                                              sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK);

    rl_zone_texts_t texts;
    rl_zone_texts(&params, &texts);

    EXPECT_EQ(text(texts.interval, texts.interval_len), "100000");
    EXPECT_EQ(text(texts.burst, texts.burst_len), "20");
    EXPECT_EQ(text(texts.token_code, texts.token_code_len),
              std::to_string(ngx_http_rate_limit_token_code(100000)));
}


TEST(ZoneTexts, RoundsTheIntervalHalfUpAndTakesTheLargestBurst)
{
    /* 3 r/s: 333333.33 us a token; 1000000 r/s: 1 us */
    ngx_http_rate_limit_params_t params{333333.5, 3};
    rl_zone_texts_t texts;
    rl_zone_texts(&params, &texts);
    EXPECT_EQ(text(texts.interval, texts.interval_len), "333334");

    params = {1.0, NGX_HTTP_RATE_LIMIT_BURST_MAX};
    rl_zone_texts(&params, &texts);
    EXPECT_EQ(text(texts.interval, texts.interval_len), "1");
    EXPECT_EQ(text(texts.burst, texts.burst_len), "1000000000000000");
}


TEST(ZoneTexts, BlockedParametersSendZeroes)
{
    ngx_http_rate_limit_params_t params{0.0, 0};
    rl_zone_texts_t texts;
    rl_zone_texts(&params, &texts);
    EXPECT_EQ(text(texts.interval, texts.interval_len), "0");
    EXPECT_EQ(text(texts.burst, texts.burst_len), "0");
}


TEST(ZoneFailureName, SpellsEachPolicyAsNginxConfDoes)
{
    EXPECT_STREQ(rl_zone_failure_name(RL_ZONE_FAILURE_OPEN), "open");
    EXPECT_STREQ(rl_zone_failure_name(RL_ZONE_FAILURE_CLOSED), "closed");
    EXPECT_STREQ(rl_zone_failure_name(RL_ZONE_FAILURE_LOCAL), "local");
}

} // namespace
