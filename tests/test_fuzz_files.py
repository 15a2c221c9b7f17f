"""Fuzz proof for the file connector: malformed CSV, JSONL and Parquet through ``patron ingest``.

Hypothesis writes files that mix valid lines with junk (binary bytes, invalid UTF-8, truncated
JSON, lines of megabytes, 2000-level nesting, impossible timestamps, wrong types and columns)
and ingests each into a fresh SQLite log through the connector and runner ``patron ingest``
uses. Every line is then found again: a valid line as exactly one event, a malformed one as a
dead letter with its file, line and raw bytes. Files that cannot be read at all go through
the installed ``patron`` command, which must print one error line and no traceback.
"""

from __future__ import annotations

import gzip
import io
import tempfile
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ingest import cli, ingest, patron, stored_events, stored_letters, write

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
MAPPING = """\
source: fuzz
event_type: custom_event
event_id: [id]
fields:
  occurred_at: {column: at, type: timestamp}
  identifiers.user_id: user
  payload.name: name
"""
COLUMNS = ("id", "at", "user", "name")
BAD_TIMES = [
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # valid ISO 8601, before year 1 once in UTC
    "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
    "NaN",
    "inf",
    "1e400",
    "2024-02-30T00:00:00Z",
    "",
    "soon",
]
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def valid_values(number: int) -> dict[str, str]:
    return {"id": f"row-{number}", "at": "2024-05-01T10:00:00Z", "user": f"u{number}", "name": f"N{number}"}


# -- JSONL -------------------------------------------------------------------------------------------
def _json_line(values: dict[str, object]) -> bytes:
    return orjson.dumps(values)


def _no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b" ").replace(b"\r", b" ")


jsonl_junk = st.one_of(
    st.binary(min_size=1, max_size=60)
    .map(_no_newline)
    .filter(lambda b: b.strip() and not b.strip().startswith(b"{")),
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]).map(
        lambda bad: b'{"id":"x","user":"' + bad + b'"}'
    ),
    st.integers(1, 40).map(lambda cut: _json_line(valid_values(0))[:cut]),  # truncated
    st.integers(1, 2).map(lambda mb: b'{"id":"' + b"z" * (mb * 1_000_000)),  # megabytes, never closed
    st.integers(1025, 2000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),  # too deep to parse
    st.sampled_from([b"NaN", b"[1,2]", b'"text"', b"null", b"12", b'{"at": NaN}']),
    st.sampled_from(BAD_TIMES).map(lambda at: _json_line({**valid_values(0), "id": "bad-at", "at": at})),
    st.one_of(st.lists(TEXT, max_size=2), st.dictionaries(TEXT, TEXT, max_size=2)).map(  # not a string
        lambda wrong: _json_line({**valid_values(0), "id": "bad-name", "name": wrong})
    ),
)


@settings(FUZZ, max_examples=150)
@given(
    kinds=st.lists(st.booleans(), min_size=1, max_size=25),
    junk=st.lists(jsonl_junk, min_size=25, max_size=25),
)
def test_jsonl_files_with_junk_lines_keep_every_valid_line_and_file_every_bad_one(
    kinds: list[bool], junk: list[bytes]
) -> None:
    lines = [_json_line(valid_values(n)) if good else junk[n] for n, good in enumerate(kinds)]
    check_file("fuzz.jsonl", b"\n".join(lines) + b"\n", lines, kinds)


# -- CSV ---------------------------------------------------------------------------------------------
def _csv_line(values: dict[str, str]) -> bytes:
    return ",".join(values[c] for c in COLUMNS).encode()


csv_junk = st.one_of(
    # no quote, comma or line break: one field where the header has four, or not UTF-8
    st.binary(min_size=1, max_size=60).map(lambda b: bytes(x for x in b if x not in b'",\r\n') or b"?"),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]).map(
        lambda bad: b"row-x,2024-05-01,u" + bad + b",n"
    ),
    st.integers(1, 8).map(lambda cut: _csv_line(valid_values(0))[:cut]),  # truncated: too few fields
    st.integers(1, 2).map(
        lambda mb: b'row-big,2024-05-01,u,"' + b"z" * (mb * 1_000_000) + b'"'
    ),  # over csv's field limit
    st.sampled_from(BAD_TIMES).map(lambda at: _csv_line({**valid_values(0), "id": "bad-at", "at": at})),
    st.just(b"row-x,2024-05-01T10:00:00Z,u,n,extra"),
)


@settings(FUZZ, max_examples=150)
@given(
    kinds=st.lists(st.booleans(), min_size=1, max_size=25), junk=st.lists(csv_junk, min_size=25, max_size=25)
)
def test_csv_files_with_junk_lines_keep_every_valid_line_and_file_every_bad_one(
    kinds: list[bool], junk: list[bytes]
) -> None:
    lines = [_csv_line(valid_values(n)) if good else junk[n] for n, good in enumerate(kinds)]
    check_file("fuzz.csv", b"id,at,user,name\n" + b"\n".join(lines) + b"\n", lines, kinds, first_line=2)


