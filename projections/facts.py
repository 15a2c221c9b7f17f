"""Per-customer facts: what the scores need from a part's events, folded as compact, mergeable JSON.

A part (see ``projections/profiles.py``) carries a ``"facts"`` dict next to its traits and counts.
The scores (RFM, CLV, health, lifecycle) need daily totals and a few per-entity records, not the
events themselves, so the facts keep exactly that::

    {"activity":      {"YYYY-MM-DD": [events, logins, feature_uses, sessions]},
     "orders":        {day: [orders, revenue_micros]},
     "refunds":       {day: [refunds, amount_micros]},
     "payments":      {day: [failures, failed_amount_micros]},
     "emails":        {day: [sent, opened, clicked, unsubscribed]},
     "surveys":       {"YYYY-MM-DD/NPS": [responses, score_sum, promoters, detractors]},
     "nps":           [at, event_id, score],                       # the latest NPS answer
     "last_order":    [at, event_id],                              # the latest order
     "cart":          [at, event_id, value, cart_id],              # the latest cart update
     "tickets":       {ticket_id: {"opened": [at, event_id, priority],        # earliest ticket_opened
                                   "responded": [at, event_id, seconds],      # earliest first response
                                   "resolved": [at, event_id, seconds]}},     # latest ticket_resolved
     "subscriptions": {subscription_id: {"started": at, "period_end": micros, "cancelled": at,
                                         "renewals": n, "latest": [at, event_id, plan, amount, interval]}},
     "leads":         {lead_id: [at, event_id, lead_source]},                 # earliest lead_created
     "deals":         {deal_id: [at, event_id, lead_id, won, amount, created_at]}}   # latest deal_closed

Why this shape: every merge is order-independent, so parts can move between profiles on merges and
splits in any order and still add up to the same facts. Counts add; times take min/max; a "latest"
(or "earliest") value is the maximum (minimum) of ``[at, event_id, ...]`` lists, a total order because
event ids are unique. Money that is summed is kept in integer micro-units (``floor(x * 1e6 + 0.5)``):
integer sums are exact in any order, so the incremental facts and the vectorised rebuild
(``projections/rebuild.py``, which applies the same rounding in SQL) agree to the last bit.
Times are integer microseconds since the epoch (UTC); days are the UTC day of ``occurred_at``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

from patron.identity.resolver import micros

Facts = dict[str, Any]

MICROS_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
SESSION_TYPES = frozenset({"page_viewed", "screen_viewed"})
NPS, CSAT = "NPS", "CSAT"
PROMOTER_MIN, DETRACTOR_MAX = 9, 6
"""NPS promoters answer 9-10, detractors 0-6."""

DAILY_COUNTERS = ("activity", "orders", "refunds", "payments", "emails", "surveys")
EMAIL_COLUMNS = {"email_sent": 0, "email_opened": 1, "email_clicked": 2, "email_unsubscribed": 3}


@lru_cache(maxsize=8192)
def day_of(at: int) -> str:
    """``YYYY-MM-DD`` of the UTC day holding ``at`` (microseconds); cached per day number."""
    return dt.date.fromordinal(_EPOCH_ORDINAL + at // MICROS_PER_DAY).isoformat()


def money(amount: float | None) -> int:
    """An amount in integer micro-units, for exact sums; absent and non-finite amounts count 0."""
    if amount is None or not math.isfinite(amount):
        return 0
    return math.floor(amount * 1e6 + 0.5)


def _bump(facts: Facts, table: str, key: str, values: tuple[int, ...]) -> None:
    buckets = facts.setdefault(table, {})
    found = buckets.get(key)
    if found is None:
        buckets[key] = list(values)
    else:
        for i, value in enumerate(values):
            found[i] += value


def _keep(holder: dict[str, Any], name: str, candidate: list[Any], pick: Callable[..., Any]) -> None:
    """``holder[name]`` becomes ``pick`` (min or max) of itself and ``candidate``."""
    current = holder.get(name)
    holder[name] = candidate if current is None else pick(current, candidate)


def _opt(pick: Callable[..., Any], a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else pick(a, b)


def _order(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _bump(facts, "orders", day, (1, money(payload["revenue"])))
    _keep(facts, "last_order", [at, event_id], max)


def _cart(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _keep(facts, "cart", [at, event_id, float(payload["value"]), str(payload["cart_id"])], max)


def _refund(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _bump(facts, "refunds", day, (1, money(payload["amount"])))


def _payment_failed(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _bump(facts, "payments", day, (1, money(payload["amount"])))


def _survey(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    kind, score = str(payload["kind"]), int(payload["score"])
    is_nps = kind == NPS
    promoter = int(is_nps and score >= PROMOTER_MIN)
    detractor = int(is_nps and score <= DETRACTOR_MAX)
    _bump(facts, "surveys", f"{day}/{kind}", (1, score, promoter, detractor))
    if is_nps:
        _keep(facts, "nps", [at, event_id, score], max)


def _ticket(facts: Facts, payload: dict[str, Any]) -> dict[str, Any]:
    return facts.setdefault("tickets", {}).setdefault(payload["ticket_id"], {})


def _ticket_opened(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _keep(_ticket(facts, payload), "opened", [at, event_id, payload["priority"]], min)


def _ticket_responded(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _keep(_ticket(facts, payload), "responded", [at, event_id, payload["response_seconds"]], min)


def _ticket_resolved(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _keep(_ticket(facts, payload), "resolved", [at, event_id, payload["resolution_seconds"]], max)


def _subscription(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str, kind: str) -> None:
    entry = facts.setdefault("subscriptions", {}).setdefault(
        payload["subscription_id"], {"started": None, "period_end": None, "cancelled": None, "renewals": 0}
    )
    if kind == "cancelled":
        entry["cancelled"] = _opt(max, entry["cancelled"], at)
    else:
        entry["started"] = _opt(min, entry["started"], at)
    entry["renewals"] += kind == "renewed"
    entry["period_end"] = _opt(max, entry["period_end"], micros(payload["period_end"]))
    latest = [at, event_id, payload["plan"], payload["amount"], payload["billing_interval"]]
    _keep(entry, "latest", latest, max)


def _lead(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    _keep(facts.setdefault("leads", {}), payload["lead_id"], [at, event_id, payload["lead_source"]], min)


def _deal(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str) -> None:
    created = payload.get("created_at")
    deal = [
        at,
        event_id,
        payload.get("lead_id"),
        bool(payload["won"]),
        payload["amount"],
        None if created is None else micros(created),
    ]
    _keep(facts.setdefault("deals", {}), payload["deal_id"], deal, max)


def _email(facts: Facts, day: str, payload: dict[str, Any], at: int, event_id: str, column: int) -> None:
    counts = [0, 0, 0, 0]
    counts[column] = 1
    _bump(facts, "emails", day, tuple(counts))


Folder = Callable[..., None]
FOLDERS: dict[str, Folder] = {
    "order_completed": _order,
    "cart_updated": _cart,
    "refund_issued": _refund,
    "payment_failed": _payment_failed,
    "survey_answered": _survey,
    "ticket_opened": _ticket_opened,
    "ticket_first_responded": _ticket_responded,
    "ticket_resolved": _ticket_resolved,
    "subscription_started": partial(_subscription, kind="started"),
    "subscription_renewed": partial(_subscription, kind="renewed"),
    "subscription_cancelled": partial(_subscription, kind="cancelled"),
    "lead_created": _lead,
    "deal_closed": _deal,
    **{event_type: partial(_email, column=column) for event_type, column in EMAIL_COLUMNS.items()},
}
"""Event types with facts beyond daily activity, and how each folds its payload."""


def fold_facts(facts: Facts, event: dict[str, Any], at: int | None = None) -> None:
    """Fold one source event into ``facts`` (in place). ``at``: its occurred_at in micros, if known."""
    envelope = event["envelope"]
    event_type = envelope["event_type"]
    if at is None:
        at = micros(envelope["occurred_at"])
    day = day_of(at)
    if event_type == "feature_used":
        activity = (1, 0, int(event["payload"]["count"]), 0)
    else:
        activity = (1, int(event_type == "logged_in"), 0, int(event_type in SESSION_TYPES))
    _bump(facts, "activity", day, activity)
    folder = FOLDERS.get(event_type)
    if folder is not None:
        folder(facts, day, event["payload"], at, str(envelope["event_id"]))


def _merge_subscription(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["started"] = _opt(min, into["started"], other["started"])
    into["period_end"] = _opt(max, into["period_end"], other["period_end"])
    into["cancelled"] = _opt(max, into["cancelled"], other["cancelled"])
    into["renewals"] += other["renewals"]
    _keep(into, "latest", other["latest"], max)


TICKET_PICKS = {"opened": min, "responded": min, "resolved": max}


def merge_facts(into: Facts, other: Facts) -> None:
    """Fold ``other`` into ``into`` (in place); the result does not depend on which is which.

    ``into`` never shares a mutable container with ``other`` afterwards (counters and records are
    copied), so merging a stored part into a scratch total leaves the stored part untouched.
    """
    for table in DAILY_COUNTERS:
        for key, values in (other.get(table) or {}).items():
            _bump(into, table, key, values)
    for latest in ("nps", "last_order", "cart"):
        if other.get(latest) is not None:
            _keep(into, latest, other[latest], max)
    for ticket_id, ticket in (other.get("tickets") or {}).items():
        mine = into.setdefault("tickets", {}).setdefault(ticket_id, {})
        for name, record in ticket.items():
            _keep(mine, name, record, TICKET_PICKS[name])
    for subscription_id, entry in (other.get("subscriptions") or {}).items():
        subscriptions = into.setdefault("subscriptions", {})
        if subscription_id in subscriptions:
            _merge_subscription(subscriptions[subscription_id], entry)
        else:
            subscriptions[subscription_id] = dict(entry)
    for lead_id, lead in (other.get("leads") or {}).items():
        _keep(into.setdefault("leads", {}), lead_id, lead, min)
    for deal_id, deal in (other.get("deals") or {}).items():
        _keep(into.setdefault("deals", {}), deal_id, deal, max)
