"""Certificates for the TLS tests, made with the openssl command line.

make_certs(folder) writes, under folder:

* ca.pem / ca.key: the test CA;
* server.pem / server.key: signed by it, subjectAltName DNS:localhost and
  IP:127.0.0.1 (CN localhost);
* client.pem / client.key: signed by it, extendedKeyUsage clientAuth;
* server-dns.pem / server-dns.key: signed by it, subjectAltName
  DNS:localhost only (no IP);
* server-name.pem / server-name.key: signed by it, subjectAltName
  DNS:redis.test only (the name that moves in t/test_dns.py);
* other-ca.pem / other-ca.key: a second CA, unrelated to the first;
* other-client.pem / other-client.key: signed by the second CA.

Every file is readable by anyone (the nginx workers run as nobody; the keys
are throwaway).  Returns a Certs with the paths as strings.
"""

import os
import subprocess
from pathlib import Path

OPENSSL = os.environ.get("OPENSSL", "openssl")
DAYS = "30"


class Certs:
    def __init__(self, folder):
        self.dir = Path(folder)

    def path(self, name):
        return str(self.dir / name)

    ca = property(lambda self: self.path("ca.pem"))
    ca_key = property(lambda self: self.path("ca.key"))
    server = property(lambda self: self.path("server.pem"))
    server_key = property(lambda self: self.path("server.key"))
    server_dns = property(lambda self: self.path("server-dns.pem"))
    server_dns_key = property(lambda self: self.path("server-dns.key"))
    server_name = property(lambda self: self.path("server-name.pem"))
    server_name_key = property(lambda self: self.path("server-name.key"))
    client = property(lambda self: self.path("client.pem"))
    client_key = property(lambda self: self.path("client.key"))
    other_ca = property(lambda self: self.path("other-ca.pem"))
    other_ca_key = property(lambda self: self.path("other-ca.key"))
    other_client = property(lambda self: self.path("other-client.pem"))
    other_client_key = property(lambda self: self.path("other-client.key"))


def _openssl(folder, *args):
    p = subprocess.run([OPENSSL] + list(args), cwd=str(folder),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d):\n%s"
                           % (" ".join(args), p.returncode,
                              p.stdout.decode(errors="replace")))


def _ca(folder, name, cn):
    _openssl(folder, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", name + ".key", "-out", name + ".pem", "-days", DAYS,
             "-subj", "/CN=" + cn,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def _leaf(folder, name, ca, cn, ext):
    (Path(folder) / (name + ".ext")).write_text(ext)
    _openssl(folder, "req", "-newkey", "rsa:2048", "-nodes",
             "-keyout", name + ".key", "-out", name + ".csr",
             "-subj", "/CN=" + cn)
    _openssl(folder, "x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem",
             "-CAkey", ca + ".key", "-CAcreateserial", "-out", name + ".pem",
             "-days", DAYS, "-extfile", name + ".ext")


def make_certs(folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    _ca(folder, "ca", "rate-limit test CA")
    _ca(folder, "other-ca", "unrelated test CA")
    _leaf(folder, "server", "ca", "localhost",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth,clientAuth\n"
          "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _leaf(folder, "server-dns", "ca", "localhost",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth\n"
          "subjectAltName=DNS:localhost\n")
    _leaf(folder, "server-name", "ca", "redis.test",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=serverAuth\n"
          "subjectAltName=DNS:redis.test\n")
    _leaf(folder, "client", "ca", "ratelimit-client",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=clientAuth\n")
    _leaf(folder, "other-client", "other-ca", "ratelimit-client",
          "basicConstraints=CA:FALSE\n"
          "keyUsage=critical,digitalSignature,keyEncipherment\n"
          "extendedKeyUsage=clientAuth\n")
    for f in folder.iterdir():
        os.chmod(f, 0o644)
    return Certs(folder)
