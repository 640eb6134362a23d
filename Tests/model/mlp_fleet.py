#!/usr/bin/env python3
"""A numpy MLP trained on an Apiary fleet, as a user without Swift would run it: a trainer
process (`train`) or an evaluator process (`evaluate`) on the Python SDK (`python/`,
`import apiary`).

    python mlp_fleet.py train    --snapshot S --id ID --parts 0,3,6 [--rounds N]
    python mlp_fleet.py evaluate --snapshot S --id ID [--until-accuracy A]

The trainer reads its hyper-parameters from the aggregator's training plan (learning rate,
epochs, batch size, and `extra.hidden_activation`, which it requires: the test checks that
`training.extra` reaches a trainer) and reports its training loss and accuracy with each
update. The evaluator reports every newer model's accuracy on the held-out digits test split.
Tensors arrive and leave by name.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading

import numpy as np

import apiary

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MLP_TENSORS = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


def load_digits():
    res = os.path.join(REPO, "Sources", "ApiaryLearning", "Resources")
    with open(os.path.join(res, "digits.csv")) as f:
        rows = list(csv.reader(f))[1:]
    data = np.array(rows, dtype=np.float32)
    x, y = data[:, :64] / 16.0, data[:, 64].astype(np.int64)
    with open(os.path.join(res, "partition.json")) as f:
        part = json.load(f)
    return x, y, part


def forward(w, x, act):
    z = x @ w["fc1.weight"].T + w["fc1.bias"]
    h = np.maximum(z, 0) if act == "relu" else np.tanh(z)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return z, h, p


def evaluate(w, x, y, act="relu"):
    _, _, p = forward(w, x, act)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return float((p.argmax(axis=1) == y).mean()), loss


def train(w, x, y, cfg, rng):
    lr, epochs, batch = cfg["learning_rate"], cfg["local_epochs"], cfg["batch_size"]
    act = cfg.get("extra", {}).get("hidden_activation")
    if act not in ("relu", "tanh"):
        raise SystemExit(f"training.extra.hidden_activation is {act!r}: the operator's settings did not arrive")
    w = {k: v.copy() for k, v in w.items()}
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            xb, yb = x[idx], y[idx]
            z, h, p = forward(w, xb, act)
            g = p.copy()
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            gw2, gb2 = g.T @ h, g.sum(axis=0)
            dh = g @ w["fc2.weight"]
            dz = dh * (z > 0) if act == "relu" else dh * (1 - h * h)
            gw1, gb1 = dz.T @ xb, dz.sum(axis=0)
            w["fc1.weight"] -= (lr * gw1).astype(np.float32)
            w["fc1.bias"] -= (lr * gb1).astype(np.float32)
            w["fc2.weight"] -= (lr * gw2).astype(np.float32)
            w["fc2.bias"] -= (lr * gb2).astype(np.float32)
    acc, loss = evaluate(w, x, y, act)
    return w, {"loss": loss, "accuracy": acc}


class Trainer:
    def __init__(self, cid: str, x: np.ndarray, y: np.ndarray) -> None:
        self.cid, self.x, self.y = cid, x, y
        self.rng = np.random.default_rng(hash(cid) & 0xFFFF)
        self.first = True

    def train(self, model, config):
        if set(model) != MLP_TENSORS:
            raise SystemExit(f"the aggregator's model {sorted(model)} is not this MLP's {sorted(MLP_TENSORS)}")
        if self.first:
            self.first = False
            print(f"{self.cid}: joined; {len(self.y)} examples; layout {[(k, list(v.shape)) for k, v in sorted(model.items())]}; "
                  f"training.extra {config.get('extra')}", flush=True)
        w, metrics = train(model, self.x, self.y, config, self.rng)
        return apiary.TrainResult(w, num_examples=len(self.y), metrics=metrics)


class Evaluator:
    def __init__(self, x: np.ndarray, y: np.ndarray, target: float) -> None:
        self.x, self.y, self.target = x, y, target
        self.dataset = f"digits test split ({len(y)} examples)"
        self.best = 0.0
        self.reached_at: int | None = None
        self.evaluations = 0

    def evaluate(self, model, config):
        acc, loss = evaluate(model, self.x, self.y, "relu")
        self.evaluations += 1
        self.best = max(self.best, acc)
        print(f"accuracy {acc:.4f} loss {loss:.4f}", flush=True)
        if acc >= self.target and self.reached_at is None:
            self.reached_at = self.evaluations
        return apiary.EvaluateResult({"accuracy": acc, "loss": loss}, num_examples=len(self.y))


def run_train(a) -> int:
    x, y, part = load_digits()
    idx = sorted(i for p in a.parts.split(",") for i in part["clients"][p])
    s = apiary.run(Trainer(a.id, x[idx], y[idx]), client_id=a.id, aggregator=a.snapshot, insecure=True, max_rounds=a.rounds)
    print(f"{a.id}: {s.merged} of {s.rounds} updates merged", flush=True)
    return 0 if s.merged > 0 else 1


def run_evaluate(a) -> int:
    x, y, part = load_digits()
    test = part["test_indices"]
    ev = Evaluator(x[test], y[test], a.until_accuracy)
    client = apiary.Client(evaluator=ev, client_id=a.id, aggregator=a.snapshot, insecure=True)

    def watch() -> None:
        # Stop once the report of the evaluation that reached the target was recorded, or at the limit.
        done = threading.Event()
        waited = 0.0
        while not done.wait(0.1) and waited < a.seconds:
            waited += 0.1
            if ev.reached_at is not None and client.stats.reports_recorded >= ev.reached_at:
                break
        client.stop()

    threading.Thread(target=watch, daemon=True).start()
    s = client.run()
    print(f"{a.id}: best accuracy {ev.best:.4f} (target {a.until_accuracy}); {s.reports_recorded} reports recorded", flush=True)
    return 0 if ev.best >= a.until_accuracy and s.reports_recorded > 0 else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["train", "evaluate"])
    p.add_argument("--snapshot", required=True, help="the aggregator's snapshot endpoint; model and update on the next two ports")
    p.add_argument("--id", required=True)
    p.add_argument("--parts", default="0")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--until-accuracy", type=float, default=0.85)
    a = p.parse_args()
    return run_train(a) if a.role == "train" else run_evaluate(a)


if __name__ == "__main__":
    sys.exit(main())
