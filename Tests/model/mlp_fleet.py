#!/usr/bin/env python3
"""A numpy MLP trained on an Apiary fleet, as a user without Swift would run it: a trainer
process (`train`) or an evaluator process (`evaluate`), speaking docs/PROTOCOL.md through the
protocol helpers of Tests/interop/python_client.py (written from that page alone).

    python mlp_fleet.py train    --snapshot S --model M --update U --id ID --parts 0,3,6 [--rounds N]
    python mlp_fleet.py evaluate --snapshot S --model M --update U --id ID [--until-accuracy A]

The trainer reads its hyper-parameters from the snapshot's `training` object (learning rate,
epochs, batch size, and `extra.hidden_activation`, which it requires: the test checks that
`training.extra` reaches a trainer), sends its training loss and accuracy as the update's
metrics frame (PROTOCOL.md 3.4) and resends until receipted. The evaluator sends an
EVALUATION_REPORT (3.6) for every newer model it holds, on the held-out digits test split.
Tensors are taken by name and shape from the layout frame, in layout order, never by position
in a file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import struct
import sys
import time

import numpy as np
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "Tests", "interop"))
import python_client as pc  # noqa: E402

EVALUATION_REPORT = 6
DECISION_RECORDED = 4


def load_digits():
    res = os.path.join(REPO, "Sources", "ApiaryLearning", "Resources")
    with open(os.path.join(res, "digits.csv")) as f:
        rows = list(csv.reader(f))[1:]
    data = np.array(rows, dtype=np.float32)
    x, y = data[:, :64] / 16.0, data[:, 64].astype(np.int64)
    with open(os.path.join(res, "partition.json")) as f:
        part = json.load(f)
    return x, y, part


class MLP:
    """The flat vector <-> named tensors, by the layout frame's order."""

    def __init__(self, layout: list[pc.Tensor]):
        self.layout = layout
        names = {t.name: t.dims for t in layout}
        want = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
        if set(names) != want:
            raise SystemExit(f"the aggregator's layout {sorted(names)} is not this MLP's {sorted(want)}")

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out, off = {}, 0
        for t in self.layout:
            n = int(np.prod(t.dims)) if t.dims else 1
            out[t.name] = flat[off:off + n].reshape(t.dims).copy()
            off += n
        return out

    def flatten(self, w: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for t in self.layout:
            a = w[t.name]
            if list(a.shape) != list(t.dims) or a.dtype != np.float32:
                raise SystemExit(f"tensor {t.name} is {a.dtype}{list(a.shape)}, the layout says float32{t.dims}")
            parts.append(a.ravel())
        return np.concatenate(parts)


def forward(w, x, act):
    z = x @ w["fc1.weight"].T + w["fc1.bias"]
    h = np.maximum(z, 0) if act == "relu" else np.tanh(z)
    logits = h @ w["fc2.weight"].T + w["fc2.bias"]
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    return z, h, p


def evaluate(w, x, y, act="relu"):
    _, _, p = forward(w, x, act)
    loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
    return float((p.argmax(axis=1) == y).mean()), loss


def train(w, x, y, cfg, rng):
    lr, epochs, batch = cfg["learning_rate"], cfg["local_epochs"], cfg["batch_size"]
    act = cfg.get("extra", {}).get("hidden_activation")
    if act not in ("relu", "tanh"):
        raise SystemExit(f"training.extra.hidden_activation is {act!r}: the operator's settings did not arrive")
    w = {k: v.copy() for k, v in w.items()}
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            xb, yb = x[idx], y[idx]
            z, h, p = forward(w, xb, act)
            g = p.copy()
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            gw2, gb2 = g.T @ h, g.sum(axis=0)
            dh = g @ w["fc2.weight"]
            dz = dh * (z > 0) if act == "relu" else dh * (1 - h * h)
            gw1, gb1 = dz.T @ xb, dz.sum(axis=0)
            w["fc1.weight"] -= (lr * gw1).astype(np.float32)
            w["fc1.bias"] -= (lr * gb1).astype(np.float32)
            w["fc2.weight"] -= (lr * gw2).astype(np.float32)
            w["fc2.bias"] -= (lr * gb2).astype(np.float32)
    acc, loss = evaluate(w, x, y, act)
    return w, {"loss": loss, "accuracy": acc}


def metrics_json(m: dict[str, float]) -> bytes:
    return json.dumps({k: float(v) for k, v in m.items()}, separators=(",", ":")).encode()


def update_frames(snap_run, base, seq, samples, cid, layout_frame, flat, metrics, with_metrics, chunk):
    cidb = cid.encode("ascii")
    flags = 1 if with_metrics else 0
    header = pc.common_prefix(pc.CLIENT_UPDATE) + struct.pack("<QQQQBBH", snap_run, base, seq, samples, 0, len(cidb), flags) + cidb
    frames = [header, layout_frame]
    if with_metrics:
        frames.append(metrics_json(metrics))
    return frames + pc.payload_frames(flat, chunk)


def report_frames(run, version, seq, examples, cid, dataset, metrics):
    cidb = cid.encode("ascii")
    header = common6() + struct.pack("<QQQQBBH", run, version, seq, examples, 0, len(cidb), 0) + cidb
    body = json.dumps({"dataset": dataset, "metrics": metrics}, separators=(",", ":")).encode()
    return [header, body]


def common6() -> bytes:
    return pc.MAGIC + bytes([pc.PROTOCOL_VERSION, EVALUATION_REPORT]) + b"\0\0"


class Member:
    """Join, follow the newest model, send and resend until receipted."""

    def __init__(self, a):
        self.ctx = zmq.Context()
        self.client = pc.Client(self.ctx, a.model, a.snapshot, a.update, a.id)
        time.sleep(0.3)  # let the SUB subscription reach the aggregator
        self.id = a.id
        self.seq = int(time.time() * 1_000_000)
        self.join()

    def join(self):
        frames, _ = self.client.request_snapshot()
        s = pc.decode_snapshot_reply(frames)
        self.run, self.version, self.config = s.run_id, s.version, s.config
        self.layout_frame, self.mlp = s.layout_frame, MLP(s.layout)
        self.flat = s.params
        self.features = set(s.config.get("features", []))

    def newest(self):
        """The newest complete broadcast newer than what we hold (or of another run)."""
        done = self.client.models.completed
        if done:
            h, vals = done[-1]
            done.clear()
            if h.run_id != self.run or h.version > self.version:
                self.run, self.version, self.flat = h.run_id, h.version, vals

    def deliver(self, frames, seq, want_decision=None):
        timeout = float(self.config.get("receipt_timeout_s", 10))
        for attempt in range(6):
            self.client.send(frames)
            r = self.client.wait_receipt(seq, timeout_s=min(timeout, 2.0) * (attempt + 1))
            if r is not None:
                return r
        raise SystemExit(f"{self.id}: no receipt for seq {seq} after 6 sends")

    def close(self):
        self.client.close()
        self.ctx.term()


def run_train(a) -> int:
    x, y, part = load_digits()
    idx = sorted(i for p in a.parts.split(",") for i in part["clients"][p])
    xs, ys = x[idx], y[idx]
    m = Member(a)
    rng = np.random.default_rng(hash(a.id) & 0xFFFF)
    metrics_ok = "update_metrics" in m.features
    print(f"{a.id}: joined run {m.run:016x} at version {m.version}; {len(ys)} examples; "
          f"layout {[(t.name, t.dims) for t in m.mlp.layout]}; extra {m.config['training'].get('extra')}", flush=True)
    merged = 0
    for _ in range(a.rounds):
        m.client.pump(0.05)
        m.newest()
        w, metrics = train(m.mlp.unflatten(m.flat), xs, ys, m.config["training"], rng)
        m.seq += 1
        frames = update_frames(m.run, m.version, m.seq, len(ys), a.id, m.layout_frame, m.mlp.flatten(w),
                               metrics, metrics_ok, m.config.get("chunk_parameters", 262144))
        r = m.deliver(frames, m.seq)
        if r.decision == pc.DECISION_MERGED:
            merged += 1
        elif r.reason == pc.REASON_UNKNOWN_BASE:
            m.join()
        m.client.pump(0.2)
        m.newest()
    print(f"{a.id}: {merged} of {a.rounds} updates merged", flush=True)
    m.close()
    return 0 if merged > 0 else 1


def run_evaluate(a) -> int:
    x, y, part = load_digits()
    test = part["test_indices"]
    xt, yt = x[test], y[test]
    m = Member(a)
    if "evaluation_reports" not in m.features:
        raise SystemExit("the aggregator does not take evaluation reports")
    dataset = f"digits test split ({len(yt)} examples)"
    last, best, deadline = -1, 0.0, time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        m.client.pump(0.3)
        m.newest()
        if m.version == last:
            continue
        last = m.version
        acc, loss = evaluate(m.mlp.unflatten(m.flat), xt, yt, "relu")
        best = max(best, acc)
        m.seq += 1
        r = m.deliver(report_frames(m.run, m.version, m.seq, len(yt), a.id, dataset, {"accuracy": acc, "loss": loss}), m.seq)
        if r.decision != DECISION_RECORDED:
            raise SystemExit(f"report not recorded: {r.describe()}")
        print(f"{a.id}: version {m.version} accuracy {acc:.4f} loss {loss:.4f} (recorded)", flush=True)
        if acc >= a.until_accuracy:
            break
    m.close()
    print(f"{a.id}: best accuracy {best:.4f} (target {a.until_accuracy})", flush=True)
    return 0 if best >= a.until_accuracy else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["train", "evaluate"])
    for k in ("snapshot", "model", "update", "id"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--parts", default="0")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--until-accuracy", type=float, default=0.85)
    a = p.parse_args()
    return run_train(a) if a.role == "train" else run_evaluate(a)


if __name__ == "__main__":
    sys.exit(main())
