"""``patron ingest`` on real CSV, JSONL and Parquet files into a real SQLite event log.

End-to-end cases run the installed ``patron`` command in a subprocess; the many small cases
call the same connector and runner in-process (or the typer app) to stay fast. Every test
reads the outcome back from the log and the dead-letter topic rather than trusting counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from patron.cli.main import app
from patron.config import Settings
from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.connectors.file_ingest import FileConnector
from patron.connectors.runner import StreamResult, run_stream
from patron.errors import PatronError
from patron.events.codec import open_codec
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, scan

PATRON = Path(sys.executable).parent / "patron"

PEOPLE_MAPPING = """\
source: crm
default_region: DE
event_type: identify
event_id: [user_id]
fields:
  occurred_at: signed_up
  identifiers.user_id: user_id
  identifiers.email: email
  identifiers.phone: phone
  payload.name: name
  payload.company: company
  payload.address: address
"""
PEOPLE_CSV = (
    "\ufeffuser_id,name,company,address,email,phone,signed_up\r\n"
    'u1,"Smith, John","ACME ""Rockets""","Hauptstr. 5\r\n10115 Berlin", John@X.com ,030 1234567,2024-05-01T10:00:00Z\r\n'
    "u2,Jane,,,jane@x.com,+1 212 555 0100,2024-05-02T10:00:00Z\r\n"
    "u3,Bad,,,not-an-email,,2024-05-03T10:00:00Z\r\n"
    "u4,only-two\r\n"
    "u5,Émile Zoë,Ünïcode GmbH,,emile@x.com,,2024-05-05T10:00:00Z\r\n"
)


