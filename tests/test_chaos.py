"""The fault proof in small: bench/chaos.py's clean run vs a run SIGKILLed 20 times, compared in full."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_chaos", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twenty_sigkills_end_exactly_like_a_clean_run(chaos: ModuleType, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    result = chaos.run(customers=25, days=30, kills=20, seed=seed, work=tmp_path)
    assert result["problems"] == [], f"seed {seed}"
    assert result["interrupted"] >= 18, f"only {result['interrupted']} kills hit work left (seed {seed})"
    assert result["table rows"] > 200 and result["records"] > result["events"]  # it compared real output


def test_the_comparison_sees_a_lost_and_a_duplicated_record(chaos: ModuleType, tmp_path: Path) -> None:
    """The check itself can fail: drop one emitted record and append another a second time (no id)."""
    from patron.streams.local_log import LocalLog
    from patron.streams.log import Message, scan

    base, _ = chaos.prepare(tmp_path, 15, 30, 7)
    chaos.clean_run(base, tmp_path / "clean")
    chaos.clean_run(base, tmp_path / "copy")
    log = LocalLog(tmp_path / "copy")
    try:
        records = list(scan(log, "patron.profile-events"))
        log.delete_records("patron.profile-events", [(records[0].partition, records[0].offset)])
        again = records[1]
        log.append("patron.profile-events", [Message(again.key, None, again.value, again.timestamp_ms)])
    finally:
        log.close()
    problems, _ = chaos.compare(tmp_path / "clean", tmp_path / "copy")
    assert any("patron.profile-events: 1 lost, 1 extra" in p for p in problems), problems
