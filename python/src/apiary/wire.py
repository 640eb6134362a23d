"""The Apiary wire protocol, version 1 (docs/PROTOCOL.md): encoders and decoders, no sockets.

Every function here follows one section of PROTOCOL.md; the section is named in its docstring.
Integers are little-endian; tensor values are float32 little-endian in raw frames.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"APRY"

MODEL_CHUNK = 1
SNAPSHOT_REQUEST = 2
SNAPSHOT_REPLY = 3
CLIENT_UPDATE = 4
RECEIPT = 5
EVALUATION_REPORT = 6

DTYPE_FLOAT32 = 1

# Update codecs (3.4.1): the value of CLIENT_UPDATE header byte 40, by the config's `codec` name.
FLOAT32, FLOAT16, BFLOAT16, INT8, TOPK = 0, 1, 2, 3, 4
CODECS = {"float32": FLOAT32, "float16": FLOAT16, "bfloat16": BFLOAT16, "int8": INT8, "topk": TOPK}
CODEC_NAMES = {code: name for name, code in CODECS.items()}
DEFAULT_CODEC_BLOCK = 4096
DEFAULT_TOPK_FRACTION = 0.01
FLOAT16_MAX = 65504.0
MAX_PAYLOAD_FRAMES = 65536  # per update (5)
# A top-k entry: u32 index, then the value's bfloat16 bits; 6 bytes, no padding.
TOPK_ENTRY = np.dtype([("index", "<u4"), ("value", "<u2")])
MAX_TENSORS = 4096
MAX_RANK = 8
MAX_CLIENT_ID = 64
UNKNOWN_STALENESS = 2**64 - 1

# Receipt decisions (3.5).
MERGED = 1
REJECTED = 2
DUPLICATE = 3
RECORDED = 4

REASONS = {
    0: "none", 1: "malformed", 2: "unsupported_protocol_version", 3: "unknown_message_type",
    4: "layout_mismatch", 5: "non_finite", 6: "too_stale", 7: "unknown_base", 8: "duplicate",
    9: "oversized", 10: "unknown_client", 11: "norm_too_large", 12: "identity_mismatch",
    13: "unsupported_codec", 14: "unavailable", 15: "wrong_update_kind", 16: "bad_encoding",
    17: "seq_out_of_range", 18: "not_privatized", 19: "anomalous",
}
DECISIONS = {1: "merged", 2: "rejected", 3: "duplicate", 4: "recorded"}

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_METRIC_NAME = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")
MAX_METRICS = 64
MAX_METRICS_BYTES = 8192
MAX_REPORT_BYTES = 8448
MAX_DATASET_BYTES = 128

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


class ProtocolError(ValueError):
    """A frame that does not follow docs/PROTOCOL.md; the message says which field."""


def valid_client_id(client_id: str) -> bool:
    """1 to 64 characters of ``A-Z a-z 0-9 . _ -`` (2)."""
    return bool(_CLIENT_ID.match(client_id))


def common_prefix(message_type: int) -> bytes:
    """The 8-byte header prefix (2.1)."""
    return MAGIC + bytes([PROTOCOL_VERSION, message_type]) + b"\0\0"


def _check_prefix(header: bytes, expected: int, size: int | None = None, minimum: int = 8) -> None:
    if len(header) < minimum:
        raise ProtocolError(f"header of {len(header)} bytes, expected at least {minimum}")
    if header[:4] != MAGIC:
        raise ProtocolError("header does not start with the magic APRY")
    if header[4] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {header[4]}, this SDK speaks {PROTOCOL_VERSION}")
    if header[5] != expected:
        raise ProtocolError(f"message type {header[5]}, expected {expected}")
    if header[6:8] != b"\0\0":
        raise ProtocolError("reserved bytes of the common prefix are not zero")
    if size is not None and len(header) != size:
        raise ProtocolError(f"header of {len(header)} bytes, expected exactly {size}")


# MARK: layout (2.2)


@dataclass(frozen=True)
class Tensor:
    """One tensor of a layout: its name and shape (dtype float32)."""

    name: str
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """The model's tensors in layout order (2.2): the order of the flat parameter vector."""

    tensors: tuple[Tensor, ...]

    @property
    def parameter_count(self) -> int:
        return sum(t.count for t in self.tensors)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def offsets(self) -> list[int]:
        out, o = [], 0
        for t in self.tensors:
            out.append(o)
            o += t.count
        return out

    def fingerprint(self) -> int:
        """FNV-1a 64 over each tensor's name, 0x00, dtype, rank and dimensions (2.2)."""
        h = FNV_OFFSET
        for t in self.tensors:
            data = t.name.encode() + b"\0" + bytes([DTYPE_FLOAT32, len(t.shape)]) + b"".join(struct.pack("<Q", d) for d in t.shape)
            for b in data:
                h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
        return h

    def encode(self) -> bytes:
        """The layout frame (2.2)."""
        out = [struct.pack("<I", len(self.tensors))]
        for t in self.tensors:
            name = t.name.encode()
            out.append(bytes([len(name)]) + name + bytes([DTYPE_FLOAT32, len(t.shape)]))
            out.extend(struct.pack("<Q", d) for d in t.shape)
        return b"".join(out)

    def describe(self) -> str:
        return ", ".join(f"{t.name}{list(t.shape)}" for t in self.tensors)

    @staticmethod
    def decode(frame: bytes) -> "Layout":
        """Parses a layout frame; raises ProtocolError naming what is wrong (2.2)."""
        if len(frame) < 4:
            raise ProtocolError("layout frame shorter than its tensor count")
        (n,) = struct.unpack_from("<I", frame, 0)
        if not 1 <= n <= MAX_TENSORS:
            raise ProtocolError(f"layout has {n} tensors, allowed 1 to {MAX_TENSORS}")
        pos, tensors, names = 4, [], set()
        for _ in range(n):
            if pos >= len(frame):
                raise ProtocolError("layout frame ends inside a tensor")
            length = frame[pos]
            pos += 1
            if length == 0 or pos + length + 2 > len(frame):
                raise ProtocolError("layout tensor name empty or cut")
            name = frame[pos:pos + length].decode()
            pos += length
            dtype, rank = frame[pos], frame[pos + 1]
            pos += 2
            if dtype != DTYPE_FLOAT32:
                raise ProtocolError(f"tensor {name!r} has dtype {dtype}; version 1 has float32 (1) only")
            if rank > MAX_RANK or pos + 8 * rank > len(frame):
                raise ProtocolError(f"tensor {name!r}: rank {rank} or its dimensions cut")
            shape = struct.unpack_from(f"<{rank}Q", frame, pos)
            pos += 8 * rank
            if name in names:
                raise ProtocolError(f"tensor name {name!r} twice in the layout")
            names.add(name)
            tensors.append(Tensor(name, tuple(int(d) for d in shape)))
        if pos != len(frame):
            raise ProtocolError(f"{len(frame) - pos} trailing bytes after the layout")
        return Layout(tuple(tensors))


