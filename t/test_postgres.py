"""Per-client limits synced from PostgreSQL (rate_limit_postgres).

Every test takes a database of its own (postgres.new_db()), so rows never
leak from one test to another; nodes are nginx instances of their own
(own prefix, own shared memory) on the same database.  Whether a limit is
in force is read from X-RateLimit-Limit, which shows the client's burst:
a probe costs one token of a generous default, and says which limit applied.
"""

import random
import subprocess
import time

import pytest

from conftest import loc, unique_key, wait_for

ZONE = "rate_limit_zone $http_x_key zone=api:8m rate=100r/s burst=100;"
DEFAULT_BURST = "100"
FULL_SYNC = r"rate_limit_postgres: full sync of (\d+) rows in (\d+) ms"
CANNOT_SYNC = r"rate_limit_postgres: cannot sync \("
CONNECTED_AGAIN = r"rate_limit_postgres: connected again"


def pg_conf(pg, db, interval="10s", zones=(ZONE,), policy=None, extra=()):
    http = ['rate_limit_postgres "%s" interval=%s;' % (pg.conninfo(db), interval)]
    if policy:
        http.append("rate_limit_policy_file %s;" % policy)
    http += list(zones) + list(extra)
    return dict(http=http, locations=[loc("/api/", "rate_limit zone=api")])


def full_syncs(n, since=0):
    return n.error_lines(FULL_SYNC, since)


def start_synced(n, timeout=8.0):
    """Starts n and waits for its first full sync."""
    mark = n.log_mark()
    n.start()
    wait_for(lambda: full_syncs(n, mark), timeout, what="first full sync of %s" % n.prefix)
    return n


def limit(n, key, path="/api/x"):
    return n.get(path, key=key).h("X-RateLimit-Limit")


def wait_limit(nodes, key, want, timeout, path="/api/x"):
    """Polls every node until each has shown X-RateLimit-Limit == want;
    returns the seconds it took (fails after timeout)."""
    t0 = time.monotonic()
    seen = {}

    def all_seen():
        for n in nodes:
            if n not in seen and limit(n, key, path) == want:
                seen[n] = time.monotonic() - t0
        return len(seen) == len(nodes)
    try:
        wait_for(all_seen, timeout, interval=0.02,
                 what="X-RateLimit-Limit %s for %r" % (want, key))
    except TimeoutError:
        raise AssertionError("key %r: X-RateLimit-Limit %r after %.1fs, want %s (seen on %d "
                             "of %d nodes)" % (key, [limit(n, key, path) for n in nodes],
                                               timeout, want, len(seen), len(nodes)))
    return time.monotonic() - t0


def insert(pg, db, key, rate, burst="NULL", zone="api"):
    pg.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
            "VALUES (%s, %s, %s, %s);" % (q(zone), q(key), q(rate), burst), db=db)


def q(text):
    return "'" + text.replace("'", "''") + "'"


@pytest.fixture
def two_nodes(nginx_factory, postgres):
    db = postgres.new_db()

    def make(**kw):
        nodes = [nginx_factory("pg%d" % i, **pg_conf(postgres, db, **kw)) for i in (1, 2)]
        for n in nodes:
            start_synced(n)
        return nodes
    make.db = db
    return make


def test_insert_reaches_two_nodes_within_1s(two_nodes, postgres):
    a, b = two_nodes()
    key = unique_key()
    assert limit(a, key) == DEFAULT_BURST and limit(b, key) == DEFAULT_BURST
    insert(postgres, two_nodes.db, key, "1r/m", 2)
    took = wait_limit([a, b], key, "2", timeout=1.0)
    # the row is enforced, not only shown: one token left at most
    rs = [a.get("/api/x", key=key) for _ in range(3)]
    assert rs[-1].status == 429 and rs[-1].h("Retry-After") is not None, rs
    assert rs[-1].h("RateLimit-Policy") == '"api";q=2;w=120'
    print("insert reached both nodes in %.3fs" % took)


