"""The embedded event log: SQLite in WAL mode under the data directory.

Why SQLite: it is a proven crash-safe store (atomic commits, a write-ahead log that
readers can read while a writer appends), so Patron needs no home-made file format.
All topics, consumer positions and processor state share one database file, so a
processor can commit its state, its consumer offsets and the events it emits in one
transaction: that is what makes effects exactly-once on the embedded backend.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from patron.sqlite import immediate_transaction
from patron.streams.log import AppendResult, Message, Record, partition_for

SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key BLOB,
    event_id BLOB,
    ts INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records (topic_id, partition, "offset");
CREATE UNIQUE INDEX IF NOT EXISTS records_event_id ON records (topic_id, event_id) WHERE event_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    topic_id INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, topic_id, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    store TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;
"""


def _event_id_bytes(event_id: str | None) -> bytes | str | None:
    """UUIDs are stored as a 16-byte BLOB; other ids as TEXT, which SQLite never equates with a BLOB,
    so a 16-character id cannot be mistaken for (or collide with) a UUID."""
    if event_id is None:
        return None
    if len(event_id) == 36 and event_id[8] == event_id[13] == event_id[18] == event_id[23] == "-":
        # The canonical form every Patron id has: 32 hex digits are exactly what uuid.UUID would
        # decode (anything else -- whitespace, signs -- makes fromhex fail or come up short).
        try:
            found = bytes.fromhex(
                event_id[:8] + event_id[9:13] + event_id[14:18] + event_id[19:23] + event_id[24:]
            )
        except ValueError:
            found = b""
        if len(found) == 16:
            return found
    try:
        return uuid.UUID(event_id).bytes
    except ValueError:
        return event_id


def _event_id_text(raw: bytes | str | None) -> str | None:
    """The id as appended: a 16-byte BLOB back to the canonical uuid text (what ``str(uuid.UUID)``
    gives, formatted from the hex directly: this runs for every record read)."""
    if raw is None or isinstance(raw, str):
        return raw
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


WRITES_POLL_S = 0.002
"""How often :meth:`LocalLog.wait_for_writes` checks for another connection's commit."""


