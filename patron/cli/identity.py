"""Placeholder: filled in by the issue-3 work."""

import typer

app = typer.Typer(help="(not yet implemented)")
