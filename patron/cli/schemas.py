"""Placeholder: filled in by the schemas work."""

import typer

app = typer.Typer(help="(not yet implemented)")


def schemas() -> None:
    """(not yet implemented)"""
