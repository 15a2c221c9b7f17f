"""The ingest path every connector shares: validate, normalise, encode, append; reject to the DLQ.

Connectors turn their input into Avro-shaped event dicts and hand them to an
:class:`Ingestor`; it buffers valid events and writes them in batches (one durable
append per batch), and files every record it cannot accept as a dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.events.codec import EventCodec
from patron.events.models import InvalidEvent, validate_event
from patron.schemas.catalogue import UnknownEventType
from patron.streams.log import EVENTS_TOPIC, EventLog, Message


@dataclass
class IngestStats:
    """Counts a connector reports: every record read ends as accepted, rejected or duplicate."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
        }


class Ingestor:
    """Validates and appends events of one source in batches; rejects become dead letters."""

    def __init__(
        self,
        log: EventLog,
        codec: EventCodec,
        *,
        source: str,
        connector: str,
        default_region: str | None = None,
        timezone: str | None = None,
        batch_size: int = 2000,
    ):
        self.log = log
        self.codec = codec
        self.dead_letters = DeadLetterStore(log)
        self.source = source
        self.connector = connector
        self.default_region = default_region
        self.timezone = timezone
        self.batch_size = batch_size
        self.stats = IngestStats()
        self._events: list[Message] = []
        self._letters: list[DeadLetter] = []

    def add(self, data: dict[str, Any], raw: bytes, location: str) -> str | None:
        """Queue one candidate event; returns the rejection reason, or None when it was accepted."""
        self.stats.read += 1
        envelope = data.get("envelope")
        if isinstance(envelope, dict):
            envelope.setdefault("source", self.source)
            if "received_at" not in envelope:
                envelope["received_at"] = datetime.now(UTC)
        try:
            event = validate_event(data, default_region=self.default_region, timezone=self.timezone)
            message = self.codec.message(event)
        except (InvalidEvent, UnknownEventType) as exc:
            self._file(raw, location, str(exc), {"event_type": (envelope or {}).get("event_type")})
            return str(exc)
        self._events.append(message)
        if len(self._events) >= self.batch_size:
            self.flush()
        return None

    def reject(self, raw: bytes, location: str, reason: str, details: dict[str, Any] | None = None) -> None:
        """File a record the connector could not even turn into a candidate event (e.g. broken JSON)."""
        self.stats.read += 1
        self._file(raw, location, reason, details or {})

    def _file(self, raw: bytes, location: str, reason: str, details: dict[str, Any]) -> None:
        self.stats.rejected += 1
        self._letters.append(DeadLetter(self.source, self.connector, location, reason, raw, details=details))
        if len(self._letters) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Append queued events and dead letters durably; afterwards every counted record is stored."""
        if self._events:
            result = self.log.append(EVENTS_TOPIC, self._events)
            self.stats.accepted += result.appended
            self.stats.duplicates += result.duplicates
            self._events = []
        if self._letters:
            self.dead_letters.add(self._letters)
            self._letters = []
