"""Faults injected while traffic flows: Redis killed (SIGKILL) and restarted,
a node whose clock is an hour off (libfaketime), nginx workers killed with
SIGKILL, PostgreSQL stopped under bucket API writes, and 10,000 keys that
must leave Redis as they found it.

Client threads send requests in the background (see Traffic) while the
main thread injects the fault; every loop is bounded in count and time.
Each scenario prints the longest wait of any of its requests as
``WORST_WAIT <scenario> <seconds>`` (shown with ``pytest -s``).
"""

import http.client
import os
import signal
import threading
import time
from email.utils import parsedate_to_datetime

import pytest

from conftest import (WORKERS, loc, pid_alive, redis_conf, run_threads, unique_key,
                      wait_for)
from test_api import bucket_url, nodes, request, wait_limit  # noqa: F401 - nodes: a fixture


class Traffic:
    """n client threads, each calling send(i) in a loop until stopped, or
    until `limit` seconds have passed, recording (start, elapsed, result)
    with the exception in place of a result that raised.  A context
    manager: leaving it stops and joins the threads."""

    def __init__(self, send, n, limit=30.0, pause=0.0):
        self.send, self.n, self.limit, self.pause = send, n, limit, pause
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []

    def _body(self, i):
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                result = self.send(i)
            except Exception as e:          # noqa: BLE001 - recorded for the test
                result = e
            with self._lock:
                self.records.append((t0, time.monotonic() - t0, result))
            if self.pause:
                self._stop.wait(self.pause)

    def __enter__(self):
        self._threads = [threading.Thread(target=self._body, args=(i,), daemon=True)
                         for i in range(self.n)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(15.0)
        assert not any(t.is_alive() for t in self._threads), "client threads hang"

    def snapshot(self):
        with self._lock:
            return list(self.records)

    def errors(self):
        return [(t0, r) for t0, _, r in self.records if isinstance(r, BaseException)]

    def worst_wait(self):
        return max(dt for _, dt, _ in self.records)


def report_worst(scenario, secs):
    print("WORST_WAIT %s %.3f" % (scenario, secs))


def assert_same_workers(n, before):
    """No worker died or was replaced: the module crashed none."""
    assert n.proc.poll() is None, "nginx master exited"
    assert set(n.workers()) == set(before), \
        "workers changed: %r -> %r\n%s" % (before, n.workers(), n.error_log()[-2000:])


# --------------------------------------------------------------------------
# 1. Redis killed with SIGKILL, then started again, under load

REDIS_TIMEOUT = 0.1         # timeout=100ms below
# the client's own overhead on 2 noisy cores; well below the 1 s that a
# request would wait on a connection only the stall detector could unblock
WAIT_MARGIN = 0.6
BACK_WITHIN = 2.0

OUTCOMES = {"o": {(200, "PASSED"), (429, "REJECTED"), (200, "FAILED_OPEN")},
            "c": {(200, "PASSED"), (429, "REJECTED"), (429, "FAILED_CLOSED")},
            "l": {(200, "PASSED"), (429, "REJECTED"), (200, "DEGRADED_LOCAL"),
                  (429, "DEGRADED_LOCAL_REJECTED")}}
ZONES = "ocl"


def test_redis_killed_and_restarted_under_load(nginx_factory, redis):
    n = nginx_factory("rkill", http=[
        redis_conf(redis, "timeout=100ms prefix=rlt"),
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=3 on_failure=open;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=3 on_failure=closed;",
        "rate_limit_zone $http_x_key zone=l:1m rate=1r/m burst=3 on_failure=local;",
    ], locations=[loc("/o/", "rate_limit zone=o"),
                  loc("/c/", "rate_limit zone=c"),
                  loc("/l/", "rate_limit zone=l")]).start()
    workers = n.workers()
    # each thread keeps one key over its limit and adds a fresh key each
    # time: both Redis decisions (PASSED, REJECTED) keep flowing
    hot = [unique_key("hot%d" % i) for i in range(6)]
    counter = iter(range(10 ** 6))

    def send(i):
        zone = ZONES[i % 3]
        key = hot[i] if next(counter) % 2 else unique_key("new")
        r = n.get("/%s/x" % zone, key=key, timeout=5)
        return zone, key, r

    with Traffic(send, 6) as traffic:
        time.sleep(0.5)
        t_kill = time.monotonic()
        redis.proc.kill()
        redis.proc.wait(5)
        time.sleep(1.0)
        redis.start()
        t_back = time.monotonic()

        # enforcement is back in Redis: a key over its limit gets 429 from
        # Redis, and its bucket is in Redis
        def redis_rejects():
            key = unique_key("probe")
            got = [n.get("/c/x", key=key) for _ in range(4)]
            if [(r.status, r.rls) for r in got] != [(200, "PASSED")] * 3 + [(429, "REJECTED")]:
                return None
            return redis.cmd("EXISTS", "rlt:c:" + key) == 1
        wait_for(redis_rejects, BACK_WITHIN + 1.0, interval=0.05,
                 what="Redis to reject again")
        back_after = time.monotonic() - t_back
        # every worker is back: keep the traffic going past BACK_WITHIN
        time.sleep(max(0.0, BACK_WITHIN + 0.7 - (time.monotonic() - t_back)))
    records = traffic.records

    assert not traffic.errors(), traffic.errors()[:5]
    worst = traffic.worst_wait()
    report_worst("redis_kill", worst)
    bad = [(zone, r.status, r.rls) for _, _, (zone, _, r) in records
           if (r.status, r.rls) not in OUTCOMES[zone]]
    assert not bad, bad[:10]
    slow = sorted(round(dt, 3) for _, dt, _ in records if dt > REDIS_TIMEOUT + WAIT_MARGIN)
    assert not slow, "requests slower than timeout + margin: %r" % slow

    failed = [(t0, zone) for t0, _, (zone, _, r) in records
              if r.rls.startswith(("FAILED", "DEGRADED"))]
    # the outage was felt by every zone, and only while it lasted
    assert {zone for _, zone in failed} == set(ZONES), len(records)
    # on_failure=local stays within its bound: one node, so a hot key gets
    # the zone's burst at most from the local bucket
    for key in hot[2::3]:
        local = [r for _, _, (_, k, r) in records if k == key and r.rls == "DEGRADED_LOCAL"]
        assert len(local) <= 3, (key, len(local))
    late = [round(t0 - t_back, 3) for t0, _ in failed if t0 > t_back + BACK_WITHIN]
    assert not late, "decided without Redis later than %.1fs after its return: %r" % (
        BACK_WITHIN, late)
    before_kill = [r.rls for t0, dt, (_, _, r) in records if t0 + dt < t_kill]
    assert before_kill and not [s for s in before_kill
                                if s.startswith(("FAILED", "DEGRADED"))]
    assert back_after < BACK_WITHIN, back_after
    for zone in ZONES:
        assert redis.keys("rlt:%s:new-*" % zone), "no bucket of zone %s in Redis" % zone
    print("redis_kill: %d requests, %d decided without Redis, Redis rejected again "
          "%.3fs after its return" % (len(records), len(failed), back_after))
    assert_same_workers(n, workers)


# --------------------------------------------------------------------------
# 2. A node whose clock is an hour off (libfaketime), sharing Redis

FAKETIME_LIBS = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                 "/usr/lib/faketime/libfaketime.so.1"]
PERIOD_US = 60e6            # rate=1r/m
SKEW_BURST = 4


