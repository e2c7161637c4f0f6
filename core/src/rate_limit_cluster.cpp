/*
 * Redis Cluster routing, and the check of the decision script's reply.
 *
 * Debian packages no cluster-aware hiredis, so the module routes by
 * itself: it hashes each key to its slot, keeps a map of slots to masters
 * filled from CLUSTER SLOTS, and follows MOVED and ASK.  The parts that
 * read what Redis sends live here rather than in the module so that unit
 * tests and fuzzers can reach them without nginx.
 *
 * Everything that comes from Redis is treated as untrusted: a proxy, a
 * different server speaking RESP, or a bug may send any reply tree, and a
 * wrong map would route every request to the wrong node.  So each parser
 * checks every type, pointer and bound, and writes its output only once
 * the whole reply has been found good.
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"

#include <hiredis/hiredis.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>


using ngx_http_rate_limit::write_error;


namespace {

/*
 * CRC16 as Redis Cluster defines it (XMODEM: polynomial 0x1021, initial
 * value 0, bits not reflected), a byte at a time from a table that the
 * compiler builds.
 */
constexpr std::array<uint16_t, 256> make_crc16_table() noexcept
{
    std::array<uint16_t, 256> table {};

    for (unsigned byte = 0; byte < 256; byte++) {
        unsigned crc = byte << 8;

        for (int bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        }

        table[byte] = static_cast<uint16_t>(crc);
    }

    return table;
}

constexpr std::array<uint16_t, 256> crc16_table = make_crc16_table();


unsigned crc16(const unsigned char *data, size_t len) noexcept
{
    unsigned crc = 0;

    for (size_t i = 0; i < len; i++) {
        crc = ((crc << 8) ^ crc16_table[((crc >> 8) ^ data[i]) & 0xff])
              & 0xffff;
    }

    return crc;
}


/*
 * A decimal number from 0 to max: digits only, so that "+1", " 1" or
 * "1 " from a confused peer are not read as 1.
 */
bool parse_decimal(std::string_view text, unsigned max, unsigned &value)
    noexcept
{
    if (text.empty()) {
        return false;
    }

    unsigned long long n = 0;

    for (const char c : text) {
        if (c < '0' || c > '9') {
            return false;
        }

        n = n * 10 + static_cast<unsigned>(c - '0');

        /* checked at each digit, so that n cannot overflow */
        if (n > max) {
            return false;
        }
    }

    value = static_cast<unsigned>(n);
    return true;
}


/*
 * Copies a host name or address NUL ended into out.  Only printable
 * characters other than space and brackets: the host goes into log lines
 * and to the resolver of the address, and anything else means the reply
 * was not what Redis sends.  An empty host is copied as "".
 */
bool copy_host(std::string_view host,
    char (&out)[NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX]) noexcept
{
    if (host.size() >= sizeof(out)) {
        return false;
    }

    for (const char c : host) {
        if (c <= ' ' || c > '~' || c == '[' || c == ']') {
            return false;
        }
    }

    /* not memcpy: the empty host's data() is NULL, undefined for memcpy */
    host.copy(out, host.size());
    out[host.size()] = '\0';

    return true;
}


/*
 * "" and "?" are what Redis 7 writes for an endpoint it does not know (no
 * address of its own yet, or cluster-preferred-endpoint-type hostname
 * without a hostname): the node is then reached at the address the caller
 * already used.
 */
bool is_unknown_host(std::string_view host) noexcept
{
    return host.empty() || host == "?";
}


/* "host:port" or "[host]:port"; Redis writes IPv6 unbracketed, ":" last */
bool parse_endpoint(std::string_view endpoint,
    ngx_http_rate_limit_redirect_t &out) noexcept
{
    std::string_view host;
    std::string_view port;

    if (!endpoint.empty() && endpoint.front() == '[') {
        const size_t close = endpoint.find(']');

        if (close == std::string_view::npos || close == 1
            || close + 1 >= endpoint.size() || endpoint[close + 1] != ':')
        {
            return false;
        }

        host = endpoint.substr(1, close - 1);
        port = endpoint.substr(close + 2);

    } else {
        const size_t colon = endpoint.rfind(':');

        if (colon == std::string_view::npos) {
            return false;
        }

        host = endpoint.substr(0, colon);
        port = endpoint.substr(colon + 1);
    }

    if (!parse_decimal(port, 65535, out.port) || out.port == 0) {
        return false;
    }

    return copy_host(is_unknown_host(host) ? std::string_view() : host,
                     out.host);
}


