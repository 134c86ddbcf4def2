"""`nsupctl keygen`: CURVE key pairs for the control socket over TCP (the server's and each operator's)."""

from __future__ import annotations

import os
from pathlib import Path

import zmq.auth


def make_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """A CURVE key pair as `nsupctl keygen` writes it: NAME.key (public) and NAME.key_secret (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)
