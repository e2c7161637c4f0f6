"""The bucket API (rate_limit_api): routes, status codes, JSON bodies,
URL-encoded keys, writes reaching the nodes, and a run of garbled requests.

Two locations serve the API on every node: /rate-limit/ with a bearer token
(rate_limit_api_token env:RATE_LIMIT_API_TOKEN) and /rl-open/ without one.
Each test takes a PostgreSQL database of its own.
"""

import http.client
import json
import random
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import loc, unique_key, wait_for

TOKEN = "s3cret-" + "t" * 20
BASE = "/rate-limit/"
OPEN = "/rl-open/"
ZONES = ["rate_limit_zone $http_x_key zone=api:8m rate=100r/m burst=20;",
         "rate_limit_zone $http_x_key zone=web:1m rate=5r/s burst=10 on_failure=closed;"]
# The API locations log elsewhere and set their own headers, so that
# $rate_limit_status (the template's add_header and access log) is not read
# there: test_status_variable_in_api_location covers that on its own.
ISOLATE = ("            access_log off;\n"
           "            add_header X-API yes always;\n")
API_LOCATIONS = [
    "        location %s {\n            rate_limit_api;\n"
    "            rate_limit_api_token env:RATE_LIMIT_API_TOKEN;\n"
    "            allow 127.0.0.1;\n            deny all;\n%s        }\n" % (BASE, ISOLATE),
    "        location %s {\n            rate_limit_api;\n%s        }\n" % (OPEN, ISOLATE),
]


def api_conf(pg, db, zones=ZONES, policy=None, interval="10s", extra_http=(),
             api_locations=API_LOCATIONS):
    http = ['rate_limit_postgres "%s" interval=%s;' % (pg.conninfo(db), interval)]
    if policy:
        http.append("rate_limit_policy_file %s;" % policy)
    http += list(extra_http) + list(zones)
    return dict(http=http, main="env RATE_LIMIT_API_TOKEN;",
                locations=[loc("/api/", "rate_limit zone=api"),
                           loc("/web/", "rate_limit zone=web")] + list(api_locations))


class ApiResp:
    def __init__(self, status, headers, body, elapsed):
        self.status, self.headers, self.body, self.elapsed = status, headers, body, elapsed

    def h(self, name):
        return self.headers.get(name)

    @property
    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<ApiResp %d %r %r>" % (self.status, dict(self.headers.items()), self.body[:300])


def request(port, method, path, body=None, token=TOKEN, headers=None, timeout=5.0):
    """One request on a new connection; body: a dict/list (sent as JSON) or
    bytes.  path must be ASCII (encode keys with enc())."""
    hdrs = {"Connection": "close"}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if headers:
        hdrs.update(headers)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return ApiResp(r.status, r.msg, r.read(), time.monotonic() - t0)
    finally:
        conn.close()


def enc(key):
    return urllib.parse.quote(key.encode("utf-8"), safe="")


def header_key(key):
    """The X-Key header carrying key's UTF-8 bytes (http.client sends latin-1)."""
    return key.encode("utf-8").decode("latin-1")


def limit(n, key, path="/api/x"):
    return n.get(path, headers={"X-Key": header_key(key)}).h("X-RateLimit-Limit")


def wait_limit(n, key, want, timeout, path="/api/x"):
    t0 = time.monotonic()
    try:
        wait_for(lambda: limit(n, key, path) == want, timeout, interval=0.02,
                 what="X-RateLimit-Limit %s" % want)
    except TimeoutError:
        raise AssertionError("key %r on %s: X-RateLimit-Limit %r after %.1fs, want %s" % (
            key, n.prefix, limit(n, key, path), timeout, want))
    return time.monotonic() - t0


def assert_error(r, status):
    assert r.status == status, r
    assert (r.h("Content-Type") or "").startswith("application/json"), r
    body = r.json
    assert isinstance(body, dict) and set(body) == {"error"}, r
    assert isinstance(body["error"], str) and body["error"], r


@pytest.fixture
def nodes(nginx_factory, postgres):
    """make(count=2, **api_conf kwargs) -> [Nginx], all started and synced."""
    db = postgres.new_db()

    def make(count=2, **kw):
        out = []
        for i in range(count):
            n = nginx_factory("api%d" % (i + 1))
            n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
            conf = dict(kw)
            if callable(conf.get("policy")):
                conf["policy"] = conf["policy"](n)
            n.configure(**api_conf(postgres, db, **conf))
            mark = n.log_mark()
            n.start()
            wait_for(lambda: n.error_lines(r"rate_limit_postgres: full sync of", mark), 8.0,
                     what="first full sync")
            out.append(n)
        return out
    make.db = db
    return make


def bucket_url(zone, key=None, base=BASE):
    return base + "buckets/" + zone + ("" if key is None else "/" + enc(key))


# --------------------------------------------------------------------------


def test_zones(nginx_factory, postgres, redis):
    db = postgres.new_db()
    n = nginx_factory("zones")
    n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
    zones = ZONES + ["rate_limit_zone $http_x_key zone=red:1m rate=5r/30s burst=7 "
                     "backend=redis on_failure=closed;"]
    n.configure(**api_conf(postgres, db, zones=zones, extra_http=[
        "rate_limit_redis 127.0.0.1:%d timeout=200ms prefix=rlapi;" % redis.port]))
    n.start()
    r = request(n.port, "GET", BASE + "zones")
    assert r.status == 200, r
    assert r.h("Content-Type").startswith("application/json")
    got = r.json["zones"]
    # with rate_limit_redis, redis is the default backend
    want = [{"name": "api", "rate": "100r/m", "burst": 20, "backend": "redis",
             "on_failure": "open"},
            {"name": "web", "rate": "5r/s", "burst": 10, "backend": "redis",
             "on_failure": "closed"},
            {"name": "red", "rate": "5r/30s", "burst": 7, "backend": "redis",
             "on_failure": "closed"}]
    assert [{k: z.get(k) for k in want[0]} for z in got] == want, got
    h = request(n.port, "HEAD", BASE + "zones")
    assert h.status == 200 and h.body == b""
    # a Redis bucket: the tokens Redis holds
    key = unique_key()
    b = request(n.port, "GET", bucket_url("red", key))
    assert b.status == 200, b
    assert b.json["source"] == "default" and b.json["burst"] == 7
    assert b.json["tokens"] in (7, None)
    h = request(n.port, "HEAD", bucket_url("red", key))
    assert h.status == 200 and h.body == b"", h
    # Redis down: the tokens are unknown, the answer still comes, and quickly
    redis.stop()
    b = request(n.port, "GET", bucket_url("red", key))
    assert b.status == 200 and b.json["tokens"] is None, b
    assert b.elapsed < 1.0, b


