"""A Redis Cluster on 127.0.0.1 for the integration tests.

Debian's redis-server 7.0: ``masters`` masters with ``replicas`` replicas
each, every node a ``conftest.Redis`` started with the cluster options, so
that it is registered for the clean-up at the end of the session like any
other server, and keeps ``stop()``/``start()`` (same port), ``freeze()``/
``thaw()``, ``cmd()``, ``keys()``.  Each node's cluster bus listens on a
free port of its own (``cluster-port``) rather than port + 10000, which
may be taken or above 65535.

``RedisCluster(workdir, tls=certs)`` (a ``tls_certs.Certs``) gives every
node a ``tls_port`` too, with ``--tls-cluster yes --tls-replication yes``:
the bus and the replication go over TLS, the cluster is created on the TLS
ports, and each node announces its TLS ports to TLS clients and its plain
ports to plain ones, so the harness below works unchanged on the plain
ports.

A node is named by its port, by ``(host, port)`` as returned here, or by its
``Redis`` object.  start, restart, failover, kill_master, finish_migration
and migrate_slot wait, bounded in time, until the cluster is stable again
(see ``stable``), and raise TimeoutError with every node's CLUSTER NODES
otherwise.  While a slot is open (between begin_migration and
finish_migration) the cluster is not stable.
"""

import os
import re
import signal
import subprocess
import time
from collections import namedtuple

from conftest import Redis, RedisError, free_port, wait_for

REDIS_CLI = os.environ.get("REDIS_CLI", "/usr/bin/redis-cli")
HOST = "127.0.0.1"
SLOTS = 16384

# one line of CLUSTER NODES; slots is a tuple of (first, last) ranges
ClusterNode = namedtuple(
    "ClusterNode", "id port role master_id slots flags importing migrating")

_OPEN_SLOT = re.compile(r"^\[(\d+)-([<>])-([0-9a-f]+)\]$")


def parse_nodes(text):
    """CLUSTER NODES -> {node id: ClusterNode}.  importing / migrating map
    a slot to the peer's id (only the node that has the slot open shows
    them)."""
    nodes = {}
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        # 127.0.0.1:7000@17000 (7.0 may append ",hostname")
        addr = f[1].split(",")[0].split("@")[0]
        flags = frozenset(f[2].split(","))
        slots, importing, migrating = [], {}, {}
        for tok in f[8:]:
            m = _OPEN_SLOT.match(tok)
            if m:
                side = importing if m.group(2) == "<" else migrating
                side[int(m.group(1))] = m.group(3)
            else:
                first, _, last = tok.partition("-")
                slots.append((int(first), int(last or first)))
        nodes[f[0]] = ClusterNode(
            id=f[0], port=int(addr.rsplit(":", 1)[1]),
            role="master" if "master" in flags else "slave",
            master_id=None if f[3] == "-" else f[3], slots=tuple(slots),
            flags=flags, importing=importing, migrating=migrating)
    return nodes


