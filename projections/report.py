"""The static HTML report of one snapshot: headline numbers and charts for people without SQL.

Everything is aggregated by DuckDB over the snapshot's Parquet files (through the same sandboxed
session as ``patron sql``), so the page holds only aggregates and its size does not depend on the
number of customers. The page is one self-contained file (inline CSS and SVG, no script, no fonts or images to fetch): it
can be mailed, archived next to the snapshot, or opened on a machine with no network.

A table that the snapshot lacks, or that has no rows, turns its chart into a "no data" panel that
says which table, so a partial pipeline still gives a report rather than an error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pyarrow.parquet as pq

from patron.errors import EXIT_INVALID, PatronError
from patron.projections.clv import METADATA_KEY, clv_model_table
from patron.projections.report_charts import Series, bar_chart, compact, funnel, heat_map, nice_ticks, no_data
from patron.projections.snapshot import SNAPSHOT_META, read_meta
from patron.projections.sql import SqlSession

STATUS_COLORS = {"green": "#2e9e5b", "yellow": "#e0b400", "red": "#d64541"}
OTHER_COLOR = "#8a97a6"
# The lifecycle stages in the order a customer usually meets them; stages not listed follow, by name.
STAGE_ORDER = ("prospect", "first_time_buyer", "repeat", "loyal", "at_risk", "churned", "reactivated")
CLV_BINS = 20
ACCOUNTS_SHOWN = 10
COHORTS_SHOWN = 24  # the most recent first-order months; older ones would make the heat map unreadable
CLV_COLUMN = re.compile(r"clv_(\d+)d")


@dataclass(frozen=True)
class Snapshot:
    """An open snapshot: its id, the moment it describes, and the sandboxed SQL session over its tables."""

    snapshot_id: str
    as_of: datetime | None
    session: SqlSession
    rows: dict[str, int]

    def missing(self, *tables: str) -> str | None:
        """Why a chart over ``tables`` cannot be drawn (absent or empty table), or None when it can."""
        for table in tables:
            if table not in self.rows:
                return f"table {table} is not in snapshot {self.snapshot_id}"
            if self.rows[table] == 0:
                return f"table {table} has no rows in snapshot {self.snapshot_id}"
        return None

    def missing_view(self, view: str) -> str | None:
        """Why KPI view ``view`` cannot be read (a table it needs is missing), or None when it can."""
        if view in self.session.unavailable:
            return f"KPI view {view} is unavailable: {self.session.unavailable[view]}"
        if view not in self.session.kpi_views:
            return f"KPI view {view} is not defined in kpis.sql"
        return None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query the report itself wrote (the sandbox's statement check is for users' SQL)."""
        return self.session.con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        row = self.session.con.execute(sql, list(params)).fetchone()
        assert row is not None, sql  # aggregates without GROUP BY always return a row
        return row


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_snapshot(snapshot_dir: Path) -> Snapshot:
    """The snapshot in ``snapshot_dir`` through :class:`SqlSession` (its tables and KPI views)."""
    if not snapshot_dir.is_dir():
        raise PatronError(
            f"{snapshot_dir}: no such snapshot directory; run `patron snapshot` first", EXIT_INVALID
        )
    meta = read_meta(snapshot_dir) if (snapshot_dir / SNAPSHOT_META).exists() else {}
    as_of = datetime.fromisoformat(meta["as_of"]) if meta.get("as_of") else None
    session = SqlSession(snapshot_dir)
    rows = {
        name: session.con.execute(f"SELECT count(*) FROM {_quoted(name)}").fetchone()[0]
        for name in session.tables
    }
    return Snapshot(str(meta.get("snapshot_id", snapshot_dir.name)), as_of, session, rows)


def _panel(panel_id: str, title: str, lede: str, body: str) -> str:
    return (
        f'<section class="panel" id="{panel_id}" aria-labelledby="{panel_id}-heading">'
        f'<h2 id="{panel_id}-heading">{escape(title)}</h2><p class="lede">{escape(lede)}</p>{body}</section>'
    )


