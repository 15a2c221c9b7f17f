"""Customer lifetime value: what each customer has been worth, and what they are expected to be.

Historical CLV is revenue net of refunds up to the as-of day. Predictive CLV multiplies two
models fitted on today's customers by maximum likelihood: BG/NBD (how many purchases, and
whether the customer is still alive) and Gamma-Gamma (how much each purchase is worth). Their
inputs are defined exactly as ``lifetimes.utils.summary_data_from_transaction_data(freq="D",
observation_period_end=as_of)`` defines them, so results can be checked against that library:
frequency = purchase days - 1, recency = last - first purchase day, T = as-of day - first
purchase day (in days), monetary_value = mean revenue per repeat purchase day (0 without one).

The fitted parameters travel with the table (schema metadata ``patron.clv_model``, kept in the
Parquet file); ``clv_model_table`` turns them into the ``clv_model`` table. With too few repeat
customers to fit, the predictive columns are null and ``clv_model`` says why.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from patron.projections import bg_nbd, gamma_gamma
from patron.projections.model_fit import Fit
from patron.projections.purchases import as_of_day, purchase_history
from patron.yaml_config import load_document

if TYPE_CHECKING:
    from patron.projections.fact_tables import FactTables

DEFAULT_CLV_FILE = "clv.yaml"
METADATA_KEY = b"patron.clv_model"
DISCOUNT_STEP_DAYS = 30
CLV_MODEL_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("parameter", pa.string()),
        ("value", pa.float64()),
        ("log_likelihood", pa.float64()),
        ("n", pa.int64()),
        ("converged", pa.bool_()),
        ("note", pa.string()),
    ]
)


class ClvConfig(BaseModel):
    """Validated CLV settings; ``load_clv_config`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizons_days: list[int] = Field([90, 365], min_length=1, description="Prediction horizons in days.")
    monthly_discount_rate: float = Field(0.0, ge=0, lt=1, description="Discount per 30-day step.")
    min_repeat_customers: int = Field(20, ge=2, description="Fewer repeat customers: no model fit.")

    @field_validator("horizons_days")
    @classmethod
    def _positive_distinct(cls, horizons: list[int]) -> list[int]:
        if any(h < 1 for h in horizons) or len(set(horizons)) != len(horizons):
            raise ValueError(f"horizons must be distinct whole days >= 1, got {horizons}")
        return horizons


def load_clv_config(path: Path | None = None) -> ClvConfig:
    """The settings in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(ClvConfig, path, "patron.projections", DEFAULT_CLV_FILE, "CLV settings")


def clv_schema(horizons_days: list[int]) -> pa.Schema:
    """The ``clv`` table's columns for the configured horizons."""
    fields = [
        ("profile_id", pa.string()),
        ("frequency", pa.int64()),
        ("recency", pa.int64()),
        ("T", pa.int64()),
        ("monetary_value", pa.float64()),
        ("historical_clv", pa.float64()),
        ("p_alive", pa.float64()),
    ]
    for h in horizons_days:
        fields += [(f"expected_purchases_{h}d", pa.float64()), (f"clv_{h}d", pa.float64())]
    return pa.schema(fields)


def _refunds(refunds_daily: pa.Table, as_of: datetime, profile_id: pa.Array) -> np.ndarray:
    """Refunded amount up to the as-of day per entry of ``profile_id`` (0 for none)."""
    upto = refunds_daily.filter(pc.less_equal(refunds_daily["day"], pa.scalar(as_of_day(as_of), pa.date32())))
    totals = upto.group_by("profile_id", use_threads=False).aggregate([("amount", "sum")])
    where = pc.index_in(profile_id, value_set=totals["profile_id"].combine_chunks())
    amounts = totals["amount_sum"].combine_chunks().take(where).fill_null(0.0)
    return amounts.to_numpy(zero_copy_only=False).astype(np.float64)


def _unfitted(model: str, n: int, note: str) -> Fit:
    return Fit(model, {}, math.nan, n, False, note)


def _fit_models(x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray, config: ClvConfig) -> list[Fit]:
    """[BG/NBD fit, Gamma-Gamma fit], or unfitted placeholders that say why."""
    repeaters = int((x > 0).sum())
    if repeaters < config.min_repeat_customers:
        note = (
            f"too little data: {repeaters} customers with a repeat purchase, the fit needs >= "
            f"{config.min_repeat_customers} (min_repeat_customers in {DEFAULT_CLV_FILE}); predictions are null"
        )
        return [_unfitted("bg_nbd", len(x), note), _unfitted("gamma_gamma", repeaters, note)]
    spenders = (x > 0) & (m > 0)
    spend = gamma_gamma.fit(x[spenders], m[spenders])
    notes = [spend.note] if spend.note else []
    if repeaters > spenders.sum():
        notes.append(f"{repeaters - int(spenders.sum())} repeat customers with no spend left out of the fit")
    if spend.usable and spend.params["q"] <= 1:
        notes.append("q <= 1: the population mean spend is unbounded, so clv columns are null")
    if np.ptp(x[spenders]) > 0 and np.ptp(m[spenders]) > 0:
        correlation = float(np.corrcoef(x[spenders], m[spenders])[0, 1])
        notes.append(f"corr(frequency, monetary_value) = {correlation:.3f} (the model assumes about 0)")
    return [bg_nbd.fit(x, t_x, T), replace(spend, note="; ".join(notes))]


def _model_rows(fits: list[Fit]) -> list[dict[str, Any]]:
    rows = []
    for fit in fits:
        params: list[tuple[str | None, float | None]] = list(fit.params.items()) or [(None, None)]
        for name, value in params:
            ll = None if math.isnan(fit.log_likelihood) else fit.log_likelihood
            rows.append(
                {
                    "model": fit.model,
                    "parameter": name,
                    "value": value,
                    "log_likelihood": ll,
                    "n": fit.n,
                    "converged": fit.converged,
                    "note": fit.note,
                }
            )
    return rows


def clv_model_table(clv: pa.Table) -> pa.Table:
    """The ``clv_model`` table (model, parameter, value, log_likelihood, n, converged, note) of a ``clv`` table."""
    return pa.Table.from_pylist(json.loads(clv.schema.metadata[METADATA_KEY]), schema=CLV_MODEL_SCHEMA)


def discounted_value(
    params: dict[str, float],
    horizon: int,
    spend: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    monthly_rate: float,
) -> np.ndarray:
    """Expected spend over the next ``horizon`` days, each 30-day step k's purchases discounted by (1+rate)^k.

    With rate 0 this is spend x E[purchases in horizon]; for whole months it equals
    ``lifetimes.utils.customer_lifetime_value(..., time=months, discount_rate=rate, freq="D")``.
    """
    steps = math.ceil(horizon / DISCOUNT_STEP_DAYS) if monthly_rate else 1
    ends = np.minimum(np.arange(1, steps + 1) * DISCOUNT_STEP_DAYS, horizon) if monthly_rate else [horizon]
    total = np.zeros(len(x))
    before = np.zeros(len(x))
    for k, end in enumerate(ends, start=1):
        upto = bg_nbd.expected_purchases(params, float(end), x, t_x, T)
        total += (upto - before) / (1 + monthly_rate) ** k
        before = upto
    return spend * total


def _nullable(values: np.ndarray | None, n: int) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.float64())
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def build_clv(tables: FactTables, as_of: datetime, config: ClvConfig | None = None) -> pa.Table:
    """One row per profile with >= 1 order on or before the as-of day, sorted by profile id."""
    config = config or load_clv_config()
    history = purchase_history(tables.orders_daily, as_of)
    x = history.purchase_days - 1
    t_x = history.last_day - history.first_day
    T = history.as_of_day - history.first_day
    m = np.where(x > 0, (history.revenue - history.first_day_revenue) / np.maximum(x, 1), 0.0)
    historical = history.revenue - _refunds(tables.refunds_daily, as_of, history.profile_id)
    fits = _fit_models(x, t_x, T, m, config)
    purchases, spend = fits
    n = len(history)
    columns: list[pa.Array] = [
        history.profile_id,
        pa.array(x, pa.int64()),
        pa.array(t_x, pa.int64()),
        pa.array(T, pa.int64()),
        pa.array(m, pa.float64()),
        pa.array(historical, pa.float64()),
        _nullable(bg_nbd.p_alive(purchases.params, x, t_x, T) if purchases.usable else None, n),
    ]
    per_purchase = gamma_gamma.expected_average_value(spend.params, x, m) if spend.usable else None
    for h in config.horizons_days:
        expected = (
            bg_nbd.expected_purchases(purchases.params, float(h), x, t_x, T) if purchases.usable else None
        )
        value = (
            discounted_value(purchases.params, h, per_purchase, x, t_x, T, config.monthly_discount_rate)
            if expected is not None and per_purchase is not None
            else None
        )
        columns += [_nullable(expected, n), _nullable(value, n)]
    schema = clv_schema(config.horizons_days).with_metadata(
        {METADATA_KEY: json.dumps(_model_rows(fits)).encode()}
    )
    return pa.Table.from_arrays(columns, schema=schema)