def test_update_and_delete_reach_both_nodes(two_nodes, postgres):
    a, b = two_nodes()
    db = two_nodes.db
    key = unique_key()
    insert(postgres, db, key, "10r/s", 7)
    wait_limit([a, b], key, "7", timeout=1.0)
    postgres.psql("UPDATE rate_limit_buckets SET burst = 9 WHERE zone = 'api' AND key = %s;"
                  % q(key), db=db)
    wait_limit([a, b], key, "9", timeout=1.0)
    # burst NULL is the count of the rate
    postgres.psql("UPDATE rate_limit_buckets SET rate = '33r/m', burst = NULL "
                  "WHERE zone = 'api' AND key = %s;" % q(key), db=db)
    wait_limit([a, b], key, "33", timeout=1.0)
    postgres.psql("DELETE FROM rate_limit_buckets WHERE zone = 'api' AND key = %s;" % q(key),
                  db=db)
    wait_limit([a, b], key, DEFAULT_BURST, timeout=1.0)
    # deleted and created again: created wins
    postgres.psql("BEGIN; INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "VALUES ('api', %s, '1r/s', 4); COMMIT;" % q(key), db=db)
    wait_limit([a, b], key, "4", timeout=1.0)


def test_interval_sync_without_notify(two_nodes, postgres):
    """A row written with triggers off sends no NOTIFY: the periodic
    incremental sync (interval=1s) still picks it up."""
    a, b = two_nodes(interval="1s")
    key = unique_key()
    postgres.psql("SET session_replication_role = replica; "
                  "INSERT INTO rate_limit_buckets (zone, key, rate, burst, updated_at) "
                  "VALUES ('api', %s, '1r/m', 3, clock_timestamp());" % q(key),
                  db=two_nodes.db)
    took = wait_limit([a, b], key, "3", timeout=2.0)
    print("interval sync took %.3fs" % took)


def test_blocked_client(two_nodes, postgres):
    a, b = two_nodes()
    k0, k1 = unique_key("rate0"), unique_key("burst0")
    insert(postgres, two_nodes.db, k0, "0r/s")
    insert(postgres, two_nodes.db, k1, "10r/s", 0)
    for key in (k0, k1):
        wait_limit([a, b], key, "0", timeout=1.0)
        for n in (a, b):
            for _ in range(3):
                r = n.get("/api/x", key=key)
                assert r.status == 429, r
                assert r.h("Retry-After") == "60", r
                assert r.h("RateLimit-Policy") == '"api";q=0;w=1', r
                assert r.h("X-RateLimit-Limit") == "0", r
                assert r.rls == "REJECTED"


def test_precedence_postgres_yaml_default(nginx_factory, postgres):
    db = postgres.new_db()
    k_both, k_yaml, k_none = unique_key("both"), unique_key("yaml"), unique_key("none")
    insert(postgres, db, k_both, "1r/m", 3)
    n = nginx_factory("prec")
    policy = n.prefix / "limits.yaml"
    policy.write_text("zones:\n  api:\n    clients:\n"
                      "      %s: { rate: 5r/m, burst: 7 }\n"
                      "      %s: { rate: 1r/s, burst: 11 }\n" % (k_both, k_yaml))
    n.configure(**pg_conf(postgres, db, policy=policy))
    start_synced(n)
    assert limit(n, k_both) == "3"            # PostgreSQL wins over YAML
    assert limit(n, k_yaml) == "11"           # YAML over the default
    assert limit(n, k_none) == DEFAULT_BURST  # the zone's default
    postgres.psql("DELETE FROM rate_limit_buckets WHERE key = %s;" % q(k_both), db=db)
    wait_limit([n], k_both, "7", timeout=1.0)  # back to YAML, not to the default
    insert(postgres, db, k_yaml, "1r/m", 2)
    wait_limit([n], k_yaml, "2", timeout=1.0)


def test_precedence_with_redis_backend(nginx_factory, postgres, redis):
    """Per-client limits apply to Redis buckets too (count shared by nodes)."""
    db = postgres.new_db()
    key = unique_key()
    insert(postgres, db, key, "1r/m", 3)
    zones = ["rate_limit_redis 127.0.0.1:%d timeout=200ms prefix=rlpg;" % redis.port,
             "rate_limit_zone $http_x_key zone=api:8m rate=100r/s burst=100 backend=redis;"]
    a, b = [start_synced(nginx_factory("pgr%d" % i, **pg_conf(postgres, db, zones=zones)))
            for i in (1, 2)]
    got = [a.get("/api/x", key=key).status, b.get("/api/x", key=key).status,
           a.get("/api/x", key=key).status, b.get("/api/x", key=key).status]
    assert got == [200, 200, 200, 429]


def test_postgres_down_limits_keep_applying(two_nodes, postgres):
    a, b = two_nodes()
    db = two_nodes.db
    key = unique_key()
    insert(postgres, db, key, "1r/m", 5)
    wait_limit([a, b], key, "5", timeout=1.0)
    marks = {n: n.log_mark() for n in (a, b)}

    postgres.stop()
    try:
        t_end = time.monotonic() + 1.5
        seen = {a: [], b: []}
        slow = []
        for _ in range(400):
            if time.monotonic() > t_end:
                break
            time.sleep(0.005)
            for n in (a, b):
                r = n.get("/api/x", key=key)
                seen[n].append(r.status)
                assert r.h("X-RateLimit-Limit") == "5", r
                if r.elapsed >= 0.05:
                    slow.append(r.elapsed)
        assert not slow, "requests slower than 50 ms while PostgreSQL is down: %r" % slow
        for n in (a, b):
            # the bucket of 5 was partly spent by the probes above: no more than 5 pass
            assert seen[n].count(200) <= 5 and seen[n][-1] == 429, seen[n]
        for n in (a, b):
            wait_for(lambda: n.error_lines(CANNOT_SYNC, marks[n]), 3.0,
                     what="'cannot sync' in %s" % n.prefix)
    finally:
        postgres.start()
    for n in (a, b):
        wait_for(lambda: n.error_lines(CONNECTED_AGAIN, marks[n]), 15.0,
                 what="'connected again' in %s" % n.prefix)
    for n in (a, b):
        lines = n.error_lines(CANNOT_SYNC, marks[n])
        assert len(lines) == 1, lines
        assert len(n.error_lines(CONNECTED_AGAIN, marks[n])) == 1
    key2 = unique_key()
    insert(postgres, db, key2, "1r/m", 6)
    wait_limit([a, b], key2, "6", timeout=1.0)
    assert limit(a, key) == "5"


def test_module_creates_the_table(nginx_factory, postgres):
    """An empty database: both nodes start at once and create the schema
    (the advisory lock keeps them from racing); rows then sync."""
    db = postgres.new_db(schema=False)
    assert postgres.psql("SELECT to_regclass('rate_limit_buckets') IS NULL;", db=db) == "t"
    nodes = [nginx_factory("mk%d" % i, **pg_conf(postgres, db)) for i in (1, 2)]
    for n in nodes:
        n.start()
    for n in nodes:
        wait_for(lambda: full_syncs(n), 8.0, what="full sync in %s" % n.prefix)
        assert "full sync of 0 rows" in full_syncs(n)[0]
        assert not n.error_lines(r"rate_limit_postgres: (query failed|cannot sync)")
    tables = postgres.psql("SELECT string_agg(c, ',' ORDER BY c) FROM (VALUES "
                           "(to_regclass('rate_limit_buckets')::text), "
                           "(to_regclass('rate_limit_bucket_deletions')::text)) AS t(c);",
                           db=db)
    assert tables == "rate_limit_bucket_deletions,rate_limit_buckets"
    key = unique_key()
    insert(postgres, db, key, "1r/m", 4)
    wait_limit(nodes, key, "4", timeout=1.0)
    # the trigger stamps updated_at and logs deletions
    postgres.psql("DELETE FROM rate_limit_buckets WHERE key = %s;" % q(key), db=db)
    assert postgres.psql("SELECT count(*) FROM rate_limit_bucket_deletions WHERE key = %s;"
                         % q(key), db=db) == "1"
    wait_limit(nodes, key, DEFAULT_BURST, timeout=1.0)


def test_reload_keeps_synced_rows(nginx_factory, postgres):
    db = postgres.new_db()
    key = unique_key()
    insert(postgres, db, key, "1r/m", 4)
    n = start_synced(nginx_factory("rl", **pg_conf(postgres, db)))
    assert limit(n, key) == "4"
    mark = n.log_mark()
    n.reload()
    # at once, before the new workers had any chance to sync
    assert limit(n, key) == "4"
    wait_for(lambda: n.error_lines(r"this worker syncs", mark), 5.0,
             what="a new worker taking the sync lease")
    key2 = unique_key()
    insert(postgres, db, key2, "1r/m", 8)
    wait_limit([n], key2, "8", timeout=1.0)
    assert limit(n, key) == "4"
    assert full_syncs(n, mark) == [], "a reload re-read the whole table"


def test_reload_adding_a_zone_syncs_its_rows(nginx_factory, postgres):
    db = postgres.new_db()
    key = unique_key()
    insert(postgres, db, key, "1r/m", 6, zone="api2")
    n = start_synced(nginx_factory("rz", **pg_conf(postgres, db)))
    conf = pg_conf(postgres, db, zones=(ZONE, ZONE.replace("api:", "api2:")))
    conf["locations"].append(loc("/api2/", "rate_limit zone=api2"))
    n.configure(**conf)
    n.reload()
    wait_limit([n], key, "6", timeout=4.0, path="/api2/x")
    assert limit(n, key) == DEFAULT_BURST


def test_node_started_while_postgres_is_down(nginx_factory, postgres):
    db = postgres.new_db()
    k_pg, k_yaml = unique_key("pg"), unique_key("yaml")
    insert(postgres, db, k_pg, "1r/m", 3)
    insert(postgres, db, k_yaml, "1r/m", 4)
    n = nginx_factory("down")
    policy = n.prefix / "limits.yaml"
    policy.write_text("zones:\n  api:\n    clients:\n      %s: { rate: 1r/s, burst: 9 }\n"
                      % k_yaml)
    n.configure(**pg_conf(postgres, db, policy=policy))
    postgres.stop()
    try:
        n.start()
        wait_for(lambda: n.error_lines(CANNOT_SYNC), 3.0, what="'cannot sync'")
        assert limit(n, k_pg) == DEFAULT_BURST
        assert limit(n, k_yaml) == "9"
        r = n.get("/api/x", key=unique_key())
        assert r.status == 200 and r.elapsed < 0.05, r
        time.sleep(0.5)
    finally:
        postgres.start()
    wait_limit([n], k_pg, "3", timeout=12.0)
    assert limit(n, k_yaml) == "4"
    assert len(n.error_lines(CANNOT_SYNC)) == 1
    assert len(n.error_lines(CONNECTED_AGAIN)) == 1
    assert "full sync of 2 rows" in full_syncs(n)[-1]


def test_bulk_full_sync(nginx_factory, postgres):
    db = postgres.new_db()
    rows = 100000
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "SELECT 'api', 'bulk-' || g, '10r/s', g %% 1000 + 1 "
                  "FROM generate_series(1, %d) AS g;" % rows, db=db, timeout=120)
    zones = ["rate_limit_zone $http_x_key zone=api:64m rate=100r/s burst=100;"]
    n = nginx_factory("bulk", **pg_conf(postgres, db, zones=zones))
    t0 = time.monotonic()
    n.start()
    line = wait_for(lambda: full_syncs(n), 30.0, what="full sync")[0]
    took = time.monotonic() - t0
    assert "full sync of %d rows" % rows in line, line
    print("\n%s (%.2fs from start)" % (line.split("rate_limit_postgres: ")[-1], took))
    for g in random.Random(7).sample(range(1, rows + 1), 20) + [1, rows]:
        assert limit(n, "bulk-%d" % g) == str(g % 1000 + 1), g
    assert limit(n, "bulk-%d" % (rows + 1)) == DEFAULT_BURST
    assert not n.error_lines(r"zone .* is full|\[alert\]")
    # every row changed at once, then every row deleted: the incremental sync
    sample = random.Random(8).sample(range(1, rows + 1), 10)
    postgres.psql("UPDATE rate_limit_buckets SET burst = 7;", db=db, timeout=120)
    for g in sample:
        wait_limit([n], "bulk-%d" % g, "7", timeout=5.0)
    # (a thousand rows: see test_bulk_delete_is_not_quadratic)
    postgres.psql("DELETE FROM rate_limit_buckets WHERE key IN (%s);"
                  % ", ".join("'bulk-%d'" % g for g in sample + list(range(1, 991))),
                  db=db, timeout=60)
    for g in sample:
        wait_limit([n], "bulk-%d" % g, DEFAULT_BURST, timeout=5.0)
    assert limit(n, "bulk-%d" % rows) in ("7", DEFAULT_BURST)
    assert len(full_syncs(n)) == 1


