"""Harder cases: odd keys, many limits, Redis losing its state or clients."""

import time

import pytest

from conftest import loc, redis_conf, sha1_hex, unique_key, wait_for

TIMEOUT, MARGIN = 0.05, 0.25


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


@pytest.mark.parametrize("key", ["100%s%d%n%b", "a b\tc", "k\u00e9y-\u00ff", "*3\r", "$-1"],
                         ids=["printf", "spaces", "latin1", "resp-star", "resp-dollar"])
def test_odd_keys(nginx_factory, redis, backend, key):
    if "\r" in key:
        key = key.replace("\r", "")      # not allowed in a header
    n = nginx_factory("odd", http=[redis_conf(redis),
                                   "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 "
                                   "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    raw = key.encode("latin-1")
    assert n.statuses("/l/x", key, 3) == [200, 200, 429]
    assert n.get("/l/x", key=unique_key()).status == 200        # others unaffected
    if backend == "redis":
        stored = [k for k in redis.keys() if k.startswith("rlt:z:") and not k.startswith("rlt:z:k-")]
        assert stored == ["rlt:z:" + raw.decode("utf-8", "surrogateescape")], stored


def test_long_keys_differing_at_the_end_are_distinct(nginx_factory, redis, backend):
    n = nginx_factory("long", http=[redis_conf(redis),
                                    "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1 "
                                    "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    base = "x" * 400
    for i in range(4):
        assert n.statuses("/l/x", base + str(i), 2) == [200, 429], i
    if backend == "redis":
        # but the node registry's, which the first heartbeat writes at 100 ms
        stored = [k for k in redis.keys() if k != "rlt:nodes"]
        assert stored == sorted("rlt:z:#" + sha1_hex(base + str(i)) for i in range(4))


def test_many_limits_all_or_nothing(nginx_factory, redis, backend):
    zones = ["rate_limit_zone $http_x_key zone=m%d:1m rate=1r/m burst=%d backend=%s;"
             % (b, b, backend) for b in range(1, 7)]
    n = nginx_factory("many", http=[redis_conf(redis)] + zones, locations=[
        loc("/all/", *["rate_limit zone=m%d" % b for b in (6, 3, 1, 5, 2, 4)]),
        loc("/m6/", "rate_limit zone=m6"),
    ]).start()
    key = unique_key()
    rs = [n.get("/all/x", key=key) for _ in range(4)]
    assert [r.status for r in rs] == [200, 429, 429, 429]
    # every policy in the order of the lines; RateLimit the closest, m1
    policy = ", ".join('"m%d";q=%d;w=%d' % (b, b, 60 * b) for b in (6, 3, 1, 5, 2, 4))
    assert [r.h("RateLimit-Policy") for r in rs[:2]] == [policy] * 2
    assert [r.h("RateLimit") for r in rs[:2]] == ['"m1";r=0;t=60'] * 2
    r = n.get("/m6/x", key=key)
    assert r.h("X-RateLimit-Remaining") == "4", r.describe()     # 6 - 1 - 1


def test_script_cache_flushed(nginx_factory, redis):
    """SCRIPT FLUSH (as after a failover to a replica): NOSCRIPT replies must
    not leave the module failing for good."""
    n = nginx_factory("flush", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 on_failure=closed;",
    ], locations=[loc("/l/", "rate_limit zone=z")]).start()
    assert n.get("/l/x", key=unique_key()).rls == "PASSED"
    assert redis.cmd("SCRIPT", "FLUSH") == "OK"
    seen = []

    def passes():
        r = n.get("/l/x", key=unique_key())
        seen.append(r.rls)
        return r.rls == "PASSED"
    wait_for(passes, 5, interval=0.1, what="enforcement after SCRIPT FLUSH")
    key = unique_key()
    assert n.statuses("/l/x", key, 3) == [200, 200, 429]


def test_connections_killed_by_redis(nginx_factory, redis):
    """CLIENT KILL drops the workers' connections: they reconnect."""
    n = nginx_factory("kill", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2;",
    ], locations=[loc("/l/", "rate_limit zone=z")]).start()
    assert n.get("/l/x", key=unique_key()).rls == "PASSED"
    for _ in range(2):
        redis.cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        for i in range(5):
            t0 = time.monotonic()
            r = n.get("/l/x", key=unique_key())
            assert time.monotonic() - t0 < TIMEOUT + MARGIN
            assert r.status == 200 and r.rls in ("PASSED", "FAILED_OPEN"), r.describe()
        wait_for(lambda: n.get("/l/x", key=unique_key()).rls == "PASSED", 5, interval=0.1,
                 what="enforcement after CLIENT KILL")
    assert n.statuses("/l/x", unique_key(), 3) == [200, 200, 429]


def test_redis_frozen_before_nginx_starts(nginx_factory, redis):
    """Connect accepted by the kernel but no reply to the set-up commands:
    requests still answer within the timeout, and Redis is used once thawed."""
    n = nginx_factory("frozen0", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 on_failure=closed;",
    ], locations=[loc("/l/", "rate_limit zone=z")])
    with redis.frozen_for():
        n.start()
        for i in range(8):
            t0 = time.monotonic()
            r = n.get("/l/x", key=unique_key(), timeout=5)
            dt = time.monotonic() - t0
            assert dt < TIMEOUT + MARGIN, (i, dt)
            assert (r.status, r.rls) == (429, "FAILED_CLOSED"), r.describe()
        time.sleep(1.5)          # longer than any connect timeout
        r = n.get("/l/x", key=unique_key(), timeout=5)
        assert (r.status, r.rls) == (429, "FAILED_CLOSED")
    wait_for(lambda: n.get("/l/x", key=unique_key()).rls == "PASSED", 6, interval=0.1,
             what="enforcement after SIGCONT")
    assert n.statuses("/l/x", unique_key(), 3) == [200, 200, 429]
