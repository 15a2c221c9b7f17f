"""The profile projection: traits by source priority and recency, consent, counts, merges and splits.

Events go through the real ``validate_event`` (identifiers normalised as ingestion does) and the
real ``ProfileProcessor`` with plain dicts as its store; the fold's promises (order independence,
each record counted once, hand-overs that race merges and splits) are checked on the processor as
the runners call it, one record at a time with ``_key`` set.
"""

from __future__ import annotations

import random
import textwrap
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patron.errors import PatronError
from patron.events.models import validate_event
from patron.identity.events import identity_event_id
from patron.projections.profile_processor import PROFILE_ABSORBED, ProfileProcessor
from patron.projections.profile_rules import load_profile_rules
from patron.projections.profiles import (
    RECENT_IDS,
    anchor_of,
    fold_event,
    merge_profile,
    new_part,
    new_profile,
    summary,
)
from patron.streams.processor import Emit
from patron.streams.topology import IDENTITY_SOURCE, PROFILE_EVENTS_TOPIC, derived_event

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
PLAN = load_profile_rules().plan
PAYLOADS: dict[str, dict[str, Any]] = {
    "page_viewed": {"url": "https://shop.example.com/trail-runner"},
    "logged_in": {"method": "password"},
    "identify": {},
    "order_completed": {"order_id": "O-1", "revenue": 119.9, "currency": "EUR", "items": []},
    "ticket_opened": {"ticket_id": "T-77", "priority": "normal", "channel": "email"},
    "consent_changed": {"purpose": "marketing", "channel": "email", "granted": True},
    "email_unsubscribed": {"message_id": "msg-1", "campaign_id": "spring"},
    "subscription_started": {
        "subscription_id": "sub-1",
        "plan": "pro",
        "amount": 29.0,
        "currency": "EUR",
        "billing_interval": "month",
        "period_start": T0,
        "period_end": T0 + timedelta(days=30),
    },
}


def event(
    n: int,
    minute: int,
    identifiers: dict[str, Any],
    event_type: str = "page_viewed",
    source: str = "web",
    context: dict[str, Any] | None = None,
    **payload: Any,
) -> dict[str, Any]:
    """A validated event with id ``UUID(int=n)`` at ``T0 + minute`` (phones read in region DE)."""
    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=n)),
                "event_type": event_type,
                "occurred_at": T0 + timedelta(minutes=minute),
                "received_at": T0 + timedelta(minutes=minute, seconds=1),
                "source": source,
                "identifiers": identifiers,
                "context": context or {},
            },
            "payload": {**PAYLOADS[event_type], **payload},
        },
        default_region="DE",
    )


def micros(minute: int) -> int:
    return int((T0 + timedelta(minutes=minute)).timestamp()) * 1_000_000


def linked(n: int, profile_id: str, *identifiers: tuple[str, str]) -> dict[str, Any]:
    """An ``identifier_linked`` record as the identity stage emits it."""
    return derived_event(
        str(uuid.UUID(int=n)),
        "identifier_linked",
        source=IDENTITY_SOURCE,
        occurred_at=T0,
        received_at=T0,
        payload={
            "cause_event_id": str(uuid.UUID(int=n + 1)),
            "profile_id": profile_id,
            "identifiers": [{"kind": k, "value": v} for k, v in identifiers],
            "created": False,
        },
    )


def identity_record(n: int, event_type: str, **payload: Any) -> dict[str, Any]:
    payload["identifiers"] = [{"kind": k, "value": v} for k, v in payload["identifiers"]]
    return derived_event(
        str(uuid.UUID(int=n)),
        event_type,
        source=IDENTITY_SOURCE,
        occurred_at=T0,
        received_at=T0,
        payload={"cause_event_id": str(uuid.UUID(int=n + 1)), **payload},
    )


class Projection:
    """The profile processor over a dict store, fed record by record like a runner does."""

    def __init__(self, processor: ProfileProcessor | None = None):
        self.processor = processor or ProfileProcessor()
        self.stores: dict[str, Any] = {"profiles": {}}
        self.emitted: list[Emit] = []

    def feed(self, key: str, record: dict[str, Any]) -> list[Emit]:
        emits = self.processor.process(self.stores, {**record, "_key": key})
        self.emitted += emits
        return emits

    def deliver(self, emits: list[Emit]) -> None:
        """Feed emitted hand-overs back in, as the runner does through the topic."""
        for emit in emits:
            assert emit.topic == PROFILE_EVENTS_TOPIC and emit.key is not None
            self.deliver(self.feed(emit.key, emit.event))

    def view(self, profile_id: str) -> dict[str, Any]:
        return summary(profile_id, self.stores["profiles"][profile_id], PLAN)


