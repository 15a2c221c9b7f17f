"""Identity benchmark: events/s through identity resolution + profile projection, beside networkx.

Usage: ``.venv/bin/python bench/identity.py [--persons 10000,50000] [--kafka-persons 5000] [--cpu C]
[--markdown]``

Input: synthesised, already-normalised catalogue events, four per person, interleaved in blocks of
1,000 persons so that every person is first two profiles (a web visitor by anonymous id, a shop
customer by email and shop id) that her login and her ``identify`` then merge into one:
``page_viewed {anonymous_id}``, ``order_completed {email, shop_customer_id}``,
``logged_in {anonymous_id, user_id}``, ``identify {user_id, email}``. They are validated, encoded
and appended to an embedded log once per size (not measured); each measurement then runs in a fresh
process pinned to one CPU on its own copy, so each peak RSS is its own:

- *runner*: ``LocalRunner`` with ``default_processors()`` until caught up (what ``patron run`` does):
  decode, process, state persistence in SQLite, appends of the emitted events, offsets;
- *stages*: the same work with the I/O taken apart: decode the input, the identity processor on plain
  dicts (no store), encode what it emits as the runner does (a passed-on input event keeps its bytes,
  an event emitted to two topics is encoded once), decode the ``patron.profile-events`` records the
  runner decodes (the passed-on input events it reuses decoded), the profile processor on plain dicts;
- *networkx*: ``connected_components`` over the same identifier edges (each event's identifiers
  joined in a star), graph building included, edge extraction from decoded events excluded;
- *kafka*: ``patron worker`` on a tansu broker (broker pinned to the other CPU), from its partition
  assignment until its consumer group has committed the end of every topic it reads.

Rates are input events per wall-clock second (CPU seconds beside them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from patron.cli.output import transient_progress

BLOCK = 1000
EVENTS_PER_PERSON = 4
APPEND_CHUNK = 5000
T0 = datetime(2024, 5, 1, tzinfo=UTC)
CAUGHT_UP_TIMEOUT_S = 900.0
console = Console(stderr=True)


# -- input ---------------------------------------------------------------------------------------
def _steps(i: int) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Person ``i``'s four events: (type, source, identifiers, payload)."""
    anon, user, email, shop = f"anon-{i}", f"u-{i}", f"p{i}@example.com", f"S{i}"
    return [
        ("page_viewed", "web", {"anonymous_id": anon}, {"url": f"https://shop.example.com/p/{i % 97}"}),
        (
            "order_completed",
            "shop",
            {"email": email, "external_ids": {"shop_customer_id": shop}},
            {"order_id": f"O-{i}", "revenue": 10.0 + i % 50, "currency": "EUR", "items": []},
        ),
        ("logged_in", "web", {"anonymous_id": anon, "user_id": user}, {"method": "password"}),
        ("identify", "web", {"user_id": user, "email": email}, {"first_name": f"F{i % 500}"}),
    ]


def synthesise(persons: int) -> Iterator[dict[str, Any]]:
    """The input events in log order (see the module docstring), validated like ingestion does."""
    from patron.events.models import validate_event

    n = 0
    for start in range(0, persons, BLOCK):
        block = range(start, min(start + BLOCK, persons))
        per_person = {i: _steps(i) for i in block}
        for step in range(EVENTS_PER_PERSON):
            for i in block:
                event_type, source, identifiers, payload = per_person[i][step]
                at = T0 + timedelta(seconds=n)
                n += 1
                yield validate_event(
                    {
                        "envelope": {
                            "event_id": f"00000000-0000-4000-8000-{n:012d}",
                            "event_type": event_type,
                            "occurred_at": at,
                            "received_at": at,
                            "source": source,
                            "identifiers": identifiers,
                            "context": {},
                        },
                        "payload": payload,
                    }
                )


