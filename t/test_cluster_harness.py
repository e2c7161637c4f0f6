"""Self-test of the Redis Cluster harness (t/redis_cluster.py).

Needs neither nginx nor the module, so it runs even when the module has not
been built."""

import pytest

from conftest import RedisError, unique_key
from redis_cluster import HOST, SLOTS


def _moved(cluster, node, key):
    """The MOVED / ASK error node answers to GET key."""
    with pytest.raises(RedisError) as e:
        cluster.cmd(node, "GET", key)
    return str(e.value)


def _stored(cluster, key, value="v"):
    """SETs key on its master and waits until its replica has it."""
    master = cluster.node_for_key(key)
    assert cluster.cmd(master, "SET", key, value) == "OK"
    cluster.wait_replicated(master)
    return master


def test_create(redis_cluster):
    c = redis_cluster
    masters, replicas = c.masters(), c.replicas()
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(c.replica_of(m) for m in masters) == replicas
    ranges = sorted(r for x in c.topology().values() for r in x.slots)
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:]))
    for n in c.nodes:
        info = c.cmd(n, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info and "cluster_known_nodes:6" in info
    assert len({c.cmd(n, "CLUSTER", "MYID") for n in c.nodes}) == 6


def test_slot_owner(redis_cluster):
    c = redis_cluster
    assert c.slot_of("123456789") == 12739
    assert c.slot_of("foo") == 12182
    assert (c.slot_of("{user1000}.following")
            == c.slot_of("{user1000}.followers"))
    for m in c.masters():
        first, last = c.topology(m)[c.cmd(m, "CLUSTER", "MYID")].slots[0]
        assert c.node_for_slot(first) == m and c.node_for_slot(last) == m
    key = unique_key("owner")
    owner = _stored(c, key)
    slot = c.slot_of(key)
    assert c.cmd(owner, "GET", key) == "v"
    moved = "MOVED %d %s:%d" % (slot, HOST, owner[1])
    for m in c.masters():
        if m != owner:
            assert _moved(c, m, key) == moved
    assert _moved(c, c.replica_of(owner), key) == moved
    assert c.keys() == [key]


def test_failover(redis_cluster):
    c = redis_cluster
    key = unique_key("failover")
    old = _stored(c, key)
    replica = c.replica_of(old)
    assert c.failover(old) == replica
    assert c.node_for_key(key) == replica
    assert old not in c.masters() and replica in c.masters()
    assert c.replica_of(replica) == old
    assert c.cmd(old, "ROLE")[0] == "slave"
    assert c.cmd(replica, "GET", key) == "v"
    assert _moved(c, old, key) == "MOVED %d %s:%d" % (
        c.slot_of(key), HOST, replica[1])


def test_migrate_slot(redis_cluster):
    c = redis_cluster
    tag = unique_key("migrate")
    keys = ["{%s}%d" % (tag, i) for i in range(3)]
    for k in keys:
        _stored(c, k, k)
    slot = c.slot_of(keys[0])
    src = c.node_for_slot(slot)
    dst = next(m for m in c.masters() if m != src)

    assert c.begin_migration(slot, dst) == src
    assert c.move_keys(slot, dst, keys[:1]) == 1
    # mid-migration: the source still serves the keys it has and sends
    # the others to the destination with ASK
    assert _moved(c, src, keys[0]) == "ASK %d %s:%d" % (slot, HOST, dst[1])
    assert c.cmd(src, "GET", keys[1]) == keys[1]
    c.finish_migration(slot, dst)
    assert c.node_for_slot(slot) == dst
    assert sorted(c.node(dst).keys("{%s}*" % tag)) == keys
    assert c.node(src).keys("{%s}*" % tag) == []
    assert _moved(c, src, keys[2]) == "MOVED %d %s:%d" % (slot, HOST, dst[1])

    c.migrate_slot(slot, src)
    assert c.node_for_slot(slot) == src
    assert [c.cmd(src, "GET", k) for k in keys] == keys
    assert c.keys("{%s}*" % tag) == keys


def test_kill_master(redis_cluster):
    c = redis_cluster
    key = unique_key("kill")
    old = c.node_for_key(key)
    replica = c.replica_of(old)
    # shorter than the node timeout: the frozen replica is not failed
    with c.node(replica).frozen_for():
        assert c.cmd(old, "SET", key, "v") == "OK"
        with pytest.raises(TimeoutError):
            c.wait_replicated(old, timeout=0.2)
    c.wait_replicated(old)
    assert c.kill_master(old) == replica
    assert c.node_for_key(key) == replica
    assert c.cmd(replica, "GET", key) == "v"
    assert len(c.masters()) == 3 and old not in c.masters()
    # back on its port, the old master rejoins as the new one's replica
    c.restart(old)
    assert c.replica_of(replica) == old
    assert c.cmd(old, "ROLE")[0] == "slave"