# -- traits, consent, counts -------------------------------------------------------------------
def test_traits_take_the_trusted_source_for_names_and_the_newest_value_otherwise():
    projection = Projection()
    crm = {"external_ids": {"crm_id": "C-42"}, "email": "jo@example.com"}
    web = {"user_id": "u-1", "email": "jo@example.com"}
    records = [
        event(1, 10, crm, "identify", "crm", first_name="Johanna", city="Berlin", birthday=date(1988, 3, 14)),
        event(
            2,
            30,
            web,
            "identify",
            "web",
            context={"locale": "de-DE"},
            first_name="Jo",
            city="Munich",
            traits={"newsletter": "true", "shoe_size": "39", "nickname": "not json"},
        ),
        event(3, 40, web, "identify", "web", last_name=None, company=""),
        event(4, 50, web, "subscription_started", "billing"),
    ]
    for record in records:
        projection.feed("P", record)
    traits = projection.view("P")["traits"]
    # first_name uses the priority strategy: the CRM's older value beats the web's newer one
    assert traits["first_name"] == {
        "value": "Johanna",
        "source": "crm",
        "at": micros(10),
        "event": records[0]["envelope"]["event_id"],
    }
    # city uses the default (latest): the newer web value wins
    assert (traits["city"]["value"], traits["city"]["source"]) == ("Munich", "web")
    assert traits["birthday"]["value"] == "1988-03-14"
    assert traits["locale"]["value"] == "de-DE"
    assert traits["newsletter"]["value"] is True and traits["shoe_size"]["value"] == 39
    assert traits["nickname"]["value"] == "not json"
    assert traits["plan"]["value"] == "pro" and traits["subscription_status"]["value"] == "active"
    # empty values never overwrite
    assert "last_name" not in traits and "company" not in traits


def test_consent_is_the_latest_decision_per_purpose_and_channel_whatever_the_arrival_order():
    ids = {"email": "jo@example.com"}
    records = [
        event(1, 10, ids, "consent_changed", "web", method="cookie_banner"),
        event(2, 20, ids, "email_unsubscribed", "email"),
        event(3, 15, ids, "consent_changed", "web", purpose="analytics", channel="all", granted=True),
        event(4, 5, ids, "consent_changed", "web", granted=True),  # older, arrives last
    ]
    projection = Projection()
    for record in records:
        projection.feed("P", record)
    consent = projection.view("P")["consent"]
    assert consent["marketing:email"]["granted"] is False
    assert consent["marketing:email"]["at"] == micros(20)
    assert consent["marketing:email"]["method"] == "unsubscribe"
    assert consent["analytics:all"]["granted"] is True


def test_seen_times_and_counts_per_type_and_source():
    projection = Projection()
    ids = {"user_id": "u-1"}
    for n, (minute, event_type, source) in enumerate(
        [(30, "page_viewed", "web"), (5, "order_completed", "shop"), (50, "page_viewed", "web")]
    ):
        projection.feed("P", event(n, minute, ids, event_type, source))
    view = projection.view("P")
    assert (view["first_seen"], view["last_seen"], view["events"]) == (micros(5), micros(50), 3)
    assert view["by_type"] == {"order_completed": 1, "page_viewed": 2}
    assert view["by_source"] == {"shop": 1, "web": 2}


# -- idempotence -------------------------------------------------------------------------------
def test_a_redelivered_record_is_counted_once():
    projection = Projection()
    record = event(1, 0, {"user_id": "u-1"}, "order_completed", "shop")
    assert projection.feed("P", record) == []
    assert projection.feed("P", record) == []
    assert projection.view("P")["events"] == 1


def test_the_dedup_window_is_bounded():
    projection = Projection()
    for n in range(RECENT_IDS + 10):
        projection.feed("P", event(n, n, {"user_id": "u-1"}))
    assert len(projection.stores["profiles"]["P"]["recent"]) == RECENT_IDS
    assert projection.view("P")["events"] == RECENT_IDS + 10


