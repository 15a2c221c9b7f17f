"""The embedded runner and its state stores: results, restarts, kill -9 crash loops, rebuilds, the CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from crashloop_topology import (
    LOYAL_EVERY,
    POISON_ORDER,
    events_topic,
    milestones_topic,
    toy_processors,
)
from typer.testing import CliRunner

from patron.cli.main import app
from patron.connectors.deadletter import DeadLetterStore
from patron.errors import EXIT_BUG, PatronError
from patron.events.codec import EventCodec
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner, ProcessorStats
from patron.streams.log import Message, partition_for, scan
from patron.streams.state import SqliteStore, read_store

TESTS = Path(__file__).parent
TYPES = ("order_completed", "identify", "page_viewed")
GARBAGE = Message(b"garbage", None, b"\x00\x00\x00\x00\x63not avro at all", 0)


def toy_input(codec: EventCodec, make_event: Callable[..., dict[str, Any]], count: int) -> list[Message]:
    """``count`` events of 40 customers (every other one an order), one poison order, one corrupt record."""
    events = [
        make_event(TYPES[n % 3] if n % 2 else "order_completed", n, user=f"u{n % 40}") for n in range(count)
    ]
    events[8]["payload"]["order_id"] = POISON_ORDER
    messages = [codec.message(event) for event in events]
    messages.insert(count // 3, GARBAGE)
    return messages


def expected_state(codec: EventCodec, messages: list[Message]) -> dict[str, Any]:
    """The toy topology's result computed directly from the input, independent of any runner."""
    customers: dict[str, dict[str, Any]] = {}
    by_type: dict[str, int] = defaultdict(int)
    for message in messages:
        if message is GARBAGE:
            continue
        event = codec.decode(message.value)
        event_type = event["envelope"]["event_type"]
        by_type[event_type] += 1
        if event["payload"].get("order_id") == POISON_ORDER:
            continue  # ``orders`` fails on it: none of its effects may remain
        key = message.key.decode()
        customer = customers.setdefault(key, {"events": 0, "orders": 0, "revenue": 0.0, "order_ids": []})
        customer["events"] += 1
        if event_type == "order_completed":
            customer["orders"] += 1
            customer["revenue"] = round(customer["revenue"] + event["payload"]["revenue"], 2)
            customer["order_ids"].append(event["payload"]["order_id"])
    tally = {
        f"loyal:{key}": [str(n) for n in range(LOYAL_EVERY, c["orders"] + 1, LOYAL_EVERY)]
        for key, c in customers.items()
        if c["orders"] >= LOYAL_EVERY
    }
    return {
        "orders.customers": customers,
        "milestones.tally": tally,
        "census.counts": {"events": sum(by_type.values()), "by_type": dict(by_type)},
    }


def snapshot(log: LocalLog) -> dict[str, Any]:
    """Everything a run leaves behind: every store, the emitted topic record by record, the dead
    letters and the consumer positions."""
    return {
        "state": {
            f"{p.name}.{store}": read_store(log, p.name, store)
            for p in toy_processors()
            for store in p.stores
        },
        "milestones": [
            (r.partition, r.offset, r.key, r.event_id, r.value) for r in scan(log, milestones_topic())
        ],
        "letters": sorted((letter.id, letter.reason) for letter in DeadLetterStore(log)),
        "positions": {p.name: {t: log.committed(p.name, t) for t in p.inputs} for p in toy_processors()},
    }


def caught_up(log: LocalLog) -> bool:
    return all(log.committed(p.name, t) == log.end_offsets(t) for p in toy_processors() for t in p.inputs)


@pytest.fixture
def log(data_dir: Path) -> Iterator[LocalLog]:
    opened = LocalLog(data_dir)
    yield opened
    opened.close()


@pytest.fixture
def filled(log: LocalLog, codec: EventCodec, make_event) -> list[Message]:
    """The log pre-filled with 600 toy input records."""
    messages = toy_input(codec, make_event, 600)
    log.append(events_topic(), messages)
    return messages


@contextmanager
def fresh_log(directory: Path, messages: list[Message]) -> Iterator[LocalLog]:
    """Another log holding the same input, for a clean reference run."""
    opened = LocalLog(directory)
    opened.append(events_topic(), messages)
    try:
        yield opened
    finally:
        opened.close()


def run(log: LocalLog, codec: EventCodec, **options: Any) -> dict[str, ProcessorStats]:
    return LocalRunner(log, codec, toy_processors()).run(**options)


