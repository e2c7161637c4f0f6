/*
 * The policy file (rate_limit_policy_file), read through the real loader:
 * each input becomes the content of one memfd, opened by its /proc path as
 * nginx would open the file.  Nothing touches the disk.
 */

#include "fuzz_check.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <string_view>


namespace {

using rate_limit_fuzz::require;
using rate_limit_fuzz::require_message;


struct PolicyFile {
    int          fd;
    std::string  path;
};


/* one memfd for the whole run: the loader opens it anew each time */
const PolicyFile &policy_file()
{
    static const PolicyFile file = [] {
        const int fd = memfd_create("rate_limit_policy", MFD_CLOEXEC);
        require(fd != -1, "memfd_create works");
        return PolicyFile { fd, "/proc/self/fd/" + std::to_string(fd) };
    }();
    return file;
}


void write_policy(const uint8_t *data, size_t size)
{
    const int fd = policy_file().fd;

    require(ftruncate(fd, 0) == 0, "the memfd can be emptied");

    size_t done = 0;
    while (done < size) {
        const ssize_t n = pwrite(fd, data + done, size - done, done);
        require(n > 0, "the memfd takes the input");
        done += static_cast<size_t>(n);
    }
}


std::string_view zone_of(const ngx_http_rate_limit_policy_entry_t &e)
{
    return std::string_view(e.zone, e.zone_len);
}


std::string_view key_of(const ngx_http_rate_limit_policy_entry_t &e)
{
    return std::string_view(reinterpret_cast<const char *>(e.key),
                            e.key_len);
}


void check_entry(const ngx_http_rate_limit_policy_entry_t &e)
{
    /* "" too: the module refuses names that are not its zones */
    require(e.zone != nullptr && e.zone[e.zone_len] == '\0',
            "an entry's zone is NUL ended");
    require(e.key != nullptr && e.key_len > 0 && e.key[e.key_len] == '\0',
            "an entry's key is NUL ended and not empty");
    require(e.line >= 1 && e.column >= 1, "positions are 1-based");

    ngx_http_rate_limit_params_t params;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    require(ngx_http_rate_limit_make_params_blocking(&e.rate, e.burst,
                                                     &params, err,
                                                     sizeof(err))
            == NGX_HTTP_RATE_LIMIT_OK,
            "every entry has passed make_params_blocking()");
}


void check_policy(const ngx_http_rate_limit_policy_t *policy)
{
    const size_t size = ngx_http_rate_limit_policy_size(policy);
    const size_t nzones = ngx_http_rate_limit_policy_zones(policy);
    ngx_http_rate_limit_policy_entry_t previous {};

    for (size_t i = 0; i < size; i++) {
        ngx_http_rate_limit_policy_entry_t e;
        ngx_http_rate_limit_policy_entry(policy, i, &e);
        check_entry(e);

        /* string_view compares as unsigned bytes, a prefix first */
        require(i == 0 || zone_of(previous) < zone_of(e)
                || (zone_of(previous) == zone_of(e)
                    && key_of(previous) < key_of(e)),
                "entries are sorted by (zone, key), with no repeat");
        previous = e;

        bool named = false;
        for (size_t z = 0; z < nzones && !named; z++) {
            ngx_http_rate_limit_policy_zone_t zone;
            ngx_http_rate_limit_policy_zone(policy, z, &zone);
            named = std::string_view(zone.name, zone.name_len) == zone_of(e);
        }
        require(named, "an entry's zone is among the zones");
    }

    for (size_t z = 0; z < nzones; z++) {
        ngx_http_rate_limit_policy_zone_t zone;
        ngx_http_rate_limit_policy_zone(policy, z, &zone);
        require(zone.name != nullptr && zone.name[zone.name_len] == '\0'
                && zone.line >= 1 && zone.column >= 1,
                "a zone is a NUL ended name with its position");

        for (size_t other = 0; other < z; other++) {
            ngx_http_rate_limit_policy_zone_t seen;
            ngx_http_rate_limit_policy_zone(policy, other, &seen);
            require(std::string_view(seen.name, seen.name_len)
                    != std::string_view(zone.name, zone.name_len),
                    "each zone is named once");
        }
    }

    ngx_http_rate_limit_policy_entry_t beyond;
    ngx_http_rate_limit_policy_entry(policy, size, &beyond);
    require(beyond.zone == nullptr && beyond.key == nullptr
            && beyond.line == 0,
            "an entry beyond the size is all zero");
}

} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    write_policy(data, size);

    /* a recognisable pointer, to show that a failure leaves it alone */
    static int sentinel;
    ngx_http_rate_limit_policy_t *const untouched =
        reinterpret_cast<ngx_http_rate_limit_policy_t *>(&sentinel);
    ngx_http_rate_limit_policy_t *policy = untouched;
    char err[NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN];

    const std::string &path = policy_file().path;

    if (ngx_http_rate_limit_policy_load(path.c_str(), &policy, err,
                                        sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        require_message(err, sizeof(err));
        require(std::string_view(err).substr(0, path.size()) == path,
                "an error starts with the file's path");
        require(policy == untouched, "a refused file yields no policy");
        return 0;
    }

    require(policy != untouched && policy != nullptr,
            "a loaded file yields a policy");
    check_policy(policy);
    ngx_http_rate_limit_policy_free(policy);

    return 0;
}