def prepare(persons: int, data_dir: Path, kafka: str | None = None) -> int:
    """Encode the input into ``data_dir``'s embedded log (or, with ``kafka``, onto that broker's
    ``patron.events``, registry in ``data_dir``); returns the number of events."""
    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry
    from patron.streams.log import EVENTS_TOPIC

    data_dir.mkdir(parents=True, exist_ok=True)
    codec = EventCodec(FileRegistry(data_dir / "registry.db"))
    if kafka:
        from patron.streams.kafka_log import KafkaLog

        log: Any = KafkaLog(kafka)
    else:
        from patron.streams.local_log import LocalLog

        log = LocalLog(data_dir)
    total = persons * EVENTS_PER_PERSON
    chunk: list[Any] = []
    try:
        with transient_progress() as progress:
            task = progress.add_task(f"encoding {total:,} events", total=total)
            for event in synthesise(persons):
                chunk.append(codec.message(event))
                if len(chunk) == APPEND_CHUNK:
                    log.append(EVENTS_TOPIC, chunk)
                    progress.advance(task, len(chunk))
                    chunk = []
            log.append(EVENTS_TOPIC, chunk)
            progress.advance(task, len(chunk))
    finally:
        log.close()
    return total


# -- measurements (each in its own process) ------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    """Wall and CPU seconds per named step."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str, work: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu
        return result