def test_bulk_delete_is_not_quadratic(postgres):
    db = postgres.new_db()
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate) "
                  "SELECT 'api', 'del-' || g, '1r/s' FROM generate_series(1, 20000) AS g;",
                  db=db)
    t0 = time.monotonic()
    postgres.psql("SET statement_timeout = '5s'; DELETE FROM rate_limit_buckets;", db=db,
                  timeout=30)
    assert time.monotonic() - t0 < 5


def test_long_and_odd_keys(two_nodes, postgres):
    """Keys over 256 bytes are stored hashed, as the request's key is."""
    a, b = two_nodes()
    long_key = "L" * 300 + unique_key()
    odd_key = "sp ace/" + unique_key() + "/\u00e9t\u00e9"
    insert(postgres, two_nodes.db, long_key, "1r/m", 5)
    insert(postgres, two_nodes.db, "#" + long_key[:20], "1r/m", 6)
    wait_limit([a, b], long_key, "5", timeout=1.0)
    wait_limit([a, b], "#" + long_key[:20], "6", timeout=1.0)
    assert limit(a, long_key[:-1]) == DEFAULT_BURST
    # a header value carries the UTF-8 bytes as they are
    insert(postgres, two_nodes.db, odd_key, "1r/m", 7)
    raw = odd_key.encode("utf-8").decode("latin-1")   # http.client sends latin-1
    wait_for(lambda: a.get("/api/x", headers={"X-Key": raw}).h("X-RateLimit-Limit") == "7",
             1.0, what="UTF-8 key synced")


