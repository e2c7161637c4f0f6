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


Z = "rate_limit_zone $http_x_key zone=%s:1m rate=1r/s;"
# quoted, so that nginx reads \" \\ \n \r in it and keeps ; and spaces
ZQ = 'rate_limit_zone $http_x_key "zone=%s:1m" rate=1r/s;'
LONG_NAME = "n" * 65
# Linux: sun_path holds 108 bytes, the last one for the NUL
UNIX_PATH_MAX = 107
LONG_SOCKET = "/tmp/" + "s" * (UNIX_PATH_MAX - len("/tmp/") + 1)
PG = '"host=127.0.0.1 port=1 dbname=x"'

# As BAD, with the phrases the [emerg] line must hold as well.  The value
# is quoted as in a JSON string: a quote or a newline in it must neither
# end the quotes early nor split the line.
BAD_SAYS = [
    # zone names: [A-Za-z0-9_.-], 1 to 64 bytes, wherever nginx.conf names one
    ("zone-name-quote", [REDIS, ZQ % 'a\\"b'], [],
     "rate_limit_zone", ['a\\"b'], ["invalid zone name", "A-Z, a-z, 0-9"]),
    ("zone-name-backslash", [REDIS, ZQ % 'a\\\\b'], [],
     "rate_limit_zone", ["a\\\\b"], ["invalid zone name"]),
    ("zone-name-semicolon", [REDIS, ZQ % 'a;b'], [],
     "rate_limit_zone", ["a;b"], ["invalid zone name"]),
    ("zone-name-comma", [REDIS, Z % "a,b"], [],
     "rate_limit_zone", ["a,b"], ["invalid zone name"]),
    ("zone-name-space", [REDIS, ZQ % 'a b'], [],
     "rate_limit_zone", ["a b"], ["invalid zone name"]),
    ("zone-name-non-ascii", [REDIS, Z % "zon\u00e9"], [],
     "rate_limit_zone", ["zon\u00e9"], ["invalid zone name"]),
    ("zone-name-newline", [REDIS, ZQ % 'a\\nb'], [],
     "rate_limit_zone", ["a\\nb"], ["invalid zone name"]),
    ("zone-name-crlf", [REDIS, ZQ % 'a\\r\\nX-Split'], [],
     "rate_limit_zone", ["a\\r\\nX-Split"], ["invalid zone name"]),
    ("zone-name-65-bytes", [REDIS, Z % LONG_NAME], [],
     "rate_limit_zone", [LONG_NAME], ["invalid zone name", "1 to 64 bytes"]),
    ("zone-name-empty", [REDIS, Z % ""], [],
     "rate_limit_zone", [""], ["invalid zone name"]),
    ("rate-limit-zone-name-space", [REDIS, ZONE], ['rate_limit "zone=a b"'],
     "rate_limit", ["a b"], ["invalid zone name"]),
    ("rate-limit-zone-name-newline", [REDIS, ZONE], ['rate_limit "zone=z\\nz"'],
     "rate_limit", ["z\\nz"], ["invalid zone name"]),
    ("rate-limit-zone-name-crlf-header", [REDIS, ZONE],
     ['rate_limit "zone=z\\r\\nSet-Cookie: x=1"'],
     "rate_limit", ["z\\r\\nSet-Cookie: x=1"], ["invalid zone name"]),
    ("rate-limit-zone-name-65-bytes", [REDIS, ZONE], ["rate_limit zone=" + LONG_NAME],
     "rate_limit", [LONG_NAME], ["invalid zone name"]),
    ("rate-limit-zone-name-empty", [REDIS, ZONE], ["rate_limit zone="],
     "rate_limit", [""], ["invalid zone name"]),
    # a parameter given twice is refused, not merged
    ("duplicate-rate", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=10r/s rate=5r/m;"], [],
     "rate_limit_zone", ["rate"], ["duplicate parameter"]),
    ("duplicate-burst", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s burst=3 burst=7;"], [],
     "rate_limit_zone", ["burst"], ["duplicate parameter"]),
    ("duplicate-on-failure", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s "
                                     "on_failure=open on_failure=closed;"], [],
     "rate_limit_zone", ["on_failure"], ["duplicate parameter"]),
    ("duplicate-backend", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s "
                                  "backend=redis backend=local;"], [],
     "rate_limit_zone", ["backend"], ["duplicate parameter"]),
    ("duplicate-zone-param", [REDIS, "rate_limit_zone $http_x_key zone=z:1m zone=y:1m rate=1r/s;"], [],
     "rate_limit_zone", ["zone"], ["duplicate parameter"]),
    ("duplicate-cost", [REDIS, ZONE], ["rate_limit cost=1 cost=2"],
     "rate_limit", ["cost"], ["duplicate parameter"]),
    ("duplicate-rate-limit-zone", [REDIS, ZONE, Z % "y"], ["rate_limit zone=z zone=y"],
     "rate_limit", ["zone"], ["duplicate parameter"]),
    ("duplicate-redis-db", ["rate_limit_redis 127.0.0.1:6379 db=1 db=2;", ZONE], [],
     "rate_limit_redis", ["db"], ["duplicate parameter"]),
    ("duplicate-redis-timeout", ["rate_limit_redis 127.0.0.1:6379 timeout=1s timeout=2s;", ZONE], [],
     "rate_limit_redis", ["timeout"], ["duplicate parameter"]),
    ("duplicate-redis-prefix", ["rate_limit_redis 127.0.0.1:6379 prefix=a prefix=b;", ZONE], [],
     "rate_limit_redis", ["prefix"], ["duplicate parameter"]),
    ("duplicate-redis-password", ["rate_limit_redis 127.0.0.1:6379 password=x "
                                  "password=env:RLT_PASSWORD;", ZONE], [],
     "rate_limit_redis", ["password"], ["duplicate parameter"]),
    ("duplicate-redis-cluster", ["rate_limit_redis cluster 127.0.0.1:6379 cluster;", ZONE], [],
     "rate_limit_redis", ["cluster"], ["duplicate parameter"]),
    ("duplicate-redis-address", ["rate_limit_redis cluster 127.0.0.1:6379 127.0.0.1:6379;", ZONE], [],
     "rate_limit_redis", ["127.0.0.1:6379"], ["duplicate parameter"]),
    # a socket path that sockaddr_un cannot hold, refused before run time
    ("redis-unix-path-too-long", ["rate_limit_redis unix:%s;" % LONG_SOCKET, ZONE], [],
     "rate_limit_redis", ["unix:" + LONG_SOCKET],
     ["socket path is %d bytes" % (UNIX_PATH_MAX + 1), "at most %d" % UNIX_PATH_MAX]),
    # a number too large says so, and gives the largest allowed
    ("burst-overflow", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s "
                               "burst=99999999999999999999;"], [],
     "rate_limit_zone", ["burst=99999999999999999999"],
     ["too large, at most 1000000000000000"]),
    ("burst-above-max", [REDIS, "rate_limit_zone $http_x_key zone=z:1m rate=1000000r/s "
                                "burst=1000000000000001;"], [],
     "rate_limit_zone", ["burst=1000000000000001"],
     ["too large, at most 1000000000000000"]),
    ("cost-overflow", [REDIS, ZONE], ["rate_limit zone=z cost=99999999999999999999"],
     "rate_limit", ["cost=99999999999999999999"], ["too large, at most 1000000000000000"]),
    ("zone-size-overflow", [REDIS, "rate_limit_zone $http_x_key zone=z:99999999999999999999m "
                                   "rate=1r/s;"], [],
     "rate_limit_zone", ["zone=z:99999999999999999999m"],
     ["too large, at most 9223372036854775807 bytes"]),
    ("redis-timeout-overflow", ["rate_limit_redis 127.0.0.1:6379 timeout=99999999999999999999;",
                                ZONE], [],
     "rate_limit_redis", ["timeout=99999999999999999999"], ["too large, at most 2147483647ms"]),
    ("redis-timeout-above-max", ["rate_limit_redis 127.0.0.1:6379 timeout=2147483648ms;", ZONE], [],
     "rate_limit_redis", ["timeout=2147483648ms"], ["too large, at most 2147483647ms"]),
    ("redis-timeout-25-days", ["rate_limit_redis 127.0.0.1:6379 timeout=25d;", ZONE], [],
     "rate_limit_redis", ["timeout=25d"], ["too large, at most 2147483647ms"]),
    ("redis-timeout-word", ["rate_limit_redis 127.0.0.1:6379 timeout=1x;", ZONE], [],
     "rate_limit_redis", ["timeout=1x"], ["expected a time above zero"]),
    ("postgres-interval-overflow", [PG.join(["rate_limit_postgres ", " interval=99999999999999999999s;"]),
                                    ZONE], [],
     "rate_limit_postgres", ["interval=99999999999999999999s"],
     ["too large, at most 2147483647ms"]),
    # db: a Redis database index, 0 to 2^31 - 1
    ("redis-db-above-int-max", ["rate_limit_redis 127.0.0.1:6379 db=2147483648;", ZONE], [],
     "rate_limit_redis", ["db=2147483648"], ["too large, at most 2147483647"]),
    ("redis-db-overflow", ["rate_limit_redis 127.0.0.1:6379 db=99999999999999999999;", ZONE], [],
     "rate_limit_redis", ["db=99999999999999999999"], ["too large, at most 2147483647"]),
    ("redis-db-negative", ["rate_limit_redis 127.0.0.1:6379 db=-1;", ZONE], [],
     "rate_limit_redis", ["db=-1"], ["expected a whole number from 0 to 2147483647"]),
    ("redis-db-word", ["rate_limit_redis 127.0.0.1:6379 db=one;", ZONE], [],
     "rate_limit_redis", ["db=one"], ["expected a whole number from 0 to 2147483647"]),
    ("redis-db-empty", ["rate_limit_redis 127.0.0.1:6379 db=;", ZONE], [],
     "rate_limit_redis", ["db="], ["expected a whole number from 0 to 2147483647"]),
]

