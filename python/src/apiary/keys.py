"""CURVE key files as `apiary keys generate` writes them (ZeroMQ certificate style):

    # comment
    public-key = "<40 Z85 characters>"
    secret-key = "<40 Z85 characters>"      (NAME.secret only, mode 0600)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import zmq

_LINE = re.compile(r'^\s*(public-key|secret-key)\s*=\s*"([^"]*)"\s*$')


class KeyFileError(ValueError):
    """A key file that is missing, unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str


def _fields(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def read_pair(path: str) -> KeyPair:
    """The key pair of a NAME.secret file; the public key is derived from the secret one and
    must match the file's."""
    f = _fields(path)
    secret = f.get("secret-key")
    if not secret or len(secret) != 40:
        raise KeyFileError(f"{path}: no secret-key of 40 Z85 characters")
    try:
        derived = zmq.curve_public(secret.encode()).decode()
    except (zmq.ZMQError, ValueError) as e:
        raise KeyFileError(f"{path}: secret-key is not a Z85 CURVE key ({e})") from None
    if f.get("public-key") not in (None, derived):
        raise KeyFileError(f"{path}: public-key does not match secret-key")
    return KeyPair(derived, secret)


def read_public(path: str) -> str:
    """The public key of a NAME.public (or NAME.secret) file."""
    key = _fields(path).get("public-key")
    if not key or len(key) != 40:
        raise KeyFileError(f"{path}: no public-key of 40 Z85 characters")
    return key


def generate(name: str, directory: str) -> tuple[str, str]:
    """Writes NAME.secret (0600) and NAME.public into ``directory``, like `apiary keys generate`;
    refuses to overwrite a secret file. Returns the two paths."""
    os.makedirs(directory, exist_ok=True)
    secret_path = os.path.join(directory, f"{name}.secret")
    public_path = os.path.join(directory, f"{name}.public")
    if os.path.exists(secret_path):
        raise KeyFileError(f"{secret_path} exists; not overwriting a secret key")
    public, secret = (k.decode() for k in zmq.curve_keypair())
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f'# Apiary CURVE key pair for {name}. SECRET: keep it private (mode 0600).\npublic-key = "{public}"\nsecret-key = "{secret}"\n')
    with open(public_path, "w", encoding="utf-8") as f:
        f.write(f'# Apiary CURVE public key for {name}.\npublic-key = "{public}"\n')
    return secret_path, public_path
