"""Free TCP ports on 127.0.0.1 for the example and test scripts (one copy of this, not five).

    python3 scripts/free_ports.py          # prints "P H": P, P+1, P+2 free (snapshot, model,
                                           # update: the layout the SDK's aggregator= expects)
                                           # and H, one more free port (the status server)

Importable too: ``consecutive_ports(n)`` and ``free_port()``. A port found free can be taken
by another process before the caller binds it; the callers bind at once and tests retry.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def consecutive_ports(n: int = 3) -> int:
    """A free port P with P+1 ... P+n-1 free as well."""
    for _ in range(200):
        base = free_port()
        if base + n > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in range(base, base + n):
                t = socket.socket()
                held.append(t)
                t.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
    raise RuntimeError(f"no {n} consecutive free ports on 127.0.0.1")


if __name__ == "__main__":
    base = consecutive_ports(3)
    other = free_port()
    while base <= other < base + 3:
        other = free_port()
    print(base, other)
