"""The SQL sandbox and the KPI views, on a small snapshot whose numbers are worked out by hand.

The snapshot directory holds real Parquet files written from hand-built fact tables (four
customers, January to March 2024) plus minimal ``rfm`` and ``lifecycle`` tables. Every KPI view is
checked against the values computed in the comments; every kind of statement the sandbox must refuse
is tried on a real DuckDB connection.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fact_builder import at, d, fact_tables

from patron.errors import EXIT_INVALID, EXIT_REFUSED, PatronError
from patron.projections.sql import ShellBuffer, SqlSession


def _activity(profile_id: str, day: str) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "day": d(day),
        "events": 1,
        "logins": 0,
        "feature_uses": 0,
        "sessions": 0,
    }


def _customer(profile_id: str, signup: str, first_seen: str) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "first_seen": at(first_seen),
        "last_seen": at(first_seen),
        "signup_at": at(signup),
        "account": None,
        "plan": None,
        "country": None,
        "events": 1,
    }


def _survey(profile_id: str, day: str, kind: str, scores: list[int]) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "day": d(day),
        "kind": kind,
        "responses": len(scores),
        "score_sum": sum(scores),
        "promoters": sum(1 for s in scores if s >= 9) if kind == "NPS" else 0,
        "detractors": sum(1 for s in scores if s <= 6) if kind == "NPS" else 0,
    }


def _ticket(
    profile_id: str,
    ticket_id: str,
    priority: str,
    opened: str,
    first_response: int | None,
    resolution: int | None,
) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "ticket_id": ticket_id,
        "priority": priority,
        "opened_at": at(opened),
        "first_response_seconds": first_response,
        "resolved_at": None if resolution is None else at(opened, 10),
        "resolution_seconds": resolution,
    }


def _deal(
    deal_id: str, profile_id: str, lead_id: str | None, won: bool, created: str, closed: str
) -> dict[str, Any]:
    return {
        "profile_id": profile_id,
        "deal_id": deal_id,
        "lead_id": lead_id,
        "won": won,
        "amount": 1000.0,
        "created_at": at(created),
        "closed_at": at(closed),
    }


def kpi_facts() -> dict[str, pa.Table]:
    """Active months: p1 Jan Feb Mar, p2 Jan Mar, p3 Jan Feb, p4 Mar. Orders: p1 Jan (1) and Mar (2),
    p2 Jan (1), p3 Feb (1). Signups: p3 Dec 2023, p1 and p2 Jan 2024, p4 Mar 2024."""
    facts = fact_tables(
        customers=[
            _customer("p1", "2024-01-01", "2024-01-05"),
            _customer("p2", "2024-01-20", "2024-01-20"),
            _customer("p3", "2023-12-15", "2024-01-15"),
            _customer("p4", "2024-03-19", "2024-03-20"),
        ],
        activity_daily=[
            _activity("p1", "2024-01-05"),
            _activity("p1", "2024-02-10"),
            _activity("p1", "2024-03-03"),
            _activity("p2", "2024-01-20"),
            _activity("p2", "2024-03-15"),
            _activity("p3", "2024-01-15"),
            _activity("p3", "2024-02-01"),
            _activity("p4", "2024-03-20"),
        ],
        orders_daily=[
            {"profile_id": "p1", "day": d("2024-01-05"), "orders": 1, "revenue": 100.0},
            {"profile_id": "p1", "day": d("2024-03-03"), "orders": 2, "revenue": 50.0},
            {"profile_id": "p2", "day": d("2024-01-20"), "orders": 1, "revenue": 30.0},
            {"profile_id": "p3", "day": d("2024-02-01"), "orders": 1, "revenue": 20.0},
        ],
        refunds_daily=[{"profile_id": "p1", "day": d("2024-03-10"), "refunds": 1, "amount": 10.0}],
        surveys_daily=[
            _survey("p1", "2024-01-10", "NPS", [10]),
            _survey("p2", "2024-01-25", "NPS", [3]),
            _survey("p3", "2024-01-15", "NPS", [8]),
            _survey("p1", "2024-02-10", "CSAT", [4, 5]),
            _survey("p2", "2024-03-15", "CSAT", [2]),
            _survey("p2", "2024-03-15", "NPS", [9]),
        ],
        tickets=[
            _ticket("p1", "t1", "high", "2024-01-02", 60, 3600),
            _ticket("p2", "t2", "high", "2024-01-03", 120, 7200),
            _ticket("p2", "t3", "low", "2024-01-09", 600, None),
            _ticket("p3", "t4", "low", "2024-02-01", None, None),
        ],
        leads=[
            {"profile_id": "p1", "lead_id": "l1", "lead_source": "web", "created_at": at("2024-01-01")},
            {"profile_id": "p2", "lead_id": "l2", "lead_source": "event", "created_at": at("2024-01-15")},
            {"profile_id": "p3", "lead_id": "l3", "lead_source": "web", "created_at": at("2024-02-01")},
        ],
        deals=[
            _deal("d1", "p1", "l1", True, "2024-01-10", "2024-01-31"),
            _deal("d2", "p2", "l2", False, "2024-01-20", "2024-02-01"),
            _deal("d3", "p4", None, True, "2024-03-01", "2024-03-11"),
        ],
    )
    tables = dict(facts.items())
    tables["rfm"] = pa.table(
        {"profile_id": ["p1", "p2", "p3"], "segment": ["Champions", "At Risk", "Champions"]}
    )
    tables["lifecycle"] = pa.table(
        {
            "profile_id": ["p1", "p2"],
            "stage": ["loyal", "at_risk"],
            "since": pa.array([at("2024-03-01"), at("2024-03-01")], pa.timestamp("us", tz="UTC")),
            "previous_stage": ["repeat", "repeat"],
        }
    )
    return tables


def write_snapshot_dir(directory: Path, tables: dict[str, pa.Table]) -> Path:
    directory.mkdir(parents=True)
    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet", compression="zstd")
    return directory


@pytest.fixture
def session(tmp_path: Path) -> SqlSession:
    opened = SqlSession(write_snapshot_dir(tmp_path / "snap", kpi_facts()), timeout=5)
    yield opened
    opened.close()


def rows(session: SqlSession, sql: str) -> list[dict[str, Any]]:
    return session.query(sql).to_pylist()


def test_every_table_is_a_view_and_every_kpi_view_is_created(session: SqlSession) -> None:
    assert "customers" in session.tables and "rfm" in session.tables
    assert session.unavailable == {}
    assert set(session.kpi_views) >= {
        "kpi_retention_monthly",
        "kpi_cohort_retention_first_order",
        "kpi_cohort_retention_signup",
        "kpi_satisfaction_monthly",
        "kpi_satisfaction_by_segment",
        "kpi_support_monthly",
        "kpi_lead_conversion_monthly",
        "kpi_sales_cycle_monthly",
        "kpi_arpu_monthly",
        "kpi_repeat_purchase",
    }
    assert rows(session, "SELECT count(*) AS n FROM customers") == [{"n": 4}]


def test_retention_and_churn_by_month(session: SqlSession) -> None:
    # Feb: of Jan's {p1, p2, p3}, p1 and p3 came back. Mar: of Feb's {p1, p3}, only p1.
    got = rows(session, "SELECT * FROM kpi_retention_monthly")
    assert got == [
        {"month": date(2024, 2, 1), "customers_at_start": 3, "retained": 2, "churned": 1,
         "retention_rate": pytest.approx(2 / 3), "churn_rate": pytest.approx(1 / 3)},
        {"month": date(2024, 3, 1), "customers_at_start": 2, "retained": 1, "churned": 1,
         "retention_rate": 0.5, "churn_rate": 0.5},
    ]  # fmt: skip


def _matrix(session: SqlSession, view: str) -> dict[tuple[date, int], tuple[int, int, float]]:
    return {
        (r["cohort_month"], r["month_offset"]): (r["cohort_size"], r["retained"], r["retention_rate"])
        for r in rows(session, f"SELECT * FROM {view}")
    }


def test_cohort_retention_by_first_order_month(session: SqlSession) -> None:
    # Jan cohort {p1, p2}: Jan both, Feb nobody, Mar p1. Feb cohort {p3}: Feb, then no order in Mar.
    assert _matrix(session, "kpi_cohort_retention_first_order") == {
        (date(2024, 1, 1), 0): (2, 2, 1.0),
        (date(2024, 1, 1), 1): (2, 0, 0.0),
        (date(2024, 1, 1), 2): (2, 1, 0.5),
        (date(2024, 2, 1), 0): (1, 1, 1.0),
        (date(2024, 2, 1), 1): (1, 0, 0.0),
    }


def test_cohort_retention_by_signup_month(session: SqlSession) -> None:
    # Dec cohort {p3}: active Jan, Feb (December itself is before any data). Jan cohort {p1, p2}: Jan
    # both, Feb p1, Mar both. Mar cohort {p4}.
    assert _matrix(session, "kpi_cohort_retention_signup") == {
        (date(2023, 12, 1), 1): (1, 1, 1.0),
        (date(2023, 12, 1), 2): (1, 1, 1.0),
        (date(2023, 12, 1), 3): (1, 0, 0.0),
        (date(2024, 1, 1), 0): (2, 2, 1.0),
        (date(2024, 1, 1), 1): (2, 1, 0.5),
        (date(2024, 1, 1), 2): (2, 2, 1.0),
        (date(2024, 3, 1), 0): (1, 1, 1.0),
    }


def test_nps_and_csat_by_month(session: SqlSession) -> None:
    # Jan NPS 10, 3, 8: one promoter, one detractor of three -> 0. Feb CSAT 4, 5. Mar NPS 9, CSAT 2.
    assert rows(session, "SELECT * FROM kpi_satisfaction_monthly") == [
        {"month": date(2024, 1, 1), "nps_responses": 3, "nps": 0.0, "csat_responses": 0, "csat": None},
        {"month": date(2024, 2, 1), "nps_responses": 0, "nps": None, "csat_responses": 2, "csat": 4.5},
        {"month": date(2024, 3, 1), "nps_responses": 1, "nps": 100.0, "csat_responses": 1, "csat": 2.0},
    ]


def test_nps_and_csat_by_rfm_segment_and_lifecycle_stage(session: SqlSession) -> None:
    got = {
        (r["dimension"], r["segment"]): r for r in rows(session, "SELECT * FROM kpi_satisfaction_by_segment")
    }
    # Champions p1 (NPS 10, CSAT 4, 5) and p3 (NPS 8): NPS (1 - 0) / 2. At Risk p2: NPS 3 and 9.
    assert got[("rfm_segment", "Champions")] | {} == {
        "dimension": "rfm_segment", "segment": "Champions", "nps_responses": 2, "nps": 50.0,
        "csat_responses": 2, "csat": 4.5,
    }  # fmt: skip
    assert (got[("rfm_segment", "At Risk")]["nps"], got[("rfm_segment", "At Risk")]["csat"]) == (0.0, 2.0)
    assert got[("lifecycle_stage", "loyal")]["nps"] == 100.0
    assert got[("lifecycle_stage", "(none)")]["nps_responses"] == 1  # p3 has no stage
    assert got[("lifecycle_stage", "(none)")]["csat"] is None
    assert len(got) == 5


def test_first_response_and_resolution_times_by_month_and_priority(session: SqlSession) -> None:
    got = {(r["month"], r["priority"]): r for r in rows(session, "SELECT * FROM kpi_support_monthly")}
    jan = date(2024, 1, 1)
    # high: first responses 60, 120 (median 90, p90 60 + 0.9 * 60), resolutions 3600, 7200.
    assert got[(jan, "high")] == {
        "month": jan, "priority": "high", "tickets": 2, "resolved": 2,
        "first_response_median_s": 90.0, "first_response_p90_s": pytest.approx(114.0),
        "resolution_median_s": 5400.0, "resolution_p90_s": pytest.approx(6840.0),
    }  # fmt: skip
    # all of January: first responses 60, 120, 600 -> median 120, p90 at rank 1.8: 120 + 0.8 * 480.
    assert got[(jan, "all")]["tickets"] == 3
    assert got[(jan, "all")]["first_response_median_s"] == 120.0
    assert got[(jan, "all")]["first_response_p90_s"] == pytest.approx(504.0)
    assert got[(jan, "low")]["resolution_median_s"] is None  # t3 is not resolved yet
    assert got[(date(2024, 2, 1), "all")]["tickets"] == 1
    assert len(got) == 5


def test_lead_conversion_and_sales_cycle(session: SqlSession) -> None:
    # Jan leads l1 (won via d1) and l2 (d2 lost); Feb lead l3 without a deal.
    assert rows(session, "SELECT * FROM kpi_lead_conversion_monthly") == [
        {"month": date(2024, 1, 1), "leads": 2, "converted": 1, "conversion_rate": 0.5},
        {"month": date(2024, 2, 1), "leads": 1, "converted": 0, "conversion_rate": 0.0},
    ]
    # d1: lead l1 created Jan 1, closed Jan 31 -> 30 days; d3 names no lead: Mar 1 to Mar 11 -> 10 days.
    cycles = rows(session, "SELECT month, won_deals, cycle_median_days FROM kpi_sales_cycle_monthly")
    assert cycles == [
        {"month": date(2024, 1, 1), "won_deals": 1, "cycle_median_days": 30.0},
        {"month": date(2024, 3, 1), "won_deals": 1, "cycle_median_days": 10.0},
    ]


def test_arpu_by_month(session: SqlSession) -> None:
    got = rows(
        session, "SELECT month, active_customers, paying_customers, net_revenue, arpu FROM kpi_arpu_monthly"
    )
    assert got == [
        {"month": date(2024, 1, 1), "active_customers": 3, "paying_customers": 2, "net_revenue": 130.0,
         "arpu": pytest.approx(130 / 3)},
        {"month": date(2024, 2, 1), "active_customers": 2, "paying_customers": 1, "net_revenue": 20.0,
         "arpu": 10.0},
        {"month": date(2024, 3, 1), "active_customers": 3, "paying_customers": 1, "net_revenue": 40.0,
         "arpu": pytest.approx(40 / 3)},
    ]  # fmt: skip


def test_repeat_purchase_rate(session: SqlSession) -> None:
    # p1 ordered 3 times, p2 and p3 once each.
    assert rows(session, "SELECT * FROM kpi_repeat_purchase") == [
        {"first_order_month": date(2024, 1, 1), "buyers": 2, "repeat_buyers": 1, "repeat_purchase_rate": 0.5},
        {"first_order_month": date(2024, 2, 1), "buyers": 1, "repeat_buyers": 0, "repeat_purchase_rate": 0.0},
        {
            "first_order_month": None,
            "buyers": 3,
            "repeat_buyers": 1,
            "repeat_purchase_rate": pytest.approx(1 / 3),
        },
    ]


def test_kpi_view_over_a_missing_table_is_listed_as_unavailable(tmp_path: Path) -> None:
    tables = kpi_facts()
    del tables["rfm"]
    opened = SqlSession(write_snapshot_dir(tmp_path / "old", tables))
    try:
        assert "kpi_satisfaction_by_segment" in opened.unavailable
        assert "rfm" in opened.unavailable["kpi_satisfaction_by_segment"]
        assert "kpi_retention_monthly" in opened.kpi_views
    finally:
        opened.close()


@pytest.mark.parametrize(
    "sql",
    [
        "WITH x AS (SELECT profile_id FROM customers) SELECT count(*) FROM x",
        "DESCRIBE customers",
        "SHOW TABLES",
        "SUMMARIZE orders_daily",
        "PRAGMA table_info('customers')",
        "EXPLAIN SELECT * FROM rfm",
        "FROM customers LIMIT 1",
        "-- a comment first\nSELECT 1",
    ],
)
def test_read_only_statements_run(session: SqlSession, sql: str) -> None:
    assert session.query(sql).num_rows > 0


def test_the_snapshot_files_can_be_read_by_path(session: SqlSession) -> None:
    path = session.snapshot_dir / "customers.parquet"
    assert rows(session, f"SELECT count(*) AS n FROM read_parquet('{path}')") == [{"n": 4}]


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("INSERT INTO customers VALUES (1)", "INSERT INTO (INSERT) is refused: the snapshot is read-only"),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE (CREATE) is refused"),
        ("DROP VIEW customers", "DROP VIEW (DROP) is refused"),
        ("UPDATE customers SET events = 0", "UPDATE CUSTOMERS (UPDATE) is refused"),
        ("COPY customers TO 'out.csv'", "COPY CUSTOMERS (COPY) is refused"),
        ("ATTACH 'other.db'", "(ATTACH) is refused"),
        ("INSTALL httpfs", "INSTALL HTTPFS (LOAD) is refused"),
        ("LOAD httpfs", "LOAD HTTPFS (LOAD) is refused"),
        ("SET threads = 1", "SET THREADS (SET) is refused"),
        ("PRAGMA enable_profiling", "PRAGMA ENABLE_PROFILING is refused: only PRAGMA table_info"),
        ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "EXPLAIN of a refused statement: CREATE TABLE"),
        ("SELECT 1; DROP VIEW rfm", "statement 2: DROP VIEW (DROP) is refused"),
        ("CALL pragma_table_info('rfm')", "(CALL) is refused"),
        ("EXPORT DATABASE 'x'", "(EXPORT) is refused"),
    ],
)
def test_writes_and_settings_are_refused_before_running(session: SqlSession, sql: str, words: str) -> None:
    with pytest.raises(PatronError) as refused:
        session.query(sql)
    assert words in str(refused.value)
    assert refused.value.exit_code == EXIT_REFUSED
    assert "\n" not in str(refused.value)
    assert rows(session, "SELECT count(*) AS n FROM customers") == [{"n": 4}]  # nothing changed


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM '{outside}'",
        "SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM read_parquet('{snapshot}/../outside.parquet')",
    ],
)
def test_files_outside_the_snapshot_are_refused(session: SqlSession, tmp_path: Path, sql: str) -> None:
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [42]}), outside)
    with pytest.raises(PatronError) as refused:
        session.query(sql.format(outside=outside, snapshot=session.snapshot_dir))
    assert str(refused.value).startswith("refused by the sandbox: Permission Error")
    assert "only the snapshot's tables can be read" in str(refused.value)
    assert refused.value.exit_code == EXIT_REFUSED


def test_sql_errors_are_one_line_with_exit_code_2(session: SqlSession) -> None:
    with pytest.raises(PatronError) as wrong:
        session.query("SELECT nope FROM customers")
    assert str(wrong.value).startswith('SQL error: Binder Error: Referenced column "nope" not found')
    assert wrong.value.exit_code == EXIT_INVALID
    with pytest.raises(PatronError, match="SQL syntax error") as syntax:
        session.query("SELEC 1")
    assert syntax.value.exit_code == EXIT_INVALID
    with pytest.raises(PatronError, match='Did you mean "customers"'):
        session.query("SELECT * FROM customer")


def test_a_slow_query_times_out_and_the_session_goes_on(tmp_path: Path) -> None:
    opened = SqlSession(write_snapshot_dir(tmp_path / "snap", kpi_facts()), timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(PatronError) as slow:
            opened.query(
                "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range = 7"
            )
        assert time.monotonic() - started < 5
        assert "query stopped after 0.5 s, the SQL time limit" in str(slow.value)
        assert slow.value.exit_code == EXIT_REFUSED
        assert opened.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
    finally:
        opened.close()


def test_shell_buffer_joins_lines_until_a_semicolon() -> None:
    buffer = ShellBuffer()
    assert buffer.feed(".tables") == ".tables"
    assert buffer.feed("SELECT 1") is None
    assert buffer.feed("  + 1;") == "SELECT 1\n  + 1;"
    assert buffer.feed("") is None and buffer.pending == []


def test_times_are_utc(session: SqlSession) -> None:
    got = rows(session, "SELECT current_setting('TimeZone') AS tz, min(opened_at) AS first FROM tickets")
    assert got == [{"tz": "UTC", "first": datetime(2024, 1, 2, tzinfo=UTC)}]
