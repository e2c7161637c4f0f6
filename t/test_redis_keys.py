"""What the module stores in Redis, and how it reaches Redis."""

import time

import pytest

from conftest import loc, sha1_hex, unique_key
from test_limit_change import token_code


def buckets(r, db=None):
    """The keys in Redis but the node registry's (PREFIX:nodes), which the
    first heartbeat writes 100 ms after start, whatever the test does."""
    return [k for k in r.keys(db=db) if k != "rlt:nodes"]


def keyed_nginx(nginx_factory, redis_line, name="keys", main="", burst=5):
    return nginx_factory(name, http=[
        redis_line,
        "rate_limit_zone $http_x_key zone=kz:1m rate=1r/m burst=%d;" % burst,
    ], locations=[loc("/l/", "rate_limit zone=kz")], main=main).start()


def test_key_layout_value_and_ttl(nginx_factory, redis):
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d prefix=rlt;" % redis.port)
    key = unique_key()
    before_us = time.time() * 1e6
    assert n.get("/l/x", key=key).status == 200
    after_us = time.time() * 1e6
    name = "rlt:kz:%s" % key
    assert buckets(redis) == [name]
    # one integer, which Redis keeps integer-encoded: "-", the TAT in
    # microseconds and the 3-digit code of the token length (issue 8)
    value = redis.cmd("GET", name)
    assert value.startswith("-") and len(value) == 20, value
    assert redis.cmd("OBJECT", "ENCODING", name) == "int"
    tat = int(value[1:-3])
    assert int(value[-3:]) == token_code(60e6), value
    # one token taken at 1r/m: the bucket is full again 60 s from now
    assert before_us + 59e6 <= tat <= after_us + 60e6 + 1e6, (tat, before_us)
    pttl = redis.cmd("PTTL", name)
    assert 55000 <= pttl <= 60000, pttl
    # a second token: the TTL follows the time until the bucket is full
    assert n.get("/l/x", key=key).status == 200
    pttl2 = redis.cmd("PTTL", name)
    assert 115000 <= pttl2 <= 120000, pttl2
    assert int(redis.cmd("GET", name)[1:-3]) - tat == pytest.approx(60e6, abs=1e3)


def test_rejection_writes_nothing(nginx_factory, redis):
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d prefix=rlt;" % redis.port,
                    burst=1)
    key = unique_key()
    assert n.get("/l/x", key=key).status == 200
    name = "rlt:kz:%s" % key
    value = redis.cmd("GET", name)
    assert n.statuses("/l/x", key, 3) == [429] * 3
    assert redis.cmd("GET", name) == value


@pytest.mark.parametrize("key,stored", [
    ("a" * 256, "a" * 256),                          # at the limit: itself
    ("b" * 257, "#" + sha1_hex("b" * 257)),
    ("c" * 300, "#" + sha1_hex("c" * 300)),
    ("#short", "#" + sha1_hex("#short")),            # '#' is reserved
    ("with:colon", "with:colon"),
])
def test_long_and_hash_keys(nginx_factory, redis, key, stored):
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d prefix=rlt;" % redis.port,
                    burst=2)
    assert n.statuses("/l/x", key, 3) == [200, 200, 429]
    assert buckets(redis) == ["rlt:kz:" + stored]


def test_db_selected(nginx_factory, redis):
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d db=5 prefix=rlt;" % redis.port)
    key = unique_key()
    r = n.get("/l/x", key=key)
    assert (r.status, r.rls) == (200, "PASSED")
    assert redis.keys(db=0) == []
    assert buckets(redis, db=5) == ["rlt:kz:%s" % key]


def test_password(nginx_factory, redis_factory):
    r = redis_factory(password="pa55word")
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d password=pa55word "
                                   "prefix=rlt;" % r.port, burst=2)
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(3)]
    assert [(x.status, x.rls) for x in rs] == [(200, "PASSED"), (200, "PASSED"),
                                               (429, "REJECTED")]
    assert buckets(r) == ["rlt:kz:%s" % key]


def test_password_from_env(nginx_factory, redis_factory):
    r = redis_factory(password="fromenv")
    n = nginx_factory("penv", http=[
        "rate_limit_redis 127.0.0.1:%d password=env:RLT_PW prefix=rlt;" % r.port,
        "rate_limit_zone $http_x_key zone=kz:1m rate=1r/m burst=1;",
    ], locations=[loc("/l/", "rate_limit zone=kz")], main="env RLT_PW;")
    n.env["RLT_PW"] = "fromenv"
    n.start()
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(2)]
    assert [(x.status, x.rls) for x in rs] == [(200, "PASSED"), (429, "REJECTED")]


def test_wrong_password_fails_open(nginx_factory, redis_factory):
    r = redis_factory(password="right")
    n = keyed_nginx(nginx_factory, "rate_limit_redis 127.0.0.1:%d password=wrong "
                                   "timeout=50ms;" % r.port, name="wrongpw")
    for _ in range(3):
        x = n.get("/l/x", key="k")
        assert (x.status, x.rls) == (200, "FAILED_OPEN")


def test_unix_socket(nginx_factory, redis_factory):
    r = redis_factory(unixsocket=True)
    n = keyed_nginx(nginx_factory, "rate_limit_redis unix:%s prefix=rlt;" % r.unixsocket,
                    name="unix", burst=1)
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(2)]
    assert [(x.status, x.rls) for x in rs] == [(200, "PASSED"), (429, "REJECTED")]
    assert buckets(r) == ["rlt:kz:%s" % key]


def test_binary_key(nginx_factory, redis):
    n = nginx_factory("bin", http=[
        "rate_limit_redis 127.0.0.1:%d prefix=rlt;" % redis.port,
        "rate_limit_zone $binary_remote_addr zone=ip:1m rate=1r/m burst=2;",
    ], locations=[loc("/l/", "rate_limit zone=ip")]).start()
    assert n.statuses("/l/x", None, 3) == [200, 200, 429]
    assert buckets(redis) == ["rlt:ip:\x7f\x00\x00\x01"]
