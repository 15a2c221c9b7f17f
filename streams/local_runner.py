"""The embedded runner: processors over the SQLite log, each batch committed exactly once.

For each processor the runner reads a batch from its input topics at its committed positions
(consumer name = processor name), decodes it, calls ``process`` per event, and then commits in
ONE :meth:`~patron.streams.local_log.LocalLog.transaction`: the state the batch changed, the
events it emitted, and the new consumer positions. A crash at any point leaves either all of a
batch's effects or none, and a restart resumes at the committed positions, so every event
affects the state exactly once and every emitted event is appended exactly once (emitted events
also carry deterministic ids, which the log deduplicates).

Order: the records of a processor's input partitions are merged by (event time, topic,
partition, offset), always taking the smallest head among the partitions. That choice depends
only on what the log holds, never on where a batch started, so a run interrupted and resumed any
number of times feeds a processor the same sequence as one uninterrupted run over the same log.

A record that does not decode, or that makes ``process`` raise, is filed as a dead letter (raw
bytes, position, reason) and skipped; it never stops the runner. Letters have deterministic ids,
so one filed just before a crash is not filed twice.

Cost: Avro is most of a batch's work, so a record is never encoded or decoded twice for nothing.
An input event a processor passes on unchanged keeps its bytes (see ``Processor``); an event
emitted to two topics is encoded once; and a passed-on event that a later processor of this run
reads back is handed over as the decoded dict the runner already has, instead of being decoded
again (:class:`_Decoded`). Downstream processors drain their input before the first processor
takes its next batch, so those dicts are held only briefly.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from patron.connectors.deadletter import DeadLetter, DeadLetterStore
from patron.errors import PatronError, Unavailable
from patron.events.codec import EventCodec
from patron.streams.local_log import LocalLog
from patron.streams.log import AppendResult, Message, Record
from patron.streams.processor import Emit, Prefetching, Processor, Timed
from patron.streams.state import DEFAULT_CACHE_SIZE, SqliteStore, store_name

DEFAULT_BATCH_SIZE = 500
IDLE_SLEEP_S = 0.5
"""The longest a following run waits when nothing is new; another process's write wakes it at once."""
TIMER_INTERVAL_S = 10.0
"""How often ``run(follow=True)`` asks timed processors for records due (see ``Timed``)."""
DECODED_CACHE_SIZE = 50_000
"""Decoded passed-on events kept for the processor that reads them next (oldest dropped first)."""
RECORD_KEY = "_key"
"""Where runners put the record key (as text) in the event dict handed to ``process``."""


@dataclass
class ProcessorStats:
    """What one processor did in a run, and how many records still wait for it."""

    processed: int = 0
    emitted: int = 0
    duplicates: int = 0
    """Embedded: emitted events the log already held (a rebuild's re-emissions). Kafka: input
    events skipped because they were already applied (redeliveries, duplicate records)."""
    dead_letters: int = 0
    batches: int = 0
    remaining: int = 0


