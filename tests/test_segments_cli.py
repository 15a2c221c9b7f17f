"""``patron segments``: every command against a data directory built by the real pipeline.

Source events go into an embedded log, definitions into ``<data_dir>/segments``, and ``patron run``
(in process, through the typer app) evaluates them at the wall clock; the event times are relative
to now so windows have expired or not as the scenario says. Each command's output is checked
against what the stores and ``patron.segment-changes`` hold, read independently of the command.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ingest import cli
from test_segments import ANA, BEN, SEGMENTS, consent, order

from patron.config import Settings
from patron.events.codec import open_codec
from patron.projections.segments.definitions import load_definitions
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, Message, scan
from patron.streams.state import read_store

CARL = {"user_id": "u-carl", "email": "carl@example.com"}
EXTRA = """
triggers:
  - name: first_order
    action: welcome
    where: {orders.total: {gte: 1}}
    channels: [email]
  - name: nps_detractor
    enabled: false
    action: detractor_follow_up
    where: {nps.score: {lte: 6}}
"""
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ana ordered 150 forty days ago (entered big-spenders then, exited when the window moved on,
    lapsed now); Ben ordered 120 an hour ago (big-spender); Carl ordered 50 two days ago (neither)."""
    data_dir = tmp_path_factory.mktemp("segments-cli") / "data"
    (data_dir / "segments").mkdir(parents=True)
    (data_dir / "segments" / "defs.yaml").write_text(textwrap.dedent(SEGMENTS))
    (data_dir / "segments" / "extra.yaml").write_text(textwrap.dedent(EXTRA))
    old = NOW - timedelta(days=40)
    events = [
        consent(old, ANA, "email", True),
        order(old + timedelta(minutes=1), ANA, 150.0),
        order(NOW - timedelta(hours=1), BEN, 120.0),
        order(NOW - timedelta(days=2), CARL, 50.0),
    ]
    log = LocalLog(data_dir)
    codec = open_codec(Settings.load(data_dir=data_dir))
    log.append(EVENTS_TOPIC, [codec.message(e) for e in events])
    log.close()
    code, _, error = cli(data_dir, "run")
    assert code == 0, error
    return data_dir


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as their content: a row is one line, which the assertions split on."""
    monkeypatch.setenv("COLUMNS", "250")


def ok(data_dir: Path, *args: str) -> str:
    code, out, error = cli(data_dir, "segments", *args)
    assert code == 0, error
    return out


def stores(data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    log = LocalLog(data_dir)
    try:
        return read_store(log, "profiles", "profiles"), read_store(log, "profiles", "segments")
    finally:
        log.close()


def profile_of(data_dir: Path, user_id: str) -> str:
    profiles, _ = stores(data_dir)
    (found,) = [
        key
        for key, state in profiles.items()
        if "merged_into" not in state and user_id in state["ids"].get("user_id", [])
    ]
    return found


def members_in_store(data_dir: Path, name: str) -> dict[str, dict[str, int]]:
    return {key: state["in"][name] for key, state in stores(data_dir)[1].items() if name in state["in"]}


def iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


def table_rows(out: str) -> dict[str, list[str]]:
    """A rich table's body rows by their first cell."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


def test_validate_counts_what_load_definitions_loads_and_reports_a_bad_file(built: Path) -> None:
    definitions = load_definitions(built / "segments")
    out = ok(built, "validate")
    assert out.startswith(
        f"{len(definitions.segments)} segments, {len(definitions.triggers)} triggers OK "
        f"(fingerprint {definitions.fingerprint};"
    )
    assert "disabled: nps_detractor" in out
    bad = built.parent / "bad"
    bad.mkdir()
    (bad / "oops.yaml").write_text("segments:\n  - name: x\n    where: {rfm.segmnt: Champions}\n")
    code, _, error = cli(built, "segments", "validate", str(bad))
    assert code == 2
    assert str(bad / "oops.yaml") in error and "did you mean 'rfm.segment'" in error


def test_list_shows_every_definition_with_its_members_from_the_store(built: Path) -> None:
    definitions = load_definitions(built / "segments")
    _, segments = stores(built)
    rows = table_rows(ok(built, "list"))
    for definition in (*definitions.segments, *definitions.triggers):
        key = "in" if definition.kind == "segment" else "holds"
        expected = sum(1 for state in segments.values() if definition.name in state[key])
        assert rows[definition.name][1:4] == [definition.kind, str(definition.version), str(expected)]
    assert rows["lapsed"][4:] == ["email", "marketing", "defs.yaml"]
    assert rows["first_order"][3] == "3"  # all three ordered
    assert rows["dormant_no_purchase"][6] == "built in"
    assert rows["nps_detractor"][3] == "disabled" and rows["nps_detractor"][6] == "extra.yaml"


def test_show_renders_the_definition_and_its_size(built: Path) -> None:
    out = ok(built, "show", "lapsed")
    assert "segment lapsed version 1" in out
    assert "  all of:\n    orders.total > 0\n    orders.last_at not within last 30d\n" in out
    assert "reads: orders.last_at, orders.total" in out
    assert f"members now: {len(members_in_store(built, 'lapsed'))}" in out
    trigger = ok(built, "show", "abandoned_cart")
    assert "action: cart_reminder" in trigger and "cap: 1 per 7d per profile and channel" in trigger
    assert "built in" in trigger
    code, _, error = cli(built, "segments", "show", "big-spender")
    assert code == 2
    assert error == "no segment or trigger named 'big-spender'; did you mean 'big-spenders'?"
    code, _, error = cli(built, "segments", "show", "nps_detractor")
    assert code == 2 and "disabled" in error


