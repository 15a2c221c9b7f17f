"""``patron report``: the static HTML report of a snapshot (the current one unless ``--snapshot`` says)."""

from __future__ import annotations

from pathlib import Path

import typer

from patron.cli.output import console, settings_of, transient_progress
from patron.projections.report import SECTIONS, write_report
from patron.projections.snapshot import snapshot_path, snapshots_root

DEFAULT_OUT = "report.html"


def report(
    ctx: typer.Context,
    snapshot: str = typer.Option(None, "--snapshot", help="Snapshot id (default: the current one)."),
    out: Path = typer.Option(None, "--out", help=f"HTML file to write (default: DATA/{DEFAULT_OUT})."),
) -> None:
    """Write a self-contained HTML report (RFM, health, CLV, retention, lifecycle, KPIs); print its path."""
    settings = settings_of(ctx)
    directory = snapshot_path(snapshots_root(settings), snapshot)
    progress = transient_progress("report: {task.description}")
    with progress:
        task = progress.add_task("starting", total=len(SECTIONS))
        path = write_report(
            directory,
            out if out is not None else settings.path(DEFAULT_OUT),
            progress=lambda section: progress.update(task, description=section, advance=1),
        )
    console.print(str(path.resolve()), highlight=False, soft_wrap=True)
