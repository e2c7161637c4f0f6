/*
 * Redis Cluster routing in the core: key slots, MOVED and ASK, CLUSTER
 * SLOTS, and the check of the decision script's reply.  Replies are built
 * the way the module gets them: RESP text through hiredis' own reader.
 */

#include "rate_limit_test_support.h"

#include <hiredis/hiredis.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>


namespace {

/* RESP text, as Redis writes it */

std::string bulk(const std::string &text)
{
    return "$" + std::to_string(text.size()) + "\r\n" + text + "\r\n";
}

std::string integer(long long value)
{
    return ":" + std::to_string(value) + "\r\n";
}

std::string array(const std::vector<std::string> &items)
{
    std::string resp = "*" + std::to_string(items.size()) + "\r\n";
    for (const std::string &item : items) {
        resp += item;
    }
    return resp;
}

const std::string nil = "$-1\r\n";

/* a node as Redis 7 lists it: host, port, id, metadata */
std::string node(const std::string &host, long long port)
{
    return array({ bulk(host), integer(port),
                   bulk(std::string(40, 'a') + std::to_string(port)),
                   array({}) });
}

std::string range(long long start, long long end, const std::string &master,
    const std::vector<std::string> &replicas = {})
{
    std::vector<std::string> items { integer(start), integer(end), master };
    items.insert(items.end(), replicas.begin(), replicas.end());
    return array(items);
}


struct ReaderDeleter {
    void operator()(redisReader *reader) const { redisReaderFree(reader); }
};

struct ReplyDeleter {
    void operator()(redisReply *reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;


/* exactly one whole reply, or the test fails */
Reply read_reply(const std::string &resp)
{
    std::unique_ptr<redisReader, ReaderDeleter> reader(redisReaderCreate());
    EXPECT_TRUE(reader);
    if (!reader) {
        return nullptr;
    }

    EXPECT_EQ(redisReaderFeed(reader.get(), resp.data(), resp.size()),
              REDIS_OK);

    void *first = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader.get(), &first), REDIS_OK)
        << reader->errstr;
    Reply reply(static_cast<redisReply *>(first));
    EXPECT_TRUE(reply) << "incomplete RESP: " << resp;

    void *second = nullptr;
    EXPECT_EQ(redisReaderGetReply(reader.get(), &second), REDIS_OK);
    EXPECT_EQ(second, nullptr) << "more than one reply: " << resp;
    freeReplyObject(second);

    return reply;
}


unsigned slot_of(const std::string &key)
{
    return ngx_http_rate_limit_cluster_slot(
        reinterpret_cast<const unsigned char *>(key.data()), key.size());
}


TEST(ClusterSlot, MatchesRedisClusterKeyslot)
{
    /* CLUSTER KEYSLOT of Redis 7.0.15 for each key */
    const std::vector<std::pair<std::string, unsigned>> keys {
        { "123456789", 12739 },       /* CRC16-XMODEM check value 0x31C3 */
        { "foo", 12182 },
        { "bar", 5061 },
        { "{user1000}.following", 3443 },
        { "{user1000}.followers", 3443 },
        { "foo{}{bar}", 8363 },       /* empty tag: the whole key */
        { "foo{{bar}}zap", 4015 },    /* the tag is "{bar" */
        { "{bar", 4015 },
        { "foo{bar}{zap}", 5061 },    /* the first tag only: "bar" */
        { "{}", 15257 },
        { "}{a}", 15495 },            /* a '}' before the '{' is no end */
        { "{a}{b}", 15495 },
        { "a{", 14311 },              /* no '}': the whole key */
        { "rl:api:{x}", 16287 },
        { "", 0 },
    };

    for (const auto &[key, slot] : keys) {
        EXPECT_EQ(slot_of(key), slot) << '"' << key << '"';
    }
}


TEST(ClusterSlot, TagIsHashedAlone)
{
    EXPECT_EQ(slot_of("{user1000}.following"), slot_of("user1000"));
    EXPECT_EQ(slot_of("rl:api:{user1000}"), slot_of("user1000"));
    EXPECT_NE(slot_of("foo{}{bar}"), slot_of("bar"));
    EXPECT_NE(slot_of("foo"), slot_of("{foo"));
}


TEST(ClusterSlot, BinaryKeysUseTheirLength)
{
    /* NUL and high bytes are key bytes like any other */
    const std::string with_nul("a\0{b}c", 6);
    EXPECT_EQ(slot_of(with_nul), slot_of("b"));

    const std::string cut = "123456789 and more";
    EXPECT_EQ(ngx_http_rate_limit_cluster_slot(
                  reinterpret_cast<const unsigned char *>(cut.data()), 9),
              12739u);

    /* a tag whose '}' lies beyond len is no tag */
    const std::string open = "x{abc}";
    EXPECT_EQ(ngx_http_rate_limit_cluster_slot(
                  reinterpret_cast<const unsigned char *>(open.data()), 5),
              slot_of("x{abc"));

    EXPECT_NE(slot_of("\xff\xfe"), slot_of("\x7f\x7e"));
    EXPECT_EQ(ngx_http_rate_limit_cluster_slot(nullptr, 10), 0u);
}


/* MOVED and ASK */

ngx_http_rate_limit_redirect_t redirect_of(const std::string &text,
    ngx_http_rate_limit_redirect_e expected)
{
    ngx_http_rate_limit_redirect_t out;
    std::memset(&out, 0x5a, sizeof(out));

    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(text.data(), text.size(),
                                                   &out),
              expected)
        << '"' << text << '"';
    EXPECT_EQ(out.kind, expected) << '"' << text << '"';

