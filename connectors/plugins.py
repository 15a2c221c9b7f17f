"""The plugin API for source connectors, and their discovery through the ``patron.connectors`` entry points.

A connector turns some input (a file, a directory, an API export) into candidate events;
everything after that -- validation, normalisation, encoding, appending, dead letters,
counts -- is Patron's shared path, so a plugin is only the part that knows its source.

To add one, write a class with an ``open`` method and declare it in your package::

    [project.entry-points."patron.connectors"]
    countries = "my_package.countries:CountriesConnector"

then ``patron ingest TARGET --connector countries --option KEY=VALUE``. The entry-point name is
the connector's name: it is stored with every dead letter, so ``patron dlq replay`` can find
the connector again (if it implements ``replay``). docs/connectors.md walks through an example.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from patron.connectors.deadletter import DeadLetter
from patron.errors import EXIT_INVALID, PatronError

ENTRY_POINT_GROUP = "patron.connectors"
DEFAULT_CONNECTOR = "file"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input record and what became of it in the connector.

    - ``event`` set: a candidate event, the Avro-shaped ``{"envelope": ..., "payload": ...}`` dict
      (``envelope.source`` and ``received_at`` may be left out: the stream's source and now).
    - ``error`` set: the record could not become an event; it is filed as a dead letter with this reason.
    - neither: the record deliberately produces no event (e.g. a mapping's ``when:`` is not met);
      it is counted as skipped.

    ``raw`` is the record's original bytes and ``location`` where it was (``file.csv:line 17``);
    both are kept with a dead letter. ``details`` is stored with a dead letter too: put there
    whatever your ``replay`` needs to re-read ``raw``.
    """

    raw: bytes
    location: str
    event: dict[str, Any] | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class SourceStream(Protocol):
    """The records of one target, and the settings the shared ingest path applies to them."""

    source: str  # the source name stored in every event and dead letter
    default_region: str | None  # region for phone numbers without a country code
    timezone: str | None  # zone for naive timestamps

    def __iter__(self) -> Iterator[SourceRecord]: ...


@runtime_checkable
class ReportsProgress(Protocol):
    """Optional: a stream that knows its size gets a progress bar with a total (bytes or rows)."""

    unit: str
    total: int

    def position(self) -> int: ...


class SourceConnector(Protocol):
    """A source connector: ``open`` checks a target now and returns a lazy stream of its records.

    ``open`` should raise :class:`~patron.errors.PatronError` (one line: what and where) for a
    target it cannot read at all, so ``patron ingest`` fails before ingesting anything.
    """

    def open(self, target: str, options: Mapping[str, str]) -> SourceStream: ...


@runtime_checkable
class ReplayingConnector(Protocol):
    """Optional: re-submit a dead letter's raw payload once the user fixed the cause.

    Returns the letter's records again (same ``raw`` and ``location``); ``options`` are the
    ones given to ``patron dlq replay`` (e.g. ``mapping``).
    """

    def replay(self, letter: DeadLetter, options: Mapping[str, str]) -> SourceStream: ...


@dataclass
class RecordStream:
    """A ready-made :class:`SourceStream` over any iterable of records, for plugins that need nothing more."""

    source: str
    records: Iterable[SourceRecord]
    default_region: str | None = None
    timezone: str | None = None

    def __iter__(self) -> Iterator[SourceRecord]:
        return iter(self.records)


class ConnectorError(PatronError):
    """A connector that is not installed or does not load."""

    exit_code = EXIT_INVALID


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, []).append(point)
    return found


def available_connectors() -> list[str]:
    """Names of the installed connectors (the built-in ``file`` connector among them)."""
    return sorted(_entry_points())


def load_connector(name: str) -> SourceConnector:
    """The connector registered under ``name``; a class is instantiated without arguments."""
    points = _entry_points()
    if name not in points:
        close = difflib.get_close_matches(name, list(points), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        installed = ", ".join(sorted(points)) or "none"
        raise ConnectorError(
            f"unknown connector {name!r}{hint}; installed: {installed} "
            f'(a plugin declares an entry point in the group "{ENTRY_POINT_GROUP}")'
        )
    distinct = {point.value for point in points[name]}
    if len(distinct) > 1:
        raise ConnectorError(
            f"connector {name!r} is declared twice ({', '.join(sorted(distinct))}); uninstall one of the packages"
        )
    point = points[name][0]
    try:
        loaded = point.load()
        connector = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:  # a plugin's import error must not look like a Patron bug
        raise ConnectorError(
            f"connector {name!r} ({point.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(getattr(connector, "open", None)):
        raise ConnectorError(f"connector {name!r} ({point.value}) has no open(target, options) method")
    return connector
