"""Reading one topic from a consumer's committed position, record by record, on either backend.

For sinks that hand records to something outside the log (a webhook): the position moves past a
record only when the caller commits it, so a crash re-reads, never skips. Embedded, the position
is a ``consumer_offsets`` row written in a transaction; on Kafka, a consumer group's committed
offset (synchronous commits), so several readers with one group share the partitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from patron.errors import Unavailable
from patron.streams.kafka_log import KafkaLog, QuietLogger, record_of
from patron.streams.local_log import LocalLog
from patron.streams.log import EventLog, Record

SESSION_TIMEOUT_MS = 10_000
"""How long the group waits for a silent reader before giving its partitions to another member. Also how
long a new member waits to be assigned on some brokers (tansu: half of it), so not Kafka's 45 s."""
ASSIGNMENT_WAIT = 60.0
"""How long a Kafka reader waits to be given partitions by its consumer group before giving up."""
IDLE_POLL = 0.2
"""Seconds between looks at the log when following has caught up."""


class PositionedSource(Protocol):
    """A topic read from a consumer's committed position; ``commit`` moves the position past a record."""

    @property
    def log(self) -> EventLog:
        """Where dead letters go: the same log, so they are as durable as the records."""
        ...

    def pending(self) -> int | None:
        """Records not yet committed (for a progress bar), or None when unknown."""
        ...

    def records(self, follow: bool, stop: threading.Event) -> Iterator[Record]:
        """Records after the committed position; without ``follow``, only those present now."""
        ...

    def commit(self, record: Record) -> None: ...

    def close(self) -> None: ...


class LocalSource:
    """The embedded log: the position is the ``consumer_offsets`` row of ``group``, written in a transaction."""

    def __init__(self, log: LocalLog, topic: str, group: str, batch: int = 200):
        self.log, self.topic, self.group, self.batch = log, topic, group, batch
        log.ensure_topic(topic)
        self._positions = log.committed(group, topic)

    def pending(self) -> int:
        ends = self.log.end_offsets(self.topic)
        return sum(max(end - self._positions.get(p, 0), 0) for p, end in ends.items())

    def records(self, follow: bool, stop: threading.Event) -> Iterator[Record]:
        targets = self.log.end_offsets(self.topic)
        while not stop.is_set():
            found = False
            # One batch per partition in turn: partitions advance together, each one in its order.
            for partition in sorted(self._positions):
                if not follow and self._positions[partition] >= targets.get(partition, 0):
                    continue
                batch = self.log.read(self.topic, partition, self._positions[partition], self.batch)
                if not follow:
                    batch = [r for r in batch if r.offset < targets[partition]]
                for record in batch:
                    if stop.is_set():
                        return
                    found = True
                    yield record
            if not found:
                if not follow:
                    return
                stop.wait(IDLE_POLL)

    def commit(self, record: Record) -> None:
        with self.log.transaction() as tx:
            tx.commit_offsets(self.group, self.topic, {record.partition: record.offset + 1})
        self._positions[record.partition] = record.offset + 1

    def close(self) -> None:
        self.log.close()


class KafkaSource:
    """A Kafka consumer group: several sinks with one ``group`` share the partitions; commits are synchronous.

    Without ``follow`` the sink stops once every partition it was assigned reported its end
    (librdkafka's end-of-partition event, which Kafka-compatible brokers all send).
    """

    def __init__(self, log: KafkaLog, topic: str, group: str):
        self.log, self.topic, self.group = log, topic, group
        log.ensure_topic(topic)
        self._fatal: KafkaError | None = None
        self._consumer = Consumer(
            {
                "bootstrap.servers": log.bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "socket.connection.setup.timeout.ms": int(log.timeout * 1000),
                "error_cb": self._on_error,
                "logger": QuietLogger(),
            }
        )
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._fatal = error

    def pending(self) -> int | None:
        return self.log.group_lag(self.group, [self.topic])

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)
        self._at_end.difference_update(tp.partition for tp in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.difference_update(tp.partition for tp in partitions)

    def records(self, follow: bool, stop: threading.Event) -> Iterator[Record]:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = time.monotonic()
        while not stop.is_set():
            message = self._consumer.poll(IDLE_POLL)
            if self._fatal is not None:
                raise self.log.unavailable(f"consuming {self.topic!r} as group {self.group!r}", self._fatal)
            if message is None:
                if not self._assigned and time.monotonic() - started > ASSIGNMENT_WAIT:
                    raise Unavailable(
                        f"Kafka consumer group {self.group!r} got no partition of {self.topic!r} within "
                        f"{ASSIGNMENT_WAIT:g}s; other members may hold them all (use another --group)"
                    )
                if not follow and self._assigned and self._assigned <= self._at_end:
                    return
                continue
            error = message.error()
            if error is None:
                self._at_end.discard(message.partition())
                yield record_of(message)
            elif error.code() == KafkaError._PARTITION_EOF:
                self._at_end.add(message.partition())
            elif error.fatal():
                raise self.log.unavailable(f"consuming {self.topic!r}", error)

    def commit(self, record: Record) -> None:
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, record.partition, record.offset + 1)], asynchronous=False
            )
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            # The partition moved to another member meanwhile: it re-delivers from the last commit.
            if error.code() not in (
                KafkaError.REBALANCE_IN_PROGRESS,
                KafkaError.ILLEGAL_GENERATION,
                KafkaError.UNKNOWN_MEMBER_ID,
            ):
                raise self.log.unavailable(f"committing {self.topic}/{record.partition}", error) from None

    def close(self) -> None:
        self._consumer.close()  # leaves the group at once, so a restart is assigned without waiting
        self.log.close()
