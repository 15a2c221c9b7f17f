"""Lifecycle stages, their start and the stage before, on hand-built order histories.

Each stage has a customer whose expected stage, ``since`` and ``previous_stage`` are worked out by
hand from the shipped thresholds (at risk 90 days, churned 180, reactivated for 90, loyal 4 purchase
days in 365). A seeded random population is then checked against a day-by-day replay written the
slow, obvious way, so the vectorised replay's ``since`` and ``previous_stage`` are exact, not close.
"""

from __future__ import annotations

import itertools
import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from fact_builder import at, customer, d, fact_tables

from patron.errors import PatronError
from patron.projections.lifecycle import build_lifecycle, load_lifecycle_config

AS_OF = at("2026-06-30", 18)

HISTORIES = {
    "prospect": [],
    "first": ["2026-06-01"],
    "repeat": ["2026-05-01", "2026-06-10"],
    "loyal": ["2026-03-01", "2026-04-01", "2026-05-01", "2026-06-01"],
    "at_risk": ["2025-12-01", "2026-01-15"],
    "churned": ["2025-10-01"],
    "reactivated": ["2025-06-01", "2025-07-01", "2026-06-15"],
    "back_to_repeat": ["2025-06-01", "2026-03-01", "2026-04-01", "2026-06-20"],
    "sub_churned": [],
    "bought_after_sub": ["2026-06-01"],
    "future_order": ["2026-07-02"],
}

EXPECTED = {
    "prospect": ("prospect", at("2026-01-05"), None),
    "first": ("first_time_buyer", at("2026-06-01"), "prospect"),
    "repeat": ("repeat", at("2026-06-10"), "first_time_buyer"),
    "loyal": ("loyal", at("2026-06-01"), "repeat"),
    "at_risk": ("at_risk", at("2026-04-15"), "repeat"),  # 2026-01-15 + 90 days
    "churned": ("churned", at("2026-03-30"), "at_risk"),  # 2025-10-01 + 180 days
    "reactivated": ("reactivated", at("2026-06-15"), "churned"),
    # came back on 2026-03-01, reactivated until + 90 days; 3 purchase days in 365: repeat, not loyal
    "back_to_repeat": ("repeat", at("2026-05-30"), "reactivated"),
    "sub_churned": ("churned", at("2026-04-01"), "prospect"),  # its only subscription ended, cancelled
    "bought_after_sub": ("first_time_buyer", at("2026-06-01"), "prospect"),
    "future_order": ("prospect", at("2026-01-05"), None),  # after the as-of day: not yet
}


def subscription(pid: str, cancelled: str, period_end: str) -> dict:
    return {"profile_id": pid, "subscription_id": f"s-{pid}", "plan": "pro", "amount": 9.0,
            "billing_interval": "month", "started_at": at("2025-01-01"), "period_end": at(period_end),
            "cancelled_at": at(cancelled), "renewals": 3}  # fmt: skip


def tables_for(histories: dict[str, list[str]], subscriptions: list[dict] | None = None):
    return fact_tables(
        customers=[customer(pid, "2026-01-05") for pid in histories],
        orders_daily=[
            {"profile_id": pid, "day": d(day), "orders": 1, "revenue": 10.0}
            for pid, days in histories.items()
            for day in days
        ],
        subscriptions=subscriptions or [],
    )


@pytest.fixture(scope="module")
def stages() -> dict[str, tuple]:
    tables = tables_for(
        HISTORIES,
        [
            subscription("sub_churned", "2026-03-01", "2026-04-01"),
            subscription("bought_after_sub", "2026-03-01", "2026-05-01"),
        ],
    )
    table = build_lifecycle(tables, AS_OF)
    assert table.column_names == ["profile_id", "stage", "since", "previous_stage"]
    assert table["profile_id"].to_pylist() == sorted(HISTORIES)
    return {
        row["profile_id"]: (row["stage"], row["since"], row["previous_stage"]) for row in table.to_pylist()
    }


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_each_stage_with_its_start_and_previous_stage(stages, profile: str):
    assert stages[profile] == EXPECTED[profile]


