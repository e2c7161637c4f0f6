/*
 * The node registry's heartbeat script.
 *
 * Each nginx node adds itself to one sorted set, scored by Redis' clock,
 * and drops the members silent for longer than the expiry: the set's size
 * is then the number of live nodes, the divisor of on_failure=local.
 * Scoring by Redis' TIME keeps the nodes' own clocks out of it, and one key
 * keeps the script valid on a Redis Cluster.
 */

#include <ngx_http_rate_limit_core.h>


namespace {

constexpr char nodes_script[] = R"lua(-- ngx_http_rate_limit: node registry heartbeat.
-- KEYS[1]: sorted set of node ids scored by their last heartbeat (ms).
-- ARGV[1]: this node's id, ARGV[2]: ms of silence after which a node is gone.
-- Reply: the number of live nodes, this one included.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expiry = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - expiry)
redis.call('PEXPIRE', KEYS[1], expiry * 2)
return redis.call('ZCARD', KEYS[1])
)lua";

}  // namespace


extern "C" const char *
ngx_http_rate_limit_nodes_script(size_t *len) noexcept
{
    *len = sizeof(nodes_script) - 1;
    return nodes_script;
}