# -- results ------------------------------------------------------------------------------------
def test_toy_topology_end_to_end(log: LocalLog, codec: EventCodec, filled: list[Message]) -> None:
    stats = run(log, codec, batch_size=64)

    expected = expected_state(codec, filled)
    state = snapshot(log)["state"]
    assert state["orders.customers"] == expected["orders.customers"]
    assert state["milestones.tally"] == expected["milestones.tally"]
    assert state["census.totals"]["counts"] == expected["census.counts"]
    # Emitted milestones: catalogue events, keyed by the override, partitioned by that key.
    milestones = list(scan(log, milestones_topic()))
    assert (
        len(milestones)
        == sum(len(v) for v in expected["milestones.tally"].values())
        == stats["orders"].emitted
    )
    for record in milestones:
        event = codec.decode(record.value)
        assert event["envelope"]["event_type"] == "custom_event"
        assert record.key.startswith(b"loyal:user_id:")
        assert record.partition == partition_for(record.key, 4)
    # The corrupt record is a dead letter for both readers of patron.events, the poison order for
    # the processor it broke; each names where it was and why.
    positions = {}
    for record in scan(log, events_topic()):
        if record.value == GARBAGE.value:
            positions["garbage"] = f"{record.topic}/{record.partition}@{record.offset}"
        elif codec.decode(record.value)["payload"].get("order_id") == POISON_ORDER:
            positions["poison"] = f"{record.topic}/{record.partition}@{record.offset}"
    letters = {(letter.connector, letter.location): letter.reason for letter in DeadLetterStore(log)}
    assert set(letters) == {
        ("processor:orders", positions["garbage"]),
        ("processor:census", positions["garbage"]),
        ("processor:orders", positions["poison"]),
    }
    assert (
        "not a decodable event (KeyError: 'schema id 99 is not in the registry"
        in letters[("processor:census", positions["garbage"])]
    )
    assert (
        "processor 'orders' failed (ValueError: order POISON is poison)"
        in letters[("processor:orders", positions["poison"])]
    )
    assert {name: s.dead_letters for name, s in stats.items()} == {"orders": 2, "milestones": 0, "census": 1}
    assert {name: s.remaining for name, s in stats.items()} == {"orders": 0, "milestones": 0, "census": 0}
    assert caught_up(log)


def test_events_emitted_in_a_run_feed_downstream_processors_in_the_same_run(
    log: LocalLog, codec: EventCodec, filled: list[Message]
) -> None:
    stats = run(log, codec, batch_size=1000)

    assert stats["milestones"].processed == stats["orders"].emitted > 0


def test_restart_resumes_where_it_stopped_without_reprocessing(
    log: LocalLog, codec: EventCodec, filled: list[Message], tmp_path: Path, make_event
) -> None:
    stop = threading.Event()
    batches = 0

    def stop_after_three(name: str, stats: ProcessorStats) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            stop.set()

    first = run(log, codec, batch_size=50, stop=stop, on_batch=stop_after_three)
    assert not caught_up(log)
    second = run(log, codec, batch_size=50)  # a new runner: nothing cached

    total = len(filled)
    assert first["orders"].processed + second["orders"].processed == total
    assert first["census"].processed + second["census"].processed == total
    assert (
        first["milestones"].processed + second["milestones"].processed
        == first["orders"].emitted + second["orders"].emitted
    )
    assert second["orders"].duplicates == 0
    with fresh_log(tmp_path / "reference", filled) as clean:
        run(clean, codec, batch_size=50)
        assert snapshot(log) == snapshot(clean)


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    log: LocalLog, codec: EventCodec, make_event, data_dir: Path, tmp_path: Path
) -> None:
    """20 times: start the runner on the pre-filled log, let it get to a random point of the work
    (plus a random few milliseconds, to land anywhere inside a batch), SIGKILL it. Then finish, and
    compare with one clean run (another batch size, too): every store, every emitted record at its
    offset, every dead letter and position must be identical."""
    messages = toy_input(codec, make_event, 2400)
    log.append(events_topic(), messages)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    targets = sorted(rng.uniform(0.02, 0.9) * len(messages) for _ in range(20))
    interrupted = 0
    for attempt, target in enumerate(targets):
        with (tmp_path / f"stderr-{attempt}").open("w+b") as stderr:
            victim = subprocess.Popen(
                [sys.executable, str(TESTS / "crashloop_run.py"), str(data_dir), "16"],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            started = victim.stdout.readline()
            deadline = time.monotonic() + 20
            while orders_done(log) < target and victim.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            victim.stdout.close()
            stderr.seek(0)
            assert started == b"started\n", stderr.read().decode(errors="replace")
        interrupted += not caught_up(log)
    run(log, codec, batch_size=16)

    with fresh_log(tmp_path / "reference", messages) as clean:
        run(clean, codec, batch_size=500)
        assert snapshot(log) == snapshot(clean), f"random seed {seed}"
    assert interrupted >= 18, f"only {interrupted} of 20 kills hit a runner with work left (seed {seed})"


def orders_done(log: LocalLog) -> int:
    """How many input records the ``orders`` processor has committed."""
    return sum(log.committed("orders", events_topic()).values())


def test_rebuild_after_reset_equals_the_incremental_result(
    log: LocalLog, codec: EventCodec, make_event
) -> None:
    messages = toy_input(codec, make_event, 900)
    for chunk in (messages[:300], messages[300:650], messages[650:]):
        log.append(events_topic(), chunk)
        run(log, codec, batch_size=40)
    incremental = snapshot(log)

    runner = LocalRunner(log, codec, toy_processors())
    runner.reset()
    assert read_store(log, "orders", "customers") == {}
    assert set(log.committed("orders", events_topic()).values()) == {0}
    stats = runner.run(batch_size=128)

    assert snapshot(log) == incremental
    # The rebuild emitted the same events again; the log recognised every one as a duplicate.
    assert stats["orders"].emitted == 0
    assert stats["orders"].duplicates == len(incremental["milestones"])


def test_one_runner_per_log_at_a_time(log: LocalLog, codec: EventCodec, filled: list[Message]) -> None:
    refused: list[str] = []

    def start_another(name: str, stats: ProcessorStats) -> None:
        if not refused:
            with pytest.raises(PatronError) as error:
                run(log, codec)
            refused.append(str(error.value))

    run(log, codec, batch_size=100, on_batch=start_another)

    assert "another `patron run`" in refused[0]


# -- state stores -------------------------------------------------------------------------------
def commit(log: LocalLog, store: SqliteStore) -> dict[str, bytes | None]:
    with log.transaction() as tx:
        changes = store.flush(tx)
    store.committed(changes)
    return changes


def test_store_persists_exactly_what_changed_including_in_place_mutations(log: LocalLog) -> None:
    store = SqliteStore(log, "toy.things")
    store["a"] = {"n": 1, "items": []}
    store["b"] = 2
    assert commit(log, store) == {"a": b'{"n":1,"items":[]}', "b": b"2"}

    store["a"]["items"].append("x")  # mutated in place, never assigned
    assert store.get("b") == 2  # read only: not written again
    store.setdefault("c", [1])
    del store["b"]
    assert commit(log, store) == {"a": b'{"n":1,"items":["x"]}', "b": None, "c": b"[1]"}

    assert read_store(log, "toy", "things") == {"a": {"n": 1, "items": ["x"]}, "c": [1]}
    assert commit(log, store) == {}


def test_store_discard_forgets_uncommitted_changes(log: LocalLog) -> None:
    store = SqliteStore(log, "toy.things")
    store["a"] = {"n": 1}
    commit(log, store)

    store["a"]["n"] = 99
    store["new"] = True
    store.discard()

    assert store["a"] == {"n": 1}
    assert "new" not in store


def test_store_cache_is_bounded_and_evicted_keys_read_back(log: LocalLog) -> None:
    store = SqliteStore(log, "toy.things", cache_size=3)
    for n in range(10):
        store[f"k{n}"] = n
    commit(log, store)

    fresh = SqliteStore(log, "toy.things")
    assert dict(fresh.items()) == {f"k{n}": n for n in range(10)}
    assert {store[f"k{n}"] for n in range(10)} == set(range(10))
    assert sorted(store) == sorted(f"k{n}" for n in range(10))
    assert len(store) == 10


def test_store_rejects_values_that_are_not_json(log: LocalLog) -> None:
    store = SqliteStore(log, "toy.things")
    store["a"] = {1, 2}

    with pytest.raises(PatronError) as error, log.transaction() as tx:
        store.flush(tx)

    assert error.value.exit_code == EXIT_BUG
    assert "store 'toy.things' key 'a'" in str(error.value)
    assert "only JSON values" in str(error.value)


# -- CLI ----------------------------------------------------------------------------------------
TOY = ["--topology", "crashloop_topology:toy_processors"]


def cli(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])


