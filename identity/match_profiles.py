"""The matcher's adapter to the committed profiles: records to compare, where merged ids went, and
the identifiers a merge request names.

Reads what ``patron run`` committed on the embedded log (through ``ProfileReader``), so it sees
one consistent commit even while the runner writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patron.errors import PatronError
from patron.identity.events import Identifier
from patron.identity.match_records import MatchRecord, record_from_summary
from patron.identity.match_rules import MatchRules
from patron.projections.profile_reader import ProfileReader
from patron.projections.profile_rules import ProfilePlan
from patron.projections.profiles import summary

MAX_HOPS = 1000
CLEAR_EVERY = 10_000
"""Profiles read between clearing the reader's cache (a full scan would otherwise keep every one)."""


@dataclass
class ProfileSet:
    """Every live profile as a match record, and the tombstones of merged ones."""

    records: list[MatchRecord] = field(default_factory=list)
    merged_into: dict[str, str] = field(default_factory=dict)

    def live_of(self, profile_id: str) -> str:
        """The live profile ``profile_id`` was merged into (itself when it is live)."""
        hops = 0
        while profile_id in self.merged_into and hops < MAX_HOPS:
            profile_id = self.merged_into[profile_id]
            hops += 1
        return profile_id


def read_profiles(
    reader: ProfileReader, rules: MatchRules, plan: ProfilePlan, progress: Callable[[int], None] | None = None
) -> ProfileSet:
    """All committed profiles of the reader's log, in profile id order."""
    found = ProfileSet()
    store = reader.profiles
    unreported = 0
    for profile_id in store:
        state: dict[str, Any] = store[profile_id]
        if "merged_into" in state:
            found.merged_into[profile_id] = state["merged_into"]
        else:
            found.records.append(record_from_summary(summary(profile_id, state, plan), rules))
        unreported += 1
        if unreported == CLEAR_EVERY:
            store.clear_cache()
            if progress is not None:
                progress(unreported)
            unreported = 0
    if progress is not None:
        progress(unreported)
    return found


def request_identifier(reader: ProfileReader, profile_id: str) -> Identifier:
    """The identifier a merge request names for a live profile: its highest-priority one in the identity graph."""
    entry = reader.identity_profile(profile_id)
    if entry is None or not entry["ids"]:
        raise PatronError(
            f"profile {profile_id} is not in the identity graph (merged or split meanwhile?); "
            "run `patron run` and `patron identity match` again"
        )
    plan = reader.identity_plan
    kind = min(entry["ids"], key=lambda k: (plan.rank(k), k))
    return kind, entry["ids"][kind][0]
