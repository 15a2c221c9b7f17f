"""Streaming readers for CSV, JSONL and Parquet files: constant memory, every row located and kept raw.

A reader yields :class:`Row` objects one at a time (Parquet in small batches), so a file of
any size ingests in the same memory. Each row knows where it came from (``orders.csv:line 17``,
``events.jsonl:line 3``, ``billing.parquet:row 1234``) and its raw bytes -- the CSV record, the
JSON line, or the Parquet row as JSON -- which is what the dead-letter store keeps and what
``patron dlq replay`` re-reads. A record the reader cannot parse (broken JSON, a CSV record
with the wrong number of fields, bytes that are not valid in the file's encoding) is a row
with an ``error``, not an exception: one bad line must not stop the file. Problems with the
file itself (missing, unreadable, not Parquet, no header) raise :class:`FileError` when the
reader is opened, before anything is ingested.
"""

from __future__ import annotations

import base64
import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from patron.errors import EXIT_INVALID, PatronError

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
UTF8_BOM = codecs.BOM_UTF8
PARQUET_BATCH_ROWS = 1024


class FileError(PatronError):
    """A file that cannot be read at all; the message names the file and what is wrong."""

    exit_code = EXIT_INVALID


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a file: its values (None when it could not be parsed), raw bytes and location."""

    values: dict[str, Any] | None
    raw: bytes
    location: str
    error: str | None = None


class FileReader(Protocol):
    """What every reader offers: the columns it knows up front, progress, and its rows."""

    name: str
    unit: str
    total: int
    columns: list[str] | None

    def position(self) -> int:
        """Units of ``total`` (bytes or rows) consumed so far."""
        ...

    def __iter__(self) -> Iterator[Row]: ...


def file_format(path: Path, declared: str | None = None) -> str:
    """The mapping's ``format:`` if given, else the one the extension names."""
    if declared:
        return declared
    found = EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise FileError(
            f"{path}: cannot tell the format from the extension {path.suffix or '(none)'!r}; "
            "set format: csv, jsonl or parquet in the mapping"
        )
    return found


def open_reader(
    path: Path, fmt: str, *, delimiter: str = ",", quotechar: str = '"', encoding: str = "utf-8"
) -> FileReader:
    """A reader for ``path``; raises :class:`FileError` now if the file cannot be read."""
    _check_readable(path)
    if fmt == "csv":
        return CsvReader(path, delimiter=delimiter, quotechar=quotechar, encoding=encoding)
    if fmt == "jsonl":
        return JsonlReader(path)
    if fmt == "parquet":
        return ParquetReader(path)
    raise FileError(f"{path}: unknown format {fmt!r}; use csv, jsonl or parquet")


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FileError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise FileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


