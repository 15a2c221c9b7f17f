"""Deliberate dirt: exact re-sends, spelling variants and malformed records.

Which records get broken or re-sent is decided once per source from its own random stream
(:func:`plan_dirt`); how a value is spelled is drawn per record when the source is built, so a
re-sent record renders byte-identical to its original and the generated files never depend on
how rendering is chunked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator.source import Malformation
from patron.generator.textcols import choose, join
from patron.generator.timeline import categorical

DUPLICATE_RATE = 0.01
# Email spellings: as stored, upper case, capitalised, title case, padded with spaces.
EMAIL_STYLE_SHARES = (0.72, 0.06, 0.08, 0.06, 0.08)
BAD_TIMESTAMPS = ("2026-02-30T25:61:00Z", "yesterday", "31/31/2026 10:00", "not a date", "2026-13-01")
BAD_NUMBERS = ("N/A", "12,99 EUR", "twelve", "1.2.3", "--")


@dataclass(frozen=True)
class DirtPlan:
    """Where each record lands in the file and what is wrong with it.

    ``order[i]`` is the record written at file position ``i``; ``duplicate_of[i]`` the position
    of the original when position ``i`` is a re-send (else -1); ``kind[r]`` the index of the
    malformation of record ``r`` in its source (else -1).
    """

    order: np.ndarray
    duplicate_of: np.ndarray
    kind: np.ndarray


def plan_dirt(
    size: int,
    kinds: int,
    malformed_rate: float,
    rng: np.random.Generator,
    duplicate_rate: float = DUPLICATE_RATE,
) -> DirtPlan:
    """Break about ``malformed_rate`` of the records and re-send about ``duplicate_rate`` of the rest."""
    kind = np.full(size, -1, dtype=np.int64)
    broken = rng.random(size) < (malformed_rate if kinds else 0.0)
    kind[broken] = rng.integers(0, max(kinds, 1), size=int(broken.sum()))
    resent = np.flatnonzero(~broken & (rng.random(size) < duplicate_rate))
    # Originals keep their order; a re-send follows its original a few records later.
    sort_key = np.concatenate([2 * np.arange(size), 2 * (resent + rng.integers(1, 40, size=len(resent))) + 1])
    records = np.concatenate([np.arange(size), resent])
    placement = np.argsort(sort_key, kind="stable")
    order = records[placement]
    is_copy = placement >= size
    original_position = np.empty(size, dtype=np.int64)
    original_position[order[~is_copy]] = np.flatnonzero(~is_copy)
    duplicate_of = np.where(is_copy, original_position[order], -1)
    return DirtPlan(order=order, duplicate_of=duplicate_of, kind=kind)


def email_styles(rng: np.random.Generator, n: int) -> np.ndarray:
    """A spelling per record for :func:`spell_email`."""
    return categorical(rng, np.array(EMAIL_STYLE_SHARES), n)


def spell_email(emails: pa.Array, style: np.ndarray) -> pa.Array:
    """``anna.schmidt1@gmail.com`` as users type it: ``ANNA...``, ``Anna...``, `` anna... `` and so on."""
    return choose(
        style,
        emails,
        pc.utf8_upper(emails),
        pc.utf8_capitalize(emails),
        pc.utf8_title(emails),
        join("  ", emails, " "),
    )


def _rows(mask: np.ndarray, values: Sequence[str]) -> pa.Array:
    """One replacement per masked row, cycling through ``values`` (the same record breaks the same way)."""
    return pa.array(list(values), pa.string()).take(pa.array(np.arange(int(mask.sum())) % len(values)))


def replace_values(table: pa.Table, column: str, mask: np.ndarray, values: Sequence[str]) -> pa.Table:
    """The rows in ``mask`` get one of ``values`` in ``column`` (a string column)."""
    index = table.schema.get_field_index(column)
    replaced = pc.replace_with_mask(
        table.column(column).combine_chunks(), pa.array(mask), _rows(mask, values)
    )
    return table.set_column(index, table.schema.field(index), replaced)


def clear_values(table: pa.Table, column: str, mask: np.ndarray) -> pa.Table:
    """The rows in ``mask`` lose their value in ``column`` (null; an empty cell in CSV)."""
    index = table.schema.get_field_index(column)
    array = table.column(column).combine_chunks()
    cleared = pc.if_else(pa.array(mask), pa.nulls(len(array), array.type), array)
    return table.set_column(index, table.schema.field(index), cleared)


def bad_timestamp(column: str) -> Malformation:
    return Malformation(
        f"unparseable timestamp in {column}", lambda t, m: replace_values(t, column, m, BAD_TIMESTAMPS)
    )


def bad_number(column: str) -> Malformation:
    return Malformation(f"non-numeric {column}", lambda t, m: replace_values(t, column, m, BAD_NUMBERS))


def missing(*columns: str) -> Malformation:
    def apply(table: pa.Table, mask: np.ndarray) -> pa.Table:
        for column in columns:
            table = clear_values(table, column, mask)
        return table

    return Malformation(f"missing required {' and '.join(columns)}", apply)


def bad_value(column: str, values: Sequence[str], reason: str) -> Malformation:
    return Malformation(reason, lambda t, m: replace_values(t, column, m, values))
