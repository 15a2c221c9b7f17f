"""Processor state stores: a write-back cached ``MutableMapping[str, JSON value]`` per store.

Processors read and mutate their stores like dicts, including in place (``profile["count"] += 1``
without assigning back). The cache therefore does not trust assignments to find what changed: at
the end of a batch every key the batch touched is serialised and compared with the bytes last
persisted, and only real differences are written. That keeps processors plain Python while each
batch persists exactly the keys it changed, inside the runner's commit.

:class:`CachedStore` holds the cache logic; a backend supplies how to load one key and how to
list the persisted keys. :class:`SqliteStore` is the embedded backend: one store of the ``state``
table of :class:`~patron.streams.local_log.LocalLog`, written in the runner's transaction; the
faust runner backs the same class with a faust table.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import orjson

from patron.errors import EXIT_BUG, PatronError
from patron.streams.local_log import LocalLog, LocalTransaction
from patron.streams.log import EventLog, scan

DEFAULT_CACHE_SIZE = 100_000
"""Keys kept in memory per store between batches (least recently used are dropped first)."""

Changes = dict[str, bytes | None]
"""What a batch changed in one store: key -> new JSON bytes, or None for a deleted key."""


class _Absent:
    """Marks a key known not to exist, so a miss is not looked up again."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()
UNLOADED = _Absent()
"""In place of the persisted bytes of a key written without being read (looked up in ``changes``)."""


