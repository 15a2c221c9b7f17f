"""Deterministic identity resolution: which profile an event belongs to, and how the graph changes.

``resolve(state, event, rules)`` is a pure fold step: the same events in the same order give the same
state, the same identity events (ids included) and the same answers. Nothing reads a clock, a random
source or the iteration order of a set.

How one event is resolved:

1. Take its identifiers (and, for ``alias``, ``payload.previous_id``: a ``user_id`` if already known as
   one, else an ``anonymous_id``) of the kinds the rules let link;
   ignore blocklisted values (reported once each as ``identifier_blocked``).
2. Walk them from highest to lowest priority, growing one *cluster*: a known identifier brings its
   whole profile, an unknown one itself. An addition that would give the cluster more identifiers of
   some kind than the rules' limit (two user ids), or reunite identifiers an operator split apart,
   is refused (``merge_refused``) and left out; because the walk goes by priority, the identifier left
   out is always the lower-priority one, and the highest-priority identifier is never refused.
3. No known profile in the cluster: a new profile named uuid5(namespace, "kind:value" of the highest-
   priority identifier) is created. Otherwise the profile first seen earliest (event time; ties: the
   smaller id) survives, the others are merged into it (``profiles_merged``), and the unknown
   identifiers join it (``identifier_linked``).

The event belongs to the resulting profile, which always holds its highest-priority usable identifier.
An event with no usable identifier (none, or only blocklisted ones) belongs to no profile: ``None``.

Hot path: an event whose identifiers are all known and in one profile (most events) costs a few dict
lookups and emits nothing; all bookkeeping lives in the rarer slow path.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from patron.identity.events import (
    IDENTIFIER_BLOCKED,
    IDENTIFIER_LINKED,
    MERGE_REFUSED,
    PROFILE_CREATED,
    PROFILES_MERGED,
    Identifier,
    IdentityEvent,
    identity_event_id,
    uuid5_text,
)
from patron.identity.rules import EXTERNAL, IdentityRules, RulePlan
from patron.identity.state import IdentityState, apply, identifier_key

ALIAS = "alias"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SPLIT_REASON = "split by operator"

# (rank, kind, value, key): one usable identifier of the event being resolved.
Candidate = tuple[float, str, str, str]


def micros(moment: datetime | int) -> int:
    """Event time as integer microseconds since the epoch (exact, unlike ``timestamp() * 1e6``)."""
    if isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // MICROSECOND


def profile_id_for(plan: RulePlan, kind: str, value: str) -> str:
    return uuid5_text(plan.namespace, identifier_key(kind, value))


class _Output:
    """Identity events of one cause, applied to the state as they are emitted; numbers them for their ids."""

    __slots__ = ("at", "cause_id", "events", "state")

    def __init__(self, state: IdentityState, cause_id: str, at: datetime | int):
        self.state = state
        self.cause_id = cause_id
        self.at = micros(at)
        self.events: list[IdentityEvent] = []

    def emit(self, kind: str, **fields: Any) -> None:
        event_id = identity_event_id(self.cause_id, kind, len(self.events))
        event = IdentityEvent(event_id, kind, self.cause_id, self.at, **fields)
        self.events.append(event)
        apply(self.state, event)


def _candidates(
    state: IdentityState, event: dict[str, Any], plan: RulePlan
) -> tuple[list[Candidate], list[tuple[str, str, str]]]:
    """The event's usable identifiers by priority, and its newly seen blocklisted ones (kind, value, reason)."""
    envelope = event["envelope"]
    found = envelope["identifiers"]
    usable: list[Candidate] = []
    blocked: list[tuple[str, str, str]] = []
    blocked_any, blocked_by_kind = plan.blocked_any, plan.blocked
    for kind, rank in plan.base:
        value = found.get(kind)
        if value:
            text = value.strip().lower()
            if text in blocked_any or text in blocked_by_kind.get(kind, ()):
                blocked.append((kind, value, ""))
            else:
                usable.append((rank, kind, value, f"{kind}:{value}"))
    externals = found.get("external_ids")
    reorder = False
    if externals:
        for name, value in sorted(externals.items()):
            if not value:
                continue
            kind = EXTERNAL + name
            if ":" in name:
                blocked.append(
                    (kind, value, f"external id name {name!r} contains ':', which identity keys reserve")
                )
                continue
            rank, _, _, links = plan.external(kind)
            if not links:
                continue
            if plan.is_blocked(kind, value):
                blocked.append((kind, value, ""))
            else:
                usable.append((rank, kind, value, f"{kind}:{value}"))
                reorder = True
    if envelope["event_type"] == ALIAS:
        previous = (event.get("payload") or {}).get("previous_id")
        if previous:
            kind = "user_id" if f"user_id:{previous}" in state.index else "anonymous_id"
            key = f"{kind}:{previous}"
            if kind in plan.links and all(candidate[3] != key for candidate in usable):
                if plan.is_blocked(kind, previous):
                    blocked.append((kind, previous, ""))
                else:
                    usable.append((plan.ranks[kind], kind, previous, key))
                    reorder = True
    if reorder:  # stable: within one kind the envelope's identifier stays ahead of alias's previous_id
        usable.sort(key=itemgetter(0))
    if blocked:
        blocked = [b for b in blocked if identifier_key(b[0], b[1]) not in state.blocked]
    return usable, blocked


