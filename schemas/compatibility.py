"""Avro schema compatibility as the Confluent Schema Registry defines it.

A level says which readers must cope with which writers: BACKWARD means the new
schema can read data written with the latest registered version, FORWARD means that
version can read data written with the new one, FULL means both; the ``_TRANSITIVE``
variants check every registered version instead of only the latest, and NONE checks
nothing. "Can read" is Avro schema resolution (the specification's rules, which the
registry applies statically): fields matched by name or reader alias, a reader field
the writer lacks needs a default, the numeric and string/bytes promotions, every
writer union branch must be readable, enum symbols, fixed sizes, named types by
name or alias, logical types judged by their underlying type.

fastavro applies these rules only while decoding a record (privately and shallowly:
it learns of a missing default or an unknown enum symbol when data hits it), so the
static check is written here, on top of ``fastavro.parse_schema``, which validates
each schema and qualifies every name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, UnknownType

COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)

_DIRECTIONS = {
    "NONE": (),
    "BACKWARD": ("BACKWARD",),
    "FORWARD": ("FORWARD",),
    "FULL": ("BACKWARD", "FORWARD"),
}
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}
_NAMED = ("record", "error", "enum", "fixed")


class InvalidSchema(ValueError):
    """Not a valid Avro schema: a registry refuses it whatever the compatibility level."""


def check_level(level: str) -> str:
    """``level`` upper-cased, or ValueError naming the levels there are."""
    upper = level.upper()
    if upper not in COMPATIBILITY_LEVELS:
        raise ValueError(
            f"unknown compatibility level {level!r}; use one of {', '.join(COMPATIBILITY_LEVELS)}"
        )
    return upper


def check_compatibility(
    new: dict[str, Any],
    previous: Sequence[dict[str, Any]],
    level: str,
    *,
    versions: Sequence[int] | None = None,
) -> list[str]:
    """Problems that make ``new`` break ``level`` against the ``previous`` versions (oldest first).

    Each problem is one line naming the field by dotted path and saying how to fix it.
    ``versions`` are the version numbers of ``previous`` for those messages (default 1, 2, ...).
    ``new`` is validated even when there is nothing to compare it with: InvalidSchema if it is not Avro.
    """
    level = check_level(level)
    new_schema = _Parsed.of(new, "the new schema")
    numbers = list(versions) if versions is not None else list(range(1, len(previous) + 1))
    if len(numbers) != len(previous):
        raise ValueError(f"{len(numbers)} version numbers given for {len(previous)} previous schemas")
    pairs = list(zip(numbers, previous, strict=True))
    against = pairs if level.endswith("_TRANSITIVE") else pairs[-1:]
    found: dict[tuple[str, _Clash], list[int]] = {}
    for direction in _DIRECTIONS[level.removesuffix("_TRANSITIVE")]:
        for version, schema in against:
            old = _Parsed.of(schema, f"version {version}")
            reader, writer = (new_schema, old) if direction == "BACKWARD" else (old, new_schema)
            for clash in _Resolution(reader, writer).clashes(writer.schema, reader.schema, ""):
                found.setdefault((direction, clash), []).append(version)
    return [_phrase(clash, direction, level, vs) for (direction, clash), vs in found.items()]


@dataclass(frozen=True)
class _Parsed:
    """A schema as fastavro parsed it, with its named types for looking up references by name."""

    schema: Any
    named: dict[str, Any]

    @classmethod
    def of(cls, schema: Any, what: str) -> _Parsed:
        named: dict[str, Any] = {}
        try:
            parsed = fastavro.parse_schema(schema, named_schemas=named, _write_hint=False)
        except KeyError as exc:
            raise InvalidSchema(
                f"{what} is not a valid Avro schema: a type lacks its {exc.args[0]!r} attribute"
            ) from None
        except UnknownType as exc:
            raise InvalidSchema(f"{what} is not a valid Avro schema: unknown type {exc.name!r}") from None
        except (SchemaParseException, ValueError, TypeError, AttributeError) as exc:
            raise InvalidSchema(f"{what} is not a valid Avro schema: {exc}") from None
        return cls(parsed, named)

    def resolve(self, schema: Any) -> Any:
        """A named-type reference replaced by its definition; anything else as it is."""
        if isinstance(schema, str) and schema in self.named:
            return self.named[schema]
        return schema


@dataclass(frozen=True)
class _Clash:
    """One reason a reader cannot read a writer's data, before it is phrased for a direction.

    ``kind`` is one of: type, name, size, missing (a reader field without default the
    writer lacks), symbols (writer enum symbols the reader lacks), branches (writer union
    branches no reader branch reads). ``writer``/``reader`` describe the two sides.
    """

    path: str
    kind: str
    writer: str = ""
    reader: str = ""
    hint: str = ""


class _Resolution:
    """Avro schema resolution of one writer schema by one reader schema, collecting every clash."""

    def __init__(self, reader: _Parsed, writer: _Parsed):
        self.reader = reader
        self.writer = writer
        self._records_in_progress: set[tuple[str, str]] = set()

    def clashes(self, writer: Any, reader: Any, path: str) -> list[_Clash]:
        writer, reader = self.writer.resolve(writer), self.reader.resolve(reader)
        if isinstance(writer, list):
            return self._writer_union(writer, reader, path)
        if isinstance(reader, list):
            found = self._reader_union(writer, reader, path)
            return [_Clash(path, "type", _describe(writer), _describe(reader))] if found is None else found
        if not self._same_kind(writer, reader):
            if _kind(writer) == _kind(reader) and _kind(writer) in _NAMED:
                return [_Clash(path, "name", writer["name"], reader["name"])]
            return [_Clash(path, "type", _describe(writer), _describe(reader))]
        kind = _kind(writer)
        if kind in ("record", "error"):
            return self._record(writer, reader, path)
        if kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return [_Clash(path, "symbols", ", ".join(missing))]
        elif kind == "fixed" and writer["size"] != reader["size"]:
            return [_Clash(path, "size", str(writer["size"]), str(reader["size"]))]
        elif kind == "array":
            return self.clashes(writer["items"], reader["items"], f"{path}[]")
        elif kind == "map":
            return self.clashes(writer["values"], reader["values"], f"{path}{{}}")
        return []

    def _writer_union(self, writer: list[Any], reader: Any, path: str) -> list[_Clash]:
        """Every branch the writer may have used must be readable."""
        found: list[_Clash] = []
        unreadable: list[Any] = []
        for branch in writer:
            branch = self.writer.resolve(branch)
            if isinstance(reader, list):
                branch_clashes = self._reader_union(branch, reader, path)
            else:
                branch_clashes = (
                    self.clashes(branch, reader, path) if self._same_kind(branch, reader) else None
                )
            if branch_clashes is None:
                unreadable.append(branch)
            else:
                found += branch_clashes
        if unreadable and isinstance(reader, list):
            found.insert(0, _Clash(path, "branches", ", ".join(_describe(b) for b in unreadable)))
        elif unreadable:
            found.insert(0, _Clash(path, "type", _describe(writer), _describe(reader)))
        return found

    def _reader_union(self, writer: Any, reader: list[Any], path: str) -> list[_Clash] | None:
        """Clashes with the reader branch that would read ``writer``; None when no branch is of its kind."""
        candidates = [b for b in (self.reader.resolve(b) for b in reader) if self._same_kind(writer, b)]
        results = [self.clashes(writer, branch, path) for branch in candidates]
        if any(not r for r in results):
            return []
        return results[0] if results else None

    def _record(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> list[_Clash]:
        key = (writer["name"], reader["name"])
        if key in self._records_in_progress:  # a recursive type: assume what is being checked holds
            return []
        self._records_in_progress.add(key)
        try:
            by_name = {f["name"]: f for f in writer["fields"]}
            matched: set[str] = set()
            found: list[_Clash] = []
            missing: list[dict[str, Any]] = []
            for field in reader["fields"]:
                names = [field["name"], *field.get("aliases", [])]
                source = next((by_name[n] for n in names if n in by_name), None)
                if source is None:
                    if "default" not in field:
                        missing.append(field)
                    continue
                matched.add(source["name"])
                found += self.clashes(source["type"], field["type"], _join(path, field["name"]))
            unmatched = [name for name in by_name if name not in matched]
            for field in missing:
                found.append(_Clash(_join(path, field["name"]), "missing", hint=" or ".join(unmatched)))
            return found
        finally:
            self._records_in_progress.discard(key)

    def _same_kind(self, writer: Any, reader: Any) -> bool:
        """Whether ``reader`` can read ``writer`` at the top level (its insides are checked apart)."""
        writer, reader = self.writer.resolve(writer), self.reader.resolve(reader)
        if isinstance(writer, list) or isinstance(reader, list):
            return False
        w, r = _kind(writer), _kind(reader)
        if w in _NAMED:
            return w == r and _names_match(writer, reader)
        return w == r or (w, r) in _PROMOTIONS


def _kind(schema: Any) -> str:
    """The Avro type of a parsed schema (a logical type counts as its underlying type)."""
    return schema if isinstance(schema, str) else schema["type"]


def _names_match(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    """Named types match by unqualified name, or when the reader lists the writer's name as an alias."""
    w_full, r_full = writer["name"], reader["name"]
    w_short = w_full.rsplit(".", 1)[-1]
    if w_short == r_full.rsplit(".", 1)[-1]:
        return True
    namespace = r_full.rsplit(".", 1)[0] if "." in r_full else ""
    aliases = {a if "." in a or not namespace else f"{namespace}.{a}" for a in reader.get("aliases", [])}
    return w_full in aliases or w_short in reader.get("aliases", [])


