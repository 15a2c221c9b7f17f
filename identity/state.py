"""The identity graph as plain dicts, and ``apply``: the one place that changes it.

The resolver and the splitter only *decide*; every change they make goes through ``apply`` with
the identity event that records it. That makes "rebuild from the identity events" equal to "resolve
the source events" by construction rather than by a second, parallel implementation.

Layout (all plain Python containers, so the per-event path is dict lookups and a snapshot is one
orjson call):

* ``index``: ``"kind:value"`` -> profile id, for every identifier ever linked;
* ``profiles``: profile id -> ``{"first_seen": µs, "ids": {kind: [values in link order]},
  "origins": {origin profile id: {"first_seen": µs, "keys": ["kind:value", ...]}}}``. ``origins``
  groups identifiers by the profile they first joined, which is what ``split`` undoes;
* ``splits``: ``"kind:value"`` -> set of ``"kind:value"`` an operator separated it from (symmetric);
* ``blocked``: blocklisted identifiers already reported, so each is reported once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from patron.identity.events import (
    IDENTIFIER_BLOCKED,
    IDENTIFIER_LINKED,
    MERGE_REFUSED,
    PROFILE_CREATED,
    PROFILE_SPLIT,
    PROFILES_MERGED,
    IdentityEvent,
)

SNAPSHOT_VERSION = 1
Profile = dict[str, Any]


def identifier_key(kind: str, value: str) -> str:
    return f"{kind}:{value}"


class IdentityState:
    """The identity graph; ``resolve``, ``split`` and ``apply`` change it in place."""

    __slots__ = ("blocked", "index", "profiles", "splits")

    def __init__(self) -> None:
        self.index: dict[str, str] = {}
        self.profiles: dict[str, Profile] = {}
        self.splits: dict[str, set[str]] = {}
        self.blocked: set[str] = set()

    def profile_of(self, kind: str, value: str) -> str | None:
        """The profile holding the identifier, or None when it was never linked."""
        return self.index.get(identifier_key(kind, value))

    def identifiers(self, profile_id: str) -> dict[str, list[str]]:
        """The profile's identifiers by kind, in the order they joined."""
        return self.profiles[profile_id]["ids"]

    def to_bytes(self) -> bytes:
        """A snapshot. ``index`` is left out: it is derived from ``profiles`` on load."""
        return orjson.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "profiles": self.profiles,
                "splits": {key: sorted(partners) for key, partners in self.splits.items()},
                "blocked": sorted(self.blocked),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IdentityState:
        snapshot = orjson.loads(data)
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(
                f"identity snapshot version {snapshot.get('version')!r} is not {SNAPSHOT_VERSION}; "
                "rebuild the state from the identity events"
            )
        state = cls()
        state.profiles = snapshot["profiles"]
        for profile_id, profile in state.profiles.items():
            for kind, values in profile["ids"].items():
                for value in values:
                    state.index[identifier_key(kind, value)] = profile_id
        state.splits = {key: set(partners) for key, partners in snapshot["splits"].items()}
        state.blocked = set(snapshot["blocked"])
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdentityState):
            return NotImplemented
        return (
            self.index == other.index
            and self.profiles == other.profiles
            and self.splits == other.splits
            and self.blocked == other.blocked
        )

    __hash__ = None  # type: ignore[assignment]  # mutable


def _attach(state: IdentityState, profile_id: str, kind: str, value: str, origin: str, at: int) -> None:
    key = identifier_key(kind, value)
    profile = state.profiles[profile_id]
    profile["ids"].setdefault(kind, []).append(value)
    part = profile["origins"].get(origin)
    if part is None:
        part = profile["origins"][origin] = {"first_seen": at, "keys": []}
    part["keys"].append(key)
    state.index[key] = profile_id


def _new_profile(state: IdentityState, profile_id: str, first_seen: int) -> None:
    state.profiles[profile_id] = {"first_seen": first_seen, "ids": {}, "origins": {}}


def _blocked(state: IdentityState, event: IdentityEvent) -> None:
    kind, value = event.identifiers[0]
    state.blocked.add(identifier_key(kind, value))


def _created(state: IdentityState, event: IdentityEvent) -> None:
    profile_id = event.profile_id
    assert profile_id is not None
    _new_profile(state, profile_id, event.occurred_at)
    for kind, value in event.identifiers:
        _attach(state, profile_id, kind, value, profile_id, event.occurred_at)


def _linked(state: IdentityState, event: IdentityEvent) -> None:
    profile_id = event.profile_id
    assert profile_id is not None
    for kind, value in event.identifiers:
        _attach(state, profile_id, kind, value, profile_id, event.occurred_at)


def _merged(state: IdentityState, event: IdentityEvent) -> None:
    survivor_id, merged_id = event.profile_id, event.other_profile_id
    assert survivor_id is not None and merged_id is not None
    survivor = state.profiles[survivor_id]
    merged = state.profiles.pop(merged_id)
    ids = survivor["ids"]
    for kind, values in merged["ids"].items():
        ids.setdefault(kind, []).extend(values)
        for value in values:
            state.index[identifier_key(kind, value)] = survivor_id
    # Origin groups stay whole: an origin is a profile id, and only that profile ever starts its group.
    survivor["origins"].update(merged["origins"])
    survivor["first_seen"] = min(survivor["first_seen"], merged["first_seen"])


def _refused(state: IdentityState, event: IdentityEvent) -> None:
    """A refusal changes nothing: the identifier it left out simply stays where it was (or unknown)."""


def _split(state: IdentityState, event: IdentityEvent) -> None:
    source_id, target_id = event.profile_id, event.other_profile_id
    assert source_id is not None and target_id is not None
    source = state.profiles[source_id]
    moved = [identifier_key(kind, value) for kind, value in event.identifiers]
    moving = set(moved)
    first_seen = next(p["first_seen"] for p in source["origins"].values() if moved[0] in p["keys"])
    for kind, value in event.identifiers:
        source["ids"][kind].remove(value)
        if not source["ids"][kind]:
            del source["ids"][kind]
    for origin in list(source["origins"]):
        keys = [key for key in source["origins"][origin]["keys"] if key not in moving]
        if keys:
            source["origins"][origin]["keys"] = keys
        else:
            del source["origins"][origin]
    _new_profile(state, target_id, first_seen)
    for kind, value in event.identifiers:
        _attach(state, target_id, kind, value, target_id, first_seen)
    named = moved[0]
    for origin in source["origins"].values():
        for key in origin["keys"]:
            state.splits.setdefault(named, set()).add(key)
            state.splits.setdefault(key, set()).add(named)


APPLY: dict[str, Callable[[IdentityState, IdentityEvent], None]] = {
    IDENTIFIER_BLOCKED: _blocked,
    PROFILE_CREATED: _created,
    IDENTIFIER_LINKED: _linked,
    PROFILES_MERGED: _merged,
    MERGE_REFUSED: _refused,
    PROFILE_SPLIT: _split,
}


def apply(state: IdentityState, event: IdentityEvent) -> IdentityState:
    """Fold one identity event into ``state`` (in place; returned for chaining)."""
    APPLY[event.kind](state, event)
    return state


def rebuild(events: Iterable[IdentityEvent], state: IdentityState | None = None) -> IdentityState:
    """The state the identity events describe, e.g. after losing a snapshot."""
    state = state if state is not None else IdentityState()
    for event in events:
        APPLY[event.kind](state, event)
    return state
