"""Change events between snapshots: which changes are seen, their exact content, their encoding
through the real codec and registry, and that a re-run appends nothing to a real embedded log."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from fact_builder import at, customer, d, fact_tables

from patron.events.codec import EventCodec
from patron.projections.changes import PROFILE_CHANGES_TOPIC, alert_changes, message, stage_changes
from patron.projections.health import build_health
from patron.projections.lifecycle import LIFECYCLE_SCHEMA, build_lifecycle
from patron.schemas.registry import FileRegistry
from patron.streams.local_log import LocalLog
from patron.streams.log import scan

AS_OF = at("2026-06-30", 9)


def lifecycle(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"profile_id": p, "stage": s, "since": at("2026-06-01"), "previous_stage": None} for p, s in rows],
        schema=LIFECYCLE_SCHEMA,
    )


def health(rows: list[tuple[str, list[str]]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "profile_id": p,
                "account": "Acme",
                "score": 12.9,
                "status": "red",
                "factors": '{"usage": {}}',
                "alerts": a,
            }
            for p, a in rows
        ]
    )


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> EventCodec:
    return EventCodec(FileRegistry(Path(tmp_path_factory.mktemp("registry")) / "r.db"))


def test_stage_changes_only_for_changed_or_new_profiles():
    previous = lifecycle([("a", "repeat"), ("b", "loyal"), ("gone", "churned")])
    current = lifecycle([("a", "at_risk"), ("b", "loyal"), ("new", "prospect")])
    events = stage_changes(previous, current, AS_OF)
    assert [e["payload"] for e in events] == [
        {
            "profile_id": "a",
            "from_stage": "repeat",
            "to_stage": "at_risk",
            "since": at("2026-06-01"),
            "as_of": AS_OF,
        },
        {
            "profile_id": "new",
            "from_stage": None,
            "to_stage": "prospect",
            "since": at("2026-06-01"),
            "as_of": AS_OF,
        },
    ]
    envelope = events[0]["envelope"]
    assert envelope["event_type"] == "lifecycle_stage_changed"
    assert envelope["source"] == "patron.projections"
    assert envelope["occurred_at"] == AS_OF
    assert stage_changes(None, current, AS_OF) == []  # the first snapshot is the baseline


def test_event_ids_are_deterministic_per_profile_value_and_day():
    previous, current = lifecycle([("a", "repeat")]), lifecycle([("a", "at_risk")])
    first = stage_changes(previous, current, AS_OF)[0]["envelope"]["event_id"]
    assert stage_changes(previous, current, at("2026-06-30", 17))[0]["envelope"]["event_id"] == first
    assert stage_changes(previous, current, at("2026-07-01", 9))[0]["envelope"]["event_id"] != first
    other = stage_changes(previous, lifecycle([("a", "churned")]), AS_OF)[0]["envelope"]["event_id"]
    assert other != first


def test_alerts_are_raised_when_they_start_to_hold():
    previous = health([("a", ["usage_collapse"]), ("b", ["payment_trouble"])])
    current = health([("a", ["high_value_at_risk", "usage_collapse"]), ("b", []), ("c", ["usage_collapse"])])
    events = alert_changes(previous, current, AS_OF)
    assert [(e["payload"]["profile_id"], e["payload"]["rule"]) for e in events] == [
        ("a", "high_value_at_risk"),
        ("c", "usage_collapse"),
    ]
    assert events[0]["payload"] == {
        "profile_id": "a",
        "account": "Acme",
        "rule": "high_value_at_risk",
        "score": 12.9,
        "status": "red",
        "factors": '{"usage": {}}',
        "as_of": AS_OF,
    }
    assert len(alert_changes(None, current, AS_OF)) == 3  # first snapshot: every alert that holds


def test_changes_encode_and_a_rerun_appends_nothing(tmp_path: Path, codec: EventCodec):
    events = stage_changes(lifecycle([("a", "repeat")]), lifecycle([("a", "at_risk")]), AS_OF)
    events += alert_changes(None, health([("a", ["usage_collapse"])]), AS_OF)
    for event in events:
        assert codec.decode(codec.encode(event)) == event
    log = LocalLog(tmp_path / "log")
    try:
        log.ensure_topic(PROFILE_CHANGES_TOPIC)
        messages = [message(codec, event) for event in events]
        assert {m.key for m in messages} == {b"a"}
        assert log.append(PROFILE_CHANGES_TOPIC, messages).appended == 2
        again = log.append(PROFILE_CHANGES_TOPIC, [message(codec, event) for event in events])
        assert (again.appended, again.duplicates) == (0, 2)
        stored = [codec.decode(record.value) for record in scan(log, PROFILE_CHANGES_TOPIC)]
        assert sorted(e["envelope"]["event_type"] for e in stored) == [
            "health_alert_raised",
            "lifecycle_stage_changed",
        ]
    finally:
        log.close()


def test_changes_from_real_scores_a_month_apart(codec: EventCodec):
    """Real lifecycle and health tables of two as-of days feed the diff: the customer who stopped
    buying and using the product moves to at_risk and raises usage_collapse on the later day."""
    tables = fact_tables(
        customers=[customer("x", "2025-01-01", "Acme")],
        orders_daily=[
            {"profile_id": "x", "day": d(day), "orders": 1, "revenue": 50.0}
            for day in ("2026-02-01", "2026-03-15")
        ],
        activity_daily=[
            {
                "profile_id": "x",
                "day": d("2026-05-10"),
                "events": 200,
                "logins": 100,
                "feature_uses": 100,
                "sessions": 0,
            }
        ],
    )
    may, june = at("2026-05-31"), at("2026-06-30")
    stages = stage_changes(build_lifecycle(tables, may), build_lifecycle(tables, june), june)
    assert [
        (e["payload"]["from_stage"], e["payload"]["to_stage"], e["payload"]["since"]) for e in stages
    ] == [
        ("repeat", "at_risk", at("2026-06-13"))  # 2026-03-15 + 90 days
    ]
    alerts = alert_changes(build_health(tables, may), build_health(tables, june), june)
    assert [e["payload"]["rule"] for e in alerts] == ["usage_collapse"]
    assert json.loads(alerts[0]["payload"]["factors"])["usage"]["score"] == 0.0
    for event in stages + alerts:
        assert codec.decode(codec.encode(event)) == event
