"""``apiary-client --trainer module:Class --id ID --aggregator tcp://HOST:PORT``: runs a user's
trainer (or, with ``--evaluator``, an evaluator) on an Apiary fleet until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any

from .client import Client, ClientConfigError
from .keys import KeyFileError


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
    p = argparse.ArgumentParser(prog="apiary-client", description=__doc__)
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--trainer", help="module:Class (or module:object) with train(model, config) -> TrainResult")
    role.add_argument("--evaluator", help="module:Class with a dataset name and evaluate(model, config) -> EvaluateResult")
    p.add_argument("--id", required=True, help="client id: 1 to 64 characters of A-Z a-z 0-9 . _ -")
    p.add_argument("--aggregator", default="tcp://127.0.0.1:5556", help="snapshot endpoint; model and update are on PORT+1, PORT+2")
    p.add_argument("--key", help="this client's secret key file (default keys/<id>.secret)")
    p.add_argument("--server-key", help="the aggregator's public key file (default keys/aggregator.public)")
    p.add_argument("--insecure", action="store_true", help="connect without CURVE encryption and authentication")
    p.add_argument("--state-dir", help="where the last sequence number is kept across restarts")
    p.add_argument("--rounds", type=int, help="stop after this many training runs (default: run until SIGTERM)")
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    obj = _load(a.trainer or a.evaluator)
    try:
        client = Client(obj if a.trainer else None, evaluator=None if a.trainer else obj, client_id=a.id, aggregator=a.aggregator,
                        secret_key_file=a.key, server_public_key_file=a.server_key, insecure=a.insecure, state_dir=a.state_dir)
    except (ClientConfigError, KeyFileError) as e:
        print(f"apiary-client: {e}", file=sys.stderr)
        return 1
    if a.insecure:
        logging.getLogger("apiary").warning("INSECURE: CURVE is off; updates travel unencrypted and unauthenticated")
    stats = client.run(max_rounds=a.rounds)
    logging.getLogger("apiary").info("stopped: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
