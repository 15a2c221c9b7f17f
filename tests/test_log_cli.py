"""``patron log topics|count|tail|replay`` on the embedded log and on a real Kafka broker."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from patron.cli.main import app
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import EventCodec
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import EventLog, Message, partition_for, scan

TYPES = ("order_completed", "identify", "page_viewed")
EPOCH = datetime.fromisoformat("2024-05-01T12:00:00+00:00")  # make_event's time origin
CORRUPT = Message(
    b"bad", "corrupt-1", b"\x00\x00\x00\x03\xe7not avro", int((EPOCH - timedelta(days=1)).timestamp() * 1000)
)
ROW = re.compile(r"^│ (\S+)\s+│\s+([\d,]+) │")


@dataclass
class Backend:
    """One log the CLI is pointed at, a topic of its own on it, and the options that select it."""

    name: str
    url: str
    log: EventLog
    topic: str
    data_dir: Path

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(app, ["--data-dir", str(self.data_dir), "--broker", self.url, *args])


@pytest.fixture(params=["local", "kafka"])
def backend(request, data_dir, unique_topic) -> Iterator[Backend]:
    if request.param == "local":
        log: EventLog = LocalLog(data_dir)
        url = f"local://{data_dir}"
    else:
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        log = KafkaLog(bootstrap)
        url = f"kafka://{bootstrap}"
    yield Backend(request.param, url, log, unique_topic("cli"), data_dir)
    log.close()


def _seed(
    log: EventLog, topic: str, codec: EventCodec, make_event, count: int, corrupt: bool = True
) -> list[dict]:
    """``count`` events (types in turn, sources alternating, one minute apart), plus a corrupt record."""
    events = [make_event(TYPES[n % 3], n, source="web" if n % 2 else "shop") for n in range(count)]
    log.append(topic, [codec.message(e) for e in events] + ([CORRUPT] if corrupt else []))
    return events


def _table(output: str) -> dict[str, int]:
    return {m[1]: int(m[2].replace(",", "")) for line in output.splitlines() if (m := ROW.match(line))}


def test_topics_lists_partitions_and_record_counts(backend, codec, make_event):
    _seed(backend.log, backend.topic, codec, make_event, 12)

    result = backend.cli("log", "topics")

    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if backend.topic in line)
    assert re.search(rf"{backend.topic}\s+│\s+4\s+│\s+13 │", row), row


def test_count_groups_by_type_source_and_partition_and_reports_undecodable(backend, codec, make_event):
    events = _seed(backend.log, backend.topic, codec, make_event, 30)
    ends = backend.log.end_offsets(backend.topic)

    by_type = backend.cli("log", "count", "--topic", backend.topic)
    by_source = backend.cli("log", "count", "--topic", backend.topic, "--by", "source")
    by_partition = backend.cli("log", "count", "--topic", backend.topic, "--by", "partition")

    for result in (by_type, by_source, by_partition):
        assert result.exit_code == 0, result.output
    assert _table(by_type.stdout) == {
        **Counter(e["envelope"]["event_type"] for e in events),
        "(undecodable)": 1,
        "total": 31,
    }
    assert _table(by_source.stdout) == {"shop": 15, "web": 15, "(undecodable)": 1, "total": 31}
    assert _table(by_partition.stdout) == {**{str(p): n for p, n in ends.items()}, "total": 31}
    corrupt_partition = partition_for(CORRUPT.key, 4)
    position = f"{backend.topic} partition {corrupt_partition} offset {ends[corrupt_partition] - 1}"
    assert f"skipped {position}: cannot decode: schema id 999" in by_type.stderr
    assert by_partition.stderr == ""  # counting partitions decodes nothing


def test_tail_prints_the_latest_events_by_event_time(backend, codec, make_event):
    events = _seed(backend.log, backend.topic, codec, make_event, 30)

    as_json = backend.cli("log", "tail", "--topic", backend.topic, "-n", "5", "--json")
    identify = backend.cli("log", "tail", "--topic", backend.topic, "-n", "3", "--json", "--type", "identify")
    table = backend.cli("log", "tail", "--topic", backend.topic, "-n", "4")

    assert as_json.exit_code == identify.exit_code == table.exit_code == 0, as_json.output + table.output
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["envelope"]["event_id"] for e in lines] == [e["envelope"]["event_id"] for e in events[-5:]]
    assert lines[-1]["envelope"]["occurred_at"] == "2024-05-01T12:29:00+00:00"
    wanted = [e["envelope"]["event_id"] for e in events if e["envelope"]["event_type"] == "identify"][-3:]
    assert [json.loads(line)["envelope"]["event_id"] for line in identify.stdout.splitlines()] == wanted
    rows = table.stdout.splitlines()
    assert rows[0].split() == ["occurred_at", "type", "source", "position", "payload"]
    assert [row.split()[0] for row in rows[1:]] == [f"2024-05-01T12:{m}:00+00:00" for m in (26, 27, 28, 29)]
    assert "Lovelace" not in table.stdout, "PII fields stay off the compact table"


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """Lines of the process's stdout as they come (a thread, so the test can wait with a timeout)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_tail_follow_prints_new_events_until_interrupted(backend, codec, make_event):
    events = _seed(backend.log, backend.topic, codec, make_event, 6, corrupt=False)
    command = [sys.executable, "-c", "from patron.cli.main import run; run()"]
    options = ["--data-dir", str(backend.data_dir), "--broker", backend.url]
    process = subprocess.Popen(
        [*command, *options, "log", "tail", "--topic", backend.topic, "-n", "1", "--json", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(process)
        first = json.loads(lines.get(timeout=30))  # printed once the starting offsets are known
        assert first["envelope"]["event_id"] == events[-1]["envelope"]["event_id"]

        later = [make_event("page_viewed", n) for n in range(100, 103)]
        backend.log.append(backend.topic, [codec.message(e) for e in later])
        followed = [json.loads(lines.get(timeout=30))["envelope"]["event_id"] for _ in later]
        assert followed == [e["envelope"]["event_id"] for e in later]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr


def test_replay_from_the_local_log_to_kafka_copies_every_event_once(
    data_dir, kafka_bootstrap, codec, make_event, unique_topic
):
    topic = unique_topic("replay")
    local = LocalLog(data_dir)
    _seed(local, topic, codec, make_event, 90)
    kafka_url = f"kafka://{kafka_bootstrap}"
    source = Backend("local", f"local://{data_dir}", local, topic, data_dir)
    target = Backend("kafka", kafka_url, KafkaLog(kafka_bootstrap), topic, data_dir)

    first = source.cli("log", "replay", "--topic", topic, "--to", kafka_url)
    second = source.cli("log", "replay", "--topic", topic, "--to", kafka_url)

    assert first.exit_code == 0, first.output
    assert "read 91, written 90, duplicates 0, filtered out 0, undecodable 1" in first.stdout
    assert second.exit_code == 0, second.output
    assert "read 91, written 0, duplicates 90, filtered out 0, undecodable 1" in second.stdout
    local_counts = _table(source.cli("log", "count", "--topic", topic).stdout)
    kafka_counts = _table(target.cli("log", "count", "--topic", topic).stdout)
    assert kafka_counts == {k: v for k, v in local_counts.items() if k != "(undecodable)"} | {"total": 90}
    for partition in range(4):  # same partitions, same order within each
        local_ids = [
            r.event_id for r in scan(local, topic) if r.partition == partition and r.event_id != "corrupt-1"
        ]
        kafka_ids = [r.event_id for r in scan(target.log, topic) if r.partition == partition]
        assert kafka_ids == local_ids
    target.log.close()
    local.close()


def test_replay_to_jsonl_keeps_the_time_range_and_types_asked_for(data_dir, codec, make_event, unique_topic):
    topic = unique_topic("jsonl")
    local = LocalLog(data_dir)
    events = _seed(local, topic, codec, make_event, 30)
    out = data_dir / "export.jsonl"
    source = Backend("local", f"local://{data_dir}", local, topic, data_dir)

    result = source.cli(
        "log", "replay", "--topic", topic, "--out", str(out),
        "--since", "2024-05-01T12:10:00Z", "--until", "2024-05-01T12:20:00+00:00",
        "--type", "order_completed", "--type", "page_viewed",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [e for n, e in enumerate(events) if 10 <= n < 20 and e["envelope"]["event_type"] != "identify"]
    assert sorted(e["envelope"]["event_id"] for e in written) == sorted(
        e["envelope"]["event_id"] for e in expected
    )
    assert all(e["envelope"]["occurred_at"].startswith("2024-05-01T12:1") for e in written)
    # 31 read: 6 written, 24 events and the (day-older) corrupt record outside the range or types
    assert "read 31, written 6, duplicates 0, filtered out 25, undecodable 0" in result.stdout
    local.close()


def test_a_record_with_a_corrupt_body_is_reported_and_the_rest_replayed(data_dir, codec, make_event):
    local = LocalLog(data_dir)
    events = _seed(local, "patron.events", codec, make_event, 5, corrupt=False)
    header = codec.encode(events[0])[:5]  # a valid schema id ...
    local.append("patron.events", [Message(b"k", "torn-1", header + b"\x02[x", 0)])  # ... and a torn body
    out = data_dir / "all.jsonl"

    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "log", "replay", "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "written 5, duplicates 0, filtered out 0, undecodable 1" in result.stdout
    assert re.search(
        r"skipped patron\.events partition \d offset \d+: cannot decode: corrupt Avro body", result.stderr
    )
    assert len(out.read_text().splitlines()) == 5
    local.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["count", "--topic", "nope"], "topic 'nope' does not exist on local://"),
        (["tail", "--type", "idenify"], "did you mean 'identify'?"),
        (
            ["replay", "--out", "x.jsonl", "--since", "yesterday"],
            "--since 'yesterday' is not an ISO 8601 time",
        ),
        (["replay"], "exactly one destination"),
        (["replay", "--out", "x.jsonl", "--to", "kafka://h:1"], "exactly one destination"),
        (["replay", "--to", "ftp://h"], "unknown scheme 'ftp'"),
    ],
)
def test_usage_errors_name_what_was_wrong(data_dir, codec, make_event, args, message):
    _seed(LocalLog(data_dir), "patron.events", codec, make_event, 3)

    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "log", *args])

    assert isinstance(result.exception, PatronError), result.output
    assert message in str(result.exception)
    assert result.exception.exit_code == EXIT_INVALID


def test_replay_refuses_to_replay_a_log_into_itself(data_dir, codec, make_event):
    _seed(LocalLog(data_dir), "patron.events", codec, make_event, 3)

    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "log", "replay", "--to", f"local://{data_dir}/."]
    )

    assert isinstance(result.exception, PatronError)
    assert "is the log being replayed" in str(result.exception)


def test_errors_reach_the_shell_as_an_exit_code_and_an_error_line(data_dir):
    LocalLog(data_dir).ensure_topic("patron.events")
    command = [sys.executable, "-c", "from patron.cli.main import run; run()", "--data-dir", str(data_dir)]

    done = subprocess.run(
        [*command, "log", "count", "--topic", "nope"], capture_output=True, text=True, timeout=60
    )

    assert done.returncode == EXIT_INVALID
    assert done.stderr.startswith("error: topic 'nope' does not exist")
