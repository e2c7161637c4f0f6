/*
 * The check of one request (see rl_check.h): what the nginx handler used
 * to do between evaluating the keys and pushing the headers.  It runs on
 * every request: no heap, no std::string, no printf on the passing path,
 * one hash of each key for all the store's calls about it.
 */

#include <rl_check.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>


namespace {

/* one limit applied to one request; its verdict's input is apart, in the
 * array that rl_verdict_judge() reads */
struct Limit {
    rl_zone_t                     *zone;
    const unsigned char           *key;          /* as nginx evaluated it */
    size_t                         key_len;
    rl_store_key_t                 store_key;    /* as stored, hashed */
    const char                    *cost_text;
    size_t                         cost_text_len;
    ngx_http_rate_limit_rate_t     rate;         /* in force, as written */
    const rl_zone_texts_t         *texts;        /* of Redis's arguments */
    ngx_http_rate_limit_source_e   source;
    rl_redis_key_t                *redis_key;    /* while Redis decides */
    unsigned char                  redis;
};

}  // namespace


struct rl_check_s {
    const rl_check_host_t         *host;
    rl_api_alloc_t                 alloc;
    void                         (*done)(void *data);
    void                          *data;
    Limit                         *limits;
    rl_verdict_limit_t            *in;           /* one for each limit */
    rl_verdict_limit_out_t        *out;
    unsigned char                 *text;         /* of the headers */
    size_t                         n;
    size_t                         capacity;
    size_t                         nredis;
    rl_redis_request_t            *request;      /* in flight */
    int64_t                        asked_us;
};


