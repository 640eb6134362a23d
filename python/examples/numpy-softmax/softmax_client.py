"""Example (a): numpy softmax regression on the 8x8 digits, trained on an Apiary fleet.

The aggregator serves its bundled digits model (tensors ``W`` [64, 10] and ``b`` [10]); each
client trains it on its own shard of the digits (a seeded, label-skewed split) with plain numpy.

    apiary aggregator --insecure                                # terminal 1 (or with keys, see README)
    python softmax_client.py --id c0 --part 0 --parts 5 --insecure   # terminals 2..6, --part 0..4

The data is the repository's copy of scikit-learn's digits (``--data``), or scikit-learn's own
``load_digits()`` when the file is not given.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import apiary


def load_digits(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    if path:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)
        return raw[:, :64] / 16.0, raw[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk  # type: ignore[import-untyped]
    d = sk()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def split(y: np.ndarray, part: int, parts: int, seed: int = 0) -> np.ndarray:
    """A label-skewed (non-IID) split: each part gets mostly a few digits, some of all."""
    rng = np.random.default_rng(seed)
    order = np.argsort(y * 1000 + rng.integers(0, 1000, size=y.size), kind="stable")
    return np.array_split(order, parts)[part]


class SoftmaxTrainer:
    """Mini-batch SGD on cross-entropy; tensors by name, as the aggregator serves them."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        self.x, self.y, self.rng = x, y, np.random.default_rng(seed)

    def train(self, model: dict[str, np.ndarray], config: dict) -> apiary.TrainResult:
        w, b = model["W"].copy(), model["b"].copy()
        lr, batch = float(config.get("learning_rate", 0.1)), int(config.get("batch_size", 16))
        loss = 0.0
        for _ in range(int(config.get("local_epochs", 1))):
            order = self.rng.permutation(len(self.y))
            loss = 0.0
            for s in range(0, len(order), batch):
                i = order[s:s + batch]
                z = self.x[i] @ w + b
                p = np.exp(z - z.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                loss -= float(np.log(p[np.arange(len(i)), self.y[i]] + 1e-12).sum())
                p[np.arange(len(i)), self.y[i]] -= 1
                w -= lr * self.x[i].T @ p / len(i)
                b -= lr * p.mean(axis=0)
        accuracy = float(((self.x @ w + b).argmax(axis=1) == self.y).mean())
        return apiary.TrainResult({"W": w, "b": b}, num_examples=len(self.y),
                                  metrics={"loss": loss / len(self.y), "accuracy": accuracy})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=5)
    p.add_argument("--aggregator", default="tcp://127.0.0.1:5556")
    p.add_argument("--data", help="digits CSV (p0..p63,label); default: scikit-learn's load_digits()")
    p.add_argument("--rounds", type=int)
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--key")
    p.add_argument("--server-key")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    x, y = load_digits(a.data)
    train = np.arange(len(y)) % 5 != 0            # every fifth example is held out (test split)
    idx = np.flatnonzero(train)[split(y[train], a.part, a.parts)]
    stats = apiary.run(SoftmaxTrainer(x[idx], y[idx], seed=a.part), client_id=a.id, aggregator=a.aggregator,
                       insecure=a.insecure, secret_key_file=a.key, server_public_key_file=a.server_key, max_rounds=a.rounds)
    print(f"{a.id}: {stats.rounds} rounds, {stats.merged} merged, {stats.rejected} rejected")


if __name__ == "__main__":
    main()
