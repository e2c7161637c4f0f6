
/*
 * The core's Redis client.  It does no I/O of its own, in the style of
 * nghttp2 and of hiredis's reader: it owns the protocol and the state (the
 * links to each Redis address and their lifecycle, AUTH, SELECT, SCRIPT
 * LOAD, reconnection with backoff, the RESP writer, the replies read with
 * hiredis's redisReader, pipelining and batching, NOSCRIPT, the per-request
 * timeouts, stall detection, the cluster slot map with MOVED, ASK and
 * refunds, the circuit breaker and the node heartbeat), and its host moves
 * the bytes.  The host is nginx (ngx_module/ngx_http_rate_limit_redis.c),
 * or a test (tests/), through rl_redis_adapter_t: open a byte stream to an
 * endpoint, say that there are bytes to send, hand over received bytes,
 * take bytes to send, close, arm one timer, post one call to the end of
 * the event loop's pass, resolve a host name.
 *
 * Names start with rl_redis_: a reader of a call knows that it lands in
 * the core.  No exception crosses this boundary.  Not thread-safe: one
 * client per worker (a process), driven from one thread.
 */

#ifndef _RL_REDIS_H_INCLUDED_
#define _RL_REDIS_H_INCLUDED_


#include "ngx_http_rate_limit_core.h"

#include <sys/socket.h>


