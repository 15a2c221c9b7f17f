"""Personal data in analysts' SQL: which snapshot columns hold it, their keyed hashes, and who sees it raw.

Analysts query snapshots (`patron sql`, `patron report`) without seeing personal data: the two tables
that hold it, ``identities`` (every identifier of every profile) and ``profiles`` (the traits), are
also written *masked* into the snapshot's ``masked/`` directory, and an analyst's session reads only
those, never the raw files (see ``SqlSession``). A masked value is a keyed hash, ``h:`` + 24 hex digits
of SHA-256 over a per-installation secret and the value: equal values give equal hashes in every table
and every snapshot, so analysts can still join, group and count distinct customers, but without the
secret a hash cannot be checked against a guessed email. The secret lives in the data directory
(``DATA/pii_hash.key``, created on first use, mode 0600), outside every snapshot, so SQL cannot read it.

Which values are personal comes from the schemas (fields marked ``"pii": true``) and the profile rules:
an identifier kind is personal when its ``Identifiers`` field is (external ids always are); a trait is
kept in clear only when every rule that sets it reads a non-personal field or a constant. Traits
spread from a free-form map (``identify``'s ``traits``) have unknowable names, so they are hashed.

The raw tables need the *pii* role: ``patron sql --role pii`` (or ``PATRON_SQL_ROLE=pii``), granted to
operating-system users by the operator in ``DATA/access.yaml``::

    roles:
      pii:
        users: [alice, bob]
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import yaml

from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.projections.profile_rules import ProfilePlan, TraitSource
from patron.schemas.catalogue import Catalogue
from patron.secret_file import secret_file

ANALYST = "analyst"
PII = "pii"
ROLES = (ANALYST, PII)
MASKED_DIR = "masked"
"""The snapshot's sub-directory holding the masked copies of ``PII_TABLES``."""
PII_TABLES = ("identities", "profiles")
SECRET_FILE = "pii_hash.key"
ACCESS_FILE = "access.yaml"
HASH_PREFIX = "h:"
HASH_DIGITS = 24
"""96 bits of the SHA-256: no collisions in practice for billions of values, still short to read."""


def pii_identifier_kinds(catalogue: Catalogue) -> tuple[frozenset[str], frozenset[str]]:
    """(personal, clear) identifier kinds from the ``Identifiers`` schema; kinds in neither set are
    external ids, which the schema marks personal as a whole."""
    personal, clear = set(), set()
    any_type = next(iter(catalogue.event_types()))
    marked = set(catalogue.get(any_type).pii_fields)
    for name in _identifier_fields(catalogue.get(any_type).schema):
        (personal if f"envelope.identifiers.{name}" in marked else clear).add(name)
    personal.discard("external_ids")
    return frozenset(personal), frozenset(clear)


def _identifier_fields(schema: dict[str, Any]) -> list[str]:
    envelope = next(f for f in schema["fields"] if f["name"] == "envelope")["type"]
    identifiers = next(f for f in envelope["fields"] if f["name"] == "identifiers")["type"]
    return [field["name"] for field in identifiers["fields"]]


def clear_traits(plan: ProfilePlan, catalogue: Catalogue) -> frozenset[str]:
    """Traits every rule fills from a non-personal field or a constant (see the module docstring)."""
    clear: set[str] = set()
    personal: set[str] = set()
    rules: list[tuple[str | None, TraitSource]] = [(None, s) for s in plan.every_event]
    rules += [(event_type, s) for event_type, sources in plan.traits.items() for s in sources]
    for event_type, source in rules:
        if source.spread:
            continue  # names unknown until the data arrives: hashed unless a clear rule names them
        if source.path and _is_personal(".".join(source.path), event_type, catalogue):
            personal.add(source.trait)
        else:
            clear.add(source.trait)
    return frozenset(clear - personal)


