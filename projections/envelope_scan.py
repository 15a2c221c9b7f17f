"""Scanning a record's envelope without decoding it: occurred_at, source, the identifiers' bytes.

fastavro spends ~10 us per record building the envelope's dicts; a bulk reader that needs only the
event time, the source and *which* identifiers an event carries can step over the bytes instead. For
each writer schema a Python function is generated that steps over the envelope (strings, numbers,
enums, records, unions, maps of strings: what the catalogue's envelopes hold) and returns those
values; a layout it does not cover gets no function and the caller decodes those records in full.

The identifiers come back as a byte span, so a caller can cache what it derives from them (customers
repeat the same identifiers event after event) and decode them only on a miss, with
``EnvelopeLayout.identifiers``. ``to_payload`` goes on over the rest of the envelope and also returns
the event id and where the payload starts, for callers that decode the payload alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

Scan = Callable[[bytes, int], tuple[Any, ...]]

FIXED_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}
"""Encoded sizes of the fixed-size primitives."""


def _skip_string(buf: bytes, pos: int) -> int:
    size, pos = _varint(buf, pos)
    if size < 0:
        raise ValueError(f"negative length {size}")
    return pos + size


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The Avro long (zig-zag varint) at ``pos``: (value, position after it)."""
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    n, shift = byte & 0x7F, 7
    while byte & 0x80:
        pos += 1
        byte = buf[pos]
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos + 1


def _skip_map(buf: bytes, pos: int) -> int:
    """Step over a map of strings: blocks of key/value pairs until a zero count."""
    count, pos = _varint(buf, pos)
    while count:
        if count < 0:  # a block that states its size in bytes
            size, pos = _varint(buf, pos)
            pos += size
        else:
            for _ in range(count):
                pos = _skip_string(buf, _skip_string(buf, pos))
        count, pos = _varint(buf, pos)
    return pos


def _type_name(schema: Any) -> Any:
    return schema.get("type") if isinstance(schema, dict) else schema


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


class _Unsupported(Exception):
    """A schema shape the generated scan does not cover."""


# Lengths and union branches below 64 are one byte: those cases are inline, the rest call helpers.
_SKIP_STRING = [
    "size = buf[pos]",
    "pos = pos + 1 + (size >> 1) if size < 0x80 and not size & 1 else _skip_string(buf, pos)",
]
_SKIP_VARINT = ["while buf[pos] & 0x80:", "    pos += 1", "pos += 1"]


class _Generator:
    """Python source lines stepping over values of a writer schema (named types as they are defined)."""

    def __init__(self) -> None:
        self.named: dict[str, list[str]] = {}

    def skip(self, schema: Any) -> list[str]:
        kind = _type_name(schema)
        if isinstance(schema, list):
            return self._union(schema)
        if kind in FIXED_SIZES:
            return [f"pos += {FIXED_SIZES[kind]}"] if FIXED_SIZES[kind] else []
        if kind in ("int", "long", "enum"):
            if kind == "enum":
                self._define(schema, list(_SKIP_VARINT))
            return list(_SKIP_VARINT)
        if kind in ("string", "bytes"):
            return list(_SKIP_STRING)
        if kind == "fixed":
            self._define(schema, [f"pos += {int(schema['size'])}"])
            return [f"pos += {int(schema['size'])}"]
        if kind == "map" and _type_name(schema["values"]) == "string":
            return ["pos = pos + 1 if buf[pos] == 0 else _skip_map(buf, pos)"]
        if kind == "record":
            lines = [line for field in schema["fields"] for line in self.skip(field["type"])]
            self._define(schema, lines)
            return lines
        if isinstance(kind, str) and kind in self.named:
            return list(self.named[kind])
        raise _Unsupported(str(kind))

    def _define(self, schema: dict[str, Any], lines: list[str]) -> None:
        name, namespace = schema["name"], schema.get("namespace")
        self.named[name] = self.named[name.rsplit(".", 1)[-1]] = lines
        if namespace and "." not in name:
            self.named[f"{namespace}.{name}"] = lines

    def _union(self, branches: list[Any]) -> list[str]:
        if len(branches) > 63:  # branch indexes above 63 take two bytes
            raise _Unsupported("a union of more than 63 branches")
        lines = ["branch = buf[pos]", "pos += 1"]
        for index, branch in enumerate(branches):
            body = self.skip(branch)
            if body:
                lines += [f"if branch == {index << 1}:", *_indent(body)]
        return lines


