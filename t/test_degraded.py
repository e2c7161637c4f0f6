"""Bounded degradation: on_failure=local, the node registry that divides its
limits, and the circuit breaker shared by a node's workers."""

import re
import time

from conftest import loc, run_threads, unique_key, wait_for

TIMEOUT = 0.05          # timeout=50ms in the configs below
MARGIN = 0.25
METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"
CIRCUIT_OPEN = r"circuit open"
CIRCUIT_CLOSED = r"circuit closed"


def degraded_nginx(nginx_factory, redis, name="deg", burst=6, on_failure="local",
                   rate="1r/m"):
    return nginx_factory(name, http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=%s burst=%d on_failure=%s;"
        % (rate, burst, on_failure),
    ], locations=[loc("/l/", "rate_limit zone=z", "rate_limit_log_level info"),
                  METRICS])


def metric(n, name, **labels):
    """The value of one sample of the node's exposition, None if absent."""
    text = n.get("/metrics").body.decode()
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return None


def live_nodes(n):
    return metric(n, "nginx_rate_limit_nodes")


def burst_of(n, key, limit=20):
    """Requests of a fresh key until the first 429: (passed, statuses)."""
    rls = []
    for _ in range(limit):
        r = n.get("/l/x", key=key)
        rls.append(r.rls)
        if r.status == 429:
            return len(rls) - 1, rls
    return len(rls), rls


def test_registry_counts_live_nodes(nginx_factory, redis):
    a = degraded_nginx(nginx_factory, redis, "rega").start()
    b = degraded_nginx(nginx_factory, redis, "regb").start()
    for n in (a, b):
        wait_for(lambda: live_nodes(n) == 2, 5, interval=0.1, what="2 live nodes")
    members = redis.cmd("ZRANGE", "rlt:nodes", "0", "-1")
    assert len(members) == 2, members
    # a node that stops drops out of the count within the expiry (5 s)
    b.stop()
    t0 = time.monotonic()
    wait_for(lambda: live_nodes(a) == 1, 9, interval=0.2, what="1 live node")
    assert time.monotonic() - t0 < 8
    # the registry is one key, with a TTL: it goes when every node has gone
    assert 0 < int(redis.cmd("PTTL", "rlt:nodes")) <= 10000


def test_local_fallback_with_one_node(nginx_factory, redis):
    n = degraded_nginx(nginx_factory, redis, burst=4).start()
    wait_for(lambda: live_nodes(n) == 1, 5, interval=0.1, what="the node registered")
    assert burst_of(n, unique_key())[0] == 4
    redis.stop()
    key = unique_key()
    worst = 0.0
    results = []
    for _ in range(8):
        r = n.get("/l/x", key=key, timeout=5)
        worst = max(worst, r.elapsed)
        results.append((r.status, r.rls))
    # one node: the whole limit, decided in shared memory, no waiting
    assert results == [(200, "DEGRADED_LOCAL")] * 4 + \
        [(429, "DEGRADED_LOCAL_REJECTED")] * 4, results
    assert worst <= TIMEOUT + MARGIN, worst
    print("WORST_WAIT redis_down_local", round(worst, 3))
    assert metric(n, "nginx_rate_limit_decisions_total", zone="z",
                  outcome="degraded_local") >= 4
    assert metric(n, "nginx_rate_limit_decisions_total", zone="z",
                  outcome="degraded_local_rejected") >= 4
    assert metric(n, "nginx_rate_limit_redis_up",
                  address="127.0.0.1:%d" % redis.port) == 0
    # Redis back: enforced by Redis again within 2 s (the reconnect backoff
    # is at most 1 s)
    redis.start()
    t0 = time.monotonic()
    wait_for(lambda: n.get("/l/x", key=unique_key()).rls == "PASSED", 4, interval=0.05,
             what="decisions by Redis again")
    back = time.monotonic() - t0
    assert back < 2.0, back
    print("REDIS_BACK_AFTER", round(back, 3))
    assert redis.keys("rlt:z:*"), "no bucket in Redis"


def test_local_fallback_divides_by_live_nodes(nginx_factory, redis):
    """Two nodes: while Redis is down each enforces half of the limit, so the
    fleet stays at the limit instead of doubling it."""
    a = degraded_nginx(nginx_factory, redis, "diva", burst=6).start()
    b = degraded_nginx(nginx_factory, redis, "divb", burst=6).start()
    for n in (a, b):
        wait_for(lambda: live_nodes(n) == 2, 5, interval=0.1, what="2 live nodes")
    redis.stop()
    key = unique_key()
    passed_a, rls_a = burst_of(a, key)
    passed_b, rls_b = burst_of(b, key)
    assert (passed_a, passed_b) == (3, 3), (rls_a, rls_b)
    assert set(rls_a[:-1]) == {"DEGRADED_LOCAL"}, rls_a
    # the last count seen before the failure stays in force
    assert live_nodes(a) == 2