def test_status_variable_in_api_location(nginx_factory, postgres):
    """$rate_limit_status read in an API location (the template's add_header
    and access log): writes must not crash the worker."""
    db = postgres.new_db()
    n = nginx_factory("apivar")
    n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
    n.configure(**api_conf(postgres, db, api_locations=[
        "        location %s {\n            rate_limit_api;\n        }\n" % OPEN]))
    n.start()
    workers = sorted(n.workers())
    key = unique_key()
    for method, path, body, status in [
            ("POST", bucket_url("api", base=OPEN), {"key": key, "rate": "1r/m"}, 201),
            ("PUT", bucket_url("api", key, base=OPEN), {"rate": "2r/m"}, 200),
            ("GET", bucket_url("api", key, base=OPEN), None, 200),
            ("GET", bucket_url("api", base=OPEN), None, 200),
            ("DELETE", bucket_url("api", key, base=OPEN), None, 204),
            ("POST", bucket_url("api", base=OPEN), b"{", 400)]:
        r = request(n.port, method, path, body, token=None)
        assert r.status == status, (method, r)
        assert r.h("X-RL-Status") in (None, ""), r
    assert sorted(n.workers()) == workers
    recs = n.access_for("-", 6)
    assert len(recs) == 6 and all(x["rls"] in ("", "-") for x in recs), recs


def test_create_update_delete_reach_both_nodes(nodes, postgres):
    a, b = nodes()
    key = unique_key()
    assert limit(a, key) == "20" and limit(b, key) == "20"

    r = request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/m", "burst": 3})
    assert r.status == 201, r
    assert r.h("Content-Type").startswith("application/json")
    body = r.json
    assert {k: body.get(k) for k in ("zone", "key", "rate", "burst")} == {
        "zone": "api", "key": key, "rate": "1r/m", "burst": 3}, body
    assert limit(a, key) == "3"                     # at once on the node that wrote
    took = wait_limit(b, key, "3", timeout=1.0)      # NOTIFY to the other
    print("create reached the other node in %.3fs" % took)
    assert postgres.psql("SELECT rate || ' ' || burst FROM rate_limit_buckets "
                         "WHERE zone = 'api' AND key = '%s';" % key, db=nodes.db) == "1r/m 3"

    dup = request(b.port, "POST", bucket_url("api"), {"key": key, "rate": "2r/m", "burst": 4})
    assert_error(dup, 409)
    assert limit(a, key) == "3"

    g = request(b.port, "GET", bucket_url("api", key))
    assert g.status == 200, g
    assert g.json == {"zone": "api", "key": key, "rate": "1r/m", "burst": 3,
                      "source": "postgres", "tokens": g.json["tokens"]}, g
    # the node's own bucket: 2 probes + 1 above took tokens on a; b took 1 + polls
    ga = request(a.port, "GET", bucket_url("api", key)).json
    assert isinstance(ga["tokens"], int) and 0 <= ga["tokens"] <= 3, ga

    u = request(b.port, "PUT", bucket_url("api", key), {"rate": "10r/s", "burst": 40})
    assert u.status == 200, u
    assert {k: u.json.get(k) for k in ("zone", "key", "rate", "burst")} == {
        "zone": "api", "key": key, "rate": "10r/s", "burst": 40}, u
    assert limit(b, key) == "40"
    wait_limit(a, key, "40", timeout=1.0)
    g = request(a.port, "GET", bucket_url("api", key)).json
    assert (g["rate"], g["burst"], g["source"]) == ("10r/s", 40, "postgres"), g

    # burst left out: the count of the rate
    u = request(a.port, "PUT", bucket_url("api", key), {"rate": "30r/m"})
    assert u.status == 200 and u.json["burst"] == 30, u
    assert limit(a, key) == "30"
    wait_limit(b, key, "30", timeout=1.0)

    d = request(a.port, "DELETE", bucket_url("api", key))
    assert d.status == 204 and d.body == b"", d
    assert limit(a, key) == "20"
    wait_limit(b, key, "20", timeout=1.0)
    g = request(b.port, "GET", bucket_url("api", key)).json
    assert (g["rate"], g["burst"], g["source"]) == ("100r/m", 20, "default"), g

    assert_error(request(a.port, "DELETE", bucket_url("api", key)), 404)
    assert_error(request(a.port, "PUT", bucket_url("api", key), {"rate": "1r/s"}), 404)
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=nodes.db) == "0"


def test_head_is_a_get_without_body(one_node, postgres):
    """HEAD reads (RFC 9110: the same as GET without the body): it must
    never change a bucket."""
    a = one_node
    key = unique_key()
    assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/s"}).status == 201
    for path in (bucket_url("api", key), bucket_url("api"), BASE + "zones"):
        r = request(a.port, "HEAD", path)
        assert r.status == 200 and r.body == b"", (path, r)
    assert postgres.psql("SELECT key FROM rate_limit_buckets;", db=a.db) == key
    assert limit(a, key) == "1"


def test_read_your_writes_on_the_serving_node(one_node):
    """Right after a write returns, the node that served it answers with
    the write: no older row comes back from a sync that was running (each
    write's NOTIFY starts a sync that races the next write)."""
    a = one_node
    stale = []
    for i in range(600):
        key = "ryw-%d-%s" % (i, unique_key())
        assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/s",
                                                           "burst": 3}).status == 201
        if limit(a, key) != "3":
            stale.append(("create", i))
        assert request(a.port, "DELETE", bucket_url("api", key)).status == 204
        if limit(a, key) != "20":
            stale.append(("delete", i))
    assert not stale, stale


