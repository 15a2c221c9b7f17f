"""The processor contract: pure ``(state, event) -> (state, emitted events)`` rules, no I/O.

A processor sees one decoded event at a time together with a key-value view of its own
state, and returns the events it emits. Runners own everything else: reading the log,
decoding, persisting state, committing offsets, appending emitted events. The embedded
runner commits all of that in one SQLite transaction; the faust runner keeps state in
changelog-backed tables. One implementation of each rule, two runtimes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Emit:
    """An event a processor emits: the topic it goes to and the Avro-shaped event dict.

    The event's ``envelope.event_id`` must be deterministic (derived from the input event),
    so that re-processing after a crash appends a duplicate the log recognises, not a new fact.
    """

    topic: str
    event: dict[str, Any]
    key: str | None = None
    """Routing key override, e.g. a profile id to partition by profile; default: the event's routing key."""


class Processor(Protocol):
    """A pure stream rule. ``name`` names its consumer position; ``stores`` its state stores.

    Each store reaches ``process`` as a ``MutableMapping[str, JSON-able value]``, so
    processors stay plain Python; runners back it with a write-back cache over SQLite
    (embedded) or a faust table (Kafka) and persist only the keys that changed.

    The input event is read-only: ``process`` must not change it (nor keep parts of it that it
    changes later). To pass it on, emit ``{"envelope": event["envelope"], "payload":
    event["payload"]}``: the runners recognise its own envelope and payload objects and append
    the input record's bytes as they are, instead of encoding the event again.
    """

    name: str
    inputs: tuple[str, ...]
    stores: tuple[str, ...]

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        """Fold ``event`` into the state in ``stores`` (mutating it) and return what to emit."""
        ...


@runtime_checkable
class Prefetching(Protocol):
    """Optional for a processor: name the state keys ``process`` will read for ``event``.

    The embedded runner then loads a whole batch's keys in one query per store instead of one
    per key. A hint only: keys it misses are still loaded when read, extra keys cost little.
    """

    def prefetch_keys(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """``(store, key)`` pairs ``process(stores, event)`` is likely to read."""
        ...


@runtime_checkable
class Timed(Protocol):
    """Optional for a processor: records to append because time passed, with no event at all.

    Runners call ``timers`` periodically with the wall clock (and once when they start), reading
    the processor's committed state, and append what it returns to the log, where the processor
    meets it as ordinary input. Time thus enters the log as records, so a replay sees the same
    moments; the records need deterministic ids, as a tick may repeat before they are processed.
    """

    def timers(self, stores: dict[str, MutableMapping[str, Any]], now: int) -> list[Emit]:
        """Records due at ``now`` (microseconds since the epoch); must not change ``stores``."""
        ...