namespace {

constexpr int  log_warn = RL_REDIS_LOG_WARN;

/*
 * The headers' text: RateLimit-Policy lists every limit, "name";q=Q;w=W
 * and a comma; RateLimit one, "name";r=R;t=T; then four numbers.
 */
constexpr size_t  text_fixed = NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX
                               + sizeof("\"\";r=;t=") - 1
                               + 6 * RL_ZONE_DECIMAL_LEN;
constexpr size_t  text_per_limit = NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX
                                   + sizeof(", \"\";q=;w=") - 1
                                   + 2 * RL_ZONE_DECIMAL_LEN;


constexpr size_t align8(size_t n) noexcept
{
    return (n + 7) & ~size_t(7);
}


/* the host's allocator gives bytes, not aligned ones */
void *alloc_aligned(const rl_api_alloc_t &a, size_t size) noexcept
{
    auto *p = static_cast<unsigned char *>(a.alloc(a.data, size + 7));

    if (p == nullptr) {
        return nullptr;
    }

    return p + (-reinterpret_cast<uintptr_t>(p) & 7);
}


int64_t now_us(const rl_check_t *c) noexcept
{
    return c->host->now_us(c->data);
}


/* msg as snprintf() wrote it, len as it returned: cut where it cut */
template <size_t N>
void log_line(const rl_check_t *c, int level, const char (&msg)[N], int len)
    noexcept
{
    if (len > 0) {
        c->host->log(c->data, level, msg,
                     std::min(static_cast<size_t>(len), N - 1));
    }
}


/*
 * Local limits are taken all or nothing: when one rejects, the tokens the
 * others took are given back (by rl_check_finish()).  True when a local
 * limit rejected and nothing more needs asking.
 */
bool take_local(rl_check_t *c, int64_t now) noexcept
{
    for (size_t i = 0; i < c->n; i++) {
        Limit               &l = c->limits[i];
        rl_verdict_limit_t  &in = c->in[i];

        if (l.redis) {
            continue;
        }

        if (rl_store_take(&l.zone->store, &l.store_key, &in.params, in.cost,
                          now, &in.decision)
            != RL_STORE_OK)
        {
            if (!l.zone->full_logged) {
                l.zone->full_logged = 1;

                char  msg[192];
                int   len = std::snprintf(msg, sizeof(msg),
                                "rate_limit_zone \"%.*s\" is full: new keys "
                                "follow its \"on_failure\" policy until "
                                "buckets expire",
                                static_cast<int>(l.zone->name_len),
                                reinterpret_cast<const char *>(
                                    l.zone->name));
                log_line(c, log_warn, msg, len);
            }

            in.failed = 1;
            continue;
        }

        in.decided = 1;

        if (!in.decision.allowed) {
            return true;
        }

        in.taken = 1;
    }

    return false;
}


/*
 * A key that Redis rejected a moment ago is rejected again here, until
 * the time Redis gave, which it cannot have moved: the cache never lets
 * through what Redis would reject.  The other limits are not asked.
 */
bool take_blocked(rl_check_t *c, int64_t now) noexcept
{
    for (size_t i = 0; i < c->n; i++) {
        Limit               &l = c->limits[i];
        rl_verdict_limit_t  &in = c->in[i];

        if (l.redis
            && rl_store_blocked(&l.zone->store, &l.store_key, in.cost,
                                ngx_http_rate_limit_token_us(&in.params), now,
                                &in.decision))
        {
            in.decided = 1;
            return true;
        }
    }

    return false;
}


/*
 * While Redis cannot answer, an on_failure=local zone decides in this
 * node's shared memory, its limit divided among the live nodes so that the
 * fleet as a whole stays near it.  All or nothing, as take_local().  A
 * limit whose zone is full stays failed, and passes as with open.
 */
void take_degraded(rl_check_t *c, const rl_redis_shared_t *shared) noexcept
{
    /* Redis answers most requests: the clock is read for the others only */
    int64_t  now = 0;

    for (size_t i = 0; i < c->n; i++) {
        Limit               &l = c->limits[i];
        rl_verdict_limit_t  &in = c->in[i];

        if (!in.failed || !l.redis
            || l.zone->on_failure != RL_ZONE_FAILURE_LOCAL)
        {
            continue;
        }

        ngx_http_rate_limit_params_t  params = in.params;

        if (!ngx_http_rate_limit_params_blocked(&params)) {
            /* never 0, even before any heartbeat */
            const uint64_t  nodes = std::max<uint64_t>(
                shared ? rl_redis_shared_nodes(shared) : 0, 1);

            params.interval_us *= static_cast<double>(nodes);
            params.burst = std::max<uint64_t>(params.burst / nodes, 1);
        }

        if (now == 0) {
            now = now_us(c);
        }

        if (rl_store_take(&l.zone->store, &l.store_key, &params, in.cost,
                          now, &in.decision)
            != RL_STORE_OK)
        {
            continue;
        }

        in.params = params;
        in.failed = 0;
        in.decided = 1;
        in.degraded = 1;

        if (!in.decision.allowed) {
            return;
        }

        in.taken = 1;
    }
}


void redis_done(void *data) noexcept;


/* no key is on its way */
bool not_asked(rl_check_t *c) noexcept
{
    c->request = nullptr;

    for (size_t i = 0; i < c->n; i++) {
        c->limits[i].redis_key = nullptr;
    }

    return false;
}


/*
 * The Redis limits go to the client in one call.  True: done() follows;
 * false: no key is on its way (no client, no memory, no connection), and
 * the Redis limits fail.
 */
bool ask_redis(rl_check_t *c, rl_redis_client_t *client, int64_t now) noexcept
{
    if (client == nullptr) {
        return false;
    }

    auto *keys = static_cast<rl_redis_key_t *>(
        alloc_aligned(c->alloc, c->nredis * sizeof(rl_redis_key_t)));
    if (keys == nullptr) {
        return false;
    }

    size_t  n = 0;

    for (size_t i = 0; i < c->n; i++) {
        Limit  &l = c->limits[i];

        if (!l.redis || c->in[i].failed) {
            continue;
        }

        const rl_zone_t  &zone = *l.zone;

        /* "<prefix>:<zone>:<key>" */
        auto *p = static_cast<unsigned char *>(
            c->alloc.alloc(c->alloc.data, zone.redis_prefix_len
                                          + l.store_key.len));
        if (p == nullptr) {
            return not_asked(c);
        }

        std::memcpy(p, zone.redis_prefix, zone.redis_prefix_len);
        std::memcpy(p + zone.redis_prefix_len, l.store_key.data,
                    l.store_key.len);

        rl_redis_key_t  &key = keys[n++];

        key.key = p;
        key.key_len = zone.redis_prefix_len + l.store_key.len;
        key.interval = l.texts->interval;
        key.interval_len = l.texts->interval_len;
        key.burst = l.texts->burst;
        key.burst_len = l.texts->burst_len;
        key.cost = l.cost_text;
        key.cost_len = l.cost_text_len;
        key.token_code = l.texts->token_code;
        key.token_code_len = l.texts->token_code_len;
        key.status = RL_REDIS_KEY_PENDING;

        l.redis_key = &key;
    }

    if (n == 0) {
        return false;
    }

    /* before Redis reads its clock: see remember() */
    c->asked_us = now;

    return rl_redis_decide(client, keys, n, redis_done, c, &c->request)
               == RL_REDIS_OK
           || not_asked(c);
}


/*
 * A rejection is kept in the zone's shared memory, so that the node's
 * next requests of the key are rejected without a round trip.  Times
 * count from when the request was asked, before Redis read its clock: the
 * cache may forget a rejection early, never hold one too long.
 */
void remember(rl_check_t *c, size_t i) noexcept
{
    const rl_verdict_limit_t              &in = c->in[i];
    const ngx_http_rate_limit_decision_t  &d = in.decision;

    if (ngx_http_rate_limit_params_blocked(&in.params)) {
        return;
    }

    /* until a request of cost 1 fits: the cache serves every cost */
    const int64_t  first_us = d.retry_after_us
                              - static_cast<int64_t>(in.cost - 1)
                                * ngx_http_rate_limit_token_us(&in.params);

    /* a wait shorter than the clock's millisecond is not worth keeping */
    if (first_us < 2000) {
        return;
    }

    const Limit  &l = c->limits[i];

    rl_store_block(&l.zone->store, &l.store_key, c->asked_us + first_us,
                   c->asked_us + d.reset_us, now_us(c));
}


/* every key is decided or failed: the request goes on */
void redis_done(void *data) noexcept
{
    auto *c = static_cast<rl_check_t *>(data);

    c->request = nullptr;

    for (size_t i = 0; i < c->n; i++) {
        Limit               &l = c->limits[i];
        rl_verdict_limit_t  &in = c->in[i];

        if (l.redis_key == nullptr) {
            continue;
        }

        if (l.redis_key->status == RL_REDIS_KEY_DECIDED) {
            in.decision = l.redis_key->decision;
            in.decided = 1;

            if (!in.decision.allowed) {
                remember(c, i);
            }

        } else {
            in.failed = 1;
            in.decided = 0;
        }

        l.redis_key = nullptr;
    }

    c->done(c->data);
}


/*
 * n in decimal, written at p; returns the end.  Every response carries
 * several numbers: the length comes from the highest bit, not a loop, and
 * the digits two a division, written in place from the end.
 */
unsigned char *decimal(unsigned char *p, uint64_t n) noexcept
{
    static constexpr char  pairs[] =
        "00010203040506070809101112131415161718192021222324252627282930313233"
        "34353637383940414243444546474849505152535455565758596061626364656667"
        "6869707172737475767778798081828384858687888990919293949596979899";

    static constexpr uint64_t  powers[] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL,
        10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL,
        100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL,
        10000000000000000000ULL
    };