def test_concurrent_creates_of_one_key(nodes, postgres):
    """20 clients create the same key through two nodes at once: one 201,
    nineteen 409."""
    a, b = nodes()
    key = unique_key()
    from conftest import run_threads
    res = run_threads(lambda i: request((a if i % 2 else b).port, "POST", bucket_url("api"),
                                        {"key": key, "rate": "1r/m", "burst": i + 1}), 20)
    errors = [r for r in res if isinstance(r, BaseException)]
    assert not errors, errors
    statuses = sorted(r.status for r in res)
    assert statuses == [201] + [409] * 19, statuses
    winner = [r for r in res if r.status == 201][0].json["burst"]
    for n in (a, b):
        wait_limit(n, key, str(winner), timeout=1.0)
    assert postgres.psql("SELECT burst FROM rate_limit_buckets;", db=nodes.db) == str(winner)


def test_blocked_client_through_the_api(nodes):
    a, b = nodes()
    key = unique_key()
    r = request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "0r/s"})
    assert r.status == 201, r
    wait_limit(b, key, "0", timeout=1.0)
    for n in (a, b):
        x = n.get("/api/x", key=key)
        assert x.status == 429 and x.h("Retry-After") == "60", x
        assert x.h("RateLimit-Policy") == '"api";q=0;w=1'
    g = request(a.port, "GET", bucket_url("api", key)).json
    assert g["burst"] == 0 and g["source"] == "postgres" and g["tokens"] in (0, None), g
    k2 = unique_key()
    assert request(a.port, "POST", bucket_url("api"),
                   {"key": k2, "rate": "10r/s", "burst": 0}).status == 201
    assert a.get("/api/x", key=k2).status == 429


def test_get_sources(nodes):
    k_yaml, k_pg = unique_key("yaml"), unique_key("pg")

    def policy(n):
        p = n.prefix / "limits.yaml"
        p.write_text("zones:\n  api:\n    clients:\n"
                     "      %s: { rate: 5r/s, burst: 11 }\n"
                     "      %s: { rate: 5r/s, burst: 12 }\n" % (k_yaml, k_pg))
        return p
    (a,) = nodes(count=1, policy=policy)
    g = request(a.port, "GET", bucket_url("api", k_yaml)).json
    assert (g["source"], g["rate"], g["burst"]) == ("yaml", "5r/s", 11), g
    assert request(a.port, "POST", bucket_url("api"),
                   {"key": k_pg, "rate": "2r/s", "burst": 3}).status == 201
    g = request(a.port, "GET", bucket_url("api", k_pg)).json
    assert (g["source"], g["rate"], g["burst"]) == ("postgres", "2r/s", 3), g
    assert request(a.port, "DELETE", bucket_url("api", k_pg)).status == 204
    # a sync already running may restore the row for a few ms (README,
    # Limitations; test_read_your_writes_on_the_serving_node): bounded poll
    g = wait_for(lambda: (lambda j: j if j["source"] == "yaml" else None)(
                     request(a.port, "GET", bucket_url("api", k_pg)).json),
                 timeout=1.0, what="the YAML limit back after the delete")
    assert (g["source"], g["burst"]) == ("yaml", 12), g
    g = request(a.port, "GET", bucket_url("api", unique_key())).json
    assert (g["source"], g["rate"], g["burst"]) == ("default", "100r/m", 20), g
    # a fresh local bucket is full
    assert g["tokens"] in (20, None), g


ODD_KEYS = ["caf\u00e9 \u65e5\u672c \U0001F600", "a/b/c", "with space", "100%",
            "plus+sign", "q?x=1&y=2#frag", "#hash", "..", "tab\tand\"quote\\"]


def test_keys_utf8_slash_space(nodes, postgres):
    a, b = nodes()
    suffix = unique_key("")
    keys = [k + suffix for k in ODD_KEYS]
    for i, key in enumerate(keys):
        r = request(a.port, "POST", bucket_url("web"), {"key": key, "rate": "1r/m", "burst": i + 1})
        assert r.status == 201, (key, r)
        assert r.json["key"] == key
    for i, key in enumerate(keys):
        g = request(b.port, "GET", bucket_url("web", key))
        assert g.status == 200, (key, g)
        assert g.json["key"] == key, g
        if "\t" not in key:
            # the key as a client sends it (a header cannot hold a tab here)
            wait_limit(b, key, str(i + 1), timeout=1.0, path="/web/x")
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=nodes.db) == str(len(keys))
    lst = request(a.port, "GET", bucket_url("web")).json
    assert sorted(x["key"] for x in lst["buckets"]) == sorted(keys)
    for key in keys:
        u = request(b.port, "PUT", bucket_url("web", key), {"rate": "1r/s", "burst": 50})
        assert u.status == 200, (key, u)
        d = request(a.port, "DELETE", bucket_url("web", key))
        assert d.status == 204, (key, d)
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=nodes.db) == "0"


def test_list_and_pagination(nodes):
    (a,) = nodes(count=1)
    keys = sorted(["p-%02d" % i for i in range(7)] + ["p-sp ace", "p-sl/ash", "p-\u00e9"],
                  key=lambda k: k.encode())
    for k in keys:
        assert request(a.port, "POST", bucket_url("web"),
                       {"key": k, "rate": "3r/s", "burst": 4}).status == 201
    r = request(a.port, "GET", bucket_url("web"))
    assert r.status == 200, r
    body = r.json
    assert body["zone"] == "web" and body["next"] is None, body
    assert [x["key"] for x in body["buckets"]] == keys
    assert body["buckets"][0] == {"key": keys[0], "rate": "3r/s", "burst": 4}
    # pages of 3, following "next" (URL-encoded in "after")
    seen, after = [], None
    for _ in range(10):
        url = bucket_url("web") + "?limit=3" + ("&after=" + enc(after) if after else "")
        page = request(a.port, "GET", url)
        assert page.status == 200, page
        page = page.json
        assert len(page["buckets"]) <= 3
        seen += [x["key"] for x in page["buckets"]]
        if page["next"] is None:
            break
        assert page["next"] == page["buckets"][-1]["key"]
        after = page["next"]
    assert seen == keys
    # the other zone is empty
    assert request(a.port, "GET", bucket_url("api")).json == {"zone": "api", "buckets": [],
                                                               "next": None}
    assert request(a.port, "GET", bucket_url("web") + "?limit=1000").status == 200
    for bad in ("0", "-1", "1001", "abc", "", "1e3"):
        assert_error(request(a.port, "GET", bucket_url("web") + "?limit=" + bad), 400)


