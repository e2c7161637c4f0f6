/*
 * Redis key encoding and the SHA-1 it relies on.
 *
 * Keys come from client-controlled variables (an API key header, say), so
 * their length is bounded before they reach Redis: a long key is replaced
 * by '#' and its SHA-1.  Plain keys never start with '#', so a client
 * cannot pick a key that collides with the hash of another one.
 *
 * SHA-1 is written here from FIPS 180-4 rather than borrowed from OpenSSL
 * so the core needs no library; it is used for naming, not for security,
 * and it is also what Redis uses to name scripts (EVALSHA).
 */

#include <ngx_http_rate_limit_core.h>

#include <array>
#include <cstdint>
#include <cstring>


namespace {

using Sha1Digest = std::array<uint8_t, 20>;


class Sha1 {
public:
    void update(const unsigned char *data, size_t len) noexcept
    {
        message_bytes_ += len;

        while (len > 0) {
            const size_t room = block_.size() - block_used_;
            const size_t taken = len < room ? len : room;

            std::memcpy(block_.data() + block_used_, data, taken);
            block_used_ += taken;
            data += taken;
            len -= taken;

            if (block_used_ == block_.size()) {
                compress();
                block_used_ = 0;
            }
        }
    }

    Sha1Digest finish() noexcept
    {
        /* the length is of the message alone, taken before padding */
        const uint64_t message_bits = message_bytes_ * 8;

        /* FIPS 180-4 5.1.1: a 1 bit, zeros, then the 64-bit length */
        block_[block_used_++] = 0x80;

        if (block_used_ > block_.size() - 8) {
            std::memset(block_.data() + block_used_, 0,
                        block_.size() - block_used_);
            compress();
            block_used_ = 0;
        }

        std::memset(block_.data() + block_used_, 0,
                    block_.size() - 8 - block_used_);

        for (size_t i = 0; i < 8; i++) {
            block_[block_.size() - 1 - i] =
                static_cast<uint8_t>(message_bits >> (8 * i));
        }

        compress();

        Sha1Digest digest;

        for (size_t i = 0; i < state_.size(); i++) {
            for (size_t byte = 0; byte < 4; byte++) {
                digest[4 * i + byte] =
                    static_cast<uint8_t>(state_[i] >> (24 - 8 * byte));
            }
        }

        return digest;
    }

private:
    static uint32_t rotate_left(uint32_t x, unsigned n) noexcept
    {
        return (x << n) | (x >> (32 - n));
    }

    /* FIPS 180-4 6.1.2: one 512-bit block into the running hash */
    void compress() noexcept
    {
        std::array<uint32_t, 80> schedule;

        for (size_t t = 0; t < 16; t++) {
            schedule[t] = static_cast<uint32_t>(block_[4 * t]) << 24
                          | static_cast<uint32_t>(block_[4 * t + 1]) << 16
                          | static_cast<uint32_t>(block_[4 * t + 2]) << 8
                          | static_cast<uint32_t>(block_[4 * t + 3]);
        }

        for (size_t t = 16; t < 80; t++) {
            schedule[t] = rotate_left(schedule[t - 3] ^ schedule[t - 8]
                                      ^ schedule[t - 14] ^ schedule[t - 16],
                                      1);
        }

        uint32_t a = state_[0];
        uint32_t b = state_[1];
        uint32_t c = state_[2];
        uint32_t d = state_[3];
        uint32_t e = state_[4];

        for (size_t t = 0; t < 80; t++) {
            uint32_t f;
            uint32_t k;

            if (t < 20) {
                f = (b & c) | (~b & d);                 /* Ch */
                k = 0x5a827999;
            } else if (t < 40) {
                f = b ^ c ^ d;                          /* Parity */
                k = 0x6ed9eba1;
            } else if (t < 60) {
                f = (b & c) | (b & d) | (c & d);        /* Maj */
                k = 0x8f1bbcdc;
            } else {
                f = b ^ c ^ d;                          /* Parity */
                k = 0xca62c1d6;
            }

            const uint32_t temp = rotate_left(a, 5) + f + e + k + schedule[t];
            e = d;
            d = c;
            c = rotate_left(b, 30);
            b = a;
            a = temp;
        }

        state_[0] += a;
        state_[1] += b;
        state_[2] += c;
        state_[3] += d;
        state_[4] += e;
    }

    /* FIPS 180-4 5.3.1 */
    std::array<uint32_t, 5> state_ {
        0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0
    };
    std::array<uint8_t, 64> block_ {};
    size_t                  block_used_ = 0;
    uint64_t                message_bytes_ = 0;
};


void write_sha1_hex(const unsigned char *data, size_t len, char *out) noexcept
{
    static constexpr char hex_digits[] = "0123456789abcdef";

    Sha1 sha1;
    sha1.update(data, len);
    const Sha1Digest digest = sha1.finish();

    for (size_t i = 0; i < digest.size(); i++) {
        out[2 * i] = hex_digits[digest[i] >> 4];
        out[2 * i + 1] = hex_digits[digest[i] & 0x0f];
    }

    out[NGX_HTTP_RATE_LIMIT_SHA1_HEX] = '\0';
}

} // namespace


extern "C" void
ngx_http_rate_limit_sha1_hex(const unsigned char *data, size_t len,
    char *out) noexcept
{
    if (out == nullptr || (data == nullptr && len != 0)) {
        return;
    }

    try {
        write_sha1_hex(data, len, out);

    } catch (...) {
        out[0] = '\0';
    }
}


extern "C" size_t
ngx_http_rate_limit_encode_key(const unsigned char *key, size_t len,
    unsigned char *out) noexcept
{
    if (out == nullptr || key == nullptr || len == 0) {
        return 0;
    }

    try {
        if (len <= NGX_HTTP_RATE_LIMIT_KEY_MAX && key[0] != '#') {
            std::memcpy(out, key, len);
            return len;
        }

        /* one byte more for the NUL that write_sha1_hex() ends with */
        char hashed[NGX_HTTP_RATE_LIMIT_HASHED_LEN + 1];

        hashed[0] = '#';
        write_sha1_hex(key, len, hashed + 1);

        std::memcpy(out, hashed, NGX_HTTP_RATE_LIMIT_HASHED_LEN);
        return NGX_HTTP_RATE_LIMIT_HASHED_LEN;

    } catch (...) {
        return 0;
    }
}
