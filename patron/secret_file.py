"""Secrets kept in the data directory: created once, readable by their owner only, never half-read."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

WAIT_S = 5.0


def secret_file(path: Path, size: int = 32) -> bytes:
    """The ``size`` random bytes in ``path``, created (mode 0600, fsynced) when missing.

    Several processes may start at once (collector, runner, snapshot): exactly one creates the file
    (``O_EXCL``); the others read it, waiting the moment it takes the creator to write it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path, size)
    data = secrets.token_bytes(size)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return data


def _read(path: Path, size: int) -> bytes:
    deadline = time.monotonic() + WAIT_S
    data = path.read_bytes()
    while len(data) != size and time.monotonic() < deadline:
        time.sleep(0.01)
        data = path.read_bytes()
    if len(data) != size:
        raise ValueError(f"{path}: holds {len(data)} bytes, not a {size}-byte secret; restore it from backup")
    return data
