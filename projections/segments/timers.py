"""Timer records: re-evaluate a profile when a time window flips, or when the definitions changed.

A condition such as "no login in the last 30 days" becomes true with no event at all. After each
evaluation the profiles stage stores the profile's next *flip* moment (store ``wakes``); a runner
periodically calls :func:`due_timers` with the wall clock and appends the returned
``segment_timer_fired`` records to ``patron.profile-events``. The stage then evaluates the profile
at the record's ``due_at``. So time enters the log as records, and a replay sees the same moments.

Cost: each tick reads the ``wakes`` store (one small integer per profile with a pending flip), and
only profiles that are due are re-evaluated: time-based evaluation scales with the profiles whose
windows flip, not with all profiles. After the definitions change, every profile is due once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from patron.identity.events import uuid5_text
from patron.projections.segments.engine import moment
from patron.projections.segments.topics import SEGMENTS_SOURCE
from patron.streams.processor import Emit
from patron.streams.topology import PROFILE_EVENTS_TOPIC, derived_event

SEGMENT_TIMER_FIRED = "segment_timer_fired"
WINDOW, DEFINITIONS = "window", "definitions"
TIMER_NAMESPACE = uuid.UUID("c3a1f6e2-0b7d-5e49-9a8c-f2d4e6b81a07")


def timer_record(profile_id: str, due_at: int, why: str, tag: str) -> Emit:
    """A ``segment_timer_fired`` record for ``profile_id`` to evaluate at ``due_at`` (the tick's
    moment: every flip up to then applies at once). Its id is derived from (profile, why, tag), tag
    being the flip moment or the definitions fingerprint, so a flip is appended once however often
    the runner ticks before the stage has processed it."""
    at = moment(due_at)
    event = derived_event(
        uuid5_text(TIMER_NAMESPACE, f"{profile_id}:{why}:{tag}"),
        SEGMENT_TIMER_FIRED,
        source=SEGMENTS_SOURCE,
        occurred_at=at,
        received_at=at,
        payload={"profile_id": profile_id, "due_at": at, "why": why},
    )
    return Emit(PROFILE_EVENTS_TOPIC, event, key=profile_id)


def due_timers(wakes: Iterable[tuple[str, int]], now: int) -> list[Emit]:
    """Timer records for the profiles whose next flip moment is at or before ``now``."""
    return [timer_record(key, now, WINDOW, str(wake)) for key, wake in wakes if wake <= now]


def stale_profiles(
    profiles: Iterable[str], evaluated_with: dict[str, str], fingerprint: str, now: int
) -> list[Emit]:
    """Timer records for every profile not yet evaluated with the definitions ``fingerprint``."""
    return [
        timer_record(key, now, DEFINITIONS, fingerprint)
        for key in profiles
        if evaluated_with.get(key) != fingerprint
    ]
