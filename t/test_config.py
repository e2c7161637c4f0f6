"""Configuration errors found by `nginx -t` (and valid configs accepted)."""

import re

import pytest

from conftest import free_port, loc

REDIS = "rate_limit_redis 127.0.0.1:%d timeout=50ms;"
ZONE = "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5;"


def names_directive(out, directive):
    # rate_limit must not be found inside rate_limit_zone etc.
    return re.search(r"(?<![\w$])%s(?!\w)" % re.escape(directive), out) is not None


def quotes_one_of(out, values):
    return any('"%s"' % v in out for v in values)


# (id, http lines, location directives, directive named, quoted values accepted)
BAD = [
    ("bad-rate-word", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=abc;"], [],
     "rate_limit_zone", ["abc", "rate=abc"]),
    ("bad-rate-unit", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=10r/x;"], [],
     "rate_limit_zone", ["10r/x", "rate=10r/x"]),
    ("bad-rate-zero", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=0r/s burst=1;"], [],
     "rate_limit_zone", ["0r/s", "rate=0r/s"]),
    ("bad-rate-missing-count", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=r/s;"], [],
     "rate_limit_zone", ["r/s", "rate=r/s"]),
    ("zero-burst", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s burst=0;"], [],
     "rate_limit_zone", ["0", "burst=0"]),
    ("negative-burst", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s burst=-3;"], [],
     "rate_limit_zone", ["-3", "burst=-3"]),
    ("unknown-zone", [REDIS, ZONE], ["rate_limit zone=nosuchzone"],
     "rate_limit", ["nosuchzone", "zone=nosuchzone"]),
    ("duplicate-zone", [REDIS, "rate_limit_zone $http_x_key zone=dupzone:1m rate=1r/s;",
                        "rate_limit_zone $remote_addr zone=dupzone:1m rate=2r/s;"], [],
     "rate_limit_zone", ["dupzone", "zone=dupzone:1m"]),
    ("status-399", [REDIS, ZONE], ["rate_limit zone=z", "rate_limit_status 399"],
     "rate_limit_status", ["399"]),
    ("status-600", [REDIS, ZONE], ["rate_limit zone=z", "rate_limit_status 600"],
     "rate_limit_status", ["600"]),
    ("bad-redis-port", ["rate_limit_redis 127.0.0.1:notaport;", ZONE], [],
     "rate_limit_redis", ["127.0.0.1:notaport"]),
    ("bad-redis-port-range", ["rate_limit_redis 127.0.0.1:70000;", ZONE], [],
     "rate_limit_redis", ["127.0.0.1:70000"]),
    ("bad-redis-param", ["rate_limit_redis 127.0.0.1:6379 colour=blue;", ZONE], [],
     "rate_limit_redis", ["colour=blue", "colour"]),
    ("bad-redis-timeout", ["rate_limit_redis 127.0.0.1:6379 timeout=soon;", ZONE], [],
     "rate_limit_redis", ["timeout=soon", "soon"]),
    ("unknown-zone-param", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s foo=bar;"], [],
     "rate_limit_zone", ["foo=bar"]),
    ("unknown-rate-limit-param", [REDIS, ZONE], ["rate_limit zone=z speed=9"],
     "rate_limit", ["speed=9"]),
    ("bad-backend", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s backend=memcached;"], [],
     "rate_limit_zone", ["memcached", "backend=memcached"]),
    ("bad-on-failure", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s on_failure=maybe;"], [],
     "rate_limit_zone", ["maybe", "on_failure=maybe"]),
    ("redis-backend-without-redis", ["rate_limit_zone $http_x_key zone=z:1m rate=1r/s backend=redis;"], [],
     "rate_limit_zone", ["redis", "backend=redis"]),
    ("cost-over-burst", [REDIS, ZONE], ["rate_limit zone=z cost=6"],
     "rate_limit", ["6", "cost=6"]),
    ("bad-log-level", [REDIS, ZONE], ["rate_limit zone=z", "rate_limit_log_level loud"],
     "rate_limit_log_level", ["loud"]),
]