def _table(table_id: str, caption: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th scope='col'>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return (
        f'<table class="data" id="{table_id}"><caption>{escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _money(value: float | None) -> str:
    return "—" if value is None else compact(float(value))


# ---------------------------------------------------------------------------------------- headlines


def headlines(snap: Snapshot) -> str:
    """The numbers a reader looks for first; each appears only when its table has rows."""
    items: list[tuple[str, str, str]] = []
    if not snap.missing("customers"):
        items.append(("customers", "Customers", f"{snap.rows['customers']:,}"))
    if not snap.missing("orders_daily"):
        orders, revenue = snap.one("SELECT sum(orders), sum(revenue) FROM orders_daily")
        items.append(("orders", "Orders", f"{int(orders or 0):,}"))
        items.append(("revenue", "Revenue", _money(revenue)))
    if not snap.missing_view("kpi_repeat_purchase"):
        repeat = snap.all(
            "SELECT repeat_purchase_rate FROM kpi_repeat_purchase WHERE first_order_month IS NULL"
        )
        if repeat:
            items.append(("repeat-rate", "Repeat-purchase rate", f"{repeat[0][0]:.0%}"))
    if not snap.missing("rfm"):
        (champions,) = snap.one("SELECT count(*) FROM rfm WHERE segment = 'Champions'")
        items.append(("champions", "Champions", f"{champions:,}"))
    if not snap.missing("health"):
        average, red, alerted = snap.one(
            "SELECT avg(score), avg(CASE WHEN status = 'red' THEN 1.0 ELSE 0.0 END), "
            "count(*) FILTER (WHERE len(alerts) > 0) FROM health"
        )
        items.append(("health", "Average health", f"{average:.0f}" if average is not None else "—"))
        items.append(("red-share", "Health red", f"{red:.0%}"))
        items.append(("alerts", "Profiles with alerts", f"{alerted:,}"))
    if not snap.missing("clv"):
        horizon = _clv_column(snap)
        (total,) = snap.one(f"SELECT sum({_quoted(horizon)}) FROM clv") if horizon else (None,)
        if horizon and total is not None:  # None: the model could not be fitted (see the CLV panel)
            items.append(("clv", f"Expected value, {horizon.removeprefix('clv_')}", _money(total)))
    if not items:
        return _panel(
            "headlines",
            "Headlines",
            "",
            no_data("headline-numbers", "Headlines", "the snapshot has no tables with rows"),
        )
    tiles = "".join(
        f'<div data-name="{name}"><dt>{escape(label)}</dt><dd>{escape(value)}</dd></div>'
        for name, label, value in items
    )
    return _panel(
        "headlines",
        "Headlines",
        "Totals over every live profile of the snapshot.",
        f'<dl class="headlines">{tiles}</dl>',
    )


# ---------------------------------------------------------------------------------------------- RFM


def rfm_section(snap: Snapshot) -> str:
    """Recency x frequency grid of customer counts, and the named segments with their value."""
    title = "RFM grid: recency score by frequency score"
    reason = snap.missing("rfm")
    if reason:
        return _panel("rfm", "RFM", "", no_data("rfm-grid", title, reason))
    counts = {(r, f): n for r, f, n in snap.all("SELECT r_score, f_score, count(*) FROM rfm GROUP BY ALL")}
    top = max([5, *(int(k) for pair in counts for k in pair if k is not None)])
    rows = list(range(top, 0, -1))
    columns = list(range(1, top + 1))
    cells = [[float(counts.get((r, f), 0)) for f in columns] for r in rows]
    grid = heat_map(
        "rfm-grid",
        title,
        "Customers per recency score (rows, 5 = bought most recently) and frequency score (columns, "
        "5 = buys most often); darker cells hold more customers.",
        [f"R{r}" for r in rows],
        [f"F{f}" for f in columns],
        cells,
        [[f"{int(v):,}" for v in row] for row in cells],
        row_axis="Recency",
        column_axis="Frequency",
    )
    segments = snap.all(
        "SELECT segment, count(*) n, avg(recency_days), avg(frequency), avg(monetary), sum(monetary) "
        "FROM rfm GROUP BY 1 ORDER BY n DESC, segment"
    )
    total = sum(row[1] for row in segments)
    table = _table(
        "rfm-segments",
        "RFM segments",
        ["Segment", "Customers", "Share", "Avg recency (days)", "Avg orders", "Avg spend", "Total spend"],
        [
            [
                str(seg),
                f"{n:,}",
                f"{n / total:.0%}",
                f"{rec or 0:.0f}",
                f"{freq or 0:.1f}",
                _money(avg),
                _money(tot),
            ]
            for seg, n, rec, freq, avg, tot in segments
        ],
    )
    return _panel(
        "rfm",
        "RFM",
        "Who are the champions and who is slipping away: scores are quintiles of recency, frequency and spend.",
        f'<div class="charts">{grid}<div>{table}</div></div>',
    )


# ------------------------------------------------------------------------------------------- health


def _status_series(statuses: set[str]) -> list[tuple[str, str]]:
    known = [(s, c) for s, c in STATUS_COLORS.items() if s in statuses]
    return known + [(s, OTHER_COLOR) for s in sorted(statuses - STATUS_COLORS.keys())]


def health_section(snap: Snapshot) -> str:
    """Score distribution by status, and each factor's average contribution per status (the *why*)."""
    reason = snap.missing("health")
    if reason:
        body = no_data("health-distribution", "Health score distribution", reason) + no_data(
            "health-factors", "Average factor contribution by status", reason
        )
        return _panel("health", "Health", "", f'<div class="charts">{body}</div>')
    counts = snap.all(
        "SELECT least(CAST(floor(score / 10) AS INTEGER), 9), status, count(*) FROM health "
        "WHERE score IS NOT NULL GROUP BY ALL"
    )
    statuses = _status_series({status for _, status, _ in counts})
    bins = [f"{10 * b}-{10 * b + 9 if b < 9 else 100}" for b in range(10)]
    by = {(b, s): n for b, s, n in counts}
    distribution = bar_chart(
        "health-distribution",
        "Health score distribution",
        "Profiles per health score band of 10 points, stacked by status.",
        bins,
        [Series(s, [float(by.get((b, s), 0)) for b in range(10)], color) for s, color in statuses],
        stacked=True,
        y_label="Profiles",
    )
    factors = _factor_names(snap)
    if factors:
        mean = _mean_contributions(snap, factors)
        factor_chart = bar_chart(
            "health-factors",
            "Average factor contribution by status",
            "Points each factor adds to the health score on average, per status: the factors that "
            "separate red from green are the ones to act on.",
            factors,
            [Series(s, [float(mean.get((f, s)) or 0.0) for f in factors], color) for s, color in statuses],
            y_label="Score points",
        )
    else:
        factor_chart = no_data(
            "health-factors", "Average factor contribution by status", "no factor breakdown in table health"
        )
    return _panel(
        "health",
        "Health",
        "Composite 0-100 score from usage, support, sentiment and commercial signals.",
        f'<div class="charts">{distribution}{factor_chart}</div>{_accounts_at_risk(snap)}',
    )


def _factor_names(snap: Snapshot) -> list[str]:
    """The factors the ``factors`` JSON explains, in their configured order (from its first row)."""
    first = snap.all("SELECT json_keys(factors) FROM health WHERE factors IS NOT NULL LIMIT 1")
    return list(first[0][0]) if first else []


def _mean_contributions(snap: Snapshot, factors: list[str]) -> dict[tuple[str, str], float]:
    """Average contribution (score points) of each factor per status, from the ``factors`` JSON.

    ``from_json`` with a fixed structure parses each row once (several times faster than
    ``json_each`` on a million rows); a factor entry without a contribution reads as NULL.
    """
    structure = "{" + ", ".join(f'"{name}": {{"contribution": "DOUBLE"}}' for name in factors) + "}"
    means = ", ".join(f"avg(f[{_literal(name)}].contribution)" for name in factors)
    rows = snap.all(
        f"SELECT status, {means} FROM (SELECT status, from_json(factors, {_literal(structure)}) AS f "
        "FROM health) GROUP BY status"
    )
    return {
        (name, status): value for status, *values in rows for name, value in zip(factors, values, strict=True)
    }


def _accounts_at_risk(snap: Snapshot) -> str:
    """The lowest-scoring accounts with their red head count and alerts (empty without health_accounts)."""
    if snap.missing("health_accounts"):
        return ""
    rows = snap.all(
        "SELECT account, profiles, score, status, red_profiles, array_to_string(alerts, ', ') "
        f"FROM health_accounts ORDER BY score, account LIMIT {ACCOUNTS_SHOWN}"
    )
    return _table(
        "health-accounts",
        f"Accounts with the lowest health (the {ACCOUNTS_SHOWN} lowest)",
        ["Account", "Profiles", "Score", "Status", "Red profiles", "Alerts"],
        [
            [str(a), f"{n:,}", f"{score:.0f}", str(status), f"{red:,}", alerts or "—"]
            for a, n, score, status, red, alerts in rows
        ],
    )


# ---------------------------------------------------------------------------------------------- CLV


def _clv_column(snap: Snapshot) -> str | None:
    """The predicted-CLV column with the longest horizon (``clv_365d`` over ``clv_90d``)."""
    columns = [name for (name,) in snap.all("SELECT column_name FROM (DESCRIBE clv)")]
    horizons = sorted((int(m.group(1)), name) for name in columns if (m := CLV_COLUMN.fullmatch(name)))
    return horizons[-1][1] if horizons else None


def _clv_model_note(snap: Snapshot) -> str:
    """Why the CLV model gave no predictions, from the model notes the clv table's Parquet file carries."""
    schema = pq.read_schema(snap.session.snapshot_dir / "clv.parquet")
    if METADATA_KEY not in (schema.metadata or {}):
        return "the predictive columns are empty"
    notes = {note for note in clv_model_table(schema.empty_table())["note"].to_pylist() if note}
    return "; ".join(sorted(notes)) or "the predictive columns are empty"


def clv_section(snap: Snapshot) -> str:
    """Histogram of customer value; the top 1% share the last bin so the rest stays visible.

    Predicted value over the longest horizon when the model could be fitted, else historical value
    with the model's reason (too few repeat customers is common on young data sets)."""
    title = "Customer lifetime value"
    reason = snap.missing("clv")
    if reason:
        return _panel("clv", title, "", no_data("clv-distribution", title, reason))
    predicted = _clv_column(snap)
    if predicted and snap.one(f"SELECT count({_quoted(predicted)}) FROM clv")[0]:
        column, horizon = predicted, predicted.removeprefix("clv_")
        heading = f"Predicted customer lifetime value ({horizon})"
        lede = f"What each customer is expected to spend over the next {horizon} (BG/NBD x Gamma-Gamma)."
    else:
        column, heading = "historical_clv", "Historical customer value"
        lede = f"What each customer has spent, net of refunds. No prediction: {_clv_model_note(snap)}."
    col = _quoted(column)
    low, upper, total, median = snap.one(
        f"SELECT min({col}), quantile_cont({col}, 0.99), sum({col}), median({col}) FROM clv WHERE {col} IS NOT NULL"
    )
    if low is None:
        return _panel("clv", title, lede, no_data("clv-distribution", heading, f"{column} has no values"))
    ticks = nice_ticks(min(float(low), 0.0), max(float(upper), 1e-9), CLV_BINS)
    start, width = ticks[0], ticks[1] - ticks[0]
    nbins = len(ticks) - 1
    counts = dict(
        snap.all(
            f"SELECT least(CAST(floor(({col} - ?) / ?) AS INTEGER), ?), count(*) FROM clv "
            f"WHERE {col} IS NOT NULL GROUP BY 1",
            [start, width, nbins - 1],
        )
    )
    labels = [f"{compact(ticks[i])}-{compact(ticks[i + 1])}" for i in range(nbins)]
    labels[-1] = f"≥ {compact(ticks[-2])}"
    chart = bar_chart(
        "clv-distribution",
        heading,
        f"Customers per band of {column}; median {compact(float(median))}, total {compact(float(total))}.",
        labels,
        [Series("Customers", [float(counts.get(i, 0)) for i in range(nbins)], "#3b6fb6")],
        y_label="Customers",
    )
    return _panel("clv", title, lede, f'<div class="charts">{chart}</div>')


# ---------------------------------------------------------------------------------------- retention


def retention_section(snap: Snapshot) -> str:
    """Share of each first-order-month cohort that ordered again N months later (KPI view)."""
    title = "Cohort retention by first-order month"
    view = "kpi_cohort_retention_first_order"
    reason = snap.missing("orders_daily") or snap.missing_view(view)
    rows = (
        []
        if reason
        else snap.all(f"SELECT cohort_month, month_offset, cohort_size, retention_rate FROM {view}")
    )
    if not rows:
        return _panel(
            "retention",
            "Retention",
            "",
            no_data("cohort-retention", title, reason or "no orders in orders_daily"),
        )
    cohorts = sorted({cohort for cohort, _, _, _ in rows})[-COHORTS_SHOWN:]
    rate = {(cohort, offset): value for cohort, offset, _, value in rows}
    size = {cohort: n for cohort, _, n, _ in rows}
    span = 1 + max(offset for cohort, offset, _, _ in rows if cohort in size and cohort >= cohorts[0])
    cells = [[rate.get((cohort, k)) for k in range(span)] for cohort in cohorts]
    chart = heat_map(
        "cohort-retention",
        title,
        "Rows: the month of a customer's first order (cohort size in brackets); columns: months since; "
        "cells: the share of the cohort that ordered in that month (month 0 is 100% by definition; "
        "colours are scaled to the later months).",
        [f"{c:%Y-%m} ({size[c]:,})" for c in cohorts],
        [str(k) for k in range(span)],
        cells,
        [["" if v is None else f"{v:.0%}" for v in row] for row in cells],
        row_axis="Cohort",
        column_axis="Months since first order",
        cell=40 if span <= 12 else 34,
        domain=(0.0, max([v for row in cells for v in row[1:] if v is not None], default=1.0) or 1.0),
    )
    return _panel(
        "retention",
        "Retention",
        "How many customers of each first-order month come back to order again.",
        f'<div class="charts">{chart}</div>',
    )


# ---------------------------------------------------------------------------------------- lifecycle


def lifecycle_section(snap: Snapshot) -> str:
    """Profiles per lifecycle stage, in the order customers move through them."""
    title = "Lifecycle funnel"
    reason = snap.missing("lifecycle")
    if reason:
        return _panel("lifecycle", "Lifecycle", "", no_data("lifecycle-funnel", title, reason))
    counts = dict(snap.all("SELECT stage, count(*) FROM lifecycle GROUP BY 1"))
    stages = [s for s in STAGE_ORDER if s in counts] + sorted(set(counts) - set(STAGE_ORDER), key=str)
    chart = funnel(
        "lifecycle-funnel",
        title,
        "Profiles in each lifecycle stage now, from prospects to churned and reactivated customers.",
        [str(s).replace("_", " ") for s in stages],
        [counts[s] for s in stages],
    )
    return _panel(
        "lifecycle",
        "Lifecycle",
        "Where customers are in their lifecycle as of the snapshot.",
        f'<div class="charts">{chart}</div>',
    )


# -------------------------------------------------------------------------------------------- KPIs


def _rate(value: float) -> str:
    return f"{value:.0%}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class KpiColumn:
    """One column of the monthly KPI table: a column of a KPI view (one row per month)."""

    view: str
    column: str
    header: str
    show: Callable[[float], str]
    where: str = "TRUE"


KPI_COLUMNS = (
    KpiColumn("kpi_arpu_monthly", "active_customers", "Active customers", lambda v: f"{int(v):,}"),
    KpiColumn("kpi_retention_monthly", "retention_rate", "Retention", _rate),
    KpiColumn("kpi_retention_monthly", "churn_rate", "Churn", _rate),
    KpiColumn("kpi_arpu_monthly", "net_revenue", "Net revenue", compact),
    KpiColumn("kpi_arpu_monthly", "arpu", "ARPU", compact),
    KpiColumn("kpi_satisfaction_monthly", "nps", "NPS", lambda v: f"{v:+.0f}"),
    KpiColumn("kpi_satisfaction_monthly", "csat", "CSAT", lambda v: f"{v:.2f}"),
    KpiColumn(
        "kpi_support_monthly",
        "first_response_median_s",
        "First response (median)",
        _hours,
        "priority = 'all'",
    ),
    KpiColumn(
        "kpi_support_monthly", "resolution_median_s", "Resolution (median)", _hours, "priority = 'all'"
    ),
    KpiColumn("kpi_lead_conversion_monthly", "conversion_rate", "Lead conversion", _rate),
    KpiColumn("kpi_sales_cycle_monthly", "cycle_median_days", "Sales cycle (median)", lambda v: f"{v:.0f} d"),
)
KPI_MONTHS = 12


def kpi_section(snap: Snapshot) -> str:
    """The last months of the monthly KPI views side by side; ``patron sql`` has the full history."""
    title = f"Monthly KPIs, last {KPI_MONTHS} months"
    columns = [c for c in KPI_COLUMNS if snap.missing_view(c.view) is None]
    values: dict[tuple[str, Any], float] = {}
    for c in columns:
        for month, value in snap.all(f"SELECT month, {_quoted(c.column)} FROM {c.view} WHERE {c.where}"):
            values[(c.column, month)] = value
    months = sorted({month for _, month in values}, reverse=True)[:KPI_MONTHS]
    if not months:
        reasons = sorted({snap.missing_view(c.view) or f"{c.view} has no rows" for c in KPI_COLUMNS})
        return _panel("kpis", "KPIs", "", no_data("kpi-monthly", title, "; ".join(reasons)))
    rows = [
        [f"{month:%Y-%m}"]
        + [("—" if (v := values.get((c.column, month))) is None else c.show(float(v))) for c in columns]
        for month in months
    ]
    table = _table("kpi-monthly", title, ["Month", *(c.header for c in columns)], rows)
    left_out = sorted(set(snap.session.unavailable))
    note = (
        f'<p class="lede">Not available in this snapshot: {escape(", ".join(left_out))}.</p>'
        if left_out
        else ""
    )
    return _panel(
        "kpis",
        "KPIs",
        "From the KPI views of kpis.sql (months are UTC calendar months); query them with `patron sql`.",
        table + note,
    )


# ------------------------------------------------------------------------------------------- report

SECTIONS: tuple[tuple[str, Callable[[Snapshot], str]], ...] = (
    ("headlines", headlines),
    ("RFM", rfm_section),
    ("health", health_section),
    ("CLV", clv_section),
    ("retention", retention_section),
    ("lifecycle", lifecycle_section),
    ("KPIs", kpi_section),
)


def _footer(snap: Snapshot) -> str:
    tables = ", ".join(f"{name} ({count:,} rows)" for name, count in snap.rows.items()) or "none"
    return f"<p>Tables in this snapshot: {escape(tables)}. Written by <code>patron report</code>.</p>"


def render(snap: Snapshot, progress: Callable[[str], None] | None = None) -> str:
    """The whole page as one string; ``progress`` hears the name of each section as it is done."""
    sections = []
    for name, build in SECTIONS:
        sections.append(build(snap))
        if progress:
            progress(name)
    page = Template(resources.files("patron.projections").joinpath("report.html").read_text(encoding="utf-8"))
    as_of = snap.as_of.isoformat(timespec="seconds") if snap.as_of else "unknown"
    return page.substitute(
        title="Patron customer report",
        snapshot_id=escape(snap.snapshot_id),
        as_of=escape(as_of),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sections="\n".join(sections),
        footer=_footer(snap),
    )


def write_report(
    snapshot_dir: Path,
    out: Path,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of the snapshot in ``snapshot_dir`` to ``out`` (atomically) and return its path."""
    snap = open_snapshot(snapshot_dir)
    try:
        html = render(snap, progress)
    finally:
        snap.session.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    aside = out.with_name(f".{out.name}.tmp")
    aside.write_text(html, encoding="utf-8")
    os.replace(aside, out)
    return out
