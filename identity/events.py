"""Identity events: every link, merge, refusal and split the resolver decides, as an auditable fact.

The identity stage emits these next to its answer (which profile an event belongs to). They are the
identity graph's own log: ``state.apply`` folds them back into the exact state the resolver built,
so the graph can be rebuilt, audited and projected without re-reading the source events.

Ids are uuid5 of (cause event id, kind, position in that cause's output): re-processing the same
source event after a crash emits the same ids, and the log's idempotent append drops the repeats.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from patron.events.ids import sha1_uuid_text

IDENTIFIER_BLOCKED = "identifier_blocked"
PROFILE_CREATED = "profile_created"
IDENTIFIER_LINKED = "identifier_linked"
PROFILES_MERGED = "profiles_merged"
MERGE_REFUSED = "merge_refused"
PROFILE_SPLIT = "profile_split"
KINDS = (
    IDENTIFIER_BLOCKED,
    PROFILE_CREATED,
    IDENTIFIER_LINKED,
    PROFILES_MERGED,
    MERGE_REFUSED,
    PROFILE_SPLIT,
)

# Fields that hold identifier values (emails, phones, user ids): personal data to encrypt or shred.
PII_FIELDS = ("identifiers", "conflicts")

EVENT_NAMESPACE = uuid.UUID("0d7a4f5e-8b1c-5c3e-b7a2-6e9f1d2c4a10")

Identifier = tuple[str, str]
"""(kind, value), e.g. ``("email", "jo@example.com")`` or ``("external:crm_id", "C-42")``."""


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` without building UUID objects (3x faster; ids are on the hot path)."""
    return sha1_uuid_text(namespace.bytes + name.encode())


def identity_event_id(cause_id: str, kind: str, index: int) -> str:
    return uuid5_text(EVENT_NAMESPACE, f"{cause_id}:{kind}:{index}")


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """One identity decision. Which fields are set depends on ``kind``:

    ===================== ============================ ================ ===================================
    kind                  profile_id                   other_profile_id identifiers / conflicts / reason
    ===================== ============================ ================ ===================================
    identifier_blocked    None                         None             the ignored identifier; reason
    profile_created       the new profile              None             its identifiers (first names it)
    identifier_linked     the profile it joined        None             the one new identifier
    profiles_merged       the survivor                 the merged one   the identifiers that moved
    merge_refused         where the event went         the other one    the identifier left out;
                                                       (None if new)    conflicts: what it clashed with;
                                                                        reason names both kinds
    profile_split         the profile split from       the new profile  the identifiers that moved (the
                                                                        operator's first); reason
    ===================== ============================ ================ ===================================

    ``cause_id`` is the source event (or operator request) that caused it, ``occurred_at`` that
    event's time in microseconds since the epoch. ``identifiers`` and ``conflicts`` are PII.
    """

    event_id: str
    kind: str
    cause_id: str
    occurred_at: int
    profile_id: str | None = None
    other_profile_id: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    conflicts: tuple[Identifier, ...] = ()
    reason: str | None = None

    @classmethod
    def only(cls, kind: str, cause_id: str, occurred_at: int, **fields: Any) -> IdentityEvent:
        """The single event of ``kind`` an operator request causes (position 0 in its output)."""
        return cls(identity_event_id(cause_id, kind, 0), kind, cause_id, occurred_at, **fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (orjson writes the tuples as arrays)."""
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "cause_id": self.cause_id,
            "occurred_at": self.occurred_at,
            "profile_id": self.profile_id,
            "other_profile_id": self.other_profile_id,
            "identifiers": self.identifiers,
            "conflicts": self.conflicts,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdentityEvent:
        """The inverse of ``to_dict``, also for its JSON round trip (arrays back to tuples)."""
        if data.get("kind") not in KINDS:
            raise ValueError(f"identity event {data.get('event_id')!r}: unknown kind {data.get('kind')!r}")
        return cls(
            event_id=data["event_id"],
            kind=data["kind"],
            cause_id=data["cause_id"],
            occurred_at=data["occurred_at"],
            profile_id=data.get("profile_id"),
            other_profile_id=data.get("other_profile_id"),
            identifiers=tuple((kind, value) for kind, value in data.get("identifiers") or ()),
            conflicts=tuple((kind, value) for kind, value in data.get("conflicts") or ()),
            reason=data.get("reason"),
        )
