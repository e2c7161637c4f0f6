"""A client's limit changes: the tokens it has used are carried over (issue 8).

Whichever way the limit changes (the bucket API and its PostgreSQL row, the
policy file, a zone's rate or burst after a reload), with backend=redis and
backend=local alike, the next decision counts the tokens the client has
used, capped at the new burst, and refills at the new rate from then on;
no client waits longer than the new limit's full refill.  And a bucket
that a version before this one stored in Redis, a plain TAT, is read as
counted in the limit in force, then written in the new form.

The buckets use tokens of minutes or hours, so that nothing refills while a
test runs.
"""

import json
import http.client
import time

import pytest

from conftest import loc, unique_key, wait_for

API = "/rl-api/"
API_LOCATION = ("        location %s {\n            rate_limit_api;\n"
                "            access_log off;\n"
                "            add_header X-API yes always;\n        }\n" % API)
BACKENDS = ["redis", "local"]

# the token codes, as the core and the scripts compute them (see
# ngx_http_rate_limit_core.h): Python's floats are the same doubles
TOKEN_CODE_RATIO = 1.0352138175434404


def token_code(token_us):
    length, code = 1.0, 1
    while length < token_us and code < 999:
        length *= TOKEN_CODE_RATIO
        code += 1
    return code


def zone_line(rate, burst, backend):
    return "rate_limit_zone $http_x_key zone=lc:1m rate=%s burst=%d backend=%s;" % (
        rate, burst, backend)


def redis_line(redis):
    return "rate_limit_redis 127.0.0.1:%d timeout=500ms prefix=rlc;" % redis.port


def remaining(r):
    return int(r.h("X-RateLimit-Remaining"))


def use(n, key, count):
    """count requests that must all pass."""
    statuses = n.statuses("/l/x", key, count)
    assert statuses == [200] * count, statuses


