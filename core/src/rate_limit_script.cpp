/*
 * The decision script that Redis runs for backend=redis, and its refund
 * script for Redis Cluster.
 *
 * One round trip decides every limit of a request atomically: a request
 * that one limit rejects must take no token from the others, and only a
 * script can read several buckets and write them all or none.  The module
 * sends it with EVALSHA under the SHA-1 below, and loads it when Redis
 * answers NOSCRIPT.
 *
 * KEEP IN STEP WITH decide() in rate_limit_gcra.cpp: same steps, same
 * names, same rounding.  The unit tests cannot run Lua, so that twin is the
 * reference; tests/test_redis_script.cpp compares the two against a real
 * redis-server when one is installed.
 *
 * The clock is Redis' TIME, read once, so that every nginx worker on every
 * host shares one clock and all keys of a request see the same instant.
 * Numbers reach SET as text made by string.format('%.0f'): how Redis
 * prints a Lua number argument has changed between versions (%.17g, then a
 * shortest form printer that could write "1e+15"), and the stored TAT must
 * stay a plain integer that tonumber() and the module both read exactly.
 * Every reply value is a whole number below 2^53; Redis truncates Lua
 * numbers to integers in replies, so nothing is lost.
 *
 * A key whose interval or burst argument is 0 is blocked (see
 * ngx_http_rate_limit_make_params_blocking()): rejected before its value
 * is read, so that no stored state and no cost can let it through.
 *
 * For the module: KEYS must be distinct (a key given twice is judged twice
 * against the same stored value and written once), and interval_us should
 * be sent with enough digits for the script's half-up rounding to agree
 * with decide(): "%.6f" does for any real configuration, and the rounded
 * integer itself, (int64_t) (interval_us + 0.5), always does.
 */

#include <ngx_http_rate_limit_core.h>

#include <array>


/* the header's number, spelt into the script so the two cannot drift */
#define RATE_LIMIT_LUA_NUMBER(value)  RATE_LIMIT_LUA_DIGITS(value)
#define RATE_LIMIT_LUA_DIGITS(value)  #value


namespace {

constexpr char decision_script[] = R"lua(-- ngx_http_rate_limit: GCRA token buckets, all or nothing.
-- Twin of ngx_http_rate_limit_decide(): keep the arithmetic identical.
-- KEYS[i]: a bucket, holding its TAT in whole microseconds.
-- ARGV[3i-2]: interval_us, ARGV[3i-1]: burst, ARGV[3i]: cost.
-- An interval or burst of 0 blocks the key: always rejected, never read.
-- Reply: {all_allowed, then per key: allowed, remaining,
--         retry_after_us, reset_us}, all integers.
local max_bucket_span_us = 1e15
local max_until_full_us = 4e15
local blocked_retry_after_us = )lua"
    RATE_LIMIT_LUA_NUMBER(NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US)
    R"lua(

local function whole_tokens(free_us, token_us)
  return math.floor(math.max(free_us, 0) / token_us)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local all_allowed = 1
local buckets = {}

for i = 1, #KEYS do
  local interval_us = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  if interval_us == 0 or burst == 0 then
    -- is_blocked(): no bucket, so nothing to read
    all_allowed = 0
    buckets[i] = false
  else
    -- whole_token_us(): half up, within [1, max_bucket_span_us]
    local token_us = math.min(math.max(math.floor(interval_us + 0.5), 1),
      max_bucket_span_us)
    burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
    local tau = burst * token_us
    -- a cost above burst never fits: counted as burst + 1
    local cost_us = math.min(tonumber(ARGV[3 * i]), burst + 1) * token_us
    -- absent or not a number: a full bucket
    local tat = tonumber(redis.call('GET', KEYS[i])) or 0
    local until_full = math.min(math.max(tat - now, 0), max_until_full_us)
    local until_full_after = until_full + cost_us
    local allowed = until_full_after <= tau
    if not allowed then
      all_allowed = 0
    end
    buckets[i] = {allowed, token_us, tau, until_full, until_full_after}
  end
end

local reply = {all_allowed}

for i = 1, #KEYS do
  local n = #reply
  if not buckets[i] then
    reply[n + 1] = 0
    reply[n + 2] = 0
    reply[n + 3] = blocked_retry_after_us
    reply[n + 4] = 0
  else
    local allowed, token_us, tau, until_full, until_full_after =
      unpack(buckets[i])
    if all_allowed == 1 then
      local ttl_ms = math.max(math.ceil(until_full_after / 1000), 1)
      redis.call('SET', KEYS[i],
        string.format('%.0f', now + until_full_after),
        'PX', string.format('%.0f', ttl_ms))
      reply[n + 1] = 1
      reply[n + 2] = whole_tokens(tau - until_full_after, token_us)
      reply[n + 3] = 0
      reply[n + 4] = until_full_after
    elseif allowed then
      -- another key rejected, so nothing was taken: report the bucket as is
      reply[n + 1] = 1
      reply[n + 2] = whole_tokens(tau - until_full, token_us)
      reply[n + 3] = 0
      reply[n + 4] = until_full
    else
      reply[n + 1] = 0
      reply[n + 2] = whole_tokens(tau - until_full, token_us)
      reply[n + 3] = until_full_after - tau
      reply[n + 4] = until_full
    end
  end
