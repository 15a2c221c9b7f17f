"""Shared console objects and helpers for CLI output (results on stdout, messages on stderr)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from patron.config import Settings
from patron.errors import EXIT_INVALID, PatronError

console = Console()
err_console = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the global options resolved (``patron --data-dir ... COMMAND``)."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        settings = Settings.load()
    return settings


def settings_on(ctx: typer.Context, scheme: str, refusal: str) -> Settings:
    """The settings, refused (exit ``EXIT_INVALID``) unless the broker is ``scheme://``.

    Some commands only make sense on one kind of broker; ``refusal`` is the one-line reason, with
    ``{broker}`` standing for the configured broker, and should name the command to use instead.
    """
    settings = settings_of(ctx)
    if settings.broker.scheme != scheme:
        raise PatronError(refusal.format(broker=settings.broker), EXIT_INVALID)
    return settings


def transient_progress(label: str = "{task.description}", *columns: ProgressColumn) -> Progress:
    """A bar on stderr that disappears when done, drawn only on a terminal: a redirected stderr gets
    the command's summary, not thousands of bar redraws. ``columns`` go after the count (default:
    elapsed time)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *(columns or (TimeElapsedColumn(),)),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


def parse_time(value: str, option: str) -> datetime:
    """A time option in ISO 8601 (a time without zone is UTC), or one line saying how to write it."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PatronError(
            f"{option} {value!r} is not an ISO 8601 time; write e.g. 2026-03-31 or 2026-03-31T12:00:00Z",
            EXIT_INVALID,
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
