"""Redis host names that move: with nginx's `resolver`, the workers resolve
the name of rate_limit_redis at run time, again when the answer's validity
runs out, and follow it to a new address.

A small DNS server (DnsServer, UDP on 127.0.0.1) answers the A queries of
a name with records the test switches at run time; two redis-servers
listen on the same port of 127.0.0.2 and 127.0.0.3.  Under load, the
record moves from one to the other: within the validity plus a second
(nginx's cache keeps an answer through its last second), plus the margin
below, the buckets are on the new Redis and enforced there, and no request
failed nor waited beyond the timeout.  The test prints
``WORST_WAIT dns_move <seconds>`` and ``TIME_TO_ENFORCEMENT dns_move
<seconds>`` (shown with ``pytest -s``).

The same when the old Redis goes with the move (a managed service's
failover), and over TLS (each address's certificate checked against the
name as written); a cluster's seed may be a name.  Without `resolver`, a name
that does not resolve fails `nginx -t`, as it always did.
"""

import socket
import struct
import threading
import time

from conftest import free_port, loc, unique_key, wait_for
from test_cluster import decided_by_redis
from test_faults import Traffic, report_worst
from tls_certs import make_certs

NAME = "redis.test"
VALID = 1.0                 # resolver valid=1s
REDIS_TIMEOUT = 0.5         # timeout=500ms: a request that fails is the test's failure
BURST = 5
# how late the move may be after VALID + 1 s, term by term: the core asks
# again no sooner than 100 ms after an answer that its cache still held;
# a link with decisions in flight waits for the newest one (the timeout);
# the check itself polls every 20 ms and sends a burst (BURST + 1 round
# trips); and the two shared cores' scheduling noise, as test_faults.py
# allows for it (WAIT_MARGIN)
RETRY_FLOOR = 0.1
POLL = 0.02
WAIT_MARGIN = 0.6
MOVE_MARGIN = RETRY_FLOOR + REDIS_TIMEOUT + POLL + WAIT_MARGIN
MOVE_WITHIN = VALID + 1.0 + MOVE_MARGIN


class DnsServer:
    """A DNS server on 127.0.0.1 (UDP, one thread): A records of the names
    set with set(), with a TTL; other types of those names get no answer
    (NOERROR), other names NXDOMAIN.  Counts the queries it answers."""

    def __init__(self, ttl=1):
        self.ttl = ttl
        self.records = {}
        self.queries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def set(self, name, ip):
        with self._lock:
            self.records[name.lower()] = ip

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        assert not self._thread.is_alive(), "the DNS server hangs"

    def _serve(self):
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            reply = self._answer(query)
            if reply:
                self.sock.sendto(reply, peer)

    def _answer(self, query):
        if len(query) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", query[:6])
        if qdcount != 1:
            return None
        labels, at = [], 12
        while at < len(query) and query[at]:
            n = query[at]
            labels.append(query[at + 1:at + 1 + n].decode("ascii", "replace"))
            at += 1 + n
        question = query[12:at + 5]
        qtype = struct.unpack("!H", query[at + 1:at + 3])[0]
        with self._lock:
            ip = self.records.get(".".join(labels).lower())
            self.queries += 1
        # one address, or a list of them (one A record each)
        ips = [ip] if isinstance(ip, str) else (ip or [])
        answers = b""
        if qtype == 1:
            answers = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, self.ttl, 4)
                               + socket.inet_aton(a) for a in ips)
        rcode = 0 if ips else 3
        # QR, AA, RD as asked, RA
        header = struct.pack("!HHHHHH", ident,
                             0x8480 | (flags & 0x0100) | rcode, 1,
                             len(ips) if answers else 0, 0, 0)
        return header + question + answers


