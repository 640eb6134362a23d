"""Update codecs end to end (docs/PROTOCOL.md 3.4.1): SDK clients against real `apiary
aggregator` processes that ask for int8, top-k, float16 or bfloat16 (config `compression.*`);
the deltas are merged, the model learns or moves as it should, and the bytes shrink."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import zmq

import apiary
from apiary import wire

from conftest import ROOT, Aggregator, start_shard_map
from test_fleet import StepTrainer, eventually, in_thread

sys.path.insert(0, str(ROOT / "python" / "examples" / "numpy-softmax"))
from softmax_client import SoftmaxTrainer, load_digits, split  # noqa: E402

DIGITS_CSV = ROOT / "Sources" / "ApiaryLearning" / "Resources" / "digits.csv"


def snapshot(agg_snapshot: str) -> wire.SnapshotReply:
    """One snapshot, fetched by hand (a DEALER, as in PROTOCOL.md 6)."""
    ctx = zmq.Context.instance()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(agg_snapshot)
    try:
        d.send(wire.encode_snapshot_request(1, "codec-probe"))
        if not d.poll(10_000):
            raise AssertionError(f"no snapshot reply from {agg_snapshot}")
        return wire.decode_snapshot_reply(d.recv_multipart())
    finally:
        d.close()


def require_codecs(agg: Aggregator, codec: str) -> wire.SnapshotReply:
    """Skips when the aggregator binary predates codecs (no feature `codecs`: rebuild it after
    the aggregator's "codecs:" commit); otherwise checks it asks for ``codec``."""
    reply = snapshot(agg.snapshot)
    if "codecs" not in reply.features:
        pytest.skip("the apiary binary does not take update codecs (no 'codecs' feature in its snapshot config): "
                    "rebuild .build/debug/apiary (swift build --product apiary) after the aggregator's codecs commit")
    assert reply.config.get("codec") == codec, reply.config
    return reply


def accuracy(agg: Aggregator) -> float:
    """The aggregator's latest test accuracy (its evaluator on the held-out digits)."""
    found = re.findall(r"accuracy=([0-9.]+)", agg.log)
    return float(found[-1]) if found else 0.0


def digits_trainers(parts: int) -> list[SoftmaxTrainer]:
    x, y = load_digits(str(DIGITS_CSV))
    train = np.arange(len(y)) % 5 != 0
    return [SoftmaxTrainer(x[idx], y[idx], seed=k)
            for k, idx in enumerate(np.flatnonzero(train)[split(y[train], k, parts)] for k in range(parts))]


def run_all(clients: list[apiary.Client], rounds: int) -> list[apiary.Stats]:
    threads = [in_thread(c, max_rounds=rounds) for c in clients]
    for t, _ in threads:
        t.join(120)
    out = []
    for t, got in threads:
        assert got and isinstance(got[0], apiary.Stats), got
        out.append(got[0])
    return out


@pytest.mark.parametrize("codec, settings", [
    ("int8", {"int8_block": 64}),           # 650 values: 10 blocks of 64 and one of 10
    ("topk", {"topk_fraction": 0.2}),       # 130 of 650 values per delta
], ids=["int8", "topk"])
def test_fedbuff_learns_the_digits_from_compressed_deltas(make_aggregator: Callable[..., Aggregator], codec: str,
                                                          settings: dict[str, Any]) -> None:
    agg = make_aggregator(algorithm="fedbuff", buffer_size=3, max_wait_s=2, codec=codec, evaluate=True, evaluate_every=1,
                          **settings)
    reply = require_codecs(agg, codec)
    start = accuracy(agg)
    n = reply.parameter_count
    rounds = 12
    clients = [apiary.Client(t, client_id=f"{codec}-{k}", aggregator=agg.snapshot, insecure=True, new_model_wait=1.0)
               for k, t in enumerate(digits_trainers(3))]
    for s in run_all(clients, rounds):
        assert s.merged == rounds and s.rejected == 0 and s.pending == 0, s
        assert s.codec == codec
        if codec == "int8":  # a 4-byte scale per block of 64, a byte per value: 27 % of float32
            assert s.payload_bytes == rounds * (n + 4 * -(-n // 64)) and s.float32_bytes == rounds * 4 * n
        else:                # 6 bytes per entry for 20 % of the values: 30 % of float32
            assert s.payload_bytes == rounds * 6 * wire.topk_count(n, 0.2)
    eventually("the aggregator's evaluator to see the trained model", lambda: accuracy(agg) >= 0.8, within=30)
    assert start <= 0.2  # (the bundled model starts at chance)
    assert agg.stop() == 0
    assert "bad_encoding" not in agg.log and "wrong_update_kind" not in agg.log


class Drift:
    """Proposes the same change every round: +0.01 to every value (a delta)."""

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        return apiary.TrainResult({k: np.full(v.shape, 0.01, np.float32) for k, v in model.items()}, num_examples=1, delta=True)


def test_topk_error_feedback_moves_every_value_in_turn(make_aggregator: Callable[..., Aggregator]) -> None:
    # One client, 10 % of the values per delta, K = 1 (every delta is a server step of lr 1).
    # All values tie, so without error feedback the first 65 would go every time; with it,
    # what was left out grows until it goes, and the model ends exactly at
    # first + 12 x 0.01 - the residual the client still holds.
    agg = make_aggregator(algorithm="fedbuff", buffer_size=1, max_wait_s=2, codec="topk", topk_fraction=0.1)
    reply = require_codecs(agg, "topk")
    first = reply.values.copy()
    c = apiary.Client(Drift(), client_id="topk-drift", aggregator=agg.snapshot, insecure=True, new_model_wait=2.0, max_pending=1)
    (s,) = run_all([c], 12)
    assert s.merged == 12 and s.rejected == 0, s
    assert s.payload_bytes == 12 * 6 * 65 and s.float32_bytes == 12 * 2600  # 15 % of float32
    last = snapshot(agg.snapshot)
    residual = c._feedback.residual(0)
    assert last.version == 12 and residual is not None
    assert np.all(np.abs(last.values - first) > 1e-3), "a value never went out"
    assert np.allclose(last.values, first + 12 * 0.01 - residual, atol=1e-4)
    assert agg.stop() == 0
    assert "bad_encoding" not in agg.log


@pytest.mark.parametrize("codec", ["float16", "bfloat16", "int8"])
def test_fedasync_takes_full_models_in_a_lossy_codec(make_aggregator: Callable[..., Aggregator], codec: str) -> None:
    agg = make_aggregator(codec=codec, int8_block=100)
    reply = require_codecs(agg, codec)
    first = reply.values.copy()
    clients = [apiary.Client(StepTrainer(), client_id=f"{codec}-full-{k}", aggregator=agg.snapshot, insecure=True) for k in range(2)]
    for s in run_all(clients, 4):
        assert s.merged == 4 and s.rejected == 0 and s.codec == codec, s
        assert s.payload_bytes == 4 * (2 * 650 if codec != "int8" else 650 + 4 * 7)
    last = snapshot(agg.snapshot)
    assert last.version == 8 and clients[0]._feedback.residual(0) is None  # a full model has no residual
    # 8 merges toward a trainer that halves the distance to 1: the model is much nearer 1.
    assert np.abs(last.values - 1).max() < 0.5 * np.abs(first - 1).max()
    assert agg.stop() == 0
    assert "bad_encoding" not in agg.log


def test_int8_deltas_to_a_shard_map_of_three(tmp_path: Path) -> None:
    # Each shard gets its slice encoded on its own (blocks start at the slice), with its own residual.
    shards, ep = start_shard_map(tmp_path, chunk_parameters=64, algorithm="fedbuff", buffer_size=1, codec="int8", int8_block=50)
    try:
        require_codecs(shards[0], "int8")
        c = apiary.Client(StepTrainer(), client_id="sharded-int8", aggregator=ep(0, 0), insecure=True, new_model_wait=0.5)
        (s,) = run_all([c], 4)
        assert s.shards == 3 and s.merged == 4 * 3 and s.rejected == 0, s
        ranges = [(e.start, e.end) for e in (c._shard_map or [])]
        assert len(ranges) == 3
        assert s.payload_bytes == 4 * sum((end - start) + 4 * -(-(end - start) // 50) for start, end in ranges)
        assert all(c._feedback.residual(k) is not None for k in range(3))
        for agg in shards:
            last = snapshot(agg.snapshot)
            # (four deltas of buffer size 1: at most 4 steps)
            assert 1 <= last.version <= 4 and np.all(last.values > 0)
        for agg in shards:
            assert agg.stop() == 0
            assert "bad_encoding" not in agg.log
    finally:
        for agg in shards:
            agg.kill()


def test_bad_encodings_are_rejected_as_bad_encoding(make_aggregator: Callable[..., Aggregator]) -> None:
    # Hand-made updates (raw sockets, as in PROTOCOL.md 6) that break the rules of 3.4.1: the
    # receipt's reason is 16, which the SDK names.
    agg = make_aggregator(codec="int8")
    reply = require_codecs(agg, "int8")
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"receipt/raw-1/")
    sub.connect(f"tcp://127.0.0.1:{agg.port + 1}")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{agg.port + 2}")
    good = wire.encode_payload(reply.values + 0.01, wire.INT8, with_decoded=False).frames
    minus128 = bytearray(bytes(good[0]))
    minus128[10] = 0x80
    topk = wire.encode_payload(reply.values + 0.01, wire.TOPK, topk_fraction=0.1).frames
    cases = [(wire.INT8, [bytes(minus128)]), (wire.INT8, [b"\0\0\x80\x3f"]), (wire.TOPK, [bytes(f) for f in topk]),
             (wire.FLOAT16, [b"\0" * 1299])]
    try:
        got: list[wire.Receipt] = []
        seq = 0
        for codec, frames in cases:
            sent: set[int] = set()
            for _ in range(50):  # the SUB may still be joining: send again (a new seq) until a receipt comes
                seq += 1
                sent.add(seq)
                header = wire.encode_update_header(reply.run_id, reply.version, seq, 1, "raw-1", with_metrics=False, codec=codec)
                push.send_multipart([header, reply.layout_frame, *frames])
                if sub.poll(200):
                    r = wire.decode_receipt(sub.recv_multipart())
                    if r.seq in sent:
                        got.append(r)
                        break
            else:
                raise AssertionError(f"no receipt for the {wire.CODEC_NAMES[codec]} case")
            while sub.poll(300):  # receipts of the other sends of this case
                sub.recv_multipart()
        assert [(r.decision_name, r.reason_name) for r in got] == [("rejected", "bad_encoding")] * len(cases), [r.message for r in got]
        assert snapshot(agg.snapshot).version == 0  # nothing merged
    finally:
        sub.close(linger=0)
        push.close(linger=0)
