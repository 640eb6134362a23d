#!/usr/bin/env python3
"""Writes the initial weights of a two-layer MLP for the 8x8 digits (64 -> HIDDEN -> 10) with
`safetensors.numpy.save_file`, named and shaped like a PyTorch state_dict (`fc1.weight` is
[out, in]). With the default HIDDEN = 1536 it has 115,210 parameters in four tensors.

    python make_mlp.py OUT.safetensors [--hidden 1536] [--seed 7] [--counter]

--counter adds an int64 scalar `step_counter` (like BatchNorm's `num_batches_tracked`): a tensor
the aggregator cannot train, left out with `model.exclude` and copied back by `model export`.
"""

import argparse

import numpy as np
from safetensors.numpy import save_file


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--hidden", type=int, default=1536)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--counter", action="store_true")
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    h = a.hidden
    # PyTorch's nn.Linear default: U(-1/sqrt(in), 1/sqrt(in)).
    tensors = {
        "fc1.weight": rng.uniform(-1 / 8, 1 / 8, size=(h, 64)).astype(np.float32),
        "fc1.bias": rng.uniform(-1 / 8, 1 / 8, size=(h,)).astype(np.float32),
        "fc2.weight": rng.uniform(-1 / np.sqrt(h), 1 / np.sqrt(h), size=(10, h)).astype(np.float32),
        "fc2.bias": np.zeros((10,), dtype=np.float32),
    }
    if a.counter:
        tensors["step_counter"] = np.array(5, dtype=np.int64)
    save_file(tensors, a.out, metadata={"model": f"mlp-64-{h}-10"})
    print(f"wrote {a.out}: {sum(t.size for t in tensors.values())} parameters in {len(tensors)} tensors")


if __name__ == "__main__":
    main()
