"""Checks Apiary's RDP accountant (`apiary privacy epsilon`, Sources/ApiaryCore/RDPAccountant.swift)
against Google's dp-accounting package (PyPI `dp-accounting`) on a grid of noise multiplier x
sampling rate x steps x delta, q = 1 (no amplification) included: every epsilon within 1 %.

    python3 Tests/privacy/check_accountant.py [path/to/apiary]

Exit status 0 when every point agrees, 1 otherwise (each disagreement printed).
"""

import importlib.metadata
import itertools
import json
import logging
import subprocess
import sys

import dp_accounting
from dp_accounting import rdp

TOLERANCE = 0.01
NOISE = [0.6, 1.1, 3.0]
RATES = [0.001, 0.01, 0.1, 1.0]
STEPS = [1, 100, 10_000]
DELTAS = [1e-5, 1e-8]


def reference(z: float, q: float, steps: int, delta: float) -> float:
    event = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant = rdp.RdpAccountant()
    accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


def apiary(binary: str, z: float, q: float, steps: int, delta: float) -> float:
    out = subprocess.run(
        [binary, "privacy", "epsilon", "--noise-multiplier", repr(z), "--sampling-rate", repr(q),
         "--steps", str(steps), "--delta", repr(delta), "--json"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    e = json.loads(out.strip().splitlines()[-1])["epsilon"]
    return float("inf") if e is None else float(e)


def main() -> int:
    # dp-accounting warns (through absl) for each order whose series does not converge; Apiary
    # drops the same orders, so the warnings are noise here.
    logging.getLogger("absl").setLevel(logging.ERROR)
    binary = sys.argv[1] if len(sys.argv) > 1 else ".build/debug/apiary"
    # The known value from dp-accounting's documentation first.
    known = reference(1.1, 0.01, 1000, 1e-5)
    assert abs(known - 1.71) < 0.01, f"dp-accounting itself gives {known} for the DP-SGD example"
    failures = []
    points = list(itertools.product(NOISE, RATES, STEPS, DELTAS))
    worst = 0.0
    for z, q, steps, delta in points:
        want = reference(z, q, steps, delta)
        got = apiary(binary, z, q, steps, delta)
        error = abs(got - want) / max(abs(want), 1e-9) if want != got else 0.0
        worst = max(worst, error)
        if error > TOLERANCE:
            failures.append(f"z={z} q={q} steps={steps} delta={delta}: dp-accounting {want}, apiary {got} ({error:.2%})")
    for f in failures:
        print("MISMATCH", f)
    print(f"accountant vs dp-accounting {importlib.metadata.version('dp-accounting')}: "
          f"{len(points) - len(failures)}/{len(points)} points within {TOLERANCE:.0%} (worst relative error {worst:.2e})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
