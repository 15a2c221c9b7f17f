"""Per-subject data keys for crypto-shredding: delete a subject's key and its encrypted PII is gone.

The event log is immutable, so personal data cannot be deleted from it; it is written encrypted
instead (``patron.events.pii_crypto``), each subject's fields under that subject's own random
512-bit *data key* (AES-256-SIV). Erasing a person deletes their keys, and every copy of their data in the log,
on every replica and backup of the log, becomes unreadable at once.

``KeyStore`` is the interface a KMS-backed store would implement. ``LocalKeyStore`` keeps the data
keys in ``DATA/keys.db`` (SQLite, separate from the log), each *wrapped* (AES-GCM) by a master key,
so a copy of keys.db alone reveals nothing: envelope encryption. The master key is
``PATRON_MASTER_KEY`` (base64 of 32 bytes) when set, else ``DATA/master.key``, created on first use
with mode 0600. Subjects are PII-free ids (routing-key hashes, see ``pii_crypto.subject_of``).

Durability: a key is committed before the encoder returns the ciphertext that needs it, in WAL
mode with ``synchronous=NORMAL``: it survives a killed process; a power cut in the same instant can
lose the newest keys (their events' PII would read as erased). FULL would cost an fsync per new
customer, which ingestion cannot afford.

Deletion really removes the bytes: ``secure_delete`` zeroes the freed content and the WAL is
checkpointed and truncated, so the old page images do not linger in ``keys.db-wal``. A process that
already holds a key in its cache keeps it for at most ``CACHE_TTL_S`` seconds.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patron.errors import EXIT_INVALID, PatronError
from patron.secret_file import secret_file
from patron.sqlite import immediate_transaction

KEYS_FILE = "keys.db"
MASTER_KEY_FILE = "master.key"
MASTER_KEY_ENV = "PATRON_MASTER_KEY"
CACHE_TTL_S = 60.0
CACHE_SIZE = 100_000
NONCE_BYTES = 12
DATA_KEY_BYTES = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS data_keys (
    subject TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
"""


class KeyStore(Protocol):
    """Where subjects' data keys live; a KMS-backed store implements the same three calls."""

    def data_key(self, subject: str, create: bool = True) -> bytes | None:
        """The subject's 64-byte data key; created when missing and ``create``, else None."""
        ...

    def delete(self, subjects: Iterable[str]) -> int:
        """Destroy the subjects' keys (crypto-shredding); returns how many existed."""
        ...

    def close(self) -> None: ...


class LocalKeyStore:
    """The embedded :class:`KeyStore`: ``DATA/keys.db``, wrapped by the master key (module docstring)."""

    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / KEYS_FILE
        self._master = AESGCM(_master_key(data_dir))
        self._local = threading.local()
        self._cache: dict[str, tuple[bytes, float]] = {}
        self.db.executescript(SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection; a forked child (the parallel rebuild) opens its own."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) != os.getpid():
            conn = None
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA secure_delete=ON")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def data_key(self, subject: str, create: bool = True) -> bytes | None:
        cached = self._cache.get(subject)
        now = time.monotonic()
        if cached is not None and now - cached[1] < CACHE_TTL_S:
            return cached[0]
        key = self._load(subject)
        if key is None and create:
            key = self._create(subject)
        if key is None:
            self._cache.pop(subject, None)
            return None
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[subject] = (key, now)
        return key

    def _load(self, subject: str) -> bytes | None:
        row = self.db.execute("SELECT wrapped FROM data_keys WHERE subject = ?", (subject,)).fetchone()
        return None if row is None else self._unwrap(subject, row[0])

    def _create(self, subject: str) -> bytes:
        """A new key for ``subject``, or the one another process stored first (both then use it)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        wrapped = nonce + self._master.encrypt(nonce, secrets.token_bytes(DATA_KEY_BYTES), subject.encode())
        with immediate_transaction(self.db) as db:
            db.execute(
                "INSERT OR IGNORE INTO data_keys (subject, wrapped, created_ms) VALUES (?, ?, ?)",
                (subject, wrapped, int(time.time() * 1000)),
            )
            stored = db.execute("SELECT wrapped FROM data_keys WHERE subject = ?", (subject,)).fetchone()[0]
        return self._unwrap(subject, stored)

    def _unwrap(self, subject: str, wrapped: bytes) -> bytes:
        try:
            return self._master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], subject.encode())
        except Exception:
            raise PatronError(
                f"{self.path}: the data key of subject {subject!r} does not open with this master key; "
                f"{MASTER_KEY_ENV} or {MASTER_KEY_FILE} is not the one the keys were made with",
                EXIT_INVALID,
            ) from None

    def delete(self, subjects: Iterable[str]) -> int:
        wanted = sorted(set(subjects))
        for subject in wanted:
            self._cache.pop(subject, None)
        with immediate_transaction(self.db) as db:
            deleted = 0
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                deleted += db.execute(f"DELETE FROM data_keys WHERE subject IN ({marks})", chunk).rowcount
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _master_key(data_dir: Path) -> bytes:
    """``PATRON_MASTER_KEY`` (base64), else ``DATA/master.key`` (created once, 0600)."""
    configured = os.environ.get(MASTER_KEY_ENV)
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise PatronError(
                f"{MASTER_KEY_ENV} must be the base64 of 32 random bytes (e.g. `openssl rand -base64 32`)",
                EXIT_INVALID,
            )
        return key
    try:
        return secret_file(data_dir / MASTER_KEY_FILE)
    except ValueError as exc:
        raise PatronError(str(exc), EXIT_INVALID) from None