end

return reply
)lua";

constexpr size_t decision_script_len = sizeof(decision_script) - 1;


/*
 * The same decision for a request under one Redis limit, the common case,
 * without the tables and loops that several keys need: Redis spends about
 * a quarter less time in it.  Its reply is laid out as the other's.
 */
constexpr char decision_one_script[] = R"lua(-- ngx_http_rate_limit: one GCRA token bucket.
-- The arithmetic of the script for several keys, for KEYS[1] alone.
-- ARGV: interval_us, burst, cost.  Reply: {allowed, allowed, remaining,
-- retry_after_us, reset_us}, all integers.
local max_bucket_span_us = 1e15
local max_until_full_us = 4e15
local interval_us = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if interval_us == 0 or burst == 0 then
  return {0, 0, 0, )lua"
    RATE_LIMIT_LUA_NUMBER(NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US)
    R"lua(, 0}
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local token_us = math.min(math.max(math.floor(interval_us + 0.5), 1),
  max_bucket_span_us)
burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
local tau = burst * token_us
local cost_us = math.min(tonumber(ARGV[3]), burst + 1) * token_us
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local until_full = math.min(math.max(tat - now, 0), max_until_full_us)
local until_full_after = until_full + cost_us
if until_full_after > tau then
  return {0, 0, math.floor(math.max(tau - until_full, 0) / token_us),
    until_full_after - tau, until_full}
end
redis.call('SET', KEYS[1], string.format('%.0f', now + until_full_after),
  'PX', string.format('%.0f', math.max(math.ceil(until_full_after / 1000), 1)))
return {1, 1, math.floor(math.max(tau - until_full_after, 0) / token_us), 0,
  until_full_after}
)lua";

constexpr size_t decision_one_script_len = sizeof(decision_one_script) - 1;


/*
 * Gives back the tokens of one key that its master allowed, when another
 * master rejected the same request (see the header).  Twin of refund(),
 * with the same names and the decision script's reading of the arguments
 * and of the stored TAT, so that a refund undoes exactly what was taken.
 */
constexpr char refund_script[] = R"lua(-- ngx_http_rate_limit: gives back the tokens of an allowed request.
-- Twin of ngx_http_rate_limit_refund(): keep the arithmetic identical.
-- KEYS[1]: a bucket, holding its TAT in whole microseconds.
-- ARGV[1]: interval_us, ARGV[2]: burst, ARGV[3]: cost, as the decision
-- script was sent them.  Reply: 1.
local max_bucket_span_us = 1e15
local max_until_full_us = 4e15

local interval_us = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if interval_us == 0 or burst == 0 then
  -- is_blocked(): a blocked bucket never allowed anything
  return 1
end

-- whole_token_us(): half up, within [1, max_bucket_span_us]
local token_us = math.min(math.max(math.floor(interval_us + 0.5), 1),
  max_bucket_span_us)
burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
local cost_us = math.min(tonumber(ARGV[3]), burst + 1) * token_us

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
-- absent or not a number: a full bucket, as the decision script reads it
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
local until_full = tat - now

if until_full <= cost_us then
  -- never refill beyond full; a missing key is a full bucket
  redis.call('DEL', KEYS[1])
elseif until_full <= max_until_full_us then
  local ttl_ms = math.max(math.ceil((until_full - cost_us) / 1000), 1)
  redis.call('SET', KEYS[1], string.format('%.0f', tat - cost_us),
    'PX', string.format('%.0f', ttl_ms))
end
-- beyond max_until_full_us the value is none of ours: left alone

return 1
)lua";

constexpr size_t refund_script_len = sizeof(refund_script) - 1;


struct ScriptSha1 {
    std::array<char, NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1> hex {};

    ScriptSha1(const char *script, size_t len) noexcept
    {
        ngx_http_rate_limit_sha1_hex(
            reinterpret_cast<const unsigned char *>(script), len,
            hex.data());
    }
};

} // namespace


extern "C" const char *
ngx_http_rate_limit_script(size_t *len) noexcept
{
    if (len != nullptr) {
        *len = decision_script_len;
    }

    return decision_script;
}


extern "C" const char *
ngx_http_rate_limit_script_sha1(void) noexcept
{
    /* computed on first use; C++11 makes the initialisation thread safe */
    static const ScriptSha1 script_sha1(decision_script, decision_script_len);

    return script_sha1.hex.data();
}


extern "C" const char *
ngx_http_rate_limit_script_one(size_t *len) noexcept
{
    if (len != nullptr) {
        *len = decision_one_script_len;
    }

    return decision_one_script;
}


extern "C" const char *
ngx_http_rate_limit_script_one_sha1(void) noexcept
{
    static const ScriptSha1 script_sha1(decision_one_script,
                                        decision_one_script_len);

    return script_sha1.hex.data();
}


extern "C" const char *
ngx_http_rate_limit_refund_script(size_t *len) noexcept
{
    if (len != nullptr) {
        *len = refund_script_len;
    }

    return refund_script;
}


extern "C" const char *
ngx_http_rate_limit_refund_script_sha1(void) noexcept
{
    static const ScriptSha1 script_sha1(refund_script, refund_script_len);

    return script_sha1.hex.data();
}
