-- Reference rate limiter for bench/lua.conf: GCRA in a Redis script, called
-- with EVALSHA through lua-resty-redis (Debian's lua-nginx-redis).
local redis = require "nginx.redis"

local _M = {}

local host, port
local sha

-- KEYS[1]: bucket; ARGV: emission interval (us), burst, cost.
-- The value is the theoretical arrival time (TAT) in microseconds.
local SCRIPT = [[
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + cost * interval
if new_tat - burst * interval > now then
    return 0
end
local ttl = math.ceil((new_tat - now) / 1000)
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl)
return 1
]]

function _M.init(h, p)
    host, port = h, p
end

function _M.limit(key, interval_us, burst)
    local red = redis:new()
    red:set_timeout(200)
    local ok, err = red:connect(host, port)
    if not ok then
        ngx.log(ngx.ERR, "redis connect: ", err)
        return ngx.exit(429)
    end
    if not sha then
        sha, err = red:script("load", SCRIPT)
        if not sha then
            ngx.log(ngx.ERR, "script load: ", err)
            return ngx.exit(429)
        end
    end
    local res
    res, err = red:evalsha(sha, 1, key, interval_us, burst, 1)
    if not res then
        ngx.log(ngx.ERR, "evalsha: ", err)
        return ngx.exit(429)
    end
    red:set_keepalive(10000, 64)
    if res == 0 then
        return ngx.exit(429)
    end
end

return _M
