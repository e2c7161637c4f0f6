/*
 * The bucket API's JSON: request bodies in, escaped strings out.  The
 * escaper's output is checked by parsing it back with nlohmann::json.
 */

#include "rate_limit_test_support.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>


namespace {

struct Parsed {
    int                                  rc;
    ngx_http_rate_limit_bucket_body_t    body;
    std::string                          error;

    std::string key() const
    {
        return std::string(reinterpret_cast<const char *>(body.key),
                           body.key_len);
    }
};

Parsed parse(const std::string &text, bool require_key)
{
    Parsed parsed { -1, {}, "" };
    /* recognisable values, to show that a failure leaves them alone */
    std::memset(&parsed.body, 0x5a, sizeof(parsed.body));
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    parsed.rc = ngx_http_rate_limit_parse_bucket_body(
        text.data(), text.size(), require_key ? 1 : 0, &parsed.body, err,
        sizeof(err));
    parsed.error = err;
    return parsed;
}


enum Method { post, put };

struct GoodBody {
    Method       method;
    std::string  text;
    std::string  key;
    uint64_t     count;
    uint64_t     period_ms;
    uint64_t     burst;
};

void PrintTo(const GoodBody &c, std::ostream *out)
{
    *out << (c.method == post ? "POST " : "PUT ")
         << testing::PrintToString(c.text.substr(0, 48));
}

class GoodBodies : public testing::TestWithParam<GoodBody> {};

TEST_P(GoodBodies, Parse)
{
    const GoodBody &c = GetParam();
    const Parsed parsed = parse(c.text, c.method == post);

    ASSERT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_OK) << parsed.error;
    EXPECT_EQ(parsed.error, "");
    EXPECT_EQ(parsed.key(), c.key);
    EXPECT_EQ(parsed.body.rate.count, c.count);
    EXPECT_EQ(parsed.body.rate.period_ms, c.period_ms);
    EXPECT_EQ(parsed.body.burst, c.burst);

