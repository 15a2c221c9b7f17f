"""Collector load benchmark: locust posting Segment batches to ``patron serve`` over loopback.

Usage: ``.venv/bin/python bench/load.py [--seconds 60] [--users 5] [--spawn-rate R] [--batch 50]
[--workers 1] [--server-cpus 0] [--client-cpus 1] [--markdown]``

For each ``--users`` value (comma-separated: one run each, in a fresh data directory):

1. ``patron keys create load`` makes a write key, and ``patron serve`` starts the real collector
   (embedded log, ``--workers`` processes) in its own process, pinned to ``--server-cpus``;
2. locust, headless in a second process pinned to ``--client-cpus``, runs ``bench/locustfile.py``:
   ``--users`` SDKs each posting ``/v1/batch`` requests of ``--batch`` messages back to back, for
   ``--seconds``; in-flight requests are allowed to finish when the time is up;
3. the collector stops, and the script counts ``patron.events`` in the log (``LocalLog`` end offsets)
   and the dead letters, and checks them against the events the collector accepted (200s, plus the
   unlisted messages of 400s): every message maps to one event and has its own ``messageId``, so
   the two must be equal. A request locust saw fail without an answer may or may not be stored;
   with such failures the log must hold between the accepted count and that count plus their events.

While locust runs, the CPU time of every thread of the collector is sampled from ``/proc``, so the
table shows where the collector's time goes (its event loop, its writer thread, the rest) without
touching its code. Python does not name its threads for the OS: the writer is reported as the busiest
thread other than the main one (the main thread runs the event loop; key lookups run on a small
thread pool).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patron.machine import describe

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
SOURCE = "load"
TARGET_EVENTS_S = 5000
TARGET_P99_MS = 100
STOP_TIMEOUT_S = 10  # locust lets in-flight requests finish for at most this long
PACKAGES = ("locust", "uvicorn", "starlette", "orjson", "fastavro", "pydantic")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

console = Console(width=None if Console().is_terminal else 150)


@dataclass
class Run:
    """One load run: what locust measured, what the log holds, where the collector's CPU went."""

    users: int
    batch: int
    workers: int
    seconds: float
    requests: int
    failed_requests: int
    accepted: int
    rejected: int
    logged: int
    dead_letters: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float = 0.0
    steal_pct: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def requests_s(self) -> float:
        return self.requests / self.seconds

    @property
    def events_s(self) -> float:
        return self.accepted / self.seconds

    @property
    def count_proof(self) -> str:
        """Whether the log holds exactly the accepted events (or, with unanswered requests, a bound)."""
        if self.failed_requests == 0:
            return (
                "equal" if self.logged == self.accepted else f"DIFFERENT ({self.logged - self.accepted:+,})"
            )
        upper = self.accepted + self.failed_requests * self.batch
        within = self.accepted <= self.logged <= upper
        return f"{'within' if within else 'OUTSIDE'} [{self.accepted:,}, {upper:,}]"


# -- the load (bench/locustfile.py sends these; kept here so that they can be checked without locust,
# whose import monkey-patches the whole process with gevent) -------------------------------------
_batches = itertools.count()
USERS_PER_BATCH = 10
"""Distinct customers per batch: an SDK's queue holds a few people's events, not one per message."""


def message(kind: int, user: str, now: str) -> dict[str, Any]:
    """One of four Segment messages, each mapping to exactly one Patron event."""
    base: dict[str, Any] = {"userId": user, "messageId": str(uuid.uuid4()), "timestamp": now}
    if kind == 0:
        return {**base, "type": "track", "event": "Button Clicked", "properties": {"button": "buy", "n": 3}}
    if kind == 1:
        traits = {"email": f"{user}@example.com", "firstName": "Ann", "plan": "pro"}
        return {**base, "type": "identify", "traits": traits}
    if kind == 2:
        properties = {"url": "https://shop.example/pricing", "title": "Pricing"}
        return {**base, "type": "page", "name": "Pricing", "properties": properties}
    order = {
        "order_id": f"O-{uuid.uuid4().hex[:12]}",
        "revenue": 42.5,
        "currency": "EUR",
        "products": [{"product_id": "p-1", "price": 42.5, "quantity": 1}],
    }
    return {**base, "type": "track", "event": "Order Completed", "properties": order}