def nginx_t(nginx_factory, case):
    _id, http, directives, directive, values = case
    n = nginx_factory("t-" + _id,
                      http=[l % free_port() if "%d" in l else l for l in http],
                      locations=[loc("/l/", *directives)] if directives else [])
    rc, out = n.test_config()
    return n, rc, out


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_nginx_t_rejects(nginx_factory, case):
    _id, http, directives, directive, values = case
    n, rc, out = nginx_t(nginx_factory, case)
    assert rc != 0, "nginx -t accepted it:\n" + n.conf.read_text()
    assert "[emerg]" in out, out
    assert quotes_one_of(out, values), "none of %r quoted in: %s" % (values, out)


def test_nginx_t_errors_name_the_directive(nginx_factory):
    """The contract: the message names the directive.  One test for all the
    cases above, listing every message that does not."""
    missing = []
    for case in BAD:
        n, rc, out = nginx_t(nginx_factory, case)
        if rc != 0 and not names_directive(out, case[3]):
            first = next((l for l in out.splitlines() if "[emerg]" in l), out)
            missing.append("%s: wants %r in: %s" % (case[0], case[3],
                                                    re.sub(r" in /\S+", "", first)))
    assert not missing, "%d of %d messages do not name the directive:\n%s" % (
        len(missing), len(BAD), "\n".join(missing))


GOOD = [
    ("periods", ["rate_limit_zone $http_x_key zone=a:1m rate=10r/s;",
                 "rate_limit_zone $http_x_key zone=b:1m rate=100r/m burst=20;",
                 "rate_limit_zone $http_x_key zone=c:1m rate=5r/30s;",
                 "rate_limit_zone $http_x_key zone=d:1m rate=1r/d;",
                 "rate_limit_zone $http_x_key zone=e:1m rate=1r/h;",
                 "rate_limit_zone $http_x_key zone=f:1m rate=3r/500ms;"],
     ["rate_limit zone=a", "rate_limit zone=b cost=20", "rate_limit zone=c",
      "rate_limit zone=d", "rate_limit zone=e", "rate_limit zone=f"]),
    ("all-options", ["rate_limit_redis 127.0.0.1:%d password=x db=2 timeout=50ms prefix=p;",
                     "rate_limit_zone $http_x_key zone=a:1m rate=10r/s burst=3 backend=redis "
                     "on_failure=closed;",
                     "rate_limit_zone global zone=g:1m rate=5000r/s;",
                     "rate_limit_zone $binary_remote_addr zone=ip:1m rate=10r/s backend=local "
                     "on_failure=open;"],
     ["rate_limit zone=a", "rate_limit zone=g", "rate_limit zone=ip",
      "rate_limit_status 400", "rate_limit_headers off", "rate_limit_dry_run on",
      "rate_limit_log_level notice"]),
    ("status-599", ["rate_limit_zone $http_x_key zone=a:1m rate=10r/s;"],
     ["rate_limit zone=a", "rate_limit_status 599", "rate_limit_log_level info"]),
    ("unix-socket", ["rate_limit_redis unix:/tmp/nonexistent-rlt.sock;",
                     "rate_limit_zone $http_x_key zone=a:1m rate=10r/s;"],
     ["rate_limit zone=a", "rate_limit_log_level warn"]),
    ("password-env", ["rate_limit_redis 127.0.0.1:%d password=env:RLT_PASSWORD;",
                      "rate_limit_zone $http_x_key zone=a:1m rate=10r/s;"],
     ["rate_limit zone=a", "rate_limit_log_level error"]),
]


@pytest.mark.parametrize("case", GOOD, ids=[c[0] for c in GOOD])
def test_nginx_t_accepts_with_redis_down(nginx_factory, case):
    """Valid configs pass nginx -t while nothing listens at the Redis address."""
    _id, http, directives = case
    n = nginx_factory("ok-" + _id, http=[l % free_port() if "%d" in l else l for l in http],
                      locations=[loc("/l/", *directives)], main="env RLT_PASSWORD;")
    n.env["RLT_PASSWORD"] = "from-env"
    rc, out = n.test_config()
    assert rc == 0, out
    assert "test is successful" in out
