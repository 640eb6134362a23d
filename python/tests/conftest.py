"""Fixtures: real `apiary aggregator` processes on free loopback ports, in a temporary
directory, stopped (or killed) when the test ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from free_ports import consecutive_ports  # noqa: E402  (the one copy; tests import it from here)


def apiary_bin() -> str:
    path = os.environ.get("APIARY_BIN", str(ROOT / ".build" / "debug" / "apiary"))
    if not os.path.exists(path):
        pytest.skip(f"no apiary binary at {path} (swift build --product apiary, or set APIARY_BIN)")
    return path


@dataclass
class Aggregator:
    """One aggregator process; `snapshot` is what clients pass as ``aggregator=``."""

    directory: Path
    port: int
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def snapshot(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def start(self) -> "Aggregator":
        path = self.directory / f"aggregator-{len(self.logs)}.log"
        self.logs.append(path)
        with open(path, "wb") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([apiary_bin(), "aggregator", *self.args], cwd=self.directory, env=self.env,
                                            stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"aggregator exited with {self.process.returncode}:\n{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"aggregator not listening after 30 s:\n{self.log}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return -9
        return self.process.returncode if self.process else 0


def write_config(directory: Path, port: int, **overrides: Any) -> Path:
    """An aggregator config on snapshot P, model P+1, update P+2, state in ``directory``."""
    chunk = overrides.get("chunk_parameters", 262144)
    secure = overrides.get("secure", False)
    model = overrides.get("model", "")
    text = f"""
model:
  initial: "{model}"
endpoints:
  snapshot: tcp://127.0.0.1:{port}
  model: tcp://127.0.0.1:{port + 1}
  update: tcp://127.0.0.1:{port + 2}
security:
  insecure: {"false" if secure else "true"}
  secret_key_file: {directory}/keys/aggregator.secret
  authorized_keys: {directory}/keys/authorized_keys
algorithm: {overrides.get("algorithm", "fedasync")}
fedbuff:
  buffer_size: {overrides.get("buffer_size", 10)}
  max_wait_s: {overrides.get("max_wait_s", 30)}
fedasync:
  alpha: 0.6
  max_staleness: 1000
training:
  learning_rate: {overrides.get("learning_rate", 0.1)}
  local_epochs: 1
  batch_size: 16
  extra:
    sdk_test: true
publish:
  interval_s: 0.01
  heartbeat_s: 1
  chunk_parameters: {chunk}
limits:
  receipt_timeout_s: {overrides.get("receipt_timeout_s", 1)}
checkpoint:
  directory: {directory}/state
  interval_s: {overrides.get("checkpoint_interval_s", 0.05)}
ledger:
  path: {directory}/ledger.sqlite
evaluation:
  enabled: {"true" if overrides.get("evaluate") else "false"}
  every_versions: {overrides.get("evaluate_every", 50)}
  interval_s: 1
progress:
  interval_s: {overrides.get("progress_s", 1)}
"""
    if "codec" in overrides:  # the update codec the aggregator asks clients for (PROTOCOL 3.4.1)
        text += f"""compression:
  codec: {overrides["codec"]}
  int8_block: {overrides.get("int8_block", 4096)}
  topk_fraction: {overrides.get("topk_fraction", 0.01)}
"""
    if "privacy_mode" in overrides:  # central (fedbuff) or local DP (PROTOCOL 4.8)
        text += f"""privacy:
  mode: {overrides["privacy_mode"]}
  clip: {overrides.get("privacy_clip", 1.0)}
  noise_multiplier: {overrides.get("privacy_noise_multiplier", 1.0)}
"""
    path = directory / "aggregator.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def stop_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every `apiary.Client` a test makes is stopped, and its threads joined, when the test
    ends, pass or fail: a failed test must not leave clients running (their sockets share the
    process's zmq context and would starve the tests after it)."""
    import apiary
    made: list[apiary.Client] = []
    original = apiary.Client.__init__

    def recording(self: apiary.Client, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)  # (one whose __init__ raised has nothing to stop)

    monkeypatch.setattr(apiary.Client, "__init__", recording)
    before = set(threading.enumerate())
    yield
    for c in made:
        c.stop()
    deadline = time.monotonic() + 15
    for t in set(threading.enumerate()) - before:
        if t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))
    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads still running after the test: {left}"


def start_shard_map(tmp_path: Path, count: int = 3, **overrides: Any) -> tuple[list[Aggregator], Callable[[int, int], str]]:
    """`count` aggregator processes serving one model as a shard map, each with the config
    `write_config` makes with `overrides`. Returns them (the caller stops or kills them) and
    `ep(i, k)`: shard i's endpoint k (0 snapshot, 1 model, 2 update). Started ones are killed
    when a later one fails to start."""
    bases = [consecutive_ports(3) for _ in range(count)]

    def ep(i: int, k: int) -> str:
        return f"tcp://127.0.0.1:{bases[i] + k}"

    shards: list[Aggregator] = []
    try:
        for i in range(count):
            d = tmp_path / f"shard-{i}"
            d.mkdir()
            cfg = write_config(d, bases[i], **overrides)
            env = dict(os.environ, LOG_LEVEL="info", SHARDS_INDEX=str(i),
                       SHARDS_SNAPSHOT=",".join(ep(j, 0) for j in range(count)), SHARDS_MODEL=",".join(ep(j, 1) for j in range(count)),
                       SHARDS_UPDATE=",".join(ep(j, 2) for j in range(count)))
            shards.append(Aggregator(d, bases[i], ["--config", str(cfg)], env).start())
    except BaseException:
        for agg in shards:
            agg.kill()
        raise
    return shards, ep


@pytest.fixture
def make_aggregator(tmp_path: Path) -> Iterator[Callable[..., Aggregator]]:
    made: list[Aggregator] = []

    def make(**overrides: Any) -> Aggregator:
        port = consecutive_ports(3)
        cfg = write_config(tmp_path, port, **overrides)
        env = dict(os.environ, LOG_LEVEL="info")
        agg = Aggregator(tmp_path, port, ["--config", str(cfg)], env)
        made.append(agg)
        return agg.start()

    yield make
    for agg in made:
        agg.kill()