def batch_body(size: int) -> bytes:
    now = datetime.now(UTC).isoformat()
    first = next(_batches) * USERS_PER_BATCH
    users = [f"load-{first + i}" for i in range(USERS_PER_BATCH)]
    messages = [message(i % 4, users[i % USERS_PER_BATCH], now) for i in range(size)]
    return orjson.dumps(
        {"batch": messages, "sentAt": now, "context": {"library": {"name": "analytics-python"}}}
    )


# -- the collector --------------------------------------------------------------------------------
def _patron(data: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from patron.cli.main import run; run()", "--data-dir", str(data), *args]


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _environment() -> dict[str, str]:
    """No PATRON_* variable of the caller's shell changes the set-up (the data dir is passed explicitly)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("PATRON_")}


def create_key(data: Path) -> str:
    done = subprocess.run(
        _patron(data, "keys", "create", SOURCE), capture_output=True, text=True, env=_environment()
    )
    if done.returncode != 0:
        raise SystemExit(f"patron keys create failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_collector(data: Path, port: int, workers: int, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    """``patron serve`` on loopback; returns once ``/health`` answers 200."""
    command = _patron(data, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers))
    log = open(data / "serve.log", "wb")  # noqa: SIM115 - the child writes it until it stops
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=_environment(), preexec_fn=_pinned(cpus)
    )
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = (data / "serve.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"patron serve exited with {server.returncode}:\n{tail}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_collector(server)
    raise SystemExit(f"patron serve did not answer /health on port {port} within 60 s (see {data}/serve.log)")


def stop_collector(server: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as an operator would: uvicorn drains, the writer finishes its queue, the log closes."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        raise SystemExit("patron serve did not stop within 30 s of SIGINT") from None


def _processes(root: int) -> list[int]:
    """``root`` and its descendants (uvicorn's worker processes when --workers > 1)."""
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def thread_cpu(root: int) -> dict[tuple[int, int], float]:
    """CPU seconds (user + system) of every thread of ``root``'s process tree, by (pid, tid)."""
    times: dict[tuple[int, int], float] = {}
    for pid in _processes(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            times[(pid, int(task.name))] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def cpu_by_role(
    before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]
) -> dict[str, float]:
    """CPU seconds spent during the run: per worker process, its event loop, writer and other threads."""
    spent: dict[int, dict[int, float]] = {}
    for (pid, tid), seconds in after.items():
        spent.setdefault(pid, {})[tid] = seconds - before.get((pid, tid), 0.0)
    roles: dict[str, float] = {}
    for pid, threads in spent.items():
        loop = threads.pop(pid, 0.0)
        if not threads and loop < 0.05:
            continue  # uvicorn's supervisor when --workers > 1: it only watches the workers
        writer = max(threads.values(), default=0.0)
        roles["event loop (main thread)"] = roles.get("event loop (main thread)", 0.0) + loop
        roles["writer thread"] = roles.get("writer thread", 0.0) + writer
        roles["other threads"] = roles.get("other threads", 0.0) + sum(threads.values()) - writer
    return roles


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) clock ticks of the machine's CPUs since boot, from ``/proc/stat``.

    On a virtual machine "steal" is time a CPU was ready to run but the hypervisor ran someone else:
    the run's wall time includes it, and no code of ours can shorten it.
    """
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    return sum(fields[:8]), fields[7]


def count_log(data: Path) -> tuple[int, int]:
    """Events and dead letters in the embedded log (sum of the partitions' end offsets)."""
    from patron.streams.local_log import LocalLog
    from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC

    log = LocalLog(data)
    try:
        return sum(log.end_offsets(EVENTS_TOPIC).values()), sum(log.end_offsets(DEAD_LETTER_TOPIC).values())
    finally:
        log.close()


# -- one run --------------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``share`` of the values at or below."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run_load(
    work: Path,
    *,
    users: int,
    spawn_rate: float | None,
    seconds: int,
    batch: int,
    workers: int = 1,
    server_cpus: set[int] | None = None,
    client_cpus: set[int] | None = None,
    progress: Callable[[float], None] | None = None,
) -> Run:
    """Start a collector in ``work``, load it with locust for ``seconds``, stop it and count the log."""
    data = work / "data"
    data.mkdir(parents=True)
    key = create_key(data)
    port = free_port()
    server = start_collector(data, port, workers, server_cpus)
    result = work / "counts.json"
    env = _environment() | {
        "PATRON_LOAD_KEY": key,
        "PATRON_LOAD_BATCH": str(batch),
        "PATRON_LOAD_RESULT": str(result),
    }
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["--users", str(users), "--spawn-rate", str(spawn_rate or users), "--run-time", f"{seconds}s"]
    command += ["--stop-timeout", str(STOP_TIMEOUT_S), "--host", f"http://127.0.0.1:{port}"]
    command += ["--loglevel", "WARNING"]
    try:
        before = thread_cpu(server.pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ticks = cpu_ticks()
        started = time.perf_counter()
        with open(work / "locust.log", "wb") as output:
            locust = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, preexec_fn=_pinned(client_cpus)
            )
            while locust.poll() is None:
                time.sleep(0.5)
                if progress:
                    progress(time.perf_counter() - started)
        after = thread_cpu(server.pid)
        # Only locust ended (and was reaped) in between: the collector still runs.
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        total, stolen = (now - then for now, then in zip(cpu_ticks(), ticks, strict=True))
    finally:
        stop_collector(server)
    if not result.is_file():
        tail = (work / "locust.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"locust exited with {locust.returncode} and wrote no counts:\n{tail}")
    counts = json.loads(result.read_text())
    latencies = counts["latencies_ms"]
    if len(latencies) != counts["requests"]:
        raise SystemExit(f"locust timed {len(latencies)} of {counts['requests']} requests")
    logged, dead = count_log(data)
    return Run(
        users=users,
        batch=batch,
        workers=workers,
        seconds=counts["seconds"] or float(seconds),
        requests=counts["requests"],
        failed_requests=counts["failed_requests"],
        accepted=counts["accepted"],
        rejected=counts["rejected"],
        logged=logged,
        dead_letters=dead,
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=0.0),
        server_cpu=cpu_by_role(before, after),
        failures=counts["failures"],
        steal_pct=100 * stolen / total if total else 0.0,
        client_cpu=reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime,
    )


# -- where the writer's time goes -----------------------------------------------------------------
def writer_steps(requests: int, batch: int, group: int) -> list[tuple[str, float, float]]:
    """The collector's writer work, step by step, in this process: (step, wall µs, CPU µs) per event.

    The writer runs on its own thread, which a profiler on the event loop's thread does not see, so
    its work is repeated here on the same kind of requests: the collector's own body parsing
    (``collector._candidates``, untimed), then the writer's steps one at a time over all of them
    (mapping, validation, encoding, appending ``group`` requests per commit), and finally the whole
    ``GroupCommitWriter._commit`` on the same requests, ``group`` at a time, into a second fresh log.
    """
    from patron.config import Settings
    from patron.connectors import collector
    from patron.connectors.segment import segment_to_events
    from patron.events.codec import open_codec
    from patron.events.models import validate_event
    from patron.streams.backends import open_log
    from patron.streams.log import DEAD_LETTER_TOPIC, EVENTS_TOPIC

    def parsed() -> list[Any]:
        jobs = []
        for _ in range(requests):
            raw = batch_body(batch)
            body = orjson.loads(raw)
            candidates, problem = collector._candidates(body, raw, "batch", None)
            if problem is not None:
                raise SystemExit(f"the load's own request was refused: {problem}")
            jobs.append(collector.Job(SOURCE, "/v1/batch", candidates, datetime.now(UTC), body["sentAt"]))
        return jobs

    def timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        return result, time.perf_counter() - wall, time.process_time() - cpu

    events = requests * batch
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="patron-load-steps-") as scratch:
        logs = []
        for name in ("steps", "commit"):
            settings = Settings.load(data_dir=Path(scratch) / name)
            log = open_log(settings)
            for topic in (EVENTS_TOPIC, DEAD_LETTER_TOPIC):
                log.ensure_topic(topic)
            codec = open_codec(settings)
            for event_type in codec.catalogue.event_types():
                codec.schema_id(event_type)
            logs.append((log, codec))
        (log, codec), (commit_log, commit_codec) = logs
        jobs = parsed()
        now = datetime.now(UTC)

        def mapped() -> list[dict[str, Any]]:
            return [
                event
                for job in jobs
                for c in job.candidates
                for event in segment_to_events(c.message, SOURCE, received_at=now, sent_at=job.sent_at)
            ]

        mapped_events, wall, cpu = timed(mapped)
        rows.append(("map Segment -> event (segment_to_events)", wall, cpu))
        valid, wall, cpu = timed(lambda: [validate_event(event) for event in mapped_events])
        rows.append(("validate (validate_event)", wall, cpu))
        messages, wall, cpu = timed(lambda: [codec.message(event) for event in valid])
        rows.append(("encode (EventCodec.message)", wall, cpu))
        size = group * batch
        _, wall, cpu = timed(
            lambda: [
                log.append(EVENTS_TOPIC, messages[at : at + size]) for at in range(0, len(messages), size)
            ]
        )
        rows.append((f"append + commit, {size} events each (LocalLog.append)", wall, cpu))
        writer = collector.GroupCommitWriter(commit_log, commit_codec)
        jobs = parsed()
        _, wall, cpu = timed(
            lambda: [writer._commit(jobs[at : at + group]) for at in range(0, len(jobs), group)]
        )
        rows.append((f"whole writer: GroupCommitWriter._commit, {group} requests at a time", wall, cpu))
        rejected = [r for job in jobs for r in job.future.result()]
        logged = sum(commit_log.end_offsets(EVENTS_TOPIC).values())
        for opened, _ in logs:
            opened.close()
    if rejected or len(mapped_events) != events or logged != events:
        raise SystemExit(
            f"writer steps: {len(mapped_events)} mapped, {logged} logged of {events}; {rejected[:1]}"
        )
    return [(label, wall / events * 1e6, cpu / events * 1e6) for label, wall, cpu in rows]


