"""The cache of rejections: once Redis rejects a key, the node rejects it
again without a round trip until the time Redis gave, and never longer."""

import re
import time

from conftest import loc, unique_key, wait_for

METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"


def cache_conf(redis, rate="1r/m", burst=2):
    return dict(http=[
        "rate_limit_redis 127.0.0.1:%d timeout=200ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=%s burst=%d;" % (rate, burst),
        "rate_limit_zone $http_x_key zone=other:1m rate=1r/m burst=100;",
    ], locations=[loc("/l/", "rate_limit zone=z"),
                  loc("/both/", "rate_limit zone=other", "rate_limit zone=z"),
                  METRICS])


def cache_nginx(nginx_factory, redis, **kw):
    return nginx_factory("cache", **cache_conf(redis, **kw))


def cached(n, zone="z"):
    text = n.get("/metrics").body.decode()
    m = re.search(r'nginx_rate_limit_cached_rejections_total\{zone="%s"\} (\d+)' % zone, text)
    return int(m.group(1))


def test_rejections_cost_no_round_trip(nginx_factory, redis):
    n = cache_nginx(nginx_factory, redis).start()
    key = unique_key()
    first = [n.get("/l/x", key=key) for _ in range(3)]
    assert [r.status for r in first] == [200, 200, 429]
    with redis.monitor() as seen:
        rest = [n.get("/l/x", key=key) for _ in range(50)]
    assert {(r.status, r.rls) for r in rest} == {(429, "REJECTED")}
    # no request went to Redis: none of its commands (a worker's SCRIPT
    # LOAD or the node's heartbeat may run meanwhile) names a bucket of the
    # zone; and the metric says where they came from
    assert [c for c in seen if any(a.startswith("rlt:z:") for a in c)] == []
    assert cached(n) >= 50 - 2      # the other worker may ask Redis once
    # the headers still tell the client when to come back
    retry = [int(r.h("Retry-After")) for r in rest]
    assert all(55 <= x <= int(first[2].h("Retry-After")) for x in retry), retry
    assert all(r.h("X-RateLimit-Remaining") == "0" for r in rest)
    # a request rejected from the cache takes nothing from the other limit
    assert n.get("/both/x", key=key).status == 429
    r = n.get("/both/x", key=unique_key())
    assert r.status == 200
    assert redis.cmd("EXISTS", "rlt:other:" + key) == 0


def test_cache_ends_when_redis_said(nginx_factory, redis):
    """10 r/s, burst 1: a rejected key is allowed again 100 ms later, by
    Redis, not held back by the cache."""
    n = cache_nginx(nginx_factory, redis, rate="10r/s", burst=1).start()
    for _ in range(5):
        key = unique_key()
        assert n.get("/l/x", key=key).status == 200
        t0 = time.monotonic()
        statuses = []
        while time.monotonic() - t0 < 0.5:
            r = n.get("/l/x", key=key)
            statuses.append((round(time.monotonic() - t0, 3), r.status))
            if r.status == 200:
                break
        passed_at = statuses[-1][0]
        assert statuses[-1][1] == 200 and passed_at < 0.2, statuses


def test_cache_forgets_when_limits_change(nginx_factory, redis):
    n = cache_nginx(nginx_factory, redis, burst=1).start()
    key = unique_key()
    assert n.statuses("/l/x", key, 3) == [200, 429, 429]
    # a reload with a larger bucket: Redis would allow now, so must we
    n.configure(**cache_conf(redis, burst=5))
    n.reload()
    assert n.get("/l/x", key=key).status == 200


def test_cache_forgets_when_a_client_limit_changes(nginx_factory, redis, postgres):
    """A per-client limit raised in PostgreSQL applies at once, even to a
    key the cache holds as rejected."""
    db = postgres.new_db()
    conf = cache_conf(redis, burst=1)
    conf["http"].insert(0, 'rate_limit_postgres "%s" interval=10s;' % postgres.conninfo(db))
    n = nginx_factory("cachepg", **conf)
    mark = n.log_mark()
    n.start()
    wait_for(lambda: n.error_lines(r"rate_limit_postgres: full sync of", mark), 8,
             what="the first sync")
    key = unique_key()
    assert n.statuses("/l/x", key, 3) == [200, 429, 429]
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "VALUES ('z', '%s', '1r/m', 10)" % key, db)
    wait_for(lambda: n.get("/l/x", key=key).status == 200, 3, interval=0.05,
             what="the raised limit to apply")
