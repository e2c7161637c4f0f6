#!/usr/bin/python3
"""How many local buckets a zone holds at most, seen from outside, for
bench/zone_bytes.sh.  PATH must be limited by a backend=local zone with a
slow rate and a burst of 2, keyed on the X-Key header, that no other
request touches.

It sends COUNT requests with distinct keys of KEY_LEN bytes, oldest first,
on one connection: each takes a token and leaves a bucket.  A zone with no
room left forgets its least recently used bucket for each new key.  Then it
asks again for the keys, newest first: a key whose bucket is still held has
fewer tokens left (X-RateLimit-Remaining) than the first answer of a new
key showed.  The keys held before the first key that starts anew are the
most the zone holds.  Asking for a held key stores nothing, so the count is
not disturbed before that first key; what follows it is not counted.
Requests are pipelined, BATCH at a time.

Usage: zone_probe.py PORT PATH KEY_LEN COUNT
Prints "held N"; exits 1 if the zone never forgot a key (COUNT too small)
or a response is not a 200 with X-RateLimit-Remaining.
"""

import asyncio
import sys

from http_load import read_response, request, unique_key

BATCH = 200


async def remaining(reader, writer, path, keys):
    """X-RateLimit-Remaining of each key, asked in order."""
    writer.write(b"".join(request(path, k) for k in keys))
    left = []
    for key in keys:
        status, headers = await read_response(reader)
        if status != 200 or b"x-ratelimit-remaining" not in headers:
            sys.exit("key %s: status %d, headers %r" % (key, status, headers))
        left.append(int(headers[b"x-ratelimit-remaining"]))
    return left


async def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    port, path = int(sys.argv[1]), sys.argv[2]
    key_len, count = int(sys.argv[3]), int(sys.argv[4])
    keys = [unique_key("zbk", n, key_len) for n in range(count)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        fresh = None
        for i in range(0, count, BATCH):
            left = await remaining(reader, writer, path, keys[i:i + BATCH])
            fresh = left[0] if fresh is None else fresh
        newest_first = keys[::-1]
        for i in range(0, count, BATCH):
            left = await remaining(reader, writer, path,
                                   newest_first[i:i + BATCH])
            for j, n in enumerate(left):
                if n >= fresh:
                    print("held", i + j)
                    return
    finally:
        writer.close()
    sys.exit("the zone held all %d keys: ask for more" % count)


if __name__ == "__main__":
    asyncio.run(main())