    /* what the module does next cannot fail */
    ngx_http_rate_limit_params_t params;
    EXPECT_EQ(ngx_http_rate_limit_make_params_blocking(
                  &parsed.body.rate, parsed.body.burst, &params, nullptr, 0),
              NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(ngx_http_rate_limit_params_blocked(&params),
              c.count == 0 || c.burst == 0 ? 1 : 0);
}

/* the longest key, as PostgreSQL's CHECK and the policy file take it */
const std::string key_max(NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX, 'k');
const std::string key_max_utf8 = [] {
    std::string key;
    for (int i = 0; i < NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX / 2; i++) {
        key += "\xc3\xa9";
    }
    return key;
}();

INSTANTIATE_TEST_SUITE_P(Bodies, GoodBodies, testing::Values(
    GoodBody { post, R"({"key": "acme", "rate": "10r/s", "burst": 20})",
               "acme", 10, 1000, 20 },
    GoodBody { post, R"({"key":"acme","rate":"10r/s"})", "acme", 10, 1000,
               10 },
    GoodBody { post, R"({"burst": 3, "rate": "10r/m", "key": "k"})", "k", 10,
               60000, 3 },
    GoodBody { put, R"({"rate": "5r/m"})", "", 5, 60000, 5 },
    GoodBody { put, R"({"rate": "5r/m", "burst": 0})", "", 5, 60000, 0 },
    GoodBody { put, R"({"rate": "0r/s"})", "", 0, 1000, 0 },
    GoodBody { put, R"({"rate": "0r/s", "burst": 7})", "", 0, 1000, 7 },
    GoodBody { put, R"({"key": "in-body", "rate": "1r/s"})", "in-body", 1,
               1000, 1 },
    GoodBody { post, " \n\t{ \"key\" : \"k\" ,\r\n \"rate\" : \"1r/s\" }\n ",
               "k", 1, 1000, 1 },
    GoodBody { post, R"({"key": "caf\u00e9", "rate": "1r/s"})",
               "caf\xc3\xa9", 1, 1000, 1 },
    GoodBody { post, "{\"key\": \"caf\xc3\xa9\", \"rate\": \"1r/s\"}",
               "caf\xc3\xa9", 1, 1000, 1 },
    GoodBody { post, R"({"key": "\ud83d\ude00", "rate": "1r/s"})",
               "\xf0\x9f\x98\x80", 1, 1000, 1 },
    GoodBody { post, R"({"key": "a\u0000b", "rate": "1r/s"})",
               std::string("a\0b", 3), 1, 1000, 1 },
    GoodBody { post, R"({"key": "a\"b\\c\/d\n", "rate": "1r/s"})",
               "a\"b\\c/d\n", 1, 1000, 1 },
    GoodBody { post, "{\"key\": \"" + key_max + "\", \"rate\": \"1r/s\"}",
               key_max, 1, 1000, 1 },
    GoodBody { post, "{\"key\": \"" + key_max_utf8
                     + "\", \"rate\": \"1r/s\"}",
               key_max_utf8, 1, 1000, 1 },
    GoodBody { post, R"({"key": "#hash", "rate": "1r/s"})", "#hash", 1, 1000,
               1 },
    GoodBody { put, R"({"rate": "1000000r/s", "burst": 1000000000000000})",
               "", 1000000, 1000, 1000000000000000ULL },
    GoodBody { put, R"({"rate": "1000000r/s"})", "", 1000000, 1000,
               1000000 },
    GoodBody { put, R"({"rate": "3r/500ms", "burst": 1})", "", 3, 500, 1 },
    GoodBody { put, R"({"rate": "1r/d", "burst": 0})", "", 1, 86400000, 0 },
    GoodBody { put, R"({"rate": "1r/s", "burst": -0})", "", 1, 1000, 0 }
),
    [](const testing::TestParamInfo<GoodBody> &info) {
        return rate_limit_test::param_name(
            info.index, (info.param.method == post ? "POST " : "PUT ")
                        + info.param.text.substr(0, 40));
    });


struct BadBody {
    Method       method;
    std::string  text;
    std::string  message_part;
};

void PrintTo(const BadBody &c, std::ostream *out)
{
    *out << (c.method == post ? "POST " : "PUT ")
         << testing::PrintToString(c.text.substr(0, 48));
}

class BadBodies : public testing::TestWithParam<BadBody> {};

TEST_P(BadBodies, AreRefusedWithAMessage)
{
    const BadBody &c = GetParam();
    const Parsed parsed = parse(c.text, c.method == post);

    EXPECT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(parsed.error.find(c.message_part), std::string::npos)
        << "message: \"" << parsed.error << "\"";
    /* the whole message fits the module's buffer, none of it cut */
    EXPECT_LT(parsed.error.size(), size_t(NGX_HTTP_RATE_LIMIT_ERR_LEN) - 1)
        << parsed.error;

    /* the output is only written on success */
    EXPECT_EQ(parsed.body.key_len, 0x5a5a5a5a5a5a5a5aULL);
    EXPECT_EQ(parsed.body.burst, 0x5a5a5a5a5a5a5a5aULL);
}

const std::string not_object = "the body must be a JSON object";
const std::string malformed = "malformed JSON at byte ";
const std::string bad_burst =
    "burst must be a whole number from 0 to 1000000000000000";

