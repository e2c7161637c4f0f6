/*
 * The bucket API's logic (rl_api.h): routes, checks, SQL and JSON.
 *
 * Answers are built as nlohmann::ordered_json values, so their fields keep
 * the order clients have always seen, and written by to_text() below, not
 * by dump(): a key is client input, any bytes, and dump() would throw on
 * invalid UTF-8 or replace it, where the API has always written each such
 * byte as \u00XX and escaped U+2028 and U+2029.
 */

#include <rl_api.h>

#include "rate_limit_json.h"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>


namespace {

using Json = nlohmann::ordered_json;

using ngx_http_rate_limit::append_json_string;
using ngx_http_rate_limit::is_text;

constexpr unsigned page_default = 100;
constexpr unsigned page_max = 1000;

/* PostgreSQL's CHECK allows 15 digits of count */
constexpr uint64_t count_max = 999999999999999ULL;

/* a write returns its transaction: no sync that missed it may undo it */
constexpr const char *list_sql =
    "SELECT key, rate, burst FROM rate_limit_buckets "
    "WHERE zone = $1 AND key > $2 ORDER BY key LIMIT $3";

constexpr const char *create_sql =
    "INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING "
    "RETURNING key, pg_current_xact_id()::text";

constexpr const char *update_sql =
    "UPDATE rate_limit_buckets SET rate = $3, burst = $4 "
    "WHERE zone = $1 AND key = $2 RETURNING key, pg_current_xact_id()::text";

constexpr const char *delete_sql =
    "DELETE FROM rate_limit_buckets WHERE zone = $1 AND key = $2 "
    "RETURNING key, pg_current_xact_id()::text";

/*
 * A row locked by another writer must not hold up the worker's queue: the
 * write gives up after a second, and no query runs longer than five.  The
 * schema comes next, for a write may come before the syncing worker has
 * created it; it is idempotent, and the advisory lock in it waits for the
 * syncing worker's run.
 */
#define RL_API_SETTINGS                                                       \
    "SET lock_timeout = '1s'; SET statement_timeout = '5s';\n"

constexpr const char *recover_sql = "ROLLBACK; " RL_API_SETTINGS;

constexpr const char *unknown_path =
    "unknown path, expected zones, buckets/{zone} or buckets/{zone}/{key}";


std::string_view view(const unsigned char *p, size_t len) noexcept
{
    return len ? std::string_view(reinterpret_cast<const char *>(p), len)
               : std::string_view();
}


void to_text(const Json &value, std::string &out)
{
    switch (value.type()) {

    case Json::value_t::object: {
        out += '{';
        bool first = true;
        for (auto it = value.begin(); it != value.end(); ++it) {
            if (!first) {
                out += ',';
            }
            first = false;
            append_json_string(out, it.key());
            out += ':';
            to_text(it.value(), out);
        }
        out += '}';
        return;
    }

    case Json::value_t::array: {
        out += '[';
        bool first = true;
        for (const Json &item : value) {
            if (!first) {
                out += ',';
            }
            first = false;
            to_text(item, out);
        }
        out += ']';
        return;
    }

    case Json::value_t::string:
        append_json_string(out, value.get_ref<const std::string &>());
        return;

    default:
        /* numbers, null, booleans: ASCII, nothing to throw on */
        out += value.dump();
    }
}


/* the host's memory, NUL ended for libpq's sake, or nullptr */
unsigned char *copy(const rl_api_alloc_t *a, std::string_view s) noexcept
{
    auto *p = static_cast<unsigned char *>(a->alloc(a->data, s.size() + 1));
    if (p == nullptr) {
        return nullptr;
    }
    if (!s.empty()) {
        std::memcpy(p, s.data(), s.size());
    }
    p[s.size()] = '\0';
    return p;
}


int reply_json(const Json &body, int status, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
{
    std::string text;
    to_text(body, text);

    reply->status = status;
    reply->len = text.size();
    reply->body = copy(a, text);

    return reply->body ? RL_API_OK : RL_API_ERROR;
}


int reply_error(int status, const std::string &message,
    const rl_api_alloc_t *a, rl_api_reply_t *reply)
{
    return reply_json(Json { { "error", message } }, status, a, reply);
}


/* "N r/PERIOD" with the largest whole unit, as the table's CHECK expects */
std::string rate_text(const ngx_http_rate_limit_rate_t &rate)
{
    static const struct {
        uint64_t     ms;
        const char  *unit;
    } units[] = {
        { 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
        { 1, "ms" }
    };

    size_t i = 0;
    while (i < sizeof(units) / sizeof(units[0]) - 1
           && rate.period_ms % units[i].ms != 0)
    {
        i++;
    }

    std::string text = std::to_string(rate.count) + "r/";
    if (rate.period_ms != units[i].ms) {
        text += std::to_string(rate.period_ms / units[i].ms);
    }
    return text + units[i].unit;
}


/*
 * Decodes %XX escapes.  Unlike nginx's ngx_unescape_uri(), a "%" that two
 * hex digits do not follow is an error, not taken as it is: the client
 * meant something else, and a guess would name another key.
 */
bool unescape(std::string_view in, std::string &out)
{
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        c = static_cast<char>(c | 0x20);
        return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    };

    out.clear();
    out.reserve(in.size());

    for (size_t i = 0; i < in.size(); ) {
        if (in[i] != '%') {
            out += in[i++];
            continue;
        }

        if (in.size() - i < 3 || hex(in[i + 1]) < 0 || hex(in[i + 2]) < 0) {
            return false;
        }

        out += static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2]));
        i += 3;
    }

    return true;
}


