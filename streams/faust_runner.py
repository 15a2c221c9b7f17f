"""The Kafka runner: the same :class:`~patron.streams.processor.Processor` objects as a faust app.

Layout. Each processor becomes one agent on its input topics (keys and values as raw bytes,
decoded with :class:`~patron.events.codec.EventCodec`), batching with ``take_events``. Each of its
stores is a faust table ``<processor>.<store>`` (in memory, backed by the compacted changelog
topic ``<app id>-<processor>.<store>-changelog``) partitioned like the input, behind the same
write-back :class:`~patron.streams.state.CachedStore` the embedded runner uses. A processor
that needs one total order of all events (``total_order = True``, the identity stage) reads
``patron.<name>-input``, a 1-partition topic a small ``rekey`` agent fills from its inputs.
Workers started with the same app id share the partitions (and so the tables) between them.

Kafka delivers at least once: after a crash or a rebalance, records processed since the last
offset commit come again, and a batch's changelog writes may have been half sent. Two more
tables per processor make the effects exactly-once anyway:

* ``<processor>.__seen``: event id -> ``partition:offset`` of the events applied, the most recent
  ``dedup_window`` per partition. An event already there is skipped, whether it is a redelivery
  or a duplicate record (an upstream re-emission, a re-ingest).
* ``<processor>.__journal``: per input partition, every table write of the partition's last
  batch (state and ``__seen``). A batch first sends its emitted events and waits for them,
  then writes its journal entry and waits for it, then writes the tables and waits for them
  (so a batch is durable before its offsets can be committed). Whatever a crash
  interrupts, the journal (recovered with the partition) completes the batch's writes before
  the partition's next batch, and its ``__seen`` marks keep the batch from being applied twice.

Both rely on the tables holding everything their changelogs hold when a partition's first batch
runs, so the runner reads any changelog tail faust's recovery left out (see ``_changelog_tails``).

Guarantees: state effects are exactly-once per event id (within the dedup window);
emitted events are at-least-once with deterministic ids (a batch interrupted between sending
and journaling is re-run and re-sends them), which downstream processors skip as duplicates.
Undecodable records and records a processor fails on become dead letters (deterministic ids).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.errors import EXIT_BUG, EXIT_INVALID, PatronError
from patron.events.codec import EventCodec
from patron.streams.kafka_log import EVENT_ID_HEADER, KafkaLog
from patron.streams.local_runner import (
    DEFAULT_BATCH_SIZE,
    ProcessFailed,
    ProcessorStats,
    dead_letter,
    decode_event,
    failure_reason,
    process_events,
)
from patron.streams.log import Message, Record, partition_for
from patron.streams.processor import Processor, Timed
from patron.streams.state import DEFAULT_CACHE_SIZE, CachedStore, store_name

DEFAULT_DEDUP_WINDOW = 100_000
"""Applied event ids remembered per input partition (duplicates further apart are applied again)."""
MAX_JOURNAL_BYTES = 512 * 1024
"""A batch whose journal entry would be bigger is split (Kafka's default message limit is 1 MB)."""
STATUS_INTERVAL_S = 10.0

logger = logging.getLogger(__name__)


def rekey_topic(processor: Processor) -> str:
    """The 1-partition topic a ``total_order`` processor reads on Kafka."""
    return f"patron.{processor.name}-input"


def consumed_topics(processor: Processor) -> tuple[str, ...]:
    """What the processor's agent reads: its inputs, or its rekey topic if it needs one order."""
    if getattr(processor, "total_order", False):
        return (rekey_topic(processor),)
    return tuple(processor.inputs)


@dataclass(frozen=True)
class WorkerConfig:
    """How to run: broker, app id (workers with the same id share the work), batching, timeouts."""

    app_id: str
    bootstrap: str
    datadir: Path
    partitions: int = 4
    batch_size: int = DEFAULT_BATCH_SIZE
    within: float = 0.5
    """Seconds a batch waits to fill before it is processed anyway."""
    session_timeout: float = 30.0
    """Seconds before a silent worker's partitions go to the others (also the rebalance timeout)."""
    dedup_window: int = DEFAULT_DEDUP_WINDOW
    cache_size: int = DEFAULT_CACHE_SIZE
    loglevel: str = "WARNING"
    timer_interval: float = 10.0
    """Seconds between asking timed processors for due records (see ``streams.processor.Timed``)."""


class TableStore(CachedStore):
    """A processor store over a faust table holding JSON bytes (keys of active and standby partitions)."""

    def __init__(self, table: Any, cache_size: int = DEFAULT_CACHE_SIZE):
        super().__init__(table.name, cache_size)
        self.table = table

    def _load(self, key: str) -> bytes | None:
        return self.table.data.get(key)

    def _persisted_keys(self) -> Iterator[str]:
        return iter(list(self.table.data.keys()))

    def scan(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value) as written to the table, without filling the cache (timers read it
        between or during batches: what a batch has not yet written is not there, which only
        delays a due record to the next tick)."""
        for key, raw in list(self.table.data.items()):
            yield key, orjson.loads(raw)


def _write(table: Any, partition: int, key: str, value: bytes | None) -> Awaitable[Any]:
    """Set (or, for None, delete) ``key`` in ``table`` and its changelog partition ``partition``;
    returns the send's future, done once the broker has the record.

    The partition is explicit, not faust's "current event", because a batch spans partitions.
    Callers wait on the futures, not on ``producer.flush()``: a flush can return while the last
    buffered changelog record is still on its way to the client.
    """
    if value is None:
        table.data.pop(key, None)
        return table.send_changelog(partition, key, None, value_serializer="raw")
    table.data[key] = value
    return table.send_changelog(partition, key, value)


def _raw_topic(app: faust.App, names: tuple[str, ...]) -> Any:
    """Topics read as raw bytes: Patron decodes values itself (faust would otherwise try JSON)."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def _record(event: Any) -> Record:
    """A faust event as the log's :class:`Record`, for the helpers both runners share."""
    message = event.message
    headers = message.headers or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    event_id = next((bytes(v).decode() for k, v in pairs if k == EVENT_ID_HEADER and v), None)
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        event_id=event_id,
        value=message.value,
        timestamp_ms=int((message.timestamp or 0) * 1000),
    )