INSTANTIATE_TEST_SUITE_P(Bodies, BadBodies, testing::Values(
    /* not an object at all */
    BadBody { put, "", "empty body, expected a JSON object" },
    BadBody { put, " \r\n\t", "empty body" },
    BadBody { put, "null", not_object },
    BadBody { put, "[]", not_object },
    BadBody { put, R"("rate")", not_object },
    BadBody { put, "42", not_object },
    BadBody { put, "true", not_object },
    BadBody { put, std::string(100000, '['), not_object },
    /* malformed */
    BadBody { put, "{", malformed + "2: unexpected end of input" },
    BadBody { put, R"({"rate": "1r/s")", malformed + "16: unexpected end" },
    BadBody { put, R"({"rate": "1r/s",})", malformed + "17: unexpected '}'" },
    BadBody { put, R"({"rate": "1r/s"} x)", malformed + "18:" },
    BadBody { put, R"({"rate": "1r/s"}{})", malformed + "17: unexpected '{'" },
    BadBody { put, R"({"rate": "1r/s", "burst": 00})", malformed + "28:" },
    BadBody { put, "{'rate': '1r/s'}", malformed + "2:" },
    BadBody { put, R"({rate: "1r/s"})", malformed + "2:" },
    BadBody { put, R"({"rate": "1r/s" /* comment */})", malformed },
    BadBody { put, R"({"rate": "1r/s", "burst": NaN})", malformed },
    BadBody { put, "{\"key\": \"\xff\", \"rate\": \"1r/s\"}", malformed },
    BadBody { put, "{\"key\": \"\xc0\xaf\", \"rate\": \"1r/s\"}", malformed },
    BadBody { put, "{\"key\": \"a\nb\", \"rate\": \"1r/s\"}", malformed },
    BadBody { put, R"({"key": "\ud800", "rate": "1r/s"})", malformed },
    BadBody { put, std::string("{\"rate\": \"1r/s\"}\0", 17),
              malformed + "17: a NUL byte" },
    BadBody { put, std::string("{\"rate\": \"1r/s\"}\0{\"x\": 1}", 25),
              malformed + "17: a NUL byte" },
    BadBody { put, std::string("{\0}", 3), malformed + "2: a NUL byte" },
    /* fields */
    BadBody { post, R"({"rate": "1r/s"})", "key is required" },
    BadBody { post, R"({"key": "k"})", "rate is required" },
    BadBody { put, "{}", "rate is required" },
    BadBody { put, R"({"rate": "1r/s", "brust": 5})",
              "unknown field \"brust\", expected key, rate or burst" },
    BadBody { put, R"({"Rate": "1r/s"})", "unknown field \"Rate\"" },
    BadBody { put, "{\"" + std::string(500, 'f') + "\": 1}",
              "unknown field \"ffffffffffffffffffffffff...\"" },
    BadBody { put, R"({"rate": "1r/s", "rate": "0r/s"})",
              "duplicate field \"rate\"" },
    BadBody { post, R"({"key": "a", "key": "b", "rate": "1r/s"})",
              "duplicate field \"key\"" },
    BadBody { put, R"({"rate": "1r/s", "burst": 1, "burst": 2})",
              "duplicate field \"burst\"" },
    /* key */
    BadBody { post, R"({"key": "", "rate": "1r/s"})",
              "key must be a non-empty string" },
    BadBody { post, R"({"key": 42, "rate": "1r/s"})",
              "key must be a non-empty string" },
    BadBody { post, R"({"key": null, "rate": "1r/s"})",
              "key must be a non-empty string" },
    BadBody { post, R"({"key": ["k"], "rate": "1r/s"})",
              "key must be a non-empty string" },
    BadBody { post, R"({"key": {"k": 1}, "rate": "1r/s"})",
              "key must be a non-empty string" },
    BadBody { post, "{\"key\": \"" + std::string(4097, 'k')
                    + "\", \"rate\": \"1r/s\"}",
              "key must be at most 4096 bytes, not 4097" },
    BadBody { post, "{\"key\": \"" + key_max_utf8
                    + "\xc3\xa9\", \"rate\": \"1r/s\"}",
              "key must be at most 4096 bytes, not 4098" },
    /* rate */
    BadBody { put, R"({"rate": 10})", "rate must be a string such as" },
    BadBody { put, R"({"rate": null})", "rate must be a string" },
    BadBody { put, R"({"rate": ["1r/s"]})", "rate must be a string" },
    BadBody { put, R"({"rate": "abc"})",
              "rate: the rate must start with a whole number" },
    BadBody { put, R"({"rate": "10r/sec"})", "rate: unknown period unit" },
    BadBody { put, R"({"rate": ""})", "rate: empty rate" },
    BadBody { put, R"({"rate": "0r/0s"})", "rate: the period must be "
                                           "positive" },
    BadBody { put, R"({"rate": "2000000r/s"})",
              "faster than 1000000 requests per second" },
    /* burst */
    BadBody { put, R"({"rate": "1r/s", "burst": -1})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 1.5})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 20.0})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 1e3})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": "20"})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": true})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": null})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": {}})", bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 1000000000000001})",
              bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 18446744073709551616})",
              bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": )" + std::string(100000, '['),
              bad_burst },
    BadBody { put, R"({"rate": "1r/s", "burst": 1000000001})",
              "burst 1000000001 is too large for the rate" }
),
    [](const testing::TestParamInfo<BadBody> &info) {
        return rate_limit_test::param_name(
            info.index, (info.param.method == post ? "POST " : "PUT ")
                        + info.param.text.substr(0, 40));
    });