BAD_BODIES = [
    ("malformed", b'{"key": "k", "rate": '),
    ("not-json", b"key=k&rate=10r/s"),
    ("empty", b""),
    ("array", b'[{"key": "k", "rate": "10r/s"}]'),
    ("string", b'"k"'),
    ("trailing", b'{"key": "k", "rate": "10r/s"} x'),
    ("bad-rate", {"key": "k", "rate": "10r/x"}),
    ("bad-rate-word", {"key": "k", "rate": "fast"}),
    ("rate-number", {"key": "k", "rate": 10}),
    ("no-rate", {"key": "k", "burst": 3}),
    ("negative-burst", {"key": "k", "rate": "10r/s", "burst": -1}),
    ("float-burst", {"key": "k", "rate": "10r/s", "burst": 2.5}),
    ("string-burst", {"key": "k", "rate": "10r/s", "burst": "20"}),
    ("exp-burst", b'{"key": "k", "rate": "10r/s", "burst": 1e3}'),
    ("bool-burst", {"key": "k", "rate": "10r/s", "burst": True}),
    ("huge-burst", b'{"key": "k", "rate": "10r/s", "burst": 99999999999999999999999}'),
    ("empty-key", {"key": "", "rate": "10r/s"}),
    ("long-key", {"key": "x" * 4097, "rate": "10r/s"}),
    ("long-utf8-key", json.dumps({"key": "\u00e9" * 2049, "rate": "10r/s"},
                                 ensure_ascii=False).encode()),   # 4098 bytes
    ("number-key", {"key": 5, "rate": "10r/s"}),
    ("no-key", {"rate": "10r/s"}),
    ("unknown-field", {"key": "k", "rate": "10r/s", "brust": 3}),
    ("nul-key", b'{"key": "a\\u0000b", "rate": "10r/s"}'),
    ("bad-utf8", b'{"key": "\xff\xfe", "rate": "10r/s"}'),
    ("lone-surrogate", b'{"key": "\\ud800", "rate": "10r/s"}'),
]


@pytest.fixture
def one_node(nodes):
    (a,) = nodes(count=1)
    a.db = nodes.db
    return a


def test_bad_bodies_400(one_node, postgres):
    a = one_node
    for name, body in BAD_BODIES:
        r = request(a.port, "POST", bucket_url("api"), body)
        assert r.status == 400, (name, r)
        assert_error(r, 400)
    # PUT: the same checks on rate / burst, and the key is in the path
    key = unique_key()
    assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/s"}).status == 201
    for name, body in [("bad-rate", {"rate": "1r/x"}), ("negative", {"rate": "1r/s", "burst": -2}),
                       ("float", {"rate": "1r/s", "burst": 1.5}), ("malformed", b"{"),
                       ("unknown", {"rate": "1r/s", "bust": 1}), ("no-rate", {"burst": 1})]:
        assert_error(request(a.port, "PUT", bucket_url("api", key), body), 400)
    g = request(a.port, "GET", bucket_url("api", key)).json
    assert (g["rate"], g["burst"]) == ("1r/s", 1), g
    # a key over 4096 bytes (PostgreSQL's limit) or holding NUL in the path
    for method in ("GET", "PUT", "DELETE"):
        body = {"rate": "1r/s"} if method == "PUT" else None
        assert_error(request(a.port, method, bucket_url("api", "y" * 4097), body), 400)
        # nginx itself refuses %00 in a URI (its own 400 page)
        assert request(a.port, method, bucket_url("api") + "/a%00b", body).status == 400
    assert request(a.port, "GET", bucket_url("api", "y" * 4096)).status == 200
    # 4096 bytes is the longest key (here 2048 two-byte characters; their
    # path, encoded, would need larger header buffers than nginx's default)
    assert request(a.port, "POST", bucket_url("api"),
                   json.dumps({"key": "\u00e9" * 2048, "rate": "1r/s"},
                              ensure_ascii=False).encode()).status == 201
    assert postgres.psql("DELETE FROM rate_limit_buckets WHERE octet_length(key) = 4096 "
                         "RETURNING length(key);", db=a.db) == "2048"
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=a.db) == "1"


def test_key_not_utf8(one_node):
    """PostgreSQL stores text: a key that is not UTF-8 cannot be written or
    listed after; that is the client's error (400), not 503 (PostgreSQL is up)."""
    a = one_node
    for method, path, body in [
            ("PUT", bucket_url("api") + "/%ff%fe", {"rate": "1r/s"}),
            ("DELETE", bucket_url("api") + "/%ff%fe", None),
            ("DELETE", bucket_url("api") + "/ok%C3", None),
            ("GET", bucket_url("api") + "?after=%ff", None),
            ("POST", bucket_url("api"), b'{"key": "\xff", "rate": "1r/s"}')]:
        assert_error(request(a.port, method, path, body), 400)
    # reading one bucket needs no PostgreSQL: a binary key ($binary_remote_addr) is fine
    g = request(a.port, "GET", bucket_url("api") + "/%ff%fe")
    assert g.status == 200, g
    assert not a.error_lines(r"rate_limit_api: query failed")


