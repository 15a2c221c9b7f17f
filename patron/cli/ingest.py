"""``patron ingest``: files (or a plugin connector's targets) onto the event log, with a summary.

Every target is opened -- mapping loaded, file read, columns checked -- before the first
record is ingested, so a typo costs one error line and no half-ingested data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from patron.cli.output import console, err_console, settings_of
from patron.connectors.file_ingest import CONNECTOR_NAME as FILE_CONNECTOR
from patron.connectors.file_ingest import expand_targets
from patron.connectors.plugins import DEFAULT_CONNECTOR, ReportsProgress, SourceStream, load_connector
from patron.connectors.runner import StreamResult, run_stream
from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.events.codec import EventCodec, open_codec
from patron.streams.backends import open_log
from patron.streams.log import EventLog

COUNTS = ("read", "accepted", "rejected", "duplicates", "skipped")


def ingest(
    ctx: typer.Context,
    targets: list[str] = typer.Argument(
        ...,
        metavar="PATH...",
        help="Files, or directories of .csv/.jsonl/.parquet files (or a plugin's targets).",
    ),
    mapping: Path | None = typer.Option(None, "--mapping", "-m", help="Mapping file for every file."),
    mapping_dir: Path | None = typer.Option(
        None, "--mapping-dir", help="Directory with one mapping per file: DIR/<file stem>.yaml."
    ),
    connector: str = typer.Option(
        DEFAULT_CONNECTOR, "--connector", "-c", help="Source connector (a plugin name)."
    ),
    option: list[str] | None = typer.Option(
        None, "--option", "-o", help="KEY=VALUE passed to the connector; repeatable."
    ),
    batch_size: int = typer.Option(2000, "--batch-size", min=1, help="Events per durable append."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 3 if any record was rejected."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ingest files through a mapping (or any connector plugin); rejected records go to the DLQ."""
    settings = settings_of(ctx)
    options = _parse_options(option or [])
    source_connector = load_connector(connector)
    skipped: list[tuple[Path, str]] = []
    if connector == FILE_CONNECTOR:
        plan = expand_targets(targets, mapping, mapping_dir)
        planned = [(str(path), {**options, **opts}) for path, opts in plan.files]
        skipped = plan.skipped
    else:
        extra = {"mapping": str(mapping)} if mapping else {}
        extra |= {"mapping_dir": str(mapping_dir)} if mapping_dir else {}
        planned = [(target, {**options, **extra}) for target in targets]
    streams = [(target, source_connector.open(target, opts)) for target, opts in planned]
    log = open_log(settings)
    try:
        codec = open_codec(settings)
        results = _run(
            streams, log=log, codec=codec, connector=connector, batch_size=batch_size, quiet=as_json
        )
    finally:
        log.close()
    _report(results, skipped, as_json)
    rejected = sum(result.stats.rejected for result in results)
    if strict and rejected:
        raise PatronError(
            f"{rejected} record(s) were rejected (--strict); `patron dlq list` shows why", EXIT_REFUSED
        )


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PatronError(
                f"--option {pair!r}: expected KEY=VALUE, e.g. --option source=web", EXIT_INVALID
            )
        options[key.strip()] = value
    return options


def _run(
    streams: list[tuple[str, SourceStream]],
    *,
    log: EventLog,
    codec: EventCodec,
    connector: str,
    batch_size: int,
    quiet: bool,
) -> list[StreamResult]:
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
    )
    results = []
    with progress:
        for target, stream in streams:
            measured = isinstance(stream, ReportsProgress)
            total = stream.total if measured else None
            task = progress.add_task(escape(Path(target).name), total=total, amount="")

            def update(
                position: int, task: Any = task, stream: Any = stream, measured: bool = measured
            ) -> None:
                progress.update(task, completed=position, amount=_amount(position, stream, measured))

            results.append(
                run_stream(
                    target,
                    stream,
                    log=log,
                    codec=codec,
                    connector=connector,
                    batch_size=batch_size,
                    on_progress=update,
                )
            )
            if total is None:
                progress.update(
                    task, total=max(1, results[-1].stats.read), completed=max(1, results[-1].stats.read)
                )
    return results


def _amount(position: int, stream: Any, measured: bool) -> str:
    if not measured:
        return f"{position:,} records"
    if stream.unit == "bytes":
        return f"{decimal(position)}/{decimal(stream.total)}"
    return f"{position:,}/{stream.total:,} {stream.unit}"


def _report(results: list[StreamResult], skipped: list[tuple[Path, str]], as_json: bool) -> None:
    totals = {name: sum(result.as_dict()[name] for result in results) for name in COUNTS}
    rejections = [(location, reason) for result in results for location, reason in result.rejections]
    if as_json:
        body = {
            "targets": [result.as_dict() for result in results],
            "totals": totals,
            "rejections": [{"location": location, "reason": reason} for location, reason in rejections],
            "skipped_files": [{"path": str(path), "reason": reason} for path, reason in skipped],
        }
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="Ingested")
    table.add_column("file", overflow="fold")
    for name in COUNTS:
        table.add_column(name, justify="right")
    for result in results:
        counts = result.as_dict()
        table.add_row(Text(Path(result.target).name), *(f"{counts[name]:,}" for name in COUNTS))
    if len(results) > 1:
        table.add_section()
        table.add_row("total", *(f"{totals[name]:,}" for name in COUNTS), style="bold")
    console.print(table)
    for path, reason in skipped:
        console.print(f"Skipped {path}: {reason}", markup=False, highlight=False)
    if rejections:
        console.print("[bold]First rejections[/]:")
        for location, reason in rejections[:5]:
            console.print(f"  {location}: {reason}", markup=False, highlight=False)
        console.print(
            f"All {totals['rejected']:,} rejected records: `patron dlq list` (replay: `patron dlq replay`)"
        )
