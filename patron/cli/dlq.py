"""Placeholder: filled in by the dlq work."""

import typer

app = typer.Typer(help="(not yet implemented)")


def dlq() -> None:
    """(not yet implemented)"""
