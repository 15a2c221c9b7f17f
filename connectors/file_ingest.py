"""The built-in ``file`` connector: CSV, JSONL and Parquet files turned into events by a mapping file.

It is registered like any plugin (entry point ``file`` in the ``patron.connectors`` group),
so ``patron ingest`` and ``patron dlq replay`` treat it exactly as they treat third-party
connectors. Opening a file checks everything that would otherwise fail on every row -- the
mapping, the file's readability and format, the columns the mapping names -- so a mistake
stops ``patron ingest`` before anything is ingested.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patron.connectors.deadletter import DeadLetter
from patron.connectors.files import (
    EXTENSIONS,
    FileError,
    Row,
    file_format,
    open_reader,
    parse_csv_record,
    parse_json_record,
)
from patron.connectors.mapping import Candidate, load_mapping, suggest
from patron.connectors.mapping import Mapping as RowMapping
from patron.connectors.plugins import RecordStream, SourceRecord
from patron.errors import PatronError

CONNECTOR_NAME = "file"
MAPPINGS_SUBDIR = "mappings"
COLUMNS_SHOWN = 12


@dataclass
class TargetPlan:
    """The files to ingest, each with its connector options, and the files a directory held without a mapping."""

    files: list[tuple[Path, dict[str, str]]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def expand_targets(
    targets: Sequence[str], mapping: Path | None = None, mapping_dir: Path | None = None
) -> TargetPlan:
    """Expand directories into their data files and pair every file with its mapping.

    A directory with a ``mappings/`` folder (the generator's layout) uses it as mapping
    directory when neither ``mapping`` nor ``mapping_dir`` is given. Files inside a directory
    that have no mapping there (``ground_truth.csv`` next to the exports) are reported as
    skipped; a file named explicitly without a mapping is an error when it is opened.
    """
    if mapping is not None and mapping_dir is not None:
        raise PatronError("give --mapping (one mapping for every file) or --mapping-dir, not both")
    plan = TargetPlan()
    for target in targets:
        path = Path(target)
        if not path.is_dir():
            plan.files.append((path, _options(mapping, mapping_dir)))
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
        if not found:
            raise FileError(f"{path}: no {', '.join(sorted(EXTENSIONS))} files in this directory")
        directory_maps = mapping_dir
        if mapping is None and mapping_dir is None and (path / MAPPINGS_SUBDIR).is_dir():
            directory_maps = path / MAPPINGS_SUBDIR
        for file in found:
            if (
                mapping is None
                and directory_maps is not None
                and not _mapping_in(directory_maps, file).is_file()
            ):
                plan.skipped.append((file, f"no mapping {_mapping_in(directory_maps, file)}"))
            else:
                plan.files.append((file, _options(mapping, directory_maps)))
        if not plan.files:
            raise FileError(f"{path}: none of its files has a mapping in {directory_maps}")
    return plan


def _mapping_in(directory: Path, file: Path) -> Path:
    return directory / f"{file.stem}.yaml"


def _options(mapping: Path | None, mapping_dir: Path | None) -> dict[str, str]:
    if mapping is not None:
        return {"mapping": str(mapping)}
    if mapping_dir is not None:
        return {"mapping_dir": str(mapping_dir)}
    return {}


class FileSource:
    """One file's records as candidate events (a :class:`~patron.connectors.plugins.SourceStream`)."""

    def __init__(self, path: Path, mapping: RowMapping):
        fmt = file_format(path, mapping.format)
        self.reader = open_reader(
            path,
            fmt,
            delimiter=mapping.csv.delimiter,
            quotechar=mapping.csv.quotechar,
            encoding=mapping.csv.encoding,
        )
        _check_columns(path, self.reader.columns, mapping, nested=fmt != "csv")
        self.mapping = mapping
        self.source = mapping.source
        self.default_region: str | None = mapping.default_region
        self.timezone: str | None = mapping.timezone
        self.unit = self.reader.unit
        self.total = self.reader.total
        # What replay needs to re-read a letter's raw bytes (stored with every dead letter).
        self.details: dict[str, Any] = {"mapping": str(mapping.path.resolve()), "format": fmt}
        if fmt == "csv":
            self.details |= {
                "columns": self.reader.columns,
                "delimiter": mapping.csv.delimiter,
                "quotechar": mapping.csv.quotechar,
            }

    def position(self) -> int:
        return self.reader.position()

    def __iter__(self) -> Iterator[SourceRecord]:
        for row in self.reader:
            yield from records_of(row, self.mapping, self.details)


def records_of(row: Row, mapping: RowMapping, details: dict[str, Any]) -> Iterator[SourceRecord]:
    """The records one row yields: a rejection, one per candidate event, or one skipped record."""
    if row.values is None:
        yield SourceRecord(row.raw, row.location, error=row.error, details=details)
        return
    candidates = mapping.apply(row.values, row.raw)
    if not candidates:
        yield SourceRecord(row.raw, row.location, details=details)
    for candidate in candidates:
        yield _record(row, candidate, len(mapping.events) > 1, details)


def _record(row: Row, candidate: Candidate, several: bool, details: dict[str, Any]) -> SourceRecord:
    # With several events per row each gets its own location, hence its own dead-letter id.
    location = (
        f"{row.location} (events[{candidate.index}] {candidate.event_type})" if several else row.location
    )
    return _candidate_record(row.raw, location, candidate, details)


def _candidate_record(
    raw: bytes, location: str, candidate: Candidate, details: dict[str, Any]
) -> SourceRecord:
    return SourceRecord(
        raw,
        location,
        event=candidate.event,
        error=candidate.error,
        details={**details, "event_index": candidate.index},
    )


def _check_columns(path: Path, columns: list[str] | None, mapping: RowMapping, *, nested: bool) -> None:
    """Every column the mapping names must exist (files without a header, i.e. JSONL, cannot be checked).

    With ``nested`` (Parquet structs) a dotted name only needs its first part to be a column.
    """
    if columns is None:
        return
    present = set(columns)
    for column in mapping.columns:
        if column in present or (nested and column.split(".", 1)[0] in present):
            continue
        shown = ", ".join(columns[:COLUMNS_SHOWN]) + (", ..." if len(columns) > COLUMNS_SHOWN else "")
        raise FileError(
            f"{path}: column {column!r} named by {mapping.path} ({mapping.where_column(column)}) "
            f"is not in the file{suggest(column, columns)}; its columns are {shown}"
        )


class FileConnector:
    """Files through a mapping: options ``mapping`` (one file for all) or ``mapping_dir`` (``<stem>.yaml``)."""

    def __init__(self) -> None:
        self._mappings: dict[Path, RowMapping] = {}

    def _load(self, path: Path) -> RowMapping:
        key = path.resolve()
        if key not in self._mappings:
            self._mappings[key] = load_mapping(path)
        return self._mappings[key]

    def open(self, target: str, options: Mapping[str, str]) -> FileSource:
        path = Path(target)
        if not path.exists():
            raise FileError(f"{path}: no such file")
        if options.get("mapping"):
            return FileSource(path, self._load(Path(options["mapping"])))
        if options.get("mapping_dir"):
            candidate = _mapping_in(Path(options["mapping_dir"]), path)
            if not candidate.is_file():
                raise FileError(
                    f"{path}: no mapping {candidate} for it; write one (see docs/connectors.md) or pass --mapping"
                )
            return FileSource(path, self._load(candidate))
        raise FileError(f"{path}: no mapping given; pass --mapping MAP.yaml or --mapping-dir DIR")

    def replay(self, letter: DeadLetter, options: Mapping[str, str]) -> RecordStream:
        """Re-map a letter's raw row with ``options["mapping"]``, else the mapping it was ingested with."""
        mapping_path = options.get("mapping") or letter.details.get("mapping")
        if not mapping_path:
            problem = "no mapping is recorded with this letter; pass --mapping MAP.yaml"
            return RecordStream(letter.source, [_failed(letter, letter.details, problem)])
        mapping = self._load(Path(mapping_path))
        details = {**letter.details, "mapping": str(mapping.path.resolve())}
        stream = RecordStream(
            letter.source, [], default_region=mapping.default_region, timezone=mapping.timezone
        )
        row = _reparse(letter.raw, letter.location, details)
        index = details.get("event_index")
        if row.values is None:
            stream.records = [_failed(letter, details, row.error or "the record cannot be read")]
        elif index is not None and index >= len(mapping.events):
            problem = f"{mapping.path} has no events[{index}] (the event this letter was for)"
            stream.records = [_failed(letter, details, problem)]
        else:
            candidates = mapping.apply(row.values, letter.raw)
            stream.records = [
                _candidate_record(letter.raw, letter.location, candidate, details)
                for candidate in candidates
                if index is None or candidate.index == index
            ]
        return stream


def _failed(letter: DeadLetter, details: dict[str, Any], problem: str) -> SourceRecord:
    return SourceRecord(letter.raw, letter.location, error=problem, details=details)


def _reparse(raw: bytes, location: str, details: dict[str, Any]) -> Row:
    if details.get("format") == "csv":
        if not isinstance(details.get("columns"), list):
            return Row(None, raw, location, "the letter does not record the CSV header it was read with")
        row = parse_csv_record(
            raw,
            details["columns"],
            delimiter=details.get("delimiter", ","),
            quotechar=details.get("quotechar", '"'),
        )
    else:
        row = parse_json_record(raw)
    return Row(row.values, raw, location, row.error)
