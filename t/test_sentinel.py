"""Redis Sentinel: the workers ask the sentinels for the master of a named
service, follow a failover, and never wait beyond the timeout.

Debian's redis-sentinel 7.0 (t/redis_sentinel.py): a master, a replica and
three sentinels (quorum 2, down-after 1000 ms), shared by the tests that
leave it as they found it (the module-scoped ``sentinel_setup``; the
``sentinels`` fixture restores it after each test: every process running,
the replica in sync, every sentinel agreeing).  The tests that need passwords or TLS start
a setup of their own.  The harness self-tests at the top need no module.

The failovers (SENTINEL FAILOVER, a master killed, a master frozen by
SIGSTOP) run under load across two nginx nodes.  They print ``WORST_WAIT
<scenario> <seconds>`` (the slowest request of the load) and
``TIME_TO_ENFORCEMENT <scenario> <seconds>``: from the failover command,
the kill or the freeze, until both nodes decide on the new master (a
request each on a fresh key after its promotion, for SENTINEL FAILOVER; a
burst enforced there, for the others).  Shown with ``pytest -s``.

Without redis-sentinel the file is skipped (failed with
RATE_LIMIT_REQUIRE_MODULE).
"""

import os
import re
import time

import pytest

from conftest import WORKERS, free_port, loc, unique_key, wait_for
from redis_sentinel import HOST, NAME, SENTINEL_BIN, SentinelSetup, _pairs
from test_faults import Traffic, report_worst
from test_tls import ACL_RULES, USER_PASSWORD, certs  # noqa: F401

TIMEOUT = 0.2           # timeout=200ms below
# what a request may take beyond the timeout: the two shared cores'
# scheduling noise, with sentinels and redis-servers busy failing over
MARGIN = 0.3
BURST = 3
METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"
EXPECT = {"o": (200, "FAILED_OPEN"), "c": (429, "FAILED_CLOSED")}
DATA_PASSWORD = "Data-Pw-" + "d3" * 8
SENTINEL_PASSWORD = "Sentinel-Pw-" + "s7" * 8
WRONG_PASSWORD = "Wrong-Pw-" + "w5" * 8