#ifdef __cplusplus
extern "C" {
#endif


/* the Redis addresses a client tracks: one, or the masters of a cluster */
#define RL_REDIS_ADDRESSES           32
/* an address as logs and metrics write it, "host:port" or the unix path */
#define RL_REDIS_ADDRESS_LEN         72

#define RL_REDIS_OK                  0
#define RL_REDIS_ERROR              -1

/* the log levels of rl_redis_adapter_t.log(), nginx's numbers */
#define RL_REDIS_LOG_ERR             4
#define RL_REDIS_LOG_WARN            5
#define RL_REDIS_LOG_NOTICE          6
#define RL_REDIS_LOG_INFO            7


/*
 * What a node's workers share: the circuit of each address, the live-node
 * count of the heartbeat, and the histogram of round trips.  The host
 * allocates rl_redis_shared_size() bytes of shared memory, aligned to 8,
 * and calls rl_redis_shared_init() on it once, when the memory is new
 * (not on a reload that keeps it).  Every field is a lock-free atomic; the
 * one thing that takes a lock is adding an address, with the host's lock
 * (see rl_redis_config_t.lock).
 */
typedef struct rl_redis_shared_s  rl_redis_shared_t;

size_t rl_redis_shared_size(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
rl_redis_shared_t *rl_redis_shared_init(void *memory)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the upper bounds of the round-trip histogram, microseconds; one more
 * bucket counts what is above the last */
#define RL_REDIS_LATENCY_BOUNDS      10

typedef struct {
    char                        address[RL_REDIS_ADDRESS_LEN];  /* NUL ended */
    int                         up;        /* answered last time */
    int                         open;      /* the circuit */
    uint64_t                    opened;    /* transitions, counted */
    uint64_t                    closed;
} rl_redis_circuit_info_t;

typedef struct {
    uint64_t                    bounds_us[RL_REDIS_LATENCY_BOUNDS];
    uint64_t                    counts[RL_REDIS_LATENCY_BOUNDS + 1];
    uint64_t                    sum_us;
} rl_redis_latency_t;

/* the number of addresses with a circuit, at most RL_REDIS_ADDRESSES */
size_t rl_redis_shared_circuits(const rl_redis_shared_t *shared)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* circuit i, i below rl_redis_shared_circuits() */
void rl_redis_shared_circuit(const rl_redis_shared_t *shared, size_t i,
    rl_redis_circuit_info_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_redis_shared_latency(const rl_redis_shared_t *shared,
    rl_redis_latency_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* the live nodes as the registry last said; 0 before any heartbeat */
uint64_t rl_redis_shared_nodes(const rl_redis_shared_t *shared)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* where a Redis server listens */
typedef struct {
    const char                 *host;      /* numeric, NUL ended; or NULL */
    unsigned                    port;
    const char                 *unix_path; /* NUL ended, or NULL */
    /* as written in nginx.conf, for logs and metrics; NUL ended.  For
     * open() of a sentinel's master: "sentinel=<name> at <host:port>" */
    const char                 *address;
    /*
     * For open() only, set by the core: the socket address to connect
     * to, valid until the link's close().  The configuration's endpoints
     * leave it NULL.
     */
    const struct sockaddr      *sockaddr;
    socklen_t                   socklen;
    /*
     * Set by the core for open(), valid until the link's close(): the
     * host as nginx.conf names it,
     * without the port and the brackets of an IPv6 address ("redis.internal"
     * for "redis.internal:6380"), or the numeric host a cluster announced:
     * the name a TLS host checks the server's certificate against, and
     * sends as SNI unless it is an IP address.  NUL ended; NULL for a unix
     * socket.
     */
    const char                 *name;
    /*
     * The configuration's endpoints: 1 when the host of address, as
     * written, is a name that the core resolves at run time through the
     * host's resolve(): first at once (before connecting when host is
     * NULL, as it did not resolve when the configuration was read; host is
     * otherwise the address it had then), again when the answer's validity
     * runs out, and after a failed connection.
     */
    int                         resolve;
} rl_redis_endpoint_t;


/*
 * The host's side.  The core calls these; none of them may call back into
 * the core (any rl_redis_*() function) before it returns: what they start
 * completes in a later event.  close() and open() may be called from
 * inside any rl_redis_on_*() call, for the very link being served too, so
 * the host checks, after each rl_redis_on_*() call, that the connection it
 * was serving is still the link's before it touches it again.
 */
typedef struct {
    void                       *data;

    /*
     * Starts connecting link (0 to RL_REDIS_ADDRESSES - 1) to endpoint,
     * without blocking.  Returns RL_REDIS_OK, and later calls
     * rl_redis_on_connected() or rl_redis_on_closed(); or RL_REDIS_ERROR
     * with a reason in err (RL_REDIS_ERR_LEN bytes, NUL ended) when it
     * fails at once.  A link has at most one connection at a time.
     */
    int                       (*open)(void *data, unsigned link,
                                      const rl_redis_endpoint_t *endpoint,
                                      char *err);

    /*
     * The link has bytes to send: once the connection is writable, and
     * not before the end of the current pass of the event loop (so that
     * what several requests queue goes out in one write), the host calls
     * rl_redis_output() and rl_redis_output_sent() until it is drained or
     * the socket would block.  Called once until the host has taken the
     * output; calling it again is harmless.
     */
    void                      (*want_write)(void *data, unsigned link);

    /* closes the link's connection; rl_redis_on_closed() is not called */
    void                      (*close)(void *data, unsigned link);

    /*
     * Arms the one timer, replacing any earlier one: rl_redis_on_timer()
     * is called delay_ms from now.  hold is 1 while a request waits on
     * the client: a graceful shutdown must then wait for the timer (in
     * nginx, cancelable = 0); 0 when it need not.
     */
    void                      (*set_timer)(void *data, uint64_t delay_ms,
                                           int hold);

    /* rl_redis_on_posted() at the end of this pass of the event loop */
    void                      (*post)(void *data);

    /* one line of the error log, without a newline; msg is NUL ended */
    void                      (*log)(void *data, int level, const char *msg);

    /*
     * The one clock of the client, for its timers, its stall detection,
     * the circuits' probe times (shared, so the same clock in every worker
     * of a node) and the round-trip histogram: CLOCK_MONOTONIC, in
     * microseconds.
     */
    uint64_t                  (*now_us)(void *data);

    /* the host's lock of the shared memory (nginx: its slab pool's mutex,
     * which the master frees when a worker dies holding it) */
    void                      (*lock)(void *data);
    void                      (*unlock)(void *data);

    /*
     * Starts resolving name, the host of link's endpoint (NUL ended; its
     * addresses, IPv4 or IPv6), without blocking: RL_REDIS_OK, and later
     * rl_redis_on_resolved(), even when the host has the answer at once;
     * or RL_REDIS_ERROR with a reason in err.  One query a link at a time.
     * NULL when no endpoint resolves at run time.
     */
    int                       (*resolve)(void *data, unsigned link,
                                         const char *name, char *err);
} rl_redis_adapter_t;

#define RL_REDIS_ERR_LEN             NGX_HTTP_RATE_LIMIT_ERR_LEN


typedef struct {
    /* the one server, the seeds of a cluster, or the sentinels; up to
     * RL_REDIS_ADDRESSES */
    const rl_redis_endpoint_t  *endpoints;
    size_t                      nendpoints;
    int                         cluster;
    const char                 *password;  /* NULL or "": no AUTH */
    size_t                      password_len;
    /* a Redis 6+ ACL user: AUTH <username> <password>; NULL or "": the
     * default user, AUTH <password> */
    const char                 *username;
    size_t                      username_len;
    uint64_t                    db;        /* 0: no SELECT */

    /*
     * Redis Sentinel: the name of the master that the sentinels watch,
     * and the endpoints are the sentinels (up to RL_REDIS_ADDRESSES - 1:
     * the master takes a link).  The client asks each sentinel for the
     * master's address (SENTINEL get-master-addr-by-name) and listens to
     * it (SUBSCRIBE +switch-master); it connects to the master (AUTH,
     * SELECT as above, then ROLE: no decision goes to a server that is not
     * a master), and asks the sentinels again when the master cannot be
     * reached, answers -READONLY, or says by ROLE that it is not the
     * master.  The master's link is link 0, whose address in logs and
     * metrics is "sentinel=<name>"; the sentinels' links follow, in the
     * order of the endpoints.  NULL or "": no Sentinel.
     */
    const char                 *sentinel_master;
    size_t                      sentinel_master_len;
    /* AUTH [<username>] <password> to each sentinel; NULL or "": none */
    const char                 *sentinel_password;
    size_t                      sentinel_password_len;
    const char                 *sentinel_username;
    size_t                      sentinel_username_len;
    uint64_t                    timeout_ms;  /* of each decision */

    /*
     * The node heartbeat, sent by one worker of each node: heartbeat_key
     * is "<prefix>:nodes", heartbeat_id "<host>:<master pid>"; NULL sends
     * none (the other workers).
     */
    const char                 *heartbeat_key;
    size_t                      heartbeat_key_len;
    const char                 *heartbeat_id;
    size_t                      heartbeat_id_len;

    /* what the zones do while a circuit is open, for its log line:
     * "api=open, login=closed"; NUL ended */
    const char                 *failure_policy;

    rl_redis_shared_t          *shared;
} rl_redis_config_t;


typedef struct rl_redis_client_s   rl_redis_client_t;
typedef struct rl_redis_request_s  rl_redis_request_t;


/*
 * Copies what it needs of config and adapter, and starts connecting every
 * endpoint at once; in a cluster, it asks for the slot map once a link is
 * up.  NULL with a reason in err on failure.
 */
rl_redis_client_t *rl_redis_create(const rl_redis_config_t *config,
    const rl_redis_adapter_t *adapter, char *err)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Closes every link (through adapter.close()) and frees everything.  The
 * callbacks of the requests still in flight are not called; a resolve()
 * under way is the host's to cancel.  NULL is allowed.
 */
void rl_redis_destroy(rl_redis_client_t *client)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* the host's events */
void rl_redis_on_connected(rl_redis_client_t *client, unsigned link)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* bytes read from the link; consumed whole */
void rl_redis_on_data(rl_redis_client_t *client, unsigned link,
    const char *data, size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/*
 * The connection failed to connect, was closed by the peer (reason:
 * "Server closed the connection"), or failed to read or write (reason:
 * strerror()); the host has closed it already.
 */
void rl_redis_on_closed(rl_redis_client_t *client, unsigned link,
    const char *reason)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/*
 * The answer to resolve(): n addresses (more than RL_REDIS_RESOLVED are
 * ignored), their ports ignored, valid for valid_ms from now; or, with n
 * 0, err says why it failed (the link keeps its address, and the name
 * is asked again with backoff).  A link whose address is no longer among
 * them moves to the first: at once when no reply is owed on it, else once
 * the replies owed are in (no later than the timeout of the newest
 * decision sent on it), the decisions that come meanwhile waiting for the
 * new connection.
 */
#define RL_REDIS_RESOLVED            16

void rl_redis_on_resolved(rl_redis_client_t *client, unsigned link,
    const struct sockaddr *const *addrs, const socklen_t *lens, size_t n,
    uint64_t valid_ms, const char *err)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* the bytes waiting to go out on link: *len of them at *data (0: none) */
void rl_redis_output(rl_redis_client_t *client, unsigned link,
    const char **data, size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
/* n of them went out */
void rl_redis_output_sent(rl_redis_client_t *client, unsigned link, size_t n)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_redis_on_timer(rl_redis_client_t *client)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
void rl_redis_on_posted(rl_redis_client_t *client)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* one key of a decision, and what came of it */
typedef enum {
    RL_REDIS_KEY_PENDING = 0,
    RL_REDIS_KEY_DECIDED,        /* decision holds Redis's answer */
    RL_REDIS_KEY_FAILED          /* no answer: on_failure decides */
} rl_redis_key_status_e;

typedef struct {
    /* in: "<prefix>:<zone>:<key>", and the script's arguments as text */
    const unsigned char            *key;
    size_t                          key_len;
    const char                     *interval;    /* whole microseconds */
    size_t                          interval_len;
    const char                     *burst;
    size_t                          burst_len;
    const char                     *cost;
    size_t                          cost_len;
    const char                     *token_code;
    size_t                          token_code_len;

    /* out */
    rl_redis_key_status_e           status;
    /* when DECIDED; all of it written, the state zero: the script keeps
     * the state in Redis */
    ngx_http_rate_limit_decision_t  decision;
} rl_redis_key_t;


/*
 * Decides the nkeys keys of one request, each all or nothing with the
 * others of its slot (in a cluster, keys of different slots are decided
 * by different masters; when one rejects, the tokens the others took are
 * given back).  The keys array, and the texts it points to, must stay
 * valid until the callback or rl_redis_cancel().
 *
 * Returns RL_REDIS_OK with *request set when at least one key is on its
 * way: done(data) is called once, later, from an rl_redis_on_*() call,
 * never from inside this one, when every key is DECIDED or FAILED; after
 * it, *request is no longer valid.  Returns RL_REDIS_ERROR when no key is
 * on its way (every one is FAILED at once: no connection, an open
 * circuit); done is then never called.
 */
int rl_redis_decide(rl_redis_client_t *client, rl_redis_key_t *keys,
    size_t nkeys, void (*done)(void *data), void *data,
    rl_redis_request_t **request)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The request went away (its pool is being freed): done is never called,
 * the keys are not touched again, and replies that come later are
 * dropped.  Not for a request whose callback has run.
 */
void rl_redis_cancel(rl_redis_client_t *client, rl_redis_request_t *request)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _RL_REDIS_H_INCLUDED_ */
