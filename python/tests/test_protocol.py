"""The wire codec against the examples of docs/PROTOCOL.md, and the trainer-output checks."""

from __future__ import annotations

import numpy as np
import pytest

from apiary import TrainerOutputError, flatten, wire
from apiary.client import _by_name, _pieces

DIGITS = wire.Layout((wire.Tensor("W", (64, 10)), wire.Tensor("b", (10,))))


def test_layout_frame_and_fingerprint_match_the_protocol_page() -> None:
    assert DIGITS.encode().hex() == (
        "02000000015701024000000000000000" "0a00000000000000016201010a00000000000000")
    assert DIGITS.fingerprint() == 0xADD267FBE249FE49
    assert wire.Layout.decode(DIGITS.encode()) == DIGITS


@pytest.mark.parametrize("frame, what", [
    (b"", "shorter"), (b"\0\0\0\0", "0 tensors"), (DIGITS.encode() + b"\0", "trailing"),
    (b"\x01\0\0\0\x01a\x02\x00", "dtype"),
])
def test_bad_layout_frames_are_named(frame: bytes, what: str) -> None:
    with pytest.raises(wire.ProtocolError, match=what):
        wire.Layout.decode(frame)


def test_update_header_is_44_plus_id_bytes() -> None:
    h = wire.encode_update_header(7, 3, 99, 10, "edge-1", with_metrics=True)
    assert len(h) == 44 + 6 and h[:6] == b"APRY\x01\x04" and h[42] == 1


def test_a_client_epoch_is_flag_bit_2_and_a_u64_after_the_client_id() -> None:
    h = wire.encode_update_header(7, 3, 99, 10, "edge-1", with_metrics=True, epoch=0x1122334455667788)
    assert len(h) == 44 + 6 + 8 and h[42] == 1 | 4 and h[44:50] == b"edge-1"
    assert h[50:] == bytes.fromhex("8877665544332211")
    assert wire.encode_update_header(7, 3, 99, 10, "edge-1", with_metrics=False, epoch=0)[42] == 0  # none: as before
    report = wire.encode_report(7, 3, 99, 10, "edge-1", "d", {"a": 1.0}, epoch=5)[0]
    assert report[42] == 4 and report[50:] == (5).to_bytes(8, "little")
    epochs = {wire.new_epoch() for _ in range(100)}
    assert len(epochs) == 100 and all(0 < e < 2**64 for e in epochs)
    with pytest.raises(ValueError, match="u64"):
        wire.encode_update_header(7, 3, 99, 10, "edge-1", with_metrics=False, epoch=2**64)
    assert wire.REASONS[17] == "seq_out_of_range"
    assert wire.REASONS[18] == "not_privatized"
    assert wire.REASONS[19] == "anomalous"


def test_payload_frames_are_views_not_copies() -> None:
    v = np.arange(10, dtype=np.float32)
    frames = wire.payload_frames(v, 4)
    assert [len(f) for f in frames] == [16, 16, 8]
    v[0] = 42  # the frames see the array's memory
    assert np.frombuffer(frames[0], dtype="<f4")[0] == 42


def test_segment_frames_cover_any_range_of_pieces_without_copies() -> None:
    pieces = [np.arange(0, 5, dtype=np.float32), np.arange(5, 6, dtype=np.float32), np.arange(6, 13, dtype=np.float32)]
    whole = np.concatenate(pieces)
    for start, end in [(0, 13), (3, 9), (5, 6), (6, 13), (0, 5), (4, 12)]:
        frames = wire.segment_frames(pieces, start, end, 3)
        assert all(len(f) <= 12 for f in frames)
        assert np.array_equal(np.frombuffer(b"".join(frames), dtype="<f4"), whole[start:end]), (start, end)
    pieces[2][0] = 42  # views, not copies
    assert np.frombuffer(wire.segment_frames(pieces, 6, 7, 3)[0], dtype="<f4")[0] == 42


def test_an_unchanged_tensor_is_sent_from_the_model_and_the_rest_copied_once() -> None:
    model = np.arange(650, dtype=np.float32)
    named = _by_name(DIGITS, model)
    w = np.asarray(named["W"]) * 2
    pieces, buffer = _pieces(DIGITS, {"W": w, "b": named["b"]}, own=named)
    assert buffer is not None and len(pieces) == 2
    assert np.shares_memory(pieces[0], buffer) and not np.shares_memory(pieces[0], w)  # W copied
    assert np.shares_memory(pieces[1], model)                                           # b not
    assert np.array_equal(np.concatenate(pieces), np.concatenate([w.reshape(-1), model[640:]]))
    everything, nothing = _pieces(DIGITS, dict(named), own=named)
    assert nothing is None and all(np.shares_memory(p, model) for p in everything)
    # An equal array that is not the model's own is copied (the trainer may change it later).
    copied, buf = _pieces(DIGITS, {"W": named["W"].copy(), "b": named["b"]}, own=named)
    assert buf is not None and not np.shares_memory(copied[0], model)


def test_trainer_output_by_name_in_any_order() -> None:
    w, b = np.ones((64, 10), np.float32), np.full(10, 2, np.float64)
    flat = flatten(DIGITS, {"b": b, "W": w})
    assert flat.dtype == np.float32 and flat[:640].sum() == 640 and flat[640:].sum() == 20


@pytest.mark.parametrize("tensors, message", [
    ({"W": np.ones((64, 10))}, "missing b"),
    ({"W": np.ones((64, 10)), "b": np.ones(10), "c": np.ones(1)}, "not in the model c"),
    ({"W": np.ones((10, 64)), "b": np.ones(10)}, "W has shape [10, 64], the model [64, 10]"),
    ({"W": np.ones((64, 10), np.int64), "b": np.ones(10)}, "W has dtype int64"),
    ({"W": np.full((64, 10), np.nan), "b": np.ones(10)}, "W is not finite"),
])
def test_bad_trainer_output_is_a_clear_error(tensors: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(TrainerOutputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        flatten(DIGITS, tensors)


def test_metrics_are_checked_before_sending() -> None:
    assert wire.metrics_frame({"loss": 0.5}) == b'{"loss":0.5}'
    with pytest.raises(ValueError, match="not finite"):
        wire.metrics_frame({"loss": float("inf")})
    with pytest.raises(ValueError, match="not a number"):
        wire.metrics_frame({"loss": "low"})  # type: ignore[dict-item]