# -- helpers shared with test_dlq.py and test_plugins.py ---------------------------------------------
def patron(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``patron`` command, as a user runs it."""
    return subprocess.run(
        [str(PATRON), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    """The typer app in-process: (exit code, stdout, error line) as ``patron`` would report them."""
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    if isinstance(result.exception, PatronError):
        return result.exception.exit_code, result.stdout, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, ""


def stored_events(data_dir: Path) -> list[dict[str, Any]]:
    log = LocalLog(data_dir)
    try:
        codec = open_codec(Settings.load(data_dir=data_dir))
        return [codec.decode(record.value) for record in scan(log, EVENTS_TOPIC)]
    finally:
        log.close()


def stored_letters(data_dir: Path) -> list[DeadLetter]:
    log = LocalLog(data_dir)
    try:
        return list(DeadLetterStore(log))
    finally:
        log.close()


def ingest(data_dir: Path, path: Path, mapping: Path, batch_size: int = 2000) -> StreamResult:
    """One file through the file connector and the shared pipeline, in-process."""
    log = LocalLog(data_dir)
    try:
        stream = FileConnector().open(str(path), {"mapping": str(mapping)})
        codec = open_codec(Settings.load(data_dir=data_dir))
        return run_stream(str(path), stream, log=log, codec=codec, connector="file", batch_size=batch_size)
    finally:
        log.close()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def assert_accounted(counts: dict[str, int]) -> None:
    assert counts["accepted"] + counts["rejected"] + counts["duplicates"] == counts["read"]


def by_user(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["envelope"]["identifiers"]["user_id"]: event for event in events}


# -- end to end ------------------------------------------------------------------------------------
def test_csv_with_bom_quotes_and_line_breaks_ingests_end_to_end_and_again_as_duplicates(tmp_path, data_dir):
    mapping = write(tmp_path / "people.yaml", PEOPLE_MAPPING)
    csv_path = tmp_path / "people.csv"
    csv_path.write_bytes(PEOPLE_CSV.encode("utf-8"))

    first = patron(
        data_dir, "ingest", str(csv_path), "--mapping", str(mapping), "--batch-size", "2", "--json"
    )
    assert first.returncode == 0, first.stderr
    [counts] = json.loads(first.stdout)["targets"]
    assert {k: counts[k] for k in ("read", "accepted", "rejected", "duplicates", "skipped")} == {
        "read": 5,
        "accepted": 3,
        "rejected": 2,
        "duplicates": 0,
        "skipped": 0,
    }

    events = by_user(stored_events(data_dir))
    assert set(events) == {"u1", "u2", "u5"}  # valid rows of batches that also held rejects are kept
    smith = events["u1"]
    assert smith["payload"]["name"] == "Smith, John"
    assert smith["payload"]["company"] == 'ACME "Rockets"'
    assert smith["payload"]["address"] == "Hauptstr. 5\r\n10115 Berlin"
    assert smith["envelope"]["identifiers"]["email"] == "john@x.com"
    assert smith["envelope"]["identifiers"]["phone"] == "+49301234567"  # default_region DE
    assert events["u2"]["envelope"]["identifiers"]["phone"] == "+12125550100"
    assert events["u5"]["payload"]["company"] == "Ünïcode GmbH"
    assert smith["envelope"]["source"] == "crm"

    letters = {letter.location: letter for letter in stored_letters(data_dir)}
    assert set(letters) == {"people.csv:line 5", "people.csv:line 6"}  # u1 spans lines 2-3
    bad_email = letters["people.csv:line 5"]
    assert bad_email.raw == b"u3,Bad,,,not-an-email,,2024-05-03T10:00:00Z\r\n"
    assert bad_email.reason.startswith(
        "envelope.identifiers.email: 'not-an-email' is not a valid email address"
    )
    assert bad_email.connector == "file" and bad_email.source == "crm"
    assert letters["people.csv:line 6"].reason == "2 fields but the header has 7 columns"
    assert letters["people.csv:line 6"].raw == b"u4,only-two\r\n"

    again = patron(data_dir, "ingest", str(csv_path), "--mapping", str(mapping), "--json")
    assert again.returncode == 0, again.stderr
    [counts] = json.loads(again.stdout)["targets"]
    assert (counts["accepted"], counts["duplicates"], counts["rejected"]) == (0, 3, 2)
    assert len(stored_events(data_dir)) == 3
    assert len(stored_letters(data_dir)) == 2  # the same bad rows are not filed twice


def test_the_table_summary_shows_counts_and_the_first_reasons(tmp_path, data_dir):
    mapping = write(tmp_path / "people.yaml", PEOPLE_MAPPING)
    csv_path = tmp_path / "people.csv"
    csv_path.write_bytes(PEOPLE_CSV.encode("utf-8"))
    code, out, _ = cli(data_dir, "ingest", str(csv_path), "-m", str(mapping))
    assert code == 0
    assert "people.csv │    5 │        3 │        2 │          0 │       0" in out
    assert "people.csv:line 6: 2 fields but the header has 7 columns" in out
    assert "patron dlq list" in out
    code, _, error = cli(data_dir, "ingest", str(csv_path), "-m", str(mapping), "--strict")
    assert code == 3
    assert error == "2 record(s) were rejected (--strict); `patron dlq list` shows why"


def test_input_problems_stop_before_anything_is_ingested(tmp_path, data_dir):
    mapping = write(tmp_path / "people.yaml", PEOPLE_MAPPING)
    good = tmp_path / "people.csv"
    good.write_bytes(PEOPLE_CSV.encode("utf-8"))
    result = patron(data_dir, "ingest", str(good), str(tmp_path / "missing.csv"), "--mapping", str(mapping))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.csv'}: no such file"
    assert stored_events(data_dir) == []  # the good file listed first was not ingested either


def test_a_mapping_naming_a_column_the_file_lacks_fails_with_the_closest_column(tmp_path, data_dir):
    mapping = write(
        tmp_path / "people.yaml",
        PEOPLE_MAPPING.replace("identifiers.email: email", "identifiers.email: e_mail"),
    )
    good = tmp_path / "people.csv"
    good.write_bytes(PEOPLE_CSV.encode("utf-8"))
    code, _, error = cli(data_dir, "ingest", str(good), "--mapping", str(mapping))
    assert code == 2
    assert error.startswith(
        f"{good}: column 'e_mail' named by {mapping} (fields.identifiers.email) is not in the file "
        "(did you mean email?); its columns are user_id, name"
    )
    assert stored_events(data_dir) == []


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("broken.parquet", b"PAR1 not really parquet", "broken.parquet: not a readable Parquet file"),
        ("people.txt", b"user_id\nu1\n", "cannot tell the format from the extension '.txt'; set format:"),
        ("dup.csv", b"user_id,email,email\nu1,a,b\n", "dup.csv: column 'email' appears twice in the header"),
        ("empty.csv", b"", "empty.csv: the file is empty; a CSV file needs a header line"),
    ],
)
def test_unreadable_files_are_one_error_line_with_exit_code_2(tmp_path, data_dir, name, content, expected):
    mapping = write(tmp_path / "m.yaml", PEOPLE_MAPPING)
    path = tmp_path / name
    path.write_bytes(content)
    code, _, error = cli(data_dir, "ingest", str(path), "--mapping", str(mapping))
    assert code == 2
    assert expected in error


def test_a_bad_mapping_or_bad_options_fail_before_reading(tmp_path, data_dir):
    good = tmp_path / "people.csv"
    good.write_bytes(PEOPLE_CSV.encode("utf-8"))
    bad = write(tmp_path / "bad.yaml", PEOPLE_MAPPING.replace("payload.name", "payload.nmae"))
    code, _, error = cli(data_dir, "ingest", str(good), "--mapping", str(bad))
    assert (code, error) == (
        2,
        f"{bad}: fields.payload.nmae: not a field of identify's payload (did you mean payload.name?)",
    )
    code, _, error = cli(data_dir, "ingest", str(good))
    assert (code, error) == (2, f"{good}: no mapping given; pass --mapping MAP.yaml or --mapping-dir DIR")
    code, _, error = cli(data_dir, "ingest", str(good), "--mapping", str(bad), "--mapping-dir", str(tmp_path))
    assert code == 2 and "not both" in error


# -- formats ---------------------------------------------------------------------------------------
NAMES_MAPPING = """\
source: crm
event_type: identify
fields: {occurred_at: at, identifiers.user_id: user_id, payload.name: name}
"""


def test_latin_1_files_need_the_encoding_option_and_otherwise_reject_only_the_bad_rows(tmp_path, data_dir):
    path = tmp_path / "names.csv"
    path.write_bytes("user_id,name,at\nu1,Müller,2024-05-01\nu2,Smith,2024-05-01\n".encode("latin-1"))
    default = ingest(data_dir, path, write(tmp_path / "utf8.yaml", NAMES_MAPPING))
    assert (default.stats.accepted, default.stats.rejected) == (1, 1)
    [letter] = stored_letters(data_dir)
    assert letter.raw == b"u1,M\xfcller,2024-05-01\n"  # the original bytes, kept as they were
    assert letter.reason == (
        "not valid utf-8 text (byte 0xfc) (set csv: {encoding: latin-1} in the mapping if the file is Latin-1)"
    )

    latin = write(tmp_path / "latin.yaml", NAMES_MAPPING + "csv: {encoding: latin-1}\n")
    fixed = ingest(data_dir, path, latin)
    assert (fixed.stats.accepted, fixed.stats.duplicates, fixed.stats.rejected) == (1, 1, 0)
    assert by_user(stored_events(data_dir))["u1"]["payload"]["name"] == "Müller"


def test_jsonl_broken_lines_are_rejected_with_line_numbers_and_raw_bytes(tmp_path, data_dir):
    path = tmp_path / "web.jsonl"
    lines = [
        b'{"user_id": "u1", "at": "2024-05-01T10:00:00Z", "name": "Ann"}',
        b'{"user_id": "u2", "at": ',
        b"",
        b"[1, 2, 3]",
        b'{"user_id": "u3", "at": 1714557600, "name": {"first": "Bo"}}',
        b"\xff\xfe binary \x00 junk",
        b'{"user_id": "u4", "at": "2024-05-01T10:00:00Z", "name": "Cy"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = ingest(data_dir, path, write(tmp_path / "m.yaml", NAMES_MAPPING))
    assert result.stats.as_dict() == {"read": 6, "accepted": 2, "rejected": 4, "duplicates": 0}
    letters = {letter.location: letter for letter in stored_letters(data_dir)}
    assert letters["web.jsonl:line 2"].raw == b'{"user_id": "u2", "at": '
    assert letters["web.jsonl:line 2"].reason.startswith("not valid JSON")
    assert letters["web.jsonl:line 4"].reason == "expected a JSON object, got an array"
    assert letters["web.jsonl:line 5"].reason.startswith("payload.name: Input should be a valid string")
    assert letters["web.jsonl:line 6"].raw == b"\xff\xfe binary \x00 junk"
    assert set(by_user(stored_events(data_dir))) == {"u1", "u4"}


def test_parquet_rows_keep_their_types_and_bad_rows_their_row_number(tmp_path, data_dir):
    path = tmp_path / "usage.parquet"
    table = pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "at": pa.array(
                [datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 2, 11, tzinfo=UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "feature": ["export", None, "search"],
            "uses": pa.array([3, 1, 2], pa.int64()),
        }
    )
    pq.write_table(table, path, row_group_size=2)
    mapping = write(
        tmp_path / "usage.yaml",
        """\
        source: app
        event_type: feature_used
        event_id: [user_id, feature]
        fields:
          occurred_at: at
          identifiers.user_id: user_id
          payload.feature: feature
          payload.count: {column: uses, type: int}
        """,
    )
    result = ingest(data_dir, path, mapping)
    assert result.stats.as_dict() == {"read": 3, "accepted": 1, "rejected": 2, "duplicates": 0}
    [event] = stored_events(data_dir)
    assert event["envelope"]["occurred_at"] == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert event["payload"] == {"feature": "export", "count": 3}
    letters = {letter.location: letter for letter in stored_letters(data_dir)}
    assert set(letters) == {"usage.parquet:row 2", "usage.parquet:row 3"}
    assert json.loads(letters["usage.parquet:row 2"].raw) == {
        "user_id": "u2",
        "at": "2024-05-02T11:00:00+00:00",
        "feature": None,
        "uses": 1,
    }
    assert (
        "column 'feature' is empty but payload.feature is required" in letters["usage.parquet:row 2"].reason
    )


TICKETS_MAPPING = """\
source: helpdesk
timezone: Europe/Berlin
events:
  - event_type: ticket_opened
    event_id: [ticket_id]
    when: opened_at
    fields:
      occurred_at: {column: opened_at, type: timestamp, format: "%d.%m.%Y %H:%M"}
      identifiers.email: email
      payload.ticket_id: ticket_id
      payload.priority: {column: priority, map: {P1: urgent, P2: normal}}
    constants: {payload.channel: email}
  - event_type: ticket_first_responded
    event_id: [ticket_id]
    when: responded_at
    fields:
      occurred_at: {column: responded_at, type: timestamp, format: "%d.%m.%Y %H:%M"}
      identifiers.email: email
      payload.ticket_id: ticket_id
      payload.agent_id: agent
      payload.response_seconds: {column: response_seconds, type: int}
  - event_type: ticket_resolved
    event_id: [ticket_id]
    when: resolved_at
    fields:
      occurred_at: {column: resolved_at, type: timestamp, format: "%d.%m.%Y %H:%M"}
      identifiers.email: email
      payload.ticket_id: ticket_id
      payload.resolution_seconds: {column: resolution_seconds, type: int}
    constants: {payload.resolution: solved, payload.reopened_count: 0}
"""


def test_multi_event_rows_follow_when_and_count_rows_without_events_as_skipped(tmp_path, data_dir):
    path = tmp_path / "tickets.csv"
    path.write_text(
        "ticket_id,email,priority,agent,opened_at,responded_at,response_seconds,resolved_at,resolution_seconds\n"
        "T1,a@x.com,P1,ag1,01.03.2024 09:00,01.03.2024 09:30,1800,02.03.2024 09:00,86400\n"
        "T2,b@x.com,P2,,01.07.2024 09:00,,,,\n"
        "T3,c@x.com,P2,ag2,01.07.2024 10:00,01.07.2024 10:05,300,01.07.2024 11:00,soon\n"
        "T4,d@x.com,,,,,,,\n",
        encoding="utf-8",
    )
    result = ingest(data_dir, path, write(tmp_path / "tickets.yaml", TICKETS_MAPPING))
    assert result.stats.as_dict() == {"read": 7, "accepted": 6, "rejected": 1, "duplicates": 0}
    assert result.skipped == 1
    events = stored_events(data_dir)
    kinds = sorted((e["payload"]["ticket_id"], e["envelope"]["event_type"]) for e in events)
    assert kinds == [
        ("T1", "ticket_first_responded"),
        ("T1", "ticket_opened"),
        ("T1", "ticket_resolved"),
        ("T2", "ticket_opened"),
        ("T3", "ticket_first_responded"),
        ("T3", "ticket_opened"),
    ]
    opened = {e["payload"]["ticket_id"]: e for e in events if e["envelope"]["event_type"] == "ticket_opened"}
    assert opened["T1"]["envelope"]["occurred_at"] == datetime(2024, 3, 1, 8, 0, tzinfo=UTC)  # CET
    assert opened["T2"]["envelope"]["occurred_at"] == datetime(2024, 7, 1, 7, 0, tzinfo=UTC)  # CEST
    assert opened["T1"]["payload"]["priority"] == "urgent"
    [letter] = stored_letters(data_dir)
    assert letter.location == "tickets.csv:line 4 (events[2] ticket_resolved)"
    assert (
        letter.reason
        == "column 'resolution_seconds' (payload.resolution_seconds): 'soon' is not a whole number"
    )
    assert letter.details["event_index"] == 2


def test_a_directory_with_mappings_ingests_every_file_with_its_own_mapping(tmp_path, data_dir):
    drop = tmp_path / "drop"
    (drop / "mappings").mkdir(parents=True)
    (drop / "people.csv").write_bytes(PEOPLE_CSV.encode("utf-8"))
    write(drop / "mappings" / "people.yaml", PEOPLE_MAPPING)
    (drop / "names.jsonl").write_text('{"user_id": "n1", "at": "2024-05-01T10:00:00Z", "name": "N"}\n')
    write(drop / "mappings" / "names.yaml", NAMES_MAPPING)
    (drop / "README.md").write_text("not data")
    (drop / "ground_truth.csv").write_text("file,line,person\n")  # next to the exports, but no mapping
    code, out, _ = cli(data_dir, "ingest", str(drop), "--json")
    assert code == 0
    summary = json.loads(out)
    assert [t["target"] for t in summary["targets"]] == [str(drop / "names.jsonl"), str(drop / "people.csv")]
    assert summary["totals"]["accepted"] == 4
    assert_accounted(summary["totals"])
    assert summary["skipped_files"] == [
        {
            "path": str(drop / "ground_truth.csv"),
            "reason": f"no mapping {drop / 'mappings' / 'ground_truth.yaml'}",
        }
    ]

    elsewhere = tmp_path / "maps"
    elsewhere.mkdir()
    write(elsewhere / "people.yaml", PEOPLE_MAPPING)
    code, _, error = cli(data_dir, "ingest", str(drop / "names.jsonl"), "--mapping-dir", str(elsewhere))
    assert code == 2  # a file named explicitly must have its mapping
    assert error.startswith(f"{drop / 'names.jsonl'}: no mapping {elsewhere / 'names.yaml'} for it")


# -- robustness ------------------------------------------------------------------------------------
JUNK_MAPPING = """\
source: junk
event_type: custom_event
fields:
  occurred_at: {column: at, type: timestamp}
  identifiers.user_id: user
  identifiers.email: email
  payload.name: name
  payload.properties.n: {column: n, type: int}
"""
junk_text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
good_row = st.fixed_dictionaries(
    {
        "at": st.just("2024-05-01T10:00:00Z"),
        "user": st.sampled_from(["u1", "u2"]),
        "email": st.just(""),
        "name": st.just("n"),
        "n": st.sampled_from(["1", "2"]),
    }
)
any_row = st.one_of(
    good_row, st.fixed_dictionaries({k: junk_text for k in ("at", "user", "email", "name", "n")})
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(any_row, max_size=15))
def test_junk_csv_rows_never_crash_and_every_row_is_accounted_for(rows):
    import csv

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = base / "junk.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["at", "user", "email", "name", "n"])
            writer.writerows([row["at"], row["user"], row["email"], row["name"], row["n"]] for row in rows)
        result = ingest(base / "data", path, write(base / "junk.yaml", JUNK_MAPPING))
        counts = result.stats.as_dict()
        assert_accounted(counts)
        assert counts["read"] == len(rows)
        assert len(stored_letters(base / "data")) == counts["rejected"]
        assert len(stored_events(base / "data")) == counts["accepted"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(
        st.one_of(st.binary(max_size=40), st.just(b'{"at": 1714557600, "user": "u", "name": "x"}')),
        max_size=15,
    )
)
def test_random_bytes_in_jsonl_never_crash_and_every_line_is_accounted_for(lines):
    content = b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n"
    expected = sum(1 for line in content.split(b"\n") if line.rstrip(b"\r").strip())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = base / "junk.jsonl"
        path.write_bytes(content)
        result = ingest(base / "data", path, write(base / "junk.yaml", JUNK_MAPPING))
        counts = result.stats.as_dict()
        assert_accounted(counts)
        assert counts["read"] == expected
        assert len(stored_letters(base / "data")) == counts["rejected"]


MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from patron.connectors.file_ingest import FileConnector

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

stream = FileConnector().open(sys.argv[1], {"mapping": sys.argv[2]})
records = iter(stream)
for _ in range(20_000):
    next(records)
warm = peak_mb()
count = 20_000 + sum(1 for _ in records)
print(count, peak_mb() - warm)
"""


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_memory_stays_flat_however_long_the_file(tmp_path, kind):
    """300k rows (~25 MB of CSV) held in memory would cost hundreds of MB; streaming costs a constant."""
    rows = 300_000
    columns = {
        "user_id": [f"user-{i % 9973}" for i in range(rows)],
        "at": ["2024-05-01T10:00:00Z"] * rows,
        "name": [f"Name number {i} with some padding text" for i in range(rows)],
    }
    path = tmp_path / f"big.{kind}"
    if kind == "csv":
        pa_csv.write_csv(pa.table(columns), path)
    else:
        pq.write_table(pa.table(columns), path, row_group_size=50_000)
    mapping = write(tmp_path / "big.yaml", NAMES_MAPPING)
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path), str(mapping)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr
    count, growth_mb = probe.stdout.split()
    assert int(count) == rows
    assert float(growth_mb) < 40, f"peak RSS grew by {growth_mb} MB while streaming {rows} rows"
