"""Health signals: the per-profile numbers the health score is made of, from the fact tables.

Each signal is a plain number with a meaning a CSM can read ("2 open tickets", "usage -80%
against the own baseline") or null when the profile has no data for it, never a guessed 0. All
of them come from one DuckDB query over the fact tables (Arrow in, Arrow out), with the windows
of ``health.yaml``; ``patron.projections.health`` turns them into scores, alerts and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, PositiveInt

from patron.projections.purchases import as_of_day

if TYPE_CHECKING:
    from patron.projections.fact_tables import FactTables


@dataclass(frozen=True, slots=True)
class Signal:
    """The sentence that explains a signal's value in the health table's ``factors`` JSON.

    ``reason`` is a printf format (DuckDB ``printf``) with ``{window}`` names filled from the
    config first; ``args`` are SQL expressions over the signal columns for its placeholders.
    """

    reason: str
    args: tuple[str, ...]


SIGNALS: dict[str, Signal] = {  # name -> reason; the comment above each says what it measures
    # Logins + feature uses per observed day in the recent usage window.
    "usage_recent_daily": Signal(
        "%.2f logins + feature uses per day in the last {usage_recent_days} days",
        ("usage_recent_daily",),
    ),
    # Logins + feature uses per observed day in the baseline window before it.
    "usage_baseline_daily": Signal(
        "%.2f logins + feature uses per day in the {usage_baseline_days} days before",
        ("usage_baseline_daily",),
    ),
    # Relative change of daily usage against the customer's own baseline (-0.3 = down 30%).
    "usage_change": Signal(
        "logins + feature uses %.2f/day in the last {usage_recent_days} days vs %.2f/day "
        "in the {usage_baseline_days} days before (%+.0f%%)",
        ("usage_recent_daily", "usage_baseline_daily", "usage_change * 100"),
    ),
    # Tickets opened and not resolved by the end of the as-of day.
    "open_tickets": Signal(
        "%d open or unresolved tickets",
        ("open_tickets::BIGINT",),
    ),
    # Mean time to resolution of the tickets resolved in the support window, in hours.
    "resolution_hours": Signal(
        "mean time to resolution %.1f h (tickets resolved in the last {support_days} days)",
        ("resolution_hours",),
    ),
    # Mean first-response time of the tickets opened in the support window, in hours.
    "first_response_hours": Signal(
        "mean first response %.1f h (tickets opened in the last {support_days} days)",
        ("first_response_hours",),
    ),
    # The latest NPS answer (0-10), if younger than nps_max_age_days.
    "nps_latest": Signal(
        "latest NPS answer %d of 10",
        ("nps_latest::BIGINT",),
    ),
    # Mean CSAT (1-5) of the answers in the sentiment window.
    "csat_recent": Signal(
        "CSAT %.2f of 5 in the last {sentiment_days} days",
        ("csat_recent",),
    ),
    # Mean CSAT of the sentiment window minus that of the window before (points).
    "csat_trend": Signal(
        "CSAT %+.2f points against the {sentiment_days} days before",
        ("csat_trend",),
    ),
    # Failed payments in the payment window (paying customers only).
    "payment_failures": Signal(
        "%d failed payments in the last {payment_days} days",
        ("payment_failures::BIGINT",),
    ),
    # Days from the end of the as-of day to the nearest renewal of a running subscription (0 when a running
    # subscription is cancelled: it will not renew).
    "renewal_days": Signal(
        "next renewal in %.0f days (0: a running subscription is cancelled)",
        ("renewal_days",),
    ),
    # Order revenue per observed day in the recent spend window.
    "spend_recent_daily": Signal(
        "revenue %.2f per day in the last {spend_recent_days} days",
        ("spend_recent_daily",),
    ),
    # Order revenue per observed day in the spend baseline window.
    "spend_baseline_daily": Signal(
        "revenue %.2f per day in the {spend_baseline_days} days before",
        ("spend_baseline_daily",),
    ),
    # Relative change of daily revenue against the spend baseline (-0.5 = halved).
    "spend_change": Signal(
        "revenue %.2f/day in the last {spend_recent_days} days vs %.2f/day "
        "in the {spend_baseline_days} days before (%+.0f%%)",
        ("spend_recent_daily", "spend_baseline_daily", "spend_change * 100"),
    ),
    # Order revenue minus refunds in the value window (paying customers only).
    "monetary": Signal(
        "revenue minus refunds %.2f in the last {value_days} days",
        ("monetary",),
    ),
}


class Windows(BaseModel):
    """Window lengths in whole UTC days (see health.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    usage_recent_days: PositiveInt = 30
    usage_baseline_days: PositiveInt = 90
    min_baseline_days: PositiveInt = 14
    support_days: PositiveInt = 90
    sentiment_days: PositiveInt = 90
    nps_max_age_days: PositiveInt = 365
    payment_days: PositiveInt = 30
    spend_recent_days: PositiveInt = 90
    spend_baseline_days: PositiveInt = 90
    value_days: PositiveInt = 365


SIGNALS_SQL = """
WITH usage AS (
    SELECT profile_id,
        sum(logins + feature_uses) FILTER (WHERE day >= $usage_recent_start) AS recent,
        sum(logins + feature_uses) FILTER (WHERE day < $usage_recent_start) AS baseline
    FROM activity_daily WHERE day >= $usage_baseline_start AND day <= $last GROUP BY profile_id
), spend AS (
    SELECT profile_id,
        sum(revenue) FILTER (WHERE day >= $spend_recent_start) AS recent,
        sum(revenue) FILTER (WHERE day < $spend_recent_start AND day >= $spend_baseline_start) AS baseline,
        sum(revenue) FILTER (WHERE day >= $value_start) AS value
    FROM orders_daily WHERE day <= $last AND orders > 0 GROUP BY profile_id
), refunds AS (
    SELECT profile_id, sum(amount) AS amount FROM refunds_daily
    WHERE day >= $value_start AND day <= $last GROUP BY profile_id
), failures AS (
    SELECT profile_id, sum(failures) FILTER (WHERE day >= $payment_start) AS failures
    FROM payments_daily WHERE day <= $last GROUP BY profile_id
), subs AS (
    SELECT profile_id, min(CASE WHEN cancelled_at < $cut THEN 0.0
                                ELSE epoch(period_end - $cut) / 86400.0 END)
                       FILTER (WHERE period_end >= $cut) AS renewal_days
    FROM subscriptions WHERE started_at IS NULL OR started_at < $cut GROUP BY profile_id
), tickets_now AS (
    SELECT *, opened_at < $cut AND (resolved_at IS NULL OR resolved_at >= $cut) AS open
    FROM tickets WHERE opened_at IS NULL OR opened_at < $cut
), support AS (
    SELECT profile_id,
        count(*) FILTER (WHERE open) AS open_tickets,
        count(*) FILTER (WHERE open OR opened_at >= $support_start OR resolved_at >= $support_start) AS seen,
        avg(resolution_seconds) FILTER (WHERE resolved_at >= $support_start AND resolved_at < $cut)
            / 3600.0 AS resolution_hours,
        avg(first_response_seconds) FILTER (WHERE opened_at >= $support_start) / 3600.0 AS first_response_hours
    FROM tickets_now GROUP BY profile_id
), csat AS (
    SELECT profile_id,
        sum(score_sum) FILTER (WHERE day >= $sentiment_recent_start)
            / nullif(sum(responses) FILTER (WHERE day >= $sentiment_recent_start), 0) AS recent,
        sum(score_sum) FILTER (WHERE day < $sentiment_recent_start)
            / nullif(sum(responses) FILTER (WHERE day < $sentiment_recent_start), 0) AS baseline
    FROM surveys_daily
    WHERE kind = 'CSAT' AND day >= $sentiment_baseline_start AND day <= $last GROUP BY profile_id
), nps AS (
    SELECT profile_id, score FROM nps_latest WHERE answered_at < $cut AND answered_at >= $nps_start
)
SELECT c.profile_id, c.account,
    CAST(c.first_seen AS DATE) AS first_day,
    greatest(0, $last - greatest($usage_recent_start, first_day) + 1) AS usage_recent_obs,
    greatest(0, $usage_recent_start - greatest($usage_baseline_start, first_day)) AS usage_baseline_obs,
    CASE WHEN usage_recent_obs > 0 THEN coalesce(u.recent, 0) / usage_recent_obs END::DOUBLE AS usage_recent_daily,
    CASE WHEN usage_baseline_obs >= $min_baseline_days THEN coalesce(u.baseline, 0) / usage_baseline_obs
        END::DOUBLE AS usage_baseline_daily,
    CASE WHEN usage_baseline_daily > 0 THEN usage_recent_daily / usage_baseline_daily - 1 END::DOUBLE AS usage_change,
    CASE WHEN t.seen > 0 THEN t.open_tickets END::DOUBLE AS open_tickets,
    t.resolution_hours::DOUBLE AS resolution_hours,
    t.first_response_hours::DOUBLE AS first_response_hours,
    n.score::DOUBLE AS nps_latest,
    cs.recent::DOUBLE AS csat_recent,
    (cs.recent - cs.baseline)::DOUBLE AS csat_trend,
    (s.profile_id IS NOT NULL OR f.profile_id IS NOT NULL OR sub.profile_id IS NOT NULL) AS paying,
    CASE WHEN paying THEN coalesce(f.failures, 0) END::DOUBLE AS payment_failures,
    sub.renewal_days::DOUBLE AS renewal_days,
    greatest(0, $last - greatest($spend_recent_start, first_day) + 1) AS spend_recent_obs,
    greatest(0, $spend_recent_start - greatest($spend_baseline_start, first_day)) AS spend_baseline_obs,
    CASE WHEN spend_recent_obs > 0 AND paying THEN coalesce(s.recent, 0) / spend_recent_obs END::DOUBLE
        AS spend_recent_daily,
    CASE WHEN spend_baseline_obs >= $min_baseline_days AND paying THEN coalesce(s.baseline, 0) / spend_baseline_obs
        END::DOUBLE AS spend_baseline_daily,
    CASE WHEN spend_baseline_daily > 0 THEN spend_recent_daily / spend_baseline_daily - 1 END::DOUBLE
        AS spend_change,
    CASE WHEN paying THEN coalesce(s.value, 0) - coalesce(r.amount, 0) END::DOUBLE AS monetary
FROM customers c
LEFT JOIN usage u USING (profile_id)
LEFT JOIN spend s USING (profile_id)
LEFT JOIN refunds r USING (profile_id)
LEFT JOIN failures f USING (profile_id)
LEFT JOIN subs sub USING (profile_id)
LEFT JOIN support t USING (profile_id)
LEFT JOIN csat cs USING (profile_id)
LEFT JOIN nps n USING (profile_id)
ORDER BY c.profile_id
"""

SIGNAL_TABLES = (
    "customers",
    "activity_daily",
    "orders_daily",
    "refunds_daily",
    "payments_daily",
    "subscriptions",
    "tickets",
    "surveys_daily",
    "nps_latest",
)


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose dates are UTC days, like the fact tables' (never the machine's zone)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # a library call must not draw on the user's terminal
    return con


