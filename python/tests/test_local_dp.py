"""Local differential privacy (docs/PROTOCOL.md 4.8): the SDK clips and noises its updates
for an aggregator whose config carries ``local_dp``, and flags them (header flag bit 3)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import zmq

import apiary
from apiary import wire
from apiary.client import LocalDP, local_dp_settings, privatize

from conftest import Aggregator, start_shard_map, write_config
from test_fleet import StepTrainer, eventually, in_thread


def test_a_delta_over_the_bound_is_clipped_to_it_and_one_within_is_kept() -> None:
    rng = np.random.Generator(np.random.PCG64(1))
    dp = LocalDP(clip_norm=1.0, noise_multiplier=1e-9)
    big = np.array([3, 4, 0, 0], dtype=np.float32)
    assert privatize(big, dp, rng) == pytest.approx(5.0)
    np.testing.assert_allclose(big, [0.6, 0.8, 0, 0], atol=1e-6)
    small = np.array([0.3, -0.4, 0, 0], dtype=np.float32)
    assert privatize(small, dp, rng) == pytest.approx(0.5)
    np.testing.assert_allclose(small, [0.3, -0.4, 0, 0], atol=1e-6)


def test_the_noise_has_standard_deviation_z_times_c() -> None:
    rng = np.random.Generator(np.random.PCG64(42))
    zeros = np.zeros(200_000, dtype=np.float32)
    privatize(zeros, LocalDP(clip_norm=0.5, noise_multiplier=3.0), rng)
    assert abs(float(zeros.std(ddof=1)) - 1.5) / 1.5 < 0.01
    assert abs(float(zeros.mean())) < 4 * 1.5 / np.sqrt(zeros.size)


def test_a_result_that_is_not_finite_is_refused_and_left_as_it_is() -> None:
    v = np.array([1, np.inf, 2], dtype=np.float32)
    with pytest.raises(apiary.TrainerOutputError):
        privatize(v, LocalDP(1.0, 1.0), np.random.Generator(np.random.PCG64(3)))
    assert v[1] == np.inf and v[0] == 1


def test_the_config_object_is_checked() -> None:
    assert local_dp_settings({}) is None
    assert local_dp_settings({"local_dp": {"clip_norm": 2, "noise_multiplier": 0.5}}) == LocalDP(2.0, 0.5)
    for bad in ({"clip_norm": 0, "noise_multiplier": 1}, {"clip_norm": 1}, {"clip_norm": True, "noise_multiplier": 1},
                {"clip_norm": 1, "noise_multiplier": float("nan")}, [1, 2]):
        with pytest.raises(apiary.ClientConfigError):
            local_dp_settings({"local_dp": bad})


def test_the_header_flag_bit_3_says_privatized() -> None:
    h = wire.encode_update_header(1, 2, 3, 0, "c1", False, delta=True, privatized=True)
    assert struct.unpack_from("<H", h, 42)[0] == 0b1010


CLIP = 0.01


@pytest.mark.parametrize("algorithm", ["fedasync", "fedbuff"])
def test_a_python_client_privatizes_for_a_local_dp_aggregator_and_its_updates_merge(
        make_aggregator: Callable[..., Aggregator], algorithm: str) -> None:
    agg = make_aggregator(algorithm=algorithm, buffer_size=2, max_wait_s=0.5, privacy_mode="local", privacy_clip=CLIP,
                          privacy_noise_multiplier=1e-6)
    client = apiary.Client(StepTrainer(), client_id="py-ldp", aggregator=agg.snapshot, insecure=True)
    t, out = in_thread(client, max_rounds=4)
    t.join(60)
    assert out and isinstance(out[0], apiary.Stats), out
    s = out[0]
    assert s.merged == 4 and s.rejected == 0, s
    assert client._config.get("local_dp") == {"clip_norm": CLIP, "noise_multiplier": 1e-6}
    assert "local_dp" in client._config.get("features", [])
    # Unclipped, a step moves the model halfway to 1 (a norm near 2 and more): clipped on the
    # client to C, at most C per version.
    eventually("the last merge to be broadcast", lambda: client.stats.model_version >= (4 if algorithm == "fedasync" else 2))
    model = client._model
    assert model is not None
    norm = float(np.linalg.norm(model.values))
    assert 0 < norm <= model.version * CLIP * 1.01 + 1e-3, (norm, model.version)
    assert agg.stop() == 0


def test_an_update_without_bit_3_is_refused_not_privatized(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator(privacy_mode="local", privacy_clip=1.0, privacy_noise_multiplier=1.0)
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    sub = ctx.socket(zmq.SUB)
    push = ctx.socket(zmq.PUSH)
    try:
        for s in (dealer, sub, push):
            s.setsockopt(zmq.LINGER, 0)
        port = agg.port
        dealer.connect(f"tcp://127.0.0.1:{port}")
        sub.connect(f"tcp://127.0.0.1:{port + 1}")
        sub.setsockopt(zmq.SUBSCRIBE, b"receipt/raw/")
        sub.setsockopt(zmq.SUBSCRIBE, b"model")
        push.connect(f"tcp://127.0.0.1:{port + 2}")
        dealer.send(wire.encode_snapshot_request(1, "raw"))
        assert dealer.poll(10_000)
        reply = wire.decode_snapshot_reply(dealer.recv_multipart())
        assert reply.config["local_dp"] == {"clip_norm": 1.0, "noise_multiplier": 1.0}
        # The model heartbeat says the subscription is in place.
        assert sub.poll(10_000)
        header = wire.encode_update_header(reply.run_id, reply.version, 1, 1, "raw", False)
        push.send_multipart([header, reply.layout_frame, (reply.values + 1).astype("<f4").tobytes()])
        deadline = 100
        while deadline:
            assert sub.poll(10_000)
            frames = sub.recv_multipart()
            if frames[0].startswith(b"receipt/"):
                r = wire.decode_receipt(frames)
                assert r.decision == wire.REJECTED and r.reason == 18 and r.reason_name == "not_privatized", r
                assert "flag bit 3" in r.message
                break
            deadline -= 1
        assert deadline
        # Nothing was merged: the model is the one before.
        dealer.send(wire.encode_snapshot_request(2, "raw"))
        assert dealer.poll(10_000)
        after = wire.decode_snapshot_reply(dealer.recv_multipart())
        assert after.version == reply.version and np.array_equal(after.values, reply.values)
    finally:
        for s in (dealer, sub, push):
            s.close()
    assert agg.stop() == 0


def test_on_a_shard_map_the_whole_update_is_clipped_once_before_it_is_split(tmp_path: Path) -> None:
    shards, ep = start_shard_map(tmp_path, count=2, chunk_parameters=64, privacy_mode="local", privacy_clip=CLIP,
                                 privacy_noise_multiplier=1e-6)
    try:
        c = apiary.Client(StepTrainer(), client_id="sharded-ldp", aggregator=ep(0, 0), insecure=True)
        t, out = in_thread(c, max_rounds=3)
        t.join(60)
        assert out and isinstance(out[0], apiary.Stats), out
        s = out[0]
        assert s.shards == 2 and s.merged == 3 * 2 and s.rejected == 0, s
        eventually("the last merges to be broadcast", lambda: c.stats.model_version >= 3 * 2)
        model = c._model
        assert model is not None
        # Each update moved the whole model by at most alpha C (clipped over both slices
        # together), not C per slice: 3 updates, alpha 0.6.
        norm = float(np.linalg.norm(model.values))
        assert 0 < norm <= 3 * 0.6 * CLIP * 1.01 + 1e-4, norm
        assert all(np.any(model.values[a:b] != 0) for a, b in model.ranges)
        for agg in shards:
            assert agg.stop() == 0
    finally:
        for agg in shards:
            agg.kill()


def test_local_dp_turned_on_at_a_restart_on_the_same_run(tmp_path: Path, make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    c = apiary.Client(StepTrainer(), client_id="turned-on", aggregator=agg.snapshot, insecure=True, new_model_wait=0.1)
    t, out = in_thread(c)
    try:
        eventually("merges without local DP", lambda: c.stats.merged >= 3)
        assert agg.stop() == 0
        before = c.stats.merged
        write_config(tmp_path, agg.port, privacy_mode="local", privacy_clip=CLIP, privacy_noise_multiplier=1e-6)
        agg.start()  # same state directory: the same run, now requiring local DP
        # A refused update (not_privatized) makes the client fetch the config; then it privatizes.
        eventually("privatized merges after the restart", lambda: c.stats.merged >= before + 3, within=60)
        assert c._config.get("local_dp") == {"clip_norm": CLIP, "noise_multiplier": 1e-6}
    finally:
        c.stop()
        t.join(20)
    assert out and isinstance(out[0], apiary.Stats), out
    assert agg.stop() == 0
