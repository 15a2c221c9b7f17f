"""Avro schema compatibility checks (placeholder until the full rules land)."""

from __future__ import annotations

from typing import Any

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


def check_compatibility(new: dict[str, Any], previous: list[dict[str, Any]], level: str) -> list[str]:
    """Problems that make ``new`` break ``level`` against the ``previous`` versions (oldest first)."""
    return []
