/*
 * The configuration object (rl_conf.h): its zones, the checks once the
 * http block is read, the policy file's load into the zones, and what a
 * process builds from the configuration.  The directives' parameters are
 * read in rl_conf_parse.cpp.
 */

#include "rl_conf_impl.h"

#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>


namespace {

using ngx_http_rate_limit::conf::Ref;
using ngx_http_rate_limit::conf::Zone;

using Policy = std::unique_ptr<ngx_http_rate_limit_policy_t,
                               decltype(&ngx_http_rate_limit_policy_free)>;


int
check_zones(rl_conf_t *conf)
{
    for (Zone &zone : conf->zones) {
        rl_zone_t  *z = zone.zone;

        if (!zone.defined) {
            return conf->fail("unknown zone \"", zone.name,
                              "\" in \"rate_limit\" directive in ",
                              zone.named.file, ":", zone.named.line);
        }

        if (z->backend == RL_ZONE_BACKEND_UNSET) {
            z->backend = conf->has_redis ? RL_ZONE_BACKEND_REDIS
                                         : RL_ZONE_BACKEND_LOCAL;
        }

        if (z->backend != RL_ZONE_BACKEND_REDIS) {
            continue;
        }

        if (!conf->has_redis) {
            return conf->fail("\"rate_limit_zone\" directive: zone \"",
                              zone.name, "\" uses \"backend=redis\" but "
                              "\"rate_limit_redis\" is not set in ",
                              zone.named.file, ":", zone.named.line);
        }

        zone.redis_prefix = conf->redis.prefix + ":" + zone.name + ":";
        z->redis_prefix = reinterpret_cast<const unsigned char *>(
            zone.redis_prefix.data());
        z->redis_prefix_len = zone.redis_prefix.size();

        conf->redis_zones++;
    }

    return RL_CONF_OK;
}


/* runs once every zone is defined: the file may name any of them */
int
load_policy(rl_conf_t *conf)
{
    if (!conf->has_policy) {
        return RL_CONF_OK;
    }

    std::vector<char>              err(NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN);
    ngx_http_rate_limit_policy_t  *loaded;

    if (ngx_http_rate_limit_policy_load(conf->policy_file.c_str(), &loaded,
                                        err.data(), err.size())
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return conf->fail("\"rate_limit_policy_file\" directive: ",
                          err.data());
    }

    Policy  policy(loaded, ngx_http_rate_limit_policy_free);
    size_t  n = ngx_http_rate_limit_policy_zones(policy.get());

    /* every zone is checked, even one without clients */
    for (size_t i = 0; i < n; i++) {
        ngx_http_rate_limit_policy_zone_t  pz;

        ngx_http_rate_limit_policy_zone(policy.get(), i, &pz);

        if (conf->find({pz.name, pz.name_len}) == nullptr) {
            return conf->fail("\"rate_limit_policy_file\" directive: ",
                              conf->policy_file, ":", pz.line, ":",
                              pz.column, ": unknown zone \"",
                              std::string_view(pz.name, pz.name_len),
                              "\", expected a zone defined by "
                              "\"rate_limit_zone\"");
        }
    }

    n = ngx_http_rate_limit_policy_size(policy.get());

    for (size_t i = 0; i < n; i++) {
        ngx_http_rate_limit_policy_entry_t  entry;
        char                                perr[NGX_HTTP_RATE_LIMIT_ERR_LEN];
        unsigned char                       key[NGX_HTTP_RATE_LIMIT_KEY_MAX];

        ngx_http_rate_limit_policy_entry(policy.get(), i, &entry);

        /* the zones of the file were all found already */
        Zone                     *zone = conf->find({entry.zone,
                                                     entry.zone_len});
        rl_store_policy_entry_t   row{};
        size_t                    len;

        /* hashed with the store's seed once the store exists */
        len = ngx_http_rate_limit_encode_key(entry.key, entry.key_len, key);
        const std::string  &stored = zone->policy_keys.emplace_back(
            reinterpret_cast<const char *>(key), len);

        row.key.data = reinterpret_cast<const unsigned char *>(stored.data());
        row.key.len = stored.size();
        row.limit.rate = entry.rate;

        if (ngx_http_rate_limit_make_params_blocking(&entry.rate, entry.burst,
                                                     &row.limit.params, perr,
                                                     sizeof(perr))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            return conf->fail("\"rate_limit_policy_file\" directive: ",
                              conf->policy_file, ":", entry.line, ":",
                              entry.column, ": ", perr);
        }

        zone->policy.push_back(row);
        zone->zone->policy_entries = zone->policy.size();
    }

    return RL_CONF_OK;
}


int
check_costs(rl_conf_t *conf)
{
    for (const Ref &ref : conf->refs) {
        uint64_t  burst = ref.zone->zone->params.burst;

        if (ref.cost > burst) {
            return conf->fail("invalid cost \"", ref.cost,
                              "\" in \"rate_limit\" directive: it exceeds "
                              "the burst ", burst, " of zone \"",
                              ref.zone->name, "\", so no request could ever "
                              "pass, in ", ref.where.file, ":",
                              ref.where.line);
        }
    }

    return RL_CONF_OK;
}


/* a variable of the environment that the host's process may lack */
const char *
env(const rl_conf_process_t *process, const std::string &name)
{
    return process->getenv(name.c_str());
}


void
log_error(const rl_conf_process_t *process, const std::string &msg)
{
    process->log_error(process->log_data, msg.c_str());
}


/* the variable holding a directive's secret is missing */
void
log_unset(const rl_conf_process_t *process, const char *directive,
    const std::string &name, const char *holding)
{
    log_error(process, std::string(directive) + ": environment variable \""
              + name + "\" holding the " + holding + " is not set; add \"env "
              + name + ";\" to nginx.conf");
}


/* "z=open, api=local": what the node does while a circuit is open */
std::string
failure_policy(const rl_conf_t *conf)
{
    std::string  policy;

    for (const Zone &zone : conf->zones) {
        if (zone.zone->backend != RL_ZONE_BACKEND_REDIS) {
            continue;
        }

        if (!policy.empty()) {
            policy += ", ";
        }

        policy += zone.name + "="
                  + rl_zone_failure_name(zone.zone->on_failure);
    }

    return policy;
}

}  // namespace


