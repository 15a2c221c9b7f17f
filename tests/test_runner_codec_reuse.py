"""The embedded runner's shortcuts around Avro and SQLite, on the real runner, codec, registry and log.

What is checked is that each shortcut changes cost only: a passed-on event keeps its input bytes
(an old schema version included), an event emitted to two topics is encoded once, a passed-on event
read back in the same run is not decoded again yet every processor sees a fresh, unshared event
(also after a failed batch is retried), a batch's state keys are loaded in one query, and a run
with every cache disabled commits byte-identical state and topics.
"""

from __future__ import annotations

import io
import struct
import uuid
from collections.abc import Iterator, MutableMapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import fastavro
import pytest
from test_identity_processor import scenario

from patron.connectors.deadletter import DeadLetterStore
from patron.events.codec import EventCodec
from patron.schemas.catalogue import default_catalogue
from patron.schemas.registry import FileRegistry
from patron.streams.local_log import LocalLog, _event_id_text
from patron.streams.local_runner import LocalRunner, ProcessorStats
from patron.streams.log import EVENTS_TOPIC, Message, scan
from patron.streams.processor import Emit
from patron.streams.state import SqliteStore, store_name
from patron.streams.topology import IDENTITY_TOPIC, PROFILE_EVENTS_TOPIC, default_processors


class CountingCodec(EventCodec):
    """The real codec, counting its encodes and decodes."""

    def __init__(self, registry: FileRegistry):
        super().__init__(registry)
        self.encoded = 0
        self.decoded = 0

    def encode(self, event: dict[str, Any]) -> bytes:
        self.encoded += 1
        return super().encode(event)

    def decode(self, data: bytes) -> dict[str, Any]:
        self.decoded += 1
        return super().decode(data)


@pytest.fixture
def log(data_dir: Path) -> Iterator[LocalLog]:
    opened = LocalLog(data_dir)
    yield opened
    opened.close()


@pytest.fixture
def counting(data_dir: Path) -> CountingCodec:
    return CountingCodec(FileRegistry(data_dir / "registry.db"))


def fill(log: LocalLog, codec: EventCodec, persons: int = 30) -> list[Message]:
    """The issue's five-source scenario for ``persons`` people (distinct identifiers each)."""
    messages = []
    for person in range(persons):
        for event in scenario():
            event = {**event, "envelope": {**event["envelope"]}}
            envelope = event["envelope"]
            envelope["event_id"] = str(uuid.uuid5(uuid.NAMESPACE_OID, f"{person}/{envelope['event_id']}"))
            ids = envelope["identifiers"]
            envelope["identifiers"] = {
                **ids,
                **{k: f"{person}-{v}" for k, v in ids.items() if isinstance(v, str)},
                "external_ids": {k: f"{person}-{v}" for k, v in (ids.get("external_ids") or {}).items()},
            }
            messages.append(codec.message(event))
    log.append(EVENTS_TOPIC, messages)
    return messages


def committed(log: LocalLog) -> dict[str, Any]:
    rows = log.db.execute("SELECT store, key, value FROM state ORDER BY store, key").fetchall()
    topics = {
        topic: [(r.partition, r.offset, r.key, r.event_id, r.value) for r in scan(log, topic)]
        for topic in (IDENTITY_TOPIC, PROFILE_EVENTS_TOPIC)
    }
    return {"state": rows, "topics": topics}


