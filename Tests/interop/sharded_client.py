#!/usr/bin/env python3
"""Sharded interoperability client for the Apiary wire protocol, version 1.

Written from docs/PROTOCOL.md alone (sections 3.2 `shards`/`shard_index`, 3.3, 3.4 and 4.4
"Parameter shards"; no access to the Swift sources). It is given the endpoints of ONE shard
(shard 0), learns the others from that shard's snapshot reply, and runs a scripted
conversation against all of them:

  j. shard 0's SNAPSHOT_REPLY carries a valid shard map and only its own slice
  k. the other shards are reached from the map; their slices assemble to the whole model
  l. a split CLIENT_UPDATE (slice k to shard k, base version per shard) is merged by every shard
  m. each shard's next MODEL_CHUNK broadcast covers only its range, and the assembled model
     equals FedAsync's x = (1 - a) x + a u per shard, a taken from that shard's receipt
  n. a slice of the wrong length sent to shard 1 is rejected layout_mismatch, shard 1 unchanged
  o. the split update replayed with the same seq is answered `duplicate` by every shard

Usage:
    python3 sharded_client.py --model tcp://127.0.0.1:P1 --snapshot tcp://127.0.0.1:P2 \
        --update tcp://127.0.0.1:P3 [--client-id py-shard-1] [--expect-shards 3]

Output as python_client.py: one "ok - ..." / "not ok - ..." line per check, then
"N passed, M failed"; exits 0 only if every check passed. Dependencies: pyzmq and numpy.
"""

from __future__ import annotations

import argparse
import math
import os
import struct
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from python_client import (  # noqa: E402  (same directory, written from the same page)
    DECISION_DUPLICATE,
    DECISION_MERGED,
    DECISION_REJECTED,
    DTYPE_FLOAT32,
    EXPECTED_LAYOUT,
    EXPECTED_PARAMETERS,
    RECEIPT_TIMEOUT_S,
    REASON_LAYOUT_MISMATCH,
    REASON_NONE,
    STALENESS_UNKNOWN,
    ChunkHeader,
    Client,
    ProtocolError,
    Receipt,
    Report,
    Snapshot,
    check_client_id,
    decode_snapshot_reply,
    decode_model_chunk,
    encode_layout,
    encode_update_header,
    layout_fingerprint,
    payload_frames,
    staleness_factor,
)

REASON_DUPLICATE = 8
F32_TOLERANCE = 1e-6


