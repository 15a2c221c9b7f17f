"""Profile rules: which source wins a trait, and which event fields become traits.

The rules are data (YAML) because every deployment trusts its sources differently: one takes
names from the CRM and never from a web form, another the newest address whatever sent it.
``ProfileRules`` validates them once (event types and payload paths are checked against the
catalogue, so a typo fails at load, not silently per event); the fold then reads the compiled
``plan``: plain tuples and dicts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from patron.schemas.catalogue import default_catalogue
from patron.yaml_config import load_document, no_repeats

DEFAULT_RULES_FILE = "profile_rules.yaml"
ANY = "*"
Strategy = Literal["latest", "priority"]


class Constant(BaseModel):
    """A fixed trait value, e.g. ``subscription_status: {value: active}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: str | int | float | bool


@dataclass(frozen=True, slots=True)
class TraitSource:
    """Where one trait comes from: ``path`` into the event, or a ``constant``; ``spread`` for maps."""

    trait: str
    path: tuple[str, ...] = ()
    constant: Any = None
    spread: bool = False


@dataclass(frozen=True, slots=True)
class ProfilePlan:
    """The rules compiled for the per-event fold."""

    ranks: dict[str, int]
    unlisted_rank: int
    default_strategy: Strategy
    strategies: dict[str, Strategy]
    traits: dict[str, tuple[TraitSource, ...]]
    every_event: tuple[TraitSource, ...]

    def rank(self, source: str) -> int:
        """0 for the most trusted source; unlisted sources share the rank after the last listed one."""
        return self.ranks.get(source, self.unlisted_rank)

    def strategy(self, trait: str) -> Strategy:
        return self.strategies.get(trait, self.default_strategy)


def _payload_fields(event_type: str) -> dict[str, Any]:
    schema = default_catalogue().get(event_type).schema
    return {field["name"]: field for field in schema["fields"][1]["type"]["fields"]}


def _check_path(event_type: str, trait: str, path: str) -> None:
    parts = path.split(".")
    if parts[0] not in ("payload", "envelope") or len(parts) < 2:
        raise ValueError(
            f"trait {trait!r}: path {path!r} must start with 'payload.' or 'envelope.' "
            "(e.g. payload.first_name, envelope.context.locale)"
        )
    if parts[0] == "payload" and event_type != ANY:
        fields = _payload_fields(event_type)
        if parts[1] not in fields:
            close = difflib.get_close_matches(parts[1], list(fields), n=1)
            hint = f" (did you mean 'payload.{close[0]}'?)" if close else ""
            raise ValueError(f"trait {trait!r}: {event_type} has no field {parts[1]!r}{hint}")


class ProfileRules(BaseModel):
    """Validated profile rules; ``load_profile_rules`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_priority: list[str] = Field(default_factory=list, description="Sources, most trusted first.")
    default_strategy: Strategy = Field("latest", description="How a trait's value is chosen by default.")
    fields: dict[str, Strategy] = Field(default_factory=dict, description="Per-trait strategy overrides.")
    traits: dict[str, dict[str, str | Constant]] = Field(
        default_factory=dict, description="Event type -> trait -> event path or constant."
    )

    @field_validator("source_priority")
    @classmethod
    def _unique_sources(cls, sources: list[str]) -> list[str]:
        return no_repeats(sources)

    @model_validator(mode="after")
    def _known_event_types_and_paths(self) -> ProfileRules:
        known = default_catalogue().event_types()
        for event_type, specs in self.traits.items():
            if event_type != ANY and event_type not in known:
                close = difflib.get_close_matches(event_type, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"traits: unknown event type {event_type!r}{hint}")
            for trait, spec in specs.items():
                if isinstance(spec, str):
                    _check_path(event_type, trait, spec)
                elif trait == ANY:
                    raise ValueError(
                        f"traits.{event_type}: '*' spreads a map and needs a path, not a constant"
                    )
        return self

    @cached_property
    def plan(self) -> ProfilePlan:
        def compile_specs(specs: dict[str, str | Constant]) -> tuple[TraitSource, ...]:
            return tuple(
                TraitSource(trait, tuple(spec.split(".")), spread=trait == ANY)
                if isinstance(spec, str)
                else TraitSource(trait, constant=spec.value)
                for trait, spec in specs.items()
            )

        return ProfilePlan(
            ranks={source: i for i, source in enumerate(self.source_priority)},
            unlisted_rank=len(self.source_priority),
            default_strategy=self.default_strategy,
            strategies=dict(self.fields),
            traits={t: compile_specs(specs) for t, specs in self.traits.items() if t != ANY},
            every_event=compile_specs(self.traits.get(ANY, {})),
        )


def load_profile_rules(path: Path | None = None) -> ProfileRules:
    """The rules in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(ProfileRules, path, "patron.projections", DEFAULT_RULES_FILE, "profile rules")
