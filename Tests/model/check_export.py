#!/usr/bin/env python3
"""Checks a model exported by `apiary model export` against the file the run started from and
the aggregator's newest checkpoint:

    python check_export.py INITIAL.safetensors EXPORTED.safetensors STATE_DIR

Names, shapes and dtype (float32) equal the initial file's; values equal the newest checkpoint's
(bit for bit) and differ from the initial ones (the fleet trained it); every value is finite.
Reads with `safetensors.numpy.load_file`, as a PyTorch user's `safetensors.torch.load_file` would.
"""

import glob
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def main() -> int:
    initial, exported, state = sys.argv[1:4]
    a, b = load_file(initial), load_file(exported)
    problems = []
    if sorted(a) != sorted(b):
        problems.append(f"names differ: {sorted(a)} vs {sorted(b)}")
    for k in a:
        if k in b and (b[k].shape != a[k].shape or b[k].dtype != np.float32):
            problems.append(f"{k}: exported {b[k].dtype}{list(b[k].shape)}, initial {a[k].dtype}{list(a[k].shape)}")
    checkpoints = sorted(glob.glob(os.path.join(state, "checkpoint-*.safetensors")))
    if not checkpoints:
        problems.append(f"no checkpoint in {state}")
    else:
        c = load_file(checkpoints[-1])
        for k in b:
            if k not in c:
                problems.append(f"{k} is not in the checkpoint {os.path.basename(checkpoints[-1])}: {sorted(c)}")
            elif not np.array_equal(c[k].reshape(b[k].shape), b[k]):
                problems.append(f"{k}: exported values differ from the checkpoint's")
    if not problems and all(np.array_equal(a[k], b[k]) for k in a):
        problems.append("the exported model equals the initial one: nothing was trained")
    if any(not np.isfinite(v).all() for v in b.values()):
        problems.append("the exported model is not finite")
    for p in problems:
        print(f"check_export: {p}", file=sys.stderr)
    if not problems:
        n = sum(v.size for v in b.values())
        print(f"check_export: ok, {len(b)} tensors, {n} parameters, equal to {os.path.basename(checkpoints[-1])}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