def signals(tables: FactTables, as_of: datetime, windows: Windows) -> pa.Table:
    """One row per profile of ``customers`` (sorted by id): account and every signal (null = no data).

    Windows end with the as-of day (the UTC day of ``as_of``, included, as for RFM); moments
    (open tickets, renewals) are taken at the end of that day.
    """
    last = as_of_day(as_of)
    cut = datetime.combine(last + timedelta(days=1), time(), UTC)

    def start(days: int, before: int = 0) -> date:
        return last - timedelta(days=days + before - 1)

    params = {
        "last": last,
        "cut": cut,
        "usage_recent_start": start(windows.usage_recent_days),
        "usage_baseline_start": start(windows.usage_baseline_days, windows.usage_recent_days),
        "min_baseline_days": windows.min_baseline_days,
        "support_start": cut - timedelta(days=windows.support_days),
        "sentiment_recent_start": start(windows.sentiment_days),
        "sentiment_baseline_start": start(windows.sentiment_days, windows.sentiment_days),
        "nps_start": cut - timedelta(days=windows.nps_max_age_days),
        "payment_start": start(windows.payment_days),
        "spend_recent_start": start(windows.spend_recent_days),
        "spend_baseline_start": start(windows.spend_baseline_days, windows.spend_recent_days),
        "value_start": start(windows.value_days),
    }
    con = connect()
    try:
        for name in SIGNAL_TABLES:
            con.register(name, getattr(tables, name))
        found = con.sql(SIGNALS_SQL, params=params).to_arrow_table()
    finally:
        con.close()
    return found.select(["profile_id", "account", *SIGNALS])