/* as nginx's ngx_http_arg(): the first "name=" at the start or after "&" */
bool find_arg(std::string_view args, std::string_view name,
    std::string_view &value) noexcept
{
    const auto same = [](std::string_view a, std::string_view b) {
        for (size_t i = 0; i < a.size(); i++) {
            if ((a[i] | 0x20) != (b[i] | 0x20)) {
                return false;
            }
        }
        return true;
    };

    for (size_t p = 0; p + name.size() < args.size(); p++) {
        if ((p == 0 || args[p - 1] == '&')
            && same(args.substr(p, name.size()), name)
            && args[p + name.size()] == '=')
        {
            value = args.substr(p + name.size() + 1);
            value = value.substr(0, value.find('&'));
            return true;
        }
    }

    return false;
}


/* as nginx's ngx_atoi(): digits only, at least one */
bool whole_number(std::string_view s, uint64_t &n) noexcept
{
    if (s.empty() || s.find_first_not_of("0123456789") != s.npos) {
        return false;
    }
    const auto r = std::from_chars(s.data(), s.data() + s.size(), n);
    return r.ec == std::errc();
}


void no_headers(rl_api_reply_t *reply) noexcept
{
    reply->allow = nullptr;
    reply->www_authenticate = 0;
    reply->body = nullptr;
    reply->len = 0;
}


int keep(std::string_view s, const rl_api_alloc_t *a,
    const unsigned char **p, size_t *len) noexcept
{
    *len = s.size();
    *p = copy(a, s);
    return *p ? RL_API_OK : RL_API_ERROR;
}


int refuse(int status, const std::string &message, const char *allow,
    const rl_api_alloc_t *a, rl_api_plan_t *plan, rl_api_reply_t *reply)
{
    plan->action = RL_API_REPLY;
    reply->allow = allow;
    return reply_error(status, message, a, reply);
}


