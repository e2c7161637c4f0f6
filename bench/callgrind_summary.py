#!/usr/bin/python3
"""Instructions per request from a callgrind dump, for bench/profile.sh.

Reads the dump's cost lines itself (the format of valgrind's
docs/callgrind-format: name compression, relative positions, and the cost
line after a "calls=" line being the call's inclusive cost, not the
caller's own), and adds up each function's own (exclusive) instructions.

Usage: callgrind_summary.py DUMP REQUESTS [TOP]
Prints, per request: the whole process, each object (binary or library),
"module": the functions of the module's .so (C module and C++ core),
of libhiredis, and any other function whose name matches
ngx_http_rate_limit_|rate_limit|redis|hiredis|gcra, and the TOP functions
(default 15).  The first line is machine-readable:
  TOTAL <ir/request> MODULE <ir/request>
"""

import collections
import os
import re
import sys

MODULE_NAME = re.compile(r"ngx_http_rate_limit_|rate_limit|redis|hiredis|gcra",
                         re.IGNORECASE)
MODULE_OBJECT = re.compile(r"ngx_http_rate_limit_module|hiredis")


def parse(path):
    names = {"ob": {}, "fl": {}, "fn": {}}
    kinds = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl",
             "cfi": "fl", "cfl": "fl", "fn": "fn", "cfn": "fn"}
    self_cost = collections.Counter()       # (object, function) -> Ir
    obj = fn = None
    totals = None
    after_calls = False

    def name(kind, text):
        m = re.match(r"\((\d+)\)(?: (.*))?$", text)
        if not m:
            return text
        table = names[kinds[kind]]
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), "?")

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                fields = line.split()
                if len(fields) > 1:
                    self_cost[(obj, fn)] += int(fields[1])
                continue
            key, eq, value = line.partition("=")
            if eq and key in kinds:
                n = name(key, value)
                if key == "ob":
                    obj = n
                elif key == "fn":
                    fn = n
                continue
            if line.startswith("calls="):
                after_calls = True
            elif line.startswith("totals:"):
                totals = int(line.split()[1])
    return self_cost, totals


def is_module(obj, fn):
    return bool(MODULE_OBJECT.search(os.path.basename(obj or ""))
                or MODULE_NAME.search(fn or ""))


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    self_cost, totals = parse(sys.argv[1])
    requests = int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) == 4 else 15
    total = sum(self_cost.values())
    if totals is not None and totals != total:
        sys.exit("%s: the costs add up to %d, not to its totals: %d"
                 % (sys.argv[1], total, totals))
    module = sum(v for (o, f), v in self_cost.items() if is_module(o, f))
    print("TOTAL %.0f MODULE %.0f" % (total / requests, module / requests))

    by_object = collections.Counter()
    for (o, _), v in self_cost.items():
        by_object[os.path.basename(o or "?")] += v
    print("instructions per request by object:")
    for o, v in by_object.most_common():
        if v / requests >= 1:
            print("  %9.0f  %5.1f%%  %s" % (v / requests, 100.0 * v / total, o))

    print("module functions (own instructions per request):")
    mods = sorted(((v, f, o) for (o, f), v in self_cost.items()
                   if is_module(o, f)), reverse=True)
    for v, f, o in mods[:top]:
        print("  %9.1f  %s  [%s]" % (v / requests, f, os.path.basename(o or "?")))
    if not mods:
        print("  (none)")

    print("top %d functions (own instructions per request):" % top)
    for (o, f), v in self_cost.most_common(top):
        print("  %9.1f  %5.1f%%  %s  [%s]"
              % (v / requests, 100.0 * v / total, f, os.path.basename(o or "?")))


if __name__ == "__main__":
    main()