def test_two_orders_on_one_day_are_one_purchase_day():
    tables = fact_tables(
        customers=[customer("x", "2026-01-01")],
        orders_daily=[
            {"profile_id": "x", "day": d("2026-06-01"), "orders": 2, "revenue": 10.0},
            {"profile_id": "x", "day": d("2026-06-01"), "orders": 1, "revenue": 5.0},  # a merged part's row
        ],
    )
    assert build_lifecycle(tables, AS_OF)["stage"].to_pylist() == ["first_time_buyer"]


def reference_stage(days: list[int], t: int, c) -> str:
    """The stage on day ``t``, straight from the definitions (no vectorisation, no cleverness)."""
    past = [x for x in days if x <= t]
    if not past:
        return "prospect"
    gap = t - past[-1]
    returns = [b for a, b in itertools.pairwise(past) if b - a >= c.dormancy_churned_days]
    if gap >= c.dormancy_churned_days:
        return "churned"
    if gap >= c.dormancy_at_risk_days:
        return "at_risk"
    if returns and t - returns[-1] < c.reactivated_days:
        return "reactivated"
    if sum(1 for x in past if x > t - c.loyal_window_days) >= c.loyal_purchase_days:
        return "loyal"
    return "repeat" if len(past) >= 2 else "first_time_buyer"


def test_replay_matches_a_day_by_day_reference():
    rng = random.Random(4)
    config = load_lifecycle_config()
    start, last = date(2024, 1, 1), date(2026, 6, 30)
    span = (last - start).days
    histories = {}
    for i in range(150):
        n = rng.choice([0, 1, 2, 3, 5, 8, 12])
        burst = rng.randint(0, span)
        histories[f"c{i:03d}"] = sorted(
            {
                (start + timedelta(days=min(span, max(0, burst + int(rng.gauss(0, 200)))))).isoformat()
                for _ in range(n)
            }
        )
    table = build_lifecycle(tables_for(histories), at(last.isoformat(), 12))
    got = {row["profile_id"]: row for row in table.to_pylist()}
    epoch = date(1970, 1, 1)
    for pid, days in histories.items():
        ints = [(date.fromisoformat(x) - epoch).days for x in days]
        if not ints:
            assert got[pid]["stage"] == "prospect"
            continue
        timeline = [reference_stage(ints, t, config) for t in range(ints[0], (last - epoch).days + 1)]
        current = timeline[-1]
        run = len(timeline) - 1
        while run > 0 and timeline[run - 1] == current:
            run -= 1
        previous = timeline[run - 1] if run > 0 else "prospect"
        since = epoch + timedelta(days=ints[0] + run)
        assert (got[pid]["stage"], got[pid]["since"].date(), got[pid]["previous_stage"]) == (
            current,
            since,
            previous,
        ), pid


def test_no_customers_no_rows():
    assert build_lifecycle(fact_tables(), AS_OF).num_rows == 0


def test_nobody_ordered_yet():
    """Without a single order only the subscription rule can move anyone out of prospect."""
    tables = tables_for({"a": [], "b": []}, [subscription("b", "2026-03-01", "2026-04-01")])
    rows = build_lifecycle(tables, AS_OF).to_pylist()
    assert [(r["stage"], r["previous_stage"]) for r in rows] == [("prospect", None), ("churned", "prospect")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dormancy_at_risk_days: 200\n", "key '(top level)': dormancy_churned_days (180) must be greater than dormancy_at_risk_days (200)"),
        ("loyal_purchase_days: 1\n", "key 'loyal_purchase_days': Input should be greater than or equal to 2"),
        ("dormancy_churn_days: 100\n", "key 'dormancy_churn_days': Extra inputs are not permitted"),
        ("", "lifecycle config must be a YAML mapping"),
    ],
)  # fmt: skip
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "lifecycle.yaml"
    path.write_text(text)
    with pytest.raises(PatronError) as caught:
        load_lifecycle_config(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
