"""The webhook sink against a real HTTP receiver on loopback, a real embedded log and a real Kafka broker.

The receiver is ``http.server`` in a thread: it records every request (body and headers), can
fail the first K requests with 503 or refuse chosen events for good, and deduplicates by
``Idempotency-Key`` the way the delivery contract asks receivers to. Events are the engine's
``segment_entered`` / ``segment_exited`` / ``trigger_fired``, encoded with the real codec.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import serve_registry
from test_catalogue import SAMPLES, T1
from test_catalogue import event as catalogue_event
from test_ingest import cli

from patron.connectors.deadletter import DeadLetterStore
from patron.connectors.webhook_sink import (
    Selection,
    WebhookClient,
    WebhookSink,
    retry_after_seconds,
    webhook_body,
)
from patron.errors import EXIT_INVALID, EXIT_UNAVAILABLE
from patron.events.codec import EventCodec
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import Message
from patron.streams.positioned import LocalSource

SECRET = b"s3cret-for-tests"
EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "segment_consumer.py"


# -- the receiver -------------------------------------------------------------------------------
@dataclass
class Receiver:
    """A webhook endpoint: ``fail_first`` requests get 503, ``refuse(body)`` can pin a status for good."""

    url: str = ""
    fail_first: int = 0
    refuse: Callable[[dict[str, Any]], int | None] = lambda body: None
    on_failure: Callable[[], None] = lambda: None
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    failures: int = 0
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # by Idempotency-Key
    duplicates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, headers: dict[str, str], raw: bytes) -> int:
        with self.lock:
            self.requests.append((headers, raw))
            body = orjson.loads(raw)
            status = self.refuse(body)
            if status is None and self.fail_first > 0:
                self.fail_first -= 1
                status = 503
            if status is not None:
                self.failures += 1
                self.on_failure()
                return status
            key = headers["idempotency-key"]
            if key in self.accepted:
                self.duplicates += 1
            else:
                self.accepted[key] = body
            return 200

    def delivered_ids(self) -> list[str]:
        return list(self.accepted)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            status = found.answer({k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    found.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/patron?token=abc"
    yield found
    server.shutdown()
    server.server_close()


# -- events -------------------------------------------------------------------------------------
def change(
    event_type: str,
    profile: str,
    name: str = "at-risk-no-email",
    *,
    channels: tuple[str, ...] = ("email",),
    suppressed: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """A segment change or trigger as the engine emits it (payload shaped like the catalogue's sample)."""
    payload = {
        **SAMPLES[event_type],
        "profile_id": profile,
        "channels": list(channels),
        "suppressed": [{"channel": c, "reason": r} for c, r in suppressed],
    }
    payload["trigger" if event_type == "trigger_fired" else "segment"] = name
    built = catalogue_event(event_type, payload)
    built["envelope"]["source"] = "patron.segments"
    return built


def mixed_changes() -> list[dict[str, Any]]:
    """Six changes over three profiles (entered, fired, exited), so each profile has an order to keep."""
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    kinds = [
        ("segment_entered", a),
        ("segment_entered", b),
        ("trigger_fired", a),
        ("segment_exited", b),
        ("segment_entered", c),
        ("segment_exited", a),
    ]
    return [change(kind, profile) for kind, profile in kinds]


def append(
    log: Any, codec: EventCodec, events: list[dict[str, Any]], topic: str = SEGMENT_CHANGES_TOPIC
) -> None:
    log.append(topic, [codec.message(e, key=e["payload"]["profile_id"].encode()) for e in events])


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["envelope"]["event_id"] for e in events]


def local_sink(
    data_dir: Path,
    codec: EventCodec,
    url: str,
    *,
    selection: Selection | None = None,
    max_attempts: int = 5,
    secret: bytes | None = SECRET,
    stop: threading.Event | None = None,
) -> WebhookSink:
    log = LocalLog(data_dir)
    client = WebhookClient(url, secret=secret, timeout=5, max_attempts=max_attempts, backoff=0.01, stop=stop)
    return WebhookSink(
        LocalSource(log, SEGMENT_CHANGES_TOPIC, "test-sink"),
        codec,
        client,
        DeadLetterStore(log),
        selection=selection,
        group="test-sink",
    )


def verify(headers: dict[str, str], raw: bytes) -> bool:
    """What a receiver does: recompute the HMAC of the raw body and compare in constant time."""
    expected = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers["x-patron-signature"])