def check_file(name: str, content: bytes, lines: list[bytes], kinds: list[bool], first_line: int = 1) -> None:
    """Ingest ``content``; line ``n`` of ``lines`` must be one event (``kinds[n]``) or one letter at its line."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = base / name
        path.write_bytes(content)
        data_dir = base / "data"
        result = ingest(data_dir, path, write(base / "fuzz.yaml", MAPPING))
        counts = result.stats.as_dict()
        assert counts == {
            "read": len(lines),
            "accepted": sum(kinds),
            "rejected": len(lines) - sum(kinds),
            "duplicates": 0,
        }
        letters = {letter.location: letter for letter in stored_letters(data_dir)}
        events = [e["payload"]["name"] for e in stored_events(data_dir)]
        assert sorted(events) == sorted(f"N{n}" for n, good in enumerate(kinds) if good)  # each exactly once
        expected = {
            f"{name}:line {n + first_line}": line
            for n, (line, good) in enumerate(zip(lines, kinds, strict=True))
            if not good
        }
        assert set(letters) == set(expected)
        for location, line in expected.items():
            assert letters[location].raw.rstrip(b"\r\n") == line, location
            assert letters[location].reason.strip() and "Traceback" not in letters[location].reason


# -- whole files through the real command ---------------------------------------------------------------
def _parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({c: [valid_values(n)[c] for n in range(50)] for c in COLUMNS}), sink)
    return sink.getvalue()


PARQUET = _parquet_bytes()
UNREADABLE = {
    "truncated.parquet": (PARQUET[: len(PARQUET) // 2], "not a readable Parquet file"),
    "junk.parquet": (b"\x00\xffjunk" * 1000, "not a readable Parquet file"),
    "empty.parquet": (b"", "not a readable Parquet file"),
    "gzipped.csv": (gzip.compress(b"id,at,user,name\n"), "the header line cannot be read"),
    "empty.csv": (b"", "the file is empty"),
    "binary.csv": (b"\xff\xfe\x00\x01" * 100, "the header line cannot be read"),
    "dupe_header.csv": (b"id,id,at,user,name\n", "column 'id' appears twice"),
    "wrong_columns.csv": (b"ident,when,who\nr,2024-05-01,u\n", "named by"),
    "wrong_columns.parquet": (None, "column 'user' named by"),
}


def _unreadable(directory: Path, name: str) -> tuple[Path, str]:
    content, message = UNREADABLE[name]
    path = directory / name
    if content is None:
        pq.write_table(pa.table({"id": ["r"], "at": ["2024-05-01"], "name": ["n"]}), path)
    else:
        path.write_bytes(content)
    return path, message


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_stop_ingest_with_one_error_naming_the_file(
    tmp_path: Path, data_dir: Path, name: str
) -> None:
    """In-process (the same typer command) to stay fast; the next test runs the installed one."""
    path, message = _unreadable(tmp_path, name)
    code, _, error = cli(data_dir, "ingest", str(path), "--mapping", str(write(tmp_path / "m.yaml", MAPPING)))
    assert code == 2 and message in error and name in error and "\n" not in error, error
    assert stored_events(data_dir) == [] and stored_letters(data_dir) == []


def test_a_truncated_parquet_file_is_one_red_line_from_the_real_command(
    tmp_path: Path, data_dir: Path
) -> None:
    path, message = _unreadable(tmp_path, "truncated.parquet")
    run = patron(data_dir, "ingest", str(path), "--mapping", str(write(tmp_path / "m.yaml", MAPPING)))
    assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and "truncated.parquet" in line, line


def test_a_file_of_mixed_junk_ingests_through_the_real_command(tmp_path: Path, data_dir: Path) -> None:
    """The installed command on a JSONL file with one line of each kind of junk: exit 0, good lines kept."""
    junk = [
        b"\xff\xfe\x00 binary",
        b'{"id":"big","name":"' + b"q" * 3_000_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        _json_line({**valid_values(0), "id": "overflow", "at": "0001-01-01T00:00:00+01:00"}),
    ]
    lines = [_json_line(valid_values(1)), *junk, _json_line(valid_values(2))]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines))  # no final newline: the last line still counts
    run = patron(
        data_dir, "ingest", str(path), "--mapping", str(write(tmp_path / "m.yaml", MAPPING)), "--json"
    )
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    totals = orjson.loads(run.stdout)["totals"]
    assert (totals["accepted"], totals["rejected"]) == (2, 4)
    assert sorted(e["payload"]["name"] for e in stored_events(data_dir)) == ["N1", "N2"]
    letters = {letter.location: letter for letter in stored_letters(data_dir)}
    assert set(letters) == {f"mixed.jsonl:line {n}" for n in (2, 3, 4, 5)}
    assert letters["mixed.jsonl:line 3"].raw == junk[1]  # megabytes kept whole
    assert "out of range once converted to UTC" in letters["mixed.jsonl:line 5"].reason
