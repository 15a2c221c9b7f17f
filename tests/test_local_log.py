"""The embedded SQLite log: offsets, idempotency, partitioning, transactions, concurrency, crash safety."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patron.events.codec import EventCodec
from patron.streams.local_log import LocalLog
from patron.streams.log import AppendResult, Message, partition_for, scan

TOPIC = "orders"
TYPES = ("order_completed", "identify", "page_viewed")

# Appends batches of encoded events in a loop and prints each acknowledged batch's last event id.
WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests_dir!r})
    from conftest import make_event
    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry
    from patron.streams.local_log import LocalLog

    directory, topic, batch, batches, start, pause = sys.argv[1:7]
    batch, batches, start, pause = int(batch), int(batches), int(start), float(pause)
    log = LocalLog(directory)
    codec = EventCodec(FileRegistry(directory + "/registry.db"))
    types = ("order_completed", "identify", "page_viewed")
    n = start
    while batches != 0:
        messages = [codec.message(make_event(types[i % 3], i)) for i in range(n, n + batch)]
        log.append(topic, messages)
        print(messages[-1].event_id, flush=True)
        n += batch
        batches -= 1
        time.sleep(pause)
    """
).format(tests_dir=str(Path(__file__).parent))


@pytest.fixture
def log(data_dir: Path) -> Iterator[LocalLog]:
    opened = LocalLog(data_dir)
    yield opened
    opened.close()


def _messages(codec: EventCodec, make_event, count: int, start: int = 0) -> list[Message]:
    return [codec.message(make_event(TYPES[n % 3], n)) for n in range(start, start + count)]