    return out;
}


TEST(ClusterRedirect, ReadsMovedAndAsk)
{
    struct Case {
        std::string                     text;
        ngx_http_rate_limit_redirect_e  kind;
        unsigned                        slot;
        std::string                     host;
        unsigned                        port;
    };

    const std::vector<Case> cases {
        { "MOVED 3999 127.0.0.1:6381", NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED,
          3999, "127.0.0.1", 6381 },
        { "ASK 3999 127.0.0.1:6381", NGX_HTTP_RATE_LIMIT_REDIRECT_ASK,
          3999, "127.0.0.1", 6381 },
        /* IPv6 as Redis writes it, and bracketed */
        { "ASK 0 ::1:6381", NGX_HTTP_RATE_LIMIT_REDIRECT_ASK, 0, "::1",
          6381 },
        { "ASK 3999 [::1]:6381", NGX_HTTP_RATE_LIMIT_REDIRECT_ASK, 3999,
          "::1", 6381 },
        { "MOVED 16383 fe80::1:2:65535", NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED,
          16383, "fe80::1:2", 65535 },
        /* an unknown endpoint: the host that replied */
        { "MOVED 3999 :6381", NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED, 3999, "",
          6381 },
        { "MOVED 1 ?:7000", NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED, 1, "",
          7000 },
        { "MOVED 12182 redis-2.cache.internal:1",
          NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED, 12182,
          "redis-2.cache.internal", 1 },
        { "MOVED 7 " + std::string(63, 'h') + ":6379",
          NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED, 7, std::string(63, 'h'),
          6379 },
        { "MOVED 007 h:06379", NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED, 7, "h",
          6379 },
    };

    for (const Case &c : cases) {
        const ngx_http_rate_limit_redirect_t out = redirect_of(c.text,
                                                               c.kind);
        EXPECT_EQ(out.slot, c.slot) << c.text;
        EXPECT_EQ(std::string(out.host), c.host) << c.text;
        EXPECT_EQ(out.port, c.port) << c.text;
    }
}


TEST(ClusterRedirect, ReadsOnlyLenBytes)
{
    const std::string text = "MOVED 3999 127.0.0.1:6381 and then junk";
    ngx_http_rate_limit_redirect_t out {};

    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(text.data(), 25, &out),
              NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED);
    EXPECT_EQ(out.port, 6381u);

    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(text.data(), 24, &out),
              NGX_HTTP_RATE_LIMIT_REDIRECT_MOVED);
    EXPECT_EQ(out.port, 638u);

    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(text.data(),
                                                   text.size(), &out),
              NGX_HTTP_RATE_LIMIT_REDIRECT_NONE);
}