# -- bytes ----------------------------------------------------------------------------------------
def test_a_passed_on_event_keeps_its_input_bytes_even_from_an_older_schema_version(
    log: LocalLog, data_dir: Path, make_event
):
    registry = FileRegistry(data_dir / "registry.db")
    current = default_catalogue().get("page_viewed")
    older = {
        **current.schema,
        "fields": [
            current.schema["fields"][0],
            {
                **current.schema["fields"][1],
                "type": {
                    **current.schema["fields"][1]["type"],
                    "fields": [
                        f for f in current.schema["fields"][1]["type"]["fields"] if f["name"] != "category"
                    ],
                },
            },
        ],
    }
    older_id = registry.register(current.subject, older)
    codec = EventCodec(registry)
    event = make_event("page_viewed", 1, user="u-old")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(older), event)
    old_bytes = struct.pack(">bI", 0, older_id) + body.getvalue()
    log.append(
        EVENTS_TOPIC, [codec.message(event, value=old_bytes), codec.message(make_event("identify", 2))]
    )

    LocalRunner(log, codec, default_processors()).run()

    inputs = {r.event_id: r.value for r in scan(log, EVENTS_TOPIC)}
    passed_on = {r.event_id: r.value for r in scan(log, PROFILE_EVENTS_TOPIC) if r.event_id in inputs}
    assert passed_on == inputs
    assert codec.decode(passed_on[event["envelope"]["event_id"]])["payload"]["category"] is None
    assert codec.schema_id("page_viewed") != older_id


def test_an_event_emitted_to_two_topics_is_encoded_once(log: LocalLog, counting: CountingCodec):
    fill(log, counting)
    counting.encoded = 0
    LocalRunner(log, counting, default_processors()).run(batch_size=40)

    identity = {r.event_id: r.value for r in scan(log, IDENTITY_TOPIC)}
    profile_events = list(scan(log, PROFILE_EVENTS_TOPIC))
    absorbed = [r for r in profile_events if counting.event_type_of(r.value) == "profile_absorbed"]
    shared = [r for r in profile_events if r.event_id in identity]
    assert shared and all(identity[r.event_id] == r.value for r in shared)
    assert counting.encoded == len(identity) + len(absorbed)


# -- decoded events -------------------------------------------------------------------------------
def test_passed_on_events_are_not_decoded_again_and_every_cache_setting_commits_the_same(
    tmp_path: Path,
):
    results, decodes = [], []
    for decoded_cache_size, cache_size in ((50_000, 100_000), (1, 3), (0, 0)):
        directory = tmp_path / f"run-{decoded_cache_size}"
        log = LocalLog(directory)
        codec = CountingCodec(FileRegistry(directory / "registry.db"))
        inputs = len(fill(log, codec))
        codec.decoded = 0
        runner = LocalRunner(
            log, codec, default_processors(), cache_size=cache_size, decoded_cache_size=decoded_cache_size
        )
        stats = runner.run(batch_size=25)
        results.append(committed(log))
        decodes.append((codec.decoded, inputs, stats["profiles"].processed))
        log.close()
    assert results[0] == results[1] == results[2]
    (cached, inputs, profile_records), _, (uncached, _, _) = decodes
    assert uncached == inputs + profile_records  # every record decoded once
    assert cached == uncached - inputs  # each passed-on input event (one per input) reused


FORWARD_TOPIC = "test.forwarded"
POISON = "poison"


class Forwarder:
    """Passes every input event on unchanged."""

    name = "forwarder"
    inputs = (EVENTS_TOPIC,)
    stores = ("seen",)

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        stores["seen"][event["envelope"]["event_id"]] = True
        return [Emit(FORWARD_TOPIC, {"envelope": event["envelope"], "payload": event["payload"]})]


class Marker:
    """Marks each event it gets (changing it, which the contract allows only downstream of the
    last reader) and remembers whether it arrived marked already; fails on the poison record."""

    name = "marker"
    inputs = (FORWARD_TOPIC,)
    stores = ("counts",)

    def __init__(self) -> None:
        self.arrived_marked = 0
        self.events: list[dict[str, Any]] = []

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        payload = event["payload"]
        self.arrived_marked += "marked" in payload
        payload["marked"] = True
        self.events.append(event)
        if payload.get("order_id") == POISON:
            raise ValueError("poison order")
        counts = stores["counts"]
        counts["events"] = counts.get("events", 0) + 1
        return []


