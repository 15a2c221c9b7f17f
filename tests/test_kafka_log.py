"""The Kafka log against a real broker: topics, round trips, partitioning, duplicates, other clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPythonPartition

from patron.errors import EXIT_UNAVAILABLE, Unavailable
from patron.events.codec import EventCodec
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import AppendResult, Message, partition_for, scan

TYPES = ("order_completed", "identify", "page_viewed")


@pytest.fixture
def kafka_log(kafka_bootstrap: str) -> Iterator[KafkaLog]:
    log = KafkaLog(kafka_bootstrap, default_partitions=4, timeout=10)
    yield log
    log.close()


def _messages(codec: EventCodec, make_event, count: int, start: int = 0) -> list[Message]:
    return [codec.message(make_event(TYPES[n % 3], n)) for n in range(start, start + count)]


def test_ensure_topic_creates_the_partitions_and_tolerates_an_existing_topic(
    kafka_log, kafka_bootstrap, unique_topic
):
    topic = unique_topic("created")

    assert kafka_log.ensure_topic(topic, 6) == 6
    assert kafka_log.topics()[topic] == 6
    other = KafkaLog(kafka_bootstrap)  # knows nothing cached: sees TOPIC_ALREADY_EXISTS or the metadata
    assert other.ensure_topic(topic, 3) == 6
    assert other.end_offsets(topic) == dict.fromkeys(range(6), 0)
    other.close()
    assert not any(name.startswith("__") for name in kafka_log.topics())


def test_appended_records_read_back_equal_in_per_partition_order(kafka_log, codec, make_event, unique_topic):
    topic = unique_topic("roundtrip")
    messages = _messages(codec, make_event, 300)

    assert kafka_log.append(topic, messages) == AppendResult(appended=300, duplicates=0)

    ends = kafka_log.end_offsets(topic)
    assert sum(ends.values()) == 300
    by_id = {m.event_id: m for m in messages}
    for partition, end in ends.items():
        records = kafka_log.read(topic, partition, 0, 1000)
        assert [r.offset for r in records] == list(range(end))
        for record in records:
            sent = by_id[record.event_id]
            assert (record.key, record.value, record.timestamp_ms) == (
                sent.key,
                sent.value,
                sent.timestamp_ms,
            )
            assert codec.decode(record.value)["envelope"]["event_id"] == record.event_id
        assert [r.event_id for r in records] == [
            m.event_id for m in messages if partition_for(m.key, 4) == partition
        ]
    assert [r.offset for r in kafka_log.read(topic, 1, 2, 3)] == [2, 3, 4]
    assert kafka_log.read(topic, 1, ends[1], 10) == []
    assert kafka_log.read(unique_topic("missing"), 0, 0) == []
    assert kafka_log.end_offsets(unique_topic("missing")) == {}


def test_end_offsets_count_every_record_of_multi_record_batches(kafka_log, codec, make_event, unique_topic):
    topic = unique_topic("ends")
    for start in range(0, 500, 100):  # several produce batches per partition
        kafka_log.append(topic, _messages(codec, make_event, 100, start))
    assert sum(kafka_log.end_offsets(topic).values()) == 500
    assert len(list(scan(kafka_log, topic, batch=70))) == 500


def test_keys_land_where_partition_for_and_the_local_log_put_them(
    kafka_log, codec, make_event, unique_topic, data_dir
):
    topic = unique_topic("partitions")
    messages = [*_messages(codec, make_event, 200), Message(None, "no-key", b"x", 0)]
    kafka_log.ensure_topic(topic, 5)
    kafka_log.append(topic, messages)
    local = LocalLog(data_dir / "local", default_partitions=5)
    local.append(topic, messages)

    on_kafka = {r.event_id: r.partition for r in scan(kafka_log, topic)}
    on_local = {r.event_id: r.partition for r in scan(local, topic)}
    assert len(on_kafka) == 201
    assert on_kafka == on_local
    assert all(on_kafka[m.event_id] == partition_for(m.key, 5) for m in messages)
    assert len(set(on_kafka.values())) == 5
    local.close()


def test_duplicates_from_the_same_process_are_suppressed(
    kafka_log, kafka_bootstrap, codec, make_event, unique_topic
):
    topic = unique_topic("dedup")
    messages = _messages(codec, make_event, 40)

    assert kafka_log.append(topic, messages + messages[:5]) == AppendResult(40, 5)
    assert kafka_log.append(topic, messages[10:] + _messages(codec, make_event, 3, 40)) == AppendResult(3, 30)
    assert sum(kafka_log.end_offsets(topic).values()) == 43

    # The window is per process (documented): a fresh client writes the same events again,
    # which is why consumers deduplicate by the event_id header.
    other = KafkaLog(kafka_bootstrap)
    assert other.append(topic, messages[:2]) == AppendResult(2, 0)
    other.close()
    assert sum(kafka_log.end_offsets(topic).values()) == 45


def test_the_dedup_window_is_bounded(kafka_bootstrap, codec, make_event, unique_topic):
    topic = unique_topic("window")
    log = KafkaLog(kafka_bootstrap, dedup_window=10)
    messages = _messages(codec, make_event, 30)
    log.append(topic, messages)

    assert log.append(topic, messages[-10:]) == AppendResult(0, 10)  # still remembered
    assert log.append(topic, messages[:1]) == AppendResult(1, 0)  # forgotten: written again
    log.close()


def test_kafka_python_consumer_reads_the_same_records(
    kafka_log, kafka_bootstrap, codec, make_event, unique_topic
):
    topic = unique_topic("interop")
    kafka_log.append(topic, _messages(codec, make_event, 120))
    ours = {(r.partition, r.offset): r for r in scan(kafka_log, topic)}

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, group_id=None)
    consumer.assign([KafkaPythonPartition(topic, p) for p in range(4)])
    consumer.seek_to_beginning()
    theirs = {}
    deadline = time.monotonic() + 20
    while len(theirs) < len(ours) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=200).values():
            for message in batch:
                theirs[(message.partition, message.offset)] = message
    consumer.close()

    assert theirs.keys() == ours.keys()
    for position, record in ours.items():
        message = theirs[position]
        assert (message.key, message.value, message.timestamp) == (
            record.key,
            record.value,
            record.timestamp_ms,
        )
        assert dict(message.headers)["event_id"].decode() == record.event_id


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_broker_raises_unavailable_quickly(codec, make_event):
    address = f"127.0.0.1:{_closed_port()}"
    log = KafkaLog(address, timeout=2)

    started = time.monotonic()
    with pytest.raises(Unavailable, match=address) as raised:
        log.topics()
    assert time.monotonic() - started < 6
    assert raised.value.exit_code == EXIT_UNAVAILABLE
    assert "\n" not in str(raised.value)

    started = time.monotonic()
    with pytest.raises(Unavailable, match=address):
        log.append("anything", _messages(codec, make_event, 3))
    assert time.monotonic() - started < 6
    log.close()
