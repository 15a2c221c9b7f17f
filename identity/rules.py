"""Identity-resolution rules: which identifiers link profiles, in what priority, how many, and which never.

The rules are data (YAML) because every deployment differs: a shop trusts its customer id more
than an email, a call centre shares one kiosk device. ``IdentityRules`` validates them once with
pydantic; the resolver then reads ``rules.plan``, plain dicts and frozensets built at load time,
so no pydantic object is touched per event.

Identifier *kinds* are the envelope's identifier fields (``user_id``, ``anonymous_id``, ``email``,
``phone``, ``device_id``) and ``external:<name>`` for ``external_ids[name]``. In ``limits``,
``blocklist`` and ``link_kinds`` the kind ``external:*`` stands for every external name the rules
do not list by name.
"""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from patron.yaml_config import no_repeats, read_packaged_yaml, read_yaml, validate_document

BASE_KINDS = ("user_id", "anonymous_id", "email", "phone", "device_id")
EXTERNAL = "external:"
ANY_EXTERNAL = "external:*"
DEFAULT_RULES_FILE = "default_rules.yaml"
# Fixed so that profile ids are the same on every machine and every replay; a deployment that does
# not want profile ids to be guessable hashes of identifiers sets its own (secret) namespace.
DEFAULT_PROFILE_NAMESPACE = uuid.UUID("5b0c6a0e-3f4d-5e8a-9a51-7d1f3c2b9e40")


def _check_kind(kind: str, *, wildcard: bool) -> str:
    if kind in BASE_KINDS:
        return kind
    if kind.startswith(EXTERNAL):
        name = kind[len(EXTERNAL) :]
        if name == "*" and wildcard:
            return kind
        if name and name != "*" and ":" not in name:
            return kind
        raise ValueError(
            f"{kind!r} is not a valid external kind; write external:<name> with a name without ':'"
        )
    close = difflib.get_close_matches(kind, [*BASE_KINDS, "external:<name>"], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown identifier kind {kind!r}{hint}; use one of {', '.join(BASE_KINDS)} or external:<name>"
    )