class LocalLog:
    """An :class:`~patron.streams.log.EventLog` in ``DIR/log.db``.

    ``synchronous`` is SQLite's durability level: FULL (default) fsyncs every commit, so an
    acknowledged append survives power loss; NORMAL survives a killed process only.
    """

    def __init__(self, directory: str | Path, default_partitions: int = 4, synchronous: str = "FULL"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "log.db"
        self.default_partitions = default_partitions
        self._synchronous = synchronous
        self._local = threading.local()
        self._topic_cache: dict[str, tuple[int, int]] = {}
        self.db.executescript(SCHEMA)

    # -- connections -------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections must not be shared across threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success, rolled back on error."""
        with immediate_transaction(self.db) as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[LocalTransaction]:
        """One atomic unit: appends, state writes and consumer offsets commit together or not at all."""
        with self._write() as db:
            yield LocalTransaction(self, db)

    # -- topics ------------------------------------------------------------------------------
    def _topic(self, topic: str, db: sqlite3.Connection | None = None) -> tuple[int, int] | None:
        """Id and partition count of ``topic``; cached only once committed, because a topic created
        inside a transaction that then rolls back must not be remembered."""
        cached = self._topic_cache.get(topic)
        if cached is not None:
            return cached
        conn = db or self.db
        row = conn.execute("SELECT id, partitions FROM topics WHERE name = ?", (topic,)).fetchone()
        if row is not None and not conn.in_transaction:
            self._topic_cache[topic] = (row[0], row[1])
        return row

    def _create_topic(self, db: sqlite3.Connection, topic: str, partitions: int | None) -> tuple[int, int]:
        found = self._topic(topic, db)
        if found is not None:
            return found
        count = partitions or self.default_partitions
        cursor = db.execute(
            "INSERT INTO topics (name, partitions, created_ms) VALUES (?, ?, ?)",
            (topic, count, int(time.time() * 1000)),
        )
        topic_id = int(cursor.lastrowid or 0)
        db.executemany(
            "INSERT INTO heads (topic_id, partition, next_offset) VALUES (?, ?, 0)",
            [(topic_id, p) for p in range(count)],
        )
        return topic_id, count

    def ensure_topic(self, topic: str, partitions: int | None = None) -> int:
        found = self._topic(topic)
        if found is not None:
            return found[1]
        with self._write() as db:
            return self._create_topic(db, topic, partitions)[1]

    def topics(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, partitions FROM topics ORDER BY name").fetchall())

    # -- append ------------------------------------------------------------------------------
    def append(self, topic: str, messages: Sequence[Message]) -> AppendResult:
        if not messages:
            return AppendResult(0, 0)
        with self._write() as db:
            return self._append(db, topic, messages)[0]

    def _append(
        self, db: sqlite3.Connection, topic: str, messages: Sequence[Message]
    ) -> tuple[AppendResult, list[tuple[int, int] | None]]:
        """Assign offsets and insert inside the caller's write transaction, skipping known ids.

        Also returns where each message went, ``(partition, offset)``, None for a duplicate.
        """
        topic_id, partitions = self._create_topic(db, topic, None)
        ids = [_event_id_bytes(m.event_id) for m in messages]
        known = self._known_ids(db, topic_id, [i for i in ids if i is not None])
        heads = dict(db.execute("SELECT partition, next_offset FROM heads WHERE topic_id = ?", (topic_id,)))
        rows = []
        placed: list[tuple[int, int] | None] = []
        for message, event_id in zip(messages, ids, strict=True):
            if event_id is not None:
                if event_id in known:
                    placed.append(None)
                    continue
                known.add(event_id)
            partition = partition_for(message.key, partitions)
            offset = heads[partition]
            heads[partition] = offset + 1
            placed.append((partition, offset))
            rows.append(
                (topic_id, partition, offset, message.key, event_id, message.timestamp_ms, message.value)
            )
        db.executemany(
            'INSERT INTO records (topic_id, partition, "offset", key, event_id, ts, value) '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "UPDATE heads SET next_offset = ? WHERE topic_id = ? AND partition = ?",
            [(offset, topic_id, partition) for partition, offset in heads.items()],
        )
        return AppendResult(appended=len(rows), duplicates=len(messages) - len(rows)), placed

    @staticmethod
    def _known_ids(db: sqlite3.Connection, topic_id: int, ids: list[bytes | str]) -> set[bytes | str]:
        """The subset of ``ids`` already stored in the topic (queried in chunks of 500)."""
        known: set[bytes | str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            known.update(
                row[0]
                for row in db.execute(
                    f"SELECT event_id FROM records WHERE topic_id = ? AND event_id IN ({marks})",
                    (topic_id, *chunk),
                )
            )
        return known

    # -- read --------------------------------------------------------------------------------
    def read(self, topic: str, partition: int, offset: int, limit: int = 1000) -> list[Record]:
        found = self._topic(topic)
        if found is None:
            return []
        rows = self.db.execute(
            'SELECT "offset", key, event_id, ts, value FROM records '
            'WHERE topic_id = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
            (found[0], partition, offset, limit),
        ).fetchall()
        return [Record(topic, partition, o, k, _event_id_text(e), v, ts) for o, k, e, ts, v in rows]

    def end_offsets(self, topic: str) -> dict[int, int]:
        found = self._topic(topic)
        if found is None:
            return {}
        return dict(
            self.db.execute("SELECT partition, next_offset FROM heads WHERE topic_id = ?", (found[0],))
        )

    # -- consumer positions ------------------------------------------------------------------
    def committed(self, consumer: str, topic: str) -> dict[int, int]:
        """The next offset ``consumer`` will read, per partition (0 where it never committed)."""
        found = self._topic(topic)
        if found is None:
            return {}
        positions = {p: 0 for p in range(found[1])}
        positions.update(
            self.db.execute(
                "SELECT partition, next_offset FROM consumer_offsets WHERE consumer = ? AND topic_id = ?",
                (consumer, found[0]),
            )
        )
        return positions

    def delete_records(self, topic: str, positions: list[tuple[int, int]]) -> int:
        """Physically delete the records at ``positions`` (partition, offset) of ``topic``: the log's
        only delete, for GDPR erasure of dead letters, whose raw payloads are stored in clear (events
        are not deleted: their personal fields are crypto-shredded instead). The deleted bytes are
        zeroed (``secure_delete``) and the write-ahead log truncated. Offsets are not reused."""
        found = self._topic(topic)
        if found is None or not positions:
            return 0
        deleted = 0
        self.db.execute("PRAGMA secure_delete=ON")
        try:
            with self._write() as db:
                for partition, offset in positions:
                    deleted += db.execute(
                        'DELETE FROM records WHERE topic_id = ? AND partition = ? AND "offset" = ?',
                        (found[0], partition, offset),
                    ).rowcount
        finally:
            self.db.execute("PRAGMA secure_delete=OFF")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def compact(self) -> None:
        """Rewrite the database without free pages and truncate the write-ahead log, so no deleted
        row (state of an erased person) survives in unused space (``VACUUM``; takes as long as a copy)."""
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def wait_for_writes(self, timeout: float, stop: threading.Event, poll: float = WRITES_POLL_S) -> bool:
        """Wait until another connection commits to the log (True), ``timeout`` passes or ``stop`` is
        set (False).

        Why: a follower that slept a fixed interval between empty reads added half that interval to
        every event's latency; SQLite's ``data_version`` tells, for the price of one tiny query, that
        some other connection (another process, e.g. the collector) has committed, so the follower
        reads again within ``poll`` seconds of the write instead.
        """
        version = self._data_version()
        deadline = time.monotonic() + timeout
        while not stop.wait(min(poll, max(0.0, deadline - time.monotonic()))):
            if self._data_version() != version:
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def _data_version(self) -> int:
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class LocalTransaction:
    """Writes that commit atomically: appends, key-value state and consumer offsets."""

    def __init__(self, log: LocalLog, db: sqlite3.Connection):
        self._log = log
        self._db = db

    def append(self, topic: str, messages: Sequence[Message]) -> AppendResult:
        return self.append_placed(topic, messages)[0]

    def append_placed(
        self, topic: str, messages: Sequence[Message]
    ) -> tuple[AppendResult, list[tuple[int, int] | None]]:
        """:meth:`append`, plus where each message went: ``(partition, offset)``, None for a duplicate."""
        return self._log._append(self._db, topic, messages) if messages else (AppendResult(0, 0), [])

    def commit_offsets(self, consumer: str, topic: str, positions: dict[int, int]) -> None:
        """Record that ``consumer`` has processed ``topic`` up to (excluding) these offsets."""
        topic_id, _ = self._log._create_topic(self._db, topic, None)
        self._db.executemany(
            "INSERT INTO consumer_offsets (consumer, topic_id, partition, next_offset) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (consumer, topic_id, partition) DO UPDATE SET next_offset = excluded.next_offset",
            [(consumer, topic_id, p, o) for p, o in positions.items()],
        )

    def get(self, store: str, key: bytes) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE store = ? AND key = ?", (store, key)).fetchone()
        return None if row is None else row[0]

    def put(self, store: str, items: Sequence[tuple[bytes, bytes]]) -> None:
        self._db.executemany(
            "INSERT INTO state (store, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            [(store, k, v) for k, v in items],
        )

    def delete(self, store: str, keys: Sequence[bytes]) -> None:
        self._db.executemany("DELETE FROM state WHERE store = ? AND key = ?", [(store, k) for k in keys])