def test_a_retried_batch_gets_fresh_events_and_no_two_processors_share_one(
    log: LocalLog, counting: CountingCodec, make_event
):
    events = [make_event("order_completed", n) for n in range(30)]
    events[17]["payload"]["order_id"] = POISON
    log.append(EVENTS_TOPIC, [counting.message(e) for e in events])
    counting.decoded = 0
    marker = Marker()
    LocalRunner(log, counting, [Forwarder(), marker]).run(batch_size=30)

    assert marker.arrived_marked == 0
    assert len({id(e) for e in marker.events}) == len(marker.events)
    assert counting.decoded < 2 * len(events)  # the first pass used the forwarder's events
    (letter,) = list(DeadLetterStore(log))
    assert "poison order" in letter.reason
    counts = SqliteStore(log, store_name("marker", "counts"))
    assert counts["events"] == len(events) - 1


def test_downstream_processors_drain_their_input_before_the_next_upstream_batch(
    log: LocalLog, counting: CountingCodec
):
    fill(log, counting)
    order: list[tuple[str, int]] = []

    def on_batch(name: str, stats: ProcessorStats) -> None:
        order.append((name, stats.remaining))

    LocalRunner(log, counting, default_processors()).run(batch_size=20, on_batch=on_batch)
    upstream = [i for i, (name, _) in enumerate(order) if name == "identity"]
    assert len(upstream) > 3
    for start, end in pairwise(upstream):
        between = order[start + 1 : end]
        assert between and between[-1] == ("profiles", 0)


# -- state and ids --------------------------------------------------------------------------------
def test_prefetch_loads_a_batch_of_keys_in_one_query(log: LocalLog):
    store = SqliteStore(log, "test.prefetch")
    with log.transaction() as tx:
        store["a"], store["b"] = {"n": 1}, [2]
        store.committed(store.flush(tx))
    fresh = SqliteStore(log, "test.prefetch")
    queries: list[str] = []
    log.db.set_trace_callback(queries.append)
    try:
        fresh.prefetch(["a", "b", "new", "a"])
        assert len([q for q in queries if q.startswith("SELECT")]) == 1
        queries.clear()
        assert (fresh["a"], fresh["b"], fresh.get("new"), "new" in fresh) == ({"n": 1}, [2], None, False)
        assert queries == []
    finally:
        log.db.set_trace_callback(None)


def test_blind_writes_are_compared_with_what_they_replace_in_one_query(log: LocalLog):
    store = SqliteStore(log, "test.blind")
    with log.transaction() as tx:
        store["same"], store["old"] = {"n": 1}, "before"
        store.committed(store.flush(tx))
    fresh = SqliteStore(log, "test.blind")
    queries: list[str] = []
    log.db.set_trace_callback(queries.append)
    try:
        fresh["same"], fresh["old"], fresh["new"] = {"n": 1}, "after", [1]
        assert queries == []
        with log.transaction() as tx:
            changes = fresh.flush(tx)
        fresh.committed(changes)
    finally:
        log.db.set_trace_callback(None)
    assert changes == {"old": b'"after"', "new": b"[1]"}
    assert len([q for q in queries if q.startswith("SELECT")]) == 1
    assert dict(SqliteStore(log, "test.blind", cache_size=0).items()) == {
        "same": {"n": 1},
        "old": "after",
        "new": [1],
    }


def test_event_ids_read_back_in_canonical_form(log: LocalLog, codec: EventCodec, make_event):
    event = make_event("page_viewed", 1)
    loud = event["envelope"]["event_id"].upper()
    upper = codec.encode({**event, "envelope": {**event["envelope"], "event_id": loud}})
    assert codec.decode(upper)["envelope"]["event_id"] == loud.lower()
    bad = codec.encode({**event, "envelope": {**event["envelope"], "event_id": "not-a-uuid"}})
    with pytest.raises(ValueError):
        codec.decode(bad)
    for _ in range(20):
        raw = uuid.uuid4().bytes
        assert _event_id_text(raw) == str(uuid.UUID(bytes=raw))
