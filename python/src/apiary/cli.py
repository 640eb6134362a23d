"""``apiary-client --trainer module:Class --id ID --aggregator tcp://HOST:PORT``: runs a user's
trainer (or, with ``--evaluator``, an evaluator) on an Apiary fleet until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from typing import Any

from .client import Client, ClientConfigError, TrainerOutputError
from .keys import KeyFileError
from .wire import ProtocolError

DEFAULT_AGGREGATOR = "tcp://127.0.0.1:5556"

DESCRIPTION = "Runs your trainer (--trainer module:Class) or evaluator (--evaluator module:Class) on an Apiary fleet until SIGTERM/SIGINT."

EPILOG = f"""\
The aggregator address defaults to {DEFAULT_AGGREGATOR} (the snapshot port of an aggregator on this
machine with the default endpoints). CURVE keys default to keys/<id>.secret and keys/aggregator.public
(see `apiary keys generate`). On SIGTERM/SIGINT the client trains no more, waits up to --stop-wait
seconds for receipts of the updates it sent, and exits 0; a second signal stops it at once. An error
(bad trainer output, a config the client cannot follow) is one line on stderr and exit status 1;
--debug shows its traceback."""


def _load(spec: str) -> Any:
    # Like `python -m`, find the user's module in the current directory (a console script's
    # sys.path does not include it).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SystemExit(f"apiary-client: --trainer/--evaluator takes module:Class, got {spec!r}")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"apiary-client: cannot load {spec}: {e}") from None
    return obj() if isinstance(obj, type) else obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="apiary-client", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--trainer", help="module:Class (or module:object) with train(model, config) -> TrainResult")
    role.add_argument("--evaluator", help="module:Class with a dataset name and evaluate(model, config) -> EvaluateResult")
    p.add_argument("--id", required=True, help="client id: 1 to 64 characters of A-Z a-z 0-9 . _ -")
    p.add_argument("--aggregator", default=DEFAULT_AGGREGATOR,
                   help="the aggregator's snapshot endpoint tcp://HOST:PORT; model and update are on PORT+1, PORT+2 "
                        "(default: %(default)s)")
    p.add_argument("--key", help="this client's secret key file (default keys/<id>.secret)")
    p.add_argument("--server-key", help="the aggregator's public key file (default keys/aggregator.public)")
    p.add_argument("--insecure", action="store_true", help="connect without CURVE encryption and authentication")
    p.add_argument("--state-dir", metavar="DIR", help="directory for DIR/<id>.seq, the last sequence number, so that seqs keep increasing "
                                       "across restarts even if the clock steps back (default: none; seqs start from the clock)")
    p.add_argument("--rounds", type=int, help="stop after this many training runs, or reports of an evaluator (default: run until SIGTERM)")
    p.add_argument("--stop-wait", type=float, metavar="SECONDS",
                   help="on SIGTERM/SIGINT, wait this long for receipts of updates already sent (default: the receipt timeout, at most 5)")
    p.add_argument("--log-level", default="info", help="debug, info, warning, error (default: %(default)s)")
    p.add_argument("--debug", action="store_true", help="log at debug level and print the traceback of an error")
    a = p.parse_args(argv)
    level = "DEBUG" if a.debug else a.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    debug = level == "DEBUG"
    obj = _load(a.trainer or a.evaluator)
    try:
        client = Client(obj if a.trainer else None, evaluator=None if a.trainer else obj, client_id=a.id, aggregator=a.aggregator,
                        secret_key_file=a.key, server_public_key_file=a.server_key, insecure=a.insecure, state_dir=a.state_dir,
                        stop_wait=a.stop_wait)
    except (ClientConfigError, KeyFileError) as e:
        print(f"apiary-client: {e}", file=sys.stderr)
        return 1
    if a.insecure:
        logging.getLogger("apiary").warning("INSECURE: CURVE is off; updates travel unencrypted and unauthenticated")
    try:
        stats = client.run(max_rounds=a.rounds)
    except Exception as e:  # noqa: BLE001 - one line on stderr (the traceback with --debug)
        if debug:
            traceback.print_exc()
        print(f"apiary-client: {_describe(e, debug)}", file=sys.stderr)
        return 1
    logging.getLogger("apiary").info("stopped: %s", stats)
    return 0


def _describe(e: BaseException, debug: bool) -> str:
    """One line for an error that stopped the client: the SDK's own errors say what is wrong in
    their message; anything else (a bug in the user's trainer) names its type and where it was
    raised."""
    hint = "" if debug else " (--debug prints the traceback)"
    if isinstance(e, (TrainerOutputError, ClientConfigError, KeyFileError, ProtocolError)):
        return f"error: {e}{hint}"
    where = ""
    frames = traceback.extract_tb(e.__traceback__)
    if frames:
        last = frames[-1]
        where = f" at {last.filename}:{last.lineno} in {last.name}"
    return f"error: {type(e).__name__}: {e}{where}{hint}"


if __name__ == "__main__":
    sys.exit(main())
