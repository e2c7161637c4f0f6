"""TLS to Redis (one server and a Redis Cluster), mutual TLS, and Redis 6+
ACL users (AUTH username password).

The certificates are made by openssl in the session (t/tls_certs.py): a CA,
a server certificate for localhost and 127.0.0.1, a client certificate, and
an unrelated CA.  Every Redis keeps its plain port for the tests' own
commands (cmd()); nginx is given only the tls-port, where Redis speaks
nothing but TLS.  The harness self-tests at the top need no module.
"""

import contextlib
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import WORKERS, free_port, loc, unique_key, wait_for
from redis_cluster import REDIS_CLI, RedisCluster
from tls_certs import make_certs

METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"
EXPECT = {"open": (200, "FAILED_OPEN"), "closed": (429, "FAILED_CLOSED")}
LEVELS_WARN_UP = r"\[(warn|error|crit|alert|emerg)\]"


@pytest.fixture(scope="session")
def certs(workdir):
    return make_certs(workdir / "certs")


@pytest.fixture
def tls_redis_factory(redis_factory, certs):
    """A Redis with a tls-port (server certificate of the test CA); extra
    keywords go to conftest.Redis (tls_auth_clients=..., password=...)."""
    def make(**kw):
        kw.setdefault("tls_auth_clients", "no")
        return redis_factory(tls_cert=certs.server, tls_key=certs.server_key,
                             tls_ca=certs.ca, **kw)
    return make


@pytest.fixture
def tls_redis(tls_redis_factory):
    return tls_redis_factory()


@pytest.fixture
def tls_cluster(workdir, certs):
    """3 masters, no replicas, every node with a tls-port, the bus over
    TLS; stopped at teardown."""
    cluster = RedisCluster(workdir, masters=3, replicas=0, tls=certs)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def cli(port, *args, tls=None):
    """redis-cli on 127.0.0.1:port; tls: extra TLS arguments (a list) or
    None for a plain connection.  (returncode, output)."""
    argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port)]
    if tls is not None:
        argv += ["--tls"] + list(tls)
    p = subprocess.run(argv + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       timeout=10)
    return p.returncode, p.stdout.decode(errors="replace").strip()


def tls_clients(redis):
    """CLIENT LIST lines of the connections made to redis' tls-port."""
    return [l for l in redis.cmd("CLIENT", "LIST").splitlines()
            if " laddr=127.0.0.1:%d " % redis.tls_port in l]


# --------------------------------------------------------------------------
# the harness itself (no module)


def test_harness_certificates(certs):
    def verify(ca, cert):
        p = subprocess.run(["openssl", "verify", "-CAfile", ca, cert],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=10)
        return p.returncode
    assert verify(certs.ca, certs.server) == 0
    assert verify(certs.ca, certs.client) == 0
    assert verify(certs.ca, certs.server_dns) == 0
    assert verify(certs.other_ca, certs.other_client) == 0
    assert verify(certs.other_ca, certs.server) != 0
    assert verify(certs.ca, certs.other_client) != 0
    out = subprocess.run(["openssl", "x509", "-in", certs.server, "-noout",
                          "-ext", "subjectAltName"], stdout=subprocess.PIPE,
                         timeout=10).stdout.decode()
    assert "DNS:localhost" in out and "IP Address:127.0.0.1" in out, out
    out = subprocess.run(["openssl", "x509", "-in", certs.server_dns, "-noout",
                          "-ext", "subjectAltName"], stdout=subprocess.PIPE,
                         timeout=10).stdout.decode()
    assert "DNS:localhost" in out and "IP Address" not in out, out


def test_harness_tls_redis(tls_redis, certs):
    r = tls_redis
    assert cli(r.tls_port, "PING", tls=["--cacert", certs.ca]) == (0, "PONG")
    rc, out = cli(r.tls_port, "PING", tls=["--cacert", certs.other_ca])
    assert rc != 0 and "certificate verify failed" in out, out
    # the tls-port speaks only TLS; the plain port stays for cmd()
    assert cli(r.tls_port, "PING")[1] != "PONG"
    assert r.cmd("PING") == "PONG"
    assert cli(r.tls_port, "SET", "k", "v", tls=["--cacert", certs.ca]) == (0, "OK")
    assert r.cmd("GET", "k") == "v"


