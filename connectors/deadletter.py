"""The dead-letter store: every rejected record, with its raw payload and the reason.

Dead letters are JSON records on the ``patron.deadletter`` topic of the same event log,
so they are as durable as accepted events and work identically on both backends. A
letter's id is derived from where the record came from and its bytes, so ingesting the
same bad file twice does not file the same letter twice.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from patron.streams.log import DEAD_LETTER_TOPIC, EventLog, Message, scan

LETTER_NAMESPACE = uuid.UUID("5b0f3f4e-3c1a-4f0e-9d7e-7a1c2b9d0e11")


@dataclass(frozen=True)
class DeadLetter:
    """One rejected record: where it came from, why it was refused, and its exact bytes."""

    source: str
    connector: str
    location: str
    reason: str
    raw: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            name = f"{self.connector}\x00{self.source}\x00{self.location}\x00".encode() + self.raw
            object.__setattr__(self, "id", str(uuid.uuid5(LETTER_NAMESPACE, name.hex())))

    def to_json(self) -> bytes:
        body = asdict(self)
        try:
            body["raw"], body["raw_encoding"] = self.raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body["raw"], body["raw_encoding"] = base64.b64encode(self.raw).decode(), "base64"
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        body = orjson.loads(data)
        encoding = body.pop("raw_encoding", "utf-8")
        raw = body["raw"].encode() if encoding == "utf-8" else base64.b64decode(body["raw"])
        return cls(
            source=body["source"],
            connector=body["connector"],
            location=body["location"],
            reason=body["reason"],
            raw=raw,
            received_at=datetime.fromisoformat(body["received_at"]),
            details=body.get("details") or {},
            id=body["id"],
        )


class DeadLetterStore:
    """Files and reads dead letters on the log's dead-letter topic."""

    def __init__(self, log: EventLog):
        self.log = log

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Append durably; returns how many were new (a letter already filed is not filed again)."""
        if not letters:
            return 0
        messages = [
            Message(
                key=letter.source.encode(),
                event_id=letter.id,
                value=letter.to_json(),
                timestamp_ms=int(letter.received_at.timestamp() * 1000),
            )
            for letter in letters
        ]
        return self.log.append(DEAD_LETTER_TOPIC, messages).appended

    def __iter__(self) -> Iterator[DeadLetter]:
        for record in scan(self.log, DEAD_LETTER_TOPIC):
            yield DeadLetter.from_json(record.value)