ngx_http_rate_limit_redirect_e parse_redirect(std::string_view text,
    ngx_http_rate_limit_redirect_t &out) noexcept
{
    constexpr std::string_view moved = "MOVED ";
    constexpr std::string_view ask = "ASK ";

    std::string_view rest;

    if (text.substr(0, moved.size()) == moved) {
        out.kind = NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED;
        rest = text.substr(moved.size());

    } else if (text.substr(0, ask.size()) == ask) {
        out.kind = NGX_HTTP_RATE_LIMIT_REDIRECT_ASK;
        rest = text.substr(ask.size());

    } else {
        return NGX_HTTP_RATE_LIMIT_REDIRECT_NONE;
    }

    const size_t space = rest.find(' ');

    if (space == std::string_view::npos
        || !parse_decimal(rest.substr(0, space),
                          NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1, out.slot)
        || !parse_endpoint(rest.substr(space + 1), out))
    {
        return NGX_HTTP_RATE_LIMIT_REDIRECT_NONE;
    }

    return out.kind;
}


/*
 * Element i of an array reply, or nullptr when there is none: a tree built
 * by anything but hiredis' reader may hold null pointers.
 */
const redisReply *element_of(const redisReply *array, size_t i) noexcept
{
    if (array == nullptr || array->type != REDIS_REPLY_ARRAY
        || i >= array->elements || array->element == nullptr)
    {
        return nullptr;
    }

    return array->element[i];
}


bool is_integer_within(const redisReply *reply, long long min,
    long long max) noexcept
{
    return reply != nullptr && reply->type == REDIS_REPLY_INTEGER
           && reply->integer >= min && reply->integer <= max;
}


class SlotsParser {
public:
    SlotsParser(const char *replying_host, char *err, size_t errlen,
        ngx_http_rate_limit_cluster_map_t &map) noexcept
        : replying_host_(replying_host), err_(err), errlen_(errlen),
          map_(map)
    {
        map_.nnodes = 0;
        std::memset(map_.slot_node, NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE,
                    sizeof(map_.slot_node));
    }

    bool parse(const redisReply *reply) noexcept
    {
        if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY) {
            write_error(err_, errlen_, "the reply is not an array");
            return false;
        }

        for (size_t i = 0; i < reply->elements; i++) {
            if (!parse_range(element_of(reply, i), i + 1)) {
                return false;
            }
        }

        return true;
    }

private:
    /* [start, end, master, replica...]: only the master is routed to */
    bool parse_range(const redisReply *range, size_t n) noexcept
    {
        const redisReply *start = element_of(range, 0);
        const redisReply *end = element_of(range, 1);
        const redisReply *master = element_of(range, 2);

        if (start == nullptr || end == nullptr || master == nullptr) {
            write_error(err_, errlen_, "range %zu is not an array of "
                        "start, end and master", n);
            return false;
        }

        if (!is_integer_within(start, 0,
                               NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1)
            || !is_integer_within(end, start->integer,
                                  NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1))
        {
            write_error(err_, errlen_, "range %zu: start and end must be "
                        "slots from 0 to %d, start first", n,
                        NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS - 1);
            return false;
        }

        unsigned index;

        if (!node_index(master, n, index)) {
            return false;
        }

        /*
         * Redis before 7.0 lists the ranges node by node, not in slot
         * order, so only overlaps are wrong: a slot served twice would
         * leave the route to chance.
         */
        for (long long slot = start->integer; slot <= end->integer; slot++)
        {
            if (map_.slot_node[slot] != NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE)
            {
                write_error(err_, errlen_, "range %zu: slot %lld is in an "
                            "earlier range too", n, slot);
                return false;
            }

            map_.slot_node[slot] = static_cast<unsigned char>(index);
        }

        return true;
    }

    /*
     * [host, port, id, metadata]: the id and metadata came in later
     * versions, and only host and port are needed.  A master that serves
     * several ranges is one node.
     */
    bool node_index(const redisReply *master, size_t n, unsigned &index)
        noexcept
    {
        const redisReply *host = element_of(master, 0);
        const redisReply *port = element_of(master, 1);

        if (host == nullptr || port == nullptr) {
            write_error(err_, errlen_, "range %zu: the master is not an "
                        "array of host and port", n);
            return false;
        }

        if (!is_integer_within(port, 1, 65535)) {
            write_error(err_, errlen_, "range %zu: the master's port is not "
                        "from 1 to 65535", n);
            return false;
        }

        std::string_view name;

        /* Redis 7 answers nil for an unknown endpoint, as for "" */
        if (host->type == REDIS_REPLY_STRING
            && (host->str != nullptr || host->len == 0))
        {
            name = std::string_view(host->str, host->len);

        } else if (host->type != REDIS_REPLY_NIL) {
            write_error(err_, errlen_, "range %zu: the master's host is not "
                        "a string", n);
            return false;
        }

        if (is_unknown_host(name)) {
            if (replying_host_ == nullptr || replying_host_[0] == '\0') {
                write_error(err_, errlen_, "range %zu: the master has no "
                            "host, and no replying host was given", n);
                return false;
            }

            name = replying_host_;
        }

        ngx_http_rate_limit_cluster_node_t node {};
        node.port = static_cast<unsigned>(port->integer);

        if (!copy_host(name, node.host)) {
            write_error(err_, errlen_, "range %zu: the master's host is "
                        "longer than %d bytes, or holds a space, bracket or "
                        "control character", n,
                        NGX_HTTP_RATE_LIMIT_CLUSTER_HOST_MAX - 1);
            return false;
        }

        for (index = 0; index < map_.nnodes; index++) {
            if (map_.nodes[index].port == node.port
                && std::strcmp(map_.nodes[index].host, node.host) == 0)
            {
                return true;
            }
        }

        if (map_.nnodes == NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES) {
            write_error(err_, errlen_, "range %zu: more than %d masters", n,
                        NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES);
            return false;
        }

        map_.nodes[map_.nnodes++] = node;
        return true;
    }

    const char                          *replying_host_;
    char                                *err_;
    size_t                               errlen_;
    ngx_http_rate_limit_cluster_map_t   &map_;
};