    if (n < 10) {
        *p = static_cast<unsigned char>('0' + n);
        return p + 1;
    }

    /* log10 from log2: 1233 / 4096 is just above log10(2) */
    const unsigned  bits = 64 - static_cast<unsigned>(__builtin_clzll(n));
    const unsigned  t = (bits * 1233) >> 12;
    unsigned char  *last = p + t + (n >= powers[t]);

    p = last;

    while (n >= 100) {
        const uint64_t  pair = n % 100 * 2;

        n /= 100;
        p -= 2;
        std::memcpy(p, pairs + pair, 2);
    }

    if (n >= 10) {
        std::memcpy(p - 2, pairs + n * 2, 2);

    } else {
        p[-1] = static_cast<unsigned char>('0' + n);
    }

    return last;
}


unsigned char *copy(unsigned char *p, const void *data, size_t len) noexcept
{
    std::memcpy(p, data, len);
    return p + len;
}


template <size_t N>
unsigned char *text(unsigned char *p, const char (&s)[N]) noexcept
{
    return copy(p, s, N - 1);
}


/* the next header at h */
template <size_t N>
rl_check_header_t *add_header(rl_check_header_t *h, const char (&name)[N],
    const unsigned char *value, const unsigned char *last) noexcept
{
    h->name_len = N - 1;
    h->name = name;
    h->value_len = static_cast<size_t>(last - value);
    h->value = value;

    return h + 1;
}