Zone *
rl_conf_s::find(std::string_view name)
{
    for (Zone &zone : zones) {
        if (zone.name == name) {
            return &zone;
        }
    }

    return nullptr;
}


Zone *
rl_conf_s::get(std::string_view name, const rl_conf_line_t *line)
{
    Zone  *found = find(name);

    if (found) {
        return found;
    }

    Zone  &zone = zones.emplace_back();

    zone.name = name;
    zone.named.file = ngx_http_rate_limit::conf::view(line->file);
    zone.named.line = line->line;
    zone.zone = host.new_zone(
        host.data, reinterpret_cast<const unsigned char *>(zone.name.data()),
        zone.name.size());

    if (zone.zone == nullptr) {
        zones.pop_back();
        return nullptr;
    }

    zone.zone->name = reinterpret_cast<const unsigned char *>(
        zone.name.data());
    zone.zone->name_len = zone.name.size();

    return &zone;
}


extern "C" rl_conf_t *
rl_conf_create(const rl_conf_host_t *host) noexcept
{
    auto  conf = new (std::nothrow) rl_conf_t;

    if (conf) {
        conf->host = *host;
    }

    return conf;
}


extern "C" void
rl_conf_destroy(rl_conf_t *conf) noexcept
{
    delete conf;
}


extern "C" const char *
rl_conf_error(const rl_conf_t *conf) noexcept
{
    return conf->error.c_str();
}


extern "C" int
rl_conf_finish(rl_conf_t *conf) noexcept
{
    try {
        if (check_zones(conf) != RL_CONF_OK
            || load_policy(conf) != RL_CONF_OK
            || check_costs(conf) != RL_CONF_OK)
        {
            return RL_CONF_ERROR;
        }

        return RL_CONF_OK;

    } catch (...) {
        return conf->fail("out of memory");
    }
}


extern "C" int
rl_conf_redis_resolver(rl_conf_t *conf, int resolver) noexcept
{
    conf->redis.resolver = resolver != 0;

    for (const auto &addr : conf->redis.addresses) {
        if (!resolver && !addr.unresolved.empty()) {
            try {
                conf->error = addr.unresolved;
            } catch (...) {
                return conf->fail("out of memory");
            }

            return RL_CONF_ERROR;
        }
    }

    return RL_CONF_OK;
}


extern "C" size_t
rl_conf_redis_zones(const rl_conf_t *conf) noexcept
{
    return conf->redis_zones;
}


extern "C" int
rl_conf_has_redis(const rl_conf_t *conf) noexcept
{
    return conf->has_redis;
}


