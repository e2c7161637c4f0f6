"""What a Redis link does when Redis says no or says nothing: a failed AUTH
or SELECT, a NOSCRIPT that a reload does not cure, a connection that stops
answering.  A small fault-injecting proxy (RespProxy) sits between nginx and
a real redis-server where the test needs to see or change the traffic."""

import re
import socket
import threading
import time

from conftest import WORKERS, loc, run_threads, unique_key, wait_for

METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"
CIRCUIT_OPEN = r"\bunreachable\b.*circuit open"
REACHABLE_AGAIN = r"reachable again"
NOSCRIPT_REPLY = b"-NOSCRIPT No matching script. Please use EVAL.\r\n"


# --------------------------------------------------------------------------
# RESP, enough to split a stream into whole commands and whole replies


def resp_parse(buf, pos=0):
    """(value, end) of the RESP2 value at buf[pos:], or None if incomplete.
    Bulk strings are bytes, arrays lists, errors and statuses bytes."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, line = buf[pos:pos + 1], buf[pos + 1:eol]
    end = eol + 2
    if kind in (b"+", b"-", b":"):
        return line, end
    if kind == b"$":
        n = int(line)
        if n < 0:
            return None, end
        if len(buf) < end + n + 2:
            return None
        return buf[end:end + n], end + n + 2
    if kind == b"*":
        n = int(line)
        items = []
        for _ in range(max(n, 0)):
            got = resp_parse(buf, end)
            if got is None:
                return None
            item, end = got
            items.append(item)
        return items, end
    raise ValueError("not RESP: %r" % buf[pos:pos + 40])


class RespProxy:
    """A TCP proxy on 127.0.0.1 in front of a Redis, one thread each way per
    connection.  It knows which reply answers which command (the module
    pipelines, so replies come in the order of the commands), and it can:

    * ``lie_evalsha``: answer -NOSCRIPT to every EVALSHA, whatever Redis said;
    * ``freeze()`` / ``thaw()``: hold every reply (Redis itself still runs),
      as a frozen server or a dead path would;
    * record, per connection, when it opened and closed and the order in
      which commands arrived and replies went back (``conns``)."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lie_evalsha = False
        self.lock = threading.Lock()
        self.flowing = threading.Event()
        self.flowing.set()
        self.conns = []
        self.sockets = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.closed = True
        self.flowing.set()
        with self.lock:
            socks = list(self.sockets)
        for s in [self.listener] + socks:
            try:
                s.close()
            except OSError:
                pass

    def freeze(self):
        self.flowing.clear()

    def thaw(self):
        self.flowing.set()

    def evalsha_count(self):
        with self.lock:
            return sum(1 for c in self.conns for e in c["events"]
                       if e[0] == "cmd" and e[1] == "EVALSHA")

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                client.close()
                continue
            up.settimeout(None)
            conn = {"opened": time.monotonic(), "closed": None, "events": [],
                    "names": []}
            with self.lock:
                self.conns.append(conn)
                self.sockets += [client, up]
            threading.Thread(target=self._commands, args=(client, up, conn),
                             daemon=True).start()
            threading.Thread(target=self._replies, args=(up, client, conn),
                             daemon=True).start()

    def _commands(self, client, up, conn):
        try:
            for cmd, raw in resp_values(client):
                name = cmd[0].decode().upper() if isinstance(cmd, list) and cmd else "?"
                with self.lock:
                    conn["names"].append(name)
                    conn["events"].append(("cmd", name, time.monotonic()))
                up.sendall(raw)
        except OSError:
            pass
        finally:
            conn["closed"] = time.monotonic()
            shut(client, up)

    def _replies(self, up, client, conn):
        try:
            for _, raw in resp_values(up):
                self.flowing.wait()
                if self.closed or conn["closed"] is not None:
                    return
                with self.lock:
                    name = conn["names"].pop(0)
                    conn["events"].append(("reply", name, time.monotonic()))
                    lie = self.lie_evalsha and name == "EVALSHA"
                client.sendall(NOSCRIPT_REPLY if lie else raw)
        except OSError:
            pass
        finally:
            shut(client, up)


def resp_values(sock):
    """(value, its bytes) for each whole RESP value read from sock, until
    the peer closes."""
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        while True:
            got = resp_parse(buf)
            if got is None:
                break
            value, end = got
            yield value, buf[:end]
            buf = buf[end:]