def resolve(
    state: IdentityState, event: dict[str, Any], rules: IdentityRules
) -> tuple[IdentityState, list[IdentityEvent], str | None]:
    """Resolve one source event: (the same ``state``, changed in place; identity events; its profile id)."""
    plan = rules.plan
    usable, blocked = _candidates(state, event, plan)
    if not blocked and usable:
        index = state.index
        profile_id = index.get(usable[0][3])
        if profile_id is not None:
            for candidate in usable:
                if index.get(candidate[3]) != profile_id:
                    break
            else:
                return state, [], profile_id
    envelope = event["envelope"]
    out = _Output(state, str(envelope["event_id"]), envelope["occurred_at"])
    for kind, value, reason in blocked:
        out.emit(
            IDENTIFIER_BLOCKED,
            identifiers=((kind, value),),
            reason=reason or f"{kind} value is on the blocklist of the identity rules",
        )
    if not usable:
        return state, out.events, None
    return state, out.events, _link(out, usable, plan)


def _link(out: _Output, usable: list[Candidate], plan: RulePlan) -> str:
    """Steps 2 and 3 of the module docstring; returns the profile the event belongs to."""
    state = out.state
    index, profiles = state.index, state.profiles
    cluster: list[str] = []
    counts: dict[str, int] = {}
    fresh: list[Identifier] = []
    refusals: list[dict[str, Any]] = []
    for _, kind, value, key in usable:
        profile_id = index.get(key)
        if profile_id is None:
            limit = plan.limit(kind)
            held = counts.get(kind, 0)
            if limit is not None and held >= limit:
                refusals.append(
                    {
                        "identifiers": ((kind, value),),
                        "conflicts": _held(state, cluster, fresh, kind),
                        "reason": f"a further {kind} would exceed the limit of {limit} {kind} per profile; "
                        f"the new {kind} was not linked",
                    }
                )
                continue
            counts[kind] = held + 1
            fresh.append((kind, value))
            continue
        if profile_id in cluster:
            continue
        ids = profiles[profile_id]["ids"]
        if cluster or fresh:
            refusal = _over_limit(state, plan, cluster, fresh, counts, ids, kind, value, profile_id)
            if refusal is None and state.splits:
                refusal = _split_apart(state, cluster, profile_id, kind, value)
            if refusal is not None:
                refusals.append(refusal)
                continue
        cluster.append(profile_id)
        for held_kind, values in ids.items():
            counts[held_kind] = counts.get(held_kind, 0) + len(values)
    if cluster:
        order = sorted(cluster, key=lambda p: (profiles[p]["first_seen"], p))
        target = order[0]
        for merged in order[1:]:
            moved = tuple((k, v) for k, values in profiles[merged]["ids"].items() for v in values)
            out.emit(PROFILES_MERGED, profile_id=target, other_profile_id=merged, identifiers=moved)
        for identifier in fresh:
            out.emit(IDENTIFIER_LINKED, profile_id=target, identifiers=(identifier,))
    else:
        # Unique: a profile named after an identifier holds it from birth, and identifiers never leave
        # the index, so this id is free whenever its identifier is unknown.
        target = profile_id_for(plan, *fresh[0])
        out.emit(PROFILE_CREATED, profile_id=target, identifiers=tuple(fresh))
    for refusal in refusals:
        out.emit(MERGE_REFUSED, profile_id=target, **refusal)
    return target


def _held(
    state: IdentityState, cluster: list[str], fresh: list[Identifier], kind: str
) -> tuple[Identifier, ...]:
    """The cluster's identifiers of ``kind``: what a refused identifier clashed with."""
    values = [v for p in cluster for v in state.profiles[p]["ids"].get(kind, ())]
    values += [v for k, v in fresh if k == kind]
    return tuple((kind, v) for v in values)


def _over_limit(
    state: IdentityState,
    plan: RulePlan,
    cluster: list[str],
    fresh: list[Identifier],
    counts: dict[str, int],
    ids: dict[str, list[str]],
    kind: str,
    value: str,
    other: str,
) -> dict[str, Any] | None:
    """A refusal when adding profile ``other`` (reached through kind/value) would break a limit."""
    for held_kind, values in ids.items():
        limit = plan.limit(held_kind)
        if limit is not None and counts.get(held_kind, 0) + len(values) > limit:
            clash = _held(state, cluster, fresh, held_kind) + tuple((held_kind, v) for v in values)
            return {
                "other_profile_id": other,
                "identifiers": ((kind, value),),
                "conflicts": clash,
                "reason": f"{kind} links to a profile whose {held_kind} differs: together they would hold "
                f"{counts.get(held_kind, 0) + len(values)} {held_kind} (limit {limit}), so the {kind} was not linked",
            }
    return None


def _split_apart(
    state: IdentityState, cluster: list[str], other: str, kind: str, value: str
) -> dict[str, Any] | None:
    """A refusal when profile ``other`` holds an identifier an operator split from one in the cluster."""
    index, splits = state.index, state.splits
    for part in state.profiles[other]["origins"].values():
        for key in part["keys"]:
            for partner in splits.get(key, ()):
                if index.get(partner) in cluster:
                    return {
                        "other_profile_id": other,
                        "identifiers": ((kind, value),),
                        "conflicts": (_identifier(state, key), _identifier(state, partner)),
                        "reason": f"{SPLIT_REASON}: the {kind} links to a profile an operator split from "
                        f"this one, so the {kind} was not linked",
                    }
    return None


def _identifier(state: IdentityState, key: str) -> Identifier:
    """(kind, value) of a key held by some profile (kinds may contain ':', so look, don't parse)."""
    ids = state.profiles[state.index[key]]["ids"]
    for kind, values in ids.items():
        if key.startswith(kind + ":") and key[len(kind) + 1 :] in values:
            return kind, key[len(kind) + 1 :]
    raise KeyError(key)
