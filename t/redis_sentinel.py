"""Redis Sentinel on 127.0.0.1 for the integration tests.

Debian's redis-server and redis-sentinel 7.0: a master, one replica
(``--replicaof``) and three sentinels, each on free loopback ports, each
sentinel with a config file of its own in a folder of its own (Sentinel
rewrites it: the replicas, the other sentinels and the epoch it learns).
They monitor ``mymaster`` (NAME) with a quorum of 2, ``down-after
-milliseconds`` 1000 and a short ``failover-timeout``.  Every process is a
``conftest.Redis`` (a ``Sentinel`` is one that runs redis-sentinel on its
config file), so that it is registered for the clean-up at the end of the
session like any other server, and keeps ``stop()``/``start()`` (same
port), ``cmd()``.

``SentinelSetup(workdir, password=..., sentinel_password=..., tls=certs)``:

* password: requirepass on both data servers (masterauth on the
  replicas, ``sentinel auth-pass`` on the sentinels);
* sentinel_password: requirepass on the sentinels (and ``sentinel
  sentinel-pass``, so that they talk to each other);
* tls (a ``tls_certs.Certs``): every process gets a tls-port too, with
  ``tls-replication yes``: the replication and what the sentinels say to
  the data servers and to each other go over TLS, and the sentinels
  monitor the TLS ports, so that get-master-addr-by-name answers a TLS
  port.  The plain ports stay for the harness' own commands (``cmd()``).
  Every process has tls.server's certificate, or the data servers
  data_cert's, a (certificate, key) pair (Redis checks no peer's name).

Methods (each bounded in time, raising TimeoutError with every sentinel's
view otherwise): ``start()`` (then ``wait_ready()``), ``wait_ready()``
(the replicas in sync, and every running sentinel agreeing on the master,
seeing the replicas' link up and the other running sentinels),
``failover()`` (SENTINEL FAILOVER, then every sentinel names the new
master and ROLE on it says master), ``kill(server)``,
``wait_promoted(old)`` (after a killed master), ``restore()`` (every
stopped server started again as a replica of the current master),
``stop()`` (everything, at once; always reached through the fixtures).
"""

import os
import signal
from pathlib import Path

from conftest import Redis, RedisError, wait_for
from redis_cluster import _fields

SENTINEL_BIN = os.environ.get("SENTINEL_BIN", "/usr/bin/redis-sentinel")
HOST = "127.0.0.1"
NAME = "mymaster"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
# SENTINEL DEBUG (7.0) after each start: a sentinel learns a replica's
# link and role from INFO every info-period (10 s by default) and the other
# sentinels from their hellos every publish-period (2 s): shorter, the
# setup is ready and agrees sooner after a failover.  A lost link is made
# again once a ping-period (1 s): as long as down-after, so that the
# promotion's CLIENT KILL TYPE normal, which cuts the sentinels' links to
# the promoted replica, had it flagged down at once and failed over
# again; shorter, and the sentinels ask each other sooner (ask-period).
# A TILT (the timer late by 2 s on the busy cores) stops a sentinel
# acting for tilt-period (30 s): shorter too.
DEBUG_PERIODS = {"info-period": 300, "publish-period": 300,
                 "ping-period": 200, "ask-period": 200,
                 "tilt-period": 2000, "min-link-reconnect-period": 2000}


def _pairs(flat):
    """A RESP array [k1, v1, k2, v2, ...] -> dict."""
    return dict(zip(flat[0::2], flat[1::2]))


