"""Gamma-Gamma: what a customer's purchases will be worth on average.

Fader and Hardie (2013), "The Gamma-Gamma Model of Monetary Value". A customer's spend per
purchase is Gamma(p, nu) with nu ~ Gamma(q, v) across customers; their mean spend m over x
repeat purchases pulls the population mean towards what they showed us, more so the more often
they bought. It assumes spend does not depend on purchase frequency; the fit records that
correlation so an analyst can check it.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, gammaln

from patron.projections.model_fit import Fit, Levels, Parametrisation, maximise

PARAMS = ("p", "q", "v")


def _natural(u: np.ndarray) -> np.ndarray:
    return np.exp(np.array([u[0], u[1], u[1] + u[2]]))


def _chain(u: np.ndarray, g: np.ndarray) -> np.ndarray:
    p, q, v = _natural(u)
    return np.array([g[0] * p, g[1] * q + g[2] * v, g[2] * v])


# Coordinates: log p (spread of one customer's spend), log q (spread between customers),
# log v/q (the scale of typical spend, which stays put when q runs off).
SPACE = Parametrisation(
    coordinates=("p", "q", "v/q"),
    bounds=((-12.0, 12.0), (-12.0, 12.0), (-30.0, 30.0)),
    natural=_natural,
    chain=_chain,
    bound_note="a large p or q means spend per purchase barely differs within or between customers",
)


def _log_likelihood(
    params: np.ndarray, x: Levels, log_m: np.ndarray, spent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p, q, v = params
    xs = x.rows()
    log_total = np.log(spent + v)
    ll = (
        x.apply(lambda n: gammaln(p * n + q) - gammaln(p * n) + p * n * np.log(n))
        - gammaln(q)
        + q * np.log(v)
        + (p * xs - 1) * log_m
        - (p * xs + q) * log_total
    )
    grad = np.stack(
        [
            x.apply(lambda n: n * (digamma(p * n + q) - digamma(p * n) + np.log(n)))
            + xs * (log_m - log_total),
            x.apply(lambda n: digamma(p * n + q)) - digamma(q) + np.log(v) - log_total,
            q / v - (p * xs + q) / (spent + v),
        ]
    )
    return ll, grad


def log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer log-likelihood of mean spend m over x > 0 purchases, and its gradient w.r.t. (p, q, v)."""
    return _log_likelihood(params, Levels.of(x), np.log(m), x * m)


def fit(x: np.ndarray, m: np.ndarray) -> Fit:
    """Maximum-likelihood fit on customers with x > 0 repeat purchases and mean spend m > 0."""
    levels, log_m, spent = Levels.of(x), np.log(m), x * m
    return maximise(
        "gamma_gamma",
        PARAMS,
        SPACE,
        lambda params: _log_likelihood(params, levels, log_m, spent),
        np.ones(len(x)),
    )


def expected_average_value(params: dict[str, float], x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """E[spend per purchase | x, m]: a credibility-weighted mix of m and the population mean.

    The population mean p v / (q - 1) exists only for q > 1; otherwise the result is NaN.
    """
    p, q, v = (params[name] for name in PARAMS)
    if q <= 1:
        return np.full(len(x), np.nan)
    weight = p * x / (p * x + q - 1)
    return (1 - weight) * (p * v / (q - 1)) + weight * m
