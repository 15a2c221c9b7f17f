"""``profile_scored`` events and the ``segment_membership`` table, as ``patron snapshot`` writes them.

A data directory is built the way a user builds it (generate, ingest, run; the ``committed`` fixture
of test_snapshot.py) and copied per test. Snapshots are real, the events are read back from the real
embedded log through the real codec, and the expected scores are computed here from the snapshot's
own Parquet tables, so a rounding or join mistake in the vectorised diff shows up as a difference.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import test_snapshot
from test_ingest import cli

from patron.config import Settings
from patron.events.codec import open_codec
from patron.events.models import validate_event
from patron.projections import snapshot as snapshots
from patron.projections.changes import score_id
from patron.projections.segments.membership import MEMBERSHIP_SCHEMA, membership_rows
from patron.streams.backends import open_log
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, Message, scan
from patron.streams.state import SqliteStore, read_store
from patron.streams.topology import PROFILE_EVENTS_TOPIC

FIELDS = (
    "rfm_segment", "rfm_r", "rfm_f", "rfm_m", "health_score", "health_status", "clv", "p_alive", "lifecycle_stage"
)  # fmt: skip


committed = test_snapshot.committed
"""The module's data directory after generate, ingest and run (80 customers, 2026-01-01 to 03-31)."""


@pytest.fixture
def data(committed: Path, tmp_path: Path) -> Path:
    """A copy of ``committed`` that the test owns."""
    return Path(shutil.copytree(committed, tmp_path / "data"))


def scored_events(data_dir: Path) -> list[dict[str, Any]]:
    """The ``profile_scored`` records on ``patron.profile-events``, with their routing key."""
    log = LocalLog(data_dir)
    try:
        codec = open_codec(Settings.load(data_dir=data_dir))
        found = []
        for record in scan(log, PROFILE_EVENTS_TOPIC):
            event = codec.decode(record.value)
            if event["envelope"]["event_type"] == "profile_scored":
                found.append({**event, "key": record.key.decode()})
        return found
    finally:
        log.close()


