"""The profile projection as a stream ``Processor``: folds ``patron.profile-events`` into profiles.

Records arrive keyed by profile id (the runner passes the key as ``event["_key"]``):

* a source event: folded into the part of its anchor (see ``projections/profiles.py``);
* ``identifier_linked`` (identity stage): the identifiers join the profile;
* ``profiles_merged`` keyed by the *merged* profile: its state is handed to the survivor as a
  ``profile_absorbed`` record keyed by the survivor, and a tombstone ``{"merged_into": survivor}``
  stays behind;
* ``profile_split`` keyed by the split profile: the moved identifiers and the parts anchored on them
  are handed to the new profile the same way (no replay needed: the parts *are* what their events
  contributed);
* ``profile_absorbed``: the handed state is merged in (order-independent), except identifiers a
  split already moved on, which are passed on to where they went.

Anything that reaches a tombstone is handed on to the profile it was merged into, so a record that
races with a merge still ends up in the right profile.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson

from patron.identity.events import IDENTIFIER_LINKED, PROFILE_SPLIT, PROFILES_MERGED, identity_event_id
from patron.identity.rules import IdentityRules, default_rules
from patron.projections.profile_rules import ProfileRules, load_profile_rules
from patron.projections.profiles import (
    Profile,
    add_identifiers,
    anchor_of,
    fold_event,
    merge_profile,
    new_part,
    new_profile,
    remember,
    take,
)
from patron.streams.processor import Emit
from patron.streams.topology import IDENTITY_SOURCE, PROFILE_EVENTS_TOPIC, PROFILES_SOURCE, derived_event

PROFILE_ABSORBED = "profile_absorbed"
UNANCHORED = "-"
"""The part of events without a usable identifier (the identity stage does not forward such events;
kept so a hand-built record is still counted rather than refused)."""


def _pairs(listed: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(item["kind"], item["value"]) for item in listed]


class _Handovers:
    """``profile_absorbed`` records caused by one input record, numbered for deterministic ids."""

    def __init__(self, cause: dict[str, Any]):
        self.cause = cause["envelope"]
        self.emits: list[Emit] = []

    def give(self, receiver: str, giver: str, state: Profile) -> None:
        cause_id = self.cause["event_id"]
        handed = {name: state[name] for name in ("ids", "parts", "keys", "moved")}
        event = derived_event(
            identity_event_id(cause_id, PROFILE_ABSORBED, len(self.emits)),
            PROFILE_ABSORBED,
            source=PROFILES_SOURCE,
            occurred_at=self.cause["occurred_at"],
            received_at=self.cause["received_at"],
            payload={
                "cause_event_id": cause_id,
                "profile_id": receiver,
                "absorbed_profile_id": giver,
                "state": orjson.dumps(handed).decode(),
            },
        )
        self.emits.append(Emit(PROFILE_EVENTS_TOPIC, event, key=receiver))


class ProfileProcessor:
    """Maintains one unified profile per profile id (processor ``profiles``, store ``profiles``)."""

    name = "profiles"
    inputs = (PROFILE_EVENTS_TOPIC,)
    stores = ("profiles",)

    def __init__(self, rules: ProfileRules | None = None, identity_rules: IdentityRules | None = None):
        self.plan = (rules or load_profile_rules()).plan
        self.identity_plan = (identity_rules or default_rules()).plan

    def prefetch_keys(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """The profile a record is keyed by (see ``streams.processor.Prefetching``)."""
        key = event.get("_key")
        return [("profiles", key)] if key else []

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        key = event.get("_key")
        if not key:
            raise ValueError(
                f"record {event['envelope']['event_id']} on {PROFILE_EVENTS_TOPIC} has no key; "
                "records of that topic are keyed by profile id"
            )
        store = stores["profiles"]
        handovers = _Handovers(event)
        profile = store.get(key)
        if profile is not None and "merged_into" in profile:
            scratch = new_profile(key)
            self._apply(scratch, key, event, handovers)
            if scratch["ids"] or scratch["parts"] or scratch["moved"]:
                handovers.give(profile["merged_into"], key, scratch)
            return handovers.emits
        profile = profile if profile is not None else new_profile(key)
        if not remember(profile, event["envelope"]["event_id"]):
            return []
        survivor = self._apply(profile, key, event, handovers)
        store[key] = profile if survivor is None else {"merged_into": survivor}
        return handovers.emits

    def _apply(self, profile: Profile, key: str, event: dict[str, Any], handovers: _Handovers) -> str | None:
        """Fold one record into ``profile``; returns the survivor when the profile was merged away."""
        envelope, payload = event["envelope"], event["payload"]
        event_type, source = envelope["event_type"], envelope["source"]
        if source == IDENTITY_SOURCE and event_type == IDENTIFIER_LINKED:
            add_identifiers(profile, _pairs(payload["identifiers"]))
        elif source == IDENTITY_SOURCE and event_type == PROFILES_MERGED:
            add_identifiers(profile, _pairs(payload["identifiers"]))
            handovers.give(payload["profile_id"], key, profile)
            return str(payload["profile_id"])
        elif source == IDENTITY_SOURCE and event_type == PROFILE_SPLIT:
            moved = {f"{kind}:{value}" for kind, value in _pairs(payload["identifiers"])}
            receiver = payload["new_profile_id"]
            handovers.give(receiver, key, take(profile, moved, receiver))
        elif source == PROFILES_SOURCE and event_type == PROFILE_ABSORBED:
            handed = orjson.loads(payload["state"])
            self._pass_on_moved(profile, key, handed, handovers)
            merge_profile(profile, handed, self.plan)
        else:
            anchor = anchor_of(envelope["identifiers"], self.identity_plan) or UNANCHORED
            part = profile["parts"].get(anchor)
            if part is None:
                part = profile["parts"][anchor] = new_part()
            fold_event(part, event, self.plan)
        return None

    @staticmethod
    def _pass_on_moved(profile: Profile, key: str, handed: Profile, handovers: _Handovers) -> None:
        """Hand on what a split already moved away from this profile (a hand-over that raced the split)."""
        moved = profile["moved"]
        if not moved:
            return
        held = {f"{kind}:{v}" for kind, values in handed["ids"].items() for v in values} | set(
            handed["parts"]
        )
        by_receiver: dict[str, set[str]] = {}
        for identifier in sorted(held & moved.keys()):
            by_receiver.setdefault(moved[identifier], set()).add(identifier)
        for receiver, identifiers in sorted(by_receiver.items()):
            handovers.give(receiver, key, take(handed, identifiers, receiver))
