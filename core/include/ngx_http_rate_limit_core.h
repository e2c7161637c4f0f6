/*
 * The C face of the C++ core. Plain structs and functions only: no nginx
 * headers, and no exception ever crosses this boundary.
 */

#ifndef _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/*
 * The C++ definitions promise never to throw; C++17 makes that part of the
 * function type, so the declarations must say it too.  C sees nothing.
 */
#ifdef __cplusplus
#define NGX_HTTP_RATE_LIMIT_NOEXCEPT    noexcept
#else
#define NGX_HTTP_RATE_LIMIT_NOEXCEPT
#endif


#ifdef __cplusplus
extern "C" {
#endif


#define NGX_HTTP_RATE_LIMIT_OK          0
#define NGX_HTTP_RATE_LIMIT_EINVAL      1

/* the room a caller leaves for an error message */
#define NGX_HTTP_RATE_LIMIT_ERR_LEN     128

/* keys longer than this are replaced by their hash */
#define NGX_HTTP_RATE_LIMIT_KEY_MAX     256

/*
 * The longest key of a per-client limit, in bytes, in PostgreSQL (the
 * table's CHECK), the policy file and the bucket API alike.  A request's
 * key may be longer than NGX_HTTP_RATE_LIMIT_KEY_MAX, and its limit is
 * written under the key as the request has it, so the three take keys of
 * up to this length and hash them the same way.
 */
#define NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX 4096

/* '#' followed by 40 hex digits of SHA-1 */
#define NGX_HTTP_RATE_LIMIT_HASHED_LEN  41

#define NGX_HTTP_RATE_LIMIT_SHA1_HEX    40

/* one token per microsecond: beyond it the interval has no resolution */
#define NGX_HTTP_RATE_LIMIT_MAX_PER_SEC 1000000


/* the longest zone name, in bytes */
#define NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX  64

/*
 * 1 when name is a zone name: 1 to NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX bytes,
 * each one of A-Z, a-z, 0-9, '_', '.' and '-'; else 0.  Zone names are
 * written unescaped into headers, metrics labels, Redis keys and logs, so
 * nginx.conf, the PostgreSQL schema, the policy file and the bucket API
 * accept exactly this set.
 */
int ngx_http_rate_limit_valid_zone_name(const unsigned char *name,
    size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* "N r/PERIOD": count tokens are refilled over period_ms */
typedef struct {
    uint64_t  count;
    uint64_t  period_ms;
} ngx_http_rate_limit_rate_t;


/* a bucket's fixed parameters, derived once from rate and burst */
typedef struct {
    double    interval_us;        /* microseconds to refill one token */
    uint64_t  burst;              /* the bucket's capacity, in tokens */
} ngx_http_rate_limit_params_t;


/*
 * What a bucket stores: its theoretical arrival time (TAT), and the code
 * of the token length it was counted in (see
 * ngx_http_rate_limit_token_code()), so that a client whose limit changes
 * keeps the tokens it has used rather than a time counted in the old
 * tokens.  Code NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE, what the versions
 * before the code stored, reads as counted in the limit in force.
 */
typedef struct {
    int64_t   tat_us;             /* 0 for a key never seen: full */
    uint32_t  token_code;
} ngx_http_rate_limit_state_t;


typedef struct {
    int                          allowed;
    ngx_http_rate_limit_state_t  state;     /* to store when allowed */
    uint64_t                     remaining; /* whole tokens left after it */
    int64_t                      retry_after_us;  /* when rejected: until
                                                     cost fits */
    int64_t                      reset_us;  /* until the bucket is full */
} ngx_http_rate_limit_decision_t;


/*
 * Parses "100r/m", "10r/s", "5r/30s", "1r/d", "3r/500ms".  The period
 * units are ms, s, m, h and d, with an optional whole multiplier.  On error
 * writes a message naming the problem into err (errlen bytes, NUL ended).
 */
int ngx_http_rate_limit_parse_rate(const char *text, size_t len,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Derives the bucket parameters; burst 0 means "the count in rate".
 * Rejects rates faster than NGX_HTTP_RATE_LIMIT_MAX_PER_SEC and buckets
 * whose full refill would not fit the arithmetic.
 */
int ngx_http_rate_limit_make_params(const ngx_http_rate_limit_rate_t *rate,
    uint64_t burst, ngx_http_rate_limit_params_t *params, char *err,
    size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * GCRA token bucket.  stored is the bucket's state, NULL (or a TAT of 0)
 * for a key never seen: a full bucket.  The caller stores d->state,
 * whatever the verdict (see below), unless it equals what was stored.  The
 * same arithmetic runs in the Redis script.  The interval counts as whole
 * microseconds (rounded half up), so exactly burst tokens fit at one
 * instant; a cost above burst is always rejected, with retry_after_us =
 * reset_us + one interval.
 *
 * A limit changed since the state was stored (another rate, from the
 * bucket API, PostgreSQL, the policy file or a reload): the tokens used
 * are carried over, counted in the token length of the stored code and
 * capped at the new burst, and refill at the new rate from then on.
 * Since a code stands for a token length at most 3.5% longer than the
 * true one, the tokens carried over are never more than those used, and
 * at most 3.5% fewer.  Whatever was stored, a client never waits longer
 * than the new limit's full refill, give or take a second: a time until
 * full more than a second beyond burst tokens is capped at burst tokens
 * (within the second, it is the clocks of the workers that differ).  A
 * rejection takes nothing, but when the state was read otherwise than
 * stored (converted, capped, or without a code), d->state is the state as
 * read, in the code of params, so that the wait it reports holds; else
 * d->state is *stored.  An allowed d->state carries the code of params.
 * A stored code beyond the last reads as NONE.
 */
void ngx_http_rate_limit_decide(const ngx_http_rate_limit_params_t *params,
    const ngx_http_rate_limit_state_t *stored, int64_t now_us, uint64_t cost,
    ngx_http_rate_limit_decision_t *d)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Gives back cost tokens taken by an allowed decision: returns the new
 * state, read as decide() reads it and with the code of params; a bucket
 * that becomes full has the TAT now_us.
 */
ngx_http_rate_limit_state_t ngx_http_rate_limit_refund(
    const ngx_http_rate_limit_params_t *params,
    const ngx_http_rate_limit_state_t *stored, int64_t now_us, uint64_t cost)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Token codes: a token length of 1 to 10^15 whole microseconds in three
 * decimal digits, on a log scale.  Code c (1 to
 * NGX_HTTP_RATE_LIMIT_TOKEN_CODES) stands for RATIO^(c - 1) microseconds,
 * computed as c - 1 multiplications of 1 by RATIO in doubles, the same in
 * the core and in the scripts so that both get the very same numbers;
 * RATIO is 10^(15/998), spelt with 17 significant digits.
 */
#define NGX_HTTP_RATE_LIMIT_TOKEN_CODE_NONE   0
#define NGX_HTTP_RATE_LIMIT_TOKEN_CODES       999
#define NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO  1.0352138175434404

/*
 * The smallest code that stands for token_us or more, so that the token
 * length read back is never shorter than the true one, and shorter than
 * RATIO times it.  Token lengths outside [1, 10^15] get the code of the
 * nearest end.
 */
uint32_t ngx_http_rate_limit_token_code(int64_t token_us)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the microseconds code stands for; 0 for NONE and codes beyond the last */
double ngx_http_rate_limit_token_code_us(uint32_t code)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Writes the key as stored: itself when it is at most
 * NGX_HTTP_RATE_LIMIT_KEY_MAX bytes and does not start with '#', else '#'
 * and its SHA-1 in hex.  out must hold NGX_HTTP_RATE_LIMIT_KEY_MAX bytes.
 * Returns the length written: 0 for no key, or when libcrypto could not
 * compute the SHA-1 (see ngx_http_rate_limit_sha1_hex()).
 */
size_t ngx_http_rate_limit_encode_key(const unsigned char *key, size_t len,
    unsigned char *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * SHA-1 of data in lower case hex, NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1 bytes,
 * from libcrypto's EVP_Digest().  Should libcrypto fail (it cannot fetch
 * SHA-1, or allocate), out is the empty string: no Redis script has that
 * name, so EVALSHA meets NOSCRIPT and the decision fails as on_failure
 * says.
 */
void ngx_http_rate_limit_sha1_hex(const unsigned char *data, size_t len,
    char *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The Lua decision script for Redis and its SHA-1.  KEYS are the bucket
 * keys; ARGV holds, for each key, interval_us, burst, cost and the token
 * code of the limit (ngx_http_rate_limit_token_code() of its token_us).
 * The reply is an array: the overall verdict (1 allowed, 0 rejected), then
 * for each key allowed, remaining, retry_after_us and reset_us.  No key is
 * written unless every key allows.
 *
 * A key holds its state as one integer, so that Redis keeps it
 * integer-encoded, as small as a plain TAT: "-" then TAT * 1000 + code, 20
 * characters at most until the year 2262.  The sign tells it from the
 * plain TAT that the versions before the code wrote, which is read as
 * counted in the limit in force and written in the new form when the
 * bucket is next written; and a version before the code, during a rolling
 * upgrade, reads the new form as a full bucket rather than as a TAT
 * thousands of years ahead.  Any value that is neither is a full bucket.
 */
const char *ngx_http_rate_limit_script(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *ngx_http_rate_limit_script_sha1(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The same decision for exactly one key, cheaper for Redis to run: same
 * arguments, same reply, same arithmetic.  The module sends it whenever a
 * script call holds one key.
 */
const char *ngx_http_rate_limit_script_one(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *ngx_http_rate_limit_script_one_sha1(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The decisions of several requests in one call, in order, each all or
 * nothing on its own.  ARGV[1] is the number of requests; then, for each,
 * its number of keys and the values of each key as above.  KEYS holds the
 * requests' keys in turn.  The reply is the decision script's reply for
 * each request, one after the other.
 */
const char *ngx_http_rate_limit_batch_script(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *ngx_http_rate_limit_batch_script_sha1(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Per-client limits: from PostgreSQL, from the policy file and from the
 * bucket API.  Unlike nginx.conf, these may deliberately say 0 ("0r/s" or
 * burst 0) to block a client altogether.
 */

/*
 * What decide() and the script answer in retry_after_us for a blocked
 * client.  A blocked bucket never refills, so there is no true wait to
 * report; 0 would read as "retry now" and invite a tight retry loop, while
 * hours would keep well-behaved clients away long after an operator lifts
 * the block.  A minute is the usual back-off, and about how soon a changed
 * policy takes effect.  A plain literal: the script text is built from it.
 */
#define NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US  60000000

/* one token a microsecond refilled over 10^15 us: no bucket holds more */
#define NGX_HTTP_RATE_LIMIT_BURST_MAX  1000000000000000ULL

/*
 * As ngx_http_rate_limit_parse_rate(), but a count of 0 ("0r/s", "0r/m")
 * is accepted: it blocks the client.  For per-client limits only;
 * nginx.conf goes on refusing 0 through ngx_http_rate_limit_parse_rate().
 */
int ngx_http_rate_limit_parse_rate_allow_zero(const char *text, size_t len,
    ngx_http_rate_limit_rate_t *rate, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * As ngx_http_rate_limit_make_params() for a per-client limit, except that
 * burst is taken as given (the policy file and the bucket API already put
 * the rate's count in place of a missing burst): a rate count of 0 or a
 * burst of 0 yields blocked parameters, interval_us 0 and burst 0, which
 * make_params() never yields.  A rate with a positive count must still be
 * one that make_params() accepts, even when burst 0 blocks it.
 *
 * decide() rejects every request of blocked parameters, whatever the cost
 * and the stored TAT, with remaining 0, reset_us 0, retry_after_us
 * NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US and tat_us unchanged;
 * refund() gives back nothing.  The script does the same for a key whose
 * interval or burst argument is 0 (send the rounded interval, as the
 * module does, and blocked parameters send "0" for both): it neither reads
 * nor writes that key, and as a rejection it writes no other key either.
 */
int ngx_http_rate_limit_make_params_blocking(
    const ngx_http_rate_limit_rate_t *rate, uint64_t burst,
    ngx_http_rate_limit_params_t *params, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* 1 when decide() blocks every request of params (see above), else 0 */
int ngx_http_rate_limit_params_blocked(
    const ngx_http_rate_limit_params_t *params)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The whole microseconds a token takes, as decide() and the scripts count
 * them: the interval rounded half up, within [1, 10^15].
 */
int64_t ngx_http_rate_limit_token_us(const ngx_http_rate_limit_params_t *params)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* where a client's effective limit came from, weakest first */
typedef enum {
    NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT = 0,     /* the zone in nginx.conf */
    NGX_HTTP_RATE_LIMIT_SOURCE_YAML,            /* the policy file */
    NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES
} ngx_http_rate_limit_source_e;

/* "default", "yaml" or "postgres", for headers, logs and the API */
const char *ngx_http_rate_limit_source_name(
    ngx_http_rate_limit_source_e source)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The policy file, YAML:
 *
 *     zones:
 *       api:
 *         clients:
 *           partner-acme: { rate: 1000r/m, burst: 200 }
 *           trial-42:     { rate: 10r/m }      # burst: the rate's count
 *           blocked-bot:  { rate: 0r/s }       # blocked
 *
 * Zone names must pass ngx_http_rate_limit_valid_zone_name(); whether
 * the zone exists is for the module to say, and each entry carries the
 * place of its client key for the module's message.  Client keys are
 * arbitrary non-empty strings of at most NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX
 * bytes.
 */
typedef struct ngx_http_rate_limit_policy_s  ngx_http_rate_limit_policy_t;

typedef struct {
    const char                  *zone;        /* also NUL ended */
    size_t                       zone_len;
    const unsigned char         *key;         /* NUL ended, may hold NULs */
    size_t                       key_len;
    ngx_http_rate_limit_rate_t   rate;        /* count 0: blocked */
    uint64_t                     burst;       /* 0: blocked */
    size_t                       line;        /* of the client key, 1-based */
    size_t                       column;      /* in characters, 1-based */
} ngx_http_rate_limit_policy_entry_t;

/* larger files are refused unread */
#define NGX_HTTP_RATE_LIMIT_POLICY_MAX_SIZE  (64 * 1024 * 1024)

/*
 * Room for a policy error: "PATH:LINE:COLUMN: " and a message that fits
 * NGX_HTTP_RATE_LIMIT_ERR_LEN, for a path of up to 4096 bytes.
 */
#define NGX_HTTP_RATE_LIMIT_POLICY_ERR_LEN  (4096 + 64 \
                                             + NGX_HTTP_RATE_LIMIT_ERR_LEN)

/*
 * Reads and checks the whole file; *policy is written only on success and
 * must be given back with ngx_http_rate_limit_policy_free().  An empty
 * file, or "zones: {}", is an empty policy.  Errors are written as
 * "PATH:LINE:COLUMN: what was expected" (1-based), or "PATH: reason" when
 * the file cannot be read.  Every entry has already passed
 * ngx_http_rate_limit_make_params_blocking().
 */
int ngx_http_rate_limit_policy_load(const char *path,
    ngx_http_rate_limit_policy_t **policy, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* the number of entries; 0 for NULL */
size_t ngx_http_rate_limit_policy_size(
    const ngx_http_rate_limit_policy_t *policy)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Entry i, in (zone, key) order compared bytewise as unsigned bytes (a
 * shorter string first when it is a prefix), so that C can binary-search
 * them or copy them in order; (zone, key) pairs are unique.  The pointers
 * stay valid until ngx_http_rate_limit_policy_free().  An i at or beyond
 * the size gives an all-zero entry.
 */
void ngx_http_rate_limit_policy_entry(
    const ngx_http_rate_limit_policy_t *policy, size_t i,
    ngx_http_rate_limit_policy_entry_t *entry)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* a zone named in the file, with or without clients, for checking */
typedef struct {
    const char                  *name;        /* also NUL ended */
    size_t                       name_len;
    size_t                       line;        /* of the zone name, 1-based */
    size_t                       column;
} ngx_http_rate_limit_policy_zone_t;

/* the zones in the order of the file */
size_t ngx_http_rate_limit_policy_zones(
    const ngx_http_rate_limit_policy_t *policy)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* zone i; an i at or beyond the count gives an all-zero zone */
void ngx_http_rate_limit_policy_zone(
    const ngx_http_rate_limit_policy_t *policy, size_t i,
    ngx_http_rate_limit_policy_zone_t *zone)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/* NULL is allowed */
void ngx_http_rate_limit_policy_free(ngx_http_rate_limit_policy_t *policy)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/* the body of a bucket API request, {"key": ..., "rate": ..., "burst": ...} */
typedef struct {
    unsigned char                key[NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX];
    size_t                       key_len;     /* 0: the body had no key */
    ngx_http_rate_limit_rate_t   rate;        /* count 0: blocked */
    uint64_t                     burst;       /* the rate's count if absent */
} ngx_http_rate_limit_bucket_body_t;

/*
 * Parses a bucket API body: a JSON object with "rate" (a string such as
 * "10r/s", "0r/s" blocks), an optional "burst" (a whole number from 0 to
 * NGX_HTTP_RATE_LIMIT_BURST_MAX, 0 blocks) and "key" (a non-empty string of
 * at most NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX bytes of UTF-8, which may hold
 * NUL from "\u0000"), which is required when require_key is not 0 (POST) and
 * optional otherwise (PUT: the caller decides what a key in the body
 * means).  Anything else is refused with NGX_HTTP_RATE_LIMIT_EINVAL and a
 * message naming the problem: malformed JSON, trailing data, another type,
 * an unknown or repeated field, a rate and burst that
 * ngx_http_rate_limit_make_params_blocking() refuses.  Byte positions in
 * messages count from 1.  *out is written only on success.
 */
int ngx_http_rate_limit_parse_bucket_body(const char *body, size_t len,
    int require_key, ngx_http_rate_limit_bucket_body_t *out, char *err,
    size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Writes in as the inside of a JSON string, without the quotes, and
 * returns the length written, which ngx_http_rate_limit_json_escape_len()
 * gives beforehand (at most 6 * len).  Well-formed UTF-8 is copied as it
 * is, except U+2028 and U+2029, written as \u2028 and \u2029 so that the
 * output is safe in JavaScript too; '"' and '\' are escaped, control
 * characters and DEL become \n, \t and the like or \u00XX.  Each byte that
 * is not part of well-formed UTF-8 (a stray continuation byte, a cut or
 * overlong sequence, a surrogate, beyond U+10FFFF) becomes \u00XX of its
 * own value: the output is always valid JSON, the byte can still be told,
 * and it shows as the Latin-1 character of that value.
 */
size_t ngx_http_rate_limit_json_escape(const unsigned char *in, size_t len,
    unsigned char *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
size_t ngx_http_rate_limit_json_escape_len(const unsigned char *in,
    size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;



/*
 * The SQL that creates the per-client limits table, its deletion log and
 * its trigger, if missing: config/rate_limit_schema.sql, word for word.
 */
const char *ngx_http_rate_limit_pg_schema(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The largest size accepted: nginx's NGX_MAX_SIZE_T_VALUE on 64-bit
 * systems, so that any accepted size fits ssize_t and off_t.
 */
#define NGX_HTTP_RATE_LIMIT_SIZE_MAX  INT64_MAX

/*
 * Parses the SIZE of zone=NAME:SIZE as nginx's ngx_parse_size() reads it:
 * decimal digits and an optional k, m or g (either case) for KiB, MiB or
 * GiB.  Nothing else: no white space, sign, fraction or other unit.  0 and
 * sizes beyond NGX_HTTP_RATE_LIMIT_SIZE_MAX are refused too, with a
 * message in err (errlen bytes, NUL ended); *bytes is written only on
 * success.
 */
int ngx_http_rate_limit_parse_size(const char *text, size_t len,
    uint64_t *bytes, char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * The node registry's heartbeat, for EVAL: KEYS[1] the registry (a sorted
 * set), ARGV[1] the node's id, ARGV[2] the milliseconds of silence after
 * which a node no longer counts.  It replies with the live node count.
 */
const char *ngx_http_rate_limit_nodes_script(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


/*
 * Redis Cluster routing.  Each key lives in one of 16384 slots, and each
 * slot on one master.  Debian packages no cluster-aware hiredis, so the
 * module keeps its own map of slots to masters, fills it from CLUSTER
 * SLOTS, and follows the MOVED and ASK redirects.
 */

#define NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS      16384
#define NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES  64
#define NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX   64    /* bytes incl. NUL */

/* the slot_node[] entry of a slot that no master serves */
#define NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE    0xff

/*
 * The slot of a key as Redis computes it: CRC16 (XMODEM) of the key modulo
 * 16384.  When the key has a hash tag, the bytes between its first '{'
 * and the first '}' after it, only the tag is hashed, so that keys that
 * must meet in one script can be put in one slot; "{}" tags nothing, and
 * the whole key is hashed then.
 */
unsigned ngx_http_rate_limit_cluster_slot(const unsigned char *key,
    size_t len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

typedef enum {
    NGX_HTTP_RATE_LIMIT_REDIRECT_NONE = 0,
    NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED,   /* the slot moved for good */
    NGX_HTTP_RATE_LIMIT_REDIRECT_ASK      /* this command only: ASKING */
} ngx_http_rate_limit_redirect_e;

typedef struct {
    ngx_http_rate_limit_redirect_e  kind;
    unsigned                        slot;
    char                            host[NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX];
    unsigned                        port;
} ngx_http_rate_limit_redirect_t;

/*
 * Reads the text of an error reply (without hiredis' leading '-'):
 * "MOVED 3999 127.0.0.1:6381", "ASK 3999 ::1:6381" (Redis writes IPv6
 * unbracketed; "[::1]:6381" is read too).  An empty host, or "?", is how
 * Redis 7 writes an endpoint it does not know: host is then "", meaning
 * the host of the node that replied.  Any other error, and any malformed
 * redirect (a slot beyond 16383, a port of 0 or beyond 65535, a host of
 * NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX bytes or more or with spaces or
 * control characters, anything after the port), gives
 * NGX_HTTP_RATE_LIMIT_REDIRECT_NONE and an all-zero *out.
 */
ngx_http_rate_limit_redirect_e ngx_http_rate_limit_cluster_redirect(
    const char *str, size_t len, ngx_http_rate_limit_redirect_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

typedef struct {
    char                            host[NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX];
    unsigned                        port;
} ngx_http_rate_limit_cluster_node_t;

typedef struct {
    ngx_http_rate_limit_cluster_node_t
                   nodes[NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES];
    unsigned       nnodes;
    /* an index into nodes, or NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE */
    unsigned char  slot_node[NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS];
} ngx_http_rate_limit_cluster_map_t;

/* hiredis' reply; only the core's sources need its definition */
struct redisReply;

/*
 * Reads a CLUSTER SLOTS reply into *map: each range is routed to its
 * master, the first node listed (replicas are not used), and a master
 * that serves several ranges is one node.  A master whose host is "",
 * "?" or nil (an endpoint Redis does not know) gets replying_host, the
 * host the command was sent to.  Ranges may come in any order, as Redis
 * before 7.0 lists them node by node; slots that no range covers are
 * NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE.  Any malformed reply (another
 * type anywhere, a range out of bounds, with its end before its start or
 * overlapping another, a port of 0 or beyond 65535, a host too long or
 * with spaces or control characters, more than
 * NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES masters) gives -1 and a message
 * in err (errlen bytes, NUL ended); any tree of redisReply is safe to
 * pass.  *map is written only on success, which returns 0.
 */
int ngx_http_rate_limit_cluster_parse_slots(const struct redisReply *reply,
    const char *replying_host, ngx_http_rate_limit_cluster_map_t *map,
    char *err, size_t errlen)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * Checks the reply of the decision script (see ngx_http_rate_limit_script())
 * for nkeys keys: an array of 1 + 4 * nkeys integers, none negative, the
 * verdict and the keys' allowed flags 0 or 1, the verdict 1 exactly when
 * every key allows.  Then fills allowed, remaining, retry_after_us and
 * reset_us of out[0 .. nkeys - 1] and returns 0; state is left as it is,
 * since the script keeps the state in Redis.  Anything else returns -1 and
 * writes nothing.
 */
int ngx_http_rate_limit_parse_script_reply(const struct redisReply *reply,
    size_t nkeys, ngx_http_rate_limit_decision_t *out)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;

/*
 * The Lua refund script for Redis and its SHA-1.  In a cluster the limits
 * of one request may live on different masters, so one script cannot
 * decide them all or nothing: each master decides its own keys, and when
 * one rejects, the tokens that the others took are given back with this
 * script.  KEYS[1] is the bucket, ARGV the interval_us, burst, cost and
 * token code texts that the decision script was sent for it.  The twin of
 * ngx_http_rate_limit_refund(), on Redis' clock: a bucket that becomes
 * full is deleted, as a missing key reads as full, and otherwise its TTL
 * is set again to the time until full.  Blocked parameters (an interval
 * or burst of 0) are left alone.  The reply is the integer 1.
 */
const char *ngx_http_rate_limit_refund_script(size_t *len)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;
const char *ngx_http_rate_limit_refund_script_sha1(void)
    NGX_HTTP_RATE_LIMIT_NOEXCEPT;


#ifdef __cplusplus
}
#endif


#endif /* _NGX_HTTP_RATE_LIMIT_CORE_H_INCLUDED_ */
