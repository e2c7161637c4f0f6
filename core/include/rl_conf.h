
/*
 * The module's configuration as the core reads it: the parameters of every
 * directive, the zones they define and use, the checks across directives
 * once the http block is read, the policy file's entries, and what each
 * process builds from it (the Redis client's config, the sync's, the zone
 * lists of the metrics and of the API).
 *
 * The host hands each directive's arguments as they are written, and logs
 * the message of a refusal as it is: the messages are the host's own, word
 * for word.  What only the host can do stays the host's: its zones' memory
 * (new_zone), resolving a Redis host name (resolve), the environment and
 * the error log of a process (rl_conf_process_t).
 *
 * Names start with rl_conf_.  No exception crosses this boundary.  Not
 * thread-safe: one configuration is read by one thread.
 */

#ifndef _RL_CONF_H_INCLUDED_
#define _RL_CONF_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"
#include "rl_api.h"
#include "rl_metrics.h"
#include "rl_pg.h"
#include "rl_redis.h"
#include "rl_zone.h"


#ifdef __cplusplus
extern "C" {
#endif


#define RL_CONF_OK          0
#define RL_CONF_ERROR      -1
/* the directive was given already: nginx says "... directive is duplicate" */
#define RL_CONF_DUPLICATE  -2
/* a process goes on without what it asked for; the reason was logged */
#define RL_CONF_DECLINED   -3


typedef struct rl_conf_s  rl_conf_t;


/* one argument of a directive; nginx's are NUL ended, and so are these */
typedef struct {
    const unsigned char        *data;
    size_t                      len;
} rl_conf_arg_t;

/* a directive's line: its arguments, the directive's name first */
typedef struct {
    const rl_conf_arg_t        *args;
    size_t                      nargs;
    rl_conf_arg_t               file;      /* where it is written */
    size_t                      line;
} rl_conf_line_t;


typedef struct {
    void                       *data;

    /* the smallest zone is 8 of them */
    size_t                      page_size;

    /*
     * A zone named for the first time: the host allocates its zone, which
     * must live as long as the configuration, zeroed but for its own data,
     * and the core fills the rl_zone_t.  NULL: out of memory.
     */
    rl_zone_t                *(*new_zone)(void *data,
                                          const unsigned char *name,
                                          size_t len);
} rl_conf_host_t;


/* NULL: out of memory */
rl_conf_t *rl_conf_create(const rl_conf_host_t *host)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_conf_destroy(rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the message of the last RL_CONF_ERROR, NUL ended, as the host logs it */
const char *rl_conf_error(const rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* a rate_limit line: its zone, which may be defined further on */
typedef struct {
    rl_zone_t                  *zone;
    uint64_t                    cost;
    const unsigned char        *cost_text;   /* decimal, for Redis */
    size_t                      cost_text_len;
} rl_conf_limit_t;

/* what a directive gives the host */
typedef struct {
    /* rate_limit_zone: the zone, now defined, and its size in bytes; the
     * host compiles its key (args[1]) and adds its shared memory */
    rl_zone_t                  *zone;
    uint64_t                    size;

    /* rate_limit */
    rl_conf_limit_t             limit;

    /* rate_limit_status: the code; rate_limit_log_level: nginx's number */
    unsigned                    value;

    /* rate_limit_api_token env:NAME: NAME, in the argument (NUL ended) */
    rl_conf_arg_t               env;
} rl_conf_result_t;


/*
 * The host's name resolution of a Redis address "host[:port]", at
 * configuration time (a worker must not block on it): the first address,
 * numeric, NUL ended, into host, the port, and whether the host is a name.
 * RL_CONF_ERROR with err the reason, or NULL for none;
 * RL_CONF_DECLINED when the address is a name that does not resolve now:
 * port and name set, err the resolver's reason (see
 * rl_conf_redis_resolver()).
 */
#define RL_CONF_HOST_LEN  128

typedef struct {
    char                        host[RL_CONF_HOST_LEN];
    unsigned                    port;
    int                         name;
    const char                 *err;
} rl_conf_resolved_t;

typedef int (*rl_conf_resolve_pt)(void *data, const unsigned char *address,
    size_t len, unsigned default_port, rl_conf_resolved_t *out);

/*
 * One directive of the module (its name is args[0]), into the
 * configuration: RL_CONF_OK with what it gives in result, RL_CONF_ERROR
 * with the message, or RL_CONF_DUPLICATE.  rate_limit_redis resolves each
 * TCP address as it reads it, with resolve; rate_limit_policy_file takes
 * its path made absolute by the host.
 */
int rl_conf_directive(rl_conf_t *conf, const rl_conf_line_t *line,
    rl_conf_resolve_pt resolve, void *data, rl_conf_result_t *result)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Once the http block is read: every zone used is defined, the backends
 * are known, the policy file loads into the zones, and no cost exceeds its
 * zone's burst.  The message names its own file and line.
 */
int rl_conf_finish(rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Once the http block is read, before rl_conf_finish(): with resolver 1
 * (nginx's resolver has name servers), the Redis host names are resolved
 * by the workers at run time (rl_redis_endpoint_t.resolve); without, as
 * the configuration was read, and a name that did not resolve then fails
 * it: RL_CONF_ERROR, with the message that names its file and line.
 */
int rl_conf_redis_resolver(rl_conf_t *conf, int resolver)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the zones whose backend is Redis; 0 before rl_conf_finish() */
size_t rl_conf_redis_zones(const rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* 1 once rate_limit_redis is read */
int rl_conf_has_redis(const rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Hashes the zone's policy entries with its store's seed and puts them in
 * the store (rl_store_policy_replace()): once its store is set up.
 * Returns what that returns; *n is the number of entries.
 */
int rl_conf_store_policy(rl_conf_t *conf, rl_zone_t *zone, size_t *n)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* what a process of the host is */
typedef struct {
    const unsigned char        *hostname;
    size_t                      hostname_len;
    int64_t                     pid;
    int64_t                     master_pid;  /* the same across reloads */
    unsigned                    worker;      /* 0: the first */

    /* the process's environment, as getenv(3) */
    char                     *(*getenv)(const char *name);

    /* one line of the error log, at level error; msg is NUL ended */
    void                      (*log_error)(void *data, const char *msg);
    void                       *log_data;
} rl_conf_process_t;

/* the first worker says which API token variables are missing or empty */
void rl_conf_check_api_tokens(const rl_conf_t *conf,
    const rl_conf_process_t *process)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The Redis client's config, but for shared, which the host sets: what it
 * points to lives as long as conf.  RL_CONF_ERROR: out of memory.
 */
int rl_conf_redis_config(rl_conf_t *conf, const rl_conf_process_t *process,
    rl_redis_config_t *config)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * rate_limit_redis's TLS parameters, checked against each other by
 * rl_conf_directive(); the host loads the files (a missing one fails the
 * configuration there) and does the handshake.  The paths are as written,
 * NUL ended, or NULL when not given.
 */
typedef struct {
    int                         enabled;              /* tls=on */
    int                         verify;               /* tls_verify=, on */
    const char                 *trusted_certificate;  /* CA file, PEM */
    const char                 *certificate;          /* mutual TLS */
    const char                 *certificate_key;
    /* tls_server_name=: what every address's certificate is checked
     * against, and the SNI; NULL: each address's own host */
    const char                 *server_name;
} rl_conf_redis_tls_t;

/* RL_CONF_OK with out filled (enabled 0 without rate_limit_redis or with
 * tls=off); what out points to lives as long as conf */
int rl_conf_redis_tls(const rl_conf_t *conf, rl_conf_redis_tls_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The sync's config, but for lease, which the host sets, with the stores
 * of the zones as they are now.  RL_CONF_DECLINED: the variable of the
 * connection string is not set (logged); RL_CONF_ERROR: out of memory.
 */
int rl_conf_pg_sync_config(rl_conf_t *conf, const rl_conf_process_t *process,
    rl_pg_sync_config_t *config)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the connection string, once known (after rl_conf_pg_sync_config() for
 * one from the environment); NULL: none */
const char *rl_conf_pg_conninfo(const rl_conf_t *conf)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the host's data (rl_zone_t.host) of the defined zone name, or NULL */
void *rl_conf_find_zone(void *conf, const unsigned char *name, size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the zones with their counters now, into m->zones and m->nzones */
int rl_conf_metrics_zones(const rl_conf_t *conf, const rl_api_alloc_t *a,
    rl_metrics_t *m)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the API's zones list (rl_api_zones()) */
int rl_conf_api_zones(const rl_conf_t *conf, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * nginx's time syntax in milliseconds, as ngx_parse_time(line, 0) of
 * nginx 1.22 reads it ("50ms", "2s", "1m30s", "1h 2m"), with its result:
 * -1 when it refuses, what would overflow its 64-bit arithmetic too.
 */
int64_t rl_conf_parse_time(const unsigned char *text, size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_CONF_H_INCLUDED_ */
