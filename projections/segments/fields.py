"""The fields segment and trigger conditions can name, computed from one profile's state at a moment.

A condition reads *fields* such as ``rfm.segment``, ``orders.last_30d`` or ``traits.plan``. They come
from three places, all in the profiles stage's state, so evaluation needs no I/O:

* the profile's parts merged (traits, consent, counts, and the customer facts of
  ``projections/facts.py``: daily counters, subscriptions, tickets, NPS, the latest cart);
* the scores the last snapshot computed (``profile_scored`` events folded into the profile);
* the evaluation moment ``now`` (windows such as "in the last 30 days" are relative to it).

Some fields change with time alone (a 30-day window loses a day at midnight, a subscription
ends). Each such field can say when its value next changes (:meth:`Fields.next_change`), so a
profile is re-evaluated exactly when a window flips instead of all profiles on every tick.

Daily-counter families (``FAMILIES``), each with the same fields::

    <family>.total   <family>.first_at   <family>.last_at
    <family>.last_<N>d    the sum over the last N UTC days, today included
    <family>.prev_<N>d    the sum over the N days before those
    <family>.change_<N>d  last_<N>d / prev_<N>d - 1 (null when prev is 0): -0.4 is "fell 40%"
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from patron.projections.facts import MICROS_PER_DAY, day_of, merge_facts
from patron.projections.profiles import Profile

NUMBER, STRING, BOOL, TIME, ANY = "number", "string", "bool", "time", "any"
MILLION = 1_000_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()

FAMILIES: dict[str, tuple[str, int, float]] = {
    "activity": ("activity", 0, 1),
    "logins": ("activity", 1, 1),
    "feature_uses": ("activity", 2, 1),
    "sessions": ("activity", 3, 1),
    "orders": ("orders", 0, 1),
    "revenue": ("orders", 1, 1 / MILLION),
    "refunds": ("refunds", 0, 1),
    "payments_failed": ("payments", 0, 1),
    "emails_sent": ("emails", 0, 1),
    "emails_opened": ("emails", 1, 1),
    "emails_clicked": ("emails", 2, 1),
    "emails_unsubscribed": ("emails", 3, 1),
}
"""Family -> (facts table, column, scale): e.g. ``revenue`` is column 1 of the daily ``orders`` counters,
in micro-units."""

SCORES: dict[str, tuple[str, str]] = {
    "rfm.segment": ("rfm_segment", STRING),
    "rfm.r": ("rfm_r", NUMBER),
    "rfm.f": ("rfm_f", NUMBER),
    "rfm.m": ("rfm_m", NUMBER),
    "health.score": ("health_score", NUMBER),
    "health.status": ("health_status", STRING),
    "clv.value": ("clv", NUMBER),
    "clv.p_alive": ("p_alive", NUMBER),
    "lifecycle.stage": ("lifecycle_stage", STRING),
}
"""Score fields -> (``profile_scored`` payload field, type). Null until a snapshot scored the profile."""

FIXED: dict[str, str] = {
    "profile.first_seen": TIME,
    "profile.last_seen": TIME,
    "profile.events": NUMBER,
    "scores.as_of": TIME,
    "nps.score": NUMBER,
    "nps.answered_at": TIME,
    "tickets.total": NUMBER,
    "tickets.open": NUMBER,
    "subscription.active": BOOL,
    "subscription.renews_at": TIME,
    "subscription.plan": STRING,
    "subscription.interval": STRING,
    "subscription.amount": NUMBER,
    "cart.value": NUMBER,
    "cart.updated_at": TIME,
    "cart.abandoned_at": TIME,
    "orders.last_order_at": TIME,
    **{name: kind for name, (_, kind) in SCORES.items()},
}
"""Fields with a fixed name, and their types."""

_WINDOWED = re.compile(r"^(?P<family>[a-z_]+)\.(?P<kind>last|prev|change)_(?P<days>[1-9][0-9]{0,3})d$")
_FAMILY_FIELD = re.compile(r"^(?P<family>[a-z_]+)\.(?P<kind>total|first_at|last_at)$")
_DYNAMIC = re.compile(r"^(?P<prefix>traits|consent|events|identifiers)\.(?P<rest>.+)$")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A field name understood: its type, and how to compute it from :class:`Fields`."""

    name: str
    kind: str
    compute: Callable[[Fields], Any]
    changes_with_time: bool = False
    """True when the value can change with ``now`` alone (windows, active subscriptions)."""


def field_names() -> list[str]:
    """Every fixed field name and one example of each pattern, for error messages and ``--help``."""
    patterns = [f"{family}.{{total,first_at,last_at,last_30d,prev_30d,change_30d}}" for family in FAMILIES]
    dynamic = ["traits.<trait>", "identifiers.<kind>", "consent.<purpose>.<channel>", "events.<event_type>"]
    return [*sorted(FIXED), *patterns, *dynamic]


