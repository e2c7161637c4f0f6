/*
 * The configuration object behind rl_conf.h, shared by its two sources:
 * rl_conf_parse.cpp reads the directives, rl_conf.cpp checks them across
 * directives and builds what each process needs.
 */

#ifndef _RL_CONF_IMPL_H_INCLUDED_
#define _RL_CONF_IMPL_H_INCLUDED_


#include <rl_conf.h>

#include <charconv>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>


namespace ngx_http_rate_limit::conf {

/* where a line of nginx.conf is, for the errors found after parsing */
struct Where {
    std::string                             file;
    size_t                                  line = 0;
};

/* a zone by name: defined by rate_limit_zone, or used before that */
struct Zone {
    rl_zone_t                              *zone = nullptr;
    std::string                             name;
    bool                                    defined = false;
    Where                                   named;      /* first named */
    std::string                             redis_prefix;
    /* the policy file's entries; a deque, for the entries point to it */
    std::deque<std::string>                 policy_keys;
    std::vector<rl_store_policy_entry_t>    policy;
};

/* a rate_limit line, for the check of its cost */
struct Ref {
    Zone                                   *zone = nullptr;
    uint64_t                                cost = 1;
    std::string                             cost_text;
    Where                                   where;
};

struct RedisAddress {
    std::string                             address;    /* as written */
    std::string                             host;       /* numeric, or "" */
    unsigned                                port = 0;
    std::string                             unix_path;
    bool                                    name = false;
    /* a name that did not resolve: the message, if no resolver may */
    std::string                             unresolved;
};

struct RedisTls {
    bool                                    enabled = false;
    bool                                    verify = true;
    std::string                             trusted_certificate;
    std::string                             certificate;
    std::string                             certificate_key;
    std::string                             server_name;
    /* the first tls_* parameter written, for the message when tls=on is
     * missing */
    std::string                             first;
};

struct Redis {
    std::vector<RedisAddress>               addresses;
    bool                                    cluster = false;
    /* names are resolved at run time, by nginx's resolver */
    bool                                    resolver = false;
    bool                                    has_password = false;
    std::string                             password;
    std::string                             password_env;
    std::string                             username;
    uint64_t                                db = 0;
    uint64_t                                timeout_ms = 50;
    std::string                             prefix = "rl";
    RedisTls                                tls;
    /* Sentinel: the master's name, and the addresses are the sentinels */
    std::string                             sentinel;
    bool                                    has_sentinel_password = false;
    std::string                             sentinel_password;
    std::string                             sentinel_password_env;
    std::string                             sentinel_username;
};

struct Postgres {
    std::string                             conninfo;
    std::string                             conninfo_env;
    bool                                    conninfo_known = false;
    uint64_t                                interval_ms = 10000;
};


inline void
append(std::string &s, std::string_view part)
{
    s.append(part);
}

template <typename N,
          typename = std::enable_if_t<std::is_integral_v<N>>>
void
append(std::string &s, N n)
{
    char   digits[24];
    auto   r = std::to_chars(digits, digits + sizeof(digits), n);

    s.append(digits, r.ptr);
}

inline std::string_view
view(const rl_conf_arg_t &arg)
{
    return {reinterpret_cast<const char *>(arg.data), arg.len};
}

}  // namespace ngx_http_rate_limit::conf


struct rl_conf_s {
    using Zone = ngx_http_rate_limit::conf::Zone;

    rl_conf_host_t                              host;
    std::string                                 error;

    std::deque<Zone>                            zones;
    std::deque<ngx_http_rate_limit::conf::Ref>  refs;
    bool                                        has_redis = false;
    ngx_http_rate_limit::conf::Redis            redis;
    size_t                                      redis_zones = 0;
    bool                                        has_postgres = false;
    ngx_http_rate_limit::conf::Postgres         postgres;
    bool                                        has_policy = false;
    std::string                                 policy_file;
    std::vector<std::string>                    token_envs;

    /* what a process built, living as long as the configuration */
    std::vector<rl_redis_endpoint_t>            endpoints;
    std::string                                 heartbeat_key;
    std::string                                 heartbeat_id;
    std::string                                 failure_policy;
    std::vector<rl_pg_zone_t>                   pg_zones;

    /* the message of a refusal, its parts in a row */
    template <typename... Part>
    int fail(const Part &... parts)
    {
        error.clear();
        (ngx_http_rate_limit::conf::append(error, parts), ...);
        return RL_CONF_ERROR;
    }

    Zone *find(std::string_view name);
    /* finds the zone, or makes a placeholder for one defined further on */
    Zone *get(std::string_view name, const rl_conf_line_t *line);
};


#endif /* _RL_CONF_IMPL_H_INCLUDED_ */