def need_sentinel():
    if not os.access(SENTINEL_BIN, os.X_OK):
        msg = ("redis-sentinel is not installed: %s is missing (apt-get "
               "install redis-sentinel, or set SENTINEL_BIN)" % SENTINEL_BIN)
        if os.environ.get("RATE_LIMIT_REQUIRE_MODULE"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def sentinel_setup(workdir):
    need_sentinel()
    s = SentinelSetup(workdir)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture
def sentinels(sentinel_setup):
    """The module's setup, ready when the test starts and restored after
    it (what was stopped started again, the setup ready)."""
    sentinel_setup.restore()
    try:
        yield sentinel_setup
    finally:
        sentinel_setup.restore()


@pytest.fixture
def setup_factory(workdir):
    """make(**SentinelSetup keywords) -> a started setup of the test's own,
    stopped at teardown (ask for it before nginx_factory: the nodes stop
    first, and log no sentinel gone)."""
    need_sentinel()
    made = []

    def make(**kw):
        s = SentinelSetup(workdir, **kw)
        made.append(s)
        return s.start()
    try:
        yield make
    finally:
        for s in made:
            s.stop()


# --------------------------------------------------------------------------
# the harness itself (no module)


def test_harness_setup(sentinels):
    s = sentinels
    master = s.master()
    (replica,) = s.replicas()
    for x in s.sentinels:
        assert x.master_addr() == (HOST, master.port)
        assert len(x.sentinel("SENTINELS", NAME)) == 2
        (r,) = map(_pairs, x.sentinel("REPLICAS", NAME))
        assert (int(r["port"]), r["master-link-status"]) == (replica.port, "ok")
    assert s.role(master) == "master" and s.role(replica) == "slave"
    key = unique_key("harness")
    assert master.cmd("SET", key, "v") == "OK"
    wait_for(lambda: replica.cmd("GET", key) == "v", 5, what="replication")


def test_harness_failover(sentinels):
    s = sentinels
    before = s.switches()
    old, new = s.failover()
    # once, and no second failover behind it
    wait_for(lambda: s.switches() == [x + 1 for x in before], 3,
             what="one +switch-master logged by each sentinel")
    assert old is not new and s.master() is new
    assert s.role(new) == "master" and s.role(old) == "slave"
    assert old.cmd("ROLE")[1:3] == [HOST, new.port]
    for x in s.sentinels:
        assert x.master_addr() == (HOST, new.port)
    # a write on the new master reaches the old one, now its replica
    key = unique_key("harness")
    assert new.cmd("SET", key, "v") == "OK"
    wait_for(lambda: old.cmd("GET", key) == "v", 5, what="replication")


def test_harness_killed_master(sentinels):
    s = sentinels
    old = s.master()
    before = s.switches()
    s.kill(old)
    new = s.wait_promoted(old)
    assert new is not old and s.role(new) == "master"
    s.restore()
    assert s.role(old) == "slave" and s.master() is new
    assert s.switches() == [x + 1 for x in before]


# --------------------------------------------------------------------------
# helpers


def sentinel_nginx(nginx_factory, s, name, extra="", master=NAME,
                   addresses=None, main="", burst=BURST):
    """nginx whose Redis is the master of the sentinels of s: zones /o/
    (on_failure=open) and /c/ (closed), both burst, and /metrics."""
    addresses = addresses if addresses is not None else s.sentinel_addresses()
    return nginx_factory(name, listen_opts="reuseport", main=main, http=[
        "rate_limit_redis sentinel=%s %s timeout=%dms prefix=rlt%s;"
        % (master, addresses, TIMEOUT * 1000, extra),
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=%d "
        "backend=redis on_failure=open;" % burst,
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=%d "
        "backend=redis on_failure=closed;" % burst,
    ], locations=[loc("/o/", "rate_limit zone=o"),
                  loc("/c/", "rate_limit zone=c"), METRICS])


def on(redis, key, zone="c"):
    return redis.cmd("EXISTS", "rlt:%s:%s" % (zone, key)) == 1


def decided_on(n, redis, zone="c"):
    """Requests decided by Redis, on redis, and every worker of n among
    those that decided them (reuseport spreads the connections)."""
    keys = [unique_key("probe") for _ in range(8)]
    if not all(n.get("/%s/x" % zone, key=k).rls == "PASSED"
               and on(redis, k, zone) for k in keys):
        return False
    n.access_for(keys[-1], 1)
    return {r["pid"] for r in n.access_records()
            if r["key"] in keys} >= set(n.workers())


def wait_decided_on(n, redis, timeout=10.0):
    wait_for(lambda: decided_on(n, redis), timeout, interval=0.05,
             what="decisions on %d" % redis.port)


def enforced_on(nodes, redis, zone="c"):
    """A fresh key's burst, then 429, across nodes in turn; the bucket on
    redis.  Returns the key, or None."""
    key = unique_key("burst")
    got = [nodes[i % len(nodes)].get("/%s/x" % zone, key=key)
           for i in range(BURST + 2)]
    ok = ([(r.status, r.rls) for r in got]
          == [(200, "PASSED")] * BURST + [(429, "REJECTED")] * 2)
    return key if ok and on(redis, key, zone) else None


def assert_on_failure(n, requests=3):
    """Each request decided by on_failure, within the timeout."""
    for _ in range(requests):
        key = unique_key("fail")
        for zone in ("o", "c"):
            r = n.get("/%s/x" % zone, key=key)
            assert (r.status, r.rls) == EXPECT[zone], r.describe()
            assert r.elapsed <= TIMEOUT + MARGIN, r.elapsed


def log_of(n):
    """All that n wrote: error log, stderr, access log, /metrics."""
    try:
        access = (n.prefix / "access.log").read_text(errors="replace")
    except OSError:
        access = ""
    metrics = n.get("/metrics").body.decode(errors="replace") if n.started else ""
    return "\n".join([n.error_log(), n.stderr(), access, metrics])


def addr(port):
    return re.escape("%s:%d" % (HOST, port))


SAID = r'rate_limit_redis "sentinel=%s": ' % NAME


def problems(n, since=0):
    """Lines at warn or above of the Redis client (not the rejections)."""
    return n.error_lines(r"\[(warn|error|crit|alert|emerg)\].*rate_limit_redis",
                         since)


# --------------------------------------------------------------------------
# enforcement


def test_enforced_through_sentinel(nginx_factory, sentinels):
    s = sentinels
    master = s.master()
    (replica,) = s.replicas()
    n = sentinel_nginx(nginx_factory, s, "sent").start()
    wait_decided_on(n, master)
    for _ in range(3):
        key = enforced_on([n], master)
        assert key, "not enforced on %d" % master.port
        # on the master (enforced_on read it there), and replicated
        wait_for(lambda: on(replica, key), 5, what="the key on the replica")
    ports = "|".join(str(x.port) for x in s.sentinels)
    said = n.error_lines(r"\[notice\].*%sthe master is %s, said sentinel "
                         r"127\.0\.0\.1:(%s)\b" % (SAID, addr(master.port), ports))
    assert said, n.error_log()
    assert not problems(n), "\n".join(problems(n))
    # the master's circuit is labelled with the service; sentinels have none
    metrics = n.get("/metrics").body.decode()
    assert 'nginx_rate_limit_redis_up{address="sentinel=%s"} 1' % NAME \
        in metrics, metrics
    for x in s.sentinels:
        assert '"127.0.0.1:%d"' % x.port not in metrics, metrics
    # every worker asked every sentinel and listens for +switch-master
    for x in s.sentinels:
        wait_for(lambda: len(subscribed(x)) >= WORKERS, 5, interval=0.05,
                 what="the workers subscribed on %d" % x.port)
    # the new workers of a reload ask again, and the old ones let go
    n.reload()
    wait_decided_on(n, master)
    assert enforced_on([n], master)
    for x in s.sentinels:
        wait_for(lambda: len(subscribed(x)) == WORKERS, 5, interval=0.05,
                 what="only the new workers subscribed on %d" % x.port)


def subscribed(sentinel, port=None):
    """CLIENT LIST lines of the subscribed connections to sentinel (on
    port: its plain one by default)."""
    port = port or sentinel.port
    return [l for l in sentinel.cmd("CLIENT", "LIST").splitlines()
            if " laddr=127.0.0.1:%d " % port in l and " sub=1 " in l]


def nginx_clients(redis, port):
    """CLIENT LIST lines of the connections to redis on port but the
    sentinels', the replicas' and the harness' own."""
    return [l for l in redis.cmd("CLIENT", "LIST").splitlines()
            if " laddr=127.0.0.1:%d " % port in l and " flags=S " not in l
            and " name=sentinel-" not in l and " cmd=client " not in l]


def test_failover_under_load(nginx_factory, sentinels):
    """SENTINEL FAILOVER while two nginx nodes take requests: none waits
    beyond the timeout, each is decided by Redis or on_failure, and the
    nodes then share the limits on the new master."""
    s = sentinels
    old = s.master()
    (new,) = s.replicas()
    a, b = [sentinel_nginx(nginx_factory, s, name).start()
            for name in ("sent-a", "sent-b")]
    for n in (a, b):
        wait_decided_on(n, old)
    marks = [n.log_mark() for n in (a, b)]

    def send(i):
        return (a, b)[i % 2].get("/o/x", key=unique_key("load"), timeout=5)

    def probe():
        """A request on a fresh key sent once new says it is the master,
        decided, on new: new decided it (the old master's writes of then
        no longer reach it)."""
        if s.role(new, timeout=0.5) != "master":
            return False
        return all(x.get("/c/x", key=k).rls == "PASSED" and on(new, k)
                   for x, k in ((a, unique_key("first")),
                                (b, unique_key("first"))))

    with Traffic(send, 4, limit=30.0) as traffic:
        wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                 what="traffic before the failover")
        t0 = time.monotonic()
        assert s.sentinels[0].sentinel("FAILOVER", NAME) == "OK"
        wait_for(probe, 15, interval=0.02,
                 what="a decision on the new master %d" % new.port)
        t_enforced = time.monotonic() - t0
        s.wait_promoted(old)
        # some load after it too
        count = len(traffic.snapshot())
        wait_for(lambda: len(traffic.snapshot()) >= count + 20, 10,
                 what="traffic after the failover")

    worst = traffic.worst_wait()
    report_worst("sentinel_failover", worst)
    print("TIME_TO_ENFORCEMENT sentinel_failover %.3f" % t_enforced)
    assert not traffic.errors(), traffic.errors()[:3]
    outcomes = {(r.status, r.rls) for _, _, r in traffic.snapshot()}
    assert outcomes <= {(200, "PASSED"), (200, "FAILED_OPEN")}, outcomes
    assert worst <= TIMEOUT + MARGIN, worst

    s.wait_ready()
    for n in (a, b):
        wait_decided_on(n, new, timeout=5)
    for _ in range(3):
        assert enforced_on([a, b], new), "not shared on %d" % new.port
    for n in (a, b):
        metrics = n.get("/metrics").body.decode()
        assert 'nginx_rate_limit_redis_up{address="sentinel=%s"} 1' % NAME \
            in metrics, metrics
    for n, mark in zip((a, b), marks):
        moved = n.error_lines(r"\[notice\].*%sthe master moved from %s to %s, "
                              r"said sentinel 127\.0\.0\.1:\d+"
                              % (SAID, addr(old.port), addr(new.port)), mark)
        assert moved, n.error_log(mark)


