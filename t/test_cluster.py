"""Redis Cluster: slot routing, MOVED and ASK, failover and slot migration,
with the shared limits checked across two nginx nodes."""

import threading
import time

from conftest import loc, run_threads, unique_key, wait_for

TIMEOUT = 0.2           # timeout=200ms below: cluster nodes on 2 busy cores
MARGIN = 0.4
METRICS = "        location = /metrics {\n            rate_limit_metrics;\n        }\n"


def cluster_nginx(nginx_factory, cluster, name, burst=5, seeds=1, on_failure="open"):
    seed = " ".join("127.0.0.1:%d" % m[1] for m in cluster.masters()[:seeds])
    return nginx_factory(name, listen_opts="reuseport", http=[
        "rate_limit_redis %s cluster timeout=200ms prefix=rlt;" % seed,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=%d on_failure=%s;"
        % (burst, on_failure),
        "rate_limit_zone $http_x_key zone=small:1m rate=1r/m burst=2;",
        "rate_limit_zone $http_x_key zone=big:1m rate=1r/m burst=5;",
    ], locations=[loc("/l/", "rate_limit zone=z"),
                  loc("/both/", "rate_limit zone=small", "rate_limit zone=big"),
                  loc("/big/", "rate_limit zone=big"), METRICS])


def key_on(cluster, master):
    """A fresh key whose bucket lives on master."""
    for _ in range(1000):
        key = unique_key("on")
        if cluster.node_for_key("rlt:z:" + key) == master:
            return key
    raise AssertionError("no key found for %r" % (master,))


def decided_by_redis(n, key=lambda: unique_key("probe")):
    """Several requests in a row decided by Redis, and every worker of n
    among those that decided them: each worker keeps its own map and
    connections, and until its map comes it fails every key at once.
    reuseport spreads the requests' connections over the workers."""
    keys = [key() for _ in range(8)]
    if not all(n.get("/l/x", key=k).rls == "PASSED" for k in keys):
        return False
    n.access_for(keys[-1], 1)
    deciding = {r["pid"] for r in n.access_records()
                if r["key"] in keys and r["rls"] == "PASSED"}
    return deciding >= set(n.workers())


def start_nodes(nginx_factory, cluster, count=2, **kw):
    nodes = [cluster_nginx(nginx_factory, cluster, "cl%d" % i, **kw).start()
             for i in range(count)]
    for n in nodes:
        wait_for(lambda: decided_by_redis(n), 5, interval=0.05,
                 what="the slot map and the masters' connections")
    return nodes


def test_keys_are_routed_to_their_masters(nginx_factory, redis_cluster):
    (n,) = start_nodes(nginx_factory, redis_cluster, count=1)
    keys = [unique_key("route%d" % i) for i in range(30)]
    for key in keys:
        assert n.statuses("/l/x", key, 6) == [200] * 5 + [429]
    # every bucket is on the master of its slot, and all masters got some
    owners = set()
    for key in keys:
        name = "rlt:z:" + key
        owner = redis_cluster.node_for_key(name)
        assert redis_cluster.cmd(owner, "EXISTS", name) == 1, (name, owner)
        owners.add(owner)
    assert len(owners) == 3, owners


def test_hash_tags_are_honoured(nginx_factory, redis_cluster):
    """Keys with a {tag} go where Redis puts them: the module and Redis agree
    on the slot of any key (else every request would be redirected)."""
    (n,) = start_nodes(nginx_factory, redis_cluster, count=1)
    for key in ["{user1}.a", "{user1}.b", "x{}y", "a{b}{c}", "{{x}}"]:
        assert n.statuses("/l/x", key, 6) == [200] * 5 + [429], key
        name = "rlt:z:" + key
        assert redis_cluster.cmd(redis_cluster.node_for_key(name), "EXISTS", name) == 1


def test_limits_are_shared_by_two_nodes(nginx_factory, redis_cluster):
    a, b = start_nodes(nginx_factory, redis_cluster)
    for _ in range(5):
        key = unique_key("shared")
        got = [x.get("/l/x", key=key).status for x in (a, b, a, b, a, b, a)]
        assert got == [200] * 5 + [429, 429], got


def test_rejected_request_takes_nothing_from_other_masters(nginx_factory, redis_cluster):
    """The limits of one request live on two masters: the tokens that one
    took for a request the other rejected are given back."""
    (n,) = start_nodes(nginx_factory, redis_cluster, count=1)
    for _ in range(3):
        key = unique_key("refund")
        slots = {redis_cluster.slot_of("rlt:small:" + key),
                 redis_cluster.slot_of("rlt:big:" + key)}
        assert len(slots) == 2
        assert [n.get("/both/x", key=key).status for _ in range(5)] == [200, 200, 429, 429, 429]
        time.sleep(0.1)         # the refunds go right after the rejections
        # big gave 2 tokens, not 5
        assert n.statuses("/big/x", key, 4) == [200, 200, 200, 429]


def traffic(nodes, seconds, path="/l/x", threads=4):
    """Requests on fresh keys from several threads for a while: (status, rls,
    elapsed) of each."""
    deadline = time.monotonic() + seconds

    def body(i):
        out = []
        while time.monotonic() < deadline:
            r = nodes[i % len(nodes)].get(path, key=unique_key("t"), timeout=5)
            out.append((r.status, r.rls, r.elapsed))
        return out
    res = run_threads(body, threads, timeout=seconds + 20)
    errors = [x for x in res if isinstance(x, BaseException)]
    assert not errors, errors[:3]
    return [x for part in res for x in part]


