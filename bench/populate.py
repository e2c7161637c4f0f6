#!/usr/bin/python3
"""Stores COUNT token buckets in Redis the way the module's script does.

Each key is "<prefix>:<zone>:<client key>" (see core/src/rate_limit_script.cpp
and t/test_redis_keys.py), its value the bucket's TAT as a whole number of
microseconds on Redis' clock, and its TTL the time until the bucket is full
again: "SET key TAT PX ms", as the versions before the token code wrote it.
The script reads such a TAT as counted in the limit in force, and writes it
back in its own form ("-", the TAT, the code), which takes the same memory:
both are integers to Redis.  The client keys are
those of bench/keys.lua's random:N mode, "a000000000000000" upwards, unless
--format gives another printf format of the key's index.

Usage: populate.py PORT DB COUNT PREFIX:ZONE AHEAD_SECONDS [--format FMT]
The commands go through "redis-cli --pipe", 10,000 at a time.
"""

import subprocess
import sys


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def main():
    argv = sys.argv[1:]
    fmt = "a%015d"
    if len(argv) == 7 and argv[5] == "--format":
        fmt = argv[6]
        argv = argv[:5]
    if len(argv) != 5:
        sys.exit(__doc__)
    port, db, count, zone, ahead = argv
    count, ahead_us = int(count), int(float(ahead) * 1e6)
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", port, "-n", db]
    sec, usec = subprocess.check_output(cli + ["TIME"], text=True).split()
    tat = b"%d" % (int(sec) * 1000000 + int(usec) + ahead_us)
    ttl = b"%d" % (ahead_us // 1000)
    prefix = zone.encode() + b":"
    fmt = fmt.encode()
    pipe = subprocess.Popen(cli + ["--pipe"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=False)
    step = 10000
    for start in range(0, count, step):
        chunk = [resp(b"SET", prefix + fmt % i, tat, b"PX", ttl)
                 for i in range(start, min(start + step, count))]
        pipe.stdin.write(b"".join(chunk))
    pipe.stdin.close()
    out = pipe.stdout.read().decode(errors="replace")
    if pipe.wait() != 0 or "errors: 0" not in out:
        sys.exit("redis-cli --pipe failed: " + out)


if __name__ == "__main__":
    main()
