"""``patron worker``: the stream processors as a faust worker on Kafka; start more to scale out.

Workers started with the same ``--app-id`` form one consumer group and split the partitions (and
the state that goes with them) between them; a worker that stops or dies hands its partitions to
the others, which restore the state from the changelog topics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

from patron.cli.output import err_console, settings_on
from patron.cli.run import DEFAULT_TOPOLOGY, TOPOLOGY_HELP, load_topology
from patron.events.codec import open_codec
from patron.streams.local_runner import DEFAULT_BATCH_SIZE


def worker(
    ctx: typer.Context,
    app_id: str = typer.Option(
        "patron", "--app-id", help="Consumer group and table namespace; workers with one id share the work."
    ),
    workers_dir: Path = typer.Option(
        None, "--workers-dir", help="Where the worker keeps local files (default DATA/workers)."
    ),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Records per batch."),
    session_timeout: float = typer.Option(
        30.0,
        "--session-timeout",
        min=3.0,
        help="Seconds before a silent worker's partitions move to the others (and the rebalance timeout).",
    ),
    topology: str = typer.Option(DEFAULT_TOPOLOGY, "--topology", help=TOPOLOGY_HELP),
    timer_interval: float = typer.Option(
        10.0,
        "--timer-interval",
        min=0.1,
        help="Seconds between checks for segment time windows that flipped (dormancy, expiry).",
    ),
    log_level: str = typer.Option(
        "warning", "--log-level", help="faust's own logging: warning, info (rebalances, recovery) or debug."
    ),
) -> None:
    """Run the stream processors on Kafka (faust) until Ctrl-C / SIGTERM."""
    settings = settings_on(
        ctx,
        "kafka",
        "`patron worker` runs on Kafka and needs a kafka:// broker, not {broker}; "
        "on the embedded log use `patron run` (add --follow to keep processing new events)",
    )
    from patron.streams.faust_runner import WorkerConfig, run_worker  # faust is slow to import

    processors = load_topology(topology, settings)
    base = workers_dir or settings.path("workers")
    datadir = base / app_id / f"worker-{os.getpid()}"
    datadir.mkdir(parents=True, exist_ok=True)
    config = WorkerConfig(
        app_id=app_id,
        bootstrap=settings.broker.location,
        datadir=datadir,
        partitions=settings.partitions,
        batch_size=batch_size,
        session_timeout=session_timeout,
        loglevel=log_level.upper(),
        timer_interval=timer_interval,
    )
    err_console.print(f"worker {os.getpid()}: app {app_id!r} on kafka://{settings.broker.location}")
    try:
        run_worker(config, open_codec(settings), processors, _report)
    finally:
        shutil.rmtree(datadir, ignore_errors=True)  # in-memory tables: nothing there outlives the worker


def _report(line: str) -> None:
    err_console.print(line, highlight=False, soft_wrap=True)
