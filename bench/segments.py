"""Segments benchmark: event -> segment-change latency, and evaluation throughput (issue 5, part 8).

Usage: ``.venv/bin/python bench/segments.py [--rate 200] [--seconds 30] [--idle-sleep 0.5]
[--profiles 1000000] [--changed 0.01] [--markdown]``

*Latency* (embedded mode, once per ``--idle-sleep``): a child process runs ``LocalRunner(follow=True)``
with ``default_processors(settings)`` (what ``patron run --follow`` runs: identity + profiles with the
data directory's segment definitions and the built-in triggers), ``idle_sleep`` being the longest it waits
when nothing is new (``IDLE_SLEEP_S`` in ``patron run``; it wakes within 2 ms of another process's commit,
see ``LocalLog.wait_for_writes``). This process appends ``--rate``
``order_completed`` events a second for ``--seconds``, one append each, every one the first order of a
new customer worth 150, so each causes exactly one ``segment_entered`` (``big-spenders``: revenue in the
last 30 days >= 100). A thread polls ``patron.segment-changes`` every millisecond. Latency = when the
change was first read minus when its cause's append *started* (``cause_event_id`` is the source event's
id: the identity stage passes source events on unchanged). It includes the append's own commit (fsync).

*Evaluation* (one child process): ``SegmentEngine.evaluate`` with 50 definitions (42 segments of
``SEGMENTS`` below: windows, scores, traits, consent, all/any/not; and the 8 built-in triggers) over
``--profiles`` synthetic profiles in the shape of ``projections/profiles.py`` (one part with facts: a few
orders, activity days, emails, a subscription for some, scores for most). (a) every profile, as after a
definitions change; (b) ``--changed`` of them after one new order each, evaluated as the profiles stage
does (dependency tracking: only definitions the record can change). Profiles are built in chunks of
10,000 and only the evaluation is timed; the states of (a) are kept for the profiles (b) changes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from patron.cli.output import transient_progress
from patron.streams.local_runner import IDLE_SLEEP_S, TIMER_INTERVAL_S

console = Console(stderr=True)
MICROS_PER_DAY = 86_400_000_000
CHUNK = 10_000
AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
DRAIN_TIMEOUT_S = 30.0
POLL_S = 0.001

LATENCY_SEGMENT = """
segments:
  - name: big-spenders
    where: {revenue.last_30d: {gte: 100}}
    include: [identifiers.email, revenue.last_30d]
    channels: [email]