def faketime_lib():
    if os.environ.get("RATE_LIMIT_SANITIZER_LOGS"):
        # nginx does not start with libfaketime preloaded after the ASan
        # runtime; the plain pass of the suite runs this test
        pytest.skip("libfaketime cannot be preloaded with the sanitizers")
    for path in FAKETIME_LIBS:
        if os.path.isfile(path):
            return path
    msg = "libfaketime is not installed (apt-get install faketime)"
    if os.environ.get("RATE_LIMIT_REQUIRE_MODULE"):
        pytest.fail(msg)
    pytest.skip(msg)


def date_of(resp):
    """The Date header in epoch seconds: the clock of the worker that
    answered."""
    return parsedate_to_datetime(resp.h("Date")).timestamp()


@pytest.mark.parametrize("offset,skew", [("+1h", 3600), ("-1h", -3600)])
def test_clock_skewed_node_leaves_shared_buckets_alone(nginx_factory, redis, offset, skew):
    conf = dict(http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=sk:1m rate=1r/m burst=%d;" % SKEW_BURST,
    ], locations=[loc("/l/", "rate_limit zone=sk")])
    normal = nginx_factory("clock", **conf).start()
    skewed = nginx_factory("skewed", main="env FAKETIME;", **conf)
    skewed.env.update(LD_PRELOAD=faketime_lib(), FAKETIME=offset)
    skewed.start()

    # the skewed node's workers really live an hour off (Date is their clock)
    for _ in range(2 * WORKERS):
        a, b = normal.get("/plain.txt"), skewed.get("/plain.txt")
        assert abs(date_of(b) - date_of(a) - skew) < 5, (a.h("Date"), b.h("Date"))

    # the same requests, one key through both nodes in turn and one key
    # through the normal node alone, give the same decisions and headers
    both, alone = unique_key("both"), unique_key("alone")
    t0 = time.time()
    mixed, ref = [], []
    for i in range(SKEW_BURST + 2):
        mixed.append((normal if i % 2 else skewed).get("/l/x", key=both))
        ref.append(normal.get("/l/x", key=alone))

    def decisions(rs):
        return [(r.status, r.rls, r.h("X-RateLimit-Remaining")) for r in rs]

    def waits(rs):
        return [(int(r.h("X-RateLimit-Reset")), int(r.h("Retry-After") or 0)) for r in rs]
    want = [(200, "PASSED")] * SKEW_BURST + [(429, "REJECTED")] * 2
    assert [(r.status, r.rls) for r in ref] == want, decisions(ref)
    assert decisions(mixed) == decisions(ref), (decisions(mixed), decisions(ref))
    # whole seconds, rounded up: the two keys' requests are milliseconds
    # apart, so a rounding may tip by one second, an hour's skew never
    for (m_reset, m_retry), (r_reset, r_retry) in zip(waits(mixed), waits(ref)):
        assert abs(m_reset - r_reset) <= 1 and abs(m_retry - r_retry) <= 1, \
            (waits(mixed), waits(ref))

    # the stored TATs follow Redis' clock: SKEW_BURST tokens from now (the
    # value is "-", the TAT, and the 3-digit code of the token length)
    tat_both = int(redis.cmd("GET", "rlt:sk:" + both)[1:-3])
    tat_alone = int(redis.cmd("GET", "rlt:sk:" + alone)[1:-3])
    assert abs(tat_both - tat_alone) < 2e6, (tat_both, tat_alone)
    assert abs(tat_both - (t0 * 1e6 + SKEW_BURST * PERIOD_US)) < 5e6, (tat_both, t0)
    pttl = redis.cmd("PTTL", "rlt:sk:" + both)
    assert SKEW_BURST * PERIOD_US / 1e3 - 5000 < pttl <= SKEW_BURST * PERIOD_US / 1e3, pttl
    report_worst("clock_skew_%s" % offset, max(r.elapsed for r in mixed + ref))


