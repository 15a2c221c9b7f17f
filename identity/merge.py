"""Requested merges: join two profiles that share no identifier because someone decided they are one person.

The resolver merges profiles only when one event carries identifiers of both. Duplicates without a
shared identifier (a CRM that entered 'J. Smith' and 'John Smith' under two ids) are found by the
probabilistic matcher or an operator, who append a merge request; the identity stage applies it here.

A request names one identifier of each profile rather than the profile ids, because by the time it
is applied either profile may have been merged into another (requests for A~B and B~C, applied in
turn, must end in one profile): the identifiers say where the two people are *now*.

* Both identifiers already in one profile: nothing to do, no event.
* An operator split separated identifiers of the two profiles: refused (``merge_refused``, reason
  "split by operator"); an earlier human decision is not overruled by a later score.
* Otherwise ``profiles_merged``, with the resolver's survivor rule (first seen earliest; ties: the
  smaller id). Identifier **limits are not checked**: they stop automatic linking from fusing two
  people through one shared value, while a merge request is exactly the evidence that two values of
  a kind (two CRM ids of one person entered twice) belong to one person.
"""

from __future__ import annotations

from datetime import datetime

from patron.errors import PatronError
from patron.identity.events import (
    MERGE_REFUSED,
    PROFILES_MERGED,
    Identifier,
    IdentityEvent,
)
from patron.identity.resolver import SPLIT_REASON, _split_apart, micros
from patron.identity.state import IdentityState, apply, identifier_key

MERGE_SPLIT_REASON = (
    f"{SPLIT_REASON}: an operator split these profiles apart, so the merge request was not applied"
)


def merge(
    state: IdentityState,
    identifiers: tuple[Identifier, Identifier],
    *,
    request_id: str,
    at: datetime | int,
) -> tuple[IdentityState, list[IdentityEvent]]:
    """Merge the profiles holding the two identifiers; returns the same ``state`` (changed in place)
    and the events: none, one ``profiles_merged`` or one ``merge_refused``.

    Raises ``PatronError`` naming the identifier when no profile holds one of them.
    """
    holders = []
    for kind, value in identifiers:
        holder = state.index.get(identifier_key(kind, value))
        if holder is None:
            raise PatronError(
                f"merge {request_id}: no profile holds the {kind} named in the request; "
                "it was never linked (check the request's identifiers)"
            )
        holders.append(holder)
    first, second = holders
    if first == second:
        return state, []
    profiles = state.profiles
    survivor, merged = sorted((first, second), key=lambda p: (profiles[p]["first_seen"], p))
    named = identifiers[1] if merged == second else identifiers[0]
    refusal = _split_apart(state, [survivor], merged, *named) if state.splits else None
    if refusal is not None:
        event = IdentityEvent.only(
            MERGE_REFUSED,
            request_id,
            micros(at),
            profile_id=survivor,
            **{**refusal, "reason": MERGE_SPLIT_REASON},
        )
        return state, [event]
    moved = tuple((kind, value) for kind, values in profiles[merged]["ids"].items() for value in values)
    event = IdentityEvent.only(
        PROFILES_MERGED,
        request_id,
        micros(at),
        profile_id=survivor,
        other_profile_id=merged,
        identifiers=moved,
    )
    apply(state, event)
    return state, [event]
