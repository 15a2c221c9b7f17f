"""Per-customer facts: the fold and merge rules, and the fact tables of a hand-built customer story.

The story (two customers, orders on three days, a ticket's life, two NPS answers, a subscription, a
merge of the two and a split back) runs through the real embedded runner; the fact tables read from
the committed profile store are asserted row by row against values worked out by hand, and the
vectorised rebuild from the log must give the same tables at every step.
"""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from patron.config import Settings
from patron.events.codec import open_codec
from patron.events.models import validate_event
from patron.identity.processor import merge_request, split_request
from patron.projections.fact_tables import FactTables, incremental_tables
from patron.projections.facts import fold_facts, merge_facts, money
from patron.projections.profile_rules import load_profile_rules
from patron.projections.profiles import fold_event, merge_part, new_part
from patron.projections.rebuild import rebuild
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner
from patron.streams.log import EVENTS_TOPIC, Message
from patron.streams.state import read_store
from patron.streams.topology import default_processors

DAY1 = datetime(2024, 3, 4, tzinfo=UTC)
ANA = {"user_id": "u-ana", "email": "ana@example.com"}
BEN = {"anonymous_id": "anon-ben"}
SUBSCRIPTION = {
    "subscription_id": "S-1",
    "plan": "pro",
    "amount": 49.0,
    "currency": "EUR",
    "billing_interval": "month",
    "period_start": DAY1,
    "period_end": DAY1 + timedelta(days=30),
}
PAYLOADS: dict[str, dict[str, Any]] = {
    "order_completed": {"currency": "EUR", "items": []},
    "ticket_opened": {"ticket_id": "T-1", "channel": "email"},
    "ticket_first_responded": {"ticket_id": "T-1", "agent_id": "agent-7"},
    "ticket_resolved": {"ticket_id": "T-1", "resolution": "fixed", "reopened_count": 0},
    "survey_answered": {"kind": "NPS"},
    "identify": {"traits": {}},
    "logged_in": {"method": "password"},
    "feature_used": {"feature": "export"},
    "page_viewed": {"url": "https://app.example.com/home"},
    "subscription_started": SUBSCRIPTION,
    "subscription_renewed": {**SUBSCRIPTION, "period_end": DAY1 + timedelta(days=60), "renewal_number": 1},
}
_ids = itertools.count(1)


def event(
    at: datetime, event_type: str, identifiers: dict[str, Any], source: str, **payload: Any
) -> dict[str, Any]:
    """A validated event with a fresh deterministic id (``UUID(int=n)``)."""
    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=next(_ids))),
                "event_type": event_type,
                "occurred_at": at,
                "received_at": at,
                "source": source,
                "identifiers": identifiers,
                "context": {},
            },
            "payload": {**PAYLOADS[event_type], **payload},
        }
    )


def story() -> list[dict[str, Any]]:
    """Ana: orders on three days, a ticket, NPS 3 then 10, a subscription; Ben: one order on day 2."""
    d1, d2, d3 = (
        DAY1 + timedelta(hours=9),
        DAY1 + timedelta(days=1, hours=9),
        DAY1 + timedelta(days=2, hours=9),
    )
    by_email = {"email": ANA["email"]}  # anchored on the email: a second part of Ana's profile
    return [
        event(
            d1,
            "identify",
            ANA,
            "crm",
            company="Acme GmbH",
            country="DE",
            created_at=DAY1 - timedelta(days=90),
        ),
        event(d1 + timedelta(minutes=1), "order_completed", ANA, "shop", order_id="O-1", revenue=10.1),
        event(d1 + timedelta(minutes=2), "order_completed", by_email, "shop", order_id="O-2", revenue=5.05),
        event(d2, "order_completed", ANA, "shop", order_id="O-3", revenue=0.1),
        event(d3, "order_completed", ANA, "shop", order_id="O-4", revenue=0.2),
        event(d1 + timedelta(minutes=5), "ticket_opened", ANA, "helpdesk", priority="high"),
        event(d1 + timedelta(minutes=65), "ticket_first_responded", ANA, "helpdesk", response_seconds=3600),
        event(d2 + timedelta(minutes=5), "ticket_resolved", ANA, "helpdesk", resolution_seconds=86400),
        event(d1 + timedelta(minutes=9), "survey_answered", ANA, "surveys", survey_id="N-1", score=3),
        event(d3 + timedelta(minutes=9), "survey_answered", by_email, "surveys", survey_id="N-2", score=10),
        event(d1 + timedelta(minutes=20), "logged_in", ANA, "app"),
        event(d1 + timedelta(minutes=21), "feature_used", ANA, "app", count=3),
        event(d1 + timedelta(minutes=22), "page_viewed", ANA, "web"),
        event(d1 + timedelta(minutes=30), "subscription_started", ANA, "billing"),
        event(d2 + timedelta(minutes=30), "subscription_renewed", ANA, "billing"),
        event(d2 + timedelta(hours=3), "order_completed", BEN, "shop", order_id="O-9", revenue=20.0),
    ]


