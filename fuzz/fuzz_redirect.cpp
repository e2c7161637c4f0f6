/*
 * The text of a Redis error reply, as a MOVED or ASK redirect or as any
 * other error.  A redirect that is read must be what was written: written
 * out again the way Redis writes it, it reads the same.
 */

#include "fuzz_check.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string_view>


namespace {

using rate_limit_fuzz::require;


void check_redirect(std::string_view text,
    const ngx_http_rate_limit_redirect_t &out)
{
    const bool moved = out.kind == NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED;

    require(text.substr(0, moved ? 6 : 4) == (moved ? "MOVED " : "ASK "),
            "the kind is the error's first word");
    require(out.slot < NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS,
            "the slot is a slot");
    require(out.port >= 1 && out.port <= 65535, "the port is a port");

    const size_t host_len = strnlen(out.host, sizeof(out.host));
    require(host_len < sizeof(out.host), "the host is NUL ended");
    require(std::string_view(out.host) != "?",
            "an unknown endpoint reads as the empty host");

    for (size_t i = 0; i < host_len; i++) {
        const unsigned char c = static_cast<unsigned char>(out.host[i]);
        require(c > ' ' && c <= '~' && c != '[' && c != ']',
                "the host holds no space, bracket or control character");
    }

    char again[128];
    const int len = std::snprintf(again, sizeof(again), "%s %u %s:%u",
                                  moved ? "MOVED" : "ASK", out.slot,
                                  out.host, out.port);
    require(len > 0 && static_cast<size_t>(len) < sizeof(again),
            "the redirect can be written again");

    ngx_http_rate_limit_redirect_t reread;
    require(ngx_http_rate_limit_cluster_redirect(again,
                                                 static_cast<size_t>(len),
                                                 &reread)
            == out.kind
            && reread.slot == out.slot && reread.port == out.port
            && std::strcmp(reread.host, out.host) == 0,
            "written again, the redirect reads the same");
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = reinterpret_cast<const char *>(data);
    ngx_http_rate_limit_redirect_t out;

    std::memset(&out, 0xa5, sizeof(out));

    const ngx_http_rate_limit_redirect_e kind =
        ngx_http_rate_limit_cluster_redirect(text, size, &out);

    require(kind == out.kind, "the kind returned is the kind written");

    if (kind == NGX_HTTP_RATE_LIMIT_REDIRECT_NONE) {
        const ngx_http_rate_limit_redirect_t zero {};
        require(std::memcmp(&out, &zero, sizeof(out)) == 0,
                "no redirect leaves an all-zero *out");
        return 0;
    }

    require(kind == NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED
            || kind == NGX_HTTP_RATE_LIMIT_REDIRECT_ASK,
            "a redirect is MOVED or ASK");
    check_redirect(std::string_view(text, size), out);

    return 0;
}