class _Output:
    """Sending for all agents: emitted events, rekeyed records and dead letters."""

    def __init__(self, app: faust.App, log: KafkaLog):
        self.app = app
        self.log = log
        self._partitions: dict[str, int] = {}
        self._letters = DeadLetterStore(log)

    def partitions(self, topic: str, wanted: int | None = None) -> int:
        """Partitions of ``topic``, created (with ``wanted`` or the default count) if missing."""
        found = self._partitions.get(topic)
        if found is None:
            found = self._partitions[topic] = self.log.ensure_topic(topic, wanted)
        return found

    async def send(self, topic: str, message: Message, partition: int | None = None) -> Awaitable[Any]:
        """Queue ``message``; its partition is the log's (murmur2 of the key) unless given. Returns
        the delivery future."""
        if partition is None:
            partition = partition_for(message.key, self.partitions(topic))
        headers = [(EVENT_ID_HEADER, message.event_id.encode())] if message.event_id else None
        return await self.app.producer.send(
            topic, message.key, message.value, partition, message.timestamp_ms / 1000, headers
        )

    def file(self, letter: DeadLetter) -> int:
        """File a dead letter (a blocking append, but rare); returns 1 if it was new to this worker."""
        return self._letters.add([letter])


class _Stage:
    """One processor as an agent with its tables; see the module docstring for the protocol."""

    def __init__(
        self,
        app: faust.App,
        processor: Processor,
        codec: EventCodec,
        config: WorkerConfig,
        output: _Output,
        stats: ProcessorStats,
    ):
        self.app = app
        self.processor = processor
        self.codec = codec
        self.config = config
        self.output = output
        self.stats = stats
        topics = consumed_topics(processor)
        total_order = getattr(processor, "total_order", False)
        counts = {topic: output.partitions(topic, 1 if total_order else None) for topic in topics}
        if len(set(counts.values())) != 1 or (total_order and set(counts.values()) != {1}):
            raise PatronError(
                f"processor {processor.name!r} reads topics with partition counts {counts}; its tables are "
                "partitioned like its input, so the counts must match (and be 1 for a total-order "
                "processor): recreate the topic with the right count",
                EXIT_INVALID,
            )
        partitions = next(iter(counts.values()))

        def table(store: str) -> Any:
            return app.Table(
                store_name(processor.name, store), key_type=str, value_type=bytes, partitions=partitions
            )

        self.stores = {store: TableStore(table(store), config.cache_size) for store in processor.stores}
        self.journal = table("__journal")
        self.seen = table("__seen")
        self.tables = {view.table.name: view.table for view in self.stores.values()}
        self.tables[self.seen.name] = self.seen
        self._ready: set[int] = set()
        self._applied: dict[int, deque[tuple[int, str]]] = {}
        self._stale = False
        channel = _raw_topic(app, topics)

        async def consume(stream: Any) -> None:
            async for events in stream.take_events(config.batch_size, within=config.within):
                await self.batch(events)

        app.agent(channel, name=f"patron-{processor.name}")(consume)

    def reassigned(self) -> None:
        """Partitions moved: caches and per-partition bookkeeping are rebuilt before the next batch."""
        self._stale = True

    async def batch(self, events: list[Any]) -> None:
        if self._stale:
            self._stale = False
            self._ready.clear()
            self._applied.clear()
            for view in self.stores.values():
                view.clear_cache()
        by_partition: dict[int, list[Record]] = {}
        for event in events:
            record = _record(event)
            by_partition.setdefault(record.partition, []).append(record)
        for partition, records in by_partition.items():
            if partition not in self._ready:
                await self._recover(partition)
            await self._apply(partition, records)

    async def _recover(self, partition: int) -> None:
        """Finish the partition's recovery: the changelog tails, then the last journaled batch,
        then its applied ids in order."""
        caught_up = await asyncio.to_thread(self._changelog_tails, partition)
        for table, records in caught_up:
            for record in records:
                key = orjson.loads(record.key)
                if record.value is None:
                    table.data.pop(key, None)
                else:
                    table.data[key] = record.value
        raw = self.journal.data.get(str(partition))
        repairs = []
        if raw is not None:
            for table_name, writes in orjson.loads(raw).items():
                table = self.tables[table_name]
                for key, text in writes.items():
                    value = None if text is None else text.encode()
                    if table.data.get(key) != value:
                        repairs.append(_write(table, partition, key, value))
        await asyncio.gather(*repairs)
        logger.info(
            "%s partition %d: %s changelog records read after faust's recovery, %d keys repaired from the journal",
            self.processor.name,
            partition,
            {table.name: len(records) for table, records in caught_up},
            len(repairs),
        )
        if repairs or any(records for _, records in caught_up):
            for view in self.stores.values():
                view.clear_cache()
        prefix = f"{partition}:".encode()
        applied = sorted(
            (int(mark[len(prefix) :]), event_id)
            for event_id, mark in self.seen.data.items()
            if mark.startswith(prefix)
        )
        self._applied[partition] = deque(applied)
        self._ready.add(partition)

    def _changelog_tails(self, partition: int) -> list[tuple[Any, list[Record]]]:
        """Changelog records of ``partition`` faust's recovery may not have applied, per table (blocking).

        faust applies a changelog partition up to the end offset the broker reported in
        ListOffsets when recovery started (its "highwater"); records it receives after that wait
        in a buffer, unapplied. Some Kafka-compatible brokers (tansu) under-report that offset
        (see kafka_log.py), which would silently drop the last writes before a crash. So the
        runner reads from the highwater to the true end (from a fetch) itself; on a correct broker
        that is the one record faust already applied.
        """
        highwaters = self.app.tables.recovery.active_highwaters
        log = self.output.log
        tails = []
        for table in [*self.tables.values(), self.journal]:
            topic = table.changelog_topic_name
            position = max(0, highwaters.get(TP(topic, partition)) or 0)
            end = log.end_offsets(topic).get(partition, 0)
            records: list[Record] = []
            while position < end:
                chunk = log.read(topic, partition, position, end - position)
                if not chunk:
                    break
                records.extend(chunk)
                position = chunk[-1].offset + 1
            tails.append((table, records))
        return tails

    def _decode(
        self, records: list[Record], poisoned: set[int]
    ) -> tuple[list[dict[str, Any] | None], list[tuple[int, str]], int]:
        """The events to process (None: skip), the ``(offset, event id)`` marks to record as
        applied (poisoned ones included, so a redelivery skips them too), and the duplicates."""
        events: list[dict[str, Any] | None] = []
        marks: list[tuple[int, str]] = []
        batch_ids: set[str] = set()
        duplicates = 0
        for index, record in enumerate(records):
            event, reason = decode_event(self.codec, self.processor, record)
            if reason is not None:
                self._file(record, reason)
            elif (event_id := event["envelope"]["event_id"]) in batch_ids or event_id in self.seen.data:
                duplicates += 1
                event = None
            else:
                batch_ids.add(event_id)
                marks.append((record.offset, event_id))
            events.append(None if index in poisoned else event)
        return events, marks, duplicates

    async def _apply(self, partition: int, records: list[Record]) -> None:
        try:
            await self._apply_batch(partition, records)
        except BaseException:
            self._discard()  # nothing of a failed batch may linger in the caches
            raise

    async def _apply_batch(self, partition: int, records: list[Record]) -> None:
        poisoned: set[int] = set()
        views: dict[str, Any] = dict(self.stores)
        while True:
            events, marks, duplicates = self._decode(records, poisoned)
            try:
                outgoing = process_events(self.processor, views, events, self.codec, records)
                break
            except ProcessFailed as failure:
                # As in the embedded runner: forget the batch, file the record, run the batch
                # again without it (re-decoded: ``process`` may have kept references into events).
                self._discard()
                record = records[failure.index]
                self._file(record, failure_reason(self.processor, record, failure.cause))
                poisoned.add(failure.index)
        changes = {view.table.name: view.changes() for view in self.stores.values()}
        writes = {
            name: {k: None if v is None else v.decode() for k, v in c.items()} for name, c in changes.items()
        }
        applied = self._applied[partition]
        seen_writes: dict[str, str | None] = {event_id: f"{partition}:{offset}" for offset, event_id in marks}
        overflow = max(0, len(applied) + len(marks) - self.config.dedup_window)
        for _, event_id in islice(applied, overflow):
            seen_writes.setdefault(event_id, None)
        writes[self.seen.name] = seen_writes
        journal = orjson.dumps(writes)
        if len(journal) > MAX_JOURNAL_BYTES and len(records) > 1:
            self._discard()
            half = len(records) // 2
            await self._apply_batch(partition, records[:half])
            await self._apply_batch(partition, records[half:])
            return
        # Durability order: emitted events, then the journal, then the tables (see the docstring);
        # each step waits until the broker has it, so the next batch starts on durable ground.
        await asyncio.gather(*[await self.output.send(topic, message) for topic, message, _ in outgoing])
        await _write(self.journal, partition, str(partition), journal)
        await asyncio.gather(
            *(
                _write(self.tables[name], partition, key, None if text is None else text.encode())
                for name, table_writes in writes.items()
                for key, text in table_writes.items()
            )
        )
        for view in self.stores.values():
            view.committed(changes[view.table.name])
        for _ in range(overflow):
            applied.popleft()
        applied.extend(marks)
        self.stats.processed += len(records)
        self.stats.duplicates += duplicates
        self.stats.emitted += len(outgoing)
        self.stats.batches += 1

    async def tick(self, now: float) -> None:
        """Send what the (timed) processor says is due at ``now``, reading the tables' written content.

        Tables also hold standby partitions, so two workers may send the same record: the records
        have deterministic ids, and the reading stage skips the second as a duplicate.
        """
        assert isinstance(self.processor, Timed)
        stores = {name: _Written(view) for name, view in self.stores.items()}
        emits = self.processor.timers(stores, int(now * 1_000_000))  # type: ignore[arg-type]
        deliveries = []
        for emit in emits:
            key = None if emit.key is None else emit.key.encode()
            deliveries.append(await self.output.send(emit.topic, self.codec.message(emit.event, key=key)))
        await asyncio.gather(*deliveries)
        self.stats.emitted += len(emits)

    def _discard(self) -> None:
        for view in self.stores.values():
            view.discard()

    def _file(self, record: Record, reason: str) -> None:
        self.stats.dead_letters += self.output.file(dead_letter(self.processor, record, reason))