class CachedStore(MutableMapping[str, Any]):
    """A store as a mutable mapping of ``str`` keys to JSON-able values, cached across batches.

    A batch works on the cache; :meth:`changes` says what to persist, :meth:`committed` marks it
    persisted, :meth:`discard` forgets a batch whose commit failed (its in-place mutations
    included, by dropping every key it touched).
    """

    def __init__(self, name: str, cache_size: int = DEFAULT_CACHE_SIZE):
        self.name = name
        self.cache_size = cache_size
        # key -> [current value or ABSENT, bytes last persisted or None]
        self._cache: OrderedDict[str, list[Any]] = OrderedDict()
        self._touched: set[str] = set()

    # -- backend ------------------------------------------------------------------------------
    @abstractmethod
    def _load(self, key: str) -> bytes | None:
        """The persisted JSON bytes of ``key``, or None."""

    @abstractmethod
    def _persisted_keys(self) -> Iterator[str]:
        """Every persisted key (only iteration needs it)."""

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        """The persisted JSON bytes of those ``keys`` that exist (a backend may do it in one query)."""
        found = {key: self._load(key) for key in keys}
        return {key: raw for key, raw in found.items() if raw is not None}

    # -- mapping ------------------------------------------------------------------------------
    def _entry(self, key: str) -> list[Any]:
        # The hot path of every processor: a cached key costs two lookups. Recency is updated
        # once per batch (in ``committed``) rather than per access; only a str key is ever cached.
        entry = self._cache.get(key)
        if entry is None:
            if not isinstance(key, str):
                raise TypeError(f"store {self.name!r}: keys must be str, got {type(key).__name__} {key!r}")
            raw = self._load(key)
            entry = self._cache[key] = [ABSENT if raw is None else orjson.loads(raw), raw]
        self._touched.add(key)
        return entry

    def __getitem__(self, key: str) -> Any:
        value = self._entry(key)[0]
        if value is ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._entry(key)[0]
        return default if value is ABSENT else value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._entry(key)[0] is not ABSENT

    def __setitem__(self, key: str, value: Any) -> None:
        entry = self._cache.get(key)
        if entry is None:
            # A blind write (a new key, mostly): what it replaces is looked up with the batch's
            # other blind writes in one query, when ``changes`` compares.
            if not isinstance(key, str):
                raise TypeError(f"store {self.name!r}: keys must be str, got {type(key).__name__} {key!r}")
            self._cache[key] = [value, UNLOADED]
        else:
            entry[0] = value
        self._touched.add(key)

    def __delitem__(self, key: str) -> None:
        entry = self._entry(key)
        if entry[0] is ABSENT:
            raise KeyError(key)
        entry[0] = ABSENT

    def __iter__(self) -> Iterator[str]:
        cached = dict(self._cache)
        for key in self._persisted_keys():
            if key not in cached:
                yield key
        for key, (value, _) in cached.items():
            if value is not ABSENT:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def scan(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value), the cheapest way the backend has (``scan_items`` uses it)."""
        for key in self:
            yield key, self[key]

    def prefetch(self, keys: Iterable[str]) -> None:
        """Load the keys that are not cached yet all at once, before a batch reads them one by one.

        Only an optimisation (a key read later is loaded anyway), but one query for a batch's
        keys costs a fraction of one query per key, and most keys of a growing graph are new:
        without it each new key costs a lookup that finds nothing.
        """
        missing = [key for key in set(keys) if key not in self._cache and isinstance(key, str)]
        if missing:
            found = self._load_many(missing)
            for key in missing:
                raw = found.get(key)
                self._cache[key] = [ABSENT if raw is None else orjson.loads(raw), raw]

    def clear_cache(self) -> None:
        """Forget everything cached (after the persisted store was changed behind the cache)."""
        self._cache.clear()
        self._touched.clear()

    # -- batch lifecycle ----------------------------------------------------------------------
    def changes(self) -> Changes:
        """The keys this batch really changed, serialised; nothing is marked persisted yet."""
        blind = [key for key in self._touched if self._cache[key][1] is UNLOADED]
        if blind:
            found = self._load_many(blind)
            for key in blind:
                self._cache[key][1] = found.get(key)
        out: Changes = {}
        for key in self._touched:
            value, persisted = self._cache[key]
            raw = None if value is ABSENT else self._dump(key, value)
            if raw != persisted:
                out[key] = raw
        return out

    def committed(self, changes: Changes) -> None:
        """``changes`` (from :meth:`changes`) are now persisted: the batch ends, the cache is trimmed."""
        for key, raw in changes.items():
            self._cache[key][1] = raw
        for key in self._touched:  # the batch's keys become the most recently used
            self._cache.move_to_end(key)
        self._touched.clear()
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def discard(self) -> None:
        """The batch did not commit: forget every key it touched, mutated values included."""
        for key in self._touched:
            self._cache.pop(key, None)
        self._touched.clear()

    def _dump(self, key: str, value: Any) -> bytes:
        try:
            return orjson.dumps(value)
        except TypeError as exc:
            raise PatronError(
                f"store {self.name!r} key {key!r}: {exc}; processors may store only JSON values "
                "(dict with str keys, list, str, int, float, bool, None)",
                EXIT_BUG,
            ) from None


class SqliteStore(CachedStore):
    """One store of the embedded log's ``state`` table.

    Reads go through the log's connection, so inside the runner's transaction they see that
    transaction's view; writes happen only in :meth:`flush`, inside the commit.
    """

    def __init__(self, log: LocalLog, name: str, cache_size: int = DEFAULT_CACHE_SIZE):
        super().__init__(name, cache_size)
        self._log = log

    def _load(self, key: str) -> bytes | None:
        row = self._log.db.execute(
            "SELECT value FROM state WHERE store = ? AND key = ?", (self.name, key.encode())
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _load_many(self, keys: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), 500):
            chunk = [key.encode() for key in keys[start : start + 500]]
            rows = self._log.db.execute(
                f"SELECT key, value FROM state WHERE store = ? AND key IN ({','.join('?' * len(chunk))})",
                (self.name, *chunk),
            )
            found.update((bytes(key).decode(), bytes(value)) for key, value in rows)
        return found

    def _persisted_keys(self) -> Iterator[str]:
        rows = self._log.db.execute("SELECT key FROM state WHERE store = ? ORDER BY key", (self.name,))
        for (key,) in rows.fetchall():
            yield bytes(key).decode()

    def scan(self) -> Iterator[tuple[str, Any]]:
        """Every (key, value) in one query; between batches (nothing pending) the persisted content
        is exactly the store's, so this skips the per-key lookups of iterating the mapping."""
        if self._touched:
            yield from super().scan()
            return
        rows = self._log.db.execute("SELECT key, value FROM state WHERE store = ?", (self.name,))
        for key, value in rows.fetchall():
            yield bytes(key).decode(), orjson.loads(value)

    def flush(self, tx: LocalTransaction) -> Changes:
        """Write this batch's changes in ``tx``; call :meth:`committed` with the result once it commits."""
        changes = self.changes()
        tx.put(self.name, [(key.encode(), raw) for key, raw in changes.items() if raw is not None])
        tx.delete(self.name, [key.encode() for key, raw in changes.items() if raw is None])
        return changes

    def erase(self) -> None:
        """Delete the whole store at once (a rebuild starts from nothing); call it inside
        ``log.transaction()``: it runs on the same connection, so it commits with the reset."""
        self._log.db.execute("DELETE FROM state WHERE store = ?", (self.name,))
        self.clear_cache()


def scan_items(store: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """All of a store's (key, value) pairs: in one query for SQLite stores, else by iterating."""
    scan = getattr(store, "scan", None)
    yield from scan() if scan is not None else store.items()


def store_name(processor: str, store: str) -> str:
    """The persisted name of a processor's store: stores are per processor, so two processors may
    both call a store ``profiles`` without sharing it."""
    return f"{processor}.{store}"


def read_store(log: LocalLog, processor: str, store: str) -> dict[str, Any]:
    """A processor store's committed content, for readers outside the runner (CLI, tests)."""
    return dict(SqliteStore(log, store_name(processor, store), cache_size=0).items())


def read_changelog(log: EventLog, app_id: str, processor: str, store: str) -> dict[str, Any]:
    """The Kafka counterpart of :func:`read_store`: a faust table folded from its changelog topic.

    The changelog is compacted key -> latest value; an empty value is a deletion.
    """
    table: dict[str, Any] = {}
    for record in scan(log, f"{app_id}-{store_name(processor, store)}-changelog"):
        key = orjson.loads(record.key or b"null")
        if record.value:
            table[key] = orjson.loads(record.value)
        else:
            table.pop(key, None)
    return table