def test_conninfo_from_environment(nginx_factory, postgres):
    db = postgres.new_db()
    key = unique_key()
    insert(postgres, db, key, "1r/m", 3)
    n = nginx_factory("env")
    n.env["RL_PG_CONN"] = postgres.conninfo(db)
    n.configure(http=["rate_limit_postgres env:RL_PG_CONN interval=5s;", ZONE],
                locations=[loc("/api/", "rate_limit zone=api")], main="env RL_PG_CONN;")
    start_synced(n)
    assert limit(n, key) == "3"


def test_unknown_zone_rows_and_bad_rows_are_skipped(two_nodes, postgres):
    """Rows of zones this node does not have are ignored; so is a row the
    module refuses (a rate too fast, rate text or a key that only a table
    without the shipped CHECKs holds); other rows still apply.  Each ignored
    row is logged with its zone, key, rate and burst, escaped (they are user
    data: a newline must not split the line), so that an operator can find
    it."""
    a, b = two_nodes()
    db = two_nodes.db
    k_other, k_fast, k_ok = unique_key("other"), unique_key("fast"), unique_key("ok")
    k_odd = 'odd"\n\\' + unique_key()
    k_long = "L" * 5000
    # a table made by hand, or by an older schema, without the CHECKs
    postgres.psql("ALTER TABLE rate_limit_buckets DROP CONSTRAINT rate_limit_buckets_rate_check, "
                  "DROP CONSTRAINT rate_limit_buckets_key_check;", db=db)
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) VALUES "
                  "('nosuchzone', %s, '1r/m', 2), ('api', %s, '999999999999999r/ms', 5), "
                  "('api', %s, E'fast\\r\\nnext', NULL), ('api', %s, '1r/m', 4), "
                  "('api', %s, '1r/m', 3);" % (q(k_other), q(k_fast), q(k_odd), q(k_long),
                                               q(k_ok)), db=db)
    wait_limit([a, b], k_ok, "3", timeout=1.0)
    for k in (k_other, k_fast, k_odd, k_long):
        assert limit(a, k.replace("\n", "")) == DEFAULT_BURST
    esc_odd = k_odd.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    want = [
        ('no such zone on this node', 'zone="nosuchzone" key="%s" rate="1r/m" burst="2"'
         % k_other),
        ('faster than', 'zone="api" key="%s" rate="999999999999999r/ms" burst="5"' % k_fast),
        ('white space', 'zone="api" key="%s" rate="fast\\r\\nnext" burst=NULL' % esc_odd),
        ('longer than 4096 bytes', 'zone="api" key="%s"...(5000 bytes) rate="1r/m" burst="4"'
         % ("L" * 128)),
    ]
    for n in (a, b):
        assert n.proc.poll() is None
        lines = n.error_lines(r"rate_limit_postgres: a row is ignored")
        for reason, row in want:
            assert [l for l in lines if reason in l and l.endswith(row)], (reason, row, lines)
        # nothing raw: the newline in the key and in the rate split no line
        assert not n.error_lines(r"^next|^\\"), n.error_log()[-2000:]