def _describe(schema: Any) -> str:
    """A short human-readable form of a (parsed) type: ``long (timestamp-micros)``, ``union [null, string]``."""
    if isinstance(schema, list):
        return f"union [{', '.join(_describe(b) for b in schema)}]"
    if isinstance(schema, str):
        return schema
    kind = schema["type"]
    if kind in _NAMED:
        return f"{'record' if kind == 'error' else kind} {schema['name']}"
    if kind == "array":
        return f"array<{_describe(schema['items'])}>"
    if kind == "map":
        return f"map<{_describe(schema['values'])}>"
    logical = schema.get("logicalType")
    return f"{kind} ({logical})" if logical else kind


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _versions(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"version {numbers[0]}"
    return f"versions {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def _phrase(clash: _Clash, direction: str, level: str, numbers: list[int]) -> str:
    """One line for a clash, in terms of the old and the new schema (the reader is new under BACKWARD)."""
    backward = direction == "BACKWARD"
    versions = _versions(numbers)
    old, new = (clash.writer, clash.reader) if backward else (clash.reader, clash.writer)
    where = clash.path or "the schema itself"
    cannot = (
        f"data written with {versions} could not be read"
        if backward
        else f"consumers still reading with {versions} could not read new data"
    )
    forbids = f"which {level} compatibility forbids ({cannot})"
    if clash.kind == "type":
        return f"{where}: type changed from {old} to {new}, {forbids}; add a new field instead"
    if clash.kind == "size":
        return f"{where}: fixed size changed from {old} to {new}, {forbids}; add a new field instead"
    if clash.kind == "name":
        fix = f'list "{old}" in the new type\'s "aliases"' if backward else f"keep the name {old}"
        return f"{where}: type name changed from {old} to {new}, {forbids}; {fix}"
    if clash.kind == "missing":
        if backward:
            rename = (
                f' (if it renames {clash.hint}, list the old name in its "aliases" instead)'
                if clash.hint
                else ""
            )
            return (
                f"{where}: new field has no default, so data written with {versions} cannot be read, "
                f"which {level} compatibility forbids; give it a default{rename}"
            )
        return (
            f"{where}: field was removed (or renamed) but has no default in {versions}, so consumers still "
            f"reading with {versions} could not read new data, which {level} compatibility forbids; keep the field"
        )
    if clash.kind == "symbols":
        if backward:
            return (
                f"{where}: enum symbols removed ({clash.writer}) and the new enum has no default, {forbids}; "
                'keep the symbols or give the enum a "default" symbol'
            )
        return (
            f"{where}: enum symbols added ({clash.writer}) that {versions} does not know and has no default for, "
            f"{forbids}; do not add symbols under {level}"
        )
    if backward:
        return f"{where}: union branches removed ({clash.writer}), {forbids}; keep those branches"
    return f"{where}: union branches added ({clash.writer}), {forbids}; add a new field instead"