def api(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json", "Connection": "close"})
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        conn.close()


@pytest.fixture
def api_node(nginx_factory, postgres, redis):
    """make(rate, burst, backend) -> Nginx with the bucket API, synced."""
    def make(rate, burst, backend):
        db = postgres.new_db()
        n = nginx_factory("lc-api")
        n.configure(http=['rate_limit_postgres "%s" interval=10s;' % postgres.conninfo(db),
                          redis_line(redis), zone_line(rate, burst, backend)],
                    locations=[loc("/l/", "rate_limit zone=lc"), API_LOCATION])
        mark = n.log_mark()
        n.start()
        wait_for(lambda: n.error_lines(r"rate_limit_postgres: full sync of", mark), 8.0,
                 what="first full sync")
        return n
    return make


def set_limit(n, key, rate, burst):
    """The client's limit through the bucket API, in force once it returns."""
    status, body = api(n.port, "POST", API + "buckets/lc", {"key": key, "rate": rate,
                                                           "burst": burst})
    assert status == 201, (status, body)
    # the serving node answers with the write (a look takes no token)
    wait_for(lambda: api(n.port, "GET", API + "buckets/lc/" + key)[1]["burst"] == burst,
             3.0, what="the new limit")


# --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_raised_through_the_api_keeps_the_tokens_used(api_node, backend):
    """Used 10 of 1r/h burst=10, raised to 1000r/h burst=1000: about 989 left
    after the next request, not 429 with Retry-After 35999."""
    n = api_node("1r/h", 10, backend)
    key = unique_key("raised")
    use(n, key, 10)
    assert n.get("/l/x", key=key).status == 429

    set_limit(n, key, "1000r/h", 1000)
    r = n.get("/l/x", key=key)
    assert r.status == 200, r.describe()
    # 10 used and this one: 989, or 988 from the code's rounding down
    assert 988 <= remaining(r) <= 989, r.describe()
    assert r.h("X-RateLimit-Limit") == "1000"


@pytest.mark.parametrize("backend", BACKENDS)
def test_lowered_through_the_api_keeps_the_tokens_used(api_node, backend):
    """Used 2 of 1r/h burst=10, lowered to 10r/h burst=3: exactly 1 more."""
    n = api_node("1r/h", 10, backend)
    key = unique_key("lowered")
    use(n, key, 2)

    set_limit(n, key, "10r/h", 3)
    rs = [n.get("/l/x", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200, 429, 429], [r.describe() for r in rs]
    # the next token at the new rate: 6 minutes at most
    assert 0 < int(rs[1].h("Retry-After")) <= 360, rs[1].describe()


@pytest.mark.parametrize("backend", BACKENDS)
def test_quota_upgrade(api_node, backend):
    """10r/d with its 10 used, upgraded to 1000r/d burst=1000: the next 10
    all pass, and about 980 are left."""
    n = api_node("10r/d", 10, backend)
    key = unique_key("quota")
    use(n, key, 10)
    assert n.get("/l/x", key=key).status == 429

    set_limit(n, key, "1000r/d", 1000)
    rs = [n.get("/l/x", key=key) for _ in range(10)]
    assert [r.status for r in rs] == [200] * 10, [r.describe() for r in rs]
    assert 979 <= remaining(rs[-1]) <= 980, rs[-1].describe()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zone_rate_raised_by_reload(nginx_factory, redis, backend):
    n = nginx_factory("lc-reload", http=[redis_line(redis), zone_line("1r/h", 10, backend)],
                      locations=[loc("/l/", "rate_limit zone=lc")]).start()
    key = unique_key("reload")
    use(n, key, 10)
    assert n.get("/l/x", key=key).status == 429

    n.configure(http=[redis_line(redis), zone_line("1000r/h", 1000, backend)],
                locations=[loc("/l/", "rate_limit zone=lc")])
    n.reload()
    r = n.get("/l/x", key=key)
    assert r.status == 200, r.describe()
    assert 988 <= remaining(r) <= 989, r.describe()


@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_file_change_with_reload(nginx_factory, redis, backend):
    key = unique_key("policy")
    n = nginx_factory("lc-policy")
    policy = n.prefix / "limits.yaml"
    policy.write_text("zones:\n  lc:\n    clients:\n      %s: { rate: 1r/h, burst: 10 }\n"
                      % key)
    conf = dict(http=[redis_line(redis), "rate_limit_policy_file %s;" % policy,
                      zone_line("100r/s", 100, backend)],
                locations=[loc("/l/", "rate_limit zone=lc")])
    n.configure(**conf)
    n.start()
    use(n, key, 10)
    assert n.get("/l/x", key=key).status == 429

    policy.write_text("zones:\n  lc:\n    clients:\n      %s: { rate: 1000r/h, burst: 1000 }\n"
                      % key)
    n.reload()
    r = n.get("/l/x", key=key)
    assert r.status == 200, r.describe()
    assert 988 <= remaining(r) <= 989, r.describe()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rate,burst,refill", [("10r/h", 3, 1080), ("1r/h", 2, 7200)])
def test_never_waits_longer_than_the_new_full_refill(nginx_factory, redis, backend,
                                                      rate, burst, refill):
    """Used 10 of 1r/h burst=10 (10 hours to refill), then a limit whose full
    refill is shorter: the wait is one token, the reset at most that refill,
    and both hold for the next requests."""
    n = nginx_factory("lc-wait", http=[redis_line(redis), zone_line("1r/h", 10, backend)],
                      locations=[loc("/l/", "rate_limit zone=lc")]).start()
    key = unique_key("wait")
    use(n, key, 10)

    n.configure(http=[redis_line(redis), zone_line(rate, burst, backend)],
                locations=[loc("/l/", "rate_limit zone=lc")])
    n.reload()
    token_s = refill // burst
    for _ in range(3):
        r = n.get("/l/x", key=key)
        assert r.status == 429, r.describe()
        assert token_s - 5 <= int(r.h("Retry-After")) <= token_s, r.describe()
        assert int(r.h("X-RateLimit-Reset")) <= refill, r.describe()
        assert r.h("X-RateLimit-Remaining") == "0"


def test_a_tat_of_the_version_before_is_read_under_the_limit_in_force(nginx_factory,
                                                                         redis):
    """A bucket stored by the version before the token code (a plain TAT,
    SET ... PX) keeps working: read as counted in the limit in force, and
    written in the new form by the next request."""
    n = nginx_factory("lc-legacy", http=[redis_line(redis), zone_line("1r/m", 20, "redis")],
                      locations=[loc("/l/", "rate_limit zone=lc")]).start()
    key = unique_key("legacy")
    name = "rlc:lc:" + key
    sec, usec = redis.cmd("TIME")
    tat = int(sec) * 1000000 + int(usec) + 5 * 60000000        # 5 tokens used
    assert redis.cmd("SET", name, str(tat), "PX", "300000") == "OK"

    r = n.get("/l/x", key=key)
    assert r.status == 200, r.describe()
    assert remaining(r) == 20 - 6, r.describe()

    # "-", TAT * 1000 + the code of 60 s tokens: one integer, as small
    value = redis.cmd("GET", name)
    assert value.startswith("-") and len(value) == 20, value
    assert int(value[1:-3]) == tat + 60000000, (value, tat)
    assert int(value[-3:]) == token_code(60000000), value
    assert redis.cmd("OBJECT", "ENCODING", name) == "int"
    assert 355000 <= redis.cmd("PTTL", name) <= 360000

    assert remaining(n.get("/l/x", key=key)) == 20 - 7
