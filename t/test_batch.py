"""Requests that reach a worker in the same pass of its event loop are
decided by one script call: fewer calls than requests, the same decisions."""

import http.client
import re

from conftest import loc, run_threads, unique_key


def evalsha_calls(redis):
    m = re.search(r"cmdstat_evalsha:calls=(\d+)", redis.cmd("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def test_concurrent_requests_share_script_calls(nginx_factory, redis):
    n = nginx_factory("batch", http=[
        "rate_limit_redis 127.0.0.1:%d timeout=500ms prefix=rlt;" % redis.port,
        "rate_limit_zone $http_x_key zone=z:1m rate=1r/m burst=2;",
        "rate_limit_zone $http_x_key zone=y:1m rate=1r/m burst=3;",
    ], locations=[loc("/l/", "rate_limit zone=z"),
                  loc("/two/", "rate_limit zone=z", "rate_limit zone=y")],
        workers=1).start()
    redis.cmd("CONFIG", "RESETSTAT")
    keys_per_thread, threads = 40, 16

    def body(i):
        conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=10)
        out = []
        try:
            for _ in range(keys_per_thread):
                key = unique_key("b%d" % i)
                path = "/two/x" if i % 2 else "/l/x"
                got = []
                for _ in range(3):
                    conn.request("GET", path, headers={"X-Key": key})
                    r = conn.getresponse()
                    r.read()
                    got.append((r.status, r.getheader("X-RL-Status")))
                out.append(got)
        finally:
            conn.close()
        return out

    res = run_threads(body, threads, timeout=60)
    errors = [x for x in res if isinstance(x, BaseException)]
    assert not errors, errors[:3]
    # each key: its burst of 2, then a rejection, whatever it shared a call with
    want = [(200, "PASSED"), (200, "PASSED"), (429, "REJECTED")]
    assert all(got == want for part in res for got in part), \
        [got for part in res for got in part if got != want][:5]
    requests = keys_per_thread * threads * 3
    calls = evalsha_calls(redis)
    print("BATCH requests=%d evalsha_calls=%d" % (requests, calls))
    assert calls < requests * 0.9, (calls, requests)
