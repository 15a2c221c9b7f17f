"""Placeholder: filled in by the issue-3 work."""


def run() -> None:
    """(not yet implemented)"""
