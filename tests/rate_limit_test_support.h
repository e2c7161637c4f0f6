/* Small helpers shared by the core's test suites. */

#ifndef RATE_LIMIT_TEST_SUPPORT_H
#define RATE_LIMIT_TEST_SUPPORT_H

#include <ngx_http_rate_limit_core.h>

#include <gtest/gtest.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>


namespace rate_limit_test {

/* a moment in 2023, so that tests never run near zero by accident */
constexpr int64_t base_now_us = 1700000000000000LL;

/* parameters for a rate written as in nginx.conf; fails the test if bad */
inline ngx_http_rate_limit_params_t
params_for(const std::string &rate_text, uint64_t burst = 0)
{
    ngx_http_rate_limit_rate_t rate {};
    ngx_http_rate_limit_params_t params {};
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    EXPECT_EQ(ngx_http_rate_limit_parse_rate(rate_text.data(),
                                             rate_text.size(), &rate, err,
                                             sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK)
        << rate_text << ": " << err;
    EXPECT_EQ(ngx_http_rate_limit_make_params(&rate, burst, &params, err,
                                              sizeof(err)),
              NGX_HTTP_RATE_LIMIT_OK)
        << rate_text << " burst " << burst << ": " << err;

    return params;
}

inline ngx_http_rate_limit_decision_t
decide(const ngx_http_rate_limit_params_t &params,
    const ngx_http_rate_limit_state_t &stored, int64_t now_us,
    uint64_t cost = 1)
{
    ngx_http_rate_limit_decision_t d {};
    ngx_http_rate_limit_decide(&params, &stored, now_us, cost, &d);
    return d;
}

/* a TAT alone, as a version before the token code stored it */
inline ngx_http_rate_limit_decision_t
decide(const ngx_http_rate_limit_params_t &params, int64_t tat_us,
    int64_t now_us, uint64_t cost = 1)
{
    return decide(params,
                  ngx_http_rate_limit_state_t {
                      tat_us, NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE },
                  now_us, cost);
}

/* the state a bucket of params stores for tat_us */
inline ngx_http_rate_limit_state_t
state_for(const ngx_http_rate_limit_params_t &params, int64_t tat_us)
{
    return { tat_us, ngx_http_rate_limit_token_code(
                         ngx_http_rate_limit_token_us(&params)) };
}

/* a limit as in nginx.conf: a rate, and a burst (0: the rate's count) */
using LimitText = std::pair<const char *, uint64_t>;

/*
 * check(before, after, context) for every limit changed into every other,
 * itself included
 */
template <typename Check>
void for_each_change(const std::vector<LimitText> &limits, Check check)
{
    for (const auto &[old_rate, old_burst] : limits) {
        for (const auto &[new_rate, new_burst] : limits) {
            check(params_for(old_rate, old_burst),
                  params_for(new_rate, new_burst),
                  std::string(old_rate) + " burst "
                  + std::to_string(old_burst) + " to " + new_rate
                  + " burst " + std::to_string(new_burst));
        }
    }
}

inline std::string sha1_hex(const std::string &data)
{
    char hex[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];
    ngx_http_rate_limit_sha1_hex(
        reinterpret_cast<const unsigned char *>(data.data()), data.size(),
        hex);
    return hex;
}

/* a readable, unique gtest name for a parameter such as "10r/s" */
inline std::string param_name(size_t index, const std::string &text)
{
    std::string name = "case" + std::to_string(index);

    if (!text.empty()) {
        name += '_';
    }
    for (unsigned char c : text) {
        name += std::isalnum(c) ? static_cast<char>(c) : '_';
    }

    return name;
}


/* a mkdtemp folder for the life of the object, removed with its files */
class TempFolder {
public:
    TempFolder()
    {
        char path_template[] = "/tmp/rate-limit-test-XXXXXX";
        if (mkdtemp(path_template) != nullptr) {
            path_ = path_template;
        }
    }

    TempFolder(const TempFolder &) = delete;
    TempFolder &operator=(const TempFolder &) = delete;

    ~TempFolder()
    {
        if (!path_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(path_, ignored);
        }
    }

    bool ok() const { return !path_.empty(); }
    const std::string &path() const { return path_; }

    /* writes name in the folder, byte for byte, and returns its path */
    std::string write(const std::string &name, const std::string &content)
        const
    {
        const std::string file_path = path_ + "/" + name;
        std::ofstream file(file_path, std::ios::binary | std::ios::trunc);
        file.write(content.data(),
                   static_cast<std::streamsize>(content.size()));
        EXPECT_TRUE(file.good()) << "cannot write " << file_path;
        return file_path;
    }

private:
    std::string  path_;
};

} // namespace rate_limit_test

#endif