def _text(value: Any) -> Any:
    """YAML reads unquoted ``null``/``~``/``no`` as non-strings; say so instead of a generic type error."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} ({type(value).__name__}) is not text; quote it in YAML, e.g. 'null'")
    return value


def _limit(value: int) -> int:
    if value < 1:
        raise ValueError(f"limit must be at least 1 (got {value}); remove the key for no limit")
    return value


Kind = Annotated[str, BeforeValidator(_text), AfterValidator(lambda kind: _check_kind(kind, wildcard=False))]
KindOrWildcard = Annotated[
    str, BeforeValidator(_text), AfterValidator(lambda kind: _check_kind(kind, wildcard=True))
]
Text = Annotated[str, BeforeValidator(_text)]
Limit = Annotated[int, AfterValidator(_limit)]


@dataclass(frozen=True, slots=True)
class RulePlan:
    """The rules flattened for the per-event path: lookups are dict/frozenset hits, nothing else.

    ``rank`` and ``limit`` of external kinds not named in the rules are resolved once per new name
    and memoised in ``_external``; this stays deterministic because the answer depends only on the name.
    """

    base: tuple[tuple[str, float], ...]  # (field, rank), highest priority first
    ranks: dict[str, float]
    limits: dict[str, int]
    blocked_any: frozenset[str]
    blocked: dict[str, frozenset[str]]
    links: frozenset[str]
    external_rank: float
    external_limit: int | None
    external_blocked: frozenset[str]
    external_links: bool
    namespace: uuid.UUID
    _external: dict[str, tuple[float, int | None, frozenset[str], bool]] = field(default_factory=dict)

    def external(self, kind: str) -> tuple[float, int | None, frozenset[str], bool]:
        """(rank, limit, blocked values, may link) of an ``external:<name>`` kind."""
        found = self._external.get(kind)
        if found is None:
            rank = self.ranks.get(kind, self.external_rank)
            limit = self.limits.get(kind, self.external_limit)
            blocked = self.blocked.get(kind, frozenset()) | self.external_blocked
            links = kind in self.links or (kind not in self.ranks and self.external_links)
            found = self._external[kind] = (rank, limit, blocked, links)
        return found

    def rank(self, kind: str) -> float:
        return self.ranks[kind] if kind in self.ranks else self.external(kind)[0]

    def limit(self, kind: str) -> int | None:
        """Most identifiers of ``kind`` one profile may hold; None for no limit."""
        if kind.startswith(EXTERNAL):
            return self.external(kind)[1]
        return self.limits.get(kind)

    def is_blocked(self, kind: str, value: str) -> bool:
        """Blocklists compare trimmed, lower-cased text: ``NULL`` and ``null`` are the same junk."""
        text = value.strip().lower()
        if text in self.blocked_any:
            return True
        values = self.external(kind)[2] if kind.startswith(EXTERNAL) else self.blocked.get(kind)
        return values is not None and text in values


class IdentityRules(BaseModel):
    """Validated identity rules; ``load_rules`` reads them from YAML, ``default_rules`` gives the shipped set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    priority: list[Kind] = Field(
        description="Identifier kinds, most trusted first; decides a new profile's id and which link wins."
    )
    unknown_external_below: Kind = Field(
        "email", description="External names not listed in priority rank just below this kind."
    )
    limits: dict[KindOrWildcard, Limit] = Field(
        default_factory=dict,
        description="Most identifiers of a kind one profile may hold (absent: no limit).",
    )
    blocked_values: list[Text] = Field(
        default_factory=list, description="Values ignored for every kind (placeholders such as 'null')."
    )
    blocklist: dict[KindOrWildcard, list[Text]] = Field(
        default_factory=dict, description="Values ignored for one kind (test emails, a shared kiosk device)."
    )
    link_kinds: list[KindOrWildcard] | None = Field(
        None, description="Kinds that take part in resolution at all; absent: every kind."
    )
    profile_namespace: uuid.UUID = Field(
        DEFAULT_PROFILE_NAMESPACE, description="uuid5 namespace of profile ids."
    )

    @field_validator("priority")
    @classmethod
    def _priority(cls, kinds: list[str]) -> list[str]:
        no_repeats(kinds)
        missing = [kind for kind in BASE_KINDS if kind not in kinds]
        if missing:
            raise ValueError(f"every identifier field needs a place; add {', '.join(missing)}")
        return kinds

    @model_validator(mode="after")
    def _below_is_ranked(self) -> IdentityRules:
        if self.unknown_external_below not in self.priority:
            raise ValueError(
                f"unknown_external_below: {self.unknown_external_below!r} is not in priority; name a kind listed there"
            )
        return self

    @cached_property
    def plan(self) -> RulePlan:
        """The rules compiled for the per-event path (cached: a plain attribute read after the first)."""
        ranks = {kind: float(i) for i, kind in enumerate(self.priority)}
        links = frozenset(self.link_kinds if self.link_kinds is not None else [*self.priority, ANY_EXTERNAL])
        blocked = {
            kind: frozenset(v.strip().lower() for v in values) for kind, values in self.blocklist.items()
        }
        return RulePlan(
            base=tuple(sorted(((k, ranks[k]) for k in BASE_KINDS if k in links), key=lambda item: item[1])),
            ranks=ranks,
            limits=dict(self.limits),
            blocked_any=frozenset(v.strip().lower() for v in self.blocked_values),
            blocked=blocked,
            links=links,
            external_rank=ranks[self.unknown_external_below] + 0.5,
            external_limit=self.limits.get(ANY_EXTERNAL),
            external_blocked=blocked.get(ANY_EXTERNAL, frozenset()),
            external_links=ANY_EXTERNAL in links,
            namespace=self.profile_namespace,
        )


def parse_rules(data: Any, source: str) -> IdentityRules:
    """Validate a parsed YAML document; errors name ``source`` and the offending key, one per line."""
    return validate_document(IdentityRules, data, source, "identity rules", "with a 'priority' key")


def load_rules(path: Path | None = None) -> IdentityRules:
    """The rules in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    if path is None:
        return default_rules()
    return parse_rules(read_yaml(path, "identity rules"), str(path))


def default_rules() -> IdentityRules:
    """The rules shipped as ``patron/identity/default_rules.yaml``."""
    return parse_rules(read_packaged_yaml("patron.identity", DEFAULT_RULES_FILE), DEFAULT_RULES_FILE)
