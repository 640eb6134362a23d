"""Apiary's Python client SDK: train a numpy, scikit-learn or PyTorch model on an Apiary fleet.

    import apiary

    class MyTrainer:
        def train(self, model, config):
            new = {name: w - config["learning_rate"] * grad(name, w) for name, w in model.items()}
            return apiary.TrainResult(new, num_examples=len(my_data), metrics={"loss": 0.3})

    apiary.run(MyTrainer(), client_id="edge-1", aggregator="tcp://127.0.0.1:5556")

Tensors arrive and leave by name (``dict[str, numpy.ndarray]``). The wire format is
docs/PROTOCOL.md, version 1; the package's major version is the protocol version.
"""

from .client import (Client, ClientConfigError, EvaluateResult, Evaluator, Stats, Trainer, TrainerOutputError, TrainResult,
                     endpoints_from, evaluate, flatten, run)
from .keys import KeyFileError, KeyPair
from .wire import PROTOCOL_VERSION, Layout, ProtocolError, Tensor

__version__ = "1.0.0"

__all__ = [
    "Client", "ClientConfigError", "EvaluateResult", "Evaluator", "KeyFileError", "KeyPair", "Layout", "PROTOCOL_VERSION",
    "ProtocolError", "Stats", "Tensor", "TrainResult", "Trainer", "TrainerOutputError", "endpoints_from", "evaluate",
    "flatten", "run", "__version__",
]