def test_killed_master(nginx_factory, sentinels):
    """The master SIGKILLed: the sentinels fail over after down-after;
    meanwhile each zone's on_failure decides, at once; then Redis again,
    on the promoted replica."""
    s = sentinels
    old = s.master()
    (new,) = s.replicas()
    a, b = [sentinel_nginx(nginx_factory, s, name).start()
            for name in ("kill-a", "kill-b")]
    for n in (a, b):
        wait_decided_on(n, old)

    def send(i):
        zone = "oc"[i % 2]
        return zone, (a, b)[i // 2 % 2].get("/%s/x" % zone,
                                            key=unique_key("load"), timeout=5)

    with Traffic(send, 4, limit=30.0) as traffic:
        wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                 what="traffic before the kill")
        t0 = time.monotonic()
        s.kill(old)
        wait_for(lambda: enforced_on([a, b], new), 20, interval=0.05,
                 what="a burst enforced on the promoted %d" % new.port)
        t_enforced = time.monotonic() - t0
        count = len(traffic.snapshot())
        wait_for(lambda: len(traffic.snapshot()) >= count + 20, 10,
                 what="traffic after the failover")

    worst = traffic.worst_wait()
    report_worst("sentinel_master_killed", worst)
    print("TIME_TO_ENFORCEMENT sentinel_master_killed %.3f" % t_enforced)
    assert not traffic.errors(), traffic.errors()[:3]
    seen = {}
    for _, _, (zone, r) in traffic.snapshot():
        seen.setdefault(zone, set()).add((r.status, r.rls))
    assert seen["o"] <= {(200, "PASSED"), EXPECT["o"]}, seen
    assert seen["c"] <= {(200, "PASSED"), EXPECT["c"]}, seen
    # down-after is a second: on_failure decided some in between
    assert EXPECT["o"] in seen["o"] and EXPECT["c"] in seen["c"], seen
    assert worst <= TIMEOUT + MARGIN, worst
    assert s.wait_promoted(old) is new
    for n in (a, b):
        wait_decided_on(n, new, timeout=5)


