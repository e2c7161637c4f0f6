/*
 * Bytes from Redis: RESP read by hiredis' own reader, as the module's
 * connection reads it, and every reply given both to the check of the
 * decision script's reply and to the CLUSTER SLOTS parser.  Each must
 * either refuse the reply, writing nothing, or give what the reply says.
 */

#include "fuzz_check.h"

#include <hiredis/hiredis.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>


namespace {

using rate_limit_fuzz::require;
using rate_limit_fuzz::require_message;

const char replying_host[] = "192.0.2.1";


/*
 * "*2000000000\r\n" alone makes hiredis 0.14 allocate 16 GB up front; an
 * out of memory run says nothing about our parsers, so arrays beyond this
 * are refused as hiredis refuses a failed allocation.
 */
constexpr int max_array_elements = 4096;

struct ReaderFree {
    void operator()(redisReader *reader) const noexcept
    {
        redisReaderFree(reader);
    }
};

using Reader = std::unique_ptr<redisReader, ReaderFree>;


/* hiredis 0.14 shows its reply builders only through a reader's fn */
const redisReplyObjectFunctions &default_functions()
{
    static const redisReplyObjectFunctions functions = [] {
        const Reader reader(redisReaderCreate());
        require(reader != nullptr && reader->fn != nullptr,
                "a reader can be made");
        return *reader->fn;
    }();
    return functions;
}


void *create_array(const redisReadTask *task, int elements)
{
    if (elements > max_array_elements) {
        return nullptr;
    }

    return default_functions().createArray(task, elements);
}


redisReplyObjectFunctions *reader_functions()
{
    static redisReplyObjectFunctions functions = [] {
        redisReplyObjectFunctions bounded = default_functions();
        bounded.createArray = create_array;
        return bounded;
    }();
    return &functions;
}


void check_script_reply(const redisReply *reply, size_t nkeys)
{
    std::vector<ngx_http_rate_limit_decision_t> out(nkeys + 1);
    std::memset(out.data(), 0xa5, out.size() * sizeof(out[0]));

    const std::vector<ngx_http_rate_limit_decision_t> before = out;

    if (ngx_http_rate_limit_parse_script_reply(reply, nkeys, out.data())
        != 0)
    {
        require(std::memcmp(out.data(), before.data(),
                            out.size() * sizeof(out[0])) == 0,
                "a refused script reply writes nothing");
        return;
    }

    require(reply->type == REDIS_REPLY_ARRAY
            && reply->elements == 1 + 4 * nkeys,
            "an accepted script reply has 1 + 4 * nkeys elements");

    long long all_allowed = 1;

    for (size_t i = 0; i < nkeys; i++) {
        redisReply *const *fields = reply->element + 1 + 4 * i;

        for (size_t f = 0; f < 4; f++) {
            require(fields[f]->type == REDIS_REPLY_INTEGER
                    && fields[f]->integer >= 0,
                    "the fields are integers, none negative");
        }
        require(fields[0]->integer <= 1, "allowed is 0 or 1");
        require(out[i].allowed == fields[0]->integer
                && out[i].remaining
                   == static_cast<uint64_t>(fields[1]->integer)
                && out[i].retry_after_us == fields[2]->integer
                && out[i].reset_us == fields[3]->integer,
                "each decision is the reply's");
        require(out[i].state.tat_us == before[i].state.tat_us
                && out[i].state.token_code == before[i].state.token_code,
                "the state is left alone");
        all_allowed &= fields[0]->integer;
    }

    require(reply->element[0]->type == REDIS_REPLY_INTEGER
            && reply->element[0]->integer == all_allowed,
            "the verdict agrees with the keys");
    require(std::memcmp(&out[nkeys], &before[nkeys], sizeof(out[0])) == 0,
            "nothing is written past nkeys");
}


/* the node that the map routes slot to, or nullptr */
const ngx_http_rate_limit_cluster_node_t *
route(const ngx_http_rate_limit_cluster_map_t &map, long long slot)
{
    const unsigned index = map.slot_node[slot];

    return index == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE
           ? nullptr : &map.nodes[index];
}


/*
 * Each range of an accepted reply is routed to its master, which is one of
 * the map's distinct nodes, and no slot outside the ranges is.
 */
void check_slots_map(const redisReply *reply,
    const ngx_http_rate_limit_cluster_map_t &map)
{
    require(map.nnodes <= NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES,
            "at most MAX_NODES nodes");

    for (unsigned i = 0; i < map.nnodes; i++) {
        const ngx_http_rate_limit_cluster_node_t &node = map.nodes[i];

        require(strnlen(node.host, sizeof(node.host)) < sizeof(node.host)
                && node.host[0] != '\0',
                "a node's host is NUL ended and not empty");
        require(node.port >= 1 && node.port <= 65535, "the port is a port");

        for (unsigned j = 0; j < i; j++) {
            require(map.nodes[j].port != node.port
                    || std::strcmp(map.nodes[j].host, node.host) != 0,
                    "nodes are distinct");
        }
    }

    size_t routed = 0;

    for (unsigned char index : map.slot_node) {
        require(index == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE
                || index < map.nnodes,
                "a slot routes to a node of the map, or to none");
        routed += index != NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE;
    }

    size_t ranged = 0;

    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *range = reply->element[i];
        const long long start = range->element[0]->integer;
        const long long end = range->element[1]->integer;
        const redisReply *master = range->element[2];
        const redisReply *host = master->element[0];

        std::string_view name;
        if (host->type == REDIS_REPLY_STRING) {
            name = std::string_view(host->str, host->len);
        }
        if (name.empty() || name == "?") {
            name = replying_host;
        }

        for (long long slot : { start, end }) {
            const ngx_http_rate_limit_cluster_node_t *node = route(map, slot);

            require(node != nullptr
                    && node->port
                       == static_cast<unsigned>(master->element[1]->integer)
                    && name == node->host,
                    "a range is routed to its master");
        }

        ranged += static_cast<size_t>(end - start + 1);
    }