# --------------------------------------------------------------------------
# 3. nginx workers killed with SIGKILL while requests flow

KILLS = 3
LOCAL_BURST = 5
# nginx logs a worker's death at alert; and, had the worker held a zone's
# lock, the master's forced unlock of it
KILL_ALERTS = [r"worker process \d+ exited on signal 9",
               r"shared memory zone \"\w+\" was locked by \d+"]


def kill_worker(n):
    """SIGKILLs one worker and waits (bounded) for the master to replace it;
    returns (killed pid, seconds until the new one ran)."""
    old = n.workers()
    victim = old[0]
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not pid_alive(victim) and len(n.workers()) == len(old)
             and set(n.workers()) != set(old), 5.0, interval=0.01,
             what="a new worker in place of %d" % victim)
    return victim, time.monotonic() - t0


def test_worker_killed_under_load(nginx_factory, redis):
    n = nginx_factory("wkill", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=loc:1m rate=1r/m burst=%d backend=local;"
        % LOCAL_BURST,
        "rate_limit_zone $http_x_key zone=red:1m rate=1r/m burst=3;",
    ], locations=[loc("/l/", "rate_limit zone=loc"),
                  loc("/r/", "rate_limit zone=red"),
                  loc("/both/", "rate_limit zone=loc", "rate_limit zone=red")])
    n.allowed_alerts = KILL_ALERTS
    n.start()
    spent = unique_key("spent")
    assert n.statuses("/l/x", spent, 3) == [200] * 3
    hot = unique_key("hot")
    paths = ["/l/x", "/r/x", "/both/x"]
    counter = iter(range(10 ** 6))

    def send(i):
        path = paths[i % len(paths)]
        key = hot if next(counter) % 2 else unique_key("new")
        return path, n.get(path, key=key, timeout=5)

    replaced = []
    with Traffic(send, 6) as traffic:
        for _ in range(KILLS):
            time.sleep(0.3)
            replaced.append(round(kill_worker(n)[1], 3))
        t_last = time.monotonic()
        time.sleep(0.5)
    assert max(replaced) < 3.0, replaced

    # only the requests the dead workers held were cut, once each
    errors = traffic.errors()
    assert len(errors) <= KILLS * traffic.n, errors
    assert all(isinstance(e, (OSError, http.client.HTTPException))
               for _, e in errors), errors
    answered = [(t0, dt, path, r) for t0, dt, res in traffic.records
                if not isinstance(res, BaseException) for path, r in [res]]
    bad = [(path, r.status, r.rls) for _, _, path, r in answered
           if (r.status, r.rls) not in {(200, "PASSED"), (429, "REJECTED")}]
    assert not bad, bad[:10]
    # and the new workers decide them, on every kind of zone
    assert {path for t0, _, path, _ in answered if t0 > t_last} == set(paths)
    worst = max(dt for _, dt, _, _ in answered)
    report_worst("worker_kill", worst)
    # a lock left held would hang the local zones for good
    assert worst < 2.0, sorted(dt for _, dt, _, _ in answered)[-5:]

    # the local buckets outlived the workers, and stay exact
    assert n.statuses("/l/x", spent, 3) == [200, 200, 429]
    fresh = unique_key("fresh")
    res = run_threads(lambda i: [n.get("/l/x", key=fresh).status for _ in range(2)], 6)
    flat = [s for r in res for s in r]
    assert sorted(flat) == [200] * LOCAL_BURST + [429] * (12 - LOCAL_BURST), res
    print("worker_kill: %d requests, %d cut, workers replaced in %r s"
          % (len(traffic.records), len(errors), replaced))


