"""Example (c), for users who have PyTorch: an nn.Module trained on an Apiary fleet.

A small MLP with BatchNorm on scikit-learn's digits (8x8 images, 10 classes). The aggregator
serves the module's own state_dict, written with safetensors.torch; BatchNorm's integer
``num_batches_tracked`` is left out with ``model.exclude`` (and stays local to each client).

    python torch_mlp.py init model.safetensors
    apiary aggregator --insecure --model model.safetensors      # with MODEL_EXCLUDE='*.num_batches_tracked'
    python torch_mlp.py train --id t-0 --part 0 --parts 5 --insecure    # ... t-4
    python torch_mlp.py evaluate --id t-eval --insecure                 # test accuracy, on the dashboard
    apiary model export --state state/checkpoints --model model.safetensors --exclude '*.num_batches_tracked' --out trained.safetensors
    python torch_mlp.py check trained.safetensors                      # load_state_dict (strict), test accuracy
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

import apiary
from apiary.torch import TorchTrainer, load_arrays


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def split(train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every fifth image is held out for testing."""
    x, y = load_digits(return_X_y=True)
    keep = (np.arange(len(y)) % 5 != 0) == train
    return x[keep] / 16.0, y[keep]


def accuracy(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    module.eval()
    with torch.no_grad():
        out = module(x)
        return float((out.argmax(1) == y).float().mean()), float(torch.nn.functional.cross_entropy(out, y))


class Evaluator:
    """Test accuracy of the global model (BatchNorm in eval mode, with the served running stats)."""

    dataset = "digits test split (360 images)"

    def __init__(self) -> None:
        self.net = net()
        x, y = split(train=False)
        self.x, self.y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def evaluate(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.EvaluateResult:
        load_arrays(self.net, model)
        acc, loss = accuracy(self.net, self.x, self.y)
        return apiary.EvaluateResult({"accuracy": acc, "loss": loss}, num_examples=len(self.y))


def shard(part: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = split(train=True)
    # A shuffled (IID) split: BatchNorm's running statistics, averaged across clients that each
    # saw two or three classes, do not fit the test set (FedBN's problem); example (a) is the
    # label-skewed one.
    order = np.random.default_rng(0).permutation(y.size)
    idx = np.array_split(order, parts)[part]
    return torch.tensor(x[idx], dtype=torch.float32), torch.tensor(y[idx])


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init").add_argument("out")
    sub.add_parser("check").add_argument("file")
    for name in ("train", "evaluate"):
        t = sub.add_parser(name)
        t.add_argument("--id", required=True)
        t.add_argument("--aggregator", default="tcp://127.0.0.1:5556")
        t.add_argument("--insecure", action="store_true")
        if name == "train":
            t.add_argument("--part", type=int, default=0)
            t.add_argument("--parts", type=int, default=5)
            t.add_argument("--rounds", type=int)
    a = p.parse_args()
    torch.set_num_threads(1)  # one process per client on a small machine: no thread oversubscription
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.command == "init":
        from safetensors.torch import save_file
        save_file(net().state_dict(), a.out)
        print(f"wrote {a.out}")
        return
    if a.command == "check":
        from safetensors.torch import load_file
        module = net()
        module.load_state_dict(load_file(a.file), strict=True)
        x, y = split(train=False)
        acc, loss = accuracy(module, torch.tensor(x, dtype=torch.float32), torch.tensor(y))
        print(f"{a.file}: loads with load_state_dict(strict=True); test accuracy {acc:.4f}, loss {loss:.4f}")
        return
    if a.command == "evaluate":
        apiary.evaluate(Evaluator(), client_id=a.id, aggregator=a.aggregator, insecure=a.insecure)
        return
    x, y = shard(a.part, a.parts)

    def fit(module: torch.nn.Module, config: dict[str, Any]) -> tuple[int, dict[str, float]]:
        opt = torch.optim.SGD(module.parameters(), lr=float(config.get("learning_rate", 0.1)))
        loss = torch.tensor(0.0)
        for _ in range(int(config.get("local_epochs", 1))):
            for i in torch.randperm(len(y)).split(int(config.get("batch_size", 16))):
                if len(i) < 2:
                    continue  # BatchNorm needs two examples
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(module(x[i]), y[i])
                loss.backward()
                opt.step()
        return len(y), {"loss": float(loss.detach())}

    stats = apiary.run(TorchTrainer(net(), fit), client_id=a.id, aggregator=a.aggregator, insecure=a.insecure, max_rounds=a.rounds)
    print(f"{a.id}: {stats.rounds} rounds, {stats.merged} merged")


if __name__ == "__main__":
    main()
