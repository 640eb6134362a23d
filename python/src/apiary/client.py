"""The client runtime: what docs/PROTOCOL.md section 4.2 asks of a client, for any model.

A `Client` joins through the snapshot endpoint (a late joiner trains at once), follows newer
models from the broadcast (chunks assembled, gaps fetched by snapshot), trains through the
user's trainer, pushes each result tagged with its base version and a sequence number, resends
until receipted, and carries on by itself after an aggregator restart. Parameter shards (4.4)
are followed transparently. Sockets live on one I/O thread; training runs in the thread that
calls `run()`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

import numpy as np
import zmq
import zmq.utils.monitor

from . import keys, wire

log = logging.getLogger("apiary")

# The snapshot config's `algorithm` values this client follows (docs/PROTOCOL.md 3.2, 4.7).
ALGORITHMS = ("fedasync", "fedavg", "fedbuff")
# The snapshot config's `codec` values (3.4.1): float32, float16, bfloat16, int8, topk.
CODECS = tuple(wire.CODECS)

# MARK: the user's side


@dataclass
class TrainResult:
    """What one local training run produced.

    ``parameters`` maps every tensor name of the model to its new values (same shape; any float
    dtype, sent as float32), or to the change from the model it started from when ``delta`` is
    true. ``num_examples`` is how many examples it trained on; ``metrics`` are named numbers sent
    with the update (when the aggregator takes them).

    The SDK copies the parameters into a buffer of its own before sending (a trainer may change
    its arrays in place next round, and a resend must send what was trained), except a tensor
    returned unchanged (the model's own read-only array, e.g. a frozen layer): that one is sent
    from the model's memory.
    """

    parameters: Mapping[str, np.ndarray]
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    delta: bool = False


@dataclass
class EvaluateResult:
    """What one evaluation measured: named numbers and the held-out examples behind them."""

    metrics: Mapping[str, float]
    num_examples: int


class Trainer(Protocol):
    """A learner: ``train`` gets the newest global model by tensor name and the aggregator's
    training plan (``learning_rate``, ``local_epochs``, ``batch_size``, ``proximal_mu``,
    ``extra``: the operator's own settings)."""

    def train(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> TrainResult: ...


class Evaluator(Protocol):
    """An evaluator: a client that does not train, evaluates each newer model on held-out data
    of its own (``dataset`` names it, 1 to 128 bytes) and reports the result."""

    dataset: str

    def evaluate(self, model: dict[str, np.ndarray], config: dict[str, Any]) -> EvaluateResult: ...


class TrainerOutputError(ValueError):
    """A trainer returned tensors that do not fit the model (missing, extra, wrong shape or
    dtype, not finite); nothing was sent."""


class ClientConfigError(ValueError):
    """The client cannot start as configured (id, endpoints, keys)."""


@dataclass
class Stats:
    """What a client did, as `Client.stats` and the return value of `run()` / `evaluate()`.

    A trainer counts ``rounds`` (training runs) and ``updates_sent`` (updates pushed, each once;
    ``resends`` counts the repeats); an evaluator counts ``reports`` (evaluations made) and
    ``reports_sent`` instead. Receipts: ``merged``, ``rejected`` (``last_reject_reason``),
    ``duplicates`` and, for reports, ``reports_recorded``. ``pending`` is how many are still
    without a receipt (after `run()` returns: those that stayed unconfirmed). ``model_version``
    is the newest model held, ``snapshots`` and ``broadcasts`` how it came. ``str(stats)`` is
    the one-line summary the console command logs when it stops.
    """

    role: str = "trainer"         # "trainer" or "evaluator"
    rounds: int = 0
    updates_sent: int = 0
    reports: int = 0
    reports_sent: int = 0
    resends: int = 0
    merged: int = 0
    rejected: int = 0
    duplicates: int = 0
    reports_recorded: int = 0
    snapshots: int = 0
    broadcasts: int = 0
    model_version: int = 0
    pending: int = 0
    shards: int = 0
    handshake_failures: int = 0
    last_reject_reason: str | None = None
    last_handshake_failure: str | None = None
    codec: str = "float32"        # the codec of the last update made (3.4.1)
    payload_bytes: int = 0        # payload bytes of the updates made, every shard's slice once (resends not counted)
    float32_bytes: int = 0        # what the same payloads take as float32 (4 bytes per value)

    def __str__(self) -> str:
        if self.role == "evaluator":
            keys = ["reports", "reports_sent", "reports_recorded", "rejected", "duplicates", "resends", "pending"]
        else:
            keys = ["rounds", "updates_sent", "merged", "rejected", "duplicates", "resends", "pending"]
        keys += ["model_version", "snapshots", "broadcasts", "shards", "handshake_failures"]
        parts = [f"{k}={getattr(self, k)}" for k in keys]
        if self.rejected and self.last_reject_reason:
            parts.append(f"last_reject_reason={self.last_reject_reason}")
        if self.handshake_failures and self.last_handshake_failure:
            parts.append(f"last_handshake_failure={self.last_handshake_failure}")
        if self.role != "evaluator":
            parts.append(f"codec={self.codec} payload_bytes={self.payload_bytes} float32_bytes={self.float32_bytes}")
        return " ".join(parts)


def endpoints_from(aggregator: str) -> tuple[str, str, str]:
    """``tcp://HOST:PORT`` (the snapshot endpoint) -> (model, snapshot, update): model and
    update are on PORT+1 and PORT+2, as the aggregator's defaults 5556, 5557, 5558."""
    if not aggregator.startswith("tcp://") or ":" not in aggregator[6:]:
        raise ClientConfigError(f"aggregator must be tcp://HOST:PORT (the snapshot port), got {aggregator!r}")
    host, _, port_text = aggregator.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ClientConfigError(f"aggregator port {port_text!r} is not a number") from None
    if not 1 <= port <= 65533:
        raise ClientConfigError(f"aggregator port {port} out of range")
    return f"{host}:{port + 1}", aggregator, f"{host}:{port + 2}"


# MARK: internals


@dataclass
class _Model:
    layout: wire.Layout
    layout_frame: bytes
    values: np.ndarray            # the whole flat vector
    bases: list[tuple[int, int]]  # (run id, version) per shard
    config: dict[str, Any]
    ranges: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per shard ([] : the whole vector)

    @property
    def version(self) -> int:
        return sum(v for _, v in self.bases)


@dataclass
class _Outgoing:
    seq: int
    kind: str                     # "update" or "report"
    bases: list[tuple[int, int]]
    segments: list[np.ndarray] | None  # 1-D float32 pieces of the flat vector, in order (None: a report)
    samples: int
    metrics: dict[str, float]
    dataset: str = ""
    slots: list[dict[str, Any]] = field(default_factory=list)
    buffer: np.ndarray | None = None    # the SDK's own buffer the segments are views of, for reuse
    delta: bool = False                 # the segments are trained - base (header flag bit 1)
    privatized: bool = False            # clipped and noised to the config's local_dp (header flag bit 3)
    codec: int = wire.FLOAT32           # header byte 40 (3.4.1)
    epoch: int = 0                      # the client epoch it was made in (3.4): a resend repeats it
    # With a codec other than float32: the payload frames of each shard's slice, encoded once
    # (a resend sends these same bytes), for the shard ranges in `ranges`.
    encoded: list[list[memoryview]] | None = None
    ranges: list[tuple[int, int]] | None = None


@dataclass
class CodecSettings:
    """What the snapshot config asks of an update's payload (docs/PROTOCOL.md 3.2, 3.4.1)."""

    codec: int = wire.FLOAT32
    codec_block: int = wire.DEFAULT_CODEC_BLOCK
    topk_fraction: float = wire.DEFAULT_TOPK_FRACTION

    @property
    def name(self) -> str:
        return wire.CODEC_NAMES[self.codec]

    @property
    def lossy(self) -> bool:
        return self.codec != wire.FLOAT32


def codec_settings(config: Mapping[str, Any], deltas: bool) -> CodecSettings:
    """The config's ``codec`` (float32 when absent), ``codec_block`` and ``topk_fraction``;
    `ClientConfigError` for a codec this client does not know (named, like an unknown
    algorithm), for bad settings, and for top-k when the algorithm takes full models (top-k
    sends a few values of a delta: only ``fedbuff``)."""
    name = config.get("codec")
    name = "float32" if name is None else name
    if not isinstance(name, str) or name not in wire.CODECS:
        raise ClientConfigError(f"the aggregator asks for update codec {name!r}, which this client does not know "
                                f"(it knows {', '.join(CODECS)}): upgrade apiary-client")
    block = config.get("codec_block", wire.DEFAULT_CODEC_BLOCK)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ClientConfigError(f"the aggregator's codec_block {block!r} is not a whole number of values of at least 1")
    fraction = config.get("topk_fraction", wire.DEFAULT_TOPK_FRACTION)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ClientConfigError(f"the aggregator's topk_fraction {fraction!r} is not a number in (0, 1]")
    codec = wire.CODECS[name]
    if codec == wire.TOPK and not deltas:
        algorithm = config.get("algorithm", "fedasync")
        raise ClientConfigError(f"the aggregator asks for codec 'topk' with algorithm {algorithm!r}: top-k sends a few values of a "
                                "delta and is allowed only with algorithm fedbuff (docs/PROTOCOL.md 3.4.1); the aggregator's "
                                "compression.codec must be another codec, or its algorithm fedbuff")
    return CodecSettings(codec, int(block), float(fraction))


@dataclass(frozen=True)
class LocalDP:
    """The local differential privacy an aggregator requires (the config's ``local_dp``,
    docs/PROTOCOL.md 4.8): clip each delta to L2 norm ``clip_norm`` (C), add ``N(0, (z C)^2)``
    per value, z = ``noise_multiplier``."""

    clip_norm: float
    noise_multiplier: float


def local_dp_settings(config: Mapping[str, Any]) -> LocalDP | None:
    """The config's ``local_dp`` (None when absent); `ClientConfigError` for bad values."""
    v = config.get("local_dp")
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ClientConfigError(f"the aggregator's local_dp {v!r} is not an object")
    values: list[float] = []
    for key in ("clip_norm", "noise_multiplier"):
        x = v.get(key)
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            raise ClientConfigError(f"the aggregator's local_dp.{key} {x!r} is not a positive number")
        values.append(float(x))
    return LocalDP(values[0], values[1])


def privatize(delta: np.ndarray, dp: LocalDP, rng: np.random.Generator) -> float:
    """Local DP in place on a 1-D float32 delta (``trained - base``): scaled by
    ``min(1, C / ||delta||)`` (the norm in float64), then ``N(0, (z C)^2)`` added to every value
    (in float64, rounded once to float32). Returns the norm before clipping; raises
    `TrainerOutputError` (and changes nothing) when a value is not finite."""
    d = delta.astype(np.float64)
    norm = float(np.sqrt(np.dot(d, d)))
    if not math.isfinite(norm):
        raise TrainerOutputError("the trainer's result is not finite: it cannot be privatized, nothing is sent")
    if norm > dp.clip_norm:
        d *= dp.clip_norm / norm
    d += rng.normal(0.0, dp.noise_multiplier * dp.clip_norm, d.size)
    delta[...] = d
    return norm


class ErrorFeedback:
    """The residuals of error feedback (docs/PROTOCOL.md 3.4.1): per shard slice, what a lossy
    codec left out of the deltas sent so far. Each delta ``d`` goes out as ``u = d + r``
    encoded, and ``r = u - decode(encode(u))`` stays for the next one.

    The residuals start at zero, and again on a new run id (per slice), a new layout or
    shard map, and a change of codec. They live in memory only: a new process starts at
    zero."""

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._slices: dict[int, tuple[int, np.ndarray]] = {}  # slice index -> (run id, residual)

    def reset(self) -> None:
        self._key = None
        self._slices.clear()

    def residual(self, index: int) -> np.ndarray | None:
        """The residual of slice ``index`` (None before its first lossy delta)."""
        kept = self._slices.get(index)
        return None if kept is None else kept[1]

    def encode(self, index: int, run_id: int, key: tuple[Any, ...], delta: np.ndarray, settings: CodecSettings,
               chunk_parameters: int, max_frame_bytes: int | None = None) -> wire.EncodedPayload:
        """Encodes slice ``index``'s delta plus its residual, keeps the new residual. ``key``
        names the layout and shard map (a different one resets every slice), ``run_id`` the
        run the slice was trained in; the codec is ``settings``' own."""
        key = (settings.codec, *key)
        if key != self._key:
            self.reset()
            self._key = key
        kept = self._slices.get(index)
        u = np.array(delta, dtype=np.float32, copy=True).reshape(-1)
        if kept is not None and kept[0] == run_id and kept[1].size == u.size:
            u += kept[1]
        encoded = wire.encode_payload(u, settings.codec, chunk_parameters=chunk_parameters, codec_block=settings.codec_block,
                                      topk_fraction=settings.topk_fraction, with_decoded=True, max_frame_bytes=max_frame_bytes)
        assert encoded.decoded is not None
        np.subtract(u, encoded.decoded, out=u)  # the frames are buffers of their own: u becomes the residual
        self._slices[index] = (run_id, u)
        return encoded


_MONITOR_IDS = itertools.count(1)


class _Link:
    """One aggregator (or shard): its three sockets and what the client knows of it."""

    def __init__(self, client: "Client", index: int, model: str, snapshot: str, update: str) -> None:
        self.index = index
        self.model_ep, self.snapshot_ep, self.update_ep = model, snapshot, update
        self.range: tuple[int, int] | None = None
        self.base: tuple[int, int] | None = None
        self.chunks: dict[int, bytes] = {}
        self.chunk_key: tuple[int, int] | None = None
        self.request_id = 0
        self.outstanding = False
        self.deadline = 0.0
        self.unanswered = 0
        self.last_silence_log = -1e9
        self.handshake_failures = 0
        self.last_handshake_log = -1e9
        ctx = client.context
        self.sub = ctx.socket(zmq.SUB)
        client._secure(self.sub)
        self.sub.setsockopt(zmq.RCVHWM, 4096)
        self.sub.setsockopt(zmq.RECONNECT_IVL_MAX, client.max_backoff_ms)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"model")
        self.sub.setsockopt(zmq.SUBSCRIBE, f"receipt/{client.client_id}/".encode())
        # An address of our own: pyzmq's default, inproc://monitor.s-<socket fd>, is taken again
        # by a later socket that gets the same fd while the closed one's endpoint is still bound
        # (the context releases it asynchronously): "Address already in use" when a client is
        # made right after another in one process.
        self.monitor = self.sub.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_SUCCEEDED, addr=f"inproc://apiary.monitor.{os.getpid()}.{next(_MONITOR_IDS)}")
        self.sub.connect(model)
        self.dealer = client._make_dealer(snapshot)
        self.push = ctx.socket(zmq.PUSH)
        client._secure(self.push)
        # Room for every update in flight (max_pending) and a few resends: a full queue makes
        # the sender wait 200 ms, so it must mean back-pressure, not our own window. The frames
        # are views of the pending vectors, so a deeper queue holds no extra memory.
        self.push.setsockopt(zmq.SNDHWM, client.max_pending + 4)
        self.push.setsockopt(zmq.IMMEDIATE, 1)
        self.push.setsockopt(zmq.RECONNECT_IVL_MAX, client.max_backoff_ms)
        self.push.connect(update)

    def close(self) -> None:
        for s in (self.monitor, self.sub, self.dealer, self.push):
            s.close(linger=0)


# MARK: the client


class Client:
    """An Apiary client for a `Trainer` (or, with ``evaluator=``, an evaluator).

    ``aggregator`` is the snapshot endpoint ``tcp://HOST:PORT`` (model and update on the next
    two ports), or give ``model_endpoint``/``snapshot_endpoint``/``update_endpoint``. CURVE is
    on unless ``insecure=True``: ``secret_key_file`` defaults to ``keys/<client_id>.secret``,
    ``server_public_key_file`` to ``keys/aggregator.public`` (what `apiary keys generate` writes).
    Every client process sends a new random *client epoch* with its updates (to an aggregator
    that lists the feature ``client_epoch``): seqs need only increase within it, so a restart, a
    restored ``state_dir`` or a clock stepped back never collides with an earlier process's seqs.
    ``state_dir`` (default None) keeps the last sequence number in ``<state_dir>/<client_id>.seq``,
    so that seqs also increase across restarts for older aggregators (without epochs); without
    it the first seq of a process is the Unix time in microseconds.

    On `stop()` (or SIGTERM/SIGINT) the client trains no more and waits up to ``stop_wait``
    seconds for the receipts of updates already made (default: the receipt timeout, at most 5
    s; 0: no wait), then logs how many stayed unconfirmed. A second signal stops it at once.
    """

    def __init__(self, trainer: Trainer | None = None, *, client_id: str, aggregator: str | None = None,
                 model_endpoint: str | None = None, snapshot_endpoint: str | None = None, update_endpoint: str | None = None,
                 secret_key_file: str | None = None, server_public_key_file: str | None = None, insecure: bool = False,
                 evaluator: Evaluator | None = None, state_dir: str | None = None, snapshot_timeout: float = 2.0,
                 new_model_wait: float = 2.0, max_pending: int = 8, max_backoff: float = 30.0,
                 receipt_timeout: float | None = None, stop_wait: float | None = None,
                 context: zmq.Context[Any] | None = None) -> None:
        if (trainer is None) == (evaluator is None):
            raise ClientConfigError("give a trainer or an evaluator (exactly one)")
        if not wire.valid_client_id(client_id):
            raise ClientConfigError(f"client id {client_id!r} is not 1 to 64 characters of A-Z a-z 0-9 . _ -")
        if evaluator is not None and not 1 <= len(evaluator.dataset.encode()) <= wire.MAX_DATASET_BYTES:
            raise ClientConfigError("the evaluator's dataset name must be 1 to 128 bytes")
        if aggregator is not None:
            model_endpoint, snapshot_endpoint, update_endpoint = endpoints_from(aggregator)
        if not (model_endpoint and snapshot_endpoint and update_endpoint):
            raise ClientConfigError("give aggregator='tcp://HOST:PORT' or all three endpoints")
        self.trainer, self.evaluator = trainer, evaluator
        self.client_id = client_id
        self.endpoints = (model_endpoint, snapshot_endpoint, update_endpoint)
        self.curve: tuple[keys.KeyPair, str] | None = None
        if not insecure:
            secret = secret_key_file or os.path.join("keys", f"{client_id}.secret")
            server = server_public_key_file or os.path.join("keys", "aggregator.public")
            if not os.path.exists(secret):
                raise ClientConfigError(f"no secret key file {secret}: make one with `apiary keys generate --name {client_id} --out keys` "
                                        "and have the operator authorize its .public file, pass secret_key_file=, or insecure=True")
            if not os.path.exists(server):
                raise ClientConfigError(f"no aggregator public key file {server}: copy the aggregator's .public file there "
                                        "or pass server_public_key_file=")
            self.curve = (keys.read_pair(secret), keys.read_public(server))
        self.snapshot_timeout, self.new_model_wait = snapshot_timeout, new_model_wait
        self.max_pending, self.max_backoff = max(1, max_pending), max_backoff
        self.max_backoff_ms = int(max_backoff * 1000)
        self.receipt_timeout = receipt_timeout
        if stop_wait is not None and not stop_wait >= 0:
            raise ClientConfigError(f"stop_wait must be a number of seconds of at least 0, got {stop_wait!r}")
        self.stop_wait = stop_wait
        self.state_dir = state_dir
        self.context: zmq.Context[Any] = context or zmq.Context.instance()
        self.stats = Stats(role="trainer" if trainer is not None else "evaluator")
        self._lock = threading.Condition()
        self._model: _Model | None = None
        self._outbox: list[_Outgoing] = []
        self._pending: dict[int, _Outgoing] = {}
        self._stop = threading.Event()      # train (or evaluate) no more
        self._hurry = threading.Event()     # and do not wait for receipts either
        self._io_stop = threading.Event()   # the I/O thread ends
        self._fatal: BaseException | None = None
        self._seq = self._first_seq()
        # The client epoch (3.4): new for every process, so that seqs need only increase within
        # it and a restored state_dir or a clock stepped back cannot lock this client out.
        self.epoch = wire.new_epoch()
        self._reject_log: dict[str, float] = {}
        # Buffers of answered updates, reused for the next ones (no 4-bytes-per-parameter
        # allocation and page faults per update).
        self._spare: list[np.ndarray] = []
        self._links: list[_Link] = []
        self._shard_map: list[wire.ShardEntry] | None = None
        self._layout: wire.Layout | None = None
        self._layout_frame = b""
        # The newest model vector (slices side by side when sharded) and snapshot config. A
        # new version replaces the vector, never writes into it: the worker's model views it.
        self._values = np.zeros(0, dtype=np.float32)
        self._config: dict[str, Any] = {}
        # Error feedback for lossy codecs under fedbuff (3.4.1): touched by the worker only.
        self._feedback = ErrorFeedback()
        # Local DP's noise (4.8): a generator seeded with 128 bits from the system's CSPRNG.
        self._dp_rng = np.random.Generator(np.random.PCG64(secrets.randbits(128)))

    # -- lifecycle

    def stop(self, wait_for_receipts: bool = True) -> None:
        """Asks `run()` to return: after the training run in progress, and after waiting up to
        ``stop_wait`` seconds for the receipts of the updates already made (not at all with
        ``wait_for_receipts=False``)."""
        if not wait_for_receipts:
            self._hurry.set()
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self._stop.is_set():  # a second signal: no more waiting
            self.stop(wait_for_receipts=False)
            return
        log.info("%s: stopping (waiting up to %.1f s for receipts of the %s in flight; again to stop at once)",
                 signal.Signals(signum).name, self._stop_wait_seconds(), "reports" if self.evaluator else "updates")
        self.stop()

    def _stop_wait_seconds(self) -> float:
        if self.stop_wait is not None:
            return self.stop_wait
        advice = float((self._model.config if self._model else {}).get("receipt_timeout_s", 10.0))
        return min(5.0, self.receipt_timeout or advice)

    def run(self, max_rounds: int | None = None, handle_signals: bool = True) -> Stats:
        """Trains (or evaluates) until `stop()`, SIGTERM/SIGINT (when called from the main
        thread and ``handle_signals``), or ``max_rounds`` runs (training runs, or reports of an
        evaluator) whose updates were all answered. Returns the client's `Stats`."""
        previous: dict[signal.Signals, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        # The worker rings this pipe when it queued an update: the I/O thread sends at once
        # instead of at its next poll timeout. (The I/O thread closes it when it ends.)
        self._bell_r, self._bell_w = os.pipe()
        os.set_blocking(self._bell_r, False)
        os.set_blocking(self._bell_w, False)
        io = threading.Thread(target=self._io_main, name=f"apiary-io-{self.client_id}", daemon=True)
        io.start()
        log.info("client starting", extra={"client": self.client_id, "snapshot": self.endpoints[1]})
        try:
            self._work_loop(max_rounds)
        finally:
            self._stop.set()
            try:
                self._wait_for_receipts()
            finally:
                self._io_stop.set()
                io.join(timeout=10)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _wait_for_receipts(self) -> None:
        """Stopping: the I/O thread still runs (sends what was made, reads receipts, resends);
        wait up to ``stop_wait`` seconds until every update has its receipt, then say how
        many did not."""
        with self._lock:
            waiting = len(self._pending) + len(self._outbox)
        if not waiting or self._fatal is not None:
            return
        limit = self._stop_wait_seconds()
        deadline = time.monotonic() + limit
        with self._lock:
            while (self._pending or self._outbox) and self._fatal is None and not self._hurry.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(timeout=min(0.05, left))
            left_over = list(self._pending.values()) + list(self._outbox)
            self.stats.pending = len(left_over)
        what = "report" if self.evaluator else "update"
        if not left_over:
            log.info("stopping: the %s in flight %s all receipted", _count(waiting, what), "was" if waiting == 1 else "were")
            return
        sent = sum(1 for u in left_over if any(slot.get("attempts") for slot in u.slots))
        if sent:
            log.warning("%s sent but not confirmed (no receipt within %.1f s of stopping): the aggregator may have "
                        "merged them (it receipts a merge once a checkpoint holds it; `apiary ledger` lists what it "
                        "received); they are not resent: a restarted client trains on the newest model",
                        _count(sent, what), limit)
        if len(left_over) > sent:
            log.warning("%s made but never sent (the aggregator did not take them within %.1f s): dropped",
                        _count(len(left_over) - sent, what), limit)

    # -- the worker (caller's thread)

    def _work_loop(self, max_rounds: int | None) -> None:
        last_version: int | None = None
        rounds = 0
        while not self._stop.is_set():
            if max_rounds is not None and rounds >= max_rounds:
                # Done training: wait until every update was answered.
                with self._lock:
                    while (self._pending or self._outbox) and not self._stop.is_set() and self._fatal is None:
                        self._lock.wait(timeout=0.05)
                return
            with self._lock:
                # Wait for a model (newer than the last one when evaluating or when we just pushed).
                deadline = time.monotonic() + (self.new_model_wait if last_version is not None else 1e9)
                while not self._stop.is_set() and self._fatal is None:
                    m = self._model
                    newer = m is not None and (last_version is None or m.version != last_version)
                    room = len(self._pending) + len(self._outbox) < self.max_pending
                    if m is not None and room and (newer or (self.trainer is not None and time.monotonic() >= deadline)):
                        break
                    self._lock.wait(timeout=0.05)
                if self._stop.is_set() or self._fatal is not None:
                    return
                assert self._model is not None
                model = self._model
            named = _by_name(model.layout, model.values)
            config = dict(model.config.get("training", {}))
            rounds += 1
            last_version = model.version
            if self.evaluator is not None:
                self._evaluate(model, named, config)
            else:
                self._train(model, named, config, rounds)

    def _train(self, model: _Model, named: dict[str, np.ndarray], config: dict[str, Any], round_: int) -> None:
        assert self.trainer is not None
        result = self.trainer.train(named, config)
        update = self._prepare(model, named, result)
        with self._lock:
            self.stats.rounds += 1
            update.seq = self._next_seq()
            update.epoch = self.epoch
            self._outbox.append(update)
        self._ring()

    def _prepare(self, model: _Model, named: dict[str, np.ndarray], result: TrainResult) -> _Outgoing:
        """The update a training result makes (seq still 0): checked, flattened, a delta under
        fedbuff, encoded in the config's codec (with error feedback for deltas)."""
        with self._lock:
            spare = self._spare.pop() if self._spare else None
        buffer: np.ndarray | None = None
        try:
            # FedBuff takes what training changed (header flag bit 1), the others the trained model.
            algorithm = model.config.get("algorithm", "fedasync")
            if algorithm not in ALGORITHMS:
                raise ClientConfigError(f"the aggregator merges with algorithm {algorithm!r}, which this client does not know "
                                        f"(it knows {', '.join(ALGORITHMS)}): upgrade apiary-client")
            deltas = algorithm == "fedbuff"
            settings = codec_settings(model.config, deltas)
            dp = local_dp_settings(model.config)
            segments, buffer = _pieces(model.layout, result.parameters, own=named,
                                       base=model.values if result.delta else None, out=spare,
                                       delta_from=model.values if deltas or dp else None)
            metrics = dict(result.metrics)
            if dp is not None:
                # Local DP (4.8): the delta is clipped and noised before it leaves; a full-model
                # update is the base plus the privatized delta. The metrics are measured on the
                # private data and not noised: not sent.
                d = np.concatenate(segments) if len(segments) != 1 else np.array(segments[0], dtype=np.float32, copy=True)
                privatize(d, dp, self._dp_rng)
                if not deltas:
                    d += model.values
                segments, buffer, metrics = [d], d, {}
            if metrics:
                wire.metrics_frame(metrics)  # raises a clear ValueError before anything is sent
            encoded: list[list[memoryview]] | None = None
            ranges = list(model.ranges) or [(0, model.layout.parameter_count)]
            count = sum(end - start for start, end in ranges)
            if settings.lossy:
                encoded = self._encode(model, segments, ranges, settings, deltas)
                nbytes = sum(len(f) for frames in encoded for f in frames)
                # The payload is in the encoded frames now (buffers of their own): ours is free at once.
                segments = []
                if buffer is not None and buffer is not spare:
                    with self._lock:
                        if len(self._spare) < 2:
                            self._spare.append(buffer)
                buffer = None  # (the spare, if it was used, goes back below)
            else:
                self._feedback.reset()  # float32 loses nothing: no residual
                nbytes = 4 * count
        finally:
            if spare is not None and buffer is not spare:  # not used (or an error, or encoded): back to the pool
                with self._lock:
                    self._spare.append(spare)
        with self._lock:
            self.stats.codec = settings.name
            self.stats.payload_bytes += nbytes
            self.stats.float32_bytes += 4 * count
        return _Outgoing(0, "update", list(model.bases), segments, max(0, int(result.num_examples)), metrics, buffer=buffer,
                         delta=deltas, codec=settings.codec, encoded=encoded, ranges=ranges, privatized=dp is not None)

    def _encode(self, model: _Model, segments: list[np.ndarray], ranges: list[tuple[int, int]], settings: CodecSettings,
                deltas: bool) -> list[list[memoryview]]:
        """Each shard slice of the flat vector, encoded once (3.4.1). Deltas go through error
        feedback (per slice); a full model is encoded as it is."""
        if not deltas:
            self._feedback.reset()  # a full-model update has no residual
        chunk = int(model.config.get("chunk_parameters", 262_144))
        limit = model.config.get("max_frame_bytes")
        max_frame = int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
        key = (model.layout, tuple(ranges))
        out: list[list[memoryview]] = []
        for k, (start, end) in enumerate(ranges):
            values = _gather(segments, start, end)
            try:
                if deltas:
                    run_id = model.bases[k][0] if k < len(model.bases) else 0
                    encoded = self._feedback.encode(k, run_id, key, values, settings, chunk, max_frame)
                else:
                    encoded = wire.encode_payload(values, settings.codec, chunk_parameters=chunk, codec_block=settings.codec_block,
                                                  topk_fraction=settings.topk_fraction, max_frame_bytes=max_frame)
            except ValueError as e:
                raise ClientConfigError(f"cannot encode the update as {settings.name} as the aggregator asks: {e}") from None
            out.append(encoded.frames)
        return out

    def _evaluate(self, model: _Model, named: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        assert self.evaluator is not None
        if "evaluation_reports" not in model.config.get("features", []):
            log.error("the aggregator does not take evaluation reports (no 'evaluation_reports' feature): upgrade it")
            self._stop.wait(5)
            return
        r = self.evaluator.evaluate(named, config)
        wire.encode_report(0, 0, 0, 0, self.client_id, self.evaluator.dataset, dict(r.metrics))  # validate first
        with self._lock:
            self.stats.reports += 1
            self._outbox.append(_Outgoing(self._next_seq(), "report", list(model.bases), None, max(0, int(r.num_examples)),
                                          dict(r.metrics), dataset=self.evaluator.dataset, epoch=self.epoch))
        self._ring()

    def _ring(self) -> None:
        try:
            os.write(self._bell_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already ringing, or the I/O thread has ended

    # -- sequence numbers (3.4: increasing across restarts)

    def _seq_path(self) -> str | None:
        return os.path.join(self.state_dir, f"{self.client_id}.seq") if self.state_dir else None

    def _first_seq(self) -> int:
        seq = time.time_ns() // 1000
        path = self._seq_path()
        if path and os.path.exists(path):
            try:
                with open(path, encoding="ascii") as f:
                    seq = max(seq, int(f.read().strip()) + 1)
            except (OSError, ValueError):
                log.warning("unreadable seq file %s: starting from the clock", path)
        return seq

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        path = self._seq_path()
        if path:
            os.makedirs(self.state_dir or ".", exist_ok=True)
            tmp = f"{path}.tmp"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(str(seq))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return seq

    # -- sockets (I/O thread)

    def _secure(self, s: zmq.Socket[Any]) -> None:
        if self.curve is None:
            return
        pair, server = self.curve
        s.curve_serverkey = server.encode()
        s.curve_publickey = pair.public.encode()
        s.curve_secretkey = pair.secret.encode()

    def _make_dealer(self, endpoint: str) -> zmq.Socket[Any]:
        d: zmq.Socket[Any] = self.context.socket(zmq.DEALER)
        self._secure(d)
        d.setsockopt(zmq.LINGER, 0)
        d.setsockopt(zmq.RECONNECT_IVL_MAX, self.max_backoff_ms)
        d.connect(endpoint)
        return d

    def _io_main(self) -> None:
        try:
            self._links = [_Link(self, 0, *self.endpoints)]
            self._request_snapshot(self._links[0])
            poller = zmq.Poller()
            polled: tuple[Any, ...] = ()
            while not self._io_stop.is_set():
                sockets = tuple(s for link in self._links for s in (link.sub, link.dealer, link.monitor))
                if sockets != polled:  # rebuilt only when a link or a snapshot DEALER was replaced
                    poller, polled = zmq.Poller(), sockets
                    for s in sockets:
                        poller.register(s, zmq.POLLIN)
                    poller.register(self._bell_r, zmq.POLLIN)
                ready = dict(poller.poll(timeout=50))
                if self._bell_r in ready:
                    try:
                        os.read(self._bell_r, 4096)
                    except BlockingIOError:
                        pass
                generation = list(self._links)
                for link in generation:
                    if link.monitor in ready:
                        self._read_monitor(link)
                    if link.sub in ready:
                        self._read_sub(link)
                    if self._links != generation:
                        break
                    if link.dealer in ready:
                        self._read_snapshot(link)
                    if self._links != generation:
                        break
                self._send_outbox()
                self._check_timers()
        except BaseException as e:  # surfaced by run()
            log.exception("client I/O failed")
            with self._lock:
                self._fatal = e
                self._lock.notify_all()
        finally:
            for link in self._links:
                link.close()
            for fd in (self._bell_r, self._bell_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _request_snapshot(self, link: _Link) -> None:
        link.request_id += 1
        link.dealer.send(wire.encode_snapshot_request(link.request_id, self.client_id))
        link.outstanding = True
        link.deadline = time.monotonic() + self.snapshot_timeout

    def _read_monitor(self, link: _Link) -> None:
        while link.monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(link.monitor)
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                if link.handshake_failures:
                    log.info("handshake with the aggregator succeeded after %d failures (%s)", link.handshake_failures, link.model_ep)
                link.handshake_failures = 0
                link.last_handshake_log = -1e9
                continue
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                cause = "unauthorized_key"
                hint = "the aggregator refused this client's CURVE key: add its public key to the aggregator's authorized keys (security.authorized_keys)"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == 0x11000002:
                cause = "mechanism_mismatch"
                hint = ("the aggregator closed the connection during the handshake: it most likely requires CURVE, and this client runs insecure"
                        if self.curve is None else "this client uses CURVE but the aggregator runs without it (--insecure)")
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL or value == 0x11000001:
                cause = "no_detail" if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL else "cryptographic"
                hint = ("the aggregator dropped the CURVE handshake: most likely server_public_key_file is not this aggregator's public key"
                        if self.curve is not None else
                        "the aggregator closed the connection during the handshake: it most likely requires CURVE, and this client runs insecure")
            else:
                cause, hint = "protocol", f"the handshake with the aggregator failed (protocol error 0x{value:x})"
            link.handshake_failures += 1
            with self._lock:
                self.stats.handshake_failures += 1
                self.stats.last_handshake_failure = cause
            now = time.monotonic()
            if now - link.last_handshake_log >= 30:
                link.last_handshake_log = now
                key = f" public_key={self.curve[0].public}" if self.curve else ""
                log.warning("cannot get in: %s (endpoint %s, cause %s, failures %d%s)", hint, link.model_ep, cause,
                            link.handshake_failures, key)

    def _read_snapshot(self, link: _Link) -> None:
        while link.dealer.poll(0):
            frames = link.dealer.recv_multipart(copy=True)
            try:
                reply = wire.decode_snapshot_reply(frames)
            except wire.ProtocolError as e:
                log.warning("bad snapshot reply from %s: %s", link.snapshot_ep, e)
                continue
            if reply.request_id != link.request_id:
                continue
            if link.unanswered:
                log.info("snapshot reply from %s after %d unanswered requests", link.snapshot_ep, link.unanswered)
            link.outstanding = False
            link.unanswered = 0
            with self._lock:
                self.stats.snapshots += 1
            if self._adopt_layout(reply, link):
                return  # links replaced: the new ones ask for their snapshots
            self._store(link, reply.run_id, reply.version, reply.values, reply.config, reply)

    def _adopt_layout(self, reply: wire.SnapshotReply, link: _Link) -> bool:
        """Checks the layout and follows a shard map; True when the links were replaced."""
        if self._layout is not None and reply.layout != self._layout:
            log.warning("the aggregator's model layout changed: %s", reply.layout.describe())
        self._layout = reply.layout
        self._layout_frame = reply.layout_frame
        shards = reply.shards
        same = (shards is None and self._shard_map is None) or (
            shards is not None and self._shard_map is not None and [(s.start, s.end) for s in shards] == [(s.start, s.end) for s in self._shard_map])
        if same:
            return False
        own = reply.shard_index if shards else 0
        new: list[_Link] = []
        for i in range(len(shards) if shards else 1):
            if i == own:
                link.index = i
                link.chunks, link.chunk_key, link.base = {}, None, None
                new.append(link)
            else:
                assert shards is not None
                e = shards[i]
                new.append(_Link(self, i, e.model, e.snapshot, e.update))
        for old in self._links:
            if old is not link:
                old.close()
        self._links = new
        self._shard_map = shards
        if shards:
            for i, e in enumerate(shards):
                new[i].range = (e.start, e.end)
            log.info("model is sharded: connecting to every shard (%d)", len(shards))
        else:
            link.range = None
        with self._lock:
            if self._pending or self._outbox:
                log.warning("shard map changed: dropping %d updates without receipts", len(self._pending) + len(self._outbox))
            self._pending.clear()
            self._outbox.clear()
            self._model = None
            self.stats.shards = len(new)
        self._values = np.zeros(reply.layout.parameter_count, dtype=np.float32)
        for other in new:
            if other is not link:
                self._request_snapshot(other)
        # The reply that brought the map holds this link's slice.
        self._store(link, reply.run_id, reply.version, reply.values, reply.config, reply)
        return True

    def _store(self, link: _Link, run_id: int, version: int, values: np.ndarray, config: dict[str, Any] | None,
               reply: wire.SnapshotReply | None = None) -> None:
        if self._layout is None:
            return
        count = self._layout.parameter_count
        start, end = link.range or (0, count)
        if values.size != end - start:
            return
        if link.base is not None and link.base[0] == run_id and version <= link.base[1] and reply is None:
            return  # not newer
        if end - start == count:
            self._values = values            # a fresh array of our own: the new model as it is
        else:
            vector = self._values.copy() if self._values.size == count else np.zeros(count, dtype=np.float32)
            vector[start:end] = values
            self._values = vector
        link.base = (run_id, version)
        if config is not None:
            self._config = config
        if any(l.base is None for l in self._links):
            return
        with self._lock:
            first = self._model is None
            self._model = _Model(self._layout, self._layout_frame, self._values, [l.base for l in self._links if l.base],
                                 self._config, [l.range or (0, count) for l in self._links])
            self.stats.model_version = self._model.version
            self.stats.shards = len(self._links)
            if reply is None:
                self.stats.broadcasts += 1
            self._lock.notify_all()
        if first:
            log.info("joined: holding the aggregator's model (version %d, %d parameters, %d tensors, %s)",
                     self._model.version, self._layout.parameter_count, len(self._layout.tensors), self.endpoints[1])

    def _read_sub(self, link: _Link) -> None:
        while link.sub.poll(0):
            frames = link.sub.recv_multipart(copy=True)
            topic = frames[0]
            try:
                if topic == b"model":
                    self._handle_chunk(link, wire.decode_model_chunk(frames))
                elif topic.startswith(b"receipt/"):
                    self._handle_receipt(link, wire.decode_receipt(frames))
            except wire.ProtocolError as e:
                log.debug("bad message on %s: %s", link.model_ep, e)

    def _handle_chunk(self, link: _Link, c: wire.ModelChunk) -> None:
        if self._layout is None or c.fingerprint != self._layout.fingerprint():
            if not link.outstanding:
                self._request_snapshot(link)
            return
        key = (c.run_id, c.version)
        if link.base is not None and link.base[0] == c.run_id and c.version <= link.base[1]:
            return
        if link.chunk_key != key:
            if link.chunk_key is not None and link.chunks and not link.outstanding:
                self._request_snapshot(link)  # a gap: the incomplete version is dropped
            link.chunk_key, link.chunks = key, {}
        link.chunks[c.index] = bytes(c.payload)
        if len(link.chunks) == c.count:
            start, end = link.range or (0, self._layout.parameter_count)
            values = wire.payload_to_array([link.chunks[i] for i in range(c.count)])
            link.chunks, link.chunk_key = {}, None
            if values.size == end - start:
                self._store(link, c.run_id, c.version, values, None)

    def _handle_receipt(self, link: _Link, r: wire.Receipt) -> None:
        with self._lock:
            u = self._pending.get(r.seq)
            if u is None or link.index >= len(u.slots) or u.slots[link.index].get("receipt") is not None:
                return
            u.slots[link.index]["receipt"] = r
            if r.decision == wire.MERGED:
                self.stats.merged += 1
            elif r.decision == wire.DUPLICATE:
                self.stats.duplicates += 1
            elif r.decision == wire.RECORDED:
                self.stats.reports_recorded += 1
            else:
                self.stats.rejected += 1
                self.stats.last_reject_reason = r.reason_name
            if all(s.get("receipt") is not None for s in u.slots):
                del self._pending[r.seq]
                # Every aggregator has the whole update, so libzmq is done with its frames.
                if u.buffer is not None and len(self._spare) < 2:
                    self._spare.append(u.buffer)
            self.stats.pending = len(self._pending)
            self._lock.notify_all()
        if r.decision == wire.REJECTED:
            now = time.monotonic()
            if now - self._reject_log.get(r.reason_name, -1e9) >= 30:
                self._reject_log[r.reason_name] = now
                log.warning("update rejected: %s (%s; endpoint %s, seq %d)", r.reason_name, r.message, link.update_ep, r.seq)
            if r.reason_name == "seq_out_of_range":
                with self._lock:
                    renew = u.epoch == self.epoch
                    if renew:
                        self.epoch = wire.new_epoch()
                if renew:  # the seqs of this epoch jumped past the aggregator's window: a fresh one
                    log.warning("seq %d is out of the aggregator's dedup window: starting a new client epoch", r.seq)
            if r.reason_name in ("unknown_base", "not_privatized") and not link.outstanding:
                # Another run, or local DP required now (4.8): the snapshot config says how.
                self._request_snapshot(link)

    def _send_outbox(self) -> None:
        with self._lock:
            ready, self._outbox = self._outbox, []
            if self._layout is not None:
                count = self._layout.parameter_count
                ranges = [l.range or (0, count) for l in self._links]
                stale = [u for u in ready if u.encoded is not None and u.ranges != ranges]
                if stale:  # encoded for another shard map (it changed while training): its slices no longer fit
                    log.warning("shard map changed: dropping %d encoded updates made for the old one", len(stale))
                    ready = [u for u in ready if all(u is not x for x in stale)]
            for u in ready:
                u.slots = [{"attempts": 0, "deadline": 0.0, "receipt": None} for _ in self._links]
                self._pending[u.seq] = u
            self.stats.pending = len(self._pending)

    def _frames(self, u: _Outgoing, link: _Link) -> list[Any]:
        run, base = u.bases[link.index] if link.index < len(u.bases) else (0, 0)
        features = self._model.config.get("features", []) if self._model else []
        # The epoch only to an aggregator that lists the feature (an older one rejects the flag).
        epoch = u.epoch if "client_epoch" in features else 0
        if u.kind == "report":
            return list(wire.encode_report(run, base, u.seq, u.samples, self.client_id, u.dataset, u.metrics, epoch=epoch))
        assert u.segments is not None
        with_metrics = bool(u.metrics) and "update_metrics" in features
        header = wire.encode_update_header(run, base, u.seq, u.samples, self.client_id, with_metrics, delta=u.delta, codec=u.codec,
                                           epoch=epoch, privatized=u.privatized)
        frames: list[Any] = [header, self._layout_frame]
        if with_metrics:
            frames.append(wire.metrics_frame(u.metrics))
        if u.encoded is not None:
            frames.extend(u.encoded[link.index])  # encoded once: every resend sends the same bytes
            return frames
        start, end = link.range or (0, sum(a.size for a in u.segments))
        chunk = int((self._model.config if self._model else {}).get("chunk_parameters", 262_144))
        frames.extend(wire.segment_frames(u.segments, start, end, chunk))
        return frames

    def _check_timers(self) -> None:
        now = time.monotonic()
        for link in self._links:
            if link.outstanding and now >= link.deadline:
                link.unanswered += 1
                if now - link.last_silence_log >= 30:
                    link.last_silence_log = now
                    hint = ("; with CURVE, check server_public_key_file and that this client's key is authorized "
                            "(failed handshakes are logged as \"cannot get in\")") if self.curve else ""
                    log.warning("no snapshot reply: is the aggregator running at %s?%s (unanswered %d)", link.snapshot_ep, hint, link.unanswered)
                link.dealer.close(linger=0)
                link.dealer = self._make_dealer(link.snapshot_ep)
                self._request_snapshot(link)
        advice = float((self._model.config if self._model else {}).get("receipt_timeout_s", 10.0))
        timeout = self.receipt_timeout or advice
        with self._lock:
            pending = list(self._pending.values())
        resent = 0
        for u in pending:
            for link in self._links:
                slot = u.slots[link.index] if link.index < len(u.slots) else None
                if slot is None or slot["receipt"] is not None or now < slot["deadline"]:
                    continue
                try:
                    link.push.send_multipart(self._frames(u, link), flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    slot["deadline"] = now + 0.2
                    continue
                if slot["attempts"]:
                    resent += 1
                else:
                    with self._lock:
                        if u.kind == "report":
                            self.stats.reports_sent += 1
                        else:
                            self.stats.updates_sent += 1
                slot["attempts"] += 1
                slot["deadline"] = now + min(self.max_backoff, timeout * min(32, 2 ** (slot["attempts"] - 1)))
                if slot["attempts"] >= 3 and not link.outstanding:
                    self._request_snapshot(link)  # repeated silence: the aggregator may have restarted
        if resent:
            with self._lock:
                self.stats.resends += resent


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _gather(segments: list[np.ndarray], start: int, end: int) -> np.ndarray:
    """The values ``[start, end)`` of a flat vector held as 1-D float32 pieces in order: a view
    when one piece holds them, else one new array."""
    parts: list[np.ndarray] = []
    at = 0
    for piece in segments:
        lo, hi = max(start, at), min(end, at + piece.size)
        if lo < hi:
            parts.append(piece[lo - at:hi - at])
        at += piece.size
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def _by_name(layout: wire.Layout, values: np.ndarray) -> dict[str, np.ndarray]:
    """The flat vector as named arrays: read-only views of the model the client holds (no
    copy per round; a trainer copies what it changes in place, ``w = model["w"].copy()``)."""
    out: dict[str, np.ndarray] = {}
    for t, o in zip(layout.tensors, layout.offsets()):
        view = values[o:o + t.count].reshape(t.shape)
        view.flags.writeable = False
        out[t.name] = view
    return out


def flatten(layout: wire.Layout, tensors: Mapping[str, np.ndarray], base: np.ndarray | None = None,
            out: np.ndarray | None = None) -> np.ndarray:
    """Named tensors -> the flat float32 vector in layout order; with ``base``, the tensors are
    a delta added to it. Raises `TrainerOutputError` naming every tensor that does not fit."""
    _, vector = _pieces(layout, tensors, base=base, out=out)
    return vector if vector is not None else np.empty(0, dtype=np.float32)


def _pieces(layout: wire.Layout, tensors: Mapping[str, np.ndarray], *, own: Mapping[str, np.ndarray] | None = None,
            base: np.ndarray | None = None, out: np.ndarray | None = None,
            delta_from: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The flat vector as 1-D float32 pieces in layout order, and the buffer they were copied
    into (``out`` when it fits; None when nothing was copied). A tensor that is the model's own
    array from ``own`` (returned unchanged) is sent from the model's memory, uncopied; a delta
    (``base``) is always added into the buffer. With ``delta_from`` (the model trained on; the
    algorithm takes deltas) the result is ``tensors - delta_from``, or, when the tensors already
    are a delta (``base`` given too), the tensors as they are. Raises `TrainerOutputError`
    naming every tensor that does not fit."""
    if base is not None and delta_from is not None:
        base = delta_from = None  # a delta sent as a delta
    names = set(layout.names)
    problems: list[str] = []
    missing = [n for n in layout.names if n not in tensors]
    extra = sorted(set(tensors) - names)
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("not in the model " + ", ".join(extra))
    own = own or {}
    buffer: np.ndarray | None = None
    pieces: list[np.ndarray] = []
    joined = -1  # where the last piece, a slice of the buffer, starts (-1: it is not one)
    for t, o in zip(layout.tensors, layout.offsets()):
        if t.name not in tensors:
            continue
        given = tensors[t.name]
        a = np.asarray(given)
        if a.shape != t.shape:
            problems.append(f"{t.name} has shape {list(a.shape)}, the model {list(t.shape)}")
            continue
        if not np.issubdtype(a.dtype, np.floating):
            problems.append(f"{t.name} has dtype {a.dtype}, not a float")
            continue
        if base is None and delta_from is None and given is own.get(t.name):
            pieces.append(a.reshape(-1))  # a view of the model the client holds (never changed)
            joined = -1
            continue
        if buffer is None:
            ok = out is not None and out.size == layout.parameter_count and out.dtype == np.float32
            buffer = out if ok and out is not None else np.empty(layout.parameter_count, dtype=np.float32)
        dst = buffer[o:o + t.count].reshape(t.shape)
        if base is not None:
            np.add(base[o:o + t.count].reshape(t.shape), a, out=dst, casting="unsafe")
        elif delta_from is not None:
            np.subtract(a, delta_from[o:o + t.count].reshape(t.shape), out=dst, casting="unsafe")
        else:
            np.copyto(dst, a, casting="unsafe")     # one copy, converting to float32 on the way
        if not np.isfinite(dst).all():
            problems.append(f"{t.name} is not finite")
        if joined >= 0:
            pieces[-1] = buffer[joined:o + t.count]  # adjacent copies travel as one piece
        else:
            pieces.append(buffer[o:o + t.count])
            joined = o
    if problems:
        raise TrainerOutputError("the trainer's result does not fit the model: " + "; ".join(problems))
    return pieces, buffer


def run(trainer: Trainer, *, client_id: str, aggregator: str = "tcp://127.0.0.1:5556", max_rounds: int | None = None,
        **options: Any) -> Stats:
    """Joins the aggregator and trains ``trainer`` until SIGTERM/SIGINT (or ``max_rounds``).
    Options are those of `Client` (``secret_key_file``, ``server_public_key_file``, ``insecure``,
    ``state_dir``, ...)."""
    return Client(trainer, client_id=client_id, aggregator=aggregator, **options).run(max_rounds=max_rounds)


def evaluate(evaluator: Evaluator, *, client_id: str, aggregator: str = "tcp://127.0.0.1:5556", max_rounds: int | None = None,
             **options: Any) -> Stats:
    """Runs ``evaluator`` as an evaluator client (reports on each newer model)."""
    return Client(evaluator=evaluator, client_id=client_id, aggregator=aggregator, **options).run(max_rounds=max_rounds)

