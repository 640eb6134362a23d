"""A shard map of 3: the SDK connects to every shard, assembles the model from their slices and
splits each update across them."""

from __future__ import annotations

from pathlib import Path

from typing import Any

import numpy as np
import pytest

import apiary

from conftest import start_shard_map
from test_fleet import StepTrainer, eventually, in_thread


class FrozenBias(StepTrainer):
    """Trains W, returns b unchanged (the model's own array: the SDK sends it uncopied, and the
    shard whose slice holds the end of W and b gets pieces of both)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_b: np.ndarray | None = None

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        if self.first_b is None:
            self.first_b = model["b"].copy()
        r = super().train(model, config)
        return apiary.TrainResult({"W": r.parameters["W"], "b": model["b"]}, num_examples=10)


@pytest.mark.parametrize("frozen", [False, True], ids=["all-trained", "bias-frozen"])
def test_a_shard_map_of_three(tmp_path: Path, frozen: bool) -> None:
    shards, ep = start_shard_map(tmp_path, chunk_parameters=64)
    try:
        trainer = FrozenBias() if frozen else StepTrainer()
        # The client knows one shard (the second); the map brings it to the others.
        c = apiary.Client(trainer, client_id="sharded", aggregator=ep(1, 0), insecure=True)
        t, out = in_thread(c, max_rounds=4)
        t.join(60)
        assert out and isinstance(out[0], apiary.Stats), out
        s = out[0]
        assert s.shards == 3
        assert s.merged == 4 * 3 and s.rejected == 0, s   # one receipt per shard per update
        # The model the trainer saw last is whole: every value moved toward 1 by every merge.
        eventually("the last merges to be broadcast", lambda: c.stats.model_version >= 4 * 3)
        model = c._model
        assert model is not None
        if isinstance(trainer, FrozenBias):
            assert np.all(model.values[:640] > 0), "a slice of W was never assembled"
            assert np.array_equal(model.values[640:], trainer.first_b), "the frozen bias changed"
        else:
            assert np.all(model.values > 0), "a slice of the model was never assembled"
        for agg in shards:
            assert agg.stop() == 0
        assert all("version=4" in a.log for a in shards), [a.log[-400:] for a in shards]
    finally:
        for agg in shards:
            agg.kill()
