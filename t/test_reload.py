"""nginx -s reload: no lost request under load; new settings take effect."""

import http.client
import os
import signal
import threading
import time

import pytest

from conftest import loc, unique_key, wait_for

RELOADS = 3


def conf_for(redis, rate="100r/s", burst=50, prefix="rlt", backend="redis"):
    return dict(http=[
        "rate_limit_redis 127.0.0.1:%d timeout=500ms prefix=%s;" % (redis.port, prefix),
        "rate_limit_zone $http_x_key zone=z:1m rate=%s burst=%d backend=%s;" % (rate, burst, backend),
    ], locations=[loc("/l/", "rate_limit zone=z")])


class Client(threading.Thread):
    """A bounded request loop: keep-alive or a new connection each time."""

    MAX_REQUESTS = 5000
    MAX_SECONDS = 15.0

    def __init__(self, port, keepalive, stop, key):
        super().__init__(daemon=True)
        self.port, self.keepalive, self.stop, self.key = port, keepalive, stop, key
        self.statuses = []
        self.errors = []           # failures on fresh connections: never ok
        self.ka_races = []         # a reused keep-alive connection closed under us

    def _conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def _one(self, conn):
        conn.request("GET", "/l/x", headers={"X-Key": self.key} if self.keepalive
                     else {"X-Key": self.key, "Connection": "close"})
        r = conn.getresponse()
        r.read()
        return r.status

    def run(self):
        deadline = time.monotonic() + self.MAX_SECONDS
        conn = self._conn()
        try:
            for _ in range(self.MAX_REQUESTS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    break
                if not self.keepalive:
                    conn.close()
                reused = conn.sock is not None
                try:
                    self.statuses.append(self._one(conn))
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError) as e:
                    conn.close()
                    if not reused:
                        self.errors.append(repr(e))
                        continue
                    # RFC 9112 9.3.1: a client may retry an idempotent request
                    # when the server closed an idle persistent connection
                    self.ka_races.append(repr(e))
                    try:
                        self.statuses.append(self._one(conn))
                    except Exception as e2:      # noqa: BLE001
                        self.errors.append("retry on new connection: %r" % e2)
                        conn.close()
                except Exception as e:           # noqa: BLE001
                    self.errors.append(repr(e))
                    conn.close()
        finally:
            conn.close()


def test_reload_under_load_loses_nothing(nginx_factory, redis):
    n = nginx_factory("rl", **conf_for(redis)).start()
    stop = threading.Event()
    clients = [Client(n.port, ka, stop, unique_key()) for ka in (True, True, False, False)]
    for c in clients:
        c.start()
    try:
        time.sleep(0.4)
        for i in range(RELOADS):
            before = sum(len(c.statuses) for c in clients)
            n.reload()
            time.sleep(0.4)
            after = sum(len(c.statuses) for c in clients)
            assert after > before, "no request served around reload %d" % (i + 1)
    finally:
        stop.set()
        for c in clients:
            c.join(20)
    assert not any(c.is_alive() for c in clients)
    statuses = [s for c in clients for s in c.statuses]
    errors = [e for c in clients for e in c.errors]
    races = [e for c in clients for e in c.ka_races]
    assert not errors, "connection errors: %r" % errors[:10]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert 429 in statuses and 200 in statuses
    assert len(statuses) > 100
    # keep-alive races are nginx's graceful close, retried; keep them rare
    assert len(races) <= 2 * RELOADS * 2, races


@pytest.mark.parametrize("backend", ["redis", "local"])
def test_reload_changes_rate(nginx_factory, redis, backend):
    n = nginx_factory("rr", **conf_for(redis, rate="1r/m", burst=2, backend=backend)).start()
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429]
    assert rs[0].h("RateLimit-Policy") == '"z";q=2;w=120'

    n.configure(**conf_for(redis, rate="2r/m", burst=6, backend=backend))
    n.reload()
    key2 = unique_key()
    rs = [n.get("/l/x", key=key2) for _ in range(7)]
    assert [r.status for r in rs] == [200] * 6 + [429], [r.describe() for r in rs]
    assert rs[0].h("RateLimit-Policy") == '"z";q=6;w=180'
    assert rs[0].h("X-RateLimit-Reset") == "30"         # 2 per minute: 30 s a token
    assert rs[6].h("Retry-After") == "30"

    # and a faster rate really refills faster
    n.configure(**conf_for(redis, rate="5r/s", burst=1, backend=backend))
    n.reload()
    key3 = unique_key()
    assert n.statuses("/l/x", key3, 2) == [200, 429]
    time.sleep(0.25)
    assert n.get("/l/x", key=key3).status == 200


def test_reload_changes_redis_prefix(nginx_factory, redis):
    # a key lives until its bucket is full again: at 100r/s, 10 ms after one
    # request, too short to be read back on a loaded machine; at 1r/m, 60 s
    n = nginx_factory("rp", **conf_for(redis, rate="1r/m", prefix="one")).start()
    k1 = unique_key()
    assert n.get("/l/x", key=k1).status == 200
    assert redis.keys("one:z:*") == ["one:z:%s" % k1]
    n.configure(**conf_for(redis, rate="1r/m", prefix="two"))
    n.reload()
    k2 = unique_key()
    assert n.get("/l/x", key=k2).status == 200
    assert redis.keys("two:z:*") == ["two:z:%s" % k2]
    # the node registry follows the prefix too
    wait_for(lambda: redis.keys("two:nodes"), 3, what="the registry under two:")


def test_reload_with_bad_config_keeps_running(nginx_factory, redis):
    n = nginx_factory("rbad", **conf_for(redis, rate="1r/m", burst=2)).start()
    key = unique_key()
    assert n.get("/l/x", key=key).status == 200
    good = n.conf.read_text()
    n.configure(**conf_for(redis, rate="bogus", burst=2))
    mark = n.log_mark()
    # `nginx -s reload` would refuse it itself: signal the master directly
    os.kill(n.proc.pid, signal.SIGHUP)
    wait_for(lambda: n.error_lines(r"\[emerg\]", since=mark), 5, what="reload refusal")
    n.conf.write_text(good)
    assert n.statuses("/l/x", key, 2) == [200, 429]     # old config, old bucket


@pytest.mark.parametrize("state", ["frozen", "stopped"])
def test_reload_and_quit_with_redis_unavailable(nginx_factory, redis, state):
    """Old workers must not wait for Redis to exit (reload, then quit)."""
    n = nginx_factory("rq", **conf_for(redis, rate="1r/m", burst=2)).start()
    assert n.get("/l/x", key=unique_key()).status == 200
    if state == "frozen":
        redis.freeze()
    else:
        redis.stop()
    try:
        for _ in range(3):
            n.get("/l/x", key=unique_key(), timeout=5)       # leaves work pending
        t0 = time.monotonic()
        n.reload(timeout=8)
        assert time.monotonic() - t0 < 5
        n.get("/l/x", key=unique_key(), timeout=5)
        t0 = time.monotonic()
        n.stop(timeout=8)
        assert n.proc.returncode == 0
        assert time.monotonic() - t0 < 5
    finally:
        redis.thaw()