def dns_nginx(nginx_factory, dns, port, name="dns", params=""):
    """nginx with the DNS server as its resolver, its Redis the name."""
    return nginx_factory(name, listen_opts="reuseport", http=[
        "resolver 127.0.0.1:%d valid=%ds;" % (dns.port, VALID),
        "rate_limit_redis %s:%d timeout=%dms prefix=rlt %s;"
        % (NAME, port, REDIS_TIMEOUT * 1000, params),
        "rate_limit_zone $http_x_key zone=d:1m rate=1r/m burst=%d;" % BURST,
    ], locations=[loc("/d/", "rate_limit zone=d")]).start()


def on(redis, key):
    return redis.cmd("EXISTS", "rlt:d:" + key) == 1


def decided_on(n, redis):
    """Requests decided by Redis, and every worker of n among those that
    decided them (reuseport spreads the connections over the workers)."""
    keys = [unique_key("probe") for _ in range(8)]
    if not all(n.get("/d/x", key=k).rls == "PASSED" and on(redis, k)
               for k in keys):
        return False
    n.access_for(keys[-1], 1)
    return {r["pid"] for r in n.access_records()
            if r["key"] in keys} >= set(n.workers())


def enforced_on(n, new, old=None):
    """A burst then 429, on new alone (old: the Redis that still runs)."""
    key = unique_key("burst")
    statuses = n.statuses("/d/x", key, BURST + 1)
    return (statuses == [200] * BURST + [429] and on(new, key)
            and not (old and on(old, key)))


def test_a_host_name_that_moves_under_load(nginx_factory, redis_factory):
    port = free_port()
    old = redis_factory(bind="127.0.0.2", port=port)
    new = redis_factory(bind="127.0.0.3", port=port)

    with DnsServer(ttl=300) as dns:
        dns.set(NAME, "127.0.0.2")
        n = dns_nginx(nginx_factory, dns, port)

        # the name did not resolve when nginx read it: the workers did
        wait_for(lambda: decided_on(n, old), 10, what="buckets on 127.0.0.2")
        assert n.error_lines(r'"%s" is 127\.0\.0\.2' % NAME)

        def send(i):
            key = unique_key("load")
            return key, n.get("/d/x", key=key, timeout=5)

        with Traffic(send, 2, limit=20.0) as traffic:
            wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                     what="traffic before the move")
            t_switch = time.monotonic()
            dns.set(NAME, "127.0.0.3")

            wait_for(lambda: enforced_on(n, new, old), MOVE_WITHIN + 5,
                     interval=POLL,
                     what="a burst enforced on 127.0.0.3")
            t_enforced = time.monotonic()
            # the load goes on past the bound, for the keys checked below
            wait_for(lambda: any(t0 > t_switch + MOVE_WITHIN + 0.5
                                 for t0, _, _ in traffic.snapshot()),
                     MOVE_WITHIN + 10, what="traffic after the move")

        report_worst("dns_move", traffic.worst_wait())
        print("TIME_TO_ENFORCEMENT dns_move %.3f" % (t_enforced - t_switch))

        assert t_enforced - t_switch <= MOVE_WITHIN, (
            "enforced on the new address %.3fs after the move, bound %.3fs"
            % (t_enforced - t_switch, MOVE_WITHIN))
        assert not traffic.errors(), traffic.errors()[:3]
        results = [(t0, dt, r) for t0, dt, r in traffic.snapshot()]
        failed = [(key, r.status, r.rls) for _, _, (key, r) in results
                  if (r.status, r.rls) != (200, "PASSED")]
        assert not failed, "requests failed across the move: %r" % failed[:5]
        assert traffic.worst_wait() <= REDIS_TIMEOUT + WAIT_MARGIN, \
            traffic.worst_wait()
        late = [key for t0, _, (key, _) in results
                if t0 > t_switch + MOVE_WITHIN]
        assert late
        stray = [key for key in late if not on(new, key) or on(old, key)]
        assert not stray, "%d of %d keys after the bound not on 127.0.0.3" % (
            len(stray), len(late))
        assert len(n.error_lines(r'\[notice\].*"%s" moved from 127\.0\.0\.2 '
                                 r'to 127\.0\.0\.3, the link follows'
                                 % NAME)) == n.workers_n
        assert dns.queries > 0


