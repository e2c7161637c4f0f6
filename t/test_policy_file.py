"""Per-client limits from a YAML policy file (rate_limit_policy_file).

The file is read with the configuration (start, reload, nginx -t); its
errors fail `nginx -t` with `"rate_limit_policy_file" directive:
PATH:LINE:COL: message`.  Which limit applied is read from
X-RateLimit-Limit (the client's burst).
"""

import os
import re
import signal
import time

import pytest

from conftest import loc, unique_key, wait_for

ZONES = ["rate_limit_zone $http_x_key zone=api:1m rate=100r/s burst=100;",
         "rate_limit_zone $http_x_key zone=web:1m rate=50r/s;"]
LOCATIONS = [loc("/api/", "rate_limit zone=api"), loc("/web/", "rate_limit zone=web")]


def make(nginx_factory, text, name="yaml", zones=ZONES):
    n = nginx_factory(name)
    path = n.prefix / "limits.yaml"
    path.write_text(text)
    n.configure(http=["rate_limit_policy_file %s;" % path] + list(zones),
                locations=LOCATIONS)
    n.policy = path
    return n


def limit(n, key, path="/api/x"):
    return n.get(path, key=key).h("X-RateLimit-Limit")


def test_per_client_limits_apply(nginx_factory):
    alice, bob, carol, dave = (unique_key(x) for x in ("alice", "bob", "carol", "dave"))
    n = make(nginx_factory, """\
# per-client limits
zones:
  api:
    clients:
      %s: { rate: 1r/m, burst: 3 }
      %s:
        rate: 2r/m        # burst: the count of the rate
      "%s": { rate: 0r/s }
  web:
    clients:
      %s: { rate: 10r/s, burst: 0 }
""" % (alice, bob, carol, dave)).start()
    assert n.statuses("/api/x", alice, 4) == [200, 200, 200, 429]
    r = n.get("/api/x", key=alice)
    assert r.h("RateLimit-Policy") == '"api";q=3;w=180' and r.h("X-RateLimit-Limit") == "3"
    assert n.statuses("/api/x", bob, 3) == [200, 200, 429]
    # a key of one zone does not apply in another
    assert limit(n, alice, "/web/x") == "50"
    assert limit(n, unique_key()) == "100"
    # blocked clients: rate 0r/s, and burst 0
    for key, path, zone in ((carol, "/api/x", "api"), (dave, "/web/x", "web")):
        for _ in range(2):
            r = n.get(path, key=key)
            assert r.status == 429, r
            assert r.h("Retry-After") == "60"
            assert r.h("RateLimit-Policy") == '"%s";q=0;w=1' % zone
            assert r.h("X-RateLimit-Limit") == "0"
    # dave is blocked in web only
    assert n.get("/api/x", key=dave).status == 200


def test_utf8_and_long_keys(nginx_factory):
    utf8 = "cl\u00e9-\u65e5\u672c-" + unique_key()
    long_key = "x" * 300 + unique_key()
    n = make(nginx_factory, "zones:\n  api:\n    clients:\n"
             "      \"%s\": { rate: 1r/m, burst: 4 }\n"
             "      %s: { rate: 1r/m, burst: 5 }\n"
             "      '#hash': { rate: 1r/m, burst: 6 }\n" % (utf8, long_key)).start()
    raw = utf8.encode("utf-8").decode("latin-1")
    assert n.get("/api/x", headers={"X-Key": raw}).h("X-RateLimit-Limit") == "4"
    assert limit(n, long_key) == "5"
    assert limit(n, long_key[:-1]) == "100"
    assert limit(n, "#hash") == "6"


def test_key_of_4096_bytes_applies(nginx_factory):
    """The longest key PostgreSQL and the bucket API take: it applies to the
    request whose key it is (hashed as that request's key is)."""
    key = unique_key() + "y" * (4096 - 14)
    assert len(key) == 4096
    n = make(nginx_factory, HEAD + "      ? %s\n      : { rate: 1r/m, burst: 7 }\n"
             % key).start()
    assert limit(n, key) == "7"
    assert limit(n, key[:-1]) == "100"


