"""Probabilistic-matching rules: field weights, thresholds, blocking keys, where profiles keep each field.

Data (YAML, ``identity/matching.yaml`` shipped) because the right weights depend on the data: a
B2B CRM where everyone has a company and a title is not a consumer shop with birthdays and
postcodes. ``MatchRules`` validates once; the matcher reads ``weights`` (plain floats) per pair.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from patron.yaml_config import load_document, validate_document

DEFAULT_MATCH_FILE = "matching.yaml"
FIELDS = (
    "first_name",
    "last_name",
    "company",
    "title",
    "email",
    "phone",
    "address",
    "city",
    "postcode",
    "region",
    "country",
    "birthday",
)
"""Comparable fields, in the order explanations list them."""
TRAIT_FIELDS = ("name", *(f for f in FIELDS if f not in ("email", "phone")))
"""Fields read from profile traits (``name`` is the full name, split when first/last are missing)."""
BLOCKING_KEYS = ("surname", "given", "company", "email", "phone", "birthday", "postcode")


def _did_you_mean(name: str, known: tuple[str, ...], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; use one of {', '.join(known)}"


class FieldRule(BaseModel):
    """m/u probabilities and the similarity band of one field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    m: float = Field(gt=0, lt=1, description="P(values agree | same person).")
    u: float = Field(gt=0, lt=1, description="P(values agree | different people).")
    agree: float = Field(0.94, ge=0, le=1, description="Similarity counted as full agreement.")
    partial: float = Field(0.80, ge=0, le=1, description="Similarity below which it is full disagreement.")

    @model_validator(mode="after")
    def _consistent(self) -> FieldRule:
        if self.m <= self.u:
            raise ValueError(
                f"m ({self.m}) must be greater than u ({self.u}): agreement must be likelier for one person"
            )
        if self.partial > self.agree:
            raise ValueError(f"partial ({self.partial}) must not be above agree ({self.agree})")
        return self


class Thresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    auto_merge: float = Field(description="Pairs scoring at least this merge without review.")
    review: float = Field(description="Pairs scoring at least this (below auto_merge) go to review.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.auto_merge:
            raise ValueError(f"review ({self.review}) must not be above auto_merge ({self.auto_merge})")
        return self


class Blocking(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[str] = Field(description="Blocking key families; records sharing a key are compared.")
    max_block_size: int = Field(500, ge=2, description="Blocks larger than this are skipped and reported.")

    @field_validator("keys")
    @classmethod
    def _known_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if key not in BLOCKING_KEYS:
                raise ValueError(_did_you_mean(key, BLOCKING_KEYS, "blocking key"))
        if not keys:
            raise ValueError("list at least one blocking key, or no pair is ever compared")
        return keys


@dataclass(frozen=True, slots=True)
class Weight:
    """A field's points: ``agree`` (> 0) at full agreement, ``disagree`` (< 0) at full disagreement."""

    agree: float
    disagree: float
    agree_at: float
    partial_at: float

    def points(self, similarity: float) -> float:
        if similarity >= self.agree_at:
            return self.agree
        if similarity < self.partial_at or self.agree_at == self.partial_at:
            return self.disagree
        share = (similarity - self.partial_at) / (self.agree_at - self.partial_at)
        return self.disagree + share * (self.agree - self.disagree)


class MatchRules(BaseModel):
    """Validated matching rules; ``load_match_rules`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: Thresholds
    initial_similarity: float = Field(
        0.88, ge=0, le=1, description="Similarity of an initial and a given name starting with it."
    )
    blocking: Blocking
    fields: dict[str, FieldRule]
    traits: dict[str, list[str]] = Field(default_factory=dict, description="Field -> trait names to read.")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, FieldRule]) -> dict[str, FieldRule]:
        for name in fields:
            if name not in FIELDS:
                raise ValueError(_did_you_mean(name, FIELDS, "field"))
        return fields

    @field_validator("traits")
    @classmethod
    def _known_trait_fields(cls, traits: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in traits:
            if name not in TRAIT_FIELDS:
                raise ValueError(_did_you_mean(name, TRAIT_FIELDS, "trait field"))
        return traits

    @cached_property
    def weights(self) -> dict[str, Weight]:
        """Field -> its points, in the order of ``FIELDS`` (the order explanations list them)."""
        return {
            name: Weight(
                agree=math.log2(rule.m / rule.u),
                disagree=math.log2((1 - rule.m) / (1 - rule.u)),
                agree_at=rule.agree,
                partial_at=rule.partial,
            )
            for name in FIELDS
            if (rule := self.fields.get(name)) is not None
        }

    def with_thresholds(self, auto_merge: float | None, review: float | None) -> MatchRules:
        """These rules with thresholds overridden (command-line options), validated again."""
        if auto_merge is None and review is None:
            return self
        data = self.model_dump()
        data["thresholds"] = {
            "auto_merge": self.thresholds.auto_merge if auto_merge is None else auto_merge,
            "review": self.thresholds.review if review is None else review,
        }
        return parse_match_rules(data, "--auto-merge/--review")


def parse_match_rules(data: Any, source: str) -> MatchRules:
    """Validate a parsed YAML document; errors name ``source`` and the offending key."""
    return validate_document(MatchRules, data, source, "matching rules", f"(see {DEFAULT_MATCH_FILE})")


def load_match_rules(path: Path | None = None) -> MatchRules:
    """The rules in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(MatchRules, path, "patron.identity", DEFAULT_MATCH_FILE, "matching rules")
