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
           "--insecure", "--state-dir", str(tmp_path / "state"), "--stop-wait", "10"]
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
    # It waited for the receipts of what it had sent: the stop line has nothing pending.
    stopped = [l for l in out.splitlines() if "stopped: " in l]
    assert stopped and " pending=0 " in stopped[0] and "SIGTERM: stopping" in out, out
    assert "not confirmed" not in out
    assert agg.stop() == 0


def test_console_command_without_keys_says_how_to_make_them(tmp_path: Path) -> None:
    (tmp_path / "my_trainer.py").write_text(TRAINER)
    p = subprocess.run([sys.executable, "-m", "apiary.cli", "--trainer", "my_trainer:Half", "--id", "edge-7"], cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "apiary keys generate --name edge-7" in p.stderr


BAD_TRAINER = '''
import apiary

class Transposed:
    def train(self, model, config):
        return apiary.TrainResult({k: v.T for k, v in model.items()}, num_examples=3)

class Buggy:
    def train(self, model, config):
        return 1 / 0
'''


def _installed_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = os.path.join(os.path.dirname(sys.executable), "apiary-client")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([script, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_console_command_says_bad_trainer_output_in_one_line_and_exits_1(tmp_path: Path,
                                                                          make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    (tmp_path / "bad_trainer.py").write_text(BAD_TRAINER)
    base = ["--id", "cli-bad", "--aggregator", agg.snapshot, "--insecure"]
    p = _installed_script(tmp_path, "--trainer", "bad_trainer:Transposed", *base)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("apiary-client: ")]
    assert len(errors) == 1, p.stderr
    assert "apiary-client: error: the trainer's result does not fit the model: W has shape [10, 64], the model [64, 10]" in errors[0]
    assert "--debug" in errors[0]
    # A bug in the trainer: its type, message and where it was raised, still one line.
    p = _installed_script(tmp_path, "--trainer", "bad_trainer:Buggy", *base)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "apiary-client: error: ZeroDivisionError: division by zero at " in p.stderr and "bad_trainer.py:10 in train" in p.stderr
    # --debug: the traceback too, then the same line.
    p = _installed_script(tmp_path, "--trainer", "bad_trainer:Transposed", *base, "--debug")
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr and "TrainerOutputError" in p.stderr, p.stderr
    assert p.stderr.rstrip().splitlines()[-1].startswith("apiary-client: error: the trainer's result does not fit the model")
    assert agg.stop() == 0


def test_console_command_help_states_the_default_aggregator(tmp_path: Path) -> None:
    p = _installed_script(tmp_path, "--help")
    assert p.returncode == 0
    assert "(default: tcp://127.0.0.1:5556)" in " ".join(p.stdout.split()), p.stdout
    assert "--stop-wait" in p.stdout and "--debug" in p.stdout