/*
 * The headers of draft-ietf-httpapi-ratelimit-headers-11, and the older
 * X-RateLimit-* and Retry-After, from the verdict's numbers.
 * RateLimit-Policy lists every limit the request went through, in the
 * order of its lines, so that it stays the same from one response to the
 * next; RateLimit, as the draft's B.1.2 allows, only the closest.  A limit
 * that Redis failed to decide, and that this node does not decide either,
 * enforces nothing now and is left out.
 */
void write_headers(const rl_check_t *c, const rl_verdict_t &v,
    rl_check_result_t *result) noexcept
{
    /* a number the headers repeat is written once, its bytes shared */
    struct Number {
        const unsigned char  *first = nullptr;
        const unsigned char  *last = nullptr;
    };

    const rl_zone_t    &zone = *c->limits[v.closest].zone;
    unsigned char      *p = c->text;
    unsigned char      *last = p;
    rl_check_header_t  *h = result->headers;
    Number              quota, remaining, window;

    for (size_t i = 0; i < c->n; i++) {

        if (!c->out[i].listed) {
            continue;
        }

        if (last != p) {
            last = text(last, ", ");
        }

        /* "zone";q=Q;w=W */
        const rl_zone_t  &z = *c->limits[i].zone;

        *last++ = '"';
        last = copy(last, z.name, z.name_len);
        last = text(last, "\";q=");

        unsigned char  *q = last;

        last = decimal(last, c->out[i].quota);

        if (i == v.closest) {
            quota.first = q;
            quota.last = last;
        }

        last = text(last, ";w=");
        last = decimal(last, c->out[i].window_s);
    }

    h = add_header(h, "RateLimit-Policy", p, last);

    /*
     * "zone";r=N;t=N.  A request that can never fit gets no "t": no wait
     * brings it quota.
     */
    p = last;
    *last++ = '"';
    last = copy(last, zone.name, zone.name_len);
    last = text(last, "\";r=");
    remaining.first = last;
    last = decimal(last, v.remaining);
    remaining.last = last;

    if (!v.never_fits) {
        last = text(last, ";t=");
        window.first = last;
        last = decimal(last, v.window_s);
        window.last = last;
    }

    h = add_header(h, "RateLimit", p, last);

    if (quota.first && v.limit == c->out[v.closest].quota) {
        h = add_header(h, "X-RateLimit-Limit", quota.first, quota.last);

    } else {
        p = last;
        last = decimal(p, v.limit);
        h = add_header(h, "X-RateLimit-Limit", p, last);
    }

    h = add_header(h, "X-RateLimit-Remaining", remaining.first,
                   remaining.last);

    if (!v.never_fits) {
        p = last;
        last = decimal(p, v.reset_s);
        h = add_header(h, "X-RateLimit-Reset", p, last);

        if (v.retry_after && v.retry_after_s == v.window_s) {
            h = add_header(h, "Retry-After", window.first, window.last);

        } else if (v.retry_after) {
            p = last;
            last = decimal(p, v.retry_after_s);
            h = add_header(h, "Retry-After", p, last);
        }
    }

    result->nheaders = static_cast<size_t>(h - result->headers);
}


