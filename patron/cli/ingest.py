"""Placeholder: filled in by the ingest work."""


def ingest() -> None:
    """(not yet implemented)"""
