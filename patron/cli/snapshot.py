"""``patron snapshot``: write every projection as Parquet and publish it, or list the retained snapshots."""

from __future__ import annotations

import signal
import threading
from datetime import date
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from patron.cli.output import console, settings_of, transient_progress
from patron.config import Settings
from patron.errors import EXIT_INVALID, PatronError
from patron.projections.snapshot import (
    DEFAULT_APP_ID,
    DEFAULT_KEEP,
    STEPS,
    read_manifest,
    read_meta,
    snapshots_root,
    take_snapshot,
)


def parse_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PatronError(
            f"--as-of {text!r} is not a date: use YYYY-MM-DD, e.g. 2024-06-30", EXIT_INVALID
        ) from None


def snapshot(
    ctx: typer.Context,
    as_of: str | None = typer.Option(
        None, "--as-of", help="Rebuild the state at the end of this UTC day (YYYY-MM-DD): time travel."
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Replay the log instead of reading the profile projection (same tables)."
    ),
    keep: int = typer.Option(
        DEFAULT_KEEP, "--keep", envvar="PATRON_SNAPSHOT_KEEP", min=1, help="Snapshots to retain."
    ),
    app_id: str = typer.Option(
        DEFAULT_APP_ID, "--app-id", help="Kafka only: the `patron worker --app-id` whose profiles to read."
    ),
    list_: bool = typer.Option(False, "--list", help="List the retained snapshots instead of taking one."),
    every: float | None = typer.Option(
        None,
        "--every",
        min=1,
        help="Keep going: a new snapshot every SECONDS (as of the moment it starts) until stopped.",
    ),
) -> None:
    """Write fact tables, scores, profiles and identities as a Parquet snapshot and make it current."""
    settings = settings_of(ctx)
    if list_:
        _print_list(snapshots_root(settings))
        return
    day = parse_day(as_of)
    if every is not None and day is not None:
        raise PatronError(
            "--every takes snapshots as of now; it cannot be combined with --as-of", EXIT_INVALID
        )
    if every is None:
        _take(settings, day, rebuild, keep, app_id)
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set():
            _take(settings, None, rebuild, keep, app_id)
            stop.wait(every)
    except KeyboardInterrupt:
        pass


def _take(settings: Settings, day: date | None, rebuild: bool, keep: int, app_id: str) -> None:
    """One snapshot, with a progress bar, then what it holds."""
    progress = transient_progress("snapshot: {task.description}")
    with progress:
        task = progress.add_task("starting", total=STEPS)

        def step(description: str) -> None:
            progress.update(task, description=description, advance=1)

        info = take_snapshot(settings, as_of=day, rebuild=rebuild, keep=keep, app_id=app_id, progress=step)
    table = Table("table", "rows", title=f"Snapshot {info.snapshot_id}", title_justify="left")
    for name, rows in info.tables.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    if info.replay is not None:
        skipped = ", ".join(
            f"{n:,} {reason}"
            for reason, n in info.replay.items()
            if reason not in ("records", "folded") and n
        )
        console.print(
            f"replayed {info.replay['records']:,} records, folded {info.replay['folded']:,}"
            + (f"; not folded: {skipped}" if skipped else ""),
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"as of {info.as_of.isoformat(timespec='seconds')} ({info.source}); "
        f"{info.changes} change events and {info.scores} score events appended; current snapshot: {escape(str(info.path))}",
        highlight=False,
        soft_wrap=True,
    )


def _print_list(root: Path) -> None:
    manifest = read_manifest(root)
    if not manifest["snapshots"]:
        console.print(f"no snapshots in {escape(str(root))}; run `patron snapshot`", highlight=False)
        return
    table = Table("current", "as of", "source", "created", "tables", "rows")
    table.columns[0].justify = "center"
    table.add_column("snapshot", no_wrap=True)
    for name in reversed(manifest["snapshots"]):
        meta = read_meta(root / name)
        table.add_row(
            "*" if name == manifest["current"] else "",
            meta["as_of"][:16],
            meta["source"],
            meta["created_at"][:16],
            str(len(meta["tables"])),
            f"{sum(entry['rows'] for entry in meta['tables'].values()):,}",
            name,
        )
    console.print(table)
