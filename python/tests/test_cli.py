"""`apiary-client` as a user runs it: a trainer given as module:Class, a separate process,
stopped gracefully by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from conftest import Aggregator

TRAINER = '''
import apiary

class Half:
    def train(self, model, config):
        return apiary.TrainResult({k: v * 0.5 for k, v in model.items()}, num_examples=3, metrics={"loss": 0.1})
'''


def test_console_command_trains_and_stops_on_sigterm(tmp_path: Path, make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    (tmp_path / "my_trainer.py").write_text(TRAINER)
    # The console script pip installed, run where the user's module is (no PYTHONPATH).
    script = os.path.join(os.path.dirname(sys.executable), "apiary-client")
    cmd = [script, "--trainer", "my_trainer:Half", "--id", "cli-1", "--aggregator", agg.snapshot,
           "--insecure", "--state-dir", str(tmp_path / "state")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seq_file = tmp_path / "state" / "cli-1.seq"
        while time.monotonic() < deadline and not (seq_file.exists() and "merged=" in agg.log and p.poll() is None):
            time.sleep(0.1)
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert "joined" in out and "stopped" in out and "merged=" in out, out
    assert "INSECURE" in out
    assert agg.stop() == 0


def test_console_command_without_keys_says_how_to_make_them(tmp_path: Path) -> None:
    (tmp_path / "my_trainer.py").write_text(TRAINER)
    p = subprocess.run([sys.executable, "-m", "apiary.cli", "--trainer", "my_trainer:Half", "--id", "edge-7"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "apiary keys generate --name edge-7" in p.stderr