static_assert(NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES
              < NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE,
              "a node index must fit slot_node[] and differ from NO_NODE");

} // namespace


extern "C" unsigned
ngx_http_rate_limit_cluster_slot(const unsigned char *key, size_t len)
    noexcept
{
    /* the empty key's slot, which is also what a missing key gets */
    if (key == nullptr || len == 0) {
        return 0;
    }

    const auto *open = static_cast<const unsigned char *>(
        std::memchr(key, '{', len));

    if (open != nullptr) {
        const size_t after = static_cast<size_t>(open - key) + 1;
        const auto *close = static_cast<const unsigned char *>(
            std::memchr(open + 1, '}', len - after));

        /* "{}" tags nothing: Redis then hashes the whole key */
        if (close != nullptr && close != open + 1) {
            key = open + 1;
            len = static_cast<size_t>(close - key);
        }
    }

    return crc16(key, len) % NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS;
}


extern "C" ngx_http_rate_limit_redirect_e
ngx_http_rate_limit_cluster_redirect(const char *str, size_t len,
    ngx_http_rate_limit_redirect_t *out) noexcept
{
    if (out == nullptr) {
        return NGX_HTTP_RATE_LIMIT_REDIRECT_NONE;
    }

    ngx_http_rate_limit_redirect_t redirect {};

    if (str == nullptr
        || parse_redirect(std::string_view(str, len), redirect)
           == NGX_HTTP_RATE_LIMIT_REDIRECT_NONE)
    {
        *out = ngx_http_rate_limit_redirect_t {};
        return NGX_HTTP_RATE_LIMIT_REDIRECT_NONE;
    }

    *out = redirect;
    return out->kind;
}


extern "C" int
ngx_http_rate_limit_cluster_parse_slots(const struct redisReply *reply,
    const char *replying_host, ngx_http_rate_limit_cluster_map_t *map,
    char *err, size_t errlen) noexcept
{
    try {
        if (map == nullptr) {
            write_error(err, errlen, "internal error: no map given");
            return -1;
        }

        /* a caller may pass the map it routes with: keep it until done */
        auto parsed = std::make_unique<ngx_http_rate_limit_cluster_map_t>();

        if (!SlotsParser(replying_host, err, errlen, *parsed).parse(reply)) {
            return -1;
        }

        *map = *parsed;
        return 0;

    } catch (...) {
        write_error(err, errlen, "internal error while reading the slots");
        return -1;
    }
}


extern "C" int
ngx_http_rate_limit_parse_script_reply(const struct redisReply *reply,
    size_t nkeys, ngx_http_rate_limit_decision_t *out) noexcept
{
    if (reply == nullptr || (out == nullptr && nkeys != 0)
        || reply->type != REDIS_REPLY_ARRAY
        || nkeys > (SIZE_MAX - 1) / 4
        || reply->elements != 1 + 4 * nkeys)
    {
        return -1;
    }

    for (size_t i = 0; i < reply->elements; i++) {
        if (!is_integer_within(element_of(reply, i), 0, INT64_MAX)) {
            return -1;
        }
    }

    /*
     * The verdict must agree with the keys' flags: a script that says
     * "allowed" while a key rejects, or the reverse, is not ours, and its
     * writes cannot be trusted to follow the all-or-nothing rule.
     */
    long long all_allowed = 1;

    for (size_t i = 0; i < nkeys; i++) {
        const long long allowed = reply->element[1 + 4 * i]->integer;

        if (allowed > 1) {
            return -1;
        }

        all_allowed &= allowed;
    }

    if (reply->element[0]->integer != all_allowed) {
        return -1;
    }

    /* state stays as it is: the script keeps it inside Redis */
    for (size_t i = 0; i < nkeys; i++) {
        redisReply *const *fields = reply->element + 1 + 4 * i;

        out[i].allowed = static_cast<int>(fields[0]->integer);
        out[i].remaining = static_cast<uint64_t>(fields[1]->integer);
        out[i].retry_after_us = fields[2]->integer;
        out[i].reset_us = fields[3]->integer;
    }

    return 0;
}