def test_not_found_404(one_node):
    a = one_node
    for method, path, body in [
            ("GET", bucket_url("nosuch"), None),
            ("POST", bucket_url("nosuch"), {"key": "k", "rate": "1r/s"}),
            ("GET", bucket_url("nosuch", "k"), None),
            ("PUT", bucket_url("nosuch", "k"), {"rate": "1r/s"}),
            ("DELETE", bucket_url("nosuch", "k"), None),
            ("GET", BASE, None),
            ("GET", BASE + "nope", None),
            ("GET", BASE + "buckets", None),
            ("GET", BASE + "buckets/", None),
            ("GET", BASE + "zones/api", None),
            ("GET", BASE + "zonesx", None),
            ("GET", BASE + "bucket/api", None),
            ("GET", BASE + "buckets//k", None),
            ("DELETE", bucket_url("api", unique_key()), None),
            ("PUT", bucket_url("api", unique_key()), {"rate": "1r/s"})]:
        assert_error(request(a.port, method, path, body), 404)


def test_method_not_allowed_405(one_node):
    a = one_node
    for method, path, allowed in [
            ("POST", BASE + "zones", {"GET"}),
            ("DELETE", BASE + "zones", {"GET"}),
            ("PUT", bucket_url("api"), {"GET", "POST"}),
            ("DELETE", bucket_url("api"), {"GET", "POST"}),
            ("POST", bucket_url("api", "k"), {"GET", "PUT", "DELETE"}),
            ("PATCH", bucket_url("api", "k"), {"GET", "PUT", "DELETE"}),
            ("OPTIONS", bucket_url("api", "k"), {"GET", "PUT", "DELETE"})]:
        r = request(a.port, method, path, {"key": "k", "rate": "1r/s"}
                    if method in ("POST", "PUT", "PATCH") else None)
        assert_error(r, 405)
        allow = {m.strip() for m in (r.h("Allow") or "").split(",")}
        assert allowed <= allow and method not in allow, (method, path, r)


def test_body_too_large_413(one_node, postgres):
    a = one_node
    key = unique_key()
    small = json.dumps({"key": key, "rate": "1r/s"}).encode()
    big = small[:-1] + b" " * (8193 - len(small)) + b"}"
    assert len(big) == 8193
    assert_error(request(a.port, "POST", bucket_url("api"), big), 413)
    assert_error(request(a.port, "PUT", bucket_url("api", key), b"{" + b" " * 9000 + b"}"), 413)
    # chunked: no Content-Length to judge by
    with socket.create_connection(("127.0.0.1", a.port), timeout=5) as s:
        chunk = b" " * 3000
        s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  % (bucket_url("api").encode(), TOKEN.encode())
                  + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 3 + b"0\r\n\r\n")
        resp = read_all(s)
    assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
    # up to 8192 bytes is fine (a key of 4096 bytes fits, as it is)
    created = []
    for size in (1000, 4000, 6000, 8192):
        k = "%s-%d" % (key, size)
        small = json.dumps({"key": k, "rate": "1r/s"}).encode()
        ok = small[:-1] + b" " * (size - len(small)) + b"}"
        assert len(ok) == size
        r = request(a.port, "POST", bucket_url("api"), ok)
        created.append((size, r.status, r.body[:60]))
    assert [c[1] for c in created] == [201] * 4, created
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=a.db) == "4"


def test_bearer_token_401(one_node):
    a = one_node
    for token, headers in [(None, None), ("wrong", None), (TOKEN[:-1], None),
                           (TOKEN + "x", None), ("", None),
                           (None, {"Authorization": "Basic " + TOKEN}),
                           (None, {"Authorization": TOKEN}),
                           (None, {"Authorization": "Bearer  " + TOKEN})]:
        for method, path in [("GET", BASE + "zones"), ("GET", BASE + "nope"),
                             ("POST", bucket_url("api")), ("DELETE", bucket_url("api", "k"))]:
            r = request(a.port, method, path, {"key": "k", "rate": "1r/s"}
                        if method == "POST" else None, token=token, headers=headers)
            assert_error(r, 401)
            assert (r.h("WWW-Authenticate") or "").startswith("Bearer"), r
    assert request(a.port, "GET", BASE + "zones").status == 200
    assert request(a.port, "GET", BASE + "zones",
                   headers={"Authorization": "bearer " + TOKEN}).status == 200
    # the location without rate_limit_api_token needs none
    assert request(a.port, "GET", OPEN + "zones", token=None).status == 200


@pytest.mark.parametrize("value,said,not_said", [(None, "is not set", "is empty"),
                                                   ("", "is empty", "is not set")],
                         ids=["unset", "empty"])
def test_token_variable_unset_or_empty_denies(nginx_factory, postgres, value, said,
                                              not_said):
    """A missing or empty token variable refuses every request, and the
    error log says which, once (when the workers start), not once per
    request."""
    db = postgres.new_db()
    n = nginx_factory("notoken", **api_conf(postgres, db))
    n.env.pop("RATE_LIMIT_API_TOKEN", None)
    if value is not None:
        n.env["RATE_LIMIT_API_TOKEN"] = value
    n.start()
    for _ in range(10):
        assert_error(request(n.port, "GET", BASE + "zones", token=""), 401)
        assert_error(request(n.port, "GET", BASE + "zones", token="x"), 401)
    assert request(n.port, "GET", OPEN + "zones", token=None).status == 200
    pattern = r'environment variable "RATE_LIMIT_API_TOKEN"'
    lines = wait_for(lambda: n.error_lines(pattern), 2.0, what="the token variable's line")
    time.sleep(0.2)
    lines = n.error_lines(pattern)
    assert len(lines) == 1, lines
    assert said in lines[0] and not_said not in lines[0], lines


def test_write_right_after_start_on_a_fresh_database(nginx_factory, postgres):
    """An API write the moment nginx starts on a database without the
    schema: the API creates the schema itself (or waits for the syncing
    worker's run), so the write succeeds; several fresh starts, each with
    writes through both workers at once, so the race is run each time."""
    failures = []
    for i in range(6):
        db = postgres.new_db(schema=False)
        n = nginx_factory("fresh%d" % i, **api_conf(postgres, db))
        n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
        n.start(timeout=10.0)
        keys = [unique_key("fresh") for _ in range(4)]
        from conftest import run_threads
        res = run_threads(lambda j: request(n.port, "POST", bucket_url("api"),
                                            {"key": keys[j], "rate": "1r/s", "burst": 2}), 4)
        statuses = [r.status if not isinstance(r, BaseException) else repr(r) for r in res]
        if statuses != [201] * 4:
            failures.append((i, statuses))
        else:
            assert [limit(n, k) for k in keys] == ["2"] * 4
            assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=db) == "4"
        assert not n.error_lines(r"rate_limit_api: cannot create the schema")
        n.stop()
    assert not failures, failures