def test_frozen_master(nginx_factory, sentinels):
    """The master SIGSTOPped: requests wait the timeout at most, then the
    circuit decides them at once; the sentinels fail over, the nodes move
    to the new master; thawed, the old master is made a replica."""
    s = sentinels
    old = s.master()
    (new,) = s.replicas()
    a, b = [sentinel_nginx(nginx_factory, s, name).start()
            for name in ("frozen-a", "frozen-b")]
    for n in (a, b):
        wait_decided_on(n, old)

    def send(i):
        zone = "oc"[i % 2]
        return zone, (a, b)[i // 2 % 2].get("/%s/x" % zone,
                                            key=unique_key("load"), timeout=5)

    with Traffic(send, 4, limit=30.0) as traffic:
        wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                 what="traffic before the freeze")
        t0 = time.monotonic()
        with old.frozen_for():
            wait_for(lambda: enforced_on([a, b], new), 20, interval=0.05,
                     what="a burst enforced on the promoted %d" % new.port)
            t_enforced = time.monotonic() - t0
            count = len(traffic.snapshot())
            wait_for(lambda: len(traffic.snapshot()) >= count + 20, 10,
                     what="traffic after the failover")
        count = len(traffic.snapshot())
        wait_for(lambda: len(traffic.snapshot()) >= count + 20, 10,
                 what="traffic after the thaw")

    worst = traffic.worst_wait()
    report_worst("sentinel_master_frozen", worst)
    print("TIME_TO_ENFORCEMENT sentinel_master_frozen %.3f" % t_enforced)
    assert not traffic.errors(), traffic.errors()[:3]
    seen = {}
    for _, _, (zone, r) in traffic.snapshot():
        seen.setdefault(zone, set()).add((r.status, r.rls))
    assert seen["o"] <= {(200, "PASSED"), EXPECT["o"]}, seen
    assert seen["c"] <= {(200, "PASSED"), EXPECT["c"]}, seen
    assert worst <= TIMEOUT + MARGIN, worst
    # the thawed master is turned into a replica: still enforced on new
    s.wait_ready()
    assert s.master() is new and s.role(old) == "slave"
    for n in (a, b):
        assert enforced_on([n], new)


