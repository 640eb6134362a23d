"""The SDK against a real `apiary aggregator` process: join, train, receipts, broadcasts,
restarts, CURVE, evaluators, sequence numbers across client restarts."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import apiary
from apiary import keys

from conftest import Aggregator


class StepTrainer:
    """Moves every tensor halfway to 1.0: works for any layout; counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.configs: list[dict[str, Any]] = []

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        self.runs += 1
        self.configs.append(config)
        return apiary.TrainResult({k: v + 0.5 * (1 - v) for k, v in model.items()}, num_examples=10,
                                  metrics={"loss": 1.0 / self.runs})


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def apiary_log() -> Collect:
    h = Collect()
    logger = logging.getLogger("apiary")
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    yield h
    logger.removeHandler(h)


def in_thread(client: apiary.Client, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def body() -> None:
        try:
            out.append(client.run(handle_signals=False, **kw))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            out.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


def eventually(what: str, cond: Callable[[], bool], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_clients_train_and_their_updates_are_merged(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    trainers = [StepTrainer() for _ in range(3)]
    stats = [apiary.Client(t, client_id=f"py-{k}", aggregator=agg.snapshot, insecure=True) for k, t in enumerate(trainers)]
    threads = [in_thread(c, max_rounds=5) for c in stats]
    for t, _ in threads:
        t.join(60)
    for (t, out), c in zip(threads, stats):
        assert out and isinstance(out[0], apiary.Stats), out
        s = out[0]
        assert s.rounds == 5 and s.merged == 5 and s.rejected == 0 and s.pending == 0, s
    # The operator's training plan, with its own keys, reached the trainer.
    assert trainers[0].configs[0]["learning_rate"] == 0.1 and trainers[0].configs[0]["extra"] == {"sdk_test": True}
    assert agg.stop() == 0
    assert "merged=15" in agg.log or "version=15" in agg.log


def test_fedbuff_takes_deltas_and_receipts_them_at_the_flush(make_aggregator: Callable[..., Aggregator]) -> None:
    # Three clients, K = 3: each flush holds a delta from each (or fewer after max_wait).
    agg = make_aggregator(algorithm="fedbuff", buffer_size=3, max_wait_s=2)
    trainers = [StepTrainer() for _ in range(3)]
    clients = [apiary.Client(t, client_id=f"buf-{k}", aggregator=agg.snapshot, insecure=True) for k, t in enumerate(trainers)]
    threads = [in_thread(c, max_rounds=4) for c in clients]
    for t, _ in threads:
        t.join(60)
    for t, out in threads:
        assert out and isinstance(out[0], apiary.Stats), out
        s = out[0]
        assert s.merged == 4 and s.rejected == 0 and s.pending == 0, s
    # Every delta moved the model toward 1: the model the clients hold last is above 0 everywhere.
    eventually("the last flush to be broadcast", lambda: clients[0]._model is not None and clients[0].stats.model_version >= 4)
    model = clients[0]._model
    assert model is not None and np.all(model.values > 0)
    assert agg.stop() == 0
    assert "wrong_update_kind" not in agg.log


def test_chunked_broadcasts_are_followed(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator(chunk_parameters=100)   # 650 parameters: 7 chunks per version
    trainer = StepTrainer()
    follower = apiary.Client(trainer, client_id="follower", aggregator=agg.snapshot, insecure=True)
    worker = apiary.Client(StepTrainer(), client_id="worker", aggregator=agg.snapshot, insecure=True)
    tf, _ = in_thread(follower, max_rounds=1)
    tf.join(30)
    tw, out = in_thread(worker, max_rounds=8)
    tw.join(60)
    assert out and out[0].merged == 8
    # A third client joins late: the snapshot gives it the current model at once.
    late = StepTrainer()
    c = apiary.Client(late, client_id="late", aggregator=agg.snapshot, insecure=True)
    t, out = in_thread(c, max_rounds=1)
    t.join(30)
    assert out and out[0].merged == 1 and out[0].model_version >= 9


def test_broadcasts_reach_a_waiting_client(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator(chunk_parameters=100)
    evaluations: list[int] = []

    class Eval:
        dataset = "a test set"

        def evaluate(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.EvaluateResult:
            evaluations.append(1)
            return apiary.EvaluateResult({"accuracy": float(model["b"].mean())}, num_examples=5)

    ev = apiary.Client(evaluator=Eval(), client_id="eval", aggregator=agg.snapshot, insecure=True)
    t, _ = in_thread(ev)
    eventually("the evaluator to join", lambda: ev.stats.model_version == 0 and ev.stats.snapshots >= 1)
    worker = apiary.Client(StepTrainer(), client_id="worker", aggregator=agg.snapshot, insecure=True)
    tw, out = in_thread(worker, max_rounds=5)
    tw.join(60)
    eventually("chunked broadcasts of newer versions", lambda: ev.stats.broadcasts >= 1 and ev.stats.model_version >= 5)
    eventually("reports recorded", lambda: ev.stats.reports_recorded >= 2)
    ev.stop()
    t.join(10)
    assert len(evaluations) >= 2
    # An evaluator counts reports, not training rounds, and its summary line says so.
    s = ev.stats
    assert s.role == "evaluator" and s.rounds == 0 and s.updates_sent == 0, s
    assert s.reports == len(evaluations) and s.reports_sent >= 2 and s.reports_recorded >= 2, s
    assert str(s).startswith(f"reports={s.reports} reports_sent=") and "rounds=" not in str(s) and "merged=" not in str(s)
    assert str(worker.stats).startswith("rounds=5 updates_sent=5 merged=5 ")


class StopAt(StepTrainer):
    """Stops its client from inside its ``at``-th training run: that update, and those before
    it still without receipts, are in flight when the client stops."""

    def __init__(self, at: int, before: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.at, self.before = at, before
        self.client: apiary.Client | None = None

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        result = super().train(model, config)
        if self.runs == self.at and self.client is not None:
            self.before()
            self.client.stop()
        return result


def test_stop_waits_for_the_receipts_of_updates_in_flight(make_aggregator: Callable[..., Aggregator],
                                                           apiary_log: Collect) -> None:
    # Checkpoints every 0.5 s: a merged receipt comes only once a checkpoint holds the merge,
    # so the updates of the last half second are still without receipts when stop() is called.
    agg = make_aggregator(checkpoint_interval_s=0.5)
    trainer = StopAt(6)
    c = apiary.Client(trainer, client_id="stopper", aggregator=agg.snapshot, insecure=True, new_model_wait=0.01,
                      stop_wait=20)
    trainer.client = c
    started = time.monotonic()
    s = c.run(handle_signals=False)
    # Trained no more after stop(), and every update made was receipted before run() returned.
    assert trainer.runs == 6 and s.rounds == 6 and s.updates_sent == 6, s
    assert s.merged == 6 and s.pending == 0, s
    assert time.monotonic() - started < 15
    text = "\n".join(apiary_log.lines)
    assert "in flight were all receipted" in text and "not confirmed" not in text, text
    assert agg.stop() == 0


def test_stop_gives_up_after_stop_wait_and_says_how_many_stayed_unconfirmed(make_aggregator: Callable[..., Aggregator],
                                                                            apiary_log: Collect) -> None:
    agg = make_aggregator()

    def freeze() -> None:  # the connection stays, nothing answers
        assert agg.process is not None
        agg.process.send_signal(signal.SIGSTOP)

    # The aggregator freezes before the third update is sent: that one gets no receipt.
    trainer = StopAt(3, before=freeze)
    c = apiary.Client(trainer, client_id="orphan", aggregator=agg.snapshot, insecure=True, new_model_wait=0.01,
                      stop_wait=0.5, max_pending=1)
    trainer.client = c
    s = c.run(handle_signals=False)
    stopped = time.monotonic()
    assert s.rounds == 3 and s.merged == 2 and s.pending == 1, s
    lines = [l for l in apiary_log.lines if "not confirmed" in l]
    assert lines and lines[0].startswith("WARNING 1 update sent but not confirmed"), apiary_log.lines
    assert "may have merged them" in lines[0]
    assert time.monotonic() - stopped < 5
    with pytest.raises(apiary.ClientConfigError, match="stop_wait"):
        apiary.Client(StepTrainer(), client_id="x", aggregator=agg.snapshot, insecure=True, stop_wait=-1)


def test_a_client_starts_whatever_inproc_monitor_addresses_are_taken() -> None:
    # pyzmq's default monitor address is inproc://monitor.s-<fd>: a client made right after
    # another one in the same process could find it still bound ("Address already in use").
    # Here every such address is taken; the client must still start its sockets.
    import resource
    import zmq

    from conftest import consecutive_ports

    limit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 65536)
    blocker = zmq.Context.instance().socket(zmq.PAIR)
    try:
        for fd in range(limit):
            blocker.bind(f"inproc://monitor.s-{fd}")
        c = apiary.Client(StepTrainer(), client_id="after-another", aggregator=f"tcp://127.0.0.1:{consecutive_ports(3)}",
                          insecure=True)
        t, out = in_thread(c)
        eventually("the client's sockets", lambda: bool(c._links) or bool(out))
        time.sleep(0.2)
        c.stop()
        t.join(10)
        assert out and isinstance(out[0], apiary.Stats), out
    finally:
        blocker.close(linger=0)


def test_a_client_carries_on_through_kill_9_and_nothing_acknowledged_is_lost(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    c = apiary.Client(StepTrainer(), client_id="survivor", aggregator=agg.snapshot, insecure=True, new_model_wait=0.1)
    t, out = in_thread(c)
    eventually("merges before the crash", lambda: c.stats.merged >= 5)
    agg.kill()
    acknowledged = c.stats.merged
    agg.start()  # same state directory: resumes the checkpoint, same run
    eventually("merges after the restart", lambda: c.stats.merged >= acknowledged + 5, within=60)
    c.stop()
    t.join(20)
    assert out and isinstance(out[0], apiary.Stats)
    assert agg.stop() == 0
    # Every merged receipt is in the resumed model: the aggregator's version is at least the count.
    assert "resum" in agg.log.lower()


def test_sequence_numbers_increase_across_client_restarts(tmp_path: Path, make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    state = tmp_path / "client-state"
    first = apiary.Client(StepTrainer(), client_id="restarter", aggregator=agg.snapshot, insecure=True, state_dir=str(state))
    first.run(max_rounds=3, handle_signals=False)
    last = int((state / "restarter.seq").read_text())
    # The clock steps back an hour: the next process still continues after the last seq.
    second = apiary.Client(StepTrainer(), client_id="restarter", aggregator=agg.snapshot, insecure=True, state_dir=str(state))
    second._seq = min(second._seq, last - 3_600_000_000)
    second._seq = second._first_seq() if second._seq < last else second._seq
    s = second.run(max_rounds=3, handle_signals=False)
    assert s.merged == 3 and s.duplicates == 0
    assert int((state / "restarter.seq").read_text()) > last


def _checkpoint_metadata(state: Path) -> dict[str, str]:
    """The ``__metadata__`` of the newest checkpoint in ``state`` (a safetensors header)."""
    import json
    newest = sorted(state.glob("checkpoint-*.safetensors"))[-1].read_bytes()
    n = int.from_bytes(newest[:8], "little")
    return json.loads(newest[8:8 + n])["__metadata__"]


def test_a_restored_state_dir_cannot_lock_the_client_out(tmp_path: Path, make_aggregator: Callable[..., Aggregator]) -> None:
    """Issue 15 item 2: seqs that go back (a restored device image) start a new client epoch,
    so the aggregator merges them instead of calling them older than the dedup window."""
    agg = make_aggregator()
    state = tmp_path / "client-state"
    state.mkdir()
    # The device ran with its clock ten years ahead: its seqs are far in the future.
    future = time.time_ns() // 1000 + 10 * 365 * 86_400 * 10**6
    (state / "device.seq").write_text(str(future))
    first = apiary.Client(StepTrainer(), client_id="device", aggregator=agg.snapshot, insecure=True, state_dir=str(state))
    s = first.run(max_rounds=3, handle_signals=False)
    assert s.merged == 3 and int((state / "device.seq").read_text()) > future
    # Its image is restored from before (the seq file goes back), the clock is right again.
    (state / "device.seq").write_text("1")
    second = apiary.Client(StepTrainer(), client_id="device", aggregator=agg.snapshot, insecure=True, state_dir=str(state))
    assert second._seq < future - 10**12 and second.epoch not in (0, first.epoch)
    s = second.run(max_rounds=3, handle_signals=False)
    assert s.merged == 3 and s.rejected == 0 and s.duplicates == 0, s.last_reject_reason
    # Both processes' epochs went over the wire: the aggregator keeps a window for each.
    meta = _checkpoint_metadata(tmp_path / "state")
    import json
    epochs = {e["epoch"]: e["highest"] for e in json.loads(meta["dedup_epochs"])["device"]}
    assert epochs.keys() == {first.epoch, second.epoch}
    assert epochs[first.epoch] > future > epochs[second.epoch]
    assert agg.stop() == 0


class SkippingTrainer(StepTrainer):
    """Round 2 makes the client skip 1000 seqs (a client bug); round 3 waits for the refusal."""

    def __init__(self) -> None:
        super().__init__()
        self.client: apiary.Client | None = None

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
        assert self.client is not None
        if self.runs == 1:
            self.client._seq += 1000
        elif self.runs == 2:
            deadline = time.monotonic() + 20
            while self.client.stats.rejected == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        return super().train(model, config)


def test_a_seq_out_of_range_refusal_starts_a_new_epoch(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()
    trainer = SkippingTrainer()
    c = apiary.Client(trainer, client_id="skipper", aggregator=agg.snapshot, insecure=True, new_model_wait=0.1)
    trainer.client = c
    first_epoch = c.epoch
    s = c.run(max_rounds=3, handle_signals=False)
    # Round 2's seq was 1000 past round 1's (more than the window of 256): refused, not recorded;
    # round 3 went out in a new epoch and merged.
    assert (s.merged, s.rejected, s.last_reject_reason) == (2, 1, "seq_out_of_range")
    assert c.epoch not in (0, first_epoch)
    assert agg.stop() == 0


def _keys(agg_dir: Path, *names: str, authorize: tuple[str, ...] = ()) -> Path:
    d = agg_dir / "keys"
    for n in names:
        keys.generate(n, str(d))
    with open(d / "authorized_keys", "w") as f:
        for n in authorize:
            f.write(f"{keys.read_public(str(d / (n + '.public')))} {n}\n")
    return d


def test_curve_allowed_unknown_and_wrong_server_key(tmp_path: Path, make_aggregator: Callable[..., Aggregator],
                                                     apiary_log: Collect) -> None:
    d = _keys(tmp_path, "aggregator", "alice", "mallory", "impostor", authorize=("alice",))
    agg = make_aggregator(secure=True)
    alice = apiary.Client(StepTrainer(), client_id="alice", aggregator=agg.snapshot, secret_key_file=str(d / "alice.secret"),
                          server_public_key_file=str(d / "aggregator.public"))
    mallory = apiary.Client(StepTrainer(), client_id="mallory", aggregator=agg.snapshot, secret_key_file=str(d / "mallory.secret"),
                            server_public_key_file=str(d / "aggregator.public"))
    wrong = apiary.Client(StepTrainer(), client_id="alice", aggregator=agg.snapshot, secret_key_file=str(d / "alice.secret"),
                          server_public_key_file=str(d / "impostor.public"))
    runs = [in_thread(c) for c in (mallory, wrong)]
    s = alice.run(max_rounds=3, handle_signals=False)
    assert s.merged == 3
    eventually("both refused clients to say why", lambda: mallory.stats.handshake_failures > 0 and wrong.stats.handshake_failures > 0)
    eventually("their log lines", lambda: sum("cannot get in" in l for l in apiary_log.lines) >= 2)
    for c in (mallory, wrong):
        c.stop()
    for t, _ in runs:
        t.join(10)
    assert mallory.stats.last_handshake_failure == "unauthorized_key" and mallory.stats.merged == 0
    assert wrong.stats.last_handshake_failure in ("no_detail", "cryptographic") and wrong.stats.merged == 0
    text = "\n".join(apiary_log.lines)
    assert "authorized keys" in text and "server_public_key_file" in text
    assert agg.stop() == 0
    assert "unknown CURVE key" in agg.log


def test_missing_key_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(apiary.ClientConfigError, match="apiary keys generate --name edge-9"):
        apiary.Client(StepTrainer(), client_id="edge-9", aggregator="tcp://127.0.0.1:5556")
    with pytest.raises(apiary.ClientConfigError, match="tcp://HOST:PORT"):
        apiary.Client(StepTrainer(), client_id="edge-9", aggregator="127.0.0.1:5556", insecure=True)


def test_bad_trainer_output_stops_the_client_before_anything_is_sent(make_aggregator: Callable[..., Aggregator]) -> None:
    agg = make_aggregator()

    class Wrong:
        def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> apiary.TrainResult:
            return apiary.TrainResult({"W": model["W"].T, "b": model["b"]}, num_examples=1)

    c = apiary.Client(Wrong(), client_id="wrong", aggregator=agg.snapshot, insecure=True)
    with pytest.raises(apiary.TrainerOutputError, match=r"W has shape \[10, 64\], the model \[64, 10\]"):
        c.run(max_rounds=1, handle_signals=False)
    assert c.stats.updates_sent == 0


def test_a_client_follows_a_new_run_after_the_aggregator_loses_its_state(make_aggregator: Callable[..., Aggregator]) -> None:
    import shutil

    agg = make_aggregator()
    c = apiary.Client(StepTrainer(), client_id="follower-of-runs", aggregator=agg.snapshot, insecure=True, new_model_wait=0.1)
    t, out = in_thread(c)
    eventually("merges in the first run", lambda: c.stats.merged >= 3)
    first_run = c._model.bases[0][0] if c._model else None
    agg.kill()
    shutil.rmtree(agg.directory / "state")      # the state is gone: the restart is a new run
    merged = c.stats.merged
    agg.start()
    eventually("merges in the new run", lambda: c.stats.merged >= merged + 3, within=60)
    assert c._model is not None and c._model.bases[0][0] != first_run
    c.stop()
    t.join(20)
    assert out and isinstance(out[0], apiary.Stats)
