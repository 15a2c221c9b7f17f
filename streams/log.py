"""The event-log interface every backend implements.

A log is a set of named topics, each split into partitions; a record's partition is
chosen from its key with Kafka's own partitioner (murmur2), so one customer's events
land in the same partition, in order, whichever backend runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

EVENTS_TOPIC = "patron.events"
DEAD_LETTER_TOPIC = "patron.deadletter"


@dataclass(frozen=True, slots=True)
class Message:
    """A record to append: routing key, dedup id, encoded value and event time (ms)."""

    key: bytes | None
    event_id: str | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    """A record as stored: its position in the log plus what was appended."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event_id: str | None
    value: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: new records written, and records skipped as already present."""

    appended: int
    duplicates: int


@lru_cache(maxsize=65536)
def partition_for(key: bytes | None, partitions: int) -> int:
    """Kafka's default partition for ``key`` (murmur2, as the Java client and librdkafka's murmur2)."""
    if key is None:
        return 0
    # Imported here: importing kafka-python costs ~0.2 s, which every CLI start would pay.
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


class EventLog(Protocol):
    """Durable, partitioned, append-only topics; appends are idempotent by ``event_id``."""

    def ensure_topic(self, topic: str, partitions: int | None = None) -> int:
        """Create ``topic`` if missing; return its partition count."""
        ...

    def append(self, topic: str, messages: Sequence[Message]) -> AppendResult:
        """Append durably: when this returns, the records survive a crash."""
        ...

    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        """Up to ``limit`` records of one partition starting at ``offset``."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition."""
        ...

    def topics(self) -> dict[str, int]:
        """Existing topics with their partition counts."""
        ...

    def close(self) -> None:
        """Release connections; pending appends are flushed first."""
        ...


def scan(log: EventLog, topic: str, batch: int = 5000) -> Iterator[Record]:
    """Every record of ``topic`` present now, partition by partition (for tail, count, replay)."""
    for partition, end in sorted(log.end_offsets(topic).items()):
        offset = 0
        while offset < end:
            records = log.read(topic, partition, offset, min(batch, end - offset))
            if not records:
                break
            yield from records
            offset = records[-1].offset + 1