def test_master_demoted_behind_the_sentinels(nginx_factory, sentinels):
    """The sentinels stopped, then the roles swapped by hand (REPLICAOF):
    the old master answers -READONLY, the workers ask the sentinels (none
    answers), on_failure decides at once.  The sentinels back, they name the
    old master still (down-after is made long): ROLE says "slave", and
    on_failure goes on.  Meanwhile no line says the zones are enforced by
    Redis again.  down-after short again, the sentinels see their master
    claim to be a replica and fail over to the one that is master: the
    node follows."""
    s = sentinels
    old = s.master()
    (new,) = s.replicas()
    n = sentinel_nginx(nginx_factory, s, "demoted").start()
    wait_decided_on(n, old)
    for x in s.sentinels:
        s.set_down_after(x, 60000)
        x.stop()
    mark = n.log_mark()
    assert new.cmd("REPLICAOF", "NO", "ONE") == "OK"
    assert old.cmd("REPLICAOF", HOST, new.port) == "OK"
    wrong = []

    def drive(pattern, what, seconds=5.0):
        """Requests until pattern is logged, each decided at once, by
        on_failure (or PASSED, before the first -READONLY).  Notes in
        wrong when pattern does not come within seconds."""
        t0 = time.monotonic()
        while not n.error_lines(pattern, mark):
            if time.monotonic() - t0 > seconds:
                wrong.append("no %s in %.0f s" % (what, seconds))
                return
            key = unique_key("ro")
            for zone in ("o", "c"):
                r = n.get("/%s/x" % zone, key=key)
                assert r.elapsed <= TIMEOUT + MARGIN, r.elapsed
                assert (r.status, r.rls) in ((200, "PASSED"), EXPECT[zone]), \
                    r.describe()

    drive(r"\[error\].*%s%s is read only, asking the sentinels"
          % (SAID, addr(old.port)), "-READONLY line")
    assert not wrong, n.error_log(mark)
    assert_on_failure(n)

    for x in s.sentinels:
        x.start()
        assert x.master_addr() == (HOST, old.port)
    drive(r'\[error\].*%s%s is not the master \(ROLE says "slave"\), '
          r'asking the sentinels' % (SAID, addr(old.port)), "ROLE line")
    if wrong:
        # had the workers asked the sentinels (SUBSCRIBE follows the
        # question) and heard the old master named?
        wrong.append("the workers' subscriptions on the sentinels: %r" % [
            len(subscribed(x)) for x in s.sentinels])
    assert_on_failure(n)
    closed = n.error_lines(r"reachable again", mark)
    if closed:
        wrong.append("%d lines say the zones are enforced by Redis again, "
                     "and %d open the circuit, while the master is read "
                     "only:\n%s" % (len(closed),
                                     len(n.error_lines(r"circuit open", mark)),
                                     "\n".join(closed[:4])))

    for x in s.sentinels:
        s.set_down_after(x, 1000)
    assert s.wait_promoted(old) is new
    wait_decided_on(n, new)
    assert enforced_on([n], new)
    assert n.error_lines(r"%sthe master moved from %s to %s"
                         % (SAID, addr(old.port), addr(new.port)), mark)
    assert not wrong, "\n".join(wrong)


def test_one_sentinel_down_then_all(nginx_factory, sentinels):
    s = sentinels
    master = s.master()
    s.sentinels[0].stop()
    n = sentinel_nginx(nginx_factory, s, "one-down").start()
    wait_decided_on(n, master)
    assert enforced_on([n], master)

    # all down: a node that knows the master goes on with it; a node that
    # starts now knows none, and on_failure decides at once
    for x in s.sentinels[1:]:
        x.stop()
    assert enforced_on([n], master)
    m = sentinel_nginx(nginx_factory, s, "all-down").start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert_on_failure(m, requests=1)
    assert master.keys("rlt:*:fail-*") == []

    # one sentinel back: enforced on the master
    s.sentinels[2].start()
    wait_decided_on(m, master)
    assert enforced_on([m, n], master)


