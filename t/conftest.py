"""Integration tests for ngx_http_rate_limit_module.

How to run (from the repository root, after building the module with
``cmake -S . -B build && cmake --build build -j2``)::

    /usr/bin/python3 -m pytest -q t/

Use Debian's python (/usr/bin/python3, or ``pytest-3``): it has pytest
(the pyenv python3 on PATH does not).  The tests start real processes, all on 127.0.0.1 and on free
ports, in a temporary folder under /tmp:

* ``redis-server`` (``--save '' --appendonly no``), which a test may stop,
  start again on the same port, or freeze with SIGSTOP;
* ``/usr/sbin/nginx -p PREFIX -c PREFIX/nginx.conf`` (``daemon off``, two
  workers, running as the default user ``nobody``), with
  ``load_module <repo>/build/ngx_http_rate_limit_module.so;``.

Environment:

* ``RATE_LIMIT_MODULE``: another path to the module.
* ``RATE_LIMIT_REQUIRE_MODULE``: set it (CI does) to make a missing module a
  failure; without it the module tests are skipped when the .so is missing
  (the harness self-test, test_harness.py, still runs).
* ``RATE_LIMIT_KEEP_TMP``: keep the temporary folder even when all pass (it
  is always kept, and its path printed, when a test fails).

Every nginx the tests start has its error log checked at teardown: any
``[alert]`` or ``[crit]`` line fails the test, but for those matching a regex
of the instance's ``allowed_alerts`` list (a test that fills a zone on
purpose).

Fixtures and helpers:

* ``nginx_factory(name, http=..., locations=..., server=..., main=...,
  workers=2, listen_opts=...)`` -> ``Nginx`` (configured, not started):
  ``start()``, ``stop()``, ``reload()`` (waits for the old workers to go),
  ``test_config()`` -> (rc, output), ``get(path, key=...)`` -> ``Resp``,
  ``statuses(path, key, n)``, ``error_log(since)``, ``log_mark()``,
  ``error_lines(regex, since)``, ``access_records()``, ``access_rls(rid)``.
  ``configure()`` writes the config again (then ``reload()``).
* ``loc(path, *directives)``: a location serving PREFIX/html/ok.txt for any
  URI below it (the module runs in PREACCESS, so ``return`` would skip it).
* The template adds ``add_header X-RL-Status $rate_limit_status always;`` (so
  ``Resp.rls`` is the variable) and an access log with $rate_limit_status,
  the X-Key request header (the key used by the tests) and the worker pid.
* ``redis`` / ``redis_factory(password=..., unixsocket=..., tls_cert=...,
  tls_key=..., tls_ca=..., tls_auth_clients="no", bind=..., port=...)`` ->
  ``Redis`` (with tls_cert, a ``tls_port`` too; ``cmd()`` keeps the plain
  ``port``; bind: another loopback address, such as 127.0.0.2, with the
  port of one on another):
  ``stop()``, ``start()`` (same port), ``freeze()``/``thaw()`` and
  ``frozen_for()`` (SIGSTOP/SIGCONT), ``cmd(...)`` (a small RESP client),
  ``keys(pattern, db)``.
* ``redis_cluster`` -> ``RedisCluster`` (t/redis_cluster.py): 3 masters + 3
  replicas on free ports, created and stable; ``masters()``,
  ``node_for_slot(slot)``, ``failover(m)``, ``migrate_slot(slot, m)``,
  ``kill_master(m)``, ``wait_replicated(m)``, ``cmd(port, ...)``,
  ``keys()`` (see its docstrings).
* ``run_threads(fn, n)``: n threads released together, bounded in time.
* ``postgres`` -> ``Postgres`` (per-client limits): one throwaway cluster for
  the session (initdb in a temp folder, run as the ``postgres`` user when the
  tests run as root; trust auth; 127.0.0.1 on a free port, unix socket in the
  folder), running when a test starts and started again after it:
  ``new_db(schema=True)`` (a database of the test's own, with
  config/rate_limit_schema.sql applied unless schema=False), ``conninfo(db)``,
  ``psql(sql, db)`` (ON_ERROR_STOP, output tuples-only), ``stop()``
  (immediate) / ``start()`` on the same port.  Stopped and removed at the end
  of the session whatever happened.  Skipped (failed with
  RATE_LIMIT_REQUIRE_MODULE) when PostgreSQL is not installed; PG_BINDIR
  overrides /usr/lib/postgresql/N/bin.
"""

