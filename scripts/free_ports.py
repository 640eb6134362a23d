"""Free TCP ports on 127.0.0.1 for the example and test scripts (one copy of this, not five).

    python3 scripts/free_ports.py          # prints "P H": P, P+1, P+2 free (snapshot, model,
                                           # update: the layout the SDK's aggregator= expects)
                                           # and H, one more free port (the status server)

Importable too: ``consecutive_ports(n)`` and ``free_port()``. A port found free can be taken
by another process before the caller binds it; the callers bind at once and tests retry.
"""

from __future__ import annotations

import random
import socket

# Below the kernel's ephemeral range (32768-60999 on Linux): a port from bind(0) is ephemeral,
# and the kernel hands that range to every outgoing connection's source port and to every
# "tcp://127.0.0.1:*" bind as well, so it is often taken again before the caller binds it.
_RANGE = (10_000, 32_000)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port() -> int:
    for _ in range(2000):
        port = random.randrange(*_RANGE)
        if _free(port):
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def consecutive_ports(n: int = 3) -> int:
    """A free port P with P+1 ... P+n-1 free as well."""
    for _ in range(200):
        base = free_port()
        if base + n > _RANGE[1]:
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
