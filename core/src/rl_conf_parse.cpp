/*
 * The directives' parameters (rl_conf.h): each directive's arguments in,
 * the plain results or the message nginx.conf has always been told out.
 * Most messages show a value escaped as inside a JSON string, so that a
 * quote or a newline written in nginx.conf keeps the message one line; the
 * directives whose values may be secrets show only a parameter's name.
 */

#include "rl_conf_impl.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <cctype>
#include <cstring>
#include <string>
#include <string_view>


namespace {

using ngx_http_rate_limit::conf::Ref;
using ngx_http_rate_limit::conf::Redis;
using ngx_http_rate_limit::conf::RedisAddress;
using ngx_http_rate_limit::conf::RedisTls;
using ngx_http_rate_limit::conf::Zone;
using ngx_http_rate_limit::conf::view;

/*
 * The longest time a parameter may give: nginx hands the wait for its next
 * timer to epoll_wait() as an int of milliseconds, and a longer one wraps.
 */
constexpr int64_t msec_max = 2147483647;

constexpr unsigned redis_port = 6379;
constexpr unsigned sentinel_port = 26379;
constexpr size_t   sentinel_name_max = 128;

/* Redis' own bound: its "databases" setting is an int */
constexpr uint64_t redis_db_max = 2147483647;

/* the bytes of a socket path that sockaddr_un holds, with its NUL */
constexpr size_t unix_path_max = sizeof(sockaddr_un::sun_path) - 1;


/* as nginx compares an argument with strcmp(): up to its NUL */
bool
is(const rl_conf_arg_t &arg, std::string_view literal)
{
    return ::strnlen(reinterpret_cast<const char *>(arg.data), arg.len)
               == literal.size()
           && std::memcmp(arg.data, literal.data(), literal.size()) == 0;
}


bool
starts(const rl_conf_arg_t &arg, std::string_view prefix)
{
    return view(arg).substr(0, prefix.size()) == prefix;
}


/* the argument past its "name=" */
rl_conf_arg_t
after(const rl_conf_arg_t &arg, size_t prefix_len)
{
    return {arg.data + prefix_len, arg.len - prefix_len};
}


std::string
escaped(std::string_view value)
{
    auto          in = reinterpret_cast<const unsigned char *>(value.data());
    std::string   out(ngx_http_rate_limit_json_escape_len(in, value.size()),
                      '\0');

    out.resize(ngx_http_rate_limit_json_escape(
        in, value.size(), reinterpret_cast<unsigned char *>(out.data())));

    return out;
}


/* "name" of "name=value"; a parameter without '=' is its own name */
std::string_view
param_name(const rl_conf_arg_t &arg)
{
    std::string_view  v = view(arg);

    return v.substr(0, v.find('='));
}


/*
 * The value of a "name=N" parameter, N a whole number from min to max.  A
 * number too large is told apart from a typo, so that the message can give
 * the largest allowed.
 */
int
number(rl_conf_t *conf, const rl_conf_line_t *line, const rl_conf_arg_t &arg,
    size_t name_len, uint64_t min, uint64_t max, uint64_t *n)
{
    const unsigned char  *start = arg.data + name_len + 1;
    const unsigned char  *last = arg.data + arg.len;
    const unsigned char  *p;
    uint64_t              v = 0;
    bool                  too_large = false;

    for (p = start; p < last && *p >= '0' && *p <= '9'; p++) {
        uint64_t  digit = *p - '0';

        if (too_large || v > max / 10 || (v == max / 10 && digit > max % 10))
        {
            too_large = true;
            continue;
        }

        v = v * 10 + digit;
    }

    if (p == last && !too_large && p != start && v >= min) {
        *n = v;
        return RL_CONF_OK;
    }

    std::string_view  name = view(arg).substr(0, name_len);

    if (p == last && too_large) {
        return conf->fail("invalid ", name, " \"", escaped(view(arg)),
                          "\" in \"", view(line->args[0]),
                          "\" directive: too large, at most ", max);
    }

    return conf->fail("invalid ", name, " \"", escaped(view(arg)), "\" in \"",
                      view(line->args[0]),
                      "\" directive, expected a whole number from ", min,
                      " to ", max);
}


/*
 * The value of a "name=TIME" parameter in milliseconds, in nginx's time
 * syntax, above zero and at most msec_max.
 */
int
msec(rl_conf_t *conf, const rl_conf_line_t *line, const rl_conf_arg_t &arg,
    size_t name_len, uint64_t *out)
{
    rl_conf_arg_t  s = after(arg, name_len + 1);
    int64_t        ms = rl_conf_parse_time(s.data, s.len);

    if (ms == -1) {

        /*
         * nginx's syntax fails an overflow as it fails a typo: when the
         * same text with every number cut to one digit parses, the only
         * fault was a number too large
         */

        std::string  small;

        for (size_t i = 0; i < s.len; i++) {
            bool  digit = s.data[i] >= '0' && s.data[i] <= '9';
            bool  after_digit = i > 0 && s.data[i - 1] >= '0'
                                && s.data[i - 1] <= '9';

            if (!digit) {
                small += static_cast<char>(s.data[i]);

            } else if (!after_digit) {
                small += '1';
            }
        }

        if (rl_conf_parse_time(reinterpret_cast<const unsigned char *>(
                                   small.data()),
                               small.size())
            != -1)
        {
            ms = msec_max + 1;
        }
    }

    if (ms > 0 && ms <= msec_max) {
        *out = static_cast<uint64_t>(ms);
        return RL_CONF_OK;
    }

    std::string_view  name = view(arg).substr(0, name_len);

    if (ms > msec_max) {
        return conf->fail("invalid ", name, " \"", escaped(view(arg)),
                          "\" in \"", view(line->args[0]),
                          "\" directive: too large, at most ", msec_max,
                          "ms");
    }

    return conf->fail("invalid ", name, " \"", escaped(view(arg)), "\" in \"",
                      view(line->args[0]),
                      "\" directive, expected a time above zero like 50ms "
                      "or 2s");
}


/* zone names go unescaped into headers, metrics labels and Redis keys */
int
zone_name(rl_conf_t *conf, const rl_conf_line_t *line, std::string_view name)
{
    if (ngx_http_rate_limit_valid_zone_name(
            reinterpret_cast<const unsigned char *>(name.data()),
            name.size()))
    {
        return RL_CONF_OK;
    }

    return conf->fail("invalid zone name \"", escaped(name), "\" in \"",
                      view(line->args[0]),
                      "\" directive: a zone name is 1 to ",
                      NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX,
                      " bytes of A-Z, a-z, 0-9, \"_\", \".\" and \"-\"");
}


/*
 * Refuses a parameter given twice from argument first on: nginx.conf
 * would otherwise keep the last one silently.  "password=env:X" repeats
 * "password=x".  Only the name is shown, as a value may be a secret.
 */
int
unique(rl_conf_t *conf, const rl_conf_line_t *line, size_t first)
{
    for (size_t i = first + 1; i < line->nargs; i++) {
        for (size_t j = first; j < i; j++) {
            if (param_name(line->args[i]) == param_name(line->args[j])) {
                return conf->fail("duplicate parameter \"",
                                  escaped(param_name(line->args[i])),
                                  "\" in \"", view(line->args[0]),
                                  "\" directive");
            }
        }
    }

    return RL_CONF_OK;
}


/* an unknown parameter where values may be secrets: only its name */
int
unknown_secret(rl_conf_t *conf, const rl_conf_line_t *line,
    const rl_conf_arg_t &arg, std::string_view hint)
{
    return conf->fail("invalid parameter \"", param_name(arg), "\" in \"",
                      view(line->args[0]), "\" directive", hint);
}


int
unknown(rl_conf_t *conf, const rl_conf_line_t *line, const rl_conf_arg_t &arg)
{
    return conf->fail("invalid parameter \"", view(arg), "\" in \"",
                      view(line->args[0]), "\" directive");
}


int
redis_address(rl_conf_t *conf, const rl_conf_line_t *line, Redis &redis,
    const rl_conf_arg_t &arg, unsigned port, rl_conf_resolve_pt resolve,
    void *data)
{
    std::string_view  dir = view(line->args[0]);

    if (redis.addresses.size() == RL_REDIS_ADDRESSES) {
        return conf->fail("too many addresses in \"", dir,
                          "\" directive, at most ", RL_REDIS_ADDRESSES);
    }

    RedisAddress  addr;

    addr.address = view(arg);

    if (starts(arg, "unix:")) {
        if (arg.len == 5) {
            return conf->fail("invalid address \"", view(arg), "\" in \"",
                              dir, "\" directive: no socket path");
        }

        addr.unix_path = view(arg).substr(5);

        /* a longer path would not fit the socket's address */
        if (addr.unix_path.size() > unix_path_max) {
            return conf->fail("invalid address \"", escaped(view(arg)),
                              "\" in \"", dir, "\" directive: the socket "
                              "path is ", addr.unix_path.size(),
                              " bytes, at most ", unix_path_max,
                              " fit a unix socket address");
        }

    } else {
        rl_conf_resolved_t  resolved{};
        int                 rc;

        rc = resolve(data, arg.data, arg.len, port, &resolved);

        if (rc == RL_CONF_DECLINED) {
            /* nginx's own words, for when no resolver takes the name */
            addr.unresolved = "invalid address \"" + std::string(view(arg))
                              + "\" in \"" + std::string(dir)
                              + "\" directive: "
                              + (resolved.err ? resolved.err
                                              : "host not found")
                              + " in " + std::string(view(line->file)) + ":"
                              + std::to_string(line->line);

        } else if (rc != RL_CONF_OK) {
            if (resolved.err) {
                return conf->fail("invalid address \"", view(arg), "\" in \"",
                                  dir, "\" directive: ", resolved.err);
            }

            return conf->fail("invalid address \"", view(arg), "\" in \"",
                              dir, "\" directive");

        } else {
            resolved.host[sizeof(resolved.host) - 1] = '\0';
            addr.host = resolved.host;
        }

        addr.port = resolved.port;
        addr.name = resolved.name != 0;
    }

    redis.addresses.push_back(std::move(addr));

    return RL_CONF_OK;
}


int
zone_line(rl_conf_t *conf, const rl_conf_line_t *line, rl_zone_t **out,
    uint64_t *size)
{
    char                        err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    uint64_t                    burst = 0;
    std::string_view            dir = view(line->args[0]), name;
    bool                        named = false;
    rl_zone_backend_e           backend = RL_ZONE_BACKEND_UNSET;
    rl_zone_failure_e           on_failure = RL_ZONE_FAILURE_OPEN;
    ngx_http_rate_limit_rate_t  rate{};

    *size = 0;

    for (size_t i = 2; i < line->nargs; i++) {
        const rl_conf_arg_t  &arg = line->args[i];

        if (starts(arg, "zone=")) {
            /* up to the argument's NUL, as strchr() looks */
            std::string_view  v = view(arg).substr(
                5, ::strnlen(reinterpret_cast<const char *>(arg.data),
                             arg.len) - 5);
            size_t            colon = v.find(':');

            if (colon == std::string_view::npos) {
                return conf->fail("invalid zone \"", view(arg), "\" in \"",
                                  dir, "\" directive, expected "
                                  "\"zone=NAME:SIZE\"");
            }

            name = v.substr(0, colon);
            named = true;

            if (zone_name(conf, line, name) != RL_CONF_OK) {
                return RL_CONF_ERROR;
            }

            std::string_view  s = view(arg).substr(5 + colon + 1);

            if (ngx_http_rate_limit_parse_size(s.data(), s.size(), size, err,
                                               sizeof(err))
                != NGX_HTTP_RATE_LIMIT_OK)
            {
                return conf->fail("invalid zone size \"", view(arg),
                                  "\" in \"", dir, "\" directive: ", err);
            }

            if (*size < 8 * conf->host.page_size) {
                return conf->fail("zone \"", view(arg), "\" in \"", dir,
                                  "\" directive is too small");
            }

            continue;
        }

        if (starts(arg, "rate=")) {
            if (ngx_http_rate_limit_parse_rate(
                    reinterpret_cast<const char *>(arg.data) + 5, arg.len - 5,
                    &rate, err, sizeof(err))
                != NGX_HTTP_RATE_LIMIT_OK)
            {
                return conf->fail("invalid rate \"", view(arg), "\" in \"",
                                  dir, "\" directive: ", err);
            }

            continue;
        }

        if (starts(arg, "burst=")) {
            if (number(conf, line, arg, 5, 1, NGX_HTTP_RATE_LIMIT_BURST_MAX,
                       &burst)
                != RL_CONF_OK)
            {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (is(arg, "backend=redis")) {
            backend = RL_ZONE_BACKEND_REDIS;

        } else if (is(arg, "backend=local")) {
            backend = RL_ZONE_BACKEND_LOCAL;

        } else if (is(arg, "on_failure=open")) {
            on_failure = RL_ZONE_FAILURE_OPEN;

        } else if (is(arg, "on_failure=closed")) {
            on_failure = RL_ZONE_FAILURE_CLOSED;

        } else if (is(arg, "on_failure=local")) {
            on_failure = RL_ZONE_FAILURE_LOCAL;

        } else {
            return unknown(conf, line, arg);
        }
    }

    if (unique(conf, line, 2) != RL_CONF_OK) {
        return RL_CONF_ERROR;
    }

    if (!named) {
        return conf->fail("\"", dir, "\" must have \"zone\" parameter");
    }

    if (rate.count == 0) {
        return conf->fail("\"", dir, "\" must have \"rate\" parameter");
    }

    Zone  *zone = conf->get(name, line);

    if (zone == nullptr) {
        return conf->fail("out of memory");
    }

    if (zone->defined) {
        return conf->fail("duplicate zone \"", name, "\" in \"", dir,
                          "\" directive");
    }

    zone->defined = true;

    rl_zone_t  *z = zone->zone;

    z->rate = rate;
    z->backend = backend;
    z->on_failure = on_failure;

    if (ngx_http_rate_limit_make_params(&z->rate, burst, &z->params, err,
                                        sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return conf->fail("invalid rate or burst in zone \"", name, "\" in \"",
                          dir, "\" directive: ", err);
    }

    rl_zone_texts(&z->params, &z->texts);

    *out = z;

    return RL_CONF_OK;
}


int
limit_line(rl_conf_t *conf, const rl_conf_line_t *line, rl_conf_limit_t *out)
{
    uint64_t          cost = 1;
    bool              named = false;
    std::string_view  name;

    for (size_t i = 1; i < line->nargs; i++) {
        const rl_conf_arg_t  &arg = line->args[i];

        if (starts(arg, "zone=")) {
            name = view(arg).substr(5);
            named = true;

            if (zone_name(conf, line, name) != RL_CONF_OK) {
                return RL_CONF_ERROR;
            }

            continue;
        }

        /* a cost above the largest burst could never pass */
        if (starts(arg, "cost=")) {
            if (number(conf, line, arg, 4, 1, NGX_HTTP_RATE_LIMIT_BURST_MAX,
                       &cost)
                != RL_CONF_OK)
            {
                return RL_CONF_ERROR;
            }

            continue;
        }

        return unknown(conf, line, arg);
    }

    if (unique(conf, line, 1) != RL_CONF_OK) {
        return RL_CONF_ERROR;
    }

    if (!named) {
        return conf->fail("\"", view(line->args[0]),
                          "\" must have \"zone\" parameter");
    }

    Zone  *zone = conf->get(name, line);

    if (zone == nullptr) {
        return conf->fail("out of memory");
    }

    Ref  &ref = conf->refs.emplace_back();

    ref.zone = zone;
    ref.cost = cost;
    ngx_http_rate_limit::conf::append(ref.cost_text, cost);
    ref.where.file = view(line->file);
    ref.where.line = line->line;

    out->zone = zone->zone;
    out->cost = cost;
    out->cost_text = reinterpret_cast<const unsigned char *>(
        ref.cost_text.data());
    out->cost_text_len = ref.cost_text.size();

    return RL_CONF_OK;
}


/* what a certificate can name: an address, or a host name */
bool
server_name(const std::string &name)
{
    unsigned char  addr[sizeof(in6_addr)];

    if (::inet_pton(AF_INET, name.c_str(), addr) == 1
        || ::inet_pton(AF_INET6, name.c_str(), addr) == 1)
    {
        return true;
    }

    if (name.size() > 253) {
        return false;
    }

    for (unsigned char c : name) {
        if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') {
            return false;
        }
    }

    return true;
}


/* "on" or "off" after a parameter's "name=" */
int
on_off(rl_conf_t *conf, const rl_conf_line_t *line, const rl_conf_arg_t &arg,
    size_t name_len, bool *value)
{
    rl_conf_arg_t  v = after(arg, name_len + 1);

    if (is(v, "on") || is(v, "off")) {
        *value = is(v, "on");
        return RL_CONF_OK;
    }

    return conf->fail("invalid value \"", escaped(view(arg)), "\" in \"",
                      view(line->args[0]), "\" directive, it must be \"",
                      view(arg).substr(0, name_len), "=on\" or \"",
                      view(arg).substr(0, name_len), "=off\"");
}


/* a file's path after "name=": not empty */
int
tls_path(rl_conf_t *conf, const rl_conf_line_t *line,
    const rl_conf_arg_t &arg, size_t name_len, std::string &path)
{
    path = view(arg).substr(name_len + 1);

    if (path.empty()) {
        return conf->fail("invalid parameter \"", view(arg), "\" in \"",
                          view(line->args[0]), "\" directive: no file");
    }

    return RL_CONF_OK;
}


/*
 * One tls* parameter ("name=value": the caller has seen the '='), or
 * RL_CONF_DECLINED for a name that is none of them.  The server name
 * becomes the SNI, a field of the handshake, and what the certificate is
 * checked against: a host name or an address, nothing else.
 */
int
redis_tls(rl_conf_t *conf, const rl_conf_line_t *line, RedisTls &tls,
    const rl_conf_arg_t &arg)
{
    std::string_view  name = param_name(arg);

    if (name == "tls") {
        return on_off(conf, line, arg, 3, &tls.enabled);
    }

    if (tls.first.empty()) {
        tls.first = name;
    }

    if (name == "tls_verify") {
        return on_off(conf, line, arg, name.size(), &tls.verify);
    }

    if (name == "tls_trusted_certificate") {
        return tls_path(conf, line, arg, name.size(),
                        tls.trusted_certificate);
    }

    if (name == "tls_certificate") {
        return tls_path(conf, line, arg, name.size(), tls.certificate);
    }

    if (name == "tls_certificate_key") {
        return tls_path(conf, line, arg, name.size(), tls.certificate_key);
    }

    if (name == "tls_server_name") {
        tls.server_name = view(arg).substr(name.size() + 1);

        if (tls.server_name.empty()) {
            return conf->fail("invalid parameter \"", view(arg), "\" in \"",
                              view(line->args[0]), "\" directive: no name");
        }

        if (!server_name(tls.server_name)) {
            return conf->fail("invalid parameter \"", escaped(view(arg)),
                              "\" in \"", view(line->args[0]), "\" "
                              "directive: a server name is a host name (at "
                              "most 253 letters, digits, '-', '_' and '.') "
                              "or an IP address, without a port");
        }

        return RL_CONF_OK;
    }

    return RL_CONF_DECLINED;
}


/* the tls* parameters of one line, taken together */
int
redis_tls_check(rl_conf_t *conf, const rl_conf_line_t *line,
    const Redis &redis)
{
    std::string_view  dir = view(line->args[0]);
    const RedisTls   &tls = redis.tls;

    if (!tls.enabled) {
        if (!tls.first.empty()) {
            return conf->fail("\"", tls.first, "\" in \"", dir,
                              "\" directive needs \"tls=on\"");
        }

        return RL_CONF_OK;
    }

    for (const RedisAddress &addr : redis.addresses) {
        if (!addr.unix_path.empty()) {
            return conf->fail("invalid address \"", escaped(addr.address),
                              "\" in \"", dir, "\" directive: Redis speaks "
                              "TLS over TCP only, not on a unix socket");
        }
    }

    if (!tls.verify && !tls.trusted_certificate.empty()) {
        return conf->fail("\"tls_trusted_certificate=\" in \"", dir,
                          "\" directive is not used with \"tls_verify=off\"");
    }

    if (tls.verify && tls.trusted_certificate.empty()) {
        return conf->fail("\"", dir, "\" directive: \"tls_verify=on\" (the "
                          "default) needs \"tls_trusted_certificate=\", the "
                          "CA file that signed the server's certificate "
                          "(or \"tls_verify=off\", which trusts any "
                          "server)");
    }

    if (tls.certificate.empty() != tls.certificate_key.empty()) {
        return conf->fail("\"", tls.certificate.empty()
                                       ? "tls_certificate_key="
                                       : "tls_certificate=",
                          "\" in \"", dir, "\" directive needs \"",
                          tls.certificate.empty() ? "tls_certificate="
                                                  : "tls_certificate_key=",
                          "\": a client certificate goes with its key");
    }

    return RL_CONF_OK;
}


/* a Redis master name as Sentinel's configuration takes it */
int
sentinel_name(rl_conf_t *conf, const rl_conf_line_t *line,
    const rl_conf_arg_t &arg, Redis &redis)
{
    std::string_view  dir = view(line->args[0]);
    std::string_view  name = view(arg).substr(9);

    if (name.empty()) {
        return conf->fail("invalid parameter \"", view(arg), "\" in \"", dir,
                          "\" directive: no master name");
    }

    bool  valid = name.size() <= sentinel_name_max;

    for (char c : name) {
        valid = valid && (std::isalnum(static_cast<unsigned char>(c))
                          || c == '.' || c == '_' || c == ':' || c == '-');
    }

    if (!valid) {
        return conf->fail("invalid master name \"", escaped(name), "\" in \"",
                          dir, "\" directive: at most ", sentinel_name_max,
                          " letters, digits, \".\", \"_\", \":\" and \"-\"");
    }

    redis.sentinel = name;

    return RL_CONF_OK;
}


/* the parameters of the sentinels, checked together */
int
sentinel_check(rl_conf_t *conf, const rl_conf_line_t *line,
    const Redis &redis)
{
    std::string_view  dir = view(line->args[0]);
    bool              password = redis.has_sentinel_password
                                 || !redis.sentinel_password_env.empty();

    if (redis.sentinel.empty()) {
        if (password || !redis.sentinel_username.empty()) {
            return conf->fail("\"", password ? "sentinel_password="
                                             : "sentinel_username=",
                              "\" in \"", dir, "\" directive needs "
                              "\"sentinel=\"");
        }

        return RL_CONF_OK;
    }

    if (redis.cluster) {
        return conf->fail("\"sentinel=\" and \"cluster\" cannot be used "
                          "together in \"", dir, "\" directive");
    }

    if (!redis.sentinel_username.empty() && !password) {
        return conf->fail("\"sentinel_username=\" in \"", dir, "\" directive "
                          "needs \"sentinel_password=\": an ACL user "
                          "authenticates with both");
    }

    /* the master takes a link of its own */
    if (redis.addresses.size() >= RL_REDIS_ADDRESSES) {
        return conf->fail("too many addresses in \"", dir, "\" directive, "
                          "at most ", RL_REDIS_ADDRESSES - 1, " sentinels");
    }

    for (const RedisAddress &addr : redis.addresses) {
        if (!addr.unix_path.empty()) {
            return conf->fail("invalid address \"", escaped(addr.address),
                              "\" in \"", dir, "\" directive: the sentinels "
                              "are reached over TCP");
        }
    }

    return RL_CONF_OK;
}


int
redis_line(rl_conf_t *conf, const rl_conf_line_t *line,
    rl_conf_resolve_pt resolve, void *data)
{
    std::string_view  dir = view(line->args[0]);
    Redis             redis;
    unsigned          port = redis_port;

    /* the sentinels' default port, whatever the order of the parameters */
    for (size_t i = 1; i < line->nargs; i++) {
        if (starts(line->args[i], "sentinel=")) {
            port = sentinel_port;
        }
    }

    for (size_t i = 1; i < line->nargs; i++) {
        const rl_conf_arg_t  &arg = line->args[i];

        if (is(arg, "cluster")) {
            redis.cluster = true;
            continue;
        }

        if (view(arg).find('=') == std::string_view::npos) {
            if (redis_address(conf, line, redis, arg, port, resolve, data)
                != RL_CONF_OK)
            {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (starts(arg, "sentinel=")) {
            if (sentinel_name(conf, line, arg, redis) != RL_CONF_OK) {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (starts(arg, "sentinel_password=env:")) {
            redis.sentinel_password_env = view(arg).substr(22);

            if (redis.sentinel_password_env.empty()) {
                return conf->fail("invalid parameter \"", view(arg),
                                  "\" in \"", dir,
                                  "\" directive: no variable name");
            }

            continue;
        }

        if (starts(arg, "sentinel_password=")) {
            redis.has_sentinel_password = true;
            redis.sentinel_password = view(arg).substr(18);
            continue;
        }

        if (starts(arg, "sentinel_username=")) {
            redis.sentinel_username = view(arg).substr(18);

            if (redis.sentinel_username.empty()) {
                return conf->fail("invalid parameter \"", view(arg),
                                  "\" in \"", dir, "\" directive: no user "
                                  "name");
            }

            continue;
        }

        if (starts(arg, "password=env:")) {
            redis.password_env = view(arg).substr(13);

            if (redis.password_env.empty()) {
                return conf->fail("invalid parameter \"", view(arg),
                                  "\" in \"", dir,
                                  "\" directive: no variable name");
            }

            continue;
        }

        if (starts(arg, "password=")) {
            redis.has_password = true;
            redis.password = view(arg).substr(9);
            continue;
        }

        if (starts(arg, "username=")) {
            redis.username = view(arg).substr(9);

            if (redis.username.empty()) {
                return conf->fail("invalid parameter \"", view(arg),
                                  "\" in \"", dir, "\" directive: no user "
                                  "name");
            }

            continue;
        }

        if (starts(arg, "tls")) {
            int  rc = redis_tls(conf, line, redis.tls, arg);

            if (rc == RL_CONF_DECLINED) {
                return unknown_secret(conf, line, arg, "");
            }

            if (rc != RL_CONF_OK) {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (starts(arg, "db=")) {
            if (number(conf, line, arg, 2, 0, redis_db_max, &redis.db)
                != RL_CONF_OK)
            {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (starts(arg, "timeout=")) {
            if (msec(conf, line, arg, 7, &redis.timeout_ms) != RL_CONF_OK) {
                return RL_CONF_ERROR;
            }

            continue;
        }

        if (starts(arg, "prefix=")) {
            redis.prefix = view(arg).substr(7);

            if (redis.prefix.empty()) {
                return conf->fail("invalid prefix \"", view(arg), "\" in \"",
                                  dir, "\" directive");
            }

            continue;
        }

        return unknown_secret(conf, line, arg, "");
    }

    if (unique(conf, line, 1) != RL_CONF_OK) {
        return RL_CONF_ERROR;
    }

    if (redis.addresses.empty()) {
        return conf->fail("\"", dir, "\" directive has no address");
    }

    if (sentinel_check(conf, line, redis) != RL_CONF_OK) {
        return RL_CONF_ERROR;
    }

    if (!redis.cluster && redis.sentinel.empty()
        && redis.addresses.size() > 1)
    {
        return conf->fail("\"", dir, "\" directive has several addresses but "
                          "no \"cluster\" parameter");
    }

    for (const RedisAddress &addr : redis.addresses) {
        if (redis.cluster && !addr.unix_path.empty()) {
            return conf->fail("invalid address \"", addr.address, "\" in \"",
                              dir, "\" directive: a cluster is reached over "
                              "TCP");
        }
    }

    if (!redis.username.empty() && !redis.has_password
        && redis.password_env.empty())
    {
        return conf->fail("\"username=\" in \"", dir, "\" directive needs "
                          "\"password=\": an ACL user authenticates with "
                          "both");
    }

    if (redis_tls_check(conf, line, redis) != RL_CONF_OK) {
        return RL_CONF_ERROR;
    }

    if (redis.cluster && redis.db) {
        return conf->fail("\"", dir, "\" directive: a Redis Cluster has no "
                          "database but 0, \"db\" cannot be used with "
                          "\"cluster\"");
    }

    conf->redis = std::move(redis);
    conf->has_redis = true;

    return RL_CONF_OK;
}


int
postgres_line(rl_conf_t *conf, const rl_conf_line_t *line)
{
    ngx_http_rate_limit::conf::Postgres  pg;

    if (starts(line->args[1], "env:")) {
        pg.conninfo_env = view(line->args[1]).substr(4);

        if (pg.conninfo_env.empty()) {
            return conf->fail("invalid connection string \"",
                              view(line->args[1]), "\" in \"",
                              view(line->args[0]),
                              "\" directive: no variable name");
        }

    } else {
        pg.conninfo = view(line->args[1]);
        pg.conninfo_known = true;
    }

    for (size_t i = 2; i < line->nargs; i++) {
        if (starts(line->args[i], "interval=")) {
            if (msec(conf, line, line->args[i], 8, &pg.interval_ms)
                != RL_CONF_OK)
            {
                return RL_CONF_ERROR;
            }

            continue;
        }

        return unknown_secret(conf, line, line->args[i],
                              "; quote a connection string that holds "
                              "spaces");
    }

    conf->postgres = std::move(pg);
    conf->has_postgres = true;

    return RL_CONF_OK;
}


int
policy_file_line(rl_conf_t *conf, const rl_conf_line_t *line)
{
    if (conf->has_policy) {
        return RL_CONF_DUPLICATE;
    }

    conf->policy_file = view(line->args[1]);
    conf->has_policy = true;

    return RL_CONF_OK;
}


int
status_line(rl_conf_t *conf, const rl_conf_line_t *line, unsigned *status)
{
    /* as ngx_atoi(): digits only, and no overflow */
    std::string_view  v = view(line->args[1]);
    uint64_t          code = 0;
    auto              r = std::from_chars(v.data(), v.data() + v.size(),
                                          code);

    if (!v.empty() && r.ec == std::errc() && r.ptr == v.data() + v.size()
        && code >= 400 && code <= 599)
    {
        *status = static_cast<unsigned>(code);
        return RL_CONF_OK;
    }

    return conf->fail("invalid status \"", v, "\" in \"", view(line->args[0]),
                      "\" directive, expected a code from 400 to 599");
}


int
log_level_line(rl_conf_t *conf, const rl_conf_line_t *line, unsigned *level)
{
    static const struct {
        std::string_view  name;
        unsigned          level;
    } levels[] = {
        { "info", RL_REDIS_LOG_INFO },
        { "notice", RL_REDIS_LOG_NOTICE },
        { "warn", RL_REDIS_LOG_WARN },
        { "error", RL_REDIS_LOG_ERR },
    };

    for (const auto &l : levels) {
        if (view(line->args[1]) == l.name) {
            *level = l.level;
            return RL_CONF_OK;
        }
    }

    return conf->fail("invalid log level \"", view(line->args[1]), "\" in \"",
                      view(line->args[0]), "\" directive, expected \"info\", "
                      "\"notice\", \"warn\" or \"error\"");
}


/* env:NAME only: a token written in nginx.conf would sit in backups */
int
api_token_line(rl_conf_t *conf, const rl_conf_line_t *line,
    rl_conf_arg_t *env)
{
    const rl_conf_arg_t  &arg = line->args[1];

    if (arg.len <= 4 || !starts(arg, "env:")) {
        return conf->fail("invalid token source in \"", view(line->args[0]),
                          "\" directive, expected \"env:NAME\"");
    }

    *env = after(arg, 4);

    /* each variable is checked once, when the workers start */
    std::string  name(view(*env));

    for (const std::string &known : conf->token_envs) {
        if (known == name) {
            return RL_CONF_OK;
        }
    }

    conf->token_envs.push_back(std::move(name));

    return RL_CONF_OK;
}


int
directive(rl_conf_t *conf, const rl_conf_line_t *line,
    rl_conf_resolve_pt resolve, void *data, rl_conf_result_t *result)
{
    std::string_view  name = view(line->args[0]);

    if (name == "rate_limit_zone" && line->nargs >= 3) {
        return zone_line(conf, line, &result->zone, &result->size);
    }

    if (name == "rate_limit" && line->nargs >= 2) {
        return limit_line(conf, line, &result->limit);
    }

    if (name == "rate_limit_redis" && line->nargs >= 2) {
        return conf->has_redis ? RL_CONF_DUPLICATE
                               : redis_line(conf, line, resolve, data);
    }

    if (name == "rate_limit_postgres" && line->nargs >= 2) {
        return conf->has_postgres ? RL_CONF_DUPLICATE
                                  : postgres_line(conf, line);
    }

    if (name == "rate_limit_policy_file" && line->nargs == 2) {
        return policy_file_line(conf, line);
    }

    if (name == "rate_limit_status" && line->nargs == 2) {
        return status_line(conf, line, &result->value);
    }

    if (name == "rate_limit_log_level" && line->nargs == 2) {
        return log_level_line(conf, line, &result->value);
    }

    if (name == "rate_limit_api_token" && line->nargs == 2) {
        return api_token_line(conf, line, &result->env);
    }

    return conf->fail("unknown directive \"", name, "\" or its arguments");
}

}  // namespace


extern "C" int64_t
rl_conf_parse_time(const unsigned char *text, size_t len) noexcept
{
    /*
     * nginx (1.7.11 on) refuses what would overflow its ngx_int_t, a
     * 64-bit word: each number as it is read, each number times its unit,
     * and the running total.  Units go from the longest to the shortest,
     * each at most once; years and months are for times in seconds only.
     */
    constexpr int64_t  word_max = INT64_MAX;

    enum { by_week = 1, by_day, by_hour, by_minute, by_second, by_msec,
           by_space };

    const unsigned char  *p = text;
    const unsigned char  *last = text + len;
    int64_t               value = 0, total = 0;
    bool                  valid = false;
    int                   step = 0;

    while (p < last) {

        if (*p >= '0' && *p <= '9') {
            int  digit = *p++ - '0';

            if (value > (word_max - digit) / 10) {
                return -1;
            }

            value = value * 10 + digit;
            valid = true;
            continue;
        }

        int      unit;
        int64_t  unit_ms;

        switch (*p++) {
        case 'w':
            unit = by_week;
            unit_ms = 7 * 24 * 3600 * 1000LL;
            break;
        case 'd':
            unit = by_day;
            unit_ms = 24 * 3600 * 1000LL;
            break;
        case 'h':
            unit = by_hour;
            unit_ms = 3600 * 1000LL;
            break;
        case 'm':
            if (p < last && *p == 's') {
                p++;
                unit = by_msec;
                unit_ms = 1;
            } else {
                unit = by_minute;
                unit_ms = 60 * 1000LL;
            }
            break;
        case 's':
            unit = by_second;
            unit_ms = 1000;
            break;
        case ' ':
            /* a space ends a number of seconds, but for "ms" */
            if (step >= by_second) {
                return -1;
            }
            unit = by_space;
            unit_ms = 1000;
            break;
        default:
            return -1;
        }

        if (unit != by_space && step >= unit) {
            return -1;
        }

        step = unit;

        if (value > word_max / unit_ms
            || total > word_max - value * unit_ms)
        {
            return -1;
        }

        total += value * unit_ms;
        value = 0;

        while (p < last && *p == ' ') {
            p++;
        }
    }

    /* a last number without a unit counts seconds */
    if (!valid || value > word_max / 1000 || total > word_max - value * 1000)
    {
        return -1;
    }

    return total + value * 1000;
}


extern "C" int
rl_conf_directive(rl_conf_t *conf, const rl_conf_line_t *line,
    rl_conf_resolve_pt resolve, void *data, rl_conf_result_t *result) noexcept
{
    if (line == nullptr || line->nargs == 0 || line->args == nullptr) {
        return conf->fail("no directive");
    }

    try {
        *result = rl_conf_result_t{};
        return directive(conf, line, resolve, data, result);

    } catch (...) {
        return conf->fail("out of memory");
    }
}
