"""Segments on Kafka: ``patron worker`` emits the segment changes and triggers ``patron run`` emits.

The same source events (orders, consents; some 40 days old, so a 30-day window has expired by now)
and the same definitions go to an embedded data directory processed by ``patron run`` and to a
fresh tansu broker processed by a ``patron worker`` subprocess (faust, tables on changelogs).
The worker must emit the same transitions: same event ids (one per transition), types, profiles,
segments, reasons, channels and suppressed channels. Those caused by time alone come from each
runtime's timer (the runner's tick, the worker's faust timer) at wall-clock moments, so only their
``evaluated_at`` and ``cause_event_id`` may differ.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from test_identity_kafka import fresh_broker  # noqa: F401  (fixture)
from test_ingest import PATRON, patron
from test_profile_cli import ok
from test_segments import ANA, BEN, SEGMENTS, consent, order

from patron.config import Settings
from patron.events.codec import EventCodec, open_codec
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC
from patron.streams.kafka_log import KafkaLog
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, EventLog, scan

TRIGGER = """
triggers:
  - name: first_order
    action: welcome
    where: {orders.total: {gte: 1}}
    channels: [email]
"""
WAIT_S = 90.0


def scenario() -> list[dict[str, Any]]:
    now = datetime.now(UTC).replace(microsecond=0)
    old = now - timedelta(days=40)
    return [
        consent(old, ANA, "email", True),
        order(old + timedelta(minutes=1), ANA, 150.0),  # big-spender 40 days ago; lapsed by now
        consent(now - timedelta(hours=2), BEN, "sms", True),
        order(now - timedelta(hours=1), BEN, 120.0),  # big-spender now; email suppressed (no consent)
    ]


def setup(data_dir: Path, events: list[dict[str, Any]], broker: str | None = None) -> None:
    (data_dir / "segments").mkdir(parents=True)
    (data_dir / "segments" / "defs.yaml").write_text(SEGMENTS + TRIGGER.replace("triggers:", "triggers:", 1))
    settings = Settings.load(data_dir=data_dir, broker=broker)
    log: EventLog = KafkaLog(broker.removeprefix("kafka://")) if broker else LocalLog(data_dir)
    codec = open_codec(settings)
    try:
        log.ensure_topic(EVENTS_TOPIC)
        log.append(EVENTS_TOPIC, [codec.message(e) for e in events])
    finally:
        log.close()


def changes(log: EventLog, codec: EventCodec) -> list[dict[str, Any]]:
    found = []
    for topic in (SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC):
        if topic in log.topics():
            found += [codec.decode(record.value) for record in scan(log, topic)]
    return sorted(found, key=lambda e: e["envelope"]["event_id"])


def comparable(event: dict[str, Any]) -> dict[str, Any]:
    payload = {k: v for k, v in event["payload"].items() if k not in ("evaluated_at", "cause_event_id")}
    return {"id": event["envelope"]["event_id"], "type": event["envelope"]["event_type"], **payload}


def test_the_worker_emits_the_transitions_patron_run_emits(tmp_path: Path, fresh_broker: str) -> None:  # noqa: F811
    events = scenario()
    embedded_dir, kafka_dir = tmp_path / "embedded", tmp_path / "kafka"
    setup(embedded_dir, events)
    ok(patron(embedded_dir, "run", "--until-caught-up"))
    log = LocalLog(embedded_dir)
    try:
        want = [comparable(e) for e in changes(log, open_codec(Settings.load(data_dir=embedded_dir)))]
    finally:
        log.close()
    kinds = sorted((w["type"], w.get("segment") or w.get("trigger")) for w in want)
    assert kinds == [
        ("segment_entered", "big-spenders"),
        ("segment_entered", "big-spenders"),
        ("segment_entered", "lapsed"),
        ("segment_exited", "big-spenders"),
        ("trigger_fired", "first_order"),
        ("trigger_fired", "first_order"),
    ]
    ben_entry = next(w for w in want if w["type"] == "segment_entered" and w["channels"] == ["sms"])
    assert [s["channel"] for s in ben_entry["suppressed"]] == ["email"]

    broker = f"kafka://{fresh_broker}"
    setup(kafka_dir, events, broker)
    app_id = f"patron-seg-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [str(PATRON), "--data-dir", str(kafka_dir), "--broker", broker, "worker", "--app-id", app_id,
         "--session-timeout", "6", "--timer-interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )  # fmt: skip
    kafka = KafkaLog(fresh_broker)
    codec = open_codec(Settings.load(data_dir=kafka_dir, broker=broker))
    try:
        deadline = time.monotonic() + WAIT_S
        got: list[dict[str, Any]] = []
        while len(got) < len(want) and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stderr.read().decode(errors="replace")[-3000:]  # type: ignore[union-attr]
            time.sleep(1.0)
            got = [comparable(e) for e in changes(kafka, codec)]
        time.sleep(3.0)  # anything beyond the expected transitions would be a duplicate: give it time to show
        got = [comparable(e) for e in changes(kafka, codec)]
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0, stderr.decode(errors="replace")[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        kafka.close()
    assert got == want
