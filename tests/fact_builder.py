"""Hand-built fact tables for score tests: name only the rows a case needs, the rest stay empty.

Rows are given as dicts with every column of the contract schema (``patron.projections.fact_tables``),
so a test reads like the facts it describes and a schema change fails loudly here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from patron.projections.fact_tables import SCHEMAS, FactTables


def at(day: str, hour: int = 0) -> datetime:
    """A UTC moment on ``day`` (ISO date)."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC).replace(hour=hour)


def d(day: str) -> date:
    return date.fromisoformat(day)


def customer(profile_id: str, first_seen: str, account: str | None = None) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "first_seen": at(first_seen),
        "last_seen": at(first_seen),
        "signup_at": at(first_seen),
        "account": account,
        "plan": None,
        "country": None,
        "events": 1,
    }


def fact_tables(**rows: list[dict[str, Any]]) -> FactTables:
    """FactTables with the given rows per table name; unknown names are a test bug, so they raise."""
    unknown = set(rows) - set(SCHEMAS)
    if unknown:
        raise KeyError(f"no fact table named {sorted(unknown)}")
    for name, table_rows in rows.items():
        for row in table_rows:
            if set(row) != set(SCHEMAS[name].names):
                raise KeyError(f"{name} row {row} does not have exactly the columns {SCHEMAS[name].names}")
    return FactTables(
        **{
            name: pa.Table.from_pylist(rows.get(name, []), schema=schema)
            if rows.get(name)
            else schema.empty_table()
            for name, schema in SCHEMAS.items()
        }
    )