# MARK: snapshot (3.1, 3.2)


def encode_snapshot_request(request_id: int, client_id: str) -> bytes:
    cid = client_id.encode()
    return common_prefix(SNAPSHOT_REQUEST) + struct.pack("<QB", request_id, len(cid)) + cid


@dataclass
class ShardEntry:
    """One entry of the shard map (4.4)."""

    start: int
    end: int
    model: str
    snapshot: str
    update: str


@dataclass
class SnapshotReply:
    request_id: int
    run_id: int
    version: int
    fingerprint: int
    parameter_count: int
    server_time_ms: int
    layout: Layout
    layout_frame: bytes
    config: dict[str, Any]
    values: np.ndarray  # float32: the whole model, or the replying shard's range

    @property
    def shards(self) -> list[ShardEntry] | None:
        raw = self.config.get("shards")
        if not raw:
            return None
        return [ShardEntry(int(e["start"]), int(e["end"]), str(e["model"]), str(e["snapshot"]), str(e["update"])) for e in raw]

    @property
    def shard_index(self) -> int:
        return int(self.config.get("shard_index", 0))

    @property
    def features(self) -> list[str]:
        return [str(f) for f in self.config.get("features", [])]

    @property
    def training(self) -> dict[str, Any]:
        t = self.config.get("training", {})
        return dict(t) if isinstance(t, dict) else {}