def test_reload_with_changed_file(nginx_factory):
    k1, k2 = unique_key(), unique_key()
    n = make(nginx_factory, "zones:\n  api:\n    clients:\n      %s: { rate: 1r/m, burst: 3 }\n"
             % k1).start()
    assert limit(n, k1) == "3" and limit(n, k2) == "100"
    n.policy.write_text("zones:\n  api:\n    clients:\n      %s: { rate: 1r/m, burst: 8 }\n"
                        % k2)
    n.reload()
    assert limit(n, k1) == "100"
    assert limit(n, k2) == "8"


def test_reload_with_broken_file_keeps_old_limits(nginx_factory):
    key = unique_key()
    n = make(nginx_factory, "zones:\n  api:\n    clients:\n      %s: { rate: 1r/m, burst: 3 }\n"
             % key).start()
    old = set(n.workers())
    n.policy.write_text("zones:\n  api:\n    clients:\n      %s: { rate: 1r/m, burst: -1 }\n"
                        % key)
    # `nginx -s reload` reads the configuration first, and says what is wrong
    rc, out = n._ctl("-s", "reload")
    assert rc != 0 and "%s:4:44: expected burst" % n.policy in out, out
    # the master told directly (SIGHUP) refuses the new configuration
    mark = n.log_mark()
    os.kill(n.proc.pid, signal.SIGHUP)
    lines = wait_for(lambda: n.error_lines(r"\[emerg\].*rate_limit_policy_file", mark), 5.0,
                     what="the refused reload in the log")
    assert "%s:4:44:" % n.policy in lines[0], lines
    time.sleep(0.2)
    assert set(n.workers()) == old
    assert limit(n, key) == "3"


def test_empty_file_and_empty_document(nginx_factory):
    for text in ("", "---\n", "# nothing\n", "zones:\n  api:\n    clients: {}\n"):
        n = make(nginx_factory, text, name="empty")
        rc, out = n.test_config()
        assert rc == 0, (text, out)


def at(text, needle, occurrence=1):
    """LINE:COL (1-based) of the occurrence-th needle in text."""
    pos = -1
    for _ in range(occurrence):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return "%d:%d" % (line, col)


HEAD = "zones:\n  api:\n    clients:\n"

# (id, file text, the needle whose place is reported, a word of the message)
BAD = [
    ("syntax-flow", HEAD + "      k: { rate: 10r/s, burst: 20\n", "@5:1", "syntax error"),
    ("syntax-indent", "zones:\n  api:\n    clients:\n      k: { rate: 10r/s }\n     x: 1\n",
     "@5:6", "syntax error"),
    ("syntax-tab", "zones:\n\tapi: {}\n", "@2:1", "syntax error"),
    ("top-level", "zone:\n  api: {}\n", "zone", "unknown top-level key"),
    ("zones-list", "zones:\n  - api\n", "- api", "mapping"),
    ("zone-field", "zones:\n  api:\n    client: {}\n", "client", "unknown zone field"),
    ("client-field", HEAD + "      k: { rate: 10r/s, brust: 20 }\n", "brust",
     "unknown client field"),
    ("no-rate", HEAD + "      k: { burst: 20 }\n", "k:", "expected a rate"),
    ("bad-rate", HEAD + "      k: { rate: 10r/x }\n", "10r/x", "bad rate"),
    ("bad-rate-word", HEAD + "      k: { rate: fast }\n", "fast", "bad rate"),
    ("rate-list", HEAD + "      k: { rate: [1, 2] }\n", "[1, 2]", "rate"),
    ("negative-burst", HEAD + "      k: { rate: 10r/s, burst: -1 }\n", "-1", "burst"),
    ("quoted-burst", HEAD + "      k: { rate: 10r/s, burst: \"20\" }\n", "\"20\"", "burst"),
    ("float-burst", HEAD + "      k: { rate: 10r/s, burst: 2.5 }\n", "2.5", "burst"),
    ("huge-burst", HEAD + "      k: { rate: 10r/s, burst: 99999999999999999999 }\n",
     "99999999999999999999", "burst"),
    ("dup-client", HEAD + "      k: { rate: 10r/s }\n      k: { rate: 1r/s }\n", ("k:", 2),
     "duplicate client"),
    ("dup-zone", "zones:\n  api: {}\n  api: {}\n", ("api", 2), "duplicate zone"),
    ("empty-key", HEAD + "      \"\": { rate: 10r/s }\n", "\"\"", "empty"),
    ("client-scalar", HEAD + "      k: 10r/s\n", "10r/s", "mapping"),
    # the zone's name
    ("unknown-zone", "zones:\n  nosuch:\n    clients:\n      k: { rate: 10r/s }\n", "@2:3",
     "unknown zone"),
    ("unknown-empty-zone", "zones:\n  nosuch:\n    clients: {}\n", "nosuch",
     "unknown zone"),
    ("two-documents", "zones: {}\n---\nzones: {}\n", "---", "one YAML document"),
    # names outside [A-Za-z0-9_.-]{1,64}, which no rate_limit_zone can have
    ("zone-space", "zones:\n  \"a b\":\n    clients: {}\n", "\"a b\"", "invalid zone name"),
    ("zone-quote", "zones:\n  'a\"b':\n    clients: {}\n", "'a", "invalid zone name"),
    ("zone-newline", "zones:\n  api: {}\n  \"a\\nb\":\n    clients: {}\n", "\"a",
     "invalid zone name"),
    ("zone-utf8", "zones:\n  caf\u00e9:\n    clients: {}\n", "caf", "invalid zone name"),
    ("zone-65", "zones:\n  %s:\n    clients: {}\n" % ("z" * 65), "z" * 65,
     "invalid zone name"),
    # keys: PostgreSQL's and the bucket API's limit (YAML wants "? " past 1024)
    ("key-4097", HEAD + "      ? %s\n      : { rate: 1r/s }\n" % ("k" * 4097), "k" * 4097,
     "4097 bytes long, the most is 4096"),
]


