"""Exactly once per transition, whatever kill -9 does: ``patron run`` killed at random moments, then
finished, appends the very segment changes and trigger firings a clean run appends.

The input (``transitions_input``): 50 customers over four months, about 700 events, making every
kind of transition happen many times: segment entries, exits when a 30-day window runs out,
entries into a dormancy segment, built-in triggers (abandoned cart, failed payment, dormant login)
and a capped trigger whose second firing within the cap is suppressed; consent granted to some
channels and withdrawn from some, so ``channels`` and ``suppressed`` differ between customers.

Two phases, each compared with a clean run of the same input:

1. ``patron run`` itself, SIGKILLed 10 times while it processes the events. Why the events are
   dated ten years ahead: ``patron run`` asks the profiles stage for due time windows with the *wall
   clock* (when it starts and once caught up), and a tick's moment is part of what it appends
   (``segment_timer_fired.due_at``, then the change's ``evaluated_at``). A run restarted after a kill
   ticks at other moments than a clean run, legitimately producing other (equally exactly-once)
   events, so the comparison would fail for the wrong reason. With every event after the wall clock,
   no window is due at any tick, and windows expire in *event time*: a customer's later event is
   evaluated at its own ``received_at`` (time-window definitions are re-evaluated on every record).
2. Ticks: the same runner (``default_processors`` with the data directory's definitions, what
   ``patron run`` builds) with its clock fixed at a moment after all the events, as the runner tests
   control it, started by this file as a script (``python test_segments_crash.py DATA_DIR EPOCH_S``)
   and SIGKILLed 5 times while it processes the timer records of the windows that ran out. Every
   restart ticks again at that moment: the timer records it appends again are recognised as
   duplicates (their ids come from profile and flip), so the end state equals one clean tick's.
"""

from __future__ import annotations

import random
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from patron.cli.main import app
from patron.config import Settings
from patron.events.codec import open_codec
from patron.events.models import validate_event
from patron.identity.resolver import micros
from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import LocalRunner
from patron.streams.log import EVENTS_TOPIC, scan
from patron.streams.state import read_store
from patron.streams.topology import PROFILE_EVENTS_TOPIC, default_processors
from patron.testing_kill import kill_repeatedly

CUSTOMERS = 50
START = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0) + timedelta(days=3650)
"""Ten years ahead of the wall clock (see the module docstring)."""
TICK = START + timedelta(days=200)
"""The fixed clock of phase 2: after every event, so every pending window flip is due."""
PATRON = Path(sys.executable).parent / "patron"

DEFINITIONS = """
segments:
  - name: big-spenders
    where: {revenue.last_30d: {gte: 100}}
    include: [identifiers.email, revenue.last_30d]
    channels: [email, sms]
  - name: lapsed
    where: {orders.total: {gt: 0}, orders.last_at: {not_within_last: 30d}}
    include: [orders.last_at]
    channels: [email]
  - name: engaged-not-buying
    where: {all: [{logins.last_14d: {gte: 2}}, {not: {orders.last_14d: {gt: 0}}}]}
    channels: [sms]
triggers:
  - name: ordered
    action: thank_you
    where: {orders.last_1d: {gt: 0}}
    channels: [email]
    cap: {max: 1, per: 7d}
"""


def _event(n: int, at: datetime, event_type: str, customer: int, **payload: Any) -> dict[str, Any]:
    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=(7 << 96) + n)),
                "event_type": event_type,
                "occurred_at": at,
                "received_at": at,
                "source": "shop",
                "identifiers": {"user_id": f"c{customer}", "email": f"c{customer}@example.com"},
                "context": {},
            },
            "payload": payload,
        }
    )