void log_rejection(const rl_check_t *c, const rl_verdict_t &v,
    const rl_check_conf_t &conf) noexcept
{
    const Limit               &l = c->limits[v.closest];
    const rl_verdict_limit_t  &in = c->in[v.closest];
    const int                  name_len = static_cast<int>(l.zone->name_len);
    const char                *name = reinterpret_cast<const char *>(
                                          l.zone->name);
    const char                *degraded = in.degraded
        ? ", decided locally while Redis is unreachable" : "";
    const char                *dry_run = conf.dry_run ? ", dry run" : "";
    const int64_t              retry_us = in.decision.retry_after_us;

    char  msg[256];
    int   len;

    if (v.never_fits) {
        len = std::snprintf(msg, sizeof(msg),
                  "rate limit exceeded in zone \"%.*s\", the cost exceeds "
                  "the burst: no retry can pass%s%s",
                  name_len, name, degraded, dry_run);

    } else {
        len = std::snprintf(msg, sizeof(msg),
                  "rate limit exceeded in zone \"%.*s\", retry in "
                  "%" PRId64 ".%03" PRId64 "s%s%s",
                  name_len, name, retry_us / 1000000,
                  retry_us % 1000000 / 1000, degraded, dry_run);
    }

    log_line(c, static_cast<int>(conf.reject_level), msg, len);
}


/*
 * The operator learns of such a request once a minute for each zone and
 * key, whichever worker of the node served it.  The key may be a
 * credential, and is user input anyway: the log names its SHA-1 only.
 */
void log_never_fits(const rl_check_t *c, const rl_check_conf_t &conf)
    noexcept
{
    /* most rejections fit in time: the clock is read for the others only */
    int64_t  now = 0;

    for (size_t i = 0; i < c->n; i++) {
        if (!c->out[i].never_fits) {
            continue;
        }

        if (now == 0) {
            now = now_us(c);
        }

        const Limit               &l = c->limits[i];
        const rl_verdict_limit_t  &in = c->in[i];
        const int                  name_len =
                                       static_cast<int>(l.zone->name_len);
        const char                *name = reinterpret_cast<const char *>(
                                              l.zone->name);

        const rl_store_nofit_e  nofit = rl_store_nofit(&l.zone->store,
                                                       &l.store_key, now);

        if (conf.log_level < static_cast<uintptr_t>(log_warn)) {
            continue;
        }

        char  msg[384];
        int   len;

        if (nofit == RL_STORE_NOFIT_UNNAMED) {
            len = std::snprintf(msg, sizeof(msg),
                      "rate_limit_zone \"%.*s\": requests whose cost exceeds "
                      "their burst came from more keys in the last minute "
                      "than the log names", name_len, name);
            log_line(c, log_warn, msg, len);
            continue;
        }

        if (nofit != RL_STORE_NOFIT_NAME) {
            continue;
        }

        char  sha1[NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1];

        /* a stored key of '#' and a SHA-1 is the hash of the key given */
        if (l.store_key.len == NGX_HTTP_RATE_LIMIT_HASHED_LEN
            && l.store_key.data[0] == '#')
        {
            std::memcpy(sha1, l.store_key.data + 1,
                        NGX_HTTP_RATE_LIMIT_SHA1_HEX);
            sha1[NGX_HTTP_RATE_LIMIT_SHA1_HEX] = '\0';

        } else {
            ngx_http_rate_limit_sha1_hex(l.store_key.data, l.store_key.len,
                                         sha1);
        }

        len = std::snprintf(msg, sizeof(msg),
                  "rate_limit_zone \"%.*s\": a request of cost %" PRIu64
                  " can never pass for the key of SHA-1 %s, whose burst is "
                  "%" PRIu64 " (%s limit%s): it is rejected without "
                  "Retry-After", name_len, name, in.cost, sha1,
                  in.params.burst, ngx_http_rate_limit_source_name(l.source),
                  in.degraded ? ", divided among the live nodes while Redis "
                                "is unreachable"
                              : "");
        log_line(c, log_warn, msg, len);
    }
}

}  // namespace