def test_frozen_sentinel(nginx_factory, sentinels):
    """One sentinel SIGSTOPped: its question is never answered, the others'
    are; a failover is followed through them, and no request waits."""
    s = sentinels
    old = s.master()
    frozen = s.sentinels[0]
    with frozen.frozen_for():
        n = sentinel_nginx(nginx_factory, s, "frozen-sentinel").start()
        wait_decided_on(n, old)
        assert enforced_on([n], old)
        mark = n.log_mark()

        def send(i):
            return n.get("/o/x", key=unique_key("load"), timeout=5)
        with Traffic(send, 2, limit=20.0) as traffic:
            wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                     what="traffic before the failover")
            _, new = s.failover(sentinel=1, ready=False)
            wait_decided_on(n, new)
        assert not traffic.errors(), traffic.errors()[:3]
        assert traffic.worst_wait() <= TIMEOUT + MARGIN, traffic.worst_wait()
        assert enforced_on([n], new)
        moved = n.error_lines(r"%sthe master moved from %s to %s, said "
                              r"sentinel 127\.0\.0\.1:(\d+)"
                              % (SAID, addr(old.port), addr(new.port)), mark)
        assert moved, n.error_log(mark)
        assert all(str(frozen.port) not in l for l in moved), moved


def test_passwords(setup_factory, nginx_factory):
    """requirepass on the sentinels and on the data servers: with both
    passwords, enforced; with a wrong sentinel_password, each sentinel's
    failure logged once a worker, on_failure decides; no secret written."""
    s = setup_factory(password=DATA_PASSWORD,
                      sentinel_password=SENTINEL_PASSWORD)
    master = s.master()
    env = "env RLT_DATA_PW;\nenv RLT_SENTINEL_PW;"
    good = sentinel_nginx(nginx_factory, s, "pw-good", main=env, extra=(
        " password=env:RLT_DATA_PW sentinel_password=env:RLT_SENTINEL_PW"))
    wrong = sentinel_nginx(nginx_factory, s, "pw-wrong", main=env, extra=(
        " password=env:RLT_DATA_PW sentinel_password=%s" % WRONG_PASSWORD))
    # no sentinel_password at all: the sentinels answer NOAUTH
    none = sentinel_nginx(nginx_factory, s, "pw-none", main=env,
                          extra=" password=%s" % DATA_PASSWORD)
    for n in (good, wrong, none):
        n.env["RLT_DATA_PW"] = DATA_PASSWORD
        n.env["RLT_SENTINEL_PW"] = SENTINEL_PASSWORD
        n.start()
    wait_decided_on(good, master)
    assert enforced_on([good], master)
    assert not problems(good), "\n".join(problems(good))

    for n in (wrong, none):
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            assert_on_failure(n, requests=1)
        lines = {}
        for x in s.sentinels:
            lines[x.port] = n.error_lines(r'\[error\].*rate_limit_redis '
                                          r'sentinel "%s": ' % addr(x.port))
        assert any(lines.values()), n.error_log()
        # once a worker until it answers again, not once a request
        assert all(len(v) <= WORKERS for v in lines.values()), lines
        written = log_of(n)
        for secret in (WRONG_PASSWORD, SENTINEL_PASSWORD, DATA_PASSWORD):
            assert secret not in written, secret
    assert master.keys("rlt:*:fail-*") == []
    assert DATA_PASSWORD not in log_of(good)
    assert SENTINEL_PASSWORD not in log_of(good)


def test_unknown_master_name(nginx_factory, sentinels):
    s = sentinels
    n = sentinel_nginx(nginx_factory, s, "unknown", master="othermaster").start()
    requests = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        assert_on_failure(n, requests=1)
        requests += 2
    lines = wait_for(lambda: n.error_lines(
        r'\[error\].*rate_limit_redis sentinel "127\.0\.0\.1:\d+": '
        r'no master named "othermaster"'), 3, what="no master named")
    assert len(lines) < requests, "\n".join(lines)
    assert s.master().keys("rlt:*:fail-*") == []


