"""Operator splits: undo a wrong merge, and remember it so the same evidence never re-merges it.

What moves: every profile remembers, per identifier, the profile it first joined (its *origin*);
merges keep those groups intact. Splitting identifier X off a profile moves X's origin group, i.e.
exactly what the merge that brought X in added (or, if X is in the survivor's own group, what the
survivor held before, leaving the merged-in groups behind). If the profile never merged (one group),
only X moves: a wrongly linked identifier is undone on its own.

Remembered: X against every identifier left behind, in both directions. Later events carrying one of
each are resolved as usual except that the link between the two profiles is refused with reason
"split by operator".

A split is an operator decision, so the runtime records it at its position in the ordered identity
input (e.g. a control record naming the request id). Replaying that input replays the split with the
same request id, which gives the same new profile id and the same ``profile_split`` event id.
"""

from __future__ import annotations

from datetime import datetime

from patron.errors import PatronError
from patron.identity.events import PROFILE_SPLIT, Identifier, IdentityEvent, uuid5_text
from patron.identity.resolver import SPLIT_REASON, micros
from patron.identity.rules import IdentityRules
from patron.identity.state import IdentityState, apply, identifier_key


def split(
    state: IdentityState,
    profile_id: str,
    identifier: Identifier,
    rules: IdentityRules,
    *,
    request_id: str,
    at: datetime | int,
    reason: str = SPLIT_REASON,
) -> tuple[IdentityState, list[IdentityEvent]]:
    """Split ``identifier`` (kind, value) and its origin group off ``profile_id`` into a new profile.

    Returns the same ``state`` (changed in place) and the one ``profile_split`` event. Raises
    ``PatronError`` naming the problem when the profile or identifier is wrong or nothing would remain.
    """
    kind, value = identifier
    key = identifier_key(kind, value)
    profile = state.profiles.get(profile_id)
    if profile is None:
        raise PatronError(
            f"split {request_id}: no profile {profile_id}; it may have been merged into another"
        )
    if state.index.get(key) != profile_id:
        raise PatronError(
            f"split {request_id}: profile {profile_id} holds no {kind} with that value; "
            f"it belongs to {state.index.get(key) or 'no profile'}"
        )
    origins = profile["origins"]
    group = next(part["keys"] for part in origins.values() if key in part["keys"])
    moving = set(group) if len(origins) > 1 else {key}
    held = [(k, v) for k, values in profile["ids"].items() for v in values]
    moved: list[Identifier] = [(kind, value)]
    moved += [(k, v) for k, v in held if identifier_key(k, v) in moving and identifier_key(k, v) != key]
    if len(moved) == len(held):
        raise PatronError(
            f"split {request_id}: profile {profile_id} holds nothing but what would move; nothing would remain"
        )
    target = uuid5_text(rules.plan.namespace, f"split:{request_id}:{key}")
    event = IdentityEvent.only(
        PROFILE_SPLIT,
        request_id,
        micros(at),
        profile_id=profile_id,
        other_profile_id=target,
        identifiers=tuple(moved),
        reason=reason,
    )
    apply(state, event)
    return state, [event]
