"""Conditions: a small declarative language over profile fields, compiled once and evaluated per profile.

In a definition file the ``where`` of a segment or trigger is a tree of mappings::

    where:
      all:                                   # every child holds (a mapping with several keys means all too)
        - rfm.segment: At Risk               # a bare value means eq; a list means in
        - emails_opened.last_30d: {eq: 0}
        - any:                               # at least one child holds
            - clv.value: {gte: 500}
            - traits.plan: [pro, enterprise]
        - not: {tickets.open: {gt: 0}}      # the child does not hold
        - logins.last_at: {not_within_last: 30d}

Operators: ``eq ne in not_in exists`` for every field; ``gt gte lt lte`` for numbers; ``contains`` for
text; ``within_last``, ``not_within_last``, ``within_next`` (durations like ``30d``, ``4h``, ``15m``) for
times. A missing value (null) satisfies only ``ne``, ``not_in``, ``exists: false`` and
``not_within_last`` ("never" is not within any window).

Why a tree of mappings rather than SQL text: a marketer can read and diff it, every field and
operator is checked when the file loads (with a "did you mean"), the fields a condition reads are
known (so only conditions over changed inputs need evaluating), and each time condition knows the
moment it flips, which is what re-evaluates a profile when a window expires with no event at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rapidfuzz import process

from patron.projections.segments.fields import (
    ANY,
    BOOL,
    FAMILIES,
    FIXED,
    NUMBER,
    STRING,
    TIME,
    Fields,
    field_spec,
)

MICROS = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000}
_DURATION = re.compile(r"^([1-9][0-9]{0,5})([dhm])$")
COMPARISONS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
TIME_OPS = ("within_last", "not_within_last", "within_next")
OPS_BY_KIND = {
    NUMBER: ("eq", "ne", "in", "not_in", "exists", *COMPARISONS),
    STRING: ("eq", "ne", "in", "not_in", "exists", "contains"),
    BOOL: ("eq", "ne", "exists"),
    TIME: ("exists", *TIME_OPS),
    ANY: ("eq", "ne", "in", "not_in", "exists", "contains", *COMPARISONS),
}
SYMBOLS = {"eq": "=", "ne": "!=", **COMPARISONS}


class ConditionError(ValueError):
    """A condition that cannot be compiled; the message names the place (``where.all[1]...``)."""


def parse_duration(text: Any, where: str) -> int:
    """``30d`` / ``4h`` / ``15m`` in microseconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConditionError(f"{where}: {text!r} is not a duration; write e.g. 30d, 4h or 15m")
    return int(match[1]) * MICROS[match[2]]


def duration_text(micros: int) -> str:
    """Microseconds as the largest whole unit: ``30d``, ``4h``, ``15m``."""
    for unit in ("d", "h", "m"):
        if micros % MICROS[unit] == 0:
            return f"{micros // MICROS[unit]}{unit}"
    return f"{micros}us"


def shown(value: Any, kind: str) -> str:
    """A value as a reason shows it: times in ISO 8601 UTC, text quoted."""
    if value is None:
        return "null"
    if kind == TIME and isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True, slots=True)
class Leaf:
    """``field op value``: one test of one field."""

    field: str
    op: str
    value: Any
    kind: str

    def holds(self, fields: Fields) -> bool:
        actual = fields.value(self.field)
        op, value = self.op, self.value
        if op == "exists":
            return (actual is not None) == value
        if op in ("ne", "not_in", "not_within_last") and actual is None:
            return True
        if actual is None:
            return False
        if op == "eq":
            return actual == value
        if op == "ne":
            return actual != value
        if op == "in":
            return actual in value
        if op == "not_in":
            return actual not in value
        if op == "contains":
            return isinstance(actual, str) and value in actual
        if op in COMPARISONS:
            if not isinstance(actual, int | float) or isinstance(actual, bool):
                return False
            return {
                "gt": actual > value,
                "gte": actual >= value,
                "lt": actual < value,
                "lte": actual <= value,
            }[op]
        if op == "within_last":
            return actual >= fields.now - value
        if op == "not_within_last":
            return actual < fields.now - value
        return fields.now <= actual <= fields.now + value  # within_next

    def test(self) -> str:
        """``field op value`` as a reader writes it: ``orders.last_at not within last 30d``."""
        if self.op in SYMBOLS:
            test = f"{SYMBOLS[self.op]} {shown(self.value, self.kind)}"
        elif self.op in ("in", "not_in"):
            test = f"{self.op.replace('_', ' ')} [{', '.join(shown(v, self.kind) for v in self.value)}]"
        elif self.op == "exists":
            test = "exists" if self.value else "is missing"
        elif self.op in TIME_OPS:
            test = f"{self.op.replace('_', ' ')} {duration_text(self.value)}"
        else:
            test = f"contains {shown(self.value, STRING)}"
        return f"{self.field} {test}"

    def describe(self, fields: Fields) -> str:
        """The test and the value it saw: ``revenue.last_30d >= 100 (is 150)``."""
        return f"{self.test()} (is {shown(fields.value(self.field), self.kind)})"

    def flips_at(self, fields: Fields) -> int | None:
        """The first moment after ``now`` at which this test can change with time alone, or None."""
        moments = []
        if self.op in TIME_OPS:
            at = fields.value(self.field)
            if at is not None:
                if self.op == "within_next":
                    moments += [at - self.value, at + 1]
                else:
                    moments.append(at + self.value + 1)
        changes = fields.next_change(self.field)
        if changes is not None:
            moments.append(changes)
        later = [moment for moment in moments if moment > fields.now]
        return min(later) if later else None


