"""Redis failures: stopped, restarted on the same port, frozen (SIGSTOP)."""

import re
import time

import pytest

from conftest import free_port, loc, run_threads, unique_key, wait_for, WORKERS

TIMEOUT = 0.05          # timeout=50ms in the configs below
MARGIN = 0.25

EXPECT = {"open": (200, "FAILED_OPEN"), "closed": (429, "FAILED_CLOSED")}

UNREACHABLE = r"redis.*\bunreachable\b|\bunreachable\b.*redis"
REACHABLE_AGAIN = r"redis.*\breachable again\b|\breachable again\b.*redis"
LEVELS_WARN_UP = r"\[(warn|error|crit|alert|emerg)\]"


def fail_nginx(nginx_factory, redis, mode, burst=3):
    return nginx_factory("fail-" + mode, http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=%d on_failure=%s;" % (burst, mode),
    ], locations=[loc("/l/", "rate_limit zone=z", "rate_limit_log_level info")]).start()


def assert_enforced(n, burst=3):
    """A fresh key gets exactly burst, with the right remaining counts."""
    key = unique_key("enf")
    rs = [n.get("/l/x", key=key) for _ in range(burst + 1)]
    assert [r.status for r in rs] == [200] * burst + [429], [r.describe() for r in rs]
    assert [r.rls for r in rs] == ["PASSED"] * burst + ["REJECTED"]
    assert [r.h("X-RateLimit-Remaining") for r in rs] == \
        [str(burst - 1 - i) for i in range(burst)] + ["0"]


def wait_enforced(n, timeout=6.0):
    """Polls (bounded) until a request is decided by Redis again."""
    def passed():
        r = n.get("/l/x", key=unique_key("poll"))
        return r.rls == "PASSED"
    wait_for(passed, timeout, interval=0.1, what="enforcement to resume")


def redis_problem_lines(n, since):
    return [l for l in n.error_lines(r"redis", since=since)
            if re.search(LEVELS_WARN_UP, l)]


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_stopped_then_restarted(nginx_factory, redis, mode):
    n = fail_nginx(nginx_factory, redis, mode)
    assert_enforced(n)
    mark = n.log_mark()
    redis.stop()
    status, rls = EXPECT[mode]
    key = unique_key()
    slow = []
    for i in range(50):
        t0 = time.monotonic()
        r = n.get("/l/x", key=key, timeout=5)
        dt = time.monotonic() - t0
        if dt > TIMEOUT + MARGIN:
            slow.append((i, round(dt, 3)))
        assert (r.status, r.rls) == (status, rls), "request %d: %s" % (i, r.describe())
    assert not slow, "requests slower than timeout + margin: %r" % slow

    unreachable = n.error_lines(UNREACHABLE, since=mark)
    assert 1 <= len(unreachable) <= WORKERS, \
        "expected one 'unreachable' line per worker at most:\n" + "\n".join(unreachable)
    noisy = redis_problem_lines(n, mark)
    assert len(noisy) <= 2 * WORKERS, \
        "%d redis lines at warn or above for 50 requests:\n%s" % (len(noisy), "\n".join(noisy[:20]))

    mark2 = n.log_mark()
    redis.start()               # the same port
    t_back = time.monotonic()
    # one request passing shows one worker back (the circuit is the node's);
    # the exact burst below may land on any worker, so every worker's link
    # must have finished its set-up, whose last command is SCRIPT LOAD
    wait_for(lambda: len(ready_clients(redis)) >= WORKERS, 6, interval=0.05,
             what="every worker's Redis link set up")
    wait_enforced(n)
    assert time.monotonic() - t_back < 6
    assert_enforced(n)
    # a worker that served requests again says so, once
    again = n.error_lines(REACHABLE_AGAIN, since=mark2)
    assert 1 <= len(again) <= WORKERS, again


def nginx_clients(redis):
    """Redis client connections other than the one asking."""
    return [l for l in redis.cmd("CLIENT", "LIST").splitlines()
            if "cmd=client" not in l]


def ready_clients(redis):
    """nginx's connections past AUTH and SELECT: SCRIPT LOAD or later."""
    return [l for l in nginx_clients(redis)
            if not re.search(r"\bcmd=(NULL|auth|select)\b", l)]


