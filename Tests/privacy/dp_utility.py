"""The DP utility table (issue 14 item 5): final test accuracy of the digits demo workload
(20 clients, Dirichlet 0.5, fedbuff) without privacy and with central DP-FedBuff spent to
epsilon 1, 4 and 8 at delta 1e-5, one `apiary demo` run each.

    python3 Tests/privacy/dp_utility.py [path/to/apiary] [--time-limit 75] [--steps 150]

Every run has the same buffer (K = `--buffer-size`, default 20: every client's delta counts
in a buffer's sum, the fixed denominator of DP-FedBuff), clip C (`--clip`) and time limit. For
each epsilon the noise multiplier z is chosen (bisection on `apiary privacy epsilon`, q = 1: no
sampling amplification) so that `--steps` server steps spend exactly that epsilon; the budget
(privacy.epsilon_budget) then stops the flushes there, and the model stays as it is until the
time limit. Prints one table (markdown) and, with --json, one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DELTA = 1e-5


def epsilon(apiary: str, z: float, steps: int) -> float:
    out = subprocess.run([apiary, "privacy", "epsilon", "--noise-multiplier", repr(z), "--steps", str(steps),
                          "--delta", repr(DELTA), "--json"], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["epsilon"])


def noise_for(apiary: str, target: float, steps: int) -> float:
    """The smallest z (to 0.1 %) whose `steps` steps spend at most `target`."""
    lo, hi = 0.3, 1000.0
    while hi / lo > 1.001:
        mid = (lo * hi) ** 0.5
        if epsilon(apiary, mid, steps) > target:
            lo = mid
        else:
            hi = mid
    return hi


def run(apiary: str, env: dict[str, str], dp: bool, time_limit: float) -> dict[str, object]:
    cmd = [apiary, "demo", "--algorithm", "fedbuff", "--insecure", "--no-report", "--json", "--target", "1.01",
           "--time-limit", str(time_limit)]
    if dp:
        cmd.append("--dp")
    started = time.monotonic()
    p = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=time_limit + 120)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    summary["wall_s"] = time.monotonic() - started
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("apiary", nargs="?", default=".build/debug/apiary")
    ap.add_argument("--time-limit", type=float, default=75, help="seconds per run (default 75)")
    ap.add_argument("--steps", type=int, default=50, help="server steps that spend each epsilon (default 50: a run of 75 s makes about 60)")
    ap.add_argument("--buffer-size", type=int, default=20, help="K (default 20)")
    ap.add_argument("--clip", type=float, default=0.2, help="C (default 0.2: of 0.1, 0.2 and 1 the best at epsilon 8 in one run each)")
    ap.add_argument("--server-lr", type=float, default=1.0, help="server_optimizer.learning_rate (default 1.0)")
    ap.add_argument("--epsilons", default="1,4,8")
    ap.add_argument("--no-baseline", action="store_true", help="skip the non-private run")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    base = {"FEDBUFF_BUFFER_SIZE": str(a.buffer_size), "FEDBUFF_MAX_WAIT_S": "30", "SERVER_OPTIMIZER_LEARNING_RATE": repr(a.server_lr),
            "PRIVACY_CLIP": repr(a.clip), "PRIVACY_DELTA": repr(DELTA), "LOG_LEVEL": "error"}
    rows: list[tuple[str, float | None, dict[str, object]]] = []
    if not a.no_baseline:
        s = run(a.apiary, base, False, a.time_limit)
        rows.append(("non-private", None, s))
        if a.json:
            print(json.dumps({"run": "non-private", **s}), flush=True)
    for target in [float(e) for e in a.epsilons.split(",")]:
        z = noise_for(a.apiary, target, a.steps)
        env = {**base, "PRIVACY_NOISE_MULTIPLIER": repr(z), "PRIVACY_EPSILON_BUDGET": repr(target)}
        s = run(a.apiary, env, True, a.time_limit)
        rows.append((f"central DP, epsilon {target:g}", z, s))
        if a.json:
            print(json.dumps({"run": f"epsilon {target:g}", "noise_multiplier": z, **s}), flush=True)
    print(f"\ndigits demo workload, 20 clients, fedbuff K = {a.buffer_size}, clip C = {a.clip:g}, server lr {a.server_lr:g}, "
          f"delta {DELTA:g}, no sampling amplification, {a.time_limit:g} s per run, {a.steps} steps per budget\n")
    print("| run | noise multiplier z | noise std of the mean z·C/K | server steps | epsilon spent | final accuracy |")
    print("|---|---|---|---|---|---|")
    for name, z, s in rows:
        eps = s.get("epsilon")
        noise = f"{z * a.clip / a.buffer_size:.3f}" if z else "0"
        print(f"| {name} | {f'{z:.2f}' if z else '–'} | {noise} | {s['versions']} | {f'{eps:.3f}' if isinstance(eps, float) else '–'} "
              f"| {float(s['final_accuracy']):.4f} |")


if __name__ == "__main__":
    main()
