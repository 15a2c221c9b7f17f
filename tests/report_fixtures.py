"""A snapshot-shaped directory of Parquet tables for the report tests, with known contents.

Fact tables use the schemas of ``patron.projections.fact_tables``; the derived tables (rfm, clv,
health, lifecycle) follow the column contract of the design and the builders, filled with seeded
random values so the tests know exactly what every chart must show.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from patron.projections.fact_tables import SCHEMAS
from patron.projections.health import build_health_accounts

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
PROFILES = 150
STAGES = ("prospect", "first_time_buyer", "repeat", "loyal", "at_risk", "churned", "reactivated")
SEGMENTS = ("Champions", "Loyal", "At Risk", "Hibernating", "Lost", "New")
FACTORS = ("usage", "support", "sentiment", "commercial")
WEIGHTS = {"usage": 0.30, "support": 0.25, "sentiment": 0.20, "commercial": 0.25}


def _ids(n: int) -> list[str]:
    return [f"p{i:04d}" for i in range(n)]


def fact_tables(rng: np.random.Generator, n: int = PROFILES) -> dict[str, pa.Table]:
    """Customers who order on random days of 2025; activity, surveys and tickets enough for the KPIs."""
    ids = _ids(n)
    first_seen = [AS_OF - timedelta(days=int(d)) for d in rng.integers(30, 400, n)]
    customers = {
        "profile_id": ids,
        "first_seen": first_seen,
        "last_seen": [AS_OF - timedelta(days=int(d)) for d in rng.integers(0, 30, n)],
        "signup_at": first_seen,
        "account": [f"acct-{i % 12}" for i in range(n)],
        "plan": [("basic", "pro")[i % 2] for i in range(n)],
        "country": ["DE"] * n,
        "events": rng.integers(1, 200, n).tolist(),
    }
    orders: dict[str, list] = {"profile_id": [], "day": [], "orders": [], "revenue": []}
    activity: dict[str, list] = {
        "profile_id": [],
        "day": [],
        "events": [],
        "logins": [],
        "feature_uses": [],
        "sessions": [],
    }
    for pid in ids[: int(n * 0.8)]:  # a fifth of the customers never ordered
        for day in sorted(
            {date(2025, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 365, rng.integers(1, 6))}
        ):
            count = int(rng.integers(1, 3))
            orders["profile_id"].append(pid)
            orders["day"].append(day)
            orders["orders"].append(count)
            orders["revenue"].append(round(float(rng.gamma(2.0, 40.0)) * count, 2))
            for name, value in (("profile_id", pid), ("day", day), ("events", 5), ("logins", 1)):
                activity[name].append(value)
            activity["feature_uses"].append(2)
            activity["sessions"].append(1)
    surveys = {
        "profile_id": ids[:40],
        "day": [date(2025, 6 + i % 6, 1 + i % 27) for i in range(40)],
        "kind": ["NPS"] * 40,
        "responses": [1] * 40,
        "score_sum": [int(s) for s in rng.integers(0, 11, 40)],
    }
    surveys["promoters"] = [int(s >= 9) for s in surveys["score_sum"]]
    surveys["detractors"] = [int(s <= 6) for s in surveys["score_sum"]]
    opened = [datetime(2025, 9 + i % 4, 2 + i, tzinfo=UTC) for i in range(20)]
    tickets = {
        "profile_id": ids[:20],
        "ticket_id": [f"t{i}" for i in range(20)],
        "priority": [("low", "high")[i % 2] for i in range(20)],
        "opened_at": opened,
        "first_response_seconds": [600 * (i + 1) for i in range(20)],
        "resolved_at": [t + timedelta(hours=30) for t in opened],
        "resolution_seconds": [30 * 3600] * 20,
    }
    tables = {name: schema.empty_table() for name, schema in SCHEMAS.items()}
    for name, columns in (
        ("customers", customers),
        ("orders_daily", orders),
        ("activity_daily", activity),
        ("surveys_daily", surveys),
        ("tickets", tickets),
    ):
        tables[name] = pa.Table.from_pydict(columns, schema=SCHEMAS[name])
    return tables


def derived_tables(rng: np.random.Generator, n: int = PROFILES) -> dict[str, pa.Table]:
    """rfm, clv, health and lifecycle rows for every profile, with seeded random scores; the
    account rollup of health by the real ``build_health_accounts``."""
    ids = _ids(n)
    r, f = rng.integers(1, 6, n), rng.integers(1, 6, n)
    rfm = pa.table(
        {
            "profile_id": ids,
            "recency_days": rng.integers(0, 365, n),
            "frequency": rng.integers(1, 10, n),
            "monetary": rng.gamma(2.0, 100.0, n).round(2),
            "r_score": r,
            "f_score": f,
            "m_score": rng.integers(1, 6, n),
            "rfm_cell": [f"{a}{b}" for a, b in zip(r, f, strict=True)],
            "segment": [SEGMENTS[i % len(SEGMENTS)] for i in range(n)],
        }
    )
    clv_365 = rng.lognormal(4.0, 1.0, n).round(2)
    clv = pa.table(
        {
            "profile_id": ids,
            "frequency": rng.integers(0, 8, n).astype(float),
            "recency": rng.uniform(0, 300, n),
            "T": rng.uniform(300, 400, n),
            "monetary_value": rng.gamma(2.0, 40.0, n),
            "historical_clv": rng.gamma(2.0, 100.0, n),
            "p_alive": rng.uniform(0, 1, n),
            "expected_purchases_90d": rng.uniform(0, 2, n),
            "clv_90d": (clv_365 / 4).round(2),
            "expected_purchases_365d": rng.uniform(0, 6, n),
            "clv_365d": clv_365,
        }
    )
    factor_scores = {name: rng.uniform(0, 100, n).round(1) for name in FACTORS}
    score = sum(factor_scores[name] * WEIGHTS[name] for name in FACTORS).round(1)
    status = np.select([score >= 70, score >= 40], ["green", "yellow"], default="red")
    explained = [
        json.dumps(
            {
                name: {
                    "score": float(factor_scores[name][i]),
                    "weight": WEIGHTS[name],
                    "contribution": round(float(factor_scores[name][i]) * WEIGHTS[name], 2),
                    "reason": "fixture",
                }
                for name in FACTORS
            }
        )
        for i in range(n)
    ]
    health = pa.table(
        {
            "profile_id": ids,
            "account": [f"acct-{i % 12}" for i in range(n)],
            "score": score,
            "status": status,
            **{f"{name}_score": factor_scores[name] for name in FACTORS},
            "factors": explained,
            "alerts": pa.array([["usage_collapse"] if s < 25 else [] for s in score], pa.list_(pa.string())),
        }
    )
    lifecycle = pa.table(
        {
            "profile_id": ids,
            "stage": [STAGES[min(int(k), len(STAGES) - 1)] for k in rng.geometric(0.35, n) - 1],
            "since": [AS_OF - timedelta(days=int(d)) for d in rng.integers(0, 200, n)],
            "previous_stage": [None] * n,
        }
    )
    return {
        "rfm": rfm,
        "clv": clv,
        "health": health,
        "health_accounts": build_health_accounts(health),
        "lifecycle": lifecycle,
    }


def write_snapshot(directory: Path, tables: dict[str, pa.Table], as_of: datetime = AS_OF) -> Path:
    """The tables as ``<name>.parquet`` plus a ``snapshot.json`` naming the as-of moment."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet", compression="zstd")
    meta = {"snapshot_id": directory.name, "as_of": as_of.isoformat(), "source": "test fixture"}
    (directory / "snapshot.json").write_text(json.dumps(meta), encoding="utf-8")
    return directory


def full_snapshot(directory: Path, seed: int = 7) -> dict[str, pa.Table]:
    """Write a complete fixture snapshot into ``directory``; returns its tables for expectations."""
    rng = np.random.default_rng(seed)
    tables = {**fact_tables(rng), **derived_tables(rng)}
    write_snapshot(directory, tables)
    return tables