def test_acl_user_with_role(nginx_factory, sentinels):
    """An ACL user of the master with the README's commands and +role is
    enforced; without +role its ROLE is refused, and on_failure decides."""
    s = sentinels
    master = s.master()
    for r in s.servers:
        assert r.cmd("ACL", "SETUSER", "ratelimit", *ACL_RULES, "+role") == "OK"
        assert r.cmd("ACL", "SETUSER", "norole", *ACL_RULES) == "OK"
    try:
        assert master.cmd("ACL", "LOG", "RESET") == "OK"
        good = sentinel_nginx(nginx_factory, s, "acl-role", extra=(
            " username=ratelimit password=%s" % USER_PASSWORD)).start()
        bad = sentinel_nginx(nginx_factory, s, "acl-norole", extra=(
            " username=norole password=%s" % USER_PASSWORD)).start()
        wait_decided_on(good, master)
        assert enforced_on([good], master)
        users = [l for l in master.cmd("CLIENT", "LIST").splitlines()
                 if " user=ratelimit " in l]
        assert len(users) >= WORKERS, users
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            assert_on_failure(bad, requests=1)
        denied = [_pairs(x) for x in master.cmd("ACL", "LOG")]
        assert denied and {d.get("username") for d in denied} == {"norole"}, \
            denied
        assert problems(bad), bad.error_log()
        for n in (good, bad):
            assert USER_PASSWORD not in log_of(n)
    finally:
        for r in s.servers:
            r.cmd("ACL", "DELUSER", "ratelimit", "norole")


def test_tls(setup_factory, nginx_factory, certs):  # noqa: F811
    """TLS sentinels and data servers (tls-replication): nginx reaches the
    sentinels and the master on their tls-ports only, and enforces."""
    s = setup_factory(tls=certs)
    master = s.master()
    n = sentinel_nginx(nginx_factory, s, "sent-tls", extra=(
        " tls=on tls_trusted_certificate=%s" % certs.ca)).start()
    wait_decided_on(n, master)
    for _ in range(3):
        assert enforced_on([n], master)
    wait_for(lambda: len(nginx_clients(master, master.tls_port)) >= WORKERS,
             5, interval=0.05, what="the workers' TLS connections to the master")
    for x in [master] + s.sentinels:
        plain = [l for l in x.cmd("CLIENT", "LIST").splitlines()
                 if " laddr=127.0.0.1:%d " % x.port in l
                 and "cmd=client" not in l]
        assert plain == [], (x.port, plain)
    for x in s.sentinels:
        wait_for(lambda: len(subscribed(x, x.tls_port)) >= WORKERS, 5,
                 interval=0.05, what="the workers subscribed on %d" % x.tls_port)
    said = n.error_lines(r"\[notice\].*%sthe master is %s, said sentinel"
                         % (SAID, addr(master.tls_port)))
    assert said, n.error_log()
    assert not problems(n), "\n".join(problems(n))

    # a wrong CA: the sentinels' handshakes fail, on_failure decides
    bad = sentinel_nginx(nginx_factory, s, "sent-tls-ca", extra=(
        " tls=on tls_trusted_certificate=%s" % certs.other_ca)).start()
    assert_on_failure(bad)
    wait_for(lambda: bad.error_lines(r'rate_limit_redis sentinel "127\.0\.0\.1:'
                                     r'\d+": .*certificate'), 3,
             what="a certificate failure logged")


def test_tls_master_name_checked(setup_factory, nginx_factory, certs):  # noqa: F811
    """The data servers' certificate names localhost only (the sentinels'
    has 127.0.0.1 too): the master's address, 127.0.0.1, is not in it, so
    the master fails unless tls_server_name=localhost is given."""
    s = setup_factory(tls=certs, data_cert=(certs.server_dns,
                                            certs.server_dns_key))
    master = s.master()
    tls = " tls=on tls_trusted_certificate=%s" % certs.ca
    by_ip = sentinel_nginx(nginx_factory, s, "sent-tls-ip", extra=tls).start()
    named = sentinel_nginx(nginx_factory, s, "sent-tls-name", extra=(
        tls + " tls_server_name=localhost")).start()
    wait_decided_on(named, master)
    assert enforced_on([named], master)
    assert not problems(named), "\n".join(problems(named))
    # the sentinels answered by_ip (their certificate has the IP): the
    # master it was told of failed its check
    wait_for(lambda: by_ip.error_lines(r"%sthe master is %s"
                                       % (SAID, addr(master.tls_port))), 3,
             what="the master named to by_ip")
    assert_on_failure(by_ip)
    lines = wait_for(lambda: by_ip.error_lines(
        r'\[error\].*rate_limit_redis "sentinel=%s" is unreachable' % NAME), 3,
        what="the master's failure logged")
    assert any(re.search(r"certificate|127\.0\.0\.1", l) for l in lines), \
        "\n".join(lines)
    assert not by_ip.error_lines(r'rate_limit_redis sentinel "'), \
        by_ip.error_log()
    assert master.keys("rlt:*:fail-*") == []


# --------------------------------------------------------------------------
# nginx -t

