"""Health scores, their explanation and early-warning alerts, on hand-built fact tables.

Every expected number below is worked out by hand from the shipped ``health.yaml``, so a change
to the scoring (or to the defaults) shows up as a concrete wrong number, not a vague failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from fact_builder import at, customer, d, fact_tables

from patron.errors import PatronError
from patron.projections.fact_tables import FactTables
from patron.projections.health import build_health, build_health_accounts, load_health_config
from patron.projections.health_signals import SIGNALS, signals

AS_OF = at("2026-06-30", 15)  # as-of day 2026-06-30; moments are taken at 2026-07-01T00:00Z


def activity(pid: str, day: str, logins: int, uses: int) -> dict:
    return {"profile_id": pid, "day": d(day), "events": logins + uses, "logins": logins,
            "feature_uses": uses, "sessions": 0}  # fmt: skip


def ticket(
    pid: str, tid: str, opened: str, resolved: str | None = None, resolution_h: int | None = None
) -> dict:
    return {"profile_id": pid, "ticket_id": tid, "priority": "high", "opened_at": at(opened),
            "first_response_seconds": 3600, "resolved_at": at(resolved) if resolved else None,
            "resolution_seconds": resolution_h * 3600 if resolution_h else None}  # fmt: skip


def order(pid: str, day: str, revenue: float) -> dict:
    return {"profile_id": pid, "day": d(day), "orders": 1, "revenue": revenue}


def failure(pid: str, day: str) -> dict:
    return {"profile_id": pid, "day": d(day), "failures": 1, "failed_amount": 29.0}


def subscription(pid: str, period_end: str, cancelled: str | None = None) -> dict:
    return {"profile_id": pid, "subscription_id": f"sub-{pid}", "plan": "pro", "amount": 29.0,
            "billing_interval": "month", "started_at": at("2025-01-01"), "period_end": at(period_end),
            "cancelled_at": at(cancelled) if cancelled else None, "renewals": 17}  # fmt: skip


def survey(pid: str, day: str, kind: str, score: int) -> dict:
    return {"profile_id": pid, "day": d(day), "kind": kind, "responses": 1, "score_sum": score,
            "promoters": int(kind == "NPS" and score >= 9), "detractors": int(kind == "NPS" and score <= 6)}  # fmt: skip


def nps(pid: str, day: str, score: int) -> dict:
    return {"profile_id": pid, "answered_at": at(day, 10), "score": score}


@pytest.fixture(scope="module")
def tables():
    """red: a valuable customer going wrong everywhere; green: happy user; blank: no data at all;
    billing: payment trouble right before renewal."""
    return fact_tables(
        customers=[
            customer("red", "2025-01-01", "Acme"),
            customer("green", "2025-01-01", "Acme"),
            customer("blank", "2026-06-29"),
            customer("billing", "2025-01-01", "Globex"),
        ],
        activity_daily=[
            activity("red", "2026-04-15", 90, 90),  # baseline 180 / 90 days = 2.0 per day
            activity("red", "2026-06-10", 12, 0),  # recent 12 / 30 days = 0.4 per day: -80%
            activity("green", "2026-04-15", 45, 45),  # 1.0 per day, then
            activity("green", "2026-06-10", 10, 20),  # 1.0 per day: no change
        ],
        tickets=[
            ticket("red", "T1", "2026-06-20"),
            ticket("red", "T2", "2026-06-25"),
            ticket("red", "T3", "2026-05-01", "2026-05-06", 120),
            ticket("red", "T0", "2025-06-01", "2025-06-02", 24),  # outside the support window
        ],
        orders_daily=[
            order("red", "2026-02-01", 1800.0),  # spend baseline: 1800 / 90 = 20 per day
            order("red", "2026-05-01", 450.0),  # recent: 450 / 90 = 5 per day: -75%
            order("billing", "2026-06-01", 90.0),
        ],
        payments_daily=[
            failure("red", "2026-06-20"),
            failure("billing", "2026-06-20"),
            failure("billing", "2026-06-27"),
            failure("billing", "2026-05-01"),  # outside the 30-day payment window
        ],
        subscriptions=[subscription("red", "2026-07-16"), subscription("billing", "2026-07-11")],
        surveys_daily=[
            survey("red", "2026-06-28", "NPS", 3),
            survey("green", "2026-06-01", "NPS", 10),
            survey("green", "2026-06-01", "CSAT", 5),
        ],
        nps_latest=[nps("red", "2026-06-28", 3), nps("green", "2026-06-01", 10)],
    )


@pytest.fixture(scope="module")
def health(tables) -> dict[str, dict]:
    table = build_health(tables, AS_OF)
    return {row["profile_id"]: row for row in table.to_pylist()}


def test_a_red_account_is_explained_factor_by_factor(health):
    red = health["red"]
    assert red["status"] == "red"
    assert red["usage_score"] == 0.0  # -80% against the own baseline, zero at -50%
    assert red["support_score"] == 20.0  # 2 open tickets: 33.3 x 0.6; 120 h to resolve: 0 x 0.4
    assert red["sentiment_score"] == 0.0  # NPS 3 (zero at 4); no CSAT: NPS carries the factor
    assert (
        red["commercial_score"] == 31.7
    )  # 1 failure 66.7 x 0.4 + renewal in 15 days 25 x 0.2 + spend -75% 0
    assert red["score"] == 12.9  # 0.3 x 0 + 0.25 x 20 + 0.2 x 0 + 0.25 x 31.67
    assert red["alerts"] == ["high_value_at_risk", "usage_collapse"]
    factors = json.loads(red["factors"])
    assert list(factors) == ["usage", "support", "sentiment", "commercial"]
    assert factors["usage"]["reason"] == (
        "logins + feature uses 0.40/day in the last 30 days vs 2.00/day in the 90 days before (-80%)"
    )
    assert factors["support"]["reason"] == (
        "2 open or unresolved tickets; mean time to resolution 120.0 h (tickets resolved in the last 90 days)"
    )
    assert factors["sentiment"]["reason"] == "latest NPS answer 3 of 10"
    assert factors["commercial"]["reason"].startswith(
        "1 failed payments in the last 30 days; next renewal in 15 days"
    )
    assert factors["commercial"]["signals"]["payment_failures"] == {
        "value": 1.0,
        "score": 66.7,
        "weight": 0.4,
    }
    assert factors["commercial"]["signals"]["spend_change"]["value"] == -0.75
    assert factors["support"] == {**factors["support"], "score": 20.0, "weight": 0.25, "effective_weight": 0.25,
                                  "contribution": 5.0}  # fmt: skip
    assert sum(f["contribution"] for f in factors.values()) == pytest.approx(red["score"], abs=0.05)


def test_missing_factors_are_neutral_and_weights_renormalised(health):
    green = health["green"]
    assert (green["usage_score"], green["sentiment_score"]) == (100.0, 100.0)
    assert green["support_score"] is None and green["commercial_score"] is None
    assert green["score"] == 100.0 and green["status"] == "green" and green["alerts"] == []
    factors = json.loads(green["factors"])
    assert factors["usage"]["effective_weight"] == 0.6  # 0.30 / (0.30 + 0.20)
    assert factors["sentiment"]["effective_weight"] == 0.4
    assert factors["support"]["contribution"] == 0.0
    assert factors["support"]["reason"].startswith("no data for open_tickets, resolution_hours")
    assert factors["sentiment"]["signals"]["csat_trend"] == {"value": None, "score": None, "weight": 0.2}


def test_a_profile_without_any_data_gets_the_neutral_score(health):
    blank = health["blank"]
    assert blank["score"] == 50.0 and blank["status"] == "yellow"
    assert all(blank[f"{f}_score"] is None for f in ("usage", "support", "sentiment", "commercial"))


def test_payment_trouble_alert_needs_both_conditions(health):
    billing = health["billing"]
    assert billing["alerts"] == ["payment_trouble"]  # 2 failures in 30 days, renewal in 10 days
    # commercial alone: (2 failures 33.3 x 0.4 + renewal in 10 days 16.7 x 0.2) / 0.6 (no spend baseline)
    assert (billing["commercial_score"], billing["score"], billing["status"]) == (27.8, 27.8, "red")
    signals = json.loads(billing["factors"])["commercial"]["signals"]
    assert signals["renewal_days"]["value"] == 10.0
    assert signals["spend_change"]["value"] is None  # no revenue in the spend baseline


def test_output_schema_has_no_nan_and_rows_sorted(tables):
    table = build_health(tables, AS_OF)
    assert table.column_names == ["profile_id", "account", "score", "status", "usage_score", "support_score",
                                  "sentiment_score", "commercial_score", "factors", "alerts"]  # fmt: skip
    assert table["profile_id"].to_pylist() == sorted(table["profile_id"].to_pylist())
    assert table.schema.field("alerts").type == pa.list_(pa.string())
    for name in ("score", "usage_score", "support_score", "sentiment_score", "commercial_score"):
        assert not np.isnan(
            table[name]
            .to_numpy(zero_copy_only=False)
            .astype(float)[table[name].is_valid().to_numpy(zero_copy_only=False)]
        ).any()


def test_account_rollup(tables):
    accounts = {row["account"]: row for row in build_health_accounts(build_health(tables, AS_OF)).to_pylist()}
    assert set(accounts) == {"Acme", "Globex"}  # the profile without an account is left out
    acme = accounts["Acme"]
    assert acme["profiles"] == 2 and acme["red_profiles"] == 1 and acme["green_profiles"] == 1
    assert acme["score"] == pytest.approx(56.45, abs=0.051) and acme["status"] == "yellow"
    assert acme["min_score"] == 12.9
    assert acme["alerts"] == ["high_value_at_risk", "usage_collapse"]


def test_time_travel_changes_the_windows(tables):
    """A month earlier the red customer's two tickets were not open yet (no longer high value at risk),
    but usage had already stopped: nothing in May against the baseline of 2026-02-01..2026-05-01."""
    earlier = {row["profile_id"]: row for row in build_health(tables, at("2026-05-31")).to_pylist()}
    assert earlier["red"]["alerts"] == ["usage_collapse"]
    assert json.loads(earlier["red"]["factors"])["support"]["signals"]["open_tickets"]["value"] == 0.0


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "health.yaml"
    path.write_text(text)
    return path


BASE = "status: {green: 70, yellow: 40}\nfactors:\n  usage: {weight: 1, signals: {usage_change: {weight: 1, zero_at: -0.5, full_at: 0}}}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE.replace("usage_change", "usage_chnage"),
         "key 'factors.usage.signals': Value error, unknown signal 'usage_chnage' (did you mean 'usage_change'?)"),
        (BASE + "alerts:\n  x: {when: ['open_tickets => 2']}\n",
         "key 'alerts.x.when': condition 'open_tickets => 2' must read '<name> <op> <number>'"),
        (BASE + "alerts:\n  x: {when: ['nps >= 2']}\n", "key 'alerts': x: unknown name 'nps'"),
        (BASE.replace("green: 70", "green: 30"), "key 'status': yellow (40.0) must be below green (30.0)"),
        (BASE.replace("full_at: 0", "full_at: -0.5"), "zero_at and full_at are both -0.5; they must differ"),
        (BASE.replace("weight: 1, signals", "weight: 0, signals"), "key 'factors.usage.weight': Input should be greater than 0"),
        (BASE + "windows: {usage_recent_dayz: 3}\n", "key 'windows.usage_recent_dayz': Extra inputs are not permitted"),
        ("- a list\n", "health config must be a YAML mapping"),
    ],
)  # fmt: skip
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str):
    path = write(tmp_path, text)
    with pytest.raises(PatronError) as caught:
        load_health_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message.removeprefix("key ").split("Value error, ")[-1] in str(caught.value)
    assert "\n" not in str(caught.value)


def test_shipped_config_loads():
    config = load_health_config()
    assert sum(f.weight for f in config.factors.values()) == pytest.approx(1.0)
    assert list(config.alerts) == ["high_value_at_risk", "payment_trouble", "usage_collapse"]


def test_many_customers_score_like_one(tables):
    """5,000 copies of the hand-built customers (ids suffixed) score exactly like the originals: the
    vectorised joins and group-bys never mix customers up, and the result is sorted by id."""
    copies = 5_000

    def repeated(table: pa.Table) -> pa.Table:
        ids = pa.array([f"{pid}-{i:05d}" for i in range(copies) for pid in table["profile_id"].to_pylist()])
        many = pa.concat_tables([table] * copies)
        return many.set_column(0, "profile_id", ids)

    big = FactTables(**{name: repeated(table) for name, table in tables.items()})
    table = build_health(big, AS_OF)
    assert table.num_rows == 4 * copies
    single = {row["profile_id"]: row for row in build_health(tables, AS_OF).to_pylist()}
    for row in table.slice(0, 40).to_pylist() + table.slice(table.num_rows - 40).to_pylist():
        pid = row["profile_id"].rsplit("-", 1)[0]
        assert {**row, "profile_id": pid} == single[pid]
    statuses = table["status"].value_counts().to_pylist()
    assert {s["values"]: s["counts"] for s in statuses} == {
        "red": 2 * copies,
        "green": copies,
        "yellow": copies,
    }


def test_a_custom_config_names_its_own_factors_and_rules(tables, tmp_path: Path):
    """Factors and rules are data: a one-factor config gives one factor column, rules on the score."""
    path = write(
        tmp_path,
        "status: {green: 80, yellow: 50}\nneutral_score: 0\n"
        "factors:\n  order: {weight: 2, signals: {spend_change: {weight: 1, zero_at: -1, full_at: 1}}}\n"
        "alerts:\n  low: {when: ['order_score < 50']}\n",
    )
    table = build_health(tables, AS_OF, load_health_config(path))
    assert table.column_names[4:] == ["order_score", "factors", "alerts"]
    rows = {row["profile_id"]: row for row in table.to_pylist()}
    assert (rows["red"]["order_score"], rows["red"]["score"], rows["red"]["status"]) == (12.5, 12.5, "red")
    assert rows["red"]["alerts"] == ["low"]  # spend -75%: 12.5 on a ramp from -100% to +100%
    assert (rows["green"]["score"], rows["green"]["alerts"]) == (0.0, [])  # no data: neutral 0, no evidence
    assert json.loads(rows["red"]["factors"])["order"]["effective_weight"] == 1.0
    no_rules = build_health(tables, AS_OF, load_health_config(write(tmp_path, BASE)))
    assert no_rules["alerts"].to_pylist() == [[], [], [], []]


def test_no_customers_no_rows():
    empty = build_health(fact_tables(), AS_OF)
    assert empty.num_rows == 0 and empty.schema.field("alerts").type == pa.list_(pa.string())
    assert build_health_accounts(empty).num_rows == 0


def test_every_signal_is_documented():
    docs = (Path(__file__).parent.parent / "docs" / "scores.md").read_text()
    assert [name for name in SIGNALS if f"`{name}`" not in docs] == []


def test_signal_definitions_at_their_edges():
    """One customer per edge: CSAT trend across windows, refunds in monetary, a cancelled running
    subscription (renews in 0 days), an NPS answer too old to count, an old ticket still open, a
    baseline shortened by the first-seen day."""
    tables = fact_tables(
        customers=[customer("e", "2025-01-01"), customer("new", "2026-05-10")],
        surveys_daily=[
            survey("e", "2026-06-01", "CSAT", 2),  # recent window 2026-04-02 .. 2026-06-30
            survey("e", "2026-05-01", "CSAT", 3),
            survey("e", "2026-03-01", "CSAT", 5),  # baseline window 2026-01-02 .. 2026-04-01
        ],
        nps_latest=[nps("e", "2025-06-29", 10)],  # older than 365 days on 2026-06-30
        orders_daily=[order("e", "2026-01-10", 500.0), order("e", "2025-06-01", 999.0)],  # 2nd: outside 365 d
        refunds_daily=[{"profile_id": "e", "day": d("2026-02-01"), "refunds": 1, "amount": 120.0}],
        subscriptions=[subscription("e", "2026-07-20", cancelled="2026-06-01")],
        tickets=[ticket("e", "T9", "2025-12-01")],  # opened long ago, never resolved: open, and support data
        activity_daily=[activity("new", "2026-05-20", 10, 0), activity("new", "2026-06-10", 3, 0)],
    )
    found = {
        row["profile_id"]: row for row in signals(tables, AS_OF, load_health_config().windows).to_pylist()
    }
    e = found["e"]
    assert e["csat_recent"] == 2.5 and e["csat_trend"] == -2.5
    assert e["nps_latest"] is None
    assert e["monetary"] == 380.0  # 500 revenue - 120 refunds in the last 365 days
    assert e["renewal_days"] == 0.0  # cancelled: will not renew
    assert e["open_tickets"] == 1.0 and e["resolution_hours"] is None and e["first_response_hours"] is None
    assert e["payment_failures"] == 0.0  # a paying customer without failures: 0, not null
    # first seen 2026-05-10: baseline 2026-05-10 .. 2026-05-31 = 22 observed days (>= 14), recent 30 days
    new = found["new"]
    assert new["usage_baseline_daily"] == pytest.approx(10 / 22) and new["usage_recent_daily"] == 0.1
    assert new["usage_change"] == pytest.approx(0.1 / (10 / 22) - 1)
    assert new["payment_failures"] is None and new["monetary"] is None  # never paid: no commercial data
