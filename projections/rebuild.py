"""The vectorised rebuild: fact tables straight from the source events in ``patron.events``.

The stream processors keep facts current event by event (``projections/facts.py``); this module
computes the same tables in bulk, for a first snapshot of a big log, for time travel (``as_of``) and
as a check on the incremental side (tests hold the two equal, table by table).

How it stays fast: envelopes are scanned, not decoded (``projections/envelope_scan.py``), and the
identifiers' encoded bytes key a cache of the profile their anchor belongs to; fact event types have
their payload decoded alone, and only customer-trait types (identify, group, subscriptions) are
decoded in full. Per record, Python does a scan, a cache lookup and a few list appends; grouping and
the "earliest/latest by (time, event id)" choices happen in DuckDB over Arrow columns. Row ranges of
the embedded log are folded by worker processes, one per CPU. Records are scanned, not validated: a
record whose envelope scans but whose bytes elsewhere are corrupt would be counted here although the
runner dead-lettered it (the codec writes every record, so this takes a damaged disk).

Who is who: each event's anchor (``projections.profiles.anchor_of``) is mapped to the live profile
that holds that anchor's part *now*, in the committed profile store. That is today's knowledge, also
for ``as_of``: a rebuild as of last month attributes last month's events to today's profiles.
Records the processors never folded are counted, not dropped silently (``RebuildStats``): records that
do not decode (the runner dead-lettered them), events without a usable identifier (the identity stage
does not forward them), operator merge/split requests (not customer events), and events whose anchor
no profile holds (the processors have not reached them yet: run ``patron run`` first).
"""

from __future__ import annotations

import datetime as dt
import io
import multiprocessing
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import duckdb
import fastavro
import pyarrow as pa

from patron.events.codec import EventCodec
from patron.identity.events import PROFILE_SPLIT, PROFILES_MERGED
from patron.identity.processor import OPERATOR_SOURCE
from patron.identity.resolver import micros
from patron.identity.rules import RulePlan, default_rules
from patron.projections.envelope_scan import EnvelopeLayout, envelope_layout, strip_logical
from patron.projections.fact_tables import (
    CUSTOMER_TRAITS,
    CUSTOMERS,
    SCHEMAS,
    ColumnLists,
    FactTables,
    customer_row,
    stored_profiles,
)
from patron.projections.facts import DETRACTOR_MAX, EMAIL_COLUMNS, MICROS_PER_DAY, PROMOTER_MIN, SESSION_TYPES
from patron.projections.profile_rules import ProfilePlan, load_profile_rules
from patron.projections.profiles import Profile, anchor_of, fold_traits, merge_traits
from patron.schemas.registry import schema_text
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, EventLog, scan

READ_BATCH = 20_000
CHUNK_ROWS = 250_000
"""Log rows (of all topics) per unit of work: a worker's share, and the progress step."""
MAX_WORKERS = 8
WANTED_TRAITS = frozenset(CUSTOMER_TRAITS)
HEADER_SIZE = 5


@dataclass
class RebuildStats:
    """What became of each record of ``patron.events``."""

    records: int = 0
    folded: int = 0
    undecodable: int = 0
    unanchored: int = 0
    unmapped: int = 0
    requests: int = 0
    after_as_of: int = 0


@dataclass(frozen=True)
class Rebuild:
    tables: FactTables
    stats: RebuildStats


