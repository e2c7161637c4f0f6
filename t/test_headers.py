"""Response headers (contract section "Response headers"): the fields of
draft-ietf-httpapi-ratelimit-headers-11, checked by a strict Structured
Fields (RFC 9651) parser, and X-RateLimit-*, Retry-After."""

import re
import string
import time

import pytest

from conftest import loc, redis_conf, sha1_hex, unique_key, wait_for
from test_degraded import METRICS, degraded_nginx, live_nodes
from test_faults import faketime_lib

HEADERS = ["RateLimit-Policy", "RateLimit", "X-RateLimit-Limit",
           "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"]


@pytest.fixture(params=["redis", "local"])
def backend(request):
    return request.param


def hdrs(r):
    return {h: r.h(h) for h in HEADERS}


def one_zone(nginx_factory, redis, name, zone, limit, backend, locations=None):
    """A started nginx with zone ZONE of `limit` ("rate=... burst=..."),
    applied by /l/ unless other locations are given."""
    return nginx_factory(name, http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=%s:1m %s backend=%s;" % (zone, limit, backend),
    ], locations=locations or [loc("/l/", "rate_limit zone=%s" % zone)]).start()


# --------------------------------------------------------------------------
# Structured Fields, RFC 9651 section 4.2, for the List fields of the draft


class SFError(ValueError):
    pass