@lru_cache(maxsize=4096)
def field_spec(name: str) -> FieldSpec | None:
    """The spec of ``name``, or None when no field is called that."""
    if name in FIXED:
        return FieldSpec(name, FIXED[name], _FIXED_COMPUTE[name], name == "subscription.active")
    match = _WINDOWED.match(name)
    if match and match["family"] in FAMILIES:
        family, kind, days = match["family"], match["kind"], int(match["days"])
        return FieldSpec(name, NUMBER, lambda f: f.window(family, kind, days), True)
    match = _FAMILY_FIELD.match(name)
    if match and match["family"] in FAMILIES:
        family, kind = match["family"], match["kind"]
        return FieldSpec(name, NUMBER if kind == "total" else TIME, lambda f: f.family(family, kind))
    match = _DYNAMIC.match(name)
    if match:
        prefix, rest = match["prefix"], match["rest"]
        if prefix == "traits":
            return FieldSpec(name, ANY, lambda f: f.trait(rest))
        if prefix == "identifiers":
            return FieldSpec(name, STRING, lambda f: f.identifier(rest))
        if prefix == "events":
            return FieldSpec(name, NUMBER, lambda f: f.merged["types"].get(rest, 0))
        if rest.count(".") == 1:
            purpose, channel = rest.split(".")
            return FieldSpec(name, BOOL, lambda f: f.consent(purpose, channel))
    return None


@lru_cache(maxsize=65536)
def day_start(day: str) -> int:
    """Microseconds at 00:00 UTC of ``YYYY-MM-DD``."""
    return (dt.date.fromisoformat(day).toordinal() - _EPOCH_ORDINAL) * MICROS_PER_DAY


