/* Zone size parsing: what "zone=NAME:SIZE" accepts or refuses. */

#include "rate_limit_test_support.h"

#include <cstring>
#include <string>


namespace {

struct ParsedSize {
    int          rc;
    uint64_t     bytes;
    std::string  error;
};


ParsedSize parse(const std::string &text)
{
    /* a recognisable size, to show that a failure leaves it alone */
    ParsedSize parsed { -1, 12345, "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    parsed.rc = ngx_http_rate_limit_parse_size(text.data(), text.size(),
                                               &parsed.bytes, err,
                                               sizeof(err));
    parsed.error = err;
    return parsed;
}


struct ValidSize {
    const char  *text;
    uint64_t     bytes;
};

void PrintTo(const ValidSize &size, std::ostream *out)
{
    *out << '"' << size.text << '"';
}

class ValidSizes : public testing::TestWithParam<ValidSize> {};

TEST_P(ValidSizes, Parse)
{
    const ValidSize &expected = GetParam();
    const ParsedSize parsed = parse(expected.text);

    ASSERT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_OK) << parsed.error;
    EXPECT_EQ(parsed.bytes, expected.bytes);
    EXPECT_EQ(parsed.error, "");
}

INSTANTIATE_TEST_SUITE_P(UnitsAndLimits, ValidSizes, testing::Values(
    ValidSize { "1", 1 },
    ValidSize { "32768", 32768 },
    ValidSize { "32k", 32768 },
    ValidSize { "32K", 32768 },
    ValidSize { "10m", 10485760 },
    ValidSize { "10M", 10485760 },
    ValidSize { "1g", 1073741824 },
    ValidSize { "2G", 2147483648ULL },
    ValidSize { "010k", 10240 },
    ValidSize { "9223372036854775807", 9223372036854775807ULL },
    ValidSize { "9007199254740991k", 9007199254740991ULL << 10 },
    ValidSize { "8796093022207m", 8796093022207ULL << 20 },
    ValidSize { "8589934591g", 8589934591ULL << 30 }),
    [](const testing::TestParamInfo<ValidSize> &info) {
        return rate_limit_test::param_name(info.index, info.param.text);
    });


struct InvalidSize {
    std::string  text;
    const char  *message_part;
};

void PrintTo(const InvalidSize &size, std::ostream *out)
{
    *out << testing::PrintToString(size.text);
}

/* the message of every size beyond NGX_HTTP_RATE_LIMIT_SIZE_MAX */
constexpr const char *size_too_large =
    "too large, at most 9223372036854775807 bytes";

class InvalidSizes : public testing::TestWithParam<InvalidSize> {};

TEST_P(InvalidSizes, AreRefusedWithAMessage)
{
    const InvalidSize &bad = GetParam();
    const ParsedSize parsed = parse(bad.text);

    EXPECT_EQ(parsed.rc, NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(parsed.error.find(bad.message_part), std::string::npos)
        << "message: \"" << parsed.error << "\"";

    /* the output is only written on success */
    EXPECT_EQ(parsed.bytes, 12345u);
}

INSTANTIATE_TEST_SUITE_P(Errors, InvalidSizes, testing::Values(
    InvalidSize { "", "empty size" },
    InvalidSize { "0", "must be positive" },
    InvalidSize { "000", "must be positive" },
    InvalidSize { "0k", "must be positive" },
    InvalidSize { "00000000000000000000000000m", "must be positive" },
    InvalidSize { "k", "whole number of bytes" },
    InvalidSize { "M", "whole number of bytes" },
    InvalidSize { "-1", "whole number of bytes" },
    InvalidSize { "+1", "whole number of bytes" },
    InvalidSize { " 1m", "whole number of bytes" },
    InvalidSize { "1m ", "whole number of bytes" },
    InvalidSize { "1 m", "whole number of bytes" },
    InvalidSize { "1.5m", "whole number of bytes" },
    InvalidSize { "1kb", "whole number of bytes" },
    InvalidSize { "1km", "whole number of bytes" },
    InvalidSize { "10mm", "whole number of bytes" },
    InvalidSize { "1t", "whole number of bytes" },
    InvalidSize { "1b", "whole number of bytes" },
    InvalidSize { "0x10", "whole number of bytes" },
    InvalidSize { "1e6", "whole number of bytes" },
    InvalidSize { "m1", "whole number of bytes" },
    InvalidSize { std::string("1\0k", 3), "whole number of bytes" },
    InvalidSize { std::string("1k\0", 3), "whole number of bytes" },
    InvalidSize { "99999999999999999999999x", "whole number of bytes" },
    InvalidSize { "9223372036854775808", size_too_large },
    InvalidSize { "18446744073709551616", size_too_large },
    InvalidSize { "99999999999999999999999k", size_too_large },
    InvalidSize { "9007199254740992k", size_too_large },
    InvalidSize { "8796093022208m", size_too_large },
    InvalidSize { "8589934592g", size_too_large },
    InvalidSize { "17179869184G", size_too_large }),
    [](const testing::TestParamInfo<InvalidSize> &info) {
        return rate_limit_test::param_name(info.index, info.param.text);
    });


TEST(ParseSize, ReadsOnlyTheGivenLength)
{
    const char text[] = "32kGARBAGE";
    uint64_t bytes = 0;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    ASSERT_EQ(ngx_http_rate_limit_parse_size(text, 3, &bytes, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK) << err;
    EXPECT_EQ(bytes, 32768u);
}


TEST(ParseSize, MissingArgumentsAreRefused)
{
    uint64_t bytes = 7;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_parse_size("1k", 2, nullptr, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(std::strstr(err, "internal error"), nullptr) << err;

    EXPECT_EQ(ngx_http_rate_limit_parse_size(nullptr, 2, &bytes, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(bytes, 7u);

    /* no text at all is the empty size, not an internal error */
    EXPECT_EQ(ngx_http_rate_limit_parse_size(nullptr, 0, &bytes, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_NE(std::strstr(err, "empty size"), nullptr) << err;
}


TEST(ParseSize, ErrorBufferIsOptionalAndNeverOverrun)
{
    uint64_t bytes = 0;

    EXPECT_EQ(ngx_http_rate_limit_parse_size("x", 1, &bytes, nullptr, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);

    char tiny[8];
    std::memset(tiny, 'Z', sizeof(tiny));
    EXPECT_EQ(ngx_http_rate_limit_parse_size("x", 1, &bytes, tiny, 5),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(std::strlen(tiny), 4u);
    EXPECT_EQ(tiny[5], 'Z');

    char untouched = 'U';
    EXPECT_EQ(ngx_http_rate_limit_parse_size("x", 1, &bytes, &untouched, 0),
              NGX_HTTP_RATE_LIMIT_EINVAL);
    EXPECT_EQ(untouched, 'U');
}


TEST(ParseSize, MessagesFitTheCallersBuffer)
{
    for (const char *text : { "", "0", "x", "1x", "99999999999999999999" }) {
        char err[NGX_HTTP_RATE_LIMIT_ERR_LEN + 64];
        std::memset(err, 0, sizeof(err));
        uint64_t bytes = 0;

        ngx_http_rate_limit_parse_size(text, std::strlen(text), &bytes, err,
                                       sizeof(err));
        EXPECT_GT(std::strlen(err), 10u) << text;
        EXPECT_LT(std::strlen(err), size_t(NGX_HTTP_RATE_LIMIT_ERR_LEN))
            << "\"" << err << "\" would be cut";
    }
}

} // namespace