def test_preview_of_an_edited_definition_counts_who_would_enter_and_exit(built: Path) -> None:
    ben, carl = profile_of(built, "u-ben"), profile_of(built, "u-carl")
    assert set(members_in_store(built, "big-spenders")) == {ben}
    edited = built.parent / "edited"
    edited.mkdir(exist_ok=True)
    (edited / "defs.yaml").write_text(
        textwrap.dedent(SEGMENTS).replace("{revenue.last_30d: {gte: 100}}", "{revenue.last_30d: {gte: 40}}")
    )
    out = ok(built, "preview", "big-spenders", "--definitions", str(edited))
    assert "2 of 3 profiles match; 1 now; would enter 1, would exit 0" in out
    rows = table_rows(out)
    assert rows[carl][1:] == ["enter", "revenue.last_30d >= 40 (is 50)"]
    assert rows[ben][1] == "stay"
    # 35 days ago nobody had ordered in the 30 days before, except Ana
    at = (NOW - timedelta(days=35)).isoformat()
    past = ok(built, "preview", "big-spenders", "--at", at, "--limit", "1")
    assert "1 of 3 profiles match; 1 now; would enter 1, would exit 1" in past
    assert "Sample (1 of 2)" in past
    code, _, error = cli(built, "segments", "preview", "lapsed", "--at", "last tuesday")
    assert code == 2 and "ISO 8601" in error


def test_members_match_the_segments_store_in_every_format(built: Path) -> None:
    expected = sorted(
        (member["since"], key, member["v"]) for key, member in members_in_store(built, "lapsed").items()
    )
    rows = [{"profile_id": key, "since": iso(since), "version": v} for since, key, v in expected]
    assert len(rows) == 1
    assert orjson.loads(ok(built, "members", "lapsed", "--format", "json")) == rows
    parsed = list(csv.DictReader(io.StringIO(ok(built, "members", "lapsed", "--format", "csv"))))
    assert parsed == [{**row, "version": str(row["version"])} for row in rows]
    table = ok(built, "members", "lapsed")
    assert "lapsed: 1 members" in table and rows[0]["profile_id"] in table_rows(table)
    holds = ok(built, "members", "first_order", "--format", "json", "--limit", "2")
    assert len(orjson.loads(holds)) == 2
    code, _, error = cli(built, "segments", "members", "lapsed", "--format", "xml")
    assert code == 2 and "table, csv, json" in error


def test_size_history_is_the_fold_of_the_segment_change_events(built: Path) -> None:
    log = LocalLog(built)
    codec = open_codec(Settings.load(data_dir=built))
    events = [codec.decode(record.value) for record in scan(log, SEGMENT_CHANGES_TOPIC)]
    log.close()
    steps: Counter[tuple[str, str]] = Counter()
    for event in events:
        if event["payload"]["segment"] == "big-spenders":
            day = event["payload"]["evaluated_at"].date().isoformat()
            steps[(day, event["envelope"]["event_type"])] += 1
    size, expected = 0, {}
    for day in sorted({day for day, _ in steps}):
        entered, exited = steps[(day, "segment_entered")], steps[(day, "segment_exited")]
        size += entered - exited
        expected[day] = [day, str(entered), str(exited), str(size)]
    # Ana's entry forty days ago; Ben's entry and Ana's exit today (or tomorrow, run across midnight).
    assert sum(steps.values()) == 3 and len(expected) >= 2
    rows = table_rows(ok(built, "size-history", "big-spenders"))
    assert {day: rows[day] for day in expected} == expected
    assert list(expected.values())[-1][3] == str(len(members_in_store(built, "big-spenders")))
    hourly = table_rows(ok(built, "size-history", "big-spenders", "--by", "hour"))
    assert sum(int(row[1]) for key, row in hourly.items() if key[:1].isdigit()) == sum(
        int(row[1]) for row in expected.values()
    )
    code, _, error = cli(built, "segments", "size-history", "first_order")
    assert code == 2 and "is a trigger" in error
    code, _, error = cli(built, "segments", "size-history", "lapse")
    assert code == 2 and "did you mean 'lapsed'?" in error


def test_on_kafka_members_and_list_read_the_worker_changelog(
    built: Path, kafka_bootstrap: str, unique_topic: Any
) -> None:
    """The worker's ``segments`` table as its changelog holds it (key and value JSON) on a real broker."""
    app_id = unique_topic("app")
    _, segments = stores(built)
    log = KafkaLog(kafka_bootstrap)
    try:
        log.append(
            f"{app_id}-profiles.segments-changelog",
            [Message(orjson.dumps(k), None, orjson.dumps(v), 0) for k, v in segments.items()],
        )
    finally:
        log.close()
    kafka = ("--broker", f"kafka://{kafka_bootstrap}")
    code, out, error = cli(
        built, *kafka, "segments", "members", "lapsed", "--app-id", app_id, "--format", "json"
    )
    assert code == 0, error
    assert out == ok(built, "members", "lapsed", "--format", "json")
    code, out, error = cli(built, *kafka, "segments", "list", "--app-id", app_id)
    assert code == 0, error
    assert table_rows(out)["first_order"][3] == "3"
