"""Per-customer purchase history up to an as-of day, from the ``orders_daily`` fact table.

RFM and CLV both start from the same question, "which days did this customer buy on, and for
how much, up to the as-of day", so it is answered once here: one DuckDB aggregate over the
Arrow table (multi-threaded, no Python loop per customer), handed on as numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa

EPOCH = date(1970, 1, 1)


def as_of_day(as_of: datetime) -> date:
    """The last UTC calendar day ``as_of`` includes; a naive datetime is taken to be UTC already.

    ``as_of`` is the moment the state is taken at, an exclusive bound: ``patron snapshot --as-of
    2026-03-31`` passes midnight at the start of April 1st, and its last included day is March 31st
    (the rebuild's cut: events with occurred_at before that midnight). Facts are daily, so
    everything on that day counts as "on or before as-of".
    """
    moment = as_of if as_of.tzinfo is None else as_of.astimezone(UTC)
    return (moment - timedelta(microseconds=1)).date()


@dataclass(frozen=True, slots=True)
class PurchaseHistory:
    """One entry per customer with >= 1 order on or before the as-of day, sorted by profile id.

    Days are integer days since 1970-01-01 so differences are day counts directly.
    """

    as_of_day: int
    profile_id: pa.Array
    first_day: np.ndarray
    last_day: np.ndarray
    purchase_days: np.ndarray
    orders: np.ndarray
    revenue: np.ndarray
    first_day_revenue: np.ndarray

    def __len__(self) -> int:
        return len(self.profile_id)


_QUERY = """
SELECT profile_id,
       min(day) - DATE '1970-01-01' AS first_day,
       max(day) - DATE '1970-01-01' AS last_day,
       count(*) AS purchase_days,
       sum(orders)::BIGINT AS orders,
       sum(revenue)::DOUBLE AS revenue,
       arg_min(revenue, day)::DOUBLE AS first_day_revenue
FROM (
    SELECT profile_id, day, sum(orders) AS orders, sum(revenue) AS revenue
    FROM orders_daily
    WHERE day <= $as_of AND orders > 0
    GROUP BY profile_id, day
)
GROUP BY profile_id
ORDER BY profile_id
"""


def purchase_history(orders_daily: pa.Table, as_of: datetime) -> PurchaseHistory:
    """Group ``orders_daily`` rows with orders > 0 on or before the as-of day per customer (DuckDB).

    Rows for the same (profile, day) are summed first, so a fact table that holds a day twice
    (e.g. facts from two merged parts not yet combined) still counts it as one purchase day.
    """
    last = as_of_day(as_of)
    with duckdb.connect() as db:
        db.register("orders_daily", orders_daily)
        per_customer = db.sql(_QUERY, params={"as_of": last}).to_arrow_table()

    def column(name: str, dtype: type) -> np.ndarray:
        return per_customer[name].to_numpy().astype(dtype)

    return PurchaseHistory(
        as_of_day=(last - EPOCH).days,
        profile_id=per_customer["profile_id"].combine_chunks(),
        first_day=column("first_day", np.int64),
        last_day=column("last_day", np.int64),
        purchase_days=column("purchase_days", np.int64),
        orders=column("orders", np.int64),
        revenue=column("revenue", np.float64),
        first_day_revenue=column("first_day_revenue", np.float64),
    )