int route(const rl_api_request_t *r, const rl_api_alloc_t *a,
    rl_api_plan_t *plan, rl_api_reply_t *reply)
{
    const std::string_view base = view(r->base, r->base_len);
    std::string_view path = view(r->path, r->path_len);

    if (path.substr(0, base.size()) != base) {
        return refuse(404, unknown_path, nullptr, a, plan, reply);
    }

    path.remove_prefix(base.size());
    if (!path.empty() && path[0] == '/') {
        path.remove_prefix(1);
    }

    unsigned allowed;
    const char *allow;
    std::string key;
    bool has_key = false;

    if (path == "zones") {
        plan->action = RL_API_ZONES;
        allowed = RL_API_METHOD_GET | RL_API_METHOD_HEAD;
        allow = "GET, HEAD";

    } else {
        constexpr std::string_view buckets = "buckets/";

        if (path.size() <= buckets.size()
            || path.substr(0, buckets.size()) != buckets)
        {
            return refuse(404, unknown_path, nullptr, a, plan, reply);
        }

        path.remove_prefix(buckets.size());

        const size_t slash = path.find('/');
        const std::string_view zone = path.substr(0, slash);

        plan->zone = reinterpret_cast<const unsigned char *>(zone.data());
        plan->zone_len = zone.size();

        if (slash == path.npos || slash + 1 == path.size()) {
            allowed = RL_API_METHOD_GET | RL_API_METHOD_HEAD
                      | RL_API_METHOD_POST;
            allow = "GET, HEAD, POST";

        } else {
            has_key = true;
            allowed = RL_API_METHOD_GET | RL_API_METHOD_HEAD
                      | RL_API_METHOD_PUT | RL_API_METHOD_DELETE;

            if (!unescape(path.substr(slash + 1), key)) {
                return refuse(400, "the key holds a malformed percent escape",
                              nullptr, a, plan, reply);
            }

            /* as PostgreSQL and the policy file take keys */
            if (key.size() > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
                return refuse(400, "the key is longer than 4096 bytes",
                              nullptr, a, plan, reply);
            }

            allow = "GET, HEAD, PUT, DELETE";

            /*
             * PostgreSQL stores UTF-8 text without NUL bytes, so only such
             * a key can be written; reading a key's limit takes any bytes,
             * as a binary key such as $binary_remote_addr needs.
             */
            if ((r->method & (RL_API_METHOD_PUT | RL_API_METHOD_DELETE))
                && !is_text(key))
            {
                return refuse(400, "the key must be UTF-8 without NUL bytes",
                              nullptr, a, plan, reply);
            }
        }
    }

    if (!(r->method & allowed)) {
        return refuse(405, "method not allowed", allow, a, plan, reply);
    }

    if (plan->action == RL_API_ZONES) {
        return RL_API_OK;
    }

    /* an empty zone is no route at all: unknown, as it always was */
    if (plan->zone_len
        && !ngx_http_rate_limit_valid_zone_name(plan->zone, plan->zone_len))
    {
        return refuse(400, "invalid zone name, expected 1 to "
                           + std::to_string(NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX)
                           + " of A-Z a-z 0-9 _ . -",
                      nullptr, a, plan, reply);
    }

    plan->host_zone = r->find_zone ? r->find_zone(r->data, plan->zone,
                                                  plan->zone_len)
                                   : nullptr;

    if (plan->host_zone == nullptr) {
        return refuse(404, "unknown zone \"" + std::string(view(plan->zone,
                                                    plan->zone_len)) + "\"",
                      nullptr, a, plan, reply);
    }

    if (r->method & (RL_API_METHOD_POST | RL_API_METHOD_PUT)) {
        if (r->content_length > RL_API_BODY_MAX) {
            return refuse(413, "the body is larger than "
                               + std::to_string(RL_API_BODY_MAX) + " bytes",
                          nullptr, a, plan, reply);
        }

        plan->action = (r->method & RL_API_METHOD_POST) ? RL_API_CREATE
                                                        : RL_API_UPDATE;
        return keep(key, a, &plan->key, &plan->key_len);
    }

    if (has_key) {
        plan->action = (r->method & RL_API_METHOD_DELETE) ? RL_API_DELETE
                                                          : RL_API_GET;
        return keep(key, a, &plan->key, &plan->key_len);
    }

    plan->action = RL_API_LIST;
    plan->limit = page_default;

    const std::string_view args = view(r->args, r->args_len);
    std::string_view value;

    if (find_arg(args, "limit", value)) {
        uint64_t limit;

        if (!whole_number(value, limit) || limit == 0 || limit > page_max) {
            return refuse(400, "limit must be a whole number from 1 to "
                               + std::to_string(page_max),
                          nullptr, a, plan, reply);
        }

        plan->limit = static_cast<unsigned>(limit);
    }

    if (find_arg(args, "after", value)) {
        if (!unescape(value, key)) {
            return refuse(400, "after holds a malformed percent escape: a "
                               "\"%\" must begin %XX, two hex digits (a "
                               "literal \"%\" is %25)",
                          nullptr, a, plan, reply);
        }

        if (!is_text(key)) {
            return refuse(400, "after must be UTF-8 without NUL bytes",
                          nullptr, a, plan, reply);
        }
    }

    return keep(key, a, &plan->key, &plan->key_len);
}