TEST(ClusterRedirect, RefusesAnythingElse)
{
    const std::vector<std::string> texts {
        "", "MOVED", "MOVED ", "MOVED 3999", "MOVED 3999 ",
        "MOVED 3999 127.0.0.1", "MOVED 3999 6381",
        /* the slot */
        "MOVED 16384 h:1", "MOVED 99999999999999999999 h:1",
        "MOVED -1 h:1", "MOVED +1 h:1", "MOVED 1x h:1", "MOVED  1 h:1",
        "MOVED 0x10 h:1",
        /* the port */
        "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h:", "MOVED 1 h:-1",
        "MOVED 1 h:99999999999999999999", "MOVED 1 h:1x",
        /* the host */
        "MOVED 1 " + std::string(64, 'h') + ":1", "MOVED 1 h x:1",
        "MOVED 1 h\t:1", "MOVED 1 h\x7f:1", "MOVED 1 h\xc3\xa9:1",
        std::string("MOVED 1 h\0x:1", 13),
        "ASK 1 [::1:6381", "ASK 1 []:6381", "ASK 1 [::1]6381",
        "ASK 1 [::1]:", "ASK 1 [[::1]]:1", "ASK 1 ::1]:1",
        /* trailing junk */
        "MOVED 1 h:1 ", "MOVED 1 h:1 x", "MOVED 1 h:1\r\n", "ASK 1 [h]:1 ",
        /* other errors, and near misses */
        "moved 1 h:1", "Moved 1 h:1", "MOVEDX 1 h:1", "ASKING 1 h:1",
        " MOVED 1 h:1", "-MOVED 1 h:1", "ERR MOVED 1 h:1",
        "NOSCRIPT No matching script. Please use EVAL.",
        "CLUSTERDOWN Hash slot not served", "TRYAGAIN Multiple keys request "
        "during rehashing of slot",
        "CROSSSLOT Keys in request don't hash to the same slot",
    };

    for (const std::string &text : texts) {
        const ngx_http_rate_limit_redirect_t out = redirect_of(
            text, NGX_HTTP_RATE_LIMIT_REDIRECT_NONE);

        /* nothing half read is left behind */
        EXPECT_EQ(out.slot, 0u) << '"' << text << '"';
        EXPECT_EQ(out.port, 0u) << '"' << text << '"';
        EXPECT_EQ(out.host[0], '\0') << '"' << text << '"';
    }
}


TEST(ClusterRedirect, NullArguments)
{
    ngx_http_rate_limit_redirect_t out {};
    const char text[] = "MOVED 1 h:1";

    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(nullptr, 11, &out),
              NGX_HTTP_RATE_LIMIT_REDIRECT_NONE);
    EXPECT_EQ(ngx_http_rate_limit_cluster_redirect(text, 11, nullptr),
              NGX_HTTP_RATE_LIMIT_REDIRECT_NONE);
}


/* CLUSTER SLOTS */

using Map = ngx_http_rate_limit_cluster_map_t;

constexpr const char *replying_host = "replying.test";


struct SlotsResult {
    int                   rc;
    std::unique_ptr<Map>  map;
    std::string           err;
};


SlotsResult parse_slots_reply(const redisReply *reply,
    const char *replying = replying_host)
{
    SlotsResult result { -2, std::make_unique<Map>(), "" };
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

    result.rc = ngx_http_rate_limit_cluster_parse_slots(
        reply, replying, result.map.get(), err, sizeof(err));
    result.err = err;

    return result;
}


SlotsResult parse_slots(const std::string &resp,
    const char *replying = replying_host)
{
    Reply reply = read_reply(resp);
    return parse_slots_reply(reply.get(), replying);
}


/* the node that serves slot, as "host:port", or "-" for none */
std::string owner(const Map &map, unsigned slot)
{
    const unsigned index = map.slot_node[slot];
    if (index == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE) {
        return "-";
    }
    if (index >= map.nnodes) {
        return "bad index " + std::to_string(index);
    }
    return std::string(map.nodes[index].host) + ":"
           + std::to_string(map.nodes[index].port);
}


TEST(ClusterSlots, ThreeMastersInNodeOrder)
{
    /* Redis before 7.0 lists the ranges node by node */
    const SlotsResult r = parse_slots(array({
        range(10923, 16383, node("127.0.0.1", 7002),
              { node("127.0.0.1", 7005) }),
        range(0, 5460, node("127.0.0.1", 7000),
              { node("127.0.0.1", 7003), node("127.0.0.1", 7006) }),
        range(5461, 10922, node("127.0.0.1", 7001)),
    }));

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 3u);
    EXPECT_STREQ(r.map->nodes[0].host, "127.0.0.1");
    EXPECT_EQ(r.map->nodes[0].port, 7002u);
    EXPECT_EQ(r.map->nodes[1].port, 7000u);
    EXPECT_EQ(r.map->nodes[2].port, 7001u);

    EXPECT_EQ(owner(*r.map, 0), "127.0.0.1:7000");
    EXPECT_EQ(owner(*r.map, 5460), "127.0.0.1:7000");
    EXPECT_EQ(owner(*r.map, 5461), "127.0.0.1:7001");
    EXPECT_EQ(owner(*r.map, 10922), "127.0.0.1:7001");
    EXPECT_EQ(owner(*r.map, 10923), "127.0.0.1:7002");
    EXPECT_EQ(owner(*r.map, 16383), "127.0.0.1:7002");

    for (unsigned slot = 0; slot < NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS;
         slot++)
    {
        ASSERT_LT(r.map->slot_node[slot], 3) << slot;
    }
}


