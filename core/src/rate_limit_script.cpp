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
 * shortest form printer that could write "1e+15"), and the stored state
 * must stay a plain integer, which Redis keeps integer-encoded.  That
 * integer, "-" TAT * 1000 + token code (see the header), has 19 digits: a
 * Lua number, a double, cannot hold it exactly, so it is written as the
 * TAT's digits followed by the code's, and read back by splitting the
 * text, never by tonumber() of the whole.  Every reply value is a whole
 * number below 2^53; Redis truncates Lua numbers to integers in replies,
 * so nothing is lost.
 *
 * A key whose interval or burst argument is 0 is blocked (see
 * ngx_http_rate_limit_make_params_blocking()): rejected before its value
 * is read, so that no stored state and no cost can let it through.
 *
 * For the module: KEYS must be distinct (a key given twice is judged twice
 * against the same stored value and written once), the token code must be
 * ngx_http_rate_limit_token_code() of the rounded interval, and
 * interval_us should
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

/*
 * What every script reads and writes of a bucket, the twins of Bucket's
 * until_full_us() and state() in rate_limit_gcra.cpp.
 */
constexpr char bucket_lua[] = R"lua(
local max_bucket_span_us = 1e15
local max_until_full_us = 4e15
local clock_slack_us = 1e6
local token_code_ratio = )lua"
    RATE_LIMIT_LUA_NUMBER(NGX_HTTP_RATE_LIMIT_TOKEN_CODE_RATIO) R"lua(

-- the stored TAT and token code: "-" TAT code, or the digits of a TAT
-- without a code (code 0: the limit in force); absent or anything else,
-- "nan" and "inf" that tonumber() would take included: a full bucket
local function stored_state(key)
  local value = redis.call('GET', key)
  if not value then
    return 0, 0
  end
  if string.find(value, '^%-%d%d%d%d+$') then
    return tonumber(string.sub(value, 2, -4)), tonumber(string.sub(value, -3))
  end
  if string.find(value, '^%d+$') then
    return tonumber(value), 0
  end
  return 0, 0
end

-- until_full_us(): the time until full in this limit's tokens; tau when
-- that is more than clock_slack_us beyond it
local function until_full_us(tat, code, now, token_us, token_code, tau)
  local until_full = math.min(math.max(tat - now, 0), max_until_full_us)
  if code ~= 0 and code ~= token_code then
    -- the tokens used under the stored code, at this limit's token length
    local code_us = 1
    for _ = 2, code do
      code_us = code_us * token_code_ratio
    end
    until_full = math.floor(until_full / code_us * token_us)
  end
  if until_full > tau + clock_slack_us then
    return tau
  end
  return until_full
end

-- holds(): the stored state says until_full already, or the bucket is
-- full whichever way it is read; else a rejection stores it as read
local function holds(tat, code, now, token_code, until_full)
  return until_full == 0 or (code == token_code and tat == now + until_full)
end

-- state(): the text that SET stores
local function state(tat, token_code)
  return string.format('-%.0f%03d', tat, token_code)
end

-- a state as read, kept as long as it takes to be full
local function store(key, tat, token_code, until_full)
  redis.call('SET', key, state(tat, token_code),
    'PX', string.format('%.0f', math.max(math.ceil(until_full / 1000), 1)))
end
)lua";


/*
 * The arithmetic the scripts for several keys share: decide() takes one
 * request's keys, KEYS[k0 + 1 .. k0 + n], with their interval_us, burst,
 * cost and token code from ARGV[a0 + 1] on, all or nothing, and appends
 * its verdict and the four numbers of each key to reply.
 */
constexpr char decide_lua[] = R"lua(
local blocked_retry_after_us = )lua"
    RATE_LIMIT_LUA_NUMBER(NGX_HTTP_RATE_LIMIT_BLOCKED_RETRY_AFTER_US) R"lua(