def test_role_that_may_not_create_tables(nginx_factory, postgres):
    """The schema is shipped for databases where nginx's role may not create
    tables: with the table made by its owner, the sync and the API work as
    that role, though their own runs of the schema fail (logged)."""
    db = postgres.new_db()
    role = "rl_" + unique_key("")[1:]
    postgres.psql("CREATE ROLE %s LOGIN; GRANT SELECT, INSERT, UPDATE, DELETE ON "
                  "rate_limit_buckets, rate_limit_bucket_deletions TO %s;" % (role, role),
                  db=db)
    n = nginx_factory("role")
    n.env["RATE_LIMIT_API_TOKEN"] = TOKEN
    conf = api_conf(postgres, db, interval="1s")
    conf["http"][0] = conf["http"][0].replace("user=postgres", "user=" + role)
    assert "user=" + role in conf["http"][0]
    n.configure(**conf)
    n.start()
    wait_for(lambda: n.error_lines(r"rate_limit_postgres: full sync of"), 8.0,
             what="a full sync as %s" % role)
    key = unique_key()
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "VALUES ('api', '%s', '1r/m', 4);" % key, db=db)
    wait_for(lambda: limit(n, key) == "4", 2.0, what="the row synced through NOTIFY")
    k2 = unique_key()
    r = request(n.port, "POST", bucket_url("api"), {"key": k2, "rate": "1r/s", "burst": 6})
    assert r.status == 201, r
    assert limit(n, k2) == "6"
    assert request(n.port, "DELETE", bucket_url("api", key)).status == 204
    assert limit(n, key) == "20"
    assert n.error_lines(r"rate_limit_postgres: cannot create the schema: .*permission denied")
    assert n.error_lines(r"rate_limit_api: cannot create the schema: .*permission denied")
    assert not n.error_lines(r"query failed|current transaction is aborted")


def test_malformed_percent_escapes_400(one_node):
    """A "%" that two hex digits do not follow is the client's error, with
    a JSON reason, not a key taken literally; "%25" is a literal "%"."""
    a = one_node
    for bad in ("%zz", "a%2", "%", "%g1", "ab%", "%%", "x%2G"):
        r = request(a.port, "GET", bucket_url("api") + "?after=" + bad)
        assert_error(r, 400)
        assert "escape" in r.json["error"], r
    # a key with a literal "%", sent encoded: create, read, list, update, delete
    key = "100%"
    assert enc(key) == "100%25"
    r = request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/s", "burst": 4})
    assert r.status == 201 and r.json["key"] == key, r
    g = request(a.port, "GET", bucket_url("api", key))
    assert g.status == 200 and g.json["key"] == key and g.json["source"] == "postgres", g
    assert limit(a, key) == "4"
    lst = request(a.port, "GET", bucket_url("api") + "?after=" + enc("100")).json
    assert [x["key"] for x in lst["buckets"]] == [key], lst
    assert request(a.port, "GET", bucket_url("api") + "?after=" + enc(key)).json["buckets"] == []
    assert request(a.port, "PUT", bucket_url("api", key), {"rate": "1r/s", "burst": 6}).status == 200
    assert limit(a, key) == "6"
    assert request(a.port, "DELETE", bucket_url("api", key)).status == 204
    assert limit(a, key) == "20"


def test_zone_names_outside_the_set_400(one_node):
    """A zone name that no rate_limit_zone can have is a 400 with a reason;
    a valid name that this node lacks stays a 404."""
    a = one_node
    for zone in ("a%20b", "a%22b", "a%0Ab", "caf%C3%A9", "a;b", "a%5Cb", "z" * 65):
        for method, path, body in [
                ("GET", bucket_url(zone), None),
                ("POST", bucket_url(zone), {"key": "k", "rate": "1r/s"}),
                ("GET", bucket_url(zone) + "/k", None),
                ("PUT", bucket_url(zone) + "/k", {"rate": "1r/s"}),
                ("DELETE", bucket_url(zone) + "/k", None)]:
            r = request(a.port, method, path, body)
            assert_error(r, 400)
            assert "zone name" in r.json["error"], (zone, method, r)
    for zone in ("nosuch", "z" * 64, "a.b-c_D9"):
        assert_error(request(a.port, "GET", bucket_url(zone, "k")), 404)


def test_keys_of_4096_bytes(one_node, postgres):
    """The schema, the policy file and the API take the same keys, up to
    4096 bytes: a row that long, written with psql, is read, listed,
    changed and deleted through the API; a longer one is refused by both."""
    a = one_node
    db = a.db
    key = unique_key("L") + "y" * (4096 - 14)
    assert len(key) == 4096
    postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate, burst) "
                  "VALUES ('api', '%s', '1r/m', 5);" % key, db=db)
    wait_for(lambda: limit(a, key) == "5", 2.0, what="the long row synced")
    g = request(a.port, "GET", bucket_url("api", key))
    assert g.status == 200, g
    assert (g.json["key"], g.json["burst"], g.json["source"]) == (key, 5, "postgres"), g
    lst = request(a.port, "GET", bucket_url("api")).json
    assert [x["key"] for x in lst["buckets"]] == [key], lst
    u = request(a.port, "PUT", bucket_url("api", key), {"rate": "1r/m", "burst": 9})
    assert u.status == 200, u
    assert limit(a, key) == "9"
    assert postgres.psql("SELECT burst FROM rate_limit_buckets;", db=db) == "9"
    assert request(a.port, "DELETE", bucket_url("api", key)).status == 204
    assert limit(a, key) == "20"
    # created through the API, as long
    assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/s"}).status == 201
    assert postgres.psql("SELECT octet_length(key) FROM rate_limit_buckets;", db=db) == "4096"
    # one byte more: refused everywhere
    longer = key + "z"
    assert_error(request(a.port, "POST", bucket_url("api"), {"key": longer, "rate": "1r/s"}), 400)
    assert_error(request(a.port, "GET", bucket_url("api", longer)), 400)
    out = postgres.psql("INSERT INTO rate_limit_buckets (zone, key, rate) "
                        "VALUES ('api', '%s', '1r/m');" % longer, db=db, check=False)
    assert postgres.psql("SELECT count(*) FROM rate_limit_buckets;", db=db) == "1", out