TEST(ClusterSlots, ASingleNodeAsRedis7WritesIt)
{
    /* CLUSTER SLOTS of a lone node, byte for byte: it knows no own host */
    const SlotsResult r = parse_slots(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:27911\r\n$40\r\n"
        "856b4a4b08ff6b86794085a449112872560e2980\r\n*0\r\n");

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 1u);
    EXPECT_STREQ(r.map->nodes[0].host, replying_host);
    EXPECT_EQ(r.map->nodes[0].port, 27911u);
    EXPECT_EQ(owner(*r.map, 0), std::string(replying_host) + ":27911");
    EXPECT_EQ(owner(*r.map, 16383), std::string(replying_host) + ":27911");
}


TEST(ClusterSlots, UnknownHostsAreTheReplyingHost)
{
    const SlotsResult r = parse_slots(array({
        range(0, 99, array({ bulk(""), integer(7000) })),
        range(100, 199, array({ bulk("?"), integer(7001) })),
        range(200, 299, array({ nil, integer(7002) })),
        /* the same node as the first range, named differently */
        range(300, 399, array({ nil, integer(7000) })),
        range(400, 499, node(replying_host, 7001)),
    }));

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 3u);
    const std::string host = replying_host;
    EXPECT_EQ(owner(*r.map, 0), host + ":7000");
    EXPECT_EQ(owner(*r.map, 150), host + ":7001");
    EXPECT_EQ(owner(*r.map, 299), host + ":7002");
    EXPECT_EQ(owner(*r.map, 300), host + ":7000");
    EXPECT_EQ(owner(*r.map, 499), host + ":7001");
    EXPECT_EQ(r.map->slot_node[300], r.map->slot_node[0]);
    EXPECT_EQ(r.map->slot_node[499], r.map->slot_node[100]);
}


TEST(ClusterSlots, Ipv6AndHostNames)
{
    const std::string long_host(63, 'n');
    const SlotsResult r = parse_slots(array({
        range(0, 0, node("::1", 6379)),
        range(1, 1, node("fe80::1ff:fe23:4567:890a", 6379)),
        range(2, 16383, node(long_host, 6380)),
    }));

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 3u);
    EXPECT_EQ(owner(*r.map, 0), "::1:6379");
    EXPECT_EQ(owner(*r.map, 1), "fe80::1ff:fe23:4567:890a:6379");
    EXPECT_EQ(owner(*r.map, 2), long_host + ":6380");
}


TEST(ClusterSlots, OneMasterWithSeveralRangesIsOneNode)
{
    /* after resharding a master often serves scattered ranges */
    const SlotsResult r = parse_slots(array({
        range(0, 10, node("10.1.0.1", 6379)),
        range(11, 11, node("10.1.0.2", 6379)),
        range(12, 16383, node("10.1.0.1", 6379)),
    }));

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 2u);
    EXPECT_EQ(r.map->slot_node[0], 0);
    EXPECT_EQ(r.map->slot_node[11], 1);
    EXPECT_EQ(r.map->slot_node[12], 0);
    EXPECT_EQ(r.map->slot_node[16383], 0);
}


TEST(ClusterSlots, UncoveredSlotsHaveNoNode)
{
    SlotsResult r = parse_slots(array({
        range(100, 200, array({ bulk("h"), integer(1) })),   /* Redis 3 */
    }));

    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(r.map->nnodes, 1u);
    EXPECT_EQ(owner(*r.map, 99), "-");
    EXPECT_EQ(owner(*r.map, 100), "h:1");
    EXPECT_EQ(owner(*r.map, 200), "h:1");
    EXPECT_EQ(owner(*r.map, 201), "-");

    /* a cluster with no slot assigned yet */
    r = parse_slots(array({}));
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.map->nnodes, 0u);
    for (unsigned slot = 0; slot < NGX_HTTP_RATE_LIMIT_CLUSTER_SLOTS;
         slot++)
    {
        ASSERT_EQ(owner(*r.map, slot), "-") << slot;
    }
}


