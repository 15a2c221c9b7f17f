"""The Kafka event log: the same :class:`~patron.streams.log.EventLog` over a Kafka-protocol broker.

Appends use an idempotent producer (``acks=all``) and return only when every record is
acknowledged, so "appended" means what it means on the embedded log: durable on the broker.
Keys are partitioned with murmur2 (``murmur2_random``, the Java client's partitioner), so a key
lands in the partition :func:`~patron.streams.log.partition_for` names, on either backend.

Kafka cannot deduplicate by ``event_id`` the way the embedded log does. A bounded in-process
window of recently appended ids per topic makes a retry from the same process count as a
duplicate instead of writing the record twice; an event re-sent by another process, or after the
window forgot it, is written again. Consumers therefore deduplicate by ``event_id`` themselves
(the ``event_id`` header travels with every record), which makes processing idempotent end to end.

End offsets are learned from the fetch response's high watermark (the end-of-partition event),
not from a ListOffsets answer alone: some Kafka-compatible brokers (tansu) answer ListOffsets
with the base offset of the last batch plus one, which undercounts whenever batches hold
several records.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from patron.errors import Unavailable
from patron.streams.log import AppendResult, Message, Record

EVENT_ID_HEADER = "event_id"
DEDUP_WINDOW = 1_000_000
"""How many recently appended event ids per topic the in-process duplicate check remembers."""

# The producer settings every writer of patron's topics uses (the log and the ingest benchmark):
# idempotent, fully acknowledged, keyed like Kafka's Java clients. gzip, not lz4/zstd: every Kafka
# client reads it without optional codec libraries (kafka-python and aiokafka/faust need extra
# packages for the others).
PRODUCER_CONFIG: dict[str, str | int | bool] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "compression.type": "gzip",
    "compression.level": 1,
}


class KafkaLog:
    """An :class:`~patron.streams.log.EventLog` on the Kafka cluster at ``bootstrap`` (``host:port,...``).

    ``timeout`` bounds every broker round trip (seconds): an unreachable broker raises
    :class:`~patron.errors.Unavailable` after that long instead of hanging.
    """

    def __init__(
        self,
        bootstrap: str,
        default_partitions: int = 4,
        replication_factor: int = 1,
        *,
        timeout: float = 10.0,
        dedup_window: int = DEDUP_WINDOW,
    ):
        self.bootstrap = bootstrap
        self.default_partitions = default_partitions
        self.replication_factor = replication_factor
        self.timeout = timeout
        self.dedup_window = dedup_window
        self._last_error: KafkaError | None = None
        common = {
            "bootstrap.servers": bootstrap,
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
            "error_cb": self._on_error,
            "logger": QuietLogger(),
        }
        self._admin = AdminClient(common)
        self._producer = Producer(
            {
                **common,
                **PRODUCER_CONFIG,
                "delivery.timeout.ms": int(timeout * 1000),
            }
        )
        self._consumer = Consumer(
            {
                **common,
                # Required by the client, never joined: partitions are assigned, offsets never committed.
                "group.id": f"patron-reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "fetch.wait.max.ms": 20,
                "fetch.error.backoff.ms": 20,
            }
        )
        self._consumer_lock = threading.Lock()
        self._partitions: dict[str, int] = {}
        self._recent: dict[str, OrderedDict[str, None]] = {}

    # -- errors ------------------------------------------------------------------------------
    def _on_error(self, error: KafkaError) -> None:
        """librdkafka reports connection trouble here; kept to explain a later timeout."""
        self._last_error = error

    def unavailable(self, action: str, cause: object | None = None) -> Unavailable:
        reason = cause if cause is not None else self._last_error
        detail = f": {reason.str() if isinstance(reason, KafkaError) else reason}" if reason else ""
        return Unavailable(
            f"Kafka broker {self.bootstrap}: {action} failed (waited up to {self.timeout:g}s){detail}; "
            "check that it is running and that --broker / PATRON_BROKER names it"
        )

    # -- topics ------------------------------------------------------------------------------
    def _metadata(self, topic: str | None = None) -> ClusterMetadata:
        try:
            return self._admin.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self.unavailable("listing topics", exc.args[0]) from None

    def _partition_count(self, topic: str) -> int | None:
        """Partitions of ``topic``, or None if it does not exist (cached once seen: counts only grow)."""
        known = self._partitions.get(topic)
        if known is not None:
            return known
        found = self.topics().get(topic)
        if found:
            self._partitions[topic] = found
        return found

    def topics(self) -> dict[str, int]:
        metadata = self._metadata()
        return {
            name: len(meta.partitions)
            for name, meta in sorted(metadata.topics.items())
            if not name.startswith("__") and meta.error is None and meta.partitions
        }

    def ensure_topic(self, topic: str, partitions: int | None = None) -> int:
        existing = self._partition_count(topic)
        if existing:
            return existing
        wanted = partitions or self.default_partitions
        futures = self._admin.create_topics(
            [NewTopic(topic, wanted, self.replication_factor)], operation_timeout=self.timeout
        )
        try:
            futures[topic].result(timeout=self.timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise self.unavailable(f"creating topic {topic!r}", error) from None
        except TimeoutError:
            raise self.unavailable(f"creating topic {topic!r}") from None
        return self._await_topic(topic)

    def _await_topic(self, topic: str) -> int:
        """Wait until every partition of a new topic has a leader, so appends do not race its creation."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            meta = self._metadata(topic).topics.get(topic)
            ready = meta is not None and meta.error is None and bool(meta.partitions)
            if ready and all(p.leader >= 0 and p.error is None for p in meta.partitions.values()):
                self._partitions[topic] = len(meta.partitions)
                return len(meta.partitions)
            time.sleep(0.05)
        raise self.unavailable(f"waiting for topic {topic!r} to get partition leaders")

    # -- append ------------------------------------------------------------------------------
    def append(self, topic: str, messages: Sequence[Message]) -> AppendResult:
        if not messages:
            return AppendResult(0, 0)
        self.ensure_topic(topic)
        recent = self._recent.setdefault(topic, OrderedDict())
        fresh: list[Message] = []
        batch_ids: set[str] = set()
        for message in messages:
            event_id = message.event_id
            if event_id is not None:
                if event_id in recent or event_id in batch_ids:
                    continue
                batch_ids.add(event_id)
            fresh.append(message)
        failures: list[KafkaError] = []
        acknowledged: set[str] = set()

        def delivered(error: KafkaError | None, event_id: str | None) -> None:
            if error is not None:
                failures.append(error)
            elif event_id is not None:
                acknowledged.add(event_id)

        for message in fresh:
            self._produce(topic, message, delivered)
        remaining = self._producer.flush(self.timeout)
        if remaining:
            self._producer.purge()
            self._producer.flush(0)
        # Remembered in append order (reports arrive per partition), and only what the broker
        # acknowledged: a retry after a partial failure re-sends exactly the rest.
        self._remember(recent, [m.event_id for m in fresh if m.event_id in acknowledged])
        if remaining:
            raise self.unavailable(f"acknowledging {remaining} of {len(fresh)} records to {topic!r}")
        if failures:
            raise self.unavailable(
                f"appending {len(failures)} of {len(fresh)} records to {topic!r}", failures[0]
            )
        return AppendResult(appended=len(fresh), duplicates=len(messages) - len(fresh))

    def _produce(
        self, topic: str, message: Message, delivered: Callable[[KafkaError | None, str | None], None]
    ) -> None:
        """Queue one record; while the local queue is full, serve delivery reports to make room."""
        extra = {} if message.key is not None else {"partition": 0}  # partition_for(None, n) == 0
        headers = [(EVENT_ID_HEADER, message.event_id.encode())] if message.event_id is not None else None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=message.value,
                    key=message.key,
                    timestamp=message.timestamp_ms,
                    headers=headers,
                    on_delivery=lambda error, _record, event_id=message.event_id: delivered(error, event_id),
                    **extra,
                )
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise self.unavailable(f"making room in the producer queue for {topic!r}") from None
                self._producer.poll(0.05)

    def _remember(self, recent: OrderedDict[str, None], event_ids: list[str]) -> None:
        for event_id in event_ids:
            recent[event_id] = None
        while len(recent) > self.dedup_window:
            recent.popitem(last=False)

    # -- read --------------------------------------------------------------------------------
    def end_offsets(self, topic: str) -> dict[int, int]:
        count = self._partition_count(topic)
        if not count:
            return {}
        with self._consumer_lock:
            return self._probe_ends(topic, range(count))

    def group_lag(self, group_id: str, topics: Sequence[str]) -> int | None:
        """Records of ``topics`` that consumer group ``group_id`` has not committed yet, or None while
        one of the topics does not exist. Reads the group's committed offsets without joining it."""
        group = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group_id, "enable.auto.commit": False}
        )
        try:
            total = 0
            for topic in topics:
                ends = self.end_offsets(topic)
                if not ends:
                    return None
                committed = group.committed([TopicPartition(topic, p) for p in ends], timeout=self.timeout)
                total += sum(
                    end - max(tp.offset, 0) for tp, end in zip(committed, ends.values(), strict=True)
                )
            return total
        finally:
            group.close()

    def _probe_ends(self, topic: str, partitions: range | list[int]) -> dict[int, int]:
        """Each partition's high watermark, from the end-of-partition event of a fetch at its end."""
        self._consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
        ends: dict[int, int] = {}
        deadline = time.monotonic() + self.timeout
        try:
            while len(ends) < len(partitions):
                if time.monotonic() > deadline:
                    raise self.unavailable(f"reading the end offsets of {topic!r}")
                for message in self._consumer.consume(num_messages=10_000, timeout=0.05):
                    error = message.error()
                    if error is None or message.topic() != topic:
                        continue
                    if error.code() == KafkaError._PARTITION_EOF:
                        ends.setdefault(message.partition(), message.offset())
                    else:
                        raise self.unavailable(f"reading the end offsets of {topic!r}", error)
        finally:
            self._consumer.unassign()
        return dict(sorted(ends.items()))

    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        count = self._partition_count(topic)
        if not count or partition >= count or limit <= 0:
            return []
        with self._consumer_lock:
            return self._read(topic, partition, offset, limit)

    def _read(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        """Fetch from ``offset`` until ``limit`` records or the partition's end.

        Past the end a broker may answer with nothing at all (no end-of-partition event), so after a
        quiet spell the end is probed; if ``offset`` is at or past it there is nothing to read.
        """
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        records: list[Record] = []
        position = offset
        last_progress = quiet_since = time.monotonic()
        try:
            while len(records) < limit:
                batch = self._consumer.consume(num_messages=min(limit - len(records), 100_000), timeout=0.05)
                for message in batch:
                    if message.topic() != topic or message.partition() != partition:
                        continue
                    error = message.error()
                    if error is None:
                        if position <= message.offset() and len(records) < limit:
                            records.append(record_of(message))
                            position = message.offset() + 1
                    elif error.code() != KafkaError._PARTITION_EOF:
                        raise self.unavailable(f"reading {topic}/{partition} at offset {position}", error)
                    elif message.offset() >= position:
                        return records
                now = time.monotonic()
                if batch:
                    last_progress = quiet_since = now
                elif now - quiet_since > 0.5:
                    if position >= self._probe_ends(topic, [partition]).get(partition, 0):
                        return records
                    self._consumer.assign([TopicPartition(topic, partition, position)])
                    quiet_since = time.monotonic()
                if now - last_progress > self.timeout:
                    raise self.unavailable(f"reading {topic}/{partition} at offset {position}")
        finally:
            self._consumer.unassign()
        return records

    def close(self) -> None:
        self._producer.flush(self.timeout)
        self._consumer.close()


class QuietLogger:
    """librdkafka's own log lines (a reconnect attempt every 50 ms while a broker is down) go to
    debug logging: the errors that matter reach the user once, through :class:`Unavailable`."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(__name__)

    def log(self, level: int, message: str, *args: object) -> None:
        self._logger.debug(message, *args)


def record_of(message: KafkaMessage) -> Record:
    headers = dict(message.headers() or ())
    event_id = headers.get(EVENT_ID_HEADER)
    return Record(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        event_id=event_id.decode() if event_id is not None else None,
        value=message.value(),
        timestamp_ms=message.timestamp()[1],
    )