TEST(BucketBody, NullArgumentsAndTheErrorBuffer)
{
    ngx_http_rate_limit_bucket_body_t body;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body(nullptr, 3, 0, &body, err,
                                                    sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body("{}", 2, 0, nullptr, err,
                                                    sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body(nullptr, 0, 0, &body, err,
                                                    sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(std::string(err).find("empty body"), std::string::npos);

    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body("{", 1, 0, &body, nullptr,
                                                    0),
              NGX_HTTP_RATE_LIMIT_EINVAL);

    char tiny[8];
    std::memset(tiny, 'Z', sizeof(tiny));
    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body("{", 1, 0, &body, tiny,
                                                    5),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(std::strlen(tiny), 4u);
    EXPECT_EQ(tiny[5], 'Z');
}


TEST(BucketBody, ReadsOnlyTheGivenLength)
{
    const std::string text = R"({"rate": "1r/s"}GARBAGE)";
    ngx_http_rate_limit_bucket_body_t body;

    EXPECT_EQ(ngx_http_rate_limit_parse_bucket_body(text.data(), 16, 0, &body,
                                                    nullptr, 0),
              NGX_HTTP_RATE_LIMIT_OK);
    EXPECT_EQ(body.rate.count, 1u);
    EXPECT_EQ(body.key_len, 0u);
}


/* the escaper */

std::string escape(const std::string &in)
{
    const unsigned char *bytes =
        reinterpret_cast<const unsigned char *>(in.data());
    const size_t expected_len = ngx_http_rate_limit_json_escape_len(
        bytes, in.size());

    /* one guard byte, to catch a write past the announced length */
    std::string out(expected_len + 1, '\x7e');
    const size_t len = ngx_http_rate_limit_json_escape(
        bytes, in.size(), reinterpret_cast<unsigned char *>(out.data()));

    EXPECT_EQ(len, expected_len);
    EXPECT_LE(len, 6 * in.size());
    EXPECT_EQ(out[expected_len], '\x7e');
    out.resize(std::min(len, expected_len));
    return out;
}

/* what a JSON parser reads from the escaped text between quotes */
std::string read_back(const std::string &escaped)
{
    return nlohmann::json::parse("\"" + escaped + "\"").get<std::string>();
}


TEST(JsonEscape, PlainTextIsCopied)
{
    EXPECT_EQ(escape(""), "");
    EXPECT_EQ(escape("partner-acme/42 ~ok!"), "partner-acme/42 ~ok!");
}


TEST(JsonEscape, QuotesBackslashesAndControlCharacters)
{
    EXPECT_EQ(escape("a\"b\\c"), "a\\\"b\\\\c");
    EXPECT_EQ(escape("\b\f\n\r\t"), "\\b\\f\\n\\r\\t");
    EXPECT_EQ(escape(std::string("\0\x01\x1f\x7f", 4)),
              "\\u0000\\u0001\\u001f\\u007f");
    EXPECT_EQ(escape("</script>"), "</script>");
}


TEST(JsonEscape, WellFormedUtf8IsKept)
{
    for (const std::string &text : std::vector<std::string> {
             "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
             "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf",
             "\xee\x80\x80", "\xef\xbf\xbf", "\xf0\x90\x80\x80",
             "\xf4\x8f\xbf\xbf" })
    {
        EXPECT_EQ(escape(text), text) << testing::PrintToString(text);
        EXPECT_EQ(read_back(escape(text)), text);
    }
}


TEST(JsonEscape, LineAndParagraphSeparatorsAreEscaped)
{
    EXPECT_EQ(escape("a\xe2\x80\xa8" "b\xe2\x80\xa9"), "a\\u2028b\\u2029");
    EXPECT_EQ(read_back(escape("\xe2\x80\xa8")), "\xe2\x80\xa8");
}


TEST(JsonEscape, EachByteOfIllFormedUtf8BecomesItsLatin1Escape)
{
    struct Case {
        std::string  in;
        std::string  out;
    };

    for (const Case &c : std::vector<Case> {
             { "\x80", "\\u0080" },                        /* stray */
             { "\xff", "\\u00ff" },
             { "\xfe\xff", "\\u00fe\\u00ff" },
             { "\xc0\xaf", "\\u00c0\\u00af" },             /* overlong */
             { "\xc1\xbf", "\\u00c1\\u00bf" },
             { "\xe0\x80\xaf", "\\u00e0\\u0080\\u00af" },
             { "\xf0\x80\x80\xaf", "\\u00f0\\u0080\\u0080\\u00af" },
             { "\xed\xa0\x80", "\\u00ed\\u00a0\\u0080" },  /* surrogate */
             { "\xf4\x90\x80\x80", "\\u00f4\\u0090\\u0080\\u0080" },
             { "\xf5\x80\x80\x80", "\\u00f5\\u0080\\u0080\\u0080" },
             { "\xe2\x82", "\\u00e2\\u0082" },             /* cut short */
             { "\xe2\x82" "A", "\\u00e2\\u0082A" },
             { "a\xc3", "a\\u00c3" },
             { "\xc3\xc3\xa9", "\\u00c3\xc3\xa9" } })      /* resumes */
    {
        EXPECT_EQ(escape(c.in), c.out) << testing::PrintToString(c.in);
    }

    /* and a JSON parser reads U+00XX for each such byte */
    EXPECT_EQ(read_back(escape("\xff")), "\xc3\xbf");
}


TEST(JsonEscape, NullInput)
{
    unsigned char out[8];
    EXPECT_EQ(ngx_http_rate_limit_json_escape_len(nullptr, 5), 0u);
    EXPECT_EQ(ngx_http_rate_limit_json_escape(nullptr, 5, out), 0u);
    const unsigned char in[] = "x";
    EXPECT_EQ(ngx_http_rate_limit_json_escape(in, 1, nullptr), 0u);
}


TEST(JsonEscape, RandomBytesAlwaysGiveValidJson)
{
    std::mt19937 random(20240611);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_int_distribution<size_t> length(0, 40);

    for (int round = 0; round < 20000; round++) {
        std::string in(length(random), '\0');
        for (char &c : in) {
            c = static_cast<char>(byte(random));
        }

        const std::string escaped = escape(in);
        std::string decoded;
        ASSERT_NO_THROW(decoded = read_back(escaped))
            << testing::PrintToString(in);

        /* nothing is dropped: every byte comes back as itself or U+00XX */
        EXPECT_GE(decoded.size(), in.size());
    }
}

} // namespace
