"""Lifecycle stages: where each customer stands in the buying relationship, since when, and from where.

Stages, first match wins (thresholds in ``lifecycle.yaml``; a *purchase day* is a UTC day with at
least one completed order, up to the as-of day):

* ``prospect``: no purchase day yet.
* ``churned``: no purchase for ``dormancy_churned_days``, or every subscription was cancelled and has
  ended with no purchase day since the last one ended.
* ``at_risk``: no purchase for ``dormancy_at_risk_days``.
* ``reactivated``: bought again after a gap of at least ``dormancy_churned_days`` (was churned), less
  than ``reactivated_days`` ago.
* ``loyal``: at least ``loyal_purchase_days`` purchase days within ``loyal_window_days``.
* ``repeat``: two or more purchase days.
* ``first_time_buyer``: exactly one.

``since`` and ``previous_stage`` come from replaying the stage over the order history: a stage can
only change on a purchase day or at a fixed distance after one (dormancy thresholds, a purchase
leaving the loyalty window, the end of the reactivated period), so the stage is evaluated at
exactly those moments, vectorised over all customers at once, and ``since`` is the start of the
last run of equal stages (a UTC midnight). A prospect's ``since`` is when it was first seen; a
subscription churn's is when the last subscription ended. Renewals are not purchase days (the fact
tables keep their count, not their days): subscription risk is the health score's part.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.projections.purchases import EPOCH, as_of_day
from patron.yaml_config import load_document

if TYPE_CHECKING:
    from patron.projections.fact_tables import FactTables

DEFAULT_LIFECYCLE_FILE = "lifecycle.yaml"
STAGES = ("prospect", "first_time_buyer", "repeat", "loyal", "at_risk", "churned", "reactivated")
PROSPECT, FIRST, REPEAT, LOYAL, AT_RISK, CHURNED, REACTIVATED = range(len(STAGES))
DAY_MICROS = 86_400_000_000
LIFECYCLE_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("stage", pa.string()),
        ("since", pa.timestamp("us", tz="UTC")),
        ("previous_stage", pa.string()),
    ]
)


class LifecycleConfig(BaseModel):
    """Validated lifecycle thresholds; ``load_lifecycle_config`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dormancy_at_risk_days: int = Field(90, gt=0)
    dormancy_churned_days: int = Field(180, gt=0)
    reactivated_days: int = Field(90, gt=0)
    loyal_purchase_days: int = Field(4, ge=2)
    loyal_window_days: int = Field(365, gt=0)

    @model_validator(mode="after")
    def _churn_after_risk(self) -> LifecycleConfig:
        if self.dormancy_churned_days <= self.dormancy_at_risk_days:
            raise ValueError(
                f"dormancy_churned_days ({self.dormancy_churned_days}) must be greater than "
                f"dormancy_at_risk_days ({self.dormancy_at_risk_days})"
            )
        return self


def load_lifecycle_config(path: Path | None = None) -> LifecycleConfig:
    """The thresholds in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(
        LifecycleConfig, path, "patron.projections", DEFAULT_LIFECYCLE_FILE, "lifecycle config"
    )


def _days(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """date32 -> int64 days since 1970-01-01."""
    return column.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


class History:
    """Every customer's purchase days as flat sorted arrays, and the stage at any (customer, day).

    ``group`` is the customer's row in ``customers``; ``day`` ascending within a customer.
    Searches use one sorted int64 key per purchase day, ``group * span + day - base``.
    """

    def __init__(
        self, group: np.ndarray, day: np.ndarray, customers: int, last: int, config: LifecycleConfig
    ):
        self.config = config
        longest = max(config.dormancy_churned_days, config.loyal_window_days, config.reactivated_days)
        self.base = int(day.min()) - longest - 1 if len(day) else last - longest - 1
        self.span = last - self.base + longest + 1
        keys = np.sort(group * self.span + (day - self.base))
        self.keys = keys[np.append(True, keys[1:] != keys[:-1])] if len(keys) else keys  # one per day
        self.group, self.day = self.keys // self.span, self.keys % self.span + self.base
        ids = np.arange(customers)
        self.start = np.searchsorted(self.group, ids, "left")
        self.count = np.searchsorted(self.group, ids, "right") - self.start
        first = np.ones(len(self.day), dtype=bool)
        first[1:] = self.group[1:] != self.group[:-1]
        gap_before = np.where(first, -1, self.day - np.roll(self.day, 1))
        last_of_customer = np.append(first[1:], True)
        self.next_day = np.where(last_of_customer, np.iinfo(np.int64).max, np.roll(self.day, -1))
        # The day the customer last came back from a churn-length gap, carried forward per customer.
        returned = np.where(gap_before >= config.dormancy_churned_days, np.arange(len(self.day)), -1)
        latest_return = np.maximum.accumulate(returned) if len(returned) else returned
        own = (latest_return >= 0) & (self.group[np.maximum(latest_return, 0)] == self.group)
        self.returned_on = np.where(own, self.day[np.maximum(latest_return, 0)], np.iinfo(np.int64).min // 2)

    def purchases_until(self, group: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Purchase days of ``group`` on or before ``day`` (element-wise)."""
        return np.searchsorted(self.keys, group * self.span + (day - self.base), "right") - self.start[group]

    def stage_at(self, group: np.ndarray, day: np.ndarray) -> np.ndarray:
        """The order-history stage code of each (customer, day)."""
        if not len(self.day):
            return np.full(len(group), PROSPECT)
        c = self.config
        k = self.purchases_until(group, day)
        latest = np.maximum(self.start[group] + k - 1, 0)
        gap = day - self.day[latest]
        in_window = k - self.purchases_until(group, day - c.loyal_window_days)
        return np.select(
            [
                k == 0,
                gap >= c.dormancy_churned_days,
                gap >= c.dormancy_at_risk_days,
                day - self.returned_on[latest] < c.reactivated_days,
                in_window >= c.loyal_purchase_days,
                k >= 2,
            ],
            [PROSPECT, CHURNED, AT_RISK, REACTIVATED, LOYAL, REPEAT],
            default=FIRST,
        )

    def moments(self, last: int) -> tuple[np.ndarray, np.ndarray]:
        """(group, day) of every moment a stage can change, up to ``last``, sorted, no repeats.

        Those are the purchase days and, after each, the dormancy thresholds (unless the next
        purchase comes first), its leaving the loyalty window (only for customers with enough
        purchase days to ever be loyal) and, after a return from churn, the end of "reactivated".
        Offsets are added to the keys directly: a key plus at most ``longest`` days stays in its
        customer's range by construction of ``span``.
        """
        c = self.config
        could_be_loyal = self.count[self.group] >= c.loyal_purchase_days
        key = np.concatenate(
            [
                self.keys,
                self.keys[self.day + c.dormancy_at_risk_days < self.next_day] + c.dormancy_at_risk_days,
                self.keys[self.day + c.dormancy_churned_days < self.next_day] + c.dormancy_churned_days,
                self.keys[could_be_loyal] + c.loyal_window_days,
                self.keys[self.returned_on == self.day] + c.reactivated_days,
            ]
        )
        key = np.sort(key[key % self.span + self.base <= last])
        key = key[np.append(True, key[1:] != key[:-1])] if len(key) else key  # sort + dedupe: np.unique's
        return key // self.span, key % self.span + self.base  # hash path is ~20x slower on millions


def _purchase_days(tables: FactTables, profiles: pa.Array, last: int) -> tuple[np.ndarray, np.ndarray]:
    """(customer row, day) of every purchase day on or before ``last`` (repeats possible)."""
    orders = tables.orders_daily
    bought = orders.filter(
        pc.and_(pc.greater(orders["orders"], 0), pc.less_equal(orders["day"].cast(pa.int32()), last))
    ).select(["profile_id", "day"])
    group = pc.index_in(bought["profile_id"], value_set=profiles)
    known = pc.is_valid(group)
    rows = pc.filter(group, known).to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, _days(pc.filter(bought["day"], known))


def _subscription_churn(
    tables: FactTables, profiles: pa.Array, cut: datetime
) -> tuple[np.ndarray, np.ndarray]:
    """Per customer row: whether every subscription is cancelled and ended by ``cut``, and the
    micros of the last one's end (meaningful where the first is true)."""
    subs = tables.subscriptions
    cut_scalar = pa.scalar(cut, pa.timestamp("us", tz="UTC"))
    ended = pc.and_(
        pc.less(subs["cancelled_at"], cut_scalar), pc.less_equal(subs["period_end"], cut_scalar)
    ).fill_null(False)
    grouped = (
        pa.table({"profile_id": subs["profile_id"], "ended": ended, "end": subs["period_end"]})
        .group_by("profile_id", use_threads=False)
        .aggregate([("ended", "all"), ("end", "max")])
    )
    where = pc.index_in(grouped["profile_id"], value_set=profiles)
    known = pc.is_valid(where).to_numpy(zero_copy_only=False)
    rows = where.to_numpy(zero_copy_only=False)[known].astype(np.int64)
    all_ended = np.zeros(len(profiles), dtype=bool)
    last_end = np.zeros(len(profiles), dtype=np.int64)
    all_ended[rows] = grouped["ended_all"].to_numpy(zero_copy_only=False)[known]
    ends = grouped["end_max"].cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)[known]
    last_end[rows] = ends
    return all_ended & (last_end > 0), last_end


def build_lifecycle(tables: FactTables, as_of: datetime, config: LifecycleConfig | None = None) -> pa.Table:
    """The ``lifecycle`` table: profile_id, stage, since, previous_stage; one row per customer, sorted by id."""
    config = config or load_lifecycle_config()
    day = as_of_day(as_of)
    last = (day - EPOCH).days
    customers = tables.customers.sort_by("profile_id")
    profiles = customers["profile_id"].combine_chunks()
    n = len(profiles)
    history = History(*_purchase_days(tables, profiles, last), n, last, config)

    # Replay: the stage at every moment it can change; the current stage is the last one's.
    group, moment = history.moments(last)
    code = history.stage_at(group, moment)
    first_of_group = np.ones(len(group), dtype=bool)
    first_of_group[1:] = group[1:] != group[:-1]
    run_starts = first_of_group.copy()
    run_starts[1:] |= code[1:] != code[:-1]
    run_start = np.maximum.accumulate(np.where(run_starts, np.arange(len(group)), 0)) if len(group) else group
    last_moment = np.flatnonzero(np.append(first_of_group[1:], True)) if len(group) else group
    buyers = group[last_moment]

    stage = np.full(n, PROSPECT)
    since = customers["first_seen"].cast(pa.int64()).to_numpy(zero_copy_only=False).copy()
    previous = np.full(n, -1)
    starts = run_start[last_moment]
    stage[buyers] = code[last_moment]
    since[buyers] = moment[starts] * DAY_MICROS
    previous[buyers] = np.where(first_of_group[starts], PROSPECT, code[np.maximum(starts - 1, 0)])

    cut = datetime.combine(day + timedelta(days=1), time(), UTC)
    all_ended, last_end = _subscription_churn(tables, profiles, cut)
    end_day = np.floor_divide(last_end, DAY_MICROS)
    bought = history.count > 0
    last_purchase = np.full(n, np.iinfo(np.int64).min)
    last_purchase[bought] = history.day[history.start[bought] + history.count[bought] - 1]
    sub_churn = all_ended & (stage != CHURNED) & (last_purchase < end_day)
    rows = np.flatnonzero(sub_churn)
    previous[rows] = history.stage_at(rows, end_day[rows]) if len(rows) else previous[rows]
    stage[rows] = CHURNED
    since[rows] = last_end[rows]

    names = np.asarray(STAGES, dtype=object)
    return pa.table(
        {
            "profile_id": profiles,
            "stage": pa.array(names[stage], pa.string()),
            "since": pa.array(since, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "previous_stage": pa.array(
                np.where(previous >= 0, names[np.maximum(previous, 0)], None), pa.string()
            ),
        },
        schema=LIFECYCLE_SCHEMA,
    )
