"""The ``patron`` command: global options, the sub-commands, one-line errors with exit codes."""

from __future__ import annotations

from pathlib import Path

import typer

from patron.cli import (
    consent,
    dlq,
    erase,
    generate,
    identity,
    ingest,
    keys,
    log,
    profile,
    report,
    run,
    schemas,
    segments,
    serve,
    sink,
    snapshot,
    sql,
    worker,
)
from patron.cli.output import err_console
from patron.config import ConfigError, Settings
from patron.errors import EXIT_INVALID, EXIT_STORAGE, PatronError, storage_failure

app = typer.Typer(
    name="patron",
    help="Patron, an event-sourced customer data platform.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Path = typer.Option(
        None, "--data-dir", envvar="PATRON_DATA_DIR", help="Data directory (default ./patron-data)."
    ),
    broker: str = typer.Option(
        None, "--broker", envvar="PATRON_BROKER", help="local://DIR (embedded, default) or kafka://HOST:PORT."
    ),
    registry: str = typer.Option(
        None,
        "--registry",
        envvar="PATRON_REGISTRY",
        help="Confluent-compatible registry URL (default: the embedded one).",
    ),
) -> None:
    """Options here apply to every command, e.g. ``patron --data-dir /srv/patron log count``."""
    try:
        ctx.obj = Settings.load(data_dir=data_dir, broker=broker, registry=registry)
    except ConfigError as exc:
        raise PatronError(str(exc), EXIT_INVALID) from None


app.add_typer(schemas.app, name="schemas")
app.add_typer(log.app, name="log")
app.add_typer(dlq.app, name="dlq")
app.add_typer(keys.app, name="keys")
app.command("ingest")(ingest.ingest)
app.command("serve")(serve.serve)
app.command("generate")(generate.generate)
app.add_typer(identity.app, name="identity")
app.command("run")(run.run)
app.command("worker")(worker.worker)
app.command("profile")(profile.profile)
app.command("snapshot")(snapshot.snapshot)
app.command("sql")(sql.sql)
app.command("report")(report.report)
app.add_typer(sink.app, name="sink")
app.add_typer(segments.app, name="segments")
app.add_typer(consent.app, name="consent")
app.command("erase")(erase.erase)


def run() -> None:
    """Console entry point: a :class:`PatronError` becomes one red line and its exit code."""
    try:
        app()
    except PatronError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        if not storage_failure(exc):
            raise
        # SQLite commits atomically and snapshots are published only once written in full, so a
        # refused write leaves the data directory as it was before the batch or snapshot that failed.
        err_console.print(
            f"[bold red]error:[/] could not write the data directory ({exc}): the disk is full or a size "
            "limit was hit; nothing was half-written: free space and rerun the same command",
            highlight=False,
            soft_wrap=True,
        )
        raise SystemExit(EXIT_STORAGE) from None
