"""Pydantic types generated from the Avro catalogue: the schemas are the one source of truth.

Each event type's type is built on first use by walking its Avro record, so adding
a field to an ``.avsc`` file changes validation with no Python edit. Identifier
normalisation (email, phone, UTC timestamps) and a few semantic rules the Avro type
system cannot say (survey score ranges, currency codes) are attached by field path.

Records become ``TypedDict``s rather than ``BaseModel``s: validation then yields plain
dicts that fastavro encodes directly, without building and dumping model objects (about
twice as fast). Fields with an Avro default are not required; fastavro writes the
default for a field that is absent.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, Literal, NotRequired, Optional, Union
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo
from typing_extensions import TypedDict

from patron.events.normalize import normalize_email, normalize_phone, to_utc
from patron.schemas.catalogue import default_catalogue

MODEL_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
INT_BOUNDS = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
SURVEY_RANGES = {"NPS": (0, 10), "CSAT": (1, 5)}


class InvalidEvent(ValueError):
    """An event that does not fit its schema; ``problems`` holds one line per offending field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context or {}


def _email(value: str) -> str:
    return normalize_email(value)


def _phone(value: str, info: ValidationInfo) -> str:
    return normalize_phone(value, _context(info).get("default_region"))


def _utc(value: dt.datetime, info: ValidationInfo) -> dt.datetime:
    if value.tzinfo is dt.UTC:
        return value  # already what to_utc returns; the common case, checked first because it is cheap
    zone = _context(info).get("timezone")
    return to_utc(value, ZoneInfo(zone)) if zone else to_utc(value)


# The text str(uuid.UUID(...)) produces; ids already in this form are returned as they are.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def _uuid_text(value: str) -> str:
    return value if _CANONICAL_UUID(value) else str(uuid.UUID(value))


def _currency(value: str) -> str:
    code = value.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise ValueError(f"{value!r} is not an ISO 4217 currency code such as EUR or USD")
    return code


# Normalisers attached to fields by their dotted path (or by their own name, for ``currency``).
FIELD_RULES: dict[str, Callable[..., Any]] = {
    "envelope.identifiers.email": _email,
    "envelope.identifiers.phone": _phone,
}
NAME_RULES: dict[str, Callable[..., Any]] = {"currency": _currency}
CONTEXT_RULES = {_phone}  # normalisers that need the validation context (default region)


def _unless_none(rule: Callable[..., Any]) -> Callable[..., Any]:
    """Apply a normaliser to present values only: ``None`` in an optional field stays ``None``."""

    def checked(value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        return rule(value, info) if rule in CONTEXT_RULES else rule(value)

    return checked


def _check_survey_score(payload: dict[str, Any]) -> dict[str, Any]:
    """NPS answers are 0-10 and CSAT answers 1-5; Avro can only say "int"."""
    kind = payload.get("kind") or ""
    low, high = SURVEY_RANGES.get(kind, (None, None))
    score = payload.get("score")
    if low is not None and high is not None and score is not None and not low <= score <= high:
        raise ValueError(f"score {score} is outside the {kind} range {low}-{high}")
    return payload


RECORD_RULES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "patron.events.SurveyAnsweredPayload": _check_survey_score,
}


class _TypeBuilder:
    """Turns one expanded Avro schema into nested TypedDicts with validators."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}

    def annotation(self, schema: Any, path: str) -> Any:
        if isinstance(schema, str):
            return self._primitive(schema, path)
        if isinstance(schema, list):
            branches = [self.annotation(branch, path) for branch in schema if branch != "null"]
            inner = branches[0] if len(branches) == 1 else Union[tuple(branches)]  # noqa: UP007
            return Optional[inner] if "null" in schema else inner  # noqa: UP045
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "uuid":
            return Annotated[str, AfterValidator(_uuid_text)]
        if logical in ("timestamp-micros", "timestamp-millis"):
            return Annotated[dt.datetime, AfterValidator(_utc)]
        if logical == "date":
            return dt.date
        if kind == "record":
            return self.record(schema, path)
        if kind == "enum":
            found = Literal[tuple(schema["symbols"])]
            self.named[schema["name"]] = found
            return found
        if kind == "array":
            return list[self.annotation(schema["items"], path)]
        if kind == "map":
            return dict[str, self.annotation(schema["values"], path)]
        if kind == "fixed":
            return bytes
        return self._primitive(kind, path)

    def _primitive(self, name: str, path: str) -> Any:
        if name in self.named:
            return self.named[name]
        if name in INT_BOUNDS:
            low, high = INT_BOUNDS[name]
            return Annotated[int, Field(ge=low, le=high)]
        simple = {"string": str, "boolean": bool, "double": float, "float": float, "bytes": bytes}
        if name not in simple:
            raise ValueError(f"{path}: Avro type {name!r} has no model mapping")
        return simple[name]

    def record(self, schema: dict[str, Any], path: str) -> Any:
        fields: dict[str, Any] = {}
        for field in schema["fields"]:
            field_path = f"{path}.{field['name']}" if path else field["name"]
            annotation = self.annotation(field["type"], field_path)
            rule = FIELD_RULES.get(field_path) or NAME_RULES.get(field["name"])
            if rule is not None:
                annotation = Annotated[annotation, AfterValidator(_unless_none(rule))]
            fields[field["name"]] = NotRequired[annotation] if "default" in field else annotation
        record = TypedDict(schema["name"].rsplit(".", 1)[-1], fields)  # type: ignore[operator]
        record.__pydantic_config__ = MODEL_CONFIG  # type: ignore[attr-defined]
        check = RECORD_RULES.get(schema["name"])
        found = Annotated[record, AfterValidator(check)] if check else record
        self.named[schema["name"]] = found
        return found


@cache
def model_for(event_type: str) -> TypeAdapter[Any]:
    """The validator of ``event_type``, built from the catalogue's Avro schema (cached)."""
    return TypeAdapter(_TypeBuilder().record(default_catalogue().get(event_type).schema, ""))


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-"))
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field (not in the schema; check the spelling or `patron schemas show`)"
    message = error["msg"].removeprefix("Value error, ")
    shown = repr(error.get("input"))
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{where}: {message} (got {shown})"


def validate_event(
    data: dict[str, Any], *, default_region: str | None = None, timezone: str | None = None
) -> dict[str, Any]:
    """Validate and normalise an Avro-shaped event dict; return it ready for encoding.

    Raises :class:`InvalidEvent` listing every problem, or ``UnknownEventType``.
    """
    envelope = data.get("envelope")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("event_type"), str):
        raise InvalidEvent(["envelope.event_type: required field is missing"])
    model = model_for(envelope["event_type"])
    context = {"default_region": default_region, "timezone": timezone}
    try:
        return model.validate_python(data, context=context)
    except ValidationError as exc:
        raise InvalidEvent([_describe(error) for error in exc.errors(include_url=False)]) from None
