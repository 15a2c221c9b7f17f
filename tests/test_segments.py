"""Segments and triggers on the embedded runtime: events in, exact segment-change events out.

Every test runs the real pipeline (LocalLog in a temporary directory, the identity and profiles
stages on the LocalRunner, the Avro codec) with definitions written to real YAML files, and reads
what the stage appended to ``patron.segment-changes`` / ``patron.triggers`` back from the log.
"""

from __future__ import annotations

import itertools
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patron.config import Settings
from patron.errors import PatronError
from patron.events.codec import open_codec
from patron.events.models import validate_event
from patron.identity.processor import IdentityProcessor, merge_request
from patron.projections.profile_processor import ProfileProcessor
from patron.projections.segments.definitions import load_definitions
from patron.projections.segments.engine import transition_id
from patron.projections.segments.membership import membership_rows
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner
from patron.streams.log import EVENTS_TOPIC, scan
from patron.streams.state import read_store
from patron.streams.topology import PROFILE_EVENTS_TOPIC, derived_event

DAY1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ANA = {"user_id": "u-ana", "email": "ana@example.com"}
BEN = {"user_id": "u-ben", "email": "ben@example.com"}
_ids = itertools.count(1)

SEGMENTS = """
segments:
  - name: big-spenders
    description: 100 or more spent in the last 30 days
    where: {revenue.last_30d: {gte: 100}}
    include: [identifiers.email, revenue.last_30d]
    channels: [email, sms]
  - name: lapsed
    where:
      orders.total: {gt: 0}
      orders.last_at: {not_within_last: 30d}
    channels: [email]
"""


def event(at: datetime, event_type: str, identifiers: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=next(_ids))),
                "event_type": event_type,
                "occurred_at": at,
                "received_at": at,
                "source": "shop",
                "identifiers": identifiers,
                "context": {},
            },
            "payload": payload,
        }
    )


def order(at: datetime, who: dict[str, Any], revenue: float) -> dict[str, Any]:
    return event(
        at, "order_completed", who, order_id=f"O-{next(_ids)}", revenue=revenue, currency="EUR", items=[]
    )


def consent(at: datetime, who: dict[str, Any], channel: str, granted: bool) -> dict[str, Any]:
    return event(
        at, "consent_changed", who, purpose="marketing", channel=channel, granted=granted, method="form"
    )


class Pipeline:
    """A data directory with definitions, the identity and profiles stages on the embedded runner."""

    def __init__(self, data_dir: Path, definitions: str, built_ins: bool = False):
        self.dir = data_dir / "segments"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "defs.yaml").write_text(textwrap.dedent(definitions))
        self.log = LocalLog(data_dir)
        self.codec = open_codec(Settings.load(data_dir=data_dir))
        self.built_ins = built_ins
        self.runner = self._runner()

    def _runner(self) -> LocalRunner:
        definitions = load_definitions(self.dir, built_ins=self.built_ins)
        processors = [IdentityProcessor(), ProfileProcessor(definitions=definitions)]
        return LocalRunner(self.log, self.codec, processors)

    def redefine(self, definitions: str) -> None:
        (self.dir / "defs.yaml").write_text(textwrap.dedent(definitions))
        self.runner = self._runner()

    def feed(self, events: list[dict[str, Any]], clock: datetime | None = None) -> None:
        self.log.append(EVENTS_TOPIC, [self.codec.message(e) for e in events])
        self.run(clock or max(e["envelope"]["received_at"] for e in events))

    def run(self, clock: datetime) -> None:
        self.runner.run(clock=clock.timestamp)

    def changes(self, topic: str = SEGMENT_CHANGES_TOPIC) -> list[dict[str, Any]]:
        events = [self.codec.decode(record.value) for record in scan(self.log, topic)]
        return sorted(events, key=lambda e: (e["payload"]["evaluated_at"], e["envelope"]["event_id"]))

    def transitions(self, topic: str = SEGMENT_CHANGES_TOPIC) -> list[tuple[str, str, str]]:
        name = "segment" if topic == SEGMENT_CHANGES_TOPIC else "trigger"
        return [
            (e["envelope"]["event_type"], e["payload"]["profile_id"], e["payload"][name])
            for e in self.changes(topic)
        ]

    def profile_of(self, user_id: str) -> str:
        (found,) = [
            key
            for key, state in read_store(self.log, "profiles", "profiles").items()
            if "merged_into" not in state and user_id in state["ids"].get("user_id", [])
        ]
        return found


