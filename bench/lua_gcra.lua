-- Setup 3, the OpenResty-style peer: a GCRA token bucket in a Redis script,
-- called with EVALSHA from access_by_lua through lua-resty-redis (Debian's
-- lua-nginx-redis, Lua module "nginx.redis") on pooled connections.  Written
-- the way its users are advised to: the script is atomic, its SHA-1 is known
-- up front (EVAL once on NOSCRIPT), connections go back to the keepalive pool,
-- the clock is Redis' TIME, and the reply gives the client the same headers
-- as the module's (limit, remaining, reset, Retry-After).  Not this
-- project's code: the reference it is measured against.
local redis = require "nginx.redis"

local ngx = ngx
local tonumber = tonumber

local _M = {}

local host, port
local timeout_ms = 200
local pool_idle_ms = 60000
local pool_size = 128

-- KEYS[1]: bucket, holding its theoretical arrival time (TAT) in
-- microseconds.  ARGV: emission interval (us), burst, cost.
-- Reply: {allowed, remaining, reset_ms or retry_after_ms}.
local SCRIPT = [[
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local tau = burst * interval
local new_tat = tat + cost * interval
if new_tat - now > tau then
    return {0, math.floor((tau - (tat - now)) / interval),
            math.ceil((new_tat - now - tau) / 1000)}
end
local ttl = math.max(math.ceil((new_tat - now) / 1000), 1)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return {1, math.floor((tau - (new_tat - now)) / interval), ttl}
]]

local SHA = ngx.sha1_bin(SCRIPT):gsub(".", function(c)
    return string.format("%02x", c:byte())
end)

function _M.init(h, p)
    host, port = h, p
end

local function reject(retry_after_ms)
    ngx.header["Retry-After"] = math.ceil(retry_after_ms / 1000)
    return ngx.exit(429)
end

-- fail closed, like the module's zones in this benchmark
local function failed(red, what, err)
    ngx.log(ngx.ERR, what, ": ", err)
    red:close()
    return ngx.exit(429)
end

function _M.limit(key, interval_us, burst)
    local red = redis:new()
    red:set_timeout(timeout_ms)
    local ok, err = red:connect(host, port)
    if not ok then
        ngx.log(ngx.ERR, "redis connect: ", err)
        return ngx.exit(429)
    end

    local res
    res, err = red:evalsha(SHA, 1, key, interval_us, burst, 1)
    if not res and err and err:find("NOSCRIPT", 1, true) then
        res, err = red:eval(SCRIPT, 1, key, interval_us, burst, 1)
    end
    if not res then
        return failed(red, "evalsha", err)
    end
    red:set_keepalive(pool_idle_ms, pool_size)

    local h = ngx.header
    h["X-RateLimit-Limit"] = burst
    h["X-RateLimit-Remaining"] = res[2]
    if res[1] == 0 then
        return reject(res[3])
    end
    h["X-RateLimit-Reset"] = math.ceil(res[3] / 1000)
end

return _M