-- free_us is negative for a time until full within the slack
local function whole_tokens(free_us, token_us)
  return math.floor(math.max(free_us, 0) / token_us)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local function decide(k0, a0, n, reply)
  local all_allowed = 1
  local buckets = {}

  for i = 1, n do
    local interval_us = tonumber(ARGV[a0 + 4 * i - 3])
    local burst = tonumber(ARGV[a0 + 4 * i - 2])
    if interval_us == 0 or burst == 0 then
      -- is_blocked(): no bucket, so nothing to read
      all_allowed = 0
      buckets[i] = false
    else
      -- whole_token_us(): half up, within [1, max_bucket_span_us]
      local token_us = math.min(math.max(math.floor(interval_us + 0.5), 1),
        max_bucket_span_us)
      local token_code = tonumber(ARGV[a0 + 4 * i])
      burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
      local tau = burst * token_us
      -- a cost above burst never fits: counted as burst + 1
      local cost_us = math.min(tonumber(ARGV[a0 + 4 * i - 1]), burst + 1)
        * token_us
      local tat, code = stored_state(KEYS[k0 + i])
      local until_full = until_full_us(tat, code, now, token_us, token_code,
        tau)
      local until_full_after = until_full + cost_us
      local allowed = until_full_after <= tau
      if not allowed then
        all_allowed = 0
      end
      buckets[i] = {allowed, token_us, token_code, tau, until_full,
        until_full_after, holds(tat, code, now, token_code, until_full)}
    end
  end

  reply[#reply + 1] = all_allowed

  for i = 1, n do
    local last = #reply
    if not buckets[i] then
      reply[last + 1] = 0
      reply[last + 2] = 0
      reply[last + 3] = blocked_retry_after_us
      reply[last + 4] = 0
    else
      local allowed, token_us, token_code, tau, until_full,
        until_full_after, kept = unpack(buckets[i])
      if all_allowed == 1 then
        store(KEYS[k0 + i], now + until_full_after, token_code,
          until_full_after)
        reply[last + 1] = 1
        reply[last + 2] = whole_tokens(tau - until_full_after, token_us)
        reply[last + 3] = 0
        reply[last + 4] = until_full_after
      else
        -- nothing is taken (when this key allows, another rejected): the
        -- bucket as it is, and its state stored as read if it was not
        if not kept then
          store(KEYS[k0 + i], now + until_full, token_code, until_full)
        end
        reply[last + 1] = allowed and 1 or 0
        reply[last + 2] = whole_tokens(tau - until_full, token_us)
        reply[last + 3] = allowed and 0 or until_full_after - tau
        reply[last + 4] = until_full
      end
    end
  end
end
)lua";


/* the parts of a script, joined at compile time */
template <size_t... N>
constexpr std::array<char, (N + ...) - sizeof...(N) + 1>
lua_join(const char (&... parts)[N])
{
    std::array<char, (N + ...) - sizeof...(N) + 1> script {};
    size_t at = 0;

    auto append = [&script, &at](const char *part, size_t len) {
        for (size_t i = 0; i < len; i++) {
            script[at++] = part[i];
        }
    };

    (append(parts, N - 1), ...);

    return script;
}


constexpr char decision_head[] = R"lua(-- ngx_http_rate_limit: GCRA token buckets, all or nothing.
-- Twin of ngx_http_rate_limit_decide(): keep the arithmetic identical.
-- KEYS[i]: a bucket, holding its TAT in whole microseconds and the code
-- of the token length it was counted in.
-- ARGV[4i-3]: interval_us, ARGV[4i-2]: burst, ARGV[4i-1]: cost,
-- ARGV[4i]: the token code of the limit.
-- An interval or burst of 0 blocks the key: always rejected, never read.
-- Reply: {all_allowed, then per key: allowed, remaining,
--         retry_after_us, reset_us}, all integers.)lua";

constexpr char decision_main[] = R"lua(
local reply = {}
decide(0, 0, #KEYS, reply)
return reply
)lua";

constexpr auto decision_script = lua_join(decision_head, bucket_lua,
                                          decide_lua, decision_main);



/*
 * The decisions of several requests in one call, each all or nothing on
 * its own, in order: the module sends the requests that one pass of the
 * event loop gathers for a server, so that Redis runs one script for them
 * all rather than one each.
 */
constexpr char batch_head[] = R"lua(-- ngx_http_rate_limit: the decisions of several requests, in order.
-- ARGV[1]: the number of requests; then for each, its number of keys n
-- and n times interval_us, burst, cost, token code.  KEYS: the requests'
-- keys in turn.
-- Reply: the reply of the script for several keys for each request, one
-- after the other.)lua";

constexpr char batch_main[] = R"lua(
local reply = {}
local k0, a0 = 0, 1
for request = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a0 + 1])
  decide(k0, a0 + 1, n, reply)
  k0 = k0 + n
  a0 = a0 + 1 + 4 * n
end
return reply
)lua";

constexpr auto batch_script = lua_join(batch_head, bucket_lua, decide_lua,
                                       batch_main);



/*
 * The same decision for a request under one Redis limit, the common case,
 * without the tables and loops that several keys need: Redis spends about
 * a quarter less time in it.  Its reply is laid out as the other's.
 */
constexpr char decision_one_head[] = R"lua(-- ngx_http_rate_limit: one GCRA token bucket.
-- The arithmetic of the script for several keys, for KEYS[1] alone.
-- ARGV: interval_us, burst, cost, token code.  Reply: {allowed, allowed,
-- remaining, retry_after_us, reset_us}, all integers.)lua";