/* one range of one slot per master, masters on ports 1, 2, ... */
std::string masters_reply(unsigned count)
{
    std::vector<std::string> ranges;
    for (unsigned i = 0; i < count; i++) {
        ranges.push_back(range(i, i, node("m", 1 + i)));
    }
    return array(ranges);
}


TEST(ClusterSlots, AtMostMaxNodesMasters)
{
    SlotsResult r = parse_slots(
        masters_reply(NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES));
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.map->nnodes, unsigned(NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES));
    EXPECT_EQ(owner(*r.map, NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES - 1),
              "m:" + std::to_string(NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES));

    r = parse_slots(masters_reply(NGX_HTTP_RATE_LIMIT_CLUSTER_MAX_NODES + 1));
    EXPECT_EQ(r.rc, -1);
    EXPECT_NE(r.err.find("more than 64 masters"), std::string::npos)
        << r.err;
}


TEST(ClusterSlots, RefusesMalformedReplies)
{
    const std::string a = node("127.0.0.1", 7000);
    const std::string b = node("127.0.0.1", 7001);

    struct Case {
        const char   *name;
        std::string   resp;
        const char   *message;   /* a part of the expected error */
    };

    const std::vector<Case> cases {
        { "status", "+OK\r\n", "not an array" },
        { "error", "-ERR This instance has cluster support disabled\r\n",
          "not an array" },
        { "integer", integer(3), "not an array" },
        { "nil", nil, "not an array" },
        { "nil array", "*-1\r\n", "not an array" },
        { "string", bulk("0 16383"), "not an array" },

        { "range integer", array({ integer(0) }), "range 1 is not" },
        { "range nil", array({ nil }), "range 1 is not" },
        { "range empty", array({ array({}) }), "range 1 is not" },
        { "range without master", array({ array({ integer(0),
                                                  integer(9) }) }),
          "range 1 is not" },
        { "second range bad", array({ range(0, 9, a), integer(1) }),
          "range 2 is not" },

        { "start string", array({ array({ bulk("0"), integer(9), a }) }),
          "start and end" },
        { "end string", array({ array({ integer(0), bulk("9"), a }) }),
          "start and end" },
        { "start nil", array({ array({ nil, integer(9), a }) }),
          "start and end" },
        { "start negative", array({ range(-1, 9, a) }), "start and end" },
        { "end beyond", array({ range(0, 16384, a) }), "start and end" },
        { "start beyond", array({ range(16384, 16384, a) }),
          "start and end" },
        { "end before start", array({ range(10, 9, a) }), "start and end" },
        { "huge", array({ range(0, LLONG_MAX, a) }), "start and end" },

        { "overlap", array({ range(0, 100, a), range(100, 200, b) }),
          "range 2: slot 100 is in an earlier range" },
        { "twice", array({ range(0, 100, a), range(0, 100, a) }),
          "range 2: slot 0" },
        { "inside", array({ range(0, 1000, a), range(10, 20, b) }),
          "range 2: slot 10" },
        { "overlap after order", array({ range(500, 600, b),
                                         range(0, 500, a) }),
          "range 2: slot 500" },

        { "master string", array({ range(0, 9, bulk("127.0.0.1")) }),
          "not an array of host and port" },
        { "master nil", array({ range(0, 9, nil) }),
          "not an array of host and port" },
        { "master host only", array({ range(0, 9, array({ bulk("h") })) }),
          "not an array of host and port" },
        { "master empty", array({ range(0, 9, array({})) }),
          "not an array of host and port" },

        { "host integer", array({ range(0, 9, array({ integer(1),
                                                      integer(7000) })) }),
          "host is not a string" },
        { "host status", array({ range(0, 9, array({ "+h\r\n",
                                                     integer(7000) })) }),
          "host is not a string" },
        { "host array", array({ range(0, 9, array({ array({ bulk("h") }),
                                                    integer(7000) })) }),
          "host is not a string" },
        { "host too long", array({ range(0, 9, node(std::string(64, 'h'),
                                                    7000)) }),
          "longer than 63 bytes" },
        { "host space", array({ range(0, 9, node("a b", 7000)) }),
          "longer than 63 bytes" },
        { "host NUL", array({ range(0, 9, node(std::string("a\0b", 3),
                                               7000)) }),
          "control character" },
        { "host newline", array({ range(0, 9, node("a\nb", 7000)) }),
          "control character" },
        { "host bracketed", array({ range(0, 9, node("[::1]", 7000)) }),
          "bracket" },

        { "port string", array({ range(0, 9, array({ bulk("h"),
                                                     bulk("7000") })) }),
          "port is not from 1 to 65535" },
        { "port nil", array({ range(0, 9, array({ bulk("h"), nil })) }),
          "port is not from 1 to 65535" },
        { "port 0", array({ range(0, 9, node("h", 0)) }),
          "port is not from 1 to 65535" },
        { "port 65536", array({ range(0, 9, node("h", 65536)) }),
          "port is not from 1 to 65535" },
        { "port negative", array({ range(0, 9, node("h", -7000)) }),
          "port is not from 1 to 65535" },
    };

    for (const Case &c : cases) {
        SCOPED_TRACE(c.name);

        Reply reply = read_reply(c.resp);
        ASSERT_TRUE(reply);

        /* the map keeps what it had: the caller may route with it */
        Map map;
        std::memset(&map, 0x33, sizeof(map));
        char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];
        std::memset(err, 'x', sizeof(err));

        EXPECT_EQ(ngx_http_rate_limit_cluster_parse_slots(
                      reply.get(), replying_host, &map, err, sizeof(err)),
                  -1);

        ASSERT_NE(std::memchr(err, '\0', sizeof(err)), nullptr);
        EXPECT_NE(std::string(err).find(c.message), std::string::npos)
            << err;

        Map untouched;
        std::memset(&untouched, 0x33, sizeof(untouched));
        EXPECT_EQ(std::memcmp(&map, &untouched, sizeof(map)), 0);
    }
}


