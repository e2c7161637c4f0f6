/*
 * The directives' parsers (rl_conf.h) on any arguments: the first byte
 * picks the directive, the rest are its arguments, one a line.  Every
 * refusal names its problem; an accepted zone has a limit; a Redis
 * password never shows in a message; and the checks once the http block is
 * read hold up too.
 */

#include "fuzz_check.h"

#include <rl_conf.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <vector>


namespace {

using rate_limit_fuzz::require;

constexpr const char *directives[] = {
    "rate_limit_zone", "rate_limit", "rate_limit_redis", "rate_limit_postgres",
    "rate_limit_status", "rate_limit_log_level", "rate_limit_api_token",
};

constexpr std::string_view secret = "password=S3CR3T-SENTINEL";


rl_zone_t *
new_zone(void *data, const unsigned char *, size_t)
{
    auto        zones = static_cast<std::deque<rl_zone_t> *>(data);
    rl_zone_t  &zone = zones->emplace_back();

    zone = rl_zone_t{};
    zone.host = &zone;
    return &zone;
}


/* any name resolves, but one that says why it does not */
int
resolve(void *, const unsigned char *address, size_t len, unsigned port,
    rl_conf_resolved_t *out)
{
    if (std::string_view(reinterpret_cast<const char *>(address), len)
        .find("bad") != std::string_view::npos)
    {
        out->err = "host not found";
        return RL_CONF_ERROR;
    }

    std::strcpy(out->host, "127.0.0.1");
    out->port = port;
    return RL_CONF_OK;
}

}  // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    const std::string_view  input(reinterpret_cast<const char *>(data) + 1,
                                  size - 1);
    const char             *name = directives[data[0] % std::size(directives)];
    std::vector<std::string>  words{name};

    for (size_t start = 0; start <= input.size();) {
        size_t  end = input.find('\n', start);

        if (end == std::string_view::npos) {
            end = input.size();
        }

        words.emplace_back(input.substr(start, end - start));
        start = end + 1;
    }

    /* a password the input cannot know shows in no message */
    const bool  with_secret = std::strcmp(name, "rate_limit_redis") == 0
                              && input.find("S3CR3T") == std::string::npos;

    if (with_secret) {
        words.insert(words.begin() + 1 + data[0] % words.size(),
                     std::string(secret));
    }

    std::deque<rl_zone_t>  zones;
    rl_conf_host_t         host{&zones, 4096, new_zone};
    rl_conf_t             *conf = rl_conf_create(&host);

    require(conf != nullptr, "a configuration is created");

    std::vector<rl_conf_arg_t>  args;

    for (const std::string &w : words) {
        args.push_back({reinterpret_cast<const unsigned char *>(w.c_str()),
                        w.size()});
    }

    const std::string  file = "/etc/nginx/nginx.conf";
    rl_conf_line_t     line{args.data(), args.size(),
                            {reinterpret_cast<const unsigned char *>(
                                 file.c_str()), file.size()}, 1};
    rl_conf_result_t   result;
    const int          rc = rl_conf_directive(conf, &line, resolve, nullptr,
                                              &result);

    require(rc == RL_CONF_OK || rc == RL_CONF_ERROR,
            "a first directive is never a duplicate");

    if (rc == RL_CONF_ERROR) {
        const std::string_view  err = rl_conf_error(conf);

        require(!err.empty(), "a refusal comes with a message");
        require(!with_secret || err.find("S3CR3T") == std::string::npos,
                "a password shows in no message");
    }

    if (rc == RL_CONF_OK && std::strcmp(name, "rate_limit_zone") == 0) {
        require(result.zone != nullptr && result.zone->rate.count > 0
                && result.zone->params.burst >= 1,
                "an accepted zone has a rate and a burst");
        require(ngx_http_rate_limit_valid_zone_name(result.zone->name,
                                                    result.zone->name_len),
                "an accepted zone has a valid name");
        require(result.size >= 8 * 4096, "an accepted zone is not too small");
    }

    if (rc == RL_CONF_OK && std::strcmp(name, "rate_limit") == 0) {
        require(result.limit.cost >= 1 && result.limit.cost_text_len > 0,
                "an accepted limit costs something");
    }

    if (rl_conf_finish(conf) != RL_CONF_OK) {
        require(rl_conf_error(conf)[0] != '\0',
                "a refused configuration says why");
    }

    /* nginx refuses what would overflow its 64-bit arithmetic, and a time
     * is never negative */
    const int64_t  ms = rl_conf_parse_time(data, size);

    require(ms >= -1, "a time is -1 or at least 0");

    rl_conf_destroy(conf);

    return 0;
}