@dataclass(frozen=True, slots=True)
class Node:
    """``all`` / ``any`` of children, or ``not`` of one child."""

    kind: str
    children: tuple[Node | Leaf, ...]


Condition = Node | Leaf


def holds(condition: Condition, fields: Fields) -> bool:
    """Whether ``condition`` holds (short-circuit; no reasons: most evaluations change nothing)."""
    if isinstance(condition, Leaf):
        return condition.holds(fields)
    if condition.kind == "not":
        return not holds(condition.children[0], fields)
    if condition.kind == "any":
        return any(holds(child, fields) for child in condition.children)
    return all(holds(child, fields) for child in condition.children)


def evaluate(condition: Condition, fields: Fields) -> tuple[bool, list[str]]:
    """Whether ``condition`` holds, and the tests that decided it, described with their values."""
    if isinstance(condition, Leaf):
        return condition.holds(fields), [condition.describe(fields)]
    if condition.kind == "not":
        held, reasons = evaluate(condition.children[0], fields)
        return not held, [f"not ({' and '.join(reasons)})"]
    results = [evaluate(child, fields) for child in condition.children]
    wanted = condition.kind == "any"
    deciding = [reasons for held, reasons in results if held == wanted]
    held = bool(deciding) if wanted else not deciding
    chosen = deciding if deciding else [reasons for _, reasons in results]
    return held, [reason for reasons in chosen for reason in reasons]


def leaves(condition: Condition) -> Iterator[Leaf]:
    if isinstance(condition, Leaf):
        yield condition
    else:
        for child in condition.children:
            yield from leaves(child)


def next_flip(condition: Condition, fields: Fields) -> int | None:
    """The earliest moment after ``now`` at which any test of ``condition`` can change with time alone."""
    moments = [moment for leaf in leaves(condition) if (moment := leaf.flips_at(fields)) is not None]
    return min(moments) if moments else None


def _suggest(name: str) -> str:
    """A "did you mean" for a mistyped field: the closest real name, the part after the dot kept."""
    rest = name.partition(".")[2]
    prefixes = (*FAMILIES, "traits", "identifiers", "consent", "events")
    tails = (rest, f"{rest}d") if rest else ()
    candidates = [*FIXED, *(f"{prefix}.{tail}" for prefix in prefixes for tail in tails)]
    match = process.extractOne(name, [c for c in candidates if field_spec(c) is not None], score_cutoff=70)
    return f"; did you mean {match[0]!r}?" if match else "; see docs/segments.md for the fields"


def _check_value(name: str, op: str, value: Any, kind: str, where: str) -> Any:
    if op == "exists":
        if not isinstance(value, bool):
            raise ConditionError(f"{where}: exists takes true or false, got {value!r}")
        return value
    if op in TIME_OPS:
        return parse_duration(value, f"{where}.{op}")
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ConditionError(f"{where}: {op} takes a non-empty list, got {value!r}")
        return tuple(_check_value(name, "eq", item, kind, where) for item in value)
    wanted = {NUMBER: (int, float), STRING: (str,), BOOL: (bool,)}.get(kind)
    if op in COMPARISONS:
        wanted = (int, float)
    if op == "contains":
        wanted = (str,)
    if wanted and (not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)):
        raise ConditionError(
            f"{where}: {name} is a {kind} field; {op} needs a {wanted[0].__name__}, got {value!r}"
        )
    return value


def _leaf(name: str, spec_value: Any, where: str) -> Condition:
    spec = field_spec(name)
    if spec is None:
        raise ConditionError(f"{where}: unknown field {name!r}{_suggest(name)}")
    if isinstance(spec_value, dict):
        tests = list(spec_value.items())
    elif isinstance(spec_value, list):
        tests = [("in", spec_value)]
    else:
        tests = [("eq", spec_value)]
    if not tests:
        raise ConditionError(f"{where}: no operator given for {name}")
    compiled: list[Condition] = []
    for op, value in tests:
        allowed = OPS_BY_KIND[spec.kind]
        if op not in allowed:
            raise ConditionError(
                f"{where}: operator {op!r} does not apply to {name} (a {spec.kind} field); use one of "
                + ", ".join(allowed)
            )
        compiled.append(Leaf(name, op, _check_value(name, op, value, spec.kind, f"{where}"), spec.kind))
    return compiled[0] if len(compiled) == 1 else Node("all", tuple(compiled))


def compile_condition(raw: Any, where: str = "where") -> Condition:
    """The condition tree of a definition's ``where``; ``ConditionError`` names what is wrong and where."""
    if not isinstance(raw, dict) or not raw:
        raise ConditionError(
            f"{where}: a condition is a mapping such as {{rfm.segment: Champions}}, got {raw!r}"
        )
    parts: list[Condition] = []
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise ConditionError(f"{here}: takes a non-empty list of conditions")
            parts.append(
                Node(key, tuple(compile_condition(item, f"{here}[{i}]") for i, item in enumerate(value)))
            )
        elif key == "not":
            parts.append(Node("not", (compile_condition(value, here),)))
        else:
            parts.append(_leaf(str(key), value, here))
    return parts[0] if len(parts) == 1 else Node("all", tuple(parts))
