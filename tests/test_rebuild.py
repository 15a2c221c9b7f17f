"""The vectorised rebuild against the incremental fact tables on a generated data set.

``patron generate`` -> ``patron ingest`` -> ``patron run`` builds a realistic log (dirty inputs, many
sources, merges); the fact tables read from the committed profile store must equal the tables the
rebuild computes from ``patron.events``, table by table and row by row. The Kafka worker's profile
table is read from its changelog with the same builder (here a changelog topic written from the
committed store, read back through ``streams.state.read_changelog``). The envelope scan the rebuild
reads records with must agree with the real decoder on every record of the data set.
"""

from __future__ import annotations

import io
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from test_facts import assert_same
from test_ingest import cli

from patron.config import Settings
from patron.events.codec import EventCodec, open_codec
from patron.events.models import validate_event
from patron.identity.resolver import micros
from patron.projections import rebuild as rebuild_module
from patron.projections.envelope_scan import EnvelopeLayout, envelope_layout
from patron.projections.fact_tables import incremental_tables, kafka_tables, stored_profiles
from patron.projections.rebuild import count_records, rebuild
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, Message, scan


def run_cli(data_dir: Path, *args: str) -> str:
    code, out, error = cli(data_dir, *args)
    assert code == 0, error
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after ``patron generate | ingest | run`` (150 customers, 30 days)."""
    root = tmp_path_factory.mktemp("rebuild")
    source, data_dir = root / "generated", root / "data"
    run_cli(root, "generate", "--customers", "150", "--days", "30", "--seed", "4", "--out", str(source))
    files = [str(p) for p in sorted(source.iterdir()) if (source / "mappings" / f"{p.stem}.yaml").exists()]
    run_cli(data_dir, "ingest", *files, "--mapping-dir", str(source / "mappings"), "--json")
    run_cli(data_dir, "run")
    return data_dir


def open_log(data_dir: Path) -> tuple[LocalLog, EventCodec]:
    return LocalLog(data_dir), open_codec(Settings.load(data_dir=data_dir))


def test_the_rebuild_equals_the_incremental_tables(generated: Path):
    log, codec = open_log(generated)
    seen: list[int] = []
    result = rebuild(log, codec, progress=seen.append)
    incremental = incremental_tables(log).sorted()
    assert_same(incremental, result.tables.sorted())
    stats = result.stats
    assert sum(seen) == stats.records == count_records(log)
    assert stats.folded == stats.records - stats.undecodable - stats.unanchored - stats.requests
    assert stats.unmapped == stats.after_as_of == 0
    # every table has rows: the generator exercises every fact the scores read
    assert all(table.num_rows for name, table in incremental.items()), {
        name: table.num_rows for name, table in incremental.items()
    }
    assert sum(incremental.customers.column("events").to_pylist()) == stats.folded


def test_as_of_keeps_the_events_before_the_end_of_that_day(generated: Path):
    log, codec = open_log(generated)
    times = Counter()
    for record in scan(log, EVENTS_TOPIC):
        event = codec.decode(record.value)
        times[event["envelope"]["occurred_at"].date(), event["envelope"]["event_type"]] += 1
    days = sorted({day for day, _ in times})
    middle = days[len(days) // 2]
    result = rebuild(
        log, codec, as_of=datetime.combine(middle, datetime.min.time(), tzinfo=UTC) + timedelta(hours=23)
    )
    tables = result.tables
    assert max(tables.activity_daily.column("day").to_pylist()) == middle
    want_orders = sum(n for (day, kind), n in times.items() if day <= middle and kind == "order_completed")
    assert sum(tables.orders_daily.column("orders").to_pylist()) == want_orders
    assert result.stats.after_as_of == sum(n for (day, _), n in times.items() if day > middle)
    last = rebuild(log, codec, as_of=days[-1]).tables
    assert_same(incremental_tables(log).sorted(), last.sorted())


def test_the_kafka_profile_table_gives_the_same_tables(generated: Path, tmp_path: Path):
    log, _ = open_log(generated)
    changelog = LocalLog(tmp_path / "kafka")
    app_id = "patron"
    topic = f"{app_id}-profiles.profiles-changelog"
    messages = [
        Message(orjson.dumps(key), None, orjson.dumps(state), 0) for key, state in stored_profiles(log)
    ]
    changelog.append(topic, messages)
    assert_same(incremental_tables(log).sorted(), kafka_tables(changelog, app_id).sorted())


def test_worker_processes_fold_row_ranges_to_the_same_tables(
    generated: Path, monkeypatch: pytest.MonkeyPatch
):
    log, codec = open_log(generated)
    monkeypatch.setattr(rebuild_module, "CHUNK_ROWS", 400)  # many ranges, several per worker
    seen: list[int] = []
    parallel = rebuild(log, codec, progress=seen.append, workers=2)
    assert len(seen) > 4 and sum(seen) == parallel.stats.records == count_records(log)
    assert_same(incremental_tables(log).sorted(), parallel.tables.sorted())
    assert parallel.stats == rebuild(log, codec, workers=1).stats


def clear(codec: EventCodec, event_type: str, **part: Any) -> Any:
    """An envelope part (``identifiers=``) or the payload (``payload=``) read straight from the bytes,
    with its PII decrypted as the codec does: the scan sees the stored ciphertext."""
    assert codec.cipher is not None
    ((name, value),) = part.items()
    if name == "payload":
        return codec.cipher.decrypt({"envelope": {"event_type": event_type}, "payload": value})["payload"]
    return codec.cipher.decrypt({"envelope": {"event_type": event_type, name: value}})["envelope"][name]


def test_the_envelope_scan_agrees_with_the_decoder_on_every_record(generated: Path):
    log, codec = open_log(generated)
    layouts: dict[int, EnvelopeLayout | None] = {}
    for record in scan(log, EVENTS_TOPIC):
        schema_id = int.from_bytes(record.value[1:5], "big")
        if schema_id not in layouts:
            layouts[schema_id] = envelope_layout(codec.registry.schema(schema_id))
        layout = layouts[schema_id]
        assert layout is not None
        start, end, at, source = layout.scan(record.value, 5)
        event = codec.decode(record.value)
        envelope = event["envelope"]
        assert (at, source.decode()) == (micros(envelope["occurred_at"]), envelope["source"])
        identifiers = fastavro.schemaless_reader(
            io.BytesIO(record.value[start:end]), layout.identifiers, None
        )
        assert clear(codec, envelope["event_type"], identifiers=identifiers) == envelope["identifiers"]
        assert layout.to_payload is not None
        *same, event_id, payload_at = layout.to_payload(record.value, 5)
        assert same == [start, end, at, source] and event_id.decode() == envelope["event_id"]
        payload_schema = fastavro.parse_schema(codec.registry.schema(schema_id)["fields"][1]["type"])
        payload = fastavro.schemaless_reader(io.BytesIO(record.value[payload_at:]), payload_schema)
        assert clear(codec, envelope["event_type"], payload=payload) == event["payload"]


def test_the_envelope_scan_reads_long_values_and_refuses_cut_records(codec: EventCodec):
    event = validate_event(
        {
            "envelope": {
                "event_id": str(uuid.uuid4()),
                "event_type": "page_viewed",
                "occurred_at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                "received_at": datetime(2000, 1, 1, tzinfo=UTC),
                "source": "s" * 300,  # a length of more than one varint byte
                "identifiers": {
                    "email": "x" * 100 + "@example.com",
                    "external_ids": {f"crm_{i}": f"id-{i}" * 30 for i in range(70)},
                },
                "context": {},
            },
            "payload": {"url": "https://example.com/"},
        }
    )
    value = codec.encode(event)
    layout = envelope_layout(codec.registry.schema(codec.schema_id("page_viewed")))
    assert layout is not None
    start, end, at, source = layout.scan(value, 5)
    assert (at, source) == (micros(event["envelope"]["occurred_at"]), b"s" * 300)
    decoded = fastavro.schemaless_reader(io.BytesIO(value[start:end]), layout.identifiers, None)
    assert clear(codec, "page_viewed", identifiers=decoded) == codec.decode(value)["envelope"]["identifiers"]
    with pytest.raises((IndexError, ValueError)):
        layout.scan(value[: end - 1], 5)
    assert (
        envelope_layout({"type": "record", "name": "x", "fields": [{"name": "payload", "type": "string"}]})
        is None
    )
