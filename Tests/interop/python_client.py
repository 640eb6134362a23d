#!/usr/bin/env python3
"""Interoperability client for the Apiary wire protocol, version 1.

(The sharded counterpart, for PROTOCOL.md 4.4, is sharded_client.py; run.sh runs both.)

Written from docs/PROTOCOL.md alone (no access to the Swift sources): it runs a
scripted conversation against a running aggregator and checks every reply.

Usage:
    python3 python_client.py --model tcp://127.0.0.1:5557 \
        --snapshot tcp://127.0.0.1:5556 --update tcp://127.0.0.1:5558 [--client-id py-1]

Prints one line per check ("ok - ..." / "not ok - ...") and a final line
"N passed, M failed"; exits 0 only if every check passed.
Dependencies: pyzmq and numpy only.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

# --------------------------------------------------------------------------
# Protocol constants (PROTOCOL.md section 2.1 and 3.5)
# --------------------------------------------------------------------------

MAGIC = b"APRY"
PROTOCOL_VERSION = 1

MODEL_CHUNK = 1
SNAPSHOT_REQUEST = 2
SNAPSHOT_REPLY = 3
CLIENT_UPDATE = 4
RECEIPT = 5

DTYPE_FLOAT32 = 1
CODEC_DENSE_F32 = 0

DECISION_MERGED = 1
DECISION_REJECTED = 2
DECISION_DUPLICATE = 3

REASONS = {
    0: "none",
    1: "malformed",
    2: "unsupported_protocol_version",
    3: "unknown_message_type",
    4: "layout_mismatch",
    5: "non_finite",
    6: "too_stale",
    7: "unknown_base",
    8: "duplicate",
    9: "oversized",
    10: "unknown_client",
    11: "norm_too_large",
    12: "identity_mismatch",
    13: "unsupported_codec",
    14: "unavailable",
    15: "wrong_update_kind",
    16: "bad_encoding",
    17: "seq_out_of_range",
    18: "not_privatized",
    19: "anomalous",
}
REASON_NONE = 0
REASON_LAYOUT_MISMATCH = 4
REASON_NON_FINITE = 5
REASON_UNKNOWN_BASE = 7

STALENESS_UNKNOWN = 2**64 - 1

SNAPSHOT_REPLY_HEADER_BYTES = 64
MODEL_CHUNK_HEADER_BYTES = 56
RECEIPT_HEADER_BYTES = 60

EXPECTED_LAYOUT = [("W", [64, 10]), ("b", [10])]
EXPECTED_PARAMETERS = 650

RECEIPT_TIMEOUT_S = 10.0        # upper bound for any single wait
SNAPSHOT_ATTEMPT_S = 2.0        # per-attempt timeout, resend on a new DEALER (section 4.2)
SNAPSHOT_TOTAL_S = 10.0
SILENCE_WINDOW_S = 1.5          # how long "no receipt" is observed for the garbage message


class ProtocolError(Exception):
    """A frame that does not match PROTOCOL.md."""


# --------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------


def common_prefix(message_type: int) -> bytes:
    """Section 2.1: magic, protocol version, message type, 2 reserved bytes."""
    return MAGIC + bytes([PROTOCOL_VERSION, message_type]) + b"\0\0"


def check_common_prefix(header: bytes, expected_type: int) -> None:
    if len(header) < 8:
        raise ProtocolError(f"header frame of {len(header)} bytes is shorter than the 8-byte prefix")
    if header[0:4] != MAGIC:
        raise ProtocolError(f"bad magic {header[0:4]!r}")
    if header[4] != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {header[4]}, expected {PROTOCOL_VERSION}")
    if header[5] != expected_type:
        raise ProtocolError(f"message type {header[5]}, expected {expected_type}")
    if header[6:8] != b"\0\0":
        raise ProtocolError(f"reserved prefix bytes not zero: {header[6:8].hex()}")


def encode_snapshot_request(request_id: int, client_id: str) -> bytes:
    """Section 3.1."""
    cid = client_id.encode("ascii")
    return common_prefix(SNAPSHOT_REQUEST) + struct.pack("<QB", request_id, len(cid)) + cid


def encode_layout(tensors: list[tuple[str, list[int]]]) -> bytes:
    """Section 2.2 (all tensors float32)."""
    out = bytearray(struct.pack("<I", len(tensors)))
    for name, dims in tensors:
        raw = name.encode("utf-8")
        out += struct.pack("<B", len(raw)) + raw
        out += struct.pack("<BB", DTYPE_FLOAT32, len(dims))
        for d in dims:
            out += struct.pack("<Q", d)
    return bytes(out)


@dataclass
class Tensor:
    name: str
    dtype: int
    dims: list[int]

    @property
    def count(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


def decode_layout(frame: bytes) -> list[Tensor]:
    """Section 2.2, strictly: no trailing bytes, limits enforced."""
    if len(frame) < 4:
        raise ProtocolError("layout frame shorter than 4 bytes")
    (count,) = struct.unpack_from("<I", frame, 0)
    if not 1 <= count <= 4096:
        raise ProtocolError(f"tensor count {count} outside 1..4096")
    pos = 4
    tensors: list[Tensor] = []
    for _ in range(count):
        if pos + 1 > len(frame):
            raise ProtocolError("layout truncated at name length")
        name_len = frame[pos]
        pos += 1
        if name_len < 1:
            raise ProtocolError("empty tensor name")
        if pos + name_len + 2 > len(frame):
            raise ProtocolError("layout truncated in name/dtype/rank")
        name = frame[pos:pos + name_len].decode("utf-8")
        pos += name_len
        dtype, rank = frame[pos], frame[pos + 1]
        pos += 2
        if rank > 8:
            raise ProtocolError(f"rank {rank} > 8")
        if pos + 8 * rank > len(frame):
            raise ProtocolError("layout truncated in dimensions")
        dims = list(struct.unpack_from(f"<{rank}Q", frame, pos))
        pos += 8 * rank
        tensors.append(Tensor(name, dtype, dims))
    if pos != len(frame):
        raise ProtocolError(f"{len(frame) - pos} trailing bytes after the layout")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ProtocolError(f"duplicate tensor names {names}")
    return tensors


FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = 2**64 - 1


def fnv1a64(data: bytes, h: int = FNV_OFFSET) -> int:
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def layout_fingerprint(tensors: list[Tensor]) -> int:
    """Section 2.2: per tensor: name bytes, 0x00, dtype, rank, each dim as u64 LE."""
    buf = bytearray()
    for t in tensors:
        buf += t.name.encode("utf-8") + b"\0" + bytes([t.dtype, len(t.dims)])
        for d in t.dims:
            buf += struct.pack("<Q", d)
    return fnv1a64(bytes(buf))


def encode_update_header(run_id: int, base: int, seq: int, samples: int, client_id: str,
                         codec: int = CODEC_DENSE_F32) -> bytes:
    """Section 3.4: 44 + L bytes."""
    cid = client_id.encode("ascii")
    return (common_prefix(CLIENT_UPDATE)
            + struct.pack("<QQQQBBH", run_id, base, seq, samples, codec, len(cid), 0)
            + cid)


def payload_frames(values: np.ndarray, chunk_parameters: int) -> list[bytes]:
    """Section 2.3: split the flat vector at chunk_parameters values per frame."""
    raw = np.ascontiguousarray(values, dtype="<f4")
    step = max(1, int(chunk_parameters))
    return [raw[i:i + step].tobytes() for i in range(0, max(len(raw), 1), step)]


# --------------------------------------------------------------------------
# Decoded messages
# --------------------------------------------------------------------------


@dataclass
class Snapshot:
    request_id: int
    run_id: int
    version: int
    fingerprint: int
    parameter_count: int
    server_time_ms: int
    payload_frame_count: int
    layout_frame: bytes
    layout: list[Tensor]
    config: dict
    params: np.ndarray


def decode_snapshot_reply(frames: list[bytes], payload_values=None) -> Snapshot:
    """Section 3.2: [header] [layout] [config] [payload 1..P]. The payload holds the header's
    parameter count of values, or `payload_values(config, layout)` of them when given (a
    shard's slice, section 4.4)."""
    if len(frames) < 4:
        raise ProtocolError(f"SNAPSHOT_REPLY has {len(frames)} frames, expected >= 4")
    header, layout_frame, config_frame, *payload = frames
    check_common_prefix(header, SNAPSHOT_REPLY)
    if len(header) != SNAPSHOT_REPLY_HEADER_BYTES:
        raise ProtocolError(f"SNAPSHOT_REPLY header is {len(header)} bytes, expected 64")
    request_id, run_id, version, fingerprint, count = struct.unpack_from("<QQQQQ", header, 8)
    (server_time_ms,) = struct.unpack_from("<q", header, 48)
    frame_count, reserved = struct.unpack_from("<II", header, 56)
    if reserved != 0:
        raise ProtocolError(f"SNAPSHOT_REPLY reserved field {reserved} != 0")
    if frame_count != len(payload):
        raise ProtocolError(f"header says {frame_count} payload frames, got {len(payload)}")
    for i, p in enumerate(payload):
        if len(p) % 4:
            raise ProtocolError(f"payload frame {i} is {len(p)} bytes, not a multiple of 4")
    layout = decode_layout(layout_frame)
    config = json.loads(config_frame.decode("utf-8"))
    if not isinstance(config, dict):
        raise ProtocolError("config frame is not a JSON object")
    want = count if payload_values is None else payload_values(config, layout)
    raw = b"".join(payload)
    if len(raw) != 4 * want:
        raise ProtocolError(f"payload is {len(raw)} bytes, expected 4 x {want}")
    params = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    return Snapshot(request_id, run_id, version, fingerprint, count, server_time_ms,
                    frame_count, bytes(layout_frame), layout, config, params)


@dataclass
class Receipt:
    topic: bytes
    run_id: int
    seq: int
    base: int
    model_version: int
    staleness: int
    mixing_weight: float
    decision: int
    reason: int
    message: str

    def describe(self) -> str:
        st = "unknown" if self.staleness == STALENESS_UNKNOWN else str(self.staleness)
        return (f"decision={self.decision} reason={self.reason}({REASONS.get(self.reason, '?')}) "
                f"version={self.model_version} base={self.base} staleness={st} "
                f"a={self.mixing_weight:g} msg={self.message!r}")


def decode_receipt(frames: list[bytes]) -> Receipt:
    """Section 3.5: [topic] [header (60 bytes)] [message]."""
    if len(frames) != 3:
        raise ProtocolError(f"RECEIPT has {len(frames)} frames, expected 3")
    topic, header, message = frames
    check_common_prefix(header, RECEIPT)
    if len(header) != RECEIPT_HEADER_BYTES:
        raise ProtocolError(f"RECEIPT header is {len(header)} bytes, expected 60")
    run_id, seq, base, version, staleness = struct.unpack_from("<QQQQQ", header, 8)
    (weight,) = struct.unpack_from("<d", header, 48)
    decision, reason, reserved = struct.unpack_from("<BBH", header, 56)
    if reserved != 0:
        raise ProtocolError(f"RECEIPT reserved field {reserved} != 0")
    if len(message) > 1024:
        raise ProtocolError(f"RECEIPT message is {len(message)} bytes (> 1024)")
    return Receipt(topic, run_id, seq, base, version, staleness, weight, decision, reason,
                   message.decode("utf-8"))


@dataclass
class ChunkHeader:
    run_id: int
    version: int
    fingerprint: int
    parameter_count: int
    offset: int
    index: int
    count: int


def decode_model_chunk(frames: list[bytes]) -> tuple[ChunkHeader, bytes]:
    """Section 3.3: [topic "model"] [header (56 bytes)] [payload]."""
    if len(frames) != 3:
        raise ProtocolError(f"MODEL_CHUNK has {len(frames)} frames, expected 3")
    topic, header, payload = frames
    if topic != b"model":
        raise ProtocolError(f"MODEL_CHUNK topic {topic!r}")
    check_common_prefix(header, MODEL_CHUNK)
    if len(header) != MODEL_CHUNK_HEADER_BYTES:
        raise ProtocolError(f"MODEL_CHUNK header is {len(header)} bytes, expected 56")
    run_id, version, fingerprint, count, offset = struct.unpack_from("<QQQQQ", header, 8)
    index, chunks = struct.unpack_from("<II", header, 48)
    if len(payload) % 4:
        raise ProtocolError(f"MODEL_CHUNK payload of {len(payload)} bytes, not a multiple of 4")
    if chunks == 0 or index >= chunks:
        raise ProtocolError(f"chunk index {index} of {chunks}")
    if offset + len(payload) // 4 > count:
        raise ProtocolError(f"chunk [{offset}, +{len(payload) // 4}) beyond {count} parameters")
    return ChunkHeader(run_id, version, fingerprint, count, offset, index, chunks), bytes(payload)


@dataclass
class Assembly:
    """One (run id, version) being assembled from MODEL_CHUNK messages."""
    header: ChunkHeader
    chunks: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def add(self, h: ChunkHeader, payload: bytes) -> None:
        self.chunks[h.index] = (h.offset, payload)

    def complete(self) -> bool:
        return len(self.chunks) == self.header.count

    def values(self) -> np.ndarray:
        out = np.full(self.header.parameter_count, np.nan, dtype=np.float32)
        covered = 0
        expected_offset = 0
        for i in range(self.header.count):
            offset, payload = self.chunks[i]
            if offset != expected_offset:
                raise ProtocolError(f"chunk {i} starts at {offset}, expected {expected_offset}")
            vals = np.frombuffer(payload, dtype="<f4")
            out[offset:offset + len(vals)] = vals
            covered += len(vals)
            expected_offset = offset + len(vals)
        if covered != self.header.parameter_count:
            raise ProtocolError(f"chunks cover {covered} of {self.header.parameter_count} values")
        return out


class ModelTracker:
    """Assembles MODEL_CHUNK broadcasts, newest-wins (section 3.3)."""

    def __init__(self) -> None:
        self.current: Assembly | None = None
        self.completed: list[tuple[ChunkHeader, np.ndarray]] = []
        self.dropped = 0
        self.chunks_seen = 0
        self.errors: list[str] = []

    def feed(self, frames: list[bytes]) -> None:
        try:
            h, payload = decode_model_chunk(frames)
        except ProtocolError as e:
            self.errors.append(str(e))
            return
        self.chunks_seen += 1
        key = (h.run_id, h.version)
        if self.current is None or (self.current.header.run_id, self.current.header.version) != key:
            if self.current is not None and not self.current.complete():
                self.dropped += 1
            self.current = Assembly(h)
        self.current.add(h, payload)
        if self.current.complete():
            try:
                self.completed.append((self.current.header, self.current.values()))
            except ProtocolError as e:
                self.errors.append(str(e))
            self.current = None


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


class Client:
    def __init__(self, ctx: zmq.Context, model: str, snapshot: str, update: str, client_id: str):
        self.ctx = ctx
        self.snapshot_endpoint = snapshot
        self.client_id = client_id
        self.receipt_topic = f"receipt/{client_id}/".encode("ascii")

        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"model")
        self.sub.setsockopt(zmq.SUBSCRIBE, self.receipt_topic)
        self.sub.connect(model)

        self.push = ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.SNDTIMEO, int(RECEIPT_TIMEOUT_S * 1000))
        self.push.connect(update)

        self.dealer: zmq.Socket | None = None
        self.models = ModelTracker()
        self.stray_receipts: list[Receipt] = []
        self.other_messages: list[list[bytes]] = []
        self.request_id = int(time.time() * 1000) & 0xFFFFFFFF

    def close(self) -> None:
        for s in (self.sub, self.push, self.dealer):
            if s is not None:
                s.close(linger=0)

    # -- snapshot -----------------------------------------------------------

    def _new_dealer(self) -> zmq.Socket:
        if self.dealer is not None:
            self.dealer.close(linger=0)
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(self.snapshot_endpoint)
        return self.dealer

    def request_snapshot(self) -> tuple[list[bytes], int]:
        """Send SNAPSHOT_REQUEST, return the raw reply frames with a matching request id.
        Resends on a new DEALER after SNAPSHOT_ATTEMPT_S (section 4.2)."""
        deadline = time.monotonic() + SNAPSHOT_TOTAL_S
        while time.monotonic() < deadline:
            self.request_id += 1
            rid = self.request_id
            dealer = self._new_dealer()
            dealer.send(encode_snapshot_request(rid, self.client_id))
            attempt_end = min(deadline, time.monotonic() + SNAPSHOT_ATTEMPT_S)
            while True:
                left = attempt_end - time.monotonic()
                if left <= 0:
                    break
                if dealer.poll(int(left * 1000) + 1, zmq.POLLIN):
                    frames = dealer.recv_multipart()
                    if len(frames[0]) >= 16 and struct.unpack_from("<Q", frames[0], 8)[0] == rid:
                        return frames, rid
                    # A reply to an older request id: ignore it.
        raise TimeoutError(f"no SNAPSHOT_REPLY within {SNAPSHOT_TOTAL_S:g} s")

    # -- subscription -------------------------------------------------------

    def _dispatch(self, frames: list[bytes]) -> Receipt | None:
        topic = frames[0]
        if topic == b"model":
            self.models.feed(frames)
            return None
        if topic == self.receipt_topic:
            return decode_receipt(frames)
        self.other_messages.append(frames)
        return None

    def pump(self, timeout_s: float, until=None):
        """Read the SUB socket for up to timeout_s; return the first receipt for which
        until(receipt) is true (None on timeout). Model chunks are assembled on the way."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self.sub.poll(int(left * 1000) + 1, zmq.POLLIN):
                return None
            receipt = self._dispatch(self.sub.recv_multipart())
            if receipt is None:
                continue
            if until is not None and until(receipt):
                return receipt
            self.stray_receipts.append(receipt)

    def wait_receipt(self, seq: int, timeout_s: float = RECEIPT_TIMEOUT_S) -> Receipt | None:
        return self.pump(timeout_s, lambda r: r.seq == seq)

    def wait_model(self, min_version: int, timeout_s: float = RECEIPT_TIMEOUT_S):
        """Wait for a complete broadcast with version >= min_version."""
        def found():
            for h, vals in self.models.completed:
                if h.version >= min_version:
                    return h, vals
            return None
        deadline = time.monotonic() + timeout_s
        while (hit := found()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.pump(min(left, 0.25))
        return hit

    # -- update -------------------------------------------------------------

    def send(self, frames: list[bytes]) -> None:
        self.push.send_multipart(frames)


# --------------------------------------------------------------------------
# The scripted conversation
# --------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        line = f"{'ok' if ok else 'not ok'} - {name}"
        if detail:
            line += f" ({detail})"
        print(line, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def staleness_factor(config: dict, s: int) -> float:
    """Section 4.1: S(s)."""
    fn = config.get("staleness_function", "constant")
    a = float(config.get("staleness_a", 0.0))
    b = float(config.get("staleness_b", 0.0))
    if fn == "polynomial":
        return (s + 1) ** (-a)
    if fn == "hinge":
        return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    return 1.0


def run(args: argparse.Namespace) -> int:
    report = Report()
    ctx = zmq.Context()
    client = Client(ctx, args.model, args.snapshot, args.update, args.client_id)
    cid = args.client_id
    try:
        return _conversation(client, report, cid)
    finally:
        client.close()
        ctx.term()
        print(f"{report.passed} passed, {report.failed} failed", flush=True)


ALL_CHECKS = {
    "a": "a. SNAPSHOT_REQUEST gets a well-formed SNAPSHOT_REPLY",
    "b": "b. valid CLIENT_UPDATE is merged",
    "c": "c. resent seq is a duplicate",
    "d": "d. NaN payload is rejected non_finite",
    "e": "e. payload one float short is rejected layout_mismatch",
    "f": "f. base version newer than the model is rejected unknown_base",
    "g": "g. layout with W [10,64] is rejected layout_mismatch",
    "h": "h. garbage 1-frame message gets no receipt; later valid update merged",
    "i": "i. MODEL_CHUNK broadcast after a merge assembles to a finite model",
}


def _conversation(client: Client, report: Report, cid: str) -> int:
    done: set[str] = set()

    def check(key: str, ok: bool, detail: str = "") -> bool:
        done.add(key)
        return report.check(ALL_CHECKS[key], ok, detail)

    def skip_rest(why: str) -> None:
        for key in ALL_CHECKS:
            if key not in done:
                check(key, False, f"skipped: {why}")

    # Give the SUB subscription time to reach the PUB (slow-joiner) before anything
    # we want to observe is published.
    time.sleep(0.3)

    # ---- a. snapshot ------------------------------------------------------
    snap: Snapshot | None = None
    try:
        frames, rid = client.request_snapshot()
        snap = decode_snapshot_reply(frames)
        problems = []
        if snap.request_id != rid:
            problems.append(f"request id {snap.request_id} != {rid}")
        got_layout = [(t.name, t.dims, t.dtype) for t in snap.layout]
        want_layout = [(n, d, DTYPE_FLOAT32) for n, d in EXPECTED_LAYOUT]
        if got_layout != want_layout:
            problems.append(f"layout {got_layout} != {want_layout}")
        if snap.layout_frame != encode_layout(EXPECTED_LAYOUT):
            problems.append("layout frame differs from our own encoding of W[64,10], b[10]")
        fp = layout_fingerprint(snap.layout)
        if fp != snap.fingerprint:
            problems.append(f"fingerprint computed {fp:#018x} != header {snap.fingerprint:#018x}")
        if snap.parameter_count != EXPECTED_PARAMETERS:
            problems.append(f"parameter count {snap.parameter_count}")
        if sum(t.count for t in snap.layout) != snap.parameter_count:
            problems.append("layout element count != parameter count")
        for key in ("alpha", "max_staleness"):
            if key not in snap.config:
                problems.append(f"config lacks {key}")
        if not isinstance(snap.config.get("training"), dict) or \
                "learning_rate" not in snap.config["training"]:
            problems.append("config lacks training.learning_rate")
        if len(snap.params) != EXPECTED_PARAMETERS:
            problems.append(f"{len(snap.params)} values")
        if not np.all(np.isfinite(snap.params)):
            problems.append("non-finite values in the payload")
        now_ms = int(time.time() * 1000)
        if abs(snap.server_time_ms - now_ms) > 60_000:
            problems.append(f"server time {snap.server_time_ms} far from {now_ms}")
        check("a", not problems,
              "; ".join(problems) if problems else
              f"run={snap.run_id:#x} version={snap.version} fp={snap.fingerprint:#018x} "
              f"frames={snap.payload_frame_count} alpha={snap.config['alpha']} "
              f"max_staleness={snap.config['max_staleness']} "
              f"lr={snap.config['training']['learning_rate']}")
        if problems:
            snap = None if snap.parameter_count != len(snap.params) else snap
    except (ProtocolError, TimeoutError, ValueError, KeyError, struct.error) as e:
        check("a", False, f"{type(e).__name__}: {e}")
        snap = None
    if snap is None:
        skip_rest("no usable snapshot")
        return 1

    chunk_parameters = int(snap.config.get("chunk_parameters", 262_144))
    seq = int(time.time() * 1_000_000)
    version = snap.version            # the newest model version we know of

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    def update_frames(s: int, base: int, values: np.ndarray, layout: bytes | None = None,
                      run_id: int | None = None) -> list[bytes]:
        hdr = encode_update_header(snap.run_id if run_id is None else run_id, base, s, 100, cid)
        return [hdr, snap.layout_frame if layout is None else layout] + \
            payload_frames(values, chunk_parameters)

    def describe(r: Receipt | None) -> str:
        return "no receipt within timeout" if r is None else r.describe()

    def rejected_with(key: str, r: Receipt | None, reason: int, s: int, base: int) -> None:
        ok = (r is not None and r.decision == DECISION_REJECTED and r.reason == reason
              and r.seq == s and r.base == base and r.run_id == snap.run_id
              and r.model_version == version and r.mixing_weight == 0.0
              and r.topic == client.receipt_topic)
        check(key, ok, describe(r))

    # ---- b. merge ---------------------------------------------------------
    local = (snap.params + np.float32(0.01)).astype(np.float32)
    seq_b = next_seq()
    frames_b = update_frames(seq_b, snap.version, local)
    client.send(frames_b)
    r = client.wait_receipt(seq_b)
    merged_version = None
    if r is not None:
        alpha = float(snap.config["alpha"])
        expected_a = alpha * staleness_factor(snap.config, 0)
        ok = (r.decision == DECISION_MERGED and r.reason == REASON_NONE
              and r.staleness == 0 and r.model_version >= snap.version + 1
              and r.model_version == r.base + r.staleness + 1
              and r.base == snap.version and r.run_id == snap.run_id
              and r.mixing_weight > 0 and math.isclose(r.mixing_weight, expected_a, rel_tol=1e-9)
              and r.topic == client.receipt_topic)
        detail = describe(r) + f" expected a={expected_a:g}"
        check("b", ok, detail)
        if r.decision == DECISION_MERGED:
            merged_version = r.model_version
            version = max(version, r.model_version)
    else:
        check("b", False, describe(r))
    first_b = r

    # ---- c. duplicate -----------------------------------------------------
    client.send(frames_b)
    r = client.wait_receipt(seq_b)
    ok = (r is not None and r.decision == DECISION_DUPLICATE and r.seq == seq_b
          and (first_b is None or r.model_version == first_b.model_version))
    check("c", ok, describe(r) + (f" first version={first_b.model_version}" if first_b else ""))

    # ---- d. NaN -----------------------------------------------------------
    bad = local.copy()
    bad[123] = np.nan
    s = next_seq()
    client.send(update_frames(s, version, bad))
    rejected_with("d", client.wait_receipt(s), REASON_NON_FINITE, s, version)

    # ---- e. one float short -----------------------------------------------
    s = next_seq()
    client.send(update_frames(s, version, local[:-1]))
    rejected_with("e", client.wait_receipt(s), REASON_LAYOUT_MISMATCH, s, version)

    # ---- f. base newer than the model -------------------------------------
    s = next_seq()
    future = version + 1000
    client.send(update_frames(s, future, local))
    rejected_with("f", client.wait_receipt(s), REASON_UNKNOWN_BASE, s, future)

    # ---- g. transposed W --------------------------------------------------
    s = next_seq()
    transposed = encode_layout([("W", [10, 64]), ("b", [10])])
    client.send(update_frames(s, version, local, layout=transposed))
    rejected_with("g", client.wait_receipt(s), REASON_LAYOUT_MISMATCH, s, version)

    # ---- h. garbage, then a valid update ----------------------------------
    before = len(client.stray_receipts)
    client.send([b"this is not an apiary message"])
    silent = client.pump(SILENCE_WINDOW_S, lambda _r: True)
    stray = client.stray_receipts[before:]
    s = next_seq()
    client.send(update_frames(s, version, local))
    r = client.wait_receipt(s)
    ok = (silent is None and not stray and r is not None and r.decision == DECISION_MERGED
          and r.reason == REASON_NONE and r.model_version == version + 1 and r.staleness == 0)
    detail = ("garbage produced a receipt: " + silent.describe()) if silent is not None \
        else describe(r)
    check("h", ok, detail)
    if r is not None and r.decision == DECISION_MERGED:
        merged_version = r.model_version
        version = max(version, r.model_version)

    # ---- i. MODEL_CHUNK broadcast -----------------------------------------
    if merged_version is None:
        check("i", False, "skipped: nothing was merged")
    else:
        hit = client.wait_model(merged_version)
        if hit is None:
            seen = [(h.version, h.index, h.count) for h, _ in client.models.completed]
            check("i", False, f"no complete broadcast with version >= {merged_version} within "
                              f"{RECEIPT_TIMEOUT_S:g} s; chunks seen={client.models.chunks_seen} "
                              f"complete={seen} errors={client.models.errors}")
        else:
            h, vals = hit
            problems = []
            if h.run_id != snap.run_id:
                problems.append(f"run id {h.run_id:#x}")
            if h.fingerprint != snap.fingerprint:
                problems.append(f"fingerprint {h.fingerprint:#x}")
            if h.parameter_count != EXPECTED_PARAMETERS:
                problems.append(f"parameter count {h.parameter_count}")
            if len(vals) != EXPECTED_PARAMETERS or not np.all(np.isfinite(vals)):
                problems.append("values not finite / wrong length")
            if client.models.errors:
                problems.append(f"decode errors {client.models.errors}")
            check("i", not problems,
                  "; ".join(problems) if problems else
                  f"version={h.version} >= {merged_version}, chunks={h.count}, "
                  f"offset0={h.offset}, max|x - snapshot|="
                  f"{float(np.max(np.abs(vals - snap.params))):.4g}")

    if client.other_messages:
        print(f"# note: {len(client.other_messages)} messages on unexpected topics", flush=True)
    return 0 if report.failed == 0 else 1


def check_client_id(parser: argparse.ArgumentParser, cid: str) -> None:
    """Section 3.4: 1 to 64 characters of A-Z a-z 0-9 . _ -"""
    if not (1 <= len(cid) <= 64) or any(
            not (c.isascii() and (c.isalnum() or c in "._-")) for c in cid):
        parser.error("client id must be 1 to 64 characters from A-Z a-z 0-9 . _ -")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="aggregator PUB endpoint (SUB connects)")
    p.add_argument("--snapshot", required=True, help="aggregator ROUTER endpoint (DEALER connects)")
    p.add_argument("--update", required=True, help="aggregator PULL endpoint (PUSH connects)")
    p.add_argument("--client-id", default="py-1")
    args = p.parse_args(argv)
    check_client_id(p, args.client_id)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