BAD += [case[:5] for case in BAD_SAYS]


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


@pytest.mark.parametrize("case", BAD_SAYS, ids=[c[0] for c in BAD_SAYS])
def test_nginx_t_rejects_saying_why(nginx_factory, case):
    """The [emerg] line itself names the directive, quotes the value (escaped)
    and says why: one line, whatever the value holds."""
    n, rc, out = nginx_t(nginx_factory, case[:5])
    assert rc != 0, "nginx -t accepted it:\n" + n.conf.read_text()
    line = next((l for l in out.splitlines() if "[emerg]" in l), "")
    assert quotes_one_of(line, case[4]), "none of %r quoted in: %s" % (case[4], out)
    assert names_directive(line, case[3]), out
    for phrase in case[5]:
        assert phrase in line, "%r not in: %s" % (phrase, out)


def test_nginx_t_duplicate_password_shows_no_value(nginx_factory):
    """A repeated secret parameter is named, its values are not shown."""
    n = nginx_factory("t-dup-password",
                      http=["rate_limit_redis 127.0.0.1:6379 password=hunter2 "
                            "password=swordfish;", ZONE])
    rc, out = n.test_config()
    assert rc != 0 and 'duplicate parameter "password"' in out, out
    assert "hunter2" not in out and "swordfish" not in out, out


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
    ("zone-names", [Z % ("n" * 64), Z % "a.b-c_D9", Z % "0", Z % ".", Z % "-", Z % "_",
                    Z % "ABCDEFGHIJKLMNOPQRSTUVWXYZ", Z % "abcdefghijklmnopqrstuvwxyz0123456789"],
     ["rate_limit zone=" + "n" * 64, "rate_limit zone=a.b-c_D9", "rate_limit zone=0",
      "rate_limit zone=.", "rate_limit zone=-", "rate_limit zone=_",
      "rate_limit zone=ABCDEFGHIJKLMNOPQRSTUVWXYZ",
      "rate_limit zone=abcdefghijklmnopqrstuvwxyz0123456789"]),
    ("db-0", ["rate_limit_redis 127.0.0.1:%d db=0;", Z % "a"], ["rate_limit zone=a"]),
    ("db-int-max", ["rate_limit_redis 127.0.0.1:%d db=2147483647;", Z % "a"],
     ["rate_limit zone=a"]),
    ("largest-numbers", ["rate_limit_redis 127.0.0.1:%d timeout=2147483647ms;",
                         "rate_limit_zone $http_x_key zone=a:1m rate=1000000r/s "
                         "burst=1000000000000000;"],
     ["rate_limit zone=a cost=1000000000000000"]),
    ("timeout-24-days", ["rate_limit_redis 127.0.0.1:%d timeout=24d;", Z % "a"],
     ["rate_limit zone=a"]),
    ("default-port", ["rate_limit_redis 127.0.0.1;", Z % "a"], ["rate_limit zone=a"]),
    ("unix-path-longest", ["rate_limit_redis unix:%s;" % LONG_SOCKET[:-1], Z % "a"],
     ["rate_limit zone=a"]),
    ("one-of-each-parameter", ["rate_limit_redis cluster 127.0.0.1:%d 127.0.0.2:%d "
                               "password=x timeout=1s prefix=p;",
                               "rate_limit_zone $http_x_key zone=a:1m rate=1r/s burst=2 "
                               "backend=redis on_failure=local;",
                               PG.join(["rate_limit_postgres ", " interval=2147483647ms;"])],
     ["rate_limit zone=a cost=2"]),
]


@pytest.mark.parametrize("case", GOOD, ids=[c[0] for c in GOOD])
def test_nginx_t_accepts_with_redis_down(nginx_factory, case):
    """Valid configs pass nginx -t while nothing listens at the Redis address."""
    _id, http, directives = case
    n = nginx_factory("ok-" + _id, http=[l.replace("%d", str(free_port())) for l in http],
                      locations=[loc("/l/", *directives)], main="env RLT_PASSWORD;")
    n.env["RLT_PASSWORD"] = "from-env"
    rc, out = n.test_config()
    assert rc == 0, out
    assert "test is successful" in out
