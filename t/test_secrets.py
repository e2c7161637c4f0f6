"""Secrets stay out of what nginx writes and serves: the Redis password and
the PostgreSQL connection string appear in no log line, no metric and no
API answer, even while both services fail."""

from conftest import loc, unique_key, wait_for
from test_api import OPEN, TOKEN, bucket_url, request

REDIS_PASSWORD = "Redis-Pw-" + "x7" * 8
WRONG_PASSWORD = "Wrong-Pw-" + "y3" * 8
PG_PASSWORD = "Pg-Pw-" + "z5" * 8
METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"
API = "        location %s {\n            rate_limit_api;\n        }\n" % OPEN


def everything_written(n, bodies):
    return "\n".join([n.error_log(), (n.prefix / "access.log").read_text(errors="replace"),
                      n.stderr()] + bodies)


def test_no_secret_in_logs_metrics_or_api(nginx_factory, redis_factory, postgres):
    good = redis_factory(password=REDIS_PASSWORD)
    bad = redis_factory(password=REDIS_PASSWORD)
    db = postgres.new_db()
    # trust authentication ignores the password, but it is in the DSN
    dsn = postgres.conninfo(db) + " password=" + PG_PASSWORD
    n = nginx_factory("secrets", http=[
        "rate_limit_redis 127.0.0.1:%d password=env:RLT_REDIS_PW timeout=50ms prefix=rlt;"
        % good.port,
        "rate_limit_postgres env:RLT_PG_DSN interval=1s;",
        "rate_limit_zone $http_x_key zone=api:1m rate=1r/m burst=2 on_failure=local;",
    ], locations=[loc("/l/", "rate_limit zone=api"), METRICS, API],
        main="env RLT_REDIS_PW;\nenv RLT_PG_DSN;\nenv RATE_LIMIT_API_TOKEN;")
    n.env.update(RLT_REDIS_PW=REDIS_PASSWORD, RLT_PG_DSN=dsn, RATE_LIMIT_API_TOKEN=TOKEN)
    n.start()
    key = unique_key()
    assert n.statuses("/l/x", key, 3) == [200, 200, 429]
    bodies = []
    r = request(n.port, "POST", bucket_url("api", base=OPEN), {"key": key, "rate": "5r/m"},
                token=None)
    assert r.status == 201, r
    bodies.append(r.body.decode())
    # both services fail: Redis goes away, PostgreSQL stops
    mark = n.log_mark()
    good.stop()
    postgres.stop()
    try:
        for _ in range(5):
            n.get("/l/x", key=unique_key())
        wait_for(lambda: n.error_lines(r"circuit open", since=mark), 3,
                 what="the circuit-open line")
        wait_for(lambda: n.error_lines(r"rate_limit_postgres", since=mark), 5,
                 what="a PostgreSQL error line")
        for path in ("/metrics", OPEN, bucket_url("api", base=OPEN),
                     bucket_url("api", key, base=OPEN)):
            bodies.append(n.get(path).body.decode(errors="replace"))
        r = request(n.port, "PUT", bucket_url("api", key, base=OPEN), {"rate": "1r/s"},
                    token=None)
        assert r.status == 503, r
        bodies.append(r.body.decode())
    finally:
        postgres.start()
        good.start()
    # a Redis that refuses the password is logged without it, too
    n2 = nginx_factory("secrets2", http=[
        "rate_limit_redis 127.0.0.1:%d password=%s timeout=50ms;" % (bad.port, WRONG_PASSWORD),
        "rate_limit_zone $http_x_key zone=api:1m rate=1r/m burst=2;",
    ], locations=[loc("/l/", "rate_limit zone=api"), METRICS]).start()
    assert n2.get("/l/x", key="k").rls == "FAILED_OPEN"
    wait_for(lambda: n2.error_lines(r"AUTH failed"), 3, what="the AUTH failure line")
    written = everything_written(n, bodies) + everything_written(
        n2, [n2.get("/metrics").body.decode()])
    for secret in (REDIS_PASSWORD, WRONG_PASSWORD, PG_PASSWORD, TOKEN):
        assert secret not in written, secret
