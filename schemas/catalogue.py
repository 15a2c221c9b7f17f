"""The event catalogue: every ``patron.events.*`` Avro record in ``avro/``, by event type.

Schemas reference shared named types (``patron.common.Envelope`` ...) by name; fastavro
resolves them from sibling files named ``<full name>.avsc``. The expanded schema (all
references inlined) is what gets registered, so any standard Avro tool can read it alone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

AVRO_DIR = Path(__file__).parent / "avro"
EVENT_NAMESPACE = "patron.events"


class UnknownEventType(KeyError):
    """An event type that the catalogue does not define; the message suggests the closest."""

    def __init__(self, event_type: str, known: list[str]):
        close = difflib.get_close_matches(event_type, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"unknown event type {event_type!r}{hint}; `patron schemas list` shows them all")

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class EventSchema:
    """One event type: its Avro record (expanded), the parsed form fastavro encodes with, its PII fields."""

    event_type: str
    full_name: str
    schema: dict[str, Any]
    parsed: Any
    pii_fields: tuple[str, ...]

    @property
    def subject(self) -> str:
        """Registry subject (record-name strategy: a topic carries many event types)."""
        return self.full_name


def pii_paths(schema: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every field marked ``"pii": true``, looking through unions, arrays and maps."""
    found: list[str] = []
    if isinstance(schema, list):
        for branch in schema:
            found += pii_paths(branch, prefix)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                path = f"{prefix}{field['name']}"
                if field.get("pii"):
                    found.append(path)
                found += pii_paths(field["type"], path + ".")
        elif schema.get("type") == "array":
            found += pii_paths(schema["items"], prefix)
        elif schema.get("type") == "map":
            found += pii_paths(schema["values"], prefix)
    return found


class Catalogue:
    """All event schemas of a directory, loaded once."""

    def __init__(self, directory: Path = AVRO_DIR):
        self.directory = directory
        self._by_type: dict[str, EventSchema] = {}
        for path in sorted(directory.glob(f"{EVENT_NAMESPACE}.*.avsc")):
            expanded = fastavro.schema.load_schema(path, _write_hint=False)
            event_type = expanded.get("event_type")
            if not event_type:
                raise ValueError(f'{path.name}: an event record needs an "event_type" attribute')
            if event_type in self._by_type:
                raise ValueError(f"{path.name}: event type {event_type!r} is defined twice")
            self._by_type[event_type] = EventSchema(
                event_type=event_type,
                full_name=expanded["name"],
                schema=expanded,
                parsed=fastavro.parse_schema(expanded),
                pii_fields=tuple(pii_paths(expanded)),
            )

    def event_types(self) -> list[str]:
        return sorted(self._by_type)

    def get(self, event_type: str) -> EventSchema:
        try:
            return self._by_type[event_type]
        except KeyError:
            raise UnknownEventType(event_type, self.event_types()) from None

    def __iter__(self):
        return iter(self._by_type[t] for t in self.event_types())

    def __len__(self) -> int:
        return len(self._by_type)


@cache
def default_catalogue() -> Catalogue:
    """The catalogue shipped with Patron (cached: schemas are parsed once per process)."""
    return Catalogue()