# -- CSV ------------------------------------------------------------------------------------------
class CsvReader:
    """CSV through the csv module: quoted fields may hold delimiters, quotes and line breaks.

    Every value is read as text. The file is decoded with ``surrogateescape`` so a byte that is
    invalid in the declared encoding rejects its own record instead of aborting the file; raw
    records are kept as UTF-8 (the original bytes when the file is UTF-8).
    """

    unit = "bytes"

    def __init__(self, path: Path, *, delimiter: str = ",", quotechar: str = '"', encoding: str = "utf-8"):
        self.path = path
        self.name = path.name
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.encoding = encoding
        # utf-8-sig reads UTF-8 and drops a byte-order mark (Excel writes one) from the header.
        self._codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        self.total = path.stat().st_size
        self._binary: BinaryIO | None = None
        self._done = 0
        self.columns: list[str] = self._read_header()

    def _read_header(self) -> list[str]:
        with self.path.open("rb") as binary:
            for start, _record, fields, error in self._records(binary):
                if error is not None:
                    raise FileError(f"{self.name}:line {start}: the header line cannot be read ({error})")
                if not fields:
                    continue
                seen: dict[str, int] = {}
                for number, column in enumerate(fields, 1):
                    if column in seen:
                        raise FileError(
                            f"{self.name}: column {column!r} appears twice in the header "
                            f"(columns {seen[column]} and {number}); rename one"
                        )
                    seen[column] = number
                return fields
        raise FileError(f"{self.name}: the file is empty; a CSV file needs a header line")

    def _records(self, binary: BinaryIO) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
        """(first line number, record text, fields or None, error) for every record, header included."""
        text = io.TextIOWrapper(binary, encoding=self._codec, errors="surrogateescape", newline="")
        consumed: list[str] = []

        def lines() -> Iterator[str]:
            for line in text:
                consumed.append(line)
                yield line

        reader = csv.reader(lines(), delimiter=self.delimiter, quotechar=self.quotechar)
        start = 1
        while True:
            fields: list[str] | None
            try:
                fields, error = next(reader), None
            except StopIteration:
                return
            except csv.Error as exc:
                fields, error = None, f"not valid CSV ({exc})"
            record = "".join(consumed)
            consumed.clear()
            if error is None and not _valid_text(record):
                fields, error = None, self._encoding_problem(record)
            yield start, record, fields, error
            start = reader.line_num + 1

    def _encoding_problem(self, record: str) -> str:
        bad = next(ord(char) - 0xDC00 for char in record if 0xDC80 <= ord(char) <= 0xDCFF)
        hint = " (set csv: {encoding: latin-1} in the mapping if the file is Latin-1)"
        return (
            f"not valid {self.encoding} text (byte 0x{bad:02x}){hint if self._codec == 'utf-8-sig' else ''}"
        )

    def position(self) -> int:
        return self._binary.tell() if self._binary is not None else self._done

    def __iter__(self) -> Iterator[Row]:
        with self.path.open("rb") as binary:
            self._binary = binary
            try:
                yield from self._rows(binary)
            finally:
                self._binary, self._done = None, self.total

    def _rows(self, binary: BinaryIO) -> Iterator[Row]:
        header = True
        for start, record, fields, error in self._records(binary):
            if header and error is None and fields:
                header = False
                continue
            if fields == []:
                continue  # a blank line separates nothing and holds no record
            raw = record.encode("utf-8", "surrogateescape")
            location = f"{self.name}:line {start}"
            if error is not None:
                yield Row(None, raw, location, error)
                continue
            assert fields is not None
            values, error = csv_values(fields, self.columns)
            yield Row(values, raw, location, error)


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def csv_values(fields: list[str], columns: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """A record's fields by column name, or why they do not line up with the header."""
    if len(fields) != len(columns):
        return None, f"{len(fields)} fields but the header has {len(columns)} columns"
    return dict(zip(columns, fields, strict=True)), None


def parse_csv_record(raw: bytes, columns: list[str], *, delimiter: str = ",", quotechar: str = '"') -> Row:
    """Re-read one raw CSV record kept by the dead-letter store (for replay); location left empty."""
    text = raw.decode("utf-8", "surrogateescape")
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=quotechar))
    except csv.Error as exc:
        return Row(None, raw, "", f"not valid CSV ({exc})")
    if len(records) != 1:
        return Row(None, raw, "", f"expected one CSV record, found {len(records)}")
    values, error = csv_values(records[0], columns)
    return Row(values, raw, "", error)


# -- JSONL ----------------------------------------------------------------------------------------
class JsonlReader:
    """One JSON object per line; a line that is not one is a rejected row with its line number."""

    unit = "bytes"
    columns = None

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.total = path.stat().st_size
        self._binary: BinaryIO | None = None
        self._done = 0

    def position(self) -> int:
        return self._binary.tell() if self._binary is not None else self._done

    def __iter__(self) -> Iterator[Row]:
        with self.path.open("rb") as binary:
            self._binary = binary
            try:
                for number, line in enumerate(binary, 1):
                    body = line.rstrip(b"\r\n")
                    if number == 1:
                        body = body.removeprefix(UTF8_BOM)
                    if not body.strip():
                        continue
                    yield parse_json_record(body, f"{self.name}:line {number}")
            finally:
                self._binary, self._done = None, self.total


def parse_json_record(raw: bytes, location: str = "") -> Row:
    """One JSON object (a JSONL line, or a Parquet row kept as JSON), or why it is not one."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Row(None, raw, location, f"not valid JSON ({exc})")
    if not isinstance(value, dict):
        return Row(None, raw, location, f"expected a JSON object, got {_json_kind(value)}")
    return Row(value, raw, location)


def _json_kind(value: Any) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


# -- Parquet --------------------------------------------------------------------------------------
class ParquetReader:
    """Parquet in batches of :data:`PARQUET_BATCH_ROWS` rows; each row's raw form is its JSON."""

    unit = "rows"

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        try:
            with pq.ParquetFile(path) as parquet:
                self.total = parquet.metadata.num_rows
                self.columns: list[str] = list(parquet.schema_arrow.names)
        except (pa.ArrowException, OSError) as exc:
            raise FileError(f"{self.name}: not a readable Parquet file ({exc})") from None
        self._done = 0

    def position(self) -> int:
        return self._done

    def __iter__(self) -> Iterator[Row]:
        self._done = 0
        try:
            with pq.ParquetFile(self.path) as parquet:
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                    for values in batch.to_pylist():
                        self._done += 1
                        yield Row(values, row_json(values), f"{self.name}:row {self._done}")
        except (pa.ArrowException, OSError) as exc:
            raise FileError(
                f"{self.name}: rows after row {self._done} cannot be read, the file is corrupt ({exc})"
            ) from None


def row_json(values: dict[str, Any]) -> bytes:
    """A row as JSON: what the dead-letter store keeps for a Parquet row, and what replay re-reads."""
    return orjson.dumps(values, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
