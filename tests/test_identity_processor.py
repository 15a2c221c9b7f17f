"""The identity and profile processors on the real embedded runner over a real SQLite log.

Events are validated (normalised like ingestion), encoded with the real codec, appended to a
``LocalLog`` and processed by ``LocalRunner`` with ``default_processors()``; every assertion reads
back what the runner committed: the state table, ``patron.identity`` and ``patron.profile-events``.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_profiles import PLAN, event, micros

from patron.config import Settings
from patron.events.codec import open_codec
from patron.identity.events import identity_event_id
from patron.identity.processor import split_request
from patron.projections.profiles import summary
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner
from patron.streams.log import EVENTS_TOPIC, scan
from patron.streams.state import read_store
from patron.streams.topology import IDENTITY_TOPIC, PROFILE_EVENTS_TOPIC, default_processors

ANON, USER, SHOP, CRM = "anon-7f3a", "u-1001", "9001", "C-42"
PHONE = "+49301234567"


def scenario() -> list[dict[str, Any]]:
    """One person, five sources, five ways of naming her (the issue's scenario)."""
    return [
        event(1, 0, {"anonymous_id": ANON}, "page_viewed", "web", context={"locale": "de-DE"}),
        event(2, 3, {"anonymous_id": ANON}, "page_viewed", "web"),
        event(3, 5, {"anonymous_id": ANON, "user_id": USER}, "logged_in", "web"),
        event(4, 6, {"user_id": USER, "email": "jo.doe@example.com"}, "identify", "web", first_name="Jo"),
        event(5, 2, {"external_ids": {"shop_customer_id": SHOP}, "email": " Jo.Doe@Example.COM "},
              "order_completed", "shop"),
        event(6, 40, {"email": "JO.DOE@example.com  ", "phone": "030 1234567"}, "ticket_opened", "helpdesk"),
        event(7, 50, {"external_ids": {"crm_id": CRM}, "phone": "+49 30 1234567"}, "identify", "crm",
              first_name="Johanna", last_name="Doe", city="Berlin"),
        event(8, 60, {"user_id": USER}, "consent_changed", "web"),
        event(9, 70, {"email": "jo.doe@example.com"}, "email_unsubscribed", "email"),
    ]  # fmt: skip


class Pipeline:
    """A data directory with a log, a codec and the default topology on the embedded runner."""

    def __init__(self, data_dir: Path):
        self.log = LocalLog(data_dir)
        self.codec = open_codec(Settings.load(data_dir=data_dir))
        self.runner = LocalRunner(self.log, self.codec, default_processors())

    def append(self, events: list[dict[str, Any]]) -> None:
        self.log.append(EVENTS_TOPIC, [self.codec.message(e) for e in events])

    def run(self, batch_size: int = 500) -> dict[str, Any]:
        return self.runner.run(batch_size=batch_size)

    def topic(self, topic: str) -> list[dict[str, Any]]:
        return [self.codec.decode(record.value) for record in scan(self.log, topic)]

    def store(self, processor: str, store: str) -> dict[str, Any]:
        return read_store(self.log, processor, store)

    def live_profiles(self) -> dict[str, dict[str, Any]]:
        return {
            key: summary(key, value, PLAN)
            for key, value in self.store("profiles", "profiles").items()
            if "merged_into" not in value
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the processors committed: state rows and every record of the derived topics."""
        rows = self.log.db.execute("SELECT store, key, value FROM state ORDER BY store, key").fetchall()
        topics = {
            topic: [(r.partition, r.offset, r.key, r.event_id, r.value) for r in scan(self.log, topic)]
            for topic in (IDENTITY_TOPIC, PROFILE_EVENTS_TOPIC)
        }
        return {"state": rows, "topics": topics}


@pytest.fixture
def pipeline(data_dir: Path) -> Pipeline:
    return Pipeline(data_dir)


def types_of(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["envelope"]["event_type"] for e in events)


def test_one_person_across_five_sources_becomes_one_profile(pipeline: Pipeline):
    pipeline.append(scenario())
    pipeline.run(batch_size=3)
    (profile,) = pipeline.live_profiles().values()
    assert profile["identifiers"] == {
        "anonymous_id": [ANON],
        "email": ["jo.doe@example.com"],
        "external:crm_id": [CRM],
        "external:shop_customer_id": [SHOP],
        "phone": [PHONE],
        "user_id": [USER],
    }
    traits = {name: (entry["value"], entry["source"]) for name, entry in profile["traits"].items()}
    assert traits == {
        "first_name": ("Johanna", "crm"),
        "last_name": ("Doe", "crm"),
        "city": ("Berlin", "crm"),
        "locale": ("de-DE", "web"),
    }
    assert (profile["first_seen"], profile["last_seen"], profile["events"]) == (micros(0), micros(70), 9)
    assert profile["by_source"] == {"crm": 1, "email": 1, "helpdesk": 1, "shop": 1, "web": 5}
    assert profile["consent"]["marketing:email"]["granted"] is False
    assert profile["consent"]["marketing:email"]["at"] == micros(70)
    # the audit stream holds every decision: created twice (web visitor, shop customer), then merged
    audit = pipeline.topic(IDENTITY_TOPIC)
    assert types_of(audit) == {"identifier_linked": 5, "profiles_merged": 1}
    assert sum(1 for e in audit if e["payload"].get("created")) == 2
    # every source event reached the projection, unchanged, keyed by its profile
    forwarded = [
        e for e in pipeline.topic(PROFILE_EVENTS_TOPIC) if e["envelope"]["source"] != "patron.identity"
    ]
    source_ids = sorted(e["envelope"]["event_id"] for e in scenario())
    assert (
        sorted(e["envelope"]["event_id"] for e in forwarded if e["envelope"]["source"] != "patron.profiles")
        == source_ids
    )


def test_identity_state_is_stored_per_key_and_a_known_event_writes_nothing(pipeline: Pipeline):
    pipeline.append(scenario())
    pipeline.run()
    assert len(pipeline.store("identity", "identifiers")) == 6
    assert len(pipeline.store("identity", "profiles")) == 1  # the merged profile's key is gone
    before = pipeline.snapshot()["state"]
    pipeline.append([event(20, 80, {"user_id": USER, "anonymous_id": ANON}, "page_viewed", "web")])
    pipeline.run()
    after = pipeline.snapshot()["state"]
    changed = {(store, key) for store, key, value in set(after) ^ set(before)}
    assert {store for store, _ in changed} == {"profiles.profiles"}, (
        "a known visitor changes no identity state"
    )
    # a new link touches its own keys only: the new identifier and its profile
    pipeline.append([event(21, 90, {"user_id": USER, "device_id": "dev-1"}, "page_viewed", "web")])
    pipeline.run()
    identity_changes = {
        (store, bytes(key).decode())
        for store, key, value in set(pipeline.snapshot()["state"]) ^ set(after)
        if store.startswith("identity.")
    }
    (profile_id,) = pipeline.live_profiles()
    assert identity_changes == {
        ("identity.identifiers", "device_id:dev-1"),
        ("identity.profiles", profile_id),
    }


def test_blocklisted_values_are_reported_once_and_limits_refuse_a_second_user_id(pipeline: Pipeline):
    pipeline.append(
        [
            event(1, 0, {"user_id": "null", "email": "test@test.com"}, "page_viewed", "web"),
            event(2, 1, {"user_id": "NULL"}, "page_viewed", "web"),
            event(5, 1, {"user_id": "null"}, "page_viewed", "web"),
            event(3, 2, {"user_id": "u-1", "email": "shared@example.com"}, "identify", "web"),
            event(4, 3, {"user_id": "u-2", "email": "shared@example.com"}, "identify", "web"),
        ]
    )
    pipeline.run()
    audit = pipeline.topic(IDENTITY_TOPIC)
    blocked = Counter(
        (item["kind"], item["value"])
        for e in audit
        if e["envelope"]["event_type"] == "identifier_blocked"
        for item in e["payload"]["identifiers"]
    )
    # each blocked value once, however often it is sent ("null" twice here)
    assert blocked == {("user_id", "null"): 1, ("email", "test@test.com"): 1, ("user_id", "NULL"): 1}
    (refused,) = [e["payload"] for e in audit if e["envelope"]["event_type"] == "merge_refused"]
    assert refused["identifiers"] == [{"kind": "email", "value": "shared@example.com"}]
    assert "user_id" in refused["reason"] and "limit 1" in refused["reason"]
    profiles = pipeline.live_profiles().values()
    assert sorted(p["identifiers"].get("user_id", [""])[0] for p in profiles) == ["u-1", "u-2"]
    # events with nothing but blocked identifiers belong to no profile
    assert sum(p["events"] for p in profiles) == 2


def split_off_shop(pipeline: Pipeline, identifier: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    (profile_id,) = pipeline.live_profiles()
    request = split_request(
        profile_id, identifier, "two people share one shop account", at=datetime(2024, 6, 1, tzinfo=UTC)
    )
    pipeline.append([request])
    pipeline.run()
    return profile_id, request


def test_an_operator_split_applies_and_survives_a_replay(pipeline: Pipeline):
    pipeline.append(scenario())
    pipeline.run()
    profile_id, request = split_off_shop(pipeline, ("external:shop_customer_id", SHOP))
    profiles = pipeline.live_profiles()
    assert len(profiles) == 2
    new_id = next(key for key in profiles if key != profile_id)
    # the shop customer's merge group moves (shop id + the email it brought), and its order with it
    assert profiles[new_id]["identifiers"] == {
        "email": ["jo.doe@example.com"],
        "external:shop_customer_id": [SHOP],
    }
    assert profiles[new_id]["by_type"] == {"email_unsubscribed": 1, "order_completed": 1, "ticket_opened": 1}
    assert profiles[profile_id]["events"] + profiles[new_id]["events"] == 9
    (outcome,) = [e for e in pipeline.topic(IDENTITY_TOPIC) if e["envelope"]["event_type"] == "profile_split"]
    assert outcome["envelope"]["event_id"] == identity_event_id(
        request["envelope"]["event_id"], "profile_split", 0
    )
    assert outcome["payload"]["new_profile_id"] == new_id and outcome["payload"]["error"] is None
    # a later event carrying both sides' identifiers is not re-merged
    pipeline.append(
        [event(30, 24 * 60 * 40, {"user_id": USER, "email": "jo.doe@example.com"}, "page_viewed", "web")]
    )
    pipeline.run()
    assert len(pipeline.live_profiles()) == 2
    incremental = pipeline.snapshot()
    pipeline.runner.reset()
    pipeline.run()
    assert pipeline.snapshot() == incremental


def test_a_split_the_graph_cannot_apply_is_reported_not_dropped(pipeline: Pipeline):
    pipeline.append(scenario())
    pipeline.run()
    (profile_id,) = pipeline.live_profiles()
    pipeline.append(
        [
            split_request(
                profile_id, ("email", "nobody@example.com"), None, at=datetime(2024, 6, 1, tzinfo=UTC)
            )
        ]
    )
    pipeline.run()
    (outcome,) = [
        e["payload"] for e in pipeline.topic(IDENTITY_TOPIC) if e["envelope"]["event_type"] == "profile_split"
    ]
    assert outcome["new_profile_id"] is None
    assert f"profile {profile_id} holds no email with that value" in outcome["error"]
    assert len(pipeline.live_profiles()) == 1


def test_replay_from_scratch_equals_the_incremental_result(pipeline: Pipeline, data_dir: Path):
    events = sorted(scenario(), key=lambda e: e["envelope"]["occurred_at"])
    for start in range(0, len(events), 2):  # ingested and processed in five rounds, as data arrives
        pipeline.append(events[start : start + 2])
        pipeline.run(batch_size=1)
    incremental = pipeline.snapshot()
    pipeline.runner.reset()
    replay = Pipeline(data_dir)
    stats = replay.run(batch_size=7)
    # every re-emission was already in the log: same events, same deterministic ids
    assert (stats["identity"].emitted, stats["profiles"].emitted) == (0, 0)
    emitted = len(incremental["topics"][IDENTITY_TOPIC]) + len(incremental["topics"][PROFILE_EVENTS_TOPIC])
    assert stats["identity"].duplicates + stats["profiles"].duplicates == emitted
    assert replay.snapshot() == incremental


def test_state_rows_are_json_per_key(pipeline: Pipeline):
    """The graph is many small rows, not one blob: the largest row stays small as profiles grow."""
    pipeline.append(
        [
            event(n, n, {"user_id": f"u-{n}", "email": f"p{n}@example.com"}, "identify", "web")
            for n in range(300)
        ]
    )
    pipeline.run()
    db = sqlite3.connect(pipeline.log.path)
    rows, largest = db.execute(
        "SELECT count(*), max(length(value)) FROM state WHERE store LIKE 'identity.%'"
    ).fetchone()
    assert rows == 300 * 2 + 300  # two identifiers and one profile per person
    assert largest < 400
