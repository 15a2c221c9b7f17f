"""The dead-letter store: every rejected record, with its raw payload and the reason.

Dead letters are JSON records on the ``patron.deadletter`` topic of the same event log,
so they are as durable as accepted events and work identically on both backends. A
letter's id is derived from where the record came from and its bytes, so ingesting the
same bad file twice does not file the same letter twice.

The topic is append-only, so a letter is never edited: ``patron dlq replay`` appends a
:class:`Resolution` (the letter now passed, with the ids of the events it became) or a
:class:`ReplayFailure` (it still fails, with the new reason). A letter's status is the fold
of those records; records of different kinds are told apart by their ``kind`` key.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

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


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Resolution:
    """A letter that passed on replay; ``event_ids`` are the events it became."""

    kind: ClassVar[str] = "resolved"
    letter_id: str
    source: str
    event_ids: tuple[str, ...]
    at: datetime = field(default_factory=_now)

    @property
    def id(self) -> str:
        """One resolution per letter: resolving it again is a duplicate, not a second record."""
        return str(uuid.uuid5(LETTER_NAMESPACE, f"{self.kind}:{self.letter_id}"))

    def to_json(self) -> bytes:
        return orjson.dumps({"kind": self.kind, **asdict(self)})


@dataclass(frozen=True)
class ReplayFailure:
    """A replay attempt that failed again; its ``reason`` replaces the letter's in listings."""

    kind: ClassVar[str] = "replay_failed"
    letter_id: str
    source: str
    reason: str
    at: datetime = field(default_factory=_now)

    @property
    def id(self) -> str:
        return str(uuid.uuid5(LETTER_NAMESPACE, f"{self.kind}:{self.letter_id}:{self.at.isoformat()}"))

    def to_json(self) -> bytes:
        return orjson.dumps({"kind": self.kind, **asdict(self)})


@dataclass
class LetterStatus:
    """A letter with what replays made of it: pending until a :class:`Resolution` exists."""

    letter: DeadLetter
    resolution: Resolution | None = None
    last_failure: ReplayFailure | None = None

    @property
    def pending(self) -> bool:
        return self.resolution is None

    @property
    def reason(self) -> str:
        """The latest reason: the last failed replay's, else the one it was filed with."""
        return self.last_failure.reason if self.last_failure is not None else self.letter.reason


def decode_entry(data: bytes) -> DeadLetter | Resolution | ReplayFailure:
    body = orjson.loads(data)
    kind = body.get("kind")
    if kind == Resolution.kind:
        return Resolution(
            letter_id=body["letter_id"],
            source=body["source"],
            event_ids=tuple(body["event_ids"]),
            at=datetime.fromisoformat(body["at"]),
        )
    if kind == ReplayFailure.kind:
        return ReplayFailure(
            letter_id=body["letter_id"],
            source=body["source"],
            reason=body["reason"],
            at=datetime.fromisoformat(body["at"]),
        )
    return DeadLetter.from_json(data)


class DeadLetterStore:
    """Files and reads dead letters on the log's dead-letter topic."""

    def __init__(self, log: EventLog):
        self.log = log

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Append durably; returns how many were new (a letter already filed is not filed again)."""
        return self._append([(letter, letter.received_at) for letter in letters])

    def record(self, outcomes: Sequence[Resolution | ReplayFailure]) -> int:
        """Append replay outcomes durably (keyed by source, like the letters they are about)."""
        return self._append([(outcome, outcome.at) for outcome in outcomes])

    def _append(self, entries: Sequence[tuple[DeadLetter | Resolution | ReplayFailure, datetime]]) -> int:
        """Letters and outcomes share one topic, keyed by source so a source's history stays in order."""
        if not entries:
            return 0
        messages = [
            Message(
                key=entry.source.encode(),
                event_id=entry.id,
                value=entry.to_json(),
                timestamp_ms=int(at.timestamp() * 1000),
            )
            for entry, at in entries
        ]
        return self.log.append(DEAD_LETTER_TOPIC, messages).appended

    def _records(self) -> Iterator[DeadLetter | Resolution | ReplayFailure]:
        for record in scan(self.log, DEAD_LETTER_TOPIC):
            yield decode_entry(record.value)

    def __iter__(self) -> Iterator[DeadLetter]:
        """Every letter ever filed, resolved or not."""
        for item in self._records():
            if isinstance(item, DeadLetter):
                yield item

    def statuses(self) -> list[LetterStatus]:
        """Every letter with its replay outcomes, oldest letter first."""
        found: dict[str, LetterStatus] = {}
        resolutions: dict[str, Resolution] = {}
        failures: dict[str, ReplayFailure] = {}
        for item in self._records():
            if isinstance(item, DeadLetter):
                found[item.id] = LetterStatus(item)
            elif isinstance(item, Resolution):
                resolutions[item.letter_id] = item
            else:
                latest = failures.get(item.letter_id)
                if latest is None or item.at >= latest.at:
                    failures[item.letter_id] = item
        for letter_id, status in found.items():
            status.resolution = resolutions.get(letter_id)
            status.last_failure = failures.get(letter_id)
        return sorted(found.values(), key=lambda status: status.letter.received_at)