def decode_snapshot_reply(frames: Sequence[bytes]) -> SnapshotReply:
    """``[header] [layout] [config] [payload...]`` (3.2); a REQ socket's empty delimiter is skipped."""
    frames = list(frames)
    if frames and len(frames[0]) == 0:
        frames = frames[1:]
    if len(frames) < 3:
        raise ProtocolError(f"snapshot reply of {len(frames)} frames, expected at least 3")
    header = frames[0]
    _check_prefix(header, SNAPSHOT_REPLY, size=64)
    rid, run, version, fp, count, t = struct.unpack_from("<QQQQQq", header, 8)
    (payload_count, reserved) = struct.unpack_from("<II", header, 56)
    if reserved != 0:
        raise ProtocolError("reserved field of the snapshot reply is not zero")
    if payload_count != len(frames) - 3:
        raise ProtocolError(f"snapshot reply announces {payload_count} payload frames, has {len(frames) - 3}")
    layout = Layout.decode(frames[1])
    if layout.fingerprint() != fp:
        raise ProtocolError("layout fingerprint of the snapshot reply does not match its layout frame")
    if layout.parameter_count != count:
        raise ProtocolError(f"snapshot reply says {count} parameters, its layout {layout.parameter_count}")
    try:
        config = json.loads(frames[2].decode())
    except ValueError as e:
        raise ProtocolError(f"snapshot config is not JSON: {e}") from None
    if not isinstance(config, dict):
        raise ProtocolError("snapshot config is not a JSON object")
    values = payload_to_array(frames[3:])
    reply = SnapshotReply(rid, run, version, fp, count, t, layout, bytes(frames[1]), config, values)
    shards = reply.shards
    expected = count if shards is None else shards[reply.shard_index].end - shards[reply.shard_index].start
    if values.size != expected:
        raise ProtocolError(f"snapshot payload holds {values.size} values, expected {expected}")
    return reply


def payload_to_array(frames: Sequence[bytes]) -> np.ndarray:
    """Concatenated float32 payload frames (2.3), as one new writable array (each frame copied
    once, straight into place)."""
    for f in frames:
        if len(f) % 4:
            raise ProtocolError(f"payload frame of {len(f)} bytes, not a multiple of 4")
    out = np.empty(sum(len(f) for f in frames) // 4, dtype=np.float32)
    o = 0
    for f in frames:
        n = len(f) // 4
        out[o:o + n] = np.frombuffer(f, dtype="<f4")
        o += n
    return out


# MARK: model chunk (3.3)


@dataclass
class ModelChunk:
    run_id: int
    version: int
    fingerprint: int
    parameter_count: int
    offset: int
    index: int
    count: int
    payload: bytes


def decode_model_chunk(frames: Sequence[bytes]) -> ModelChunk:
    """``[topic "model"] [header] [payload]`` (3.3)."""
    if len(frames) != 3:
        raise ProtocolError(f"model chunk of {len(frames)} frames, expected 3")
    header = frames[1]
    _check_prefix(header, MODEL_CHUNK, size=56)
    run, version, fp, count, offset = struct.unpack_from("<QQQQQ", header, 8)
    index, total = struct.unpack_from("<II", header, 48)
    if total == 0 or index >= total:
        raise ProtocolError(f"chunk {index} of {total}")
    if len(frames[2]) % 4:
        raise ProtocolError("chunk payload not a multiple of 4 bytes")
    return ModelChunk(run, version, fp, count, offset, index, total, frames[2])


# MARK: client update (3.4) and evaluation report (3.6)


def metrics_frame(metrics: dict[str, float]) -> bytes:
    """The metrics JSON object (3.4); raises ValueError for what the aggregator would reject."""
    if len(metrics) > MAX_METRICS:
        raise ValueError(f"{len(metrics)} metrics, at most {MAX_METRICS}")
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not _METRIC_NAME.match(name):
            raise ValueError(f"metric name {name!r} is not 1 to 64 characters of A-Z a-z 0-9 . _ - /")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"metric {name!r} is {type(value).__name__}, not a number")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"metric {name!r} is not finite")
        clean[name] = v
    data = json.dumps(clean, separators=(",", ":"), sort_keys=True).encode()
    if len(data) > MAX_METRICS_BYTES:
        raise ValueError(f"metrics take {len(data)} bytes, at most {MAX_METRICS_BYTES}")
    return data