_I64, _TEXT, _F64 = pa.int64(), pa.string(), pa.float64()
RAW_COLUMNS: dict[str, pa.Schema] = {
    "base": pa.schema([("pid", pa.int32()), ("ts", _I64), ("etype", pa.int32()), ("uses", _I64)]),
    "orders": pa.schema([("pid", pa.int32()), ("ts", _I64), ("amount", _F64)]),
    "refunds": pa.schema([("pid", pa.int32()), ("ts", _I64), ("amount", _F64)]),
    "payments": pa.schema([("pid", pa.int32()), ("ts", _I64), ("amount", _F64)]),
    "surveys": pa.schema(
        [("pid", pa.int32()), ("ts", _I64), ("event_id", _TEXT), ("kind", _TEXT), ("score", _I64)]
    ),
    "tickets": pa.schema(
        [
            ("pid", pa.int32()),
            ("ticket_id", _TEXT),
            ("kind", _TEXT),
            ("ts", _I64),
            ("event_id", _TEXT),
            ("priority", _TEXT),
            ("seconds", _I64),
        ]
    ),
    "subscriptions": pa.schema(
        [
            ("pid", pa.int32()),
            ("subscription_id", _TEXT),
            ("kind", _TEXT),
            ("ts", _I64),
            ("event_id", _TEXT),
            ("plan", _TEXT),
            ("amount", _F64),
            ("billing_interval", _TEXT),
            ("period_end", _I64),
        ]
    ),
    "leads": pa.schema(
        [("pid", pa.int32()), ("lead_id", _TEXT), ("ts", _I64), ("event_id", _TEXT), ("lead_source", _TEXT)]
    ),
    "deals": pa.schema(
        [
            ("pid", pa.int32()),
            ("deal_id", _TEXT),
            ("ts", _I64),
            ("event_id", _TEXT),
            ("lead_id", _TEXT),
            ("won", pa.bool_()),
            ("amount", _F64),
            ("created_at", _I64),
        ]
    ),
}
"""Per event type group, the raw columns the SQL below aggregates (``pid``: profile index)."""


def _raw_columns() -> ColumnLists:
    return ColumnLists(RAW_COLUMNS)


def _micros_or_none(value: Any) -> int | None:
    return None if value is None else micros(value)


def _subscription(c: ColumnLists, pid: int, at: int, eid: str, p: dict[str, Any], kind: str) -> None:
    row = (p["subscription_id"], kind, at, eid, p["plan"], p["amount"], p["billing_interval"])
    c.add("subscriptions", pid, *row, micros(p["period_end"]))


Extractor = Callable[..., None]
EXTRACTORS: dict[str, Extractor] = {
    "order_completed": lambda c, pid, at, eid, p: c.add("orders", pid, at, p["revenue"]),
    "refund_issued": lambda c, pid, at, eid, p: c.add("refunds", pid, at, p["amount"]),
    "payment_failed": lambda c, pid, at, eid, p: c.add("payments", pid, at, p["amount"]),
    "survey_answered": lambda c, pid, at, eid, p: c.add("surveys", pid, at, eid, str(p["kind"]), p["score"]),
    "ticket_opened": lambda c, pid, at, eid, p: c.add(
        "tickets", pid, p["ticket_id"], "opened", at, eid, p["priority"], None
    ),
    "ticket_first_responded": lambda c, pid, at, eid, p: c.add(
        "tickets", pid, p["ticket_id"], "responded", at, eid, None, p["response_seconds"]
    ),
    "ticket_resolved": lambda c, pid, at, eid, p: c.add(
        "tickets", pid, p["ticket_id"], "resolved", at, eid, None, p["resolution_seconds"]
    ),
    **{
        f"subscription_{kind}": partial(_subscription, kind=kind)
        for kind in ("started", "renewed", "cancelled")
    },
    "lead_created": lambda c, pid, at, eid, p: c.add("leads", pid, p["lead_id"], at, eid, p["lead_source"]),
    "deal_closed": lambda c, pid, at, eid, p: c.add(
        "deals",
        pid,
        p["deal_id"],
        at,
        eid,
        p.get("lead_id"),
        bool(p["won"]),
        p["amount"],
        _micros_or_none(p.get("created_at")),
    ),
}
"""Event types whose payload feeds a fact table, and the raw row each contributes."""

FEATURE_USED = "feature_used"


def _trait_types(plan: ProfilePlan) -> frozenset[str] | None:
    """Event types that can set a ``customers`` trait; None when every event can (an ``"*"`` rule)."""

    def relevant(sources: tuple[Any, ...]) -> bool:
        return any(s.spread or s.trait in WANTED_TRAITS for s in sources)

    if relevant(plan.every_event):
        return None
    return frozenset(t for t, sources in plan.traits.items() if relevant(sources))