def test_an_order_enters_a_segment_once_with_reason_traits_and_consented_channels(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    pipeline.feed([consent(DAY1, ANA, "email", True), order(DAY1 + timedelta(minutes=5), ANA, 150.0)])
    ana = pipeline.profile_of("u-ana")
    assert pipeline.transitions() == [("segment_entered", ana, "big-spenders")]
    (entered,) = pipeline.changes()
    payload = entered["payload"]
    assert payload["reason"] == "revenue.last_30d >= 100 (is 150)"
    assert payload["traits"] == {"identifiers.email": '"ana@example.com"', "revenue.last_30d": "150.0"}
    assert payload["channels"] == ["email"]
    assert payload["suppressed"] == [{"channel": "sms", "reason": "no marketing consent for sms on record"}]
    assert payload["version"] == 1
    assert payload["evaluated_at"] == DAY1 + timedelta(minutes=5)
    assert entered["envelope"]["event_id"] == transition_id("segment_entered", ana, "big-spenders", 1)
    # a second order keeps her in: no event
    pipeline.feed([order(DAY1 + timedelta(days=1), ANA, 20.0)])
    assert len(pipeline.changes()) == 1


def test_time_alone_moves_a_profile_out_of_a_window_and_into_a_dormancy_segment(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    pipeline.feed([consent(DAY1, ANA, "email", True), order(DAY1, ANA, 150.0)])
    ana = pipeline.profile_of("u-ana")
    pipeline.run(DAY1 + timedelta(days=10))  # nothing flips yet
    assert pipeline.transitions() == [("segment_entered", ana, "big-spenders")]
    later = DAY1 + timedelta(days=31)
    pipeline.run(later)  # the runner ticks at start: the 30-day window moved on
    assert pipeline.transitions() == [
        ("segment_entered", ana, "big-spenders"),
        ("segment_exited", ana, "big-spenders"),
        ("segment_entered", ana, "lapsed"),
    ]
    exited, lapsed = pipeline.changes()[1:]
    assert exited["payload"]["reason"] == "revenue.last_30d >= 100 (is 0)"
    assert exited["payload"]["channels"] == ["email", "sms"]  # removal needs no consent
    assert exited["payload"]["evaluated_at"] == later
    assert lapsed["payload"]["reason"] == (
        "orders.total > 0 (is 1) and orders.last_at not within last 30d (is 2026-03-02T00:00:00Z)"
    )
    pipeline.run(later + timedelta(days=1))
    assert len(pipeline.changes()) == 3  # no flip pending: nothing new
    rows = membership_rows(ana, read_store(pipeline.log, "profiles", "segments")[ana])
    assert [(r["segment"], r["exited_at"]) for r in rows] == [("big-spenders", later), ("lapsed", None)]


def test_replay_from_scratch_appends_no_duplicate_transition(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    pipeline.feed([order(DAY1, ANA, 150.0), order(DAY1, BEN, 30.0)])
    pipeline.run(DAY1 + timedelta(days=40))
    before = pipeline.changes()
    assert len(before) == 4  # ana in and out of big-spenders, ana and ben lapsed
    pipeline.runner.reset()
    pipeline.run(DAY1 + timedelta(days=40))
    assert pipeline.changes() == before


def test_withdrawn_consent_suppresses_the_channel_with_the_reason(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    pipeline.feed(
        [
            consent(DAY1, ANA, "email", True),
            consent(DAY1 + timedelta(minutes=1), ANA, "email", False),
            consent(DAY1, ANA, "sms", True),
            order(DAY1 + timedelta(minutes=2), ANA, 150.0),
        ]
    )
    (entered,) = pipeline.changes()
    assert entered["payload"]["channels"] == ["sms"]
    assert entered["payload"]["suppressed"] == [
        {"channel": "email", "reason": "marketing consent for email withdrawn on 2026-03-02T09:01:00Z (form)"}
    ]


def test_changing_a_definition_emits_exactly_the_deltas(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    pipeline.feed([order(DAY1, ANA, 150.0), order(DAY1, BEN, 60.0)])
    ana, ben = pipeline.profile_of("u-ana"), pipeline.profile_of("u-ben")
    assert pipeline.transitions() == [("segment_entered", ana, "big-spenders")]
    pipeline.redefine(
        SEGMENTS.replace("{gte: 100}", "{gte: 50}").replace(
            "name: big-spenders", "name: big-spenders\n    version: 2"
        )
    )
    pipeline.run(DAY1 + timedelta(hours=1))
    assert pipeline.transitions()[1:] == [("segment_entered", ben, "big-spenders")]
    assert pipeline.changes()[1]["payload"]["version"] == 2
    pipeline.redefine("segments: []\n")
    pipeline.run(DAY1 + timedelta(hours=2))
    assert sorted(pipeline.transitions()[2:]) == sorted(
        [("segment_exited", ana, "big-spenders"), ("segment_exited", ben, "big-spenders")]
    )
    assert {e["payload"]["reason"] for e in pipeline.changes()[2:]} == {"segment removed"}


def test_a_merge_exits_the_absorbed_profile_and_evaluates_the_survivor(tmp_path: Path) -> None:
    pipeline = Pipeline(tmp_path, SEGMENTS)
    web = {"anonymous_id": "anon-7"}
    pipeline.feed([order(DAY1, ANA, 60.0), order(DAY1, web, 60.0)])
    assert pipeline.transitions() == []
    ana = pipeline.profile_of("u-ana")
    (anon,) = [
        k
        for k, s in read_store(pipeline.log, "profiles", "profiles").items()
        if "anon-7" in s["ids"].get("anonymous_id", [])
    ]
    request = merge_request(
        "test", (ana, anon), (("user_id", "u-ana"), ("anonymous_id", "anon-7")), at=DAY1 + timedelta(hours=1)
    )
    pipeline.feed([request])
    survivor = next(
        k for k, s in read_store(pipeline.log, "profiles", "profiles").items() if "merged_into" not in s
    )
    assert pipeline.transitions() == [("segment_entered", survivor, "big-spenders")]
    assert pipeline.changes()[0]["payload"]["reason"] == "revenue.last_30d >= 100 (is 120)"


def test_triggers_fire_on_entry_and_respect_the_frequency_cap(tmp_path: Path) -> None:
    triggers = """
    triggers:
      - name: big_order
        action: thank_you
        where: {orders.last_1d: {gt: 0}}
        channels: [email]
        cap: {max: 1, per: 7d}
    """
    pipeline = Pipeline(tmp_path, triggers)
    pipeline.feed([consent(DAY1, ANA, "email", True), order(DAY1, ANA, 10.0)])
    pipeline.feed([order(DAY1 + timedelta(days=2), ANA, 10.0)])  # window emptied on day 2, holds again
    pipeline.feed([order(DAY1 + timedelta(days=9), ANA, 10.0)])
    fired = pipeline.changes(TRIGGERS_TOPIC)
    assert [(e["payload"]["channels"], e["payload"]["suppressed"]) for e in fired] == [
        (["email"], []),
        ([], [{"channel": "email", "reason": "frequency cap 1 per 7d reached for email"}]),
        (["email"], []),
    ]
    assert {e["payload"]["action"] for e in fired} == {"thank_you"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "segments: [{name: x, where: {revnue.last_30d: {gt: 1}}}]",
            "unknown field 'revnue.last_30d'; did you mean 'revenue",
        ),
        (
            "segments: [{name: x, where: {rfm.segment: {gt: 1}}}]",
            "operator 'gt' does not apply to rfm.segment (a string field)",
        ),
        (
            "segments: [{name: x, where: {logins.last_at: {within_last: 30 days}}}]",
            "'30 days' is not a duration",
        ),
        ("segments: [{name: x, where: {all: []}}]", "where.all: takes a non-empty list"),
        ("segments: [{name: X Y, where: {orders.total: 1}}]", "key 'segments.0.name'"),
        ("segments: [{name: x, where: {orders.total: 1}, include: [nope]}]", "unknown field(s) nope"),
        (
            "segments: [{name: x, where: {orders.total: 1}}, {name: x, where: {orders.total: 2}}]",
            "already defined",
        ),
    ],
)
def test_invalid_definitions_fail_with_one_line_naming_file_and_place(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PatronError) as caught:
        load_definitions(tmp_path)
    assert message in str(caught.value)
    assert str(tmp_path / "bad.yaml") in str(caught.value)
    assert "\n" not in str(caught.value)


def scored(profile_id: str, as_of: datetime, segment: str, n: int) -> dict[str, Any]:
    """A ``profile_scored`` record as ``patron snapshot`` appends it."""
    return derived_event(
        str(uuid.UUID(int=10_000 + n)),
        "profile_scored",
        source="patron.projections",
        occurred_at=as_of,
        received_at=as_of,
        payload={
            "profile_id": profile_id,
            "as_of": as_of,
            "rfm_segment": segment,
            "rfm_r": 5,
            "rfm_f": 4,
            "rfm_m": 4,
            "health_score": 80.5,
            "health_status": "green",
            "clv": 900.0,
            "p_alive": 0.9,
            "lifecycle_stage": "loyal",
        },
    )


def test_scores_from_a_snapshot_move_profiles_between_score_segments(tmp_path: Path) -> None:
    definitions = """
    segments:
      - name: champions
        where: {rfm.segment: Champions}
        include: [clv.value, health.status]
      - name: buyers
        where: {orders.total: {gte: 1}}
    """
    pipeline = Pipeline(tmp_path, definitions)
    pipeline.feed([order(DAY1, ANA, 10.0)])
    ana = pipeline.profile_of("u-ana")
    assert pipeline.transitions() == [("segment_entered", ana, "buyers")]

    def score(as_of: datetime, segment: str, n: int) -> None:
        record = scored(ana, as_of, segment, n)
        pipeline.log.append(PROFILE_EVENTS_TOPIC, [pipeline.codec.message(record, key=ana.encode())])
        pipeline.run(as_of)

    score(DAY1 + timedelta(days=1), "Champions", 1)
    score(DAY1 + timedelta(days=1, hours=1), "Champions", 2)  # same segment again: no change
    score(DAY1 + timedelta(hours=12), "At Risk", 3)  # an older snapshot arriving late: ignored
    assert pipeline.transitions() == [
        ("segment_entered", ana, "buyers"),
        ("segment_entered", ana, "champions"),
    ]
    entered = pipeline.changes()[1]["payload"]
    assert entered["reason"] == "rfm.segment = 'Champions' (is 'Champions')"
    assert entered["traits"] == {"clv.value": "900.0", "health.status": '"green"'}
    score(DAY1 + timedelta(days=2), "Loyal", 4)
    assert pipeline.transitions()[-1] == ("segment_exited", ana, "champions")
    # scores of a profile the stage does not hold create nothing
    stranger = str(uuid.UUID(int=99))
    pipeline.log.append(
        PROFILE_EVENTS_TOPIC,
        [pipeline.codec.message(scored(stranger, DAY1, "Champions", 5), key=stranger.encode())],
    )
    pipeline.run(DAY1 + timedelta(days=3))
    assert stranger not in read_store(pipeline.log, "profiles", "profiles")
    assert len(pipeline.changes()) == 3
