"""SIGKILL a process at random points of its work: the crash tests' and ``bench/chaos.py``'s tool."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT_S = 30.0


def kill_repeatedly(
    command: list[str], progress: Callable[[], int], total: int, kills: int, rng: random.Random, logs: Path
) -> int:
    """Start ``command`` ``kills`` times and SIGKILL it once ``progress()`` passes a random share of
    ``total`` (plus a few random milliseconds, to land anywhere inside a batch). Returns how many kills
    hit a process with work left; a process that fails on its own raises with its stderr."""
    interrupted = 0
    for attempt, target in enumerate(sorted(rng.uniform(0.05, 0.9) * total for _ in range(kills))):
        with (logs / f"stderr-{attempt}").open("w+b") as stderr:
            victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            deadline = time.monotonic() + START_TIMEOUT_S
            while progress() < target and victim.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
            victim.send_signal(signal.SIGKILL)
            code = victim.wait()
            stderr.seek(0)
            if code not in (0, -signal.SIGKILL):
                raise RuntimeError(
                    f"{' '.join(command)} failed (exit {code}):\n{stderr.read().decode(errors='replace')}"
                )
            interrupted += code == -signal.SIGKILL and progress() < total
    return interrupted
