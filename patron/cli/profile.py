"""Placeholder: filled in by the issue-3 work."""


def profile() -> None:
    """(not yet implemented)"""