def new_epoch() -> int:
    """A client epoch (3.4): 64 random bits from the system's CSPRNG, never 0."""
    while True:
        epoch = secrets.randbits(64)
        if epoch:
            return epoch


def _epoch_field(epoch: int) -> tuple[int, bytes]:
    """Flag bit 2 and the u64 after the client id, for a non-zero epoch (3.4); none for 0."""
    if not 0 <= epoch < 2**64:
        raise ValueError(f"client epoch {epoch} is not a u64")
    return (4, struct.pack("<Q", epoch)) if epoch else (0, b"")


def encode_update_header(run_id: int, base_version: int, seq: int, samples: int, client_id: str, with_metrics: bool,
                         delta: bool = False, codec: int = FLOAT32, epoch: int = 0, privatized: bool = False) -> bytes:
    """Flag bit 0: a metrics frame follows the layout; bit 1: the payload is a delta (fedbuff);
    bit 2: the client epoch follows the client id (only when the config lists ``client_epoch``);
    bit 3: the update was privatized to the config's ``local_dp`` (only when the config carries
    it, 4.8); byte 40: the payload's codec (3.4.1)."""
    if codec not in CODEC_NAMES:
        raise ValueError(f"codec {codec} is not one of {sorted(CODEC_NAMES)}")
    cid = client_id.encode()
    epoch_flag, epoch_bytes = _epoch_field(epoch)
    flags = (1 if with_metrics else 0) | (2 if delta else 0) | epoch_flag | (8 if privatized else 0)
    return (common_prefix(CLIENT_UPDATE) + struct.pack("<QQQQBBH", run_id, base_version, seq, samples, codec, len(cid), flags)
            + cid + epoch_bytes)


def encode_report(run_id: int, version: int, seq: int, examples: int, client_id: str, dataset: str,
                  metrics: dict[str, float], epoch: int = 0) -> list[bytes]:
    """``[header] [report]`` (3.6); a non-zero ``epoch`` as in an update's header."""
    if not metrics:
        raise ValueError("an evaluation report needs at least one metric")
    if not 1 <= len(dataset.encode()) <= MAX_DATASET_BYTES:
        raise ValueError(f"dataset name must be 1 to {MAX_DATASET_BYTES} bytes")
    cid = client_id.encode()
    epoch_flag, epoch_bytes = _epoch_field(epoch)
    header = (common_prefix(EVALUATION_REPORT) + struct.pack("<QQQQBBH", run_id, version, seq, examples, 0, len(cid), epoch_flag)
              + cid + epoch_bytes)
    body = json.dumps({"dataset": dataset, "metrics": json.loads(metrics_frame(metrics))}, separators=(",", ":")).encode()
    if len(body) > MAX_REPORT_BYTES:
        raise ValueError(f"report takes {len(body)} bytes, at most {MAX_REPORT_BYTES}")
    return [header, body]


