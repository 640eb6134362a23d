"""Example (c), for users who have PyTorch: an nn.Module trained on an Apiary fleet.

A small MLP with BatchNorm on scikit-learn's digits (8x8 images, 10 classes). The aggregator
serves the module's own state_dict, written with safetensors.torch; BatchNorm's integer
``num_batches_tracked`` is left out with ``model.exclude`` (and stays local to each client).

    python torch_mlp.py init model.safetensors
    apiary aggregator --insecure --model model.safetensors      # with MODEL_EXCLUDE='*.num_batches_tracked'
    python torch_mlp.py train --id t-0 --part 0 --parts 5 --insecure    # ... t-4
    apiary model export --state state/checkpoints --model model.safetensors --exclude '*.num_batches_tracked' --out trained.safetensors
    # then: net.load_state_dict(safetensors.torch.load_file("trained.safetensors"))  (strict)
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

import apiary
from apiary.torch import TorchTrainer


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def shard(part: int, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    train = np.arange(len(y)) % 5 != 0
    x, y = x[train] / 16.0, y[train]
    order = np.argsort(y * 1000 + np.random.default_rng(0).integers(0, 1000, size=y.size), kind="stable")
    idx = np.array_split(order, parts)[part]
    return torch.tensor(x[idx], dtype=torch.float32), torch.tensor(y[idx])


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("init").add_argument("out")
    t = sub.add_parser("train")
    t.add_argument("--id", required=True)
    t.add_argument("--part", type=int, default=0)
    t.add_argument("--parts", type=int, default=5)
    t.add_argument("--aggregator", default="tcp://127.0.0.1:5556")
    t.add_argument("--insecure", action="store_true")
    t.add_argument("--rounds", type=int)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.command == "init":
        from safetensors.torch import save_file
        save_file(net().state_dict(), a.out)
        print(f"wrote {a.out}")
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
        return len(y), {"loss": float(loss)}

    stats = apiary.run(TorchTrainer(net(), fit), client_id=a.id, aggregator=a.aggregator, insecure=a.insecure, max_rounds=a.rounds)
    print(f"{a.id}: {stats.rounds} rounds, {stats.merged} merged")


if __name__ == "__main__":
    main()