TEST(ClusterSlots, UnknownHostNeedsAUsableReplyingHost)
{
    const std::string resp = array({ range(0, 9, node("", 7000)) });

    for (const char *replying : { static_cast<const char *>(nullptr), "" }) {
        const SlotsResult r = parse_slots(resp, replying);
        EXPECT_EQ(r.rc, -1);
        EXPECT_NE(r.err.find("no replying host"), std::string::npos)
            << r.err;
    }

    const std::string too_long(64, 'r');
    for (const std::string &replying : { too_long, std::string("a b") }) {
        const SlotsResult r = parse_slots(resp, replying.c_str());
        EXPECT_EQ(r.rc, -1) << replying;
        EXPECT_NE(r.err.find("master's host"), std::string::npos) << r.err;
    }

    /* a known host needs no replying host */
    const SlotsResult r = parse_slots(
        array({ range(0, 9, node("h", 7000)) }), nullptr);
    EXPECT_EQ(r.rc, 0) << r.err;
}


TEST(ClusterSlots, HandMadeTreesDoNotCrash)
{
    /* trees that hiredis' reader never builds, but a caller might */
    EXPECT_EQ(parse_slots_reply(nullptr).rc, -1);

    redisReply top {};
    top.type = REDIS_REPLY_ARRAY;
    top.elements = 1;
    top.element = nullptr;
    EXPECT_EQ(parse_slots_reply(&top).rc, -1);

    redisReply *no_range[] = { nullptr };
    top.element = no_range;
    EXPECT_EQ(parse_slots_reply(&top).rc, -1);

    redisReply start {}, end {}, host {}, port {}, master {}, one_range {};
    start.type = end.type = port.type = REDIS_REPLY_INTEGER;
    end.integer = 9;
    port.integer = 7000;
    host.type = REDIS_REPLY_STRING;
    host.len = 5;                   /* but no bytes */
    redisReply *master_fields[] = { &host, &port };
    master.type = REDIS_REPLY_ARRAY;
    master.elements = 2;
    master.element = master_fields;
    redisReply *range_fields[] = { &start, &end, &master };
    one_range.type = REDIS_REPLY_ARRAY;
    one_range.elements = 3;
    one_range.element = range_fields;
    redisReply *ranges[] = { &one_range };
    top.element = ranges;

    SlotsResult r = parse_slots_reply(&top);
    EXPECT_EQ(r.rc, -1);
    EXPECT_NE(r.err.find("host is not a string"), std::string::npos)
        << r.err;

    /* no bytes and no length is an empty host */
    host.len = 0;
    r = parse_slots_reply(&top);
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(owner(*r.map, 9), std::string(replying_host) + ":7000");

    /* an array that claims more elements than it has pointers for */
    master_fields[1] = nullptr;
    EXPECT_EQ(parse_slots_reply(&top).rc, -1);

    /* a type hiredis 0.14 does not have */
    master_fields[1] = &port;
    one_range.type = 42;
    EXPECT_EQ(parse_slots_reply(&top).rc, -1);
}


