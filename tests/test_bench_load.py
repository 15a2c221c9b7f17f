"""A short run of ``bench/load.py``: a real ``patron serve`` loaded by real locust over loopback.

Timings are not asserted (see bench/README.md). What is asserted is what the benchmark's proof rests
on: every message the locust users send maps to exactly one event, the collector accepted all of
them, the log holds exactly that many events and no dead letter, and the proof's comparison itself
reports a difference when there is one.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from patron.connectors.segment import segment_to_events

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("load")


def test_every_load_message_maps_to_exactly_one_event(bench: ModuleType) -> None:
    locustfile = bench
    now = datetime.now(UTC)
    kinds = set()
    for index in range(8):
        message = locustfile.message(index % 4, f"load-{index}", now.isoformat())
        events = segment_to_events(message, "load", received_at=now, sent_at=now.isoformat())
        assert len(events) == 1, message
        kinds.add(events[0]["envelope"]["event_type"])
    assert kinds == {"custom_event", "identify", "page_viewed", "order_completed"}


@pytest.mark.timeout(60)
def test_a_short_load_run_logs_exactly_the_accepted_events(bench: ModuleType, tmp_path: Path) -> None:
    run = bench.run_load(tmp_path, users=2, spawn_rate=None, seconds=4, batch=10)
    assert run.requests > 20
    assert run.failed_requests == 0 and run.rejected == 0 and run.failures == {}
    assert run.accepted == run.requests * 10
    assert run.logged == run.accepted and run.dead_letters == 0
    assert run.count_proof == "equal"
    assert 0 < run.p50_ms <= run.p95_ms <= run.p99_ms <= run.max_ms
    assert 2 < run.seconds < 10
    assert run.server_cpu["writer thread"] > 0 and run.server_cpu["event loop (main thread)"] > 0
    assert run.client_cpu > 0 and 0 <= run.steal_pct < 100

    # the proof notices a log that differs from the answers, and bounds unanswered requests
    assert bench.Run.count_proof.fget(replace(run, logged=run.accepted - 1)) == "DIFFERENT (-1)"
    unanswered = replace(run, failed_requests=1, logged=run.accepted + 10)
    assert unanswered.count_proof == f"within [{run.accepted:,}, {run.accepted + 10:,}]"
    assert replace(unanswered, logged=run.accepted + 11).count_proof.startswith("OUTSIDE")


def test_percentile_is_nearest_rank(bench: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert bench.percentile(values, 0.5) == 50.0
    assert bench.percentile(values, 0.99) == 99.0
    assert bench.percentile([7.0], 0.99) == 7.0
    assert bench.percentile([], 0.99) == 0.0


def test_writer_steps_time_the_collectors_own_work_on_every_event(bench: ModuleType) -> None:
    steps = bench.writer_steps(requests=4, batch=10, group=2)
    labels = [label for label, _, _ in steps]
    assert labels[0].startswith("map") and labels[-1].startswith("whole writer") and len(steps) == 5
    assert all(wall > 0 and cpu >= 0 for _, wall, cpu in steps)