"""


def _segments_yaml() -> str:
    """42 segments over every kind of field and operator (with the 8 built-in triggers: 50)."""
    items: list[str] = []

    def add(name: str, where: str, include: str = "[identifiers.email]", extra: str = "") -> None:
        items.append(
            f"  - name: {name}\n    where: {where}\n    include: {include}\n    channels: [email, sms]{extra}"
        )

    for days in (7, 30, 90):
        add(f"buyers-{days}d", f"{{orders.last_{days}d: {{gte: 1}}}}")
        add(
            f"spend-{days}d",
            f"{{revenue.last_{days}d: {{gte: {days * 5}}}}}",
            "[revenue.last_30d, clv.value]",
        )
        add(f"active-{days}d", f"{{activity.last_{days}d: {{gte: 3}}}}")
        add(f"openers-{days}d", f"{{emails_opened.last_{days}d: {{gt: 0}}}}")
    add("usage-fell-40", "{feature_uses.change_30d: {lte: -0.4}}", "[feature_uses.last_30d]")
    for segment in ("Champions", "Loyal", "At Risk", "Hibernating", "New"):
        add(
            f"rfm-{segment.lower().replace(' ', '-')}", f"{{rfm.segment: {segment}}}", "[rfm.r, rfm.f, rfm.m]"
        )
    add("health-red", "{health.status: red}")
    add("health-low", "{health.score: {lt: 40}}")
    add("clv-high", "{clv.value: {gte: 1000}}", "[clv.value, clv.p_alive]")
    add("likely-churn", "{clv.p_alive: {lt: 0.3}, orders.total: {gt: 0}}")
    add("lifecycle-loyal", "{lifecycle.stage: {in: [loyal, champion]}}")
    add("plan-pro", "{traits.plan: {in: [pro, enterprise]}}", "[traits.plan]")
    add("emea", "{traits.region: EMEA}")
    add("email-consented", "{consent.marketing.email: true}", extra="\n    consent: marketing")
    add("sms-opted-out", "{consent.marketing.sms: false}", extra="\n    consent: none")
    add("subscribers", "{subscription.active: true}", "[subscription.plan]")
    add("renewal-60d", "{subscription.renews_at: {within_next: 60d}}", "[subscription.renews_at]")
    add(
        "annual-renewal-soon",
        "{all: [{subscription.interval: year}, {subscription.renews_at: {within_next: 60d}}]}",
    )
    add(
        "high-value-annual-usage-fell",
        "{all: [{clv.value: {gte: 500}}, {subscription.interval: year}, "
        "{subscription.renews_at: {within_next: 60d}}, {feature_uses.change_30d: {lte: -0.4}}]}",
    )
    add("at-risk-no-email", "{all: [{rfm.segment: At Risk}, {emails_opened.last_30d: 0}]}")
    add("lapsed", "{orders.total: {gt: 0}, orders.last_at: {not_within_last: 60d}}")
    add("dormant-login", "{logins.total: {gt: 0}, logins.last_at: {not_within_last: 30d}}")
    add("new-this-week", "{profile.first_seen: {within_last: 7d}}")
    add("cart-open", "{cart.abandoned_at: {exists: true}}", "[cart.value]")
    add("promoters", "{nps.score: {gte: 9}}")
    add("refunders", "{refunds.last_90d: {gte: 1}}")
    add("payment-trouble", "{payments_failed.last_30d: {gt: 0}}")
    add(
        "vip-any",
        "{any: [{clv.value: {gte: 2000}}, {traits.plan: enterprise}, {revenue.last_90d: {gte: 500}}]}",
    )
    add("not-emailable", "{not: {consent.marketing.email: true}}")
    add("engaged-not-buying", "{all: [{activity.last_30d: {gte: 5}}, {not: {orders.last_30d: {gt: 0}}}]}")
    return "segments:\n" + "\n".join(items) + "\n"


SEGMENTS = _segments_yaml()


# -- synthetic profiles ---------------------------------------------------------------------------
def _day(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).date().isoformat()


def _entry(value: Any, at: int, event: str) -> dict[str, Any]:
    return {"value": value, "source": "crm", "at": at, "event": event}


def synthetic_profile(i: int, rng: random.Random, now: int) -> tuple[str, dict[str, Any]]:
    """Profile ``i``: one part whose facts hold what a year of a customer's events would have folded."""
    pid = str(uuid.UUID(int=i + 1))
    ev = f"e-{i}"
    first = now - rng.randint(1, 400) * MICROS_PER_DAY
    facts: dict[str, Any] = {"activity": {}, "orders": {}, "emails": {}}
    days = sorted({rng.randint(0, (now - first) // MICROS_PER_DAY) for _ in range(rng.randint(1, 12))})
    last = first
    for back in days:
        at = now - back * MICROS_PER_DAY
        last = max(last, at)
        facts["activity"][_day(at)] = [
            rng.randint(1, 9),
            rng.randint(0, 2),
            rng.randint(0, 5),
            rng.randint(0, 3),
        ]
    for _ in range(rng.choice((0, 1, 1, 2, 3, 5))):
        at = now - rng.randint(0, 300) * MICROS_PER_DAY
        day = facts["orders"].setdefault(_day(at), [0, 0])
        day[0] += 1
        day[1] += rng.randint(5, 400) * 1_000_000
        if facts.get("last_order") is None or facts["last_order"][0] < at:
            facts["last_order"] = [at, ev]
    for _ in range(rng.randint(0, 6)):
        at = now - rng.randint(0, 90) * MICROS_PER_DAY
        facts["emails"][_day(at)] = [1, rng.randint(0, 1), rng.randint(0, 1), 0]
    if rng.random() < 0.3:
        start = now - rng.randint(0, 360) * MICROS_PER_DAY
        interval = rng.choice(("month", "year"))
        end = start + (365 if interval == "year" else 30) * MICROS_PER_DAY
        cancelled = None if rng.random() < 0.8 else start + MICROS_PER_DAY
        facts["subscriptions"] = {
            f"sub-{i}": {
                "started": start,
                "period_end": end,
                "cancelled": cancelled,
                "renewals": 0,
                "latest": [start, ev, rng.choice(("basic", "pro")), 49.0, interval],
            }
        }
    if rng.random() < 0.1:
        facts["cart"] = [now - rng.randint(1, 200) * 3_600_000_000, ev, 80.0, f"cart-{i}"]
    if rng.random() < 0.2:
        facts["nps"] = [now - rng.randint(1, 60) * MICROS_PER_DAY, ev, rng.randint(0, 10)]
    if rng.random() < 0.05:
        facts["refunds"] = {_day(now - 10 * MICROS_PER_DAY): [1, 20_000_000]}
    if rng.random() < 0.05:
        facts["payments"] = {_day(now - 3 * MICROS_PER_DAY): [1, 49_000_000]}
    consent = {}
    for channel in ("email", "sms"):
        if rng.random() < 0.6:
            granted = rng.random() < 0.8
            consent[f"marketing:{channel}"] = {
                "granted": granted, "basis": "consent", "method": "form", "source": "web", "at": first, "event": ev,
            }  # fmt: skip
    traits = {
        "email": _entry(f"p{i}@example.com", first, ev),
        "plan": _entry(rng.choice(("free", "basic", "pro", "enterprise")), first, ev),
        "region": _entry(rng.choice(("EMEA", "AMER", "APAC")), first, ev),
    }
    part = {
        "first_seen": first,
        "last_seen": last,
        "types": {"page_viewed": rng.randint(1, 40), "order_completed": len(facts["orders"])},
        "sources": {"web": 10},
        "traits": traits,
        "consent": consent,
        "facts": facts,
    }
    ids = {"email": [f"p{i}@example.com"], "user_id": [f"u-{i}"]}
    if rng.random() < 0.4:
        ids["phone"] = [f"+4930{i:08d}"]
    profile = {"ids": ids, "parts": {f"user_id:u-{i}": part}, "keys": [pid], "moved": {}, "recent": [ev]}
    if rng.random() < 0.85:
        profile["scores"] = {
            "rfm_segment": rng.choice(("Champions", "Loyal", "At Risk", "Hibernating", "New", "Promising")),
            "rfm_r": rng.randint(1, 5),
            "rfm_f": rng.randint(1, 5),
            "rfm_m": rng.randint(1, 5),
            "health_score": round(rng.uniform(0, 100), 1),
            "health_status": rng.choice(("green", "yellow", "red")),
            "clv": float(rng.randint(0, 3000)),
            "p_alive": round(rng.random(), 2),
            "lifecycle_stage": rng.choice(("new", "active", "loyal", "champion", "at_risk", "churned")),
            "as_of": now - MICROS_PER_DAY,
        }
    return pid, profile


def add_order(profile: dict[str, Any], at: int, event_id: str) -> None:
    """Fold one new order of 60 into the profile, as ``fold_event`` does for ``order_completed``."""
    from patron.projections.facts import day_of

    part = next(iter(profile["parts"].values()))
    facts, day = part["facts"], day_of(at)
    orders = facts["orders"].setdefault(day, [0, 0])
    orders[0] += 1
    orders[1] += 60_000_000
    activity = facts["activity"].setdefault(day, [0, 0, 0, 0])
    activity[0] += 1
    facts["last_order"] = [at, event_id]
    part["types"]["order_completed"] = part["types"].get("order_completed", 0) + 1
    part["last_seen"] = max(part["last_seen"], at)


# -- measurements --------------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_evaluation(profiles: int, changed: float, seed: int = 5) -> dict[str, Any]:
    """(a) every profile evaluated from no state, (b) the ``changed`` share after one new order each."""
    from patron.identity.resolver import micros
    from patron.projections.segments.definitions import load_definitions
    from patron.projections.segments.engine import PROFILE_INPUT, SegmentEngine

    with tempfile.TemporaryDirectory(prefix="patron-bench-segments-") as tmp:
        (Path(tmp) / "bench.yaml").write_text(SEGMENTS)
        definitions = load_definitions(Path(tmp))
    engine = SegmentEngine(definitions)
    count = len(definitions.segments) + len(definitions.triggers)
    now = micros(AS_OF)
    every = max(1, round(1 / changed)) if changed > 0 else 0
    rng = random.Random(seed)
    kept: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    full_s = 0.0
    members = emitted = 0
    with transient_progress() as progress:
        task = progress.add_task(f"(a) evaluating {profiles:,} profiles", total=profiles)
        for start in range(0, profiles, CHUNK):
            chunk = [synthetic_profile(i, rng, now) for i in range(start, min(start + CHUNK, profiles))]
            started = time.perf_counter()
            states = [engine.evaluate(None, pid, profile, now, "cause")[0::2] for pid, profile in chunk]
            full_s += time.perf_counter() - started
            for n, ((pid, profile), (state, emits)) in enumerate(zip(chunk, states, strict=True)):
                members += len(state["in"])
                emitted += len(emits)
                if every and (start + n) % every == 0:
                    kept.append((pid, profile, state))
            progress.advance(task, len(chunk))
    later = now + 60_000_000
    for n, (_, profile, _) in enumerate(kept):
        add_order(profile, later, f"new-order-{n}")
    affected = sum(
        1 for d in (*definitions.segments, *definitions.triggers) if engine._affected(d, PROFILE_INPUT)
    )
    started = time.perf_counter()
    changes = 0
    for pid, profile, state in kept:
        changes += len(engine.evaluate(state, pid, profile, later, "new-order", PROFILE_INPUT)[2])
    changed_s = time.perf_counter() - started
    return {
        "definitions": count,
        "profiles": profiles,
        "full_s": full_s,
        "full_evaluations": profiles * count,
        "members": members,
        "emitted": emitted,
        "changed_profiles": len(kept),
        "changed_s": changed_s,
        "changed_evaluations": len(kept) * affected,
        "affected": affected,
        "changes": changes,
        "peak_rss_mb": _peak_rss_mb(),
    }


def serve_runner(data_dir: Path, idle_sleep: float, timer_interval: float) -> None:
    """The child of the latency measurement: ``patron run --follow``'s runner until SIGTERM."""
    from patron.config import Settings
    from patron.events.codec import open_codec
    from patron.streams.local_log import LocalLog
    from patron.streams.local_runner import LocalRunner
    from patron.streams.topology import default_processors

    settings = Settings.load(data_dir=data_dir)
    log = LocalLog(settings.broker.location, default_partitions=settings.partitions)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner = LocalRunner(log, open_codec(settings), default_processors(settings))
    print("started", flush=True)
    runner.run(follow=True, stop=stop, idle_sleep=idle_sleep, timer_interval=timer_interval)
    log.close()


def _order(i: int, at: datetime) -> dict[str, Any]:
    from patron.events.models import validate_event

    return validate_event(
        {
            "envelope": {
                "event_id": str(uuid.UUID(int=(1 << 64) + i)),
                "event_type": "order_completed",
                "occurred_at": at,
                "received_at": at,
                "source": "shop",
                "identifiers": {"user_id": f"lat-{i}", "email": f"lat-{i}@example.com"},
                "context": {},
            },
            "payload": {"order_id": f"L-{i}", "revenue": 150.0, "currency": "EUR", "items": []},
        }
    )


class _Watcher(threading.Thread):
    """Polls the segment-change topic; notes when each cause's change was first read (wall clock)."""

    def __init__(self, data_dir: Path):
        super().__init__(daemon=True)
        self.data_dir = data_dir
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from patron.events.codec import EventCodec
        from patron.projections.segments.topics import SEGMENT_CHANGES_TOPIC
        from patron.schemas.registry import FileRegistry
        from patron.streams.local_log import LocalLog

        log = LocalLog(self.data_dir)
        codec = EventCodec(FileRegistry(self.data_dir / "registry.db"))
        offsets: dict[int, int] = {}
        try:
            while not self.stop.is_set():
                for partition, end in log.end_offsets(SEGMENT_CHANGES_TOPIC).items():
                    start = offsets.get(partition, 0)
                    if end <= start:
                        continue
                    records = log.read(SEGMENT_CHANGES_TOPIC, partition, start, end - start)
                    now = time.time()
                    for record in records:
                        self.seen.setdefault(codec.decode(record.value)["payload"]["cause_event_id"], now)
                    offsets[partition] = records[-1].offset + 1
                self.stop.wait(POLL_S)
        finally:
            log.close()


def measure_latency(
    rate: float, seconds: float, idle_sleep: float, timer_interval: float = TIMER_INTERVAL_S
) -> dict[str, Any]:
    from patron.events.codec import EventCodec
    from patron.schemas.registry import FileRegistry
    from patron.streams.local_log import LocalLog
    from patron.streams.log import EVENTS_TOPIC

    with tempfile.TemporaryDirectory(prefix="patron-bench-latency-") as tmp:
        data_dir = Path(tmp)
        (data_dir / "segments").mkdir()
        (data_dir / "segments" / "bench.yaml").write_text(textwrap.dedent(LATENCY_SEGMENT))
        log = LocalLog(data_dir)
        codec = EventCodec(FileRegistry(data_dir / "registry.db"))
        log.append(EVENTS_TOPIC, [codec.message(_order(-1, datetime.now(UTC)))])  # warm-up
        runner = subprocess.Popen(
            [
                *(sys.executable, __file__, "--serve-runner", str(data_dir)),
                *("--idle-sleep", str(idle_sleep), "--timer-interval", str(timer_interval)),
            ],
            stdout=subprocess.PIPE,
        )
        assert runner.stdout is not None
        runner.stdout.readline()
        watcher = _Watcher(data_dir)
        watcher.start()
        while len(watcher.seen) < 1 and runner.poll() is None:
            time.sleep(0.01)  # the warm-up change: the runner is processing
        total = int(rate * seconds)
        appended: dict[str, float] = {}
        started = time.time()
        try:
            for i in range(total):
                due = started + i / rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                at = datetime.now(UTC)
                message = codec.message(_order(i, at))
                appended[str(uuid.UUID(int=(1 << 64) + i))] = at.timestamp()
                log.append(EVENTS_TOPIC, [message])
            produced_s = time.time() - started
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and not all(e in watcher.seen for e in appended):
                time.sleep(0.05)
            drained_s = time.time() - started
        finally:
            watcher.stop.set()
            watcher.join()
            runner.send_signal(signal.SIGTERM)
            runner.wait(timeout=60)
            log.close()
    latencies = sorted((watcher.seen[e] - at) * 1000 for e, at in appended.items() if e in watcher.seen)
    quantiles = (
        statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    )
    return {
        "idle_sleep": idle_sleep,
        "timer_interval": timer_interval,
        "events": total,
        "seen": len(latencies),
        "produced_s": produced_s,
        "drained_s": drained_s,
        "p50": quantiles[49],
        "p90": quantiles[89],
        "p99": quantiles[98],
        "max": latencies[-1] if latencies else 0.0,
    }


# -- orchestration -------------------------------------------------------------------------------
def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, check=True)
    return json.loads(done.stdout)


LATENCY_HEADERS = (
    "idle_sleep s",
    "timer interval s",
    "events",
    "changes seen",
    "rate achieved /s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "p99 < 200 ms",
)
EVAL_HEADERS = (
    "run",
    "profiles",
    "definitions each",
    "evaluations",
    "seconds",
    "profiles/s",
    "evaluations/s",
    "transitions",
    "peak RSS MB",
)


def latency_lines(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            f"{r['idle_sleep']:g}",
            f"{r['timer_interval']:g}",
            f"{r['events']:,}",
            f"{r['seen']:,}",
            f"{r['seen'] / r['drained_s']:,.0f} (offered {r['events'] / r['produced_s']:,.0f})",
            f"{r['p50']:.1f}",
            f"{r['p90']:.1f}",
            f"{r['p99']:.1f}",
            f"{r['max']:.1f}",
            "met" if r["p99"] < 200 and r["seen"] == r["events"] else "NOT met",
        )
        for r in rows
    ]


def evaluation_lines(r: dict[str, Any]) -> list[tuple[str, ...]]:
    rss = f"{r['peak_rss_mb']:.0f}"
    return [
        (
            "(a) all profiles",
            f"{r['profiles']:,}",
            f"{r['definitions']}",
            f"{r['full_evaluations']:,}",
            f"{r['full_s']:.1f}",
            f"{r['profiles'] / r['full_s']:,.0f}",
            f"{r['full_evaluations'] / r['full_s']:,.0f}",
            f"{r['emitted']:,}",
            rss,
        ),
        (
            "(b) changed profiles only",
            f"{r['changed_profiles']:,}",
            f"{r['affected']}",
            f"{r['changed_evaluations']:,}",
            f"{r['changed_s']:.2f}",
            f"{r['changed_profiles'] / r['changed_s']:,.0f}",
            f"{r['changed_evaluations'] / r['changed_s']:,.0f}",
            f"{r['changes']:,}",
            rss,
        ),
    ]


def _print(title: str, headers: tuple[str, ...], lines: list[tuple[str, ...]], markdown: bool) -> None:
    if markdown:
        print(f"\n{title}\n")
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for line in lines:
            print("| " + " | ".join(line) + " |")
        return
    table = Table(*headers, title=title)
    for line in lines:
        table.add_row(*line)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="source events a second (latency)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts (latency)")
    parser.add_argument(
        "--idle-sleep",
        default=f"{IDLE_SLEEP_S:g}",
        help="comma-separated runner idle waits (the longest), seconds",
    )
    parser.add_argument(
        "--profiles", type=int, default=1_000_000, help="synthetic profiles (evaluation); 0: skip"
    )
    parser.add_argument("--changed", type=float, default=0.01, help="share of profiles changed in (b)")
    parser.add_argument(
        "--timer-interval",
        type=float,
        default=TIMER_INTERVAL_S,
        help="seconds between the runner's time-window ticks (patron run: 10)",
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--serve-runner", help=argparse.SUPPRESS)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_runner:
        serve_runner(Path(args.serve_runner), float(args.idle_sleep), args.timer_interval)
        return
    if args.measure == "evaluation":
        print(json.dumps(measure_evaluation(args.profiles, args.changed)))
        return
    if args.measure == "latency":
        print(
            json.dumps(measure_latency(args.rate, args.seconds, float(args.idle_sleep), args.timer_interval))
        )
        return
    started = time.perf_counter()
    latency = []
    for idle in (float(s) for s in args.idle_sleep.split(",") if s):
        console.print(f"latency: {args.rate:g} events/s for {args.seconds:g} s, idle_sleep {idle:g} s")
        latency.append(
            _child(
                "--measure",
                "latency",
                "--rate",
                str(args.rate),
                "--seconds",
                str(args.seconds),
                "--idle-sleep",
                str(idle),
                "--timer-interval",
                str(args.timer_interval),
            )
        )
    evaluation = None
    if args.profiles:
        evaluation = _child(
            "--measure", "evaluation", "--profiles", str(args.profiles), "--changed", str(args.changed)
        )
    console.print(
        f"Python {platform.python_version()} on {os.cpu_count()} CPUs; whole run {time.perf_counter() - started:.0f} s"
    )
    if latency:
        _print(
            "event -> segment change latency (embedded)",
            LATENCY_HEADERS,
            latency_lines(latency),
            args.markdown,
        )
    if evaluation:
        _print("evaluation throughput", EVAL_HEADERS, evaluation_lines(evaluation), args.markdown)


if __name__ == "__main__":
    main()