def transitions_input(seed: int = 11) -> list[dict[str, Any]]:
    """Each customer's four months (see the module docstring), all customers interleaved in time."""
    rng = random.Random(seed)
    timeline: list[tuple[datetime, str, int, dict[str, Any]]] = []
    for c in range(CUSTOMERS):
        day0 = START + timedelta(hours=c * 3)

        def at(days: float, day0: datetime = day0) -> datetime:
            return day0 + timedelta(days=days, minutes=rng.randint(0, 59))

        def add(when: datetime, event_type: str, c: int = c, **payload: Any) -> None:
            timeline.append((when, event_type, c, payload))

        for channel in ("email", "sms"):
            if rng.random() < 0.7:
                add(
                    at(0),
                    "consent_changed",
                    purpose="marketing",
                    channel=channel,
                    granted=True,
                    method="form",
                )
        if rng.random() < 0.3:
            add(at(3), "consent_changed", purpose="marketing", channel="email", granted=False, method="link")
        for day in (0.5, 2, 6, 22, 24):
            add(at(day), "logged_in", method="password")
        revenue = float(rng.choice((40, 80, 120, 250)))
        add(at(1), "order_completed", order_id=f"A-{c}", revenue=revenue, currency="EUR", items=[])
        cart = at(8)
        add(cart, "cart_updated", cart_id=f"K-{c}", items=[], value=80.0, currency="EUR")
        add(cart + timedelta(hours=rng.choice((2, 5, 30))), "page_viewed", url="https://shop.example.com/")
        if rng.random() < 0.5:
            add(
                at(12),
                "payment_failed",
                payment_id=f"P-{c}",
                amount=29.0,
                currency="EUR",
                failure_code="card_declined",
                attempt=1,
            )
        add(at(rng.choice((20, 45, 60))), "page_viewed", url="https://shop.example.com/sale")
        add(at(70), "order_completed", order_id=f"B-{c}", revenue=60.0, currency="EUR", items=[])
        again = at(70.2 + rng.choice((0, 3, 9)))
        add(again, "order_completed", order_id=f"C-{c}", revenue=70.0, currency="EUR", items=[])
        add(at(rng.choice((95, 120))), "logged_in", method="sso")
    timeline.sort(key=lambda item: item[0])
    return [_event(n, when, kind, c, **payload) for n, (when, kind, c, payload) in enumerate(timeline)]


def fill(data_dir: Path, events: list[dict[str, Any]]) -> None:
    """A data directory holding the definitions and the input, nothing processed yet."""
    (data_dir / "segments").mkdir(parents=True)
    (data_dir / "segments" / "defs.yaml").write_text(textwrap.dedent(DEFINITIONS))
    codec = open_codec(Settings.load(data_dir=data_dir))
    log = LocalLog(data_dir)
    try:
        log.append(EVENTS_TOPIC, [codec.message(event) for event in events])
    finally:
        log.close()


def patron_run(data_dir: Path, *options: str) -> None:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "run", *options])
    assert result.exit_code == 0, result.output


def run_at(data_dir: Path, clock_s: float, batch_size: int) -> None:
    """``patron run``'s runner and processors until caught up, its clock fixed at ``clock_s``."""
    settings = Settings.load(data_dir=data_dir)
    log = LocalLog(settings.broker.location, default_partitions=settings.partitions)
    try:
        runner = LocalRunner(log, open_codec(settings), default_processors(settings))
        runner.run(batch_size=batch_size, clock=lambda: clock_s)
    finally:
        log.close()


def emitted(data_dir: Path) -> dict[str, Any]:
    """Per topic: every record's event id -> (key, decoded event), the ids in each key's order, and the
    count of records (an id the log holds twice, or a transition under two ids, shows there). Decoded,
    not bytes: each data directory encrypts personal fields under its own keys."""
    log = LocalLog(data_dir)
    codec = open_codec(Settings.load(data_dir=data_dir))
    try:
        found: dict[str, Any] = {}
        for topic in (SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC):
            records = list(scan(log, topic))
            by_key: dict[bytes, list[str]] = {}
            for record in sorted(records, key=lambda r: (r.partition, r.offset)):
                by_key.setdefault(record.key, []).append(record.event_id)
            found[topic] = {
                "records": len(records),
                "events": {r.event_id: (r.key, codec.decode(r.value)) for r in records},
                "order": by_key,
            }
        return found
    finally:
        log.close()