def measure_runner(data_dir: Path) -> dict[str, Any]:
    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry
    from patron.streams.local_log import LocalLog
    from patron.streams.local_runner import LocalRunner
    from patron.streams.state import read_store
    from patron.streams.topology import default_processors

    log = LocalLog(data_dir)
    try:
        runner = LocalRunner(log, EventCodec(FileRegistry(data_dir / "registry.db")), default_processors())
        timer = Timer()
        stats = timer("runner", runner.run)
        profiles = sum("merged_into" not in p for p in read_store(log, "profiles", "profiles").values())
    finally:
        log.close()
    return {
        "wall": timer.wall,
        "cpu": timer.cpu,
        "processed": {name: s.processed for name, s in stats.items()},
        "profiles": profiles,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _inputs(data_dir: Path) -> list[bytes]:
    from patron.streams.local_log import LocalLog
    from patron.streams.log import EVENTS_TOPIC, scan

    log = LocalLog(data_dir)
    try:
        return [record.value for record in scan(log, EVENTS_TOPIC)]
    finally:
        log.close()


def measure_stages(data_dir: Path) -> dict[str, Any]:
    """The runner's work without its I/O; the input bytes are read from the log before timing."""
    from patron.events.codec import EventCodec
    from patron.identity.processor import IdentityProcessor
    from patron.projections.profile_processor import ProfileProcessor
    from patron.schemas.registry import FileRegistry
    from patron.streams.topology import PROFILE_EVENTS_TOPIC

    values = _inputs(data_dir)
    codec = EventCodec(FileRegistry(data_dir / "registry.db"))
    timer = Timer()
    events = timer("decode input", lambda: [codec.decode(v) for v in values])

    identity = IdentityProcessor()
    identity_stores: dict[str, Any] = {name: {} for name in identity.stores}
    emits = timer(
        "identity process", lambda: [e for ev in events for e in identity.process(identity_stores, ev)]
    )

    # As the runner: an emitted input event (the same envelope object) keeps its bytes, and one
    # event dict emitted to two topics is encoded once.
    input_envelopes = {id(event["envelope"]) for event in events}
    passed_on = [id(e.event["envelope"]) in input_envelopes for e in emits]

    def encode_emitted() -> list[bytes | None]:
        encoded: dict[int, bytes] = {}
        for emit, kept in zip(emits, passed_on, strict=True):
            if not kept and id(emit.event) not in encoded:
                encoded[id(emit.event)] = codec.encode(emit.event)
        return [None if kept else encoded[id(e.event)] for e, kept in zip(emits, passed_on, strict=True)]

    values = timer("encode emitted", encode_emitted)
    counts = {"encoded": len({id(e.event) for e, kept in zip(emits, passed_on, strict=True) if not kept})}

    # Only what goes to patron.profile-events (keyed by profile id) feeds the profile stage; the
    # runner hands the passed-on input events over decoded, and decodes the rest.
    profile_input = [
        (emit, value) for emit, value in zip(emits, values, strict=True) if emit.topic == PROFILE_EVENTS_TOPIC
    ]

    def decode_emitted() -> list[dict[str, Any]]:
        decoded = []
        for emit, value in profile_input:
            event = {**emit.event} if value is None else codec.decode(value)
            event["_key"] = emit.key
            decoded.append(event)
        return decoded

    profile_events = timer("decode emitted", decode_emitted)
    profiles = ProfileProcessor()
    profile_stores: dict[str, Any] = {"profiles": {}}
    timer(
        "profile process", lambda: [e for ev in profile_events for e in profiles.process(profile_stores, ev)]
    )
    live = sum("merged_into" not in p for p in profile_stores["profiles"].values())
    return {
        "wall": timer.wall,
        "cpu": timer.cpu,
        "counts": {
            **counts,
            "profile records": len(profile_events),
            "profile decoded": sum(1 for _, value in profile_input if value is not None),
        },
        "profiles": live,
        "identity profiles": len(identity_stores["profiles"]),
        "peak_rss_mb": _peak_rss_mb(),
    }


def measure_networkx(data_dir: Path) -> dict[str, Any]:
    import networkx as nx

    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry

    codec = EventCodec(FileRegistry(data_dir / "registry.db"))
    stars = []
    for value in _inputs(data_dir):
        ids = codec.decode(value)["envelope"]["identifiers"]
        keys = [f"{kind}:{v}" for kind, v in ids.items() if isinstance(v, str)]
        keys += [f"external:{kind}:{v}" for kind, v in (ids.get("external_ids") or {}).items()]
        stars.append(keys)
    timer = Timer()

    def components() -> int:
        graph = nx.Graph()
        for keys in stars:
            graph.add_node(keys[0])
            graph.add_edges_from((keys[0], other) for other in keys[1:])
        return sum(1 for _ in nx.connected_components(graph))

    found = timer("networkx", components)
    return {"wall": timer.wall, "cpu": timer.cpu, "profiles": found, "peak_rss_mb": _peak_rss_mb()}


def measure_kafka(persons: int, work: Path, cpu: int) -> dict[str, Any] | None:
    """``patron worker`` on tansu; None when the broker cannot start here."""

    from patron.streams.kafka_log import KafkaLog
    from patron.streams.log import EVENTS_TOPIC
    from patron.streams.topology import IDENTITY_INPUT_TOPIC, PROFILE_EVENTS_TOPIC
    from patron.testing_broker import start_tansu

    others = sorted(os.sched_getaffinity(0) - {cpu}) or [cpu]
    started = start_tansu(work / "tansu.log", cpus=others)
    if started is None:
        return None
    broker, bootstrap = started
    data_dir = work / "kafka"
    try:
        events = prepare(persons, data_dir, kafka=bootstrap)
        app_id = "bench-identity"
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "patron"), "--data-dir", str(data_dir), "--broker",
             f"kafka://{bootstrap}", "worker", "--app-id", app_id, "--batch-size", "1000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )  # fmt: skip
        launched = time.perf_counter()
        assert worker.stderr is not None
        for raw in worker.stderr:  # the group formed: processing starts now
            if b"assigned:" in raw:
                break
        assigned = time.perf_counter()
        log = KafkaLog(bootstrap)
        topics = (EVENTS_TOPIC, IDENTITY_INPUT_TOPIC, PROFILE_EVENTS_TOPIC)
        try:
            while log.group_lag(app_id, topics) != 0:
                if worker.poll() is not None or time.perf_counter() - assigned > CAUGHT_UP_TIMEOUT_S:
                    raise RuntimeError("the worker stopped or did not catch up; run it by hand to see why")
                time.sleep(0.25)
            done = time.perf_counter()
            status = Path(f"/proc/{worker.pid}/status").read_text()
            peak = (
                int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
            )
            usage = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s = (int(usage[11]) + int(usage[12])) / os.sysconf("SC_CLK_TCK")
        finally:
            log.close()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    finally:
        broker.kill()
        broker.wait()
    return {
        "wall": {"kafka": done - assigned, "startup": assigned - launched},
        "cpu": {"kafka": cpu_s},
        "events": events,
        "peak_rss_mb": peak,
    }


