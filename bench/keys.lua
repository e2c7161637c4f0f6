-- wrk script for bench/run.sh and bench/memory.sh: every request carries an
-- X-Key header of 16 bytes, the client key the limiters under test are keyed
-- on (plain nginx, limit_req and backend=local ignore it).  All setups use
-- this script, so the client does the same work in each of them.
--
-- Environment:
--   BENCH_PATH   the path to request (default /bench/hello.txt)
--   BENCH_KEYS   how keys are chosen:
--     unique     a new key every request (the default)
--     one        the same key for every request
--     random:N   a key drawn at random from N keys "a000000000000000" ...
--                (the keys that bench/populate.py stores)
--     cycle:N    N distinct keys, split between the BENCH_THREADS threads
--                of wrk (default 1), then the same keys again
--   BENCH_SALT   3 characters that start unique and cycle keys, so that two
--                runs on one Redis do not share keys (default "run")
--
-- The request is built once as two halves around the key: a request
-- function this small keeps wrk's own cost per request low.

local path = os.getenv("BENCH_PATH") or "/bench/hello.txt"
local mode = os.getenv("BENCH_KEYS") or "unique"
local salt = string.sub((os.getenv("BENCH_SALT") or "run") .. "___", 1, 3)

local kind, count = string.match(mode, "^(%a+):?(%d*)$")
count = tonumber(count)
if kind == nil or (kind ~= "unique" and kind ~= "one" and count == nil)
        or (count ~= nil and count < 1) then
    error("BENCH_KEYS: unknown mode '" .. mode .. "'")
end

local next_id = 0

function setup(thread)
    thread:set("id", next_id)
    next_id = next_id + 1
end

local head, tail
local counter = 0
local per_thread

function init(args)
    head = "GET " .. path .. " HTTP/1.1\r\nHost: " .. wrk.host
        .. "\r\nX-Key: "
    tail = "\r\n\r\n"
    math.randomseed(os.time() * 1000 + id)
    if kind == "cycle" then
        -- wrk tells a thread neither the number of threads nor its share
        local n = tonumber(os.getenv("BENCH_THREADS") or "1")
        per_thread = math.ceil(count / n)
    end
end

local function key()
    if kind == "unique" then
        counter = counter + 1
        return string.format("%s%02d%011d", salt, id, counter)
    elseif kind == "one" then
        return "abuser0000000000"
    elseif kind == "random" then
        return string.format("a%015d", math.random(0, count - 1))
    else
        local k = string.format("%s%02d%011d", salt, id, counter)
        counter = (counter + 1) % per_thread
        return k
    end
end

function request()
    return head .. key() .. tail
end
