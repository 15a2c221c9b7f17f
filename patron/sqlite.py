"""SQLite helpers shared by the embedded stores (event log, schema registry)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write-locked transaction, committed on success and rolled back on any error.

    ``BEGIN IMMEDIATE`` takes the write lock up front, so two processes never both read
    then fail to upgrade to writing (SQLite's "database is locked" in deferred mode).
    The connection must be in autocommit mode (``isolation_level=None``).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
