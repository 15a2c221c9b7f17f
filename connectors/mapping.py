"""Mapping files: how each row of a CSV, JSONL or Parquet file becomes one or more Patron events.

The format is the contract shared with the data generator (see docs/connectors.md). Loading
checks everything that can be checked without data -- keys, cast types, event types, every
target path against the event type's Avro schema, required fields, time zone, phone region --
so a typo fails once, naming the file and key path, instead of rejecting every row. Applying a
mapping never raises for bad data: a value that does not fit becomes that event's rejection
reason, naming the column, the value and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

import orjson
import phonenumbers
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patron.connectors.casts import CAST_TYPES, Cast, CastError, make_cast, to_string
from patron.errors import EXIT_INVALID, PatronError
from patron.events.ids import sha1_uuid_text
from patron.events.normalize import DEFAULT_REGION
from patron.schemas.catalogue import EventSchema, UnknownEventType, default_catalogue

# Event ids are uuid5(MAPPING_NAMESPACE, source, event_type, values): re-ingesting a file yields the same ids.
MAPPING_NAMESPACE = uuid.UUID("0d6f7c2e-8a43-5b1e-9c55-3f2b8e41a7d0")
EVENT_KEYS = ("event_type", "event_id", "when", "fields", "constants")
LITERAL_PREFIX = "literal:"
# How the catalogue marks maps of JSON-encoded values (traits, properties): see docs/events.md.
JSON_ENCODED = "JSON-encoded"
# Envelope fields the connector fills itself; a mapping setting them would contradict `event_type:` or the clock.
CONNECTOR_SET = {
    "event_type": "set by the event's `event_type:` key",
    "received_at": "set by the connector when the record is ingested",
}
ALWAYS_SUPPLIED = {"event_id", "event_type", "received_at", "source", "identifiers", "context"}
FileFormat = Literal["csv", "jsonl", "parquet"]
FieldType = Literal[CAST_TYPES]  # type: ignore[valid-type]


class MappingError(PatronError):
    """A mapping file that cannot be used; the message names the file, the key path and the problem."""

    exit_code = EXIT_INVALID


def suggest(word: str, choices: Sequence[str], template: str = " (did you mean {}?)") -> str:
    """`` (did you mean X?)`` for the closest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return template.format(close[0]) if close else ""


# -- YAML -------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """Safe YAML where only true/false are booleans: YAML 1.1 also reads NO (Norway's region
    code), yes, on and off as booleans, which would corrupt `default_region:` and `map:` keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


# -- the file's structure -------------------------------------------------------------------
class _Strict(BaseModel):
    """Unknown keys are refused with a did-you-mean: a misspelt key silently ignored is a lost column."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        data = cls._prepare(data)
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(f"unknown key {key!r}{suggest(str(key), list(cls.model_fields))}")
        return data

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        return data


class FieldSpec(_Strict):
    """Where one target field's value comes from: a column, optionally cast, translated or defaulted."""

    column: str
    type: FieldType | None = None
    format: str | None = None
    default: Any = None
    map: dict[Any, Any] | None = None

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data


class EventSpec(_Strict):
    """One event a row can produce."""

    event_type: str
    event_id: list[str] | None = None
    when: str | None = None
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def _prepare(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("event_id"), str):
            return {**data, "event_id": [data["event_id"]]}
        return data


class CsvOptions(_Strict):
    """How to read a CSV file; ``utf-8`` also accepts (and drops) a byte-order mark."""

    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError(f"{value!r} must be exactly one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
        return value


class MappingSpec(_Strict):
    """A whole mapping file, as written."""

    source: str
    format: FileFormat | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    default_region: str = DEFAULT_REGION
    timezone: str = "UTC"
    timestamp_format: str | None = None
    events: list[EventSpec] = Field(min_length=1)

    @field_validator("source")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name the source, e.g. shop")
        return value.strip()

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            hint = suggest(region, sorted(phonenumbers.SUPPORTED_REGIONS))
            raise ValueError(f"{value!r} is not a phone region code such as US, DE or GB{hint}")
        return region

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError):
            hint = suggest(value, sorted(_zones()), " (did you mean {}?);") or ";"
            raise ValueError(
                f"unknown time zone {value!r}{hint} use an IANA name such as Europe/Berlin"
            ) from None
        return value


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


