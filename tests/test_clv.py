"""CLV against references: the ``lifetimes`` library (same transactions, its bundled CDNOW data) and
the published BG/NBD (Fader, Hardie, Lee 2005) and Gamma-Gamma (Fader, Hardie 2013) estimates.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from fact_builder import fact_tables
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.datasets import load_cdnow_summary, load_cdnow_summary_data_with_monetary_value
from lifetimes.utils import summary_data_from_transaction_data
from scipy.optimize import check_grad

from patron.errors import PatronError
from patron.projections import bg_nbd, gamma_gamma
from patron.projections.clv import (
    ClvConfig,
    build_clv,
    clv_model_table,
    clv_schema,
    discounted_value,
    load_clv_config,
)
from patron.projections.fact_tables import FactTables

AS_OF = datetime(2026, 9, 30, 15, 0, tzinfo=UTC)
START = datetime(2025, 10, 1, tzinfo=UTC)


def simulate_transactions(customers: int, seed: int) -> pd.DataFrame:
    """Purchases drawn from the BG/NBD story (Poisson buying, drop-out after a repeat purchase), with
    times of day (several purchases can share a day) and some purchases after the as-of moment."""
    rng = np.random.default_rng(seed)
    rows = []
    horizon = (AS_OF - START).total_seconds() / 86400 + 20
    for i in range(customers):
        rate, drop = rng.gamma(0.9, 1 / 12), rng.beta(0.7, 3.0)
        spend = rng.gamma(4.0, 10.0)
        t = rng.uniform(0, horizon - 30)
        while t < horizon:
            rows.append((f"c{i:05d}", START + timedelta(days=t), round(rng.gamma(6.0, spend / 6.0), 2)))
            if len(rows) > 1 and rows[-2][0] == rows[-1][0] and rng.random() < drop:
                break
            t += rng.exponential(1 / rate)
    return pd.DataFrame(rows, columns=["customer", "at", "revenue"])


def orders_daily(transactions: pd.DataFrame) -> list[dict[str, object]]:
    """The ``orders_daily`` facts of these purchases: per customer and UTC day, orders and revenue."""
    days = transactions.assign(day=transactions["at"].dt.date).groupby(["customer", "day"], as_index=False)
    daily = days.agg(orders=("revenue", "size"), revenue=("revenue", "sum"))
    return [
        {"profile_id": r.customer, "day": r.day, "orders": int(r.orders), "revenue": float(r.revenue)}
        for r in daily.itertuples()
    ]


def naive_utc(moment: pd.Series | datetime) -> pd.Series | datetime:
    return moment.dt.tz_convert(None) if isinstance(moment, pd.Series) else moment.replace(tzinfo=None)


def lifetimes_summary(transactions: pd.DataFrame) -> pd.DataFrame:
    return summary_data_from_transaction_data(
        transactions.assign(at=naive_utc(transactions["at"])),
        "customer",
        "at",
        monetary_value_col="revenue",
        observation_period_end=naive_utc(AS_OF),
        freq="D",
    )


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return simulate_transactions(1500, seed=11)


@pytest.fixture(scope="module")
def tables(transactions: pd.DataFrame) -> FactTables:
    refunds = [
        {"profile_id": "c00003", "day": AS_OF.date(), "refunds": 1, "amount": 12.5},
        {"profile_id": "c00003", "day": AS_OF.date() + timedelta(days=1), "refunds": 1, "amount": 99.0},
    ]
    return fact_tables(orders_daily=orders_daily(transactions), refunds_daily=refunds)


CONFIG = ClvConfig(horizons_days=[90, 360], monthly_discount_rate=0.01, min_repeat_customers=20)


@pytest.fixture(scope="module")
def clv(tables: FactTables) -> pa.Table:
    return build_clv(tables, AS_OF, CONFIG)


def test_summary_inputs_equal_lifetimes_summary_data(transactions: pd.DataFrame, clv: pa.Table) -> None:
    reference = lifetimes_summary(transactions)
    ours = clv.select(["profile_id", "frequency", "recency", "T", "monetary_value"]).to_pandas()
    ours = ours.set_index("profile_id")
    assert (transactions["at"] > AS_OF).any() and (ours["frequency"] > 0).sum() > 300  # the case is real
    assert list(ours.index) == sorted(reference.index)
    reference = reference.loc[ours.index]
    for column in ("frequency", "recency", "T"):
        np.testing.assert_array_equal(ours[column].to_numpy(), reference[column].to_numpy(), err_msg=column)
    np.testing.assert_allclose(ours["monetary_value"], reference["monetary_value"], rtol=1e-12, atol=1e-9)


def test_historical_clv_is_revenue_net_of_refunds_up_to_as_of(
    transactions: pd.DataFrame, clv: pa.Table
) -> None:
    revenue = transactions[transactions["at"].dt.date <= AS_OF.date()].groupby("customer")["revenue"].sum()
    got = clv.to_pandas().set_index("profile_id")["historical_clv"]
    np.testing.assert_allclose(got.drop("c00003"), revenue.drop("c00003").loc[got.drop("c00003").index])
    assert got["c00003"] == pytest.approx(revenue["c00003"] - 12.5)  # the refund after as-of is not counted


def test_build_clv_matches_the_lifetimes_pipeline(transactions: pd.DataFrame, clv: pa.Table) -> None:
    summary = lifetimes_summary(transactions)
    x, t_x, T = summary["frequency"], summary["recency"], summary["T"]
    purchases = BetaGeoFitter().fit(x.to_numpy(), t_x.to_numpy(), T.to_numpy())
    repeat = summary[summary["frequency"] > 0]
    spend = GammaGammaFitter().fit(repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy())
    model = clv_model_table(clv).to_pandas().set_index(["model", "parameter"])["value"]
    for name in bg_nbd.PARAMS:
        assert model["bg_nbd", name] == pytest.approx(purchases.params_[name], rel=1e-4), name
    for name in gamma_gamma.PARAMS:
        assert model["gamma_gamma", name] == pytest.approx(spend.params_[name], rel=1e-4), name

    ours = clv.to_pandas().set_index("profile_id").loc[summary.index]
    np.testing.assert_allclose(ours["p_alive"], purchases.conditional_probability_alive(x, t_x, T), rtol=1e-4)
    for h in (90, 360):
        expected = purchases.conditional_expected_number_of_purchases_up_to_time(h, x, t_x, T)
        np.testing.assert_allclose(ours[f"expected_purchases_{h}d"], expected, rtol=1e-4)
        value = spend.customer_lifetime_value(
            purchases, x, t_x, T, summary["monetary_value"], time=h // 30, discount_rate=0.01, freq="D"
        )
        np.testing.assert_allclose(ours[f"clv_{h}d"], value, rtol=1e-4)


def test_clv_table_schema_and_model_table(clv: pa.Table) -> None:
    assert clv.schema.remove_metadata() == clv_schema([90, 360])
    assert clv.column_names[-4:] == [
        "expected_purchases_90d",
        "clv_90d",
        "expected_purchases_360d",
        "clv_360d",
    ]
    model = clv_model_table(clv)
    assert set(model.column("model").to_pylist()) == {"bg_nbd", "gamma_gamma"}
    assert all(model.column("converged").to_pylist())
    assert model.column("n").to_pylist()[0] == clv.num_rows


CDNOW_BG_NBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}  # FHL 2005, table 1
CDNOW_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}  # Fader & Hardie 2013 / lifetimes docs


def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = load_cdnow_summary(index_col=[0])
    return data["frequency"].to_numpy(np.float64), data["recency"].to_numpy(), data["T"].to_numpy()


def test_bg_nbd_fit_on_cdnow_matches_the_paper_and_lifetimes() -> None:
    x, t_x, T = cdnow()
    fit = bg_nbd.fit(x, t_x, T)
    reference = BetaGeoFitter().fit(x, t_x, T).params_
    assert fit.converged and fit.n == 2357
    for name, published in CDNOW_BG_NBD.items():
        assert fit.params[name] == pytest.approx(reference[name], rel=1e-4), name
        assert fit.params[name] == pytest.approx(published, abs=6e-4), name  # 3 decimals in the paper
    assert fit.log_likelihood == pytest.approx(-9582.4, abs=0.05)  # FHL 2005: LL = -9582.4


def test_gamma_gamma_fit_on_cdnow_matches_lifetimes_and_the_note() -> None:
    data = load_cdnow_summary_data_with_monetary_value()
    repeat = data[data["frequency"] > 0]
    x, m = repeat["frequency"].to_numpy(np.float64), repeat["monetary_value"].to_numpy()
    fit = gamma_gamma.fit(x, m)
    reference = GammaGammaFitter().fit(x, m).params_
    assert fit.converged and fit.n == 946
    for name, published in CDNOW_GAMMA_GAMMA.items():
        assert fit.params[name] == pytest.approx(reference[name], rel=1e-4), name
        assert fit.params[name] == pytest.approx(published, abs=0.01), name


def test_predictions_equal_lifetimes_formulas_at_the_same_parameters() -> None:
    x, t_x, T = cdnow()
    reference = BetaGeoFitter().fit(x, t_x, T)
    params = reference.params_.to_dict()
    np.testing.assert_allclose(
        bg_nbd.p_alive(params, x, t_x, T), reference.conditional_probability_alive(x, t_x, T), rtol=1e-12
    )
    for t in (1.0, 10.0, 39.0, 52.0, 500.0):
        np.testing.assert_allclose(
            bg_nbd.expected_purchases(params, t, x, t_x, T),
            reference.conditional_expected_number_of_purchases_up_to_time(t, x, t_x, T),
            rtol=1e-10,
        )
    data = load_cdnow_summary_data_with_monetary_value()
    repeat = data[data["frequency"] > 0]
    spend = GammaGammaFitter().fit(repeat["frequency"].to_numpy(), repeat["monetary_value"].to_numpy())
    gx, gm = data["frequency"].to_numpy(np.float64), data["monetary_value"].to_numpy()
    per_purchase = gamma_gamma.expected_average_value(spend.params_.to_dict(), gx, gm)
    np.testing.assert_allclose(per_purchase, spend.conditional_expected_average_profit(gx, gm), rtol=1e-12)
    g_t_x, g_T = data["recency"].to_numpy(), data["T"].to_numpy()
    model = BetaGeoFitter().fit(gx, g_t_x, g_T)
    ours = discounted_value(model.params_.to_dict(), 360, per_purchase, gx, g_t_x, g_T, 0.01)
    theirs = spend.customer_lifetime_value(
        model,
        data["frequency"],
        data["recency"],
        data["T"],
        data["monetary_value"],
        time=12,
        discount_rate=0.01,
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_undiscounted_clv_is_expected_purchases_times_spend() -> None:
    x, t_x, T = cdnow()
    params = bg_nbd.fit(x, t_x, T).params
    spend = np.full(len(x), 20.0)
    np.testing.assert_allclose(
        discounted_value(params, 365, spend, x, t_x, T, 0.0),
        20.0 * bg_nbd.expected_purchases(params, 365, x, t_x, T),
    )


def test_gradients_match_finite_differences() -> None:
    x, t_x, T = cdnow()
    point = np.array([0.4, 6.0, 0.6, 2.0])
    error = check_grad(
        lambda p: bg_nbd.log_likelihood(p, x, t_x, T)[0].sum(),
        lambda p: bg_nbd.log_likelihood(p, x, t_x, T)[1].sum(axis=1),
        point,
    )
    assert error < 1e-3 * np.abs(bg_nbd.log_likelihood(point, x, t_x, T)[1].sum(axis=1)).max()
    data = load_cdnow_summary_data_with_monetary_value()
    repeat = data[data["frequency"] > 0]
    gx, gm = repeat["frequency"].to_numpy(np.float64), repeat["monetary_value"].to_numpy()
    point = np.array([5.0, 3.0, 14.0])
    error = check_grad(
        lambda p: gamma_gamma.log_likelihood(p, gx, gm)[0].sum(),
        lambda p: gamma_gamma.log_likelihood(p, gx, gm)[1].sum(axis=1),
        point,
    )
    assert error < 1e-3 * np.abs(gamma_gamma.log_likelihood(point, gx, gm)[1].sum(axis=1)).max()


def test_too_little_data_gives_null_predictions_and_a_note() -> None:
    tables = fact_tables(
        orders_daily=[
            {"profile_id": "a", "day": AS_OF.date() - timedelta(days=9), "orders": 1, "revenue": 10.0},
            {"profile_id": "a", "day": AS_OF.date() - timedelta(days=2), "orders": 2, "revenue": 30.0},
            {"profile_id": "b", "day": AS_OF.date() - timedelta(days=5), "orders": 1, "revenue": 5.0},
        ]
    )
    clv = build_clv(tables, AS_OF)
    rows = {row["profile_id"]: row for row in clv.to_pylist()}
    assert (rows["a"]["frequency"], rows["a"]["recency"], rows["a"]["T"]) == (1, 7, 9)
    assert rows["a"]["monetary_value"] == 30.0 and rows["a"]["historical_clv"] == 40.0
    for column in ("p_alive", "expected_purchases_90d", "clv_90d", "expected_purchases_365d", "clv_365d"):
        assert clv.column(column).null_count == 2, column
    notes = clv_model_table(clv).column("note").to_pylist()
    assert notes and all(
        note.startswith("too little data: 1 customers with a repeat purchase") for note in notes
    )
    assert json.loads(clv.schema.metadata[b"patron.clv_model"])[0]["converged"] is False


def test_no_orders_gives_an_empty_table() -> None:
    clv = build_clv(fact_tables(), AS_OF)
    assert clv.num_rows == 0 and clv.schema.remove_metadata() == clv_schema([90, 365])
    assert "too little data: 0 customers" in clv_model_table(clv).column("note")[0].as_py()


def test_default_and_invalid_config(tmp_path: Path) -> None:
    assert load_clv_config() == ClvConfig(
        horizons_days=[90, 365], monthly_discount_rate=0.0, min_repeat_customers=20
    )
    path = tmp_path / "clv.yaml"
    path.write_text("horizons_days: [90, 0]\nmonthly_discount_rate: 1.5\n")
    with pytest.raises(PatronError) as error:
        load_clv_config(path)
    message = str(error.value)
    assert f"{path}: CLV settings key 'horizons_days': horizons must be distinct whole days >= 1" in message
    assert "key 'monthly_discount_rate': Input should be less than 1" in message


def test_alike_customers_fit_at_the_bound_and_still_predict() -> None:
    """Every customer buys at the same rate and never drops out (synthetic data often looks like
    this): the heterogeneity parameters run off to their bound, and predictions are the limit's."""
    rng = np.random.default_rng(5)
    rate = 0.05
    rows = []
    for i in range(600):
        first = int(rng.integers(0, 200))
        days = first + np.concatenate(([0], np.cumsum(rng.exponential(1 / rate, 80)).astype(int)))
        for day in np.unique(days[days <= 365]):
            rows.append(
                {
                    "profile_id": f"c{i}",
                    "day": START.date() + timedelta(days=int(day)),
                    "orders": 1,
                    "revenue": 10.0 + i % 7,
                }
            )
    clv = build_clv(
        fact_tables(orders_daily=rows),
        datetime.combine(START.date() + timedelta(days=365), datetime.min.time(), UTC),
    )
    model = clv_model_table(clv).to_pylist()
    purchases = next(row for row in model if row["model"] == "bg_nbd")
    assert purchases["converged"] and purchases["note"].startswith(
        "r stopped at the bound of the search range"
    )
    params = {row["parameter"]: row["value"] for row in model if row["model"] == "bg_nbd"}
    assert params["r"] / params["alpha"] == pytest.approx(
        rate, rel=0.1
    )  # same-day purchases merge: a bit under
    # nobody drops out and everyone buys at the one rate: each expects rate x 90 days
    expected = clv.column("expected_purchases_90d").to_numpy()
    np.testing.assert_allclose(expected, params["r"] / params["alpha"] * 90, rtol=1e-3)
    assert clv.column("clv_90d").null_count == 0 and clv.column("clv_365d").null_count == 0