    require(routed == ranged, "only the ranges' slots are routed");
}


void check_slots(const redisReply *reply)
{
    static ngx_http_rate_limit_cluster_map_t map;
    static ngx_http_rate_limit_cluster_map_t before;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    std::memset(&map, 0xa5, sizeof(map));
    std::memset(&before, 0xa5, sizeof(before));

    if (ngx_http_rate_limit_cluster_parse_slots(reply, replying_host, &map,
                                                err, sizeof(err))
        != 0)
    {
        require_message(err, sizeof(err));
        require(std::memcmp(&map, &before, sizeof(map)) == 0,
                "a refused CLUSTER SLOTS reply writes nothing");
        return;
    }

    check_slots_map(reply, map);
}


void check_reply(const redisReply *reply)
{
    /* the nkeys that fits an array reply, its neighbours and none */
    size_t nkeys = 0;

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0) {
        nkeys = (reply->elements - 1) / 4;
    }

    check_script_reply(reply, 0);
    check_script_reply(reply, nkeys);
    check_script_reply(reply, nkeys + 1);
    if (nkeys > 1) {
        check_script_reply(reply, nkeys - 1);
    }

    check_slots(reply);
}


} // namespace


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const Reader reader(redisReaderCreateWithFunctions(reader_functions()));
    require(reader != nullptr, "a reader can be made");

    if (redisReaderFeed(reader.get(), reinterpret_cast<const char *>(data),
                        size)
        != REDIS_OK)
    {
        return 0;
    }

    /* every complete reply in the bytes, until the reader wants more */
    for ( ;; ) {
        void *reply = nullptr;

        if (redisReaderGetReply(reader.get(), &reply) != REDIS_OK
            || reply == nullptr)
        {
            return 0;
        }

        check_reply(static_cast<const redisReply *>(reply));
        freeReplyObject(reply);
    }
}
