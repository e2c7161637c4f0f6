/* SHA-1 against the FIPS 180 examples, and the Redis key encoding. */

#include "rate_limit_test_support.h"

#include <string>
#include <vector>


namespace {

using rate_limit_test::sha1_hex;


/* a fixed, non-repeating byte pattern, so block boundaries are exercised */
std::string pattern(size_t len)
{
    std::string bytes(len, '\0');
    for (size_t i = 0; i < len; i++) {
        bytes[i] = static_cast<char>((i * 7 + 3) & 0xff);
    }
    return bytes;
}


TEST(Sha1, FipsExamples)
{
    EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnop"
                       "nopq"),
              "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    EXPECT_EQ(sha1_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijkl"
                       "mnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopq"
                       "rstu"),
              "a49b2446a02c645bf419f995b67091253a04a259");
    EXPECT_EQ(sha1_hex(std::string(1000000, 'a')),
              "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}


TEST(Sha1, PaddingAroundBlockBoundaries)
{
    /* expected values from Python's hashlib */
    const std::vector<std::pair<size_t, const char *>> expected {
        { 55, "ddf57317ef34bfee3b6df83d359098930eb278bc" },
        { 56, "a0d492bb0fc889d0eca3bc137066ab6f4f74f369" },
        { 57, "11a02dcf95859677a62e75024067c22b165d890f" },
        { 63, "c55856749bef509bdfe6bfebfc7bf4e793e82132" },
        { 64, "bede92be29c3874e1b54ddc77988d606fc857a8e" },
        { 65, "b05a80522b053d6dc7e0a517d0e70212c7dad11f" },
        { 119, "504e27376a6e0f0dba8295b85cb25dc4dfa17d23" },
        { 120, "82134b02fb3f702491be9bed581eeab59334acb2" },
        { 127, "34d5e582029e9b9b85b2febe31da3db7cdabaaea" },
        { 128, "a09133e6730ffe899efb70204cb5646cd5dc24ee" },
        { 1000, "4231a8a50a10fa9758db8ec71fdef855b751048a" },
    };

    for (const auto &[len, hex] : expected) {
        EXPECT_EQ(sha1_hex(pattern(len)), hex) << len << " bytes";
    }
}


TEST(Sha1, NullArguments)
{
    char hex[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];
    ngx_http_rate_limit_sha1_hex(nullptr, 0, hex);
    EXPECT_STREQ(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");

    ngx_http_rate_limit_sha1_hex(nullptr, 0, nullptr);
}


/* encodes into a buffer with a guard zone, and checks the guard */
std::string encode(const std::string &key)
{
    std::vector<unsigned char> out(NGX_HTTP_RATE_LIMIT_KEY_MAX + 64, 0xee);

    const size_t len = ngx_http_rate_limit_encode_key(
        reinterpret_cast<const unsigned char *>(key.data()), key.size(),
        out.data());

    EXPECT_LE(len, size_t(NGX_HTTP_RATE_LIMIT_KEY_MAX));
    for (size_t i = len; i < out.size(); i++) {
        EXPECT_EQ(out[i], 0xee) << "byte " << i << " written";
    }

    return std::string(out.begin(), out.begin() + len);
}


TEST(EncodeKey, ShortKeysAreKeptAsTheyAre)
{
    EXPECT_EQ(encode("user-42"), "user-42");
    EXPECT_EQ(encode("a"), "a");
    EXPECT_EQ(encode("x#y"), "x#y");
    EXPECT_EQ(encode("2001:db8::1"), "2001:db8::1");
}


TEST(EncodeKey, EmptyKeyIsEmpty)
{
    EXPECT_EQ(encode(""), "");
}


TEST(EncodeKey, ExactlyTheMaximumIsKept)
{
    const std::string key(NGX_HTTP_RATE_LIMIT_KEY_MAX, 'k');
    EXPECT_EQ(encode(key), key);
}


TEST(EncodeKey, LongerKeysAreHashed)
{
    const std::string key(NGX_HTTP_RATE_LIMIT_KEY_MAX + 1, 'k');
    const std::string encoded = encode(key);

    EXPECT_EQ(encoded, "#e02b77c123ab88b0a8e42a657dad2bb36cf235c5");
    EXPECT_EQ(encoded.size(), size_t(NGX_HTTP_RATE_LIMIT_HASHED_LEN));

    /* one different byte, far in, is a different key */
    std::string other = key;
    other[200] = 'K';
    EXPECT_NE(encode(other), encoded);

    EXPECT_EQ(encode(std::string(100000, 'z')),
              "#" + sha1_hex(std::string(100000, 'z')));
}


TEST(EncodeKey, LeadingHashIsAlwaysHashed)
{
    /* so no plain key can pose as the hash of a long one */
    EXPECT_EQ(encode("#abc"), "#a620f225fbbad05284977d64e623a54608db9d76");
    EXPECT_EQ(encode("#"), "#d08f88df745fa7950b104e4a707a31cfce7b5841");

    const std::string hashed = encode(std::string(300, 'k'));
    EXPECT_NE(encode(hashed), hashed);
    EXPECT_EQ(encode(hashed), "#" + sha1_hex(hashed));
}


TEST(EncodeKey, BinaryBytesAreKept)
{
    /* $binary_remote_addr: four or sixteen bytes, NUL included */
    const std::string ipv4("\x7f\x00\x00\x01", 4);
    EXPECT_EQ(encode(ipv4), ipv4);

    const std::string ipv6("\x20\x01\x0d\xb8\x00\x00\x00\x00"
                           "\x00\x00\x00\x00\x00\x00\x00\x01", 16);
    EXPECT_EQ(encode(ipv6), ipv6);

    const std::string high("\xff\xfe\x80\x00\x23", 5);
    EXPECT_EQ(encode(high), high);

    /* NULs do not end a long key early */
    std::string long_binary(400, '\0');
    long_binary[399] = '\x01';
    EXPECT_EQ(encode(long_binary), "#" + sha1_hex(long_binary));
    EXPECT_NE(encode(long_binary), encode(std::string(400, '\0')));
}


TEST(EncodeKey, NullArguments)
{
    unsigned char out[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    const unsigned char key[] = "abc";

    EXPECT_EQ(ngx_http_rate_limit_encode_key(nullptr, 3, out), 0u);
    EXPECT_EQ(ngx_http_rate_limit_encode_key(key, 3, nullptr), 0u);
}

} // namespace
