"""Schema registry interface and the embedded, file-backed registry.

The embedded registry keeps subjects, versions and ids in ``DATA/registry.db`` (SQLite,
so several processes can register at once without corrupting it). With
``PATRON_REGISTRY=http://host:port`` the Confluent-compatible HTTP client is used
instead; both refuse a new version that breaks the subject's compatibility rule.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from patron.schemas.compatibility import COMPATIBILITY_LEVELS, check_compatibility
from patron.sqlite import immediate_transaction


class IncompatibleSchema(ValueError):
    """A new schema version breaks the subject's compatibility rule; the message names the field."""


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    version: int
    schema_id: int
    schema: dict[str, Any]


class SchemaRegistry(Protocol):
    """What Patron needs of a registry, embedded or Confluent-compatible."""

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its global id."""
        ...

    def schema(self, schema_id: int) -> dict[str, Any]:
        """The schema with this id (raises KeyError if unknown)."""
        ...

    def subjects(self) -> list[str]: ...

    def versions(self, subject: str) -> list[int]: ...

    def get(self, subject: str, version: int | None = None) -> RegisteredSchema:
        """One version of a subject; the latest when ``version`` is None."""
        ...

    def check(self, subject: str, schema: dict[str, Any]) -> list[str]:
        """Problems that would make registering ``schema`` fail; empty when it is compatible."""
        ...

    def compatibility(self, subject: str | None = None) -> str: ...

    def set_compatibility(self, level: str, subject: str | None = None) -> None: ...


def schema_text(schema: dict[str, Any]) -> str:
    """A stable text form of a schema, used to recognise a schema that is already registered."""
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


class FileRegistry:
    """The embedded registry, one SQLite file; global ids, per-subject versions from 1."""

    def __init__(self, path: str | Path, default_compatibility: str = "BACKWARD"):
        if default_compatibility not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"unknown compatibility {default_compatibility!r}; use one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._default = default_compatibility
        self._by_id: dict[int, dict[str, Any]] = {}
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(
                """
                CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
                CREATE TABLE IF NOT EXISTS versions (
                    subject TEXT NOT NULL, version INTEGER NOT NULL, schema_id INTEGER NOT NULL,
                    PRIMARY KEY (subject, version));
                CREATE TABLE IF NOT EXISTS config (subject TEXT PRIMARY KEY, compatibility TEXT NOT NULL);
                """
            )
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            with immediate_transaction(db):
                yield db
        finally:
            db.close()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        text = schema_text(schema)
        with self._write() as db:
            row = db.execute(
                "SELECT s.id FROM versions v JOIN schemas s ON s.id = v.schema_id WHERE v.subject = ? AND s.text = ?",
                (subject, text),
            ).fetchone()
            if row:
                return int(row[0])
            problems = self._problems(db, subject, schema)
            if problems:
                raise IncompatibleSchema(
                    f"schema for subject {subject!r} is not {self._level(db, subject)} compatible: "
                    + "; ".join(problems)
                )
            db.execute("INSERT OR IGNORE INTO schemas (text) VALUES (?)", (text,))
            schema_id = int(db.execute("SELECT id FROM schemas WHERE text = ?", (text,)).fetchone()[0])
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE subject = ?", (subject,)
            ).fetchone()
            db.execute("INSERT INTO versions VALUES (?, ?, ?)", (subject, latest + 1, schema_id))
            return schema_id

    def _level(self, db: sqlite3.Connection, subject: str) -> str:
        row = db.execute(
            "SELECT compatibility FROM config WHERE subject IN (?, '') ORDER BY subject DESC", (subject,)
        ).fetchone()
        return row[0] if row else self._default

    def _problems(self, db: sqlite3.Connection, subject: str, schema: dict[str, Any]) -> list[str]:
        previous = [
            orjson.loads(text)
            for (text,) in db.execute(
                "SELECT s.text FROM versions v JOIN schemas s ON s.id = v.schema_id WHERE v.subject = ? ORDER BY v.version",
                (subject,),
            )
        ]
        return check_compatibility(schema, previous, self._level(db, subject))

    def schema(self, schema_id: int) -> dict[str, Any]:
        found = self._by_id.get(schema_id)
        if found is None:
            rows = self._read("SELECT text FROM schemas WHERE id = ?", (schema_id,))
            if not rows:
                raise KeyError(f"schema id {schema_id} is not in the registry at {self.path}")
            found = self._by_id[schema_id] = orjson.loads(rows[0][0])
        return found

    def subjects(self) -> list[str]:
        return [s for (s,) in self._read("SELECT DISTINCT subject FROM versions ORDER BY subject")]

    def versions(self, subject: str) -> list[int]:
        return [
            v
            for (v,) in self._read(
                "SELECT version FROM versions WHERE subject = ? ORDER BY version", (subject,)
            )
        ]

    def get(self, subject: str, version: int | None = None) -> RegisteredSchema:
        rows = self._read(
            "SELECT v.version, s.id, s.text FROM versions v JOIN schemas s ON s.id = v.schema_id "
            "WHERE v.subject = ? AND (? IS NULL OR v.version = ?) ORDER BY v.version DESC LIMIT 1",
            (subject, version, version),
        )
        if not rows:
            what = f"version {version} of subject" if version else "subject"
            raise KeyError(f"{what} {subject!r} is not registered")
        v, schema_id, text = rows[0]
        return RegisteredSchema(subject, v, schema_id, orjson.loads(text))

    def check(self, subject: str, schema: dict[str, Any]) -> list[str]:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            return self._problems(db, subject, schema)
        finally:
            db.close()

    def compatibility(self, subject: str | None = None) -> str:
        rows = self._read(
            "SELECT compatibility FROM config WHERE subject IN (?, '') ORDER BY subject DESC",
            (subject or "",),
        )
        return rows[0][0] if rows else self._default

    def set_compatibility(self, level: str, subject: str | None = None) -> None:
        level = level.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise ValueError(f"unknown compatibility {level!r}; use one of {', '.join(COMPATIBILITY_LEVELS)}")
        with self._write() as db:
            db.execute(
                "INSERT INTO config VALUES (?, ?) ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                (subject or "", level),
            )
