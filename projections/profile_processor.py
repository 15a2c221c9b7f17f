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

Two more kinds of record feed the segments (``projections/segments/``), and are not folded as
customer events: ``profile_scored`` (a snapshot's scores, kept in the profile's ``"scores"``) and
``segment_timer_fired`` (time passed). After each record the profile's segments and triggers are
evaluated (when any are defined) and their transitions emitted; stores ``segments`` and ``wakes``
hold the memberships and each profile's next time-window flip.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import orjson

from patron.identity.events import IDENTIFIER_LINKED, PROFILE_SPLIT, PROFILES_MERGED, identity_event_id
from patron.identity.resolver import micros
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
from patron.projections.segments.definitions import Definitions
from patron.projections.segments.engine import ALL_INPUTS, PROFILE_INPUT, SCORES_INPUT, SegmentEngine
from patron.projections.segments.timers import SEGMENT_TIMER_FIRED, due_timers, stale_profiles
from patron.projections.segments.topics import SEGMENTS_SOURCE
from patron.streams.processor import Emit
from patron.streams.state import scan_items
from patron.streams.topology import (
    ERASURE_SOURCE,
    IDENTITY_SOURCE,
    PROFILE_EVENTS_TOPIC,
    PROFILES_SOURCE,
    derived_event,
)

ERASURE_REQUESTED = "erasure_requested"

PROFILE_ABSORBED = "profile_absorbed"
PROFILE_SCORED = "profile_scored"
PROJECTIONS_SOURCE = "patron.projections"
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


def _for_segments(envelope: dict[str, Any]) -> bool:
    """Records that feed segment evaluation only: scores and timers."""
    kind = (envelope["source"], envelope["event_type"])
    return kind in ((PROJECTIONS_SOURCE, PROFILE_SCORED), (SEGMENTS_SOURCE, SEGMENT_TIMER_FIRED))


def _fold_scores(profile: Profile, key: str, payload: dict[str, Any]) -> None:
    """Keep the newest scores of this very profile (a split's new profile waits for the next snapshot)."""
    if payload["profile_id"] != key:
        return
    as_of = micros(payload["as_of"])
    current = profile.get("scores")
    if current is None or current["as_of"] <= as_of:
        scores = {name: value for name, value in payload.items() if name not in ("profile_id", "as_of")}
        profile["scores"] = {**scores, "as_of": as_of}


class ProfileProcessor:
    """Maintains one unified profile per profile id (processor ``profiles``, store ``profiles``)."""

    name = "profiles"
    inputs = (PROFILE_EVENTS_TOPIC,)
    stores = ("profiles", "segments", "wakes")

    def __init__(
        self,
        rules: ProfileRules | None = None,
        identity_rules: IdentityRules | None = None,
        definitions: Definitions | None = None,
    ):
        self.plan = (rules or load_profile_rules()).plan
        self.identity_plan = (identity_rules or default_rules()).plan
        self.segments = SegmentEngine(definitions) if definitions is not None else None
        self._checked_definitions = False

    def prefetch_keys(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """The profile a record is keyed by, and its segment state (see ``streams.processor.Prefetching``)."""
        key = event.get("_key")
        if not key:
            return []
        if self.segments is None:
            return [("profiles", key)]
        return [("profiles", key), ("segments", key), ("wakes", key)]

    def timers(self, stores: dict[str, MutableMapping[str, Any]], now: int) -> list[Emit]:
        """Timer records due at ``now`` (wall clock, microseconds): profiles whose time window flipped
        and, on the first call of a process, profiles not yet evaluated with the current definitions.
        Runners call this periodically and append what it returns (see ``projections/segments/timers.py``)."""
        if self.segments is None:
            return []
        emits = due_timers(scan_items(stores["wakes"]), now)
        if not self._checked_definitions:
            self._checked_definitions = True
            fingerprint = self.segments.definitions.fingerprint
            evaluated = {key: state.get("defs", "") for key, state in scan_items(stores["segments"])}
            due = {emit.key for emit in emits}
            emits += stale_profiles(
                (k for k in stores["profiles"] if k not in due), evaluated, fingerprint, now
            )
        return emits

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        key = event.get("_key")
        if not key:
            raise ValueError(
                f"record {event['envelope']['event_id']} on {PROFILE_EVENTS_TOPIC} has no key; "
                "records of that topic are keyed by profile id"
            )
        store = stores["profiles"]
        envelope = event["envelope"]
        if envelope["event_type"] == ERASURE_REQUESTED and envelope["source"] == ERASURE_SOURCE:
            return self._erase(stores, key, event)
        handovers = _Handovers(event)
        profile = store.get(key)
        if profile is None and _for_segments(envelope):
            return []  # scores or a timer of a profile this stage does not hold (yet): nothing to evaluate
        if profile is not None and "merged_into" in profile:
            if _for_segments(envelope):
                return []  # scores and timers of a merged-away profile: the survivor has its own
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
        if self.segments is not None:
            return handovers.emits + self._evaluate(stores, key, profile, survivor, event)
        return handovers.emits

    def _erase(
        self, stores: dict[str, MutableMapping[str, Any]], key: str, event: dict[str, Any]
    ) -> list[Emit]:
        """Forget profile ``key`` (GDPR erasure, see projections/erasure.py): its state, its wake-up, and
        its segment memberships, each left with reason "erased" so marketing tools forget it too."""
        stores["profiles"].pop(key, None)
        if self.segments is None:
            return []
        state = stores["segments"].pop(key, None)
        stores["wakes"].pop(key, None)
        at = micros(event["envelope"]["received_at"])
        return self.segments.leave_all(state, key, "erased", at, event["envelope"]["event_id"])

    def _evaluate(
        self,
        stores: dict[str, MutableMapping[str, Any]],
        key: str,
        profile: Profile,
        survivor: str | None,
        event: dict[str, Any],
    ) -> list[Emit]:
        """Segment transitions and trigger firings the record caused (see ``segments/engine.py``)."""
        assert self.segments is not None
        envelope, payload = event["envelope"], event["payload"]
        at = micros(envelope["received_at"])
        if envelope["event_type"] == SEGMENT_TIMER_FIRED and envelope["source"] == SEGMENTS_SOURCE:
            at = micros(payload["due_at"])
        segments, wakes = stores["segments"], stores["wakes"]
        if survivor is not None:
            state = segments.get(key)
            emits = self.segments.merged_away(state, key, survivor, at, envelope["event_id"])
            if state is not None:
                segments[key] = state
            wakes.pop(key, None)
            return emits
        changed = PROFILE_INPUT
        if envelope["event_type"] == PROFILE_SCORED and envelope["source"] == PROJECTIONS_SOURCE:
            changed = SCORES_INPUT
        elif envelope["event_type"] == SEGMENT_TIMER_FIRED and envelope["source"] == SEGMENTS_SOURCE:
            changed = ALL_INPUTS
        state, wake, emits = self.segments.evaluate(
            segments.get(key), key, profile, at, envelope["event_id"], changed
        )
        segments[key] = state
        if wake is None:
            wakes.pop(key, None)
        elif wakes.get(key) != wake:
            wakes[key] = wake
        return emits

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
        elif source == PROJECTIONS_SOURCE and event_type == PROFILE_SCORED:
            _fold_scores(profile, key, payload)
        elif source == SEGMENTS_SOURCE and event_type == SEGMENT_TIMER_FIRED:
            pass  # time passed: nothing to fold, the segments are evaluated at due_at
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
