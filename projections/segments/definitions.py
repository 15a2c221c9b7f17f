"""Segment and trigger definitions: YAML files in one directory, validated and compiled when loaded.

A definition file holds ``segments:`` and/or ``triggers:`` lists::

    segments:
      - name: at-risk-no-email
        version: 2                       # bump when the condition changes: changes carry the version
        description: RFM At Risk who opened no email in 30 days
        where: {all: [{rfm.segment: At Risk}, {emails_opened.last_30d: 0}]}
        include: [traits.email, clv.value]    # fields copied into the change events
        channels: [email, sms]           # where activations go; consent checked per channel
        consent: marketing               # the consent purpose the channels need ("none": no check)
    triggers:
      - name: abandoned_cart             # a built-in's name: replaces the built-in
        action: cart_reminder
        where: {cart.abandoned_at: {not_within_last: 2h}}
        cap: {max: 1, per: 7d}           # per profile and channel

The built-in triggers (``triggers.yaml`` next to this module) are always loaded; a trigger of the
same name in the directory replaces one, ``enabled: false`` switches it off. The *fingerprint* of
what is loaded tells the runner when every profile must be re-evaluated (the definitions changed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from patron.errors import EXIT_INVALID, PatronError
from patron.projections.segments.fields import field_spec
from patron.projections.segments.predicates import (
    Condition,
    ConditionError,
    compile_condition,
    parse_duration,
)
from patron.yaml_config import read_packaged_yaml, read_yaml, validate_document

PACKAGE = "patron.projections.segments"
BUILT_IN_TRIGGERS = "triggers.yaml"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NO_CONSENT = "none"


class CapModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max: int = Field(1, ge=1)
    per: str = "1d"

    @field_validator("per")
    @classmethod
    def _duration(cls, value: str) -> str:
        try:
            parse_duration(value, "per")
        except ConditionError as exc:
            raise ValueError(str(exc).removeprefix("per: ")) from None
        return value


class SegmentModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(1, ge=1)
    description: str = ""
    where: dict[str, Any]
    include: list[str] = []
    channels: list[str] = []
    consent: str = "marketing"
    enabled: bool = True

    @field_validator("include")
    @classmethod
    def _known_fields(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if field_spec(name) is None]
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)} (see docs/segments.md for the fields)")
        return names

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, names: list[str]) -> list[str]:
        bad = [name for name in names if not name.isidentifier() or name != name.lower()]
        if bad:
            raise ValueError(f"channel names are lower-case words, got {', '.join(bad)}")
        return names


class TriggerModel(SegmentModel):
    action: str = Field(pattern=NAME_PATTERN)
    cap: CapModel = CapModel()


class FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    segments: list[SegmentModel] = []
    triggers: list[TriggerModel] = []


@dataclass(frozen=True)
class Definition:
    """One compiled segment or trigger."""

    kind: str
    """``segment`` or ``trigger``."""
    name: str
    version: int
    description: str
    condition: Condition
    include: tuple[str, ...]
    channels: tuple[str, ...]
    purpose: str | None
    """The consent purpose the channels need, None for no check."""
    source: str
    action: str | None = None
    cap_max: int = 1
    cap_per: int = 0
    """Trigger frequency cap: at most ``cap_max`` firings per ``cap_per`` microseconds, per profile and channel."""


@dataclass(frozen=True)
class Definitions:
    """Everything loaded, enabled ones only, each list sorted by name."""

    segments: tuple[Definition, ...] = ()
    triggers: tuple[Definition, ...] = ()
    fingerprint: str = ""
    disabled: tuple[str, ...] = field(default=())

    def find(self, name: str) -> Definition | None:
        return next((d for d in (*self.segments, *self.triggers) if d.name == name), None)

    def __bool__(self) -> bool:
        return bool(self.segments or self.triggers)


def _compile(kind: str, model: SegmentModel, source: str) -> Definition:
    try:
        condition = compile_condition(model.where)
    except ConditionError as exc:
        raise PatronError(f"{source}: {kind} {model.name!r} {exc}", EXIT_INVALID) from None
    cap = model.cap if isinstance(model, TriggerModel) else None
    return Definition(
        kind=kind,
        name=model.name,
        version=model.version,
        description=model.description,
        condition=condition,
        include=tuple(model.include),
        channels=tuple(model.channels),
        purpose=None if model.consent == NO_CONSENT else model.consent,
        source=source,
        action=model.action if isinstance(model, TriggerModel) else None,
        cap_max=cap.max if cap else 1,
        cap_per=parse_duration(cap.per, "per") if cap else 0,
    )


def _validated(data: Any, source: str) -> FileModel:
    return validate_document(
        FileModel, data, source, "segment definitions", "with segments: and/or triggers:"
    )


def definition_files(directory: Path | None) -> list[Path]:
    if directory is None or not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_definitions(directory: Path | None, built_ins: bool = True) -> Definitions:
    """The definitions in ``directory`` (missing: none) plus the built-in triggers.

    A name defined twice (other than a directory trigger replacing a built-in) is an error naming
    both files; so is any invalid field, operator or value (one line, file and place).
    """
    models: dict[tuple[str, str], tuple[SegmentModel, str]] = {}
    if built_ins:
        source = f"{PACKAGE.replace('.', '/')}/{BUILT_IN_TRIGGERS} (built in)"
        for trigger in _validated(read_packaged_yaml(PACKAGE, BUILT_IN_TRIGGERS), source).triggers:
            models[("trigger", trigger.name)] = (trigger, source)
    built_in = set(models)
    for path in definition_files(directory):
        document = _validated(read_yaml(path, "segment definitions"), str(path))
        for kind, items in (("segment", document.segments), ("trigger", document.triggers)):
            for model in items:
                key = (kind, model.name)
                if key in models and key not in built_in:
                    raise PatronError(
                        f"{path}: {kind} {model.name!r} is already defined in {models[key][1]}", EXIT_INVALID
                    )
                models[key] = (model, str(path))
                built_in.discard(key)
    names: dict[str, str] = {}
    for kind, name in models:
        if name in names:
            raise PatronError(
                f"{models[(kind, name)][1]}: {name!r} names both a segment and a trigger; "
                "names are shared (the change events carry them)",
                EXIT_INVALID,
            )
        names[name] = kind
    compiled = {key: _compile(key[0], model, source) for key, (model, source) in sorted(models.items())}
    enabled = {key: d for key, d in compiled.items() if models[key][0].enabled}
    canonical = [models[key][0].model_dump(mode="json") for key in sorted(enabled)]
    return Definitions(
        segments=tuple(d for (kind, _), d in enabled.items() if kind == "segment"),
        triggers=tuple(d for (kind, _), d in enabled.items() if kind == "trigger"),
        fingerprint=hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16],
        disabled=tuple(key[1] for key in sorted(compiled) if key not in enabled),
    )