constexpr char decision_one_main[] = R"lua(
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
local token_code = tonumber(ARGV[4])
burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
local tau = burst * token_us
local cost_us = math.min(tonumber(ARGV[3]), burst + 1) * token_us
local tat, code = stored_state(KEYS[1])
local until_full = until_full_us(tat, code, now, token_us, token_code, tau)
local until_full_after = until_full + cost_us
if until_full_after > tau then
  if not holds(tat, code, now, token_code, until_full) then
    store(KEYS[1], now + until_full, token_code, until_full)
  end
  return {0, 0, math.floor(math.max(tau - until_full, 0) / token_us),
    until_full_after - tau, until_full}
end
store(KEYS[1], now + until_full_after, token_code, until_full_after)
return {1, 1, math.floor(math.max(tau - until_full_after, 0) / token_us), 0,
  until_full_after}
)lua";

constexpr auto decision_one_script = lua_join(decision_one_head, bucket_lua,
                                              decision_one_main);


/*
 * Gives back the tokens of one key that its master allowed, when another
 * master rejected the same request (see the header).  Twin of refund(),
 * with the same names and the decision script's reading of the arguments
 * and of the stored TAT, so that a refund undoes exactly what was taken.
 */
constexpr char refund_head[] = R"lua(-- ngx_http_rate_limit: gives back the tokens of an allowed request.
-- Twin of ngx_http_rate_limit_refund(): keep the arithmetic identical.
-- KEYS[1]: a bucket, as the decision script stores it.
-- ARGV[1]: interval_us, ARGV[2]: burst, ARGV[3]: cost, ARGV[4]: token
-- code, as the decision script was sent them.  Reply: 1.)lua";

constexpr char refund_main[] = R"lua(
local interval_us = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
if interval_us == 0 or burst == 0 then
  -- is_blocked(): a blocked bucket never allowed anything
  return 1
end

-- whole_token_us(): half up, within [1, max_bucket_span_us]
local token_us = math.min(math.max(math.floor(interval_us + 0.5), 1),
  max_bucket_span_us)
local token_code = tonumber(ARGV[4])
burst = math.min(burst, math.floor(max_bucket_span_us / token_us))
local tau = burst * token_us
local cost_us = math.min(tonumber(ARGV[3]), burst + 1) * token_us

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
-- read as the decision script reads it
local tat, code = stored_state(KEYS[1])
local until_full = until_full_us(tat, code, now, token_us, token_code, tau)

if until_full <= cost_us then
  -- never refill beyond full; a missing key is a full bucket
  redis.call('DEL', KEYS[1])
else
  store(KEYS[1], now + until_full - cost_us, token_code, until_full - cost_us)
end

return 1
)lua";

constexpr auto refund_script = lua_join(refund_head, bucket_lua, refund_main);


/* a script's text and length, for the C side */
template <size_t N>
const char *
script_text(const std::array<char, N> &script, size_t *len) noexcept
{
    if (len != nullptr) {
        *len = N - 1;
    }

    return script.data();
}


/*
 * A script's SHA-1 in hex, computed on first use, once for each script:
 * C++11 makes the initialisation of the static thread safe.
 */
template <const auto &Script>
const char *
script_sha1() noexcept
{
    struct Sha1 {
        std::array<char, NGX_HTTP_RATE_LIMIT_SHA1_HEX + 1> hex {};

        Sha1() noexcept
        {
            ngx_http_rate_limit_sha1_hex(
                reinterpret_cast<const unsigned char *>(Script.data()),
                Script.size() - 1, hex.data());
        }
    };

    static const Sha1 sha1;

    return sha1.hex.data();
}

} // namespace


extern "C" const char *
ngx_http_rate_limit_script(size_t *len) noexcept
{
    return script_text(decision_script, len);
}


extern "C" const char *
ngx_http_rate_limit_script_sha1(void) noexcept
{
    return script_sha1<decision_script>();
}


extern "C" const char *
ngx_http_rate_limit_script_one(size_t *len) noexcept
{
    return script_text(decision_one_script, len);
}


extern "C" const char *
ngx_http_rate_limit_script_one_sha1(void) noexcept
{
    return script_sha1<decision_one_script>();
}


extern "C" const char *
ngx_http_rate_limit_batch_script(size_t *len) noexcept
{
    return script_text(batch_script, len);
}


extern "C" const char *
ngx_http_rate_limit_batch_script_sha1(void) noexcept
{
    return script_sha1<batch_script>();
}


extern "C" const char *
ngx_http_rate_limit_refund_script(size_t *len) noexcept
{
    return script_text(refund_script, len);
}


extern "C" const char *
ngx_http_rate_limit_refund_script_sha1(void) noexcept
{
    return script_sha1<refund_script>();
}
