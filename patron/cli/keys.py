"""``patron keys``: the write keys sources authenticate with at the collector (``patron serve``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from patron.cli.output import console, err_console, settings_of
from patron.connectors.write_keys import WriteKeyStore

app = typer.Typer(help="Create, list, rotate and revoke collector write keys.", no_args_is_help=True)


def _store(ctx: typer.Context) -> WriteKeyStore:
    return WriteKeyStore(settings_of(ctx).path("write_keys.db"))


def _show_once(key: str, source: str) -> None:
    """The secret goes to stdout alone (scriptable); the warning to stderr."""
    console.print(key, highlight=False, soft_wrap=True)
    err_console.print(
        f"write key for source [bold]{source}[/]: store it now, it is shown only once", highlight=False
    )


@app.command("create")
def create(
    ctx: typer.Context, source: str = typer.Argument(..., help="Source name, e.g. web or shop.")
) -> None:
    """Create a write key for SOURCE and print it (once; only its hash is stored)."""
    _show_once(_store(ctx).create(source), source)


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """List the write keys: source, display prefix, times and status (never the secret)."""
    keys = _store(ctx).list()
    if not keys:
        err_console.print("no write keys yet; create one with `patron keys create SOURCE`")
        return
    now = datetime.now(UTC)
    table = Table("source", "prefix", "created", "rotated", "status")
    for key in keys:
        table.add_row(key.source, key.prefix, _when(key.created_at), _when(key.rotated_at), key.status(now))
    console.print(table)


@app.command("rotate")
def rotate(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Source whose key is replaced."),
    grace: int = typer.Option(
        0, "--grace", min=0, help="Seconds the old key keeps working, so clients can switch (default: none)."
    ),
) -> None:
    """Issue a new key for SOURCE and retire its current ones (now, or after --grace seconds)."""
    _show_once(_store(ctx).rotate(source, timedelta(seconds=grace)), source)


@app.command("revoke")
def revoke(
    ctx: typer.Context, target: str = typer.Argument(..., help="A source (all its keys) or one key's prefix.")
) -> None:
    """Revoke every key of a source, or the one key with the given prefix; effective immediately."""
    for key in _store(ctx).revoke(target):
        console.print(f"revoked {key.prefix} (source {key.source})", highlight=False)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "-"
