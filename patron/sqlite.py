"""SQLite helpers shared by the embedded stores (event log, schema registry)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOCK_POLL_S = 0.001
"""How often a waiting writer tries again. SQLite's own busy handler backs off to 100 ms sleeps,
so a writer queued behind a few millisecond-long commits (the collector appending while the
runner commits a batch) could lose ~100 ms for nothing: that was the tail of the embedded
event -> segment-change latency (bench/segments.py)."""


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write-locked transaction, committed on success and rolled back on any error.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so two processes never both read
    then fail to upgrade to writing (SQLite's "database is locked" in deferred mode).
    The connection must be in autocommit mode (``isolation_level=None``).
    """
    _begin_immediate(db)
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _begin_immediate(db: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, polling every :data:`LOCK_POLL_S` while another writer holds the lock, for
    as long as the connection's busy timeout (``sqlite3.connect(timeout=...)``) allows."""
    (restore_ms,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute("PRAGMA busy_timeout=0")
    deadline = time.monotonic() + restore_ms / 1000
    try:
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL_S)
    finally:
        db.execute(f"PRAGMA busy_timeout={restore_ms}")
