/*
 * Redis key encoding and the SHA-1 it relies on.
 *
 * Keys come from client-controlled variables (an API key header, say), so
 * their length is bounded before they reach Redis: a long key is replaced
 * by '#' and its SHA-1.  Plain keys never start with '#', so a client
 * cannot pick a key that collides with the hash of another one.
 *
 * SHA-1 comes from OpenSSL's libcrypto, which nginx links already: it
 * names, it does not secure, and it is also what Redis uses to name
 * scripts (EVALSHA).
 */

#include <ngx_http_rate_limit_core.h>

#include <openssl/evp.h>

#include <cstring>


namespace {

/*
 * SHA-1 of data as NUL-ended lower case hex.  EVP_Digest() fails only when
 * libcrypto cannot fetch SHA-1 or allocate its context: then out is left
 * empty and false says so.
 */
bool write_sha1_hex(const unsigned char *data, size_t len, char *out) noexcept
{
    static constexpr char hex_digits[] = "0123456789abcdef";
    static_assert(2 * 20 == NGX_HTTP_RATE_LIMIT_SHA1_HEX, "SHA-1 is 20 bytes");

    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int  digest_len = 0;

    if (EVP_Digest(data, len, digest, &digest_len, EVP_sha1(), nullptr) != 1
        || digest_len * 2 != NGX_HTTP_RATE_LIMIT_SHA1_HEX)
    {
        out[0] = '\0';
        return false;
    }

    for (unsigned int i = 0; i < digest_len; i++) {
        out[2 * i] = hex_digits[digest[i] >> 4];
        out[2 * i + 1] = hex_digits[digest[i] & 0x0f];
    }

    out[NGX_HTTP_RATE_LIMIT_SHA1_HEX] = '\0';
    return true;
}

} // namespace


extern "C" void
ngx_http_rate_limit_sha1_hex(const unsigned char *data, size_t len,
    char *out) noexcept
{
    if (out == nullptr || (data == nullptr && len != 0)) {
        return;
    }

    (void) write_sha1_hex(data, len, out);
}


extern "C" size_t
ngx_http_rate_limit_encode_key(const unsigned char *key, size_t len,
    unsigned char *out) noexcept
{
    if (out == nullptr || key == nullptr || len == 0) {
        return 0;
    }

    if (len <= NGX_HTTP_RATE_LIMIT_KEY_MAX && key[0] != '#') {
        std::memcpy(out, key, len);
        return len;
    }

    /* one byte more for the NUL that write_sha1_hex() ends with */
    char hashed[NGX_HTTP_RATE_LIMIT_HASHED_LEN + 1];

    hashed[0] = '#';

    if (!write_sha1_hex(key, len, hashed + 1)) {
        return 0;
    }

    std::memcpy(out, hashed, NGX_HTTP_RATE_LIMIT_HASHED_LEN);
    return NGX_HTTP_RATE_LIMIT_HASHED_LEN;
}
