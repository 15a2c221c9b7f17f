"""The unified profile: a pure, order-independent fold of one person's events.

A profile state is a JSON-able dict::

    {"ids":    {kind: [values, sorted]},            # from the identity stage's links, merges, splits
     "parts":  {anchor: part},                       # what the events anchored on one identifier contributed
     "keys":   [profile ids whose records hold its events],   # for the timeline
     "moved":  {identifier key: profile id},         # identifiers a split moved away, and where
     "recent": [event ids],                          # the last RECENT_IDS records folded (dedup window)
     "merged_into": profile id}                      # only in a tombstone: this profile was merged away

Why *parts*: an event's contribution is folded into the part of its **anchor**, the event's
highest-priority usable identifier (the one identity resolution guarantees is in the event's
profile). A split moves identifiers; the parts anchored on them move with them, so both sides are
right without re-reading the log. A merge is the union of the parts.
A part also holds the customer *facts* the scores read (daily order totals, tickets, ...; see
``projections/facts.py``), so they move with it.

Every combination is order-independent: counts add, first/last seen take min/max, and a trait or
consent is a maximum over a total order (event time, source rank, event id). So folding events,
merges and hand-overs in any order gives the same profile, which is what lets the projection run
partitioned by profile with merges arriving whenever they arrive.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson

from patron.identity.resolver import micros
from patron.identity.rules import EXTERNAL, RulePlan
from patron.projections.facts import fold_facts, merge_facts
from patron.projections.profile_rules import ProfilePlan, TraitSource

Part = dict[str, Any]
Profile = dict[str, Any]

RECENT_IDS = 256
"""Record ids remembered per profile. A redelivered record (Kafka at-least-once) is skipped when it
is among the last RECENT_IDS records folded into its profile; see docs/profiles.md for the guarantee."""

UNSUBSCRIBE_PURPOSE, UNSUBSCRIBE_CHANNEL = "marketing", "email"


def anchor_of(identifiers: dict[str, Any], plan: RulePlan) -> str | None:
    """``kind:value`` of the event's highest-priority usable identifier (by the identity rules), or None.

    The same ranking the resolver walks (base kinds, then external ids by name, blocklists and
    link kinds honoured), without the identity graph: the anchor of an event never depends on state.
    """
    best: tuple[float, str] | None = None
    for kind, rank in plan.base:
        value = identifiers.get(kind)
        if value and not plan.is_blocked(kind, value):
            best = (rank, f"{kind}:{value}")
            break
    for name, value in sorted((identifiers.get("external_ids") or {}).items()):
        if not value or ":" in name:
            continue
        kind = EXTERNAL + name
        rank, _, _, links = plan.external(kind)
        if links and (best is None or rank < best[0]) and not plan.is_blocked(kind, value):
            best = (rank, f"{kind}:{value}")
    return best[1] if best else None


def new_profile(profile_id: str) -> Profile:
    return {"ids": {}, "parts": {}, "keys": [profile_id], "moved": {}, "recent": []}


def new_part() -> Part:
    return {
        "first_seen": None,
        "last_seen": None,
        "types": {},
        "sources": {},
        "traits": {},
        "consent": {},
        "facts": {},
    }


def _json_value(value: Any) -> Any:
    """Trait values as JSON-able scalars: dates and times as ISO 8601 text."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _read(event: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def _decoded(text: str) -> Any:
    """A map value as sent: JSON-encoded (``"true"``, ``'"EMEA"'``), or plain text when it is not JSON."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _trait_values(event: dict[str, Any], sources: Iterable[TraitSource]) -> Iterable[tuple[str, Any]]:
    for source in sources:
        if source.spread:
            for name, text in (_read(event, source.path) or {}).items():
                yield name, _decoded(text)
        elif source.path:
            yield source.trait, _json_value(_read(event, source.path))
        else:
            yield source.trait, source.constant


def _trait_order(entry: dict[str, Any], trait: str, plan: ProfilePlan) -> tuple[Any, ...]:
    """The total order a trait's value is chosen by: larger wins."""
    rank = -plan.rank(entry["source"])
    if plan.strategy(trait) == "priority":
        return rank, entry["at"], entry["event"]
    return entry["at"], rank, entry["event"]


def _offer_trait(traits: dict[str, Any], name: str, entry: dict[str, Any], plan: ProfilePlan) -> None:
    current = traits.get(name)
    if current is None or _trait_order(entry, name, plan) > _trait_order(current, name, plan):
        traits[name] = entry