def _scan_batches(log: EventLog) -> Iterator[list[bytes]]:
    """The record values of ``patron.events`` in batches, through the generic log interface."""
    batch: list[bytes] = []
    for record in scan(log, EVENTS_TOPIC):
        batch.append(record.value)
        if len(batch) >= READ_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _local_ranges(log: LocalLog, size: int) -> tuple[int, list[tuple[int, int]]]:
    """(topic id, row ranges of about ``size`` records) of ``patron.events`` in the embedded log."""
    found = log.db.execute("SELECT id FROM topics WHERE name = ?", (EVENTS_TOPIC,)).fetchone()
    if found is None:
        return 0, []
    low, high = log.db.execute(
        "SELECT min(seq), max(seq) FROM records WHERE topic_id = ?", (found[0],)
    ).fetchone()
    if low is None:
        return found[0], []
    return found[0], [(start, min(start + size, high + 1)) for start in range(low, high + 1, size)]


def _local_values(path: str, topic_id: int, start: int, end: int) -> Iterator[list[bytes]]:
    """The values of one row range, on a connection of their own (worker processes cannot share one)."""
    db = sqlite3.connect(path, timeout=60)
    try:
        cursor = db.execute(
            # "+topic_id": a scan of the row range; the (topic_id, ...) index would walk the whole topic
            "SELECT value FROM records WHERE seq >= ? AND seq < ? AND +topic_id = ?",
            (start, end, topic_id),
        )
        while rows := cursor.fetchmany(READ_BATCH):
            yield [row[0] for row in rows]
    finally:
        db.close()


def count_records(log: EventLog, topic: str = EVENTS_TOPIC) -> int:
    """Records in ``topic`` (a rebuild's progress total)."""
    return sum(log.end_offsets(topic).values())


LIGHT, PAYLOAD, FULL = "light", "payload", "full"
"""How a record is read: envelope scan only (activity and customers need nothing else); scan plus
the payload decoded alone (fact event types written with the catalogue's current schema); decoded in
full by the codec (customer-trait event types, older schema versions, envelopes the scan does not cover)."""


@dataclass(frozen=True)
class _Reader:
    """How the records of one writer schema id are read."""

    event_type: str
    code: int
    """The event type's code in the ``base`` columns."""
    mode: str
    layout: EnvelopeLayout | None
    payload: Any
    """The parsed payload schema (logical types dropped) of the PAYLOAD mode."""
    anchors: dict[bytes, int]
    """Encoded identifiers -> profile index, UNANCHORED or UNMAPPED (shared by equal layouts)."""


UNANCHORED, UNMAPPED = -1, -2
ANCHOR_CACHE_LIMIT = 1_000_000
"""Cached identifier encodings per layout (~150 bytes each); the cache starts over when full."""
OPERATOR = OPERATOR_SOURCE.encode()


class _Readers:
    """Per wire-format header (magic byte and schema id), its ``_Reader``; None when the header is not
    one (wrong magic byte, too short) or the registry does not know the schema id."""

    def __init__(self, codec: EventCodec, trait_types: frozenset[str] | None, codes: dict[str, int]):
        self.codec = codec
        self.trait_types = trait_types
        self.codes = codes
        self.by_header: dict[bytes, _Reader | None] = {}
        self._caches: dict[str, dict[bytes, int]] = {}

    def add(self, header: bytes) -> _Reader | None:
        """The reader of ``header``, looked up once and kept in ``by_header``."""
        found = self.by_header[header] = self._reader(header)
        return found

    def _reader(self, header: bytes) -> _Reader | None:
        if len(header) < HEADER_SIZE or header[0] != 0:
            return None
        try:
            written = self.codec.registry.schema(int.from_bytes(header[1:HEADER_SIZE], "big"))
        except Exception:  # an unknown id: the runner could not decode these records either
            return None
        event_type = written.get("event_type", "")
        code = self.codes.get(event_type, UNKNOWN_TYPE)
        layout = envelope_layout(written)
        if layout is None or self.trait_types is None or event_type in self.trait_types:
            return _Reader(event_type, code, FULL, layout, None, {})
        anchors = self._caches.setdefault(layout.identifiers_text, {})
        if event_type not in EXTRACTORS and event_type != FEATURE_USED:
            return _Reader(event_type, code, LIGHT, layout, None, anchors)
        payload = self._payload_schema(event_type, written) if layout.to_payload else None
        return _Reader(event_type, code, FULL if payload is None else PAYLOAD, layout, payload, anchors)

    def _payload_schema(self, event_type: str, written: dict[str, Any]) -> Any | None:
        """The payload schema to decode it alone, when ``written`` is the catalogue's current schema
        (otherwise the codec's schema resolution is needed: the record is decoded in full)."""
        try:
            if schema_text(self.codec.catalogue.get(event_type).schema) != schema_text(written):
                return None
            return fastavro.parse_schema(strip_logical(written["fields"][1]["type"]))
        except Exception:  # not in the catalogue, or a payload naming types defined in the envelope
            return None


