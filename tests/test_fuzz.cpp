/*
 * Random and mutated input into the two parsers that read what outsiders
 * write: the policy file and the bucket API body.  Neither may crash, hang
 * or accept something the module would then fail to use.  The seeds are
 * fixed so that a failure can be replayed; the rounds are bounded so the
 * suite stays quick (a sanitizer build is where this earns its keep).
 */

#include "rate_limit_test_support.h"

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>


namespace {

using rate_limit_test::TempFolder;


/* bytes drawn from what the format is made of, and now and then any byte */
std::string random_text(std::mt19937 &random, const std::string &alphabet,
    size_t max_len)
{
    std::uniform_int_distribution<size_t> length(0, max_len);
    std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
    std::uniform_int_distribution<int> any_byte(0, 255);
    std::uniform_int_distribution<int> percent(0, 99);

    std::string text(length(random), '\0');
    for (char &c : text) {
        c = percent(random) < 90 ? alphabet[pick(random)]
                                 : static_cast<char>(any_byte(random));
    }
    return text;
}


/* a valid input with a few bytes changed, dropped or added */
std::string mutated(std::mt19937 &random, std::string text,
    const std::string &alphabet)
{
    std::uniform_int_distribution<int> edits(1, 4);
    std::uniform_int_distribution<int> kind(0, 2);
    std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);

    for (int edit = edits(random); edit > 0; edit--) {
        std::uniform_int_distribution<size_t> at(0, text.size());
        const size_t where = at(random);

        switch (kind(random)) {
        case 0:
            if (where < text.size()) {
                text[where] = alphabet[pick(random)];
            }
            break;
        case 1:
            if (where < text.size()) {
                text.erase(where, 1);
            }
            break;
        default:
            text.insert(where, 1, alphabet[pick(random)]);
            break;
        }
    }
    return text;
}


void expect_sane_error(const char *err, size_t errlen)
{
    const size_t len = strnlen(err, errlen);
    ASSERT_LT(len, errlen) << "not NUL ended";
    EXPECT_GT(len, 0u) << "a refusal without a message";
}


TEST(Fuzz, BucketBodyNeverCrashes)
{
    const std::string alphabet = "{}[]\":,. \n\t\\/-+0123456789eEu"
                                 "keyratebursnlfaxrms\xc3\xa9\xff";
    const std::vector<std::string> seeds {
        R"({"key": "acme", "rate": "10r/s", "burst": 20})",
        R"({"rate": "0r/s"})",
        R"({"key": "caf\u00e9", "rate": "3r/500ms", "burst": 0})",
    };

    std::mt19937 random(7);
    size_t accepted = 0;

    for (int round = 0; round < 30000; round++) {
        const std::string text =
            round % 2 == 0
            ? random_text(random, alphabet, 64)
            : mutated(random, seeds[round % seeds.size()], alphabet);

        for (int require_key = 0; require_key <= 1; require_key++) {
            ngx_http_rate_limit_bucket_body_t body {};
            char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
            std::memset(err, 'Z', sizeof(err));

            const int rc = ngx_http_rate_limit_parse_bucket_body(
                text.data(), text.size(), require_key, &body, err,
                sizeof(err));

            if (rc == NGX_HTTP_RATE_LIMIT_OK) {
                accepted++;
                ASSERT_LE(body.key_len, size_t(NGX_HTTP_RATE_LIMIT_KEY_MAX));
                ASSERT_TRUE(!require_key || body.key_len > 0);
                ngx_http_rate_limit_params_t params;
                ASSERT_EQ(ngx_http_rate_limit_make_params_blocking(
                              &body.rate, body.burst, &params, nullptr, 0),
                          NGX_HTTP_RATE_LIMIT_OK)
                    << testing::PrintToString(text);
            } else {
                ASSERT_EQ(rc, NGX_HTTP_RATE_LIMIT_EINVAL);
                expect_sane_error(err, sizeof(err));
            }
        }
    }

    /* the mutations must reach the accepting paths too */
    EXPECT_GT(accepted, 100u);
}


TEST(Fuzz, PolicyLoaderNeverCrashes)
{
    TempFolder folder;
    ASSERT_TRUE(folder.ok());

    const std::string alphabet = "zones:clients\n  -{}[],\"'#&*!?|>%@`~"
                                 "ratebur0123456789/smhd\t\r\xc3\xa9\xff";
    const std::vector<std::string> seeds {
        "zones:\n  api:\n    clients:\n"
        "      partner-acme: { rate: 1000r/m, burst: 200 }\n"
        "      trial-42:     { rate: 10r/m }\n"
        "      blocked-bot:  { rate: 0r/s }\n",
        "zones: { a: { clients: { k: { rate: 1r/s } } }, b: {} }\n",
        "zones:\n  web:\n    clients:\n      x:\n        rate: 5r/s\n"
        "        burst: 0\n",
    };

    std::mt19937 random(11);
    size_t accepted = 0;

    for (int round = 0; round < 3000; round++) {
        const std::string text =
            round % 2 == 0
            ? random_text(random, alphabet, 200)
            : mutated(random, seeds[round % seeds.size()], alphabet);
        const std::string path = folder.write("fuzz.yaml", text);

        ngx_http_rate_limit_policy_t *policy = nullptr;
        char err[NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN];
        std::memset(err, 'Z', sizeof(err));

        const int rc = ngx_http_rate_limit_policy_load(path.c_str(), &policy,
                                                       err, sizeof(err));
        if (rc != NGX_HTTP_RATE_LIMIT_OK) {
            ASSERT_EQ(rc, NGX_HTTP_RATE_LIMIT_EINVAL);
            ASSERT_EQ(policy, nullptr);
            expect_sane_error(err, sizeof(err));
            ASSERT_EQ(std::string(err).rfind(path + ":", 0), 0u) << err;
            continue;
        }

        accepted++;
        std::string previous_zone;
        std::string previous_key;

        for (size_t i = 0; i < ngx_http_rate_limit_policy_size(policy); i++) {
            ngx_http_rate_limit_policy_entry_t entry;
            ngx_http_rate_limit_policy_entry(policy, i, &entry);

            const std::string zone(entry.zone, entry.zone_len);
            const std::string key(reinterpret_cast<const char *>(entry.key),
                                  entry.key_len);
            EXPECT_FALSE(key.empty());
            EXPECT_GE(entry.line, 1u);
            EXPECT_GE(entry.column, 1u);
            if (i > 0) {
                EXPECT_TRUE(std::tie(previous_zone, previous_key)
                            < std::tie(zone, key)) << "sorted and unique";
            }

            ngx_http_rate_limit_params_t params;
            EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(
                          &entry.rate, entry.burst, &params, nullptr, 0),
                      NGX_HTTP_RATE_LIMIT_OK);

            previous_zone = zone;
            previous_key = key;
        }

        ngx_http_rate_limit_policy_free(policy);
    }

    EXPECT_GT(accepted, 50u);
}

} // namespace