def test_a_host_name_that_moves_when_its_redis_dies(nginx_factory,
                                                   redis_factory):
    """A managed service's failover: the record moves, and the old server
    goes.  The failed connections ask again at once, but nginx's cache
    keeps the old answer until its validity runs out: the same bound."""
    port = free_port()
    old = redis_factory(bind="127.0.0.2", port=port)
    new = redis_factory(bind="127.0.0.3", port=port)

    with DnsServer() as dns:
        dns.set(NAME, "127.0.0.2")
        n = dns_nginx(nginx_factory, dns, port, name="dns-failover")
        wait_for(lambda: decided_on(n, old), 10, what="buckets on 127.0.0.2")

        def send(i):
            return n.get("/d/x", key=unique_key("load"), timeout=5)

        with Traffic(send, 2, limit=20.0) as traffic:
            wait_for(lambda: len(traffic.snapshot()) >= 20, 10,
                     what="traffic before the move")
            t_switch = time.monotonic()
            dns.set(NAME, "127.0.0.3")
            old.stop()
            wait_for(lambda: enforced_on(n, new), MOVE_WITHIN + 5,
                     interval=POLL, what="a burst enforced on 127.0.0.3")
            t_enforced = time.monotonic()

        report_worst("dns_failover", traffic.worst_wait())
        print("TIME_TO_ENFORCEMENT dns_failover %.3f" % (t_enforced - t_switch))

        assert t_enforced - t_switch <= MOVE_WITHIN
        assert not traffic.errors(), traffic.errors()[:3]
        # while the name still pointed at the stopped server, on_failure
        # decided, at once or within the timeout
        assert traffic.worst_wait() <= REDIS_TIMEOUT + WAIT_MARGIN, \
            traffic.worst_wait()


def test_a_host_name_that_moves_over_tls(nginx_factory, redis_factory,
                                         workdir):
    """With tls=on, the certificate of each address the name moves to is
    checked against the name as written (and SNI is that name): both
    servers hold a certificate for redis.test only, so a check against
    the IP address, or no check, would show."""
    certs = make_certs(workdir / "certs-dns")
    port, tls_port = free_port(), free_port()
    tls = dict(tls_cert=certs.server_name, tls_key=certs.server_name_key,
               tls_ca=certs.ca, port=port, tls_port=tls_port)
    old = redis_factory(bind="127.0.0.2", **tls)
    new = redis_factory(bind="127.0.0.3", **tls)

    with DnsServer() as dns:
        dns.set(NAME, "127.0.0.2")
        n = dns_nginx(nginx_factory, dns, tls_port, name="dns-tls",
                      params="tls=on tls_trusted_certificate=%s" % certs.ca)
        wait_for(lambda: decided_on(n, old), 10, what="buckets on 127.0.0.2")

        dns.set(NAME, "127.0.0.3")
        wait_for(lambda: enforced_on(n, new, old), MOVE_WITHIN + 5,
                 interval=POLL, what="a burst enforced on 127.0.0.3 over TLS")

    assert len(n.error_lines(r'\[notice\].*"%s" moved from 127\.0\.0\.2 '
                             r'to 127\.0\.0\.3, the link follows'
                             % NAME)) == n.workers_n
    assert not n.error_lines(r"SSL|TLS|certificate"), \
        n.error_lines(r"SSL|TLS|certificate")[:3]