# -- embedded log -------------------------------------------------------------------------------
def test_every_event_is_delivered_once_in_profile_order_despite_503s_and_signed(data_dir, codec, receiver):
    events = mixed_changes()
    log = LocalLog(data_dir)
    append(log, codec, events)
    receiver.fail_first = 3

    counts = local_sink(data_dir, codec, receiver.url).run()

    assert receiver.failures == 3
    assert (counts.delivered, counts.retries, counts.dead_lettered) == (6, 3, 0)
    assert sorted(receiver.delivered_ids()) == sorted(ids(events)) and receiver.duplicates == 0
    for headers, raw in receiver.requests:
        assert verify(headers, raw)
        assert headers["content-type"] == "application/json"
        assert headers["idempotency-key"] == orjson.loads(raw)["event_id"]
        assert headers["x-patron-event-type"] == orjson.loads(raw)["event_type"]
        assert abs(int(headers["x-patron-timestamp"]) - time.time()) < 60
    # each profile's changes arrive in the order they were appended (the key keeps them in one partition)
    for profile in {e["payload"]["profile_id"] for e in events}:
        sent = [b["event_id"] for b in receiver.accepted.values() if b["profile_id"] == profile]
        assert sent == [e["envelope"]["event_id"] for e in events if e["payload"]["profile_id"] == profile]
    first = events[0]
    assert receiver.accepted[first["envelope"]["event_id"]] == {
        "event_id": first["envelope"]["event_id"],
        "event_type": "segment_entered",
        "occurred_at": "2024-05-17T09:30:12.345678Z",
        "profile_id": first["payload"]["profile_id"],
        "segment": "at-risk-no-email",
        "version": 2,
        "reason": SAMPLES["segment_entered"]["reason"],
        "traits": {"traits.email": "ann@example.com", "clv.value": 412.0},
        "channels": ["email"],
        "suppressed": [],
        "evaluated_at": T1.isoformat().replace("+00:00", "Z"),
        "cause_event_id": SAMPLES["segment_entered"]["cause_event_id"],
    }


