"""Customer health: a 0-100 score per profile that explains itself, and early-warning alerts.

A customer success manager needs two things from a health score: *which* customers need a call
and *why*. So the score is a weighted mean of a few factors (usage trend, support, sentiment,
commercial), each the weighted mean of named signals scored linearly between two thresholds, and
every row keeps the breakdown (value, score, weight, contribution, a sentence) as JSON. Weights,
thresholds, windows and alert rules are data (``health.yaml``) because every business weighs them
differently.

Missing data is neutral, never NaN: a signal without data (no tickets, no survey answer, no
baseline yet) drops out and the remaining weights are re-normalised, within its factor and across
factors; a profile without data for any factor gets ``neutral_score``. Rules need evidence: a
condition on a signal without data does not hold.

Everything is vectorised: signals are one DuckDB query over the fact tables, scores and alerts are
numpy over columns, and the JSON explanation is built by DuckDB as well (no Python per customer).
A million customers with 5M order and 5M activity rows take about 20 s on two busy cores, two
thirds of it formatting the numbers of the explanations.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from patron.projections.health_signals import SIGNALS, Windows, connect, signals
from patron.yaml_config import load_document

if TYPE_CHECKING:
    from patron.projections.fact_tables import FactTables

DEFAULT_HEALTH_FILE = "health.yaml"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|!=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$")
DECIMALS = {"s__": 1, "w__": 4, "c__": 2}
"""Decimals shown for the scored columns by prefix (signal score, effective weight, contribution);
factor scores get 1 and signal values 4."""
OPERATORS = {
    ">=": np.greater_equal,
    ">": np.greater,
    "<=": np.less_equal,
    "<": np.less,
    "==": np.equal,
    "!=": np.not_equal,
}


class Ramp(BaseModel):
    """A signal's score: 0 at ``zero_at``, 100 at ``full_at``, linear between, clipped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: float = Field(gt=0)
    zero_at: float
    full_at: float

    @model_validator(mode="after")
    def _distinct_ends(self) -> Ramp:
        if self.zero_at == self.full_at:
            raise ValueError(f"zero_at and full_at are both {self.zero_at}; they must differ")
        return self


class Factor(BaseModel):
    """A factor of the score: its weight among factors and the signals it is the weighted mean of."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weight: float = Field(gt=0)
    signals: dict[str, Ramp] = Field(min_length=1)

    @field_validator("signals")
    @classmethod
    def _known_signals(cls, signals: dict[str, Ramp]) -> dict[str, Ramp]:
        for name in signals:
            _check_name(name, list(SIGNALS), "signal")
        return signals


class Status(BaseModel):
    """Score bands: green from ``green``, yellow from ``yellow``, red below."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    green: float = Field(ge=0, le=100)
    yellow: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Status:
        if not self.yellow < self.green:
            raise ValueError(f"yellow ({self.yellow}) must be below green ({self.green})")
        return self


@dataclass(frozen=True, slots=True)
class Condition:
    """One parsed ``"<name> <op> <number>"`` of an alert rule."""

    name: str
    op: str
    value: float


