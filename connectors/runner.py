"""Runs a connector's records through the shared ingest path and accounts for every one of them.

Every record a stream yields ends as exactly one of: candidate event (then accepted,
duplicate or rejected by validation), rejected by the connector, or skipped on purpose,
so ``accepted + rejected + duplicates == read`` holds per target and nothing disappears.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patron.connectors.pipeline import Ingestor, IngestStats
from patron.connectors.plugins import ReportsProgress, SourceRecord, SourceStream
from patron.events.codec import EventCodec
from patron.streams.log import EventLog

REASONS_KEPT = 5
PROGRESS_EVERY = 500


class RecordIngestor(Ingestor):
    """An :class:`Ingestor` fed :class:`SourceRecord` objects, whose dead letters keep each record's ``details``.

    The details (mapping path, event index, CSV header...) are what ``patron dlq replay``
    needs to re-read a letter's raw bytes; the base class files only the event type.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._details: dict[str, Any] = {}

    def submit(self, record: SourceRecord) -> str | None:
        """Queue one record; its rejection reason, or None (accepted, or skipped when it has no event)."""
        self._details = record.details
        if record.error is not None:
            self.reject(record.raw, record.location, record.error, record.details)
            return record.error
        if record.event is None:
            return None
        return self.add(record.event, record.raw, record.location)

    def _file(self, raw: bytes, location: str, reason: str, details: dict[str, Any]) -> None:
        super()._file(raw, location, reason, {**self._details, **details})


@dataclass
class StreamResult:
    """What became of one target's records; ``rejections`` holds the first few (location, reason)."""

    target: str
    stats: IngestStats
    skipped: int = 0
    rejections: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, **self.stats.as_dict(), "skipped": self.skipped}


def run_stream(
    target: str,
    stream: SourceStream,
    *,
    log: EventLog,
    codec: EventCodec,
    connector: str,
    batch_size: int = 2000,
    on_progress: Callable[[int], None] | None = None,
) -> StreamResult:
    """Ingest every record of ``stream``; ``on_progress`` gets the stream's position now and then.

    What was queued is flushed even when the stream fails part-way (a corrupt Parquet row
    group), so the counts always describe what is stored.
    """
    ingestor = RecordIngestor(
        log,
        codec,
        source=stream.source,
        connector=connector,
        default_region=stream.default_region,
        timezone=stream.timezone,
        batch_size=batch_size,
    )
    result = StreamResult(target, ingestor.stats)
    measured = isinstance(stream, ReportsProgress)
    count = 0
    try:
        for record in stream:
            count += 1
            reason = ingestor.submit(record)
            if reason is not None:
                if len(result.rejections) < REASONS_KEPT:
                    result.rejections.append((record.location, reason))
            elif record.event is None and record.error is None:
                result.skipped += 1
            if on_progress is not None and count % PROGRESS_EVERY == 0:
                on_progress(stream.position() if measured else count)
    finally:
        ingestor.flush()
    if on_progress is not None:
        on_progress(stream.position() if measured else count)
    return result