class Sentinel(Redis):
    """A redis-sentinel on 127.0.0.1 monitoring NAME at (HOST, port of
    master): its config file is written once, at the first start(), and
    rewritten by Sentinel afterwards (a start() after stop() keeps what it
    learnt)."""

    def __init__(self, workdir, master_port, data_password=None,
                 password=None, tls=None):
        kw = {}
        if tls is not None:
            kw = dict(tls_cert=tls.server, tls_key=tls.server_key,
                      tls_ca=tls.ca, tls_auth_clients="no")
        super().__init__(workdir, password=password, **kw)
        self.master_port = master_port
        self.data_password = data_password
        self.conf = self.dir / "sentinel.conf"

    def _write_conf(self):
        lines = [
            "port %d" % self.port,
            "bind %s" % self.bind,
            "daemonize no",
            "dir %s" % self.dir,
            "logfile %s" % (self.dir / "redis.log"),
            "sentinel monitor %s %s %d %d" % (NAME, HOST, self.master_port,
                                               QUORUM),
            "sentinel down-after-milliseconds %s %d" % (NAME, DOWN_AFTER_MS),
            "sentinel failover-timeout %s %d" % (NAME, FAILOVER_TIMEOUT_MS),
            "sentinel parallel-syncs %s 1" % NAME,
        ]
        if self.data_password:
            lines.append("sentinel auth-pass %s %s" % (NAME, self.data_password))
        if self.password:
            lines += ["requirepass %s" % self.password,
                      "sentinel sentinel-pass %s" % self.password]
        if self.tls_port:
            lines += ["tls-port %d" % self.tls_port,
                      "tls-cert-file %s" % self.tls_cert,
                      "tls-key-file %s" % self.tls_key,
                      "tls-ca-cert-file %s" % self.tls_ca,
                      "tls-auth-clients %s" % self.tls_auth_clients,
                      "tls-replication yes"]
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self):
        if not self.conf.exists():
            self._write_conf()
        return [SENTINEL_BIN, str(self.conf)]

    def start(self, timeout=5.0):
        super().start(timeout)
        args = [x for kv in DEBUG_PERIODS.items() for x in kv]
        assert self.sentinel("DEBUG", *args) == "OK"
        return self

    def sentinel(self, *args, timeout=1.0):
        """SENTINEL <args> on this sentinel."""
        return self.cmd("SENTINEL", *args, timeout=timeout)

    def master_addr(self, timeout=1.0):
        """(host, port) that SENTINEL get-master-addr-by-name answers, None
        for nil."""
        got = self.sentinel("get-master-addr-by-name", NAME, timeout=timeout)
        return (got[0], int(got[1])) if got else None