class _Cursor:
    """A processor's read position over its input partitions, merged in event-time order.

    Buffers hold records read ahead of the committed position; :meth:`take` pops the batch, and
    :meth:`rewind` drops the buffers when a batch did not commit as taken.
    """

    def __init__(self, log: LocalLog, consumer: str, topics: tuple[str, ...]):
        self._log = log
        self._consumer = consumer
        self._topics = topics
        self._buffers: dict[tuple[str, int], deque[Record]] = {}
        self._read_to: dict[tuple[str, int], int] = {}

    def rewind(self) -> None:
        self._buffers.clear()
        self._read_to.clear()

    def _discover(self) -> None:
        """Start any partition not yet tracked (topics appear when their first event is emitted)."""
        for topic in self._topics:
            for partition, offset in self._log.committed(self._consumer, topic).items():
                if (topic, partition) not in self._read_to:
                    self._read_to[(topic, partition)] = offset
                    self._buffers[(topic, partition)] = deque()

    def _head(self, part: tuple[str, int], chunk: int) -> Record | None:
        buffer = self._buffers[part]
        if not buffer:
            records = self._log.read(part[0], part[1], self._read_to[part], chunk)
            if records:
                buffer.extend(records)
                self._read_to[part] = records[-1].offset + 1
        return buffer[0] if buffer else None

    def take(self, limit: int) -> list[Record]:
        """Up to ``limit`` records: repeatedly the smallest head by (time, topic, partition, offset)."""
        self._discover()
        heads: list[tuple[int, str, int, int]] = []
        for part in self._buffers:
            head = self._head(part, limit)
            if head is not None:
                heads.append((head.timestamp_ms, part[0], part[1], head.offset))
        heapq.heapify(heads)
        batch: list[Record] = []
        while heads and len(batch) < limit:
            _, topic, partition, _ = heapq.heappop(heads)
            batch.append(self._buffers[(topic, partition)].popleft())
            head = self._head((topic, partition), limit)
            if head is not None:
                heapq.heappush(heads, (head.timestamp_ms, topic, partition, head.offset))
        return batch

    def remaining(self) -> int:
        """Records in the log not yet taken, over all input partitions."""
        self._discover()
        total = 0
        for topic in self._topics:
            for partition, end in self._log.end_offsets(topic).items():
                part = (topic, partition)
                total += end - self._read_to.get(part, 0) + len(self._buffers.get(part, ()))
        return total


class Outgoing(NamedTuple):
    """An emitted event, encoded: its topic, its message, and (when it is an input event passed
    on unchanged) that event's decoded dict, which a reader of ``topic`` may reuse."""

    topic: str
    message: Message
    passed_on: dict[str, Any] | None


class _Decoded:
    """Decoded passed-on events by log position, until a processor of this run reads them.

    Only what a committed append placed is added (so a position always holds those bytes), and
    each entry is handed out once: a batch that is rolled back and processed again decodes its
    records afresh, as ``process`` may have changed the dicts it was given.
    """

    def __init__(self, size: int):
        self.size = size
        self._events: dict[tuple[str, int, int], dict[str, Any]] = {}

    def add(self, appended: list[tuple[str, list[tuple[int, int] | None], list[Outgoing]]]) -> None:
        """Remember the passed-on events of a committed batch: ``(topic, placed, outgoing)`` per
        append. An event passed on to two places is remembered at the first only (no sharing)."""
        added: set[int] = set()
        for topic, placed, outgoing in appended:
            for where, out in zip(placed, outgoing, strict=True):
                if where is not None and out.passed_on is not None and id(out.passed_on) not in added:
                    added.add(id(out.passed_on))
                    self._events[(topic, where[0], where[1])] = out.passed_on
        for _ in range(len(self._events) - self.size):
            del self._events[next(iter(self._events))]

    def take(self, record: Record) -> dict[str, Any] | None:
        return self._events.pop((record.topic, record.partition, record.offset), None)

    def clear(self) -> None:
        self._events.clear()


class ProcessFailed(Exception):
    """``process`` (or encoding what it emitted) raised on the batch's record at ``index``."""

    def __init__(self, index: int, cause: BaseException):
        super().__init__(index, cause)
        self.index = index
        self.cause = cause


