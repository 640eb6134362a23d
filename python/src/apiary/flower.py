"""Run an unmodified Flower ``NumPyClient`` on an Apiary fleet.

Flower clients exchange parameters as a *list* of arrays (``get_parameters`` / ``fit`` /
``evaluate``); Apiary exchanges them by *name*. The adapter needs the names of the list's
entries, in the client's order (for a PyTorch model: ``list(model.state_dict().keys())``):

    from apiary.flower import FlowerTrainer
    apiary.run(FlowerTrainer(MyNumPyClient(), names=["fc1.weight", "fc1.bias", ...]), client_id="edge-1", ...)

Without ``names``, the adapter matches the client's arrays to the model's tensors by shape,
and refuses when two tensors share a shape (position is never trusted silently). Flower is not
imported: any object with Flower's ``NumPyClient`` methods works.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from .client import EvaluateResult, TrainerOutputError, TrainResult


class NumPyClientLike(Protocol):
    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]: ...

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]: ...


def _scalars(config: dict[str, Any]) -> dict[str, Any]:
    """Flower configs are flat maps of scalars: the training plan with ``extra`` merged in."""
    out = {k: v for k, v in config.items() if isinstance(v, (bool, int, float, str))}
    extra = config.get("extra")
    if isinstance(extra, dict):
        out.update({k: v for k, v in extra.items() if isinstance(v, (bool, int, float, str))})
    return out


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class FlowerTrainer:
    """An Apiary trainer (and evaluator, when the client has ``evaluate``) around a Flower
    ``NumPyClient``."""

    def __init__(self, client: Any, names: Sequence[str] | None = None, dataset: str = "flower client's evaluation data") -> None:
        self.client = client
        self.names = list(names) if names is not None else None
        self.dataset = dataset

    def _order(self, model: dict[str, np.ndarray]) -> list[str]:
        if self.names is not None:
            missing = [n for n in self.names if n not in model]
            if missing or len(self.names) != len(model):
                raise TrainerOutputError(f"names {self.names} do not match the model's tensors {sorted(model)}")
            return self.names
        local = self.client.get_parameters({})
        shapes = [tuple(np.shape(a)) for a in local]
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for name, arr in model.items():
            by_shape.setdefault(tuple(arr.shape), []).append(name)
        order: list[str] = []
        for s in shapes:
            candidates = by_shape.get(s, [])
            if len(candidates) != 1:
                raise TrainerOutputError(
                    f"cannot tell which tensor of the model the client's array of shape {list(s)} is "
                    f"({'several' if candidates else 'none'} of that shape): pass names=[...] in the client's order")
            order.append(candidates[0])
        if len(set(order)) != len(model):
            raise TrainerOutputError(f"the client's {len(local)} arrays do not cover the model's tensors {sorted(model)}")
        self.names = order
        return order

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> TrainResult:
        names = self._order(model)
        params, num_examples, metrics = self.client.fit([model[n] for n in names], _scalars(config))
        if len(params) != len(names):
            raise TrainerOutputError(f"fit returned {len(params)} arrays, the model has {len(names)} tensors")
        return TrainResult(dict(zip(names, params)), num_examples=int(num_examples), metrics=_numbers(metrics or {}))

    def evaluate(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> EvaluateResult:
        names = self._order(model)
        loss, num_examples, metrics = self.client.evaluate([model[n] for n in names], _scalars(config))
        out = _numbers(metrics or {})
        out["loss"] = float(loss)
        return EvaluateResult(out, num_examples=int(num_examples))
