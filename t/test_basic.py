"""Counting: burst, refill, keys, sharing between instances, concurrency."""

import http.client
import time

import pytest

from conftest import loc, redis_conf, run_threads, unique_key, WORKERS


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


def start_one(nginx_factory, redis, zones, locations, backend_name=None, **kw):
    http = [redis_conf(redis)] + list(zones)
    n = nginx_factory(backend_name or "ngx", http=http, locations=locations, **kw)
    return n.start()


def test_exactly_burst_allowed(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z")])
    key = unique_key()
    got = n.statuses("/l/ok", key, 8)
    assert got == [200] * 5 + [429] * 3
    # still rejected: one per minute is far away
    assert n.get("/l/ok", key=key).status == 429


def test_keepalive_connection(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=3 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z"), loc("/free/")])
    key = unique_key()
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=5)
    try:
        rs = [n.get(p, key=key, conn=conn)
              for p in ["/l/x", "/free/x", "/l/x", "/l/x", "/free/x", "/l/x", "/free/x"]]
    finally:
        conn.close()
    assert [(r.status, r.rls) for r in rs] == [
        (200, "PASSED"), (200, None), (200, "PASSED"), (200, "PASSED"), (200, None),
        (429, "REJECTED"), (200, None)]
    assert rs[4].h("X-RateLimit-Limit") is None


def test_burst_defaults_to_rate_count(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=3r/m backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z")])
    assert n.statuses("/l/ok", unique_key(), 5) == [200] * 3 + [429] * 2


def test_default_backend_is_local_without_redis(nginx_factory):
    n = nginx_factory("noredis",
                      http=["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2;"],
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    key = unique_key()
    rs = [n.get("/l/ok", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429]
    assert [r.rls for r in rs] == ["PASSED", "PASSED", "REJECTED"]


def test_refill_after_sleep(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=2r/s burst=2 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z")])
    key = unique_key()
    t0 = time.monotonic()
    assert n.statuses("/l/ok", key, 3) == [200, 200, 429]
    # one token refills every 500 ms: after ~600 ms exactly one is back
    time.sleep(max(0.0, 0.6 - (time.monotonic() - t0)))
    got = n.statuses("/l/ok", key, 3)
    elapsed = time.monotonic() - t0
    assert elapsed < 0.95, "too slow to judge the refill (%.2fs)" % elapsed
    assert got == [200, 429, 429]


def test_separate_keys_are_independent(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z")])
    a, b = unique_key("a"), unique_key("b")
    assert n.statuses("/l/ok", a, 3) == [200, 200, 429]
    assert n.statuses("/l/ok", b, 3) == [200, 200, 429]
    assert n.get("/l/ok", key=a).status == 429


def test_empty_key_is_not_limited(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=z")])
    rs = [n.get("/l/ok") for _ in range(5)]                       # no X-Key
    rs += [n.get("/l/ok", headers={"X-Key": ""}) for _ in range(3)]
    assert [r.status for r in rs] == [200] * 8
    for r in rs:
        assert r.rls is None, r.describe()          # $rate_limit_status empty
        assert r.h("X-RateLimit-Limit") is None, r.describe()
        assert n.access_rls(r.rid) in ("", "-")


def test_empty_key_skips_only_that_zone(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=bykey:1m rate=1r/m burst=3 backend=%s;" % backend,
                   "rate_limit_zone $http_x_other zone=byother:1m rate=1r/m burst=1 "
                   "backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=byother", "rate_limit zone=bykey")])
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(4)]          # no X-Other
    assert [r.status for r in rs] == [200, 200, 200, 429]
    assert all(r.h("RateLimit-Policy") == '"bykey";q=3;w=180' for r in rs), \
        [r.describe() for r in rs]


def test_constant_key_is_one_global_bucket(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone global zone=all:1m rate=1r/m burst=3 backend=%s;" % backend],
                  [loc("/l/", "rate_limit zone=all")])
    got = [n.get("/l/ok", key=unique_key()).status for _ in range(3)]
    got += [n.get("/l/ok").status for _ in range(2)]
    assert got == [200, 200, 200, 429, 429]


def test_cost(nginx_factory, redis, backend):
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5 backend=%s;" % backend],
                  [loc("/c2/", "rate_limit zone=z cost=2"),
                   loc("/c1/", "rate_limit zone=z")])
    key = unique_key()
    r1, r2, r3 = [n.get("/c2/x", key=key) for _ in range(3)]
    assert (r1.status, r2.status, r3.status) == (200, 200, 429)
    assert r1.h("X-RateLimit-Remaining") == "3"
    assert r2.h("X-RateLimit-Remaining") == "1"
    assert r3.h("X-RateLimit-Remaining") == "1"
    assert r3.h("Retry-After") == "60"            # one more token is needed
    r4 = n.get("/c1/x", key=key)                  # the last token fits cost=1
    assert r4.status == 200 and r4.h("X-RateLimit-Remaining") == "0"
    assert n.get("/c1/x", key=key).status == 429


def test_inheritance(nginx_factory, redis, backend):
    zones = ["rate_limit_zone $http_x_key zone=srv:1m rate=1r/m burst=2 backend=%s;" % backend,
             "rate_limit_zone $http_x_key zone=own:1m rate=1r/m burst=4 backend=%s;" % backend]
    n = nginx_factory("inh", http=[redis_conf(redis)] + zones,
                      server="rate_limit zone=srv;",
                      locations=[loc("/inherit/"), loc("/own/", "rate_limit zone=own")]).start()
    key = unique_key()
    r = n.get("/inherit/x", key=key)
    assert (r.status, r.rls, r.h("X-RateLimit-Limit")) == (200, "PASSED", "2"), \
        "server-level rate_limit not inherited: GET /inherit/x -> %s" % r.describe()
    assert r.h("RateLimit-Policy").startswith('"srv";')
    assert n.statuses("/inherit/x", key, 2) == [200, 429]
    # a location with its own rate_limit lines does not add the server's
    rs = [n.get("/own/x", key=key) for _ in range(5)]
    assert [x.status for x in rs] == [200] * 4 + [429]
    assert rs[0].h("RateLimit-Policy").startswith('"own";')


def test_http_level_rate_limit_is_inherited(nginx_factory, redis, backend):
    zones = ["rate_limit_zone $http_x_key zone=top:1m rate=1r/m burst=2 backend=%s;" % backend,
             "rate_limit zone=top;"]
    n = nginx_factory("inh2", http=[redis_conf(redis)] + zones,
                      locations=[loc("/x/")]).start()
    rs = [n.get("/x/y", key=key) for key in [unique_key()] for _ in range(3)]
    assert [(r.status, r.rls) for r in rs] == [(200, "PASSED")] * 2 + [(429, "REJECTED")], \
        "http-level rate_limit not inherited: %s" % [r.describe() for r in rs]


def test_redis_bucket_shared_between_instances(nginx_factory, redis):
    zone = "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=3 backend=redis;"
    a = start_one(nginx_factory, redis, [zone], [loc("/l/", "rate_limit zone=z")], "a")
    b = start_one(nginx_factory, redis, [zone], [loc("/l/", "rate_limit zone=z")], "b")
    key = unique_key()
    assert a.statuses("/l/x", key, 2) == [200, 200]
    r = b.get("/l/x", key=key)
    assert r.status == 200 and r.h("X-RateLimit-Remaining") == "0"
    assert b.get("/l/x", key=key).status == 429
    assert a.get("/l/x", key=key).status == 429


def test_local_bucket_not_shared_between_instances(nginx_factory, redis):
    zone = "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=3 backend=local;"
    a = start_one(nginx_factory, redis, [zone], [loc("/l/", "rate_limit zone=z")], "a")
    b = start_one(nginx_factory, redis, [zone], [loc("/l/", "rate_limit zone=z")], "b")
    key = unique_key()
    assert a.statuses("/l/x", key, 4) == [200, 200, 200, 429]
    assert b.statuses("/l/x", key, 4) == [200, 200, 200, 429]
    assert redis.keys() == []           # nothing went to Redis


def _concurrent(instances, key, n_requests, path="/l/x"):
    def one(i):
        return instances[i % len(instances)].get(path, key=key, timeout=10)
    t0 = time.monotonic()
    results = run_threads(one, n_requests, timeout=60)
    elapsed = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, "request errors: %r" % errors[:5]
    return results, elapsed


@pytest.mark.parametrize("rate,count,period", [("1r/m", 1, 60.0), ("4r/s", 4, 1.0)])
def test_concurrent_two_instances_share_exactly(nginx_factory, redis, rate, count, period):
    burst = 20
    zone = ("rate_limit_zone $http_x_key zone=z:1m rate=%s burst=%d backend=redis "
            "on_failure=closed;" % (rate, burst))
    insts = [nginx_factory(name, http=["rate_limit_redis 127.0.0.1:%d timeout=2s prefix=rlt;"
                                       % redis.port, zone],
                           locations=[loc("/l/", "rate_limit zone=z")],
                           listen_opts="reuseport").start()
             for name in ("c1", "c2")]
    key = unique_key()
    results, elapsed = _concurrent(insts, key, 100)
    codes = [r.status for r in results]
    assert set(codes) <= {200, 429}, codes
    allowed = codes.count(200)
    ideal_max = burst + elapsed * count / period
    assert burst - 1 <= allowed <= int(ideal_max) + 1, \
        "allowed %d, ideal %d..%.2f (elapsed %.2fs)" % (allowed, burst, ideal_max, elapsed)
    rls = [r.rls for r in results]
    assert set(rls) <= {"PASSED", "REJECTED"}, sorted(set(rls))
    # the access logs agree with the responses, and with reuseport every
    # worker of both instances took part
    for n in insts:
        logged = n.access_for(key, 50)
        assert len(logged) == 50
        assert len({rec["pid"] for rec in logged}) == WORKERS
    logged = [rec for n in insts for rec in n.access_records() if rec["key"] == key]
    assert sum(1 for rec in logged if rec["rls"] == "PASSED") == allowed


def test_concurrent_local_workers_share_zone(nginx_factory, redis):
    burst = 20
    n = nginx_factory("cl", http=["rate_limit_zone $http_x_key zone=z:1m rate=1r/m "
                                  "burst=%d backend=local;" % burst],
                      locations=[loc("/l/", "rate_limit zone=z")],
                      listen_opts="reuseport", workers=WORKERS).start()
    key = unique_key()
    results, elapsed = _concurrent([n], key, 100)
    codes = [r.status for r in results]
    assert set(codes) <= {200, 429}
    assert codes.count(200) == burst
    assert len({rec["pid"] for rec in n.access_for(key, 100)}) == WORKERS


def test_local_zone_full_evicts_old_keys(nginx_factory):
    """A zone too small for every key keeps answering (the oldest buckets go),
    with no [alert]/[crit] (checked at teardown) and the newest key tracked."""
    n = nginx_factory("full", http=["rate_limit_zone $http_x_key zone=tiny:32k rate=1r/m "
                                    "burst=3 backend=local;"],
                      locations=[loc("/l/", "rate_limit zone=tiny")]).start()
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=5)
    try:
        got = set()
        for i in range(3000):
            r = n.get("/l/x", key="fill-%d" % i, conn=conn)
            got.add((r.status, r.rls))
    finally:
        conn.close()
    assert got == {(200, "PASSED")}
    assert n.statuses("/l/x", "fill-2999", 3) == [200, 200, 429]


def test_runs_before_access_phase(nginx_factory, redis, backend):
    """PREACCESS, like limit_req: a request the access phase denies has
    already taken its token, and a rejected one never reaches `deny`."""
    n = start_one(nginx_factory, redis,
                  ["rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 backend=%s;" % backend],
                  [loc("/denied/", "rate_limit zone=z", "deny all")])
    assert n.statuses("/denied/x", unique_key(), 4) == [403, 403, 429, 429]