def assert_same_transitions(found: dict[str, Any], expected: dict[str, Any], seed: int) -> None:
    for topic in (SEGMENT_CHANGES_TOPIC, TRIGGERS_TOPIC):
        assert found[topic]["records"] == len(found[topic]["events"]), f"{topic}: an id twice (seed {seed})"
        assert found[topic]["events"] == expected[topic]["events"], f"{topic} differs (seed {seed})"
        assert found[topic]["order"] == expected[topic]["order"], f"{topic}: order differs (seed {seed})"


def census(found: dict[str, Any]) -> tuple[dict[tuple[str, str], int], int, int]:
    """(event type, segment or trigger) -> count; how many suppressed a channel; how many a tick caused."""
    kinds: dict[tuple[str, str], int] = {}
    suppressed = ticked = 0
    for topic, name in ((SEGMENT_CHANGES_TOPIC, "segment"), (TRIGGERS_TOPIC, "trigger")):
        for _, event in found[topic]["events"].values():
            kind = (event["envelope"]["event_type"], event["payload"][name])
            kinds[kind] = kinds.get(kind, 0) + 1
            suppressed += bool(event["payload"]["suppressed"])
            ticked += event["payload"]["evaluated_at"] == TICK
    return kinds, suppressed, ticked


def test_kill_9_during_patron_run_and_ticks_changes_no_transition(tmp_path: Path) -> None:
    events = transitions_input()
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    fill(crashed, events)
    fill(clean, events)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    log = LocalLog(crashed)
    try:
        # phase 1: `patron run` over the events
        patron_run(clean, "--batch-size", "500")
        interrupted = kill_repeatedly(
            [str(PATRON), "--data-dir", str(crashed), "run", "--batch-size", "3"],
            lambda: sum(log.committed("identity", EVENTS_TOPIC).values()),
            len(events),
            10,
            rng,
            tmp_path,
        )
        patron_run(crashed, "--batch-size", "7")
        assert interrupted >= 8, f"only {interrupted} of 10 kills hit a runner with work left (seed {seed})"
        after_events = emitted(clean)
        assert_same_transitions(emitted(crashed), after_events, seed)

        # phase 2: a tick at TICK, and the timer records it appends
        due = sum(1 for wake in read_store(log, "profiles", "wakes").values() if wake <= micros(TICK))
        assert due >= 30
        done_before = sum(log.committed("profiles", PROFILE_EVENTS_TOPIC).values())
        run_at(clean, TICK.timestamp(), 500)
        interrupted = kill_repeatedly(
            [sys.executable, __file__, str(crashed), str(TICK.timestamp())],
            lambda: sum(log.committed("profiles", PROFILE_EVENTS_TOPIC).values()) - done_before,
            due,
            5,
            rng,
            tmp_path,
        )
        run_at(crashed, TICK.timestamp(), 7)
        assert interrupted >= 4, f"only {interrupted} of 5 kills hit a runner with work left (seed {seed})"
    finally:
        log.close()
    expected = emitted(clean)
    assert_same_transitions(emitted(crashed), expected, seed)

    # what the comparison covered: every kind of transition, many times, a tick's among them
    kinds, suppressed, ticked = census(expected)
    for kind in [
        ("segment_entered", "big-spenders"),
        ("segment_exited", "big-spenders"),
        ("segment_entered", "lapsed"),
        ("segment_exited", "lapsed"),
        ("segment_entered", "engaged-not-buying"),
        ("segment_exited", "engaged-not-buying"),
        ("trigger_fired", "ordered"),
        ("trigger_fired", "abandoned_cart"),
        ("trigger_fired", "failed_payment"),
        ("trigger_fired", "dormant_no_login"),
    ]:
        assert kinds.get(kind, 0) >= 5, f"only {kinds.get(kind, 0)} {kind}: {kinds}"
    assert suppressed >= 20
    assert ticked >= 30
    assert sum(len(found["events"]) for found in expected.values()) > sum(
        len(found["events"]) for found in after_events.values()
    )


if __name__ == "__main__":  # the victim of phase 2: the runner ticking at a fixed moment, batches of 1
    run_at(Path(sys.argv[1]), float(sys.argv[2]), 1)