extern "C" void
rl_check_finish(rl_check_t *c, const rl_check_conf_t *conf,
    rl_check_result_t *result) noexcept
{
    result->status = static_cast<rl_verdict_status_e>(0);
    result->reject = 0;
    result->nheaders = 0;

    if (c->n == 0) {
        return;
    }

    if (c->nredis) {
        take_degraded(c, conf->shared);
    }

    rl_verdict_t  v;

    rl_verdict_judge(c->in, c->n, conf->dry_run, &v, c->out);

    /* one clock for all the refunds, and none when there is nothing to do */
    int64_t  now = 0;

    for (size_t i = 0; i < c->n; i++) {
        Limit               &l = c->limits[i];
        rl_verdict_limit_t  &in = c->in[i];

        rl_store_count(&l.zone->store, c->out[i].outcome);

        if (c->out[i].refund) {
            if (now == 0) {
                now = now_us(c);
            }

            rl_store_refund(&l.zone->store, &l.store_key, &in.params,
                            in.cost, now);
            in.taken = 0;
        }
    }

    result->status = v.status;
    result->reject = v.reject;

    if (v.rejected) {
        if (conf->log_level >= conf->reject_level) {
            log_rejection(c, v, *conf);
        }

        log_never_fits(c, *conf);
    }

    if (conf->headers && v.closest != RL_VERDICT_NO_LIMIT) {
        write_headers(c, v, result);
    }
}


extern "C" size_t
rl_check_size(size_t nlimits) noexcept
{
    return align8(sizeof(rl_check_t)
                  + nlimits * (sizeof(Limit) + sizeof(rl_verdict_limit_t)
                               + sizeof(rl_verdict_limit_out_t))
                  + text_fixed + nlimits * text_per_limit);
}


extern "C" rl_check_t *
rl_check_init(void *memory, const rl_check_host_t *host,
    const rl_api_alloc_t *alloc, size_t nlimits, void (*done)(void *data),
    void *data) noexcept
{
    /*
     * One block for the object, the verdict's arrays, its limits and the
     * headers' text, as every request takes them all.  Nothing is zeroed:
     * rl_check_add() writes a limit whole and its verdict's input but for
     * the decision, which is read only once decided, and the verdict's
     * output is written before it is read.
     */
    static_assert(sizeof(rl_check_t) % 8 == 0 && sizeof(Limit) % 8 == 0
                  && sizeof(rl_verdict_limit_t) % 8 == 0
                  && sizeof(rl_verdict_limit_out_t) % 8 == 0,
                  "the parts of the block stay aligned");

    auto *c = static_cast<rl_check_t *>(memory);

    c->host = host;
    c->alloc = *alloc;
    c->done = done;
    c->data = data;
    c->in = reinterpret_cast<rl_verdict_limit_t *>(&c[1]);
    c->out = reinterpret_cast<rl_verdict_limit_out_t *>(&c->in[nlimits]);
    c->limits = reinterpret_cast<Limit *>(&c->out[nlimits]);
    c->text = reinterpret_cast<unsigned char *>(&c->limits[nlimits]);
    c->n = 0;
    c->capacity = nlimits;
    c->nredis = 0;
    c->request = nullptr;

    return c;
}


extern "C" int
rl_check_add(rl_check_t *c, rl_zone_t *zone, uint64_t cost,
    const char *cost_text, size_t cost_text_len, const unsigned char *key,
    size_t key_len) noexcept
{
    if (key_len == 0) {
        return RL_CHECK_OK;
    }

    if (c->n == c->capacity) {
        return RL_CHECK_ERROR;
    }

    Limit               &l = c->limits[c->n];
    rl_verdict_limit_t  &in = c->in[c->n];

    c->n++;

    l.zone = zone;
    l.key = key;
    l.key_len = key_len;
    l.cost_text = cost_text;
    l.cost_text_len = cost_text_len;
    l.redis_key = nullptr;
    l.redis = (zone->backend == RL_ZONE_BACKEND_REDIS);
    c->nredis += l.redis;

    in.cost = cost;
    in.decided = 0;
    in.failed = 0;
    in.closed = (zone->on_failure == RL_ZONE_FAILURE_CLOSED);
    in.degraded = 0;
    in.taken = 0;

    /* a key stored as it is needs no copy: it outlives the object */
    const unsigned char  *stored = key;
    size_t                stored_len = key_len;

    if (key_len > NGX_HTTP_RATE_LIMIT_KEY_MAX || key[0] == '#') {
        auto *out = static_cast<unsigned char *>(
            c->alloc.alloc(c->alloc.data, NGX_HTTP_RATE_LIMIT_KEY_MAX));
        if (out == nullptr) {
            return RL_CHECK_ERROR;
        }

        stored = out;
        stored_len = ngx_http_rate_limit_encode_key(key, key_len, out);
    }

    rl_store_key(&zone->store, stored, stored_len, &l.store_key);

    /* the limit in force: a row, else the policy file, else the zone's */
    rl_store_limit_t  spec;

    l.source = rl_store_find_limit(&zone->store, &l.store_key, &spec);

    if (l.source == NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT) {
        in.params = zone->params;
        l.rate = zone->rate;
        l.texts = &zone->texts;
        return RL_CHECK_OK;
    }

    in.params = spec.params;
    l.rate = spec.rate;
    l.texts = &zone->texts;

    if (l.redis) {
        auto *texts = static_cast<rl_zone_texts_t *>(
            c->alloc.alloc(c->alloc.data, sizeof(rl_zone_texts_t)));
        if (texts == nullptr) {
            return RL_CHECK_ERROR;
        }

        rl_zone_texts(&spec.params, texts);
        l.texts = texts;
    }

    return RL_CHECK_OK;
}