def payload_frames(values: np.ndarray, chunk_parameters: int) -> list[memoryview]:
    """Splits a float32 vector into payload frames of at most ``chunk_parameters`` values
    without copying (2.3): each frame is a view of ``values``' buffer."""
    v = np.ascontiguousarray(values, dtype="<f4")
    view = v.data.cast("B")
    step = max(1, chunk_parameters) * 4
    if v.size == 0:
        return [view]
    return [view[i:i + step] for i in range(0, len(view), step)]


def segment_frames(segments: Sequence[np.ndarray], start: int, end: int, chunk_parameters: int) -> list[memoryview]:
    """Payload frames (2.3) for the values ``[start, end)`` of a flat vector held as 1-D
    float32 pieces in order, without copying: each frame is a view of one piece, at most
    ``chunk_parameters`` values (any split is valid; frames do not cross pieces)."""
    frames: list[memoryview] = []
    at = 0
    for piece in segments:
        lo, hi = max(start, at), min(end, at + piece.size)
        if lo < hi:
            frames.extend(payload_frames(piece[lo - at:hi - at], chunk_parameters))
        at += piece.size
    return frames or payload_frames(np.empty(0, dtype="<f4"), chunk_parameters)


# MARK: update codecs (3.4.1)


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even,
    ``(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16``; a finite value that would round to
    infinity is truncated instead (3.4.1). A NaN stays a (quiet) NaN."""
    v = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    bits = v.view("<u4")
    # Finite values never overflow 32 bits here: the largest, 0xFF7FFFFF, + 0x8000 fits.
    rounded = bits >> np.uint32(16)
    np.bitwise_and(rounded, np.uint32(1), out=rounded)
    rounded += np.uint32(0x7FFF)
    rounded += bits
    rounded >>= np.uint32(16)
    out = rounded.astype("<u2")
    # Exponent all ones after rounding (a finite value that rounded up to infinity) or before
    # (an infinity, a NaN, whose rounding may carry out of 32 bits): truncated, and a NaN keeps
    # a mantissa bit.
    special = ((out & np.uint16(0x7F80)) == np.uint16(0x7F80)) | ((bits & np.uint32(0x7F800000)) == np.uint32(0x7F800000))
    if special.any():
        where = np.flatnonzero(special)
        b = bits[where]
        fixed = (b >> np.uint32(16)).astype("<u2")
        nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        fixed[nan] |= np.uint16(0x0040)
        out[where] = fixed
    return out


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits -> float32: ``bits << 16`` (3.4.1)."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << np.uint32(16)).view("<f4")


def float16_values(values: np.ndarray) -> np.ndarray:
    """float32 -> IEEE binary16, round to nearest even, clamped to ±65504 (3.4.1)."""
    v = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    clamped: np.ndarray = np.clip(v, np.float32(-FLOAT16_MAX), np.float32(FLOAT16_MAX))
    return clamped.astype("<f2")


def _round_half_away(y: np.ndarray) -> np.ndarray:
    """Rounds float32 values to integers, halves away from zero, exactly: ``trunc(y)``, plus
    1 where ``y - trunc(y) >= 0.5``, minus 1 where it is ``<= -0.5`` (that difference is
    exact; ``trunc(y + 0.5)`` would not be in float32). Overwrites ``y``; returns the result."""
    t: np.ndarray = np.trunc(y)
    np.subtract(y, t, out=y)                # the fraction, with y's sign (or 0)
    t += y >= np.float32(0.5)
    t -= y <= np.float32(-0.5)
    return t


def int8_quantize(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of float32 values (one block each) -> (scales float32, q int8): ``s = max|v| /
    127`` (0 for an all-zero block), ``q = round(v / s)`` half away from zero, clamped to
    ±127, all in float32 (3.4.1)."""
    b = np.asarray(blocks, dtype=np.float32)
    if b.ndim != 2:
        raise ValueError("int8_quantize takes a 2-D array, one block per row")
    if b.shape[1] == 0:
        return np.zeros(b.shape[0], np.float32), np.zeros(b.shape, np.int8)
    scales = np.abs(b).max(axis=1)
    scales /= np.float32(127)
    zero = scales == 0  # an all-zero block (or one below 127 x 2^-149): every q is 0
    y = b / np.where(zero, np.float32(1), scales)[:, None]
    q = _round_half_away(y)
    if zero.any():
        q[zero] = 0
    np.clip(q, np.float32(-127), np.float32(127), out=q)
    return scales, q.astype(np.int8)


def topk_count(n: int, fraction: float) -> int:
    """k for top-k of n values: ``max(1, ceil(fraction x n))``, at most n (3.4.1)."""
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(fraction * n)))