def test_harness_mutual_tls_redis(tls_redis_factory, certs):
    r = tls_redis_factory(tls_auth_clients="yes")
    ca = ["--cacert", certs.ca]
    assert cli(r.tls_port, "PING", tls=ca)[1] != "PONG"
    assert cli(r.tls_port, "PING", tls=ca + ["--cert", certs.other_client,
                                            "--key", certs.other_client_key])[1] != "PONG"
    assert cli(r.tls_port, "PING", tls=ca + ["--cert", certs.client,
                                            "--key", certs.client_key]) == (0, "PONG")


def test_harness_tls_cluster(tls_cluster, certs):
    c = tls_cluster
    assert len(c.masters()) == 3 and c.replicas() == []
    plain = {n.port for n in c.nodes}
    tls = {n.tls_port for n in c.nodes}
    # a plain client is told the plain ports, a TLS client the TLS ones
    assert {m[1] for m in c.masters()} == plain
    rc, out = cli(c.nodes[0].tls_port, "CLUSTER", "SLOTS", tls=["--cacert", certs.ca])
    assert rc == 0, out
    announced = {int(x) for x in out.split() if x.isdigit() and int(x) in plain | tls}
    assert announced == tls, (out, plain, tls)
    key = unique_key("tlscl")
    owner = c.node(c.node_for_key(key))
    assert cli(owner.tls_port, "SET", key, "v", tls=["--cacert", certs.ca]) == (0, "OK")
    assert c.cmd(owner, "GET", key) == "v"


def test_harness_tls_cluster_with_replicas(workdir, certs):
    """tls-replication: a replica's link to its master (over TLS) is up,
    and what the master writes reaches it."""
    c = RedisCluster(workdir, masters=3, replicas=1, tls=certs)
    try:
        c.start()
        assert len(c.masters()) == 3 and len(c.replicas()) == 3
        for n in c.nodes:
            assert c.cmd(n, "CONFIG", "GET", "tls-replication") == \
                ["tls-replication", "yes"]
        key = unique_key("tlsrepl")
        master = c.node_for_key(key)
        assert c.cmd(master, "SET", key, "v") == "OK"
        c.wait_replicated(master)
        # KEYS has no key argument: a replica answers it from its own data
        assert c.node(c.replica_of(master)).keys(key) == [key]
    finally:
        c.stop()


# --------------------------------------------------------------------------
# nginx over TLS


def tls_params(certs, **kw):
    """rate_limit_redis's TLS parameters: tls=on and the test CA, then kw
    (a value None drops the parameter)."""
    params = {"tls": "on", "tls_trusted_certificate": certs.ca}
    params.update(kw)
    return " ".join("%s=%s" % (k, v) for k, v in params.items() if v is not None)


def tls_nginx(nginx_factory, name, address, params, burst=3, extra="",
              listen_opts=""):
    """nginx with a zone per on_failure mode: /o/ (open) and /c/ (closed),
    both burst, and /metrics."""
    return nginx_factory(name, listen_opts=listen_opts, http=[
        "rate_limit_redis %s %s timeout=200ms prefix=rlt%s;"
        % (address, params, extra),
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=%d on_failure=open;" % burst,
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=%d on_failure=closed;" % burst,
    ], locations=[loc("/o/", "rate_limit zone=o"), loc("/c/", "rate_limit zone=c"),
                  METRICS])


def assert_enforced(n, burst=3, path="/c/x"):
    key = unique_key("enf")
    rs = [n.get(path, key=key) for _ in range(burst + 1)]
    assert [(r.status, r.rls) for r in rs] == \
        [(200, "PASSED")] * burst + [(429, "REJECTED")], [r.describe() for r in rs]
    return key


def wait_enforced(n, timeout=6.0):
    """Until a request on a fresh key is decided by Redis (the first
    connections are made in the background)."""
    wait_for(lambda: n.get("/c/x", key=unique_key("poll")).rls == "PASSED",
             timeout, interval=0.05, what="decisions by Redis")