extern "C" int
rl_check_decide(rl_check_t *c, rl_redis_client_t *client,
    const rl_check_conf_t *conf, rl_check_result_t *result) noexcept
{
    const int64_t  now = now_us(c);

    if (!take_local(c, now) && c->nredis && !take_blocked(c, now)) {

        if (ask_redis(c, client, now)) {
            return RL_CHECK_WAIT;
        }

        for (size_t i = 0; i < c->n; i++) {
            c->in[i].failed |= c->limits[i].redis;
        }
    }

    rl_check_finish(c, conf, result);

    return RL_CHECK_OK;
}


extern "C" void
rl_check_cancel(rl_check_t *c, rl_redis_client_t *client) noexcept
{
    if (c->request == nullptr) {
        return;
    }

    if (client) {
        rl_redis_cancel(client, c->request);
    }

    c->request = nullptr;
}


extern "C" const char *
rl_check_status_name(rl_verdict_status_e status, size_t *len) noexcept
{
    static constexpr const char  *names[] = {
        "", "PASSED", "REJECTED", "REJECTED_DRY_RUN", "FAILED_OPEN",
        "FAILED_CLOSED", "DEGRADED_LOCAL", "DEGRADED_LOCAL_REJECTED"
    };

    const auto  i = static_cast<size_t>(status);
    const char *name = i < sizeof(names) / sizeof(names[0]) ? names[i] : "";

    *len = std::strlen(name);
    return name;
}


extern "C" int
rl_check_peek(rl_check_t *c, rl_redis_client_t *client) noexcept
{
    if (c->n == 0) {
        return RL_CHECK_OK;
    }

    Limit               &l = c->limits[0];
    rl_verdict_limit_t  &in = c->in[0];

    const int64_t  now = now_us(c);

    if (!l.redis) {
        rl_store_peek(&l.zone->store, &l.store_key, &in.params, now,
                      &in.decision);
        in.decided = 1;
        return RL_CHECK_OK;
    }

    /* a blocked key has no tokens, and Redis is not asked for it */
    if (ngx_http_rate_limit_params_blocked(&in.params)) {
        in.decision.remaining = 0;
        in.decided = 1;
        return RL_CHECK_OK;
    }

    return ask_redis(c, client, now) ? RL_CHECK_WAIT : RL_CHECK_OK;
}


extern "C" int
rl_check_bucket(const rl_check_t *c, const rl_api_alloc_t *alloc,
    rl_api_reply_t *reply) noexcept
{
    if (c->n == 0) {
        return RL_CHECK_ERROR;
    }

    const Limit               &l = c->limits[0];
    const rl_verdict_limit_t  &in = c->in[0];
    rl_api_bucket_t            bucket;

    bucket.zone = l.zone->name;
    bucket.zone_len = l.zone->name_len;
    bucket.key = l.key;
    bucket.key_len = l.key_len;
    bucket.rate = l.rate;
    bucket.burst = in.params.burst;
    bucket.source = ngx_http_rate_limit_source_name(l.source);
    bucket.tokens = in.decided ? static_cast<int64_t>(in.decision.remaining)
                               : -1;

    return rl_api_bucket(&bucket, alloc, reply) == RL_API_OK
           ? RL_CHECK_OK : RL_CHECK_ERROR;
}