# -- target paths -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A resolved target: the keys leading to it in the event dict, and whether the schema requires it.

    ``json_values`` is ``"value"`` for a key of a map whose values are JSON-encoded (``traits``,
    ``properties``: the catalogue's docs say so), ``"map"`` for such a map as a whole, else None.
    """

    keys: tuple[str, ...]
    required: bool
    json_values: str | None = None


class _TargetProblem(ValueError):
    pass


def _unwrap(avro_type: Any, named: dict[str, Any]) -> tuple[Any, bool]:
    """The non-null branch of an optional type (resolving named references), and whether null is allowed."""
    nullable = False
    if isinstance(avro_type, list):
        branches = [branch for branch in avro_type if branch != "null"]
        nullable = len(branches) < len(avro_type)
        if len(branches) == 1:
            avro_type = branches[0]
    if isinstance(avro_type, str) and avro_type in named:
        avro_type = named[avro_type]
    return avro_type, nullable


def _named_types(schema: Any, found: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every named record of an expanded schema by full name (a type used twice is inlined only once)."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed") and "name" in schema:
            found[schema["name"]] = schema
        for field in schema.get("fields", []):
            _named_types(field["type"], found)
        for key in ("items", "values"):
            if key in schema:
                _named_types(schema[key], found)
    return found


def _is_record(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("type") == "record"


def _is_map(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("type") == "map"


def _describe_type(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return avro_type.get("logicalType") or avro_type.get("type", "value")
    return str(avro_type)


def resolve_target(schema: EventSchema, dotted: str) -> Target:
    """Check a target path (``payload.revenue``, ``identifiers.external_ids.crm_id``) against the schema."""
    named = _named_types(schema.schema)
    top = {field["name"]: field for field in schema.schema["fields"]}
    parts = dotted.split(".")
    if parts[0] == "envelope":
        raise _TargetProblem(
            f"envelope fields are written without the `envelope.` prefix: use {'.'.join(parts[1:]) or 'occurred_at'}"
        )
    if parts[0] == "payload":
        keys: tuple[str, ...] = ("payload",)
        record, _ = _unwrap(top["payload"]["type"], named)
        rest, where = parts[1:], "payload"
        if not rest:
            raise _TargetProblem("name a payload field, e.g. payload.<field>")
    else:
        keys = ("envelope",)
        record, _ = _unwrap(top["envelope"]["type"], named)
        rest, where = parts, "envelope"
        if rest[0] in CONNECTOR_SET:
            raise _TargetProblem(CONNECTOR_SET[rest[0]])
    required = False
    for position, name in enumerate(rest):
        fields = {field["name"]: field for field in record["fields"]}
        if name not in fields:
            raise _TargetProblem(
                _not_a_field(schema, named, keys, where, name, rest[position + 1 :], list(fields))
            )
        field = fields[name]
        avro_type, nullable = _unwrap(field["type"], named)
        required = "default" not in field and not nullable
        keys += (name,)
        remaining = len(rest) - position - 1
        if remaining == 0:
            break
        if _is_map(avro_type):
            if remaining != 1:
                raise _TargetProblem(
                    f"{_shown(keys)} is a map: name one key after it, e.g. {_shown(keys)}.<key>"
                )
            return Target(
                (*keys, rest[-1]), required=False, json_values="value" if _json_map(field) else None
            )
        if not _is_record(avro_type):
            raise _TargetProblem(
                f"{_shown(keys)} is of type {_describe_type(avro_type)}, it has no field {rest[position + 1]!r}"
            )
        record, where = avro_type, _shown(keys)
    return Target(keys, required, json_values="map" if _is_map(avro_type) and _json_map(field) else None)


def _json_map(field: dict[str, Any]) -> bool:
    return JSON_ENCODED in field.get("doc", "")


def _shown(keys: tuple[str, ...]) -> str:
    """Keys as the mapping writes them: payload paths with ``payload.``, envelope paths without."""
    return ".".join(keys[1:]) if keys[0] == "envelope" else ".".join(keys)


def _not_a_field(
    schema: EventSchema,
    named: dict[str, Any],
    keys: tuple[str, ...],
    where: str,
    name: str,
    tail: list[str],
    choices: list[str],
) -> str:
    """What is wrong with a misspelt segment, with the whole corrected path when one is close."""
    problem = f"not a field of {schema.event_type}'s {where}"
    close = difflib.get_close_matches(name, choices, n=1)
    if close:
        return f"{problem} (did you mean {'.'.join([_shown((*keys, close[0])), *tail])}?)"
    if keys == ("envelope",):
        top = {field["name"]: field for field in schema.schema["fields"]}
        payload, _ = _unwrap(top["payload"]["type"], named)
        if name in {field["name"] for field in payload["fields"]}:
            dotted = ".".join(["payload", name, *tail])
            return f"{problem} (payload fields need the prefix: did you mean {dotted}?)"
    return f"{problem}; its fields are {', '.join(choices)}"


def required_paths(schema: EventSchema) -> list[str]:
    """Target paths every event of this type must set: occurred_at plus the payload's required fields."""
    named = _named_types(schema.schema)
    top = {field["name"]: field for field in schema.schema["fields"]}
    envelope, _ = _unwrap(top["envelope"]["type"], named)
    payload, _ = _unwrap(top["payload"]["type"], named)
    found = [
        field["name"]
        for field in envelope["fields"]
        if field["name"] not in ALWAYS_SUPPLIED and "default" not in field
    ]
    for field in payload["fields"]:
        _, nullable = _unwrap(field["type"], named)
        if "default" not in field and not nullable:
            found.append(f"payload.{field['name']}")
    return found


# -- the compiled mapping -------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One event a row produced (``event``), or why it could not (``error``); ``index`` is its `events:` entry."""

    index: int
    event_type: str
    event: dict[str, Any] | None = None
    error: str | None = None


# The containers every event is built with (see ``Mapping._build``), by their keys; a value whose
# target sits directly in one, or one level below, is written there without walking its path.
_ROOTS = {("envelope",): 0, ("envelope", "identifiers"): 1, ("envelope", "context"): 2, ("payload",): 3}
# (root container, key of a dict inside it or None, key): see _slot.
_Slot = tuple[int, str | None, str]


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    label: str
    keys: tuple[str, ...]
    slot: _Slot | None
    column: str
    column_parts: tuple[str, ...]
    required: bool
    cast: Cast | None
    default: Any
    table: dict[str, Any] | None
    folded: dict[str, Any] | None
    json_values: str | None


@dataclass(frozen=True, slots=True)
class _EventPlan:
    index: int
    event_type: str
    when: tuple[str, tuple[str, ...]] | None
    id_parts: tuple[tuple[str, tuple[str, ...] | None], ...] | None
    # SHA-1 input before the row's id values: namespace, source and event type (see deterministic_id).
    id_prefix: bytes
    # Fields that are a plain copy (no cast, map, default, required check or JSON encoding) of a
    # top-level column into a root container, as (column, root, key): most fields of most files.
    copies: tuple[tuple[str, int, str], ...]
    fields: tuple[_FieldPlan, ...]
    # (keys, slot, value, copied): dicts and lists are copied per event, so events never share them.
    constants: tuple[tuple[tuple[str, ...], _Slot | None, Any, bool], ...]


_ABSENT = object()


def _column_parts(column: str) -> tuple[str, ...]:
    return tuple(column.split(".")) if "." in column else ()


def _slot(keys: tuple[str, ...], targets: list[tuple[str, ...]]) -> _Slot | None:
    """Where ``keys`` can be written directly, or None when it needs :func:`_put`'s walk.

    The walk replaces a non-dict on the way with a dict; that can only matter when another target
    of the same event writes one of the containers on the way (``context.campaign`` beside
    ``context.campaign.source``), so such targets keep the walk and behave exactly as before.
    """
    if any(other == keys[:depth] for other in targets for depth in range(1, len(keys))):
        return None
    for depth in (len(keys) - 1, len(keys) - 2):
        root = _ROOTS.get(keys[:depth])
        if root is not None:
            return root, (keys[depth] if depth == len(keys) - 2 else None), keys[-1]
    return None


def _is_copy(field: _FieldPlan, slot: _Slot | None, targets: list[tuple[str, ...]]) -> bool:
    """Whether ``field`` only copies a non-empty value into a root container (see ``_EventPlan.copies``).

    Copies are written before the other fields; that cannot change the event because no other
    target lies below a copy's key, and no problem (whose order the reason keeps) can come from one.
    """
    plain = field.cast is None and field.table is None and field.json_values is None
    if not plain or field.default is not None or field.required or field.column_parts:
        return False
    if slot is None or slot[1] is not None:
        return False
    return not any(other[: len(field.keys)] == field.keys and other != field.keys for other in targets)


def _nested(row: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = row
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node if parts else None


def lookup(row: dict[str, Any], column: str, parts: tuple[str, ...] = ()) -> Any:
    """A row's value for ``column``; a dotted name also reaches into nested JSON objects (``context.page.url``)."""
    value = row.get(column, _ABSENT)
    return _nested(row, parts) if value is _ABSENT else value


def is_missing(value: Any) -> bool:
    """None and blank text are "no value" (CSV cannot tell an empty cell from a missing one)."""
    return value is None or (isinstance(value, str) and not value.strip())


def _key_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return to_string(value)


class Mapping:
    """A loaded, checked mapping file, ready to turn rows into candidate events."""

    def __init__(self, spec: MappingSpec, path: Path, *, shorthand: bool = False):
        self.spec = spec
        self.path = path
        self.source = spec.source
        self.format = spec.format
        self.csv = spec.csv
        self.default_region = spec.default_region
        self.timezone = spec.timezone
        self._shorthand = shorthand
        self._zone = ZoneInfo(spec.timezone)
        self.columns: dict[str, str] = {}
        self.events = tuple(self._compile(index, event) for index, event in enumerate(spec.events))

    # -- loading checks ---------------------------------------------------------------------------
    def _where(self, index: int, *rest: str) -> str:
        head = [] if self._shorthand else [f"events[{index}]"]
        return ".".join([*head, *rest])

    def _error(self, where: str, problem: str) -> MappingError:
        return MappingError(f"{self.path}: {where}: {problem}")

    def _use_column(self, column: str, where: str) -> None:
        if not column.strip():
            raise self._error(where, "names an empty column")
        self.columns.setdefault(column, where)

    def _compile(self, index: int, spec: EventSpec) -> _EventPlan:
        try:
            schema = default_catalogue().get(spec.event_type)
        except UnknownEventType as exc:
            raise self._error(self._where(index, "event_type"), str(exc)) from None
        fields = [self._compile_field(index, schema, target, field) for target, field in spec.fields.items()]
        constants = []
        for target, value in spec.constants.items():
            where = self._where(index, "constants", target)
            if target in spec.fields:
                raise self._error(where, "set both under fields and constants; keep one")
            resolved = self._target(schema, target, where)
            constants.append((resolved.keys, encode_json_values(value, resolved.json_values)))
        targets = [field.keys for field in fields] + [keys for keys, _ in constants]
        placed = [(field, _slot(field.keys, targets)) for field in fields]
        set_paths = [*spec.fields, *spec.constants]
        for path in required_paths(schema):
            if not any(done == path or done.startswith(path + ".") for done in set_paths):
                raise self._error(
                    self._where(index) or "fields",
                    f"{path} is required by {schema.event_type}: map it under fields or set it under constants",
                )
        if spec.event_id is not None and "event_id" in set_paths:
            raise self._error(
                self._where(index, "event_id"),
                "give either event_id: (columns hashed into an id) or fields.event_id (a uuid column), not both",
            )
        id_parts = None
        if spec.event_id is not None:
            if not spec.event_id:
                raise self._error(self._where(index, "event_id"), "list at least one column or literal:VALUE")
            parts = []
            for position, part in enumerate(spec.event_id):
                if part.startswith(LITERAL_PREFIX):
                    parts.append((part.removeprefix(LITERAL_PREFIX), None))
                else:
                    self._use_column(part, self._where(index, f"event_id[{position}]"))
                    parts.append((part, _column_parts(part)))
            id_parts = tuple(parts)
        when = None
        if spec.when is not None:
            self._use_column(spec.when, self._where(index, "when"))
            when = (spec.when, _column_parts(spec.when))
        return _EventPlan(
            index,
            schema.event_type,
            when,
            id_parts,
            MAPPING_NAMESPACE.bytes
            + f"{self.source}\x1f{schema.event_type}\x1f".encode("utf-8", "surrogatepass"),
            tuple(
                (field.column, slot[0], slot[2]) for field, slot in placed if _is_copy(field, slot, targets)
            ),
            tuple(replace(field, slot=slot) for field, slot in placed if not _is_copy(field, slot, targets)),
            tuple(
                (keys, _slot(keys, targets), value, isinstance(value, dict | list))
                for keys, value in constants
            ),
        )

    def _target(self, schema: EventSchema, target: str, where: str) -> Target:
        try:
            return resolve_target(schema, target)
        except _TargetProblem as exc:
            raise self._error(where, str(exc)) from None

    def _compile_field(self, index: int, schema: EventSchema, target: str, spec: FieldSpec) -> _FieldPlan:
        where = self._where(index, "fields", target)
        resolved = self._target(schema, target, where)
        self._use_column(spec.column, where)
        cast = None
        if spec.type is not None:
            fmt = spec.format or (self.spec.timestamp_format if spec.type == "timestamp" else None)
            cast = make_cast(spec.type, fmt, self._zone)
        elif spec.format is not None:
            raise self._error(where, "format: needs type: timestamp or type: date")
        default = spec.default
        if default is not None and cast is not None:
            try:
                default = cast(default)
            except CastError as exc:
                raise self._error(f"{where}.default", str(exc)) from None
        table = folded = None
        if spec.map is not None:
            table = {_key_text(key): value for key, value in spec.map.items()}
            folded = {key.strip().lower(): value for key, value in table.items()}
        return _FieldPlan(
            label=target,
            keys=resolved.keys,
            slot=None,  # known once every target of the event is (see _compile)
            column=spec.column,
            column_parts=_column_parts(spec.column),
            required=resolved.required,
            cast=cast,
            default=default,
            table=table,
            folded=folded,
            json_values=resolved.json_values,
        )

    def where_column(self, column: str) -> str:
        """The first key path that names ``column`` (for "column missing from the file" errors)."""
        return self.columns[column]

    # -- applying ---------------------------------------------------------------------------------
    def apply(self, row: dict[str, Any], raw: bytes) -> list[Candidate]:
        """The candidate events of one row (none when every event's `when:` column is empty)."""
        found = []
        for plan in self.events:
            if plan.when is not None and is_missing(lookup(row, *plan.when)):
                continue
            found.append(self._build(plan, row, raw))
        return found

    def _build(self, plan: _EventPlan, row: dict[str, Any], raw: bytes) -> Candidate:
        """One event of a row. This runs for every row of every file, so the per-field steps
        (:func:`lookup`, :func:`is_missing`, :func:`encode_json_values`) are inlined."""
        identifiers: dict[str, Any] = {}
        context: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        envelope: dict[str, Any] = {
            "event_type": plan.event_type,
            "source": self.source,
            "identifiers": identifiers,
            "context": context,
        }
        event: dict[str, Any] = {"envelope": envelope, "payload": payload}
        roots = (envelope, identifiers, context, payload)  # in _ROOTS order
        problems: list[str] = []
        for keys, slot, value, copied in plan.constants:
            _place(event, roots, keys, slot, copy.deepcopy(value) if copied else value)
        for column, root, key in plan.copies:
            value = row.get(column)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                roots[root][key] = value
        for field in plan.fields:
            value = row.get(field.column, _ABSENT)
            if value is _ABSENT:
                value = _nested(row, field.column_parts) if field.column_parts else None
            if value is None or (isinstance(value, str) and not value.strip()):
                if field.default is None:
                    if field.required:
                        problems.append(f"column {field.column!r} is empty but {field.label} is required")
                    continue
                value = field.default
            else:
                if field.table is not None:
                    value = _translate(field, value)
                if field.cast is not None:
                    try:
                        value = field.cast(value)
                    except CastError as exc:
                        problems.append(f"column {field.column!r} ({field.label}): {exc}")
                        continue
            if field.json_values is not None:
                value = encode_json_values(value, field.json_values)
            _place(event, roots, field.keys, field.slot, value)
        if "event_id" not in envelope:
            event_id = self._event_id(plan, row, raw, problems)
            if event_id is not None:
                envelope["event_id"] = event_id
        if problems:
            return Candidate(plan.index, plan.event_type, error="; ".join(problems))
        return Candidate(plan.index, plan.event_type, event=event)

    def _event_id(self, plan: _EventPlan, row: dict[str, Any], raw: bytes, problems: list[str]) -> str | None:
        if plan.id_parts is None:
            return sha1_uuid_text(plan.id_prefix + raw.rstrip(b"\r\n"))
        values = []
        for name, parts in plan.id_parts:
            if parts is None:
                values.append(name)
                continue
            value = lookup(row, name, parts)
            if is_missing(value):
                problems.append(f"column {name!r} is empty but the event id is derived from it (event_id:)")
                return None
            values.append(_key_text(value))
        return sha1_uuid_text(plan.id_prefix + "\x1f".join(values).encode("utf-8", "surrogatepass"))


def deterministic_id(name: bytes) -> str:
    """uuid5 of ``name`` in :data:`MAPPING_NAMESPACE` (computed on bytes, so any raw row can be hashed)."""
    return sha1_uuid_text(MAPPING_NAMESPACE.bytes + name)


def _translate(field: _FieldPlan, value: Any) -> Any:
    """A `map:` entry's value; values the map does not list pass through unchanged (casts still check them)."""
    assert field.table is not None and field.folded is not None
    text = _key_text(value)
    if text in field.table:
        return field.table[text]
    return field.folded.get(text.strip().lower(), value)


def encode_json_values(value: Any, json_values: str | None) -> Any:
    """Values bound for a map of JSON-encoded values as JSON text (``"39"`` stays a string: ``'"39"'``).

    A map that is not a dict is left alone for validation to refuse with the field's name.
    """
    if json_values == "value":
        return _json_text(value)
    if json_values == "map" and isinstance(value, dict):
        return {str(key): _json_text(item) for key, item in value.items()}
    return value


def _json_text(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _place(
    event: dict[str, Any],
    roots: tuple[dict[str, Any], ...],
    keys: tuple[str, ...],
    slot: _Slot | None,
    value: Any,
) -> None:
    """Write ``value`` at ``keys``: directly through ``slot`` when there is one (see :func:`_slot`)."""
    if slot is None:
        _put(event, keys, value)
        return
    root, middle, key = slot
    node = roots[root]
    if middle is not None:
        child = node.get(middle)
        if child is None:
            child = node[middle] = {}
        node = child
    node[key] = value


def _put(event: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = event
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


# -- loading --------------------------------------------------------------------------------------
def load_mapping(path: Path) -> Mapping:
    """Read, validate and compile a mapping file; raises :class:`MappingError` (one line) when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read the mapping file ({exc})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader: no Python objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":line {mark.line + 1}" if mark is not None else ""
        raise MappingError(f"{path}{line}: not valid YAML ({exc.problem})") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise MappingError(f"{path}: expected keys such as source: and events:, got {type(data).__name__}")
    shorthand = "events" not in data and any(key in data for key in EVENT_KEYS)
    if shorthand:
        data = {key: value for key, value in data.items() if key not in EVENT_KEYS} | {
            "events": [{key: data[key] for key in EVENT_KEYS if key in data}]
        }
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise MappingError(f"{path}: {_describe(errors[0], shorthand)}{more}") from None
    return Mapping(spec, path, shorthand=shorthand)


def _describe(error: Any, shorthand: bool) -> str:
    loc = list(error["loc"])
    if shorthand and loc[:2] == ["events", 0]:
        loc = loc[2:]
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part}]"
        else:
            parts.append(str(part))
    where = ".".join(parts) or "(top level)"
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        problem = "required key is missing"
        if where == "events":
            problem += " (list events, or give event_type: and fields: at the top level)"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        options = [option.strip(" '") for option in re.split(r",| or ", expected) if option.strip(" '")]
        problem = f"{value!r} is not allowed; use one of {', '.join(options)}{suggest(str(value), options)}"
    elif kind in ("model_type", "dict_type"):
        problem = f"expected keys and values, got {type(value).__name__} {value!r}"
    elif kind == "string_type":
        problem = f"expected text, got {type(value).__name__} {value!r}"
    elif kind == "too_short" and where == "events":
        problem = "list at least one event"
    else:
        problem = error["msg"].removeprefix("Value error, ")
    return f"{where}: {problem}"
