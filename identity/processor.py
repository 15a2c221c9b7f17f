"""The identity stage as a stream ``Processor``: the pure identity core over key-value stores.

The core (``resolve``, ``split``, ``apply``) works on an :class:`IdentityState` of plain dicts. A
million-profile graph rewritten as one blob per batch would cost the whole graph per commit, so
here the state's containers are views over the runner's stores, one key per identifier, profile
and split partner; a batch commits only the keys its events touched:

* ``identifiers``: ``"kind:value"`` -> profile id (the core's ``index``);
* ``profiles``: profile id -> ``{"first_seen", "ids", "origins"}`` (the core's ``profiles``);
* ``splits``: ``"kind:value"`` -> identifiers an operator split it from (the core's ``splits``);
* ``blocked``: blocklisted identifiers already reported (the core's ``blocked``).

The core changes a graph only through ``apply`` with an identity event it emits, so an event that
emits nothing changed nothing: only then are the values it read written back (most events take
the resolver's hot path, a few store reads and no writes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from patron.errors import PatronError
from patron.identity.events import (
    IDENTIFIER_BLOCKED,
    IDENTIFIER_LINKED,
    MERGE_REFUSED,
    PROFILE_CREATED,
    PROFILE_SPLIT,
    PROFILES_MERGED,
    Identifier,
    IdentityEvent,
    identity_event_id,
    uuid5_text,
)
from patron.identity.merge import merge
from patron.identity.resolver import SPLIT_REASON, resolve
from patron.identity.rules import BASE_KINDS, EXTERNAL, IdentityRules, default_rules
from patron.identity.split import split
from patron.identity.state import IdentityState, identifier_key
from patron.streams.log import EVENTS_TOPIC
from patron.streams.processor import Emit
from patron.streams.topology import (
    IDENTITY_SOURCE,
    IDENTITY_TOPIC,
    NO_CONTEXT,
    NO_IDENTIFIERS,
    OPERATOR_SOURCE,
    PROFILE_EVENTS_TOPIC,
    derived_event,
)

Store = MutableMapping[str, Any]
SPLITS_MARKER = ""
"""A key no identifier can have; present in ``splits`` once any split exists, so the resolver's
"are there splits at all?" check stays one lookup."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Profiles:
    """The core's ``profiles`` dict over a store: values read during one event are kept, so the
    core's in-place edits land on one object, written back by ``flush``."""

    __slots__ = ("_removed", "_seen", "_store")

    def __init__(self, store: Store):
        self._store = store
        self._seen: dict[str, Any] = {}
        self._removed: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._seen:
            return self._seen[key]
        if key in self._removed:
            return default
        value = self._store.get(key)
        if value is None:
            return default
        self._seen[key] = value
        return value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._seen[key] = value
        self._removed.discard(key)

    def pop(self, key: str) -> Any:
        value = self[key]
        del self._seen[key]
        self._removed.add(key)
        return value

    def flush(self) -> None:
        for key in self._removed:
            self._store.pop(key, None)
        for key, value in self._seen.items():
            self._store[key] = value


class _Splits:
    """The core's ``splits`` (identifier -> set of identifiers) over a store of sorted lists."""

    __slots__ = ("_seen", "_store")

    def __init__(self, store: Store):
        self._store = store
        self._seen: dict[str, set[str]] = {}

    def __bool__(self) -> bool:
        return bool(self._seen) or SPLITS_MARKER in self._store

    def get(self, key: str, default: Any = None) -> Any:
        if key in self._seen:
            return self._seen[key]
        value = self._store.get(key)
        return default if value is None else set(value)

    def setdefault(self, key: str, default: set[str]) -> set[str]:
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = set(self._store.get(key) or default)
        return found

    def flush(self) -> None:
        for key, partners in self._seen.items():
            self._store[key] = sorted(partners)
        if self._seen:
            self._store[SPLITS_MARKER] = True


class _Blocked:
    """The core's ``blocked`` set over a store (key -> True)."""

    __slots__ = ("_store",)

    def __init__(self, store: Store):
        self._store = store

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def add(self, key: str) -> None:
        self._store[key] = True


class _Graph:
    """An :class:`IdentityState` whose containers are store views, for the events of one ``process`` call."""

    def __init__(self, stores: dict[str, Store]):
        self.profiles = _Profiles(stores["profiles"])
        self.splits = _Splits(stores["splits"])
        self.state = IdentityState.__new__(IdentityState)
        # The core only uses the container operations the views provide (see their docstrings).
        self.state.index = stores["identifiers"]  # type: ignore[assignment]
        self.state.profiles = self.profiles  # type: ignore[assignment]
        self.state.splits = self.splits  # type: ignore[assignment]
        self.state.blocked = _Blocked(stores["blocked"])  # type: ignore[assignment]

    def flush(self) -> None:
        self.profiles.flush()
        self.splits.flush()