def test_cli_run_until_caught_up_prints_counts(
    data_dir: Path, log: LocalLog, codec: EventCodec, filled: list[Message]
) -> None:
    result = cli(data_dir, "run", "--batch-size", "100", *TOY)

    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 5}
    assert f"{len(filled):,}" in rows["orders"]
    assert read_store(log, "census", "totals")["counts"] == expected_state(codec, filled)["census.counts"]

    again = cli(data_dir, "run", "--from-scratch", *TOY)
    assert again.exit_code == 0, again.output
    assert "rebuilding from the start" in again.stderr
    assert read_store(log, "census", "totals")["counts"] == expected_state(codec, filled)["census.counts"]


def test_cli_run_refuses_kafka_and_bad_topologies(data_dir: Path) -> None:
    kafka = CliRunner().invoke(app, ["--broker", "kafka://127.0.0.1:9", "run"])
    assert isinstance(kafka.exception, PatronError)
    assert "patron worker" in str(kafka.exception)

    bad = cli(data_dir, "run", "--topology", "no_such_module:f")
    assert isinstance(bad.exception, PatronError)
    assert "cannot import 'no_such_module'" in str(bad.exception)


def test_cli_run_follow_stops_cleanly_on_ctrl_c(
    data_dir: Path, log: LocalLog, codec: EventCodec, filled: list[Message], make_event
) -> None:
    follower = subprocess.Popen(
        [str(Path(sys.executable).parent / "patron"), "--data-dir", str(data_dir), "run", "--follow", *TOY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    try:
        deadline = time.monotonic() + 30
        while not caught_up(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert caught_up(log)
        more = [codec.message(make_event("identify", 1000 + n)) for n in range(30)]
        log.append(events_topic(), more)  # arrives while it follows
        while not caught_up(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
    finally:
        follower.kill()
    assert follower.returncode == 0, err.decode()
    assert b"stopping after the current commit" in err
    assert read_store(log, "census", "totals")["counts"]["events"] == len(filled) - 1 + len(more)
