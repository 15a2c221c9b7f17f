"""Maximum-likelihood fitting shared by the CLV models: unconstrained parameters, analytic gradient.

Each model is optimised over unconstrained coordinates ``u`` that it maps to its natural
parameters (all positive) with a Jacobian for the chain rule. The models choose "heterogeneity
and mean" coordinates (BG/NBD: log r, log r/alpha, ...) rather than plain logs because when
customers are nearly alike in a trait the likelihood keeps rising as a shape parameter and its
scale grow *together*: in (log r, log alpha) that is a long diagonal ridge an optimiser crawls
along for hundreds of steps; in (log r, log mean) only one coordinate moves and it stops at its
bound quickly, at a point whose predictions are those of the limit.

The objective is the mean negative log-likelihood (tolerances do not depend on how many customers
there are) with each model's exact gradient, so L-BFGS-B needs tens of evaluations, not hundreds
of finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

# (natural parameters) -> (log-likelihood per row, gradient per row w.r.t. them, shape (k, rows))
LogLikelihood = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Levels:
    """A column as its distinct values and each row's index into them.

    Customer summaries take few distinct values (purchase counts, day counts), so a function of
    one column (gammaln, digamma, log) is evaluated once per distinct value and gathered, which
    is what makes a likelihood evaluation over a million customers cost milliseconds.
    """

    values: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, column: np.ndarray) -> Levels:
        values, index = np.unique(np.asarray(column, dtype=np.float64), return_inverse=True)
        return cls(values, index.reshape(-1))

    def rows(self) -> np.ndarray:
        """The column itself, one value per row."""
        return self.values[self.index]

    def apply(self, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``function(column)`` per row, computed once per distinct value."""
        return function(self.values)[self.index]

    def take(self, rows: np.ndarray) -> Levels:
        return Levels(self.values, self.index[rows])


def distinct_rows(columns: tuple[Levels, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(one row index per distinct combination of the columns, how many rows share it)."""
    key = np.zeros(len(columns[0].index), dtype=np.int64)
    for column in columns:
        key = key * len(column.values) + column.index
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    return first, counts.astype(np.float64)


@dataclass(frozen=True, slots=True)
class Parametrisation:
    """Unconstrained coordinates of a model: names, bounds, and the maps to natural parameters."""

    coordinates: tuple[str, ...]
    bounds: tuple[tuple[float, float], ...]
    natural: Callable[[np.ndarray], np.ndarray]
    # (u, gradient w.r.t. natural parameters) -> gradient w.r.t. u
    chain: Callable[[np.ndarray, np.ndarray], np.ndarray]
    # what a coordinate stopped at its bound means, for the fit's note
    bound_note: str


@dataclass(frozen=True, slots=True)
class Fit:
    """The outcome of one fit: parameters by name, total log-likelihood, rows used, and a note."""

    model: str
    params: dict[str, float]
    log_likelihood: float
    n: int
    converged: bool
    note: str

    @property
    def usable(self) -> bool:
        """True when the parameters can be used for predictions."""
        return self.converged and bool(self.params)


def maximise(
    model: str,
    names: tuple[str, ...],
    space: Parametrisation,
    log_likelihood: LogLikelihood,
    weights: np.ndarray,
) -> Fit:
    """Fit by L-BFGS-B over ``space`` from u = 0; ``weights`` count identical rows.

    A coordinate that stops at its bound is named in the note with the model's explanation; the
    parameters then describe that limit and remain usable for predictions.
    """
    total = float(weights.sum())

    def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
        ll, grad = log_likelihood(space.natural(u))
        value = -float(weights @ ll) / total
        if not np.isfinite(value):
            return np.inf, np.zeros_like(u)
        return value, -space.chain(u, grad @ weights) / total

    result = minimize(
        objective,
        np.zeros(len(space.coordinates)),
        jac=True,
        method="L-BFGS-B",
        bounds=space.bounds,
        options={"ftol": 1e-10, "gtol": 1e-8, "maxiter": 1000},
    )
    low, high = np.array(space.bounds).T
    pinned = (result.x <= low + 1e-6) | (result.x >= high - 1e-6)
    at_bound = [name for name, stopped in zip(space.coordinates, pinned, strict=True) if stopped]
    # a line search that stalls on rounding noise right at the optimum is still an optimum
    flat = float(np.max(np.abs(result.jac[~pinned]), initial=0.0)) < 1e-6
    converged = bool(np.all(np.isfinite(result.x))) and (bool(result.success) or flat)
    notes = [] if converged else [f"did not converge: {result.message}"]
    if at_bound:
        notes.append(f"{', '.join(at_bound)} stopped at the bound of the search range: {space.bound_note}")
    params = dict(zip(names, space.natural(result.x).tolist(), strict=True))
    return Fit(model, params, -float(result.fun) * total, int(total), converged, "; ".join(notes))