import atexit
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
REDIS_BIN = os.environ.get("REDIS_BIN", "/usr/bin/redis-server")
MODULE_SO = os.environ.get(
    "RATE_LIMIT_MODULE", str(REPO / "build" / "ngx_http_rate_limit_module.so"))
WORKERS = 2

# every process started by the tests, killed at the end of the session at
# the latest, whatever happened
_PROCS = []
_PROCS_LOCK = threading.Lock()
_PORTS = set()


def _register(proc):
    with _PROCS_LOCK:
        _PROCS.append(proc)


def free_port():
    """A free TCP port on 127.0.0.1 not handed out before in this session."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS:
            _PORTS.add(port)
            return port
    raise RuntimeError("no free port")


def wait_for(predicate, timeout, interval=0.02, what="condition"):
    """Polls predicate until it returns a true value; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s"
                               % (timeout, what))
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def children_of(pid):
    """Pids of the live (not zombie) children of pid, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) > 1 and rest[1] == str(pid) and rest[0] != "Z":
            out.append(int(entry))
    return out


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def unique_key(tag="k"):
    return "%s-%s" % (tag, uuid.uuid4().hex[:12])


def sha1_hex(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data).hexdigest()


# --------------------------------------------------------------------------
# HTTP


class Resp:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers          # http.client.HTTPMessage
        self.body = body
        self.elapsed = elapsed

    def h(self, name):
        """The value of a header, None when absent; fails when repeated."""
        values = self.headers.get_all(name) or []
        assert len(values) <= 1, "header %s repeated: %r" % (name, values)
        return values[0] if values else None

    @property
    def rls(self):
        """$rate_limit_status, echoed by add_header X-RL-Status."""
        return self.h("X-RL-Status")

    def describe(self):
        return "%d %s" % (self.status, dict(self.headers.items()))

    def __repr__(self):
        return "<Resp %s>" % self.describe()


def http_get(port, path, key=None, headers=None, timeout=3.0, conn=None):
    """One GET; a new connection unless conn is given.  Never hangs."""
    hdrs = {"X-Rid": uuid.uuid4().hex}
    if key is not None:
        hdrs["X-Key"] = key
    if headers:
        hdrs.update(headers)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        hdrs["Connection"] = "close"
    t0 = time.monotonic()
    try:
        conn.request("GET", path, headers=hdrs)
        r = conn.getresponse()
        body = r.read()
        resp = Resp(r.status, r.msg, body, time.monotonic() - t0)
        resp.rid = hdrs["X-Rid"]
        return resp
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------
# Redis


class Redis:
    """A redis-server on 127.0.0.1, or on bind (another loopback address,
    with a port given, so that two share one port number); stop()/start()
    keep the same port."""

    def __init__(self, workdir, password=None, unixsocket=False, extra_args=(),
                 tls_cert=None, tls_key=None, tls_ca=None,
                 tls_auth_clients="no", bind="127.0.0.1", port=None,
                 tls_port=None):
        self.dir = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
        os.chmod(self.dir, 0o755)
        self.bind = bind
        self.port = port or free_port()
        # TLS (t/tls_certs.py makes the files): a tls-port of its own beside
        # the plain port, which cmd() and the harness keep using
        self.tls_port = (tls_port or free_port()) if tls_cert else None
        self.tls_cert, self.tls_key, self.tls_ca = tls_cert, tls_key, tls_ca
        self.tls_auth_clients = tls_auth_clients
        self.password = password
        # an ACL user for cmd() and monitor() (AUTH username password), set
        # by a test that turns the default user off; None: the default user
        self.username = None
        self.unixsocket = str(self.dir / "redis.sock") if unixsocket else None
        # more redis-server options, e.g. the cluster ones (redis_cluster.py)
        self.extra_args = list(extra_args)
        self.proc = None
        self.frozen = False

    def command(self):
        """The server's command line (a subclass runs another)."""
        args = [REDIS_BIN, "--port", str(self.port), "--bind", self.bind,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unixsocket:
            args += ["--unixsocket", self.unixsocket, "--unixsocketperm", "777"]
        if self.tls_port:
            args += ["--tls-port", str(self.tls_port),
                     "--tls-cert-file", self.tls_cert,
                     "--tls-key-file", self.tls_key,
                     "--tls-auth-clients", self.tls_auth_clients]
            if self.tls_ca:
                args += ["--tls-ca-cert-file", self.tls_ca]
        return args + list(self.extra_args)

    def start(self, timeout=5.0):
        assert self.proc is None or self.proc.poll() is not None
        args = self.command()
        binary = os.path.basename(args[0])
        out = open(self.dir / "redis.stdout", "ab")
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        _register(self.proc)
        self.frozen = False

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (binary, self.log()))
            try:
                return (self.cmd("PING", timeout=0.5) == "PONG"
                        and (not self.tls_port
                             or port_open(self.tls_port, self.bind)))
            except (OSError, RedisError):
                return False
        wait_for(ready, timeout, interval=0.02,
                 what="%s on port %d" % (binary, self.port))
        return self

    def stop(self, timeout=5.0):
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.frozen:
            self.thaw()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self):
        self.stop()
        return self.start()

    def freeze(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    @contextlib.contextmanager
    def frozen_for(self):
        """SIGSTOP for the duration of the block; SIGCONT always follows."""
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def log(self):
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _auth(self):
        if self.username:
            return ("AUTH", self.username, self.password)
        return ("AUTH", self.password)

    # a small RESP client, enough for tests
    def cmd(self, *args, timeout=2.0, db=None):
        with socket.create_connection((self.bind, self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            pre = []
            if self.password:
                pre.append(self._auth())
            if db is not None:
                pre.append(("SELECT", str(db)))
            for p in pre:
                s.sendall(_resp_encode(p))
                _resp_read(f)
            s.sendall(_resp_encode(args))
            return _resp_read(f)

    @contextlib.contextmanager
    def monitor(self, timeout=3.0):
        """The commands Redis runs during the block, scripts' own calls
        among them, as lists of strings (MONITOR)."""
        seen = []
        with socket.create_connection((self.bind, self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            if self.password:
                s.sendall(_resp_encode(self._auth()))
                _resp_read(f)
            s.sendall(_resp_encode(("MONITOR",)))
            assert _resp_read(f) == "OK"
            yield seen
            # the marker comes after every command run before it
            marker = "monitor-end-%s" % uuid.uuid4().hex
            self.cmd("ECHO", marker)
            while True:
                line = f.readline().decode(errors="replace")
                if not line:
                    raise AssertionError("MONITOR closed before its marker")
                args = [re.sub(r'\\(.)', r'\1', a)
                        for a in re.findall(r'"((?:[^"\\]|\\.)*)"', line)]
                if args == ["ECHO", marker]:
                    return
                seen.append(args)

    def keys(self, pattern="*", db=None):
        return sorted(self.cmd("KEYS", pattern, db=db))


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode(errors="surrogateescape")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_resp_read(f) for _ in range(n)]
    raise ValueError("bad RESP line %r" % line)


class RedisError(Exception):
    pass


# --------------------------------------------------------------------------
# nginx

LOG_FORMAT = ("'$msec pid=$pid rid=$http_x_rid key=\"$http_x_key\" uri=$uri "
              "status=$status rls=\"$rate_limit_status\"'")

CONF_TEMPLATE = """\
{load_module}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
{main}

events {{
    worker_connections 1024;
}}

http {{
    default_type text/plain;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_timeout 30s;
{access_log}
{http}

    server {{
        listen 127.0.0.1:{port}{listen_opts};
        server_name localhost;
        root {prefix}/html;
{status_header}
{server}

        location = /plain.txt {{
            try_files /ok.txt =404;
        }}

{locations}
    }}
}}
"""


def loc(path, *directives):
    """A location serving the static PREFIX/html/ok.txt for any URI under it
    (the module runs in PREACCESS, so `return` would bypass it)."""
    body = "\n".join("            %s" % d.rstrip(";") + ";" for d in directives)
    return ("        location %s {\n            try_files /ok.txt =404;\n%s\n"
            "        }\n" % (path, body))


def indent(text, n=4):
    if not text:
        return ""
    if isinstance(text, (list, tuple)):
        text = "\n".join(text)
    return "\n".join((" " * n + line) if line.strip() else line
                     for line in text.splitlines())


class Nginx:
    def __init__(self, workdir, module_so, name="ngx"):
        self.prefix = Path(tempfile.mkdtemp(prefix="%s-" % name, dir=workdir))
        os.chmod(self.prefix, 0o755)
        (self.prefix / "html").mkdir()
        (self.prefix / "tmp").mkdir()
        (self.prefix / "html" / "ok.txt").write_text("ok\n")
        os.chmod(self.prefix / "html" / "ok.txt", 0o644)
        self.module_so = module_so
        self.port = free_port()
        self.conf = self.prefix / "nginx.conf"
        self.proc = None
        self.env = dict(os.environ)
        self.workers_n = WORKERS
        self.started = False

    # configuration

    def configure(self, http="", locations="", server="", main="",
                  workers=WORKERS, module=True, listen_opts="", access_log=True):
        """Writes PREFIX/nginx.conf from the template; returns its text."""
        self.workers_n = workers
        with_module = module and self.module_so is not None
        text = CONF_TEMPLATE.format(
            load_module=("load_module %s;" % self.module_so) if with_module else "",
            workers=workers, prefix=self.prefix, port=self.port,
            main=main,
            access_log=(indent("log_format rlt %s;\naccess_log %s/access.log rlt;"
                               % (LOG_FORMAT, self.prefix))
                        if (access_log and with_module) else
                        indent("access_log %s/access.log;" % self.prefix)),
            http=indent(http),
            server=indent(server, 8),
            locations="\n".join(locations) if isinstance(locations, (list, tuple))
            else locations,
            listen_opts=(" " + listen_opts) if listen_opts else "",
            status_header=("        add_header X-RL-Status $rate_limit_status always;"
                           if with_module else ""))
        self.conf.write_text(text)
        return text

    def _ctl(self, *args, timeout=20):
        p = subprocess.run([NGINX_BIN, "-p", str(self.prefix), "-c", str(self.conf)]
                           + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=self.env)
        return p.returncode, p.stdout.decode(errors="replace")

    def test_config(self):
        """`nginx -t`: (returncode, output)."""
        return self._ctl("-t")

    # processes

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None
        out = open(self.prefix / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [NGINX_BIN, "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env)
        out.close()
        _register(self.proc)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %s:\n%s\n%s" % (
                    self.proc.returncode, self.stderr(), self.error_log()[-3000:]))
            return (len(self.workers()) >= self.workers_n
                    and port_open(self.port))
        wait_for(ready, timeout, what="nginx on port %d" % self.port)
        self.started = True
        return self

    def workers(self):
        if self.proc is None or self.proc.poll() is not None:
            return []
        return children_of(self.proc.pid)

    def reload(self, timeout=15.0):
        """`nginx -s reload`, then waits until every old worker is gone and
        the new ones run.  Raises when the reload is refused."""
        old = set(self.workers())
        mark = self.log_mark()
        rc, out = self._ctl("-s", "reload")
        assert rc == 0, "nginx -s reload failed: %s" % out

        def done():
            new_log = self.error_log(mark)
            if re.search(r"\[emerg\]", new_log):
                raise AssertionError("reload refused:\n%s" % new_log)
            cur = set(self.workers())
            return (not (cur & old)) and len(cur) >= self.workers_n
        wait_for(done, timeout, interval=0.02, what="nginx reload")

    def stop(self, timeout=10.0):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            workers = self.workers()
            kill_quietly(self.proc.pid, signal.SIGQUIT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_quietly(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            for w in workers:
                if pid_alive(w):
                    kill_quietly(w, signal.SIGKILL)

    def stderr(self):
        try:
            return (self.prefix / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    # logs

    def log_mark(self):
        try:
            return (self.prefix / "error.log").stat().st_size
        except OSError:
            return 0

    def error_log(self, since=0):
        try:
            with open(self.prefix / "error.log", "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def error_lines(self, pattern, since=0, flags=re.I):
        rx = re.compile(pattern, flags)
        return [l for l in self.error_log(since).splitlines() if rx.search(l)]

    def access_records(self):
        """The access log as a list of dicts (msec, pid, rid, key, uri,
        status, rls)."""
        try:
            text = (self.prefix / "access.log").read_text(errors="replace")
        except OSError:
            return []
        recs = []
        rx = re.compile(r'^(\S+) pid=(\d+) rid=(\S*) key="(.*)" uri=(\S*) status=(\d+) '
                        r'rls="(.*)"$')
        for line in text.splitlines():
            m = rx.match(line)
            if m:
                recs.append(dict(msec=float(m.group(1)), pid=int(m.group(2)),
                                 rid=m.group(3), key=m.group(4), uri=m.group(5),
                                 status=int(m.group(6)), rls=m.group(7)))
        return recs

    def access_for(self, key, count, timeout=3.0):
        """The access log records of key, once there are at least count of
        them (the log phase runs after the response is sent)."""
        def enough():
            recs = [r for r in self.access_records() if r["key"] == key]
            return recs if len(recs) >= count else None
        return wait_for(enough, timeout, what="%d access log lines for %s" % (count, key))

    def access_rls(self, rid, timeout=2.0):
        """$rate_limit_status logged for the request with X-Rid rid."""
        def find():
            for r in self.access_records():
                if r["rid"] == rid:
                    return r
            return None
        return wait_for(find, timeout, what="access log line for %s" % rid)["rls"]

    # HTTP

    def get(self, path="/plain.txt", key=None, headers=None, timeout=3.0, conn=None):
        return http_get(self.port, path, key=key, headers=headers,
                        timeout=timeout, conn=conn)

    def statuses(self, path, key, n, **kw):
        return [self.get(path, key=key, **kw).status for _ in range(n)]


# --------------------------------------------------------------------------
# fixtures


def _kill_all():
    """Last resort: nothing started by the tests outlives the session."""
    with _PROCS_LOCK:
        procs = list(_PROCS)
    for p in procs:
        if p.poll() is None:
            kids = children_of(p.pid)
            kill_quietly(p.pid, signal.SIGCONT)
            kill_quietly(p.pid, signal.SIGKILL)
            for c in kids:
                kill_quietly(c, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


atexit.register(_kill_all)


def pytest_configure(config):
    # `timeout` (scripts/test.sh) sends SIGTERM: turn it into an interrupt so
    # that the fixtures' teardown stops nginx and Redis
    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)


@pytest.fixture(scope="session")
def workdir(request):
    d = tempfile.mkdtemp(prefix="rlt-")
    os.chmod(d, 0o755)     # the workers run as nobody
    yield Path(d)
    _kill_all()
    if request.session.testsfailed or os.environ.get("RATE_LIMIT_KEEP_TMP"):
        print("\nrate-limit test files kept in %s" % d)
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def module_so():
    """The module's path; skips (or, with RATE_LIMIT_REQUIRE_MODULE, fails)
    when it has not been built."""
    if not os.path.isfile(MODULE_SO):
        msg = ("rate limit module not built: %s is missing (build it with "
               "`cmake -S . -B build && cmake --build build -j2`, or set "
               "RATE_LIMIT_MODULE)" % MODULE_SO)
        if os.environ.get("RATE_LIMIT_REQUIRE_MODULE"):
            pytest.fail(msg)
        pytest.skip(msg)
    return MODULE_SO


def _check_no_alert(instances):
    bad = []
    for n in instances:
        # a test that provokes an alert on purpose lists its regexes here
        allowed = [re.compile(p) for p in getattr(n, "allowed_alerts", ())]
        for line in n.error_log().splitlines():
            if (("[alert]" in line or "[crit]" in line)
                    and not any(a.search(line) for a in allowed)):
                bad.append("%s: %s" % (n.prefix, line))
    assert not bad, "error log has [alert]/[crit] lines:\n" + "\n".join(bad)


def _make_nginx_factory(workdir, so):
    instances = []

    def make(name="ngx", **conf):
        n = Nginx(workdir, so, name=name)
        instances.append(n)
        if conf:
            n.configure(**conf)
        return n

    def finish():
        try:
            for n in instances:
                n.stop()
        finally:
            _check_no_alert(instances)
    return make, finish


@pytest.fixture
def nginx_factory(workdir, module_so):
    """make(name, **configure_kwargs) -> Nginx (configured, not started).
    At teardown: stops every instance, then fails on [alert]/[crit]."""
    make, finish = _make_nginx_factory(workdir, module_so)
    try:
        yield make
    finally:
        finish()


@pytest.fixture
def plain_nginx_factory(workdir):
    """Like nginx_factory but without the module (harness self-test)."""
    make, finish = _make_nginx_factory(workdir, None)
    try:
        yield make
    finally:
        finish()


@pytest.fixture
def redis_factory(workdir):
    servers = []

    def make(**kw):
        r = Redis(workdir, **kw)
        servers.append(r)
        return r.start()
    try:
        yield make
    finally:
        for r in servers:
            try:
                r.thaw()
            finally:
                r.stop()


@pytest.fixture
def redis(redis_factory):
    return redis_factory()


@pytest.fixture
def redis_cluster(workdir):
    """A stable Redis Cluster, 3 masters + 3 replicas (t/redis_cluster.py),
    stopped at teardown."""
    # imported here: redis_cluster imports this module
    from redis_cluster import RedisCluster
    cluster = RedisCluster(workdir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def redis_conf(redis, extra="timeout=200ms prefix=rlt"):
    return "rate_limit_redis 127.0.0.1:%d %s;" % (redis.port, extra)


def run_threads(fn, n, timeout=30.0):
    """Runs fn(i) in n threads released together; returns the results (an
    exception object in place of a result that raised).  Bounded."""
    barrier = threading.Barrier(n, timeout=timeout)
    results = [None] * n

    def body(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:          # noqa: B036 - reported to caller
            results[i] = e
    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running after %ss" % timeout
    return results


# --------------------------------------------------------------------------
# PostgreSQL (per-client limits): one throwaway cluster for the session


def _pg_bindir():
    """The folder of initdb / pg_ctl / psql: PG_BINDIR, else the newest
    /usr/lib/postgresql/N/bin; None when PostgreSQL is not installed."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    found = []
    for p in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        version = p.parent.parent.name
        found.append((int(version) if version.isdigit() else 0, p.parent))
    return max(found)[1] if found else None


class PostgresError(Exception):
    pass


class Postgres:
    """A PostgreSQL cluster in a temporary folder, on 127.0.0.1 and a free
    port (its unix socket in the folder too), trust authentication, user
    "postgres".  As root, initdb / pg_ctl run as the "postgres" user.
    stop() (immediate) and start() keep the same port.  Every test takes a
    database of its own from new_db(), so that no test sees another's rows."""

    def __init__(self, workdir, bindir):
        self.bindir = Path(bindir)
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(self.dir, 0o755)
        self._dbs = 0

    def _run(self, args, timeout=60, check=True, as_user=True, input=None):
        p = subprocess.run((self.as_user if as_user else []) + [str(a) for a in args],
                           input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           timeout=timeout, cwd=str(self.dir))
        out = p.stdout.decode(errors="replace")
        if check and p.returncode != 0:
            raise PostgresError("%s failed (%d):\n%s" % (args[0], p.returncode, out))
        return p.returncode, out

    def init(self):
        self._run([self.bindir / "initdb", "-D", self.data, "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync",
                   "--no-instructions"], timeout=120)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# rate-limit tests\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = off\nfull_page_writes = off\n"
                    "max_connections = 60\nshared_buffers = 32MB\n"
                    "log_min_messages = warning\n" % (self.port, self.dir))
        return self

    def running(self):
        rc, _ = self._run([self.bindir / "pg_ctl", "-D", self.data, "status"],
                          timeout=10, check=False)
        return rc == 0

    def start(self, timeout=30):
        self._run([self.bindir / "pg_ctl", "-D", self.data, "-l", self.logfile,
                   "-w", "-t", str(timeout), "start"], timeout=timeout + 10)
        wait_for(lambda: port_open(self.port), 10, what="postgres on port %d" % self.port)
        return self

    def stop(self, mode="immediate"):
        """Stops the server (immediate: connections are cut at once)."""
        if self.running():
            self._run([self.bindir / "pg_ctl", "-D", self.data, "-m", mode,
                       "-w", "-t", "20", "stop"], timeout=30, check=False)
        if self.running():
            self._kill()

    def _kill(self):
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        kill_quietly(pid, signal.SIGQUIT)
        try:
            wait_for(lambda: not pid_alive(pid), 5, what="postmaster exit")
        except TimeoutError:
            kill_quietly(pid, signal.SIGKILL)

    def log(self):
        try:
            return self.logfile.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def conninfo(self, db):
        return ("host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=3"
                % (self.port, db))

    def psql(self, sql, db="postgres", timeout=60, check=True):
        """Runs sql (any number of statements, ON_ERROR_STOP) with psql;
        returns the unaligned, tuples-only output, stripped."""
        rc, out = self._run(
            [self.bindir / "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "-d", db,
             "-f", "-"],
            timeout=timeout, check=False, as_user=False, input=sql.encode())
        if check and rc != 0:
            raise PostgresError("psql failed (%d): %s\nSQL: %s" % (rc, out, sql[:500]))
        return out.strip()

    def new_db(self, schema=True):
        """A new, empty database; with schema, config/rate_limit_schema.sql
        has run in it (as the module would)."""
        self._dbs += 1
        name = "t%d_%s" % (self._dbs, uuid.uuid4().hex[:8])
        self.psql("CREATE DATABASE %s;" % name)
        if schema:
            self.psql((REPO / "config" / "rate_limit_schema.sql").read_text(), db=name)
        return name

    def destroy(self):
        try:
            self.stop()
        finally:
            try:
                shutil.copy(self.logfile, self.dir.parent / ("%s.log" % self.dir.name))
            except OSError:
                pass
            shutil.rmtree(self.dir, ignore_errors=True)


_PG_SERVERS = []


def _stop_all_postgres():
    for s in list(_PG_SERVERS):
        try:
            s.stop()
        except Exception:           # noqa: BLE001 - last resort at exit
            s._kill()


atexit.register(_stop_all_postgres)


@pytest.fixture(scope="session")
def postgres_server(workdir):
    bindir = _pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        msg = ("PostgreSQL is not installed (apt-get install postgresql-15, "
               "or set PG_BINDIR)")
        if os.environ.get("RATE_LIMIT_REQUIRE_MODULE"):
            pytest.fail(msg)
        pytest.skip(msg)
    pg = Postgres(workdir, bindir)
    _PG_SERVERS.append(pg)
    try:
        pg.init().start()
        yield pg
    finally:
        pg.destroy()
        _PG_SERVERS.remove(pg)


@pytest.fixture
def postgres(postgres_server):
    """The session's PostgreSQL, running when the test starts and started
    again after it whatever the test did."""
    if not postgres_server.running():
        postgres_server.start()
    try:
        yield postgres_server
    finally:
        if not postgres_server.running():
            postgres_server.start()