int body(std::string_view text, const rl_api_alloc_t *a, rl_api_plan_t *plan,
    rl_api_reply_t *reply)
{
    ngx_http_rate_limit_bucket_body_t body;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
    const bool create = plan->action == RL_API_CREATE;

    if (ngx_http_rate_limit_parse_bucket_body(text.data(), text.size(),
                                              create, &body, err, sizeof(err))
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return refuse(400, err, nullptr, a, plan, reply);
    }

    const std::string_view given = view(body.key, body.key_len);

    if (create) {
        if (keep(given, a, &plan->key, &plan->key_len) != RL_API_OK) {
            return RL_API_ERROR;
        }

    } else if (!given.empty() && given != view(plan->key, plan->key_len)) {
        return refuse(400, "the key in the body differs from the key in the "
                           "path", nullptr, a, plan, reply);
    }

    /* PostgreSQL stores UTF-8 text: a NUL byte cannot be a key there */
    if (!is_text(view(plan->key, plan->key_len))) {
        return refuse(400, "the key must be UTF-8 without NUL bytes", nullptr,
                      a, plan, reply);
    }

    if (body.rate.count > count_max) {
        return refuse(400, "the rate's count is too large", nullptr, a, plan,
                      reply);
    }

    plan->rate = body.rate;
    plan->burst = body.burst;

    return RL_API_OK;
}


const char *param(const rl_api_alloc_t *a, std::string_view s) noexcept
{
    return reinterpret_cast<const char *>(copy(a, s));
}


int query(const rl_api_plan_t *plan, const rl_api_alloc_t *a,
    rl_api_query_t *q)
{
    switch (plan->action) {
    case RL_API_LIST:
        q->sql = list_sql;
        q->params[2] = param(a, std::to_string(plan->limit));
        q->nparams = 3;
        break;
    case RL_API_CREATE:
    case RL_API_UPDATE:
        q->sql = plan->action == RL_API_CREATE ? create_sql : update_sql;
        q->params[2] = param(a, rate_text(plan->rate));
        q->params[3] = param(a, std::to_string(plan->burst));
        q->nparams = 4;
        break;
    case RL_API_DELETE:
        q->sql = delete_sql;
        q->nparams = 2;
        break;
    default:
        return RL_API_ERROR;
    }

    q->params[0] = param(a, view(plan->zone, plan->zone_len));
    q->params[1] = param(a, view(plan->key, plan->key_len));

    for (int i = 0; i < q->nparams; i++) {
        if (q->params[i] == nullptr) {
            return RL_API_ERROR;
        }
    }

    return RL_API_OK;
}


std::string_view column(const rl_api_row_t &row, int i) noexcept
{
    return row.value[i] ? std::string_view(row.value[i], row.len[i])
                        : std::string_view();
}


int listed(const rl_api_plan_t *plan, const rl_api_row_t *rows, size_t n,
    const rl_api_alloc_t *a, rl_api_reply_t *reply)
{
    Json buckets = Json::array();

    for (size_t i = 0; i < n; i++) {
        Json bucket = { { "key", std::string(column(rows[i], 0)) },
                        { "rate", std::string(column(rows[i], 1)) } };

        /* a bigint, as PostgreSQL writes it */
        if (rows[i].value[2] == nullptr) {
            bucket["burst"] = nullptr;

        } else {
            const std::string_view text = column(rows[i], 2);
            int64_t burst;
            const auto r = std::from_chars(text.data(),
                                           text.data() + text.size(), burst);
            if (r.ec != std::errc() || r.ptr != text.data() + text.size()) {
                return RL_API_ERROR;
            }
            bucket["burst"] = burst;
        }

        buckets.push_back(std::move(bucket));
    }

    Json page = { { "zone", std::string(view(plan->zone, plan->zone_len)) },
                  { "buckets", std::move(buckets) },
                  { "next", nullptr } };

    if (n > 0 && n == plan->limit) {
        page["next"] = std::string(column(rows[n - 1], 0));
    }

    return reply_json(page, 200, a, reply);
}


