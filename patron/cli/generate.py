"""Placeholder: filled in by the generate work."""


def generate() -> None:
    """(not yet implemented)"""