# -- orchestration -------------------------------------------------------------------------------
def _child(kind: str, target: str, cpu: int, persons: int) -> dict[str, Any] | None:
    """Run one measurement in a fresh interpreter pinned to ``cpu``; its JSON result."""
    command = [sys.executable, __file__, "--measure", kind, "--target", target, "--persons", str(persons)]
    done = subprocess.run(
        command, stdout=subprocess.PIPE, check=True, preexec_fn=lambda: os.sched_setaffinity(0, {cpu})
    )
    return json.loads(done.stdout)


def _measure_here(kind: str, target: Path, persons: int) -> dict[str, Any] | None:
    if kind == "runner":
        return measure_runner(target)
    if kind == "stages":
        return measure_stages(target)
    if kind == "networkx":
        return measure_networkx(target)
    if kind == "prepare":
        return {"events": prepare(persons, target)}
    return measure_kafka(persons, target, next(iter(os.sched_getaffinity(0))))


def run(sizes: list[int], kafka_persons: int, cpu: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="patron-bench-identity-") as tmp:
        root = Path(tmp)
        for persons in sizes:
            prepared = root / f"prepared-{persons}"
            events = _child("prepare", str(prepared), cpu, persons)["events"]  # type: ignore[index]
            for kind in ("runner", "stages", "networkx"):
                target = root / f"{kind}-{persons}"
                shutil.copytree(prepared, target)
                console.print(f"{persons:,} persons: {kind}")
                result = _child(kind, str(target), cpu, persons)
                shutil.rmtree(target)
                rows.append({"kind": kind, "persons": persons, "events": events, **(result or {})})
            shutil.rmtree(prepared)
        if kafka_persons:
            console.print(f"{kafka_persons:,} persons: kafka")
            work = root / "kafka-work"
            work.mkdir()
            result = _child("kafka", str(work), cpu, kafka_persons)
            if result is None:
                console.print("kafka: the tansu broker did not start; no Kafka row")
            else:
                rows.append({"kind": "kafka", "persons": kafka_persons, **result})
    return rows


def _lines(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    lines = []
    for row in rows:
        events = row["events"]
        for step, wall in row["wall"].items():
            if step == "startup":
                continue
            count = {
                "encode emitted": "encoded",
                "decode emitted": "profile decoded",
                "profile process": "profile records",
            }.get(step)
            count = events if count is None else row["counts"][count]
            label = {
                "runner": "LocalRunner (identity + profiles, SQLite)",
                "kafka": "patron worker (faust)",
            }.get(step, step)
            extra = f", start-up {row['wall']['startup']:.1f} s" if step == "kafka" else ""
            lines.append(
                (
                    f"{row['persons']:,}",
                    f"{events:,}",
                    label,
                    f"{count:,}",
                    f"{wall:.2f}",
                    f"{row['cpu'].get(step, 0.0):.2f}",
                    f"{events / wall:,.0f}",
                    f"{row.get('profiles', '')}",
                    f"{row['peak_rss_mb']:.0f}" + extra,
                )
            )
    return lines


HEADERS = (
    "persons",
    "input events",
    "step",
    "records",
    "wall s",
    "cpu s",
    "input events/s",
    "profiles",
    "peak RSS MB",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--persons", default="10000,50000,100000", help="comma-separated sizes")
    parser.add_argument("--kafka-persons", type=int, default=5000, help="0: no Kafka measurement")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU every measurement is pinned to")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure_here(args.measure, Path(args.target), int(args.persons))))
        return
    started = time.perf_counter()
    rows = run([int(n) for n in args.persons.split(",")], args.kafka_persons, args.cpu)
    console.print(
        f"{platform.python_version()} on {os.cpu_count()} CPUs; whole run {time.perf_counter() - started:.0f} s"
    )
    if args.markdown:
        print("| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for line in _lines(rows):
            print("| " + " | ".join(line) + " |")
        return
    table = Table(*HEADERS)
    for line in _lines(rows):
        table.add_row(*line)
    Console().print(table)


if __name__ == "__main__":
    main()