def under_load(nodes, fault, scenario):
    """Runs fault() while requests flow to nodes; returns its result and
    the (status, rls, elapsed) of every request, after checking the
    longest wait."""
    results = []
    done = threading.Event()

    def load():
        while not done.is_set():
            results.extend(traffic(nodes, 0.3))
    t = threading.Thread(target=load)
    t.start()
    try:
        value = fault()
    finally:
        done.set()
        t.join(30)
    worst = max(e for _, _, e in results)
    print("WORST_WAIT %s %.3f" % (scenario, worst))
    assert worst <= TIMEOUT + MARGIN, worst
    return value, results


def test_failover_keeps_the_buckets(nginx_factory, redis_cluster):
    a, b = start_nodes(nginx_factory, redis_cluster)
    key = unique_key("fo")
    name = "rlt:z:" + key
    assert [a.get("/l/x", key=key).status for _ in range(3)] == [200] * 3
    master = redis_cluster.node_for_key(name)
    redis_cluster.wait_replicated(master)
    new_master, results = under_load([a, b], lambda: redis_cluster.failover(master),
                                     "cluster_failover")
    assert new_master != master
    assert {(s, r) for s, r, _ in results} <= {(200, "PASSED"), (200, "FAILED_OPEN")}
    # both nodes follow the new master within 2 s, and the bucket kept its
    # 2 tokens through the failover
    for n in (a, b):
        wait_for(lambda: decided_by_redis(n, lambda: key_on(redis_cluster, new_master)), 2,
                 interval=0.05, what="routing to the new master")
    got = [x.get("/l/x", key=key).status for x in (b, a, b)]
    assert got == [200, 200, 429], got


def test_slot_migration_is_followed(nginx_factory, redis_cluster):
    a, b = start_nodes(nginx_factory, redis_cluster)
    key = unique_key("mig")
    name = "rlt:z:" + key
    slot = redis_cluster.slot_of(name)
    src = redis_cluster.node_for_slot(slot)
    dst = [m for m in redis_cluster.masters() if m != src][0]
    assert [a.get("/l/x", key=key).status for _ in range(2)] == [200, 200]
    # during the migration the key is still on the source: served there
    redis_cluster.begin_migration(slot, dst)
    assert b.get("/l/x", key=key).status == 200
    # moved to the target: the source answers ASK, the module follows it
    redis_cluster.move_keys(slot, dst)
    assert a.get("/l/x", key=key).rls == "PASSED"
    redis_cluster.finish_migration(slot, dst)
    # then MOVED, and the map is read again
    got = [x.get("/l/x", key=key) for x in (b, a, b)]
    assert [(r.status, r.rls) for r in got] == [(200, "PASSED"), (429, "REJECTED"),
                                                (429, "REJECTED")], got
    assert redis_cluster.cmd(dst, "EXISTS", name) == 1


def test_master_killed_then_replaced(nginx_factory, redis_cluster):
    a, b = start_nodes(nginx_factory, redis_cluster, on_failure="local")
    key = unique_key("kill")
    name = "rlt:z:" + key
    master = redis_cluster.node_for_key(name)
    redis_cluster.wait_replicated(master)

    def kill():
        promoted = redis_cluster.kill_master(master)
        time.sleep(0.5)
        return promoted
    promoted, results = under_load([a, b], kill, "cluster_master_killed")
    outcomes = {(s, r) for s, r, _ in results}
    assert outcomes <= {(200, "PASSED"), (200, "DEGRADED_LOCAL")}, outcomes
    assert redis_cluster.node_for_key(name) == promoted
    # keys of the promoted master's slots are enforced by Redis again
    t0 = time.monotonic()
    for n in (a, b):
        wait_for(lambda: decided_by_redis(n, lambda: key_on(redis_cluster, promoted)), 4,
                 interval=0.05, what="routing to the promoted replica")
    print("CLUSTER_PROMOTED_FOLLOWED_AFTER", round(time.monotonic() - t0, 3))
    k2 = key_on(redis_cluster, promoted)
    assert [x.get("/l/x", key=k2).rls for x in (a, b, a, b, a, b)] == \
        ["PASSED"] * 5 + ["REJECTED"]


def test_metrics_list_every_master(nginx_factory, redis_cluster):
    (n,) = start_nodes(nginx_factory, redis_cluster, count=1)
    text = n.get("/metrics").body.decode()
    for host, port in redis_cluster.masters():
        assert 'nginx_rate_limit_redis_up{address="%s:%d"} 1' % (host, port) in text, text


def test_config_errors(nginx_factory):
    cases = [
        ("rate_limit_redis 127.0.0.1:1 127.0.0.1:2;", "several addresses"),
        ("rate_limit_redis 127.0.0.1:1 cluster db=2;", '"db" cannot be used'),
        ("rate_limit_redis unix:/tmp/x.sock cluster;", "a cluster is reached over TCP"),
        ("rate_limit_redis cluster;", "has no address"),
    ]
    for line, message in cases:
        n = nginx_factory("clconf", http=[
            line, "rate_limit_zone $http_x_key zone=z:1m rate=1r/s;"],
            locations=[loc("/l/", "rate_limit zone=z")])
        rc, out = n.test_config()
        assert rc != 0 and message in out and "rate_limit_redis" in out, (line, out)
