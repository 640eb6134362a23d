"""PyTorch bridge: a ``state_dict`` <-> Apiary's named float tensors, and a ready trainer.

Floating-point entries travel by name; integer and bool buffers (BatchNorm's
``num_batches_tracked``) stay local, as ``model.exclude`` leaves them out of the served model
(docs/PROTOCOL.md 2.2.1). torch is imported when this module is, not by ``import apiary``.

    from apiary.torch import TorchTrainer
    def fit(module, config):                      # your loop; returns (num_examples, metrics)
        ...
    apiary.run(TorchTrainer(net, fit), client_id="edge-1", aggregator="tcp://...:5556")

The aggregator serves the file written with ``safetensors.torch.save_file(net.state_dict(), F)``
(with ``model.exclude: ["*.num_batches_tracked"]`` for BatchNorm).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

from .client import TrainResult


def state_to_arrays(state: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The floating-point entries of a ``state_dict`` as float32 numpy arrays, by name."""
    return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in state.items() if v.is_floating_point()}


def load_arrays(module: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copies named arrays into ``module``'s parameters and floating buffers (dtype and device
    kept); entries the arrays do not name (integer buffers) are left as they are."""
    state = module.state_dict()
    unknown = sorted(set(arrays) - set(state))
    if unknown:
        raise KeyError(f"not in the module's state_dict: {', '.join(unknown)}")
    with torch.no_grad():
        for name, a in arrays.items():
            t = state[name]
            if tuple(t.shape) != tuple(a.shape):
                raise ValueError(f"{name}: the model sends {list(a.shape)}, the module has {list(t.shape)}")
            t.copy_(torch.tensor(np.asarray(a)).to(dtype=t.dtype, device=t.device))  # a copy: the model arrays are read-only


class TorchTrainer:
    """Wraps an ``nn.Module`` and the user's training loop ``fit(module, config) ->
    (num_examples, metrics)``: loads the global model, runs the loop, returns the module's
    floating-point state by name."""

    def __init__(self, module: torch.nn.Module, fit: Callable[[torch.nn.Module, dict[str, Any]], tuple[int, dict[str, float]]]) -> None:
        self.module, self.fit = module, fit

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> TrainResult:
        load_arrays(self.module, model)
        self.module.train()
        num_examples, metrics = self.fit(self.module, config)
        state = state_to_arrays(self.module.state_dict())
        return TrainResult({k: state[k] for k in model}, num_examples=num_examples, metrics=metrics)
