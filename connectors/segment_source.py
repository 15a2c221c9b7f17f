"""The ``segment`` connector: files of Segment/RudderStack messages, and replay of the HTTP collector's letters.

The collector files its dead letters under this connector's name with each message's raw
JSON, so ``patron dlq replay`` sends them through the same Segment message mapping again
(as received at the letter's original time). The same mapping also ingests exported
messages, one JSON object per line::

    patron ingest collector_batch.jsonl --connector segment --option source=web

The mapping (``patron.connectors.segment``) is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

from patron.connectors.deadletter import DeadLetter
from patron.connectors.files import JsonlReader, Row, open_reader, parse_json_record
from patron.connectors.plugins import RecordStream, SourceRecord
from patron.errors import PatronError

CONNECTOR_NAME = "segment"


def _traits(options: Mapping[str, str]) -> tuple[str, ...]:
    """Traits that are ids in other systems: the option, else the collector's own setting."""
    from patron.connectors.collector import EXTERNAL_ID_TRAITS_ENV

    names = options.get("external_id_traits") or os.environ.get(EXTERNAL_ID_TRAITS_ENV, "")
    return tuple(name.strip() for name in names.split(",") if name.strip())


def map_message(
    row: Row, source: str, traits: Iterable[str], received_at: datetime | None = None
) -> list[SourceRecord]:
    """The events of one raw message (a message with a companion event yields two), or its rejection."""
    from patron.connectors.segment import SegmentError, segment_to_events

    if row.values is None:
        return [SourceRecord(row.raw, row.location, error=row.error)]
    try:
        events = segment_to_events(row.values, source, received_at=received_at, external_id_traits=traits)
    except SegmentError as exc:
        return [SourceRecord(row.raw, row.location, error=str(exc))]
    return [SourceRecord(row.raw, row.location, event=event) for event in events]


class MessageFile:
    """A JSONL file of Segment messages as a stream of candidate events."""

    def __init__(self, path: Path, source: str, traits: tuple[str, ...]):
        reader = open_reader(path, "jsonl")
        assert isinstance(reader, JsonlReader)
        self.reader = reader
        self.source = source
        self.traits = traits
        self.default_region: str | None = None
        self.timezone: str | None = None
        self.unit = reader.unit
        self.total = reader.total

    def position(self) -> int:
        return self.reader.position()

    def __iter__(self) -> Iterator[SourceRecord]:
        for row in self.reader:
            yield from map_message(row, self.source, self.traits)


class SegmentConnector:
    """Options: ``source`` (required for files: the source name of the events), ``external_id_traits``."""

    def open(self, target: str, options: Mapping[str, str]) -> MessageFile:
        source = options.get("source", "").strip()
        if not source:
            raise PatronError(f"{target}: the segment connector needs the source name: --option source=NAME")
        return MessageFile(Path(target), source, _traits(options))

    def replay(self, letter: DeadLetter, options: Mapping[str, str]) -> RecordStream:
        row = parse_json_record(letter.raw, letter.location)
        records = map_message(row, letter.source, _traits(options), received_at=letter.received_at)
        return RecordStream(letter.source, records)