extern "C" int
rl_conf_store_policy(rl_conf_t *conf, rl_zone_t *z, size_t *n) noexcept
{
    for (Zone &zone : conf->zones) {
        if (zone.zone != z) {
            continue;
        }

        for (rl_store_policy_entry_t &entry : zone.policy) {
            rl_store_key(&z->store, entry.key.data, entry.key.len,
                         &entry.key);
        }

        *n = zone.policy.size();

        return rl_store_policy_replace(&z->store, zone.policy.data(),
                                       zone.policy.size());
    }

    *n = 0;

    return rl_store_policy_replace(&z->store, nullptr, 0);
}


extern "C" void
rl_conf_check_api_tokens(const rl_conf_t *conf,
    const rl_conf_process_t *process) noexcept
{
    /* every worker has the same environment: the first one says it */
    if (process->worker != 0) {
        return;
    }

    try {
        for (const std::string &name : conf->token_envs) {
            const char  *value = env(process, name);

            if (value == nullptr) {
                log_error(process, "rate_limit_api_token: environment "
                          "variable \"" + name + "\" is not set, so its API "
                          "locations refuse every request; add \"env " + name
                          + ";\" to nginx.conf");

            } else if (*value == '\0') {
                log_error(process, "rate_limit_api_token: environment "
                          "variable \"" + name + "\" is empty, so its API "
                          "locations refuse every request");
            }
        }

    } catch (...) {
        /* out of memory: the API's locations refuse as they would anyway */
    }
}


extern "C" int
rl_conf_redis_tls(const rl_conf_t *conf, rl_conf_redis_tls_t *out) noexcept
{
    const ngx_http_rate_limit::conf::RedisTls  &tls = conf->redis.tls;

    auto path = [](const std::string &s) {
        return s.empty() ? nullptr : s.c_str();
    };

    *out = rl_conf_redis_tls_t{};

    if (!conf->has_redis || !tls.enabled) {
        return RL_CONF_OK;
    }

    out->enabled = 1;
    out->verify = tls.verify;
    out->trusted_certificate = path(tls.trusted_certificate);
    out->certificate = path(tls.certificate);
    out->certificate_key = path(tls.certificate_key);
    out->server_name = path(tls.server_name);

    return RL_CONF_OK;
}


/* the client copies what it keeps */
extern "C" int
rl_conf_redis_config(rl_conf_t *conf, const rl_conf_process_t *process,
    rl_redis_config_t *config) noexcept
{
    try {
        const ngx_http_rate_limit::conf::Redis  &redis = conf->redis;

        *config = rl_redis_config_t{};

        conf->endpoints.clear();

        for (const auto &addr : redis.addresses) {
            rl_redis_endpoint_t  endpoint{};

            endpoint.address = addr.address.c_str();

            if (!addr.unix_path.empty()) {
                endpoint.unix_path = addr.unix_path.c_str();

            } else {
                endpoint.host = addr.host.empty() ? nullptr
                                                  : addr.host.c_str();
                endpoint.port = addr.port;
                endpoint.resolve = redis.resolver && addr.name;
            }

            conf->endpoints.push_back(endpoint);
        }

        config->endpoints = conf->endpoints.data();
        config->nendpoints = conf->endpoints.size();
        config->cluster = redis.cluster;
        config->db = redis.db;
        config->timeout_ms = redis.timeout_ms;

        if (redis.has_password) {
            config->password = redis.password.c_str();
            config->password_len = redis.password.size();
        }

        if (!redis.username.empty()) {
            config->username = redis.username.c_str();
            config->username_len = redis.username.size();
        }

        if (!redis.password_env.empty()) {
            const char  *value = env(process, redis.password_env);

            if (value == nullptr) {
                log_unset(process, "rate_limit_redis", redis.password_env,
                          "password");

            } else {
                config->password = value;
                config->password_len = std::strlen(value);
            }
        }

        if (!redis.sentinel.empty()) {
            config->sentinel_master = redis.sentinel.c_str();
            config->sentinel_master_len = redis.sentinel.size();
        }

        if (redis.has_sentinel_password) {
            config->sentinel_password = redis.sentinel_password.c_str();
            config->sentinel_password_len = redis.sentinel_password.size();
        }

        if (!redis.sentinel_username.empty()) {
            config->sentinel_username = redis.sentinel_username.c_str();
            config->sentinel_username_len = redis.sentinel_username.size();
        }

        if (!redis.sentinel_password_env.empty()) {
            const char  *value = env(process, redis.sentinel_password_env);

            if (value == nullptr) {
                log_unset(process, "rate_limit_redis",
                          redis.sentinel_password_env, "sentinel password");

            } else {
                config->sentinel_password = value;
                config->sentinel_password_len = std::strlen(value);
            }
        }

        /* one heartbeat a node is enough; the master restarts a lost
         * worker 0 */
        if (process->worker == 0) {
            conf->heartbeat_key = redis.prefix + ":nodes";

            /* the master's pid tells apart the nodes of one host, and
             * survives a reload and a restarted worker */
            conf->heartbeat_id.assign(
                reinterpret_cast<const char *>(process->hostname),
                process->hostname_len);
            conf->heartbeat_id += ":";
            ngx_http_rate_limit::conf::append(conf->heartbeat_id,
                                              process->master_pid);

            config->heartbeat_key = conf->heartbeat_key.c_str();
            config->heartbeat_key_len = conf->heartbeat_key.size();
            config->heartbeat_id = conf->heartbeat_id.c_str();
            config->heartbeat_id_len = conf->heartbeat_id.size();
        }

        conf->failure_policy = failure_policy(conf);
        config->failure_policy = conf->failure_policy.c_str();

        return RL_CONF_OK;

    } catch (...) {
        return RL_CONF_ERROR;
    }
}