def sent_after(data_dir: Path, before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``profile_scored`` records appended since ``before`` was read (the log is read partition
    by partition, so new records are not simply at the end)."""
    seen = {event["envelope"]["event_id"] for event in before}
    return [event for event in scored_events(data_dir) if event["envelope"]["event_id"] not in seen]


def raw_scores(directory: Path) -> dict[str, dict[str, Any]]:
    """Per profile, the unrounded scores of a snapshot read with plain pyarrow (None where absent)."""
    scores: dict[str, dict[str, Any]] = {}

    def put(table: str, columns: dict[str, str]) -> None:
        for row in pq.read_table(directory / f"{table}.parquet").to_pylist():
            entry = scores.setdefault(row["profile_id"], dict.fromkeys(FIELDS))
            entry.update({field: row[column] for field, column in columns.items()})

    put("rfm", {"rfm_segment": "segment", "rfm_r": "r_score", "rfm_f": "f_score", "rfm_m": "m_score"})
    put("health", {"health_score": "score", "health_status": "status"})
    put("clv", {"clv": "clv_365d", "p_alive": "p_alive"})
    put("lifecycle", {"lifecycle_stage": "stage"})
    return {p: s for p, s in scores.items() if any(v is not None for v in s.values())}


def shown(raw: dict[str, Any]) -> dict[str, Any]:
    """Scores as the event shows them: health to 1 decimal, CLV to whole units, p_alive to 2."""
    rounded = dict(raw)
    for field, digits in (("health_score", 1), ("clv", 0), ("p_alive", 2)):
        if raw[field] is not None:
            rounded[field] = math.floor(raw[field] * 10**digits + 0.5) / 10**digits
    return rounded


def assert_shows(payload: dict[str, Any], raw: dict[str, Any]) -> None:
    """``payload`` carries ``raw`` rounded: exact for text and quintiles, within half a unit of the last
    decimal for numbers, and no more decimals than promised."""
    expected = shown(raw)
    for field in FIELDS:
        got, want = payload[field], expected[field]
        if isinstance(want, float):
            digits = {"health_score": 1, "clv": 0, "p_alive": 2}[field]
            assert got == round(got, digits) and abs(got - raw[field]) <= 0.5 / 10**digits + 1e-9, field
        else:
            assert got == want, field


def away_from_midnight(margin_s: float = 180.0) -> None:
    """Wait past 00:00 UTC when it is near: scores depend on the as-of day, so two snapshots meant to
    see the same scores must be taken on one day."""
    now = datetime.now(UTC)
    left = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if left < margin_s:
        time.sleep(left + 1)


def take(data_dir: Path, *args: str) -> Path:
    code, out, error = cli(data_dir, "snapshot", *args)
    assert code == 0, error
    assert "score events appended" in out
    return (
        data_dir
        / "snapshots"
        / orjson.loads((data_dir / "snapshots" / "manifest.json").read_bytes())["current"]
    )


def meta(directory: Path) -> dict[str, Any]:
    return snapshots.read_meta(directory)


def test_the_first_snapshot_scores_every_profile_and_the_profiles_stage_keeps_them(data: Path) -> None:
    away_from_midnight()
    first = take(data)
    events = scored_events(data)
    expected = raw_scores(first)
    assert len(expected) > 50
    assert meta(first)["score_events_appended"] == len(events) == len(expected)
    assert sorted(e["payload"]["profile_id"] for e in events) == sorted(expected)  # one each
    as_of = datetime.fromisoformat(meta(first)["as_of"])
    for event in events:
        payload, envelope = event["payload"], event["envelope"]
        assert event["key"] == payload["profile_id"]
        assert payload["as_of"] == envelope["occurred_at"] == envelope["received_at"] == as_of
        assert envelope["source"] == "patron.projections"
        assert envelope["event_id"] == score_id(payload["profile_id"], as_of.isoformat())
        assert_shows(payload, expected[payload["profile_id"]])
    # the profiles stage folds them: each profile now holds its scores
    code, _, error = cli(data, "run")
    assert code == 0, error
    log = LocalLog(data)
    try:
        profiles = read_store(log, "profiles", "profiles")
    finally:
        log.close()
    for event in events:
        payload = event["payload"]
        held = profiles[payload["profile_id"]]["scores"]
        assert {f: held[f] for f in FIELDS} == {f: payload[f] for f in FIELDS}
    # nothing changed: the next snapshot sends nothing
    second = take(data)
    assert meta(second)["score_events_appended"] == 0
    assert len(scored_events(data)) == len(events)


def buy_now(data_dir: Path, profile_id: str) -> None:
    """A large order, now, by the customer of ``profile_id`` (found by one of its identifiers),
    ingested into ``patron.events`` and folded by ``patron run``."""
    identities = pq.read_table(next((data_dir / "snapshots").glob("*/identities.parquet"))).to_pylist()
    kind, value = next((i["kind"], i["value"]) for i in identities if i["profile_id"] == profile_id)
    now = datetime.now(UTC)
    order = validate_event(
        {
            "envelope": {
                "event_id": str(uuid.uuid4()),
                "event_type": "order_completed",
                "occurred_at": now,
                "received_at": now,
                "source": "shop",
                "identifiers": {kind: value},
                "context": {},
            },
            "payload": {"order_id": "O-score-test", "revenue": 5000.0, "currency": "EUR", "items": []},
        }
    )
    log = LocalLog(data_dir)
    try:
        codec = open_codec(Settings.load(data_dir=data_dir))
        assert log.append(EVENTS_TOPIC, [codec.message(order)]).appended == 1
    finally:
        log.close()
    code, _, error = cli(data_dir, "run")
    assert code == 0, error


def test_an_order_sends_the_scores_that_changed_and_only_those(data: Path) -> None:
    away_from_midnight()
    first = take(data)
    before = {p: shown(s) for p, s in raw_scores(first).items()}
    sent = scored_events(data)
    rfm = pq.read_table(first / "rfm.parquet").to_pylist()
    lapsed = min(rfm, key=lambda row: (row["r_score"], row["profile_id"]))["profile_id"]
    buy_now(data, lapsed)
    second = take(data)
    after = {p: shown(s) for p, s in raw_scores(second).items()}
    changed = sorted(p for p, s in after.items() if before.get(p) != s)
    assert lapsed in changed and len(changed) < len(after)
    assert after[lapsed]["rfm_r"] == 5 and before[lapsed]["rfm_r"] < 5
    events = sent_after(data, sent)
    assert sorted(e["payload"]["profile_id"] for e in events) == changed
    assert meta(second)["score_events_appended"] == len(changed)
    assert all(e["payload"]["as_of"] == datetime.fromisoformat(meta(second)["as_of"]) for e in events)


def test_a_rerun_appends_duplicates_only_and_a_look_back_sends_nothing(data: Path, monkeypatch) -> None:
    settings = Settings.load(data_dir=data)
    published = snapshots.publish

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snapshots, "publish", crash)  # the events are appended, the switch fails
    with pytest.raises(OSError, match="Input/output"):
        snapshots.take_snapshot(settings, as_of=date(2026, 3, 31))
    sent = scored_events(data)
    assert len(sent) > 50
    monkeypatch.setattr(snapshots, "publish", published)
    again = snapshots.take_snapshot(settings, as_of=date(2026, 3, 31))
    assert again.scores == 0 and meta(again.path)["score_events_appended"] == 0
    assert scored_events(data) == sent
    # an earlier day is a look back: it becomes current but sends no scores ...
    back = snapshots.take_snapshot(settings, as_of=date(2026, 2, 15))
    assert meta(back.path)["score_events_appended"] is None and scored_events(data) == sent
    # ... and a later snapshot compares with the scores last sent (March), not with February's
    later = snapshots.take_snapshot(settings, as_of=date(2026, 4, 1))
    march = {p: shown(s) for p, s in raw_scores(again.path).items()}
    april = {p: shown(s) for p, s in raw_scores(later.path).items()}
    changed = sorted(p for p, s in april.items() if march.get(p) != s)
    events = sent_after(data, sent)
    assert sorted(e["payload"]["profile_id"] for e in events) == changed
    assert later.scores == len(changed)


def test_segment_membership_is_the_segments_store_as_rows(data: Path) -> None:
    entered, exited = 1_770_000_000_000_000, 1_772_000_000_000_000
    states = {
        "p-hand-2": {"in": {"vip": {"v": 2, "since": exited}}, "history": [["vip", 1, entered, exited]]},
        "p-hand-1": {"in": {"lapsed": {"v": 1, "since": entered}, "big": {"v": 3, "since": exited}}},
        "p-hand-3": {"in": {}, "history": []},
    }
    log = LocalLog(data)
    try:
        store = SqliteStore(log, "profiles.segments")
        for profile_id, state in states.items():
            store[profile_id] = state
        with log.transaction() as tx:
            store.committed(store.flush(tx))
        held = read_store(log, "profiles", "segments")
    finally:
        log.close()
    directory = take(data)
    table = pq.read_table(directory / "segment_membership.parquet")
    assert table.schema == MEMBERSHIP_SCHEMA
    rows = table.to_pylist()
    assert rows == [row for p in sorted(held) for row in membership_rows(p, held[p])]
    hand = [r for r in rows if r["profile_id"].startswith("p-hand-")]
    assert [(r["profile_id"], r["segment"], r["version"], r["exited_at"]) for r in hand] == [
        ("p-hand-1", "lapsed", 1, None),
        ("p-hand-1", "big", 3, None),
        ("p-hand-2", "vip", 1, datetime.fromtimestamp(exited / 1e6, UTC)),
        ("p-hand-2", "vip", 2, None),
    ]
    code, out, error = cli(
        data, "sql", "SELECT count(*) AS n FROM segment_membership WHERE profile_id LIKE 'p-hand-%'",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, error
    assert orjson.loads(out) == [{"n": 4}]


def test_segment_membership_without_a_segments_store_is_empty(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log")
    try:
        table = snapshots.segment_membership(log, snapshots.DEFAULT_APP_ID)
    finally:
        log.close()
    assert table.num_rows == 0 and table.schema == MEMBERSHIP_SCHEMA


def test_segment_membership_on_kafka_reads_the_workers_changelog(
    tmp_path: Path, kafka_bootstrap: str, unique_topic
) -> None:
    """The ``segments`` table of a ``patron worker`` group, kept by faust as a changelog topic (JSON
    key and value, an empty value deletes), on a real broker."""
    app_id = unique_topic("membership-app")
    since = 1_770_000_000_000_000
    kept = {"in": {"vip": {"v": 1, "since": since}}, "history": [["lapsed", 2, since - 10, since]]}
    settings = Settings.load(data_dir=tmp_path, broker=f"kafka://{kafka_bootstrap}")
    log = open_log(settings)
    try:
        topic = f"{app_id}-profiles.segments-changelog"
        log.append(
            topic,
            [
                Message(b'"p-b"', "1", orjson.dumps(kept), 0),
                Message(b'"p-a"', "2", orjson.dumps({"in": {"gone": {"v": 1, "since": since}}}), 0),
                Message(b'"p-a"', "3", b"", 0),  # p-a's state deleted afterwards
            ],
        )
        assert snapshots.segment_membership(log, app_id).to_pylist() == membership_rows("p-b", kept)
        assert snapshots.segment_membership(log, unique_topic("no-such-app")).num_rows == 0
    finally:
        log.close()
