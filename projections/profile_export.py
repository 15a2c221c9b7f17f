"""Export the committed profiles as Parquet, for analysts and warehouses.

``profiles.parquet``: one row per live profile (tombstones of merged profiles are left out):
seen times, event counts, traits (JSON-encoded values, with the source that won each), consent per
purpose:channel, and the profile ids merged into it. ``identities.parquet``: one row per
(profile_id, kind, value). Both zstd-compressed, written in row groups so memory stays flat
however many profiles there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from patron.projections.profile_processor import ProfileProcessor
from patron.projections.profile_rules import ProfilePlan
from patron.projections.profiles import summary
from patron.streams.local_log import LocalLog
from patron.streams.state import store_name

ROW_GROUP = 50_000
TIME = pa.timestamp("us", tz="UTC")
PROFILES_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("first_seen", TIME),
        ("last_seen", TIME),
        ("events", pa.int64()),
        ("traits", pa.map_(pa.string(), pa.string())),
        ("trait_sources", pa.map_(pa.string(), pa.string())),
        ("by_type", pa.map_(pa.string(), pa.int64())),
        ("by_source", pa.map_(pa.string(), pa.int64())),
        ("consent", pa.map_(pa.string(), pa.bool_())),
        ("merged_from", pa.list_(pa.string())),
    ]
)
IDENTITIES_SCHEMA = pa.schema([("profile_id", pa.string()), ("kind", pa.string()), ("value", pa.string())])


def count_profiles(log: LocalLog) -> int:
    """Stored profile states, tombstones included (the export's progress total)."""
    name = store_name(ProfileProcessor.name, "profiles")
    return int(log.db.execute("SELECT count(*) FROM state WHERE store = ?", (name,)).fetchone()[0])


def _row(profile_id: str, profile: dict[str, Any], plan: ProfilePlan) -> dict[str, Any]:
    view = summary(profile_id, profile, plan)
    return {
        "profile_id": profile_id,
        "first_seen": view["first_seen"],
        "last_seen": view["last_seen"],
        "events": view["events"],
        "traits": [(name, orjson.dumps(entry["value"]).decode()) for name, entry in view["traits"].items()],
        "trait_sources": [(name, entry["source"]) for name, entry in view["traits"].items()],
        "by_type": list(view["by_type"].items()),
        "by_source": list(view["by_source"].items()),
        "consent": [(key, entry["granted"]) for key, entry in view["consent"].items()],
        "merged_from": [key for key in profile["keys"] if key != profile_id],
    }


def export_profiles(
    states: Iterable[tuple[str, dict[str, Any]]],
    out_dir: Path,
    plan: ProfilePlan,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Write both files into ``out_dir`` from (profile id, state) pairs, tombstones included (skipped):
    the embedded store's ``fact_tables.stored_profiles`` or a Kafka worker's ``changelog_profiles``.
    Returns (profiles, identifier rows) written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = identities = 0
    rows: list[dict[str, Any]] = []
    ids: dict[str, list[str]] = {"profile_id": [], "kind": [], "value": []}
    with (
        pq.ParquetWriter(out_dir / "profiles.parquet", PROFILES_SCHEMA, compression="zstd") as profile_file,
        pq.ParquetWriter(out_dir / "identities.parquet", IDENTITIES_SCHEMA, compression="zstd") as id_file,
    ):

        def flush() -> None:
            profile_file.write_table(pa.Table.from_pylist(rows, schema=PROFILES_SCHEMA))
            id_file.write_table(pa.Table.from_pydict(ids, schema=IDENTITIES_SCHEMA))
            rows.clear()
            for column in ids.values():
                column.clear()

        for profile_id, state in states:
            if progress is not None:
                progress(1)
            if "merged_into" in state:
                continue
            rows.append(_row(profile_id, state, plan))
            for kind, values in sorted(state["ids"].items()):
                for value in values:
                    ids["profile_id"].append(profile_id)
                    ids["kind"].append(kind)
                    ids["value"].append(value)
            if len(rows) >= ROW_GROUP:
                profiles += len(rows)
                identities += len(ids["value"])
                flush()
        profiles += len(rows)
        identities += len(ids["value"])
        flush()
    return profiles, identities