def assert_failed_over(n, requests=3):
    """Every request decided by on_failure: /o/ lets it through, /c/ not."""
    for _ in range(requests):
        key = unique_key("fail")
        a, b = n.get("/o/x", key=key), n.get("/c/x", key=key)
        assert (a.status, a.rls) == EXPECT["open"], a.describe()
        assert (b.status, b.rls) == EXPECT["closed"], b.describe()


def problem_lines(n, address, since=0):
    """Error-log lines at warn or above naming address."""
    return [l for l in n.error_log(since).splitlines()
            if address in l and re.search(LEVELS_WARN_UP, l)]


def circuit_open(n, address):
    body = n.get("/metrics").body.decode()
    m = re.search(r'^nginx_rate_limit_redis_circuit_open\{address="%s"\} (\S+)$'
                  % re.escape(address), body, re.M)
    assert m, "no circuit_open for %s in:\n%s" % (address, body)
    return float(m.group(1))


def wait_problem(n, address, what, since=0, timeout=3.0):
    return wait_for(lambda: problem_lines(n, address, since), timeout,
                    interval=0.05, what=what)


def test_enforced_over_tls_shared_by_two_nodes(nginx_factory, tls_redis, certs):
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    a, b = [tls_nginx(nginx_factory, name, address, tls_params(certs)).start()
            for name in ("tls-a", "tls-b")]
    for n in (a, b):
        wait_enforced(n)
    for _ in range(3):
        key = unique_key("shared")
        got = [x.get("/c/x", key=key).status for x in (a, b, a, b, a)]
        assert got == [200, 200, 200, 429, 429], got
        assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]
    # every worker of both nodes holds a connection to the tls-port, and
    # none is on the plain port but the harness' own
    wait_for(lambda: len(tls_clients(r)) >= 2 * WORKERS, 5, interval=0.05,
             what="the workers' TLS connections")
    plain = [l for l in r.cmd("CLIENT", "LIST").splitlines()
             if " laddr=127.0.0.1:%d " % r.port in l and "cmd=client" not in l]
    assert plain == [], plain
    for n in (a, b):
        assert not problem_lines(n, address), n.error_log()


def test_tls_on_against_a_plain_port_fails(nginx_factory, tls_redis, certs):
    """The negative of the above: tls=on to the plain port (no TLS there)
    and no tls to the tls-port are both connection failures."""
    r = tls_redis
    plain = "127.0.0.1:%d" % r.port
    n = tls_nginx(nginx_factory, "tls-plainport", plain, tls_params(certs)).start()
    assert_failed_over(n)
    wait_problem(n, plain, "a line naming %s" % plain)
    tls_addr = "127.0.0.1:%d" % r.tls_port
    m = tls_nginx(nginx_factory, "notls-tlsport", tls_addr, "").start()
    assert_failed_over(m)
    wait_problem(m, tls_addr, "a line naming %s" % tls_addr)
    assert r.keys("rlt:*") == []


def test_wrong_ca_is_a_connection_failure(nginx_factory, tls_redis, certs):
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    n = tls_nginx(nginx_factory, "tls-wrongca", address,
                  tls_params(certs, tls_trusted_certificate=certs.other_ca))
    rc, out = n.test_config()
    assert rc == 0, out             # a runtime failure, not a config error
    n.start()
    t0 = time.monotonic()
    while True:
        assert_failed_over(n)
        if time.monotonic() - t0 > 1.5:
            break
    lines = wait_problem(n, address, "a line naming %s" % address)
    assert any("certificate" in l for l in problem_lines(n, address)), "\n".join(lines)
    # logged once a worker at most, not once a request
    assert len(problem_lines(n, address)) <= 2 * WORKERS, "\n".join(problem_lines(n, address))
    assert r.keys("rlt:*") == []
    wait_for(lambda: circuit_open(n, address) == 1, 3, interval=0.05,
             what="the circuit open in /metrics")