def test_postgres_down_503(nodes, postgres):
    a, b = nodes()
    key = unique_key()
    assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/m",
                                                       "burst": 3}).status == 201
    wait_limit(b, key, "3", timeout=1.0)
    postgres.stop()
    try:
        for n in (a, b):
            for method, path, body in [
                    ("POST", bucket_url("api"), {"key": unique_key(), "rate": "1r/s"}),
                    ("PUT", bucket_url("api", key), {"rate": "1r/s"}),
                    ("DELETE", bucket_url("api", key), None),
                    ("GET", bucket_url("api"), None)]:
                r = request(n.port, method, path, body)
                assert_error(r, 503)
                assert r.elapsed < 2.0, r
            # what needs no PostgreSQL still answers
            assert request(n.port, "GET", BASE + "zones").status == 200
            g = request(n.port, "GET", bucket_url("api", key))
            assert g.status == 200 and g.json["burst"] == 3, g
            assert limit(n, key) == "3"
    finally:
        postgres.start()
    key2 = unique_key()
    statuses = []

    def created():
        r = request(a.port, "POST", bucket_url("api"), {"key": key2, "rate": "1r/m", "burst": 5})
        statuses.append(r.status)
        return r.status == 201
    wait_for(created, 15.0, interval=0.2, what="a write once PostgreSQL is back")
    assert set(statuses) <= {201, 503}, statuses
    assert limit(a, key2) == "5"
    wait_limit(b, key2, "5", timeout=3.0)


def test_api_config_errors(nginx_factory, postgres):
    db = postgres.new_db()
    n = nginx_factory("apiconf")
    base = api_conf(postgres, db)
    for locations, word in [
            (["        location ~ ^/rx/ {\n            rate_limit_api;\n        }\n"],
             "prefix location"),
            (["        location /d/ {\n            rate_limit_api;\n            rate_limit_api;\n"
              "        }\n"], "duplicate")]:
        n.configure(http=base["http"], main=base["main"], locations=locations)
        rc, out = n.test_config()
        assert rc != 0 and word in out, out


# --------------------------------------------------------------------------
# garbled requests


def read_all(s, limit=1 << 20):
    data = b""
    try:
        while len(data) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        data += b"<TIMEOUT>"
    except ConnectionResetError:
        data += b"<RESET>"
    return data


METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "PROPFIND", "FOO",
           "get", "TRACE"]
SEGMENTS = ["zones", "buckets", "api", "web", "nosuch", "", "%", "%zz", "%2", "%2F", "%00",
            "..", ".", "%2e%2e", "a%20b", "%C3%A9", "%ff%fe", "x" * 300, "%41" * 200,
            "k?limit=2", "?after=%ff", "?limit=99999999999999999999", "?limit=-5&after=",
            "#frag", ";param", "~", "\u00e9".encode().decode("latin-1")]


def random_path(rng):
    if rng.random() < 0.25:
        # well-formed routes, so that the handlers behind the router run too
        return rng.choice([OPEN + "zones", OPEN + "buckets/web", OPEN + "buckets/api",
                           OPEN + "buckets/web/fz-%d" % rng.randrange(40),
                           OPEN + "buckets/api/fz-%d" % rng.randrange(40),
                           OPEN + "buckets/web?limit=%d" % rng.randrange(1, 50)])
    base = rng.choice([OPEN, OPEN, OPEN, BASE, "/rl-open", "/rl-open//", "/api/"])
    if rng.random() < 0.5:
        segs = ["buckets", rng.choice(["api", "web", "nosuch", "", "%61pi"])]
        if rng.random() < 0.6:
            segs.append(rng.choice(SEGMENTS + ["k%d" % rng.randrange(20)]))
    else:
        segs = [rng.choice(SEGMENTS) for _ in range(rng.randrange(0, 5))]
    path = base + "/".join(segs)
    if rng.random() < 0.2:
        path += "?" + rng.choice(["limit=%d" % rng.randrange(-2, 1500), "after=%ff",
                                  "limit=3&after=k1", "limit=", "after=" + "z" * 400])
    return path


def random_json(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 1, 2 ** 63, -2 ** 63, 10 ** 30, 1.5, 1e308])
    if kind == 2:
        return rng.choice(["10r/s", "0r/s", "1r/ms", "999999999999999r/d", "r/s", "", "1r/0s",
                           "\u0000", "\ud83d\ude00", "x" * rng.randrange(0, 600)])
    if kind == 3:
        return "k%d" % rng.randrange(30)
    if kind == 4:
        return rng.choice(["key", "rate", "burst"])
    if kind in (5, 6):
        keys = rng.sample(["key", "rate", "burst", "zone", "tokens", "x", ""], rng.randrange(0, 5))
        return {k: random_json(rng, depth + 1) for k in keys}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]


def random_body(rng):
    c = rng.randrange(10)
    if c < 4:
        return json.dumps({"key": "fz-%d" % rng.randrange(40),
                           "rate": rng.choice(["1r/s", "10r/m", "0r/s", "5r/30s", "bad"]),
                           "burst": rng.choice([0, 1, 5, -1, 2.5, None, "7"])}).encode()
    if c < 6:
        return json.dumps(random_json(rng)).encode()
    if c == 6:
        s = json.dumps(random_json(rng)).encode()
        return s[:rng.randrange(len(s) + 1)]
    if c == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
    if c == 8:
        d = rng.randrange(1, 3000)
        return b"[" * d + b"]" * rng.randrange(d + 1)
    return rng.choice([b'{"key":"\\ud800\\udc00","rate":"1r/s"}', b'{"key":"\\u0000"}',
                       b'{"key":"a","key":"b","rate":"1r/s"}', b"\xef\xbb\xbf{}",
                       b'{"rate":"1r/s","burst":00012}', b'{"burst":-0}', b" " * 4200,
                       b'{"key":"' + b"\\u00e9" * 200 + b'","rate":"1r/s"}'])


