"""RFM: recency, frequency and monetary value per customer, scored 1..bins and named by segment.

Scores are rank based (quintiles by default) over the customers in the snapshot, so they say
where a customer stands among today's customers, not against fixed thresholds that age with
the business. Ties are decided by value only: ``score = 1 + floor(bins * worse / n)``, where
``worse`` counts customers with a strictly worse value. Equal values therefore always share a
score and the result does not depend on row order (a hash or merge reordering the rows cannot
move a customer between segments). The price: when many customers share a value (say 60% bought
once) that whole group gets the lowest score and some scores stay unused.

Segments are a grid over (r_score, fm_score), fm_score the mean of f and m rounded half up, in
``rfm.yaml``: a complete grid, so each customer lands in exactly one named segment.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from patron.projections.purchases import purchase_history
from patron.yaml_config import load_document

if TYPE_CHECKING:
    from patron.projections.fact_tables import FactTables

DEFAULT_RFM_FILE = "rfm.yaml"
RFM_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("recency_days", pa.int64()),
        ("frequency", pa.int64()),
        ("monetary", pa.float64()),
        ("r_score", pa.int64()),
        ("f_score", pa.int64()),
        ("m_score", pa.int64()),
        ("fm_score", pa.int64()),
        ("rfm_cell", pa.string()),
        ("segment", pa.string()),
    ]
)


class RfmConfig(BaseModel):
    """Validated RFM settings; ``load_rfm_config`` reads them from YAML."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bins: int = Field(5, ge=2, le=10, description="Scores run 1..bins (5 = quintiles).")
    segments: dict[int, list[str]] = Field(
        description="r_score -> segment names for fm_score 1..bins (a complete grid)."
    )

    @model_validator(mode="after")
    def _complete_grid(self) -> RfmConfig:
        expected = set(range(1, self.bins + 1))
        if set(self.segments) != expected:
            missing = sorted(expected - set(self.segments))
            extra = sorted(set(self.segments) - expected)
            raise ValueError(
                f"segments needs exactly one row per r_score 1..{self.bins}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {extra}" if extra else "")
            )
        for r_score, names in sorted(self.segments.items()):
            if len(names) != self.bins or not all(name.strip() for name in names):
                raise ValueError(
                    f"segments.{r_score} must name {self.bins} segments (fm_score 1..{self.bins}), "
                    f"got {len(names)}"
                )
        return self

    def grid(self) -> tuple[np.ndarray, list[str]]:
        """(cell -> segment index array of shape (bins+1, bins+1), segment names) for vectorised lookup."""
        names = sorted({name for row in self.segments.values() for name in row})
        index = {name: i for i, name in enumerate(names)}
        cells = np.zeros((self.bins + 1, self.bins + 1), dtype=np.int32)
        for r_score, row in self.segments.items():
            cells[r_score, 1:] = [index[name] for name in row]
        return cells, names


def load_rfm_config(path: Path | None = None) -> RfmConfig:
    """The settings in the YAML file at ``path``, or the shipped defaults when ``path`` is None."""
    return load_document(RfmConfig, path, "patron.projections", DEFAULT_RFM_FILE, "RFM settings")


def rank_scores(values: np.ndarray, bins: int) -> np.ndarray:
    """``1 + floor(bins * (values strictly smaller) / n)``: higher value, higher score; ties share one."""
    worse = np.searchsorted(np.sort(values, kind="stable"), values, side="left")
    return 1 + (worse * bins) // max(len(values), 1)


def _cell_names(bins: int) -> list[str]:
    """ "R-F-M" for every code (r * (bins+1) + f) * (bins+1) + m, so cells are labelled without a loop per row."""
    size = bins + 1
    return [f"{code // size // size}-{code // size % size}-{code % size}" for code in range(size**3)]


def build_rfm(tables: FactTables, as_of: datetime, config: RfmConfig | None = None) -> pa.Table:
    """One row per profile with >= 1 order on or before the as-of day, sorted by profile id."""
    config = config or load_rfm_config()
    history = purchase_history(tables.orders_daily, as_of)
    recency = history.as_of_day - history.last_day
    r_score = rank_scores(-recency, config.bins)
    f_score = rank_scores(history.orders, config.bins)
    m_score = rank_scores(history.revenue, config.bins)
    fm_score = (f_score + m_score + 1) // 2
    cells, names = config.grid()
    segment = pa.DictionaryArray.from_arrays(
        pa.array(cells[r_score, fm_score], pa.int32()), pa.array(names, pa.string())
    ).cast(pa.string())
    rfm_cell = pa.DictionaryArray.from_arrays(
        pa.array((r_score * (config.bins + 1) + f_score) * (config.bins + 1) + m_score, pa.int32()),
        pa.array(_cell_names(config.bins), pa.string()),
    ).cast(pa.string())
    return pa.table(
        [
            history.profile_id,
            pa.array(recency, pa.int64()),
            pa.array(history.orders, pa.int64()),
            pa.array(history.revenue, pa.float64()),
            pa.array(r_score, pa.int64()),
            pa.array(f_score, pa.int64()),
            pa.array(m_score, pa.int64()),
            pa.array(fm_score, pa.int64()),
            rfm_cell,
            segment,
        ],
        schema=RFM_SCHEMA,
    )
