"""The Flower and PyTorch adapters (PyTorch ones only where torch is importable)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import apiary
from apiary.flower import FlowerTrainer

from conftest import Aggregator


class FlowerStyleClient:
    """What a Flower NumPyClient looks like: parameters as a list, in its own order (b, W)."""

    def __init__(self) -> None:
        self.b, self.w = np.zeros(10, np.float32), np.zeros((64, 10), np.float32)
        self.fits = 0
        self.seen_config: dict[str, Any] = {}

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [self.b, self.w]

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        self.fits += 1
        self.seen_config = config
        b, w = parameters
        return [b + 1, w - 1], 32, {"loss": 0.5, "note": "strings are dropped"}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        b, _ = parameters
        return 0.25, 16, {"accuracy": float(b.mean())}


def test_an_unmodified_flower_client_trains_by_name(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    fc = FlowerStyleClient()
    s = apiary.Client(FlowerTrainer(fc), client_id="flwr-1", aggregator=agg.snapshot, insecure=True).run(max_rounds=3, handle_signals=False)
    assert s.merged == 3 and fc.fits == 3
    # Flower's flat config: the training plan with the operator's extra keys merged in.
    assert fc.seen_config["learning_rate"] == 0.1 and fc.seen_config["sdk_test"] is True


def test_flower_evaluate_reports_loss_and_metrics() -> None:
    t = FlowerTrainer(FlowerStyleClient())
    model = {"W": np.zeros((64, 10), np.float32), "b": np.full(10, 2, np.float32)}
    r = t.evaluate(model, {})
    assert r.metrics == {"accuracy": 2.0, "loss": 0.25} and r.num_examples == 16


def test_flower_shapes_that_do_not_tell_tensors_apart_need_names() -> None:
    class Twins(FlowerStyleClient):
        def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
            return [np.zeros(3), np.zeros(3)]

    model = {"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float32)}
    with pytest.raises(apiary.TrainerOutputError, match="pass names="):
        FlowerTrainer(Twins()).train(model, {})


def test_torch_bridge() -> None:
    torch = pytest.importorskip("torch")
    from apiary.torch import TorchTrainer, load_arrays, state_to_arrays

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    arrays = state_to_arrays(net.state_dict())
    assert "1.num_batches_tracked" not in arrays and arrays["0.weight"].dtype == np.float32
    load_arrays(net, {k: np.ones_like(v) for k, v in arrays.items()})
    assert float(net.state_dict()["0.weight"].sum()) == 12

    def fit(module: Any, config: dict[str, Any]) -> tuple[int, dict[str, float]]:
        with torch.no_grad():
            module[0].weight.mul_(2)
        return 8, {"loss": 0.1}

    r = TorchTrainer(net, fit).train({k: np.ones_like(v) for k, v in arrays.items()}, {})
    assert r.num_examples == 8 and float(np.asarray(r.parameters["0.weight"]).sum()) == 24
