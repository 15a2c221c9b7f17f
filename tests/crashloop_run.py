"""The crash-loop test's victim: the embedded runner over a pre-filled log, following until killed.

Usage: ``python crashloop_run.py DATA_DIR BATCH_SIZE``. Prints ``started`` once the runner is
about to process, so the test can aim its SIGKILL at the processing rather than at the imports.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from crashloop_topology import toy_processors

from patron.config import Settings
from patron.events.codec import open_codec
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner


def main(directory: str, batch_size: str) -> None:
    log = LocalLog(directory)
    runner = LocalRunner(log, open_codec(Settings.load(data_dir=directory)), toy_processors())
    print("started", flush=True)
    runner.run(follow=True, batch_size=int(batch_size), idle_sleep=0.05)


if __name__ == "__main__":
    main(*sys.argv[1:3])