def test_body_keys_come_first_and_a_wrong_secret_does_not_verify(codec):
    built = change("trigger_fired", str(uuid.uuid4()), "abandoned_cart")
    raw = webhook_body(codec.decode(codec.encode(built)))
    assert list(orjson.loads(raw))[:5] == ["event_id", "event_type", "occurred_at", "profile_id", "trigger"]
    good = {"x-patron-signature": "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()}
    assert verify(good, raw) and not verify(good, raw + b" ")


def test_segment_and_channel_filters_skip_and_count_without_posting(data_dir, codec, receiver):
    profile = str(uuid.uuid4())
    wanted = change("segment_entered", profile, "vip")
    no_consent = change(
        "segment_entered", profile, "vip", channels=(), suppressed=(("email", "unsubscribed"),)
    )
    sms_only = change("trigger_fired", profile, "vip", channels=("sms",))
    other_segment = change("segment_exited", profile, "churn-risk")
    append(LocalLog(data_dir), codec, [wanted, no_consent, sms_only, other_segment])

    selection = Selection(segments=frozenset({"vip"}), channel="email")
    counts = local_sink(data_dir, codec, receiver.url, selection=selection).run()

    assert (counts.delivered, counts.suppressed, counts.filtered) == (1, 2, 1)
    assert receiver.delivered_ids() == [wanted["envelope"]["event_id"]]
    assert len(receiver.requests) == 1
    # skipped records are committed too: a second run has nothing left to look at
    again = local_sink(data_dir, codec, receiver.url, selection=selection).run()
    assert (again.delivered, again.suppressed, again.filtered) == (0, 0, 0)


def test_a_permanently_failing_event_is_dead_lettered_after_n_attempts_and_the_next_is_delivered(
    data_dir, codec, receiver
):
    events = [change("segment_entered", str(uuid.uuid4())) for _ in range(3)]
    doomed, refused = events[0]["envelope"]["event_id"], events[1]["envelope"]["event_id"]
    receiver.refuse = lambda body: {doomed: 503, refused: 400}.get(body["event_id"])
    log = LocalLog(data_dir)
    append(log, codec, events)

    counts = local_sink(data_dir, codec, receiver.url, max_attempts=4).run()

    tries = [orjson.loads(raw)["event_id"] for _, raw in receiver.requests]
    assert tries.count(doomed) == 4  # 503 is retried up to --max-attempts
    assert tries.count(refused) == 1  # 400 is not: the same request would be refused again
    assert receiver.delivered_ids() == [events[2]["envelope"]["event_id"]]
    assert (counts.delivered, counts.dead_lettered) == (1, 2)
    letters = {letter.details["event_id"]: letter for letter in DeadLetterStore(log)}
    assert set(letters) == {doomed, refused}
    by_value = {r: codec.encode(e) for r, e in zip((doomed, refused), events, strict=False)}
    for event_id, letter in letters.items():
        assert letter.raw == by_value[event_id]  # the exact record bytes, replayable
        assert letter.source == "webhook-sink" and "token" not in letter.location + letter.reason
    assert "HTTP 503" in letters[doomed].reason and "all 4 attempt(s)" in letters[doomed].reason
    assert "HTTP 400" in letters[refused].reason and "not retried" in letters[refused].reason


def test_an_unreachable_endpoint_is_retried_then_dead_lettered(data_dir, codec):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    log = LocalLog(data_dir)
    append(log, codec, [change("segment_entered", str(uuid.uuid4()))])

    counts = local_sink(data_dir, codec, closed, max_attempts=3).run()

    assert (counts.dead_lettered, counts.retries) == (1, 2)
    (letter,) = DeadLetterStore(log)
    assert "all 3 attempt(s)" in letter.reason and "ConnectError" in letter.reason


def test_an_unreadable_record_is_dead_lettered_and_the_sink_goes_on(data_dir, codec, receiver):
    good = change("segment_entered", "p-1")
    log = LocalLog(data_dir)
    log.append(SEGMENT_CHANGES_TOPIC, [Message(b"p-1", "bad-1", b"\x07not avro", 0)])
    append(log, codec, [good])

    counts = local_sink(data_dir, codec, receiver.url).run()

    assert (counts.delivered, counts.dead_lettered) == (1, 1)
    (letter,) = DeadLetterStore(log)
    assert letter.raw == b"\x07not avro" and "not a readable event" in letter.reason


def test_a_restart_resumes_after_the_last_committed_record(data_dir, codec, receiver):
    first, later = mixed_changes()[:3], mixed_changes()[:2]
    append(LocalLog(data_dir), codec, first)
    assert local_sink(data_dir, codec, receiver.url).run().delivered == 3
    append(LocalLog(data_dir), codec, later)

    again = local_sink(data_dir, codec, receiver.url).run()

    assert again.delivered == 2
    assert len(receiver.requests) == 5 and receiver.duplicates == 0
    delivered = receiver.delivered_ids()
    assert sorted(delivered[:3]) == sorted(ids(first)) and sorted(delivered[3:]) == sorted(ids(later))


def test_a_delivery_interrupted_by_shutdown_is_not_committed_and_is_delivered_next_run(
    data_dir, codec, receiver
):
    event = change("segment_entered", str(uuid.uuid4()))
    log = LocalLog(data_dir)
    append(log, codec, [event])
    stop = threading.Event()
    receiver.fail_first, receiver.on_failure = 1, stop.set  # shutdown arrives while it waits to retry

    interrupted = local_sink(data_dir, codec, receiver.url, stop=stop).run()

    assert (interrupted.delivered, interrupted.dead_lettered) == (0, 0)
    assert list(DeadLetterStore(log)) == []
    assert log.committed("test-sink", SEGMENT_CHANGES_TOPIC) == dict.fromkeys(range(4), 0)
    resumed = local_sink(data_dir, codec, receiver.url).run()
    assert resumed.delivered == 1 and receiver.delivered_ids() == ids([event])


def test_follow_delivers_events_appended_while_it_runs(data_dir, codec, receiver):
    stop = threading.Event()
    sink = local_sink(data_dir, codec, receiver.url, stop=stop)
    thread = threading.Thread(target=sink.run, kwargs={"follow": True}, daemon=True)
    thread.start()
    events = mixed_changes()
    append(LocalLog(data_dir), codec, events)
    deadline = time.monotonic() + 10
    while len(receiver.accepted) < len(events) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert sorted(receiver.delivered_ids()) == sorted(ids(events))
    assert sink.counts.delivered == len(events)


# -- the command ----------------------------------------------------------------------------------
def test_cli_delivers_signed_filtered_events_and_a_second_run_sends_nothing(
    data_dir, codec, receiver, monkeypatch
):
    profile = str(uuid.uuid4())
    vip = change("segment_entered", profile, "vip")
    blocked = change("segment_exited", profile, "vip", channels=(), suppressed=(("email", "no consent"),))
    other = change("trigger_fired", profile, "abandoned_cart")
    append(LocalLog(data_dir), codec, [vip, blocked, other])
    receiver.fail_first = 2
    monkeypatch.setenv("HOOK_SECRET", SECRET.decode())
    args = ["sink", "webhook", receiver.url, "--segments", "vip,churn", "--channel", "email"]
    args += ["--secret-env", "HOOK_SECRET", "--backoff", "0.01", "--once"]

    code, out, error = cli(data_dir, *args)

    assert (code, error) == (0, "")
    assert "1 delivered, 1 suppressed, 1 filtered, 0 dead-lettered, 2 retries" in out
    assert "token" not in out
    assert receiver.delivered_ids() == ids([vip])
    assert all(verify(headers, raw) for headers, raw in receiver.requests)
    code, out, _ = cli(data_dir, *args)
    assert code == 0 and "0 delivered, 0 suppressed, 0 filtered" in out


def test_cli_refuses_bad_options_with_one_line(data_dir, receiver, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    code, _, error = cli(data_dir, "sink", "webhook", "ftp://example.com/x")
    assert code == EXIT_INVALID and "not an http(s) URL" in error
    code, _, error = cli(data_dir, "sink", "webhook", receiver.url, "--secret-env", "NOT_SET_ANYWHERE")
    assert code == EXIT_INVALID and "NOT_SET_ANYWHERE" in error


def test_cli_exits_unavailable_when_the_broker_does_not_answer(data_dir, receiver):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"kafka://127.0.0.1:{sock.getsockname()[1]}"
    code, _, error = cli(data_dir, "--broker", closed, "sink", "webhook", receiver.url, "--timeout", "1")
    assert code == EXIT_UNAVAILABLE and "Kafka broker" in error


# -- Kafka ----------------------------------------------------------------------------------------
def test_kafka_consumer_group_delivers_once_with_retries_and_resumes_after_restart(
    data_dir, codec, receiver, kafka_bootstrap, unique_topic
):
    topic = unique_topic("segment-changes")
    log = KafkaLog(kafka_bootstrap, default_partitions=4)
    first, later = mixed_changes(), mixed_changes()[:2]
    append(log, codec, first, topic)
    refused = first[3]["envelope"]["event_id"]
    receiver.fail_first, receiver.refuse = 2, lambda body: 422 if body["event_id"] == refused else None
    args = ["--broker", f"kafka://{kafka_bootstrap}", "sink", "webhook", receiver.url, "--topic", topic]
    args += ["--group", unique_topic("sink"), "--backoff", "0.01"]

    code, out, error = cli(data_dir, *args)

    assert (code, error) == (0, "")
    assert "5 delivered" in out and "1 dead-lettered" in out and "2 retries" in out
    assert sorted(receiver.delivered_ids()) == sorted(set(ids(first)) - {refused})
    (letter,) = [x for x in DeadLetterStore(log) if x.details.get("event_id") == refused]
    assert letter.raw == codec.encode(first[3]) and "HTTP 422" in letter.reason
    append(log, codec, later, topic)
    log.close()
    code, out, _ = cli(data_dir, *args)
    assert code == 0 and "2 delivered, 0 suppressed, 0 filtered, 0 dead-lettered" in out
    assert receiver.duplicates == 0 and len(receiver.accepted) == 7


@pytest.fixture
def registry_url(data_dir: Path) -> Iterator[str]:
    """The embedded registry of ``data_dir`` served over the Confluent REST API, as a Kafka tool sees it."""
    with serve_registry(data_dir / "registry.db") as url:
        yield url


def test_the_documented_consumer_example_reads_segment_changes_from_kafka(
    codec, kafka_bootstrap, unique_topic, registry_url
):
    topic = unique_topic("segment-changes")
    log = KafkaLog(kafka_bootstrap, default_partitions=4)
    events = mixed_changes()
    append(log, codec, events, topic)
    log.close()

    result = subprocess.run(
        [sys.executable, str(EXAMPLE), kafka_bootstrap, registry_url, "--topic", topic, "--stop-at-end"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    printed = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert sorted(p["event_id"] for p in printed) == sorted(ids(events))
    by_id = {e["envelope"]["event_id"]: e for e in events}
    for line in printed:
        sent = by_id[line["event_id"]]
        assert line["profile_id"] == sent["payload"]["profile_id"]
        assert line["event_type"] == sent["envelope"]["event_type"]
        assert line["segment"] == "at-risk-no-email" and line["channels"] == ["email"]


def test_retry_after_is_honoured_and_parsed_in_both_forms() -> None:
    """A 429 with ``Retry-After: 1`` delays the next attempt by that second, not by the tiny backoff."""
    attempts: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            attempts.append(time.monotonic())
            self.send_response(429 if len(attempts) == 1 else 200)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    client = WebhookClient(f"http://127.0.0.1:{server.server_address[1]}/", backoff=0.01, max_attempts=3)
    try:
        result = client.post(b"{}", "id-1", "segment_entered")
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert (result.count, result.status) == (2, 200)
    assert attempts[1] - attempts[0] >= 0.95  # the backoff alone would have waited about 0.01-0.02 s

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Wed, 31 Dec 2025 23:00:00 GMT", now) == 0.0  # in the past: at once
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