# -- merges ------------------------------------------------------------------------------------
def test_a_merge_hands_the_merged_profile_to_the_survivor_and_leaves_a_tombstone():
    projection = Projection()
    projection.feed("A", linked(100, "A", ("anonymous_id", "anon-1")))
    projection.feed("B", linked(102, "B", ("external:shop_customer_id", "9001")))
    projection.feed("A", event(1, 0, {"anonymous_id": "anon-1"}))
    projection.feed(
        "B", event(2, 5, {"external_ids": {"shop_customer_id": "9001"}}, "order_completed", "shop")
    )
    merge = identity_record(
        104,
        "profiles_merged",
        profile_id="A",
        merged_profile_id="B",
        identifiers=[("external:shop_customer_id", "9001")],
    )
    handover = projection.feed("B", merge)
    assert [(e.key, e.event["envelope"]["event_type"]) for e in handover] == [("A", PROFILE_ABSORBED)]
    assert handover[0].event["envelope"]["event_id"] == identity_event_id(
        str(uuid.UUID(int=104)), PROFILE_ABSORBED, 0
    )
    assert projection.stores["profiles"]["B"] == {"merged_into": "A"}
    projection.deliver(handover)
    view = projection.view("A")
    assert view["identifiers"] == {"anonymous_id": ["anon-1"], "external:shop_customer_id": ["9001"]}
    assert view["by_source"] == {"shop": 1, "web": 1}
    assert projection.stores["profiles"]["A"]["keys"] == ["A", "B"]
    # the same hand-over delivered twice is folded once
    projection.deliver(handover)
    assert projection.view("A")["events"] == 2
    # a record that reaches the tombstone late is handed on to the survivor
    late = projection.feed(
        "B", event(3, 9, {"external_ids": {"shop_customer_id": "9001"}}, "order_completed", "shop")
    )
    assert [e.key for e in late] == ["A"]
    projection.deliver(late)
    assert projection.view("A")["by_source"] == {"shop": 2, "web": 1}


def test_a_split_moves_the_identifiers_and_what_their_events_contributed():
    projection = Projection()
    projection.feed("A", linked(100, "A", ("user_id", "u-1"), ("phone", "+49301234567")))
    projection.feed("A", event(1, 0, {"user_id": "u-1"}, "identify", "crm", first_name="Jo"))
    projection.feed("A", event(2, 5, {"phone": "+49301234567"}, "identify", "web", first_name="Kim"))
    projection.feed("A", event(3, 6, {"phone": "+49301234567"}, "ticket_opened", "helpdesk"))
    split = identity_record(
        104,
        "profile_split",
        profile_id="A",
        new_profile_id="Q",
        identifiers=[("phone", "+49301234567")],
        reason="shared phone",
        error=None,
    )
    projection.deliver(projection.feed("A", split))
    a, q = projection.view("A"), projection.view("Q")
    assert a["identifiers"] == {"user_id": ["u-1"]} and q["identifiers"] == {"phone": ["+49301234567"]}
    assert (a["events"], a["traits"]["first_name"]["value"]) == (1, "Jo")
    assert (q["events"], q["traits"]["first_name"]["value"]) == (2, "Kim")
    assert q["by_type"] == {"identify": 1, "ticket_opened": 1}
    assert projection.stores["profiles"]["Q"]["keys"] == ["A", "Q"]


def test_a_hand_over_that_races_a_split_follows_the_moved_identifiers():
    """B merges into A, then A is split moving B's identifiers on, and only then B's state reaches A."""
    projection = Projection()
    projection.feed("A", linked(100, "A", ("user_id", "u-1")))
    projection.feed("B", linked(102, "B", ("email", "kim@example.com")))
    projection.feed("B", event(1, 0, {"email": "kim@example.com"}, "ticket_opened", "helpdesk"))
    handover = projection.feed(
        "B",
        identity_record(
            104,
            "profiles_merged",
            profile_id="A",
            merged_profile_id="B",
            identifiers=[("email", "kim@example.com")],
        ),
    )
    split = identity_record(
        106,
        "profile_split",
        profile_id="A",
        new_profile_id="Q",
        identifiers=[("email", "kim@example.com")],
        reason=None,
        error=None,
    )
    projection.deliver(projection.feed("A", split))  # the split overtakes the hand-over
    projection.deliver(handover)
    assert projection.view("A")["identifiers"] == {"user_id": ["u-1"]}
    assert projection.view("A")["events"] == 0
    q = projection.view("Q")
    assert q["identifiers"] == {"email": ["kim@example.com"]} and q["by_type"] == {"ticket_opened": 1}


