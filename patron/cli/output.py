"""Shared console objects and helpers for CLI output (results on stdout, messages on stderr)."""

from __future__ import annotations

import typer
from rich.console import Console

from patron.config import Settings

console = Console()
err_console = Console(stderr=True)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the global options resolved (``patron --data-dir ... COMMAND``)."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        settings = Settings.load()
    return settings