def _envelope_identifiers(identifiers: tuple[Identifier, ...]) -> dict[str, Any]:
    """The first identifier of each kind in the envelope's one-per-kind record (the payload lists all)."""
    found: dict[str, Any] = {**NO_IDENTIFIERS, "external_ids": {}}
    for kind, value in identifiers:
        if kind in BASE_KINDS:
            found[kind] = found[kind] or value
        elif kind.startswith(EXTERNAL):
            found["external_ids"].setdefault(kind[len(EXTERNAL) :], value)
    return found


def _listed(identifiers: tuple[Identifier, ...]) -> list[dict[str, str]]:
    return [{"kind": kind, "value": value} for kind, value in identifiers]


def _payload(event: IdentityEvent) -> tuple[str, dict[str, Any]]:
    """(event type, Avro payload) of an identity event."""
    common = {"cause_event_id": event.cause_id, "identifiers": _listed(event.identifiers)}
    if event.kind in (PROFILE_CREATED, IDENTIFIER_LINKED):
        return IDENTIFIER_LINKED, {
            **common,
            "profile_id": event.profile_id,
            "created": event.kind == PROFILE_CREATED,
        }
    if event.kind == PROFILES_MERGED:
        return PROFILES_MERGED, {
            **common,
            "profile_id": event.profile_id,
            "merged_profile_id": event.other_profile_id,
        }
    if event.kind == MERGE_REFUSED:
        return MERGE_REFUSED, {
            **common,
            "profile_id": event.profile_id,
            "other_profile_id": event.other_profile_id,
            "conflicts": _listed(event.conflicts),
            "reason": event.reason,
        }
    if event.kind == PROFILE_SPLIT:
        return PROFILE_SPLIT, {
            **common,
            "profile_id": event.profile_id,
            "new_profile_id": event.other_profile_id,
            "reason": event.reason,
            "error": None,
        }
    return IDENTIFIER_BLOCKED, {**common, "reason": event.reason}


def split_request(
    profile_id: str, identifier: Identifier, reason: str | None, *, at: datetime
) -> dict[str, Any]:
    """An operator's request to split ``identifier`` off ``profile_id``, as an event for ``patron.events``.

    Its id is new (uuid4): every request is a new operator decision, and it names the split's new
    profile, so replaying the log replays the same split with the same outcome.
    """
    kind, value = identifier
    identifiers = _envelope_identifiers((identifier,))
    return {
        "envelope": {
            "event_id": str(uuid.uuid4()),
            "event_type": PROFILE_SPLIT,
            "occurred_at": at,
            "received_at": at,
            "source": OPERATOR_SOURCE,
            "identifiers": identifiers,
            "context": dict(NO_CONTEXT),
        },
        "payload": {
            "cause_event_id": None,
            "profile_id": profile_id,
            "identifiers": [{"kind": kind, "value": value}],
            "reason": reason,
            "new_profile_id": None,
            "error": None,
        },
    }


def is_split_request(event: dict[str, Any]) -> bool:
    """An operator's ``profile_split`` request on ``patron.events`` (as ``patron identity split`` appends)."""
    envelope = event["envelope"]
    return envelope["event_type"] == PROFILE_SPLIT and envelope["source"] == OPERATOR_SOURCE


MERGE_REQUEST_NAMESPACE = uuid.UUID("3c1f7a52-9e4b-5d08-8f6a-2b7d90e4c615")


def merge_request(
    decision: str, profile_ids: tuple[str, str], identifiers: tuple[Identifier, Identifier], *, at: datetime
) -> dict[str, Any]:
    """A request to merge two profiles (a matcher's or an operator's decision), as an event for ``patron.events``.

    ``decision`` names what decided it (e.g. the review pair id); the request id is derived from
    it, so asking twice for the same decision appends one request (the log drops the repeat).
    ``identifiers`` name one identifier of each profile: the identity stage merges wherever they
    are when it applies the request (see ``identity/merge.py``).
    """
    return {
        "envelope": {
            "event_id": uuid5_text(MERGE_REQUEST_NAMESPACE, decision),
            "event_type": PROFILES_MERGED,
            "occurred_at": at,
            "received_at": at,
            "source": OPERATOR_SOURCE,
            "identifiers": _envelope_identifiers(identifiers),
            "context": dict(NO_CONTEXT),
        },
        "payload": {
            "cause_event_id": decision,
            "profile_id": profile_ids[0],
            "merged_profile_id": profile_ids[1],
            "identifiers": _listed(identifiers),
        },
    }


def is_merge_request(event: dict[str, Any]) -> bool:
    """A ``profiles_merged`` request on ``patron.events`` (as ``patron identity match|review`` append)."""
    envelope = event["envelope"]
    return envelope["event_type"] == PROFILES_MERGED and envelope["source"] == OPERATOR_SOURCE


