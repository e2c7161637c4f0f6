"""rate_limit_metrics: Prometheus text, counters shared by the workers and
kept across a reload."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import loc, redis_conf, unique_key, wait_for

METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"

# the text exposition format, line by line
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
                    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*)\})? (-?[0-9.]+|\+Inf)$')
HELP = re.compile(r"^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$")
TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$")


def parse(text):
    """Checks the exposition format and returns {(name, labels): value}."""
    assert text.endswith("\n")
    typed, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP"):
            assert HELP.match(line), line
            continue
        m = TYPE.match(line)
        if m:
            assert m.group(1) not in typed, "TYPE twice: " + line
            typed[m.group(1)] = m.group(2)
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample: %r" % line
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, "no TYPE before " + line
        labels = tuple(sorted(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(3) or "")))
        assert (name, labels) not in samples, "sample twice: " + line
        samples[(name, labels)] = float(m.group(5))
    return typed, samples


def metrics(n):
    r = n.get("/metrics")
    assert r.status == 200, r.describe()
    assert r.h("Content-Type").startswith("text/plain; version=0.0.4")
    return parse(r.body.decode())


def test_counters_and_format(nginx_factory, redis):
    n = nginx_factory("metrics", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=r:1m rate=1r/m burst=2;",
        "rate_limit_zone $http_x_key zone=l:1m rate=1r/m burst=1 backend=local;",
    ], locations=[loc("/r/", "rate_limit zone=r"),
                  loc("/l/", "rate_limit zone=l"),
                  loc("/dry/", "rate_limit zone=l", "rate_limit_dry_run on"),
                  METRICS]).start()
    key = unique_key()
    # spread over both workers: a new connection each
    assert n.statuses("/r/x", key, 3) == [200, 200, 429]
    assert n.statuses("/l/x", key, 2) == [200, 429]
    assert n.statuses("/dry/x", key, 1) == [200]

    typed, s = metrics(n)
    assert typed["nginx_rate_limit_requests_total"] == "counter"
    assert typed["nginx_rate_limit_redis_latency_seconds"] == "histogram"

    def outcome(zone, what):
        return s[("nginx_rate_limit_decisions_total",
                  (("outcome", what), ("zone", zone)))]

    assert s[("nginx_rate_limit_requests_total", (("zone", "r"),))] == 3
    assert s[("nginx_rate_limit_requests_total", (("zone", "l"),))] == 3
    assert (outcome("r", "passed"), outcome("r", "rejected")) == (2, 1)
    assert (outcome("l", "passed"), outcome("l", "rejected"),
            outcome("l", "rejected_dry_run")) == (1, 1, 1)
    assert outcome("r", "failed_open") == 0

    # the histogram: cumulative, and +Inf is the count of Redis round trips
    buckets = sorted((float(dict(k[1])["le"]) if dict(k[1])["le"] != "+Inf" else float("inf"), v)
                     for k, v in s.items()
                     if k[0] == "nginx_rate_limit_redis_latency_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert buckets[-1][1] == s[("nginx_rate_limit_redis_latency_seconds_count", ())] == 3
    assert 0 < s[("nginx_rate_limit_redis_latency_seconds_sum", ())] < 3
    assert s[("nginx_rate_limit_redis_up", (("address", "127.0.0.1:%d" % redis.port),))] == 1

    used = s[("nginx_rate_limit_zone_memory_bytes", (("state", "used"), ("zone", "l")))]
    free = s[("nginx_rate_limit_zone_memory_bytes", (("state", "free"), ("zone", "l")))]
    assert used > 0 and free > 0 and used + free <= 1024 * 1024

    # counters live in shared memory: a reload keeps them
    n.reload()
    _, after = metrics(n)
    assert after[("nginx_rate_limit_requests_total", (("zone", "r"),))] == 3


def test_redis_down_and_failures_are_counted(nginx_factory, redis):
    n = nginx_factory("metricsdown", http=[
        redis_conf(redis, "timeout=100ms prefix=rlt"),
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=5 on_failure=open;",
    ], locations=[loc("/o/", "rate_limit zone=o"), METRICS]).start()
    key = unique_key()
    assert n.get("/o/x", key=key).status == 200
    redis.stop()
    try:
        assert n.statuses("/o/x", key, 3) == [200, 200, 200]
        _, s = metrics(n)
        assert s[("nginx_rate_limit_decisions_total",
                  (("outcome", "failed_open"), ("zone", "o")))] == 3
        assert s[("nginx_rate_limit_redis_up",
                  (("address", "127.0.0.1:%d" % redis.port),))] == 0
    finally:
        redis.start()
    # back up once a worker hears from Redis again (it reconnects by itself)
    up = ("nginx_rate_limit_redis_up", (("address", "127.0.0.1:%d" % redis.port),))
    wait_for(lambda: n.get("/o/x", key=unique_key()) and metrics(n)[1][up] == 1,
             timeout=5.0, what="nginx_rate_limit_redis_up back to 1")


def promtool():
    """promtool's path; skips when it is missing (fails under
    RATE_LIMIT_REQUIRE_MODULE, as in CI)."""
    path = shutil.which("promtool")
    if path is None:
        msg = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("RATE_LIMIT_REQUIRE_MODULE"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_promtool_accepts_exposition(nginx_factory, redis):
    """Prometheus' own linter passes the exposition, with every family
    filled in: passes, rejections, dry run, failures, the histogram and
    both backends."""
    tool = promtool()
    n = nginx_factory("promtool", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=r:1m rate=1r/m burst=1;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=1 on_failure=closed;",
        "rate_limit_zone $http_x_key zone=l:1m rate=1r/m burst=1 backend=local;",
    ], locations=[loc("/r/", "rate_limit zone=r"),
                  loc("/c/", "rate_limit zone=c"),
                  loc("/l/", "rate_limit zone=l", "rate_limit_dry_run on"),
                  METRICS]).start()
    key = unique_key()
    assert n.statuses("/r/x", key, 2) == [200, 429]
    assert n.statuses("/l/x", key, 2) == [200, 200]
    redis.stop()
    try:
        assert n.statuses("/c/x", key, 1) == [429]
        texts = [n.get("/metrics").body]
    finally:
        redis.start()
    wait_for(lambda: n.get("/r/x", key=unique_key()).rls == "PASSED", 5.0,
             what="Redis deciding again")
    texts.append(n.get("/metrics").body)
    for text in texts:
        p = subprocess.run([tool, "check", "metrics"], input=text, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        assert p.returncode == 0 and not p.stdout.strip(), \
            "promtool check metrics (%d):\n%s\n%s" % (
                p.returncode, p.stdout.decode(errors="replace"), text.decode())
