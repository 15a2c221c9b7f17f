"""Segment membership as rows: the ``segment_membership`` snapshot table, with each stay's interval.

The profiles stage keeps, per profile, the open memberships (``in``) and the closed stays
(``history``); a row per stay lets analysts ask "who was in X on day D" and "how long do people stay".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

MEMBERSHIP_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("segment", pa.string()),
        ("version", pa.int32()),
        ("entered_at", pa.timestamp("us", tz="UTC")),
        ("exited_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else datetime.fromtimestamp(micros / 1_000_000, UTC)


def membership_rows(profile_id: str, state: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stay of ``profile_id`` in a segment: closed stays first, then the open ones
    (``exited_at`` None), each list in the order the stays began."""
    rows = [
        {
            "profile_id": profile_id,
            "segment": segment,
            "version": version,
            "entered_at": _moment(entered),
            "exited_at": _moment(exited),
        }
        for segment, version, entered, exited in state.get("history", ())
    ]
    rows.extend(
        {
            "profile_id": profile_id,
            "segment": segment,
            "version": held["v"],
            "entered_at": _moment(held["since"]),
            "exited_at": None,
        }
        for segment, held in sorted(state.get("in", {}).items(), key=lambda item: item[1]["since"])
    )
    return rows
