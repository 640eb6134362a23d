"""The SDK's cost per update, against raw pyzmq in the same run (issue 12, item 7).

A real aggregator serves a 1M-parameter model (one float32 tensor, 4 MB) without checkpoints
(receipts go out at once). Each sender pushes N updates, at most 8 in flight, and waits for
every receipt:

- sdk: `apiary.Client` with a trainer that returns the same prebuilt arrays at once (by-name
  checks, the copy into the SDK's buffer, the finiteness check, framing, push, receipt
  bookkeeping, following the model broadcast, the I/O thread);
- raw: plain pyzmq PUSH/SUB sending the same frames (prebuilt once) and counting receipts,
  in the same rounds (each round runs raw, then sdk; medians over the rounds).

Prints updates/s of each and the ratios (goal >= 0.8), and the resident memory of an idle SDK
client process holding the model, against a bare `import zmq, numpy` process.

    APIARY_BIN=.build/debug/apiary python python/bench/bench_sdk.py [--updates 200] [--rounds 5] [--parameters 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

import apiary
from apiary import wire

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from free_ports import consecutive_ports  # noqa: E402


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_aggregator(binary: str, work: Path, base: int, parameters: int) -> subprocess.Popen[bytes]:
    from safetensors.numpy import save_file
    rows = 1000
    save_file({"w": np.zeros((rows, parameters // rows), dtype=np.float32)}, str(work / "model.safetensors"))
    (work / "agg.yaml").write_text(f"""
endpoints: {{snapshot: "tcp://127.0.0.1:{base}", model: "tcp://127.0.0.1:{base + 1}", update: "tcp://127.0.0.1:{base + 2}"}}
security: {{insecure: true}}
fedasync: {{alpha: 0.5, max_staleness: 100000, staleness: {{function: constant}}}}
publish: {{interval_s: 0.5, heartbeat_s: 5}}
checkpoint: {{directory: ""}}
ledger: {{path: ""}}
evaluation: {{enabled: false}}
progress: {{interval_s: 0}}
""")
    p = subprocess.Popen([binary, "aggregator", "--config", str(work / "agg.yaml"), "--model", str(work / "model.safetensors")],
                         cwd=work, stdout=open(work / "agg.log", "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", base), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise RuntimeError((work / "agg.log").read_text())


class Echo:
    """Returns the same prebuilt arrays every round (as raw sends prebuilt frames): what is timed
    is the SDK, not a trainer (fresh arrays, so the SDK copies them as it does for any trainer). Notes when the first receipt came
    (the clock starts there, as for raw)."""

    def __init__(self) -> None:
        self.client: apiary.Client | None = None
        self.start: tuple[float, int] | None = None
        self.result: dict[str, np.ndarray] | None = None

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        if self.result is None:
            self.result = {k: np.array(v) for k, v in model.items()}
        if self.start is None and self.client is not None:
            answered = self.client.stats.merged
            if answered >= 1:
                self.start = (time.perf_counter(), answered)
        return apiary.TrainResult(self.result, num_examples=1)


def sdk_rate(base: int, n: int) -> float:
    echo = Echo()
    c = apiary.Client(echo, client_id="bench-sdk", aggregator=f"tcp://127.0.0.1:{base}", insecure=True,
                      new_model_wait=0.0)
    echo.client = c
    s = c.run(max_rounds=n, handle_signals=False)
    end = time.perf_counter()
    answered = s.merged + s.rejected + s.duplicates
    assert answered == n and echo.start is not None, s
    return (n - echo.start[1]) / (end - echo.start[0])


def raw_rate(base: int, n: int) -> float:
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{base}")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"receipt/bench-raw/")
    sub.connect(f"tcp://127.0.0.1:{base + 1}")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{base + 2}")
    time.sleep(0.3)
    dealer.send(wire.encode_snapshot_request(1, "bench-raw"))
    reply = wire.decode_snapshot_reply(dealer.recv_multipart())
    payload = wire.payload_frames(reply.values, int(reply.config["chunk_parameters"]))
    seq0 = time.time_ns() // 1000
    sent = received = 0
    start = time.perf_counter()
    while received < n:
        while sent < n and sent - received < 8:
            header = wire.encode_update_header(reply.run_id, reply.version, seq0 + sent, 1, "bench-raw", False)
            push.send_multipart([header, reply.layout_frame, *payload], copy=False)
            sent += 1
        sub.recv_multipart()
        received += 1
        if received == 1:
            start = time.perf_counter()
    end = time.perf_counter()
    for s in (dealer, sub, push):
        s.close(linger=0)
    return (n - 1) / (end - start)


def idle_rss(base: int) -> tuple[int, int]:
    code = ("import apiary, threading\n"
            "class Hold:\n"
            "    def train(self, model, config):\n"
            "        print('holding', flush=True); threading.Event().wait()\n"
            f"apiary.run(Hold(), client_id='bench-idle', aggregator='tcp://127.0.0.1:{base}', insecure=True)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    p.stdout.readline()
    time.sleep(0.5)
    sdk = rss_kib(p.pid)
    p.kill()
    p.wait()
    bare = subprocess.Popen([sys.executable, "-c", "import zmq, numpy, time; print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert bare.stdout is not None
    bare.stdout.readline()
    b = rss_kib(bare.pid)
    bare.kill()
    bare.wait()
    return sdk, b


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--parameters", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    binary = os.environ.get("APIARY_BIN", str(Path(__file__).resolve().parents[2] / ".build" / "debug" / "apiary"))
    with tempfile.TemporaryDirectory(prefix="apiary-bench-sdk.") as tmp:
        base = consecutive_ports(3)
        agg = start_aggregator(binary, Path(tmp), base, a.parameters)
        try:
            # Interleaved rounds, medians: drift of the aggregator or of the machine favours none.
            raws, sdks = [], []
            for _ in range(a.rounds):
                raws.append(raw_rate(base, a.updates))
                sdks.append(sdk_rate(base, a.updates))
            bound, sdk = statistics.median(raws), statistics.median(sdks)
            rss, bare = idle_rss(base)
        finally:
            agg.send_signal(signal.SIGTERM)
            agg.wait(20)
    mb = a.parameters * 4 / 1e6
    print(f"raw pyzmq, same frames, same run: {bound:.1f} updates/s of {mb:.0f} MB ({bound * mb:.0f} MB/s), the bound "
          f"(medians of {a.rounds} interleaved rounds of {a.updates} updates)")
    print(f"sdk: {sdk:.1f} updates/s; ratio {sdk / bound:.2f} (goal >= 0.8)")
    print(f"idle SDK client holding the model: {rss / 1024:.1f} MiB VmRSS; bare python with zmq and numpy: {bare / 1024:.1f} MiB; "
          f"ratio {rss / bare:.2f}")
    print(json.dumps({"benchmark": "python_sdk_update", "parameters": a.parameters, "sdk_updates_per_s": round(sdk, 2),
                      "raw_updates_per_s": round(bound, 2), "ratio": round(sdk / bound, 3), "idle_rss_kib": rss, "bare_rss_kib": bare}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
