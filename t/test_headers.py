"""Response headers (contract section "Response headers")."""

import pytest

from conftest import loc, redis_conf, unique_key

HEADERS = ["RateLimit-Policy", "RateLimit", "X-RateLimit-Limit",
           "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"]


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


def hdrs(r):
    return {h: r.h(h) for h in HEADERS}


def test_header_values_allow_and_reject(nginx_factory, redis, backend):
    n = nginx_factory("h", http=[redis_conf(redis),
                                 "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5 "
                                 "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    key = unique_key()
    for i in range(5):
        r = n.get("/l/x", key=key)
        remaining, reset = 4 - i, 60 * (i + 1)
        assert r.status == 200
        assert hdrs(r) == {
            "RateLimit-Policy": '"z";q=5;w=300',
            "RateLimit": '"z";r=%d;t=%d' % (remaining, reset),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "Retry-After": None,
        }, "request %d" % (i + 1)
    for _ in range(2):
        r = n.get("/l/x", key=key)
        assert r.status == 429
        assert hdrs(r) == {
            "RateLimit-Policy": '"z";q=5;w=300',
            "RateLimit": '"z";r=0;t=60',
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "300",
            "Retry-After": "60",
        }


@pytest.mark.parametrize("rate,burst,policy_w,reset1", [
    ("10r/s", 5, 1, 1),           # ceil(5 * 1 / 10) = 1 (min 1); 100 ms -> 1
    ("5r/30s", 10, 60, 6),        # ceil(10 * 30 / 5) = 60; 6 s per token
    ("1r/d", 2, 172800, 86400),
    ("3r/500ms", 3, 1, 1),        # ceil(3 * 0.5 / 3) = 1 (0.5 -> 1)
    ("1r/h", 7, 25200, 3600),
])
def test_policy_window_and_reset(nginx_factory, redis, backend, rate, burst, policy_w, reset1):
    n = nginx_factory("hw", http=[redis_conf(redis),
                                  "rate_limit_zone $http_x_key zone=win:1m rate=%s burst=%d "
                                  "backend=%s;" % (rate, burst, backend)],
                      locations=[loc("/l/", "rate_limit zone=win")]).start()
    r = n.get("/l/x", key=unique_key())
    assert r.status == 200
    assert hdrs(r) == {
        "RateLimit-Policy": '"win";q=%d;w=%d' % (burst, policy_w),
        "RateLimit": '"win";r=%d;t=%d' % (burst - 1, reset1),
        "X-RateLimit-Limit": str(burst),
        "X-RateLimit-Remaining": str(burst - 1),
        "X-RateLimit-Reset": str(reset1),
        "Retry-After": None,
    }


def test_headers_off(nginx_factory, redis, backend):
    n = nginx_factory("hoff", http=[redis_conf(redis),
                                    "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1 "
                                    "backend=%s;" % backend],
                      locations=[loc("/off/", "rate_limit zone=z", "rate_limit_headers off"),
                                 loc("/on/", "rate_limit zone=z")]).start()
    key = unique_key()
    r1, r2 = n.get("/off/x", key=key), n.get("/off/x", key=key)
    assert (r1.status, r2.status) == (200, 429)
    for r in (r1, r2):
        assert hdrs(r) == dict.fromkeys(HEADERS), r.describe()
    # the same zone with headers on (the default) still describes itself
    r3 = n.get("/on/x", key=key)
    assert r3.status == 429 and r3.h("Retry-After") == "60"


def test_headers_off_inherited_from_server(nginx_factory, redis):
    n = nginx_factory("hoff2", http=[redis_conf(redis),
                                     "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1;"],
                      server="rate_limit_headers off;",
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    key = unique_key()
    for r in (n.get("/l/x", key=key), n.get("/l/x", key=key)):
        assert hdrs(r) == dict.fromkeys(HEADERS), r.describe()


def two_zone_nginx(nginx_factory, redis, backend):
    return nginx_factory("multi", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=big:1m rate=1r/m burst=10 backend=%s;" % backend,
        "rate_limit_zone $http_x_key zone=small:1m rate=1r/m burst=3 backend=%s;" % backend,
    ], locations=[
        loc("/both/", "rate_limit zone=big", "rate_limit zone=small"),
        loc("/both-rev/", "rate_limit zone=small", "rate_limit zone=big"),
        loc("/big/", "rate_limit zone=big"),
        loc("/small/", "rate_limit zone=small"),
    ]).start()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_multiple_limits_describe_closest(nginx_factory, redis, backend, path):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    rs = [n.get(path + "x", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200] * 3
    for i, r in enumerate(rs):
        # small: 3 - (i+1) left; big: 10 - (i+1) left; small is closer
        assert r.h("RateLimit-Policy") == '"small";q=3;w=180'
        assert r.h("RateLimit") == '"small";r=%d;t=%d' % (2 - i, 60 * (i + 1))
        assert r.h("X-RateLimit-Limit") == "3"
        assert r.h("X-RateLimit-Remaining") == str(2 - i)
        assert r.h("Retry-After") is None
    r = n.get(path + "x", key=key)
    assert r.status == 429
    assert hdrs(r) == {
        "RateLimit-Policy": '"small";q=3;w=180',
        "RateLimit": '"small";r=0;t=60',
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "180",
        "Retry-After": "60",
    }


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_rejected_request_takes_no_token_from_other_zone(nginx_factory, redis, backend, path):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    assert n.statuses(path + "x", key, 6) == [200] * 3 + [429] * 3
    # big: 3 taken by the allowed requests, none by the 3 rejected ones
    r = n.get("/big/x", key=key)
    assert r.status == 200
    assert r.h("X-RateLimit-Remaining") == "6", r.describe()
    assert r.h("RateLimit-Policy") == '"big";q=10;w=600'


def test_rejected_by_big_takes_nothing_from_small(nginx_factory, redis, backend):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    # drain big through its own location (10 tokens)
    assert n.statuses("/big/x", key, 11) == [200] * 10 + [429]
    r = n.get("/both/x", key=key)
    assert r.status == 429
    assert r.h("RateLimit-Policy") == '"big";q=10;w=600'
    assert r.h("Retry-After") == "60"
    # small was untouched by the rejection
    r = n.get("/small/x", key=key)
    assert r.status == 200 and r.h("X-RateLimit-Remaining") == "2", r.describe()


def mixed_nginx(nginx_factory, redis, local_burst, redis_burst, on_failure="open",
                redis_line=None):
    return nginx_factory("mixed", http=[
        redis_line or redis_conf(redis),
        "rate_limit_zone $http_x_key zone=loc:1m rate=1r/m burst=%d backend=local;" % local_burst,
        "rate_limit_zone $http_x_key zone=red:1m rate=1r/m burst=%d backend=redis "
        "on_failure=%s;" % (redis_burst, on_failure),
    ], locations=[
        loc("/both/", "rate_limit zone=loc", "rate_limit zone=red"),
        loc("/both-rev/", "rate_limit zone=red", "rate_limit zone=loc"),
        loc("/loc/", "rate_limit zone=loc"),
        loc("/red/", "rate_limit zone=red"),
    ]).start()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_mixed_backends_redis_rejects_local_keeps_tokens(nginx_factory, redis, path):
    n = mixed_nginx(nginx_factory, redis, local_burst=10, redis_burst=2)
    key = unique_key()
    rs = [n.get(path + "x", key=key) for _ in range(5)]
    assert [r.status for r in rs] == [200, 200, 429, 429, 429]
    assert rs[2].h("RateLimit-Policy") == '"red";q=2;w=120'
    r = n.get("/loc/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "7"), \
        "local tokens taken by requests Redis rejected: %s" % r.describe()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_mixed_backends_local_rejects_redis_keeps_tokens(nginx_factory, redis, path):
    n = mixed_nginx(nginx_factory, redis, local_burst=2, redis_burst=10)
    key = unique_key()
    rs = [n.get(path + "x", key=key) for _ in range(5)]
    assert [r.status for r in rs] == [200, 200, 429, 429, 429]
    assert rs[2].h("RateLimit-Policy") == '"loc";q=2;w=120'
    r = n.get("/red/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "7"), \
        "Redis tokens taken by requests the local zone rejected: %s" % r.describe()
    name = "rlt:red:%s" % key
    # nothing else but the node registry
    assert [k for k in redis.keys() if k != "rlt:nodes"] == [name]


def test_mixed_backends_failed_closed_keeps_local_tokens(nginx_factory, redis):
    """FAILED_CLOSED rejects the request, so (all-or-nothing) the local zone
    it also passed through keeps its token."""
    redis.stop()
    n = mixed_nginx(nginx_factory, redis, local_burst=5, redis_burst=5, on_failure="closed",
                    redis_line="rate_limit_redis 127.0.0.1:%d timeout=50ms;" % redis.port)
    key = unique_key()
    rs = [n.get("/both/x", key=key) for _ in range(3)]
    assert [(r.status, r.rls) for r in rs] == [(429, "FAILED_CLOSED")] * 3
    r = n.get("/loc/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "4"), r.describe()


def test_retry_after_at_least_one_second(nginx_factory, redis, backend):
    n = nginx_factory("ra", http=[redis_conf(redis),
                                  "rate_limit_zone $http_x_key zone=fast:1m rate=10r/s burst=1 "
                                  "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=fast")]).start()
    key = unique_key()
    r1, r2 = n.get("/l/x", key=key), n.get("/l/x", key=key)
    if r2.status == 200:          # 100 ms passed between the two: try again
        r1, r2 = n.get("/l/x", key=key), n.get("/l/x", key=key)
    assert (r1.status, r2.status) == (200, 429)
    assert r2.h("Retry-After") == "1"
    assert r2.h("RateLimit") == '"fast";r=0;t=1'
    assert r2.h("X-RateLimit-Reset") == "1"
