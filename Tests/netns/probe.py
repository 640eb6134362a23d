#!/usr/bin/env python3
"""Small measurements for Tests/netns/run.sh, run inside a network namespace.

    probe.py rtt HOST PORT [COUNT]    median application-level round trip to a ZeroMQ socket, in ms
    probe.py json URL FIELD...        fields of a JSON document (GET URL), one line, "-" if absent

rtt: libzmq sends the first 10 bytes of its ZMTP greeting (the signature) as soon as a
connection is accepted, and the next byte (its major version) only after it has received the
peer's 10-byte signature. So "send our signature, wait for that byte" is one round trip to the
ZeroMQ socket itself, through whatever proxy is on the path (the greeting bytes are all it
sees; the connection is closed before any handshake completes). Each sample uses a fresh
connection; the median ignores the odd sample that waited out a retransmission of a lost packet.

json FIELD: dotted path; a list element is picked by a key, e.g.
"evaluation.latest.accuracy" or "clients.list[id=gateway-1].merged"; with ^= every element
whose key starts with the value is picked and the rest of the path is summed over them:
"clients.list[id^=dev1-].merged".
"""
import json
import re
import socket
import statistics
import sys
import time
import urllib.request

SIGNATURE = bytes([0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F])


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed during greeting")
        data += chunk
    return data


def rtt(host, port, count):
    samples = []
    failures = 0
    for _ in range(count):
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if recv_exact(s, 10)[0] != 0xFF:
                    raise ConnectionError("not a ZMTP 3 peer")
                t0 = time.perf_counter()
                s.sendall(SIGNATURE)
                recv_exact(s, 1)
                samples.append((time.perf_counter() - t0) * 1000.0)
        except (OSError, ConnectionError):
            failures += 1
    if not samples:
        print(f"no sample: {failures} connections failed", file=sys.stderr)
        return 1
    print(f"{statistics.median(samples):.1f}")
    return 0


def pick(doc, path):
    parts = path.split(".")
    for i, part in enumerate(parts):
        m = re.fullmatch(r"(\w+)\[(\w+)(\^?=)([^\]]*)\]", part)
        if m:
            key, field, op, value = m.groups()
            items = (doc.get(key) if isinstance(doc, dict) else None) or []
            if op == "^=":
                rest = ".".join(parts[i + 1:])
                picked = [x for x in items if str(x.get(field, "")).startswith(value)]
                values = [pick(x, rest) if rest else 1 for x in picked]
                return sum(v for v in values if isinstance(v, (int, float)))
            doc = next((x for x in items if str(x.get(field)) == value), None)
        else:
            doc = doc.get(part) if isinstance(doc, dict) else None
        if doc is None:
            return "-"
    return doc


def json_fields(url, fields):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            doc = json.load(r)
    except (OSError, ValueError) as e:
        print(f"GET {url}: {e}", file=sys.stderr)
        return 1
    values = (pick(doc, f) for f in fields)
    print(" ".join(json.dumps(v, separators=(",", ":")) if isinstance(v, (dict, list)) else str(v)
                   for v in values))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "rtt":
        return rtt(argv[1], int(argv[2]), int(argv[3]) if len(argv) > 3 else 15)
    if len(argv) >= 3 and argv[0] == "json":
        return json_fields(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