class Pipeline:
    """A data directory: log, codec and the default topology on the embedded runner."""

    def __init__(self, data_dir: Path):
        self.log = LocalLog(data_dir)
        self.codec = open_codec(Settings.load(data_dir=data_dir))
        self.runner = LocalRunner(self.log, self.codec, default_processors())

    def feed(self, events: list[dict[str, Any]]) -> None:
        self.log.append(EVENTS_TOPIC, [self.codec.message(e) for e in events])
        self.runner.run()

    def profile_of(self, kind: str, value: str) -> str:
        (found,) = [
            key
            for key, state in read_store(self.log, "profiles", "profiles").items()
            if "merged_into" not in state and value in state["ids"].get(kind, [])
        ]
        return found

    def tables(self) -> FactTables:
        """The incremental tables, after asserting the rebuild gives the very same."""
        incremental = incremental_tables(self.log).sorted()
        rebuilt = rebuild(self.log, self.codec)
        assert rebuilt.stats.unmapped == rebuilt.stats.undecodable == 0
        assert_same(incremental, rebuilt.tables.sorted())
        return incremental


def assert_same(want: FactTables, got: FactTables) -> None:
    for (name, a), (_, b) in zip(want.items(), got.items(), strict=True):
        assert a.schema == b.schema, name
        assert a.to_pylist() == b.to_pylist(), name


def rows(table: Any, *columns: str) -> list[tuple[Any, ...]]:
    return [tuple(row[c] for c in columns) for row in table.to_pylist()]


@pytest.fixture
def pipeline(data_dir: Path) -> Pipeline:
    return Pipeline(data_dir)


def test_a_customer_story_gives_the_expected_fact_rows(pipeline: Pipeline):
    pipeline.feed(story())
    ana, ben = pipeline.profile_of("user_id", "u-ana"), pipeline.profile_of("anonymous_id", "anon-ben")
    tables = pipeline.tables()
    d1, d2, d3 = DAY1.date(), DAY1.date() + timedelta(days=1), DAY1.date() + timedelta(days=2)
    assert rows(tables.orders_daily, "profile_id", "day", "orders", "revenue") == sorted(
        [(ana, d1, 2, 15.15), (ana, d2, 1, 0.1), (ana, d3, 1, 0.2), (ben, d2, 1, 20.0)]
    )
    (ticket,) = tables.tickets.to_pylist()
    assert ticket == {
        "profile_id": ana,
        "ticket_id": "T-1",
        "priority": "high",
        "opened_at": DAY1 + timedelta(hours=9, minutes=5),
        "first_response_seconds": 3600,
        "resolved_at": DAY1 + timedelta(days=1, hours=9, minutes=5),
        "resolution_seconds": 86400,
    }
    assert rows(tables.surveys_daily, "day", "kind", "responses", "score_sum", "promoters", "detractors") == [
        (d1, "NPS", 1, 3, 0, 1),
        (d3, "NPS", 1, 10, 1, 0),
    ]
    assert rows(tables.nps_latest, "profile_id", "answered_at", "score") == [
        (ana, DAY1 + timedelta(days=2, hours=9, minutes=9), 10)
    ]
    (subscription,) = tables.subscriptions.to_pylist()
    assert subscription == {
        "profile_id": ana,
        "subscription_id": "S-1",
        "plan": "pro",
        "amount": 49.0,
        "billing_interval": "month",
        "started_at": DAY1 + timedelta(hours=9, minutes=30),
        "period_end": DAY1 + timedelta(days=60),
        "cancelled_at": None,
        "renewals": 1,
    }
    activity = {r["day"]: r for r in tables.activity_daily.to_pylist() if r["profile_id"] == ana}
    assert (activity[d1]["events"], activity[d1]["logins"], activity[d1]["feature_uses"]) == (10, 1, 3)
    assert activity[d1]["sessions"] == 1
    customers = {r["profile_id"]: r for r in tables.customers.to_pylist()}
    assert customers[ana]["account"] == "Acme GmbH" and customers[ana]["country"] == "DE"
    assert customers[ana]["signup_at"] == DAY1 - timedelta(days=90)
    assert customers[ana]["events"] == 15 and customers[ben]["events"] == 1
    assert customers[ben]["signup_at"] == customers[ben]["first_seen"] == DAY1 + timedelta(days=1, hours=12)