SECRET = "Nt-Pw-" + "q6" * 8
SENTINELS = "127.0.0.1:%d 127.0.0.1:%d" % (free_port(), free_port())
BAD = [
    # (id, rate_limit_redis parameters, fragments of the [emerg] line)
    ("with-cluster", "sentinel=mymaster %s cluster" % SENTINELS,
     ['"sentinel=" and "cluster" cannot be used together in '
      '"rate_limit_redis" directive']),
    ("no-name", "sentinel= %s" % SENTINELS,
     ['invalid parameter "sentinel=" in "rate_limit_redis" directive: '
      'no master name']),
    ("bad-char", "sentinel=my/master %s" % SENTINELS,
     ['invalid master name "my/master" in "rate_limit_redis" directive']),
    ("bad-space", "'sentinel=my master' %s" % SENTINELS,
     ['invalid master name "my master" in "rate_limit_redis" directive']),
    ("too-long", "sentinel=%s %s" % ("m" * 129, SENTINELS),
     ['invalid master name "', '" in "rate_limit_redis" directive']),
    ("password-without-sentinel",
     "127.0.0.1:6379 sentinel_password=" + SECRET,
     ['"sentinel_password=" in "rate_limit_redis" directive needs '
      '"sentinel="']),
    ("username-without-sentinel",
     "127.0.0.1:6379 sentinel_username=u",
     ['"sentinel_username=" in "rate_limit_redis" directive needs "sentinel']),
    ("username-without-password",
     "sentinel=mymaster %s sentinel_username=u" % SENTINELS,
     ['"sentinel_username=" in "rate_limit_redis" directive needs '
      '"sentinel_password="']),
    # 1 to 31 sentinels
    ("32-sentinels", "sentinel=mymaster " + " ".join(
        "127.0.0.1:%d" % (30000 + i) for i in range(32)),
     ['"rate_limit_redis" directive', "31"]),
    ("no-address", "sentinel=mymaster",
     ['"rate_limit_redis" directive has no address']),
    ("unix", "sentinel=mymaster unix:/tmp/rlt-sentinel.sock",
     ['invalid address "unix:/tmp/rlt-sentinel.sock" in "rate_limit_redis" '
      'directive: the sentinels are reached over TCP']),
]


@pytest.mark.parametrize("params,fragments", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_nginx_t_rejects(nginx_factory, params, fragments):
    from test_config import names_directive
    # a secret beside the mistake is never shown
    if "sentinel_password=" not in params:
        params += " password=" + SECRET
    if params.startswith("sentinel=m") and "sentinel_username" not in params:
        params += " sentinel_password=" + SECRET
    n = nginx_factory("st-bad", http=[
        "rate_limit_redis %s timeout=50ms;" % params,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5;",
    ], locations=[loc("/l/", "rate_limit zone=z")])
    rc, out = n.test_config()
    assert rc != 0, "nginx -t accepted it:\n" + n.conf.read_text()
    lines = [l for l in out.splitlines()
             if "[emerg]" in l and names_directive(l, "rate_limit_redis")]
    assert lines, out
    assert all(f in lines[0] for f in fragments), "%r not all in: %s" % (
        fragments, out)
    assert SECRET not in out, out


def test_nginx_t_accepts(nginx_factory, certs):  # noqa: F811
    """Valid Sentinel configurations, with nothing listening."""
    many = " ".join("127.0.0.1:%d" % (30000 + i) for i in range(31))
    for i, params in enumerate([
            "sentinel=mymaster 127.0.0.1",          # port 26379
            "sentinel=%s 127.0.0.1:26380" % ("A.b-c_9:" + "m" * 120),
            "sentinel=mymaster " + many,
            "sentinel=mymaster localhost:26380 password=pw db=2",
            "sentinel=mymaster %s sentinel_password=env:RLT_T_PW "
            "sentinel_username=u username=v password=env:RLT_T_PW" % SENTINELS,
            "sentinel=mymaster %s tls=on tls_trusted_certificate=%s"
            % (SENTINELS, certs.ca)]):
        n = nginx_factory("st-ok%d" % i, http=[
            "rate_limit_redis %s timeout=50ms;" % params,
            "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5;",
        ], locations=[loc("/l/", "rate_limit zone=z")], main="env RLT_T_PW;")
        n.env["RLT_T_PW"] = "pw"
        rc, out = n.test_config()
        assert rc == 0, "%s:\n%s" % (params, out)