def _fields(text):
    """INFO-like "name:value" lines -> dict."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


class RedisCluster:
    """masters x (1 + replicas) nodes, configured (not started: start())."""

    def __init__(self, workdir, masters=3, replicas=1, node_timeout=1000,
                 tls=None):
        self.n_replicas = replicas
        self.nodes = []
        # tls: a tls_certs.Certs; every node gets a tls-port (its server
        # certificate, the CA, no client certificate asked), and the bus,
        # the replication and what the cluster announces to TLS clients go
        # over TLS; the plain ports stay for the harness (cmd(), topology)
        self.tls = tls
        tls_kw, tls_args = {}, []
        if tls is not None:
            tls_kw = dict(tls_cert=tls.server, tls_key=tls.server_key,
                          tls_ca=tls.ca, tls_auth_clients="no")
            tls_args = ["--tls-cluster", "yes", "--tls-replication", "yes"]
        for _ in range(masters * (1 + replicas)):
            self.nodes.append(Redis(workdir, **tls_kw, extra_args=tls_args + [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(free_port()),
                # a killed master is failed over within a few seconds
                "--cluster-node-timeout", str(node_timeout),
                # a replica takes over however long its master has been gone
                "--cluster-replica-validity-factor", "0",
                # replicas move only when a test moves them
                "--cluster-allow-replica-migration", "no",
                # a replica's first sync is not held back 5 s for others
                "--repl-diskless-sync-delay", "0",
                # stop() does not wait for replicas to catch up: the data
                # is thrown away
                "--shutdown-on-sigterm", "now"]))

    # ------------------------------------------------------------------
    # life cycle

    def start(self, timeout=30.0):
        """Starts every node, creates the cluster with redis-cli (the first
        `masters` nodes get the slots), then waits until it is stable."""
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            n.start()
        args = [REDIS_CLI, "--cluster", "create"]
        if self.tls is not None:
            # the nodes meet on the ports they announce: the TLS ones
            args[1:1] = ["--tls", "--cacert", self.tls.ca]
            args += ["%s:%d" % (HOST, n.tls_port) for n in self.nodes]
        else:
            args += ["%s:%d" % (HOST, n.port) for n in self.nodes]
        args += ["--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        p = subprocess.run(args, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=max(1.0, deadline - time.monotonic()))
        if p.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed (%d):\n%s"
                               % (p.returncode,
                                  p.stdout.decode(errors="replace")))
        self.wait_stable(max(1.0, deadline - time.monotonic()))
        return self

    def stop(self):
        """Stops every node (SIGTERM; SIGKILL if it lingers)."""
        running = [n for n in self.nodes
                   if n.proc is not None and n.proc.poll() is None]
        # all at once rather than each waiting for the one before
        for n in running:
            n.thaw()
            n.proc.terminate()
        for n in running:
            n.stop()

    def kill(self, node):
        """SIGKILL to one node; waits only for the process to be gone."""
        n = self.node(node)
        if n.proc is not None and n.proc.poll() is None:
            n.proc.send_signal(signal.SIGKILL)
            n.proc.wait(5)
        n.frozen = False

    def restart(self, node, timeout=15.0):
        """Starts a stopped or killed node again on its port (it keeps its
        id from nodes.conf: a replaced master comes back as a replica), then
        waits until the cluster is stable."""
        self.node(node).start()
        self.wait_stable(timeout)

    def kill_master(self, master, timeout=15.0):
        """SIGKILL to a master, then waits until its replica has been
        promoted (it owns the master's slots in every node's view) and the
        cluster is stable.  Returns the promoted replica (host, port)."""
        port = self.node(master).port
        replica = self.replica_of(port)
        slots = self._by_port()[port].slots
        self.kill(port)
        self._wait(lambda: self._by_port()[replica[1]].slots == slots,
                   timeout, "the promotion of %s:%d" % replica)
        return replica

    def failover(self, master, timeout=10.0):
        """CLUSTER FAILOVER on the master's replica, then waits until the
        roles are swapped in every node's view, the old master replicates
        from the new one and the cluster is stable.  Returns the new master
        (host, port)."""
        port = self.node(master).port
        replica = self.replica_of(port)
        self.cmd(replica, "CLUSTER", "FAILOVER")

        def swapped():
            view = self._by_port()
            return (view[replica[1]].role == "master"
                    and view[port].master_id == view[replica[1]].id)
        self._wait(swapped, timeout, "failover of %s:%d" % (HOST, port))
        return replica

    def wait_replicated(self, master, timeout=5.0):
        """Waits until every running replica of master (a frozen one too)
        has applied all that the master had written when called (its
        slave_repl_offset reaches the master's master_repl_offset).  WAIT
        cannot do this from here: it counts the writes of its own
        connection, and cmd() opens a new one each time."""
        port = self.node(master).port
        target = int(_fields(self.cmd(port, "INFO", "replication"))
                     ["master_repl_offset"])
        mid = self._ids()[port]
        running = {n.port for n in self.nodes
                   if n.proc is not None and n.proc.poll() is None}
        replicas = [x.port for x in self.topology().values()
                    if x.master_id == mid and x.port in running]

        def offset(replica):
            try:
                repl = _fields(self.cmd(replica, "INFO", "replication",
                                        timeout=0.5))
            except OSError:         # frozen: asked again until the deadline
                return -1
            return int(repl.get("slave_repl_offset", -1))
        wait_for(lambda: all(offset(r) >= target for r in replicas), timeout,
                 what="replicas of %d at offset %d" % (port, target))

    # ------------------------------------------------------------------
    # slot migration: begin_migration, move_keys, finish_migration in turn
    # (migrate_slot does all three); between them the source answers ASK
    # for the keys already moved

    def begin_migration(self, slot, to_master):
        """CLUSTER SETSLOT IMPORTING on the destination, MIGRATING on the
        source.  Returns the source (host, port)."""
        src = self.node_for_slot(slot)
        dst = self.node(to_master).port
        assert src[1] != dst, "slot %d is already on %d" % (slot, dst)
        ids = self._ids()
        self.cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src[1]])
        self.cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst])
        return src

    def move_keys(self, slot, to_master, keys=None, timeout=10.0):
        """MIGRATEs keys (all the keys of the slot still on the source
        when None) from the slot's owner to to_master.  Returns how many
        were moved."""
        src = self.node_for_slot(slot)
        dst = self.node(to_master).port
        deadline = time.monotonic() + timeout
        moved = 0
        while True:
            batch = (list(keys) if keys is not None else
                     self.cmd(src, "CLUSTER", "GETKEYSINSLOT", slot, 100))
            if batch:
                reply = self.cmd(src, "MIGRATE", HOST, dst, "", 0, 2000,
                                 "KEYS", *batch, timeout=5.0)
                if reply == "OK":
                    moved += len(batch)
            if keys is not None or not batch:
                return moved
            if time.monotonic() >= deadline:
                raise TimeoutError("keys of slot %d still on %d"
                                   % (slot, src[1]))

    def finish_migration(self, slot, to_master, timeout=10.0):
        """Moves the keys left, then CLUSTER SETSLOT NODE on the destination,
        the source and the other masters; waits until every node sees the
        new owner and the cluster is stable."""
        src = self.node_for_slot(slot)
        dst = self.node(to_master).port
        self.move_keys(slot, dst, timeout=timeout)
        dst_id = self._ids()[dst]
        others = [m for m in self.masters() if m[1] not in (src[1], dst)]
        for m in [(HOST, dst), src] + others:
            self.cmd(m, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self._wait(lambda: self.node_for_slot(slot) == (HOST, dst), timeout,
                   "slot %d on %d" % (slot, dst))

    def migrate_slot(self, slot, to_master, timeout=10.0):
        """The whole migration of one slot with its keys."""
        self.begin_migration(slot, to_master)
        self.finish_migration(slot, to_master, timeout)

    # ------------------------------------------------------------------
    # queries

    def node(self, node):
        """The Redis of a node given by port, (host, port) or Redis."""
        if isinstance(node, Redis):
            return node
        port = node[1] if isinstance(node, tuple) else int(node)
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError("no cluster node on port %d" % port)

    def cmd(self, node, *args, timeout=2.0):
        """One command to one node (no redirection followed: MOVED and
        ASK raise conftest.RedisError)."""
        return self.node(node).cmd(*args, timeout=timeout)

    def live(self):
        """The nodes running and not frozen."""
        return [n for n in self.nodes
                if n.proc is not None and n.proc.poll() is None
                and not n.frozen]

    def topology(self, node=None):
        """{id: ClusterNode} from CLUSTER NODES of node (default: the first
        live node)."""
        n = self.node(node) if node is not None else self.live()[0]
        return parse_nodes(n.cmd("CLUSTER", "NODES"))

    def masters(self):
        """[(host, port)] of the masters owning slots, by first slot."""
        owners = [x for x in self.topology().values()
                  if x.slots and "fail" not in x.flags]
        return [(HOST, x.port) for x in sorted(owners, key=lambda x: x.slots)]

    def replicas(self):
        """[(host, port)] of the replicas not flagged fail, by port."""
        return sorted((HOST, x.port) for x in self.topology().values()
                      if x.role == "slave" and "fail" not in x.flags)

    def replica_of(self, master):
        """(host, port) of a replica of master not flagged fail (the lowest
        port when there are several)."""
        view = self.topology()
        mid = self._ids(view)[self.node(master).port]
        for x in sorted(view.values(), key=lambda x: x.port):
            if x.master_id == mid and "fail" not in x.flags:
                return (HOST, x.port)
        raise LookupError("%s has no live replica" % (master,))

    def slot_of(self, key):
        """CLUSTER KEYSLOT key."""
        return self.cmd(self.live()[0], "CLUSTER", "KEYSLOT", key)

    def node_for_slot(self, slot):
        """(host, port) of the master owning slot."""
        for x in self.topology().values():
            if "fail" in x.flags:
                continue
            if any(first <= slot <= last for first, last in x.slots):
                return (HOST, x.port)
        raise LookupError("slot %d is not covered" % slot)

    def node_for_key(self, key):
        return self.node_for_slot(self.slot_of(key))

    def keys(self, pattern="*"):
        """The keys matching pattern on every live master, sorted."""
        found = []
        for m in self.masters():
            found += self.node(m).keys(pattern)
        return sorted(found)

    def describe(self):
        """CLUSTER NODES of every live node, for error messages."""
        out = []
        for n in self.live():
            try:
                text = n.cmd("CLUSTER", "NODES", timeout=1.0)
            except (OSError, RedisError) as e:
                text = repr(e)
            out.append("--- %d:\n%s" % (n.port, text))
        return "\n".join(out)

    # ------------------------------------------------------------------
    # waiting

    def stable(self):
        """True when every live node reports cluster_state:ok with all
        slots served, all have the same view (nodes, roles, slots, no open
        slot), the nodes not live are flagged fail and the others not even
        suspected (fail?), and every live replica's link to its master is
        up."""
        live = self.live()
        if not live:
            return False
        live_ports = {n.port for n in live}
        views = []
        for n in live:
            try:
                info = _fields(n.cmd("CLUSTER", "INFO", timeout=1.0))
                view = parse_nodes(n.cmd("CLUSTER", "NODES", timeout=1.0))
            except (OSError, RedisError):
                return False
            if (info.get("cluster_state") != "ok"
                    or info.get("cluster_slots_ok") != str(SLOTS)
                    or len(view) != len(self.nodes)):
                return False
            for x in view.values():
                if (x.flags & {"fail?", "handshake", "noaddr"}
                        or x.importing or x.migrating
                        or ("fail" in x.flags) == (x.port in live_ports)):
                    return False
            views.append({(x.id, x.port, x.role, x.master_id, x.slots)
                          for x in view.values()})
        if any(v != views[0] for v in views[1:]):
            return False
        for x in views[0]:
            if x[2] == "slave" and x[1] in live_ports:
                try:
                    repl = _fields(self.cmd(x[1], "INFO", "replication",
                                            timeout=1.0))
                except (OSError, RedisError):
                    return False
                if repl.get("master_link_status") != "up":
                    return False
        return True

    def wait_stable(self, timeout=15.0):
        """Waits until stable() holds."""
        self._wait(lambda: True, timeout, "a stable cluster")

    def _wait(self, predicate, timeout, what):
        """Waits until the cluster is stable and predicate() holds."""
        try:
            wait_for(lambda: self.stable() and predicate(), timeout,
                     interval=0.05, what=what)
        except TimeoutError as e:
            raise TimeoutError("%s\n%s" % (e, self.describe())) from None

    def _by_port(self, view=None):
        view = view if view is not None else self.topology()
        return {x.port: x for x in view.values()}

    def _ids(self, view=None):
        return {port: x.id for port, x in self._by_port(view).items()}
