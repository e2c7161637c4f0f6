
/*
 * The bucket API's logic: routing and validation, the bearer-token check,
 * every JSON answer, the SQL of each query and the reading of its rows.  It
 * does no I/O: the host (ngx_module/ngx_http_rate_limit_api.c) asks for a
 * plan, does what the plan names (reads the body, runs the query, reads a
 * bucket's tokens), hands the results back and sends the reply it gets.
 *
 * Names start with rl_api_.  No exception crosses this boundary: a call
 * that runs out of memory returns RL_API_ERROR, and the host answers 500.
 * Memory for replies, decoded keys and query parameters comes from the
 * host's allocator (an nginx pool), so nothing here needs freeing.
 */

#ifndef _RL_API_H_INCLUDED_
#define _RL_API_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"


#ifdef __cplusplus
extern "C" {
#endif


#define RL_API_OK                    0
#define RL_API_ERROR                -1

/* room for a key of NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX bytes, as it is */
#define RL_API_BODY_MAX              8192


/* the methods the API knows; any other is RL_API_METHOD_OTHER */
#define RL_API_METHOD_GET            0x01
#define RL_API_METHOD_HEAD           0x02
#define RL_API_METHOD_POST           0x04
#define RL_API_METHOD_PUT            0x08
#define RL_API_METHOD_DELETE         0x10
#define RL_API_METHOD_OTHER          0x20

/* the method of a request line ("GET", "PUT"...): methods are case
 * sensitive, as nginx reads them */
unsigned rl_api_method(const unsigned char *name, size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* NULL when out of memory; what it gives lives as long as the request */
typedef struct {
    void                        *(*alloc)(void *data, size_t size);
    void                          *data;
} rl_api_alloc_t;


/* what to send: a status, a JSON body (none for 204), maybe headers */
typedef struct {
    int                            status;
    const char                    *allow;             /* NULL: none */
    unsigned                       www_authenticate:1;
    unsigned char                 *body;
    size_t                         len;
} rl_api_reply_t;


typedef enum {
    RL_API_REPLY = 0,           /* no route: send the reply */
    RL_API_ZONES,               /* the zones in nginx.conf */
    RL_API_GET,                 /* a key's limit and its tokens now */
    RL_API_LIST,                /* a page of a zone's per-client limits */
    RL_API_CREATE,              /* POST: the body names the key */
    RL_API_UPDATE,              /* PUT */
    RL_API_DELETE
} rl_api_action_e;


typedef struct {
    rl_api_action_e                action;
    void                          *host_zone; /* what find_zone gave */
    const unsigned char           *zone;      /* as in the path, valid */
    size_t                         zone_len;
    const unsigned char           *key;       /* decoded; LIST: after */
    size_t                         key_len;
    unsigned                       limit;     /* LIST: the page's size */
    ngx_http_rate_limit_rate_t     rate;      /* CREATE, UPDATE: the body's */
    uint64_t                       burst;
} rl_api_plan_t;


/* the request as nginx has it, raw: a key may hold an encoded "/" */
typedef struct {
    const unsigned char           *base;      /* the API location's prefix */
    size_t                         base_len;
    const unsigned char           *path;      /* without the arguments */
    size_t                         path_len;
    const unsigned char           *args;      /* after "?", may be NULL */
    size_t                         args_len;
    unsigned                       method;    /* RL_API_METHOD_* */
    int64_t                        content_length;    /* -1: not given */
    /* the host's zone of that name, if defined; else NULL: 404 */
    void                        *(*find_zone)(void *data,
                                              const unsigned char *name,
                                              size_t len);
    void                          *data;
} rl_api_request_t;


/* answers the host sends without asking anyone */
typedef enum {
    RL_API_UNAUTHORIZED = 0,    /* 401 and WWW-Authenticate */
    RL_API_TOO_LARGE,           /* 413: a body over RL_API_BODY_MAX */
    RL_API_NO_POSTGRES,         /* 503: no rate_limit_postgres */
    RL_API_UNAVAILABLE,         /* 503: PostgreSQL failed or is away */
    RL_API_BUSY                 /* 409: another writer holds the row */
} rl_api_refusal_e;


/* one row of a query's result, as text: NULL value for SQL's NULL */
typedef struct {
    const char                    *value[3];
    size_t                         len[3];
} rl_api_row_t;


typedef struct {
    const char                    *sql;
    const char                    *params[4];  /* NUL ended, for libpq */
    int                            nparams;
} rl_api_query_t;


/* a zone of nginx.conf, for the zones list */
typedef struct {
    const unsigned char           *name;
    size_t                         name_len;
    ngx_http_rate_limit_rate_t     rate;
    uint64_t                       burst;
    const char                    *backend;        /* "local", "redis" */
    const char                    *on_failure;
    size_t                         policy_entries;
} rl_api_zone_t;


/* a key's limit in force and where it comes from */
typedef struct {
    const unsigned char           *zone;
    size_t                         zone_len;
    const unsigned char           *key;
    size_t                         key_len;
    ngx_http_rate_limit_rate_t     rate;
    uint64_t                       burst;
    const char                    *source;
    int64_t                        tokens;         /* < 0: unknown */
} rl_api_bucket_t;


/*
 * 1 when the Authorization header (NULL: none) carries "Bearer " and then
 * token, compared in constant time whatever the bytes given; 0 when not,
 * or when token is NULL or empty: no token opens nothing.
 */
int rl_api_authorized(const char *token, const unsigned char *header,
    size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Routes a request: plan->action is what to do, or RL_API_REPLY with the
 * reply to send.  For CREATE and UPDATE, rl_api_body() follows.
 */
int rl_api_route(const rl_api_request_t *request, const rl_api_alloc_t *a,
    rl_api_plan_t *plan, rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Reads the body of a CREATE or UPDATE into the plan: its key (CREATE) and
 * its limit.  When the body is refused, plan->action is RL_API_REPLY.
 */
int rl_api_body(const char *body, size_t len, const rl_api_alloc_t *a,
    rl_api_plan_t *plan, rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

int rl_api_refuse(rl_api_refusal_e why, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the query of a LIST, CREATE, UPDATE or DELETE plan */
int rl_api_query(const rl_api_plan_t *plan, const rl_api_alloc_t *a,
    rl_api_query_t *query)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * What runs first on each new connection: the settings, then the schema.
 * A failed schema leaves its transaction aborted and undoes the settings;
 * rl_api_recover_sql() sets them again.  NULL when out of memory.
 */
const char *rl_api_setup_sql(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *rl_api_recover_sql(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* 1 when a failed query's SQLSTATE (NULL: none) is RL_API_BUSY's */
int rl_api_busy(const char *sqlstate)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* a LIST's rows (key, rate, burst) into its page */
int rl_api_listed(const rl_api_plan_t *plan, const rl_api_row_t *rows,
    size_t nrows, const rl_api_alloc_t *a, rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * A write's rows (key, transaction): none is 409 for CREATE and 404 for
 * the others.  *txid is the write's transaction, 0 when unreadable: the
 * write still applies, as one any sync may replace.
 */
int rl_api_written(const rl_api_plan_t *plan, const rl_api_row_t *rows,
    size_t nrows, uint64_t *txid, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

int rl_api_zones(const rl_api_zone_t *zones, size_t nzones,
    const rl_api_alloc_t *a, rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

int rl_api_bucket(const rl_api_bucket_t *bucket, const rl_api_alloc_t *a,
    rl_api_reply_t *reply)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_API_H_INCLUDED_ */
