"""Mapping files (the file connector's contract) for the generated sources, written as YAML.

Each source module states its own mapping next to the columns it writes, with the helpers
here; this module only shapes the entries and writes ``mappings/<file stem>.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

FieldSpec = str | dict[str, Any]


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated sub-dicts in full instead of YAML anchors, so each event reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def event_spec(
    event_type: str,
    event_id: list[str],
    fields: dict[str, FieldSpec],
    constants: dict[str, Any] | None = None,
    when: str | None = None,
) -> dict[str, Any]:
    """One entry of a mapping's ``events:`` list."""
    spec: dict[str, Any] = {"event_type": event_type, "event_id": event_id}
    if when:
        spec["when"] = when
    spec["fields"] = fields
    if constants:
        spec["constants"] = constants
    return spec


def timestamp(column: str, format: str | None = None) -> dict[str, Any]:
    """A field spec parsing ``column`` as a timestamp (ISO 8601/epoch without ``format``)."""
    spec: dict[str, Any] = {"column": column, "type": "timestamp"}
    if format:
        spec["format"] = format
    return spec


def typed(column: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A field spec with an explicit cast (``int``, ``float``, ``bool``, ``json`` ...) and options."""
    return {"column": column, "type": kind, **extra}


def write_mapping(path: Path, mapping: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(mapping, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=110)
    path.write_text(text, encoding="utf-8")