def _kth_largest(magnitudes: np.ndarray, k: int) -> np.float32:
    """The k-th largest (1 <= k <= n) of non-negative float32 values, by a two-pass radix
    select on their bits (ordered like the values): O(n) whatever the data. (np.partition
    takes 10 times longer on vectors of few distinct values, as deltas often are.)"""
    bits = magnitudes.view(np.uint32)
    high = (bits >> np.uint32(16)).astype(np.uint16)
    from_top = np.cumsum(np.bincount(high, minlength=65536)[::-1])
    bucket = 65535 - int(np.searchsorted(from_top, k))          # the high half of the k-th largest
    above = int(from_top[65534 - bucket]) if bucket < 65535 else 0  # values in higher buckets
    low = (bits[high == bucket] & np.uint32(0xFFFF)).astype(np.uint16)
    from_top = np.cumsum(np.bincount(low, minlength=65536)[::-1])
    low_half = 65535 - int(np.searchsorted(from_top, k - above))
    return np.float32(np.array([(bucket << 16) | low_half], dtype=np.uint32).view(np.float32)[0])


def topk_indices(values: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k values of largest magnitude, ties to the lower index, ascending
    (int64)."""
    v = np.asarray(values, dtype=np.float32).reshape(-1)
    n = v.size
    k = max(0, min(k, n))
    if k == n:
        return np.arange(n, dtype=np.int64)
    if k == 0:
        return np.empty(0, dtype=np.int64)
    mags = np.abs(v)
    threshold = _kth_largest(mags, k)
    chosen = mags > threshold
    ties = np.flatnonzero(mags == threshold)[:k - int(np.count_nonzero(chosen))]
    chosen[ties] = True
    return np.flatnonzero(chosen)


@dataclass
class EncodedPayload:
    """An update's payload frames in one codec (3.4.1), and, when asked for, the float32
    values they decode to (what the aggregator will see; error feedback keeps the rest)."""

    codec: int
    frames: list[memoryview]
    decoded: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


def _split(buffer: np.ndarray, item_bytes: int, per_frame: int) -> list[memoryview]:
    view = np.ascontiguousarray(buffer).data.cast("B")
    step = max(1, per_frame) * item_bytes
    if len(view) == 0:
        return [view]
    return [view[i:i + step] for i in range(0, len(view), step)]


def encode_payload(values: np.ndarray, codec: int, *, chunk_parameters: int = 262_144, codec_block: int = DEFAULT_CODEC_BLOCK,
                   topk_fraction: float = DEFAULT_TOPK_FRACTION, with_decoded: bool = False,
                   max_frame_bytes: int | None = None) -> EncodedPayload:
    """Encodes the n float32 ``values`` of an update (or of one shard's slice) as payload
    frames of ``codec`` (3.4.1), the way senders do:

    - float32: views of ``values`` (no copy), ``chunk_parameters`` values per frame;
    - float16, bfloat16: 2 bytes per value, ``chunk_parameters`` values per frame;
    - int8: one frame per block of ``codec_block`` values (the last one shorter): the block's
      f32 scale, then its int8 values;
    - top-k: ``topk_count(n, topk_fraction)`` entries of (u32 index, bfloat16 value), in index
      order, at most ``chunk_parameters`` entries per frame (and, with ``max_frame_bytes``, no
      more than fit in a frame).

    With ``with_decoded`` the result also holds what a receiver decodes the frames to.
    Raises ValueError for settings no receiver could take (a block of 0, a fraction outside
    (0, 1], an int8 block larger than ``max_frame_bytes``, more than 65,536 frames)."""
    v = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
    n = v.size
    chunk = max(1, int(chunk_parameters))
    decoded: np.ndarray | None = None
    if codec == FLOAT32:
        frames = payload_frames(v, chunk)
        decoded = v if with_decoded else None
    elif codec == FLOAT16:
        half = float16_values(v)
        frames = _split(half, 2, chunk)
        decoded = half.astype(np.float32) if with_decoded else None
    elif codec == BFLOAT16:
        bits = bfloat16_bits(v)
        frames = _split(bits, 2, chunk)
        decoded = bfloat16_to_float32(bits) if with_decoded else None
    elif codec == INT8:
        block = int(codec_block)
        if block < 1:
            raise ValueError(f"int8 codec_block {codec_block} must be at least 1")
        if max_frame_bytes is not None and block + 4 > max_frame_bytes:
            raise ValueError(f"int8 codec_block {block} makes frames of {block + 4} bytes, over max_frame_bytes {max_frame_bytes}")
        full, tail = divmod(n, block)
        count = full + (1 if tail else 0)
        buffer = np.empty(n + 4 * count, dtype=np.uint8)
        decoded = np.empty(n, dtype=np.float32) if with_decoded else None
        # Rows of blocks a group at a time (about 64 Ki values): the temporaries stay in cache.
        group = max(1, 65536 // block)
        spans = [(r, min(full, r + group), block) for r in range(0, full, group)]
        if tail:
            spans.append((full, full + 1, tail))
        for first_row, end_row, width in spans:
            rows = end_row - first_row
            first = first_row * block
            scales, q = int8_quantize(v[first:first + rows * width].reshape(rows, width))
            at = first_row * (block + 4)
            grid = buffer[at:at + rows * (width + 4)].reshape(rows, width + 4)
            grid[:, :4] = scales.astype("<f4").view(np.uint8).reshape(rows, 4)
            grid[:, 4:] = q.view(np.uint8)
            if decoded is not None:
                np.multiply(q, scales[:, None], out=decoded[first:first + rows * width].reshape(rows, width), dtype=np.float32)
        view = buffer.data.cast("B")
        frames = [view[i * (block + 4):(i + 1) * (block + 4)] for i in range(full)]
        if tail:
            frames.append(view[full * (block + 4):])
        if not frames:
            frames = [memoryview(b"")]
    elif codec == TOPK:
        if not 0 < topk_fraction <= 1:
            raise ValueError(f"topk_fraction {topk_fraction} is not in (0, 1]")
        idx = topk_indices(v, topk_count(n, topk_fraction))
        entries = np.empty(idx.size, dtype=TOPK_ENTRY)
        entries["index"] = idx
        entries["value"] = bfloat16_bits(v[idx])
        per_frame = chunk if max_frame_bytes is None else max(1, min(chunk, max_frame_bytes // TOPK_ENTRY.itemsize))
        frames = _split(entries, TOPK_ENTRY.itemsize, per_frame)
        if with_decoded:
            decoded = np.zeros(n, dtype=np.float32)
            decoded[idx] = bfloat16_to_float32(entries["value"])
    else:
        raise ValueError(f"unknown codec {codec} (known: {', '.join(f'{c} {name}' for c, name in CODEC_NAMES.items())})")
    if len(frames) > MAX_PAYLOAD_FRAMES:
        raise ValueError(f"{CODEC_NAMES[codec]} makes {len(frames)} payload frames of {n} values, over the limit of {MAX_PAYLOAD_FRAMES} "
                         "(a larger codec_block or chunk_parameters)")
    return EncodedPayload(codec, frames, decoded)


def decode_payload(codec: int, frames: Sequence[bytes | memoryview], n: int) -> np.ndarray:
    """The n float32 values payload frames of ``codec`` decode to, checked as a receiver
    checks them (3.4.1): ProtocolError for what an aggregator rejects as ``bad_encoding``
    (or ``unsupported_codec``, or a size that is not n values: ``layout_mismatch``)."""
    raw = [bytes(f) for f in frames]
    if codec == FLOAT32:
        out = payload_to_array(raw)
    elif codec in (FLOAT16, BFLOAT16):
        for i, f in enumerate(raw):
            if len(f) % 2:
                raise ProtocolError(f"bad_encoding: {CODEC_NAMES[codec]} payload frame {i} has {len(f)} bytes, not a multiple of 2")
        joined = b"".join(raw)
        out = (np.frombuffer(joined, dtype="<f2").astype(np.float32) if codec == FLOAT16
               else bfloat16_to_float32(np.frombuffer(joined, dtype="<u2")))
    elif codec == INT8:
        parts: list[np.ndarray] = []
        for i, f in enumerate(raw):
            if not f:
                continue
            if len(f) <= 4:
                raise ProtocolError(f"bad_encoding: int8 payload frame {i} has {len(f)} bytes (a 4-byte scale and at least one value)")
            (scale,) = struct.unpack_from("<f", f, 0)
            if not math.isfinite(scale) or scale < 0:
                raise ProtocolError(f"bad_encoding: int8 block {i} has scale {scale} (must be finite and >= 0)")
            q = np.frombuffer(f, dtype=np.int8, offset=4)
            if (q == -128).any():
                raise ProtocolError(f"bad_encoding: int8 block {i} holds -128")
            parts.append(q.astype(np.float32) * np.float32(scale))
        out = np.concatenate(parts) if parts else np.empty(0, np.float32)
    elif codec == TOPK:
        for i, f in enumerate(raw):
            if len(f) % TOPK_ENTRY.itemsize:
                raise ProtocolError(f"bad_encoding: top-k payload frame {i} has {len(f)} bytes, not a multiple of 6")
        entries = np.frombuffer(b"".join(raw), dtype=TOPK_ENTRY)
        idx = entries["index"].astype(np.int64)
        if idx.size and (np.any(np.diff(idx) <= 0) or idx[-1] >= n):
            raise ProtocolError("bad_encoding: top-k indices are not strictly increasing and below the value count")
        out = np.zeros(n, dtype=np.float32)
        out[idx] = bfloat16_to_float32(entries["value"])
        return out
    else:
        raise ProtocolError(f"unsupported_codec: codec byte {codec}")
    if out.size != n:
        raise ProtocolError(f"layout_mismatch: the payload decodes to {out.size} values, expected {n}")
    return out


# MARK: receipt (3.5)


@dataclass
class Receipt:
    run_id: int
    seq: int
    base_version: int
    model_version: int
    staleness: int | None
    mixing_weight: float
    decision: int
    reason: int
    message: str = field(default="")

    @property
    def decision_name(self) -> str:
        return DECISIONS.get(self.decision, str(self.decision))

    @property
    def reason_name(self) -> str:
        return REASONS.get(self.reason, str(self.reason))


def decode_receipt(frames: Sequence[bytes]) -> Receipt:
    """``[topic] [header] [message]`` (3.5)."""
    if len(frames) != 3:
        raise ProtocolError(f"receipt of {len(frames)} frames, expected 3")
    header = frames[1]
    _check_prefix(header, RECEIPT, size=60)
    run, seq, base, version, staleness = struct.unpack_from("<QQQQQ", header, 8)
    (weight,) = struct.unpack_from("<d", header, 48)
    decision, reason = header[56], header[57]
    if header[58:60] != b"\0\0":
        raise ProtocolError("reserved field of the receipt is not zero")
    return Receipt(run, seq, base, version, None if staleness == UNKNOWN_STALENESS else staleness, weight, decision, reason,
                   bytes(frames[2]).decode(errors="replace"))