class SFParser:
    """Parses a whole field value as an sf-list, exactly as RFC 9651 4.2
    says: any deviation raises SFError.  Members are (value, params), with
    value a list of (value, params) for an inner list; strings are str,
    tokens Token, byte sequences bytes."""

    TCHAR = set("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)

    def __init__(self, text):
        self.s = text
        self.i = 0

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def take(self):
        c = self.peek()
        if not c:
            raise SFError("unexpected end in %r" % self.s)
        self.i += 1
        return c

    def skip(self, chars):
        while self.peek() and self.peek() in chars:
            self.i += 1

    def parse_list(self):
        self.skip(" ")
        members = []
        while self.i < len(self.s):
            members.append(self.item_or_inner_list())
            self.skip(" \t")
            if self.i == len(self.s):
                return members
            if self.take() != ",":
                raise SFError("expected ',' at %d in %r" % (self.i - 1, self.s))
            self.skip(" \t")
            if self.i == len(self.s):
                raise SFError("trailing ',' in %r" % self.s)
        return members

    def item_or_inner_list(self):
        if self.peek() == "(":
            self.take()
            inner = []
            while True:
                self.skip(" ")
                if self.peek() == ")":
                    self.take()
                    return inner, self.params()
                inner.append((self.bare_item(), self.params()))
                if self.peek() not in (" ", ")"):
                    raise SFError("bad inner list in %r" % self.s)
        return self.bare_item(), self.params()

    def params(self):
        out = {}
        while self.peek() == ";":
            self.take()
            self.skip(" ")
            key = self.key()
            value = True
            if self.peek() == "=":
                self.take()
                value = self.bare_item()
            out[key] = value
        return out

    def key(self):
        c = self.peek()
        if not (c in string.ascii_lowercase or c == "*"):
            raise SFError("bad key at %d in %r" % (self.i, self.s))
        start = self.i
        self.skip(string.ascii_lowercase + string.digits + "_-.*")
        return self.s[start:self.i]

    def bare_item(self):
        c = self.peek()
        if c and c in "-" + string.digits:
            return self.number()
        if c == '"':
            return self.string()
        if c == "*" or (c and c in string.ascii_letters):
            return self.token()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            self.take()
            b = self.take()
            if b not in "01":
                raise SFError("bad boolean in %r" % self.s)
            return b == "1"
        if c == "@":
            self.take()
            n = self.number()
            if not isinstance(n, int):
                raise SFError("bad date in %r" % self.s)
            return ("date", n)
        raise SFError("bad bare item at %d in %r" % (self.i, self.s))

    def number(self):
        m = re.compile(r"-?[0-9]+(\.[0-9]*)?").match(self.s, self.i)
        if not m:
            raise SFError("bad number at %d in %r" % (self.i, self.s))
        text = m.group(0)
        self.i = m.end()
        digits = text.lstrip("-")
        if "." not in digits:
            if len(digits) > 15:
                raise SFError("integer too long in %r" % self.s)
            return int(text)
        whole, frac = digits.split(".")
        if len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise SFError("bad decimal in %r" % self.s)
        return float(text)

    def string(self):
        self.take()
        out = []
        while True:
            c = self.take()
            if c == "\\":
                c = self.take()
                if c not in '"\\':
                    raise SFError("bad escape in %r" % self.s)
                out.append(c)
            elif c == '"':
                return "".join(out)
            elif not " " <= c <= "~":
                raise SFError("bad string character %r in %r" % (c, self.s))
            else:
                out.append(c)

    def token(self):
        start = self.i
        self.take()
        while self.peek() and (self.peek() in self.TCHAR or self.peek() in ":/"):
            self.i += 1
        return Token(self.s[start:self.i])

    def byte_sequence(self):
        import base64
        self.take()
        end = self.s.find(":", self.i)
        if end < 0:
            raise SFError("unterminated byte sequence in %r" % self.s)
        data = self.s[self.i:end]
        if not re.fullmatch(r"[A-Za-z0-9+/=]*", data):
            raise SFError("bad byte sequence in %r" % self.s)
        self.i = end + 1
        return base64.b64decode(data + "=" * (-len(data) % 4))


class Token(str):
    pass


def sf_list(value):
    return SFParser(value).parse_list()


def draft_items(value, required, optional=()):
    """The members of a RateLimit-Policy or RateLimit value, checked as the
    draft's section 3 or 4 require: each an Item (no inner list) whose value
    is a String, with the required parameters, each a non-negative Integer
    ("w" positive), and no other parameter.  Returns [(name, {param: int})]."""
    out = []
    for value_, params in sf_list(value):
        assert not isinstance(value_, list), "an inner list in %r" % value
        assert type(value_) is str, "policy name not an sf-string in %r" % value
        assert set(required) <= set(params) <= set(required) | set(optional), value
        for k, v in params.items():
            assert type(v) is int and v >= 0, "%s=%r in %r" % (k, v, value)
        assert params.get("w", 1) > 0, value
        out.append((value_, params))
    return out


def policies(r):
    return draft_items(r.h("RateLimit-Policy"), ("q", "w"))


def service_limit(r):
    """The RateLimit field: this module sends one item, the closest limit."""
    items = draft_items(r.h("RateLimit"), ("r",), ("t",))
    assert len(items) == 1, r.h("RateLimit")
    return items[0]


def test_sf_parser_is_strict():
    assert sf_list('"a";q=5;w=300, "b";q=1;w=2') == [("a", {"q": 5, "w": 300}),
                                                    ("b", {"q": 1, "w": 2})]
    assert sf_list('"x\\"y";r=0') == [('x"y', {"r": 0})]
    assert sf_list('tok;a, (1 2);b=?1') == [(Token("tok"), {"a": True}),
                                           ([(1, {}), (2, {})], {"b": True})]
    for bad in ('"a";q=5,', '"a" "b"', '"a";Q=1', '"a', '"a";q=1234567890123456',
                '"a\\x"', '"a";q=5;;w=1', '"\x01"', ',"a"', '"a";q=1.2345'):
        with pytest.raises(SFError):
            sf_list(bad)
    with pytest.raises(AssertionError):
        draft_items("tok;q=1;w=1", ("q", "w"))         # a token, not a string
    with pytest.raises(AssertionError):
        draft_items('"a";q=1;w=0', ("q", "w"))
    with pytest.raises(AssertionError):
        draft_items('("a");q=1;w=1', ("q", "w"))


def test_header_values_allow_and_reject(nginx_factory, redis, backend):
    n = one_zone(nginx_factory, redis, "h", "z", "rate=1r/m burst=5", backend)
    key = unique_key()
    for i in range(5):
        r = n.get("/l/x", key=key)
        remaining, reset = 4 - i, 60 * (i + 1)
        assert r.status == 200
        # t: the next token comes in a minute, whatever the bucket lacks
        assert hdrs(r) == {
            "RateLimit-Policy": '"z";q=5;w=300',
            "RateLimit": '"z";r=%d;t=60' % remaining,
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "Retry-After": None,
        }, "request %d" % (i + 1)
    for _ in range(2):
        r = n.get("/l/x", key=key)
        assert r.status == 429
        assert hdrs(r) == {
            "RateLimit-Policy": '"z";q=5;w=300',
            "RateLimit": '"z";r=0;t=60',
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "300",
            "Retry-After": "60",
        }


@pytest.mark.parametrize("rate,burst,policy_q,policy_w,reset1", [
    ("10r/s", 5, 10, 1, 1),       # ceil(5 * 1 / 10) = 1 (min 1): 10 in it; 100 ms -> 1
    ("5r/30s", 10, 10, 60, 6),    # ceil(10 * 30 / 5) = 60; 6 s per token
    ("1r/d", 2, 2, 172800, 86400),
    ("3r/500ms", 3, 6, 1, 1),     # ceil(3 * 0.5 / 3) = 1 (0.5 -> 1): 6 in it
    ("1r/h", 7, 7, 25200, 3600),
    ("10r/s", 15, 20, 2, 1),      # 1.5 s to refill -> 2 s, which refill 20
])
def test_policy_window_and_reset(nginx_factory, redis, backend, rate, burst, policy_q,
                                 policy_w, reset1):
    n = one_zone(nginx_factory, redis, "hw", "win", "rate=%s burst=%d" % (rate, burst),
                 backend)
    r = n.get("/l/x", key=unique_key())
    assert r.status == 200
    assert hdrs(r) == {
        "RateLimit-Policy": '"win";q=%d;w=%d' % (policy_q, policy_w),
        "RateLimit": '"win";r=%d;t=%d' % (burst - 1, reset1),
        "X-RateLimit-Limit": str(burst),
        "X-RateLimit-Remaining": str(burst - 1),
        "X-RateLimit-Reset": str(reset1),
        "Retry-After": None,
    }


def test_headers_off(nginx_factory, redis, backend):
    n = nginx_factory("hoff", http=[redis_conf(redis),
                                    "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1 "
                                    "backend=%s;" % backend],
                      locations=[loc("/off/", "rate_limit zone=z", "rate_limit_headers off"),
                                 loc("/on/", "rate_limit zone=z")]).start()
    key = unique_key()
    r1, r2 = n.get("/off/x", key=key), n.get("/off/x", key=key)
    assert (r1.status, r2.status) == (200, 429)
    for r in (r1, r2):
        assert hdrs(r) == dict.fromkeys(HEADERS), r.describe()
    # the same zone with headers on (the default) still describes itself
    r3 = n.get("/on/x", key=key)
    assert r3.status == 429 and r3.h("Retry-After") == "60"


def test_headers_off_inherited_from_server(nginx_factory, redis):
    n = nginx_factory("hoff2", http=[redis_conf(redis),
                                     "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=1;"],
                      server="rate_limit_headers off;",
                      locations=[loc("/l/", "rate_limit zone=z")]).start()
    key = unique_key()
    for r in (n.get("/l/x", key=key), n.get("/l/x", key=key)):
        assert hdrs(r) == dict.fromkeys(HEADERS), r.describe()


def two_zone_nginx(nginx_factory, redis, backend):
    return nginx_factory("multi", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=big:1m rate=1r/m burst=10 backend=%s;" % backend,
        "rate_limit_zone $http_x_key zone=small:1m rate=1r/m burst=3 backend=%s;" % backend,
    ], locations=[
        loc("/both/", "rate_limit zone=big", "rate_limit zone=small"),
        loc("/both-rev/", "rate_limit zone=small", "rate_limit zone=big"),
        loc("/big/", "rate_limit zone=big"),
        loc("/small/", "rate_limit zone=small"),
    ]).start()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_multiple_limits_describe_closest(nginx_factory, redis, backend, path):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    # every policy, in the order of the location's lines
    policy = {"/both/": '"big";q=10;w=600, "small";q=3;w=180',
              "/both-rev/": '"small";q=3;w=180, "big";q=10;w=600'}[path]
    rs = [n.get(path + "x", key=key) for _ in range(3)]
    assert [r.status for r in rs] == [200] * 3
    for i, r in enumerate(rs):
        # small: 3 - (i+1) left; big: 10 - (i+1) left; small is closer
        assert r.h("RateLimit-Policy") == policy
        assert r.h("RateLimit") == '"small";r=%d;t=60' % (2 - i)
        assert r.h("X-RateLimit-Limit") == "3"
        assert r.h("X-RateLimit-Remaining") == str(2 - i)
        assert r.h("Retry-After") is None
    r = n.get(path + "x", key=key)
    assert r.status == 429
    assert hdrs(r) == {
        "RateLimit-Policy": policy,
        "RateLimit": '"small";r=0;t=60',
        "X-RateLimit-Limit": "3",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "180",
        "Retry-After": "60",
    }


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_rejected_request_takes_no_token_from_other_zone(nginx_factory, redis, backend, path):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    assert n.statuses(path + "x", key, 6) == [200] * 3 + [429] * 3
    # big: 3 taken by the allowed requests, none by the 3 rejected ones
    r = n.get("/big/x", key=key)
    assert r.status == 200
    assert r.h("X-RateLimit-Remaining") == "6", r.describe()
    assert r.h("RateLimit-Policy") == '"big";q=10;w=600'


