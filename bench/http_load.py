#!/usr/bin/python3
"""A bounded HTTP/1.1 client for bench/profile.sh: exactly COUNT keep-alive
GET requests over CONNECTIONS connections, so that a profiled nginx serves a
known number of requests.  Each request has an X-Key header of KEY_LEN bytes
(default 16, as bench/keys.lua sends): KEYS "unique" makes it SALT then a
counter, a new key every request; "one" gives every request the same key.

Usage: http_load.py PORT PATH COUNT CONNECTIONS KEYS SALT [STATUSES [KEY_LEN]]
Prints "STATUS COUNT" lines; exits 1 if a response's status is not among
STATUSES (a comma-separated list, default 200).
"""

import asyncio
import collections
import sys


def unique_key(salt, n, length=16):
    """The n-th key of SALT: its first 3 bytes, then n, zero-padded."""
    return ("%s%0*d" % ((salt + "___")[:3], length - 3, n)).encode()


def request(path, key):
    return (b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Key: %s\r\n\r\n"
            % (path.encode(), key))


async def read_response(reader):
    """The status and the headers (lower-cased names) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", 0))
    if length:
        await reader.readexactly(length)
    return int(lines[0].split()[1]), headers


async def connection(port, path, keys, salt, key_len, numbers, statuses):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in numbers:
            if keys == "one":
                key = b"abuser0000000000"
            else:
                key = unique_key(salt, n, key_len)
            writer.write(request(path, key))
            status, _ = await read_response(reader)
            statuses[status] += 1
    finally:
        writer.close()


async def main():
    if len(sys.argv) not in (7, 8, 9) or sys.argv[5] not in ("unique", "one"):
        sys.exit(__doc__)
    port, path = int(sys.argv[1]), sys.argv[2]
    count, conns = int(sys.argv[3]), int(sys.argv[4])
    keys, salt = sys.argv[5], sys.argv[6]
    allowed = {int(s) for s in (sys.argv[7] if len(sys.argv) >= 8
                                else "200").split(",")}
    key_len = int(sys.argv[8]) if len(sys.argv) == 9 else 16
    if key_len < 8:
        sys.exit("KEY_LEN must be at least 8")
    statuses = collections.Counter()
    await asyncio.gather(*(connection(port, path, keys, salt, key_len,
                                      range(i, count, conns), statuses)
                           for i in range(conns)))
    for status, n in sorted(statuses.items()):
        print(status, n)
    sys.exit(0 if set(statuses) <= allowed else 1)


if __name__ == "__main__":
    asyncio.run(main())
