"""Placeholder: filled in by the issue-3 work."""


def worker() -> None:
    """(not yet implemented)"""