def test_rejected_by_big_takes_nothing_from_small(nginx_factory, redis, backend):
    n = two_zone_nginx(nginx_factory, redis, backend)
    key = unique_key()
    # drain big through its own location (10 tokens)
    assert n.statuses("/big/x", key, 11) == [200] * 10 + [429]
    r = n.get("/both/x", key=key)
    assert r.status == 429
    assert r.h("RateLimit-Policy") == '"big";q=10;w=600, "small";q=3;w=180'
    assert r.h("RateLimit") == '"big";r=0;t=60'
    assert r.h("Retry-After") == "60"
    # small was untouched by the rejection
    r = n.get("/small/x", key=key)
    assert r.status == 200 and r.h("X-RateLimit-Remaining") == "2", r.describe()


def mixed_nginx(nginx_factory, redis, local_burst, redis_burst, on_failure="open",
                redis_line=None):
    return nginx_factory("mixed", http=[
        redis_line or redis_conf(redis),
        "rate_limit_zone $http_x_key zone=loc:1m rate=1r/m burst=%d backend=local;" % local_burst,
        "rate_limit_zone $http_x_key zone=red:1m rate=1r/m burst=%d backend=redis "
        "on_failure=%s;" % (redis_burst, on_failure),
    ], locations=[
        loc("/both/", "rate_limit zone=loc", "rate_limit zone=red"),
        loc("/both-rev/", "rate_limit zone=red", "rate_limit zone=loc"),
        loc("/loc/", "rate_limit zone=loc"),
        loc("/red/", "rate_limit zone=red"),
    ]).start()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_mixed_backends_redis_rejects_local_keeps_tokens(nginx_factory, redis, path):
    n = mixed_nginx(nginx_factory, redis, local_burst=10, redis_burst=2)
    key = unique_key()
    rs = [n.get(path + "x", key=key) for _ in range(5)]
    assert [r.status for r in rs] == [200, 200, 429, 429, 429]
    assert rs[2].h("RateLimit") == '"red";r=0;t=60'
    assert [name for name, _ in policies(rs[2])] == \
        {"/both/": ["loc", "red"], "/both-rev/": ["red", "loc"]}[path]
    r = n.get("/loc/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "7"), \
        "local tokens taken by requests Redis rejected: %s" % r.describe()


@pytest.mark.parametrize("path", ["/both/", "/both-rev/"])
def test_mixed_backends_local_rejects_redis_keeps_tokens(nginx_factory, redis, path):
    n = mixed_nginx(nginx_factory, redis, local_burst=2, redis_burst=10)
    key = unique_key()
    rs = [n.get(path + "x", key=key) for _ in range(5)]
    assert [r.status for r in rs] == [200, 200, 429, 429, 429]
    assert rs[2].h("RateLimit") == '"loc";r=0;t=60'
    assert [name for name, _ in policies(rs[2])] == \
        {"/both/": ["loc", "red"], "/both-rev/": ["red", "loc"]}[path]
    r = n.get("/red/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "7"), \
        "Redis tokens taken by requests the local zone rejected: %s" % r.describe()
    name = "rlt:red:%s" % key
    # nothing else but the node registry
    assert [k for k in redis.keys() if k != "rlt:nodes"] == [name]


def test_mixed_backends_failed_closed_keeps_local_tokens(nginx_factory, redis):
    """FAILED_CLOSED rejects the request, so (all-or-nothing) the local zone
    it also passed through keeps its token."""
    redis.stop()
    n = mixed_nginx(nginx_factory, redis, local_burst=5, redis_burst=5, on_failure="closed",
                    redis_line="rate_limit_redis 127.0.0.1:%d timeout=50ms;" % redis.port)
    key = unique_key()
    rs = [n.get("/both/x", key=key) for _ in range(3)]
    assert [(r.status, r.rls) for r in rs] == [(429, "FAILED_CLOSED")] * 3
    r = n.get("/loc/x", key=key)
    assert (r.status, r.h("X-RateLimit-Remaining")) == (200, "4"), r.describe()


def test_retry_after_at_least_one_second(nginx_factory, redis, backend):
    n = one_zone(nginx_factory, redis, "ra", "fast", "rate=10r/s burst=1", backend)
    key = unique_key()
    r1, r2 = n.get("/l/x", key=key), n.get("/l/x", key=key)
    if r2.status == 200:          # 100 ms passed between the two: try again
        r1, r2 = n.get("/l/x", key=key), n.get("/l/x", key=key)
    assert (r1.status, r2.status) == (200, 429)
    assert r2.h("Retry-After") == "1"
    assert r2.h("RateLimit") == '"fast";r=0;t=1'
    assert r2.h("X-RateLimit-Reset") == "1"


# --------------------------------------------------------------------------
# draft-11: "t" is the time within which no more than "r" can be used


def test_t_is_the_next_token_not_the_full_bucket(nginx_factory, redis, backend):
    n = one_zone(nginx_factory, redis, "tnext", "z", "rate=10r/m burst=5", backend)
    key = unique_key()
    rs = [n.get("/l/x", key=key) for _ in range(6)]
    assert [r.status for r in rs] == [200] * 5 + [429]
    for i, r in enumerate(rs[:5]):
        # a token every 6 s: after 5 of 5 the bucket is full in 30 s, but
        # the client may use one more in 6 s
        assert service_limit(r) == ("z", {"r": 4 - i, "t": 6}), r.describe()
        assert r.h("X-RateLimit-Reset") == str(6 * (i + 1))
    assert service_limit(rs[5]) == ("z", {"r": 0, "t": 6})
    assert rs[5].h("Retry-After") == "6"


def test_t_counts_the_cost(nginx_factory, redis, backend):
    n = one_zone(nginx_factory, redis, "tcost", "z", "rate=10r/m burst=10", backend,
                 [loc("/c3/", "rate_limit zone=z cost=3"), loc("/c1/", "rate_limit zone=z")])
    key = unique_key()
    rs = [n.get("/c3/x", key=key) for _ in range(4)]
    assert [r.status for r in rs] == [200, 200, 200, 429]
    # 3 tokens of 6 s come in 18 s; the bucket is full in 18, 36, 54 s
    for i, r in enumerate(rs[:3]):
        assert service_limit(r) == ("z", {"r": 7 - 3 * i, "t": 18}), r.describe()
        assert r.h("X-RateLimit-Reset") == str(18 * (i + 1))
    # 1 token left, 2 more are due in 12 s: "t" and Retry-After agree
    assert service_limit(rs[3]) == ("z", {"r": 1, "t": 12}), rs[3].describe()
    assert rs[3].h("Retry-After") == "12"
    # the last token, at cost 1: the next in 6 s
    r = n.get("/c1/x", key=key)
    assert r.status == 200
    assert service_limit(r) == ("z", {"r": 0, "t": 6}), r.describe()
    # a cost of 3 with 5 tokens left of 5: the bucket is full sooner than
    # 3 more could come
    n2 = one_zone(nginx_factory, redis, "tcost2", "z5", "rate=10r/m burst=5", backend,
                  [loc("/c3/", "rate_limit zone=z5 cost=3")])
    r = n2.get("/c3/x", key=unique_key())
    assert service_limit(r) == ("z5", {"r": 2, "t": 18}), r.describe()


# --------------------------------------------------------------------------
# RateLimit-Policy lists every policy of the request, in the lines' order


def test_policy_lists_every_limit_in_order(nginx_factory, redis, backend):
    n = nginx_factory("plist", http=[
        redis_conf(redis),
        "rate_limit_zone $http_x_key zone=a:1m rate=1r/m burst=10 backend=%s;" % backend,
        "rate_limit_zone $http_x_key zone=b.x:1m rate=1r/m burst=3 backend=%s;" % backend,
        "rate_limit_zone $http_x_key zone=c-y_1:1m rate=1r/m burst=2 backend=%s;" % backend,
        "rate_limit_zone $http_x_other zone=d:1m rate=1r/m burst=5 backend=%s;" % backend,
    ], locations=[
        loc("/cab/", "rate_limit zone=c-y_1", "rate_limit zone=a", "rate_limit zone=b.x",
            "rate_limit zone=d"),
        loc("/bac/", "rate_limit zone=b.x", "rate_limit zone=a", "rate_limit zone=c-y_1"),
        loc("/b/", "rate_limit zone=b.x"),
    ]).start()
    want = {"c-y_1": {"q": 2, "w": 120}, "a": {"q": 10, "w": 600},
            "b.x": {"q": 3, "w": 180}, "d": {"q": 5, "w": 300}}
    key = unique_key()
    # c-y_1 is the closest (1 left), then b.x once drained elsewhere (it
    # rejects), while the list of policies stays as it was; d had no key
    # (no X-Other), so it is no policy of these requests
    r1 = n.get("/cab/x", key=key)
    assert n.statuses("/b/x", key, 2) == [200, 200]
    r2 = n.get("/cab/x", key=key)
    r3 = n.get("/cab/x", key=key)
    assert [r.status for r in (r1, r2, r3)] == [200, 429, 429]
    assert [service_limit(r) for r in (r1, r2, r3)] == [
        ("c-y_1", {"r": 1, "t": 60}), ("b.x", {"r": 0, "t": 60}), ("b.x", {"r": 0, "t": 60})]
    for r in (r1, r2, r3):
        assert policies(r) == [(z, want[z]) for z in ("c-y_1", "a", "b.x")], r.describe()
        assert r.h("RateLimit-Policy") == r1.h("RateLimit-Policy")
    assert r1.h("RateLimit-Policy") == '"c-y_1";q=2;w=120, "a";q=10;w=600, "b.x";q=3;w=180'
    # the order is the location's
    r = n.get("/bac/x", key=unique_key())
    assert [z for z, _ in policies(r)] == ["b.x", "a", "c-y_1"], r.describe()
    # a line whose key is there is a policy too, in its place
    key2 = unique_key()
    rs = [n.get("/cab/x", key=key2, headers={"X-Other": "o"}) for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429]
    for r in rs:
        assert policies(r) == [(z, want[z]) for z in ("c-y_1", "a", "b.x", "d")], r.describe()
    assert [service_limit(r)[0] for r in rs] == ["c-y_1"] * 3


# --------------------------------------------------------------------------
# a burst refilled within a second: the quota of the second advertised


@pytest.mark.parametrize("rate,burst,per_second", [("1000r/s", 10, 1000),
                                                   ("500r/100ms", 20, 5000)])
def test_sub_second_refill_does_not_understate_the_quota(nginx_factory, redis, backend,
                                                         rate, burst, per_second):
    n = one_zone(nginx_factory, redis, "fast", "f", "rate=%s burst=%d" % (rate, burst),
                 backend)
    r = n.get("/l/x", key=unique_key())
    [(name, params)] = policies(r)
    assert name == "f" and params["w"] == 1, r.describe()
    assert params["q"] >= per_second * params["w"], r.describe()
    assert params["q"] == per_second
    assert r.h("X-RateLimit-Limit") == str(burst)
    assert service_limit(r) == ("f", {"r": burst - 1, "t": 1})


# --------------------------------------------------------------------------
# degraded: what this node enforces while Redis is down


def test_degraded_headers_advertise_the_divided_limit(nginx_factory, redis):
    a = degraded_nginx(nginx_factory, redis, "hdega", burst=6).start()
    b = degraded_nginx(nginx_factory, redis, "hdegb", burst=6).start()
    for n in (a, b):
        wait_for(lambda: live_nodes(n) == 2, 5, interval=0.1, what="2 live nodes")
    key = unique_key()
    r = a.get("/l/x", key=key)
    assert (r.rls, r.h("RateLimit-Policy"), r.h("X-RateLimit-Limit")) == \
        ("PASSED", '"z";q=6;w=360', "6"), r.describe()
    redis.stop()
    key = unique_key()
    rs = [a.get("/l/x", key=key) for _ in range(4)]
    assert [(r.status, r.rls) for r in rs] == \
        [(200, "DEGRADED_LOCAL")] * 3 + [(429, "DEGRADED_LOCAL_REJECTED")], \
        [r.describe() for r in rs]
    # half of 6 each, a token every 2 minutes: 3 in 6 minutes
    for i, r in enumerate(rs):
        assert policies(r) == [("z", {"q": 3, "w": 360})], r.describe()
        assert r.h("X-RateLimit-Limit") == "3"
        assert r.h("X-RateLimit-Remaining") == str(max(2 - i, 0))
        assert service_limit(r) == ("z", {"r": max(2 - i, 0), "t": 120}), r.describe()
    assert rs[3].h("Retry-After") == "120"
    assert rs[2].h("X-RateLimit-Reset") == "360"


# --------------------------------------------------------------------------
# a cost that can never fit the client's burst


NOFIT_ZONES = ["rate_limit_zone $http_x_key zone=api:1m rate=1r/m burst=10 backend=%s;",
               "rate_limit_zone $http_x_key zone=web:1m rate=1r/m burst=10 backend=%s;"]
NOFIT_LINE = (r'rate_limit_zone "(\S+)": a request of cost 4 can never pass for the key '
              r'of SHA-1 ([0-9a-f]{40}), whose burst is 2 \(yaml limit\): it is rejected '
              r'without Retry-After')


def yaml_escape(key):
    """The inside of a YAML double-quoted scalar that reads as key."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else
                   "\\" + c if c in '"\\' else "\\x%02x" % ord(c) for c in key)


def nofit_nginx(nginx_factory, backend, keys, name="nofit", env=None, redis=None):
    n = nginx_factory(name, main="env FAKETIME;" if env else "")
    path = n.prefix / "limits.yaml"
    path.write_text("zones:\n" + "".join(
        "  %s:\n    clients:\n" % zone
        + "".join('      "%s": { rate: 1r/m, burst: 2 }\n' % yaml_escape(k) for k in keys)
        for zone in ("api", "web")))
    n.configure(http=([redis_conf(redis)] if redis else [])
                + ["rate_limit_policy_file %s;" % path]
                + [z % backend for z in NOFIT_ZONES],
                locations=[loc("/api/", "rate_limit zone=api cost=4"),
                           loc("/web/", "rate_limit zone=web cost=4"),
                           loc("/one/", "rate_limit zone=api")],
                listen_opts="reuseport")
    if env:
        n.env.update(env)
    return n.start()


def test_cost_above_the_burst_invites_no_retry(nginx_factory, redis, backend):
    key = unique_key("small")
    n = nofit_nginx(nginx_factory, backend, [key], redis=redis)
    for _ in range(3):
        r = n.get("/api/x", key=key)
        assert r.status == 429, r.describe()
        # no time would help: no Retry-After, no "t", no X-RateLimit-Reset
        assert hdrs(r) == {
            "RateLimit-Policy": '"api";q=2;w=120',
            "RateLimit": '"api";r=2',
            "X-RateLimit-Limit": "2",
            "X-RateLimit-Remaining": "2",
            "X-RateLimit-Reset": None,
            "Retry-After": None,
        }, r.describe()
        assert service_limit(r) == ("api", {"r": 2})
    # the same client at a cost that fits is served as usual
    r = n.get("/one/x", key=key)
    assert r.status == 200 and service_limit(r) == ("api", {"r": 1, "t": 60})
    # and other clients of the location, whose burst is the zone's 10
    r = n.get("/api/x", key=unique_key())
    assert r.status == 200 and service_limit(r) == ("api", {"r": 6, "t": 240})


def test_cost_above_the_burst_is_logged_once_a_minute(nginx_factory):
    """One line per zone and key a minute, across the node's workers.  The
    node's clocks run 10 times faster (libfaketime), so a minute is 6 s."""
    keys = [unique_key("small"), "bin\x01\"\\" + unique_key()]
    n = nofit_nginx(nginx_factory, "local", keys,
                    env={"LD_PRELOAD": faketime_lib(), "FAKETIME": "+0 x10"})
    t0 = time.monotonic()
    sent = []
    for _ in range(25):
        for key in keys:
            for zone in ("api", "web"):
                assert n.get("/%s/x" % zone, key=key).status == 429
                sent.append(key)
        pids = {rec["pid"] for rec in n.access_records()}
        if len(pids) == 2 and len(sent) >= 40:
            break
    elapsed = time.monotonic() - t0
    assert elapsed < 4, "too slow for a 6 s minute: %.1f s" % elapsed
    # both workers rejected such requests
    assert len({rec["pid"] for rec in n.access_records() if rec["status"] == 429}) == 2
    lines = n.error_lines(NOFIT_LINE)
    logged = sorted(re.search(NOFIT_LINE, line).groups() for line in lines)
    sha = [sha1_hex(k.encode("latin-1")) for k in keys]
    assert logged == sorted((z, h) for z in ("api", "web") for h in sha), lines
    assert all("[warn]" in line for line in lines)
    # the key itself is never written, escaped or not
    log = n.error_log()
    assert keys[0] not in log and keys[1][6:] not in log
    # a minute later, the next such request is logged again, once
    time.sleep(max(0.0, t0 + 6.5 - time.monotonic()))
    mark = n.log_mark()
    for _ in range(4):
        assert n.get("/api/x", key=keys[0]).status == 429
    again = n.error_lines(NOFIT_LINE, since=mark)
    assert [re.search(NOFIT_LINE, line).groups() for line in again] == [("api", sha[0])], again


def test_cost_above_the_burst_log_is_bounded(nginx_factory):
    """The keys named in a minute are remembered in the zone, 64 at most:
    beyond them one line a minute says that more came."""
    keys = [unique_key("many%d" % i) for i in range(70)]
    n = nofit_nginx(nginx_factory, "local", keys, name="nofitmany")
    for _ in range(2):
        for key in keys:
            assert n.get("/api/x", key=key).status == 429
    named = n.error_lines(NOFIT_LINE)
    assert len(named) == 64, len(named)
    assert len({re.search(NOFIT_LINE, line).group(2) for line in named}) == 64
    more = n.error_lines(r'rate_limit_zone "api": requests whose cost exceeds their burst '
                         r'came from more keys in the last minute than the log names')
    assert len(more) == 1, more


def test_cost_above_the_degraded_share_invites_no_retry(nginx_factory, redis):
    """burst=6 admits cost=4, but not the share of 3 that each of two nodes
    enforces while Redis is down."""
    nodes = [nginx_factory(name, http=[
        "rate_limit_redis 127.0.0.1:%d timeout=50ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=6 on_failure=local;",
    ], locations=[loc("/c4/", "rate_limit zone=z cost=4"), METRICS]).start()
        for name in ("hnofa", "hnofb")]
    for n in nodes:
        wait_for(lambda: live_nodes(n) == 2, 5, interval=0.1, what="2 live nodes")
    key = unique_key()
    r = nodes[0].get("/c4/x", key=key)
    assert (r.status, r.rls, r.h("X-RateLimit-Remaining")) == (200, "PASSED", "2")
    redis.stop()
    for _ in range(2):
        r = nodes[0].get("/c4/x", key=key)
        assert (r.status, r.rls) == (429, "DEGRADED_LOCAL_REJECTED"), r.describe()
        assert hdrs(r) == {
            "RateLimit-Policy": '"z";q=3;w=360',
            "RateLimit": '"z";r=3',
            "X-RateLimit-Limit": "3",
            "X-RateLimit-Remaining": "3",
            "X-RateLimit-Reset": None,
            "Retry-After": None,
        }, r.describe()
    lines = nodes[0].error_lines(r'rate_limit_zone "z": a request of cost 4 can never pass '
                                 r'for the key of SHA-1 %s, whose burst is 3 \(default limit, '
                                 r'divided among the live nodes while Redis is unreachable\)'
                                 % sha1_hex(key))
    assert len(lines) == 1, nodes[0].error_log()[-2000:]