UNKNOWN_TYPE = -1
"""The type code of an event type the catalogue no longer has (still an event of its day)."""
REQUEST_TYPES = frozenset({PROFILE_SPLIT, PROFILES_MERGED})
MISSING = object()


def _cutoff(as_of: dt.date | dt.datetime | None) -> int | None:
    """Micros of the end of ``as_of``'s UTC day: events at or after it are left out."""
    if as_of is None:
        return None
    if isinstance(as_of, dt.datetime):
        as_of = (as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()
    end = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return micros(end)


@dataclass
class _Chunk:
    """The folded raw columns, customer traits (by profile index) and counts of some records."""

    columns: dict[str, pa.Table]
    traits: dict[int, dict[str, Any]]
    stats: RebuildStats


def _combine(chunks: list[_Chunk], plan: ProfilePlan) -> _Chunk:
    """One chunk of many (the order does not matter: tables concatenate, traits merge by their order)."""
    traits: dict[int, dict[str, Any]] = {}
    stats = RebuildStats()
    for chunk in chunks:
        for pid, chosen in chunk.traits.items():
            merge_traits(traits.setdefault(pid, {}), chosen, plan)
        for counter in fields(RebuildStats):
            setattr(stats, counter.name, getattr(stats, counter.name) + getattr(chunk.stats, counter.name))
    columns = {
        name: pa.concat_tables([chunk.columns[name] for chunk in chunks])
        if chunks
        else _raw_columns().arrow(name)
        for name in RAW_COLUMNS
    }
    return _Chunk(columns, traits, stats)


_FORKED: _Fold | None = None
"""The fold worker processes inherit (set just before the pool forks them)."""


def _fold_rows(fold: _Fold, path: str, topic_id: int, start: int, end: int) -> _Chunk:
    """Fold one row range of ``patron.events``."""
    for values in _local_values(path, topic_id, start, end):
        fold.records(values)
    return fold.take()


def _fold_rows_forked(path: str, topic_id: int, start: int, end: int) -> _Chunk:
    """Worker process: :func:`_fold_rows` with the fold inherited from the parent."""
    assert _FORKED is not None
    return _fold_rows(_FORKED, path, topic_id, start, end)


class _Fold:
    """The per-record loop: decode, filter, anchor -> profile, append raw columns (and customer traits)."""

    def __init__(
        self,
        codec: EventCodec,
        owners: dict[str, int],
        cutoff: int | None,
        plan: ProfilePlan,
        identity_plan: RulePlan,
    ):
        self.codec = codec
        self.owners = owners
        self.cutoff = cutoff
        self.plan = plan
        self.identity_plan = identity_plan
        self.trait_types = _trait_types(plan)
        self.type_codes = {name: code for code, name in enumerate(sorted(codec.catalogue.event_types()))}
        self.readers = _Readers(codec, self.trait_types, self.type_codes)
        self.by_header: dict[bytes, Any] = self.readers.by_header
        self.stats, self.columns, self.traits = RebuildStats(), _raw_columns(), {}

    def _owner(self, identifiers: dict[str, Any], event_type: str) -> int:
        """The index of the profile holding the part of the anchor ``identifiers`` give."""
        if self.codec.cipher is not None:  # read straight from the bytes: still encrypted
            partial = {"event_type": event_type, "identifiers": identifiers}
            identifiers = self.codec.cipher.decrypt({"envelope": partial})["envelope"]["identifiers"]
        anchor = anchor_of(identifiers, self.identity_plan)
        return UNANCHORED if anchor is None else self.owners.get(anchor, UNMAPPED)

    def _locate(self, value: bytes) -> tuple[_Reader, int, bytes, int, dict[str, Any] | None] | None:
        """(reader, occurred_at, source, profile index or code, full event or None); None: undecodable."""
        header = value[:HEADER_SIZE]
        reader = self.by_header.get(header, MISSING)
        if reader is MISSING:
            reader = self.readers.add(header)
        if reader is None:
            return None
        try:  # corrupt bytes fail in many ways; the runner dead-lettered these records
            layout, event = reader.layout, None
            if reader.mode == PAYLOAD:
                assert layout is not None and layout.to_payload is not None
                start, end, at, source, event_id, payload_at = layout.to_payload(value, HEADER_SIZE)
                payload = fastavro.schemaless_reader(io.BytesIO(value[payload_at:]), reader.payload, None)
                # the codec reads event ids as uuids: the same canonical text, the same failures
                envelope = {"event_id": str(uuid.UUID(event_id.decode())), "event_type": reader.event_type}
                event = {"envelope": envelope, "payload": payload}
                if self.codec.cipher is not None:
                    self.codec.cipher.decrypt(event)
            elif reader.mode == FULL:
                event = self.codec.decode(value)
                if layout is None:
                    envelope = event["envelope"]
                    at, source = micros(envelope["occurred_at"]), envelope["source"].encode()
                    return reader, at, source, self._owner(envelope["identifiers"], reader.event_type), event
                start, end, at, source = layout.scan(value, HEADER_SIZE)
            else:
                assert layout is not None
                start, end, at, source = layout.scan(value, HEADER_SIZE)
            key = value[start:end]
            pid = reader.anchors.get(key)
            if pid is None:
                if len(reader.anchors) >= ANCHOR_CACHE_LIMIT:
                    reader.anchors.clear()
                assert layout is not None
                identifiers = fastavro.schemaless_reader(io.BytesIO(key), layout.identifiers, None)
                pid = reader.anchors[key] = self._owner(identifiers, reader.event_type)
        except Exception:
            return None
        return reader, at, source, pid, event

    def records(self, values: list[bytes]) -> None:
        stats, base = self.stats, self.columns.lists["base"]
        pids, ats, types, uses = base["pid"], base["ts"], base["etype"], base["uses"]
        cutoff = self.cutoff
        for value in values:
            stats.records += 1
            located = self._locate(value)
            if located is None:
                stats.undecodable += 1
                continue
            reader, at, source, pid, event = located
            event_type = reader.event_type
            if source == OPERATOR and event_type in REQUEST_TYPES:
                stats.requests += 1
            elif cutoff is not None and at >= cutoff:
                stats.after_as_of += 1
            elif pid < 0:
                if pid == UNANCHORED:
                    stats.unanchored += 1
                else:
                    stats.unmapped += 1
            else:
                stats.folded += 1
                pids.append(pid)
                ats.append(at)
                types.append(reader.code)
                if event is None:
                    uses.append(0)
                else:
                    uses.append(int(event["payload"]["count"]) if event_type == FEATURE_USED else 0)
                    self._payload(event, pid, at)

    def take(self) -> _Chunk:
        """What was folded so far (as Arrow tables); the fold starts over empty."""
        chunk = _Chunk({name: self.columns.arrow(name) for name in RAW_COLUMNS}, self.traits, self.stats)
        self.stats, self.columns, self.traits = RebuildStats(), _raw_columns(), {}
        return chunk

    def _payload(self, event: dict[str, Any], pid: int, at: int) -> None:
        """The raw fact rows and customer traits of a fully decoded event."""
        envelope = event["envelope"]
        event_type = envelope["event_type"]
        extract = EXTRACTORS.get(event_type)
        if extract is not None:
            extract(self.columns, pid, at, str(envelope["event_id"]), event["payload"])
        if self.trait_types is None or event_type in self.trait_types:
            fold_traits(self.traits.setdefault(pid, {}), event, at, self.plan, WANTED_TRAITS)


def rebuild(
    log: EventLog,
    codec: EventCodec,
    as_of: dt.date | dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    profiles: Iterable[tuple[str, Profile]] | None = None,
    plan: ProfilePlan | None = None,
    identity_plan: RulePlan | None = None,
    workers: int | None = None,
) -> Rebuild:
    """Fact tables from ``patron.events`` of ``log`` (events before the end of ``as_of``'s day, if given).

    ``profiles``: the committed profile states (default: the embedded log's profile store; on Kafka,
    ``fact_tables.changelog_profiles(log, app_id)``). ``progress`` is called with the number of records read per batch.
    ``workers``: processes folding row ranges of the embedded log in parallel (default: the CPU
    count, at most MAX_WORKERS); the Kafka log is read in one pass.
    """
    plan = plan or load_profile_rules().plan
    if profiles is None:
        if not isinstance(log, LocalLog):
            raise TypeError(
                "on Kafka, pass profiles=changelog_profiles(log, app_id) (the worker's profile table)"
            )
        profiles = stored_profiles(log)
    profile_ids: list[str] = []
    owners: dict[str, int] = {}
    for profile_id, state in profiles:
        if "merged_into" not in state:
            owners.update(dict.fromkeys(state["parts"], len(profile_ids)))
            profile_ids.append(profile_id)
    fold = _Fold(codec, owners, _cutoff(as_of), plan, identity_plan or default_rules().plan)
    chunks = list(_fold_all(log, fold, workers, progress))
    combined = _combine(chunks, plan)
    return Rebuild(_aggregate(combined, fold.type_codes, profile_ids), combined.stats)


def _fold_all(
    log: EventLog, fold: _Fold, workers: int | None, progress: Callable[[int], None] | None
) -> Iterator[_Chunk]:
    """Fold every record: row ranges over worker processes for the embedded log, else one pass."""
    global _FORKED
    if not isinstance(log, LocalLog):
        for values in _scan_batches(log):
            fold.records(values)
            if progress is not None:
                progress(len(values))
        yield fold.take()
        return
    topic_id, ranges = _local_ranges(log, CHUNK_ROWS)
    count = workers or min(MAX_WORKERS, os.cpu_count() or 1)
    if count == 1 or len(ranges) == 1:
        for start, end in ranges:
            chunk = _fold_rows(fold, str(log.path), topic_id, start, end)
            if progress is not None:
                progress(chunk.stats.records)
            yield chunk
        return
    _FORKED = fold
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=count, mp_context=context) as pool:
            futures = [
                pool.submit(_fold_rows_forked, str(log.path), topic_id, start, end) for start, end in ranges
            ]
            for future in as_completed(futures):
                chunk = future.result()
                if progress is not None:
                    progress(chunk.stats.records)
                yield chunk
    finally:
        _FORKED = None