TEST(ClusterSlots, ErrorBufferIsOptionalAndCut)
{
    Reply reply = read_reply("+OK\r\n");
    Map map {};

    EXPECT_EQ(ngx_http_rate_limit_cluster_parse_slots(reply.get(), nullptr,
                                                      &map, nullptr, 0),
              -1);

    char small[8];
    EXPECT_EQ(ngx_http_rate_limit_cluster_parse_slots(reply.get(), nullptr,
                                                      &map, small,
                                                      sizeof(small)),
              -1);
    EXPECT_EQ(std::string(small), "the rep");

    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";
    EXPECT_EQ(ngx_http_rate_limit_cluster_parse_slots(reply.get(), nullptr,
                                                      nullptr, err,
                                                      sizeof(err)),
              -1);
    EXPECT_STRNE(err, "");
}


/* the decision script's reply */

constexpr int64_t untouched_tat = 0x1234;


std::vector<ngx_http_rate_limit_decision_t> fresh_decisions(size_t count)
{
    ngx_http_rate_limit_decision_t d {};
    d.allowed = 7;
    d.state.tat_us = untouched_tat;
    d.remaining = 7;
    d.retry_after_us = 7;
    d.reset_us = 7;
    return std::vector<ngx_http_rate_limit_decision_t>(count, d);
}


int parse_script(const std::string &resp, size_t nkeys,
    std::vector<ngx_http_rate_limit_decision_t> &out)
{
    Reply reply = read_reply(resp);
    return ngx_http_rate_limit_parse_script_reply(reply.get(), nkeys,
                                                  out.data());
}


std::string script_reply(const std::vector<long long> &values)
{
    std::vector<std::string> items;
    for (const long long value : values) {
        items.push_back(integer(value));
    }
    return array(items);
}


TEST(ScriptReply, ReadsEveryKey)
{
    std::vector<ngx_http_rate_limit_decision_t> out = fresh_decisions(2);

    ASSERT_EQ(parse_script(script_reply({ 1, 1, 4, 0, 200000,
                                              1, 7, 0, 300000 }),
                           2, out),
              0);

    EXPECT_EQ(out[0].allowed, 1);
    EXPECT_EQ(out[0].remaining, 4u);
    EXPECT_EQ(out[0].retry_after_us, 0);
    EXPECT_EQ(out[0].reset_us, 200000);
    EXPECT_EQ(out[1].allowed, 1);
    EXPECT_EQ(out[1].remaining, 7u);
    EXPECT_EQ(out[1].reset_us, 300000);

    /* the TAT stays in Redis */
    EXPECT_EQ(out[0].state.tat_us, untouched_tat);
    EXPECT_EQ(out[1].state.tat_us, untouched_tat);
}


TEST(ScriptReply, ARejectionAndABlockedKey)
{
    std::vector<ngx_http_rate_limit_decision_t> out = fresh_decisions(3);

    ASSERT_EQ(parse_script(script_reply({
                               0,
                               1, 5, 0, 0,
                               0, 0, 59000000, 60000000,
                               0, 0,
                               NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US, 0 }),
                           3, out),
              0);

    EXPECT_EQ(out[0].allowed, 1);
    EXPECT_EQ(out[0].remaining, 5u);
    EXPECT_EQ(out[1].allowed, 0);
    EXPECT_EQ(out[1].retry_after_us, 59000000);
    EXPECT_EQ(out[1].reset_us, 60000000);
    EXPECT_EQ(out[2].allowed, 0);
    EXPECT_EQ(out[2].retry_after_us,
              NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US);
}