def test_local_fallback_is_all_or_nothing(nginx_factory, redis):
    """A request that a degraded limit rejects takes no token from the other
    degraded limit."""
    n = nginx_factory("degall", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=small:1m rate=1r/m burst=2 on_failure=local;",
        "rate_limit_zone $http_x_key zone=big:1m rate=1r/m burst=5 on_failure=local;",
    ], locations=[loc("/both/", "rate_limit zone=small", "rate_limit zone=big"),
                  loc("/big/", "rate_limit zone=big"), METRICS]).start()
    wait_for(lambda: live_nodes(n) == 1, 5, interval=0.1, what="the node registered")
    redis.stop()
    key = unique_key()
    assert [n.get("/both/x", key=key).status for _ in range(4)] == [200, 200, 429, 429]
    # big gave 2 tokens, not 4
    assert [n.get("/big/x", key=key).status for _ in range(4)] == [200, 200, 200, 429]


def test_circuit_opens_and_closes_on_a_frozen_redis(nginx_factory, redis):
    n = degraded_nginx(nginx_factory, redis, "circ", burst=1000, rate="1000r/s").start()
    addr = "127.0.0.1:%d" % redis.port
    assert n.get("/l/x", key=unique_key()).rls == "PASSED"
    assert metric(n, "nginx_rate_limit_redis_circuit_open", address=addr) == 0
    mark = n.log_mark()
    waits = []
    with redis.frozen_for():
        # the first requests wait for the timeout, and open the circuit
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            res = run_threads(lambda i: n.get("/l/x", key=unique_key(), timeout=5), 4)
            waits += [r.elapsed for r in res]
            if metric(n, "nginx_rate_limit_redis_circuit_open", address=addr) == 1:
                break
        assert metric(n, "nginx_rate_limit_redis_circuit_open", address=addr) == 1
        # open: nobody waits for Redis any more
        open_waits = []
        for _ in range(20):
            r = n.get("/l/x", key=unique_key(), timeout=5)
            assert (r.status, r.rls) == (200, "DEGRADED_LOCAL"), r.describe()
            open_waits.append(r.elapsed)
        time.sleep(0.5)         # a few probes go out, and fail
    worst = max(waits)
    assert worst <= TIMEOUT + MARGIN, sorted(waits)[-5:]
    assert max(open_waits) < TIMEOUT, sorted(open_waits)[-5:]
    print("WORST_WAIT redis_frozen", round(worst, 3), "circuit_open",
          round(max(open_waits), 3))
    # thawed: a probe closes the circuit (probes back off to 1 s at most)
    t0 = time.monotonic()
    wait_for(lambda: metric(n, "nginx_rate_limit_redis_circuit_open", address=addr) == 0,
             4, interval=0.05, what="the circuit to close")
    print("CIRCUIT_CLOSED_AFTER", round(time.monotonic() - t0, 3))
    assert n.get("/l/x", key=unique_key()).rls == "PASSED"
    assert metric(n, "nginx_rate_limit_redis_circuit_transitions_total",
                  address=addr, to="open") == 1
    assert metric(n, "nginx_rate_limit_redis_circuit_transitions_total",
                  address=addr, to="closed") == 1
    # one line a transition for the node, not one a worker or a request,
    # naming the address and the policy in force
    opened = n.error_lines(CIRCUIT_OPEN, since=mark)
    closed = n.error_lines(CIRCUIT_CLOSED, since=mark)
    assert len(opened) == 1 and len(closed) == 1, opened + closed
    assert addr in opened[0] and "z=local" in opened[0], opened[0]
    assert addr in closed[0]


def test_circuit_open_while_redis_is_down(nginx_factory, redis):
    """A refused connection opens the circuit at once: the log says so once,
    and requests never wait."""
    n = degraded_nginx(nginx_factory, redis, "down", on_failure="closed").start()
    assert n.get("/l/x", key=unique_key()).rls == "PASSED"
    mark = n.log_mark()
    redis.stop()
    for _ in range(30):
        r = n.get("/l/x", key=unique_key(), timeout=5)
        assert (r.status, r.rls) == (429, "FAILED_CLOSED")
        assert r.elapsed <= TIMEOUT + MARGIN
    wait_for(lambda: n.error_lines(CIRCUIT_OPEN, since=mark), 3, interval=0.05,
             what="the circuit-open line")
    time.sleep(1.0)             # reconnections fail meanwhile: still one line
    lines = n.error_lines(CIRCUIT_OPEN, since=mark)
    assert len(lines) == 1, lines
    assert "z=closed" in lines[0] and "127.0.0.1:%d" % redis.port in lines[0]
