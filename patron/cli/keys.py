"""Placeholder: filled in by the keys work."""

import typer

app = typer.Typer(help="(not yet implemented)")


def keys() -> None:
    """(not yet implemented)"""