# --------------------------------------------------------------------------
# Shard map (section 3.2)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardEntry:
    start: int
    end: int
    model: str
    snapshot: str
    update: str


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_shard_map(config: dict, parameter_count: int) -> tuple[list[ShardEntry], int]:
    """Validate `shards` and `shard_index` against section 3.2: entries in parameter order,
    non-empty, contiguous, from 0 to the parameter count; each with start, end and the three
    endpoints. Raises ProtocolError with the first violation."""
    if "shards" not in config:
        raise ProtocolError("config frame has no `shards` key")
    raw = config["shards"]
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(f"`shards` is not a non-empty array: {raw!r}")
    if "shard_index" not in config:
        raise ProtocolError("config frame has `shards` but no `shard_index`")
    index = config["shard_index"]
    if not _is_int(index) or not 0 <= index < len(raw):
        raise ProtocolError(f"`shard_index` {index!r} is not an index into {len(raw)} entries")
    entries: list[ShardEntry] = []
    expected_start = 0
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise ProtocolError(f"shards[{i}] is not an object: {e!r}")
        for key in ("start", "end"):
            if not _is_int(e.get(key)):
                raise ProtocolError(f"shards[{i}].{key} is not an integer: {e.get(key)!r}")
        for key in ("model", "snapshot", "update"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise ProtocolError(f"shards[{i}].{key} is not an endpoint string: {e.get(key)!r}")
        if e["start"] != expected_start:
            raise ProtocolError(f"shards[{i}] starts at {e['start']}, expected {expected_start} "
                                f"(entries must be contiguous, in parameter order, from 0)")
        if e["end"] <= e["start"]:
            raise ProtocolError(f"shards[{i}] is empty: [{e['start']}, {e['end']})")
        entries.append(ShardEntry(e["start"], e["end"], e["model"], e["snapshot"], e["update"]))
        expected_start = e["end"]
    if expected_start != parameter_count:
        raise ProtocolError(f"shards end at {expected_start}, the model has {parameter_count}")
    return entries, index


@dataclass
class ShardSnapshot:
    snap: Snapshot              # params = the slice only
    header_parameter_count: int
    shards: list[ShardEntry]
    shard_index: int

    @property
    def entry(self) -> ShardEntry:
        return self.shards[self.shard_index]


def decode_shard_snapshot_reply(frames: list[bytes]) -> ShardSnapshot:
    """Section 3.2 with a shard map: the payload adds up to 4 x (end - start) bytes of entry
    `shard_index`."""
    found: dict = {}

    def slice_values(config: dict, layout) -> int:
        # The shard map covers the whole model, whose size the layout gives.
        shards, index = parse_shard_map(config, sum(t.count for t in layout))
        found["map"] = (shards, index)
        return shards[index].end - shards[index].start

    snap = decode_snapshot_reply(frames, slice_values)
    shards, index = found["map"]
    return ShardSnapshot(snap, snap.parameter_count, shards, index)


# --------------------------------------------------------------------------
# Per-shard MODEL_CHUNK assembly (sections 3.3 and 4.4)
# --------------------------------------------------------------------------


@dataclass
class SliceAssembly:
    header: ChunkHeader
    chunks: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def complete(self) -> bool:
        return len(self.chunks) == self.header.count


@dataclass
class SliceVersion:
    header: ChunkHeader          # of chunk 0
    values: np.ndarray           # end - start values
    offsets: list[int]
    chunk_count: int


class ShardTracker:
    """Assembles one shard's MODEL_CHUNK broadcasts into its slice, newest-wins per shard.
    Until the shard's range is known (before its snapshot) chunks are kept raw."""

    def __init__(self, model_parameters: int) -> None:
        self.model_parameters = model_parameters
        self.start: int | None = None
        self.end: int | None = None
        self.pending: list[list[bytes]] = []
        self.current: SliceAssembly | None = None
        self.completed: list[SliceVersion] = []
        self.chunks_seen = 0
        self.dropped = 0
        self.errors: list[str] = []
        self.offsets_seen: list[int] = []

    def set_range(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        pending, self.pending = self.pending, []
        for frames in pending:
            self.feed(frames)

    def feed(self, frames: list[bytes]) -> None:
        if self.start is None:
            self.pending.append(frames)
            return
        try:
            h, payload = decode_model_chunk(frames)
        except ProtocolError as e:
            self.errors.append(str(e))
            return
        self.chunks_seen += 1
        n = len(payload) // 4
        self.offsets_seen.append(h.offset)
        if h.parameter_count != self.model_parameters:
            self.errors.append(f"chunk v{h.version} parameter count {h.parameter_count}, the model "
                               f"has {self.model_parameters} (a shard keeps the whole model's)")
        if not self.start <= h.offset < self.end or h.offset + n > self.end:
            self.errors.append(f"chunk v{h.version} #{h.index} covers [{h.offset}, {h.offset + n}),"
                               f" outside the shard's [{self.start}, {self.end})")
            return
        key = (h.run_id, h.version)
        if self.current is None or (self.current.header.run_id,
                                    self.current.header.version) != key:
            if self.current is not None and not self.current.complete():
                self.dropped += 1
            self.current = SliceAssembly(h)
        if h.count != self.current.header.count:
            self.errors.append(f"chunk count changed within v{h.version}: "
                               f"{self.current.header.count} -> {h.count}")
        self.current.chunks[h.index] = (h.offset, payload)
        if self.current.complete():
            try:
                self.completed.append(self._finish(self.current))
            except ProtocolError as e:
                self.errors.append(str(e))
            self.current = None

    def _finish(self, a: SliceAssembly) -> SliceVersion:
        out = np.full(self.end - self.start, np.nan, dtype=np.float32)
        expected = self.start
        offsets = []
        for i in range(a.header.count):
            offset, payload = a.chunks[i]
            if offset != expected:
                raise ProtocolError(f"v{a.header.version} chunk {i} starts at {offset}, "
                                    f"expected {expected}")
            vals = np.frombuffer(payload, dtype="<f4")
            out[offset - self.start:offset - self.start + len(vals)] = vals
            offsets.append(offset)
            expected = offset + len(vals)
        if expected != self.end:
            raise ProtocolError(f"v{a.header.version} chunks cover [{self.start}, {expected}), "
                                f"the shard owns [{self.start}, {self.end})")
        return SliceVersion(a.header, out, offsets, a.header.count)


# --------------------------------------------------------------------------
# One shard = one Client (SUB + DEALER + PUSH) with a slice tracker
# --------------------------------------------------------------------------


class Shard:
    def __init__(self, ctx: zmq.Context, model: str, snapshot: str, update: str, cid: str):
        self.endpoints = (model, snapshot, update)
        self.client = Client(ctx, model, snapshot, update, cid)
        self.tracker = ShardTracker(EXPECTED_PARAMETERS)
        self.client.models = self.tracker          # Client._dispatch feeds chunks here
        self.info: ShardSnapshot | None = None
        self.run_id = 0                            # (run id, version) of the slice we hold
        self.version = 0
        self.values: np.ndarray | None = None

    def snapshot(self) -> tuple[ShardSnapshot, int]:
        frames, rid = self.client.request_snapshot()
        return decode_shard_snapshot_reply(frames), rid

    def adopt(self, info: ShardSnapshot) -> None:
        self.info = info
        self.run_id, self.version = info.snap.run_id, info.snap.version
        self.values = info.snap.params.copy()
        if self.tracker.start is None:
            self.tracker.set_range(info.entry.start, info.entry.end)

    def wait_receipt(self, seq: int, timeout_s: float = RECEIPT_TIMEOUT_S) -> Receipt | None:
        return self.client.wait_receipt(seq, timeout_s)

    def wait_broadcast(self, min_version: int, timeout_s: float = RECEIPT_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while True:
            for sv in self.tracker.completed:
                if sv.header.version >= min_version:
                    return sv
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.client.pump(min(left, 0.25))

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------
# The scripted conversation
# --------------------------------------------------------------------------

ALL_CHECKS = {
    "j": "j. shard 0's SNAPSHOT_REPLY has a valid shard map and only its slice",
    "k": "k. the other shards, reached from the map, give slices assembling the whole model",
    "l": "l. a split CLIENT_UPDATE is merged by every shard",
    "m": "m. each shard broadcasts only its range; assembled model = FedAsync prediction",
    "n": "n. a wrong-length slice to shard 1 is rejected layout_mismatch; shard 1 unchanged",
    "o": "o. the split update replayed with the same seq is a duplicate at every shard",
}


def describe(r: Receipt | None) -> str:
    return "no receipt within timeout" if r is None else r.describe()


def run(args: argparse.Namespace) -> int:
    report = Report()
    ctx = zmq.Context()
    shards: list[Shard] = []
    try:
        shards.append(Shard(ctx, args.model, args.snapshot, args.update, args.client_id))
        return _conversation(ctx, shards, report, args)
    finally:
        for s in shards:
            s.close()
        ctx.term()
        print(f"{report.passed} passed, {report.failed} failed", flush=True)


def _conversation(ctx: zmq.Context, shards: list[Shard], report: Report,
                  args: argparse.Namespace) -> int:
    cid = args.client_id
    done: set[str] = set()

    def check(key: str, ok: bool, detail: str = "") -> bool:
        done.add(key)
        return report.check(ALL_CHECKS[key], ok, detail)

    def skip_rest(why: str) -> int:
        for key in ALL_CHECKS:
            if key not in done:
                check(key, False, f"skipped: {why}")
        return 1

    time.sleep(0.3)                                # slow joiner: let the SUB subscribe first
    expected_layout = encode_layout(EXPECTED_LAYOUT)

    # ---- j. shard 0's snapshot ----------------------------------------------
    s0 = shards[0]
    try:
        info0, rid = s0.snapshot()
    except (ProtocolError, TimeoutError, ValueError, KeyError, struct.error) as e:
        check("j", False, f"{type(e).__name__}: {e}")
        return skip_rest("no usable snapshot from shard 0")
    problems = []
    snap0 = info0.snap
    if snap0.request_id != rid:
        problems.append(f"request id {snap0.request_id} != {rid}")
    if snap0.layout_frame != expected_layout:
        problems.append("layout frame differs from W[64,10], b[10]")
    if layout_fingerprint(snap0.layout) != snap0.fingerprint:
        problems.append(f"fingerprint {snap0.fingerprint:#018x} does not match the layout")
    if info0.shard_index != 0:
        problems.append(f"shard_index {info0.shard_index}, expected 0 (we asked shard 0)")
    if len(info0.shards) != args.expect_shards:
        problems.append(f"{len(info0.shards)} entries, expected {args.expect_shards}")
    if (info0.entry.model, info0.entry.snapshot, info0.entry.update) != s0.endpoints:
        problems.append(f"entry 0's endpoints {info0.entry} are not the ones we connected to "
                        f"{s0.endpoints}")
    if info0.header_parameter_count not in (EXPECTED_PARAMETERS,
                                            info0.entry.end - info0.entry.start):
        problems.append(f"header parameter count {info0.header_parameter_count} is neither the "
                        f"model's {EXPECTED_PARAMETERS} nor the slice's")
    if not np.all(np.isfinite(snap0.params)):
        problems.append("non-finite values in the slice")
    ranges = [(e.start, e.end) for e in info0.shards]
    check("j", not problems,
          "; ".join(problems) if problems else
          f"shards={ranges} shard_index=0 payload={4 * len(snap0.params)} bytes in "
          f"{snap0.payload_frame_count} frame(s) = [{info0.entry.start}, {info0.entry.end}) "
          f"header parameter_count={info0.header_parameter_count} run={snap0.run_id:#x} "
          f"version={snap0.version} chunk_parameters={snap0.config.get('chunk_parameters')}")
    if problems and (len(info0.shards) < 2 or info0.shard_index != 0):
        return skip_rest("shard map unusable")
    s0.adopt(info0)
    layout_frame = snap0.layout_frame

    # ---- k. the other shards ------------------------------------------------
    problems = []
    for k, entry in enumerate(info0.shards):
        if k == 0:
            continue
        sk = Shard(ctx, entry.model, entry.snapshot, entry.update, cid)
        shards.append(sk)
    time.sleep(0.3)                                # slow joiner for the new SUB sockets
    for k, sk in enumerate(shards[1:], start=1):
        try:
            info, rid = sk.snapshot()
        except (ProtocolError, TimeoutError, ValueError, KeyError, struct.error) as e:
            problems.append(f"shard {k}: {type(e).__name__}: {e}")
            continue
        if info.snap.request_id != rid:
            problems.append(f"shard {k}: request id {info.snap.request_id} != {rid}")
        if info.shard_index != k:
            problems.append(f"shard {k}: shard_index {info.shard_index}")
        if info.shards != info0.shards:
            problems.append(f"shard {k}: its map differs from shard 0's: {info.shards}")
        if info.snap.layout_frame != layout_frame:
            problems.append(f"shard {k}: layout frame differs from shard 0's")
        if info.snap.fingerprint != snap0.fingerprint:
            problems.append(f"shard {k}: fingerprint {info.snap.fingerprint:#x}")
        if info.header_parameter_count != info0.header_parameter_count and \
                info0.header_parameter_count == EXPECTED_PARAMETERS:
            problems.append(f"shard {k}: header parameter count {info.header_parameter_count}")
        sk.adopt(info)
    if not problems:
        full = np.concatenate([s.values for s in shards])
        if len(full) != EXPECTED_PARAMETERS:
            problems.append(f"assembled {len(full)} values")
        elif not np.all(np.isfinite(full)):
            problems.append("assembled model has non-finite values")
    check("k", not problems,
          "; ".join(problems) if problems else
          "slices " + " + ".join(f"{len(s.values)}" for s in shards)
          + f" = {EXPECTED_PARAMETERS} values; (run, version) per shard: "
          + ", ".join(f"{s.run_id:#x}/v{s.version}" for s in shards))
    if problems:
        return skip_rest("could not assemble the model from the shards")
    full = np.concatenate([s.values for s in shards])

    # ---- l. split update -----------------------------------------------------
    rng = np.random.default_rng(20240601)
    trained = (full + rng.normal(0.0, 0.05, full.shape)).astype(np.float32)
    seq = int(time.time() * 1_000_000)

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    def slice_frames(sk: Shard, s: int, values: np.ndarray, base: int | None = None) -> list[bytes]:
        chunk = int(sk.info.snap.config.get("chunk_parameters", 262_144))
        hdr = encode_update_header(sk.run_id, sk.version if base is None else base, s, 100, cid)
        return [hdr, layout_frame] + payload_frames(values, chunk)

    seq_l = next_seq()
    sent_l: list[list[bytes]] = []
    bases = [s.version for s in shards]
    for sk in shards:
        e = sk.info.entry
        frames = slice_frames(sk, seq_l, trained[e.start:e.end])
        sent_l.append(frames)
        sk.client.send(frames)
    receipts_l: list[Receipt | None] = [sk.wait_receipt(seq_l) for sk in shards]
    problems = []
    for k, (sk, r) in enumerate(zip(shards, receipts_l)):
        if r is None:
            problems.append(f"shard {k}: no receipt within {RECEIPT_TIMEOUT_S:g} s")
            continue
        alpha = float(sk.info.snap.config["alpha"])
        want_a = alpha * staleness_factor(sk.info.snap.config, 0)
        ok = (r.decision == DECISION_MERGED and r.reason == REASON_NONE and r.seq == seq_l
              and r.base == bases[k] and r.run_id == sk.run_id and r.staleness == 0
              and r.model_version == bases[k] + 1
              and math.isclose(r.mixing_weight, want_a, rel_tol=1e-9)
              and r.topic == sk.client.receipt_topic)
        if not ok:
            problems.append(f"shard {k}: {describe(r)} (expected merged, base {bases[k]}, "
                            f"a={want_a:g})")
    check("l", not problems,
          "; ".join(problems) if problems else
          "; ".join(f"shard {k}: merged v{r.base}->v{r.model_version} a={r.mixing_weight:g}"
                    for k, r in enumerate(receipts_l)) + f" (seq {seq_l})")
    merged = not problems

    # ---- m. per-shard broadcasts and the FedAsync prediction -----------------
    if not merged:
        check("m", False, "skipped: not every shard merged")
    else:
        problems = []
        details = []
        predicted_parts, assembled_parts = [], []
        for k, (sk, r) in enumerate(zip(shards, receipts_l)):
            e = sk.info.entry
            sv = sk.wait_broadcast(r.model_version)
            if sk.tracker.errors:
                problems.append(f"shard {k}: {sk.tracker.errors}")
            if sv is None:
                problems.append(f"shard {k}: no complete broadcast >= v{r.model_version} within "
                                f"{RECEIPT_TIMEOUT_S:g} s (chunks seen {sk.tracker.chunks_seen})")
                continue
            h = sv.header
            if h.version != r.model_version:
                problems.append(f"shard {k}: next broadcast is v{h.version}, the merge made "
                                f"v{r.model_version}")
            if h.run_id != sk.run_id:
                problems.append(f"shard {k}: broadcast run id {h.run_id:#x}")
            if h.fingerprint != snap0.fingerprint:
                problems.append(f"shard {k}: broadcast fingerprint {h.fingerprint:#x}")
            if not all(e.start <= o < e.end for o in sv.offsets):
                problems.append(f"shard {k}: offsets {sv.offsets} outside [{e.start}, {e.end})")
            a = np.float32(r.mixing_weight)
            old = sk.values
            u = trained[e.start:e.end]
            predicted = ((np.float32(1) - a) * old + a * u).astype(np.float32)
            diff = float(np.max(np.abs(sv.values.astype(np.float64) - predicted)))
            if not diff <= F32_TOLERANCE:
                problems.append(f"shard {k}: max |broadcast - prediction| = {diff:.3g}")
            predicted_parts.append(predicted)
            assembled_parts.append(sv.values)
            details.append(f"shard {k}: v{h.version} {sv.chunk_count} chunk(s) at offsets "
                           f"{sv.offsets} in [{e.start},{e.end}) max|diff|={diff:.2g}")
            sk.version, sk.values = h.version, sv.values.copy()
        if not problems:
            assembled = np.concatenate(assembled_parts)
            predicted = np.concatenate(predicted_parts)
            moved = float(np.max(np.abs(assembled - full)))
            if len(assembled) != EXPECTED_PARAMETERS:
                problems.append(f"assembled {len(assembled)} values")
            elif not np.allclose(assembled, predicted, rtol=0, atol=F32_TOLERANCE):
                problems.append("assembled model differs from the prediction")
            elif moved == 0.0:
                problems.append("the model did not change")
            details.append(f"assembled {len(assembled)} values, max|x_new - x_old|={moved:.3g}")
        check("m", not problems, "; ".join(problems) if problems else "; ".join(details))

    # ---- n. wrong-length slice to shard 1 ------------------------------------
    if len(shards) < 2:
        check("n", False, "skipped: fewer than 2 shards")
    else:
        s1 = shards[1]
        e1 = s1.info.entry
        version_before = s1.version
        values_before = s1.values.copy() if s1.values is not None else None
        problems = []
        details = []
        cases = [
            ("one value too many", trained[e1.start:e1.end + 1]),
            ("the whole model", trained),
        ]
        for what, payload in cases:
            s = next_seq()
            s1.client.send(slice_frames(s1, s, payload))
            r = s1.wait_receipt(s)
            ok = (r is not None and r.decision == DECISION_REJECTED
                  and r.reason == REASON_LAYOUT_MISMATCH and r.seq == s
                  and r.base == version_before and r.run_id == s1.run_id
                  and r.model_version == version_before and r.mixing_weight == 0.0
                  and r.staleness == STALENESS_UNKNOWN)
            (details if ok else problems).append(f"{what} ({len(payload)} values): {describe(r)}")
        try:
            info, _ = s1.snapshot()
            if info.snap.version != version_before or info.snap.run_id != s1.run_id:
                problems.append(f"shard 1 moved to {info.snap.run_id:#x}/v{info.snap.version}, "
                                f"was {s1.run_id:#x}/v{version_before}")
            elif values_before is None or not np.array_equal(info.snap.params, values_before):
                problems.append("shard 1's slice changed")
            else:
                details.append(f"shard 1 still v{version_before} with the same slice")
        except (ProtocolError, TimeoutError, ValueError, KeyError, struct.error) as e:
            problems.append(f"snapshot of shard 1 afterwards: {type(e).__name__}: {e}")
        check("n", not problems, "; ".join(problems) if problems else "; ".join(details))

    # ---- o. replay of the split update ---------------------------------------
    if not merged:
        check("o", False, "skipped: the split update was not merged")
    else:
        problems = []
        details = []
        for k, (sk, frames, first) in enumerate(zip(shards, sent_l, receipts_l)):
            sk.client.send(frames)
            r = sk.wait_receipt(seq_l)
            ok = (r is not None and r.decision == DECISION_DUPLICATE
                  and r.reason == REASON_DUPLICATE and r.seq == seq_l
                  and r.run_id == sk.run_id and r.base == first.base
                  and r.model_version == first.model_version
                  and r.staleness == first.staleness
                  and r.mixing_weight == first.mixing_weight)
            (details if ok else problems).append(f"shard {k}: {describe(r)}")
        for k, sk in enumerate(shards):
            try:
                info, _ = sk.snapshot()
                if (info.snap.run_id, info.snap.version) != (sk.run_id, sk.version):
                    problems.append(f"shard {k} moved to v{info.snap.version} (held v{sk.version})")
            except (ProtocolError, TimeoutError, ValueError, KeyError, struct.error) as e:
                problems.append(f"snapshot of shard {k}: {type(e).__name__}: {e}")
        check("o", not problems, "; ".join(problems) if problems else "; ".join(details))

    return 0 if report.failed == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="shard 0's PUB endpoint (SUB connects)")
    p.add_argument("--snapshot", required=True, help="shard 0's ROUTER endpoint")
    p.add_argument("--update", required=True, help="shard 0's PULL endpoint")
    p.add_argument("--client-id", default="py-shard-1")
    p.add_argument("--expect-shards", type=int, default=3)
    args = p.parse_args(argv)
    check_client_id(p, args.client_id)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