def _offer_consent(consent: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    current = consent.get(key)
    if current is None or (entry["at"], entry["event"]) > (current["at"], current["event"]):
        consent[key] = entry


def _consent_of(event_type: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(purpose:channel, decision) a consent_changed or email_unsubscribed event records."""
    if event_type == "consent_changed":
        decision = {
            "granted": payload["granted"],
            "basis": payload.get("basis"),
            "method": payload.get("method"),
        }
        return f"{payload['purpose']}:{payload['channel']}", decision
    if event_type == "email_unsubscribed":
        decision = {"granted": False, "basis": None, "method": "unsubscribe"}
        return f"{UNSUBSCRIBE_PURPOSE}:{UNSUBSCRIBE_CHANNEL}", decision
    return None


def fold_traits(
    traits: dict[str, Any],
    event: dict[str, Any],
    at: int,
    plan: ProfilePlan,
    only: frozenset[str] = frozenset(),
) -> None:
    """Offer the trait values ``event`` carries to ``traits``; ``only`` (when given) limits the trait names
    (the vectorised rebuild needs a few traits only, chosen by exactly these rules)."""
    envelope = event["envelope"]
    source, event_id = envelope["source"], envelope["event_id"]
    for name, value in _trait_values(
        event, (*plan.every_event, *plan.traits.get(envelope["event_type"], ()))
    ):
        if value is not None and value != "" and (not only or name in only):
            _offer_trait(traits, name, {"value": value, "source": source, "at": at, "event": event_id}, plan)


def merge_traits(into: dict[str, Any], other: dict[str, Any], plan: ProfilePlan) -> None:
    """Fold the traits ``other`` chose into ``into``: per trait, the larger by the trait's order wins."""
    for name, entry in other.items():
        _offer_trait(into, name, entry, plan)


def fold_event(part: Part, event: dict[str, Any], plan: ProfilePlan) -> None:
    """Fold one source event into ``part``: seen times, counts, traits, consent, facts.

    Parts stored before facts existed have no ``"facts"``; they start collecting from the next event.
    """
    envelope = event["envelope"]
    event_type, source, event_id = envelope["event_type"], envelope["source"], envelope["event_id"]
    at = micros(envelope["occurred_at"])
    part["first_seen"] = at if part["first_seen"] is None else min(part["first_seen"], at)
    part["last_seen"] = at if part["last_seen"] is None else max(part["last_seen"], at)
    part["types"][event_type] = part["types"].get(event_type, 0) + 1
    part["sources"][source] = part["sources"].get(source, 0) + 1
    fold_traits(part["traits"], event, at, plan)
    fold_facts(part.setdefault("facts", {}), event, at)
    consent = _consent_of(event_type, event.get("payload") or {})
    if consent is not None:
        key, decision = consent
        _offer_consent(part["consent"], key, {**decision, "source": source, "at": at, "event": event_id})


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge_part(into: Part, other: Part, plan: ProfilePlan) -> None:
    """Fold ``other`` into ``into`` (in place); the result does not depend on which is which."""
    into["first_seen"] = _min(into["first_seen"], other["first_seen"])
    into["last_seen"] = _max(into["last_seen"], other["last_seen"])
    for counts in ("types", "sources"):
        mine = into[counts]
        for name, count in other[counts].items():
            mine[name] = mine.get(name, 0) + count
    merge_traits(into["traits"], other["traits"], plan)
    for key, entry in other["consent"].items():
        _offer_consent(into["consent"], key, entry)
    if other.get("facts"):
        merge_facts(into.setdefault("facts", {}), other["facts"])


def add_identifiers(profile: Profile, identifiers: Iterable[tuple[str, str]]) -> None:
    ids = profile["ids"]
    for kind, value in identifiers:
        values = ids.setdefault(kind, [])
        if value not in values:
            values.append(value)
            values.sort()


def merge_profile(into: Profile, other: Profile, plan: ProfilePlan) -> None:
    """Fold a handed-over profile state into ``into``: union of identifiers, parts merged by anchor."""
    add_identifiers(into, ((kind, v) for kind, values in other["ids"].items() for v in values))
    parts = into["parts"]
    for anchor, part in other["parts"].items():
        if anchor in parts:
            merge_part(parts[anchor], part, plan)
        else:
            parts[anchor] = part
    into["keys"] = sorted(set(into["keys"]) | set(other["keys"]))
    into["moved"].update(other["moved"])


def take(profile: Profile, keys: set[str], receiver: str) -> Profile:
    """Remove the identifiers ``keys`` and the parts anchored on them; return them as a hand-over state.

    ``profile`` remembers that they went to ``receiver`` (``moved``), so a hand-over that still
    carries them and arrives later is passed on instead of folded here.
    """
    handed = new_profile(receiver)
    handed["keys"] = sorted(set(profile["keys"]) | {receiver})
    ids = profile["ids"]
    for kind in list(ids):
        for value in list(ids[kind]):
            if f"{kind}:{value}" in keys:
                ids[kind].remove(value)
                handed["ids"].setdefault(kind, []).append(value)
        if not ids[kind]:
            del ids[kind]
    for anchor in [anchor for anchor in profile["parts"] if anchor in keys]:
        handed["parts"][anchor] = profile["parts"].pop(anchor)
    profile["moved"].update(dict.fromkeys(keys, receiver))
    return handed


def remember(profile: Profile, record_id: str) -> bool:
    """Note a record as folded; False when it already was (within the last RECENT_IDS)."""
    recent = profile["recent"]
    if record_id in recent:
        return False
    recent.append(record_id)
    if len(recent) > RECENT_IDS:
        del recent[: len(recent) - RECENT_IDS]
    return True


def summary(profile_id: str, profile: Profile, plan: ProfilePlan) -> dict[str, Any]:
    """The profile as people read it: all parts merged into one, identifiers, traits, counts, consent."""
    total = new_part()
    for part in profile["parts"].values():
        merge_part(total, part, plan)
    return {
        "profile_id": profile_id,
        "identifiers": dict(sorted(profile["ids"].items())),
        "traits": dict(sorted(total["traits"].items())),
        "first_seen": total["first_seen"],
        "last_seen": total["last_seen"],
        "events": sum(total["types"].values()),
        "by_type": dict(sorted(total["types"].items())),
        "by_source": dict(sorted(total["sources"].items())),
        "consent": dict(sorted(total["consent"].items())),
    }