/* as nginx's ngx_atoof(): digits only; anything else reads as 0 */
uint64_t transaction(std::string_view text) noexcept
{
    uint64_t txid;
    return whole_number(text, txid) && txid <= INT64_MAX ? txid : 0;
}


int written(const rl_api_plan_t *plan, const rl_api_row_t *rows, size_t n,
    uint64_t *txid, const rl_api_alloc_t *a, rl_api_reply_t *reply)
{
    *txid = 0;

    if (n == 0) {
        return plan->action == RL_API_CREATE
               ? reply_error(409, "the bucket exists already", a, reply)
               : reply_error(404, "no such bucket", a, reply);
    }

    *txid = transaction(column(rows[0], 1));

    if (plan->action == RL_API_DELETE) {
        reply->status = 204;
        return RL_API_OK;
    }

    const Json bucket = {
        { "zone", std::string(view(plan->zone, plan->zone_len)) },
        { "key", std::string(view(plan->key, plan->key_len)) },
        { "rate", rate_text(plan->rate) },
        { "burst", plan->burst },
        { "source", "postgres" }
    };

    return reply_json(bucket, plan->action == RL_API_CREATE ? 201 : 200, a,
                      reply);
}


int zones(const rl_api_zone_t *zones, size_t n, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
{
    Json list = Json::array();

    for (size_t i = 0; i < n; i++) {
        list.push_back(Json {
            { "name", std::string(view(zones[i].name, zones[i].name_len)) },
            { "rate", rate_text(zones[i].rate) },
            { "burst", zones[i].burst },
            { "backend", zones[i].backend },
            { "on_failure", zones[i].on_failure },
            { "policy_entries", zones[i].policy_entries }
        });
    }

    return reply_json(Json { { "zones", std::move(list) } }, 200, a, reply);
}


int bucket(const rl_api_bucket_t *b, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
{
    Json json = { { "zone", std::string(view(b->zone, b->zone_len)) },
                  { "key", std::string(view(b->key, b->key_len)) },
                  { "rate", rate_text(b->rate) },
                  { "burst", b->burst },
                  { "source", b->source },
                  { "tokens", nullptr } };

    if (b->tokens >= 0) {
        json["tokens"] = b->tokens;
    }

    return reply_json(json, 200, a, reply);
}


/* every entry point: a fresh reply, and no exception out */
template <typename F>
int guarded(rl_api_reply_t *reply, F &&f) noexcept
{
    if (reply) {
        reply->status = 500;
        no_headers(reply);
    }

    try {
        return f();
    } catch (...) {
        return RL_API_ERROR;
    }
}

}  // namespace


extern "C" unsigned
rl_api_method(const unsigned char *name, size_t len) noexcept
{
    static constexpr std::pair<std::string_view, unsigned>  methods[] = {
        {"GET", RL_API_METHOD_GET}, {"HEAD", RL_API_METHOD_HEAD},
        {"POST", RL_API_METHOD_POST}, {"PUT", RL_API_METHOD_PUT},
        {"DELETE", RL_API_METHOD_DELETE}};

    if (name == nullptr) {
        return RL_API_METHOD_OTHER;
    }

    const std::string_view  given(reinterpret_cast<const char *>(name), len);

    for (const auto &[text, method] : methods) {
        if (given == text) {
            return method;
        }
    }

    return RL_API_METHOD_OTHER;
}


extern "C" int
rl_api_authorized(const char *token, const unsigned char *header,
    size_t len) noexcept
{
    if (token == nullptr || *token == '\0' || header == nullptr || len < 7) {
        return 0;
    }

    static const char bearer[] = "bearer";

    for (size_t i = 0; i < 6; i++) {
        if ((header[i] | 0x20) != bearer[i]) {
            return 0;
        }
    }

    if (header[6] != ' ') {
        return 0;
    }

    const unsigned char *given = header + 7;
    const size_t given_len = len - 7;
    const size_t token_len = std::strlen(token);

    /* every byte given is compared, the token repeated under it */
    unsigned char diff = given_len != token_len;

    for (size_t i = 0; i < given_len; i++) {
        diff |= given[i] ^ static_cast<unsigned char>(token[i % token_len]);
    }

    return diff == 0;
}


extern "C" int
rl_api_route(const rl_api_request_t *request, const rl_api_alloc_t *a,
    rl_api_plan_t *plan, rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] {
        *plan = rl_api_plan_t();
        return route(request, a, plan, reply);
    });
}


