"""Arrow table -> JSON text per row, with compute kernels instead of ``json.dumps`` per record.

Column types map to JSON: strings are quoted (and escaped when they contain a quote or a
backslash), numbers and booleans are written as literals, struct columns become nested objects.
Two kinds of string field carry JSON already: ``raw`` values are embedded as they are (e.g. an
array of line items), ``members`` values are ready ``"key":value`` pairs spliced into the
object (several keys that depend on one small vocabulary entry, rendered once per entry).
Arrow's element-wise join costs about the same per argument whatever its length, so coarse
pre-rendered members are what keeps ten million lines fast. Null values leave their key out,
as Segment libraries do for unset properties.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patron.generator.textcols import join

RAW = {b"json": b"raw"}
MEMBERS = {b"json": b"members"}
QUOTE, BACKSLASH = ord('"'), ord("\\")


def raw_field(name: str) -> pa.Field:
    """A string field whose values are JSON text to embed as they are."""
    return pa.field(name, pa.string(), metadata=RAW)


def members_field(name: str) -> pa.Field:
    """A string field whose values are ``"key":value,...`` text to splice into the enclosing object."""
    return pa.field(name, pa.string(), metadata=MEMBERS)


def escape(values: pa.Array) -> pa.Array:
    """Backslashes and quotes escaped for a JSON string (generated values have no control characters)."""
    data = values.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    if not ((raw == QUOTE).any() or (raw == BACKSLASH).any()):
        return values
    return pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')


def _member(field: pa.Field, array: pa.Array) -> pa.Array:
    """``"key":value`` for every row (null where the value is null)."""
    key = json.dumps(field.name)
    kind = array.type
    if field.metadata == MEMBERS:
        return array
    if field.metadata == RAW:
        return join(f"{key}:", array)
    if pa.types.is_string(kind):
        return join(f'{key}:"', escape(array), '"')
    if pa.types.is_boolean(kind):
        return join(f"{key}:", pc.if_else(array, "true", "false"))
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return join(f"{key}:", pc.cast(array, pa.string()))
    if pa.types.is_struct(kind):
        children = [(kind.field(k), pc.struct_field(array, [k])) for k in range(kind.num_fields)]
        nested = pc.if_else(pc.is_valid(array), json_objects(children), pa.nulls(len(array), pa.string()))
        return join(f"{key}:", nested)
    raise TypeError(f"column {field.name!r}: no JSON rendering for Arrow type {kind}")


def json_objects(members: list[tuple[pa.Field, pa.Array]], close: str = "}") -> pa.Array:
    """``{"a":1,"b":"x"}`` per row from (field, values) pairs, leaving out null members.

    ``close`` ends each object (``"}\\n"`` gives newline-terminated lines in the same pass).
    """
    if not members:
        raise ValueError("a JSON object needs at least one member column")
    parts = [_member(field, values) for field, values in members]
    body = pc.binary_join_element_wise(*parts, ",", null_handling="skip")
    return join("{", body, close)


def json_lines(table: pa.Table) -> pa.Array:
    """One JSON object per row of ``table``, each ending with a newline."""
    return json_objects([(field, table.column(field.name).combine_chunks()) for field in table.schema], "}\n")