def _writer(
    data_dir: Path, batch: int, batches: int, start: int = 0, pause: float = 0.0
) -> subprocess.Popen[str]:
    script = data_dir.parent / "writer.py"
    script.write_text(WRITER)
    args = [
        sys.executable,
        str(script),
        str(data_dir),
        TOPIC,
        str(batch),
        str(batches),
        str(start),
        str(pause),
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_append_then_read_returns_the_records_with_contiguous_offsets(log, codec, make_event):
    messages = _messages(codec, make_event, 200)

    assert log.append(TOPIC, messages) == AppendResult(appended=200, duplicates=0)

    ends = log.end_offsets(TOPIC)
    assert sum(ends.values()) == 200 and set(ends) == {0, 1, 2, 3}
    by_id = {m.event_id: m for m in messages}
    for partition, end in ends.items():
        records = log.read(TOPIC, partition, 0, 1000)
        assert [r.offset for r in records] == list(range(end))
        for record in records:
            sent = by_id[record.event_id]
            assert (record.key, record.value, record.timestamp_ms) == (
                sent.key,
                sent.value,
                sent.timestamp_ms,
            )
        # per-partition order is append order
        sent_order = [m.event_id for m in messages if partition_for(m.key, 4) == partition]
        assert [r.event_id for r in records] == sent_order
    middle = log.read(TOPIC, 0, 3, 2)
    assert [r.offset for r in middle] == [3, 4]
    assert log.read(TOPIC, 0, ends[0], 10) == []
    assert log.read("missing", 0, 0) == [] and log.end_offsets("missing") == {}


def test_append_is_idempotent_by_event_id_within_and_across_batches(log, codec, make_event):
    messages = _messages(codec, make_event, 50)

    assert log.append(TOPIC, messages + messages[:10]) == AppendResult(appended=50, duplicates=10)
    assert log.append(TOPIC, messages[20:] + _messages(codec, make_event, 5, start=50)) == AppendResult(5, 30)

    records = list(scan(log, TOPIC))
    assert len(records) == 55
    assert len({r.event_id for r in records}) == 55


def test_event_ids_that_are_not_uuids_round_trip_and_never_collide_with_uuids(log):
    uuid_id = "00000000-0000-4000-8000-000000000001"
    sixteen = "abcdefghijklmnop"  # 16 bytes, like a UUID's binary form
    messages = [Message(b"k", eid, eid.encode(), 0) for eid in (uuid_id, sixteen, "order-7", "ORDER-7")]

    assert log.append(TOPIC, messages) == AppendResult(4, 0)
    assert log.append(TOPIC, messages) == AppendResult(0, 4)
    assert {r.event_id for r in scan(log, TOPIC)} == {uuid_id, sixteen, "order-7", "ORDER-7"}


def test_records_land_in_the_partition_partition_for_names(data_dir, codec, make_event):
    log = LocalLog(data_dir, default_partitions=7)
    messages = _messages(codec, make_event, 300)
    log.append(TOPIC, [*messages, Message(None, "no-key", b"x", 0)])

    records = list(scan(log, TOPIC))
    assert len(records) == 301
    assert {r.partition for r in records} == set(range(7))
    for record in records:
        assert record.partition == partition_for(record.key, 7)
    assert next(r for r in records if r.event_id == "no-key").partition == 0
    log.close()


def test_transaction_that_raises_rolls_back_state_appends_offsets_and_new_topics(log, codec, make_event):
    log.append(TOPIC, _messages(codec, make_event, 20))
    ends_before = log.end_offsets(TOPIC)
    with log.transaction() as tx:
        tx.put("profiles", [(b"u1", b"v1")])
        tx.commit_offsets("builder", TOPIC, {0: 1})

    with pytest.raises(RuntimeError, match="boom"), log.transaction() as tx:
        tx.put("profiles", [(b"u1", b"v2"), (b"u2", b"v2")])
        tx.delete("profiles", [b"u1"])
        tx.append(TOPIC, _messages(codec, make_event, 5, start=20))
        tx.append("brand-new", _messages(codec, make_event, 3, start=30))
        tx.commit_offsets("builder", TOPIC, {0: 5, 1: 5})
        raise RuntimeError("boom")

    with log.transaction() as tx:
        assert tx.get("profiles", b"u1") == b"v1"
        assert tx.get("profiles", b"u2") is None
    assert log.end_offsets(TOPIC) == ends_before
    assert log.committed("builder", TOPIC) == {0: 1, 1: 0, 2: 0, 3: 0}
    assert "brand-new" not in log.topics()
    # the rolled-back topic must not linger in any cache: it can be created for real afterwards
    assert log.append("brand-new", _messages(codec, make_event, 3, start=30)) == AppendResult(3, 0)
    assert sum(log.end_offsets("brand-new").values()) == 3


def test_transaction_commits_state_appends_and_offsets_together(log, codec, make_event):
    with log.transaction() as tx:
        tx.put("profiles", [(b"u1", b"v1")])
        assert tx.append(TOPIC, _messages(codec, make_event, 4)) == AppendResult(4, 0)
        tx.commit_offsets("builder", "input", {0: 7})

    with log.transaction() as tx:
        assert tx.get("profiles", b"u1") == b"v1"
    assert sum(log.end_offsets(TOPIC).values()) == 4
    assert log.committed("builder", "input")[0] == 7


def test_everything_persists_across_reopen(data_dir, codec, make_event):
    first = LocalLog(data_dir)
    messages = _messages(codec, make_event, 30)
    first.append(TOPIC, messages)
    with first.transaction() as tx:
        tx.put("profiles", [(b"u1", b"v1")])
        tx.commit_offsets("builder", TOPIC, {2: 3})
    first.close()

    second = LocalLog(data_dir)
    assert sorted(r.event_id for r in scan(second, TOPIC)) == sorted(m.event_id for m in messages)
    assert second.committed("builder", TOPIC)[2] == 3
    with second.transaction() as tx:
        assert tx.get("profiles", b"u1") == b"v1"
    assert second.append(TOPIC, messages) == AppendResult(0, 30)
    second.close()


def test_a_reader_process_sees_whole_batches_while_a_writer_process_appends(data_dir, codec):
    batch, batches = 25, 40
    LocalLog(data_dir).ensure_topic(TOPIC)
    writer = _writer(data_dir, batch, batches, pause=0.01)
    reader = LocalLog(data_dir)
    seen: list[int] = []
    while writer.poll() is None or not seen or seen[-1] < batch * batches:
        total = sum(reader.end_offsets(TOPIC).values())
        assert total % batch == 0, f"saw a partial batch: {total} records"
        assert not seen or total >= seen[-1]
        seen.append(total)
        if writer.poll() is not None and total < batch * batches:
            assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    records = list(scan(reader, TOPIC))
    assert len(records) == batch * batches
    assert all(codec.decode(r.value)["envelope"]["event_id"] == r.event_id for r in records)
    assert len(set(seen)) > 3, "the reader should have observed the log while it grew"
    reader.close()


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    started = time.monotonic()
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"writer exited early: {process.stderr.read() if process.stderr else ''}"
    assert time.monotonic() - started < timeout, "the writer took too long to acknowledge a batch"
    return line.strip()


@pytest.mark.parametrize("round_", range(3))
def test_killing_a_writer_loses_no_acknowledged_batch_and_tears_no_record(data_dir, codec, round_):
    rng = random.Random(round_)
    acknowledged: list[str] = []
    for kill in range(3):  # crash the same log repeatedly; each run continues after the last one
        writer = _writer(data_dir, batch=40, batches=-1, start=100_000 * (kill + 1))
        wanted = rng.randint(2, 12)
        acknowledged += [_read_line(writer, 30) for _ in range(wanted)]
        time.sleep(rng.random() * 0.05)  # die at some arbitrary point of a later append
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert writer.returncode == -signal.SIGKILL

        log = LocalLog(data_dir)
        present = set()
        for partition, end in log.end_offsets(TOPIC).items():
            records = log.read(TOPIC, partition, 0, end + 10)
            assert [r.offset for r in records] == list(range(end)), "offsets must be contiguous"
            for record in records:
                event = codec.decode(record.value)  # a torn record would not decode
                assert event["envelope"]["event_id"] == record.event_id
                present.add(record.event_id)
        assert len(present) % 40 == 0, "a batch is all there or not at all"
        missing = [eid for eid in acknowledged if eid not in present]
        assert not missing, f"acknowledged events lost after SIGKILL: {missing[:3]}"
        log.close()


def test_wait_for_writes_wakes_on_another_connections_commit(tmp_path: Path) -> None:
    """A follower waiting for new records returns as soon as another connection commits, and only then."""
    log = LocalLog(tmp_path)
    log.ensure_topic("t", 1)
    stop = threading.Event()
    assert log.wait_for_writes(0.05, stop) is False  # nobody wrote: the timeout passes

    def write_later() -> None:
        time.sleep(0.1)
        other = LocalLog(tmp_path)
        other.append("t", [Message(key=b"k", event_id=None, value=b"v", timestamp_ms=1)])
        other.close()

    writer = threading.Thread(target=write_later)
    writer.start()
    assert log.wait_for_writes(30, stop) is True
    writer.join()
    assert log.end_offsets("t") == {0: 1}
    stop.set()
    assert log.wait_for_writes(30, stop) is False  # stopping ends the wait


def test_a_writer_waits_for_the_lock_and_gives_up_with_the_sqlite_error(tmp_path: Path) -> None:
    """Writers poll for the write lock (not SQLite's 100 ms back-off) and still give up after the wait."""
    log = LocalLog(tmp_path)
    log.ensure_topic("t", 1)
    holder = sqlite3.connect(tmp_path / "log.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.2, lambda: holder.execute("COMMIT"))
    release.start()
    log.append("t", [Message(key=b"k", event_id=None, value=b"1", timestamp_ms=1)])  # waits, then writes
    release.join()
    assert log.end_offsets("t") == {0: 1}
    assert log.db.execute("PRAGMA busy_timeout").fetchone()[0] == 60000  # restored after the wait

    log.db.execute("PRAGMA busy_timeout=100")  # the connection's own wait bounds the polling
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        log.append("t", [Message(key=b"k", event_id=None, value=b"2", timestamp_ms=1)])
    holder.execute("ROLLBACK")
    assert log.end_offsets("t") == {0: 1}
