"""A small run of ``bench/segments.py``: both measurements work end to end and measure what they say.

Timings are not asserted (see bench/README.md); what is asserted is that the latency run saw one
segment change per event it appended, each matched to its cause, and that the evaluation run evaluated
50 definitions per profile, changed the share of profiles it was asked to, and found transitions.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from patron.projections.profiles import new_part
from patron.projections.segments.fields import FAMILIES

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "segments.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_segments", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_synthetic_profiles_have_the_shape_of_folded_ones(bench: ModuleType) -> None:
    _, profile = bench.synthetic_profile(3, random.Random(1), 1_800_000_000_000_000)
    (part,) = profile["parts"].values()
    assert set(part) == set(new_part())
    tables = {table for table, _, _ in FAMILIES.values()}
    assert (
        {"activity", "orders", "emails"}
        <= set(part["facts"])
        <= tables | {"last_order", "subscriptions", "cart", "nps"}
    )


def test_evaluation_counts_every_definition_and_only_changed_profiles(bench: ModuleType) -> None:
    result = bench.measure_evaluation(profiles=400, changed=0.05)
    assert result["definitions"] == 50
    assert result["full_evaluations"] == 400 * 50
    assert result["emitted"] > 400  # most profiles are in several segments
    assert result["changed_profiles"] == 20
    assert 0 < result["affected"] < 50  # a new order cannot change the conditions over scores
    assert result["changes"] > 0


def test_latency_sees_one_change_per_event(bench: ModuleType) -> None:
    result = bench.measure_latency(rate=40, seconds=1.5, idle_sleep=0.01)
    assert result["events"] == result["seen"] == 60
    assert 0 < result["p50"] <= result["p99"] <= result["max"]