class AlertRule(BaseModel):
    """An early-warning rule: it holds when every condition in ``when`` holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    when: list[str] = Field(min_length=1)

    @field_validator("when")
    @classmethod
    def _conditions_parse(cls, when: list[str]) -> list[str]:
        for text in when:
            if not CONDITION.match(text):
                raise ValueError(
                    f"condition {text!r} must read '<name> <op> <number>' with op one of "
                    ">= > <= < == != (e.g. 'open_tickets >= 2')"
                )
        return when

    @cached_property
    def conditions(self) -> tuple[Condition, ...]:
        parsed = (CONDITION.match(text) for text in self.when)
        return tuple(Condition(m[1], m[2], float(m[3])) for m in parsed if m)


class HealthConfig(BaseModel):
    """Validated health settings; ``load_health_config`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: Windows = Field(default_factory=Windows)
    status: Status
    neutral_score: float = Field(50, ge=0, le=100)
    factors: dict[str, Factor] = Field(min_length=1)
    alerts: dict[str, AlertRule] = Field(default_factory=dict)

    @field_validator("factors")
    @classmethod
    def _factor_names(cls, factors: dict[str, Factor]) -> dict[str, Factor]:
        seen: dict[str, str] = {}
        for name, factor in factors.items():
            if not NAME.match(name):
                raise ValueError(f"factor name {name!r} must be lower_snake_case (it names a column)")
            for signal in factor.signals:
                if signal in seen:
                    raise ValueError(f"signal {signal!r} is in both {seen[signal]} and {name}; use it once")
                seen[signal] = name
        return factors

    @field_validator("alerts")
    @classmethod
    def _alert_names(cls, alerts: dict[str, AlertRule], info: ValidationInfo) -> dict[str, AlertRule]:
        known = [*SIGNALS, "score", *(f"{name}_score" for name in info.data.get("factors", {}))]
        for rule_name, rule in alerts.items():
            for condition in rule.conditions:
                try:
                    _check_name(condition.name, known, "name")
                except ValueError as exc:
                    raise ValueError(f"{rule_name}: {exc}") from None
        return alerts

    @property
    def score_columns(self) -> list[str]:
        return [f"{name}_score" for name in self.factors]


def _check_name(name: str, known: list[str], what: str) -> None:
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(known))}"
        raise ValueError(f"unknown {what} {name!r}{hint}")


def load_health_config(path: Path | None = None) -> HealthConfig:
    """The health config in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(HealthConfig, path, "patron.projections", DEFAULT_HEALTH_FILE, "health config")


def ramp(values: np.ndarray, rule: Ramp) -> np.ndarray:
    """0-100 linear between ``zero_at`` and ``full_at``, clipped; NaN (no data) stays NaN."""
    return np.clip((values - rule.zero_at) / (rule.full_at - rule.zero_at), 0.0, 1.0) * 100.0


def weighted_mean(scores: list[np.ndarray], weights: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the mean of the scores that are not NaN, weights re-normalised; and the weight share
    each score got (0 where it was NaN). All NaN: the mean is NaN."""
    stacked = np.vstack(scores)
    present = ~np.isnan(stacked)
    w = np.where(present, np.asarray(weights)[:, None], 0.0)
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, w / total, 0.0)
        mean = np.where(total > 0, np.nansum(np.where(present, stacked, 0.0) * share, axis=0), np.nan)
    return mean, share


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _explanation_sql(config: HealthConfig) -> str:
    """A DuckDB expression building the ``factors`` JSON per row from the (rounded) scored columns.

    A struct turned into JSON in one go: several times faster than nested ``json_object`` calls.
    """
    windows = config.windows.model_dump()
    factors = []
    for name, factor in config.factors.items():
        reasons, signal_json = [], []
        for signal, rule in factor.signals.items():
            spec = SIGNALS[signal]
            text = _sql_text(spec.reason.format(**windows))
            reasons.append(f"CASE WHEN {signal} IS NOT NULL THEN printf({text}, {', '.join(spec.args)}) END")
            signal_json.append(f"'{signal}': {{value: {signal}, score: s__{signal}, weight: {rule.weight}}}")
        no_data = f"no data for {', '.join(factor.signals)}: its weight is shared by the other factors"
        factors.append(
            f"{_sql_text(name)}: {{score: {name}_score, weight: {factor.weight}, effective_weight: w__{name}, "
            f"contribution: c__{name}, reason: CASE WHEN {name}_score IS NULL THEN {_sql_text(no_data)} "
            f"ELSE concat_ws('; ', {', '.join(reasons)}) END, signals: {{{', '.join(signal_json)}}}}}"
        )
    return f"to_json({{{', '.join(factors)}}})::VARCHAR"


def _alerts(config: HealthConfig, values: dict[str, np.ndarray], n: int) -> pa.Array:
    """list<string> per row: the names of the rules that hold (vectorised: one mask per rule)."""
    masks = []
    for rule in config.alerts.values():
        holds = np.ones(n, dtype=bool)
        for c in rule.conditions:
            column = values[c.name]
            with np.errstate(invalid="ignore"):
                holds &= ~np.isnan(column) & OPERATORS[c.op](column, c.value)
        masks.append(holds)
    grid = np.vstack(masks).T if masks else np.zeros((n, 0), dtype=bool)  # row-major: config order
    _, rules = np.nonzero(grid)
    offsets = np.concatenate(([0], np.cumsum(grid.sum(axis=1)))).astype(np.int32)
    names = np.asarray(list(config.alerts), dtype=object)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names[rules], pa.string()))


def build_health(tables: FactTables, as_of: datetime, config: HealthConfig | None = None) -> pa.Table:
    """The ``health`` table: one row per profile of ``customers`` (sorted by profile id).

    Columns: profile_id, account, score (0-100, 1 decimal), status (green|yellow|red),
    ``<factor>_score`` per configured factor (null: no data), factors (JSON: per factor its score,
    configured and effective weight, contribution to the score, a reason and its signals' value,
    score and weight), alerts (list of the early-warning rules that hold, in config order).
    """
    config = config or load_health_config()
    found = signals(tables, as_of, config.windows)
    values = {name: found[name].to_numpy(zero_copy_only=False).astype(np.float64) for name in SIGNALS}
    columns: dict[str, np.ndarray] = {}
    factor_scores, factor_weights = [], []
    for factor in config.factors.values():
        scores = [ramp(values[signal], rule) for signal, rule in factor.signals.items()]
        columns.update({f"s__{signal}": s for signal, s in zip(factor.signals, scores, strict=True)})
        factor_scores.append(weighted_mean(scores, [rule.weight for rule in factor.signals.values()])[0])
        factor_weights.append(factor.weight)
    score, shares = weighted_mean(factor_scores, factor_weights)
    score = np.round(np.where(np.isnan(score), config.neutral_score, score), 1)
    for i, name in enumerate(config.factors):
        columns[f"{name}_score"] = factor_scores[i]
        columns[f"w__{name}"] = shares[i]
        columns[f"c__{name}"] = np.nan_to_num(factor_scores[i] * shares[i])
    status = np.select(
        [score >= config.status.green, score >= config.status.yellow], ["green", "yellow"], default="red"
    )
    shown = {name: np.round(values[name], 4) for name in SIGNALS} | {
        name: np.round(column, DECIMALS.get(name[:3], 1)) for name, column in columns.items()
    }
    # Rules see the numbers the table shows: a rule on "support_score < 40" agrees with the column.
    alerts = _alerts(config, {**values, **shown, "score": score}, len(score))
    scored = pa.table({name: pa.array(column, from_pandas=True) for name, column in shown.items()})
    con = connect()
    try:
        con.register("scored", scored)
        explained = con.sql(f"SELECT {_explanation_sql(config)} AS factors FROM scored").to_arrow_table()
    finally:
        con.close()
    factor_columns = {
        col: pa.array(shown[col], pa.float64(), from_pandas=True) for col in config.score_columns
    }
    return pa.table(
        {
            "profile_id": found["profile_id"],
            "account": found["account"],
            "score": pa.array(score, pa.float64()),
            "status": pa.array(status, pa.string()),
            **factor_columns,
            "factors": explained["factors"],
            "alerts": alerts,
        }
    )


def build_health_accounts(health: pa.Table, config: HealthConfig | None = None) -> pa.Table:
    """The ``health_accounts`` rollup: one row per ``account`` (profiles without one are left out).

    An account's score is the plain mean of its people's scores (each contact counts once: a
    champion's good mood does not hide three unhappy users), its status from the same bands;
    ``min_score`` and the red/yellow/green head counts show how uneven it is, factor scores are
    means over the members with data, and ``alerts`` is every rule holding for any member.
    """
    config = config or load_health_config()
    factor_means = ", ".join(f"round(avg({col}), 1) AS {col}" for col in config.score_columns)
    sql = f"""
        SELECT account, count(*) AS profiles, round(avg(score), 1) AS score,
            CASE WHEN round(avg(score), 1) >= {config.status.green} THEN 'green'
                 WHEN round(avg(score), 1) >= {config.status.yellow} THEN 'yellow' ELSE 'red' END AS status,
            min(score) AS min_score,
            count(*) FILTER (WHERE status = 'red') AS red_profiles,
            count(*) FILTER (WHERE status = 'yellow') AS yellow_profiles,
            count(*) FILTER (WHERE status = 'green') AS green_profiles,
            {factor_means},
            list_sort(list_distinct(flatten(list(alerts)))) AS alerts
        FROM health WHERE account IS NOT NULL GROUP BY account ORDER BY account
    """
    con = connect()
    try:
        con.register("health", health)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