def test_background_reconnect_without_requests(nginx_factory, redis):
    """The workers reconnect in the background (backoff capped ~1 s): once
    Redis is back, their connections come back with no request at all."""
    n = fail_nginx(nginx_factory, redis, "open")
    assert_enforced(n)
    before = wait_for(lambda: nginx_clients(redis), 3, what="nginx connected to Redis")
    mark = n.log_mark()
    redis.stop()
    wait_for(lambda: n.error_lines(UNREACHABLE, since=mark), 3, interval=0.05,
             what="an 'unreachable' line")
    time.sleep(1.5)             # let the backoff grow to its cap
    redis.start()
    try:
        wait_for(lambda: len(nginx_clients(redis)) >= len(before), 3, interval=0.1,
                 what="the workers' Redis connections")
    except TimeoutError:
        raise AssertionError(
            "no background reconnect within 3 s of Redis coming back (no request "
            "sent): %d connection(s) before, now %r" % (len(before), nginx_clients(redis))) \
            from None
    # and the first requests are decided by Redis at once
    r = n.get("/l/x", key=unique_key())
    assert r.rls == "PASSED", r.describe()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_frozen(nginx_factory, redis, mode):
    n = fail_nginx(nginx_factory, redis, mode)
    assert_enforced(n)
    status, rls = EXPECT[mode]
    timings = []
    with redis.frozen_for():
        key = unique_key()
        for i in range(12):
            t0 = time.monotonic()
            r = n.get("/l/x", key=key, timeout=5)
            dt = time.monotonic() - t0
            timings.append(round(dt, 3))
            assert (r.status, r.rls) == (status, rls), "request %d: %s" % (i, r.describe())
        # also concurrent requests while frozen
        t0 = time.monotonic()
        res = run_threads(lambda i: n.get("/l/x", key=unique_key(), timeout=5), 10, timeout=10)
        conc = time.monotonic() - t0
    assert all(t <= TIMEOUT + MARGIN for t in timings), timings
    errors = [x for x in res if isinstance(x, BaseException)]
    assert not errors, errors
    assert all((x.status, x.rls) == (status, rls) for x in res), [x.describe() for x in res]
    assert conc <= TIMEOUT + MARGIN + 0.5, conc
    # after SIGCONT Redis answers the stale queries too: decisions must stay
    # right (no reply matched to the wrong request)
    wait_enforced(n)
    for _ in range(3):
        assert_enforced(n)


def test_nginx_starts_and_serves_with_redis_down(nginx_factory):
    port = free_port()
    n = nginx_factory("down", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms;" % port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1;",
    ], locations=[loc("/l/", "rate_limit zone=z")])
    rc, out = n.test_config()
    assert rc == 0, out
    n.start()
    for _ in range(5):
        t0 = time.monotonic()
        r = n.get("/l/x", key="k")
        assert time.monotonic() - t0 < TIMEOUT + MARGIN
        assert (r.status, r.rls) == (200, "FAILED_OPEN")      # on_failure=open default


def test_redis_comes_up_after_nginx(nginx_factory, redis):
    """Start-up never needs Redis, and a later Redis is picked up."""
    redis.stop()
    n = fail_nginx(nginx_factory, redis, "closed")
    assert n.get("/l/x", key=unique_key()).rls == "FAILED_CLOSED"
    redis.start()
    wait_enforced(n)
    assert_enforced(n)


def test_error_reply_is_failure(nginx_factory, redis_factory):
    """A Redis that answers with an error (NOAUTH: no password configured
    while Redis needs one) is a failure, decided by on_failure."""
    r = redis_factory(password="s3cret")
    n = nginx_factory("noauth", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms;" % r.port,
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=1 on_failure=open;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=1 on_failure=closed;",
    ], locations=[loc("/o/", "rate_limit zone=o"), loc("/c/", "rate_limit zone=c")]).start()
    for _ in range(3):
        a = n.get("/o/x", key="k")
        assert (a.status, a.rls) == (200, "FAILED_OPEN")
        b = n.get("/c/x", key="k")
        assert (b.status, b.rls) == (429, "FAILED_CLOSED")
