"""``patron dlq list|show|replay``: rejected records are visible, inspectable and replayable once fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from test_ingest import cli, ingest, patron, stored_events, stored_letters, write

from patron.config import Settings
from patron.connectors.deadletter import DeadLetter, DeadLetterStore, ReplayFailure, Resolution
from patron.connectors.pipeline import Ingestor
from patron.connectors.replay import replay_letters
from patron.connectors.segment import message_event_id
from patron.events.codec import open_codec
from patron.streams.local_log import LocalLog

ORDERS_CSV = """\
order_id,ordered_at,email,total
O-1,17.05.2024 09:30,ann@example.com,19.90
O-2,18.05.2024 14:05,bo@example.com,5.00
O-3,19.05.2024 08:00,cy@example.com,abc
"""
ORDERS_MAPPING = """\
source: shop
timezone: Europe/Berlin
event_type: order_completed
event_id: [order_id]
fields:
  occurred_at: {column: ordered_at, type: timestamp, format: "%d.%m.%Y %H:%M"}
  identifiers.email: email
  payload.order_id: order_id
  payload.revenue: {column: total, type: float}
constants: {payload.currency: EUR}
"""


def pending(data_dir: Path, *extra: str) -> list[dict]:
    code, out, _ = cli(data_dir, "dlq", "list", "--json", *extra)
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_ingest_with_a_broken_mapping_fix_it_replay_and_every_letter_resolves_once(tmp_path, data_dir):
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text(ORDERS_CSV, encoding="utf-8")
    mapping = write(tmp_path / "orders.yaml", ORDERS_MAPPING.replace("%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M"))
    first = patron(data_dir, "ingest", str(csv_path), "--mapping", str(mapping), "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["totals"]["rejected"] == 3
    assert stored_events(data_dir) == []

    letters = pending(data_dir)
    assert [letter["location"] for letter in letters] == [f"orders.csv:line {n}" for n in (2, 3, 4)]
    assert letters[0]["reason"] == (
        "column 'ordered_at' (occurred_at): '17.05.2024 09:30' does not match the timestamp format '%Y-%m-%d %H:%M'"
    )
    shown = patron(data_dir, "dlq", "show", letters[0]["id"][:8], env={"COLUMNS": "300"})  # long paths
    assert shown.returncode == 0, shown.stderr
    assert "O-1,17.05.2024 09:30,ann@example.com,19.90" in shown.stdout  # the raw row
    assert "does not match the timestamp format" in shown.stdout
    assert str(mapping.resolve()) in shown.stdout  # the details replay will use

    write(mapping, ORDERS_MAPPING)  # the fix: the right timestamp format, in the same file
    replayed = patron(data_dir, "dlq", "replay")
    assert replayed.returncode == 3  # O-3's revenue is still not a number
    assert "2 resolved, 1 still failing." in replayed.stdout
    assert replayed.stderr.strip().startswith("error: 1 dead letter(s) still fail")
    [still] = pending(data_dir)
    assert still["location"] == "orders.csv:line 4"
    assert still["reason"] == "column 'total' (payload.revenue): 'abc' is not a number"  # the new reason

    lenient = write(
        tmp_path / "lenient.yaml", ORDERS_MAPPING.replace("type: float}", "type: float, map: {abc: 0}}")
    )
    code, out, _ = cli(data_dir, "dlq", "replay", still["id"][:8], "--mapping", str(lenient))
    assert code == 0 and "1 resolved, 0 still failing." in out
    assert pending(data_dir) == []

    events = stored_events(data_dir)
    assert sorted(e["payload"]["order_id"] for e in events) == ["O-1", "O-2", "O-3"]
    assert events[0]["envelope"]["source"] == "shop"
    resolved = pending(data_dir, "--all")
    assert {r["status"] for r in resolved} == {"resolved"}
    assert sorted(i for r in resolved for i in r["event_ids"]) == sorted(
        e["envelope"]["event_id"] for e in events
    )

    code, out, _ = cli(data_dir, "dlq", "replay")
    assert (code, out.strip()) == (0, "No pending dead letters to replay.")
    again = ingest(data_dir, csv_path, lenient)
    assert (again.stats.accepted, again.stats.duplicates) == (0, 3)  # replayed events have the same ids
    assert len(stored_events(data_dir)) == 3


def test_list_filters_by_source_and_limits_and_show_reports_unknown_ids(tmp_path, data_dir):
    for source in ("shop", "pos"):
        path = tmp_path / f"{source}.jsonl"
        path.write_bytes(b"not json\n[1]\n{}\n")
        ingest(data_dir, path, write(tmp_path / f"{source}.yaml", ORDERS_MAPPING.replace("shop", source)))
    assert len(pending(data_dir)) == 6
    assert {letter["source"] for letter in pending(data_dir, "--source", "pos")} == {"pos"}
    assert len(pending(data_dir, "--limit", "2")) == 2
    code, out, _ = cli(data_dir, "dlq", "list", "--limit", "2")
    assert code == 0 and "Showing 2 of 6; use --limit to see more." in out
    code, _, error = cli(data_dir, "dlq", "show", "ffffffff")
    assert (code, error) == (2, "no dead letter has id 'ffffffff'; `patron dlq list --all` shows them")


def test_records_that_cannot_be_parsed_stay_pending_after_a_replay(tmp_path, data_dir):
    path = tmp_path / "shop.jsonl"
    path.write_bytes(b'{"order_id": "O-9", "ordered_at": \n')
    ingest(data_dir, path, write(tmp_path / "shop.yaml", ORDERS_MAPPING))
    code, out, _ = cli(data_dir, "dlq", "replay", "--source", "shop")
    assert code == 3 and "still failing: not valid JSON" in out
    [letter] = pending(data_dir)
    assert letter["reason"].startswith("not valid JSON")


def collector_letters(data_dir: Path, messages: list[dict]) -> None:
    """File letters exactly as the HTTP collector does: connector "segment", the raw message JSON."""
    log = LocalLog(data_dir)
    try:
        ingestor = Ingestor(
            log, open_codec(Settings.load(data_dir=data_dir)), source="web", connector="segment"
        )
        for index, message in enumerate(messages):
            ingestor.reject(
                orjson.dumps(message), f"POST /v1/batch #{index}", "refused before a fix", {"index": index}
            )
        ingestor.flush()
    finally:
        log.close()


def test_collector_letters_replay_through_the_segment_mapping(data_dir):
    good = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "msg-1",
        "userId": "u-1",
        "timestamp": "2024-05-01T10:00:00Z",
        "properties": {"order_id": "O-1", "revenue": 10.5, "currency": "EUR"},
    }
    anonymous = {"type": "page", "messageId": "msg-2", "timestamp": "2024-05-01T10:00:00Z"}
    collector_letters(data_dir, [good, anonymous])
    log = LocalLog(data_dir)
    try:
        outcomes = replay_letters(
            list(DeadLetterStore(log)), log=log, codec=open_codec(Settings.load(data_dir=data_dir))
        )
    finally:
        log.close()
    assert [o.resolved for o in outcomes] == [True, False]
    assert outcomes[1].reason.startswith("userId or anonymousId is required")
    [event] = stored_events(data_dir)
    assert event["envelope"]["event_id"] == message_event_id(good, "web")
    assert event["envelope"]["event_type"] == "order_completed"
    assert outcomes[0].event_ids == [event["envelope"]["event_id"]]
    [left] = pending(data_dir)
    assert left["location"] == "POST /v1/batch #1" and left["reason"] == outcomes[1].reason


def test_letters_of_a_connector_that_is_not_installed_stay_pending_with_the_reason(data_dir):
    log = LocalLog(data_dir)
    try:
        DeadLetterStore(log).add([DeadLetter("erp", "sap-export", "dump.xml:record 3", "bad", b"<x/>")])
        [outcome] = replay_letters(
            list(DeadLetterStore(log)), log=log, codec=open_codec(Settings.load(data_dir=data_dir))
        )
    finally:
        log.close()
    assert not outcome.resolved
    assert outcome.reason.startswith("unknown connector 'sap-export'; installed: ")
    assert pending(data_dir)[0]["reason"] == outcome.reason


def test_the_store_folds_resolutions_and_the_latest_failure_append_only(data_dir):
    log = LocalLog(data_dir)
    try:
        store = DeadLetterStore(log)
        one, two = (
            DeadLetter("s", "file", "a:line 1", "first", b"1"),
            DeadLetter("s", "file", "a:line 2", "x", b"2"),
        )
        assert store.add([one, two, one]) == 2
        t0 = datetime(2024, 5, 1, tzinfo=UTC)
        store.record(
            [ReplayFailure(two.id, "s", "older", t0), ReplayFailure(two.id, "s", "newest", t0 + timedelta(1))]
        )
        assert store.record([Resolution(one.id, "s", ("e-1",))]) == 1
        assert store.record([Resolution(one.id, "s", ("e-1",))]) == 0  # resolving again adds nothing
        statuses = {status.letter.id: status for status in store.statuses()}
        assert [letter.id for letter in store] == [one.id, two.id]  # iteration still yields letters only
    finally:
        log.close()
    assert not statuses[one.id].pending and statuses[one.id].resolution.event_ids == ("e-1",)
    assert statuses[two.id].pending and statuses[two.id].reason == "newest"
    assert [letter.location for letter in stored_letters(data_dir)] == ["a:line 1", "a:line 2"]