class _Written:
    """A read-only view of a table's written content (``scan``, iteration, lookups), for timers."""

    def __init__(self, view: TableStore):
        self._view = view

    def scan(self) -> Iterator[tuple[str, Any]]:
        return self._view.scan()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._view.table.data.keys()))

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._view.table.data.get(key)
        return default if raw is None else orjson.loads(raw)


def _rekey_agent(app: faust.App, processor: Processor, output: _Output, config: WorkerConfig) -> None:
    """Forward the processor's inputs, unchanged, into its 1-partition topic: one total order."""
    target = rekey_topic(processor)
    source = _raw_topic(app, processor.inputs)

    async def forward(stream: Any) -> None:
        async for events in stream.take_events(config.batch_size, within=config.within):
            deliveries = []
            for event in events:
                record = _record(event)
                message = Message(record.key, record.event_id, record.value, record.timestamp_ms)
                deliveries.append(await output.send(target, message, partition=0))
            await asyncio.gather(*deliveries)  # forwarded before the batch's offsets may be committed

    app.agent(source, name=f"patron-{processor.name}-rekey")(forward)


def build_app(
    config: WorkerConfig,
    codec: EventCodec,
    processors: list[Processor],
    log: KafkaLog,
    report: Callable[[str], None],
) -> tuple[faust.App, dict[str, ProcessorStats]]:
    """The faust app running ``processors``, and the per-processor counters it updates."""
    names = [processor.name for processor in processors]
    if len(set(names)) != len(names):
        raise PatronError(f"processor names must be unique, got {names}", EXIT_INVALID)
    heartbeat = max(0.5, config.session_timeout / 6)
    app = faust.App(
        config.app_id,
        broker=";".join(f"kafka://{host}" for host in config.bootstrap.split(",")),
        store="memory://",
        datadir=str(config.datadir),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=config.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_session_timeout=config.session_timeout,
        broker_rebalance_timeout=config.session_timeout,
        broker_heartbeat_interval=heartbeat,
    )
    output = _Output(app, log)
    stats = {name: ProcessorStats() for name in names}
    stages = []
    for processor in processors:
        for topic in processor.inputs:
            output.partitions(topic, config.partitions)
        if getattr(processor, "total_order", False):
            _rekey_agent(app, processor, output, config)
        stages.append(_Stage(app, processor, codec, config, output, stats[processor.name]))

    @app.on_partitions_assigned.connect
    async def assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        for stage in stages:
            stage.reassigned()
        mine = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned if not tp.topic.endswith("-changelog"))
        report(f"worker {os.getpid()} assigned: {', '.join(mine) or 'nothing'}")

    timed = [stage for stage in stages if isinstance(stage.processor, Timed)]
    if timed:

        @app.timer(config.timer_interval)
        async def timers() -> None:
            if not app.tables.recovery.completed.is_set():
                return  # tables still recovering: what they hold is not yet the state
            for stage in timed:
                await stage.tick(time.time())

    last: dict[str, tuple[int, ...]] = {}

    @app.timer(STATUS_INTERVAL_S)
    async def status() -> None:
        for name, counts in stats.items():
            now = (counts.processed, counts.emitted, counts.duplicates, counts.dead_letters)
            if last.get(name) != now:
                last[name] = now
                report(_status_line(name, counts))

    return app, stats


def _status_line(name: str, counts: ProcessorStats) -> str:
    return (
        f"{name}: processed {counts.processed}, emitted {counts.emitted}, "
        f"duplicates skipped {counts.duplicates}, dead letters {counts.dead_letters}"
    )


def run_worker(
    config: WorkerConfig,
    codec: EventCodec,
    processors: list[Processor],
    report: Callable[[str], None],
) -> dict[str, ProcessorStats]:
    """Run the worker until SIGINT/SIGTERM (it then commits and leaves the group); returns its counts."""
    log = KafkaLog(config.bootstrap, default_partitions=config.partitions)
    try:
        app, stats = build_app(config, codec, processors, log, report)
        worker = faust.Worker(app, loglevel=config.loglevel, quiet=True, redirect_stdouts=False)
        worker.spinner = None  # a terminal spinner would garble the worker's log lines
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise PatronError(
                    f"the faust worker stopped with exit code {exc.code}; the log above says why", EXIT_BUG
                ) from None
    finally:
        log.close()
    for name, counts in stats.items():
        report(_status_line(name, counts))
    return stats