def test_server_name(nginx_factory, tls_redis, certs):
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    wrong = tls_nginx(nginx_factory, "tls-wrongname", address,
                      tls_params(certs, tls_server_name="wrong.example")).start()
    # the right name, and the IP of the address when none is given: both
    # are in the certificate
    good = [tls_nginx(nginx_factory, "tls-name-" + name, address,
                      tls_params(certs, tls_server_name=value)).start()
            for name, value in (("localhost", "localhost"), ("none", None))]
    assert_failed_over(wrong)
    lines = wait_problem(wrong, address, "a line naming %s" % address)
    assert any(re.search(r"certificate|wrong\.example|host ?name", l, re.I)
               for l in problem_lines(wrong, address)), "\n".join(lines)
    for n in good:
        wait_enforced(n)
        key = assert_enforced(n)
        assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]
        assert not problem_lines(n, address), n.error_log()


def test_default_name_is_the_host_as_written(nginx_factory, redis_factory, certs):
    """A certificate for DNS:localhost only: 127.0.0.1 as the address is
    checked as an IP and fails; localhost as the address, or
    tls_server_name=localhost, passes."""
    r = redis_factory(tls_cert=certs.server_dns, tls_key=certs.server_dns_key,
                      tls_ca=certs.ca, tls_auth_clients="no")
    by_ip = "127.0.0.1:%d" % r.tls_port
    ip = tls_nginx(nginx_factory, "tls-dnsonly-ip", by_ip, tls_params(certs)).start()
    named = tls_nginx(nginx_factory, "tls-dnsonly-name", by_ip,
                      tls_params(certs, tls_server_name="localhost")).start()
    by_name = "localhost:%d" % r.tls_port
    host = tls_nginx(nginx_factory, "tls-dnsonly-host", by_name, tls_params(certs)).start()
    assert_failed_over(ip)
    lines = wait_problem(ip, by_ip, "a line naming %s" % by_ip)
    assert any(re.search(r"certificate|127\.0\.0\.1", l.split("unreachable", 1)[-1])
               for l in lines), "\n".join(lines)
    for n in (named, host):
        wait_enforced(n)
        key = assert_enforced(n)
        assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]


def test_reload_changes_the_ca(nginx_factory, tls_redis, certs):
    """A reload from the wrong CA to the right one (and back) takes effect:
    the new workers use the new SSL context."""
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    conf = dict(http=None, locations=[loc("/o/", "rate_limit zone=o"),
                                      loc("/c/", "rate_limit zone=c"), METRICS])

    def http(ca):
        return ["rate_limit_redis %s %s timeout=200ms prefix=rlt;"
                % (address, tls_params(certs, tls_trusted_certificate=ca)),
                "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=3 on_failure=open;",
                "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=3 on_failure=closed;"]
    conf["http"] = http(certs.other_ca)
    n = nginx_factory("tls-reload", **conf).start()
    assert_failed_over(n)
    conf["http"] = http(certs.ca)
    n.configure(**conf)
    n.reload()
    wait_enforced(n)
    assert_enforced(n)
    conf["http"] = http(certs.other_ca)
    n.configure(**conf)
    n.reload()
    assert_failed_over(n)