def _bad_params():
    for b in BAD:
        if hasattr(b, "marks"):         # a pytest.param
            yield pytest.param(*b.values[1:], marks=b.marks, id=b.values[0])
        else:
            yield pytest.param(*b[1:], id=b[0])


@pytest.mark.parametrize("text,needle,word", list(_bad_params()))
def test_bad_file_fails_nginx_t(nginx_factory, text, needle, word):
    n = make(nginx_factory, text, name="bad")
    rc, out = n.test_config()
    assert rc != 0, out
    m = re.search(r'"rate_limit_policy_file" directive: (\S+?):(\d+):(\d+): (.*)', out)
    assert m, out
    assert m.group(1) == str(n.policy), out
    assert word.lower() in m.group(4).lower(), out
    if isinstance(needle, str) and needle.startswith("@"):
        want = needle[1:].split("|")
    else:
        want = [at(text, *(needle if isinstance(needle, tuple) else (needle,)))]
    assert "%s:%s" % (m.group(2), m.group(3)) in want, out
    assert "test failed" in out


def test_policy_larger_than_its_zone_fails_nginx_t(nginx_factory):
    """The entries live in the zone's shared memory: a zone without room
    for them fails the start, as a mistake in nginx.conf does."""
    clients = "".join("      key-%d: { rate: 1r/m }\n" % i for i in range(1000))
    n = make(nginx_factory, "zones:\n  api:\n    clients:\n" + clients,
             zones=["rate_limit_zone $http_x_key zone=api:32k rate=100r/s;"] + ZONES[1:])
    rc, out = n.test_config()
    assert rc != 0, out
    assert 'rate_limit_zone "api" has no room for the 1000 limits of the policy file' in out, out


def test_reload_of_a_zone_full_of_buckets(nginx_factory):
    """Buckets fill a zone and are forgotten as it needs room: a reload
    that brings a policy file's entries takes that room from them."""
    zones = ["rate_limit_zone $http_x_key zone=api:32k rate=1r/m burst=5 backend=local;"] + ZONES[1:]
    n = make(nginx_factory, "", zones=zones).start()
    for i in range(600):
        assert n.get("/api/x", key="fill-%d" % i).status == 200
    key = unique_key()
    n.policy.write_text("zones:\n  api:\n    clients:\n      %s: { rate: 1r/m, burst: 3 }\n" % key)
    n.reload()
    assert limit(n, key) == "3"
    assert limit(n, unique_key()) == "5"


def test_missing_file_fails(nginx_factory):
    n = make(nginx_factory, "")
    n.policy.unlink()
    rc, out = n.test_config()
    assert rc != 0
    assert '"rate_limit_policy_file" directive: %s: cannot open' % n.policy in out, out


def test_duplicate_directive_fails(nginx_factory):
    n = make(nginx_factory, "")
    n.configure(http=["rate_limit_policy_file %s;" % n.policy] * 2 + ZONES, locations=LOCATIONS)
    rc, out = n.test_config()
    assert rc != 0 and "is duplicate" in out, out
