"""Change events between two snapshots: lifecycle stage changes and early-warning alerts that start.

Scores are recomputed per snapshot, so "the stage changed" or "the alert started to hold" only
exists as a difference between the new snapshot and the previous one. ``patron snapshot`` appends
these events to ``patron.profile-changes`` keyed by profile id, for whatever reacts to them (a CSM
queue, a marketing journey).

Ids are uuid5 over (kind, profile, new value, as-of day): re-running a snapshot for the same day
appends only duplicates the log drops, and two snapshots on one day that see the same change emit
it once. A change that reverts and happens again on a later day is a new event.

With no previous snapshot there is nothing to compare stages with: the first snapshot emits no
stage changes (its ``lifecycle`` table is the starting point), but every alert that holds is
raised, because an alert is a call to act that nobody has seen yet. A profile new since the
previous snapshot has ``from_stage`` null and none of its alerts held before.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from patron.events.codec import EventCodec
from patron.identity.events import uuid5_text
from patron.projections.purchases import as_of_day
from patron.streams.log import Message
from patron.streams.topology import derived_event

PROFILE_CHANGES_TOPIC = "patron.profile-changes"
PROJECTIONS_SOURCE = "patron.projections"
STAGE_CHANGED = "lifecycle_stage_changed"
ALERT_RAISED = "health_alert_raised"
CHANGE_NAMESPACE = uuid.UUID("8d7e2f14-6a3b-5c90-b1d2-4e5f60718293")


def change_id(kind: str, profile_id: str, value: str, as_of: datetime) -> str:
    """The deterministic event id of one change seen on the as-of day."""
    return uuid5_text(CHANGE_NAMESPACE, f"{kind}:{profile_id}:{value}:{as_of_day(as_of).isoformat()}")


def _change_event(kind: str, value: str, as_of: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return derived_event(
        change_id(kind, payload["profile_id"], value, as_of),
        kind,
        source=PROJECTIONS_SOURCE,
        occurred_at=as_of,
        received_at=as_of,
        payload={**payload, "as_of": as_of},
    )


def _alerting(health: pa.Table) -> pa.Table:
    """The rows of a ``health`` table with at least one alert (few: alerts are exceptions)."""
    return health.filter(pc.greater(pc.list_value_length(health["alerts"]), 0))


def stage_changes(previous: pa.Table | None, current: pa.Table, as_of: datetime) -> list[dict[str, Any]]:
    """``lifecycle_stage_changed`` events for profiles whose stage differs from ``previous`` (both are
    ``lifecycle`` tables), sorted by profile id; none when there is no previous snapshot."""
    if previous is None:
        return []
    earlier = previous.select(["profile_id", "stage"]).rename_columns(["profile_id", "previous_stage"])
    joined = (
        current.select(["profile_id", "stage", "since"])
        .join(earlier, "profile_id", join_type="left outer")
        .sort_by("profile_id")
    )
    changed = joined.filter(
        pc.or_kleene(
            pc.is_null(joined["previous_stage"]), pc.not_equal(joined["stage"], joined["previous_stage"])
        )
    )
    return [
        _change_event(
            STAGE_CHANGED,
            row["stage"],
            as_of,
            {
                "profile_id": row["profile_id"],
                "from_stage": row["previous_stage"],
                "to_stage": row["stage"],
                "since": row["since"],
            },
        )
        for row in changed.to_pylist()
    ]


def alert_changes(previous: pa.Table | None, current: pa.Table, as_of: datetime) -> list[dict[str, Any]]:
    """``health_alert_raised`` events for each alert in ``current`` that did not hold for the profile in
    ``previous`` (both are ``health`` tables), sorted by profile id, then in rule order."""
    held: dict[str, list[str]] = {}
    if previous is not None:
        held = {
            row["profile_id"]: row["alerts"]
            for row in _alerting(previous).select(["profile_id", "alerts"]).to_pylist()
        }
    events = []
    for row in _alerting(current).sort_by("profile_id").to_pylist():
        held_before = set(held.get(row["profile_id"], ()))
        for rule in row["alerts"]:
            if rule in held_before:
                continue
            payload = {
                "profile_id": row["profile_id"],
                "account": row["account"],
                "rule": rule,
                "score": row["score"],
                "status": row["status"],
                "factors": row["factors"],
            }
            events.append(_change_event(ALERT_RAISED, rule, as_of, payload))
    return events


def message(codec: EventCodec, event: dict[str, Any]) -> Message:
    """The log message of a change event, keyed by its profile id (all of a profile's changes in order)."""
    return codec.message(event, key=event["payload"]["profile_id"].encode())
