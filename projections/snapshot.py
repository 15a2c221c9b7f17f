"""Parquet snapshots of every projection, published atomically, with a retained history.

Layout under the data directory::

    snapshots/
      manifest.json                      {"current": ID, "snapshots": [oldest ... newest ID], ...}
      20261123T181502Z-3f9c2a/           one directory per snapshot
        snapshot.json                    as_of, created_at, source, log positions, tables (rows, columns)
        customers.parquet ...            fact tables
        rfm.parquet clv.parquet ...      derived tables (scores)
        profiles.parquet identities.parquet

A snapshot is written in full into its own directory, *then* the manifest is switched to it (written
aside, fsynced, ``os.replace``d): a reader that follows the manifest sees the old snapshot or the new
one, never half of one. The last ``keep`` snapshots stay listed; older directories are deleted after
the switch, and the current one never is.

Change events (lifecycle stage changes, health alerts) compare the new snapshot with the current
one and are appended to the log *before* the switch: if appending fails the snapshot is not
published, and re-running compares with the same previous snapshot again. Their ids are
deterministic, so a re-run appends nothing twice. Changed scores (``profile_scored``) are appended
the same way, to ``patron.profile-events``, for the profiles stage to fold into the profiles.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from patron.config import Settings
from patron.errors import EXIT_INVALID, PatronError
from patron.events.codec import EventCodec, open_codec
from patron.projections import changes, clv, health, lifecycle, rfm
from patron.projections.fact_tables import (
    FactTables,
    changelog_profiles,
    stored_profiles,
    tables_from_profiles,
)
from patron.projections.pii import hash_secret, write_masked
from patron.projections.profile_export import export_profiles
from patron.projections.profile_processor import ProfileProcessor
from patron.projections.profile_rules import load_profile_rules
from patron.projections.rebuild import rebuild as replay_log
from patron.projections.segments.membership import MEMBERSHIP_SCHEMA, membership_rows
from patron.projections.sql import SqlSession
from patron.streams.backends import open_log
from patron.streams.local_log import LocalLog
from patron.streams.log import EVENTS_TOPIC, EventLog
from patron.streams.state import SqliteStore, read_changelog, scan_items, store_name
from patron.streams.topology import PROFILE_EVENTS_TOPIC

SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"
SNAPSHOT_META = "snapshot.json"
LOCK = ".lock"
DEFAULT_KEEP = 5
ROW_GROUP = 100_000
DEFAULT_APP_ID = "patron"
"""The ``patron worker --app-id`` whose profile table a Kafka snapshot reads (the worker's default)."""
Step = Callable[[str], None]
"""Called with a description as each step of a snapshot starts (drives a progress bar)."""

DERIVED: tuple[tuple[str, Callable[[FactTables, datetime], pa.Table]], ...] = (
    ("rfm", rfm.build_rfm),
    ("clv", clv.build_clv),
    ("health", health.build_health),
    ("lifecycle", lifecycle.build_lifecycle),
)
"""The score tables, in the order they are built, each by its one builder ``(fact tables, as_of)``;
``health_accounts`` follows from ``health``, ``clv_model`` (the fitted parameters) from ``clv``."""

STEPS = 5 + len(DERIVED)
"""Progress steps of one snapshot: fact tables, profiles, segment membership, each score table,
change events, publishing."""
SCORES_APPENDED = "score_events_appended"
"""``snapshot.json`` key: ``profile_scored`` events appended (an int, 0 when a re-run found them all
there), or null when this snapshot appended none because its as-of was not later than the newest
scores already sent."""


@dataclass(frozen=True)
class SnapshotInfo:
    """What ``take_snapshot`` published."""

    snapshot_id: str
    path: Path
    as_of: datetime
    created_at: datetime
    source: str
    tables: dict[str, int]
    """Rows per table."""
    changes: int
    """Change events appended to the log (0 when a re-run found them all there already)."""
    scores: int
    """``profile_scored`` events appended to ``patron.profile-events`` (0 also when none were due)."""
    replay: dict[str, int] | None
    """A rebuild's record counts (folded, and each reason a record was not), None when incremental."""


def snapshots_root(settings: Settings) -> Path:
    return settings.data_dir / SNAPSHOTS


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest, or an empty one when no snapshot was ever published."""
    path = root / MANIFEST
    if not path.exists():
        return {"current": None, "snapshots": []}
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise PatronError(
            f"{path}: not valid JSON ({exc}); run `patron snapshot` to write a new one"
        ) from None
    return dict(manifest)


def snapshot_path(root: Path, snapshot_id: str | None = None) -> Path:
    """The directory of snapshot ``snapshot_id``, or of the current one; a clear error when there is none."""
    manifest = read_manifest(root)
    wanted = snapshot_id or manifest["current"]
    if wanted is None:
        raise PatronError(f"{root}: no snapshot yet; run `patron snapshot` first", EXIT_INVALID)
    if wanted not in manifest["snapshots"] or not (root / wanted).is_dir():
        known = ", ".join(manifest["snapshots"]) or "none"
        raise PatronError(
            f"snapshot {wanted!r} is not in {root / MANIFEST} (retained: {known})", EXIT_INVALID
        )
    return root / wanted


def read_meta(snapshot_dir: Path) -> dict[str, Any]:
    return dict(orjson.loads((snapshot_dir / SNAPSHOT_META).read_bytes()))


def as_of_moment(day: date) -> datetime:
    """``--as-of DAY`` means the end of that UTC day: events before the next midnight count."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


def new_snapshot_id(created_at: datetime, as_of: datetime, source: str) -> str:
    """Sortable by creation time (UTC, seconds), unique by a short hash of what it describes."""
    digest = hashlib.sha256(f"{created_at.isoformat()}|{as_of.isoformat()}|{source}".encode()).hexdigest()
    return f"{created_at:%Y%m%dT%H%M%SZ}-{digest[:6]}"


def write_tables(directory: Path, tables: Mapping[str, pa.Table]) -> None:
    """Each table as ``<name>.parquet`` (zstd) in ``directory``, in row groups of ``ROW_GROUP`` rows:
    DuckDB reads a file's row groups in parallel and skips those whose min/max statistics exclude a
    filter, so one huge row group would make every query over a big table single-threaded and full-scan."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet", compression="zstd", row_group_size=ROW_GROUP)


def materialize_kpis(directory: Path) -> list[str]:
    """Write every KPI view of ``kpis.sql`` over the tables in ``directory`` as its own Parquet table.

    The views aggregate whole fact tables (a cohort matrix over every order day); computed once per
    snapshot, an analyst's query reads a few hundred rows instead. ``SqlSession`` then serves the
    table instead of the view, so `patron sql` and `patron report` read the same numbers either way.
    """
    session = SqlSession(directory)
    try:
        results = {name: session.query(f"SELECT * FROM {name}") for name in session.kpi_views}
    finally:
        session.close()
    write_tables(directory, results)
    return sorted(results)


def _describe(directory: Path) -> dict[str, Any]:
    """Rows and columns of every Parquet file in ``directory``, from the files' footers."""
    described = {}
    for path in sorted(directory.glob("*.parquet")):
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
        described[path.stem] = {
            "rows": meta.num_rows,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        }
    return described


def _write_atomically(path: Path, data: bytes) -> None:
    """Write aside, fsync, rename over, fsync the directory: the file is the old or the new one."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(aside, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(aside, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def publish(root: Path, snapshot_id: str, meta: Mapping[str, Any], keep: int) -> list[str]:
    """Finish snapshot ``snapshot_id`` (already written into ``root/<id>``), make it current, and
    delete the snapshots beyond the last ``keep``; returns the ids deleted."""
    if keep < 1:
        raise PatronError(f"--keep {keep}: keep at least 1 snapshot (the current one)")
    directory = root / snapshot_id
    described = _describe(directory)
    _write_atomically(
        directory / SNAPSHOT_META,
        orjson.dumps({**meta, "snapshot_id": snapshot_id, "tables": described}, option=orjson.OPT_INDENT_2),
    )
    manifest = read_manifest(root)
    listed = [name for name in manifest["snapshots"] if name != snapshot_id] + [snapshot_id]
    retained, dropped = listed[-keep:], listed[:-keep]
    _write_atomically(
        root / MANIFEST,
        orjson.dumps(
            {"current": snapshot_id, "snapshots": retained, "updated_at": datetime.now(UTC).isoformat()},
            option=orjson.OPT_INDENT_2,
        ),
    )
    for name in dropped:
        shutil.rmtree(root / name, ignore_errors=True)
    return dropped


def _previous(root: Path, table: str) -> pa.Table | None:
    """``table`` of the current snapshot, the baseline change events compare with (None: none yet)."""
    current = read_manifest(root)["current"]
    path = root / str(current) / f"{table}.parquet"
    return pq.read_table(path) if current is not None and path.exists() else None


def _positions(log: EventLog) -> dict[str, Any]:
    """Where the log stood: source events written and, embedded, how far the profile projection had
    folded (a Kafka worker's offsets belong to its consumer group, not to the log)."""
    positions: dict[str, Any] = {"events_end": {str(p): o for p, o in log.end_offsets(EVENTS_TOPIC).items()}}
    if isinstance(log, LocalLog):
        committed = log.committed(ProfileProcessor.name, PROFILE_EVENTS_TOPIC)
        positions["profiles_committed"] = {str(p): o for p, o in committed.items()}
    return positions


def _append_changes(
    log: EventLog, codec: EventCodec, root: Path, derived: Mapping[str, pa.Table], as_of: datetime
) -> int:
    """Append the change events since the current snapshot; none when this one is not later than it
    (time travel to an earlier day is a look back, not a change that happens now)."""
    current = read_manifest(root)["current"]
    if current is not None and datetime.fromisoformat(read_meta(root / current)["as_of"]) >= as_of:
        return 0
    events = changes.stage_changes(_previous(root, "lifecycle"), derived["lifecycle"], as_of)
    events += changes.alert_changes(_previous(root, "health"), derived["health"], as_of)
    if not events:
        return 0
    log.ensure_topic(changes.PROFILE_CHANGES_TOPIC)
    return log.append(
        changes.PROFILE_CHANGES_TOPIC, [changes.message(codec, event) for event in events]
    ).appended


def _score_baseline(root: Path) -> tuple[Path, datetime] | None:
    """The retained snapshot whose scores the profiles stage holds: the one with the latest as-of
    among those that appended score events (the stage keeps the newest scores by as-of). Not simply
    the current snapshot: a time-travel snapshot becomes current without sending its scores, and a
    snapshot taken before score events existed sent none; neither says what the profiles hold."""
    candidates = []
    for snapshot_id in read_manifest(root)["snapshots"]:
        path = root / snapshot_id / SNAPSHOT_META
        if path.exists() and (meta := read_meta(path.parent)).get(SCORES_APPENDED) is not None:
            candidates.append((datetime.fromisoformat(meta["as_of"]), path.parent))
    if not candidates:
        return None
    as_of, directory = max(candidates)
    return directory, as_of


def _score_tables(directory: Path) -> dict[str, pa.Table]:
    """A snapshot's score tables, only the columns the scores read."""
    tables = {}
    for name in changes.SCORE_TABLES:
        path = directory / f"{name}.parquet"
        if path.exists():
            tables[name] = pq.read_table(path, columns=changes.score_inputs(name, pq.read_schema(path).names))
    return tables


def _append_scores(
    log: EventLog, codec: EventCodec, root: Path, derived: Mapping[str, pa.Table], as_of: datetime
) -> int | None:
    """Append ``profile_scored`` for each profile whose scores differ from the baseline's (all scored
    profiles without one), batch by batch; None when this snapshot is not later than the baseline:
    the profiles stage keeps the newest scores, so older ones would be ignored there anyway, and
    a look back (``--as-of`` an earlier day) must not replace today's scores."""
    baseline = _score_baseline(root)
    if baseline is not None and baseline[1] >= as_of:
        return None
    previous = _score_tables(baseline[0]) if baseline is not None else None
    log.ensure_topic(PROFILE_EVENTS_TOPIC)
    appended = 0
    for events in changes.score_changes(previous, derived, as_of):
        appended += log.append(
            PROFILE_EVENTS_TOPIC, [changes.message(codec, event) for event in events]
        ).appended
    return appended


def segment_membership(log: EventLog, app_id: str) -> pa.Table:
    """The ``segment_membership`` table: a row per stay of a profile in a segment, from the profiles
    stage's ``segments`` store (embedded) or its changelog (Kafka ``app_id``); sorted by profile id,
    empty when no segment was ever evaluated."""
    if isinstance(log, LocalLog):
        states = scan_items(SqliteStore(log, store_name(ProfileProcessor.name, "segments"), cache_size=0))
    else:
        states = iter(read_changelog(log, app_id, ProfileProcessor.name, "segments").items())
    rows = [
        row
        for profile_id, state in sorted(states, key=lambda item: item[0])
        for row in membership_rows(profile_id, state)
    ]
    return pa.Table.from_pylist(rows, schema=MEMBERSHIP_SCHEMA)


def take_snapshot(
    settings: Settings,
    as_of: date | None = None,
    rebuild: bool = False,
    keep: int = DEFAULT_KEEP,
    app_id: str = DEFAULT_APP_ID,
    progress: Step | None = None,
) -> SnapshotInfo:
    """Build every table, write them as a new snapshot, append change events, publish it.

    Without ``as_of`` the fact tables are the profile projection's (incremental, as of the last
    event the processors folded) and scores are computed as of now; ``rebuild`` replays the log
    instead. ``as_of`` always rebuilds, from the events before the end of that UTC day, and scores
    as of that moment; who-is-who (identities, profiles) is today's knowledge. On Kafka the profile
    projection is the table of the ``patron worker`` group ``app_id``, read from its changelog.
    """
    with _exclusive(snapshots_root(settings)):
        return _take(settings, as_of, rebuild, keep, app_id, progress or (lambda _description: None))


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """One snapshot at a time per data directory: a second ``patron snapshot`` waits for the first,
    then compares with what it published (the manifest is read, changed and replaced under the lock)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _one_read_view(log: EventLog) -> Iterator[None]:
    """On the embedded log, every read inside sees one committed state (one SQLite read transaction):
    the fact tables, ``profiles``, ``identities`` and the log positions agree even while ``patron run
    --follow`` commits. A Kafka changelog has no such view; it is read once per table set."""
    if not isinstance(log, LocalLog):
        yield
        return
    log.db.execute("BEGIN")
    try:
        yield
    finally:
        log.db.execute("COMMIT")


def _take(
    settings: Settings, as_of: date | None, rebuild: bool, keep: int, app_id: str, advance: Step
) -> SnapshotInfo:
    created_at = datetime.now(UTC)
    moment = as_of_moment(as_of) if as_of is not None else created_at
    source = "rebuild" if rebuild or as_of is not None else "incremental"
    if source == "rebuild" and settings.broker.scheme != "local":
        raise PatronError(
            f"--rebuild and --as-of replay the log against the embedded profile store; {settings.broker} "
            "is Kafka: take an incremental snapshot (no --rebuild, no --as-of)",
            EXIT_INVALID,
        )
    root = snapshots_root(settings)
    snapshot_id = new_snapshot_id(created_at, moment, source)
    directory = root / snapshot_id
    plan = load_profile_rules().plan
    log = open_log(settings)
    try:
        codec = open_codec(settings)
        try:
            with _one_read_view(log):
                advance("fact tables" + (" (replaying the log)" if source == "rebuild" else ""))
                positions = _positions(log)
                replay: dict[str, int] | None = None
                if isinstance(log, LocalLog) and source == "rebuild":
                    rebuilt = replay_log(log, codec, as_of, plan=plan)
                    facts, replay = rebuilt.tables, asdict(rebuilt.stats)
                elif isinstance(log, LocalLog):
                    facts = tables_from_profiles(stored_profiles(log), plan)
                else:
                    facts = tables_from_profiles(changelog_profiles(log, app_id), plan)
                advance("profiles and identities")
                states = (
                    stored_profiles(log) if isinstance(log, LocalLog) else changelog_profiles(log, app_id)
                )
                export_profiles(states, directory, plan)
                write_masked(directory, hash_secret(settings.data_dir), plan, codec.catalogue)
                advance("segment membership")
                membership = segment_membership(log, app_id)
            derived: dict[str, pa.Table] = {}
            for name, build in DERIVED:
                advance(name)
                derived[name] = build(facts, moment)
            derived["health_accounts"] = health.build_health_accounts(derived["health"])
            derived["clv_model"] = clv.clv_model_table(derived["clv"])
            # Lowest scores first: the red rows sit in the first row groups, which a status filter reads alone.
            derived["health"] = derived["health"].sort_by(
                [("score", "ascending"), ("profile_id", "ascending")]
            )
            write_tables(directory, {**dict(facts.items()), **derived, "segment_membership": membership})
            materialize_kpis(directory)
            advance("change and score events")
            appended = _append_changes(log, codec, root, derived, moment)
            scored = _append_scores(log, codec, root, derived, moment)
            advance("publishing")
            meta = {
                "as_of": moment.isoformat(),
                "created_at": created_at.isoformat(),
                "source": source,
                "broker": str(settings.broker),
                "log_positions": positions,
                "replay": replay,
                "change_events_appended": appended,
                SCORES_APPENDED: scored,
            }
            publish(root, snapshot_id, meta, keep)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
    finally:
        log.close()
    rows = {name: entry["rows"] for name, entry in read_meta(directory)["tables"].items()}
    return SnapshotInfo(
        snapshot_id, directory, moment, created_at, source, rows, appended, scored or 0, replay
    )
