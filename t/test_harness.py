"""Self-test of the fixtures with plain nginx (no module) and Redis.

Runs even when the module has not been built."""

import time

import pytest

from conftest import loc, WORKERS


def test_plain_nginx_start_reload_stop(plain_nginx_factory):
    n = plain_nginx_factory("plain", locations=[loc("/a/")])
    rc, out = n.test_config()
    assert rc == 0, out
    n.start()
    assert len(n.workers()) == WORKERS
    r = n.get("/a/x")
    assert r.status == 200 and r.body == b"ok\n"
    assert n.get("/plain.txt").status == 200
    old = set(n.workers())
    n.reload()
    assert not (set(n.workers()) & old)
    assert n.get("/a/y").status == 200
    n.stop()
    assert n.proc.poll() is not None
    assert not n.workers()


def test_plain_nginx_bad_config(plain_nginx_factory):
    n = plain_nginx_factory("bad", http="no_such_directive 1;")
    rc, out = n.test_config()
    assert rc != 0
    assert "no_such_directive" in out


def test_redis_stop_start_same_port_and_freeze(redis):
    port = redis.port
    assert redis.cmd("SET", "a", "1") == "OK"
    assert redis.cmd("GET", "a") == "1"
    redis.stop()
    with pytest.raises(OSError):
        redis.cmd("PING", timeout=0.5)
    redis.start()
    assert redis.port == port
    assert redis.cmd("PING") == "PONG"
    with redis.frozen_for():
        t0 = time.monotonic()
        with pytest.raises(OSError):
            redis.cmd("PING", timeout=0.3)
        assert time.monotonic() - t0 < 1.5
    assert redis.cmd("PING") == "PONG"


def test_redis_password(redis_factory):
    r = redis_factory(password="s3cret", unixsocket=True)
    assert r.cmd("PING") == "PONG"
    assert r.cmd("SET", "x", "1", db=3) == "OK"
    assert r.keys(db=3) == ["x"]
    assert r.keys(db=0) == []