@lru_cache(maxsize=65536)
def _shift(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def merged_part(profile: Profile) -> dict[str, Any]:
    """All of a profile's parts folded into one (a copy: the stored parts stay untouched). Most
    profiles have one part: that part itself is returned, as evaluation only reads it."""
    parts = list(profile["parts"].values())
    if len(parts) == 1:
        return parts[0]
    total: dict[str, Any] = {
        "first_seen": None,
        "last_seen": None,
        "types": {},
        "traits": {},
        "consent": {},
        "facts": {},
    }
    for part in parts:
        seen = [value for value in (total["first_seen"], part["first_seen"]) if value is not None]
        total["first_seen"] = min(seen) if seen else None
        seen = [value for value in (total["last_seen"], part["last_seen"]) if value is not None]
        total["last_seen"] = max(seen) if seen else None
        for name, count in part["types"].items():
            total["types"][name] = total["types"].get(name, 0) + count
        for name, entry in part["traits"].items():
            current = total["traits"].get(name)
            if current is None or (entry["at"], entry["event"]) > (current["at"], current["event"]):
                total["traits"][name] = entry
        for key, entry in part["consent"].items():
            current = total["consent"].get(key)
            if current is None or (entry["at"], entry["event"]) > (current["at"], current["event"]):
                total["consent"][key] = entry
        if part.get("facts"):
            merge_facts(total["facts"], part["facts"])
    return total


class Fields:
    """One profile's fields at ``now`` (microseconds), computed on first use and kept for this evaluation."""

    def __init__(self, profile: Profile, now: int):
        self.profile = profile
        self.now = now
        self.today = day_of(now)
        self._merged: dict[str, Any] | None = None
        self._values: dict[str, Any] = {}
        self._counts: dict[str, dict[str, float]] = {}
        self._changes: dict[str, int | None] = {}

    @property
    def merged(self) -> dict[str, Any]:
        if self._merged is None:
            self._merged = merged_part(self.profile)
        return self._merged

    @property
    def facts(self) -> dict[str, Any]:
        return self.merged.get("facts") or {}

    def value(self, name: str) -> Any:
        if name not in self._values:
            spec = field_spec(name)
            if spec is None:
                raise KeyError(name)
            self._values[name] = spec.compute(self)
        return self._values[name]

    def trait(self, name: str) -> Any:
        entry = self.merged["traits"].get(name)
        return None if entry is None else entry["value"]

    def identifier(self, kind: str) -> str | None:
        """The profile's first identifier of ``kind`` (``email``, ``user_id``, ``ext:crm_id``...)."""
        values = self.profile["ids"].get(kind)
        return values[0] if values else None

    def consent(self, purpose: str, channel: str) -> bool | None:
        entry = self.consent_entry(purpose, channel)
        return None if entry is None else bool(entry["granted"])

    def consent_entry(self, purpose: str, channel: str) -> dict[str, Any] | None:
        """The latest decision covering (purpose, channel): one for that channel or for ``all``."""
        consent = self.merged["consent"]
        found = [e for e in (consent.get(f"{purpose}:{channel}"), consent.get(f"{purpose}:all")) if e]
        return max(found, key=lambda entry: (entry["at"], entry["event"])) if found else None

    def _days(self, family: str) -> dict[str, float]:
        """Day -> the family's non-zero count that day (computed once per evaluation)."""
        counts = self._counts.get(family)
        if counts is None:
            table, column, scale = FAMILIES[family]
            counts = self._counts[family] = {
                day: values[column] * scale
                for day, values in (self.facts.get(table) or {}).items()
                if values[column]
            }
        return counts

    def family(self, family: str, kind: str) -> Any:
        days = self._days(family)
        if kind == "total":
            return sum(days.values())
        if not days:
            return None
        return day_start(min(days) if kind == "first_at" else max(days))

    def window(self, family: str, kind: str, days: int) -> float | None:
        counts = self._days(family)
        start = _shift(self.today, 1 - days)
        previous_start = _shift(self.today, 1 - 2 * days)
        last = sum(v for day, v in counts.items() if start <= day <= self.today)
        if kind == "last":
            return last
        previous = sum(v for day, v in counts.items() if previous_start <= day < start)
        if kind == "prev":
            return previous
        return None if previous == 0 else last / previous - 1

    def window_change(self, name: str) -> int | None:
        """When a windowed field's value next changes: the first midnight at which a counted day moves
        from the last window into the previous one, or out of both (None if nothing is counted)."""
        match = _WINDOWED.match(name)
        assert match is not None
        days = int(match["days"])
        counts = self._days(match["family"])
        start = _shift(self.today, 1 - 2 * days)
        moments = []
        for day in counts:
            if start <= day <= self.today:
                moved = _shift(day, days)
                moments.append(day_start(moved if moved > self.today else _shift(day, 2 * days)))
        return min(moments) if moments else None

    def next_change(self, name: str) -> int | None:
        """When the value of ``name`` next changes with time alone (after ``now``), or None."""
        if name in self._changes:
            return self._changes[name]
        self._changes[name] = change = self._next_change(name)
        return change

    def _next_change(self, name: str) -> int | None:
        spec = field_spec(name)
        if spec is None or not spec.changes_with_time:
            return None
        if name == "subscription.active":
            ends = [end for end in self._live_period_ends() if end >= self.now]
            return min(ends) + 1 if ends else None
        return self.window_change(name)

    def _live_period_ends(self) -> list[int]:
        return [
            entry["period_end"]
            for entry in (self.facts.get("subscriptions") or {}).values()
            if entry["cancelled"] is None and entry["period_end"] is not None
        ]

    def _subscription(self) -> dict[str, Any] | None:
        """The live subscription that renews last (none when all were cancelled)."""
        live = [
            entry
            for entry in (self.facts.get("subscriptions") or {}).values()
            if entry["cancelled"] is None and entry["period_end"] is not None
        ]
        return max(live, key=lambda entry: entry["period_end"]) if live else None

    def subscription(self, name: str) -> Any:
        entry = self._subscription()
        if entry is None:
            return False if name == "active" else None
        if name == "active":
            return entry["period_end"] >= self.now
        if name == "renews_at":
            return entry["period_end"]
        _, _, plan, amount, interval = entry["latest"]
        return {"plan": plan, "amount": amount, "interval": interval}[name]

    def cart(self, name: str) -> Any:
        cart = self.facts.get("cart")
        if cart is None:
            return None
        at, _, value, _ = cart
        if name == "value":
            return value
        if name == "updated_at":
            return at
        last_order = self.facts.get("last_order")
        ordered_since = last_order is not None and last_order[0] >= at
        return None if value <= 0 or ordered_since else at

    def score(self, field: str) -> Any:
        return (self.profile.get("scores") or {}).get(field)

    def tickets(self, name: str) -> int:
        tickets = (self.facts.get("tickets") or {}).values()
        if name == "total":
            return sum(1 for ticket in tickets if "opened" in ticket)
        return sum(1 for ticket in tickets if "opened" in ticket and "resolved" not in ticket)


def _nps(f: Fields, index: int) -> Any:
    latest = f.facts.get("nps")
    return None if latest is None else latest[index]


def _last_order(f: Fields) -> Any:
    latest = f.facts.get("last_order")
    return None if latest is None else latest[0]


_FIXED_COMPUTE: dict[str, Callable[[Fields], Any]] = {
    "profile.first_seen": lambda f: f.merged["first_seen"],
    "profile.last_seen": lambda f: f.merged["last_seen"],
    "profile.events": lambda f: sum(f.merged["types"].values()),
    "scores.as_of": lambda f: f.score("as_of"),
    "nps.score": lambda f: _nps(f, 2),
    "nps.answered_at": lambda f: _nps(f, 0),
    "tickets.total": lambda f: f.tickets("total"),
    "tickets.open": lambda f: f.tickets("open"),
    "subscription.active": lambda f: f.subscription("active"),
    "subscription.renews_at": lambda f: f.subscription("renews_at"),
    "subscription.plan": lambda f: f.subscription("plan"),
    "subscription.interval": lambda f: f.subscription("interval"),
    "subscription.amount": lambda f: f.subscription("amount"),
    "cart.value": lambda f: f.cart("value"),
    "cart.updated_at": lambda f: f.cart("updated_at"),
    "cart.abandoned_at": lambda f: f.cart("abandoned_at"),
    "orders.last_order_at": _last_order,
    **{name: (lambda f, key=key: f.score(key)) for name, (key, _) in SCORES.items()},
}