def test_schema_takes_the_zone_names_nginx_takes(postgres):
    """The table's CHECK takes a zone name exactly when rate_limit_zone,
    the policy file and the bucket API do: 1 to 64 of [A-Za-z0-9_.-]."""
    db = postgres.new_db()
    for zone, ok in [("api", True), ("a.b-c_D9", True), ("z" * 64, True), ("z" * 65, False),
                     ("", False), ("a b", False), ('a"b', False), ("a\nb", False),
                     ("api\n", False), ("caf\u00e9", False), ("a;b", False), ("\u212a", False)]:
        out = postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate) VALUES "
                            "(%s, 'k', '1r/s');" % q(zone), db=db, check=False)
        got = postgres.psql("SELECT count(*) FROM rate_limit_buckets WHERE zone = %s;"
                            % q(zone), db=db)
        assert got == ("1" if ok else "0"), (zone, out)
        if not ok:
            assert "rate_limit_buckets_zone_check" in out, (zone, out)


def test_row_of_a_long_transaction_is_synced(nginx_factory, postgres):
    """A transaction stamps its row (trigger: clock_timestamp()) then takes
    6 s to commit while another change commits: the slow row must still
    arrive.  (A bulk load in one long transaction is the real-world case.)"""
    db = postgres.new_db()
    n = start_synced(nginx_factory("longtx", **pg_conf(postgres, db, interval="1s")))
    k_slow, k_fast = unique_key("slow"), unique_key("fast")
    slow = subprocess.Popen(
        [str(postgres.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
         "-p", str(postgres.port), "-U", "postgres", "-d", db, "-c",
         "BEGIN; INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
         "VALUES ('api', %s, '1r/m', 3); SELECT pg_sleep(5.5); COMMIT;" % q(k_slow)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        time.sleep(5.2)
        insert(postgres, db, k_fast, "1r/m", 4)
        wait_limit([n], k_fast, "4", timeout=1.0)
    finally:
        assert slow.wait(10) == 0
    wait_limit([n], k_slow, "3", timeout=2.5)


def test_truncate_reaches_the_nodes(nginx_factory, postgres):
    db = postgres.new_db()
    n = start_synced(nginx_factory("trunc", **pg_conf(postgres, db, interval="1s")))
    key = unique_key()
    insert(postgres, db, key, "1r/m", 3)
    wait_limit([n], key, "3", timeout=1.0)
    postgres.psql("TRUNCATE rate_limit_buckets;", db=db)
    wait_limit([n], key, DEFAULT_BURST, timeout=2.5)


def test_zone_full_of_rows(nginx_factory, postgres):
    """More rows than the zone holds: one alert, and limits keep applying
    (the rows held, and the zone's default for other keys)."""
    db = postgres.new_db()
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "SELECT 'api', 'full-' || g, '1r/m', g % 50 + 1 "
                  "FROM generate_series(1, 20000) AS g;", db=db)
    zones = ["rate_limit_zone $http_x_key zone=api:1m rate=100r/s burst=100;"]
    n = nginx_factory("full", **pg_conf(postgres, db, zones=zones))
    n.allowed_alerts = [r'rate_limit_zone "api" is full at \d+ per-client limits']
    start_synced(n)
    alerts = n.error_lines(r"\[alert\]")
    assert len(alerts) == 1 and "is full" in alerts[0], alerts
    n.get("/api/x", key="warm-up")
    held = [g for g in range(1, 20001, 500) if limit(n, "full-%d" % g) == str(g % 50 + 1)]
    assert held, "no row in force in a full zone"
    r = n.get("/api/x", key=unique_key())
    assert r.h("X-RateLimit-Limit") == DEFAULT_BURST and r.rls == "PASSED", r
    assert n.proc.poll() is None