TEST(ScriptReply, LargestValues)
{
    std::vector<ngx_http_rate_limit_decision_t> out = fresh_decisions(1);

    ASSERT_EQ(parse_script(script_reply({ 0, 0, LLONG_MAX, LLONG_MAX,
                                          LLONG_MAX }),
                           1, out),
              0);
    EXPECT_EQ(out[0].remaining, uint64_t(INT64_MAX));
    EXPECT_EQ(out[0].retry_after_us, INT64_MAX);
    EXPECT_EQ(out[0].reset_us, INT64_MAX);
}


TEST(ScriptReply, RefusesAnythingElse)
{
    const std::string good_one = script_reply({ 1, 1, 4, 0, 200000 });

    struct Case {
        const char   *name;
        std::string   resp;
        size_t        nkeys;
    };

    const std::vector<Case> cases {
        { "NOSCRIPT", "-NOSCRIPT No matching script. Please use EVAL.\r\n",
          1 },
        { "status", "+OK\r\n", 1 },
        { "nil", nil, 1 },
        { "nil array", "*-1\r\n", 1 },
        { "integer", integer(1), 1 },
        { "empty", array({}), 0 },
        { "too few", good_one, 2 },
        { "too many", script_reply({ 1, 1, 4, 0, 2, 1, 4, 0, 2 }), 1 },
        { "a field short", script_reply({ 1, 1, 4, 0 }), 1 },
        { "negative remaining", script_reply({ 1, 1, -4, 0, 200000 }), 1 },
        { "negative reset", script_reply({ 1, 1, 4, 0, -1 }), 1 },
        { "string field", array({ integer(1), integer(1), bulk("4"),
                                  integer(0), integer(2) }), 1 },
        { "nil field", array({ integer(1), integer(1), integer(4), nil,
                               integer(2) }), 1 },
        { "array field", array({ integer(1), array({ integer(1) }),
                                 integer(4), integer(0), integer(2) }), 1 },
        { "verdict 2", script_reply({ 2, 1, 4, 0, 200000 }), 1 },
        { "allowed 2", script_reply({ 1, 2, 4, 0, 200000 }), 1 },
        { "allowed verdict, rejected key",
          script_reply({ 1, 1, 4, 0, 2, 0, 0, 5, 5 }), 2 },
        { "rejected verdict, allowed keys",
          script_reply({ 0, 1, 4, 0, 2, 1, 3, 0, 5 }), 2 },
        { "no key, rejected", script_reply({ 0 }), 0 },
        /* 1 + 4 * nkeys would wrap around to 1 */
        { "nkeys overflow", script_reply({ 1 }), SIZE_MAX / 4 + 1 },
        { "nkeys max", script_reply({ 1 }), SIZE_MAX },
    };

    for (const Case &c : cases) {
        SCOPED_TRACE(c.name);

        std::vector<ngx_http_rate_limit_decision_t> out = fresh_decisions(2);
        EXPECT_EQ(parse_script(c.resp, c.nkeys, out), -1);

        /* nothing is written */
        for (const ngx_http_rate_limit_decision_t &d : out) {
            EXPECT_EQ(d.allowed, 7);
            EXPECT_EQ(d.remaining, 7u);
            EXPECT_EQ(d.retry_after_us, 7);
            EXPECT_EQ(d.reset_us, 7);
        }
    }
}


TEST(ScriptReply, NoKeysAndNullArguments)
{
    std::vector<ngx_http_rate_limit_decision_t> out = fresh_decisions(1);

    Reply verdict_only = read_reply(script_reply({ 1 }));
    EXPECT_EQ(ngx_http_rate_limit_parse_script_reply(verdict_only.get(), 0,
                                                     nullptr),
              0);

    Reply one = read_reply(script_reply({ 1, 1, 4, 0, 200000 }));
    EXPECT_EQ(ngx_http_rate_limit_parse_script_reply(one.get(), 1, nullptr),
              -1);
    EXPECT_EQ(ngx_http_rate_limit_parse_script_reply(nullptr, 1,
                                                     out.data()),
              -1);

    /* an array that claims elements it has no pointers for */
    redisReply hollow {};
    hollow.type = REDIS_REPLY_ARRAY;
    hollow.elements = 5;
    EXPECT_EQ(ngx_http_rate_limit_parse_script_reply(&hollow, 1, out.data()),
              -1);

    redisReply *fields[5] = {};
    hollow.element = fields;
    EXPECT_EQ(ngx_http_rate_limit_parse_script_reply(&hollow, 1, out.data()),
              -1);
    EXPECT_EQ(out[0].allowed, 7);
}

} // namespace