# -- report ---------------------------------------------------------------------------------------
HEADERS = (
    "users x batch",
    "workers",
    "seconds",
    "requests/s",
    "events/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "errors",
    "accepted",
    "in log",
    "accepted vs log",
    "collector CPU s: loop / writer / other",
    "locust CPU s",
    "steal %",
    "target",
)


def cells(run: Run) -> list[str]:
    cpu = run.server_cpu
    met = run.events_s >= TARGET_EVENTS_S and run.p99_ms < TARGET_P99_MS and run.failed_requests == 0
    return [
        f"{run.users} x {run.batch}",
        str(run.workers),
        f"{run.seconds:.1f}",
        f"{run.requests_s:,.0f}",
        f"{run.events_s:,.0f}",
        f"{run.p50_ms:.0f}",
        f"{run.p95_ms:.0f}",
        f"{run.p99_ms:.0f}",
        f"{run.max_ms:.0f}",
        f"{run.failed_requests + run.rejected:,}",
        f"{run.accepted:,}",
        f"{run.logged:,}",
        run.count_proof + (f"; {run.dead_letters:,} dead letters" if run.dead_letters else ""),
        " / ".join(
            f"{cpu.get(role, 0.0):.1f}"
            for role in ("event loop (main thread)", "writer thread", "other threads")
        ),
        f"{run.client_cpu:.1f}",
        f"{run.steal_pct:.0f}",
        "met" if met else "NOT met",
    ]