def garbled_raw(rng):
    """Bytes that are not always a well-formed HTTP request."""
    c = rng.randrange(8)
    path = random_path(rng).encode("latin-1")
    if c == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
    if c == 1:
        return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Bad: \x00\x01\r\n\r\n"
    if c == 2:
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}")
    if c == 3:
        body = random_body(rng)
        return (b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + rng.choice([b"zz\r\n", b"%x\r\n" % len(body)]) + body + b"\r\n0\r\n\r\n")
    if c == 4:
        body = random_body(rng)
        # Content-Length larger than the body: the half-close ends it
        return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % (len(body) + rng.randrange(1, 100)) + body)
    if c == 5:
        return b"GET " + path + b" HTTP/9.9\r\n\r\n"
    if c == 6:
        return (b"DELETE " + path + b" HTTP/1.1\r\nHost: x\r\n"
                + b"X-Long: " + b"a" * rng.randrange(1, 9000) + b"\r\n\r\n")
    return (rng.choice(METHODS).encode() + b" " + path + b" HTTP/1.0\r\nAuthorization: Bearer "
            + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(0, 40))) + b"\r\n\r\n")


def one_crud(port, rng, stats):
    """A well-formed API call on a small set of keys, so that creates,
    conflicts, updates and deletes happen in between the garbage."""
    zone = rng.choice(["api", "web"])
    key = "fz-%d" % rng.randrange(15)
    op = rng.randrange(5)
    if op == 0:
        method, path = "POST", bucket_url(zone, base=OPEN)
        body = {"key": key, "rate": rng.choice(["1r/s", "10r/m", "0r/s", "5r/30s"])}
    elif op == 1:
        method, path = "PUT", bucket_url(zone, key, base=OPEN)
        body = {"rate": "%dr/m" % rng.randrange(0, 100), "burst": rng.randrange(0, 50)}
    elif op == 2:
        method, path, body = "DELETE", bucket_url(zone, key, base=OPEN), None
    elif op == 3:
        method, path, body = "GET", bucket_url(zone, key, base=OPEN), None
    else:
        method, path, body = "GET", bucket_url(zone, base=OPEN) + "?limit=5", None
    r = request(port, method, path, body, token=None)
    stats.append(("http", r.status, method, path))


def one_garbled(port, rng, stats):
    if rng.random() < 0.2:
        one_crud(port, rng, stats)
        return
    if rng.random() < 0.65:
        method = rng.choice(METHODS)
        # http.client takes ASCII only: raw bytes go through garbled_raw()
        path = "".join(c if ord(c) < 128 else "%%%02X" % ord(c) for c in random_path(rng))
        body = random_body(rng) if rng.random() < 0.7 else None
        headers = {"Connection": "close"}
        r = rng.random()
        if r < 0.3:
            headers["Authorization"] = "Bearer " + TOKEN
        elif r < 0.4:
            headers["Authorization"] = "Bearer " + "x" * rng.randrange(0, 300)
        if rng.random() < 0.2:
            headers["Content-Type"] = rng.choice(["text/plain", "application/json; charset=x",
                                                  "\u00e9".encode().decode("latin-1")])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            resp.read()
            stats.append(("http", resp.status, method, path))
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as e:
            stats.append(("http", "closed:%s" % type(e).__name__, method, path))
        finally:
            conn.close()
        return
    data = garbled_raw(rng)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = read_all(s)
    bad_version = b" HTTP/9.9\r\n" in data
    if resp.endswith(b"<TIMEOUT>"):
        stats.append(("raw", "timeout", data[:80], bad_version))
    elif resp.startswith(b"HTTP/"):
        stats.append(("raw", int(resp[9:12]), data[:80], bad_version))
    else:
        stats.append(("raw", "closed", data[:80], bad_version))


def test_garbled_requests(nodes, postgres):
    a, b = nodes()
    workers = {n: sorted(n.workers()) for n in (a, b)}
    total, threads = 1200, 4
    stats = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def run(i):
        rng = random.Random(1000 + i)
        local = []
        for j in range(total // threads):
            if time.monotonic() > deadline:
                break
            try:
                one_garbled((a if j % 2 else b).port, rng, local)
            except Exception as e:          # noqa: BLE001 - counted, reported below
                local.append(("error", repr(e), "", ""))
        with lock:
            stats.extend(local)
    ts = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    assert not any(t.is_alive() for t in ts)
    assert len(stats) >= 1000, len(stats)
    # 505 is nginx's own answer to "HTTP/9.9", before any module runs
    server_errors = [s for s in stats if isinstance(s[1], int) and s[1] >= 500
                     and not (s[1] == 505 and s[3] is True)]
    assert not server_errors, server_errors[:20]
    timeouts = [s for s in stats if s[1] == "timeout"]
    assert not timeouts, timeouts[:10]
    errors = [s for s in stats if s[0] == "error"]
    assert not errors, errors[:10]
    codes = sorted({s[1] for s in stats if isinstance(s[1], int)})
    print("\n%d requests, statuses %s" % (len(stats), codes))
    assert {200, 201, 204, 400, 404, 405, 409} <= set(codes), codes
    for n in (a, b):
        assert n.proc.poll() is None
        assert sorted(n.workers()) == workers[n], "a worker was replaced (crash?)"
        assert not n.error_lines(r"exited on signal|\[emerg\]")
    # still serving, and PostgreSQL still takes writes through both nodes
    key = unique_key()
    assert request(a.port, "POST", bucket_url("api"), {"key": key, "rate": "1r/m",
                                                       "burst": 2}).status == 201
    wait_limit(b, key, "2", timeout=1.0)
    assert request(b.port, "DELETE", bucket_url("api", key)).status == 204
