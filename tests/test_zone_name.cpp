/*
 * Zone names: exactly 1 to 64 bytes of [A-Za-z0-9_.-], byte by byte.
 */

#include <ngx_http_rate_limit_core.h>

#include <gtest/gtest.h>

#include <string>


namespace {

int valid(const std::string &name)
{
    return ngx_http_rate_limit_valid_zone_name(
        reinterpret_cast<const unsigned char *>(name.data()), name.size());
}

}  // namespace


TEST(ZoneName, AcceptsTheSet)
{
    for (const char *name : {"api", "A", "z", "0", "9", "_", ".", "-",
                             "api.v2-eu_west", "..", "ABCxyz019_.-"})
    {
        EXPECT_EQ(valid(name), 1) << name;
    }

    EXPECT_EQ(valid(std::string(64, 'a')), 1);
}


TEST(ZoneName, RefusesEverythingElse)
{
    EXPECT_EQ(valid(""), 0);
    EXPECT_EQ(valid(std::string(65, 'a')), 0);
    EXPECT_EQ(ngx_http_rate_limit_valid_zone_name(nullptr, 3), 0);

    /* every byte outside the set, alone and inside a valid name */
    for (int c = 0; c < 256; c++) {
        const bool in_set = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
                            || (c >= '0' && c <= '9') || c == '_'
                            || c == '.' || c == '-';
        const std::string one(1, static_cast<char>(c));

        EXPECT_EQ(valid(one), in_set ? 1 : 0) << "byte " << c;
        EXPECT_EQ(valid("a" + one + "b"), in_set ? 1 : 0) << "byte " << c;
    }

    for (const char *name : {"a b", "a\"b", "a\\b", "a;b", "a\nb", "a,b",
                             "a=b", "caf\xc3\xa9", "a/b", "a:b"})
    {
        EXPECT_EQ(valid(name), 0) << name;
    }
}