def report(runs: list[Run], info: dict[str, str], markdown: bool) -> None:
    table = Table(title=f"Collector load (target >= {TARGET_EVENTS_S:,} events/s, p99 < {TARGET_P99_MS} ms)")
    for header in HEADERS:
        table.add_column(
            header, justify="left" if header in ("users x batch", "accepted vs log") else "right"
        )
    for run in runs:
        table.add_row(*cells(run))
    console.print(table)
    for key, value in info.items():
        console.print(f"{key}: {value}", highlight=False)
    for run in runs:
        for reason, times in run.failures.items():
            console.print(f"{run.users} users: {times} x {reason}", highlight=False, soft_wrap=True)
    if markdown:
        print("\n| " + " | ".join(HEADERS) + " |")
        print("|" + "---|" * len(HEADERS))
        for run in runs:
            print("| " + " | ".join(cells(run)) + " |")


def _cpus(text: str) -> set[int] | None:
    return {int(cpu) for cpu in text.split(",")} if text else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=60, help="load duration per run (default 60)")
    parser.add_argument(
        "--users", default="5", help="concurrent SDKs; comma-separated for several runs (default 5)"
    )
    parser.add_argument("--spawn-rate", type=float, help="users started per second (default: all at once)")
    parser.add_argument("--batch", type=int, default=50, help="messages per /v1/batch request (default 50)")
    parser.add_argument("--workers", type=int, default=1, help="`patron serve --workers` (default 1)")
    parser.add_argument("--server-cpus", default="0", help="CPUs of the collector ('' = any; default 0)")
    parser.add_argument("--client-cpus", default="1", help="CPUs of locust ('' = any; default 1)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time the writer's steps in this process: µs per event of each",
    )
    args = parser.parse_args()
    available = os.sched_getaffinity(0)
    server_cpus, client_cpus = (
        (_cpus(args.server_cpus) or set()) & available,
        (_cpus(args.client_cpus) or set()) & available,
    )
    info = describe(PACKAGES)
    info["load average (1 min) before"] = f"{os.getloadavg()[0]:.2f}"
    runs = []
    users = [int(value) for value in args.users.split(",")]
    columns = (TextColumn("{task.description:<20}"), BarColumn(), TimeElapsedColumn())
    with (
        Progress(*columns, console=console, transient=True) as bar,
        tempfile.TemporaryDirectory(prefix="patron-load-") as scratch,
    ):
        for count in users:
            task = bar.add_task(f"{count} users x {args.batch}", total=args.seconds)
            runs.append(
                run_load(
                    Path(scratch) / f"users-{count}",
                    users=count,
                    spawn_rate=args.spawn_rate,
                    seconds=args.seconds,
                    batch=args.batch,
                    workers=args.workers,
                    server_cpus=server_cpus or None,
                    client_cpus=client_cpus or None,
                    progress=lambda elapsed, task=task: bar.update(
                        task, completed=min(elapsed, args.seconds)
                    ),
                )
            )
    info["load average (1 min) after"] = f"{os.getloadavg()[0]:.2f}"
    info["pinned"] = (
        f"collector on CPUs {sorted(server_cpus) or 'any'}, locust on CPUs {sorted(client_cpus) or 'any'}"
    )
    report(runs, info, args.markdown)
    if args.profile:
        table = Table(f"writer step (200 requests of {args.batch})", "wall µs/event", "CPU µs/event")
        steps = writer_steps(200, args.batch, 5)
        for label, wall, cpu in steps:
            table.add_row(label, f"{wall:.0f}", f"{cpu:.0f}")
        console.print(table)
        if args.markdown:
            print("\n| writer step | wall µs/event | CPU µs/event |\n|---|---:|---:|")
            for label, wall, cpu in steps:
                print(f"| {label} | {wall:.0f} | {cpu:.0f} |")
    if any(not run.count_proof.startswith(("equal", "within")) for run in runs):
        raise SystemExit("the log does not hold the events the collector accepted")


if __name__ == "__main__":
    main()