class SentinelSetup:
    """A master, `replicas` replicas and `sentinels` sentinels, configured
    (not started: start())."""

    def __init__(self, workdir, replicas=1, sentinels=3, password=None,
                 sentinel_password=None, tls=None, data_cert=None):
        self.workdir = Path(workdir)
        self.password = password
        self.sentinel_password = sentinel_password
        self.tls = tls
        tls_kw, tls_args = {}, []
        if tls is not None:
            # data_cert: (certificate, key) of the data servers instead of
            # tls.server's (the sentinels keep tls.server)
            cert, key = data_cert or (tls.server, tls.server_key)
            tls_kw = dict(tls_cert=cert, tls_key=key,
                          tls_ca=tls.ca, tls_auth_clients="no")
            tls_args = ["--tls-replication", "yes"]
        common = tls_args + [
            # a replica's first sync is not held back 5 s for others
            "--repl-diskless-sync-delay", "0",
            # stop() does not wait for replicas to catch up
            "--shutdown-on-sigterm", "now"]
        if password:
            common += ["--masterauth", password]
        self.servers = [Redis(self.workdir, password=password, **tls_kw,
                              extra_args=list(common))
                        for _ in range(1 + replicas)]
        self._common = common
        first = self.servers[0]
        # the sentinels monitor (and the replicas follow) the ports that
        # the module is to reach: the TLS ones with tls
        for r in self.servers[1:]:
            r.extra_args += ["--replicaof", HOST, str(self.data_port(first))]
        self.sentinels = [Sentinel(self.workdir, self.data_port(first),
                                   data_password=password,
                                   password=sentinel_password, tls=tls)
                          for _ in range(sentinels)]

    # ------------------------------------------------------------------
    # addresses

    def data_port(self, server):
        """The port a data server is known by to the sentinels (its
        tls-port with TLS)."""
        return server.tls_port if self.tls is not None else server.port

    def sentinel_port(self, s):
        """The port the module is to reach a sentinel on."""
        return s.tls_port if self.tls is not None else s.port

    def sentinel_addresses(self):
        """"127.0.0.1:p1 127.0.0.1:p2 ..." for rate_limit_redis."""
        return " ".join("%s:%d" % (HOST, self.sentinel_port(s))
                        for s in self.sentinels)

    def server(self, node):
        """The data server given by a Redis, a port (plain or TLS) or
        (host, port)."""
        if isinstance(node, Redis):
            return node
        port = node[1] if isinstance(node, tuple) else int(node)
        for r in self.servers:
            if port in (r.port, r.tls_port):
                return r
        raise KeyError("no data server on port %d" % port)

    def address(self, server):
        """"127.0.0.1:port" of a data server, as the sentinels name it."""
        return "%s:%d" % (HOST, self.data_port(self.server(server)))

    # ------------------------------------------------------------------
    # life cycle

    def start(self, timeout=30.0):
        for r in self.servers:
            r.start()
        for s in self.sentinels:
            s.start()
        self.wait_ready(timeout)
        return self

    def stop(self):
        """Every process at once (SIGTERM, SIGKILL if it lingers)."""
        procs = [x for x in self.servers + self.sentinels
                 if x.proc is not None and x.proc.poll() is None]
        for x in procs:
            x.thaw()
            x.proc.terminate()
        for x in procs:
            x.stop()

    def running(self, x):
        return x.proc is not None and x.proc.poll() is None and not x.frozen

    def kill(self, x):
        """SIGKILL to a server or sentinel; waits only for it to be gone."""
        if not isinstance(x, Sentinel):
            x = self.server(x)
        if x.proc is not None and x.proc.poll() is None:
            x.thaw()
            x.proc.send_signal(signal.SIGKILL)
            x.proc.wait(5)
        x.frozen = False

    def switches(self):
        """How many +switch-master lines each sentinel has logged, as a
        list (one a failover it saw: a failover that went twice shows)."""
        out = []
        for s in self.sentinels:
            try:
                text = (s.dir / "redis.log").read_text(errors="replace")
            except OSError:
                text = ""
            out.append(text.count("+switch-master %s " % NAME))
        return out

    def set_down_after(self, sentinel, ms):
        """SENTINEL SET NAME down-after-milliseconds ms, when it differs."""
        info = _pairs(sentinel.sentinel("MASTER", NAME))
        if info.get("down-after-milliseconds") != str(ms):
            assert sentinel.sentinel("SET", NAME, "down-after-milliseconds",
                                     ms) == "OK"

    def live_sentinels(self):
        return [s for s in self.sentinels if self.running(s)]

    # ------------------------------------------------------------------
    # queries

    def master(self):
        """The master's Redis, as the first live sentinel says."""
        return self.server(self.live_sentinels()[0].master_addr())

    def replicas(self):
        """The running data servers but the master."""
        m = self.master()
        return [r for r in self.servers if r is not m and self.running(r)]

    def role(self, server, timeout=1.0):
        """ROLE's first element on a data server ("master" / "slave")."""
        return self.server(server).cmd("ROLE", timeout=timeout)[0]

    def describe(self):
        """Each sentinel's master, replicas and sentinels, for messages."""
        out = []
        for s in self.sentinels:
            if not self.running(s):
                out.append("--- sentinel %d: down" % s.port)
                continue
            try:
                text = "master %r\nreplicas %r\nsentinels %r" % (
                    s.master_addr(),
                    [(x.get("port"), x.get("flags"), x.get("master-link-status"))
                     for x in map(_pairs, s.sentinel("REPLICAS", NAME))],
                    [(x.get("port"), x.get("flags"))
                     for x in map(_pairs, s.sentinel("SENTINELS", NAME))])
            except (OSError, RedisError) as e:
                text = repr(e)
            out.append("--- sentinel %d:\n%s" % (s.port, text))
        for r in self.servers:
            try:
                text = repr(r.cmd("ROLE", timeout=0.5)) if self.running(r) else "down"
            except (OSError, RedisError) as e:
                text = repr(e)
            out.append("--- redis %d/%s: %s" % (r.port, r.tls_port, text))
        return "\n".join(out)

    def _in_sync(self, master):
        """Every running replica's link to master is up and it has applied
        all the master had written (its offset reaches the master's)."""
        repl = _fields(master.cmd("INFO", "replication", timeout=0.5))
        target = int(repl["master_repl_offset"])
        if repl.get("role") != "master":
            return False
        for r in self.servers:
            if r is master or not self.running(r):
                continue
            info = _fields(r.cmd("INFO", "replication", timeout=0.5))
            if (info.get("role") != "slave"
                    or info.get("master_port") != str(self.data_port(master))
                    or info.get("master_link_status") != "up"
                    or int(info.get("slave_repl_offset", -1)) < target):
                return False
        return True

    def ready(self):
        """True when every running sentinel names the same running master,
        whose ROLE says master; sees every running replica of it with
        master-link-status ok and no down flag, and every other running
        sentinel not down; and the replicas are in sync."""
        live = self.live_sentinels()
        if not live:
            return False
        try:
            addrs = {s.master_addr() for s in live}
            if len(addrs) != 1 or None in addrs:
                return False
            master = self.server(addrs.pop())
            if not self.running(master) or self.role(master) != "master":
                return False
            replica_ports = {self.data_port(r) for r in self.servers
                             if r is not master and self.running(r)}
            for s in live:
                seen = {}
                for x in map(_pairs, s.sentinel("REPLICAS", NAME)):
                    seen[int(x["port"])] = x
                for p in replica_ports:
                    x = seen.get(p)
                    if (x is None or x.get("master-link-status") != "ok"
                            or "s_down" in x.get("flags", "")
                            or "disconnected" in x.get("flags", "")):
                        return False
                others = {int(x["port"]): x.get("flags", "")
                          for x in map(_pairs, s.sentinel("SENTINELS", NAME))}
                # the other sentinels announce their TLS ports with TLS
                want = {(o.tls_port if self.tls is not None else o.port)
                        for o in live if o is not s}
                if not all(p in others and "s_down" not in others[p]
                           and "disconnected" not in others[p]
                           for p in want):
                    return False
                flags = _pairs(s.sentinel("MASTER", NAME)).get("flags", "")
                if flags != "master":
                    return False
            return self._in_sync(master)
        except (OSError, RedisError, KeyError, ValueError):
            return False

    def wait_ready(self, timeout=20.0):
        self._wait(self.ready, timeout, "a ready Sentinel setup")

    def _wait(self, predicate, timeout, what):
        try:
            return wait_for(predicate, timeout, interval=0.05, what=what)
        except TimeoutError as e:
            raise TimeoutError("%s\n%s" % (e, self.describe())) from None

    # ------------------------------------------------------------------
    # failovers

    def _promoted(self, old):
        """The data server every running sentinel names, when it is not
        old and ROLE on it says master; else None."""
        try:
            addrs = {s.master_addr() for s in self.live_sentinels()}
            if len(addrs) != 1 or None in addrs:
                return None
            new = self.server(addrs.pop())
            if new is old or self.role(new) != "master":
                return None
            return new
        except (OSError, RedisError, KeyError):
            return None

    def failover(self, timeout=15.0, sentinel=0, ready=True):
        """SENTINEL FAILOVER NAME on one sentinel, then waits until every
        running sentinel names the new master and ROLE on it says master
        (then, with ready, until the setup is ready again: the old master
        a replica of the new one, in sync).  Returns (old, new) Redis."""
        old = self.master()
        assert self.sentinels[sentinel].sentinel("FAILOVER", NAME) == "OK"
        new = self._wait(lambda: self._promoted(old), timeout,
                         "the failover away from %d" % old.port)
        if ready:
            self.wait_ready(timeout)
        return old, new

    def wait_promoted(self, old, timeout=20.0):
        """After the master old was killed or stopped: waits until every
        running sentinel names another master whose ROLE says master.
        Returns it."""
        return self._wait(lambda: self._promoted(old), timeout,
                          "the promotion of a replica of %d" % old.port)

    def restore(self, timeout=20.0):
        """Every sentinel and data server that is frozen thawed, that is
        down started again (a data server as a replica of the current
        master), then waits until the setup is ready (an old master that
        was frozen through a failover turned into a replica by the
        sentinels)."""
        for s in self.sentinels + self.servers:
            s.thaw()
        for s in self.sentinels:
            if not self.running(s):
                s.start()
        # a test may have changed it (SENTINEL SET)
        for s in self.sentinels:
            self.set_down_after(s, DOWN_AFTER_MS)
        master = self._wait(lambda: self._promoted(None), timeout,
                            "a master named by every sentinel")
        for r in self.servers:
            if r is master or self.running(r):
                continue
            args = [a for a in self._common]
            args += ["--replicaof", HOST, str(self.data_port(master))]
            r.extra_args = args
            r.start()
        self.wait_ready(timeout)
        return self