def test_a_merge_carries_the_facts_and_a_split_takes_them_back(pipeline: Pipeline):
    pipeline.feed(story())
    ana, ben = pipeline.profile_of("user_id", "u-ana"), pipeline.profile_of("anonymous_id", "anon-ben")
    at = DAY1 + timedelta(days=5)
    pipeline.feed(
        [
            merge_request(
                "pair:ana-ben", (ana, ben), (("user_id", "u-ana"), ("anonymous_id", "anon-ben")), at=at
            )
        ]
    )
    merged = pipeline.tables()
    d2 = DAY1.date() + timedelta(days=1)
    assert set(merged.customers.column("profile_id").to_pylist()) == {ana}
    assert (ana, d2, 2, 20.1) in rows(merged.orders_daily, "profile_id", "day", "orders", "revenue")
    assert merged.customers.column("events").to_pylist() == [16]

    pipeline.feed([split_request(ana, ("anonymous_id", "anon-ben"), "two people", at=at + timedelta(days=1))])
    split = pipeline.tables()
    (new,) = set(split.customers.column("profile_id").to_pylist()) - {ana}
    orders = rows(split.orders_daily, "profile_id", "day", "orders", "revenue")
    assert (new, d2, 1, 20.0) in orders and (ana, d2, 1, 0.1) in orders
    assert dict(rows(split.customers, "profile_id", "events")) == {ana: 15, new: 1}


def test_as_of_rebuild_equals_the_tables_of_a_log_that_ends_that_day(tmp_path: Path):
    events = story()
    full, cut = Pipeline(tmp_path / "full"), Pipeline(tmp_path / "cut")
    full.feed(events)
    as_of = DAY1.date() + timedelta(days=1)
    end = datetime.combine(as_of + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    cut.feed([e for e in events if e["envelope"]["occurred_at"] < end])
    rebuilt = rebuild(full.log, full.codec, as_of=as_of)
    assert rebuilt.stats.after_as_of == 2  # day 3's order and NPS answer
    assert_same(incremental_tables(cut.log).sorted(), rebuilt.tables.sorted())
    assert max(rebuilt.tables.activity_daily.column("day").to_pylist()) == as_of


def test_undecodable_records_are_counted_like_the_runner_dead_letters_them(pipeline: Pipeline):
    pipeline.log.append(EVENTS_TOPIC, [Message(b"k", str(uuid.uuid4()), b"\x00\x00\x00\x00\x63garbage", 0)])
    pipeline.feed(story()[:3])
    assert pipeline.runner.stats["identity"].dead_letters == 1
    stats = rebuild(pipeline.log, pipeline.codec).stats
    assert (stats.records, stats.undecodable, stats.folded) == (4, 1, 3)


# -- the fold and merge rules ------------------------------------------------------------------
def _facts(events: list[dict[str, Any]]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for e in events:
        fold_facts(facts, e)
    return facts


def test_folding_in_any_order_and_grouping_gives_the_same_facts():
    events = story()
    want = orjson.dumps(_facts(events), option=orjson.OPT_SORT_KEYS)
    rng = random.Random(7)
    for _ in range(20):
        rng.shuffle(events)
        cut = rng.randrange(len(events))
        left, right = _facts(events[:cut]), _facts(events[cut:])
        into, other = (left, right) if rng.random() < 0.5 else (right, left)
        kept = orjson.dumps(other)
        merge_facts(into, other)
        assert orjson.dumps(into, option=orjson.OPT_SORT_KEYS) == want
        assert orjson.dumps(other) == kept  # the merged-in facts are not changed


def test_money_is_summed_exactly_in_micro_units():
    assert money(0.1) + money(0.2) == money(0.3) == 300_000
    assert money(float("nan")) == money(None) == 0
    assert money(-2.0) == -2_000_000 and money(4e-7) == 0 and money(6e-7) == 1


def test_a_part_stored_before_facts_existed_still_folds_and_merges():
    plan = load_profile_rules().plan
    old = {k: v for k, v in new_part().items() if k != "facts"}
    fold_event(old, story()[1], plan)
    assert old["facts"]["orders"] == {date(2024, 3, 4).isoformat(): [1, 10_100_000]}
    older = {k: v for k, v in new_part().items() if k != "facts"}
    merge_part(older, old, plan)
    assert older["facts"]["orders"] == old["facts"]["orders"]


def test_events_whose_anchor_no_profile_holds_yet_are_counted_as_unmapped(pipeline: Pipeline):
    pipeline.feed(story()[:2])
    late = story()[2:]
    pipeline.log.append(EVENTS_TOPIC, [pipeline.codec.message(e) for e in late])  # no ``patron run``
    stats = rebuild(pipeline.log, pipeline.codec).stats
    # Ana's user id already anchors a part, so her later events count for her profile; the events
    # anchored on her email alone (an order, an NPS answer) and Ben's have no profile yet
    assert (stats.records, stats.folded, stats.unmapped) == (16, 13, 3)