@dataclass(frozen=True)
class EnvelopeLayout:
    """How to scan the envelope of one writer schema, and its identifiers schema (parsed, and as text).

    ``scan(buf, pos)`` steps from ``pos`` (after the wire-format header) through the identifiers and
    returns (identifiers start, identifiers end, occurred_at in micros, source as UTF-8 bytes).
    ``to_payload(buf, pos)`` steps over the whole envelope and returns the same plus the event id
    (UTF-8 bytes) and where the payload starts; None when the rest of the envelope is not covered.
    Both raise on bytes that end early or hold a negative length.
    """

    scan: Scan
    to_payload: Scan | None
    identifiers: Any
    identifiers_text: str
    """Equal texts mean equal encodings: one identifiers cache can serve several event types."""


CAPTURES = {
    "occurred_at": ["at, pos = _varint(buf, pos)"],
    "source": ["size, pos = _varint(buf, pos)", "source, pos = buf[pos : pos + size], pos + size"],
    "event_id": ["size, pos = _varint(buf, pos)", "event_id, pos = buf[pos : pos + size], pos + size"],
}
"""Envelope fields whose value a scan returns (long, string and string), instead of stepping over."""


def _function(lines: list[str], returns: str, name: str) -> Scan:
    """Compile one scan: a straight line of Python per record (a loop over opcodes would cost about
    as much as the work itself, and this runs for every record of a rebuild)."""
    source = "\n".join(
        [
            "def scan(buf, pos):",
            '    at, source, event_id, start, end = 0, b"", b"", pos, pos',
            *_indent(lines),
            "    if pos > len(buf):",
            '        raise ValueError("the record ends inside its envelope")',
            f"    return {returns}",
        ]
    )
    namespace: dict[str, Any] = {"_varint": _varint, "_skip_string": _skip_string, "_skip_map": _skip_map}
    exec(compile(source, f"<envelope scan of {name}>", "exec"), namespace)  # source generated above only
    scan: Scan = namespace["scan"]
    return scan


def envelope_layout(written: dict[str, Any]) -> EnvelopeLayout | None:
    """How to scan the envelope of records written with ``written``; None when the envelope is not
    a record whose occurred_at (long) and source (string) precede its identifiers."""
    first = (written.get("fields") or [{}])[0]
    envelope = first.get("type")
    if first.get("name") != "envelope" or _type_name(envelope) != "record":
        return None
    fields = {f["name"]: f for f in envelope["fields"]}
    order = list(fields)
    if "identifiers" not in fields or not {"occurred_at", "source"} <= set(
        order[: order.index("identifiers")]
    ):
        return None
    if (
        _type_name(fields["occurred_at"]["type"]) != "long"
        or _type_name(fields["source"]["type"]) != "string"
    ):
        return None
    identifiers = fields["identifiers"]["type"]
    if not isinstance(identifiers, dict):
        return None
    captured = dict(CAPTURES)
    if _type_name(fields["event_id"]["type"] if "event_id" in fields else None) != "string":
        del captured["event_id"]
    generator = _Generator()
    split = order.index("identifiers")
    name = written.get("name", "?")
    try:
        head = [line for f in order[:split] for line in captured.get(f) or generator.skip(fields[f]["type"])]
        head += ["start = pos", *generator.skip(identifiers), "end = pos"]
    except _Unsupported:
        return None
    try:
        rest = [line for f in order[split + 1 :] for line in generator.skip(fields[f]["type"])]
        returns = "start, end, at, source, event_id, pos"
        to_payload = _function(head + rest, returns, name) if "event_id" in captured else None
    except _Unsupported:
        to_payload = None
    plain = strip_logical(identifiers)
    return EnvelopeLayout(
        _function(head, "start, end, at, source", name),
        to_payload,
        fastavro.parse_schema(plain),
        orjson.dumps(plain, option=orjson.OPT_SORT_KEYS).decode(),
    )


def strip_logical(schema: Any) -> Any:
    """A copy of ``schema`` without logical types: times decode as raw micros, uuids as text."""
    if isinstance(schema, dict):
        return {k: strip_logical(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical(item) for item in schema]
    return schema