# --------------------------------------------------------------------------
# 4. PostgreSQL stopped and started again under bucket API writes

API_WRITERS = 3
PG_DOWN = 1.5


def test_postgres_restarted_under_api_writes(nodes, postgres):
    a, b = nodes()
    keys = [unique_key("w%d" % i) for i in range(API_WRITERS)]
    for key in keys:
        assert request(a.port, "POST", bucket_url("api"),
                       {"key": key, "rate": "100r/s", "burst": 1}).status == 201
    workers = {x: x.workers() for x in (a, b)}
    seq = [iter(range(2, 10 ** 6)) for _ in keys]

    def send(i):
        # each writer changes its own key's burst, on both nodes in turn
        burst = next(seq[i])
        node = (a, b)[burst % 2]
        r = request(node.port, "PUT", bucket_url("api", keys[i]),
                    {"rate": "100r/s", "burst": burst})
        return burst, r

    with Traffic(send, API_WRITERS, pause=0.02) as traffic:
        time.sleep(0.5)
        t_stop = time.monotonic()
        postgres.stop()
        t_down = time.monotonic()
        time.sleep(PG_DOWN)
        t_up = time.monotonic()
        postgres.start()

        def written_again():
            return any(t0 > t_up and r.status == 200
                       for t0, _, (_, r) in traffic.snapshot())
        wait_for(written_again, 15.0, interval=0.1, what="an API write after the restart")
        time.sleep(0.3)

    assert not traffic.errors(), traffic.errors()[:5]
    records = traffic.records
    statuses = {r.status for _, _, (_, r) in records}
    assert statuses <= {200, 503}, statuses
    down = [(t0, r) for t0, _, (_, r) in records if r.status == 503]
    assert down, "no 503 while PostgreSQL was down"
    for _, r in down:
        assert (r.h("Content-Type") or "").startswith("application/json"), r
        assert set(r.json) == {"error"} and r.json["error"], r
    # PostgreSQL was up before and after: the 503s fall within the outage
    # (and the reconnect backoff that follows it)
    early = [t0 for t0, _ in down if t0 < t_stop - 0.2]
    assert not early, early
    ok_down = [t0 for t0, dt, (_, r) in records
               if r.status == 200 and t_down < t0 and t0 + dt < t_up]
    assert not ok_down, "writes succeeded while PostgreSQL was down"
    worst = traffic.worst_wait()
    report_worst("postgres_restart", worst)
    assert worst < 2.0, worst
    for x in (a, b):
        assert_same_workers(x, workers[x])

    # every node converges on what PostgreSQL holds, even for the writes
    # whose answer the outage cut
    for key in keys:
        stored = postgres.psql("SELECT burst FROM rate_limit_buckets WHERE zone = 'api' "
                               "AND key = '%s';" % key, db=nodes.db)
        for x in (a, b):
            wait_limit(x, key, stored, timeout=3.0)
    # and a change made now reaches both nodes
    r = request(b.port, "PUT", bucket_url("api", keys[0]), {"rate": "100r/s", "burst": 77})
    assert r.status == 200, r
    for x in (a, b):
        wait_limit(x, keys[0], "77", timeout=3.0)
    first_ok = min(t0 + dt for t0, dt, (_, r) in records if t0 > t_up and r.status == 200)
    print("postgres_restart: %d writes, %d answered 503, writing again %.2fs after the "
          "restart began" % (len(records), len(down), first_ok - t_up))


