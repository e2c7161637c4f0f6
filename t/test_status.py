"""rate_limit_status, $rate_limit_status, dry run and the log level."""

import re

import pytest

from conftest import free_port, loc, redis_conf, unique_key


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


def test_custom_status_503(nginx_factory, redis, backend):
    n = nginx_factory("s503", http=[redis_conf(redis),
                                    "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2 "
                                    "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=z", "rate_limit_status 503"),
                                 loc("/d/", "rate_limit zone=z")]).start()
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 503]
    assert rs[2].h("Retry-After") == "60"
    assert rs[2].rls == "REJECTED"
    assert n.get("/d/x", key=key).status == 429      # default elsewhere


def test_status_inherited_from_server(nginx_factory, redis):
    n = nginx_factory("sinh", http=[redis_conf(redis),
                                    "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1;"],
                      server="rate_limit_status 599;",
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    assert n.statuses("/l/x", unique_key(), 2) == [200, 599]


def test_status_variable_in_access_log(nginx_factory, redis, backend):
    down = free_port()          # nothing listens there: connection refused
    n = nginx_factory("var", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1 backend=%s;" % backend,
    ], locations=[
        loc("/l/", "rate_limit zone=z"),
        loc("/dry/", "rate_limit zone=z", "rate_limit_dry_run on"),
        loc("/none/"),
    ]).start()
    key = unique_key()
    seq = [("/l/x", 200, "PASSED"), ("/l/x", 429, "REJECTED"),
           ("/dry/x", 200, "REJECTED_DRY_RUN"), ("/none/x", 200, "")]
    for path, status, rls in seq:
        r = n.get(path, key=key)
        assert r.status == status, (path, r.describe())
        assert n.access_rls(r.rid) in ((rls,) if rls else ("", "-")), path
        assert r.rls == (rls or None)

    # FAILED_OPEN / FAILED_CLOSED with a Redis that refuses connections
    f = nginx_factory("varf", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms;" % down,
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=1 on_failure=open;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=1 on_failure=closed;",
    ], locations=[loc("/open/", "rate_limit zone=o"),
                  loc("/closed/", "rate_limit zone=c"),
                  loc("/closed503/", "rate_limit zone=c", "rate_limit_status 503")]).start()
    for path, status, rls in [("/open/x", 200, "FAILED_OPEN"),
                              ("/closed/x", 429, "FAILED_CLOSED"),
                              ("/closed503/x", 503, "FAILED_CLOSED")]:
        for _ in range(3):
            r = f.get(path, key=key)
            assert r.status == status, (path, r.describe())
            assert f.access_rls(r.rid) == rls
            assert r.h("Retry-After") is None, r.describe()


def test_dry_run(nginx_factory, redis, backend):
    n = nginx_factory("dry", http=[redis_conf(redis),
                                   "rate_limit_zone $http_x_key zone=dryzone:1m rate=1r/m burst=2 "
                                   "backend=%s;" % backend],
                      locations=[loc("/l/", "rate_limit zone=dryzone", "rate_limit_dry_run on"),
                                 loc("/real/", "rate_limit zone=dryzone")]).start()
    key = unique_key()
    mark = n.log_mark()
    rs = [n.get("/l/x", key=key) for _ in range(6)]
    assert [r.status for r in rs] == [200] * 6
    assert [r.rls for r in rs] == ["PASSED"] * 2 + ["REJECTED_DRY_RUN"] * 4
    assert [n.access_rls(r.rid) for r in rs] == ["PASSED"] * 2 + ["REJECTED_DRY_RUN"] * 4
    for r in rs[2:]:
        assert r.h("Retry-After") is None, r.describe()   # not a real rejection
    # logged: the lines name the zone and say it is a dry run
    lines = n.error_lines(r'dryzone', since=mark)
    assert lines, n.error_log(mark)
    assert any(re.search(r"dry[ _-]?run", l, re.I) for l in lines), lines
    # the bucket is really empty: a location without dry run rejects
    assert n.get("/real/x", key=key).status == 429


@pytest.mark.parametrize("level", ["info", "notice", "warn", "error"])
def test_log_level(nginx_factory, redis, level):
    directives = ["rate_limit zone=lvlzone"]
    if level != "error":
        directives.append("rate_limit_log_level %s" % level)     # error: default
    n = nginx_factory("lvl", http=[redis_conf(redis),
                                   "rate_limit_zone $http_x_key zone=lvlzone:1m rate=1r/m burst=1;"],
                      locations=[loc("/l/", *directives)]).start()
    key = unique_key()
    assert n.get("/l/x", key=key).status == 200
    mark = n.log_mark()
    assert n.get("/l/x", key=key).status == 429
    lines = n.error_lines(r"lvlzone", since=mark)
    assert lines, "no log line for the rejection:\n" + n.error_log(mark)
    assert all("[%s]" % level in l for l in lines), lines


def test_dry_run_never_rejects_on_failure_closed(nginx_factory):
    down = free_port()
    n = nginx_factory("dryfail", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms;" % down,
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=1 on_failure=closed;",
    ], locations=[loc("/l/", "rate_limit zone=c", "rate_limit_dry_run on")]).start()
    for _ in range(3):
        r = n.get("/l/x", key="k")
        assert r.status == 200, r.describe()
        assert r.rls == "FAILED_CLOSED"