extern "C" int
rl_conf_pg_sync_config(rl_conf_t *conf, const rl_conf_process_t *process,
    rl_pg_sync_config_t *config) noexcept
{
    try {
        ngx_http_rate_limit::conf::Postgres  &pg = conf->postgres;

        if (!pg.conninfo_known) {
            const char  *value = env(process, pg.conninfo_env);

            if (value == nullptr) {
                log_unset(process, "rate_limit_postgres", pg.conninfo_env,
                          "connection string");
                return RL_CONF_DECLINED;
            }

            pg.conninfo = value;
            pg.conninfo_known = true;
        }

        conf->pg_zones.clear();

        for (const Zone &zone : conf->zones) {
            conf->pg_zones.push_back({zone.zone->name, zone.zone->name_len,
                                      zone.zone->store});
        }

        *config = rl_pg_sync_config_t{};
        config->conninfo = pg.conninfo.c_str();
        config->interval_ms = pg.interval_ms;
        config->zones = conf->pg_zones.data();
        config->nzones = conf->pg_zones.size();
        config->pid = process->pid;
        config->preferred = (process->worker == 0);

        return RL_CONF_OK;

    } catch (...) {
        return RL_CONF_ERROR;
    }
}


extern "C" const char *
rl_conf_pg_conninfo(const rl_conf_t *conf) noexcept
{
    return (conf->has_postgres && conf->postgres.conninfo_known)
           ? conf->postgres.conninfo.c_str() : nullptr;
}


extern "C" void *
rl_conf_find_zone(void *data, const unsigned char *name, size_t len) noexcept
{
    auto   conf = static_cast<rl_conf_t *>(data);
    Zone  *zone = conf->find({reinterpret_cast<const char *>(name), len});

    return (zone && zone->defined) ? zone->zone->host : nullptr;
}


extern "C" int
rl_conf_metrics_zones(const rl_conf_t *conf, const rl_api_alloc_t *a,
    rl_metrics_t *m) noexcept
{
    size_t  n = conf->zones.size();
    auto    zones = static_cast<rl_metrics_zone_t *>(
        a->alloc(a->data, (n ? n : 1) * sizeof(rl_metrics_zone_t)));

    if (zones == nullptr) {
        return RL_CONF_ERROR;
    }

    for (size_t i = 0; i < n; i++) {
        const rl_zone_t  *z = conf->zones[i].zone;

        zones[i].name = z->name;
        zones[i].name_len = z->name_len;
        rl_store_stats(&z->store, &zones[i].stats);
    }

    m->zones = zones;
    m->nzones = n;

    return RL_CONF_OK;
}


extern "C" int
rl_conf_api_zones(const rl_conf_t *conf, const rl_api_alloc_t *a,
    rl_api_reply_t *reply) noexcept
{
    try {
        std::vector<rl_api_zone_t>  list;

        for (const Zone &zone : conf->zones) {
            const rl_zone_t  *z = zone.zone;
            rl_api_zone_t     entry{};

            entry.name = z->name;
            entry.name_len = z->name_len;
            entry.rate = z->rate;
            entry.burst = z->params.burst;
            entry.backend = z->backend == RL_ZONE_BACKEND_REDIS ? "redis"
                                                                : "local";
            entry.on_failure = rl_zone_failure_name(z->on_failure);
            entry.policy_entries = z->policy_entries;

            list.push_back(entry);
        }

        return rl_api_zones(list.data(), list.size(), a, reply) == RL_API_OK
               ? RL_CONF_OK : RL_CONF_ERROR;

    } catch (...) {
        return RL_CONF_ERROR;
    }
}