# -- order independence ------------------------------------------------------------------------
SOURCES = ("crm", "shop", "web", "helpdesk", "partner")
ANCHORS = ({"user_id": "u-1"}, {"email": "jo@example.com"}, {"anonymous_id": "anon-1"})


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 25))
    records = []
    for n in range(count):
        kind = draw(st.sampled_from(["identify", "consent_changed", "page_viewed", "email_unsubscribed"]))
        extra: dict[str, Any] = {}
        if kind == "identify":
            extra = {
                "first_name": draw(st.sampled_from(["Jo", "Johanna", None])),
                "city": draw(st.sampled_from(["Berlin", "Munich"])),
            }
        elif kind == "consent_changed":
            extra = {"granted": draw(st.booleans()), "channel": draw(st.sampled_from(["email", "sms"]))}
        minute = draw(st.integers(0, 8))  # few distinct times: ties must be broken deterministically too
        records.append(
            event(n, minute, draw(st.sampled_from(ANCHORS)), kind, draw(st.sampled_from(SOURCES)), **extra)
        )
    return records


@settings(max_examples=60, deadline=None)
@given(histories(), st.randoms(use_true_random=False), st.integers(1, 4))
def test_folding_in_any_order_and_any_grouping_gives_the_same_profile(
    records, rng: random.Random, groups: int
):
    identity_plan = ProfileProcessor().identity_plan
    reference = new_profile("P")
    for record in records:
        anchor = anchor_of(record["envelope"]["identifiers"], identity_plan)
        fold_event(reference["parts"].setdefault(anchor, new_part()), record, PLAN)
    shuffled = list(records)
    rng.shuffle(shuffled)
    pieces = [new_profile("P") for _ in range(groups)]
    for i, record in enumerate(shuffled):
        anchor = anchor_of(record["envelope"]["identifiers"], identity_plan)
        fold_event(pieces[i % groups]["parts"].setdefault(anchor, new_part()), record, PLAN)
    merged = new_profile("P")
    for piece in rng.sample(pieces, len(pieces)):
        merge_profile(merged, orjson.loads(orjson.dumps(piece)), PLAN)
    assert summary("P", merged, PLAN) == summary("P", reference, PLAN)


# -- rules -------------------------------------------------------------------------------------
def test_custom_rules_change_which_source_wins(tmp_path: Path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        textwrap.dedent(
            """\
            source_priority: [web, crm]
            default_strategy: priority
            traits:
              identify: {first_name: payload.first_name, city: payload.city}
            """
        )
    )
    projection = Projection(ProfileProcessor(load_profile_rules(rules)))
    projection.feed(
        "P", event(1, 50, {"user_id": "u-1"}, "identify", "crm", first_name="Johanna", city="Berlin")
    )
    projection.feed("P", event(2, 10, {"user_id": "u-1"}, "identify", "web", first_name="Jo", city="Munich"))
    view = summary("P", projection.stores["profiles"]["P"], load_profile_rules(rules).plan)
    assert {name: entry["value"] for name, entry in view["traits"].items()} == {
        "first_name": "Jo",
        "city": "Munich",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "traits: {identify: {first: payload.frist_name}}",
            "identify has no field 'frist_name' (did you mean 'payload.first_name'?)",
        ),
        ("traits: {identfy: {a: payload.x}}", "unknown event type 'identfy' (did you mean 'identify'?)"),
        ("traits: {identify: {a: first_name}}", "must start with 'payload.' or 'envelope.'"),
        ("default_strategy: newest", "profile rules key 'default_strategy'"),
        ("source_priority: [web, web]", "web listed more than once"),
        ("- just a list", "must be a YAML mapping"),
    ],
)
def test_rule_mistakes_are_named_with_file_and_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(PatronError) as error:
        load_profile_rules(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)