extern "C" int
rl_api_body(const char *text, size_t len, const rl_api_alloc_t *a,
    rl_api_plan_t *plan, rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] {
        return body(std::string_view(text ? text : "", len), a, plan, reply);
    });
}


extern "C" int
rl_api_refuse(rl_api_refusal_e why, const rl_api_alloc_t *a,
    rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] {
        switch (why) {
        case RL_API_UNAUTHORIZED:
            reply->www_authenticate = 1;
            return reply_error(401, "a valid bearer token is required", a,
                               reply);
        case RL_API_TOO_LARGE:
            return reply_error(413, "the body is larger than "
                                    + std::to_string(RL_API_BODY_MAX)
                                    + " bytes", a, reply);
        case RL_API_NO_POSTGRES:
            return reply_error(503, "no \"rate_limit_postgres\" is "
                                    "configured: per-client limits cannot be "
                                    "listed or written", a, reply);
        case RL_API_BUSY:
            return reply_error(409, "the bucket is being changed by another "
                                    "writer, try again", a, reply);
        case RL_API_UNAVAILABLE:
            break;
        }
        return reply_error(503, "PostgreSQL is unavailable", a, reply);
    });
}


extern "C" int
rl_api_query(const rl_api_plan_t *plan, const rl_api_alloc_t *a,
    rl_api_query_t *q) noexcept
{
    return guarded(nullptr, [&] { return query(plan, a, q); });
}


extern "C" const char *
rl_api_setup_sql(void) noexcept
{
    try {
        static const std::string setup = [] {
            size_t len;
            const char *schema = ngx_http_rate_limit_pg_schema(&len);
            return RL_API_SETTINGS + std::string(schema, len);
        }();
        return setup.c_str();

    } catch (...) {
        return nullptr;
    }
}


extern "C" const char *
rl_api_recover_sql(void) noexcept
{
    return recover_sql;
}


extern "C" int
rl_api_busy(const char *sqlstate) noexcept
{
    /* lock_not_available: another writer holds the row */
    return sqlstate != nullptr && std::strcmp(sqlstate, "55P03") == 0;
}


extern "C" int
rl_api_listed(const rl_api_plan_t *plan, const rl_api_row_t *rows,
    size_t nrows, const rl_api_alloc_t *a, rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] { return listed(plan, rows, nrows, a, reply); });
}


extern "C" int
rl_api_written(const rl_api_plan_t *plan, const rl_api_row_t *rows,
    size_t nrows, uint64_t *txid, const rl_api_alloc_t *a,
    rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] {
        return written(plan, rows, nrows, txid, a, reply);
    });
}


extern "C" int
rl_api_zones(const rl_api_zone_t *list, size_t nzones,
    const rl_api_alloc_t *a, rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] { return zones(list, nzones, a, reply); });
}


extern "C" int
rl_api_bucket(const rl_api_bucket_t *b, const rl_api_alloc_t *a,
    rl_api_reply_t *reply) noexcept
{
    return guarded(reply, [&] { return bucket(b, a, reply); });
}
