"""Example (b): a scikit-learn MLPClassifier trained on an Apiary fleet.

The data is scikit-learn's breast cancer set (569 tumours, 30 features, 2 classes); each client
holds a label-skewed shard of the training split, the evaluator the held-out test split. The
model's tensors are the classifier's own arrays, by name: ``coefs_0`` [30, H], ``coefs_1``
[H, 1], ``intercepts_0`` [H], ``intercepts_1`` [1].

    python sklearn_mlp.py init model.safetensors              # the starting weights, for --model
    apiary aggregator --config aggregator.yaml --model model.safetensors
    python sklearn_mlp.py train --id sk-0 --part 0 --parts 5  # one per client
    python sklearn_mlp.py evaluate --id sk-eval               # reports test accuracy
"""

from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

import apiary

HIDDEN = 16


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The train and test splits, standardized. (A real fleet agrees on the scaling up front;
    here every process derives it from the same public data set.)"""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), y_train, scaler.transform(x_test), y_test


def classifier(seed: int, learning_rate: float = 0.01) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=(HIDDEN,), solver="sgd", learning_rate_init=learning_rate, momentum=0.9,
                         batch_size=16, random_state=seed)


def to_tensors(clf: MLPClassifier) -> dict[str, np.ndarray]:
    out = {f"coefs_{i}": c.astype(np.float32) for i, c in enumerate(clf.coefs_)}
    out.update({f"intercepts_{i}": b.astype(np.float32) for i, b in enumerate(clf.intercepts_)})
    return out


def load_into(clf: MLPClassifier, model: dict[str, np.ndarray]) -> None:
    clf.coefs_ = [model[f"coefs_{i}"].astype(np.float64) for i in range(len(clf.coefs_))]
    clf.intercepts_ = [model[f"intercepts_{i}"].astype(np.float64) for i in range(len(clf.intercepts_))]


def ready(seed: int, x: np.ndarray, y: np.ndarray) -> MLPClassifier:
    """A classifier whose arrays exist (one partial_fit on two examples of both classes)."""
    clf = classifier(seed)
    first = [int(np.flatnonzero(y == c)[0]) for c in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # batch_size clipped to the two examples
        clf.partial_fit(x[first], y[first], classes=np.array([0, 1]))
    return clf


class Trainer:
    """Local epochs of the classifier's own partial_fit on this client's shard."""

    def __init__(self, part: int, parts: int) -> None:
        x, y, _, _ = data()
        order = np.argsort(y * 10_000 + np.random.default_rng(0).integers(0, 10_000, size=y.size), kind="stable")
        idx = np.array_split(order, parts)[part]     # label-skewed: low parts mostly class 0
        self.x, self.y = x[idx], y[idx]
        self.clf = ready(part, x, y)

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        load_into(self.clf, model)
        self.clf.learning_rate_init = float(config.get("learning_rate", 0.01))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(int(config.get("local_epochs", 1))):
                self.clf.partial_fit(self.x, self.y)
        return apiary.TrainResult(to_tensors(self.clf), num_examples=len(self.y),
                                  metrics={"loss": float(self.clf.loss_), "accuracy": float(self.clf.score(self.x, self.y))})


class Evaluator:
    dataset = "breast cancer test split (143 examples)"

    def __init__(self) -> None:
        x, y, self.x, self.y = data()
        self.clf = ready(0, x, y)

    def evaluate(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.EvaluateResult:
        load_into(self.clf, model)
        p = np.clip(self.clf.predict_proba(self.x)[:, 1], 1e-7, 1 - 1e-7)
        loss = float(-np.mean(self.y * np.log(p) + (1 - self.y) * np.log(1 - p)))
        return apiary.EvaluateResult({"accuracy": float(self.clf.score(self.x, self.y)), "loss": loss}, num_examples=len(self.y))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write the starting weights as safetensors")
    init.add_argument("out")
    for name in ("train", "evaluate"):
        s = sub.add_parser(name)
        s.add_argument("--id", required=True)
        s.add_argument("--aggregator", default="tcp://127.0.0.1:5556")
        s.add_argument("--insecure", action="store_true")
        if name == "train":
            s.add_argument("--part", type=int, default=0)
            s.add_argument("--parts", type=int, default=5)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.command == "init":
        from safetensors.numpy import save_file
        x, y, _, _ = data()
        tensors = to_tensors(ready(42, x, y))
        save_file(tensors, a.out, metadata={"model": f"sklearn MLPClassifier 30-{HIDDEN}-1"})
        print(f"wrote {a.out}: " + ", ".join(f"{k}{list(v.shape)}" for k, v in sorted(tensors.items())))
    elif a.command == "train":
        apiary.run(Trainer(a.part, a.parts), client_id=a.id, aggregator=a.aggregator, insecure=a.insecure)
    else:
        apiary.evaluate(Evaluator(), client_id=a.id, aggregator=a.aggregator, insecure=a.insecure)


if __name__ == "__main__":
    main()
