"""A disk that refuses writes (full, or a file-size limit) gives one clear line and exit 5, and corrupts
nothing: rerunning the same command afterwards ends exactly like a run that never failed.

The refusal is real: the command runs in a child process with ``RLIMIT_FSIZE`` set (and SIGXFSZ
ignored), so the kernel fails its writes with EFBIG once a file would grow past the limit.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_ingest import cli

from patron.config import Settings
from patron.errors import EXIT_STORAGE
from patron.events.codec import open_codec
from patron.streams.local_log import LocalLog
from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC, scan
from patron.streams.state import read_store

PATRON = str(Path(sys.executable).with_name("patron"))


def limited(size: int) -> callable:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def patron(data_dir: Path, *args: str, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATRON, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=None if limit is None else limited(limit),
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("gen") / "generated"
    code, _, error = cli(
        out.parent / "scratch", "generate", "--customers", "120", "--days", "60", "--out", str(out)
    )
    assert code == 0, error
    files = [str(p) for p in sorted(out.iterdir()) if (out / "mappings" / f"{p.stem}.yaml").exists()]
    return [*files, "--mapping-dir", str(out / "mappings")]


def without_receipt(event: dict[str, object]) -> str:
    """The event without ``received_at``: ingestion stamps the time it read the file."""
    envelope = {k: v for k, v in event["envelope"].items() if k != "received_at"}  # type: ignore[union-attr]
    return str({**event, "envelope": envelope})


def contents(data_dir: Path) -> dict[str, object]:
    """What both directories must hold alike; events decoded (each directory has its own data keys)."""
    log = LocalLog(data_dir)
    codec = open_codec(Settings.load(data_dir=data_dir))
    try:
        return {
            "events": sorted(
                (r.event_id, without_receipt(codec.decode(r.value))) for r in scan(log, EVENTS_TOPIC)
            ),
            "letters": sorted(r.event_id for r in scan(log, DEAD_LETTER_TOPIC)),
            "profiles": read_store(log, "profiles", "profiles"),
            "identity": read_store(log, "identity", "identifiers"),
        }
    finally:
        log.close()


def test_a_full_disk_stops_ingest_and_run_cleanly_and_a_rerun_completes_exactly(
    generated: list[str], tmp_path: Path
) -> None:
    clean, failing = tmp_path / "clean", tmp_path / "failing"
    for args in (("ingest", *generated), ("run",)):
        done = patron(clean, *args)
        assert done.returncode == 0, done.stderr

    refused = patron(failing, "ingest", *generated, limit=400_000)
    assert refused.returncode == EXIT_STORAGE, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk is full or a size limit was hit" in errors[0]
    assert "Traceback" not in refused.stderr and "free space and rerun" in errors[0]
    assert patron(failing, "ingest", *generated).returncode == 0  # space freed: the same command again

    size = sum(p.stat().st_size for p in failing.glob("log.db*"))
    refused = patron(failing, "run", limit=size + 200_000)  # processing writes state: it grows the files
    assert refused.returncode == EXIT_STORAGE, refused.stderr
    assert "Traceback" not in refused.stderr
    done = patron(failing, "run")
    assert done.returncode == 0, done.stderr
    assert contents(failing) == contents(clean)
