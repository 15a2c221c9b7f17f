"""Change events between two snapshots: lifecycle stage changes, early-warning alerts that start,
and the scores of each profile whose scores changed.

Scores are recomputed per snapshot, so "the stage changed" or "the alert started to hold" only
exists as a difference between the new snapshot and the previous one. ``patron snapshot`` appends
these events to ``patron.profile-changes`` keyed by profile id, for whatever reacts to them (a CSM
queue, a marketing journey).

Ids are uuid5 over (kind, profile, new value, as-of day): re-running a snapshot for the same day
appends only duplicates the log drops, and two snapshots on one day that see the same change emit
it once. A change that reverts and happens again on a later day is a new event.

With no previous snapshot there is nothing to compare stages with: the first snapshot emits no
stage changes (its ``lifecycle`` table is the starting point), but every alert that holds is
raised, because an alert is a call to act that nobody has seen yet. A profile new since the
previous snapshot has ``from_stage`` null and none of its alerts held before.

Scores (``profile_scored``) go to ``patron.profile-events`` instead: the profiles stage folds them
into each profile so that segment conditions can name them. A profile's scores are sent when any
of them, as shown (rounded), differs from the baseline's; with no baseline, every scored profile's.
Their ids are uuid5 over (profile, as-of moment), the identity the schema promises: the same
snapshot re-run (``--as-of``) appends duplicates only.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from patron.events.codec import EventCodec
from patron.identity.events import uuid5_text
from patron.projections.health_signals import connect
from patron.projections.purchases import as_of_day
from patron.streams.log import Message
from patron.streams.topology import derived_event

PROFILE_CHANGES_TOPIC = "patron.profile-changes"
PROJECTIONS_SOURCE = "patron.projections"
STAGE_CHANGED = "lifecycle_stage_changed"
ALERT_RAISED = "health_alert_raised"
PROFILE_SCORED = "profile_scored"
CHANGE_NAMESPACE = uuid.UUID("8d7e2f14-6a3b-5c90-b1d2-4e5f60718293")


def change_id(kind: str, profile_id: str, value: str, as_of: datetime) -> str:
    """The deterministic event id of one change seen on the as-of day."""
    return uuid5_text(CHANGE_NAMESPACE, f"{kind}:{profile_id}:{value}:{as_of_day(as_of).isoformat()}")


def _change_event(kind: str, value: str, as_of: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    return derived_event(
        change_id(kind, payload["profile_id"], value, as_of),
        kind,
        source=PROJECTIONS_SOURCE,
        occurred_at=as_of,
        received_at=as_of,
        payload={**payload, "as_of": as_of},
    )


def _alerting(health: pa.Table) -> pa.Table:
    """The rows of a ``health`` table with at least one alert (few: alerts are exceptions)."""
    return health.filter(pc.greater(pc.list_value_length(health["alerts"]), 0))


def stage_changes(previous: pa.Table | None, current: pa.Table, as_of: datetime) -> list[dict[str, Any]]:
    """``lifecycle_stage_changed`` events for profiles whose stage differs from ``previous`` (both are
    ``lifecycle`` tables), sorted by profile id; none when there is no previous snapshot."""
    if previous is None:
        return []
    earlier = previous.select(["profile_id", "stage"]).rename_columns(["profile_id", "previous_stage"])
    joined = (
        current.select(["profile_id", "stage", "since"])
        .join(earlier, "profile_id", join_type="left outer")
        .sort_by("profile_id")
    )
    changed = joined.filter(
        pc.or_kleene(
            pc.is_null(joined["previous_stage"]), pc.not_equal(joined["stage"], joined["previous_stage"])
        )
    )
    return [
        _change_event(
            STAGE_CHANGED,
            row["stage"],
            as_of,
            {
                "profile_id": row["profile_id"],
                "from_stage": row["previous_stage"],
                "to_stage": row["stage"],
                "since": row["since"],
            },
        )
        for row in changed.to_pylist()
    ]


def alert_changes(previous: pa.Table | None, current: pa.Table, as_of: datetime) -> list[dict[str, Any]]:
    """``health_alert_raised`` events for each alert in ``current`` that did not hold for the profile in
    ``previous`` (both are ``health`` tables), sorted by profile id, then in rule order."""
    held: dict[str, list[str]] = {}
    if previous is not None:
        held = {
            row["profile_id"]: row["alerts"]
            for row in _alerting(previous).select(["profile_id", "alerts"]).to_pylist()
        }
    events = []
    for row in _alerting(current).sort_by("profile_id").to_pylist():
        held_before = set(held.get(row["profile_id"], ()))
        for rule in row["alerts"]:
            if rule in held_before:
                continue
            payload = {
                "profile_id": row["profile_id"],
                "account": row["account"],
                "rule": rule,
                "score": row["score"],
                "status": row["status"],
                "factors": row["factors"],
            }
            events.append(_change_event(ALERT_RAISED, rule, as_of, payload))
    return events


def message(codec: EventCodec, event: dict[str, Any]) -> Message:
    """The log message of a change event, keyed by its profile id (all of a profile's changes in order)."""
    return codec.message(event, key=event["payload"]["profile_id"].encode())


# -- scores -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreField:
    """One field of the ``profile_scored`` payload: the score table and column it is read from, the
    SQL that rounds it as the event shows it (``{}`` is the column), and its DuckDB type."""

    name: str
    table: str
    column: str | None
    shown: str
    sql_type: str


SCORE_FIELDS = (
    ScoreField("rfm_segment", "rfm", "segment", "{}", "VARCHAR"),
    ScoreField("rfm_r", "rfm", "r_score", "{}", "INTEGER"),
    ScoreField("rfm_f", "rfm", "f_score", "{}", "INTEGER"),
    ScoreField("rfm_m", "rfm", "m_score", "{}", "INTEGER"),
    ScoreField("health_score", "health", "score", "round({}, 1)", "DOUBLE"),
    ScoreField("health_status", "health", "status", "{}", "VARCHAR"),
    ScoreField("clv", "clv", None, "round({})", "DOUBLE"),  # column: the longest horizon's
    ScoreField("p_alive", "clv", "p_alive", "round({}, 2)", "DOUBLE"),
    ScoreField("lifecycle_stage", "lifecycle", "stage", "{}", "VARCHAR"),
)
SCORE_TABLES = ("rfm", "health", "clv", "lifecycle")
_CLV_COLUMN = re.compile(r"clv_(\d+)d")
SCORE_BATCH = 10_000
"""Events built (and, by ``patron snapshot``, encoded and appended) at a time: a first snapshot of a
million profiles emits a million events, which must not all be dicts in memory at once."""


def _column(field: ScoreField, columns: Sequence[str]) -> str | None:
    """The column ``field`` reads among ``columns``; for ``clv``, the predicted value over the longest
    configured horizon (``clv_365d`` over ``clv_90d``), as the report shows it."""
    if field.column is not None:
        return field.column if field.column in columns else None
    horizons = sorted((int(m.group(1)), name) for name in columns if (m := _CLV_COLUMN.fullmatch(name)))
    return horizons[-1][1] if horizons else None


def score_inputs(table: str, columns: Sequence[str]) -> list[str]:
    """The columns of score table ``table`` (having ``columns``) that the scores read: a baseline is
    read with only these (``health`` also holds a JSON explanation per profile)."""
    wanted = [_column(field, columns) for field in SCORE_FIELDS if field.table == table]
    return ["profile_id", *(name for name in wanted if name is not None)]


def _table_sql(side: str, table: str, tables: Mapping[str, pa.Table]) -> str:
    """A SELECT of (profile_id, that table's score fields as shown) over ``<side>_<table>``; typed
    nulls for a missing column, no rows for a missing table."""
    fields = [field for field in SCORE_FIELDS if field.table == table]
    found = tables.get(table)
    columns = found.column_names if found is not None else []
    shown = []
    for field in fields:
        column = _column(field, columns)
        value = field.shown.format(f'"{column}"') if column is not None else "NULL"
        shown.append(f"CAST({value} AS {field.sql_type}) AS {field.name}")
    if found is None:
        return f"SELECT CAST(NULL AS VARCHAR) AS profile_id, {', '.join(shown)} WHERE false"
    return f"SELECT profile_id, {', '.join(shown)} FROM {side}_{table}"


def _scores_sql(side: str, tables: Mapping[str, pa.Table]) -> str:
    """Every profile of any score table with all its score fields (null where a table lacks it)."""
    parts = {table: _table_sql(side, table, tables) for table in SCORE_TABLES}
    ids = " UNION ".join(f"SELECT profile_id FROM ({sql})" for sql in parts.values())
    selected = ", ".join(f"{field.table}.{field.name}" for field in SCORE_FIELDS)
    joins = " ".join(
        f"LEFT JOIN ({sql}) AS {table} ON {table}.profile_id = ids.profile_id" for table, sql in parts.items()
    )
    return f"SELECT ids.profile_id, {selected} FROM ({ids}) AS ids {joins}"


def changed_scores(previous: Mapping[str, pa.Table] | None, current: Mapping[str, pa.Table]) -> pa.Table:
    """The score fields (as shown) of each profile of ``current`` whose fields differ from
    ``previous``'s (null-safe), or of each profile with any score when there is no ``previous``;
    sorted by profile id. Both map score table names (``SCORE_TABLES``) to tables; one DuckDB query."""
    con = connect()
    try:
        for side, tables in (("cur", current), ("prev", previous or {})):
            for table in SCORE_TABLES:
                if table in tables:
                    con.register(f"{side}_{table}", tables[table])
        any_score = " OR ".join(f"c.{field.name} IS NOT NULL" for field in SCORE_FIELDS)
        differs = " OR ".join(f"c.{field.name} IS DISTINCT FROM p.{field.name}" for field in SCORE_FIELDS)
        return con.sql(
            f"WITH c AS ({_scores_sql('cur', current)}), p AS ({_scores_sql('prev', previous or {})}) "
            f"SELECT c.* FROM c LEFT JOIN p ON p.profile_id = c.profile_id "
            f"WHERE ({any_score}) AND ({differs}) ORDER BY c.profile_id"
        ).to_arrow_table()
    finally:
        con.close()


def score_id(profile_id: str, as_of_iso: str) -> str:
    """The deterministic id of a profile's scores as of one moment (``as_of.isoformat()``)."""
    return uuid5_text(CHANGE_NAMESPACE, f"{PROFILE_SCORED}:{profile_id}:{as_of_iso}")


def score_changes(
    previous: Mapping[str, pa.Table] | None, current: Mapping[str, pa.Table], as_of: datetime
) -> Iterator[list[dict[str, Any]]]:
    """``profile_scored`` events for the profiles whose scores changed since ``previous`` (all scored
    profiles without one), sorted by profile id, in lists of at most ``SCORE_BATCH``."""
    iso = as_of.isoformat()
    for batch in changed_scores(previous, current).to_batches(max_chunksize=SCORE_BATCH):
        yield [
            derived_event(
                score_id(row["profile_id"], iso),
                PROFILE_SCORED,
                source=PROJECTIONS_SOURCE,
                occurred_at=as_of,
                received_at=as_of,
                payload={**row, "as_of": as_of},
            )
            for row in batch.to_pylist()
        ]
