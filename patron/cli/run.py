"""``patron run``: the stream processors on the embedded log, until caught up or following new events.

State, emitted events and consumer positions commit together per batch, so the command can be
stopped (Ctrl-C, after the current commit) or killed at any point and simply run again.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patron.cli.output import console, err_console, settings_on
from patron.config import Settings
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import open_codec
from patron.streams.local_log import LocalLog
from patron.streams.local_runner import DEFAULT_BATCH_SIZE, TIMER_INTERVAL_S, LocalRunner, ProcessorStats
from patron.streams.processor import Processor

DEFAULT_TOPOLOGY = "patron.streams.topology:default_processors"
TOPOLOGY_HELP = "The processors to run, as MODULE:FUNCTION returning a list of processors."


def load_topology(spec: str, settings: Settings) -> list[Processor]:
    """The processors ``MODULE:FUNCTION`` returns (imported only now: the topology is heavy).

    A function that takes a parameter is given the settings (where the segment definitions are)."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise PatronError(
            f"--topology {spec!r}: expected MODULE:FUNCTION, e.g. {DEFAULT_TOPOLOGY}", EXIT_INVALID
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PatronError(
            f"--topology {spec!r}: cannot import {module_name!r} ({exc})", EXIT_INVALID
        ) from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise PatronError(
            f"--topology {spec!r}: {module_name} has no function {function_name!r}", EXIT_INVALID
        )
    takes_settings = bool(inspect.signature(factory).parameters)
    return list(factory(settings) if takes_settings else factory())


def run(
    ctx: typer.Context,
    follow: bool = typer.Option(
        False,
        "--follow/--until-caught-up",
        help="Keep processing new events until Ctrl-C, or stop once everything is processed (default).",
    ),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Records per commit."),
    reset: bool = typer.Option(
        False,
        "--reset",
        "--from-scratch",
        help="Forget all processor state and positions first, and rebuild from the start of the log.",
    ),
    topology: str = typer.Option(DEFAULT_TOPOLOGY, "--topology", help=TOPOLOGY_HELP),
    timer_interval: float = typer.Option(
        TIMER_INTERVAL_S,
        "--timer-interval",
        min=0.1,
        help="With --follow: seconds between checks for segment time windows that flipped.",
    ),
) -> None:
    """Run the stream processors (identity, profiles and their segments) on the embedded log."""
    settings = settings_on(
        ctx,
        "local",
        "`patron run` is the embedded runner and needs a local:// broker, not {broker}; "
        "on Kafka start `patron worker` (as many as you like, with one --app-id)",
    )
    processors = load_topology(topology, settings)
    log = LocalLog(settings.broker.location, default_partitions=settings.partitions)
    try:
        runner = LocalRunner(log, open_codec(settings), processors)
        if reset:
            runner.reset()
            err_console.print("state and positions reset: rebuilding from the start of the log")
        with _stop_on_signals() as stop, _progress(runner) as on_batch:
            stats = runner.run(
                follow=follow,
                batch_size=batch_size,
                stop=stop,
                on_batch=on_batch,
                timer_interval=timer_interval,
            )
    finally:
        log.close()
    _report(stats)


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set a stop flag the runner checks between commits (a second Ctrl-C aborts)."""
    stop = threading.Event()
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt
        stop.set()
        err_console.print("stopping after the current commit (Ctrl-C again to abort)")

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handle)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _progress(runner: LocalRunner) -> Iterator[Callable[[str, ProcessorStats], None]]:
    """One bar per processor: records processed out of processed + still waiting."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("emitted {task.fields[emitted]:,}"),
        TimeElapsedColumn(),
        console=err_console,
    )
    tasks = {p.name: progress.add_task(p.name, total=None, completed=0, emitted=0) for p in runner.processors}

    def on_batch(name: str, stats: ProcessorStats) -> None:
        progress.update(
            tasks[name],
            completed=stats.processed,
            total=stats.processed + stats.remaining,
            emitted=stats.emitted,
        )

    with progress:
        yield on_batch


def _report(stats: dict[str, ProcessorStats]) -> None:
    table = Table("processor", "processed", "emitted", "already in log", "dead letters", "waiting")
    for name, counts in stats.items():
        table.add_row(
            name,
            f"{counts.processed:,}",
            f"{counts.emitted:,}",
            f"{counts.duplicates:,}",
            f"{counts.dead_letters:,}",
            f"{counts.remaining:,}",
        )
    console.print(table)
