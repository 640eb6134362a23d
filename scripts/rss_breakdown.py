#!/usr/bin/env python3
"""Where a process's resident memory goes, from /proc/PID/smaps: Rss by mapping, grouped.

    python3 scripts/rss_breakdown.py PID [PID...]

Groups: the executable's own mappings by permission (text r-x, read-only data r--, relocated
data rw-), each shared library, [heap] (the main arena), other malloc arenas (the 64 MiB
reservations glibc makes per thread), thread stacks (anonymous mappings right after a
one-page guard), the main [stack], and the remaining anonymous memory (large mmap'd
allocations: model buffers, the Swift runtime's metadata). Used for docs/BENCHMARKS.md
("footprint"); the benchmark itself reads VmRSS.
"""
import os
import re
import sys

KIB = 1024


def mappings(pid):
    """(start, end, perms, path, {field: kB}) for each mapping of smaps."""
    out = []
    cur = None
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = head.match(line)
            if m:
                cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4), {}]
                out.append(cur)
            elif cur is not None and line.endswith("kB\n"):
                k, v = line.split(":", 1)
                cur[4][k] = int(v.split()[0])
    return out


def classify(maps, exe):
    groups = {}
    for i, (start, end, perms, path, f) in enumerate(maps):
        rss = f.get("Rss", 0)
        size = (end - start) // KIB
        if path == exe:
            g = "binary " + {"r-xp": "text (r-x)", "r--p": "read-only data (r--)", "rw-p": "relocated data (rw-)"}.get(perms, perms)
        elif path.startswith("/"):
            g = "lib " + os.path.basename(path)
        elif path == "[heap]":
            g = "malloc main arena ([heap])"
        elif path == "[stack]":
            g = "main thread stack"
        elif path.startswith("["):
            g = path
        else:
            prev = maps[i - 1] if i > 0 else None
            nxt = maps[i + 1] if i + 1 < len(maps) else None
            after_guard = prev is not None and prev[2] == "---p" and prev[1] == start and (prev[1] - prev[0]) <= 64 * KIB
            arena = nxt is not None and nxt[2] == "---p" and nxt[0] == end and ((nxt[1] - start) // KIB) % (64 * 1024) == 0
            if perms == "---p":
                g = "guard/reserved (no pages)"
            elif arena:
                g = "malloc thread arenas"
            elif after_guard and size >= 64:
                g = "thread stacks"
            else:
                g = "other anonymous (mmap'd allocations)"
        n, r, a = groups.get(g, (0, 0, 0))
        groups[g] = (n + 1, r + rss, a + f.get("Anonymous", 0))
    return groups


def main():
    for pid in sys.argv[1:]:
        exe = os.readlink(f"/proc/{pid}/exe")
        maps = mappings(pid)
        groups = classify(maps, exe)
        total = sum(r for _, r, _ in groups.values())
        with open(f"/proc/{pid}/status") as f:
            status = dict(l.split(":", 1) for l in f if ":" in l)
        print(f"pid {pid} {exe}: Rss {total / 1024:.1f} MiB, VmRSS {status['VmRSS'].strip()}, "
              f"RssAnon {status['RssAnon'].strip()}, RssFile {status['RssFile'].strip()}, threads {status['Threads'].strip()}")
        for g, (n, r, a) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            if r:
                print(f"  {r / 1024:6.2f} MiB  {g}  ({n} mapping{'s' if n != 1 else ''}, {a / 1024:.2f} MiB private)")


if __name__ == "__main__":
    main()
