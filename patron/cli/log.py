"""Placeholder: filled in by the log work."""

import typer

app = typer.Typer(help="(not yet implemented)")


def log() -> None:
    """(not yet implemented)"""