def rebuild_tables(
    log: EventLog,
    codec: EventCodec,
    as_of: dt.date | dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> FactTables:
    """The fact tables of :func:`rebuild` (the snapshot's entry point)."""
    return rebuild(log, codec, as_of, progress).tables


DAY_SQL = f"CAST(floor(ts / {MICROS_PER_DAY}.0) AS INTEGER)"
MONEY_SQL = "CAST(CASE WHEN isfinite(amount) THEN floor(amount * 1e6 + 0.5) ELSE 0 END AS BIGINT)"
LATEST = "ORDER BY ts DESC, event_id DESC"
EARLIEST = "ORDER BY ts, event_id"


def _in(codes: dict[str, int], names: Iterable[str]) -> str:
    """A SQL list of the type codes of ``names`` (-1 when none occurred, so the list is never empty)."""
    return "(" + ", ".join(str(codes.get(name, -1)) for name in names) + ")"


def _queries(codes: dict[str, int]) -> dict[str, str]:
    """Per fact table, the aggregation over the raw columns (``pid`` and times stay integers)."""

    def money_daily(source: str, count: str, amount: str) -> str:
        return (
            f"SELECT pid, {DAY_SQL} AS day, count(*) AS {count}, "
            f"CAST(sum({MONEY_SQL}) AS DOUBLE) / 1000000.0 AS {amount} FROM {source} GROUP BY ALL"
        )

    email = ", ".join(
        f"count(*) FILTER (WHERE etype = {codes.get(name, -1)}) AS {column}"
        for name, column in zip(EMAIL_COLUMNS, ("sent", "opened", "clicked", "unsubscribed"), strict=True)
    )
    return {
        "activity_daily": (
            f"SELECT pid, {DAY_SQL} AS day, count(*) AS events, "
            f"count(*) FILTER (WHERE etype = {codes.get('logged_in', -1)}) AS logins, "
            "CAST(sum(uses) AS BIGINT) AS feature_uses, "
            f"count(*) FILTER (WHERE etype IN {_in(codes, SESSION_TYPES)}) AS sessions FROM base GROUP BY ALL"
        ),
        "emails_daily": (
            f"SELECT pid, {DAY_SQL} AS day, {email} FROM base "
            f"WHERE etype IN {_in(codes, EMAIL_COLUMNS)} GROUP BY ALL"
        ),
        "orders_daily": money_daily("orders", "orders", "revenue"),
        "refunds_daily": money_daily("refunds", "refunds", "amount"),
        "payments_daily": money_daily("payments", "failures", "failed_amount"),
        "surveys_daily": (
            f"SELECT pid, {DAY_SQL} AS day, kind, count(*) AS responses, CAST(sum(score) AS BIGINT) AS score_sum, "
            f"count(*) FILTER (WHERE kind = 'NPS' AND score >= {PROMOTER_MIN}) AS promoters, "
            f"count(*) FILTER (WHERE kind = 'NPS' AND score <= {DETRACTOR_MAX}) AS detractors "
            "FROM surveys GROUP BY ALL"
        ),
        "nps_latest": (
            f"SELECT pid, max(ts) AS answered_at, first(score {LATEST}) AS score "
            "FROM surveys WHERE kind = 'NPS' GROUP BY pid"
        ),
        "tickets": (
            f"SELECT pid, ticket_id, first(priority {EARLIEST}) FILTER (WHERE kind = 'opened') AS priority, "
            "min(ts) FILTER (WHERE kind = 'opened') AS opened_at, "
            f"first(seconds {EARLIEST}) FILTER (WHERE kind = 'responded') AS first_response_seconds, "
            "max(ts) FILTER (WHERE kind = 'resolved') AS resolved_at, "
            f"first(seconds {LATEST}) FILTER (WHERE kind = 'resolved') AS resolution_seconds "
            "FROM tickets GROUP BY ALL"
        ),
        "subscriptions": (
            f"SELECT pid, subscription_id, first(plan {LATEST}) AS plan, first(amount {LATEST}) AS amount, "
            f"first(billing_interval {LATEST}) AS billing_interval, "
            "min(ts) FILTER (WHERE kind <> 'cancelled') AS started_at, max(period_end) AS period_end, "
            "max(ts) FILTER (WHERE kind = 'cancelled') AS cancelled_at, "
            "count(*) FILTER (WHERE kind = 'renewed') AS renewals FROM subscriptions GROUP BY ALL"
        ),
        "leads": (
            f"SELECT pid, lead_id, first(lead_source {EARLIEST}) AS lead_source, min(ts) AS created_at "
            "FROM leads GROUP BY ALL"
        ),
        "deals": (
            f"SELECT pid, deal_id, first(lead_id {LATEST}) AS lead_id, first(won {LATEST}) AS won, "
            f"first(amount {LATEST}) AS amount, first(created_at {LATEST}) AS created_at, max(ts) AS closed_at "
            "FROM deals GROUP BY ALL"
        ),
    }


def _contract(table: pa.Table, name: str, profile_ids: pa.Array) -> pa.Table:
    """A query result as the contract table: profile index -> id, integer times and days cast."""
    schema = SCHEMAS[name]
    columns = [profile_ids.take(table.column("pid"))]
    columns += [table.column(f.name).cast(f.type) for f in list(schema)[1:]]
    return pa.Table.from_arrays(columns, schema=schema)


def _aggregate(chunk: _Chunk, type_codes: dict[str, int], profile_ids: list[str]) -> FactTables:
    ids = pa.array(profile_ids, pa.string())
    db = duckdb.connect()
    try:
        for name in RAW_COLUMNS:
            db.register(name, chunk.columns[name])
        out = {
            name: _contract(db.sql(sql).to_arrow_table(), name, ids)
            for name, sql in _queries(type_codes).items()
        }
        seen = db.execute(
            "SELECT pid, min(ts), max(ts), count(*) FROM base GROUP BY pid ORDER BY pid"
        ).fetchall()
    finally:
        db.close()
    rows = [customer_row(profile_ids[pid], *times, chunk.traits.get(pid, {})) for pid, *times in seen]
    out["customers"] = pa.Table.from_pylist(rows, schema=CUSTOMERS)
    return FactTables(**out)