def test_an_answer_of_several_addresses(nginx_factory, redis_factory):
    """nginx hands over a list of several addresses only inside the
    query's handler: the adapter copies it there.  While the link's address
    is among them the link stays; once it is not, the link moves."""
    port = free_port()
    old = redis_factory(bind="127.0.0.2", port=port)
    new = redis_factory(bind="127.0.0.3", port=port)

    with DnsServer() as dns:
        dns.set(NAME, "127.0.0.2")
        n = dns_nginx(nginx_factory, dns, port, name="dns-several")
        wait_for(lambda: decided_on(n, old), 10, what="buckets on 127.0.0.2")

        dns.set(NAME, ["127.0.0.3", "127.0.0.2"])
        asked = dns.queries
        wait_for(lambda: dns.queries >= asked + n.workers_n, MOVE_WITHIN + 5,
                 what="the answer of two addresses asked for")
        assert enforced_on(n, old, new)
        assert not n.error_lines("moved")

        dns.set(NAME, ["127.0.0.3", "127.0.0.4"])  # the first is taken
        wait_for(lambda: enforced_on(n, new, old), MOVE_WITHIN + 5,
                 interval=POLL, what="a burst enforced on 127.0.0.3")


def test_a_cluster_seed_may_be_a_name(nginx_factory, redis_cluster):
    """The seed's name is resolved by the workers; the masters that the
    cluster announces are numeric."""
    with DnsServer() as dns:
        dns.set("seed.test", "127.0.0.1")
        n = nginx_factory("dns-cluster", listen_opts="reuseport", http=[
            "resolver 127.0.0.1:%d valid=%ds;" % (dns.port, VALID),
            "rate_limit_redis seed.test:%d cluster timeout=%dms prefix=rlt;"
            % (redis_cluster.masters()[0][1], REDIS_TIMEOUT * 1000),
            "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=%d;" % BURST,
        ], locations=[loc("/l/", "rate_limit zone=z")]).start()
        wait_for(lambda: decided_by_redis(n), 10, interval=0.05,
                 what="the slot map read through the seed's name")

        key = unique_key("seed")
        assert n.statuses("/l/x", key, BURST + 1) == [200] * BURST + [429]
        owner = redis_cluster.node_for_key("rlt:z:" + key)
        assert redis_cluster.cmd(owner, "EXISTS", "rlt:z:" + key) == 1


def test_a_query_under_way_does_not_hold_up_a_reload(nginx_factory):
    """The name server never answers: each worker's query is under way, for
    resolver_timeout (30 s by default), and the name has no address yet, so
    on_failure decides.  A reload's old workers go all the same, at once
    (reload() waits 15 s at most), their queries cancelled."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(5)
        n = nginx_factory("dns-reload", http=[
            "resolver 127.0.0.1:%d;" % silent.getsockname()[1],
            "rate_limit_redis %s:6379 timeout=%dms;"
            % (NAME, REDIS_TIMEOUT * 1000),
            "rate_limit_zone $http_x_key zone=d:1m rate=1r/m burst=%d;" % BURST,
        ], locations=[loc("/d/", "rate_limit zone=d")]).start()
        assert silent.recv(512), "no query came"
        assert n.get("/d/x", key=unique_key("q")).rls == "FAILED_OPEN"
        n.reload()
        assert n.get("/d/x", key=unique_key("q")).rls == "FAILED_OPEN"


def test_without_resolver_a_name_that_does_not_resolve_fails(nginx_factory):
    zone = "rate_limit_zone $http_x_key zone=d:1m rate=1r/m burst=5;"
    n = nginx_factory("dns-t", http=["rate_limit_redis %s:6379;" % NAME, zone])
    rc, out = n.test_config()
    assert rc != 0, out
    line = next((l for l in out.splitlines() if "[emerg]" in l), "")
    assert ('invalid address "%s:6379" in "rate_limit_redis" directive: '
            'host not found in %s:' % (NAME, n.conf)) in line, out

    # with a resolver, the workers resolve it: the configuration is valid
    n.configure(http=["resolver 127.0.0.1:%d;" % free_port(),
                      "rate_limit_redis %s:6379;" % NAME, zone])
    rc, out = n.test_config()
    assert rc == 0, out