def _is_personal(path: str, event_type: str | None, catalogue: Catalogue) -> bool:
    types = [event_type] if event_type is not None else list(catalogue.event_types())
    return any(
        path == marked or path.startswith(marked + ".")
        for name in types
        for marked in catalogue.get(name).pii_fields
    )


# -- the secret and the hash --------------------------------------------------------------------
def hash_secret(data_dir: Path) -> str:
    """The installation's hashing secret (hex), created on first use readable by its owner only."""
    try:
        return secret_file(data_dir / SECRET_FILE).hex()
    except ValueError as exc:
        raise PatronError(str(exc), EXIT_INVALID) from None


TRAIT_TEXT = "coalesce(json_extract_string(e.value, '$'), e.value)"
"""A trait's value is JSON; its text is hashed (so a trait email and an identity email hash alike), and
the hash is stored as JSON again, like every trait value."""


def _hash_sql(value: str, secret: str) -> str:
    """The SQL expression of a value's keyed hash (the secret is a hex literal: nothing to escape)."""
    return f"'{HASH_PREFIX}' || left(sha256('{secret}:' || {value}), {HASH_DIGITS})"


def _quoted_list(names: Iterable[str]) -> str:
    return ", ".join("'" + name.replace("'", "''") + "'" for name in sorted(names)) or "NULL"


def write_masked(directory: Path, secret: str, plan: ProfilePlan, catalogue: Catalogue) -> None:
    """``masked/identities.parquet`` and ``masked/profiles.parquet`` beside the raw files of a snapshot."""
    out = directory / MASKED_DIR
    out.mkdir(exist_ok=True)
    _, clear_kinds = pii_identifier_kinds(catalogue)
    kept = clear_traits(plan, catalogue)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET enable_progress_bar = false")
        queries = {
            "identities": (
                f"SELECT profile_id, kind, CASE WHEN kind IN ({_quoted_list(clear_kinds)}) THEN value "
                f"ELSE {_hash_sql('value', secret)} END AS value FROM read_parquet(?)"
            ),
            "profiles": (
                "SELECT * REPLACE (map_from_entries(list_transform(map_entries(traits), lambda e: "
                f"struct_pack(key := e.key, value := CASE WHEN e.key IN ({_quoted_list(kept)}) THEN e.value "
                f"ELSE to_json({_hash_sql(TRAIT_TEXT, secret)})::VARCHAR END))) AS traits) FROM read_parquet(?)"
            ),
        }
        for table, query in queries.items():
            relation = con.sql(query.replace("?", _literal(directory / f"{table}.parquet")))
            relation.write_parquet(str(out / f"{table}.parquet"), compression="zstd")
    finally:
        con.close()


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# -- who may see raw values ---------------------------------------------------------------------
def check_role(role: str, data_dir: Path, user: str | None = None) -> str:
    """``role`` when the current user holds it; one clear line (exit 3) when not granted."""
    if role not in ROLES:
        raise PatronError(f"unknown SQL role {role!r}: use {' or '.join(ROLES)}", EXIT_INVALID)
    if role == ANALYST:
        return role
    user = user or getpass.getuser()
    granted = _granted_users(data_dir / ACCESS_FILE, role)
    if user not in granted:
        raise PatronError(
            f"role {role!r} is not granted to user {user!r}: the operator lists it in "
            f"{data_dir / ACCESS_FILE} (roles: {role}: users: [{user}]); without it, personal data is hashed",
            EXIT_REFUSED,
        )
    return role


def _granted_users(path: Path, role: str) -> set[str]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return set()
    except yaml.YAMLError as exc:
        raise PatronError(f"{path}: not valid YAML ({exc}); fix the file", EXIT_INVALID) from None
    users = (((config.get("roles") or {}).get(role) or {}).get("users")) if isinstance(config, dict) else None
    if users is None:
        return set()
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise PatronError(f"{path}: roles.{role}.users must be a list of user names", EXIT_INVALID)
    return set(users)