def shut(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def metric(n, name, address):
    body = n.get("/metrics").body.decode()
    m = re.search(r'^%s\{address="%s"\} (\S+)$' % (re.escape(name), re.escape(address)),
                  body, re.M)
    assert m, "no %s for %s in:\n%s" % (name, address, body)
    return float(m.group(1))


def transitions(n, address, to):
    body = n.get("/metrics").body.decode()
    m = re.search(r'^nginx_rate_limit_redis_circuit_transitions_total\{address="%s",'
                  r'to="%s"\} (\S+)$' % (re.escape(address), to), body, re.M)
    assert m, body
    return int(float(m.group(1)))


def zones_nginx(nginx_factory, name, redis_line, workers=WORKERS):
    """Three zones, one for each on_failure policy, and the metrics."""
    return nginx_factory(name, http=[
        redis_line,
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=3 on_failure=open;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=3 on_failure=closed;",
        "rate_limit_zone $http_x_key zone=d:1m rate=1r/m burst=3 on_failure=local;",
    ], locations=[loc("/o/", "rate_limit zone=o"), loc("/c/", "rate_limit zone=c"),
                  loc("/d/", "rate_limit zone=d"), METRICS], workers=workers)


FAILED = {"/o/": (200, "FAILED_OPEN"), "/c/": (429, "FAILED_CLOSED"),
          "/d/": (200, "DEGRADED_LOCAL")}


def assert_failed_over(n):
    for path, want in FAILED.items():
        t0 = time.monotonic()
        r = n.get(path + "x", key=unique_key())
        assert (r.status, r.rls) == want, "%s: %s" % (path, r.describe())
        assert time.monotonic() - t0 < 0.5, r.describe()


def all_keys(redis, databases=16):
    found = {db: redis.keys(db=db) for db in range(databases)}
    return {db: keys for db, keys in found.items() if keys}


# --------------------------------------------------------------------------
# a failed AUTH or SELECT


def test_select_out_of_range_writes_into_no_database(nginx_factory, redis_factory):
    """db=16 on a Redis with 16 databases: SELECT fails, and the link is a
    failed one: no key in any database, on_failure decides, one line names
    the address and Redis' reason, the circuit is open, and the workers
    retry with backoff."""
    r = redis_factory(extra_args=["--databases", "16"])
    address = "127.0.0.1:%d" % r.port
    n = zones_nginx(nginx_factory, "db16",
                    "rate_limit_redis %s db=16 timeout=200ms prefix=rlt;" % address)
    n.start()
    # at once, while the workers connect, and concurrently
    res = run_threads(lambda i: n.get("/o/x", key=unique_key()), 8)
    assert all(x.rls == "FAILED_OPEN" for x in res), [x.describe() for x in res]
    wait_for(lambda: n.error_lines(CIRCUIT_OPEN), 3, what="the circuit-open line")
    def connections():
        info = r.cmd("INFO", "stats")
        return int(info.split("total_connections_received:")[1].split()[0])
    before = connections()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3:
        assert_failed_over(n)
        time.sleep(0.1)
    after = connections()
    elapsed = time.monotonic() - t0
    assert all_keys(r) == {}
    lines = n.error_lines(r"redis")
    problems = [x for x in lines if re.search(r"\[(warn|error|crit|alert|emerg)\]", x)]
    assert len(problems) == 1, "\n".join(problems)
    assert address in problems[0] and "SELECT failed" in problems[0] \
        and "DB index is out of range" in problems[0], problems[0]
    assert metric(n, "nginx_rate_limit_redis_circuit_open", address) == 1
    assert metric(n, "nginx_rate_limit_redis_up", address) == 0
    # reconnected with backoff, doubling from 50 ms to 1 s: a few tries a
    # worker (at most 5 before the cap, then one a second), not one a
    # request; after - before counts the second INFO's connection too
    retries = after - before - 1
    assert WORKERS * 2 <= retries <= WORKERS * (5 + elapsed + 1), (retries, elapsed)


def test_wrong_password_then_fixed(nginx_factory, redis_factory):
    """AUTH fails: on_failure decides, one line, the circuit is open; once
    Redis accepts the password, a reconnection (backoff at most 1 s)
    brings the decisions back to Redis."""
    r = redis_factory(password="right")
    address = "127.0.0.1:%d" % r.port
    n = zones_nginx(nginx_factory, "wrongpw",
                    "rate_limit_redis %s password=Wr0ng-pw db=3 timeout=200ms "
                    "prefix=rlt;" % address)
    n.start()
    wait_for(lambda: n.error_lines(CIRCUIT_OPEN), 3, what="the circuit-open line")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        assert_failed_over(n)
        time.sleep(0.1)
    problems = [x for x in n.error_lines(r"redis")
                if re.search(r"\[(warn|error|crit|alert|emerg)\]", x)]
    assert len(problems) == 1, "\n".join(problems)
    assert address in problems[0] and "AUTH failed" in problems[0], problems[0]
    assert "Wr0ng-pw" not in n.error_log()
    assert metric(n, "nginx_rate_limit_redis_circuit_open", address) == 1
    assert all_keys(r) == {}

    mark = n.log_mark()
    assert r.cmd("CONFIG", "SET", "requirepass", "Wr0ng-pw") == "OK"
    r.password = "Wr0ng-pw"
    t_fixed = time.monotonic()

    # each worker's link reconnects on its own, within its backoff (1 s)
    def workers_back():
        return len([c for c in r.cmd("CLIENT", "LIST").splitlines()
                    if " db=3 " in c and "cmd=client" not in c]) == WORKERS
    wait_for(workers_back, 3, interval=0.05, what="the workers' connections back")
    assert time.monotonic() - t_fixed < 1.5
    key = unique_key()
    assert n.statuses("/c/x", key, 4) == [200, 200, 200, 429]
    assert "rlt:c:%s" % key in r.keys(db=3)
    assert r.keys(db=0) == []
    wait_for(lambda: metric(n, "nginx_rate_limit_redis_circuit_open", address) == 0, 2,
             what="the circuit closed")
    assert len(n.error_lines(REACHABLE_AGAIN, since=mark)) == 1


def test_nothing_goes_out_before_auth_and_select_answer(nginx_factory, redis_factory):
    """No command is pipelined behind AUTH and SELECT: on every connection,
    the first other command leaves after their replies came back; and the
    requests that came meanwhile waited for them, and were decided by
    Redis."""
    r = redis_factory(password="pw", extra_args=["--databases", "16"])
    proxy = RespProxy(r.port)
    try:
        n = zones_nginx(nginx_factory, "order",
                        "rate_limit_redis 127.0.0.1:%d password=pw db=7 timeout=1s "
                        "prefix=rlt;" % proxy.port)
        proxy.freeze()              # AUTH and SELECT stay unanswered for now
        n.start()
        wait_for(lambda: len(proxy.conns) >= WORKERS, 3, what="the workers' connections")
        res = []
        keys = [unique_key() for _ in range(6)]
        threads = [threading.Thread(target=lambda k=k: res.append(
            n.get("/c/x", key=k, timeout=5))) for k in keys]
        for t in threads:
            t.start()
        time.sleep(0.3)
        with proxy.lock:
            early = [e[1] for c in proxy.conns for e in c["events"]
                     if e[0] == "cmd" and e[1] not in ("AUTH", "SELECT")]
        proxy.thaw()
        for t in threads:
            t.join(5)
        assert early == [], "sent before AUTH and SELECT answered: %r" % early
        assert [x.rls for x in res] == ["PASSED"] * 6, [x.describe() for x in res]
        assert set(r.keys(db=7)) >= {"rlt:c:" + k for k in keys}, r.keys(db=7)
        assert r.keys(db=0) == []
        with proxy.lock:
            for c in proxy.conns:
                ev = c["events"]
                setup_done = max(t for kind, name, t in ev
                                 if kind == "reply" and name in ("AUTH", "SELECT"))
                first_other = min((t for kind, name, t in ev
                                   if kind == "cmd" and name not in ("AUTH", "SELECT")),
                                  default=None)
                assert first_other is None or first_other >= setup_done, ev
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# NOSCRIPT that does not go away


def test_persistent_noscript_opens_the_circuit(nginx_factory, redis):
    """A proxy answers NOSCRIPT to every EVALSHA, even right after SCRIPT
    LOAD: after one reload it is an error like any other.  The circuit
    opens, with one line naming the address, the metrics show it, and
    requests are decided at once with no round trip until the proxy stops
    lying; then the circuit closes."""
    proxy = RespProxy(redis.port)
    address = "127.0.0.1:%d" % proxy.port
    try:
        n = zones_nginx(nginx_factory, "noscript",
                        "rate_limit_redis %s timeout=200ms prefix=rlt;" % address)
        n.start()
        assert n.get("/c/x", key=unique_key()).rls == "PASSED"
        mark = n.log_mark()
        proxy.lie_evalsha = True
        for _ in range(10):
            r = n.get("/o/x", key=unique_key())
            assert r.rls == "FAILED_OPEN", r.describe()
        wait_for(lambda: n.error_lines(CIRCUIT_OPEN, since=mark), 2,
                 what="the circuit-open line")
        opened = n.error_lines(CIRCUIT_OPEN, since=mark)
        assert len(opened) == 1 and address in opened[0] and "NOSCRIPT" in opened[0], opened
        assert metric(n, "nginx_rate_limit_redis_circuit_open", address) == 1

        # open: decided at once, and no EVALSHA per request, for 2 s
        asked = proxy.evalsha_count()
        t0 = time.monotonic()
        count = 0
        while time.monotonic() - t0 < 2:
            assert_failed_over(n)
            count += 3
        probes = proxy.evalsha_count() - asked
        assert count >= 30 and probes <= 2 * 12, (count, probes)
        assert metric(n, "nginx_rate_limit_redis_circuit_open", address) == 1
        assert transitions(n, address, "open") == 1
        assert len(n.error_lines(CIRCUIT_OPEN, since=mark)) == 1

        mark = n.log_mark()
        proxy.lie_evalsha = False
        t_honest = time.monotonic()

        def decided_by_redis():
            return n.get("/o/x", key=unique_key("back")).rls == "PASSED"
        wait_for(decided_by_redis, 3, interval=0.05, what="decisions back in Redis")
        assert time.monotonic() - t_honest < 1.5
        assert metric(n, "nginx_rate_limit_redis_circuit_open", address) == 0
        assert len(n.error_lines(REACHABLE_AGAIN, since=mark)) == 1
    finally:
        proxy.close()


# --------------------------------------------------------------------------
# a connection that stops answering


def test_stuck_connection_dropped_after_timeout_never_before(nginx_factory, redis):
    """timeout=3s and replies stop: each request waits its whole 3 s (none
    cut short), and the connection is dropped once the newest request's
    timeout has passed, not 12 s later; the drop opens the circuit, so the
    next request does not wait."""
    proxy = RespProxy(redis.port)
    address = "127.0.0.1:%d" % proxy.port
    try:
        n = zones_nginx(nginx_factory, "stall3s",
                        "rate_limit_redis %s timeout=3s prefix=rlt;" % address, workers=1)
        n.start()
        assert n.get("/o/x", key=unique_key()).rls == "PASSED"
        conns = len(proxy.conns)
        assert conns == 1
        mark = n.log_mark()
        proxy.freeze()
        t0 = time.monotonic()
        waits = {}

        def ask(name):
            t = time.monotonic()
            r = n.get("/o/x", key=unique_key(), timeout=10)
            waits[name] = (time.monotonic() - t, r.rls)
        a = threading.Thread(target=ask, args=("a",))
        a.start()
        time.sleep(1.5)
        b = threading.Thread(target=ask, args=("b",))
        b.start()
        wait_for(lambda: proxy.conns[0]["closed"], 10, interval=0.05,
                 what="the stuck connection dropped")
        dropped = proxy.conns[0]["closed"] - t0
        a.join(5)
        b.join(5)
        for name in "ab":
            wait, rls = waits[name]
            assert rls == "FAILED_OPEN" and 2.9 <= wait <= 3.6, (name, waits)
        assert 4.4 <= dropped <= 5.5, dropped
        lines = n.error_lines(CIRCUIT_OPEN, since=mark)
        assert len(lines) == 1 and address in lines[0] and "no reply for" in lines[0], lines
        t = time.monotonic()
        assert n.get("/o/x", key=unique_key()).rls == "FAILED_OPEN"
        assert time.monotonic() - t < 0.3
        proxy.thaw()

        def decided_by_redis():
            return n.get("/o/x", key=unique_key("back")).rls == "PASSED"
        wait_for(decided_by_redis, 3, interval=0.05, what="decisions back in Redis")
    finally:
        proxy.close()


def test_stuck_connection_dropped_after_a_second_with_a_short_timeout(nginx_factory,
                                                                       redis):
    """timeout=50ms: requests wait 50 ms, and a connection that has answered
    nothing for a second is dropped."""
    proxy = RespProxy(redis.port)
    try:
        n = zones_nginx(nginx_factory, "stall50",
                        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;"
                        % proxy.port, workers=1)
        n.start()
        assert n.get("/o/x", key=unique_key()).rls == "PASSED"
        proxy.freeze()
        t0 = time.monotonic()
        slowest = 0
        while proxy.conns[0]["closed"] is None and time.monotonic() - t0 < 5:
            t = time.monotonic()
            assert n.get("/o/x", key=unique_key()).rls == "FAILED_OPEN"
            slowest = max(slowest, time.monotonic() - t)
            time.sleep(0.02)
        dropped = (proxy.conns[0]["closed"] or float("inf")) - t0
        assert 0.95 <= dropped <= 1.6, dropped
        assert slowest < 0.3, slowest
        proxy.thaw()
    finally:
        proxy.close()