# --------------------------------------------------------------------------
# 5. 10,000 distinct keys: Redis holds them only for their TTL

MANY_KEYS = 10000
MANY_THREADS = 4
# rate=1r/s burst=1: each key lives one second, so thousands pile up
# while the keys flow, and all are gone a second after the last one
MEMORY_SLACK = 256 * 1024


def redis_info(redis, section):
    out = {}
    for line in redis.cmd("INFO", section).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name] = value.strip()
    return out


def used_memory(redis):
    return int(redis_info(redis, "memory")["used_memory"])


def expired_keys(redis):
    return int(redis_info(redis, "stats")["expired_keys"])


def test_many_keys_leave_redis_as_it_was(nginx_factory, redis):
    n = nginx_factory("many", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=mk:1m rate=1r/s burst=1;",
    ], locations=[loc("/l/", "rate_limit zone=mk")]).start()
    # the base: every worker connected and the script loaded, and whatever
    # the module keeps in Redis besides buckets
    for _ in range(4 * WORKERS):
        assert n.get("/l/x", key=unique_key("warm")).status == 200

    def settled():
        """The keys once no bucket is left, expired ones reclaimed too
        (DBSIZE counts those until Redis deletes them)."""
        keys = redis.keys()
        if any(k.startswith("rlt:mk:") for k in keys) or redis.cmd("DBSIZE") != len(keys):
            return None
        return [keys]           # true even when Redis holds no key at all
    [base_keys] = wait_for(settled, 5.0, interval=0.1, what="warm-up keys to expire")
    base_mem, base_expired = used_memory(redis), expired_keys(redis)

    per_thread = MANY_KEYS // MANY_THREADS
    prefix = unique_key("many")

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=5)
        worst, outcomes = 0.0, {}
        try:
            for j in range(per_thread):
                r = n.get("/l/x", key="%s-%d-%d" % (prefix, i, j), conn=conn)
                worst = max(worst, r.elapsed)
                outcomes[(r.status, r.rls)] = outcomes.get((r.status, r.rls), 0) + 1
        finally:
            conn.close()
        return worst, outcomes

    peak = {"keys": 0, "memory": 0}
    stop = threading.Event()

    def sample():
        while not stop.wait(0.1):
            peak["keys"] = max(peak["keys"], redis.cmd("DBSIZE"))
            peak["memory"] = max(peak["memory"], used_memory(redis))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        res = run_threads(client, MANY_THREADS, timeout=60)
    finally:
        stop.set()
        sampler.join(5)
    took = time.monotonic() - t0
    errors = [x for x in res if isinstance(x, BaseException)]
    assert not errors, errors
    total = {}
    for _, outcomes in res:
        for k, v in outcomes.items():
            total[k] = total.get(k, 0) + v
    assert total == {(200, "PASSED"): MANY_KEYS}, total

    # keys really piled up in Redis while they flowed
    assert peak["keys"] > len(base_keys) + 200, (peak, base_keys)
    assert peak["memory"] > base_mem + 20 * 1024, (peak, base_mem)
    assert wait_for(settled, 10.0, interval=0.1, what="every key to expire") == [base_keys]
    assert expired_keys(redis) - base_expired >= MANY_KEYS
    # the keyspace's tables shrink back in Redis' cron (10 times a second)
    try:
        wait_for(lambda: used_memory(redis) <= base_mem + MEMORY_SLACK, 5.0,
                 interval=0.1, what="used_memory back to its base")
    except TimeoutError:
        raise AssertionError("used_memory %d, base %d, peak %d" % (
            used_memory(redis), base_mem, peak["memory"])) from None
    worst = max(w for w, _ in res)
    report_worst("many_keys", worst)
    print("many_keys: %d keys in %.1fs, peak %d keys / %d bytes, base %d bytes, now %d bytes"
          % (MANY_KEYS, took, peak["keys"], peak["memory"], base_mem, used_memory(redis)))