class LocalRunner:
    """Runs ``processors`` over ``log``; see the module docstring for the guarantees.

    One runner per log at a time: :meth:`run` and :meth:`reset` hold an exclusive lock file in
    the log's directory, because the state cache assumes nobody else changes the stores.
    """

    def __init__(
        self,
        log: LocalLog,
        codec: EventCodec,
        processors: list[Processor],
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        decoded_cache_size: int = DECODED_CACHE_SIZE,
    ):
        names = [processor.name for processor in processors]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise PatronError(f"processor names must be unique; more than one is called {duplicated}")
        self.log = log
        self.codec = codec
        self.processors = list(processors)
        self.stores = {
            p.name: {s: SqliteStore(log, store_name(p.name, s), cache_size) for s in p.stores}
            for p in processors
        }
        self.stats = {p.name: ProcessorStats() for p in processors}
        self._cursors = {p.name: _Cursor(log, p.name, tuple(p.inputs)) for p in processors}
        self._letters = DeadLetterStore(log)
        self._decoded = _Decoded(decoded_cache_size)

    # -- public ------------------------------------------------------------------------------
    def run(
        self,
        *,
        follow: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        stop: threading.Event | None = None,
        on_batch: Callable[[str, ProcessorStats], None] | None = None,
        idle_sleep: float = IDLE_SLEEP_S,
        timer_interval: float = TIMER_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> dict[str, ProcessorStats]:
        """Process until every processor is caught up (or, with ``follow``, until ``stop`` is set).

        Events a processor emits feed the processors that read their topic in the same run: each
        round the first processor takes one batch and every later one drains what waits for it.
        ``stop`` is checked between batches, so stopping never abandons a commit half-way.
        Timed processors are asked for due records when the run starts, once caught up (then the
        run goes on while that appends any) and, following, every ``timer_interval`` seconds of
        ``clock`` (the wall clock; tests pass their own).
        """
        if batch_size < 1:
            raise PatronError(f"batch size must be at least 1, got {batch_size}")
        stop = stop or threading.Event()
        with self._exclusive():
            # A run killed between the first processor's commit and the others' drain left records
            # waiting for them; drain those first, as the interrupted round would have, so every
            # processor sees the same interleaving of its inputs as in one uninterrupted run
            # (bench/chaos.py found transitions that differed without this).
            for processor in self.processors[1:]:
                while not stop.is_set() and self._step(processor, batch_size):
                    if on_batch is not None:
                        on_batch(processor.name, self.stats[processor.name])
            self.tick(clock())
            ticked = time.monotonic()
            for processor in self.processors:
                self.stats[processor.name].remaining = self._cursors[processor.name].remaining()
            while not stop.is_set():
                if follow and time.monotonic() - ticked >= timer_interval:
                    self.tick(clock())
                    ticked = time.monotonic()
                progressed = False
                for position, processor in enumerate(self.processors):
                    while not stop.is_set() and self._step(processor, batch_size):
                        progressed = True
                        if on_batch is not None:
                            on_batch(processor.name, self.stats[processor.name])
                        if position == 0:
                            break
                if not progressed:
                    if not follow:
                        if self.tick(clock()):
                            continue  # time moved windows while catching up: process those too
                        break
                    self.log.wait_for_writes(idle_sleep, stop)
        return self.stats

    def tick(self, now: float) -> int:
        """Append the records timed processors say are due at ``now`` (seconds since the epoch);
        returns how many were new to the log."""
        appended = 0
        for processor in self.processors:
            if not isinstance(processor, Timed):
                continue
            emits = processor.timers(dict(self.stores[processor.name]), int(now * 1_000_000))
            by_topic: dict[str, list[Message]] = {}
            for emit in emits:
                key = None if emit.key is None else emit.key.encode()
                by_topic.setdefault(emit.topic, []).append(self.codec.message(emit.event, key=key))
            with self.log.transaction() as tx:
                for topic, messages in by_topic.items():
                    appended += tx.append_placed(topic, messages)[0].appended
        return appended

    def reset(self) -> None:
        """Forget every processor's state and positions, so the next run rebuilds from offset 0.

        Topics the processors emitted to are kept: emitted events have deterministic ids, so the
        rebuild's re-emissions are recognised as duplicates and appended nothing, and downstream
        processors (reset too) re-read the same records. Only a processor whose rules changed
        would emit different events; see docs/runtime.md for that case.
        """
        with self._exclusive(), self.log.transaction() as tx:
            for processor in self.processors:
                for store in self.stores[processor.name].values():
                    store.erase()
                for topic in processor.inputs:
                    partitions = self.log.committed(processor.name, topic)
                    if partitions:
                        tx.commit_offsets(processor.name, topic, dict.fromkeys(partitions, 0))
                self._cursors[processor.name].rewind()
            self._decoded.clear()

    # -- one batch ---------------------------------------------------------------------------
    def _step(self, processor: Processor, batch_size: int) -> int:
        """Process and commit one batch of ``processor``; returns how many records it consumed."""
        cursor = self._cursors[processor.name]
        records = cursor.take(batch_size)
        if not records:
            return 0
        events = [self._decode(processor, record) for record in records]
        while True:
            try:
                emitted = self._commit(processor, records, events)
                break
            except ProcessFailed as failure:
                # Roll back to just before the failing record, file it, and commit up to and
                # including it (skipped). The earlier records are decoded and processed again
                # (``process`` may have kept references into them), which a deterministic
                # processor does identically.
                cursor.rewind()
                record = records[failure.index]
                self._file(processor, record, failure_reason(processor, record, failure.cause))
                records = records[: failure.index + 1]
                events = [*(self._decode(processor, r) for r in records[:-1]), None]
        stats = self.stats[processor.name]
        stats.processed += len(records)
        stats.batches += 1
        stats.emitted += emitted.appended
        stats.duplicates += emitted.duplicates
        stats.remaining = cursor.remaining()
        return len(records)

    def _commit(
        self, processor: Processor, records: list[Record], events: list[dict[str, Any] | None]
    ) -> AppendResult:
        """Process ``events`` and commit state, emitted events and positions in one transaction."""
        stores = self.stores[processor.name]
        views: dict[str, MutableMapping[str, Any]] = dict(stores)
        appended = duplicates = 0
        placed: list[tuple[str, list[tuple[int, int] | None], list[Outgoing]]] = []
        try:
            with self.log.transaction() as tx:
                if isinstance(processor, Prefetching):
                    _prefetch(processor, stores, events)
                outgoing = process_events(processor, views, events, self.codec, records)
                changes = {name: store.flush(tx) for name, store in stores.items()}
                for topic, group in _by_topic(outgoing).items():
                    result, where = tx.append_placed(topic, [out.message for out in group])
                    placed.append((topic, where, group))
                    appended += result.appended
                    duplicates += result.duplicates
                for topic, positions in _positions(records).items():
                    tx.commit_offsets(processor.name, topic, positions)
        except BaseException:
            for store in stores.values():
                store.discard()
            raise
        for name, store in stores.items():
            store.committed(changes[name])
        self._decoded.add(placed)
        return AppendResult(appended, duplicates)

    def _decode(self, processor: Processor, record: Record) -> dict[str, Any] | None:
        event = self._decoded.take(record)
        if event is not None:
            _set_key(event, record)
            return event
        event, reason = decode_event(self.codec, processor, record)
        if reason is not None:
            self._file(processor, record, reason)
        return event

    def _file(self, processor: Processor, record: Record, reason: str) -> None:
        if self._letters.add([dead_letter(processor, record, reason)]):
            self.stats[processor.name].dead_letters += 1

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        path = self.log.directory / "runner.lock"
        with path.open("a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise PatronError(
                    f"{self.log.directory}: another `patron run` (pid {holder}) is processing this log; "
                    "stop it first (one embedded runner per data directory)"
                ) from None
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


# -- shared with the faust runner ------------------------------------------------------------
def decode_event(
    codec: EventCodec, processor: Processor, record: Record
) -> tuple[dict[str, Any] | None, str | None]:
    """The event to hand to ``process`` (record key as text under ``_key``), or None and the reason
    it cannot be decoded (for a dead letter). A registry that does not answer raises instead."""
    try:
        event = codec.decode(record.value)
    except Unavailable:  # the registry is down: nothing would decode; stop with one line
        raise
    except Exception as exc:  # corrupt bytes fail in many ways; each is filed, none is fatal
        return None, (
            f"{_where(record)}: not a decodable event ({type(exc).__name__}: {exc}); "
            f"processor {processor.name!r} skipped it"
        )
    _set_key(event, record)
    return event, None


def _set_key(event: dict[str, Any], record: Record) -> None:
    if record.key is not None:
        event[RECORD_KEY] = record.key.decode("utf-8", "replace")


def process_events(
    processor: Processor,
    stores: dict[str, MutableMapping[str, Any]],
    events: list[dict[str, Any] | None],
    codec: EventCodec,
    records: list[Record],
) -> list[Outgoing]:
    """Call ``process`` on each event (None: skipped; ``records[i]`` is where ``events[i]`` was read)
    and encode what it emits, in order.

    Raises :class:`ProcessFailed` naming the event whose processing (or emitted event) failed.
    """
    outgoing: list[Outgoing] = []
    for index, event in enumerate(events):
        if event is None:
            continue
        try:
            encoded: dict[int, bytes] = {}
            for emit in processor.process(stores, event):
                outgoing.append(emit_message(codec, emit, event, records[index], encoded))
        except Unavailable:
            raise
        except Exception as exc:  # a processor bug on one record must not stop the pipeline
            raise ProcessFailed(index, exc) from exc
    return outgoing


def emit_message(
    codec: EventCodec, emit: Emit, cause: dict[str, Any], record: Record, encoded: dict[int, bytes]
) -> Outgoing:
    """The log message of an event emitted while processing ``cause`` (read from ``record``): keyed
    by ``emit.key`` when one is given, else by the codec's routing.

    Encodes only what is new: when the emitted event *is* the cause's envelope and payload (the
    cause passed on, see ``Processor``), the message carries the record's own bytes; ``encoded``
    holds, per emitted dict of this ``process`` call, bytes already made for another topic.
    """
    event = emit.event
    key = None if emit.key is None else emit.key.encode()
    if event.get("envelope") is cause["envelope"] and event.get("payload") is cause["payload"]:
        return Outgoing(emit.topic, codec.message(event, key=key, value=record.value), event)
    value = encoded.get(id(event))
    if value is None:
        value = encoded[id(event)] = codec.encode(event)
    return Outgoing(emit.topic, codec.message(event, key=key, value=value), None)


def dead_letter(processor: Processor, record: Record, reason: str) -> DeadLetter:
    """The dead letter for a record ``processor`` skipped; its id depends only on processor and
    position, so filing it again after a crash or a redelivery is recognised as a duplicate."""
    return DeadLetter(
        source=record.topic,
        connector=f"processor:{processor.name}",
        location=f"{record.topic}/{record.partition}@{record.offset}",
        reason=reason,
        raw=record.value,
        details={"processor": processor.name, "partition": record.partition, "offset": record.offset},
    )


def failure_reason(processor: Processor, record: Record, cause: BaseException) -> str:
    return (
        f"{_where(record)}: processor {processor.name!r} failed ({type(cause).__name__}: {cause}); "
        "the record was skipped. Fix the processor, then rebuild (see docs/runtime.md)"
    )


def _prefetch(
    processor: Prefetching, stores: dict[str, SqliteStore], events: list[dict[str, Any] | None]
) -> None:
    """Load the state keys the batch's events will read, one query per store (see ``Prefetching``)."""
    wanted: dict[str, list[str]] = {}
    for event in events:
        if event is None:
            continue
        try:
            pairs = processor.prefetch_keys(event)
        except Exception:  # a hint only: ``process`` meets the same event and files it
            continue
        for store, key in pairs:
            wanted.setdefault(store, []).append(key)
    for store, keys in wanted.items():
        if store in stores:
            stores[store].prefetch(keys)


def _by_topic(outgoing: list[Outgoing]) -> dict[str, list[Outgoing]]:
    grouped: dict[str, list[Outgoing]] = {}
    for out in outgoing:
        grouped.setdefault(out.topic, []).append(out)
    return grouped


def _positions(records: list[Record]) -> dict[str, dict[int, int]]:
    """Per topic and partition, the offset after the last of ``records`` (the next to read)."""
    positions: dict[str, dict[int, int]] = {}
    for record in records:
        topic = positions.setdefault(record.topic, {})
        topic[record.partition] = max(topic.get(record.partition, 0), record.offset + 1)
    return positions


def _where(record: Record) -> str:
    return f"{record.topic} partition {record.partition} offset {record.offset}"