class IdentityProcessor:
    """Resolves every source event to a profile and applies split and merge requests (processor ``identity``).

    Emits, per topology.md: each identity event to ``patron.identity`` keyed by its profile; links
    and splits keyed by their profile, and merges keyed by the merged profile, to
    ``patron.profile-events`` (the projection needs them); and the source event itself, unchanged,
    to ``patron.profile-events`` keyed by its profile. An event with no usable identifier belongs to
    no profile and is not forwarded (it stays in ``patron.events``; blocked identifiers are reported).
    """

    name = "identity"
    inputs = (EVENTS_TOPIC,)
    total_order = True
    """Resolution needs one order over all events (a merge spans partitions): on Kafka the runner
    feeds this processor through the 1-partition ``patron.identity-input``."""
    stores = ("identifiers", "profiles", "splits", "blocked")

    def __init__(self, rules: IdentityRules | None = None):
        self.rules = rules or default_rules()

    def prefetch_keys(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """The index keys of the event's identifiers (see ``streams.processor.Prefetching``): what
        resolution looks up first; most are new while a graph grows, and a miss is as dear as a hit."""
        found = event["envelope"]["identifiers"]
        keys = [("identifiers", identifier_key(kind, found[kind])) for kind in BASE_KINDS if found.get(kind)]
        for name, value in (found.get("external_ids") or {}).items():
            if value:
                keys.append(("identifiers", identifier_key(EXTERNAL + name, value)))
        return keys

    def process(self, stores: dict[str, MutableMapping[str, Any]], event: dict[str, Any]) -> list[Emit]:
        graph = _Graph(stores)
        source_event = {"envelope": event["envelope"], "payload": event["payload"]}
        if is_split_request(source_event):
            return self._split(graph, source_event)
        if is_merge_request(source_event):
            return self._merge(graph, source_event)
        _, identity_events, profile_id = resolve(graph.state, source_event, self.rules)
        if identity_events:
            graph.flush()
        emits = list(self._emits(identity_events, source_event["envelope"]))
        if profile_id is not None:
            emits.append(Emit(PROFILE_EVENTS_TOPIC, source_event, key=profile_id))
        return emits

    def _split(self, graph: _Graph, request: dict[str, Any]) -> list[Emit]:
        envelope, payload = request["envelope"], request["payload"]
        request_id = envelope["event_id"]
        named = payload["identifiers"][:1]
        try:
            if not named:
                raise PatronError(f"split {request_id}: the request names no identifier to split off")
            identifier = (named[0]["kind"], named[0]["value"])
            _, identity_events = split(
                graph.state,
                payload["profile_id"],
                identifier,
                self.rules,
                request_id=request_id,
                at=envelope["occurred_at"],
                reason=payload.get("reason") or SPLIT_REASON,
            )
        except PatronError as exc:
            refusal = {**payload, "cause_event_id": request_id, "new_profile_id": None, "error": str(exc)}
            return self._refusal(envelope, PROFILE_SPLIT, refusal, key=payload["profile_id"])
        graph.flush()
        return list(self._emits(identity_events, envelope))

    def _merge(self, graph: _Graph, request: dict[str, Any]) -> list[Emit]:
        envelope, payload = request["envelope"], request["payload"]
        request_id = envelope["event_id"]
        named = [(item["kind"], item["value"]) for item in payload["identifiers"]]
        try:
            if len(named) != 2:
                raise PatronError(
                    f"merge {request_id}: the request names {len(named)} identifiers; it needs one per profile"
                )
            _, identity_events = merge(
                graph.state, (named[0], named[1]), request_id=request_id, at=envelope["occurred_at"]
            )
        except PatronError as exc:
            refusal = {
                "cause_event_id": request_id,
                "profile_id": payload["profile_id"],
                "other_profile_id": payload["merged_profile_id"],
                "identifiers": payload["identifiers"],
                "conflicts": [],
                "reason": str(exc),
            }
            return self._refusal(envelope, MERGE_REFUSED, refusal, key=payload["profile_id"])
        graph.flush()
        return list(self._emits(identity_events, envelope))

    @staticmethod
    def _refusal(envelope: dict[str, Any], event_type: str, payload: dict[str, Any], key: str) -> list[Emit]:
        """A refused operator request still gets an answer on the identity topic, saying why."""
        event = derived_event(
            identity_event_id(envelope["event_id"], event_type, 0),
            event_type,
            source=IDENTITY_SOURCE,
            occurred_at=envelope["occurred_at"],
            received_at=envelope["received_at"],
            payload=payload,
            identifiers=envelope["identifiers"],
        )
        return [Emit(IDENTITY_TOPIC, event, key=key)]

    @staticmethod
    def _emits(identity_events: list[IdentityEvent], cause: dict[str, Any]) -> Iterator[Emit]:
        for identity_event in identity_events:
            event_type, payload = _payload(identity_event)
            event = derived_event(
                identity_event.event_id,
                event_type,
                source=IDENTITY_SOURCE,
                occurred_at=EPOCH + timedelta(microseconds=identity_event.occurred_at),
                received_at=cause["received_at"],
                payload=payload,
                identifiers=_envelope_identifiers(identity_event.identifiers),
            )
            yield Emit(IDENTITY_TOPIC, event, key=identity_event.profile_id)
            if event_type in (IDENTIFIER_LINKED, PROFILE_SPLIT):
                yield Emit(PROFILE_EVENTS_TOPIC, event, key=identity_event.profile_id)
            elif event_type == PROFILES_MERGED:
                yield Emit(PROFILE_EVENTS_TOPIC, event, key=identity_event.other_profile_id)
