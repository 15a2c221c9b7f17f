"""``patron generate``: write the synthetic multi-source demo data set (see ``patron.generator``)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patron.cli.output import console, err_console
from patron.errors import PatronError
from patron.generator.dataset import Parameters, generate_dataset


def _start_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PatronError(f"--start {value!r} is not a date: use YYYY-MM-DD, e.g. 2026-01-01") from None


def generate(
    customers: int = typer.Option(1000, "--customers", min=1, help="How many customers to simulate."),
    days: int = typer.Option(90, "--days", min=1, help="Length of the generated period in days."),
    seed: int = typer.Option(
        42, "--seed", min=0, help="Random seed: the same seed writes byte-identical files."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Directory to write the files, mappings and ground truth to."
    ),
    malformed_rate: float = typer.Option(
        0.01, "--malformed-rate", min=0.0, max=0.5, help="Share of records broken on purpose (for the DLQ)."
    ),
    start: str = typer.Option("2026-01-01", "--start", help="First day of the period (UTC), YYYY-MM-DD."),
) -> None:
    """Write a realistic, deterministic multi-source data set with mappings and ground truth."""
    if out.exists() and not out.is_dir():
        raise PatronError(f"--out {out} is a file, not a directory: choose a directory path")
    params = Parameters(customers, days, seed, _start_date(start), malformed_rate)
    began = time.perf_counter()
    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task("simulating customers", total=None)

        def report(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total or None)

        manifest = generate_dataset(params, out, report)
    elapsed = time.perf_counter() - began
    table = Table(title=f"Generated in {out}", show_lines=False)
    for column in ("file", "records", "duplicates", "malformed", "events"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for name, summary in manifest["files"].items():
        events = sum(summary["events"].values())
        row = (name, summary["records"], summary["duplicates"], summary["malformed"], events)
        table.add_row(*[f"{value:,}" if isinstance(value, int) else value for value in row])
    console.print(table)
    console.print(
        f"{manifest['events_total']:,} events from {manifest['records_total']:,} records in {elapsed:.1f} s; "
        f"ground truth in {out / manifest['ground_truth']}, mappings in {out / 'mappings'}"
    )
