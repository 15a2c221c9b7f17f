"""Placeholder: filled in by the serve work."""


def serve() -> None:
    """(not yet implemented)"""
