"""Write keys: the secret each source puts in its SDK config, so the collector knows who sends.

Only a SHA-256 hash of each key is stored (in ``DATA/write_keys.db``), so a copy of the data
directory does not leak usable keys; the key itself is shown once, when it is created. The
keys are 256-bit random secrets, so an unsalted fast hash is enough: there is nothing to
brute-force. A short prefix is kept in clear to tell keys apart in listings and to revoke
one without its secret.

Rotation issues a new key and retires the source's old ones, either at once or after a
grace period (the old key's ``revoked_at`` lies in the future) so clients can be
re-configured without losing events.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from patron.errors import PatronError

KEY_MARKER = "ptn_"
PREFIX_CHARS = 8
"""Secret characters shown after the marker in a key's display prefix, e.g. ``ptn_Qm3xK9aZ``."""
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS write_keys (
    key_hash TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    rotated_at TEXT,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS write_keys_source ON write_keys (source);
CREATE INDEX IF NOT EXISTS write_keys_prefix ON write_keys (prefix);
"""


@dataclass(frozen=True)
class WriteKey:
    """One key as stored: never the secret, only its display prefix and its lifecycle times."""

    source: str
    prefix: str
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None or self.revoked_at > now

    def status(self, now: datetime) -> str:
        if self.revoked_at is None:
            return "active"
        if self.revoked_at > now:
            return f"active until {self.revoked_at:%Y-%m-%d %H:%M:%S} UTC (rotated)"
        return "revoked"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class WriteKeyStore:
    """Creates, lists, rotates and revokes write keys; resolves a presented key to its source.

    Each call opens its own SQLite connection, so one store serves the collector's threads.
    """

    def __init__(self, path: str | Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def create(self, source: str) -> str:
        """A new key for ``source`` (other keys of the source stay valid); returns the secret."""
        if not SOURCE_NAME.match(source):
            raise PatronError(
                f"source name {source!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        key = KEY_MARKER + secrets.token_urlsafe(32)
        with self._db() as db:
            db.execute(
                "INSERT INTO write_keys (key_hash, prefix, source, created_at) VALUES (?, ?, ?, ?)",
                (key_hash(key), key[: len(KEY_MARKER) + PREFIX_CHARS], source, _text(self.clock())),
            )
        return key

    def rotate(self, source: str, grace: timedelta = timedelta(0)) -> str:
        """A new key for ``source``; its current keys stop working now or after ``grace``."""
        now = self.clock()
        current = [key for key in self.list() if key.source == source and key.active(now)]
        if not current:
            raise PatronError(
                f"source {source!r} has no active write key to rotate; create one with `patron keys create {source}`"
            )
        new_key = self.create(source)
        with self._db() as db:
            db.executemany(
                "UPDATE write_keys SET rotated_at = ?, revoked_at = ? WHERE prefix = ? AND source = ?",
                [
                    (_text(now), _text(min(key.revoked_at or now + grace, now + grace)), key.prefix, source)
                    for key in current
                ],
            )
        return new_key

    def revoke(self, target: str) -> list[WriteKey]:
        """Revoke every active key of the source named ``target``, or the one key with that prefix."""
        now = self.clock()
        active = [key for key in self.list() if key.active(now)]
        by_source = [key for key in active if key.source == target]
        by_prefix = [key for key in active if key.prefix == target]
        if by_source and by_prefix:
            raise PatronError(
                f"{target!r} is both a source and a key prefix; revoke by the full prefix of one key"
            )
        if len(by_prefix) > 1:
            raise PatronError(
                f"prefix {target!r} matches {len(by_prefix)} keys; revoke them by source instead"
            )
        chosen = by_source or by_prefix
        if not chosen:
            raise PatronError(
                f"no active write key has source or prefix {target!r}; `patron keys list` shows the keys"
            )
        with self._db() as db:
            db.executemany(
                "UPDATE write_keys SET revoked_at = ? WHERE prefix = ? AND source = ?",
                [(_text(now), key.prefix, key.source) for key in chosen],
            )
        return chosen

    def list(self) -> list[WriteKey]:
        with self._db() as db:
            rows = db.execute(
                "SELECT source, prefix, created_at, rotated_at, revoked_at FROM write_keys "
                "ORDER BY source, created_at"
            ).fetchall()
        return [
            WriteKey(row[0], row[1], datetime.fromisoformat(row[2]), _time(row[3]), _time(row[4]))
            for row in rows
        ]

    def source_for(self, key: str) -> str | None:
        """The source of a valid (not revoked) key, or None for an unknown or revoked one."""
        with self._db() as db:
            row = db.execute(
                "SELECT source, revoked_at FROM write_keys WHERE key_hash = ?", (key_hash(key),)
            ).fetchone()
        if row is None:
            return None
        revoked = _time(row[1])
        return row[0] if revoked is None or revoked > self.clock() else None


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