@contextlib.contextmanager
def sni_recorder(certs):
    """A TLS server on 127.0.0.1 (the server certificate) recording the
    SNI of each handshake (None: none sent), then closing the connection.
    Yields (port, list of names)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server, certs.server_key)
    names = []
    ctx.sni_callback = lambda sslobj, name, c: names.append(name)
    port = free_port()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(16)
    lsock.settimeout(0.1)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            conn.settimeout(1.0)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                pass
            finally:
                conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield port, names
    finally:
        stop.set()
        t.join(5)
        lsock.close()


@pytest.mark.parametrize("host,server_name,sni", [
    ("127.0.0.1", None, None),              # no SNI for an IP address
    ("127.0.0.1", "localhost", "localhost"),
    ("localhost", None, "localhost"),
    ("localhost", "other.example", "other.example"),
])
def test_sni(nginx_factory, certs, host, server_name, sni):
    with sni_recorder(certs) as (port, names):
        n = tls_nginx(nginx_factory, "tls-sni", "%s:%d" % (host, port),
                      tls_params(certs, tls_server_name=server_name)).start()
        assert_failed_over(n, requests=1)
        wait_for(lambda: len(names) >= WORKERS, 5, interval=0.05,
                 what="a handshake of each worker")
        n.stop()
        assert set(names) == {sni}, names


def test_verify_off_accepts_any_server(nginx_factory, tls_redis, certs):
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    for name, params in (
            # a CA beside tls_verify=off is refused: nginx -t cases
            ("no-ca", tls_params(certs, tls_verify="off",
                                 tls_trusted_certificate=None)),
            ("wrong-name", tls_params(certs, tls_verify="off",
                                      tls_trusted_certificate=None,
                                      tls_server_name="wrong.example"))):
        n = tls_nginx(nginx_factory, "tls-noverify-" + name, address, params).start()
        wait_enforced(n)
        key = assert_enforced(n)
        assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]


def test_tls_reconnects_after_redis_restarts(nginx_factory, tls_redis, certs):
    """A new handshake after Redis comes back on the same ports."""
    r = tls_redis
    address = "127.0.0.1:%d" % r.tls_port
    n = tls_nginx(nginx_factory, "tls-restart", address, tls_params(certs)).start()
    wait_enforced(n)
    assert_enforced(n)
    r.stop()
    assert_failed_over(n)
    r.start()
    wait_for(lambda: len(tls_clients(r)) >= WORKERS, 6, interval=0.05,
             what="every worker's TLS connection back")
    wait_enforced(n)
    key = assert_enforced(n)
    assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]


def test_mutual_tls(nginx_factory, tls_redis_factory, certs):
    r = tls_redis_factory(tls_auth_clients="yes")
    address = "127.0.0.1:%d" % r.tls_port
    with_cert = tls_nginx(nginx_factory, "mtls-yes", address, tls_params(
        certs, tls_certificate=certs.client,
        tls_certificate_key=certs.client_key)).start()
    without = tls_nginx(nginx_factory, "mtls-no", address, tls_params(certs)).start()
    other = tls_nginx(nginx_factory, "mtls-other", address, tls_params(
        certs, tls_certificate=certs.other_client,
        tls_certificate_key=certs.other_client_key)).start()
    wait_enforced(with_cert)
    key = assert_enforced(with_cert)
    # the failing nodes write nothing: only the key above (and the polls)
    assert r.keys("rlt:c:enf-*") == ["rlt:c:" + key]
    for n in (without, other):
        assert_failed_over(n)
        wait_problem(n, address, "a line naming %s" % address)
    assert r.keys("rlt:c:fail-*") == []


@pytest.mark.parametrize("mode", ["ip", "server-name", "acl-user"])
def test_tls_cluster_routes_keys(nginx_factory, tls_cluster, certs, mode):
    """The masters announced (127.0.0.1 and their tls-ports) are checked
    against the certificate: their IP, or tls_server_name for all.  With
    an ACL user on every node, CLUSTER SLOTS and the scripts run as it."""
    from test_cluster import decided_by_redis
    c = tls_cluster
    seed = c.node(c.masters()[0])
    params = tls_params(certs, tls_server_name="localhost" if mode == "server-name"
                        else None)
    if mode == "acl-user":
        for node in c.nodes:
            assert node.cmd("ACL", "SETUSER", "ratelimit", *ACL_RULES) == "OK"
            # AUTH <password> alone would now fail: not the default's
            assert node.cmd("CONFIG", "SET", "requirepass", ADMIN_PASSWORD) == "OK"
            node.password = ADMIN_PASSWORD
        params += " username=ratelimit password=" + USER_PASSWORD
    n = nginx_factory("tls-cluster", listen_opts="reuseport", http=[
        "rate_limit_redis 127.0.0.1:%d cluster %s timeout=200ms prefix=rlt;"
        % (seed.tls_port, params),
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5 on_failure=closed;",
    ], locations=[loc("/l/", "rate_limit zone=z"), METRICS]).start()
    wait_for(lambda: decided_by_redis(n), 8, interval=0.05,
             what="the slot map and the masters' TLS connections")
    keys = [unique_key("route%d" % i) for i in range(30)]
    for key in keys:
        assert n.statuses("/l/x", key, 6) == [200] * 5 + [429], key
    owners = set()
    for key in keys:
        name = "rlt:z:" + key
        owner = c.node_for_key(name)
        assert c.cmd(owner, "EXISTS", name) == 1, (name, owner)
        owners.add(owner)
    assert len(owners) == 3, owners
    # nginx reached every master on its tls-port (as announced to TLS
    # clients), none on a plain one
    for m in c.masters():
        node = c.node(m)
        assert tls_clients(node), "no TLS connection to %d" % node.tls_port
        plain = [l for l in node.cmd("CLIENT", "LIST").splitlines()
                 if " laddr=127.0.0.1:%d " % node.port in l and "cmd=client" not in l]
        assert plain == [], plain
        if mode == "acl-user":
            assert user_clients(node, "ratelimit"), node.cmd("CLIENT", "LIST")
            assert node.cmd("ACL", "LOG") == []


def test_tls_cluster_wrong_server_name_fails(nginx_factory, tls_cluster, certs):
    c = tls_cluster
    seed = "127.0.0.1:%d" % c.node(c.masters()[0]).tls_port
    n = tls_nginx(nginx_factory, "tls-cluster-wrongname", seed,
                  tls_params(certs, tls_server_name="wrong.example"),
                  extra=" cluster")
    n.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:
        assert_failed_over(n, requests=1)
    wait_problem(n, seed, "a line naming %s" % seed)
    assert c.keys("rlt:*") == []


# --------------------------------------------------------------------------
# ACL users

ADMIN_PASSWORD = "Admin-Pw-" + "a9" * 8
USER_PASSWORD = "User-Pw-" + "u4" * 8
WRONG_PASSWORD = "Wrong-Pw-" + "w2" * 8
# what the module sends (core/src/rl_redis_*.cpp), and what its scripts
# call (rate_limit_script.cpp, rate_limit_nodes.cpp: the heartbeat's
# <prefix>:nodes); nothing else: the README's ACL SETUSER line
ACL_RULES = ["on", ">" + USER_PASSWORD, "~rlt:*", "resetchannels", "-@all",
             "+evalsha", "+eval", "+script|load", "+select",
             "+cluster|slots", "+asking",
             "+get", "+set", "+del", "+time", "+zadd", "+zremrangebyscore",
             "+pexpire", "+zcard"]


def acl_redis(redis_factory, **kw):
    """A Redis whose default user has ADMIN_PASSWORD (cmd() uses it) and a
    user "ratelimit" with USER_PASSWORD and only what the module needs."""
    r = redis_factory(password=ADMIN_PASSWORD, **kw)
    assert r.cmd("ACL", "SETUSER", "ratelimit", *ACL_RULES) == "OK"
    return r


def user_clients(redis, user):
    return [l for l in redis.cmd("CLIENT", "LIST").splitlines()
            if " user=%s " % user in l]


def test_acl_user(nginx_factory, redis_factory):
    r = acl_redis(redis_factory)
    address = "127.0.0.1:%d" % r.port
    # the user's password is not the default user's: AUTH <password> alone
    # would fail
    n = tls_nginx(nginx_factory, "acl", address,
                  "username=ratelimit password=%s" % USER_PASSWORD).start()
    wait_enforced(n)
    for _ in range(3):
        key = assert_enforced(n)
        assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]
    wait_for(lambda: len(user_clients(r, "ratelimit")) >= WORKERS, 5,
             interval=0.05, what="the workers' connections as ratelimit")
    assert not problem_lines(n, address), n.error_log()
    # the user was refused nothing
    denied = r.cmd("ACL", "LOG")
    assert denied == [], denied
    written = "\n".join([n.error_log(), n.get("/metrics").body.decode(), n.stderr(),
                         (n.prefix / "access.log").read_text(errors="replace")])
    assert USER_PASSWORD not in written


def test_acl_user_over_tls_with_env_password(nginx_factory, redis_factory, certs):
    r = acl_redis(redis_factory, tls_cert=certs.server, tls_key=certs.server_key,
                  tls_ca=certs.ca, tls_auth_clients="no")
    address = "127.0.0.1:%d" % r.tls_port
    n = nginx_factory("acl-tls", http=[
        "rate_limit_redis %s %s timeout=200ms prefix=rlt;"
        % (address, tls_params(certs, username="ratelimit",
                               password="env:RLT_USER_PW")),
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=3 on_failure=closed;",
    ], locations=[loc("/c/", "rate_limit zone=c")], main="env RLT_USER_PW;")
    n.env["RLT_USER_PW"] = USER_PASSWORD
    n.start()
    wait_enforced(n)
    key = assert_enforced(n)
    assert r.keys("rlt:c:" + key) == ["rlt:c:" + key]
    clients = user_clients(r, "ratelimit")
    assert clients and all(" laddr=127.0.0.1:%d " % r.tls_port in l
                           for l in clients), clients


def test_acl_default_user_disabled(nginx_factory, redis_factory):
    """With the default user off, only AUTH ratelimit <password> gets in."""
    r = acl_redis(redis_factory)
    assert r.cmd("ACL", "SETUSER", "admin", "on", ">" + ADMIN_PASSWORD,
                 "~*", "&*", "+@all") == "OK"
    assert r.cmd("ACL", "SETUSER", "default", "off") == "OK"
    r.username = "admin"
    address = "127.0.0.1:%d" % r.port
    good = tls_nginx(nginx_factory, "acl-only", address,
                     "username=ratelimit password=%s" % USER_PASSWORD).start()
    # the same password without the username: the default user, off
    bad = tls_nginx(nginx_factory, "acl-nouser", address,
                    "password=%s" % USER_PASSWORD).start()
    wait_enforced(good)
    assert_enforced(good)
    assert_failed_over(bad)
    wait_problem(bad, address, "a line naming %s" % address)


def test_acl_wrong_password(nginx_factory, redis_factory):
    """A refused AUTH: on_failure decides, a line or so a worker (not one a
    request) naming the address, and no password anywhere."""
    from test_api import OPEN, TOKEN, bucket_url, request
    r = acl_redis(redis_factory)
    address = "127.0.0.1:%d" % r.port
    api = "        location %s {\n            rate_limit_api;\n        }\n" % OPEN
    n = nginx_factory("acl-wrongpw", http=[
        "rate_limit_redis %s username=ratelimit password=%s timeout=200ms prefix=rlt;"
        % (address, WRONG_PASSWORD),
        "rate_limit_zone $http_x_key zone=o:1m rate=1r/m burst=3 on_failure=open;",
        "rate_limit_zone $http_x_key zone=c:1m rate=1r/m burst=3 on_failure=closed;",
    ], locations=[loc("/o/", "rate_limit zone=o"), loc("/c/", "rate_limit zone=c"),
                  METRICS, api],
        main="env RATE_LIMIT_API_TOKEN;")
    n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
    n.start()
    wait_problem(n, address, "a line naming %s" % address)
    t0 = time.monotonic()
    requests = 0
    while time.monotonic() - t0 < 2.0:
        assert_failed_over(n, requests=1)
        requests += 2
    problems = problem_lines(n, address)
    assert 1 <= len(problems) <= WORKERS, \
        "%d lines for %d requests:\n%s" % (len(problems), requests, "\n".join(problems))
    assert any("AUTH" in l for l in problems), "\n".join(problems)
    assert r.keys("rlt:*") == []
    bodies = [n.get("/metrics").body.decode(errors="replace")]
    for path in (OPEN, bucket_url("o", base=OPEN), bucket_url("o", "k", base=OPEN)):
        bodies.append(n.get(path).body.decode(errors="replace"))
    resp = request(n.port, "PUT", bucket_url("o", "k", base=OPEN), {"rate": "1r/s"},
                   token=None)
    bodies.append(resp.body.decode(errors="replace"))
    written = "\n".join([n.error_log(), (n.prefix / "access.log").read_text(errors="replace"),
                         n.stderr()] + bodies)
    for secret in (WRONG_PASSWORD, USER_PASSWORD, ADMIN_PASSWORD, TOKEN):
        assert secret not in written, secret


# --------------------------------------------------------------------------
# nginx -t


def _bad_cases(certs):
    missing = "/nonexistent/rlt-missing.pem"
    ca = "tls_trusted_certificate=" + certs.ca
    cert = "tls_certificate=%s" % certs.client
    key = "tls_certificate_key=%s" % certs.client_key
    return [
        # (id, rate_limit_redis parameters, what the [emerg] line names)
        ("ca-without-tls", ca, ["tls_trusted_certificate"]),
        ("verify-without-tls", "tls_verify=off", ["tls_verify"]),
        ("name-without-tls", "tls_server_name=localhost", ["tls_server_name"]),
        ("cert-without-tls", "%s %s" % (cert, key), ["tls_certificate"]),
        ("tls-off-with-ca", "tls=off " + ca, ["tls_trusted_certificate"]),
        ("verify-without-ca", "tls=on", ["tls_trusted_certificate", "tls_verify"]),
        ("cert-without-key", "tls=on %s %s" % (ca, cert), ["tls_certificate_key"]),
        ("key-without-cert", "tls=on %s %s" % (ca, key), ["tls_certificate"]),
        ("missing-ca-file", "tls=on tls_trusted_certificate=" + missing, [missing]),
        ("missing-cert-file", "tls=on %s tls_certificate=%s %s" % (ca, missing, key),
         [missing]),
        # the key is never shown (it may be inline, data:...): nginx's own
        # line above names the file
        ("missing-key-file", "tls=on %s %s tls_certificate_key=%s" % (ca, cert, missing),
         ["tls_certificate_key"]),
        ("ca-with-verify-off", "tls=on tls_verify=off " + ca,
         ["tls_trusted_certificate", "tls_verify=off"]),
        ("username-without-password", "username=ratelimit", ["username"]),
        ("tls-bogus", "tls=bogus", ["bogus"]),
        ("verify-bogus", "tls=on %s tls_verify=maybe" % ca, ["maybe"]),
        ("tls-unix", "tls=on " + ca, ["unix:", "tls"]),
    ]


NT_SECRET = "Nt-Pw-" + "s8" * 8
BAD_IDS = ["ca-without-tls", "verify-without-tls", "name-without-tls",
           "cert-without-tls", "tls-off-with-ca", "verify-without-ca",
           "cert-without-key", "key-without-cert", "missing-ca-file",
           "missing-cert-file", "missing-key-file", "username-without-password",
           "tls-bogus", "verify-bogus", "tls-unix", "ca-with-verify-off"]


@pytest.mark.parametrize("case_id", BAD_IDS)
def test_nginx_t_rejects(nginx_factory, certs, case_id, workdir):
    from test_config import names_directive
    cases = {c[0]: c for c in _bad_cases(certs)}
    assert set(cases) == set(BAD_IDS)
    _id, params, named = cases[case_id]
    address = ("unix:%s/redis-nowhere.sock" % workdir if case_id == "tls-unix"
               else "127.0.0.1:%d" % free_port())
    # a password beside the bad parameter is never shown
    if case_id != "username-without-password":
        params += " password=" + NT_SECRET
    n = nginx_factory("t-" + case_id, http=[
        "rate_limit_redis %s %s timeout=50ms;" % (address, params),
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5;",
    ], locations=[loc("/l/", "rate_limit zone=z")])
    rc, out = n.test_config()
    assert rc != 0, "nginx -t accepted it:\n" + n.conf.read_text()
    # the [emerg] line of the directive (a file that cannot be loaded has
    # nginx's own SSL line before it)
    lines = [l for l in out.splitlines()
             if "[emerg]" in l and names_directive(l, "rate_limit_redis")]
    assert lines, out
    assert all(x in lines[0] for x in named), "%r not all in: %s" % (named, out)
    assert NT_SECRET not in out, out


def test_nginx_t_accepts_tls_with_redis_down(nginx_factory, certs):
    ca = "tls_trusted_certificate=" + certs.ca
    for i, params in enumerate([
            "tls=on " + ca,
            "tls=on tls_verify=off",
            "tls=on %s tls_server_name=localhost" % ca,
            "tls=on %s tls_certificate=%s tls_certificate_key=%s"
            % (ca, certs.client, certs.client_key),
            "tls=off",
            "username=ratelimit password=pw",
            "tls=on %s username=ratelimit password=env:RLT_T_PW" % ca]):
        n = nginx_factory("t-ok%d" % i, http=[
            "rate_limit_redis 127.0.0.1:%d %s timeout=50ms;" % (free_port(), params),
            "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=5;",
        ], locations=[loc("/l/", "rate_limit zone=z")], main="env RLT_T_PW;")
        n.env["RLT_T_PW"] = "pw"
        rc, out = n.test_config()
        assert rc == 0, "%s:\n%s" % (params, out)
